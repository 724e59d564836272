//! Errors of the jobs subsystem.

use bakend_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A job file that cannot be scheduled: fatal at start, reported (and the previous version
    /// kept) on hot reload. `file` is project-relative (`jobs/cleanup.ts`).
    #[error("Failed to load job {file}: {message}")]
    Load { file: String, message: String },
    /// The JavaScript engine could not compile or load a job file (the message names it).
    #[error("{0}")]
    Engine(String),
    #[error("Job \"{0}\" does not exist")]
    NotFound(String),
    #[error("Job \"{0}\" is already running")]
    AlreadyRunning(String),
    /// Several servers on one database: the job is running on another node.
    #[error("Job \"{job}\" is already running on node {node}")]
    RunningOn { job: String, node: String },
    #[error("The jobs scheduler is shutting down")]
    ShuttingDown,
    #[error("Invalid jobs.timezone \"{0}\": not an IANA time zone name")]
    TimeZone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
