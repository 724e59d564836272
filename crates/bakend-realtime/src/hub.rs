//! The hub: one task that owns every connection's identity and subscriptions and fans events
//! out. Owning the state in one task means no lock on the hot path: subscribe, unsubscribe and
//! identity changes arrive as messages, in order, between events — so a `subscribed` ack is
//! always queued before the first event it enables, and churn never blocks a fan-out midway.
//!
//! An event costs work in proportion to its recipients: exact and prefix subscriptions are
//! indexed by channel, owner-only events look up the owner's connections (plus admins) instead
//! of walking subscribers, and each frame is serialized once and shared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bakend_auth::tokens::now_secs;
use bakend_auth::{AuthContext, AuthService, Caller, UserChange};
use bakend_core::SharedEvent;
use bakend_core::config::RealtimeConfig;
use bakend_events::{EventBus, EventStream};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tungstenite::Utf8Bytes;

use crate::delivery::Watermark;
use crate::outbox::{Outbox, Pushed};

use crate::audience::{Delivery, ReadRules};
use crate::journal::{JournalSource, Replayed, SnapshotSource};
use crate::protocol::{self, Since, index_key, matches_event, record_channel};

/// Close codes the hub uses (documented in docs/websocket-api.md).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Counters readable while the hub runs (`GET /api/admin/realtime`).
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub subscriptions: AtomicU64,
    pub events_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub events_in_per_sec: AtomicU64,
    pub frames_out_per_sec: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub token_expired_closes: AtomicU64,
    /// Deepest any connection's outbound queue has been.
    pub queue_high_water: AtomicU64,
    /// Writes answered without waiting any longer for their events to reach the sockets
    /// (the hub was more than `DELIVERY_WAIT` behind).
    pub delivery_wait_timeouts: AtomicU64,
}

/// Longest a write's answer waits for its event to be handed to the sockets: a stuck or
/// lagging hub must not hang requests.
const DELIVERY_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct SnapshotRead {
    id: u64,
    channel: String,
    collection: String,
    result: Result<(Option<Value>, u64), String>,
}

pub(crate) struct ReplayRead {
    id: u64,
    channel: String,
    upto: u64,
    result: Result<Option<Vec<Replayed>>, String>,
}

