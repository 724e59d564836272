//! The access policy (`bakend_auth::permissions::authorize`) on the REST API: a fixed matrix
//! (rule × operation × caller), owner assignment and owner changes per caller, file read,
//! delete and attach per caller, and a property test over random users, records and
//! operations.

use std::collections::{BTreeSet, HashMap};

use bakend_auth::permissions::{Decision, decide};
use bakend_auth::{AuthContext, Caller, Operation, Role};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Session, TestServer};

const RULES: [&str; 4] = ["public", "authenticated", "owner", "admin"];
/// An expression rule: the caller's own records, and anyone's whose `t` is still "x" (updates
/// set it to "y", so records leave other users' read sets).
const EXPR_RULE: &str = "user_id = @request.auth.id || t = 'x'";
/// The property test's collections: `c_<name>` with `rule` for every operation.
const COLLS: [(&str, &str); 5] = [
    ("public", "public"),
    ("authenticated", "authenticated"),
    ("owner", "owner"),
    ("admin", "admin"),
    ("expr", EXPR_RULE),
];
const ADMIN: &str = "admin@example.com";

fn collection(rule: &str) -> Value {
    named_collection(rule, rule)
}

fn named_collection(name: &str, rule: &str) -> Value {
    json!({"name": format!("c_{name}"), "fields": [{"name": "t", "type": "string"}, {"name": "user_id", "type": "string"}],
           "permissions": {"create": rule, "read": rule, "update": rule, "delete": rule}})
}

/// A collection's read permission as the server parsed it.
fn read_permission(name: &str, rule: &str) -> bakend_store::Permission {
    bakend_store::collections::definition::parse(&named_collection(name, rule))
        .unwrap()
        .def
        .permissions
        .read
}

