//! Loading `jobs/**/*.ts` with the JavaScript engine into schedulable jobs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::definition::{JobDef, JobDefaults};
use crate::engine::{JobEngine, RunFuture};
use crate::{JobsError, discovery};

/// The engine of a project without jobs.
struct NoEngine;

impl JobEngine for NoEngine {
    fn run(&self, name: &str, _run_id: &str, _attempt: u32, _timeout: Duration) -> RunFuture {
        let name = name.to_string();
        Box::pin(async move { Err(format!("Job \"{name}\" is not loaded")) })
    }
}

/// Loads and validates every job file. Blocking: call it on a blocking thread.
pub fn load(
    project_dir: &Path,
    _defaults: &JobDefaults,
) -> Result<(Vec<JobDef>, Arc<dyn JobEngine>), JobsError> {
    let files = discovery::discover(project_dir)?;
    match files.first() {
        None => Ok((Vec::new(), Arc::new(NoEngine))),
        Some(f) => Err(JobsError::Load {
            file: f.file.clone(),
            message: "the JavaScript engine for jobs is not available in this build yet".into(),
        }),
    }
}
