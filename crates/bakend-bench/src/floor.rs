//! `loopback-floor`: what the kernel alone charges for the fan-out pattern on this machine,
//! with no server at all. A writer thread sends one frame to each of N loopback TCP sockets in
//! turn — exactly the system calls a realtime server must make to deliver one event to N
//! subscribers — and a reader on another core receives them with the same async stack the
//! realtime scenarios use. Comparing `fanout` with this floor on the same machine separates
//! what the server adds from what a loopback `send` costs: on loopback the sending core also
//! runs the receiving socket's TCP processing, so a single-core server can never beat it.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::rt_stats::{self, RxStats, RxSummary};
use crate::stats::Percentiles;
use crate::ws;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Socket pairs (each costs two open files in this one process).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Rounds of one frame to every socket.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Pause between rounds, in milliseconds (10 ms ≈ 100 events/s, 100 ms ≈ 10 events/s).
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Bytes per frame; the default is about one `fanout` event frame.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(8..=65536))]
    pub frame_bytes: u64,
    /// CPU the writer (standing in for the server) is pinned to.
    #[arg(long)]
    pub writer_core: Option<usize>,
    /// CPU the reader (standing in for the load tool) is pinned to.
    #[arg(long)]
    pub reader_core: Option<usize>,
    /// The reader polls without sleeping, so the writer never pays for waking it.
    #[arg(long)]
    pub spin: bool,
    /// Spread client sockets over this many source addresses 127.0.0.2, 127.0.0.3, …
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=253))]
    pub source_ips: u8,
    /// Submit each round's sends through io_uring (one `io_uring_enter` carries all N) instead
    /// of one `send` system call per socket: does batching the system calls lower the floor?
    #[arg(long)]
    pub io_uring: bool,
    /// Print one JSON object instead of the human-readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Time for the reader to settle before the first round, and to drain after the last (then
/// the writer closes its ends, which is how each reader task learns the run is over).
const SETTLE: Duration = Duration::from_millis(200);
const DRAIN: Duration = Duration::from_secs(2);

pub async fn run(args: &Args) -> Result<()> {
    ws::ensure_fd_capacity(2 * u64::from(args.connections))?;
    let n = args.connections as usize;
    let (pairs_tx, pairs_rx) = std::sync::mpsc::channel::<Vec<StdStream>>();
    let clock = Instant::now();
    let reader = {
        let (spin, core, ips, frame) = (
            args.spin,
            args.reader_core,
            args.source_ips,
            args.frame_bytes as usize,
        );
        std::thread::spawn(move || -> Result<Vec<RxStats>> {
            pin_to(core)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("reader runtime")?
                .block_on(read_side(n, ips, frame, spin, clock, pairs_tx))
        })
    };
    let rounds = {
        let (core, rounds, interval, frame, uring) = (
            args.writer_core,
            args.rounds,
            Duration::from_millis(args.interval_ms),
            args.frame_bytes as usize,
            args.io_uring,
        );
        std::thread::spawn(move || -> Result<Vec<Duration>> {
            pin_to(core)?;
            let sockets = pairs_rx
                .recv()
                .context("the reader failed to set up its sockets")?;
            std::thread::sleep(SETTLE);
            let send = if uring {
                Sender::uring(sockets.len())?
            } else {
                Sender::Syscalls
            };
            let times = write_side(&sockets, send, rounds, interval, frame, clock);
            std::thread::sleep(DRAIN);
            times
        })
    };
    let round_times = join(rounds, "writer")?;
    let rx = join(reader, "reader")?;
    report(args, &round_times, &RxSummary::merge(&rx));
    Ok(())
}

fn join<T>(handle: std::thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    match handle.join() {
        Ok(r) => r,
        Err(_) => bail!("the {what} thread panicked"),
    }
}

