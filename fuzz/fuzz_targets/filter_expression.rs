//! The filter language (`bakend_filter`): any `?filter=` a client can send. Parsing, checking,
//! compiling and evaluating never panic (nor overflow the stack); errors point inside the input
//! (1 ≤ position ≤ characters + 1); a parsed expression printed back parses to the same
//! expression; the SQL has one placeholder per parameter; and on a few fixed records SQLite
//! running the compiled SQL selects exactly the records the evaluator accepts.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeSet;

use bakend_filter::{
    Filter, FilterError, Kind, MAX_LENGTH, RequestVars, Schema, SqlValue, Sqlite, parse,
    register_sqlite_functions,
};
use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;
use serde_json::{Value, json};

const FIELDS: &[(&str, Kind, &str)] = &[
    ("title", Kind::String, "TEXT"),
    ("body", Kind::Text, "TEXT"),
    ("views", Kind::Integer, "INTEGER"),
    ("score", Kind::Float, "REAL"),
    ("published", Kind::Boolean, "INTEGER"),
    ("due", Kind::Datetime, "TEXT"),
    ("meta", Kind::Json, "TEXT"),
    ("owner", Kind::Relation, "TEXT"),
    ("avatar", Kind::File, "TEXT"),
];

/// The records, as JSON (the evaluator's input) and as the row the store would write.
fn records() -> Vec<Value> {
    vec![
        json!({"id": "rec_1", "createdAt": "2024-01-01T00:00:00.000Z",
               "updatedAt": "2024-02-01T10:00:00.000Z", "title": "Straße ÉCOLE", "body": "50% a_b",
               "views": 10, "score": -2.5, "published": true, "due": "2024-06-01T12:00:00.000Z",
               "meta": {"a": 1}, "owner": "usr_1", "avatar": "fil_1"}),
        json!({"id": "rec_2", "createdAt": "2023-12-31T23:59:59.999Z",
               "updatedAt": "2023-12-31T23:59:59.999Z", "title": "ΣΑΣ ǅ", "body": null,
               "views": 9_007_199_254_740_993_i64, "score": 1e20, "published": false, "due": null,
               "meta": null, "owner": "usr_2", "avatar": null}),
        json!({"id": "rec_3", "createdAt": "2024-01-01T00:00:00.000Z",
               "updatedAt": "2024-01-01T00:00:00.000Z", "title": null, "body": "", "views": null,
               "score": null, "published": null, "due": "1999-12-31T23:59:59.999Z",
               "meta": [1], "owner": null, "avatar": null}),
    ]
}

fn sql_value(v: &Value, kind: Kind) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match (v, kind) {
        (Value::Null, _) => Sql::Null,
        (Value::Bool(b), _) => Sql::Integer(i64::from(*b)),
        (Value::Number(n), Kind::Integer) => Sql::Integer(n.as_i64().unwrap_or_default()),
        (Value::Number(n), _) => Sql::Real(n.as_f64().unwrap_or_default()),
        (Value::String(s), _) => Sql::Text(s.clone()),
        (v, _) => Sql::Text(v.to_string()),
    }
}

struct World {
    schema: Schema,
    records: Vec<Value>,
    conn: Connection,
}

fn world() -> World {
    let mut schema = Schema::new();
    for (name, kind, _) in FIELDS {
        schema.add(name, *kind);
    }
    let conn = Connection::open_in_memory().unwrap();
    register_sqlite_functions(&conn).unwrap();
    let cols: Vec<String> = FIELDS.iter().map(|(n, _, t)| format!("{n} {t}")).collect();
    conn.execute_batch(&format!(
        "CREATE TABLE t (id TEXT PRIMARY KEY, created_at TEXT, updated_at TEXT, {})",
        cols.join(", ")
    ))
    .unwrap();
    let records = records();
    for r in &records {
        let mut row = vec![
            sql_value(&r["id"], Kind::String),
            sql_value(&r["createdAt"], Kind::Datetime),
            sql_value(&r["updatedAt"], Kind::Datetime),
        ];
        row.extend(FIELDS.iter().map(|(n, k, _)| sql_value(&r[*n], *k)));
        let marks: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
        conn.execute(
            &format!("INSERT INTO t VALUES ({})", marks.join(", ")),
            rusqlite::params_from_iter(row),
        )
        .unwrap();
    }
    World {
        schema,
        records,
        conn,
    }
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fn check_position(src: &str, e: &FilterError) {
    let end = src.chars().count() + 1;
    assert!(
        (1..=end).contains(&e.position()),
        "{src:?}: {e} is outside 1..={end}"
    );
    assert!(e.to_string().starts_with("filter: "), "{e}");
}

fuzz_target!(|data: &[u8]| {
    // Query strings arrive percent-decoded as UTF-8; anything else is refused before this.
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let expr = match parse(src) {
        Ok(e) => e,
        Err(e) => return check_position(src, &e),
    };
    let printed = expr.to_string();
    if printed.len() <= MAX_LENGTH {
        let again =
            parse(&printed).unwrap_or_else(|e| panic!("{src:?} printed as {printed:?}: {e}"));
        assert_eq!(again.to_string(), printed, "{src:?}");
    }
    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        let w = w.get_or_insert_with(world);
        let filter = match Filter::check(&expr, &w.schema) {
            Ok(f) => f,
            Err(e) => return check_position(src, &e),
        };
        let _ = (filter.equalities(), filter.fields());
        let anonymous = RequestVars::anonymous("2024-03-01T00:00:00.000Z");
        let user = RequestVars {
            auth_id: Some("usr_1".into()),
            auth_role: Some("authenticated".into()),
            auth_email: Some("Ann@Example.com".into()),
            now: "2024-03-01T00:00:00.000Z".into(),
        };
        for vars in [anonymous, user] {
            let compiled = filter.to_sql(&Sqlite, &vars, 0);
            assert_eq!(
                compiled.sql.matches('?').count(),
                compiled.params.len(),
                "{src:?} → {}",
                compiled.sql
            );
            let params: Vec<rusqlite::types::Value> = compiled
                .params
                .iter()
                .map(|p| match p {
                    SqlValue::Integer(i) => (*i).into(),
                    SqlValue::Real(x) => (*x).into(),
                    SqlValue::Text(s) => s.clone().into(),
                    SqlValue::Bool(b) => i64::from(*b).into(),
                })
                .collect();
            let query = format!("SELECT id FROM t WHERE {}", compiled.sql);
            let by_sql: BTreeSet<String> = w
                .conn
                .prepare(&query)
                .and_then(|mut s| {
                    s.query_map(rusqlite::params_from_iter(params), |r| r.get(0))?
                        .collect()
                })
                .unwrap_or_else(|e| panic!("{src:?} → {query}: {e}"));
            let by_eval: BTreeSet<String> = w
                .records
                .iter()
                .filter(|r| filter.matches(r, &vars))
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect();
            assert_eq!(by_sql, by_eval, "{src:?} → {query} {:?}", compiled.params);
        }
    });
});
