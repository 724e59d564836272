//! Lists at any size (issue 15): kept row counts, `skipTotal`, keyset pagination with `after`
//! and `next`, through the real server.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::harness::{TestServer, write_collections};

fn posts() -> Value {
    json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "n", "type": "integer"}
    ]})
}

fn notes() -> Value {
    json!({"name": "notes", "fields": [
        {"name": "v", "type": "string"},
        {"name": "user_id", "type": "string"}
    ], "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}})
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The default order's key of a record: newest first means descending `(createdAt, id)`.
fn key(r: &Value) -> (String, String) {
    (
        r["createdAt"].as_str().unwrap().to_string(),
        r["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn skip_total_and_the_cursor_parameters() {
    let s = TestServer::start(&[posts()]).await;
    for i in 0..25 {
        s.create("posts", json!({"title": format!("p{i}"), "n": i}))
            .await;
    }
    let r = s.get("/api/posts?perPage=10").await;
    assert_eq!(r.status, 200);
    let first = r.json();
    assert_eq!(first["totalItems"], 25);
    assert_eq!(first["totalPages"], 3);
    assert!(first["next"].is_string(), "{first}");

    let r = s.get("/api/posts?perPage=10&skipTotal=true").await.json();
    assert_eq!(r["totalItems"], -1);
    assert_eq!(r["totalPages"], -1);
    assert_eq!(
        ids(&r),
        ids(&first),
        "skipping the count changes nothing else"
    );
    let r = s.get("/api/posts?perPage=10&skipTotal=false").await.json();
    assert_eq!(r["totalItems"], 25);

    // Walk with the cursor: every record once, newest first, then `next` is null.
    let mut seen = ids(&first);
    let mut next = first["next"].as_str().unwrap().to_string();
    loop {
        let page = s
            .get(&format!("/api/posts?perPage=10&after={next}"))
            .await
            .json();
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
    }
    let all = s.get("/api/posts?perPage=100").await.json();
    assert_eq!(seen, ids(&all));
    assert!(all["next"].is_null(), "everything on one page: no next");
    // A page number still gives a cursor to go on from.
    let p2 = s.get("/api/posts?perPage=10&page=2").await.json();
    let after_p2 = s
        .get(&format!(
            "/api/posts?perPage=10&after={}",
            p2["next"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(ids(&after_p2), ids(&all)[20..].to_vec());
    // Another order has no cursor.
    assert!(s.get("/api/posts?perPage=10&sort=title").await.json()["next"].is_null());

    for (query, message) in [
        (
            format!("perPage=10&page=2&after={next}"),
            "Use either page or after, not both",
        ),
        (
            format!("sort=-createdAt&after={next}"),
            "after works with the default order only (newest first): drop sort",
        ),
        (
            "after=bm9wZQ".to_string(),
            "after must be the next cursor of a previous page of this list",
        ),
        (
            "after=%00%FF".to_string(),
            "after must be the next cursor of a previous page of this list",
        ),
        (
            "skipTotal=yes".to_string(),
            "skipTotal must be true or false",
        ),
    ] {
        s.get(&format!("/api/posts?{query}"))
            .await
            .assert_error(400, "bad_request", message);
    }
    s.shutdown().await;
}

/// Walking a list page by page while others insert and delete: no record that exists
/// throughout is skipped or repeated, and a deleted record's cursor still works.
#[tokio::test]
async fn a_cursor_walk_skips_and_repeats_nothing_across_concurrent_writes() {
    let s = TestServer::start(&[posts()]).await;
    let mut initial = Vec::new();
    for i in 0..150 {
        let r = s
            .create("posts", json!({"title": format!("p{i}"), "n": i}))
            .await;
        initial.push(r["id"].as_str().unwrap().to_string());
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The writer starts once the walk has read its first page: what it inserts is newer than
    // every cursor of the walk (started earlier, it could land on page 1).
    let walking = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, walking, url) = (stop.clone(), walking.clone(), s.url.clone());
        tokio::spawn(async move {
            while !walking.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let http = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/api/posts"))
                    .json(&json!({"title": "new", "n": -1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                n += 1;
            }
            n
        })
    };

    let mut seen: Vec<Value> = Vec::new();
    let mut deleted_ahead = HashSet::new();
    let mut query = "perPage=7".to_string();
    let mut pages = 0;
    loop {
        let page = s.get(&format!("/api/posts?{query}")).await.json();
        let items = page["items"].as_array().unwrap().clone();
        pages += 1;
        walking.store(true, Ordering::Relaxed);
        // The page's last record goes away before the next request: its cursor must still
        // lead on. Every other page, a record further on goes too (and must not show up).
        if let Some(last) = items.last() {
            let id = last["id"].as_str().unwrap();
            assert_eq!(s.delete(&format!("/api/posts/{id}")).await.status, 204);
        }
        let seen_ids: HashSet<&str> = seen
            .iter()
            .chain(&items)
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        if pages % 2 == 0
            && let Some(ahead) = initial
                .iter()
                .find(|id| !seen_ids.contains(id.as_str()) && !deleted_ahead.contains(*id))
        {
            assert_eq!(s.delete(&format!("/api/posts/{ahead}")).await.status, 204);
            deleted_ahead.insert(ahead.clone());
        }
        seen.extend(items);
        match page["next"].as_str() {
            Some(n) => query = format!("perPage=7&after={n}"),
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.await.unwrap();
    assert!(inserted > 0, "writes ran during the walk");

    let keys: Vec<(String, String)> = seen.iter().map(key).collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first, no repeats"
    );
    let seen_ids: HashSet<String> = seen.iter().map(|r| key(r).1).collect();
    for id in &initial {
        assert_eq!(
            seen_ids.contains(id),
            !deleted_ahead.contains(id),
            "record {id}"
        );
    }
    assert!(
        seen.iter().all(|r| r["n"] != -1),
        "records inserted after the walk began are newer than its cursor"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn counts_stay_exact_under_concurrent_creates_and_deletes() {
    let s = TestServer::start(&[posts(), notes()]).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let url = s.url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut kept = 0;
            for i in 0..30 {
                let r: Value = http
                    .post(format!("{url}/api/posts"))
                    .json(&json!({"title": format!("w{w}"), "n": i}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    let id = r["id"].as_str().unwrap();
                    let d = http
                        .delete(format!("{url}/api/posts/{id}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(d.status(), 204);
                } else {
                    kept += 1;
                }
            }
            kept
        }));
    }
    let mut kept = 0;
    for t in tasks {
        kept += t.await.unwrap();
    }
    let page = s.get("/api/posts?perPage=500").await.json();
    assert_eq!(page["totalItems"], json!(kept));
    assert_eq!(page["items"].as_array().unwrap().len(), kept);
    assert_eq!(page["totalPages"], 1);

    // An owner's list counts the owner's records only.
    let (a, b) = (
        s.register("a@example.com").await,
        s.register("b@example.com").await,
    );
    for (who, n) in [(&a, 3), (&b, 5)] {
        for i in 0..n {
            let r = s
                .call(
                    reqwest::Method::POST,
                    "/api/notes",
                    Some(&who.token),
                    Some(&json!({"v": format!("{i}")})),
                )
                .await;
            assert_eq!(r.status, 201);
        }
    }
    for (who, n) in [(&a, 3), (&b, 5)] {
        let page = s
            .call(reqwest::Method::GET, "/api/notes", Some(&who.token), None)
            .await
            .json();
        assert_eq!(page["totalItems"], n);
        assert_eq!(page["items"].as_array().unwrap().len(), n);
    }
    s.shutdown().await;
}

/// Rows a function writes through `ctx.db` (inserts, and a delete of every row, which SQLite
/// would otherwise do in one step without looking at rows) are counted.
#[tokio::test]
async fn counts_follow_rows_written_by_functions() {
    if crate::pg::skip_on_postgres(
        "counts_follow_rows_written_by_functions",
        "ctx.db is SQLite's own API, refused on PostgreSQL",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[
            posts(),
            json!({"name": "audit", "fields": [{"name": "note", "type": "string"}]}),
        ],
    );
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("functions/audit.ts"),
        r#"
import { onCreate } from "bakend/functions";
onCreate("posts", ({ record, db }) => {
  if (record.title === "purge") {
    db.run("DELETE FROM audit");
  } else {
    db.query("INSERT INTO audit (id, created_at, updated_at, note) VALUES (?, ?, ?, ?)")
      .run("rec_" + record.id, record.createdAt, record.createdAt, record.title);
  }
});
"#,
    )
    .unwrap();
    let s = TestServer::start_in(dir).await;
    for i in 0..4 {
        s.create("posts", json!({"title": format!("t{i}")})).await;
    }
    let total = |s: &TestServer| {
        let url = format!("{}/api/audit", s.url);
        async move {
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            (
                v["totalItems"].as_u64().unwrap(),
                v["items"].as_array().unwrap().len() as u64,
            )
        }
    };
    let mut last = (0, 0);
    for _ in 0..100 {
        last = total(&s).await;
        if last == (4, 4) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last, (4, 4), "(totalItems, items)");
    s.create("posts", json!({"title": "purge"})).await;
    let mut purged = false;
    for _ in 0..100 {
        if total(&s).await == (0, 0) {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(purged, "after the purge: {:?}", total(&s).await);
    s.shutdown().await;
}

/// A database from before kept counts (no triggers, no count row) is counted at start-up.
#[tokio::test]
async fn an_older_database_is_counted_at_start_up() {
    if crate::pg::skip_on_postgres(
        "an_older_database_is_counted_at_start_up",
        "arranges an older SQLite database by hand",
    ) {
        return;
    }
    let s = TestServer::start(&[posts()]).await;
    for i in 0..3 {
        s.create("posts", json!({"title": format!("t{i}")})).await;
    }
    let dir = s.shutdown().await;
    {
        let conn = rusqlite::Connection::open(dir.path().join("bakend.db")).unwrap();
        conn.execute_batch(
            "DROP TRIGGER _count_posts_insert; DROP TRIGGER _count_posts_delete;
             DELETE FROM _record_counts;
             INSERT INTO posts (id, created_at, updated_at, title) VALUES ('rec_old', '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z', 'old');",
        )
        .unwrap();
    }
    let s = TestServer::start_in(dir).await;
    let page = s.get("/api/posts").await.json();
    assert_eq!(page["totalItems"], 4);
    s.create("posts", json!({"title": "after"})).await;
    assert_eq!(s.get("/api/posts").await.json()["totalItems"], 5);
    let dir = s.shutdown().await;
    // The count is kept again (not the slow count a missing row falls back to).
    let conn = rusqlite::Connection::open(dir.path().join("bakend.db")).unwrap();
    let kept: i64 = conn
        .query_row(
            "SELECT n FROM _record_counts WHERE collection = 'posts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 5);
}
