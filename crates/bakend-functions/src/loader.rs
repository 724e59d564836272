//! Module resolution inside the JS runtime: `bakend/functions` is a native module, project files
//! are served from the already-transpiled cache (nothing is written to the user's project, and
//! nothing outside `functions/` can be imported).

use std::collections::HashMap;
use std::sync::Arc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::{Declarations, Exports, ModuleDef};
use rquickjs::{Ctx, Error, Module, Object, Result, Value, module::Declared};

pub const NATIVE_MODULE: &str = "bakend/functions";
/// Hidden global holding the registered triggers (`[{file, trigger, collection, eventType, fn}]`).
pub const REGISTRY_GLOBAL: &str = "__bakend_registry";
/// Hidden global naming the file being loaded; registration outside loading throws.
pub const LOADING_GLOBAL: &str = "__bakend_loading";

const EXPORTS: [&str; 7] = [
    "onCreate",
    "onUpdate",
    "onDelete",
    "onLogin",
    "onRegister",
    "onLogout",
    "on",
];

const NATIVE_SOURCE: &str = r#"(() => {
  const reg = [];
  Object.defineProperty(globalThis, "__bakend_registry", { value: reg, enumerable: false });
  const add = (trigger, collection, eventType, fn) => {
    const file = globalThis.__bakend_loading;
    if (!file) throw new Error("Function triggers can only be registered while loading function modules");
    if (typeof fn !== "function") throw new TypeError(`${trigger} trigger needs a handler function`);
    reg.push({ file, trigger, collection, eventType, fn });
  };
  const coll = (c) => {
    if (typeof c !== "string" || c === "") throw new TypeError("collection name must be a non-empty string");
    return c;
  };
  return {
    onCreate: (c, fn) => { add("create", coll(c), `${coll(c)}.created`, fn); },
    onUpdate: (c, fn) => { add("update", coll(c), `${coll(c)}.updated`, fn); },
    onDelete: (c, fn) => { add("delete", coll(c), `${coll(c)}.deleted`, fn); },
    onLogin: (c, fn) => { add("login", String(c ?? "users"), "auth.login", fn); },
    onRegister: (c, fn) => { add("register", String(c ?? "users"), "auth.register", fn); },
    onLogout: (c, fn) => { add("logout", String(c ?? "users"), "auth.logout", fn); },
    on: (t, fn) => {
      if (typeof t !== "string" || t === "") throw new TypeError("event type must be a non-empty string");
      add("event", null, t, fn);
    },
  };
})()"#;

/// The native `bakend/functions` module.
pub struct FunctionsModule;

impl ModuleDef for FunctionsModule {
    fn declare(decl: &Declarations) -> Result<()> {
        for name in EXPORTS {
            decl.declare(name)?;
        }
        Ok(())
    }

    fn evaluate<'js>(ctx: &Ctx<'js>, exports: &Exports<'js>) -> Result<()> {
        let api: Object = ctx.eval(NATIVE_SOURCE)?;
        for name in EXPORTS {
            exports.export(name, api.get::<_, Value>(name)?)?;
        }
        Ok(())
    }
}

/// Transpiled project modules by project-relative path.
pub type ModuleCache = Arc<HashMap<String, String>>;

/// Resolves specifiers against the importing module, confined to `root` (`functions/` or
/// `jobs/`).
pub struct ProjectResolver {
    pub root: &'static str,
    pub modules: ModuleCache,
}

impl Resolver for ProjectResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        if name == NATIVE_MODULE {
            return Ok(name.to_string());
        }
        let resolved = if name.starts_with("./") || name.starts_with("../") {
            let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            normalize(&format!("{dir}/{name}"))
        } else if self.modules.contains_key(name) {
            // A top-level import of a discovered file by its project-relative name.
            Some(name.to_string())
        } else {
            None
        };
        let not_found = || Error::new_resolving_message(base, name, "module not found");
        let path = resolved.ok_or_else(not_found)?;
        if !path.starts_with(self.root) {
            return Err(Error::new_resolving_message(
                base,
                name,
                format!("imports must stay inside the {} folder", self.root),
            ));
        }
        for candidate in [
            path.clone(),
            format!("{path}.ts"),
            format!("{path}/index.ts"),
        ] {
            if self.modules.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
        Err(not_found())
    }
}

/// Collapses `.` and `..` segments; `None` when `..` climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// Declares the native module and project modules from the cache.
pub struct ProjectLoader {
    pub modules: ModuleCache,
}

impl Loader for ProjectLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        if name == NATIVE_MODULE {
            return Module::declare_def::<FunctionsModule, _>(ctx.clone(), name);
        }
        match self.modules.get(name) {
            Some(js) => Module::declare(ctx.clone(), name, js.as_str()),
            None => Err(Error::new_loading_message(name, "module not found")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_handles_dots_and_refuses_escape() {
        assert_eq!(
            normalize("functions/posts/../helpers.ts").as_deref(),
            Some("functions/helpers.ts")
        );
        assert_eq!(
            normalize("functions/./a.ts").as_deref(),
            Some("functions/a.ts")
        );
        assert_eq!(normalize("functions/../../x").as_deref(), None);
    }
}
