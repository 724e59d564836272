//! `bak migrate status | apply | export`, run as the real binary on real project folders with
//! 10,000-row tables: every kind of change keeps every row (checked by a content hash of the
//! columns it must not touch), data-losing changes need `--force`, and a migration killed
//! mid-transaction leaves the database as it was.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use bakend_store::collections::schema;
use bakend_store::sql::{Backend, Conn, Value as Sql, params};
use serde_json::{Value, json};

use crate::harness::{BakProcess, write_collections};

const ROWS: i64 = 10_000;

fn bak(dir: &Path, args: &[&str]) -> Output {
    crate::harness::bak_in(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `f` on the project's database, SQLite file or PostgreSQL (`harness::with_project_db`).
fn db<T: Send + 'static>(dir: &Path, f: impl FnOnce(&Conn) -> T + Send + 'static) -> T {
    crate::harness::with_project_db(dir, f)
}

fn on_postgres() -> bool {
    crate::pg::server_url().is_some()
}

/// A hash of the given columns of every row (in id order), and the row count.
fn digest(dir: &Path, table: &str, cols: &[&str]) -> (u64, i64) {
    let list: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
    let sql = format!(
        "SELECT {} FROM \"{table}\" ORDER BY \"id\"",
        list.join(", ")
    );
    let width = cols.len();
    db(dir, move |c| {
        let mut stmt = c.prepare(&sql).unwrap();
        let mut rows = stmt.query(()).unwrap();
        let mut h = DefaultHasher::new();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            n += 1;
            for i in 0..width {
                format!("{:?}", r.get::<Sql>(i).unwrap()).hash(&mut h);
            }
        }
        (h.finish(), n)
    })
}

fn columns(dir: &Path, table: &str) -> Vec<String> {
    let table = table.to_string();
    db(dir, move |c| schema::column_names(c, &table).unwrap())
}

fn indexes(dir: &Path, table: &str) -> Vec<String> {
    let table = table.to_string();
    let mut names = db(dir, move |c| schema::index_names(c, &table).unwrap());
    names.sort();
    names
}

fn count(dir: &Path, sql: &str) -> i64 {
    let sql = sql.to_string();
    db(dir, move |c| c.query_row(&sql, (), |r| r.get(0)).unwrap())
}

/// SQL that counts the rows of `items` whose column `col` holds an integer: SQLite keeps a
/// storage class per value, PostgreSQL one type per column.
fn integers_in(col: &str) -> String {
    if on_postgres() {
        format!(
            "SELECT CASE WHEN data_type = 'bigint' THEN (SELECT COUNT({col}) FROM items) ELSE 0 END \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = 'items' AND column_name = '{col}'"
        )
    } else {
        format!("SELECT COUNT(*) FROM items WHERE typeof({col}) = 'integer'")
    }
}

/// A project whose `items` collection holds 10,000 rows (created by `bak migrate apply`, filled
/// in one transaction).
fn project(def: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bakend.json"), "{}").unwrap();
    write_collections(dir.path(), std::slice::from_ref(def));
    let out = ok(&bak(dir.path(), &["migrate", "apply"]));
    assert!(out.contains("created items"), "{out}");
    db(dir.path(), |c| {
        c.execute_batch("BEGIN").unwrap();
        let mut insert = c
            .prepare(
                "INSERT INTO items (id, created_at, updated_at, title, code, n_text, owner, score, note)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        for i in 0..ROWS {
            let n_text = if i % 1000 == 0 {
                "n/a".to_string()
            } else {
                i.to_string()
            };
            let score = if i % 10 == 0 { None } else { Some(i) };
            insert
                .execute(params![
                    format!("rec_{i:06}"),
                    format!("2026-01-01T00:00:00.{:03}Z", i % 1000),
                    format!("t{i}"),
                    format!("c{i}"),
                    n_text,
                    format!("usr_{}", i % 7),
                    score,
                    format!("note {i}"),
                ])
                .unwrap();
        }
        drop(insert);
        c.execute_batch("COMMIT").unwrap();
        if c.backend() == Backend::Postgres {
            // Plans then see the table's real size, as they would after autovacuum.
            c.execute_batch("ANALYZE items").unwrap();
        }
    });
    dir
}

