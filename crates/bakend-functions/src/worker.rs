//! JS worker threads. Each owns a current-thread tokio runtime and one QuickJS runtime with every
//! function file loaded, and runs one invocation at a time so the time and memory budgets belong
//! to that invocation. A runtime that hit a budget is dropped and rebuilt from the cached JS.

use bakend_core::sync;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bakend_core::{Event, EventSource, SharedEvent};
use bakend_events::EventBus;
use rquickjs::{
    Array, AsyncContext, AsyncRuntime, CatchResultExt, CaughtError, Coerced, Ctx, FromJs, Function,
    Module, Object, Value,
};
use serde_json::{Map, Value as Json};

use crate::budget::Budget;
use crate::context::Api;
use crate::loader::{LOADING_GLOBAL, ModuleCache, ProjectLoader, ProjectResolver, REGISTRY_GLOBAL};
use crate::services::HostServices;
use crate::sourcemap::SourceMaps;
use crate::{FunctionsConfig, FunctionsError, Stats, TriggerInfo};

/// One handler call waiting for a worker.
pub(crate) struct Invocation {
    pub trigger: usize,
    pub event: SharedEvent,
    /// Marks the event's triggers done (cluster progress) when the last invocation is dropped.
    pub _done: Option<Arc<crate::progress::Done>>,
}

/// What every worker needs, shared.
pub(crate) struct Shared {
    /// `functions/` or `jobs/`: imports may not leave it.
    pub root: &'static str,
    pub files: Vec<String>,
    pub modules: ModuleCache,
    pub maps: Arc<SourceMaps>,
    pub services: HostServices,
    pub config: FunctionsConfig,
    pub bus: Option<Arc<dyn EventBus>>,
    pub stats: Arc<Stats>,
}

pub(crate) struct Js {
    // Field order matters: the context must drop before its runtime.
    pub ctx: AsyncContext,
    _rt: AsyncRuntime,
    pub budget: Budget,
    pub api: Api,
}

/// A fresh QuickJS runtime with the limits, the module loader and the host services installed;
/// no user module loaded yet.
pub(crate) async fn runtime(shared: &Shared) -> Result<Js, FunctionsError> {
    let rt_err = |e: rquickjs::Error| FunctionsError::Runtime(e.to_string());
    let rt = AsyncRuntime::new().map_err(rt_err)?;
    rt.set_memory_limit(shared.config.memory_limit).await;
    rt.set_max_stack_size(shared.config.stack_size).await;
    let budget = Budget::new();
    {
        let budget = budget.clone();
        rt.set_interrupt_handler(Some(Box::new(move || budget.expired())))
            .await;
    }
    rt.set_loader(
        ProjectResolver {
            root: shared.root,
            modules: shared.modules.clone(),
        },
        ProjectLoader {
            modules: shared.modules.clone(),
        },
    )
    .await;
    let ctx = AsyncContext::full(&rt).await.map_err(rt_err)?;
    let api = Api::new(&shared.services, &budget);
    ctx.with(|ctx| api.install(&ctx)).await.map_err(rt_err)?;
    Ok(Js {
        ctx,
        _rt: rt,
        budget,
        api,
    })
}

/// Runs module loading (top-level code) under the default time budget, so a looping module
/// cannot hang start-up.
pub(crate) async fn load_with_budget<T, F>(
    js: &Js,
    shared: &Shared,
    load: F,
) -> Result<T, FunctionsError>
where
    F: for<'js> AsyncFnOnce(Ctx<'js>) -> Result<T, FunctionsError> + Send,
    T: Send + 'static,
{
    js.budget.arm(shared.config.default_timeout);
    let res = tokio::time::timeout(
        shared.config.default_timeout + Duration::from_millis(50),
        js.ctx.async_with(load),
    )
    .await;
    js.budget.disarm();
    match res {
        Ok(r) => r,
        Err(_) => Err(FunctionsError::Load {
            kind: "function",
            file: shared.root.into(),
            message: "loading the modules timed out".into(),
        }),
    }
}

