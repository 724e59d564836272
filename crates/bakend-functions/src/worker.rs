//! JS worker threads. Each owns a current-thread tokio runtime and one QuickJS runtime with every
//! function file loaded, and runs one invocation at a time so the time and memory budgets belong
//! to that invocation. A runtime that hit a budget is dropped and rebuilt from the cached JS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bakend_core::{Event, EventSource, SharedEvent};
use bakend_events::EventBus;
use rquickjs::{
    Array, AsyncContext, AsyncRuntime, CatchResultExt, CaughtError, Coerced, Ctx, FromJs, Function,
    Module, Object, Value,
};
use serde_json::{Map, Value as Json};

use crate::loader::{LOADING_GLOBAL, ModuleCache, ProjectLoader, ProjectResolver, REGISTRY_GLOBAL};
use crate::{FunctionsConfig, FunctionsError, Stats, TriggerInfo};

/// One handler call waiting for a worker.
pub(crate) struct Invocation {
    pub trigger: usize,
    pub event: SharedEvent,
}

/// What every worker needs, shared.
pub(crate) struct Shared {
    pub files: Vec<String>,
    pub modules: ModuleCache,
    pub config: FunctionsConfig,
    pub bus: Option<Arc<dyn EventBus>>,
    pub stats: Arc<Stats>,
}

pub(crate) struct Js {
    // Field order matters: the context must drop before its runtime.
    ctx: AsyncContext,
    _rt: AsyncRuntime,
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
}

impl Js {
    fn arm(&self, budget: Duration) {
        let at = self.epoch.elapsed() + budget;
        self.interrupted.store(false, Ordering::SeqCst);
        self.deadline
            .store((at.as_millis() as u64).max(1), Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.deadline.store(0, Ordering::SeqCst);
    }
}

/// Builds a runtime and loads every file in discovery order; returns the registered triggers.
pub(crate) async fn build(shared: &Shared) -> Result<(Js, Vec<TriggerInfo>), FunctionsError> {
    let rt_err = |e: rquickjs::Error| FunctionsError::Runtime(e.to_string());
    let rt = AsyncRuntime::new().map_err(rt_err)?;
    rt.set_memory_limit(shared.config.memory_limit).await;
    rt.set_max_stack_size(shared.config.stack_size).await;
    let deadline = Arc::new(AtomicU64::new(0));
    let interrupted = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    {
        let deadline = deadline.clone();
        let interrupted = interrupted.clone();
        rt.set_interrupt_handler(Some(Box::new(move || {
            let d = deadline.load(Ordering::Relaxed);
            if d != 0 && epoch.elapsed().as_millis() as u64 >= d {
                interrupted.store(true, Ordering::Relaxed);
                true
            } else {
                false
            }
        })))
        .await;
    }
    rt.set_loader(
        ProjectResolver {
            modules: shared.modules.clone(),
        },
        ProjectLoader {
            modules: shared.modules.clone(),
        },
    )
    .await;
    let ctx = AsyncContext::full(&rt).await.map_err(rt_err)?;
    let js = Js {
        ctx,
        _rt: rt,
        deadline,
        interrupted,
        epoch,
    };

    // Top-level code gets the default budget too, so a looping module cannot hang startup.
    js.arm(shared.config.default_timeout);
    let files = shared.files.clone();
    let default_timeout = shared.config.default_timeout;
    let load = tokio::time::timeout(
        shared.config.default_timeout + Duration::from_millis(50),
        js.ctx
            .async_with(async move |ctx| load_all(&ctx, &files, default_timeout).await),
    )
    .await;
    js.disarm();
    let triggers = match load {
        Ok(r) => r?,
        Err(_) => {
            return Err(FunctionsError::Load {
                file: "functions/".into(),
                message: "loading the function modules timed out".into(),
            });
        }
    };
    Ok((js, triggers))
}

async fn load_all(
    ctx: &Ctx<'_>,
    files: &[String],
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
            file: rel.clone(),
            message: describe(ctx, e).unwrap_or_else(|| "module threw".into()),
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

/// The message of a thrown value (`Error.message`, or `String(value)`); `None` when falsy.
pub(crate) fn describe<'js>(ctx: &Ctx<'js>, err: CaughtError<'js>) -> Option<String> {
    match err {
        CaughtError::Error(rquickjs::Error::Allocation) => Some("out of memory".into()),
        CaughtError::Error(e) => Some(e.to_string()),
        CaughtError::Exception(ex) => {
            let msg = ex.message().unwrap_or_default();
            if let Some(stack) = ex.stack() {
                tracing::debug!("JS stack: {stack}");
            }
            Some(if msg.is_empty() { "Error".into() } else { msg })
        }
        CaughtError::Value(v) => {
            let falsy = v.is_null()
                || v.is_undefined()
                || v.as_bool() == Some(false)
                || v.as_number() == Some(0.0)
                || v.as_string()
                    .is_some_and(|s| s.to_string().is_ok_and(|s| s.is_empty()));
            if falsy {
                None
            } else {
                Coerced::<String>::from_js(ctx, v).ok().map(|c| c.0)
            }
        }
    }
}

enum Outcome {
    Completed,
    Failed {
        error: Option<String>,
        recycle: bool,
    },
}

async fn invoke(js: &Js, index: usize, info: &TriggerInfo, event: &SharedEvent) -> Outcome {
    js.arm(info.timeout);
    let ev = event.clone();
    let file = info.file.clone();
    let run = js.ctx.async_with(async move |ctx| {
        let res = async {
            let reg: Array = ctx.globals().get(REGISTRY_GLOBAL)?;
            let entry: Object = reg.get(index)?;
            let f: Function = entry.get("fn")?;
            let arg = crate::host::context_object(&ctx, &ev, &file)?;
            let ret: Value = f.call((arg,))?;
            if let Some(p) = ret.as_promise() {
                p.clone().into_future::<Value>().await?;
            }
            Ok::<(), rquickjs::Error>(())
        }
        .await
        .catch(&ctx);
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                // QuickJS throws `null` when it cannot even allocate the error object.
                let oom = matches!(&e, CaughtError::Value(v) if v.is_null())
                    || matches!(&e, CaughtError::Error(rquickjs::Error::Allocation));
                let msg = describe(&ctx, e);
                let oom = oom || msg.as_deref().is_some_and(|m| m.contains("out of memory"));
                Err((msg, oom))
            }
        }
    });
    let res = tokio::time::timeout(info.timeout, run).await;
    js.disarm();
    let interrupted = js.interrupted.load(Ordering::SeqCst);
    let limit_msg = || format!("Function timed out after {} ms", info.timeout.as_millis());
    match res {
        Ok(Ok(())) => Outcome::Completed,
        Ok(Err((msg, oom))) => {
            if interrupted {
                Outcome::Failed {
                    error: Some(limit_msg()),
                    recycle: true,
                }
            } else if oom {
                // `throw null` is indistinguishable from an OOM that could not allocate its
                // error; recycle either way (cheap) but only report text that was thrown.
                Outcome::Failed {
                    error: msg,
                    recycle: true,
                }
            } else {
                Outcome::Failed {
                    error: msg,
                    recycle: false,
                }
            }
        }
        Err(_) => Outcome::Failed {
            error: Some(limit_msg()),
            recycle: true,
        },
    }
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

