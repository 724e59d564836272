//! Multipart upload handling (`bakend_storage::upload_form`, the parser behind
//! `POST /api/storage/upload`). The body is either raw bytes or a form assembled from parts
//! with fuzzed names, headers and contents, and arrives split into fuzzed chunks. Reading never
//! panics; an accepted file is never larger than the limit; its sniffing head is its first
//! bytes; a visibility part is never longer than its cap; and a well-formed form built here
//! yields exactly the file part it holds.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bakend_storage::mime::SNIFF_BYTES;
use bakend_storage::upload_form::{self, FormError, MAX_TEXT_PART, UploadForm};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "XyZ";

#[derive(Arbitrary, Debug)]
struct Part {
    name: Name,
    filename: Option<String>,
    content_type: Option<String>,
    extra_header: Option<String>,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Name {
    File,
    Visibility,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
    Form {
        parts: Vec<Part>,
        epilogue: Vec<u8>,
        closed: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    body: Body,
    /// Chunk lengths the body arrives in (cycled; 0 is read as 1).
    chunks: Vec<u8>,
    limit: u16,
}

fn form_bytes(parts: &[Part], epilogue: &[u8], closed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let name = match &p.name {
            Name::File => "file",
            Name::Visibility => "visibility",
            Name::Other(n) => n.as_str(),
        };
        let mut disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = &p.filename {
            disposition.push_str(&format!("; filename=\"{f}\""));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = &p.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        if let Some(h) = &p.extra_header {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&p.data);
        out.extend_from_slice(b"\r\n");
    }
    if closed {
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    out.extend_from_slice(epilogue);
    out
}

/// Whether `parts` is a form whose first file part this test can predict: plain names and
/// values without quotes, line breaks or the boundary.
fn predictable(parts: &[Part]) -> Option<&Part> {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
    };
    let clean = parts.iter().all(|p| {
        p.extra_header.is_none()
            && p.content_type.is_none()
            && p.filename
                .as_deref()
                .is_none_or(|f| !f.is_empty() && plain(f))
            && matches!(&p.name, Name::File | Name::Visibility)
            && !p
                .data
                .windows(BOUNDARY.len() + 2)
                .any(|w| w == format!("--{BOUNDARY}").as_bytes())
            && !p.data.contains(&b'\r')
            && !p.data.contains(&b'\n')
    });
    let file = parts
        .iter()
        .find(|p| matches!(p.name, Name::File) && p.filename.is_some())?;
    clean.then_some(file)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("no runtime: {e}"))
    })
}

fuzz_target!(|input: Input| {
    let (content_type, bytes) = match &input.body {
        Body::Raw {
            content_type,
            bytes,
        } => (content_type.clone(), bytes.clone()),
        Body::Form {
            parts,
            epilogue,
            closed,
        } => (
            format!("multipart/form-data; boundary={BOUNDARY}"),
            form_bytes(parts, epilogue, *closed),
        ),
    };
    let Some(boundary) = upload_form::boundary(&content_type) else {
        return;
    };
    let mut chunks = Vec::new();
    let mut rest = Bytes::from(bytes);
    let mut sizes = input.chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |n| usize::from(*n).max(1));
        chunks.push(Ok::<_, std::io::Error>(rest.split_to(n.min(rest.len()))));
    }
    let limit = u64::from(input.limit);
    let body = futures_util::stream::iter(chunks);
    let result: Result<UploadForm<Vec<u8>>, FormError> =
        runtime().block_on(upload_form::read_form(body, boundary, limit, || async {
            Ok(Vec::new())
        }));
    if let Ok(form) = &result {
        if let Some(file) = &form.file {
            assert!(file.sink.len() as u64 <= limit);
            let head = file.sink.len().min(SNIFF_BYTES);
            assert_eq!(file.head, file.sink[..head]);
        }
        if let Some(v) = &form.visibility {
            assert!(v.len() <= MAX_TEXT_PART);
        }
    }
    if let Body::Form {
        parts,
        closed: true,
        ..
    } = &input.body
        && let Some(expected) = predictable(parts)
        && expected.data.len() as u64 <= limit
        && expected.data.len() < 512
        && parts.iter().all(|p| {
            !matches!(p.name, Name::Visibility)
                || (p.data.len() <= MAX_TEXT_PART && std::str::from_utf8(&p.data).is_ok())
        })
    {
        let form = result.unwrap_or_else(|e| panic!("a well-formed form was refused: {e}"));
        let file = form
            .file
            .unwrap_or_else(|| panic!("the file part was lost"));
        assert_eq!(file.sink, expected.data);
        assert_eq!(Some(file.filename.as_str()), expected.filename.as_deref());
    }
});
