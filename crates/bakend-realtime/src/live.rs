//! Filtered subscriptions ("live queries", issue 16): what a record event means to one
//! subscription with a filter, and the index that finds the subscriptions an event can concern
//! without looking at the others. `HubState` owns the subscriptions and does the delivery;
//! this module holds the pieces that are about filters alone.
//!
//! For viewer `ctx` and filter `F`, *before* is "the record before an update or deletion is
//! readable by `ctx` and matches `F`", *after* is "the record after a creation or update is
//! readable by `ctx` and matches `F`":
//!
//! | event | before | after | change |
//! |---|---|---|---|
//! | created | – | ✓ | `added` |
//! | updated | ✓ | ✓ | `modified` |
//! | updated | – | ✓ | `added` |
//! | updated | ✓ | – | `removed` (the record if `ctx` still reads it, else `{id}`) |
//! | deleted | ✓ | – | `removed` (`{id}`, as every deletion) |

use std::collections::{HashMap, HashSet};

use bakend_auth::AuthContext;
use bakend_core::access::OWNER_FIELD;
use bakend_core::{Event, EventSource};
use bakend_filter::{Filter, Literal, RequestVars};
use serde_json::Value;

use crate::audience::{RecordRule, can_read_record};
use crate::protocol::Change;

/// The optional parts of a subscribe request that name a subscription (and maybe filter it),
/// as they travel to the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Named {
    pub id: Option<String>,
    pub filter: Option<String>,
    /// A collection snapshot's `sort` and `perPage`.
    pub sort: Option<String>,
    pub per_page: Option<u32>,
}

/// A subscription made with an `id` or a `filter` (plain subscriptions are just their channel).
pub(crate) struct NamedSub {
    pub conn: u64,
    pub id: Box<str>,
    pub channel: Box<str>,
    /// `None`: unfiltered — delivered like a plain subscription, with its own id.
    pub live: Option<Box<Live>>,
}

/// A filter bound to a collection's records.
pub(crate) struct Live {
    pub collection: Box<str>,
    pub filter: Filter,
    /// The equality the subscription is indexed under (`None`: the filter has none).
    pub key: Option<(Box<str>, Literal)>,
    /// `{"type":"event","subscription":<id>,"change":"` (see `protocol::live_frame_head`).
    pub head: Box<str>,
    /// Events with a journal `seq` at or below this are not delivered: the subscription's
    /// collection snapshot already reflects them (0 without one).
    pub after_seq: u64,
}

impl Live {
    pub fn new(collection: &str, filter: Filter, id: &str) -> Live {
        let key = index_key(&filter);
        Live {
            collection: collection.into(),
            filter,
            key,
            head: crate::protocol::live_frame_head(id),
            after_seq: 0,
        }
    }
}

/// The one equality of `filter` to index it under: one that must hold for the filter to hold,
/// preferring anything over a boolean (two values split the subscriptions badly).
fn index_key(filter: &Filter) -> Option<(Box<str>, Literal)> {
    let eqs = filter.equalities();
    eqs.iter()
        .find(|(_, l)| !matches!(l, Literal::Bool(_)))
        .or_else(|| eqs.first())
        .map(|(f, l)| (Box::from(*f), (*l).clone()))
}

/// One collection's filtered subscriptions (by their key in `HubState`).
#[derive(Default)]
pub(crate) struct LiveIndex {
    /// Filters without an equality: every event of the collection is a candidate.
    open: HashSet<u64>,
    /// Field → value → subscriptions whose filter requires `field = value`.
    keyed: HashMap<Box<str>, HashMap<Literal, HashSet<u64>>>,
}

