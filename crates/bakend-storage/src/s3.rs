//! Blobs in an S3-compatible bucket (`storage.s3`, docs/storage.md): object `files/<id>`.
//!
//! Uploads are spooled to the local temporary folder exactly as with the local store (limits,
//! MIME sniffing and counting happen there); [`BlobStore::put`] then sends the finished file —
//! one PUT up to [`MULTIPART_THRESHOLD`], a multipart upload of [`part_size`] parts above it —
//! and returns only once the object is complete, so the row still commits after its blob.
//!
//! The trait is synchronous (its callers are on blocking threads); each method runs its
//! object_store future with [`Handle::block_on`] on the runtime the store was connected from.

use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bakend_core::config::S3Settings;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Handle;

use crate::blob::{
    BlobInfo, BlobReader, BlobStore, Spooled, TempUpload, clean_temp_in, create_temp_in, valid_id,
};

/// The "folder" of the bucket blobs live in.
pub const PREFIX: &str = "files";
/// S3's smallest part (except the last): files up to this size go up in one PUT.
pub const MULTIPART_THRESHOLD: u64 = 5 * 1024 * 1024;
/// S3 allows 10,000 parts; a margin below it.
const MAX_PARTS: u64 = 9_000;
/// Parts of one upload in flight at once (each holds one part in memory).
const UPLOAD_CONCURRENCY: usize = 4;
/// Read size from the spooled file.
const READ_CHUNK: usize = 1024 * 1024;

/// The object key of blob `id`: `files/<id>`; `None` for an id that is not a plain name.
pub fn object_key(id: &str) -> Option<Key> {
    valid_id(id).then(|| Key::from(format!("{PREFIX}/{id}")))
}

/// The blob id of an object key, if it is one of ours (`files/<id>`, nothing nested).
pub fn id_of_key(key: &Key) -> Option<String> {
    let mut parts = key.parts();
    let prefix = parts.next()?;
    let id = parts.next()?;
    (prefix.as_ref() == PREFIX && parts.next().is_none() && valid_id(id.as_ref()))
        .then(|| id.as_ref().to_string())
}

/// The part size of a multipart upload of `size` bytes: 5 MiB, or more (whole MiB) when the
/// file would otherwise need more than 9,000 parts.
pub fn part_size(size: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.max(MULTIPART_THRESHOLD) as usize
}

/// Why the bucket could not be used at start. The message is one line and never holds the
/// secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3Error(String);

/// Blobs as objects `files/<id>` of one bucket; temporary upload files in `<root>/tmp/`.
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    runtime: Handle,
    tmp: PathBuf,
}

impl S3BlobStore {
    /// Builds the client, creates the local temporary folder and checks that the bucket can be
    /// listed (it must exist: Bakend does not create buckets). Runs the store's requests on the
    /// current runtime from then on (it must be a multi-thread runtime, or be driven by
    /// another thread while a blocking method runs).
    pub async fn connect(settings: &S3Settings, root: &Path) -> Result<S3BlobStore, S3Error> {
        let what = settings.describe();
        let store = build(settings).map_err(|e| S3Error(format!("Cannot use {what}: {e}")))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| {
            S3Error(format!(
                "Cannot open the storage folder {} (temporary uploads): {e}",
                tmp.display()
            ))
        })?;
        // One page of the listing answers "does the bucket exist, may we read it".
        let first = store.list(Some(&Key::from(PREFIX))).next().await;
        if let Some(Err(e)) = first {
            return Err(S3Error(start_error(&what, &e)));
        }
        Ok(S3BlobStore {
            store: Arc::new(store),
            runtime: Handle::current(),
            tmp,
        })
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn get(&self, id: &str, range: Option<GetRange>) -> io::Result<Option<BlobReader>> {
        let Some(key) = object_key(id) else {
            return Ok(None);
        };
        self.block_on(async {
            let options = GetOptions {
                range,
                ..Default::default()
            };
            match self.store.get_opts(&key, options).await {
                Ok(got) => Ok(Some(BlobReader {
                    len: got.meta.size,
                    reader: Box::pin(StreamRead::new(got.into_stream())),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io::Error::from(e)),
            }
        })
    }

    async fn put_multipart(&self, key: &Key, mut file: std::fs::File, size: u64) -> io::Result<()> {
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size(size));
        let mut buf = vec![0; READ_CHUNK];
        let mut sent = 0u64;
        let written: io::Result<()> = async {
            loop {
                writer.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
                // A blocking read: this future runs on the caller's blocking thread.
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                writer.write(&buf[..n]);
            }
            if sent != size {
                return Err(io::Error::other(format!(
                    "the upload's temporary file has {sent} bytes, expected {size}"
                )));
            }
            Ok(())
        }
        .await;
        match written {
            Ok(()) => writer.finish().await.map(drop).map_err(io::Error::from),
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!("Could not abort the multipart upload of {key}: {abort}");
                }
                Err(e)
            }
        }
    }
}

