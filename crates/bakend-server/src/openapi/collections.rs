//! One collection's part of the document: its record, create, update and list schemas (from
//! the field definitions: types, required, limits, defaults) and its five REST operations, with
//! the 401/403 answers its permission rules can give.
//!
//! Limits (`min`, `max`, `regex`) go on the request schemas only: a record may hold a value from
//! before a rule was tightened (a forced migration keeps it), so the record schema promises
//! types, not rules.

use bakend_auth::{Operation, Permission, Rule};
use bakend_core::config::ApiConfig;
use bakend_store::{Collection, FieldDef, FieldType};
use serde_json::{Map, Value, json};

use super::components::{
    bearer_optional, bearer_required, empty_response, json_body, json_response, responses,
    schema_ref, with_links,
};

/// What a field schema describes: a value the server returns, or one a client sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Usage {
    Read,
    Create,
    Update,
}

/// Component schema names of a collection. Collection names are `[a-z][a-z0-9_]*`, so these
/// never meet each other (the suffix has no `_`) nor the fixed schemas (which are capitalised).
fn name(c: &Collection, suffix: &str) -> String {
    format!("{}_{suffix}", c.name())
}

/// Adds the collection's schemas and paths.
pub fn add(
    c: &Collection,
    api: &ApiConfig,
    paths: &mut Map<String, Value>,
    schemas: &mut Map<String, Value>,
) {
    schemas.insert(name(c, "record"), record_schema(c));
    schemas.insert(name(c, "create"), input_schema(c, Usage::Create));
    schemas.insert(name(c, "update"), input_schema(c, Usage::Update));
    schemas.insert(name(c, "list"), list_schema(c));
    paths.insert(format!("/api/{}", c.name()), collection_path(c, api));
    paths.insert(format!("/api/{}/{{id}}", c.name()), record_path(c));
}

fn record_schema(c: &Collection) -> Value {
    let mut props = Map::new();
    props.insert("id".into(), json!({ "type": "string" }));
    props.insert(
        "createdAt".into(),
        json!({ "type": "string", "format": "date-time" }),
    );
    props.insert(
        "updatedAt".into(),
        json!({ "type": "string", "format": "date-time" }),
    );
    for f in &c.def.fields {
        props.insert(f.name.clone(), field_schema(c, f, Usage::Read));
    }
    let required: Vec<&String> = props.keys().collect();
    json!({
        "type": "object",
        "description": format!("A record of `{}`: the system fields, then every field in definition order (a field without a value is `null`).", c.name()),
        "required": required,
        "additionalProperties": false,
        "properties": props,
    })
}

/// The body of a create (`Create`) or a partial update (`Update`). Unknown keys, and `id`,
/// `createdAt`, `updatedAt`, are ignored by the server.
fn input_schema(c: &Collection, usage: Usage) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (i, f) in c.def.fields.iter().enumerate() {
        props.insert(f.name.clone(), field_schema(c, f, usage));
        let owner = c.layout.owner_field() == Some(i);
        if usage == Usage::Create && f.required && f.default.is_none() && !owner {
            required.push(f.name.clone());
        }
    }
    let description = match usage {
        Usage::Create => format!(
            "A new record of `{}`. A field left out gets its `default` (or `null`).",
            c.name()
        ),
        _ => format!(
            "A partial update of a `{}` record: only the fields present are written; `null` clears a field.",
            c.name()
        ),
    };
    let mut s = json!({ "type": "object", "description": description, "properties": props });
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

fn list_schema(c: &Collection) -> Value {
    // -1 when the request said `skipTotal=true`.
    let count = json!({ "type": "integer", "minimum": -1 });
    json!({
        "type": "object",
        "required": ["items", "page", "perPage", "totalItems", "totalPages", "next"],
        "additionalProperties": false,
        "properties": {
            "items": { "type": "array", "items": schema_ref(&name(c, "record")) },
            "page": { "type": "integer", "minimum": 1 },
            "perPage": { "type": "integer", "minimum": 1 },
            "totalItems": count,
            "totalPages": count,
            "next": {
                "type": ["string", "null"],
                "description": "Cursor for the next page in the default order (pass it as `after`); null on the last page and with `sort`.",
            },
        },
    })
}

