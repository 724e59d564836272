//! One run of a job: `job.started`, up to `retries + 1` attempts `retryDelay` apart (same
//! `runId`, fresh context each), then `job.completed` or `job.failed`, with the history row
//! written at both ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bakend_core::{Event, EventSource};
use bakend_events::EventBus;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::definition::JobDef;
use crate::engine::JobEngine;
use crate::history::{History, JobRun, RunStatus, Trigger};

/// Slack on top of a job's own timeout before the scheduler stops waiting for the engine: the
/// engine enforces the limit, this only guards against an engine that never answers.
const ENGINE_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Runner {
    pub bus: Arc<dyn EventBus>,
    pub history: History,
    /// Flips to `true` when the server shuts down: retry waits end early.
    pub stop: watch::Receiver<bool>,
}

fn payload(def: &JobDef, run_id: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), json!(def.name));
    m.insert("filePath".into(), json!(def.file));
    m.insert("schedule".into(), json!(def.schedule.expr()));
    m.insert("runId".into(), json!(run_id));
    m
}

impl Runner {
    /// Runs `def` to its end and returns the finished history entry.
    pub async fn execute(
        &self,
        def: Arc<JobDef>,
        engine: Arc<dyn JobEngine>,
        trigger: Trigger,
        run_id: String,
        first_attempt: u32,
    ) -> JobRun {
        let clock = Instant::now();
        let mut run = JobRun {
            run_id: run_id.clone(),
            job: def.name.clone(),
            status: RunStatus::Running,
            attempt: first_attempt.max(1),
            trigger: trigger.as_str().to_string(),
            started_at: bakend_core::time::now_iso(),
            ended_at: None,
            duration_ms: None,
            error: None,
            node: self.history.node().map(str::to_string),
        };
        let started = Event::new(
            "job.started",
            EventSource::Jobs,
            Value::Object(payload(&def, &run_id)),
        );
        if let Err(e) = self.history.started(&run, started.clone()).await {
            tracing::error!("Recording the start of job {} failed: {e}", def.name);
            self.bus.emit(started);
        }
        tracing::debug!("Job started: {} ({run_id}, {})", def.name, trigger.as_str());

        let attempts = def.attempts();
        let mut stop = self.stop.clone();
        let outcome = loop {
            let result = attempt(&*engine, &def, &run_id, run.attempt).await;
            let message = match result {
                Ok(()) => break Ok(()),
                Err(m) => m,
            };
            if run.attempt >= attempts {
                tracing::error!("Job failed ({}): {message}", def.file);
                break Err(message);
            }
            tracing::error!(
                "Job failed ({}), retrying ({}/{attempts}): {message}",
                def.file,
                run.attempt
            );
            if *stop.borrow() {
                break Err(format!("{message} (no retry: the server is shutting down)"));
            }
            tokio::select! {
                _ = tokio::time::sleep(def.retry_delay) => {}
                _ = stop.changed() => {
                    break Err(format!("{message} (no retry: the server is shutting down)"));
                }
            }
            run.attempt += 1;
        };

        let duration_ms = clock.elapsed().as_millis() as u64;
        run.ended_at = Some(bakend_core::time::now_iso());
        run.duration_ms = Some(duration_ms);
        let mut p = payload(&def, &run_id);
        let event = match outcome {
            Ok(()) => {
                run.status = RunStatus::Completed;
                p.insert("durationMs".into(), json!(duration_ms));
                p.insert("attempt".into(), json!(run.attempt));
                Event::new("job.completed", EventSource::Jobs, Value::Object(p))
            }
            Err(message) => {
                run.status = RunStatus::Failed;
                p.insert("error".into(), json!(message));
                p.insert("durationMs".into(), json!(duration_ms));
                p.insert("attempt".into(), json!(run.attempt));
                run.error = Some(message);
                Event::new("job.failed", EventSource::Jobs, Value::Object(p))
            }
        };
        if let Err(e) = self.history.finished(&run, event.clone()).await {
            tracing::error!("Recording the end of job {} failed: {e}", def.name);
            self.bus.emit(event);
        }
        tracing::debug!(
            "Job {}: {} ({run_id}, attempt {}, {duration_ms} ms)",
            run.status.as_str(),
            def.name,
            run.attempt
        );
        run
    }
}

async fn attempt(
    engine: &dyn JobEngine,
    def: &JobDef,
    run_id: &str,
    attempt: u32,
) -> Result<(), String> {
    let fut = engine.run(&def.name, run_id, attempt, def.timeout);
    match tokio::time::timeout(def.timeout + ENGINE_GRACE, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Job timed out after {} ms",
            def.timeout.as_millis()
        )),
    }
}
