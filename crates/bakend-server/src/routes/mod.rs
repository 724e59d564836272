//! Request routing (spec `rest-api.md` §1). Paths are split on `/` with empty segments dropped,
//! so `/api/posts/` and `//api//posts` are the same route; the method is checked before the
//! collection is looked up.

mod accounts;
mod admin;
mod dashboard;
mod health;
mod jobs;
mod metrics;
pub mod realtime;
pub(crate) mod records;
mod storage;
pub mod table;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;
pub use table::{Matched, Route};

fn peer(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Serves every request but the WebSocket upgrade, by the route [`table::classify`] finds.
pub async fn dispatch(State(state): State<AppState>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Matched {
        route,
        params: [a, b],
    } = table::classify(path);
    let (method, headers) = (&parts.method, &parts.headers);
    tracing::debug!("{method} {path}");
    let result = match route {
        Route::Health => return health::health(method),
        Route::Metrics if state.config.metrics.enabled => {
            metrics::handle(&state, method, headers).await
        }
        Route::OpenApi => crate::openapi::handle(&state, method),
        // Disabled, it is not intercepted: `unrouted` answers 404 as for any unknown path.
        Route::Dashboard if state.config.dashboard_enabled => {
            dashboard::serve(method, path, headers).await
        }
        Route::AuthMe => accounts::me(&state, method, headers).await,
        Route::AuthRegister | Route::AuthLogin | Route::AuthRefresh | Route::AuthLogout => {
            let ip = peer(&parts.extensions);
            accounts::action(&state, route, method, headers, body, ip).await
        }
        Route::StorageUpload => storage::upload(&state, method, headers, body).await,
        Route::StorageFile => storage::file(&state, method, headers, a).await,
        route if route.is_admin() => {
            admin::handle(&state, route, a, method, headers, parts.uri.query(), body).await
        }
        Route::Collection => {
            let ctx = auth::resolve(&state, headers).await;
            match *method {
                Method::GET => records::list(&state, &ctx, a, parts.uri.query()).await,
                Method::POST => records::create(&state, &ctx, a, headers, body).await,
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Route::Record => {
            let ctx = auth::resolve(&state, headers).await;
            match *method {
                Method::GET => records::get(&state, &ctx, a, b).await,
                Method::PUT => records::update(&state, &ctx, a, b, headers, body).await,
                Method::DELETE => records::delete(&state, &ctx, a, b).await,
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        _ => unrouted(&state, path, method, headers).await,
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        // Whatever this request emitted (a record, file or account event) reaches this node's
        // subscribers' sockets before the caller hears back, as in v1.
        state.realtime.delivered(state.bus.emitted()).await;
    }
    response
}

/// Paths no route serves: 404, except where v1 answered otherwise — 405 for another method on
/// `/api/auth/<action>` and on an item of the bare admin lists, and the admin check before
/// anything else under `/api/admin/`.
async fn unrouted(
    state: &AppState,
    path: &str,
    method: &Method,
    headers: &axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "auth", _] if method != Method::POST => Err(ApiError::method_not_allowed()),
        ["api", "admin", rest @ ..] if (1..=3).contains(&rest.len()) => {
            admin::require_admin(state, headers).await?;
            match rest {
                ["logs" | "storage" | "functions", ..] | ["jobs", _] => {
                    Err(ApiError::method_not_allowed())
                }
                _ => Err(ApiError::not_found("Not found")),
            }
        }
        _ => Err(ApiError::not_found("Not found")),
    }
}
