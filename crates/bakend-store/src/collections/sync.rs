//! Bringing collections up at start-up: the registry from the database, then the definitions in
//! `collections/*.json`.
//!
//! Everything is checked before anything is written: a bad file stops start-up with a message
//! naming the file and the problem, and leaves the database exactly as it was. What passes is
//! applied in one transaction. The same code serves `bak migrate status` and `apply`, with the
//! one planner in `migrate.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sql::Conn;
use bakend_core::{Event, EventSource, time};
use serde_json::Value;

use super::definition::{self, Parsed};
use super::migrate::{self, Blocker};
use super::registry::{Collection, Registry};
use super::schema;
use crate::db::{Committed, Database};
use crate::error::StoreError;

/// A definition read from a file.
#[derive(Debug)]
pub struct FileDefinition {
    pub path: PathBuf,
    pub parsed: Parsed,
}

/// Reads and validates every `*.json` in `dir` (sorted by file name; non-recursive). A missing
/// directory means no definitions. Needs no database.
pub fn read_dir(dir: &Path) -> Result<Vec<FileDefinition>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StoreError::Definition(format!(
                "Cannot read collections directory {}: {e}",
                dir.display()
            )));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    paths.sort();
    let mut out: Vec<FileDefinition> = Vec::new();
    for path in paths {
        let shown = path.display();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StoreError::Definition(format!("{shown}: cannot read: {e}")))?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Definition(format!("{shown}: invalid JSON: {e}")))?;
        let parsed = definition::parse(&raw)
            .map_err(|errs| StoreError::Definition(format!("{shown}: {}", errs.join("; "))))?;
        if let Some(other) = out.iter().find(|o| o.parsed.def.name == parsed.def.name) {
            return Err(StoreError::Definition(format!(
                "{shown}: collection \"{}\" is also defined in {}",
                parsed.def.name,
                other.path.display()
            )));
        }
        out.push(FileDefinition { path, parsed });
    }
    Ok(out)
}

/// Checks relation targets among the files alone: for a database that does not exist yet, so
/// a bad reference is refused before the database file is created.
pub fn check_relations_among(files: &[FileDefinition]) -> Result<(), StoreError> {
    let names: Vec<&str> = files.iter().map(|f| f.parsed.def.name.as_str()).collect();
    for f in files {
        definition::check_relations(&f.parsed.def, &|n| names.contains(&n)).map_err(|errs| {
            StoreError::Definition(format!("{}: {}", f.path.display(), errs.join("; ")))
        })?;
    }
    Ok(())
}

/// Every collection stored in the database, sorted by name.
pub fn load_all(conn: &Conn) -> Result<Vec<Collection>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, definition, created_at, updated_at FROM _collections ORDER BY name",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<String>(1)?,
            r.get::<String>(2)?,
            r.get::<String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, text, created, updated) = row?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| {
            StoreError::Definition(format!("stored definition of \"{name}\" is not JSON: {e}"))
        })?;
        let parsed = definition::parse(&raw).map_err(|errs| {
            StoreError::Definition(format!(
                "stored definition of \"{name}\" is invalid: {}",
                errs.join("; ")
            ))
        })?;
        out.push(Collection::new(parsed.def, raw, created, updated));
    }
    Ok(out)
}

/// Inserts the metadata row and creates the table, inside the caller's transaction.
pub fn create_in(conn: &Conn, parsed: &Parsed) -> Result<Collection, StoreError> {
    schema::check_names(conn.backend(), &parsed.def)?;
    let now = time::now_iso();
    conn.execute(
        "INSERT INTO _collections(name, definition, created_at, updated_at) VALUES(?1, ?2, ?3, ?3)",
        (&parsed.def.name, parsed.raw.to_string(), &now),
    )?;
    schema::create(conn, &parsed.def)?;
    // A collection of the same name may have existed, with other column types.
    schema::forget_statements(conn);
    Ok(Collection::new(
        parsed.def.clone(),
        parsed.raw.clone(),
        now.clone(),
        now,
    ))
}

/// One collection brought up to date from its file.
#[derive(Debug)]
pub struct Updated {
    pub name: String,
    pub file: PathBuf,
    pub changes: Vec<String>,
    /// Problems `--force` pushed through (`bak migrate apply --force` only).
    pub forced: Vec<Blocker>,
}

/// What a sync did, for the log or the command line.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<Updated>,
    pub recreated_tables: Vec<String>,
}

/// Who is syncing: the server at start-up applies only what needs no table rebuild and no
/// decision; `bak migrate apply` applies everything the rows allow (with `force`, also what
/// loses or invalidates data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Startup,
    Apply { force: bool },
}

/// The outcome of [`sync_in`], before its commit.
pub struct Synced {
    pub report: SyncReport,
    pub events: Vec<Event>,
    /// Every collection as it is after the sync.
    pub collections: Vec<Collection>,
}

fn collection_event(kind: &str, name: &str) -> Event {
    Event::new(
        format!("system.collection.{kind}"),
        EventSource::Collections,
        serde_json::json!({ "name": name }),
    )
}

