//! The `ctx` handed to user code. Per runtime, the service objects (`db`, `storage`,
//! `records`) are built once and kept in a hidden global; per invocation only the event-specific
//! keys and the file's logger are added.

mod bridge;
pub(crate) mod db;
mod db_policy;
mod logger;
mod services;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bakend_core::Event;
use rquickjs::{Ctx, Object, Result, Value};

use crate::budget::Budget;
use crate::services::HostServices;
use db::DbHandle;

const API_GLOBAL: &str = "__bakend_api";

/// A runtime's link to the host: the services and this runtime's database connection.
pub(crate) struct Api {
    services: HostServices,
    db: Option<Arc<DbHandle>>,
    /// `depth` of the event being handled + 1, stamped on writes made through `ctx.records`.
    depth: Arc<AtomicU8>,
}

impl Api {
    pub fn new(services: &HostServices, budget: &Budget) -> Api {
        Api {
            db: services
                .database
                .clone()
                .map(|open| DbHandle::new(open, budget.clone())),
            services: services.clone(),
            depth: Arc::new(AtomicU8::new(1)),
        }
    }

    /// Installs the service objects in a fresh context.
    pub fn install(&self, ctx: &Ctx<'_>) -> Result<()> {
        let api = Object::new(ctx.clone())?;
        if let Some(h) = &self.db {
            api.set("db", db::db_object(ctx, h.clone())?)?;
        }
        let rt = self.services.runtime.clone();
        if let Some(s) = &self.services.storage {
            let o = services::storage_object(ctx, s.clone(), rt.clone())?;
            api.set("storage", o)?;
        }
        if let Some(r) = &self.services.records {
            let o = services::records_object(ctx, r.clone(), rt, self.depth.clone())?;
            api.set("records", o)?;
        }
        ctx.globals().set(API_GLOBAL, api)
    }

    /// Called before each invocation with the depth of the event that caused it.
    pub fn begin(&self, cause_depth: u8) {
        self.depth
            .store(cause_depth.saturating_add(1), Ordering::Relaxed);
    }

    /// Called after each invocation, whatever its outcome.
    pub fn finish(&self, file: &str) {
        if let Some(db) = &self.db {
            db.finish_invocation(file);
        }
    }
}

fn base<'js>(ctx: &Ctx<'js>, file: &str) -> Result<Object<'js>> {
    let out = Object::new(ctx.clone())?;
    let api: Option<Object> = ctx.globals().get(API_GLOBAL)?;
    if let Some(api) = api {
        for key in ["db", "storage", "records"] {
            let v: Value = api.get(key)?;
            if !v.is_undefined() {
                out.set(key, v)?;
            }
        }
    }
    out.set("logger", logger::logger(ctx, file)?)?;
    Ok(out)
}

fn safe_user<'js>(ctx: &Ctx<'js>, u: &bakend_core::access::Caller) -> Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    o.set("id", u.id.as_str())?;
    o.set("email", u.email.as_str())?;
    o.set("role", u.role.as_str())?;
    o.set("createdAt", u.created_at.as_str())?;
    Ok(o)
}

/// `{ event, record, previous, auth: { user }, logger, db, storage, records }` for a trigger.
pub(crate) fn trigger_context<'js>(
    ctx: &Ctx<'js>,
    event: &Event,
    file: &str,
) -> Result<Object<'js>> {
    let envelope: Value = ctx.json_parse(event.envelope_json().as_bytes())?;
    let payload: Option<Object> = match envelope.as_object() {
        Some(o) => {
            let p: Value = o.get("payload")?;
            p.as_object().filter(|o| !o.is_array()).cloned()
        }
        None => None,
    };
    let record = match payload.clone() {
        Some(p) => p,
        None => Object::new(ctx.clone())?,
    };
    let previous = match &event.previous {
        Some(p) => bridge::json_to_js(ctx, p)?,
        None => Value::new_null(ctx.clone()),
    };
    let auth = Object::new(ctx.clone())?;
    // Auth events: the (safe) user the event is about. Other events: the signed-in user whose
    // request caused it, if any.
    match (payload, &event.actor) {
        (Some(user), _) if event.event_type.starts_with("auth.") => auth.set("user", user)?,
        (_, Some(actor)) => auth.set("user", safe_user(ctx, actor)?)?,
        _ => auth.set("user", rquickjs::Null)?,
    }
    let out = base(ctx, file)?;
    out.set("event", envelope)?;
    out.set("record", record)?;
    out.set("previous", previous)?;
    out.set("auth", auth)?;
    Ok(out)
}

/// `{ job: { name, runId, attempt }, logger, db, storage, records }` for a job run.
pub(crate) fn job_context<'js>(
    ctx: &Ctx<'js>,
    file: &str,
    name: &str,
    run_id: &str,
    attempt: u32,
) -> Result<Object<'js>> {
    let job = Object::new(ctx.clone())?;
    job.set("name", name)?;
    job.set("runId", run_id)?;
    job.set("attempt", attempt)?;
    let out = base(ctx, file)?;
    out.set("job", job)?;
    Ok(out)
}
