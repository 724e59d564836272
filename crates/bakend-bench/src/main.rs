//! `bakend-bench`: a load generator for a running `bak` server. Each scenario is a subcommand
//! in its own module; they share the keep-alive client ([`http`]) and the accounting and
//! reporting ([`stats`]) so every scenario's figures mean the same thing.

mod http;
mod rest_create;
mod stats;

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
}

impl Command {
    fn run_args(&self) -> &RunArgs {
        match self {
            Command::RestCreate(a) => &a.run,
        }
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.command.run_args().threads;
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
        match &cli.command {
            Command::RestCreate(args) => rest_create::run(args).await,
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
