//! End-to-end tests of the functions host on a real `LocalBus` with temp project folders.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use bakend_core::{Event, EventSource, SharedEvent};
use bakend_events::{EventBus, EventStream, LocalBus};
use bakend_functions::{FunctionsConfig, FunctionsError, FunctionsHost, HostServices};
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

fn config() -> FunctionsConfig {
    FunctionsConfig {
        workers: 1,
        ..FunctionsConfig::default()
    }
}

struct Harness {
    _dir: TempDir,
    bus: Arc<LocalBus>,
    events: EventStream,
    host: FunctionsHost,
}

fn start(files: &[(&str, &str)], cfg: FunctionsConfig) -> Harness {
    let dir = project(files);
    let bus = LocalBus::new();
    let events = bus.subscribe("test", 10_000);
    let host = FunctionsHost::start(dir.path(), bus.clone(), cfg, HostServices::default())
        .expect("host starts");
    Harness {
        _dir: dir,
        bus,
        events,
        host,
    }
}

impl Harness {
    fn emit(&self, ty: &str, payload: Value) -> SharedEvent {
        let source = if ty.starts_with("auth.") {
            EventSource::Auth
        } else {
            EventSource::Collections
        };
        self.bus.emit(Event::new(ty, source, payload))
    }

    /// Collects `function.*` events until `n` of them are `completed` or `failed`.
    fn finished(&mut self, n: usize, within: Duration) -> Vec<SharedEvent> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        let mut done = 0;
        while done < n {
            assert!(Instant::now() < end, "timed out; got {out:#?}");
            match self.events.try_recv() {
                Some(ev) if ev.event_type.starts_with("function.") => {
                    if ev.event_type != "function.started" {
                        done += 1;
                    }
                    out.push(ev);
                }
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        out
    }
}

fn finals(events: &[SharedEvent]) -> Vec<&SharedEvent> {
    events
        .iter()
        .filter(|e| e.event_type != "function.started")
        .collect()
}

fn assert_completed(events: &[SharedEvent]) {
    for e in finals(events) {
        assert_eq!(e.event_type, "function.completed", "{:#?}", e.payload);
    }
}

const POSTS: &str = r#"
import { onCreate, onUpdate, onDelete } from "bakend/functions";

function check(ctx: any, type: string) {
  if (ctx.event.type !== type) throw new Error(`wrong event ${ctx.event.type}`);
  if (ctx.event.source !== "collections") throw new Error("wrong source");
  if (ctx.record.id !== ctx.event.payload.id) throw new Error("record is not the payload");
  if (ctx.auth.user !== null) throw new Error("auth.user should be null");
  ctx.logger.info(`saw ${type}`, ctx.record.id);
}

onCreate("posts", async (ctx) => {
  check(ctx, "posts.created");
  if (ctx.record.title !== "hello") throw new Error(`title ${ctx.record.title}`);
});
onUpdate("posts", (ctx) => check(ctx, "posts.updated"));
onDelete("posts", (ctx) => check(ctx, "posts.deleted"));
"#;

const AUTH: &str = r#"
import { onLogin, onRegister, onLogout } from "bakend/functions";
const check = (ctx: any) => {
  if (ctx.auth.user?.email !== "a@b.c") throw new Error("no auth.user");
  if (ctx.record.email !== "a@b.c") throw new Error("no record");
};
onLogin("users", check);
onRegister("users", check);
onLogout("users", check);
"#;

#[test]
fn every_trigger_fires_with_event_and_record() {
    let mut h = start(
        &[
            ("functions/posts/notify.ts", POSTS),
            ("functions/auth.ts", AUTH),
            (
                "functions/wild.ts",
                r#"import { on } from "bakend/functions";
                   on("posts.*", (ctx) => { if (!ctx.event.type.startsWith("posts.")) throw new Error("bad"); });"#,
            ),
        ],
        config(),
    );
    let t = h.host.triggers();
    let listed: Vec<_> = t
        .iter()
        .map(|t| (t.file.as_str(), t.trigger.as_str(), t.event_type.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("functions/auth.ts", "login", "auth.login"),
            ("functions/auth.ts", "register", "auth.register"),
            ("functions/auth.ts", "logout", "auth.logout"),
            ("functions/posts/notify.ts", "create", "posts.created"),
            ("functions/posts/notify.ts", "update", "posts.updated"),
            ("functions/posts/notify.ts", "delete", "posts.deleted"),
            ("functions/wild.ts", "event", "posts.*"),
        ]
    );

    let created = h.emit("posts.created", json!({"id": "rec_1", "title": "hello"}));
    let evs = h.finished(2, Duration::from_secs(10));
    assert_completed(&evs);
    let started: Vec<_> = evs
        .iter()
        .filter(|e| e.event_type == "function.started")
        .collect();
    assert_eq!(started.len(), 2);
    let create = evs
        .iter()
        .find(|e| e.event_type == "function.completed" && e.payload["trigger"] == "create")
        .unwrap();
    assert_eq!(
        create.payload,
        json!({"collection": "posts", "trigger": "create", "eventType": "posts.created",
               "filePath": "functions/posts/notify.ts", "eventId": created.id})
    );
    assert_eq!(create.source, EventSource::Functions);
    let wild = evs
        .iter()
        .find(|e| e.event_type == "function.completed" && e.payload["trigger"] == "event")
        .unwrap();
    assert_eq!(wild.payload["collection"], Value::Null);
    assert_eq!(wild.payload["eventType"], "posts.created");

    h.emit("posts.updated", json!({"id": "rec_1", "title": "x"}));
    h.emit("posts.deleted", json!({"id": "rec_1"}));
    assert_completed(&h.finished(4, Duration::from_secs(10)));

    for ty in ["auth.login", "auth.register", "auth.logout"] {
        h.emit(ty, json!({"id": "usr_1", "email": "a@b.c", "role": "user"}));
    }
    let evs = h.finished(3, Duration::from_secs(10));
    assert_completed(&evs);
    // Non-matching events run nothing.
    h.emit("comments.created", json!({"id": "rec_2"}));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        h.events
            .try_recv()
            .is_some_and(|e| e.event_type == "comments.created")
    );
    assert!(h.events.try_recv().is_none());
    assert_eq!(h.host.stats().trigger_counts(3), (1, 0));
}

