//! `/api/storage/upload` and `/api/storage/<id>` (spec `storage.md` §2–4, with v1's gaps
//! fixed): uploads stream into a temporary file while they are counted, downloads stream from
//! the blob with Range, ETag, Last-Modified and Cache-Control, and no stored file can run script
//! in the API's origin.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bakend_auth::permissions::{Decision, Request, authorize};
use bakend_storage::upload_form::{self, FormError, ReceivedFile};
use bakend_storage::{FileMeta, NewFile, StorageError, Visibility, mime};
use bytes::BytesMut;
use futures_util::stream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::AsyncReadExt;

use crate::error::ApiError;
use crate::response::{json_response, no_content};
use crate::state::AppState;

/// Read-side chunk size for downloads.
const CHUNK: usize = 64 * 1024;

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
}

fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
}

fn invalid_multipart() -> ApiError {
    ApiError::bad_request("Invalid multipart form data")
}

/// `POST /api/storage/upload`: method, then auth, then the body.
pub async fn upload(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let ctx = crate::auth::resolve(state, headers).await;
    require(authorize(&ctx, Request::Upload))?;
    let Some(user_id) = ctx.user().map(|u| u.id.clone()) else {
        return Err(unauthorized());
    };
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(upload_form::boundary)
        .ok_or_else(invalid_multipart)?;
    let stream = Bursts {
        inner: body.into_data_stream(),
        taken: 0,
    };
    let limit = state.files.max_file_size();
    let form = upload_form::read_form(stream, boundary, limit, || state.files.begin_upload())
        .await
        .map_err(|e| match e {
            FormError::Invalid => invalid_multipart(),
            FormError::TextTooLong => ApiError::bad_request(e.to_string()),
            FormError::Storage(e) => e.into(),
        })?;
    let visibility = form.visibility;
    let Some(ReceivedFile {
        sink: temp,
        filename,
        content_type: client_type,
        head,
    }) = form.file
    else {
        return Err(ApiError::bad_request("Field 'file' is required"));
    };
    let visibility = match visibility.as_deref() {
        None => Visibility::Protected,
        Some(v) => Visibility::parse(v).ok_or_else(|| {
            ApiError::bad_request("visibility must be \"public\" or \"protected\"")
        })?,
    };
    if temp.size() == 0 {
        return Err(ApiError::bad_request("File cannot be empty"));
    }
    let new = NewFile {
        filename: if filename.is_empty() {
            "unnamed".into()
        } else {
            filename
        },
        mime_type: mime::choose(client_type.as_deref(), &head),
        visibility,
        user_id,
    };
    let meta = state.files.store(temp, new).await?;
    Ok(json_response(StatusCode::CREATED, &meta.to_json()))
}

/// Most body bytes handed to the multipart parser in one poll. The parser reads its input until
/// it would wait, so over a fast connection it would otherwise buffer megabytes per upload;
/// yielding after a burst keeps each upload's buffer near this size.
const BURST: usize = 256 * 1024;

struct Bursts<S> {
    inner: S,
    taken: usize,
}

impl<S, E> futures_util::Stream for Bursts<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = Result<bytes::Bytes, E>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.taken >= BURST {
            this.taken = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match futures_util::StreamExt::poll_next_unpin(&mut this.inner, cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.taken += b.len();
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Pending => {
                this.taken = 0;
                Poll::Pending
            }
            other => other,
        }
    }
}