/// Sends every round: one frame per socket, each stamped with the round's start (µs on the
/// run's clock) so the reader can tell how long the frame took to arrive.
fn write_side(
    sockets: &[StdStream],
    mut send: Sender,
    rounds: u32,
    interval: Duration,
    frame_bytes: usize,
    clock: Instant,
) -> Result<Vec<Duration>> {
    let mut frame = vec![b'x'; frame_bytes];
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let start = Instant::now();
        let stamp = clock.elapsed().as_micros() as u64;
        frame[..8].copy_from_slice(&stamp.to_le_bytes());
        send.round(sockets, &frame)?;
        times.push(start.elapsed());
        std::thread::sleep(interval);
    }
    Ok(times)
}

/// How a round's frames reach the kernel.
enum Sender {
    /// One `send` per socket, as the server makes them.
    Syscalls,
    /// All of a round's sends queued in one ring and submitted with one system call.
    Uring(Box<io_uring::IoUring>),
}

impl Sender {
    fn uring(sockets: usize) -> Result<Sender> {
        let entries = u32::try_from(sockets.next_power_of_two().max(8))
            .context("too many sockets for one ring")?;
        let ring = io_uring::IoUring::new(entries)
            .context("set up io_uring (the kernel or a seccomp filter may not allow it)")?;
        Ok(Sender::Uring(Box::new(ring)))
    }

