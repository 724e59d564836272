//! The JS side of cron jobs: `jobs/**/*.ts` loaded into their own worker runtimes (separate from
//! the trigger workers, so a long job never delays triggers), each module's exports reported to
//! the scheduler, and `run` calling a job's default export under a time limit. Scheduling,
//! retries, history and events belong to the jobs subsystem.

use std::future::Future;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rquickjs::{CatchResultExt, Ctx, Function, Module, Object, Value};
use serde_json::{Map, Value as Json};

use crate::services::HostServices;
use crate::worker::{self, Outcome, Shared, describe, load_with_budget};
use crate::{FunctionsConfig, FunctionsError, Stats, compile_all};

/// Hidden global: job name → default export.
const JOBS_GLOBAL: &str = "__bakend_jobs";

/// One job file as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct JobModule {
    /// Path below `jobs/` without `.ts`: `jobs/a/x.ts` is `a/x`.
    pub name: String,
    /// Project-relative: `jobs/a/x.ts`.
    pub file: String,
    /// The module's JSON-representable exports other than `default` (`schedule`, `retries`,
    /// `retryDelay`, `timeout`, …). Functions and other values JSON cannot hold are left out.
    pub exports: Map<String, Json>,
    /// Whether the default export is a function.
    pub has_default: bool,
}

struct RunRequest {
    name: String,
    run_id: String,
    attempt: u32,
    timeout: Duration,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The job runtimes.
pub struct JobScripts {
    queue: Option<SyncSender<RunRequest>>,
    workers: Vec<JoinHandle<()>>,
}

fn job_name(rel: &str) -> String {
    let inner = rel.strip_prefix("jobs/").unwrap_or(rel);
    inner.strip_suffix(".ts").unwrap_or(inner).to_string()
}

impl JobScripts {
    /// Compiles and loads every `jobs/**/*.ts` on `config.workers` dedicated JS threads (at most
    /// that many jobs run at once); compile and load errors name the file (and line).
    pub fn start(
        project_dir: &Path,
        services: HostServices,
        config: FunctionsConfig,
    ) -> Result<(JobScripts, Vec<JobModule>), FunctionsError> {
        let compiled = compile_all(project_dir, "jobs").map_err(FunctionsError::for_job)?;
        let mut scripts = JobScripts {
            queue: None,
            workers: Vec::new(),
        };
        if compiled.files.is_empty() {
            return Ok((scripts, Vec::new()));
        }
        let shared = Arc::new(Shared {
            root: "jobs/",
            files: compiled.files,
            modules: Arc::new(compiled.modules),
            maps: Arc::new(compiled.maps),
            services,
            config: config.clone(),
            bus: None,
            stats: Arc::new(Stats::default()),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<RunRequest>(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..config.workers.max(1) {
            let (shared, rx, ready) = (shared.clone(), rx.clone(), ready_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("bakend-job-{i}"))
                .spawn(move || worker::serve::<JobRuns>(shared, rx, ready))
                .map_err(|e| FunctionsError::Runtime(e.to_string()))?;
            scripts.workers.push(handle);
        }
        drop(ready_tx);
        scripts.queue = Some(tx);
        let mut modules = None;
        for _ in 0..scripts.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(m)) => {
                    modules.get_or_insert(m);
                }
                Ok(Err(e)) => {
                    scripts.shutdown();
                    return Err(e.for_job());
                }
                Err(_) => {
                    scripts.shutdown();
                    return Err(FunctionsError::Runtime("a job worker died".into()));
                }
            }
        }
        Ok((scripts, modules.unwrap_or_default()))
    }

