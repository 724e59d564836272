//! Field types: what each accepts, how it is stored and returned (spec `rest-api.md` §5–6).

use serde_json::{Value, json};

use crate::harness::TestServer;

fn all_types() -> Value {
    json!({"name": "things", "fields": [
        {"name": "title", "type": "string"},
        {"name": "body", "type": "text"},
        {"name": "count", "type": "integer"},
        {"name": "score", "type": "float"},
        {"name": "done", "type": "boolean"},
        {"name": "when", "type": "datetime"},
        {"name": "meta", "type": "json"},
        {"name": "author", "type": "relation", "collection": "users"},
        {"name": "attachment", "type": "file"}
    ]})
}

fn rules() -> Value {
    json!({"name": "rules", "fields": [
        {"name": "title", "type": "string", "required": true, "min": 2, "max": 5},
        {"name": "code", "type": "string", "regex": "[0-9]{3}"},
        {"name": "count", "type": "integer", "min": 0, "max": 100},
        {"name": "ratio", "type": "float", "min": 0.5, "max": 1.5},
        {"name": "flag", "type": "boolean", "required": true},
        {"name": "slug", "type": "string", "unique": true},
        {"name": "file", "type": "file"}
    ]})
}

async fn server() -> TestServer {
    TestServer::start(&[all_types(), rules()]).await
}

