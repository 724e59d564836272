//! A cluster (docs/cluster.md): three `bak` processes on one PostgreSQL database, with a NATS
//! server of the test's own carrying events between them. A node killed with SIGKILL mid-stream
//! loses no acknowledged write's event for anyone, its clients resume on another node; a NATS
//! restart mid-stream loses nothing either (the gaps are read from the journal and counted).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::harness::{BakProcess, free_port, write_collections};
use crate::ws::{Next, Ws};

const ADMIN: &str = "root@example.com";

/// A NATS server of the test's own (the machine's shared one is never restarted).
pub(crate) struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    /// `None`, with a line saying why, when `nats-server` is not installed.
    pub(crate) async fn start(test: &str) -> Option<Nats> {
        let found = Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("{test}: skipped (nats-server is not installed)");
            return None;
        }
        let mut nats = Nats {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        nats.spawn().await;
        Some(nats)
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on {}", self.port);
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[
            json!({"name": "posts", "fields": [{"name": "title", "type": "string"}, {"name": "n", "type": "integer"}],
                 "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}}),
        ],
    );
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "metrics": {"enabled": true}}"#,
    )
    .unwrap();
    dir
}

/// A project of public collections (`(name, [(field, type)])`), its `bakend.json`, and
/// function or job files (`(path, source)`).
fn public_project(
    collections: &[(&str, &[(&str, &str)])],
    config: &str,
    files: &[(&str, &str)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let public =
        json!({"create": "public", "read": "public", "update": "public", "delete": "public"});
    let defs: Vec<Value> = collections
        .iter()
        .map(|(name, fields)| {
            let fields: Vec<Value> = fields
                .iter()
                .map(|(f, t)| json!({"name": f, "type": t}))
                .collect();
            json!({"name": name, "fields": fields, "permissions": public})
        })
        .collect();
    write_collections(dir.path(), &defs);
    std::fs::write(dir.path().join("bakend.json"), config).unwrap();
    for (path, source) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    dir
}

/// `n` nodes (`n0`, `n1`, …) on `database` without NATS.
async fn plain_nodes(dir: &Path, database: &str, n: usize) -> Vec<BakProcess> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let env = [
            ("BAKEND_DATABASE", database),
            ("BAKEND_CLUSTER_NODE_ID", id.as_str()),
            ("BAKEND_ADMIN_EMAIL", ADMIN),
        ];
        let mut p = BakProcess::spawn_with_env(dir, &[], &env);
        p.wait_ready().await;
        nodes.push(p);
    }
    nodes
}

async fn node(dir: &Path, database: &str, nats: &str, i: usize) -> BakProcess {
    let id = format!("n{i}");
    let mut p = BakProcess::spawn_with_env(
        dir,
        &[],
        &[
            ("BAKEND_DATABASE", database),
            ("BAKEND_CLUSTER_NATS", nats),
            ("BAKEND_CLUSTER_NODE_ID", &id),
            ("BAKEND_ADMIN_EMAIL", ADMIN),
        ],
    );
    p.wait_ready().await;
    p
}

/// A fresh database on the suite's PostgreSQL; `None` (the test skipped, with a line saying
/// why) without one.
fn fresh_database(test: &str) -> Option<String> {
    crate::pg::reachable_server(test).map(|pg| crate::pg::new_database(&pg))
}

/// A NATS server of the test's own and a fresh database; `None` (the test skipped, with a line
/// saying why) without PostgreSQL or `nats-server`.
async fn nats_and_database(test: &str) -> Option<(Nats, String)> {
    let pg = crate::pg::reachable_server(test)?;
    let nats = Nats::start(test).await?;
    Some((nats, crate::pg::new_database(&pg)))
}

/// `n` nodes of [`project`] on a fresh database, with a NATS server of the test's own; `None`
/// (the test skipped, with a line saying why) without PostgreSQL or `nats-server`.
async fn nats_cluster(test: &str, n: usize) -> Option<(Nats, tempfile::TempDir, Vec<BakProcess>)> {
    let (nats, database) = nats_and_database(test).await?;
    let dir = project();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(node(dir.path(), &database, &nats.url(), i).await);
    }
    Some((nats, dir, nodes))
}

