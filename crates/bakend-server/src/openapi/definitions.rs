//! The body of `POST/PUT /api/admin/collections`: a collection definition (docs/rest-api.md,
//! "Defining a collection"). A field definition is one of a few shapes chosen by its `type`,
//! each with the options that type takes, so generated definitions are mostly ones the server
//! accepts. What the shapes cannot say (min ≤ max, a default within the limits, names not
//! reserved or taken) is in the descriptions; the server answers 400 for it.

use serde_json::{Map, Value, json};

use super::components::schema_ref;

const NAME_PATTERN: &str = "^[a-z][a-z0-9_]*$";

/// `CollectionDefinition` and `FieldDefinition`. `targets` are the collections a relation may
/// point at now (`users` and every loaded collection).
pub fn add(schemas: &mut Map<String, Value>, targets: &[&str]) {
    schemas.insert("CollectionDefinition".into(), collection());
    schemas.insert("FieldDefinition".into(), field(targets));
}

fn collection() -> Value {
    let rule = json!({ "type": "string", "enum": ["public", "authenticated", "owner", "admin"], "default": "public" });
    json!({
        "type": "object",
        "description": "A collection definition. Unknown keys are kept and logged as warnings.",
        "required": ["name", "fields"],
        "properties": {
            "name": {
                "type": "string",
                "pattern": NAME_PATTERN,
                "description": "Not `users`, `auth`, `storage`, `admin` or `realtime`, nor a name in use.",
            },
            "fields": {
                "type": "array",
                "description": "Field names are unique within a definition.",
                "items": schema_ref("FieldDefinition"),
            },
            "permissions": {
                "type": "object",
                "properties": { "create": rule, "read": rule, "update": rule, "delete": rule },
            },
            "indexes": {
                "type": "array",
                "description": "Indexes beyond the ones every collection has (see docs/rest-api.md).",
                "items": {
                    "type": "object",
                    "required": ["fields"],
                    "properties": {
                        "fields": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 8,
                            "description": "Field names or `id`, `createdAt`, `updatedAt`; `-` in front for descending.",
                            "items": { "type": "string" },
                        },
                        "unique": { "type": "boolean", "default": false },
                    },
                },
            },
        },
    })
}

fn field(targets: &[&str]) -> Value {
    let bound = |what: &str| json!({ "type": "number", "description": what });
    let textual = variant(
        &["string", "text"],
        json!({
            "min": bound("Least length in characters."),
            "max": bound("Greatest length in characters; not below `min`."),
            "regex": { "type": "string", "description": "Rust `regex` syntax, matched anywhere in the value." },
            "default": { "type": "string" },
        }),
    );
    let numeric = variant(
        &["integer", "float"],
        json!({
            "min": bound("Least value."),
            "max": bound("Greatest value; not below `min`."),
            "default": { "type": "number" },
        }),
    );
    let boolean = variant(&["boolean"], json!({ "default": { "type": "boolean" } }));
    let datetime = variant(
        &["datetime"],
        json!({ "default": { "type": "string", "format": "date-time" } }),
    );
    let relation = variant(
        &["relation"],
        json!({
            "collection": { "type": "string", "enum": targets, "description": "`users` or a collection." },
            "default": { "type": "string" },
        }),
    );
    let mut relation = relation;
    relation["required"] = json!(["name", "type", "collection"]);
    let file = variant(&["file"], json!({ "default": { "type": "string" } }));
    let mut json_field = variant(
        &["json"],
        json!({ "default": { "type": ["object", "array"] } }),
    );
    // `unique` is not offered on json.
    if let Some(p) = json_field["properties"].as_object_mut() {
        p.remove("unique");
    }
    json!({
        "description": "A field. A field `user_id` of type string or relation makes the collection owned (the `owner` rule). `default` is given to records created without the field and must be a valid value of it.",
        "oneOf": [textual, numeric, boolean, datetime, json_field, relation, file],
    })
}

/// One shape of field definition: the common options plus `options`, for these types.
fn variant(types: &[&str], options: Value) -> Value {
    let mut props = json!({
        "name": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Not `id`, `created_at` or `updated_at`.",
        },
        "type": { "type": "string", "enum": types },
        "required": { "type": "boolean", "default": false },
        "unique": { "type": "boolean", "default": false },
        "renamedFrom": { "type": "string", "pattern": NAME_PATTERN, "description": "The field's previous name: a migration renames the column and keeps its data." },
    });
    if let (Some(p), Value::Object(o)) = (props.as_object_mut(), options) {
        p.extend(o);
    }
    json!({ "type": "object", "required": ["name", "type"], "properties": props })
}
