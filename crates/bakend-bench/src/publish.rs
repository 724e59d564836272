//! The event source of the realtime scenarios: keep-alive HTTP clients that create records
//! on a fixed schedule. Each record carries its send time, so the receiving sockets can
//! measure POST-to-frame latency without any per-event bookkeeping on the sending side.
//!
//! Sends are scheduled by deadline (slot `k` at `clock + k / rate`), not by sleeping a
//! fixed interval after each response, so the offered rate does not drift with the server's
//! response time and events are evenly spread rather than sent in bursts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::StatusCode;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{KeepAlive, RequestTemplate};
use crate::stats::Recorder;

/// A send that starts later than this after its slot counts as late: the publisher could
/// not keep up and the offered rate was lower than asked.
const LATE_AFTER: Duration = Duration::from_millis(1);

/// When one publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Time zero of the run; send timestamps are microseconds since this instant.
    pub clock: Instant,
    /// Total events per second over all publishers.
    pub rate: f64,
    /// This publisher's first slot; it then takes every `stride`-th slot, so publishers
    /// interleave evenly.
    pub first_slot: u64,
    pub stride: u64,
    /// No send starts at or after this instant.
    pub end: Instant,
    /// A response still outstanding at this instant is abandoned, keeping the run bounded.
    pub give_up: Instant,
}

impl Schedule {
    fn slot(&self, k: u64) -> Instant {
        self.clock + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// What one publisher did.
pub struct Published {
    /// POST outcomes and response latency (201 is success).
    pub rec: Recorder,
    /// Records created (201 responses).
    pub created: u64,
    /// Sends that started more than [`LATE_AFTER`] after their slot.
    pub late: u64,
    pub reconnects: u64,
}

/// Builds the JSON body `{"title":"bench","<field>":<sent_us>}`.
pub fn body(ts_field: &str, sent_us: u64) -> Bytes {
    Bytes::from(format!(r#"{{"title":"bench","{ts_field}":{sent_us}}}"#))
}

/// Sends on `schedule` until its end, each POST stamped with its send time. `created` is the
/// status the server answers a successful create with (`bak`: 201; PocketBase: 200).
pub async fn publish(
    mut conn: KeepAlive,
    template: RequestTemplate,
    ts_field: Arc<str>,
    schedule: Schedule,
    created: StatusCode,
) -> Published {
    let mut out = Published {
        rec: Recorder::new(created.as_u16()),
        created: 0,
        late: 0,
        reconnects: 0,
    };
    let mut k = schedule.first_slot;
    loop {
        let slot = schedule.slot(k);
        if slot >= schedule.end {
            break;
        }
        tokio::time::sleep_until(slot).await;
        let sent = Instant::now();
        if sent > slot + LATE_AFTER {
            out.late += 1;
        }
        let sent_us = sent.saturating_duration_since(schedule.clock).as_micros() as u64;
        let mut req = template.clone();
        req.json_body = Some(body(&ts_field, sent_us));
        match tokio::time::timeout_at(schedule.give_up, conn.send(&req)).await {
            Ok(Ok((status, _))) => {
                out.rec.response(status.as_u16(), sent.elapsed());
                if status == created {
                    out.created += 1;
                }
            }
            Ok(Err(e)) => out.rec.network_error(&e),
            Err(_) => {
                out.rec
                    .network_error(&anyhow::anyhow!("no response before the run ended"));
                break;
            }
        }
        k += schedule.stride;
    }
    out.reconnects = conn.reconnects;
    out
}

/// Starts one publisher per connection, sharing `schedule`'s rate and window: publisher `i`
/// takes slots `i`, `i + n`, `i + 2n`, … so together they send evenly at `schedule.rate`.
pub fn spawn_all(
    conns: Vec<KeepAlive>,
    template: &RequestTemplate,
    ts_field: &str,
    schedule: Schedule,
    created: StatusCode,
) -> JoinSet<Published> {
    let ts_field: Arc<str> = Arc::from(ts_field);
    let stride = conns.len() as u64;
    let mut set = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let schedule = Schedule {
            first_slot: i as u64,
            stride,
            ..schedule
        };
        set.spawn(publish(
            conn,
            template.clone(),
            ts_field.clone(),
            schedule,
            created,
        ));
    }
    set
}

/// Creates one record before the run so a collection without the timestamp field, or a
/// rejected body, fails with the server's own message instead of a run of 400s. `created` as
/// for [`publish`].
pub async fn preflight(
    conn: &mut KeepAlive,
    template: &RequestTemplate,
    ts_field: &str,
    origin: &str,
    created: StatusCode,
) -> Result<()> {
    let mut req = template.clone();
    req.json_body = Some(body(ts_field, 0));
    let url = format!("{origin}{}", template.uri.path());
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), conn.fetch(&req))
        .await
        .with_context(|| format!("POST {url}: no response within 5s"))?
        .with_context(|| format!("POST {url} failed"))?;
    if status != created {
        let snippet = crate::ws::snippet(&body);
        bail!(
            "POST {url} returned {status}, expected {} (does the collection have an integer \
             field {ts_field:?} and a string field \"title\", and allow this caller to create?): {snippet}",
            created.as_u16()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_interleave_publishers() {
        let clock = Instant::now();
        let s = Schedule {
            clock,
            rate: 1000.0,
            first_slot: 1,
            stride: 4,
            end: clock + Duration::from_secs(1),
            give_up: clock + Duration::from_secs(2),
        };
        assert_eq!(s.slot(0), clock);
        assert_eq!(s.slot(5) - clock, Duration::from_millis(5));
        assert_eq!(&body("n", 42)[..], br#"{"title":"bench","n":42}"#);
    }
}
