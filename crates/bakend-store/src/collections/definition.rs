//! Collection definitions (spec `collections.md` §1) and their validation.
//!
//! Stricter than upstream where upstream silently did the wrong thing: option types are checked,
//! permission rule values must be known, `created_at`/`updated_at` are reserved, and relations
//! may point at collections defined later in the same load. Unknown keys are kept verbatim (as
//! upstream) but reported as warnings so a typo such as `"requried"` does not pass unnoticed.

use std::sync::Arc;

use regex::Regex;
use serde_json::{Map, Value};

use bakend_core::access::Rule;
use bakend_filter::{Filter, Kind, Schema};

use super::indexes::{self, IndexDef};
use super::layout::RecordLayout;
use crate::sql::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
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

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "float" => FieldType::Float,
            "boolean" => FieldType::Boolean,
            "datetime" => FieldType::Datetime,
            "json" => FieldType::Json,
            "relation" => FieldType::Relation,
            "file" => FieldType::File,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
            FieldType::Datetime => "datetime",
            FieldType::Json => "json",
            FieldType::Relation => "relation",
            FieldType::File => "file",
        }
    }

    /// How the field's values are stored, on either database.
    pub fn storage(self) -> Storage {
        match self {
            FieldType::Integer | FieldType::Boolean => Storage::Integer,
            FieldType::Float => Storage::Real,
            _ => Storage::Text,
        }
    }

    /// The column type in `CREATE TABLE` / `ADD COLUMN`.
    pub fn sql_type(self, backend: Backend) -> &'static str {
        self.storage().column_type(backend)
    }

    fn supports_bounds(self) -> bool {
        matches!(
            self,
            FieldType::String | FieldType::Text | FieldType::Integer | FieldType::Float
        )
    }

    fn is_textual(self) -> bool {
        matches!(self, FieldType::String | FieldType::Text)
    }
}

/// The storage class of a field's values: the same on both stores (booleans are 0/1 integers,
/// datetimes ISO text, JSON its text), so a value reads back alike from either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Integer,
    Real,
    Text,
}

impl Storage {
    /// The column type. PostgreSQL's text is `COLLATE "C"`: compared byte by byte, as SQLite
    /// compares text, so sorts, ranges and unique checks agree between the stores.
    pub fn column_type(self, backend: Backend) -> &'static str {
        match (backend, self) {
            (Backend::Sqlite, Storage::Integer) => "INTEGER",
            (Backend::Sqlite, Storage::Real) => "REAL",
            (Backend::Sqlite, Storage::Text) => "TEXT",
            (Backend::Postgres, Storage::Integer) => "BIGINT",
            (Backend::Postgres, Storage::Real) => "DOUBLE PRECISION",
            (Backend::Postgres, Storage::Text) => "TEXT COLLATE \"C\"",
        }
    }

    /// PostgreSQL's type name for a cast (`?1::BIGINT`), without the collation.
    pub fn pg_cast(self) -> &'static str {
        match self {
            Storage::Integer => "BIGINT",
            Storage::Real => "DOUBLE PRECISION",
            Storage::Text => "TEXT",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FieldDef {
    pub name: String,
    pub kind: FieldType,
    pub required: bool,
    pub unique: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub regex: Option<Regex>,
    /// Target of a relation field.
    pub collection: Option<String>,
    /// `"default"`: the value a record gets when it is created without this field, and the value
    /// existing records get when a migration adds the field or makes it required.
    pub default: Option<Value>,
    /// `"renamedFrom"`: the field's previous name. A migration renames the column (keeping the
    /// data) when the stored definition still has a field of that name. An instruction, not a
    /// property: it does not take part in equality.
    pub renamed_from: Option<String>,
}

/// Two field definitions are the same when every option means the same thing; how the JSON
/// spelled it (key order, `"required": false` vs absent) does not matter.
impl PartialEq for FieldDef {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.kind == o.kind
            && self.required == o.required
            && self.unique == o.unique
            && self.min == o.min
            && self.max == o.max
            && self.regex.as_ref().map(Regex::as_str) == o.regex.as_ref().map(Regex::as_str)
            && self.collection == o.collection
            && self.default == o.default
    }
}

