//! The `bak` command line, run as a real process.

use std::process::Stdio;

fn bak(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    crate::harness::bak_in(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn version_help_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = bak(&["version"], dir.path());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        bakend_core::VERSION
    );

    let out = bak(&["--help"], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("start"));

    let out = bak(&["start", "--help"], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--port"));

    let out = bak(&[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));

    let out = bak(&["nope"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    let out = bak(&["start", "--port", "80x"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid --port: 80x"));
    assert!(!dir.path().join("bakend.db").exists());
}

#[test]
fn init_creates_a_project_and_refuses_a_non_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = bak(&["init", "myapp"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("myapp");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Created Bakend project at {}", project.display())
    );
    for sub in ["collections", "functions", "jobs"] {
        assert!(project.join(sub).is_dir());
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("bakend.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["port"], 8080);
    assert!(cfg["auth"]["jwtSecret"].as_str().unwrap().len() >= 32);
    assert!(
        std::fs::read_to_string(project.join(".gitignore"))
            .unwrap()
            .contains("bakend.db")
    );
    assert!(
        std::fs::read_to_string(project.join("README.md"))
            .unwrap()
            .starts_with("# myapp")
    );

    let out = bak(&["init", "myapp"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Directory is not empty"));
}

#[tokio::test]
async fn json_log_format_prints_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bak = crate::harness::BakProcess::spawn(dir.path(), &["--log-format", "json"]);
    bak.wait_ready().await;
    bak.signal(libc::SIGTERM);
    assert!(bak.wait_exit().await.success());
    let err = bak.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 2, "{err}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string());
    }
    assert!(err.contains("\"message\":\"Shutting down\""));
}

#[tokio::test]
async fn a_taken_port_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = crate::harness::BakProcess::spawn(dir.path(), &[]);
    first.wait_ready().await;
    let other = tempfile::tempdir().unwrap();
    let out = crate::harness::bak_in(other.path())
        .args(["start", "--port", &first.port.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Failed to start server. Is port {} in use?",
            first.port
        )),
        "{err}"
    );
}
