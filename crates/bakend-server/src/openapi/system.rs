//! The routes that do not depend on collections: health, this document, auth, storage, the
//! realtime upgrade, the admin API and (when enabled) metrics. Each status listed is one the
//! handler in `routes/` can answer for that operation.

use serde_json::{Map, Value, json};

use super::components::{
    bearer_optional, bearer_required, empty_response, json_body, json_response, responses,
    schema_ref, with_links,
};

/// Adds the fixed paths. `metrics` says whether `GET /metrics` is served.
pub fn add(paths: &mut Map<String, Value>, metrics: bool) {
    health(paths);
    paths.insert("/api/openapi.json".into(), openapi());
    auth(paths);
    storage(paths);
    paths.insert("/api/realtime".into(), realtime());
    admin(paths);
    jobs(paths);
    if metrics {
        paths.insert("/metrics".into(), metrics_path());
    }
}

fn health(paths: &mut Map<String, Value>) {
    for (path, id) in [("/health", "health"), ("/", "root")] {
        paths.insert(
            path.into(),
            json!({
                "get": {
                    "operationId": id,
                    "tags": ["system"],
                    "summary": "Liveness and the server's version",
                    "security": [],
                    "responses": responses(vec![(200, json_response("Serving", schema_ref("Health")))], &[]),
                }
            }),
        );
    }
}

fn openapi() -> Value {
    json!({
        "get": {
            "operationId": "openapi",
            "tags": ["system"],
            "summary": "This document",
            "description": "Built on each request from the collections loaded at that moment.",
            "security": [],
            "responses": responses(vec![(200, json_response("OpenAPI 3.1", json!({ "type": "object" })))], &[]),
        }
    })
}

fn auth(paths: &mut Map<String, Value>) {
    let pair = |d: &str| json_response(d, schema_ref("AuthPair"));
    let refresh_body = json_body(json!({
        "type": "object",
        "required": ["refreshToken"],
        "properties": { "refreshToken": { "type": "string", "minLength": 1 } },
    }));
    paths.insert(
        "/api/auth/register".into(),
        post(
            "auth_register",
            "auth",
            "Create an account and sign in",
            json!({
                "security": [],
                "description": "The address's attempts are rate limited (`auth.rateLimit`).",
                "requestBody": json_body(schema_ref("NewAccount")),
                "responses": responses(vec![(201, pair("Signed up"))], &[400, 409, 413, 429, 503]),
            }),
        ),
    );
    paths.insert(
        "/api/auth/login".into(),
        post(
            "auth_login",
            "auth",
            "Sign in with email and password",
            json!({
                "security": [],
                "description": "The address's attempts are rate limited (`auth.rateLimit`).",
                "requestBody": json_body(schema_ref("Credentials")),
                "responses": responses(vec![(200, pair("Signed in"))], &[400, 401, 413, 429, 503]),
            }),
        ),
    );
    paths.insert(
        "/api/auth/refresh".into(),
        post(
            "auth_refresh",
            "auth",
            "Exchange a refresh token for a new pair",
            json!({
                "security": [],
                "description": "Refresh tokens are single-use; presenting a used one revokes its whole session family.",
                "requestBody": refresh_body.clone(),
                "responses": responses(vec![(200, pair("A new pair"))], &[400, 401, 413, 503]),
            }),
        ),
    );
    paths.insert(
        "/api/auth/logout".into(),
        post(
            "auth_logout",
            "auth",
            "End a session, or every session of the caller",
            json!({
                "security": bearer_optional(),
                "description": "`{\"refreshToken\": …}` ends that session. `{\"all\": true}` with a bearer token ends every session of the caller.",
                "requestBody": json_body(json!({
                    "type": "object",
                    "properties": {
                        "refreshToken": { "type": "string", "minLength": 1 },
                        "all": { "type": "boolean" },
                    },
                    "anyOf": [
                        { "required": ["refreshToken"] },
                        { "required": ["all"], "properties": { "all": { "const": true } } },
                    ],
                })),
                "responses": responses(vec![(204, empty_response("Signed out"))], &[400, 401, 413, 503]),
            }),
        ),
    );
    paths.insert(
        "/api/auth/me".into(),
        json!({
            "get": {
                "operationId": "auth_me",
                "tags": ["auth"],
                "summary": "The signed-in user",
                "security": bearer_required(),
                "responses": responses(vec![(200, json_response("The caller", json!({
                    "type": "object",
                    "required": ["user"],
                    "additionalProperties": false,
                    "properties": { "user": schema_ref("User") },
                })))], &[401]),
            }
        }),
    );
}