/// The JSON Schema of one field's value.
fn field_schema(c: &Collection, f: &FieldDef, usage: Usage) -> Value {
    let mut s = Map::new();
    let owner = c
        .layout
        .owner_field()
        .is_some_and(|i| c.def.fields.get(i).is_some_and(|o| o.name == f.name));
    // An absent value is `null`. A required field never holds one; on create the owner field
    // may be sent as anything (the server fills it in).
    let nullable = !f.required || (usage == Usage::Create && owner);
    let mut types: Vec<&str> = match f.kind {
        FieldType::String
        | FieldType::Text
        | FieldType::Datetime
        | FieldType::Relation
        | FieldType::File => vec!["string"],
        FieldType::Integer => vec!["integer"],
        FieldType::Float => vec!["number"],
        FieldType::Boolean => vec!["boolean"],
        FieldType::Json => vec!["object", "array"],
    };
    if nullable {
        types.push("null");
    }
    s.insert(
        "type".into(),
        if types.len() == 1 {
            json!(types[0])
        } else {
            json!(types)
        },
    );
    match f.kind {
        FieldType::Datetime => {
            s.insert("format".into(), json!("date-time"));
        }
        FieldType::Integer => {
            s.insert("format".into(), json!("int64"));
        }
        FieldType::Float => {
            s.insert("format".into(), json!("double"));
        }
        _ => {}
    }
    if usage != Usage::Read {
        limits(f, &mut s);
        if usage == Usage::Create
            && let Some(d) = &f.default
        {
            s.insert("default".into(), d.clone());
        }
    }
    s.insert(
        "description".into(),
        json!(field_description(f, owner, usage)),
    );
    Value::Object(s)
}

/// `min`/`max`/`regex` as JSON Schema keywords; for text they count characters. A required
/// text field must not be empty (`""` counts as missing).
fn limits(f: &FieldDef, s: &mut Map<String, Value>) {
    match f.kind {
        FieldType::String | FieldType::Text => {
            let floor = if f.required { 1.0 } else { 0.0 };
            let min = f.min.unwrap_or(0.0).max(floor).ceil();
            if min > 0.0 {
                s.insert("minLength".into(), json!(min as u64));
            }
            if let Some(max) = f.max.filter(|m| *m >= 0.0) {
                s.insert("maxLength".into(), json!(max.floor() as u64));
            }
            if let Some(re) = &f.regex {
                s.insert("pattern".into(), json!(re.as_str()));
            }
        }
        FieldType::Integer | FieldType::Float => {
            if let Some(min) = f.min {
                s.insert("minimum".into(), number(min));
            }
            if let Some(max) = f.max {
                s.insert("maximum".into(), number(max));
            }
        }
        _ => {}
    }
}

/// A bound as a JSON number: integral bounds print without a fraction.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// What the schema keywords cannot say: uniqueness, targets, accepted spellings, ownership.
fn field_description(f: &FieldDef, owner: bool, usage: Usage) -> String {
    let mut d = format!("`{}` field.", f.kind.as_str());
    if f.required {
        d.push_str(" Required.");
    }
    if f.unique {
        d.push_str(" Unique: a value another record has is refused with 400 `validation_error` (rule `unique`).");
    }
    match f.kind {
        FieldType::Relation => {
            let target = f.collection.as_deref().unwrap_or("?");
            if target == "users" {
                d.push_str(" The id of a user.");
            } else {
                d.push_str(&format!(" The id of a `{target}` record."));
            }
        }
        FieldType::File => d.push_str(
            " The id of a stored file (`POST /api/storage/upload`) the writer uploaded (admins: any), or `\"\"`.",
        ),
        FieldType::Datetime if usage != Usage::Read => d.push_str(
            " RFC 3339 / ISO-8601 (without an offset: UTC), also `2024-01-01` and RFC 2822; stored as `2024-01-01T08:00:00.000Z`.",
        ),
        FieldType::Integer => d.push_str(" A number without a fraction (`3.0` is accepted)."),
        FieldType::Json => d.push_str(" An object or an array."),
        FieldType::String | FieldType::Text if f.regex.is_some() && usage != Usage::Read => {
            d.push_str(" `pattern` is Rust `regex` syntax, matched anywhere in the value.")
        }
        _ => {}
    }
    if owner {
        d.push_str(match usage {
            Usage::Create => " Owner: set by the server to the signed-in caller (admins may set it; anonymous creators get `null`).",
            Usage::Update => " Owner: only admins may change it (403 otherwise).",
            Usage::Read => " Owner: the user who created the record.",
        });
    }
    d
}

