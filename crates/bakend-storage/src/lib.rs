//! File storage (spec `storage.md`): blobs behind the [`BlobStore`] trait (a local folder, or
//! an S3-compatible bucket with the `s3` feature; the HTTP handlers do not know which),
//! metadata rows in `_files`, uploads spooled to a temporary file while they are counted, and
//! pruning.
//!
//! Durability order: an upload is written to `<storage>/tmp/`, fsynced, renamed to
//! `<storage>/files/<id>` and the directory fsynced (on S3: sent as object `files/<id>`, the
//! PUT or multipart upload complete), and only then is its row committed. A crash therefore
//! leaves either a complete blob with its row, or no row at all (a blob without a row is
//! invisible and removed by `bak storage prune`; leftover temporary files are removed at
//! start). Deletion commits the row's removal first and unlinks the blob after.

pub mod blob;
pub mod error;
pub mod files;
pub mod mime;
pub mod prune;
#[cfg(feature = "s3")]
pub mod s3;
pub mod upload_form;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bakend_core::config::S3Settings;

pub use blob::{BlobInfo, BlobReader, BlobStore, LocalBlobStore, Spooled, TempUpload};
pub use error::StorageError;
pub use files::{FileMeta, FileService, NewFile, Visibility};
pub use prune::{PruneReport, prune};

/// Why [`open_blobs`] failed; the message is complete in itself.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("Cannot open the storage folder {}: {error}", path.display())]
    Folder {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The bucket is missing, unreachable or refuses the credentials (one line, no secret).
    #[error("{0}")]
    S3(String),
    #[error(
        "storage.s3 is set, but this build of bak has no S3 support (it was built without the `s3` feature)"
    )]
    NoS3Support,
}

/// The blob store the settings name: the bucket of `storage.s3` (checked: it must exist), with
/// temporary uploads in `<root>/tmp/`, or else the folder `root`. An S3 store runs its requests
/// on the current tokio runtime, which must be a multi-thread one.
pub async fn open_blobs(
    root: &Path,
    s3: Option<&S3Settings>,
) -> Result<Arc<dyn BlobStore>, OpenError> {
    match s3 {
        #[cfg(feature = "s3")]
        Some(settings) => Ok(Arc::new(
            s3::S3BlobStore::connect(settings, root)
                .await
                .map_err(|e| OpenError::S3(e.to_string()))?,
        )),
        #[cfg(not(feature = "s3"))]
        Some(_) => Err(OpenError::NoS3Support),
        None => {
            let path = root.to_path_buf();
            let opened = tokio::task::spawn_blocking(move || LocalBlobStore::open(&path))
                .await
                .map_err(|e| OpenError::Folder {
                    path: root.to_path_buf(),
                    error: std::io::Error::other(e),
                })?;
            let blobs = opened.map_err(|error| OpenError::Folder {
                path: root.to_path_buf(),
                error,
            })?;
            Ok(Arc::new(blobs))
        }
    }
}

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
