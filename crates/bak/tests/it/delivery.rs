//! A write is answered only after its event is in the subscribers' sockets (issue 14 #9): a
//! client that writes and then disconnects, or reads its subscription right after the answer,
//! never misses the event — v1's order, event first.

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{Session, TestServer};
use crate::ws::Ws;

const ROUNDS: usize = 200;

fn collections() -> Vec<Value> {
    vec![json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]})]
}

/// The event frame must be readable the moment the answer is: peeked without waiting, then
/// read and checked.
async fn event_already_there(ws: &mut Ws, what: &str, round: usize, event_type: &str) -> Value {
    assert!(
        ws.readable_now(),
        "round {round}: {what} was answered before its event reached the subscriber's socket"
    );
    let frame = ws.next().await;
    assert_eq!(frame["type"], "event", "{frame}");
    assert_eq!(frame["event"]["type"], event_type, "{frame}");
    frame["event"]["payload"].clone()
}

/// `subscribers` on `posts.*`: each must have every event when the write is answered.
async fn records_then_files(subscribers: usize) {
    let s = TestServer::start(&collections()).await;
    let user: Session = s.register("writer@example.com").await;
    let count = subscribers;
    let mut subscribers = Vec::new();
    for _ in 0..count {
        let (mut ws, _) = Ws::connect(&s.ws_url()).await;
        ws.subscribe("posts.*").await;
        subscribers.push(ws);
    }
    let (mut files_ws, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), user.token)).await;
    files_ws.subscribe("storage.*").await;
    for round in 0..ROUNDS {
        let created = s
            .create("posts", json!({"title": format!("t{round}")}))
            .await;
        let id = created["id"].as_str().unwrap();
        for ws in &mut subscribers {
            let p = event_already_there(ws, "create", round, "posts.created").await;
            assert_eq!(p["id"], id);
        }

        let r = s
            .put(&format!("/api/posts/{id}"), &json!({"title": "changed"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        for ws in &mut subscribers {
            let p = event_already_there(ws, "update", round, "posts.updated").await;
            assert_eq!(p["title"], "changed");
        }

        let r = s.delete(&format!("/api/posts/{id}")).await;
        assert_eq!(r.status, 204, "{}", r.text);
        for ws in &mut subscribers {
            let p = event_already_there(ws, "delete", round, "posts.deleted").await;
            assert_eq!(p["id"], id);
        }
    }
    for round in 0..ROUNDS / 4 {
        let form = Form::new().part(
            "file",
            Part::bytes(b"hello".to_vec()).file_name(format!("f{round}.txt")),
        );
        let r = s
            .http
            .post(format!("{}/api/storage/upload", s.url))
            .bearer_auth(&user.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let file: Value = r.json().await.unwrap();
        let p = event_already_there(&mut files_ws, "upload", round, "storage.uploaded").await;
        assert_eq!(p["id"], file["id"]);
        let path = format!("/api/storage/{}", file["id"].as_str().unwrap());
        let r = s.call(Method::DELETE, &path, Some(&user.token), None).await;
        assert_eq!(r.status, 204, "{}", r.text);
        event_already_there(&mut files_ws, "file delete", round, "storage.deleted").await;
    }
    let (mut auth_ws, _) = Ws::connect(&s.ws_url()).await;
    auth_ws.subscribe("auth.login").await;
    for round in 0..ROUNDS / 10 {
        let r = s
            .post(
                "/api/auth/login",
                &json!({"email": "writer@example.com", "password": "password123"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        event_already_there(&mut auth_ws, "login", round, "auth.login").await;
    }
}

/// Several runtime workers: connection tasks write their own frames, the hub its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_answered_after_their_events_with_task_writes() {
    records_then_files(16).await;
}

/// One worker: the hub writes every frame inline, yielding every 64 sockets (when the
/// request task could answer before the rest are written).
#[tokio::test]
async fn writes_are_answered_after_their_events_with_inline_writes() {
    records_then_files(150).await;
}
