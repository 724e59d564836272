//! `fanout`: S WebSocket subscribers on one channel while publishers create records at a
//! fixed rate. Every record should reach every subscriber, so the run checks completeness
//! (deliveries received versus sent × S) as well as how long a delivery takes, which is the
//! realtime path's cost: event bus, permission filter, per-socket serialisation and send.
//!
//! Latency is POST sent → event frame processed by the subscriber. The POST body carries
//! its send time (microseconds since the run's start) in an integer field the server echoes
//! back in the event payload; subscribers read it back by scanning the frame's bytes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::RealtimeArgs;
use crate::churn::{self, ChurnSummary};
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::publish::{self, Published, Schedule};
use crate::rt_stats::{self, RxStats, RxSummary};
use crate::stats::Report;
use crate::ws::{self, Action, Endpoint, FieldScanner, Ws};

/// Samples kept when `--sample` is not given: enough for a stable p99.9, small enough that
/// sorting them after the run is instant.
pub const TARGET_SAMPLES: u64 = 200_000;

/// Head start between the end of the setup and the first send, so every task is parked and
/// waiting when the clock starts.
const LEAD: Duration = Duration::from_millis(50);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rt: RealtimeArgs,
    #[command(flatten)]
    pub opts: Opts,
}

/// The fan-out knobs, shared with `churn`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Collection to create records in; it must exist, allow anonymous create and list, and
    /// have a string field `title` and the integer field named by `--ts-field`.
    #[arg(long, default_value = "bench")]
    pub collection: String,
    /// Channel the subscribers subscribe to [default: <collection>.*].
    #[arg(long)]
    pub channel: Option<String>,
    /// WebSocket subscribers, each on its own connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
    /// Events (created records) per second, over all publishers together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Keep-alive HTTP connections that create the records; each takes an equal share of the
    /// rate. Raise it if the summary reports late sends.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Integer field of the collection that carries the send timestamp (µs since the start).
    #[arg(long, default_value = "n")]
    pub ts_field: String,
    /// Take a latency sample from every Nth event per connection [default: so that at most
    /// ~200k samples are kept].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Seconds to keep receiving after the last send, for deliveries still in flight.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Create the records through this server instead of `--url` (several servers on one
    /// PostgreSQL database: subscribers on one, writes through another).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// More servers (nodes of a cluster) to spread the subscribers over, round-robin with
    /// `--url` (repeat the flag): aggregate fan-out across nodes.
    #[arg(long = "also-url")]
    pub also_urls: Vec<String>,
}

impl Opts {
    pub fn validate(&self) -> Result<()> {
        ws::check_name("--collection", &self.collection)?;
        ws::check_name("--ts-field", &self.ts_field)?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("--rate must be a positive number of events per second");
        }
        if !(self.grace.is_finite() && self.grace >= 0.0) {
            bail!("--grace must be a non-negative number of seconds");
        }
        Ok(())
    }

    pub fn channel(&self) -> String {
        self.channel
            .clone()
            .unwrap_or_else(|| format!("{}.*", self.collection))
    }
}

/// Picks the sampling stride so that `expected` deliveries yield at most ~`TARGET_SAMPLES`.
pub fn sample_every(explicit: Option<u64>, expected: f64) -> u64 {
    explicit.unwrap_or_else(|| ((expected / TARGET_SAMPLES as f64).ceil() as u64).max(1))
}

/// Reads one subscriber socket until `stop`, counting every frame and sampling the latency
/// of every `every`-th event. Sockets start at different offsets in the stride, so samples
/// are spread over all events instead of all landing on the same ones.
pub async fn receive(
    mut ws: Ws,
    index: usize,
    every: u64,
    scanner: Arc<FieldScanner>,
    clock: Instant,
    stop: Instant,
) -> RxStats {
    let mut st = RxStats::default();
    let mut sampler = Sampler::new(index, every);
    read_events(&mut ws, &mut st, stop, |frame, st| {
        if sampler.due() {
            st.sample(scanner.u64(frame), clock.elapsed().as_micros() as u64);
        }
    })
    .await;
    st
}

/// Picks every `every`-th event of a socket for a latency sample, starting at an offset that
/// depends on the socket, so samples spread over all events.
pub struct Sampler {
    every: u64,
    countdown: u64,
}

impl Sampler {
    pub fn new(index: usize, every: u64) -> Sampler {
        Sampler {
            every,
            countdown: index as u64 % every + 1,
        }
    }

    /// Whether this event is one to sample.
    pub fn due(&mut self) -> bool {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = self.every;
            true
        } else {
            false
        }
    }
}