/// A POST operation: the common keys plus `rest`.
fn post(id: &str, tag: &str, summary: &str, rest: Value) -> Value {
    let mut op = json!({ "operationId": id, "tags": [tag], "summary": summary });
    if let (Some(o), Value::Object(r)) = (op.as_object_mut(), rest) {
        o.extend(r);
    }
    json!({ "post": op })
}

fn storage(paths: &mut Map<String, Value>) {
    paths.insert(
        "/api/storage/upload".into(),
        post(
            "storage_upload",
            "storage",
            "Upload a file",
            json!({
                "security": bearer_required(),
                "description": "`multipart/form-data` with a file part `file` (at most `storage.maxFileSize` bytes, not empty; larger is 400) and optionally `visibility`.",
                "requestBody": {
                    "required": true,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": { "type": "string", "format": "binary", "contentMediaType": "application/octet-stream" },
                                    "visibility": { "type": "string", "enum": ["public", "protected"], "default": "protected" },
                                },
                            },
                        }
                    },
                },
                "responses": responses(vec![(201, with_links(json_response("Stored", schema_ref("FileMeta")), json!({
                    "download": { "operationId": "storage_download", "parameters": { "id": "$response.body#/id" } },
                    "delete": { "operationId": "storage_delete", "parameters": { "id": "$response.body#/id" } },
                })))], &[400, 401, 503]),
            }),
        ),
    );
    let download = |id: &str, head: bool| {
        let content = if head {
            json!({ "description": "The file's headers, no body", "headers": file_headers() })
        } else {
            json!({
                "description": "The file",
                "headers": file_headers(),
                "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } },
            })
        };
        json!({
            "operationId": id,
            "tags": ["storage"],
            "summary": if head { "A file's headers" } else { "Download a file" },
            "description": "Public files: anyone. Protected files: the uploader and admins. One `Range` is honoured; `If-None-Match` and `If-Range` take the ETag.",
            "security": bearer_optional(),
            "parameters": [
                { "name": "Range", "in": "header", "schema": { "type": "string" }, "example": "bytes=0-99" },
                { "name": "If-None-Match", "in": "header", "schema": { "type": "string" } },
                { "name": "If-Range", "in": "header", "schema": { "type": "string" } },
            ],
            "responses": responses(vec![
                (200, content.clone()),
                (206, { let mut c = content; c["description"] = json!("The requested range (with `Content-Range`)"); c }),
                (304, empty_response("Not modified (the ETag matched)")),
                (416, empty_response("The range starts past the end (`Content-Range: bytes */<size>`)")),
            ], &[401, 403, 404]),
        })
    };
    paths.insert(
        "/api/storage/{id}".into(),
        json!({
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "get": download("storage_download", false),
            "head": download("storage_head", true),
            "delete": {
                "operationId": "storage_delete",
                "tags": ["storage"],
                "summary": "Delete a file (its uploader or an admin)",
                "security": bearer_required(),
                "responses": responses(vec![(204, empty_response("Deleted"))], &[401, 403, 404, 503]),
            },
        }),
    );
}

fn file_headers() -> Value {
    let s = json!({ "schema": { "type": "string" } });
    json!({
        "ETag": s,
        "Last-Modified": s,
        "Cache-Control": s,
        "Content-Disposition": s,
        "Content-Range": s,
    })
}

fn realtime() -> Value {
    json!({
        "get": {
            "operationId": "realtime",
            "tags": ["realtime"],
            "summary": "Open the realtime WebSocket",
            "description": "An HTTP/1.1 WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`). The protocol on the socket is in docs/websocket-api.md. A token that is present but not valid gives an anonymous connection that is told so.",
            "security": bearer_optional(),
            "parameters": [
                { "name": "token", "in": "query", "description": "An access token, for clients that cannot send headers (browsers).", "schema": { "type": "string" } },
                { "name": "since", "in": "query", "description": "`<epoch>:<seq>`: resume after this journal position.", "schema": { "type": "string" } },
            ],
            "responses": {
                "101": { "description": "Switching protocols: the socket speaks the realtime protocol" },
                "400": {
                    "description": "Not a valid WebSocket upgrade, or a malformed query string",
                    "content": { "text/plain": { "schema": { "type": "string" } } },
                },
            },
        }
    })
}

