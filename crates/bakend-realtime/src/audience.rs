//! Who may receive an event, and what they see (fixing v1's leaks).
//!
//! Collection events follow the collection's `read` rule through the one permission decision,
//! against the record as it is now (for a deletion: as it was before). Every other event goes to
//! every subscriber of its channel, but anyone who is neither an admin nor the event's subject
//! gets a redacted payload: no email on `auth.*`, only `{id, visibility, createdAt}` for a
//! protected upload, no error text on `function.*`/`job.*`.
//!
//! Filtered subscriptions decide per record whether the viewer may read it (before and after
//! a change) through [`can_read_record`], the one function that answers that question.

use bakend_auth::permissions::{Decision, decide};
use bakend_auth::{AuthContext, Operation, Permission, Rule};
use bakend_core::access::OWNER_FIELD;
use bakend_core::{Event, EventSource};
use serde_json::{Map, Value, json};
use tungstenite::Utf8Bytes;

use crate::protocol::event_frame;

/// What the hub needs to know about collections: the read rule, and whether the collection
/// has an owner field. `None` means the collection does not exist (its events go nowhere).
pub trait ReadRules: Send + Sync + 'static {
    fn read_rule(&self, collection: &str) -> Option<(Permission, bool)>;
    /// The names a subscription filter on `collection` may use (`None`: no such collection).
    fn filter_schema(&self, collection: &str) -> Option<bakend_filter::Schema>;
}

/// A collection's read rule as the hub applies it to records, looked up once per event or
/// request (`None` inside: the collection does not exist, and nobody reads its records).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordRule(Option<(Permission, bool)>);

/// Who can read any record of a collection at all, whatever the record: lets the hub look up
/// candidates by owner instead of walking every subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readers {
    /// Depends on the rule, not on who owns the record.
    Any,
    /// Only the record's owner and admins.
    OwnerAndAdmins,
    /// Admins only.
    Admins,
    Nobody,
}

impl RecordRule {
    pub fn of(rules: &dyn ReadRules, collection: &str) -> RecordRule {
        RecordRule(rules.read_rule(collection))
    }

    pub fn readers(&self) -> Readers {
        match &self.0 {
            None => Readers::Nobody,
            Some((rule, owned)) => match (rule.keyword(), owned) {
                (Some(Rule::Owner), true) => Readers::OwnerAndAdmins,
                (Some(Rule::Owner), false) | (Some(Rule::Admin), _) => Readers::Admins,
                // An expression rule can let anyone read a record, whoever owns it.
                _ => Readers::Any,
            },
        }
    }
}

#[derive(Debug)]
pub enum Audience {
    /// Readable under `rule` for a record owned by `owner`; an expression rule is evaluated on
    /// `record` (the record now, or as it was before a deletion).
    Rule {
        rule: Permission,
        owner: Option<String>,
        record: Option<Value>,
    },
    /// Everyone subscribed; non-admins other than the subject may get a redacted frame.
    Everyone,
    Nobody,
}

#[derive(Debug)]
pub struct Delivery {
    pub audience: Audience,
    pub full: Utf8Bytes,
    pub redacted: Option<Utf8Bytes>,
    pub subject: Option<String>,
}

fn is_record_event(e: &Event) -> bool {
    e.source == EventSource::Collections && !e.event_type.starts_with("system.")
}

fn redact(e: &Event) -> Option<Value> {
    let payload = e.payload.as_object()?;
    let keep = |keys: &[&str]| -> Value {
        Value::Object(
            payload
                .iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<String, Value>>(),
        )
    };
    let without = |key: &str| -> Option<Value> {
        payload.contains_key(key).then(|| {
            let mut m = payload.clone();
            m.remove(key);
            Value::Object(m)
        })
    };
    match e.event_type.as_str() {
        "auth.register" | "auth.login" => without("email"),
        "storage.uploaded" if payload.get("visibility") != Some(&json!("public")) => {
            Some(keep(&["id", "visibility", "createdAt"]))
        }
        t if t.starts_with("function.") || t.starts_with("job.") => without("error"),
        _ => None,
    }
}

/// Whether `ctx` may read `record` (its JSON wire shape) under its collection's `rule`: for a
/// per-record `snapshot`, and for filtered subscriptions, the record before and after each
/// change. The same decision as for the collection's events; the one place the hub asks it of
/// a record.
pub fn can_read_record(rule: &RecordRule, record: &Value, ctx: &AuthContext) -> bool {
    let owner = record.get(OWNER_FIELD).and_then(Value::as_str);
    match &rule.0 {
        None => false,
        Some((Permission::Keyword(Rule::Owner), false)) => ctx.is_admin(),
        Some((rule, _)) => {
            decide(ctx, rule, Operation::Read, owner, Some(record)) == Decision::Allow
        }
    }
}

impl Delivery {
    pub fn of(e: &Event, rules: &dyn ReadRules) -> Delivery {
        let full = event_frame(&e.envelope_json());
        if is_record_event(e) {
            let collection = e.event_type.rsplit_once('.').map(|(c, _)| c).unwrap_or("");
            let audience = match rules.read_rule(collection) {
                None => Audience::Nobody,
                // An owner rule on a collection without an owner field: only admins read it.
                Some((Permission::Keyword(Rule::Owner), false)) => Audience::Rule {
                    rule: Rule::Admin.into(),
                    owner: None,
                    record: None,
                },
                Some((rule, _)) => {
                    // An expression is decided on the record; a deletion's payload is only
                    // `{id}`, so its record is the one before.
                    let record = match &rule {
                        Permission::Keyword(_) => None,
                        Permission::Expression(_) => Some(
                            e.previous
                                .clone()
                                .filter(|_| e.event_type.ends_with(".deleted"))
                                .unwrap_or_else(|| e.payload.clone()),
                        ),
                    };
                    Audience::Rule {
                        rule,
                        owner: e.subject.clone(),
                        record,
                    }
                }
            };
            return Delivery {
                audience,
                full,
                redacted: None,
                subject: e.subject.clone(),
            };
        }
        let redacted = redact(e).map(|payload| {
            let mut copy = e.clone();
            copy.payload = payload;
            event_frame(&copy.envelope_json())
        });
        Delivery {
            audience: Audience::Everyone,
            full,
            redacted,
            subject: e.subject.clone(),
        }
    }

    /// The frame this viewer may receive, if any.
    pub fn frame_for(&self, ctx: &AuthContext) -> Option<&Utf8Bytes> {
        match &self.audience {
            Audience::Nobody => None,
            Audience::Rule {
                rule,
                owner,
                record,
            } => (decide(
                ctx,
                rule,
                Operation::Read,
                owner.as_deref(),
                record.as_ref(),
            ) == Decision::Allow)
                .then_some(&self.full),
            Audience::Everyone => {
                let privileged = ctx.is_admin()
                    || (self.subject.is_some()
                        && ctx.user().map(|u| u.id.as_str()) == self.subject.as_deref());
                match (&self.redacted, privileged) {
                    (Some(r), false) => Some(r),
                    _ => Some(&self.full),
                }
            }
        }
    }

    /// For owner-rule events: the only non-admin who can receive it.
    pub fn sole_owner(&self) -> Option<Option<&str>> {
        match &self.audience {
            Audience::Rule {
                rule: Permission::Keyword(Rule::Owner),
                owner,
                ..
            } => Some(owner.as_deref()),
            _ => None,
        }
    }
}
