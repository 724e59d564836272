//! The two back-ends agree: for random records in a real SQLite table (the column types
//! `bakend-store` gives each field type) and random well-typed filters, the ids
//! `SELECT id FROM t WHERE <compiled>` returns are exactly the ids whose record — read back from
//! the table into the JSON wire shape, as the store does — the evaluator accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use bakend_filter::{Filter, Kind, RequestVars, Schema, Sqlite, register_sqlite_functions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::{Map, Number, Value};

/// The fields, their types, and the column type `FieldType::sql_type` gives them.
const FIELDS: &[(&str, Kind, &str)] = &[
    ("s", Kind::String, "TEXT"),
    ("t", Kind::Text, "TEXT"),
    ("i", Kind::Integer, "INTEGER"),
    ("f", Kind::Float, "REAL"),
    ("b", Kind::Boolean, "INTEGER"),
    ("d", Kind::Datetime, "TEXT"),
    ("j", Kind::Json, "TEXT"),
    ("r", Kind::Relation, "TEXT"),
    ("fl", Kind::File, "TEXT"),
];

fn schema() -> Schema {
    let mut s = Schema::new();
    for (name, kind, _) in FIELDS {
        s.add(name, *kind);
    }
    s
}

/// Texts with the case-folding traps: `ß` (lowercase already, uppercases to two letters), `É`,
/// the titlecase digraph `ǅ`, dotted `İ` (lowercases to two characters), final sigma, LIKE's own
/// metacharacters, quotes, and an embedded NUL.
const TEXTS: &[&str] = &[
    "",
    "a",
    "A",
    "abc",
    "ABC",
    "aBc",
    "Straße",
    "STRASSE",
    "straße",
    "ÉCOLE",
    "école",
    "Ecole",
    "ǅ",
    "ǆ",
    "Ǆ",
    "İstanbul",
    "i̇stanbul",
    "ΣΑΣ",
    "σας",
    "Σ",
    "50%",
    "a_c",
    "a\\c",
    "it's",
    "\"q\"",
    "%",
    "_",
    "日本語",
    "a\0B",
    "usr_1",
    "usr_2",
];

const IDS: &[&str] = &["usr_1", "usr_2", "USR_1", "rec_a"];

const DATETIMES: &[&str] = &[
    "2024-01-01T00:00:00.000Z",
    "2024-01-01T10:20:30.000Z",
    "2024-06-15T12:00:00.500Z",
    "1999-12-31T23:59:59.999Z",
    "2030-01-01T00:00:00.000Z",
];

/// Literal spellings that normalise to one of `DATETIMES`.
const DATETIME_LITERALS: &[&str] = &[
    "2024-01-01",
    "2024-01-01 10:20:30",
    "2024-01-01T12:20:30+02:00",
    "2024-06-15T12:00:00.5Z",
    "1999-12-31T23:59:59.999Z",
    "2030-01-01T00:00",
    "2024-03-01",
];

const INTS: &[i64] = &[
    0,
    1,
    -1,
    5,
    42,
    i64::MAX,
    i64::MIN,
    9_007_199_254_740_992,
    9_007_199_254_740_993,
    -9_007_199_254_740_993,
];

const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.5,
    -2.25,
    5.0,
    42.0,
    1e20,
    -1e-3,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    -9.3e18,
];

fn text_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(TEXTS).prop_map(String::from),
        1 => "[abcABCßéÉΣσς_%\\\\ ]{0,4}",
    ]
    .boxed()
}

fn int_value() -> BoxedStrategy<i64> {
    prop_oneof![3 => prop::sample::select(INTS), 1 => any::<i64>(), 1 => -3i64..=3].boxed()
}

fn float_value() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => prop::sample::select(FLOATS),
        1 => -1e6f64..1e6,
        1 => (-3i64..=3).prop_map(|i| i as f64 / 2.0),
    ]
    .boxed()
}

