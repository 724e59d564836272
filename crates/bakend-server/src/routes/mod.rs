//! Request routing (spec `rest-api.md` §1). Paths are split on `/` with empty segments dropped,
//! so `/api/posts/` and `//api//posts` are the same route; the method is checked before the
//! collection is looked up.

mod accounts;
mod admin;
mod health;
mod jobs;
mod metrics;
pub mod realtime;
pub(crate) mod records;
mod storage;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

/// Route prefixes owned by Bakend itself, never by a collection.
pub(crate) const SYSTEM_SEGMENTS: &[&str] = &["auth", "storage", "users", "admin", "realtime"];

fn peer(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

pub async fn dispatch(State(state): State<AppState>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/" || path == "/health" {
        return health::health(&parts.method);
    }
    if path == "/metrics" && state.config.metrics.enabled {
        return metrics::handle(&state, &parts.method, &parts.headers)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    tracing::debug!("{} {}", parts.method, path);
    let result = match segments.as_slice() {
        ["api", "openapi.json"] => crate::openapi::handle(&state, &parts.method),
        ["api", "auth", "me"] => accounts::me(&state, &parts.method, &parts.headers).await,
        ["api", "auth", action] => {
            let ip = peer(&parts.extensions);
            accounts::action(&state, action, &parts.method, &parts.headers, body, ip).await
        }
        ["api", "admin", rest @ ..] if (1..=3).contains(&rest.len()) => {
            admin::handle(
                &state,
                rest,
                &parts.method,
                &parts.headers,
                parts.uri.query(),
                body,
            )
            .await
        }
        ["api", "storage", "upload"] => {
            storage::upload(&state, &parts.method, &parts.headers, body).await
        }
        ["api", "storage", id] => storage::file(&state, &parts.method, &parts.headers, id).await,
        ["api", system, ..] if SYSTEM_SEGMENTS.contains(system) => {
            Err(ApiError::not_found("Not found"))
        }
        ["api", collection] => {
            let ctx = auth::resolve(&state, &parts.headers).await;
            match parts.method {
                Method::GET => records::list(&state, &ctx, collection, parts.uri.query()).await,
                Method::POST => {
                    records::create(&state, &ctx, collection, &parts.headers, body).await
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        ["api", collection, id] => {
            let ctx = auth::resolve(&state, &parts.headers).await;
            match parts.method {
                Method::GET => records::get(&state, &ctx, collection, id).await,
                Method::PUT => {
                    records::update(&state, &ctx, collection, id, &parts.headers, body).await
                }
                Method::DELETE => records::delete(&state, &ctx, collection, id).await,
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        _ => Err(ApiError::not_found("Not found")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
