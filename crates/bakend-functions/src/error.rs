//! Typed errors of the functions host.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// A `.ts` file failed to parse or transform. `file` is project-relative.
    #[error("Failed to load function {file}:{line}:{column}: {message}")]
    Compile {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A module threw while it was evaluated, or an import could not be resolved.
    #[error("Failed to load function {file}: {message}")]
    Load { file: String, message: String },
    #[error("Failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Functions runtime error: {0}")]
    Runtime(String),
}
