//! File storage over real HTTP (spec `storage.md`, with v1's gaps fixed): every row of the
//! upload, download and delete tables, streaming limits, Unicode names, ranges and caching,
//! MIME sniffing, file-field ownership, realtime delivery, crash safety and pruning.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{BakProcess, Resp, Session, TestServer};
use crate::ws::Ws;

const ADMIN: &str = "root@example.com";
const MIB: usize = 1024 * 1024;
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn docs() -> Value {
    json!({"name": "docs", "fields": [
        {"name": "title", "type": "string"},
        {"name": "attachment", "type": "file"},
        {"name": "cover", "type": "file"}
    ], "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}})
}

async fn server_with(config: &str) -> TestServer {
    TestServer::start_with_env(&[docs()], config, &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await
}

async fn server() -> TestServer {
    server_with(r#"{"auth": {"rateLimit": {"attempts": 0}}}"#).await
}

/// A multipart upload; `mime: None` sends a part without a Content-Type.
async fn upload_form(s: &TestServer, token: Option<&str>, form: Form) -> Resp {
    let mut req = s
        .http
        .post(format!("{}/api/storage/upload", s.url))
        .multipart(form);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Resp::from(req.send().await.unwrap()).await
}

fn part(name: &str, bytes: &[u8], mime: Option<&str>) -> Part {
    let p = Part::bytes(bytes.to_vec()).file_name(name.to_string());
    match mime {
        Some(m) => p.mime_str(m).unwrap(),
        None => p,
    }
}

async fn upload(
    s: &TestServer,
    who: &Session,
    name: &str,
    bytes: &[u8],
    mime: Option<&str>,
    visibility: Option<&str>,
) -> Value {
    let mut form = Form::new().part("file", part(name, bytes, mime));
    if let Some(v) = visibility {
        form = form.text("visibility", v.to_string());
    }
    let r = upload_form(s, Some(&who.token), form).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

async fn get_file(s: &TestServer, id: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    request(s, Method::GET, id, token, headers).await
}

async fn request(
    s: &TestServer,
    method: Method,
    id: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = s
        .http
        .request(method, format!("{}/api/storage/{id}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Resp::from(req.send().await.unwrap()).await
}

fn tmp_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("storage/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn upload_table() {
    let mut s = server().await;
    let alice = s.register("alice@example.com").await;
    s.take_events();

    // Method first, then auth, then the body.
    s.call(Method::GET, "/api/storage/upload", None, None)
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");
    s.call(Method::PUT, "/api/storage/upload", Some(&alice.token), None)
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");
    let form = || Form::new().part("file", part("a.txt", b"hello", Some("text/plain")));
    upload_form(&s, None, form())
        .await
        .assert_error(401, "unauthorized", "Unauthorized");
    upload_form(&s, Some("not.a.token"), form())
        .await
        .assert_error(401, "unauthorized", "Unauthorized");
    for (ct, body) in [
        (Some("application/json"), b"{}".to_vec()),
        (None, b"x".to_vec()),
        (Some("multipart/form-data"), b"x".to_vec()), // no boundary
        (
            Some("multipart/form-data; boundary=XyZ"),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"
                .to_vec(),
        ), // truncated
    ] {
        let mut req = s
            .http
            .post(format!("{}/api/storage/upload", s.url))
            .bearer_auth(&alice.token)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        Resp::from(req.send().await.unwrap()).await.assert_error(
            400,
            "bad_request",
            "Invalid multipart form data",
        );
    }
    let required = "Field 'file' is required";
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().text("visibility", "public"),
    )
    .await
    .assert_error(400, "bad_request", required);
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().text("file", "not a file part"),
    )
    .await
    .assert_error(400, "bad_request", required);
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().part("other", part("a.txt", b"x", None)),
    )
    .await
    .assert_error(400, "bad_request", required);
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().part("file", part("empty.txt", b"", Some("text/plain"))),
    )
    .await
    .assert_error(400, "bad_request", "File cannot be empty");
    for bad in ["PUBLIC", "private", "", "public "] {
        upload_form(&s, Some(&alice.token), form().text("visibility", bad))
            .await
            .assert_error(
                400,
                "bad_request",
                "visibility must be \"public\" or \"protected\"",
            );
    }
    assert!(s.take_events().is_empty(), "no event for a failed upload");

    // Success: metadata in the spec's key order.
    let r = upload_form(&s, Some(&alice.token), form()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let meta = r.json();
    let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "filename",
            "mimeType",
            "size",
            "visibility",
            "userId",
            "createdAt"
        ]
    );
    let id = meta["id"].as_str().unwrap();
    assert!(id.starts_with("fil_") && id.len() == 40, "{id}");
    assert_eq!(meta["filename"], "a.txt");
    assert_eq!(meta["mimeType"], "text/plain");
    assert_eq!(meta["size"], 5);
    assert_eq!(
        meta["visibility"], "protected",
        "absent visibility → protected"
    );
    assert_eq!(meta["userId"], alice.id.as_str());
    assert_eq!(meta["createdAt"].as_str().unwrap().len(), 24);
    let blob = s.dir.path().join("storage/files").join(id);
    assert_eq!(std::fs::read(&blob).unwrap(), b"hello");
    let events = s.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "storage.uploaded");
    assert_eq!(events[0].source, bakend_core::EventSource::Storage);
    assert_eq!(events[0].payload, meta);
    assert_eq!(events[0].subject.as_deref(), Some(alice.id.as_str()));

    let public = upload(
        &s,
        &alice,
        "p.txt",
        b"pub",
        Some("text/plain"),
        Some("public"),
    )
    .await;
    assert_eq!(public["visibility"], "public");
    let prot = upload(&s, &alice, "q.txt", b"prot", None, Some("protected")).await;
    assert_eq!(prot["visibility"], "protected");

    // Empty filename → "unnamed"; several file parts → the first; other parts are ignored.
    let form = Form::new()
        .text("note", "ignored")
        .part("file", part("", b"first", Some("text/plain")))
        .part("file", part("second.txt", b"second", Some("text/plain")))
        .text("visibility", "public");
    let r = upload_form(&s, Some(&alice.token), form).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let j = r.json();
    assert_eq!(
        (j["filename"].as_str(), j["size"].as_u64()),
        (Some("unnamed"), Some(5))
    );
    assert_eq!(j["visibility"], "public");

    // Route shape: only /upload and /<id>.
    for path in ["/api/storage", "/api/storage/a/b", "/api/storage/upload/x"] {
        s.call(Method::GET, path, Some(&alice.token), None)
            .await
            .assert_error(404, "not_found", "Not found");
    }
    assert_eq!(tmp_entries(s.dir.path()), 0);
}

#[tokio::test]
async fn size_limit_default_and_configured() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let exact = vec![7u8; 10 * MIB];
    let r = upload(&s, &alice, "big.bin", &exact, None, None).await;
    assert_eq!(r["size"], 10 * MIB);
    let over = vec![7u8; 10 * MIB + 1];
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().part("file", part("big.bin", &over, None)),
    )
    .await
    .assert_error(400, "bad_request", "File exceeds maximum size of 10 MB");
    assert_eq!(tmp_entries(s.dir.path()), 0, "temp file removed");
    // A large JSON body limit does not apply to uploads.
    assert!(
        s.dir
            .path()
            .join("storage/files")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );

    let s = server_with(
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "storage": {"maxFileSize": 5242880}}"#,
    )
    .await;
    let alice = s.register("alice@example.com").await;
    upload(&s, &alice, "five.bin", &vec![1u8; 5 * MIB], None, None).await;
    upload_form(
        &s,
        Some(&alice.token),
        Form::new().part("file", part("six.bin", &vec![1u8; 5 * MIB + 1], None)),
    )
    .await
    .assert_error(400, "bad_request", "File exceeds maximum size of 5 MB");
}

