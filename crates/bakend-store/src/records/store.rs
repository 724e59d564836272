//! The record store: list, get, create, update, delete over a collection's table.
//!
//! Writes run on the writer thread (see `db::writer`); each emits its `<collection>.<action>`
//! event after its commit. Reads run on the reader pool.

use std::sync::Arc;

use crate::sql::Value as Sql;
use crate::sql::{Backend, Conn, OptionalExtension};
use bakend_core::{Event, EventSource, Origin, ids, time};
use serde_json::{Map, Value};

use bakend_filter::{Filter, RequestVars};

use super::cursor::Cursor;
use super::json::write_record;
use super::query::{count_sql, order_by, page_sql, page_with_total_sql};
use super::row::{read_columns, record_json, to_json};
use super::validate::{self, FileAccess, Mode, Validated, db_checks, in_field_order};
use crate::collections::counts;
use crate::collections::definition::RuleExpression;
use crate::collections::layout::RecordLayout;
use crate::collections::registry::{Collection, Registry};
use crate::collections::schema::quote;
use crate::db::{Committed, Database};
use crate::error::{FieldError, StoreError};

/// A page request for a list.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    /// `(key, descending)`; keys are `id`, `createdAt`, `updatedAt` or field names. Empty means
    /// newest first.
    pub sort: Vec<(String, bool)>,
    /// Only records whose owner field (`user_id`) is this.
    pub owned_by: Option<String>,
    /// Do not count: `totalItems` and `totalPages` come back as -1.
    pub skip_total: bool,
    /// Keyset pagination: the records after this one in the default order (`page` is then
    /// not used; a non-default `sort` is refused).
    pub after: Option<Cursor>,
    /// Only records every one of these accepts (a `?filter=`; later, an expression rule),
    /// each checked against this collection's [`Collection::filter_schema`].
    pub filters: Vec<Arc<Filter>>,
    /// What the filters' `@request.auth.*` and `@now` stand for.
    pub vars: RequestVars,
}

impl ListQuery {
    /// The first page in the default order, counted.
    pub fn first(per_page: u32) -> ListQuery {
        ListQuery {
            page: 1,
            per_page,
            sort: Vec::new(),
            owned_by: None,
            skip_total: false,
            after: None,
            filters: Vec::new(),
            vars: RequestVars::anonymous(bakend_core::time::now_iso()),
        }
    }
}

/// What a write must still find true when it runs: the permission was decided on an earlier
/// read (or, for a create, before the record's final form was known), so the writer checks
/// it again in its transaction and nothing can change in between.
#[derive(Clone, Debug, Default)]
pub enum Precondition {
    #[default]
    None,
    /// The record is owned by this user.
    Owner(String),
    /// The record matches this permission expression for this caller: the stored record for
    /// an update or delete, the record as it will be stored for a create.
    Matches(Arc<RuleExpression>, RequestVars),
}

impl Precondition {
    /// `Err(Forbidden)` unless the record in `cols` satisfies it.
    fn check(&self, c: &Collection, cols: &[Sql]) -> Result<(), StoreError> {
        let holds = match self {
            Precondition::None => true,
            Precondition::Owner(user) => c.layout.owner_in_row(cols) == Some(user.as_str()),
            Precondition::Matches(rule, vars) => rule.filter.matches(&record_json(c, cols), vars),
        };
        if holds {
            Ok(())
        } else {
            Err(StoreError::Forbidden)
        }
    }
}

/// What a list response starts with; the records follow.
const ITEMS_PREFIX: &[u8] = b"{\"items\":";

/// One page of a list, its records already serialized.
#[derive(Clone, Debug)]
pub struct Page {
    /// The start of the response: `{"items":[…]`. The rest is appended in place by
    /// [`Page::into_json`], so the records are never copied into another buffer.
    body: Vec<u8>,
    pub page: u32,
    pub per_page: u32,
    /// `None` when counting was skipped.
    pub total_items: Option<u64>,
    /// Where the next page starts, in the default order; `None` on the last page and for
    /// other orders.
    pub next: Option<Cursor>,
    /// Whether records follow this page (in any order).
    pub more: bool,
}

