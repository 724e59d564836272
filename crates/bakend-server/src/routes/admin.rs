//! `/api/admin/<resource>[/<id>[/<sub>]]` (spec `admin-api.md`). Access is checked before the
//! resource is resolved.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bakend_auth::permissions::{Decision, Request, authorize};
use bakend_auth::{Role, safe_user};
use bakend_core::config::LogLevel;
use bakend_store::collections::manage;
use serde_json::{Value, json};

use crate::body::json_object;
use crate::collection_files::write_back;
use crate::error::ApiError;
use crate::response::{json_response, no_content};
use crate::routes::table::Route;
use crate::state::AppState;

/// Serves an admin route; `name` is its path parameter (collection name, user id or job name).
pub async fn handle(
    state: &AppState,
    route: Route,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Response, ApiError> {
    // Jobs check access themselves: running one also accepts the local token.
    if matches!(
        route,
        Route::AdminJobs | Route::AdminJobRuns | Route::AdminJobRun
    ) {
        return super::jobs::handle(state, route, name, method, headers).await;
    }
    require_admin(state, headers).await?;
    match route {
        Route::AdminCollections => match *method {
            Method::GET => {
                let items: Vec<Value> = state
                    .records
                    .registry()
                    .all()
                    .iter()
                    .map(|c| c.meta_json())
                    .collect();
                Ok(json_response(StatusCode::OK, &json!({ "items": items })))
            }
            Method::POST => {
                let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
                let db = state.records.database();
                let c = manage::create(db, state.records.registry(), Value::Object(body)).await?;
                tracing::info!("Collection created: {}", c.name());
                write_back(
                    &state.config.project_dir,
                    c.name(),
                    state.records.registry(),
                )
                .await;
                Ok(json_response(StatusCode::CREATED, &c.meta_json()))
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::AdminCollection => match *method {
            Method::GET => {
                let c = state.records.collection(name)?;
                Ok(json_response(StatusCode::OK, &c.meta_json()))
            }
            Method::PUT => {
                let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
                if query_flag(query, "dryRun") {
                    let p = manage::preview(state.records.database(), name, Value::Object(body))
                        .await?;
                    return Ok(json_response(StatusCode::OK, &plan_json(name, &p)));
                }
                let force = query_flag(query, "force");
                let db = state.records.database();
                let out = manage::update(
                    db,
                    state.records.registry(),
                    name,
                    Value::Object(body),
                    force,
                )
                .await?;
                let c = out.collection;
                tracing::info!(
                    "Collection updated: {} ({})",
                    c.name(),
                    if out.changes.is_empty() {
                        "no change".to_string()
                    } else {
                        out.changes.join(", ")
                    }
                );
                for b in &out.forced {
                    tracing::warn!("Collection {}: forced: {b}", c.name());
                }
                write_back(
                    &state.config.project_dir,
                    c.name(),
                    state.records.registry(),
                )
                .await;
                Ok(json_response(StatusCode::OK, &c.meta_json()))
            }
            Method::DELETE => {
                manage::delete(state.records.database(), state.records.registry(), name).await?;
                tracing::info!("Collection deleted: {name}");
                write_back(&state.config.project_dir, name, state.records.registry()).await;
                Ok(no_content())
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::AdminUsers => {
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
        Route::AdminStorage => {
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
        Route::AdminFunctions => {
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
        Route::AdminLogs => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let (limit, min_level) = log_query(query)?;
            let entries = bakend_core::logging::recent();
            let items: Vec<&bakend_core::logging::LogEntry> = entries
                .iter()
                .filter(|e| LogLevel::parse(e.level).is_some_and(|l| l >= min_level))
                .collect();
            let skip = items.len().saturating_sub(limit);
            Ok(json_response(
                StatusCode::OK,
                &json!({ "items": &items[skip..] }),
            ))
        }
        Route::AdminRealtime => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let stats = state.cluster.realtime_stats(&state.realtime).await;
            Ok(json_response(StatusCode::OK, &stats))
        }
        Route::AdminUser => match *method {
            Method::PATCH => {
                let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
                let role = body
                    .get("role")
                    .and_then(Value::as_str)
                    .and_then(Role::parse)
                    .ok_or_else(|| {
                        ApiError::bad_request("role must be one of: admin, authenticated, public")
                    })?;
                let user = state.auth.set_role(name, role).await?;
                Ok(json_response(StatusCode::OK, &safe_user(&user)))
            }
            Method::DELETE => {
                state.auth.delete_user(name).await?;
                // Policy (docs/storage.md): a deleted account's files go with it, each with a
                // `storage.deleted` event.
                let removed = state.files.delete_owned_by(name).await?;
                if !removed.is_empty() {
                    tracing::info!("Deleted {} file(s) of deleted user {name}", removed.len());
                }
                Ok(no_content())
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        _ => Err(ApiError::not_found("Not found")),
    }
}

/// The answer to a dry run: what the change would do and what, if anything, stands in its way.
/// `outcome` sums it up for a client deciding what to offer: `unchanged` (nothing to do),
/// `ready` (a PUT applies it), `needsForce` (every blocker can be forced: a PUT with
/// `?force=true` applies it, with the consequences each blocker's `force` names), `blocked`
/// (some blocker cannot be forced; the definition must change first).
fn plan_json(name: &str, p: &manage::Preview) -> Value {
    let outcome = if p.blockers.iter().any(|b| b.force.is_none()) {
        "blocked"
    } else if !p.blockers.is_empty() {
        "needsForce"
    } else if p.plan.is_noop() {
        "unchanged"
    } else {
        "ready"
    };
    let blockers: Vec<Value> = p
        .blockers
        .iter()
        .map(|b| {
            json!({
                "field": b.field,
                "rule": b.rule,
                "problem": b.problem,
                "count": b.count,
                "samples": b.samples,
                "force": b.force,
                "message": b.to_string(),
            })
        })
        .collect();
    json!({
        "name": name,
        "dryRun": true,
        "outcome": outcome,
        "changes": p.plan.changes,
        "rebuild": p.plan.rebuild,
        "blockers": blockers,
    })
}

/// `limit`: missing, NaN or 0 → 100, clamped to 1..=500 (the last `limit` entries); `level`:
/// exactly `DEBUG`, `INFO`, `WARN` or `ERROR` (entries at or above it); present but anything
/// else, including empty, is an error.
fn log_query(query: Option<&str>) -> Result<(usize, LogLevel), ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").and_then(parse_int) {
        None | Some(0) => 100,
        Some(n) => n.clamp(1, 500) as usize,
    };
    let level = match get("level") {
        None => LogLevel::Debug,
        Some(l) => LogLevel::parse(l).ok_or_else(|| {
            ApiError::bad_request("level must be one of: DEBUG, INFO, WARN, ERROR")
        })?,
    };
    Ok((limit, level))
}

/// `?name=true` / `?name=1` / `?name` (present with no value).
fn query_flag(query: Option<&str>, name: &str) -> bool {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    pairs
        .iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "" | "true" | "1"))
}

/// 401 without a valid token, 403 for a non-admin.
pub async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let ctx = crate::auth::resolve(state, headers).await;
    match authorize(&ctx, Request::Admin) {
        Decision::Unauthenticated => Err(ApiError::unauthorized()),
        Decision::Forbidden => Err(ApiError::new(
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
    fn log_query_follows_v1() {
        assert_eq!(log_query(None).unwrap(), (100, LogLevel::Debug));
        assert_eq!(log_query(Some("limit=0")).unwrap().0, 100);
        assert_eq!(
            log_query(Some("limit=9999&level=WARN")).unwrap(),
            (500, LogLevel::Warn)
        );
        assert_eq!(log_query(Some("limit=-4")).unwrap().0, 1);
        for bad in ["level=", "level=warn", "level=TRACE"] {
            assert!(log_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn paging_follows_v1() {
        assert_eq!(paging(None), (50, 0));
        assert_eq!(paging(Some("limit=0&offset=-5")), (50, 0));
        assert_eq!(paging(Some("limit=500&offset=3")), (100, 3));
        assert_eq!(paging(Some("limit=7abc&offset=x")), (7, 0));
        assert_eq!(paging(Some("limit=-3")), (1, 0));
    }
}
