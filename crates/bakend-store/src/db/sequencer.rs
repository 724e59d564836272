//! Several servers on one PostgreSQL database: every server's realtime clients see every
//! journaled event, once, in seq (= commit) order — those this server committed and those the
//! others did.
//!
//! The [`Sequencer`] stands between this server's writer and its event bus. Events without a
//! seq (function and job lifecycle) pass straight through. Journaled events leave it strictly
//! in seq order: one that arrives early (this server's seq 12 while 11, another server's, has
//! not been read yet) is held until the ones before it are out. The other servers' events come
//! from the [`Follower`], a thread that reads the journal after the last seq out — woken by a
//! `NOTIFY` each commit sends, at once when an early event leaves a gap, and every
//! [`POLL`] regardless — and hands them in marked `remote` (sockets get them; functions run
//! only on the server that committed them).
//!
//! Seqs are contiguous in commit order (the journal lock, see `writer::JournalLock`), so a gap
//! is always filled by reading the journal: the missing rows committed before the one that
//! revealed the gap. The writer reserves its group's seqs before committing, so the follower,
//! which sees them as soon as they commit, leaves them to the writer (whose events carry what
//! the journal does not keep: the actor, the depth of a function's write).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bakend_core::config::PostgresSettings;
use bakend_core::{Event, SharedEvent, sync};
use bakend_events::{ConsumerInfo, EventBus, EventStream};

use super::carrier::{self, Carrier};
use super::journal;
use crate::sql::{Conn, PgConn};

/// The follower reads the journal at least this often.
pub const POLL: Duration = Duration::from_millis(100);
/// Journal rows read per query.
const BATCH: usize = 1000;
/// The channel commits notify (one per schema).
pub fn channel(schema: &str) -> String {
    format!(
        "bakend_journal_{:x}",
        super::migrations::advisory_key_for(schema, "journal") as u64
    )
}

/// The channel of messages between servers that are not events (one per schema).
pub fn peers_channel(schema: &str) -> String {
    format!(
        "bakend_peers_{:x}",
        super::migrations::advisory_key_for(schema, "peers") as u64
    )
}

/// What a server hands a message from another server to ([`Sequencer::on_peer_message`]).
pub type PeerHandler = Box<dyn Fn(&str) + Send + Sync>;

/// Where a write tells the other servers something (see [`Sequencer::peers`]).
#[derive(Clone, Debug)]
pub struct Peers {
    channel: String,
    from: String,
}

impl Peers {
    /// Sends `message` to the other servers when the caller's transaction commits
    /// (`NOTIFY`; at most 7,900 bytes).
    pub fn tell(&self, conn: &Conn, message: &str) -> crate::sql::Result<()> {
        let payload = format!("{}\n{message}", self.from);
        conn.query_row(
            "SELECT pg_notify(?1, ?2)",
            (&self.channel, &payload),
            |_| Ok(()),
        )
    }
}

#[derive(Default)]
struct State {
    /// The next seq to hand to the bus.
    next: u64,
    /// Events that came before their turn.
    /// (`None`: a journal row that could not be read, passed over.)
    held: BTreeMap<u64, Option<Event>>,
    /// Seqs this server's writer assigned and has not emitted yet.
    reserved: BTreeSet<u64>,
    /// Whether the follower should read now (a gap, or stopping).
    wake: bool,
    stopping: bool,
}

pub struct Sequencer {
    bus: Arc<dyn EventBus>,
    state: Mutex<State>,
    changed: Condvar,
    /// What this server's commits notify ([`channel`]).
    pub channel: String,
    /// The payload of this server's notifications, which its own follower ignores.
    pub id: String,
    peers: Peers,
    on_peer: Mutex<Option<PeerHandler>>,
    /// What carries this server's events to the others, when there is one (a cluster's NATS).
    carrier: OnceLock<Arc<dyn Carrier>>,
    counts: CarrierCounts,
}

/// What came in over the carrier and what had to be read from the journal instead.
#[derive(Default)]
pub struct CarrierCounts {
    /// Commit groups published.
    pub published: AtomicU64,
    /// Other servers' events received over the carrier and handed on.
    pub received: AtomicU64,
    /// Other servers' events read from the journal while a carrier is attached: ones its
    /// messages had not brought (lost, late, or the broker was down).
    pub filled_from_journal: AtomicU64,
    /// Carrier messages that could not be read (their events came from the journal).
    pub unreadable: AtomicU64,
}

