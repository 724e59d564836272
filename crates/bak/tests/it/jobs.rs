//! Cron jobs run by the real server on the embedded engine (issue 7): schedules with seconds,
//! overlap skipping, retries and their events, time limits, persisted history seen from another
//! process, the admin API, and `job.*` over realtime.

use std::time::{Duration, Instant};

use bakend_core::SharedEvent;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{BakProcess, TestServer, eventually_within};
use crate::ws::Ws;

const ADMIN: &str = "root@example.com";

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "jobs": {"shutdownGraceSeconds": 1}}"#,
    )
    .unwrap();
    for (rel, src) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, src).unwrap();
    }
    dir
}

async fn server(files: &[(&str, &str)]) -> TestServer {
    TestServer::start_in_with_env(project(files), &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await
}

fn job_events(events: &[SharedEvent], name: &str) -> Vec<(String, Value)> {
    events
        .iter()
        .filter(|e| e.event_type.starts_with("job.") && e.payload["name"] == name)
        .map(|e| (e.event_type.clone(), e.payload.clone()))
        .collect()
}

async fn admin_call(s: &TestServer, token: &str, method: Method, path: &str) -> (u16, Value) {
    let r = s.call(method, path, Some(token), None).await;
    let body = serde_json::from_str(&r.text).unwrap_or(Value::Null);
    (r.status, body)
}

#[tokio::test]
async fn a_seconds_schedule_fires_once_per_tick_and_is_listed() {
    let mut s = server(&[(
        "jobs/tick.ts",
        r#"export const schedule = "*/1 * * * * *";
           export default async ({ logger, job }) => { logger.info(`tick ${job.runId}`); };"#,
    )])
    .await;
    let mut seen = Vec::new();
    assert!(
        eventually_within(Duration::from_secs(6), || {
            seen.extend(s.take_events());
            job_events(&seen, "tick")
                .iter()
                .filter(|(t, _)| t == "job.completed")
                .count()
                >= 3
        })
        .await,
        "the job did not fire three times"
    );
    let events = job_events(&seen, "tick");
    let (t, started) = &events[0];
    assert_eq!(t, "job.started");
    assert_eq!(
        started.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "filePath", "schedule", "runId"]
    );
    assert_eq!(started["filePath"], "jobs/tick.ts");
    assert_eq!(started["schedule"], "*/1 * * * * *");
    // One run per tick: distinct run ids, each started once.
    let mut ids: Vec<&str> = events
        .iter()
        .filter(|(t, _)| t == "job.started")
        .map(|(_, p)| p["runId"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);

    let admin = s.register(ADMIN).await;
    let (status, list) = admin_call(&s, &admin.token, Method::GET, "/api/admin/jobs").await;
    assert_eq!(status, 200);
    let item = &list["items"][0];
    assert_eq!(item["name"], "tick");
    assert_eq!(item["schedule"], "*/1 * * * * *");
    assert_eq!(item["filePath"], "jobs/tick.ts");
    assert_eq!(item["timezone"], "UTC");
    assert!(item["nextRun"].as_str().unwrap().ends_with('Z'));
    let (status, runs) =
        admin_call(&s, &admin.token, Method::GET, "/api/admin/jobs/tick/runs").await;
    assert_eq!(status, 200);
    let runs = runs["items"].as_array().unwrap();
    assert!(runs.len() >= 3, "{runs:?}");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["trigger"], "schedule");
    assert!(runs[0]["startedAt"].as_str() < runs[1]["startedAt"].as_str());

    // Access: anonymous 401, non-admin 403, unknown job 404, wrong method 405.
    assert_eq!(s.get("/api/admin/jobs").await.status, 401);
    let user = s.register("user@example.com").await;
    let (status, _) = admin_call(&s, &user.token, Method::GET, "/api/admin/jobs").await;
    assert_eq!(status, 403);
    let (status, body) =
        admin_call(&s, &admin.token, Method::GET, "/api/admin/jobs/nope/runs").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "Job \"nope\" does not exist");
    let (status, _) = admin_call(&s, &admin.token, Method::GET, "/api/admin/jobs/tick/run").await;
    assert_eq!(status, 405);
    s.shutdown().await;
}

