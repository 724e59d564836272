//! Writing definitions back to `collections/*.json` (`bak migrate export`, and the admin API
//! so that a change made there does not make the next start refuse).
//!
//! Files are written with a stable key order (`name`, `fields`, `permissions`, then any other
//! key sorted; inside a field `name`, `type`, `required`, `unique`, `min`, `max`, `regex`,
//! `collection`, `default`, then the rest sorted), 2-space indented with a trailing newline, so
//! exports diff cleanly. `renamedFrom` is dropped: once applied it is history, not definition.
//! A collection already defined in some file is written to that file, whatever its name, so
//! exporting never creates a second definition of the same collection.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::definition::name_of;
use crate::error::StoreError;

const TOP_ORDER: &[&str] = &["name", "fields", "permissions"];
const FIELD_ORDER: &[&str] = &[
    "name",
    "type",
    "required",
    "unique",
    "min",
    "max",
    "regex",
    "collection",
    "default",
];
const PERMISSION_ORDER: &[&str] = &["create", "read", "update", "delete"];
/// Keys that are instructions for one migration, not part of the definition.
const DROPPED_FIELD_KEYS: &[&str] = &["renamedFrom"];

fn ordered(obj: &Map<String, Value>, order: &[&str], drop: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = obj.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    let mut rest: Vec<(&String, &Value)> = obj
        .iter()
        .filter(|(k, _)| !order.contains(&k.as_str()) && !drop.contains(&k.as_str()))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in rest {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The definition with its keys in the stable order.
pub fn canonical(raw: &Value) -> Value {
    let Some(obj) = raw.as_object() else {
        return raw.clone();
    };
    let mut top = ordered(obj, TOP_ORDER, &[]);
    if let Some(Value::Array(fields)) = top.get("fields") {
        let fields: Vec<Value> = fields
            .iter()
            .map(|f| match f.as_object() {
                Some(o) => Value::Object(ordered(o, FIELD_ORDER, DROPPED_FIELD_KEYS)),
                None => f.clone(),
            })
            .collect();
        top.insert("fields".into(), Value::Array(fields));
    }
    if let Some(Value::Object(p)) = top.get("permissions") {
        let p = ordered(p, PERMISSION_ORDER, &[]);
        top.insert("permissions".into(), Value::Object(p));
    }
    Value::Object(top)
}

/// The text of a definition file.
pub fn file_text(raw: &Value) -> String {
    // Serializing a `Value` cannot fail.
    let mut s = serde_json::to_string_pretty(&canonical(raw)).unwrap_or_default();
    s.push('\n');
    s
}

/// The `*.json` file in `dir` that defines collection `name`, if any (read leniently: a file
/// that does not parse defines nothing).
pub fn file_defining(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    paths.sort();
    paths.into_iter().find(|p| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| name_of(&v) == Some(name))
    })
}

fn write_atomically(path: &Path, text: &str) -> Result<(), StoreError> {
    // A temp name of this write's own: nodes of a cluster sharing the project folder write the
    // same change at the same moment (`.tmp` is not `.json`: never read as a definition).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes the definition of `name` to its file in `dir` (the file that defines it, else
/// `<name>.json`), creating `dir` if needed. Returns the path written. Blocking.
pub fn write_definition(dir: &Path, name: &str, raw: &Value) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(dir)?;
    let path = file_defining(dir, name).unwrap_or_else(|| dir.join(format!("{name}.json")));
    write_atomically(&path, &file_text(raw))?;
    Ok(path)
}

/// Removes the file that defines `name` in `dir`, if there is one. Blocking.
pub fn remove_definition(dir: &Path, name: &str) -> Result<Option<PathBuf>, StoreError> {
    match file_defining(dir, name) {
        Some(p) => {
            std::fs::remove_file(&p)?;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_is_stable() {
        let raw = json!({"permissions": {"delete": "owner", "read": "public"}, "zeta": 1, "fields": [
            {"type": "string", "renamedFrom": "old", "x": 1, "name": "a", "required": true}
        ], "name": "p"});
        assert_eq!(
            serde_json::to_string(&canonical(&raw)).unwrap(),
            r#"{"name":"p","fields":[{"name":"a","type":"string","required":true,"x":1}],"permissions":{"read":"public","delete":"owner"},"zeta":1}"#
        );
        assert!(file_text(&raw).ends_with("}\n"));
    }

    #[test]
    fn writes_to_the_file_that_defines_the_collection() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-posts.json"),
            r#"{"name":"posts","fields":[]}"#,
        )
        .unwrap();
        let p = write_definition(
            dir.path(),
            "posts",
            &json!({"name": "posts", "fields": [{"name": "a", "type": "string"}]}),
        )
        .unwrap();
        assert_eq!(p, dir.path().join("10-posts.json"));
        let p =
            write_definition(dir.path(), "tags", &json!({"name": "tags", "fields": []})).unwrap();
        assert_eq!(p, dir.path().join("tags.json"));
        assert_eq!(
            remove_definition(dir.path(), "tags").unwrap(),
            Some(p.clone())
        );
        assert!(!p.exists());
    }
}
