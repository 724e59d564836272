//! Finds `functions/**/*.ts` under the project directory.

use std::path::{Path, PathBuf};

use crate::FunctionsError;

/// One discovered file: its absolute path and its project-relative path with `/` separators
/// (e.g. `functions/posts/notify.ts`), which is the module name inside the JS runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionFile {
    pub path: PathBuf,
    pub rel: String,
}

/// Every regular `.ts` file below `<project_dir>/functions`, sorted by relative path. A missing
/// folder means no functions. Entries named `.bakend-cache` are skipped at any depth.
pub fn discover(project_dir: &Path) -> Result<Vec<FunctionFile>, FunctionsError> {
    discover_in(project_dir, "functions")
}

/// Like [`discover`] for another top-level folder of the project (`jobs`).
pub fn discover_in(project_dir: &Path, folder: &str) -> Result<Vec<FunctionFile>, FunctionsError> {
    let root = project_dir.join(folder);
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    walk(&root, folder, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<FunctionFile>) -> Result<(), FunctionsError> {
    let io = |source| FunctionsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".bakend-cache" {
            continue;
        }
        let ty = entry.file_type().map_err(io)?;
        let child_rel = format!("{rel}/{name}");
        if ty.is_dir() {
            walk(&entry.path(), &child_rel, out)?;
        } else if ty.is_file() && name.ends_with(".ts") && !name.ends_with(".d.ts") {
            out.push(FunctionFile {
                path: entry.path(),
                rel: child_rel,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ts_recursively_sorted_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("functions");
        std::fs::create_dir_all(f.join("posts")).unwrap();
        std::fs::create_dir_all(f.join(".bakend-cache")).unwrap();
        std::fs::write(f.join("z.ts"), "").unwrap();
        std::fs::write(f.join("posts/a.ts"), "").unwrap();
        std::fs::write(f.join("b.js"), "").unwrap();
        std::fs::write(f.join(".bakend-cache/c.ts"), "").unwrap();
        let rels: Vec<_> = discover(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.rel)
            .collect();
        assert_eq!(rels, vec!["functions/posts/a.ts", "functions/z.ts"]);
    }

    #[test]
    fn missing_folder_is_no_functions() {
        let dir = tempfile::tempdir().unwrap();
        assert!(discover(dir.path()).unwrap().is_empty());
    }
}