/// An admin GET/POST/PUT/PATCH/DELETE: needs an admin's token; 401 without one, 403 for
/// non-admins.
fn admin_op(
    id: &str,
    summary: &str,
    success: Vec<(u16, Value)>,
    errors: &[u16],
    extra: Value,
) -> Value {
    let all = [&[401, 403][..], errors].concat();
    let mut op = json!({
        "operationId": id,
        "tags": ["admin"],
        "summary": summary,
        "security": bearer_required(),
        "responses": responses(success, &all),
    });
    if let (Some(o), Value::Object(r)) = (op.as_object_mut(), extra) {
        o.extend(r);
    }
    op
}

fn items(schema: Value) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": { "items": { "type": "array", "items": schema } },
    })
}

fn paged(schema: Value) -> Value {
    json!({
        "type": "object",
        "required": ["items", "total"],
        "additionalProperties": false,
        "properties": {
            "items": { "type": "array", "items": schema },
            "total": { "type": "integer", "minimum": 0 },
        },
    })
}

/// `limit`/`offset` as the admin lists read them (JavaScript `parseInt`, clamped): anything is
/// accepted.
fn paging_parameters(max: u32) -> Value {
    json!([
        { "name": "limit", "in": "query", "description": format!("1–{max}; missing, 0 or not a number: the default."), "schema": { "type": "integer" } },
        { "name": "offset", "in": "query", "description": "Negative or not a number: 0.", "schema": { "type": "integer" } },
    ])
}

fn path_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }])
}

fn admin(paths: &mut Map<String, Value>) {
    let meta = || schema_ref("CollectionMeta");
    paths.insert(
        "/api/admin/collections".into(),
        json!({
            "get": admin_op("admin_collections_list", "Every collection, by name", vec![(200, json_response("Collections", items(meta())))], &[], json!({})),
            "post": admin_op(
                "admin_collections_create",
                "Define a new collection",
                vec![(201, with_links(json_response("Created", meta()), json!({
                    "get": { "operationId": "admin_collections_get", "parameters": { "name": "$response.body#/name" } },
                    "update": { "operationId": "admin_collections_update", "parameters": { "name": "$response.body#/name" } },
                    "delete": { "operationId": "admin_collections_delete", "parameters": { "name": "$response.body#/name" } },
                })))],
                &[400, 413, 503],
                json!({ "requestBody": json_body(schema_ref("CollectionDefinition")) }),
            ),
        }),
    );
    paths.insert(
        "/api/admin/collections/{name}".into(),
        json!({
            "parameters": path_param("name"),
            "get": admin_op("admin_collections_get", "One collection", vec![(200, json_response("The collection", meta()))], &[404], json!({})),
            "put": admin_op(
                "admin_collections_update",
                "Replace a definition and migrate the table (or, with `dryRun=true`, only say what that would do)",
                vec![(200, json_response("Updated; with `dryRun=true` the migration plan, and nothing changed", json!({
                    "oneOf": [meta(), schema_ref("MigrationPlan")],
                })))],
                &[400, 404, 413, 503],
                json!({
                    "description": "Records that block the change give 400 with one `details` entry per problem; `force=true` accepts what can be forced. `dryRun=true` runs the same checks and planner without applying anything and answers the plan, blockers included (200).",
                    "parameters": [
                        { "name": "force", "in": "query", "schema": { "type": "boolean" } },
                        { "name": "dryRun", "in": "query", "description": "Plan only: nothing is changed, no event is emitted.", "schema": { "type": "boolean" } },
                    ],
                    "requestBody": json_body(schema_ref("CollectionDefinition")),
                }),
            ),
            "delete": admin_op(
                "admin_collections_delete",
                "Drop a collection and its records",
                vec![(204, empty_response("Deleted"))],
                &[400, 404, 503],
                json!({ "description": "Refused (400) while a relation field of another collection points at it." }),
            ),
        }),
    );
    paths.insert(
        "/api/admin/users".into(),
        json!({
            "get": admin_op("admin_users_list", "Users, newest first", vec![(200, json_response("Users", paged(schema_ref("User"))))], &[],
                json!({ "parameters": paging_parameters(100) })),
        }),
    );
    paths.insert(
        "/api/admin/users/{id}".into(),
        json!({
            "parameters": path_param("id"),
            "patch": admin_op(
                "admin_users_set_role",
                "Change a user's role",
                vec![(200, json_response("The user", schema_ref("User")))],
                &[400, 404, 409, 413, 503],
                json!({
                    "description": "The last admin cannot be demoted (409).",
                    "requestBody": json_body(json!({
                        "type": "object",
                        "required": ["role"],
                        "properties": { "role": { "type": "string", "enum": ["admin", "authenticated", "public"] } },
                    })),
                }),
            ),
            "delete": admin_op(
                "admin_users_delete",
                "Delete a user, their sessions and their files",
                vec![(204, empty_response("Deleted"))],
                &[404, 409, 503],
                json!({ "description": "The last admin cannot be deleted (409)." }),
            ),
        }),
    );
    paths.insert(
        "/api/admin/storage".into(),
        json!({
            "get": admin_op("admin_storage_list", "Stored files, newest first", vec![(200, json_response("Files", paged(schema_ref("FileMeta"))))], &[],
                json!({ "parameters": paging_parameters(100) })),
        }),
    );
    paths.insert(
        "/api/admin/functions".into(),
        json!({
            "get": admin_op("admin_functions", "Loaded function triggers and their counters", vec![(200, json_response("Triggers", items(schema_ref("FunctionTrigger"))))], &[], json!({})),
        }),
    );
    paths.insert(
        "/api/admin/logs".into(),
        json!({
            "get": admin_op("admin_logs", "Recent log entries, oldest first", vec![(200, json_response("Entries", items(schema_ref("LogEntry"))))], &[400], json!({
                "parameters": [
                    { "name": "limit", "in": "query", "description": "The last `limit` entries, 1–500 (default 100).", "schema": { "type": "integer" } },
                    { "name": "level", "in": "query", "description": "Entries at or above this level.", "schema": { "type": "string", "enum": ["DEBUG", "INFO", "WARN", "ERROR"] } },
                ],
            })),
        }),
    );
    paths.insert(
        "/api/admin/realtime".into(),
        json!({
            "get": admin_op("admin_realtime", "Realtime counters", vec![(200, json_response("Counters", schema_ref("RealtimeStats")))], &[], json!({})),
        }),
    );
}

