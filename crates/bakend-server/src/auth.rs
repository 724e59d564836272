//! Resolving who is calling. Accounts and tokens arrive with the auth issue; until then every
//! caller is anonymous, which the permission decision already handles.

use axum::http::HeaderMap;
use bakend_auth::AuthContext;

use crate::state::AppState;

pub fn resolve(_state: &AppState, _headers: &HeaderMap) -> AuthContext {
    AuthContext::Anonymous
}
