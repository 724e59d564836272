//! Start-up and shutdown of the whole server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use bakend_auth::AuthService;
use bakend_auth::Rule;
use bakend_core::config::Config;
use bakend_events::{EventBus, LocalBus};
use bakend_functions::watch::DirWatcher;
use bakend_functions::{FunctionsConfig, FunctionsHost};
use bakend_realtime::{Hub, ReadRules};
use bakend_storage::{FileService, LocalBlobStore};
use bakend_store::collections::sync;
use bakend_store::db::DbLock;
use bakend_store::db::migrations::{meta_get, meta_set};
use bakend_store::{Committed, Database, RecordStore, Registry, StoreError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::metrics::{self, HttpMetrics};
use crate::state::{AppState, JobsView};
use crate::{cors, error, routes, startup_jobs};

/// The secret upstream shipped as a default; using it is worth a warning.
const UPSTREAM_DEFAULT_SECRET: &str = "dev-only-change-me";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Collections(String),
    #[error("Database error: {0}")]
    Database(StoreError),
    #[error("Failed to start server. Is port {0} in use?")]
    Bind(u16),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "Another Bakend server (or a bak migrate/restore command) is using the database {0}. Stop it first."
    )]
    Locked(String),
    /// A function file failed to compile or load (fatal at start, per the spec).
    #[error("{0}")]
    Functions(String),
    /// A job file failed to load or validate (fatal at start).
    #[error("{0}")]
    Jobs(String),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Definition(m) => StartError::Collections(m),
            other => StartError::Database(other),
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    db: Arc<Database>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    purge: JoinHandle<()>,
    functions: Option<Arc<FunctionsHost>>,
    watchers: Vec<DirWatcher>,
    /// Released (by dropping) only after the database is closed.
    _lock: Option<DbLock>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish, then flushes and closes the database.
    pub async fn shutdown(mut self) {
        tracing::info!("Shutting down");
        // --- jobs: timers stop, running jobs get a bounded grace (the database is still open).
        startup_jobs::stop(&self.state.jobs.jobs, self.state.jobs.local.as_ref()).await;
        // --- end jobs
        self.state.realtime.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::error!("HTTP server task failed: {e}");
        }
        self.purge.abort();
        let watchers = std::mem::take(&mut self.watchers);
        if let Some(functions) = self.functions.take() {
            // Joins the watcher and JS worker threads; never on the async executor.
            let _ = tokio::task::spawn_blocking(move || {
                drop(watchers);
                functions.shutdown();
            })
            .await;
        }
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        let stats = self.db.writer_stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (commits, writes) = (load(&stats.commits), load(&stats.writes));
        tracing::info!(
            "Database closed: {writes} write(s) in {commits} commit(s), {:.1} per commit, {} rolled back",
            writes as f64 / commits.max(1) as f64,
            load(&stats.failed)
        );
    }
}

pub async fn start(config: Config) -> Result<Server, StartError> {
    start_with_bus(config, LocalBus::new()).await
}

