//! `bak storage prune`: removes, in one run, every file row no record references that is older
//! than a grace period, and every blob without a row (older than the grace period too, so an
//! upload whose row is about to commit is left alone).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bakend_core::{Event, EventSource};
use bakend_store::collections::definition::{FieldType, parse};
use bakend_store::collections::schema::quote;
use bakend_store::sql::Conn;
use bakend_store::{Committed, StoreError};
use serde_json::{Value, json};

use crate::error::StorageError;
use crate::files::FileService;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// File rows (and their blobs) removed, or that would be with `dry_run`.
    pub files: Vec<String>,
    /// Blobs without a row removed (or that would be).
    pub blobs: Vec<String>,
}

/// Every non-empty value of every `file` field of every collection (a value counts even if it
/// is not a real file id).
pub fn referenced_ids(conn: &Conn) -> Result<HashSet<String>, StoreError> {
    let defs: Vec<String> = conn
        .prepare("SELECT definition FROM _collections")?
        .query_map((), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = HashSet::new();
    for text in defs {
        let Ok(raw) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Ok(parsed) = parse(&raw) else { continue };
        let def = parsed.def;
        for f in def.fields.iter().filter(|f| f.kind == FieldType::File) {
            let sql = format!(
                "SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL AND {col} != ''",
                col = quote(&f.name),
                table = quote(&def.name)
            );
            let mut stmt = conn.prepare(&sql)?;
            let values = stmt.query_map((), |r| r.get::<bakend_store::sql::Value>(0))?;
            for v in values {
                if let bakend_store::sql::Value::Text(s) = v? {
                    out.insert(s);
                }
            }
        }
    }
    Ok(out)
}

/// Runs a prune. `grace`: rows and blobs younger than this are kept. With `dry_run` nothing is
/// removed and the report says what would be.
pub async fn prune(
    files: &FileService,
    grace: Duration,
    dry_run: bool,
) -> Result<PruneReport, StorageError> {
    let now = SystemTime::now();
    let cutoff = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_iso = bakend_core::time::to_iso(cutoff.into());
    let db = files.database().clone();

    // Orphan rows: decided inside one write, so a record attaching a file cannot race it.
    let orphans: Vec<(String, String)> = if dry_run {
        let cutoff = cutoff_iso.clone();
        db.read(move |conn| orphan_rows(conn, &cutoff)).await?
    } else {
        let cutoff = cutoff_iso.clone();
        db.write(move |conn| {
            let rows = orphan_rows(conn, &cutoff)?;
            let mut del = conn.prepare_cached("DELETE FROM _files WHERE id = ?1")?;
            for (id, _) in &rows {
                del.execute([id])?;
            }
            drop(del);
            let events: Vec<Event> = rows
                .iter()
                .map(|(id, user)| {
                    Event::new(
                        "storage.deleted",
                        EventSource::Storage,
                        json!({ "id": id, "userId": user }),
                    )
                    .about(Some(user.clone()))
                })
                .collect();
            let mut c = Committed::new(rows);
            c.events = events;
            Ok(c)
        })
        .await?
    };
    let ids: Vec<String> = orphans.into_iter().map(|(id, _)| id).collect();
    if !dry_run {
        files.unlink(ids.clone()).await;
    }

    // Orphan blobs: listed after the rows are settled.
    let known: HashSet<String> = db
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM _files")?;
            let ids = stmt
                .query_map((), |r| r.get::<String>(0))?
                .collect::<Result<HashSet<_>, _>>()?;
            Ok(ids)
        })
        .await?;
    let blobs = files.blobs().clone();
    let removed_rows: HashSet<String> = ids.iter().cloned().collect();
    let stray = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
        let mut stray: Vec<String> = blobs
            .list()?
            .into_iter()
            .filter(|b| !known.contains(&b.id) && !removed_rows.contains(&b.id))
            .filter(|b| b.modified <= cutoff)
            .map(|b| b.id)
            .collect();
        stray.sort();
        if !dry_run {
            for id in &stray {
                blobs.delete(id)?;
            }
        }
        Ok(stray)
    })
    .await??;
    Ok(PruneReport {
        files: ids,
        blobs: stray,
    })
}

fn orphan_rows(conn: &Conn, cutoff_iso: &str) -> Result<Vec<(String, String)>, StoreError> {
    let referenced = referenced_ids(conn)?;
    let mut stmt = conn
        .prepare("SELECT id, user_id FROM _files WHERE created_at < ?1 ORDER BY created_at, id")?;
    let rows = stmt
        .query_map([cutoff_iso], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(String, String)>, _>>()?;
    Ok(rows
        .into_iter()
        .filter(|(id, _)| !referenced.contains(id))
        .collect())
}
