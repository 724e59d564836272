//! Several servers on one PostgreSQL database (docs/postgres.md, "Several servers"): a client of
//! any server sees every server's writes — each event once, in seq (commit) order, the same
//! sequence on every server — a trigger runs once (on the server that committed the write),
//! and a client resumes on another server than the one it left.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestServer, write_collections};
use crate::ws::{Next, Ws};

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[
            json!({"name": "posts", "fields": [{"name": "title", "type": "string"}, {"name": "n", "type": "integer"}]}),
            json!({"name": "audit", "fields": [{"name": "post_id", "type": "string"}]}),
        ],
    );
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("functions/audit.ts"),
        r#"import { onCreate } from "bakend/functions";
           onCreate("posts", async ({ record, records }) => {
             await records.create("audit", { post_id: record.id });
           });"#,
    )
    .unwrap();
    dir
}

/// `n` events from `ws`, as (seq, record id); fails after 20 s without one.
async fn events(ws: &mut Ws, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        match ws.poll(Duration::from_secs(20)).await {
            Next::Frame(f) if f["type"] == "event" => out.push((
                f["event"]["seq"].as_u64().unwrap(),
                f["event"]["payload"]["id"].as_str().unwrap().to_string(),
            )),
            Next::Frame(_) => {}
            Next::Closed(code, why) => panic!("closed {code} {why} after {} events", out.len()),
            Next::Silent => panic!("silent after {} of {n} events: {out:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_every_server_see_every_write_once_in_commit_order() {
    let Some(pg) =
        crate::pg::reachable_server("clients_of_every_server_see_every_write_once_in_commit_order")
    else {
        return;
    };
    let database = crate::pg::new_database(&pg);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(
            TestServer::start_in_with_env(project(), &[("BAKEND_DATABASE", &database)]).await,
        );
    }
    let mut sockets = Vec::new();
    let mut epochs = Vec::new();
    for s in &servers {
        let (mut ws, connected) = Ws::connect(&s.ws_url()).await;
        epochs.push(connected["epoch"].clone());
        ws.subscribe("posts.*").await;
        ws.subscribe("audit.*").await;
        sockets.push(ws);
    }
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one journal, one epoch: {epochs:?}"
    );

    // Three writers, each through its own server, at once.
    const EACH: usize = 60;
    let mut writers = Vec::new();
    for (w, s) in servers.iter().enumerate() {
        let (http, url) = (s.http.clone(), s.url.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let r = http
                    .post(format!("{url}/api/posts"))
                    .json(&json!({"title": format!("w{w}"), "n": i}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // Each create, and the audit record its trigger writes: every journaled event.
    let mut seen = Vec::new();
    for ws in &mut sockets {
        seen.push(events(ws, 6 * EACH).await);
    }
    let first = seen[0][0].0;
    let contiguous: Vec<u64> = (first..first + (6 * EACH) as u64).collect();
    for (i, s) in seen.iter().enumerate() {
        let seqs: Vec<u64> = s.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, contiguous, "server {i}: every seq once, in order");
        assert_eq!(*s, seen[0], "server {i} saw the same sequence as server 0");
    }
    for ws in &mut sockets {
        assert!(
            matches!(ws.poll(Duration::from_millis(300)).await, Next::Silent),
            "nothing more"
        );
    }

    // A trigger ran once per create, on the server that committed it.
    let mut total = 0;
    for _ in 0..100 {
        total = servers[0].get("/api/audit?perPage=1").await.json()["totalItems"]
            .as_u64()
            .unwrap();
        if total >= (3 * EACH) as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Value = servers[0].get("/api/audit?perPage=1").await.json();
    assert_eq!(total, (3 * EACH) as u64);
    assert_eq!(after["totalItems"], json!(3 * EACH), "no trigger ran twice");

    // A client that leaves server 0 resumes on server 2 with what it missed, written on 1.
    let last_seen = seen[0].last().unwrap().0;
    drop(sockets);
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            servers[1]
                .create("posts", json!({"title": "missed", "n": i}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (mut ws, _) = Ws::connect(&servers[2].ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epochs[0], "seq": last_seen}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    // Replayed from the journal, or live if server 2 had not read them yet when the client
    // came: either way each once, in order, and the resume recovered.
    let (mut ids, mut resumed) = (Vec::new(), None);
    while ids.len() < missed.len() || resumed.is_none() {
        let f = ws.next().await;
        match f["type"].as_str() {
            Some("event") => ids.push(f["event"]["payload"]["id"].as_str().unwrap().to_string()),
            Some("resumed") => resumed = Some(f),
            _ => panic!("{f}"),
        }
    }
    assert_eq!(ids, missed);
    let resumed = resumed.unwrap();
    assert_eq!(resumed["recovered"], true, "{resumed}");
    for s in servers {
        s.shutdown().await;
    }
}

/// A job due every second, on three servers: each tick runs once, whichever server claims it,
/// and the history every server shows is the same, each run naming its node. A job that runs
/// longer than its interval never runs on two servers at once (a tick that finds it running on
/// another node is skipped; a manual run through another server is refused), and `bak jobs run`
/// in a server's project folder runs the job in that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduled_tick_runs_once_across_servers() {
    let Some(pg) = crate::pg::reachable_server("each_scheduled_tick_runs_once_across_servers")
    else {
        return;
    };
    let database = crate::pg::new_database(&pg);
    let admin = "root@example.com";
    let mut servers = Vec::new();
    for _ in 0..3 {
        let dir = project();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/tick.ts"),
            r#"export const schedule = "*/1 * * * * *"; export default async () => {};"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("jobs/slow.ts"),
            r#"export const schedule = "*/1 * * * * *";
               export default () => { const end = Date.now() + 2500; while (Date.now() < end) {} };"#,
        )
        .unwrap();
        servers.push(
            TestServer::start_in_with_env(
                dir,
                &[
                    ("BAKEND_DATABASE", &database),
                    ("BAKEND_ADMIN_EMAIL", admin),
                ],
            )
            .await,
        );
    }
    let begun = std::time::Instant::now();
    let token = servers[0].register(admin).await.token;
    let get = |s: &TestServer, path: &str| {
        let (s, path, token) = (s.url.clone(), path.to_string(), token.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{s}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut nodes = Vec::new();
    for s in &servers {
        nodes.push(
            get(s, "/api/admin/realtime").await["node"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // While a run of `slow` has just started on one node, a manual run through another server
    // is refused, naming that node.
    let mut refused = None;
    while refused.is_none() && begun.elapsed() < Duration::from_secs(8) {
        let runs = get(&servers[0], "/api/admin/jobs/slow/runs").await;
        let fresh = runs["items"].as_array().unwrap().iter().find(|r| {
            r["status"] == "running"
                && chrono::DateTime::parse_from_rfc3339(r["startedAt"].as_str().unwrap()).is_ok_and(
                    |t| chrono::Utc::now() - t.to_utc() < chrono::TimeDelta::milliseconds(1000),
                )
        });
        if let Some(run) = fresh {
            let on = run["node"].as_str().unwrap().to_string();
            let other = &servers[nodes.iter().position(|n| *n != on).unwrap()];
            let r = other
                .call(
                    reqwest::Method::POST,
                    "/api/admin/jobs/slow/run",
                    Some(&token),
                    None,
                )
                .await;
            r.assert_error(
                409,
                "conflict",
                &format!("Job \"slow\" is already running on node {on}"),
            );
            refused = Some(on);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused.is_some(), "no run of slow seen starting");

    // `bak jobs run` in the third server's folder runs the job in that server.
    let out = {
        let (dir, database) = (servers[2].dir.path().to_path_buf(), database.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::harness::bak_bin())
                .args(["jobs", "run", "tick"])
                .current_dir(dir)
                .env("BAKEND_DATABASE", database)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "bak jobs run: {stdout} {stderr}");
    let port = servers[2].url.rsplit(':').next().unwrap();
    assert!(stderr.contains(&format!("(port {port})")), "{stderr}");
    let manual_id = stdout.split('\t').next().unwrap().to_string();

    // The issue's scenario: a per-second job on three servers for 10 s.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(begun.elapsed())).await;
    for s in servers.drain(1..) {
        s.shutdown().await;
    }
    let runs = get(&servers[0], "/api/admin/jobs/tick/runs").await;
    let items = runs["items"].as_array().unwrap();
    let mut seconds: Vec<String> = items
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .map(|r| r["startedAt"].as_str().unwrap()[..19].to_string())
        .collect();
    let n = seconds.len();
    assert!((8..=12).contains(&n), "{n} runs in 10 s: {items:#?}");
    seconds.dedup();
    assert_eq!(seconds.len(), n, "a tick ran twice: {items:#?}");
    assert!(
        items.iter().all(|r| r["status"] != "failed"),
        "no run was cut short by another server's start: {items:#?}"
    );
    assert!(
        items
            .iter()
            .all(|r| nodes.contains(&r["node"].as_str().unwrap().to_string())),
        "each run names its node: {items:#?}"
    );
    let manual = items.iter().find(|r| r["runId"] == manual_id.as_str());
    assert!(
        manual.is_some_and(|r| r["trigger"] == "manual" && r["node"] == nodes[2].as_str()),
        "the CLI's run {manual_id}, in the third server: {items:#?}"
    );

    // `slow` (2.5 s, due every second): runs one after another, never two at once.
    let slow = get(&servers[0], "/api/admin/jobs/slow/runs").await;
    let slow = slow["items"].as_array().unwrap();
    assert!(slow.len() >= 2, "{slow:#?}");
    for pair in slow.windows(2) {
        let ended = pair[0]["endedAt"].as_str().unwrap_or("9");
        assert!(
            pair[1]["startedAt"].as_str().unwrap() >= ended,
            "two runs of slow at once: {slow:#?}"
        );
    }
    servers.remove(0).shutdown().await;
}

/// Signing out everywhere through one server applies on another at once: its open sockets of
/// that user turn anonymous (`session_revoked`) and its REST refuses the old token although
/// it had the user cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_everywhere_through_one_server_applies_on_the_others_at_once() {
    let Some(pg) = crate::pg::reachable_server(
        "signing_out_everywhere_through_one_server_applies_on_the_others_at_once",
    ) else {
        return;
    };
    let database = crate::pg::new_database(&pg);
    let a = TestServer::start_in_with_env(project(), &[("BAKEND_DATABASE", &database)]).await;
    let b = TestServer::start_in_with_env(project(), &[("BAKEND_DATABASE", &database)]).await;
    let bob = a.register("bob@example.com").await;
    assert_eq!(
        a.call(reqwest::Method::GET, "/api/auth/me", Some(&bob.token), None)
            .await
            .status,
        200,
        "a has bob cached now"
    );
    let (mut held, connected) = Ws::connect(&format!("{}?token={}", a.ws_url(), bob.token)).await;
    assert_eq!(connected["user"]["id"], json!(bob.id));
    let r = b
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&bob.token),
            Some(&json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    match held.poll(Duration::from_secs(2)).await {
        Next::Frame(f) => assert_eq!(f["code"], "session_revoked", "{f}"),
        _ => panic!("server a's socket was not told within 2 s"),
    }
    assert_eq!(
        a.call(reqwest::Method::GET, "/api/auth/me", Some(&bob.token), None)
            .await
            .status,
        401,
        "server a refuses the old token at once"
    );
    a.shutdown().await;
    b.shutdown().await;
}
