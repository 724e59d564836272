//! The filter's two back-ends agree, on both stores: for random records in a real table (the
//! column types each store gives each field type) and random well-typed filters, the ids
//! `SELECT id FROM t WHERE <compiled>` returns are exactly the ids whose record — read back from
//! the table into the JSON wire shape, as the store does — the evaluator accepts. The SQL runs
//! through `sql::Conn`, as the store's does: on SQLite with `bak_lower` registered, on
//! PostgreSQL (the server the store's tests use: `BAKEND_TEST_POSTGRES`, or this machine's when
//! it answers; `off` skips) in a schema of its own with `bak_lower` installed by
//! `postgres_functions_sql`, placeholders translated and values bound as `Conn` binds them. One
//! generator, the same cases for both.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use bakend_core::config::PostgresSettings;
use bakend_filter::{
    Dialect, Filter, Kind, Postgres, RequestVars, Schema, SqlValue, Sqlite, postgres_functions_sql,
    register_sqlite_functions,
};
use bakend_store::sql::{Conn, PgConn, Value as Sql, params_from_iter, quote_ident};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Number, Value};

/// The fields, their types, and the column types the store gives them: SQLite's
/// (`FieldType::sql_type`) and PostgreSQL's (SQLite's storage classes, text in binary order).
const FIELDS: &[(&str, Kind, &str, &str)] = &[
    ("s", Kind::String, "TEXT", PG_TEXT),
    ("t", Kind::Text, "TEXT", PG_TEXT),
    ("i", Kind::Integer, "INTEGER", "BIGINT"),
    ("f", Kind::Float, "REAL", "DOUBLE PRECISION"),
    ("b", Kind::Boolean, "INTEGER", "BIGINT"),
    ("d", Kind::Datetime, "TEXT", PG_TEXT),
    ("j", Kind::Json, "TEXT", PG_TEXT),
    ("r", Kind::Relation, "TEXT", PG_TEXT),
    ("fl", Kind::File, "TEXT", PG_TEXT),
];

const PG_TEXT: &str = "TEXT COLLATE \"C\"";

fn schema() -> Schema {
    let mut s = Schema::new();
    for (name, kind, _, _) in FIELDS {
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
// The stores, the table and the wire shape

/// A connection with the table `t`, and the dialect to compile for.
struct Store {
    conn: Conn,
    dialect: &'static dyn Dialect,
    /// PostgreSQL: the test's own schema, dropped with the store.
    _schema: Option<PgSchema>,
}

/// A schema of its own on the test server, dropped afterwards (as `sql::testing` does inside
/// the crate).
struct PgSchema {
    admin: Conn,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = self.admin.execute_batch(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&self.name)
        ));
    }
}

/// The server of the store's PostgreSQL tests (`sql::testing::postgres`): `BAKEND_TEST_POSTGRES`,
/// or this machine's when it answers; `off` skips.
const ENV: &str = "BAKEND_TEST_POSTGRES";
const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=2";

impl Store {
    fn sqlite() -> Store {
        let conn = Conn::open_in_memory().unwrap();
        register_sqlite_functions(conn.sqlite().unwrap()).unwrap();
        Store::with_table(conn, &Sqlite, None)
    }

    /// `None` (and a line saying why) without a server.
    fn postgres(what: &str) -> Option<Store> {
        let (url, explicit) = match std::env::var(ENV) {
            Ok(v) if v == "off" => {
                eprintln!("{what}: skipped on PostgreSQL ({ENV}=off)");
                return None;
            }
            Ok(v) if !v.is_empty() => (v, true),
            _ => (LOCAL.to_string(), false),
        };
        let mut cfg = PostgresSettings {
            url,
            options: Default::default(),
        };
        let admin = match PgConn::connect(&cfg) {
            Ok(c) => Conn::from(c),
            // A server named on purpose must be there; the local default may not be.
            Err(e) if !explicit => {
                eprintln!("{what}: skipped on PostgreSQL (none reachable: {e}; set {ENV})");
                return None;
            }
            Err(e) => panic!("{ENV}: {e}"),
        };
        let name = bakend_core::ids::new_id("t_filter_")
            .to_lowercase()
            .replace('-', "_");
        admin
            .execute_batch(&format!("CREATE SCHEMA {}", quote_ident(&name)))
            .unwrap();
        cfg.options.schema = name.clone();
        let schema = PgSchema { admin, name };
        let conn = Conn::from(PgConn::connect(&cfg).unwrap());
        conn.execute_batch(postgres_functions_sql()).unwrap();
        Some(Store::with_table(conn, &Postgres, Some(schema)))
    }

