//! `bak`: the command line (spec `cli-and-config.md` §1–2).

mod cli;
mod init;
mod start;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
