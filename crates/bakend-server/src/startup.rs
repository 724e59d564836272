//! Start-up and shutdown of the whole server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use bakend_auth::{AuthError, AuthService, Permission};
use bakend_core::config::{Config, DatabaseLocation};
use bakend_events::{EventBus, LocalBus};
use bakend_functions::watch::DirWatcher;
use bakend_functions::{FunctionsConfig, FunctionsHost, HostServices};
use bakend_jobs::Jobs;
use bakend_realtime::{Hub, ReadRules};
use bakend_storage::FileService;
use bakend_store::collections::sync;
use bakend_store::db::migrations::{meta_get, meta_set};
use bakend_store::db::{DbLock, Sharing};
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

/// Why the server did not start. Each message is what `bak start` prints, complete in itself:
/// no variant names a `source`, so printing the error chain does not repeat the cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A collection file is invalid (its message names the file).
    #[error("{0}")]
    Collections(String),
    #[error("Database error: {0}")]
    Database(StoreError),
    #[error(
        "Another Bakend server (or a bak migrate/restore command) is using the database {0}. Stop it first."
    )]
    Locked(String),
    /// The storage folder cannot be opened, or the `storage.s3` bucket used.
    #[error("{0}")]
    Storage(bakend_storage::OpenError),
    #[error("Cannot set up accounts: {0}")]
    Accounts(AuthError),
    /// A function file failed to compile or load (fatal at start, per the spec).
    #[error("{0}")]
    Functions(String),
    /// A job file failed to load or validate (fatal at start).
    #[error("{0}")]
    Jobs(String),
    #[error("Failed to start server. Is port {port} in use?")]
    Bind { port: u16, error: std::io::Error },
    #[error("Cannot read the server's listening address: {0}")]
    Address(std::io::Error),
    /// A start-up step run on a blocking thread panicked.
    #[error("A start-up step failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("{0}")]
    Cluster(#[from] bakend_cluster::ClusterError),
}

impl From<AuthError> for StartError {
    fn from(e: AuthError) -> Self {
        StartError::Accounts(e)
    }
}

impl From<tokio::task::JoinError> for StartError {
    fn from(e: tokio::task::JoinError) -> Self {
        StartError::Task(e)
    }
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Definition(m) => StartError::Collections(m),
            other => StartError::Database(other),
        }
    }
}

/// What start-up has started that must be stopped again, in the order it was started:
/// [`Parts::close`] stops it in reverse (jobs, upkeep tasks, watchers and functions, then the
/// database, and only then the database lock).
#[derive(Default)]
struct Parts {
    lock: Option<DbLock>,
    db: Option<Arc<Database>>,
    upkeep: Option<AbortOnDrop>,
    functions: Option<Arc<FunctionsHost>>,
    watchers: Vec<DirWatcher>,
    jobs: Option<Arc<Jobs>>,
}

impl Parts {
    fn is_empty(&self) -> bool {
        self.lock.is_none()
            && self.db.is_none()
            && self.upkeep.is_none()
            && self.functions.is_none()
            && self.watchers.is_empty()
            && self.jobs.is_none()
    }

    async fn close(mut self) {
        if let Some(jobs) = self.jobs.take() {
            jobs.shutdown().await;
        }
        // Joins threads and closes the database: never on the async executor.
        let _ = tokio::task::spawn_blocking(move || self.close_blocking()).await;
    }

    /// Everything but the jobs (which need the runtime to stop).
    fn close_blocking(self) {
        let Parts {
            lock,
            db,
            upkeep,
            functions,
            watchers,
            jobs,
        } = self;
        drop((jobs, upkeep, watchers));
        if let Some(functions) = functions {
            functions.shutdown();
        }
        if let Some(db) = db {
            db.close();
        }
        // Released only once the database is closed.
        drop(lock);
    }
}

/// Stops what start-up had started if it ends early: on an error (awaited, so the database is
/// closed and unlocked when `start` returns), or — by `Drop` — when the start-up future is
/// dropped or panics (then on a blocking thread in the background).
#[derive(Default)]
struct Rollback(Parts);