/// Reads `ws` until `stop`, counting frames and event frames in `st` and handing each event
/// frame to `on_event`; notes in `st` how the socket ended (closed, or the read error).
pub async fn read_events(
    ws: &mut Ws,
    st: &mut RxStats,
    stop: Instant,
    mut on_event: impl FnMut(&[u8], &mut RxStats),
) {
    let read = async {
        while let Some(msg) = ws.next().await {
            let frame: &[u8] = match &msg {
                Ok(Message::Text(t)) => t.as_bytes(),
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    st.error = Some(format!("WebSocket read: {e}"));
                    return;
                }
            };
            st.frames += 1;
            if !ws::is_event(frame) {
                continue;
            }
            st.events += 1;
            on_event(frame, st);
        }
        st.closed = true;
    };
    let _ = tokio::time::timeout_at(stop, read).await;
}

/// Everything a fan-out run measured; `churn` adds its own part.
pub struct Outcome {
    pub scenario: &'static str,
    pub channel: String,
    pub subscribers: u32,
    pub publishers: u32,
    pub rate: f64,
    pub duration: Duration,
    pub grace: Duration,
    pub sample_every: u64,
    pub source_ips: usize,
    pub posts: Report,
    pub created: u64,
    pub late: u64,
    pub rx: RxSummary,
    pub churn: Option<ChurnSummary>,
}

impl Outcome {
    pub fn expected(&self) -> u64 {
        self.created * u64::from(self.subscribers)
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "scenario": self.scenario,
            "channel": self.channel,
            "subscribers": self.subscribers,
            "publishers": self.publishers,
            "targetRate": self.rate,
            "durationSecs": self.duration.as_secs_f64(),
            "graceSecs": self.grace.as_secs_f64(),
            "sourceIps": self.source_ips,
            "eventsSent": self.created,
            "postErrors": self.posts.errors + self.posts.network_errors,
            "postStatuses": self.posts.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "postErrorMessages": self.posts.error_messages,
            "lateSends": self.late,
            "postReconnects": self.posts.reconnects,
            "postLatencyMs": rt_stats::latency_json(self.posts.latency_us),
            "deliveriesExpected": self.expected(),
            "deliveriesReceived": self.rx.events,
            "completenessPct": rt_stats::percent(self.rx.events, self.expected()),
            "deliveriesPerSec": rt_stats::round1(self.rx.events as f64 / self.duration.as_secs_f64()),
            "latencyMs": rt_stats::latency_json(self.rx.latency_us),
            "sampleEvery": self.sample_every,
            "samples": self.rx.samples,
            "unstamped": self.rx.unstamped,
            "frames": self.rx.frames,
            "disconnects": self.rx.disconnects,
            "disconnectErrors": self.rx.error_messages,
        });
        if let (Some(c), Value::Object(map)) = (&self.churn, &mut v) {
            map.insert("churn".into(), c.json());
        }
        v
    }

    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "scenario     {}", self.scenario);
        let _ = writeln!(
            out,
            "subscribers  {} on {:?} ({} source IPs)",
            self.subscribers, self.channel, self.source_ips
        );
        let _ = writeln!(
            out,
            "publishers   {} at {} events/s for {:.3} s (+{:.3} s grace)",
            self.publishers,
            self.rate,
            self.duration.as_secs_f64(),
            self.grace.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "events sent  {} (POST errors {}, late sends {}, POST {})",
            self.created,
            self.posts.errors + self.posts.network_errors,
            self.late,
            rt_stats::latency_human(self.posts.latency_us)
        );
        for m in &self.posts.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        let _ = writeln!(out, "expected     {} deliveries", self.expected());
        let _ = writeln!(
            out,
            "received     {} deliveries ({:.2} % complete, {:.1}/s)",
            self.rx.events,
            rt_stats::percent(self.rx.events, self.expected()),
            self.rx.events as f64 / self.duration.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "latency ms   {} ({} samples, every {}th event; {} unstamped)",
            rt_stats::latency_human(self.rx.latency_us),
            self.rx.samples,
            self.sample_every,
            self.rx.unstamped
        );
        let _ = writeln!(out, "disconnects  {}", self.rx.disconnects);
        for m in &self.rx.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        if let Some(c) = &self.churn {
            out.push_str(&c.human());
        }
        out
    }
}

pub async fn run(args: &Args) -> Result<()> {
    let outcome = execute("fanout", &args.rt, &args.opts, None).await?;
    if args.rt.json {
        println!("{}", outcome.json());
    } else {
        print!("{}", outcome.human());
    }
    Ok(())
}

