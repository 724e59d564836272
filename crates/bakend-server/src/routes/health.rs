//! `GET /` and `GET /health`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::response::json_response;

pub fn health(method: &Method) -> Response {
    if method == Method::GET {
        json_response(
            StatusCode::OK,
            &json!({ "status": "ok", "version": bakend_core::VERSION }),
        )
    } else {
        // v1 clients see a plain string here, not the error envelope.
        json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "Method not allowed" }),
        )
    }
}
