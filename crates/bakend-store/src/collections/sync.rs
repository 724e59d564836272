//! Bringing collections up at start-up: the registry from the database, then the definitions in
//! `collections/*.json`.
//!
//! Everything is checked before anything is written: a bad file stops start-up with a message
//! naming the file and the problem, and leaves the database exactly as it was. What passes is
//! applied in one transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bakend_core::{Event, EventSource, time};
use rusqlite::Connection;
use serde_json::Value;

use super::definition::{self, Parsed};
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

fn load_all(conn: &Connection) -> Result<Vec<Collection>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, definition, created_at, updated_at FROM _collections ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
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

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Inserts the metadata row and creates the table, inside the caller's transaction.
pub fn create_in(conn: &Connection, parsed: &Parsed) -> Result<Collection, StoreError> {
    let now = time::now_iso();
    conn.execute(
        "INSERT INTO _collections(name, definition, created_at, updated_at) VALUES(?1, ?2, ?3, ?3)",
        (&parsed.def.name, parsed.raw.to_string(), &now),
    )?;
    for stmt in schema::create_sql(&parsed.def) {
        conn.execute(&stmt, [])?;
    }
    Ok(Collection::new(
        parsed.def.clone(),
        parsed.raw.clone(),
        now.clone(),
        now,
    ))
}

/// What start-up did, for the log.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub created: Vec<String>,
    /// `(collection, file, changes)`
    pub updated: Vec<(String, PathBuf, Vec<String>)>,
    pub recreated_tables: Vec<String>,
}

/// Loads the registry from the database, re-creates missing tables, and applies the file
/// definitions: new collections are created, safe changes applied, anything else refused with
/// a message naming the file, the difference and the way out. All or nothing.
pub async fn apply(
    db: &Database,
    registry: &Arc<Registry>,
    files: Vec<FileDefinition>,
) -> Result<SyncReport, StoreError> {
    let registry = registry.clone();
    db.write(move |conn| {
        let existing = load_all(conn)?;
        let by_name: HashMap<String, &Collection> =
            existing.iter().map(|c| (c.def.name.clone(), c)).collect();
        let mut report = SyncReport::default();
        let mut events = Vec::new();

        for c in &existing {
            if !table_exists(conn, &c.def.name)? {
                for stmt in schema::create_sql(&c.def) {
                    conn.execute(&stmt, [])?;
                }
                report.recreated_tables.push(c.def.name.clone());
            }
        }

        let file_names: Vec<&str> = files.iter().map(|f| f.parsed.def.name.as_str()).collect();
        let mut next: HashMap<String, Collection> = HashMap::new();
        for f in &files {
            let shown = f.path.display();
            definition::check_relations(&f.parsed.def, &|n| {
                by_name.contains_key(n) || file_names.contains(&n)
            })
            .map_err(|errs| StoreError::Definition(format!("{shown}: {}", errs.join("; "))))?;
            let name = &f.parsed.def.name;
            match by_name.get(name) {
                None => {
                    let c = create_in(conn, &f.parsed)?;
                    events.push(Event::new(
                        "system.collection.created",
                        EventSource::Collections,
                        serde_json::json!({ "name": name }),
                    ));
                    report.created.push(name.clone());
                    next.insert(name.clone(), c);
                }
                Some(old) if old.def == f.parsed.def => {}
                Some(old) => {
                    let plan = schema::plan(&old.def, &f.parsed.def);
                    if !plan.refused.is_empty() {
                        return Err(StoreError::Definition(format!(
                            "{shown}: collection \"{name}\" differs from the database in a way that cannot be applied automatically: it {}. Restore the file, or migrate explicitly with `bak migrate apply`.",
                            plan.refused.join("; it ")
                        )));
                    }
                    for stmt in &plan.ddl {
                        conn.execute(stmt, [])?;
                    }
                    let now = time::now_iso();
                    conn.execute(
                        "UPDATE _collections SET definition = ?1, updated_at = ?2 WHERE name = ?3",
                        (f.parsed.raw.to_string(), &now, name),
                    )?;
                    events.push(Event::new(
                        "system.collection.updated",
                        EventSource::Collections,
                        serde_json::json!({ "name": name }),
                    ));
                    report.updated.push((name.clone(), f.path.clone(), plan.changes));
                    next.insert(
                        name.clone(),
                        Collection::new(f.parsed.def.clone(), f.parsed.raw.clone(), old.created_at.clone(), now),
                    );
                }
            }
        }
        let mut all: Vec<Arc<Collection>> = Vec::new();
        for c in existing {
            if !next.contains_key(&c.def.name) {
                all.push(Arc::new(c));
            }
        }
        all.extend(next.into_values().map(Arc::new));
        let mut committed = Committed::new(report).then(move || {
            for c in all {
                registry.put(c);
            }
        });
        committed.events = events;
        Ok(committed)
    })
    .await
}