/// Builds a runtime and loads every function file in discovery order; returns the registered
/// triggers.
pub(crate) async fn build(shared: &Shared) -> Result<(Js, Vec<TriggerInfo>), FunctionsError> {
    let js = runtime(shared).await?;
    let files = shared.files.clone();
    let maps = shared.maps.clone();
    let default_timeout = shared.config.default_timeout;
    let triggers = load_with_budget(&js, shared, async move |ctx| {
        load_all(&ctx, &files, &maps, default_timeout).await
    })
    .await?;
    Ok((js, triggers))
}

async fn load_all(
    ctx: &Ctx<'_>,
    files: &[String],
    maps: &SourceMaps,
    default_timeout: Duration,
) -> Result<Vec<TriggerInfo>, FunctionsError> {
    let globals = ctx.globals();
    let rt_err = |e: rquickjs::Error| FunctionsError::Runtime(e.to_string());
    let mut timeouts: HashMap<String, Duration> = HashMap::new();
    for rel in files {
        globals.set(LOADING_GLOBAL, rel.as_str()).map_err(rt_err)?;
        let res = async {
            Module::import(ctx, rel.as_str())?
                .into_future::<Object>()
                .await
        }
        .await
        .catch(ctx);
        globals
            .set(LOADING_GLOBAL, rquickjs::Undefined)
            .map_err(rt_err)?;
        let ns = res.map_err(|e| FunctionsError::Load {
            kind: "function",
            file: rel.clone(),
            message: describe(ctx, e, maps)
                .with_location()
                .unwrap_or_else(|| "module threw".into()),
        })?;
        let t: Value = ns.get("timeout").map_err(rt_err)?;
        if let Some(ms) = t.as_number().filter(|ms| ms.is_finite() && *ms > 0.0) {
            timeouts.insert(rel.clone(), Duration::from_millis(ms as u64));
        }
    }
    let mut triggers = Vec::new();
    let reg: Option<Array> = globals.get(REGISTRY_GLOBAL).map_err(rt_err)?;
    if let Some(reg) = reg {
        for entry in reg.iter::<Object>() {
            let entry = entry.map_err(rt_err)?;
            let file: String = entry.get("file").map_err(rt_err)?;
            triggers.push(TriggerInfo {
                timeout: timeouts.get(&file).copied().unwrap_or(default_timeout),
                trigger: entry.get("trigger").map_err(rt_err)?,
                collection: entry.get("collection").map_err(rt_err)?,
                event_type: entry.get("eventType").map_err(rt_err)?,
                file,
            });
        }
    }
    Ok(triggers)
}

/// What user code threw.
#[derive(Default)]
pub(crate) struct Thrown {
    /// `Error.message`, or `String(value)`; `None` for a falsy value.
    pub message: Option<String>,
    /// The JS stack with every frame mapped back to the user's `.ts` line and column.
    pub stack: Option<String>,
    /// QuickJS throws `null` when it cannot even allocate the error object.
    pub out_of_memory: bool,
}

impl Thrown {
    /// The message with the innermost user frame, for load errors printed at start-up.
    pub fn with_location(&self) -> Option<String> {
        let frame = self
            .stack
            .as_deref()
            .and_then(|s| s.lines().map(str::trim).find(|l| l.starts_with("at ")));
        match (&self.message, frame) {
            (Some(m), Some(f)) => Some(format!("{m} ({f})")),
            (m, _) => m.clone(),
        }
    }
}

pub(crate) fn describe<'js>(ctx: &Ctx<'js>, err: CaughtError<'js>, maps: &SourceMaps) -> Thrown {
    match err {
        CaughtError::Error(rquickjs::Error::Allocation) => Thrown {
            message: Some("out of memory".into()),
            stack: None,
            out_of_memory: true,
        },
        CaughtError::Error(e) => {
            let message = e.to_string();
            Thrown {
                out_of_memory: message.contains("out of memory"),
                message: Some(message),
                stack: None,
            }
        }
        CaughtError::Exception(ex) => {
            let msg = ex.message().unwrap_or_default();
            let message = if msg.is_empty() { "Error".into() } else { msg };
            Thrown {
                out_of_memory: message.contains("out of memory"),
                message: Some(message),
                stack: ex.stack().map(|s| maps.map_stack(&s)),
            }
        }
        CaughtError::Value(v) => {
            let falsy = v.is_null()
                || v.is_undefined()
                || v.as_bool() == Some(false)
                || v.as_number() == Some(0.0)
                || v.as_string()
                    .is_some_and(|s| s.to_string().is_ok_and(|s| s.is_empty()));
            Thrown {
                out_of_memory: v.is_null(),
                message: if falsy {
                    None
                } else {
                    Coerced::<String>::from_js(ctx, v).ok().map(|c| c.0)
                },
                stack: None,
            }
        }
    }
}

