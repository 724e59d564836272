//! Every access decision (spec `rest-api.md` §4 and `storage.md`, with upstream's owner gaps
//! fixed): [`authorize`] is the one entry point — REST handlers, the storage routes and the
//! admin API ask it; [`decide`] is its collection-rule case, which the realtime hub also calls
//! once per recipient.
//!
//! Decisions that depend on a row the store reads inside its write come back as a constraint
//! ([`Decision::AllowOwnedBy`]) that the store enforces in the same transaction, so nothing can
//! change hands between the check and the write.

use std::sync::Arc;

use bakend_core::access::{AuthContext, Operation, Rule};
use bakend_filter::RequestVars;
use bakend_store::{FileAccess, ListQuery, Permission, Precondition, RuleExpression};
use serde_json::Value;

/// Something a caller wants to do: the question [`authorize`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// `op` on a collection's records under the collection's `rule` for it. For read, update
    /// and delete of one record: its `owner` (keyword rules) and the `record` itself
    /// (expression rules); both are ignored for list and create.
    Record {
        rule: &'a Permission,
        op: Operation,
        owner: Option<&'a str>,
        record: Option<&'a Value>,
    },
    /// Who owns a record the caller creates in a collection with an owner field; `requested`
    /// is the owner field's value in the body, if it has one.
    NewOwner { requested: Option<&'a Value> },
    /// Setting the owner field of a record owned by `current` to `requested` (an update).
    ChangeOwner {
        current: Option<&'a str>,
        requested: &'a Value,
    },
    /// Downloading a stored file uploaded by `owner`.
    ReadFile { owner: &'a str, public: bool },
    /// Deleting a stored file uploaded by `owner`.
    DeleteFile { owner: &'a str },
    /// Uploading a file.
    Upload,
    /// Putting stored files in a record's `file` fields (which files: see the decision).
    AttachFiles,
    /// The admin API (`/api/admin/*`, jobs, metrics).
    Admin,
}

/// The answer to "may this caller do this?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Yes, as asked.
    Allow,
    /// Yes, for what this user owns: a list shows only their records, a write goes ahead only
    /// if the record or file is (still) theirs when it runs, and only their files may be
    /// attached.
    AllowOwnedBy(String),
    /// Yes, and the new record's owner field is set to this id (whatever the body said).
    AllowAsOwner(String),
    /// Yes, and the new record has no owner (`null`): anonymous creators cannot claim one.
    AllowUnowned,
    /// Yes, for the records this permission expression accepts for the caller: a list adds it
    /// to its `WHERE`, a write goes ahead only if the record matches when it runs (for a
    /// create: the record as it will be stored).
    AllowMatching(Arc<RuleExpression>),
    /// It needs a signed-in caller and there is none (401).
    Unauthenticated,
    /// The caller is known but not allowed (403).
    Forbidden,
}

impl Decision {
    /// `Unauthenticated` and `Forbidden` are refusals; every other answer lets the caller go on.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Decision::Unauthenticated | Decision::Forbidden)
    }

    /// The user an `AllowOwnedBy` limits the caller to: the list filter, or the owner a write
    /// must still find when it runs.
    pub fn owned_by(self) -> Option<String> {
        match self {
            Decision::AllowOwnedBy(id) => Some(id),
            _ => None,
        }
    }

    /// Narrows list `q` to what this list decision lets the caller see (its owner's records,
    /// or those an expression rule accepts, with the caller's `@request` values in `q.vars`).
    /// Refusals leave `q` as it is: check them first.
    pub fn restrict_list(self, q: &mut ListQuery) {
        match self {
            Decision::AllowOwnedBy(user) => q.owned_by = Some(user),
            Decision::AllowMatching(rule) => q.filters.push(rule.filter.clone()),
            _ => {}
        }
    }

    /// What the writer must still find true when `ctx`'s write runs.
    pub fn precondition(self, ctx: &AuthContext) -> Precondition {
        match self {
            Decision::AllowOwnedBy(id) => Precondition::Owner(id),
            Decision::AllowMatching(rule) => Precondition::Matches(rule, request_vars(ctx)),
            _ => Precondition::None,
        }
    }
}