impl Page {
    pub fn total_pages(&self) -> Option<u64> {
        self.total_items
            .map(|t| t.div_ceil(u64::from(self.per_page.max(1))))
    }

    /// The records as a JSON array (`[…]`), without the rest of the response.
    pub fn items_json(&self) -> &[u8] {
        self.body.get(ITEMS_PREFIX.len()..).unwrap_or(b"[]")
    }

    /// The list response (spec `rest-api.md` §4, plus `next`): `{"items":[…],"page":…,
    /// "perPage":…,"totalItems":…,"totalPages":…,"next":…}`, skipped totals as -1.
    pub fn into_json(self) -> Vec<u8> {
        let total_pages = self.total_pages();
        let mut out = self.body;
        let mut n = itoa::Buffer::new();
        let mut number = |out: &mut Vec<u8>, key: &[u8], v: i64| {
            out.extend_from_slice(key);
            out.extend_from_slice(n.format(v).as_bytes());
        };
        number(&mut out, b",\"page\":", i64::from(self.page));
        number(&mut out, b",\"perPage\":", i64::from(self.per_page));
        let or_minus_one = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        number(
            &mut out,
            b",\"totalItems\":",
            or_minus_one(self.total_items),
        );
        number(&mut out, b",\"totalPages\":", or_minus_one(total_pages));
        out.extend_from_slice(b",\"next\":");
        match &self.next {
            Some(c) => {
                let _ = serde_json::to_writer(&mut out, &c.encode());
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }
}

#[derive(Clone)]
pub struct RecordStore {
    db: Arc<Database>,
    registry: Arc<Registry>,
    /// Stamped on the events of this handle's writes.
    origin: Origin,
}

impl RecordStore {
    pub fn new(db: Arc<Database>, registry: Arc<Registry>) -> Self {
        RecordStore {
            db,
            registry,
            origin: Origin::default(),
        }
    }

    /// A handle whose writes' events carry `origin` (who asked, and how deep in a chain of
    /// function writes). Cheap: two `Arc`s and the origin are cloned.
    pub fn with_origin(&self, origin: Origin) -> RecordStore {
        RecordStore {
            db: self.db.clone(),
            registry: self.registry.clone(),
            origin,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>, StoreError> {
        self.registry
            .get(name)
            .ok_or_else(|| StoreError::CollectionNotFound(name.to_string()))
    }

    /// Runs `read` on a read connection. On PostgreSQL, once more after a statement the
    /// connection prepared before a migration no longer fits the table (see
    /// [`stale_statement`]): its cache is dropped and the read starts over, snapshot and all.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.db
            .read(move |conn| match read(conn) {
                Err(StoreError::Database(e)) if stale_statement(&e) => {
                    crate::collections::schema::forget_statements(conn);
                    read(conn)
                }
                outcome => outcome,
            })
            .await
    }

    pub async fn list(&self, c: Arc<Collection>, q: ListQuery) -> Result<Page, StoreError> {
        let order = order_by(&c, &q.sort, self.db.backend())?;
        let default_order = q.sort.is_empty();
        if q.after.is_some() && !default_order {
            return Err(StoreError::BadRequest(
                "after= works with the default order only (no sort=)".into(),
            ));
        }
        self.read(move |conn| {
            let unfiltered = q.owned_by.is_none() && q.filters.is_empty();
            hint_if_scan(conn, &c, &q)?;
            if conn.backend() == Backend::Postgres && !q.skip_total {
                // The count as a column of the page: one statement, one snapshot.
                let (sql, params) = page_with_total_sql(&c, &q, &order, unfiltered);
                let page = read_page(conn, &c, &q, &sql, &params, Total::InRows)?;
                if page.total_items.is_some() {
                    return Ok(page);
                }
                // No row to carry it (a page past the end), or no kept count: asked apart.
            }
            // The count and the page from one snapshot, so they agree (without a count
            // one statement is its own snapshot).
            let _snapshot = match q.skip_total {
                true => None,
                false => Some(conn.read_snapshot()?),
            };
            let total = match (unfiltered, q.skip_total) {
                (_, true) => None,
                (true, false) => Some(match counts::read(conn, &c.def.name)? {
                    Some(n) => n,
                    None => count(conn, &format!("SELECT COUNT(*) FROM {}", c.sql.table), &[])?,
                }),
                (false, false) => {
                    let (sql, params) = count_sql(&c, &q, conn.backend());
                    Some(count(conn, &sql, &params)?)
                }
            };
            let (sql, params) = page_sql(&c, &q, &order, conn.backend());
            read_page(conn, &c, &q, &sql, &params, Total::Known(total))
        })
        .await
    }

    /// One record as response bytes, with its owner (for the permission check the caller
    /// makes before sending it).
    pub async fn get_json(
        &self,
        c: Arc<Collection>,
        id: String,
    ) -> Result<(Vec<u8>, Option<String>), StoreError> {
        self.read(move |conn| {
            if id.contains('\0') {
                return Err(StoreError::RecordNotFound(id.clone()));
            }
            let mut stmt = conn.prepare_cached(&fetch_sql(&c))?;
            let mut rows = stmt.query([&id])?;
            let Some(row) = rows.next()? else {
                return Err(StoreError::RecordNotFound(id.clone()));
            };
            let mut out = Vec::with_capacity(256);
            write_record(&c, row, &mut out)?;
            let owner = match c.layout.owner_column() {
                Some(i) => row.get_ref(i)?.as_str().ok().map(str::to_string),
                None => None,
            };
            Ok((out, owner))
        })
        .await
    }

    pub async fn get(&self, c: Arc<Collection>, id: String) -> Result<Value, StoreError> {
        self.read(move |conn| {
            fetch(conn, &c, &id)?
                .map(|cols| record_json(&c, &cols))
                .ok_or_else(|| StoreError::RecordNotFound(id.clone()))
        })
        .await
    }

    /// The record (or `None`) together with the last journal seq, read in one transaction: the
    /// record reflects exactly the events up to that seq (a realtime `snapshot`).
    pub async fn get_at_journal_seq(
        &self,
        c: Arc<Collection>,
        id: String,
    ) -> Result<(Option<Value>, u64), StoreError> {
        self.read(move |conn| {
            let _snapshot = conn.read_snapshot()?;
            let record = fetch(conn, &c, &id)?.map(|cols| record_json(&c, &cols));
            let seq = crate::db::journal::last_seq(conn)?;
            Ok((record, seq))
        })
        .await
    }

    /// A page of `q` (not counted) together with the last journal seq, read in one
    /// transaction: the records reflect exactly the events up to that seq (a realtime
    /// collection `snapshot`).
    pub async fn list_at_journal_seq(
        &self,
        c: Arc<Collection>,
        mut q: ListQuery,
    ) -> Result<(Page, u64), StoreError> {
        let order = order_by(&c, &q.sort, self.db.backend())?;
        q.skip_total = true;
        q.after = None;
        self.read(move |conn| {
            let _snapshot = conn.read_snapshot()?;
            let (sql, params) = page_sql(&c, &q, &order, conn.backend());
            let page = read_page(conn, &c, &q, &sql, &params, Total::Known(None))?;
            let seq = crate::db::journal::last_seq(conn)?;
            Ok((page, seq))
        })
        .await
    }

    /// Full validation for a create: checks without the database here, then — only if there
    /// are failures to report — the database checks too, so `details` is complete. `files`:
    /// which stored files the writer may reference in `file` fields.
    pub async fn create(
        &self,
        c: Arc<Collection>,
        body: Map<String, Value>,
        files: FileAccess,
        pre: Precondition,
    ) -> Result<Value, StoreError> {
        let v = validate::validate(&c.def, &body, Mode::Create);
        if !v.is_ok() {
            return Err(self.complete_failure(c, v, None, files).await);
        }
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let errors = db_checks(conn, &c, &v.values, None, &files, true)?;
                if !errors.is_empty() {
                    return Err(StoreError::Validation(in_field_order(errors)));
                }
                let id = ids::new_time_ordered_id(ids::RECORD);
                let now = time::now_iso();
                let mut cols = vec![Sql::Null; c.layout.width()];
                cols[RecordLayout::ID_COLUMN] = Sql::Text(id);
                cols[RecordLayout::CREATED_AT_COLUMN] = Sql::Text(now.clone());
                cols[RecordLayout::UPDATED_AT_COLUMN] = Sql::Text(now);
                for (i, val) in v.values {
                    cols[RecordLayout::field_column(i)] = val;
                }
                pre.check(&c, &cols)?;
                conn.prepare_cached(&c.sql.insert)?
                    .execute(crate::sql::params_from_iter(cols.iter()))
                    .map_err(|e| constraint_error(&c, e))?;
                let record = record_json(&c, &cols);
                let event = Event::new(
                    format!("{}.created", c.def.name),
                    EventSource::Collections,
                    record.clone(),
                )
                .about(c.layout.owner_in_record(&record).map(str::to_string))
                .caused_by(&origin);
                Ok(Committed::new(record).event(event))
            })
            .await
    }

    /// Partial update. `pre`: what the stored record must still satisfy when the write runs
    /// (the permission check happened on an earlier read).
    pub async fn update(
        &self,
        c: Arc<Collection>,
        id: String,
        body: Map<String, Value>,
        pre: Precondition,
        files: FileAccess,
    ) -> Result<Value, StoreError> {
        let v = validate::validate(&c.def, &body, Mode::Update);
        if !v.is_ok() {
            return Err(self.complete_failure(c, v, Some(id), files).await);
        }
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let Some(mut cols) = fetch_for_write(conn, &c, &id)? else {
                    return Err(StoreError::RecordNotFound(id));
                };
                pre.check(&c, &cols)?;
                if v.values.is_empty() {
                    return Ok(Committed::new(record_json(&c, &cols)));
                }
                let errors = db_checks(conn, &c, &v.values, Some(&id), &files, true)?;
                if !errors.is_empty() {
                    return Err(StoreError::Validation(in_field_order(errors)));
                }
                let previous = record_json(&c, &cols);
                let now = time::now_iso();
                let mut sets = vec![format!("{} = ?1", quote(RecordLayout::UPDATED_AT.column))];
                let mut params = vec![Sql::Text(now.clone())];
                for (i, val) in &v.values {
                    params.push(val.clone());
                    sets.push(format!(
                        "{} = ?{}",
                        quote(&c.def.fields[*i].name),
                        params.len()
                    ));
                }
                params.push(Sql::Text(id.clone()));
                let sql = format!(
                    "UPDATE {} SET {} WHERE {} = ?{}",
                    c.sql.table,
                    sets.join(", "),
                    quote(RecordLayout::ID.column),
                    params.len()
                );
                conn.prepare_cached(&sql)?
                    .execute(crate::sql::params_from_iter(params.iter()))
                    .map_err(|e| constraint_error(&c, e))?;
                cols[RecordLayout::UPDATED_AT_COLUMN] = Sql::Text(now);
                for (i, val) in v.values {
                    cols[RecordLayout::field_column(i)] = val;
                }
                let record = record_json(&c, &cols);
                let event = Event::new(
                    format!("{}.updated", c.def.name),
                    EventSource::Collections,
                    record.clone(),
                )
                .about(c.layout.owner_in_record(&record).map(str::to_string))
                .caused_by(&origin)
                .with_previous(previous);
                Ok(Committed::new(record).event(event))
            })
            .await
    }

    pub async fn delete(
        &self,
        c: Arc<Collection>,
        id: String,
        pre: Precondition,
    ) -> Result<(), StoreError> {
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let Some(cols) = fetch_for_write(conn, &c, &id)? else {
                    return Err(StoreError::RecordNotFound(id));
                };
                pre.check(&c, &cols)?;
                let owner = c.layout.owner_in_row(&cols).map(str::to_string);
                conn.prepare_cached(&format!(
                    "DELETE FROM {} WHERE {} = ?1",
                    c.sql.table,
                    quote(RecordLayout::ID.column)
                ))?
                .execute([&id])?;
                let event = Event::new(
                    format!("{}.deleted", c.def.name),
                    EventSource::Collections,
                    serde_json::json!({ "id": id }),
                )
                .about(owner)
                .caused_by(&origin)
                .with_previous(record_json(&c, &cols));
                Ok(Committed::new(()).event(event))
            })
            .await
    }

    /// Adds the database checks of fields that passed the pure checks, so a 400 lists every
    /// failing field. Runs on a reader: nothing is written.
    async fn complete_failure(
        &self,
        c: Arc<Collection>,
        v: Validated,
        exclude: Option<String>,
        files: FileAccess,
    ) -> StoreError {
        let Validated { values, mut errors } = v;
        let more = self
            .read(move |conn| {
                Ok(db_checks(
                    conn,
                    &c,
                    &values,
                    exclude.as_deref(),
                    &files,
                    false,
                )?)
            })
            .await;
        match more {
            Ok(more) => {
                errors.extend(more);
                StoreError::Validation(in_field_order(errors))
            }
            Err(e) => e,
        }
    }
}

