//! The collection REST API: `/api/{collection}` and `/api/{collection}/{id}`.
//! Order of checks per operation follows spec `rest-api.md` §2.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bakend_auth::permissions::{Decision, Request, authorize, request_vars};
use bakend_auth::{AuthContext, Operation, Permission};
use bakend_filter::Filter;
use bakend_store::{
    Collection, Cursor, FileAccess, ListQuery, Precondition, RecordLayout, StoreError,
};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::body::json_object;
use crate::error::ApiError;
use crate::response::{json_bytes_response, json_response, no_content};
use crate::state::AppState;

fn collection(state: &AppState, name: &str) -> Result<Arc<Collection>, ApiError> {
    Ok(state.records.collection(name)?)
}

/// A write the store refused because its precondition failed when it ran is 401 for an
/// anonymous caller and 403 for a signed-in one, like the refusals decided before it.
fn refused(ctx: &AuthContext, e: StoreError) -> ApiError {
    match (e, ctx.user()) {
        (StoreError::Forbidden, None) => ApiError::unauthorized(),
        (e, _) => e.into(),
    }
}

/// Turns a refusal into 401/403 and hands back any other decision.
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
    let decision = require(authorize(
        ctx,
        Request::Record {
            rule: &c.def.permissions.read,
            op: Operation::List,
            owner: None,
            record: None,
        },
    ))?;
    let mut q = parse_list_query(state, &c, query)?;
    decision.restrict_list(&mut q);
    q.vars = request_vars(ctx);
    let page = state.records.list(c, q).await?;
    Ok(json_bytes_response(StatusCode::OK, page.into_json()))
}

/// `?page=` (1-based), `?perPage=` (clamped to the configured maximum), `?sort=` (comma
/// separated keys, `-` for descending), `?skipTotal=true` (no count: totals are -1),
/// `?after=<cursor>` (the page after a previous page's `next`, default order only) and
/// `?filter=<expression>` (`docs/filters.md`; an empty one is none). Other parameters are
/// ignored.
fn parse_list_query(
    state: &AppState,
    c: &Collection,
    query: Option<&str>,
) -> Result<ListQuery, ApiError> {
    let api = &state.config.api;
    let mut q = ListQuery::first(api.default_per_page);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("Invalid query string"))?;
    let mut page_given = false;
    for (k, v) in pairs {
        match k.as_str() {
            "skipTotal" => {
                q.skip_total = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("skipTotal must be true or false")),
                }
            }
            "after" => {
                q.after = Some(Cursor::decode(&v).ok_or_else(|| {
                    ApiError::bad_request(
                        "after must be the next cursor of a previous page of this list",
                    )
                })?);
            }
            "page" => {
                page_given = true;
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
            "filter" if !v.trim().is_empty() => {
                let f = Filter::new(&v, c.filter_schema())
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                q.filters.push(Arc::new(f));
            }
            _ => {}
        }
    }
    if q.after.is_some() && page_given {
        return Err(ApiError::bad_request("Use either page or after, not both"));
    }
    if q.after.is_some() && !q.sort.is_empty() {
        return Err(ApiError::bad_request(
            "after works with the default order only (newest first): drop sort",
        ));
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
    let decision = require(authorize(
        ctx,
        Request::Record {
            rule: &c.def.permissions.create,
            op: Operation::Create,
            owner: None,
            record: None,
        },
    ))?;
    let mut body = json_object(headers, body, state.config.api.max_body_bytes).await?;
    assign_owner(&c, ctx, &mut body);
    let record = state
        .records
        .with_origin(ctx.origin())
        .create(c, body, file_access(ctx), decision.precondition(ctx))
        .await
        .map_err(|e| refused(ctx, e))?;
    Ok(json_response(StatusCode::CREATED, &record))
}

/// Sets the owner field of a new record as the policy says (see `Request::NewOwner`).
fn assign_owner(c: &Collection, ctx: &AuthContext, body: &mut Map<String, Value>) {
    if !c.layout.has_owner() {
        return;
    }
    let requested = body.get(RecordLayout::OWNER_FIELD);
    let owner = match authorize(ctx, Request::NewOwner { requested }) {
        Decision::AllowAsOwner(id) => Value::String(id),
        Decision::AllowUnowned => Value::Null,
        _ => return,
    };
    body.insert(RecordLayout::OWNER_FIELD.into(), owner);
}

/// Loads one record and applies the collection's rule for `op` to it: a missing record is 404
/// before any permission check (spec order), then 401/403. Also returns the owner the write
/// must still find when it runs (`owner` rule).
async fn load_authorized(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
    op: Operation,
) -> Result<(Arc<Collection>, Value, Precondition), ApiError> {
    let c = collection(state, name)?;
    let record = state.records.get(c.clone(), id.to_string()).await?;
    let p = &c.def.permissions;
    let rule = match op {
        Operation::Update => &p.update,
        Operation::Delete => &p.delete,
        _ => &p.read,
    };
    let owner = c.layout.owner_in_record(&record);
    let pre = require(authorize(
        ctx,
        Request::Record {
            rule,
            op,
            owner,
            record: Some(&record),
        },
    ))?
    .precondition(ctx);
    Ok((c, record, pre))
}

pub async fn get(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    // As `load_authorized`, with the record kept as the bytes to send.
    let c = collection(state, name)?;
    let (record, owner) = state.records.get_json(c.clone(), id.to_string()).await?;
    // An expression rule reads the record's fields; keyword rules only need its owner.
    let parsed = match &c.def.permissions.read {
        Permission::Expression(_) => Some(
            serde_json::from_slice::<Value>(&record)
                .map_err(|e| ApiError::internal(format!("record JSON: {e}")))?,
        ),
        Permission::Keyword(_) => None,
    };
    require(authorize(
        ctx,
        Request::Record {
            rule: &c.def.permissions.read,
            op: Operation::Read,
            owner: owner.as_deref(),
            record: parsed.as_ref(),
        },
    ))?;
    Ok(json_bytes_response(StatusCode::OK, record))
}

pub async fn update(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (c, existing, pre) = load_authorized(state, ctx, name, id, Operation::Update).await?;
    let body = json_object(headers, body, state.config.api.max_body_bytes).await?;
    if c.layout.has_owner()
        && let Some(requested) = body.get(RecordLayout::OWNER_FIELD)
    {
        let current = c.layout.owner_in_record(&existing);
        if authorize(ctx, Request::ChangeOwner { current, requested }).is_refusal() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only admins can change user_id",
            ));
        }
    }
    let record = state
        .records
        .with_origin(ctx.origin())
        .update(c, id.to_string(), body, pre, file_access(ctx))
        .await
        .map_err(|e| refused(ctx, e))?;
    Ok(json_response(StatusCode::OK, &record))
}

pub async fn delete(
    state: &AppState,
    ctx: &AuthContext,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let (c, _, pre) = load_authorized(state, ctx, name, id, Operation::Delete).await?;
    state
        .records
        .with_origin(ctx.origin())
        .delete(c, id.to_string(), pre)
        .await
        .map_err(|e| refused(ctx, e))?;
    Ok(no_content())
}

/// Which stored files the caller may put in `file` fields (see `Request::AttachFiles`).
fn file_access(ctx: &AuthContext) -> FileAccess {
    authorize(ctx, Request::AttachFiles).into()
}
