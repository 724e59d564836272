//! `GET /api/{collection}?filter=…` (issue 16, `docs/filters.md`) through the real server:
//! every operator, nulls, case folding, errors with positions, counts, cursors, the read rule
//! on top, `@request.auth` and functions' `ctx.records.list`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::TestServer;

fn tasks() -> Value {
    json!({"name": "tasks", "fields": [
        {"name": "title", "type": "string", "required": true},
        {"name": "body", "type": "text"},
        {"name": "views", "type": "integer"},
        {"name": "score", "type": "float"},
        {"name": "done", "type": "boolean"},
        {"name": "due", "type": "datetime"},
        {"name": "meta", "type": "json"},
        {"name": "project", "type": "string"},
        {"name": "user_id", "type": "string"}
    ]})
}

/// Percent-encodes a query value (every byte but ASCII letters and digits).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn titles(page: &Value) -> BTreeSet<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn filtered(s: &TestServer, filter: &str) -> Value {
    let r = s
        .get(&format!("/api/tasks?perPage=100&filter={}", enc(filter)))
        .await;
    assert_eq!(r.status, 200, "{filter}: {}", r.text);
    r.json()
}

async fn seed(s: &TestServer) {
    for body in [
        json!({"title": "a", "body": "Straße am See", "views": 10, "score": 1.5, "done": false,
               "due": "2024-01-01T10:00:00Z", "meta": {"k": 1}, "project": "p1"}),
        json!({"title": "b", "body": "ÉCOLE 100% sure", "views": 20, "score": -2.25, "done": true,
               "due": "2024-06-01", "project": "p1"}),
        json!({"title": "c", "body": "plain_text", "views": 30, "done": false, "project": "p2"}),
        json!({"title": "d", "views": null, "score": 0, "done": null, "project": null}),
        json!({"title": "e", "body": "it's \"quoted\"", "views": 9007199254740993_i64, "score": 1e10,
               "done": true, "due": "2030-01-01T00:00:00+02:00", "project": "p2"}),
    ] {
        s.create("tasks", body).await;
    }
}

