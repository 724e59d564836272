//! Record validation (`bakend_store::records::validate`): random JSON bodies against random
//! collection definitions. The definition is built from the fuzz bytes and must pass
//! `definition::parse` first (as every definition the server loads does). Validation never
//! panics; every field is either stored or reported (on create), only given fields are touched
//! (on update), errors name their field; and a value validation accepted, read back as JSON,
//! is accepted again unchanged (what is stored is valid).

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bakend_fuzz::{json, pick_str};
use bakend_store::collections::definition::{self, FieldDef, FieldType};
use bakend_store::records::validate::{self, Mode};
use libfuzzer_sys::fuzz_target;
use rusqlite_value::to_json;
use serde_json::{Map, Value, json};

const NAMES: &[&str] = &[
    "title", "body", "count", "user_id", "tags", "when", "flag", "file",
];
const TYPES: &[&str] = &[
    "string", "text", "integer", "float", "boolean", "datetime", "json", "relation", "file",
];
const PATTERNS: &[&str] = &["^[a-z]+$", ".*", "^\\d{3}$", "(a|b)+", "\\p{L}+", "^$", "é"];

fn field(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let kind = *u.choose(TYPES)?;
    let mut f = json!({"name": pick_str(u, NAMES)?, "type": kind});
    if u.ratio(1, 3)? {
        f["required"] = json!(bool::arbitrary(u)?);
    }
    if u.ratio(1, 4)? {
        f["unique"] = json!(bool::arbitrary(u)?);
    }
    for bound in ["min", "max"] {
        if u.ratio(1, 3)? {
            f[bound] = if u.ratio(1, 2)? {
                json!(u.int_in_range(-5i64..=300)?)
            } else {
                json(u)?
            };
        }
    }
    if u.ratio(1, 4)? {
        f["regex"] = json!(pick_str(u, PATTERNS)?);
    }
    if kind == "relation" || u.ratio(1, 10)? {
        f["collection"] = json!(pick_str(u, &["users", "things"])?);
    }
    if u.ratio(1, 4)? {
        f["default"] = json(u)?;
    }
    Ok(f)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(0..=5) else { return };
    let mut fields = Vec::new();
    for _ in 0..n {
        let Ok(f) = field(&mut u) else { return };
        fields.push(f);
    }
    let raw = json!({"name": "things", "fields": fields});
    let Ok(parsed) = definition::parse(&raw) else {
        return;
    };
    let def = &parsed.def;
    let mut body = Map::new();
    let Ok(keys) = u.int_in_range(0..=6) else {
        return;
    };
    for _ in 0..keys {
        let (Ok(k), Ok(v)) = (pick_str(&mut u, NAMES), json(&mut u)) else {
            return;
        };
        body.insert(k, v);
    }
    let mode = if u.ratio(1, 2).unwrap_or(false) {
        Mode::Create
    } else {
        Mode::Update
    };
    let out = validate::validate(def, &body, mode);

    let mut seen = vec![false; def.fields.len()];
    for (i, _) in &out.values {
        assert!(!seen[*i], "field {i} stored twice");
        seen[*i] = true;
    }
    for (i, e) in &out.errors {
        assert!(
            !out.values.iter().any(|(j, _)| j == i),
            "field {i} both stored and refused"
        );
        assert_eq!(e.field, def.fields[*i].name);
        seen[*i] = true;
    }
    for (i, f) in def.fields.iter().enumerate() {
        let expected = mode == Mode::Create || body.contains_key(&f.name);
        assert_eq!(seen[i], expected, "field {} ({mode:?})", f.name);
    }
    for (i, sql) in &out.values {
        let f: &FieldDef = &def.fields[*i];
        let back = to_json(f.kind, sql);
        let again = validate::check_value(f, back.as_ref());
        assert_eq!(
            again.as_ref().ok(),
            Some(sql),
            "{} {:?} -> {back:?} -> {again:?}",
            f.name,
            sql
        );
    }
});

/// Reading a stored value back as the JSON a client would send again.
mod rusqlite_value {
    use super::*;
    use rusqlite::types::Value as Sql;

    pub fn to_json(kind: FieldType, v: &Sql) -> Option<Value> {
        Some(match (kind, v) {
            (_, Sql::Null) => return None,
            (FieldType::Boolean, Sql::Integer(n)) => Value::Bool(*n != 0),
            (FieldType::Json, Sql::Text(s)) => serde_json::from_str(s).ok()?,
            (_, Sql::Integer(n)) => Value::from(*n),
            (_, Sql::Real(x)) => Value::from(*x),
            (_, Sql::Text(s)) => Value::String(s.clone()),
            (_, Sql::Blob(_)) => return None,
        })
    }
}