/// The client: path-style requests and plain HTTP allowed for an `http://` endpoint; short
/// retries (a start against a wrong endpoint fails in about a second, not minutes); no overall
/// request timeout (a download streams for as long as its client reads).
fn build(s: &S3Settings) -> object_store::Result<AmazonS3> {
    let mut builder = match (&s.access_key_id, &s.secret_access_key) {
        (Some(id), Some(secret)) => AmazonS3Builder::new()
            .with_access_key_id(id)
            .with_secret_access_key(secret),
        // The AWS_* environment, web identity or instance metadata.
        _ => AmazonS3Builder::from_env(),
    };
    builder = builder
        .with_bucket_name(&s.bucket)
        .with_region(&s.region)
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_connect_timeout(Duration::from_secs(5)),
        );
    if let Some(endpoint) = &s.endpoint {
        builder = builder.with_endpoint(endpoint);
        if endpoint.starts_with("http://") {
            builder = builder
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
    }
    builder.build()
}

/// One line saying why the bucket cannot be used. (object_store reports a failed listing as
/// a generic error: S3's error code in its text tells a missing bucket from refused access.)
fn start_error(what: &str, e: &object_store::Error) -> String {
    use object_store::Error as E;
    let detail = one_line(&e.to_string());
    let says = |codes: &[&str]| codes.iter().any(|c| detail.contains(c));
    if matches!(e, E::NotFound { .. }) || says(&["<Code>NoSuchBucket</Code>"]) {
        format!("{what} does not exist: create it first (Bakend does not create buckets)")
    } else if matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. })
        || says(&[
            "<Code>AccessDenied</Code>",
            "<Code>InvalidAccessKeyId</Code>",
            "<Code>SignatureDoesNotMatch</Code>",
            "403 Forbidden",
        ])
    {
        format!(
            "{what} refused access: check storage.s3.accessKeyId and storage.s3.secretAccessKey ({detail})"
        )
    } else {
        format!("Cannot reach {what}: {detail}")
    }
}

/// An error's text on one line, and not too long (S3 puts whole XML documents in them).
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

impl BlobStore for S3BlobStore {
    fn create_temp(&self) -> io::Result<TempUpload> {
        create_temp_in(&self.tmp)
    }

