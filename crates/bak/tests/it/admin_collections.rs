//! `/api/admin/collections[/:name]`: admin-only, the error envelope, the shared planner, the
//! `system.collection.*` events (on the bus and over realtime), and the write-back to
//! `collections/*.json` that lets the next start accept what the API changed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Session, TestServer};
use crate::ws::Ws;

const ADMIN: &str = "root@example.com";

async fn start_in(dir: tempfile::TempDir) -> TestServer {
    TestServer::start_in_with_env(dir, &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await
}

async fn server(collections: &[Value]) -> (TestServer, Session) {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(dir.path(), collections);
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    let s = start_in(dir).await;
    let admin = s.register(ADMIN).await;
    (s, admin)
}

async fn login(s: &TestServer, email: &str) -> String {
    let r = s
        .post(
            "/api/auth/login",
            &json!({"email": email, "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_string()
}

fn notes() -> Value {
    json!({"name": "notes", "fields": [{"name": "title", "type": "string", "required": true}]})
}

#[tokio::test]
async fn only_admins_reach_the_collection_endpoints() {
    let (s, admin) = server(&[notes()]).await;
    let user = s.register("user@example.com").await;
    for (method, path) in [
        (Method::GET, "/api/admin/collections"),
        (Method::POST, "/api/admin/collections"),
        (Method::GET, "/api/admin/collections/notes"),
        (Method::PUT, "/api/admin/collections/notes"),
        (Method::DELETE, "/api/admin/collections/notes"),
    ] {
        s.call(method.clone(), path, None, Some(&notes()))
            .await
            .assert_error(401, "unauthorized", "Authentication required");
        s.call(method, path, Some(&user.token), Some(&notes()))
            .await
            .assert_error(403, "forbidden", "Admin access required");
    }
    let t = Some(admin.token.as_str());
    s.call(Method::PATCH, "/api/admin/collections", t, Some(&notes()))
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");
    s.call(
        Method::POST,
        "/api/admin/collections/notes",
        t,
        Some(&notes()),
    )
    .await
    .assert_error(405, "method_not_allowed", "Method not allowed");
    // Nothing changed on the way.
    let list = s.call(Method::GET, "/api/admin/collections", t, None).await;
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn create_read_update_delete_with_spec_errors() {
    let (mut s, admin) = server(&[notes()]).await;
    let t = Some(admin.token.as_str());
    s.take_events();

    // POST: shape, validation, duplicates.
    s.call(
        Method::POST,
        "/api/admin/collections",
        t,
        Some(&json!({"name": "x"})),
    )
    .await
    .assert_error(
        400,
        "bad_request",
        "Request body must include name and fields",
    );
    s.call(
        Method::POST,
        "/api/admin/collections",
        t,
        Some(&json!({"name": "Bad", "fields": [{"name": "a", "type": "nope"}]})),
    )
    .await
    .assert_error(
        400,
        "bad_request",
        "collection name \"Bad\" must match ^[a-z][a-z0-9_]*$; Unsupported field type \"nope\"",
    );
    s.call(Method::POST, "/api/admin/collections", t, Some(&notes()))
        .await
        .assert_error(400, "bad_request", "Collection \"notes\" already exists");
    let r = s
        .raw(
            Method::POST,
            "/api/admin/collections",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, 401, "auth is checked before the body");

    let tags = json!({"name": "tags", "fields": [
        {"name": "label", "type": "string", "required": true},
        {"name": "note", "type": "relation", "collection": "notes"},
        {"name": "weight", "type": "integer", "default": 1}
    ], "permissions": {"read": "public"}, "x-extra": true});
    let r = s
        .call(Method::POST, "/api/admin/collections", t, Some(&tags))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let meta = r.json();
    assert_eq!(meta["name"], "tags");
    assert_eq!(meta["definition"], tags, "stored as submitted");
    assert!(meta["createdAt"].as_str().unwrap().ends_with('Z'));
    // Usable at once, with the default applied on create.
    let rec = s
        .create("tags", json!({"label": "a", "note": "rec_x"}))
        .await;
    assert_eq!(rec["weight"], 1);

    let list = s
        .call(Method::GET, "/api/admin/collections", t, None)
        .await
        .json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes", "tags"]);
    let one = s
        .call(Method::GET, "/api/admin/collections/tags", t, None)
        .await;
    assert_eq!(one.json(), meta);
    s.call(Method::GET, "/api/admin/collections/nope", t, None)
        .await
        .assert_error(404, "not_found", "Collection \"nope\" does not exist");
    let extra = s
        .call(Method::GET, "/api/admin/collections/tags/ignored", t, None)
        .await;
    assert_eq!(extra.status, 200);

    // PUT: name change, unknown collection, a blocked change (with details), then --force.
    let mut renamed = tags.clone();
    renamed["name"] = json!("other");
    s.call(
        Method::PUT,
        "/api/admin/collections/tags",
        t,
        Some(&renamed),
    )
    .await
    .assert_error(400, "bad_request", "Collection name cannot be changed");
    s.call(
        Method::PUT,
        "/api/admin/collections/nope",
        t,
        Some(&json!({"name": "nope", "fields": []})),
    )
    .await
    .assert_error(404, "not_found", "Collection \"nope\" does not exist");
    let mut changed = tags.clone();
    changed["fields"][0] = json!({"name": "label", "type": "integer", "required": true});
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/tags",
            t,
            Some(&changed),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let e = r.json();
    assert_eq!(e["error"]["code"], "bad_request");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("field \"label\": 1 record(s) cannot be converted from string to integer"),
        "{e}"
    );
    assert_eq!(e["error"]["details"][0]["field"], "label");
    assert_eq!(e["error"]["details"][0]["rule"], "convert");
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/tags?force=true",
            t,
            Some(&changed),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "a required field without default cannot be forced"
    );

    // A real change: a new required field with a default, a rename, a field removed (forced).
    let v2 = json!({"name": "tags", "fields": [
        {"name": "title", "type": "string", "required": true, "renamedFrom": "label"},
        {"name": "weight", "type": "integer", "default": 1},
        {"name": "rank", "type": "float", "required": true, "default": 0.5}
    ]});
    let r = s
        .call(Method::PUT, "/api/admin/collections/tags", t, Some(&v2))
        .await;
    assert_eq!(
        r.status, 400,
        "dropping a relation with data needs force: {}",
        r.text
    );
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/tags?force=true",
            t,
            Some(&v2),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["definition"], v2);
    let got = s
        .get(&format!("/api/tags/{}", rec["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(got["title"], "a");
    assert_eq!(got["rank"], 0.5);
    assert_eq!(got["id"], rec["id"]);
    assert_eq!(got["createdAt"], rec["createdAt"]);
    assert!(got.get("note").is_none());

    // DELETE: dependents, unknown, then gone.
    s.call(Method::DELETE, "/api/admin/collections/nope", t, None)
        .await
        .assert_error(404, "not_found", "Collection \"nope\" does not exist");
    s.call(
        Method::PUT,
        "/api/admin/collections/tags",
        t,
        Some(&json!({"name": "tags", "fields": [
            {"name": "title", "type": "string", "required": true},
            {"name": "weight", "type": "integer", "default": 1},
            {"name": "rank", "type": "float", "required": true, "default": 0.5},
            {"name": "n", "type": "relation", "collection": "notes"}
        ]})),
    )
    .await;
    s.call(Method::DELETE, "/api/admin/collections/notes", t, None)
        .await
        .assert_error(
            400,
            "bad_request",
            "Cannot delete collection \"notes\": referenced by relation fields in tags",
        );
    let r = s
        .call(Method::DELETE, "/api/admin/collections/tags", t, None)
        .await;
    assert_eq!(r.status, 204);
    s.get("/api/tags")
        .await
        .assert_error(404, "not_found", "Collection \"tags\" does not exist");

    let kinds: Vec<String> = s
        .take_events()
        .iter()
        .filter(|e| e.event_type.starts_with("system.collection."))
        .map(|e| format!("{} {}", e.event_type, e.payload["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "system.collection.created tags",
            "system.collection.updated tags",
            "system.collection.updated tags",
            "system.collection.deleted tags",
        ],
        "one event per successful change, none for refused ones"
    );
}

#[tokio::test]
async fn api_changes_survive_a_restart_without_export() {
    // notes comes from a file with a name of its own; tags is created through the API.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("collections")).unwrap();
    std::fs::write(
        dir.path().join("collections/01-notes.json"),
        notes().to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("bakend.json"), "{}").unwrap();
    let s = start_in(dir).await;
    let admin = s.register(ADMIN).await;
    let t = Some(admin.token.as_str());

    let tags = json!({"name": "tags", "fields": [{"name": "label", "type": "string"}]});
    assert_eq!(
        s.call(Method::POST, "/api/admin/collections", t, Some(&tags))
            .await
            .status,
        201
    );
    s.create("tags", json!({"label": "kept"})).await;
    let tags_v2 = json!({"name": "tags", "fields": [
        {"name": "label", "type": "string", "required": true, "default": "?"},
        {"name": "color", "type": "string"}
    ]});
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/tags",
            t,
            Some(&tags_v2),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let notes_v2 = json!({"name": "notes", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "body", "type": "text"}
    ], "permissions": {"delete": "admin"}});
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/notes",
            t,
            Some(&notes_v2),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let dir = s.shutdown().await;
    let cdir = dir.path().join("collections");
    assert!(
        cdir.join("tags.json").exists(),
        "a file for the new collection"
    );
    assert!(
        !cdir.join("notes.json").exists(),
        "notes stays in its own file"
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(cdir.join("01-notes.json")).unwrap())
            .unwrap();
    assert_eq!(written, notes_v2);

    // The next start accepts the files as they are and serves the changed schema.
    let s = start_in(dir).await;
    let admin = login(&s, ADMIN).await;
    let list = s.get("/api/tags").await.json();
    assert_eq!(list["items"][0]["label"], "kept");
    assert_eq!(list["items"][0]["color"], Value::Null);
    let meta = s
        .call(
            Method::GET,
            "/api/admin/collections/notes",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(meta["definition"], notes_v2);
    // A deletion removes the file, so the collection does not come back at the next start.
    let r = s
        .call(
            Method::DELETE,
            "/api/admin/collections/tags",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let dir = s.shutdown().await;
    assert!(!dir.path().join("collections/tags.json").exists());
    let s = start_in(dir).await;
    assert_eq!(s.get("/api/tags").await.status, 404);
}

#[tokio::test]
async fn realtime_subscribers_get_the_system_events() {
    let (s, admin) = server(&[notes()]).await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("system.collection.*").await;
    let t = Some(admin.token.as_str());
    let tags = json!({"name": "tags", "fields": []});
    assert_eq!(
        s.call(Method::POST, "/api/admin/collections", t, Some(&tags))
            .await
            .status,
        201
    );
    assert_eq!(
        s.call(Method::PUT, "/api/admin/collections/tags", t, Some(&tags))
            .await
            .status,
        200
    );
    assert_eq!(
        s.call(Method::DELETE, "/api/admin/collections/tags", t, None)
            .await
            .status,
        204
    );
    let events = ws.events(Duration::from_millis(500)).await;
    let got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["payload"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("system.collection.created".to_string(), "tags".to_string()),
            ("system.collection.updated".to_string(), "tags".to_string()),
            ("system.collection.deleted".to_string(), "tags".to_string()),
        ]
    );
    assert_eq!(events[0]["source"], "collections");
}

/// `GET /api/admin/logs` reads the running binary's log ring (in-process servers install no
/// log sink), so this test runs `bak start`.
#[tokio::test]
async fn logs_endpoint_filters_and_limits() {
    use crate::harness::BakProcess;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), r#"{"logLevel": "DEBUG"}"#).unwrap();
    crate::harness::bak_admin_create(d, ADMIN, "password123");
    let mut server = BakProcess::spawn(d, &[]);
    server.wait_ready().await;
    let http = reqwest::Client::new();
    let url = server.url();
    let login: Value = http
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": ADMIN, "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let r = http.get(path).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let r = http
        .post(format!("{url}/api/admin/collections"))
        .bearer_auth(&token)
        .json(&json!({"name": "logged", "fields": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let (status, all) = get(format!("{url}/api/admin/logs")).await;
    assert_eq!(status, 200);
    let items = all["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|e| e["level"] == "INFO" && e["message"] == "Collection created: logged"),
        "{all}"
    );
    assert!(
        items.iter().any(|e| e["level"] == "DEBUG"),
        "DEBUG entries at logLevel DEBUG"
    );
    assert!(items[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    let (_, info) = get(format!("{url}/api/admin/logs?level=INFO")).await;
    assert!(
        info["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["level"] != "DEBUG")
    );
    let (_, last) = get(format!("{url}/api/admin/logs?limit=2")).await;
    let last = last["items"].as_array().unwrap();
    assert_eq!(last.len(), 2);
    let (_, all_now) = get(format!("{url}/api/admin/logs?limit=500")).await;
    let all_now = all_now["items"].as_array().unwrap();
    assert_eq!(
        last[1]["message"],
        all_now[all_now.len() - 1]["message"],
        "the newest entries, oldest first"
    );
    let (status, e) = get(format!("{url}/api/admin/logs?level=warn")).await;
    assert_eq!(status, 400);
    assert_eq!(
        e["error"]["message"],
        "level must be one of: DEBUG, INFO, WARN, ERROR"
    );
    let (status, _) = get(format!("{url}/api/admin/logs/x")).await;
    assert_eq!(status, 405);
    let anon = http
        .get(format!("{url}/api/admin/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
}

fn index_names(s: &TestServer, table: &str) -> Vec<String> {
    let table = table.to_string();
    let mut names = crate::harness::with_project_db(s.dir.path(), move |c| {
        bakend_store::collections::schema::index_names(c, &table).unwrap()
    });
    names.sort();
    names
}

/// Indexes of a definition are made at start-up and changed through the admin API (the same
/// planner as `bak migrate`), which also refuses a unique one over repeated values.
#[tokio::test]
async fn indexes_at_start_up_and_through_the_admin_api() {
    let mut def = notes();
    def["indexes"] = json!([{"fields": ["title"]}]);
    let (s, admin) = server(&[def.clone()]).await;
    assert!(index_names(&s, "notes").contains(&"idx_notes_title".to_string()));
    for t in ["a", "a", "b"] {
        s.create("notes", json!({"title": t})).await;
    }
    let t = Some(admin.token.as_str());
    def["indexes"] = json!([{"fields": ["-createdAt", "title"]}]);
    let r = s
        .call(Method::PUT, "/api/admin/collections/notes", t, Some(&def))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names = index_names(&s, "notes");
    assert!(
        names.contains(&"idx_notes_created_at_desc_title".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"idx_notes_title".to_string()), "{names:?}");
    // Written back, so the next start agrees.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("collections/notes.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["indexes"], def["indexes"]);

    def["indexes"] = json!([{"fields": ["title"], "unique": true}]);
    let r = s
        .call(Method::PUT, "/api/admin/collections/notes", t, Some(&def))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text
            .contains("index unique (title): 1 record(s) repeat values another record holds"),
        "{}",
        r.text
    );
    assert!(!index_names(&s, "notes").contains(&"uniq_notes_title".to_string()));

    let r = s
        .call(
            Method::POST,
            "/api/admin/collections",
            t,
            Some(&json!({"name": "x", "fields": [], "indexes": [{"fields": ["nope"]}]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("\\\"nope\\\" is not a field"), "{}", r.text);
    s.shutdown().await;
}

/// `PUT …?dryRun=true`: the plan the same PUT would apply, its blockers and an outcome — with
/// nothing changed, no event and no file written.
#[tokio::test]
async fn a_dry_run_answers_the_plan_and_changes_nothing() {
    let tags = json!({"name": "tags", "fields": [
        {"name": "label", "type": "string"},
        {"name": "n", "type": "integer"}
    ]});
    let (mut s, admin) = server(std::slice::from_ref(&tags)).await;
    let t = Some(admin.token.as_str());
    let a = s.create("tags", json!({"label": "a"})).await;
    s.create("tags", json!({"label": "5", "n": 1})).await;
    let file = s.dir.path().join("collections/tags.json");
    let file_before = std::fs::read_to_string(&file).unwrap();
    s.take_events();
    let dry = |def: Value| {
        let s = &s;
        async move {
            s.call(
                Method::PUT,
                "/api/admin/collections/tags?dryRun=true",
                t,
                Some(&def),
            )
            .await
        }
    };

    // A type change one record cannot make: forceable (the value would become null).
    let r = dry(json!({"name": "tags", "fields": [
        {"name": "label", "type": "integer"},
        {"name": "n", "type": "integer"}
    ]}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let plan = r.json();
    assert_eq!(plan["name"], "tags");
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["outcome"], "needsForce");
    assert_eq!(
        plan["changes"],
        json!(["changes the type of field \"label\" from string to integer"])
    );
    assert_eq!(plan["rebuild"], true);
    let b = &plan["blockers"][0];
    assert_eq!(plan["blockers"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(b["field"], "label");
    assert_eq!(b["rule"], "convert");
    assert_eq!(b["count"], 1);
    assert_eq!(
        b["samples"],
        json!([format!("{} (\"a\")", a["id"].as_str().unwrap())])
    );
    assert_eq!(b["force"], "they become null");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("field \"label\": 1 record(s)")
    );

    // A new required field without a default: forcing cannot help.
    let r = dry(json!({"name": "tags", "fields": [
        {"name": "label", "type": "string"},
        {"name": "n", "type": "integer"},
        {"name": "must", "type": "string", "required": true}
    ]}))
    .await;
    assert_eq!(r.json()["outcome"], "blocked", "{}", r.text);
    assert_eq!(r.json()["blockers"][0]["force"], Value::Null);

    // Nothing to do; something that applies as it is.
    let r = dry(tags.clone()).await;
    assert_eq!(r.json()["outcome"], "unchanged", "{}", r.text);
    assert_eq!(r.json()["changes"], json!([]));
    let r = dry(json!({"name": "tags", "fields": [
        {"name": "label", "type": "string"},
        {"name": "n", "type": "integer"},
        {"name": "extra", "type": "text"}
    ]}))
    .await;
    assert_eq!(r.json()["outcome"], "ready", "{}", r.text);
    assert_eq!(r.json()["rebuild"], false);

    // The same refusals as the PUT itself.
    s.call(
        Method::PUT,
        "/api/admin/collections/nope?dryRun=true",
        t,
        Some(&json!({"name": "nope", "fields": []})),
    )
    .await
    .assert_error(404, "not_found", "Collection \"nope\" does not exist");
    dry(json!({"name": "other", "fields": []}))
        .await
        .assert_error(400, "bad_request", "Collection name cannot be changed");
    dry(json!({"name": "tags", "fields": [{"name": "x", "type": "nope"}]}))
        .await
        .assert_error(400, "bad_request", "Unsupported field type \"nope\"");
    let user = s.register("someone@example.com").await;
    s.call(
        Method::PUT,
        "/api/admin/collections/tags?dryRun=true",
        Some(&user.token),
        Some(&tags),
    )
    .await
    .assert_error(403, "forbidden", "Admin access required");

    // Nothing happened.
    let meta = s
        .call(Method::GET, "/api/admin/collections/tags", t, None)
        .await
        .json();
    assert_eq!(meta["definition"], tags);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), file_before);
    assert!(
        !s.take_events()
            .iter()
            .any(|e| e.event_type.starts_with("system.collection.")),
        "a dry run emitted an event"
    );
    // And the previewed change applies with force, as the plan said.
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/tags?force=true",
            t,
            Some(&json!({"name": "tags", "fields": [
                {"name": "label", "type": "integer"},
                {"name": "n", "type": "integer"}
            ]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = s
        .get(&format!("/api/tags/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.json()["label"], Value::Null);
}
