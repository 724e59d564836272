//! `/api/admin/<resource>[/<id>[/<sub>]]` (spec `admin-api.md`). Access is checked before the
//! resource is resolved. Users are served here; the other resources arrive with the operations
//! work.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bakend_auth::{AuthContext, Role, safe_user};
use serde_json::{Value, json};

use crate::body::json_object;
use crate::error::ApiError;
use crate::response::{json_response, no_content};
use crate::state::AppState;

pub async fn handle(
    state: &AppState,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Response, ApiError> {
    // Jobs check access themselves: running one also accepts the local token.
    if let ["jobs", sub @ ..] = rest {
        return super::jobs::handle(state, sub, method, headers).await;
    }
    require_admin(state, headers).await?;
    match rest {
        ["users"] => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let (limit, offset) = paging(query);
            let (users, total) = state.auth.list_users(limit, offset).await?;
            let items: Vec<Value> = users.iter().map(safe_user).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "items": items, "total": total }),
            ))
        }
        ["storage"] => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let (limit, offset) = paging(query);
            let (files, total) = state.files.list(limit, offset).await?;
            let items: Vec<Value> = files.iter().map(|f| f.to_json()).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "items": items, "total": total }),
            ))
        }
        ["functions"] => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let stats = state.functions.stats();
            let items: Vec<Value> = state
                .functions
                .triggers()
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let (invocations, failures) = stats.trigger_counts(i);
                    json!({
                        "collection": t.collection,
                        "type": t.trigger,
                        "eventType": t.event_type,
                        "filePath": t.file,
                        "invocations": invocations,
                        "failures": failures,
                    })
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "items": items })))
        }
        ["realtime"] => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            Ok(json_response(StatusCode::OK, &state.realtime.stats_json()))
        }
        ["users", id] => match *method {
            Method::PATCH => {
                let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
                let role = body
                    .get("role")
                    .and_then(Value::as_str)
                    .and_then(Role::parse)
                    .ok_or_else(|| {
                        ApiError::bad_request("role must be one of: admin, authenticated, public")
                    })?;
                let user = state.auth.set_role(id, role).await?;
                Ok(json_response(StatusCode::OK, &safe_user(&user)))
            }
            Method::DELETE => {
                state.auth.delete_user(id).await?;
                // Policy (docs/storage.md): a deleted account's files go with it, each with a
                // `storage.deleted` event.
                let removed = state.files.delete_owned_by(id).await?;
                if !removed.is_empty() {
                    tracing::info!("Deleted {} file(s) of deleted user {id}", removed.len());
                }
                Ok(no_content())
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        _ => Err(ApiError::not_found("Not found")),
    }
}

/// 401 without a valid token, 403 for a non-admin.
pub async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match crate::auth::resolve(state, headers).await {
        AuthContext::Anonymous => Err(ApiError::unauthorized()),
        ctx if !ctx.is_admin() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Admin access required",
        )),
        _ => Ok(()),
    }
}

/// JavaScript `parseInt` on the leading digits (with an optional sign), as v1 clients expect.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|n| sign * n)
}

/// `limit`: missing, NaN or 0 → 50, clamped to 1..=100; `offset`: NaN or negative → 0.
fn paging(query: Option<&str>) -> (u32, u64) {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| parse_int(v))
    };
    let limit = match get("limit") {
        None | Some(0) => 50,
        Some(n) => n.clamp(1, 100) as u32,
    };
    let offset = get("offset").unwrap_or(0).max(0) as u64;
    (limit, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_follows_v1() {
        assert_eq!(paging(None), (50, 0));
        assert_eq!(paging(Some("limit=0&offset=-5")), (50, 0));
        assert_eq!(paging(Some("limit=500&offset=3")), (100, 3));
        assert_eq!(paging(Some("limit=7abc&offset=x")), (7, 0));
        assert_eq!(paging(Some("limit=-3")), (1, 0));
    }
}
