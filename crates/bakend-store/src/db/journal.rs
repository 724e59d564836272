//! The event journal: every event a write emits is appended to `_events` inside the write's own
//! transaction, numbered in commit order, so a realtime client that reconnects can be sent
//! exactly what it missed. The `epoch` names one continuous history; it changes when that
//! history is broken (rows removed by anything but the trimmer, a restore from backup), telling
//! clients that sequence numbers from before cannot be resumed.

use rusqlite::{Connection, OptionalExtension, params};

use bakend_core::Event;

use super::migrations::{meta_get, meta_set};
use crate::error::StoreError;

pub const EPOCH_KEY: &str = "journal_epoch";
/// Every seq up to this one was removed by the trimmer (0: nothing trimmed yet).
pub const TRIMMED_KEY: &str = "journal_trimmed_through";

/// The journal as found at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalInfo {
    pub epoch: String,
    pub last_seq: u64,
}

/// The highest seq ever assigned: the newest row, or — when trimming emptied the table — how
/// far the trimmer went (both are single b-tree lookups).
pub fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM _events")?
        .query_row([], |r| r.get(0))?;
    let trimmed: Option<String> = conn
        .prepare_cached("SELECT value FROM _bakend_meta WHERE key = ?1")?
        .query_row([TRIMMED_KEY], |r| r.get(0))
        .optional()?;
    let trimmed = trimmed.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((newest.unwrap_or(0).max(0) as u64).max(trimmed))
}

fn oldest_seq(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row("SELECT min(seq) FROM _events", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.map(|n| n.max(0) as u64))
}

fn trimmed_through(conn: &Connection) -> Result<u64, StoreError> {
    Ok(meta_get(conn, TRIMMED_KEY)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Makes sure the journal has an epoch, starting a new one if rows went missing behind the
/// trimmer's back. Runs at open, before the writer starts.
pub(crate) fn open(conn: &Connection) -> Result<JournalInfo, StoreError> {
    let last = last_seq(conn)?;
    let trimmed = trimmed_through(conn)?;
    // Everything after `trimmed` should still be there: the oldest row is `trimmed + 1`, or
    // the table is empty because nothing after `trimmed` was ever written. (Rows deleted from
    // the new end cannot be told from rows never written; the epoch also changes on restore.)
    let continuous = match oldest_seq(conn)? {
        Some(oldest) => oldest <= trimmed + 1,
        None => last <= trimmed,
    };
    let epoch = match meta_get(conn, EPOCH_KEY)? {
        Some(e) if continuous => e,
        previous => {
            let e = bakend_core::ids::new_id("ep_");
            if previous.is_some() {
                tracing::warn!(
                    "The event journal is not continuous (rows were removed outside retention): starting journal epoch {e}; realtime clients will refetch instead of resuming"
                );
            }
            meta_set(conn, EPOCH_KEY, &e)?;
            let through = oldest_seq(conn)?
                .map(|o| o.saturating_sub(1))
                .unwrap_or(last);
            meta_set(conn, TRIMMED_KEY, &through.to_string())?;
            e
        }
    };
    Ok(JournalInfo {
        epoch,
        last_seq: last,
    })
}

/// Numbers `event` with `seq` and appends it (inside the caller's transaction).
pub(crate) fn append(conn: &Connection, event: &mut Event, seq: u64) -> rusqlite::Result<()> {
    event.seq = Some(seq);
    let record = if event.source == bakend_core::EventSource::Collections {
        event.payload.get("id").and_then(|v| v.as_str())
    } else {
        None
    };
    conn.prepare_cached(
        "INSERT INTO _events (seq, type, subject, record, envelope, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        seq as i64,
        event.event_type,
        event.subject,
        record,
        &*event.envelope_json(),
        chrono_ms(),
    ])?;
    Ok(())
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Accepts `(event type, record id)` of the events a reader wants.
pub type EventFilter = Box<dyn Fn(&str, Option<&str>) -> bool + Send>;

/// One journaled event as read back.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    pub seq: u64,
    pub subject: Option<String>,
    pub envelope: String,
}

/// Events with `after < seq <= upto` accepted by `wanted(type, record)`, oldest first, at most
/// `limit`. `None` when events after `after` have been trimmed (the gap cannot be filled), or
/// when more than `limit` events match.
pub fn read_range(
    conn: &Connection,
    after: u64,
    upto: u64,
    limit: usize,
    wanted: &dyn Fn(&str, Option<&str>) -> bool,
) -> Result<Option<Vec<JournalEntry>>, StoreError> {
    if after < trimmed_through(conn)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, type, record, subject, envelope FROM _events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![after as i64, upto as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let t: String = row.get(1)?;
        let record: Option<String> = row.get(2)?;
        if !wanted(&t, record.as_deref()) {
            continue;
        }
        if out.len() >= limit {
            return Ok(None);
        }
        out.push(JournalEntry {
            seq: row.get::<_, i64>(0)? as u64,
            subject: row.get(3)?,
            envelope: row.get(4)?,
        });
    }
    Ok(Some(out))
}

/// Deletes the oldest rows beyond `max_events` or older than `max_age_ms`, at most `chunk` at
/// a time, recording how far it trimmed. Returns the rows deleted. The age is checked on the
/// oldest `chunk` rows in seq order (journaled times only grow), so no index is needed.
pub(crate) fn trim_chunk(
    conn: &Connection,
    max_events: u64,
    max_age_ms: i64,
    chunk: u64,
) -> Result<u64, StoreError> {
    let last = last_seq(conn)?;
    let Some(oldest) = oldest_seq(conn)? else {
        return Ok(0);
    };
    let by_count = last.saturating_sub(max_events);
    let cutoff = chrono_ms() - max_age_ms;
    let by_age: u64 = conn
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq, created_ms FROM _events ORDER BY seq LIMIT ?1) WHERE created_ms < ?2",
        )?
        .query_row(params![chunk as i64, cutoff], |r| r.get::<_, Option<i64>>(0))?
        .map(|n| n.max(0) as u64)
        .unwrap_or(0);
    let target = by_count.max(by_age).min(oldest.saturating_sub(1) + chunk);
    if target < oldest {
        return Ok(0);
    }
    let n = conn.execute("DELETE FROM _events WHERE seq <= ?1", [target as i64])?;
    meta_set(conn, TRIMMED_KEY, &target.to_string())?;
    Ok(n as u64)
}
