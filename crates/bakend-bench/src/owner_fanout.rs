//! `owner-fanout`: U registered users, each with a socket (authenticated via `?token=`)
//! subscribed to an owner-read collection, each creating records as themselves. Every
//! user should see exactly their own events: a foreign event on a socket is a permission
//! leak, an own event that never arrives is a miss. This checks the per-event permission
//! filter under load, where a cached or shared auth context would show up as leaks.
//!
//! The owner of an event is taken from the payload's `user_id`, which the server sets from
//! the creator's token on create; it is compared with the id returned at registration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::RealtimeArgs;
use crate::fanout::{Sampler, join_all, merge_published, read_events, sample_every};
use crate::http::{KeepAlive, RequestTemplate, Target};
use crate::publish::{self, Schedule};
use crate::rest_create::check_gets;
use crate::rt_stats::{self, RxStats, RxSummary};
use crate::stats::Report;
use crate::ws::{self, Action, Endpoint, FieldScanner, Ws};

const SCENARIO: &str = "owner-fanout";
const LEAD: Duration = Duration::from_millis(50);
/// Sockets listed individually in the human summary; the JSON lists all of them.
const MAX_LISTED: usize = 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rt: RealtimeArgs,
    /// Collection whose `read` permission is `owner` and `create` allows authenticated users;
    /// it needs a string `user_id`, a string `title` and the integer `--ts-field` field.
    #[arg(long, default_value = "bench_owned")]
    pub collection: String,
    /// Channel every user subscribes to [default: <collection>.*].
    #[arg(long)]
    pub channel: Option<String>,
    /// Users to register, each with one socket and one keep-alive HTTP connection.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Records created per second over all users together (users take turns).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Integer field that carries the send timestamp (µs since the start).
    #[arg(long, default_value = "n")]
    pub ts_field: String,
    /// Take a latency sample from every Nth own event per socket [default: so that at most
    /// ~200k samples are kept].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Seconds to keep receiving after the last send.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Registrations in flight at once; password hashing makes each one expensive, so more
    /// only queues on the server.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub register_concurrency: u32,
}