#[tokio::test]
async fn every_operator_with_nulls_case_and_wildcards() {
    let s = TestServer::start(&[tasks()]).await;
    seed(&s).await;
    for (filter, want) in [
        ("views = 20", vec!["b"]),
        ("views != 20", vec!["a", "c", "e"]),
        ("views > 10", vec!["b", "c", "e"]),
        ("views >= 10 && views <= 20", vec!["a", "b"]),
        ("views < 20", vec!["a"]),
        ("score > 0", vec!["a", "e"]),
        ("score <= 0", vec!["b", "d"]),
        ("views = 9007199254740993", vec!["e"]),
        ("done = true", vec!["b", "e"]),
        ("done = false", vec!["a", "c"]),
        ("done != true", vec!["a", "c"]),
        ("done = null", vec!["d"]),
        ("project = null", vec!["d"]),
        ("project != null", vec!["a", "b", "c", "e"]),
        ("meta != null", vec!["a"]),
        ("meta = null", vec!["b", "c", "d", "e"]),
        // `~` folds case on both sides, Unicode included; no `%` means contains.
        ("body ~ 'STRASSE'", vec![]),
        ("body ~ 'straße'", vec!["a"]),
        ("body ~ 'école'", vec!["b"]),
        ("body ~ 'see'", vec!["a"]),
        ("body ~ 'stra%see'", vec!["a"]),
        ("body ~ 'pl%'", vec!["c"]),
        ("body ~ '%SURE'", vec!["b"]),
        // `_` is literal, not one character.
        ("body ~ 'plain_text'", vec!["c"]),
        ("body ~ 'plainXtext'", vec![]),
        // With a `%` the pattern is anchored where it has none.
        ("body ~ '100%'", vec![]),
        ("body ~ 'école 100%'", vec!["b"]),
        ("body !~ 'see'", vec!["b", "c", "e"]),
        (r#"body ~ "\"quoted\"""#, vec!["e"]),
        // Datetimes compare as instants whatever form the literal takes.
        ("due > '2024-03-01'", vec!["b", "e"]),
        ("due < '2024-01-01T11:00:00+00:00'", vec!["a"]),
        ("due = '2029-12-31T22:00:00Z'", vec!["e"]),
        ("createdAt <= @now", vec!["a", "b", "c", "d", "e"]),
        ("createdAt > @now", vec![]),
        // Precedence: && binds tighter than ||; parentheses override.
        (
            "project = 'p1' || project = 'p2' && done = true",
            vec!["a", "b", "e"],
        ),
        (
            "(project = 'p1' || project = 'p2') && done = true",
            vec!["b", "e"],
        ),
        ("title = 'a' || title = \"c\"", vec!["a", "c"]),
        // An anonymous caller's @request.auth values are null: comparisons with them are false.
        ("user_id = @request.auth.id", vec![]),
        ("@request.auth.id = null", vec!["a", "b", "c", "d", "e"]),
    ] {
        let page = filtered(&s, filter).await;
        assert_eq!(titles(&page), set(&want), "{filter}");
        assert_eq!(page["totalItems"], want.len(), "{filter}: count");
    }
}

#[tokio::test]
async fn bad_filters_are_400_with_a_position() {
    let s = TestServer::start(&[tasks()]).await;
    let bad = |f: &str| format!("/api/tasks?filter={}", enc(f));
    s.get(&bad("vews > 1")).await.assert_error(
        400,
        "bad_request",
        r#"filter: unknown field "vews" at 1"#,
    );
    for f in [
        "views > 'abc'",
        "done ~ true",
        "title = ",
        "(views > 1",
        "views >> 1",
        "meta = 1",
        "due > 'not a date'",
        "@request.auth.name = 'x'",
    ] {
        let r = s.get(&bad(f)).await;
        assert_eq!(r.status, 400, "{f}: {}", r.text);
        let j = r.json();
        assert_eq!(j["error"]["code"], "bad_request", "{f}");
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("filter: ") && msg.contains(" at "),
            "{f}: {msg}"
        );
    }
    let long = vec!["views = 1"; 400].join(" || ");
    let r = s.get(&bad(&long)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let deep = format!("{}views = 1{}", "(".repeat(100), ")".repeat(100));
    let r = s.get(&bad(&deep)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // An empty filter is no filter; the server still answers everyone.
    assert_eq!(s.get("/api/tasks?filter=").await.status, 200);
    assert_eq!(s.get("/api/tasks?filter=%20").await.status, 200);
}

#[tokio::test]
async fn counts_pages_and_cursors_follow_the_filter() {
    let s = TestServer::start(&[tasks()]).await;
    for i in 0..30 {
        s.create(
            "tasks",
            json!({"title": format!("t{i}"), "views": i, "project": if i % 3 == 0 { "p1" } else { "p2" }}),
        )
        .await;
    }
    let f = enc("project = 'p1'");
    let first = s
        .get(&format!("/api/tasks?perPage=4&filter={f}"))
        .await
        .json();
    assert_eq!(first["totalItems"], 10);
    assert_eq!(first["totalPages"], 3);
    let skipped = s
        .get(&format!("/api/tasks?perPage=4&filter={f}&skipTotal=true"))
        .await
        .json();
    assert_eq!(skipped["totalItems"], -1);
    assert_eq!(titles(&skipped), titles(&first));
    // Following `next` walks exactly the matching records, newest first.
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["title"].as_str().unwrap().to_string()),
        );
        let Some(next) = page["next"].as_str() else {
            break;
        };
        page = s
            .get(&format!("/api/tasks?perPage=4&filter={f}&after={next}"))
            .await
            .json();
    }
    let want: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 3 == 0)
        .map(|i| format!("t{i}"))
        .collect();
    assert_eq!(seen, want);
    // With a sort and a page.
    let r = s
        .get(&format!(
            "/api/tasks?perPage=3&page=2&sort=views&filter={}",
            enc("views >= 10 && project = 'p2'")
        ))
        .await
        .json();
    let got: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["t14", "t16", "t17"]);
    assert_eq!(r["totalItems"], 14);
}

