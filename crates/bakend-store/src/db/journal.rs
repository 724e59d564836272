//! The event journal: every event a write emits is appended inside the write's own
//! transaction, numbered in commit order, so a realtime client that reconnects can be sent
//! exactly what it missed. The `epoch` names one continuous history; it changes when that
//! history is broken (rows removed by anything but the trimmer, a restore from backup), telling
//! clients that sequence numbers from before cannot be resumed.
//!
//! The journal is split into segment tables of `S` consecutive seqs (`_events_<n>` holds
//! `n * S ..= n * S + S - 1`), so retention drops whole tables instead of deleting row by row —
//! trimming then costs almost nothing next to the appends, even when it has to keep pace with
//! the API at full speed. `S` is fixed when the journal is created (meta `journal_segment`).
//!
//! A row of a record update or deletion also keeps the record as it was before (`previous`,
//! never sent to clients), so a filtered subscription that resumes can tell whether the record
//! entered, changed within or left its filter. Segments written before that column existed get
//! it (empty) when the journal is opened.

use crate::sql::{Backend, Conn, OptionalExtension, params};

use bakend_core::Event;

use super::migrations::{meta_get, meta_set};
use crate::error::StoreError;

pub const EPOCH_KEY: &str = "journal_epoch";
/// Every seq up to this one was removed by the trimmer (0: nothing trimmed yet).
pub const TRIMMED_KEY: &str = "journal_trimmed_through";
/// The last seq assigned (updated once per committed batch).
pub const LAST_KEY: &str = "journal_last_seq";
/// Seqs per segment table, fixed per database when its journal starts.
pub const SEGMENT_KEY: &str = "journal_segment";
/// The default segment size.
pub const DEFAULT_SEGMENT: u64 = 8192;
const PREFIX: &str = "_events_";

/// The journal as found at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalInfo {
    pub epoch: String,
    pub last_seq: u64,
}

pub(crate) fn table(segment: u64) -> String {
    format!("{PREFIX}{segment}")
}

/// The columns of a segment table. `previous` (added later; older segments get it at
/// [`open`]) is the record before an update or deletion, as JSON; `node` (added later too) the
/// server that committed the event when several share a PostgreSQL database (a lost node's
/// events are found by it, `docs/cluster.md`).
pub(crate) fn create_segment_sql(segment: u64, backend: Backend) -> String {
    // SQLite: `INTEGER PRIMARY KEY` is the rowid itself, no separate index.
    let int = match backend {
        Backend::Sqlite => "INTEGER",
        Backend::Postgres => "BIGINT",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
            seq {int} PRIMARY KEY,
            type TEXT NOT NULL,
            subject TEXT,
            record TEXT,
            envelope TEXT NOT NULL,
            created_ms {int} NOT NULL,
            previous TEXT,
            node TEXT
        )",
        table(segment)
    )
}

/// Adds `previous` and `node` to segment tables created before they existed (a schema change
/// only: SQLite does not rewrite the rows, which read them as NULL).
fn add_missing_columns(conn: &Conn) -> crate::sql::Result<()> {
    for s in segments(conn)? {
        for column in ["previous", "node"] {
            let sql = match conn.backend() {
                Backend::Sqlite => "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                Backend::Postgres => {
                    "SELECT count(*) FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = ?2"
                }
            };
            let has: i64 = conn.query_row(sql, params![table(s), column], |r| r.get(0))?;
            if has == 0 {
                conn.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {column} TEXT",
                    table(s)
                ))?;
            }
        }
    }
    Ok(())
}

/// Up to `limit` events that node `node` committed after seq `after`, in seq order (a lost
/// node's events whose triggers may not have run, `docs/cluster.md`).
pub fn node_events_after(
    conn: &Conn,
    node: &str,
    after: u64,
    limit: usize,
) -> crate::sql::Result<Vec<JournalEntry>> {
    let size = segment_size(conn)?;
    let mut out = Vec::new();
    for s in segments(conn)? {
        if (s + 1) * size <= after + 1 || out.len() >= limit {
            continue; // wholly at or before `after`
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, subject, envelope, previous FROM {} WHERE seq > ?1 AND node = ?2 ORDER BY seq LIMIT ?3",
            table(s)
        ))?;
        let rows = stmt.query_map(
            params![after as i64, node, (limit - out.len()) as i64],
            |row| {
                Ok(JournalEntry {
                    seq: row.get::<i64>(0)? as u64,
                    subject: row.get(1)?,
                    envelope: row.get(2)?,
                    previous: row.get(3)?,
                })
            },
        )?;
        for r in rows {
            out.push(r?);
        }
    }
    Ok(out)
}

