//! The realtime protocol over real WebSockets (spec `realtime.md`, with v1's gaps fixed).

use std::time::Duration;

use bakend_core::{Event, EventSource};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::TestServer;
use crate::ws::{Next, Ws};

const ADMIN: &str = "admin@example.com";
const SHORT: Duration = Duration::from_millis(300);

fn col(name: &str, read: &str, owner_field: bool) -> Value {
    let mut fields = vec![json!({"name": "title", "type": "string"})];
    if owner_field {
        fields.push(json!({"name": "user_id", "type": "string"}));
    }
    json!({"name": name, "fields": fields,
           "permissions": {"create": "authenticated", "read": read, "update": "authenticated", "delete": "authenticated"}})
}

fn collections() -> Vec<Value> {
    vec![
        json!({"name": "posts", "fields": [{"name": "title", "type": "string"}, {"name": "user_id", "type": "string"}]}),
        json!({"name": "posts_archive", "fields": [{"name": "title", "type": "string"}]}),
        col("members", "authenticated", true),
        col("notes", "owner", true),
        col("secrets", "admin", true),
        col("ownerless", "owner", false),
    ]
}

async fn server_with(config: &str) -> TestServer {
    TestServer::start_with_env(&collections(), config, &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await
}

async fn server() -> TestServer {
    server_with(r#"{"auth": {"rateLimit": {"attempts": 0}}}"#).await
}

fn q(s: &TestServer, token: &str) -> String {
    format!("{}?token={token}", s.ws_url())
}

#[tokio::test]
async fn frames_errors_and_acks() {
    let s = server().await;
    let (mut ws, connected) = Ws::connect(&s.ws_url()).await;
    let id = connected["clientId"].as_str().unwrap();
    assert!(id.starts_with("rt_") && id.len() == 39, "{id}");
    assert_eq!(connected["user"], Value::Null);

    ws.subscribe("posts.*").await;
    ws.subscribe("posts.*").await; // duplicate: acknowledged again
    ws.send(json!({"action": "unsubscribe", "channel": "never.subscribed"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "unsubscribed", "channel": "never.subscribed"})
    );
    ws.send(json!({"action": "ping", "channel": "ignored"}))
        .await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));

    let err =
        |code: &str, message: &str| json!({"type": "error", "code": code, "message": message});
    let cases: Vec<(String, Value)> = vec![
        ("nope".into(), err("invalid_json", "Invalid JSON message")),
        ("[]".into(), err("invalid_json", "Invalid JSON message")),
        ("null".into(), err("invalid_json", "Invalid JSON message")),
        (
            r#"{"action":"nope"}"#.into(),
            err("invalid_action", "Unknown action"),
        ),
        (
            r#"{"action":"PING"}"#.into(),
            err("invalid_action", "Unknown action"),
        ),
        (
            r#"{"channel":"posts.*"}"#.into(),
            err("invalid_action", "Unknown action"),
        ),
        (
            r#"{"action":"subscribe"}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            r#"{"action":"subscribe","channel":7}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            r#"{"action":"subscribe","channel":""}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            r#"{"action":"subscribe","channel":"*"}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            r#"{"action":"subscribe","channel":"*.created"}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            json!({"action": "subscribe", "channel": "a".repeat(201)}).to_string(),
            err("invalid_channel", "Channel name is invalid"),
        ),
        (
            r#"{"action":"unsubscribe","channel":"a b"}"#.into(),
            err("invalid_channel", "Channel name is invalid"),
        ),
    ];
    for (sent, want) in cases {
        ws.send_text(&sent).await;
        assert_eq!(ws.next().await, want, "for {sent}");
    }
    // Binary frames are read as text.
    ws.send_raw(tokio_tungstenite::tungstenite::Message::binary(
        br#"{"action":"ping"}"#.to_vec(),
    ))
    .await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
    // Still subscribed after all those errors.
    s.post("/api/posts", &json!({"title": "after errors"}))
        .await;
    let ev = ws.next().await;
    assert_eq!(ev["event"]["type"], "posts.created");
}

