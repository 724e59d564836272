//! File storage (spec `storage.md`): blobs behind the [`BlobStore`] trait (a local folder now;
//! object storage can be added later without touching the HTTP handlers), metadata rows in
//! `_files`, uploads spooled to a temporary file while they are counted, and pruning.
//!
//! Durability order: an upload is written to `<storage>/tmp/`, fsynced, renamed to
//! `<storage>/files/<id>` and the directory fsynced, and only then is its row committed. A crash
//! therefore leaves either a complete blob with its row, or no row at all (a blob without a row
//! is invisible and removed by `bak storage prune`; leftover temporary files are removed at
//! start). Deletion commits the row's removal first and unlinks the blob after.

pub mod blob;
pub mod error;
pub mod files;
pub mod mime;
pub mod prune;
pub mod upload_form;

pub use blob::{BlobInfo, BlobReader, BlobStore, LocalBlobStore, Spooled, TempUpload};
pub use error::StorageError;
pub use files::{FileMeta, FileService, NewFile, Visibility};
pub use prune::{PruneReport, prune};

/// Default `storage.maxFileSize`: 10 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// The size-limit message: `File exceeds maximum size of 10 MB` for the default; other limits
/// in MB (MiB) the same way, with one decimal when not whole.
pub fn limit_message(limit: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    let size = if limit.is_multiple_of(MIB) {
        format!("{}", limit / MIB)
    } else {
        let tenths = (limit as f64 / MIB as f64 * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            format!("{tenths:.0}")
        } else {
            format!("{tenths:.1}")
        }
    };
    format!("File exceeds maximum size of {size} MB")
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_messages() {
        assert_eq!(
            super::limit_message(10 * 1024 * 1024),
            "File exceeds maximum size of 10 MB"
        );
        assert_eq!(
            super::limit_message(5 * 1024 * 1024),
            "File exceeds maximum size of 5 MB"
        );
        assert_eq!(
            super::limit_message(1536 * 1024),
            "File exceeds maximum size of 1.5 MB"
        );
        assert_eq!(
            super::limit_message(100 * 1024),
            "File exceeds maximum size of 0.1 MB"
        );
    }
}
