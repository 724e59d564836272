//! `ctx.db` against a real SQLite file, and the job runtime (`JobScripts`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use bakend_core::{Event, EventSource};
use bakend_events::{EventBus, LocalBus};
use bakend_functions::{FunctionsConfig, FunctionsHost, HostServices, JobScripts};
use serde_json::{Value, json};
use tempfile::TempDir;

fn project(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, src) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, src).unwrap();
    }
    dir
}

fn services(dir: &TempDir) -> HostServices {
    let path = dir.path().join("data.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, n REAL, data BLOB);",
        )
        .unwrap();
    HostServices {
        database: Some(Arc::new(move || rusqlite::Connection::open(&path))),
        ..HostServices::default()
    }
}

fn config() -> FunctionsConfig {
    FunctionsConfig {
        workers: 1,
        ..FunctionsConfig::default()
    }
}

/// Emits `test.run` and returns the final lifecycle event's payload.
fn run_once(dir: &TempDir, src: &str, cfg: FunctionsConfig) -> Value {
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(dir.path().join("functions/t.ts"), src).unwrap();
    let bus = LocalBus::new();
    let mut events = bus.subscribe("test", 1000);
    let host = FunctionsHost::start(dir.path(), bus.clone(), cfg, services(dir)).unwrap();
    bus.emit(Event::new("test.run", EventSource::System, json!({})));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < end, "no result");
        match events.try_recv() {
            Some(e)
                if e.event_type == "function.completed" || e.event_type == "function.failed" =>
            {
                host.shutdown();
                let mut p = e.payload.clone();
                p["type"] = json!(e.event_type);
                return p;
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn notes(dir: &TempDir) -> Vec<(i64, Option<String>)> {
    let conn = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
    conn.prepare("SELECT id, body FROM notes ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn db_calls_behave_like_bun_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_once(
        &dir,
        r#"import { on } from "bakend/functions";
        const eq = (a: unknown, b: unknown, what: string) => {
          if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${what}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
        };
        on("test.run", ({ db }) => {
          const r = db.query("INSERT INTO notes (body, n) VALUES (?, ?)").run("one", 1.5);
          eq(r, { changes: 1, lastInsertRowid: 1 }, "run");
          db.run("INSERT INTO notes (body, n) VALUES ($b, :n)", { $b: "two", n: 2 });
          db.prepare("INSERT INTO notes (body, data) VALUES (?, ?)").run("bytes", new Uint8Array([1, 2, 3]));
          eq(db.query("SELECT id, body FROM notes ORDER BY id").all(), [{ id: 1, body: "one" }, { id: 2, body: "two" }, { id: 3, body: "bytes" }], "all");
          eq(db.query("SELECT body FROM notes WHERE id = ?").get(2), { body: "two" }, "get");
          eq(db.query("SELECT body FROM notes WHERE id = ?").get(99), null, "get missing");
          eq(db.query("SELECT id, n FROM notes WHERE n IS NOT NULL").values(), [[1, 1.5], [2, 2]], "values");
          eq(Array.from(db.query("SELECT data FROM notes WHERE id = 3").get().data), [1, 2, 3], "blob");
          eq([...db.query("SELECT id FROM notes").iterate()].length, 3, "iterate");
          // A throwing transaction leaves nothing behind; a nested one rolls back alone.
          const add = db.transaction((body: string) => { db.run("INSERT INTO notes (body) VALUES (?)", [body]); if (body === "bad") throw new Error("nope"); });
          try { add("bad"); throw new Error("should throw"); } catch (e) { eq((e as Error).message, "nope", "tx error"); }
          const outer = db.transaction(() => {
            db.run("INSERT INTO notes (body) VALUES ('kept')");
            try { add("bad"); } catch {}
            eq(db.inTransaction, true, "inTransaction");
          });
          outer();
          eq(db.inTransaction, false, "after tx");
          for (const call of [() => db.close(), () => db.loadExtension("x"), () => db.serialize()]) {
            try { call(); throw new Error("allowed"); } catch (e) { if (!String((e as Error).message).includes("not allowed")) throw e; }
          }
          try { db.query("SELEKT 1").all(); throw new Error("bad SQL accepted"); } catch (e) { if (!String((e as Error).message).includes("SQLite")) throw e; }
        });"#,
        config(),
    );
    assert_eq!(out["type"], "function.completed", "{out}");
    assert_eq!(
        notes(&dir),
        vec![
            (1, Some("one".into())),
            (2, Some("two".into())),
            (3, Some("bytes".into())),
            (4, Some("kept".into())),
        ]
    );
}

#[test]
fn a_runaway_query_stops_at_the_time_limit_and_an_open_transaction_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_once(
        &dir,
        r#"import { on } from "bakend/functions";
        export const timeout = 300;
        on("test.run", ({ db }) => {
          db.exec("BEGIN IMMEDIATE");
          db.run("INSERT INTO notes (body) VALUES ('uncommitted')");
          db.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c").get();
        });"#,
        config(),
    );
    assert_eq!(out["type"], "function.failed", "{out}");
    assert_eq!(out["error"], "Function timed out after 300 ms");
    assert!(notes(&dir).is_empty());
    // The write lock was released: another connection can write.
    let conn = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
    conn.busy_timeout(Duration::from_millis(100)).unwrap();
    conn.execute("INSERT INTO notes (body) VALUES ('after')", [])
        .unwrap();
}

#[test]
fn job_scripts_report_exports_and_run_default_handlers() {
    let dir = project(&[
        (
            "jobs/cleanup.ts",
            r#"import { helper } from "./lib/helper.ts";
               export const schedule: string = "*/5 * * * *";
               export const retries = 2;
               export default async ({ job, db, logger }) => {
                 logger.info(`run ${job.name} ${job.runId} ${job.attempt}`);
                 db.run("INSERT INTO notes (body) VALUES (?)", [helper(job.name, job.attempt)]);
               };"#,
        ),
        (
            "jobs/lib/helper.ts",
            "export const helper = (n: string, a: number): string => `${n}#${a}`;",
        ),
        (
            "jobs/nested/slow.ts",
            "export const schedule = '@hourly'; export default () => { while (true) {} };",
        ),
        (
            "jobs/nested/throws.ts",
            "export default async () => { throw new Error('job broke'); };",
        ),
    ]);
    let (scripts, modules) = JobScripts::start(dir.path(), services(&dir), config()).unwrap();
    let names: Vec<_> = modules
        .iter()
        .map(|m| (m.name.as_str(), m.has_default))
        .collect();
    assert_eq!(
        names,
        vec![
            ("cleanup", true),
            ("lib/helper", false),
            ("nested/slow", true),
            ("nested/throws", true)
        ]
    );
    assert_eq!(modules[0].file, "jobs/cleanup.ts");
    assert_eq!(modules[0].exports["schedule"], "*/5 * * * *");
    assert_eq!(modules[0].exports["retries"], 2);
    assert!(
        !modules[1].exports.contains_key("helper"),
        "functions are not exports"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        scripts
            .run("cleanup", "run_1", 2, Duration::from_secs(5))
            .await
            .unwrap();
        let err = scripts
            .run("nested/slow", "run_2", 1, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err, "Job timed out after 200 ms");
        let err = scripts
            .run("nested/throws", "run_3", 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, "job broke");
        // After a recycled runtime the next run still works.
        scripts
            .run("cleanup", "run_4", 1, Duration::from_secs(5))
            .await
            .unwrap();
        let err = scripts
            .run("missing", "run_5", 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("no job named"), "{err}");
    });
    assert_eq!(
        notes(&dir)
            .into_iter()
            .map(|(_, b)| b.unwrap())
            .collect::<Vec<_>>(),
        vec!["cleanup#2", "cleanup#1"]
    );
}

#[test]
fn job_load_errors_name_the_job_file() {
    let dir = project(&[("jobs/bad.ts", "export const schedule = ;")]);
    let err = JobScripts::start(dir.path(), HostServices::default(), config())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("Failed to load job jobs/bad.ts:1:"),
        "{err}"
    );
    let dir = project(&[("jobs/throws.ts", "throw new Error('at load');")]);
    let err = JobScripts::start(dir.path(), HostServices::default(), config())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("Failed to load job jobs/throws.ts: at load"),
        "{err}"
    );
}