#[tokio::test]
async fn subscription_limit_is_configurable() {
    let s = server_with(r#"{"realtime": {"maxSubscriptions": 3}}"#).await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    for c in ["a.x", "b.x", "c.x"] {
        ws.subscribe(c).await;
    }
    ws.send(json!({"action": "subscribe", "channel": "d.x"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "error", "code": "subscription_limit", "message": "Maximum 3 subscriptions per connection"})
    );
    ws.subscribe("a.x").await; // a duplicate at the limit is fine
    ws.send(json!({"action": "unsubscribe", "channel": "b.x"}))
        .await;
    ws.next().await;
    ws.subscribe("d.x").await;
}

#[tokio::test]
async fn wildcards_match_prefixes_and_each_event_arrives_once() {
    let s = server().await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("posts.*").await;
    ws.subscribe("posts.created").await;
    let rec = s.create("posts", json!({"title": "one"})).await;
    let frame = ws.next().await;
    assert_eq!(frame["type"], "event");
    let e = &frame["event"];
    assert_eq!(e["type"], "posts.created");
    assert_eq!(e["source"], "collections");
    assert_eq!(
        e["payload"], rec,
        "payload is the record as REST returns it"
    );
    assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(e["timestamp"].as_str().unwrap().len(), 24);
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "type", "timestamp", "source", "payload", "seq"]
    );
    assert!(
        e["seq"].as_u64().is_some_and(|n| n > 0),
        "journaled events carry seq"
    );
    ws.silent(SHORT).await; // not a second time for the second subscription

    let id = rec["id"].as_str().unwrap();
    s.put(&format!("/api/posts/{id}"), &json!({"title": "two"}))
        .await;
    assert_eq!(ws.next().await["event"]["type"], "posts.updated");
    s.create("posts_archive", json!({"title": "elsewhere"}))
        .await;
    ws.silent(SHORT).await; // posts.* does not match posts_archive.created
    s.delete(&format!("/api/posts/{id}")).await;
    let del = ws.next().await;
    assert_eq!(del["event"]["type"], "posts.deleted");
    assert_eq!(del["event"]["payload"], json!({"id": id}));
    ws.send(json!({"action": "unsubscribe", "channel": "posts.*"}))
        .await;
    ws.next().await;
    s.create("posts", json!({"title": "three"})).await;
    assert_eq!(
        ws.next().await["event"]["type"],
        "posts.created",
        "posts.created still held"
    );
}

