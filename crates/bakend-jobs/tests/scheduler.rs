//! The scheduler, retries, events and history with a Rust engine, a real bus and a real SQLite
//! file. The JavaScript engine's own behaviour is tested end to end in `crates/bak/tests/it`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bakend_core::SharedEvent;
use bakend_core::config::DatabaseLocation;
use bakend_events::{EventBus, EventStream, LocalBus};
use bakend_jobs::{
    JobDef, JobDefaults, JobEngine, JobSource, Jobs, JobsConfig, JobsError, RunFuture, RunStatus,
};
use bakend_store::Database;
use serde_json::{Value, json};

type Behaviour = dyn Fn(u32) -> RunFuture + Send + Sync;

/// Runs a Rust closure per attempt and tracks how many attempts run at once.
struct RustEngine {
    behaviour: Box<Behaviour>,
    calls: AtomicU32,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
}

impl RustEngine {
    fn new(f: impl Fn(u32) -> RunFuture + Send + Sync + 'static) -> Arc<RustEngine> {
        Arc::new(RustEngine {
            behaviour: Box::new(f),
            calls: AtomicU32::new(0),
            active: Arc::new(AtomicUsize::new(0)),
            max_active: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl JobEngine for RustEngine {
    fn run(&self, _name: &str, _run_id: &str, attempt: u32, _timeout: Duration) -> RunFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (active, max) = (self.active.clone(), self.max_active.clone());
        let inner = (self.behaviour)(attempt);
        Box::pin(async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            let r = inner.await;
            active.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

fn ok() -> RunFuture {
    Box::pin(async { Ok(()) })
}

fn def(name: &str, exports: Value) -> JobDef {
    let src = JobSource {
        name: name.into(),
        file: format!("jobs/{name}.ts"),
        exports: exports.as_object().cloned().unwrap(),
        has_default: true,
    };
    JobDef::from_source(&src, &JobDefaults::default()).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<Database>,
    bus: Arc<LocalBus>,
    events: EventStream,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bus = LocalBus::new();
    let events = bus.subscribe("test", 10_000);
    let db = Database::open(
        &DatabaseLocation::File(dir.path().join("bakend.db")),
        bus.clone(),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        db: Arc::new(db),
        bus,
        events,
    }
}

fn config() -> JobsConfig {
    JobsConfig {
        shutdown_grace: Duration::from_millis(300),
        ..JobsConfig::default()
    }
}

async fn start(fx: &Fixture, defs: Vec<JobDef>, engine: Arc<RustEngine>, cfg: JobsConfig) -> Jobs {
    Jobs::start(defs, engine, fx.bus.clone(), fx.db.clone(), cfg)
        .await
        .unwrap()
}

fn job_events(events: &mut EventStream) -> Vec<SharedEvent> {
    let mut out = Vec::new();
    while let Some(e) = events.try_recv() {
        if e.event_type.starts_with("job.") {
            out.push(e);
        }
    }
    out
}

#[tokio::test]
async fn seconds_schedule_fires_once_per_tick() {
    let fx = fixture();
    let engine = RustEngine::new(|_| ok());
    let jobs = start(
        &fx,
        vec![def("tick", json!({"schedule": "*/1 * * * * *"}))],
        engine.clone(),
        config(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    let calls = engine.calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "{calls} runs in 3.6 s");
    jobs.shutdown().await;
    let runs = jobs.runs("tick").await.unwrap();
    assert_eq!(runs.len() as u32, calls);
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Completed && r.trigger == "schedule")
    );
    // Distinct seconds: never two runs for one tick.
    let mut starts: Vec<&str> = runs.iter().map(|r| &r.started_at[..19]).collect();
    starts.dedup();
    assert_eq!(starts.len(), runs.len());
}

#[tokio::test]
async fn a_tick_that_finds_the_job_running_is_skipped() {
    let fx = fixture();
    let engine = RustEngine::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(2_300)).await;
            Ok(())
        })
    });
    let jobs = start(
        &fx,
        vec![def("slow", json!({"schedule": "*/1 * * * * *"}))],
        engine.clone(),
        config(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(engine.max_active.load(Ordering::SeqCst), 1, "overlapped");
    let calls = engine.calls.load(Ordering::SeqCst);
    assert!((2..=3).contains(&calls), "{calls} runs");
    assert!(jobs.stats().skipped.load(Ordering::Relaxed) >= 2);
    while !jobs.list()[0].running {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        jobs.run_now("slow").await,
        Err(JobsError::AlreadyRunning(_))
    ));
    jobs.shutdown().await;
}

#[tokio::test]
async fn retry_then_success_emits_started_then_completed_attempt_2() {
    let mut fx = fixture();
    let engine = RustEngine::new(|attempt| {
        Box::pin(async move {
            if attempt == 1 {
                Err("flaky".to_string())
            } else {
                Ok(())
            }
        })
    });
    let jobs = start(
        &fx,
        vec![def(
            "flaky",
            json!({"schedule": "@yearly", "retryDelay": 300}),
        )],
        engine.clone(),
        config(),
    )
    .await;
    let t0 = Instant::now();
    let run = jobs.run_now("flaky").await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300), "no retry delay");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.attempt, 2);
    assert!(run.duration_ms.unwrap() >= 300);
    let events = job_events(&mut fx.events);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["job.started", "job.completed"]);
    assert_eq!(
        *events[0].envelope_json(),
        *format!(
            r#"{{"id":"{}","type":"job.started","timestamp":"{}","source":"jobs","payload":{{"name":"flaky","filePath":"jobs/flaky.ts","schedule":"@yearly","runId":"{}"}},"seq":{}}}"#,
            events[0].id,
            events[0].timestamp,
            run.run_id,
            events[0]
                .seq
                .expect("job events are journaled with the run's history")
        )
    );
    let p = &events[1].payload;
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "filePath",
            "schedule",
            "runId",
            "durationMs",
            "attempt"
        ]
    );
    assert_eq!(p["attempt"], 2);
    assert_eq!(p["runId"], run.run_id.as_str());
    let runs = jobs.runs("flaky").await.unwrap();
    assert_eq!(runs, vec![run]);
    // One run, counted once by its outcome however many attempts it took.
    let stats = jobs.stats();
    let counts =
        [&stats.started, &stats.completed, &stats.failed].map(|c| c.load(Ordering::Relaxed));
    assert_eq!(counts, [1, 1, 0]);
    jobs.shutdown().await;
}

