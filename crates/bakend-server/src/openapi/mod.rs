//! `GET /api/openapi.json`: an OpenAPI 3.1 description of this server, so users can generate
//! clients. It is built on each request from the collections loaded at that moment (they change
//! at runtime through the admin API); building it is a walk over a few definitions, cheaper than
//! keeping a cache in step.
//!
//! Parts: `components` (the error envelope, fixed shapes, builders), `system` (routes that do
//! not depend on collections), `collections` (one collection's schemas and operations),
//! `definitions` (the collection definitions the admin API takes). A new
//! route or list parameter goes into the part it belongs to; every status an operation lists
//! must be one its handler can answer (`scripts/schemathesis.sh` checks this against a live
//! server).

mod collections;
mod components;
mod definitions;
mod system;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::response::json_response;
use crate::routes::table::SYSTEM_SEGMENTS;
use crate::state::AppState;

/// `GET /api/openapi.json`, served without a token.
pub fn handle(state: &AppState, method: &Method) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    Ok(json_response(StatusCode::OK, &document(state)))
}

/// The whole document for the server as it is now.
pub fn document(state: &AppState) -> Value {
    let mut paths = Map::new();
    system::add(&mut paths, state.config.metrics.enabled);
    let mut schemas = components::schemas();
    // A name the system routes shadow (possible only in an old database) has no REST API.
    let mut loaded = state.records.registry().all();
    loaded.retain(|c| !SYSTEM_SEGMENTS.contains(&c.name()));
    for c in &loaded {
        collections::add(c, &state.config.api, &mut paths, &mut schemas);
    }
    let targets: Vec<&str> = std::iter::once("users")
        .chain(loaded.iter().map(|c| c.name()))
        .collect();
    definitions::add(&mut schemas, &targets);
    let mut tags = vec![
        json!({ "name": "system" }),
        json!({ "name": "auth", "description": "Accounts and sessions (docs/auth.md)" }),
        json!({ "name": "storage", "description": "Files (docs/storage.md)" }),
        json!({ "name": "realtime", "description": "WebSocket subscriptions (docs/websocket-api.md)" }),
        json!({ "name": "admin", "description": "Admin API (docs/admin-api.md): an admin's token" }),
    ];
    tags.extend(
        loaded
            .iter()
            .map(|c| json!({ "name": c.name(), "description": format!("Records of the `{}` collection", c.name()) })),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bakend",
            "version": bakend_core::VERSION,
            "description": "The REST API of this Bakend server, generated from its loaded collections. Errors are `{\"error\":{\"code\",\"message\"[,\"details\"]}}`.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": components::error_responses(),
            "securitySchemes": components::security_schemes(),
        },
    })
}
