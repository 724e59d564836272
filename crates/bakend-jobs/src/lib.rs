//! Cron-scheduled jobs (spec `functions-and-jobs.md` §4, issue 7).
//!
//! `jobs/**/*.ts` files are loaded by the JavaScript engine (`bakend-functions`), which reports
//! each file's exports; [`definition`] turns them into [`JobDef`]s (load errors name the file and,
//! for the schedule, the cron field). [`Jobs`] runs the scheduler task: each job fires once per
//! due tick ([`timetable`]), never concurrently with itself (a tick that finds it running is
//! skipped and logged), with retries, `job.*` events and a run history persisted in SQLite
//! ([`history`]). Shutdown stops the timers and waits, bounded, for running jobs.

pub mod cron;
pub mod definition;
pub mod discovery;
pub mod engine;
mod error;
pub mod history;
pub mod local_access;
mod run;
pub mod scripts;
pub mod timetable;

use bakend_core::sync;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bakend_events::EventBus;
use bakend_store::Database;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

pub use definition::{JobDef, JobDefaults, JobSource, validate_all};
pub use engine::{JobEngine, RunFuture};
pub use error::JobsError;
pub use history::{Claim, History, JobRun, RunStatus, Trigger};

use run::Runner;
use timetable::Timetable;

/// Tunables of the jobs subsystem (from the `jobs` section of `bakend.json`).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    pub defaults: JobDefaults,
    /// Runs kept per job in the history.
    pub history_limit: u32,
    /// How long shutdown waits for running jobs before abandoning them.
    pub shutdown_grace: Duration,
    /// Run jobs on their schedules (off: only manual runs).
    pub schedule: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            defaults: JobDefaults::default(),
            history_limit: 100,
            shutdown_grace: Duration::from_secs(10),
            schedule: true,
        }
    }
}

impl JobsConfig {
    /// From the server configuration.
    pub fn from_config(c: &bakend_core::config::JobsConfig) -> Result<JobsConfig, JobsError> {
        let tz =
            cron::parse_tz(&c.timezone).ok_or_else(|| JobsError::TimeZone(c.timezone.clone()))?;
        Ok(JobsConfig {
            defaults: JobDefaults {
                tz,
                timeout: c.timeout,
                ..JobDefaults::default()
            },
            history_limit: c.history_limit,
            shutdown_grace: c.shutdown_grace,
            schedule: c.schedule,
        })
    }
}

/// The wall clock; a trait so tests can move it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// One job as listed by the admin API and `bak jobs list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub name: String,
    pub file: String,
    pub schedule: String,
    pub timezone: String,
    pub next_run: Option<DateTime<Utc>>,
    pub running: bool,
}

/// Counters, readable while the scheduler runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub started: AtomicU64,
    /// Ticks that found their job still running.
    pub skipped: AtomicU64,
    /// Runs that ended, by outcome (a run counts once, however many attempts it took).
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

struct Shared {
    defs: RwLock<Arc<Vec<Arc<JobDef>>>>,
    engine: RwLock<Arc<dyn JobEngine>>,
    runner: Runner,
    /// Job name → run id of its run in progress.
    running: Mutex<HashMap<String, String>>,
    idle: Notify,
    reload: Notify,
    clock: Arc<dyn Clock>,
    stats: Stats,
    stopping: watch::Sender<bool>,
}

/// Marks a job as running; dropping it (when the run task ends, however it ends) clears it.
struct RunGuard {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut r = sync::lock(&self.shared.running);
        r.remove(&self.name);
        if r.is_empty() {
            self.shared.idle.notify_waiters();
        }
    }
}

impl Shared {
    fn current(&self) -> Arc<Vec<Arc<JobDef>>> {
        sync::read(&self.defs).clone()
    }

    fn find(&self, name: &str) -> Option<Arc<JobDef>> {
        self.current().iter().find(|d| d.name == name).cloned()
    }

    fn is_running(&self, name: &str) -> bool {
        sync::lock(&self.running).contains_key(name)
    }

    /// Claims `name` for a new run, or `None` if it is already running.
    fn begin(self: &Arc<Self>, name: &str, run_id: &str) -> Option<RunGuard> {
        let mut r = sync::lock(&self.running);
        if r.contains_key(name) {
            return None;
        }
        r.insert(name.to_string(), run_id.to_string());
        Some(RunGuard {
            shared: self.clone(),
            name: name.to_string(),
        })
    }

    /// Starts a run in its own task; the receiver gets the finished entry.
    fn spawn_run(
        self: &Arc<Self>,
        def: Arc<JobDef>,
        trigger: Trigger,
    ) -> Result<oneshot::Receiver<JobRun>, JobsError> {
        self.spawn_run_from(def, trigger, 1)
    }

