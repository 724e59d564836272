//! The parts of the document every route shares: the error envelope and one response per error
//! status (as `error.rs` writes them), the fixed object shapes (users, token pairs, files,
//! collections, jobs…), the bearer scheme, and small builders for operations.

use serde_json::{Map, Value, json};

/// `{"$ref": "#/components/schemas/<name>"}`.
pub fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON request body with this schema.
pub fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// A JSON response. The server sends `application/json;charset=utf-8`; the media type key names
/// the type without parameters, as OpenAPI matches it.
pub fn json_response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    })
}

/// A response with `links` (OpenAPI link objects to follow-up operations).
pub fn with_links(mut response: Value, links: Value) -> Value {
    response["links"] = links;
    response
}

/// A response without a body (204, 304, 101…).
pub fn empty_response(description: &str) -> Value {
    json!({ "description": description })
}

/// Error statuses with the component response that documents each (see `error_responses`).
const ERRORS: &[(u16, &str)] = &[
    (400, "BadRequest"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "NotFound"),
    (409, "Conflict"),
    (413, "PayloadTooLarge"),
    (429, "TooManyRequests"),
    (503, "Unavailable"),
];

/// An operation's `responses`: its successes, then a reference to the shared error response for
/// each error status it can produce.
pub fn responses(success: Vec<(u16, Value)>, errors: &[u16]) -> Value {
    let mut out = Map::new();
    for (status, r) in success {
        out.insert(status.to_string(), r);
    }
    for status in errors {
        if let Some((_, name)) = ERRORS.iter().find(|(s, _)| s == status) {
            out.insert(
                status.to_string(),
                json!({ "$ref": format!("#/components/responses/{name}") }),
            );
        }
    }
    Value::Object(out)
}

/// `security` for an operation that needs a signed-in caller.
pub fn bearer_required() -> Value {
    json!([{ "bearerAuth": [] }])
}

/// `security` for an operation anyone may call; a token, when sent, identifies the caller.
pub fn bearer_optional() -> Value {
    json!([{}, { "bearerAuth": [] }])
}

pub fn security_schemes() -> Value {
    json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from `POST /api/auth/register`, `/login` or `/refresh`. A missing, expired or revoked token makes the caller anonymous: public operations still work, the others answer 401.",
        }
    })
}

/// One response per error status, each with the envelope `{"error":{"code","message"[,"details"]}}`.
pub fn error_responses() -> Value {
    let retry_after = json!({
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": { "type": "integer", "minimum": 0 },
        }
    });
    let mut out = Map::new();
    for (status, name) in ERRORS {
        let description = match status {
            400 => {
                "`bad_request` (a malformed body, query or parameter) or `validation_error` (field rules; `details` lists every failing field)"
            }
            401 => "`unauthorized`: a signed-in caller is needed, or the credentials are wrong",
            403 => "`forbidden`: the caller is signed in but not allowed",
            404 => "`not_found`",
            409 => "`conflict`",
            413 => "`payload_too_large`: the JSON body is larger than `api.maxBodyBytes`",
            429 => "`too_many_requests`: too many attempts from this address",
            _ => "`unavailable`: the server is shutting down or busy",
        };
        let mut r = json_response(description, schema_ref("Error"));
        if matches!(status, 429 | 503) {
            r["headers"] = retry_after.clone();
        }
        out.insert(name.to_string(), r);
    }
    Value::Object(out)
}

