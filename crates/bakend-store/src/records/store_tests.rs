//! The record store on both stores: the same requests give the same answers on SQLite and
//! PostgreSQL (a transcript of each, compared), and what concurrency can break — counts,
//! cursors, unique values — holds on each, on PostgreSQL with two servers writing at once.
//! Without `BAKEND_TEST_POSTGRES` only the SQLite half runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::store::{ListQuery, Precondition, RecordStore};
use super::validate::FileAccess;
use crate::collections::definition::{self, Permission};
use crate::collections::registry::{Collection, Registry};
use crate::collections::sync::{self, FileDefinition};
use crate::collections::testing::{databases, runtime};
use crate::db::Database;
use crate::error::StoreError;
use crate::sql::Backend;

fn posts() -> Value {
    json!({"name": "posts", "fields": [
        {"name": "title", "type": "string"},
        {"name": "slug", "type": "string", "unique": true},
        {"name": "views", "type": "integer"},
        {"name": "score", "type": "float"},
        {"name": "done", "type": "boolean"},
        {"name": "when", "type": "datetime"},
        {"name": "meta", "type": "json"},
        {"name": "user_id", "type": "string"}
    ], "indexes": [{"fields": ["title"]}]})
}

/// The collection `def` on `db`, through start-up's sync, and a store over it.
async fn store_on(db: &Arc<Database>, def: Value) -> (RecordStore, Arc<Collection>) {
    let registry = Arc::new(Registry::default());
    let parsed = definition::parse(&def).unwrap();
    let name = parsed.def.name.clone();
    let files = vec![FileDefinition {
        path: format!("{name}.json").into(),
        parsed,
    }];
    sync::apply(db, &registry, files).await.unwrap();
    let store = RecordStore::new(db.clone(), registry);
    let c = store.collection(&name).unwrap();
    (store, c)
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Record ids, named in the order they were created (`r0`, `r1`, …), so two stores'
/// transcripts compare.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    fn add(&mut self, record: &Value) -> String {
        let id = record["id"].as_str().unwrap().to_string();
        let name = format!("r{}", self.0.len());
        self.0.insert(id.clone(), name);
        id
    }

    /// A record without its generated values: its name, then its fields.
    fn record(&self, r: &Value) -> String {
        let mut r = r.as_object().cloned().unwrap();
        let id = r.remove("id").unwrap();
        assert!(r.remove("createdAt").unwrap().is_string());
        assert!(r.remove("updatedAt").unwrap().is_string());
        format!("{} {}", self.0[id.as_str().unwrap()], Value::Object(r))
    }

    fn page(&self, bytes: Vec<u8>) -> String {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let items: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| self.0[r["id"].as_str().unwrap()].as_str())
            .collect();
        format!(
            "[{}] page {} of {} ({} items), next {}",
            items.join(" "),
            v["page"],
            v["totalPages"],
            v["totalItems"],
            if v["next"].is_null() { "none" } else { "some" }
        )
    }
}

fn error(e: StoreError) -> String {
    match e {
        StoreError::Validation(errors) => format!("invalid: {}", serde_json::json!(errors)),
        other => other.to_string(),
    }
}

