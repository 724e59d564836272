//! `bak backup create` against a running server that keeps writing, and `bak backup restore`
//! into a fresh folder: integrity, every record committed before the backup began, the stored
//! files byte for byte; refusals (existing data, running server, damaged archive).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{BakProcess, bak_bin, write_collections};

fn bak(dir: &Path, args: &[&str]) -> Output {
    Command::new(bak_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_busy_server_restores_everything_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bakend.json"),
        r#"{"auth": {"rateLimit": {"attempts": 0}}}"#,
    )
    .unwrap();
    write_collections(
        d,
        &[json!({"name": "posts", "fields": [
            {"name": "title", "type": "string", "required": true},
            {"name": "n", "type": "integer"}
        ]})],
    );
    let mut server = BakProcess::spawn(d, &[]);
    server.wait_ready().await;
    let http = reqwest::Client::new();
    let url = server.url();

    // Some stored files.
    let reg: Value = http
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"email": "u@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["token"].as_str().unwrap().to_string();
    let mut uploads = Vec::new();
    for i in 0..5u8 {
        let bytes: Vec<u8> = (0..20_000u32)
            .map(|k| (k as u8).wrapping_mul(i + 1))
            .collect();
        let form = Form::new().part(
            "file",
            Part::bytes(bytes.clone()).file_name(format!("f{i}.bin")),
        );
        let r = http
            .post(format!("{url}/api/storage/upload"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let meta: Value = r.json().await.unwrap();
        uploads.push((meta["id"].as_str().unwrap().to_string(), sha(&bytes)));
    }

    // Writers create records without pause, before, during and after the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (stop, acked, url) = (stop.clone(), acked.clone(), url.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = http
                    .post(format!("{url}/api/posts"))
                    .json(&json!({"title": format!("w{w}-{i}"), "n": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_string());
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every record acknowledged by now was committed before the backup began.
    let before: Vec<String> = acked.lock().unwrap().clone();
    assert!(before.len() > 20, "the writers are writing");
    let dd = d.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        bak(&dd, &["backup", "create", "--output", "backups/b1.tar.gz"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = d.join("backups/b1.tar.gz");
    assert_eq!(
        text(&out.stdout),
        format!("Backup created: {}\n", archive.display())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let total = acked.lock().unwrap().len();
    assert!(total > before.len(), "writes went on during the backup");

    // Restoring over a project whose server runs is refused.
    let refused = bak(d, &["backup", "restore", "backups/b1.tar.gz", "--force"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("Stop it first"),
        "{}",
        text(&refused.stderr)
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().await.success());

    // Restore into a fresh folder.
    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path();
    std::fs::write(f.join("bakend.json"), "{}").unwrap();
    let out = bak(f, &["backup", "restore", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Backup restored.\n");
    assert!(
        !f.join("bakend.db-wal").exists()
            || std::fs::metadata(f.join("bakend.db-wal")).unwrap().len() == 0
    );
    let conn = rusqlite::Connection::open(f.join("bakend.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let restored: std::collections::HashSet<String> = conn
        .prepare("SELECT id FROM posts")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let missing: Vec<&String> = before.iter().filter(|id| !restored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} committed records missing",
        missing.len()
    );
    assert!(restored.len() <= total);
    for (id, digest) in &uploads {
        let bytes = std::fs::read(f.join("storage/files").join(id)).unwrap();
        assert_eq!(&sha(&bytes), digest, "file {id}");
    }
    drop(conn);

    // The restored project serves the data.
    let mut restored_server = BakProcess::spawn(f, &[]);
    restored_server.wait_ready().await;
    let r = http
        .get(format!("{}/api/posts/{}", restored_server.url(), before[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!(
            "{}/api/storage/{}",
            restored_server.url(),
            uploads[0].0
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha(&r.bytes().await.unwrap()), uploads[0].1);
    restored_server.signal(libc::SIGTERM);
    assert!(restored_server.wait_exit().await.success());

    // Restoring over existing data needs --force; with it, stale -wal/-shm are removed.
    let again = bak(f, &["backup", "restore", archive.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains(
            "Target database or storage already exists. Re-run with --force to overwrite."
        ),
        "{}",
        text(&again.stderr)
    );
    std::fs::write(f.join("bakend.db-wal"), b"stale").unwrap();
    std::fs::write(f.join("bakend.db-shm"), b"stale").unwrap();
    std::fs::write(f.join("storage/stray.txt"), b"x").unwrap();
    let out = bak(
        f,
        &["backup", "restore", archive.to_str().unwrap(), "--force"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!f.join("bakend.db-wal").exists());
    assert!(!f.join("bakend.db-shm").exists());
    assert!(
        !f.join("storage/stray.txt").exists(),
        "storage replaced as a whole"
    );
}

#[test]
fn damaged_or_foreign_archives_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), "{}").unwrap();
    write_collections(
        d,
        &[json!({"name": "posts", "fields": [{"name": "t", "type": "string"}]})],
    );
    assert!(bak(d, &["migrate", "apply"]).status.success());
    let out = bak(d, &["backup", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = text(&out.stdout)
        .trim()
        .strip_prefix("Backup created: ")
        .unwrap()
        .to_string();
    assert!(
        path.contains("bakend-backup-") && path.ends_with(".tar.gz"),
        "{path}"
    );

    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path();
    std::fs::write(f.join("bakend.json"), "{}").unwrap();
    // Flip bytes in the middle of the archive.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(f.join("bad.tar.gz"), &bytes).unwrap();
    let out = bak(f, &["backup", "restore", "bad.tar.gz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!f.join("bakend.db").exists(), "nothing restored");
    // Not a backup at all.
    std::fs::write(f.join("junk.tar.gz"), b"junk").unwrap();
    let out = bak(f, &["backup", "restore", "junk.tar.gz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!f.join("bakend.db").exists());
    let out = bak(f, &["backup", "restore", "nope.tar.gz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Backup archive not found"),
        "{}",
        text(&out.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir(f)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bakend-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The good archive restores.
    std::fs::copy(&path, f.join("good.tar.gz")).unwrap();
    let out = bak(f, &["backup", "restore", "good.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        bak(f, &["migrate", "status"]).status.code() == Some(1),
        "posts is db_only here"
    );
}