#[tokio::test]
async fn the_read_rule_still_applies_and_auth_values_are_the_callers() {
    let mut owned = tasks();
    owned["permissions"] =
        json!({"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"});
    let mut public = tasks();
    public["name"] = json!("board");
    let s = TestServer::start(&[owned, public]).await;
    let alice = s.register("alice@example.com").await;
    let bob = s.register("bob@example.com").await;
    for (who, title, project) in [
        (&alice, "a1", "p1"),
        (&alice, "a2", "p2"),
        (&bob, "b1", "p1"),
    ] {
        for c in ["tasks", "board"] {
            let r = s
                .call(
                    reqwest::Method::POST,
                    &format!("/api/{c}"),
                    Some(&who.token),
                    Some(&json!({"title": title, "project": project})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
    }
    let list = |c: &'static str, token: &'static str, f: &'static str| {
        let s = &s;
        async move {
            let r = s
                .call(
                    reqwest::Method::GET,
                    &format!("/api/{c}?filter={}", enc(f)),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json()
        }
    };
    let (at, bt): (&'static str, &'static str) = (
        Box::leak(alice.token.clone().into_boxed_str()),
        Box::leak(bob.token.clone().into_boxed_str()),
    );
    // Owner rule and filter together: only her records that match.
    let r = list("tasks", at, "project = 'p1'").await;
    assert_eq!(titles(&r), set(&["a1"]));
    assert_eq!(r["totalItems"], 1);
    let r = list("tasks", bt, "project != null").await;
    assert_eq!(titles(&r), set(&["b1"]));
    // @request.auth.* are the caller's.
    let r = list("board", at, "user_id = @request.auth.id").await;
    assert_eq!(titles(&r), set(&["a1", "a2"]));
    let r = list("board", bt, "user_id = @request.auth.id && project = 'p1'").await;
    assert_eq!(titles(&r), set(&["b1"]));
    let r = list("board", bt, "@request.auth.email = 'bob@example.com'").await;
    assert_eq!(r["totalItems"], 3);
    let r = list("board", at, "@request.auth.role = 'authenticated'").await;
    assert_eq!(r["totalItems"], 3);
}

#[tokio::test]
async fn functions_list_with_a_filter() {
    // A trigger on `probes` lists `tasks` with a filter and writes what it saw back.
    const PROBE: &str = r#"
import { onCreate } from "bakend/functions";

onCreate("probes", async ({ record, records }) => {
  const page = await records.list("tasks", { filter: "done = true", sort: "title" });
  let bad = "";
  try { await records.list("tasks", { filter: "nope = 1" }); } catch (e) { bad = String(e?.message ?? e); }
  await records.update("probes", record.id, {
    result: { titles: page.items.map((r) => r.title), total: page.totalItems, bad },
  });
});
"#;
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_collections(
        dir.path(),
        &[
            tasks(),
            json!({"name": "probes", "fields": [{"name": "result", "type": "json"}]}),
        ],
    );
    let f = dir.path().join("functions/probes");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("probe.ts"), PROBE).unwrap();
    let s = TestServer::start_in(dir).await;
    seed(&s).await;
    let probe = s.create("probes", json!({})).await;
    let path = format!("/api/probes/{}", probe["id"].as_str().unwrap());
    let mut result = Value::Null;
    for _ in 0..200 {
        result = s.get(&path).await.json()["result"].clone();
        if !result.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(result["titles"], json!(["b", "e"]), "{result}");
    assert_eq!(result["total"], 2);
    assert!(
        result["bad"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field \"nope\""#)
            || result["bad"]
                .as_str()
                .unwrap()
                .contains(r#"unknown field "nope""#),
        "{result}"
    );
}