#[tokio::test]
async fn final_failure_after_the_configured_attempts() {
    let mut fx = fixture();
    let engine = RustEngine::new(|attempt| Box::pin(async move { Err(format!("boom {attempt}")) }));
    let jobs = start(
        &fx,
        vec![def(
            "bad",
            json!({"schedule": "@yearly", "retries": 3, "retryDelay": 10}),
        )],
        engine.clone(),
        config(),
    )
    .await;
    let run = jobs.run_now("bad").await.unwrap();
    assert_eq!(engine.calls.load(Ordering::SeqCst), 4);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempt, 4);
    assert_eq!(run.error.as_deref(), Some("boom 4"));
    let events = job_events(&mut fx.events);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["job.started", "job.failed"]);
    let keys: Vec<&str> = events[1]
        .payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "name",
            "filePath",
            "schedule",
            "runId",
            "error",
            "durationMs",
            "attempt"
        ]
    );
    assert_eq!(events[1].payload["error"], "boom 4");
    assert_eq!(events[1].payload["attempt"], 4);
    let stats = jobs.stats();
    let counts =
        [&stats.started, &stats.completed, &stats.failed].map(|c| c.load(Ordering::Relaxed));
    assert_eq!(counts, [1, 0, 1]);
    jobs.shutdown().await;
}