/// Body of one worker thread. Reports its load result on `ready`, then serves `queue` until it
/// closes.
pub(crate) fn run(
    shared: Arc<Shared>,
    queue: Arc<Mutex<Receiver<Invocation>>>,
    ready: Sender<Result<Vec<TriggerInfo>, FunctionsError>>,
) {
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
    let (mut js, triggers) = match rt.block_on(build(&shared)) {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(triggers.clone()));
    drop(ready);
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let Some(info) = triggers.get(job.trigger) else {
            continue;
        };
        emit(&shared, "function.started", info, &job.event, None);
        match rt.block_on(invoke(&js, job.trigger, info, &job.event)) {
            Outcome::Completed => {
                shared.stats.record(job.trigger, true);
                emit(&shared, "function.completed", info, &job.event, None);
            }
            Outcome::Failed { error, recycle } => {
                shared.stats.record(job.trigger, false);
                tracing::error!(
                    function = %info.file,
                    "Function failed ({}, {}): {}",
                    info.file,
                    job.event.event_type,
                    error.as_deref().unwrap_or("")
                );
                emit(
                    &shared,
                    "function.failed",
                    info,
                    &job.event,
                    error.as_deref(),
                );
                if recycle {
                    shared.stats.recycled.fetch_add(1, Ordering::Relaxed);
                    // Drop first so abandoned promise chains can never run again.
                    drop(js);
                    match rt.block_on(build(&shared)) {
                        Ok((fresh, _)) => js = fresh,
                        Err(e) => {
                            tracing::error!("Functions worker could not rebuild its runtime: {e}");
                            return;
                        }
                    }
                }
            }
        }
    }
}
