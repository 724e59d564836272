//! `GET /api/realtime`: the WebSocket endpoint (exact path). The identity comes from the
//! `Authorization: Bearer` header or, for browsers, `?token=`; a token that is present but not
//! valid gives an anonymous connection that is told so.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bakend_auth::{AuthContext, TokenCheck};
use bakend_realtime::{Identity, UpgradeError, WsUpgrade};
use std::collections::HashMap;

use crate::state::AppState;

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain;charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn endpoint(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WsUpgrade, UpgradeError>,
) -> Response {
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let mut identity = identify(&state, &headers, query.get("token").map(String::as_str)).await;
    if let Some(raw) = query.get("since") {
        identity.since = bakend_realtime::protocol::Since::parse_param(raw).map(Box::new);
        identity.since_rejected = identity.since.is_none();
    }
    let hub = state.realtime.clone();
    ws.on_upgrade(move |socket, leftover| bakend_realtime::serve(hub, socket, leftover, identity))
}

async fn identify(state: &AppState, headers: &HeaderMap, query_token: Option<&str>) -> Identity {
    let mut rejected = false;
    for token in [crate::auth::bearer(headers), query_token]
        .into_iter()
        .flatten()
    {
        match state.auth.check_token(token).await {
            TokenCheck::Valid { caller, exp } => {
                return Identity {
                    ctx: AuthContext::User(caller),
                    exp: Some(exp),
                    token_rejected: false,
                    since: None,
                    since_rejected: false,
                };
            }
            TokenCheck::Expired | TokenCheck::Invalid => rejected = true,
        }
    }
    Identity {
        ctx: AuthContext::Anonymous,
        exp: None,
        token_rejected: rejected,
        since: None,
        since_rejected: false,
    }
}
