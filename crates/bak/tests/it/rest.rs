//! The REST contract of spec `rest-api.md`: routes, status codes, the error envelope, body
//! rules, pagination, sorting, CORS.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Resp, TestServer};

fn posts() -> Value {
    json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "n", "type": "integer"},
        {"name": "slug", "type": "string", "unique": true}
    ]})
}

fn guarded() -> Value {
    json!({"name": "secrets", "fields": [{"name": "v", "type": "string"}],
           "permissions": {"create": "admin", "read": "authenticated", "update": "owner", "delete": "admin"}})
}

async fn server() -> TestServer {
    TestServer::start(&[posts(), guarded()]).await
}

#[tokio::test]
async fn health_answers_on_root_and_health_only() {
    let s = server().await;
    for path in ["/", "/health"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({"status": "ok", "version": bakend_core::VERSION})
        );
    }
    let r = s.raw(Method::POST, "/health", None, vec![]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json(), json!({"error": "Method not allowed"}));
    s.get("/health/")
        .await
        .assert_error(404, "not_found", "Not found");
    s.get("/api/health").await.assert_error(
        404,
        "not_found",
        "Collection \"health\" does not exist",
    );
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_envelope() {
    let s = server().await;
    for path in [
        "/nope",
        "/api",
        "/api/posts/a/b",
        "/api/users",
        "/api/auth",
        "/api/storage/x/y",
    ] {
        s.get(path)
            .await
            .assert_error(404, "not_found", "Not found");
    }
}

#[tokio::test]
async fn method_is_checked_before_the_collection() {
    let s = server().await;
    for (m, path) in [
        (Method::DELETE, "/api/nope"),
        (Method::PUT, "/api/posts"),
        (Method::PATCH, "/api/posts/x"),
        (Method::POST, "/api/posts/x"),
        (Method::PATCH, "/api/nope/x"),
    ] {
        s.raw(m, path, None, vec![]).await.assert_error(
            405,
            "method_not_allowed",
            "Method not allowed",
        );
    }
}

#[tokio::test]
async fn missing_collection_and_record_are_404() {
    let s = server().await;
    let nope = "Collection \"nope\" does not exist";
    s.get("/api/nope")
        .await
        .assert_error(404, "not_found", nope);
    s.get("/api/nope/rec_1")
        .await
        .assert_error(404, "not_found", nope);
    // Existence comes before the body.
    s.raw(Method::POST, "/api/nope", None, b"{".to_vec())
        .await
        .assert_error(404, "not_found", nope);
    s.put("/api/nope/rec_1", &json!({}))
        .await
        .assert_error(404, "not_found", nope);
    s.delete("/api/nope/rec_1")
        .await
        .assert_error(404, "not_found", nope);
    let missing = "Record \"rec_x\" not found";
    s.get("/api/posts/rec_x")
        .await
        .assert_error(404, "not_found", missing);
    s.put("/api/posts/rec_x", &json!({"title": "a"}))
        .await
        .assert_error(404, "not_found", missing);
    s.delete("/api/posts/rec_x")
        .await
        .assert_error(404, "not_found", missing);
}

#[tokio::test]
async fn empty_path_segments_are_ignored() {
    let s = server().await;
    let r = s.create("posts", json!({"title": "a"})).await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(s.get("//api//posts/").await.status, 200);
    assert_eq!(s.get(&format!("/api/posts/{id}/")).await.json(), r);
}

