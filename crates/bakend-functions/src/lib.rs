//! User TypeScript functions triggered by bus events (spec `functions-and-jobs.md`, issue 6).
//!
//! `functions/**/*.ts` is discovered and transpiled with oxc at start; each of N worker threads
//! loads every module into its own QuickJS runtime (`bakend/functions` is a native module, relative
//! imports resolve inside `functions/`). A bus consumer thread matches events against the
//! registered triggers and queues invocations (bounded) for the workers — never inline in the
//! emitter. Each invocation has a time limit (default 5 s, `export const timeout = <ms>` per file),
//! a memory limit and a stack limit; a runtime that hit one is rebuilt. Lifecycle events
//! `function.started` / `function.completed` / `function.failed` carry the project-relative file.
//!
//! Events whose source is `functions` never trigger handlers (no feedback loops through
//! `on("function.*")`).

mod budget;
mod context;
mod discovery;
mod error;
mod jobs;
mod loader;
pub mod progress;
pub mod services;
pub mod sourcemap;
pub mod transpile;
pub mod watch;
mod worker;

use bakend_core::sync;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bakend_core::{EventSource, SharedEvent};
use bakend_events::EventBus;

pub use discovery::{FunctionFile, discover, discover_in};
pub use error::FunctionsError;
pub use jobs::{JobModule, JobScripts};
pub use services::{HostServices, ListOptions, RecordsApi, ServiceError, StorageApi};

use progress::TriggerProgress;
use sourcemap::SourceMaps;
use worker::{Invocation, Shared};

/// Events caused by this many chained function writes (a trigger whose `ctx.records` write
/// triggers itself again, …) no longer run triggers: the chain is reported and stopped.
pub const MAX_TRIGGER_DEPTH: u8 = 8;

/// Tunables of the functions host.
#[derive(Clone, Debug)]
pub struct FunctionsConfig {
    /// JS worker threads (default `min(2, cores)`).
    pub workers: usize,
    /// Invocations waiting for a worker before overflow is dropped and counted.
    pub queue_capacity: usize,
    /// Events waiting in the host's bus queue.
    pub bus_capacity: usize,
    /// Per-invocation wall-clock limit unless a file exports `timeout`.
    pub default_timeout: Duration,
    /// QuickJS heap limit per runtime, in bytes.
    pub memory_limit: usize,
    /// QuickJS stack limit, in bytes.
    pub stack_size: usize,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        FunctionsConfig {
            workers: cores.clamp(1, 2),
            queue_capacity: 1024,
            bus_capacity: 4096,
            default_timeout: Duration::from_secs(5),
            memory_limit: 64 * 1024 * 1024,
            stack_size: 512 * 1024,
        }
    }
}

/// One registered trigger, in registration (discovery) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerInfo {
    /// Project-relative file that registered it, e.g. `functions/posts/notify.ts`.
    pub file: String,
    /// `create`, `update`, `delete`, `login`, `register`, `logout` or `event` (for `on()`).
    pub trigger: String,
    /// The collection argument (`None` for `on()`).
    pub collection: Option<String>,
    /// The event type or pattern it listens to (`posts.created`, `auth.login`, `posts.*`).
    pub event_type: String,
    pub timeout: Duration,
}

impl TriggerInfo {
    pub fn matches(&self, event_type: &str) -> bool {
        event_type_matches(&self.event_type, event_type)
    }
}

/// `posts.created` matches itself; `*` matches one segment; a trailing `.*` matches one or more
/// segments (`system.*` matches `system.collection.created`); `*` alone matches everything.
pub fn event_type_matches(pattern: &str, event_type: &str) -> bool {
    bakend_core::pattern::matches(
        pattern,
        event_type,
        bakend_core::pattern::Wildcards::AnySegment,
    )
}

/// Counters, readable while the host runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicU64,
    /// Invocations that did not fit in the queue.
    pub dropped: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// Runtimes rebuilt after hitting a limit.
    pub recycled: AtomicU64,
    /// Reloads that replaced the triggers, and reloads refused because of an error.
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    per_trigger: Mutex<HashMap<usize, (u64, u64)>>,
}

