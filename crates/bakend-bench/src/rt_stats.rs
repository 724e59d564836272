//! Receive-side accounting for the realtime scenarios. As with [`crate::stats`], every socket
//! owns its [`RxStats`] (no shared state on the hot path) and they are merged once, after the
//! run, into an [`RxSummary`].

use serde_json::{Value, json};

use crate::stats::Percentiles;

/// Distinct error messages kept for the summary; counts are exact regardless.
const MAX_ERROR_MESSAGES: usize = 3;

/// What one socket saw.
#[derive(Debug, Default)]
pub struct RxStats {
    /// Every text/binary frame, including acks and pongs.
    pub frames: u64,
    /// Event frames.
    pub events: u64,
    /// Latency samples in microseconds (send timestamp → frame processed).
    pub samples: Vec<u32>,
    /// Sampled event frames whose timestamp field was missing or not an integer.
    pub unstamped: u64,
    /// `owner-fanout` only: events whose `user_id` is this socket's user.
    pub own: u64,
    /// `owner-fanout` only: events carrying another user's `user_id`.
    pub leaks: u64,
    /// `owner-fanout` only: events without a string `user_id` (should never reach a
    /// non-admin on an owner-read collection, so they also count as leaks).
    pub unowned: u64,
    /// The server closed the socket (or the stream ended) before the run's end.
    pub closed: bool,
    /// The read error that ended the socket, if any.
    pub error: Option<String>,
}

impl RxStats {
    /// Records a sampled event's latency from its send timestamp, both in microseconds on
    /// the run's clock.
    #[inline]
    pub fn sample(&mut self, sent_us: Option<u64>, now_us: u64) {
        match sent_us {
            Some(sent) => {
                let lat = now_us.saturating_sub(sent);
                self.samples.push(u32::try_from(lat).unwrap_or(u32::MAX));
            }
            None => self.unstamped += 1,
        }
    }
}

/// All sockets of one role, merged.
#[derive(Debug, Default)]
pub struct RxSummary {
    pub connections: usize,
    pub frames: u64,
    pub events: u64,
    pub samples: usize,
    pub unstamped: u64,
    pub own: u64,
    pub leaks: u64,
    pub unowned: u64,
    /// Sockets that were closed or failed before the run's end.
    pub disconnects: u64,
    pub error_messages: Vec<String>,
    pub latency_us: Percentiles,
}

impl RxSummary {
    pub fn merge<'a>(stats: impl IntoIterator<Item = &'a RxStats>) -> RxSummary {
        let mut s = RxSummary::default();
        let mut all = Vec::new();
        for r in stats {
            s.connections += 1;
            s.frames += r.frames;
            s.events += r.events;
            s.unstamped += r.unstamped;
            s.own += r.own;
            s.leaks += r.leaks;
            s.unowned += r.unowned;
            if r.closed || r.error.is_some() {
                s.disconnects += 1;
            }
            if let Some(m) = &r.error
                && s.error_messages.len() < MAX_ERROR_MESSAGES
                && !s.error_messages.contains(m)
            {
                s.error_messages.push(m.clone());
            }
            all.extend_from_slice(&r.samples);
        }
        all.sort_unstable();
        s.samples = all.len();
        s.latency_us = Percentiles::from_sorted(&all);
        s
    }
}

/// Percentiles as `{"p50":ms,…}`, matching [`crate::stats::Report::json`].
pub fn latency_json(l: Percentiles) -> Value {
    let ms = |us: u32| f64::from(us) / 1000.0;
    json!({"p50": ms(l.p50), "p90": ms(l.p90), "p99": ms(l.p99), "max": ms(l.max)})
}

/// Percentiles as `p50 … p90 … p99 … max …` in milliseconds.
pub fn latency_human(l: Percentiles) -> String {
    let ms = |us: u32| format!("{:.3}", f64::from(us) / 1000.0);
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max)
    )
}

/// `part / whole` in percent with two decimals; 0 when nothing was expected.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 10_000.0).round() / 100.0
}

/// One decimal, for rates.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_counts_and_pools_samples() {
        let mut a = RxStats {
            frames: 12,
            events: 10,
            ..RxStats::default()
        };
        a.sample(Some(100), 400); // 300 µs
        a.sample(None, 500);
        a.sample(Some(1_000), 900); // clock skew clamps to 0
        let mut b = RxStats {
            frames: 6,
            events: 5,
            own: 4,
            leaks: 1,
            closed: true,
            error: Some("reset".into()),
            ..RxStats::default()
        };
        b.sample(Some(0), 100);
        let c = RxStats {
            error: Some("reset".into()),
            unowned: 2,
            ..RxStats::default()
        };
        let s = RxSummary::merge([&a, &b, &c]);
        assert_eq!(s.connections, 3);
        assert_eq!((s.frames, s.events), (18, 15));
        assert_eq!((s.own, s.leaks, s.unowned), (4, 1, 2));
        assert_eq!(s.unstamped, 1);
        assert_eq!(s.samples, 3);
        assert_eq!(s.disconnects, 2);
        assert_eq!(s.error_messages, vec!["reset".to_owned()]);
        assert_eq!(s.latency_us.max, 300);
        assert_eq!(s.latency_us.p50, 100);
    }

    #[test]
    fn huge_latency_saturates() {
        let mut a = RxStats::default();
        a.sample(Some(0), u64::MAX);
        assert_eq!(a.samples, vec![u32::MAX]);
    }

    #[test]
    fn percent_rounds_and_handles_zero() {
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(percent(10, 10), 100.0);
    }
}