/// The `@request.*` values of an expression decided now for `ctx`.
pub fn request_vars(ctx: &AuthContext) -> RequestVars {
    RequestVars::new(ctx, bakend_core::time::now_iso())
}

/// Which stored files an [`Request::AttachFiles`] decision lets the writer reference.
impl From<Decision> for FileAccess {
    fn from(d: Decision) -> FileAccess {
        match d {
            Decision::Allow => FileAccess::Any,
            Decision::AllowOwnedBy(id) => FileAccess::OwnedBy(id),
            _ => FileAccess::NoneOwned,
        }
    }
}

/// Decides `request` for `ctx`. Admins may do everything (and may create on someone's
/// behalf); otherwise:
///
/// ```
/// use std::sync::Arc;
/// use bakend_auth::permissions::{authorize, Decision, Request};
/// use bakend_auth::{AuthContext, Caller, Operation, Permission, Role, Rule};
/// use serde_json::json;
///
/// let alice = AuthContext::User(Arc::new(Caller {
///     id: "usr_a".into(), email: "a@x.y".into(), role: Role::Authenticated, created_at: String::new(),
/// }));
/// let anon = AuthContext::Anonymous;
/// let record = |rule: &'static Permission, op, owner| Request::Record { rule, op, owner, record: None };
/// let (owner_rule, auth_rule): (&Permission, &Permission) =
///     (Box::leak(Box::new(Rule::Owner.into())), Box::leak(Box::new(Rule::Authenticated.into())));
///
/// // Collection rules: `owner` lets alice read her record, not bob's; lists show only hers,
/// // and her update goes ahead only if the record is still hers when the write runs.
/// assert_eq!(authorize(&alice, record(owner_rule, Operation::Read, Some("usr_a"))), Decision::Allow);
/// assert_eq!(authorize(&alice, record(owner_rule, Operation::Read, Some("usr_b"))), Decision::Forbidden);
/// assert_eq!(authorize(&alice, record(owner_rule, Operation::List, None)), Decision::AllowOwnedBy("usr_a".into()));
/// assert_eq!(authorize(&alice, record(owner_rule, Operation::Update, Some("usr_a"))), Decision::AllowOwnedBy("usr_a".into()));
/// assert_eq!(authorize(&anon, record(auth_rule, Operation::Read, None)), Decision::Unauthenticated);
///
/// // Owners of new records: a signed-in non-admin always owns what they create; anonymous
/// // creators cannot claim anyone.
/// let bob = json!("usr_b");
/// assert_eq!(authorize(&alice, Request::NewOwner { requested: Some(&bob) }), Decision::AllowAsOwner("usr_a".into()));
/// assert_eq!(authorize(&anon, Request::NewOwner { requested: Some(&bob) }), Decision::AllowUnowned);
///
/// // Only admins change an owner; restating the current one is fine.
/// assert_eq!(authorize(&alice, Request::ChangeOwner { current: Some("usr_a"), requested: &bob }), Decision::Forbidden);
/// assert_eq!(authorize(&alice, Request::ChangeOwner { current: Some("usr_a"), requested: &json!("usr_a") }), Decision::Allow);
///
/// // Files: public ones are for everyone, protected ones for their uploader; a delete must
/// // still find the file hers; she may attach only files she uploaded.
/// assert_eq!(authorize(&anon, Request::ReadFile { owner: "usr_b", public: true }), Decision::Allow);
/// assert_eq!(authorize(&alice, Request::ReadFile { owner: "usr_b", public: false }), Decision::Forbidden);
/// assert_eq!(authorize(&alice, Request::DeleteFile { owner: "usr_a" }), Decision::AllowOwnedBy("usr_a".into()));
/// assert_eq!(authorize(&alice, Request::AttachFiles), Decision::AllowOwnedBy("usr_a".into()));
/// // Anonymous writers own no file, so they may attach none.
/// assert_eq!(authorize(&anon, Request::AttachFiles), Decision::Unauthenticated);
/// ```
pub fn authorize(ctx: &AuthContext, request: Request<'_>) -> Decision {
    use Decision::*;
    let admin = ctx.is_admin();
    match (request, ctx.user()) {
        (
            Request::Record {
                rule,
                op,
                owner,
                record,
            },
            _,
        ) => decide(ctx, rule, op, owner, record),
        (Request::NewOwner { .. }, None) => AllowUnowned,
        (Request::NewOwner { requested: Some(v) }, Some(_)) if admin && !v.is_null() => Allow,
        (Request::NewOwner { .. }, Some(u)) => AllowAsOwner(u.id.clone()),
        (Request::ReadFile { public: true, .. }, _) => Allow,
        (Request::ChangeOwner { current, requested }, _) if requested.as_str() == current => Allow,
        (_, None) => Unauthenticated,
        (_, Some(_)) if admin => Allow,
        (Request::ReadFile { owner, .. }, Some(u)) if owner == u.id => Allow,
        (Request::DeleteFile { owner }, Some(u)) if owner == u.id => AllowOwnedBy(u.id.clone()),
        (Request::Upload, _) => Allow,
        (Request::AttachFiles, Some(u)) => AllowOwnedBy(u.id.clone()),
        (
            Request::ChangeOwner { .. }
            | Request::ReadFile { .. }
            | Request::DeleteFile { .. }
            | Request::Admin,
            _,
        ) => Forbidden,
    }
}

