//! Resolving who is calling: `Authorization: Bearer <jwt>` (scheme case-insensitive). A missing,
//! malformed, expired or revoked token, or one whose user is gone, makes the caller anonymous —
//! routes that need a signed-in caller then answer 401, public routes keep working.

use axum::http::{HeaderMap, header};
use bakend_auth::{AuthContext, TokenCheck};

use crate::state::AppState;

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub async fn resolve(state: &AppState, headers: &HeaderMap) -> AuthContext {
    let Some(token) = bearer(headers) else {
        return AuthContext::Anonymous;
    };
    match state.auth.check_token(token).await {
        TokenCheck::Valid { caller, .. } => AuthContext::User(caller),
        TokenCheck::Expired | TokenCheck::Invalid => AuthContext::Anonymous,
    }
}