/// Whether PostgreSQL refused a statement because the table changed since it was prepared:
/// PostgreSQL keeps a connection's prepared statements with their result and parameter types,
/// and re-plans one after a migration against the new columns, refusing it when a type no
/// longer fits ("cached plan must not change result type", or an operator or assignment
/// between the old parameter type and the new column type). The statements here are built
/// from the collection's definition, so on a fresh prepare they fit again. A migration on
/// this server drops its writer's statements itself; other connections — readers, and other
/// servers — meet the change this way.
fn stale_statement(e: &crate::sql::Error) -> bool {
    use postgres::error::SqlState;
    let crate::sql::Error::Postgres(e) = e else {
        return false;
    };
    [
        SqlState::FEATURE_NOT_SUPPORTED,
        SqlState::UNDEFINED_FUNCTION,
        SqlState::DATATYPE_MISMATCH,
    ]
    .iter()
    .any(|s| e.code() == Some(s))
}

/// Reads one page of `q` (the count, if any, already made) on `conn`, within whatever
/// transaction the caller holds.
/// Where a page's total comes from.
#[derive(Clone, Copy)]
enum Total {
    /// Counted before (or not asked for: `None`).
    Known(Option<u64>),
    /// The last column of every row ([`page_with_total_sql`]); `None` without a row.
    InRows,
}