/// `/api/<c>`: list and create.
fn collection_path(c: &Collection, api: &ApiConfig) -> Value {
    let p = &c.def.permissions;
    let list_errors = [&[400][..], auth_errors(&p.read, Operation::List), &[404]].concat();
    let create_errors = [
        &[400][..],
        auth_errors(&p.create, Operation::Create),
        &[404, 413, 503],
    ]
    .concat();
    json!({
        "get": {
            "operationId": format!("{}_list", c.name()),
            "tags": [c.name()],
            "summary": format!("List `{}` records, one page at a time", c.name()),
            "description": rule_note(&p.read, Operation::List),
            "security": security(&p.read),
            "parameters": list_parameters(c, api),
            "responses": responses(
                vec![(200, json_response("A page of records", schema_ref(&name(c, "list"))))],
                &list_errors,
            ),
        },
        "post": {
            "operationId": format!("{}_create", c.name()),
            "tags": [c.name()],
            "summary": format!("Create a `{}` record", c.name()),
            "description": rule_note(&p.create, Operation::Create),
            "security": security(&p.create),
            "requestBody": json_body(schema_ref(&name(c, "create"))),
            "responses": responses(
                vec![(201, with_links(
                    json_response("The new record", schema_ref(&name(c, "record"))),
                    record_links(c),
                ))],
                &create_errors,
            ),
        },
    })
}

/// `/api/<c>/{id}`: get, update, delete.
fn record_path(c: &Collection) -> Value {
    let p = &c.def.permissions;
    let get_errors = [auth_errors(&p.read, Operation::Read), &[404]].concat();
    let mut update_auth = auth_errors(&p.update, Operation::Update).to_vec();
    if c.layout.has_owner() && !update_auth.contains(&403) {
        update_auth.push(403); // "Only admins can change user_id"
    }
    let update_errors = [&[400][..], &update_auth, &[404, 413, 503]].concat();
    let delete_errors = [auth_errors(&p.delete, Operation::Delete), &[404, 503]].concat();
    let record = || schema_ref(&name(c, "record"));
    json!({
        "parameters": [{
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The record id (`rec_…`).",
            "schema": { "type": "string" },
        }],
        "get": {
            "operationId": format!("{}_get", c.name()),
            "tags": [c.name()],
            "summary": format!("Get one `{}` record", c.name()),
            "description": rule_note(&p.read, Operation::Read),
            "security": security(&p.read),
            "responses": responses(vec![(200, json_response("The record", record()))], &get_errors),
        },
        "put": {
            "operationId": format!("{}_update", c.name()),
            "tags": [c.name()],
            "summary": format!("Update a `{}` record (partial)", c.name()),
            "description": format!("{} A body without any field of the collection returns the record unchanged.", rule_note(&p.update, Operation::Update)),
            "security": security(&p.update),
            "requestBody": json_body(schema_ref(&name(c, "update"))),
            "responses": responses(vec![(200, json_response("The updated record", record()))], &update_errors),
        },
        "delete": {
            "operationId": format!("{}_delete", c.name()),
            "tags": [c.name()],
            "summary": format!("Delete a `{}` record", c.name()),
            "description": rule_note(&p.delete, Operation::Delete),
            "security": security(&p.delete),
            "responses": responses(vec![(204, empty_response("Deleted"))], &delete_errors),
        },
    })
}

/// Links from a created record to the operations on it (clients and stateful testers follow
/// them with the new record's id).
fn record_links(c: &Collection) -> Value {
    let mut links = Map::new();
    for (link, op) in [("get", "get"), ("update", "update"), ("delete", "delete")] {
        links.insert(
            link.into(),
            json!({
                "operationId": format!("{}_{op}", c.name()),
                "parameters": { "id": "$response.body#/id" },
            }),
        );
    }
    Value::Object(links)
}