/// Every operation of the store, written down as a client would see it.
async fn transcript(db: &Arc<Database>) -> Vec<String> {
    let (store, c) = store_on(db, posts()).await;
    let mut names = Names::default();
    let mut out = Vec::new();
    let bodies = [
        json!({"title": "b", "slug": "s-b", "views": 3, "score": 1.5, "done": true, "when": "2026-01-02T03:04:05Z", "meta": {"k": [1, 2.5, "x"]}, "user_id": "u1"}),
        json!({"title": "a", "slug": "s-a", "views": -7, "score": 5.0, "done": false, "user_id": "u2"}),
        json!({"views": 9_007_199_254_740_993_i64, "score": -0.1, "meta": [], "user_id": "u1"}),
        json!({"title": "C", "slug": "s-c", "score": 1e300, "when": "2026-01-02T03:04:05.678+02:00", "user_id": "u1"}),
        json!({"title": "é 😀 \"quoted\" \\ \n", "slug": "s-é", "views": 0, "meta": {"é": null}}),
        json!({"title": "a", "slug": "s-a2", "views": 3, "score": 0.30000000000000004, "done": true, "user_id": "u2"}),
        json!({"user_id": "u1"}),
    ];
    let mut ids = Vec::new();
    for b in bodies {
        let r = store
            .create(c.clone(), body(b), FileAccess::Any, Precondition::None)
            .await
            .unwrap();
        ids.push(names.add(&r));
        out.push(format!("created {}", names.record(&r)));
    }
    for id in &ids {
        let (bytes, owner) = store.get_json(c.clone(), id.clone()).await.unwrap();
        let as_value: Value = serde_json::from_slice(&bytes).unwrap();
        out.push(format!(
            "got {} owned by {owner:?}",
            names.record(&as_value)
        ));
    }

    let list = |q: ListQuery| {
        let (store, c) = (store.clone(), c.clone());
        async move { store.list(c, q).await }
    };
    for per_page in [3, 7] {
        for page in 1..=3 {
            let q = ListQuery {
                page,
                ..ListQuery::first(per_page)
            };
            out.push(names.page(list(q).await.unwrap().into_json()));
        }
    }
    let sorts: &[&[(&str, bool)]] = &[
        &[("title", false)],
        &[("title", true)],
        &[("views", true)],
        &[("score", false)],
        &[("done", false), ("title", true)],
        &[("when", false)],
        &[("slug", true)],
        &[("user_id", false), ("createdAt", true)],
        &[("id", true)],
    ];
    for sort in sorts {
        let q = ListQuery {
            sort: sort.iter().map(|(k, d)| (k.to_string(), *d)).collect(),
            ..ListQuery::first(10)
        };
        out.push(format!(
            "sort {sort:?}: {}",
            names.page(list(q).await.unwrap().into_json())
        ));
    }
    let q = ListQuery {
        skip_total: true,
        ..ListQuery::first(2)
    };
    out.push(format!(
        "skipTotal: {}",
        names.page(list(q).await.unwrap().into_json())
    ));
    // A walk with cursors, owner-restricted or not.
    for owner in [None, Some("u1".to_string())] {
        let mut q = ListQuery {
            owned_by: owner.clone(),
            ..ListQuery::first(2)
        };
        loop {
            let page = list(q.clone()).await.unwrap();
            let next = page.next.clone();
            out.push(format!(
                "after, owner {owner:?}: {}",
                names.page(page.into_json())
            ));
            match next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
    }
    let bad_sort = ListQuery {
        sort: vec![("nope".into(), false)],
        ..ListQuery::first(2)
    };
    out.push(error(list(bad_sort).await.unwrap_err()));

    // Writes: a precondition decided before the write is checked again inside it.
    let first = ids[0].clone();
    let updated = store
        .update(
            c.clone(),
            first.clone(),
            body(json!({"title": "b2", "views": null, "done": false})),
            Precondition::Owner("u1".into()),
            FileAccess::Any,
        )
        .await
        .unwrap();
    out.push(format!("updated {}", names.record(&updated)));
    let wrong_owner = store
        .update(
            c.clone(),
            first.clone(),
            body(json!({"title": "x"})),
            Precondition::Owner("u2".into()),
            FileAccess::Any,
        )
        .await;
    out.push(format!("as u2: {}", error(wrong_owner.unwrap_err())));
    let rule = match definition::parse(&json!({"name": "p", "fields": [
        {"name": "done", "type": "boolean"}, {"name": "user_id", "type": "string"}
    ], "permissions": {"update": "done = false && user_id = @request.auth.id"}}))
    .unwrap()
    .def
    .permissions
    .update
    {
        Permission::Expression(e) => e,
        Permission::Keyword(_) => unreachable!(),
    };
    let vars = |user: &str| bakend_filter::RequestVars {
        auth_id: Some(user.into()),
        auth_role: Some("authenticated".into()),
        ..bakend_filter::RequestVars::anonymous("2026-01-01T00:00:00.000Z")
    };
    for user in ["u1", "u2"] {
        let outcome = store
            .update(
                c.clone(),
                first.clone(),
                body(json!({"views": 1})),
                Precondition::Matches(rule.clone(), vars(user)),
                FileAccess::Any,
            )
            .await;
        out.push(match outcome {
            Ok(r) => format!("rule as {user}: {}", names.record(&r)),
            Err(e) => format!("rule as {user}: {}", error(e)),
        });
    }
    for (b, what) in [
        (json!({"slug": "s-a"}), "a taken slug"),
        (
            json!({"views": "many", "score": "x", "when": "yesterday"}),
            "bad values",
        ),
    ] {
        let e = store
            .create(c.clone(), body(b), FileAccess::Any, Precondition::None)
            .await
            .unwrap_err();
        out.push(format!("{what}: {}", error(e)));
    }
    let taken = store
        .update(
            c.clone(),
            ids[1].clone(),
            body(json!({"slug": "s-c"})),
            Precondition::None,
            FileAccess::Any,
        )
        .await;
    out.push(format!("slug of another: {}", error(taken.unwrap_err())));
    let deleted = store
        .delete(c.clone(), ids[2].clone(), Precondition::Owner("u2".into()))
        .await;
    out.push(format!("delete as u2: {}", error(deleted.unwrap_err())));
    store
        .delete(c.clone(), ids[2].clone(), Precondition::Owner("u1".into()))
        .await
        .unwrap();
    let gone = store.get(c.clone(), ids[2].clone()).await.unwrap_err();
    out.push(format!("deleted: {}", error(gone).replace(&ids[2], "r2")));
    out.push(names.page(list(ListQuery::first(10)).await.unwrap().into_json()));
    out
}

#[test]
fn the_same_requests_give_the_same_answers_on_both_stores() {
    let dbs = databases("the_same_requests_give_the_same_answers_on_both_stores");
    let rt = runtime();
    let transcripts: Vec<Vec<String>> =
        dbs.iter().map(|t| rt.block_on(transcript(&t.db))).collect();
    drop(rt);
    for (t, other) in dbs.iter().zip(&transcripts).skip(1) {
        for (i, (a, b)) in transcripts[0].iter().zip(other).enumerate() {
            assert_eq!(a, b, "line {i}: SQLite, then {:?}", t.backend);
        }
        assert_eq!(transcripts[0].len(), other.len());
    }
    // The transcript says what it should (on SQLite, and so on every store).
    let t = &transcripts[0];
    let line = |prefix: &str| -> &String {
        t.iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}: {t:#?}"))
    };
    // Nulls first going up, last going down; ties by id.
    assert!(
        line("sort [(\"title\", false)]")
            .starts_with("sort [(\"title\", false)]: [r2 r6 r3 r1 r5 r0 r4]"),
        "{t:#?}"
    );
    assert!(
        line("sort [(\"title\", true)]").contains("[r4 r0 r5 r1 r3 r6 r2]"),
        "{t:#?}"
    );
    assert!(
        line("skipTotal").contains("page 1 of -1 (-1 items)"),
        "{t:#?}"
    );
    assert!(line("as u2").contains("Insufficient permissions"), "{t:#?}");
    assert!(line("rule as u1").contains("\"views\":1"), "{t:#?}");
    assert!(
        line("rule as u2").contains("Insufficient permissions"),
        "{t:#?}"
    );
    assert!(
        line("a taken slug").contains("\"rule\":\"unique\""),
        "{t:#?}"
    );
    assert!(
        line("slug of another").contains("\"rule\":\"unique\""),
        "{t:#?}"
    );
    assert_eq!(
        t.last().unwrap(),
        "[r6 r5 r4 r3 r1 r0] page 1 of 1 (6 items), next none"
    );
}

/// Creates and deletes from many tasks — on PostgreSQL from two servers at once — leave the
/// kept count equal to the table's.
#[test]
fn counts_stay_exact_under_concurrent_creates_and_deletes() {
    let dbs = databases("counts_stay_exact_under_concurrent_creates_and_deletes");
    for t in &dbs {
        let other = t.another_server();
        let rt = runtime();
        rt.block_on(async {
            let servers: Vec<Arc<Database>> =
                std::iter::once(t.db.clone()).chain(other.clone()).collect();
            let mut stores = Vec::new();
            for db in &servers {
                stores.push(store_on(db, posts()).await);
            }
            let mut tasks = Vec::new();
            for w in 0..8 {
                let (store, c) = stores[w % stores.len()].clone();
                tasks.push(tokio::spawn(async move {
                    let mut kept = 0;
                    for k in 0..40 {
                        let r = store
                            .create(
                                c.clone(),
                                body(json!({"title": format!("{w}-{k}")})),
                                FileAccess::Any,
                                Precondition::None,
                            )
                            .await
                            .unwrap();
                        if k % 3 == 0 {
                            let id = r["id"].as_str().unwrap().to_string();
                            store
                                .delete(c.clone(), id, Precondition::None)
                                .await
                                .unwrap();
                        } else {
                            kept += 1;
                        }
                    }
                    kept
                }));
            }
            let mut kept = 0u64;
            for task in tasks {
                kept += task.await.unwrap();
            }
            for (store, c) in &stores {
                let page = store.list(c.clone(), ListQuery::first(1)).await.unwrap();
                assert_eq!(page.total_items, Some(kept), "{:?}", t.backend);
            }
            let rows: i64 = t
                .db
                .read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM posts", (), |r| r.get(0))?))
                .await
                .unwrap();
            assert_eq!(rows as u64, kept);
        });
        drop(rt);
        if let Some(db) = other {
            db.close();
        }
    }
}

/// A walk with `after` cursors while records are created (on PostgreSQL by another server)
/// sees every record that existed when it started exactly once, and nothing twice.
#[test]
fn cursors_skip_and_repeat_nothing_across_concurrent_inserts() {
    let dbs = databases("cursors_skip_and_repeat_nothing_across_concurrent_inserts");
    for t in &dbs {
        let other = t.another_server();
        let rt = runtime();
        rt.block_on(async {
            let (store, c) = store_on(&t.db, posts()).await;
            let (writer, wc) = match &other {
                Some(db) => store_on(db, posts()).await,
                None => (store.clone(), c.clone()),
            };
            let mut before = HashSet::new();
            for k in 0..120 {
                let r = store
                    .create(
                        c.clone(),
                        body(json!({"views": k})),
                        FileAccess::Any,
                        Precondition::None,
                    )
                    .await
                    .unwrap();
                before.insert(r["id"].as_str().unwrap().to_string());
            }
            let inserting = tokio::spawn(async move {
                for k in 0..120 {
                    writer
                        .create(
                            wc.clone(),
                            body(json!({"views": 1000 + k})),
                            FileAccess::Any,
                            Precondition::None,
                        )
                        .await
                        .unwrap();
                }
            });
            let mut seen: Vec<String> = Vec::new();
            let mut q = ListQuery {
                skip_total: true,
                ..ListQuery::first(7)
            };
            loop {
                let page = store.list(c.clone(), q.clone()).await.unwrap();
                let next = page.next.clone();
                let v: Value = serde_json::from_slice(&page.into_json()).unwrap();
                for r in v["items"].as_array().unwrap() {
                    seen.push(r["id"].as_str().unwrap().to_string());
                }
                match next {
                    Some(n) => q.after = Some(n),
                    None => break,
                }
                tokio::task::yield_now().await;
            }
            inserting.await.unwrap();
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "a record came twice ({:?})",
                t.backend
            );
            for id in &before {
                assert!(unique.contains(id), "{id} was skipped ({:?})", t.backend);
            }
        });
        drop(rt);
        if let Some(db) = other {
            db.close();
        }
    }
}