/// The fan-out run, optionally with churning connections alongside (`churn`).
pub async fn execute(
    scenario: &'static str,
    rt: &RealtimeArgs,
    opts: &Opts,
    churn_args: Option<&churn::Args>,
) -> Result<Outcome> {
    opts.validate()?;
    let churners = churn_args.map_or(0, |c| c.churners);
    ws::ensure_fd_capacity(u64::from(opts.subscribers) + u64::from(opts.publishers) + churners)?;
    let target = Target::resolve(&rt.url).await?;
    crate::rest_create::check_server(&target, &opts.collection).await?;
    let publish_target = match &opts.publish_url {
        Some(url) => Target::resolve(url).await?,
        None => Target::resolve(&rt.url).await?,
    };
    let template = RequestTemplate {
        method: Method::POST,
        uri: publish_target.path_uri(&format!("/api/{}", opts.collection))?,
        host: publish_target.host.clone(),
        json_body: None,
        authorization: None,
    };
    // Before anyone subscribes, so the check's own event reaches nobody.
    let mut pubs = Vec::with_capacity(opts.publishers as usize);
    for i in 0..opts.publishers {
        let mut c = KeepAlive::new(publish_target.addr);
        c.connect()
            .await
            .with_context(|| format!("opening publisher {} of {}", i + 1, opts.publishers))?;
        if i == 0 {
            publish::preflight(
                &mut c,
                &template,
                &opts.ts_field,
                &publish_target.origin,
                StatusCode::CREATED,
            )
            .await?;
        }
        pubs.push(c);
    }

    let endpoint = Arc::new(Endpoint::new(&target, rt.source_ips, ws::READ_BUFFER));
    let channel = opts.channel();
    // Subscribers spread over `--url` and every `--also-url`, as evenly as they divide.
    let mut endpoints = vec![endpoint.clone()];
    for url in &opts.also_urls {
        let t = Target::resolve(url).await?;
        endpoints.push(Arc::new(Endpoint::new(&t, rt.source_ips, ws::READ_BUFFER)));
    }
    let total = opts.subscribers as usize;
    let mut subs = Vec::with_capacity(total);
    for (k, e) in endpoints.iter().enumerate() {
        let n = total / endpoints.len() + usize::from(k < total % endpoints.len());
        if n > 0 {
            subs.extend(connect_subscribers(e, n, &channel, rt).await?);
        }
    }
    let churn_socks = match churn_args {
        Some(c) => churn::connect(&endpoint, c, opts.subscribers as usize, rt).await?,
        None => Vec::new(),
    };

    let duration = Duration::from_secs(rt.duration);
    let grace = Duration::from_secs_f64(opts.grace);
    let every = sample_every(
        opts.sample,
        opts.rate * duration.as_secs_f64() * f64::from(opts.subscribers),
    );
    let clock = Instant::now() + LEAD;
    let end = clock + duration;
    let stop = end + grace;

    let scanner = Arc::new(FieldScanner::new(&opts.ts_field));
    let mut receivers = JoinSet::new();
    for (i, sock) in subs.into_iter().enumerate() {
        receivers.spawn(receive(sock, i, every, scanner.clone(), clock, stop));
    }
    let churn_tasks = churn_args.map(|c| churn::spawn(churn_socks, c, &channel, clock, end));
    let schedule = Schedule {
        clock,
        rate: opts.rate,
        first_slot: 0,
        stride: 1,
        end,
        give_up: stop,
    };
    let publishers = publish::spawn_all(
        pubs,
        &template,
        &opts.ts_field,
        schedule,
        StatusCode::CREATED,
    );

    let published = join_all(publishers, "publisher").await?;
    let received = join_all(receivers, "subscriber").await?;
    let churn = match churn_tasks {
        Some(t) => Some(churn::join(t).await?),
        None => None,
    };
    let (posts, created, late) = merge_published(scenario, duration, published);
    Ok(Outcome {
        scenario,
        channel,
        subscribers: opts.subscribers,
        publishers: opts.publishers,
        rate: opts.rate,
        duration,
        grace,
        sample_every: every,
        source_ips: endpoint.source_ip_count(),
        posts,
        created,
        late,
        rx: RxSummary::merge(&received),
        churn,
    })
}