pub(crate) enum Control {
    Register {
        id: u64,
        outbox: Arc<Outbox>,
        ctx: AuthContext,
        exp: Option<u64>,
    },
    Subscribe {
        id: u64,
        channel: String,
        since: Option<Box<Since>>,
        snapshot: bool,
    },
    /// A per-record snapshot was read: send it, then release the held live frames. (Boxed,
    /// like `Replayed`: rare, and the size of every queued control message is its largest
    /// variant's.)
    Snapshot(Box<SnapshotRead>),
    /// The journal's answer to a resume: replay it, then release the held live frames.
    Replayed(Box<ReplayRead>),
    Unsubscribe {
        id: u64,
        channel: String,
    },
    /// A new identity from an `auth` message; `ack` is queued after it takes effect.
    Identity {
        id: u64,
        ctx: AuthContext,
        exp: Option<u64>,
        ack: Utf8Bytes,
    },
    Unregister {
        id: u64,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Where the hub reads what is not on the bus: the journal (resumes) and records (snapshots).
#[derive(Default)]
pub struct HubSources {
    pub journal: Option<Arc<dyn JournalSource>>,
    pub snapshots: Option<Arc<dyn SnapshotSource>>,
}

pub struct Hub {
    control: mpsc::Sender<Control>,
    epoch: Option<String>,
    pub(crate) stats: Arc<HubStats>,
    pub(crate) cfg: RealtimeConfig,
    pub(crate) auth: Arc<AuthService>,
    /// One runtime worker: connections write their own frames inline (see `outbox`).
    pub(crate) inline_writes: bool,
    next_id: AtomicU64,
    delivered: Arc<Watermark>,
}

struct Conn {
    outbox: Arc<Outbox>,
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

impl Conn {
    /// Starts (or joins) holding live frames until a replay or snapshot is sent.
    fn hold(&mut self) {
        self.held.get_or_insert_with(Box::default).pending += 1;
    }
}

impl Conn {
    fn user_id(&self) -> Option<&str> {
        self.ctx.user().map(|u| u.id.as_str())
    }
}

struct State {
    cfg: RealtimeConfig,
    rules: Arc<dyn ReadRules>,
    stats: Arc<HubStats>,
    conns: HashMap<u64, Conn>,
    exact: HashMap<Box<str>, HashSet<u64>>,
    prefix: HashMap<Box<str>, HashSet<u64>>,
    by_user: HashMap<String, HashSet<u64>>,
    admins: HashSet<u64>,
    seq: u64,
    journal: Option<Arc<dyn JournalSource>>,
    snapshots: Option<Arc<dyn SnapshotSource>>,
    /// The last journal seq the hub has fanned out: a resume replays up to here and live
    /// delivery continues after it.
    journal_seq: u64,
    /// For replay tasks to report back (weak: the hub must still stop when the `Hub` goes).
    control: mpsc::WeakSender<Control>,
    last_heartbeat: Instant,
    last_events_in: u64,
    last_frames_out: u64,
    /// Sockets with frames the hub queued and will write itself (single-worker runtime) once
    /// it has handled everything at hand.
    dirty: Vec<Arc<Outbox>>,
}

impl Hub {
    /// Starts the hub task, consuming `bus` and the account changes of `auth`.
    pub fn start(
        bus: &dyn EventBus,
        auth: Arc<AuthService>,
        rules: Arc<dyn ReadRules>,
        cfg: RealtimeConfig,
        sources: HubSources,
    ) -> Arc<Hub> {
        let HubSources { journal, snapshots } = sources;
        let events = bus.subscribe("realtime", 65_536);
        let (control_tx, control_rx) = mpsc::channel(65_536);
        let epoch = journal.as_ref().map(|j| j.epoch().to_string());
        let stats = Arc::new(HubStats::default());
        let delivered = Arc::new(Watermark::default());
        let state = State {
            cfg: cfg.clone(),
            rules,
            stats: stats.clone(),
            conns: HashMap::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            by_user: HashMap::new(),
            admins: HashSet::new(),
            seq: 0,
            journal_seq: journal.as_ref().map(|j| j.last_seq()).unwrap_or(0),
            journal,
            snapshots,
            control: control_tx.downgrade(),
            last_heartbeat: Instant::now(),
            last_events_in: 0,
            last_frames_out: 0,
            dirty: Vec::new(),
        };
        tokio::spawn(run(
            state,
            events,
            control_rx,
            auth.subscribe_changes(),
            delivered.clone(),
        ));
        Arc::new(Hub {
            control: control_tx,
            epoch,
            stats,
            cfg,
            auth,
            inline_writes: tokio::runtime::Handle::current().metrics().num_workers() == 1,
            next_id: AtomicU64::new(1),
            delivered,
        })
    }

    /// Waits until every event up to bus position `position` (`EventBus::emitted()` after a
    /// write) has been handed to the sockets on this node: queued, in order, in each
    /// recipient's outbox and written to each socket with room. A REST write awaits this
    /// before it is answered. Free when nobody is subscribed; bounded by `DELIVERY_WAIT`
    /// (then counted and logged, and the answer goes out anyway).
    pub async fn delivered(&self, position: u64) {
        if self.stats.subscriptions.load(Relaxed) == 0 || self.delivered.reached() >= position {
            return;
        }
        if tokio::time::timeout(DELIVERY_WAIT, self.delivered.wait(position))
            .await
            .is_err()
        {
            let n = self.stats.delivery_wait_timeouts.fetch_add(1, Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    "Realtime is more than {} s behind: answered a write before its event reached the sockets ({n} time(s) so far)",
                    DELIVERY_WAIT.as_secs()
                );
            }
        }
    }

    /// The event journal's epoch, when the journal is on.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    pub(crate) async fn send(&self, c: Control) {
        // Fails only when the hub has stopped (shutdown), when there is nothing left to tell.
        let _ = self.control.send(c).await;
    }

    /// Closes every connection with 1001 "going away" and waits (bounded) for them to go.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Shutdown { done }).await.is_ok() {
            let _ = wait.await;
        }
        for _ in 0..100 {
            if self.stats.connections.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        json!({
            "connections": s.connections.load(Relaxed),
            "subscriptions": s.subscriptions.load(Relaxed),
            "eventsIn": s.events_in.load(Relaxed),
            "framesOut": s.frames_out.load(Relaxed),
            "eventsInPerSecond": s.events_in_per_sec.load(Relaxed),
            "framesOutPerSecond": s.frames_out_per_sec.load(Relaxed),
            "slowConsumerCloses": s.slow_consumer_closes.load(Relaxed),
            "tokenExpiredCloses": s.token_expired_closes.load(Relaxed),
            "queueHighWater": s.queue_high_water.load(Relaxed),
            "deliveryWaitTimeouts": s.delivery_wait_timeouts.load(Relaxed),
            "queueCapacity": self.cfg.queue_capacity,
        })
    }
}

