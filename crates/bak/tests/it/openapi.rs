//! `GET /api/openapi.json`: served without a token, a structurally valid OpenAPI 3.1 document,
//! generated from the loaded collections (fields, required, limits, permissions) and following
//! them when the admin API changes them; and real responses validate against the schemas the
//! document gives for them (a small JSON Schema checker below, for the keywords the document
//! uses). `scripts/schemathesis.sh` does the same against every operation with generated input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Resp, TestServer};

const ADMIN: &str = "root@example.com";

fn posts() -> Value {
    json!({
        "name": "posts",
        "fields": [
            {"name": "title", "type": "string", "required": true, "min": 2, "max": 80, "regex": "^[A-Za-z ]+$"},
            {"name": "body", "type": "text", "max": 500},
            {"name": "slug", "type": "string", "unique": true},
            {"name": "views", "type": "integer", "min": 0, "max": 1000, "default": 0},
            {"name": "score", "type": "float", "min": -1.5, "max": 1.5},
            {"name": "published", "type": "boolean"},
            {"name": "due", "type": "datetime"},
            {"name": "meta", "type": "json"},
            {"name": "author", "type": "relation", "collection": "users"},
            {"name": "cover", "type": "file"}
        ],
        "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}
    })
}

fn tasks() -> Value {
    json!({
        "name": "tasks",
        "fields": [
            {"name": "title", "type": "string", "required": true},
            {"name": "user_id", "type": "relation", "collection": "users"}
        ],
        "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}
    })
}

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(dir.path(), &[posts(), tasks()]);
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    TestServer::start_in_with_env(dir, &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await
}

async fn document(s: &TestServer) -> Value {
    let r = s.get("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json;charset=utf-8");
    r.json()
}

/// Follows a local `$ref` (`#/components/...`) until the value is not a reference.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    v
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_f64().is_some_and(|x| x.fract() == 0.0),
        other => panic!("unknown JSON Schema type {other}"),
    }
}

