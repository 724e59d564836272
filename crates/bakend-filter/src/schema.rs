//! What a filter may name: a collection's fields with their types and columns, and the system
//! fields every collection has.

/// A field's type, as in a collection definition (`bakend_store`'s `FieldType`; this crate does
/// not depend on the store, so the caller maps one to the other, e.g. with [`Kind::parse`] of
/// `FieldType::as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    String,
    Text,
    Integer,
    Float,
    Boolean,
    Datetime,
    Json,
    Relation,
    File,
}

impl Kind {
    /// The definition's type name (`"string"`, `"integer"`, …).
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "string" => Kind::String,
            "text" => Kind::Text,
            "integer" => Kind::Integer,
            "float" => Kind::Float,
            "boolean" => Kind::Boolean,
            "datetime" => Kind::Datetime,
            "json" => Kind::Json,
            "relation" => Kind::Relation,
            "file" => Kind::File,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Text => "text",
            Kind::Integer => "integer",
            Kind::Float => "float",
            Kind::Boolean => "boolean",
            Kind::Datetime => "datetime",
            Kind::Json => "json",
            Kind::Relation => "relation",
            Kind::File => "file",
        }
    }
}

/// One name a filter may use: its key in a record's JSON, its column, its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaField {
    pub name: String,
    pub column: String,
    pub kind: Kind,
}

/// The names a filter may use. Always has the system fields `id` (a string, column `id`),
/// `createdAt` and `updatedAt` (datetimes, columns `created_at`, `updated_at`); the caller adds
/// the collection's fields. Build it once per collection definition and rebuild it when the
/// definition changes (and re-check the filters bound to the old one).
///
/// ```
/// use bakend_filter::{Kind, Schema};
/// let schema = Schema::new()
///     .with_field("title", Kind::String)
///     .with_field("views", Kind::Integer);
/// assert_eq!(schema.field("createdAt").map(|f| f.column.as_str()), Some("created_at"));
/// assert_eq!(schema.field("views").map(|f| f.kind), Some(Kind::Integer));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    fields: Vec<SchemaField>,
}

impl Default for Schema {
    fn default() -> Self {
        Schema::new()
    }
}

impl Schema {
    /// The system fields only.
    pub fn new() -> Schema {
        let system = |name: &str, column: &str, kind| SchemaField {
            name: name.into(),
            column: column.into(),
            kind,
        };
        Schema {
            fields: vec![
                system("id", "id", Kind::String),
                system("createdAt", "created_at", Kind::Datetime),
                system("updatedAt", "updated_at", Kind::Datetime),
            ],
        }
    }

    /// Adds a field stored in the column of the same name (as collection fields are). A name
    /// already present (a system field, or a field added before) keeps its first meaning.
    pub fn add(&mut self, name: &str, kind: Kind) {
        self.add_with_column(name, name, kind);
    }

    /// Adds a field stored in a column of another name.
    pub fn add_with_column(&mut self, name: &str, column: &str, kind: Kind) {
        if self.field(name).is_none() {
            self.fields.push(SchemaField {
                name: name.into(),
                column: column.into(),
                kind,
            });
        }
    }

    /// [`Schema::add`], for building one in an expression.
    pub fn with_field(mut self, name: &str, kind: Kind) -> Schema {
        self.add(name, kind);
        self
    }

    pub fn field(&self, name: &str) -> Option<&SchemaField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn fields(&self) -> &[SchemaField] {
        &self.fields
    }
}
