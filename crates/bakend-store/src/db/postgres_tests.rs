//! The store on PostgreSQL: start-ups racing on an empty schema, and the journal's order when
//! several servers commit at once (issue 17). Skipped, with a line saying so, unless
//! `BAKEND_TEST_POSTGRES` names a server.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bakend_core::config::{DatabaseLocation, PostgresSettings};
use bakend_core::{Event, EventSource};
use serde_json::json;

use super::{Committed, Database};
use crate::sql::testing;

fn open(cfg: &PostgresSettings) -> Database {
    Database::open_with(
        &DatabaseLocation::Postgres(cfg.clone()),
        bakend_events::LocalBus::new(),
        Some(64),
    )
    .expect("open on PostgreSQL")
}

/// Four servers starting at once on an empty schema: one migrates, the others wait for it,
/// and all of them end up on the same, complete schema and journal epoch.
#[test]
fn start_ups_racing_on_an_empty_schema_all_succeed() {
    let Some(schema) = testing::postgres("start_ups_racing_on_an_empty_schema_all_succeed") else {
        return;
    };
    let opened: Vec<Database> = (0..4)
        .map(|_| {
            let cfg = schema.cfg.clone();
            std::thread::spawn(move || open(&cfg))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("open thread"))
        .collect();
    let epochs: Vec<String> = opened
        .iter()
        .map(|db| db.journal().expect("journal on").epoch.clone())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let version = rt
        .block_on(opened[0].read(super::migrations::current_version))
        .expect("version");
    assert_eq!(version, super::migrations::SCHEMA_VERSION);
    for db in &opened {
        db.close();
    }
}

/// Three servers on one database, each with several concurrent writers, and a random pause
/// between each group's journal append and its commit; readers tail the journal meanwhile.
/// No reader ever sees a seq before all the seqs below it (a gap filled later), the journal
/// ends contiguous from 1, and each writer's events appear in the order it committed them.
///
/// (The store's PostgreSQL connections are synchronous, as SQLite's are: they are opened and
/// dropped outside the async runtime, on the store's own threads.)
#[test]
fn journal_seqs_are_contiguous_and_in_commit_order_across_servers() {
    let Some(schema) =
        testing::postgres("journal_seqs_are_contiguous_and_in_commit_order_across_servers")
    else {
        return;
    };
    super::writer::tests_support::MAX_COMMIT_DELAY_US.store(3_000, Ordering::Relaxed);
    let nodes: Vec<Arc<Database>> = (0..3).map(|_| Arc::new(open(&schema.cfg))).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(tail_while_writing(&nodes));
    super::writer::tests_support::MAX_COMMIT_DELAY_US.store(0, Ordering::Relaxed);
    for db in &nodes {
        db.close();
    }
}

async fn tail_while_writing(nodes: &[Arc<Database>]) {
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    let done = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for (r, db) in nodes.iter().take(2).enumerate() {
        let db = db.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut last = 0u64;
            let mut polls = 0u32;
            loop {
                let finished = done.load(Ordering::Acquire);
                let seen = db
                    .read_journal(last, i64::MAX as u64, 100_000, Box::new(|_, _| true))
                    .await
                    .expect("read the journal")
                    .expect("nothing trimmed");
                for e in &seen {
                    assert_eq!(
                        e.seq,
                        last + 1,
                        "reader {r} saw seq {} right after {last}: a gap",
                        e.seq
                    );
                    last = e.seq;
                }
                polls += 1;
                if finished && seen.is_empty() {
                    return (last, polls);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }

    let mut writers = Vec::new();
    for (n, db) in nodes.iter().enumerate() {
        for w in 0..WRITERS {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                for k in 0..WRITES {
                    let e = Event::new(
                        "orders.created",
                        EventSource::Collections,
                        json!({"id": format!("{n}-{w}-{k}"), "node": n, "writer": w, "k": k}),
                    );
                    db.write(move |_| Ok(Committed::new(()).event(e)))
                        .await
                        .expect("write");
                }
            }));
        }
    }
    for w in writers {
        w.await.expect("writer task");
    }
    done.store(true, Ordering::Release);
    let total = (nodes.len() * WRITERS * WRITES) as u64;
    for r in readers {
        let (last, polls) = r.await.expect("reader task");
        assert_eq!(last, total, "a reader saw every event");
        assert!(polls > 1);
    }

    let all = nodes[0]
        .read_journal(0, i64::MAX as u64, 1_000_000, Box::new(|_, _| true))
        .await
        .expect("read")
        .expect("nothing trimmed");
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // Each writer waits for its write before the next: its events must be in its own order.
    let mut next_k: HashMap<(u64, u64), u64> = HashMap::new();
    for e in &all {
        let v: serde_json::Value = serde_json::from_str(&e.envelope).expect("envelope");
        let p = &v["payload"];
        let key = (
            p["node"].as_u64().expect("node"),
            p["writer"].as_u64().expect("writer"),
        );
        let k = p["k"].as_u64().expect("k");
        let expected = next_k.entry(key).or_insert(0);
        assert_eq!(k, *expected, "writer {key:?} out of order at seq {}", e.seq);
        *expected += 1;
    }
    let epoch = &nodes[0].journal().expect("on").epoch;
    assert!(
        nodes
            .iter()
            .all(|n| n.journal().is_some_and(|j| &j.epoch == epoch))
    );
}

