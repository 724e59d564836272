//! `bakend.json` plus `BAKEND_*` overrides (spec `cli-and-config.md` §3).
//!
//! Unlike upstream, unknown keys are reported as warnings, a blank or non-string secret is an
//! error rather than a silent fallback, and numeric environment values must be whole numbers.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_PER_PAGE: u32 = 100;
pub const DEFAULT_MAX_PER_PAGE: u32 = 1000;
/// Default `storage.maxFileSize`: 10 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s {
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARN" => Some(LogLevel::Warn),
            "ERROR" => Some(LogLevel::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Where the database lives: a SQLite file (the default), or a PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseLocation {
    File(PathBuf),
    /// `:memory:` — gone when the process exits.
    Memory,
    /// `postgres://…` or `postgresql://…`, with the `postgres` section's settings.
    Postgres(PostgresSettings),
}

/// A PostgreSQL database: the URL of `database` and the `postgres` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The URL as given, password included: show [`redact_url`] of it, never this.
    pub url: String,
    pub options: PostgresOptions,
}

/// The `postgres` section (used when `database` is a PostgreSQL URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The schema Bakend's tables live in (`postgres.schema`).
    pub schema: String,
    /// Most connections of the store's pool (`postgres.poolSize`): the writer and the readers.
    pub pool_size: u32,
    /// `statement_timeout` of every connection (`postgres.statementTimeoutMs`; 0: none).
    pub statement_timeout: Duration,
    /// This server's name among those sharing the database (`cluster.nodeId`; generated at
    /// start when absent).
    pub node_id: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "public".into(),
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            node_id: None,
        }
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`: a database URL as it may
/// appear in messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `storage.s3`: blobs in an S3-compatible bucket instead of the storage folder (which then
/// holds only uploads in progress).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// `http(s)://host[:port]`; `None`: AWS itself. An `http://` endpoint means path-style
    /// requests and plain HTTP.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    /// Never shown: [`S3Settings`]'s `Debug` prints `***` in its place.
    pub secret_access_key: Option<String>,
}

pub const DEFAULT_S3_REGION: &str = "us-east-1";

impl S3Settings {
    /// `s3://bucket at endpoint`, for messages (no credentials).
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("S3 bucket \"{}\" at {e}", self.bucket),
            None => format!("S3 bucket \"{}\" (region {})", self.bucket, self.region),
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// `storage.s3` as read so far: keys may come from the file and from the environment, and are
/// checked together once both are in.
#[derive(Clone, Default)]
struct S3Partial {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

/// An S3 endpoint: `http://` or `https://` and a host.
fn valid_endpoint(s: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        s.strip_prefix(scheme).is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
        })
    })
}

/// The scheme of a `scheme://…` string (letters, digits, `+`, `-`, `.` after a letter).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .then_some(scheme)
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `None` when the config does not set one: the server then uses a generated secret kept in
    /// the database, and warns loudly.
    pub jwt_secret: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `BAKEND_ADMIN_EMAIL`, normalised: registering with it yields an admin.
    pub admin_email: Option<String>,
    /// Login and register attempts allowed per client address per window; 0 disables.
    pub rate_limit_attempts: u32,
    pub rate_limit_window: Duration,
    /// Password hashes (argon2id, 19 MiB each) allowed to run at once; default: the cores.
    pub max_concurrent_hashes: usize,
    /// Sign-ins allowed to wait for a hashing slot beyond those running; more get 503.
    pub hash_queue: usize,
    /// How long a sign-in waits for a hashing slot before it gets 503.
    pub hash_queue_timeout: Duration,
}

/// Connection limits of the HTTP server (`http.*`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// A new connection must send a complete request head within this time, or it is closed.
    pub header_read_timeout: Duration,
    /// After a response, a kept-alive connection must send its next complete request head
    /// within this time, or it is closed. Upgraded (WebSocket) connections are not affected.
    pub keep_alive_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_origins: Vec<String>,
    /// Largest accepted JSON request body; larger bodies get 413.
    pub max_body_bytes: usize,
    pub default_per_page: u32,
    pub max_per_page: u32,
}

#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// Distinct channels one connection may hold.
    pub max_subscriptions: usize,
    /// Server ping interval; a peer that stays silent for two intervals is dropped.
    pub heartbeat: Duration,
    /// How long a connection whose access token expired may take to send a fresh one.
    pub token_grace: Duration,
    /// Largest incoming message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Frames that may wait for one connection; a connection that falls this far behind is
    /// closed with 4008 `slow_consumer`.
    pub queue_capacity: usize,
    /// Keep the event journal that lets clients resume (`since`) after a disconnect.
    pub journal: bool,
    /// Journal retention: the newest this many events…
    pub journal_max_events: u64,
    /// …and none older than this.
    pub journal_max_age: Duration,
    /// Most events one resume replays; a longer gap answers `recovered: false`.
    pub max_replay_events: usize,
    /// Events per journal segment (the unit trimming drops), fixed when a journal is created.
    pub journal_segment_events: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            max_subscriptions: 50,
            heartbeat: Duration::from_secs(30),
            token_grace: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            queue_capacity: 1024,
            journal: true,
            journal_max_events: 100_000,
            journal_max_age: Duration::from_secs(24 * 3600),
            max_replay_events: 20_000,
            journal_segment_events: 8192,
        }
    }
}

/// The `jobs` section (cron-scheduled TypeScript, docs/jobs.md).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// IANA time zone that schedules are read in (`UTC`, `Europe/Berlin`).
    pub timezone: String,
    /// Runs kept per job in the history.
    pub history_limit: u32,
    /// Per-attempt time limit unless a job exports `timeout`.
    pub timeout: Duration,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// Whether jobs run on their schedules. Off only for the in-process server of
    /// `bak jobs run` (not a bakend.json key).
    pub schedule: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            timezone: "UTC".to_string(),
            history_limit: 100,
            timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            schedule: true,
        }
    }
}

/// Limits of user functions (`functions` in bakend.json); `None` keeps the engine's default.
#[derive(Clone, Debug, Default)]
pub struct FunctionsSettings {
    /// JS worker threads (default `min(2, cores)`).
    pub workers: Option<usize>,
    /// Invocations that may wait for a worker before new ones are dropped (and reported).
    pub queue_capacity: Option<usize>,
    /// Time limit per invocation unless a file exports `timeout` (default 5 s).
    pub timeout: Option<Duration>,
    /// Heap limit per JS runtime in bytes (default 64 MiB).
    pub memory_limit: Option<usize>,
    /// Stack limit per JS runtime in bytes (default 512 KiB).
    pub stack_size: Option<usize>,
}

/// `GET /metrics` (docs/metrics.md): off unless enabled; when on, an admin's access token or
/// this scrape token is required.
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// A static bearer token for Prometheus, so scraping needs no user account.
    pub token: Option<String>,
}

/// The `cluster` section (docs/cluster.md): several nodes on one PostgreSQL database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS server that carries events between nodes (`cluster.nats`,
    /// `BAKEND_CLUSTER_NATS`); without it the nodes still share the database and read each
    /// other's events from the journal.
    pub nats: Option<String>,
    /// This node's name (`cluster.nodeId`, `BAKEND_CLUSTER_NODE_ID`); generated at start when
    /// absent.
    pub node_id: Option<String>,
}

/// A node name: what job runs and stats are labelled with.
fn valid_node_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const NODE_ID_RULE: &str = "must be 1 to 64 letters, digits, - or _";

