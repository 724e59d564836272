//! The DDL behind a collection, and the plan for moving a table from one definition to another.

use super::definition::{CollectionDef, FieldDef, FieldType};

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn column_sql(f: &FieldDef) -> String {
    let mut s = format!("{} {}", quote(&f.name), f.kind.sql_type());
    if f.required {
        s.push_str(" NOT NULL");
    }
    s
}

/// Indexes a field needs: unique fields get a unique index, relation fields and the owner field
/// a plain one (owner-filtered lists and realtime routing look records up by owner).
fn field_indexes(table: &str, f: &FieldDef) -> Vec<String> {
    let t = quote(table);
    let c = quote(&f.name);
    let mut out = Vec::new();
    if f.unique {
        out.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t}({c})",
            quote(&format!("uniq_{table}_{}", f.name))
        ));
    } else if f.kind == FieldType::Relation || f.name == "user_id" {
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t}({c})",
            quote(&format!("idx_{table}_{}", f.name))
        ));
    }
    out
}

/// Statements that create the table of `def` and its indexes.
pub fn create_sql(def: &CollectionDef) -> Vec<String> {
    let t = quote(&def.name);
    let mut cols = vec![
        "\"id\" TEXT PRIMARY KEY NOT NULL".to_string(),
        "\"created_at\" TEXT NOT NULL".to_string(),
        "\"updated_at\" TEXT NOT NULL".to_string(),
    ];
    cols.extend(def.fields.iter().map(column_sql));
    let mut out = vec![
        format!("CREATE TABLE {t} ({})", cols.join(", ")),
        // The default list order (newest first) walks this index backwards. Ascending, because new
        // rows then land at the right edge, where SQLite appends instead of splitting pages.
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t}(\"created_at\", \"id\")",
            quote(&format!("idx_{}_created", def.name))
        ),
    ];
    for f in &def.fields {
        out.extend(field_indexes(&def.name, f));
    }
    out
}

/// How to get from one definition to another without losing data.
#[derive(Debug, Default)]
pub struct Plan {
    /// What changes, in words, for the log.
    pub changes: Vec<String>,
    pub ddl: Vec<String>,
    /// Changes that cannot be applied automatically; non-empty means "refuse".
    pub refused: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.refused.is_empty()
    }
}

/// Plans the safe changes (new optional fields, new indexes, permission and validation
/// changes); anything that could lose data or fail on existing rows is refused.
pub fn plan(old: &CollectionDef, new: &CollectionDef) -> Plan {
    let mut p = Plan::default();
    let t = quote(&new.name);
    for f in &new.fields {
        match old.field(&f.name) {
            None if f.required => p.refused.push(format!(
                "adds required field \"{}\" (existing records have no value for it)",
                f.name
            )),
            None => {
                p.changes
                    .push(format!("add field \"{}\" ({})", f.name, f.kind.as_str()));
                p.ddl
                    .push(format!("ALTER TABLE {t} ADD COLUMN {}", column_sql(f)));
                p.ddl.extend(field_indexes(&new.name, f));
            }
            Some(o) => {
                if o.kind != f.kind {
                    p.refused.push(format!(
                        "changes the type of field \"{}\" from {} to {}",
                        f.name,
                        o.kind.as_str(),
                        f.kind.as_str()
                    ));
                }
                if o.required != f.required {
                    p.refused.push(format!(
                        "changes \"required\" on field \"{}\" to {}",
                        f.name, f.required
                    ));
                }
                if o.unique != f.unique {
                    p.refused.push(format!(
                        "changes \"unique\" on field \"{}\" to {}",
                        f.name, f.unique
                    ));
                }
                if o.min != f.min
                    || o.max != f.max
                    || o.regex.as_ref().map(|r| r.as_str()) != f.regex.as_ref().map(|r| r.as_str())
                {
                    p.changes
                        .push(format!("change validation of field \"{}\"", f.name));
                }
                if o.collection != f.collection {
                    p.changes
                        .push(format!("change relation target of field \"{}\"", f.name));
                }
            }
        }
    }
    for o in &old.fields {
        if new.field(&o.name).is_none() {
            p.refused.push(format!(
                "removes field \"{}\" (its data would be lost)",
                o.name
            ));
        }
    }
    if old.permissions != new.permissions {
        p.changes.push("change permissions".into());
    }
    let old_order: Vec<&str> = old.fields.iter().map(|f| f.name.as_str()).collect();
    let new_order: Vec<&str> = new
        .fields
        .iter()
        .filter(|f| old.field(&f.name).is_some())
        .map(|f| f.name.as_str())
        .collect();
    if p.refused.is_empty() && old_order != new_order {
        p.changes.push("reorder fields".into());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use serde_json::json;

    fn def(v: serde_json::Value) -> CollectionDef {
        parse(&v).unwrap().def
    }

    #[test]
    fn adding_an_optional_field_is_safe() {
        let old = def(json!({"name": "p", "fields": [{"name": "a", "type": "string"}]}));
        let new = def(
            json!({"name": "p", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "string", "unique": true}], "permissions": {"read": "admin"}}),
        );
        let p = plan(&old, &new);
        assert!(p.refused.is_empty());
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.ddl.len(), 2);
    }

    #[test]
    fn destructive_changes_are_refused() {
        let old = def(
            json!({"name": "p", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}]}),
        );
        let new = def(
            json!({"name": "p", "fields": [{"name": "a", "type": "integer"}, {"name": "c", "type": "string", "required": true}]}),
        );
        let p = plan(&old, &new);
        assert_eq!(p.refused.len(), 3, "{:?}", p.refused);
    }
}
