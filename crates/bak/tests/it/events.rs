//! Which events each write emits (spec `events.md`), and that failed writes emit none.

use serde_json::{Value, json};

use crate::harness::{TestServer, eventually};

fn posts() -> Value {
    json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "slug", "type": "string", "unique": true}
    ]})
}

fn assert_envelope(e: &bakend_core::Event, kind: &str, payload: &Value) {
    assert_eq!(e.event_type, kind);
    assert_eq!(&e.payload, payload);
    assert_eq!(e.source, bakend_core::EventSource::Collections);
    assert!(e.id.starts_with("evt_") && e.id.len() == 40, "{}", e.id);
    assert_eq!(e.timestamp.len(), 24);
    let text = e.envelope_json();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], kind);
    assert_eq!(v["source"], "collections");
    assert_eq!(&v["payload"], payload);
}

#[tokio::test]
async fn startup_emits_collection_created() {
    let mut s = TestServer::start(&[posts()]).await;
    let events = s.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "system.collection.created");
    assert_eq!(events[0].payload, json!({"name": "posts"}));
}

#[tokio::test]
async fn each_write_emits_its_event_after_commit() {
    let mut s = TestServer::start(&[posts()]).await;
    s.take_events();

    let created = s.create("posts", json!({"title": "a"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    let ev = s.take_record_events();
    assert_eq!(ev.len(), 1, "exactly one event per write");
    assert_envelope(&ev[0], "posts.created", &created);

    let updated = s
        .put(&format!("/api/posts/{id}"), &json!({"title": "b"}))
        .await
        .json();
    let ev = s.take_record_events();
    assert_eq!(ev.len(), 1);
    assert_envelope(&ev[0], "posts.updated", &updated);

    assert_eq!(s.delete(&format!("/api/posts/{id}")).await.status, 204);
    let ev = s.take_record_events();
    assert_eq!(ev.len(), 1);
    assert_envelope(&ev[0], "posts.deleted", &json!({"id": id}));
}

#[tokio::test]
async fn failed_and_no_op_writes_emit_nothing() {
    let mut s = TestServer::start(&[posts()]).await;
    let a = s.create("posts", json!({"title": "a", "slug": "x"})).await;
    let id = a["id"].as_str().unwrap().to_string();
    s.take_events();

    assert_eq!(s.post("/api/posts", &json!({})).await.status, 400);
    assert_eq!(
        s.post("/api/posts", &json!({"title": "b", "slug": "x"}))
            .await
            .status,
        400
    );
    assert_eq!(
        s.put(&format!("/api/posts/{id}"), &json!({"title": ""}))
            .await
            .status,
        400
    );
    assert_eq!(
        s.put(&format!("/api/posts/{id}"), &json!({})).await.status,
        200
    );
    assert_eq!(
        s.put("/api/posts/rec_missing", &json!({"title": "c"}))
            .await
            .status,
        404
    );
    assert_eq!(s.delete("/api/posts/rec_missing").await.status, 404);
    assert_eq!(
        s.post("/api/nope", &json!({"title": "c"})).await.status,
        404
    );
    // Give any stray event time to show up before asserting there is none.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(s.take_events().is_empty());
}

#[tokio::test]
async fn events_follow_commit_order() {
    let mut s = TestServer::start(&[posts()]).await;
    s.take_events();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(s.create("posts", json!({"title": format!("t{i}")})).await["id"].clone());
    }
    let got: Vec<Value> = s
        .take_record_events()
        .iter()
        .map(|e| e.payload["id"].clone())
        .collect();
    assert_eq!(got, ids);

    // Concurrent writers: every committed write yields exactly one event.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let http = s.http.clone();
        let url = format!("{}/api/posts", s.url);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"title": format!("c{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap());
    }
    let mut seen = Vec::new();
    assert!(
        eventually(|| {
            seen.extend(
                s.take_record_events()
                    .iter()
                    .map(|e| e.payload["id"].as_str().unwrap().to_string()),
            );
            seen.len() >= created.len()
        })
        .await
    );
    created.sort();
    seen.sort();
    assert_eq!(seen, created);
}

#[tokio::test]
async fn restart_keeps_records_and_emits_no_duplicate_collection_events() {
    let s = TestServer::start(&[posts()]).await;
    let a = s.create("posts", json!({"title": "persisted"})).await;
    let dir = s.shutdown().await;
    let mut s = TestServer::start_in(dir).await;
    assert!(
        s.take_events().is_empty(),
        "an unchanged collection is not created again"
    );
    let got = s
        .get(&format!("/api/posts/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.json(), a);
}
