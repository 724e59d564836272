//! Durable realtime (issue 9): events are journaled with a `seq`, a reconnecting client resumes
//! with `since` and gets exactly what it missed, then live events, with no gap and no duplicate.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestServer, eventually_within};
use crate::ws::{Next, Ws};

fn posts() -> Vec<Value> {
    vec![
        json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]}),
        json!({"name": "notes", "fields": [{"name": "title", "type": "string"}, {"name": "user_id", "type": "string"}],
               "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}}),
    ]
}

/// Receives frames until the event about `barrier` (a record id); returns the frames before it
/// (events and `resumed`), asserting the socket stays open.
async fn frames_until(ws: &mut Ws, barrier: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match ws.poll(Duration::from_secs(20)).await {
            Next::Frame(v) => {
                if v["type"] == "event" && v["event"]["payload"]["id"] == barrier {
                    return out;
                }
                out.push(v);
            }
            Next::Closed(c, r) => panic!("closed {c} {r} after {} frames", out.len()),
            Next::Silent => panic!("barrier {barrier} not received; got {} frames", out.len()),
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["seq"].as_u64().expect("seq"))
        .collect()
}

/// Checks a resumed stream: events after `since` in strictly increasing seq order, exactly one
/// `resumed` (recovered) splitting replay (≤ lastSeq) from live (> lastSeq).
fn check_resumed(frames: &[Value], channel: &str, since: u64) -> u64 {
    let resumed: Vec<_> = frames.iter().filter(|f| f["type"] == "resumed").collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["channel"], channel);
    assert_eq!(resumed[0]["recovered"], true, "{:?}", resumed[0]);
    let last = resumed[0]["lastSeq"].as_u64().unwrap();
    let at = frames.iter().position(|f| f["type"] == "resumed").unwrap();
    let (replay, live) = (seqs(&frames[..at]), seqs(&frames[at..]));
    assert!(
        replay.iter().all(|s| *s > since && *s <= last),
        "replay {replay:?} / {last}"
    );
    assert!(
        live.iter().all(|s| *s > last),
        "live after {last}: {live:?}"
    );
    let all = seqs(frames);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "not strictly increasing: {all:?}"
    );
    last
}

async fn connect_epoch(s: &TestServer) -> (Ws, String) {
    let (ws, connected) = Ws::connect(&s.ws_url()).await;
    let epoch = connected["epoch"]
        .as_str()
        .expect("connected carries the epoch")
        .to_string();
    (ws, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_resumes_with_exactly_what_it_missed_under_concurrent_writes() {
    let s = TestServer::start(&posts()).await;
    let (mut ws, epoch) = connect_epoch(&s).await;
    ws.subscribe("posts.*").await;
    let first = s.create("posts", json!({"title": "seen"})).await;
    let frame = ws.next().await;
    assert_eq!(frame["event"]["payload"]["id"], first["id"]);
    let since = frame["event"]["seq"].as_u64().unwrap();
    ws.reset();

    // 10,000 events while the client is away, from 4 concurrent writers; the client comes back
    // in the middle of it.
    const TOTAL: usize = 10_000;
    let url = s.url.clone();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, url) = (reqwest::Client::new(), url.clone());
            tokio::spawn(async move {
                for i in 0..TOTAL / 4 {
                    let r = http
                        .post(format!("{url}/api/posts"))
                        .json(&json!({"title": format!("w{w}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                }
            })
        })
        .collect();
    // Come back once about a third has been written.
    loop {
        let n = s.get("/api/posts?perPage=1").await.json()["totalItems"]
            .as_u64()
            .unwrap();
        if n as usize >= TOTAL / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since}}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "subscribed", "channel": "posts.*"})
    );
    for w in writers {
        w.await.unwrap();
    }
    let barrier = s.create("posts", json!({"title": "barrier"})).await;
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames, "posts.*", since);
    let got: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| &f["event"]["payload"]["id"])
        .collect();
    assert_eq!(got.len(), TOTAL, "every missed event exactly once");
    let unique: HashSet<_> = got.iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(unique.len(), TOTAL);
    assert!(
        !unique.contains(first["id"].as_str().unwrap()),
        "nothing from before since"
    );
    // Contiguous: only posts events were journaled after `since`.
    let all = seqs(&frames);
    assert_eq!(all.first().copied(), Some(since + 1));
    assert_eq!(all.last().copied(), Some(since + TOTAL as u64));
}

