//! The hub's state without the I/O: connections, their identities and subscriptions, the
//! channel, prefix, owner and admin indexes, live frames held during a resume or snapshot.
//! Each method takes one input (a client request, an event, an account change, a clock tick)
//! and acts through the connections' [`Sink`]s — frames to queue, sockets to close — or
//! returns the reads the driver must start (journal replays, record snapshots). The driver
//! (`hub.rs`) owns the task, the channels and the sources; tests drive this struct with fake
//! sinks (see the tests below).
//!
//! An event costs work in proportion to its recipients: exact and prefix subscriptions are
//! indexed by channel, owner-only events look up the owner's connections (plus admins) instead
//! of walking subscribers, and each frame is serialized once and shared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bakend_auth::{AuthContext, Caller, UserChange};
use bakend_core::config::RealtimeConfig;
use bakend_core::{Event, EventSource};
use serde_json::Value;
use tungstenite::Utf8Bytes;

use crate::audience::{Delivery, ReadRules};
use crate::hub::{CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, HubStats};
use crate::journal::Replayed;
use crate::outbox::{Outbox, Pushed};
use crate::protocol::{self, Since, index_key, matches_event, record_channel};

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
    /// Journal events of `channel` with `after < seq <= upto`.
    Replay {
        id: u64,
        channel: String,
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
}

struct Conn<S> {
    sink: S,
    ctx: AuthContext,
    subs: Vec<Box<str>>,
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
    frames: Vec<Utf8Bytes>,
    /// Replays and snapshots still being read.
    pending: u32,
}

impl<S> Conn<S> {
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
        for f in held.frames {
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
        }
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

    /// Subscribes, then (if asked) starts a resume from `since` or a snapshot.
    pub(crate) fn subscribe(
        &mut self,
        id: u64,
        channel: String,
        since: Option<Box<Since>>,
        snapshot: bool,
    ) -> Option<Read> {
        self.add_subscription(id, &channel);
        if let Some(since) = since {
            self.resume(id, channel, *since)
        } else if snapshot {
            self.snapshot(id, channel)
        } else {
            None
        }
    }

