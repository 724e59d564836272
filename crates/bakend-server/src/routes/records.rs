//! The collection REST API: `/api/{collection}` and `/api/{collection}/{id}`.
//! Order of checks per operation follows spec `rest-api.md` §2.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bakend_auth::permissions::{Decision, decide};
use bakend_auth::{AuthContext, Operation};
use bakend_store::{Collection, FileAccess, ListQuery, RecordLayout};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::body::json_object;
use crate::error::ApiError;
use crate::response::{json_response, no_content};
use crate::state::AppState;

fn collection(state: &AppState, name: &str) -> Result<Arc<Collection>, ApiError> {
    Ok(state.records.collection(name)?)
}

/// Applies a decision that must be a plain yes or no.
fn require(d: Decision) -> Result<Decision, ApiError> {
    match d {
        Decision::Unauthenticated => Err(ApiError::unauthorized()),
        Decision::Forbidden => Err(ApiError::forbidden()),
        other => Ok(other),
    }
}

pub async fn list(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let c = collection(state, name)?;
    let owned_by = match require(decide(ctx, c.def.permissions.read, Operation::List, None))? {
        Decision::AllowOwnedBy(id) => Some(id),
        _ => None,
    };
    let mut q = parse_list_query(state, query)?;
    q.owned_by = owned_by;
    let page = state.records.list(c, q).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "items": page.items,
            "page": page.page,
            "perPage": page.per_page,
            "totalItems": page.total_items,
            "totalPages": page.total_pages,
        }),
    ))
}

/// `?page=` (1-based), `?perPage=` (clamped to the configured maximum) and `?sort=` (comma
/// separated keys, `-` for descending). Other parameters are ignored.
fn parse_list_query(state: &AppState, query: Option<&str>) -> Result<ListQuery, ApiError> {
    let api = &state.config.api;
    let mut q = ListQuery {
        page: 1,
        per_page: api.default_per_page,
        sort: Vec::new(),
        owned_by: None,
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("Invalid query string"))?;
    for (k, v) in pairs {
        match k.as_str() {
            "page" => {
                q.page = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ApiError::bad_request("page must be a positive integer"))?;
            }
            "perPage" => {
                let n =
                    v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        ApiError::bad_request("perPage must be a positive integer")
                    })?;
                q.per_page = n.min(api.max_per_page);
            }
            "sort" => q.sort.extend(parse_sort(&v)),
            _ => {}
        }
    }
    Ok(q)
}

/// `-createdAt,title`: comma-separated keys, `-` for descending, optional `+`.
pub(crate) fn parse_sort(v: &str) -> Vec<(String, bool)> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|key| match key.strip_prefix('-') {
            Some(rest) => (rest.to_string(), true),
            None => (key.strip_prefix('+').unwrap_or(key).to_string(), false),
        })
        .collect()
}

pub async fn create(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c = collection(state, name)?;
    let decision = require(decide(
        ctx,
        c.def.permissions.create,
        Operation::Create,
        None,
    ))?;
    let mut body = json_object(headers, body, state.config.api.max_body_bytes).await?;
    assign_owner(&c, ctx, &decision, &mut body);
    let record = state
        .records
        .with_origin(ctx.origin())
        .create(c, body, file_access(ctx))
        .await?;
    Ok(json_response(StatusCode::CREATED, &record))
}

/// Who owns a new record. Signed-in non-admins always own what they create; anonymous creators
/// cannot claim anyone's ownership; admins may create on someone's behalf (or own it).
fn assign_owner(
    c: &Collection,
    ctx: &AuthContext,
    decision: &Decision,
    body: &mut Map<String, Value>,
) {
    if !c.layout.has_owner() {
        return;
    }
    let forced = match (decision, ctx.user()) {
        (Decision::AllowAsOwner(id), _) => Some(Value::String(id.clone())),
        (_, Some(u)) if ctx.is_admin() => {
            if body
                .get(RecordLayout::OWNER_FIELD)
                .is_some_and(|v| !v.is_null())
            {
                return;
            }
            Some(Value::String(u.id.clone()))
        }
        (_, Some(u)) => Some(Value::String(u.id.clone())),
        (_, None) => Some(Value::Null),
    };
    if let Some(v) = forced {
        body.insert(RecordLayout::OWNER_FIELD.into(), v);
    }
}

/// Loads one record and applies the collection's rule for `op` to it: a missing record is 404
/// before any permission check (spec order), then 401/403.
async fn load_authorized(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
    op: Operation,
) -> Result<(Arc<Collection>, Value), ApiError> {
    let c = collection(state, name)?;
    let record = state.records.get(c.clone(), id.to_string()).await?;
    let p = &c.def.permissions;
    let rule = match op {
        Operation::Update => p.update,
        Operation::Delete => p.delete,
        _ => p.read,
    };
    require(decide(ctx, rule, op, c.layout.owner_in_record(&record)))?;
    Ok((c, record))
}

pub async fn get(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let (_, record) = load_authorized(state, ctx, name, id, Operation::Read).await?;
    Ok(json_response(StatusCode::OK, &record))
}

pub async fn update(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (c, existing) = load_authorized(state, ctx, name, id, Operation::Update).await?;
    let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
    if c.layout.has_owner() && !ctx.is_admin() {
        let wanted = body.get(RecordLayout::OWNER_FIELD);
        if wanted.is_some_and(|w| w.as_str() != c.layout.owner_in_record(&existing)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only admins can change user_id",
            ));
        }
    }
    let required_owner = required_owner(ctx, c.def.permissions.update);
    let record = state
        .records
        .with_origin(ctx.origin())
        .update(c, id.to_string(), body, required_owner, file_access(ctx))
        .await?;
    Ok(json_response(StatusCode::OK, &record))
}

pub async fn delete(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let (c, _) = load_authorized(state, ctx, name, id, Operation::Delete).await?;
    let required_owner = required_owner(ctx, c.def.permissions.delete);
    state
        .records
        .with_origin(ctx.origin())
        .delete(c, id.to_string(), required_owner)
        .await?;
    Ok(no_content())
}

/// Which stored files the caller may put in `file` fields: admins any, others their own.
fn file_access(ctx: &AuthContext) -> FileAccess {
    match ctx.user() {
        Some(_) if ctx.is_admin() => FileAccess::Any,
        Some(u) => FileAccess::OwnedBy(u.id.clone()),
        None => FileAccess::NoneOwned,
    }
}

/// Under `owner`, a non-admin's write must still find the record owned by them when it runs.
fn required_owner(ctx: &AuthContext, rule: bakend_auth::Rule) -> Option<String> {
    match (rule, ctx.user()) {
        (bakend_auth::Rule::Owner, Some(u)) if !ctx.is_admin() => Some(u.id.clone()),
        _ => None,
    }
}
