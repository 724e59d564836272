//! Collection snapshots (issue 16): a `<collection>.*` subscription with `snapshot: true` gets
//! the records a REST list would give it as of a journal position, then exactly the changes
//! after that position — no gap, no duplicate — however busy the collection is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestServer;
use crate::ws::{Next, Ws};

const ADMIN: &str = "root@example.com";
const FILTER: &str = "project = 'p1' && done = false";

fn collections() -> Vec<Value> {
    vec![
        json!({"name": "tasks", "fields": [
            {"name": "title", "type": "string"},
            {"name": "project", "type": "string"},
            {"name": "done", "type": "boolean"},
            {"name": "n", "type": "integer"}]}),
        json!({"name": "notes", "fields": [
            {"name": "title", "type": "string"},
            {"name": "user_id", "type": "string"}],
            "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}}),
        json!({"name": "posts", "fields": [
            {"name": "title", "type": "string"},
            {"name": "published", "type": "boolean"},
            {"name": "user_id", "type": "string"}],
            "permissions": {"create": "authenticated",
                            "read": "published = true || user_id = @request.auth.id",
                            "update": "user_id = @request.auth.id",
                            "delete": "user_id = @request.auth.id"}}),
    ]
}

async fn server() -> TestServer {
    TestServer::start_with_env(
        &collections(),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "api": {"defaultPerPage": 5, "maxPerPage": 1000}}"#,
        &[("BAKEND_ADMIN_EMAIL", ADMIN)],
    )
    .await
}

/// A client's view of a live query: the snapshot, then each change applied by id. Checks the
/// hand-over: `added` only for a record it does not hold, `modified`/`removed` only for one it
/// does.
#[derive(Default)]
struct View {
    records: HashMap<String, Value>,
}

impl View {
    fn apply_snapshot(&mut self, f: &Value, sub: &str) -> u64 {
        assert_eq!(f["type"], "snapshot", "{f}");
        assert_eq!(f["subscription"], sub, "{f}");
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["type", "subscription", "items", "seq", "truncated"],
            "{f}"
        );
        for r in f["items"].as_array().unwrap() {
            self.records
                .insert(r["id"].as_str().unwrap().to_string(), r.clone());
        }
        f["seq"].as_u64().unwrap()
    }

    fn apply(&mut self, f: &Value, sub: &str, after: u64) {
        assert_eq!(f["type"], "event", "{f}");
        assert_eq!(f["subscription"], sub, "{f}");
        let seq = f["event"]["seq"].as_u64().unwrap();
        assert!(
            seq > after,
            "a change the snapshot (seq {after}) reflects: {f}"
        );
        let p = &f["event"]["payload"];
        let id = p["id"].as_str().unwrap().to_string();
        match f["change"].as_str().unwrap() {
            "added" => assert!(self.records.insert(id, p.clone()).is_none(), "dup {f}"),
            "modified" => assert!(self.records.insert(id, p.clone()).is_some(), "gap {f}"),
            "removed" => assert!(self.records.remove(&id).is_some(), "gap {f}"),
            other => panic!("change {other}"),
        }
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const WRITERS: usize = 4;
const WRITES: usize = 10_000;
/// Records each writer keeps at most: at most 4 × 249 = 996 match the filter.
const POOL: usize = 249;

/// One writer: creates, updates (moving records in and out of the filter) and deletes its own
/// records, keeping at most `POOL` of them.
async fn writer(
    http: reqwest::Client,
    url: String,
    w: usize,
    done: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1234_5678));
    let mut mine: Vec<String> = Vec::new();
    for i in 0..WRITES / WRITERS {
        let body = |rng: &mut Rng| {
            json!({
                "title": format!("w{w}-{i}"),
                "project": if rng.below(3) == 0 { "p2" } else { "p1" },
                "done": rng.below(3) == 0,
                "n": rng.below(1000),
            })
        };
        let op = rng.below(10);
        let r = if mine.is_empty() || (mine.len() < POOL && op < 4) {
            let r = http
                .post(format!("{url}/api/tasks"))
                .json(&body(&mut rng))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "create: {}", r.status());
            let v: Value = r.json().await?;
            mine.push(v["id"].as_str().unwrap_or_default().to_string());
            continue;
        } else if op < 8 {
            let id = &mine[rng.below(mine.len() as u64) as usize];
            http.put(format!("{url}/api/tasks/{id}"))
                .json(&body(&mut rng))
                .send()
                .await?
        } else {
            let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            http.delete(format!("{url}/api/tasks/{id}")).send().await?
        };
        anyhow::ensure!(r.status().is_success(), "write: {}", r.status());
        done.fetch_add(1, Relaxed);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_hand_over_under_concurrent_writes() {
    let started = Instant::now();
    let s = server().await;
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(s.http.clone(), s.url.clone(), w, done.clone())))
        .collect();
    // Subscribe in the middle of the writes.
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    while done.load(Relaxed) < WRITES / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ws.send(
        json!({"action": "subscribe", "channel": "tasks.*", "filter": FILTER, "id": "open",
        "snapshot": true, "perPage": 1000}),
    )
    .await;
    // Read while the writers write (a client that stops reading is a slow consumer).
    let reader = tokio::spawn(async move {
        let mut view = View::default();
        let mut seq = None;
        let mut changes = 0usize;
        loop {
            match ws.poll(Duration::from_secs(30)).await {
                Next::Frame(f) if f["type"] == "subscribed" => {
                    assert_eq!(
                        f,
                        json!({"type": "subscribed", "channel": "tasks.*", "id": "open"})
                    );
                }
                Next::Frame(f) if f["type"] == "snapshot" => {
                    assert!(seq.is_none(), "two snapshots");
                    assert_eq!(f["truncated"], false, "{f}");
                    seq = Some(view.apply_snapshot(&f, "open"));
                }
                Next::Frame(f) => {
                    let after = seq.unwrap_or_else(|| panic!("a frame before the snapshot: {f}"));
                    let barrier = f["event"]["payload"]["title"] == "barrier";
                    view.apply(&f, "open", after);
                    changes += 1;
                    if barrier {
                        return (view, seq, changes);
                    }
                }
                Next::Closed(c, r) => panic!("closed {c} {r}"),
                Next::Silent => panic!("silent after {changes} change(s)"),
            }
        }
    });
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let barrier = s
        .create(
            "tasks",
            json!({"title": "barrier", "project": "p1", "done": false, "n": 0}),
        )
        .await;
    let (view, seq, changes) = reader.await.unwrap();
    assert!(view.records.contains_key(barrier["id"].as_str().unwrap()));
    let q = format!(
        "/api/tasks?filter={}&perPage=1000",
        FILTER
            .replace(' ', "%20")
            .replace('&', "%26")
            .replace('\'', "%27")
            .replace('=', "%3D")
    );
    let list = s.get(&q).await.json();
    assert_eq!(list["totalItems"].as_u64(), Some(view.records.len() as u64));
    let want: HashMap<String, Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let mut missing: Vec<&String> = want
        .keys()
        .filter(|k| !view.records.contains_key(*k))
        .collect();
    let mut extra: Vec<&String> = view
        .records
        .keys()
        .filter(|k| !want.contains_key(*k))
        .collect();
    missing.sort();
    extra.sort();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (id, r) in &want {
        assert_eq!(&view.records[id], r, "record {id}");
    }
    eprintln!(
        "hand-over at seq {seq:?}: {} records, {changes} change(s) after, {:?}",
        want.len(),
        started.elapsed()
    );
}

