//! Filtered subscriptions (issue 16, "live queries") over real WebSockets: a subscription with
//! a filter and an id gets its own frames saying whether each change added a record to its
//! results, modified one in them or removed one, as its connection may see it — live and,
//! across a crash, resumed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{BakProcess, Session, TestServer, write_collections};
use crate::ws::{Next, Ws};

const ADMIN: &str = "root@example.com";
const SHORT: Duration = Duration::from_millis(300);

fn collections() -> Vec<Value> {
    vec![
        json!({"name": "tasks", "fields": [
            {"name": "title", "type": "string"},
            {"name": "project", "type": "string"},
            {"name": "done", "type": "boolean"},
            {"name": "assignee", "type": "string"}]}),
        json!({"name": "notes", "fields": [
            {"name": "title", "type": "string"},
            {"name": "done", "type": "boolean"},
            {"name": "user_id", "type": "string"}],
            "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}}),
    ]
}

async fn server() -> TestServer {
    TestServer::start_with_env(
        &collections(),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", ADMIN)],
    )
    .await
}

/// Subscribes with a filter and an id; checks the ack (exactly these keys).
async fn subscribe(ws: &mut Ws, channel: &str, filter: &str, id: &str) {
    ws.send(json!({"action": "subscribe", "channel": channel, "filter": filter, "id": id}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "subscribed", "channel": channel, "id": id})
    );
}

/// A filtered frame as `(subscription, change, payload)`, checking its keys.
fn change_of(f: &Value) -> (String, String, Value) {
    let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["type", "subscription", "change", "event"], "{f}");
    assert_eq!(f["type"], "event");
    (
        f["subscription"].as_str().unwrap().to_string(),
        f["change"].as_str().unwrap().to_string(),
        f["event"]["payload"].clone(),
    )
}

fn ch(sub: &str, change: &str, payload: &Value) -> (String, String, Value) {
    (sub.into(), change.into(), payload.clone())
}

/// Every frame before the first one about record `barrier` (which is consumed).
async fn frames_until(ws: &mut Ws, barrier: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match ws.poll(Duration::from_secs(20)).await {
            Next::Frame(v) if v["type"] == "event" && v["event"]["payload"]["id"] == *barrier => {
                return out;
            }
            Next::Frame(v) => out.push(v),
            Next::Closed(c, r) => panic!("closed {c} {r} after {out:?}"),
            Next::Silent => panic!("barrier {barrier} not received; got {out:?}"),
        }
    }
}

async fn put(s: &TestServer, path: &str, token: Option<&str>, body: Value) -> Value {
    let r = s.call(Method::PUT, path, token, Some(&body)).await;
    assert_eq!(r.status, 200, "PUT {path} {body}: {}", r.text);
    r.json()
}

#[tokio::test]
async fn every_change_of_a_filtered_subscription() {
    let s = server().await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    subscribe(
        &mut ws,
        "tasks.*",
        "project = 'p1' && done = false",
        "open-p1",
    )
    .await;
    let t1 = s
        .create(
            "tasks",
            json!({"title": "a", "project": "p1", "done": false}),
        )
        .await;
    let id1 = t1["id"].as_str().unwrap();
    let t2 = s
        .create(
            "tasks",
            json!({"title": "b", "project": "p2", "done": false}),
        )
        .await;
    let id2 = t2["id"].as_str().unwrap();
    let t1_renamed = put(
        &s,
        &format!("/api/tasks/{id1}"),
        None,
        json!({"title": "a2"}),
    )
    .await;
    let t1_done = put(
        &s,
        &format!("/api/tasks/{id1}"),
        None,
        json!({"done": true}),
    )
    .await;
    put(
        &s,
        &format!("/api/tasks/{id1}"),
        None,
        json!({"title": "a3"}),
    )
    .await;
    let t1_reopened = put(
        &s,
        &format!("/api/tasks/{id1}"),
        None,
        json!({"done": false}),
    )
    .await;
    let t2_moved = put(
        &s,
        &format!("/api/tasks/{id2}"),
        None,
        json!({"project": "p1"}),
    )
    .await;
    assert_eq!(s.delete(&format!("/api/tasks/{id1}")).await.status, 204);
    let barrier = s
        .create(
            "tasks",
            json!({"title": "z", "project": "p1", "done": false}),
        )
        .await;
    let got: Vec<_> = frames_until(&mut ws, &barrier["id"])
        .await
        .iter()
        .map(change_of)
        .collect();
    assert_eq!(
        got,
        [
            ch("open-p1", "added", &t1),
            // t2 (another project) is not mentioned, nor t1 renamed while done.
            ch("open-p1", "modified", &t1_renamed),
            // Left the filter but still readable: the record as it is now.
            ch("open-p1", "removed", &t1_done),
            ch("open-p1", "added", &t1_reopened),
            ch("open-p1", "added", &t2_moved),
            ch("open-p1", "removed", &json!({"id": id1})),
        ]
    );
    ws.silent(SHORT).await;
}

