//! The hub's state without the I/O: connections, their identities and subscriptions, the
//! channel, prefix, owner and admin indexes, live frames held during a resume or snapshot.
//! Each method takes one input (a client request, an event, an account change, a clock tick)
//! and acts through the connections' [`Sink`]s — frames to queue, sockets to close — or
//! returns the reads the driver must start (journal replays, record snapshots, collection
//! pages for collection snapshots). The driver (`hub.rs`) owns the task, the channels and the
//! sources; tests drive this struct with fake sinks (see the tests below).
//!
//! An event costs work in proportion to its recipients: exact and prefix subscriptions are
//! indexed by channel, owner-only events look up the owner's connections (plus admins) instead
//! of walking subscribers, and each frame is serialized once and shared.
//!
//! Filtered subscriptions (`crate::live`) are indexed per collection by one equality of their
//! filter, so an event is only judged against the subscriptions whose value is the record's
//! (before or after the change), those without an equality and — for owner-only collections —
//! those of the owners' connections and admins. Each gets its own frame, built by copying the
//! event's one serialized envelope.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bakend_auth::{AuthContext, Caller, UserChange};
use bakend_core::config::RealtimeConfig;
use bakend_core::{Event, EventSource};
use bakend_filter::{Filter, RequestVars};
use serde_json::{Value, json};
use tungstenite::Utf8Bytes;

use crate::audience::{Delivery, ReadRules, Readers, RecordRule};
use crate::hub::{CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, HubStats};
use crate::journal::{ListError, ListPage, ListRequest, Replayed};
use crate::live::{self, Live, LiveIndex, Named, NamedSub};
use crate::outbox::{Outbox, Pushed};
use crate::protocol::{self, Since, SubRef, index_key, matches_event, record_channel};

/// A connection's outbound side as the hub sees it. The real one is the connection's
/// [`Outbox`]; tests use a recorder. Generic, not boxed: the fan-out calls it per recipient.
pub(crate) trait Sink: Clone {
    /// Queues a frame without writing it; `true`: the caller has taken the drain and must
    /// [`Sink::flush`] it once it has queued everything at hand.
    fn push_deferred(&self, frame: Utf8Bytes) -> (Pushed, bool);
    /// Writes what was queued (what the socket does not take goes to the connection task).
    fn flush(&self);
    /// Queues a resume's replay regardless of the queue limit.
    fn push_replay(&self, frames: Vec<Utf8Bytes>);
    /// Asks the connection to close; the first request wins.
    fn close(&self, code: u16, reason: &'static str);
    fn request_heartbeat(&self);
}

impl Sink for Arc<Outbox> {
    fn push_deferred(&self, frame: Utf8Bytes) -> (Pushed, bool) {
        Outbox::push_deferred(self, frame)
    }
    fn flush(&self) {
        Outbox::flush(self)
    }
    fn push_replay(&self, frames: Vec<Utf8Bytes>) {
        Outbox::push_replay(self, frames)
    }
    fn close(&self, code: u16, reason: &'static str) {
        Outbox::close(self, code, reason)
    }
    fn request_heartbeat(&self) {
        Outbox::request_heartbeat(self)
    }
}

/// A read the driver must start; its answer comes back through [`HubState::replayed`] or
/// [`HubState::snapshotted`]. The connection's live frames are held until then.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Journal events of `channel` with `after < seq <= upto`, for a plain subscription or
    /// the named one `named`.
    Replay {
        id: u64,
        channel: String,
        named: Option<u64>,
        after: u64,
        upto: u64,
    },
    /// The current state of one record (a per-record channel's `snapshot`).
    Snapshot {
        id: u64,
        channel: String,
        collection: String,
        record_id: String,
    },
    /// A page of a collection's records for the named subscription `named` (a
    /// `<collection>.*` channel's `snapshot`).
    List {
        id: u64,
        named: u64,
        request: Box<ListRequest>,
    },
}

struct Conn<S> {
    sink: S,
    ctx: AuthContext,
    subs: Vec<Sub>,
    /// `ctx`'s `@request` values for filters, made on first use and dropped when `ctx`
    /// changes (boxed: most connections never filter).
    vars: Option<Box<RequestVars>>,
    /// The last event this connection was considered for: one delivery per event however many
    /// subscriptions match.
    last_seq: u64,
    exp: Option<u64>,
    grace_until: Option<Instant>,
    closing: bool,
    /// While resumes or snapshots are pending, live frames wait here so they follow them.
    /// Boxed: almost no connection ever has one, and every byte of `Conn` is paid per socket.
    held: Option<Box<Held>>,
}

#[derive(Default)]
struct Held {
    /// `(named subscription key or 0, event seq, frame)`: a collection snapshot drops the
    /// frames of its subscription that it already reflects.
    frames: Vec<(u64, u64, Utf8Bytes)>,
    /// Replays and snapshots still being read.
    pending: u32,
}

/// One subscription of a connection.
enum Sub {
    /// Made without `id` or `filter`: its id is its channel.
    Plain(Box<str>),
    /// Made with an `id` or a `filter`: its key in [`HubState::named`].
    Named(u64),
}

/// A subscription's id.
fn sub_id<'a>(s: &'a Sub, named: &'a HashMap<u64, NamedSub>) -> &'a str {
    match s {
        Sub::Plain(c) => c,
        Sub::Named(k) => named.get(k).map_or("", |n| &n.id),
    }
}

/// The channel a subscription receives plain (unfiltered) frames of, if it does.
fn plain_channel<'a>(s: &'a Sub, named: &'a HashMap<u64, NamedSub>) -> Option<&'a str> {
    match s {
        Sub::Plain(c) => Some(c),
        Sub::Named(k) => named
            .get(k)
            .filter(|n| n.live.is_none())
            .map(|n| &*n.channel),
    }
}

impl<S> Conn<S> {
    /// A new identity; filters see it from the next event on.
    fn set_ctx(&mut self, ctx: AuthContext) {
        self.ctx = ctx;
        self.vars = None;
    }

    /// Starts (or joins) holding live frames until a replay or snapshot is sent.
    fn hold(&mut self) {
        self.held.get_or_insert_with(Box::default).pending += 1;
    }

    fn user_id(&self) -> Option<&str> {
        self.ctx.user().map(|u| u.id.as_str())
    }
}

type ChannelIndex = HashMap<Box<str>, HashSet<u64>>;

pub(crate) struct HubState<S> {
    cfg: RealtimeConfig,
    rules: Arc<dyn ReadRules>,
    stats: Arc<HubStats>,
    conns: HashMap<u64, Conn<S>>,
    exact: ChannelIndex,
    prefix: ChannelIndex,
    by_user: HashMap<String, HashSet<u64>>,
    admins: HashSet<u64>,
    seq: u64,
    /// The journal's epoch, when there is a journal to resume from.
    epoch: Option<String>,
    /// Whether per-record snapshots can be read.
    snapshots: bool,
    /// The last journal seq the hub has fanned out: a resume replays up to here and live
    /// delivery continues after it.
    journal_seq: u64,
    last_heartbeat: Instant,
    last_events_in: u64,
    last_frames_out: u64,
    /// Sinks with frames queued this round that the hub writes itself (see `flush_some`).
    dirty: Vec<S>,
    /// Subscriptions made with an `id` or a `filter`, by key.
    named: HashMap<u64, NamedSub>,
    next_named: u64,
    /// Filtered subscriptions by collection.
    live: HashMap<Box<str>, LiveIndex>,
    /// The filtered subscriptions an event concerns (kept between events for its memory).
    candidates: Vec<u64>,
    /// `@now` for filters (the canonical ISO form).
    clock: fn() -> String,
    /// Filtered subscriptions judged so far (what the index saves is visible here).
    pub(crate) filter_evaluations: u64,
}

/// Sockets the hub writes before letting other tasks run.
const FLUSH_CHUNK: usize = 64;

/// Files connection `id` under `channel`: exact channels and `prefix.*` wildcards live in
/// separate indexes.
fn index_add(exact: &mut ChannelIndex, prefix: &mut ChannelIndex, channel: &str, id: u64) {
    let (key, is_prefix) = index_key(channel);
    let map = if is_prefix { prefix } else { exact };
    map.entry(Box::from(key)).or_default().insert(id);
}

fn index_remove(exact: &mut ChannelIndex, prefix: &mut ChannelIndex, channel: &str, id: u64) {
    let (key, is_prefix) = index_key(channel);
    let map = if is_prefix { prefix } else { exact };
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Queues `frame` for `c`; a full queue means the client is not keeping up, and it is closed.
/// A sink the hub is to write itself is listed in `dirty`, to be flushed when the hub has
/// handled everything at hand.
fn push<S: Sink>(c: &mut Conn<S>, frame: Utf8Bytes, stats: &HubStats, dirty: &mut Vec<S>) {
    if c.closing {
        return;
    }
    let (pushed, flush) = c.sink.push_deferred(frame);
    if flush {
        dirty.push(c.sink.clone());
    }
    match pushed {
        Pushed::Queued(depth) => {
            stats.frames_out.fetch_add(1, Relaxed);
            let depth = depth as u64;
            if depth > stats.queue_high_water.load(Relaxed) {
                stats.queue_high_water.fetch_max(depth, Relaxed);
            }
        }
        Pushed::Full => slow_consumer(c, stats),
        Pushed::Closing => c.closing = true,
    }
}

fn slow_consumer<S: Sink>(c: &mut Conn<S>, stats: &HubStats) {
    c.closing = true;
    stats.slow_consumer_closes.fetch_add(1, Relaxed);
    c.sink.close(CLOSE_SLOW_CONSUMER, "slow_consumer");
}

/// Queues a live event frame for `c`, or holds it behind a pending resume or snapshot.
fn deliver<S: Sink>(
    c: &mut Conn<S>,
    frame: Utf8Bytes,
    tag: (u64, u64),
    hold_limit: usize,
    stats: &HubStats,
    dirty: &mut Vec<S>,
) {
    match c.held.as_mut() {
        // Too far behind while resuming: like any slow consumer it is closed, and resumes
        // again from its last seq.
        Some(held) if held.frames.len() >= hold_limit => slow_consumer(c, stats),
        Some(held) => held.frames.push((tag.0, tag.1, frame)),
        None => push(c, frame, stats, dirty),
    }
}

/// The event with `{id}` as its payload, serialized: what a filtered subscription is sent when
/// its viewer may no longer read the record.
fn id_only_envelope(e: &Event) -> Arc<str> {
    let mut copy = e.clone();
    copy.previous = None;
    copy.payload = json!({ "id": e.payload.get("id") });
    copy.envelope_json()
}

/// The frames of a plain subscription's replay: each journaled event `c` may read now.
fn replay_plain<S>(c: &Conn<S>, rules: &dyn ReadRules, entries: Vec<Replayed>) -> Vec<Utf8Bytes> {
    let mut frames = Vec::with_capacity(entries.len());
    for r in entries {
        let Ok(mut e) = Event::from_journal(&r.envelope, r.subject) else {
            continue;
        };
        // An expression read rule decides a deletion on the record as it was.
        e.previous = r
            .previous
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok());
        let d = Delivery::of(&e, rules);
        if let Some(f) = d.frame_for(&c.ctx) {
            frames.push(f.clone());
        }
    }
    frames
}

