//! User TypeScript functions run by the real server (issue 6): triggers fire off the HTTP path
//! and report through `function.*` events.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestServer, eventually, eventually_within, write_collections};

const NOTIFY: &str = r#"
import { onCreate } from "bakend/functions";
import { shout } from "./helpers";

onCreate("posts", async ({ record, logger }) => {
  logger.info(shout(`new post ${record.title}`));
  if (record.title !== "hello") throw new Error(`unexpected title ${record.title}`);
});
"#;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]})],
    );
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    for (rel, src) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, src).unwrap();
    }
    dir
}

#[tokio::test]
async fn on_create_runs_after_a_post_and_reports_lifecycle_events() {
    let dir = project(&[
        ("functions/posts/notify.ts", NOTIFY),
        (
            "functions/posts/helpers.ts",
            "export const shout = (s: string): string => s.toUpperCase();",
        ),
    ]);
    let mut s = TestServer::start_in(dir).await;
    let rec = s.create("posts", json!({"title": "hello"})).await;
    let mut seen = Vec::new();
    assert!(
        eventually(|| {
            seen.extend(s.take_events());
            seen.iter().any(|e| e.event_type == "function.completed")
        })
        .await,
        "no function.completed in {seen:#?}"
    );
    let created = seen
        .iter()
        .find(|e| e.event_type == "posts.created")
        .expect("posts.created");
    assert_eq!(created.payload["id"], rec["id"]);
    let kinds: Vec<_> = seen
        .iter()
        .filter(|e| e.event_type.starts_with("function."))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(kinds, vec!["function.started", "function.completed"]);
    let done = seen
        .iter()
        .find(|e| e.event_type == "function.completed")
        .unwrap();
    assert_eq!(
        done.payload,
        json!({"collection": "posts", "trigger": "create", "eventType": "posts.created",
               "filePath": "functions/posts/notify.ts", "eventId": created.id})
    );
    assert_eq!(done.source, bakend_core::EventSource::Functions);
    s.shutdown().await;
}

#[tokio::test]
async fn a_function_that_does_not_compile_stops_startup_naming_file_and_line() {
    let dir = project(&[("functions/bad.ts", "const a = 1;\nconst b: number = ;\n")]);
    let mut config =
        bakend_core::config::Config::load(Some(&dir.path().join("bakend.json")), &|_| None)
            .unwrap();
    config.port = 0;
    let err = bakend_server::start(config).await.err().expect("must fail");
    let text = err.to_string();
    assert!(text.contains("functions/bad.ts:2:"), "{text}");
}

#[test]
fn bak_functions_list_prints_triggers_without_a_server() {
    let dir = project(&[
        ("functions/posts/notify.ts", NOTIFY),
        (
            "functions/posts/helpers.ts",
            "export const shout = (s: string): string => s.toUpperCase();",
        ),
        (
            "functions/audit.ts",
            r#"import { on, onLogin } from "bakend/functions";
               on("posts.*", () => {});
               onLogin("users", () => {});"#,
        ),
    ]);
    let out = crate::harness::bak_in(dir.path())
        .args(["functions", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-\tevent\tposts.*\tfunctions/audit.ts\n\
         users\tlogin\tauth.login\tfunctions/audit.ts\n\
         posts\tcreate\tposts.created\tfunctions/posts/notify.ts\n"
    );
    std::fs::remove_dir_all(dir.path().join("functions")).unwrap();
    let out = crate::harness::bak_in(dir.path())
        .args(["functions", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No function triggers registered.\n"
    );
}

#[tokio::test]
async fn admins_list_triggers_with_invocation_counts() {
    let dir = project(&[
        ("functions/posts/notify.ts", NOTIFY),
        (
            "functions/posts/helpers.ts",
            "export const shout = (s: string): string => s.toUpperCase();",
        ),
    ]);
    let env_dir = dir;
    let mut s =
        TestServer::start_in_with_env(env_dir, &[("BAKEND_ADMIN_EMAIL", "root@example.com")]).await;
    let admin = s.register("root@example.com").await;
    s.create("posts", json!({"title": "hello"})).await;
    s.create("posts", json!({"title": "other"})).await;
    let mut done = 0;
    assert!(
        eventually(|| {
            done += s
                .take_events()
                .iter()
                .filter(|e| {
                    matches!(
                        e.event_type.as_str(),
                        "function.completed" | "function.failed"
                    )
                })
                .count();
            done >= 2
        })
        .await
    );
    let r = s
        .call(
            reqwest::Method::GET,
            "/api/admin/functions",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"items": [{"collection": "posts", "type": "create", "eventType": "posts.created",
                          "filePath": "functions/posts/notify.ts", "invocations": 2, "failures": 1}]})
    );
    let anon = s.get("/api/admin/functions").await;
    assert_eq!(anon.status, 401);
    s.shutdown().await;
}