/// [`authorize`] for `Request::Record`: may `ctx` do `op` under the collection's permission
/// `rule`? `owner` (keyword rules) and `record` (expression rules) describe the existing record
/// for operations on one (read, update, delete); both are ignored for list and create.
pub fn decide(
    ctx: &AuthContext,
    rule: &Permission,
    op: Operation,
    owner: Option<&str>,
    record: Option<&Value>,
) -> Decision {
    if ctx.is_admin() {
        return Decision::Allow;
    }
    match rule {
        Permission::Keyword(rule) => decide_keyword(ctx, *rule, op, owner),
        Permission::Expression(e) => decide_expression(ctx, e, op, record),
    }
}

fn decide_keyword(ctx: &AuthContext, rule: Rule, op: Operation, owner: Option<&str>) -> Decision {
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
                Operation::Read if owner == Some(user.id.as_str()) => Decision::Allow,
                // The write re-checks the owner in its transaction.
                Operation::Update | Operation::Delete if owner == Some(user.id.as_str()) => {
                    Decision::AllowOwnedBy(user.id.clone())
                }
                Operation::Read | Operation::Update | Operation::Delete => Decision::Forbidden,
            }
        }
    }
}

/// An expression rule: evaluated on the record when there is one (a write re-checks it in its
/// transaction); a list or a create carries it to the store. A record it rejects is 401 for an
/// anonymous caller and 403 for a signed-in one, as with the keyword rules.
fn decide_expression(
    ctx: &AuthContext,
    rule: &Arc<RuleExpression>,
    op: Operation,
    record: Option<&Value>,
) -> Decision {
    let record = match (op, record) {
        (Operation::List | Operation::Create, _) | (_, None) => {
            return Decision::AllowMatching(rule.clone());
        }
        (_, Some(record)) => record,
    };
    if !rule.filter.matches(record, &request_vars(ctx)) {
        return match ctx.user() {
            Some(_) => Decision::Forbidden,
            None => Decision::Unauthenticated,
        };
    }
    match op {
        Operation::Read => Decision::Allow,
        _ => Decision::AllowMatching(rule.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::access::{Caller, Role};
    use serde_json::json;
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
                    decide(&AuthContext::Anonymous, &rule.into(), op, None, None),
                    Decision::Unauthenticated
                );
            }
        }
        assert_eq!(
            decide(
                &AuthContext::Anonymous,
                &Rule::Public.into(),
                Operation::Delete,
                None,
                None
            ),
            Decision::Allow
        );
    }

    fn expression(src: &str) -> Permission {
        let def = bakend_store::collections::definition::parse(&json!({
            "name": "t",
            "fields": [{"name": "published", "type": "boolean"}, {"name": "user_id", "type": "string"}],
            "permissions": {"read": src}
        }))
        .unwrap()
        .def;
        def.permissions.read
    }

    #[test]
    fn expression_rules_decide_on_the_record() {
        let rule = expression("published = true || user_id = @request.auth.id");
        let Permission::Expression(e) = &rule else {
            panic!("not an expression: {rule:?}")
        };
        let alice = user("usr_a", Role::Authenticated);
        let anon = AuthContext::Anonymous;
        let hers = json!({"id": "r1", "published": false, "user_id": "usr_a"});
        let public = json!({"id": "r2", "published": true, "user_id": "usr_b"});
        let bobs = json!({"id": "r3", "published": false, "user_id": "usr_b"});
        let read =
            |ctx: &AuthContext, r: &Value| decide(ctx, &rule, Operation::Read, None, Some(r));
        assert_eq!(read(&alice, &hers), Decision::Allow);
        assert_eq!(read(&alice, &public), Decision::Allow);
        assert_eq!(read(&alice, &bobs), Decision::Forbidden);
        assert_eq!(read(&anon, &public), Decision::Allow);
        assert_eq!(read(&anon, &hers), Decision::Unauthenticated);
        // Lists and creates carry the rule to the store; writes re-check it there.
        let matching = Decision::AllowMatching(e.clone());
        assert_eq!(decide(&alice, &rule, Operation::List, None, None), matching);
        assert_eq!(
            decide(&anon, &rule, Operation::Create, None, None),
            matching
        );
        assert_eq!(
            decide(&alice, &rule, Operation::Update, None, Some(&hers)),
            matching
        );
        assert_eq!(
            decide(&alice, &rule, Operation::Delete, None, Some(&bobs)),
            Decision::Forbidden
        );
        // Admins are never asked.
        let admin = user("usr_x", Role::Admin);
        assert_eq!(read(&admin, &bobs), Decision::Allow);
        assert!(matches!(
            matching.precondition(&alice),
            Precondition::Matches(_, v) if v.auth_id.as_deref() == Some("usr_a")
        ));
    }

    #[test]
    fn owner_rule_per_operation() {
        let alice = user("usr_a", Role::Authenticated);
        assert_eq!(
            decide(&alice, &Rule::Owner.into(), Operation::List, None, None),
            Decision::AllowOwnedBy("usr_a".into())
        );
        assert_eq!(
            decide(&alice, &Rule::Owner.into(), Operation::Create, None, None),
            Decision::AllowAsOwner("usr_a".into())
        );
        assert_eq!(
            decide(
                &alice,
                &Rule::Owner.into(),
                Operation::Read,
                Some("usr_a"),
                None
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &alice,
                &Rule::Owner.into(),
                Operation::Update,
                Some("usr_b"),
                None
            ),
            Decision::Forbidden
        );
        assert_eq!(
            decide(&alice, &Rule::Owner.into(), Operation::Delete, None, None),
            Decision::Forbidden
        );
    }

    /// Every non-record request, for every kind of caller: (request, anonymous, owner
    /// `usr_a`, another user, admin).
    #[test]
    fn authorize_table() {
        let a = || user("usr_a", Role::Authenticated);
        let b = || user("usr_b", Role::Authenticated);
        let admin = || user("usr_x", Role::Admin);
        let anon = || AuthContext::Anonymous;
        let other = json!("usr_b");
        let same = json!("usr_a");
        let null = Value::Null;
        use Decision::*;
        let owned = |id: &str| AllowOwnedBy(id.into());
        let as_owner = |id: &str| AllowAsOwner(id.into());
        let rows: Vec<(Request<'_>, [Decision; 4])> = vec![
            (
                Request::NewOwner { requested: None },
                [
                    AllowUnowned,
                    as_owner("usr_a"),
                    as_owner("usr_b"),
                    as_owner("usr_x"),
                ],
            ),
            (
                Request::NewOwner {
                    requested: Some(&other),
                },
                [AllowUnowned, as_owner("usr_a"), as_owner("usr_b"), Allow],
            ),
            (
                Request::NewOwner {
                    requested: Some(&null),
                },
                [
                    AllowUnowned,
                    as_owner("usr_a"),
                    as_owner("usr_b"),
                    as_owner("usr_x"),
                ],
            ),
            (
                Request::ChangeOwner {
                    current: Some("usr_a"),
                    requested: &other,
                },
                [Unauthenticated, Forbidden, Forbidden, Allow],
            ),
            (
                Request::ChangeOwner {
                    current: Some("usr_a"),
                    requested: &same,
                },
                [Allow, Allow, Allow, Allow],
            ),
            (
                Request::ChangeOwner {
                    current: Some("usr_a"),
                    requested: &null,
                },
                [Unauthenticated, Forbidden, Forbidden, Allow],
            ),
            (
                Request::ChangeOwner {
                    current: None,
                    requested: &null,
                },
                [Allow, Allow, Allow, Allow],
            ),
            (
                Request::ReadFile {
                    owner: "usr_a",
                    public: false,
                },
                [Unauthenticated, Allow, Forbidden, Allow],
            ),
            (
                Request::ReadFile {
                    owner: "usr_a",
                    public: true,
                },
                [Allow, Allow, Allow, Allow],
            ),
            (
                Request::DeleteFile { owner: "usr_a" },
                [Unauthenticated, owned("usr_a"), Forbidden, Allow],
            ),
            (Request::Upload, [Unauthenticated, Allow, Allow, Allow]),
            (
                Request::AttachFiles,
                [Unauthenticated, owned("usr_a"), owned("usr_b"), Allow],
            ),
            (
                Request::Admin,
                [Unauthenticated, Forbidden, Forbidden, Allow],
            ),
        ];
        for (request, want) in rows {
            let got = [anon(), a(), b(), admin()].map(|ctx| authorize(&ctx, request));
            assert_eq!(got, want, "{request:?}");
        }
    }

    #[test]
    fn attach_decisions_become_file_access() {
        let a = user("usr_a", Role::Authenticated);
        let admin = user("usr_x", Role::Admin);
        let access = |ctx: &AuthContext| FileAccess::from(authorize(ctx, Request::AttachFiles));
        assert_eq!(access(&AuthContext::Anonymous), FileAccess::NoneOwned);
        assert_eq!(access(&a), FileAccess::OwnedBy("usr_a".into()));
        assert_eq!(access(&admin), FileAccess::Any);
    }

    #[test]
    fn owner_writes_carry_the_owner_to_recheck() {
        let alice = user("usr_a", Role::Authenticated);
        for op in [Operation::Update, Operation::Delete] {
            assert_eq!(
                decide(&alice, &Rule::Owner.into(), op, Some("usr_a"), None),
                Decision::AllowOwnedBy("usr_a".into())
            );
            assert_eq!(
                decide(&alice, &Rule::Authenticated.into(), op, Some("usr_b"), None),
                Decision::Allow
            );
        }
    }

    #[test]
    fn admins_pass_everything_and_public_role_counts_as_signed_in() {
        let admin = user("usr_x", Role::Admin);
        for rule in [Rule::Public, Rule::Authenticated, Rule::Owner, Rule::Admin] {
            assert_eq!(
                decide(&admin, &rule.into(), Operation::Update, Some("other"), None),
                Decision::Allow
            );
        }
        let p = user("usr_p", Role::Public);
        assert_eq!(
            decide(&p, &Rule::Authenticated.into(), Operation::Read, None, None),
            Decision::Allow
        );
        assert_eq!(
            decide(&p, &Rule::Admin.into(), Operation::Read, None, None),
            Decision::Forbidden
        );
    }
}
