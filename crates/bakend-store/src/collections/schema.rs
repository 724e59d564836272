//! The DDL behind a collection: its table and its indexes, on either store.
//!
//! Both stores get the same table, column and index names. SQLite's statements are those it
//! always had; PostgreSQL's differ where it must: its column types (`definition::Storage`),
//! a named primary key, nulls sorted as SQLite sorts them, and names within its 63-byte limit.

use crate::error::StoreError;
use crate::sql::{Backend, Conn};

use super::definition::{CollectionDef, FieldDef, FieldType};
use super::layout::RecordLayout;

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// PostgreSQL silently truncates longer names (`NAMEDATALEN - 1`).
pub const PG_MAX_NAME: usize = 63;

/// A name PostgreSQL keeps as given: one longer than its limit (an index over several long
/// field names) is cut short and ends with a hash of the whole name, so the same index always
/// gets the same name and two long names stay apart. SQLite takes every name as it is.
pub fn object_name(backend: Backend, name: String) -> String {
    if backend == Backend::Sqlite || name.len() <= PG_MAX_NAME {
        return name;
    }
    // FNV-1a: stable across versions and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut keep = PG_MAX_NAME - 9;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{h:08x}", &name[..keep])
}

/// Table and column names must fit PostgreSQL's limit (it would truncate them, and two long
/// field names could become one). Definitions allow longer names, so this is checked where a
/// table is made or changed on PostgreSQL; SQLite has no limit.
pub fn check_names(backend: Backend, def: &CollectionDef) -> Result<(), StoreError> {
    if backend == Backend::Sqlite {
        return Ok(());
    }
    let too_long = std::iter::once(("collection", &def.name))
        .chain(def.fields.iter().map(|f| ("field", &f.name)))
        .find(|(_, n)| n.len() > PG_MAX_NAME);
    match too_long {
        Some((what, name)) => Err(StoreError::Definition(format!(
            "Collection \"{}\": {what} name \"{name}\" is longer than {PG_MAX_NAME} bytes, \
             the longest name PostgreSQL keeps",
            def.name
        ))),
        None => Ok(()),
    }
}

/// The null ordering that follows a field column in an index key or an `ORDER BY` term.
/// SQLite sorts nulls first going up and last going down; PostgreSQL the other way round,
/// unless told. Indexes and sorts both say it, so an index still serves a sort either way.
/// System columns are never null and say nothing: the primary key index cannot say it, and
/// `ORDER BY "id"` must still match it.
pub fn nulls(backend: Backend, desc: bool, field: bool) -> &'static str {
    match (backend, field, desc) {
        (Backend::Postgres, true, false) => " NULLS FIRST",
        (Backend::Postgres, true, true) => " NULLS LAST",
        _ => "",
    }
}

fn column_sql(f: &FieldDef, backend: Backend) -> String {
    let mut s = format!("{} {}", quote(&f.name), f.kind.sql_type(backend));
    if f.required {
        s.push_str(" NOT NULL");
    }
    s
}

/// Indexes a field needs, as `(name, statement)`: unique fields get a unique index, relation
/// fields a plain one, and the owner field one that also serves the default order, so an
/// owner's list (the `owner` read rule) reads only the rows it returns and counts from the
/// index alone.
fn field_indexes(table: &str, f: &FieldDef, backend: Backend) -> Vec<(String, String)> {
    let t = quote(table);
    let c = format!("{}{}", quote(&f.name), nulls(backend, false, true));
    let mut out = Vec::new();
    if f.name == RecordLayout::OWNER_FIELD && !f.unique {
        let name = object_name(backend, format!("idx_{table}_owner_created"));
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
        let name = object_name(backend, format!("uniq_{table}_{}", f.name));
        out.push((
            name.clone(),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t}({c})",
                quote(&name)
            ),
        ));
    } else if f.kind == FieldType::Relation {
        let name = object_name(backend, format!("idx_{table}_{}", f.name));
        out.push((
            name.clone(),
            format!("CREATE INDEX IF NOT EXISTS {} ON {t}({c})", quote(&name)),
        ));
    }
    out
}