    fn with_table(conn: Conn, dialect: &'static dyn Dialect, schema: Option<PgSchema>) -> Store {
        let pg = schema.is_some();
        let text = if pg { PG_TEXT } else { "TEXT" };
        let cols: Vec<String> = FIELDS
            .iter()
            .map(|(n, _, lite, post)| format!("\"{n}\" {}", if pg { post } else { lite }))
            .collect();
        conn.execute_batch(&format!(
            "CREATE TABLE t (id {text} PRIMARY KEY NOT NULL, created_at {text} NOT NULL, \
             updated_at {text} NOT NULL, {})",
            cols.join(", ")
        ))
        .unwrap();
        Store {
            conn,
            dialect,
            _schema: schema,
        }
    }

    fn is_postgres(&self) -> bool {
        self._schema.is_some()
    }

    /// Replaces the table's rows.
    fn fill(&self, rows: &[(String, String, Vec<Sql>)]) {
        self.conn.execute("DELETE FROM t", ()).unwrap();
        let placeholders: Vec<String> = (1..=FIELDS.len() + 3).map(|i| format!("?{i}")).collect();
        let insert = format!("INSERT INTO t VALUES ({})", placeholders.join(", "));
        for (n, (created, updated, values)) in rows.iter().enumerate() {
            let mut all = vec![
                Sql::Text(format!("rec_{n}")),
                Sql::Text(created.clone()),
                Sql::Text(updated.clone()),
            ];
            all.extend(values.iter().map(|v| match v {
                // PostgreSQL's text cannot hold NUL: what such a text becomes there is the
                // store's decision; here it ends at the NUL. The evaluator reads back what was
                // stored either way.
                Sql::Text(t) if self.is_postgres() => {
                    Sql::Text(t.split('\0').next().unwrap_or("").to_string())
                }
                v => v.clone(),
            }));
            self.conn
                .execute(&insert, params_from_iter(all.iter()))
                .unwrap();
        }
    }

