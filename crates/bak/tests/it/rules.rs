//! Permission rules as expressions (issue 16, `docs/auth.md`) through the real server: lists
//! filtered by the read rule, reads and writes decided on the record, creates on the record as
//! it would be stored, and bad rules refused by the admin API with the position.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Session, TestServer};

fn articles() -> Value {
    json!({"name": "articles", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "published", "type": "boolean"},
        {"name": "locked", "type": "boolean"},
        {"name": "user_id", "type": "string"}
    ], "permissions": {
        "create": "@request.auth.id != null && title !~ 'spam'",
        "read": "published = true || user_id = @request.auth.id",
        // A comparison with a null field is false, `!=` included: an unset `locked` is null.
        "update": "user_id = @request.auth.id && (locked = null || locked = false)",
        "delete": "user_id = @request.auth.id"
    }})
}

async fn call(
    s: &TestServer,
    m: Method,
    path: &str,
    who: Option<&Session>,
    body: Option<Value>,
) -> (u16, Value) {
    let r = s
        .call(m, path, who.map(|w| w.token.as_str()), body.as_ref())
        .await;
    let j = if r.text.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, j)
}

fn ids(page: &Value) -> Vec<String> {
    let mut v: Vec<String> = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn expression_rules_decide_lists_reads_and_writes_on_the_record() {
    let s = TestServer::start(&[articles()]).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let a = Some(&alice);
    let b = Some(&bob);

    // Create: the rule sees the record as it would be stored (owner assigned, defaults).
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/articles",
        None,
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(st, 401, "anonymous creator");
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/articles",
        a,
        Some(json!({"title": "Buy SPAM now"})),
    )
    .await;
    assert_eq!(st, 403, "the create rule rejects it");
    let (st, draft) = call(
        &s,
        Method::POST,
        "/api/articles",
        a,
        Some(json!({"title": "draft"})),
    )
    .await;
    assert_eq!(st, 201, "{draft}");
    let (_, public) = call(
        &s,
        Method::POST,
        "/api/articles",
        a,
        Some(json!({"title": "news", "published": true})),
    )
    .await;
    let (_, bobs) = call(
        &s,
        Method::POST,
        "/api/articles",
        b,
        Some(json!({"title": "bobs"})),
    )
    .await;
    let path = |r: &Value| format!("/api/articles/{}", r["id"].as_str().unwrap());

    // Lists: the read rule is part of the query (and of the count).
    let (_, l) = call(&s, Method::GET, "/api/articles", a, None).await;
    assert_eq!(ids(&l), ["draft", "news"]);
    assert_eq!(l["totalItems"], 2);
    let (_, l) = call(&s, Method::GET, "/api/articles", b, None).await;
    assert_eq!(ids(&l), ["bobs", "news"]);
    let (_, l) = call(&s, Method::GET, "/api/articles", None, None).await;
    assert_eq!(ids(&l), ["news"]);
    // A filter on top narrows further.
    let (_, l) = call(
        &s,
        Method::GET,
        "/api/articles?filter=title%20~%20%27d%27",
        b,
        None,
    )
    .await;
    assert_eq!(ids(&l), Vec::<String>::new());

    // Reads: decided on the stored record.
    assert_eq!(call(&s, Method::GET, &path(&draft), a, None).await.0, 200);
    assert_eq!(call(&s, Method::GET, &path(&draft), b, None).await.0, 403);
    assert_eq!(
        call(&s, Method::GET, &path(&draft), None, None).await.0,
        401
    );
    assert_eq!(
        call(&s, Method::GET, &path(&public), None, None).await.0,
        200
    );

    // Updates and deletes: only the owner, and not once locked.
    let (st, _) = call(
        &s,
        Method::PUT,
        &path(&public),
        b,
        Some(json!({"title": "hijacked"})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = call(&s, Method::DELETE, &path(&bobs), a, None).await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &s,
        Method::PUT,
        &path(&draft),
        a,
        Some(json!({"locked": true})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        Method::PUT,
        &path(&draft),
        a,
        Some(json!({"title": "again"})),
    )
    .await;
    assert_eq!(st, 403, "locked");
    // Publishing moves a record into everyone's read set.
    let (st, _) = call(
        &s,
        Method::PUT,
        &path(&bobs),
        b,
        Some(json!({"published": true})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, l) = call(&s, Method::GET, "/api/articles", None, None).await;
    assert_eq!(ids(&l), ["bobs", "news"]);
    let (st, _) = call(&s, Method::DELETE, &path(&bobs), b, None).await;
    assert_eq!(st, 204);
}

#[tokio::test]
async fn the_admin_api_refuses_a_bad_rule_with_its_position() {
    let s = TestServer::start_with_env(
        &[],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", "root@example.com")],
    )
    .await;
    let root = s.register("root@example.com").await;
    let mut def = articles();
    def["permissions"]["read"] = json!("published = true || owner = @request.auth.id");
    let r = s
        .call(
            Method::POST,
            "/api/admin/collections",
            Some(&root.token),
            Some(&def),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text
            .contains(r#"Permission \"read\" must be one of public, authenticated, owner, admin or a valid expression: filter: unknown field \"owner\" at 21"#),
        "{}",
        r.text
    );
    def["permissions"]["read"] = json!("published = true || user_id = @request.auth.id");
    let r = s
        .call(
            Method::POST,
            "/api/admin/collections",
            Some(&root.token),
            Some(&def),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
}