/// A NATS server URL (`nats://`, `tls://`, or `host:port`), as async-nats takes it.
fn valid_nats_url(s: &str) -> Result<(), String> {
    match url_scheme(s) {
        Some("nats" | "tls" | "ws" | "wss") | None if !s.trim().is_empty() => Ok(()),
        Some(other) => Err(format!(
            "\"{}\" has the unsupported scheme \"{other}://\": use nats://host:port",
            redact_url(s)
        )),
        _ => Err("must be a non-empty nats://host:port URL".into()),
    }
}

/// A scrape token travels in an `Authorization` header: visible ASCII, no spaces, and long
/// enough not to be guessed.
fn valid_metrics_token(s: &str) -> bool {
    (16..=512).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

const METRICS_TOKEN_RULE: &str = "must be 16 to 512 visible ASCII characters without spaces";

#[derive(Clone, Debug)]
pub struct Config {
    /// Absolute path of the config file (it may not exist).
    pub config_path: PathBuf,
    pub config_file_exists: bool,
    /// Directory of the config file; relative paths resolve against it.
    pub project_dir: PathBuf,
    pub port: u16,
    pub database: DatabaseLocation,
    /// The `postgres` section (also inside `database` when that is a PostgreSQL URL).
    pub postgres: PostgresOptions,
    /// The storage folder (`storage`, or `storage.path`).
    pub storage: PathBuf,
    /// Largest accepted upload in bytes (`storage.maxFileSize`).
    pub max_file_size: u64,
    /// `storage.s3`: blobs in a bucket; `storage` then holds only uploads in progress.
    pub s3: Option<S3Settings>,
    pub log_level: LogLevel,
    pub log_file: Option<PathBuf>,
    pub auth: AuthConfig,
    pub dashboard_enabled: bool,
    pub api: ApiConfig,
    pub http: HttpConfig,
    pub realtime: RealtimeConfig,
    pub jobs: JobsConfig,
    pub functions: FunctionsSettings,
    pub metrics: MetricsConfig,
    pub cluster: ClusterConfig,
    /// Reload functions and jobs when their files change (`bak dev`, `bak start --watch`; not
    /// a bakend.json key).
    pub watch: bool,
    /// Things worth telling the operator that do not stop start-up (unknown keys).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Failed to read config file at {path}: {message}")]
    Read { path: String, message: String },
    #[error("Invalid JSON in config file at {path}: {message}")]
    InvalidJson { path: String, message: String },
    #[error("config root must be an object (in {path})")]
    NotObject { path: String },
    #[error("Invalid config: {message} (key \"{key}\" in {path})")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
    #[error("Invalid {var} environment variable: {message}")]
    Env { var: String, message: String },
}

pub const DEFAULT_RATE_LIMIT_ATTEMPTS: u32 = 20;
pub const DEFAULT_RATE_LIMIT_WINDOW_SECS: u64 = 60;
pub const DEFAULT_HASH_QUEUE: usize = 256;
pub const DEFAULT_HASH_QUEUE_TIMEOUT_MS: u64 = 5_000;

/// The default for `auth.maxConcurrentHashes`: one hash per core keeps every core busy and no
/// more memory than that in use.
pub fn default_max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `^(\d+)([smhd])$` (`15m`, `7d`, `0s`).
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

impl Config {
    /// Loads `path` (or `./bakend.json`), then applies overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let config_path = match path {
            Some(p) if p.is_absolute() => p.to_path_buf(),
            Some(p) => cwd.join(p),
            None => cwd.join("bakend.json"),
        };
        let config_path = normalize(&config_path);
        let project_dir = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.clone());
        let shown = config_path.display().to_string();

        let (root, exists) = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                let value: Value =
                    serde_json::from_str(&text).map_err(|e| ConfigError::InvalidJson {
                        path: shown.clone(),
                        message: e.to_string(),
                    })?;
                match value {
                    Value::Object(map) => (map, true),
                    _ => return Err(ConfigError::NotObject { path: shown }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Map::new(), false),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: shown,
                    message: e.to_string(),
                });
            }
        };

        let mut cfg = Config {
            config_path: config_path.clone(),
            config_file_exists: exists,
            project_dir: project_dir.clone(),
            port: DEFAULT_PORT,
            database: DatabaseLocation::File(project_dir.join("bakend.db")),
            postgres: PostgresOptions::default(),
            storage: project_dir.join("storage"),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            s3: None,
            log_level: LogLevel::Info,
            log_file: None,
            auth: AuthConfig {
                jwt_secret: None,
                access_token_ttl: Duration::from_secs(15 * 60),
                refresh_token_ttl: Duration::from_secs(7 * 86_400),
                admin_email: None,
                rate_limit_attempts: DEFAULT_RATE_LIMIT_ATTEMPTS,
                rate_limit_window: Duration::from_secs(DEFAULT_RATE_LIMIT_WINDOW_SECS),
                max_concurrent_hashes: default_max_concurrent_hashes(),
                hash_queue: DEFAULT_HASH_QUEUE,
                hash_queue_timeout: Duration::from_millis(DEFAULT_HASH_QUEUE_TIMEOUT_MS),
            },
            dashboard_enabled: true,
            api: ApiConfig {
                cors_origins: vec!["*".to_string()],
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                default_per_page: DEFAULT_PER_PAGE,
                max_per_page: DEFAULT_MAX_PER_PAGE,
            },
            http: HttpConfig::default(),
            realtime: RealtimeConfig::default(),
            jobs: JobsConfig::default(),
            functions: FunctionsSettings::default(),
            metrics: MetricsConfig::default(),
            cluster: ClusterConfig::default(),
            watch: false,
            warnings: Vec::new(),
        };
        let file = FileCtx::new(&shown);
        cfg.apply_file(&root, &file)?;
        file.warn_unread(&root, &mut cfg.warnings);
        cfg.apply_env(env, &file)?;
        let s3 = file.s3.take();
        cfg.s3 = finish_s3(s3, env, &file)?;
        cfg.postgres.node_id = cfg.cluster.node_id.clone();
        // `database` may come before the `postgres` section, or from the environment.
        match &mut cfg.database {
            DatabaseLocation::Postgres(p) => p.options = cfg.postgres.clone(),
            _ if cfg.cluster.nats.is_some() => {
                return Err(ConfigError::Invalid {
                    path: shown.to_string(),
                    key: "cluster.nats".into(),
                    message: "a cluster needs a PostgreSQL database (\"database\": \"postgres://…\", docs/cluster.md)".into(),
                });
            }
            _ => {}
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, root: &Map<String, Value>, f: &FileCtx) -> Result<(), ConfigError> {
        let root = f.section(root, "");
        if let Some(v) = root.get("port") {
            self.port = match v.as_u64() {
                Some(n @ 1..=65535) => n as u16,
                _ => {
                    return Err(f.invalid(
                        "port",
                        format!("port must be an integer between 1 and 65535, got {v}"),
                    ));
                }
            };
        }
        if let Some(v) = root.get("database") {
            let s = non_empty_str(v)
                .ok_or_else(|| f.invalid("database", "database must be a non-empty string"))?;
            self.database = self
                .database_location(s)
                .map_err(|m| f.invalid("database", m))?;
        }
        if let Some(v) = root.get("postgres") {
            let pg = v
                .as_object()
                .ok_or_else(|| f.invalid("postgres", "postgres must be an object"))?;
            let pg = f.section(pg, "postgres.");
            self.apply_postgres(&pg, f)?;
        }
        if let Some(v) = root.get("storage") {
            self.apply_storage(v, f)?;
        }
        if let Some(v) = root.get("logLevel") {
            self.log_level = v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                f.invalid(
                    "logLevel",
                    "logLevel must be one of DEBUG, INFO, WARN, ERROR",
                )
            })?;
        }
        if let Some(v) = root.get("logFile") {
            let s = non_empty_str(v).ok_or_else(|| {
                f.invalid("logFile", "logFile must be a non-empty string when set")
            })?;
            self.log_file = Some(self.resolve(s));
        }
        if let Some(v) = root.get("auth") {
            let auth = v
                .as_object()
                .ok_or_else(|| f.invalid("auth", "auth must be an object"))?;
            let auth = f.section(auth, "auth.");
            if let Some(secret) = auth.get("jwtSecret") {
                let s = non_empty_str(secret).ok_or_else(|| {
                    f.invalid(
                        "auth.jwtSecret",
                        "auth.jwtSecret must be a non-empty string",
                    )
                })?;
                self.auth.jwt_secret = Some(s.to_string());
            }
            if let Some(v) = auth.get("rateLimit") {
                self.apply_rate_limit(v, f)?;
            }
            let int = |key: &str, lo: u64, hi: u64| auth.int(key, lo, hi);
            if let Some(n) = int("maxConcurrentHashes", 1, 1024)? {
                self.auth.max_concurrent_hashes = n as usize;
            }
            if let Some(n) = int("hashQueue", 0, 1_000_000)? {
                self.auth.hash_queue = n as usize;
            }
            if let Some(n) = int("hashQueueTimeoutMs", 1, 600_000)? {
                self.auth.hash_queue_timeout = Duration::from_millis(n);
            }
            for (key, slot) in [
                ("accessTokenTtl", &mut self.auth.access_token_ttl),
                ("refreshTokenTtl", &mut self.auth.refresh_token_ttl),
            ] {
                if let Some(v) = auth.get(key) {
                    *slot = v.as_str().and_then(parse_ttl).ok_or_else(|| {
                        f.invalid(
                            &format!("auth.{key}"),
                            format!(
                                "auth.{key} must be a duration like \"15m\", \"1h\", or \"7d\""
                            ),
                        )
                    })?;
                }
            }
        }
        if let Some(v) = root.get("dashboard") {
            let dash = v
                .as_object()
                .ok_or_else(|| f.invalid("dashboard", "dashboard must be an object"))?;
            let dash = f.section(dash, "dashboard.");
            if let Some(v) = dash.get("enabled") {
                self.dashboard_enabled = v.as_bool().ok_or_else(|| {
                    f.invalid("dashboard.enabled", "dashboard.enabled must be a boolean")
                })?;
            }
        }
        if let Some(v) = root.get("realtime") {
            let rt = v
                .as_object()
                .ok_or_else(|| f.invalid("realtime", "realtime must be an object"))?;
            let rt = f.section(rt, "realtime.");
            self.apply_realtime(&rt, f)?;
        }
        if let Some(v) = root.get("jobs") {
            self.apply_jobs(v, f)?;
        }
        if let Some(v) = root.get("functions") {
            let fns = v
                .as_object()
                .ok_or_else(|| f.invalid("functions", "functions must be an object"))?;
            let fns = f.section(fns, "functions.");
            self.apply_functions(&fns)?;
        }
        if let Some(v) = root.get("metrics") {
            self.apply_metrics(v, f)?;
        }
        if let Some(v) = root.get("http") {
            let http = v
                .as_object()
                .ok_or_else(|| f.invalid("http", "http must be an object"))?;
            let http = f.section(http, "http.");
            let int = |key: &str| http.int(key, 100, 3_600_000);
            if let Some(ms) = int("headerReadTimeoutMs")? {
                self.http.header_read_timeout = Duration::from_millis(ms);
            }
            if let Some(ms) = int("keepAliveTimeoutMs")? {
                self.http.keep_alive_timeout = Duration::from_millis(ms);
            }
        }
        if let Some(v) = root.get("cluster") {
            let c = v
                .as_object()
                .ok_or_else(|| f.invalid("cluster", "cluster must be an object"))?;
            let c = f.section(c, "cluster.");
            if let Some(v) = c.get("nats") {
                let url = v.as_str().unwrap_or_default();
                valid_nats_url(url)
                    .map_err(|m| f.invalid("cluster.nats", format!("cluster.nats {m}")))?;
                self.cluster.nats = Some(url.to_string());
            }
            if let Some(v) = c.get("nodeId") {
                let id = v.as_str().filter(|s| valid_node_id(s)).ok_or_else(|| {
                    f.invalid("cluster.nodeId", format!("cluster.nodeId {NODE_ID_RULE}"))
                })?;
                self.cluster.node_id = Some(id.to_string());
            }
        }
        if let Some(v) = root.get("api") {
            let api = v
                .as_object()
                .ok_or_else(|| f.invalid("api", "api must be an object"))?;
            let api = f.section(api, "api.");
            self.apply_api(&api, f)?;
        }
        Ok(())
    }

    fn apply_rate_limit(&mut self, v: &Value, f: &FileCtx) -> Result<(), ConfigError> {
        let obj = v
            .as_object()
            .ok_or_else(|| f.invalid("auth.rateLimit", "auth.rateLimit must be an object"))?;
        let obj = f.section(obj, "auth.rateLimit.");
        if let Some(v) = obj.get("attempts") {
            self.auth.rate_limit_attempts = v
                .as_u64()
                .filter(|n| *n <= 1_000_000)
                .map(|n| n as u32)
                .ok_or_else(|| {
                    f.invalid(
                        "auth.rateLimit.attempts",
                        "auth.rateLimit.attempts must be an integer between 0 (off) and 1000000",
                    )
                })?;
        }
        if let Some(v) = obj.get("windowSeconds") {
            self.auth.rate_limit_window = v
                .as_u64()
                .filter(|n| (1..=86_400).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    f.invalid(
                        "auth.rateLimit.windowSeconds",
                        "auth.rateLimit.windowSeconds must be an integer between 1 and 86400",
                    )
                })?;
        }
        Ok(())
    }

    /// `"storage": "./storage"` (v1) or `"storage": {"path": …, "maxFileSize": …}`.
    fn apply_storage(&mut self, v: &Value, f: &FileCtx) -> Result<(), ConfigError> {
        if v.is_string() {
            let s = non_empty_str(v).ok_or_else(|| {
                f.invalid("storage", "storage must be a non-empty string or an object")
            })?;
            self.storage = self.resolve(s);
            return Ok(());
        }
        let obj = v.as_object().ok_or_else(|| {
            f.invalid("storage", "storage must be a non-empty string or an object")
        })?;
        let obj = f.section(obj, "storage.");
        if let Some(p) = obj.get("path") {
            let s = non_empty_str(p).ok_or_else(|| {
                f.invalid("storage.path", "storage.path must be a non-empty string")
            })?;
            self.storage = self.resolve(s);
        }
        if let Some(n) = obj.get("maxFileSize") {
            self.max_file_size = n.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                f.invalid(
                    "storage.maxFileSize",
                    "storage.maxFileSize must be a positive integer (bytes)",
                )
            })?;
        }
        if let Some(v) = obj.get("s3") {
            let s3 = v
                .as_object()
                .ok_or_else(|| f.invalid("storage.s3", "storage.s3 must be an object"))?;
            let s3 = f.section(s3, "storage.s3.");
            let mut partial = S3Partial::default();
            for (key, slot) in [
                ("bucket", &mut partial.bucket),
                ("endpoint", &mut partial.endpoint),
                ("region", &mut partial.region),
                ("accessKeyId", &mut partial.access_key_id),
                ("secretAccessKey", &mut partial.secret_access_key),
            ] {
                if let Some(v) = s3.get(key) {
                    let name = format!("storage.s3.{key}");
                    let text = non_empty_str(v).ok_or_else(|| {
                        f.invalid(&name, format!("{name} must be a non-empty string"))
                    })?;
                    *slot = Some(text.to_string());
                }
            }
            *f.s3.borrow_mut() = Some(partial);
        }
        Ok(())
    }

    fn apply_realtime(&mut self, rt: &Section, f: &FileCtx) -> Result<(), ConfigError> {
        let int = |key: &str, lo: u64, hi: u64| rt.int(key, lo, hi);
        let r = &mut self.realtime;
        if let Some(n) = int("maxSubscriptions", 1, 10_000)? {
            r.max_subscriptions = n as usize;
        }
        if let Some(n) = int("heartbeatSeconds", 1, 3600)? {
            r.heartbeat = Duration::from_secs(n);
        }
        if let Some(n) = int("tokenGraceSeconds", 0, 3600)? {
            r.token_grace = Duration::from_secs(n);
        }
        if let Some(n) = int("maxMessageBytes", 256, 16 * 1024 * 1024)? {
            r.max_message_bytes = n as usize;
        }
        if let Some(n) = int("queueCapacity", 8, 1_000_000)? {
            r.queue_capacity = n as usize;
        }
        if let Some(v) = rt.get("journal") {
            r.journal = v.as_bool().ok_or_else(|| {
                f.invalid("realtime.journal", "realtime.journal must be a boolean")
            })?;
        }
        if let Some(n) = int("journalMaxEvents", 1, 1_000_000_000)? {
            r.journal_max_events = n;
        }
        if let Some(n) = int("journalMaxAgeHours", 1, 24 * 366)? {
            r.journal_max_age = Duration::from_secs(n * 3600);
        }
        if let Some(n) = int("maxReplayEvents", 1, 10_000_000)? {
            r.max_replay_events = n as usize;
        }
        if let Some(n) = int("journalSegmentEvents", 16, 1_000_000)? {
            r.journal_segment_events = n;
        }
        Ok(())
    }

    fn apply_jobs(&mut self, v: &Value, f: &FileCtx) -> Result<(), ConfigError> {
        let jobs = v
            .as_object()
            .ok_or_else(|| f.invalid("jobs", "jobs must be an object"))?;
        let jobs = f.section(jobs, "jobs.");
        if let Some(v) = jobs.get("timezone") {
            let tz = v
                .as_str()
                .filter(|s| s.parse::<chrono_tz::Tz>().is_ok())
                .ok_or_else(|| {
                    f.invalid(
                        "jobs.timezone",
                        format!("jobs.timezone must be an IANA time zone name like \"UTC\" or \"Europe/Berlin\", got {v}"),
                    )
                })?;
            self.jobs.timezone = tz.to_string();
        }
        let int = |key: &str, lo: u64, hi: u64| jobs.int(key, lo, hi);
        if let Some(n) = int("historyLimit", 1, 100_000)? {
            self.jobs.history_limit = n as u32;
        }
        if let Some(n) = int("timeoutSeconds", 1, 86_400)? {
            self.jobs.timeout = Duration::from_secs(n);
        }
        if let Some(n) = int("shutdownGraceSeconds", 0, 3600)? {
            self.jobs.shutdown_grace = Duration::from_secs(n);
        }
        Ok(())
    }

    fn apply_functions(&mut self, o: &Section) -> Result<(), ConfigError> {
        let int = |key: &str, lo: u64, hi: u64| o.int(key, lo, hi);
        let s = &mut self.functions;
        s.workers = int("workers", 1, 64)?.map(|n| n as usize);
        s.queue_capacity = int("queueCapacity", 1, 1_000_000)?.map(|n| n as usize);
        s.timeout = int("timeoutMs", 1, 3_600_000)?.map(Duration::from_millis);
        s.memory_limit = int("memoryLimitMb", 1, 16_384)?.map(|n| n as usize * 1024 * 1024);
        s.stack_size = int("stackSizeKb", 64, 1_048_576)?.map(|n| n as usize * 1024);
        Ok(())
    }

    fn apply_metrics(&mut self, v: &Value, f: &FileCtx) -> Result<(), ConfigError> {
        let m = v
            .as_object()
            .ok_or_else(|| f.invalid("metrics", "metrics must be an object"))?;
        let m = f.section(m, "metrics.");
        if let Some(v) = m.get("enabled") {
            self.metrics.enabled = v
                .as_bool()
                .ok_or_else(|| f.invalid("metrics.enabled", "metrics.enabled must be a boolean"))?;
        }
        match m.get("token") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let t = v
                    .as_str()
                    .filter(|t| valid_metrics_token(t))
                    .ok_or_else(|| {
                        f.invalid(
                            "metrics.token",
                            format!("metrics.token {METRICS_TOKEN_RULE} (or null)"),
                        )
                    })?;
                self.metrics.token = Some(t.to_string());
            }
        }
        Ok(())
    }

    fn apply_api(&mut self, api: &Section, f: &FileCtx) -> Result<(), ConfigError> {
        if let Some(v) = api.get("corsOrigins") {
            let list = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| non_empty_str(i).map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            });
            self.api.cors_origins = list.ok_or_else(|| {
                f.invalid(
                    "api.corsOrigins",
                    "api.corsOrigins must be an array of origins (or [\"*\"])",
                )
            })?;
        }
        if let Some(v) = api.get("maxBodyBytes") {
            self.api.max_body_bytes = v
                .as_u64()
                .filter(|n| *n >= 1024)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    f.invalid(
                        "api.maxBodyBytes",
                        "api.maxBodyBytes must be an integer of at least 1024",
                    )
                })?;
        }
        for (key, slot) in [
            ("defaultPerPage", &mut self.api.default_per_page),
            ("maxPerPage", &mut self.api.max_per_page),
        ] {
            if let Some(v) = api.get(key) {
                *slot = v
                    .as_u64()
                    .filter(|n| (1..=100_000).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        f.invalid(
                            &format!("api.{key}"),
                            format!("api.{key} must be an integer between 1 and 100000"),
                        )
                    })?;
            }
        }
        if self.api.default_per_page > self.api.max_per_page {
            return Err(f.invalid(
                "api.defaultPerPage",
                "api.defaultPerPage must not exceed api.maxPerPage",
            ));
        }
        Ok(())
    }

    fn apply_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        _f: &FileCtx,
    ) -> Result<(), ConfigError> {
        let env_err = |var: &str, message: String| ConfigError::Env {
            var: var.to_string(),
            message,
        };
        if let Some(v) = env("BAKEND_PORT") {
            self.port = parse_port(&v).ok_or_else(|| {
                env_err(
                    "BAKEND_PORT",
                    format!("{v} (must be a whole number between 1 and 65535)"),
                )
            })?;
        }
        if let Some(v) = env("BAKEND_DATABASE") {
            if v.trim().is_empty() {
                return Err(env_err("BAKEND_DATABASE", "must be non-empty".into()));
            }
            self.database = self
                .database_location(&v)
                .map_err(|m| env_err("BAKEND_DATABASE", m))?;
        }
        if let Some(v) = env("BAKEND_STORAGE") {
            if v.trim().is_empty() {
                return Err(env_err("BAKEND_STORAGE", "must be non-empty".into()));
            }
            self.storage = self.resolve(&v);
        }
        if let Some(v) = env("BAKEND_LOG_LEVEL") {
            self.log_level = LogLevel::parse(&v).ok_or_else(|| env_err("BAKEND_LOG_LEVEL", v))?;
        }
        if let Some(v) = env("BAKEND_LOG_FILE") {
            if v.trim().is_empty() {
                return Err(env_err("BAKEND_LOG_FILE", "must be non-empty".into()));
            }
            self.log_file = Some(self.resolve(&v));
        }
        if let Some(v) = env("BAKEND_AUTH_JWT_SECRET") {
            if v.trim().is_empty() {
                return Err(env_err(
                    "BAKEND_AUTH_JWT_SECRET",
                    "must be non-empty".into(),
                ));
            }
            self.auth.jwt_secret = Some(v);
        }
        if let Some(v) = env("BAKEND_ADMIN_EMAIL") {
            let v = v.trim().to_lowercase();
            self.auth.admin_email = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = env("BAKEND_METRICS_ENABLED") {
            self.metrics.enabled = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(env_err(
                        "BAKEND_METRICS_ENABLED",
                        "must be 'true' or 'false'".into(),
                    ));
                }
            };
        }
        if let Some(v) = env("BAKEND_METRICS_TOKEN") {
            if !valid_metrics_token(&v) {
                return Err(env_err("BAKEND_METRICS_TOKEN", METRICS_TOKEN_RULE.into()));
            }
            self.metrics.token = Some(v);
        }
        if let Some(v) = env("BAKEND_CLUSTER_NATS") {
            valid_nats_url(&v).map_err(|m| env_err("BAKEND_CLUSTER_NATS", m))?;
            self.cluster.nats = Some(v);
        }
        if let Some(v) = env("BAKEND_CLUSTER_NODE_ID") {
            if !valid_node_id(&v) {
                return Err(env_err("BAKEND_CLUSTER_NODE_ID", NODE_ID_RULE.into()));
            }
            self.cluster.node_id = Some(v);
        }
        if let Some(v) = env("BAKEND_DASHBOARD_ENABLED") {
            self.dashboard_enabled = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(env_err(
                        "BAKEND_DASHBOARD_ENABLED",
                        "must be 'true' or 'false'".into(),
                    ));
                }
            };
        }
        Ok(())
    }

    fn resolve(&self, p: &str) -> PathBuf {
        normalize(&self.project_dir.join(p))
    }

    /// `:memory:`, a `postgres://` URL, or a SQLite path. Any other `scheme://` is refused:
    /// a URL must never silently become a file named after it.
    fn database_location(&self, s: &str) -> Result<DatabaseLocation, String> {
        if s == ":memory:" {
            return Ok(DatabaseLocation::Memory);
        }
        match url_scheme(s) {
            Some("postgres" | "postgresql") => Ok(DatabaseLocation::Postgres(PostgresSettings {
                url: s.to_string(),
                options: self.postgres.clone(),
            })),
            Some(other) => Err(format!(
                "database \"{}\" has the unsupported scheme \"{other}://\": use a SQLite file path or a postgres:// URL",
                redact_url(s)
            )),
            None => Ok(DatabaseLocation::File(self.resolve(s))),
        }
    }

    /// The `postgres` section. Its settings apply when `database` is a PostgreSQL URL (from
    /// the file or `BAKEND_DATABASE`); they are kept aside otherwise.
    fn apply_postgres(&mut self, pg: &Section, f: &FileCtx) -> Result<(), ConfigError> {
        let settings = &mut self.postgres;
        if let Some(v) = pg.get("schema") {
            let s = v
                .as_str()
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 63
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !s.starts_with(|c: char| c.is_ascii_digit())
                })
                .ok_or_else(|| {
                    f.invalid(
                        "postgres.schema",
                        "postgres.schema must be a name of letters, digits and _ (at most 63, not starting with a digit)",
                    )
                })?;
            settings.schema = s.to_string();
        }
        if let Some(n) = pg.int("poolSize", 2, 64)? {
            settings.pool_size = n as u32;
        }
        if let Some(n) = pg.int("statementTimeoutMs", 0, 86_400_000)? {
            settings.statement_timeout = Duration::from_millis(n);
        }
        Ok(())
    }
}

