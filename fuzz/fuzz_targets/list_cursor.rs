//! The list cursor (`?after=`, `bakend_store::Cursor`), read from any client's query string.
//! Decoding never panics; an accepted cursor names a non-empty timestamp and id, and encodes
//! back to a cursor that decodes to the same.

#![no_main]

use bakend_store::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Some(c) = Cursor::decode(s) else {
        return;
    };
    assert!(!c.created_at.is_empty() && !c.id.is_empty() && !c.id.contains(':'));
    assert_eq!(Cursor::decode(&c.encode()), Some(c));
});