fn datetime_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(DATETIMES).prop_map(String::from),
        // Any millisecond between 1970 and 2100, canonical.
        1 => (0i64..4_102_444_800_000).prop_map(canonical::from_millis),
    ]
    .boxed()
}

/// The canonical datetime form of a millisecond timestamp (without a chrono dependency).
mod canonical {
    pub fn from_millis(ms: i64) -> String {
        let days = ms.div_euclid(86_400_000);
        let rest = ms.rem_euclid(86_400_000);
        let (y, m, d) = civil(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3_600_000,
            rest / 60_000 % 60,
            rest / 1000 % 60,
            rest % 1000
        )
    }

    /// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    fn civil(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 4 => s.prop_map(Some)].boxed()
}

/// One row: created, updated, then one stored value per field in `FIELDS` order.
fn row() -> impl Strategy<Value = (String, String, Vec<Sql>)> {
    let values = (
        maybe(text_value()),
        maybe(text_value()),
        maybe(int_value()),
        maybe(float_value()),
        maybe(any::<bool>().boxed()),
        maybe(datetime_value()),
        maybe(prop::sample::select(vec!["{\"a\":1}", "[1,2]", "{}"]).boxed()),
        maybe(
            prop_oneof![
                prop::sample::select(IDS).prop_map(String::from),
                text_value()
            ]
            .boxed(),
        ),
        maybe(prop::sample::select(IDS).prop_map(String::from).boxed()),
    );
    (datetime_value(), datetime_value(), values).prop_map(|(c, u, (s, t, i, f, b, d, j, r, fl))| {
        let text = |v: Option<String>| v.map_or(Sql::Null, Sql::Text);
        let vals = vec![
            text(s),
            text(t),
            i.map_or(Sql::Null, Sql::Integer),
            f.map_or(Sql::Null, Sql::Real),
            b.map_or(Sql::Null, |b| Sql::Integer(i64::from(b))),
            text(d),
            text(j.map(String::from)),
            text(r),
            text(fl),
        ];
        (c, u, vals)
    })
}

// ---------------------------------------------------------------------------------------------
// Filters, as source text

fn quote(s: &str, double: bool) -> String {
    let q = if double { '"' } else { '\'' };
    let mut out = String::from(q);
    for c in s.chars() {
        if c == q || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(q);
    out
}

fn text_literal() -> BoxedStrategy<String> {
    (
        prop_oneof![
            text_value(),
            prop::sample::select(IDS).prop_map(String::from)
        ],
        any::<bool>(),
    )
        .prop_map(|(s, d)| quote(&s, d))
        .boxed()
}

fn auth_var() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "@request.auth.id",
        "@request.auth.role",
        "@request.auth.email",
    ])
    .prop_map(String::from)
    .boxed()
}

fn pick(names: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(names).prop_map(String::from).boxed()
}

fn text_operand() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&["s", "t", "r", "fl", "id"]),
        2 => text_literal(),
        1 => auth_var(),
    ]
    .boxed()
}

fn number_operand() -> BoxedStrategy<String> {
    prop_oneof![
        2 => pick(&["i", "f"]),
        1 => int_value().prop_map(|i| i.to_string()),
        1 => float_value().prop_map(|f| {
            let s = f.to_string();
            if s.contains('.') { s } else { format!("{s}.0") }
        }),
    ]
    .boxed()
}

fn datetime_operand() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&["d", "createdAt", "updatedAt"]),
        1 => Just("@now".to_string()),
        2 => (
            prop_oneof![
                prop::sample::select(DATETIMES),
                prop::sample::select(DATETIME_LITERALS)
            ],
            any::<bool>()
        )
            .prop_map(|(s, d)| quote(s, d)),
    ]
    .boxed()
}

fn bool_operand() -> BoxedStrategy<String> {
    pick(&["b", "true", "false"])
}

fn order_op() -> BoxedStrategy<String> {
    pick(&["=", "!=", "<", "<=", ">", ">="])
}

fn eq_op() -> BoxedStrategy<String> {
    pick(&["=", "!="])
}

fn like_op() -> BoxedStrategy<String> {
    pick(&["~", "!~"])
}

