//! The admin dashboard at `/_/` (docs/dashboard.md): its files and headers over plain HTTP, the
//! `dashboard.enabled` switch, and the whole UI in headless Chromium against the real `bak`
//! binary — one server and one browser for every section (`tests/browser/dashboard.mjs`),
//! with a screenshot per section in `target/dashboard/`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::browser::{browser_available, repo_root, run_node};
use crate::harness::{BakProcess, TestServer};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = no_redirects().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The headers every dashboard file carries.
fn assert_secured(r: &reqwest::Response) {
    let csp = header(r, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(r, "x-frame-options"), "DENY");
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn dashboard_files_are_served_with_their_headers() {
    let s = TestServer::start(&[]).await;
    let base = &s.url;

    let index = get(&format!("{base}/_/"), &[]).await;
    assert_eq!(index.status(), 200);
    assert_secured(&index);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let etag = header(&index, "etag").to_string();
    let html = index.text().await.unwrap();
    assert!(
        html.contains(r#"<script type="module" src="/_/js/main.js"></script>"#),
        "{html}"
    );
    assert!(!html.contains("<script>"), "inline script in index.html");

    // Client-side routes get the same page; files get their own type.
    for route in ["/_/collections/posts/schema", "/_/users", "/_/index.html"] {
        let r = get(&format!("{base}{route}"), &[]).await;
        assert_eq!(r.status(), 200, "{route}");
        assert_eq!(r.text().await.unwrap(), html, "{route}");
    }
    for (path, ctype) in [
        ("/_/js/main.js", "text/javascript; charset=utf-8"),
        ("/_/app.css", "text/css; charset=utf-8"),
        ("/_/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), ctype, "{path}");
        assert_secured(&r);
    }

    // Unknown files are 404 in the usual envelope; other methods 405.
    let r = s.get("/_/js/nope.js").await;
    r.assert_error(404, "not_found", "Not found");
    let r = s.post("/_/", &json!({})).await;
    r.assert_error(405, "method_not_allowed", "Method not allowed");

    // `/_` → `/_/`; `/_x` is not the dashboard.
    let r = get(&format!("{base}/_"), &[]).await;
    assert_eq!(r.status(), 308);
    assert_eq!(header(&r, "location"), "/_/");
    s.get("/_x")
        .await
        .assert_error(404, "not_found", "Not found");

    // Revalidation.
    let r = get(&format!("{base}/_/"), &[("if-none-match", etag.as_str())]).await;
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());

    // gzip when asked for, the same bytes once decoded, and its own validator.
    let r = get(&format!("{base}/_/js/main.js"), &[]).await;
    let plain = r.bytes().await.unwrap();
    let r = get(
        &format!("{base}/_/js/main.js"),
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(header(&r, "vary"), "Accept-Encoding");
    let gz_etag = header(&r, "etag").to_string();
    let zipped = r.bytes().await.unwrap();
    assert!(zipped.len() < plain.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    let r = get(
        &format!("{base}/_/js/main.js"),
        &[
            ("accept-encoding", "gzip"),
            ("if-none-match", gz_etag.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status(), 304);

    // HEAD: the headers, no body.
    let r = no_redirects()
        .head(format!("{base}/_/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_disabled_dashboard_is_not_served() {
    let s = TestServer::start_with_config(&[], r#"{"dashboard": {"enabled": false}}"#).await;
    for path in ["/_/", "/_", "/_/js/main.js", "/_/collections"] {
        s.get(path)
            .await
            .assert_error(404, "not_found", "Not found");
    }
    let s = TestServer::start_with_env(&[], "{}", &[("BAKEND_DASHBOARD_ENABLED", "false")]).await;
    s.get("/_/")
        .await
        .assert_error(404, "not_found", "Not found");
}

/// A project with something in every section: a collection with every field type and keys the
/// form does not show, a function that fails, a job to run by hand. Access tokens live 20 s, so
/// the page must refresh its session during the run.
fn write_project(dir: &Path) {
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "bakend.json",
        r#"{"auth": {"rateLimit": {"attempts": 0}, "accessTokenTtl": "20s"}}"#,
    );
    w(
        "collections/posts.json",
        &json!({
            "name": "posts",
            "x-ui": {"icon": "pen"},
            "fields": [
                {"name": "title", "type": "string", "required": true, "max": 200},
                {"name": "body", "type": "text"},
                {"name": "views", "type": "integer", "x-hint": "counter"},
                {"name": "published", "type": "boolean"},
                {"name": "meta", "type": "json"},
                {"name": "link", "type": "string"},
                {"name": "cover", "type": "file"},
                {"name": "author", "type": "relation", "collection": "users"},
                {"name": "when", "type": "datetime"}
            ],
            "indexes": [{"fields": ["title"]}],
            "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}
        })
        .to_string(),
    );
    w(
        "collections/boom.json",
        &json!({
            "name": "boom",
            "fields": [{"name": "note", "type": "string"}],
            "permissions": {"create": "public", "read": "public"}
        })
        .to_string(),
    );
    w(
        "functions/boom.ts",
        "import { onCreate } from \"bakend/functions\";\n\
         onCreate(\"boom\", ({ record }) => {\n  throw new Error(\"boom failed for \" + record.note);\n});\n",
    );
    w(
        "jobs/tick.ts",
        "export const schedule = \"0 0 1 1 *\";\n\
         export default async ({ logger, job }) => {\n  logger.info(`tick ran ${job.runId}`);\n};\n",
    );
}

#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let root = repo_root();
    if !browser_available(&root, "dashboard browser test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path());
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    // On PostgreSQL a second server joins the same database: the overview then lists both
    // nodes, and job runs name theirs.
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut second = None;
    if let Some(url) = crate::pg::database_for(dir.path()) {
        // The script runs `bak admin create` in the project: on its database.
        env.push(("BAKEND_DATABASE", url));
        env.push(("DASHBOARD_NODES", "2".into()));
        let mut p = BakProcess::spawn(dir.path(), &[]);
        p.wait_ready().await;
        second = Some(p);
    }

    let shots = root.join("target/dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    // dashboard.mjs stops itself after 240 s; 300 s is the backstop.
    let script = root.join("tests/browser/dashboard.mjs");
    let url = bak.url();
    let bin = std::path::PathBuf::from(crate::harness::bak_bin());
    let run = run_node(
        &root,
        &[
            script.as_os_str(),
            url.as_ref(),
            dir.path().as_os_str(),
            bin.as_os_str(),
            shots.as_os_str(),
        ],
        &env,
        Duration::from_secs(300),
    )
    .await;
    run.assert_passed("dashboard test passed", &bak);
    drop(second);
    let shots_taken = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(
        shots_taken >= 15,
        "only {shots_taken} screenshots in {}",
        shots.display()
    );
}
