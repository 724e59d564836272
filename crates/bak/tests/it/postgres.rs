//! Starting on PostgreSQL when something is wrong: each problem is one line naming it and the
//! URL without its password, exit code 1, never a panic or the password (docs/postgres.md).

use std::path::Path;
use std::process::Stdio;

use crate::harness::{bak_in, free_port};
use crate::pg;

/// `bak start` on `url`: its exit code and stderr.
fn start_on(dir: &Path, url: &str, config: &str) -> (Option<i32>, String) {
    std::fs::write(dir.join("bakend.json"), config).unwrap();
    let out = bak_in(dir)
        .args(["start", "--port", &free_port().to_string()])
        .env("BAKEND_DATABASE", url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_clear_line(code: Option<i32>, err: &str, needles: &[&str]) {
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("postgres")).collect();
    assert_eq!(lines.len(), 1, "one line about it: {err}");
    assert!(!lines[0].contains("error: database error"), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?} in: {}", lines[0]);
    }
}

#[tokio::test]
async fn an_unreachable_server_is_one_line_with_the_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("postgres://bak:s3cret@127.0.0.1:{port}/app");
    let (code, err) = start_on(dir.path(), &url, "{}");
    assert_one_clear_line(
        code,
        &err,
        &[
            &format!("postgres://bak:***@127.0.0.1:{port}/app"),
            "cannot connect to PostgreSQL",
        ],
    );
    assert!(
        !dir.path().join("postgres:").exists()
            && std::fs::read_dir(dir.path()).unwrap().count() <= 2,
        "nothing named after the URL was created"
    );
}

#[tokio::test]
async fn a_missing_database_and_missing_privileges_are_named() {
    let Some(server) = pg::reachable_server("a_missing_database_and_missing_privileges_are_named")
    else {
        return;
    };
    let base = server.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    let host = base.rsplit_once('@').map(|(_, h)| h.to_string()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let missing = format!("bak_no_such_db_{}", std::process::id());
    let url = format!("postgres://postgres:s3cret@{host}/{missing}");
    let (code, err) = start_on(dir.path(), &url, "{}");
    assert_one_clear_line(
        code,
        &err,
        &[
            &format!("postgres://postgres:***@{host}/{missing}"),
            &format!("database \"{missing}\" does not exist"),
        ],
    );

    // A role that may log in but not create anything.
    let role = format!("bak_t_noperm_{}", std::process::id());
    pg::admin_sql(
        &server,
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
    );
    let url = format!("postgres://{role}:s3cret@{host}/postgres");
    let (code, err) = start_on(dir.path(), &url, r#"{"postgres": {"schema": "bak_t_app"}}"#);
    pg::admin_sql(&server, &format!("DROP ROLE IF EXISTS {role}"));
    assert_one_clear_line(
        code,
        &err,
        &[
            &format!("postgres://{role}:***@{host}/postgres"),
            "schema \"bak_t_app\"",
            "permission denied",
        ],
    );
}
