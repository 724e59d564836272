//! Where things are in a collection's rows: the system columns every collection table starts
//! with (`id`, `created_at`, `updated_at`), then one column per field in definition order, and
//! which field, if any, names the record's owner (`user_id`).
//!
//! Everything that builds SQL for records, reads a row, maps one table's rows to another or
//! looks for a record's owner asks [`RecordLayout`] rather than counting columns or spelling
//! `"user_id"` itself.

use crate::sql::{Backend, Value as Sql};
use serde_json::Value;

use super::definition::{CollectionDef, FieldDef, FieldType};
use super::schema::quote;

/// A column every collection table has, before its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemColumn {
    /// Its name in the table.
    pub column: &'static str,
    /// Its key in a record's JSON (spec `rest-api.md` §5).
    pub json: &'static str,
    /// Its column definition in `CREATE TABLE` on SQLite.
    pub ddl: &'static str,
    /// The same on PostgreSQL (text compared byte by byte, as on SQLite; the primary key is a
    /// named table constraint there, see `schema::table_sql`).
    pub pg_ddl: &'static str,
}

impl SystemColumn {
    /// Its column definition in `CREATE TABLE` on `backend`.
    pub fn ddl(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.ddl,
            Backend::Postgres => self.pg_ddl,
        }
    }
}

/// The row layout of one collection: how many fields follow the system columns and which of
/// them is the owner field. Cheap to copy; [`crate::Collection`] keeps one.
///
/// ```
/// use bakend_store::RecordLayout;
/// # let def = bakend_store::collections::definition::parse(&serde_json::json!({"name": "posts",
/// #     "fields": [{"name": "title", "type": "string"}, {"name": "user_id", "type": "string"}]}))
/// #     .unwrap().def;
/// // posts: title, user_id
/// let layout = RecordLayout::of(&def);
/// assert_eq!(layout.width(), 5); // id, created_at, updated_at, title, user_id
/// assert_eq!(RecordLayout::field_column(0), 3); // title
/// assert_eq!(layout.owner_column(), Some(4));
/// let record = serde_json::json!({"id": "rec_1", "user_id": "usr_1"});
/// assert_eq!(layout.owner_in_record(&record), Some("usr_1"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLayout {
    fields: usize,
    owner_field: Option<usize>,
}

impl RecordLayout {
    pub const ID: SystemColumn = SystemColumn {
        column: "id",
        json: "id",
        ddl: "TEXT PRIMARY KEY NOT NULL",
        pg_ddl: "TEXT COLLATE \"C\" NOT NULL",
    };
    pub const CREATED_AT: SystemColumn = SystemColumn {
        column: "created_at",
        json: "createdAt",
        ddl: "TEXT NOT NULL",
        pg_ddl: "TEXT COLLATE \"C\" NOT NULL",
    };
    pub const UPDATED_AT: SystemColumn = SystemColumn {
        column: "updated_at",
        json: "updatedAt",
        ddl: "TEXT NOT NULL",
        pg_ddl: "TEXT COLLATE \"C\" NOT NULL",
    };
    /// The system columns in table order; a row's fields start right after them.
    pub const SYSTEM: [SystemColumn; 3] = [Self::ID, Self::CREATED_AT, Self::UPDATED_AT];
    /// Positions of the system columns in a row.
    pub const ID_COLUMN: usize = 0;
    pub const CREATED_AT_COLUMN: usize = 1;
    pub const UPDATED_AT_COLUMN: usize = 2;
    /// A field with this name, of type `string` or `relation`, holds the record's owner.
    pub const OWNER_FIELD: &'static str = bakend_core::access::OWNER_FIELD;

    pub fn of(def: &CollectionDef) -> RecordLayout {
        RecordLayout {
            fields: def.fields.len(),
            owner_field: def.fields.iter().position(Self::is_owner_field),
        }
    }

    /// Whether `f` is an owner field (a field may be called `user_id` without being one, e.g.
    /// an integer; it then means nothing to permissions).
    pub fn is_owner_field(f: &FieldDef) -> bool {
        f.name == Self::OWNER_FIELD && matches!(f.kind, FieldType::String | FieldType::Relation)
    }

    /// Whether a field may not take `name`: the system columns, in both spellings.
    pub fn is_reserved_name(name: &str) -> bool {
        Self::SYSTEM
            .iter()
            .any(|s| s.column == name || s.json == name)
    }