/// Starts with a given bus, so a caller can subscribe before anything is emitted.
pub async fn start_with_bus(config: Config, bus: Arc<dyn EventBus>) -> Result<Server, StartError> {
    // Collection files are read and checked before the database is touched, so a bad file
    // leaves no trace.
    let files = sync::read_dir(&config.project_dir.join("collections"))?;
    let fresh = match &config.database {
        bakend_core::config::DatabaseLocation::File(p) => !p.exists(),
        bakend_core::config::DatabaseLocation::Memory => true,
    };
    if fresh {
        sync::check_relations_among(&files)?;
    }

    // One server per database; `bak migrate apply` and `bak backup restore` take the same lock.
    let lock = match &config.database {
        bakend_core::config::DatabaseLocation::File(p) => Some(
            DbLock::try_acquire(p)?.ok_or_else(|| StartError::Locked(p.display().to_string()))?,
        ),
        bakend_core::config::DatabaseLocation::Memory => None,
    };

    let location = config.database.clone();
    let open_bus = bus.clone();
    let journal = config
        .realtime
        .journal
        .then_some(config.realtime.journal_segment_events);
    let db = tokio::task::spawn_blocking(move || Database::open_with(&location, open_bus, journal))
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    let db = Arc::new(db);

    let storage_root = config.storage.clone();
    let blobs = tokio::task::spawn_blocking(move || LocalBlobStore::open(&storage_root))
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    let file_service = Arc::new(FileService::new(
        db.clone(),
        Arc::new(blobs),
        config.max_file_size,
    ));
    // Uploads a crash interrupted left their temporary files behind; no upload is running yet.
    match file_service.clean_temp().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("Removed {n} interrupted upload(s) from the storage tmp folder"),
        Err(e) => tracing::warn!("Cleaning the storage tmp folder failed: {e}"),
    }
    tracing::debug!("Storage initialized at {}", config.storage.display());

    let registry = Arc::new(Registry::default());
    let report = match sync::apply(&db, &registry, files).await {
        Ok(r) => r,
        Err(e) => {
            close(&db).await;
            return Err(e.into());
        }
    };
    for name in &report.recreated_tables {
        tracing::warn!("Collection table was missing and has been re-created: {name}");
    }
    for name in &report.created {
        tracing::info!("Collection created: {name}");
    }
    for u in &report.updated {
        tracing::info!(
            "Collection updated: {} (from {}: {})",
            u.name,
            u.file.display(),
            u.changes.join(", ")
        );
    }

    let jwt_secret = match resolve_secret(&config, &db).await {
        Ok(s) => s,
        Err(e) => {
            close(&db).await;
            return Err(e.into());
        }
    };

    let auth = {
        let db = db.clone();
        let secret = jwt_secret.clone();
        let cfg = config.auth.clone();
        tokio::task::spawn_blocking(move || AuthService::new(db, &secret, &cfg))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?
    };
    let auth = Arc::new(auth);
    let journal = db.journal().cloned().map(|info| {
        Arc::new(crate::journal::StoreJournal {
            db: db.clone(),
            info,
        }) as Arc<dyn bakend_realtime::JournalSource>
    });
    let snapshots = Arc::new(crate::journal::RecordSnapshots(RecordStore::new(
        db.clone(),
        registry.clone(),
    ))) as Arc<dyn bakend_realtime::SnapshotSource>;
    let realtime = Hub::start(
        bus.as_ref(),
        auth.clone(),
        Arc::new(RegistryRules(registry.clone())),
        config.realtime.clone(),
        bakend_realtime::HubSources {
            journal,
            snapshots: Some(snapshots),
        },
    );
    if let Err(e) = auth.purge_expired_sessions().await {
        tracing::warn!("Deleting expired sessions failed: {e}");
    }
    let purge = {
        let sessions = tokio::spawn(purge_sessions(auth.clone()));
        let trim = tokio::spawn(crate::journal::trim_forever(
            db.clone(),
            config.realtime.clone(),
        ));
        tokio::spawn(async move {
            // Aborting this task (at shutdown) drops both.
            let _guard = (AbortOnDrop(sessions), AbortOnDrop(trim));
            std::future::pending::<()>().await
        })
    };

    // User functions: compiled and loaded on worker threads; a missing functions/ is fine.
    let records = RecordStore::new(db.clone(), registry);
    let services = crate::user_code::host_services(
        records.clone(),
        file_service.clone(),
        config.api.default_per_page,
        config.api.max_per_page,
    );
    let job_services = (services.clone(), functions_config(&config)); // jobs: same services
    let functions = {
        let dir = config.project_dir.clone();
        let fbus = bus.clone();
        let fconfig = functions_config(&config);
        tokio::task::spawn_blocking(move || FunctionsHost::start(&dir, fbus, fconfig, services))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))?
    };
    let functions = match functions {
        Ok(f) => Arc::new(f),
        Err(e) => {
            purge.abort();
            close(&db).await;
            return Err(StartError::Functions(e.to_string()));
        }
    };
    let mut watchers = Vec::new();
    if config.watch {
        let host = functions.clone();
        let dir = config.project_dir.join("functions");
        match DirWatcher::start(&dir, move || {
            let _ = host.reload();
        }) {
            Ok(w) => {
                tracing::info!("Watching {} for changes", dir.display());
                watchers.push(w);
            }
            Err(e) => tracing::error!("Cannot watch {}: {e}", dir.display()),
        }
    }

    // --- jobs (bakend-jobs): loaded and scheduled after functions; stopped in `shutdown`.
    let jobs = startup_jobs::start(&config, bus.clone(), db.clone(), job_services.clone()).await;
    let jobs = match jobs {
        Ok(j) => j,
        Err(e) => {
            purge.abort();
            let _ = tokio::task::spawn_blocking(move || {
                drop(watchers);
                functions.shutdown();
            })
            .await;
            close(&db).await;
            return Err(e);
        }
    };
    if config.watch {
        watchers.extend(startup_jobs::watch(&config, jobs.clone(), job_services));
    }
    // --- end jobs

    let listener = match bind(config.port).await {
        Ok(l) => l,
        Err(_) => {
            purge.abort();
            jobs.shutdown().await;
            let _ = tokio::task::spawn_blocking(move || {
                drop(watchers);
                functions.shutdown();
            })
            .await;
            close(&db).await;
            return Err(StartError::Bind(config.port));
        }
    };
    let addr = listener.local_addr()?;
    // --- jobs: the token `bak jobs run` uses to reach this server.
    let local_access = startup_jobs::local_access(&config.project_dir, addr.port()).await;
    // --- end jobs

    let config = Arc::new(config);
    let state = AppState {
        config: config.clone(),
        bus,
        records,
        auth,
        realtime,
        files: file_service,
        jobs: JobsView {
            jobs,
            local: local_access,
        },
        functions: functions.clone(),
        http_metrics: HttpMetrics::new(),
        jwt_secret,
    };
    let app = Router::new()
        .route("/api/realtime", any(routes::realtime::endpoint))
        .fallback(routes::dispatch)
        .with_state(state.clone())
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(cors::layer(&config.api.cors_origins));
    // Outermost, so CORS preflights and caught panics are counted too; absent when metrics
    // are off, so they cost nothing then.
    let app = if config.metrics.enabled {
        app.layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            metrics::track,
        ))
    } else {
        app
    };

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let timeouts = crate::http_serve::Timeouts {
        header_read: config.http.header_read_timeout,
        keep_alive: config.http.keep_alive_timeout,
    };
    let task = tokio::spawn(crate::http_serve::serve(listener, app, timeouts, stop_rx));
    Ok(Server {
        addr,
        state,
        db,
        purge,
        stop: Some(stop_tx),
        task,
        functions: Some(functions),
        watchers,
        _lock: lock,
    })
}