/// posts (title) and audit (note, postId), both public.
fn project_with_audit(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = project(files);
    write_collections(
        dir.path(),
        &[json!({"name": "audit", "fields": [
            {"name": "note", "type": "string"},
            {"name": "post_id", "type": "string"}
        ]})],
    );
    dir
}

/// Waits for `n` finished (`completed`/`failed`) function events and returns every function
/// event seen.
async fn finished(s: &mut TestServer, n: usize) -> Vec<bakend_core::SharedEvent> {
    let mut seen = Vec::new();
    let ok = eventually_within(Duration::from_secs(10), || {
        seen.extend(
            s.take_events()
                .into_iter()
                .filter(|e| e.event_type.starts_with("function.")),
        );
        seen.iter()
            .filter(|e| e.event_type != "function.started")
            .count()
            >= n
    })
    .await;
    assert!(ok, "expected {n} finished invocations, saw {seen:#?}");
    seen
}

/// On PostgreSQL `ctx.db` throws the documented error (docs/functions.md) at every use, and the
/// function goes on with `ctx.records`.
#[tokio::test]
async fn on_postgresql_ctx_db_throws_the_documented_error() {
    let Some(pg) = crate::pg::reachable_server("on_postgresql_ctx_db_throws_the_documented_error")
    else {
        return;
    };
    let dir = project_with_audit(&[(
        "functions/posts/db.ts",
        r#"import { onCreate } from "bakend/functions";
           onCreate("posts", async ({ record, db, records }) => {
             const errors = [];
             for (const use of [() => db.query("SELECT 1").get(), () => db.exec("SELECT 1"), () => db.run("SELECT 1")]) {
               try { use(); errors.push("no error"); } catch (e) { errors.push(String(e.message)); }
             }
             await records.create("audit", { note: JSON.stringify(errors), post_id: record.id });
           });"#,
    )]);
    let database = crate::pg::new_database(&pg);
    let mut s = TestServer::start_in_with_env(dir, &[("BAKEND_DATABASE", &database)]).await;
    let post = s.create("posts", json!({"title": "x"})).await;
    let seen = finished(&mut s, 1).await;
    assert!(
        seen.iter().all(|e| e.event_type != "function.failed"),
        "{seen:#?}"
    );
    let audit = s.get("/api/audit").await.json();
    assert_eq!(audit["items"][0]["post_id"], post["id"]);
    let errors: Vec<String> =
        serde_json::from_str(audit["items"][0]["note"].as_str().unwrap()).unwrap();
    let documented = "cannot open the database: ctx.db is not available when the store is PostgreSQL; use ctx.records (docs/functions.md)";
    assert_eq!(errors, [documented; 3]);
    s.shutdown().await;
}

