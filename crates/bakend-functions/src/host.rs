//! The context object handed to a trigger handler: `{ event, record, auth, logger }`.

use bakend_core::Event;
use rquickjs::function::Rest;
use rquickjs::{Coerced, Ctx, Function, Object, Result, Value};

/// Builds `ctx` for one invocation. `file` is the project-relative path of the handler's file,
/// attached to every log line as the `function` field.
pub fn context_object<'js>(ctx: &Ctx<'js>, event: &Event, file: &str) -> Result<Object<'js>> {
    let envelope: Value = ctx.json_parse(event.envelope_json().as_bytes())?;
    let envelope_obj = envelope.as_object().cloned();
    let payload: Option<Object> = match &envelope_obj {
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

    let auth = Object::new(ctx.clone())?;
    // For auth events the payload is the (safe) user the event is about.
    match payload {
        Some(user) if event.event_type.starts_with("auth.") => auth.set("user", user)?,
        _ => auth.set("user", rquickjs::Null)?,
    }

    let out = Object::new(ctx.clone())?;
    out.set("event", envelope)?;
    out.set("record", record)?;
    out.set("auth", auth)?;
    out.set("logger", logger(ctx, file)?)?;
    Ok(out)
}

fn logger<'js>(ctx: &Ctx<'js>, file: &str) -> Result<Object<'js>> {
    let logger = Object::new(ctx.clone())?;
    macro_rules! level {
        ($name:literal, $mac:ident) => {{
            let file = file.to_string();
            let f = Function::new(ctx.clone(), move |parts: Rest<Coerced<String>>| {
                let msg = parts
                    .0
                    .into_iter()
                    .map(|c| c.0)
                    .collect::<Vec<_>>()
                    .join(" ");
                tracing::$mac!(function = %file, "{}", msg);
            })?
            .with_name($name)?;
            logger.set($name, f)?;
        }};
    }
    level!("debug", debug);
    level!("info", info);
    level!("warn", warn);
    level!("error", error);
    Ok(logger)
}