/// `/api/storage/<id>`: the file is looked up first (unknown → 404 for everyone), then the
/// method, then access.
pub async fn file(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, ApiError> {
    let meta = state.files.get(id).await?.ok_or(StorageError::NotFound)?;
    match *method {
        Method::GET | Method::HEAD => {
            let ctx = crate::auth::resolve(state, headers).await;
            require(authorize(
                &ctx,
                Request::ReadFile {
                    owner: &meta.user_id,
                    public: meta.visibility == Visibility::Public,
                },
            ))?;
            download(state, method, headers, meta).await
        }
        Method::DELETE => {
            let ctx = crate::auth::resolve(state, headers).await;
            let decision = authorize(
                &ctx,
                Request::DeleteFile {
                    owner: &meta.user_id,
                },
            );
            let required_owner = require(decision)?.owned_by();
            state
                .files
                .delete(&meta.id, required_owner)
                .await?
                .ok_or(StorageError::NotFound)?;
            Ok(no_content())
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Turns a refusal into 401/403 — storage says `Unauthorized` / `Forbidden` (spec `storage.md`)
/// — and hands back any other decision.
fn require(d: Decision) -> Result<Decision, ApiError> {
    match d {
        Decision::Unauthenticated => Err(unauthorized()),
        Decision::Forbidden => Err(forbidden()),
        other => Ok(other),
    }
}

/// Files never change, so the id and size identify the content.
fn etag(meta: &FileMeta) -> String {
    format!("\"{}-{}\"", meta.id, meta.size)
}

fn etag_matches(header_value: &str, tag: &str) -> bool {
    header_value.split(',').map(str::trim).any(|t| {
        t == "*" || t == tag || t.strip_prefix("W/") == Some(tag) // weak comparison for GET
    })
}

/// RFC 5987 `attr-char`: everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `inline` or `attachment`, with an ASCII `filename` for old clients and the exact name as
/// RFC 5987 `filename*` (RFC 6266), so any Unicode name is a valid header.
pub fn content_disposition(filename: &str, attachment: bool) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        if attachment { "attachment" } else { "inline" },
        utf8_percent_encode(filename, ATTR_CHAR)
    )
}

/// A single `bytes=` range against `size`: `Ok(None)` for no (or an ignored) range,
/// `Err(())` when unsatisfiable.
#[allow(clippy::result_unit_err)]
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multi-part ranges are not served: the whole file is
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if a.is_empty() {
        let Some(n) = num(b) else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(());
        }
        return Ok(Some((size.saturating_sub(n), size - 1)));
    }
    let Some(start) = num(a) else { return Ok(None) };
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match num(b) {
            Some(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn last_modified(meta: &FileMeta) -> Option<String> {
    let t = chrono_parse(&meta.created_at)?;
    Some(httpdate::fmt_http_date(t))
}

fn chrono_parse(iso: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(iso)
        .ok()
        .map(SystemTime::from)
}

fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Headers every answer about a file's content carries (200, 206, 304, 416).
fn common_headers(resp: &mut Response, meta: &FileMeta) {
    set(resp, header::ETAG, &etag(meta));
    if let Some(lm) = last_modified(meta) {
        set(resp, header::LAST_MODIFIED, &lm);
    }
    let cache = match meta.visibility {
        Visibility::Public => "public, max-age=31536000, immutable",
        Visibility::Protected => "private, no-store",
    };
    set(resp, header::CACHE_CONTROL, cache);
    set(resp, header::ACCEPT_RANGES, "bytes");
    set(resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        resp,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
}

async fn download(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    meta: FileMeta,
) -> Result<Response, ApiError> {
    let tag = etag(&meta);
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| etag_matches(v, &tag)) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        common_headers(&mut resp, &meta);
        return Ok(resp);
    }
    let size = meta.size;
    // `If-Range` with another validator means: send the whole (changed) file.
    let range_allowed = header_str(header::IF_RANGE).is_none_or(|v| v.trim() == tag);
    let range = match header_str(header::RANGE).filter(|_| range_allowed) {
        Some(v) => match parse_range(v, size) {
            Ok(r) => r,
            Err(()) => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                common_headers(&mut resp, &meta);
                set(&mut resp, header::CONTENT_RANGE, &format!("bytes */{size}"));
                return Ok(resp);
            }
        },
        None => None,
    };
    let (start, len) = match range {
        Some((a, b)) => (a, b - a + 1),
        None => (0, size),
    };
    let head = method == Method::HEAD;
    let blob = state
        .files
        .open_range(&meta.id, start, if head { 0 } else { len })
        .await?
        .ok_or(StorageError::NotFound)?;
    if blob.len != size {
        return Err(ApiError::internal(format!(
            "blob {} has {} bytes, its row says {size}",
            meta.id, blob.len
        )));
    }
    let body = if head {
        Body::empty()
    } else {
        let reader = blob.reader.take(len);
        Body::from_stream(stream::try_unfold(reader, |mut r| async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = r.read_buf(&mut buf).await?;
            Ok::<_, std::io::Error>((n > 0).then(|| (buf.freeze(), r)))
        }))
    };
    let mut resp = Response::new(body);
    common_headers(&mut resp, &meta);
    set(&mut resp, header::CONTENT_TYPE, &meta.mime_type);
    if !resp.headers().contains_key(header::CONTENT_TYPE) {
        set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
    }
    set(
        &mut resp,
        header::CONTENT_DISPOSITION,
        &content_disposition(&meta.filename, mime::is_active_content(&meta.mime_type)),
    );
    set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
    if let Some((a, b)) = range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(
            &mut resp,
            header::CONTENT_RANGE,
            &format!("bytes {a}-{b}/{size}"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-1", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=a-b", 100), Ok(None));
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("a b.png", false),
            "inline; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"
        );
        assert_eq!(
            content_disposition("€uro ☃.txt", true),
            "attachment; filename=\"_uro _.txt\"; filename*=UTF-8''%E2%82%ACuro%20%E2%98%83.txt"
        );
        assert_eq!(
            content_disposition("q\"\\.txt", false),
            "inline; filename=\"q__.txt\"; filename*=UTF-8''q%22%5C.txt"
        );
    }
}
