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

/// Whether the browser tests can run here. When something is missing: a skip message (and
/// `false`), or a failure when `BAKEND_REQUIRE_BROWSER=1` (as in `.ci/run`).
pub(crate) fn browser_available(root: &Path, what: &str) -> bool {
    let Some(missing) = missing_prerequisite(root) else {
        return true;
    };
    let required = std::env::var("BAKEND_REQUIRE_BROWSER").as_deref() == Ok("1");
    assert!(
        !required,
        "{what} required (BAKEND_REQUIRE_BROWSER=1) but {missing}"
    );
    eprintln!("{what} skipped: {missing} (set BAKEND_REQUIRE_BROWSER=1 to require it)");
    false
}

/// What a `node` script printed, and how it ended.
pub(crate) struct NodeRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `node <args>` in `tests/browser` and waits for it: the scripts stop themselves, and
/// `backstop` is the limit after which the test fails (the child is killed).
pub(crate) async fn run_node(
    root: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, String)],
    backstop: Duration,
) -> NodeRun {
    let child = tokio::process::Command::new("node")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(backstop, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish within {backstop:?}"))
        .expect("wait for node");
    let run = NodeRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("{}", run.stdout);
    run
}

impl NodeRun {
    /// Fails the test unless the script exited 0 and printed `passed`, with everything
    /// that helps: its output and the server's.
    pub fn assert_passed(&self, passed: &str, bak: &BakProcess) {
        assert!(
            self.status.success() && self.stdout.contains(passed),
            // The script's stderr (which ends with the failure) last: a truncated log keeps it.
            "node script failed ({}):\n--- stdout ---\n{}\n--- bak stderr ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            bak.stderr(),
            self.stderr
        );
    }
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
    if !browser_available(&root, "browser test") {
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
    // demo.mjs stops itself after 60 s; 120 s is the backstop.
    let script = root.join("tests/browser/demo.mjs");
    let url = bak.url();
    let run = run_node(
        &root,
        &[
            script.as_os_str(),
            url.as_ref(),
            client_html.as_os_str(),
            screenshot.as_os_str(),
        ],
        &[],
        Duration::from_secs(120),
    )
    .await;
    run.assert_passed("browser demo passed", &bak);
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
    let script = root.join("tests/browser/resume-node.mjs");
    let client = root.join("examples/realtime-demo/resume.js");
    let url = bak.url();
    let run = run_node(
        &root,
        &[
            "--experimental-websocket".as_ref(),
            script.as_os_str(),
            url.as_ref(),
            client.as_os_str(),
        ],
        &[],
        Duration::from_secs(60),
    )
    .await;
    run.assert_passed("passed", &bak);
}

/// `examples/live-tasks/index.html` in headless Chromium: one filtered subscription with a
/// snapshot keeps "open tasks of project X" equal to the REST list while tasks are completed,
/// reopened, moved and reassigned, and across a dropped connection (resumed with `since`).
/// The script is `tests/browser/live-tasks.mjs`.
#[tokio::test]
async fn live_tasks_page_in_headless_chromium() {
    let root = repo_root();
    if !browser_available(&root, "browser test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("live-tasks");
    copy_project(&root.join("examples/live-tasks"), &project);
    let mut bak = BakProcess::spawn(&project, &[]);
    bak.wait_ready().await;
    let script = root.join("tests/browser/live-tasks.mjs");
    let page = project.join("index.html");
    let url = bak.url();
    let run = run_node(
        &root,
        &[script.as_os_str(), url.as_ref(), page.as_os_str()],
        &[],
        Duration::from_secs(120),
    )
    .await;
    run.assert_passed("live tasks passed", &bak);
}