/// `storage.s3` from the file with the `BAKEND_STORAGE_S3_*` overrides, checked: `None` when
/// neither sets anything.
fn finish_s3(
    file: Option<S3Partial>,
    env: &dyn Fn(&str) -> Option<String>,
    f: &FileCtx,
) -> Result<Option<S3Settings>, ConfigError> {
    let mut p = file.clone().unwrap_or_default();
    let mut from_env = false;
    for (var, slot) in [
        ("BAKEND_STORAGE_S3_BUCKET", &mut p.bucket),
        ("BAKEND_STORAGE_S3_ENDPOINT", &mut p.endpoint),
        ("BAKEND_STORAGE_S3_REGION", &mut p.region),
        ("BAKEND_STORAGE_S3_ACCESS_KEY_ID", &mut p.access_key_id),
        (
            "BAKEND_STORAGE_S3_SECRET_ACCESS_KEY",
            &mut p.secret_access_key,
        ),
    ] {
        if let Some(v) = env(var) {
            if v.trim().is_empty() {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: "must be non-empty".into(),
                });
            }
            *slot = Some(v);
            from_env = true;
        }
    }
    if file.is_none() && !from_env {
        return Ok(None);
    }
    // Named as the file names them; the environment variable is given as the other way.
    let invalid = |key: &str, message: String| {
        let mut e = f.invalid(key, message);
        if file.is_none()
            && let ConfigError::Invalid { path, .. } = &mut e
        {
            path.push_str(" or the BAKEND_STORAGE_S3_* environment");
        }
        e
    };
    let bucket = p.bucket.ok_or_else(|| {
        invalid(
            "storage.s3.bucket",
            "storage.s3.bucket is required (the bucket's name; or BAKEND_STORAGE_S3_BUCKET)".into(),
        )
    })?;
    if let Some(e) = &p.endpoint
        && !valid_endpoint(e)
    {
        return Err(invalid(
            "storage.s3.endpoint",
            format!("storage.s3.endpoint must be an http:// or https:// URL, got \"{e}\""),
        ));
    }
    if p.access_key_id.is_some() != p.secret_access_key.is_some() {
        return Err(invalid(
            "storage.s3.secretAccessKey",
            "storage.s3.accessKeyId and storage.s3.secretAccessKey go together: set both or neither".into(),
        ));
    }
    Ok(Some(S3Settings {
        bucket,
        endpoint: p.endpoint.map(|e| e.trim_end_matches('/').to_string()),
        region: p.region.unwrap_or_else(|| DEFAULT_S3_REGION.to_string()),
        access_key_id: p.access_key_id,
        secret_access_key: p.secret_access_key,
    }))
}