    fn put(&self, id: &str, temp: Spooled) -> io::Result<()> {
        let key = object_key(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid blob id {id:?}"),
            )
        })?;
        let size = temp.size();
        let mut file = std::fs::File::open(temp.path())?;
        if size <= MULTIPART_THRESHOLD {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)?;
            self.block_on(self.store.put(&key, PutPayload::from(bytes)))?;
        } else {
            self.block_on(self.put_multipart(&key, file, size))?;
        }
        // `temp` (the local file) goes now that the object is complete.
        drop(temp);
        Ok(())
    }

    fn open(&self, id: &str, offset: u64) -> io::Result<Option<BlobReader>> {
        // No range for the whole object: `bytes=0-` is refused on an empty one.
        self.get(id, (offset > 0).then_some(GetRange::Offset(offset)))
    }

    fn open_range(&self, id: &str, offset: u64, len: u64) -> io::Result<Option<BlobReader>> {
        if len == 0 {
            let Some(key) = object_key(id) else {
                return Ok(None);
            };
            return match self.block_on(self.store.head(&key)) {
                Ok(meta) => Ok(Some(BlobReader {
                    len: meta.size,
                    reader: Box::pin(tokio::io::empty()),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        self.get(
            id,
            Some(GetRange::Bounded(offset..offset.saturating_add(len))),
        )
    }

    fn delete(&self, id: &str) -> io::Result<bool> {
        let Some(key) = object_key(id) else {
            return Ok(false);
        };
        self.block_on(async {
            // S3 deletes without saying whether there was anything: ask first.
            match self.store.head(&key).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            self.store.delete(&key).await?;
            Ok(true)
        })
    }

    fn list(&self) -> io::Result<Vec<BlobInfo>> {
        self.block_on(async {
            let mut out = Vec::new();
            let mut objects = self.store.list(Some(&Key::from(PREFIX)));
            while let Some(meta) = objects.next().await {
                let meta = meta?;
                if let Some(id) = id_of_key(&meta.location) {
                    out.push(BlobInfo {
                        id,
                        len: meta.size,
                        modified: SystemTime::from(meta.last_modified),
                    });
                }
            }
            Ok(out)
        })
    }

    fn clean_temp(&self) -> io::Result<usize> {
        clean_temp_in(&self.tmp)
    }
}

/// An object's byte stream as an [`AsyncRead`]. The stream sits in a `Mutex` only to make the
/// reader `Sync` (as [`BlobReader`] asks); it is never locked, `poll_read` has it exclusively.
struct StreamRead {
    inner: Mutex<StreamState>,
}

struct StreamState {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl StreamRead {
    fn new(stream: BoxStream<'static, object_store::Result<Bytes>>) -> Self {
        StreamRead {
            inner: Mutex::new(StreamState {
                stream,
                chunk: Bytes::new(),
            }),
        }
    }
}

impl AsyncRead for StreamRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let state = self
            .get_mut()
            .inner
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while state.chunk.is_empty() {
            match state.stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Some(Ok(bytes))) => state.chunk = bytes,
            }
        }
        let n = state.chunk.len().min(buf.remaining());
        buf.put_slice(&state.chunk.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn keys_and_ids() {
        assert_eq!(
            object_key("fil_0a5b-11").unwrap().as_ref(),
            "files/fil_0a5b-11"
        );
        for bad in ["", "../x", "a/b", "fil 1", "x.y"] {
            assert!(object_key(bad).is_none(), "{bad}");
        }
        assert_eq!(
            id_of_key(&Key::from("files/fil_1")).as_deref(),
            Some("fil_1")
        );
        for other in ["files", "files/a/b", "other/fil_1", "files/a.b", "fil_1"] {
            assert_eq!(id_of_key(&Key::from(other)), None, "{other}");
        }
    }

    #[test]
    fn part_sizes() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size(6 * MIB), 5 * MIB as usize);
        assert_eq!(part_size(9_000 * 5 * MIB), 5 * MIB as usize);
        // Past 9,000 parts of 5 MiB: bigger parts, whole MiB, never more than 9,000 of them.
        for size in [9_000 * 5 * MIB + 1, 100 * 1024 * MIB, 5 * 1024 * 1024 * MIB] {
            let part = part_size(size) as u64;
            assert_eq!(part % MIB, 0);
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size}");
        }
    }

    #[test]
    fn errors_are_one_short_line() {
        let long = format!("a\nb  c {}", "x".repeat(1000));
        let line = one_line(&long);
        assert!(line.starts_with("a b c x"));
        assert!(!line.contains('\n'));
        assert!(line.chars().count() <= 301);
    }

    #[test]
    fn start_errors_say_what_is_wrong() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let what = "S3 bucket \"b\" at http://h:1";
        let missing = generic("404 Not Found: <?xml?>\n<Error><Code>NoSuchBucket</Code></Error>");
        assert_eq!(
            start_error(what, &missing),
            "S3 bucket \"b\" at http://h:1 does not exist: create it first (Bakend does not create buckets)"
        );
        let denied = generic("403 Forbidden: <Error><Code>InvalidAccessKeyId</Code></Error>");
        assert!(
            start_error(what, &denied).contains("refused access: check storage.s3.accessKeyId")
        );
        let down = generic("error sending request: Connection refused");
        assert!(
            start_error(what, &down)
                .starts_with("Cannot reach S3 bucket \"b\" at http://h:1: Generic S3 error")
        );
    }

    #[tokio::test]
    async fn a_stream_reads_across_chunks() {
        let chunks: Vec<object_store::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"world")),
        ];
        let mut r = StreamRead::new(futures_util::stream::iter(chunks).boxed());
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
