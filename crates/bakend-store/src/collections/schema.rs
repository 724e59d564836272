//! The DDL behind a collection: its table and its indexes.

use crate::sql::Conn;

use super::definition::{CollectionDef, FieldDef, FieldType};
use super::layout::RecordLayout;

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

/// Indexes a field needs, as `(name, statement)`: unique fields get a unique index, relation
/// fields a plain one, and the owner field one that also serves the default order, so an
/// owner's list (the `owner` read rule) reads only the rows it returns and counts from the
/// index alone.
fn field_indexes(table: &str, f: &FieldDef) -> Vec<(String, String)> {
    let t = quote(table);
    let c = quote(&f.name);
    let mut out = Vec::new();
    if f.name == RecordLayout::OWNER_FIELD && !f.unique {
        let name = format!("idx_{table}_owner_created");
        out.push((
            name.clone(),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t}({c}, {}, {})",
                quote(&name),
                quote(RecordLayout::CREATED_AT.column),
                quote(RecordLayout::ID.column)
            ),
        ));
    } else if f.unique {
        let name = format!("uniq_{table}_{}", f.name);
        out.push((
            name.clone(),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t}({c})",
                quote(&name)
            ),
        ));
    } else if f.kind == FieldType::Relation {
        let name = format!("idx_{table}_{}", f.name);
        out.push((
            name.clone(),
            format!("CREATE INDEX IF NOT EXISTS {} ON {t}({c})", quote(&name)),
        ));
    }
    out
}

/// `CREATE TABLE` for `def` under the name `table` (a rebuild creates the new table under a
/// temporary name first).
pub fn table_sql(table: &str, def: &CollectionDef) -> String {
    let mut cols: Vec<String> = RecordLayout::SYSTEM
        .iter()
        .map(|s| format!("{} {}", quote(s.column), s.ddl))
        .collect();
    cols.extend(def.fields.iter().map(column_sql));
    format!("CREATE TABLE {} ({})", quote(table), cols.join(", "))
}

/// Every index the table of `def` should have, as `(name, statement)`.
pub fn index_sql(def: &CollectionDef) -> Vec<(String, String)> {
    let t = quote(&def.name);
    let created = format!("idx_{}_created", def.name);
    // The default list order (newest first) walks this index backwards. Ascending, because new
    // rows then land at the right edge, where SQLite appends instead of splitting pages.
    let mut out = vec![(
        created.clone(),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t}({}, {})",
            quote(&created),
            quote(RecordLayout::CREATED_AT.column),
            quote(RecordLayout::ID.column)
        ),
    )];
    for f in &def.fields {
        out.extend(field_indexes(&def.name, f));
    }
    // The definition's own indexes; one a field already implies (same name) is made once.
    for ix in &def.indexes {
        let name = ix.sql_name(&def.name);
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, ix.create_sql(&def.name)));
        }
    }
    out
}

/// Statements that create the table of `def`, its indexes and its row count.
pub fn create_sql(def: &CollectionDef) -> Vec<String> {
    let mut out = vec![table_sql(&def.name, def)];
    out.extend(index_sql(def).into_iter().map(|(_, sql)| sql));
    out.extend(super::counts::create_sql(&def.name));
    out
}

/// The `ADD COLUMN` statement for a new optional field.
pub fn add_column_sql(table: &str, f: &FieldDef) -> String {
    format!("ALTER TABLE {} ADD COLUMN {}", quote(table), column_sql(f))
}

/// Makes the table's indexes exactly those `def` asks for: drops the ones it no longer needs
/// (a field that lost `unique`, a renamed or removed field) and creates the missing ones.
/// Creating a unique index fails if values repeat; callers check for duplicates first.
pub fn sync_indexes(conn: &Conn, def: &CollectionDef) -> crate::sql::Result<()> {
    let wanted = index_sql(def);
    let existing: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL",
        )?
        .query_map([&def.name], |r| r.get(0))?
        .collect::<crate::sql::Result<_>>()?;
    for name in &existing {
        if !wanted.iter().any(|(w, _)| w == name) {
            conn.execute(&format!("DROP INDEX {}", quote(name)), ())?;
        }
    }
    for (_, sql) in &wanted {
        conn.execute(sql, ())?;
    }
    Ok(())
}
