//! `churn`: a `fanout` run while C extra connections keep subscribing and unsubscribing.
//! Subscription changes and event delivery touch the same per-channel subscriber registry,
//! so this shows whether churn stalls or loses deliveries for the stable subscribers.
//!
//! By default the churners toggle the fan-out channel itself, which is the contended case;
//! the events they receive while subscribed are counted separately, never as deliveries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RealtimeArgs;
use crate::fanout;
use crate::rt_stats;
use crate::stats::Percentiles;
use crate::ws::{self, Action, Endpoint, Ws};

/// Distinct error messages kept for the summary.
const MAX_ERROR_MESSAGES: usize = 3;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub fanout: fanout::Args,
    /// Extra connections that only subscribe and unsubscribe.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub churners: u64,
    /// Subscribe plus unsubscribe operations per second, over all churners together.
    #[arg(long, default_value_t = 500.0)]
    pub churn_rate: f64,
    /// Channel the churners toggle [default: the fan-out channel].
    #[arg(long)]
    pub churn_channel: Option<String>,
}

pub async fn run(args: &Args) -> Result<()> {
    if !(args.churn_rate.is_finite() && args.churn_rate > 0.0) {
        anyhow::bail!("--churn-rate must be a positive number of operations per second");
    }
    let f = &args.fanout;
    let outcome = fanout::execute("churn", &f.rt, &f.opts, Some(args)).await?;
    if f.rt.json {
        println!("{}", outcome.json());
    } else {
        print!("{}", outcome.human());
    }
    Ok(())
}

/// Opens the churn connections (not yet subscribed). Their indices continue after the
/// subscribers' so they spread over the source addresses the same way.
pub async fn connect(
    endpoint: &Arc<Endpoint>,
    args: &Args,
    first_index: usize,
    rt: &RealtimeArgs,
) -> Result<Vec<Ws>> {
    ws::run_bounded(
        args.churners as usize,
        rt.connect_concurrency as usize,
        "churn connection",
        |i| {
            let endpoint = endpoint.clone();
            async move { endpoint.connect_retry(first_index + i, None).await }
        },
    )
    .await
}

/// What one churner did.
#[derive(Debug, Default)]
pub struct Churned {
    /// Acknowledged subscribe + unsubscribe operations.
    pub ops: u64,
    /// Operations that failed (error frame, timeout or a broken socket).
    pub errors: u64,
    /// Event frames received while subscribed (not fan-out deliveries).
    pub events: u64,
    /// Request → acknowledgement time of each operation, in microseconds.
    pub ack_us: Vec<u32>,
    pub error: Option<String>,
}

/// Starts one task per churn socket. Operations are scheduled by deadline; each socket gets
/// an equal share of the rate and a staggered start so operations are evenly spread.
pub fn spawn(
    socks: Vec<Ws>,
    args: &Args,
    fanout_channel: &str,
    clock: Instant,
    end: Instant,
) -> JoinSet<Churned> {
    let channel: Arc<str> = Arc::from(
        args.churn_channel
            .clone()
            .unwrap_or_else(|| fanout_channel.to_owned())
            .as_str(),
    );
    let n = socks.len() as f64;
    let rate = args.churn_rate;
    let mut set = JoinSet::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let first = clock + Duration::from_secs_f64(i as f64 / rate);
        let interval = Duration::from_secs_f64(n / rate);
        set.spawn(churner(sock, channel.clone(), first, interval, end));
    }
    set
}