/// Right side of `~`: a literal pattern (sometimes with `%`), or an `@` value.
fn pattern_operand() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text_literal(),
        2 => (text_value(), any::<u8>(), any::<bool>()).prop_map(|(s, at, d)| {
            let chars: Vec<char> = s.chars().collect();
            let cut = usize::from(at) % (chars.len() + 1);
            let p: String = match at % 4 {
                0 => format!("{}%", chars.iter().collect::<String>()),
                1 => format!("%{}", chars.iter().collect::<String>()),
                2 => format!(
                    "{}%{}",
                    chars[..cut].iter().collect::<String>(),
                    chars[cut..].iter().collect::<String>()
                ),
                _ => format!("%{}%", chars.iter().collect::<String>()),
            };
            quote(&p, d)
        }),
        1 => auth_var(),
        1 => Just("@now".to_string()),
    ]
    .boxed()
}

fn any_operand() -> BoxedStrategy<String> {
    prop_oneof![
        text_operand(),
        number_operand(),
        datetime_operand(),
        bool_operand(),
        Just("j".to_string()),
    ]
    .boxed()
}

fn cmp(
    a: BoxedStrategy<String>,
    op: BoxedStrategy<String>,
    b: BoxedStrategy<String>,
) -> BoxedStrategy<String> {
    (a, op, b)
        .prop_map(|(a, op, b)| format!("{a} {op} {b}"))
        .boxed()
}

fn leaf() -> BoxedStrategy<String> {
    prop_oneof![
        4 => cmp(text_operand(), order_op(), text_operand()),
        4 => cmp(
            prop_oneof![text_operand(), datetime_operand()].boxed(),
            like_op(),
            pattern_operand()
        ),
        3 => cmp(number_operand(), order_op(), number_operand()),
        2 => cmp(bool_operand(), eq_op(), bool_operand()),
        3 => cmp(datetime_operand(), order_op(), datetime_operand()),
        2 => (any_operand(), eq_op(), any::<bool>()).prop_map(|(a, op, flip)| {
            if flip { format!("null {op} {a}") } else { format!("{a} {op} null") }
        }),
        1 => cmp(
            prop_oneof![text_operand(), number_operand(), datetime_operand()].boxed(),
            order_op(),
            Just("null".to_string()).boxed()
        ),
        1 => cmp(
            prop_oneof![text_operand(), datetime_operand()].boxed(),
            like_op(),
            Just("null".to_string()).boxed()
        ),
        1 => Just("null = null".to_string()),
    ]
    .boxed()
}

fn filter_text() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 12, 3, |inner| {
        (
            prop::collection::vec(inner, 2..=3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(items, and, parens)| {
                let joiner = if and { " && " } else { " || " };
                // Without parentheses, precedence decides the grouping (the same for both).
                let items: Vec<String> = if parens {
                    items.iter().map(|s| format!("({s})")).collect()
                } else {
                    items
                };
                items.join(joiner)
            })
    })
}

fn vars() -> impl Strategy<Value = RequestVars> {
    let auth = (
        prop::sample::select(IDS),
        prop::sample::select(vec!["admin", "authenticated"]),
        prop_oneof![
            Just("a@example.com".to_string()),
            Just("B@Example.COM".to_string()),
            text_value()
        ],
    );
    (
        prop::sample::select(DATETIMES),
        prop::option::weighted(0.6, auth),
    )
        .prop_map(|(now, auth)| RequestVars {
            auth_id: auth.as_ref().map(|a| a.0.to_string()),
            auth_role: auth.as_ref().map(|a| a.1.to_string()),
            auth_email: auth.map(|a| a.2),
            now: now.to_string(),
        })
}

// ---------------------------------------------------------------------------------------------
// The table and the wire shape