impl Sequencer {
    /// Starts after `last_seq` (the journal's last seq when the database opened). `node_id`
    /// names this server (`cluster.nodeId`); one is generated when absent.
    pub fn new(
        bus: Arc<dyn EventBus>,
        last_seq: u64,
        schema: &str,
        node_id: Option<&str>,
    ) -> Arc<Sequencer> {
        let id = match node_id {
            Some(id) => id.to_string(),
            None => bakend_core::ids::new_id("node_"),
        };
        Arc::new(Sequencer {
            bus,
            carrier: OnceLock::new(),
            counts: CarrierCounts::default(),
            channel: channel(schema),
            id: id.clone(),
            peers: Peers {
                channel: peers_channel(schema),
                from: id,
            },
            on_peer: Mutex::new(None),
            state: Mutex::new(State {
                next: last_seq + 1,
                ..State::default()
            }),
            changed: Condvar::new(),
        })
    }

    /// Sends this server's commits to the others through `carrier` from now on (once).
    pub fn attach(&self, carrier: Arc<dyn Carrier>) {
        let _ = self.carrier.set(carrier);
    }

    pub(crate) fn carrier(&self) -> Option<&dyn Carrier> {
        self.carrier.get().map(|c| c.as_ref())
    }

    pub fn counts(&self) -> &CarrierCounts {
        &self.counts
    }