fn ws_url(p: &BakProcess) -> String {
    format!("{}/api/realtime", p.url().replacen("http://", "ws://", 1))
}

/// What a subscriber saw: (seq, record id) in arrival order, and how its socket ended.
struct Seen {
    events: Vec<(u64, String)>,
    closed: bool,
}

/// Reads `ws` in the background until it closes, or `stop` is set and it has been silent for
/// a second.
fn collect(mut ws: Ws, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut events = Vec::new();
        let mut quiet = 0;
        loop {
            match ws.poll(Duration::from_millis(250)).await {
                Next::Frame(f) if f["type"] == "event" => {
                    quiet = 0;
                    events.push((
                        f["event"]["seq"].as_u64().unwrap(),
                        f["event"]["payload"]["id"].as_str().unwrap().to_string(),
                    ));
                }
                Next::Frame(f) if f["type"] == "resumed" => {
                    assert_eq!(f["recovered"], true, "{f}");
                }
                Next::Frame(_) => {}
                Next::Closed(..) => {
                    return Seen {
                        events,
                        closed: true,
                    };
                }
                Next::Silent => {
                    quiet += 1;
                    if stop.load(Ordering::Relaxed) && quiet >= 4 {
                        return Seen {
                            events,
                            closed: false,
                        };
                    }
                }
            }
        }
    })
}

/// A writer creating posts through `url` until `n` are acknowledged or a request fails;
/// counts acknowledgements in `acked` and returns the created ids.
fn writer(url: String, tag: usize, n: usize, acked: Arc<AtomicUsize>) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let r = http
                .post(format!("{url}/api/posts"))
                .json(&json!({"title": format!("w{tag}"), "n": i}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let Ok(r) = r else { break };
            if r.status() != 201 {
                break;
            }
            let body: Value = r.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_string());
            acked.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        ids
    })
}

/// Every seq once, contiguous, and every acknowledged write among them.
fn check(who: &str, events: &[(u64, String)], acked: &HashSet<String>) {
    let first = events.first().map_or(0, |e| e.0);
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (first..first + events.len() as u64).collect();
    assert_eq!(seqs, expected, "{who}: every seq once, in order");
    let ids: HashSet<&String> = events.iter().map(|e| &e.1).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{who}: {} acknowledged write(s) never arrived",
        missing.len()
    );
}