fn table(rows: &[(String, String, Vec<Sql>)]) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    register_sqlite_functions(&conn).unwrap();
    let cols: Vec<String> = FIELDS
        .iter()
        .map(|(n, _, ty)| format!("\"{n}\" {ty}"))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL, created_at TEXT NOT NULL, \
         updated_at TEXT NOT NULL, {})",
        cols.join(", ")
    ))
    .unwrap();
    let placeholders: Vec<String> = (1..=FIELDS.len() + 3).map(|i| format!("?{i}")).collect();
    let mut insert = conn
        .prepare(&format!(
            "INSERT INTO t VALUES ({})",
            placeholders.join(", ")
        ))
        .unwrap();
    for (n, (created, updated, values)) in rows.iter().enumerate() {
        let mut all = vec![
            Sql::Text(format!("rec_{n}")),
            Sql::Text(created.clone()),
            Sql::Text(updated.clone()),
        ];
        all.extend(values.iter().cloned());
        insert.execute(rusqlite::params_from_iter(all)).unwrap();
    }
    drop(insert);
    conn
}

/// As `bakend-store`'s `records::row::float_json`.
fn float_json(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Value::Number((f as i64).into())
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// As `bakend-store`'s `records::row::to_json`.
fn to_json(kind: Kind, v: Sql) -> Value {
    match (kind, v) {
        (_, Sql::Null) => Value::Null,
        (Kind::Boolean, Sql::Integer(i)) => Value::Bool(i != 0),
        (Kind::Json, Sql::Text(t)) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
        (_, Sql::Integer(i)) => Value::Number(i.into()),
        (_, Sql::Real(f)) => float_json(f),
        (_, Sql::Text(t)) => Value::String(t),
        (_, Sql::Blob(_)) => Value::Null,
    }
}

/// Every record, read back from the table as the store reads it.
fn records(conn: &Connection) -> Vec<(String, Value)> {
    let mut stmt = conn.prepare("SELECT * FROM t ORDER BY id").unwrap();
    stmt.query_map([], |row| {
        let id: String = row.get(0)?;
        let mut m = Map::new();
        m.insert("id".into(), Value::String(id.clone()));
        m.insert("createdAt".into(), Value::String(row.get(1)?));
        m.insert("updatedAt".into(), Value::String(row.get(2)?));
        for (k, (name, kind, _)) in FIELDS.iter().enumerate() {
            m.insert((*name).into(), to_json(*kind, row.get::<_, Sql>(k + 3)?));
        }
        Ok((id, Value::Object(m)))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

static FILTERS: AtomicUsize = AtomicUsize::new(0);
/// Filters that selected some but not all records: the cases that tell the two apart.
static SPLITTING: AtomicUsize = AtomicUsize::new(0);

fn check_case(
    rows: &[(String, String, Vec<Sql>)],
    filters: &[String],
    vars: &RequestVars,
    offset: usize,
) -> Result<(), TestCaseError> {
    let schema = schema();
    let conn = table(rows);
    let records = records(&conn);
    for src in filters {
        let filter = Filter::new(src, &schema)
            .map_err(|e| TestCaseError::fail(format!("{src:?} did not check: {e}")))?;
        let w = filter.to_sql(&Sqlite, vars, offset);
        // The caller's own parameters come first (only bindable when the SQL has some after).
        let mut params: Vec<Sql> = Vec::new();
        if !w.params.is_empty() {
            params.extend((0..offset).map(|i| Sql::Integer(i as i64)));
        }
        params.extend(w.params.iter().map(|p| match p {
            bakend_filter::SqlValue::Integer(i) => Sql::Integer(*i),
            bakend_filter::SqlValue::Real(x) => Sql::Real(*x),
            bakend_filter::SqlValue::Text(s) => Sql::Text(s.clone()),
            bakend_filter::SqlValue::Bool(b) => Sql::Integer(i64::from(*b)),
        }));
        let query = format!("SELECT id FROM t WHERE {} ORDER BY id", w.sql);
        let mut stmt = conn
            .prepare(&query)
            .map_err(|e| TestCaseError::fail(format!("{src:?} → {query}: {e}")))?;
        let by_sql: BTreeSet<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| TestCaseError::fail(format!("{src:?} → {query}: {e}")))?;
        let by_eval: BTreeSet<String> = records
            .iter()
            .filter(|(_, rec)| filter.matches(rec, vars))
            .map(|(id, _)| id.clone())
            .collect();
        if by_sql != by_eval {
            let differing: Vec<&Value> = records
                .iter()
                .filter(|(id, _)| by_sql.contains(id) != by_eval.contains(id))
                .map(|(_, r)| r)
                .collect();
            return Err(TestCaseError::fail(format!(
                "{src:?}\nSQL {query} {:?}\nSQL selected {by_sql:?}, evaluator {by_eval:?}\nvars {vars:?}\ndiffering records {differing:#?}",
                w.params
            )));
        }
        FILTERS.fetch_add(1, Ordering::Relaxed);
        if !by_sql.is_empty() && by_sql.len() < records.len() {
            SPLITTING.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[test]
fn sql_and_evaluator_select_the_same_records() {
    // AGREEMENT_CASES=20000 for a longer run.
    let cases = std::env::var("AGREEMENT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(row(), 2..16),
        prop::collection::vec(filter_text(), 1..8),
        vars(),
        0usize..3,
    );
    let result = runner.run(&strategy, |(rows, filters, vars, offset)| {
        check_case(&rows, &filters, &vars, offset)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (all, splitting) = (
        FILTERS.load(Ordering::Relaxed),
        SPLITTING.load(Ordering::Relaxed),
    );
    // The generator is only useful if filters often split the records.
    assert!(
        splitting * 5 > all,
        "only {splitting} of {all} filters selected some but not all records"
    );
}

/// Regressions and the corners the generator reaches only by luck.
#[test]
fn known_corners_agree() {
    let rows = vec![
        (
            DATETIMES[0].to_string(),
            DATETIMES[1].to_string(),
            vec![
                Sql::Text("ΣΑΣ".into()),
                Sql::Text("a\0B".into()),
                Sql::Integer(i64::MAX),
                Sql::Real(-0.0),
                Sql::Integer(0),
                Sql::Text(DATETIMES[2].into()),
                Sql::Null,
                Sql::Text("İstanbul".into()),
                Sql::Null,
            ],
        ),
        (
            DATETIMES[3].to_string(),
            DATETIMES[3].to_string(),
            vec![
                Sql::Text("ǅ".into()),
                Sql::Null,
                Sql::Integer(9_007_199_254_740_993),
                Sql::Real(9_007_199_254_740_992.0),
                Sql::Integer(1),
                Sql::Null,
                Sql::Text("[1]".into()),
                Sql::Text("usr_1".into()),
                Sql::Text("usr_1".into()),
            ],
        ),
    ];
    let filters: Vec<String> = [
        "s ~ 'σας'",
        "s ~ 'σ%'",
        "s ~ 'ǆ'",
        "s ~ 'Ǆ' || s !~ 'ǆ'",
        "t ~ 'b'",
        "t ~ 'a'",
        "t !~ 'b'",
        "r ~ 'i̇st'",
        "r ~ 'İST'",
        "i > f",
        "i = 9007199254740992.0",
        "f = 9007199254740993",
        "f = 0 && f = -0.0",
        "i = 9223372036854775807.0",
        "i < 9223372036854775808",
        "b = true || b != true",
        "j = null || j != null",
        "d >= '2024-06-15T14:00:00.5+02:00'",
        "(s != 'x' || t != 'y') && i != 0",
        "r = @request.auth.id || fl != @request.auth.id",
        "s ~ @request.auth.email",
        "createdAt ~ '2024-01-01t%z'",
        "@request.auth.id = null && s != null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for vars in [
        RequestVars::anonymous(DATETIMES[0]),
        RequestVars {
            auth_id: Some("usr_1".into()),
            auth_role: Some("admin".into()),
            auth_email: Some("%Σ".into()),
            now: DATETIMES[4].into(),
        },
    ] {
        check_case(&rows, &filters, &vars, 2).unwrap();
    }
}
