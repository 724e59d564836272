//! Accounts, tokens and sessions over real HTTP (spec `auth.md`, with v1's gaps fixed).

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestServer;

fn notes() -> Value {
    json!({"name": "notes", "fields": [{"name": "t", "type": "string"}, {"name": "user_id", "type": "string"}],
           "permissions": {"create": "authenticated", "read": "admin", "update": "admin", "delete": "admin"}})
}

fn open() -> Value {
    json!({"name": "open", "fields": [{"name": "t", "type": "string"}]})
}

const ADMIN: &str = "root@example.com";

async fn server() -> TestServer {
    TestServer::start_with_env(
        &[notes(), open()],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", " Root@Example.com ")],
    )
    .await
}

#[tokio::test]
async fn register_and_login_return_the_token_response() {
    let mut s = server().await;
    s.take_events();
    let r = s
        .post(
            "/api/auth/register",
            &json!({"email": "  Alice@Example.com ", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let j = r.json();
    let refresh = j["refreshToken"].as_str().unwrap();
    assert!(
        refresh.starts_with("rt_") && refresh.len() == 71,
        "{refresh}"
    );
    assert_eq!(j["token"].as_str().unwrap().split('.').count(), 3);
    let user = &j["user"];
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["role"], "authenticated");
    assert!(user["id"].as_str().unwrap().starts_with("usr_"));
    let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "email", "role", "createdAt"]);
    assert!(!r.text.contains("password"), "no hash in the response");

    let again = s
        .post(
            "/api/auth/register",
            &json!({"email": "alice@example.com", "password": "password123"}),
        )
        .await;
    again.assert_error(409, "conflict", "Email is already registered");

    let login = s
        .post(
            "/api/auth/login",
            &json!({"email": "ALICE@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(login.status, 200);
    let lj = login.json();
    assert_eq!(lj["user"], j["user"]);
    assert_ne!(lj["refreshToken"], j["refreshToken"]);
    let me = s
        .call(Method::GET, "/api/auth/me", lj["token"].as_str(), None)
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json(), json!({"user": j["user"]}));

    let events = s.take_events();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["auth.register", "auth.login"]);
    assert_eq!(events[0].payload, j["user"]);
    assert_eq!(events[1].source, bakend_core::EventSource::Auth);
    for e in &events {
        let text = e.envelope_json();
        assert!(
            !text.contains("password") && !text.contains("rt_") && !text.contains("eyJ"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn look_alike_emails_do_not_make_a_second_account() {
    let s = server().await;
    s.register("alice@example.com").await;
    for look_alike in [
        "alice@example.com.",
        "ALICE@EXAMPLE.COM.",
        "alice@example..com",
        "ali\u{200B}ce@example.com",
        "alice@example.com\u{200B}",
        "\u{FEFF}alice@example.com",
        "alice\u{200D}@example.com",
        "alice@exa\u{00AD}mple.com",
        "alice\u{2060}@example.com",
    ] {
        s.post(
            "/api/auth/register",
            &json!({"email": look_alike, "password": "password123"}),
        )
        .await
        .assert_error(400, "bad_request", "Invalid email address");
    }
    // Visible non-ASCII addresses are still welcome.
    let r = s
        .post(
            "/api/auth/register",
            &json!({"email": "josé@exämple.com", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn every_error_row_of_the_auth_table() {
    let s = server().await;
    s.register("bob@example.com").await;
    let required = "email and password are required";
    for path in ["/api/auth/register", "/api/auth/login"] {
        for body in [
            json!({}),
            json!({"email": "a@b.c"}),
            json!({"password": "password123"}),
            json!({"email": 5, "password": "password123"}),
            json!({"email": "", "password": "password123"}),
            json!({"email": "a@b.c", "password": ""}),
        ] {
            s.post(path, &body)
                .await
                .assert_error(400, "bad_request", required);
        }
        for bad in ["nope", "@x", "x@", "a b@c.d", "a@b@c"] {
            s.post(path, &json!({"email": bad, "password": "password123"}))
                .await
                .assert_error(400, "bad_request", "Invalid email address");
        }
        s.raw(Method::POST, path, Some("text/plain"), b"{}".to_vec())
            .await
            .assert_error(400, "bad_request", "Content-Type must be application/json");
        s.raw(Method::POST, path, Some("application/json"), b"{".to_vec())
            .await
            .assert_error(400, "bad_request", "Invalid JSON body");
    }
    s.post(
        "/api/auth/register",
        &json!({"email": "c@d.e", "password": "short"}),
    )
    .await
    .assert_error(400, "bad_request", "Password must be at least 8 characters");
    let wrong = "Invalid email or password";
    s.post(
        "/api/auth/login",
        &json!({"email": "nobody@example.com", "password": "password123"}),
    )
    .await
    .assert_error(401, "unauthorized", wrong);
    s.post(
        "/api/auth/login",
        &json!({"email": "bob@example.com", "password": "password124"}),
    )
    .await
    .assert_error(401, "unauthorized", wrong);
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        for body in [
            json!({}),
            json!({"refreshToken": 1}),
            json!({"refreshToken": ""}),
        ] {
            s.post(path, &body)
                .await
                .assert_error(400, "bad_request", "refreshToken is required");
        }
    }
    s.post("/api/auth/refresh", &json!({"refreshToken": "rt_nope"}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    assert_eq!(
        s.post("/api/auth/logout", &json!({"refreshToken": "rt_nope"}))
            .await
            .status,
        204
    );
    s.post("/api/auth/me", &json!({})).await.assert_error(
        405,
        "method_not_allowed",
        "Method not allowed",
    );
    s.get("/api/auth/me")
        .await
        .assert_error(401, "unauthorized", "Authentication required");
    s.get("/api/auth/login")
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");
    s.get("/api/auth/anything")
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");
    s.post("/api/auth/nope", &json!({}))
        .await
        .assert_error(404, "not_found", "Not found");
    s.get("/api/auth")
        .await
        .assert_error(404, "not_found", "Not found");
    s.post("/api/auth/logout", &json!({"all": true}))
        .await
        .assert_error(401, "unauthorized", "Authentication required");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = server().await;
    let a = s.register("carol@example.com").await;
    let r1 = s
        .post("/api/auth/refresh", &json!({"refreshToken": a.refresh}))
        .await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    let r1 = r1.json();
    let second = r1["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(second, a.refresh);
    assert_eq!(r1["user"]["id"], a.id.as_str());
    assert_eq!(
        s.call(Method::GET, "/api/auth/me", r1["token"].as_str(), None)
            .await
            .status,
        200
    );

    // The old token again: it leaked. Both it and its successor stop working.
    s.post("/api/auth/refresh", &json!({"refreshToken": a.refresh}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    s.post("/api/auth/refresh", &json!({"refreshToken": second}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    // Other sessions of the same user are not part of that family.
    let other = s
        .post(
            "/api/auth/login",
            &json!({"email": "carol@example.com", "password": "password123"}),
        )
        .await
        .json();
    let ok = s
        .post(
            "/api/auth/refresh",
            &json!({"refreshToken": other["refreshToken"]}),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn logout_and_logout_all() {
    let mut s = server().await;
    let a = s.register("dave@example.com").await;
    let second = s
        .post(
            "/api/auth/login",
            &json!({"email": "dave@example.com", "password": "password123"}),
        )
        .await
        .json();
    s.take_events();
    assert_eq!(
        s.post("/api/auth/logout", &json!({"refreshToken": a.refresh}))
            .await
            .status,
        204
    );
    let ev = s.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event_type, "auth.logout");
    assert_eq!(ev[0].payload, json!({"userId": a.id}));
    s.post("/api/auth/refresh", &json!({"refreshToken": a.refresh}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    // A second logout with the same token finds nothing and emits nothing.
    assert_eq!(
        s.post("/api/auth/logout", &json!({"refreshToken": a.refresh}))
            .await
            .status,
        204
    );
    assert!(s.take_events().is_empty());

    let third = s
        .post(
            "/api/auth/login",
            &json!({"email": "dave@example.com", "password": "password123"}),
        )
        .await
        .json();
    let r = s
        .call(
            Method::POST,
            "/api/auth/logout",
            Some(&a.token),
            Some(&json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for t in [&second["refreshToken"], &third["refreshToken"]] {
        s.post("/api/auth/refresh", &json!({"refreshToken": t}))
            .await
            .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    }
}

async fn login_token(s: &TestServer, email: &str) -> String {
    let r = s
        .post(
            "/api/auth/login",
            &json!({"email": email, "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_string()
}

async fn me(s: &TestServer, token: &str) -> crate::harness::Resp {
    s.call(Method::GET, "/api/auth/me", Some(token), None).await
}

#[tokio::test]
async fn logout_all_revokes_every_access_token_at_once_and_a_new_login_works() {
    let s = server().await;
    let a = s.register("fay@example.com").await;
    let other_device = login_token(&s, "fay@example.com").await;
    let bystander = s.register("gus@example.com").await;
    assert_eq!(me(&s, &a.token).await.status, 200);
    assert_eq!(me(&s, &other_device).await.status, 200);

    let r = s
        .call(
            Method::POST,
            "/api/auth/logout",
            Some(&a.token),
            Some(&json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Both earlier tokens are refused on the next request: no waiting for a cache to expire.
    for t in [&a.token, &other_device] {
        me(&s, t)
            .await
            .assert_error(401, "unauthorized", "Authentication required");
        s.call(
            Method::POST,
            "/api/notes",
            Some(t),
            Some(&json!({"t": "x"})),
        )
        .await
        .assert_error(401, "unauthorized", "Authentication required");
    }
    // A second sign-out everywhere with a revoked token is refused too.
    s.call(
        Method::POST,
        "/api/auth/logout",
        Some(&a.token),
        Some(&json!({"all": true})),
    )
    .await
    .assert_error(401, "unauthorized", "Authentication required");
    // Other users are untouched.
    assert_eq!(me(&s, &bystander.token).await.status, 200);

    // Signing in right afterwards (within the same second) gives a token that works.
    let fresh = login_token(&s, "fay@example.com").await;
    let r = me(&s, &fresh).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["user"]["id"], a.id.as_str());
    me(&s, &a.token)
        .await
        .assert_error(401, "unauthorized", "Authentication required");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after_and_the_server_keeps_serving() {
    let s = TestServer::start_with_config(
        &[open()],
        r#"{"auth": {"rateLimit": {"attempts": 0}, "maxConcurrentHashes": 1, "hashQueue": 1, "hashQueueTimeoutMs": 30}}"#,
    )
    .await;
    s.register("hal@example.com").await;
    // Logins (right and wrong passwords) and registrations at once: one hashes, one waits,
    // the rest are turned away; reads that hash nothing are not held up.
    let burst = (0..48).map(|i| {
        let (path, body) = match i % 3 {
            0 => (
                "/api/auth/login",
                json!({"email": "hal@example.com", "password": "password123"}),
            ),
            1 => (
                "/api/auth/login",
                json!({"email": "hal@example.com", "password": format!("wrong-{i}")}),
            ),
            _ => (
                "/api/auth/register",
                json!({"email": format!("u{i}@example.com"), "password": "password123"}),
            ),
        };
        let s = &s;
        async move { s.post(path, &body).await }
    });
    let (answers, health) = tokio::join!(futures_util::future::join_all(burst), async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        (s.get("/health").await.status, started.elapsed())
    });
    assert_eq!(health.0, 200);
    assert!(
        health.1 < std::time::Duration::from_secs(2),
        "{:?}",
        health.1
    );
    let (mut busy, mut served) = (0, 0);
    for r in &answers {
        match r.status {
            503 => {
                r.assert_error(
                    503,
                    "unavailable",
                    "Too many sign-ins in progress; retry in 1 s",
                );
                assert_eq!(r.headers["retry-after"], "1");
                busy += 1;
            }
            200 | 201 | 401 => served += 1,
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert!(busy > 0, "no request was turned away");
    assert!(served > 0, "no request was served");
    // When the burst is over, sign-ins work again.
    assert_eq!(s.get("/health").await.status, 200);
    let r = s
        .post(
            "/api/auth/login",
            &json!({"email": "hal@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn login_is_rate_limited_per_address_and_recovers() {
    let s = TestServer::start_with_config(
        &[],
        r#"{"auth": {"rateLimit": {"attempts": 3, "windowSeconds": 1}}}"#,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            s.post(
                "/api/auth/login",
                &json!({"email": "x@y.z", "password": "password123"})
            )
            .await
            .status,
            401
        );
    }
    let r = s
        .post(
            "/api/auth/login",
            &json!({"email": "x@y.z", "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "too_many_requests");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        s.post(
            "/api/auth/register",
            &json!({"email": "x@y.z", "password": "password123"})
        )
        .await
        .status,
        429
    );
    // Other routes are not limited.
    assert_eq!(s.get("/health").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        s.post(
            "/api/auth/register",
            &json!({"email": "x@y.z", "password": "password123"})
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn role_changes_and_deletion_apply_to_existing_tokens_at_once() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let me = s
        .call(Method::GET, "/api/auth/me", Some(&admin.token), None)
        .await
        .json();
    assert_eq!(
        me["user"]["role"], "admin",
        "BAKEND_ADMIN_EMAIL registers an admin"
    );
    let eve = s.register("eve@example.com").await;
    s.call(Method::GET, "/api/notes", Some(&eve.token), None)
        .await
        .assert_error(403, "forbidden", "Insufficient permissions");

    let r = s
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{}", eve.id),
            Some(&admin.token),
            Some(&json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["role"], "admin");
    assert_eq!(
        s.call(Method::GET, "/api/notes", Some(&eve.token), None)
            .await
            .status,
        200,
        "old token, new role"
    );

    let r = s
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{}", eve.id),
            Some(&admin.token),
            Some(&json!({"role": "public"})),
        )
        .await;
    assert_eq!(r.status, 200);
    s.call(Method::GET, "/api/notes", Some(&eve.token), None)
        .await
        .assert_error(403, "forbidden", "Insufficient permissions");
    // Role `public` still counts as signed in.
    assert_eq!(
        s.call(
            Method::POST,
            "/api/notes",
            Some(&eve.token),
            Some(&json!({"t": "x"}))
        )
        .await
        .status,
        201
    );

    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/admin/users/{}", eve.id),
            Some(&admin.token),
            None
        )
        .await
        .status,
        204
    );
    s.call(Method::GET, "/api/auth/me", Some(&eve.token), None)
        .await
        .assert_error(401, "unauthorized", "Authentication required");
    s.call(
        Method::POST,
        "/api/notes",
        Some(&eve.token),
        Some(&json!({"t": "x"})),
    )
    .await
    .assert_error(401, "unauthorized", "Authentication required");
    s.post("/api/auth/refresh", &json!({"refreshToken": eve.refresh}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
}

#[tokio::test]
async fn admin_user_endpoints() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let u = s.register("frank@example.com").await;
    let anon = s.get("/api/admin/users").await;
    anon.assert_error(401, "unauthorized", "Authentication required");
    s.call(Method::GET, "/api/admin/users", Some(&u.token), None)
        .await
        .assert_error(403, "forbidden", "Admin access required");
    s.call(Method::GET, "/api/admin/whatever", Some(&u.token), None)
        .await
        .assert_error(403, "forbidden", "Admin access required");
    let list = s
        .call(
            Method::GET,
            "/api/admin/users?limit=1",
            Some(&admin.token),
            None,
        )
        .await
        .json();
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["items"][0]["email"], "frank@example.com",
        "newest first"
    );
    let all = s
        .call(
            Method::GET,
            "/api/admin/users?offset=-3&limit=abc",
            Some(&admin.token),
            None,
        )
        .await
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    s.call(
        Method::POST,
        "/api/admin/users",
        Some(&admin.token),
        Some(&json!({})),
    )
    .await
    .assert_error(405, "method_not_allowed", "Method not allowed");
    s.call(
        Method::PATCH,
        &format!("/api/admin/users/{}", u.id),
        Some(&admin.token),
        Some(&json!({"role": "root"})),
    )
    .await
    .assert_error(
        400,
        "bad_request",
        "role must be one of: admin, authenticated, public",
    );
    s.call(
        Method::PATCH,
        "/api/admin/users/usr_nope",
        Some(&admin.token),
        Some(&json!({"role": "admin"})),
    )
    .await
    .assert_error(404, "not_found", "User not found");
    s.call(
        Method::DELETE,
        "/api/admin/users/usr_nope",
        Some(&admin.token),
        None,
    )
    .await
    .assert_error(404, "not_found", "User not found");
    s.call(Method::GET, "/api/admin/nope", Some(&admin.token), None)
        .await
        .assert_error(404, "not_found", "Not found");
    // The last admin can be neither demoted nor deleted.
    s.call(
        Method::PATCH,
        &format!("/api/admin/users/{}", admin.id),
        Some(&admin.token),
        Some(&json!({"role": "authenticated"})),
    )
    .await
    .assert_error(409, "conflict", "Cannot demote the last admin");
    s.call(
        Method::DELETE,
        &format!("/api/admin/users/{}", admin.id),
        Some(&admin.token),
        None,
    )
    .await
    .assert_error(409, "conflict", "Cannot delete the last admin");
    // With a second admin, demoting the first works.
    s.call(
        Method::PATCH,
        &format!("/api/admin/users/{}", u.id),
        Some(&admin.token),
        Some(&json!({"role": "admin"})),
    )
    .await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{}", admin.id),
            Some(&admin.token),
            Some(&json!({"role": "authenticated"})),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_tokens_are_401_never_500() {
    let s = server().await;
    let real = s.register("gina@example.com").await.token;
    let parts: Vec<&str> = real.split('.').collect();
    let forged = {
        let other = bakend_auth::tokens::TokenKeys::new("not-the-secret");
        other.issue("usr_x", "admin", 0, 60).unwrap()
    };
    let shapes: Vec<String> = vec![
        "garbage".into(),
        "a.b".into(),
        "a.b.c".into(),
        "a.b.!!!".into(),
        "a.b.c.d".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.", parts[0], parts[1]),
        format!("eyJhbGciOiJub25lIn0.{}.", parts[1]),
        format!("{}.eyJzdWIiOjF9.{}", parts[0], parts[2]),
        format!("{real}x"),
        forged,
        "x".repeat(10_000),
        "Ω.Ω.Ω".into(),
    ];
    for t in &shapes {
        s.call(Method::GET, "/api/auth/me", Some(t), None)
            .await
            .assert_error(401, "unauthorized", "Authentication required");
        s.call(Method::GET, "/api/notes", Some(t), None)
            .await
            .assert_error(401, "unauthorized", "Authentication required");
        assert_eq!(
            s.call(Method::GET, "/health", Some(t), None).await.status,
            200
        );
        assert_eq!(
            s.call(Method::GET, "/api/open", Some(t), None).await.status,
            200,
            "public routes ignore a bad token"
        );
    }
    // Scheme is case-insensitive.
    let r = s
        .http
        .get(format!("{}/api/auth/me", s.url))
        .header("authorization", format!("bEaReR {real}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn access_tokens_expire() {
    let s = TestServer::start_with_config(
        &[notes()],
        r#"{"auth": {"accessTokenTtl": "1s", "rateLimit": {"attempts": 0}}}"#,
    )
    .await;
    let a = s.register("hank@example.com").await;
    assert_eq!(
        s.call(Method::GET, "/api/auth/me", Some(&a.token), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    s.call(Method::GET, "/api/auth/me", Some(&a.token), None)
        .await
        .assert_error(401, "unauthorized", "Authentication required");
    // The refresh token still yields a fresh access token.
    let r = s
        .post("/api/auth/refresh", &json!({"refreshToken": a.refresh}))
        .await
        .json();
    assert_eq!(
        s.call(Method::GET, "/api/auth/me", r["token"].as_str(), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn bak_admin_create_makes_and_promotes_admins() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"jwtSecret": "test-secret-123", "rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    let run = |email: &str, stdin: &str| {
        let mut child = crate::harness::bak_in(dir.path())
            .args(["admin", "create", email, "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("ops@example.com", "supersecret1\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Created admin ops@example.com"));
    let short = run("x@example.com", "short\n");
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));

    let s = TestServer::start_in(dir).await;
    let r = s
        .post(
            "/api/auth/login",
            &json!({"email": "ops@example.com", "password": "supersecret1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["user"]["role"], "admin");
    s.register("later@example.com").await;
    let dir = s.shutdown().await;
    let out = {
        let d = dir.path().to_path_buf();
        let mut child = crate::harness::bak_in(&d)
            .args(["admin", "create", "later@example.com", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Promoted later@example.com"));
}

#[tokio::test]
async fn expired_sessions_are_deleted() {
    let s = TestServer::start_with_config(
        &[],
        r#"{"auth": {"refreshTokenTtl": "1s", "rateLimit": {"attempts": 0}}}"#,
    )
    .await;
    let a = s.register("ivy@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    s.post("/api/auth/refresh", &json!({"refreshToken": a.refresh}))
        .await
        .assert_error(401, "unauthorized", "Invalid or expired refresh token");
    s.register("jay@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // Restarting runs the purge (it also runs every ten minutes).
    let dir = s.shutdown().await;
    let s = TestServer::start_in(dir).await;
    let count: i64 = crate::harness::with_project_db(s.dir.path(), |c| {
        c.query_row("SELECT COUNT(*) FROM _sessions", (), |r| r.get(0))
            .unwrap()
    });
    assert_eq!(count, 0);
}
