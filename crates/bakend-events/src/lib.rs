//! The event bus: the spine of Bakend. Subsystems emit [`Event`]s here and consume them from
//! here; none of them calls another to say that something happened.
//!
//! Emitting never blocks: every consumer owns a bounded queue, and an event that does not fit is
//! counted against that consumer and logged (never silently skipped) while everyone else is
//! served. The [`EventBus`] trait is narrow so a cross-node bus can be put behind it later.
//!
//! Every event gets a position: its number in emission order (1, 2, …), the same for every
//! consumer. A consumer can tell how far it has got ([`EventStream::position`]) — dropped
//! events included — so that others can wait for it to get past an event (the realtime hub's
//! delivery watermark, which REST answers wait for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bakend_core::{Event, SharedEvent, sync};
use tokio::sync::mpsc;

/// Counters for one consumer, readable while it runs.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub delivered: AtomicU64,
    /// Events that did not fit in the consumer's queue.
    pub dropped: AtomicU64,
}

/// A snapshot of one consumer, for metrics: its queue and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    /// Events waiting in the consumer's queue.
    pub depth: usize,
    pub capacity: usize,
    pub delivered: u64,
    pub dropped: u64,
}

/// What a consumer reads events from, in emission order.
pub struct EventStream {
    rx: mpsc::Receiver<(u64, SharedEvent)>,
    stats: Arc<ConsumerStats>,
    /// The bus's count of emitted events (the position of the latest).
    emitted: Arc<AtomicU64>,
    position: u64,
}

impl EventStream {
    pub async fn recv(&mut self) -> Option<SharedEvent> {
        let (position, event) = self.rx.recv().await?;
        self.position = position;
        Some(event)
    }

    /// For consumers that live on their own OS thread; never call from an async task.
    pub fn blocking_recv(&mut self) -> Option<SharedEvent> {
        let (position, event) = self.rx.blocking_recv()?;
        self.position = position;
        Some(event)
    }

    /// The next queued event; `None` when the queue is empty, and then every event emitted
    /// before this call has been received or dropped ([`EventStream::position`] moves past it).
    pub fn try_recv(&mut self) -> Option<SharedEvent> {
        // Read before looking at the queue: an emit publishes its count only after queueing
        // (under the bus's lock), so with the queue empty everything up to here is accounted
        // for.
        let emitted = self.emitted.load(Ordering::Acquire);
        match self.rx.try_recv() {
            Ok((position, event)) => {
                self.position = position;
                Some(event)
            }
            Err(_) => {
                self.position = self.position.max(emitted);
                None
            }
        }
    }

    /// How far this consumer has got: the position of the last event it received, or of the
    /// last one emitted before [`EventStream::try_recv`] last found the queue empty (events
    /// dropped because the queue was full are behind it too).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }
}

pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event to every consumer. Never blocks, never fails the caller.
    fn emit(&self, event: Event) -> SharedEvent;

    /// Registers a consumer with its own queue of `capacity` events. It sees every event emitted
    /// after this call.
    fn subscribe(&self, consumer: &str, capacity: usize) -> EventStream;

    /// Events emitted since start: the position of the latest event (see the module doc).
    fn emitted(&self) -> u64;

    /// The live consumers in registration order (a scrape reads this; cheap, no event is
    /// touched). A bus that cannot tell reports none.
    fn consumers(&self) -> Vec<ConsumerInfo> {
        Vec::new()
    }
}

struct Consumer {
    name: String,
    tx: mpsc::Sender<(u64, SharedEvent)>,
    stats: Arc<ConsumerStats>,
}

/// The in-process bus.
#[derive(Default)]
pub struct LocalBus {
    /// One lock for numbering and queueing, so every consumer's queue is in position order
    /// whichever threads emit. Held for a few `try_send`s; never across anything that waits.
    consumers: Mutex<Vec<Consumer>>,
    emitted: Arc<AtomicU64>,
}

impl LocalBus {
    pub fn new() -> Arc<LocalBus> {
        Arc::new(LocalBus::default())
    }
}

