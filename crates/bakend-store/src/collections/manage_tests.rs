//! Collections changed at start-up, by `bak migrate` and through the admin API, on both
//! stores: a transcript of each store's answers, compared. Without `BAKEND_TEST_POSTGRES`
//! only the SQLite half runs.

use std::sync::Arc;

use serde_json::{Value, json};

use super::definition;
use super::manage;
use super::registry::Registry;
use super::sync::{self, FileDefinition, Status};
use crate::collections::testing::{databases, runtime};
use crate::db::{Committed, Database};
use crate::records::store::{ListQuery, Precondition, RecordStore};
use crate::records::validate::FileAccess;

fn file(def: Value) -> FileDefinition {
    let parsed = definition::parse(&def).unwrap();
    FileDefinition {
        path: format!("{}.json", parsed.def.name).into(),
        parsed,
    }
}

fn posts(extra_fields: &[Value], indexes: Value) -> Value {
    let mut fields = vec![
        json!({"name": "title", "type": "string"}),
        json!({"name": "views", "type": "integer"}),
    ];
    fields.extend(extra_fields.iter().cloned());
    json!({"name": "posts", "fields": fields, "indexes": indexes})
}

async fn titles(store: &RecordStore) -> String {
    let c = store.collection("posts").unwrap();
    let q = ListQuery {
        sort: vec![("title".into(), false)],
        ..ListQuery::first(50)
    };
    let page = store.list(c, q).await.unwrap();
    let total = page.total_items;
    let v: Value = serde_json::from_slice(&page.into_json()).unwrap();
    let items: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for k in ["id", "createdAt", "updatedAt"] {
                r.as_object_mut().unwrap().remove(k);
            }
            r.to_string()
        })
        .collect();
    format!("{total:?}: {}", items.join(" "))
}

/// Record ids, which differ between runs, as `rec_…`.
fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("rec_") {
        out.push_str(&rest[..at + 4]);
        out.push('…');
        rest = rest[at + 4..].trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '-');
    }
    out.push_str(rest);
    out
}

async fn transcript(db: &Arc<Database>) -> Vec<String> {
    let mut out = Vec::new();
    let registry = Arc::new(Registry::default());
    let store = RecordStore::new(db.clone(), registry.clone());

    // Start-up creates the collection from its file.
    let report = sync::apply(db, &registry, vec![file(posts(&[], json!([])))])
        .await
        .unwrap();
    out.push(format!("created {:?}", report.created));
    let c = store.collection("posts").unwrap();
    for (title, views) in [("b", 1), ("a", 2), ("a", 3)] {
        store
            .create(
                c.clone(),
                json!({"title": title, "views": views})
                    .as_object()
                    .cloned()
                    .unwrap(),
                FileAccess::Any,
                Precondition::None,
            )
            .await
            .unwrap();
    }
    out.push(titles(&store).await);

    // `bak migrate status`: a unique index over repeating titles, and a type change.
    let wanted = posts(
        &[json!({"name": "views", "type": "float"})],
        json!([{"fields": ["title"], "unique": true}]),
    );
    let mut wanted_fields = wanted.clone();
    wanted_fields["fields"].as_array_mut().unwrap().remove(1);
    let files = vec![file(wanted_fields.clone())];
    let status = db
        .read(move |conn| sync::status(conn, &files))
        .await
        .unwrap();
    for entry in status {
        match entry.status {
            Status::Drift { plan, blockers } => {
                out.push(format!(
                    "drift: {:?}, rebuild {}",
                    plan.changes, plan.rebuild
                ));
                for b in blockers {
                    out.push(format!("  blocker: {b}"));
                }
            }
            other => out.push(format!("{other:?}")),
        }
    }
    // Start-up refuses what needs a rewrite.
    let refused = sync::apply(db, &registry, vec![file(wanted_fields.clone())]).await;
    out.push(format!("start-up: {}", refused.unwrap_err()));

    // The admin API: the dry run, then the change refused, then without the unique index.
    let preview = manage::preview(db, "posts", wanted_fields.clone())
        .await
        .unwrap();
    out.push(format!(
        "preview: {:?} / {:?}",
        preview.plan.changes,
        preview
            .blockers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    ));
    let refused = manage::update(db, &registry, "posts", wanted_fields.clone(), true).await;
    out.push(format!(
        "update: {}",
        masked(&refused.err().unwrap().to_string())
    ));
    let plain = posts(
        &[],
        json!([{"fields": ["title"]}, {"fields": ["views", "-createdAt"]}]),
    );
    let mut plain_fields = plain.clone();
    plain_fields["fields"][1] =
        json!({"name": "views", "type": "float", "required": true, "default": 0});
    let done = manage::update(db, &registry, "posts", plain_fields, false)
        .await
        .unwrap();
    out.push(format!("updated: {:?}", done.changes));
    out.push(titles(&store).await);
    let indexes = db
        .read(|conn| {
            let mut names = super::schema::index_names(conn, "posts")?;
            names.sort();
            Ok(names)
        })
        .await
        .unwrap();
    out.push(format!("indexes: {indexes:?}"));

    // A table lost (restored without it) is made again at start-up; a lost count, recounted.
    db.write(|conn| {
        conn.execute_batch("DELETE FROM _record_counts WHERE collection = 'posts'")?;
        Ok(Committed::new(()))
    })
    .await
    .unwrap();
    let registry2 = Arc::new(Registry::default());
    let store2 = RecordStore::new(db.clone(), registry2.clone());
    sync::apply(db, &registry2, vec![]).await.unwrap();
    out.push(format!("recounted: {}", titles(&store2).await));

    // Deleted, then created again under the same name with other types.
    manage::delete(db, &registry, "posts").await.unwrap();
    let gone = db
        .read(|conn| Ok(super::schema::table_exists(conn, "posts")?))
        .await
        .unwrap();
    out.push(format!("deleted, table left: {gone}"));
    let again = json!({"name": "posts", "fields": [
        {"name": "title", "type": "integer"}, {"name": "views", "type": "string", "unique": true}
    ]});
    manage::create(db, &registry, again).await.unwrap();
    let c = store.collection("posts").unwrap();
    for (title, views) in [(2, "x"), (1, "y")] {
        store
            .create(
                c.clone(),
                json!({"title": title, "views": views})
                    .as_object()
                    .cloned()
                    .unwrap(),
                FileAccess::Any,
                Precondition::None,
            )
            .await
            .unwrap();
    }
    let dup = store
        .create(
            c.clone(),
            json!({"views": "x"}).as_object().cloned().unwrap(),
            FileAccess::Any,
            Precondition::None,
        )
        .await;
    out.push(format!("duplicate: {:?}", dup.err().map(|e| e.to_string())));
    out.push(titles(&store).await);
    out
}