/// A port given on the command line or in `BAKEND_PORT`: digits only, 1–65535.
pub fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The file being read. Each config key is named once, where it is read (through a
/// [`Section`]); the file's keys that nothing read are the unknown ones, warned about at the end
/// — so there is no list of known keys to keep in step with the code.
struct FileCtx<'a> {
    path: &'a str,
    /// Full names (`auth.rateLimit.attempts`) of every key looked up.
    read: RefCell<HashSet<String>>,
    /// `storage.s3` as the file gives it (finished with the environment by [`finish_s3`]).
    s3: RefCell<Option<S3Partial>>,
}

/// One object of the file (the top level, or a section such as `auth.`).
struct Section<'a> {
    obj: &'a Map<String, Value>,
    /// `""` at the top level, `"auth."`, `"auth.rateLimit."`, …
    prefix: &'static str,
    file: &'a FileCtx<'a>,
}

impl<'a> Section<'a> {
    /// The value of `key`, noting that the key is known.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.file
            .read
            .borrow_mut()
            .insert(format!("{}{key}", self.prefix));
        self.obj.get(key)
    }

    /// `key` as an integer in `lo..=hi`, if present.
    fn int(&self, key: &str, lo: u64, hi: u64) -> Result<Option<u64>, ConfigError> {
        let name = format!("{}{key}", self.prefix);
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (lo..=hi).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    self.file.invalid(
                        &name,
                        format!("{name} must be an integer between {lo} and {hi}"),
                    )
                }),
        }
    }
}

