//! Calling the server's async services from JS: each call returns a promise; the service future
//! runs on the server's runtime and the JS worker only awaits its result.

use std::future::Future;

use rquickjs::{Ctx, Exception, Value};
use serde_json::{Map, Value as Json};

use crate::services::{BoxFuture, ServiceError};

/// A JS object argument as a JSON object (`TypeError` otherwise).
pub(crate) fn js_object_to_map<'js>(
    ctx: &Ctx<'js>,
    v: Value<'js>,
    what: &str,
) -> rquickjs::Result<Map<String, Json>> {
    let text = if v.is_object() && !v.is_array() && !v.is_function() {
        ctx.json_stringify(v)?.map(|s| s.to_string()).transpose()?
    } else {
        None
    };
    match text.and_then(|t| serde_json::from_str::<Map<String, Json>>(&t).ok()) {
        Some(m) => Ok(m),
        None => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be an object"),
        )),
    }
}

pub(crate) fn json_to_js<'js>(ctx: &Ctx<'js>, v: &Json) -> rquickjs::Result<Value<'js>> {
    ctx.json_parse(v.to_string())
}

/// An `Error` carrying the REST envelope's `status`, `code` and `details`.
pub(crate) fn throw_service_error<'js>(ctx: &Ctx<'js>, e: ServiceError) -> rquickjs::Error {
    let build = || -> rquickjs::Result<Value<'js>> {
        let err = Exception::from_message(ctx.clone(), &e.message)?;
        err.set("status", e.status)?;
        err.set("code", e.code.as_str())?;
        if let Some(d) = &e.details {
            err.set("details", json_to_js(ctx, d)?)?;
        }
        Ok(err.into_value())
    };
    match build() {
        Ok(v) => ctx.throw(v),
        Err(e) => e,
    }
}

/// Runs `call` (if the arguments were valid) on the server runtime and converts its JSON result
/// for JS.
pub(crate) fn settle<'js>(
    ctx: Ctx<'js>,
    runtime: Option<tokio::runtime::Handle>,
    call: rquickjs::Result<BoxFuture<Result<Json, ServiceError>>>,
) -> impl Future<Output = rquickjs::Result<Value<'js>>> + 'js {
    let spawned = match (call, runtime) {
        (Ok(fut), Some(rt)) => Ok(rt.spawn(fut)),
        (Ok(_), None) => Err(None),
        (Err(e), _) => Err(Some(e)),
    };
    async move {
        let handle = match spawned {
            Ok(h) => h,
            Err(Some(e)) => return Err(e),
            Err(None) => {
                return Err(throw_service_error(
                    &ctx,
                    ServiceError::internal("this service is not available here"),
                ));
            }
        };
        let res = handle
            .await
            .unwrap_or_else(|e| Err(ServiceError::internal(format!("service call failed: {e}"))));
        match res {
            Ok(v) => json_to_js(&ctx, &v),
            Err(e) => Err(throw_service_error(&ctx, e)),
        }
    }
}