#[tokio::test]
async fn crud_round_trip() {
    let s = server().await;
    let created = s.create("posts", json!({"title": "first", "n": 1})).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rec_") && id.len() == 40);
    assert_eq!(created["createdAt"], created["updatedAt"]);
    assert_eq!(created["slug"], Value::Null);

    let got = s.get(&format!("/api/posts/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let updated = s.put(&format!("/api/posts/{id}"), &json!({"n": 2})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let updated = updated.json();
    assert_eq!(
        updated["title"], "first",
        "partial update keeps other fields"
    );
    assert_eq!(updated["n"], 2);
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert_ne!(updated["updatedAt"], created["updatedAt"]);

    let r = s.delete(&format!("/api/posts/{id}")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.text, "");
    assert_eq!(s.get(&format!("/api/posts/{id}")).await.status, 404);
}

#[tokio::test]
async fn update_without_schema_keys_changes_nothing() {
    let s = server().await;
    let created = s.create("posts", json!({"title": "t"})).await;
    let id = created["id"].as_str().unwrap();
    for body in [
        json!({}),
        json!({"unknown": 1, "id": "rec_other", "createdAt": "x"}),
    ] {
        let r = s.put(&format!("/api/posts/{id}"), &body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), created);
    }
}

#[tokio::test]
async fn server_managed_and_unknown_keys_are_ignored_on_create() {
    let s = server().await;
    let r = s
        .create(
            "posts",
            json!({"title": "t", "id": "rec_mine", "createdAt": "2000-01-01T00:00:00.000Z", "extra": true}),
        )
        .await;
    assert_ne!(r["id"], "rec_mine");
    assert_ne!(r["createdAt"], "2000-01-01T00:00:00.000Z");
    assert!(r.get("extra").is_none());
}

#[tokio::test]
async fn body_rules() {
    let s = server().await;
    let ct = "Content-Type must be application/json";
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        s.raw(
            Method::POST,
            "/api/posts",
            content_type,
            br#"{"title":"a"}"#.to_vec(),
        )
        .await
        .assert_error(400, "bad_request", ct);
    }
    let ok = s
        .raw(
            Method::POST,
            "/api/posts",
            Some("application/json; charset=utf-8"),
            br#"{"title":"a"}"#.to_vec(),
        )
        .await;
    assert_eq!(ok.status, 201);
    for bad in ["", "{", "{\"title\":", "nul", "{'a':1}"] {
        s.raw(
            Method::POST,
            "/api/posts",
            Some("application/json"),
            bad.as_bytes().to_vec(),
        )
        .await
        .assert_error(400, "bad_request", "Invalid JSON body");
    }
    for not_object in ["[]", "null", "1", "\"x\"", "true"] {
        s.raw(
            Method::POST,
            "/api/posts",
            Some("application/json"),
            not_object.as_bytes().to_vec(),
        )
        .await
        .assert_error(400, "bad_request", "Request body must be a JSON object");
    }
    let id = ok.json()["id"].as_str().unwrap().to_string();
    s.raw(
        Method::PUT,
        &format!("/api/posts/{id}"),
        Some("application/json"),
        b"[1]".to_vec(),
    )
    .await
    .assert_error(400, "bad_request", "Request body must be a JSON object");
    s.raw(
        Method::PUT,
        &format!("/api/posts/{id}"),
        None,
        b"{}".to_vec(),
    )
    .await
    .assert_error(400, "bad_request", ct);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let s = TestServer::start_with_config(&[posts()], r#"{"api": {"maxBodyBytes": 2048}}"#).await;
    let big = json!({"title": "x".repeat(4096)});
    s.post("/api/posts", &big).await.assert_error(
        413,
        "payload_too_large",
        "Request body exceeds the limit of 2048 bytes",
    );
    // Without a Content-Length the limit is enforced while reading.
    let port = s.url.rsplit(':').next().unwrap();
    let chunk = "y".repeat(4096);
    let raw = format!(
        "POST /api/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    sock.write_all(raw.as_bytes()).await.unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("payload_too_large"));
    assert_eq!(
        s.create("posts", json!({"title": "still fine"})).await["title"],
        "still fine"
    );
}

#[tokio::test]
async fn half_sent_body_does_not_hurt_others() {
    let s = server().await;
    let port = s.url.rsplit(':').next().unwrap().to_string();
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    sock.write_all(b"POST /api/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\":")
        .await
        .unwrap();
    drop(sock);
    assert_eq!(
        s.create("posts", json!({"title": "ok"})).await["title"],
        "ok"
    );
    assert_eq!(s.get("/api/posts").await.json()["totalItems"], 1);
}

#[tokio::test]
async fn list_is_newest_first_and_paginated() {
    let s = TestServer::start_with_config(
        &[posts()],
        r#"{"api": {"defaultPerPage": 3, "maxPerPage": 4}}"#,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = s
            .create("posts", json!({"title": format!("t{i}"), "n": i}))
            .await;
        ids.push(r["id"].as_str().unwrap().to_string());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    ids.reverse();
    let page1 = s.get("/api/posts").await.json();
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["perPage"], 3);
    assert_eq!(page1["totalItems"], 7);
    assert_eq!(page1["totalPages"], 3);
    let got: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[0..3]);
    let page3 = s.get("/api/posts?page=3").await.json();
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert_eq!(page3["items"][0]["id"], ids[6].as_str());
    let beyond = s.get("/api/posts?page=9").await.json();
    assert_eq!(beyond["items"], json!([]));
    let clamped = s.get("/api/posts?perPage=1000").await.json();
    assert_eq!(clamped["perPage"], 4);
    assert_eq!(clamped["totalPages"], 2);
    for bad in ["page=0", "page=x", "perPage=0", "perPage=-1"] {
        let r = s.get(&format!("/api/posts?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }
    // Unknown parameters are ignored.
    assert_eq!(
        s.get("/api/posts?limit=1&unknown=x").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn list_sorts_on_system_and_schema_fields() {
    let s = server().await;
    for (t, n) in [("b", 2), ("a", 3), ("c", 1)] {
        s.create("posts", json!({"title": t, "n": n})).await;
    }
    let titles = |r: Resp| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.text))
            .iter()
            .map(|x| x["title"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        titles(s.get("/api/posts?sort=title").await),
        ["a", "b", "c"]
    );
    assert_eq!(titles(s.get("/api/posts?sort=-n").await), ["a", "b", "c"]);
    assert_eq!(titles(s.get("/api/posts?sort=n").await), ["c", "b", "a"]);
    assert_eq!(titles(s.get("/api/posts?sort=createdAt").await).len(), 3);
    let r = s.get("/api/posts?sort=nope").await;
    r.assert_error(
        400,
        "bad_request",
        "Cannot sort by \"nope\": not a field of collection \"posts\"",
    );
}

#[tokio::test]
async fn anonymous_callers_meet_401_on_protected_rules() {
    let s = server().await;
    let auth = "Authentication required";
    s.get("/api/secrets")
        .await
        .assert_error(401, "unauthorized", auth);
    s.post("/api/secrets", &json!({"v": "x"}))
        .await
        .assert_error(401, "unauthorized", auth);
    // Permission comes before the body is even read.
    s.raw(Method::POST, "/api/secrets", None, b"{".to_vec())
        .await
        .assert_error(401, "unauthorized", auth);
    // A record that does not exist is 404 before any permission check.
    s.get("/api/secrets/rec_nope").await.assert_error(
        404,
        "not_found",
        "Record \"rec_nope\" not found",
    );
}

#[tokio::test]
async fn concurrent_unique_violations_are_400_never_500() {
    let s = server().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let http = s.http.clone();
        let url = format!("{}/api/posts", s.url);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"title": format!("t{i}"), "slug": "same"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => created += 1,
            400 => {
                let j: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(j["error"]["code"], "validation_error");
                assert_eq!(j["error"]["details"][0]["rule"], "unique");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = server().await;
    let r = s
        .http
        .request(Method::OPTIONS, format!("{}/api/posts", s.url))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let r = s
        .http
        .get(format!("{}/api/posts", s.url))
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // Errors carry CORS headers too, so browsers can read them.
    let r = s
        .http
        .get(format!("{}/api/nope", s.url))
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn cors_origin_list_is_respected() {
    let s = TestServer::start_with_config(
        &[posts()],
        r#"{"api": {"corsOrigins": ["http://good.example"]}}"#,
    )
    .await;
    let get = |origin: &'static str| {
        s.http
            .get(format!("{}/api/posts", s.url))
            .header("Origin", origin)
            .send()
    };
    let good = get("http://good.example").await.unwrap();
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "http://good.example"
    );
    let bad = get("http://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn reserved_collection_names_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(dir.path(), &[json!({"name": "users", "fields": []})]);
    let cfg = bakend_core::config::Config::load(Some(&dir.path().join("bakend.json")), &|_| None)
        .unwrap();
    let err = bakend_server::start(cfg).await.err().unwrap().to_string();
    assert!(
        err.contains("Collection name \"users\" is reserved"),
        "{err}"
    );
    assert!(err.contains("users.json"), "{err}");
}
