//! The servers ("nodes") sharing one PostgreSQL database (docs/cluster.md): each one writes a
//! heartbeat with its realtime stats to `_nodes` every [`HEARTBEAT`]. A node seen within
//! [`ALIVE`] is up; one not seen for longer is gone (stopped, killed or cut off), and what it
//! was doing (a job run, the triggers of its last events) is someone else's to finish.

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

/// Node `id`'s heartbeat (`now` in ms), with its stats and how far its triggers have run.
pub struct Beat<'a> {
    pub id: &'a str,
    pub started_at: i64,
    pub now: i64,
    pub stats: &'a str,
    /// Every event this node committed up to this seq has had its triggers run (`None`: it
    /// runs no triggers).
    pub triggers_done: Option<u64>,
}

/// Writes a heartbeat.
pub fn beat(conn: &Conn, b: &Beat) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _nodes (id, started_at, seen_at, stats, triggers_done) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,
             seen_at = excluded.seen_at, stats = excluded.stats,
             triggers_done = excluded.triggers_done",
        (
            b.id,
            b.started_at,
            b.now,
            b.stats,
            b.triggers_done.map(|s| s as i64),
        ),
    )?;
    Ok(())
}

/// Takes over the nodes not seen since `since` (ms) — and, at start, this node's own row from
/// an earlier life (`me`: the same `cluster.nodeId`) — by removing their rows: each comes back
/// once, to the one caller whose delete removed it, with how far its triggers had run.
pub fn take_over(
    conn: &Conn,
    me: Option<&str>,
    since: i64,
) -> Result<Vec<(String, Option<u64>)>, StoreError> {
    let me = me.unwrap_or("");
    let mut stmt = conn
        .prepare("SELECT id, triggers_done, seen_at FROM _nodes WHERE seen_at < ?1 OR id = ?2")?;
    let rows: Vec<(String, Option<i64>, i64)> = stmt
        .query_map((since, me), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut taken = Vec::new();
    for (id, done, seen_at) in rows {
        let n = conn.execute(
            "DELETE FROM _nodes WHERE id = ?1 AND seen_at = ?2",
            (&id, seen_at),
        )?;
        if n == 1 {
            taken.push((id, done.map(|d| d as u64)));
        }
    }
    Ok(taken)
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
