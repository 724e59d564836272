//! `bak migrate status | apply [--force] | export`: keeping `collections/*.json` and the
//! database in step (spec `collections.md` §4–5; planner in `bakend-store`'s
//! `collections/migrate.rs`, shared with start-up and the admin API).
//!
//! `status` and `export` only read the database and are safe while a server runs. `apply`
//! changes tables under the server's feet, so it takes the database lock and refuses while a
//! server runs (the running server's admin API makes the same changes online). All of `apply`
//! happens in one transaction: refused, failed or killed, it leaves the database as it was.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bakend_core::config::{Config, DatabaseLocation};
use bakend_events::LocalBus;
use bakend_store::collections::sync::{self, FileDefinition, Mode, Status};
use bakend_store::collections::{files, migrate::Blocked};
use bakend_store::db::DbLock;
use bakend_store::sql::Backend;
use bakend_store::{Committed, Database, StoreError};

use crate::cli::Cli;

/// Test hook: holds `apply`'s transaction open this long before committing, so a test can kill
/// the process mid-migration.
const HOLD_ENV: &str = "BAKEND_TEST_MIGRATE_HOLD_MS";

struct Project {
    config: Config,
    files: Vec<FileDefinition>,
    runtime: tokio::runtime::Runtime,
}

fn project(cli: &Cli) -> anyhow::Result<Project> {
    let config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    let files = sync::read_dir(&config.project_dir.join("collections"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    Ok(Project {
        config,
        files,
        runtime,
    })
}

fn open(config: &Config) -> anyhow::Result<Arc<Database>> {
    Ok(Arc::new(Database::open(&config.database, LocalBus::new())?))
}

/// How `apply` carries out a plan that rewrites rows: SQLite copies them into a new table,
/// PostgreSQL alters the table in place.
fn rewrite_wording(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "rebuilds the table",
        Backend::Postgres => "alters the table in place",
    }
}

/// Prints the difference; `Ok(false)` when files and database differ.
pub fn status(cli: &Cli) -> anyhow::Result<bool> {
    let p = project(cli)?;
    let db = open(&p.config)?;
    let files = p.files;
    let reader = db.clone();
    let entries = p
        .runtime
        .block_on(reader.read(move |conn| sync::status(conn, &files)));
    db.close();
    let entries = entries?;
    if entries.is_empty() {
        println!("No collections found in files or database.");
        return Ok(true);
    }
    let backend = db.backend();
    let mut in_step = true;
    for e in &entries {
        match &e.status {
            Status::Synced => println!("{}\tsynced", e.name),
            Status::FileOnly => {
                in_step = false;
                println!("{}\tfile_only\t(apply creates it)", e.name);
            }
            Status::DbOnly => {
                in_step = false;
                println!(
                    "{}\tdb_only\t(not in any file; export writes it, apply leaves it alone)",
                    e.name
                );
            }
            Status::Drift { plan, blockers } => {
                in_step = false;
                println!("{}\tdrift", e.name);
                for c in &plan.changes {
                    println!("  {c}");
                }
                if plan.rebuild {
                    println!("  (apply {}, keeping every row)", rewrite_wording(backend));
                }
                for b in blockers {
                    let tag = if b.force.is_some() {
                        "needs --force"
                    } else {
                        "blocked"
                    };
                    println!("  {tag}: {b}");
                }
            }
        }
    }
    Ok(in_step)
}

fn blocked_message(b: &Blocked) -> String {
    let mut s = format!(
        "Collection \"{}\" cannot be migrated without losing or invalidating data:",
        b.collection
    );
    for x in &b.blockers {
        s.push_str(&format!("\n  {x}"));
    }
    let forceable = b.blockers.iter().all(|x| x.force.is_some());
    s.push_str("\nNothing was changed.");
    if forceable {
        s.push_str(" Re-run with --force to accept this.");
    }
    s
}

pub fn apply(cli: &Cli, force: bool) -> anyhow::Result<()> {
    let p = project(cli)?;
    // Held until this function returns, after the database is closed.
    let _lock = match &p.config.database {
        DatabaseLocation::File(path) => Some(DbLock::acquire_or(path, "Cannot apply migrations")?),
        DatabaseLocation::Memory => None,
        DatabaseLocation::Postgres(settings) => Some(DbLock::acquire_postgres_or(
            settings,
            "Cannot apply migrations",
        )?),
    };
    let db = open(&p.config)?;
    let hold = std::env::var(HOLD_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let files = p.files;
    let writer = db.clone();
    let result = p.runtime.block_on(writer.write(move |conn| {
        let synced = sync::sync_in(conn, &files, Mode::Apply { force })?;
        if let Some(ms) = hold {
            eprintln!("Holding the migration transaction open for {ms} ms ({HOLD_ENV})");
            std::thread::sleep(Duration::from_millis(ms));
        }
        // The events go to this process's own bus: a server is not running (see above).
        let mut c = Committed::new(synced.report);
        c.events = synced.events;
        Ok(c)
    }));
    db.close();
    let report = match result {
        Ok(r) => r,
        Err(StoreError::Blocked(b)) => return Err(anyhow!(blocked_message(&b))),
        Err(e) => return Err(e.into()),
    };
    for name in &report.recreated_tables {
        println!("recreated missing table {name}");
    }
    if report.created.is_empty() && report.updated.is_empty() {
        println!("No collection changes to apply.");
    }
    for name in &report.created {
        println!("created {name}");
    }
    for u in &report.updated {
        println!("updated {}", u.name);
        for c in &u.changes {
            println!("  {c}");
        }
        for b in &u.forced {
            println!("  forced: {b}");
        }
    }
    Ok(())
}

pub fn export(cli: &Cli) -> anyhow::Result<()> {
    let p = project(cli)?;
    let db = open(&p.config)?;
    let reader = db.clone();
    let all = p.runtime.block_on(reader.read(sync::load_all));
    db.close();
    let all = all?;
    if all.is_empty() {
        println!("No collections to export.");
        return Ok(());
    }
    let dir = p.config.project_dir.join("collections");
    let mut names = Vec::new();
    for c in &all {
        files::write_definition(&dir, c.name(), &c.raw)
            .with_context(|| format!("Cannot write the definition of {}", c.name()))?;
        names.push(c.name().to_string());
    }
    println!(
        "Exported {} collection(s): {}",
        names.len(),
        names.join(", ")
    );
    Ok(())
}
