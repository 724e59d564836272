//! `idle`: N WebSocket connections that do nothing but stay open (optionally subscribed to
//! one channel), to measure what an idle connection costs the server in memory. The figure
//! is the server's RSS growth divided by N, so the server should be otherwise quiet.
//!
//! One process can hold ~19k sockets: the open-file limit is raised to the hard limit and
//! sockets are spread over several loopback source addresses, each of which has its own
//! ephemeral port range.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::RealtimeArgs;
use crate::fanout::join_all;
use crate::http::Target;
use crate::rt_stats::{RxStats, RxSummary};
use crate::ws::{self, Action, Endpoint, Ws};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rt: RealtimeArgs,
    /// Connections to open and hold for `--duration` seconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Subscribe every connection to this channel (e.g. `posts.*`); by default they only
    /// connect.
    #[arg(long)]
    pub subscribe: Option<String>,
    /// PID of the server process, whose RSS is read from /proc/<pid>/status before and after
    /// connecting; without it only the client side is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Server RSS readings in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    before: u64,
    connected: u64,
    held: u64,
}

pub async fn run(args: &Args) -> Result<()> {
    let rt = &args.rt;
    let n = args.connections as usize;
    let fd_limit = ws::ensure_fd_capacity(u64::from(args.connections))?;
    // Read first: a wrong PID should fail before thousands of sockets are opened.
    let before = args.server_pid.map(ws::rss_kib).transpose()?;
    let target = Target::resolve(&rt.url).await?;
    let endpoint = Arc::new(Endpoint::new(&target, rt.source_ips, ws::IDLE_READ_BUFFER));
    let channel: Option<Arc<str>> = args.subscribe.as_deref().map(Arc::from);

    // One connection alone first: an unreachable server or a missing endpoint gives one
    // clear error instead of hundreds of parallel ones.
    let first = open(&endpoint, 0, channel.clone())
        .await
        .with_context(|| format!("realtime endpoint {} is not usable", endpoint.url))?;
    let started = Instant::now();
    let rest = ws::run_bounded(n - 1, rt.connect_concurrency as usize, "connection", |i| {
        open(&endpoint, i + 1, channel.clone())
    })
    .await?;
    let connect_time = started.elapsed();
    let connected_rss = args.server_pid.map(ws::rss_kib).transpose()?;

    let hold = Duration::from_secs(rt.duration);
    let stop = Instant::now() + hold;
    let mut readers = JoinSet::new();
    for sock in std::iter::once(first).chain(rest) {
        readers.spawn(hold_open(sock, stop));
    }
    tokio::time::sleep_until(stop).await;
    // Read before the readers return and the sockets start closing.
    let held_rss = args.server_pid.map(ws::rss_kib).transpose()?;
    let client_rss = ws::rss_kib(std::process::id()).ok();
    let held = join_all(readers, "connection").await?;
    let rx = RxSummary::merge(&held);

    let rss = match (before, connected_rss, held_rss) {
        (Some(before), Some(connected), Some(held)) => Some(Rss {
            before,
            connected,
            held,
        }),
        _ => None,
    };
    let report = IdleReport {
        connections: n,
        channel: args.subscribe.clone(),
        source_ips: endpoint.source_ip_count(),
        fd_limit,
        connect_time,
        hold,
        server_pid: args.server_pid,
        rss,
        client_rss,
        rx,
    };
    if rt.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn open(
    endpoint: &Arc<Endpoint>,
    index: usize,
    channel: Option<Arc<str>>,
) -> impl std::future::Future<Output = Result<Ws>> + Send + 'static {
    let endpoint = endpoint.clone();
    async move {
        let mut sock = endpoint.connect_retry(index, None).await?;
        if let Some(ch) = channel {
            ws::channel_request(&mut sock, Action::Subscribe, &ch).await?;
        }
        Ok(sock)
    }
}

/// Keeps reading so protocol pings are answered (tungstenite replies while reading) and an
/// early close by the server is noticed; the frame count shows whether "idle" really was.
async fn hold_open(mut ws: Ws, stop: Instant) -> RxStats {
    let mut st = RxStats::default();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(_) | Message::Binary(_)) => st.frames += 1,
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    st.error = Some(format!("WebSocket read: {e}"));
                    return;
                }
            }
        }
        st.closed = true;
    };
    let _ = tokio::time::timeout_at(stop, read).await;
    st
}