impl Stats {
    fn record(&self, trigger: usize, ok: bool) {
        if ok {
            self.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = sync::lock(&self.per_trigger);
        let e = m.entry(trigger).or_default();
        e.0 += 1;
        if !ok {
            e.1 += 1;
        }
    }

    fn reset_triggers(&self) {
        sync::lock(&self.per_trigger).clear();
    }

    /// (invocations, failures) of the trigger at `index` in [`FunctionsHost::triggers`] since
    /// the triggers were last (re)loaded.
    pub fn trigger_counts(&self, index: usize) -> (u64, u64) {
        sync::lock(&self.per_trigger)
            .get(&index)
            .copied()
            .unwrap_or_default()
    }
}

/// The transpiled modules of one folder.
pub(crate) struct Compiled {
    pub files: Vec<String>,
    pub modules: HashMap<String, String>,
    pub maps: SourceMaps,
}

/// Reads and transpiles every `.ts` file of `folder`. Compile errors name the file and line.
pub(crate) fn compile_all(project_dir: &Path, folder: &str) -> Result<Compiled, FunctionsError> {
    let files = discover_in(project_dir, folder)?;
    let mut out = Compiled {
        files: Vec::new(),
        modules: HashMap::new(),
        maps: SourceMaps::default(),
    };
    for f in files {
        let src = std::fs::read_to_string(&f.path).map_err(|source| FunctionsError::Io {
            path: f.path.clone(),
            source,
        })?;
        let (js, map) = transpile::transpile_with_map(&f.rel, &src)?;
        out.modules.insert(f.rel.clone(), js);
        out.maps.0.insert(f.rel.clone(), map);
        out.files.push(f.rel);
    }
    Ok(out)
}

/// One loaded set of function files: its triggers and the workers serving them.
struct Generation {
    triggers: Arc<Vec<TriggerInfo>>,
    queue: SyncSender<Invocation>,
}

struct Running {
    generation: Option<Arc<Generation>>,
    workers: Vec<JoinHandle<()>>,
    dispatcher: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

/// The running functions subsystem.
pub struct FunctionsHost {
    project_dir: PathBuf,
    config: FunctionsConfig,
    services: HostServices,
    bus: Arc<dyn EventBus>,
    stats: Arc<Stats>,
    /// Read by the dispatcher for every event; replaced by a reload.
    current: Arc<Mutex<Option<Arc<Generation>>>>,
    running: Mutex<Running>,
    progress: Arc<TriggerProgress>,
}

impl FunctionsHost {
    /// Compiles and loads every function file, starts the workers and the bus consumer. Any
    /// compile or load error is returned (fatal at server start, per the spec). A missing
    /// `functions/` folder starts an idle host.
    pub fn start(
        project_dir: &Path,
        bus: Arc<dyn EventBus>,
        config: FunctionsConfig,
        services: HostServices,
    ) -> Result<FunctionsHost, FunctionsError> {
        let host = FunctionsHost {
            project_dir: project_dir.to_path_buf(),
            config,
            services,
            bus,
            stats: Arc::new(Stats::default()),
            current: Arc::new(Mutex::new(None)),
            running: Mutex::new(Running {
                generation: None,
                workers: Vec::new(),
                dispatcher: None,
            }),
            progress: Arc::new(TriggerProgress::default()),
        };
        let compiled = compile_all(project_dir, "functions")?;
        host.install(compiled)?;
        let n = host.triggers().len();
        if n == 0 {
            tracing::debug!("No function triggers found in {}", host.dir().display());
        } else {
            tracing::info!(
                "Functions: {n} trigger(s) loaded from {}",
                host.dir().display()
            );
        }
        Ok(host)
    }

    fn dir(&self) -> PathBuf {
        self.project_dir.join("functions")
    }

    /// Recompiles and reloads every function file (hot reload). On any error the previous
    /// triggers stay active and the error — naming the file and line — is logged and returned.
    pub fn reload(&self) -> Result<usize, FunctionsError> {
        tracing::debug!("Reloading functions from {}", self.dir().display());
        let res = compile_all(&self.project_dir, "functions").and_then(|c| self.install(c));
        match &res {
            Ok(()) => {
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                let n = self.triggers().len();
                tracing::info!(
                    "Functions: {n} trigger(s) loaded from {}",
                    self.dir().display()
                );
                Ok(n)
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("Function reload failed (previous triggers stay active): {e}");
                Err(FunctionsError::Runtime(e.to_string()))
            }
        }
    }

