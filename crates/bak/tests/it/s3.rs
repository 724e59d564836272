//! Blobs in an S3 bucket (`storage.s3`, docs/storage.md) against a real S3 API: each test starts
//! its own `moto_server` on a free port, creates its bucket through object_store (a signed
//! request; moto answers unsigned ones oddly) and runs the real server on it over HTTP.
//!
//! Needs `moto_server` (`python3 -m pip install "moto[server]"`). Without it the tests are
//! skipped with a message, unless `BAKEND_REQUIRE_S3=1` (as in `.ci/run`), where they fail.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{BakProcess, Resp, Session, TestServer, free_port};

const MIB: usize = 1024 * 1024;
const SECRET: &str = "moto-secret-never-shown";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// A `moto_server` of this test's own, killed when dropped.
pub(crate) struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts one and waits until it answers; `None` (after saying so) when `moto_server` is not
    /// installed, a failure then if `BAKEND_REQUIRE_S3=1`.
    pub(crate) async fn start(what: &str) -> Option<Moto> {
        let port = free_port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let required = std::env::var("BAKEND_REQUIRE_S3").as_deref() == Ok("1");
                assert!(
                    !required,
                    "{what} required (BAKEND_REQUIRE_S3=1) but moto_server cannot run: {e}"
                );
                eprintln!(
                    "{what} skipped: moto_server cannot run ({e}); python3 -m pip install \"moto[server]\" (set BAKEND_REQUIRE_S3=1 to require it)"
                );
                return None;
            }
        };
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            if http
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                .is_ok()
            {
                return Some(moto);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer on {}", moto.endpoint);
    }

    /// A client of `bucket` (moto accepts any credentials).
    fn client(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("test-key")
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// Creates `bucket` (object_store has no call for it: a presigned `PUT /<bucket>/`).
    pub(crate) async fn create_bucket(&self, bucket: &str) -> AmazonS3 {
        let client = self.client(bucket);
        let url = client
            .signed_url(http::Method::PUT, &Key::from(""), Duration::from_secs(60))
            .await
            .unwrap();
        // By hand: moto wants `Content-Length: 0`, which reqwest leaves out of an empty PUT.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let mut conn = tokio::net::TcpStream::connect(&host).await.unwrap();
        let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let request = format!(
            "PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {answer}"
        );
        client
    }

    /// `storage.s3` for `bucket`.
    pub(crate) fn settings(&self, bucket: &str) -> Value {
        json!({"bucket": bucket, "endpoint": self.endpoint, "region": "us-east-1",
               "accessKeyId": "test-key", "secretAccessKey": SECRET})
    }
}

