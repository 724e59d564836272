//! Turning what the engine found in a job file into a schedulable job, with load errors that
//! name the file (and, for the schedule, the cron field).

use std::time::Duration;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::JobsError;
use crate::cron::Schedule;

/// What the engine reports about one loaded job file.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSource {
    /// `a/x` for `jobs/a/x.ts`.
    pub name: String,
    /// Project-relative: `jobs/a/x.ts`.
    pub file: String,
    /// JSON-able named exports (`schedule`, `retries`, `retryDelay`, `timeout`, ...).
    pub exports: Map<String, Value>,
    /// The default export is a function.
    pub has_default: bool,
}

/// Limits on per-job settings, so a typo cannot schedule a million retries.
pub const MAX_RETRIES: u64 = 10;
pub const MAX_RETRY_DELAY_MS: u64 = 3_600_000;
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Settings a job gets unless its file exports its own.
#[derive(Clone, Debug)]
pub struct JobDefaults {
    pub tz: Tz,
    /// Retries after the first attempt (2 → up to 3 attempts, as in v1).
    pub retries: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            tz: chrono_tz::UTC,
            retries: 2,
            retry_delay: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
        }
    }
}

/// A job ready to schedule.
#[derive(Clone, Debug)]
pub struct JobDef {
    pub name: String,
    pub file: String,
    pub schedule: Schedule,
    pub retries: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
}

impl JobDef {
    /// Attempts per run: the first plus the retries.
    pub fn attempts(&self) -> u32 {
        self.retries + 1
    }

    /// Validates one job file's exports.
    pub fn from_source(src: &JobSource, defaults: &JobDefaults) -> Result<JobDef, JobsError> {
        let fail = |message: String| JobsError::Load {
            file: src.file.clone(),
            message,
        };
        let expr = match src.exports.get("schedule") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(fail(
                    "must export a non-empty schedule string (export const schedule = \"0 3 * * *\")"
                        .into(),
                ));
            }
        };
        if !src.has_default {
            return Err(fail(
                "must export a default handler function (export default async (ctx) => { ... })"
                    .into(),
            ));
        }
        let schedule = Schedule::parse(&expr, defaults.tz)
            .map_err(|e| fail(format!("schedule \"{expr}\": {e}")))?;
        let int = |key: &str, lo: u64, hi: u64, unit: &str| -> Result<Option<u64>, JobsError> {
            match src.exports.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                            .map(|f| f as u64)
                    })
                    .filter(|n| (lo..=hi).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        fail(format!(
                            "export {key} must be an integer between {lo} and {hi}{unit}, got {v}"
                        ))
                    }),
            }
        };
        let retries = int("retries", 0, MAX_RETRIES, "")?
            .map(|n| n as u32)
            .unwrap_or(defaults.retries);
        let retry_delay = int("retryDelay", 0, MAX_RETRY_DELAY_MS, " (milliseconds)")?
            .map(Duration::from_millis)
            .unwrap_or(defaults.retry_delay);
        let timeout = int("timeout", 1, MAX_TIMEOUT_MS, " (milliseconds)")?
            .map(Duration::from_millis)
            .unwrap_or(defaults.timeout);
        Ok(JobDef {
            name: src.name.clone(),
            file: src.file.clone(),
            schedule,
            retries,
            retry_delay,
            timeout,
        })
    }
}

/// Validates every source; the first bad file fails the whole set (at start and on reload
/// alike, so a half-valid set is never scheduled).
pub fn validate_all(
    sources: &[JobSource],
    defaults: &JobDefaults,
) -> Result<Vec<JobDef>, JobsError> {
    sources
        .iter()
        .map(|s| JobDef::from_source(s, defaults))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(exports: Value, has_default: bool) -> JobSource {
        JobSource {
            name: "a/x".into(),
            file: "jobs/a/x.ts".into(),
            exports: exports.as_object().cloned().unwrap_or_default(),
            has_default,
        }
    }

    fn err(exports: Value, has_default: bool) -> String {
        JobDef::from_source(&src(exports, has_default), &JobDefaults::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_apply() {
        let d = JobDef::from_source(
            &src(json!({"schedule": "0 3 * * *"}), true),
            &JobDefaults::default(),
        )
        .unwrap();
        assert_eq!(d.attempts(), 3);
        assert_eq!(d.retry_delay, Duration::from_secs(5));
        assert_eq!(d.timeout, Duration::from_secs(300));
        assert_eq!(d.schedule.expr(), "0 3 * * *");
    }

    #[test]
    fn exports_override() {
        let d = JobDef::from_source(
            &src(
                json!({"schedule": "*/1 * * * * *", "retries": 0, "retryDelay": 250, "timeout": 1500.0}),
                true,
            ),
            &JobDefaults::default(),
        )
        .unwrap();
        assert_eq!(d.attempts(), 1);
        assert_eq!(d.retry_delay, Duration::from_millis(250));
        assert_eq!(d.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn load_errors_name_the_file_and_problem() {
        let e = err(json!({}), true);
        assert_eq!(
            e,
            "Failed to load job jobs/a/x.ts: must export a non-empty schedule string (export const schedule = \"0 3 * * *\")"
        );
        assert!(err(json!({"schedule": ""}), true).contains("non-empty schedule"));
        assert!(err(json!({"schedule": 5}), true).contains("non-empty schedule"));
        assert!(err(json!({"schedule": "* * * * *"}), false).contains("default handler"));
        let e = err(json!({"schedule": "0 3 * 13 *"}), true);
        assert!(
            e.starts_with("Failed to load job jobs/a/x.ts: schedule \"0 3 * 13 *\": month field \"13\" is invalid"),
            "{e}"
        );
        assert!(
            err(json!({"schedule": "* * * * *", "retries": -1}), true)
                .contains("export retries must be an integer between 0 and 10")
        );
        assert!(err(json!({"schedule": "* * * * *", "retries": 1.5}), true).contains("retries"));
        assert!(
            err(json!({"schedule": "* * * * *", "retryDelay": "5s"}), true).contains("retryDelay")
        );
        assert!(err(json!({"schedule": "* * * * *", "timeout": 0}), true).contains("timeout"));
    }
}