/// Subscribes with a snapshot; checks the ack and returns the snapshot frame.
async fn snapshot(ws: &mut Ws, msg: Value) -> Value {
    ws.send(msg).await;
    let ack = ws.next().await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    ws.next().await
}

fn ids(f: &Value) -> Vec<&str> {
    f["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{f}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn snapshots_select_what_the_rest_list_selects() {
    let s = server().await;
    let mut made = Vec::new();
    for n in 0..8 {
        let r = s
            .create(
                "tasks",
                json!({"title": format!("t{n}"), "project": "p1", "done": n % 2 == 0, "n": n}),
            )
            .await;
        made.push(r);
    }
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    // Defaults: `api.defaultPerPage` (5), newest first; truncated as more match.
    let f = snapshot(
        &mut ws,
        json!({"action": "subscribe", "channel": "tasks.*", "snapshot": true}),
    )
    .await;
    assert_eq!(f["subscription"], "tasks.*");
    assert_eq!(f["truncated"], true);
    let rest = s.get("/api/tasks").await.json();
    assert_eq!(f["items"], rest["items"]);
    // A filter, a sort and perPage; the items are exactly REST's.
    let f = snapshot(
        &mut ws,
        json!({"action": "subscribe", "channel": "tasks.*", "id": "odd", "filter": "done = false",
            "sort": "n", "perPage": 3, "snapshot": true}),
    )
    .await;
    let rest = s
        .get("/api/tasks?filter=done%20%3D%20false&sort=n&perPage=3")
        .await
        .json();
    assert_eq!(f["items"], rest["items"]);
    assert_eq!(f["truncated"], true);
    assert_eq!(ids(&f).len(), 3);
    // A bad sort key: an error; the subscription stands (changes arrive).
    ws.send(
        json!({"action": "subscribe", "channel": "tasks.*", "id": "bad", "sort": "nope",
        "snapshot": true}),
    )
    .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let e = ws.next().await;
    assert_eq!(e["code"], "invalid_snapshot", "{e}");
    assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    ws.send(json!({"action": "subscribe", "channel": "tasks.*", "perPage": 0, "snapshot": true}))
        .await;
    assert_eq!(ws.next().await["code"], "invalid_snapshot");
    ws.send(json!({"action": "unsubscribe", "id": "odd"})).await;
    ws.send(json!({"action": "unsubscribe", "channel": "tasks.*"}))
        .await;
    assert_eq!(ws.next().await["type"], "unsubscribed");
    assert_eq!(ws.next().await["type"], "unsubscribed");
    s.create("tasks", json!({"title": "new"})).await;
    let f = ws.next().await;
    assert_eq!(
        (&f["subscription"], &f["change"]),
        (&json!("bad"), &json!("added"))
    );

    // The owner rule: each user's snapshot holds their records only, admins' everyone's.
    let (a, b) = (
        s.register("a@example.com").await,
        s.register("b@example.com").await,
    );
    for (who, n) in [(&a, 2), (&b, 3)] {
        for i in 0..n {
            let r = s
                .http
                .post(format!("{}/api/notes", s.url))
                .bearer_auth(&who.token)
                .json(&json!({"title": format!("{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }
    let sub =
        json!({"action": "subscribe", "channel": "notes.*", "snapshot": true, "perPage": 100});
    for (who, n) in [(&a, 2), (&b, 3)] {
        let bearer = format!("Bearer {}", who.token);
        let (mut ws, _) =
            Ws::connect_with(&s.ws_url(), &[("Authorization", bearer.as_str())]).await;
        let f = snapshot(&mut ws, sub.clone()).await;
        let items = f["items"].as_array().unwrap();
        assert_eq!(items.len(), n, "{f}");
        assert!(items.iter().all(|r| r["user_id"] == who.id.as_str()), "{f}");
    }
    // Anonymous: refused like `GET /api/notes` (401), the subscription stands.
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(sub).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    assert_eq!(ws.next().await["code"], "snapshot_failed");
}

/// An expression read rule (`published = true || user_id = @request.auth.id`): each identity's
/// snapshot holds exactly what its REST list holds, the rule's `@request` values its own.
#[tokio::test]
async fn snapshots_follow_an_expression_read_rule() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    for (who, title, published) in [
        (&alice, "news 1", true),
        (&alice, "news draft", false),
        (&bob, "news 2", true),
        (&bob, "news bob draft", false),
        (&alice, "other", true),
    ] {
        let body = json!({"title": title, "published": published});
        let r = s
            .call(Method::POST, "/api/posts", Some(&who.token), Some(&body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let sub = json!({"action": "subscribe", "channel": "posts.*", "id": "news",
        "filter": "title ~ 'news'", "sort": "title", "snapshot": true, "perPage": 50});
    let rest_path = "/api/posts?filter=title%20~%20%27news%27&sort=title&perPage=50";
    for (who, want) in [
        (Some(&alice), vec!["news 1", "news 2", "news draft"]),
        (Some(&bob), vec!["news 1", "news 2", "news bob draft"]),
        (None, vec!["news 1", "news 2"]),
    ] {
        let url = match who {
            Some(w) => format!("{}?token={}", s.ws_url(), w.token),
            None => s.ws_url(),
        };
        let (mut ws, _) = Ws::connect(&url).await;
        let f = snapshot(&mut ws, sub.clone()).await;
        let titles: Vec<&str> = f["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, want, "{f}");
        let rest = s
            .call(Method::GET, rest_path, who.map(|w| w.token.as_str()), None)
            .await;
        assert_eq!(f["items"], rest.json()["items"]);
    }
}
