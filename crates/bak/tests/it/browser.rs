//! `examples/realtime-demo/client.html` driven in headless Chromium against the real `bak`
//! binary: connect, create a post over REST, see its event in the page; register, reconnect with
//! `?token=`, create an owner-only note, see its event. The script is `tests/browser/demo.mjs`
//! (playwright-core with the system Chromium); it saves `target/realtime-demo.png`.
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci --prefix tests/browser`. When one is missing the
//! test is skipped with a message, unless `BAKEND_REQUIRE_BROWSER=1` (as in `.ci/run`), where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::BakProcess;

const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// What is missing to run the browser test, if anything.
pub(crate) fn missing_prerequisite(root: &Path) -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} not found (apt-get install chromium)"));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        return Some("node not found on PATH".into());
    }
    let pw = root.join("tests/browser/node_modules/playwright-core/package.json");
    if !pw.exists() {
        return Some(format!(
            "{} missing (npm ci --prefix tests/browser)",
            pw.parent().unwrap().display()
        ));
    }
    None
}

/// Copies the example project, leaving out anything a local run may have left in it.
fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("bakend.db") || name == "storage" || name.ends_with(".log") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_project(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn realtime_demo_page_in_headless_chromium() {
    let root = repo_root();
    let required = std::env::var("BAKEND_REQUIRE_BROWSER").as_deref() == Ok("1");
    if let Some(missing) = missing_prerequisite(&root) {
        if required {
            panic!("browser test required (BAKEND_REQUIRE_BROWSER=1) but {missing}");
        }
        eprintln!("browser test skipped: {missing} (set BAKEND_REQUIRE_BROWSER=1 to require it)");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("realtime-demo");
    copy_project(&root.join("examples/realtime-demo"), &project);
    let mut bak = BakProcess::spawn(&project, &[]);
    bak.wait_ready().await;

    let client_html = project.join("client.html");
    let screenshot = root.join("target/realtime-demo.png");
    let _ = std::fs::remove_file(&screenshot);

    let child = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/demo.mjs"))
        .arg(bak.url())
        .arg(&client_html)
        .arg(&screenshot)
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    // demo.mjs stops itself after 60 s; this is the backstop.
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("node tests/browser/demo.mjs did not finish within 120 s")
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser demo failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- bak stderr ---\n{}",
        out.status,
        bak.stderr()
    );
    assert!(stdout.contains("browser demo passed"), "{stdout}");
    let size = std::fs::metadata(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()))
        .len();
    assert!(size > 1000, "screenshot is only {size} bytes");
    println!("screenshot: {} ({size} bytes)", screenshot.display());
}

/// The reference resuming client in Node (the same module the page uses).
#[tokio::test]
async fn reference_resume_client_in_node() {
    let root = repo_root();
    let required = std::env::var("BAKEND_REQUIRE_BROWSER").as_deref() == Ok("1");
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        assert!(
            !required,
            "node required (BAKEND_REQUIRE_BROWSER=1) but not found"
        );
        eprintln!("node not found: resume client test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("realtime-demo");
    copy_project(&root.join("examples/realtime-demo"), &project);
    let mut bak = BakProcess::spawn(&project, &[]);
    bak.wait_ready().await;
    let child = tokio::process::Command::new("node")
        .arg("--experimental-websocket")
        .arg(root.join("tests/browser/resume-node.mjs"))
        .arg(bak.url())
        .arg(root.join("examples/realtime-demo/resume.js"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("resume-node.mjs did not finish")
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `examples/live-tasks/index.html` in headless Chromium: one filtered subscription with a
/// snapshot keeps "open tasks of project X" equal to the REST list while tasks are completed,
/// reopened, moved and reassigned, and across a dropped connection (resumed with `since`).
/// The script is `tests/browser/live-tasks.mjs`.
#[tokio::test]
async fn live_tasks_page_in_headless_chromium() {
    let root = repo_root();
    let required = std::env::var("BAKEND_REQUIRE_BROWSER").as_deref() == Ok("1");
    if let Some(missing) = missing_prerequisite(&root) {
        assert!(!required, "browser test required but {missing}");
        eprintln!("browser test skipped: {missing} (set BAKEND_REQUIRE_BROWSER=1 to require it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("live-tasks");
    copy_project(&root.join("examples/live-tasks"), &project);
    let mut bak = BakProcess::spawn(&project, &[]);
    bak.wait_ready().await;
    let child = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/live-tasks.mjs"))
        .arg(bak.url())
        .arg(project.join("index.html"))
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("node tests/browser/live-tasks.mjs did not finish within 120 s")
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("live tasks passed"),
        "live tasks page failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n--- bak stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        bak.stderr()
    );
}