/// The frames of a filtered subscription's replay: each journaled event judged as it would
/// have been live, with `c`'s identity and `@now` as they are now. `None` when an update or
/// deletion in the range was journaled without its previous record (before the journal kept
/// it): the replay cannot be decided, and the client must refetch.
fn replay_filtered<S>(
    c: &mut Conn<S>,
    l: &Live,
    rules: &dyn ReadRules,
    entries: Vec<Replayed>,
    now: String,
) -> Option<Vec<Utf8Bytes>> {
    let rule = RecordRule::of(rules, &l.collection);
    let mut frames = Vec::new();
    for r in entries {
        let Ok(mut e) = Event::from_journal(&r.envelope, r.subject) else {
            continue;
        };
        let Some((collection, action)) = live::record_action(&e) else {
            continue;
        };
        if *collection != *l.collection || e.seq.is_some_and(|s| s <= l.after_seq) {
            continue;
        }
        if action != live::Action::Created {
            let previous = r.previous.as_deref()?;
            e.previous = Some(serde_json::from_str(previous).ok()?);
        }
        let vars = live::vars_at(&mut c.vars, &c.ctx, &now);
        let current = live::current(&e, action);
        let Some(out) = live::judge(
            &rule,
            action,
            current,
            e.previous.as_ref(),
            &l.filter,
            &c.ctx,
            vars,
        ) else {
            continue;
        };
        let envelope = if out.id_only {
            id_only_envelope(&e)
        } else {
            e.envelope_json()
        };
        frames.push(protocol::live_event_frame(&l.head, out.change, &envelope));
    }
    Some(frames)
}

/// One replay or snapshot finished; after the last one, the held live frames follow.
fn release_held<S: Sink>(c: &mut Conn<S>, stats: &HubStats, dirty: &mut Vec<S>) {
    let done = match c.held.as_mut() {
        Some(h) => {
            h.pending = h.pending.saturating_sub(1);
            h.pending == 0
        }
        None => false,
    };
    if done && let Some(held) = c.held.take() {
        for (_, _, f) in held.frames {
            push(c, f, stats, dirty);
        }
    }
}

impl<S: Sink> HubState<S> {
    /// `epoch` and `journal_seq`: the journal's, when resumes are possible; `snapshots`:
    /// whether records can be read for per-record snapshots.
    pub(crate) fn new(
        cfg: RealtimeConfig,
        rules: Arc<dyn ReadRules>,
        stats: Arc<HubStats>,
        epoch: Option<String>,
        journal_seq: u64,
        snapshots: bool,
        now: Instant,
    ) -> HubState<S> {
        HubState {
            cfg,
            rules,
            stats,
            conns: HashMap::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            by_user: HashMap::new(),
            admins: HashSet::new(),
            seq: 0,
            epoch,
            snapshots,
            journal_seq,
            last_heartbeat: now,
            last_events_in: 0,
            last_frames_out: 0,
            dirty: Vec::new(),
            named: HashMap::new(),
            next_named: 1,
            live: HashMap::new(),
            candidates: Vec::new(),
            clock: bakend_core::time::now_iso,
            filter_evaluations: 0,
        }
    }

    /// Replaces the clock `@now` is read from (tests).
    #[cfg(test)]
    pub(crate) fn set_clock(&mut self, clock: fn() -> String) {
        self.clock = clock;
    }

    /// Writes up to `FLUSH_CHUNK` of the sinks this round queued frames for (one `writev`
    /// each, carrying every frame the round gave it); `true` while more are left.
    pub(crate) fn flush_some(&mut self) -> bool {
        let from = self.dirty.len().saturating_sub(FLUSH_CHUNK);
        for sink in self.dirty.drain(from..) {
            sink.flush();
        }
        if self.dirty.is_empty() {
            // A big fan-out leaves a big list; do not keep its memory for good.
            if self.dirty.capacity() > 65_536 {
                self.dirty.shrink_to(4096);
            }
            return false;
        }
        true
    }

    pub(crate) fn register(&mut self, id: u64, sink: S, ctx: AuthContext, exp: Option<u64>) {
        let conn = Conn {
            sink,
            ctx,
            subs: Vec::new(),
            vars: None,
            last_seq: 0,
            exp,
            grace_until: None,
            closing: false,
            held: None,
        };
        self.conns.insert(id, conn);
        self.index_identity(id);
        self.stats.connections.fetch_add(1, Relaxed);
    }

    /// Subscribes (a plain subscription), then (if asked) starts a resume from `since` or a
    /// snapshot.
    #[cfg(test)]
    pub(crate) fn subscribe(
        &mut self,
        id: u64,
        channel: String,
        since: Option<Box<Since>>,
        snapshot: bool,
    ) -> Option<Read> {
        self.subscribe_named(id, channel, None, since, snapshot)
    }

    /// Subscribes — a named subscription when `named` has an `id` or a `filter`, replacing
    /// the connection's subscription with the same id (for a plain one: its channel) —, then
    /// (if asked) starts a resume from `since` or a snapshot. A filter that does not check
    /// changes nothing: the client is told with `invalid_filter`.
    pub(crate) fn subscribe_named(
        &mut self,
        id: u64,
        channel: String,
        named: Option<Box<Named>>,
        since: Option<Box<Since>>,
        snapshot: bool,
    ) -> Option<Read> {
        if !self.conns.contains_key(&id) {
            return None;
        }
        let Named {
            id: chosen_id,
            filter,
            sort,
            per_page,
        } = named.map(|n| *n).unwrap_or_default();
        // A collection snapshot (`<collection>.*` of an existing collection, without `since`)
        // makes a live query — with a filter or without — whose frames start after it.
        let listed = (snapshot && since.is_none() && self.snapshots)
            .then(|| channel.strip_suffix(".*"))
            .flatten()
            .filter(|c| self.rules.filter_schema(c).is_some())
            .map(str::to_string);
        let is_named = chosen_id.is_some() || filter.is_some() || listed.is_some();
        let key = chosen_id.unwrap_or_else(|| channel.clone());
        let filter_src = filter.clone();
        let live = match filter.map(|src| self.check_filter(&channel, &src, &key)) {
            None => listed
                .as_deref()
                .map(|c| Box::new(Live::new(c, Filter::everything(), &key))),
            Some(Ok(live)) => Some(Box::new(live)),
            Some(Err(message)) => {
                self.push_to(id, protocol::error_frame("invalid_filter", &message));
                return None;
            }
        };
        let max = self.cfg.max_subscriptions;
        let c = self.conns.get_mut(&id)?;
        let existing = c.subs.iter().position(|s| sub_id(s, &self.named) == key);
        match existing {
            Some(pos) => {
                let old = c.subs.swap_remove(pos);
                self.drop_sub(id, old);
            }
            None if c.subs.len() >= max => {
                let msg = format!("Maximum {max} subscriptions per connection");
                push(
                    c,
                    protocol::error_frame("subscription_limit", &msg),
                    &self.stats,
                    &mut self.dirty,
                );
                return None;
            }
            None => {
                self.stats.subscriptions.fetch_add(1, Relaxed);
            }
        }
        let (sub, named_key) = if live.is_none() && key == channel {
            index_add(&mut self.exact, &mut self.prefix, &channel, id);
            (Sub::Plain(Box::from(channel.as_str())), None)
        } else {
            let k = self.next_named;
            self.next_named += 1;
            match &live {
                Some(l) => self.live.entry(l.collection.clone()).or_default().add(k, l),
                None => index_add(&mut self.exact, &mut self.prefix, &channel, id),
            }
            let sub = NamedSub {
                conn: id,
                id: Box::from(key.as_str()),
                channel: Box::from(channel.as_str()),
                live,
            };
            self.named.insert(k, sub);
            (Sub::Named(k), Some(k))
        };
        let c = self.conns.get_mut(&id)?;
        c.subs.push(sub);
        let ack = protocol::subscribed_frame(&channel, is_named.then_some(key.as_str()));
        push(c, ack, &self.stats, &mut self.dirty);
        if let Some(since) = since {
            self.resume(id, channel, named_key, *since)
        } else if let (Some(collection), Some(named)) = (listed, named_key) {
            self.conns.get_mut(&id)?.hold();
            let request = ListRequest {
                collection,
                filter: filter_src,
                sort,
                per_page,
                ctx: self.conns.get(&id)?.ctx.clone(),
            };
            Some(Read::List {
                id,
                named,
                request: Box::new(request),
            })
        } else if snapshot {
            self.snapshot(id, channel)
        } else {
            None
        }
    }

    /// Checks `src` as a filter of `channel`'s records: `Err` is the message for the client.
    fn check_filter(&self, channel: &str, src: &str, id: &str) -> Result<Live, String> {
        let target = channel
            .strip_suffix(".*")
            .and_then(|c| Some((c, self.rules.filter_schema(c)?)));
        let Some((collection, schema)) = target else {
            return Err(format!(
                "filter: filters apply to the channel \"<collection>.*\" of an existing collection, not {channel:?}"
            ));
        };
        let filter = Filter::new(src, &schema).map_err(|e| e.to_string())?;
        Ok(Live::new(collection, filter, id))
    }

    fn push_to(&mut self, id: u64, frame: Utf8Bytes) {
        if let Some(c) = self.conns.get_mut(&id) {
            push(c, frame, &self.stats, &mut self.dirty);
        }
    }

    /// Forgets a subscription already taken out of connection `id`'s list: its index entries
    /// (a channel stays indexed while another subscription of the connection still listens
    /// to it).
    fn drop_sub(&mut self, id: u64, sub: Sub) {
        let channel = match sub {
            Sub::Plain(channel) => channel,
            Sub::Named(k) => match self.named.remove(&k) {
                None => return,
                Some(NamedSub {
                    live: Some(live), ..
                }) => {
                    if let Some(ix) = self.live.get_mut(&live.collection) {
                        ix.remove(k, &live);
                        if ix.is_empty() {
                            self.live.remove(&live.collection);
                        }
                    }
                    return;
                }
                Some(NamedSub { channel, .. }) => channel,
            },
        };
        let still = self.conns.get(&id).is_some_and(|c| {
            c.subs
                .iter()
                .any(|s| plain_channel(s, &self.named) == Some(&*channel))
        });
        if !still {
            index_remove(&mut self.exact, &mut self.prefix, &channel, id);
        }
    }

    /// A new identity from an `auth` message; `ack` is queued after it takes effect.
    pub(crate) fn identity(&mut self, id: u64, ctx: AuthContext, exp: Option<u64>, ack: Utf8Bytes) {
        self.unindex_identity(id);
        if let Some(c) = self.conns.get_mut(&id) {
            c.set_ctx(ctx);
            c.exp = exp;
            c.grace_until = None;
            push(c, ack, &self.stats, &mut self.dirty);
        }
        self.index_identity(id);
    }

    fn index_identity(&mut self, id: u64) {
        let Some(c) = self.conns.get(&id) else { return };
        if let Some(u) = c.ctx.user() {
            self.by_user.entry(u.id.clone()).or_default().insert(id);
        }
        if c.ctx.is_admin() {
            self.admins.insert(id);
        }
    }

    fn unindex_identity(&mut self, id: u64) {
        let Some(c) = self.conns.get(&id) else { return };
        if let Some(uid) = c.user_id()
            && let Some(set) = self.by_user.get_mut(uid)
        {
            set.remove(&id);
            if set.is_empty() {
                self.by_user.remove(uid);
            }
        }
        self.admins.remove(&id);
    }

    /// Starts replaying what a just-made subscription missed since `since`: live frames for
    /// the connection are held from now on, the journal is read up to the last seq fanned
    /// out, and [`HubState::replayed`] sends the replay, `resumed`, then the held frames.
    fn resume(
        &mut self,
        id: u64,
        channel: String,
        named: Option<u64>,
        since: Since,
    ) -> Option<Read> {
        let upto = self.journal_seq;
        let c = self.conns.get_mut(&id)?;
        let replayable = self.epoch.as_deref() == Some(since.epoch.as_str()) && since.seq <= upto;
        if !replayable {
            let sub = named.and_then(|k| self.named.get(&k)).map(|n| &*n.id);
            push(
                c,
                protocol::resumed_frame(&channel, sub, false, upto),
                &self.stats,
                &mut self.dirty,
            );
            return None;
        }
        c.hold();
        Some(Read::Replay {
            id,
            channel,
            named,
            after: since.seq,
            upto,
        })
    }

