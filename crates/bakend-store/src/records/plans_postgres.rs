//! PostgreSQL's plans for lists, as `query.rs`'s plan tests pin SQLite's: the default order
//! (with and without a cursor), an owner's list and its count, sorts by an index either way
//! round — each reads the index it is meant to, not the table, and sorts nothing.
//!
//! PostgreSQL's planner weighs costs, so the proof must be a plan it prefers: the table holds
//! enough rows (20,000) and is `ANALYZE`d, and nothing is switched off. A sort by an
//! unindexed field shows the same check catches a full read and sort. Skipped, with a line
//! saying so, unless `BAKEND_TEST_POSTGRES` names a server.

use serde_json::json;

use super::cursor::Cursor;
use super::query::{count_sql, order_by, page_sql};
use super::store::ListQuery;
use crate::collections::definition::parse;
use crate::collections::registry::Collection;
use crate::collections::schema;
use crate::collections::testing::{TestConn, conns};
use crate::sql::{Backend, Conn, Value as Sql};

const ROWS: i64 = 20_000;

/// A collection of `ROWS` records — 50 owners, 20 projects, titles with some nulls — analyzed.
fn setup(what: &str) -> Option<(TestConn, Collection)> {
    let t = conns(what)
        .into_iter()
        .find(|t| t.conn.backend() == Backend::Postgres)?;
    let def = parse(&json!({"name": "posts", "fields": [
        {"name": "title", "type": "string"},
        {"name": "slug", "type": "string", "unique": true},
        {"name": "user_id", "type": "string"},
        {"name": "project", "type": "string"},
        {"name": "body", "type": "text"}
    ], "indexes": [{"fields": ["title"]}, {"fields": ["project", "-createdAt"]}]}))
    .unwrap()
    .def;
    schema::create(&t.conn, &def).unwrap();
    t.conn
        .execute(
            "INSERT INTO posts (id, created_at, updated_at, title, slug, user_id, project, body)
             SELECT 'rec_' || lpad(i::text, 8, '0'),
                    to_char(timestamp '2026-01-01' + i * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS c,
                    'x',
                    CASE WHEN i % 10 = 0 THEN NULL ELSE md5(i::text) END,
                    's' || i, 'usr_' || (i % 50), 'p' || (i % 20), repeat('text ', 20)
             FROM generate_series(1, ?1) AS i",
            [ROWS],
        )
        .unwrap();
    t.conn.execute_batch("ANALYZE posts").unwrap();
    let c = Collection::new(def, json!({}), "x".into(), "x".into());
    Some((t, c))
}

fn explain(conn: &Conn, sql: &str, params: &[Sql]) -> String {
    conn.prepare(&format!("EXPLAIN {sql}"))
        .unwrap()
        .query_map(crate::sql::params_from_iter(params.iter()), |r| {
            r.get::<String>(0)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n")
}

fn page_plan(conn: &Conn, c: &Collection, q: &ListQuery) -> String {
    let order = order_by(c, &q.sort, Backend::Postgres).unwrap();
    let (sql, params) = page_sql(c, q, &order, Backend::Postgres);
    explain(conn, &sql, &params)
}

/// The plan walks `index` (in `direction`, e.g. "Index Scan Backward using") and neither
/// reads the table whole nor sorts.
fn reads_only_what_it_returns(plan: &str, scan: &str, index: &str) {
    assert!(plan.contains(&format!("{scan} {index} ")), "{plan}");
    assert!(!plan.contains("Seq Scan"), "reads the table: {plan}");
    assert!(!plan.contains("Sort"), "sorts: {plan}");
}

fn cursor() -> Option<Cursor> {
    Some(Cursor {
        created_at: "2026-01-01T03:00:00.000Z".into(),
        id: "rec_00010800".into(),
    })
}

#[test]
fn the_default_order_walks_its_index_on_postgres() {
    let Some((t, c)) = setup("the_default_order_walks_its_index_on_postgres") else {
        return;
    };
    let q = ListQuery::first(20);
    let p = page_plan(&t.conn, &c, &q);
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_created");
    let deep = ListQuery {
        after: cursor(),
        ..ListQuery::first(20)
    };
    let p = page_plan(&t.conn, &c, &deep);
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_created");
    assert!(
        p.contains("Index Cond: (ROW(created_at, id) < ROW("),
        "starts at the cursor: {p}"
    );
}

#[test]
fn an_owners_list_and_count_use_the_owner_index_on_postgres() {
    let Some((t, c)) = setup("an_owners_list_and_count_use_the_owner_index_on_postgres") else {
        return;
    };
    let q = ListQuery {
        owned_by: Some("usr_7".into()),
        ..ListQuery::first(20)
    };
    let p = page_plan(&t.conn, &c, &q);
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_owner_created");
    let with_cursor = ListQuery {
        after: cursor(),
        ..q.clone()
    };
    let p = page_plan(&t.conn, &c, &with_cursor);
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_owner_created");
    // The count finds the owner's rows through the index (all of them, and only them). It
    // reads the index alone ("Index Only Scan") where the visibility map says the pages are
    // all visible, which depends on vacuum and on other transactions, so not asserted.
    let (sql, params) = count_sql(&c, &q, Backend::Postgres);
    let p = explain(&t.conn, &sql, &params);
    assert!(p.contains("idx_posts_owner_created"), "{p}");
    assert!(p.contains("Index Cond: (user_id = 'usr_7'"), "{p}");
    assert!(!p.contains("Seq Scan"), "{p}");
}

#[test]
fn sorts_by_an_index_read_it_in_order_both_ways_on_postgres() {
    let Some((t, c)) = setup("sorts_by_an_index_read_it_in_order_both_ways_on_postgres") else {
        return;
    };
    let sorted = |keys: &[(&str, bool)]| ListQuery {
        sort: keys.iter().map(|(k, d)| (k.to_string(), *d)).collect(),
        ..ListQuery::first(20)
    };
    // Nulls first going up, last going down — as on SQLite — and still the index's order.
    let p = page_plan(&t.conn, &c, &sorted(&[("title", false)]));
    reads_only_what_it_returns(&p, "Index Scan using", "idx_posts_title");
    let p = page_plan(&t.conn, &c, &sorted(&[("title", true)]));
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_title");
    let name = "idx_posts_project_created_at_desc";
    let p = page_plan(
        &t.conn,
        &c,
        &sorted(&[("project", false), ("createdAt", true)]),
    );
    reads_only_what_it_returns(&p, "Index Scan using", name);
    let p = page_plan(
        &t.conn,
        &c,
        &sorted(&[("project", true), ("createdAt", false)]),
    );
    reads_only_what_it_returns(&p, "Index Scan Backward using", name);
    let p = page_plan(&t.conn, &c, &sorted(&[("id", true)]));
    reads_only_what_it_returns(&p, "Index Scan Backward using", "_pk_posts");
    // A unique field's index has no id after it: records tied on it (nulls) are put in id
    // order among themselves, the walk still stops at the page's end.
    let p = page_plan(&t.conn, &c, &sorted(&[("slug", false)]));
    assert!(p.contains("Index Scan using uniq_posts_slug "), "{p}");
    assert!(
        p.contains("Incremental Sort") && p.contains("Presorted Key: slug"),
        "{p}"
    );
    assert!(!p.contains("Seq Scan"), "{p}");
    // What an unindexed sort looks like: the check above would catch it.
    let p = page_plan(&t.conn, &c, &sorted(&[("body", false)]));
    assert!(p.contains("Seq Scan on posts") && p.contains("Sort"), "{p}");
}

#[test]
fn the_unfiltered_count_reads_one_row_on_postgres() {
    let Some((t, _)) = setup("the_unfiltered_count_reads_one_row_on_postgres") else {
        return;
    };
    // `_record_counts` holds a row per collection: the plan reads it, never the collection.
    let p = explain(
        &t.conn,
        "SELECT n FROM _record_counts WHERE collection = ?1",
        &[Sql::Text("posts".into())],
    );
    assert!(p.contains("_record_counts"), "{p}");
    assert!(!p.contains("posts "), "{p}");
    let n: i64 = t
        .conn
        .query_row(
            "SELECT n FROM _record_counts WHERE collection = 'posts'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, ROWS, "the triggers counted the bulk insert");
}

/// PostgreSQL may run a prepared statement with a generic plan, made without the bound
/// values (the limit unknown): the default order and an owner's list still walk their index.
#[test]
fn generic_plans_walk_the_same_indexes_on_postgres() {
    let Some((t, c)) = setup("generic_plans_walk_the_same_indexes_on_postgres") else {
        return;
    };
    let conn = &t.conn;
    conn.execute_batch("SET plan_cache_mode = force_generic_plan")
        .unwrap();
    let cases = [
        (ListQuery::first(20), "idx_posts_created"),
        (
            ListQuery {
                owned_by: Some("usr_7".into()),
                ..ListQuery::first(20)
            },
            "idx_posts_owner_created",
        ),
    ];
    for (n, (q, index)) in cases.into_iter().enumerate() {
        let order = order_by(&c, &q.sort, Backend::Postgres).unwrap();
        let (sql, params) = page_sql(&c, &q, &order, Backend::Postgres);
        let args: Vec<String> = params
            .iter()
            .map(|p| match p {
                Sql::Integer(i) => i.to_string(),
                Sql::Text(s) => format!("'{s}'"),
                other => panic!("{other:?}"),
            })
            .collect();
        conn.execute_batch(&format!("PREPARE q{n} AS {}", dollars(&sql)))
            .unwrap();
        let p = explain(conn, &format!("EXECUTE q{n}({})", args.join(", ")), &[]);
        reads_only_what_it_returns(&p, "Index Scan Backward using", index);
        // Generic: planned for an unknown limit (a custom plan expects the 21 rows bound).
        let first = p.lines().next().unwrap_or_default();
        assert!(!first.contains("rows=21 "), "a generic plan: {p}");
    }
    conn.execute_batch("DEALLOCATE ALL; RESET plan_cache_mode")
        .unwrap();
}

/// `?N` as `$N` (the statements here have no other `?`).
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A filter comparison on a field an index starts with uses that index, for the page and the
/// count; a `~` cannot, and the list walks the default order until the page is full.
#[test]
fn a_filter_on_an_indexed_field_uses_its_index_on_postgres() {
    let Some((t, c)) = setup("a_filter_on_an_indexed_field_uses_its_index_on_postgres") else {
        return;
    };
    let filtered = |f: &str| ListQuery {
        filters: vec![std::sync::Arc::new(
            bakend_filter::Filter::new(f, c.filter_schema()).unwrap(),
        )],
        ..ListQuery::first(20)
    };
    let q = filtered("slug = 's77' && title != null");
    let p = page_plan(&t.conn, &c, &q);
    assert!(p.contains("uniq_posts_slug"), "{p}");
    assert!(!p.contains("Seq Scan"), "{p}");
    let (sql, params) = count_sql(&c, &q, Backend::Postgres);
    let p = explain(&t.conn, &sql, &params);
    assert!(p.contains("uniq_posts_slug"), "{p}");
    let p = page_plan(&t.conn, &c, &filtered("title ~ 'ab'"));
    reads_only_what_it_returns(&p, "Index Scan Backward using", "idx_posts_created");
}