/// The engine's defaults with the `functions` section of bakend.json applied.
fn functions_config(config: &Config) -> FunctionsConfig {
    let s = &config.functions;
    let d = FunctionsConfig::default();
    FunctionsConfig {
        workers: s.workers.unwrap_or(d.workers),
        queue_capacity: s.queue_capacity.unwrap_or(d.queue_capacity),
        default_timeout: s.timeout.unwrap_or(d.default_timeout),
        memory_limit: s.memory_limit.unwrap_or(d.memory_limit),
        stack_size: s.stack_size.unwrap_or(d.stack_size),
        ..d
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read rules for the realtime hub, straight from the live collection registry.
struct RegistryRules(Arc<Registry>);

impl ReadRules for RegistryRules {
    fn read_rule(&self, collection: &str) -> Option<(Rule, bool)> {
        let c = self.0.get(collection)?;
        Some((c.def.permissions.read, c.owner_field.is_some()))
    }
}

/// Expired sessions are deleted at start (above) and then every ten minutes.
async fn purge_sessions(auth: Arc<AuthService>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        match auth.purge_expired_sessions().await {
            Ok(n) if n > 0 => tracing::debug!("Deleted {n} expired session(s)"),
            Ok(_) => {}
            Err(e) => tracing::warn!("Deleting expired sessions failed: {e}"),
        }
    }
}

async fn close(db: &Arc<Database>) {
    let db = db.clone();
    let _ = tokio::task::spawn_blocking(move || db.close()).await;
}

/// All interfaces, IPv6 and IPv4 where the system allows both.
async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("::", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
    }
}

/// The configured secret, or one generated once and kept in the database so tokens survive a
/// restart of a project that never configured one.
async fn resolve_secret(config: &Config, db: &Database) -> Result<Arc<str>, StoreError> {
    if let Some(s) = &config.auth.jwt_secret {
        if s == UPSTREAM_DEFAULT_SECRET {
            tracing::warn!(
                "Using default auth.jwtSecret — set auth.jwtSecret in bakend.json for production"
            );
        }
        return Ok(Arc::from(s.as_str()));
    }
    let secret = db
        .write(|conn| {
            if let Some(s) = meta_get(conn, "generated_jwt_secret")? {
                return Ok(Committed::new(s));
            }
            let s = bakend_core::ids::random_secret();
            meta_set(conn, "generated_jwt_secret", &s)?;
            Ok(Committed::new(s))
        })
        .await?;
    tracing::warn!(
        "No auth.jwtSecret is configured: using a generated development secret stored in the database. Set auth.jwtSecret in bakend.json (or BAKEND_AUTH_JWT_SECRET) before production use"
    );
    Ok(Arc::from(secret))
}