/// Two creates of the same unique value at once: one succeeds, the other is a validation
/// error — on PostgreSQL also when both pass the check before either commits (two servers),
/// where the unique index refuses the second and the error is mapped, never a 500.
#[test]
fn a_unique_value_taken_concurrently_is_a_validation_error() {
    let dbs = databases("a_unique_value_taken_concurrently_is_a_validation_error");
    for t in &dbs {
        let other = t.another_server();
        let rt = runtime();
        rt.block_on(async {
            let a = store_on(&t.db, posts()).await;
            let b = match &other {
                Some(db) => store_on(db, posts()).await,
                None => a.clone(),
            };
            for k in 0..25 {
                let create = |(store, c): (RecordStore, Arc<Collection>)| async move {
                    store
                        .create(
                            c,
                            body(json!({"slug": format!("s{k}")})),
                            FileAccess::Any,
                            Precondition::None,
                        )
                        .await
                };
                let (x, y) = tokio::join!(
                    tokio::spawn(create(a.clone())),
                    tokio::spawn(create(b.clone()))
                );
                let outcomes = [x.unwrap(), y.unwrap()];
                assert_eq!(
                    outcomes.iter().filter(|o| o.is_ok()).count(),
                    1,
                    "{outcomes:?}"
                );
                for o in outcomes {
                    match o {
                        Ok(_) => {}
                        Err(StoreError::Validation(errors)) => {
                            assert_eq!(errors.len(), 1);
                            assert_eq!(
                                (errors[0].field.as_str(), errors[0].rule),
                                ("slug", "unique")
                            );
                        }
                        Err(e) => panic!("{:?}: {e:?}", t.backend),
                    }
                }
            }
        });
        drop(rt);
        if let Some(db) = other {
            db.close();
        }
    }
}

