//! `ctx.logger`: `debug/info/warn/error` into `tracing`, with the user's file as a field.

use rquickjs::function::Rest;
use rquickjs::{Coerced, Ctx, Function, Object, Result};

/// `file` is the project-relative path of the handler's file (the `function` log field).
pub(crate) fn logger<'js>(ctx: &Ctx<'js>, file: &str) -> Result<Object<'js>> {
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
    // v1 had a no-op `close()`; keep it so ported code does not throw.
    logger.set("close", Function::new(ctx.clone(), || {})?)?;
    Ok(logger)
}
