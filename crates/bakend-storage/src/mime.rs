//! The stored MIME type: the client's, unless it is missing or generic, in which case the
//! content decides (magic bytes via the `infer` crate).

/// How many leading bytes are kept for sniffing.
pub const SNIFF_BYTES: usize = 8192;

const GENERIC: &str = "application/octet-stream";

/// `client`: the part's `Content-Type`, if any; `head`: the first bytes of the content.
pub fn choose(client: Option<&str>, head: &[u8]) -> String {
    let client = client.map(str::trim).filter(|s| !s.is_empty());
    match client {
        Some(c) if !c.eq_ignore_ascii_case(GENERIC) => c.to_string(),
        _ => infer::get(head)
            .map(|t| t.mime_type().to_string())
            .unwrap_or_else(|| GENERIC.to_string()),
    }
}

/// Types a browser could run script in when shown inline in the API's origin: these are served
/// as attachments (and every download carries a sandboxing Content-Security-Policy as well).
pub fn is_active_content(mime: &str) -> bool {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // Inline only what a browser renders passively.
    let passive = essence.starts_with("image/") && essence != "image/svg+xml"
        || essence.starts_with("audio/")
        || essence.starts_with("video/")
        || matches!(
            essence.as_str(),
            "text/plain" | "text/csv" | "application/pdf" | "application/json"
        );
    !passive
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn sniffs_only_when_missing_or_generic() {
        assert_eq!(choose(None, PNG), "image/png");
        assert_eq!(choose(Some(""), PNG), "image/png");
        assert_eq!(choose(Some("application/octet-stream"), PNG), "image/png");
        assert_eq!(choose(Some("text/plain"), PNG), "text/plain");
        assert_eq!(choose(None, b"hello"), "application/octet-stream");
    }

    #[test]
    fn active_types_are_attachments() {
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/javascript",
            "application/octet-stream",
            "whatever/thing",
        ] {
            assert!(is_active_content(t), "{t}");
        }
        for t in ["image/png", "text/plain", "video/mp4", "application/pdf"] {
            assert!(!is_active_content(t), "{t}");
        }
    }
}
