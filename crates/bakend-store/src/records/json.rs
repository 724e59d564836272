//! Rows straight to response bytes: the list and get paths write each column of a SQLite row
//! into the output buffer as JSON, with no `serde_json::Value` per record and no copy of the
//! row's text. The result is byte for byte what [`super::row::record_json`] serialized gives
//! (tested below for every field type), so the wire shape has one definition of truth: `row.rs`.

use crate::sql::{Value as Sql, ValueRef};
use serde_json::Value;

use super::row::{float_json, to_json};
use crate::collections::definition::FieldType;
use crate::collections::registry::Collection;

/// The keys of a collection's records as JSON fragments, built once per collection:
/// `{"id":`, `,"createdAt":`, …, `,"<field>":`.
#[derive(Debug)]
pub struct RecordKeys {
    fragments: Vec<Box<[u8]>>,
    kinds: Vec<Option<FieldType>>,
}

impl RecordKeys {
    pub fn new(system: &[&str], fields: &[(String, FieldType)]) -> RecordKeys {
        let mut fragments = Vec::with_capacity(system.len() + fields.len());
        let mut kinds = Vec::with_capacity(system.len() + fields.len());
        let names = system
            .iter()
            .map(|s| (*s, None))
            .chain(fields.iter().map(|(n, k)| (n.as_str(), Some(*k))));
        for (i, (name, kind)) in names.enumerate() {
            let mut f = Vec::with_capacity(name.len() + 4);
            f.push(if i == 0 { b'{' } else { b',' });
            // Serializing a `&str` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut f, name);
            f.push(b':');
            fragments.push(f.into_boxed_slice());
            kinds.push(kind);
        }
        RecordKeys { fragments, kinds }
    }
}

/// Appends the record in `row` (selected with the collection's column list) to `out`.
pub fn write_record(
    c: &Collection,
    row: crate::sql::Row<'_>,
    out: &mut Vec<u8>,
) -> crate::sql::Result<()> {
    let keys = &c.json_keys;
    for (i, (key, kind)) in keys.fragments.iter().zip(&keys.kinds).enumerate() {
        out.extend_from_slice(key);
        let v = row.get_ref(i)?;
        match kind {
            // System columns are text; anything else there reads as null, as in `record_json`.
            None => match v {
                ValueRef::Text(t) => write_str(out, t),
                _ => out.extend_from_slice(b"null"),
            },
            Some(kind) => write_value(*kind, v, out),
        }
    }
    out.push(b'}');
    Ok(())
}

/// One stored value as JSON for a field of type `kind`: [`to_json`] without the `Value`.
fn write_value(kind: FieldType, v: ValueRef<'_>, out: &mut Vec<u8>) {
    match (kind, v) {
        (_, ValueRef::Null) | (_, ValueRef::Blob(_)) => out.extend_from_slice(b"null"),
        (FieldType::Boolean, ValueRef::Integer(i)) => {
            out.extend_from_slice(if i != 0 { b"true" } else { b"false" })
        }
        // Stored JSON is re-serialized, as `to_json` does: text written by other means (a
        // function's `ctx.db`) comes out in the same normal form, or as a string if invalid.
        (FieldType::Json, ValueRef::Text(t)) => {
            let stored = Sql::Text(String::from_utf8_lossy(t).into_owned());
            write_json(out, &to_json(kind, &stored))
        }
        (_, ValueRef::Integer(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes())
        }
        (_, ValueRef::Real(f)) => write_json(out, &float_json(f)),
        (_, ValueRef::Text(t)) => write_str(out, t),
    }
}

