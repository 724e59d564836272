//! Checking, SQL output and evaluation of whole filters (the parser's own tests are in
//! `parse.rs`, the agreement of the two back-ends on both stores in
//! `crates/bakend-store/tests/filter_agreement.rs`).

use std::sync::Arc;

use bakend_core::access::{AuthContext, Caller, Role};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::*;

fn schema() -> Schema {
    Schema::new()
        .with_field("title", Kind::String)
        .with_field("body", Kind::Text)
        .with_field("views", Kind::Integer)
        .with_field("score", Kind::Float)
        .with_field("done", Kind::Boolean)
        .with_field("due", Kind::Datetime)
        .with_field("meta", Kind::Json)
        .with_field("owner", Kind::Relation)
        .with_field("avatar", Kind::File)
}

const NOW: &str = "2024-06-01T12:00:00.000Z";

fn anon() -> RequestVars {
    RequestVars::anonymous(NOW)
}

fn user() -> RequestVars {
    let caller = Caller {
        id: "usr_1".into(),
        email: "Ann@Example.com".into(),
        role: Role::Authenticated,
        created_at: NOW.into(),
    };
    RequestVars::new(&AuthContext::User(Arc::new(caller)), NOW)
}

fn filter(src: &str) -> Filter {
    Filter::new(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn err(src: &str) -> String {
    Filter::new(src, &schema()).unwrap_err().to_string()
}

fn sql(src: &str, vars: &RequestVars) -> (String, Vec<SqlValue>) {
    let w = filter(src).to_sql(&Sqlite, vars, 0);
    (w.sql, w.params)
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.into())
}

fn record() -> Value {
    json!({
        "id": "rec_1",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-03-01T00:00:00.000Z",
        "title": "Straße ÉCOLE",
        "body": null,
        "views": 9_007_199_254_740_993_i64,
        "score": 2.5,
        "done": true,
        "due": "2024-05-01T10:20:30.000Z",
        "meta": {"a": 1},
        "owner": "usr_1",
        "avatar": null,
    })
}

fn eval(src: &str, vars: &RequestVars) -> bool {
    filter(src).matches(&record(), vars)
}

#[test]
fn check_errors_name_the_problem_and_point_at_it() {
    for (src, msg) in [
        ("vews > 10", r#"filter: unknown field "vews" at 1"#),
        (
            "views > 1 && 2 < vews",
            r#"filter: unknown field "vews" at 18"#,
        ),
        (
            "views > 'abc'",
            r#"filter: cannot compare integer field "views" with string 'abc' at 7"#,
        ),
        (
            "title = 5",
            r#"filter: cannot compare string field "title" with number 5 at 7"#,
        ),
        (
            "1.5 = body",
            r#"filter: cannot compare number 1.5 with text field "body" at 5"#,
        ),
        (
            "done ~ true",
            r#"filter: cannot use ~ with boolean field "done" at 6"#,
        ),
        (
            "views !~ 'x'",
            r#"filter: cannot use !~ with integer field "views" at 7"#,
        ),
        ("title ~ 5", "filter: cannot use ~ with number 5 at 7"),
        (
            "done > false",
            r#"filter: cannot use > with boolean field "done" at 6"#,
        ),
        (
            "true <= done",
            "filter: cannot use <= with boolean true at 6",
        ),
        (
            "done > null",
            r#"filter: cannot use > with boolean field "done" at 6"#,
        ),
        (
            "done = 1",
            r#"filter: cannot compare boolean field "done" with number 1 at 6"#,
        ),
        (
            "meta = '{}'",
            r#"filter: json field "meta" can only be compared with null ("= null" or "!= null") at 6"#,
        ),
        (
            "meta ~ 'a'",
            r#"filter: json field "meta" can only be compared with null ("= null" or "!= null") at 6"#,
        ),
        (
            "null < meta",
            r#"filter: json field "meta" can only be compared with null ("= null" or "!= null") at 6"#,
        ),
        (
            "title ~ body",
            r#"filter: the right side of ~ must be a string or an @ value, not text field "body" at 7"#,
        ),
        (
            "due > 'yesterday'",
            r#"filter: invalid datetime "yesterday" at 7"#,
        ),
        (
            "'2024-13-01' = createdAt",
            r#"filter: invalid datetime "2024-13-01" at 1"#,
        ),
        (
            "title = @now",
            r#"filter: cannot compare string field "title" with @now at 7"#,
        ),
        (
            "createdAt = owner",
            r#"filter: cannot compare datetime field "createdAt" with relation field "owner" at 11"#,
        ),
        (
            "@request.auth.id > views",
            r#"filter: cannot compare @request.auth.id with integer field "views" at 18"#,
        ),
        (
            "'a' = true",
            "filter: cannot compare string 'a' with boolean true at 5",
        ),
        (
            "title = 'it\\'s'  && views = 'a'",
            r#"filter: cannot compare integer field "views" with string 'a' at 27"#,
        ),
    ] {
        assert_eq!(err(src), msg, "{src}");
    }
    let long = format!("views = '{}'", "x".repeat(50));
    assert_eq!(
        err(&long),
        format!(
            "filter: cannot compare integer field \"views\" with string '{}…' at 7",
            "x".repeat(40)
        )
    );
    let e = Filter::new("vews > 1", &schema()).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::UnknownField("vews".into()));
    assert_eq!(e.position(), 1);
}

#[test]
fn every_field_type_and_system_field_is_usable() {
    for src in [
        "id = 'rec_1'",
        "createdAt < updatedAt",
        "updatedAt >= '2024-01-01'",
        "title ~ 'x' && body !~ 'y' && owner = @request.auth.id && avatar != null",
        "views > score && score <= 2.5 && views != -3",
        "done = true && done != false && done = done",
        "due < @now && due > '2024-01-01 10:00' && due ~ '2024-%'",
        "meta = null || meta != null || null = meta",
        "@request.auth.role = 'admin' || @request.auth.email ~ '@example.com'",
        "'a' < 'b' && 1 < 2.5 && true = true && null = null",
    ] {
        filter(src);
    }
}

#[test]
fn comparisons_compile_to_index_friendly_sql_with_parameters() {
    assert_eq!(
        sql("title = 'x'", &anon()),
        (r#""title" = ?1"#.into(), vec![text("x")])
    );
    assert_eq!(
        sql("5 <= views", &anon()),
        (r#"?1 <= "views""#.into(), vec![SqlValue::Integer(5)])
    );
    assert_eq!(
        sql("views = 5.0 || score > -1.5", &anon()),
        (
            r#"("views" = ?1 OR "score" > ?2)"#.into(),
            vec![SqlValue::Integer(5), SqlValue::Real(-1.5)]
        )
    );
    assert_eq!(
        sql("done = true && done != false", &anon()),
        (
            r#"("done" = ?1 AND "done" <> ?2)"#.into(),
            vec![SqlValue::Integer(1), SqlValue::Integer(0)]
        )
    );
    assert_eq!(
        sql("due > '2024-01-01 10:00' && createdAt < @now", &anon()),
        (
            r#"("due" > ?1 AND "created_at" < ?2)"#.into(),
            vec![text("2024-01-01T10:00:00.000Z"), text(NOW)]
        )
    );
    assert_eq!(
        sql("title = body || views >= score", &anon()).0,
        r#"("title" = "body" OR "views" >= "score")"#
    );
    assert_eq!(
        sql(
            "id = 'a' || title = 'b' && (views = 1 || views = 2)",
            &anon()
        )
        .0,
        r#"("id" = ?1 OR ("title" = ?2 AND ("views" = ?3 OR "views" = ?4)))"#
    );
    // The caller's own parameters come first.
    let w = filter("title = 'x' && views > 1").to_sql(&Sqlite, &anon(), 3);
    assert_eq!(w.sql, r#"("title" = ?4 AND "views" > ?5)"#);
    // Columns are quoted.
    let odd = Schema::new().with_field("x", Kind::String);
    let mut odd2 = odd.clone();
    odd2.add_with_column("y", "we\"ird", Kind::String);
    let w = Filter::new("y = x", &odd2)
        .unwrap()
        .to_sql(&Sqlite, &anon(), 0);
    assert_eq!(w.sql, r#""we""ird" = "x""#);
}

#[test]
fn nulls_compile_to_is_null_or_to_constants() {
    assert_eq!(sql("title = null", &anon()).0, r#""title" IS NULL"#);
    assert_eq!(sql("null != meta", &anon()).0, r#""meta" IS NOT NULL"#);
    assert_eq!(sql("title > null", &anon()), ("0".into(), vec![]));
    assert_eq!(sql("title ~ null", &anon()), ("0".into(), vec![]));
    assert_eq!(sql("null = null", &anon()).0, "1");
    assert_eq!(sql("null != null", &anon()).0, "0");
    assert_eq!(sql("'a' = null", &anon()).0, "0");
    assert_eq!(sql("'a' != null", &anon()).0, "1");
    // `@` values are known when compiling: a null one decides its comparison.
    assert_eq!(sql("owner = @request.auth.id", &anon()).0, "0");
    assert_eq!(sql("owner != @request.auth.id", &anon()).0, "0");
    assert_eq!(sql("title ~ @request.auth.email", &anon()).0, "0");
    assert_eq!(
        sql("owner = @request.auth.id", &user()),
        (r#""owner" = ?1"#.into(), vec![text("usr_1")])
    );
    assert_eq!(sql("@request.auth.id = null", &anon()).0, "1");
    assert_eq!(sql("@request.auth.id = null", &user()).0, "0");
    assert_eq!(
        sql(
            "@request.auth.role = 'admin' || owner = @request.auth.id",
            &user()
        ),
        (r#"(0 OR "owner" = ?1)"#.into(), vec![text("usr_1")])
    );
}

#[test]
fn like_compiles_to_bak_lower_with_an_escaped_lowercase_pattern() {
    assert_eq!(
        sql("title ~ 'Ab_C'", &anon()),
        (
            r#"bak_lower("title") LIKE ?1 ESCAPE '\'"#.into(),
            vec![text(r"%ab\_c%")]
        )
    );
    assert_eq!(
        sql(r"body !~ '50%\x'", &anon()),
        (
            r#"bak_lower("body") NOT LIKE ?1 ESCAPE '\'"#.into(),
            vec![text(r"50%\\x")]
        )
    );
    assert_eq!(
        sql("title ~ @request.auth.email", &user()).1,
        vec![text("%ann@example.com%")]
    );
    assert_eq!(
        sql("createdAt ~ '2024-01-%T%'", &anon()).1,
        vec![text("2024-01-%t%")]
    );
}

#[test]
fn evaluation_semantics() {
    let (a, u) = (anon(), user());
    // Text: exact, byte order.
    assert!(eval("title = 'Straße ÉCOLE'", &a));
    assert!(!eval("title = 'straße école'", &a));
    assert!(eval("title > 'Straße'", &a) && eval("title < 'Z'", &a));
    assert!(eval("'B' < 'a'", &a), "uppercase sorts first, as BINARY");
    // `~`: lowercased both sides, contains, or anchored with `%`.
    assert!(!eval("title ~ 'STRASSE'", &a) && eval("title ~ 'straße'", &a));
    assert!(eval("title ~ 'école'", &a) && eval("title ~ 'é'", &a));
    assert!(eval("title ~ 'str%'", &a) && !eval("title ~ 'ÉCOLE%'", &a));
    assert!(eval("title !~ 'xyz'", &a) && !eval("title !~ 'ole'", &a));
    // Numbers: integers and floats exactly, big integers included.
    assert!(eval("views = 9007199254740993", &a));
    assert!(eval("views > 9007199254740992.0", &a));
    assert!(eval("views != 9007199254740992.0", &a));
    assert!(eval("score = 2.5 && score < views && score > 2", &a));
    // Booleans.
    assert!(eval("done = true && done != false", &a));
    // Datetimes: literals normalised first.
    assert!(eval("due = '2024-05-01T12:20:30+02:00'", &a));
    assert!(eval("due > '2024-05-01' && due < @now", &a));
    assert!(eval("createdAt < updatedAt", &a));
    // Nulls: only `= null`/`!= null` are true on a null; every other comparison is false.
    assert!(eval("body = null && meta != null && avatar = null", &a));
    assert!(!eval("body != 'x'", &a));
    assert!(!eval("body !~ 'x'", &a));
    assert!(!eval("body < 'x'", &a) && !eval("body >= 'x'", &a));
    assert!(eval("body != 'x' || title != 'x'", &a));
    // `@` values.
    assert!(eval("owner = @request.auth.id", &u));
    assert!(!eval("owner = @request.auth.id", &a));
    assert!(!eval("owner != @request.auth.id", &a));
    assert!(eval("@request.auth.id = null", &a));
    assert!(eval("@request.auth.email ~ '@EXAMPLE.com'", &u));
    assert!(eval("@request.auth.role = 'authenticated'", &u));
    assert!(eval("@now = '2024-06-01 12:00'", &a));
}

#[test]
fn missing_keys_are_null_and_wrong_types_never_match() {
    let f = filter("title = null");
    assert!(f.matches(&json!({"id": "x"}), &anon()));
    assert!(f.matches(&json!(null), &anon()));
    let odd = json!({"title": 5, "views": "5", "done": 1});
    for src in [
        "title = '5'",
        "title != '5'",
        "title ~ '5'",
        "title !~ '5'",
        "views = 5",
        "views != 5",
        "done = true",
        "done != true",
    ] {
        assert!(!filter(src).matches(&odd, &anon()), "{src}");
    }
    assert!(filter("title != null").matches(&odd, &anon()));
}

#[test]
fn equalities_are_the_top_level_field_equals_literal_conjuncts() {
    let eq = |src: &str| -> Vec<(String, Literal)> {
        filter(src)
            .equalities()
            .into_iter()
            .map(|(f, l)| (f.to_string(), l.clone()))
            .collect()
    };
    let t = |s: &str| Literal::Text(s.into());
    assert_eq!(eq("owner = 'p1'"), vec![("owner".into(), t("p1"))]);
    assert_eq!(
        eq(
            "'p1' = owner && views = 5.0 && score = 2.5 && (done = true || id = 'x') && done = false"
        ),
        vec![
            ("owner".into(), t("p1")),
            ("views".into(), Literal::Integer(5)),
            ("score".into(), Literal::Float(2.5)),
            ("done".into(), Literal::Bool(false)),
        ]
    );
    assert_eq!(
        eq("(due = '2024-01-01' && title = 'a') && body = 'b'"),
        vec![
            ("due".into(), t("2024-01-01T00:00:00.000Z")),
            ("title".into(), t("a")),
            ("body".into(), t("b")),
        ]
    );
    assert!(eq("owner = 'p1' || title = 'a'").is_empty());
    assert!(eq("owner = null && owner = @request.auth.id && title != 'a' && 'a' = 'a'").is_empty());
    assert!(eq("title ~ 'a' && views > 1 && title = body").is_empty());
}

#[test]
fn literals_from_json_match_the_filters_literals() {
    use std::collections::HashSet;
    let set: HashSet<Literal> = [
        Literal::Integer(5),
        Literal::Float(2.5),
        Literal::Text("a".into()),
        Literal::Bool(true),
    ]
    .into_iter()
    .collect();
    for v in [json!(5), json!(5.0), json!(2.5), json!("a"), json!(true)] {
        let l = Literal::from_json(&v).unwrap();
        assert!(set.contains(&l), "{v}");
    }
    assert_eq!(Literal::from_json(&json!(-0.0)), Some(Literal::Integer(0)));
    assert_eq!(Literal::from_json(&json!(1e20)), Some(Literal::Float(1e20)));
    for v in [json!(null), json!([1]), json!({"a": 1})] {
        assert_eq!(Literal::from_json(&v), None);
    }
}

#[test]
fn fields_lists_what_the_filter_reads() {
    assert_eq!(
        filter("title = 'a' && (views > 1 || title ~ 'x')").fields(),
        vec!["title", "views"]
    );
    assert_eq!(
        filter("createdAt < @now || meta = null || 1 = 1 || score = views").fields(),
        vec!["createdAt", "meta", "score", "views"]
    );
}

#[test]
fn sqlite_runs_the_compiled_sql_and_uses_indexes() {
    let conn = Connection::open_in_memory().unwrap();
    register_sqlite_functions(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id TEXT PRIMARY KEY, title TEXT, views INTEGER, created_at TEXT);
         CREATE INDEX t_views ON t(views);
         CREATE INDEX t_title ON t(title);
         INSERT INTO t VALUES ('a', 'ÉCOLE', 1, '2024-01-01T00:00:00.000Z'),
                              ('b', 'Straße', 2, '2024-02-01T00:00:00.000Z'),
                              ('c', NULL, NULL, '2024-03-01T00:00:00.000Z');",
    )
    .unwrap();
    let s = Schema::new()
        .with_field("title", Kind::String)
        .with_field("views", Kind::Integer);
    let ids = |src: &str| -> Vec<String> {
        let w = Filter::new(src, &s).unwrap().to_sql(&Sqlite, &anon(), 0);
        let mut stmt = conn
            .prepare(&format!("SELECT id FROM t WHERE {} ORDER BY id", w.sql))
            .unwrap();
        stmt.query_map(rusqlite::params_from_iter(&w.params), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(ids("title ~ 'école'"), ["a"]);
    assert_eq!(ids("title ~ 'STRASSE'"), Vec::<String>::new());
    assert_eq!(ids("title ~ 'ß'"), ["b"]);
    assert_eq!(ids("title !~ 'ß'"), ["a"]);
    assert_eq!(ids("title != 'x'"), ["a", "b"]);
    assert_eq!(ids("title = null || views > 1"), ["b", "c"]);
    assert_eq!(ids("createdAt > '2024-01-15'"), ["b", "c"]);

    // bak_lower: NULL for anything but text; deterministic, so it may be indexed.
    let lower: Vec<Option<String>> = conn
        .prepare("SELECT bak_lower(x) FROM (SELECT 'ǄA' AS x UNION ALL SELECT NULL UNION ALL SELECT 5 UNION ALL SELECT X'41')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lower, [Some("ǆa".to_string()), None, None, None]);
    conn.execute_batch("CREATE INDEX t_lower ON t(bak_lower(title))")
        .unwrap();

    let plan = |src: &str| -> String {
        let w = Filter::new(src, &s).unwrap().to_sql(&Sqlite, &anon(), 0);
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM t WHERE {}",
                w.sql
            ))
            .unwrap();
        let rows: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(&w.params), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.join("; ")
    };
    assert!(
        plan("views = 2").contains("USING COVERING INDEX t_views")
            || plan("views = 2").contains("USING INDEX t_views"),
        "{}",
        plan("views = 2")
    );
    assert!(plan("views > 1 && views < 5").contains("t_views"));
    assert!(plan("title = 'a' || views = 1").contains("t_title"));
}

#[test]
fn a_filter_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Filter>();
    shared::<Schema>();
    shared::<FilterError>();
}

/// The fuzz target's invariants (`fuzz/fuzz_targets/filter_expression.rs`) on inputs built from
/// the language's own tokens and stray characters, so they run with every `cargo test`.
mod any_input {
    use proptest::prelude::*;

    use super::*;

    const TOKENS: &[&str] = &[
        "title",
        "body",
        "views",
        "score",
        "done",
        "due",
        "meta",
        "owner",
        "avatar",
        "id",
        "createdAt",
        "updatedAt",
        "vews",
        "true",
        "false",
        "null",
        "=",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "~",
        "!~",
        "&&",
        "||",
        "(",
        ")",
        "'a'",
        "\"É\"",
        "'2024-01-01'",
        "'x",
        "\\",
        "'%'",
        "1",
        "-2.5",
        "9223372036854775808",
        "1.2.3",
        "@now",
        "@request.auth.id",
        "@request.auth.email",
        "@request.auth.role",
        "@request",
        "!",
        "&",
        "|",
        "ß",
        " ",
    ];

    fn input() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(TOKENS).prop_map(String::from),
                1 => any::<char>().prop_map(String::from),
            ],
            0..24,
        )
        .prop_map(|parts| parts.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_and_errors_point_inside(src in input()) {
            let end = src.chars().count() + 1;
            match parse(&src) {
                Err(e) => prop_assert!((1..=end).contains(&e.position()), "{src:?}: {e}"),
                Ok(expr) => {
                    let printed = expr.to_string();
                    if printed.len() <= MAX_LENGTH {
                        prop_assert_eq!(parse(&printed).unwrap().to_string(), printed.clone());
                    }
                    match Filter::check(&expr, &schema()) {
                        Err(e) => prop_assert!((1..=end).contains(&e.position()), "{src:?}: {e}"),
                        Ok(f) => {
                            for vars in [anon(), user()] {
                                let w = f.to_sql(&Sqlite, &vars, 1);
                                prop_assert_eq!(w.sql.matches('?').count(), w.params.len());
                                f.matches(&record(), &vars);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pg(src: &str, vars: &RequestVars) -> (String, Vec<SqlValue>) {
    let w = filter(src).to_sql(&Postgres, vars, 0);
    (w.sql, w.params)
}

#[test]
fn postgres_output() {
    let a = anon();
    // SQLite's shape, with TRUE/FALSE, binary text comparisons and booleans as 0/1.
    assert_eq!(
        pg("title = 'x' && views > 1 && done = true", &a),
        (
            r#"("title" = ?1 COLLATE "C" AND "views" > ?2 AND "done" = ?3)"#.into(),
            vec![text("x"), SqlValue::Integer(1), SqlValue::Integer(1)]
        )
    );
    assert_eq!(
        pg(
            "title ~ 'A_b' || @request.auth.id != null || due < @now",
            &a
        ),
        (
            r#"(bak_lower("title") LIKE ?1 ESCAPE '\' OR FALSE OR "due" < ?2 COLLATE "C")"#.into(),
            vec![text(r"%a\_b%"), text(NOW)]
        )
    );
    assert_eq!(pg("true = true", &a).0, "TRUE");
    assert_eq!(pg("title = body", &a).0, r#""title" = "body" COLLATE "C""#);
    assert_eq!(
        filter("title < 'x'").to_sql(&Postgres, &a, 2).sql,
        r#""title" < ?3 COLLATE "C""#,
        "?N placeholders after the caller's, as on SQLite"
    );
}

#[test]
fn postgres_compares_integers_with_floats_exactly() {
    let a = anon();
    let int = SqlValue::Integer;
    let real = SqlValue::Real;
    // Same types: as written.
    assert_eq!(
        pg("views > 2", &a),
        (r#""views" > ?1"#.into(), vec![int(2)])
    );
    assert_eq!(
        pg("score > 2.5", &a),
        (r#""score" > ?1"#.into(), vec![real(2.5)])
    );
    // A float literal next to an integer column becomes an integer comparison.
    assert_eq!(pg("views = 2.5", &a).0, "FALSE");
    assert_eq!(pg("views != 2.5", &a).0, r#""views" IS NOT NULL"#);
    assert_eq!(
        pg("views < 2.5", &a),
        (r#""views" <= ?1"#.into(), vec![int(2)])
    );
    assert_eq!(
        pg("-2.5 < views", &a),
        (r#""views" > ?1"#.into(), vec![int(-3)])
    );
    assert_eq!(
        pg("views < 10000000000000000000000", &a).0,
        r#""views" IS NOT NULL"#
    );
    assert_eq!(pg("views >= 10000000000000000000000", &a).0, "FALSE");
    // An integer literal next to a float column: a float comparison, exact or moved to the
    // neighbouring floats.
    assert_eq!(
        pg("score = 5", &a),
        (r#""score" = ?1"#.into(), vec![real(5.0)])
    );
    assert_eq!(pg("score = 9007199254740993", &a).0, "FALSE");
    assert_eq!(
        pg("score < 9007199254740993", &a),
        (
            r#""score" <= ?1"#.into(),
            vec![real(9_007_199_254_740_992.0)]
        )
    );
    assert_eq!(
        pg("9007199254740993 <= score", &a),
        (
            r#""score" >= ?1"#.into(),
            vec![real(9_007_199_254_740_994.0)]
        )
    );
    // Two columns: a CASE that never rounds.
    let case = |op: &str| {
        format!(
            r#"CASE WHEN CAST("views" AS DOUBLE PRECISION) <> "score" THEN CAST("views" AS DOUBLE PRECISION) {op} "score" WHEN CAST("views" AS DOUBLE PRECISION) = "score" AND "score" < CAST(9223372036854775808 AS DOUBLE PRECISION) THEN "views" {op} CAST("score" AS BIGINT) ELSE CAST("views" AS NUMERIC) {op} CAST("score" AS NUMERIC) END"#
        )
    };
    assert_eq!(pg("views > score", &a), (case(">"), vec![]));
    assert_eq!(pg("score > views", &a), (case("<"), vec![]));
    assert_eq!(pg("views = views", &a).0, r#""views" = "views""#);
}

#[test]
fn postgres_never_binds_a_nul() {
    let a = anon();
    assert_eq!(pg("title = 'a\0b'", &a).0, "FALSE");
    assert_eq!(pg("title != 'a\0b'", &a).0, r#""title" IS NOT NULL"#);
    assert_eq!(
        pg("title < 'a\0b'", &a),
        (r#""title" <= ?1 COLLATE "C""#.into(), vec![text("a")])
    );
    assert_eq!(
        pg("'a\0b' <= title", &a),
        (r#""title" > ?1 COLLATE "C""#.into(), vec![text("a")])
    );
    let vars = RequestVars {
        auth_id: Some("x\0".into()),
        auth_role: Some("admin".into()),
        auth_email: Some("\0".into()),
        now: NOW.into(),
    };
    assert_eq!(
        pg(
            "owner >= @request.auth.id || title ~ @request.auth.email",
            &vars
        ),
        (
            r#"("owner" > ?1 COLLATE "C" OR bak_lower("title") LIKE ?2 ESCAPE '\')"#.into(),
            vec![text("x"), text("%%")]
        )
    );
    // SQLite keeps them: its text holds NUL.
    assert_eq!(sql("title = 'a\0b'", &a).1, vec![text("a\0b")]);
}
