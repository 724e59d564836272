//! User TypeScript functions run by the real server (issue 6): triggers fire off the HTTP path
//! and report through `function.*` events.

use serde_json::json;

use crate::harness::{TestServer, eventually, write_collections};

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
    let out = std::process::Command::new(crate::harness::bak_bin())
        .args(["functions", "list"])
        .current_dir(dir.path())
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
    let out = std::process::Command::new(crate::harness::bak_bin())
        .args(["functions", "list"])
        .current_dir(dir.path())
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