/// One operation's permission: a keyword, or an expression in the filter language
/// (`docs/filters.md`) over the record's own fields and `@request.*` (`docs/auth.md`).
#[derive(Clone, Debug)]
pub enum Permission {
    Keyword(Rule),
    Expression(Arc<RuleExpression>),
}

/// A permission expression, checked against its collection's fields when the definition was
/// loaded.
#[derive(Debug)]
pub struct RuleExpression {
    /// As written in the definition.
    pub source: String,
    pub filter: Arc<Filter>,
}

/// Expressions are equal when they read the same.
impl PartialEq for RuleExpression {
    fn eq(&self, other: &RuleExpression) -> bool {
        self.source == other.source
    }
}

impl Eq for RuleExpression {}

impl Permission {
    pub const PUBLIC: Permission = Permission::Keyword(Rule::Public);

    /// The keyword, if this is one.
    pub fn keyword(&self) -> Option<Rule> {
        match self {
            Permission::Keyword(r) => Some(*r),
            Permission::Expression(_) => None,
        }
    }

    /// As written in a definition: the keyword or the expression's text.
    pub fn as_str(&self) -> &str {
        match self {
            Permission::Keyword(r) => r.as_str(),
            Permission::Expression(e) => &e.source,
        }
    }
}

/// Two permissions are the same when they read the same (what the migration planner compares).
impl PartialEq for Permission {
    fn eq(&self, other: &Permission) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<Rule> for Permission {
    fn from(r: Rule) -> Permission {
        Permission::Keyword(r)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Permissions {
    pub create: Permission,
    pub read: Permission,
    pub update: Permission,
    pub delete: Permission,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            create: Permission::PUBLIC,
            read: Permission::PUBLIC,
            update: Permission::PUBLIC,
            delete: Permission::PUBLIC,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CollectionDef {
    pub name: String,
    pub fields: Vec<FieldDef>,
    pub permissions: Permissions,
    /// `"indexes"`, in a canonical order (by name), so reordering them changes nothing.
    pub indexes: Vec<IndexDef>,
}

impl CollectionDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A definition that passed validation, with the JSON it came from and any warnings.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub def: CollectionDef,
    pub raw: Value,
    pub warnings: Vec<String>,
}

const NAME_PATTERN: &str = "^[a-z][a-z0-9_]*$";
const TOP_KEYS: &[&str] = &["name", "fields", "permissions", "indexes"];
const FIELD_KEYS: &[&str] = &[
    "name",
    "type",
    "required",
    "unique",
    "min",
    "max",
    "regex",
    "collection",
    "default",
    "renamedFrom",
];
const PERMISSION_KEYS: &[&str] = &["create", "read", "update", "delete"];
/// Collection names that would collide with Bakend's own routes or tables.
const RESERVED_COLLECTIONS: &[&str] = &["users", "auth", "storage", "admin", "realtime"];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The collection name in a definition, if it has a string one (used to name errors).
pub fn name_of(raw: &Value) -> Option<&str> {
    raw.get("name").and_then(Value::as_str)
}

/// Validates a definition on its own. Relation targets are checked separately with
/// [`check_relations`], because they depend on what else exists.
pub fn parse(raw: &Value) -> Result<Parsed, Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let Some(obj) = raw.as_object() else {
        return Err(vec!["Collection definition must be a JSON object".into()]);
    };
    unknown_keys(obj, TOP_KEYS, "", &mut warnings);

    let name = match obj.get("name").and_then(Value::as_str) {
        Some(n) if !is_identifier(n) => {
            errors.push(format!("collection name \"{n}\" must match {NAME_PATTERN}"));
            n.to_string()
        }
        Some(n) if RESERVED_COLLECTIONS.contains(&n) => {
            errors.push(format!("Collection name \"{n}\" is reserved"));
            n.to_string()
        }
        Some(n) => n.to_string(),
        None => {
            errors.push("Collection definition must include a string \"name\"".into());
            String::new()
        }
    };

    let mut fields = Vec::new();
    match obj.get("fields") {
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(f) = parse_field(item, &mut errors, &mut warnings) {
                    if fields.iter().any(|o: &FieldDef| o.name == f.name) {
                        errors.push(format!("Duplicate field name \"{}\"", f.name));
                    } else {
                        fields.push(f);
                    }
                }
            }
            check_renames(&fields, &mut errors);
        }
        _ => errors.push("Collection fields must be an array".into()),
    }