/// Re-creates missing tables and applies the file definitions inside the caller's transaction:
/// new collections are created, changed ones migrated (see [`Mode`]). All or nothing: the
/// first refusal returns an error and the caller's rollback undoes the rest.
pub fn sync_in(conn: &Conn, files: &[FileDefinition], mode: Mode) -> Result<Synced, StoreError> {
    // Servers starting at once on PostgreSQL take turns; each finds what the last one did.
    schema::lock_collections(conn)?;
    let existing = load_all(conn)?;
    let by_name: HashMap<String, &Collection> =
        existing.iter().map(|c| (c.def.name.clone(), c)).collect();
    let mut report = SyncReport::default();
    let mut events = Vec::new();

    for c in &existing {
        if !schema::table_exists(conn, &c.def.name)? {
            schema::create(conn, &c.def)?;
            report.recreated_tables.push(c.def.name.clone());
        } else {
            // Indexes the server adds itself can change between versions; a database from
            // before row counts (or restored from one) is counted once.
            schema::sync_indexes(conn, &c.def)?;
            super::counts::ensure(conn, &c.def.name)?;
        }
    }

    let file_names: Vec<&str> = files.iter().map(|f| f.parsed.def.name.as_str()).collect();
    let mut next: HashMap<String, Collection> = HashMap::new();
    for f in files {
        let shown = f.path.display();
        definition::check_relations(&f.parsed.def, &|n| {
            by_name.contains_key(n) || file_names.contains(&n)
        })
        .map_err(|errs| StoreError::Definition(format!("{shown}: {}", errs.join("; "))))?;
        let name = &f.parsed.def.name;
        match by_name.get(name) {
            None => {
                let c = create_in(conn, &f.parsed)?;
                events.push(collection_event("created", name));
                report.created.push(name.clone());
                next.insert(name.clone(), c);
            }
            Some(old) if old.def == f.parsed.def => {}
            Some(old) => {
                let plan = migrate::plan(&old.def, &f.parsed.def);
                let force = match mode {
                    Mode::Startup if !plan.is_automatic() => {
                        return Err(StoreError::Definition(format!(
                            "{shown}: collection \"{name}\" differs from the database in a way that is not applied at start-up: it {}. Review it with `bak migrate status` and apply it with `bak migrate apply` (or restore the file).",
                            plan.changes.join("; it ")
                        )));
                    }
                    Mode::Startup => false,
                    Mode::Apply { force } => force,
                };
                let forced = match migrate::execute(conn, &old.def, &f.parsed.def, &plan, force) {
                    Ok(forced) => forced,
                    Err(StoreError::Blocked(b)) if mode == Mode::Startup => {
                        return Err(StoreError::Definition(format!(
                            "{shown}: {b}. Fix the records or the file; `bak migrate status` shows the details."
                        )));
                    }
                    Err(e) => return Err(e),
                };
                let now = time::now_iso();
                conn.execute(
                    "UPDATE _collections SET definition = ?1, updated_at = ?2 WHERE name = ?3",
                    (f.parsed.raw.to_string(), &now, name),
                )?;
                events.push(collection_event("updated", name));
                report.updated.push(Updated {
                    name: name.clone(),
                    file: f.path.clone(),
                    changes: plan.changes,
                    forced,
                });
                next.insert(
                    name.clone(),
                    Collection::new(
                        f.parsed.def.clone(),
                        f.parsed.raw.clone(),
                        old.created_at.clone(),
                        now,
                    ),
                );
            }
        }
    }
    let mut collections: Vec<Collection> = Vec::new();
    for c in existing {
        if !next.contains_key(&c.def.name) {
            collections.push(c);
        }
    }
    collections.extend(next.into_values());
    Ok(Synced {
        report,
        events,
        collections,
    })
}

/// Start-up: loads the registry from the database, re-creates missing tables, and applies the
/// file definitions ([`Mode::Startup`]). All or nothing.
pub async fn apply(
    db: &Database,
    registry: &Arc<Registry>,
    files: Vec<FileDefinition>,
) -> Result<SyncReport, StoreError> {
    let registry = registry.clone();
    db.write(move |conn| {
        let synced = sync_in(conn, &files, Mode::Startup)?;
        let all: Vec<Arc<Collection>> = synced.collections.into_iter().map(Arc::new).collect();
        let mut committed = Committed::new(synced.report).then(move || {
            for c in all {
                registry.put(c);
            }
        });
        committed.events = synced.events;
        Ok(committed)
    })
    .await
}

/// How a collection in the files compares with the database.
#[derive(Debug)]
pub enum Status {
    /// Same definition (semantically: key order and spelled-out defaults do not count).
    Synced,
    /// Differs; `blockers` are the rows that stop `bak migrate apply` (or need `--force`).
    Drift {
        plan: Box<migrate::Plan>,
        blockers: Vec<Blocker>,
    },
    /// Only in a file: `apply` creates it.
    FileOnly,
    /// Only in the database: `export` writes its file; `apply` leaves it alone.
    DbOnly,
}

#[derive(Debug)]
pub struct StatusEntry {
    pub name: String,
    pub file: Option<PathBuf>,
    pub status: Status,
}

/// Compares every collection in files and database, sorted by name. Read-only.
pub fn status(conn: &Conn, files: &[FileDefinition]) -> Result<Vec<StatusEntry>, StoreError> {
    let existing = load_all(conn)?;
    let mut out = Vec::new();
    for f in files {
        let name = f.parsed.def.name.clone();
        let status = match existing.iter().find(|c| c.def.name == name) {
            None => Status::FileOnly,
            Some(old) if old.def == f.parsed.def => Status::Synced,
            Some(old) => {
                let plan = migrate::plan(&old.def, &f.parsed.def);
                let blockers = if schema::table_exists(conn, &name)? {
                    migrate::scan(conn, &old.def, &f.parsed.def, &plan)?
                } else {
                    Vec::new()
                };
                Status::Drift {
                    plan: Box::new(plan),
                    blockers,
                }
            }
        };
        out.push(StatusEntry {
            name,
            file: Some(f.path.clone()),
            status,
        });
    }
    for c in existing {
        if !files.iter().any(|f| f.parsed.def.name == c.def.name) {
            out.push(StatusEntry {
                name: c.def.name.clone(),
                file: None,
                status: Status::DbOnly,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
