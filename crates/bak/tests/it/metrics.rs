//! `GET /metrics` (docs/metrics.md): off by default, scrape token or admin when on, and a
//! Prometheus text exposition whose counters follow real requests, WebSocket traffic, function
//! invocations and job runs. Every scrape is checked by a strict parser of the 0.0.4 format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{TestServer, write_collections};
use crate::ws::Ws;

const ADMIN: &str = "root@example.com";
const TOKEN: &str = "scrape-token-0123456789abcdef";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// --- a strict parser of the text format --------------------------------------------------------

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {s:?}")),
    }
}

/// `{a="x",b="y"}` → the labels and what follows the closing brace.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let eq = rest.find('=').expect("label without =");
        let name = &rest[..eq];
        assert!(
            is_name(name) && !name.starts_with("__"),
            "label name {name:?}"
        );
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .expect("label value not quoted");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("dangling escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other}"),
                },
                '\n' => panic!("raw newline in a label value"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} twice"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to: itself, or the histogram it is a `_bucket`/`_sum`/`_count`
/// of.
fn family_of<'a>(types: &HashMap<String, String>, name: &'a str) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    panic!("sample {name} has no # TYPE before it");
}

fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut e = Exposition::default();
    let mut helps = HashSet::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP without text");
            assert!(is_name(name), "HELP name {name:?}");
            assert!(helps.insert(name.to_string()), "second HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE without type");
            assert!(is_name(name), "TYPE name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "type {kind}"
            );
            assert!(helps.contains(name), "TYPE {name} without HELP");
            assert!(
                e.types.insert(name.to_string(), kind.to_string()).is_none(),
                "second TYPE for {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample without value: {line:?}"));
        let name = &line[..name_end];
        assert!(is_name(name), "metric name {name:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
        assert!(!value.contains(' '), "unexpected timestamp: {line:?}");
        let family = family_of(&e.types, name).to_string();
        // A family's samples form one group.
        if family != current {
            assert!(
                !finished_families.contains(&family),
                "family {family} appears in two groups"
            );
            finished_families.insert(std::mem::replace(&mut current, family.clone()));
        }
        assert!(
            series.insert((name.to_string(), labels.clone())),
            "duplicate series {line:?}"
        );
        if e.types[&family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} should end in _total"
            );
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value: parse_value(value),
        });
    }
    check_histograms(&e);
    e
}

fn check_histograms(e: &Exposition) {
    for (family, _) in e.types.iter().filter(|(_, t)| *t == "histogram") {
        // Group the buckets by their labels other than `le`.
        let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut key = s.labels.clone();
            let le = parse_value(&key.remove("le").expect("bucket without le"));
            groups.entry(key).or_default().push((le, s.value));
        }
        for (labels, buckets) in groups {
            let find = |suffix: &str| {
                e.samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && s.labels == labels)
                    .unwrap_or_else(|| panic!("{family}{suffix} {labels:?} missing"))
                    .value
            };
            let (les, counts): (Vec<f64>, Vec<f64>) = buckets.into_iter().unzip();
            assert!(les.windows(2).all(|w| w[0] < w[1]), "le ascending: {les:?}");
            assert_eq!(*les.last().unwrap(), f64::INFINITY, "last bucket is +Inf");
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "{family} {labels:?} buckets are cumulative: {counts:?}"
            );
            assert_eq!(*counts.last().unwrap(), find("_count"), "+Inf == _count");
            assert!(find("_sum") >= 0.0);
        }
    }
}

impl Exposition {
    /// The value of the one series with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    fn requests(&self, method: &str, route: &str, status: &str) -> f64 {
        self.get(
            "bakend_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
        .unwrap_or(0.0)
    }
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse(ok).value("a_total", &[("x", "1")]), 2.0);
    for bad in [
        "a_total 1\n",                                                       // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1} 2\n",     // unterminated
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

// --- the server --------------------------------------------------------------------------------

async fn scrape(s: &TestServer, token: &str) -> (String, Exposition) {
    let r = s.call(Method::GET, "/metrics", Some(token), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], CONTENT_TYPE);
    let e = parse(&r.text);
    (r.text, e)
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let s = TestServer::start_with_env(
        &[],
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
        &[("BAKEND_ADMIN_EMAIL", ADMIN)],
    )
    .await;
    let admin = s.register(ADMIN).await;
    s.get("/metrics")
        .await
        .assert_error(404, "not_found", "Not found");
    // Not even an admin sees them: the path does not exist.
    s.call(Method::GET, "/metrics", Some(&admin.token), None)
        .await
        .assert_error(404, "not_found", "Not found");
    s.shutdown().await;
}