#[test]
fn typescript_features_and_relative_imports() {
    let mut h = start(
        &[
            (
                "functions/lib/helpers.ts",
                r#"
                export enum Level { Low = 1, High = 10 }
                export interface Box<T> { value: T }
                export function wrap<T>(value: T): Box<T> { return { value }; }
                export const double = (n: number): number => n * 2;
                "#,
            ),
            (
                "functions/lib/more.ts",
                r#"import { double } from "../lib/helpers"; export const quad = (n: number) => double(double(n));"#,
            ),
            (
                "functions/posts/notify.ts",
                r#"
                import { onCreate } from "bakend/functions";
                import { Level, wrap, type Box } from "../lib/helpers.ts";
                import { quad } from "../lib/more";
                class Counter { private n: number = 0; inc(): number { return ++this.n; } }
                const c = new Counter();
                onCreate("posts", async ({ record }: { record: { n: number } }) => {
                  const b: Box<number> = wrap<number>(quad(record.n));
                  if (b.value !== 8 || Level.High !== 10 || c.inc() !== 1) throw new Error(`got ${b.value}`);
                });
                "#,
            ),
        ],
        config(),
    );
    h.emit("posts.created", json!({"id": "rec_1", "n": 2}));
    assert_completed(&h.finished(1, Duration::from_secs(10)));
}