fn meta_u64(conn: &Conn, key: &str) -> crate::sql::Result<u64> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM _bakend_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn segment_size(conn: &Conn) -> crate::sql::Result<u64> {
    Ok(match meta_u64(conn, SEGMENT_KEY)? {
        0 => DEFAULT_SEGMENT,
        n => n,
    })
}

/// The highest seq ever assigned.
pub fn last_seq(conn: &Conn) -> crate::sql::Result<u64> {
    Ok(meta_u64(conn, LAST_KEY)?.max(meta_u64(conn, TRIMMED_KEY)?))
}

/// The existing segments, oldest first.
pub(crate) fn segments(conn: &Conn) -> crate::sql::Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached(match conn.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_events\\_%' ESCAPE '\\'"
        }
        Backend::Postgres => {
            "SELECT tablename::text FROM pg_tables
             WHERE schemaname = current_schema() AND tablename LIKE '\\_events\\_%' ESCAPE '\\'"
        }
    })?;
    let mut out: Vec<u64> = stmt
        .query_map((), |r| r.get::<String>(0))?
        .filter_map(|n| n.ok()?.strip_prefix(PREFIX)?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// How many events the journal holds, over every segment (what retention left).
pub fn stored_events(conn: &Conn) -> crate::sql::Result<u64> {
    let mut n = 0;
    for s in segments(conn)? {
        let c = conn.query_row(&format!("SELECT count(*) FROM {}", table(s)), (), |r| {
            r.get::<i64>(0)
        });
        n += match c {
            Ok(c) => c.max(0) as u64,
            Err(_) if vanished(conn, s) => 0,
            Err(e) => return Err(e),
        };
    }
    Ok(n)
}

pub(crate) fn oldest_seq(conn: &Conn) -> crate::sql::Result<Option<u64>> {
    for s in segments(conn)? {
        let min = conn.query_row(&format!("SELECT min(seq) FROM {}", table(s)), (), |r| {
            r.get::<Option<i64>>(0)
        });
        match min {
            Ok(Some(m)) => return Ok(Some(m.max(0) as u64)),
            Ok(None) => {}
            Err(_) if vanished(conn, s) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Whether `segment` is gone: the trimmer (on this or another connection; on PostgreSQL each
/// statement sees what has committed) dropped it after the caller listed the segments. A read
/// that then fails on its table is about trimmed events, not a broken journal.
fn vanished(conn: &Conn, segment: u64) -> bool {
    segments(conn).is_ok_and(|now| !now.contains(&segment))
}

/// Makes sure the journal has an epoch, starting a new one if rows went missing behind the
/// trimmer's back, and fixes the segment size of a new journal. Runs at open, before the
/// writer starts.
pub(crate) fn open(conn: &Conn, segment: u64) -> Result<JournalInfo, StoreError> {
    if meta_u64(conn, SEGMENT_KEY)? == 0 {
        meta_set(conn, SEGMENT_KEY, &segment.max(1).to_string())?;
    }
    add_missing_columns(conn)?;
    let last = last_seq(conn)?;
    let trimmed = meta_u64(conn, TRIMMED_KEY)?;
    // Everything after `trimmed` should still be there: the oldest row is `trimmed + 1`, or
    // nothing after `trimmed` was ever written. (The epoch also changes on restore.)
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

/// Appends events inside the writer's transaction, numbering them from `next`; returns the
/// next free seq. One per batch: the segment tables they need are created and the last seq is
/// recorded.
pub(crate) struct Appender<'n> {
    next: u64,
    size: u64,
    segment: Option<u64>,
    /// The committing server's node id (several servers on PostgreSQL).
    node: Option<&'n str>,
}

impl<'n> Appender<'n> {
    /// Reads the position under the write lock, so another process's writes (a CLI command)
    /// are accounted for.
    pub fn start(conn: &Conn, node: Option<&'n str>) -> crate::sql::Result<Appender<'n>> {
        Ok(Appender {
            next: last_seq(conn)? + 1,
            size: segment_size(conn)?,
            segment: None,
            node,
        })
    }

    pub fn append(&mut self, conn: &Conn, event: &mut Event) -> crate::sql::Result<()> {
        let seq = self.next;
        let segment = seq / self.size;
        if self.segment != Some(segment) {
            conn.execute_batch(&create_segment_sql(segment, conn.backend()))?;
            self.segment = Some(segment);
        }
        event.seq = Some(seq);
        let collections = event.source == bakend_core::EventSource::Collections;
        let record = if collections {
            event.payload.get("id").and_then(|v| v.as_str())
        } else {
            None
        };
        // Serializing a `Value` cannot fail.
        let previous = event
            .previous
            .as_ref()
            .filter(|_| collections)
            .and_then(|p| serde_json::to_string(p).ok());
        conn.prepare_cached(&format!(
            "INSERT INTO {} (seq, type, subject, record, envelope, created_ms, previous, node) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            table(segment)
        ))?
        .execute(params![
            seq as i64,
            event.event_type,
            event.subject,
            record,
            &*event.envelope_json(),
            now_ms(),
            previous,
            self.node,
        ])?;
        self.next += 1;
        Ok(())
    }

    /// Records the last seq assigned (when this batch assigned any).
    pub fn finish(&self, conn: &Conn, first: u64) -> crate::sql::Result<()> {
        if self.next > first {
            conn.prepare_cached(
                "INSERT INTO _bakend_meta(key, value, created_at) VALUES (?1, ?2, '')
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![LAST_KEY, (self.next - 1).to_string()])?;
        }
        Ok(())
    }

    pub fn next(&self) -> u64 {
        self.next
    }
}

fn now_ms() -> i64 {
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
    /// The record before an update or deletion, as JSON (`None` for other events, and for rows
    /// journaled before the column existed).
    pub previous: Option<String>,
}

impl JournalEntry {
    /// The event as journaled (no actor: the journal does not keep who caused it).
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        let mut event = Event::from_journal(&self.envelope, self.subject.clone())?;
        if let Some(previous) = &self.previous {
            event.previous = Some(serde_json::from_str(previous)?);
        }
        Ok(event)
    }
}

/// Events with `after < seq <= upto` accepted by `wanted(type, record)`, oldest first, at most
/// `limit`. `None` when events after `after` have been trimmed (the gap cannot be filled), or
/// when more than `limit` events match.
pub fn read_range(
    conn: &Conn,
    after: u64,
    upto: u64,
    limit: usize,
    wanted: &dyn Fn(&str, Option<&str>) -> bool,
) -> Result<Option<Vec<JournalEntry>>, StoreError> {
    if after < meta_u64(conn, TRIMMED_KEY)? {
        return Ok(None);
    }
    read_segments(conn, &segments(conn)?, after, upto, limit, wanted)
}

/// [`read_range`] over `listed`, the segments as they were listed: one the trimmer dropped since
/// held events after `after` (segments go oldest first, and `after` was not trimmed when
/// checked), so the gap can no longer be filled: `None`, as when it was trimmed before.
fn read_segments(
    conn: &Conn,
    listed: &[u64],
    after: u64,
    upto: u64,
    limit: usize,
    wanted: &dyn Fn(&str, Option<&str>) -> bool,
) -> Result<Option<Vec<JournalEntry>>, StoreError> {
    let mut out = Vec::new();
    let size = segment_size(conn)?;
    let (first, last) = ((after + 1) / size, upto / size);
    for &segment in listed.iter().filter(|s| (first..=last).contains(*s)) {
        let sql = format!(
            "SELECT seq, type, record, subject, envelope, previous FROM {} WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            table(segment)
        );
        let stmt = match conn.prepare_cached(&sql) {
            Ok(stmt) => Ok(stmt),
            Err(_) if vanished(conn, segment) => return Ok(None),
            Err(e) => Err(e),
        };
        let mut stmt = stmt?;
        let mut rows = match stmt.query(params![after as i64, upto as i64]) {
            Ok(rows) => rows,
            Err(_) if vanished(conn, segment) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
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
                seq: row.get::<i64>(0)? as u64,
                subject: row.get(3)?,
                envelope: row.get(4)?,
                previous: row.get(5)?,
            });
        }
    }
    Ok(Some(out))
}

/// Drops the oldest segment if every event in it is beyond retention: more than `max_events`
/// behind the newest, or older than `max_age_ms` (its newest row is checked). Returns the
/// events dropped (0 when nothing is due).
pub(crate) fn trim_segment(
    conn: &Conn,
    max_events: u64,
    max_age_ms: i64,
) -> Result<u64, StoreError> {
    let last = last_seq(conn)?;
    let Some(&oldest) = segments(conn)?.first() else {
        return Ok(0);
    };
    let size = segment_size(conn)?;
    let segment_end = oldest * size + size - 1;
    if segment_end >= last {
        return Ok(0); // the segment still being written
    }
    let by_count = segment_end + max_events <= last;
    let newest_ms: Option<i64> = conn
        .query_row(
            &format!(
                "SELECT created_ms FROM {} ORDER BY seq DESC LIMIT 1",
                table(oldest)
            ),
            (),
            |r| r.get(0),
        )
        .optional()?;
    let by_age = newest_ms.is_none_or(|ms| ms < now_ms() - max_age_ms);
    if !(by_count || by_age) {
        return Ok(0);
    }
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", table(oldest)),
        (),
        |r| r.get(0),
    )?;
    conn.execute_batch(&format!("DROP TABLE {}", table(oldest)))?;
    meta_set(
        conn,
        TRIMMED_KEY,
        &segment_end.max(meta_u64(conn, TRIMMED_KEY)?).to_string(),
    )?;
    Ok(n.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use bakend_core::{Event, EventSource};
    use serde_json::json;

    use super::*;

    fn db() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Conn::from(crate::db::connection::open(&dir.path().join("j.db")).unwrap());
        crate::db::migrations::migrate(&conn).unwrap();
        (dir, conn)
    }

    fn all(conn: &Conn) -> Vec<JournalEntry> {
        read_range(conn, 0, u64::MAX >> 1, 100, &|_, _| true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn updates_and_deletions_keep_the_previous_record() {
        let (_dir, conn) = db();
        open(&conn, 4).unwrap();
        let mut a = Appender::start(&conn, None).unwrap();
        let before = json!({"id": "r1", "title": "old", "user_id": "u1"});
        let mut events = [
            Event::new(
                "posts.created",
                EventSource::Collections,
                json!({"id": "r1", "title": "old"}),
            ),
            Event::new(
                "posts.updated",
                EventSource::Collections,
                json!({"id": "r1", "title": "new"}),
            )
            .with_previous(before.clone()),
            Event::new(
                "posts.deleted",
                EventSource::Collections,
                json!({"id": "r1"}),
            )
            .with_previous(before.clone()),
            // Only record events keep it.
            Event::new("auth.login", EventSource::Auth, json!({"id": "u1"}))
                .with_previous(json!({"x": 1})),
        ];
        for e in events.iter_mut() {
            a.append(&conn, e).unwrap();
        }
        a.finish(&conn, 1).unwrap();
        let got: Vec<Option<serde_json::Value>> = all(&conn)
            .iter()
            .map(|r| {
                r.previous
                    .as_deref()
                    .map(|p| serde_json::from_str(p).unwrap())
            })
            .collect();
        assert_eq!(got, [None, Some(before.clone()), Some(before), None]);
    }

    #[test]
    fn a_segment_trimmed_while_it_is_read_means_the_range_is_gone() {
        let (_dir, conn) = db();
        open(&conn, 4).unwrap();
        let mut a = Appender::start(&conn, None).unwrap();
        for i in 0..10 {
            let mut e = Event::new("posts.created", EventSource::Collections, json!({"id": i}));
            a.append(&conn, &mut e).unwrap();
        }
        a.finish(&conn, 1).unwrap();
        // Listed, then the trimmer drops the oldest segment (seqs 1–3) before it is read.
        let listed = segments(&conn).unwrap();
        assert_eq!(listed, [0, 1, 2]);
        conn.execute_batch(&format!("DROP TABLE {}", table(0)))
            .unwrap();
        let got = read_segments(&conn, &listed, 1, 10, 100, &|_, _| true).unwrap();
        assert!(got.is_none(), "{got:?}");
        // Counting and the oldest seq skip it; what is left reads as before.
        assert_eq!(stored_events(&conn).unwrap(), 7);
        assert_eq!(oldest_seq(&conn).unwrap(), Some(4));
        let rest = read_segments(&conn, &listed, 3, 10, 100, &|_, _| true).unwrap();
        let seqs: Vec<u64> = rest.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn segments_from_before_the_previous_column_get_it_at_open() {
        let (_dir, conn) = db();
        meta_set(&conn, SEGMENT_KEY, "4").unwrap();
        // The layout older versions created, with a row in it.
        conn.execute_batch(
            "CREATE TABLE _events_0 (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, subject TEXT,
                 record TEXT, envelope TEXT NOT NULL, created_ms INTEGER NOT NULL);
             INSERT INTO _events_0 VALUES (1, 'posts.updated', NULL, 'r1', '{}', 0);",
        )
        .unwrap();
        meta_set(&conn, LAST_KEY, "1").unwrap();
        let info = open(&conn, 4).unwrap();
        assert_eq!(info.last_seq, 1);
        let old = all(&conn);
        assert_eq!((old.len(), old[0].previous.clone()), (1, None));
        // Appending to the old segment works, and so does opening again.
        let mut a = Appender::start(&conn, None).unwrap();
        let mut e = Event::new(
            "posts.updated",
            EventSource::Collections,
            json!({"id": "r1"}),
        )
        .with_previous(json!({"id": "r1"}));
        a.append(&conn, &mut e).unwrap();
        a.finish(&conn, 2).unwrap();
        open(&conn, 4).unwrap();
        let rows = all(&conn);
        assert_eq!(rows[1].previous.as_deref(), Some(r#"{"id":"r1"}"#));
    }
}