#[tokio::test]
async fn download_table_and_acl() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let public = upload(
        &s,
        &alice,
        "pub.txt",
        b"public bytes",
        Some("text/plain"),
        Some("public"),
    )
    .await;
    let prot = upload(
        &s,
        &alice,
        "prot.txt",
        b"protected bytes",
        Some("text/plain"),
        None,
    )
    .await;
    let (pub_id, prot_id) = (public["id"].as_str().unwrap(), prot["id"].as_str().unwrap());

    // Unknown id: 404 for everyone, before the method and access checks.
    for m in [Method::GET, Method::PUT, Method::DELETE, Method::HEAD] {
        let r = request(&s, m.clone(), "fil_nope", None, &[]).await;
        assert_eq!(r.status, 404, "{m}");
        if m != Method::HEAD {
            r.assert_error(404, "not_found", "File not found");
        }
    }
    for m in [Method::PUT, Method::PATCH, Method::POST] {
        request(&s, m, pub_id, Some(&alice.token), &[])
            .await
            .assert_error(405, "method_not_allowed", "Method not allowed");
    }

    // The ACL table.
    for (who, token) in [
        ("anonymous", None),
        ("other", Some(bob.token.as_str())),
        ("owner", Some(alice.token.as_str())),
        ("admin", Some(admin.token.as_str())),
    ] {
        let r = get_file(&s, pub_id, token, &[]).await;
        assert_eq!((who, r.status), (who, 200));
        assert_eq!(r.text, "public bytes");
        let r = get_file(&s, prot_id, token, &[]).await;
        match who {
            "anonymous" => r.assert_error(401, "unauthorized", "Unauthorized"),
            "other" => r.assert_error(403, "forbidden", "Forbidden"),
            _ => {
                assert_eq!((who, r.status), (who, 200));
                assert_eq!(r.text, "protected bytes");
            }
        }
    }

    // Headers of a successful download.
    let r = get_file(&s, pub_id, None, &[]).await;
    let h = |k: &str| r.headers[k].to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "text/plain");
    assert_eq!(h("content-length"), "12");
    assert_eq!(
        h("content-disposition"),
        "inline; filename=\"pub.txt\"; filename*=UTF-8''pub.txt"
    );
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("content-security-policy"), "default-src 'none'; sandbox");
    assert_eq!(h("cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(h("accept-ranges"), "bytes");
    assert!(r.headers.contains_key("etag") && r.headers.contains_key("last-modified"));
    let r = get_file(&s, prot_id, Some(&alice.token), &[]).await;
    assert_eq!(r.headers["cache-control"], "private, no-store");

    // Row without its blob → 404.
    std::fs::remove_file(s.dir.path().join("storage/files").join(prot_id)).unwrap();
    get_file(&s, prot_id, Some(&alice.token), &[])
        .await
        .assert_error(404, "not_found", "File not found");
}

#[tokio::test]
async fn delete_table_and_events() {
    let mut s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let a1 = upload(&s, &alice, "a1.txt", b"one", None, Some("public")).await;
    let a2 = upload(&s, &alice, "a2.txt", b"two", None, None).await;
    let (a1, a2) = (a1["id"].as_str().unwrap(), a2["id"].as_str().unwrap());
    let rec = s
        .create("docs", json!({"title": "x", "attachment": null}))
        .await;
    s.take_events();

    request(&s, Method::DELETE, "fil_nope", None, &[])
        .await
        .assert_error(404, "not_found", "File not found");
    request(&s, Method::DELETE, a1, None, &[])
        .await
        .assert_error(401, "unauthorized", "Unauthorized");
    request(&s, Method::DELETE, a1, Some(&bob.token), &[])
        .await
        .assert_error(403, "forbidden", "Forbidden");
    assert!(s.take_events().is_empty());

    // Owner deletes; a record referencing it keeps the dangling id.
    let r = s
        .call(
            Method::PUT,
            &format!("/api/docs/{}", rec["id"].as_str().unwrap()),
            Some(&alice.token),
            Some(&json!({"attachment": a1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = request(&s, Method::DELETE, a1, Some(&alice.token), &[]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!s.dir.path().join("storage/files").join(a1).exists());
    get_file(&s, a1, Some(&alice.token), &[])
        .await
        .assert_error(404, "not_found", "File not found");
    let doc = s
        .get(&format!("/api/docs/{}", rec["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(doc["attachment"], a1);
    let r = s
        .call(
            Method::PUT,
            &format!("/api/docs/{}", rec["id"].as_str().unwrap()),
            Some(&alice.token),
            Some(&json!({"attachment": a1})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"][0]["rule"], "exists");

    // Admin deletes someone else's protected file.
    let r = request(&s, Method::DELETE, a2, Some(&admin.token), &[]).await;
    assert_eq!(r.status, 204);
    let events: Vec<_> = s
        .take_events()
        .into_iter()
        .filter(|e| e.event_type.starts_with("storage."))
        .collect();
    assert_eq!(events.len(), 2);
    for (e, id) in events.iter().zip([a1, a2]) {
        assert_eq!(e.event_type, "storage.deleted");
        assert_eq!(e.payload, json!({"id": id, "userId": alice.id}));
        let keys: Vec<&String> = e.payload.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "userId"]);
        assert_eq!(e.subject.as_deref(), Some(alice.id.as_str()));
    }
}

#[tokio::test]
async fn unicode_names_and_active_content() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let f = upload(
        &s,
        &alice,
        "€uro ☃.txt",
        b"snow",
        Some("text/plain"),
        Some("public"),
    )
    .await;
    assert_eq!(f["filename"], "€uro ☃.txt");
    let r = get_file(&s, f["id"].as_str().unwrap(), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.headers["content-disposition"],
        "inline; filename=\"_uro _.txt\"; filename*=UTF-8''%E2%82%ACuro%20%E2%98%83.txt"
    );
    // (A backslash is covered by the server's unit tests: multipart clients disagree on
    // escaping it inside the part's own header.)
    let f = upload(
        &s,
        &alice,
        "q\"uote.txt",
        b"q",
        Some("text/plain"),
        Some("public"),
    )
    .await;
    assert_eq!(f["filename"], "q\"uote.txt");
    let r = get_file(&s, f["id"].as_str().unwrap(), None, &[]).await;
    assert_eq!(
        r.headers["content-disposition"],
        "inline; filename=\"q_uote.txt\"; filename*=UTF-8''q%22uote.txt"
    );

    // HTML and SVG cannot run script in the API's origin: attachment, sandboxed, not sniffed.
    for (name, mime, body) in [
        ("x.html", "text/html", &b"<script>alert(1)</script>"[..]),
        (
            "x.svg",
            "image/svg+xml",
            &b"<svg onload=alert(1)></svg>"[..],
        ),
    ] {
        let f = upload(&s, &alice, name, body, Some(mime), Some("public")).await;
        let r = get_file(&s, f["id"].as_str().unwrap(), None, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], mime);
        let cd = r.headers["content-disposition"].to_str().unwrap();
        assert!(cd.starts_with("attachment;"), "{cd}");
        assert_eq!(
            r.headers["content-security-policy"],
            "default-src 'none'; sandbox"
        );
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn ranges_etags_and_head() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let body: Vec<u8> = (0..100u8).collect();
    let f = upload(&s, &alice, "n.bin", &body, None, Some("public")).await;
    let id = f["id"].as_str().unwrap();
    let full = get_file(&s, id, None, &[]).await;
    let etag = full.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let lm = full.headers["last-modified"].to_str().unwrap();
    assert!(lm.ends_with(" GMT"), "{lm}");

    let bytes = |r: &reqwest::Response| r.status().as_u16();
    let raw = |range: &str| {
        let range = range.to_string();
        let url = format!("{}/api/storage/{id}", s.url);
        let http = s.http.clone();
        async move { http.get(url).header("range", range).send().await.unwrap() }
    };
    let r = raw("bytes=10-19").await;
    assert_eq!(bytes(&r), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100");
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[10..20]);
    let r = raw("bytes=95-").await;
    assert_eq!(r.headers()["content-range"], "bytes 95-99/100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[95..]);
    let r = raw("bytes=-3").await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[97..]);
    let r = raw("bytes=100-").await;
    assert_eq!(bytes(&r), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100");
    let r = raw("bytes=0-1,5-6").await;
    assert_eq!(bytes(&r), 200, "multi-range: the whole file");

    let r = get_file(&s, id, None, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());
    assert_eq!(r.headers["etag"], etag.as_str());
    let r = get_file(&s, id, None, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);

    let r = request(&s, Method::HEAD, id, None, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.is_empty());
    assert_eq!(r.headers["content-length"], "100");
    assert_eq!(r.headers["etag"], etag.as_str());

    // Large files stream in chunks and arrive whole.
    let big: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let f = upload(&s, &alice, "big.bin", &big, None, Some("public")).await;
    let got = s
        .http
        .get(format!(
            "{}/api/storage/{}",
            s.url,
            f["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got.as_ref() == big.as_slice());
}

#[tokio::test]
async fn mime_type_is_sniffed_only_when_missing_or_generic() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    for (mime, body, want) in [
        (None, PNG, "image/png"),
        (Some("application/octet-stream"), PNG, "image/png"),
        (Some("text/plain"), PNG, "text/plain"),
        (None, &b"just some words"[..], "application/octet-stream"),
        (Some("application/pdf"), &b"%PDF-1.4"[..], "application/pdf"),
    ] {
        let f = upload(&s, &alice, "f", body, mime, Some("public")).await;
        assert_eq!(f["mimeType"], want, "{mime:?}");
        let r = get_file(&s, f["id"].as_str().unwrap(), None, &[]).await;
        assert_eq!(r.headers["content-type"], want);
    }
}

#[tokio::test]
async fn file_fields_check_existence_and_ownership() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let af = upload(&s, &alice, "a.txt", b"a", None, None).await;
    let bf = upload(&s, &bob, "b.txt", b"b", None, None).await;
    let (af, bf) = (af["id"].as_str().unwrap(), bf["id"].as_str().unwrap());
    let create = |token: Option<String>, body: Value| {
        let s = &s;
        async move {
            s.call(Method::POST, "/api/docs", token.as_deref(), Some(&body))
                .await
        }
    };

    // Bob cannot attach Alice's (protected) file; errors list fields in definition order.
    let r = create(
        Some(bob.token.clone()),
        json!({"title": "t", "attachment": af, "cover": "fil_missing"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.json()["error"]["details"],
        json!([
            {"field": "attachment", "rule": "owner", "message": "Field \"attachment\" references a file you do not own"},
            {"field": "cover", "rule": "exists", "message": "Field \"cover\" references unknown file \"fil_missing\""}
        ])
    );
    // Also when another field fails a check without the database.
    let r = create(
        Some(bob.token.clone()),
        json!({"title": 5, "attachment": af}),
    )
    .await;
    let rules: Vec<Value> = r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rule"].clone())
        .collect();
    assert_eq!(rules, [json!("type"), json!("owner")]);
    // Anonymous writers own no file.
    let r = create(None, json!({"attachment": af})).await;
    assert_eq!(r.json()["error"]["details"][0]["rule"], "owner");
    // Own files, admins any file, empty and null skip the check.
    let r = create(
        Some(bob.token.clone()),
        json!({"attachment": bf, "cover": ""}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rec = r.json();
    let r = create(
        Some(admin.token.clone()),
        json!({"attachment": af, "cover": bf}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Updates too.
    let path = format!("/api/docs/{}", rec["id"].as_str().unwrap());
    let r = s
        .call(
            Method::PUT,
            &path,
            Some(&bob.token),
            Some(&json!({"cover": af})),
        )
        .await;
    assert_eq!(r.json()["error"]["details"][0]["rule"], "owner");
    let r = s
        .call(
            Method::PUT,
            &path,
            Some(&alice.token),
            Some(&json!({"cover": af})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Referencing a file does not change its ACL: the record is public, the file is not.
    let doc = s.get(&path).await.json();
    assert_eq!(doc["cover"], af);
    get_file(&s, af, None, &[])
        .await
        .assert_error(401, "unauthorized", "Unauthorized");
    get_file(&s, af, Some(&bob.token), &[])
        .await
        .assert_error(403, "forbidden", "Forbidden");
}

#[tokio::test]
async fn realtime_delivery_with_redaction() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let url = |t: &str| format!("{}?token={t}", s.ws_url());
    let (mut anon, _) = Ws::connect(&s.ws_url()).await;
    let (mut owner, _) = Ws::connect(&url(&alice.token)).await;
    let (mut other, _) = Ws::connect(&url(&bob.token)).await;
    let (mut adm, _) = Ws::connect(&url(&admin.token)).await;
    for ws in [&mut anon, &mut owner, &mut other, &mut adm] {
        ws.subscribe("storage.*").await;
    }
    let prot = upload(&s, &alice, "secret.txt", b"s", Some("text/plain"), None).await;
    let public = upload(
        &s,
        &alice,
        "open.txt",
        b"o",
        Some("text/plain"),
        Some("public"),
    )
    .await;
    let r = request(
        &s,
        Method::DELETE,
        prot["id"].as_str().unwrap(),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    let redacted =
        json!({"id": prot["id"], "visibility": "protected", "createdAt": prot["createdAt"]});
    let deleted = json!({"id": prot["id"], "userId": alice.id});
    for (who, ws, first) in [
        ("anonymous", &mut anon, &redacted),
        ("other", &mut other, &redacted),
        ("owner", &mut owner, &prot),
        ("admin", &mut adm, &prot),
    ] {
        let mut got = Vec::new();
        for _ in 0..3 {
            let f = ws.next().await;
            assert_eq!(f["type"], "event", "{who}: {f}");
            got.push((f["event"]["type"].clone(), f["event"]["payload"].clone()));
            assert_eq!(f["event"]["source"], "storage");
        }
        assert_eq!(
            got,
            [
                (json!("storage.uploaded"), first.clone()),
                (json!("storage.uploaded"), public.clone()),
                (json!("storage.deleted"), deleted.clone()),
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn deleting_a_user_deletes_their_files() {
    let mut s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let mut bobs = Vec::new();
    for i in 0..3 {
        let f = upload(&s, &bob, &format!("b{i}"), b"bob", None, None).await;
        bobs.push(f["id"].as_str().unwrap().to_string());
    }
    let af = upload(&s, &alice, "a", b"alice", None, None).await;
    s.take_events();
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/admin/users/{}", bob.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let deleted: Vec<Value> = s
        .take_events()
        .into_iter()
        .filter(|e| e.event_type == "storage.deleted")
        .map(|e| e.payload.clone())
        .collect();
    let want: Vec<Value> = bobs
        .iter()
        .map(|id| json!({"id": id, "userId": bob.id}))
        .collect();
    assert_eq!(deleted, want);
    for id in &bobs {
        get_file(&s, id, Some(&admin.token), &[])
            .await
            .assert_error(404, "not_found", "File not found");
        assert!(!s.dir.path().join("storage/files").join(id).exists());
    }
    let r = get_file(&s, af["id"].as_str().unwrap(), Some(&alice.token), &[]).await;
    assert_eq!(r.status, 200);

    // The admin listing (spec §9): newest first, with the total.
    let list = s
        .call(
            Method::GET,
            "/api/admin/storage?limit=0",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json(), json!({"items": [af], "total": 1}));
    s.call(Method::GET, "/api/admin/storage", Some(&alice.token), None)
        .await
        .assert_error(403, "forbidden", "Admin access required");
}

// ---- The binary: memory while streaming, crashes, prune. ----

fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(dir.path(), &[docs()]);
    std::fs::write(dir.path().join("bakend.json"), config).unwrap();
    dir
}

/// A multipart body of `total` file bytes, streamed in 64 KiB chunks, optionally slowly.
fn streamed_multipart(total: usize, delay: Option<Duration>) -> (String, reqwest::Body) {
    let boundary = "bakendtestboundary7MA4YWxk";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"visibility\"\r\n\r\npublic\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    const CHUNK: usize = 64 * 1024;
    let chunks = total.div_ceil(CHUNK);
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let head = head.clone();
        let tail = tail.clone();
        async move {
            if i > chunks + 1 {
                return None;
            }
            if let Some(d) = delay
                && i > 0
            {
                tokio::time::sleep(d).await;
            }
            let bytes: Vec<u8> = if i == 0 {
                head.into_bytes()
            } else if i <= chunks {
                let n = CHUNK.min(total - (i - 1) * CHUNK);
                vec![b'x'; n]
            } else {
                tail.into_bytes()
            };
            Some((Ok::<_, std::io::Error>(bytes), i + 1))
        }
    });
    (
        format!("multipart/form-data; boundary={boundary}"),
        reqwest::Body::wrap_stream(stream),
    )
}

async fn register_at(http: &reqwest::Client, url: &str, email: &str) -> String {
    let r = http
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn oversized_upload_is_refused_while_streaming_in_bounded_memory() {
    let dir = project(r#"{"auth": {"rateLimit": {"attempts": 0}}}"#);
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    let token = register_at(&http, &bak.url(), "alice@example.com").await;
    let pid = bak.child.id();
    let before = vm_kib(pid, "VmRSS:");
    let (ct, body) = streamed_multipart(50 * MIB, None);
    let sent = http
        .post(format!("{}/api/storage/upload", bak.url()))
        .bearer_auth(&token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) => {
            assert_eq!(r.status(), 400);
            let j: Value = r.json().await.unwrap();
            assert_eq!(j["error"]["message"], "File exceeds maximum size of 10 MB");
        }
        // The server answers 400 and closes as soon as the limit is passed; on a loaded
        // machine the client can still be writing the rest and see the closed socket before
        // it reads the answer. The refusal happened either way; memory is what is checked.
        Err(e) if e.is_request() => eprintln!("upload cut off by the refusal: {e}"),
        Err(e) => panic!("{e}"),
    }
    let peak = vm_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!("RSS before {before} kB, peak {peak} kB, growth {growth_mib:.1} MiB");
    assert!(growth_mib < 16.0, "RSS grew {growth_mib:.1} MiB");
    assert_eq!(tmp_entries(dir.path()), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("storage/files"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_complete_files_or_nothing() {
    let dir = project(r#"{"auth": {"rateLimit": {"attempts": 0}}}"#);
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    let token = register_at(&http, &bak.url(), "alice@example.com").await;
    // Some finished uploads, then several large ones in flight when the server dies.
    for _ in 0..3 {
        let (ct, body) = streamed_multipart(2 * MIB, None);
        let r = http
            .post(format!("{}/api/storage/upload", bak.url()))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let mut inflight = Vec::new();
    for i in 0..6 {
        let (ct, body) = streamed_multipart(8 * MIB, Some(Duration::from_millis(5 + i)));
        let req = http
            .post(format!("{}/api/storage/upload", bak.url()))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body);
        inflight.push(tokio::spawn(
            async move { req.send().await.map(|r| r.status()) },
        ));
    }
    let tmp = dir.path().join("storage/tmp");
    let mut seen = false;
    for _ in 0..200 {
        let spooling = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.metadata().map(|m| m.len() > 512 * 1024).unwrap_or(false))
            .count();
        if spooling >= 3 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "uploads were in flight");
    bak.child.kill().unwrap(); // SIGKILL
    bak.child.wait().unwrap();
    for t in inflight {
        let _ = t.await;
    }
    assert!(
        tmp_entries(dir.path()) > 0,
        "the crash left temporary files"
    );

    let mut again = BakProcess::spawn(dir.path(), &[]);
    again.wait_ready().await;
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "leftover temp files are cleaned at start"
    );
    let rows: Vec<(String, i64)> = crate::harness::with_project_db(dir.path(), |c| {
        c.prepare("SELECT id, size FROM _files")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert!(rows.len() >= 3, "{rows:?}");
    for (id, size) in &rows {
        let len = std::fs::metadata(dir.path().join("storage/files").join(id))
            .unwrap_or_else(|_| panic!("row {id} has no blob"))
            .len();
        assert_eq!(len as i64, *size, "{id}");
        let r = http
            .get(format!("{}/api/storage/{id}", again.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len() as i64, *size);
    }
}

fn set_old(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
}

fn prune_cmd(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = crate::harness::bak_in(dir)
        .args(["storage", "prune"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn prune_removes_every_orphan_in_one_run_while_the_server_runs() {
    // Set up: referenced uploads through the API, then orphans written directly.
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let mut referenced = Vec::new();
    for i in 0..3 {
        let f = upload(&s, &alice, &format!("r{i}"), b"kept", None, None).await;
        let id = f["id"].as_str().unwrap().to_string();
        let field = if i == 2 { "cover" } else { "attachment" };
        let r = s
            .call(
                Method::POST,
                "/api/docs",
                Some(&alice.token),
                Some(&json!({field: id})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        referenced.push(id);
    }
    let fresh = upload(&s, &alice, "fresh", b"new", None, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = s.shutdown().await;
    let files = dir.path().join("storage/files");
    let old = "2020-01-01T00:00:00.000Z";
    let orphans: Vec<String> = (0..1100)
        .map(|i| format!("fil_00000000-0000-4000-8000-{i:012}"))
        .collect();
    {
        let (orphans, alice_id, fresh) = (orphans.clone(), alice.id.clone(), fresh.clone());
        crate::harness::with_project_db(dir.path(), move |conn| {
            conn.execute(
                "UPDATE _files SET created_at = ?1 WHERE id != ?2",
                (old, &fresh),
            )
            .unwrap();
            conn.execute_batch("BEGIN").unwrap();
            for id in &orphans {
                conn.execute(
                    "INSERT INTO _files (id, filename, mime_type, size, visibility, user_id, created_at)
                     VALUES (?1, 'o.bin', 'application/octet-stream', 1, 'protected', ?2, ?3)",
                    (id, &alice_id, old),
                )
                .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
        });
    }
    for id in &orphans {
        std::fs::write(files.join(id), b"o").unwrap();
        set_old(&files.join(id));
    }
    let stray_old: Vec<String> = (0..5).map(|i| format!("fil_stray-{i}")).collect();
    for id in &stray_old {
        std::fs::write(files.join(id), b"stray").unwrap();
        set_old(&files.join(id));
    }
    std::fs::write(files.join("fil_stray-fresh"), b"in flight").unwrap();

    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;

    // Dry run: lists, removes nothing.
    let (ok, out, err) = prune_cmd(dir.path(), &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("Would remove 1100 orphan file(s):\n"),
        "{}",
        &out[..200.min(out.len())]
    );
    assert!(out.contains("Would remove 5 blob(s) without a metadata row:"));
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 4 + 1100 + 6);

    let (ok, out, err) = prune_cmd(dir.path(), &["--grace", "1h"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Removed 1100 orphan file(s):");
    let mut listed: Vec<String> = lines[1..1101].iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(listed, orphans);
    assert_eq!(lines[1101], "Removed 5 blob(s) without a metadata row:");
    assert!(err.contains("not delivered"), "{err}");

    let mut left: Vec<String> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = referenced.clone();
    want.push(fresh.clone());
    want.push("fil_stray-fresh".into());
    want.sort();
    assert_eq!(left, want);
    let n: i64 = crate::harness::with_project_db(dir.path(), |c| {
        c.query_row("SELECT COUNT(*) FROM _files", (), |r| r.get(0))
            .unwrap()
    });
    assert_eq!(n, 4);
    // The running server still serves what is left.
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/auth/login", bak.url()))
        .json(&json!({"email": "alice@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .get(format!("{}/api/storage/{}", bak.url(), referenced[0]))
        .bearer_auth(login["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (ok, out, _) = prune_cmd(dir.path(), &[]);
    assert!(ok);
    assert_eq!(out, "No orphan files found.\n");
    // A zero grace period takes the fresh, unattached upload too.
    let (ok, out, _) = prune_cmd(dir.path(), &["--grace", "0s", "--print-events"]);
    assert!(ok);
    assert!(
        out.starts_with(&format!("Removed 1 orphan file(s):\n{fresh}\n")),
        "{out}"
    );
    assert!(out.contains("\"type\":\"storage.deleted\""), "{out}");
    let (ok, _, err) = prune_cmd(dir.path(), &["--grace", "soon"]);
    assert!(!ok && err.contains("--grace"), "{err}");
    bak.signal(libc::SIGTERM);
    bak.wait_exit().await;
}

/// The BENCHMARKS.md storage figures. Run against a release build:
/// `cargo test --release -p bak --test it storage::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly in release mode"]
async fn throughput() {
    let dir = project(r#"{"auth": {"rateLimit": {"attempts": 0}}, "logLevel": "WARN"}"#);
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let http = reqwest::Client::new();
    let token = register_at(&http, &bak.url(), "bench@example.com").await;
    let pid = bak.child.id();
    // `BENCH_FILE_MIB` changes the file size (default 5 MiB).
    let mib: usize = std::env::var("BENCH_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let file: Vec<u8> = (0..mib * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let url = bak.url();
    let up = |http: reqwest::Client, token: String, file: Vec<u8>| {
        let url = url.clone();
        async move {
            let form = Form::new()
                .part("file", Part::bytes(file).file_name("bench.bin"))
                .text("visibility", "public");
            let r = http
                .post(format!("{url}/api/storage/upload"))
                .bearer_auth(token)
                .multipart(form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // Warm-up, then sequential uploads and downloads of a 5 MiB file.
    let id = up(http.clone(), token.clone(), file.clone()).await;
    const N: usize = 40;
    let t = std::time::Instant::now();
    for _ in 0..N {
        up(http.clone(), token.clone(), file.clone()).await;
    }
    let up_secs = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..N {
        let b = http
            .get(format!("{url}/api/storage/{id}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(b.len(), mib * MIB);
    }
    let down_secs = t.elapsed().as_secs_f64();
    let mb = (N * mib * MIB) as f64 / 1e6;
    eprintln!(
        "upload {mib} MiB x{N}: {:.1} MB/s ({:.1} ms each); download: {:.1} MB/s ({:.1} ms each)",
        mb / up_secs,
        up_secs * 1000.0 / N as f64,
        mb / down_secs,
        down_secs * 1000.0 / N as f64
    );

    // 20 concurrent uploads, sampling the server's RSS meanwhile.
    let idle = vm_kib(pid, "VmRSS:");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(vm_kib(pid, "VmRSS:"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        })
    };
    let t = std::time::Instant::now();
    for _round in 0..3 {
        let tasks: Vec<_> = (0..20)
            .map(|_| tokio::spawn(up(http.clone(), token.clone(), file.clone())))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    eprintln!(
        "20 concurrent {mib} MiB uploads x3 rounds: {:.1} MB/s aggregate; server RSS idle {:.1} MiB, peak {:.1} MiB (VmHWM {:.1} MiB)",
        (60 * mib * MIB) as f64 / 1e6 / secs,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        vm_kib(pid, "VmHWM:") as f64 / 1024.0
    );
}
