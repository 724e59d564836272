//! `bak storage prune`: one run removes every unreferenced file row older than the grace period
//! (with its blob) and every blob that has no row. Safe while the server runs (SQLite WAL; the
//! decision and the row deletions happen in one write transaction).
//!
//! The `storage.deleted` events of a prune are emitted on this process's own bus: they cannot
//! reach the clients of a running server, which is another process. `--print-events` prints
//! them instead (see docs/storage.md).

use std::sync::Arc;

use anyhow::{Context, anyhow};
use bakend_core::config::{Config, parse_ttl};
use bakend_events::{EventBus, LocalBus};
use bakend_storage::FileService;
use bakend_store::Database;

use crate::cli::Cli;

pub fn prune(cli: &Cli, grace: &str, dry_run: bool, print_events: bool) -> anyhow::Result<()> {
    let grace = parse_ttl(grace).ok_or_else(|| {
        anyhow!("Invalid --grace \"{grace}\": use a duration like \"30m\", \"1h\" or \"0s\"")
    })?;
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let bus: Arc<dyn EventBus> = LocalBus::new();
    let mut events = bus.subscribe("prune", 10_000_000);
    let db = Arc::new(Database::open(&config.database, bus)?);
    // Multi-thread: an S3 store's blocking calls wait on requests another thread drives.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let blobs = bakend_storage::open_blobs(&config.storage, config.s3.as_ref()).await?;
        let files = FileService::new(db.clone(), blobs, config.max_file_size);
        anyhow::Ok(bakend_storage::prune(&files, grace, dry_run).await?)
    });
    db.close();
    let report = report?;
    let verb = if dry_run { "Would remove" } else { "Removed" };
    if report.files.is_empty() && report.blobs.is_empty() {
        println!("No orphan files found.");
        return Ok(());
    }
    if !report.files.is_empty() {
        println!("{verb} {} orphan file(s):", report.files.len());
        for id in &report.files {
            println!("{id}");
        }
    }
    if !report.blobs.is_empty() {
        println!(
            "{verb} {} blob(s) without a metadata row:",
            report.blobs.len()
        );
        for id in &report.blobs {
            println!("{id}");
        }
    }
    if !dry_run && !report.files.is_empty() {
        if print_events {
            while let Some(e) = events.try_recv() {
                println!("{}", e.envelope_json());
            }
        }
        eprintln!(
            "Note: storage.deleted events for these files are not delivered to a running server's realtime clients (the CLI is a separate process){}.",
            if print_events {
                ""
            } else {
                "; --print-events prints them"
            }
        );
    }
    Ok(())
}
