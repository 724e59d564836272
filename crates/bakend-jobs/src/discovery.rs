//! Finds `jobs/**/*.ts` and names each job by its path below `jobs/` without the extension, so
//! `jobs/a/x.ts` (`a/x`) and `jobs/b/x.ts` (`b/x`) never collide.
//!
//! The engine loads the files itself; this listing lets commands that need no JavaScript
//! (`bak jobs runs`) know which jobs exist, and lets the loader check that every file became
//! a job.

use std::path::{Path, PathBuf};

use crate::JobsError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFile {
    /// `cleanup`, `reports/daily`.
    pub name: String,
    /// Project-relative, `/`-separated: `jobs/reports/daily.ts`.
    pub file: String,
    pub path: PathBuf,
}

/// The job name for a project-relative file (`jobs/a/x.ts` → `a/x`).
pub fn job_name(file: &str) -> Option<&str> {
    file.strip_prefix("jobs/")?.strip_suffix(".ts")
}

/// Every regular `.ts` file (not `.d.ts`) below `<project_dir>/jobs`, sorted by path. Entries
/// named `.bakend-cache` are skipped at any depth; a missing folder means no jobs. (The same
/// walk the engine loads the files with.)
pub fn discover(project_dir: &Path) -> Result<Vec<JobFile>, JobsError> {
    let files = bakend_functions::discover_in(project_dir, "jobs").map_err(|e| match e {
        bakend_functions::FunctionsError::Io { path, source } => JobsError::Io { path, source },
        other => JobsError::Engine(other.to_string()),
    })?;
    Ok(files
        .into_iter()
        .map(|f| JobFile {
            name: job_name(&f.rel).unwrap_or_default().to_string(),
            file: f.rel,
            path: f.path,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths_below_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("jobs");
        std::fs::create_dir_all(j.join("a")).unwrap();
        std::fs::create_dir_all(j.join("b")).unwrap();
        std::fs::create_dir_all(j.join(".bakend-cache")).unwrap();
        for f in [
            "a/x.ts",
            "b/x.ts",
            "top.ts",
            "types.d.ts",
            "notes.js",
            ".bakend-cache/c.ts",
        ] {
            std::fs::write(j.join(f), "").unwrap();
        }
        let found: Vec<(String, String)> = discover(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| (f.name, f.file))
            .collect();
        assert_eq!(
            found,
            vec![
                ("a/x".to_string(), "jobs/a/x.ts".to_string()),
                ("b/x".to_string(), "jobs/b/x.ts".to_string()),
                ("top".to_string(), "jobs/top.ts".to_string()),
            ]
        );
    }

    #[test]
    fn missing_folder_is_no_jobs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(discover(dir.path()).unwrap().is_empty());
    }
}
