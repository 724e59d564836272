//! Regression tests for what the fuzz targets in `fuzz/` found (one test per finding).

use bakend_store::collections::definition;
use bakend_store::records::validate::{self, Mode};
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

/// `record_validation`: a float sent as its shortest exact text (`1.4238303025644269e-304`)
/// was parsed one unit in the last place off (serde_json's default fast float parsing), so a
/// `float` or `json` field stored a different number than the client sent and read back a
/// different text. Fixed by serde_json's `float_roundtrip` feature.
#[test]
fn floats_are_stored_exactly_as_sent() {
    let def = definition::parse(&json!({"name": "t", "fields": [
        {"name": "score", "type": "float"},
        {"name": "meta", "type": "json"}
    ]}))
    .unwrap()
    .def;
    for text in [
        "1.4238303025644269e-304",
        "2.2250738585072014e-308",
        "0.1",
        "1e300",
    ] {
        let body: Value =
            serde_json::from_str(&format!(r#"{{"score": {text}, "meta": [{text}]}}"#)).unwrap();
        let out = validate::validate(&def, body.as_object().unwrap(), Mode::Create);
        assert!(out.is_ok(), "{:?}", out.errors);
        let expected: f64 = text.parse().unwrap();
        assert_eq!(out.values[0].1, Sql::Real(expected), "{text}");
        let Sql::Text(stored) = &out.values[1].1 else {
            panic!("json stored as {:?}", out.values[1].1)
        };
        let back: Value = serde_json::from_str(stored).unwrap();
        assert_eq!(
            back[0].as_f64(),
            Some(expected),
            "{text} stored as {stored}"
        );
    }
}