    /// A new identity from an `auth` message; `ack` is queued after it takes effect.
    pub(crate) fn identity(&mut self, id: u64, ctx: AuthContext, exp: Option<u64>, ack: Utf8Bytes) {
        self.unindex_identity(id);
        if let Some(c) = self.conns.get_mut(&id) {
            c.ctx = ctx;
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

    fn add_subscription(&mut self, id: u64, channel: &str) {
        let max = self.cfg.max_subscriptions;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.subs.iter().any(|s| **s == *channel) {
            if c.subs.len() >= max {
                let msg = format!("Maximum {max} subscriptions per connection");
                push(
                    c,
                    protocol::error_frame("subscription_limit", &msg),
                    &self.stats,
                    &mut self.dirty,
                );
                return;
            }
            c.subs.push(Box::from(channel));
            index_add(&mut self.exact, &mut self.prefix, channel, id);
            self.stats.subscriptions.fetch_add(1, Relaxed);
        }
        push(
            c,
            protocol::subscribed_frame(channel),
            &self.stats,
            &mut self.dirty,
        );
    }

    /// Starts replaying what `channel` missed since `since`: live frames for the connection
    /// are held from now on, the journal is read up to the last seq fanned out, and
    /// [`HubState::replayed`] sends the replay, `resumed`, then the held frames.
    fn resume(&mut self, id: u64, channel: String, since: Since) -> Option<Read> {
        let upto = self.journal_seq;
        let c = self.conns.get_mut(&id)?;
        if !c.subs.iter().any(|s| **s == *channel) {
            return None; // refused (subscription limit): nothing to resume
        }
        let replayable = self.epoch.as_deref() == Some(since.epoch.as_str()) && since.seq <= upto;
        if !replayable {
            push(
                c,
                protocol::resumed_frame(&channel, false, upto),
                &self.stats,
                &mut self.dirty,
            );
            return None;
        }
        c.hold();
        Some(Read::Replay {
            id,
            channel,
            after: since.seq,
            upto,
        })
    }

    /// Asks for the record of a per-record channel; live frames are held until the snapshot
    /// is sent, so it always comes first.
    fn snapshot(&mut self, id: u64, channel: String) -> Option<Read> {
        let c = self.conns.get_mut(&id)?;
        if !c.subs.iter().any(|s| **s == *channel) {
            return None;
        }
        let target = protocol::parse_record_channel(&channel)
            .filter(|_| self.snapshots)
            .map(|(collection, record_id)| (collection.to_string(), record_id.to_string()));
        let Some((collection, record_id)) = target else {
            push(
                c,
                protocol::error_frame(
                    "invalid_snapshot",
                    "snapshot is only available on per-record channels (collection.recordId.*)",
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
                let visible = record.filter(|r| {
                    crate::audience::can_read_record(self.rules.as_ref(), collection, r, &c.ctx)
                });
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

    /// The journal's answer to a resume (`Ok(None)`: not replayable): the frames this
    /// connection may read, `resumed`, then the held live frames.
    pub(crate) fn replayed(
        &mut self,
        id: u64,
        channel: &str,
        upto: u64,
        result: Result<Option<Vec<Replayed>>, String>,
    ) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let recovered = match result {
            Ok(Some(entries)) => {
                let mut frames = Vec::with_capacity(entries.len());
                for r in entries {
                    let Ok(e) = Event::from_journal(&r.envelope, r.subject) else {
                        continue;
                    };
                    let d = Delivery::of(&e, self.rules.as_ref());
                    if let Some(f) = d.frame_for(&c.ctx) {
                        frames.push(f.clone());
                    }
                }
                self.stats
                    .frames_out
                    .fetch_add(frames.len() as u64, Relaxed);
                c.sink.push_replay(frames);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!("Reading the event journal for a resume failed: {e}");
                false
            }
        };
        push(
            c,
            protocol::resumed_frame(channel, recovered, upto),
            &self.stats,
            &mut self.dirty,
        );
        release_held(c, &self.stats, &mut self.dirty);
    }

    pub(crate) fn unsubscribe(&mut self, id: u64, channel: &str) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(pos) = c.subs.iter().position(|s| **s == *channel) {
            c.subs.swap_remove(pos);
            index_remove(&mut self.exact, &mut self.prefix, channel, id);
            self.stats.subscriptions.fetch_sub(1, Relaxed);
        }
        push(
            c,
            protocol::unsubscribed_frame(channel),
            &self.stats,
            &mut self.dirty,
        );
    }

    pub(crate) fn unregister(&mut self, id: u64) {
        self.unindex_identity(id);
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        for s in &c.subs {
            index_remove(&mut self.exact, &mut self.prefix, s, id);
        }
        self.stats
            .subscriptions
            .fetch_sub(c.subs.len() as u64, Relaxed);
        self.stats.connections.fetch_sub(1, Relaxed);
    }

    /// Queues `e` for every connection that subscribed to it and may read it, once each.
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
            stats,
            dirty,
            ..
        } = self;
        let mut deliver = |id: u64, check_subs: bool| {
            let Some(c) = conns.get_mut(&id) else { return };
            if c.last_seq == seq || c.closing {
                return;
            }
            if check_subs && !c.subs.iter().any(|s| matches_event(s, t, rc)) {
                return;
            }
            c.last_seq = seq;
            if let Some(frame) = d.frame_for(&c.ctx) {
                match c.held.as_mut() {
                    // Too far behind while resuming: like any slow consumer it is closed,
                    // and resumes again from its last seq.
                    Some(held) if held.frames.len() >= hold_limit => slow_consumer(c, stats),
                    Some(held) => held.frames.push(frame.clone()),
                    None => push(c, frame.clone(), stats, dirty),
                }
            }
        };
        if let Some(owner) = d.sole_owner() {
            // Only the owner's connections and admins can receive it: look them up directly.
            if let Some(ids) = owner.and_then(|o| by_user.get(o)) {
                for &id in ids {
                    deliver(id, true);
                }
            }
            for &id in admins.iter() {
                deliver(id, true);
            }
            return;
        }
        if let Some(ids) = exact.get(t) {
            for &id in ids {
                deliver(id, false);
            }
        }
        for (i, b) in t.bytes().enumerate() {
            if b == b'.'
                && let Some(ids) = prefix.get(&t[..=i])
            {
                for &id in ids {
                    deliver(id, false);
                }
            }
        }
        if let Some(rc) = rc {
            // `posts.rec_1.updated` and `posts.rec_1.*`.
            if let Some(ids) = exact.get(rc) {
                for &id in ids {
                    deliver(id, false);
                }
            }
            if let Some((record_prefix, _)) = rc.rsplit_once('.')
                && let Some(ids) = prefix.get(&rc[..=record_prefix.len()])
            {
                for &id in ids {
                    deliver(id, false);
                }
            }
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
                        c.ctx = AuthContext::User(Arc::new(Caller {
                            role: *role,
                            ..u.clone()
                        }));
                    }
                }
                UserChange::Deleted { .. } | UserChange::SessionsRevoked { .. } => {
                    c.ctx = AuthContext::Anonymous;
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
                c.ctx = AuthContext::Anonymous;
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
                _ => return None,
            };
            Some((rule.into(), owned))
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
        w.hub.unsubscribe(1, "posts.*");
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
        w.hub.unsubscribe(1, "posts.*");
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
        };
        w.hub.replayed(1, "posts.*", 10, Ok(Some(vec![entry])));
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
        w.hub.replayed(1, "posts.*", 10, Ok(None));
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
        // Only per-record channels have snapshots.
        let mut w = World::new();
        w.connect(1, Who::Anon);
        assert_eq!(w.hub.subscribe(1, "posts.*".into(), None, true), None);
        assert_eq!(w.take(1)[1]["code"], "invalid_snapshot");
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
}
