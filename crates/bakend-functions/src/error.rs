//! Typed errors of the functions host.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// A `.ts` file failed to parse or transform. `file` is project-relative; `kind` is
    /// `function` or `job`.
    #[error("Failed to load {kind} {file}:{line}:{column}: {message}")]
    Compile {
        kind: &'static str,
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A module threw while it was evaluated, or an import could not be resolved.
    #[error("Failed to load {kind} {file}: {message}")]
    Load {
        kind: &'static str,
        file: String,
        message: String,
    },
    #[error("Failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Functions runtime error: {0}")]
    Runtime(String),
}

impl FunctionsError {
    /// The same error reported as a job's (`Failed to load job …`).
    pub fn for_job(self) -> Self {
        match self {
            FunctionsError::Compile {
                file,
                line,
                column,
                message,
                ..
            } => FunctionsError::Compile {
                kind: "job",
                file,
                line,
                column,
                message,
            },
            FunctionsError::Load { file, message, .. } => FunctionsError::Load {
                kind: "job",
                file,
                message,
            },
            other => other,
        }
    }
}