/// Sockets the hub writes before letting other tasks run.
const FLUSH_CHUNK: usize = 64;

async fn run(
    mut state: State,
    mut events: EventStream,
    mut control: mpsc::Receiver<Control>,
    changes: broadcast::Receiver<UserChange>,
    delivered: Arc<Watermark>,
) {
    let mut changes = Some(changes);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(c) => state.control(c),
                None => break,
            },
            e = events.recv() => match e {
                Some(e) => {
                    state.fan_out(&e);
                    // Drain what else is queued before yielding, so writers wake once per batch.
                    for _ in 0..255 {
                        match events.try_recv() {
                            Some(e) => state.fan_out(&e),
                            None => break,
                        }
                    }
                }
                None => break,
            },
            change = recv_change(&mut changes) => match change {
                Ok(c) => state.user_change(c),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!("Realtime missed {n} account change(s); open connections may hold stale roles");
                }
                Err(broadcast::error::RecvError::Closed) => changes = None,
            },
            _ = tick.tick() => state.tick(),
        }
        // Between chunks other tasks get the core (API requests, connection tasks), so one
        // large fan-out does not hold up everything else on a single worker; requests that
        // came in meanwhile (subscribe, auth, …) are handled at once, and as their replies go
        // to the end of the list, which is written first, they do not wait for the rest.
        while state.flush_some() {
            tokio::task::yield_now().await;
            while let Ok(c) = control.try_recv() {
                state.control(c);
            }
        }
        // Every event received so far is queued and its idle sockets are written.
        delivered.advance(events.position());
    }
}

async fn recv_change(
    rx: &mut Option<broadcast::Receiver<UserChange>>,
) -> Result<UserChange, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

type ChannelIndex = HashMap<Box<str>, HashSet<u64>>;

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

/// Queues a frame; a full queue means the client is not keeping up, and it is closed.
/// Queues `frame` for `c`; a socket the hub is to write itself is listed in `dirty`, to be
/// flushed when the hub has handled everything at hand.
fn push(c: &mut Conn, frame: Utf8Bytes, stats: &HubStats, dirty: &mut Vec<Arc<Outbox>>) {
    if c.closing {
        return;
    }
    let (pushed, flush) = c.outbox.push_deferred(frame);
    if flush {
        dirty.push(c.outbox.clone());
    }
    match pushed {
        Pushed::Queued(depth) => {
            stats.frames_out.fetch_add(1, Relaxed);
            let depth = depth as u64;
            if depth > stats.queue_high_water.load(Relaxed) {
                stats.queue_high_water.fetch_max(depth, Relaxed);
            }
        }
        Pushed::Full => {
            c.closing = true;
            stats.slow_consumer_closes.fetch_add(1, Relaxed);
            c.outbox.close(CLOSE_SLOW_CONSUMER, "slow_consumer");
        }
        Pushed::Closing => c.closing = true,
    }
}