    fn round(&mut self, sockets: &[StdStream], frame: &[u8]) -> Result<()> {
        match self {
            Sender::Syscalls => {
                for mut s in sockets {
                    s.write_all(frame).context("write to a loopback socket")?;
                }
            }
            Sender::Uring(ring) => {
                let len = u32::try_from(frame.len()).context("frame too large")?;
                for s in sockets {
                    let send = io_uring::opcode::Send::new(
                        io_uring::types::Fd(s.as_raw_fd()),
                        frame.as_ptr(),
                        len,
                    )
                    .build();
                    // SAFETY: `frame` and the socket outlive the submission: every entry is
                    // waited for below, before this function returns and before `frame` can
                    // change. The ring is sized for one entry per socket, so it never overflows.
                    unsafe { ring.submission().push(&send) }
                        .map_err(|_| anyhow::anyhow!("the submission queue is full"))?;
                }
                ring.submit_and_wait(sockets.len())
                    .context("io_uring_enter")?;
                for done in ring.completion() {
                    // A 400-byte send to a socket with room is taken whole; anything else
                    // would make this floor wrong, so it is an error rather than a retry.
                    if done.result() != len as i32 {
                        bail!("an io_uring send returned {} of {len} bytes", done.result());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Connects the pairs, hands the accepted (server) ends to the writer, then reads every
/// client end until the writer closes it.
async fn read_side(
    n: usize,
    source_ips: u8,
    frame_bytes: usize,
    spin: bool,
    clock: Instant,
    pairs_tx: std::sync::mpsc::Sender<Vec<StdStream>>,
) -> Result<Vec<RxStats>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("bind the loopback listener")?;
    let addr = listener.local_addr().context("listener address")?;
    let mut clients = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    for i in 0..n {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(source_ips)) as u8);
        let socket = TcpSocket::new_v4().context("create a client socket")?;
        socket
            .bind(SocketAddr::new(ip.into(), 0))
            .with_context(|| format!("bind a client socket to {ip}"))?;
        let (client, accepted) = tokio::join!(socket.connect(addr), listener.accept());
        clients.push(client.context("connect a loopback pair")?);
        let (server, _) = accepted.context("accept a loopback pair")?;
        // As the realtime server does: small frames go out at once.
        server.set_nodelay(true).context("set TCP_NODELAY")?;
        let server = server.into_std().context("detach the server end")?;
        server
            .set_nonblocking(false)
            .context("make the server end blocking")?;
        servers.push(server);
    }
    if pairs_tx.send(servers).is_err() {
        bail!("the writer thread is gone");
    }
    if spin {
        crate::spin();
    }
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(read_one(client, frame_bytes, clock));
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        out.push(joined.context("a reader task panicked")?);
    }
    Ok(out)
}

/// Reads one socket, sampling the latency of every frame whose stamp arrives in one piece.
async fn read_one(mut s: TcpStream, frame_bytes: usize, clock: Instant) -> RxStats {
    let mut st = RxStats::default();
    let mut buf = vec![0u8; 4096];
    // Offset inside the current frame of the next byte read.
    let mut pos = 0usize;
    loop {
        let n = match s.read(&mut buf).await {
            // The writer closed its end: the run is over.
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                st.error = Some(format!("read: {e}"));
                break;
            }
        };
        let now_us = clock.elapsed().as_micros() as u64;
        let mut at = 0;
        while at < n {
            if pos == 0 {
                st.frames += 1;
                st.events += 1;
                let stamp = buf
                    .get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                st.sample(stamp, now_us);
            }
            let take = (frame_bytes - pos).min(n - at);
            at += take;
            pos = (pos + take) % frame_bytes;
        }
    }
    st
}

fn report(args: &Args, rounds: &[Duration], rx: &RxSummary) {
    let mut us: Vec<u32> = rounds
        .iter()
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    us.sort_unstable();
    let round = Percentiles::from_sorted(&us);
    let total: Duration = rounds.iter().sum();
    let sends = u64::from(args.connections) * rounds.len() as u64;
    let per_send_us = total.as_secs_f64() * 1e6 / sends.max(1) as f64;
    let expected = sends;
    if args.json {
        let v = json!({
            "scenario": "loopback-floor",
            "connections": args.connections,
            "rounds": rounds.len(),
            "frameBytes": args.frame_bytes,
            "spin": args.spin,
            "ioUring": args.io_uring,
            "perSendMicros": (per_send_us * 100.0).round() / 100.0,
            "roundMs": rt_stats::latency_json(round),
            "expected": expected,
            "received": rx.events,
            "completePercent": rt_stats::percent(rx.events, expected),
            "latencyMs": rt_stats::latency_json(rx.latency_us),
        });
        println!("{v}");
        return;
    }
    println!(
        "loopback floor: {} sockets × {} rounds of {} bytes{}{}",
        args.connections,
        rounds.len(),
        args.frame_bytes,
        if args.spin { " (reader spins)" } else { "" },
        if args.io_uring {
            ", sent through io_uring"
        } else {
            ""
        }
    );
    println!("per send     {per_send_us:.2} µs on the writer core");
    println!("round ms     {}", rt_stats::latency_human(round));
    println!(
        "received     {} of {} frames ({:.2} %)",
        rx.events,
        expected,
        rt_stats::percent(rx.events, expected)
    );
    println!("latency ms   {}", rt_stats::latency_human(rx.latency_us));
}

/// Pins the calling thread to `core`, as `taskset -c` would pin a process.
fn pin_to(core: Option<usize>) -> Result<()> {
    let Some(core) = core else {
        return Ok(());
    };
    if core >= libc::CPU_SETSIZE as usize {
        bail!("CPU {core} is out of range");
    }
    // SAFETY: `set` is a plain bitmask owned by this frame; CPU_SET stays within it (checked
    // above) and sched_setaffinity(0, …) only reads it, for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pin a thread to CPU {core}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_frame_arrives_and_is_timed() {
        for io_uring in [false, true] {
            round_trip(io_uring).await;
        }
    }

    /// Both ways of sending deliver every frame of every round.
    async fn round_trip(io_uring: bool) {
        let args = Args {
            connections: 20,
            rounds: 3,
            interval_ms: 10,
            frame_bytes: 100,
            writer_core: None,
            reader_core: None,
            spin: false,
            source_ips: 2,
            io_uring,
            json: true,
        };
        let n = args.connections as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        let clock = Instant::now();
        let reader = tokio::spawn(read_side(n, 2, 100, false, clock, tx));
        let sockets = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .unwrap()
            .unwrap();
        let times = tokio::task::spawn_blocking(move || {
            // Dropping the sockets at the end tells the reader the run is over.
            let send = if io_uring {
                Sender::uring(sockets.len())?
            } else {
                Sender::Syscalls
            };
            write_side(&sockets, send, 3, Duration::from_millis(10), 100, clock)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(times.len(), 3);
        let rx = RxSummary::merge(&reader.await.unwrap().unwrap());
        assert_eq!(rx.events, 60, "every frame of every round is counted once");
        assert_eq!(rx.samples, 60);
        assert_eq!(rx.unstamped, 0);
        report(&args, &times, &rx);
    }
}