impl EventBus for LocalBus {
    fn emit(&self, event: Event) -> SharedEvent {
        let event = Arc::new(event);
        tracing::debug!("Event emitted: {} ({})", event.event_type, event.id);
        let mut consumers = sync::lock(&self.consumers);
        let position = self.emitted.load(Ordering::Relaxed) + 1;
        let mut any_closed = false;
        for c in consumers.iter() {
            match c.tx.try_send((position, event.clone())) {
                Ok(()) => {
                    c.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = c.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Log the first drop and then every 1000th so a stuck consumer is loud
                    // without flooding the log.
                    if n == 1 || n % 1000 == 0 {
                        tracing::error!(
                            "Event consumer \"{}\" is falling behind: {} event(s) dropped so far (latest {} {})",
                            c.name,
                            n,
                            event.event_type,
                            event.id
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => any_closed = true,
            }
        }
        // Published after queueing: see `EventStream::try_recv`.
        self.emitted.store(position, Ordering::Release);
        if any_closed {
            consumers.retain(|c| !c.tx.is_closed());
        }
        event
    }

    fn subscribe(&self, consumer: &str, capacity: usize) -> EventStream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(ConsumerStats::default());
        let mut consumers = sync::lock(&self.consumers);
        consumers.push(Consumer {
            name: consumer.to_string(),
            tx,
            stats: stats.clone(),
        });
        EventStream {
            rx,
            stats,
            emitted: self.emitted.clone(),
            // It sees the events after this one.
            position: self.emitted.load(Ordering::Relaxed),
        }
    }

    fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Acquire)
    }

    fn consumers(&self) -> Vec<ConsumerInfo> {
        let consumers = sync::lock(&self.consumers);
        consumers
            .iter()
            .filter(|c| !c.tx.is_closed())
            .map(|c| {
                // The sender's free permits: what is not free is queued (or being sent).
                let capacity = c.tx.max_capacity();
                ConsumerInfo {
                    name: c.name.clone(),
                    depth: capacity - c.tx.capacity(),
                    capacity,
                    delivered: c.stats.delivered.load(Ordering::Relaxed),
                    dropped: c.stats.dropped.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::EventSource;
    use serde_json::json;

    fn ev(t: &str) -> Event {
        Event::new(t, EventSource::System, json!({}))
    }

    #[test]
    fn every_consumer_sees_events_in_order() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe("a", 16);
        let mut b = bus.subscribe("b", 16);
        for t in ["x.created", "x.updated", "x.deleted"] {
            bus.emit(ev(t));
        }
        for s in [&mut a, &mut b] {
            let got: Vec<String> = std::iter::from_fn(|| s.try_recv())
                .map(|e| e.event_type.clone())
                .collect();
            assert_eq!(got, ["x.created", "x.updated", "x.deleted"]);
        }
        assert_eq!(bus.emitted(), 3);
    }

    #[test]
    fn a_full_consumer_is_counted_and_does_not_block_others() {
        let bus = LocalBus::new();
        let slow = bus.subscribe("slow", 1);
        let mut fast = bus.subscribe("fast", 16);
        for _ in 0..5 {
            bus.emit(ev("x.created"));
        }
        assert_eq!(slow.stats().dropped.load(Ordering::Relaxed), 4);
        assert_eq!(slow.stats().delivered.load(Ordering::Relaxed), 1);
        assert_eq!(std::iter::from_fn(|| fast.try_recv()).count(), 5);
    }

    #[test]
    fn consumers_report_queue_depth_and_counters() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe("a", 4);
        let gone = bus.subscribe("gone", 4);
        drop(gone);
        for _ in 0..6 {
            bus.emit(ev("x.created"));
        }
        let info = |bus: &LocalBus| bus.consumers();
        assert_eq!(
            info(&bus),
            [ConsumerInfo {
                name: "a".into(),
                depth: 4,
                capacity: 4,
                delivered: 4,
                dropped: 2,
            }]
        );
        a.try_recv();
        a.try_recv();
        assert_eq!(info(&bus)[0].depth, 2);
    }

    #[test]
    fn closed_consumers_are_forgotten() {
        let bus = LocalBus::new();
        drop(bus.subscribe("gone", 1));
        bus.emit(ev("x.created"));
        assert_eq!(bus.consumers.lock().unwrap().len(), 0);
    }

    #[test]
    fn positions_count_received_and_dropped_events() {
        let bus = LocalBus::new();
        bus.emit(ev("before"));
        let mut s = bus.subscribe("s", 2);
        assert_eq!(s.position(), 1);
        for _ in 0..4 {
            bus.emit(ev("x.created"));
        }
        assert_eq!(bus.emitted(), 5);
        assert!(s.try_recv().is_some());
        assert_eq!(s.position(), 2);
        assert!(s.try_recv().is_some());
        assert_eq!(s.position(), 3);
        // Events 4 and 5 were dropped: once the queue is found empty they are behind it.
        assert!(s.try_recv().is_none());
        assert_eq!(s.position(), 5);
    }
}
