//! The planner's `ALTER`s on PostgreSQL against SQLite's rebuild: every kind of change at
//! once ends in the same records on both stores — on PostgreSQL in the same table, its
//! constraints, types, indexes and count triggers in place — and what blocks a migration
//! blocks it with the same words on both.

use serde_json::json;

use super::super::tests::{apply, column, def, fill};
use super::*;
use crate::collections::registry::Collection;
use crate::collections::testing::{conns, in_transaction};
use crate::records::row::{read_columns, record_json};

fn old() -> CollectionDef {
    def(json!({"name": "p", "fields": [
        {"name": "a", "type": "string"},
        {"name": "n", "type": "string"},
        {"name": "i", "type": "integer"},
        {"name": "b", "type": "boolean"},
        {"name": "gone", "type": "text"},
        {"name": "opt", "type": "string", "required": true},
        {"name": "req", "type": "string"},
        {"name": "s", "type": "string"},
        {"name": "j", "type": "string"},
        {"name": "dt", "type": "string"},
        {"name": "user_id", "type": "string"}
    ], "indexes": [{"fields": ["n", "-createdAt"]}]}))
}

fn new() -> CollectionDef {
    def(json!({"name": "p", "fields": [
        {"name": "a2", "type": "string", "renamedFrom": "a"},
        {"name": "n", "type": "integer"},
        {"name": "i", "type": "float", "required": true, "default": 0.5},
        {"name": "b", "type": "integer"},
        {"name": "opt", "type": "string"},
        {"name": "req", "type": "string", "required": true, "default": "d"},
        {"name": "s", "type": "string", "unique": true},
        {"name": "j", "type": "json"},
        {"name": "dt", "type": "datetime"},
        {"name": "added", "type": "integer", "required": true, "default": 7},
        {"name": "plain", "type": "string"},
        {"name": "user_id", "type": "relation", "collection": "users"}
    ], "indexes": [{"fields": ["a2"]}, {"fields": ["n", "-createdAt"]}]}))
}

fn rows() -> Vec<Value> {
    vec![
        json!({"a": "x", "n": "12", "i": 3, "b": true, "gone": "g", "opt": "o", "s": "s0",
               "j": "{\"k\": 1}", "dt": "2026-01-02", "user_id": "usr_1"}),
        json!({"n": "abc", "b": false, "opt": "p", "req": "r", "s": "s1", "j": "[1,2]",
               "dt": "2026-01-02T03:04:05+02:00"}),
        json!({"a": "é", "n": " 7 ", "i": 9_007_199_254_740_993_i64, "opt": "q",
               "j": "not json", "dt": "nope", "user_id": "usr_2"}),
    ]
}

/// Every record of `def`'s table, as the API shows it.
fn records(conn: &Conn, def: &CollectionDef) -> Vec<Value> {
    let c = Collection::new(def.clone(), json!({}), "x".into(), "x".into());
    conn.prepare(&format!("SELECT {} FROM p ORDER BY id", c.sql.columns))
        .unwrap()
        .query_map((), |r| read_columns(&c, r))
        .unwrap()
        .map(|cols| record_json(&c, &cols.unwrap()))
        .collect()
}

fn oid(conn: &Conn) -> i64 {
    conn.query_row("SELECT 'p'::regclass::oid::bigint", (), |r| r.get(0))
        .unwrap()
}

