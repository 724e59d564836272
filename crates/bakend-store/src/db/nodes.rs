//! The servers ("nodes") sharing one PostgreSQL database (docs/cluster.md): each one writes a
//! heartbeat with its realtime stats to `_nodes` every [`HEARTBEAT`]. A node seen within
//! [`ALIVE`] is up; one not seen for longer is gone (stopped, killed or cut off), and what it
//! was doing (a job run) is someone else's to clean up.

use std::time::Duration;

use crate::error::StoreError;
use crate::sql::{Conn, OptionalExtension};

/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not seen for this long is taken for gone.
pub const ALIVE: Duration = Duration::from_secs(10);

/// One node as its last heartbeat left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub started_at: i64,
    /// Milliseconds since the epoch.
    pub seen_at: i64,
    /// The node's stats (JSON), as of `seen_at`.
    pub stats: String,
}

/// Writes node `id`'s heartbeat (`now` in ms).
pub fn beat(
    conn: &Conn,
    id: &str,
    started_at: i64,
    now: i64,
    stats: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _nodes (id, started_at, seen_at, stats) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,
             seen_at = excluded.seen_at, stats = excluded.stats",
        (id, started_at, now, stats),
    )?;
    Ok(())
}

/// A node that stops says so, so it is not counted until it times out.
pub fn leave(conn: &Conn, id: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM _nodes WHERE id = ?1", (id,))?;
    Ok(())
}

/// The nodes seen since `since` (ms), by id.
pub fn seen_since(conn: &Conn, since: i64) -> Result<Vec<NodeRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, started_at, seen_at, stats FROM _nodes WHERE seen_at >= ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map((since,), |r| {
        Ok(NodeRow {
            id: r.get(0)?,
            started_at: r.get(1)?,
            seen_at: r.get(2)?,
            stats: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether node `id` was seen since `since` (ms).
pub fn is_alive(conn: &Conn, id: &str, since: i64) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM _nodes WHERE id = ?1 AND seen_at >= ?2",
            (id, since),
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false))
}
