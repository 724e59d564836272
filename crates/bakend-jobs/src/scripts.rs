//! Loading `jobs/**/*.ts` with the JavaScript engine of `bakend-functions` (`JobScripts`: its
//! own worker threads, separate from the trigger workers) into schedulable jobs.

use bakend_core::sync;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bakend_functions::{FunctionsConfig, HostServices, JobScripts};

use crate::JobsError;
use crate::definition::{JobDef, JobDefaults, JobSource, validate_all};
use crate::engine::{JobEngine, RunFuture};

/// [`JobEngine`] over the loaded scripts.
pub struct ScriptEngine {
    scripts: Mutex<Option<JobScripts>>,
}

impl JobEngine for ScriptEngine {
    fn run(&self, name: &str, run_id: &str, attempt: u32, timeout: Duration) -> RunFuture {
        let guard = sync::lock(&self.scripts);
        match guard.as_ref() {
            Some(s) => Box::pin(s.run(name, run_id, attempt, timeout)),
            None => Box::pin(async { Err("the job runtime has stopped".to_string()) }),
        }
    }

    /// Joins the JS threads once their current runs end.
    fn shutdown(&self) {
        let scripts = sync::lock(&self.scripts).take();
        if let Some(mut s) = scripts {
            s.shutdown();
        }
    }
}

/// Compiles, loads and validates every job file. Blocking: call it on a blocking thread.
/// Errors name the file (and line, or cron field).
pub fn load(
    project_dir: &Path,
    services: HostServices,
    engine_config: FunctionsConfig,
    defaults: &JobDefaults,
) -> Result<(Vec<JobDef>, Arc<dyn JobEngine>), JobsError> {
    let (scripts, modules) = JobScripts::start(project_dir, services, engine_config)
        .map_err(|e| JobsError::Engine(e.to_string()))?;
    let sources: Vec<JobSource> = modules
        .into_iter()
        .map(|m| JobSource {
            name: m.name,
            file: m.file,
            exports: m.exports,
            has_default: m.has_default,
        })
        .collect();
    let engine: Arc<dyn JobEngine> = Arc::new(ScriptEngine {
        scripts: Mutex::new(Some(scripts)),
    });
    match validate_all(&sources, defaults) {
        Ok(defs) => Ok((defs, engine)),
        Err(e) => {
            engine.shutdown();
            Err(e)
        }
    }
}