/// PostgreSQL: a migration that changes a column's type leaves the reader connections'
/// prepared statements planning to the old type; lists and gets go on working.
#[test]
fn reads_survive_a_type_change_of_the_table_they_read() {
    let dbs = databases("reads_survive_a_type_change_of_the_table_they_read");
    for t in dbs.iter().filter(|t| t.backend == Backend::Postgres) {
        let rt = runtime();
        rt.block_on(async {
            let def = json!({"name": "n", "fields": [{"name": "v", "type": "string"}]});
            let (store, c) = store_on(&t.db, def).await;
            let r = store
                .create(
                    c.clone(),
                    body(json!({"v": "12"})),
                    FileAccess::Any,
                    Precondition::None,
                )
                .await
                .unwrap();
            let id = r["id"].as_str().unwrap().to_string();
            // Every reader connection prepares the list and the get.
            for _ in 0..16 {
                store.list(c.clone(), ListQuery::first(5)).await.unwrap();
                store.get_json(c.clone(), id.clone()).await.unwrap();
            }
            let new = json!({"name": "n", "fields": [{"name": "v", "type": "integer"}]});
            crate::collections::manage::update(&t.db, store.registry(), "n", new, false)
                .await
                .unwrap();
            let c = store.collection("n").unwrap();
            for _ in 0..16 {
                let page = store.list(c.clone(), ListQuery::first(5)).await.unwrap();
                let v: Value = serde_json::from_slice(&page.into_json()).unwrap();
                assert_eq!(v["items"][0]["v"], json!(12));
                store.get_json(c.clone(), id.clone()).await.unwrap();
            }
            let r = store
                .update(
                    c.clone(),
                    id.clone(),
                    body(json!({"v": 13})),
                    Precondition::None,
                    FileAccess::Any,
                )
                .await
                .unwrap();
            assert_eq!(r["v"], json!(13));
        });
    }
}