#[test]
fn every_change_at_once_gives_the_same_records_on_both_stores() {
    let (old, new) = (old(), new());
    let p = plan(&old, &new);
    assert!(p.rebuild, "{:?}", p.changes);
    let mut outcomes = Vec::new();
    for t in conns("every_change_at_once_gives_the_same_records_on_both_stores") {
        let conn = &t.conn;
        fill(conn, &old, &rows());
        let before = (conn.backend() == Backend::Postgres).then(|| oid(conn));
        let blocked = apply(conn, &old, &new, false).unwrap_err().to_string();
        let forced: Vec<String> = apply(conn, &old, &new, true)
            .unwrap()
            .iter()
            .map(Blocker::to_string)
            .collect();
        let after = records(conn, &new);
        let mut indexes = schema::index_names(conn, "p").unwrap();
        indexes.sort();
        if let Some(before) = before {
            assert_eq!(oid(conn), before, "changed in place, not rebuilt");
            postgres_table_is_as_defined(conn, &new);
        }
        // The count was kept through the change, and its triggers still count.
        let count = || crate::collections::counts::read(conn, "p").unwrap();
        assert_eq!(count(), Some(3));
        conn.execute_batch(
            "INSERT INTO p (id, created_at, updated_at, i, req, added) VALUES ('rec_9', 'x', 'x', 1.0, 'r', 1)",
        )
        .unwrap();
        assert_eq!(count(), Some(4));
        outcomes.push((blocked, forced, after, indexes));
    }
    let sqlite = &outcomes[0];
    assert_eq!(
        sqlite.2[0],
        json!({"id": "rec_0", "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "x",
               "a2": "x", "n": 12, "i": 3, "b": 1, "opt": "o", "req": "d", "s": "s0",
               "j": {"k": 1}, "dt": "2026-01-02T00:00:00.000Z", "added": 7, "plain": null,
               "user_id": "usr_1"})
    );
    assert_eq!(sqlite.2[2]["i"], json!(9_007_199_254_740_992.0));
    assert!(
        sqlite
            .0
            .contains("cannot be converted from string to integer")
    );
    for other in &outcomes[1..] {
        assert_eq!(other.0, sqlite.0, "the refusal");
        assert_eq!(other.1, sqlite.1, "what was forced");
        assert_eq!(other.2, sqlite.2, "the records");
        assert_eq!(other.3, sqlite.3, "the indexes");
    }
}

/// PostgreSQL: the columns have the new definition's types and nullability, and nothing of
/// the migration's own is left behind.
fn postgres_table_is_as_defined(conn: &Conn, new: &CollectionDef) {
    let columns: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'p' ORDER BY column_name",
        )
        .unwrap()
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns.len(), new.fields.len() + 3, "{columns:?}");
    for f in &new.fields {
        let (_, ty, nullable) = columns
            .iter()
            .find(|(c, _, _)| *c == f.name)
            .unwrap_or_else(|| panic!("no column {}: {columns:?}", f.name));
        let want = match f.kind.storage() {
            Storage::Integer => "bigint",
            Storage::Real => "double precision",
            Storage::Text => "text",
        };
        assert_eq!(
            (ty.as_str(), nullable == "NO"),
            (want, f.required),
            "{}",
            f.name
        );
    }
    let null = conn.execute_batch(
        "INSERT INTO p (id, created_at, updated_at, i, req, added) VALUES ('rec_n', 'x', 'x', 1, NULL, 1)",
    );
    assert!(null.is_err(), "a required field refuses null");
}