/// A wrong password is one clear line naming the URL without the password.
#[test]
fn a_wrong_password_is_named_without_the_password() {
    let Some(pg) = testing::PrivatePg::start("a_wrong_password_is_named_without_the_password")
    else {
        return;
    };
    let cfg = PostgresSettings {
        url: pg.url("not-the-password"),
        options: Default::default(),
    };
    let err = match crate::sql::PgConn::connect(&cfg) {
        Ok(_) => panic!("a wrong password was accepted"),
        Err(e) => crate::error::StoreError::from(e).to_string(),
    };
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        err.contains(&format!(
            "postgres://postgres:***@127.0.0.1:{}/postgres",
            pg.port
        )),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains('\n'),
        "{err}"
    );
}

/// PostgreSQL restarting under a stream of writes: writes in flight fail cleanly (unavailable,
/// never acknowledged and lost), the store reconnects by itself, and every acknowledged write
/// is there afterwards.
#[test]
fn a_postgres_restart_mid_stream_loses_no_acknowledged_write() {
    let Some(pg) =
        testing::PrivatePg::start("a_postgres_restart_mid_stream_loses_no_acknowledged_write")
    else {
        return;
    };
    let cfg = PostgresSettings {
        url: pg.url(testing::PRIVATE_PASSWORD),
        options: Default::default(),
    };
    let db = Arc::new(open(&cfg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(db.write(|c| {
        c.execute_batch("CREATE TABLE acked (id BIGINT PRIMARY KEY)")?;
        Ok(Committed::new(()))
    }))
    .expect("table");
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let after_restart = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let db = db.clone();
            let stop = stop.clone();
            let restarted = restarted.clone();
            let after_restart = after_restart.clone();
            rt.spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0u32);
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let id = w * 1_000_000 + n;
                    n += 1;
                    let e = Event::new(
                        "acked.created",
                        EventSource::Collections,
                        json!({"id": id.to_string()}),
                    );
                    match db
                        .write(move |c| {
                            c.execute("INSERT INTO acked (id) VALUES (?1)", [id])?;
                            Ok(Committed::new(()).event(e))
                        })
                        .await
                    {
                        Ok(()) => {
                            acked.push(id);
                            if restarted.load(Ordering::Relaxed) {
                                after_restart.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(crate::error::StoreError::Connect(_)) => {
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(other) => panic!("an unclean failure: {other}"),
                    }
                }
                (acked, unavailable)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    pg.restart();
    restarted.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut unavailable = 0;
    for w in writers {
        let (a, u) = rt.block_on(w).expect("writer");
        acked.extend(a);
        unavailable += u;
    }
    let stored: Vec<i64> = rt
        .block_on(db.read(|c| {
            let mut s = c.prepare("SELECT id FROM acked ORDER BY id")?;
            let ids = s
                .query_map((), |r| r.get(0))?
                .collect::<crate::sql::Result<Vec<i64>>>()?;
            Ok(ids)
        }))
        .expect("read after the restart");
    acked.sort_unstable();
    let missing: Vec<&i64> = acked
        .iter()
        .filter(|id| stored.binary_search(id).is_err())
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(
        acked.len() > 20,
        "writes went through before and after: {}",
        acked.len()
    );
    eprintln!(
        "{} acknowledged, {unavailable} refused as unavailable during the restart",
        acked.len()
    );
    db.close();
}