pub(crate) enum Outcome {
    Completed,
    Failed {
        error: Option<String>,
        stack: Option<String>,
        recycle: bool,
    },
}

/// Runs `call` under `timeout` and classifies the result; shared by triggers and jobs. `call`
/// returns what the user code threw, if anything.
pub(crate) async fn run_budgeted<F>(js: &Js, timeout: Duration, file: &str, call: F) -> Outcome
where
    F: for<'js> AsyncFnOnce(Ctx<'js>) -> Result<(), Thrown> + Send,
{
    js.budget.arm(timeout);
    let res = tokio::time::timeout(timeout, js.ctx.async_with(call)).await;
    js.budget.disarm();
    js.api.finish(file);
    let limit_msg = || format!("Function timed out after {} ms", timeout.as_millis());
    match res {
        Ok(Ok(())) => Outcome::Completed,
        Ok(Err(_)) if js.budget.was_interrupted() => Outcome::Failed {
            error: Some(limit_msg()),
            stack: None,
            recycle: true,
        },
        // `throw null` is indistinguishable from an OOM that could not allocate its error;
        // recycle either way (cheap) but only report text that was thrown.
        Ok(Err(t)) => Outcome::Failed {
            recycle: t.out_of_memory,
            error: t.message,
            stack: t.stack,
        },
        Err(_) => Outcome::Failed {
            error: Some(limit_msg()),
            stack: None,
            recycle: true,
        },
    }
}

async fn invoke(
    js: &Js,
    shared: &Shared,
    index: usize,
    info: &TriggerInfo,
    event: &SharedEvent,
) -> Outcome {
    js.api.begin(event.depth);
    let ev = event.clone();
    let file = info.file.clone();
    let maps = shared.maps.clone();
    run_budgeted(js, info.timeout, &info.file, async move |ctx| {
        let handler = (|| {
            let reg: Array = ctx.globals().get(REGISTRY_GLOBAL)?;
            let entry: Object = reg.get(index)?;
            let f: Function = entry.get("fn")?;
            let arg = crate::context::trigger_context(&ctx, &ev, &file)?;
            Ok((f, arg))
        })();
        call_handler(&ctx, handler, &maps).await
    })
    .await
}

/// Calls a user handler with its `ctx` argument (as looked up), awaits the promise it returns
/// if any, and describes whatever it threw.
pub(crate) async fn call_handler<'js>(
    ctx: &Ctx<'js>,
    handler: rquickjs::Result<(Function<'js>, Object<'js>)>,
    maps: &SourceMaps,
) -> Result<(), Thrown> {
    let res = async {
        let (f, arg) = handler?;
        let ret: Value = f.call((arg,))?;
        if let Some(p) = ret.as_promise() {
            p.clone().into_future::<Value>().await?;
        }
        Ok::<(), rquickjs::Error>(())
    }
    .await
    .catch(ctx);
    res.map_err(|e| describe(ctx, e, maps))
}

fn lifecycle_payload(info: &TriggerInfo, event: &Event, error: Option<&str>) -> Json {
    let mut m = Map::new();
    m.insert(
        "collection".into(),
        info.collection
            .clone()
            .map(Json::String)
            .unwrap_or(Json::Null),
    );
    m.insert("trigger".into(), Json::String(info.trigger.clone()));
    m.insert("eventType".into(), Json::String(event.event_type.clone()));
    m.insert("filePath".into(), Json::String(info.file.clone()));
    m.insert("eventId".into(), Json::String(event.id.clone()));
    if let Some(e) = error {
        m.insert("error".into(), Json::String(e.to_string()));
    }
    Json::Object(m)
}

