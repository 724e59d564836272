//! Request counters and latency histograms, recorded by a middleware around every route.
//!
//! Everything is preallocated atomics indexed by (route template, method, status): recording a
//! request classifies its path without allocating and does three relaxed `fetch_add`s — no
//! lock, no map. Labels come only from the fixed tables below, so no client can grow the
//! number of series (ids, collection names and unknown paths never become label values).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

pub use crate::routes::Route;

pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

/// Status codes Bakend (and axum beneath it) answers with; any other code is counted under its
/// class (`2xx`, `4xx`, …) so the table stays fixed.
const STATUSES: &[u16] = &[
    101, 200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 416, 422, 426, 429,
    500, 501, 503, 504,
];
const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const STATUS_SLOTS: usize = STATUSES.len() + CLASSES.len();

/// Histogram bucket upper bounds: nanoseconds for recording, seconds for the `le` label.
const BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
pub const BOUNDS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// One route's latency: a count per bucket (not cumulative; the last is above every bound) and
/// the sum in nanoseconds.
struct Latency {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

pub struct HttpMetrics {
    requests: Box<[AtomicU64]>,
    latency: Box<[Latency]>,
}

/// A consistent-enough copy of one route's histogram for rendering.
pub struct LatencySnapshot {
    pub route: &'static str,
    /// Per-bucket counts, the last one above every bound.
    pub buckets: [u64; BOUNDS_NS.len() + 1],
    pub sum_seconds: f64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = (0..Route::ALL.len() * METHODS.len() * STATUS_SLOTS)
            .map(|_| AtomicU64::new(0))
            .collect();
        let latency = (0..Route::ALL.len())
            .map(|_| Latency {
                buckets: Default::default(),
                sum_ns: AtomicU64::new(0),
            })
            .collect();
        HttpMetrics { requests, latency }
    }
}

impl HttpMetrics {
    pub fn new() -> Arc<HttpMetrics> {
        Arc::new(HttpMetrics::default())
    }

    pub fn record(&self, route: Route, method: usize, status: u16, elapsed: Duration) {
        let route = route as usize;
        let slot = (route * METHODS.len() + method) * STATUS_SLOTS + status_slot(status);
        self.requests[slot].fetch_add(1, Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BOUNDS_NS.len());
        let l = &self.latency[route];
        l.buckets[bucket].fetch_add(1, Relaxed);
        l.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Every (method, route, status) seen at least once, with its count, in table order.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, String, u64)> {
        let mut out = Vec::new();
        for (i, c) in self.requests.iter().enumerate() {
            let n = c.load(Relaxed);
            if n == 0 {
                continue;
            }
            let status = i % STATUS_SLOTS;
            let method = (i / STATUS_SLOTS) % METHODS.len();
            let route = i / (STATUS_SLOTS * METHODS.len());
            out.push((
                METHODS[method],
                Route::ALL[route].template(),
                status_label(status),
                n,
            ));
        }
        out
    }

    /// The histograms of the routes that have seen a request.
    pub fn latency(&self) -> Vec<LatencySnapshot> {
        self.latency
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let buckets = std::array::from_fn(|b| l.buckets[b].load(Relaxed));
                (buckets.iter().any(|n| *n > 0)).then(|| LatencySnapshot {
                    route: Route::ALL[i].template(),
                    buckets,
                    sum_seconds: l.sum_ns.load(Relaxed) as f64 / 1e9,
                })
            })
            .collect()
    }
}

fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|s| *s == status) {
        Some(i) => i,
        None => match status {
            100..=599 => STATUSES.len() + usize::from(status / 100 - 1),
            _ => STATUS_SLOTS - 1,
        },
    }
}

fn status_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(s) => s.to_string(),
        None => CLASSES[slot - STATUSES.len()].to_string(),
    }
}

pub fn method_index(m: &Method) -> usize {
    let name = m.as_str();
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|k| *k == name)
        .unwrap_or(METHODS.len() - 1)
}

/// The middleware: times the request until its response head is ready (for a WebSocket, the
/// upgrade answer; for a file download, the first byte) and counts it.
pub async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = Route::of(req.uri().path());
    let method = method_index(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    m.record(route, method, resp.status().as_u16(), start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_outside_the_table_count_by_class() {
        let m = HttpMetrics::default();
        let get = method_index(&Method::GET);
        m.record(Route::Health, get, 200, Duration::from_micros(100));
        m.record(Route::Health, get, 200, Duration::from_millis(3));
        m.record(Route::Health, get, 418, Duration::from_secs(30));
        m.record(
            Route::Health,
            method_index(&Method::from_bytes(b"BREW").unwrap()),
            999,
            Duration::ZERO,
        );
        assert_eq!(
            m.requests(),
            [
                ("GET", "/health", "200".to_string(), 2),
                ("GET", "/health", "4xx".to_string(), 1),
                ("other", "/health", "other".to_string(), 1),
            ]
        );
        let l = m.latency();
        assert_eq!(l.len(), 1);
        // 0 and 100 µs in the first bucket, 3 ms in the ≤ 5 ms one, 30 s above every bound.
        assert_eq!(l[0].buckets[0], 2);
        assert_eq!(l[0].buckets[3], 1);
        assert_eq!(l[0].buckets[BOUNDS.len()], 1);
        assert!((l[0].sum_seconds - 30.0031).abs() < 1e-9);
    }
}
