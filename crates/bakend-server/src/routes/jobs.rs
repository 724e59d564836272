//! `/api/admin/jobs[/:name/runs|/:name/run]` (docs/jobs.md). Listing and history need an admin;
//! running a job also accepts the local token of `bak jobs run` (docs/jobs.md, "How `bak jobs
//! run` reaches the server").

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bakend_jobs::local_access;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::response::json_response;
use crate::routes::admin::require_admin;
use crate::routes::table::Route;
use crate::state::AppState;

/// Serves a jobs route; `name` is the job name from the path (percent-encoded).
pub async fn handle(
    state: &AppState,
    route: Route,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let local = route == Route::AdminJobRun && local_token_ok(state, headers);
    if !local {
        require_admin(state, headers).await?;
    }
    let jobs = &state.jobs.jobs;
    match route {
        Route::AdminJobs => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let items: Vec<Value> = jobs
                .list()
                .into_iter()
                .map(|j| {
                    json!({
                        "name": j.name,
                        "schedule": j.schedule,
                        "filePath": j.file,
                        "timezone": j.timezone,
                        "nextRun": j.next_run.map(bakend_core::time::to_iso),
                        "running": j.running,
                    })
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "items": items })))
        }
        Route::AdminJobRuns => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let runs = jobs.runs(&decode(name)?).await?;
            Ok(json_response(StatusCode::OK, &json!({ "items": runs })))
        }
        Route::AdminJobRun => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let run = jobs.run_now(&decode(name)?).await?;
            Ok(json_response(StatusCode::OK, &json!(run)))
        }
        _ => Err(ApiError::not_found("Not found")),
    }
}

/// Job names may contain `/` (`reports/daily`), sent as `reports%2Fdaily`.
fn decode(name: &str) -> Result<String, ApiError> {
    percent_decode_str(name)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("Job name is not valid UTF-8"))
}

fn local_token_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let (Some(local), Some(presented)) = (
        state.jobs.local.as_ref(),
        headers
            .get(local_access::HEADER)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    local.verify(presented)
}
