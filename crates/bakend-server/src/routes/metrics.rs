//! `GET /metrics` (docs/metrics.md). Dispatched here only when `metrics.enabled`; otherwise the
//! path is unknown (404). Needs the configured scrape token or an admin's access token, checked
//! before anything is read.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use crate::error::ApiError;
use crate::metrics;
use crate::routes::admin::require_admin;
use crate::state::AppState;

pub async fn handle(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if !scrape_token_ok(state, headers) {
        require_admin(state, headers).await?;
    }
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let mut resp = Response::new(Body::from(metrics::render(state)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(resp)
}

/// Whether the bearer token is the configured scrape token (constant-time comparison).
fn scrape_token_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let (Some(expected), Some(presented)) = (
        state.config.metrics.token.as_deref(),
        crate::auth::bearer(headers),
    ) else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
