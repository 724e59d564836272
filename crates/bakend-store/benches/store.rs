//! `cargo bench -p bakend-store`: the record store's hot paths without HTTP — validating a body,
//! and committing creates through the writer thread (group commit, fsync per batch).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use bakend_core::config::DatabaseLocation;
use bakend_events::{EventBus, LocalBus};
use bakend_store::collections::definition;
use bakend_store::collections::sync::{self, FileDefinition};
use bakend_store::records::validate::{Mode, validate};
use bakend_store::{Database, RecordStore, Registry};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn posts_def() -> serde_json::Value {
    json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "required": true, "max": 200},
        {"name": "body", "type": "text"},
        {"name": "views", "type": "integer", "min": 0},
        {"name": "score", "type": "float"},
        {"name": "published", "type": "boolean"},
        {"name": "when", "type": "datetime"}
    ]})
}

fn body() -> serde_json::Map<String, serde_json::Value> {
    json!({"title": "Hello", "body": "Some text here", "views": 3, "score": 2.5, "published": true, "when": "2024-01-01T10:00:00Z"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn bench_validate(c: &mut Criterion) {
    let def = definition::parse(&posts_def())
        .expect("valid definition")
        .def;
    let body = body();
    c.bench_function("validate_6_fields", |b| {
        b.iter(|| validate(&def, std::hint::black_box(&body), Mode::Create))
    });
}

fn bench_create(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let bus: Arc<dyn EventBus> = LocalBus::new();
    let db = Arc::new(
        Database::open(&DatabaseLocation::File(dir.path().join("b.db")), bus).expect("open"),
    );
    let registry = Arc::new(Registry::default());
    let parsed = definition::parse(&posts_def()).expect("valid definition");
    let files = vec![FileDefinition {
        path: dir.path().join("posts.json"),
        parsed,
    }];
    rt.block_on(sync::apply(&db, &registry, files))
        .expect("sync");
    let store = RecordStore::new(db.clone(), registry);
    let collection = store.collection("posts").expect("collection");

    let mut group = c.benchmark_group("create");
    group.measurement_time(Duration::from_secs(5));
    for concurrency in [1usize, 32, 256] {
        group.bench_function(format!("{concurrency}_concurrent"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let mut done = 0u64;
                    while done < iters {
                        let n = (iters - done).min(concurrency as u64);
                        let tasks: Vec<_> = (0..n)
                            .map(|_| {
                                let store = store.clone();
                                let c = collection.clone();
                                tokio::spawn(async move {
                                    store
                                        .create(
                                            c,
                                            body(),
                                            bakend_store::FileAccess::Any,
                                            Default::default(),
                                        )
                                        .await
                                })
                            })
                            .collect();
                        for t in tasks {
                            let _ = t.await;
                        }
                        done += n;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    db.close();
}

criterion_group!(benches, bench_validate, bench_create);
criterion_main!(benches);