#[tokio::test]
async fn replay_applies_the_read_rule_to_each_event_as_it_was() {
    let s = TestServer::start(&posts()).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let (mut ws, connected) = Ws::connect(&format!("{}?token={}", s.ws_url(), alice.token)).await;
    let epoch = connected["epoch"].as_str().unwrap().to_string();
    ws.subscribe("notes.*").await;
    let mine = s
        .call(
            reqwest::Method::POST,
            "/api/notes",
            Some(&alice.token),
            Some(&json!({"title": "a0"})),
        )
        .await
        .json();
    let since = ws.next().await["event"]["seq"].as_u64().unwrap();
    assert_eq!(mine["title"], "a0");
    ws.reset();
    let mut expected = Vec::new();
    for i in 0..20 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        let r = s
            .call(
                reqwest::Method::POST,
                "/api/notes",
                Some(&who.token),
                Some(&json!({"title": format!("n{i}")})),
            )
            .await
            .json();
        if i % 2 == 0 {
            expected.push(r["id"].as_str().unwrap().to_string());
        }
    }
    // Alice's first note is deleted while she is away: she still gets the deletion.
    let del = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/notes/{}", mine["id"].as_str().unwrap()),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    expected.push(mine["id"].as_str().unwrap().to_string());
    let (mut ws, _) = Ws::connect(&format!(
        "{}?token={}&since={epoch}:{since}",
        s.ws_url(),
        alice.token
    ))
    .await;
    ws.subscribe("notes.*").await;
    let barrier = s
        .call(
            reqwest::Method::POST,
            "/api/notes",
            Some(&alice.token),
            Some(&json!({"title": "barrier"})),
        )
        .await
        .json();
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames, "notes.*", since);
    let got: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["payload"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got, expected,
        "only alice's notes, including the deletion, in order"
    );
}

#[tokio::test]
async fn resume_survives_a_restart_and_refuses_unknown_epochs_and_trimmed_ranges() {
    let s = TestServer::start_with_config(
        &posts(),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "realtime": {"journalMaxEvents": 50, "journalSegmentEvents": 16}}"#,
    )
    .await;
    let (mut ws, epoch) = connect_epoch(&s).await;
    ws.subscribe("posts.*").await;
    s.create("posts", json!({"title": "seen"})).await;
    let since = ws.next().await["event"]["seq"].as_u64().unwrap();
    drop(ws);
    let mut before = Vec::new();
    for i in 0..10 {
        before.push(s.create("posts", json!({"title": format!("b{i}")})).await["id"].clone());
    }
    let dir = s.shutdown().await;

    let s = TestServer::start_in(dir).await;
    let (mut ws, epoch2) = connect_epoch(&s).await;
    assert_eq!(epoch2, epoch, "a restart keeps the journal's epoch");
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let barrier = s.create("posts", json!({"title": "after"})).await;
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames, "posts.*", since);
    let ids: Vec<Value> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["payload"]["id"].clone())
        .collect();
    assert_eq!(ids, before);

    // Another epoch: not recoverable, and live delivery starts at once.
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": "ep_other", "seq": 1}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let resumed = ws.next().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["recovered"], false);
    let live = s.create("posts", json!({"title": "live"})).await;
    assert_eq!(ws.next().await["event"]["payload"]["id"], live["id"]);

    // Past retention (50 events, in segments of 16): not recoverable once the trimmer has run,
    // which drops whole segments and keeps at least the newest 50 events.
    for i in 0..120 {
        s.create("posts", json!({"title": format!("t{i}")})).await;
    }
    let dir = s.dir.path().to_path_buf();
    let journaled = || -> u64 {
        crate::harness::with_project_db(&dir, |c| {
            bakend_store::db::journal::stored_events(c).unwrap()
        })
    };
    let trimmed = eventually_within(Duration::from_secs(10), || {
        let n = journaled();
        (50..50 + 16).contains(&n)
    })
    .await;
    assert!(
        trimmed,
        "the journal was not trimmed to its retention: {}",
        journaled()
    );
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since}}))
        .await;
    ws.next().await;
    let resumed = ws.next().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["recovered"], false, "{resumed}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_slow_consumer_closed_with_4008_resumes_with_nothing_lost() {
    let s = TestServer::start_with_config(
        &posts(),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "realtime": {"queueCapacity": 8}}"#,
    )
    .await;
    let (mut ws, epoch) = connect_epoch(&s).await;
    ws.subscribe("posts.*").await;
    s.create("posts", json!({"title": "first"})).await;
    let since = ws.next().await["event"]["seq"].as_u64().unwrap();
    // Stop reading while many events are sent; the server closes the socket with 4008.
    let mut created = Vec::new();
    let big = "x".repeat(20_000);
    for i in 0..300 {
        created.push(
            s.create("posts", json!({"title": format!("{i}{big}")}))
                .await["id"]
                .clone(),
        );
    }
    assert_eq!(
        ws.closed(Duration::from_secs(20)).await,
        (4008, "slow_consumer".into())
    );
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since}}))
        .await;
    ws.next().await;
    let barrier = s.create("posts", json!({"title": "barrier"})).await;
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames, "posts.*", since);
    let ids: Vec<Value> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["payload"]["id"].clone())
        .collect();
    assert_eq!(ids, created);
}