fn jobs(paths: &mut Map<String, Value>) {
    let name_param = json!([{
        "name": "name",
        "in": "path",
        "required": true,
        "description": "The job name; `/` in it is sent as `%2F`.",
        "schema": { "type": "string" },
    }]);
    paths.insert(
        "/api/admin/jobs".into(),
        json!({
            "get": admin_op("admin_jobs_list", "Scheduled jobs", vec![(200, json_response("Jobs", items(schema_ref("Job"))))], &[], json!({})),
        }),
    );
    paths.insert(
        "/api/admin/jobs/{name}/runs".into(),
        json!({
            "parameters": name_param.clone(),
            "get": admin_op("admin_jobs_runs", "A job's run history, newest first", vec![(200, json_response("Runs", items(schema_ref("JobRun"))))], &[400, 404], json!({})),
        }),
    );
    paths.insert(
        "/api/admin/jobs/{name}/run".into(),
        json!({
            "parameters": name_param,
            "post": admin_op("admin_jobs_run", "Run a job now and wait for it", vec![(200, json_response("The finished run", schema_ref("JobRun")))], &[400, 404, 409, 503],
                json!({ "description": "Also accepts the local token of `bak jobs run` (docs/jobs.md). 409 while the job is running." })),
        }),
    );
}

fn metrics_path() -> Value {
    json!({
        "get": {
            "operationId": "metrics",
            "tags": ["system"],
            "summary": "Prometheus metrics",
            "description": "Needs the configured scrape token (`metrics.token`) or an admin's access token.",
            "security": bearer_required(),
            "responses": responses(vec![(200, json!({
                "description": "Prometheus text exposition format",
                "content": { "text/plain": { "schema": { "type": "string" } } },
            }))], &[401, 403]),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Route;

    /// The fixed routes are described by hand; this keeps the description and the route table
    /// in step: every route the table serves (but the per-collection ones, described from the
    /// registry) has its path in the document.
    #[test]
    fn every_fixed_route_in_the_table_is_described() {
        let mut paths = Map::new();
        add(&mut paths, true);
        for route in Route::ALL {
            // The dashboard serves files for browsers, not an API (docs/dashboard.md).
            if matches!(
                route,
                Route::Other | Route::Collection | Route::Record | Route::Dashboard
            ) {
                continue;
            }
            let path: Vec<String> = route
                .template()
                .split('/')
                .map(|seg| match seg.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => seg.to_string(),
                })
                .collect();
            let path = path.join("/");
            assert!(paths.contains_key(&path), "{path} is not in the document");
        }
    }
}