/// A unique violation the database itself reports — one that slipped past the check before
/// the write — is a validation error naming the field, on either store's error.
#[test]
fn a_unique_violation_from_the_database_is_a_validation_error() {
    for t in crate::collections::testing::conns(
        "a_unique_violation_from_the_database_is_a_validation_error",
    ) {
        let conn = &t.conn;
        let def = definition::parse(&json!({"name": "p", "fields": [
            {"name": "a", "type": "string"}, {"name": "b", "type": "integer"}
        ], "indexes": [{"fields": ["a", "b"], "unique": true}]}))
        .unwrap()
        .def;
        crate::collections::schema::create(conn, &def).unwrap();
        let c = Collection::new(def, json!({}), "x".into(), "x".into());
        let insert = |id: &str| {
            let row = [id, "t", "t"].map(|s| crate::sql::Value::Text(s.into()));
            let fields = [
                crate::sql::Value::Text("x".into()),
                crate::sql::Value::Integer(1),
            ];
            conn.execute(
                &c.sql.insert,
                crate::sql::params_from_iter(row.iter().chain(fields.iter())),
            )
        };
        insert("r1").unwrap();
        let e = super::store::constraint_error(&c, insert("r2").unwrap_err());
        let StoreError::Validation(errors) = e else {
            panic!("{:?}: {e:?}", conn.backend());
        };
        let fields: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.rule)).collect();
        assert_eq!(
            fields,
            [("a", "unique"), ("b", "unique")],
            "{:?}",
            conn.backend()
        );
    }
}

