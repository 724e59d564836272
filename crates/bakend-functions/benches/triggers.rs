//! Trigger overhead: events per second through a no-op trigger and through one that runs a
//! database query, on the real functions host (bus → dispatcher → JS worker → lifecycle events).
//! `cargo bench -p bakend-functions`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use bakend_core::{Event, EventSource};
use bakend_events::{EventBus, LocalBus};
use bakend_functions::{FunctionsConfig, FunctionsHost, HostServices};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const BATCH: u64 = 500;

fn host(src: &str, workers: usize) -> (tempfile::TempDir, Arc<LocalBus>, FunctionsHost) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(dir.path().join("functions/bench.ts"), src).unwrap();
    let path = dir.path().join("data.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE posts (id TEXT PRIMARY KEY, title TEXT);
         INSERT INTO posts VALUES ('rec_1', 'hello');",
    )
    .unwrap();
    let services = HostServices {
        database: Some(Arc::new(move || rusqlite::Connection::open(&path))),
        ..HostServices::default()
    };
    let bus = LocalBus::new();
    let config = FunctionsConfig {
        workers,
        queue_capacity: BATCH as usize * 2,
        ..FunctionsConfig::default()
    };
    let host = FunctionsHost::start(dir.path(), bus.clone(), config, services).unwrap();
    (dir, bus, host)
}

fn run(c: &mut Criterion, name: &str, src: &str) {
    let (_dir, bus, _host) = host(src, 1);
    let mut done = bus.subscribe("bench", 100_000);
    let mut g = c.benchmark_group("triggers");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for _ in 0..BATCH {
                    bus.emit(Event::new(
                        "posts.created",
                        EventSource::Collections,
                        json!({"id": "rec_1", "title": "hello"}),
                    ));
                }
                let mut finished = 0;
                while finished < BATCH {
                    match done.try_recv() {
                        Some(e) if e.event_type == "function.completed" => finished += 1,
                        Some(e) if e.event_type == "function.failed" => panic!("{:?}", e.payload),
                        Some(_) => {}
                        None => std::thread::yield_now(),
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    run(
        c,
        "noop",
        r#"import { onCreate } from "bakend/functions"; onCreate("posts", () => {});"#,
    );
    run(
        c,
        "db_query",
        r#"import { onCreate } from "bakend/functions";
           onCreate("posts", ({ record, db }) => {
             const row = db.query("SELECT title FROM posts WHERE id = ?").get(record.id);
             if (!row) throw new Error("missing");
           });"#,
    );
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(group);