impl LiveIndex {
    pub fn add(&mut self, sub: u64, live: &Live) {
        match &live.key {
            None => {
                self.open.insert(sub);
            }
            Some((field, value)) => {
                self.keyed
                    .entry(field.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .insert(sub);
            }
        }
    }

    pub fn remove(&mut self, sub: u64, live: &Live) {
        match &live.key {
            None => {
                self.open.remove(&sub);
            }
            Some((field, value)) => {
                let Some(values) = self.keyed.get_mut(field) else {
                    return;
                };
                if let Some(subs) = values.get_mut(value) {
                    subs.remove(&sub);
                    if subs.is_empty() {
                        values.remove(value);
                    }
                }
                if values.is_empty() {
                    self.keyed.remove(field);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.keyed.is_empty()
    }

    /// Adds to `out` the subscriptions an event about `current` (the record after the change,
    /// `None` for a deletion) and `previous` (before it) can concern: those without an
    /// equality, and those whose value is the record's, before or after.
    pub fn candidates(
        &self,
        current: Option<&Value>,
        previous: Option<&Value>,
        out: &mut Vec<u64>,
    ) {
        out.extend(self.open.iter().copied());
        for (field, values) in &self.keyed {
            let now = current
                .and_then(|r| r.get(&**field))
                .and_then(Literal::from_json);
            if let Some(subs) = now.as_ref().and_then(|v| values.get(v)) {
                out.extend(subs.iter().copied());
            }
            let before = previous
                .and_then(|r| r.get(&**field))
                .and_then(Literal::from_json);
            if let Some(v) = before
                && Some(&v) != now.as_ref()
                && let Some(subs) = values.get(&v)
            {
                out.extend(subs.iter().copied());
            }
        }
    }
}

/// The kind of a record event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Created,
    Updated,
    Deleted,
}

/// `(collection, action)` of a record event (`posts.updated` → `("posts", Updated)`); `None`
/// for every other event.
pub(crate) fn record_action(e: &Event) -> Option<(&str, Action)> {
    if e.source != EventSource::Collections || e.event_type.starts_with("system.") {
        return None;
    }
    let (collection, action) = e.event_type.rsplit_once('.')?;
    let action = match action {
        "created" => Action::Created,
        "updated" => Action::Updated,
        "deleted" => Action::Deleted,
        _ => return None,
    };
    Some((collection, action))
}

/// The record after the change (`None` for a deletion, whose payload is only `{id}`).
pub(crate) fn current(e: &Event, action: Action) -> Option<&Value> {
    (action != Action::Deleted).then_some(&e.payload)
}

/// The owners of the record before and after the change (for owner-rule collections, whose
/// other users cannot be concerned).
pub(crate) fn owners<'a>(
    current: Option<&'a Value>,
    previous: Option<&'a Value>,
) -> [Option<&'a str>; 2] {
    let owner = |r: Option<&'a Value>| r.and_then(|r| r.get(OWNER_FIELD)).and_then(Value::as_str);
    let (now, before) = (owner(current), owner(previous));
    [now, before.filter(|b| Some(*b) != now)]
}

/// What an event means to one filtered subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub change: Change,
    /// The frame carries the event with only `{id}` as its payload: the viewer may no longer
    /// read the record.
    pub id_only: bool,
}

/// The change an event makes to `filter`'s results as `ctx` sees them (see the module's
/// table); `None`: the record is not in them before or after.
pub(crate) fn judge(
    rule: &RecordRule,
    action: Action,
    current: Option<&Value>,
    previous: Option<&Value>,
    filter: &Filter,
    ctx: &AuthContext,
    vars: &RequestVars,
) -> Option<Outcome> {
    let before = previous.is_some_and(|p| can_read_record(rule, p, ctx) && filter.matches(p, vars));
    let readable = current.is_some_and(|r| can_read_record(rule, r, ctx));
    let after = readable && current.is_some_and(|r| filter.matches(r, vars));
    let change = match (action, before, after) {
        (Action::Created, _, true) | (Action::Updated, false, true) => Change::Added,
        (Action::Updated, true, true) => Change::Modified,
        (Action::Updated | Action::Deleted, true, false) => Change::Removed,
        _ => return None,
    };
    Some(Outcome {
        change,
        id_only: action == Action::Updated && change == Change::Removed && !readable,
    })
}

/// The connection's `@request` values at `now`, kept between events (rebuilt when its identity
/// changes: the owner of the slot clears it then).
pub(crate) fn vars_at<'a>(
    slot: &'a mut Option<Box<RequestVars>>,
    ctx: &AuthContext,
    now: &str,
) -> &'a RequestVars {
    let vars = slot.get_or_insert_with(|| Box::new(RequestVars::new(ctx, now)));
    if vars.now != now {
        vars.now.clear();
        vars.now.push_str(now);
    }
    vars
}

#[cfg(test)]
mod tests {
    use bakend_filter::{Kind, Schema};
    use serde_json::json;

    use super::*;

    fn filter(src: &str) -> Filter {
        let schema = Schema::new()
            .with_field("room", Kind::String)
            .with_field("n", Kind::Integer)
            .with_field("done", Kind::Boolean);
        Filter::new(src, &schema).unwrap()
    }

    #[test]
    fn the_index_key_prefers_a_selective_equality() {
        let key = |src: &str| {
            Live::new("c", filter(src), "x")
                .key
                .map(|(f, l)| (f.to_string(), l))
        };
        assert_eq!(
            key("done = false && room = 'r1'"),
            Some(("room".into(), Literal::Text("r1".into())))
        );
        assert_eq!(
            key("done = true"),
            Some(("done".into(), Literal::Bool(true)))
        );
        assert_eq!(key("n = 2.0"), Some(("n".into(), Literal::Integer(2))));
        assert_eq!(key("room = 'a' || room = 'b'"), None);
        assert_eq!(key("n > 1"), None);
    }

    #[test]
    fn candidates_come_from_the_values_before_and_after() {
        let mut ix = LiveIndex::default();
        let subs = [
            (1, "room = 'r1'"),
            (2, "room = 'r2'"),
            (3, "n > 0"),
            (4, "n = 5"),
        ];
        let lives: Vec<(u64, Live)> = subs
            .iter()
            .map(|&(k, src)| (k, Live::new("c", filter(src), "x")))
            .collect();
        for (k, l) in &lives {
            ix.add(*k, l);
        }
        let got = |cur: Option<Value>, prev: Option<Value>| {
            let mut out = Vec::new();
            ix.candidates(cur.as_ref(), prev.as_ref(), &mut out);
            out.sort_unstable();
            out
        };
        assert_eq!(got(Some(json!({"room": "r1", "n": 5.0})), None), [1, 3, 4]);
        // Moved from r2 to r1: both rooms' subscriptions, once each.
        assert_eq!(
            got(Some(json!({"room": "r1"})), Some(json!({"room": "r2"}))),
            [1, 2, 3]
        );
        assert_eq!(
            got(Some(json!({"room": "r1"})), Some(json!({"room": "r1"}))),
            [1, 3]
        );
        // A deletion: the record before.
        assert_eq!(got(None, Some(json!({"room": "r2", "n": 5}))), [2, 3, 4]);
        assert_eq!(got(Some(json!({"room": null})), None), [3]);
        for (k, l) in &lives {
            ix.remove(*k, l);
        }
        assert!(ix.is_empty());
    }
}
