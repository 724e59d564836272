//! Latency and outcome accounting shared by every scenario. Each virtual client owns a
//! [`Recorder`] so the hot path never touches shared state (no locks, no atomics, no false
//! sharing); the recorders are merged once, after the run, into a [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// Initial per-client capacity; large enough that a typical run on localhost rarely
/// reallocates while measuring.
const INITIAL_SAMPLES: usize = 64 * 1024;

/// How many distinct network error messages are kept for the summary; the count is exact,
/// the messages are only there to say what went wrong.
const MAX_ERROR_MESSAGES: usize = 3;

/// Per-client outcome counters and latency samples.
pub struct Recorder {
    /// Microseconds; `u32` halves memory versus `u64` and still covers over an hour.
    latencies_us: Vec<u32>,
    /// Linear list rather than a map: a run nearly always sees one or two distinct statuses.
    statuses: Vec<(u16, u64)>,
    ok_status: u16,
    network_errors: u64,
    error_messages: Vec<String>,
    /// Response body bytes, summed over the responses recorded.
    body_bytes: u64,
}

impl Recorder {
    pub fn new(ok_status: u16) -> Recorder {
        Recorder {
            latencies_us: Vec::with_capacity(INITIAL_SAMPLES),
            statuses: Vec::new(),
            ok_status,
            network_errors: 0,
            error_messages: Vec::new(),
            body_bytes: 0,
        }
    }

    /// Adds the body size of a response already counted with [`Recorder::response`].
    #[inline]
    pub fn body_bytes(&mut self, len: usize) {
        self.body_bytes += len as u64;
    }