    let permissions = parse_permissions(
        obj.get("permissions"),
        &filter_schema(&fields),
        &mut errors,
        &mut warnings,
    );
    let mut indexes = indexes::parse(obj.get("indexes"), &fields, &mut errors, &mut warnings);
    indexes.sort_by_key(|i| i.sql_name(""));

    if errors.is_empty() {
        Ok(Parsed {
            def: CollectionDef {
                name,
                fields,
                permissions,
                indexes,
            },
            raw: raw.clone(),
            warnings,
        })
    } else {
        Err(errors)
    }
}

fn parse_field(
    item: &Value,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<FieldDef> {
    let Some(obj) = item.as_object() else {
        errors.push("Each field must have a name and type".into());
        return None;
    };
    let (Some(name), Some(kind)) = (
        obj.get("name").and_then(Value::as_str),
        obj.get("type").and_then(Value::as_str),
    ) else {
        errors.push("Each field must have a name and type".into());
        return None;
    };
    let before = errors.len();
    unknown_keys(obj, FIELD_KEYS, &format!("field \"{name}\": "), warnings);
    if RecordLayout::is_reserved_name(name) {
        errors.push(format!("Field name \"{name}\" is reserved"));
    } else if !is_identifier(name) {
        errors.push(format!("field name \"{name}\" must match {NAME_PATTERN}"));
    }
    let Some(kind) = FieldType::parse(kind) else {
        errors.push(format!("Unsupported field type \"{kind}\""));
        return None;
    };

    let flag = |key: &str, errors: &mut Vec<String>| match obj.get(key) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(format!(
                "Field \"{name}\" option \"{key}\" must be true or false"
            ));
            false
        }
    };
    let required = flag("required", errors);
    let unique = flag("unique", errors);
    if unique && matches!(kind, FieldType::Json) {
        errors.push(format!("Field \"{name}\" does not support unique"));
    }

    let bound = |key: &str, errors: &mut Vec<String>| -> Option<f64> {
        let v = obj.get(key)?;
        if !kind.supports_bounds() {
            errors.push(format!("Field \"{name}\" does not support {key}"));
            return None;
        }
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                errors.push(format!(
                    "Field \"{name}\" option \"{key}\" must be a number"
                ));
                None
            }
        }
    };
    let min = bound("min", errors);
    let max = bound("max", errors);
    if let (Some(a), Some(b)) = (min, max)
        && a > b
    {
        errors.push(format!("Field \"{name}\" has min greater than max"));
    }

    let regex = match obj.get("regex") {
        None => None,
        Some(_) if !kind.is_textual() => {
            errors.push(format!("Field \"{name}\" does not support regex"));
            None
        }
        Some(Value::String(pattern)) => match Regex::new(pattern) {
            Ok(r) => Some(r),
            Err(_) => {
                errors.push(format!("Field \"{name}\" has invalid regex"));
                None
            }
        },
        Some(_) => {
            errors.push(format!("Field \"{name}\" has invalid regex"));
            None
        }
    };

    let collection = match (kind, obj.get("collection")) {
        (FieldType::Relation, Some(Value::String(c))) if !c.is_empty() => Some(c.clone()),
        (FieldType::Relation, _) => {
            errors.push(format!("Relation field \"{name}\" requires a collection"));
            None
        }
        (_, Some(_)) => {
            errors.push(format!("Field \"{name}\" does not support collection"));
            None
        }
        (_, None) => None,
    };

    let renamed_from = match obj.get("renamedFrom") {
        None => None,
        Some(Value::String(old)) if is_identifier(old) && old != name => Some(old.clone()),
        Some(_) => {
            errors.push(format!(
                "Field \"{name}\" option \"renamedFrom\" must be the field's previous name"
            ));
            None
        }
    };

    if errors.len() != before {
        return None;
    }
    let mut field = FieldDef {
        name: name.to_string(),
        kind,
        required,
        unique,
        min,
        max,
        regex,
        collection,
        default: None,
        renamed_from,
    };
    match obj.get("default") {
        None => {}
        Some(Value::Null) => {
            errors.push(format!("Field \"{name}\" has an invalid default: null"));
            return None;
        }
        Some(v) => match crate::records::validate::check_value(&field, Some(v)) {
            Ok(_) => field.default = Some(v.clone()),
            Err(errs) => {
                let why: Vec<String> = errs.into_iter().map(|e| e.message).collect();
                errors.push(format!(
                    "Field \"{name}\" has an invalid default: {}",
                    why.join(", ")
                ));
                return None;
            }
        },
    }
    Some(field)
}