#[tokio::test]
async fn scraping_needs_the_scrape_token_or_an_admin() {
    let config = format!(
        r#"{{"auth": {{"rateLimit": {{"attempts": 0}}}}, "metrics": {{"enabled": true, "token": "{TOKEN}"}}}}"#
    );
    let s = TestServer::start_with_env(&[], &config, &[("BAKEND_ADMIN_EMAIL", ADMIN)]).await;
    let admin = s.register(ADMIN).await;
    let user = s.register("someone@example.com").await;

    s.get("/metrics")
        .await
        .assert_error(401, "unauthorized", "Authentication required");
    // A wrong token is neither the scrape token nor a valid access token.
    s.call(
        Method::GET,
        "/metrics",
        Some("scrape-token-0123456789abcdeX"),
        None,
    )
    .await
    .assert_error(401, "unauthorized", "Authentication required");
    s.call(Method::GET, "/metrics", Some(&user.token), None)
        .await
        .assert_error(403, "forbidden", "Admin access required");
    s.call(Method::POST, "/metrics", Some(TOKEN), None)
        .await
        .assert_error(405, "method_not_allowed", "Method not allowed");

    let (text, by_token) = scrape(&s, TOKEN).await;
    assert!(text.contains("# TYPE bakend_http_requests_total counter"));
    let (_, by_admin) = scrape(&s, &admin.token).await;
    // Each answered scrape is counted, after it is answered.
    assert_eq!(by_token.requests("GET", "/metrics", "200"), 0.0);
    assert_eq!(by_admin.requests("GET", "/metrics", "200"), 1.0);
    assert_eq!(by_admin.requests("GET", "/metrics", "401"), 2.0);
    assert_eq!(by_admin.requests("GET", "/metrics", "403"), 1.0);
    assert_eq!(by_admin.requests("POST", "/metrics", "405"), 1.0);
    assert_eq!(
        by_admin.value(
            "bakend_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    s.shutdown().await;
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_collections(
        dir.path(),
        &[json!({"name": "posts", "fields": [{"name": "title", "type": "string"}]})],
    );
    // The scrape token comes from the environment here (BAKEND_METRICS_TOKEN).
    std::fs::write(
        dir.path().join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}, "jobs": {"shutdownGraceSeconds": 1}, "metrics": {"enabled": true}}"#,
    )
    .unwrap();
    for (rel, src) in [
        (
            "functions/posts/check.ts",
            r#"import { onCreate } from "bakend/functions";
               onCreate("posts", async ({ record }) => {
                 if (record.title !== "hello") throw new Error("not hello");
               });"#,
        ),
        (
            "jobs/fine.ts",
            r#"export const schedule = "@yearly";
               export default async () => {};"#,
        ),
        (
            "jobs/broken.ts",
            r#"export const schedule = "@yearly";
               export const retries = 0;
               export default async () => { throw new Error("broken"); };"#,
        ),
    ] {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, src).unwrap();
    }
    dir
}