#[tokio::test]
async fn history_is_capped_per_job_and_survives_a_restart() {
    let fx = fixture();
    let engine = RustEngine::new(|_| ok());
    let cfg = JobsConfig {
        history_limit: 3,
        ..config()
    };
    let defs = || {
        vec![
            def("a", json!({"schedule": "@yearly"})),
            def("b", json!({"schedule": "@yearly"})),
        ]
    };
    let jobs = start(&fx, defs(), engine.clone(), cfg.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(jobs.run_now("a").await.unwrap().run_id);
    }
    jobs.run_now("b").await.unwrap();
    let runs = jobs.runs("a").await.unwrap();
    let got: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(got, ids[2..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(jobs.runs("b").await.unwrap().len(), 1);
    assert!(matches!(
        jobs.runs("nope").await,
        Err(JobsError::NotFound(_))
    ));
    jobs.shutdown().await;

    // A new scheduler on the same database (a restart) sees the same history, also for a job
    // whose file is gone.
    let jobs = start(
        &fx,
        vec![def("a", json!({"schedule": "@yearly"}))],
        engine,
        cfg,
    )
    .await;
    assert_eq!(jobs.runs("a").await.unwrap().len(), 3);
    assert_eq!(jobs.runs("b").await.unwrap().len(), 1);
    jobs.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_bounded_and_records_the_interrupted_run() {
    let fx = fixture();
    let release = Arc::new(tokio::sync::Notify::new());
    let r2 = release.clone();
    let engine = RustEngine::new(move |_| {
        let r = r2.clone();
        Box::pin(async move {
            r.notified().await;
            Ok(())
        })
    });
    let jobs = Arc::new(
        start(
            &fx,
            vec![def("hang", json!({"schedule": "@yearly"}))],
            engine,
            config(),
        )
        .await,
    );
    let j2 = jobs.clone();
    let handle = tokio::spawn(async move { j2.run_now("hang").await });
    while !jobs.list()[0].running {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    jobs.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "shutdown not bounded"
    );
    let runs = jobs.history().list("hang").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(
        runs[0].error.as_deref(),
        Some(bakend_jobs::history::INTERRUPTED)
    );
    // No new runs once stopping.
    assert!(matches!(
        jobs.run_now("hang").await,
        Err(JobsError::ShuttingDown | JobsError::AlreadyRunning(_))
    ));
    release.notify_waiters();
    handle.abort();
}

#[tokio::test]
async fn a_run_left_running_by_a_crash_is_closed_at_start() {
    let fx = fixture();
    let history = bakend_jobs::History::new(fx.db.clone(), 10);
    let run = bakend_jobs::JobRun {
        run_id: "r1".into(),
        job: "x".into(),
        status: RunStatus::Running,
        attempt: 1,
        trigger: "schedule".into(),
        started_at: bakend_core::time::now_iso(),
        ended_at: None,
        duration_ms: None,
        node: None,
        error: None,
    };
    let ev = bakend_core::Event::new("job.started", bakend_core::EventSource::Jobs, json!({}));
    history.started(&run, ev).await.unwrap();
    history.recover().await.unwrap();
    let jobs = start(&fx, vec![], RustEngine::new(|_| ok()), config()).await;
    let runs = jobs.runs("x").await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(runs[0].ended_at.is_some());
    jobs.shutdown().await;
}

#[tokio::test]
async fn list_shows_schedule_zone_and_next_run() {
    let fx = fixture();
    let jobs = start(
        &fx,
        vec![def("nightly", json!({"schedule": "0 3 * * *"}))],
        RustEngine::new(|_| ok()),
        config(),
    )
    .await;
    let list = jobs.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].schedule, "0 3 * * *");
    assert_eq!(list[0].timezone, "UTC");
    let next = list[0].next_run.unwrap();
    assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00");
    assert!(next > chrono::Utc::now());
    jobs.shutdown().await;
}