fn docs() -> Value {
    json!({"name": "docs", "fields": [{"name": "attachment", "type": "file"}],
           "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}})
}

async fn server_on(moto: &Moto, bucket: &str) -> TestServer {
    let config = json!({"auth": {"rateLimit": {"attempts": 0}},
                        "storage": {"s3": moto.settings(bucket)}});
    TestServer::start_with_config(&[docs()], &config.to_string()).await
}

async fn upload(s: &TestServer, who: &Session, name: &str, bytes: &[u8], public: bool) -> Resp {
    let mut form = Form::new().part(
        "file",
        Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    );
    if public {
        form = form.text("visibility", "public");
    }
    let r = s
        .http
        .post(format!("{}/api/storage/upload", s.url))
        .bearer_auth(&who.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    Resp::from(r).await
}

/// A download, its body as bytes.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

async fn fetch(
    s: &TestServer,
    method: Method,
    id: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> reqwest::Response {
    let mut req = s
        .http
        .request(method, format!("{}/api/storage/{id}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

async fn get(s: &TestServer, id: &str, token: Option<&str>, range: Option<&str>) -> Got {
    let r = fetch(s, Method::GET, id, token, range).await;
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

async fn get_error(s: &TestServer, id: &str, token: Option<&str>) -> Resp {
    Resp::from(fetch(s, Method::GET, id, token, None).await).await
}

/// The ids of the objects under `files/`.
async fn objects(bucket: &AmazonS3) -> Vec<String> {
    use futures_util::TryStreamExt;
    let mut ids: Vec<String> = bucket
        .list(Some(&Key::from("files")))
        .map_ok(|m| m.location.as_ref().trim_start_matches("files/").to_string())
        .try_collect()
        .await
        .unwrap();
    ids.sort();
    ids
}

fn tmp_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("storage/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_download_ranges_limit_and_delete() {
    let Some(moto) = Moto::start("s3_upload_download_ranges_limit_and_delete").await else {
        return;
    };
    let bucket = moto.create_bucket("uploads").await;
    let mut s = server_on(&moto, "uploads").await;
    let alice = s.register("alice@example.com").await;
    s.take_events();

    // A small file: one PUT; its type sniffed from the content, as on the local store.
    let r = upload(&s, &alice, "dot.png", PNG, false).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let small = r.json();
    let small_id = small["id"].as_str().unwrap().to_string();
    assert_eq!(small["mimeType"], "image/png");
    assert_eq!(small["size"], PNG.len());
    assert_eq!(objects(&bucket).await, vec![small_id.clone()]);
    let stored = bucket
        .get(&Key::from(format!("files/{small_id}")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), PNG);
    let r = get(&s, &small_id, Some(&alice.token), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PNG);
    assert_eq!(r.headers["content-type"], "image/png");
    assert_eq!(r.headers["content-length"], PNG.len().to_string().as_str());
    assert_eq!(r.headers["cache-control"], "private, no-store");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["accept-ranges"], "bytes");
    assert!(r.headers.contains_key("etag"));
    assert_eq!(get(&s, &small_id, None, None).await.status, 401);
    let r = get(&s, &small_id, Some(&alice.token), Some("bytes=1-3")).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes 1-3/{}", PNG.len()).as_str()
    );
    assert_eq!(r.body, &PNG[1..4]);

    // A 7 MiB file: a multipart upload (5 MiB + 2 MiB parts).
    let big: Vec<u8> = (0..7 * MIB).map(|i| (i % 251) as u8).collect();
    let r = upload(&s, &alice, "big.bin", &big, true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let big_id = r.json()["id"].as_str().unwrap().to_string();
    let meta = bucket
        .head(&Key::from(format!("files/{big_id}")))
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    let whole = get(&s, &big_id, None, None).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(whole.body == big);
    // Ranges, one across the parts' boundary, one from the end; past the end is 416.
    let (a, b) = (5 * MIB - 10, 5 * MIB + 9);
    let r = get(&s, &big_id, None, Some(&format!("bytes={a}-{b}"))).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes {a}-{b}/{}", big.len()).as_str()
    );
    assert_eq!(r.headers["content-length"], "20");
    assert_eq!(r.body, &big[a..=b]);
    let r = get(&s, &big_id, None, Some("bytes=-7")).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[big.len() - 7..]);
    let r = get(&s, &big_id, None, Some(&format!("bytes={}-", big.len()))).await;
    assert_eq!(r.status, 416);
    let head = fetch(&s, Method::HEAD, &big_id, None, None).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        big.len().to_string().as_str()
    );

    // Over the limit: refused while streaming, nothing left locally or in the bucket.
    let over = vec![3u8; 10 * MIB + 1];
    upload(&s, &alice, "over.bin", &over, false)
        .await
        .assert_error(400, "bad_request", "File exceeds maximum size of 10 MB");
    assert_eq!(tmp_entries(s.dir.path()), 0);
    let mut both = vec![small_id.clone(), big_id.clone()];
    both.sort();
    assert_eq!(objects(&bucket).await, both);

    // Delete: the row, then the object; the events as always.
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/storage/{big_id}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(objects(&bucket).await, vec![small_id.clone()]);
    get_error(&s, &big_id, None)
        .await
        .assert_error(404, "not_found", "File not found");
    let kinds: Vec<String> = s
        .take_events()
        .iter()
        .map(|e| e.event_type.clone())
        .filter(|t| t.starts_with("storage."))
        .collect();
    assert_eq!(
        kinds,
        ["storage.uploaded", "storage.uploaded", "storage.deleted"]
    );

    // A row whose object is gone answers 404, as a missing local blob does.
    bucket
        .delete(&Key::from(format!("files/{small_id}")))
        .await
        .unwrap();
    get_error(&s, &small_id, Some(&alice.token))
        .await
        .assert_error(404, "not_found", "File not found");
    assert_eq!(tmp_entries(s.dir.path()), 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_prune_from_the_cli_removes_orphans_in_the_bucket() {
    let Some(moto) = Moto::start("s3_prune_from_the_cli_removes_orphans_in_the_bucket").await
    else {
        return;
    };
    let bucket = moto.create_bucket("prune").await;
    let s = server_on(&moto, "prune").await;
    let alice = s.register("alice@example.com").await;
    let kept = upload(&s, &alice, "kept.txt", b"kept", false).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .call(
            Method::POST,
            "/api/docs",
            Some(&alice.token),
            Some(&json!({"attachment": kept})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let unreferenced = upload(&s, &alice, "loose.txt", b"loose", false)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An object without a row (a crash between the upload and its row), and one that is not
    // ours at all (left alone).
    let stray = "fil_00000000-0000-4000-8000-000000000001";
    bucket
        .put(
            &Key::from(format!("files/{stray}")),
            PutPayload::from_static(b"stray"),
        )
        .await
        .unwrap();
    bucket
        .put(&Key::from("elsewhere/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap();

    let prune = |args: &[&str]| {
        let out = crate::harness::bak_in(s.dir.path())
            .args(["storage", "prune"])
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    // The grace period holds both back (a fresh object may be an upload about to commit).
    let (ok, out, err) = prune(&[]);
    assert!(ok, "{err}");
    assert_eq!(out, "No orphan files found.\n");
    let (ok, out, err) = prune(&["--grace", "0s"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "Removed 1 orphan file(s):\n{unreferenced}\nRemoved 1 blob(s) without a metadata row:\n{stray}\n"
        )
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    assert_eq!(objects(&bucket).await, vec![kept.clone()]);
    assert!(bucket.head(&Key::from("elsewhere/x")).await.is_ok());
    assert_eq!(get(&s, &kept, Some(&alice.token), None).await.status, 200);
    s.shutdown().await;
}

/// `bak start` checks the bucket: a missing one, or an endpoint nobody answers on, stops it
/// with one clear line; a good one starts, and the secret shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_start_checks_the_bucket() {
    let Some(moto) = Moto::start("s3_start_checks_the_bucket").await else {
        return;
    };
    moto.create_bucket("present").await;
    let closed = free_port();
    for (settings, expected) in [
        (
            moto.settings("absent"),
            format!(
                "S3 bucket \"absent\" at {} does not exist: create it first",
                moto.endpoint
            ),
        ),
        (
            json!({"bucket": "present", "endpoint": format!("http://127.0.0.1:{closed}"),
                   "accessKeyId": "k", "secretAccessKey": SECRET}),
            format!("Cannot reach S3 bucket \"present\" at http://127.0.0.1:{closed}"),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bakend.json"),
            json!({"storage": {"s3": settings}}).to_string(),
        )
        .unwrap();
        let mut bak = BakProcess::spawn(dir.path(), &[]);
        assert_eq!(bak.wait_exit().await.code(), Some(1), "{}", bak.stderr());
        let err = bak.stderr();
        let line = err
            .lines()
            .find(|l| l.contains(&expected))
            .unwrap_or_else(|| panic!("no {expected:?} in: {err}"));
        assert!(line.len() < 500, "{line}");
        assert!(
            !err.contains(SECRET) && !bak.stdout().contains(SECRET),
            "{err}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bakend.json"),
        json!({"storage": {"s3": moto.settings("present")}}).to_string(),
    )
    .unwrap();
    let mut bak = BakProcess::spawn(dir.path(), &[]);
    bak.wait_ready().await;
    let said = format!("{}{}", bak.stdout(), bak.stderr());
    assert!(said.contains("Storage: S3 bucket \"present\""), "{said}");
    assert!(!said.contains(SECRET), "{said}");
}

fn bak(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = crate::harness::bak_in(dir).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `bak backup create` copies the bucket's objects of the snapshot's files into the archive;
/// `restore` puts them into the project's bucket (refusing one that already holds files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backup_holds_the_objects_and_restore_uploads_them() {
    let Some(moto) = Moto::start("s3_backup_holds_the_objects_and_restore_uploads_them").await
    else {
        return;
    };
    let source = moto.create_bucket("source").await;
    let s = server_on(&moto, "source").await;
    let alice = s.register("alice@example.com").await;
    let big: Vec<u8> = (0..6 * MIB).map(|i| (i % 241) as u8).collect();
    let mut files = Vec::new();
    for (name, bytes) in [("a.txt", b"hello".to_vec()), ("big.bin", big)] {
        let r = upload(&s, &alice, name, &bytes, true).await;
        assert_eq!(r.status, 201, "{}", r.text);
        files.push((r.json()["id"].as_str().unwrap().to_string(), bytes));
    }
    let dir = s.shutdown().await;
    let (ok, out, err) = bak(dir.path(), &["backup", "create", "--output", "b.tar.gz"]);
    assert!(ok && out.starts_with("Backup created"), "{out}{err}");
    assert!(!err.contains("Warning"), "{err}");
    let archive = dir.path().join("b.tar.gz");

    // Over the project itself (--force): the objects are put back in place.
    let (ok, _, err) = bak(dir.path(), &["backup", "restore", "b.tar.gz", "--force"]);
    assert!(ok, "{err}");
    assert_eq!(objects(&source).await.len(), 2);

    // Into another project with an empty bucket of its own.
    let target = moto.create_bucket("target").await;
    let other = tempfile::tempdir().unwrap();
    crate::harness::write_collections(other.path(), &[docs()]);
    let config = json!({"auth": {"rateLimit": {"attempts": 0}},
                        "storage": {"s3": moto.settings("target")}});
    std::fs::write(other.path().join("bakend.json"), config.to_string()).unwrap();
    let (ok, out, err) = bak(
        other.path(),
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("Uploaded 2 file(s) into the bucket."), "{out}");
    let mut ids: Vec<String> = files.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(objects(&target).await, ids);
    // A fresh project on a bucket that already holds files: refused without --force.
    let third = tempfile::tempdir().unwrap();
    std::fs::write(third.path().join("bakend.json"), config.to_string()).unwrap();
    let (ok, _, err) = bak(
        third.path(),
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let s = TestServer::start_in(other).await;
    for (id, bytes) in &files {
        let r = get(&s, id, None, None).await;
        assert_eq!(r.status, 200);
        assert!(&r.body == bytes);
    }
    s.shutdown().await;
}