#[tokio::test]
async fn ctx_records_writes_are_seen_live_and_auth_user_is_the_acting_user() {
    let dir = project_with_audit(&[(
        "functions/posts/audit.ts",
        r#"import { onCreate } from "bakend/functions";
           interface Ctx { record: { id: string; title: string }; auth: { user: { email: string } | null }; records: any }
           onCreate("posts", async ({ record, auth, records }: Ctx) => {
             const who = auth.user ? auth.user.email : "anonymous";
             const a = await records.create("audit", { note: `${record.title} by ${who}`, post_id: record.id });
             const back = await records.get("audit", a.id);
             if (back.note !== a.note) throw new Error("get did not return the created record");
             const page = await records.list("audit", { perPage: 1, sort: "-createdAt" });
             if (page.items.length !== 1 || page.perPage !== 1) throw new Error("list options ignored");
           });"#,
    )]);
    let mut s = TestServer::start_in(dir).await;
    let (mut ws, _) = crate::ws::Ws::connect(&s.ws_url()).await;
    ws.subscribe("audit.created").await;
    let user = s.register("writer@example.com").await;
    let r = s
        .call(
            reqwest::Method::POST,
            "/api/posts",
            Some(&user.token),
            Some(&json!({"title": "hello"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let post = r.json();
    let frame = ws.next().await;
    assert_eq!(frame["type"], "event", "{frame}");
    assert_eq!(frame["event"]["type"], "audit.created");
    assert_eq!(
        frame["event"]["payload"]["note"],
        "hello by writer@example.com"
    );
    assert_eq!(frame["event"]["payload"]["post_id"], post["id"]);
    // An anonymous request has no acting user.
    s.create("posts", json!({"title": "anon"})).await;
    let frame = ws.next().await;
    assert_eq!(frame["event"]["payload"]["note"], "anon by anonymous");
    let seen = finished(&mut s, 2).await;
    assert!(
        seen.iter().all(|e| e.event_type != "function.failed"),
        "{seen:#?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn previous_holds_the_record_before_update_and_delete_and_db_reads_it() {
    if crate::pg::skip_on_postgres(
        "previous_holds_the_record_before_update_and_delete_and_db_reads_it",
        "ctx.db is SQLite's own API, refused on PostgreSQL",
    ) {
        return;
    }
    let dir = project_with_audit(&[(
        "functions/posts/history.ts",
        r#"import { onUpdate, onDelete } from "bakend/functions";
           onUpdate("posts", async ({ record, previous, db }) => {
             db.exec("CREATE TABLE IF NOT EXISTS seen (kind TEXT, before TEXT, after TEXT)");
             db.query("INSERT INTO seen (kind, before, after) VALUES (?, ?, ?)").run("update", previous.title, record.title);
           });
           onDelete("posts", async ({ record, previous, db }) => {
             db.run("INSERT INTO seen (kind, before, after) VALUES ($k, $b, $a)", { $k: "delete", $b: previous.title, $a: record.id });
             const row = db.query("SELECT count(*) AS n FROM posts WHERE id = ?").get(record.id);
             if (row.n !== 0) throw new Error("the deleted record is still there");
           });"#,
    )]);
    let mut s = TestServer::start_in(dir).await;
    let rec = s.create("posts", json!({"title": "first"})).await;
    let id = rec["id"].as_str().unwrap();
    let r = s
        .put(&format!("/api/posts/{id}"), &json!({"title": "second"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    finished(&mut s, 1).await;
    assert_eq!(s.delete(&format!("/api/posts/{id}")).await.status, 204);
    let seen = finished(&mut s, 1).await;
    assert!(
        seen.iter().all(|e| e.event_type != "function.failed"),
        "{seen:#?}"
    );
    let conn = rusqlite::Connection::open(s.dir.path().join("bakend.db")).unwrap();
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT kind, before, after FROM seen ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            ("update".into(), "first".into(), "second".into()),
            ("delete".into(), "second".into(), id.to_string()),
        ]
    );
    s.shutdown().await;
}

#[tokio::test]
async fn ctx_storage_gets_and_deletes_files() {
    let dir = project(&[(
        "functions/files.ts",
        r#"import { on } from "bakend/functions";
           on("storage.uploaded", async ({ event, storage }) => {
             const meta = await storage.get(event.payload.id);
             if (!meta || meta.filename !== "note.txt") throw new Error(`bad metadata ${JSON.stringify(meta)}`);
             if ((await storage.get("file_missing")) !== null) throw new Error("unknown file should be null");
             if (!(await storage.delete(meta.id))) throw new Error("delete said false");
             if (await storage.delete(meta.id)) throw new Error("second delete said true");
           });"#,
    )]);
    let mut s = TestServer::start_in(dir).await;
    let user = s.register("files@example.com").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec())
            .file_name("note.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let r = s
        .http
        .post(format!("{}/api/storage/upload", s.url))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let file: serde_json::Value = r.json().await.unwrap();
    let seen = finished(&mut s, 1).await;
    assert!(
        seen.iter().any(|e| e.event_type == "function.completed"),
        "{seen:#?}"
    );
    let id = file["id"].as_str().unwrap();
    let r = s
        .call(
            reqwest::Method::GET,
            &format!("/api/storage/{id}"),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "the function deleted the file: {}", r.text);
    s.shutdown().await;
}

#[tokio::test]
async fn a_trigger_that_keeps_retriggering_itself_is_stopped() {
    let dir = project(&[(
        "functions/loop.ts",
        r#"import { onCreate } from "bakend/functions";
           onCreate("posts", async ({ records }) => { await records.create("posts", { title: "again" }); });"#,
    )]);
    let mut s = TestServer::start_in(dir).await;
    s.create("posts", json!({"title": "start"})).await;
    let mut failed = None;
    assert!(
        eventually(|| {
            failed = s
                .take_events()
                .into_iter()
                .find(|e| e.event_type == "function.failed")
                .or(failed.take());
            failed.is_some()
        })
        .await
    );
    let failed = failed.unwrap();
    assert!(
        failed.payload["error"]
            .as_str()
            .unwrap()
            .contains("Trigger chain too deep"),
        "{failed:?}"
    );
    let list = s.get("/api/posts").await.json();
    // The client's post and one per allowed level of function writes.
    assert_eq!(
        list["totalItems"],
        1 + u64::from(bakend_functions::MAX_TRIGGER_DEPTH)
    );
    s.shutdown().await;
}

async fn post_title(http: &reqwest::Client, url: &str, title: &str) {
    let r = http
        .post(format!("{url}/api/posts"))
        .json(&json!({"title": title}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// The notes of the audit records, oldest first.
async fn audit_notes(http: &reqwest::Client, url: &str) -> Vec<String> {
    let v: serde_json::Value = http
        .get(format!("{url}/api/audit?sort=createdAt&perPage=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn runtime_errors_are_logged_with_the_typescript_line() {
    let dir = project(&[(
        "functions/posts/fail.ts",
        "import { onCreate } from \"bakend/functions\";\n\
         type Post = { title: string };\n\
         interface Unused { a: number }\n\
         \n\
         onCreate(\"posts\", ({ record }: { record: Post }) => {\n\
         \x20 const t: string = record.title;\n\
         \x20 throw new Error(`bad ${t}`);\n\
         });\n",
    )]);
    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    post_title(&http, &bak.url(), "x").await;
    let mut stderr = String::new();
    let found = eventually_within(Duration::from_secs(20), || {
        stderr = bak.stderr();
        stderr.contains("bad x")
    })
    .await;
    assert!(found, "{stderr}");
    // Line 7 of the .ts file (the transpiled JS has no types, so its lines differ).
    assert!(stderr.contains("functions/posts/fail.ts:7:"), "{stderr}");
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}

#[tokio::test]
async fn hot_reload_swaps_functions_and_keeps_the_old_ones_on_a_broken_edit() {
    let version = |v: &str| {
        format!(
            "import {{ onCreate }} from \"bakend/functions\";\n\
             onCreate(\"posts\", async ({{ record, records }}) => {{\n\
             \x20 await records.create(\"audit\", {{ note: `{v} ${{record.title}}` }});\n\
             }});\n"
        )
    };
    let dir = project_with_audit(&[("functions/posts/a.ts", &version("v1"))]);
    let file = dir.path().join("functions/posts/a.ts");
    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &["--watch"]);
    bak.wait_ready().await;
    let (http, url) = (reqwest::Client::new(), bak.url());

    // Polls: posts `title` until the newest audit note is `want`.
    async fn until_note(http: &reqwest::Client, url: &str, title: &str, want: &str) -> bool {
        for _ in 0..100 {
            post_title(http, url, title).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if audit_notes(http, url).await.last().map(String::as_str) == Some(want) {
                return true;
            }
        }
        false
    }
    assert!(
        until_note(&http, &url, "a", "v1 a").await,
        "{}",
        bak.stderr()
    );

    std::fs::write(&file, version("v2")).unwrap();
    assert!(
        until_note(&http, &url, "b", "v2 b").await,
        "{}",
        bak.stderr()
    );

    // A syntax error on line 3: logged with the file and line, v2 keeps running.
    std::fs::write(
        &file,
        "import { onCreate } from \"bakend/functions\";\n\n const x = ;\n",
    )
    .unwrap();
    let mut stderr = String::new();
    assert!(
        eventually_within(Duration::from_secs(20), || {
            stderr = bak.stderr();
            stderr.contains("Function reload failed")
        })
        .await,
        "{stderr}"
    );
    assert!(stderr.contains("functions/posts/a.ts:3:"), "{stderr}");
    post_title(&http, &url, "c").await;
    assert!(
        until_note(&http, &url, "c", "v2 c").await,
        "{}",
        bak.stderr()
    );

    std::fs::write(&file, version("v3")).unwrap();
    assert!(
        until_note(&http, &url, "d", "v3 d").await,
        "{}",
        bak.stderr()
    );
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}

/// Median of sequential GET latencies, in microseconds.
async fn median_get_us(s: &TestServer, path: &str, n: usize) -> u128 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        assert_eq!(s.get(path).await.status, 200);
        v.push(t.elapsed().as_micros());
    }
    v.sort_unstable();
    v[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_function_does_not_slow_rest_for_other_clients() {
    let dir = project(&[(
        "functions/spin.ts",
        r#"import { onCreate } from "bakend/functions";
           export const timeout = 3000;
           onCreate("posts", ({ record }) => { if (record.title === "spin") { while (true) {} } });"#,
    )]);
    let mut s = TestServer::start_in(dir).await;
    let rec = s.create("posts", json!({"title": "calm"})).await;
    let path = format!("/api/posts/{}", rec["id"].as_str().unwrap());
    median_get_us(&s, &path, 30).await;
    let baseline = median_get_us(&s, &path, 100).await;
    s.take_events();
    s.create("posts", json!({"title": "spin"})).await;
    let during = median_get_us(&s, &path, 100).await;
    // The measurement ran while the handler was still spinning (its limit is 3 s).
    let events = s.take_events();
    assert!(
        events.iter().any(|e| e.event_type == "function.started")
            && !events.iter().any(|e| e.event_type == "function.failed"),
        "the runaway was not running during the measurement: {events:#?}"
    );
    println!("REST GET median: {baseline} µs before, {during} µs while a function spins");
    // 2× the baseline, with a 1 ms floor for timer noise on a loaded CI machine.
    assert!(
        during <= 2 * baseline + 1000,
        "GET median {during} µs while a function spins, {baseline} µs before"
    );
    let failed = finished(&mut s, 1).await;
    assert!(
        failed.iter().any(|e| e.event_type == "function.failed"
            && e.payload["error"] == "Function timed out after 3000 ms"),
        "{failed:#?}"
    );
    s.shutdown().await;
}

/// A function logging huge lines (issue 14 #5: five 20 MiB lines once grew the server by
/// 200 MiB and made `GET /api/admin/logs` answer 100 MiB). Each message is cut to 8 KiB and
/// marked, and the ring is bounded by bytes. The ring belongs to the running binary's log sink,
/// so this runs `bak start`.
#[tokio::test]
async fn huge_log_lines_are_cut_and_the_admin_logs_stay_small() {
    const ADMIN: &str = "root@example.com";
    let dir = project(&[(
        "functions/posts/loud.ts",
        "import { onCreate } from \"bakend/functions\";\n\
         onCreate(\"posts\", ({ record, logger }) => {\n\
         \x20 if (record.title === \"huge\") {\n\
         \x20   const big = \"é\".repeat(10 * 1024 * 1024);\n\
         \x20   for (let i = 0; i < 5; i++) logger.info(`huge-${i}:`, big);\n\
         \x20 } else {\n\
         \x20   for (let i = 0; i < 300; i++) logger.info(`many-${i}:`, \"x\".repeat(20 * 1024));\n\
         \x20 }\n\
         \x20 logger.info(`done ${record.title}`);\n\
         });\n",
    )]);
    let d = dir.path();
    crate::harness::bak_admin_create(d, ADMIN, "password123");
    let mut bak = crate::harness::BakProcess::spawn(d, &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    let url = bak.url();
    let login: serde_json::Value = http
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": ADMIN, "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let logs = || async {
        let r = http
            .get(format!("{url}/api/admin/logs?limit=500"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss_kib(bak.child.id());

    post_title(&http, &url, "huge").await;
    let mut body = String::new();
    for _ in 0..400 {
        body = logs().await;
        if body.contains("done huge") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        body.contains("done huge"),
        "{}",
        &body[..body.len().min(2000)]
    );
    eprintln!(
        "five 20 MiB log lines: RSS {before} KiB -> {} KiB, /api/admin/logs {} bytes",
        rss_kib(bak.child.id()),
        body.len()
    );
    let items: serde_json::Value = serde_json::from_str(&body).unwrap();
    let huge: Vec<&serde_json::Value> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().unwrap().starts_with("huge-"))
        .collect();
    assert_eq!(huge.len(), 5, "every huge line is kept, cut");
    for e in &huge {
        let m = e["message"].as_str().unwrap();
        assert_eq!(e["truncated"], true, "{}", &m[..100]);
        assert!(m.len() <= 8 * 1024 + 100, "cut to 8 KiB: {}", m.len());
        // 10 Mi "é" are 20 MiB of UTF-8; the cut kept whole characters.
        assert!(
            m.ends_with(&format!(
                "… [truncated, {} bytes] function=functions/posts/loud.ts",
                8 + 20 * 1024 * 1024
            )),
            "{}",
            &m[m.len() - 120..]
        );
    }
    assert!(body.len() < 100 * 1024, "{}", body.len());
    let short = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"].as_str().unwrap().starts_with("done huge"))
        .unwrap();
    assert!(short.get("truncated").is_none(), "{short}");

    // Many long (cut) lines: the ring keeps fewer than 500 of them, bounded by bytes.
    post_title(&http, &url, "many").await;
    for _ in 0..400 {
        body = logs().await;
        if body.contains("done many") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains("done many"));
    let items: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = items["items"].as_array().unwrap();
    let bytes: usize = items
        .iter()
        .map(|e| e["message"].as_str().unwrap().len())
        .sum();
    assert!(bytes <= 1024 * 1024, "ring bounded by bytes: {bytes}");
    assert!(body.len() < 1200 * 1024, "{}", body.len());
    assert!(items.len() < 300, "{} entries", items.len());
    assert!(
        items.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("done many"),
        "the newest entries are kept"
    );
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}

/// Runs every `ctx.db` attack of issue 14 #4 plus ordinary work, and records each outcome (the
/// error message, or "ran") in an `attempts` table the test reads afterwards. `__OUT__` is a
/// directory outside the project where the attacks try to create files.
const DB_ATTACKS: &str = r#"
  db.exec("CREATE TABLE IF NOT EXISTS attempts (name TEXT, outcome TEXT)");
  const attempt = (name: string, run: () => unknown) => {
    let outcome: string;
    try { run(); outcome = "ran"; }
    catch (e) { outcome = e instanceof Error ? e.message : `not an Error: ${String(e)}`; }
    db.query("INSERT INTO attempts VALUES (?, ?)").run(name, outcome);
  };
  attempt("attach", () => db.exec("ATTACH DATABASE '__OUT__/attached.db' AS stolen"));
  attempt("vacuum_into", () => db.exec("VACUUM INTO '__OUT__/copy.db'"));
  attempt("writable_schema", () => db.exec("PRAGMA writable_schema=ON"));
  attempt("select_users", () => db.query("SELECT email, password_hash FROM _users").all());
  attempt("select_sessions", () => db.query("SELECT refresh_token_hash FROM _sessions").all());
  attempt("update_users", () => db.run("UPDATE _users SET role='admin'"));
  // Ordinary work keeps working: reads, a transaction with a nested (savepoint) one that is
  // rolled back, and a read-only pragma.
  attempt("ordinary", () => {
    const t = db.transaction((title: string) => {
      db.query("INSERT INTO attempts VALUES ('in_tx', ?)").run(title);
      try {
        db.transaction(() => {
          db.run("INSERT INTO attempts VALUES ('in_savepoint', 'must be rolled back')");
          throw new Error("undo the savepoint");
        })();
      } catch (_) {}
    });
    t(record.title);
    const n = db.query("SELECT count(*) AS n FROM posts WHERE title = ?").get(record.title).n;
    if (n !== 1) throw new Error(`expected the post, counted ${n}`);
    const cols = db.query("PRAGMA table_info(posts)").all().map((c: any) => c.name);
    if (!cols.includes("title")) throw new Error(`table_info: ${cols}`);
  });
"#;

fn db_attack_outcomes(db: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare("SELECT name, outcome FROM attempts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn assert_db_attacks_refused(
    outcomes: &std::collections::BTreeMap<String, String>,
    out: &std::path::Path,
) {
    for name in [
        "attach",
        "vacuum_into",
        "writable_schema",
        "select_users",
        "select_sessions",
        "update_users",
    ] {
        let outcome = outcomes.get(name).map(String::as_str).unwrap_or("missing");
        assert!(
            outcome.starts_with("not authorized: "),
            "{name}: {outcome} (all: {outcomes:#?})"
        );
    }
    assert!(outcomes["select_users"].contains("_users"), "{outcomes:#?}");
    assert!(outcomes["vacuum_into"].contains("VACUUM"), "{outcomes:#?}");
    assert!(outcomes["writable_schema"].contains("writable_schema"));
    assert!(!out.join("attached.db").exists(), "ATTACH created a file");
    assert!(
        !out.join("copy.db").exists(),
        "VACUUM INTO copied the database"
    );
    assert_eq!(outcomes["ordinary"], "ran", "{outcomes:#?}");
    assert_eq!(outcomes["in_tx"], "hello");
    assert!(!outcomes.contains_key("in_savepoint"), "{outcomes:#?}");
}

fn user_roles(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare("SELECT role FROM _users")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn ctx_db_cannot_attach_vacuum_set_pragmas_or_touch_internal_tables() {
    if crate::pg::skip_on_postgres(
        "ctx_db_cannot_attach_vacuum_set_pragmas_or_touch_internal_tables",
        "ctx.db is SQLite's own API, refused on PostgreSQL",
    ) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let source = format!(
        "import {{ onCreate }} from \"bakend/functions\";\n\
         onCreate(\"posts\", async ({{ record, db }}) => {{ {} }});",
        DB_ATTACKS.replace("__OUT__", &out.path().display().to_string())
    );
    let dir = project(&[("functions/posts/attack.ts", &source)]);
    let mut s = TestServer::start_in(dir).await;
    let user = s.register("victim@example.com").await;
    let before = user_roles(&s.dir.path().join("bakend.db"));
    let r = s
        .call(
            reqwest::Method::POST,
            "/api/posts",
            Some(&user.token),
            Some(&json!({"title": "hello"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let seen = finished(&mut s, 1).await;
    assert!(
        seen.iter().all(|e| e.event_type != "function.failed"),
        "{seen:#?}"
    );
    let db = s.dir.path().join("bakend.db");
    assert_db_attacks_refused(&db_attack_outcomes(&db), out.path());
    assert_eq!(user_roles(&db), before, "UPDATE _users changed a role");
    assert!(!before.iter().any(|r| r == "admin"));
    // The server keeps serving, and the user's token still works.
    let me = s
        .call(
            reqwest::Method::GET,
            "/api/auth/me",
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    s.shutdown().await;
}

#[tokio::test]
async fn a_jobs_ctx_db_is_held_to_the_same_rules() {
    if crate::pg::skip_on_postgres(
        "a_jobs_ctx_db_is_held_to_the_same_rules",
        "ctx.db is SQLite's own API, refused on PostgreSQL",
    ) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let source = format!(
        "export const schedule = \"*/1 * * * * *\";\n\
         let done = false;\n\
         export default async ({{ db }}) => {{ if (done) return; done = true;\n\
           const record = {{ title: \"hello\" }};\n\
           db.run(\"INSERT INTO posts (id, title, created_at, updated_at) VALUES ('p1', 'hello', '', '')\");\n\
           {} }};",
        DB_ATTACKS.replace("__OUT__", &out.path().display().to_string())
    );
    let dir = project(&[("jobs/attack.ts", &source)]);
    let mut s = TestServer::start_in(dir).await;
    // A user row for the job's `UPDATE _users` to aim at.
    s.register("victim@example.com").await;
    let db = s.dir.path().join("bakend.db");
    let before = user_roles(&db);
    let mut seen = Vec::new();
    assert!(
        eventually_within(Duration::from_secs(10), || {
            seen.extend(s.take_events());
            seen.iter()
                .any(|e| e.event_type == "job.completed" || e.event_type == "job.failed")
        })
        .await,
        "the job did not run: {seen:#?}"
    );
    assert!(
        seen.iter().all(|e| e.event_type != "job.failed"),
        "{seen:#?}"
    );
    assert_db_attacks_refused(&db_attack_outcomes(&db), out.path());
    assert_eq!(user_roles(&db), before, "UPDATE _users changed a role");
    s.shutdown().await;
}