#[test]
fn imports_outside_functions_or_missing_are_load_errors() {
    for (src, needle) in [
        (r#"import "../secret.ts";"#, "functions/"),
        (r#"import "./nope";"#, "not found"),
    ] {
        let dir = project(&[("functions/a.ts", src), ("secret.ts", "export {}")]);
        let err = FunctionsHost::start(
            dir.path(),
            LocalBus::new(),
            config(),
            HostServices::default(),
        )
        .err()
        .expect("load must fail");
        match err {
            FunctionsError::Load { file, message, .. } => {
                assert_eq!(file, "functions/a.ts");
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn compile_errors_name_file_and_line() {
    let dir = project(&[("functions/bad.ts", "const a = 1;\n\nconst b: number = ;\n")]);
    let err = FunctionsHost::start(
        dir.path(),
        LocalBus::new(),
        config(),
        HostServices::default(),
    )
    .err()
    .expect("compile must fail");
    let text = err.to_string();
    assert!(text.contains("functions/bad.ts:3:"), "{text}");
    assert!(matches!(err, FunctionsError::Compile { line: 3, .. }));
}

#[test]
fn missing_functions_folder_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let host = FunctionsHost::start(
        dir.path(),
        LocalBus::new(),
        config(),
        HostServices::default(),
    )
    .unwrap();
    assert!(host.triggers().is_empty());
    assert!(FunctionsHost::list(dir.path()).unwrap().is_empty());
}

#[test]
fn list_loads_without_a_server() {
    let dir = project(&[("functions/posts/notify.ts", POSTS)]);
    let t = FunctionsHost::list(dir.path()).unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].collection.as_deref(), Some("posts"));
    assert_eq!(t[0].file, "functions/posts/notify.ts");
}

#[test]
fn throwing_handler_fails_with_its_message() {
    let mut h = start(
        &[(
            "functions/t.ts",
            r#"import { onCreate, on } from "bakend/functions";
               onCreate("a", () => { throw new Error("boom " + 42); });
               onCreate("b", async () => { await null; throw "plain string"; });
               onCreate("c", () => { throw null; });
               onCreate("d", () => { onCreate("x", () => {}); });"#,
        )],
        config(),
    );
    for ty in ["a.created", "b.created", "c.created", "d.created"] {
        h.emit(ty, json!({}));
    }
    let evs = h.finished(4, Duration::from_secs(10));
    let f = finals(&evs);
    assert!(f.iter().all(|e| e.event_type == "function.failed"));
    assert_eq!(f[0].payload["error"], "boom 42");
    assert_eq!(f[1].payload["error"], "plain string");
    assert!(f[2].payload.get("error").is_none(), "{:?}", f[2].payload);
    assert!(
        f[3].payload["error"]
            .as_str()
            .unwrap()
            .contains("only be registered while loading")
    );
}

/// Runs `bad` then `good` payloads through the same trigger and expects failed then completed.
fn fail_then_recover(src: &str, cfg: FunctionsConfig, within: Duration) -> (String, Duration) {
    let mut h = start(&[("functions/f.ts", src)], cfg);
    let t0 = Instant::now();
    h.emit("x.created", json!({"bad": true}));
    let evs = h.finished(1, within);
    let took = t0.elapsed();
    let failed = finals(&evs)[0].clone();
    assert_eq!(failed.event_type, "function.failed", "{:?}", failed.payload);
    h.emit("x.created", json!({"bad": false}));
    let evs = h.finished(1, within);
    assert_completed(&evs);
    (
        failed.payload["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        took,
    )
}

#[test]
fn infinite_loop_is_interrupted_and_the_next_call_works() {
    let (err, took) = fail_then_recover(
        r#"import { onCreate } from "bakend/functions";
           export const timeout = 300;
           let calls = 0;
           onCreate("x", (ctx) => { calls++; if (ctx.record.bad) { try { while (true) {} } catch {} } });"#,
        config(),
        Duration::from_secs(10),
    );
    assert!(err.contains("timed out after 300 ms"), "{err}");
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn never_resolving_await_fails_at_the_time_limit() {
    let (err, took) = fail_then_recover(
        r#"import { onCreate } from "bakend/functions";
           export const timeout = 200;
           onCreate("x", async (ctx) => { if (ctx.record.bad) await new Promise(() => {}); });"#,
        config(),
        Duration::from_secs(10),
    );
    assert!(err.contains("timed out after 200 ms"), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn memory_limit_fails_the_call_and_the_next_call_works() {
    let (err, _) = fail_then_recover(
        r#"import { onCreate } from "bakend/functions";
           export const timeout = 20000;
           onCreate("x", (ctx) => {
             if (!ctx.record.bad) return;
             const keep: number[][] = [];
             while (true) keep.push(new Array(10000).fill(1));
           });"#,
        FunctionsConfig {
            memory_limit: 16 * 1024 * 1024,
            ..config()
        },
        Duration::from_secs(30),
    );
    assert!(err.contains("out of memory"), "{err}");
}

#[test]
fn infinite_recursion_fails_and_the_next_call_works() {
    let (err, _) = fail_then_recover(
        r#"import { onCreate } from "bakend/functions";
           const f = (n: number): number => f(n + 1) + 1;
           onCreate("x", (ctx) => { if (ctx.record.bad) f(0); });"#,
        config(),
        Duration::from_secs(10),
    );
    assert!(!err.is_empty());
}

#[test]
fn a_full_queue_is_counted_and_reported() {
    let mut h = start(
        &[(
            "functions/slow.ts",
            r#"import { onCreate } from "bakend/functions";
               onCreate("x", () => { const end = Date.now() + 300; while (Date.now() < end) {} });"#,
        )],
        FunctionsConfig {
            queue_capacity: 1,
            ..config()
        },
    );
    for _ in 0..10 {
        h.emit("x.created", json!({}));
    }
    let stats = h.host.stats();
    let end = Instant::now() + Duration::from_secs(5);
    while stats.dropped.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < end, "nothing dropped");
        std::thread::sleep(Duration::from_millis(5));
    }
    let evs = h.finished(10, Duration::from_secs(10));
    let dropped = finals(&evs)
        .into_iter()
        .filter(|e| {
            e.event_type == "function.failed"
                && e.payload["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("queue is full"))
        })
        .count() as u64;
    assert!(dropped >= 1);
    assert_eq!(
        dropped,
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    h.host.shutdown();
}