/// Opens and subscribes `n` sockets. The first one is done alone so that a server without
/// the endpoint fails with one clear message rather than hundreds of parallel ones.
pub async fn connect_subscribers(
    endpoint: &Arc<Endpoint>,
    n: usize,
    channel: &str,
    rt: &RealtimeArgs,
) -> Result<Vec<Ws>> {
    let mut first = endpoint
        .connect(0, None)
        .await
        .with_context(|| format!("realtime endpoint {} is not usable", endpoint.url))?;
    ws::channel_request(&mut first, Action::Subscribe, channel).await?;
    let channel: Arc<str> = Arc::from(channel);
    let rest = ws::run_bounded(n - 1, rt.connect_concurrency as usize, "subscriber", |i| {
        let endpoint = endpoint.clone();
        let channel = channel.clone();
        async move {
            let mut sock = endpoint.connect_retry(i + 1, None).await?;
            ws::channel_request(&mut sock, Action::Subscribe, &channel).await?;
            Ok(sock)
        }
    })
    .await?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    all.extend(rest);
    Ok(all)
}

pub async fn join_all<T: 'static>(mut set: JoinSet<T>, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(j) = set.join_next().await {
        out.push(j.with_context(|| format!("a {what} task panicked"))?);
    }
    Ok(out)
}