/// `CREATE TABLE` for `def` under the name `table` (a SQLite rebuild creates the new table
/// under a temporary name first).
pub fn table_sql(table: &str, def: &CollectionDef, backend: Backend) -> String {
    let mut cols: Vec<String> = RecordLayout::SYSTEM
        .iter()
        .map(|s| format!("{} {}", quote(s.column), s.ddl(backend)))
        .collect();
    cols.extend(def.fields.iter().map(|f| column_sql(f, backend)));
    if backend == Backend::Postgres {
        // Named, and with a leading underscore no collection name has: PostgreSQL's default
        // name (`posts_pkey`) could be taken by a collection of that name.
        let pk = object_name(backend, format!("_pk_{table}"));
        cols.push(format!(
            "CONSTRAINT {} PRIMARY KEY ({})",
            quote(&pk),
            quote(RecordLayout::ID.column)
        ));
    }
    format!("CREATE TABLE {} ({})", quote(table), cols.join(", "))
}

/// Every index the table of `def` should have, as `(name, statement)`.
pub fn index_sql(def: &CollectionDef, backend: Backend) -> Vec<(String, String)> {
    let t = quote(&def.name);
    let created = object_name(backend, format!("idx_{}_created", def.name));
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
        out.extend(field_indexes(&def.name, f, backend));
    }
    // The definition's own indexes; one a field already implies (same name) is made once.
    for ix in &def.indexes {
        let name = object_name(backend, ix.sql_name(&def.name));
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, ix.create_sql(&def.name, backend)));
        }
    }
    out
}

/// Runs one statement without parameters: on PostgreSQL over the simple protocol, so DDL
/// does not fill the connection's cache of prepared statements.
pub fn run(conn: &Conn, sql: &str) -> crate::sql::Result<()> {
    match conn.backend() {
        Backend::Sqlite => conn.execute(sql, ()).map(|_| ()),
        Backend::Postgres => conn.execute_batch(sql),
    }
}

/// Creates the table of `def`, its indexes and its row count (with the triggers keeping it).
pub fn create(conn: &Conn, def: &CollectionDef) -> Result<(), StoreError> {
    let backend = conn.backend();
    run(conn, &table_sql(&def.name, def, backend))?;
    for (_, sql) in index_sql(def, backend) {
        run(conn, &sql)?;
    }
    super::counts::create(conn, &def.name)
}

/// The `ADD COLUMN` statement for a new optional field.
pub fn add_column_sql(table: &str, f: &FieldDef, backend: Backend) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {}",
        quote(table),
        column_sql(f, backend)
    )
}

/// Whether the collection's table exists.
pub fn table_exists(conn: &Conn, name: &str) -> crate::sql::Result<bool> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?1"
        }
    };
    conn.query_row(sql, [name], |r| r.get::<i64>(0))
        .map(|n| n > 0)
}

/// The indexes on `table` other than its primary key (tests of either store ask this rather
/// than `sqlite_master`).
pub fn index_names(conn: &Conn, table: &str) -> crate::sql::Result<Vec<String>> {
    let sql = match conn.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL"
        }
        Backend::Postgres => {
            "SELECT i.relname::text FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = current_schema() AND t.relname = ?1 AND NOT x.indisprimary"
        }
    };
    conn.prepare(sql)?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// The columns of `table`, in table order (tests of either store ask this rather than
/// `PRAGMA table_info`).
pub fn column_names(conn: &Conn, table: &str) -> crate::sql::Result<Vec<String>> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position"
        }
    };
    conn.prepare(sql)?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// The column of `table`'s primary key, when it is one column.
pub fn primary_key(conn: &Conn, table: &str) -> crate::sql::Result<Option<String>> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info(?1) WHERE pk > 0",
        Backend::Postgres => {
            "SELECT a.attname::text FROM pg_index x \
             JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey) \
             WHERE n.nspname = current_schema() AND t.relname = ?1 AND x.indisprimary"
        }
    };
    let keys: Vec<String> = conn
        .prepare(sql)?
        .query_map([table], |r| r.get(0))?
        .collect::<crate::sql::Result<_>>()?;
    Ok(match <[String; 1]>::try_from(keys) {
        Ok([key]) => Some(key),
        Err(_) => None,
    })
}

