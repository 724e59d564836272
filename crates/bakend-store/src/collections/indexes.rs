//! Indexes a collection definition asks for: `"indexes": [{"fields": ["project", "-createdAt"],
//! "unique": false}]`. Keys are field names or `id`/`createdAt`/`updatedAt`, `-` for
//! descending. They are created, changed and dropped by the same planner as fields
//! (`migrate::plan`): at start-up, by `bak migrate apply` and through the admin API.
//!
//! A plain (non-unique) index gets the record id as its last column, in the direction of its
//! last key (lists break ties that way), so a list sorted by its keys — either way round —
//! reads the rows in exactly the order it returns them and never sorts the table.

use crate::sql::{Backend, Conn};
use serde_json::Value;

use super::definition::FieldDef;
use super::layout::RecordLayout;
use super::schema::{nulls, object_name, quote};

/// At most this many keys per index (SQLite allows far more; wider ones rarely help a list).
const MAX_KEYS: usize = 8;
const INDEX_KEYS: &[&str] = &["fields", "unique"];

/// One index as the definition states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDef {
    /// `(key as written without '-', descending)`: a field name or a system key.
    pub keys: Vec<(String, bool)>,
    pub unique: bool,
}

impl IndexDef {
    /// The column behind each key.
    fn columns(&self) -> Vec<(&str, bool)> {
        self.keys
            .iter()
            .map(|(k, desc)| {
                let col = RecordLayout::system_by_json(k).map_or(k.as_str(), |s| s.column);
                (col, *desc)
            })
            .collect()
    }

    /// The index's name in the database: derived from its keys, so the same index always
    /// has the same name (and an index a field already implies is not made twice).
    pub fn sql_name(&self, table: &str) -> String {
        let mut name = format!("{}_{table}", if self.unique { "uniq" } else { "idx" });
        for (col, desc) in self.columns() {
            name.push('_');
            name.push_str(col);
            if desc {
                name.push_str("_desc");
            }
        }
        name
    }

    /// `CREATE [UNIQUE] INDEX IF NOT EXISTS …` (on PostgreSQL with nulls ordered as lists
    /// order them, see `schema::nulls`, and a name within its limit).
    pub fn create_sql(&self, table: &str, backend: Backend) -> String {
        let mut cols: Vec<String> = self
            .keys
            .iter()
            .zip(self.columns())
            .map(|((key, _), (c, desc))| {
                let field = RecordLayout::system_by_json(key).is_none();
                format!(
                    "{}{}{}",
                    quote(c),
                    if desc { " DESC" } else { "" },
                    nulls(backend, desc, field)
                )
            })
            .collect();
        if !self.unique && !self.keys.iter().any(|(k, _)| k == RecordLayout::ID.json) {
            // Lists break ties by id in the direction of their last key (see `order_by`).
            let last_desc = self.keys.last().is_some_and(|(_, d)| *d);
            cols.push(format!(
                "{}{}",
                quote(RecordLayout::ID.column),
                if last_desc { " DESC" } else { "" }
            ));
        }
        format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {}({})",
            if self.unique { "UNIQUE " } else { "" },
            quote(&object_name(backend, self.sql_name(table))),
            quote(table),
            cols.join(", ")
        )
    }

    /// For people: `(project, -createdAt)`, `unique (slug)`.
    pub fn describe(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(k, desc)| format!("{}{k}", if *desc { "-" } else { "" }))
            .collect();
        format!(
            "{}({})",
            if self.unique { "unique " } else { "" },
            keys.join(", ")
        )
    }

    /// Whether every key names a system column or one of `fields`.
    pub fn uses_only(&self, fields: &[FieldDef]) -> bool {
        self.keys.iter().all(|(k, _)| {
            RecordLayout::system_by_json(k).is_some() || fields.iter().any(|f| &f.name == k)
        })
    }
}

/// Parses `"indexes"`; problems go to `errors`, unknown keys to `warnings`.
pub fn parse(
    v: Option<&Value>,
    fields: &[FieldDef],
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<IndexDef> {
    let Some(v) = v else {
        return Vec::new();
    };
    let Some(items) = v.as_array() else {
        errors.push("\"indexes\" must be an array".into());
        return Vec::new();
    };
    let mut out: Vec<IndexDef> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("indexes[{i}]");
        let Some(obj) = item.as_object() else {
            errors.push(format!("{at} must be an object"));
            continue;
        };
        for k in obj.keys() {
            if !INDEX_KEYS.contains(&k.as_str()) {
                warnings.push(format!(
                    "unknown key {at}.\"{k}\" is kept but has no effect"
                ));
            }
        }
        let unique = match obj.get("unique") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => {
                errors.push(format!("{at}.unique must be a boolean"));
                false
            }
        };
        let Some(keys) = obj.get("fields").and_then(Value::as_array) else {
            errors.push(format!("{at}.fields must be an array of field names"));
            continue;
        };
        if keys.is_empty() || keys.len() > MAX_KEYS {
            errors.push(format!("{at}.fields must name 1 to {MAX_KEYS} fields"));
            continue;
        }
        let mut parsed: Vec<(String, bool)> = Vec::new();
        for k in keys {
            let Some(k) = k.as_str() else {
                errors.push(format!("{at}.fields must be an array of field names"));
                continue;
            };
            let (name, desc) = match k.strip_prefix('-') {
                Some(rest) => (rest, true),
                None => (k.strip_prefix('+').unwrap_or(k), false),
            };
            let known = RecordLayout::system_by_json(name).is_some()
                || fields.iter().any(|f| f.name == name);
            if !known {
                errors.push(format!(
                    "{at}: \"{name}\" is not a field (nor id, createdAt or updatedAt)"
                ));
            } else if parsed.iter().any(|(p, _)| p == name) {
                errors.push(format!("{at}: \"{name}\" appears twice"));
            } else {
                parsed.push((name.to_string(), desc));
            }
        }
        if parsed.len() != keys.len() {
            continue;
        }
        let index = IndexDef {
            keys: parsed,
            unique,
        };
        if out.iter().any(|o| o.keys == index.keys) {
            errors.push(format!("{at}: the same fields are indexed twice"));
            continue;
        }
        out.push(index);
    }
    out
}

