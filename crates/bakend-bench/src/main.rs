//! `bakend-bench`: a load generator for a running `bak` server. Each scenario is a subcommand
//! in its own module; they share the keep-alive client ([`http`]) and the accounting and
//! reporting ([`stats`]) so every scenario's figures mean the same thing. The realtime
//! scenarios (`fanout`, `idle`, `owner-fanout`, `churn`,
//! `filtered-fanout`) share the WebSocket client ([`ws`]),
//! the paced publisher ([`publish`]) and the receive-side accounting ([`rt_stats`]).

mod churn;
mod fanout;
mod filtered_fanout;
mod floor;
mod http;
mod idle;
mod login;
mod owner_fanout;
mod publish;
mod replay;
mod rest_create;
mod rest_read;
mod rt_stats;
mod stats;
mod ws;

#[cfg(test)]
mod mock;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bakend-bench",
    version,
    about = "Load generator for a running Bakend server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Virtual clients POST records to one collection back-to-back over keep-alive connections.
    RestCreate(rest_create::Args),
    /// Virtual clients list a collection (a page, a sort, a keyset cursor at some depth) or get
    /// records by id back-to-back, against a collection filled to N records first; optionally
    /// with paced concurrent creates. `--api pocketbase` measures PocketBase the same way.
    RestRead(rest_read::Args),
    /// Virtual clients sign one account in back-to-back (password verification throughput).
    RestLogin(login::Args),
    /// WebSocket subscribers on one channel while publishers POST records at a fixed rate;
    /// reports delivery completeness and POST-to-frame latency.
    Fanout(fanout::Args),
    /// Many idle WebSocket connections held open; reports the server's memory per connection.
    Idle(idle::Args),
    /// Registered users on an owner-read collection; reports events leaked to other users and
    /// own events missed.
    OwnerFanout(owner_fanout::Args),
    /// `fanout` while extra connections keep subscribing and unsubscribing.
    Churn(churn::Args),
    /// Filtered subscriptions on one collection (`--distinct N` with one room each,
    /// `--shared M` on one shared room) while records are created over the rooms; reports
    /// misses, extras, latency and the server's CPU time per event.
    FilteredFanout(filtered_fanout::Args),
    /// A client away while records are written resumes with `since`; reports replay speed.
    Replay(replay::Args),
    /// No server: one thread writes a frame to each of N loopback sockets per round, the
    /// kernel's floor under any single-core fan-out on this machine.
    LoopbackFloor(floor::Args),
}

impl Command {
    fn threads(&self) -> u32 {
        match self {
            Command::RestCreate(a) => a.run.threads,
            Command::RestRead(a) => a.run.threads,
            Command::RestLogin(a) => a.run.threads,
            Command::Fanout(a) => a.rt.threads,
            Command::Idle(a) => a.rt.threads,
            Command::OwnerFanout(a) => a.rt.threads,
            Command::Churn(a) => a.fanout.rt.threads,
            Command::FilteredFanout(a) => a.rt.threads,
            Command::Replay(a) => a.rt.threads,
            Command::LoopbackFloor(_) => 1,
        }
    }

    fn spin(&self) -> bool {
        match self {
            Command::Fanout(a) => a.rt.spin,
            Command::Idle(a) => a.rt.spin,
            Command::OwnerFanout(a) => a.rt.spin,
            Command::Churn(a) => a.fanout.rt.spin,
            Command::FilteredFanout(a) => a.rt.spin,
            Command::Replay(a) => a.rt.spin,
            Command::RestCreate(_)
            | Command::RestRead(_)
            | Command::RestLogin(_)
            | Command::LoopbackFloor(_) => false,
        }
    }
}

/// Keeps the tool's runtime polling the reactor with a zero timeout instead of sleeping in
/// `epoll_wait`: a task that always yields. On loopback, waking a sleeping client is work the
/// *sending* core does (the wake-up is issued from the server's `send`), so a sleeping tool
/// makes the server look slower than it is on a real network, where the client's own machine
/// pays for it. Costs the tool's core 100 % of its time, which it has to itself when pinned.
pub(crate) fn spin() {
    tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
}

/// Options every scenario understands, so runs of different scenarios are comparable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Server base URL (http only); a path prefix is kept in front of every request path.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Number of concurrent virtual clients, each with its own connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Seconds of load whose results are discarded, so caches, page cache and the server's
    /// allocator reach a steady state before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Worker threads for the tool itself; 1 runs everything on one thread, which keeps the
    /// tool's footprint predictable when pinned to a single core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// Print one JSON object instead of the human-readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Options every realtime scenario understands. There is no warm-up: a realtime run is a
/// bounded schedule of events whose every delivery is accounted for, not a throughput loop.
#[derive(clap::Args, Debug, Clone)]
pub struct RealtimeArgs {
    /// Server base URL (http only); the WebSocket URL is derived from it
    /// (`ws://HOST:PORT[/prefix]/api/realtime`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Seconds of load (for `idle`: seconds the connections are held).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Worker threads for the tool itself. One thread handles everything, including the
    /// publishers, so with many subscribers use more threads to keep the tool's own queueing
    /// out of the latency figures.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// Spread WebSocket client sockets over this many source addresses 127.0.0.2, 127.0.0.3, …
    /// so large runs do not run out of ephemeral ports (each source address has its own
    /// ~28k ports). Only used when the server is on IPv4 loopback; 0 lets the OS choose.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=253))]
    pub source_ips: u8,
    /// WebSocket handshakes in flight at once while connecting; bounded so a big run does not
    /// overflow the server's accept backlog and turn into SYN retransmits.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: u32,
    /// Poll the sockets without ever sleeping, so the server's core does not pay for waking
    /// the tool on every delivery (on loopback it does; on a real network it would not).
    /// Takes a whole core; use it only with the tool pinned to its own.
    #[arg(long)]
    pub spin: bool,
    /// Print one JSON object instead of the human-readable summary.
    #[arg(long)]
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.command.threads();
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bakend-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if cli.command.spin() {
            spin();
        }
        match &cli.command {
            Command::RestCreate(args) => rest_create::run(args).await,
            Command::RestRead(args) => rest_read::run(args).await,
            Command::RestLogin(args) => login::run(args).await,
            Command::Fanout(args) => fanout::run(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::OwnerFanout(args) => owner_fanout::run(args).await,
            Command::Churn(args) => churn::run(args).await,
            Command::FilteredFanout(args) => filtered_fanout::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::LoopbackFloor(args) => floor::run(args).await,
        }
    });
    // Connection tasks of requests cut off at the deadline may still be waiting on the
    // server; they carry no results, so do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bakend-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
