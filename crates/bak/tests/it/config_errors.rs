//! A bad `bakend.json` or collection file stops start-up with a message naming the file and the
//! key, and leaves the database as it was.

use std::path::Path;

use serde_json::json;

use crate::harness::{BakProcess, write_collections};

fn collections_in(dir: &Path) -> Vec<(String, String)> {
    crate::harness::with_project_db(dir, |c| {
        c.prepare("SELECT name, definition FROM _collections ORDER BY name")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
}

fn columns(dir: &Path, table: &'static str) -> Vec<String> {
    crate::harness::with_project_db(dir, move |c| {
        bakend_store::collections::schema::column_names(c, table).unwrap()
    })
}

async fn fails_with(dir: &Path, needles: &[&str]) {
    let mut bak = BakProcess::spawn(dir, &[]);
    let status = bak.wait_exit().await;
    assert_eq!(status.code(), Some(1), "stderr: {}", bak.stderr());
    let err = bak.stderr();
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in stderr: {err}");
    }
}

#[tokio::test]
async fn bad_config_files_name_the_file_and_key_and_create_nothing() {
    for (text, needles) in [
        ("{", vec!["Invalid JSON in config file at", "bakend.json"]),
        ("[1]", vec!["config root must be an object"]),
        (
            r#"{"port": "8080"}"#,
            vec!["port must be an integer", "\"port\"", "bakend.json"],
        ),
        (
            r#"{"auth": {"jwtSecret": ""}}"#,
            vec!["\"auth.jwtSecret\"", "bakend.json"],
        ),
        (
            r#"{"auth": {"refreshTokenTtl": "1w"}}"#,
            vec!["\"auth.refreshTokenTtl\""],
        ),
        (r#"{"logLevel": "verbose"}"#, vec!["\"logLevel\""]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bakend.json"), text).unwrap();
        fails_with(dir.path(), &needles).await;
        assert!(
            !dir.path().join("bakend.db").exists(),
            "{text}: database created"
        );
    }
}

#[tokio::test]
async fn unknown_config_keys_warn_but_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bakend.json"), r#"{"collectionsDir": "x"}"#).unwrap();
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    assert!(
        bak.stderr()
            .contains("WARN Unknown config key \"collectionsDir\""),
        "{}",
        bak.stderr()
    );
}

#[tokio::test]
async fn bad_collection_files_stop_start_before_any_write() {
    let cases = [
        (
            json!({"name": "b", "fields": [{"name": "x", "type": "nope"}]}),
            "Unsupported field type \"nope\"",
        ),
        (
            json!({"name": "b", "fields": [{"name": "created_at", "type": "string"}]}),
            "Field name \"created_at\" is reserved",
        ),
        (
            json!({"name": "b", "fields": [], "permissions": {"read": "bogus"}}),
            "Permission \"read\" must be one of",
        ),
        // Expression rules are checked against the fields at load, with the position.
        (
            json!({"name": "b", "fields": [{"name": "t", "type": "string"}], "permissions": {"update": "t = 'x' && publshed = true"}}),
            "Permission \"update\" must be one of public, authenticated, owner, admin or a valid expression: filter: unknown field \"publshed\" at 12",
        ),
        (
            json!({"name": "b", "fields": [{"name": "n", "type": "integer"}], "permissions": {"read": "n > 'many'"}}),
            "Permission \"read\"",
        ),
        (
            json!({"name": "b", "fields": [{"name": "r", "type": "relation", "collection": "ghost"}]}),
            "references unknown collection \"ghost\"",
        ),
    ];
    for (bad, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_collections(dir.path(), &[json!({"name": "a", "fields": []}), bad]);
        fails_with(dir.path(), &["b.json", needle]).await;
        assert!(
            !dir.path().join("bakend.db").exists(),
            "{needle}: database created"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("collections")).unwrap();
    std::fs::write(dir.path().join("collections/broken.json"), "{\"name\":").unwrap();
    fails_with(dir.path(), &["broken.json", "invalid JSON"]).await;
}

#[tokio::test]
async fn relations_may_point_forward_within_the_files() {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[
            json!({"name": "a_comments", "fields": [{"name": "post", "type": "relation", "collection": "z_posts"}]}),
            json!({"name": "z_posts", "fields": [{"name": "title", "type": "string"}]}),
        ],
    );
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
}

#[tokio::test]
async fn changed_collection_files_apply_safe_changes_and_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path();
    let v1 = json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "n", "type": "integer"}
    ]});
    write_collections(dir.path(), &[v1]);
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/posts", bak.url()))
        .json(&json!({"title": "kept", "n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    bak.signal(libc::SIGTERM);
    assert!(bak.wait_exit().await.success());

    // Same meaning, different spelling: nothing to do, nothing logged.
    write_collections(
        dir.path(),
        &[json!({"fields": [
            {"type": "string", "name": "title", "required": true},
            {"name": "n", "type": "integer", "required": false, "unique": false}
        ], "permissions": {"read": "public"}, "name": "posts"})],
    );
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    assert!(
        !bak.stderr().contains("Collection updated"),
        "{}",
        bak.stderr()
    );
    bak.signal(libc::SIGTERM);
    assert!(bak.wait_exit().await.success());

    // Destructive: refused, naming the file, the difference and the way out; nothing changes.
    let before = collections_in(db);
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [
            {"name": "title", "type": "integer", "required": true}
        ]})],
    );
    fails_with(
        dir.path(),
        &[
            "posts.json",
            "changes the type of field \"title\" from string to integer",
            "removes field \"n\"",
            "bak migrate apply",
        ],
    )
    .await;
    assert_eq!(collections_in(db), before);
    assert_eq!(
        columns(db, "posts"),
        ["id", "created_at", "updated_at", "title", "n"]
    );

    // Safe: a new optional field and a permission change apply at start and are logged.
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [
            {"name": "title", "type": "string", "required": true},
            {"name": "n", "type": "integer"},
            {"name": "tag", "type": "string", "unique": true}
        ], "permissions": {"delete": "admin"}})],
    );
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let err = bak.stderr();
    assert!(err.contains("Collection updated: posts"), "{err}");
    assert!(err.contains("add field \"tag\""), "{err}");
    assert!(err.contains("change permissions"), "{err}");
    let list: serde_json::Value = http
        .get(format!("{}/api/posts", bak.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["title"], "kept");
    assert_eq!(list["items"][0]["tag"], serde_json::Value::Null);
    let r = http
        .delete(format!(
            "{}/api/posts/{}",
            bak.url(),
            list["items"][0]["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the new delete rule is in force");
    assert_eq!(
        columns(db, "posts"),
        ["id", "created_at", "updated_at", "title", "n", "tag"]
    );
}

/// A start that fails late (a bad job: the database, functions and scheduler were already
/// running; a taken port: everything was) stops what it started before returning, so the same
/// project starts at once in the same process — the database is unlocked.
#[tokio::test]
async fn a_failed_start_unlocks_the_database_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bakend.json"), "{}").unwrap();
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]})],
    );
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let job = dir.path().join("jobs/bad.ts");
    std::fs::write(&job, "export default () => {};").unwrap();
    let config = || {
        let mut c =
            bakend_core::config::Config::load(Some(&dir.path().join("bakend.json")), &|_| None)
                .unwrap();
        c.port = 0;
        c
    };

    let err = bakend_server::start(config())
        .await
        .err()
        .expect("a bad job must stop start-up");
    assert!(
        err.to_string()
            .starts_with("Failed to load job jobs/bad.ts"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("[::]:0")
        .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::remove_file(&job).unwrap();
    let mut on_taken_port = config();
    on_taken_port.port = port;
    let err = bakend_server::start(on_taken_port)
        .await
        .err()
        .expect("the port is taken");
    assert_eq!(
        err.to_string(),
        format!("Failed to start server. Is port {port} in use?")
    );

    let server = bakend_server::start(config())
        .await
        .unwrap_or_else(|e| panic!("the database must be free again: {e}"));
    let url = format!("http://127.0.0.1:{}/api/posts", server.addr().port());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    server.shutdown().await;
}

/// A storage folder that cannot be created is named in the error (it used to be only the OS
/// error, e.g. "File exists (os error 17)").
#[tokio::test]
async fn an_unusable_storage_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"storage": "./blocked"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("blocked"), "a file, not a folder").unwrap();
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    assert_eq!(bak.wait_exit().await.code(), Some(1));
    let err = bak.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("Cannot open the storage folder"))
        .unwrap_or_else(|| panic!("no storage error in: {err}"));
    assert!(line.contains("blocked"), "{line}");
    // The cause is printed once, not repeated by the error chain.
    assert_eq!(line.matches("os error").count(), 1, "{line}");
}