    /// Records a completed request-response exchange, whatever its status; error responses
    /// contribute latency samples too, since the server did the work of answering them.
    #[inline]
    pub fn response(&mut self, status: u16, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    /// Records a request that got no HTTP response at all (connect failure, reset, bad framing).
    pub fn network_error(&mut self, err: &anyhow::Error) {
        self.network_errors += 1;
        if self.error_messages.len() < MAX_ERROR_MESSAGES {
            let msg = format!("{err:#}");
            if !self.error_messages.contains(&msg) {
                self.error_messages.push(msg);
            }
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

impl Percentiles {
    /// Nearest-rank percentiles: every reported value is an actually observed latency.
    pub(crate) fn from_sorted(sorted: &[u32]) -> Percentiles {
        let rank = |p: f64| -> u32 {
            if sorted.is_empty() {
                return 0;
            }
            let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[idx.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The merged figures of one run.
pub struct Report {
    pub scenario: &'static str,
    pub clients: usize,
    pub measured: Duration,
    pub warmup: Duration,
    /// Responses plus network errors.
    pub requests: u64,
    pub ok: u64,
    /// Responses whose status was not the scenario's success status.
    pub errors: u64,
    pub network_errors: u64,
    pub reconnects: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub error_messages: Vec<String>,
    pub latency_us: Percentiles,
    /// Response body bytes over every response (0 where the scenario does not count them).
    pub body_bytes: u64,
}

impl Report {
    pub fn merge(
        scenario: &'static str,
        measured: Duration,
        warmup: Duration,
        recorders: Vec<Recorder>,
        reconnects: u64,
    ) -> Report {
        let clients = recorders.len();
        let total: usize = recorders.iter().map(|r| r.latencies_us.len()).sum();
        let mut all = Vec::with_capacity(total);
        let mut statuses = BTreeMap::new();
        let mut ok = 0;
        let mut errors = 0;
        let mut network_errors = 0;
        let mut error_messages: Vec<String> = Vec::new();
        let mut body_bytes = 0;
        for r in recorders {
            all.extend_from_slice(&r.latencies_us);
            body_bytes += r.body_bytes;
            for (status, n) in r.statuses {
                *statuses.entry(status).or_insert(0) += n;
                if status == r.ok_status {
                    ok += n;
                } else {
                    errors += n;
                }
            }
            network_errors += r.network_errors;
            for m in r.error_messages {
                if error_messages.len() < MAX_ERROR_MESSAGES && !error_messages.contains(&m) {
                    error_messages.push(m);
                }
            }
        }
        all.sort_unstable();
        Report {
            scenario,
            clients,
            measured,
            warmup,
            requests: ok + errors + network_errors,
            ok,
            errors,
            network_errors,
            reconnects,
            statuses,
            error_messages,
            latency_us: Percentiles::from_sorted(&all),
            body_bytes,
        }
    }

    /// Mean response body size; 0 when no response was counted.
    pub fn bytes_per_response(&self) -> u64 {
        self.body_bytes
            .checked_div(self.ok + self.errors)
            .unwrap_or(0)
    }

    /// Successful responses per measured second; failures are excluded so a server that
    /// answers errors quickly cannot look fast.
    pub fn rps(&self) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    pub fn human(&self) -> String {
        let ms = |us: u32| format!("{:.3}", f64::from(us) / 1000.0);
        let breakdown = if self.statuses.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            format!(" (statuses {})", parts.join(", "))
        };
        let mut out = String::new();
        let _ = writeln!(out, "scenario     {}", self.scenario);
        let _ = writeln!(out, "clients      {}", self.clients);
        let _ = writeln!(
            out,
            "duration     {:.3} s (after {:.3} s warm-up)",
            self.measured.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        let _ = writeln!(out, "requests     {}", self.requests);
        let _ = writeln!(out, "ok           {}", self.ok);
        let _ = writeln!(out, "errors       {}{}", self.errors, breakdown);
        let _ = writeln!(
            out,
            "net errors   {} (reconnects {})",
            self.network_errors, self.reconnects
        );
        for m in &self.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        let _ = writeln!(out, "requests/s   {:.1}", self.rps());
        let l = self.latency_us;
        let _ = writeln!(
            out,
            "latency ms   p50 {}  p90 {}  p99 {}  max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        );
        if self.body_bytes > 0 {
            let _ = writeln!(out, "bytes/resp   {}", self.bytes_per_response());
        }
        out
    }

    pub fn json(&self) -> Value {
        // Microseconds / 1000 has at most three decimals, which is the precision asked for.
        let ms = |us: u32| f64::from(us) / 1000.0;
        let statuses: serde_json::Map<String, Value> = self
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        let l = self.latency_us;
        json!({
            "scenario": self.scenario,
            "clients": self.clients,
            "durationSecs": self.measured.as_secs_f64(),
            "warmupSecs": self.warmup.as_secs_f64(),
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": statuses,
            "networkErrors": self.network_errors,
            "reconnects": self.reconnects,
            "rps": (self.rps() * 10.0).round() / 10.0,
            "bytesPerResponse": self.bytes_per_response(),
            "latencyMs": {
                "p50": ms(l.p50),
                "p90": ms(l.p90),
                "p99": ms(l.p99),
                "max": ms(l.max),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        let p = Percentiles::from_sorted(&v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        let one = Percentiles::from_sorted(&[7]);
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        let none = Percentiles::from_sorted(&[]);
        assert_eq!(none.max, 0);
    }

    #[test]
    fn merge_splits_ok_and_errors() {
        let mut a = Recorder::new(201);
        a.response(201, Duration::from_micros(100));
        a.response(500, Duration::from_micros(300));
        let mut b = Recorder::new(201);
        b.response(201, Duration::from_micros(200));
        b.body_bytes(40);
        a.body_bytes(20);
        b.network_error(&anyhow::anyhow!("reset"));
        let r = Report::merge("t", Duration::from_secs(1), Duration::ZERO, vec![a, b], 0);
        assert_eq!((r.requests, r.ok, r.errors, r.network_errors), (4, 2, 1, 1));
        assert_eq!(r.statuses.get(&500), Some(&1));
        assert_eq!(r.latency_us.max, 300);
        assert_eq!(r.rps(), 2.0);
        assert_eq!(r.bytes_per_response(), 20);
        assert!(r.human().contains("bytes/resp   20"));
    }
}