fn read_page(
    conn: &Conn,
    c: &Collection,
    q: &ListQuery,
    sql: &str,
    params: &[Sql],
    total: Total,
) -> Result<Page, StoreError> {
    let default_order = q.sort.is_empty();
    let mut total_items = match total {
        Total::Known(n) => n,
        Total::InRows => None,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(crate::sql::params_from_iter(params.iter()))?;
    let mut items = Vec::with_capacity(c.list_capacity(q.per_page));
    items.extend_from_slice(ITEMS_PREFIX);
    items.push(b'[');
    let mut written = 0u32;
    // The key of the page's last record: only a full page has a next one.
    let mut last: Option<Cursor> = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if written == q.per_page {
            more = true;
            break;
        }
        if written == 0 && matches!(total, Total::InRows) {
            let n: Option<i64> = row.get(row.column_count() - 1)?;
            total_items = n.map(|n| n.max(0) as u64);
        }
        if written > 0 {
            items.push(b',');
        }
        write_record(c, row, &mut items)?;
        written += 1;
        if default_order && written == q.per_page {
            // System columns are NOT NULL text; were one not, its cursor would
            // be refused as invalid rather than this page failing.
            let text = |col| -> crate::sql::Result<String> {
                Ok(row.get_ref(col)?.as_str().unwrap_or_default().to_string())
            };
            last = Some(Cursor {
                created_at: text(RecordLayout::CREATED_AT_COLUMN)?,
                id: text(RecordLayout::ID_COLUMN)?,
            });
        }
    }
    items.push(b']');
    drop(rows);
    drop(stmt);
    c.note_list_size(items.len(), written);
    Ok(Page {
        body: items,
        page: if q.after.is_some() { 1 } else { q.page },
        per_page: q.per_page,
        total_items,
        next: last.filter(|_| more),
        more,
    })
}

