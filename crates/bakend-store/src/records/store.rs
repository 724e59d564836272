//! The record store: list, get, create, update, delete over a collection's table.
//!
//! Writes run on the writer thread (see `db::writer`); each emits its `<collection>.<action>`
//! event after its commit. Reads run on the reader pool.

use std::sync::Arc;

use crate::sql::Value as Sql;
use crate::sql::{Conn, OptionalExtension};
use bakend_core::{Event, EventSource, Origin, ids, time};
use serde_json::{Map, Value};

use bakend_filter::{Filter, RequestVars, SqlValue, Sqlite};

use super::cursor::Cursor;
use super::json::write_record;
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

    pub async fn list(&self, c: Arc<Collection>, q: ListQuery) -> Result<Page, StoreError> {
        let order = order_by(&c, &q.sort)?;
        let default_order = q.sort.is_empty();
        if q.after.is_some() && !default_order {
            return Err(StoreError::BadRequest(
                "after= works with the default order only (no sort=)".into(),
            ));
        }
        self.db
            .read(move |conn| {
                // The count and the page from one snapshot, so they agree (without a count
                // one statement is its own snapshot).
                let _snapshot = match q.skip_total {
                    true => None,
                    false => Some(conn.read_snapshot()?),
                };
                let unfiltered = q.owned_by.is_none() && q.filters.is_empty();
                let total = match (unfiltered, q.skip_total) {
                    (_, true) => None,
                    (true, false) => Some(match counts::read(conn, &c.def.name)? {
                        Some(n) => n,
                        None => count(conn, &format!("SELECT COUNT(*) FROM {}", c.sql.table), &[])?,
                    }),
                    (false, false) => {
                        let (sql, params) = count_sql(&c, &q);
                        Some(count(conn, &sql, &params)?)
                    }
                };
                hint_if_scan(conn, &c, &q)?;
                read_page(conn, &c, &q, &order, total)
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
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&fetch_sql(&c))?;
                let mut rows = stmt.query([&id])?;
                let Some(row) = rows.next()? else {
                    return Err(StoreError::RecordNotFound(id));
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
        self.db
            .read(move |conn| {
                fetch(conn, &c, &id)?
                    .map(|cols| record_json(&c, &cols))
                    .ok_or(StoreError::RecordNotFound(id))
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
        self.db
            .read(move |conn| {
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
        let order = order_by(&c, &q.sort)?;
        q.skip_total = true;
        q.after = None;
        self.db
            .read(move |conn| {
                let _snapshot = conn.read_snapshot()?;
                let page = read_page(conn, &c, &q, &order, None)?;
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
                let errors = db_checks(conn, &c, &v.values, None, &files)?;
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
                let Some(mut cols) = fetch(conn, &c, &id)? else {
                    return Err(StoreError::RecordNotFound(id));
                };
                pre.check(&c, &cols)?;
                if v.values.is_empty() {
                    return Ok(Committed::new(record_json(&c, &cols)));
                }
                let errors = db_checks(conn, &c, &v.values, Some(&id), &files)?;
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
                let Some(cols) = fetch(conn, &c, &id)? else {
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
            .db
            .read(move |conn| Ok(db_checks(conn, &c, &values, exclude.as_deref(), &files)?))
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

/// Reads one page of `q` (the count, if any, already made) on `conn`, within whatever
/// transaction the caller holds.
fn read_page(
    conn: &Conn,
    c: &Collection,
    q: &ListQuery,
    order: &str,
    total: Option<u64>,
) -> Result<Page, StoreError> {
    let default_order = q.sort.is_empty();
    let (sql, params) = page_sql(c, q, order);
    let mut stmt = conn.prepare_cached(&sql)?;
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
        total_items: total,
        next: last.filter(|_| more),
        more,
    })
}

/// The statement and parameters that read one page and one row more (whether another page
/// follows), after the cursor when there is one.
fn page_sql(c: &Collection, q: &ListQuery, order: &str) -> (String, Vec<Sql>) {
    let mut params: Vec<Sql> = Vec::new();
    let mut conditions = selection(q, &mut params);
    if let Some(after) = &q.after {
        params.push(Sql::Text(after.created_at.clone()));
        params.push(Sql::Text(after.id.clone()));
        // A row value: SQLite walks the default-order index from the cursor on.
        conditions.push(format!(
            "({}, {}) < (?{}, ?{})",
            quote(RecordLayout::CREATED_AT.column),
            quote(RecordLayout::ID.column),
            params.len() - 1,
            params.len()
        ));
    }
    let filter = where_clause(&conditions);
    let offset = if q.after.is_some() {
        0
    } else {
        (i64::from(q.page) - 1) * i64::from(q.per_page)
    };
    // One row more than the page: whether another page follows.
    let limit = i64::from(q.per_page) + 1;
    params.push(Sql::Integer(limit));
    params.push(Sql::Integer(offset));
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
        c.sql.columns,
        c.sql.table,
        params.len() - 1,
        params.len()
    );
    (sql, params)
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

/// The records a list selects, before paging: its owner and its filters, as `WHERE`
/// conditions whose parameters are appended to `params`.
fn selection(q: &ListQuery, params: &mut Vec<Sql>) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(user) = &q.owned_by {
        params.push(Sql::Text(user.clone()));
        conditions.push(format!(
            "{} = ?{}",
            quote(RecordLayout::OWNER_FIELD),
            params.len()
        ));
    }
    for f in &q.filters {
        let compiled = f.to_sql(&Sqlite, &q.vars, params.len());
        params.extend(compiled.params.into_iter().map(|v| match v {
            SqlValue::Integer(i) => Sql::Integer(i),
            SqlValue::Real(r) => Sql::Real(r),
            SqlValue::Text(t) => Sql::Text(t),
            SqlValue::Bool(b) => Sql::Integer(i64::from(b)),
        }));
        conditions.push(compiled.sql);
    }
    conditions
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// The count of what a list selects (an unfiltered one reads `counts` instead). The owner
/// condition uses the owner index; a filter on an indexed field uses that index.
fn count_sql(c: &Collection, q: &ListQuery) -> (String, Vec<Sql>) {
    let mut params = Vec::new();
    let conditions = selection(q, &mut params);
    let sql = format!(
        "SELECT COUNT(*) FROM {}{}",
        c.sql.table,
        where_clause(&conditions)
    );
    (sql, params)
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

fn fetch(conn: &Conn, c: &Collection, id: &str) -> Result<Option<Vec<Sql>>, StoreError> {
    Ok(conn
        .prepare_cached(&fetch_sql(c))?
        .query_row([id], |row| read_columns(c, row))
        .optional()?)
}

/// A UNIQUE violation that slipped past the pre-check is still a validation error, never a 500.
fn constraint_error(c: &Collection, e: crate::sql::Error) -> StoreError {
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

fn order_by(c: &Collection, sort: &[(String, bool)]) -> Result<String, StoreError> {
    let id = quote(RecordLayout::ID.column);
    if sort.is_empty() {
        return Ok(format!(
            "{} DESC, {id} DESC",
            quote(RecordLayout::CREATED_AT.column)
        ));
    }
    let mut parts = Vec::new();
    let mut has_id = false;
    for (key, desc) in sort {
        let col = match RecordLayout::system_by_json(key) {
            Some(system) => {
                has_id |= system == RecordLayout::ID;
                system.column
            }
            None if c.def.field(key).is_some() => key.as_str(),
            None => {
                return Err(StoreError::BadRequest(format!(
                    "Cannot sort by \"{key}\": not a field of collection \"{}\"",
                    c.def.name
                )));
            }
        };
        parts.push(format!(
            "{} {}",
            quote(col),
            if *desc { "DESC" } else { "ASC" }
        ));
    }
    if !has_id {
        // A total order keeps pages stable when sort values tie. The id goes the way of the
        // last key, so an index on the keys (which ends with the id) serves both directions.
        let desc = sort.last().is_some_and(|(_, d)| *d);
        parts.push(format!("{id} {}", if desc { "DESC" } else { "ASC" }));
    }
    Ok(parts.join(", "))
}

/// Serializes a stored value for a field (used by callers that hold raw values).
pub fn field_json(c: &Collection, index: usize, v: &Sql) -> Value {
    to_json(c.def.fields[index].kind, v)
}

#[cfg(test)]
mod plan_tests {
    //! The query plans behind lists: the default order, a cursor, an owner's list, an indexed
    //! sort and the counts must read only what they return (no full scan, no sort of the
    //! table), so a later change cannot quietly bring the scans back.

    use super::*;
    use crate::collections::definition::parse;
    use crate::collections::schema::create_sql;
    use serde_json::json;

    fn setup() -> (Conn, Collection) {
        setup_with(json!({"name": "posts", "fields": [
            {"name": "title", "type": "string"},
            {"name": "slug", "type": "string", "unique": true},
            {"name": "user_id", "type": "string"}
        ]}))
    }

    /// An empty database holding the collection `definition` (its table, indexes and count).
    fn setup_with(definition: Value) -> (Conn, Collection) {
        let def = parse(&definition).unwrap().def;
        let conn = Conn::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE _record_counts (collection TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        for sql in create_sql(&def) {
            conn.execute(&sql, ()).unwrap();
        }
        (
            conn,
            Collection::new(def, json!({}), "x".into(), "x".into()),
        )
    }

    fn plan(conn: &Conn, sql: &str, params: &[Sql]) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(crate::sql::params_from_iter(params.iter()), |r| {
                r.get::<String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join(" | ")
    }

    fn page_plan(conn: &Conn, c: &Collection, q: &ListQuery) -> String {
        let order = order_by(c, &q.sort).unwrap();
        let (sql, params) = page_sql(c, q, &order);
        plan(conn, &sql, &params)
    }

    fn reads_only_what_it_returns(p: &str, index: &str) {
        assert!(p.contains(&format!("INDEX {index}")), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "sorts the table: {p}");
    }

    #[test]
    fn the_default_order_walks_its_index() {
        let (conn, c) = setup();
        let q = ListQuery::first(20);
        reads_only_what_it_returns(&page_plan(&conn, &c, &q), "idx_posts_created");
        let after = ListQuery {
            after: Some(Cursor {
                created_at: "2026-12-04T00:00:00.000Z".into(),
                id: "rec_1".into(),
            }),
            ..ListQuery::first(20)
        };
        let p = page_plan(&conn, &c, &after);
        reads_only_what_it_returns(&p, "idx_posts_created");
        assert!(p.starts_with("SEARCH"), "starts at the cursor: {p}");
    }

    #[test]
    fn an_owners_list_and_count_use_the_owner_index() {
        let (conn, c) = setup();
        let q = ListQuery {
            owned_by: Some("usr_1".into()),
            ..ListQuery::first(20)
        };
        reads_only_what_it_returns(&page_plan(&conn, &c, &q), "idx_posts_owner_created");
        let (sql, params) = count_sql(&c, &q);
        let p = plan(&conn, &sql, &params);
        assert!(p.contains("COVERING INDEX idx_posts_owner_created"), "{p}");
        let with_cursor = ListQuery {
            after: Some(Cursor {
                created_at: "2026-12-04T00:00:00.000Z".into(),
                id: "rec_1".into(),
            }),
            ..q
        };
        reads_only_what_it_returns(
            &page_plan(&conn, &c, &with_cursor),
            "idx_posts_owner_created",
        );
    }

    #[test]
    fn a_filter_on_an_indexed_field_uses_its_index_for_the_page_and_the_count() {
        let (conn, c) = setup();
        bakend_filter::register_sqlite_functions(conn.sqlite().unwrap()).unwrap();
        let q = ListQuery {
            filters: vec![Arc::new(
                Filter::new("slug = 'hello' && title != null", c.filter_schema()).unwrap(),
            )],
            ..ListQuery::first(20)
        };
        let p = page_plan(&conn, &c, &q);
        assert!(p.contains("INDEX uniq_posts_slug (slug=?)"), "{p}");
        let (sql, params) = count_sql(&c, &q);
        let p = plan(&conn, &sql, &params);
        assert!(p.contains("INDEX uniq_posts_slug (slug=?)"), "{p}");
        // A `~` cannot use an index: the list walks the default order until the page is full.
        let q = ListQuery {
            filters: vec![Arc::new(
                Filter::new("title ~ 'x'", c.filter_schema()).unwrap(),
            )],
            ..ListQuery::first(20)
        };
        reads_only_what_it_returns(&page_plan(&conn, &c, &q), "idx_posts_created");
    }

    #[test]
    fn an_indexed_sort_uses_its_index_and_an_unindexed_one_sorts() {
        let (conn, c) = setup();
        let q = ListQuery {
            sort: vec![("slug".into(), false)],
            ..ListQuery::first(20)
        };
        // Rows come in index order; only records tied on `slug` (several nulls) are put in
        // `id` order among themselves, and the walk stops at the page's end.
        let p = page_plan(&conn, &c, &q);
        assert!(p.contains("INDEX uniq_posts_slug"), "{p}");
        assert!(
            !p.contains("TEMP B-TREE FOR ORDER BY"),
            "sorts the table: {p}"
        );
        let q = ListQuery {
            sort: vec![("title".into(), false)],
            ..ListQuery::first(20)
        };
        assert!(page_plan(&conn, &c, &q).contains("TEMP B-TREE FOR ORDER BY"));
    }

    #[test]
    fn a_sort_by_a_defined_index_reads_it_in_order_both_ways() {
        let (conn, c) = setup_with(json!({"name": "posts", "fields": [
            {"name": "title", "type": "string"},
            {"name": "project", "type": "string"}
        ], "indexes": [{"fields": ["title"]}, {"fields": ["project", "-createdAt"]}]}));
        for desc in [false, true] {
            let q = ListQuery {
                sort: vec![("title".into(), desc)],
                ..ListQuery::first(20)
            };
            reads_only_what_it_returns(&page_plan(&conn, &c, &q), "idx_posts_title");
        }
        let q = ListQuery {
            sort: vec![("project".into(), false), ("createdAt".into(), true)],
            ..ListQuery::first(20)
        };
        reads_only_what_it_returns(
            &page_plan(&conn, &c, &q),
            "idx_posts_project_created_at_desc",
        );
        let q = ListQuery {
            sort: vec![("project".into(), true), ("createdAt".into(), false)],
            ..ListQuery::first(20)
        };
        reads_only_what_it_returns(
            &page_plan(&conn, &c, &q),
            "idx_posts_project_created_at_desc",
        );
    }

    #[test]
    fn the_unfiltered_count_reads_one_row() {
        let (conn, _) = setup();
        let p = plan(
            &conn,
            "SELECT n FROM _record_counts WHERE collection = ?1",
            &[Sql::Text("posts".into())],
        );
        assert!(
            p.starts_with("SEARCH _record_counts USING PRIMARY KEY"),
            "{p}"
        );
    }
}