struct IdleReport {
    connections: usize,
    channel: Option<String>,
    source_ips: usize,
    fd_limit: u64,
    connect_time: Duration,
    hold: Duration,
    server_pid: Option<u32>,
    rss: Option<Rss>,
    client_rss: Option<u64>,
    rx: RxSummary,
}

impl IdleReport {
    fn per_conn(&self, after: u64, before: u64) -> f64 {
        let kib = after as f64 - before as f64;
        (kib / self.connections as f64 * 100.0).round() / 100.0
    }

    fn handshakes_per_sec(&self) -> f64 {
        crate::rt_stats::round1(self.connections as f64 / self.connect_time.as_secs_f64())
    }

    fn json(&self) -> Value {
        let server = self.rss.map(|r| {
            json!({
                "pid": self.server_pid,
                "rssKiB": {"before": r.before, "connected": r.connected, "afterHold": r.held},
                "kibPerConnection": self.per_conn(r.connected, r.before),
                "kibPerConnectionAfterHold": self.per_conn(r.held, r.before),
            })
        });
        json!({
            "scenario": "idle",
            "connections": self.connections,
            "subscribedTo": self.channel,
            "sourceIps": self.source_ips,
            "fdLimit": self.fd_limit,
            "connectSecs": self.connect_time.as_secs_f64(),
            "handshakesPerSec": self.handshakes_per_sec(),
            "holdSecs": self.hold.as_secs_f64(),
            "server": server,
            "clientRssKiB": self.client_rss,
            "framesDuringHold": self.rx.frames,
            "closedDuringHold": self.rx.disconnects,
            "closeErrors": self.rx.error_messages,
        })
    }

    fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "scenario     idle");
        let _ = writeln!(
            out,
            "connections  {}{} ({} source IPs, fd limit {})",
            self.connections,
            self.channel
                .as_ref()
                .map(|c| format!(" subscribed to {c:?}"))
                .unwrap_or_default(),
            self.source_ips,
            self.fd_limit
        );
        let _ = writeln!(
            out,
            "connect      {:.3} s ({:.1} handshakes/s)",
            self.connect_time.as_secs_f64(),
            self.handshakes_per_sec()
        );
        let _ = writeln!(out, "held         {:.3} s", self.hold.as_secs_f64());
        match self.rss {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "server RSS   {} KiB before, {} KiB connected, {} KiB after hold (pid {})",
                    r.before,
                    r.connected,
                    r.held,
                    self.server_pid.unwrap_or_default()
                );
                let _ = writeln!(
                    out,
                    "per conn     {:.2} KiB ({:.2} KiB after hold)",
                    self.per_conn(r.connected, r.before),
                    self.per_conn(r.held, r.before)
                );
            }
            None => {
                let _ = writeln!(out, "server RSS   not measured (pass --server-pid)");
            }
        }
        if let Some(c) = self.client_rss {
            let _ = writeln!(out, "client RSS   {c} KiB");
        }
        let _ = writeln!(
            out,
            "during hold  {} frames received, {} connections closed",
            self.rx.frames, self.rx.disconnects
        );
        for m in &self.rx.error_messages {
            let _ = writeln!(out, "  e.g.       {m}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Mock, MockPlan};

    fn args(url: String, connections: u32) -> Args {
        Args {
            rt: RealtimeArgs {
                url,
                duration: 1,
                threads: 1,
                source_ips: 4,
                connect_concurrency: 32,
                spin: false,
                json: true,
            },
            connections,
            subscribe: Some("bench.*".into()),
            // The test process itself stands in for the server.
            server_pid: Some(std::process::id()),
        }
    }

    #[tokio::test]
    async fn holds_connections_against_the_mock() {
        let mock = Mock::start(MockPlan::default()).await;
        run(&args(mock.url(), 300)).await.unwrap();
        assert_eq!(mock.connections(), 300);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        let err = run(&args("http://127.0.0.1:9".into(), 10))
            .await
            .expect_err("nothing listens on port 9");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("is not usable") && msg.contains("connect to"),
            "{msg}"
        );
    }

    /// A server without the endpoint answers the upgrade with 404: the run must stop with
    /// the status in the message, not hang or report zeros.
    #[tokio::test]
    async fn failed_upgrade_is_a_clear_error() {
        let mock = Mock::start_http_404().await;
        let err = run(&args(mock.url(), 10))
            .await
            .expect_err("the upgrade is refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("404"), "{msg}");
    }

    #[test]
    fn bad_pid_fails_before_connecting() {
        assert!(ws::rss_kib(u32::MAX).is_err());
        assert!(ws::rss_kib(std::process::id()).unwrap() > 0);
    }
}