/// The NUL character: SQLite stores it, PostgreSQL cannot — there a value holding it is a
/// validation error, and an id holding it finds nothing, instead of a database error.
#[test]
fn the_nul_character_is_refused_where_it_cannot_be_stored() {
    let dbs = databases("the_nul_character_is_refused_where_it_cannot_be_stored");
    let rt = runtime();
    for t in &dbs {
        rt.block_on(async {
            let (store, c) = store_on(&t.db, posts()).await;
            let created = store
                .create(
                    c.clone(),
                    body(json!({"title": "a\u{0}b"})),
                    FileAccess::Any,
                    Precondition::None,
                )
                .await;
            match (t.backend, created) {
                (Backend::Sqlite, Ok(r)) => assert_eq!(r["title"], "a\u{0}b"),
                (Backend::Postgres, Err(StoreError::Validation(e))) => {
                    assert_eq!((e[0].field.as_str(), e[0].rule), ("title", "type"));
                }
                (b, other) => panic!("{b:?}: {other:?}"),
            }
            let missing = store.get_json(c.clone(), "rec_\u{0}".into()).await;
            assert!(
                matches!(missing, Err(StoreError::RecordNotFound(_))),
                "{missing:?}"
            );
            let missing = store
                .delete(c.clone(), "rec_\u{0}".into(), Precondition::None)
                .await;
            assert!(
                matches!(missing, Err(StoreError::RecordNotFound(_))),
                "{missing:?}"
            );
        });
    }
}

/// PostgreSQL: the owner a write's precondition checks is the owner when it commits. Another
/// connection (another server, `ctx.db`) gives the record away and commits while the write
/// waits for the row: the write then sees the new owner and is refused, for an update and a
/// delete alike.
#[test]
fn a_precondition_sees_a_change_committed_while_the_write_waited() {
    let dbs = databases("a_precondition_sees_a_change_committed_while_the_write_waited");
    for t in &dbs {
        let Some(cfg) = t.postgres() else { continue };
        let rt = runtime();
        let (store, c) = rt.block_on(store_on(&t.db, posts()));
        for delete in [false, true] {
            let r = rt
                .block_on(store.create(
                    c.clone(),
                    body(json!({"title": "t", "user_id": "u1"})),
                    FileAccess::Any,
                    Precondition::None,
                ))
                .unwrap();
            let id = r["id"].as_str().unwrap().to_string();
            let (cfg, theirs) = (cfg.clone(), id.clone());
            let (locked, wait) = std::sync::mpsc::channel();
            let other = std::thread::spawn(move || {
                let conn = crate::sql::Conn::from(crate::sql::PgConn::connect(&cfg).unwrap());
                conn.execute_batch("BEGIN").unwrap();
                conn.execute("UPDATE posts SET user_id = 'u2' WHERE id = ?1", [&theirs])
                    .unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                conn.execute_batch("COMMIT").unwrap();
            });
            wait.recv().unwrap();
            let pre = Precondition::Owner("u1".into());
            let outcome = rt.block_on(async {
                if delete {
                    store
                        .delete(c.clone(), id.clone(), pre)
                        .await
                        .map(|_| Value::Null)
                } else {
                    let b = body(json!({"title": "mine"}));
                    store
                        .update(c.clone(), id.clone(), b, pre, FileAccess::Any)
                        .await
                }
            });
            other.join().unwrap();
            assert!(
                matches!(outcome, Err(StoreError::Forbidden)),
                "delete {delete}: {outcome:?}"
            );
            let now = rt.block_on(store.get(c.clone(), id)).unwrap();
            assert_eq!(
                (now["title"].as_str(), now["user_id"].as_str()),
                (Some("t"), Some("u2"))
            );
        }
    }
}

