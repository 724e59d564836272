//! The `@` values of one request or subscriber.

use bakend_core::access::AuthContext;

use crate::parse::Var;

/// What `@request.auth.id`, `@request.auth.role`, `@request.auth.email` and `@now` stand for.
/// The SQL compiler binds them as parameters; the evaluator reads them. When nobody is signed in
/// every `@request.auth` value is null.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVars {
    pub auth_id: Option<String>,
    /// `"admin"`, `"authenticated"`, `"public"` (`bakend_core::access::Role::as_str`).
    pub auth_role: Option<String>,
    pub auth_email: Option<String>,
    /// The request's time in the canonical form (`bakend_core::time::now_iso`), taken once so
    /// every `@now` in a filter is the same instant.
    pub now: String,
}

impl RequestVars {
    /// The values for `auth` at `now` (canonical ISO, e.g. `bakend_core::time::now_iso()`).
    pub fn new(auth: &AuthContext, now: impl Into<String>) -> RequestVars {
        let user = auth.user();
        RequestVars {
            auth_id: user.map(|u| u.id.clone()),
            auth_role: user.map(|u| u.role.as_str().to_string()),
            auth_email: user.map(|u| u.email.clone()),
            now: now.into(),
        }
    }

    /// Nobody signed in.
    pub fn anonymous(now: impl Into<String>) -> RequestVars {
        RequestVars::new(&AuthContext::Anonymous, now)
    }

    /// The value of `var`; `None` is null.
    pub fn get(&self, var: Var) -> Option<&str> {
        match var {
            Var::AuthId => self.auth_id.as_deref(),
            Var::AuthRole => self.auth_role.as_deref(),
            Var::AuthEmail => self.auth_email.as_deref(),
            Var::Now => Some(&self.now),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bakend_core::access::{AuthContext, Caller, Role};

    use super::*;

    #[test]
    fn from_an_auth_context() {
        let anon = RequestVars::anonymous("2024-01-01T00:00:00.000Z");
        assert_eq!(anon.get(Var::AuthId), None);
        assert_eq!(anon.get(Var::AuthRole), None);
        assert_eq!(anon.get(Var::Now), Some("2024-01-01T00:00:00.000Z"));
        let user = AuthContext::User(Arc::new(Caller {
            id: "usr_1".into(),
            email: "a@example.com".into(),
            role: Role::Admin,
            created_at: "2024-01-01T00:00:00.000Z".into(),
        }));
        let v = RequestVars::new(&user, "now");
        assert_eq!(v.get(Var::AuthId), Some("usr_1"));
        assert_eq!(v.get(Var::AuthRole), Some("admin"));
        assert_eq!(v.get(Var::AuthEmail), Some("a@example.com"));
    }
}
