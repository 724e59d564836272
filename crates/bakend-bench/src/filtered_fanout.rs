//! `filtered-fanout` (issue 16): many filtered subscriptions on one collection, each with an
//! equality filter on a room, while publishers create records spread over the rooms.
//!
//! `--distinct N` subscriptions filter `room = 'r0'` … `room = 'r<N-1>'` (subscription ids
//! `r0` … `r<N-1>`), `--shared M` more all filter `room = '<shared room>'` (ids `s0` …
//! `s<M-1>`); they are packed `--per-conn` to a connection. A created record in room `rK`
//! must reach exactly subscription `rK`, one in the shared room exactly the M shared ones:
//! each frame's `subscription` and the record's `room` are checked, a frame whose record is
//! not in its subscription's room (or for an id the connection never made) is an extra, and
//! per subscription the frames beyond the records created in its room are extras and those
//! short of them misses.
//!
//! With `--server-pid`, the server's CPU time (utime + stime from `/proc/<pid>/stat`) over
//! the measured window, divided by the events sent, is the cost of one event's matching and
//! delivery: flat in N if subscriptions are indexed by their equality condition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::SinkExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::RealtimeArgs;
use crate::fanout::{Sampler, join_all, read_events, sample_every};
use crate::http::{KeepAlive, RequestTemplate, Target, connect_all};
use crate::rt_stats::{self, RxStats, RxSummary};
use crate::stats::{Recorder, Report};
use crate::ws::{self, Endpoint, FieldScanner, Ws};

const SCENARIO: &str = "filtered-fanout";
const LEAD: Duration = Duration::from_millis(50);
const LATE_AFTER: Duration = Duration::from_millis(1);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rt: RealtimeArgs,
    /// Collection with a string `title`, a string `room` and the integer `--ts-field`.
    #[arg(long, default_value = "rooms")]
    pub collection: String,
    /// Subscriptions with distinct filters `room = 'rK'`, one per room r0 … r<N-1>.
    #[arg(long, default_value_t = 100)]
    pub distinct: u32,
    /// Subscriptions that all have the filter `room = '<--shared-room>'`.
    #[arg(long, default_value_t = 0)]
    pub shared: u32,
    /// The shared subscriptions' room.
    #[arg(long, default_value = "lobby")]
    pub shared_room: String,
    /// Subscriptions per connection (the server's limit is 50 by default).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_conn: u32,
    /// Records created per second over all publishers.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Fraction of the records created in the shared room; the rest go round the distinct
    /// rooms in turn.
    #[arg(long, default_value_t = 0.1)]
    pub shared_fraction: f64,
    /// Keep-alive HTTP connections sending creates, taking turns.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Integer field that carries the send timestamp (µs since the start).
    #[arg(long, default_value = "n")]
    pub ts_field: String,
    /// Take a latency sample from every Nth delivery per connection [default: so that at
    /// most ~200k samples are kept].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Seconds to keep receiving after the last send.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// PID of the server, whose CPU time over the run is read from /proc/<pid>/stat.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Which room slot `k` of the send schedule writes to: every slot where the running count
/// `floor(k · fraction)` steps up goes to the shared room (index `distinct`), the others go
/// round the distinct rooms. Deterministic, so runs at different N send the same mix.
pub fn room_of(k: u64, distinct: u32, fraction: f64) -> usize {
    let shared_before = (k as f64 * fraction).floor() as u64;
    let shared_after = ((k + 1) as f64 * fraction).floor() as u64;
    if distinct == 0 || shared_after > shared_before {
        return distinct as usize;
    }
    ((k - shared_before) % u64::from(distinct)) as usize
}

/// The room index a subscription id (`rK` or `sI`) listens to, given `distinct` rooms.
pub fn room_of_subscription(id: &[u8], distinct: u32) -> Option<usize> {
    match id.split_first()? {
        (b'r', k) => parse_index(k).filter(|&k| k < distinct as usize),
        (b's', i) => parse_index(i).map(|_| distinct as usize),
        _ => None,
    }
}

/// The room index of a record's `room` value.
pub fn room_index(room: &[u8], distinct: u32, shared_room: &[u8]) -> Option<usize> {
    if room == shared_room {
        return Some(distinct as usize);
    }
    room.strip_prefix(b"r")
        .and_then(parse_index)
        .filter(|&k| k < distinct as usize)
}