    /// Starts workers for `compiled`, waits until each has loaded every module, then makes them
    /// the current generation; the previous generation's workers finish what they had queued.
    fn install(&self, compiled: Compiled) -> Result<(), FunctionsError> {
        let mut running = sync::lock(&self.running);
        if compiled.files.is_empty() {
            self.replace(&mut running, None, Vec::new());
            return Ok(());
        }
        let shared = Arc::new(Shared {
            root: "functions/",
            files: compiled.files,
            modules: Arc::new(compiled.modules),
            maps: Arc::new(compiled.maps),
            services: self.services.clone(),
            config: self.config.clone(),
            bus: Some(self.bus.clone()),
            stats: self.stats.clone(),
        });
        let capacity = self.config.queue_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Invocation>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut workers = Vec::new();
        for i in 0..self.config.workers.max(1) {
            let (shared, rx, ready) = (shared.clone(), rx.clone(), ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("bakend-js-{i}"))
                .spawn(move || worker::serve::<worker::Triggers>(shared, rx, ready));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    drop(tx);
                    join_all(workers);
                    return Err(FunctionsError::Runtime(e.to_string()));
                }
            }
        }
        drop(ready_tx);
        let mut triggers = None;
        let mut failure = None;
        for _ in 0..workers.len() {
            match ready_rx.recv() {
                Ok(Ok(t)) => {
                    triggers.get_or_insert(t);
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure
                        .get_or_insert(FunctionsError::Runtime("a functions worker died".into()));
                }
            }
        }
        if let Some(e) = failure {
            drop(tx);
            join_all(workers);
            return Err(e);
        }
        let generation = Arc::new(Generation {
            triggers: Arc::new(triggers.unwrap_or_default()),
            queue: tx,
        });
        self.replace(&mut running, Some(generation), workers);
        Ok(())
    }

    fn replace(
        &self,
        running: &mut Running,
        generation: Option<Arc<Generation>>,
        workers: Vec<JoinHandle<()>>,
    ) {
        let has_triggers = generation.as_ref().is_some_and(|g| !g.triggers.is_empty());
        *sync::lock(&self.current) = generation.clone();
        self.stats.reset_triggers();
        running.generation = generation;
        let old = std::mem::replace(&mut running.workers, workers);
        if !old.is_empty() {
            // The old queue closes once the dispatcher drops its last handle on it; its workers
            // then finish what was queued and exit.
            let _ = std::thread::Builder::new()
                .name("bakend-js-reaper".into())
                .spawn(move || join_all(old));
        }
        if has_triggers && running.dispatcher.is_none() {
            let stream = self.bus.subscribe("functions", self.config.bus_capacity);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            let (current, bus, stats, progress) = (
                self.current.clone(),
                self.bus.clone(),
                self.stats.clone(),
                self.progress.clone(),
            );
            match std::thread::Builder::new()
                .name("bakend-functions-dispatch".into())
                .spawn(move || dispatch_loop(stream, stop_rx, current, bus, stats, progress))
            {
                Ok(handle) => running.dispatcher = Some((stop_tx, handle)),
                Err(e) => tracing::error!("Could not start the functions dispatcher: {e}"),
            }
        }
    }

    /// Loads the project's functions in a throwaway runtime and returns the triggers, without
    /// starting workers or touching a bus (`bak functions list`).
    pub fn list(project_dir: &Path) -> Result<Vec<TriggerInfo>, FunctionsError> {
        let compiled = compile_all(project_dir, "functions")?;
        if compiled.files.is_empty() {
            return Ok(Vec::new());
        }
        let shared = Shared {
            root: "functions/",
            files: compiled.files,
            modules: Arc::new(compiled.modules),
            maps: Arc::new(compiled.maps),
            services: HostServices::default(),
            config: FunctionsConfig::default(),
            bus: None,
            stats: Arc::new(Stats::default()),
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| FunctionsError::Runtime(e.to_string()))?;
                rt.block_on(worker::build(&shared)).map(|(_, t)| t)
            })
            .join()
            .unwrap_or_else(|_| Err(FunctionsError::Runtime("functions loader panicked".into())))
        })
    }

    /// Registered triggers in discovery order (of the current generation).
    pub fn triggers(&self) -> Arc<Vec<TriggerInfo>> {
        sync::lock(&self.current)
            .as_ref()
            .map(|g| g.triggers.clone())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// How far this server's own events' triggers have run (docs/cluster.md); `None` when no
    /// trigger is loaded.
    pub fn triggers_done(&self) -> Option<u64> {
        (!self.triggers().is_empty()).then(|| self.progress.done_through())
    }

    /// Events before `seq` are not this server's to run triggers for (it started after them).
    pub fn start_triggers_after(&self, seq: u64) {
        self.progress.start_after(seq);
    }

    /// Runs the triggers of events a lost node committed and may not have run them for
    /// (docs/cluster.md: at least once). Queued like any event; a full queue refuses them as
    /// it refuses others.
    pub fn run_recovered(&self, events: Vec<bakend_core::Event>) {
        let Some(g) = sync::lock(&self.current).clone() else {
            return;
        };
        for mut e in events {
            e.remote = false;
            dispatch(
                &Arc::new(e),
                &g.triggers,
                &g.queue,
                &*self.bus,
                &self.stats,
                None,
            );
        }
    }

    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// Stops consuming events, lets queued invocations finish, and joins every thread.
    pub fn shutdown(&self) {
        let mut running = sync::lock(&self.running);
        if let Some((stop, handle)) = running.dispatcher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        *sync::lock(&self.current) = None;
        running.generation = None;
        join_all(std::mem::take(&mut running.workers));
    }
}