    /// The system column a record's JSON key names (`id`, `createdAt`, `updatedAt`).
    pub fn system_by_json(key: &str) -> Option<SystemColumn> {
        Self::SYSTEM.into_iter().find(|s| s.json == key)
    }

    /// Columns in a row: the system columns and the fields.
    pub fn width(&self) -> usize {
        Self::SYSTEM.len() + self.fields
    }

    /// The row position of field `i` (an index into the definition's fields).
    pub const fn field_column(i: usize) -> usize {
        Self::SYSTEM.len() + i
    }

    /// Index into the definition's fields of the owner field, if the collection has one.
    pub fn owner_field(&self) -> Option<usize> {
        self.owner_field
    }

    pub fn has_owner(&self) -> bool {
        self.owner_field.is_some()
    }

    /// Row position of the owner field.
    pub fn owner_column(&self) -> Option<usize> {
        self.owner_field.map(Self::field_column)
    }

    /// The owner stored in a row read in table order.
    pub fn owner_in_row<'a>(&self, row: &'a [Sql]) -> Option<&'a str> {
        match self.owner_column().and_then(|i| row.get(i)) {
            Some(Sql::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// The owner of a record in its JSON form.
    pub fn owner_in_record<'a>(&self, record: &'a Value) -> Option<&'a str> {
        self.owner_field?;
        record.get(Self::OWNER_FIELD).and_then(Value::as_str)
    }

    /// Every column of `def`'s table in row order, quoted and comma-separated:
    /// `"id", "created_at", "updated_at", "f1", …`.
    pub fn column_list(def: &CollectionDef) -> String {
        Self::SYSTEM
            .iter()
            .map(|s| quote(s.column))
            .chain(def.fields.iter().map(|f| quote(&f.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `?1, ?2, …` for one value per column of the row.
    pub fn placeholders(&self) -> String {
        (1..=self.width())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use serde_json::json;

    fn def(fields: Value) -> CollectionDef {
        parse(&json!({"name": "t", "fields": fields})).unwrap().def
    }

    #[test]
    fn fields_follow_the_system_columns() {
        let d = def(json!([{"name": "a", "type": "string"}, {"name": "b", "type": "integer"}]));
        let l = RecordLayout::of(&d);
        assert_eq!(l.width(), 5);
        assert_eq!(RecordLayout::field_column(1), 4);
        assert_eq!(
            RecordLayout::column_list(&d),
            r#""id", "created_at", "updated_at", "a", "b""#
        );
        assert_eq!(l.placeholders(), "?1, ?2, ?3, ?4, ?5");
        assert!(!l.has_owner());
    }

    #[test]
    fn only_a_string_or_relation_user_id_is_the_owner() {
        let owned = RecordLayout::of(&def(json!([
            {"name": "t", "type": "string"},
            {"name": "user_id", "type": "relation", "collection": "users"}
        ])));
        assert_eq!(owned.owner_field(), Some(1));
        assert_eq!(owned.owner_column(), Some(4));
        let row = [
            Sql::Text("rec_1".into()),
            Sql::Text("c".into()),
            Sql::Text("u".into()),
            Sql::Null,
            Sql::Text("usr_1".into()),
        ];
        assert_eq!(owned.owner_in_row(&row), Some("usr_1"));
        assert_eq!(
            owned.owner_in_record(&json!({"user_id": "usr_1"})),
            Some("usr_1")
        );

        let not_owned = RecordLayout::of(&def(json!([{"name": "user_id", "type": "text"}])));
        assert!(!not_owned.has_owner());
        assert_eq!(
            not_owned.owner_in_record(&json!({"user_id": "usr_1"})),
            None
        );
    }

    #[test]
    fn reserved_names_are_both_spellings_of_the_system_columns() {
        for n in ["id", "created_at", "updated_at", "createdAt", "updatedAt"] {
            assert!(RecordLayout::is_reserved_name(n), "{n}");
        }
        assert!(!RecordLayout::is_reserved_name("user_id"));
        assert_eq!(
            RecordLayout::system_by_json("createdAt").map(|s| s.column),
            Some("created_at")
        );
        assert_eq!(RecordLayout::system_by_json("created_at"), None);
    }
}
