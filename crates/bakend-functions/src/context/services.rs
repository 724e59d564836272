//! `ctx.storage` (`get`, `delete`) and `ctx.records` (`create`, `update`, `delete`, `get`,
//! `list`): promise-returning bridges to the server's services.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rquickjs::function::{Async, Opt};
use rquickjs::{Ctx, Function, Object, Value};
use serde_json::Value as Json;

use super::bridge::{js_object_to_map, settle};
use crate::services::{BoxFuture, ListOptions, RecordsApi, ServiceError, StorageApi};

type Call = BoxFuture<Result<Json, ServiceError>>;

fn boxed<T, F>(fut: F, to_json: fn(T) -> Json) -> Call
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
{
    Box::pin(async move { fut.await.map(to_json) })
}

fn opt_json(v: Option<Json>) -> Json {
    v.unwrap_or(Json::Null)
}

pub(crate) fn storage_object<'js>(
    ctx: &Ctx<'js>,
    api: Arc<dyn StorageApi>,
    rt: Option<tokio::runtime::Handle>,
) -> rquickjs::Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    let (a, r) = (api.clone(), rt.clone());
    o.set(
        "get",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, id: String| {
                settle(ctx, r.clone(), Ok(boxed(a.get(id), opt_json)))
            }),
        )?,
    )?;
    o.set(
        "delete",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, id: String| {
                settle(ctx, rt.clone(), Ok(boxed(api.delete(id), Json::Bool)))
            }),
        )?,
    )?;
    Ok(o)
}

fn list_options<'js>(ctx: &Ctx<'js>, v: Option<Value<'js>>) -> rquickjs::Result<ListOptions> {
    let Some(v) = v.filter(|v| !v.type_of().is_void()) else {
        return Ok(ListOptions::default());
    };
    let m = js_object_to_map(ctx, v, "list options")?;
    let num = |k: &str| {
        m.get(k)
            .and_then(Json::as_f64)
            .filter(|n| *n >= 1.0)
            .map(|n| n as u32)
    };
    Ok(ListOptions {
        page: num("page"),
        per_page: num("perPage"),
        sort: m.get("sort").and_then(Json::as_str).map(str::to_string),
        filter: m.get("filter").and_then(Json::as_str).map(str::to_string),
    })
}

pub(crate) fn records_object<'js>(
    ctx: &Ctx<'js>,
    api: Arc<dyn RecordsApi>,
    rt: Option<tokio::runtime::Handle>,
    depth: Arc<AtomicU8>,
) -> rquickjs::Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    let (a, r, d) = (api.clone(), rt.clone(), depth.clone());
    o.set(
        "create",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, collection: String, data: Value<'js>| {
                let call = js_object_to_map(&ctx, data, "record data")
                    .map(|m| boxed(a.create(collection, m, d.load(Ordering::Relaxed)), |v| v));
                settle(ctx, r.clone(), call)
            }),
        )?,
    )?;
    let (a, r, d) = (api.clone(), rt.clone(), depth.clone());
    o.set(
        "update",
        Function::new(
            ctx.clone(),
            Async(
                move |ctx: Ctx<'js>, collection: String, id: String, data: Value<'js>| {
                    let call = js_object_to_map(&ctx, data, "record data").map(|m| {
                        boxed(
                            a.update(collection, id, m, d.load(Ordering::Relaxed)),
                            |v| v,
                        )
                    });
                    settle(ctx, r.clone(), call)
                },
            ),
        )?,
    )?;
    let (a, r) = (api.clone(), rt.clone());
    o.set(
        "delete",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, collection: String, id: String| {
                let call = boxed(
                    a.delete(collection, id, depth.load(Ordering::Relaxed)),
                    Json::Bool,
                );
                settle(ctx, r.clone(), Ok(call))
            }),
        )?,
    )?;
    let (a, r) = (api.clone(), rt.clone());
    o.set(
        "get",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, collection: String, id: String| {
                settle(ctx, r.clone(), Ok(boxed(a.get(collection, id), opt_json)))
            }),
        )?,
    )?;
    o.set(
        "list",
        Function::new(
            ctx.clone(),
            Async(
                move |ctx: Ctx<'js>, collection: String, options: Opt<Value<'js>>| {
                    let call = list_options(&ctx, options.0)
                        .map(|opts| boxed(api.list(collection, opts), |v| v));
                    settle(ctx, rt.clone(), call)
                },
            ),
        )?,
    )?;
    Ok(o)
}