fn write_json(out: &mut Vec<u8>, v: &Value) {
    // Serializing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Text as a JSON string. SQLite text is UTF-8 unless something wrote invalid bytes through
/// a blob cast; those are replaced (`record_json` would have failed to read the row at all).
fn write_str(out: &mut Vec<u8>, t: &[u8]) {
    // Most stored text (ids, timestamps, typical titles) is printable ASCII with no quote or
    // backslash: valid UTF-8 that JSON takes as it is. One branch-free pass over the bytes
    // (it vectorizes) proves that, and the text is copied whole.
    if is_plain_ascii(t) {
        out.reserve(t.len() + 2);
        out.push(b'"');
        out.extend_from_slice(t);
        out.push(b'"');
        return;
    }
    let _ = match std::str::from_utf8(t) {
        Ok(s) => serde_json::to_writer(&mut *out, s),
        Err(_) => serde_json::to_writer(&mut *out, String::from_utf8_lossy(t).as_ref()),
    };
}

/// Printable ASCII other than the quote and the backslash: bytes a JSON string holds as they
/// are. Eight bytes at a time (SWAR): each test below sets a word's high bit in every byte it
/// finds, and "any" is exact for all of them.
fn is_plain_ascii(t: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let special = |x: u64| {
        (x & HIGH)
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
    };
    let mut words = t.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        if special(u64::from_le_bytes(b)) != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use crate::records::row::{read_columns, record_json};
    use crate::sql::Conn;
    use serde_json::json;

    fn collection() -> Collection {
        let def = parse(&json!({
            "name": "every",
            "fields": [
                {"name": "s", "type": "string"},
                {"name": "t", "type": "text"},
                {"name": "n", "type": "float"},
                {"name": "i", "type": "integer"},
                {"name": "b", "type": "boolean"},
                {"name": "d", "type": "datetime"},
                {"name": "j", "type": "json"},
                {"name": "r", "type": "relation", "collection": "every"},
                {"name": "f", "type": "file"},
                {"name": "user_id", "type": "string"},
                {"name": "last_one", "type": "string"}
            ]
        }))
        .unwrap()
        .def;
        Collection::new(def, json!({}), "x".into(), "x".into())
    }

    /// Each row: the stored values in table order (id, created_at, updated_at, then fields).
    fn rows() -> Vec<Vec<Sql>> {
        let t = |s: &str| Sql::Text(s.into());
        let base = |id: &str| {
            vec![
                t(id),
                t("2026-12-04T10:00:00.123Z"),
                t("2026-12-04T10:00:01.000Z"),
            ]
        };
        vec![
            // All null.
            [base("rec_null"), vec![Sql::Null; 11]].concat(),
            // Typical values.
            [
                base("rec_typical"),
                vec![
                    t("hello"),
                    t("line\nbreak\t\"quoted\" \\ back"),
                    Sql::Real(1.5),
                    Sql::Integer(42),
                    Sql::Integer(1),
                    t("2026-01-02T03:04:05.678Z"),
                    t(r#"{"a":[1,2.5,"x"],"b":null,"c":{"d":true}}"#),
                    t("rec_other"),
                    t("fil_1"),
                    t("usr_1"),
                    t("value"),
                ],
            ]
            .concat(),
            // Unicode, big and odd numbers, false, JSON written by hand, values of the wrong type.
            [
                base("rec_edge"),
                vec![
                    t("😀 e\u{301} 中文 \u{200b} \u{1F}"),
                    t("\u{7f}\u{2028}\u{2029}"),
                    Sql::Real(5.0),
                    Sql::Integer(i64::MAX),
                    Sql::Integer(0),
                    Sql::Integer(1_700_000_000),
                    t(r#" { "spaced" : [ 1 , 2 ] , "é" : "\u00e9" } "#),
                    Sql::Integer(7),
                    Sql::Blob(vec![1, 2, 3]),
                    Sql::Real(9_007_199_254_740_993.0),
                    Sql::Real(-0.1),
                ],
            ]
            .concat(),
            [
                base("rec_more"),
                vec![
                    Sql::Real(1e300),
                    Sql::Real(-2.0),
                    Sql::Real(0.1 + 0.2),
                    Sql::Integer(i64::MIN),
                    Sql::Integer(-3),
                    Sql::Real(1.25),
                    t("not json {"),
                    t(""),
                    t("fil_\"x\""),
                    Sql::Null,
                    t("</script>"),
                ],
            ]
            .concat(),
        ]
    }

    #[test]
    fn bytes_equal_the_serialized_record_for_every_field_type() {
        let c = collection();
        let conn = Conn::open_in_memory().unwrap();
        let cols: Vec<String> = (0..c.layout.width()).map(|i| format!("c{i}")).collect();
        conn.execute(&format!("CREATE TABLE t ({})", cols.join(", ")), ())
            .unwrap();
        let marks = vec!["?"; cols.len()].join(", ");
        for r in rows() {
            conn.execute(
                &format!("INSERT INTO t VALUES ({marks})"),
                crate::sql::params_from_iter(r.iter()),
            )
            .unwrap();
        }
        let mut stmt = conn.prepare("SELECT * FROM t").unwrap();
        let mut rows = stmt.query(()).unwrap();
        let mut seen = 0;
        while let Some(row) = rows.next().unwrap() {
            let old =
                serde_json::to_vec(&record_json(&c, &read_columns(&c, row).unwrap())).unwrap();
            let mut new = Vec::new();
            write_record(&c, row, &mut new).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "row {seen}"
            );
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn text_is_written_as_serde_json_writes_it_whatever_the_bytes() {
        // Every single byte, and each inside plain text, through the fast path or not.
        let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        inputs.extend((0..=255u8).map(|b| [b"ab".as_slice(), &[b], b"cd"].concat()));
        // And at every position of a few words (the fast path reads eight bytes at a time).
        for at in 0..20 {
            for b in [0u8, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xc3, 0xff] {
                let mut t = b"0123456789abcdefghij".to_vec();
                t[at] = b;
                inputs.push(t);
            }
        }
        inputs.extend(
            [
                "",
                "plain title 42",
                "Straße",
                "é\u{301}",
                "\u{7f}",
                "tab\t",
                "\"q\"",
                "a\\b",
            ]
            .map(|s| s.as_bytes().to_vec()),
        );
        for t in inputs {
            let mut out = Vec::new();
            write_str(&mut out, &t);
            let want = serde_json::to_vec(String::from_utf8_lossy(&t).as_ref()).unwrap();
            assert_eq!(out, want, "{t:?}");
        }
    }

    /// The same typed rows, stored in each store's own column types (PostgreSQL's BIGINT,
    /// DOUBLE PRECISION and TEXT), come out as the same bytes — and as `record_json` says.
    #[test]
    fn bytes_are_the_same_from_either_store() {
        let c = collection();
        let fits = |kind: FieldType, v: &Sql| {
            use crate::collections::definition::Storage;
            matches!(
                (kind.storage(), v),
                (_, Sql::Null)
                    | (Storage::Integer, Sql::Integer(_))
                    | (Storage::Real, Sql::Real(_))
                    | (Storage::Text, Sql::Text(_))
            )
        };
        let mut outputs = Vec::new();
        for t in crate::collections::testing::conns("bytes_are_the_same_from_either_store") {
            let conn = &t.conn;
            crate::collections::schema::create(conn, &c.def).unwrap();
            let marks: Vec<String> = (1..=c.layout.width()).map(|i| format!("?{i}")).collect();
            for mut r in rows() {
                // A typed column holds only its type: what SQLite alone could hold is null.
                for (i, f) in c.def.fields.iter().enumerate() {
                    let v = &mut r[crate::RecordLayout::field_column(i)];
                    if !fits(f.kind, v) {
                        *v = Sql::Null;
                    }
                }
                conn.execute(
                    &format!(
                        "INSERT INTO every ({}) VALUES ({})",
                        c.sql.columns,
                        marks.join(", ")
                    ),
                    crate::sql::params_from_iter(r.iter()),
                )
                .unwrap();
            }
            let mut stmt = conn
                .prepare(&format!("SELECT {} FROM every ORDER BY id", c.sql.columns))
                .unwrap();
            let mut rows = stmt.query(()).unwrap();
            let mut out = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                let old =
                    serde_json::to_vec(&record_json(&c, &read_columns(&c, row).unwrap())).unwrap();
                let mut new = Vec::new();
                write_record(&c, row, &mut new).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&new),
                    String::from_utf8_lossy(&old),
                    "{:?}",
                    conn.backend()
                );
                out.push(String::from_utf8(new).unwrap());
            }
            assert_eq!(out.len(), 4);
            outputs.push(out);
        }
        for other in &outputs[1..] {
            assert_eq!(other, &outputs[0]);
        }
    }
}