fn parse_index(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat` (fields 14 and 15; the
/// command name, field 2, may contain spaces and parentheses, so fields are counted after
/// its last `)`).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After `)`: field 3 (state) is the first; utime is field 14, so skip 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time a process has used so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .with_context(|| format!("read {path} (is {pid} running?)"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("cannot parse {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

/// One subscription: its id and filter.
fn subscription(k: usize, distinct: u32, shared_room: &str) -> (String, String) {
    if k < distinct as usize {
        (format!("r{k}"), format!("room = 'r{k}'"))
    } else {
        (
            format!("s{}", k - distinct as usize),
            format!("room = '{shared_room}'"),
        )
    }
}

/// Sends every subscribe of a connection at once, then waits for all their acks.
async fn subscribe_all(ws: &mut Ws, channel: &str, subs: &[(String, String)]) -> Result<()> {
    for (id, filter) in subs {
        let msg = json!({"action": "subscribe", "channel": channel, "filter": filter, "id": id})
            .to_string();
        ws.feed(Message::text(msg))
            .await
            .with_context(|| format!("send subscribe {id:?}"))?;
    }
    ws.flush().await.context("send subscribes")?;
    let mut acked = 0;
    let wait = async {
        while acked < subs.len() {
            let frame = ws::next_data(ws).await?;
            if memchr::memmem::find(&frame, br#""type":"subscribed""#).is_some() {
                acked += 1;
            } else if memchr::memmem::find(&frame, br#""type":"error""#).is_some() {
                bail!("server refused a subscribe: {}", ws::snippet(&frame));
            }
        }
        Ok(())
    };
    tokio::time::timeout(ws::REPLY_TIMEOUT, wait)
        .await
        .with_context(|| format!("no {} subscribe acks within 10 s", subs.len()))?
}

/// What one connection saw: per subscription id (its room index, frames whose record is in
/// that room), plus frames that match none of its subscriptions.
#[derive(Debug, Default)]
pub struct ConnCounts {
    pub subs: HashMap<Bytes, (usize, u64)>,
    /// Frames for an id this connection did not make, or whose record is in another room
    /// than the subscription's filter.
    pub wrong: u64,
}

impl ConnCounts {
    fn new(subs: &[(String, String)], distinct: u32) -> ConnCounts {
        let subs = subs
            .iter()
            .filter_map(|(id, _)| {
                let room = room_of_subscription(id.as_bytes(), distinct)?;
                Some((Bytes::from(id.clone()), (room, 0)))
            })
            .collect();
        ConnCounts { subs, wrong: 0 }
    }

    /// Accounts one event frame given its `subscription` id and record `room` index.
    pub fn count(&mut self, sub: Option<&[u8]>, room: Option<usize>) {
        match sub.and_then(|s| self.subs.get_mut(s)) {
            Some((want, n)) if Some(*want) == room => *n += 1,
            _ => self.wrong += 1,
        }
    }

    /// (misses, extras) against the records created per room.
    pub fn settle(&self, created: &[u64]) -> (u64, u64) {
        let mut misses = 0;
        let mut extra = self.wrong;
        for &(room, got) in self.subs.values() {
            let want = created.get(room).copied().unwrap_or(0);
            misses += want.saturating_sub(got);
            extra += got.saturating_sub(want);
        }
        (misses, extra)
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut ws: Ws,
    mut counts: ConnCounts,
    index: usize,
    every: u64,
    scan: Arc<Scanners>,
    clock: Instant,
    stop: Instant,
) -> (RxStats, ConnCounts) {
    let mut st = RxStats::default();
    let mut sampler = Sampler::new(index, every);
    read_events(&mut ws, &mut st, stop, |frame, st| {
        let room = scan
            .room
            .str(frame)
            .and_then(|r| room_index(r, scan.distinct, &scan.shared_room));
        counts.count(scan.sub.str(frame), room);
        if sampler.due() {
            st.sample(scan.ts.u64(frame), clock.elapsed().as_micros() as u64);
        }
    })
    .await;
    (st, counts)
}

struct Scanners {
    ts: FieldScanner,
    sub: FieldScanner,
    room: FieldScanner,
    distinct: u32,
    shared_room: Vec<u8>,
}

/// One publisher's result: POST outcomes and records created per room index.
struct Pub {
    rec: Recorder,
    created: Vec<u64>,
    late: u64,
    reconnects: u64,
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    mut conn: KeepAlive,
    template: RequestTemplate,
    first: u64,
    stride: u64,
    args: Arc<PubArgs>,
    clock: Instant,
    end: Instant,
    give_up: Instant,
) -> Pub {
    let mut out = Pub {
        rec: Recorder::new(201),
        created: vec![0; args.distinct as usize + 1],
        late: 0,
        reconnects: 0,
    };
    let mut k = first;
    loop {
        let slot = clock + Duration::from_secs_f64(k as f64 / args.rate);
        if slot >= end {
            break;
        }
        tokio::time::sleep_until(slot).await;
        let sent = Instant::now();
        if sent > slot + LATE_AFTER {
            out.late += 1;
        }
        let sent_us = sent.saturating_duration_since(clock).as_micros() as u64;
        let room = room_of(k, args.distinct, args.fraction);
        let mut req = template.clone();
        req.json_body = Some(body(&args, room, sent_us));
        match tokio::time::timeout_at(give_up, conn.send(&req)).await {
            Ok(Ok((status, _))) => {
                out.rec.response(status.as_u16(), sent.elapsed());
                if status == StatusCode::CREATED {
                    out.created[room] += 1;
                }
            }
            Ok(Err(e)) => out.rec.network_error(&e),
            Err(_) => {
                out.rec
                    .network_error(&anyhow::anyhow!("no response before the run ended"));
                break;
            }
        }
        k += stride;
    }
    out.reconnects = conn.reconnects;
    out
}

struct PubArgs {
    distinct: u32,
    fraction: f64,
    rate: f64,
    ts_field: String,
    shared_room: String,
}

fn body(args: &PubArgs, room: usize, sent_us: u64) -> Bytes {
    let room = if room == args.distinct as usize {
        args.shared_room.clone()
    } else {
        format!("r{room}")
    };
    Bytes::from(format!(
        r#"{{"title":"bench","room":"{room}","{}":{sent_us}}}"#,
        args.ts_field
    ))
}

pub async fn run(args: &Args) -> Result<()> {
    let report = execute(args).await?;
    if args.rt.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn execute(args: &Args) -> Result<FilteredReport> {
    let rt = &args.rt;
    ws::check_name("--collection", &args.collection)?;
    ws::check_name("--ts-field", &args.ts_field)?;
    ws::check_name("--shared-room", &args.shared_room)?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of events per second");
    }
    if !(args.shared_fraction.is_finite() && (0.0..=1.0).contains(&args.shared_fraction)) {
        bail!("--shared-fraction must be between 0 and 1");
    }
    if args.distinct == 0 && args.shared_fraction < 1.0 {
        bail!("--distinct 0 needs --shared-fraction 1");
    }
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        bail!("--grace must be a non-negative number of seconds");
    }
    let total_subs = args.distinct as usize + args.shared as usize;
    if total_subs == 0 {
        bail!("no subscriptions: give --distinct and/or --shared");
    }
    let per_conn = args.per_conn as usize;
    let n_conns = total_subs.div_ceil(per_conn);
    ws::ensure_fd_capacity(n_conns as u64 + u64::from(args.publishers))?;
    let target = Target::resolve(&rt.url).await?;
    crate::rest_create::check_gets(&target, &[("/health".to_owned(), "is the server running?")])
        .await?;

    let template = RequestTemplate {
        method: Method::POST,
        uri: target.path_uri(&format!("/api/{}", args.collection))?,
        host: target.host.clone(),
        json_body: None,
        authorization: None,
    };
    let mut conns = connect_all(target.addr, args.publishers, "publisher").await?;
    // A record in a room nobody subscribes to, before any subscription.
    {
        let mut req = template.clone();
        req.json_body = Some(Bytes::from(format!(
            r#"{{"title":"bench","room":"preflight","{}":0}}"#,
            args.ts_field
        )));
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), conns[0].fetch(&req))
            .await
            .context("preflight POST: no response within 5 s")?
            .context("preflight POST failed")?;
        if status != StatusCode::CREATED {
            bail!(
                "POST /api/{} returned {status} (does it have string fields \"title\" and \
                 \"room\" and an integer field {:?}?): {}",
                args.collection,
                args.ts_field,
                ws::snippet(&body)
            );
        }
    }

    let endpoint = Arc::new(Endpoint::new(&target, rt.source_ips, ws::READ_BUFFER));
    let channel: Arc<str> = Arc::from(format!("{}.*", args.collection).as_str());
    let all: Vec<(String, String)> = (0..total_subs)
        .map(|k| subscription(k, args.distinct, &args.shared_room))
        .collect();
    let groups: Arc<Vec<Vec<(String, String)>>> =
        Arc::new(all.chunks(per_conn).map(<[_]>::to_vec).collect());
    let subscribe_started = std::time::Instant::now();
    let socks = ws::run_bounded(
        n_conns,
        rt.connect_concurrency as usize,
        "subscriber connection",
        |i| {
            let endpoint = endpoint.clone();
            let channel = channel.clone();
            let groups = groups.clone();
            async move {
                let mut sock = endpoint.connect_retry(i, None).await?;
                subscribe_all(&mut sock, &channel, &groups[i]).await?;
                Ok(sock)
            }
        },
    )
    .await?;
    let subscribe_secs = subscribe_started.elapsed().as_secs_f64();

    let duration = Duration::from_secs(rt.duration);
    let grace = Duration::from_secs_f64(args.grace);
    let sent_total = args.rate * duration.as_secs_f64();
    let expected_deliveries =
        sent_total * ((1.0 - args.shared_fraction) + args.shared_fraction * f64::from(args.shared));
    let every = sample_every(args.sample, expected_deliveries);
    let clock = Instant::now() + LEAD;
    let end = clock + duration;
    let stop = end + grace;

    let scan = Arc::new(Scanners {
        ts: FieldScanner::new(&args.ts_field),
        sub: FieldScanner::new("subscription"),
        room: FieldScanner::new("room"),
        distinct: args.distinct,
        shared_room: args.shared_room.as_bytes().to_vec(),
    });
    let mut receivers = JoinSet::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let counts = ConnCounts::new(&groups[i], args.distinct);
        let scan = scan.clone();
        receivers.spawn(receive(sock, counts, i, every, scan, clock, stop));
    }
    let cpu_before = args.server_pid.map(cpu_time).transpose()?;
    let window_start = std::time::Instant::now();
    let pub_args = Arc::new(PubArgs {
        distinct: args.distinct,
        fraction: args.shared_fraction,
        rate: args.rate,
        ts_field: args.ts_field.clone(),
        shared_room: args.shared_room.clone(),
    });
    let stride = conns.len() as u64;
    let mut publishers = JoinSet::new();
    for (i, conn) in conns.drain(..).enumerate() {
        publishers.spawn(publish(
            conn,
            template.clone(),
            i as u64,
            stride,
            pub_args.clone(),
            clock,
            end,
            stop,
        ));
    }
    let published = join_all(publishers, "publisher").await?;
    let received = join_all(receivers, "subscriber connection").await?;
    let cpu_after = args.server_pid.map(cpu_time).transpose()?;
    let window = window_start.elapsed();

    let mut created = vec![0u64; args.distinct as usize + 1];
    let mut late = 0;
    let mut reconnects = 0;
    let mut recs = Vec::new();
    for p in published {
        for (c, n) in created.iter_mut().zip(&p.created) {
            *c += n;
        }
        late += p.late;
        reconnects += p.reconnects;
        recs.push(p.rec);
    }
    let posts = Report::merge(SCENARIO, duration, Duration::ZERO, recs, reconnects);
    let (mut misses, mut extra, mut matched) = (0, 0, 0);
    for (_, c) in &received {
        let (m, e) = c.settle(&created);
        misses += m;
        extra += e;
        matched += c.subs.values().map(|&(_, n)| n).sum::<u64>();
    }
    let sent: u64 = created.iter().sum();
    let shared_sent = created[args.distinct as usize];
    let expected = (sent - shared_sent) + shared_sent * u64::from(args.shared);
    let rx = RxSummary::merge(received.iter().map(|(s, _)| s));
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(FilteredReport {
        channel: channel.to_string(),
        distinct: args.distinct,
        shared: args.shared,
        connections: n_conns,
        rate: args.rate,
        shared_fraction: args.shared_fraction,
        duration,
        grace,
        subscribe_secs,
        sample_every: every,
        posts,
        sent,
        shared_sent,
        late,
        expected,
        matched,
        misses,
        extra,
        rx,
        server_cpu,
        window,
    })
}

struct FilteredReport {
    channel: String,
    distinct: u32,
    shared: u32,
    connections: usize,
    rate: f64,
    shared_fraction: f64,
    duration: Duration,
    grace: Duration,
    subscribe_secs: f64,
    sample_every: u64,
    posts: Report,
    sent: u64,
    shared_sent: u64,
    late: u64,
    expected: u64,
    matched: u64,
    misses: u64,
    extra: u64,
    rx: RxSummary,
    server_cpu: Option<Duration>,
    window: Duration,
}

impl FilteredReport {
    /// Server CPU microseconds per event sent.
    fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.sent > 0).then(|| cpu.as_secs_f64() * 1e6 / self.sent as f64)
    }

    fn cpu_pct(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        let w = self.window.as_secs_f64();
        (w > 0.0).then(|| cpu.as_secs_f64() / w * 100.0)
    }

    fn json(&self) -> Value {
        json!({
            "scenario": SCENARIO,
            "channel": self.channel,
            "distinct": self.distinct,
            "shared": self.shared,
            "connections": self.connections,
            "targetRate": self.rate,
            "sharedFraction": self.shared_fraction,
            "durationSecs": self.duration.as_secs_f64(),
            "graceSecs": self.grace.as_secs_f64(),
            "subscribeSecs": rt_stats::round1(self.subscribe_secs),
            "eventsSent": self.sent,
            "sharedEventsSent": self.shared_sent,
            "postErrors": self.posts.errors + self.posts.network_errors,
            "postErrorMessages": self.posts.error_messages,
            "lateSends": self.late,
            "postLatencyMs": rt_stats::latency_json(self.posts.latency_us),
            "expectedDeliveries": self.expected,
            "deliveries": self.rx.events,
            "matched": self.matched,
            "misses": self.misses,
            "extra": self.extra,
            "completenessPct": rt_stats::percent(self.matched.min(self.expected), self.expected),
            "latencyMs": rt_stats::latency_json(self.rx.latency_us),
            "sampleEvery": self.sample_every,
            "samples": self.rx.samples,
            "unstamped": self.rx.unstamped,
            "disconnects": self.rx.disconnects,
            "disconnectErrors": self.rx.error_messages,
            "serverCpuSecs": self.server_cpu.map(|d| d.as_secs_f64()),
            "serverCpuPct": self.cpu_pct().map(rt_stats::round1),
            "serverCpuUsPerEvent": self.cpu_us_per_event().map(rt_stats::round1),
            "windowSecs": self.window.as_secs_f64(),
        })
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "scenario     {SCENARIO}");
        let _ = writeln!(
            out,
            "subs         {} distinct + {} shared on {:?} over {} connections (subscribed in {:.1} s)",
            self.distinct, self.shared, self.channel, self.connections, self.subscribe_secs
        );
        let _ = writeln!(
            out,
            "events sent  {} ({} shared; target {}/s for {:.3} s, +{:.3} s grace; POST errors {}, late sends {}, POST {})",
            self.sent,
            self.shared_sent,
            self.rate,
            self.duration.as_secs_f64(),
            self.grace.as_secs_f64(),
            self.posts.errors + self.posts.network_errors,
            self.late,
            rt_stats::latency_human(self.posts.latency_us)
        );
        for m in &self.posts.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        let _ = writeln!(
            out,
            "deliveries   {} received, {} expected, {} matched ({:.2} %); misses {}, extra {}",
            self.rx.events,
            self.expected,
            self.matched,
            rt_stats::percent(self.matched.min(self.expected), self.expected),
            self.misses,
            self.extra
        );
        let _ = writeln!(
            out,
            "latency ms   {} ({} samples, every {}th delivery; {} unstamped)",
            rt_stats::latency_human(self.rx.latency_us),
            self.rx.samples,
            self.sample_every,
            self.rx.unstamped
        );
        match (self.server_cpu, self.cpu_us_per_event(), self.cpu_pct()) {
            (Some(cpu), Some(per), Some(pct)) => {
                let _ = writeln!(
                    out,
                    "server CPU   {:.3} s over {:.3} s ({pct:.1} %), {per:.1} µs per event",
                    cpu.as_secs_f64(),
                    self.window.as_secs_f64()
                );
            }
            _ => {
                let _ = writeln!(out, "server CPU   (no --server-pid)");
            }
        }
        let _ = writeln!(out, "disconnects  {}", self.rx.disconnects);
        for m in &self.rx.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_with_the_shared_fraction() {
        let mut per_room = [0u32; 5];
        for k in 0..1000 {
            per_room[room_of(k, 4, 0.1)] += 1;
        }
        assert_eq!(per_room[4], 100);
        assert_eq!(&per_room[..4], &[225, 225, 225, 225]);
        assert!((0..100).all(|k| room_of(k, 4, 0.0) < 4));
        assert!((0..100).all(|k| room_of(k, 4, 1.0) == 4));
        assert_eq!(room_of(3, 0, 0.0), 0);
    }

    #[test]
    fn ids_and_rooms_map_to_indexes() {
        assert_eq!(room_of_subscription(b"r17", 100), Some(17));
        assert_eq!(room_of_subscription(b"r100", 100), None);
        assert_eq!(room_of_subscription(b"s3", 100), Some(100));
        assert_eq!(room_of_subscription(b"x1", 100), None);
        assert_eq!(room_of_subscription(b"r", 100), None);
        assert_eq!(room_of_subscription(b"", 100), None);
        assert_eq!(room_index(b"lobby", 100, b"lobby"), Some(100));
        assert_eq!(room_index(b"r5", 100, b"lobby"), Some(5));
        assert_eq!(room_index(b"r-5", 100, b"lobby"), None);
        assert_eq!(room_index(b"preflight", 100, b"lobby"), None);
        let (id, filter) = subscription(102, 100, "lobby");
        assert_eq!((id.as_str(), filter.as_str()), ("s2", "room = 'lobby'"));
        assert_eq!(subscription(7, 100, "lobby").1, "room = 'r7'");
    }

    #[test]
    fn counts_misses_and_extras_per_subscription() {
        let subs: Vec<(String, String)> = ["r0", "r1", "s0", "s1"]
            .iter()
            .map(|id| (id.to_string(), String::new()))
            .collect();
        let mut c = ConnCounts::new(&subs, 2);
        // Created: 2 in r0, 1 in r1, 3 in the shared room (index 2).
        let created = [2, 1, 3];
        c.count(Some(b"r0"), Some(0));
        c.count(Some(b"r0"), Some(0));
        c.count(Some(b"r0"), Some(0)); // a duplicate: extra
        // r1 gets nothing: one miss.
        for _ in 0..3 {
            c.count(Some(b"s0"), Some(2));
        }
        c.count(Some(b"s1"), Some(2)); // two misses
        c.count(Some(b"s1"), Some(0)); // wrong room: extra
        c.count(Some(b"r9"), Some(2)); // not ours: extra
        c.count(None, Some(0)); // no subscription id: extra
        assert_eq!(c.settle(&created), (3, 4));
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let stat = "1234 (bak (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 \
                    100 1000 10 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("1234 (bak) S 1"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_cpu_ticks(&own).is_some());
        assert!(cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn body_names_the_room() {
        let a = PubArgs {
            distinct: 3,
            fraction: 0.5,
            rate: 1.0,
            ts_field: "n".into(),
            shared_room: "lobby".into(),
        };
        assert_eq!(
            &body(&a, 1, 7)[..],
            br#"{"title":"bench","room":"r1","n":7}"#
        );
        assert_eq!(
            &body(&a, 3, 8)[..],
            br#"{"title":"bench","room":"lobby","n":8}"#
        );
    }
}
