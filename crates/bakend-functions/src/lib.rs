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

mod discovery;
mod error;
mod host;
mod loader;
pub mod transpile;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bakend_core::{EventSource, SharedEvent};
use bakend_events::EventBus;

pub use discovery::{FunctionFile, discover};
pub use error::FunctionsError;

use worker::{Invocation, Shared};

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
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = event_type.split('.').collect();
    let trailing = p.last() == Some(&"*");
    if trailing && t.len() >= p.len() {
        let n = p.len() - 1;
        return p[..n].iter().zip(&t[..n]).all(|(a, b)| *a == "*" || a == b);
    }
    p.len() == t.len() && p.iter().zip(&t).all(|(a, b)| *a == "*" || a == b)
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
    per_trigger: Mutex<HashMap<usize, (u64, u64)>>,
}

impl Stats {
    fn record(&self, trigger: usize, ok: bool) {
        if ok {
            self.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut m) = self.per_trigger.lock() {
            let e = m.entry(trigger).or_default();
            e.0 += 1;
            if !ok {
                e.1 += 1;
            }
        }
    }

    /// (invocations, failures) of the trigger at `index` in [`FunctionsHost::triggers`].
    pub fn trigger_counts(&self, index: usize) -> (u64, u64) {
        self.per_trigger
            .lock()
            .ok()
            .and_then(|m| m.get(&index).copied())
            .unwrap_or_default()
    }
}

/// Reads and transpiles every discovered file. Compile errors name the file and line.
fn compile_all(
    project_dir: &Path,
) -> Result<(Vec<String>, HashMap<String, String>), FunctionsError> {
    let files = discover(project_dir)?;
    let mut modules = HashMap::new();
    let mut rels = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f.path).map_err(|source| FunctionsError::Io {
            path: f.path.clone(),
            source,
        })?;
        let js = transpile::transpile(&f.rel, &src)?;
        modules.insert(f.rel.clone(), js);
        rels.push(f.rel);
    }
    Ok((rels, modules))
}

/// The running functions subsystem.
pub struct FunctionsHost {
    project_dir: PathBuf,
    triggers: Arc<Vec<TriggerInfo>>,
    stats: Arc<Stats>,
    queue: Option<SyncSender<Invocation>>,
    workers: Vec<JoinHandle<()>>,
    dispatcher: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl FunctionsHost {
    /// Compiles and loads every function file, starts the workers and the bus consumer. Any
    /// compile or load error is returned (fatal at server start, per the spec). A missing
    /// `functions/` folder starts an idle host.
    pub fn start(
        project_dir: &Path,
        bus: Arc<dyn EventBus>,
        config: FunctionsConfig,
    ) -> Result<FunctionsHost, FunctionsError> {
        let (files, modules) = compile_all(project_dir)?;
        let stats = Arc::new(Stats::default());
        let mut host = FunctionsHost {
            project_dir: project_dir.to_path_buf(),
            triggers: Arc::new(Vec::new()),
            stats: stats.clone(),
            queue: None,
            workers: Vec::new(),
            dispatcher: None,
        };
        if files.is_empty() {
            tracing::debug!(
                "No function triggers found in {}",
                project_dir.join("functions").display()
            );
            return Ok(host);
        }
        let shared = Arc::new(Shared {
            files,
            modules: Arc::new(modules),
            config: config.clone(),
            bus: Some(bus.clone()),
            stats: stats.clone(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Invocation>(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        host.queue = Some(tx);
        for i in 0..config.workers.max(1) {
            let (shared, rx, ready) = (shared.clone(), rx.clone(), ready_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("bakend-js-{i}"))
                .spawn(move || worker::run(shared, rx, ready))
                .map_err(|e| FunctionsError::Runtime(e.to_string()))?;
            host.workers.push(handle);
        }
        drop(ready_tx);
        let mut triggers = None;
        for _ in 0..host.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(t)) => {
                    triggers.get_or_insert(t);
                }
                Ok(Err(e)) => {
                    host.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    host.shutdown();
                    return Err(FunctionsError::Runtime("a functions worker died".into()));
                }
            }
        }
        host.triggers = Arc::new(triggers.unwrap_or_default());
        tracing::info!(
            "Functions: {} trigger(s) loaded from {}",
            host.triggers.len(),
            project_dir.join("functions").display()
        );
        if !host.triggers.is_empty() {
            let stream = bus.subscribe("functions", config.bus_capacity);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            let (triggers, queue, bus2) = (host.triggers.clone(), host.queue.clone(), bus.clone());
            let stats2 = stats.clone();
            let handle = std::thread::Builder::new()
                .name("bakend-functions-dispatch".into())
                .spawn(move || dispatch_loop(stream, stop_rx, triggers, queue, bus2, stats2))
                .map_err(|e| FunctionsError::Runtime(e.to_string()))?;
            host.dispatcher = Some((stop_tx, handle));
        }
        Ok(host)
    }

    /// Loads the project's functions in a throwaway runtime and returns the triggers, without
    /// starting workers or touching a bus (`bak functions list`).
    pub fn list(project_dir: &Path) -> Result<Vec<TriggerInfo>, FunctionsError> {
        let (files, modules) = compile_all(project_dir)?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let shared = Shared {
            files,
            modules: Arc::new(modules),
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

    /// Registered triggers in discovery order.
    pub fn triggers(&self) -> &[TriggerInfo] {
        &self.triggers
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// Stops consuming events, lets queued invocations finish, and joins every thread.
    pub fn shutdown(&mut self) {
        if let Some((stop, handle)) = self.dispatcher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
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
    triggers: Arc<Vec<TriggerInfo>>,
    queue: Option<SyncSender<Invocation>>,
    bus: Arc<dyn EventBus>,
    stats: Arc<Stats>,
) {
    let Some(queue) = queue else { return };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        loop {
            let event = tokio::select! {
                _ = &mut stop => return,
                ev = stream.recv() => match ev { Some(ev) => ev, None => return },
            };
            dispatch(&event, &triggers, &queue, &*bus, &stats);
        }
    });
}

fn dispatch(
    event: &SharedEvent,
    triggers: &[TriggerInfo],
    queue: &SyncSender<Invocation>,
    bus: &dyn EventBus,
    stats: &Stats,
) {
    if event.source == EventSource::Functions {
        return;
    }
    for (index, info) in triggers.iter().enumerate() {
        if !info.matches(&event.event_type) {
            continue;
        }
        let job = Invocation {
            trigger: index,
            event: event.clone(),
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
                let error = "Function invocation queue is full; invocation dropped";
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