    /// Every record, read back from the table as the store reads it.
    fn records(&self) -> Vec<(String, Value)> {
        let mut stmt = self.conn.prepare("SELECT * FROM t ORDER BY id").unwrap();
        stmt.query_map((), |row| {
            let id: String = row.get(0)?;
            let mut m = Map::new();
            m.insert("id".into(), Value::String(id.clone()));
            m.insert("createdAt".into(), Value::String(row.get(1)?));
            m.insert("updatedAt".into(), Value::String(row.get(2)?));
            for (k, (name, kind, _, _)) in FIELDS.iter().enumerate() {
                m.insert((*name).into(), to_json(*kind, row.get::<Sql>(k + 3)?));
            }
            Ok((id, Value::Object(m)))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
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

/// Filters checked, and those that selected some but not all records: the cases that tell
/// the two back-ends apart.
#[derive(Default)]
struct Counts {
    filters: AtomicUsize,
    splitting: AtomicUsize,
}

fn check_case(
    store: &Store,
    rows: &[(String, String, Vec<Sql>)],
    filters: &[String],
    vars: &RequestVars,
    offset: usize,
    counts: &Counts,
) -> Result<(), TestCaseError> {
    let schema = schema();
    store.fill(rows);
    let records = store.records();
    for src in filters {
        let filter = Filter::new(src, &schema)
            .map_err(|e| TestCaseError::fail(format!("{src:?} did not check: {e}")))?;
        let w = filter.to_sql(store.dialect, vars, offset);
        // The caller's own parameters come first, used as a caller uses them (PostgreSQL must
        // be able to type every placeholder).
        let mut params: Vec<Sql> = (0..offset)
            .map(|i| Sql::Text(format!("caller_{i}")))
            .collect();
        params.extend(w.params.iter().map(|p| match p {
            SqlValue::Integer(i) => Sql::Integer(*i),
            SqlValue::Real(x) => Sql::Real(*x),
            SqlValue::Text(s) => Sql::Text(s.clone()),
            SqlValue::Bool(b) => Sql::Integer(i64::from(*b)),
        }));
        let callers: String = (1..=offset).map(|i| format!("id <> ?{i} AND ")).collect();
        let query = format!("SELECT id FROM t WHERE {callers}{} ORDER BY id", w.sql);
        let by_sql: BTreeSet<String> = store
            .conn
            .prepare(&query)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(params.iter()), |r| r.get(0))?
                    .collect()
            })
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
        counts.filters.fetch_add(1, Ordering::Relaxed);
        if !by_sql.is_empty() && by_sql.len() < records.len() {
            counts.splitting.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The property: `AGREEMENT_CASES` random cases (512 by default; 20000 for a longer run).
fn random_cases_agree(store: &Store) {
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
    let counts = Counts::default();
    let result = runner.run(&strategy, |(rows, filters, vars, offset)| {
        check_case(store, &rows, &filters, &vars, offset, &counts)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (all, splitting) = (
        counts.filters.load(Ordering::Relaxed),
        counts.splitting.load(Ordering::Relaxed),
    );
    // The generator is only useful if filters often split the records.
    assert!(
        splitting * 5 > all,
        "only {splitting} of {all} filters selected some but not all records"
    );
}

#[test]
fn sql_and_evaluator_select_the_same_records_on_sqlite() {
    random_cases_agree(&Store::sqlite());
}

#[test]
fn sql_and_evaluator_select_the_same_records_on_postgres() {
    if let Some(store) = Store::postgres("sql_and_evaluator_select_the_same_records_on_postgres") {
        random_cases_agree(&store);
    }
}

/// Regressions and the corners the generator reaches only by luck.
fn known_corners_agree(store: &Store) {
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
        check_case(store, &rows, &filters, &vars, 2, &Counts::default()).unwrap();
    }
}

#[test]
fn known_corners_agree_on_sqlite() {
    known_corners_agree(&Store::sqlite());
}

#[test]
fn known_corners_agree_on_postgres() {
    if let Some(store) = Store::postgres("known_corners_agree_on_postgres") {
        known_corners_agree(&store);
    }
}

/// PostgreSQL's `bak_lower`, as `postgres_functions_sql` installs it on this server, lowercases
/// every character as Rust does: alone, and in each position that decides whether a `Σ` is
/// final (after a character, before one, and before one that is followed by a letter).
#[test]
fn bak_lower_is_rusts_lowercasing_on_every_character_on_postgres() {
    let Some(store) =
        Store::postgres("bak_lower_is_rusts_lowercasing_on_every_character_on_postgres")
    else {
        return;
    };
    let lower = |text: &str| -> String {
        store
            .conn
            .query_row("SELECT bak_lower(?1)", [text], |r| r.get(0))
            .unwrap()
    };
    // Spaces (neither cased nor case-ignorable) keep the contexts apart. PostgreSQL's text
    // cannot hold NUL.
    let context = |c: char| format!("{c} A{c}Σ {c}Σ AΣ{c} AΣ{c}B ");
    let chars: Vec<char> = (char::MIN..=char::MAX).filter(|&c| c != '\0').collect();
    for chunk in chars.chunks(4096) {
        let text: String = chunk.iter().map(|&c| context(c)).collect();
        if lower(&text) == text.to_lowercase() {
            continue;
        }
        let wrong: Vec<String> = chunk
            .iter()
            .map(|&c| context(c))
            .filter(|t| lower(t) != t.to_lowercase())
            .take(10)
            .map(|t| format!("{t:?}: {:?}, Rust {:?}", lower(&t), t.to_lowercase()))
            .collect();
        panic!("bak_lower differs from Rust:\n{}", wrong.join("\n"));
    }
}
