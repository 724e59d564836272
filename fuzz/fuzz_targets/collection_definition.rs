//! Collection-definition parsing (`bakend_store::collections::definition::parse`): any JSON
//! text as a `collections/*.json` file. Parsing never panics; an accepted definition has a
//! valid name and unique field names, every default it accepted is a valid value for its field
//! (records created without the field store it), and parsing it again gives the same
//! definition. Run with `-dict=dicts/collection_definition.dict`.

#![no_main]

use bakend_store::collections::definition;
use bakend_store::records::validate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(parsed) = definition::parse(&raw) else {
        return;
    };
    let def = &parsed.def;
    assert_eq!(definition::name_of(&raw), Some(def.name.as_str()));
    assert!(
        def.name.starts_with(|c: char| c.is_ascii_lowercase()),
        "{:?}",
        def.name
    );
    for (i, f) in def.fields.iter().enumerate() {
        assert!(
            !def.fields[..i].iter().any(|o| o.name == f.name),
            "duplicate field {:?}",
            f.name
        );
        if let Some(d) = &f.default {
            assert!(
                validate::check_value(f, Some(d)).is_ok(),
                "default {d} of {:?} was accepted but is not a valid value",
                f.name
            );
        }
    }
    let again = definition::parse(&parsed.raw).map(|p| p.def);
    assert_eq!(again.as_ref().ok(), Some(def));
});