    /// Asks for the record of a per-record channel; live frames are held until the snapshot
    /// is sent, so it always comes first.
    fn snapshot(&mut self, id: u64, channel: String) -> Option<Read> {
        let c = self.conns.get_mut(&id)?;
        let target = protocol::parse_record_channel(&channel)
            .filter(|_| self.snapshots)
            .map(|(collection, record_id)| (collection.to_string(), record_id.to_string()));
        let Some((collection, record_id)) = target else {
            push(
                c,
                protocol::error_frame(
                    "invalid_snapshot",
                    "snapshot is only available on per-record channels (collection.recordId.*) and collection channels (collection.*)",
                ),
                &self.stats,
                &mut self.dirty,
            );
            return None;
        };
        c.hold();
        Some(Read::Snapshot {
            id,
            channel,
            collection,
            record_id,
        })
    }

    /// A snapshot was read (`Ok((record, journal seq it reflects))`): send it — only if the
    /// connection may read the record now — then release the held live frames.
    pub(crate) fn snapshotted(
        &mut self,
        id: u64,
        channel: &str,
        collection: &str,
        result: Result<(Option<Value>, u64), String>,
    ) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let frame = match result {
            Ok((record, seq)) => {
                let rule = RecordRule::of(self.rules.as_ref(), collection);
                let visible = record.filter(|r| crate::audience::can_read_record(&rule, r, &c.ctx));
                let seq = self.epoch.as_ref().map(|_| seq);
                protocol::snapshot_frame(channel, collection, visible.as_ref(), seq)
            }
            Err(e) => {
                tracing::error!("Reading a record for a realtime snapshot failed: {e}");
                protocol::error_frame("snapshot_failed", "The record could not be read")
            }
        };
        push(c, frame, &self.stats, &mut self.dirty);
        release_held(c, &self.stats, &mut self.dirty);
    }

    /// A collection snapshot was read for the named subscription `named`: from now on its
    /// frames start after the snapshot's seq (those held meanwhile that it reflects are
    /// dropped); send it, then release the held live frames. An unreadable page (a bad sort
    /// key, a refusal, a failure) is an error frame instead: the subscription stands, its
    /// frames unchanged. A subscription replaced or removed meanwhile gets nothing.
    pub(crate) fn listed(&mut self, id: u64, named: u64, result: Result<ListPage, ListError>) {
        let HubState {
            conns,
            named: subs,
            stats,
            dirty,
            ..
        } = self;
        let Some(c) = conns.get_mut(&id) else {
            return;
        };
        let Some(sub) = subs.get_mut(&named).filter(|n| n.conn == id) else {
            release_held(c, stats, dirty);
            return;
        };
        let frame = match result {
            Ok(page) => {
                if let Some(l) = sub.live.as_deref_mut() {
                    l.after_seq = page.seq;
                }
                if let Some(h) = c.held.as_mut() {
                    h.frames
                        .retain(|(k, seq, _)| *k != named || *seq > page.seq);
                }
                protocol::collection_snapshot_frame(&sub.id, &page.items, page.seq, page.more)
            }
            Err(ListError::Invalid(message)) => protocol::error_frame("invalid_snapshot", &message),
            Err(ListError::Refused) => protocol::error_frame(
                "snapshot_failed",
                "This connection may not list the collection",
            ),
            Err(ListError::Failed(e)) => {
                tracing::error!("Reading records for a realtime snapshot failed: {e}");
                protocol::error_frame("snapshot_failed", "The records could not be read")
            }
        };
        push(c, frame, stats, dirty);
        release_held(c, stats, dirty);
    }

    /// The journal's answer to a resume (`Ok(None)`: not replayable): the frames this
    /// connection may read, `resumed`, then the held live frames. A named subscription that
    /// was replaced or unsubscribed meanwhile gets nothing (its held frames are released).
    pub(crate) fn replayed(
        &mut self,
        id: u64,
        channel: &str,
        named: Option<u64>,
        upto: u64,
        result: Result<Option<Vec<Replayed>>, String>,
    ) {
        let HubState {
            conns,
            named: subs,
            rules,
            stats,
            dirty,
            clock,
            ..
        } = self;
        let Some(c) = conns.get_mut(&id) else {
            return;
        };
        let sub = match named {
            None => None,
            Some(k) => match subs.get(&k).filter(|n| n.conn == id) {
                Some(n) => Some(n),
                None => {
                    release_held(c, stats, dirty);
                    return;
                }
            },
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("Reading the event journal for a resume failed: {e}");
                None
            }
        };
        let frames = entries.and_then(|entries| match sub.and_then(|n| n.live.as_deref()) {
            Some(live) => replay_filtered(c, live, rules.as_ref(), entries, clock()),
            None => Some(replay_plain(c, rules.as_ref(), entries)),
        });
        let recovered = frames.is_some();
        if let Some(frames) = frames {
            stats.frames_out.fetch_add(frames.len() as u64, Relaxed);
            c.sink.push_replay(frames);
        }
        let resumed = protocol::resumed_frame(channel, sub.map(|n| &*n.id), recovered, upto);
        push(c, resumed, stats, dirty);
        release_held(c, stats, dirty);
    }

    /// Removes the subscription `target` names (if there is one) and acknowledges.
    pub(crate) fn unsubscribe(&mut self, id: u64, target: &SubRef) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let key = target.key();
        if let Some(pos) = c.subs.iter().position(|s| sub_id(s, &self.named) == key) {
            let sub = c.subs.swap_remove(pos);
            self.drop_sub(id, sub);
            self.stats.subscriptions.fetch_sub(1, Relaxed);
        }
        self.push_to(id, protocol::unsubscribed_frame(target));
    }

    pub(crate) fn unregister(&mut self, id: u64) {
        self.unindex_identity(id);
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        self.stats
            .subscriptions
            .fetch_sub(c.subs.len() as u64, Relaxed);
        for s in c.subs {
            self.drop_sub(id, s);
        }
        self.stats.connections.fetch_sub(1, Relaxed);
    }

    /// Queues `e` for every connection that subscribed to it and may read it: once each for
    /// plain subscriptions, and once per filtered subscription whose results it changes.
    pub(crate) fn fan_out(&mut self, e: &Event) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(js) = e.seq {
            self.journal_seq = self.journal_seq.max(js);
        }
        self.stats.events_in.fetch_add(1, Relaxed);
        if self.conns.is_empty() {
            return;
        }
        self.fan_out_plain(e, seq);
        if !self.live.is_empty() {
            self.fan_out_live(e);
        }
    }

    /// Plain subscriptions: one frame per connection, however many of them match.
    fn fan_out_plain(&mut self, e: &Event, seq: u64) {
        let d = Delivery::of(e, self.rules.as_ref());
        let t = e.event_type.as_str();
        let per_record = (e.source == EventSource::Collections)
            .then(|| e.payload.get("id").and_then(Value::as_str))
            .flatten()
            .and_then(|id| record_channel(t, id));
        let rc = per_record.as_deref();
        let hold_limit = self.cfg.queue_capacity.saturating_mul(4);
        let HubState {
            conns,
            exact,
            prefix,
            by_user,
            admins,
            named,
            stats,
            dirty,
            ..
        } = self;
        let mut deliver_plain = |id: u64, check_subs: bool| {
            let Some(c) = conns.get_mut(&id) else { return };
            if c.last_seq == seq || c.closing {
                return;
            }
            if check_subs
                && !c
                    .subs
                    .iter()
                    .any(|s| plain_channel(s, named).is_some_and(|ch| matches_event(ch, t, rc)))
            {
                return;
            }
            c.last_seq = seq;
            if let Some(frame) = d.frame_for(&c.ctx) {
                deliver(c, frame.clone(), (0, 0), hold_limit, stats, dirty);
            }
        };
        if let Some(owner) = d.sole_owner() {
            // Only the owner's connections and admins can receive it: look them up directly.
            if let Some(ids) = owner.and_then(|o| by_user.get(o)) {
                for &id in ids {
                    deliver_plain(id, true);
                }
            }
            for &id in admins.iter() {
                deliver_plain(id, true);
            }
            return;
        }
        if let Some(ids) = exact.get(t) {
            for &id in ids {
                deliver_plain(id, false);
            }
        }
        for (i, b) in t.bytes().enumerate() {
            if b == b'.'
                && let Some(ids) = prefix.get(&t[..=i])
            {
                for &id in ids {
                    deliver_plain(id, false);
                }
            }
        }
        if let Some(rc) = rc {
            // `posts.rec_1.updated` and `posts.rec_1.*`.
            if let Some(ids) = exact.get(rc) {
                for &id in ids {
                    deliver_plain(id, false);
                }
            }
            if let Some((record_prefix, _)) = rc.rsplit_once('.')
                && let Some(ids) = prefix.get(&rc[..=record_prefix.len()])
            {
                for &id in ids {
                    deliver_plain(id, false);
                }
            }
        }
    }

    /// Filtered subscriptions of the event's collection that it can concern (see the module
    /// comment): each judged, and sent its own frame when the event changes its results.
    fn fan_out_live(&mut self, e: &Event) {
        let Some((collection, action)) = live::record_action(e) else {
            return;
        };
        let hold_limit = self.cfg.queue_capacity.saturating_mul(4);
        let HubState {
            conns,
            named,
            live: by_collection,
            rules,
            by_user,
            admins,
            stats,
            dirty,
            candidates,
            clock,
            filter_evaluations,
            ..
        } = self;
        let Some(index) = by_collection.get(collection) else {
            return;
        };
        let rule = RecordRule::of(rules.as_ref(), collection);
        let current = live::current(e, action);
        let previous = e.previous.as_ref();
        candidates.clear();
        match rule.readers() {
            Readers::Nobody => return,
            Readers::Any => index.candidates(current, previous, candidates),
            readers => {
                // Nobody but the owners (before and after) and admins can be concerned: their
                // subscriptions, not the collection's.
                let owners = match readers {
                    Readers::OwnerAndAdmins => live::owners(current, previous),
                    _ => [None, None],
                };
                let conn_ids = owners
                    .into_iter()
                    .flatten()
                    .filter_map(|o| by_user.get(o))
                    .flatten()
                    .chain(admins.iter());
                for cid in conn_ids {
                    let Some(c) = conns.get(cid) else { continue };
                    for s in &c.subs {
                        if let Sub::Named(k) = s
                            && let Some(l) = named.get(k).and_then(|n| n.live.as_deref())
                            && *l.collection == *collection
                        {
                            candidates.push(*k);
                        }
                    }
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        // Subscription order, once each (an admin who owns the record is listed twice).
        candidates.sort_unstable();
        candidates.dedup();
        let now = clock();
        let full = e.envelope_json();
        let mut id_only = None;
        for k in candidates.iter() {
            let Some(sub) = named.get(k) else { continue };
            let Some(l) = sub.live.as_deref() else {
                continue;
            };
            if e.seq.is_some_and(|s| s <= l.after_seq) {
                continue;
            }
            let Some(c) = conns.get_mut(&sub.conn) else {
                continue;
            };
            if c.closing {
                continue;
            }
            *filter_evaluations += 1;
            let vars = live::vars_at(&mut c.vars, &c.ctx, &now);
            let Some(out) = live::judge(&rule, action, current, previous, &l.filter, &c.ctx, vars)
            else {
                continue;
            };
            let envelope = if out.id_only {
                id_only.get_or_insert_with(|| id_only_envelope(e)).clone()
            } else {
                full.clone()
            };
            let frame = protocol::live_event_frame(&l.head, out.change, &envelope);
            let tag = (*k, e.seq.unwrap_or(u64::MAX));
            deliver(c, frame, tag, hold_limit, stats, dirty);
        }
    }

    /// A role change applies at once; a deletion or logout-all makes the user's connections
    /// anonymous (told with `session_revoked`).
    pub(crate) fn user_change(&mut self, change: UserChange) {
        let user_id = match &change {
            UserChange::RoleChanged { user_id, .. }
            | UserChange::Deleted { user_id }
            | UserChange::SessionsRevoked { user_id } => user_id.clone(),
        };
        let ids: Vec<u64> = self
            .by_user
            .get(&user_id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.unindex_identity(id);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            match &change {
                UserChange::RoleChanged { role, .. } => {
                    if let Some(u) = c.ctx.user() {
                        let ctx = AuthContext::User(Arc::new(Caller {
                            role: *role,
                            ..u.clone()
                        }));
                        c.set_ctx(ctx);
                    }
                }
                UserChange::Deleted { .. } | UserChange::SessionsRevoked { .. } => {
                    c.set_ctx(AuthContext::Anonymous);
                    c.exp = None;
                    push(
                        c,
                        protocol::error_frame(
                            "session_revoked",
                            "The account was deleted or signed out everywhere; this connection is now anonymous",
                        ),
                        &self.stats,
                        &mut self.dirty,
                    );
                }
            }
            self.index_identity(id);
        }
    }

    /// The clock (once a second): heartbeats, expired tokens (anonymous with a warning, then
    /// closed with 4001 after the grace period), rates. `now` in seconds since the epoch.
    pub(crate) fn tick(&mut self, now: u64, instant: Instant) {
        if instant.duration_since(self.last_heartbeat) >= self.cfg.heartbeat {
            self.last_heartbeat = instant;
            for c in self.conns.values() {
                c.sink.request_heartbeat();
            }
        }
        let mut expired = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if let Some(until) = c.grace_until
                && instant >= until
                && !c.closing
            {
                c.closing = true;
                self.stats.token_expired_closes.fetch_add(1, Relaxed);
                c.sink.close(CLOSE_TOKEN_EXPIRED, "token_expired");
            } else if c.exp.is_some_and(|exp| exp <= now) {
                expired.push(*id);
            }
        }
        for id in expired {
            self.unindex_identity(id);
            if let Some(c) = self.conns.get_mut(&id) {
                c.set_ctx(AuthContext::Anonymous);
                c.exp = None;
                c.grace_until = Some(instant + self.cfg.token_grace);
                let msg = format!(
                    "The access token expired; this connection now receives only public events. Send {{\"action\":\"auth\",\"token\":\"…\"}} within {} s to keep it",
                    self.cfg.token_grace.as_secs()
                );
                push(
                    c,
                    protocol::error_frame("token_expired", &msg),
                    &self.stats,
                    &mut self.dirty,
                );
            }
        }
        let events_in = self.stats.events_in.load(Relaxed);
        let frames_out = self.stats.frames_out.load(Relaxed);
        self.stats
            .events_in_per_sec
            .store(events_in - self.last_events_in, Relaxed);
        self.stats
            .frames_out_per_sec
            .store(frames_out - self.last_frames_out, Relaxed);
        self.last_events_in = events_in;
        self.last_frames_out = frames_out;
    }

    /// Shutdown: every connection is asked to close with 1001.
    pub(crate) fn close_all(&mut self) {
        for c in self.conns.values_mut() {
            c.closing = true;
            c.sink.close(CLOSE_GOING_AWAY, "going away");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven tests of the hub's decisions, with sinks that record what they are given
    //! (in the manner of centrifuge's `hub_test.go`).

    use super::*;
    use bakend_auth::{Permission, Rule};
    use bakend_core::access::Role;
    use serde_json::json;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    #[derive(Default)]
    struct Recorded {
        frames: Vec<Value>,
        replay: Vec<Value>,
        closed: Option<(u16, &'static str)>,
        heartbeats: u32,
        /// Refuse frames beyond this many (queued and not yet taken by `take`).
        capacity: Option<usize>,
        /// The hub owns a flush it has not done yet.
        owed_flush: bool,
        flushes: u32,
    }

    #[derive(Clone, Default)]
    struct Fake(Rc<RefCell<Recorded>>);

    impl Sink for Fake {
        fn push_deferred(&self, frame: Utf8Bytes) -> (Pushed, bool) {
            let mut r = self.0.borrow_mut();
            if r.closed.is_some() {
                return (Pushed::Closing, false);
            }
            if r.capacity.is_some_and(|c| r.frames.len() >= c) {
                return (Pushed::Full, false);
            }
            r.frames.push(serde_json::from_str(frame.as_str()).unwrap());
            let take_drain = !r.owed_flush;
            r.owed_flush = true;
            (Pushed::Queued(r.frames.len()), take_drain)
        }
        fn flush(&self) {
            let mut r = self.0.borrow_mut();
            assert!(r.owed_flush, "flushed without owning the drain");
            r.owed_flush = false;
            r.flushes += 1;
        }
        fn push_replay(&self, frames: Vec<Utf8Bytes>) {
            let mut r = self.0.borrow_mut();
            for f in frames {
                r.replay.push(serde_json::from_str(f.as_str()).unwrap());
            }
        }
        fn close(&self, code: u16, reason: &'static str) {
            self.0.borrow_mut().closed.get_or_insert((code, reason));
        }
        fn request_heartbeat(&self) {
            self.0.borrow_mut().heartbeats += 1;
        }
    }

    struct Rules;
    impl ReadRules for Rules {
        fn read_rule(&self, collection: &str) -> Option<(Permission, bool)> {
            let (rule, owned) = match collection {
                "posts" => (Rule::Public, true),
                "members" => (Rule::Authenticated, true),
                "notes" => (Rule::Owner, true),
                "ownerless" => (Rule::Owner, false),
                "secrets" => (Rule::Admin, true),
                "rooms" => (Rule::Public, true),
                "tasks" => (Rule::Owner, true),
                _ => return None,
            };
            Some((rule.into(), owned))
        }

        fn filter_schema(&self, collection: &str) -> Option<bakend_filter::Schema> {
            use bakend_filter::Kind;
            self.read_rule(collection)?;
            Some(
                bakend_filter::Schema::new()
                    .with_field("title", Kind::String)
                    .with_field("room", Kind::String)
                    .with_field("n", Kind::Integer)
                    .with_field("done", Kind::Boolean)
                    .with_field("user_id", Kind::String)
                    .with_field("assignee", Kind::String)
                    .with_field("due", Kind::Datetime),
            )
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Who {
        Anon,
        User(&'static str),
        Admin(&'static str),
    }

    fn ctx(who: Who) -> AuthContext {
        let user = |id: &str, role| {
            AuthContext::User(Arc::new(Caller {
                id: id.to_string(),
                email: format!("{id}@example.com"),
                role,
                created_at: String::new(),
            }))
        };
        match who {
            Who::Anon => AuthContext::Anonymous,
            Who::User(id) => user(id, Role::Authenticated),
            Who::Admin(id) => user(id, Role::Admin),
        }
    }

    struct World {
        hub: HubState<Fake>,
        sinks: HashMap<u64, Fake>,
        stats: Arc<HubStats>,
        start: Instant,
    }

    fn cfg() -> RealtimeConfig {
        RealtimeConfig {
            max_subscriptions: 3,
            queue_capacity: 2,
            heartbeat: Duration::from_secs(30),
            token_grace: Duration::from_secs(10),
            ..RealtimeConfig::default()
        }
    }

    impl World {
        fn new() -> World {
            Self::with_journal(None, 0)
        }

        fn with_journal(epoch: Option<&str>, journal_seq: u64) -> World {
            let stats = Arc::new(HubStats::default());
            let start = Instant::now();
            let hub = HubState::new(
                cfg(),
                Arc::new(Rules),
                stats.clone(),
                epoch.map(str::to_string),
                journal_seq,
                true,
                start,
            );
            World {
                hub,
                sinks: HashMap::new(),
                stats,
                start,
            }
        }

        fn connect(&mut self, id: u64, who: Who) -> Fake {
            self.connect_until(id, who, None)
        }

        fn connect_until(&mut self, id: u64, who: Who, exp: Option<u64>) -> Fake {
            let sink = Fake::default();
            self.hub.register(id, sink.clone(), ctx(who), exp);
            self.sinks.insert(id, sink.clone());
            sink
        }

        /// Subscribes and checks (and takes) the ack.
        fn sub(&mut self, id: u64, channel: &str) {
            assert_eq!(self.hub.subscribe(id, channel.into(), None, false), None);
            assert_eq!(
                self.take(id),
                [json!({"type": "subscribed", "channel": channel})]
            );
        }

        /// Every frame queued for `id` since the last call, after the round's flush.
        fn take(&mut self, id: u64) -> Vec<Value> {
            while self.hub.flush_some() {}
            let sink = &self.sinks[&id];
            let mut r = sink.0.borrow_mut();
            assert!(!r.owed_flush, "a queued frame was left unflushed");
            std::mem::take(&mut r.frames)
        }

        /// The event types `id` received since the last call (other frames are dropped).
        fn events(&mut self, id: u64) -> Vec<String> {
            self.take(id)
                .into_iter()
                .filter(|f| f["type"] == "event")
                .map(|f| f["event"]["type"].as_str().unwrap().to_string())
                .collect()
        }

        fn closed(&self, id: u64) -> Option<(u16, &'static str)> {
            self.sinks[&id].0.borrow().closed
        }
    }

    fn record_event(t: &str, id: &str, owner: Option<&str>) -> Event {
        Event::new(t, EventSource::Collections, json!({"id": id, "title": "x"}))
            .about(owner.map(str::to_string))
    }

    #[test]
    fn channels_route_exact_prefix_and_per_record() {
        // (subscription, event type, record id, delivered)
        let table: &[(&str, &str, &str, bool)] = &[
            ("posts.created", "posts.created", "r1", true),
            ("posts.created", "posts.updated", "r1", false),
            ("posts.*", "posts.deleted", "r1", true),
            ("posts.*", "posts_archive.created", "r1", false),
            ("posts.r1.*", "posts.updated", "r1", true),
            ("posts.r1.*", "posts.updated", "r2", false),
            ("posts.r1.updated", "posts.updated", "r1", true),
            ("posts.r1.updated", "posts.deleted", "r1", false),
            ("posts", "posts.created", "r1", false),
            ("members.*", "members.created", "r1", false), // anonymous may not read
            ("unknown.*", "unknown.created", "r1", false), // no such collection
        ];
        for &(channel, event_type, record, want) in table {
            let mut w = World::new();
            w.connect(1, Who::Anon);
            w.sub(1, channel);
            w.hub.fan_out(&record_event(event_type, record, None));
            let got = w.events(1);
            assert_eq!(
                got.len(),
                usize::from(want),
                "{channel} ← {event_type} about {record}: {got:?}"
            );
        }
    }

    #[test]
    fn overlapping_subscriptions_deliver_once() {
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        for c in ["posts.*", "posts.created", "posts.r1.*"] {
            w.sub(1, c);
        }
        w.hub
            .fan_out(&record_event("posts.created", "r1", Some("u1")));
        assert_eq!(w.events(1), ["posts.created"]);
        // Owner-only events too (looked up by owner, then checked against subscriptions).
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.sub(1, "notes.*");
        w.sub(1, "notes.n1.*");
        w.hub
            .fan_out(&record_event("notes.created", "n1", Some("u1")));
        assert_eq!(w.events(1), ["notes.created"]);
    }

    #[test]
    fn owner_only_events_reach_the_owner_and_admins() {
        // (who, collection, delivered), for an event about a record owned by u1.
        let table: &[(Who, &str, bool)] = &[
            (Who::User("u1"), "notes", true),
            (Who::User("u2"), "notes", false),
            (Who::Anon, "notes", false),
            (Who::Admin("a1"), "notes", true),
            (Who::User("u1"), "ownerless", false), // owner rule without owner field: admins
            (Who::Admin("a1"), "ownerless", true),
            (Who::User("u1"), "secrets", false),
            (Who::Admin("a1"), "secrets", true),
            (Who::User("u2"), "members", true),
            (Who::Anon, "members", false),
        ];
        for &(who, collection, want) in table {
            let mut w = World::new();
            w.connect(1, who);
            // Subscribed, but to something else: owner lookup still checks subscriptions.
            w.connect(2, who);
            w.sub(1, &format!("{collection}.*"));
            w.sub(2, "posts.*");
            let t = format!("{collection}.created");
            w.hub.fan_out(&record_event(&t, "n1", Some("u1")));
            assert_eq!(
                w.events(1).len(),
                usize::from(want),
                "{who:?} on {collection}"
            );
            assert_eq!(w.events(2), Vec::<String>::new(), "{who:?} on posts.*");
        }
    }

    #[test]
    fn non_record_events_are_redacted_for_others() {
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.connect(2, Who::User("u2"));
        w.connect(3, Who::Admin("a1"));
        for id in 1..=3 {
            w.sub(id, "auth.*");
        }
        let e = Event::new(
            "auth.login",
            EventSource::Auth,
            json!({"id": "u1", "email": "u1@example.com"}),
        )
        .about(Some("u1".into()));
        w.hub.fan_out(&e);
        let email = |w: &mut World, id| w.take(id)[0]["event"]["payload"]["email"].clone();
        assert_eq!(email(&mut w, 1), "u1@example.com");
        assert_eq!(email(&mut w, 2), Value::Null);
        assert_eq!(email(&mut w, 3), "u1@example.com");
    }

    #[test]
    fn subscription_limit_refuses_new_channels_only() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        for c in ["a.*", "b.*", "c.*"] {
            w.sub(1, c);
        }
        // A duplicate is acknowledged again and does not count.
        w.sub(1, "a.*");
        assert_eq!(w.hub.subscribe(1, "d.*".into(), None, false), None);
        let f = w.take(1);
        assert_eq!(f[0]["code"], "subscription_limit", "{f:?}");
        assert_eq!(w.stats.subscriptions.load(Relaxed), 3);
        w.hub
            .fan_out(&Event::new("d.x", EventSource::System, json!({})));
        assert_eq!(w.events(1), Vec::<String>::new());
    }

    #[test]
    fn unsubscribe_and_unregister_clean_the_indexes() {
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.connect(2, Who::Admin("a1"));
        w.sub(1, "posts.*");
        w.sub(1, "posts.r1.updated");
        w.sub(2, "notes.*");
        w.hub.unsubscribe(1, &SubRef::Channel("posts.*".into()));
        assert_eq!(
            w.take(1),
            [json!({"type": "unsubscribed", "channel": "posts.*"})]
        );
        w.hub.fan_out(&record_event("posts.created", "r1", None));
        assert_eq!(w.events(1), Vec::<String>::new());
        w.hub.fan_out(&record_event("posts.updated", "r1", None));
        assert_eq!(w.events(1), ["posts.updated"]);
        w.hub.unregister(1);
        w.hub.unregister(2);
        assert!(w.hub.conns.is_empty());
        assert!(w.hub.exact.is_empty() && w.hub.prefix.is_empty());
        assert!(w.hub.by_user.is_empty() && w.hub.admins.is_empty());
        assert_eq!(w.stats.subscriptions.load(Relaxed), 0);
        assert_eq!(w.stats.connections.load(Relaxed), 0);
        // An event for nobody, and requests for a connection that is gone, do nothing.
        w.hub.fan_out(&record_event("posts.created", "r2", None));
        w.hub.unsubscribe(1, &SubRef::Channel("posts.*".into()));
        assert_eq!(w.hub.subscribe(1, "x.*".into(), None, false), None);
    }

    #[test]
    fn identity_change_reindexes_and_acks_first() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        w.sub(1, "notes.*");
        w.hub
            .fan_out(&record_event("notes.created", "n1", Some("u1")));
        assert_eq!(w.events(1), Vec::<String>::new());
        w.hub.identity(
            1,
            ctx(Who::User("u1")),
            None,
            Utf8Bytes::from_static("{\"type\":\"ack\"}"),
        );
        w.hub
            .fan_out(&record_event("notes.created", "n2", Some("u1")));
        let f = w.take(1);
        assert_eq!(f[0]["type"], "ack");
        assert_eq!(f[1]["event"]["payload"]["id"], "n2");
        // Becoming someone else: u1's notes no longer, u2's now.
        w.hub.identity(
            1,
            ctx(Who::User("u2")),
            None,
            Utf8Bytes::from_static("{\"type\":\"ack\"}"),
        );
        w.take(1);
        w.hub
            .fan_out(&record_event("notes.created", "n3", Some("u1")));
        w.hub
            .fan_out(&record_event("notes.created", "n4", Some("u2")));
        let got: Vec<Value> = w
            .take(1)
            .iter()
            .map(|f| f["event"]["payload"]["id"].clone())
            .collect();
        assert_eq!(got, [json!("n4")]);
        assert!(!w.hub.by_user.contains_key("u1"));
    }

    #[test]
    fn account_changes_apply_at_once() {
        // Role change: a user promoted to admin sees admin-only events.
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.sub(1, "secrets.*");
        w.hub.user_change(UserChange::RoleChanged {
            user_id: "u1".into(),
            role: Role::Admin,
        });
        w.hub.fan_out(&record_event("secrets.created", "s1", None));
        assert_eq!(w.events(1), ["secrets.created"]);
        assert!(w.hub.admins.contains(&1));
        // Revoked or deleted: anonymous, told so, owner events stop; others untouched.
        for change in [
            UserChange::SessionsRevoked {
                user_id: "u1".into(),
            },
            UserChange::Deleted {
                user_id: "u1".into(),
            },
        ] {
            let mut w = World::new();
            w.connect(1, Who::User("u1"));
            w.connect(2, Who::User("u2"));
            w.sub(1, "notes.*");
            w.sub(2, "notes.*");
            w.hub.user_change(change);
            let f = w.take(1);
            assert_eq!(f[0]["code"], "session_revoked", "{f:?}");
            assert_eq!(w.take(2), Vec::<Value>::new());
            w.hub
                .fan_out(&record_event("notes.created", "n1", Some("u1")));
            assert_eq!(w.events(1), Vec::<String>::new());
            assert!(!w.hub.by_user.contains_key("u1"));
            assert_eq!(w.hub.conns[&1].ctx, AuthContext::Anonymous);
        }
    }

    #[test]
    fn expired_token_goes_anonymous_then_closes_after_grace() {
        let mut w = World::new();
        let now = 1_000_000;
        w.connect_until(1, Who::User("u1"), Some(now + 5));
        w.connect_until(2, Who::User("u2"), Some(now + 5));
        w.sub(1, "notes.*");
        let t0 = w.start;
        w.hub.tick(now, t0 + Duration::from_secs(1));
        assert_eq!(w.take(1), Vec::<Value>::new());
        // Expired: anonymous with a warning, no more owner events.
        w.hub.tick(now + 5, t0 + Duration::from_secs(2));
        assert_eq!(w.take(1)[0]["code"], "token_expired");
        w.hub
            .fan_out(&record_event("notes.created", "n1", Some("u1")));
        assert_eq!(w.events(1), Vec::<String>::new());
        // A fresh token within the grace keeps the connection (2).
        w.hub.identity(
            2,
            ctx(Who::User("u2")),
            Some(now + 100),
            Utf8Bytes::from_static("{}"),
        );
        // Grace (10 s) passes: 4001 for the one that did nothing.
        w.hub.tick(now + 11, t0 + Duration::from_secs(11));
        assert_eq!(w.closed(1), None);
        w.hub.tick(now + 12, t0 + Duration::from_secs(12));
        assert_eq!(w.closed(1), Some((CLOSE_TOKEN_EXPIRED, "token_expired")));
        assert_eq!(w.closed(2), None);
        assert_eq!(w.stats.token_expired_closes.load(Relaxed), 1);
        // Heartbeats go to every connection on the hub's clock.
        w.hub.tick(now + 31, t0 + Duration::from_secs(31));
        assert_eq!(w.sinks[&2].0.borrow().heartbeats, 1);
    }

    #[test]
    fn a_full_queue_closes_the_slow_consumer_only() {
        let mut w = World::new();
        let slow = w.connect(1, Who::Anon);
        w.connect(2, Who::Anon);
        w.sub(1, "posts.*");
        w.sub(2, "posts.*");
        slow.0.borrow_mut().capacity = Some(2);
        for i in 0..4 {
            w.hub
                .fan_out(&record_event("posts.created", &format!("r{i}"), None));
        }
        assert_eq!(w.closed(1), Some((CLOSE_SLOW_CONSUMER, "slow_consumer")));
        assert_eq!(w.events(1).len(), 2);
        assert_eq!(w.events(2).len(), 4);
        assert_eq!(w.stats.slow_consumer_closes.load(Relaxed), 1);
    }

    /// Resuming: live frames wait behind the replay; `resumed` between them.
    #[test]
    fn live_frames_are_held_until_the_replay_is_queued() {
        let mut w = World::with_journal(Some("ep"), 10);
        w.connect(1, Who::Anon);
        let read = w.hub.subscribe(
            1,
            "posts.*".into(),
            Some(Box::new(Since {
                epoch: "ep".into(),
                seq: 7,
            })),
            false,
        );
        assert_eq!(
            read,
            Some(Read::Replay {
                id: 1,
                channel: "posts.*".into(),
                named: None,
                after: 7,
                upto: 10
            })
        );
        w.take(1); // the ack
        let mut live = record_event("posts.updated", "r9", None);
        live.seq = Some(11);
        w.hub.fan_out(&live);
        assert_eq!(
            w.take(1),
            Vec::<Value>::new(),
            "held while the replay is read"
        );
        let mut missed = record_event("posts.created", "r8", None);
        missed.seq = Some(8);
        let entry = Replayed {
            subject: None,
            envelope: missed.envelope_json().to_string(),
            previous: None,
        };
        w.hub
            .replayed(1, "posts.*", None, 10, Ok(Some(vec![entry])));
        let replay = std::mem::take(&mut w.sinks[&1].0.borrow_mut().replay);
        assert_eq!(replay[0]["event"]["seq"], 8);
        let f = w.take(1);
        assert_eq!(
            f[0],
            json!({"type": "resumed", "channel": "posts.*", "recovered": true, "lastSeq": 10})
        );
        assert_eq!(f[1]["event"]["seq"], 11);
        assert!(w.hub.conns[&1].held.is_none());
    }

    #[test]
    fn resumes_that_cannot_be_replayed() {
        // (journal epoch, since, recovered frame expected)
        let table: &[(Option<&str>, (&str, u64))] = &[
            (None, ("ep", 1)),          // no journal
            (Some("ep"), ("other", 1)), // another epoch (restored backup)
            (Some("ep"), ("ep", 11)),   // from the future
        ];
        for &(epoch, (since_epoch, seq)) in table {
            let mut w = World::with_journal(epoch, 10);
            w.connect(1, Who::Anon);
            let since = Since {
                epoch: since_epoch.into(),
                seq,
            };
            assert_eq!(
                w.hub
                    .subscribe(1, "posts.*".into(), Some(Box::new(since)), false),
                None
            );
            let f = w.take(1);
            assert_eq!(f[1]["type"], "resumed", "{epoch:?} {since_epoch}:{seq}");
            assert_eq!(f[1]["recovered"], false);
            assert!(w.hub.conns[&1].held.is_none());
        }
        // A journal that can no longer replay the range answers `recovered: false` too, and
        // the held frames follow.
        let mut w = World::with_journal(Some("ep"), 10);
        w.connect(1, Who::Anon);
        let since = Since {
            epoch: "ep".into(),
            seq: 1,
        };
        assert!(
            w.hub
                .subscribe(1, "posts.*".into(), Some(Box::new(since)), false)
                .is_some()
        );
        w.take(1);
        w.hub.fan_out(&record_event("posts.created", "r1", None));
        w.hub.replayed(1, "posts.*", None, 10, Ok(None));
        let f = w.take(1);
        assert_eq!(
            (f[0]["type"].clone(), f[0]["recovered"].clone()),
            (json!("resumed"), json!(false))
        );
        assert_eq!(f[1]["event"]["type"], "posts.created");
    }

    #[test]
    fn a_resume_too_far_behind_is_closed_like_a_slow_consumer() {
        let mut w = World::with_journal(Some("ep"), 0);
        w.connect(1, Who::Anon);
        let since = Since {
            epoch: "ep".into(),
            seq: 0,
        };
        assert!(
            w.hub
                .subscribe(1, "posts.*".into(), Some(Box::new(since)), false)
                .is_some()
        );
        // Hold limit: 4 × queue capacity (2).
        for i in 0..8 {
            w.hub
                .fan_out(&record_event("posts.created", &format!("r{i}"), None));
        }
        assert_eq!(w.closed(1), None);
        w.hub.fan_out(&record_event("posts.created", "r8", None));
        assert_eq!(w.closed(1), Some((CLOSE_SLOW_CONSUMER, "slow_consumer")));
    }

    #[test]
    fn snapshots_come_before_live_frames_and_follow_the_read_rule() {
        // (who, owner of the record, record visible in the snapshot)
        let table: &[(Who, &str, bool)] = &[
            (Who::User("u1"), "u1", true),
            (Who::User("u2"), "u1", false),
            (Who::Admin("a1"), "u1", true),
        ];
        for &(who, owner, visible) in table {
            let mut w = World::with_journal(Some("ep"), 3);
            w.connect(1, who);
            let read = w.hub.subscribe(1, "notes.n1.*".into(), None, true);
            assert_eq!(
                read,
                Some(Read::Snapshot {
                    id: 1,
                    channel: "notes.n1.*".into(),
                    collection: "notes".into(),
                    record_id: "n1".into(),
                })
            );
            w.take(1);
            w.hub
                .fan_out(&record_event("notes.updated", "n1", Some(owner)));
            assert_eq!(w.take(1), Vec::<Value>::new());
            let record = json!({"id": "n1", "user_id": owner});
            w.hub
                .snapshotted(1, "notes.n1.*", "notes", Ok((Some(record.clone()), 3)));
            let f = w.take(1);
            assert_eq!(f[0]["type"], "snapshot", "{who:?}");
            assert_eq!(f[0]["seq"], 3);
            assert_eq!(
                f[0]["record"],
                if visible { record } else { Value::Null },
                "{who:?}"
            );
            assert_eq!(f.len(), 1 + usize::from(visible), "{who:?}: {f:?}");
        }
        // Only per-record and collection channels have snapshots.
        let mut w = World::new();
        w.connect(1, Who::Anon);
        for channel in ["posts.created", "nothing.*"] {
            assert_eq!(w.hub.subscribe(1, channel.into(), None, true), None);
            assert_eq!(w.take(1)[1]["code"], "invalid_snapshot");
        }
    }

    #[test]
    fn frames_of_a_round_are_flushed_once_per_socket() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        w.sub(1, "posts.*");
        let flushes = w.sinks[&1].0.borrow().flushes;
        for i in 0..5 {
            w.hub
                .fan_out(&record_event("posts.created", &format!("r{i}"), None));
        }
        assert_eq!(w.events(1).len(), 5);
        assert_eq!(w.sinks[&1].0.borrow().flushes, flushes + 1);
    }

    #[test]
    fn shutdown_closes_everyone_with_going_away() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        w.connect(2, Who::User("u1"));
        w.hub.close_all();
        assert_eq!(w.closed(1), Some((CLOSE_GOING_AWAY, "going away")));
        assert_eq!(w.closed(2), Some((CLOSE_GOING_AWAY, "going away")));
        w.hub.fan_out(&record_event("posts.created", "r1", None));
        assert_eq!(w.take(1), Vec::<Value>::new());
    }

    // ---------------------------------------------------------------------------------------
    // Filtered subscriptions

    impl World {
        /// Makes a filtered subscription and checks (and takes) the ack.
        fn sub_f(&mut self, conn: u64, channel: &str, id: &str, filter: &str) {
            let named = Named {
                id: Some(id.into()),
                filter: Some(filter.into()),
                ..Default::default()
            };
            let read =
                self.hub
                    .subscribe_named(conn, channel.into(), Some(Box::new(named)), None, false);
            assert_eq!(read, None);
            assert_eq!(
                self.take(conn),
                [json!({"type": "subscribed", "channel": channel, "id": id})]
            );
        }

        /// `(subscription, change, payload)` of the filtered event frames queued for `conn`;
        /// asserts there is nothing else.
        fn live(&mut self, conn: u64) -> Vec<(String, String, Value)> {
            self.take(conn)
                .into_iter()
                .map(|f| {
                    assert_eq!(f["type"], "event", "{f}");
                    let sub = f["subscription"].as_str().expect("a filtered frame");
                    (
                        sub.to_string(),
                        f["change"].as_str().unwrap().to_string(),
                        f["event"]["payload"].clone(),
                    )
                })
                .collect()
        }
    }

    /// A record event; for updates and deletions `before` is the previous record.
    fn rec(t: &str, after: Value, before: Option<Value>) -> Event {
        let payload = if t.ends_with(".deleted") {
            json!({"id": after["id"]})
        } else {
            after.clone()
        };
        let owner = after["user_id"].as_str().map(str::to_string);
        let mut e = Event::new(t, EventSource::Collections, payload).about(owner);
        e.previous = before;
        e
    }

    fn change(sub: &str, change: &str, payload: Value) -> (String, String, Value) {
        (sub.to_string(), change.to_string(), payload)
    }

    #[test]
    fn each_change_follows_the_record_in_and_out_of_the_filter() {
        let r = |n: i64, room: &str| json!({"id": "r1", "room": room, "n": n});
        // (event type, record after, record before, expected change)
        let table: &[(&str, Value, Option<Value>, Option<&str>)] = &[
            ("rooms.created", r(1, "a"), None, Some("added")),
            ("rooms.created", r(1, "b"), None, None),
            (
                "rooms.updated",
                r(2, "a"),
                Some(r(1, "a")),
                Some("modified"),
            ),
            ("rooms.updated", r(2, "a"), Some(r(1, "b")), Some("added")),
            ("rooms.updated", r(2, "b"), Some(r(1, "a")), Some("removed")),
            ("rooms.updated", r(2, "b"), Some(r(1, "b")), None),
            ("rooms.deleted", r(1, "a"), Some(r(1, "a")), Some("removed")),
            ("rooms.deleted", r(1, "b"), Some(r(1, "b")), None),
            // Another collection's events never concern it.
            ("posts.created", r(1, "a"), None, None),
        ];
        for (t, after, before, want) in table {
            let mut w = World::new();
            w.connect(1, Who::Anon);
            w.sub_f(1, "rooms.*", "in-a", "room = 'a'");
            w.hub.fan_out(&rec(t, after.clone(), before.clone()));
            let got = w.live(1);
            let want: Vec<_> = want
                .iter()
                .map(|c| {
                    // Updates carry the record as it is now (still readable, out of the
                    // filter for `removed`); deletions carry `{id}` as always.
                    let payload = if t.ends_with(".deleted") {
                        json!({"id": "r1"})
                    } else {
                        after.clone()
                    };
                    change("in-a", c, payload)
                })
                .collect();
            assert_eq!(got, want, "{t} {before:?} → {after}");
        }
    }

    #[test]
    fn ownership_transfer_removes_for_the_old_owner_and_adds_for_the_new() {
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.connect(2, Who::User("u2"));
        w.connect(3, Who::Admin("a1"));
        w.connect(4, Who::User("u3"));
        for c in 1..=4 {
            w.sub_f(c, "tasks.*", "open", "done = false");
        }
        let before = json!({"id": "t1", "user_id": "u1", "done": false, "title": "secret"});
        let after = json!({"id": "t1", "user_id": "u2", "done": false, "title": "secret"});
        w.hub
            .fan_out(&rec("tasks.updated", after.clone(), Some(before)));
        // u1 may no longer read it: `{id}` only, never the record's fields.
        assert_eq!(w.live(1), [change("open", "removed", json!({"id": "t1"}))]);
        assert_eq!(w.live(2), [change("open", "added", after.clone())]);
        assert_eq!(w.live(3), [change("open", "modified", after)]);
        assert_eq!(w.live(4), []);
        // Owner-only collections look candidates up by owner: u3's subscription was not even
        // judged (u1, u2 and the admin were).
        assert_eq!(w.hub.filter_evaluations, 3);
    }

    #[test]
    fn filters_see_the_connections_identity_and_follow_its_changes() {
        let mut w = World::new();
        w.connect(1, Who::User("u1"));
        w.connect(2, Who::User("u2"));
        w.connect(3, Who::Anon);
        for c in 1..=3 {
            w.sub_f(c, "rooms.*", "mine", "assignee = @request.auth.id");
        }
        let t1 = json!({"id": "t1", "assignee": "u1"});
        w.hub.fan_out(&rec("rooms.created", t1.clone(), None));
        assert_eq!(w.live(1), [change("mine", "added", t1.clone())]);
        assert_eq!(w.live(2), []);
        assert_eq!(w.live(3), [], "anonymous: @request.auth.id is null");
        // Reassigned to u2.
        let t1b = json!({"id": "t1", "assignee": "u2"});
        w.hub
            .fan_out(&rec("rooms.updated", t1b.clone(), Some(t1.clone())));
        assert_eq!(w.live(1), [change("mine", "removed", t1b.clone())]);
        assert_eq!(w.live(2), [change("mine", "added", t1b.clone())]);

        // Connection 1 becomes u2: nothing is sent for the change itself; the next event is
        // judged with the new identity (before and after).
        w.hub
            .identity(1, ctx(Who::User("u2")), None, Utf8Bytes::from_static("{}"));
        w.take(1);
        let t1c = json!({"id": "t1", "assignee": "u2", "n": 1});
        w.hub.fan_out(&rec("rooms.updated", t1c.clone(), Some(t1b)));
        assert_eq!(w.live(1), [change("mine", "modified", t1c.clone())]);
        assert_eq!(w.live(2), [change("mine", "modified", t1c.clone())]);
        // Signed out everywhere: anonymous from then on.
        w.hub.user_change(UserChange::SessionsRevoked {
            user_id: "u2".into(),
        });
        assert_eq!(w.take(1)[0]["code"], "session_revoked");
        assert_eq!(w.take(2)[0]["code"], "session_revoked");
        let t1d = json!({"id": "t1", "assignee": "u2", "n": 2});
        w.hub.fan_out(&rec("rooms.updated", t1d, Some(t1c)));
        assert_eq!(w.live(1), []);
        assert_eq!(w.live(2), []);
        // A role change reaches `@request.auth.role`.
        w.connect(4, Who::User("u4"));
        w.sub_f(4, "rooms.*", "admin-view", "@request.auth.role = 'admin'");
        let r2 = json!({"id": "r2"});
        w.hub.fan_out(&rec("rooms.created", r2.clone(), None));
        assert_eq!(w.live(4), []);
        w.hub.user_change(UserChange::RoleChanged {
            user_id: "u4".into(),
            role: Role::Admin,
        });
        w.hub.fan_out(&rec("rooms.created", r2.clone(), None));
        assert_eq!(w.live(4), [change("admin-view", "added", r2)]);
    }

    #[test]
    fn now_is_read_from_the_clock_at_each_event() {
        static NOW: std::sync::Mutex<&str> = std::sync::Mutex::new("2024-01-01T00:00:00.000Z");
        fn clock() -> String {
            NOW.lock().unwrap().to_string()
        }
        let mut w = World::new();
        w.hub.set_clock(clock);
        w.connect(1, Who::Anon);
        w.sub_f(1, "rooms.*", "future", "due > @now");
        let r = json!({"id": "r1", "due": "2024-06-01T00:00:00.000Z"});
        w.hub.fan_out(&rec("rooms.created", r.clone(), None));
        assert_eq!(w.live(1), [change("future", "added", r.clone())]);
        *NOW.lock().unwrap() = "2025-01-01T00:00:00.000Z";
        let r2 = json!({"id": "r1", "due": "2024-06-01T00:00:00.000Z", "n": 1});
        w.hub.fan_out(&rec("rooms.updated", r2.clone(), Some(r)));
        assert_eq!(
            w.live(1),
            [],
            "both sides are judged now: past due before and after"
        );
    }

    #[test]
    fn plain_and_filtered_subscriptions_of_one_channel_get_their_own_frames() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        w.sub(1, "rooms.*");
        w.sub(1, "rooms.r1.*");
        w.sub_f(1, "rooms.*", "a", "room = 'a'");
        w.hub.fan_out(&rec(
            "rooms.created",
            json!({"id": "r1", "room": "b"}),
            None,
        ));
        assert_eq!(w.events(1), ["rooms.created"], "one plain frame");
        let r = json!({"id": "r1", "room": "a"});
        w.hub.fan_out(&rec(
            "rooms.updated",
            r.clone(),
            Some(json!({"id": "r1", "room": "b"})),
        ));
        let f = w.take(1);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0], json!({"type": "event", "event": f[0]["event"]}));
        assert_eq!(f[1]["subscription"], "a");
        assert_eq!(f[1]["change"], "added");
        assert_eq!(f[1]["event"], f[0]["event"], "the same envelope");
        // A filter without an id is named by its channel — and replaces the plain one.
        let named = Named {
            id: None,
            filter: Some("room = 'b'".into()),
            ..Default::default()
        };
        w.hub
            .subscribe_named(1, "rooms.*".into(), Some(Box::new(named)), None, false);
        assert_eq!(
            w.take(1),
            [json!({"type": "subscribed", "channel": "rooms.*", "id": "rooms.*"})]
        );
        assert_eq!(w.stats.subscriptions.load(Relaxed), 3);
        w.hub.fan_out(&rec(
            "rooms.updated",
            json!({"id": "r2", "room": "b"}),
            Some(json!({"id": "r2", "room": "b"})),
        ));
        assert_eq!(
            w.live(1),
            [change(
                "rooms.*",
                "modified",
                json!({"id": "r2", "room": "b"})
            )],
            "no plain frame any more (rooms.r2 is not rooms.r1)"
        );
    }

    #[test]
    fn replacing_unsubscribing_and_the_limit() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        w.sub_f(1, "rooms.*", "x", "room = 'a'");
        // Same id: replaced (acknowledged again, still one subscription).
        w.sub_f(1, "rooms.*", "x", "room = 'b'");
        assert_eq!(w.stats.subscriptions.load(Relaxed), 1);
        w.hub.fan_out(&rec(
            "rooms.created",
            json!({"id": "r1", "room": "a"}),
            None,
        ));
        assert_eq!(w.live(1), []);
        w.hub.fan_out(&rec(
            "rooms.created",
            json!({"id": "r2", "room": "b"}),
            None,
        ));
        assert_eq!(w.live(1).len(), 1);
        // Filtered subscriptions count against the limit (3 here).
        w.sub_f(1, "rooms.*", "y", "n > 1");
        w.sub(1, "posts.*");
        let named = Named {
            id: Some("z".into()),
            filter: Some("n > 2".into()),
            ..Default::default()
        };
        assert_eq!(
            w.hub
                .subscribe_named(1, "rooms.*".into(), Some(Box::new(named)), None, false),
            None
        );
        assert_eq!(w.take(1)[0]["code"], "subscription_limit");
        // Replacing is not a new subscription, even at the limit.
        w.sub_f(1, "rooms.*", "y", "n > 3");
        // Unsubscribe by id; by channel, only the subscription whose id is the channel.
        w.hub.unsubscribe(1, &SubRef::Channel("rooms.*".into()));
        assert_eq!(
            w.take(1),
            [json!({"type": "unsubscribed", "channel": "rooms.*"})]
        );
        assert_eq!(w.stats.subscriptions.load(Relaxed), 3);
        w.hub.unsubscribe(1, &SubRef::Id("x".into()));
        assert_eq!(w.take(1), [json!({"type": "unsubscribed", "id": "x"})]);
        w.hub.fan_out(&rec(
            "rooms.created",
            json!({"id": "r3", "room": "b", "n": 9}),
            None,
        ));
        assert_eq!(
            w.live(1),
            [change(
                "y",
                "added",
                json!({"id": "r3", "room": "b", "n": 9})
            )]
        );
        // Unregistering cleans every index.
        w.hub.unregister(1);
        assert!(w.hub.named.is_empty() && w.hub.live.is_empty());
        assert!(w.hub.exact.is_empty() && w.hub.prefix.is_empty());
        assert_eq!(w.stats.subscriptions.load(Relaxed), 0);
    }

    /// `e` as journaled at `seq`.
    fn at(mut e: Event, seq: u64) -> Event {
        e.seq = Some(seq);
        e
    }

    /// Subscribes `conn` with a collection snapshot; returns the read's subscription key.
    fn sub_snapshot(w: &mut World, conn: u64, channel: &str, named: Named) -> (u64, ListRequest) {
        let read = w
            .hub
            .subscribe_named(conn, channel.into(), Some(Box::new(named)), None, true);
        let Some(Read::List { id, named, request }) = read else {
            panic!("expected a list read, got {read:?}");
        };
        assert_eq!(id, conn);
        (named, *request)
    }

    fn page(items: &str, seq: u64) -> Result<ListPage, ListError> {
        Ok(ListPage {
            items: items.into(),
            more: true,
            seq,
        })
    }

    #[test]
    fn a_collection_snapshot_hands_over_at_its_seq() {
        let mut w = World::with_journal(Some("ep"), 5);
        w.connect(1, Who::Anon);
        w.sub(1, "rooms.*");
        let named = Named {
            id: Some("open".into()),
            filter: Some("done = false".into()),
            sort: Some("-n".into()),
            per_page: Some(10),
        };
        let (k, request) = sub_snapshot(&mut w, 1, "rooms.*", named);
        assert_eq!(
            request,
            ListRequest {
                collection: "rooms".into(),
                filter: Some("done = false".into()),
                sort: Some("-n".into()),
                per_page: Some(10),
                ctx: ctx(Who::Anon),
            }
        );
        assert_eq!(
            w.take(1),
            [json!({"type": "subscribed", "channel": "rooms.*", "id": "open"})]
        );
        let r = |id: &str| json!({"id": id, "done": false});
        // Held while the page is read: 6 and 7, which the page (as of 9) reflects.
        w.hub.fan_out(&at(rec("rooms.created", r("r1"), None), 6));
        w.hub.fan_out(&at(rec("rooms.created", r("r2"), None), 7));
        assert_eq!(w.take(1), Vec::<Value>::new());
        w.hub.listed(1, k, page(r#"[{"id":"r2"},{"id":"r1"}]"#, 9));
        let f = w.take(1);
        assert_eq!(
            f[0],
            json!({"type": "snapshot", "subscription": "open", "items": [{"id": "r2"}, {"id": "r1"}], "seq": 9, "truncated": true})
        );
        // The plain subscription of the same connection is not affected: both events.
        let rest: Vec<(&Value, &Value)> = f[1..]
            .iter()
            .map(|f| (&f["subscription"], &f["event"]["seq"]))
            .collect();
        assert_eq!(rest, [(&Value::Null, &json!(6)), (&Value::Null, &json!(7))]);
        // 8 and 9 reach the hub after the read: in the page already, not sent; 10 is.
        w.hub.fan_out(&at(rec("rooms.created", r("r3"), None), 8));
        w.hub
            .fan_out(&at(rec("rooms.updated", r("r3"), Some(r("r3"))), 9));
        w.hub.fan_out(&at(rec("rooms.created", r("r4"), None), 10));
        let f = w.take(1);
        let got: Vec<(&Value, &Value)> = f
            .iter()
            .map(|f| (&f["subscription"], &f["event"]["seq"]))
            .collect();
        assert_eq!(
            got,
            [
                (&Value::Null, &json!(8)),
                (&Value::Null, &json!(9)),
                (&Value::Null, &json!(10)),
                (&json!("open"), &json!(10)),
            ]
        );
        assert_eq!(f[3]["change"], "added");
        assert!(w.hub.conns[&1].held.is_none());
    }

    #[test]
    fn an_unfiltered_collection_snapshot_is_a_live_query_of_every_readable_record() {
        let mut w = World::with_journal(Some("ep"), 0);
        w.connect(1, Who::User("u1"));
        // Without an id its id is the channel (and the ack names it).
        let (k, request) = sub_snapshot(&mut w, 1, "notes.*", Named::default());
        assert_eq!((request.filter, request.ctx), (None, ctx(Who::User("u1"))));
        assert_eq!(
            w.take(1),
            [json!({"type": "subscribed", "channel": "notes.*", "id": "notes.*"})]
        );
        let mine = json!({"id": "n1", "user_id": "u1"});
        w.hub
            .fan_out(&at(rec("notes.created", mine.clone(), None), 1));
        w.hub.fan_out(&at(
            rec("notes.updated", mine.clone(), Some(mine.clone())),
            2,
        ));
        w.hub.listed(1, k, page("[]", 1));
        let f = w.take(1);
        assert_eq!(f[0]["type"], "snapshot");
        assert_eq!(f[0]["subscription"], "notes.*");
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            (&f[1]["change"], &f[1]["event"]["seq"]),
            (&json!("modified"), &json!(2))
        );
        // Another owner's record is not readable: nothing.
        let theirs = json!({"id": "n2", "user_id": "u2"});
        w.hub.fan_out(&at(rec("notes.created", theirs, None), 3));
        assert_eq!(w.take(1), Vec::<Value>::new());
    }

    #[test]
    fn collection_snapshots_that_cannot_be_read() {
        let named = || Named {
            id: Some("open".into()),
            filter: Some("done = false".into()),
            ..Default::default()
        };
        let created = |seq| {
            at(
                rec("rooms.created", json!({"id": "r1", "done": false}), None),
                seq,
            )
        };
        // A bad sort key: an error, the subscription stands and every held frame follows.
        let mut w = World::with_journal(Some("ep"), 0);
        w.connect(1, Who::Anon);
        let (k, _) = sub_snapshot(&mut w, 1, "rooms.*", named());
        w.take(1);
        w.hub.fan_out(&created(1));
        let bad = ListError::Invalid("Cannot sort by \"nope\"".into());
        w.hub.listed(1, k, Err(bad));
        let f = w.take(1);
        assert_eq!(
            f[0],
            json!({"type": "error", "code": "invalid_snapshot", "message": "Cannot sort by \"nope\""})
        );
        assert_eq!((f.len(), &f[1]["subscription"]), (2, &json!("open")));
        w.hub.fan_out(&created(2));
        assert_eq!(w.take(1).len(), 1);
        // Refused or failed: `snapshot_failed`.
        for err in [ListError::Refused, ListError::Failed("disk".into())] {
            let (k, _) = sub_snapshot(&mut w, 1, "rooms.*", named());
            w.take(1);
            w.hub.listed(1, k, Err(err));
            assert_eq!(w.take(1)[0]["code"], "snapshot_failed");
        }
        // Replaced before the page came: the page is not sent, the held frames are.
        let (k, _) = sub_snapshot(&mut w, 1, "rooms.*", named());
        w.take(1);
        w.hub.fan_out(&created(3));
        w.sub_f(1, "rooms.*", "open", "done = true");
        w.hub.listed(1, k, page("[]", 3));
        let f = w.take(1);
        assert_eq!((f.len(), &f[0]["event"]["seq"]), (1, &json!(3)), "{f:?}");
        assert!(w.hub.conns[&1].held.is_none());
        // With `since`, the resume wins (no snapshot).
        let since = Since {
            epoch: "ep".into(),
            seq: 0,
        };
        let read = w.hub.subscribe_named(
            1,
            "rooms.*".into(),
            Some(Box::new(named())),
            Some(Box::new(since)),
            true,
        );
        assert!(matches!(read, Some(Read::Replay { .. })), "{read:?}");
    }

    #[test]
    fn an_unfiltered_subscription_with_an_id_is_delivered_plainly() {
        let mut w = World::new();
        w.connect(1, Who::Anon);
        let named = Named {
            id: Some("feed".into()),
            filter: None,
            ..Default::default()
        };
        w.hub
            .subscribe_named(1, "rooms.*".into(), Some(Box::new(named)), None, false);
        assert_eq!(
            w.take(1),
            [json!({"type": "subscribed", "channel": "rooms.*", "id": "feed"})]
        );
        w.sub(1, "rooms.*");
        w.hub
            .fan_out(&rec("rooms.created", json!({"id": "r1"}), None));
        assert_eq!(w.events(1), ["rooms.created"], "once, plain");
        // Removing one of the two keeps the channel.
        w.hub.unsubscribe(1, &SubRef::Channel("rooms.*".into()));
        w.take(1);
        w.hub
            .fan_out(&rec("rooms.created", json!({"id": "r2"}), None));
        assert_eq!(w.events(1), ["rooms.created"]);
        w.hub.unsubscribe(1, &SubRef::Id("feed".into()));
        w.take(1);
        w.hub
            .fan_out(&rec("rooms.created", json!({"id": "r3"}), None));
        assert_eq!(w.events(1), Vec::<String>::new());
        assert!(w.hub.prefix.is_empty());
    }

    #[test]
    fn invalid_filters_are_refused_and_change_nothing() {
        // (channel, filter, message)
        let table: &[(&str, &str, &str)] = &[
            (
                "rooms.*",
                "vews > 10",
                r#"filter: unknown field "vews" at 1"#,
            ),
            (
                "rooms.*",
                "n > 'x'",
                r#"filter: cannot compare integer field "n" with string 'x' at 3"#,
            ),
            (
                "rooms.*",
                "(n = 1",
                r#"filter: expected "&&", "||" or ")", found end of filter at 7"#,
            ),
            (
                "rooms.created",
                "n = 1",
                r#"filter: filters apply to the channel "<collection>.*" of an existing collection, not "rooms.created""#,
            ),
            (
                "rooms.r1.*",
                "n = 1",
                r#"filter: filters apply to the channel "<collection>.*" of an existing collection, not "rooms.r1.*""#,
            ),
            (
                "nope.*",
                "n = 1",
                r#"filter: filters apply to the channel "<collection>.*" of an existing collection, not "nope.*""#,
            ),
            (
                "system.*",
                "n = 1",
                r#"filter: filters apply to the channel "<collection>.*" of an existing collection, not "system.*""#,
            ),
        ];
        for &(channel, filter, message) in table {
            let mut w = World::new();
            w.connect(1, Who::Anon);
            w.sub_f(1, "rooms.*", "x", "room = 'a'");
            let named = Named {
                id: Some("x".into()),
                filter: Some(filter.into()),
                ..Default::default()
            };
            assert_eq!(
                w.hub
                    .subscribe_named(1, channel.into(), Some(Box::new(named)), None, false),
                None
            );
            assert_eq!(
                w.take(1),
                [json!({"type": "error", "code": "invalid_filter", "message": message})],
                "{channel} {filter}"
            );
            // The subscription it would have replaced stands.
            w.hub.fan_out(&rec(
                "rooms.created",
                json!({"id": "r1", "room": "a"}),
                None,
            ));
            assert_eq!(w.live(1).len(), 1);
            assert_eq!(w.stats.subscriptions.load(Relaxed), 1);
        }
    }

    #[test]
    fn the_index_judges_only_subscriptions_that_can_match() {
        let mut w = World::new();
        for c in 1..=100u64 {
            w.connect(c, Who::Anon);
            w.sub_f(c, "rooms.*", "room", &format!("room = 'r{c}' && n > 0"));
        }
        w.connect(101, Who::Anon);
        w.sub_f(101, "rooms.*", "any", "n > 5");
        w.hub.fan_out(&rec(
            "rooms.created",
            json!({"id": "m1", "room": "r1", "n": 1}),
            None,
        ));
        // r1's subscription and the one without an equality; not the 99 other rooms.
        assert_eq!(w.hub.filter_evaluations, 2);
        assert_eq!(w.live(1).len(), 1);
        assert_eq!(w.live(101), []);
        // A message moved from r2 to r3: both rooms are told.
        w.hub.filter_evaluations = 0;
        w.hub.fan_out(&rec(
            "rooms.updated",
            json!({"id": "m2", "room": "r3", "n": 1}),
            Some(json!({"id": "m2", "room": "r2", "n": 1})),
        ));
        assert_eq!(w.hub.filter_evaluations, 3);
        assert_eq!(w.live(2)[0].1, "removed");
        assert_eq!(w.live(3)[0].1, "added");
        // Events of collections without filtered subscriptions cost no evaluation at all.
        w.hub.filter_evaluations = 0;
        w.hub.fan_out(&rec(
            "posts.created",
            json!({"id": "p", "room": "r1"}),
            None,
        ));
        assert_eq!(w.hub.filter_evaluations, 0);
    }

    #[test]
    fn a_filtered_resume_replays_changes_with_its_subscription_id() {
        let mut w = World::with_journal(Some("ep"), 10);
        w.connect(1, Who::User("u1"));
        let named = Named {
            id: Some("open".into()),
            filter: Some("done = false".into()),
            ..Default::default()
        };
        let since = Since {
            epoch: "ep".into(),
            seq: 6,
        };
        let read = w.hub.subscribe_named(
            1,
            "tasks.*".into(),
            Some(Box::new(named)),
            Some(Box::new(since)),
            false,
        );
        let Some(Read::Replay {
            named: Some(key), ..
        }) = read
        else {
            panic!("{read:?}");
        };
        w.take(1);
        let journaled = |seq: u64, e: Event| {
            let mut e = e;
            e.seq = Some(seq);
            Replayed {
                subject: e.subject.clone(),
                envelope: e.envelope_json().to_string(),
                previous: e.previous.as_ref().map(|p| p.to_string()),
            }
        };
        let t = |done: bool, owner: &str| json!({"id": "t1", "done": done, "user_id": owner});
        let entries = vec![
            journaled(7, rec("tasks.created", t(false, "u1"), None)),
            journaled(8, rec("tasks.updated", t(true, "u1"), Some(t(false, "u1")))),
            journaled(9, rec("tasks.updated", t(false, "u2"), Some(t(true, "u1")))),
            journaled(
                10,
                rec("tasks.deleted", t(false, "u2"), Some(t(false, "u2"))),
            ),
        ];
        // A live event meanwhile waits behind the replay.
        let mut live_e = rec(
            "tasks.created",
            json!({"id": "t2", "done": false, "user_id": "u1"}),
            None,
        );
        live_e.seq = Some(11);
        w.hub.fan_out(&live_e);
        assert_eq!(w.take(1), Vec::<Value>::new());
        w.hub
            .replayed(1, "tasks.*", Some(key), 10, Ok(Some(entries.clone())));
        let replay = std::mem::take(&mut w.sinks[&1].0.borrow_mut().replay);
        let got: Vec<(Value, Value, u64)> = replay
            .iter()
            .map(|f| {
                assert_eq!(f["subscription"], "open");
                (
                    f["change"].clone(),
                    f["event"]["payload"].clone(),
                    f["event"]["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (json!("added"), t(false, "u1"), 7),
                (json!("removed"), t(true, "u1"), 8),
                // Given away (not done again): u1 never sees it again, nor its deletion.
            ]
        );
        let f = w.take(1);
        assert_eq!(
            f[0],
            json!({"type": "resumed", "channel": "tasks.*", "subscription": "open", "recovered": true, "lastSeq": 10})
        );
        assert_eq!(
            (f[1]["subscription"].clone(), f[1]["change"].clone()),
            (json!("open"), json!("added"))
        );

        // Rows journaled before the journal kept the previous record cannot be judged:
        // recovered false (refetch).
        let mut w = World::with_journal(Some("ep"), 10);
        w.connect(1, Who::User("u1"));
        let named = Named {
            id: Some("open".into()),
            filter: Some("done = false".into()),
            ..Default::default()
        };
        let since = Since {
            epoch: "ep".into(),
            seq: 6,
        };
        let Some(Read::Replay { named: key, .. }) = w.hub.subscribe_named(
            1,
            "tasks.*".into(),
            Some(Box::new(named)),
            Some(Box::new(since)),
            false,
        ) else {
            panic!()
        };
        w.take(1);
        let mut old = entries;
        old[1].previous = None;
        w.hub.replayed(1, "tasks.*", key, 10, Ok(Some(old)));
        assert!(w.sinks[&1].0.borrow().replay.is_empty());
        assert_eq!(w.take(1)[0]["recovered"], false);

        // A subscription replaced while its replay was read gets nothing from it.
        let mut w = World::with_journal(Some("ep"), 10);
        w.connect(1, Who::User("u1"));
        let named = || {
            Some(Box::new(Named {
                id: Some("open".into()),
                filter: Some("done = false".into()),
                ..Default::default()
            }))
        };
        let since = Some(Box::new(Since {
            epoch: "ep".into(),
            seq: 6,
        }));
        let Some(Read::Replay { named: key, .. }) =
            w.hub
                .subscribe_named(1, "tasks.*".into(), named(), since, false)
        else {
            panic!()
        };
        w.hub
            .subscribe_named(1, "tasks.*".into(), named(), None, false);
        w.take(1);
        w.hub.replayed(1, "tasks.*", key, 10, Ok(Some(vec![])));
        assert_eq!(w.take(1), Vec::<Value>::new());
        assert!(w.hub.conns[&1].held.is_none());
    }

    #[test]
    fn connections_stay_small() {
        assert_eq!(std::mem::size_of::<Sub>(), 16);
    }
}