/// Checks `v` against `schema` for the keywords the document uses; collects every problem with
/// its JSON path.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
            _ => panic!("bad type keyword at {at}"),
        };
        if !ok {
            out.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        out.push(format!("{at}: {v} is not one of {options:?}"));
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < min
    {
        out.push(format!("{at}: {x} < minimum {min}"));
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| len < m) {
            out.push(format!("{at}: shorter than minLength"));
        }
        if schema["maxLength"].as_u64().is_some_and(|m| len > m) {
            out.push(format!("{at}: longer than maxLength"));
        }
        if schema["format"] == "date-time" && chrono::DateTime::parse_from_rfc3339(s).is_err() {
            out.push(format!("{at}: {s:?} is not a date-time"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for key in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(key.as_str().unwrap()) {
                out.push(format!("{at}: required key {key} missing"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"), out),
                None if schema["additionalProperties"] == false => {
                    out.push(format!("{at}: unexpected key {k:?}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), out);
        }
    }
}

/// The problems of a real response against what the document says for its operation and status.
fn problems(doc: &Value, path: &str, method: &str, r: &Resp) -> Vec<String> {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "no {method} {path} in the document");
    let response = op["responses"]
        .get(r.status.to_string())
        .unwrap_or_else(|| panic!("{method} {path}: status {} not documented", r.status));
    let response = resolve(doc, response);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {}: no JSON schema",
        r.status
    );
    let mut out = Vec::new();
    check(doc, schema, &r.json(), "$", &mut out);
    out
}

#[track_caller]
fn assert_conforms(doc: &Value, path: &str, method: &str, r: &Resp) {
    let p = problems(doc, path, method, r);
    assert!(
        p.is_empty(),
        "{method} {path} {}: {p:?}\n{}",
        r.status,
        r.text
    );
}

/// Every value of `key` anywhere in `v`.
fn collect<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                collect(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        _ => {}
    }
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

#[tokio::test]
async fn is_served_without_a_token_as_structurally_valid_openapi_3_1() {
    let s = server().await;
    let doc = document(&s).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert_eq!(doc["info"]["title"], "Bakend");
    assert!(doc["info"]["version"].is_string());
    for part in ["schemas", "responses", "securitySchemes"] {
        assert!(doc["components"][part].is_object(), "components.{part}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    // Every reference resolves.
    let mut refs = Vec::new();
    collect(&doc, "$ref", &mut refs);
    assert!(refs.len() > 50, "few references: {}", refs.len());
    for r in refs {
        resolve(&doc, &json!({ "$ref": r }));
    }

    // Every operation: a unique id, responses with a description, and each `{param}` of its
    // path declared as a required path parameter.
    let mut ids = std::collections::HashSet::new();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                assert_eq!(method, "parameters", "{path}: unknown key {method}");
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, r) in responses {
                assert!(status.parse::<u16>().is_ok(), "{method} {path} {status}");
                assert!(
                    resolve(&doc, r)["description"].is_string(),
                    "{method} {path} {status}"
                );
            }
            let mut params: Vec<&Value> = Vec::new();
            params.extend(item["parameters"].as_array().into_iter().flatten());
            params.extend(op["parameters"].as_array().into_iter().flatten());
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{method} {path}: path parameter {name} not declared"
                );
            }
        }
    }
    // The fixed routes are there.
    for (path, method) in [
        ("/health", "get"),
        ("/api/openapi.json", "get"),
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/me", "get"),
        ("/api/storage/upload", "post"),
        ("/api/storage/{id}", "get"),
        ("/api/storage/{id}", "delete"),
        ("/api/realtime", "get"),
        ("/api/admin/collections", "post"),
        ("/api/admin/users/{id}", "patch"),
        ("/api/admin/jobs/{name}/run", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert!(doc["paths"]["/api/realtime"]["get"]["responses"]["101"].is_object());
    assert_eq!(
        doc["paths"]["/api/admin/collections"]["get"]["security"],
        json!([{ "bearerAuth": [] }])
    );
    // Only GET.
    let r = s.call(Method::POST, "/api/openapi.json", None, None).await;
    r.assert_error(405, "method_not_allowed", "Method not allowed");
    s.shutdown().await;
}

#[tokio::test]
async fn lists_each_collection_with_its_fields_required_and_limits() {
    let s = server().await;
    let doc = document(&s).await;
    let paths = &doc["paths"];
    for m in ["get", "post"] {
        assert!(paths["/api/posts"][m].is_object(), "{m} /api/posts");
    }
    for m in ["get", "put", "delete"] {
        assert!(
            paths["/api/posts/{id}"][m].is_object(),
            "{m} /api/posts/{{id}}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["posts_create"];
    let p = &create["properties"];
    // Required without a default; `views` has a default, so it may be left out.
    assert_eq!(create["required"], json!(["title"]));
    assert_eq!(p["title"]["type"], "string");
    assert_eq!(p["title"]["minLength"], 2);
    assert_eq!(p["title"]["maxLength"], 80);
    assert_eq!(p["title"]["pattern"], "^[A-Za-z ]+$");
    assert_eq!(p["body"]["type"], json!(["string", "null"]));
    assert_eq!(p["body"]["maxLength"], 500);
    assert!(
        p["slug"]["description"]
            .as_str()
            .unwrap()
            .contains("Unique")
    );
    assert_eq!(p["views"]["type"], json!(["integer", "null"]));
    assert_eq!(
        (p["views"]["minimum"].clone(), p["views"]["maximum"].clone()),
        (json!(0), json!(1000))
    );
    assert_eq!(p["views"]["default"], 0);
    assert_eq!(p["score"]["type"], json!(["number", "null"]));
    assert_eq!(
        (p["score"]["minimum"].clone(), p["score"]["maximum"].clone()),
        (json!(-1.5), json!(1.5))
    );
    assert_eq!(p["published"]["type"], json!(["boolean", "null"]));
    assert_eq!(p["due"]["format"], "date-time");
    assert_eq!(p["meta"]["type"], json!(["object", "array", "null"]));
    assert!(
        p["author"]["description"]
            .as_str()
            .unwrap()
            .contains("user")
    );
    assert!(
        p["cover"]["description"]
            .as_str()
            .unwrap()
            .contains("stored file")
    );
    // Updates are partial: nothing is required, and a required field cannot be cleared.
    let update = &schemas["posts_update"];
    assert!(update.get("required").is_none());
    assert_eq!(update["properties"]["title"]["type"], "string");
    // The record: every key always present, limits not promised.
    let record = &schemas["posts_record"];
    assert_eq!(record["required"].as_array().unwrap().len(), 3 + 10);
    assert_eq!(record["additionalProperties"], false);
    assert!(record["properties"]["title"].get("maxLength").is_none());
    // List parameters, with the sort keys of this collection.
    let params = paths["/api/posts"]["get"]["parameters"].as_array().unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["page", "perPage", "sort", "skipTotal", "after", "filter"]
    );
    assert_eq!(params[3]["schema"]["type"], "boolean");
    let list = &schemas["posts_list"];
    assert_eq!(
        list["properties"]["next"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(list["properties"]["totalItems"]["minimum"], -1);
    let sort = params[2]["schema"]["pattern"].as_str().unwrap();
    assert!(
        sort.contains("views") && sort.contains("createdAt"),
        "{sort}"
    );

    // Permissions decide which 401/403 answers are documented and whether a token is needed.
    let responses = |path: &str, m: &str| {
        let r = paths[path][m]["responses"].as_object().unwrap();
        r.keys().cloned().collect::<Vec<_>>()
    };
    assert!(!responses("/api/posts", "get").contains(&"401".to_string()));
    assert_eq!(
        paths["/api/posts"]["get"]["security"],
        json!([{}, { "bearerAuth": [] }])
    );
    let task_get = responses("/api/tasks/{id}", "get");
    assert!(
        task_get.contains(&"401".into()) && task_get.contains(&"403".into()),
        "{task_get:?}"
    );
    // Listing an owner collection shows the caller's own records: never 403.
    assert!(!responses("/api/tasks", "get").contains(&"403".to_string()));
    assert_eq!(
        paths["/api/tasks"]["get"]["security"],
        json!([{ "bearerAuth": [] }])
    );
    // The owner field is filled in by the server: not required on create.
    assert!(schemas["tasks_create"]["required"] == json!(["title"]));
    s.shutdown().await;
}

#[tokio::test]
async fn follows_collections_changed_through_the_admin_api() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let before = document(&s).await;
    assert!(before["paths"]["/api/late"].is_null());

    let def = json!({"name": "late", "fields": [{"name": "n", "type": "integer", "required": true, "max": 9}]});
    let r = s
        .call(
            Method::POST,
            "/api/admin/collections",
            Some(&admin.token),
            Some(&def),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_conforms(&before, "/api/admin/collections", "post", &r);
    let doc = document(&s).await;
    assert!(doc["paths"]["/api/late"]["post"].is_object());
    assert!(doc["paths"]["/api/late/{id}"]["put"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["late_create"]["properties"]["n"]["maximum"],
        9
    );
    // A relation may now point at it.
    let relation_targets = |doc: &Value| {
        let variants = doc["components"]["schemas"]["FieldDefinition"]["oneOf"].clone();
        let relation = variants
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["properties"]["type"]["enum"] == json!(["relation"]))
            .unwrap()
            .clone();
        relation["properties"]["collection"]["enum"].clone()
    };
    assert_eq!(
        relation_targets(&before),
        json!(["users", "posts", "tasks"])
    );
    assert_eq!(
        relation_targets(&doc),
        json!(["users", "late", "posts", "tasks"])
    );

    // A changed definition shows at once.
    let def = json!({"name": "late", "fields": [{"name": "n", "type": "integer", "required": true, "max": 50}]});
    let r = s
        .call(
            Method::PUT,
            "/api/admin/collections/late",
            Some(&admin.token),
            Some(&def),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = document(&s).await;
    assert_eq!(
        doc["components"]["schemas"]["late_create"]["properties"]["n"]["maximum"],
        50
    );

    let r = s
        .call(
            Method::DELETE,
            "/api/admin/collections/late",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let doc = document(&s).await;
    assert!(doc["paths"]["/api/late"].is_null());
    assert!(doc["components"]["schemas"]["late_record"].is_null());
    s.shutdown().await;
}

#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    let s = server().await;
    let doc = document(&s).await;
    let user = s.register("someone@example.com").await;

    let created = s
        .post(
            "/api/posts",
            &json!({"title": "Hello there", "views": 3, "score": 0.5, "published": true,
                    "due": "2024-01-01", "meta": {"a": [1]}, "author": user.id}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_conforms(&doc, "/api/posts", "post", &created);
    let id = created.json()["id"].as_str().unwrap().to_string();

    let one = s.get(&format!("/api/posts/{id}")).await;
    assert_conforms(&doc, "/api/posts/{id}", "get", &one);
    let page = s.get("/api/posts?perPage=5&sort=-views,title").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_conforms(&doc, "/api/posts", "get", &page);
    let updated = s
        .put(
            &format!("/api/posts/{id}"),
            &json!({"body": "text", "meta": [1, 2]}),
        )
        .await;
    assert_conforms(&doc, "/api/posts/{id}", "put", &updated);

    // Errors: validation (with details), a bad list parameter, a missing record, an anonymous
    // caller on an owner collection, and the auth routes.
    let invalid = s
        .post("/api/posts", &json!({"title": "x", "views": -1}))
        .await;
    assert_eq!(invalid.status, 400);
    assert!(invalid.json()["error"]["details"].as_array().unwrap().len() >= 2);
    assert_conforms(&doc, "/api/posts", "post", &invalid);
    let bad_sort = s.get("/api/posts?sort=nope").await;
    assert_conforms(&doc, "/api/posts", "get", &bad_sort);
    let missing = s.get("/api/posts/rec_missing").await;
    assert_eq!(missing.status, 404);
    assert_conforms(&doc, "/api/posts/{id}", "get", &missing);
    let anonymous = s.get("/api/tasks").await;
    assert_eq!(anonymous.status, 401);
    assert_conforms(&doc, "/api/tasks", "get", &anonymous);
    let task = s
        .call(
            Method::POST,
            "/api/tasks",
            Some(&user.token),
            Some(&json!({"title": "t"})),
        )
        .await;
    assert_conforms(&doc, "/api/tasks", "post", &task);
    let other = s.register("other@example.com").await;
    let path = format!("/api/tasks/{}", task.json()["id"].as_str().unwrap());
    let forbidden = s.call(Method::GET, &path, Some(&other.token), None).await;
    assert_eq!(forbidden.status, 403);
    assert_conforms(&doc, "/api/tasks/{id}", "get", &forbidden);
    let me = s
        .call(Method::GET, "/api/auth/me", Some(&user.token), None)
        .await;
    assert_conforms(&doc, "/api/auth/me", "get", &me);
    let login = s
        .post(
            "/api/auth/login",
            &json!({"email": "someone@example.com", "password": "password123"}),
        )
        .await;
    assert_conforms(&doc, "/api/auth/login", "post", &login);
    let taken = s
        .post(
            "/api/auth/register",
            &json!({"email": "someone@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(taken.status, 409);
    assert_conforms(&doc, "/api/auth/register", "post", &taken);
    let health = s.get("/health").await;
    assert_conforms(&doc, "/health", "get", &health);
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        )
        .text("visibility", "public");
    let upload = s
        .http
        .post(format!("{}/api/storage/upload", s.url))
        .bearer_auth(&user.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let upload = Resp::from(upload).await;
    assert_eq!(upload.status, 201, "{}", upload.text);
    assert_conforms(&doc, "/api/storage/upload", "post", &upload);

    // The checker is not vacuous: a record with a wrong type, a missing key or an extra key
    // fails, and so does an error without its code.
    let mut record = one.json();
    record["views"] = json!("three");
    record.as_object_mut().unwrap().remove("cover");
    record["extra"] = json!(1);
    let mut p = Vec::new();
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/posts_record"}),
        &record,
        "$",
        &mut p,
    );
    assert_eq!(p.len(), 3, "{p:?}");
    let mut p = Vec::new();
    let broken = json!({"error": {"message": "m"}});
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/Error"}),
        &broken,
        "$",
        &mut p,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    s.shutdown().await;
}