/// A field may be renamed from a name no other field of the definition has, and two fields
/// cannot both claim the same previous name.
fn check_renames(fields: &[FieldDef], errors: &mut Vec<String>) {
    for (i, f) in fields.iter().enumerate() {
        let Some(old) = &f.renamed_from else { continue };
        if fields.iter().any(|o| &o.name == old) {
            errors.push(format!(
                "Field \"{}\" is renamed from \"{old}\", but a field \"{old}\" is also defined",
                f.name
            ));
        }
        if fields[..i]
            .iter()
            .any(|o| o.renamed_from.as_ref() == Some(old))
        {
            errors.push(format!("More than one field is renamed from \"{old}\""));
        }
    }
}

/// What a filter or permission expression may name in a collection with these fields.
pub(crate) fn filter_schema(fields: &[FieldDef]) -> Schema {
    let mut schema = Schema::new();
    for f in fields {
        if let Some(kind) = Kind::parse(f.kind.as_str()) {
            schema.add(&f.name, kind);
        }
    }
    schema
}

fn parse_permissions(
    v: Option<&Value>,
    schema: &Schema,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Permissions {
    let mut p = Permissions::default();
    let Some(v) = v else { return p };
    let Some(obj) = v.as_object() else {
        errors.push("Collection permissions must be an object".into());
        return p;
    };
    unknown_keys(obj, PERMISSION_KEYS, "permissions.", warnings);
    for (key, slot) in [
        ("create", &mut p.create),
        ("read", &mut p.read),
        ("update", &mut p.update),
        ("delete", &mut p.delete),
    ] {
        match obj.get(key) {
            None => {}
            Some(Value::String(s)) => match Rule::parse(s) {
                Some(rule) => *slot = Permission::Keyword(rule),
                None => match Filter::new(s, schema) {
                    Ok(filter) => {
                        *slot = Permission::Expression(Arc::new(RuleExpression {
                            source: s.clone(),
                            filter: Arc::new(filter),
                        }))
                    }
                    Err(e) => errors.push(format!(
                        "Permission \"{key}\" must be one of {} or a valid expression: {e}",
                        Rule::NAMES
                    )),
                },
            },
            Some(other) => errors.push(format!(
                "Permission \"{key}\" must be one of {} or an expression string, got {other}",
                Rule::NAMES
            )),
        }
    }
    p
}

fn unknown_keys(obj: &Map<String, Value>, known: &[&str], prefix: &str, out: &mut Vec<String>) {
    for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        out.push(format!(
            "unknown key {prefix}\"{k}\" is kept but has no effect"
        ));
    }
}

