//! The jobs steps of start-up (kept apart from `startup.rs`, which only calls them): load and
//! validate `jobs/**/*.ts`, start the scheduler, and — once the port is known — write the local
//! access file that `bak jobs run` uses.

use std::path::Path;
use std::sync::Arc;

use bakend_core::config::Config;
use bakend_events::EventBus;
use bakend_functions::watch::DirWatcher;
use bakend_functions::{FunctionsConfig, HostServices};
use bakend_jobs::local_access::LocalAccess;
use bakend_jobs::{Jobs, JobsConfig};
use bakend_store::Database;

use crate::startup::StartError;

/// Loads every job (any bad file is fatal, naming it) and starts the scheduler.
pub async fn start(
    config: &Config,
    bus: Arc<dyn EventBus>,
    db: Arc<Database>,
    (services, engine_config): (HostServices, FunctionsConfig),
) -> Result<Arc<Jobs>, StartError> {
    let jobs_config =
        JobsConfig::from_config(&config.jobs).map_err(|e| StartError::Jobs(e.to_string()))?;
    let dir = config.project_dir.clone();
    let defaults = jobs_config.defaults.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        bakend_jobs::scripts::load(&dir, services, engine_config, &defaults)
    })
    .await?
    .map_err(|e| StartError::Jobs(e.to_string()))?;
    let (defs, engine) = loaded;
    let count = defs.len();
    bakend_jobs::History::new(db.clone(), jobs_config.history_limit)
        .recover()
        .await
        .map_err(|e| StartError::Jobs(e.to_string()))?;
    let jobs = Jobs::start(defs, engine, bus, db, jobs_config)
        .await
        .map_err(|e| StartError::Jobs(e.to_string()))?;
    let dir = config.project_dir.join("jobs");
    if count == 0 {
        tracing::debug!("No jobs found in {}", dir.display());
    } else {
        tracing::info!("Jobs: {count} job(s) loaded from {}", dir.display());
    }
    Ok(Arc::new(jobs))
}

/// `bak dev` / `--watch`: reloads the jobs when a file below `jobs/` changes. A reload that fails
/// (syntax error, bad schedule, …) is logged and the previous jobs stay scheduled.
pub fn watch(
    config: &Config,
    jobs: Arc<Jobs>,
    (services, engine_config): (HostServices, FunctionsConfig),
) -> Option<DirWatcher> {
    let dir = config.project_dir.clone();
    let jobs_dir = dir.join("jobs");
    let reload = move || {
        tracing::debug!("Reloading jobs from {}", jobs_dir.display());
        let defaults = jobs.config().defaults.clone();
        match bakend_jobs::scripts::load(&dir, services.clone(), engine_config.clone(), &defaults) {
            Ok((defs, engine)) => {
                let n = defs.len();
                let old = jobs.replace(defs, engine);
                // The old runtimes finish the runs they have; joining them may take that long.
                let _ = std::thread::Builder::new()
                    .name("bakend-jobs-retire".into())
                    .spawn(move || old.shutdown());
                tracing::info!("Jobs: {n} job(s) loaded from {}", jobs_dir.display());
            }
            Err(e) => tracing::error!("Job reload failed (previous jobs stay scheduled): {e}"),
        }
    };
    let dir = config.project_dir.join("jobs");
    match DirWatcher::start(&dir, reload) {
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

/// Writes the local access file; without it `bak jobs run` runs jobs in its own process.
pub async fn local_access(project_dir: &Path, port: u16) -> Option<Arc<LocalAccess>> {
    let dir = project_dir.to_path_buf();
    match tokio::task::spawn_blocking(move || LocalAccess::write(&dir, port)).await {
        Ok(Ok(a)) => Some(Arc::new(a)),
        Ok(Err(e)) => {
            tracing::warn!("Cannot write the local access file for `bak jobs run`: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Stops the scheduler (bounded wait for running jobs) and removes the local access file.
pub async fn stop(jobs: &Jobs, local: Option<&Arc<LocalAccess>>) {
    jobs.shutdown().await;
    if let Some(local) = local.cloned() {
        let _ = tokio::task::spawn_blocking(move || local.remove()).await;
    }
}