/// Scrapes until `f` holds (5 s at most); returns that scrape.
async fn scrape_until(
    s: &TestServer,
    mut f: impl FnMut(&Exposition) -> bool,
) -> (String, Exposition) {
    for _ in 0..100 {
        let (text, e) = scrape(s, TOKEN).await;
        if f(&e) {
            return (text, e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (text, _) = scrape(s, TOKEN).await;
    panic!("condition not reached; last scrape:\n{text}");
}

#[tokio::test]
async fn counters_follow_requests_realtime_functions_and_jobs() {
    let mut s = TestServer::start_in_with_env(
        project(),
        &[
            ("BAKEND_ADMIN_EMAIL", ADMIN),
            ("BAKEND_METRICS_TOKEN", TOKEN),
        ],
    )
    .await;
    let (_, before) = scrape(&s, TOKEN).await;
    assert_eq!(before.value("bakend_realtime_connections", &[]), 0.0);
    assert_eq!(
        before.get(
            "bakend_http_request_duration_seconds_count",
            &[("route", "/api/:collection")]
        ),
        None,
        "a route's histogram appears with its first request"
    );

    let admin = s.register(ADMIN).await;
    let (mut ws, _) = Ws::connect(&s.ws_url()).await;
    ws.subscribe("posts.*").await;

    let mut ids = Vec::new();
    for title in ["hello", "hello", "other"] {
        ids.push(
            s.create("posts", json!({ "title": title })).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(s.get(&format!("/api/posts/{}", ids[0])).await.status, 200);
    assert_eq!(s.get("/api/posts/rec_missing").await.status, 404);
    assert_eq!(s.get("/api/nope").await.status, 404);
    assert_eq!(s.get("/api/posts/a/b/c").await.status, 404);
    for id in &ids {
        let frame = ws.next().await;
        assert_eq!(frame["event"]["payload"]["id"], id.as_str(), "{frame}");
    }

    for (job, outcome) in [("fine", "completed"), ("broken", "failed")] {
        let r = s
            .call(
                Method::POST,
                &format!("/api/admin/jobs/{job}/run"),
                Some(&admin.token),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["status"], outcome);
    }

    // Functions finish off the request path; wait for their counters, then for the bus to be
    // quiet (two scrapes with the same number of events).
    scrape_until(&s, |e| {
        e.value(
            "bakend_functions_invocations_total",
            &[("outcome", "completed")],
        ) == 2.0
            && e.value(
                "bakend_functions_invocations_total",
                &[("outcome", "failed")],
            ) == 1.0
    })
    .await;
    let mut last = -1.0;
    let (text, e) = scrape_until(&s, |e| {
        let now = e.value("bakend_events_emitted_total", &[]);
        std::mem::replace(&mut last, now) == now
    })
    .await;

    // HTTP: templates, never ids or collection names.
    assert_eq!(e.requests("POST", "/api/auth/register", "201"), 1.0);
    assert_eq!(e.requests("POST", "/api/:collection", "201"), 3.0);
    assert_eq!(e.requests("GET", "/api/:collection/:id", "200"), 1.0);
    assert_eq!(e.requests("GET", "/api/:collection/:id", "404"), 1.0);
    assert_eq!(e.requests("GET", "/api/:collection", "404"), 1.0);
    assert_eq!(e.requests("GET", "other", "404"), 1.0);
    assert_eq!(e.requests("GET", "/api/realtime", "101"), 1.0);
    assert_eq!(e.requests("POST", "/api/admin/jobs/:name/run", "200"), 2.0);
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "record id {id} in the exposition"
        );
    }
    for name in ["posts", "nope", "fine", "broken"] {
        assert!(!text.contains(name), "{name} in the exposition");
    }
    let count = |route: &str| {
        e.value(
            "bakend_http_request_duration_seconds_count",
            &[("route", route)],
        )
    };
    assert_eq!(count("/api/:collection"), 4.0);
    assert_eq!(count("/api/:collection/:id"), 2.0);
    assert_eq!(count("/api/auth/register"), 1.0);
    assert!(
        e.value(
            "bakend_http_request_duration_seconds_sum",
            &[("route", "/api/:collection")]
        ) > 0.0
    );

    // Realtime: the hub's own counters.
    let rt = s
        .call(Method::GET, "/api/admin/realtime", Some(&admin.token), None)
        .await
        .json();
    assert_eq!(e.value("bakend_realtime_connections", &[]), 1.0);
    assert_eq!(e.value("bakend_realtime_subscriptions", &[]), 1.0);
    let frames = e.value("bakend_realtime_frames_out_total", &[]);
    assert!(frames >= 3.0, "three events delivered, {frames} frames");
    assert_eq!(rt["framesOut"].as_f64(), Some(frames));
    assert_eq!(
        e.value("bakend_realtime_events_in_total", &[]),
        rt["eventsIn"].as_f64().unwrap()
    );
    assert!(e.value("bakend_realtime_events_in_total", &[]) >= 3.0);
    assert!(e.value("bakend_realtime_queue_high_water", &[]) >= 1.0);
    assert_eq!(e.value("bakend_realtime_queue_capacity", &[]), 1024.0);
    assert_eq!(
        e.value("bakend_realtime_slow_consumer_closes_total", &[]),
        0.0
    );
    assert_eq!(
        e.value("bakend_realtime_token_expired_closes_total", &[]),
        0.0
    );
    // Every write was answered after its event reached the socket, none by the time bound.
    assert_eq!(
        e.value("bakend_realtime_delivery_wait_timeouts_total", &[]),
        0.0
    );
    assert_eq!(rt["deliveryWaitTimeouts"].as_f64(), Some(0.0));

    // Event bus: since the first scrape every consumer got every event; the test's consumer
    // (subscribed before start, never read by this test) holds all of them in its queue.
    let emitted = e.value("bakend_events_emitted_total", &[]);
    let new_events = emitted - before.value("bakend_events_emitted_total", &[]);
    assert!(
        new_events >= 3.0 + 3.0 * 2.0 + 2.0 * 2.0,
        "{new_events} events"
    );
    for consumer in ["realtime", "functions", "test"] {
        let c = [("consumer", consumer)];
        let delivered = e.value("bakend_events_delivered_total", &c);
        assert_eq!(
            delivered - before.value("bakend_events_delivered_total", &c),
            new_events,
            "{consumer}"
        );
        assert_eq!(
            e.value("bakend_events_dropped_total", &c),
            0.0,
            "{consumer}"
        );
    }
    assert_eq!(
        e.value("bakend_events_delivered_total", &[("consumer", "test")]),
        emitted
    );
    assert_eq!(
        e.value("bakend_events_queue_capacity", &[("consumer", "test")]),
        100_000.0
    );
    assert_eq!(
        e.value("bakend_events_queue_capacity", &[("consumer", "realtime")]),
        65_536.0
    );
    let depth = e.value("bakend_events_queue_depth", &[("consumer", "test")]);
    assert_eq!(depth, emitted);
    assert_eq!(s.take_events().len() as f64, depth);
    let (_, drained) = scrape(&s, TOKEN).await;
    assert_eq!(
        drained.value("bakend_events_queue_depth", &[("consumer", "test")]),
        0.0
    );

    // Jobs and functions by outcome.
    assert_eq!(e.value("bakend_jobs_runs_started_total", &[]), 2.0);
    assert_eq!(
        e.value("bakend_jobs_runs_total", &[("outcome", "completed")]),
        1.0
    );
    assert_eq!(
        e.value("bakend_jobs_runs_total", &[("outcome", "failed")]),
        1.0
    );
    assert_eq!(
        e.value("bakend_functions_invocations_queued_total", &[]),
        3.0
    );
    assert_eq!(
        e.value(
            "bakend_functions_invocations_total",
            &[("outcome", "dropped")]
        ),
        0.0
    );

    // The writer: the three records, the admin, four job-history writes at least.
    let writes = e.value("bakend_db_writes_total", &[]);
    let commits = e.value("bakend_db_commits_total", &[]);
    assert!(writes >= 8.0, "{writes} writes");
    assert!((1.0..=writes).contains(&commits), "{commits} commits");

    // Counters move; gauges follow the connection.
    s.create("posts", json!({"title": "hello"})).await;
    drop(ws);
    let (_, after) = scrape_until(&s, |a| a.value("bakend_realtime_connections", &[]) == 0.0).await;
    assert_eq!(after.requests("POST", "/api/:collection", "201"), 4.0);
    assert_eq!(after.value("bakend_realtime_subscriptions", &[]), 0.0);
    assert!(after.value("bakend_db_writes_total", &[]) > writes);
    s.shutdown().await;
}
