//! Reading a backup's `manifest.json` (`bak backup restore`): which members the archive must
//! hold and their declared sizes and SHA-256 sums. It lives here rather than in the `bak`
//! binary so the fuzz target `backup_manifest` can reach it; comparing the members against the
//! extracted files stays in `bak`.

use serde_json::{Value, json};

/// The manifest's member name inside the archive.
pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: &str = "bakend-backup";
pub const FORMAT_VERSION: u64 = 1;

/// One archive member the manifest lists. A size or checksum that is missing or of the wrong
/// type is kept as `None`, which no file can match (the backup is then reported as damaged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

impl Member {
    fn read(v: &Value, path: String) -> Member {
        Member {
            path,
            size: v["size"].as_u64(),
            sha256: v["sha256"].as_str().map(str::to_string),
        }
    }

    fn to_json(&self) -> Value {
        json!({"path": self.path, "size": self.size, "sha256": self.sha256})
    }
}

/// What restore needs from a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The database file, at the archive's top level.
    pub database: Member,
    /// Every stored file, each under `storage/`.
    pub storage: Vec<Member>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("The backup manifest is not JSON")]
    NotJson,
    #[error("The archive is not a Bakend backup of a known format")]
    UnknownFormat,
    #[error("The backup manifest names no database")]
    NoDatabase,
    #[error("The backup manifest lists a bad storage path")]
    BadStoragePath,
}

/// `storage/<relative path>` made of plain names only (no `..`, `.`, root or empty parts), so a
/// listed member can never name a file outside the extracted folder.
fn storage_path(p: &str) -> bool {
    p.strip_prefix("storage/")
        .is_some_and(|rest| rest.split('/').all(|seg| !matches!(seg, "" | "." | "..")))
}

/// Parses and checks a manifest's text.
pub fn parse(text: &[u8]) -> Result<Manifest, ManifestError> {
    let m: Value = serde_json::from_slice(text).map_err(|_| ManifestError::NotJson)?;
    if m["format"] != FORMAT || m["formatVersion"].as_u64() != Some(FORMAT_VERSION) {
        return Err(ManifestError::UnknownFormat);
    }
    let db = &m["database"];
    let db_name = db["path"]
        .as_str()
        .filter(|n| {
            !n.is_empty() && !n.contains('/') && ![MANIFEST, "storage", ".", ".."].contains(n)
        })
        .ok_or(ManifestError::NoDatabase)?;
    let database = Member::read(db, db_name.to_string());
    let mut storage = Vec::new();
    for s in m["storage"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let path = s["path"]
            .as_str()
            .filter(|p| storage_path(p))
            .ok_or(ManifestError::BadStoragePath)?;
        storage.push(Member::read(s, path.to_string()));
    }
    Ok(Manifest { database, storage })
}

impl Manifest {
    /// The manifest's restore-relevant part as JSON (what [`parse`] reads back).
    pub fn to_json(&self) -> Value {
        json!({
            "format": FORMAT,
            "formatVersion": FORMAT_VERSION,
            "database": self.database.to_json(),
            "storage": self.storage.iter().map(Member::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(db: Value, storage: Value) -> Vec<u8> {
        json!({"format": FORMAT, "formatVersion": 1, "database": db, "storage": storage})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn reads_members_and_round_trips() {
        let text = manifest(
            json!({"path": "bakend.db", "size": 4096, "sha256": "ab"}),
            json!([{"path": "storage/files/fil_1", "size": 3, "sha256": "cd"}]),
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.database.path, "bakend.db");
        assert_eq!(m.database.size, Some(4096));
        assert_eq!(m.storage[0].path, "storage/files/fil_1");
        assert_eq!(parse(m.to_json().to_string().as_bytes()), Ok(m));
    }

    #[test]
    fn refuses_what_restore_cannot_trust() {
        let db = json!({"path": "bakend.db", "size": 1, "sha256": "x"});
        assert_eq!(parse(b"{"), Err(ManifestError::NotJson));
        assert_eq!(parse(b"[]"), Err(ManifestError::UnknownFormat));
        for bad_db in ["", "a/b", MANIFEST, ".."] {
            let text = manifest(json!({"path": bad_db}), json!([]));
            assert_eq!(parse(&text), Err(ManifestError::NoDatabase), "{bad_db}");
        }
        for bad in [
            "files/x",
            "storage/",
            "storage/../escape",
            "storage/files/../../x",
            "storage//x",
            "storage/./x",
            "storage/x/",
        ] {
            let text = manifest(db.clone(), json!([{"path": bad}]));
            assert_eq!(parse(&text), Err(ManifestError::BadStoragePath), "{bad}");
        }
    }

    #[test]
    fn a_missing_size_or_checksum_is_kept_as_none() {
        let text = manifest(json!({"path": "bakend.db", "size": "big"}), json!(null));
        let m = parse(&text).unwrap();
        assert_eq!((m.database.size, m.database.sha256), (None, None));
        assert!(m.storage.is_empty());
    }
}