/// Alternates subscribe and unsubscribe on one socket until `end`. A failed operation is
/// counted and the socket keeps going unless it is broken, so one slow ack does not end the
/// churn; a dead socket stops its churner.
pub async fn churner(
    mut ws: Ws,
    channel: Arc<str>,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> Churned {
    let mut out = Churned::default();
    let mut action = Action::Subscribe;
    let mut k: u32 = 0;
    loop {
        let at = first + interval * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let t0 = Instant::now();
        match tokio::time::timeout_at(end, ws::channel_request(&mut ws, action, &channel)).await {
            Ok(Ok(skipped)) => {
                out.ops += 1;
                out.events += skipped;
                let us = t0.elapsed().as_micros();
                out.ack_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                action = match action {
                    Action::Subscribe => Action::Unsubscribe,
                    Action::Unsubscribe => Action::Subscribe,
                };
            }
            Ok(Err(e)) => {
                out.errors += 1;
                let msg = format!("{e:#}");
                let broken = msg.contains("closed") || msg.contains("WebSocket read");
                out.error.get_or_insert(msg);
                if broken {
                    break;
                }
            }
            // The run ended while waiting for the ack: neither a success nor a failure.
            Err(_) => break,
        }
        k += 1;
    }
    out
}

/// All churners, merged.
#[derive(Debug, Default)]
pub struct ChurnSummary {
    pub connections: usize,
    pub channel_ops: u64,
    pub errors: u64,
    pub events: u64,
    pub ack_us: Percentiles,
    pub error_messages: Vec<String>,
}

pub async fn join(set: JoinSet<Churned>) -> Result<ChurnSummary> {
    let all = fanout::join_all(set, "churner").await?;
    Ok(ChurnSummary::merge(&all))
}

impl ChurnSummary {
    pub fn merge(all: &[Churned]) -> ChurnSummary {
        let mut s = ChurnSummary {
            connections: all.len(),
            ..ChurnSummary::default()
        };
        let mut acks = Vec::new();
        for c in all {
            s.channel_ops += c.ops;
            s.errors += c.errors;
            s.events += c.events;
            acks.extend_from_slice(&c.ack_us);
            if let Some(m) = &c.error
                && s.error_messages.len() < MAX_ERROR_MESSAGES
                && !s.error_messages.contains(m)
            {
                s.error_messages.push(m.clone());
            }
        }
        acks.sort_unstable();
        s.ack_us = Percentiles::from_sorted(&acks);
        s
    }

    pub fn json(&self) -> Value {
        json!({
            "connections": self.connections,
            "ops": self.channel_ops,
            "errors": self.errors,
            "errorMessages": self.error_messages,
            "eventsWhileSubscribed": self.events,
            "ackLatencyMs": rt_stats::latency_json(self.ack_us),
        })
    }

    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "churn        {} connections, {} ops done ({} errors), {} events while subscribed",
            self.connections, self.channel_ops, self.errors, self.events
        );
        let _ = writeln!(out, "churn ack ms {}", rt_stats::latency_human(self.ack_us));
        for m in &self.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Target;
    use crate::mock::{Mock, MockPlan};

    /// Churners against the mock: every operation is acknowledged, and subscribe and
    /// unsubscribe alternate (the mock emits events on subscribe, which must be counted as
    /// churner events, not errors).
    #[tokio::test]
    async fn churners_toggle_and_count_ops() {
        let mock = Mock::start(MockPlan {
            events_per_subscribe: 3,
            ..MockPlan::default()
        })
        .await;
        let target = Target::resolve(&mock.url()).await.unwrap();
        let endpoint = Arc::new(Endpoint::new(&target, 2, ws::READ_BUFFER));
        let args = Args {
            fanout: fanout::Args {
                rt: RealtimeArgs {
                    url: mock.url(),
                    duration: 1,
                    threads: 1,
                    source_ips: 2,
                    connect_concurrency: 4,
                    spin: false,
                    json: true,
                },
                opts: fanout::Opts {
                    collection: "bench".into(),
                    channel: None,
                    subscribers: 1,
                    rate: 1.0,
                    publishers: 1,
                    ts_field: "n".into(),
                    sample: None,
                    grace: 0.0,
                    publish_url: None,
                    also_urls: Vec::new(),
                },
            },
            churners: 4,
            churn_rate: 200.0,
            churn_channel: None,
        };
        let socks = connect(&endpoint, &args, 0, &args.fanout.rt).await.unwrap();
        let clock = Instant::now();
        let set = spawn(
            socks,
            &args,
            "bench.*",
            clock,
            clock + Duration::from_millis(500),
        );
        let s = join(set).await.unwrap();
        assert_eq!(s.errors, 0, "{:?}", s.error_messages);
        // 200 ops/s for 0.5 s; allow for scheduling slack on a busy test machine.
        assert!((80..=100).contains(&s.channel_ops), "{}", s.channel_ops);
        // Subscribes are every other op; each is followed by 3 events, seen by the next
        // unsubscribe (or the loop's end).
        assert!(s.events >= 3 * (s.channel_ops / 2 - 4), "{}", s.events);
        assert!(s.ack_us.max > 0);
    }
}

#[cfg(test)]
mod end_to_end {
    use super::*;
    use crate::mock::{Mock, Owners};

    /// `churn` against the full mock: fan-out stays complete and churn operations happen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_stays_complete_under_churn() {
        let mock = Mock::start_full(Owners::Filter).await;
        let args = Args {
            fanout: fanout::Args {
                rt: RealtimeArgs {
                    url: mock.url(),
                    duration: 1,
                    threads: 1,
                    source_ips: 2,
                    connect_concurrency: 8,
                    spin: false,
                    json: true,
                },
                opts: fanout::Opts {
                    collection: "bench".into(),
                    channel: None,
                    subscribers: 5,
                    rate: 100.0,
                    publishers: 1,
                    ts_field: "n".into(),
                    sample: None,
                    grace: 0.5,
                    publish_url: None,
                    also_urls: Vec::new(),
                },
            },
            churners: 5,
            churn_rate: 100.0,
            churn_channel: None,
        };
        let o = fanout::execute("churn", &args.fanout.rt, &args.fanout.opts, Some(&args))
            .await
            .unwrap();
        assert_eq!(o.rx.events, o.expected());
        let c = o.churn.as_ref().expect("churn summary");
        assert_eq!(c.errors, 0, "{:?}", c.error_messages);
        assert!((80..=100).contains(&c.channel_ops), "{}", c.channel_ops);
        assert!(o.json()["churn"]["ops"].as_u64().unwrap() > 0);
        run(&args).await.unwrap();
    }
}