#[tokio::test]
async fn ownership_transfer_and_request_auth_filters() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let url = |who: &Session| format!("{}?token={}", s.ws_url(), who.token);
    let (mut wa, _) = Ws::connect(&url(&alice)).await;
    let (mut wb, _) = Ws::connect(&url(&bob)).await;
    for ws in [&mut wa, &mut wb] {
        subscribe(ws, "notes.*", "done = false", "open").await;
        subscribe(ws, "tasks.*", "assignee = @request.auth.id", "assigned").await;
    }

    // An owner-only note handed from alice to bob by an admin.
    let note = s
        .create_as(&alice, "notes", json!({"title": "private", "done": false}))
        .await;
    let nid = note["id"].as_str().unwrap();
    assert_eq!(change_of(&wa.next().await), ch("open", "added", &note));
    let moved = put(
        &s,
        &format!("/api/notes/{nid}"),
        Some(&admin.token),
        json!({"user_id": bob.id}),
    )
    .await;
    // Alice may no longer read it: `{id}`, never its fields.
    assert_eq!(
        change_of(&wa.next().await),
        ch("open", "removed", &json!({"id": nid}))
    );
    assert_eq!(change_of(&wb.next().await), ch("open", "added", &moved));
    wa.silent(SHORT).await;

    // `@request.auth.id` is each connection's own user.
    let task = s
        .create("tasks", json!({"title": "t", "assignee": alice.id}))
        .await;
    let tid = task["id"].as_str().unwrap();
    assert_eq!(change_of(&wa.next().await), ch("assigned", "added", &task));
    let reassigned = put(
        &s,
        &format!("/api/tasks/{tid}"),
        None,
        json!({"assignee": bob.id}),
    )
    .await;
    assert_eq!(
        change_of(&wa.next().await),
        ch("assigned", "removed", &reassigned)
    );
    assert_eq!(
        change_of(&wb.next().await),
        ch("assigned", "added", &reassigned)
    );

    // Alice's connection becomes bob: nothing for the switch itself; later events are
    // decided with the new identity.
    wa.send(json!({"action": "auth", "token": bob.token})).await;
    assert_eq!(wa.next().await["type"], "authenticated");
    wa.silent(SHORT).await;
    let renamed = put(
        &s,
        &format!("/api/tasks/{tid}"),
        None,
        json!({"title": "t2"}),
    )
    .await;
    assert_eq!(
        change_of(&wa.next().await),
        ch("assigned", "modified", &renamed)
    );
    assert_eq!(
        change_of(&wb.next().await),
        ch("assigned", "modified", &renamed)
    );
    s.create("tasks", json!({"title": "u", "assignee": alice.id}))
        .await;
    wa.silent(SHORT).await;
    wb.silent(SHORT).await;
}

#[tokio::test]
async fn plain_and_filtered_subscriptions_of_one_channel_on_one_connection() {
    let s = server().await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("tasks.*").await;
    subscribe(&mut ws, "tasks.*", "project = 'p1'", "p1").await;
    subscribe(&mut ws, "tasks.*", "done = false", "open").await;
    subscribe(&mut ws, "tasks.*", "project = 'p2'", "p2").await;
    let t = s
        .create("tasks", json!({"project": "p1", "done": false}))
        .await;
    // One plain frame, then one per matching filtered subscription, all with the same event.
    let plain = ws.next().await;
    assert_eq!(plain, json!({"type": "event", "event": plain["event"]}));
    assert_eq!(plain["event"]["payload"], t);
    let a = ws.next().await;
    let b = ws.next().await;
    assert_eq!(change_of(&a), ch("p1", "added", &t));
    assert_eq!(change_of(&b), ch("open", "added", &t));
    assert_eq!(a["event"], plain["event"]);
    assert_eq!(b["event"], plain["event"]);
    ws.silent(SHORT).await;

    // Unsubscribing by id leaves the others.
    ws.send(json!({"action": "unsubscribe", "id": "p1"})).await;
    assert_eq!(ws.next().await, json!({"type": "unsubscribed", "id": "p1"}));
    let t2 = s
        .create("tasks", json!({"project": "p1", "done": false}))
        .await;
    assert_eq!(ws.next().await["event"]["payload"], t2);
    assert_eq!(change_of(&ws.next().await), ch("open", "added", &t2));
    ws.silent(SHORT).await;
    // By channel: the plain subscription only (v1's meaning).
    ws.send(json!({"action": "unsubscribe", "channel": "tasks.*"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "unsubscribed", "channel": "tasks.*"})
    );
    let t3 = s
        .create("tasks", json!({"project": "p2", "done": true}))
        .await;
    assert_eq!(change_of(&ws.next().await), ch("p2", "added", &t3));
    ws.silent(SHORT).await;
    // Replacing by id: acknowledged again, the new filter from then on.
    subscribe(&mut ws, "tasks.*", "project = 'p3'", "p2").await;
    s.create("tasks", json!({"project": "p2", "done": true}))
        .await;
    let t5 = s
        .create("tasks", json!({"project": "p3", "done": true}))
        .await;
    assert_eq!(change_of(&ws.next().await), ch("p2", "added", &t5));
    ws.silent(SHORT).await;
}