#[tokio::test]
async fn a_tick_that_finds_the_job_running_is_skipped() {
    let mut s = server(&[(
        "jobs/slow.ts",
        r#"export const schedule = "*/1 * * * * *";
           export default () => { const end = Date.now() + 2200; while (Date.now() < end) {} };"#,
    )])
    .await;
    tokio::time::sleep(Duration::from_millis(5_600)).await;
    let events = job_events(&s.take_events(), "slow");
    // Strictly alternating: a new run never starts before the previous one ended.
    let mut running = false;
    for (t, _) in &events {
        match t.as_str() {
            "job.started" => {
                assert!(!running, "overlapping runs: {events:?}");
                running = true;
            }
            _ => running = false,
        }
    }
    let starts = events.iter().filter(|(t, _)| t == "job.started").count();
    assert!(
        (1..=3).contains(&starts),
        "{starts} runs in 5.6 s of a 2.2 s job"
    );
    // While it runs, a manual run is refused.
    let admin = s.register(ADMIN).await;
    let mut conflict = false;
    for _ in 0..30 {
        let (status, body) =
            admin_call(&s, &admin.token, Method::POST, "/api/admin/jobs/slow/run").await;
        if status == 409 {
            assert_eq!(body["error"]["code"], "conflict");
            conflict = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(conflict, "no 409 while the job was running");
    s.shutdown().await;
}

#[tokio::test]
async fn retries_report_started_then_completed_with_attempt_2() {
    let mut s = server(&[(
        "jobs/reports/flaky.ts",
        r#"export const schedule = "@yearly";
           export const retryDelay = 200;
           export default async ({ job }) => {
             if (job.attempt === 1) throw new Error("first attempt fails");
           };"#,
    )])
    .await;
    let admin = s.register(ADMIN).await;
    s.take_events();
    let t0 = Instant::now();
    let (status, run) = admin_call(
        &s,
        &admin.token,
        Method::POST,
        "/api/admin/jobs/reports%2Fflaky/run",
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(run["status"], "completed");
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["job"], "reports/flaky");
    assert_eq!(run["trigger"], "manual");
    let events = job_events(&s.take_events(), "reports/flaky");
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["job.started", "job.completed"]);
    assert_eq!(events[1].1["attempt"], 2);
    assert_eq!(events[1].1["runId"], run["runId"]);
    assert_eq!(events[1].1["filePath"], "jobs/reports/flaky.ts");
    assert!(events[1].1["durationMs"].as_u64().unwrap() >= 200);
    s.shutdown().await;
}

#[tokio::test]
async fn final_failure_after_the_configured_attempts_and_timeouts() {
    let mut s = server(&[
        (
            "jobs/broken.ts",
            r#"export const schedule = "@yearly";
               export const retries = 1;
               export const retryDelay = 10;
               export default async ({ job }) => { throw new Error(`broken ${job.attempt}`); };"#,
        ),
        (
            "jobs/spin.ts",
            r#"export const schedule = "@yearly";
               export const retries = 0;
               export const timeout = 300;
               export default () => { while (true) {} };"#,
        ),
    ])
    .await;
    let admin = s.register(ADMIN).await;
    s.take_events();
    let (status, run) =
        admin_call(&s, &admin.token, Method::POST, "/api/admin/jobs/broken/run").await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["attempt"], 2);
    assert!(run["error"].as_str().unwrap().contains("broken 2"), "{run}");
    let events = job_events(&s.take_events(), "broken");
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["job.started", "job.failed"]);
    assert_eq!(events[1].1["attempt"], 2);
    assert!(events[1].1["error"].as_str().unwrap().contains("broken 2"));

    let t0 = Instant::now();
    let (status, run) =
        admin_call(&s, &admin.token, Method::POST, "/api/admin/jobs/spin/run").await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the runaway job was not stopped"
    );
    // The engine is usable afterwards.
    let (_, again) = admin_call(&s, &admin.token, Method::POST, "/api/admin/jobs/broken/run").await;
    assert_eq!(again["status"], "failed");
    assert_eq!(
        again["error"].as_str().map(|e| e.contains("broken 2")),
        Some(true)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn load_errors_name_the_file_and_the_cron_field() {
    for (src, expect) in [
        (
            r#"export const schedule = "0 25 * * *"; export default () => {};"#,
            "Failed to load job jobs/bad.ts: schedule \"0 25 * * *\": hour field \"25\" is invalid",
        ),
        (
            r#"export default () => {};"#,
            "Failed to load job jobs/bad.ts: must export a non-empty schedule string",
        ),
        (
            r#"export const schedule = "* * * * *";"#,
            "Failed to load job jobs/bad.ts: must export a default handler function",
        ),
    ] {
        let dir = project(&[("jobs/bad.ts", src)]);
        let mut config =
            bakend_core::config::Config::load(Some(&dir.path().join("bakend.json")), &|_| None)
                .unwrap();
        config.port = 0;
        let err = match bakend_server::start(config).await {
            Ok(_) => panic!("started with a bad job: {src}"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(expect), "{err}");
    }
}

#[tokio::test]
async fn job_events_reach_realtime_subscribers_redacted_for_non_admins() {
    let s = server(&[(
        "jobs/fails.ts",
        r#"export const schedule = "@yearly";
           export const retries = 0;
           export default () => { throw new Error("secret detail"); };"#,
    )])
    .await;
    let admin = s.register(ADMIN).await;
    let (mut anon, _) = Ws::connect(&s.ws_url()).await;
    anon.subscribe("job.*").await;
    let (mut adm, _) = Ws::connect(&format!("{}?token={}", s.ws_url(), admin.token)).await;
    adm.subscribe("job.*").await;
    let (status, _) = admin_call(&s, &admin.token, Method::POST, "/api/admin/jobs/fails/run").await;
    assert_eq!(status, 200);
    for (ws, sees_error) in [(&mut anon, false), (&mut adm, true)] {
        let started = ws.next().await;
        assert_eq!(started["event"]["type"], "job.started");
        assert_eq!(started["event"]["payload"]["filePath"], "jobs/fails.ts");
        let failed = ws.next().await;
        assert_eq!(failed["event"]["type"], "job.failed");
        let p = &failed["event"]["payload"];
        assert_eq!(p["attempt"], 1);
        assert_eq!(p.get("error").is_some(), sees_error, "{p}");
        if sees_error {
            assert_eq!(
                p["error"].as_str().map(|e| e.contains("secret detail")),
                Some(true)
            );
        }
    }
}

fn bak(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    crate::harness::bak_in(dir).args(args).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn history_is_visible_from_another_process_while_running_and_after_a_restart() {
    if crate::pg::skip_on_postgres(
        "history_is_visible_from_another_process_while_running_and_after_a_restart",
        "ctx.db is SQLite's own API, refused on PostgreSQL",
    ) {
        return;
    }
    let dir = project(&[
        (
            "jobs/tick.ts",
            r#"export const schedule = "*/1 * * * * *"; export default async () => {};"#,
        ),
        (
            "jobs/once.ts",
            r#"export const schedule = "@yearly";
               export default async ({ db }) => { db.run("CREATE TABLE IF NOT EXISTS marks (v TEXT)"); db.run("INSERT INTO marks VALUES ('x')"); };"#,
        ),
    ]);
    let mut p = BakProcess::spawn(dir.path(), &[]);
    p.wait_ready().await;

    // `bak jobs list` validates and shows the schedule and the next run.
    let list = bak(dir.path(), &["jobs", "list"]);
    assert!(list.status.success(), "{list:?}");
    let out = text(&list);
    assert!(out.contains("once\t@yearly\tjobs/once.ts\t"), "{out}");
    assert!(out.contains("tick\t*/1 * * * * *\tjobs/tick.ts\t"), "{out}");

    // Runs of the per-second job appear in another process while the server runs.
    let mut lines = 0;
    for _ in 0..80 {
        let o = bak(dir.path(), &["jobs", "runs", "tick"]);
        assert!(o.status.success(), "{o:?}");
        lines = text(&o)
            .lines()
            .filter(|l| l.contains("\tcompleted\tattempt=1\t"))
            .count();
        if lines >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lines >= 2, "no history from the running server");

    // `bak jobs run` goes through the running server.
    let o = bak(dir.path(), &["jobs", "run", "once"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Ran in the running server"));
    assert!(text(&o).contains("\tcompleted\tattempt=1\t"));

    // Unknown names.
    let o = bak(dir.path(), &["jobs", "runs", "nope"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Job \"nope\" does not exist"));

    p.signal(libc::SIGTERM);
    assert!(p.wait_exit().await.success());
    assert!(!dir.path().join(".bakend-cache/local-access.json").exists());

    // After the stop: the history is still there.
    let o = bak(dir.path(), &["jobs", "runs", "once"]);
    let out = text(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\tcompleted\tattempt=1\t"));
    let o = bak(dir.path(), &["jobs", "runs", "tick"]);
    assert!(text(&o).lines().count() >= lines);

    // Without a server, `bak jobs run` runs the job in its own process, with `ctx.db`.
    let o = bak(dir.path(), &["jobs", "run", "once"]);
    assert!(o.status.success(), "{o:?}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Ran in the running server"));
    let o = bak(dir.path(), &["jobs", "runs", "once"]);
    assert_eq!(text(&o).lines().count(), 2);
    let conn = rusqlite::Connection::open(dir.path().join("bakend.db")).unwrap();
    let marks: i64 = conn
        .query_row("SELECT COUNT(*) FROM marks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(marks, 2);

    // A restarted server shows the same history through the API.
    let mut p = BakProcess::spawn(dir.path(), &[]);
    p.wait_ready().await;
    let o = bak(dir.path(), &["jobs", "runs", "once"]);
    assert_eq!(text(&o).lines().count(), 2);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit().await.success());
}

#[tokio::test]
async fn watch_reloads_jobs_and_a_broken_edit_keeps_the_previous_version() {
    let dir = project(&[(
        "jobs/a.ts",
        r#"export const schedule = "@yearly"; export default async () => {};"#,
    )]);
    let mut p = BakProcess::spawn(dir.path(), &["--watch"]);
    p.wait_ready().await;
    let names = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    // A broken edit: reported, and `a` stays scheduled (it can still be run in the server).
    std::fs::write(
        dir.path().join("jobs/a.ts"),
        r#"export const schedule = "0 99 * * *"; export default async () => {};"#,
    )
    .unwrap();
    assert!(
        eventually_within(Duration::from_secs(5), || p
            .stderr()
            .contains("Job reload failed"))
        .await,
        "{}",
        p.stderr()
    );
    assert!(p.stderr().contains("hour field \"99\""), "{}", p.stderr());
    let o = bak(dir.path(), &["jobs", "run", "a"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Ran in the running server"));
    // A good edit adds a job.
    std::fs::write(
        dir.path().join("jobs/a.ts"),
        r#"export const schedule = "@daily"; export default async () => {};"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs/b.ts"),
        r#"export const schedule = "@hourly"; export default async () => {};"#,
    )
    .unwrap();
    assert!(
        eventually_within(Duration::from_secs(5), || p
            .stderr()
            .contains("Jobs: 2 job(s) loaded"))
        .await,
        "{}",
        p.stderr()
    );
    let o = bak(dir.path(), &["jobs", "run", "b"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Ran in the running server"));
    assert_eq!(names(text(&bak(dir.path(), &["jobs", "list"]))), ["a", "b"]);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit().await.success());
}
