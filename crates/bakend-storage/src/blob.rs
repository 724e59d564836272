//! Where file bytes live. [`BlobStore`] is all the rest of Bakend knows about it: the local
//! folder ([`LocalBlobStore`]), or an S3-compatible bucket (`crate::s3::S3BlobStore`, with the
//! `s3` feature). Every method may block: call them on a blocking thread (the
//! [`crate::FileService`] does), never on an async one.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};

/// A blob opened for reading at some offset.
pub struct BlobReader {
    /// Whole length of the blob.
    pub len: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
}

/// A stored blob as listed by [`BlobStore::list`].
#[derive(Clone, Debug)]
pub struct BlobInfo {
    pub id: String,
    pub len: u64,
    pub modified: SystemTime,
}

pub trait BlobStore: Send + Sync + 'static {
    /// A fresh local temporary file to spool an upload into. It is removed when the returned
    /// value is dropped without being stored.
    fn create_temp(&self) -> io::Result<TempUpload>;
    /// Makes a fully written, fsynced temporary file durable as blob `id`. On return the blob
    /// is complete on stable storage.
    fn put(&self, id: &str, temp: Spooled) -> io::Result<()>;
    /// Opens blob `id` positioned at `offset`; `None` if it does not exist.
    fn open(&self, id: &str, offset: u64) -> io::Result<Option<BlobReader>>;
    /// As [`BlobStore::open`] for a caller that reads only `len` bytes from `offset` (a range
    /// download; `0`: none, only the length is wanted). The reader may end after those bytes.
    fn open_range(&self, id: &str, offset: u64, len: u64) -> io::Result<Option<BlobReader>> {
        let _ = len;
        self.open(id, offset)
    }
    /// Removes blob `id`; `false` if there was none.
    fn delete(&self, id: &str) -> io::Result<bool>;
    /// Every stored blob.
    fn list(&self) -> io::Result<Vec<BlobInfo>>;
    /// Removes temporary files left by a crash; returns how many. Only safe before uploads are
    /// accepted.
    fn clean_temp(&self) -> io::Result<usize>;
}

/// An upload being spooled to a local temporary file (asynchronously, through a buffer).
/// Dropping it removes the file.
pub struct TempUpload {
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    size: u64,
}

const SPOOL_BUFFER: usize = 128 * 1024;

impl TempUpload {
    pub fn new(path: PathBuf, file: File) -> Self {
        TempUpload {
            path,
            file: Some(BufWriter::with_capacity(
                SPOOL_BUFFER,
                tokio::fs::File::from_std(file),
            )),
            size: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))?;
        file.write_all(bytes).await?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the bytes to stable storage (fsync). The file is still removed on drop.
    pub async fn finish(mut self) -> io::Result<Spooled> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.get_mut().sync_all().await?;
        }
        Ok(Spooled {
            path: std::mem::take(&mut self.path),
            size: self.size,
        })
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A completely written and fsynced temporary file, ready for [`BlobStore::put`]. Dropping it
/// removes the file.
pub struct Spooled {
    path: PathBuf,
    size: u64,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hands the file over: it is no longer removed on drop.
    pub fn release(mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

impl Spooled {
    /// A complete file someone else wrote (a restored backup's blob), handed to
    /// [`BlobStore::put`]: removed when dropped, like an upload's.
    pub fn adopt(path: PathBuf) -> io::Result<Spooled> {
        let size = std::fs::metadata(&path)?.len();
        Ok(Spooled { path, size })
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Blobs as files: `<root>/files/<id>`, temporary files in `<root>/tmp/`.
pub struct LocalBlobStore {
    files: PathBuf,
    tmp: PathBuf,
}

impl LocalBlobStore {
    /// Creates the folders if needed.
    pub fn open(root: &Path) -> io::Result<LocalBlobStore> {
        let files = root.join("files");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&files)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(LocalBlobStore { files, tmp })
    }

    pub fn files_dir(&self) -> &Path {
        &self.files
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    fn blob_path(&self, id: &str) -> io::Result<PathBuf> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid blob id {id:?}"),
            ));
        }
        Ok(self.files.join(id))
    }
}

/// Ids are generated by Bakend (`fil_<uuid>`), but a blob's path or key must never escape its
/// folder: letters, digits, `_` and `-` only.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new temporary upload file in `tmp` (the local spool of every store).
pub(crate) fn create_temp_in(tmp: &Path) -> io::Result<TempUpload> {
    let path = tmp.join(bakend_core::ids::new_id("upload-").replace('-', ""));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(TempUpload::new(path, file))
}

/// Removes every file in `tmp`; how many.
pub(crate) fn clean_temp_in(tmp: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

impl BlobStore for LocalBlobStore {
    fn create_temp(&self) -> io::Result<TempUpload> {
        create_temp_in(&self.tmp)
    }

    fn put(&self, id: &str, temp: Spooled) -> io::Result<()> {
        let dest = self.blob_path(id)?;
        let src = temp.release();
        if let Err(e) = std::fs::rename(&src, &dest) {
            let _ = std::fs::remove_file(&src);
            return Err(e);
        }
        sync_dir(&self.files)
    }

    fn open(&self, id: &str, offset: u64) -> io::Result<Option<BlobReader>> {
        let Ok(path) = self.blob_path(id) else {
            return Ok(None);
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(Some(BlobReader {
            len,
            reader: Box::pin(tokio::fs::File::from_std(file)),
        }))
    }

    fn delete(&self, id: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.blob_path(id)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.files)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            out.push(BlobInfo {
                id,
                len: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    fn clean_temp(&self) -> io::Result<usize> {
        clean_temp_in(&self.tmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_open_delete_and_temp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let mut t = store.create_temp().unwrap();
        t.write(b"hello ").await.unwrap();
        t.write(b"world").await.unwrap();
        assert_eq!(t.size(), 11);
        store.put("fil_1", t.finish().await.unwrap()).unwrap();
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        let mut r = store.open("fil_1", 6).unwrap().unwrap();
        assert_eq!(r.len, 11);
        let mut s = String::new();
        r.reader.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "world");
        assert!(store.open("../x", 0).unwrap().is_none());
        assert!(store.open("fil_2", 0).unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.delete("fil_1").unwrap());
        assert!(!store.delete("fil_1").unwrap());

        // A dropped upload leaves nothing; a leaked one (crash) is cleaned.
        let t = store.create_temp().unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        std::fs::write(store.tmp_dir().join("upload-crash"), b"x").unwrap();
        assert_eq!(store.clean_temp().unwrap(), 1);
    }
}