    /// After a commit: the group's journaled events to the other servers, if a carrier is
    /// attached.
    pub(crate) fn publish<'a>(&self, events: impl Iterator<Item = &'a Event>) {
        if let Some(c) = self.carrier.get()
            && let Some(message) = carrier::encode(&self.id, events)
        {
            c.publish(message);
            self.counts.published.fetch_add(1, Relaxed);
        }
    }

    /// A message from the carrier: another server's commit group, handed on in seq order.
    /// One that cannot be read is dropped (the follower reads its events from the journal).
    pub fn receive(&self, message: &[u8]) {
        let Some((from, events)) = carrier::decode(message) else {
            self.counts.unreadable.fetch_add(1, Relaxed);
            return;
        };
        if from == self.id {
            return;
        }
        let mut state = sync::lock(&self.state);
        for c in events {
            if c.seq < state.next || state.reserved.contains(&c.seq) {
                continue;
            }
            let entry = journal::JournalEntry {
                seq: c.seq,
                envelope: c.envelope,
                subject: c.subject,
                previous: c.previous,
            };
            match remote_event(&entry) {
                Ok(event) => {
                    self.counts.received.fetch_add(1, Relaxed);
                    self.offer(c.seq, Some(event), &mut state);
                }
                Err(_) => {
                    self.counts.unreadable.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// How writes tell the other servers something.
    pub fn peers(&self) -> Peers {
        self.peers.clone()
    }

    /// Where messages from other servers ([`Peers::tell`]) go.
    pub fn on_peer_message(&self, handler: PeerHandler) {
        *sync::lock(&self.on_peer) = Some(handler);
    }

    /// A notification on the peers channel: handed on unless this server sent it.
    fn peer_message(&self, payload: &str) {
        let Some((from, message)) = payload.split_once('\n') else {
            return;
        };
        if from == self.id {
            return;
        }
        if let Some(handler) = &*sync::lock(&self.on_peer) {
            handler(message);
        }
    }

    /// The writer's seqs `first..=last`, before its commit: the follower leaves them alone.
    pub fn reserve(&self, first: u64, last: u64) {
        sync::lock(&self.state).reserved.extend(first..=last);
    }

    /// The commit of a reservation failed: those seqs will be assigned again.
    pub fn release(&self, first: u64, last: u64) {
        let mut state = sync::lock(&self.state);
        for seq in first..=last {
            state.reserved.remove(&seq);
        }
    }

    /// Takes `event` (seq `seq`) and hands out every event whose turn has come.
    fn offer(&self, seq: u64, event: Option<Event>, state: &mut State) {
        state.reserved.remove(&seq);
        if seq < state.next {
            return; // already out (read twice)
        }
        state.held.insert(seq, event);
        while let Some(e) = state.held.remove(&state.next) {
            // Emitted under the lock: the bus queues, it never waits.
            if let Some(e) = e {
                self.bus.emit(e);
            }
            state.next += 1;
        }
        if !state.held.is_empty() && !state.wake {
            // An early event: what comes before it is in the journal.
            state.wake = true;
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        let mut state = sync::lock(&self.state);
        state.stopping = true;
        self.changed.notify_all();
    }
}

impl EventBus for Sequencer {
    fn emit(&self, event: Event) -> SharedEvent {
        let Some(seq) = event.seq else {
            return self.bus.emit(event);
        };
        let mut state = sync::lock(&self.state);
        if seq == state.next && state.held.is_empty() {
            // Its turn (nearly always with one server): straight to the bus.
            state.reserved.remove(&seq);
            state.next += 1;
            return self.bus.emit(event);
        }
        let shared = Arc::new(event.clone());
        self.offer(seq, Some(event), &mut state);
        shared
    }

    fn subscribe(&self, consumer: &str, capacity: usize) -> EventStream {
        self.bus.subscribe(consumer, capacity)
    }

    fn emitted(&self) -> u64 {
        self.bus.emitted()
    }

    fn consumers(&self) -> Vec<ConsumerInfo> {
        self.bus.consumers()
    }
}

/// The thread that reads other servers' events from the journal. Dropped, it tells the
/// thread to end (which it does within [`POLL`], closing its connection); [`Follower::stop`]
/// also waits for that.
pub struct Follower {
    sequencer: Arc<Sequencer>,
    handle: Option<JoinHandle<()>>,
}

impl Follower {
    pub fn spawn(
        sequencer: Arc<Sequencer>,
        settings: PostgresSettings,
    ) -> std::io::Result<Follower> {
        let seq = sequencer.clone();
        let handle = std::thread::Builder::new()
            .name("bakend-journal-follower".into())
            .spawn(move || follow(&seq, &settings))?;
        Ok(Follower {
            sequencer,
            handle: Some(handle),
        })
    }

    pub fn stop(mut self) {
        self.sequencer.stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.sequencer.stop();
    }
}

fn follow(seq: &Sequencer, settings: &PostgresSettings) {
    // The connection, and whether it listens to commits.
    let mut conn: Option<(Conn, bool)> = None;
    loop {
        {
            let mut state = sync::lock(&seq.state);
            if state.stopping {
                return;
            }
            state.wake = false;
        }
        if !conn.as_ref().is_some_and(|(c, _)| c.is_usable()) {
            conn = match open(settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("Reading other servers' events: {e}; trying again");
                    pause(seq);
                    continue;
                }
            };
        }
        let Some((c, listening)) = &conn else {
            continue;
        };
        if let Err(e) = read_new(seq, c) {
            tracing::warn!("Reading other servers' events from the journal failed: {e}");
            conn = None;
            pause(seq);
            continue;
        }
        // Until a commit notifies (a gap comes with the commit that made it), or at most the
        // poll interval.
        match (listening, c.postgres()) {
            (true, Some(pg)) => {
                if !wait_for_others(seq, pg) {
                    conn = None;
                }
            }
            _ => pause(seq),
        }
    }
}

/// Waits until another server's commit is notified (its own are ignored) or the poll interval
/// passes, handing on the other servers' messages meanwhile.
/// `false` when the connection failed.
fn wait_for_others(seq: &Sequencer, pg: &PgConn) -> bool {
    let deadline = std::time::Instant::now() + POLL;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let notes = match pg.wait_for_notifications(left) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("Waiting for other servers' commits failed: {e}");
                return false;
            }
        };
        if notes.is_empty() {
            return true;
        }
        let mut commit = false;
        for (channel, payload) in notes {
            if channel == seq.peers.channel {
                seq.peer_message(&payload);
            } else if payload != seq.id {
                commit = true;
            }
        }
        if commit {
            return true;
        }
    }
}

/// Waits the poll interval, or less if woken (a gap, or stopping).
fn pause(seq: &Sequencer) {
    let state = sync::lock(&seq.state);
    if !state.wake && !state.stopping {
        let _ = seq.changed.wait_timeout(state, POLL);
    }
}