/// POST outcomes over all publishers, plus records created and late sends.
pub fn merge_published(
    scenario: &'static str,
    duration: Duration,
    published: Vec<Published>,
) -> (Report, u64, u64) {
    let created = published.iter().map(|p| p.created).sum();
    let late = published.iter().map(|p| p.late).sum();
    let reconnects = published.iter().map(|p| p.reconnects).sum();
    let recs = published.into_iter().map(|p| p.rec).collect();
    (
        Report::merge(scenario, duration, Duration::ZERO, recs, reconnects),
        created,
        late,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Mock, MockPlan, Owners};

    #[test]
    fn default_sampling_caps_samples() {
        assert_eq!(sample_every(None, 1_000.0), 1);
        assert_eq!(sample_every(None, 200_000.0), 1);
        assert_eq!(sample_every(None, 200_001.0), 2);
        assert_eq!(sample_every(None, 100.0 * 60.0 * 10_000.0), 300);
        assert_eq!(sample_every(Some(7), 1e12), 7);
    }

    fn rt(url: String) -> RealtimeArgs {
        RealtimeArgs {
            url,
            duration: 1,
            threads: 1,
            source_ips: 4,
            connect_concurrency: 8,
            spin: false,
            json: true,
        }
    }

    /// End to end against the mock server: real handshakes, real subscribe acks, and event
    /// frames stamped on the shared clock; every frame must be counted and the sampled
    /// latencies must come out of the frames' timestamps.
    #[tokio::test]
    async fn counts_every_delivery_and_samples_latency() {
        let clock = Instant::now();
        let mock = Mock::start(MockPlan {
            clock,
            events_per_subscribe: 1_000,
            ..MockPlan::default()
        })
        .await;
        let target = Target::resolve(&mock.url()).await.unwrap();
        let endpoint = Arc::new(Endpoint::new(&target, 4, ws::READ_BUFFER));
        let subs = connect_subscribers(&endpoint, 20, "bench.*", &rt(mock.url()))
            .await
            .unwrap();
        let scanner = Arc::new(FieldScanner::new("n"));
        let stop = Instant::now() + Duration::from_millis(1500);
        let mut set = JoinSet::new();
        for (i, s) in subs.into_iter().enumerate() {
            set.spawn(receive(s, i, 10, scanner.clone(), clock, stop));
        }
        let stats = join_all(set, "subscriber").await.unwrap();
        let rx = RxSummary::merge(&stats);
        assert_eq!(rx.connections, 20);
        assert_eq!(rx.events, 20_000);
        // The `subscribed` acks were consumed while subscribing, so frames == events.
        assert_eq!(rx.frames, 20_000);
        assert_eq!(rx.samples, 2_000);
        assert_eq!(rx.unstamped, 0);
        assert_eq!(rx.disconnects, 0);
        assert!(rx.latency_us.max < 5_000_000, "{:?}", rx.latency_us);
        assert!(rx.latency_us.p50 <= rx.latency_us.p99);
    }

    /// Frames without the timestamp field are still counted, and show up as unstamped.
    #[tokio::test]
    async fn missing_timestamp_is_reported_not_dropped() {
        let clock = Instant::now();
        let mock = Mock::start(MockPlan {
            clock,
            events_per_subscribe: 50,
            ts_field: "other",
            ..MockPlan::default()
        })
        .await;
        let target = Target::resolve(&mock.url()).await.unwrap();
        let endpoint = Arc::new(Endpoint::new(&target, 0, ws::READ_BUFFER));
        let subs = connect_subscribers(&endpoint, 2, "bench.*", &rt(mock.url()))
            .await
            .unwrap();
        let scanner = Arc::new(FieldScanner::new("n"));
        let stop = Instant::now() + Duration::from_millis(500);
        let mut stats = Vec::new();
        for (i, s) in subs.into_iter().enumerate() {
            stats.push(receive(s, i, 1, scanner.clone(), clock, stop).await);
        }
        let rx = RxSummary::merge(&stats);
        assert_eq!((rx.events, rx.samples, rx.unstamped), (100, 0, 100));
    }

    #[tokio::test]
    async fn rejected_subscription_is_a_clear_error() {
        let mock = Mock::start(MockPlan::default()).await;
        let target = Target::resolve(&mock.url()).await.unwrap();
        let endpoint = Arc::new(Endpoint::new(&target, 0, ws::READ_BUFFER));
        let err = connect_subscribers(&endpoint, 3, "*", &rt(mock.url()))
            .await
            .expect_err("the mock rejects `*`");
        let msg = format!("{err:#}");
        assert!(msg.contains("invalid_channel"), "{msg}");
    }

    fn opts(subscribers: u32, rate: f64) -> Opts {
        Opts {
            collection: "bench".into(),
            channel: None,
            subscribers,
            rate,
            publishers: 2,
            ts_field: "n".into(),
            sample: None,
            grace: 0.5,
            publish_url: None,
            also_urls: Vec::new(),
        }
    }

    /// The whole scenario against the full mock: publishers POST on schedule, the mock
    /// broadcasts each record, and every subscriber must receive every event with a
    /// timestamp the latency can be computed from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_to_end_complete_delivery() {
        let mock = Mock::start_full(Owners::Filter).await;
        let o = execute("fanout", &rt(mock.url()), &opts(10, 200.0), None)
            .await
            .unwrap();
        // 200/s for 1 s (the last slot may fall just past the end on a slow machine).
        assert!((195..=200).contains(&o.created), "{}", o.created);
        assert_eq!(o.posts.errors + o.posts.network_errors, 0);
        assert_eq!(o.expected(), o.created * 10);
        assert_eq!(o.rx.events, o.expected());
        assert_eq!(o.json()["completenessPct"], 100.0);
        assert_eq!(o.rx.samples as u64, o.rx.events);
        assert_eq!(o.rx.unstamped, 0);
        assert!(o.rx.latency_us.p50 > 0 && o.rx.latency_us.max < 1_000_000);
        assert!(o.human().contains("100.00 % complete"));
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast() {
        // Port 9 (discard) is essentially never listening on loopback.
        let args = Args {
            rt: rt("http://127.0.0.1:9".into()),
            opts: Opts {
                collection: "bench".into(),
                channel: None,
                subscribers: 2,
                rate: 10.0,
                publishers: 1,
                ts_field: "n".into(),
                sample: None,
                grace: 0.0,
                publish_url: None,
                also_urls: Vec::new(),
            },
        };
        let err = run(&args).await.expect_err("nothing listens on port 9");
        let msg = format!("{err:#}");
        assert!(msg.contains("is the server running?"), "{msg}");
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::mock::{Mock, MockPlan};

    /// Receive-side cost per frame, through tungstenite and the classification/sampling
    /// code (run in release:
    /// `cargo test --release -p bakend-bench -- --ignored --nocapture receive_cost`).
    /// The mock writes the frames from another thread and closes the socket after the last;
    /// the figure is an upper bound on the receiver's cost, as it cannot be faster than the
    /// frames arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing measurement, not a check"]
    async fn receive_cost() {
        const N: u32 = 1_000_000;
        for every in [1, 100] {
            let clock = Instant::now();
            let mock = Mock::start(MockPlan {
                clock,
                events_per_subscribe: N,
                close_after_burst: true,
                ..MockPlan::default()
            })
            .await;
            let target = Target::resolve(&mock.url()).await.unwrap();
            let endpoint = Endpoint::new(&target, 0, ws::READ_BUFFER);
            let mut sock = endpoint.connect(0, None).await.unwrap();
            ws::channel_request(&mut sock, Action::Subscribe, "bench.*")
                .await
                .unwrap();
            let t0 = std::time::Instant::now();
            let stop = Instant::now() + Duration::from_secs(60);
            let scanner = Arc::new(FieldScanner::new("n"));
            let st = tokio::spawn(receive(sock, 0, every, scanner, clock, stop))
                .await
                .unwrap();
            let took = t0.elapsed();
            assert_eq!(st.events, u64::from(N));
            println!(
                "sample every {every}: {} frames in {took:?} = {:.0} ns/frame",
                st.events,
                took.as_nanos() as f64 / st.events as f64
            );
        }
    }
}