#[tokio::test]
async fn invalid_filters_and_ids_keep_the_connection() {
    let s = server().await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    let bad = [
        (
            json!({"action": "subscribe", "channel": "tasks.*", "filter": "vews > 10", "id": "x"}),
            json!({"type": "error", "code": "invalid_filter", "message": "filter: unknown field \"vews\" at 1"}),
        ),
        (
            json!({"action": "subscribe", "channel": "tasks.*", "filter": "done > false"}),
            json!({"type": "error", "code": "invalid_filter", "message": "filter: cannot use > with boolean field \"done\" at 6"}),
        ),
        (
            json!({"action": "subscribe", "channel": "tasks.created", "filter": "done = false"}),
            json!({"type": "error", "code": "invalid_filter", "message": "filter: filters apply to the channel \"<collection>.*\" of an existing collection, not \"tasks.created\""}),
        ),
        (
            json!({"action": "subscribe", "channel": "nope.*", "filter": "done = false"}),
            json!({"type": "error", "code": "invalid_filter", "message": "filter: filters apply to the channel \"<collection>.*\" of an existing collection, not \"nope.*\""}),
        ),
        (
            json!({"action": "subscribe", "channel": "tasks.*", "filter": 5}),
            json!({"type": "error", "code": "invalid_filter", "message": "filter: must be a string"}),
        ),
        (
            json!({"action": "subscribe", "channel": "tasks.*", "filter": "done = false", "id": ""}),
            json!({"type": "error", "code": "invalid_id", "message": "id must be a string of 1 to 200 characters"}),
        ),
        (
            json!({"action": "unsubscribe", "id": 7}),
            json!({"type": "error", "code": "invalid_id", "message": "id must be a string of 1 to 200 characters"}),
        ),
    ];
    for (msg, err) in bad {
        ws.send(msg.clone()).await;
        assert_eq!(ws.next().await, err, "{msg}");
    }
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
    // Nothing was subscribed; a good filter still works on the same connection.
    s.create("tasks", json!({"done": false})).await;
    ws.silent(SHORT).await;
    subscribe(&mut ws, "tasks.*", "done = false", "x").await;
    let t = s.create("tasks", json!({"done": false})).await;
    assert_eq!(change_of(&ws.next().await), ch("x", "added", &t));
    // A filter without an id is named by its channel.
    ws.send(json!({"action": "subscribe", "channel": "tasks.*", "filter": "done = true"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "subscribed", "channel": "tasks.*", "id": "tasks.*"})
    );
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let r = http
        .post(format!("{url}/api/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn update(http: &reqwest::Client, url: &str, id: &Value, body: Value) -> Value {
    let r = http
        .put(format!("{url}/api/tasks/{}", id.as_str().unwrap()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_filtered_subscription_resumes_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    write_collections(dir.path(), &collections());
    std::fs::write(dir.path().join("bakend.json"), "{}").unwrap();
    let http = reqwest::Client::new();
    let ws_url = |bak: &BakProcess| format!("ws://127.0.0.1:{}/api/realtime", bak.port);

    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, connected) = Ws::connect(&ws_url(&bak)).await;
    let epoch = connected["epoch"].as_str().unwrap().to_string();
    let filter = "project = 'p1' && done = false";
    subscribe(&mut ws, "tasks.*", filter, "open-p1").await;
    let t1 = post(&http, &bak.url(), json!({"project": "p1", "done": false})).await;
    let frame = ws.next().await;
    assert_eq!(change_of(&frame), ch("open-p1", "added", &t1));
    let since = frame["event"]["seq"].as_u64().unwrap();
    drop(ws);

    // Missed while away.
    let t1_done = update(&http, &bak.url(), &t1["id"], json!({"done": true})).await;
    let t2 = post(&http, &bak.url(), json!({"project": "p2", "done": false})).await;
    let t3 = post(&http, &bak.url(), json!({"project": "p1", "done": false})).await;
    let t3_renamed = update(&http, &bak.url(), &t3["id"], json!({"title": "x"})).await;
    let r = http
        .delete(format!(
            "{}/api/tasks/{}",
            bak.url(),
            t3["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let t2_moved = update(&http, &bak.url(), &t2["id"], json!({"project": "p1"})).await;
    bak.signal(libc::SIGKILL);
    bak.wait_exit().await;

    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, connected) = Ws::connect(&ws_url(&bak)).await;
    assert_eq!(
        connected["epoch"],
        epoch.as_str(),
        "a crash keeps the epoch"
    );
    ws.send(
        json!({"action": "subscribe", "channel": "tasks.*", "filter": filter, "id": "open-p1",
                   "since": {"epoch": epoch, "seq": since}}),
    )
    .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "subscribed", "channel": "tasks.*", "id": "open-p1"})
    );
    let barrier = post(&http, &bak.url(), json!({"project": "p1", "done": false})).await;
    let frames = frames_until(&mut ws, &barrier["id"]).await;
    let at = frames
        .iter()
        .position(|f| f["type"] == "resumed")
        .expect("resumed");
    let resumed = &frames[at];
    assert_eq!(resumed["subscription"], "open-p1", "{resumed}");
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["channel"], "tasks.*");
    assert_eq!(at, frames.len() - 1, "nothing live before the barrier");
    let replay: Vec<_> = frames[..at].iter().map(change_of).collect();
    assert_eq!(
        replay,
        [
            ch("open-p1", "removed", &t1_done),
            ch("open-p1", "added", &t3),
            ch("open-p1", "modified", &t3_renamed),
            ch("open-p1", "removed", &json!({"id": t3["id"]})),
            ch("open-p1", "added", &t2_moved),
        ]
    );
    let seqs: Vec<u64> = frames[..at]
        .iter()
        .map(|f| f["event"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > since,
        "{seqs:?}"
    );
    assert!(
        seqs.iter()
            .all(|s| *s <= resumed["lastSeq"].as_u64().unwrap())
    );
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}

/// An expression read rule (`published = true || user_id = @request.auth.id`): a record that
/// stops being readable leaves a filtered subscription with `removed` and only its id, one
/// that becomes readable is `added`, and plain subscribers follow the same rule.
#[tokio::test]
async fn expression_rules_decide_what_a_subscription_sees() {
    let s = TestServer::start_with_env(
        &[json!({"name": "posts", "fields": [
            {"name": "title", "type": "string"},
            {"name": "published", "type": "boolean"},
            {"name": "user_id", "type": "string"}],
            "permissions": {"create": "authenticated",
                            "read": "published = true || user_id = @request.auth.id",
                            "update": "user_id = @request.auth.id",
                            "delete": "user_id = @request.auth.id"}})],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", ADMIN)],
    )
    .await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let (mut ws, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), bob.token)).await;
    subscribe(&mut ws, "posts.*", "title ~ 'news'", "news").await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*"}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let write = |m: Method, path: String, body: Option<Value>| {
        let (s, token) = (&s, alice.token.clone());
        async move {
            let r = s.call(m, &path, Some(&token), body.as_ref()).await;
            assert!(r.status < 300, "{}", r.text);
            if r.text.is_empty() {
                Value::Null
            } else {
                r.json()
            }
        }
    };
    // A draft of alice's: bob cannot read it, so nothing reaches him.
    let draft = write(
        Method::POST,
        "/api/posts".into(),
        Some(json!({"title": "news draft"})),
    )
    .await;
    let path = format!("/api/posts/{}", draft["id"].as_str().unwrap());
    // Published: it enters bob's read set and his filter.
    write(Method::PUT, path.clone(), Some(json!({"published": true}))).await;
    // Unpublished again: bob loses access — removed, with the id only.
    write(
        Method::PUT,
        path.clone(),
        Some(json!({"published": false, "title": "news (secret)"})),
    )
    .await;
    write(Method::DELETE, path.clone(), None).await;
    // A barrier bob can read.
    let barrier = write(
        Method::POST,
        "/api/posts".into(),
        Some(json!({"title": "x", "published": true})),
    )
    .await;
    let frames = frames_until(&mut ws, &barrier["id"]).await;
    let id = draft["id"].clone();
    let filtered: Vec<(String, String, Value)> = frames
        .iter()
        .filter(|f| f.get("subscription").is_some())
        .map(change_of)
        .map(|(s, c, p)| (s, c, p["id"].clone()))
        .collect();
    assert_eq!(
        filtered,
        [ch("news", "added", &id), ch("news", "removed", &id)],
        "{frames:#?}"
    );
    let removed = frames.iter().find(|f| f["change"] == "removed").unwrap();
    assert_eq!(
        removed["event"]["payload"],
        json!({"id": id}),
        "only the id"
    );
    // The plain subscription sees the update that made it readable, nothing else of it.
    let plain: Vec<&str> = frames
        .iter()
        .filter(|f| f.get("subscription").is_none() && f["event"]["payload"]["id"] == id)
        .map(|f| f["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(plain, ["posts.updated"], "{frames:#?}");
    let _ = bob;
}
