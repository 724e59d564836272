//! `cargo bench -p bakend-filter`: what a filtered subscription costs per (event, candidate) —
//! the in-memory evaluator on one record — and what checking a filter costs once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is a failed run

use bakend_filter::{Filter, Kind, RequestVars, Schema};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;

fn schema() -> Schema {
    Schema::new()
        .with_field("project", Kind::String)
        .with_field("title", Kind::String)
        .with_field("done", Kind::Boolean)
        .with_field("views", Kind::Integer)
        .with_field("due", Kind::Datetime)
        .with_field("user_id", Kind::String)
}

fn bench(c: &mut Criterion) {
    let schema = schema();
    let vars = RequestVars::anonymous("2026-12-04T12:00:00.000Z");
    let record = json!({
        "id": "rec_0193a1b2c3d4", "createdAt": "2026-12-04T10:00:00.000Z",
        "updatedAt": "2026-12-04T10:00:00.000Z", "project": "p1", "title": "Write the docs",
        "done": false, "views": 42, "due": "2026-12-10T00:00:00.000Z", "user_id": "usr_1"
    });
    for (name, src) in [
        ("equality", "project = 'p1'"),
        ("two_conditions", "project = 'p1' && done = false"),
        (
            "five_mixed",
            "project = 'p1' && done = false && views >= 10 && due > @now || user_id = 'usr_9'",
        ),
        ("contains_ci", "title ~ 'DOCS'"),
    ] {
        let f = Filter::new(src, &schema).unwrap();
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| black_box(f.matches(black_box(&record), &vars)))
        });
    }
    c.bench_function("check/five_mixed", |b| {
        b.iter(|| {
            Filter::new(
                black_box("project = 'p1' && done = false && views >= 10 && due > @now || user_id = 'usr_9'"),
                &schema,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
