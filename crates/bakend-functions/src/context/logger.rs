//! `ctx.logger`: `debug/info/warn/error` into `tracing`, with the user's file as a field.
//! The log sink cuts long messages (`bakend_core::logging::MAX_MESSAGE_BYTES`); the parts are
//! handed to it unjoined so a huge line is not copied once more before being cut.

use rquickjs::function::Rest;
use rquickjs::{Coerced, Ctx, Function, Object, Result};

/// `file` is the project-relative path of the handler's file (the `function` log field).
pub(crate) fn logger<'js>(ctx: &Ctx<'js>, file: &str) -> Result<Object<'js>> {
    let logger = Object::new(ctx.clone())?;
    macro_rules! level {
        ($name:literal, $mac:ident) => {{
            let file = file.to_string();
            let f = Function::new(ctx.clone(), move |parts: Rest<Coerced<String>>| {
                let msg = Joined(parts.0);
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

/// The logged values separated by spaces, written out only as the sink reads them.
struct Joined(Vec<Coerced<String>>);

impl std::fmt::Display for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&part.0)?;
        }
        Ok(())
    }
}
