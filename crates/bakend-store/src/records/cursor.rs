//! Keyset pagination for the default order (newest first: `created_at DESC, id DESC`).
//!
//! A cursor names the last record of a page by its sort key and id, so the next page starts
//! right after it whatever was inserted or deleted meanwhile (the record itself may be gone).
//! To clients it is opaque: base64url of `v1:<created_at>:<id>`, the version leaving room for
//! cursors over other orders later.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where a page ends: the last record's `created_at` and `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: String,
    pub id: String,
}

const VERSION: &str = "v1";
/// Longer than any cursor this server makes (timestamps and ids are short).
const MAX_LEN: usize = 512;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}:{}:{}", self.created_at, self.id))
    }

    /// `None` for anything this server did not make.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() > MAX_LEN {
            return None;
        }
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let rest = raw.strip_prefix(VERSION)?.strip_prefix(':')?;
        // Timestamps contain ':' themselves; ids do not.
        let (created_at, id) = rest.rsplit_once(':')?;
        // NUL never appears in what this server makes (and PostgreSQL refuses it in a value).
        if created_at.is_empty() || id.is_empty() || raw.contains('\0') {
            return None;
        }
        Some(Cursor {
            created_at: created_at.to_string(),
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_make() {
        let c = Cursor {
            created_at: "2026-12-04T10:00:00.123Z".into(),
            id: "rec_0193a0b1c2d37e8f9a0b1c2d3e4f5a6b".into(),
        };
        let s = c.encode();
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&s), Some(c));
        for bad in [
            "",
            "!!",
            "djE6", // "v1:"
            &URL_SAFE_NO_PAD.encode("v2:2026-01-01T00:00:00Z:rec_1"),
            &URL_SAFE_NO_PAD.encode("v1:2026-01-01T00:00:00Z:"),
            &URL_SAFE_NO_PAD.encode("v1:rec_1"),
            &URL_SAFE_NO_PAD.encode("v1:2026-01-01T00:00:00Z:rec_\u{0}"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"A".repeat(600),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }
}
