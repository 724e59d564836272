//! The backup-manifest reader (`bakend_store::backup_manifest`, used by `bak backup restore`).
//! Any manifest text: parsing never panics; an accepted manifest names a database at the
//! archive's top level and storage members that stay inside `storage/`; and what it read,
//! written back, reads the same.

#![no_main]

use bakend_store::backup_manifest::{self, MANIFEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = backup_manifest::parse(data) else {
        return;
    };
    let db = &m.database.path;
    assert!(
        !db.is_empty() && !db.contains('/') && db != MANIFEST && db != "..",
        "{db:?}"
    );
    for s in &m.storage {
        let rest = s
            .path
            .strip_prefix("storage/")
            .unwrap_or_else(|| panic!("{:?}", s.path));
        assert!(
            rest.split('/').all(|seg| !matches!(seg, "" | "." | "..")),
            "{:?}",
            s.path
        );
    }
    let again = m.to_json().to_string();
    assert_eq!(backup_manifest::parse(again.as_bytes()), Ok(m));
});
