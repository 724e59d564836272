//! Starting servers for tests and talking to them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bakend_core::SharedEvent;
use bakend_core::config::Config;
use bakend_events::{EventBus, EventStream, LocalBus};
use serde_json::Value;

pub struct TestServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The server's bus, for tests that emit events other subsystems will emit.
    pub bus: Arc<dyn EventBus>,
    events: EventStream,
    server: Option<bakend_server::Server>,
}

pub fn write_collections(dir: &Path, collections: &[Value]) {
    let cdir = dir.join("collections");
    std::fs::create_dir_all(&cdir).unwrap();
    for c in collections {
        let name = c["name"].as_str().unwrap_or("unnamed");
        std::fs::write(cdir.join(format!("{name}.json")), c.to_string()).unwrap();
    }
}

impl TestServer {
    /// A server on an ephemeral port over a fresh project with these collection files.
    /// Login rate limiting is off here (many tests sign in many users from one address); the
    /// tests of the limiter configure it.
    pub async fn start(collections: &[Value]) -> TestServer {
        Self::start_with_config(collections, r#"{"auth": {"rateLimit": {"attempts": 0}}}"#).await
    }

    pub async fn start_with_config(collections: &[Value], config_json: &str) -> TestServer {
        Self::start_with_env(collections, config_json, &[]).await
    }

    pub async fn start_with_env(
        collections: &[Value],
        config_json: &str,
        env: &[(&str, &str)],
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        write_collections(dir.path(), collections);
        std::fs::write(dir.path().join("bakend.json"), config_json).unwrap();
        Self::start_in_with_env(dir, env).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestServer {
        Self::start_in_with_env(dir, &[]).await
    }

    pub async fn start_in_with_env(dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestServer {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(url) = crate::pg::database_for(dir.path())
            && !env.iter().any(|(k, _)| k == "BAKEND_DATABASE")
        {
            env.push(("BAKEND_DATABASE".into(), url));
        }
        let mut config = Config::load(Some(&dir.path().join("bakend.json")), &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        config.port = 0;
        let bus: Arc<dyn EventBus> = LocalBus::new();
        let events = bus.subscribe("test", 100_000);
        let server = bakend_server::start_with_bus(config, bus.clone())
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}", server.addr().port());
        TestServer {
            url,
            dir,
            http: reqwest::Client::new(),
            bus,
            events,
            server: Some(server),
        }
    }

    /// Every event emitted so far that this test has not taken yet.
    pub fn take_events(&mut self) -> Vec<SharedEvent> {
        std::iter::from_fn(|| self.events.try_recv()).collect()
    }

    /// Events of collection/record kinds only (drops `system.*`).
    pub fn take_record_events(&mut self) -> Vec<SharedEvent> {
        self.take_events()
            .into_iter()
            .filter(|e| !e.event_type.starts_with("system."))
            .collect()
    }

    pub fn ws_url(&self) -> String {
        format!("{}/api/realtime", self.url.replacen("http://", "ws://", 1))
    }

    /// Graceful shutdown; hands back the project folder so a test can start again on it.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }

    pub async fn get(&self, path: &str) -> Resp {
        Resp::from(
            self.http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Resp::from(
            self.http
                .delete(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Resp {
        self.raw(
            method,
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Resp::from(req.send().await.unwrap()).await
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Resp::from(req.send().await.unwrap()).await
    }

    /// Registers an account; returns (access token, refresh token, user id).
    pub async fn register(&self, email: &str) -> Session {
        let r = self
            .post(
                "/api/auth/register",
                &serde_json::json!({"email": email, "password": "password123"}),
            )
            .await;
        assert_eq!(r.status, 201, "register {email}: {}", r.text);
        let j = r.json();
        Session {
            token: j["token"].as_str().unwrap().to_string(),
            refresh: j["refreshToken"].as_str().unwrap().to_string(),
            id: j["user"]["id"].as_str().unwrap().to_string(),
        }
    }

    /// Creates a record and returns it, asserting 201.
    pub async fn create(&self, collection: &str, body: Value) -> Value {
        let r = self.post(&format!("/api/{collection}"), &body).await;
        assert_eq!(r.status, 201, "create {collection} {body}: {}", r.text);
        r.json()
    }

    /// Uploads `bytes` as a file named `filename` as `who`; the file's metadata (asserts 201).
    pub async fn upload_as(&self, who: &Session, filename: &str, bytes: Vec<u8>) -> Value {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
        );
        let r = self
            .http
            .post(format!("{}/api/storage/upload", self.url))
            .bearer_auth(&who.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let r = Resp::from(r).await;
        assert_eq!(r.status, 201, "upload {filename}: {}", r.text);
        r.json()
    }

    /// Creates a record as `who`; the new record.
    pub async fn create_as(&self, who: &Session, collection: &str, body: Value) -> Value {
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("/api/{collection}"),
                Some(&who.token),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()
    }
}

/// A signed-in test user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub refresh: String,
    pub id: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the error envelope with this status, code and message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        let j = self.json();
        assert_eq!(j["error"]["code"], code, "body: {}", self.text);
        assert_eq!(j["error"]["message"], message, "body: {}", self.text);
        assert_eq!(
            self.headers["content-type"], "application/json;charset=utf-8",
            "content type"
        );
    }
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually(f: impl FnMut() -> bool) -> bool {
    eventually_within(Duration::from_secs(2), f).await
}

/// Polls `f` every 10 ms until it holds or `limit` passes.
pub async fn eventually_within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

pub fn bak_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bak")
}

/// A free TCP port on loopback (bound and released; a race with another process is unlikely).
/// A port for a `bak` child process to listen on. Chosen below the kernel's ephemeral range
/// (32768–60999 here): a port the kernel handed out for `:0` could be given again, as the local
/// port of some test's outgoing connection, before `bak` binds it.
/// `bak` run in the project folder `dir` — on that folder's PostgreSQL database when the suite
/// runs on PostgreSQL (`pg.rs`).
pub fn bak_in(dir: impl AsRef<Path>) -> std::process::Command {
    let dir = dir.as_ref();
    let mut cmd = std::process::Command::new(bak_bin());
    cmd.current_dir(dir);
    if let Some(url) = crate::pg::database_for(dir) {
        cmd.env("BAKEND_DATABASE", url);
    }
    cmd
}

/// `bak admin create EMAIL --password-stdin` in `dir`, which must succeed.
pub fn bak_admin_create(dir: &Path, email: &str, password: &str) {
    use std::io::Write;
    let mut admin = bak_in(dir)
        .args(["admin", "create", email, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    admin
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(admin.wait().unwrap().success(), "bak admin create {email}");
}

/// Runs `f` on a connection to the database of the project in `dir` — its SQLite file, or
/// its PostgreSQL database when the suite runs there — for tests that look at (or arrange)
/// what is stored. On a thread of its own: the PostgreSQL client is synchronous and must not
/// run inside the test's async runtime.
pub fn with_project_db<T: Send + 'static>(
    dir: &Path,
    f: impl FnOnce(&bakend_store::sql::Conn) -> T + Send + 'static,
) -> T {
    let file = dir.join("bakend.db");
    let pg = crate::pg::database_for(dir);
    std::thread::spawn(move || {
        let conn = match pg {
            Some(url) => bakend_store::sql::Conn::from(
                bakend_store::sql::PgConn::connect(&bakend_core::config::PostgresSettings {
                    url,
                    options: Default::default(),
                })
                .unwrap(),
            ),
            None => bakend_store::sql::Conn::from(rusqlite::Connection::open(file).unwrap()),
        };
        f(&conn)
    })
    .join()
    .unwrap()
}

pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 1_000) * 10;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        // As `bak` binds: dual-stack `::`, else `0.0.0.0`.
        let free = std::net::TcpListener::bind(("::", port))
            .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))
            .is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// `bak start` as a child process in `dir`, with stdout and stderr captured to files there.
pub struct BakProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
    run: u32,
    args: Vec<String>,
    /// `RLIMIT_NOFILE` set for the child, if any.
    nofile: Option<u64>,
    /// Extra environment variables.
    env: Vec<(String, String)>,
}

static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl BakProcess {
    pub fn spawn(dir: &Path, extra_args: &[&str]) -> BakProcess {
        let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        Self::spawn_args(dir, args, None, Vec::new())
    }

    /// As [`BakProcess::spawn`], with extra environment variables (after the suite's own, so
    /// they win: e.g. `BAKEND_DATABASE` for several nodes on one database).
    pub fn spawn_with_env(dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> BakProcess {
        let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn_args(dir, args, None, env)
    }

    /// As [`BakProcess::spawn`], with the child limited to `nofile` open files
    /// (`RLIMIT_NOFILE`, soft and hard).
    pub fn spawn_with_nofile(dir: &Path, extra_args: &[&str], nofile: u64) -> BakProcess {
        let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        Self::spawn_args(dir, args, Some(nofile), Vec::new())
    }

    fn spawn_args(
        dir: &Path,
        args: Vec<String>,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> BakProcess {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = std::fs::File::create(dir.join(format!("stdout-{run}.log"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("stderr-{run}.log"))).unwrap();
        let mut cmd = bak_in(dir);
        cmd.arg("start")
            .arg("--port")
            .arg(port.to_string())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().unwrap();
        BakProcess {
            child,
            port,
            dir: dir.to_path_buf(),
            run,
            args,
            nofile,
            env,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stdout-{}.log", self.run)))
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{}.log", self.run)))
            .unwrap_or_default()
    }

    /// Waits until `/health` answers; panics with the server's stderr if it exits or takes
    /// longer than 20 s. The port was free when chosen, but another test may take it before
    /// `bak` binds it: then `bak` is started again on another port.
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let mut attempts = 0;
        'start: loop {
            for _ in 0..400 {
                if let Ok(Some(status)) = self.child.try_wait() {
                    if self.stderr().contains("Is port") && attempts < 5 {
                        attempts += 1;
                        *self = Self::spawn_args(
                            &self.dir.clone(),
                            self.args.clone(),
                            self.nofile,
                            self.env.clone(),
                        );
                        continue 'start;
                    }
                    panic!("bak exited with {status}: {}", self.stderr());
                }
                if let Ok(r) = http.get(format!("{}/health", self.url())).send().await
                    && r.status() == 200
                    // The answer came from our process, not from a server that took the port.
                    && self.stdout().contains("Listening on")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("bak did not become ready: {}", self.stderr());
        }
    }

    /// Waits for the process to exit by itself (bounded).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("bak did not exit: {}", self.stderr());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process id.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for BakProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