pub(crate) fn emit(
    shared: &Shared,
    kind: &str,
    info: &TriggerInfo,
    event: &Event,
    err: Option<&str>,
) {
    if let Some(bus) = &shared.bus {
        bus.emit(Event::new(
            kind,
            EventSource::Functions,
            lifecycle_payload(info, event, err),
        ));
    }
}

/// Lowers the calling thread's scheduling priority: user code competes for the CPU with the
/// HTTP and realtime paths, and a busy-looping handler must not slow other clients' requests
/// while it runs towards its time limit.
pub(crate) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread (Linux nice values are per thread); no memory
    // is touched.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, JS_THREAD_NICE);
    }
}

const JS_THREAD_NICE: i32 = 10;

/// What one kind of JS worker thread does: load its modules into a fresh runtime, and handle
/// one queued item. [`serve`] is the thread around it.
pub(crate) trait WorkerKind {
    type Item: Send;
    /// What loading reports (the registered triggers, the job modules).
    type Loaded: Clone + Send;
    /// The thread's name in logs.
    const NAME: &'static str;

    fn build(shared: &Shared) -> impl Future<Output = Result<(Js, Self::Loaded), FunctionsError>>;

    /// Handles one item; `true` when the runtime hit a limit and must be rebuilt.
    fn handle(
        rt: &tokio::runtime::Runtime,
        js: &Js,
        shared: &Shared,
        loaded: &Self::Loaded,
        item: Self::Item,
    ) -> bool;
}

/// Body of one worker thread: builds its runtime, reports the load result on `ready`, then
/// serves `queue` until it closes, rebuilding the runtime after an item that hit a limit.
pub(crate) fn serve<K: WorkerKind>(
    shared: Arc<Shared>,
    queue: Arc<Mutex<Receiver<K::Item>>>,
    ready: Sender<Result<K::Loaded, FunctionsError>>,
) {
    lower_thread_priority();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(FunctionsError::Runtime(e.to_string())));
            return;
        }
    };
    let (mut js, loaded) = match rt.block_on(K::build(&shared)) {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(loaded.clone()));
    drop(ready);
    loop {
        let item = sync::lock(&queue).recv();
        let Ok(item) = item else { return };
        if K::handle(&rt, &js, &shared, &loaded, item) {
            shared.stats.recycled.fetch_add(1, Ordering::Relaxed);
            // Drop first so abandoned promise chains can never run again.
            drop(js);
            match rt.block_on(K::build(&shared)) {
                Ok((fresh, _)) => js = fresh,
                Err(e) => {
                    tracing::error!("{} could not rebuild its runtime: {e}", K::NAME);
                    return;
                }
            }
        }
    }
}

/// Function triggers: one invocation per item, with its lifecycle events.
pub(crate) struct Triggers;

impl WorkerKind for Triggers {
    type Item = Invocation;
    type Loaded = Vec<TriggerInfo>;
    const NAME: &'static str = "Functions worker";

    fn build(shared: &Shared) -> impl Future<Output = Result<(Js, Self::Loaded), FunctionsError>> {
        build(shared)
    }

    fn handle(
        rt: &tokio::runtime::Runtime,
        js: &Js,
        shared: &Shared,
        triggers: &Vec<TriggerInfo>,
        job: Invocation,
    ) -> bool {
        let Some(info) = triggers.get(job.trigger) else {
            return false;
        };
        emit(shared, "function.started", info, &job.event, None);
        match rt.block_on(invoke(js, shared, job.trigger, info, &job.event)) {
            Outcome::Completed => {
                shared.stats.record(job.trigger, true);
                emit(shared, "function.completed", info, &job.event, None);
                false
            }
            Outcome::Failed {
                error,
                stack,
                recycle,
            } => {
                shared.stats.record(job.trigger, false);
                tracing::error!(
                    function = %info.file,
                    "Function failed ({}, {}): {}{}",
                    info.file,
                    job.event.event_type,
                    error.as_deref().unwrap_or(""),
                    stack.map(|s| format!("\n{s}")).unwrap_or_default()
                );
                emit(
                    shared,
                    "function.failed",
                    info,
                    &job.event,
                    error.as_deref(),
                );
                recycle
            }
        }
    }
}