#[test]
fn collections_change_the_same_way_on_both_stores() {
    let dbs = databases("collections_change_the_same_way_on_both_stores");
    let rt = runtime();
    let transcripts: Vec<Vec<String>> =
        dbs.iter().map(|t| rt.block_on(transcript(&t.db))).collect();
    drop(rt);
    let sqlite = &transcripts[0];
    let has = |needle: &str| {
        assert!(
            sqlite.iter().any(|l| l.contains(needle)),
            "no {needle:?} in {sqlite:#?}"
        )
    };
    // (A plan that rewrites rows checks new unique indexes when it runs.)
    has(
        "update: Collection \"posts\" cannot be migrated without losing or invalidating data: index unique (title): 1 record(s) repeat values another record holds: rec_… (same as rec_…)",
    );
    has("start-up: ");
    has("recounted: Some(3)");
    has("deleted, table left: false");
    has("duplicate: Some(\"Validation failed\")");
    has(r#"Some(2): {"views":"y","title":1} {"views":"x","title":2}"#);
    for (t, other) in dbs.iter().zip(&transcripts).skip(1) {
        for (a, b) in sqlite.iter().zip(other) {
            assert_eq!(a, b, "SQLite, then {:?}", t.backend);
        }
        assert_eq!(sqlite.len(), other.len());
    }
}

/// PostgreSQL: servers starting at once on one database with the same collection files take
/// turns; one creates each collection, the others find it made.
#[test]
fn servers_starting_at_once_create_each_collection_once() {
    let dbs = databases("servers_starting_at_once_create_each_collection_once");
    for t in dbs.iter().filter(|t| t.another_server().is_some()) {
        let servers: Vec<Arc<Database>> = (0..3).filter_map(|_| t.another_server()).collect();
        let rt = runtime();
        let reports = rt.block_on(async {
            let starts = servers.iter().map(|db| {
                let db = db.clone();
                tokio::spawn(async move {
                    let files = vec![
                        file(posts(&[], json!([{"fields": ["title"]}]))),
                        file(json!({"name": "tags", "fields": [{"name": "t", "type": "string", "unique": true}]})),
                    ];
                    sync::apply(&db, &Arc::new(Registry::default()), files).await
                })
            });
            let mut created = Vec::new();
            for s in starts.collect::<Vec<_>>() {
                created.extend(s.await.unwrap().unwrap().created);
            }
            created
        });
        drop(rt);
        let mut reports = reports;
        reports.sort();
        assert_eq!(reports, ["posts", "tags"]);
        for db in servers {
            db.close();
        }
    }
}
