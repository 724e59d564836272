//! The collections the server knows, kept in memory and replaced whole on every change, so a
//! request reads a consistent definition without touching the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bakend_core::sync;
use bakend_filter::Schema;

use serde_json::Value;

use super::definition::{CollectionDef, FieldType, filter_schema};
use super::layout::RecordLayout;
use super::schema::quote;
use crate::records::json::RecordKeys;

/// A live collection: its definition plus the SQL derived from it once.
#[derive(Debug)]
pub struct Collection {
    pub def: CollectionDef,
    /// The definition JSON as submitted (key order and unknown keys kept).
    pub raw: Value,
    pub created_at: String,
    pub updated_at: String,
    /// Where the system columns, the fields and the owner are in its rows.
    pub layout: RecordLayout,
    pub(crate) sql: CollectionSql,
    /// The record's keys as JSON fragments, for writing rows straight to bytes.
    pub(crate) json_keys: RecordKeys,
    /// What a filter expression may name, and each name's type and column.
    filter_schema: Schema,
    /// Sort keys the "this sort scans the table" hint was already logged for (once each,
    /// per loaded definition).
    pub(crate) hinted: std::sync::Mutex<Vec<String>>,
    /// Bytes per record in the last list, so the next one sizes its buffer once instead of
    /// growing it (a grown buffer is a copy of everything written so far).
    record_bytes: AtomicUsize,
}

#[derive(Debug)]
pub(crate) struct CollectionSql {
    pub table: String,
    /// `"id", "created_at", "updated_at", "f1", …`
    pub columns: String,
    pub insert: String,
}

impl Collection {
    pub fn new(def: CollectionDef, raw: Value, created_at: String, updated_at: String) -> Self {
        let table = quote(&def.name);
        let layout = RecordLayout::of(&def);
        let columns = RecordLayout::column_list(&def);
        let insert = format!(
            "INSERT INTO {table} ({columns}) VALUES ({})",
            layout.placeholders()
        );
        let system: Vec<&str> = RecordLayout::SYSTEM.iter().map(|s| s.json).collect();
        let fields: Vec<(String, FieldType)> = def
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.kind))
            .collect();
        let json_keys = RecordKeys::new(&system, &fields);
        let filter_schema = filter_schema(&def.fields);
        Collection {
            def,
            raw,
            created_at,
            updated_at,
            layout,
            json_keys,
            filter_schema,
            hinted: std::sync::Mutex::new(Vec::new()),
            record_bytes: AtomicUsize::new(128),
            sql: CollectionSql {
                table,
                columns,
                insert,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The fields a filter on this collection may use (`docs/filters.md`).
    pub fn filter_schema(&self) -> &Schema {
        &self.filter_schema
    }

    /// Whether an index starts with sort key `key` (`createdAt`, a field name, …), so a list
    /// sorted by it reads rows in order instead of sorting the table.
    pub fn is_indexed_sort_key(&self, key: &str) -> bool {
        if matches!(key, "id" | "createdAt") {
            return true;
        }
        let by_field = self.def.field(key).is_some_and(|f| {
            f.unique || f.kind == FieldType::Relation || f.name == RecordLayout::OWNER_FIELD
        });
        by_field
            || self
                .def
                .indexes
                .iter()
                .any(|ix| ix.keys.first().is_some_and(|(k, _)| k == key))
    }

    /// True the first time `key` asks for the hint (then never again for this definition).
    pub(crate) fn first_hint(&self, key: &str) -> bool {
        let mut hinted = sync::lock(&self.hinted);
        if hinted.iter().any(|k| k == key) {
            return false;
        }
        hinted.push(key.to_string());
        true
    }

    /// A list buffer's starting size for `per_page` records: the last list's bytes per
    /// record with an eighth to spare, plus the envelope.
    pub(crate) fn list_capacity(&self, per_page: u32) -> usize {
        let per_record = self.record_bytes.load(Ordering::Relaxed);
        (per_page as usize).saturating_mul(per_record + per_record / 8) + 256
    }

    /// Remembers a list's size for [`Collection::list_capacity`] (capped, so one huge page
    /// does not make every later buffer huge).
    pub(crate) fn note_list_size(&self, bytes: usize, records: u32) {
        if records > 0 {
            let per_record = (bytes / records as usize).clamp(64, 64 * 1024);
            self.record_bytes.store(per_record, Ordering::Relaxed);
        }
    }

    /// The collection as the admin API shows it (`CollectionMeta`).
    pub fn meta_json(&self) -> Value {
        serde_json::json!({
            "name": self.def.name,
            "definition": self.raw,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<String, Arc<Collection>>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Collection>> {
        sync::read(&self.map).get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        sync::read(&self.map).contains_key(name)
    }

    pub fn put(&self, c: Arc<Collection>) {
        sync::write(&self.map).insert(c.def.name.clone(), c);
    }

    pub fn remove(&self, name: &str) {
        sync::write(&self.map).remove(name);
    }

    /// Every collection, sorted by name.
    pub fn all(&self) -> Vec<Arc<Collection>> {
        let mut v: Vec<_> = sync::read(&self.map).values().cloned().collect();
        v.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        v
    }
}
