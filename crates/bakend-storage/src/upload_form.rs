//! Reading an upload's `multipart/form-data` body (spec `storage.md` §2): the first `file`
//! part that has a file name is streamed into a sink while it is counted (stopping at the first
//! byte over the limit), the first `visibility` part is read as text (at most
//! [`MAX_TEXT_PART`] bytes), and every other part is drained without being kept. The HTTP
//! handler supplies the body stream and a temporary file as the sink; the fuzz target
//! `multipart_upload` supplies bytes and a `Vec<u8>`.

use std::future::Future;
use std::io;

use bytes::Bytes;
use futures_util::Stream;

use crate::blob::TempUpload;
use crate::error::StorageError;
use crate::{limit_message, mime};

/// Largest text part (`visibility`) read into memory.
pub const MAX_TEXT_PART: usize = 1024;

/// Where a file part's bytes go.
pub trait UploadSink: Send {
    /// Bytes written so far.
    fn size(&self) -> u64;
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

impl UploadSink for TempUpload {
    fn size(&self) -> u64 {
        TempUpload::size(self)
    }

    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        TempUpload::write(self, bytes)
    }
}

impl UploadSink for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// The received file part.
pub struct ReceivedFile<F> {
    pub sink: F,
    /// As the client named it (may be empty).
    pub filename: String,
    /// The part's `Content-Type`, if it had one.
    pub content_type: Option<String>,
    /// The first [`mime::SNIFF_BYTES`] bytes, for content sniffing.
    pub head: Vec<u8>,
}

/// The parts an upload cares about.
pub struct UploadForm<F> {
    pub file: Option<ReceivedFile<F>>,
    /// The `visibility` part's text, unchecked.
    pub visibility: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("Invalid multipart form data")]
    Invalid,
    #[error("visibility must be \"public\" or \"protected\"")]
    TextTooLong,
    /// Over the size limit, or the sink failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The boundary of a `multipart/form-data` `Content-Type`.
pub fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// Reads the form; `begin` opens the sink when the file part starts. `limit` is the largest
/// file accepted, in bytes.
pub async fn read_form<S, E, F, B, Fut>(
    body: S,
    boundary: String,
    limit: u64,
    mut begin: B,
) -> Result<UploadForm<F>, FormError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    F: UploadSink,
    B: FnMut() -> Fut,
    Fut: Future<Output = Result<F, StorageError>>,
{
    let mut form = multer::Multipart::new(body, boundary);
    let mut out = UploadForm {
        file: None,
        visibility: None,
    };
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return Err(FormError::Invalid),
        };
        match field.name() {
            Some("file") if out.file.is_none() && field.file_name().is_some() => {
                out.file = Some(receive_file(field, limit, begin().await?).await?);
            }
            Some("visibility") if out.visibility.is_none() => {
                out.visibility = Some(read_text(field).await?);
            }
            // Other parts (and later `file` parts) are skipped: `next_field` drains them
            // without keeping them.
            _ => {}
        }
    }
    Ok(out)
}

/// Streams one file part into `sink`, counting; stops at the first byte over the limit.
async fn receive_file<F: UploadSink>(
    mut field: multer::Field<'static>,
    limit: u64,
    mut sink: F,
) -> Result<ReceivedFile<F>, FormError> {
    let filename = field.file_name().unwrap_or("").to_string();
    let content_type = field.content_type().map(|m| m.to_string());
    let mut head = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|_| FormError::Invalid)? {
        if sink.size() + chunk.len() as u64 > limit {
            return Err(StorageError::TooLarge(limit_message(limit)).into());
        }
        if head.len() < mime::SNIFF_BYTES {
            let take = (mime::SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        sink.write(&chunk).await.map_err(StorageError::from)?;
    }
    Ok(ReceivedFile {
        sink,
        filename,
        content_type,
        head,
    })
}

async fn read_text(mut field: multer::Field<'static>) -> Result<String, FormError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|_| FormError::Invalid)? {
        if buf.len() + chunk.len() > MAX_TEXT_PART {
            return Err(FormError::TextTooLong);
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| FormError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        let chunks: Vec<Result<Bytes, io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures_util::stream::iter(chunks)
    }

    async fn read(parts: &[&[u8]], limit: u64) -> Result<UploadForm<Vec<u8>>, FormError> {
        read_form(body(parts), "XX".into(), limit, || async { Ok(Vec::new()) }).await
    }

    const FORM: &[u8] = b"--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nskipped\r\n\
--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello world\r\n\
--XX\r\nContent-Disposition: form-data; name=\"visibility\"\r\n\r\npublic\r\n--XX--\r\n";

    #[tokio::test]
    async fn reads_the_file_and_visibility_across_any_chunking() {
        for split in 1..FORM.len() {
            let (a, b) = FORM.split_at(split);
            let form = read(&[a, b], 100).await.unwrap();
            let file = form.file.unwrap();
            assert_eq!(file.sink, b"hello world");
            assert_eq!(file.head, b"hello world");
            assert_eq!(file.filename, "a.txt");
            assert_eq!(file.content_type.as_deref(), Some("text/plain"));
            assert_eq!(form.visibility.as_deref(), Some("public"));
        }
    }

    #[tokio::test]
    async fn stops_at_the_limit_and_on_broken_bodies() {
        assert!(matches!(
            read(&[FORM], 5).await,
            Err(FormError::Storage(StorageError::TooLarge(_)))
        ));
        assert!(matches!(
            read(&[&FORM[..60]], 100).await,
            Err(FormError::Invalid)
        ));
        assert_eq!(
            boundary("multipart/form-data; boundary=XX").as_deref(),
            Some("XX")
        );
        assert_eq!(boundary("text/plain"), None);
    }
}