/// Lists with filters give the same answers on both stores: every operator, nulls, `~` with
/// Unicode, `@request` values, and a filter walked with cursors and counted.
#[test]
fn filtered_lists_give_the_same_answers_on_both_stores() {
    let dbs = databases("filtered_lists_give_the_same_answers_on_both_stores");
    let rt = runtime();
    let transcripts: Vec<Vec<String>> = dbs
        .iter()
        .map(|t| {
            rt.block_on(async {
                let (store, c) = store_on(&t.db, posts()).await;
                let mut names = Names::default();
                let bodies = [
                    json!({"title": "Émile", "slug": "a", "views": 3, "score": 0.5, "done": true, "when": "2026-01-02T00:00:00Z", "user_id": "u1"}),
                    json!({"title": "emily", "slug": "b", "views": 1, "score": 2.0, "done": false, "user_id": "u2"}),
                    json!({"title": "ΣΑΣ", "views": 7, "done": true, "when": "2025-06-01T00:00:00Z", "user_id": "u1"}),
                    json!({"slug": "c", "score": -1.5, "user_id": "u1"}),
                    json!({"title": "100% sure_", "slug": "d", "views": 3, "done": false}),
                ];
                for b in bodies {
                    let r = store
                        .create(c.clone(), body(b), FileAccess::Any, Precondition::None)
                        .await
                        .unwrap();
                    names.add(&r);
                }
                let vars = bakend_filter::RequestVars {
                    auth_id: Some("u1".into()),
                    auth_role: Some("authenticated".into()),
                    ..bakend_filter::RequestVars::anonymous("2026-01-01T00:00:00.000Z")
                };
                let filters = [
                    "title = 'emily'",
                    "title != 'emily'",
                    "title ~ 'ÉMI'",
                    "title !~ 'emi'",
                    "title ~ 'σας'",
                    "title ~ '100%'",
                    "title ~ 'sure_'",
                    "views > 2 && done = true",
                    "views >= 3 || score < 0",
                    "score <= 0.5",
                    "done = false",
                    "done != true",
                    "title = null",
                    "slug != null && views = null",
                    "when > @now",
                    "when < '2026-01-01T00:00:00Z'",
                    "user_id = @request.auth.id",
                    "user_id != @request.auth.id",
                    "id != ''",
                    "createdAt > '2000-01-01T00:00:00Z'",
                ];
                let mut out = Vec::new();
                for f in filters {
                    let filter = Arc::new(bakend_filter::Filter::new(f, c.filter_schema()).unwrap());
                    let mut q = ListQuery {
                        filters: vec![filter],
                        vars: vars.clone(),
                        ..ListQuery::first(2)
                    };
                    loop {
                        let page = store.list(c.clone(), q.clone()).await.unwrap();
                        let next = page.next.clone();
                        out.push(format!("{f}: {}", names.page(page.into_json())));
                        match next {
                            Some(n) => q.after = Some(n),
                            None => break,
                        }
                    }
                }
                out
            })
        })
        .collect();
    drop(rt);
    let sqlite = &transcripts[0];
    assert!(
        sqlite.iter().any(|l| l.starts_with("title ~ 'ÉMI': [r0] ")),
        "{sqlite:#?}"
    );
    assert!(
        sqlite.iter().any(|l| l.starts_with("title ~ 'σας': [r2]")),
        "{sqlite:#?}"
    );
    for (t, other) in dbs.iter().zip(&transcripts).skip(1) {
        for (a, b) in sqlite.iter().zip(other) {
            assert_eq!(a, b, "SQLite, then {:?}", t.backend);
        }
        assert_eq!(sqlite.len(), other.len());
    }
}