/// Checks that every relation points at `users` or a collection for which `exists` is true.
pub fn check_relations(
    def: &CollectionDef,
    exists: &dyn Fn(&str) -> bool,
) -> Result<(), Vec<String>> {
    let errors: Vec<String> = def
        .fields
        .iter()
        .filter_map(|f| {
            let target = f.collection.as_deref()?;
            (target != "users" && !exists(target)).then(|| {
                format!(
                    "Relation field \"{}\" references unknown collection \"{target}\"",
                    f.name
                )
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(v: Value) -> String {
        parse(&v)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.join("; "))
    }

    #[test]
    fn a_full_definition_parses() {
        let p = parse(&json!({
            "name": "posts",
            "fields": [
                {"name": "title", "type": "string", "required": true, "min": 1, "max": 200},
                {"name": "body", "type": "text", "regex": "^[a-z ]*$"},
                {"name": "slug", "type": "string", "unique": true},
                {"name": "author", "type": "relation", "collection": "users"},
                {"name": "user_id", "type": "string"}
            ],
            "permissions": {"create": "authenticated", "read": "public", "update": "owner", "delete": "owner"}
        }))
        .unwrap();
        assert_eq!(p.def.fields.len(), 5);
        assert_eq!(p.def.permissions.update, Permission::Keyword(Rule::Owner));
        assert_eq!(RecordLayout::of(&p.def).owner_field(), Some(4));
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn errors_use_spec_fragments() {
        assert!(
            errs(json!({"name": "Posts", "fields": []}))
                .contains("collection name \"Posts\" must match")
        );
        assert!(errs(json!({"name": "users", "fields": []})).contains("is reserved"));
        assert!(
            errs(json!({"name": "p", "fields": {}})).contains("Collection fields must be an array")
        );
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a"}]}))
                .contains("Each field must have a name and type")
        );
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "created_at", "type": "string"}]}))
                .contains("Field name \"created_at\" is reserved")
        );
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a", "type": "x"}]}))
                .contains("Unsupported field type \"x\"")
        );
        assert!(errs(json!({"name": "p", "fields": [{"name": "a", "type": "string"}, {"name": "a", "type": "text"}]})).contains("Duplicate field name \"a\""));
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a", "type": "boolean", "min": 1}]}))
                .contains("does not support min")
        );
        assert!(errs(json!({"name": "p", "fields": [{"name": "a", "type": "integer", "min": 5, "max": 1}]})).contains("min greater than max"));
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a", "type": "string", "regex": "("}]}))
                .contains("invalid regex")
        );
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a", "type": "json", "unique": true}]}))
                .contains("does not support unique")
        );
        assert!(
            errs(json!({"name": "p", "fields": [{"name": "a", "type": "relation"}]}))
                .contains("requires a collection")
        );
        assert!(
            errs(
                json!({"name": "p", "fields": [{"name": "a", "type": "string", "required": "yes"}]})
            )
            .contains("must be true or false")
        );
        assert!(
            errs(json!({"name": "p", "fields": [], "permissions": {"read": "bogus"}}))
                .contains("Permission \"read\" must be one of")
        );
    }

    #[test]
    fn equality_ignores_spelling() {
        let a = parse(&json!({"name": "p", "fields": [{"name": "a", "type": "string"}]})).unwrap();
        let b = parse(&json!({"fields": [{"type": "string", "required": false, "name": "a"}], "name": "p", "permissions": {}})).unwrap();
        assert_eq!(a.def, b.def);
    }

    #[test]
    fn unknown_keys_warn() {
        let p = parse(&json!({"name": "p", "fields": [{"name": "a", "type": "string", "requried": true}], "x": 1})).unwrap();
        assert_eq!(p.warnings.len(), 2);
    }
}