/// `GET url` (with a bearer token) as JSON.
async fn get_json(url: &str, token: Option<&str>) -> Value {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// `POST url` with a JSON body, answered JSON.
async fn post_json(url: &str, body: &Value) -> Value {
    let r = reqwest::Client::new().post(url).json(body).send().await;
    r.unwrap().json().await.unwrap()
}

/// A record created through `node`; its id.
async fn create(node: &str, collection: &str, body: Value) -> String {
    let r = post_json(&format!("{node}/api/{collection}"), &body).await;
    r["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

/// The status of `GET url`, asked every 20 ms until it is `want` (at most 2 s).
async fn status_within_2s(url: &str, want: u16) -> u16 {
    let http = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..100 {
        status = http.get(url).send().await.unwrap().status().as_u16();
        if status == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    status
}

async fn admin_token(url: &str) -> String {
    let body = json!({"email": ADMIN, "password": "correct horse battery"});
    let r = post_json(&format!("{url}/api/auth/register"), &body).await;
    r["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

async fn realtime_stats(url: &str, token: &str) -> Value {
    get_json(&format!("{url}/api/admin/realtime"), Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_no_acknowledged_event_and_its_clients_resume_elsewhere() {
    let test = "a_node_killed_mid_stream_loses_no_acknowledged_event";
    let Some((_nats, _dir, nodes)) = nats_cluster(test, 3).await else {
        return;
    };
    let token = admin_token(&nodes[0].url()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut epoch = Value::Null;
    for n in &nodes {
        let (mut ws, connected) = Ws::connect(&ws_url(n)).await;
        epoch = connected["epoch"].clone();
        ws.subscribe("posts.*").await;
        readers.push(collect(ws, stop.clone()));
    }

    const EACH: usize = 150;
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| writer(n.url(), i, EACH, counts[i].clone()))
        .collect();
    // Node 2 dies with its writer and its subscriber mid-stream.
    while counts[2].load(Ordering::Relaxed) < EACH / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[2].signal(libc::SIGKILL);
    let mut acked = HashSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        counts[2].load(Ordering::Relaxed) < EACH,
        "node 2 was killed before its writer finished"
    );

    // Node 2's subscriber saw its socket go, and resumes on node 0 from its last seq.
    let cut = readers.pop().unwrap().await.unwrap();
    assert!(cut.closed, "the killed node's socket closed");
    let last = cut.events.last().map_or(0, |e| e.0);
    let (mut ws, _) = Ws::connect(&ws_url(&nodes[0])).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": last}}))
        .await;
    let resumed = collect(ws, stop.clone());

    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await.unwrap().events);
    }
    let mut third = cut.events;
    third.extend(resumed.await.unwrap().events);
    seen.push(third);
    for (i, events) in seen.iter().enumerate() {
        check(&format!("subscriber {i}"), events, &acked);
    }
    assert_eq!(
        seen[0], seen[1],
        "nodes 0 and 1 delivered the same sequence"
    );
    assert_eq!(seen[2], seen[0], "the resumed client has the same sequence");

    // Stats: each live node, the totals, and events that came over NATS.
    let stats = realtime_stats(&nodes[0].url(), &token).await;
    let ids: Vec<&str> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"n0") && ids.contains(&"n1"), "{stats}");
    assert_eq!(stats["node"], "n0");
    assert_eq!(stats["cluster"]["nats"], "connected", "{stats}");
    assert!(
        stats["cluster"]["received"].as_u64().unwrap() > 0,
        "events travelled over NATS: {stats}"
    );
    let sum: u64 = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["eventsIn"].as_u64().unwrap())
        .sum();
    assert_eq!(stats["eventsIn"], sum, "top level = total of the nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_nothing_and_the_gaps_are_counted() {
    let test = "a_nats_restart_mid_stream_loses_nothing";
    let Some((mut nats, _dir, nodes)) = nats_cluster(test, 2).await else {
        return;
    };
    let token = admin_token(&nodes[0].url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Subscribers on node 0; writes through node 1 only, so every event crosses.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (mut ws, _) = Ws::connect(&ws_url(&nodes[0])).await;
        ws.subscribe("posts.*").await;
        readers.push(collect(ws, stop.clone()));
    }
    let acked_n = Arc::new(AtomicUsize::new(0));
    let w = writer(nodes[1].url(), 1, 300, acked_n.clone());
    while acked_n.load(Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nats.kill();
    while acked_n.load(Ordering::Relaxed) < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = realtime_stats(&nodes[0].url(), &token).await;
    nats.spawn().await;
    let acked: HashSet<String> = w.await.unwrap().into_iter().collect();
    assert_eq!(acked.len(), 300, "writes went on while NATS was down");
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await.unwrap().events);
    }
    for (i, events) in seen.iter().enumerate() {
        check(&format!("subscriber {i}"), events, &acked);
        assert_eq!(
            events.len(),
            300,
            "subscriber {i}: nothing more, nothing less"
        );
    }
    assert_eq!(during["cluster"]["nats"], "disconnected", "{during}");
    // Back on NATS, and the events it did not bring were read from the journal and counted.
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = realtime_stats(&nodes[0].url(), &token).await;
        let mine = &stats["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "n0")
            .unwrap()["cluster"];
        if mine["nats"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mine = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n0")
        .unwrap()["cluster"]
        .clone();
    assert_eq!(mine["nats"], "connected", "{stats}");
    let (received, filled) = (
        mine["received"].as_u64().unwrap(),
        mine["filledFromJournal"].as_u64().unwrap(),
    );
    assert!(received > 0 && filled > 0, "{mine}");
    assert_eq!(
        received + filled,
        300,
        "each event came one way, once: {mine}"
    );
    // The same count for Prometheus.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", nodes[0].url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("bakend_cluster_filled_from_journal_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= filled, "{line}");
    assert!(
        metrics.contains("bakend_cluster_nats_connected 1"),
        "{metrics}"
    );
}

/// A job run on a node that dies is recorded as failed ("node lost") by another node, which
/// runs the remaining attempt (the job's `retries`) itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_on_a_killed_node_is_recorded_as_lost_and_retried_on_another() {
    let test = "a_job_run_on_a_killed_node_is_recorded_as_lost_and_retried_on_another";
    let Some(database) = fresh_database(test) else {
        return;
    };
    // Attempt 1 waits for a gate that never opens (until its node dies); attempt 2 finishes.
    let dir = public_project(
        &[
            ("marks", &[("run", "string"), ("attempt", "integer")]),
            ("gate", &[("x", "string")]),
        ],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[(
            "jobs/slow.ts",
            r#"export const schedule = "0 0 1 1 *";
               export const retries = 1;
               export const retryDelay = 0;
               export const timeout = 120000;
               export default async ({ job, records }) => {
                 await records.create("marks", { run: job.runId, attempt: job.attempt });
                 while (job.attempt === 1 && (await records.list("gate", { perPage: 1 })).totalItems === 0) {}
               };"#,
        )],
    );
    let nodes = plain_nodes(dir.path(), &database, 2).await;
    let token = admin_token(&nodes[0].url()).await;
    let run = {
        let (url, token) = (nodes[1].url(), token.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/admin/jobs/slow/run"))
                .bearer_auth(token)
                .send()
                .await
        })
    };
    let marks = |url: String| async move {
        let v = get_json(&format!("{url}/api/marks?sort=attempt"), None).await;
        v["items"].as_array().cloned().unwrap_or_default()
    };
    let mut started = false;
    for _ in 0..200 {
        if !marks(nodes[0].url()).await.is_empty() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "attempt 1 started on node 1");
    nodes[1].signal(libc::SIGKILL);
    assert!(
        run.await.unwrap().is_err(),
        "the request died with its node"
    );

    // Within the node timeout (10 s) and a sweep (2 s): failed as lost, retried on node 0.
    let mut runs = Vec::new();
    for _ in 0..300 {
        let url = format!("{}/api/admin/jobs/slow/runs", nodes[0].url());
        let v = get_json(&url, Some(&token)).await;
        runs = v["items"].as_array().cloned().unwrap_or_default();
        if runs.iter().any(|r| r["status"] == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["status"], "failed", "{runs:#?}");
    assert_eq!(runs[0]["error"], "node lost: n1", "{runs:#?}");
    assert_eq!(runs[0]["attempt"], 1);
    assert_eq!(runs[1]["status"], "completed", "{runs:#?}");
    assert_eq!(runs[1]["trigger"], "retry");
    assert_eq!(runs[1]["attempt"], 2);
    let attempts: Vec<Value> = marks(nodes[0].url())
        .await
        .iter()
        .map(|m| m["attempt"].clone())
        .collect();
    assert_eq!(attempts, [json!(1), json!(2)], "each attempt ran once");
}

/// A node killed between its commits and their triggers: another node runs those triggers
/// (at least once), from the point the lost node's heartbeat last reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_of_a_killed_node_run_on_another_at_least_once() {
    let test = "triggers_of_a_killed_node_run_on_another_at_least_once";
    let Some(database) = fresh_database(test) else {
        return;
    };
    // Each post's trigger waits for the gate to open, then writes its audit record.
    let dir = public_project(
        &[
            ("posts", &[("title", "string")]),
            ("audit", &[("post_id", "string")]),
            ("gate", &[("x", "string")]),
        ],
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "functions": {"timeoutMs": 60000}}"#,
        &[(
            "functions/audit.ts",
            r#"import { onCreate } from "bakend/functions";
               onCreate("posts", async ({ record, records }) => {
                 while ((await records.list("gate", { perPage: 1 })).totalItems === 0) {}
                 await records.create("audit", { post_id: record.id });
               });"#,
        )],
    );
    let nodes = plain_nodes(dir.path(), &database, 2).await;
    // Node 1 commits five posts; their triggers wait at the gate. Node 1's heartbeat reports
    // none of them done; then it dies.
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(create(&nodes[1].url(), "posts", json!({"title": format!("p{i}")})).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a heartbeat or two
    nodes[1].signal(libc::SIGKILL);
    let count = |url: String| async move {
        let v = get_json(&format!("{url}/api/audit?perPage=100"), None).await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["post_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(count(nodes[0].url()).await.is_empty());
    create(&nodes[0].url(), "gate", json!({"x": "open"})).await;
    // Node 0 takes node 1 over after 10 s without a heartbeat (and a look every 2 s).
    let mut audited = Vec::new();
    for _ in 0..250 {
        audited = count(nodes[0].url()).await;
        if posts.iter().all(|p| audited.contains(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in &posts {
        assert!(audited.contains(p), "post {p}'s trigger ran: {audited:?}");
    }
    // Node 0 ran them, once each (node 1 never got past the gate).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(nodes[0].url()).await.len(), posts.len());
}

/// A single node that has run on PostgreSQL alone is joined by more nodes later (with NATS):
/// its journal and epoch carry over, a client of the old node resumes on a new one, and the
/// numbering goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_grows_into_a_cluster_without_losing_its_journal() {
    let test = "a_single_node_grows_into_a_cluster_without_losing_its_journal";
    let Some((nats, database)) = nats_and_database(test).await else {
        return;
    };
    let dir = project();
    let mut alone = BakProcess::spawn_with_env(dir.path(), &[], &[("BAKEND_DATABASE", &database)]);
    alone.wait_ready().await;
    let (mut ws, connected) = Ws::connect(&ws_url(&alone)).await;
    let epoch = connected["epoch"].clone();
    ws.subscribe("posts.*").await;
    for n in 0..3 {
        create(&alone.url(), "posts", json!({"title": "x", "n": n})).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = ws.next().await["event"]["seq"].as_u64().unwrap();
    }
    drop(ws);
    // Stopped, and started again as a node of a cluster, beside a new one.
    alone.signal(libc::SIGTERM);
    alone.wait_exit().await;
    let a = node(dir.path(), &database, &nats.url(), 0).await;
    let b = node(dir.path(), &database, &nats.url(), 1).await;
    let missed = [
        create(&a.url(), "posts", json!({"title": "x", "n": 3})).await,
        create(&b.url(), "posts", json!({"title": "x", "n": 4})).await,
    ];
    let (mut ws, connected) = Ws::connect(&ws_url(&b)).await;
    assert_eq!(connected["epoch"], epoch, "the epoch carried over");
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": last}}))
        .await;
    let (mut got, mut recovered) = (Vec::new(), None);
    while got.len() < missed.len() || recovered.is_none() {
        let f = ws.next().await;
        match f["type"].as_str() {
            Some("event") => got.push((
                f["event"]["seq"].as_u64().unwrap(),
                f["event"]["payload"]["id"].as_str().unwrap().to_string(),
            )),
            Some("resumed") => recovered = Some(f["recovered"].clone()),
            _ => {}
        }
    }
    assert_eq!(recovered, Some(json!(true)));
    assert_eq!(
        got,
        vec![(last + 1, missed[0].clone()), (last + 2, missed[1].clone())],
        "the numbering went on from the single node's"
    );
}

/// A filtered subscription on one node, writes through another: the node holding the socket
/// decides `added` / `modified` / `removed` on the carried events (with the previous record)
/// as it would for its own writes; the subscription resumes on the other node with the same
/// frames, and its snapshot is the same on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_subscriptions_see_other_nodes_writes_enter_and_leave() {
    let test = "filtered_subscriptions_see_other_nodes_writes_enter_and_leave";
    let Some((_nats, _dir, nodes)) = nats_cluster(test, 2).await else {
        return;
    };
    let (mut ws, connected) = Ws::connect(&ws_url(&nodes[0])).await;
    let epoch = connected["epoch"].clone();
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "filter": "n >= 10", "id": "big"}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let via = nodes[1].url();
    create(&via, "posts", json!({"title": "small", "n": 5})).await;
    let id = create(&via, "posts", json!({"title": "big", "n": 20})).await;
    let update = |n: i64| {
        let url = format!("{via}/api/posts/{id}");
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .json(&json!({"n": n}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    update(25).await;
    update(1).await;
    // (subscription, change, record id, seq) of the next `n` filtered frames.
    async fn changes(ws: &mut Ws, n: usize) -> Vec<(String, String, String, u64)> {
        let mut out = Vec::new();
        while out.len() < n {
            match ws.poll(Duration::from_secs(20)).await {
                Next::Frame(f) if f["type"] == "event" => out.push((
                    f["subscription"].as_str().unwrap().to_string(),
                    f["change"].as_str().unwrap().to_string(),
                    f["event"]["payload"]["id"].as_str().unwrap().to_string(),
                    f["event"]["seq"].as_u64().unwrap(),
                )),
                Next::Frame(_) => {}
                Next::Closed(c, r) => panic!("closed {c} {r} after {out:?}"),
                Next::Silent => panic!("silent after {out:?}"),
            }
        }
        out
    }
    let seen = changes(&mut ws, 3).await;
    let kinds: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|(s, c, i, _)| (s.as_str(), c.as_str(), i.as_str()))
        .collect();
    let id = id.as_str();
    assert_eq!(
        kinds,
        [
            ("big", "added", id),
            ("big", "modified", id),
            ("big", "removed", id)
        ]
    );
    assert!(matches!(
        ws.poll(Duration::from_millis(300)).await,
        Next::Silent
    ));

    // The same subscription resumed on the other node from before the first change: the same
    // frames, replayed there.
    let (mut again, _) = Ws::connect(&ws_url(&nodes[1])).await;
    again
        .send(
            json!({"action": "subscribe", "channel": "posts.*", "filter": "n >= 10", "id": "big",
                     "since": {"epoch": epoch, "seq": seen[0].3 - 1}}),
        )
        .await;
    assert_eq!(again.next().await["type"], "subscribed");
    assert_eq!(changes(&mut again, 3).await, seen);

    // A snapshot of it on either node: the records it holds now, as REST lists them.
    let kept = create(&nodes[0].url(), "posts", json!({"title": "kept", "n": 50})).await;
    for n in &nodes {
        let (mut ws, _) = Ws::connect(&ws_url(n)).await;
        ws.send(
            json!({"action": "subscribe", "channel": "posts.*", "filter": "n >= 10",
                       "id": "snap", "snapshot": true}),
        )
        .await;
        let mut snapshot = Value::Null;
        while snapshot.is_null() {
            let f = ws.next().await;
            if f["type"] == "snapshot" {
                snapshot = f;
            }
        }
        let ids: Vec<&str> = snapshot["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [kept.as_str()], "{snapshot}");
    }
}

/// Three nodes as on three machines (a project folder each), sharing PostgreSQL, NATS and an
/// S3-compatible bucket (moto): a file uploaded through one node is served, in ranges, by the
/// others, its event reaches a subscriber on another node, and a delete through a third is
/// seen everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_shared_storage_are_one_store_for_every_node() {
    let test = "files_on_shared_storage_are_one_store_for_every_node";
    let Some((nats, database)) = nats_and_database(test).await else {
        return;
    };
    let Some(moto) = crate::s3::Moto::start(test).await else {
        return;
    };
    moto.create_bucket("cluster").await;
    let config = json!({"auth": {"rateLimit": {"attempts": 0}},
                        "storage": {"s3": moto.settings("cluster")}})
    .to_string();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let dir = public_project(&[("posts", &[("title", "string")])], &config, &[]);
        nodes.push(node(dir.path(), &database, &nats.url(), i).await);
        dirs.push(dir);
    }
    let token = admin_token(&nodes[0].url()).await;
    let (mut ws, _) = Ws::connect(&format!("{}?token={token}", ws_url(&nodes[2]))).await;
    ws.subscribe("storage.*").await;

    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.clone()).file_name("data.bin"),
    );
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/storage/upload", nodes[0].url()))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let event = ws.next().await;
    assert_eq!(event["event"]["type"], "storage.uploaded", "{event}");
    assert_eq!(event["event"]["payload"]["id"], id.as_str());

    let file = |node: usize, range: Option<&'static str>| {
        let (http, url, token) = (
            http.clone(),
            format!("{}/api/storage/{id}", nodes[node].url()),
            token.clone(),
        );
        async move {
            let mut req = http.get(url).bearer_auth(token);
            if let Some(r) = range {
                req = req.header("range", r);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(file(1, None).await, (200, bytes.clone()));
    assert_eq!(
        file(2, Some("bytes=1000-1999")).await,
        (206, bytes[1000..2000].to_vec())
    );
    let r = http
        .delete(format!("{}/api/storage/{id}", nodes[1].url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(file(0, None).await.0, 404);
    assert_eq!(file(2, None).await.0, 404);
    let event = ws.next().await;
    assert_eq!(event["event"]["type"], "storage.deleted", "{event}");
}

/// NATS down when a node starts: the node starts and serves (its events travel through the
/// journal), and connects once NATS is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_nats_is_down_and_connects_when_it_comes() {
    let test = "a_node_starts_while_nats_is_down_and_connects_when_it_comes";
    // The NATS server started here only says nats-server is installed; the one used starts
    // later on its own port.
    let Some((probe, database)) = nats_and_database(test).await else {
        return;
    };
    drop(probe);
    let mut nats = Nats {
        child: None,
        port: free_port(),
        dir: tempfile::tempdir().unwrap(),
    };
    let dir = project();
    let n0 = node(dir.path(), &database, &nats.url(), 0).await;
    let token = admin_token(&n0.url()).await;
    create(&n0.url(), "posts", json!({"title": "while down", "n": 1})).await;
    let stats = realtime_stats(&n0.url(), &token).await;
    assert_eq!(stats["cluster"]["nats"], "disconnected", "{stats}");
    nats.spawn().await;
    let mut connected = false;
    for _ in 0..100 {
        let stats = realtime_stats(&n0.url(), &token).await;
        if stats["cluster"]["nats"] == "connected" {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected, "the node connected once NATS came up");
}

/// A collection created through the admin API of one node is served at once by the others
/// (their registries reload it), events included; changed, every node's copy of
/// `collections/` follows (two project folders here, as on two machines: the next start of a
/// node reads its own copy); deleted through another node, it is gone everywhere, files too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_changes_through_one_node_apply_on_every_node() {
    let test = "collection_changes_through_one_node_apply_on_every_node";
    let Some((nats, database)) = nats_and_database(test).await else {
        return;
    };
    let dirs = [project(), project()];
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(node(dir.path(), &database, &nats.url(), i).await);
    }
    // What `collections/notes.json` in node `i`'s folder says of the fields, once it says
    // `want` (`None`: the file is gone), within 5 s.
    let file_fields = |i: usize, want: Option<Vec<&'static str>>| {
        let path = dirs[i].path().join("collections/notes.json");
        async move {
            let read = || {
                let text = std::fs::read_to_string(&path).ok()?;
                let v: Value = serde_json::from_str(&text).ok()?;
                Some(
                    v["fields"]
                        .as_array()?
                        .iter()
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect::<Vec<_>>(),
                )
            };
            let want: Option<Vec<String>> =
                want.map(|w| w.into_iter().map(str::to_string).collect());
            for _ in 0..100 {
                if read() == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            read()
        }
    };
    let token = admin_token(&nodes[0].url()).await;
    // An admin API call to `node`: its status, and its body for the failure message.
    let admin = |method: reqwest::Method, node: usize, path: &str, body: Option<&Value>| {
        let mut request = reqwest::Client::new()
            .request(
                method,
                format!("{}/api/admin/collections{path}", nodes[node].url()),
            )
            .bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(body);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let notes = json!({"name": "notes", "fields": [{"name": "body", "type": "string"}],
                       "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}});
    let (status, body) = admin(reqwest::Method::POST, 0, "", Some(&notes)).await;
    assert_eq!(status, 201, "{body}");
    // Node 1 knows it as soon as the notification arrives.
    let notes_on = |node: usize| format!("{}/api/notes", nodes[node].url());
    assert_eq!(
        status_within_2s(&notes_on(1), 200).await,
        200,
        "node 1 serves the new collection"
    );
    let (mut ws, _) = Ws::connect(&ws_url(&nodes[1])).await;
    ws.subscribe("notes.*").await;
    let id = create(&nodes[0].url(), "notes", json!({"body": "hi"})).await;
    let e = ws.next().await;
    assert_eq!(e["event"]["type"], "notes.created", "{e}");
    assert_eq!(e["event"]["payload"]["id"], id.as_str());
    for i in 0..2 {
        assert_eq!(
            file_fields(i, Some(vec!["body"])).await,
            Some(vec!["body".to_string()]),
            "node {i}'s file"
        );
    }
    // Changed through node 0: node 1's file follows.
    let mut changed = notes.clone();
    changed["fields"] =
        json!([{"name": "body", "type": "string"}, {"name": "title", "type": "string"}]);
    let (status, body) = admin(reqwest::Method::PUT, 0, "/notes", Some(&changed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        file_fields(1, Some(vec!["body", "title"])).await,
        Some(vec!["body".to_string(), "title".to_string()]),
        "node 1's copy of the change"
    );
    let (status, _) = admin(reqwest::Method::DELETE, 1, "/notes", None).await;
    assert_eq!(status, 204);
    assert_eq!(
        status_within_2s(&notes_on(0), 404).await,
        404,
        "gone on node 0 too"
    );
    for i in 0..2 {
        assert_eq!(
            file_fields(i, None).await,
            None,
            "node {i}'s file is removed"
        );
    }
}

/// Function lifecycle events are not journaled (no seq): with NATS they still reach every
/// node's clients, once — an admin watching `function.*` on node 0 sees the failure of a
/// trigger that ran on node 1 (the node that committed the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_events_reach_the_clients_of_every_node() {
    let test = "function_events_reach_the_clients_of_every_node";
    let Some((nats, database)) = nats_and_database(test).await else {
        return;
    };
    let dir = public_project(
        &[("boom", &[("note", "string")])],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[(
            "functions/boom.ts",
            r#"import { onCreate } from "bakend/functions";
               onCreate("boom", ({ record }) => { throw new Error(`boom: ${record.note}`); });"#,
        )],
    );
    let nodes = [
        node(dir.path(), &database, &nats.url(), 0).await,
        node(dir.path(), &database, &nats.url(), 1).await,
    ];
    let token = admin_token(&nodes[0].url()).await;
    let mut sockets = Vec::new();
    for n in &nodes {
        let (mut ws, _) = Ws::connect(&format!("{}?token={token}", ws_url(n))).await;
        ws.subscribe("function.*").await;
        sockets.push(ws);
    }
    create(&nodes[1].url(), "boom", json!({"note": "through node 1"})).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        // Both, however slow the machine (20 s), then nothing more for half a second.
        let mut events = Vec::new();
        while events.len() < 2 {
            match ws.poll(Duration::from_secs(20)).await {
                Next::Frame(v) if v["type"] == "event" => events.push(v["event"].clone()),
                Next::Frame(_) => {}
                Next::Closed(code, _) => {
                    panic!("node {i}'s admin: closed ({code}) after {events:#?}")
                }
                Next::Silent => panic!("node {i}'s admin: silent after {events:#?}"),
            }
        }
        events.extend(ws.events(Duration::from_millis(500)).await);
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            types,
            ["function.started", "function.failed"],
            "node {i}'s admin: {events:#?}"
        );
        assert!(
            events[1]["payload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("boom: through node 1")),
            "{events:#?}"
        );
        assert!(events.iter().all(|e| e.get("seq").is_none()), "{events:#?}");
    }
}
