//! Helpers shared by the fuzz targets: JSON values built from fuzz bytes with `arbitrary`, so
//! targets that need well-formed JSON (record bodies, definitions) spend their time past the
//! JSON parser.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Number, Value};

/// Deepest nesting a generated value gets (the record code never recurses on JSON, so depth
/// adds nothing but time).
const MAX_DEPTH: usize = 4;

/// A short string: usually one from `known`, sometimes anything.
pub fn pick_str(u: &mut Unstructured<'_>, known: &[&str]) -> arbitrary::Result<String> {
    if !known.is_empty() && u.ratio(7, 8)? {
        Ok((*u.choose(known)?).to_string())
    } else {
        String::arbitrary(u)
    }
}

/// Strings that exercise the record checks: lengths around limits, emoji and combining marks,
/// datetimes in and out of range, and the empty string.
const INTERESTING: &[&str] = &[
    "",
    "a",
    "hello",
    "😀😀😀",
    "e\u{301}",
    "2024-02-29T12:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01",
    "2024-01-01T00:00:00.123456789+14:00",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "fil_123",
    "usr_1",
    "abc123",
];

pub fn json(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    json_at(u, 0)
}

fn json_at(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let kinds = if depth >= MAX_DEPTH { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => {
            if u.ratio(1, 2)? {
                Value::from(*u.choose(&[0i64, 1, -1, 5, 200, i64::MAX, i64::MIN])?)
            } else {
                Value::from(i64::arbitrary(u)?)
            }
        }
        3 => {
            let f = f64::arbitrary(u)?;
            Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        4 => Value::String(pick_str(u, INTERESTING)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(json_at(u, depth + 1)?);
            }
            Value::Array(a)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut o = Map::new();
            for _ in 0..n {
                let k = pick_str(u, &["a", "b", "title", "name"])?;
                o.insert(k, json_at(u, depth + 1)?);
            }
            Value::Object(o)
        }
    })
}
