//! The permission decision (spec `rest-api.md` §4, with upstream's owner gaps fixed).

use bakend_core::access::{AuthContext, Operation, Rule};

/// The answer to "may this caller do this operation under this rule?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Lists: allowed, but only records whose `user_id` is this id.
    AllowOwnedBy(String),
    /// Create under `owner`: allowed, and the record's `user_id` must be this id.
    AllowAsOwner(String),
    /// The rule needs a signed-in caller and there is none (401).
    Unauthenticated,
    /// The caller is known but not allowed (403).
    Forbidden,
}

/// Decides `op` under `rule`. `owner` is the record's `user_id` for operations on one existing
/// record (read, update, delete); it is ignored for list and create.
pub fn decide(ctx: &AuthContext, rule: Rule, op: Operation, owner: Option<&str>) -> Decision {
    if ctx.is_admin() {
        return Decision::Allow;
    }
    let user = ctx.user();
    match rule {
        Rule::Public => Decision::Allow,
        Rule::Authenticated => match user {
            Some(_) => Decision::Allow,
            None => Decision::Unauthenticated,
        },
        Rule::Admin => match user {
            Some(_) => Decision::Forbidden,
            None => Decision::Unauthenticated,
        },
        Rule::Owner => {
            let Some(user) = user else {
                return Decision::Unauthenticated;
            };
            match op {
                Operation::List => Decision::AllowOwnedBy(user.id.clone()),
                Operation::Create => Decision::AllowAsOwner(user.id.clone()),
                Operation::Read | Operation::Update | Operation::Delete => {
                    if owner == Some(user.id.as_str()) {
                        Decision::Allow
                    } else {
                        Decision::Forbidden
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::access::{Caller, Role};
    use std::sync::Arc;

    fn user(id: &str, role: Role) -> AuthContext {
        AuthContext::User(Arc::new(Caller {
            id: id.into(),
            email: format!("{id}@x.y"),
            role,
            created_at: String::new(),
        }))
    }

    #[test]
    fn anonymous_gets_401_for_every_non_public_rule() {
        for rule in [Rule::Authenticated, Rule::Owner, Rule::Admin] {
            for op in [Operation::List, Operation::Create, Operation::Read] {
                assert_eq!(
                    decide(&AuthContext::Anonymous, rule, op, None),
                    Decision::Unauthenticated
                );
            }
        }
        assert_eq!(
            decide(
                &AuthContext::Anonymous,
                Rule::Public,
                Operation::Delete,
                None
            ),
            Decision::Allow
        );
    }

    #[test]
    fn owner_rule_per_operation() {
        let alice = user("usr_a", Role::Authenticated);
        assert_eq!(
            decide(&alice, Rule::Owner, Operation::List, None),
            Decision::AllowOwnedBy("usr_a".into())
        );
        assert_eq!(
            decide(&alice, Rule::Owner, Operation::Create, None),
            Decision::AllowAsOwner("usr_a".into())
        );
        assert_eq!(
            decide(&alice, Rule::Owner, Operation::Read, Some("usr_a")),
            Decision::Allow
        );
        assert_eq!(
            decide(&alice, Rule::Owner, Operation::Update, Some("usr_b")),
            Decision::Forbidden
        );
        assert_eq!(
            decide(&alice, Rule::Owner, Operation::Delete, None),
            Decision::Forbidden
        );
    }

    #[test]
    fn admins_pass_everything_and_public_role_counts_as_signed_in() {
        let admin = user("usr_x", Role::Admin);
        for rule in [Rule::Public, Rule::Authenticated, Rule::Owner, Rule::Admin] {
            assert_eq!(
                decide(&admin, rule, Operation::Update, Some("other")),
                Decision::Allow
            );
        }
        let p = user("usr_p", Role::Public);
        assert_eq!(
            decide(&p, Rule::Authenticated, Operation::Read, None),
            Decision::Allow
        );
        assert_eq!(
            decide(&p, Rule::Admin, Operation::Read, None),
            Decision::Forbidden
        );
    }
}