    /// Starts a run whose first attempt is `first_attempt` (a lost node's run, continued).
    fn spawn_run_from(
        self: &Arc<Self>,
        def: Arc<JobDef>,
        trigger: Trigger,
        first_attempt: u32,
    ) -> Result<oneshot::Receiver<JobRun>, JobsError> {
        if *self.stopping.borrow() {
            return Err(JobsError::ShuttingDown);
        }
        let run_id = uuid::Uuid::new_v4().to_string();
        let guard = self
            .begin(&def.name, &run_id)
            .ok_or_else(|| JobsError::AlreadyRunning(def.name.clone()))?;
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let engine = sync::read(&self.engine).clone();
        let runner = self.runner.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let run = runner
                .execute(def, engine, trigger, run_id, first_attempt)
                .await;
            let outcome = match run.status {
                RunStatus::Completed => &guard.shared.stats.completed,
                _ => &guard.shared.stats.failed,
            };
            outcome.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            let _ = tx.send(run);
        });
        Ok(rx)
    }
}

/// The running jobs subsystem.
pub struct Jobs {
    shared: Arc<Shared>,
    config: JobsConfig,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Jobs {
    /// Starts the scheduler. Call inside a tokio runtime. (The server first closes the history
    /// rows a previous run of it left `running`: [`History::recover`].)
    pub async fn start(
        defs: Vec<JobDef>,
        engine: Arc<dyn JobEngine>,
        bus: Arc<dyn EventBus>,
        db: Arc<Database>,
        config: JobsConfig,
    ) -> Result<Jobs, JobsError> {
        Self::start_with_clock(defs, engine, bus, db, config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        defs: Vec<JobDef>,
        engine: Arc<dyn JobEngine>,
        bus: Arc<dyn EventBus>,
        db: Arc<Database>,
        config: JobsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Jobs, JobsError> {
        let history = History::new(db, config.history_limit);
        let (stop_tx, stop_rx) = watch::channel(false);
        let defs: Vec<Arc<JobDef>> = defs.into_iter().map(Arc::new).collect();
        let shared = Arc::new(Shared {
            defs: RwLock::new(Arc::new(defs)),
            engine: RwLock::new(engine),
            runner: Runner {
                bus,
                history,
                stop: stop_rx.clone(),
            },
            running: Mutex::new(HashMap::new()),
            idle: Notify::new(),
            reload: Notify::new(),
            clock,
            stats: Stats::default(),
            stopping: stop_tx,
        });
        if config.schedule {
            // Several servers on PostgreSQL: runs of a node that died are taken over here.
            tokio::spawn(lost_runs_loop(shared.clone(), stop_rx.clone()));
        }
        let task = config
            .schedule
            .then(|| tokio::spawn(schedule_loop(shared.clone(), stop_rx)));
        Ok(Jobs {
            shared,
            config,
            task: Mutex::new(task),
        })
    }

    /// The loaded jobs in file order, with their next run.
    pub fn list(&self) -> Vec<JobInfo> {
        let now = self.shared.clock.now();
        self.shared
            .current()
            .iter()
            .map(|d| JobInfo {
                name: d.name.clone(),
                file: d.file.clone(),
                schedule: d.schedule.expr().to_string(),
                timezone: d.schedule.tz().to_string(),
                next_run: d.schedule.next_after(now),
                running: self.shared.is_running(&d.name),
            })
            .collect()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    pub fn history(&self) -> &History {
        &self.shared.runner.history
    }

    /// The newest runs of `name`, oldest first. A job no longer loaded still shows its
    /// history; a name never seen is `NotFound`.
    pub async fn runs(&self, name: &str) -> Result<Vec<JobRun>, JobsError> {
        let history = &self.shared.runner.history;
        if self.shared.find(name).is_none() && !history.has_runs(name).await? {
            return Err(JobsError::NotFound(name.to_string()));
        }
        Ok(history.list(name).await?)
    }

    /// Runs `name` now (with its retries) and returns the finished run. A job that is
    /// already running is refused, never run twice at once.
    pub async fn run_now(&self, name: &str) -> Result<JobRun, JobsError> {
        let def = self
            .shared
            .find(name)
            .ok_or_else(|| JobsError::NotFound(name.to_string()))?;
        if let Some(node) = self.shared.runner.history.running_elsewhere(name).await? {
            return Err(JobsError::RunningOn {
                job: name.to_string(),
                node,
            });
        }
        let rx = self.shared.spawn_run(def, Trigger::Manual)?;
        rx.await.map_err(|_| JobsError::ShuttingDown)
    }

    /// Replaces the scheduled set (hot reload). Runs in progress finish on the engine they
    /// started on; a job keeps refusing to overlap with itself across the swap. Returns the
    /// previous engine so the caller can shut it down.
    pub fn replace(&self, defs: Vec<JobDef>, engine: Arc<dyn JobEngine>) -> Arc<dyn JobEngine> {
        let defs: Vec<Arc<JobDef>> = defs.into_iter().map(Arc::new).collect();
        *sync::write(&self.shared.defs) = Arc::new(defs);
        let old = std::mem::replace(&mut *sync::write(&self.shared.engine), engine);
        self.shared.reload.notify_one();
        old
    }

    /// Stops the timers, waits up to the shutdown grace for running jobs, records the ones
    /// still running as interrupted, and shuts the engine down.
    pub async fn shutdown(&self) {
        let _ = self.shared.stopping.send(true);
        let task = sync::lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        let mut abandoned = false;
        loop {
            let idle = self.shared.idle.notified();
            let left: Vec<String> = sync::lock(&self.shared.running).values().cloned().collect();
            if left.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    "{} job run(s) still running after {} s; abandoned",
                    left.len(),
                    self.config.shutdown_grace.as_secs()
                );
                if let Err(e) = self
                    .shared
                    .runner
                    .history
                    .interrupt(Some(left), history::INTERRUPTED)
                    .await
                {
                    tracing::error!("Recording interrupted job runs failed: {e}");
                }
                abandoned = true;
                break;
            }
        }
        let engine = sync::read(&self.shared.engine).clone();
        if abandoned {
            // Joining would wait for the abandoned runs' own time limits: let a detached
            // thread do it while the process goes on shutting down.
            let _ = std::thread::Builder::new()
                .name("bakend-jobs-stop".into())
                .spawn(move || engine.shutdown());
        } else {
            let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        }
    }
}

/// How often a node looks for runs of lost nodes.
const LOST_RUNS_EVERY: Duration = Duration::from_secs(2);

/// Records the runs of nodes that stopped answering as failed (`node lost`) and runs their
/// remaining attempts here, as the job's `retries` allow (a new run, trigger `retry`, its
/// first attempt the lost one's next). Ends when the scheduler stops; on SQLite, where one
/// server has the database, at once.
async fn lost_runs_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if shared.runner.history.node().is_none() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOST_RUNS_EVERY) => {}
            _ = stop.changed() => return,
        }
        let lost = match shared.runner.history.take_over_lost().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("Looking for job runs of lost nodes failed: {e}");
                continue;
            }
        };
        for run in lost {
            let Some(def) = shared.current().iter().find(|d| d.name == run.job).cloned() else {
                continue; // the job is gone
            };
            if run.attempt >= def.attempts() {
                continue;
            }
            tracing::warn!(
                "Job {}: retrying the lost run {} here (attempt {}/{})",
                run.job,
                run.run_id,
                run.attempt + 1,
                def.attempts()
            );
            if let Err(e) = shared.spawn_run_from(def, Trigger::Retry, run.attempt + 1) {
                tracing::error!("Job {}: retrying its lost run failed: {e}", run.job);
            }
        }
    }
}