#[tokio::test]
async fn per_record_channels_follow_one_record_and_its_owner() {
    let s = TestServer::start_with_env(
        &posts(),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", "root@example.com")],
    )
    .await;
    let admin = s.register("root@example.com").await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let p1 = s.create("posts", json!({"title": "one"})).await;
    let p2 = s.create("posts", json!({"title": "two"})).await;
    let id1 = p1["id"].as_str().unwrap();
    let (mut all, _) = Ws::connect(&s.ws_url()).await;
    all.subscribe(&format!("posts.{id1}.*")).await;
    let (mut upd, _) = Ws::connect(&s.ws_url()).await;
    upd.subscribe(&format!("posts.{id1}.updated")).await;
    s.put(
        &format!("/api/posts/{}", p2["id"].as_str().unwrap()),
        &json!({"title": "2b"}),
    )
    .await;
    s.put(&format!("/api/posts/{id1}"), &json!({"title": "1b"}))
        .await;
    assert_eq!(s.delete(&format!("/api/posts/{id1}")).await.status, 204);
    let e = all.next().await;
    assert_eq!(
        (
            e["event"]["type"].as_str(),
            e["event"]["payload"]["title"].as_str()
        ),
        (Some("posts.updated"), Some("1b"))
    );
    assert_eq!(all.next().await["event"]["type"], "posts.deleted");
    assert_eq!(upd.next().await["event"]["payload"]["title"], "1b");
    upd.silent(Duration::from_millis(300)).await;
    all.silent(Duration::from_millis(300)).await;

    // An owner-only note moves from alice to bob: each sees it while it is theirs.
    let note = s
        .call(
            reqwest::Method::POST,
            "/api/notes",
            Some(&alice.token),
            Some(&json!({"title": "n"})),
        )
        .await
        .json();
    let nid = note["id"].as_str().unwrap();
    let ch = format!("notes.{nid}.*");
    let (mut wa, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), alice.token)).await;
    wa.subscribe(&ch).await;
    let (mut wb, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), bob.token)).await;
    wb.subscribe(&ch).await;
    let r = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/notes/{nid}"),
            Some(&alice.token),
            Some(&json!({"title": "still alice"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(wa.next().await["event"]["payload"]["title"], "still alice");
    let r = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/notes/{nid}"),
            Some(&admin.token),
            Some(&json!({"user_id": bob.id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        wb.next().await["event"]["payload"]["user_id"],
        bob.id.as_str()
    );
    wa.silent(Duration::from_millis(300)).await;
    wb.silent(Duration::from_millis(100)).await;

    // A channel that is not a record's: valid, simply quiet.
    let (mut other, _) = Ws::connect(&s.ws_url()).await;
    other.subscribe("posts.rec_missing.*").await;
    s.create("posts", json!({"title": "three"})).await;
    other.silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_per_record_snapshot_comes_first_and_respects_the_read_rule() {
    let s = TestServer::start(&posts()).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let post = s.create("posts", json!({"title": "v1"})).await;
    let id = post["id"].as_str().unwrap();
    let channel = format!("posts.{id}.*");
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": channel, "snapshot": true}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["channel"], channel.as_str());
    assert_eq!(snap["collection"], "posts");
    assert_eq!(snap["record"], post);
    let at = snap["seq"].as_u64().unwrap();
    s.put(&format!("/api/posts/{id}"), &json!({"title": "v2"}))
        .await;
    let e = ws.next().await;
    assert_eq!(e["event"]["payload"]["title"], "v2");
    assert!(e["event"]["seq"].as_u64().unwrap() > at);

    // Owner-only: bob gets a null record for alice's note, alice gets it.
    let note = s
        .call(
            reqwest::Method::POST,
            "/api/notes",
            Some(&alice.token),
            Some(&json!({"title": "mine"})),
        )
        .await
        .json();
    let ch = format!("notes.{}.*", note["id"].as_str().unwrap());
    for (who, visible) in [(&bob, false), (&alice, true)] {
        let (mut w, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), who.token)).await;
        w.send(json!({"action": "subscribe", "channel": ch, "snapshot": true}))
            .await;
        w.next().await;
        let snap = w.next().await;
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(!snap["record"].is_null(), visible, "{snap}");
    }
    // A missing record: null. Neither a per-record nor a collection channel: an error frame,
    // the socket stays. (`posts.*` has a collection snapshot: it/snapshots.rs.)
    ws.send(json!({"action": "subscribe", "channel": "posts.rec_nope.*", "snapshot": true}))
        .await;
    ws.next().await;
    assert!(ws.next().await["record"].is_null());
    ws.send(json!({"action": "subscribe", "channel": "posts.created", "snapshot": true}))
        .await;
    ws.next().await;
    assert_eq!(ws.next().await["code"], "invalid_snapshot");
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
}

fn bak_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    crate::harness::bak_in(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

async fn post(http: &reqwest::Client, url: &str, title: &str) -> Value {
    let r = http
        .post(format!("{url}/api/posts"))
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

fn ws_url(url: &str) -> String {
    format!("{}/api/realtime", url.replacen("http://", "ws://", 1))
}

#[tokio::test]
async fn resume_across_sigkill_and_sigterm_but_not_across_a_restore_from_backup() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(dir.path(), &posts());
    std::fs::write(dir.path().join("bakend.json"), "{}").unwrap();
    let http = reqwest::Client::new();

    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, connected) = Ws::connect(&ws_url(&bak.url())).await;
    let epoch = connected["epoch"].as_str().unwrap().to_string();
    ws.subscribe("posts.*").await;
    post(&http, &bak.url(), "seen").await;
    let since = ws.next().await["event"]["seq"].as_u64().unwrap();
    let out = bak_cli(dir.path(), &["backup", "create", "--output", "b.tar.gz"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut missed = Vec::new();
    for i in 0..20 {
        missed.push(post(&http, &bak.url(), &format!("m{i}")).await["id"].clone());
    }
    // SIGKILL: no graceful shutdown, the socket just dies.
    bak.signal(libc::SIGKILL);
    bak.wait_exit().await;
    drop(ws);

    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, connected) =
        Ws::connect(&format!("{}?since={epoch}:{since}", ws_url(&bak.url()))).await;
    assert_eq!(
        connected["epoch"],
        epoch.as_str(),
        "a crash keeps the epoch"
    );
    ws.subscribe("posts.*").await;
    let barrier = post(&http, &bak.url(), "barrier").await;
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames, "posts.*", since);
    let ids: Vec<Value> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["payload"]["id"].clone())
        .collect();
    assert_eq!(ids, missed, "every event committed before the crash, once");
    // The barrier's event is the next journaled one.
    let since2 = seqs(&frames).last().unwrap() + 1;
    drop(ws);
    let mut missed2 = Vec::new();
    for i in 0..5 {
        missed2.push(post(&http, &bak.url(), &format!("t{i}")).await["id"].clone());
    }
    // SIGTERM: a graceful restart.
    bak.signal(libc::SIGTERM);
    assert!(bak.wait_exit().await.success());
    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, _) = Ws::connect(&ws_url(&bak.url())).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since2}}))
        .await;
    let barrier = post(&http, &bak.url(), "barrier2").await;
    let frames = frames_until(&mut ws, barrier["id"].as_str().unwrap()).await;
    check_resumed(&frames[1..], "posts.*", since2);
    let ids: Vec<Value> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["event"]["payload"]["id"].clone())
        .collect();
    assert_eq!(
        ids, missed2,
        "every event committed before the graceful stop, once"
    );
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;

    // Restoring the backup rewinds history: positions from after it cannot be resumed.
    let out = bak_cli(dir.path(), &["backup", "restore", "b.tar.gz", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let (mut ws, connected) = Ws::connect(&ws_url(&bak.url())).await;
    assert_ne!(
        connected["epoch"],
        epoch.as_str(),
        "a restore starts a new epoch"
    );
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": since}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let resumed = ws.next().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["recovered"], false);
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}
