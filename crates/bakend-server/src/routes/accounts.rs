//! `/api/auth/*` (spec `auth.md` §1), with input problems as 400 (v1 said 401) and
//! `{"all": true}` on logout revoking every session of the caller.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bakend_auth::accounts::credentials;
use bakend_auth::{AuthContext, safe_user};
use serde_json::{Value, json};

use crate::body::json_object;
use crate::error::ApiError;
use crate::response::{json_response, no_content};
use crate::routes::table::Route;
use crate::state::AppState;

pub async fn me(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    match crate::auth::resolve(state, headers).await {
        AuthContext::User(u) => Ok(json_response(
            StatusCode::OK,
            &json!({ "user": safe_user(&u) }),
        )),
        AuthContext::Anonymous => Err(ApiError::unauthorized()),
    }
}

pub async fn action(
    state: &AppState,
    route: Route,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    peer: IpAddr,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    if matches!(route, Route::AuthLogin | Route::AuthRegister) {
        state.auth.check_rate(peer)?;
    }
    let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
    match route {
        Route::AuthRegister => {
            let (email, password) = credentials(&body)?;
            let pair = state.auth.register(&email, &password).await?;
            Ok(json_response(StatusCode::CREATED, &pair.to_json()))
        }
        Route::AuthLogin => {
            let (email, password) = credentials(&body)?;
            let pair = state.auth.login(&email, &password).await?;
            Ok(json_response(StatusCode::OK, &pair.to_json()))
        }
        Route::AuthRefresh => {
            let token = refresh_token(&body)?;
            let pair = state.auth.refresh(&token).await?;
            Ok(json_response(StatusCode::OK, &pair.to_json()))
        }
        Route::AuthLogout => {
            if body.get("all") == Some(&Value::Bool(true)) {
                let AuthContext::User(u) = crate::auth::resolve(state, headers).await else {
                    return Err(ApiError::unauthorized());
                };
                state.auth.logout_all(&u.id).await?;
                return Ok(no_content());
            }
            let token = refresh_token(&body)?;
            state.auth.logout(&token).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::not_found("Not found")),
    }
}

fn refresh_token(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    body.get("refreshToken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("refreshToken is required"))
}