impl Rollback {
    /// Start-up succeeded: the server owns the parts now.
    fn disarm(&mut self) -> Parts {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        let parts = self.disarm();
        if parts.is_empty() {
            return;
        }
        // Without awaiting, jobs cannot be given their grace; the scheduler's tasks end with
        // the runtime. The rest closes in order on a blocking thread.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || parts.close_blocking())),
            Err(_) => parts.close_blocking(),
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    parts: Parts,
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
        // Jobs first: timers stop, running jobs get a bounded grace (the database is open).
        if let Some(jobs) = self.parts.jobs.take() {
            startup_jobs::stop(&jobs, self.state.jobs.local.as_ref()).await;
        }
        self.state.realtime.shutdown().await;
        let leave = self.state.cluster.leave();
        if tokio::time::timeout(crate::cluster::LEAVE_TIMEOUT, leave)
            .await
            .is_err()
        {
            tracing::warn!("Leaving the cluster timed out");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::error!("HTTP server task failed: {e}");
        }
        let db = self.state.records.database().clone();
        self.parts.close().await;
        let stats = db.writer_stats();
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

/// Starts with a given bus, so a caller can subscribe before anything is emitted. On an error,
/// whatever had started is stopped again before this returns.
pub async fn start_with_bus(config: Config, bus: Arc<dyn EventBus>) -> Result<Server, StartError> {
    let mut rollback = Rollback::default();
    let started = start_steps(config, bus, &mut rollback).await;
    if started.is_err() {
        rollback.disarm().close().await;
    }
    started
}

/// The start-up steps, in order. Each one that leaves something to stop puts it in `rollback`.
async fn start_steps(
    config: Config,
    bus: Arc<dyn EventBus>,
    rollback: &mut Rollback,
) -> Result<Server, StartError> {
    let parts = &mut rollback.0;
    // Collection files are read and checked before the database is touched, so a bad file
    // leaves no trace.
    let files = read_collection_files(&config)?;
    // One server per database; `bak migrate apply` and `bak backup restore` take the same lock.
    parts.lock = lock_database(&config.database).await?;
    let db = parts
        .db
        .insert(open_database(&config, bus.clone()).await?)
        .clone();
    let cluster = crate::cluster::Cluster::start(&config, &db, bus.clone()).await?;
    let file_service = open_storage(&config, &db).await?;
    let registry = Arc::new(Registry::default());
    sync_collections(&db, &registry, files).await?;
    let jwt_secret = resolve_secret(&config, &db).await?;
    let auth = start_accounts(&config, &db, &jwt_secret).await?;
    listen_to_peers(&db, &auth, &registry, &config.project_dir);
    let realtime = start_realtime(&config, bus.as_ref(), &db, &registry, &auth);
    parts.upkeep = Some(start_upkeep(&config, &db, &auth).await);

    // User functions: compiled and loaded on worker threads; a missing functions/ is fine.
    let records = RecordStore::new(db.clone(), registry);
    let services = crate::user_code::host_services(
        records.clone(),
        file_service.clone(),
        config.api.default_per_page,
        config.api.max_per_page,
    );
    let job_services = (services.clone(), functions_config(&config)); // jobs: same services
    let functions = parts
        .functions
        .insert(start_functions(&config, cluster.bus_for_unjournaled(bus.clone()), services).await?)
        .clone();
    parts.watchers.extend(watch_functions(&config, &functions));
    // Triggers of events before this start are not this server's to run (docs/cluster.md).
    if let Some(journal) = db.journal() {
        functions.start_triggers_after(journal.last_seq);
    }
    cluster.spawn_heartbeat(realtime.clone(), functions.clone());

    // Jobs: loaded and scheduled after functions (they share the engine's services).
    let jobs_bus = cluster.bus_for_unjournaled(bus.clone());
    let jobs = startup_jobs::start(&config, jobs_bus, db.clone(), job_services.clone()).await?;
    parts.jobs = Some(jobs.clone());
    if config.watch {
        parts
            .watchers
            .extend(startup_jobs::watch(&config, jobs.clone(), job_services));
    }

    // Listen, then tell `bak jobs run` the port.
    let listener = bind(config.port).await.map_err(|error| StartError::Bind {
        port: config.port,
        error,
    })?;
    let addr = listener.local_addr().map_err(StartError::Address)?;
    let local_access = startup_jobs::local_access(&config.project_dir, addr.port()).await;

    // Serve.
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
        functions,
        http_metrics: HttpMetrics::new(),
        jwt_secret,
        cluster,
    };
    let app = router(&state);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let timeouts = crate::http_serve::Timeouts {
        header_read: config.http.header_read_timeout,
        keep_alive: config.http.keep_alive_timeout,
    };
    let task = tokio::spawn(crate::http_serve::serve(listener, app, timeouts, stop_rx));
    Ok(Server {
        addr,
        state,
        stop: Some(stop_tx),
        task,
        parts: rollback.disarm(),
    })
}

/// Reads and checks `collections/*.json`; relations among them too when the database is new
/// (an existing one is checked against what it holds when the files are applied).
fn read_collection_files(config: &Config) -> Result<Vec<sync::FileDefinition>, StartError> {
    let files = sync::read_dir(&config.project_dir.join("collections"))?;
    let fresh = match &config.database {
        DatabaseLocation::File(p) => !p.exists(),
        DatabaseLocation::Memory => true,
        // Checked against what the database holds when the files are applied.
        DatabaseLocation::Postgres(_) => false,
    };
    if fresh {
        sync::check_relations_among(&files)?;
    }
    Ok(files)
}

/// One attempt at the database lock (blocking).
type TryLock = Arc<dyn Fn() -> Result<Option<DbLock>, StoreError> + Send + Sync>;

async fn lock_database(location: &DatabaseLocation) -> Result<Option<DbLock>, StartError> {
    let try_lock: TryLock = match location {
        DatabaseLocation::File(p) => {
            let p = p.clone();
            Arc::new(move || DbLock::try_acquire(&p))
        }
        DatabaseLocation::Memory => return Ok(None),
        // Servers share the database; only `bak migrate apply` / `bak backup restore` running
        // keeps a server from starting.
        DatabaseLocation::Postgres(settings) => {
            let settings = settings.clone();
            Arc::new(move || DbLock::try_acquire_postgres(&settings, Sharing::Server))
        }
    };
    // A holder that is letting go (a server stopping, or a process of ours that forked while
    // holding it, until its exec closes the file) does so within milliseconds: look again
    // briefly before saying the database is in use. (Blocking calls: off the async threads.)
    for attempt in 0..=LOCK_RETRIES {
        let t = try_lock.clone();
        if let Some(lock) = tokio::task::spawn_blocking(move || t()).await?? {
            return Ok(Some(lock));
        }
        if attempt < LOCK_RETRIES {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Err(StartError::Locked(location_display(location)))
}

fn location_display(location: &DatabaseLocation) -> String {
    match location {
        DatabaseLocation::File(p) => p.display().to_string(),
        DatabaseLocation::Memory => ":memory:".into(),
        DatabaseLocation::Postgres(s) => format!(
            "{} (schema {})",
            bakend_core::config::redact_url(&s.url),
            s.options.schema
        ),
    }
}

/// Looks at a held database lock again for up to 1 s (× 50 ms) before refusing to start.
const LOCK_RETRIES: u32 = 20;

/// Opens (or creates) the database and starts its writer thread.
async fn open_database(
    config: &Config,
    bus: Arc<dyn EventBus>,
) -> Result<Arc<Database>, StartError> {
    let location = config.database.clone();
    let journal = config
        .realtime
        .journal
        .then_some(config.realtime.journal_segment_events);
    let db =
        tokio::task::spawn_blocking(move || Database::open_with(&location, bus, journal)).await??;
    Ok(Arc::new(db))
}

/// Opens the storage folder, or the `storage.s3` bucket (which must exist), and removes uploads
/// a crash interrupted (no upload is running yet).
async fn open_storage(config: &Config, db: &Arc<Database>) -> Result<Arc<FileService>, StartError> {
    let blobs = bakend_storage::open_blobs(&config.storage, config.s3.as_ref())
        .await
        .map_err(StartError::Storage)?;
    let files = Arc::new(FileService::new(db.clone(), blobs, config.max_file_size));
    match files.clean_temp().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("Removed {n} interrupted upload(s) from the storage tmp folder"),
        Err(e) => tracing::warn!("Cleaning the storage tmp folder failed: {e}"),
    }
    match &config.s3 {
        Some(s3) => tracing::info!(
            "Storage: {} (uploads in progress in {})",
            s3.describe(),
            config.storage.join("tmp").display()
        ),
        None => tracing::debug!("Storage initialized at {}", config.storage.display()),
    }
    Ok(files)
}

/// Applies the collection files to the database and loads the registry, logging what changed.
async fn sync_collections(
    db: &Database,
    registry: &Arc<Registry>,
    files: Vec<sync::FileDefinition>,
) -> Result<(), StartError> {
    let report = sync::apply(db, registry, files).await?;
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
    Ok(())
}

async fn start_accounts(
    config: &Config,
    db: &Arc<Database>,
    secret: &Arc<str>,
) -> Result<Arc<AuthService>, StartError> {
    let (db2, secret, cfg) = (db.clone(), secret.clone(), config.auth.clone());
    let auth = tokio::task::spawn_blocking(move || AuthService::new(db2, &secret, &cfg)).await??;
    let auth = Arc::new(auth);
    Ok(auth)
}

/// Several servers on one PostgreSQL database: a role change, deletion or sign-out made through
/// another server applies here at once, and so does a collection created, changed or deleted
/// there (the registry reloads it, and this node's `collections/` file follows). (Weak: the
/// database outlives nothing.)
fn listen_to_peers(
    db: &Arc<Database>,
    auth: &Arc<AuthService>,
    registry: &Arc<Registry>,
    project_dir: &std::path::Path,
) {
    let auth = Arc::downgrade(auth);
    let changed = Arc::new(ChangedCollections::default());
    tokio::spawn(reload_changed_collections(
        changed.clone(),
        Arc::downgrade(db),
        Arc::downgrade(registry),
        project_dir.to_path_buf(),
    ));
    db.on_peer_message(Box::new(move |message| {
        if let Some(name) = bakend_store::collections::manage::collection_of(message) {
            changed.add(name);
        } else if let Some(auth) = auth.upgrade() {
            auth.apply_peer_message(message);
        }
    }));
}

/// Collections other servers changed, not reloaded here yet: a set (a name changed twice
/// before the reload is reloaded once, from what the database holds then), so it stays as
/// small as the collections and loses nothing.
#[derive(Default)]
struct ChangedCollections {
    names: std::sync::Mutex<std::collections::BTreeSet<String>>,
    wake: tokio::sync::Notify,
}

impl ChangedCollections {
    fn add(&self, name: &str) {
        bakend_core::sync::lock(&self.names).insert(name.to_string());
        self.wake.notify_one();
    }

    fn take(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *bakend_core::sync::lock(&self.names))
    }
}

/// Reloads the collections other servers changed, one at a time and in the order of the
/// notifications (each reload reads what the database holds now, so the last one wins, in the
/// registry and in the file), until the server is gone.
async fn reload_changed_collections(
    changed: Arc<ChangedCollections>,
    db: std::sync::Weak<Database>,
    registry: std::sync::Weak<Registry>,
    project_dir: std::path::PathBuf,
) {
    loop {
        changed.wake.notified().await;
        let (Some(db), Some(registry)) = (db.upgrade(), registry.upgrade()) else {
            return;
        };
        for name in changed.take() {
            if let Err(e) = bakend_store::collections::manage::reload(&db, &registry, &name).await {
                tracing::error!(
                    "Reloading collection {name} changed by another server failed: {e}"
                );
                continue;
            }
            crate::collection_files::write_back(&project_dir, &name, &registry).await;
        }
    }
}

/// The realtime hub, reading missed events and snapshots from the database.
fn start_realtime(
    config: &Config,
    bus: &dyn EventBus,
    db: &Arc<Database>,
    registry: &Arc<Registry>,
    auth: &Arc<AuthService>,
) -> Arc<Hub> {
    let journal = db.journal().cloned().map(|info| {
        Arc::new(crate::journal::StoreJournal {
            db: db.clone(),
            info,
        }) as Arc<dyn bakend_realtime::JournalSource>
    });
    let snapshots = Arc::new(crate::journal::RecordSnapshots {
        store: RecordStore::new(db.clone(), registry.clone()),
        default_per_page: config.api.default_per_page,
        max_per_page: config.api.max_per_page,
    }) as Arc<dyn bakend_realtime::SnapshotSource>;
    Hub::start(
        bus,
        auth.clone(),
        Arc::new(RegistryRules(registry.clone())),
        config.realtime.clone(),
        bakend_realtime::HubSources {
            journal,
            snapshots: Some(snapshots),
        },
    )
}

/// Deletes expired sessions now, then keeps deleting them and trimming the event journal in
/// the background until the returned guard is dropped.
async fn start_upkeep(config: &Config, db: &Arc<Database>, auth: &Arc<AuthService>) -> AbortOnDrop {
    if let Err(e) = auth.purge_expired_sessions().await {
        tracing::warn!("Deleting expired sessions failed: {e}");
    }
    let sessions = tokio::spawn(purge_sessions(auth.clone()));
    let trim = tokio::spawn(crate::journal::trim_forever(
        db.clone(),
        config.realtime.clone(),
    ));
    AbortOnDrop(tokio::spawn(async move {
        // Aborting this task drops both.
        let _guard = (AbortOnDrop(sessions), AbortOnDrop(trim));
        std::future::pending::<()>().await
    }))
}

async fn start_functions(
    config: &Config,
    bus: Arc<dyn EventBus>,
    services: HostServices,
) -> Result<Arc<FunctionsHost>, StartError> {
    let dir = config.project_dir.clone();
    let fconfig = functions_config(config);
    let host =
        tokio::task::spawn_blocking(move || FunctionsHost::start(&dir, bus, fconfig, services))
            .await?
            .map_err(|e| StartError::Functions(e.to_string()))?;
    Ok(Arc::new(host))
}

/// `bak dev` / `--watch`: reloads the functions when a file below `functions/` changes.
fn watch_functions(config: &Config, functions: &Arc<FunctionsHost>) -> Option<DirWatcher> {
    if !config.watch {
        return None;
    }
    let host = functions.clone();
    let dir = config.project_dir.join("functions");
    match DirWatcher::start(&dir, move || {
        let _ = host.reload();
    }) {
        Ok(w) => {
            tracing::info!("Watching {} for changes", dir.display());
            Some(w)
        }
        Err(e) => {
            tracing::error!("Cannot watch {}: {e}", dir.display());
            None
        }
    }
}

fn router(state: &AppState) -> Router {
    let config = &state.config;
    let app = Router::new()
        .route(
            routes::table::REALTIME_PATH,
            any(routes::realtime::endpoint),
        )
        .fallback(routes::dispatch)
        .with_state(state.clone())
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(cors::layer(&config.api.cors_origins));
    // Outermost, so CORS preflights and caught panics are counted too; absent when metrics
    // are off, so they cost nothing then.
    if config.metrics.enabled {
        app.layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            metrics::track,
        ))
    } else {
        app
    }
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
    fn read_rule(&self, collection: &str) -> Option<(Permission, bool)> {
        let c = self.0.get(collection)?;
        Some((c.def.permissions.read.clone(), c.layout.has_owner()))
    }

    fn filter_schema(&self, collection: &str) -> Option<bakend_filter::Schema> {
        Some(self.0.get(collection)?.filter_schema().clone())
    }
}

/// Expired sessions are deleted at start (`start_upkeep`) and then every ten minutes.
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