    /// Runs the job's default export with `ctx = { job: { name, runId, attempt }, logger, db,
    /// storage, records }`. `Err(message)` when it throws, rejects, exceeds `timeout` or its
    /// memory limit, or when every job worker is busy and the wait queue is full.
    pub fn run(
        &self,
        name: &str,
        run_id: &str,
        attempt: u32,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = RunRequest {
            name: name.to_string(),
            run_id: run_id.to_string(),
            attempt,
            timeout,
            reply,
        };
        let sent = match &self.queue {
            None => Err("no jobs are loaded".to_string()),
            Some(q) => match q.try_send(request) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    Err("every job worker is busy and the job queue is full".into())
                }
                Err(TrySendError::Disconnected(_)) => Err("the job runtime has stopped".into()),
            },
        };
        async move {
            sent?;
            answer
                .await
                .unwrap_or_else(|_| Err("the job runtime stopped during the run".into()))
        }
    }

    /// Lets running jobs finish and joins the workers.
    pub fn shutdown(&mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for JobScripts {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn build(shared: &Shared) -> Result<(worker::Js, Vec<JobModule>), FunctionsError> {
    let js = worker::runtime(shared).await?;
    let files = shared.files.clone();
    let maps = shared.maps.clone();
    let modules = load_with_budget(&js, shared, async move |ctx| {
        load_jobs(&ctx, &files, &maps).await
    })
    .await?;
    Ok((js, modules))
}

async fn load_jobs(
    ctx: &Ctx<'_>,
    files: &[String],
    maps: &crate::sourcemap::SourceMaps,
) -> Result<Vec<JobModule>, FunctionsError> {
    let rt_err = |e: rquickjs::Error| FunctionsError::Runtime(e.to_string());
    let registry = Object::new(ctx.clone()).map_err(rt_err)?;
    ctx.globals()
        .set(JOBS_GLOBAL, registry.clone())
        .map_err(rt_err)?;
    let mut out = Vec::new();
    for rel in files {
        let res = async {
            Module::import(ctx, rel.as_str())?
                .into_future::<Object>()
                .await
        }
        .await
        .catch(ctx);
        let ns = res.map_err(|e| FunctionsError::Load {
            kind: "job",
            file: rel.clone(),
            message: describe(ctx, e, maps)
                .with_location()
                .unwrap_or_else(|| "module threw".into()),
        })?;
        let name = job_name(rel);
        let mut exports = Map::new();
        let mut has_default = false;
        for key in ns.keys::<String>() {
            let key = key.map_err(rt_err)?;
            let v: Value = ns.get(key.as_str()).map_err(rt_err)?;
            if key == "default" {
                if v.is_function() {
                    has_default = true;
                    registry.set(name.as_str(), v).map_err(rt_err)?;
                }
                continue;
            }
            if v.is_function() {
                continue;
            }
            let text = ctx
                .json_stringify(v)
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok());
            if let Some(j) = text.and_then(|t| serde_json::from_str::<Json>(&t).ok()) {
                exports.insert(key, j);
            }
        }
        out.push(JobModule {
            name,
            file: rel.clone(),
            exports,
            has_default,
        });
    }
    Ok(out)
}

/// Job runs: one default export call per item, answered on the item's reply channel.
struct JobRuns;

impl worker::WorkerKind for JobRuns {
    type Item = RunRequest;
    type Loaded = Vec<JobModule>;
    const NAME: &'static str = "Job worker";

    fn build(
        shared: &Shared,
    ) -> impl Future<Output = Result<(worker::Js, Self::Loaded), FunctionsError>> {
        build(shared)
    }

    fn handle(
        rt: &tokio::runtime::Runtime,
        js: &worker::Js,
        shared: &Shared,
        modules: &Vec<JobModule>,
        req: RunRequest,
    ) -> bool {
        let Some(module) = modules.iter().find(|m| m.name == req.name && m.has_default) else {
            let _ = req
                .reply
                .send(Err(format!("no job named \"{}\"", req.name)));
            return false;
        };
        js.api.begin(0);
        let (name, run_id, attempt, file) = (
            req.name.clone(),
            req.run_id.clone(),
            req.attempt,
            module.file.clone(),
        );
        let maps = shared.maps.clone();
        let outcome = rt.block_on(worker::run_budgeted(
            js,
            req.timeout,
            &module.file,
            async move |ctx| {
                let handler = (|| {
                    let registry: Object = ctx.globals().get(JOBS_GLOBAL)?;
                    let f: Function = registry.get(name.as_str())?;
                    let arg = crate::context::job_context(&ctx, &file, &name, &run_id, attempt)?;
                    Ok((f, arg))
                })();
                worker::call_handler(&ctx, handler, &maps).await
            },
        ));
        let (result, recycle) = match outcome {
            Outcome::Completed => (Ok(()), false),
            Outcome::Failed {
                error,
                stack,
                recycle,
            } => {
                if let Some(stack) = stack {
                    tracing::debug!(job = %module.file, "Job stack:\n{stack}");
                }
                let msg = error.unwrap_or_else(|| "Job failed".into());
                // The engine words its limit as a function's; say job here.
                (
                    Err(msg.replace("Function timed out", "Job timed out")),
                    recycle,
                )
            }
        };
        let _ = req.reply.send(result);
        recycle
    }
}