impl<'a> FileCtx<'a> {
    fn new(path: &'a str) -> Self {
        FileCtx {
            path,
            read: RefCell::default(),
            s3: RefCell::default(),
        }
    }

    fn section(&'a self, obj: &'a Map<String, Value>, prefix: &'static str) -> Section<'a> {
        Section {
            obj,
            prefix,
            file: self,
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Warns about every key of the file that nothing looked up (only inside sections that
    /// were read, so one unknown section is one warning, not one per key in it).
    fn warn_unread(&self, root: &Map<String, Value>, out: &mut Vec<String>) {
        let mut unread = Vec::new();
        unread_keys(root, "", &self.read.borrow(), &mut unread);
        out.extend(
            unread
                .into_iter()
                .map(|name| format!("Unknown config key \"{name}\" in {} is ignored", self.path)),
        );
    }
}

fn unread_keys(
    obj: &Map<String, Value>,
    prefix: &str,
    read: &HashSet<String>,
    out: &mut Vec<String>,
) {
    for (key, value) in obj {
        let name = format!("{prefix}{key}");
        match value.as_object() {
            _ if !read.contains(&name) => out.push(name),
            Some(inner) => unread_keys(inner, &format!("{name}."), read, out),
            None => {}
        }
    }
}

fn non_empty_str(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.trim().is_empty())
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bakend.json");
        std::fs::write(&path, json).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(Some(&path), &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_when_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(Some(&dir.path().join("bakend.json")), &|_| None).unwrap();
        assert!(!cfg.config_file_exists);
        assert_eq!(cfg.port, 8080);
        assert_eq!(
            cfg.database,
            DatabaseLocation::File(dir.path().join("bakend.db"))
        );
        assert_eq!(cfg.storage, dir.path().join("storage"));
        assert_eq!(cfg.log_level, LogLevel::Info);
        assert!(cfg.auth.jwt_secret.is_none());
        assert_eq!(cfg.auth.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn unknown_keys_warn_with_their_names() {
        let cfg = load(
            r#"{"port": 9000, "collectionsDir": "x", "auth": {"ttl": 1}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(cfg.port, 9000);
        assert_eq!(cfg.warnings.len(), 2);
        assert!(cfg.warnings[0].contains("\"collectionsDir\""));
        assert!(cfg.warnings[1].contains("\"auth.ttl\""));
    }

    const EVERY_KEY_FILE: &str = r#"{
              "port": 8081, "database": "./x.db", "storage": {"path": "./s", "maxFileSize": 10,
                          "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9000",
                                 "region": "eu-west-1", "accessKeyId": "k",
                                 "secretAccessKey": "s"}},
              "logLevel": "WARN", "logFile": "./bak.log",
              "auth": {"jwtSecret": "s", "accessTokenTtl": "15m", "refreshTokenTtl": "7d",
                       "rateLimit": {"attempts": 5, "windowSeconds": 60},
                       "maxConcurrentHashes": 2, "hashQueue": 8, "hashQueueTimeoutMs": 100},
              "dashboard": {"enabled": false},
              "api": {"corsOrigins": ["*"], "maxBodyBytes": 2048, "defaultPerPage": 10,
                      "maxPerPage": 100},
              "http": {"headerReadTimeoutMs": 1000, "keepAliveTimeoutMs": 2000},
              "realtime": {"maxSubscriptions": 10, "heartbeatSeconds": 30,
                           "tokenGraceSeconds": 10, "maxMessageBytes": 1024,
                           "queueCapacity": 64, "journal": true, "journalMaxEvents": 10,
                           "journalMaxAgeHours": 1, "maxReplayEvents": 10,
                           "journalSegmentEvents": 16},
              "jobs": {"timezone": "UTC", "historyLimit": 5, "timeoutSeconds": 5,
                       "shutdownGraceSeconds": 1},
              "functions": {"workers": 1, "queueCapacity": 8, "timeoutMs": 100,
                            "memoryLimitMb": 8, "stackSizeKb": 256},
              "metrics": {"enabled": true, "token": null},
              "postgres": {"schema": "bak", "poolSize": 4, "statementTimeoutMs": 1000}
            }"#;

    /// Keys are declared once, where they are read: a file setting every key the
    /// configuration guide documents gets no "unknown key" warning, and a misspelt one does.
    #[test]
    fn every_documented_key_is_known() {
        let cfg = load(EVERY_KEY_FILE, &[]).unwrap();
        assert_eq!(cfg.warnings, Vec::<String>::new());
        // Every key the guide names is in the file above.
        let guide = include_str!("../../../docs/configuration.md");
        for key in guide.split('`').skip(1).step_by(2) {
            let section = key.split('.').next().unwrap_or("");
            let documented = key.contains('.')
                && [
                    "auth",
                    "api",
                    "dashboard",
                    "http",
                    "realtime",
                    "jobs",
                    "functions",
                    "metrics",
                    "storage",
                    "postgres",
                ]
                .contains(&section);
            if documented {
                let last = key.rsplit('.').next().unwrap_or(key);
                assert!(
                    guide.contains(key) && EVERY_KEY_FILE.contains(&format!("\"{last}\"")),
                    "{key} is documented but not in this test"
                );
            }
        }
        let cfg = load(r#"{"realtime": {"queueCapacty": 64}}"#, &[]).unwrap();
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].contains("\"realtime.queueCapacty\""));
    }

    #[test]
    fn bad_values_name_the_key_and_file() {
        for (json, key) in [
            (r#"{"port": "8080"}"#, "port"),
            (r#"{"port": 0}"#, "port"),
            (r#"{"database": ""}"#, "database"),
            (r#"{"logLevel": "info"}"#, "logLevel"),
            (r#"{"auth": {"jwtSecret": "  "}}"#, "auth.jwtSecret"),
            (r#"{"auth": {"jwtSecret": 42}}"#, "auth.jwtSecret"),
            (
                r#"{"auth": {"accessTokenTtl": "15 m"}}"#,
                "auth.accessTokenTtl",
            ),
            (r#"{"dashboard": {"enabled": "yes"}}"#, "dashboard.enabled"),
            (r#"{"api": {"maxBodyBytes": -1}}"#, "api.maxBodyBytes"),
        ] {
            let err = load(json, &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
            assert!(text.contains("bakend.json"), "{json}: {text}");
        }
    }

    #[test]
    fn password_hashing_bound() {
        let cfg = load("{}", &[]).unwrap();
        assert_eq!(
            cfg.auth.max_concurrent_hashes,
            default_max_concurrent_hashes()
        );
        assert!(cfg.auth.max_concurrent_hashes >= 1);
        assert_eq!(cfg.auth.hash_queue, DEFAULT_HASH_QUEUE);
        assert_eq!(cfg.auth.hash_queue_timeout, Duration::from_secs(5));
        let cfg = load(
            r#"{"auth": {"maxConcurrentHashes": 3, "hashQueue": 0, "hashQueueTimeoutMs": 250}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(cfg.auth.max_concurrent_hashes, 3);
        assert_eq!(cfg.auth.hash_queue, 0);
        assert_eq!(cfg.auth.hash_queue_timeout, Duration::from_millis(250));
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        for (json, key) in [
            (
                r#"{"auth": {"maxConcurrentHashes": 0}}"#,
                "auth.maxConcurrentHashes",
            ),
            (r#"{"auth": {"hashQueue": -1}}"#, "auth.hashQueue"),
            (
                r#"{"auth": {"hashQueueTimeoutMs": 0}}"#,
                "auth.hashQueueTimeoutMs",
            ),
        ] {
            let text = load(json, &[]).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
        }
    }

    #[test]
    fn cluster_settings_from_the_file_and_the_environment() {
        let pg = r#""database": "postgres://u:secret@db/app""#;
        let cfg = load(
            &format!(
                r#"{{{pg}, "cluster": {{"nats": "nats://127.0.0.1:4222", "nodeId": "web-1"}}}}"#
            ),
            &[],
        )
        .unwrap();
        assert_eq!(cfg.cluster.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        let DatabaseLocation::Postgres(p) = &cfg.database else {
            panic!("postgres")
        };
        assert_eq!(p.options.node_id.as_deref(), Some("web-1"));
        let cfg = load(
            &format!("{{{pg}}}"),
            &[
                ("BAKEND_CLUSTER_NATS", "nats://10.0.0.5:4222"),
                ("BAKEND_CLUSTER_NODE_ID", "b"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.cluster.nats.as_deref(), Some("nats://10.0.0.5:4222"));
        assert_eq!(cfg.cluster.node_id.as_deref(), Some("b"));
        // Refused: NATS on SQLite, a URL that is not NATS, a node name with spaces.
        let e = load(r#"{"cluster": {"nats": "nats://127.0.0.1:4222"}}"#, &[]).unwrap_err();
        assert!(e.to_string().contains("PostgreSQL"), "{e}");
        let e = load(
            &format!(r#"{{{pg}, "cluster": {{"nats": "http://x:1"}}}}"#),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("cluster.nats"), "{e}");
        let e = load(&format!(r#"{{{pg}, "cluster": {{"nodeId": "a b"}}}}"#), &[]).unwrap_err();
        assert!(e.to_string().contains("cluster.nodeId"), "{e}");
        let e = load(&format!("{{{pg}}}"), &[("BAKEND_CLUSTER_NODE_ID", "")]).unwrap_err();
        assert!(e.to_string().contains("BAKEND_CLUSTER_NODE_ID"), "{e}");
    }

    #[test]
    fn storage_is_a_path_or_an_object() {
        let cfg = load(r#"{"storage": "./files-here"}"#, &[]).unwrap();
        assert!(cfg.storage.ends_with("files-here"));
        assert_eq!(cfg.max_file_size, DEFAULT_MAX_FILE_SIZE);
        let cfg = load(
            r#"{"storage": {"path": "blobs", "maxFileSize": 5242880}}"#,
            &[],
        )
        .unwrap();
        assert!(cfg.storage.ends_with("blobs"));
        assert_eq!(cfg.max_file_size, 5 * 1024 * 1024);
        let cfg = load(
            r#"{"storage": {"maxFileSize": 1024}}"#,
            &[("BAKEND_STORAGE", "env-dir")],
        )
        .unwrap();
        assert!(cfg.storage.ends_with("env-dir"));
        assert_eq!(cfg.max_file_size, 1024);
        for (json, key) in [
            (r#"{"storage": ""}"#, "storage"),
            (r#"{"storage": 5}"#, "storage"),
            (r#"{"storage": {"path": ""}}"#, "storage.path"),
            (r#"{"storage": {"maxFileSize": 0}}"#, "storage.maxFileSize"),
            (
                r#"{"storage": {"maxFileSize": "10MB"}}"#,
                "storage.maxFileSize",
            ),
            (r#"{"storage": {"maxFileSize": -1}}"#, "storage.maxFileSize"),
        ] {
            let text = load(json, &[]).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
        }
        let cfg = load(r#"{"storage": {"pth": "x"}}"#, &[]).unwrap();
        assert!(cfg.warnings[0].contains("\"storage.pth\""));
    }

    #[test]
    fn storage_s3_section() {
        let cfg = load(r#"{"storage": {"maxFileSize": 1024}}"#, &[]).unwrap();
        assert!(cfg.s3.is_none());
        let cfg = load(
            r#"{"storage": {"s3": {"bucket": "uploads", "endpoint": "http://127.0.0.1:9000/",
                "accessKeyId": "AKID", "secretAccessKey": "hunter2"}}}"#,
            &[],
        )
        .unwrap();
        let s3 = cfg.s3.clone().unwrap();
        assert_eq!(s3.bucket, "uploads");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, DEFAULT_S3_REGION);
        assert_eq!(s3.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("hunter2"));
        // The temporary folder keeps its default; the secret never shows.
        assert!(cfg.storage.ends_with("storage"));
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert_eq!(
            s3.describe(),
            "S3 bucket \"uploads\" at http://127.0.0.1:9000"
        );

        // The environment alone, or over the file.
        let cfg = load(
            r#"{"storage": {"s3": {"bucket": "file-bucket", "region": "eu-west-1"}}}"#,
            &[
                ("BAKEND_STORAGE_S3_BUCKET", "env-bucket"),
                ("BAKEND_STORAGE_S3_ENDPOINT", "https://s3.example"),
                ("BAKEND_STORAGE_S3_ACCESS_KEY_ID", "id"),
                ("BAKEND_STORAGE_S3_SECRET_ACCESS_KEY", "secret"),
            ],
        )
        .unwrap();
        let s3 = cfg.s3.unwrap();
        assert_eq!(s3.bucket, "env-bucket");
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("secret"));
        let cfg = load(
            "{}",
            &[
                ("BAKEND_STORAGE_S3_BUCKET", "b"),
                ("BAKEND_STORAGE_S3_REGION", "auto"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.s3.unwrap().region, "auto");

        // A missing bucket, and other mistakes, name the key; the secret is never echoed.
        for (json, env, key) in [
            (
                r#"{"storage": {"s3": {"endpoint": "http://h:1", "secretAccessKey": "hunter2", "accessKeyId": "k"}}}"#,
                vec![],
                "storage.s3.bucket",
            ),
            (
                "{}",
                vec![("BAKEND_STORAGE_S3_SECRET_ACCESS_KEY", "hunter2")],
                "storage.s3.bucket",
            ),
            (r#"{"storage": {"s3": "b"}}"#, vec![], "storage.s3"),
            (
                r#"{"storage": {"s3": {"bucket": ""}}}"#,
                vec![],
                "storage.s3.bucket",
            ),
            (
                r#"{"storage": {"s3": {"bucket": "b", "endpoint": "s3.example"}}}"#,
                vec![],
                "storage.s3.endpoint",
            ),
            (
                r#"{"storage": {"s3": {"bucket": "b", "secretAccessKey": "hunter2"}}}"#,
                vec![],
                "storage.s3.secretAccessKey",
            ),
        ] {
            let text = load(json, &env).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
            assert!(!text.contains("hunter2"), "{json}: {text}");
        }
        assert!(load("{}", &[("BAKEND_STORAGE_S3_BUCKET", " ")]).is_err());
        let cfg = load(
            r#"{"storage": {"s3": {"bucket": "b", "acessKeyId": "k"}}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].contains("\"storage.s3.acessKeyId\""));
    }

    #[test]
    fn env_overrides_are_strict() {
        assert_eq!(load("{}", &[("BAKEND_PORT", "9001")]).unwrap().port, 9001);
        assert!(load("{}", &[("BAKEND_PORT", "8080abc")]).is_err());
        assert!(load("{}", &[("BAKEND_PORT", "70000")]).is_err());
        assert!(load("{}", &[("BAKEND_AUTH_JWT_SECRET", " ")]).is_err());
        assert!(load("{}", &[("BAKEND_DASHBOARD_ENABLED", "yes")]).is_err());
        assert_eq!(
            load("{}", &[("BAKEND_LOG_LEVEL", "WARN")])
                .unwrap()
                .log_level,
            LogLevel::Warn
        );
    }

    #[test]
    fn http_section() {
        let cfg = load("{}", &[]).unwrap();
        assert_eq!(cfg.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(cfg.http.keep_alive_timeout, Duration::from_secs(60));
        let cfg = load(
            r#"{"http": {"headerReadTimeoutMs": 2500, "keepAliveTimeoutMs": 1000}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(cfg.http.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.http.keep_alive_timeout, Duration::from_millis(1000));
        for (json, key) in [
            (r#"{"http": 1}"#, "http"),
            (
                r#"{"http": {"headerReadTimeoutMs": 0}}"#,
                "http.headerReadTimeoutMs",
            ),
            (
                r#"{"http": {"keepAliveTimeoutMs": "5"}}"#,
                "http.keepAliveTimeoutMs",
            ),
        ] {
            let text = load(json, &[]).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
        }
    }

    #[test]
    fn jobs_section() {
        let cfg = load("{}", &[]).unwrap();
        assert_eq!(cfg.jobs.timezone, "UTC");
        assert_eq!(cfg.jobs.history_limit, 100);
        let cfg = load(
            r#"{"jobs": {"timezone": "Europe/Berlin", "historyLimit": 5, "timeoutSeconds": 60, "shutdownGraceSeconds": 0}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(cfg.jobs.timezone, "Europe/Berlin");
        assert_eq!(cfg.jobs.history_limit, 5);
        assert_eq!(cfg.jobs.timeout, Duration::from_secs(60));
        assert_eq!(cfg.jobs.shutdown_grace, Duration::ZERO);
        for (json, key) in [
            (r#"{"jobs": 1}"#, "jobs"),
            (r#"{"jobs": {"timezone": "Mars/Base"}}"#, "jobs.timezone"),
            (r#"{"jobs": {"timezone": 1}}"#, "jobs.timezone"),
            (r#"{"jobs": {"historyLimit": 0}}"#, "jobs.historyLimit"),
            (
                r#"{"jobs": {"timeoutSeconds": "5"}}"#,
                "jobs.timeoutSeconds",
            ),
        ] {
            let text = load(json, &[]).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
        }
        let cfg = load(r#"{"jobs": {"tz": "UTC"}}"#, &[]).unwrap();
        assert!(cfg.warnings[0].contains("\"jobs.tz\""));
    }

    #[test]
    fn metrics_section() {
        let cfg = load("{}", &[]).unwrap();
        assert!(!cfg.metrics.enabled);
        assert_eq!(cfg.metrics.token, None);
        let token = "scrape-0123456789abcdef";
        let cfg = load(
            &format!(r#"{{"metrics": {{"enabled": true, "token": "{token}"}}}}"#),
            &[],
        )
        .unwrap();
        assert!(cfg.metrics.enabled);
        assert_eq!(cfg.metrics.token.as_deref(), Some(token));
        let cfg = load(r#"{"metrics": {"enabled": true, "token": null}}"#, &[]).unwrap();
        assert_eq!(cfg.metrics.token, None);
        let cfg = load(
            "{}",
            &[
                ("BAKEND_METRICS_ENABLED", "true"),
                ("BAKEND_METRICS_TOKEN", token),
            ],
        )
        .unwrap();
        assert!(cfg.metrics.enabled);
        assert_eq!(cfg.metrics.token.as_deref(), Some(token));
        for (json, key) in [
            (r#"{"metrics": true}"#, "metrics"),
            (r#"{"metrics": {"enabled": "yes"}}"#, "metrics.enabled"),
            (r#"{"metrics": {"token": "short"}}"#, "metrics.token"),
            (
                r#"{"metrics": {"token": 1234567890123456789}}"#,
                "metrics.token",
            ),
            (
                r#"{"metrics": {"token": "has a space in it, too long"}}"#,
                "metrics.token",
            ),
        ] {
            let text = load(json, &[]).unwrap_err().to_string();
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text}");
        }
        assert!(load("{}", &[("BAKEND_METRICS_ENABLED", "1")]).is_err());
        assert!(load("{}", &[("BAKEND_METRICS_TOKEN", "short")]).is_err());
        let cfg = load(r#"{"metrics": {"path": "/m"}}"#, &[]).unwrap();
        assert!(cfg.warnings[0].contains("\"metrics.path\""));
    }

    #[test]
    fn invalid_json_and_non_object_root() {
        assert!(matches!(
            load("{", &[]),
            Err(ConfigError::InvalidJson { .. })
        ));
        assert!(matches!(
            load("[]", &[]),
            Err(ConfigError::NotObject { .. })
        ));
    }

    #[test]
    fn ttl_format() {
        assert_eq!(parse_ttl("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("0s"), Some(Duration::ZERO));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(604_800)));
        for bad in ["", "m", "15", "1w", "1.5h", "-1s", " 1s"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }

    /// `postgres://` and `postgresql://` select PostgreSQL with the `postgres` section,
    /// whether the section comes before or after `database`, or the URL from the environment.
    #[test]
    fn a_postgres_url_selects_postgresql() {
        let pg = |cfg: &Config| match &cfg.database {
            DatabaseLocation::Postgres(p) => p.clone(),
            other => panic!("not PostgreSQL: {other:?}"),
        };
        let cfg = load(
            r#"{"postgres": {"schema": "app", "poolSize": 3}, "database": "postgres://u:pw@h/db"}"#,
            &[],
        )
        .unwrap();
        let p = pg(&cfg);
        assert_eq!(p.url, "postgres://u:pw@h/db");
        assert_eq!(p.options.schema, "app");
        assert_eq!(p.options.pool_size, 3);
        assert_eq!(p.options.statement_timeout, Duration::from_secs(30));
        let cfg = load(
            r#"{"database": "./x.db", "postgres": {"statementTimeoutMs": 0}}"#,
            &[("BAKEND_DATABASE", "postgresql://127.0.0.1/x")],
        )
        .unwrap();
        let p = pg(&cfg);
        assert_eq!(p.url, "postgresql://127.0.0.1/x");
        assert_eq!(p.options.statement_timeout, Duration::ZERO);
        assert_eq!(p.options.pool_size, 8);
        assert!(matches!(
            load(r#"{"database": "data/app.db"}"#, &[])
                .unwrap()
                .database,
            DatabaseLocation::File(_)
        ));
    }

    /// A URL with any other scheme is refused, never turned into a file named after it; the
    /// message does not show the password.
    #[test]
    fn other_schemes_are_refused_without_showing_the_password() {
        for (file, env) in [
            (r#"{"database": "mysql://root:hunter2@db/app"}"#, vec![]),
            (
                "{}",
                vec![("BAKEND_DATABASE", "mysql://root:hunter2@db/app")],
            ),
        ] {
            let err = load(file, &env).unwrap_err().to_string();
            assert!(err.contains("unsupported scheme \"mysql://\""), "{err}");
            assert!(err.contains("mysql://root:***@db/app"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        for bad in [
            r#"{"postgres": {"poolSize": 1}}"#,
            r#"{"postgres": {"schema": "a-b"}}"#,
            r#"{"postgres": {"schema": ""}}"#,
            r#"{"postgres": 3}"#,
        ] {
            assert!(load(bad, &[]).is_err(), "{bad}");
        }
        assert_eq!(
            redact_url("postgres://bak:s3cr:et@db.example:5432/app?sslmode=disable"),
            "postgres://bak:***@db.example:5432/app?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u:p@h"), "postgres://u:***@h");
    }
}