/// The count a rebuilt table keeps follows later writes (its triggers came back with it).
fn count_tracks(d: &Path) {
    db(d, |c| {
        let kept = |c: &Conn| -> i64 {
            c.query_row(
                "SELECT n FROM _record_counts WHERE collection = 'items'",
                (),
                |r| r.get(0),
            )
            .unwrap()
        };
        let before = kept(c);
        c.execute(
            "INSERT INTO items (id, created_at, updated_at, title, flag) VALUES ('rec_extra', 'x', 'x', 't', 0)",
            (),
        )
        .unwrap();
        assert_eq!(kept(c), before + 1);
        c.execute("DELETE FROM items WHERE id = 'rec_extra'", ())
            .unwrap();
        assert_eq!(kept(c), before);
    })
}

fn items_v0() -> Value {
    json!({"name": "items", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "code", "type": "string", "unique": true},
        {"name": "n_text", "type": "string"},
        {"name": "owner", "type": "relation", "collection": "users"},
        {"name": "score", "type": "integer"},
        {"name": "note", "type": "text"}
    ]})
}

const SYSTEM: &[&str] = &["id", "created_at", "updated_at"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    SYSTEM.iter().chain(extra).copied().collect()
}

#[test]
fn each_kind_of_change_keeps_every_row() {
    let dir = project(&items_v0());
    let d = dir.path();
    let all = with(&["title", "code", "n_text", "owner", "score", "note"]);
    let before = digest(d, "items", &all);
    assert_eq!(before.1, ROWS);
    let kept_count = "SELECT n FROM _record_counts WHERE collection = 'items'";
    assert_eq!(
        count(d, kept_count),
        ROWS,
        "rows inserted directly are counted"
    );
    assert_eq!(
        text(&bak(d, &["migrate", "status"]).stdout),
        "items\tsynced\n"
    );
    assert!(bak(d, &["migrate", "status"]).status.success());

    // 1. A required field with a default and an optional unique field: the table is rebuilt,
    //    every row gets the default, nothing else moves.
    let mut def = items_v0();
    def["fields"].as_array_mut().unwrap().extend([
        json!({"name": "flag", "type": "boolean", "required": true, "default": false}),
        json!({"name": "slug", "type": "string", "unique": true}),
    ]);
    write_collections(d, &[def.clone()]);
    let st = bak(d, &["migrate", "status"]);
    assert_eq!(st.status.code(), Some(1), "status exits 1 on a difference");
    let st = text(&st.stdout);
    assert!(st.contains("items\tdrift"), "{st}");
    assert!(
        st.contains("add field \"flag\" (boolean, required, default false)"),
        "{st}"
    );
    let rewrite = if on_postgres() {
        "(apply alters the table in place, keeping every row)"
    } else {
        "(apply rebuilds the table, keeping every row)"
    };
    assert!(st.contains(rewrite), "{st}");
    let out = ok(&bak(d, &["migrate", "apply"]));
    assert!(out.contains("updated items"), "{out}");
    assert_eq!(digest(d, "items", &all), before);
    assert_eq!(
        count(d, kept_count),
        ROWS,
        "the rebuilt table is counted again"
    );
    count_tracks(d);
    assert_eq!(count(d, "SELECT COUNT(*) FROM items WHERE flag = 0"), ROWS);
    assert!(indexes(d, "items").contains(&"uniq_items_slug".to_string()));
    assert!(bak(d, &["migrate", "status"]).status.success());

    // 2. An optional field becomes required with a default: only the nulls change.
    let untouched = with(&["title", "code", "n_text", "owner", "note", "flag"]);
    let before = digest(d, "items", &untouched);
    def["fields"][4] = json!({"name": "score", "type": "integer", "required": true, "default": -1});
    write_collections(d, &[def.clone()]);
    ok(&bak(d, &["migrate", "apply"]));
    assert_eq!(digest(d, "items", &untouched), before);
    assert_eq!(
        count(d, "SELECT COUNT(*) FROM items WHERE score = -1"),
        ROWS / 10
    );
    assert_eq!(
        count(d, "SELECT COUNT(*) FROM items WHERE score IS NULL"),
        0
    );
    assert_eq!(
        count(
            d,
            "SELECT COUNT(*) FROM items WHERE score = CAST(substr(id, 5) AS INTEGER)"
        ),
        ROWS - ROWS / 10
    );

    // 3. A type change with a checked conversion: the 10 rows holding "n/a" block it, by id,
    //    and nothing changes; --force turns exactly those into null.
    let untouched = with(&["title", "code", "owner", "score", "note", "flag"]);
    let before_all = digest(
        d,
        "items",
        &with(&["title", "code", "n_text", "owner", "score", "note", "flag"]),
    );
    let before = digest(d, "items", &untouched);
    def["fields"][2] = json!({"name": "n_text", "type": "integer"});
    write_collections(d, &[def.clone()]);
    let st = bak(d, &["migrate", "status"]);
    let st_out = text(&st.stdout);
    assert!(
        st_out.contains("changes the type of field \"n_text\" from string to integer"),
        "{st_out}"
    );
    assert!(
        st_out.contains("needs --force: field \"n_text\": 10 record(s) cannot be converted from string to integer: rec_000000 (\"n/a\"), rec_001000 (\"n/a\")"),
        "{st_out}"
    );
    let refused = bak(d, &["migrate", "apply"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("10 record(s) cannot be converted"), "{err}");
    assert!(err.contains("rec_000000"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert_eq!(
        digest(
            d,
            "items",
            &with(&["title", "code", "n_text", "owner", "score", "note", "flag"])
        ),
        before_all
    );
    let out = ok(&bak(d, &["migrate", "apply", "--force"]));
    assert!(out.contains("forced: field \"n_text\""), "{out}");
    assert_eq!(digest(d, "items", &untouched), before);
    assert_eq!(
        count(
            d,
            "SELECT COUNT(*) FROM items WHERE n_text = CAST(substr(id, 5) AS INTEGER)"
        ),
        ROWS - 10
    );
    assert_eq!(
        count(d, &integers_in("n_text")),
        ROWS - 10,
        "the converted values are integers"
    );
    assert_eq!(
        count(d, "SELECT COUNT(*) FROM items WHERE n_text IS NULL"),
        10
    );

    // 4. An explicit rename keeps the data under the new name (no rebuild needed).
    let (note_hash, _) = digest(d, "items", &["id", "note"]);
    let untouched = with(&["title", "code", "n_text", "owner", "score", "flag"]);
    let before = digest(d, "items", &untouched);
    def["fields"][5] = json!({"name": "remark", "type": "text", "renamedFrom": "note"});
    write_collections(d, &[def.clone()]);
    let out = ok(&bak(d, &["migrate", "apply"]));
    assert!(out.contains("rename field \"note\" to \"remark\""), "{out}");
    assert_eq!(digest(d, "items", &["id", "remark"]).0, note_hash);
    assert_eq!(digest(d, "items", &untouched), before);
    assert!(
        bak(d, &["migrate", "status"]).status.success(),
        "renamedFrom is not drift"
    );

    // 5. Dropping a unique and a relation field loses their data: refused (naming rows) until
    //    --force; then both columns and their indexes are gone and every row stays.
    let keep = with(&["title", "n_text", "score", "remark", "flag"]);
    let before = digest(d, "items", &keep);
    let fields: Vec<Value> = def["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] != "code" && f["name"] != "owner")
        .cloned()
        .collect();
    def["fields"] = Value::Array(fields);
    write_collections(d, &[def.clone()]);
    let refused = bak(d, &["migrate", "apply"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains(
            "field \"code\": 10000 record(s) hold data in the removed field: rec_000000 (\"c0\")"
        ),
        "{err}"
    );
    assert!(err.contains("field \"owner\": 10000 record(s)"), "{err}");
    assert!(columns(d, "items").contains(&"code".to_string()));
    ok(&bak(d, &["migrate", "apply", "--force"]));
    assert_eq!(digest(d, "items", &keep), before);
    let mut kept_columns = columns(d, "items");
    let mut expected = [
        "id",
        "created_at",
        "updated_at",
        "title",
        "n_text",
        "score",
        "remark",
        "flag",
        "slug",
    ];
    if on_postgres() {
        // PostgreSQL converts a type through a new column (which comes last); fields are read
        // by name, so the table's column order is not visible.
        kept_columns.sort();
        expected.sort();
    }
    assert_eq!(kept_columns, expected);
    assert_eq!(
        indexes(d, "items"),
        ["idx_items_created", "uniq_items_slug"],
        "the dropped fields' indexes went with them"
    );

    // 6. Making a field unique is checked against the data: duplicates cannot be forced.
    db(d, |c| {
        c.execute(
            "UPDATE items SET remark = 'same' WHERE id IN ('rec_000001', 'rec_000002')",
            (),
        )
        .unwrap()
    });
    let before = digest(d, "items", &with(&["title", "remark"]));
    let mut strict = def.clone();
    strict["fields"][0] = json!({"name": "title", "type": "string", "required": true, "max": 3});
    strict["fields"][3] = json!({"name": "remark", "type": "text", "unique": true});
    write_collections(d, &[strict]);
    let st = text(&bak(d, &["migrate", "status"]).stdout);
    assert!(st.contains("makes field \"remark\" unique"), "{st}");
    assert!(
        st.contains("blocked: field \"remark\": 1 record(s) repeat a value another record holds: rec_000002 (same as rec_000001)"),
        "{st}"
    );
    assert!(st.contains("needs --force: field \"title\""), "{st}");
    let refused = bak(d, &["migrate", "apply", "--force"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("field \"remark\""), "{err}");
    assert!(err.contains("--force cannot help"), "{err}");
    assert_eq!(digest(d, "items", &with(&["title", "remark"])), before);
    assert!(!indexes(d, "items").contains(&"uniq_items_remark".to_string()));

    // The final state survives a server start (the stored definition matches the file).
    write_collections(d, &[def]);
    assert!(bak(d, &["migrate", "status"]).status.success());
    if !on_postgres() {
        let integrity: String = db(d, |c| {
            c.query_row("PRAGMA integrity_check", (), |r| r.get(0))
                .unwrap()
        });
        assert_eq!(integrity, "ok");
    }
}

#[tokio::test]
async fn a_killed_apply_leaves_the_database_unchanged() {
    let dir = project(&items_v0());
    let d = dir.path();
    let all = with(&["title", "code", "n_text", "owner", "score", "note"]);
    let before = digest(d, "items", &all);
    let untouched = with(&["title", "code", "n_text", "owner", "note"]);
    let before_untouched = digest(d, "items", &untouched);
    let mut def = items_v0();
    def["fields"][4] =
        json!({"name": "score", "type": "text", "required": true, "default": "none"});
    write_collections(d, &[def]);

    let mut child = crate::harness::bak_in(d)
        .args(["migrate", "apply"])
        .env("BAKEND_TEST_MIGRATE_HOLD_MS", "30000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("apply.err")).unwrap())
        .spawn()
        .unwrap();
    // Wait until the rebuild is done and the transaction is held open, then SIGKILL.
    let mut held = false;
    for _ in 0..400 {
        if std::fs::read_to_string(d.join("apply.err"))
            .unwrap_or_default()
            .contains("Holding the migration transaction open")
        {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        held,
        "{}",
        std::fs::read_to_string(d.join("apply.err")).unwrap_or_default()
    );

    let st = bak(d, &["migrate", "status"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(
        text(&st.stdout).contains("changes the type of field \"score\" from integer to text"),
        "status shows the old state: {}",
        text(&st.stdout)
    );
    assert_eq!(digest(d, "items", &all), before);
    let leftovers = if on_postgres() {
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '\\_bakend\\_rebuild%'"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '\\_bakend\\_rebuild%' ESCAPE '\\'"
    };
    assert_eq!(
        count(d, leftovers),
        0,
        "no table left over from the killed apply"
    );

    let out = ok(&bak(d, &["migrate", "apply"]));
    assert!(out.contains("updated items"), "{out}");
    assert_eq!(
        count(d, &integers_in("score")),
        0,
        "every score is a text now"
    );
    assert_eq!(count(d, "SELECT COUNT(score) FROM items"), ROWS);
    assert_eq!(
        count(d, "SELECT COUNT(*) FROM items WHERE score = 'none'"),
        ROWS / 10
    );
    assert_eq!(digest(d, "items", &untouched), before_untouched);
    assert!(bak(d, &["migrate", "status"]).status.success());
}

#[tokio::test]
async fn apply_refuses_while_a_server_runs_and_start_points_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), "{}").unwrap();
    let v1 = json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]});
    write_collections(d, &[v1]);
    let mut server = BakProcess::spawn(d, &[]);
    server.wait_ready().await;
    if on_postgres() {
        // Servers share a PostgreSQL database (docs/postgres.md); apply refuses while any runs.
        let mut second = BakProcess::spawn(d, &[]);
        second.wait_ready().await;
        second.signal(libc::SIGTERM);
        assert!(second.wait_exit().await.success());
    }

    // A change start-up does not make by itself.
    write_collections(
        d,
        &[json!({"name": "posts", "fields": [{"name": "title", "type": "integer"}]})],
    );
    let st = bak(d, &["migrate", "status"]);
    assert_eq!(st.status.code(), Some(1), "status works beside a server");
    let refused = bak(d, &["migrate", "apply"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("Cannot apply migrations"), "{err}");
    assert!(err.contains("Stop it first"), "{err}");
    assert_eq!(columns(d, "posts")[3], "title");

    if !on_postgres() {
        // A second server on the same SQLite file is refused.
        let mut second = BakProcess::spawn(d, &[]);
        let status = second.wait_exit().await;
        assert_eq!(status.code(), Some(1));
        assert!(
            second.stderr().contains("is using the database"),
            "{}",
            second.stderr()
        );
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().await.success());
    // Now start-up refuses the file, naming the command that applies it; apply does.
    let mut refused = BakProcess::spawn(d, &[]);
    assert_eq!(refused.wait_exit().await.code(), Some(1));
    assert!(
        refused.stderr().contains("bak migrate apply"),
        "{}",
        refused.stderr()
    );
    ok(&bak(d, &["migrate", "apply"]));
    let mut server = BakProcess::spawn(d, &[]);
    server.wait_ready().await;
}

#[test]
fn export_writes_stable_files_that_start_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), "{}").unwrap();
    std::fs::create_dir_all(d.join("collections")).unwrap();
    // Key order scrambled, in a file whose name is not the collection's.
    std::fs::write(
        d.join("collections/10-tags.json"),
        r#"{"permissions": {"delete": "admin", "read": "public"}, "fields": [{"type": "string", "unique": true, "name": "label"}], "name": "tags"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("collections/notes.json"),
        r#"{"name": "notes", "fields": []}"#,
    )
    .unwrap();
    ok(&bak(d, &["migrate", "apply"]));
    // notes now lives only in the database.
    std::fs::remove_file(d.join("collections/notes.json")).unwrap();
    let st = bak(d, &["migrate", "status"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(
        text(&st.stdout).contains("notes\tdb_only"),
        "{}",
        text(&st.stdout)
    );

    let out = ok(&bak(d, &["migrate", "export"]));
    assert_eq!(out, "Exported 2 collection(s): notes, tags\n");
    assert_eq!(
        std::fs::read_to_string(d.join("collections/10-tags.json")).unwrap(),
        "{\n  \"name\": \"tags\",\n  \"fields\": [\n    {\n      \"name\": \"label\",\n      \"type\": \"string\",\n      \"unique\": true\n    }\n  ],\n  \"permissions\": {\n    \"read\": \"public\",\n    \"delete\": \"admin\"\n  }\n}\n"
    );
    assert!(d.join("collections/notes.json").exists());
    assert!(
        !d.join("collections/tags.json").exists(),
        "no second definition of tags"
    );
    assert_eq!(
        text(&bak(d, &["migrate", "status"]).stdout),
        "notes\tsynced\ntags\tsynced\n"
    );
    let again = ok(&bak(d, &["migrate", "apply"]));
    assert_eq!(again, "No collection changes to apply.\n");
}

/// Indexes in a definition go through the same planner as fields: shown by `status`, made,
/// changed and dropped by `apply`, and a unique one over repeated values is refused with the
/// records that repeat them.
#[test]
fn indexes_in_definitions_are_planned_like_fields() {
    let dir = project(&items_v0());
    let d = dir.path();
    let mut def = items_v0();
    def["indexes"] = json!([{"fields": ["title"]}, {"fields": ["owner", "-createdAt"]}]);
    write_collections(d, &[def.clone()]);
    let st = bak(d, &["migrate", "status"]);
    assert_eq!(st.status.code(), Some(1));
    let st = text(&st.stdout);
    assert!(st.contains("  add index (title)\n"), "{st}");
    assert!(st.contains("  add index (owner, -createdAt)\n"), "{st}");
    assert!(!st.contains("rebuilds"), "{st}");
    ok(&bak(d, &["migrate", "apply"]));
    let ix = indexes(d, "items");
    assert!(ix.contains(&"idx_items_title".to_string()), "{ix:?}");
    assert!(
        ix.contains(&"idx_items_owner_created_at_desc".to_string()),
        "{ix:?}"
    );
    assert!(bak(d, &["migrate", "status"]).status.success());
    // Listing the same indexes in another order changes nothing.
    let mut reordered = def.clone();
    reordered["indexes"] = json!([{"fields": ["owner", "-createdAt"]}, {"fields": ["title"]}]);
    write_collections(d, &[reordered]);
    assert!(bak(d, &["migrate", "status"]).status.success());

    // Changed: the old ones go, the new one comes.
    def["indexes"] = json!([{"fields": ["title", "score"]}]);
    write_collections(d, &[def.clone()]);
    let st = text(&bak(d, &["migrate", "status"]).stdout);
    assert!(st.contains("  drop index (title)\n"), "{st}");
    assert!(st.contains("  drop index (owner, -createdAt)\n"), "{st}");
    assert!(st.contains("  add index (title, score)\n"), "{st}");
    ok(&bak(d, &["migrate", "apply"]));
    let ix = indexes(d, "items");
    assert!(ix.contains(&"idx_items_title_score".to_string()), "{ix:?}");
    assert!(!ix.contains(&"idx_items_title".to_string()), "{ix:?}");

    // Unique over values that repeat (7 owners among 10,000 rows): refused, rows named.
    let mut bad = def.clone();
    bad["indexes"] = json!([{"fields": ["title", "score"]}, {"fields": ["owner"], "unique": true}]);
    write_collections(d, &[bad]);
    let st = text(&bak(d, &["migrate", "status"]).stdout);
    assert!(
        st.contains("  blocked: index unique (owner): 9993 record(s) repeat values another record holds: rec_"),
        "{st}"
    );
    assert!(st.contains("(same as rec_"), "{st}");
    let refused = bak(d, &["migrate", "apply", "--force"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("index unique (owner): 9993 record(s)"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!indexes(d, "items").contains(&"uniq_items_owner".to_string()));

    // Unique over values that do not repeat: made.
    def["indexes"] =
        json!([{"fields": ["title", "score"]}, {"fields": ["code", "title"], "unique": true}]);
    write_collections(d, &[def]);
    ok(&bak(d, &["migrate", "apply"]));
    assert!(indexes(d, "items").contains(&"uniq_items_code_title".to_string()));
    assert_eq!(
        count(d, "SELECT n FROM _record_counts WHERE collection = 'items'"),
        ROWS
    );
}

/// Sorting a large collection by a field no index starts with logs, once, which index would
/// help; a sort an index serves does not.
#[tokio::test]
async fn an_unindexed_sort_of_a_large_collection_logs_a_hint_once() {
    let dir = project(&items_v0());
    let d = dir.path();
    let mut server = BakProcess::spawn(d, &[]);
    server.wait_ready().await;
    let http = reqwest::Client::new();
    for sort in ["n_text", "-n_text", "code", "-createdAt", "n_text"] {
        let r = http
            .get(format!("{}/api/items?sort={sort}&perPage=5", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().await.success());
    let err = server.stderr();
    let hint = "Sorting \"items\" by \"n_text\" sorts all 10000 records on every request; an index would help: add {\"fields\": [\"n_text\"]} to \"indexes\" in its definition (collections/items.json)";
    assert_eq!(err.matches(hint).count(), 1, "{err}");
    assert!(!err.contains("by \"code\""), "{err}");
    assert!(!err.contains("by \"createdAt\""), "{err}");
}