/// The fixed shapes: the error envelope and what the auth, storage and admin routes return.
pub fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    s.insert("Error".into(), error_schema());
    s.insert("FieldError".into(), field_error_schema());
    s.insert("User".into(), user_schema());
    s.insert("AuthPair".into(), auth_pair_schema());
    s.insert("Credentials".into(), credentials_schema(false));
    s.insert("NewAccount".into(), credentials_schema(true));
    s.insert("FileMeta".into(), file_meta_schema());
    s.insert("CollectionMeta".into(), collection_meta_schema());
    s.insert("MigrationPlan".into(), migration_plan_schema());
    s.insert("LogEntry".into(), log_entry_schema());
    s.insert("FunctionTrigger".into(), function_trigger_schema());
    s.insert("Job".into(), job_schema());
    s.insert("JobRun".into(), job_run_schema());
    s.insert("RealtimeStats".into(), realtime_stats_schema());
    s.insert("Health".into(), health_schema());
    s
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer of the API (crates/bakend-server/src/error.rs).",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": false,
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Machine-readable: `bad_request`, `validation_error`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`, `too_many_requests`, `unavailable`, `internal_error`.",
                    },
                    "message": { "type": "string" },
                    "details": {
                        "type": "array",
                        "description": "Present for `validation_error` (every failing field, in definition order) and for a collection change that existing records block.",
                        "items": schema_ref("FieldError"),
                    },
                },
            }
        },
    })
}

fn field_error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["field", "rule", "message"],
        "additionalProperties": false,
        "properties": {
            "field": { "type": "string" },
            "rule": {
                "type": "string",
                "description": "`required`, `type`, `min`, `max`, `regex`, `exists`, `owner`, `unique`; for a blocked collection change also `convert` and `lost`.",
            },
            "message": { "type": "string" },
        },
    })
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "email", "role", "createdAt"],
        "additionalProperties": false,
        "properties": {
            "id": { "type": "string" },
            "email": { "type": "string" },
            "role": { "type": "string", "enum": ["admin", "authenticated", "public"] },
            "createdAt": { "type": "string", "format": "date-time" },
        },
    })
}

fn auth_pair_schema() -> Value {
    json!({
        "type": "object",
        "required": ["token", "refreshToken", "user"],
        "additionalProperties": false,
        "properties": {
            "token": { "type": "string", "description": "Access token (JWT, HS256); send it as `Authorization: Bearer <token>`." },
            "refreshToken": { "type": "string", "description": "Single-use: `POST /api/auth/refresh` exchanges it for a new pair." },
            "user": schema_ref("User"),
        },
    })
}

/// `{"email","password"}`; a new account's password has rules (`register`).
fn credentials_schema(register: bool) -> Value {
    let password = if register {
        json!({ "type": "string", "minLength": 8, "description": "At least 8 characters, at most 1024 bytes." })
    } else {
        json!({ "type": "string", "minLength": 1 })
    };
    json!({
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": { "type": "string", "format": "email", "description": "Trimmed and lower-cased; one account per address." },
            "password": password,
        },
    })
}

fn file_meta_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "filename", "mimeType", "size", "visibility", "userId", "createdAt"],
        "additionalProperties": false,
        "properties": {
            "id": { "type": "string" },
            "filename": { "type": "string" },
            "mimeType": { "type": "string" },
            "size": { "type": "integer", "minimum": 0 },
            "visibility": { "type": "string", "enum": ["public", "protected"] },
            "userId": { "type": "string" },
            "createdAt": { "type": "string", "format": "date-time" },
        },
    })
}

fn collection_meta_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "definition", "createdAt", "updatedAt"],
        "additionalProperties": false,
        "properties": {
            "name": { "type": "string" },
            "definition": { "type": "object", "description": "The definition exactly as submitted (key order and unknown keys kept)." },
            "createdAt": { "type": "string", "format": "date-time" },
            "updatedAt": { "type": "string", "format": "date-time" },
        },
    })
}

/// The answer of `PUT /api/admin/collections/:name?dryRun=true` (docs/admin-api.md).
fn migration_plan_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "dryRun", "outcome", "changes", "rebuild", "blockers"],
        "additionalProperties": false,
        "properties": {
            "name": { "type": "string" },
            "dryRun": { "const": true },
            "outcome": { "type": "string", "enum": ["unchanged", "ready", "needsForce", "blocked"] },
            "changes": { "type": "array", "items": { "type": "string" } },
            "rebuild": { "type": "boolean", "description": "The table would be rebuilt (every row copied)." },
            "blockers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "rule", "problem", "count", "samples", "force", "message"],
                    "additionalProperties": false,
                    "properties": {
                        "field": { "type": "string" },
                        "rule": { "type": "string", "description": "`convert`, `required`, `min`, `max`, `regex`, `lost` or `unique`" },
                        "problem": { "type": "string" },
                        "count": { "type": "integer", "minimum": 1 },
                        "samples": { "type": "array", "items": { "type": "string" } },
                        "force": { "type": ["string", "null"], "description": "What `force=true` does about it; null when forcing cannot help." },
                        "message": { "type": "string" },
                    },
                },
            },
        },
    })
}

fn log_entry_schema() -> Value {
    json!({
        "type": "object",
        "required": ["timestamp", "level", "message"],
        "properties": {
            "timestamp": { "type": "string", "format": "date-time" },
            "level": { "type": "string", "enum": ["DEBUG", "INFO", "WARN", "ERROR"] },
            "message": { "type": "string" },
        },
    })
}

fn function_trigger_schema() -> Value {
    json!({
        "type": "object",
        "required": ["collection", "type", "eventType", "filePath", "invocations", "failures"],
        "properties": {
            "collection": { "type": ["string", "null"] },
            "type": { "type": "string", "description": "`create`, `update`, `delete`, `login`, `register`, `logout` or `event`." },
            "eventType": { "type": "string" },
            "filePath": { "type": "string" },
            "invocations": { "type": "integer", "minimum": 0 },
            "failures": { "type": "integer", "minimum": 0 },
        },
    })
}

fn job_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "schedule", "filePath", "timezone", "nextRun", "running"],
        "properties": {
            "name": { "type": "string" },
            "schedule": { "type": "string" },
            "filePath": { "type": "string" },
            "timezone": { "type": "string" },
            "nextRun": { "type": ["string", "null"], "format": "date-time" },
            "running": { "type": "boolean" },
        },
    })
}

fn job_run_schema() -> Value {
    json!({
        "type": "object",
        "required": ["runId", "job", "status", "attempt", "trigger", "startedAt"],
        "properties": {
            "runId": { "type": "string" },
            "job": { "type": "string" },
            "status": { "type": "string", "enum": ["running", "completed", "failed"] },
            "attempt": { "type": "integer", "minimum": 0 },
            "trigger": { "type": "string" },
            "startedAt": { "type": "string", "format": "date-time" },
            "endedAt": { "type": "string", "format": "date-time" },
            "durationMs": { "type": "integer", "minimum": 0 },
            "error": { "type": "string" },
            "node": { "type": "string", "description": "The node that ran it (several servers on PostgreSQL)" },
        },
    })
}

fn realtime_stats_schema() -> Value {
    let counter = json!({ "type": "integer", "minimum": 0 });
    let mut props = Map::new();
    for key in [
        "connections",
        "subscriptions",
        "eventsIn",
        "framesOut",
        "eventsInPerSecond",
        "framesOutPerSecond",
        "slowConsumerCloses",
        "tokenExpiredCloses",
        "queueHighWater",
        "queueCapacity",
    ] {
        props.insert(key.into(), counter.clone());
    }
    props.insert("deliveryWaitTimeouts".into(), counter.clone());
    let mut cluster = Map::new();
    cluster.insert(
        "nats".into(),
        json!({ "type": "string", "enum": ["connected", "disconnected", "off"] }),
    );
    for key in [
        "published",
        "received",
        "filledFromJournal",
        "unreadable",
        "dropped",
    ] {
        cluster.insert(key.into(), counter.clone());
    }
    props.insert(
        "cluster".into(),
        json!({
            "type": "object",
            "description": "How events travel between nodes (docs/cluster.md).",
            "properties": cluster,
        }),
    );
    let mut node = props.clone();
    node.insert("id".into(), json!({ "type": "string" }));
    props.insert(
        "node".into(),
        json!({ "type": "string", "description": "The node that answered." }),
    );
    props.insert(
        "nodes".into(),
        json!({
            "type": "array",
            "description": "Each live node's own counters (the others' as of their last heartbeat).",
            "items": { "type": "object", "required": ["id"], "properties": node },
        }),
    );
    json!({
        "type": "object",
        "description": "Counters of the realtime hub: the totals of every live node of the cluster (one node on SQLite), and each node's own in `nodes` (docs/realtime.md, docs/cluster.md).",
        "properties": props,
    })
}

fn health_schema() -> Value {
    json!({
        "type": "object",
        "required": ["status", "version"],
        "additionalProperties": false,
        "properties": {
            "status": { "type": "string", "enum": ["ok"] },
            "version": { "type": "string" },
        },
    })
}