/// One replay or snapshot finished; after the last one, the held live frames follow.
fn release_held(c: &mut Conn, stats: &HubStats, dirty: &mut Vec<Arc<Outbox>>) {
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

impl State {
    /// Writes up to `FLUSH_CHUNK` of the sockets this round queued frames for (one `writev`
    /// each, carrying every frame the round gave it); `true` while more are left.
    fn flush_some(&mut self) -> bool {
        let from = self.dirty.len().saturating_sub(FLUSH_CHUNK);
        for outbox in self.dirty.drain(from..) {
            outbox.flush();
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

    fn control(&mut self, c: Control) {
        match c {
            Control::Shutdown { done } => {
                self.close_all();
                let _ = done.send(());
                // Keep serving unregisters until the connections are gone.
            }
            c => self.apply(c),
        }
    }

    fn apply(&mut self, c: Control) {
        match c {
            Control::Register {
                id,
                outbox,
                ctx,
                exp,
            } => {
                let conn = Conn {
                    outbox,
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
            Control::Subscribe {
                id,
                channel,
                since,
                snapshot,
            } => {
                self.subscribe(id, &channel);
                if let Some(since) = since {
                    self.resume(id, channel, *since);
                } else if snapshot {
                    self.snapshot(id, channel);
                }
            }
            Control::Snapshot(r) => {
                let SnapshotRead {
                    id,
                    channel,
                    collection,
                    result,
                } = *r;
                self.snapshotted(id, &channel, &collection, result)
            }
            Control::Replayed(r) => {
                let ReplayRead {
                    id,
                    channel,
                    upto,
                    result,
                } = *r;
                self.replayed(id, &channel, upto, result)
            }
            Control::Unsubscribe { id, channel } => self.unsubscribe(id, &channel),
            Control::Identity { id, ctx, exp, ack } => {
                self.unindex_identity(id);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.ctx = ctx;
                    c.exp = exp;
                    c.grace_until = None;
                    push(c, ack, &self.stats, &mut self.dirty);
                }
                self.index_identity(id);
            }
            Control::Unregister { id } => self.unregister(id),
            Control::Shutdown { .. } => {}
        }
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

    fn subscribe(&mut self, id: u64, channel: &str) {
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
    /// [`State::replayed`] sends the replay, `resumed`, then the held frames.
    fn resume(&mut self, id: u64, channel: String, since: Since) {
        let upto = self.journal_seq;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.subs.iter().any(|s| **s == *channel) {
            return; // refused (subscription limit): nothing to resume
        }
        let journal = match &self.journal {
            Some(j) if j.epoch() == since.epoch && since.seq <= upto => j.clone(),
            _ => {
                push(
                    c,
                    protocol::resumed_frame(&channel, false, upto),
                    &self.stats,
                    &mut self.dirty,
                );
                return;
            }
        };
        let Some(control) = self.control.upgrade() else {
            return;
        };
        c.hold();
        let wanted_channel = channel.clone();
        let wanted: crate::journal::EventFilter = Box::new(move |t, record| {
            let rc = record.and_then(|r| record_channel(t, r));
            matches_event(&wanted_channel, t, rc.as_deref())
        });
        let read = journal.replay(since.seq, upto, self.cfg.max_replay_events, wanted);
        tokio::spawn(async move {
            let result = read.await;
            let read = ReplayRead {
                id,
                channel,
                upto,
                result,
            };
            let _ = control.send(Control::Replayed(Box::new(read))).await;
        });
    }

    /// Reads the record of a per-record channel; live frames are held until the snapshot is
    /// sent, so it always comes first. It carries the journal position it reflects: events
    /// with `seq` at or below it are already in it.
    fn snapshot(&mut self, id: u64, channel: String) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.subs.iter().any(|s| **s == *channel) {
            return;
        }
        let (Some((collection, record_id)), Some(source), Some(control)) = (
            protocol::parse_record_channel(&channel),
            self.snapshots.clone(),
            self.control.upgrade(),
        ) else {
            push(
                c,
                protocol::error_frame(
                    "invalid_snapshot",
                    "snapshot is only available on per-record channels (collection.recordId.*)",
                ),
                &self.stats,
                &mut self.dirty,
            );
            return;
        };
        let (collection, read) = (
            collection.to_string(),
            source.snapshot(collection, record_id),
        );
        c.hold();
        tokio::spawn(async move {
            let result = read.await;
            let read = SnapshotRead {
                id,
                channel,
                collection,
                result,
            };
            let _ = control.send(Control::Snapshot(Box::new(read))).await;
        });
    }

    fn snapshotted(
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
                let seq = self.journal.as_ref().map(|_| seq);
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

    fn replayed(
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
                    let Ok(e) = bakend_core::Event::from_journal(&r.envelope, r.subject) else {
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
                c.outbox.push_replay(frames);
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

    fn unsubscribe(&mut self, id: u64, channel: &str) {
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

    fn unregister(&mut self, id: u64) {
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

    fn fan_out(&mut self, e: &SharedEvent) {
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
        let per_record = (e.source == bakend_core::EventSource::Collections)
            .then(|| e.payload.get("id").and_then(Value::as_str))
            .flatten()
            .and_then(|id| record_channel(t, id));
        let rc = per_record.as_deref();
        let hold_limit = self.cfg.queue_capacity.saturating_mul(4);
        let State {
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
                    Some(held) if held.frames.len() >= hold_limit => {
                        // Too far behind while resuming: like any slow consumer it is closed,
                        // and resumes again from its last seq.
                        c.closing = true;
                        stats.slow_consumer_closes.fetch_add(1, Relaxed);
                        c.outbox.close(CLOSE_SLOW_CONSUMER, "slow_consumer");
                    }
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

    fn user_change(&mut self, change: UserChange) {
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

    fn tick(&mut self) {
        let now = now_secs();
        let instant = Instant::now();
        if instant.duration_since(self.last_heartbeat) >= self.cfg.heartbeat {
            self.last_heartbeat = instant;
            for c in self.conns.values() {
                c.outbox.request_heartbeat();
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
                c.outbox.close(CLOSE_TOKEN_EXPIRED, "token_expired");
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

    fn close_all(&mut self) {
        for c in self.conns.values_mut() {
            c.closing = true;
            c.outbox.close(CLOSE_GOING_AWAY, "going away");
        }
    }
}