/// A public collection with an owner and a `file` field, for attaching files.
fn with_files() -> Value {
    json!({"name": "with_files", "fields": [{"name": "f", "type": "file"}, {"name": "user_id", "type": "string"}],
           "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}})
}

async fn server() -> TestServer {
    let mut cols: Vec<Value> = RULES.iter().map(|r| collection(r)).collect();
    cols.push(named_collection("expr", EXPR_RULE));
    cols.push(with_files());
    TestServer::start_with_env(
        &cols,
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", ADMIN)],
    )
    .await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anon,
    Owner,
    Other,
    Admin,
}

const WHO: [Who; 4] = [Who::Anon, Who::Owner, Who::Other, Who::Admin];

/// Expected status per (rule, caller) for operations on one record owned by `Owner`
/// (read/update; delete uses 204 for 200) and for create (201 for 200).
fn expected(rule: &str, who: Who) -> u16 {
    match (rule, who) {
        ("public", _) => 200,
        (_, Who::Anon) => 401,
        ("authenticated", _) => 200,
        (_, Who::Admin) => 200,
        ("owner", Who::Owner) => 200,
        _ => 403,
    }
}

#[tokio::test]
async fn permission_matrix() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let token = |w: Who| -> Option<String> {
        match w {
            Who::Anon => None,
            Who::Owner => Some(alice.token.clone()),
            Who::Other => Some(bob.token.clone()),
            Who::Admin => Some(admin.token.clone()),
        }
    };
    let id_of = |w: Who| -> Option<&str> {
        match w {
            Who::Anon => None,
            Who::Owner => Some(&alice.id),
            Who::Other => Some(&bob.id),
            Who::Admin => Some(&admin.id),
        }
    };
    for rule in RULES {
        let c = format!("c_{rule}");
        // Records of alice and bob, created by the admin on their behalf.
        let mk = |owner: &str| json!({"t": "x", "user_id": owner});
        let mut alice_ids = BTreeSet::new();
        let mut all_ids = BTreeSet::new();
        for owner in [&alice.id, &bob.id, &alice.id] {
            let r = s
                .call(
                    Method::POST,
                    &format!("/api/{c}"),
                    Some(&admin.token),
                    Some(&mk(owner)),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            let rec = r.json();
            assert_eq!(
                rec["user_id"],
                owner.as_str(),
                "admins may create on someone's behalf"
            );
            let id = rec["id"].as_str().unwrap().to_string();
            if owner == &alice.id {
                alice_ids.insert(id.clone());
            }
            all_ids.insert(id);
        }
        let alice_record = alice_ids.iter().next().unwrap().clone();

        for who in WHO {
            let t = token(who);
            let want = expected(rule, who);
            let cell = format!("rule={rule} caller={who:?}");

            // create: the owner is always the signed-in creator (non-admins cannot pick).
            let r = s
                .call(
                    Method::POST,
                    &format!("/api/{c}"),
                    t.as_deref(),
                    Some(&json!({"t": "new", "user_id": bob.id})),
                )
                .await;
            // Under `owner`, creating needs only a signed-in caller (who becomes the owner).
            let want_create = match (rule, who) {
                ("owner", Who::Owner | Who::Other) => 201,
                _ if want == 200 => 201,
                _ => want,
            };
            assert_eq!(r.status, want_create, "create {cell}: {}", r.text);
            if r.status == 201 {
                let rec = r.json();
                let expect_owner = match who {
                    Who::Anon => Value::Null,
                    Who::Admin => json!(bob.id),
                    _ => json!(id_of(who).unwrap()),
                };
                assert_eq!(rec["user_id"], expect_owner, "create owner {cell}");
                let id = rec["id"].as_str().unwrap().to_string();
                if rec["user_id"] == json!(alice.id) {
                    alice_ids.insert(id.clone());
                }
                all_ids.insert(id);
            }

            // read one of alice's records
            let r = s
                .call(
                    Method::GET,
                    &format!("/api/{c}/{alice_record}"),
                    t.as_deref(),
                    None,
                )
                .await;
            assert_eq!(r.status, want, "read {cell}: {}", r.text);

            // list: exactly the readable records
            let r = s
                .call(
                    Method::GET,
                    &format!("/api/{c}?perPage=1000"),
                    t.as_deref(),
                    None,
                )
                .await;
            let want_list = if rule == "owner" && who != Who::Admin && who != Who::Anon {
                200
            } else {
                want
            };
            assert_eq!(r.status, want_list, "list {cell}: {}", r.text);
            if r.status == 200 {
                let got: BTreeSet<String> = r.json()["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["id"].as_str().unwrap().to_string())
                    .collect();
                let expect: BTreeSet<String> = match (rule, who) {
                    ("owner", Who::Owner) => alice_ids.clone(),
                    ("owner", Who::Other) => {
                        // bob's own records (from the admin and his own create)
                        let all = s
                            .call(
                                Method::GET,
                                &format!("/api/{c}?perPage=1000"),
                                Some(&admin.token),
                                None,
                            )
                            .await
                            .json();
                        all["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|x| x["user_id"] == json!(bob.id))
                            .map(|x| x["id"].as_str().unwrap().to_string())
                            .collect()
                    }
                    _ => all_ids.clone(),
                };
                assert_eq!(got, expect, "list contents {cell}");
                assert_eq!(r.json()["totalItems"], expect.len(), "list count {cell}");
            }

            // update alice's record
            let r = s
                .call(
                    Method::PUT,
                    &format!("/api/{c}/{alice_record}"),
                    t.as_deref(),
                    Some(&json!({"t": "changed"})),
                )
                .await;
            assert_eq!(r.status, want, "update {cell}: {}", r.text);

            // delete a fresh record of alice's
            let fresh = s
                .call(
                    Method::POST,
                    &format!("/api/{c}"),
                    Some(&admin.token),
                    Some(&mk(&alice.id)),
                )
                .await
                .json();
            let fid = fresh["id"].as_str().unwrap();
            let r = s
                .call(
                    Method::DELETE,
                    &format!("/api/{c}/{fid}"),
                    t.as_deref(),
                    None,
                )
                .await;
            assert_eq!(
                r.status,
                if want == 200 { 204 } else { want },
                "delete {cell}: {}",
                r.text
            );
            if r.status != 204 {
                alice_ids.insert(fid.to_string());
                all_ids.insert(fid.to_string());
            }
        }
    }
}

#[tokio::test]
async fn only_admins_change_user_id() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let rec = s
        .call(
            Method::POST,
            "/api/c_authenticated",
            Some(&alice.token),
            Some(&json!({"t": "a"})),
        )
        .await
        .json();
    let id = rec["id"].as_str().unwrap();
    s.call(
        Method::PUT,
        &format!("/api/c_authenticated/{id}"),
        Some(&alice.token),
        Some(&json!({"user_id": bob.id})),
    )
    .await
    .assert_error(403, "forbidden", "Only admins can change user_id");
    // Restating the current owner is fine.
    assert_eq!(
        s.call(
            Method::PUT,
            &format!("/api/c_authenticated/{id}"),
            Some(&alice.token),
            Some(&json!({"user_id": alice.id, "t": "b"}))
        )
        .await
        .status,
        200
    );
    let r = s
        .call(
            Method::PUT,
            &format!("/api/c_authenticated/{id}"),
            Some(&admin.token),
            Some(&json!({"user_id": bob.id})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user_id"], json!(bob.id));
    // Anonymous creators of a public collection cannot claim an owner.
    let anon = s
        .post("/api/c_public", &json!({"t": "x", "user_id": alice.id}))
        .await
        .json();
    assert_eq!(anon["user_id"], Value::Null);
}

/// Who owns a new record, per caller and per `user_id` in the body (an owner collection and a
/// public one, so anonymous creators are covered).
#[tokio::test]
async fn owner_assignment_on_create() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let anon: Option<&str> = None;
    // (collection, caller token, body user_id, expected user_id)
    let cases: Vec<(&str, Option<&str>, Value, Value)> = vec![
        ("c_owner", Some(&alice.token), Value::Null, json!(alice.id)),
        (
            "c_owner",
            Some(&alice.token),
            json!(bob.id),
            json!(alice.id),
        ),
        ("c_owner", Some(&admin.token), json!(bob.id), json!(bob.id)),
        ("c_owner", Some(&admin.token), Value::Null, json!(admin.id)),
        (
            "c_authenticated",
            Some(&alice.token),
            json!(bob.id),
            json!(alice.id),
        ),
        (
            "c_public",
            Some(&alice.token),
            json!(bob.id),
            json!(alice.id),
        ),
        ("c_public", anon, json!(alice.id), Value::Null),
        ("c_public", anon, Value::Null, Value::Null),
        (
            "c_public",
            Some(&admin.token),
            json!(alice.id),
            json!(alice.id),
        ),
        ("c_public", Some(&admin.token), Value::Null, json!(admin.id)),
    ];
    for (c, token, requested, want) in cases {
        let mut body = json!({"t": "x"});
        if !requested.is_null() {
            body["user_id"] = requested.clone();
        }
        let r = s
            .call(Method::POST, &format!("/api/{c}"), token, Some(&body))
            .await;
        let cell = format!("{c} caller={token:?} requested={requested}");
        assert_eq!(r.status, 201, "{cell}: {}", r.text);
        assert_eq!(r.json()["user_id"], want, "{cell}");
    }
    // An explicit null in the body is no claim either: admins then own the record themselves.
    let r = s
        .call(
            Method::POST,
            "/api/c_public",
            Some(&admin.token),
            Some(&json!({"t": "x", "user_id": null})),
        )
        .await;
    assert_eq!(r.json()["user_id"], json!(admin.id));
}

/// Changing `user_id` on update: only admins change it; anyone allowed to update may restate it.
#[tokio::test]
async fn owner_changes_per_caller() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    const ONLY_ADMINS: &str = "Only admins can change user_id";
    // (collection, caller, record owned by alice?, requested user_id, expected status)
    let cases: Vec<(&str, Option<&str>, bool, Value, u16)> = vec![
        // the owner
        (
            "c_authenticated",
            Some(&alice.token),
            true,
            json!(bob.id),
            403,
        ),
        (
            "c_authenticated",
            Some(&alice.token),
            true,
            Value::Null,
            403,
        ),
        (
            "c_authenticated",
            Some(&alice.token),
            true,
            json!(alice.id),
            200,
        ),
        ("c_owner", Some(&alice.token), true, json!(bob.id), 403),
        ("c_owner", Some(&alice.token), true, json!(alice.id), 200),
        // another user who may update the record (authenticated rule)
        (
            "c_authenticated",
            Some(&bob.token),
            true,
            json!(bob.id),
            403,
        ),
        (
            "c_authenticated",
            Some(&bob.token),
            true,
            json!(alice.id),
            200,
        ),
        // the admin
        (
            "c_authenticated",
            Some(&admin.token),
            true,
            json!(bob.id),
            200,
        ),
        ("c_owner", Some(&admin.token), true, Value::Null, 200),
        // anonymous, on a public collection
        ("c_public", None, true, json!(bob.id), 403),
        ("c_public", None, false, json!(bob.id), 403),
        ("c_public", None, false, Value::Null, 200),
    ];
    for (c, token, owned, requested, want) in cases {
        let owner = if owned { json!(alice.id) } else { Value::Null };
        let rec = s
            .call(
                Method::POST,
                &format!("/api/{c}"),
                Some(&admin.token),
                Some(&json!({"t": "x", "user_id": owner})),
            )
            .await
            .json();
        // The admin's explicit null means "me"; make the unowned record unowned again.
        let id = rec["id"].as_str().unwrap();
        if !owned {
            s.call(
                Method::PUT,
                &format!("/api/{c}/{id}"),
                Some(&admin.token),
                Some(&json!({"user_id": null})),
            )
            .await;
        }
        let r = s
            .call(
                Method::PUT,
                &format!("/api/{c}/{id}"),
                token,
                Some(&json!({"user_id": requested, "t": "y"})),
            )
            .await;
        let cell = format!("{c} caller={token:?} owned={owned} requested={requested}");
        if want == 403 {
            r.assert_error(403, "forbidden", ONLY_ADMINS);
            let now = s
                .call(
                    Method::GET,
                    &format!("/api/{c}/{id}"),
                    Some(&admin.token),
                    None,
                )
                .await
                .json();
            assert_eq!(now["user_id"], owner, "unchanged after refusal: {cell}");
            assert_eq!(now["t"], "x", "nothing else written either: {cell}");
        } else {
            assert_eq!(r.status, want, "{cell}: {}", r.text);
            assert_eq!(r.json()["user_id"], requested, "{cell}");
        }
    }
}

async fn upload(s: &TestServer, token: &str, visibility: &str) -> String {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        )
        .text("visibility", visibility.to_string());
    let r = s
        .http
        .post(format!("{}/api/storage/upload", s.url))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let j: Value = r.json().await.unwrap();
    j["id"].as_str().unwrap().to_string()
}

/// Reading and deleting alice's files, per caller and visibility.
#[tokio::test]
async fn file_read_and_delete_per_caller() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let callers = [
        ("anonymous", None),
        ("owner", Some(alice.token.as_str())),
        ("other", Some(bob.token.as_str())),
        ("admin", Some(admin.token.as_str())),
    ];
    let protected = upload(&s, &alice.token, "protected").await;
    let public = upload(&s, &alice.token, "public").await;
    for (who, token) in callers {
        let read = |id: String| {
            let s = &s;
            async move {
                s.call(Method::GET, &format!("/api/storage/{id}"), token, None)
                    .await
            }
        };
        let r = read(protected.clone()).await;
        match who {
            "anonymous" => r.assert_error(401, "unauthorized", "Unauthorized"),
            "other" => r.assert_error(403, "forbidden", "Forbidden"),
            _ => assert_eq!(r.status, 200, "read protected by {who}"),
        }
        assert_eq!(r.status == 200, r.text == "hello", "{who}");
        assert_eq!(
            read(public.clone()).await.status,
            200,
            "read public by {who}"
        );

        for visibility in ["protected", "public"] {
            let id = upload(&s, &alice.token, visibility).await;
            let r = s
                .call(Method::DELETE, &format!("/api/storage/{id}"), token, None)
                .await;
            match who {
                "anonymous" => r.assert_error(401, "unauthorized", "Unauthorized"),
                "other" => r.assert_error(403, "forbidden", "Forbidden"),
                _ => assert_eq!(r.status, 204, "delete {visibility} by {who}: {}", r.text),
            }
            let still = s
                .call(
                    Method::GET,
                    &format!("/api/storage/{id}"),
                    Some(&admin.token),
                    None,
                )
                .await
                .status;
            assert_eq!(still == 404, r.status == 204, "{who} {visibility}");
        }
    }
}

/// Attaching a stored file to a record: only one's own files, admins any, anonymous none —
/// on create and on update.
#[tokio::test]
async fn file_field_ownership_per_caller() {
    let s = server().await;
    let admin = s.register(ADMIN).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    let alices = upload(&s, &alice.token, "public").await;
    let bobs = upload(&s, &bob.token, "protected").await;
    let owner_error = json!({"field": "f", "rule": "owner",
        "message": "Field \"f\" references a file you do not own"});
    // (caller, file, allowed)
    let cases: Vec<(&str, Option<&str>, &str, bool)> = vec![
        ("owner", Some(&alice.token), &alices, true),
        (
            "owner attaching another's",
            Some(&alice.token),
            &bobs,
            false,
        ),
        ("anonymous", None, &alices, false),
        ("admin", Some(&admin.token), &bobs, true),
    ];
    for (who, token, file, allowed) in cases {
        let r = s
            .call(
                Method::POST,
                "/api/with_files",
                token,
                Some(&json!({"f": file})),
            )
            .await;
        if allowed {
            assert_eq!(r.status, 201, "create {who}: {}", r.text);
            assert_eq!(r.json()["f"], json!(file));
        } else {
            assert_eq!(r.status, 400, "create {who}: {}", r.text);
            assert_eq!(r.json()["error"]["details"], json!([owner_error]), "{who}");
        }
        // The same on update of an empty record.
        let id = s.create("with_files", json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = s
            .call(
                Method::PUT,
                &format!("/api/with_files/{id}"),
                token,
                Some(&json!({"f": file})),
            )
            .await;
        if allowed {
            assert_eq!(r.status, 200, "update {who}: {}", r.text);
        } else {
            assert_eq!(r.status, 400, "update {who}: {}", r.text);
            assert_eq!(r.json()["error"]["details"], json!([owner_error]), "{who}");
        }
    }
}

// ---- property test ----

#[derive(Clone, Debug)]
enum Op {
    Create {
        actor: usize,
        coll: usize,
    },
    Update {
        actor: usize,
        pick: usize,
    },
    Delete {
        actor: usize,
        pick: usize,
    },
    /// The admin gives a record to another user.
    Transfer {
        pick: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 0..COLLS.len()).prop_map(|(actor, coll)| Op::Create { actor, coll }),
        2 => (0..5usize, any::<usize>()).prop_map(|(actor, pick)| Op::Update { actor, pick }),
        1 => (0..5usize, any::<usize>()).prop_map(|(actor, pick)| Op::Delete { actor, pick }),
        1 => (any::<usize>(), 0..4usize).prop_map(|(pick, to)| Op::Transfer { pick, to }),
    ]
}

/// Caller index 0 is anonymous, 1..=3 are users, 4 is the admin.
fn ctx_of(i: usize, users: &[Session]) -> AuthContext {
    match i {
        0 => AuthContext::Anonymous,
        i => AuthContext::User(std::sync::Arc::new(Caller {
            id: users[i - 1].id.clone(),
            email: String::new(),
            role: if i == 4 {
                Role::Admin
            } else {
                Role::Authenticated
            },
            created_at: String::new(),
        })),
    }
}

async fn run_case(ops: Vec<Op>) {
    let s = server().await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(s.register(&format!("u{i}@example.com")).await);
    }
    users.push(s.register(ADMIN).await);
    let token = |i: usize| -> Option<String> { (i > 0).then(|| users[i - 1].token.clone()) };
    // Model: record id -> (collection index, the record as stored)
    let mut model: HashMap<String, (usize, Value)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Create { actor, coll } => {
                let r = s
                    .call(
                        Method::POST,
                        &format!("/api/c_{}", COLLS[coll].0),
                        token(actor).as_deref(),
                        Some(&json!({"t": "x"})),
                    )
                    .await;
                if r.status == 201 {
                    let rec = r.json();
                    let id = rec["id"].as_str().unwrap().to_string();
                    model.insert(id.clone(), (coll, rec));
                    order.push(id);
                }
            }
            Op::Update { actor, pick } | Op::Delete { actor, pick } if !order.is_empty() => {
                let id = order[pick % order.len()].clone();
                let Some((coll, _)) = model.get(&id).cloned() else {
                    continue;
                };
                let delete = matches!(op, Op::Delete { .. });
                let m = if delete { Method::DELETE } else { Method::PUT };
                let r = s
                    .call(
                        m,
                        &format!("/api/c_{}/{id}", COLLS[coll].0),
                        token(actor).as_deref(),
                        (!delete).then_some(&json!({"t": "y"})),
                    )
                    .await;
                assert!(
                    matches!(r.status, 200 | 204 | 401 | 403 | 404),
                    "{}",
                    r.text
                );
                if r.status == 204 {
                    model.remove(&id);
                } else if r.status == 200 {
                    model.insert(id, (coll, r.json()));
                }
            }
            Op::Transfer { pick, to } if !order.is_empty() => {
                let id = order[pick % order.len()].clone();
                let Some((coll, _)) = model.get(&id).cloned() else {
                    continue;
                };
                let new_owner = users[to].id.clone();
                let r = s
                    .call(
                        Method::PUT,
                        &format!("/api/c_{}/{id}", COLLS[coll].0),
                        token(4).as_deref(),
                        Some(&json!({"user_id": new_owner})),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
                model.insert(id, (coll, r.json()));
            }
            _ => {}
        }
    }
    // What each caller reads over REST equals what the permission function says.
    for caller in 0..5 {
        let ctx = ctx_of(caller, &users);
        for (ci, (name, rule_src)) in COLLS.iter().enumerate() {
            let rule = read_permission(name, rule_src);
            let r = s
                .call(
                    Method::GET,
                    &format!("/api/c_{name}?perPage=1000"),
                    token(caller).as_deref(),
                    None,
                )
                .await;
            let readable = |rec: &Value| {
                let owner = rec["user_id"].as_str();
                decide(&ctx, &rule, Operation::Read, owner, Some(rec)) == Decision::Allow
            };
            match decide(&ctx, &rule, Operation::List, None, None) {
                Decision::Unauthenticated => assert_eq!(r.status, 401),
                Decision::Forbidden => assert_eq!(r.status, 403),
                Decision::Allow | Decision::AllowOwnedBy(_) | Decision::AllowMatching(_) => {
                    assert_eq!(r.status, 200, "{}", r.text);
                    let got: BTreeSet<String> = r.json()["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x["id"].as_str().unwrap().to_string())
                        .collect();
                    let want: BTreeSet<String> = model
                        .iter()
                        .filter(|(_, (c, rec))| *c == ci && readable(rec))
                        .map(|(id, _)| id.clone())
                        .collect();
                    assert_eq!(got, want, "caller {caller} list of {name}");
                }
                Decision::AllowAsOwner(_) | Decision::AllowUnowned => unreachable!(),
            }
            for (id, (_, rec)) in model.iter().filter(|(_, (c, _))| *c == ci) {
                let r = s
                    .call(
                        Method::GET,
                        &format!("/api/c_{name}/{id}"),
                        token(caller).as_deref(),
                        None,
                    )
                    .await;
                let want = match decide(
                    &ctx,
                    &rule,
                    Operation::Read,
                    rec["user_id"].as_str(),
                    Some(rec),
                ) {
                    Decision::Allow => 200,
                    Decision::Unauthenticated => 401,
                    _ => 403,
                };
                assert_eq!(r.status, want, "caller {caller} get {name}/{id}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 20, ..ProptestConfig::default() })]
    #[test]
    fn rest_reads_match_the_permission_decision(ops in proptest::collection::vec(op(), 10..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(ops));
    }
}