/// A registered user with an open HTTP connection.
struct User {
    id: String,
    token: String,
    conn: KeepAlive,
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

async fn execute(args: &Args) -> Result<OwnerReport> {
    let rt = &args.rt;
    ws::check_name("--collection", &args.collection)?;
    ws::check_name("--ts-field", &args.ts_field)?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of events per second");
    }
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        bail!("--grace must be a non-negative number of seconds");
    }
    // One socket and one HTTP connection per user.
    ws::ensure_fd_capacity(2 * u64::from(args.users))?;
    let target = Target::resolve(&rt.url).await?;
    check_gets(&target, &[("/health".to_owned(), "is the server running?")]).await?;

    let users = register_all(&target, args).await?;
    let create = RequestTemplate {
        method: Method::POST,
        uri: target.path_uri(&format!("/api/{}", args.collection))?,
        host: target.host.clone(),
        json_body: None,
        authorization: None,
    };
    let templates: Vec<RequestTemplate> = users
        .iter()
        .map(|u| {
            let mut t = create.clone();
            t.authorization = Some(
                HeaderValue::from_str(&format!("Bearer {}", u.token))
                    .context("the server returned a token that is not a valid header value")?,
            );
            Ok(t)
        })
        .collect::<Result<_>>()?;
    let mut users = users;
    // Before any socket subscribes, so the check's own event reaches nobody.
    publish::preflight(
        &mut users[0].conn,
        &templates[0],
        &args.ts_field,
        &target.origin,
        StatusCode::CREATED,
    )
    .await?;

    let endpoint = Arc::new(Endpoint::new(&target, rt.source_ips, ws::READ_BUFFER));
    let channel: Arc<str> = Arc::from(
        args.channel
            .clone()
            .unwrap_or_else(|| format!("{}.*", args.collection))
            .as_str(),
    );
    let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.token.clone()).collect());
    let socks = {
        let mut first = endpoint
            .connect(0, Some(&tokens[0]))
            .await
            .with_context(|| format!("realtime endpoint {} is not usable", endpoint.url))?;
        ws::channel_request(&mut first, Action::Subscribe, &channel).await?;
        let rest = ws::run_bounded(
            users.len() - 1,
            rt.connect_concurrency as usize,
            "user socket",
            |i| {
                let endpoint = endpoint.clone();
                let channel = channel.clone();
                let tokens = tokens.clone();
                async move {
                    let mut sock = endpoint.connect_retry(i + 1, Some(&tokens[i + 1])).await?;
                    ws::channel_request(&mut sock, Action::Subscribe, &channel).await?;
                    Ok(sock)
                }
            },
        )
        .await?;
        std::iter::once(first).chain(rest).collect::<Vec<_>>()
    };

    let duration = Duration::from_secs(rt.duration);
    let grace = Duration::from_secs_f64(args.grace);
    // Each event is due on exactly one socket, its owner's.
    let every = sample_every(args.sample, args.rate * duration.as_secs_f64());
    let clock = Instant::now() + LEAD;
    let end = clock + duration;
    let stop = end + grace;

    let ts = Arc::new(FieldScanner::new(&args.ts_field));
    let owner = Arc::new(FieldScanner::new("user_id"));
    let mut receivers = JoinSet::new();
    for (i, (sock, user)) in socks.into_iter().zip(&users).enumerate() {
        let me = Bytes::from(user.id.clone());
        let (ts, owner) = (ts.clone(), owner.clone());
        receivers.spawn(async move {
            let st = receive_own(sock, &me, i, every, &ts, &owner, clock, stop).await;
            (i, st)
        });
    }
    let ts_field: Arc<str> = Arc::from(args.ts_field.as_str());
    let mut publishers = JoinSet::new();
    let n_users = users.len() as u64;
    let mut ids = Vec::with_capacity(users.len());
    for (i, (user, template)) in users.into_iter().zip(templates).enumerate() {
        ids.push(user.id);
        let schedule = Schedule {
            clock,
            rate: args.rate,
            first_slot: i as u64,
            stride: n_users,
            end,
            give_up: stop,
        };
        let ts_field = ts_field.clone();
        publishers.spawn(async move {
            (
                i,
                publish::publish(user.conn, template, ts_field, schedule, StatusCode::CREATED)
                    .await,
            )
        });
    }

    let mut published = join_all(publishers, "publisher").await?;
    published.sort_by_key(|(i, _)| *i);
    let mut received = join_all(receivers, "user socket").await?;
    received.sort_by_key(|(i, _)| *i);
    let created: Vec<u64> = published.iter().map(|(_, p)| p.created).collect();
    let (posts, total_created, late) = merge_published(
        SCENARIO,
        duration,
        published.into_iter().map(|(_, p)| p).collect(),
    );
    let stats: Vec<RxStats> = received.into_iter().map(|(_, s)| s).collect();
    let sockets: Vec<SocketResult> = ids
        .into_iter()
        .zip(&stats)
        .zip(created)
        .map(|((user_id, st), created)| SocketResult {
            user_id,
            created,
            own: st.own,
            leaks: st.leaks + st.unowned,
            misses: created.saturating_sub(st.own),
            extra: st.own.saturating_sub(created),
            closed: st.closed || st.error.is_some(),
        })
        .collect();
    let report = OwnerReport {
        channel: channel.to_string(),
        users: args.users,
        rate: args.rate,
        duration,
        grace,
        sample_every: every,
        posts,
        created: total_created,
        late,
        rx: RxSummary::merge(&stats),
        sockets,
    };
    Ok(report)
}

/// Registers `--users` fresh accounts with random emails, keeping each one's connection for
/// its publishing later.
async fn register_all(target: &Target, args: &Args) -> Result<Vec<User>> {
    let nonce = random_nonce();
    let target = Arc::new(target.clone());
    ws::run_bounded(
        args.users as usize,
        args.register_concurrency as usize,
        "registration",
        |i| {
            let target = target.clone();
            async move { register(&target, &format!("bench-{nonce:016x}-{i}@bench.test")).await }
        },
    )
    .await
}

/// Random enough that repeated runs against the same database never collide on email.
fn random_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `POST /api/auth/register` → 201 `{"token", "refreshToken", "user": {"id", …}}`.
async fn register(target: &Target, email: &str) -> Result<User> {
    let mut conn = KeepAlive::new(target.addr);
    conn.connect().await?;
    let template = RequestTemplate {
        method: Method::POST,
        uri: target.path_uri("/api/auth/register")?,
        host: target.host.clone(),
        json_body: Some(Bytes::from(
            json!({"email": email, "password": "bench-password-1"}).to_string(),
        )),
        authorization: None,
    };
    let url = format!("{}/api/auth/register", target.origin);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), conn.fetch(&template))
        .await
        .with_context(|| format!("POST {url}: no response within 30s"))?
        .with_context(|| format!("POST {url} failed"))?;
    let text = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if status != StatusCode::CREATED {
        bail!("POST {url} returned {status}, expected 201: {}", text());
    }
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("POST {url}: response is not JSON: {}", text()))?;
    let token = v["token"].as_str();
    let id = v["user"]["id"].as_str();
    match (token, id) {
        (Some(token), Some(id)) => Ok(User {
            id: id.to_owned(),
            token: token.to_owned(),
            conn,
        }),
        _ => bail!(
            "POST {url}: expected {{\"token\":…,\"user\":{{\"id\":…}}}}, got {}",
            text()
        ),
    }
}

