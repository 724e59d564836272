//! The SQL of a list: its conditions (owner, filters, cursor), its order, its page and its
//! count, for either store. SQLite's statements are the ones its plan tests (below) pin
//! down; PostgreSQL's differ only where the databases do (nulls in an order, the filter
//! dialect), and `plans_postgres.rs` checks that its planner reads them from the same indexes.

use crate::sql::{Backend, Value as Sql};

use bakend_filter::{Dialect, SqlValue, Sqlite};

use super::store::ListQuery;
use crate::collections::layout::RecordLayout;
use crate::collections::registry::Collection;
use crate::collections::schema::{nulls, quote};
use crate::error::StoreError;

/// The filter dialect of `backend`: the one place the stores' filter SQL is told apart.
pub(super) fn dialect(backend: Backend) -> &'static dyn Dialect {
    match backend {
        Backend::Sqlite => &Sqlite,
        Backend::Postgres => &bakend_filter::Postgres,
    }
}

/// The statement and parameters that read one page and one row more (whether another page
/// follows), after the cursor when there is one.
pub(super) fn page_sql(
    c: &Collection,
    q: &ListQuery,
    order: &str,
    backend: Backend,
) -> (String, Vec<Sql>) {
    page_sql_with(c, q, order, backend, None)
}

/// PostgreSQL: the page with the list's total as one more column (`total_sql`, an expression
/// whose parameters are the selection's, which come first in the page's): one statement is
/// one snapshot, so the count agrees with the page without a transaction around both — one
/// round trip to the server instead of four (`BEGIN`, count, page, `COMMIT`).
pub(super) fn page_with_total_sql(
    c: &Collection,
    q: &ListQuery,
    order: &str,
    unfiltered: bool,
) -> (String, Vec<Sql>) {
    let total = if unfiltered {
        format!(
            "(SELECT n FROM _record_counts WHERE collection = '{}')",
            c.def.name
        )
    } else {
        format!("({})", count_sql(c, q, Backend::Postgres).0)
    };
    page_sql_with(c, q, order, Backend::Postgres, Some(&total))
}

fn page_sql_with(
    c: &Collection,
    q: &ListQuery,
    order: &str,
    backend: Backend,
    total: Option<&str>,
) -> (String, Vec<Sql>) {
    let mut params: Vec<Sql> = Vec::new();
    let mut conditions = selection(q, backend, &mut params);
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
    // Named apart from every field (field names start with a letter): `ORDER BY "n"` of a
    // field `n` would otherwise be ambiguous with `_record_counts.n`.
    let total = total
        .map(|t| format!(", {t} AS _bakend_total"))
        .unwrap_or_default();
    let sql = format!(
        "SELECT {}{total} FROM {}{filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
        c.sql.columns,
        c.sql.table,
        params.len() - 1,
        params.len()
    );
    (sql, params)
}

/// The records a list selects, before paging: its owner and its filters, as `WHERE`
/// conditions whose parameters are appended to `params`.
fn selection(q: &ListQuery, backend: Backend, params: &mut Vec<Sql>) -> Vec<String> {
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
        let compiled = f.to_sql(dialect(backend), &q.vars, params.len());
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
pub(super) fn count_sql(c: &Collection, q: &ListQuery, backend: Backend) -> (String, Vec<Sql>) {
    let mut params = Vec::new();
    let conditions = selection(q, backend, &mut params);
    let sql = format!(
        "SELECT COUNT(*) FROM {}{}",
        c.sql.table,
        where_clause(&conditions)
    );
    (sql, params)
}

/// The `ORDER BY` of a list. On PostgreSQL a field key says where its nulls go, as SQLite
/// puts them (see `schema::nulls`); the default order and the system keys read the same on
/// both stores.
pub(super) fn order_by(
    c: &Collection,
    sort: &[(String, bool)],
    backend: Backend,
) -> Result<String, StoreError> {
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
        let (col, field) = match RecordLayout::system_by_json(key) {
            Some(system) => {
                has_id |= system == RecordLayout::ID;
                (system.column, false)
            }
            None if c.def.field(key).is_some() => (key.as_str(), true),
            None => {
                return Err(StoreError::BadRequest(format!(
                    "Cannot sort by \"{key}\": not a field of collection \"{}\"",
                    c.def.name
                )));
            }
        };
        parts.push(format!(
            "{} {}{}",
            quote(col),
            if *desc { "DESC" } else { "ASC" },
            nulls(backend, *desc, field)
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

#[cfg(test)]
mod plan_tests {
    //! The query plans behind lists: the default order, a cursor, an owner's list, an indexed
    //! sort and the counts must read only what they return (no full scan, no sort of the
    //! table), so a later change cannot quietly bring the scans back.

    use super::*;
    use crate::collections::definition::parse;
    use crate::collections::schema;
    use crate::records::cursor::Cursor;
    use crate::sql::Conn;
    use bakend_filter::Filter;
    use serde_json::{Value, json};
    use std::sync::Arc;

    const SQLITE: Backend = Backend::Sqlite;

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
        schema::create(&conn, &def).unwrap();
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
        let order = order_by(c, &q.sort, SQLITE).unwrap();
        let (sql, params) = page_sql(c, q, &order, SQLITE);
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
        let (sql, params) = count_sql(&c, &q, SQLITE);
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
        let (sql, params) = count_sql(&c, &q, SQLITE);
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
