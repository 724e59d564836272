//! The cluster's event link (docs/cluster.md): NATS carries each node's committed events to
//! the other nodes, so a subscriber on node A sees a write committed through node B without
//! waiting for A to read the journal.
//!
//! NATS is only a fast path. The PostgreSQL journal stays the source of truth: the store's
//! sequencer hands events on strictly in seq order, and a seq that NATS did not bring (a lost
//! message, a broker restart, a full queue) is read from the journal by the follower — within
//! its poll interval — and counted (`filledFromJournal`). While this node is not connected to
//! NATS its commits wake the other nodes through PostgreSQL (`NOTIFY`) as a cluster without
//! NATS does; the client reconnects on its own.
//!
//! One message per commit group on `bakend.<epoch>.events` (the journal's epoch, so two
//! databases sharing a broker never mix), in the format of `bakend_store::db::carrier`.
//!
//! Events that are not journaled (function lifecycle: `function.started`, …) have no seq to
//! order or recover them by; they travel on `bakend.<epoch>.volatile` (envelopes, one per
//! line: those that queued up go as one message), live only: what NATS loses, or what happens while it is down, other nodes' clients
//! do not see — as a client disconnected at that moment would not on a single server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::connection::State;
use bakend_store::db::carrier::{self, Carrier};
use bakend_store::db::sequencer::Sequencer;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Commit groups waiting to be handed to the NATS client; more are dropped (the journal has
/// them).
const QUEUE: usize = 4096;
/// Groups that queued up while the last message went out are sent as one message up to this
/// size (NATS's default `max_payload` is 1 MiB).
const MERGE_UP_TO: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats: cannot use NATS at {url}: {message}")]
    Nats { url: String, message: String },
}

/// The subject a database's journaled events travel on.
pub fn subject(epoch: &str) -> String {
    format!("bakend.{}.events", token(epoch))
}

/// The subject a database's events without a seq travel on.
pub fn volatile_subject(epoch: &str) -> String {
    format!("bakend.{}.volatile", token(epoch))
}

/// `epoch` as one NATS subject token.
fn token(epoch: &str) -> String {
    epoch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Called with each envelope another node published with [`Link::publish_volatile`].
pub type VolatileHandler = Box<dyn Fn(&[u8]) + Send + Sync>;

/// This node's link to the others. Dropping it stops its tasks.
pub struct Link {
    carrier: Arc<NatsCarrier>,
    /// Envelopes of events without a seq, waiting for the NATS client; more are dropped.
    volatile: mpsc::Sender<Bytes>,
    tasks: Vec<JoinHandle<()>>,
}

/// How the link is doing (`GET /api/admin/realtime`'s `cluster`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub connected: bool,
    /// Messages this node could not hand to NATS (queue full, message too large): commit
    /// groups (their events reach the other nodes from the journal) and events without a seq.
    pub dropped: u64,
}

struct NatsCarrier {
    client: async_nats::Client,
    queue: mpsc::Sender<Vec<u8>>,
    dropped: AtomicU64,
}