/// Reads one user's socket until `stop`. Every event is checked (a leak must not hide
/// between samples), but only by scanning for `"user_id":"…"`; latency is sampled from every
/// `every`-th own event.
#[allow(clippy::too_many_arguments)]
pub async fn receive_own(
    mut ws: Ws,
    me: &[u8],
    index: usize,
    every: u64,
    ts: &FieldScanner,
    owner: &FieldScanner,
    clock: Instant,
    stop: Instant,
) -> RxStats {
    let mut st = RxStats::default();
    let mut sampler = Sampler::new(index, every);
    read_events(&mut ws, &mut st, stop, |frame, st| match owner.str(frame) {
        Some(id) if id == me => {
            st.own += 1;
            if sampler.due() {
                st.sample(ts.u64(frame), clock.elapsed().as_micros() as u64);
            }
        }
        Some(_) => st.leaks += 1,
        None => st.unowned += 1,
    })
    .await;
    st
}

struct SocketResult {
    user_id: String,
    created: u64,
    own: u64,
    /// Foreign plus unowned events.
    leaks: u64,
    misses: u64,
    /// Own events beyond those created: duplicates, or records created by another client
    /// with this user's token.
    extra: u64,
    closed: bool,
}

struct OwnerReport {
    channel: String,
    users: u32,
    rate: f64,
    duration: Duration,
    grace: Duration,
    sample_every: u64,
    posts: Report,
    created: u64,
    late: u64,
    rx: RxSummary,
    sockets: Vec<SocketResult>,
}

impl OwnerReport {
    fn misses(&self) -> u64 {
        self.sockets.iter().map(|s| s.misses).sum()
    }

    fn extra(&self) -> u64 {
        self.sockets.iter().map(|s| s.extra).sum()
    }

