//! How `bak jobs run` reaches a running server on the same machine without an admin account.
//!
//! At start the server writes `<project>/.bakend-cache/local-access.json` —
//! `{"pid":…,"port":…,"token":"<256-bit random hex>"}` — with mode 0600 in a 0700 folder, so
//! only the OS user running the server (and root) can read it. A request that presents the
//! token in [`HEADER`] may run a job, nothing else. The file is removed at shutdown (if it still
//! holds this server's token) and replaced at every start, so a stale file after a crash only
//! holds a token nothing accepts any more. `.bakend-cache/` is in the `.gitignore` that
//! `bak init` writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::JobsError;

/// Request header carrying the local token.
pub const HEADER: &str = "x-bakend-local-token";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAccessInfo {
    pub pid: u32,
    pub port: u16,
    pub token: String,
}

/// The file of this server; [`LocalAccess::remove`] deletes it.
#[derive(Debug)]
pub struct LocalAccess {
    path: PathBuf,
    info: LocalAccessInfo,
}

pub fn path(project_dir: &Path) -> PathBuf {
    project_dir.join(".bakend-cache").join("local-access.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JobsError + '_ {
    move |source| JobsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LocalAccess {
    /// Writes a fresh token for a server listening on `port`. Blocking (small file I/O).
    pub fn write(project_dir: &Path, port: u16) -> Result<LocalAccess, JobsError> {
        let path = path(project_dir);
        let dir = path.parent().unwrap_or(project_dir).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&dir))?;
        }
        let info = LocalAccessInfo {
            pid: std::process::id(),
            port,
            token: bakend_core::ids::random_secret(),
        };
        let text = serde_json::to_vec(&info).unwrap_or_default();
        // Written under a temporary name with owner-only permissions from creation on, then
        // renamed: a reader never sees a partial file or a moment of wider permissions.
        let tmp = dir.join(format!(".local-access-{}.tmp", info.pid));
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(LocalAccess { path, info })
    }

    pub fn token(&self) -> &str {
        &self.info.token
    }

    /// Whether `presented` is this server's token (constant-time comparison).
    pub fn verify(&self, presented: &str) -> bool {
        let (a, b) = (self.info.token.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Deletes the file unless another server has replaced it since.
    pub fn remove(&self) {
        if read(
            self.path
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new(".")),
        )
        .is_some_and(|i| i.token == self.info.token)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The running server's access info, if a readable file is there.
pub fn read(project_dir: &Path) -> Option<LocalAccessInfo> {
    let text = std::fs::read(path(project_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_owner_only_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalAccess::write(dir.path(), 4321).unwrap();
        let info = read(dir.path()).unwrap();
        assert_eq!(info.port, 4321);
        assert_eq!(info.token.len(), 64);
        assert!(a.verify(&info.token));
        assert!(!a.verify("nope"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A newer server's file is not removed by the older one.
        let b = LocalAccess::write(dir.path(), 4322).unwrap();
        a.remove();
        assert_eq!(read(dir.path()).unwrap().port, 4322);
        b.remove();
        assert!(read(dir.path()).is_none());
    }
}
