//! What each HTTP connection is doing, for the accept loop's two defences against clients that
//! hold connections without finishing requests (issue 14 #1):
//!
//! - **Timeouts.** A connection that is waiting for a request head — a new one, or a kept-alive
//!   one after its last response — is closed once it has waited `http.headerReadTimeoutMs`
//!   (new) or `http.keepAliveTimeoutMs` (kept alive). One with a request in flight is never
//!   cut; an upgraded one (WebSocket) has left hyper, and this watch, altogether.
//! - **Shedding.** When `accept` fails for want of file descriptors, the oldest connections
//!   still waiting for a request head are closed, so a real request can get in.
//!
//! A connection is *waiting* from its accept, and again from the moment its last response body
//! has been written (hyper drops it then); it is *busy* from the moment hyper hands a parsed
//! request head to the service.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `waiting_since` while a request is in flight.
const BUSY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// From accept until the first request head is complete.
    pub header_read: Duration,
    /// From the end of a response until the next request head is complete.
    pub keep_alive: Duration,
}

/// Every open (not upgraded) connection of one server.
pub(crate) struct Registry {
    epoch: Instant,
    timeouts: Timeouts,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

/// One connection's phase, shared by its task, its requests and the registry.
pub(crate) struct ConnState {
    /// Milliseconds since the registry's epoch when the connection began waiting for a request
    /// head, or [`BUSY`].
    waiting_since: AtomicU64,
    in_flight: AtomicU32,
    /// A request head was received: later waits are kept-alive waits.
    served: AtomicBool,
    /// Set once the registry asked the connection to close, so it is not counted twice.
    shed_asked: AtomicBool,
    shed: Notify,
}

impl Registry {
    pub(crate) fn new(timeouts: Timeouts) -> Arc<Registry> {
        Arc::new(Registry {
            epoch: Instant::now(),
            timeouts,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        // The map is only inserted into and removed from; a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still usable.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection, waiting for its first request head from now.
    pub(crate) fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            waiting_since: AtomicU64::new(self.now_ms()),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            shed_asked: AtomicBool::new(false),
            shed: Notify::new(),
        });
        self.conns().insert(id, state.clone());
        Registered {
            registry: self.clone(),
            id,
            state,
        }
    }

    /// Asks up to `max` of the connections that have waited longest for a request head to
    /// close. Returns how many were asked.
    pub(crate) fn shed_oldest_waiting(&self, max: usize) -> usize {
        let mut waiting: Vec<(u64, Arc<ConnState>)> = self
            .conns()
            .values()
            .filter(|c| !c.shed_asked.load(Ordering::Relaxed))
            .filter_map(|c| {
                let since = c.waiting_since.load(Ordering::Relaxed);
                (since != BUSY).then(|| (since, c.clone()))
            })
            .collect();
        if waiting.len() > max {
            waiting.select_nth_unstable_by_key(max, |(since, _)| *since);
            waiting.truncate(max);
        }
        for (_, c) in &waiting {
            c.shed_asked.store(true, Ordering::Relaxed);
            c.shed.notify_one();
        }
        waiting.len()
    }

    /// Connections currently open (not upgraded).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns().len()
    }
}

/// A connection's entry in the registry, removed when dropped (the connection's task ends).
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
    }
}

impl Registered {
    /// When the connection will have waited too long for a request head; `None` while a
    /// request is in flight.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let since = self.state.waiting_since.load(Ordering::Acquire);
        if since == BUSY {
            return None;
        }
        let t = &self.registry.timeouts;
        let limit = if self.state.served.load(Ordering::Relaxed) {
            t.keep_alive
        } else {
            t.header_read
        };
        Some(self.registry.epoch + Duration::from_millis(since) + limit)
    }

    /// How long to sleep before looking again while busy: a request may end at any time, and
    /// the timeout then counts from its end, so this only bounds how late the next look is.
    pub(crate) fn recheck_after(&self) -> Duration {
        let t = &self.registry.timeouts;
        t.header_read.min(t.keep_alive)
    }

    /// Resolves when the registry asks this connection to close to make room.
    pub(crate) async fn shed_requested(&self) {
        self.state.shed.notified().await
    }

    /// Whether the connection is still waiting for a request head (it may have started one
    /// since it was asked to close; then it is kept).
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.waiting_since.load(Ordering::Acquire) != BUSY
    }

    /// What the connection's service uses to mark its requests.
    pub(crate) fn requests(&self) -> Requests {
        Requests {
            registry: self.registry.clone(),
            state: self.state.clone(),
        }
    }
}

/// Marks the requests of one connection (held by its service).
#[derive(Clone)]
pub(crate) struct Requests {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Requests {
    /// Marks a request in flight until the returned guard is dropped.
    pub(crate) fn started(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        self.state.served.store(true, Ordering::Relaxed);
        self.state.waiting_since.store(BUSY, Ordering::Release);
        InFlight {
            registry: self.registry.clone(),
            state: self.state.clone(),
        }
    }
}

/// One request in flight; its response body carries it, so it ends when hyper has written
/// the whole response (or the request was dropped).
pub(crate) struct InFlight {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state
                .waiting_since
                .store(self.registry.now_ms(), Ordering::Release);
        }
    }
}

/// A response body that holds its request's [`InFlight`] until hyper drops it.
pub(crate) struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, in_flight: InFlight) -> TrackedBody {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(header_ms: u64, keep_alive_ms: u64) -> Arc<Registry> {
        Registry::new(Timeouts {
            header_read: Duration::from_millis(header_ms),
            keep_alive: Duration::from_millis(keep_alive_ms),
        })
    }

    /// `d` is `after` from `from`, to the millisecond the registry counts in.
    fn about(d: Instant, from: Instant, after: Duration) -> bool {
        let want = from + after;
        d + Duration::from_millis(2) >= want && d <= want + Duration::from_millis(2)
    }

    #[tokio::test]
    async fn a_new_connection_has_the_header_deadline_and_a_busy_one_none() {
        let r = registry(1_000, 5_000);
        let start = Instant::now();
        let c = r.register();
        assert!(about(c.deadline().unwrap(), start, Duration::from_secs(1)));
        let req = c.requests().started();
        assert_eq!(
            c.deadline(),
            None,
            "no timeout while a request is in flight"
        );
        assert!(!c.is_waiting());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ended = Instant::now();
        drop(req);
        // Kept alive: the keep-alive timeout, from the end of the response.
        assert!(c.is_waiting());
        assert!(about(c.deadline().unwrap(), ended, Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn shedding_picks_the_longest_waiting_and_skips_busy_ones() {
        let r = registry(10_000, 10_000);
        let oldest = r.register();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = r.register();
        let _req = busy.requests().started();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let middle = r.register();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let newest = r.register();

        assert_eq!(r.shed_oldest_waiting(2), 2);
        let asked = |c: &Registered| c.state.shed_asked.load(Ordering::Relaxed);
        assert!(asked(&oldest) && asked(&middle));
        assert!(!asked(&busy) && !asked(&newest));
        // The notification is stored until the connection's task looks.
        tokio::time::timeout(Duration::from_millis(1), oldest.shed_requested())
            .await
            .unwrap();
        // Those already asked are not counted again.
        assert_eq!(r.shed_oldest_waiting(10), 1);
        assert!(asked(&newest));
        assert_eq!(r.shed_oldest_waiting(10), 0);
        assert_eq!(r.len(), 4);
        drop(oldest);
        assert_eq!(
            r.len(),
            3,
            "a connection leaves the registry when its task ends"
        );
    }
}