fn join_all(workers: Vec<JoinHandle<()>>) {
    for w in workers {
        let _ = w.join();
    }
}

impl Drop for FunctionsHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn dispatch_loop(
    mut stream: bakend_events::EventStream,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    current: Arc<Mutex<Option<Arc<Generation>>>>,
    bus: Arc<dyn EventBus>,
    stats: Arc<Stats>,
    progress: Arc<TriggerProgress>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        loop {
            let event = tokio::select! {
                _ = &mut stop => return,
                ev = stream.recv() => match ev { Some(ev) => ev, None => return },
            };
            if event.remote {
                // Its triggers ran on the server that committed it.
                continue;
            }
            let generation = sync::lock(&current).clone();
            if let Some(g) = generation {
                dispatch(
                    &event,
                    &g.triggers,
                    &g.queue,
                    &*bus,
                    &stats,
                    Some(&progress),
                );
            }
            if let Some(seq) = event.seq {
                progress.seen(seq);
            }
        }
    });
}

fn refuse(bus: &dyn EventBus, info: &TriggerInfo, event: &SharedEvent, error: &str) {
    bus.emit(bakend_core::Event::new(
        "function.failed",
        EventSource::Functions,
        serde_json::json!({
            "collection": info.collection,
            "trigger": info.trigger,
            "eventType": event.event_type,
            "filePath": info.file,
            "eventId": event.id,
            "error": error,
        }),
    ));
}

fn dispatch(
    event: &SharedEvent,
    triggers: &[TriggerInfo],
    queue: &SyncSender<Invocation>,
    bus: &dyn EventBus,
    stats: &Stats,
    progress: Option<&Arc<TriggerProgress>>,
) {
    if event.source == EventSource::Functions {
        return;
    }
    // Held by the event's invocations until the last one is done (cluster progress).
    let mut done = None;
    for (index, info) in triggers.iter().enumerate() {
        if !info.matches(&event.event_type) {
            continue;
        }
        if event.depth >= MAX_TRIGGER_DEPTH {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                function = %info.file,
                "Not running {} for {}: it was caused by a chain of {} function writes (a trigger re-triggering itself?)",
                info.file,
                event.event_type,
                event.depth
            );
            refuse(
                bus,
                info,
                event,
                "Trigger chain too deep: the event was caused by too many chained function writes",
            );
            continue;
        }
        if done.is_none()
            && let (Some(p), Some(seq)) = (progress, event.seq)
        {
            done = Some(p.begin(seq));
        }
        let job = Invocation {
            trigger: index,
            event: event.clone(),
            _done: done.clone(),
        };
        match queue.try_send(job) {
            Ok(()) => {
                stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::error!(
                        "Function invocation queue is full: {n} invocation(s) dropped so far (latest {} for {})",
                        event.event_type,
                        info.file
                    );
                }
                refuse(
                    bus,
                    info,
                    event,
                    "Function invocation queue is full; invocation dropped",
                );
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(event_type_matches("posts.created", "posts.created"));
        assert!(!event_type_matches("posts.created", "posts.updated"));
        assert!(event_type_matches("posts.*", "posts.deleted"));
        assert!(!event_type_matches("posts.*", "users.deleted"));
        assert!(event_type_matches("*.created", "users.created"));
        assert!(event_type_matches("system.*", "system.collection.created"));
        assert!(!event_type_matches("posts.*", "posts"));
        assert!(event_type_matches("*", "anything.at.all"));
    }
}
