//! `bak functions list`: loads the project's functions in a throwaway runtime (no server, no
//! database) and prints one trigger per line.

use bakend_core::config::Config;
use bakend_functions::FunctionsHost;

use crate::cli::Cli;

pub fn list(cli: &Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let triggers = FunctionsHost::list(&config.project_dir)?;
    if triggers.is_empty() {
        println!("No function triggers registered.");
    }
    for t in triggers {
        println!(
            "{}\t{}\t{}\t{}",
            t.collection.as_deref().unwrap_or("-"),
            t.trigger,
            t.event_type,
            t.file
        );
    }
    Ok(())
}