    fn json(&self) -> Value {
        let sockets: Vec<Value> = self
            .sockets
            .iter()
            .map(|s| {
                json!({
                    "userId": s.user_id,
                    "created": s.created,
                    "ownReceived": s.own,
                    "leaks": s.leaks,
                    "misses": s.misses,
                    "extra": s.extra,
                    "closed": s.closed,
                })
            })
            .collect();
        json!({
            "scenario": SCENARIO,
            "channel": self.channel,
            "users": self.users,
            "targetRate": self.rate,
            "durationSecs": self.duration.as_secs_f64(),
            "graceSecs": self.grace.as_secs_f64(),
            "eventsSent": self.created,
            "postErrors": self.posts.errors + self.posts.network_errors,
            "postErrorMessages": self.posts.error_messages,
            "lateSends": self.late,
            "postLatencyMs": rt_stats::latency_json(self.posts.latency_us),
            "deliveries": self.rx.events,
            "ownReceived": self.rx.own,
            "leaks": self.rx.leaks + self.rx.unowned,
            "unowned": self.rx.unowned,
            "misses": self.misses(),
            "extra": self.extra(),
            "completenessPct": rt_stats::percent(self.rx.own.min(self.created), self.created),
            "latencyMs": rt_stats::latency_json(self.rx.latency_us),
            "sampleEvery": self.sample_every,
            "samples": self.rx.samples,
            "unstamped": self.rx.unstamped,
            "disconnects": self.rx.disconnects,
            "disconnectErrors": self.rx.error_messages,
            "sockets": sockets,
        })
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "scenario     {SCENARIO}");
        let _ = writeln!(
            out,
            "users        {} sockets on {:?}, {} events/s for {:.3} s (+{:.3} s grace)",
            self.users,
            self.channel,
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
        let _ = writeln!(
            out,
            "deliveries   {} ({} own, {:.2} % of own events)",
            self.rx.events,
            self.rx.own,
            rt_stats::percent(self.rx.own.min(self.created), self.created)
        );
        let _ = writeln!(
            out,
            "leaks        {} (of which {} without user_id)",
            self.rx.leaks + self.rx.unowned,
            self.rx.unowned
        );
        let _ = writeln!(
            out,
            "misses       {} (extra own events {})",
            self.misses(),
            self.extra()
        );
        let _ = writeln!(
            out,
            "latency ms   {} ({} samples, every {}th own event; {} unstamped)",
            rt_stats::latency_human(self.rx.latency_us),
            self.rx.samples,
            self.sample_every,
            self.rx.unstamped
        );
        let _ = writeln!(out, "disconnects  {}", self.rx.disconnects);
        for m in &self.rx.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        let bad: Vec<&SocketResult> = self
            .sockets
            .iter()
            .filter(|s| s.leaks > 0 || s.misses > 0 || s.extra > 0 || s.closed)
            .collect();
        for s in bad.iter().take(MAX_LISTED) {
            let _ = writeln!(
                out,
                "  socket {}: created {}, own received {}, leaks {}, misses {}, extra {}{}",
                s.user_id,
                s.created,
                s.own,
                s.leaks,
                s.misses,
                s.extra,
                if s.closed { ", closed early" } else { "" }
            );
        }
        if bad.len() > MAX_LISTED {
            let _ = writeln!(
                out,
                "  … {} more sockets with problems (see --json)",
                bad.len() - MAX_LISTED
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Mock, MockPlan, Owners};

    /// The mock takes the token as the user id and, on subscribe, sends 20 events owned by
    /// that user and 5 owned by someone else: the receiver must count 20 own events and
    /// 5 leaks, and sample latency only from own events.
    #[tokio::test]
    async fn detects_leaks_and_counts_own_events() {
        let clock = Instant::now();
        let mock = Mock::start(MockPlan {
            clock,
            events_per_subscribe: 20,
            foreign_events: 5,
            ..MockPlan::default()
        })
        .await;
        let target = Target::resolve(&mock.url()).await.unwrap();
        let endpoint = Endpoint::new(&target, 0, ws::READ_BUFFER);
        let ts = FieldScanner::new("n");
        let owner = FieldScanner::new("user_id");
        let mut stats = Vec::new();
        for (i, user) in ["usr_a", "usr_b"].iter().enumerate() {
            let mut sock = endpoint.connect(i, Some(user)).await.unwrap();
            ws::channel_request(&mut sock, Action::Subscribe, "bench_owned.*")
                .await
                .unwrap();
            let stop = Instant::now() + Duration::from_millis(300);
            stats.push(receive_own(sock, user.as_bytes(), i, 1, &ts, &owner, clock, stop).await);
        }
        for st in &stats {
            assert_eq!((st.events, st.own, st.leaks, st.unowned), (25, 20, 5, 0));
            assert_eq!(st.samples.len(), 20);
        }
        let rx = RxSummary::merge(&stats);
        assert_eq!((rx.own, rx.leaks), (40, 10));
    }

    fn args(url: String) -> Args {
        Args {
            rt: RealtimeArgs {
                url,
                duration: 1,
                threads: 1,
                source_ips: 2,
                connect_concurrency: 8,
                spin: false,
                json: true,
            },
            collection: "bench_owned".into(),
            channel: None,
            users: 6,
            rate: 120.0,
            ts_field: "n".into(),
            sample: None,
            grace: 0.5,
            register_concurrency: 3,
        }
    }

    /// The whole scenario against the full mock (registration, token sockets, authenticated
    /// creates broadcast as events) with a correct owner filter: nothing leaks or is missed.
    #[tokio::test]
    async fn end_to_end_with_owner_filter() {
        let mock = Mock::start_full(Owners::Filter).await;
        let r = execute(&args(mock.url())).await.unwrap();
        assert!(r.created >= 100, "{}", r.created);
        assert_eq!(r.posts.errors + r.posts.network_errors, 0);
        assert_eq!(
            (r.rx.leaks, r.rx.unowned, r.misses(), r.extra()),
            (0, 0, 0, 0)
        );
        assert_eq!(r.rx.own, r.created);
        assert_eq!(r.rx.samples as u64, r.created);
        assert!(
            r.sockets
                .iter()
                .all(|s| s.created > 0 && s.own == s.created)
        );
        let json = r.json();
        assert_eq!(json["leaks"], 0);
        assert_eq!(json["sockets"].as_array().map(Vec::len), Some(6));
        run(&args(mock.url())).await.unwrap();
    }

    /// Same, but the mock broadcasts every event to everyone: each socket must report the
    /// other users' events as leaks.
    #[tokio::test]
    async fn end_to_end_detects_leaks() {
        let mock = Mock::start_full(Owners::Leak).await;
        let r = execute(&args(mock.url())).await.unwrap();
        assert_eq!(r.misses(), 0);
        // Every socket sees every event; all but its own are leaks.
        assert_eq!(r.rx.leaks, r.created * 5);
        assert!(r.human().contains("leaks        "));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(random_nonce(), random_nonce());
    }
}
