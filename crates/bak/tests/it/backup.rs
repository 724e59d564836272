//! `bak backup create` against a running server that keeps writing, and `bak backup restore`
//! into a fresh folder: integrity, every record committed before the backup began, the stored
//! files byte for byte; refusals (existing data, running server, damaged archive).

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{BakProcess, write_collections};

fn bak(dir: &Path, args: &[&str]) -> Output {
    crate::harness::bak_in(dir)
        .args(args)
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
    let on_postgres = crate::pg::server_url().is_some();
    if on_postgres {
        assert!(
            text(&out.stdout).starts_with("Backup restored into PostgreSQL: 1 collection(s), "),
            "{}",
            text(&out.stdout)
        );
    } else {
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
    }
    let restored: std::collections::HashSet<String> = crate::harness::with_project_db(f, |c| {
        c.prepare("SELECT id FROM posts")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    });
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

    // The restored project serves the data, its kept row count taken with the rows.
    let mut restored_server = BakProcess::spawn(f, &[]);
    restored_server.wait_ready().await;
    let list: Value = http
        .get(format!("{}/api/posts?perPage=1", restored_server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalItems"], json!(restored.len()));
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
    if !on_postgres {
        std::fs::write(f.join("bakend.db-wal"), b"stale").unwrap();
        std::fs::write(f.join("bakend.db-shm"), b"stale").unwrap();
    }
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
    assert!(!restored_anything(f), "nothing restored");
    // Not a backup at all.
    std::fs::write(f.join("junk.tar.gz"), b"junk").unwrap();
    let out = bak(f, &["backup", "restore", "junk.tar.gz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!restored_anything(f));
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

/// Whether a restore into the project in `dir` wrote anything: its SQLite file, or data in its
/// PostgreSQL database.
fn restored_anything(dir: &Path) -> bool {
    if crate::pg::server_url().is_none() {
        return dir.join("bakend.db").exists();
    }
    crate::harness::with_project_db(dir, |c| bakend_store::db::copy::holds_data(c).unwrap())
}

/// An archive's members (name, content), in order.
type Members = Vec<(String, Vec<u8>)>;

/// The members of a `.tar.gz`, in order.
fn read_members(path: &Path) -> Members {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Writes members as `bak backup create` does (honest tar headers: each header gives the
/// member's real size).
fn write_members(path: &Path, members: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// A copy of `members` with the manifest (the last member) changed by `edit`.
fn with_manifest(members: &[(String, Vec<u8>)], edit: impl FnOnce(&mut Value)) -> Members {
    let mut out = members.to_vec();
    let (name, bytes) = out.last_mut().unwrap();
    assert_eq!(name, "manifest.json");
    let mut m: Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut m);
    *bytes = serde_json::to_vec_pretty(&m).unwrap();
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bakend-restore-"))
        .collect()
}

/// Issue 14 #8: restore checks the archive against its manifest and the free space against
/// the declared sizes before it writes anything, and refuses forgeries with a clear error and
/// the existing data untouched.
#[test]
fn forged_archives_are_refused_and_the_existing_data_is_untouched() {
    if crate::pg::skip_on_postgres(
        "forged_archives_are_refused_and_the_existing_data_is_untouched",
        "the archive's database is compared byte for byte with the project's SQLite file",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), "{}").unwrap();
    write_collections(
        d,
        &[json!({"name": "posts", "fields": [{"name": "t", "type": "string"}]})],
    );
    assert!(bak(d, &["migrate", "apply"]).status.success());
    std::fs::create_dir_all(d.join("storage/files")).unwrap();
    std::fs::write(d.join("storage/files/fil_small"), b"twenty bytes of data").unwrap();
    let out = bak(d, &["backup", "create", "--output", "b.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let good = read_members(&d.join("b.tar.gz"));
    let names: Vec<&str> = good.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bakend.db", "storage/files/fil_small", "manifest.json"]
    );

    // The target: a project restored from the good backup, plus a file of its own.
    let target = tempfile::tempdir().unwrap();
    let f = target.path();
    std::fs::write(f.join("bakend.json"), "{}").unwrap();
    std::fs::copy(d.join("b.tar.gz"), f.join("good.tar.gz")).unwrap();
    let out = bak(f, &["backup", "restore", "good.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(f.join("storage/mine.txt"), b"keep me").unwrap();
    let db_before = sha(&std::fs::read(f.join("bakend.db")).unwrap());

    let mut bigger_db = good.clone();
    bigger_db[0].1.extend(std::iter::repeat_n(0u8, 1 << 20));
    let mut bomb = good.clone();
    // 64 MiB of zeros where the manifest declares 20 bytes: the archive stays tiny.
    bomb[1].1 = vec![0u8; 64 << 20];
    let mut unlisted = good.clone();
    unlisted.insert(2, ("storage/files/fil_extra".into(), b"extra".to_vec()));
    let cases: Vec<(&str, Members, String)> = vec![
        (
            "database larger than declared",
            bigger_db,
            "The backup's bakend.db is larger than its manifest declares".into(),
        ),
        (
            "storage file larger than declared",
            bomb,
            "The backup's storage/files/fil_small is larger than its manifest declares (20 bytes)"
                .into(),
        ),
        (
            "a petabyte declared",
            with_manifest(&good, |m| m["database"]["size"] = json!(1u64 << 50)),
            "Not enough free space to restore: the backup needs".into(),
        ),
        (
            "a member the manifest does not list",
            unlisted,
            "The backup holds storage/files/fil_extra, which its manifest does not list".into(),
        ),
        (
            "a member listed but missing",
            good[..1]
                .iter()
                .chain(&good[2..])
                .cloned()
                .collect::<Vec<_>>(),
            "The backup is missing storage/files/fil_small".into(),
        ),
        (
            "a member after the manifest",
            good.iter()
                .cloned()
                .chain([("storage/files/late".to_string(), b"late".to_vec())])
                .collect(),
            "The archive holds storage/files/late after its manifest.json".into(),
        ),
    ];
    for (what, members, message) in cases {
        write_members(&f.join("forged.tar.gz"), &members);
        let archive_size = std::fs::metadata(f.join("forged.tar.gz")).unwrap().len();
        let out = bak(f, &["backup", "restore", "forged.tar.gz", "--force"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(&message), "{what}: {err}");
        assert_eq!(
            sha(&std::fs::read(f.join("bakend.db")).unwrap()),
            db_before,
            "{what}: the database is untouched"
        );
        assert_eq!(
            std::fs::read(f.join("storage/mine.txt")).unwrap(),
            b"keep me",
            "{what}: the storage folder is untouched"
        );
        assert!(leftovers(f).is_empty(), "{what}: {:?}", leftovers(f));
        eprintln!("{what} ({archive_size} bytes): {}", err.trim());
    }

    // The genuine archive still restores over it.
    let out = bak(f, &["backup", "restore", "good.tar.gz", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!f.join("storage/mine.txt").exists());
}

/// A legitimate, highly compressible backup (tens of MiB of zeros in the database and in a
/// stored file, an archive of a few hundred KiB) restores: no ratio or size cap.
#[test]
fn a_legitimate_very_compressible_backup_restores() {
    if crate::pg::skip_on_postgres(
        "a_legitimate_very_compressible_backup_restores",
        "it pads the project's SQLite file with a table of zeros",
    ) {
        return;
    }
    const DB_PADDING: usize = 40 << 20;
    const FILE_SIZE: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bakend.json"), "{}").unwrap();
    write_collections(
        d,
        &[json!({"name": "posts", "fields": [{"name": "t", "type": "string"}]})],
    );
    assert!(bak(d, &["migrate", "apply"]).status.success());
    let conn = rusqlite::Connection::open(d.join("bakend.db")).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE padding (b BLOB); INSERT INTO padding VALUES (zeroblob({DB_PADDING}));"
    ))
    .unwrap();
    drop(conn);
    std::fs::create_dir_all(d.join("storage/files")).unwrap();
    std::fs::write(d.join("storage/files/fil_zeros"), vec![0u8; FILE_SIZE]).unwrap();
    let out = bak(d, &["backup", "create", "--output", "big.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = d.join("big.tar.gz");
    let archive_size = std::fs::metadata(&archive).unwrap().len();
    let expanded = (DB_PADDING + FILE_SIZE) as u64;
    assert!(
        archive_size * 200 < expanded,
        "the archive is {archive_size} bytes for {expanded}"
    );

    let fresh = tempfile::tempdir().unwrap();
    let f = fresh.path();
    std::fs::write(f.join("bakend.json"), "{}").unwrap();
    let start = std::time::Instant::now();
    let out = bak(f, &["backup", "restore", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!(
        "restored {archive_size} bytes expanding to {expanded} in {:?}",
        start.elapsed()
    );
    let conn = rusqlite::Connection::open(f.join("bakend.db")).unwrap();
    let len: i64 = conn
        .query_row("SELECT length(b) FROM padding", [], |r| r.get(0))
        .unwrap();
    assert_eq!(len, DB_PADDING as i64);
    assert_eq!(
        std::fs::metadata(f.join("storage/files/fil_zeros"))
            .unwrap()
            .len(),
        FILE_SIZE as u64
    );
}

/// `bak` in `dir` on the database `db` (a SQLite path or a PostgreSQL URL), whatever store the
/// suite runs on.
fn bak_on(dir: &Path, db: &str, args: &[&str]) -> Output {
    crate::harness::bak_in(dir)
        .env("BAKEND_DATABASE", db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

const MOVE_ADMIN: &str = "root@example.com";

/// A project with `posts` (a field of each kind the move must carry) and a job.
fn move_project() -> tempfile::TempDir {
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
            {"name": "n", "type": "integer"},
            {"name": "score", "type": "float"},
            {"name": "done", "type": "boolean"},
            {"name": "user_id", "type": "relation", "collection": "users"}
        ], "permissions": {"create": "authenticated", "read": "public", "update": "owner", "delete": "owner"},
           "indexes": [{"fields": ["n"]}]})],
    );
    std::fs::create_dir_all(d.join("jobs")).unwrap();
    std::fs::write(
        d.join("jobs/tidy.ts"),
        r#"export const schedule = "@yearly"; export default async () => {};"#,
    )
    .unwrap();
    dir
}

async fn serve(dir: tempfile::TempDir, db: &str) -> crate::harness::TestServer {
    crate::harness::TestServer::start_in_with_env(
        dir,
        &[("BAKEND_DATABASE", db), ("BAKEND_ADMIN_EMAIL", MOVE_ADMIN)],
    )
    .await
}

/// What a client sees of a project: every post, the accounts and files an admin lists, the
/// job's history.
async fn visible_state(s: &crate::harness::TestServer, admin: &str) -> Value {
    let get = |path: &'static str| async move {
        let r = s.call(reqwest::Method::GET, path, Some(admin), None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        r.json()
    };
    json!({
        "posts": get("/api/posts?perPage=500").await,
        "users": get("/api/admin/users").await,
        "files": get("/api/admin/storage").await,
        "runs": get("/api/admin/jobs/tidy/runs").await,
    })
}

/// The seq of the event a new post causes, seen on a socket subscribed to `posts.*`.
async fn seq_of_next_post(
    s: &crate::harness::TestServer,
    token: &str,
    title: &str,
) -> (u64, String) {
    let (mut ws, connected) = crate::ws::Ws::connect(&s.ws_url()).await;
    let epoch = connected["epoch"].as_str().unwrap().to_string();
    ws.subscribe("posts.*").await;
    let r = s
        .call(
            reqwest::Method::POST,
            "/api/posts",
            Some(token),
            Some(&json!({"title": title})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let event = ws.next().await;
    assert_eq!(event["event"]["payload"]["title"], title, "{event}");
    (event["event"]["seq"].as_u64().unwrap(), epoch)
}

/// A SQLite project moves to PostgreSQL — `bak backup create` on SQLite, `bak backup restore`
/// into a project whose database is PostgreSQL — and back the same way (the backup of a
/// running PostgreSQL server). Records (values of every type, ids, times), accounts and their
/// passwords, the JWT secret (tokens stay valid), stored files and their metadata, the job
/// history and the journal (its events and seqs; the epoch is new) all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_moves_from_sqlite_to_postgresql_and_back() {
    let Some(pg) =
        crate::pg::reachable_server("a_project_moves_from_sqlite_to_postgresql_and_back")
    else {
        return;
    };
    let pg_db = crate::pg::new_database(&pg);

    // 1. On SQLite: accounts, records (one updated, one deleted), a file, a job run, events.
    let a = move_project();
    let a_db = a.path().join("bakend.db").to_string_lossy().into_owned();
    let s = serve(a, &a_db).await;
    let admin = s.register(MOVE_ADMIN).await;
    let user = s.register("u@example.com").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let body = json!({"title": format!("p{i}"), "n": i, "score": i as f64 / 3.0, "done": i % 2 == 0, "user_id": user.id});
        ids.push(
            s.create_as(&user, "posts", body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let r = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/posts/{}", ids[1]),
            Some(&user.token),
            Some(&json!({"title": "edited"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/posts/{}", ids[2]),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let bytes: Vec<u8> = (0..50_000u32).map(|k| (k % 251) as u8).collect();
    let uploaded = s.upload_as(&user, "data.bin", bytes.clone()).await;
    let file_id = uploaded["id"].as_str().unwrap().to_string();
    let run = s
        .call(
            reqwest::Method::POST,
            "/api/admin/jobs/tidy/run",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(run.status, 200, "{}", run.text);
    let (last_seq, epoch) = seq_of_next_post(&s, &user.token, "last on sqlite").await;
    let before = visible_state(&s, &admin.token).await;
    assert_eq!(before["posts"]["totalItems"], 40);
    let a = s.shutdown().await;
    let out = bak_on(
        a.path(),
        &a_db,
        &["backup", "create", "--output", "move.tar.gz"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = a.path().join("move.tar.gz");

    // 2. Restored into a project on PostgreSQL.
    let b = move_project();
    let out = bak_on(
        b.path(),
        &pg_db,
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Backup restored into PostgreSQL: 1 collection(s), 40 record(s), {last_seq} journaled event(s).\n"
        )
    );
    let s = serve(b, &pg_db).await;
    assert_eq!(
        visible_state(&s, &admin.token).await,
        before,
        "the same data, seen through the API"
    );
    // Tokens issued on SQLite still work (the JWT secret moved), and so do passwords (below).
    assert_eq!(
        s.call(
            reqwest::Method::GET,
            "/api/auth/me",
            Some(&user.token),
            None
        )
        .await
        .status,
        200
    );
    let r = reqwest::Client::new()
        .get(format!("{}/api/storage/{file_id}", s.url))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha(&r.bytes().await.unwrap()), sha(&bytes));
    // The journal moved with its seqs: a new history (epoch) that continues the numbering and
    // still replays the copied events.
    let (seq, new_epoch) = seq_of_next_post(&s, &user.token, "first on postgres").await;
    assert_ne!(new_epoch, epoch, "a restore starts a new epoch");
    assert_eq!(seq, last_seq + 1);
    let (mut ws, _) = crate::ws::Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": epoch, "seq": last_seq - 1}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let resumed = ws.next().await;
    assert_eq!(
        resumed["recovered"], false,
        "the old epoch is not resumable: {resumed}"
    );
    let (mut ws, _) = crate::ws::Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "channel": "posts.*", "since": {"epoch": new_epoch, "seq": last_seq - 1}}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let replayed = ws.next().await;
    assert_eq!(replayed["event"]["seq"], last_seq, "{replayed}");
    assert_eq!(replayed["event"]["payload"]["title"], "last on sqlite");
    let login = s
        .post(
            "/api/auth/login",
            &json!({"email": "u@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let on_pg = visible_state(&s, &admin.token).await;

    // 3. Back to SQLite: a backup of the running PostgreSQL server, restored into a SQLite
    //    project.
    let out = bak_on(
        s.dir.path(),
        &pg_db,
        &["backup", "create", "--output", "back.tar.gz"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = s.dir.path().join("back.tar.gz");
    let _b = s.shutdown().await;
    let c = move_project();
    let c_db = c.path().join("bakend.db").to_string_lossy().into_owned();
    let out = bak_on(
        c.path(),
        &c_db,
        &["backup", "restore", back.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = serve(c, &c_db).await;
    assert_eq!(visible_state(&s, &admin.token).await, on_pg);
    let (seq, _) = seq_of_next_post(&s, &user.token, "first on sqlite again").await;
    assert_eq!(
        seq,
        last_seq + 3,
        "after the post and the login on PostgreSQL"
    );
    s.shutdown().await;
}
