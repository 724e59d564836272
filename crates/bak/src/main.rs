//! `bak`: the command line (spec `cli-and-config.md` §1–2).

mod admin;
mod backup;
mod backup_archive;
mod cli;
mod functions;
mod init;
mod jobs;
mod migrate;
mod start;
mod storage;

use std::process::ExitCode;

/// glibc malloc spends a tenth of the writer thread's time consolidating and trimming its heap
/// under the mix of small (JSON) and page-sized (SQLite cache) allocations; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run()
}
