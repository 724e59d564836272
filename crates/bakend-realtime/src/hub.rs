use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bakend_auth::tokens::now_secs;
use bakend_auth::{AuthContext, AuthService, UserChange};
use bakend_core::config::RealtimeConfig;
use bakend_events::{EventBus, EventStream};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tungstenite::Utf8Bytes;

use crate::audience::ReadRules;
use crate::delivery::Watermark;
use crate::hub_state::{HubState, Read};
use crate::journal::{JournalSource, ListError, ListPage, Replayed, SnapshotSource};
use crate::live::Named;
use crate::outbox::Outbox;
use crate::protocol::{Since, SubRef, matches_event, record_channel};

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

pub(crate) struct ListRead {
    id: u64,
    named: u64,
    result: Result<ListPage, ListError>,
}

pub(crate) struct ReplayRead {
    id: u64,
    channel: String,
    named: Option<u64>,
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
        /// The subscription's own id and filter, when it has either (boxed: rare).
        named: Option<Box<Named>>,
        since: Option<Box<Since>>,
        snapshot: bool,
    },
    /// A per-record snapshot was read: send it, then release the held live frames. (Boxed,
    /// like `Replayed`: rare, and the size of every queued control message is its largest
    /// variant's.)
    Snapshot(Box<SnapshotRead>),
    /// A collection snapshot was read: send it, then release the held live frames.
    Listed(Box<ListRead>),
    /// The journal's answer to a resume: replay it, then release the held live frames.
    Replayed(Box<ReplayRead>),
    Unsubscribe {
        id: u64,
        target: SubRef,
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

/// The hub task's state: the I/O-free core and the sources its reads go to.
struct Driver {
    state: HubState<Arc<Outbox>>,
    journal: Option<Arc<dyn JournalSource>>,
    snapshots: Option<Arc<dyn SnapshotSource>>,
    max_replay_events: usize,
    /// For reads to report back (weak: the hub must still stop when the `Hub` goes).
    control: mpsc::WeakSender<Control>,
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
        let state = HubState::new(
            cfg.clone(),
            rules,
            stats.clone(),
            epoch.clone(),
            journal.as_ref().map(|j| j.last_seq()).unwrap_or(0),
            snapshots.is_some(),
            Instant::now(),
        );
        let driver = Driver {
            state,
            journal,
            snapshots,
            max_replay_events: cfg.max_replay_events,
            control: control_tx.downgrade(),
        };
        tokio::spawn(run(
            driver,
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

async fn run(
    mut hub: Driver,
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
                Some(c) => hub.control(c),
                None => break,
            },
            e = events.recv() => match e {
                Some(e) => {
                    hub.state.fan_out(&e);
                    // Drain what else is queued before yielding, so writers wake once per batch.
                    for _ in 0..255 {
                        match events.try_recv() {
                            Some(e) => hub.state.fan_out(&e),
                            None => break,
                        }
                    }
                }
                None => break,
            },
            change = recv_change(&mut changes) => match change {
                Ok(c) => hub.state.user_change(c),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!("Realtime missed {n} account change(s); open connections may hold stale roles");
                }
                Err(broadcast::error::RecvError::Closed) => changes = None,
            },
            _ = tick.tick() => hub.state.tick(now_secs(), Instant::now()),
        }
        // Between chunks other tasks get the core (API requests, connection tasks), so one
        // large fan-out does not hold up everything else on a single worker; requests that
        // came in meanwhile (subscribe, auth, …) are handled at once, and as their replies go
        // to the end of the list, which is written first, they do not wait for the rest.
        while hub.state.flush_some() {
            tokio::task::yield_now().await;
            while let Ok(c) = control.try_recv() {
                hub.control(c);
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

impl Driver {
    fn control(&mut self, c: Control) {
        let state = &mut self.state;
        match c {
            Control::Register {
                id,
                outbox,
                ctx,
                exp,
            } => state.register(id, outbox, ctx, exp),
            Control::Subscribe {
                id,
                channel,
                named,
                since,
                snapshot,
            } => {
                if let Some(read) = state.subscribe_named(id, channel, named, since, snapshot) {
                    self.start(read);
                }
            }
            Control::Snapshot(r) => {
                let SnapshotRead {
                    id,
                    channel,
                    collection,
                    result,
                } = *r;
                state.snapshotted(id, &channel, &collection, result)
            }
            Control::Listed(r) => {
                let ListRead { id, named, result } = *r;
                state.listed(id, named, result)
            }
            Control::Replayed(r) => {
                let ReplayRead {
                    id,
                    channel,
                    named,
                    upto,
                    result,
                } = *r;
                state.replayed(id, &channel, named, upto, result)
            }
            Control::Unsubscribe { id, target } => state.unsubscribe(id, &target),
            Control::Identity { id, ctx, exp, ack } => state.identity(id, ctx, exp, ack),
            Control::Unregister { id } => state.unregister(id),
            Control::Shutdown { done } => {
                state.close_all();
                let _ = done.send(());
                // Keep serving unregisters until the connections are gone.
            }
        }
    }

    /// Starts a replay or snapshot read; its answer comes back as a control message. (The
    /// state only asks for reads its sources can serve.)
    fn start(&self, read: Read) {
        let Some(control) = self.control.upgrade() else {
            return;
        };
        match read {
            Read::Replay {
                id,
                channel,
                named,
                after,
                upto,
            } => {
                let Some(journal) = self.journal.clone() else {
                    return;
                };
                let wanted_channel = channel.clone();
                let wanted: crate::journal::EventFilter = Box::new(move |t, record| {
                    let rc = record.and_then(|r| record_channel(t, r));
                    matches_event(&wanted_channel, t, rc.as_deref())
                });
                let read = journal.replay(after, upto, self.max_replay_events, wanted);
                tokio::spawn(async move {
                    let result = read.await;
                    let read = ReplayRead {
                        id,
                        channel,
                        named,
                        upto,
                        result,
                    };
                    let _ = control.send(Control::Replayed(Box::new(read))).await;
                });
            }
            Read::Snapshot {
                id,
                channel,
                collection,
                record_id,
            } => {
                let Some(source) = self.snapshots.clone() else {
                    return;
                };
                let read = source.snapshot(&collection, &record_id);
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
            Read::List { id, named, request } => {
                let Some(source) = self.snapshots.clone() else {
                    return;
                };
                let read = source.list(*request);
                tokio::spawn(async move {
                    let result = read.await;
                    let read = ListRead { id, named, result };
                    let _ = control.send(Control::Listed(Box::new(read))).await;
                });
            }
        }
    }
}