/// `page`, `perPage`, `sort`, `skipTotal`, `after`, `filter`.
fn list_parameters(c: &Collection, api: &ApiConfig) -> Value {
    let mut keys = vec!["id".to_string(), "createdAt".into(), "updatedAt".into()];
    keys.extend(c.def.fields.iter().map(|f| f.name.clone()));
    // As the server reads it: comma-separated, each part trimmed, empty parts skipped.
    let part = format!("\\s*([-+]?({}))?\\s*", keys.join("|"));
    json!([
        {
            "name": "page",
            "in": "query",
            "description": "1-based page number.",
            "schema": { "type": "integer", "minimum": 1, "maximum": u32::MAX, "default": 1 },
        },
        {
            "name": "perPage",
            "in": "query",
            "description": format!("Records per page; values above {} are lowered to it.", api.max_per_page),
            "schema": { "type": "integer", "minimum": 1, "maximum": u32::MAX, "default": api.default_per_page },
        },
        {
            "name": "sort",
            "in": "query",
            "description": format!("Comma-separated keys, `-` for descending: {}. Default `-createdAt`; ties are broken by `id`, in the direction of the last key. An unknown key is 400.", keys.join(", ")),
            "schema": { "type": "string", "pattern": format!("^{part}(,{part})*$") },
        },
        {
            "name": "skipTotal",
            "in": "query",
            "description": "Do not count: `totalItems` and `totalPages` are -1. Makes deep or filtered lists cheaper.",
            "schema": { "type": "boolean", "default": false },
        },
        {
            "name": "after",
            "in": "query",
            "description": "The `next` cursor of a previous page: the records after it in the default order (newest first). Not with `page` or `sort` (400).",
            "schema": { "type": "string" },
        },
        {
            "name": "filter",
            "in": "query",
            "description": format!("Only records matching this expression (docs/filters.md), e.g. `views > 10 && title ~ 'hello'`; fields: {}, plus `@request.auth.id|role|email` and `@now`. `totalItems` counts the matches; the read rule still applies. A bad expression is 400 with its position (`filter: unknown field \"vews\" at 1`).", keys.join(", ")),
            "schema": { "type": "string", "maxLength": bakend_filter::MAX_LENGTH },
        },
    ])
}

/// The 401/403 answers a rule can give a non-admin for an operation.
fn auth_errors(rule: &Permission, op: Operation) -> &'static [u16] {
    let Some(rule) = rule.keyword() else {
        // An expression: a list shows what it accepts; one record it rejects is 401 or 403.
        return match op {
            Operation::List => &[],
            _ => &[401, 403],
        };
    };
    match (rule, op) {
        (Rule::Public, _) => &[],
        (Rule::Authenticated, _) => &[401],
        // The owner rule lists the caller's own records and makes the caller the owner of
        // what they create: only an anonymous caller is refused.
        (Rule::Owner, Operation::List | Operation::Create) => &[401],
        (Rule::Owner, _) | (Rule::Admin, _) => &[401, 403],
    }
}

fn security(rule: &Permission) -> Value {
    match rule.keyword() {
        Some(Rule::Public) | None => bearer_optional(),
        _ => bearer_required(),
    }
}

fn rule_note(rule: &Permission, op: Operation) -> String {
    let Some(keyword) = rule.keyword() else {
        let what = match op {
            Operation::List => "lists show only the records it accepts for the caller",
            Operation::Create => "the record as it would be stored must match it",
            _ => "the record must match it for the caller",
        };
        return format!(
            "Permission expression `{}`: {what} (admins always; docs/auth.md).",
            rule.as_str()
        );
    };
    let who = match (keyword, op) {
        (Rule::Public, _) => "anyone",
        (Rule::Authenticated, _) => "any signed-in user",
        (Rule::Owner, Operation::List) => "signed-in users, who see their own records",
        (Rule::Owner, Operation::Create) => "signed-in users, who become the owner",
        (Rule::Owner, _) => "the record's owner",
        (Rule::Admin, _) => "admins only",
    };
    format!("Permission `{}`: {who} (admins always).", rule.as_str())
}