#[tokio::test]
async fn tokens_by_query_header_and_invalid() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let (_ws, c) = Ws::connect(&q(&s, &alice.token)).await;
    assert_eq!(c["user"]["id"], alice.id.as_str());
    assert_eq!(c["user"]["email"], "alice@example.com");
    let bearer = format!("Bearer {}", alice.token);
    let (_ws, c) = Ws::connect_with(&s.ws_url(), &[("authorization", &bearer)]).await;
    assert_eq!(c["user"]["id"], alice.id.as_str());
    // A bad header falls back to a good query token.
    let (_ws, c) =
        Ws::connect_with(&q(&s, &alice.token), &[("authorization", "Bearer nope")]).await;
    assert_eq!(c["user"]["id"], alice.id.as_str());

    for bad in ["garbage", "a.b.c", "a.b.!!!"] {
        let (mut ws, c) = Ws::connect(&q(&s, bad)).await;
        assert_eq!(c["user"], Value::Null);
        let e = ws.next().await;
        assert_eq!(e["type"], "error");
        assert_eq!(e["code"], "invalid_token");
        ws.subscribe("members.*").await;
        s.create_as(&alice, "members", json!({"title": "m"})).await;
        ws.silent(SHORT).await; // anonymous: authenticated-only events do not arrive
    }
    // Plain GET without an upgrade, and other methods.
    let r = s.get("/api/realtime").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text, "WebSocket upgrade failed");
    let r = s.raw(Method::POST, "/api/realtime", None, vec![]).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn auth_action_switches_identity_and_keeps_subscriptions() {
    let s = server().await;
    let alice = s.register("alice@example.com").await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("notes.*").await;
    s.create_as(&alice, "notes", json!({"title": "hidden"}))
        .await;
    ws.silent(SHORT).await;
    ws.send(json!({"action": "auth", "token": alice.token}))
        .await;
    let a = ws.next().await;
    assert_eq!(a["type"], "authenticated");
    assert_eq!(a["user"]["id"], alice.id.as_str());
    let n = s.create_as(&alice, "notes", json!({"title": "mine"})).await;
    assert_eq!(ws.next().await["event"]["payload"], n);
    for bad in [
        json!({"action": "auth", "token": "nope"}),
        json!({"action": "auth"}),
    ] {
        ws.send(bad).await;
        assert_eq!(ws.next().await["code"], "invalid_token");
    }
    s.create_as(&alice, "notes", json!({"title": "still mine"}))
        .await;
    assert_eq!(
        ws.next().await["event"]["type"],
        "notes.created",
        "identity unchanged by a bad token"
    );
}

#[tokio::test]
async fn expired_tokens_degrade_then_close_unless_renewed() {
    let s = server_with(r#"{"auth": {"accessTokenTtl": "2s", "rateLimit": {"attempts": 0}}, "realtime": {"tokenGraceSeconds": 2}}"#).await;
    let alice = s.register("alice@example.com").await;
    let (mut lapsed, _) = Ws::connect(&q(&s, &alice.token)).await;
    let (mut renewed, _) = Ws::connect(&q(&s, &alice.token)).await;
    for ws in [&mut lapsed, &mut renewed] {
        ws.subscribe("members.*").await;
    }
    for ws in [&mut lapsed, &mut renewed] {
        let mut got = None;
        for _ in 0..5 {
            if let Next::Frame(f) = ws.poll(Duration::from_secs(2)).await {
                got = Some(f);
                break;
            }
        }
        let f = got.expect("token_expired frame");
        assert_eq!(f["code"], "token_expired", "{f}");
    }
    // Now anonymous: authenticated-only events stop.
    let fresh = s
        .post("/api/auth/refresh", &json!({"refreshToken": alice.refresh}))
        .await
        .json();
    let fresh_token = fresh["token"].as_str().unwrap().to_string();
    s.call(
        Method::POST,
        "/api/members",
        Some(&fresh_token),
        Some(&json!({"title": "x"})),
    )
    .await;
    lapsed.silent(SHORT).await;
    renewed.silent(SHORT).await;
    // Renewing within the grace period keeps the connection and its subscriptions.
    renewed
        .send(json!({"action": "auth", "token": fresh_token}))
        .await;
    assert_eq!(renewed.next().await["type"], "authenticated");
    s.call(
        Method::POST,
        "/api/members",
        Some(&fresh_token),
        Some(&json!({"title": "y"})),
    )
    .await;
    assert_eq!(renewed.next().await["event"]["type"], "members.created");
    let (code, reason) = lapsed.closed(Duration::from_secs(6)).await;
    assert_eq!((code, reason.as_str()), (4001, "token_expired"));
}

#[tokio::test]
async fn role_changes_and_deletion_apply_to_open_sockets() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let bob = s.register("bob@example.com").await;
    let (mut ws, _) = Ws::connect(&q(&s, &bob.token)).await;
    ws.subscribe("secrets.*").await;
    ws.subscribe("members.*").await;
    s.create_as(&admin, "secrets", json!({"title": "s1"})).await;
    ws.silent(SHORT).await;
    s.call(
        Method::PATCH,
        &format!("/api/admin/users/{}", bob.id),
        Some(&admin.token),
        Some(&json!({"role": "admin"})),
    )
    .await;
    // The role change reaches the hub before the next write's event.
    s.create_as(&admin, "secrets", json!({"title": "s2"})).await;
    assert_eq!(ws.next().await["event"]["payload"]["title"], "s2");
    s.call(
        Method::PATCH,
        &format!("/api/admin/users/{}", bob.id),
        Some(&admin.token),
        Some(&json!({"role": "authenticated"})),
    )
    .await;
    s.create_as(&admin, "secrets", json!({"title": "s3"})).await;
    ws.silent(SHORT).await;
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/admin/users/{}", bob.id),
            Some(&admin.token),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(ws.next().await["code"], "session_revoked");
    s.create_as(&admin, "members", json!({"title": "m"})).await;
    ws.silent(SHORT).await;
}