/// The longest sleep between looks at the clock: a wall clock that jumps is noticed within it.
const SAFETY_TICK: Duration = Duration::from_secs(1);

async fn schedule_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut table = Timetable::new(&shared.current(), shared.clock.now());
    loop {
        let now = shared.clock.now();
        for (def, tick) in table.due(now) {
            // Several servers on one database each see the tick: the one that claims it runs
            // it (a claim is a write; on SQLite there is nothing to claim).
            let shared = shared.clone();
            tokio::spawn(async move {
                let tick = bakend_core::time::to_iso(tick);
                match shared.runner.history.claim_tick(&def.name, &tick).await {
                    Ok(Claim::Run) => {}
                    Ok(Claim::Taken) => return, // another server runs it
                    Ok(Claim::RunningOn(node)) => {
                        shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "Job {} is still running on node {node}; skipped its run due at {tick}",
                            def.name
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::error!(
                            "Job {}: claiming its run due at {tick} failed: {e}",
                            def.name
                        );
                        return;
                    }
                }
                match shared.spawn_run(def.clone(), Trigger::Schedule) {
                    Ok(_) | Err(JobsError::ShuttingDown) => {}
                    Err(JobsError::AlreadyRunning(_)) => {
                        shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "Job {} is still running; skipped its run due at {tick}",
                            def.name
                        );
                    }
                    Err(e) => tracing::error!("Job {}: {e}", def.name),
                }
            });
        }
        if *shared.stopping.borrow() {
            return;
        }
        let wait = table.wait(now).unwrap_or(SAFETY_TICK).min(SAFETY_TICK);
        // Timers may wake a hair early; never spin on a zero wait.
        let wait = wait.max(Duration::from_millis(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.reload.notified() => {
                table = Timetable::new(&shared.current(), shared.clock.now());
            }
            _ = stop.changed() => return,
        }
    }
}