#[tokio::test]
async fn every_type_round_trips_in_definition_order() {
    let s = server().await;
    let r = s
        .post(
            "/api/things",
            &json!({
                "attachment": "", "author": "usr_1", "meta": [1, {"a": null}], "when": "2024-01-01",
                "done": true, "score": 5.0, "count": 3.0, "body": "long", "title": "t"
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let text = r.text.clone();
    let keys = [
        "\"id\"",
        "\"createdAt\"",
        "\"updatedAt\"",
        "\"title\"",
        "\"body\"",
        "\"count\"",
        "\"score\"",
        "\"done\"",
        "\"when\"",
        "\"meta\"",
        "\"author\"",
        "\"attachment\"",
    ];
    let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "key order: {text}"
    );
    assert!(text.contains("\"count\":3,"), "{text}");
    assert!(
        text.contains("\"score\":5,"),
        "integral floats print without decimals: {text}"
    );
    let j = r.json();
    assert_eq!(j["done"], true);
    assert_eq!(j["when"], "2024-01-01T00:00:00.000Z");
    assert_eq!(j["meta"], json!([1, {"a": null}]));
    assert_eq!(j["author"], "usr_1");
    assert_eq!(j["attachment"], "");
    let ts = j["createdAt"].as_str().unwrap();
    assert_eq!(ts.len(), 24);
    assert!(ts.ends_with('Z'));
    // Reading it back gives the same bytes.
    assert_eq!(
        s.get(&format!("/api/things/{}", j["id"].as_str().unwrap()))
            .await
            .json(),
        j
    );
}

#[tokio::test]
async fn absent_fields_are_null_and_floats_keep_fractions() {
    let s = server().await;
    let j = s
        .create(
            "things",
            json!({"score": 2.5, "done": false, "meta": {"k": "v"}}),
        )
        .await;
    assert_eq!(j["title"], Value::Null);
    assert_eq!(j["count"], Value::Null);
    assert_eq!(j["score"], 2.5);
    assert_eq!(j["done"], false);
    assert_eq!(j["meta"], json!({"k": "v"}));
}

#[tokio::test]
async fn datetimes_are_normalized_to_utc_millis() {
    let s = server().await;
    for (input, want) in [
        ("2024-01-01T10:00:00+02:00", "2024-01-01T08:00:00.000Z"),
        ("2024-05-06T07:08:09.123Z", "2024-05-06T07:08:09.123Z"),
        ("Tue, 01 Jan 2030 00:00:00 GMT", "2030-01-01T00:00:00.000Z"),
    ] {
        let j = s.create("things", json!({"when": input})).await;
        assert_eq!(j["when"], want, "{input}");
    }
}

async fn details(s: &TestServer, collection: &str, body: Value) -> Vec<(String, String, String)> {
    let r = s.post(&format!("/api/{collection}"), &body).await;
    assert_eq!(r.status, 400, "{body}: {}", r.text);
    let j = r.json();
    assert_eq!(j["error"]["code"], "validation_error");
    assert_eq!(j["error"]["message"], "Validation failed");
    j["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["field"].as_str().unwrap().to_string(),
                d["rule"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn d(f: &str, r: &str, m: &str) -> (String, String, String) {
    (f.into(), r.into(), m.into())
}

#[tokio::test]
async fn type_errors_for_every_type() {
    let s = server().await;
    let got = details(
        &s,
        "things",
        json!({"title": 1, "body": [], "count": 1.5, "score": "1", "done": 0, "when": "soon", "meta": "x", "author": 5, "attachment": false}),
    )
    .await;
    assert_eq!(
        got,
        [
            d("title", "type", "Field \"title\" must be a string"),
            d("body", "type", "Field \"body\" must be a string"),
            d("count", "type", "Field \"count\" must be an integer"),
            d("score", "type", "Field \"score\" must be a number"),
            d("done", "type", "Field \"done\" must be a boolean"),
            d(
                "when",
                "type",
                "Field \"when\" must be a valid ISO-8601 datetime"
            ),
            d("meta", "type", "Field \"meta\" must be a JSON value"),
            d("author", "type", "Field \"author\" must be a string"),
            d(
                "attachment",
                "type",
                "Field \"attachment\" must be a string"
            ),
        ]
    );
    // Bare scalars are not JSON field values.
    assert_eq!(details(&s, "things", json!({"meta": 1})).await[0].1, "type");
}

#[tokio::test]
async fn required_min_max_regex_exists_unique() {
    let s = server().await;
    for missing in [
        json!({}),
        json!({"title": null, "flag": null}),
        json!({"title": "", "flag": null}),
    ] {
        assert_eq!(
            details(&s, "rules", missing).await,
            [
                d("title", "required", "Field \"title\" is required"),
                d("flag", "required", "Field \"flag\" is required"),
            ]
        );
    }
    // `false` satisfies required.
    s.create(
        "rules",
        json!({"title": "ok", "flag": false, "slug": "taken"}),
    )
    .await;
    let got = details(
        &s,
        "rules",
        json!({"title": "x", "code": "abc", "count": 101, "ratio": 0.25, "flag": true, "slug": "taken", "file": "fil_nope"}),
    )
    .await;
    assert_eq!(
        got,
        [
            d(
                "title",
                "min",
                "Field \"title\" must be at least 2 characters"
            ),
            d(
                "code",
                "regex",
                "Field \"code\" does not match required pattern"
            ),
            d("count", "max", "Field \"count\" must be at most 100"),
            d("ratio", "min", "Field \"ratio\" must be at least 0.5"),
            d("slug", "unique", "Field \"slug\" must be unique"),
            d(
                "file",
                "exists",
                "Field \"file\" references unknown file \"fil_nope\""
            ),
        ]
    );
    assert_eq!(
        details(
            &s,
            "rules",
            json!({"title": "toolong", "flag": true, "count": -1, "ratio": 2})
        )
        .await,
        [
            d(
                "title",
                "max",
                "Field \"title\" must be at most 5 characters"
            ),
            d("count", "min", "Field \"count\" must be at least 0"),
            d("ratio", "max", "Field \"ratio\" must be at most 1.5"),
        ]
    );
    // Regex is a substring match; bounds are inclusive; length counts Unicode scalar values.
    s.create(
        "rules",
        json!({"title": "ab", "code": "x123y", "count": 100, "ratio": 1.5, "flag": true}),
    )
    .await;
    s.create("rules", json!({"title": "😀😀😀😀😀", "flag": true}))
        .await;
    assert_eq!(
        details(&s, "rules", json!({"title": "😀", "flag": true})).await[0].1,
        "min"
    );
}

#[tokio::test]
async fn lengths_count_what_the_message_says() {
    let s = TestServer::start(&[json!({"name": "posts", "fields": [
        {"name": "title", "type": "string", "max": 200},
        {"name": "tag", "type": "string", "min": 2, "max": 3}
    ]})])
    .await;
    // 101 emoji are 101 characters (202 UTF-16 units): within "at most 200 characters".
    let r = s
        .post("/api/posts", &json!({"title": "😀".repeat(101)}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.create("posts", json!({"title": "😀".repeat(200)})).await;
    assert_eq!(
        details(&s, "posts", json!({"title": "😀".repeat(201)})).await,
        [d(
            "title",
            "max",
            "Field \"title\" must be at most 200 characters"
        )]
    );
    // "é" typed as e + combining acute accent is two characters; precomposed, one.
    s.create("posts", json!({"tag": "e\u{301}"})).await;
    assert_eq!(
        details(&s, "posts", json!({"tag": "\u{E9}"})).await,
        [d(
            "tag",
            "min",
            "Field \"tag\" must be at least 2 characters"
        )]
    );
    assert_eq!(
        details(&s, "posts", json!({"tag": "e\u{301}e\u{301}"})).await[0].1,
        "max"
    );
    // Passwords too: 8 emoji are 8 characters, 4 are not.
    let r = s
        .post(
            "/api/auth/register",
            &json!({"email": "emoji@example.com", "password": "🔑".repeat(4)}),
        )
        .await;
    r.assert_error(400, "bad_request", "Password must be at least 8 characters");
    let r = s
        .post(
            "/api/auth/register",
            &json!({"email": "emoji@example.com", "password": "🔑".repeat(8)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn update_validates_present_fields_and_unique_excludes_self() {
    let s = server().await;
    let a = s
        .create("rules", json!({"title": "aa", "flag": true, "slug": "a"}))
        .await;
    s.create("rules", json!({"title": "bb", "flag": true, "slug": "b"}))
        .await;
    let id = a["id"].as_str().unwrap();
    let same = s
        .put(
            &format!("/api/rules/{id}"),
            &json!({"slug": "a", "count": 5}),
        )
        .await;
    assert_eq!(same.status, 200, "{}", same.text);
    let r = s
        .put(
            &format!("/api/rules/{id}"),
            &json!({"slug": "b", "title": null}),
        )
        .await;
    assert_eq!(r.status, 400);
    let det = &r.json()["error"]["details"];
    assert_eq!(det[0]["rule"], "required");
    assert_eq!(det[1]["rule"], "unique");
    // Clearing an optional field with null works.
    let cleared = s
        .put(&format!("/api/rules/{id}"), &json!({"count": null}))
        .await
        .json();
    assert_eq!(cleared["count"], Value::Null);
    assert_eq!(cleared["slug"], "a");
}

#[tokio::test]
async fn null_unique_values_never_conflict() {
    let s = server().await;
    s.create("rules", json!({"title": "aa", "flag": true}))
        .await;
    s.create("rules", json!({"title": "bb", "flag": true, "slug": null}))
        .await;
}