/// A socket opened with `token` (by query and by header): it must be anonymous and told so.
async fn assert_refused_on_connect(s: &TestServer, token: &str) {
    let bearer = format!("Bearer {token}");
    for (url, headers) in [
        (q(s, token), vec![]),
        (s.ws_url(), vec![("authorization", bearer.as_str())]),
    ] {
        let (mut ws, c) = Ws::connect_with(&url, &headers).await;
        assert_eq!(c["user"], Value::Null, "{c}");
        assert_eq!(ws.next().await["code"], "invalid_token");
    }
}

/// The `auth` action with `token` on an open anonymous socket: refused, identity unchanged.
async fn assert_refused_by_auth_action(s: &TestServer, token: &str) {
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": token})).await;
    assert_eq!(ws.next().await["code"], "invalid_token");
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

#[tokio::test]
async fn logout_all_and_deletion_refuse_old_tokens_on_new_sockets_and_the_auth_action() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let other_device = login(&s, "alice@example.com").await;
    let (mut held, _) = Ws::connect(&q(&s, &alice.token)).await;
    let r = s
        .call(
            Method::POST,
            "/api/auth/logout",
            Some(&alice.token),
            Some(&json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(held.next().await["code"], "session_revoked");
    for t in [&alice.token, &other_device] {
        assert_refused_on_connect(&s, t).await;
        assert_refused_by_auth_action(&s, t).await;
    }
    // A login right afterwards works on both paths.
    let fresh = login(&s, "alice@example.com").await;
    let (_ws, c) = Ws::connect(&q(&s, &fresh)).await;
    assert_eq!(c["user"]["id"], alice.id.as_str());
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": fresh})).await;
    let a = ws.next().await;
    assert_eq!(a["type"], "authenticated", "{a}");
    assert_eq!(a["user"]["id"], alice.id.as_str());

    let bob = s.register("bob@example.com").await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/admin/users/{}", bob.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_refused_on_connect(&s, &bob.token).await;
    assert_refused_by_auth_action(&s, &bob.token).await;
}

#[tokio::test]
async fn role_changes_apply_at_once_to_new_sockets_and_the_auth_action() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let carol = s.register("carol@example.com").await;
    let set_role = |role: &'static str| {
        let path = format!("/api/admin/users/{}", carol.id);
        let s = &s;
        let admin = &admin;
        async move {
            let r = s
                .call(
                    Method::PATCH,
                    &path,
                    Some(&admin.token),
                    Some(&json!({"role": role})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    // Look the user up once first, so a stale cached row would be what is served.
    let (_ws, c) = Ws::connect(&q(&s, &carol.token)).await;
    assert_eq!(c["user"]["role"], "authenticated");

    for (role, sees_secrets) in [("admin", true), ("authenticated", false)] {
        set_role(role).await;
        let (mut by_query, c) = Ws::connect(&q(&s, &carol.token)).await;
        assert_eq!(c["user"]["role"], role, "{c}");
        let (mut by_action, _) = Ws::connect(&s.ws_url()).await;
        by_action
            .send(json!({"action": "auth", "token": carol.token}))
            .await;
        let a = by_action.next().await;
        assert_eq!(a["type"], "authenticated", "{a}");
        assert_eq!(a["user"]["role"], role, "{a}");
        for ws in [&mut by_query, &mut by_action] {
            ws.subscribe("secrets.*").await;
        }
        s.create_as(&admin, "secrets", json!({"title": role})).await;
        for ws in [&mut by_query, &mut by_action] {
            if sees_secrets {
                assert_eq!(ws.next().await["event"]["payload"]["title"], role);
            } else {
                ws.silent(SHORT).await;
            }
        }
    }
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let s = server().await;
    let (mut a, _) = Ws::connect(&s.ws_url()).await;
    let (mut b, _) = Ws::connect(&s.ws_url()).await;
    b.subscribe("posts.*").await;
    let _dir = s.shutdown().await;
    for ws in [&mut a, &mut b] {
        let (code, reason) = ws.closed(Duration::from_secs(5)).await;
        assert_eq!((code, reason.as_str()), (1001, "going away"));
    }
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let s = server_with(r#"{"realtime": {"maxMessageBytes": 1024}}"#).await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.send_text(&"x".repeat(2000)).await;
    let (code, _) = ws.closed(Duration::from_secs(5)).await;
    assert_eq!(code, 1009);
    // Others are unaffected.
    let (mut other, _) = Ws::connect(&s.ws_url()).await;
    other.send(json!({"action": "ping"})).await;
    assert_eq!(other.next().await["type"], "pong");
}

/// Emits an event the way storage, functions or jobs will.
fn emit(s: &TestServer, kind: &str, source: EventSource, payload: Value, subject: Option<&str>) {
    s.bus
        .emit(Event::new(kind, source, payload).about(subject.map(str::to_string)));
}

#[tokio::test]
async fn permission_matrix_over_every_event_kind() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let channels = [
        "posts.*",
        "members.*",
        "notes.*",
        "secrets.*",
        "ownerless.*",
        "auth.*",
        "storage.*",
        "function.*",
        "job.*",
        "system.*",
    ];
    let mut sockets = Vec::new();
    for token in [
        None,
        Some(&alice.token),
        Some(&bob.token),
        Some(&admin.token),
    ] {
        let url = match token {
            Some(t) => q(&s, t),
            None => s.ws_url(),
        };
        let (mut ws, _) = Ws::connect(&url).await;
        for c in channels {
            ws.subscribe(c).await;
        }
        sockets.push(ws);
    }
    // Record events on records owned by alice (created by the admin on her behalf).
    for c in ["posts", "members", "notes", "secrets", "ownerless"] {
        let body = if c == "ownerless" {
            json!({"title": "t"})
        } else {
            json!({"title": "t", "user_id": alice.id})
        };
        let r = s.create_as(&admin, c, body).await;
        let id = r["id"].as_str().unwrap();
        s.call(
            Method::PUT,
            &format!("/api/{c}/{id}"),
            Some(&admin.token),
            Some(&json!({"title": "u"})),
        )
        .await;
        s.call(
            Method::DELETE,
            &format!("/api/{c}/{id}"),
            Some(&admin.token),
            None,
        )
        .await;
    }
    // Non-collection events.
    s.post(
        "/api/auth/login",
        &json!({"email": "alice@example.com", "password": "password123"}),
    )
    .await;
    let protected = json!({"id": "fil_1", "filename": "secret.pdf", "mimeType": "application/pdf", "size": 10, "visibility": "protected", "userId": alice.id, "createdAt": "2026-01-01T00:00:00.000Z"});
    emit(
        &s,
        "storage.uploaded",
        EventSource::Storage,
        protected.clone(),
        Some(&alice.id),
    );
    let public = json!({"id": "fil_2", "filename": "cat.png", "mimeType": "image/png", "size": 10, "visibility": "public", "userId": alice.id, "createdAt": "2026-01-01T00:00:00.000Z"});
    emit(
        &s,
        "storage.uploaded",
        EventSource::Storage,
        public.clone(),
        Some(&alice.id),
    );
    emit(
        &s,
        "storage.deleted",
        EventSource::Storage,
        json!({"id": "fil_2", "userId": alice.id}),
        Some(&alice.id),
    );
    let failed = json!({"collection": "posts", "trigger": "create", "eventType": "posts.created", "filePath": "functions/posts.ts", "eventId": "evt_1", "error": "boom at db"});
    emit(
        &s,
        "function.failed",
        EventSource::Functions,
        failed.clone(),
        None,
    );
    emit(
        &s,
        "job.completed",
        EventSource::Jobs,
        json!({"name": "cleanup", "filePath": "jobs/cleanup.ts", "schedule": "0 3 * * *", "runId": "r1", "durationMs": 5, "attempt": 1}),
        None,
    );
    emit(
        &s,
        "system.collection.created",
        EventSource::Collections,
        json!({"name": "later"}),
        None,
    );

    let mut got = Vec::new();
    for ws in sockets.iter_mut() {
        got.push(ws.events(Duration::from_millis(500)).await);
    }
    let kinds = |evs: &Vec<Value>| -> Vec<String> {
        evs.iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let crud = |c: &str| {
        vec![
            format!("{c}.created"),
            format!("{c}.updated"),
            format!("{c}.deleted"),
        ]
    };
    let tail: Vec<String> = [
        "auth.login",
        "storage.uploaded",
        "storage.uploaded",
        "storage.deleted",
        "function.failed",
        "job.completed",
        "system.collection.created",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let expect = |cols: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cols.iter().flat_map(|c| crud(c)).collect();
        v.extend(tail.clone());
        v
    };
    let [anon, a, b, adm] = [&got[0], &got[1], &got[2], &got[3]];
    assert_eq!(kinds(anon), expect(&["posts"]), "anonymous");
    assert_eq!(
        kinds(a),
        expect(&["posts", "members", "notes"]),
        "owner (alice)"
    );
    assert_eq!(kinds(b), expect(&["posts", "members"]), "other user (bob)");
    assert_eq!(
        kinds(adm),
        expect(&["posts", "members", "notes", "secrets", "ownerless"]),
        "admin"
    );

    let find = |evs: &Vec<Value>, kind: &str, nth: usize| -> Value {
        evs.iter().filter(|e| e["type"] == kind).nth(nth).unwrap()["payload"].clone()
    };
    // The owner receives the deletion of their record (decided on the record before it went).
    assert_eq!(find(a, "notes.deleted", 0).as_object().unwrap().len(), 1);
    // auth.login: the user and admins see the email, others do not.
    assert_eq!(find(a, "auth.login", 0)["email"], "alice@example.com");
    assert_eq!(find(adm, "auth.login", 0)["email"], "alice@example.com");
    for who in [anon, b] {
        let p = find(who, "auth.login", 0);
        assert!(p.get("email").is_none(), "{p}");
        assert_eq!(p["id"], alice.id.as_str());
    }
    // A protected upload: metadata for the owner and admins only.
    assert_eq!(find(a, "storage.uploaded", 0), protected);
    assert_eq!(find(adm, "storage.uploaded", 0), protected);
    for who in [anon, b] {
        assert_eq!(
            find(who, "storage.uploaded", 0),
            json!({"id": "fil_1", "visibility": "protected", "createdAt": "2026-01-01T00:00:00.000Z"})
        );
        assert_eq!(
            find(who, "storage.uploaded", 1),
            public,
            "public uploads are public"
        );
    }
    // Error text is for admins.
    assert_eq!(find(adm, "function.failed", 0), failed);
    for who in [anon, a, b] {
        let p = find(who, "function.failed", 0);
        assert!(p.get("error").is_none(), "{p}");
        assert_eq!(p["filePath"], "functions/posts.ts");
    }
    assert_eq!(
        find(anon, "system.collection.created", 0),
        json!({"name": "later"})
    );
}

#[tokio::test]
async fn five_hundred_clients_each_receive_the_event() {
    let s = server().await;
    let mut clients = Vec::new();
    for _ in 0..500 {
        let (mut ws, _) = Ws::connect(&s.ws_url()).await;
        ws.subscribe("posts.created").await;
        clients.push(ws);
    }
    let rec = s.create("posts", json!({"title": "to everyone"})).await;
    let mut tasks = Vec::new();
    for mut ws in clients {
        let want = rec.clone();
        tasks.push(tokio::spawn(async move {
            let f = ws.next().await;
            assert_eq!(f["event"]["payload"], want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// With several runtime workers the connection tasks write the frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_vanished_clients_do_not_hold_up_the_others() {
    slow_and_vanished_clients().await;
}

/// With one worker the hub writes frames to idle sockets itself and hands full ones to their
/// connection task: the same guarantees must hold.
#[tokio::test]
async fn slow_and_vanished_clients_do_not_hold_up_the_others_when_the_hub_writes() {
    slow_and_vanished_clients().await;
}

async fn slow_and_vanished_clients() {
    let s = server_with(r#"{"realtime": {"queueCapacity": 16}}"#).await;
    let mut fast = Vec::new();
    for _ in 0..20 {
        let (mut ws, _) = Ws::connect(&s.ws_url()).await;
        ws.subscribe("posts.*").await;
        fast.push(ws);
    }
    let (mut slow, _) = Ws::connect(&s.ws_url()).await;
    slow.subscribe("posts.*").await;
    let (mut vanished, _) = Ws::connect(&s.ws_url()).await;
    vanished.subscribe("posts.*").await;
    vanished.reset();

    // Big events fill the slow client's socket buffers, then its queue.
    let big = "x".repeat(64 * 1024);
    let events = 300;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                let mut n = 0;
                while n < events {
                    match ws.poll(Duration::from_secs(10)).await {
                        Next::Frame(f) if f["type"] == "event" => n += 1,
                        Next::Frame(_) => {}
                        other => panic!(
                            "fast client lost its stream after {n} events: {}",
                            matches!(other, Next::Silent)
                        ),
                    }
                }
                start.elapsed()
            })
        })
        .collect();
    // The slow client is told why it was dropped once it reads again — within the 10 s a
    // close frame is given, so it starts reading as soon as the hub reports the close (writes
    // are answered only once their events are handed over, so the posts take a while).
    let admin = s.register(ADMIN).await;
    let mut slow = Some(slow);
    let mut slow_closed = None;
    for i in 0..events {
        s.post("/api/posts", &json!({"title": format!("{i}{big}")}))
            .await;
        if slow_closed.is_none() && i % 8 == 0 {
            let stats = s
                .call(Method::GET, "/api/admin/realtime", Some(&admin.token), None)
                .await
                .json();
            if stats["slowConsumerCloses"].as_u64() > Some(0)
                && let Some(mut ws) = slow.take()
            {
                slow_closed = Some(tokio::spawn(async move {
                    ws.closed(Duration::from_secs(30)).await
                }));
            }
        }
    }
    let mut slowest = Duration::ZERO;
    for r in readers {
        slowest = slowest.max(r.await.unwrap());
    }
    let (code, reason) = match (slow_closed, slow) {
        (Some(task), _) => task.await.unwrap(),
        (None, Some(mut ws)) => ws.closed(Duration::from_secs(30)).await,
        (None, None) => unreachable!(),
    };
    assert_eq!((code, reason.as_str()), (4008, "slow_consumer"));
    let stats = s.call(Method::GET, "/api/admin/realtime", None, None).await;
    assert_eq!(stats.status, 401);
    eprintln!("fast clients received {events} events of 64 KiB each within {slowest:?}");
}

/// A client may send frames right behind its upgrade request, before it has seen the `101`;
/// protocol-level pings are answered with the same payload; a frame over 64 KiB (a 64-bit
/// length header) arrives intact.
#[tokio::test]
async fn pipelined_frames_protocol_pings_and_large_frames() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let s = server().await;
    let addr = s
        .ws_url()
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    /// A masked client text/ping frame (an all-zero mask leaves the payload as it is).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }
    let mut request = format!(
        "GET /api/realtime HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    request.extend(client_frame(
        0x1,
        br#"{"action":"subscribe","channel":"posts.created"}"#,
    ));
    request.extend(client_frame(0x9, b"are you there"));
    tcp.write_all(&request).await.unwrap();

    // The response head, byte by byte so no frame bytes are consumed with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let mut texts = Vec::new();
    let mut pong = None;
    while texts.len() < 2 || pong.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                texts.push(serde_json::from_str::<Value>(t.as_str()).unwrap())
            }
            Ok(Some(Ok(Message::Pong(p)))) => pong = Some(p),
            Ok(Some(Ok(_))) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    assert_eq!(texts[0]["type"], "connected");
    assert_eq!(
        texts[1],
        json!({"type": "subscribed", "channel": "posts.created"})
    );
    assert_eq!(pong.unwrap().as_ref(), b"are you there");

    let title = "y".repeat(70_000);
    let rec = s.create("posts", json!({"title": title})).await;
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                break serde_json::from_str::<Value>(t.as_str()).unwrap();
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no event: {other:?}"),
        }
    };
    assert_eq!(frame["event"]["payload"], rec);

    // A client's close is answered with a close echoing its code.
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    ws.send(Message::Close(Some(CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close reply: {other:?}"),
        }
    };
    assert_eq!(reply.map(|f| u16::from(f.code)), Some(4000));
}

#[tokio::test]
async fn silent_peers_are_dropped_by_the_heartbeat() {
    let s = server_with(r#"{"realtime": {"heartbeatSeconds": 1}}"#).await;
    let (mut listening, _) = Ws::connect(&s.ws_url()).await;
    let (mut deaf, _) = Ws::connect(&s.ws_url()).await;
    // `listening` keeps reading (and so answers pings); `deaf` reads nothing for a while.
    let alive = tokio::spawn(async move {
        listening.silent(Duration::from_millis(3500)).await;
        listening.send(json!({"action": "ping"})).await;
        assert_eq!(listening.next().await["type"], "pong");
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    alive.await.unwrap();
    let (code, _) = deaf.closed(Duration::from_secs(5)).await;
    assert_ne!(code, 1000, "dropped, not closed politely");
}

#[tokio::test]
async fn admins_see_hub_statistics() {
    let s = server_with(
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "realtime": {"queueCapacity": 64}}"#,
    )
    .await;
    let admin = s.register(ADMIN).await;
    let user = s.register("u@example.com").await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("posts.*").await;
    ws.subscribe("auth.*").await;
    s.create("posts", json!({"title": "x"})).await;
    ws.next().await;
    s.call(Method::GET, "/api/admin/realtime", Some(&user.token), None)
        .await
        .assert_error(403, "forbidden", "Admin access required");
    let r = s
        .call(Method::GET, "/api/admin/realtime", Some(&admin.token), None)
        .await;
    assert_eq!(r.status, 200);
    let st = r.json();
    assert_eq!(st["connections"], 1);
    assert_eq!(st["subscriptions"], 2);
    assert!(st["eventsIn"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["framesOut"].as_u64().unwrap() >= 3, "{st}");
    assert_eq!(st["slowConsumerCloses"], 0);
    assert_eq!(st["queueCapacity"], 64);
    assert!(st["queueHighWater"].as_u64().unwrap() >= 1);
}