/// Each kind of blocking rows, reported in the same words by both stores.
#[test]
fn what_blocks_a_migration_says_the_same_on_both_stores() {
    let base = json!({"name": "q", "fields": [
        {"name": "t", "type": "string"}, {"name": "k", "type": "string"}, {"name": "v", "type": "integer"}
    ]});
    let rows = [
        json!({"t": "a", "k": "1", "v": 5}),
        json!({"t": "a", "k": "1", "v": 500}),
        json!({"t": "b", "k": "2"}),
        json!({"t": "b", "k": "2", "v": 7}),
        json!({"k": "x"}),
    ];
    let changes = [
        // Duplicates for a new unique index over two fields.
        json!({"indexes": [{"fields": ["t", "k"], "unique": true}]}),
        // Duplicates for a field made unique.
        json!({"fields": [{"name": "t", "type": "string", "unique": true},
                          {"name": "k", "type": "string"}, {"name": "v", "type": "integer"}]}),
        // Nulls for a new required field without a default, and for one made required.
        json!({"fields": [{"name": "t", "type": "string", "required": true},
                          {"name": "k", "type": "string"}, {"name": "v", "type": "integer"},
                          {"name": "w", "type": "string", "required": true}]}),
        // Values that do not convert, and values a new rule refuses.
        json!({"fields": [{"name": "t", "type": "string"},
                          {"name": "k", "type": "integer"}, {"name": "v", "type": "integer", "max": 100}]}),
    ];
    let mut seen: Vec<Vec<String>> = Vec::new();
    for t in conns("what_blocks_a_migration_says_the_same_on_both_stores") {
        let conn = &t.conn;
        let old = def(base.clone());
        fill(conn, &old, &rows);
        let mut said = Vec::new();
        for change in &changes {
            let mut wanted = base.clone();
            for (k, v) in change.as_object().unwrap() {
                wanted[k] = v.clone();
            }
            let new = def(wanted);
            let p = plan(&old, &new);
            let scanned: Vec<String> = scan(conn, &old, &new, &p)
                .unwrap()
                .iter()
                .map(Blocker::to_string)
                .collect();
            said.push(format!("scan: {}", scanned.join("; ")));
            for force in [false, true] {
                said.push(match apply(conn, &old, &new, force) {
                    Ok(forced) => format!("forced: {forced:?}"),
                    Err(e) => format!("force {force}: {e}"),
                });
            }
            assert_eq!(column(conn, "q", "k").len(), rows.len());
        }
        seen.push(said);
    }
    let sqlite = &seen[0];
    let expect = [
        "index unique (t, k): 2 record(s) repeat values another record holds: rec_1 (same as rec_0), rec_3 (same as rec_2) (--force cannot help)",
        "field \"t\": 2 record(s) repeat a value another record holds: rec_1 (same as rec_0), rec_3 (same as rec_2) (--force cannot help)",
        "field \"w\": 5 record(s) have no value for the new required field (give it a \"default\"): rec_0, rec_1, rec_2, rec_3, rec_4 (--force cannot help); field \"t\": 1 record(s) have no value for the required field (give it a \"default\"): rec_4 (--force cannot help)",
        "field \"v\": 1 record(s) break the new rule: Field \"v\" must be at most 100: rec_1 (500) (with --force they are kept as they are); field \"k\": 1 record(s) cannot be converted from string to integer: rec_4 (\"x\") (with --force they become null)",
    ];
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(sqlite[i * 3], format!("scan: {e}"));
        let refused =
            format!("Collection \"q\" cannot be migrated without losing or invalidating data: {e}");
        assert_eq!(sqlite[i * 3 + 1], format!("force false: {refused}"));
        if i < 3 {
            assert_eq!(sqlite[i * 3 + 2], format!("force true: {refused}"));
        }
    }
    // The last one can be forced (and was).
    assert!(sqlite[11].starts_with("forced: "), "{}", sqlite[11]);
    for other in &seen[1..] {
        for (a, b) in sqlite.iter().zip(other) {
            assert_eq!(a, b);
        }
    }
}

/// A new required field on an empty table needs no default, and a field made optional
/// takes nulls afterwards.
#[test]
fn required_and_optional_on_an_empty_and_a_full_table() {
    for t in conns("required_and_optional_on_an_empty_and_a_full_table") {
        let conn = &t.conn;
        let old = def(
            json!({"name": "p", "fields": [{"name": "a", "type": "string", "required": true}]}),
        );
        fill(conn, &old, &[]);
        let new = def(json!({"name": "p", "fields": [
            {"name": "a", "type": "string"}, {"name": "b", "type": "integer", "required": true}
        ]}));
        apply(conn, &old, &new, false).unwrap();
        let insert = |sql: &str| in_transaction(conn, || conn.execute_batch(sql));
        assert!(
            insert(
                "INSERT INTO p (id, created_at, updated_at, a, b) VALUES ('r1', 'x', 'x', NULL, 1)"
            )
            .is_ok()
        );
        assert!(insert("INSERT INTO p (id, created_at, updated_at, a, b) VALUES ('r2', 'x', 'x', 'a', NULL)").is_err());
    }
}