impl Carrier for NatsCarrier {
    fn publish(&self, message: Vec<u8>) {
        if self.queue.try_send(message).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

impl Link {
    /// Connects to NATS at `url` in the background (a node starts, and serves, while NATS is
    /// down), subscribes to the other nodes' events and attaches itself to `sequencer`; the
    /// other nodes' events without a seq go to `on_volatile`. Fails only on what retrying
    /// cannot fix (a URL that is not one).
    pub async fn start(
        url: &str,
        epoch: &str,
        node: &str,
        sequencer: Arc<Sequencer>,
        on_volatile: VolatileHandler,
    ) -> Result<Link, ClusterError> {
        let shown = url.to_string();
        let client = async_nats::ConnectOptions::new()
            .name(format!("bakend {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                // 0, 100, 200, … ms, at most 1 s: a restarted broker is used again soon.
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .event_callback(move |event| {
                let shown = shown.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("Cluster: connected to NATS at {shown}")
                        }
                        async_nats::Event::Disconnected => tracing::warn!(
                            "Cluster: NATS at {shown} is unreachable; other nodes' events come from the journal until it returns"
                        ),
                        other => tracing::debug!("Cluster: NATS: {other}"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| ClusterError::Nats {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| ClusterError::Nats {
                        url: url.to_string(),
                        message: e.to_string(),
                    })
            }
        };
        let subject = subject(epoch);
        let subscriber = subscribe(subject.clone()).await?;
        let volatile_subject = volatile_subject(epoch);
        let mut volatile_subscriber = subscribe(volatile_subject.clone()).await?;
        let (queue, mut outbox) = mpsc::channel::<Vec<u8>>(QUEUE);
        let carrier = Arc::new(NatsCarrier {
            client: client.clone(),
            queue,
            dropped: AtomicU64::new(0),
        });
        let publisher = {
            let carrier = carrier.clone();
            tokio::spawn(async move {
                let mut queued = Vec::new();
                while outbox.recv_many(&mut queued, 64).await > 0 {
                    // Under load several groups wait by now: one message (and one wake-up of
                    // the client's connection task) for all of them.
                    let mut batch = std::mem::take(&mut queued).into_iter();
                    let mut next = batch.next();
                    while let Some(mut message) = next.take() {
                        for m in batch.by_ref() {
                            if message.len() + m.len() > MERGE_UP_TO
                                || !carrier::append(&mut message, &m)
                            {
                                next = Some(m);
                                break;
                            }
                        }
                        let message = Bytes::from(message);
                        if let Err(e) = carrier.client.publish(subject.clone(), message).await {
                            carrier.dropped.fetch_add(1, Relaxed);
                            tracing::debug!("Cluster: publishing to NATS failed: {e}");
                        }
                    }
                }
            })
        };
        let receiver = {
            let sequencer = sequencer.clone();
            let mut subscriber = subscriber;
            tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    sequencer.receive(&message.payload);
                }
            })
        };
        let (volatile, mut volatile_outbox) = mpsc::channel::<Bytes>(QUEUE);
        let volatile_publisher = {
            let carrier = carrier.clone();
            tokio::spawn(async move {
                let mut queued = Vec::new();
                while volatile_outbox.recv_many(&mut queued, 256).await > 0 {
                    // A compact JSON envelope has no raw newline: one per line.
                    let mut lines = queued.drain(..).peekable();
                    while lines.peek().is_some() {
                        let mut message = Vec::new();
                        while let Some(next) = lines.next_if(|e| {
                            message.is_empty() || message.len() + 1 + e.len() <= MERGE_UP_TO
                        }) {
                            if !message.is_empty() {
                                message.push(b'\n');
                            }
                            message.extend_from_slice(&next);
                        }
                        let subject = volatile_subject.clone();
                        if let Err(e) = carrier.client.publish(subject, message.into()).await {
                            carrier.dropped.fetch_add(1, Relaxed);
                            tracing::debug!("Cluster: publishing to NATS failed: {e}");
                        }
                    }
                }
            })
        };
        let volatile_receiver = tokio::spawn(async move {
            while let Some(message) = volatile_subscriber.next().await {
                for envelope in message.payload.split(|b| *b == b'\n') {
                    on_volatile(envelope);
                }
            }
        });
        sequencer.attach(carrier.clone());
        Ok(Link {
            carrier,
            volatile,
            tasks: vec![publisher, receiver, volatile_publisher, volatile_receiver],
        })
    }

    /// Hands the envelope of an event without a seq (not journaled) to the other nodes, live
    /// only: dropped (and counted) when the queue is full.
    pub fn publish_volatile(&self, envelope: Bytes) {
        if self.volatile.try_send(envelope).is_err() {
            self.carrier.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            connected: self.carrier.connected(),
            dropped: self.carrier.dropped.load(Relaxed),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_are_single_tokens_per_epoch() {
        assert_eq!(super::subject("ep_01HX"), "bakend.ep_01HX.events");
        assert_eq!(super::subject("a.b *>"), "bakend.a_b___.events");
        assert_eq!(super::volatile_subject("a.b"), "bakend.a_b.volatile");
    }
}