/// A connection that `LISTEN`s to the schema's commits (`true`), or one that only reads.
fn open(settings: &PostgresSettings) -> Result<(Conn, bool), crate::sql::Error> {
    let conn = Conn::from(PgConn::connect(settings)?);
    let schema = &settings.options.schema;
    let listening = conn
        .execute_batch(&format!(
            "LISTEN {}; LISTEN {}",
            channel(schema),
            peers_channel(schema)
        ))
        .is_ok();
    Ok((conn, listening))
}

/// Reads the journal after the last seq handed out and offers what other servers wrote.
fn read_new(seq: &Sequencer, conn: &Conn) -> Result<(), crate::error::StoreError> {
    loop {
        let after = sync::lock(&seq.state).next - 1;
        let entries =
            match journal::read_range(conn, after, after + BATCH as u64, BATCH, &|_, _| true)? {
                Some(e) => e,
                None => {
                    // Trimmed past us (a server that stopped reading for longer than the journal
                    // keeps): go on from what is left; those clients' resumes will say so.
                    let oldest = journal::oldest_seq(conn)?.unwrap_or(after + 1);
                    tracing::warn!(
                        "Events {}..{} were trimmed before this server read them",
                        after + 1,
                        oldest
                    );
                    let mut state = sync::lock(&seq.state);
                    state.next = state.next.max(oldest);
                    continue;
                }
            };
        let n = entries.len();
        let mut state = sync::lock(&seq.state);
        for entry in entries {
            if entry.seq < state.next || state.reserved.contains(&entry.seq) {
                continue;
            }
            if seq.carrier.get().is_some() {
                seq.counts.filled_from_journal.fetch_add(1, Relaxed);
            }
            match remote_event(&entry) {
                Ok(event) => seq.offer(entry.seq, Some(event), &mut state),
                Err(e) => {
                    // Passed over rather than waited for forever (every later event would
                    // wait behind it); a client resuming over it gets it from the journal,
                    // which says the same.
                    tracing::error!("Journal row {} cannot be read, passed over: {e}", entry.seq);
                    seq.offer(entry.seq, None, &mut state);
                }
            }
        }
        if n < BATCH {
            return Ok(());
        }
    }
}

fn remote_event(entry: &journal::JournalEntry) -> Result<Event, serde_json::Error> {
    let mut event = entry.event()?;
    event.remote = true;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::EventSource;
    use bakend_events::LocalBus;

    fn event(seq: u64, remote: bool) -> Event {
        let mut e = Event::new(
            "posts.created",
            EventSource::Collections,
            serde_json::json!({"seq": seq}),
        );
        e.seq = Some(seq);
        e.remote = remote;
        e
    }

    /// Events leave in seq order whoever offers them when: an early one waits for the gap
    /// before it, one offered twice leaves once, events without a seq pass at once.
    #[test]
    fn events_leave_in_seq_order_once() {
        let bus = LocalBus::new();
        let mut out = bus.subscribe("t", 100);
        let seq = Sequencer::new(bus, 10, "public", None);
        seq.reserve(13, 14);
        seq.emit(event(11, false));
        seq.emit(event(13, false)); // early: 12 is another server's
        assert!(sync::lock(&seq.state).wake, "a gap wakes the follower");
        seq.emit(Event::new(
            "job.started",
            EventSource::Jobs,
            serde_json::json!({}),
        ));
        {
            let mut state = sync::lock(&seq.state);
            seq.offer(12, Some(event(12, true)), &mut state);
            seq.offer(12, Some(event(12, true)), &mut state); // read twice
            seq.offer(11, Some(event(11, true)), &mut state); // already out
        }
        seq.emit(event(14, false));
        // An unreadable journal row is passed over, not waited for.
        seq.emit(event(16, false));
        seq.offer(15, None, &mut sync::lock(&seq.state));
        let got: Vec<(Option<u64>, bool)> = std::iter::from_fn(|| out.try_recv())
            .map(|e| (e.seq, e.remote))
            .collect();
        assert_eq!(
            got,
            [
                (Some(11), false),
                (None, false),
                (Some(12), true),
                (Some(13), false),
                (Some(14), false),
                (Some(16), false)
            ]
        );
        let state = sync::lock(&seq.state);
        assert!(state.reserved.is_empty() && state.held.is_empty());
        assert_eq!(state.next, 17);
    }
}