/// A sort no index starts with sorts the whole collection on every request: on a large one,
/// say once which index would help.
const HINT_ROWS: u64 = 10_000;

fn hint_if_scan(conn: &Conn, c: &Collection, q: &ListQuery) -> Result<(), StoreError> {
    let Some((key, _)) = q.sort.first() else {
        return Ok(());
    };
    if c.is_indexed_sort_key(key) {
        return Ok(());
    }
    let rows = counts::read(conn, &c.def.name)?.unwrap_or(0);
    if rows >= HINT_ROWS && c.first_hint(key) {
        tracing::info!(
            "Sorting \"{}\" by \"{key}\" sorts all {rows} records on every request; an index would help: add {{\"fields\": [\"{key}\"]}} to \"indexes\" in its definition (collections/{}.json)",
            c.def.name,
            c.def.name
        );
    }
    Ok(())
}

fn count(conn: &Conn, sql: &str, params: &[Sql]) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)?
        .query_row(crate::sql::params_from_iter(params.iter()), |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

fn fetch_sql(c: &Collection) -> String {
    format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        c.sql.columns,
        c.sql.table,
        quote(RecordLayout::ID.column)
    )
}

/// The stored record a write is about to check and change. On PostgreSQL the row is locked
/// until the write commits (`FOR UPDATE`): another server's write to it waits, so what the
/// precondition saw is what the write changes (READ COMMITTED reads the latest version once
/// the lock is granted). SQLite's one writer needs no lock; its SQL is [`fetch`]'s.
fn fetch_for_write(conn: &Conn, c: &Collection, id: &str) -> Result<Option<Vec<Sql>>, StoreError> {
    if conn.backend() == Backend::Sqlite || id.contains('\0') {
        return fetch(conn, c, id);
    }
    Ok(conn
        .prepare_cached(&format!("{} FOR UPDATE", fetch_sql(c)))?
        .query_row([id], |row| read_columns(c, row))
        .optional()?)
}

fn fetch(conn: &Conn, c: &Collection, id: &str) -> Result<Option<Vec<Sql>>, StoreError> {
    // No record has such an id, and PostgreSQL refuses the character in a parameter.
    if id.contains('\0') {
        return Ok(None);
    }
    Ok(conn
        .prepare_cached(&fetch_sql(c))?
        .query_row([id], |row| read_columns(c, row))
        .optional()?)
}

/// A UNIQUE violation that slipped past the pre-check is still a validation error, never a 500.
pub(super) fn constraint_error(c: &Collection, e: crate::sql::Error) -> StoreError {
    if let Some(cols) = e.unique_columns() {
        let errors: Vec<FieldError> = c
            .def
            .fields
            .iter()
            .filter(|f| cols.contains(&f.name))
            .map(validate::unique_error)
            .collect();
        if !errors.is_empty() {
            return StoreError::Validation(errors);
        }
    }
    StoreError::Database(e)
}

/// Serializes a stored value for a field (used by callers that hold raw values).
pub fn field_json(c: &Collection, index: usize, v: &Sql) -> Value {
    to_json(c.def.fields[index].kind, v)
}