/// Records holding the same values in every key of a unique index (nulls never clash), as
/// `(how many records are involved, a few "rec_a (same as rec_b)")`.
pub fn duplicates(
    conn: &Conn,
    table: &str,
    index: &IndexDef,
    samples: usize,
) -> crate::sql::Result<(u64, Vec<String>)> {
    let cols: Vec<String> = index.columns().iter().map(|(c, _)| quote(c)).collect();
    let not_null: Vec<String> = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect();
    let id = quote(RecordLayout::ID.column);
    let mut sql = format!(
        "SELECT COUNT(*) - 1, MIN({id}), MAX({id}) FROM {} WHERE {} GROUP BY {} HAVING COUNT(*) > 1",
        quote(table),
        not_null.join(" AND "),
        cols.join(", ")
    );
    if conn.backend() == Backend::Postgres {
        // SQLite's groups come out in key order; PostgreSQL's hash aggregate in any order.
        // The same samples on both stores, in a stable order.
        sql.push_str(&format!(" ORDER BY {}", cols.join(", ")));
    }
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(())?;
    let (mut count, mut found) = (0u64, Vec::new());
    while let Some(r) = rows.next()? {
        count += r.get::<i64>(0)?.max(0) as u64;
        if found.len() < samples {
            let (first, other): (String, String) = (r.get(1)?, r.get(2)?);
            found.push(format!("{other} (same as {first})"));
        }
    }
    Ok((count, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<FieldDef> {
        let def = super::super::definition::parse(&json!({"name": "p", "fields": [
            {"name": "title", "type": "string"},
            {"name": "project", "type": "string"}
        ]}))
        .unwrap()
        .def;
        def.fields
    }

    fn run(v: Value) -> (Vec<IndexDef>, Vec<String>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let out = parse(Some(&v), &fields(), &mut errors, &mut warnings);
        (out, errors)
    }

    #[test]
    fn parses_names_and_sql() {
        let (ix, errors) = run(json!([
            {"fields": ["title"]},
            {"fields": ["project", "-createdAt"], "unique": false},
            {"fields": ["project", "title"], "unique": true}
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ix[0].sql_name("p"), "idx_p_title");
        assert_eq!(
            ix[0].create_sql("p", Backend::Sqlite),
            r#"CREATE INDEX IF NOT EXISTS "idx_p_title" ON "p"("title", "id")"#
        );
        assert_eq!(
            ix[0].create_sql("p", Backend::Postgres),
            r#"CREATE INDEX IF NOT EXISTS "idx_p_title" ON "p"("title" NULLS FIRST, "id")"#
        );
        assert_eq!(ix[1].sql_name("p"), "idx_p_project_created_at_desc");
        assert_eq!(ix[1].describe(), "(project, -createdAt)");
        assert_eq!(
            ix[2].create_sql("p", Backend::Sqlite),
            r#"CREATE UNIQUE INDEX IF NOT EXISTS "uniq_p_project_title" ON "p"("project", "title")"#
        );
        assert_eq!(
            ix[1].create_sql("p", Backend::Postgres),
            r#"CREATE INDEX IF NOT EXISTS "idx_p_project_created_at_desc" ON "p"("project" NULLS FIRST, "created_at" DESC, "id" DESC)"#
        );
        assert_eq!(ix[2].describe(), "unique (project, title)");
    }

    #[test]
    fn refuses_what_cannot_be_an_index() {
        for (v, want) in [
            (json!({}), "\"indexes\" must be an array"),
            (json!([1]), "indexes[0] must be an object"),
            (json!([{"fields": []}]), "must name 1 to 8 fields"),
            (
                json!([{"fields": "title"}]),
                "must be an array of field names",
            ),
            (json!([{"fields": ["nope"]}]), "\"nope\" is not a field"),
            (json!([{"fields": ["title", "-title"]}]), "appears twice"),
            (
                json!([{"fields": ["title"], "unique": "yes"}]),
                "unique must be a boolean",
            ),
            (
                json!([{"fields": ["title"]}, {"fields": ["title"], "unique": true}]),
                "the same fields are indexed twice",
            ),
        ] {
            let (_, errors) = run(v.clone());
            assert!(errors.iter().any(|e| e.contains(want)), "{v}: {errors:?}");
        }
    }
}