/// Makes the table's indexes exactly those `def` asks for: drops the ones it no longer needs
/// (a field that lost `unique`, a renamed or removed field) and creates the missing ones.
/// Creating a unique index fails if values repeat; callers check for duplicates first.
pub fn sync_indexes(conn: &Conn, def: &CollectionDef) -> crate::sql::Result<()> {
    let wanted = index_sql(def, conn.backend());
    let existing = index_names(conn, &def.name)?;
    for name in &existing {
        if !wanted.iter().any(|(w, _)| w == name) {
            run(conn, &format!("DROP INDEX {}", quote(name)))?;
        }
    }
    for (name, sql) in &wanted {
        // PostgreSQL's `IF NOT EXISTS` still takes a lock on the table and says so in a
        // notice; an index that is there needs nothing.
        if conn.backend() == Backend::Sqlite || !existing.contains(name) {
            run(conn, sql)?;
        }
    }
    Ok(())
}

/// PostgreSQL: collection DDL from several servers (start-ups, the admin API) takes turns,
/// within the caller's transaction — two servers creating the same index at once would
/// otherwise fail one of them. SQLite has one writer for the whole database already.
pub fn lock_collections(conn: &Conn) -> Result<(), StoreError> {
    if conn.backend() == Backend::Postgres {
        let key = crate::db::migrations::advisory_key(conn, "bakend:collections")?;
        conn.execute("SELECT pg_advisory_xact_lock(?1)", [key])?;
    }
    Ok(())
}

/// PostgreSQL keeps each connection's prepared statements on the server; after a collection's
/// table changed, one prepared before could re-plan to another result type, which PostgreSQL
/// refuses. The connection that made the change forgets them (SQLite re-prepares by itself).
pub fn forget_statements(conn: &Conn) {
    if let Some(pg) = conn.postgres() {
        pg.clear_statement_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use crate::collections::testing::each_store;
    use serde_json::json;

    #[test]
    fn long_index_names_are_shortened_the_same_way_every_time_on_postgres() {
        let long = "a".repeat(60);
        let name = object_name(Backend::Postgres, format!("uniq_{long}_{long}"));
        assert_eq!(name.len(), PG_MAX_NAME);
        assert_eq!(
            name,
            object_name(Backend::Postgres, format!("uniq_{long}_{long}"))
        );
        assert_ne!(
            name,
            object_name(Backend::Postgres, format!("uniq_{long}_{long}b"))
        );
        assert_eq!(
            object_name(Backend::Sqlite, format!("uniq_{long}_{long}")).len(),
            126,
            "SQLite keeps every name"
        );
        each_store(
            "long_index_names_are_shortened_the_same_way_every_time_on_postgres",
            |conn| {
                let def = parse(&json!({"name": long, "fields": [
                    {"name": long, "type": "string", "unique": true},
                    {"name": "b", "type": "string"}
                ], "indexes": [{"fields": [long, "b", "-createdAt"]}]}))
                .unwrap()
                .def;
                create(conn, &def).unwrap();
                let before = index_names(conn, &long).unwrap();
                assert_eq!(before.len(), 3, "{before:?}");
                // Nothing to drop or make again: the names found are the names wanted.
                sync_indexes(conn, &def).unwrap();
                assert_eq!(index_names(conn, &long).unwrap(), before);
            },
        );
    }

    #[test]
    fn names_postgres_would_truncate_are_refused_there_only() {
        let def = parse(&json!({"name": "p", "fields": [
            {"name": "x".repeat(64), "type": "string"}
        ]}))
        .unwrap()
        .def;
        assert!(check_names(Backend::Sqlite, &def).is_ok());
        let e = check_names(Backend::Postgres, &def)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is longer than 63 bytes"), "{e}");
    }
}
