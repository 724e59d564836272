//! The wire protocol (spec `realtime.md` §3–6, with v1's error codes fixed): parsing client
//! messages, validating channel names, and building server frames.

use bakend_auth::{Caller, safe_user};
use bakend_core::pattern::{self, Wildcards};
use serde_json::{Value, json};
use tungstenite::Utf8Bytes;

pub const MAX_CHANNEL_LEN: usize = 200;
/// A subscription id is 1 to this many characters.
pub const MAX_ID_CHARS: usize = 200;

/// Where a resuming client left off: the journal epoch it was reading and the last `seq` it
/// received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

impl Since {
    /// The connect-time form `?since=<epoch>:<seq>`.
    pub fn parse_param(s: &str) -> Option<Since> {
        let (epoch, seq) = s.rsplit_once(':')?;
        (!epoch.is_empty()).then_some(())?;
        Some(Since {
            epoch: epoch.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Subscribe {
        channel: String,
        since: Option<Since>,
        /// Send the record's current state first (per-record channels only).
        snapshot: bool,
        /// The subscription's id, when the client chose one (otherwise it is the channel).
        id: Option<String>,
        /// A filter expression (`docs/filters.md`; checked by the hub against the collection).
        /// An empty or blank one is none, as for REST lists.
        filter: Option<String>,
        /// A collection snapshot's order and size (REST's `sort` and `perPage`).
        sort: Option<String>,
        per_page: Option<u32>,
    },
    Unsubscribe(SubRef),
    Ping,
    /// Switch identity; `None` when the message had no string token.
    Auth(Option<String>),
}

/// Which subscription an `unsubscribe` means: by `id`, or (as v1) by `channel` — the id of a
/// subscription made without one.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum SubRef {
    Channel(String),
    Id(String),
}

impl SubRef {
    /// The subscription id it names.
    pub fn key(&self) -> &str {
        match self {
            SubRef::Channel(k) | SubRef::Id(k) => k,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ProtocolError {
    InvalidJson,
    InvalidAction,
    InvalidChannel,
    /// `since` is present but not `{"epoch": string, "seq": non-negative integer}`.
    InvalidSince,
    /// `id` is present but not a string of 1 to [`MAX_ID_CHARS`] characters.
    InvalidId,
    /// `filter` is present but not a string.
    FilterNotString,
    /// `sort` is present but not a string, or `perPage` not a positive integer.
    InvalidSnapshotOptions,
}

impl ProtocolError {
    pub fn frame(self) -> Utf8Bytes {
        match self {
            ProtocolError::InvalidJson => error_frame("invalid_json", "Invalid JSON message"),
            ProtocolError::InvalidAction => error_frame("invalid_action", "Unknown action"),
            ProtocolError::InvalidChannel => {
                error_frame("invalid_channel", "Channel name is invalid")
            }
            ProtocolError::InvalidSince => error_frame(
                "invalid_since",
                "since must be {\"epoch\": string, \"seq\": non-negative integer}",
            ),
            ProtocolError::InvalidId => {
                error_frame("invalid_id", "id must be a string of 1 to 200 characters")
            }
            ProtocolError::FilterNotString => {
                error_frame("invalid_filter", "filter: must be a string")
            }
            ProtocolError::InvalidSnapshotOptions => error_frame(
                "invalid_snapshot",
                "sort must be a string and perPage a positive integer",
            ),
        }
    }
}

/// `^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_*-]+)*$`, 1–200 characters.
pub fn valid_channel(c: &str) -> bool {
    if c.is_empty() || c.len() > MAX_CHANNEL_LEN {
        return false;
    }
    c.split('.').enumerate().all(|(i, seg)| {
        !seg.is_empty()
            && seg.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (i > 0 && b == b'*')
            })
    })
}

/// A subscription id: 1 to [`MAX_ID_CHARS`] characters, any of them.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().nth(MAX_ID_CHARS).is_none()
}

/// Whether subscription `sub` receives events of type `event_type`: the same name, or a
/// `prefix.*` whose prefix (with the dot) starts the type.
pub fn matches(sub: &str, event_type: &str) -> bool {
    pattern::matches(sub, event_type, Wildcards::FinalOnly)
}

/// The per-record channel of a collection event: `posts.created` about `rec_1` is
/// `posts.rec_1.created`, which `posts.rec_1.created` and `posts.rec_1.*` subscribe to.
pub fn record_channel(event_type: &str, record_id: &str) -> Option<String> {
    let (collection, action) = event_type.rsplit_once('.')?;
    Some(format!("{collection}.{record_id}.{action}"))
}

/// `posts.rec_1.*` / `posts.rec_1.updated` → `("posts", "rec_1")`.
pub fn parse_record_channel(channel: &str) -> Option<(&str, &str)> {
    let mut parts = channel.split('.');
    let (collection, id, _action) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && id != "*").then_some((collection, id))
}

/// `{"type":"snapshot","channel","collection","record","seq"}`: the record as of journal
/// position `seq` (`null` when it does not exist or the connection may not read it).
pub fn snapshot_frame(
    channel: &str,
    collection: &str,
    record: Option<&Value>,
    seq: Option<u64>,
) -> Utf8Bytes {
    let mut v = json!({ "type": "snapshot", "channel": channel, "collection": collection, "record": record });
    if let Some(s) = seq {
        v["seq"] = json!(s);
    }
    frame(v)
}

/// `{"type":"snapshot","subscription":I,"items":[…],"seq":N,"truncated":B}`: a collection's
/// records (`items_json`, a JSON array) as of journal position `seq`.
pub fn collection_snapshot_frame(
    subscription: &str,
    items_json: &str,
    seq: u64,
    truncated: bool,
) -> Utf8Bytes {
    let id = Value::String(subscription.to_string()).to_string();
    let mut s = String::with_capacity(items_json.len() + id.len() + 80);
    s.push_str(r#"{"type":"snapshot","subscription":"#);
    s.push_str(&id);
    s.push_str(r#","items":"#);
    s.push_str(items_json);
    s.push_str(&format!(r#","seq":{seq},"truncated":{truncated}}}"#));
    Utf8Bytes::from(s)
}

/// [`matches`] for an event, including its per-record channel when it has one.
pub fn matches_event(sub: &str, event_type: &str, record_channel: Option<&str>) -> bool {
    matches(sub, event_type) || record_channel.is_some_and(|r| matches(sub, r))
}

/// The index key of a subscription: `(key, is_prefix)`; `posts.*` is the prefix `posts.`.
pub fn index_key(sub: &str) -> (&str, bool) {
    match sub.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => (prefix, true),
        _ => (sub, false),
    }
}

pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
        return Err(ProtocolError::InvalidJson);
    };
    let channel = || match msg.get("channel") {
        Some(Value::String(c)) if valid_channel(c) => Ok(c.clone()),
        _ => Err(ProtocolError::InvalidChannel),
    };
    let since = || match msg.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match (o.get("epoch"), o.get("seq").and_then(Value::as_u64)) {
            (Some(Value::String(e)), Some(seq)) if !e.is_empty() => Ok(Some(Since {
                epoch: e.clone(),
                seq,
            })),
            _ => Err(ProtocolError::InvalidSince),
        },
        Some(_) => Err(ProtocolError::InvalidSince),
    };
    let id = || match msg.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_id(s) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::InvalidId),
    };
    let filter = || match msg.get("filter") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::FilterNotString),
    };
    let sort = || match msg.get("sort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::InvalidSnapshotOptions),
    };
    let per_page = || match msg.get("perPage") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|n| *n >= 1) {
            Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            None => Err(ProtocolError::InvalidSnapshotOptions),
        },
    };
    match msg.get("action").and_then(Value::as_str) {
        Some("subscribe") => Ok(ClientMessage::Subscribe {
            channel: channel()?,
            since: since()?,
            snapshot: msg.get("snapshot") == Some(&Value::Bool(true)),
            id: id()?,
            filter: filter()?,
            sort: sort()?,
            per_page: per_page()?,
        }),
        Some("unsubscribe") => Ok(ClientMessage::Unsubscribe(match id()? {
            Some(id) => SubRef::Id(id),
            None => SubRef::Channel(channel()?),
        })),
        Some("ping") => Ok(ClientMessage::Ping),
        Some("auth") => Ok(ClientMessage::Auth(
            msg.get("token").and_then(Value::as_str).map(str::to_string),
        )),
        _ => Err(ProtocolError::InvalidAction),
    }
}

fn frame(v: Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

pub fn error_frame(code: &str, message: &str) -> Utf8Bytes {
    frame(json!({ "type": "error", "code": code, "message": message }))
}

/// `epoch` (of the event journal, when it is on) is what a client passes back in `since`.
pub fn connected_frame(client_id: &str, user: Option<&Caller>, epoch: Option<&str>) -> Utf8Bytes {
    let mut v = json!({ "type": "connected", "clientId": client_id, "user": user.map(safe_user) });
    if let Some(e) = epoch {
        v["epoch"] = json!(e);
    }
    frame(v)
}

pub fn authenticated_frame(user: &Caller) -> Utf8Bytes {
    frame(json!({ "type": "authenticated", "user": safe_user(user) }))
}

/// `subscription`: the id of a named subscription (one made with an `id` or a `filter`).
pub fn resumed_frame(
    channel: &str,
    subscription: Option<&str>,
    recovered: bool,
    last_seq: u64,
) -> Utf8Bytes {
    let mut v = json!({ "type": "resumed", "channel": channel });
    if let Some(id) = subscription {
        v["subscription"] = json!(id);
    }
    v["recovered"] = json!(recovered);
    v["lastSeq"] = json!(last_seq);
    frame(v)
}

/// `id`: for a named subscription (one made with an `id` or a `filter`); v1's ack has none.
pub fn subscribed_frame(channel: &str, id: Option<&str>) -> Utf8Bytes {
    match id {
        Some(id) => frame(json!({ "type": "subscribed", "channel": channel, "id": id })),
        None => frame(json!({ "type": "subscribed", "channel": channel })),
    }
}

pub fn unsubscribed_frame(target: &SubRef) -> Utf8Bytes {
    match target {
        SubRef::Channel(c) => frame(json!({ "type": "unsubscribed", "channel": c })),
        SubRef::Id(id) => frame(json!({ "type": "unsubscribed", "id": id })),
    }
}

/// What an event means to a filtered subscription: the record entered its filter (or was
/// created in it), changed within it, or left it (or was deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Removed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Removed => "removed",
        }
    }
}

/// The start of every event frame of subscription `id`, made once per subscription:
/// `{"type":"event","subscription":<id>,"change":"`.
pub fn live_frame_head(id: &str) -> Box<str> {
    let mut s = String::from(r#"{"type":"event","subscription":"#);
    // Serializing a string cannot fail.
    s.push_str(&serde_json::to_string(id).unwrap_or_default());
    s.push_str(r#","change":""#);
    s.into_boxed_str()
}

/// `{"type":"event","subscription":…,"change":…,"event":<envelope>}` around an already
/// serialized envelope and the subscription's [`live_frame_head`]: bytes copied, nothing
/// serialized.
pub fn live_event_frame(head: &str, change: Change, envelope_json: &str) -> Utf8Bytes {
    let change = change.as_str();
    let mut s = String::with_capacity(head.len() + change.len() + envelope_json.len() + 12);
    s.push_str(head);
    s.push_str(change);
    s.push_str(r#"","event":"#);
    s.push_str(envelope_json);
    s.push('}');
    Utf8Bytes::from(s)
}

pub fn pong_frame() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

/// `{"type":"event","event":<envelope>}` around an already serialized envelope.
pub fn event_frame(envelope_json: &str) -> Utf8Bytes {
    let mut s = String::with_capacity(envelope_json.len() + 26);
    s.push_str(r#"{"type":"event","event":"#);
    s.push_str(envelope_json);
    s.push('}');
    Utf8Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_validation_follows_the_spec_table() {
        for ok in [
            "posts.created",
            "posts.*",
            "auth.*",
            "system.collection.*",
            "posts",
            "posts.*.created",
            "Posts-X_1.c*d",
        ] {
            assert!(valid_channel(ok), "{ok}");
        }
        let long = "a".repeat(201);
        for bad in [
            "*",
            "*.created",
            "posts.",
            ".posts",
            "posts..x",
            "a b",
            "",
            long.as_str(),
            "pöst",
        ] {
            assert!(!valid_channel(bad), "{bad}");
        }
        assert!(valid_channel(&"a".repeat(200)));
    }

    #[test]
    fn matching_uses_whole_final_wildcards_only() {
        assert!(matches("posts.*", "posts.created"));
        assert!(matches("posts.*", "posts.x.y"));
        assert!(!matches("posts.*", "posts_archive.created"));
        assert!(!matches("posts.*", "posts"));
        assert!(matches("posts.created", "posts.created"));
        assert!(!matches("posts.*.created", "posts.a.created"));
        assert!(matches("posts.*.created", "posts.*.created"));
        assert_eq!(index_key("posts.*"), ("posts.", true));
        assert_eq!(index_key("posts.c*"), ("posts.c*", false));
        let r = record_channel("posts.updated", "rec_1").unwrap();
        assert_eq!(r, "posts.rec_1.updated");
        assert!(matches_event("posts.rec_1.*", "posts.updated", Some(&r)));
        assert!(matches_event(
            "posts.rec_1.updated",
            "posts.updated",
            Some(&r)
        ));
        assert!(!matches_event("posts.rec_2.*", "posts.updated", Some(&r)));
        assert!(!matches_event(
            "posts.rec_1.deleted",
            "posts.updated",
            Some(&r)
        ));
        assert!(matches_event("posts.*", "posts.updated", Some(&r)));
    }

    #[test]
    fn parse_errors_by_kind() {
        assert_eq!(parse("nope"), Err(ProtocolError::InvalidJson));
        for not_object in ["[]", "null", "42", "\"x\""] {
            assert_eq!(parse(not_object), Err(ProtocolError::InvalidJson));
        }
        assert_eq!(
            parse(r#"{"action":"nope"}"#),
            Err(ProtocolError::InvalidAction)
        );
        assert_eq!(
            parse(r#"{"action":"PING"}"#),
            Err(ProtocolError::InvalidAction)
        );
        assert_eq!(parse(r#"{}"#), Err(ProtocolError::InvalidAction));
        for bad in [
            r#"{"action":"subscribe"}"#,
            r#"{"action":"subscribe","channel":5}"#,
            r#"{"action":"subscribe","channel":""}"#,
            r#"{"action":"unsubscribe","channel":"*"}"#,
        ] {
            assert_eq!(parse(bad), Err(ProtocolError::InvalidChannel), "{bad}");
        }
        assert_eq!(
            parse(r#"{"action":"ping","channel":"x"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse(r#"{"action":"subscribe","channel":"a.*","x":1}"#),
            Ok(ClientMessage::Subscribe {
                channel: "a.*".into(),
                since: None,
                snapshot: false,
                id: None,
                filter: None,
                sort: None,
                per_page: None,
            })
        );
        assert_eq!(
            parse(r#"{"action":"subscribe","channel":"a.*","since":{"epoch":"ep_1","seq":7}}"#),
            Ok(ClientMessage::Subscribe {
                channel: "a.*".into(),
                since: Some(Since {
                    epoch: "ep_1".into(),
                    seq: 7
                }),
                snapshot: false,
                id: None,
                filter: None,
                sort: None,
                per_page: None,
            })
        );
        for bad in [
            r#"{"action":"subscribe","channel":"a.*","since":5}"#,
            r#"{"action":"subscribe","channel":"a.*","since":{"epoch":"e","seq":-1}}"#,
            r#"{"action":"subscribe","channel":"a.*","since":{"seq":1}}"#,
        ] {
            assert_eq!(parse(bad), Err(ProtocolError::InvalidSince), "{bad}");
        }
        assert_eq!(
            Since::parse_param("ep_x:12"),
            Some(Since {
                epoch: "ep_x".into(),
                seq: 12
            })
        );
        assert_eq!(Since::parse_param("12"), None);
        assert_eq!(parse(r#"{"action":"auth"}"#), Ok(ClientMessage::Auth(None)));
    }

    #[test]
    fn ids_and_filters() {
        let sub = |text: &str| match parse(text) {
            Ok(ClientMessage::Subscribe { id, filter, .. }) => Ok((id, filter)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            sub(r#"{"action":"subscribe","channel":"t.*","filter":"a = 1","id":"open-p1"}"#),
            Ok((some("open-p1"), some("a = 1")))
        );
        // Empty or blank filters are none (as `?filter=`), null is absent.
        for f in [json!(""), json!(" \t"), Value::Null] {
            let text = json!({"action": "subscribe", "channel": "t.*", "filter": f, "id": null})
                .to_string();
            assert_eq!(sub(&text), Ok((None, None)), "{text}");
        }
        let long = "é".repeat(200);
        assert_eq!(
            sub(&json!({"action": "subscribe", "channel": "t.*", "id": long}).to_string()),
            Ok((Some(long.clone()), None)),
            "200 characters (400 bytes) is the limit"
        );
        for bad_id in [json!(""), json!(5), json!(["x"]), json!("x".repeat(201))] {
            let text = json!({"action": "subscribe", "channel": "t.*", "id": bad_id}).to_string();
            assert_eq!(sub(&text), Err(ProtocolError::InvalidId), "{text}");
            let text = json!({"action": "unsubscribe", "id": bad_id}).to_string();
            assert_eq!(parse(&text), Err(ProtocolError::InvalidId), "{text}");
        }
        assert_eq!(
            sub(r#"{"action":"subscribe","channel":"t.*","filter":5}"#),
            Err(ProtocolError::FilterNotString)
        );
        // The channel is checked first.
        assert_eq!(
            sub(r#"{"action":"subscribe","channel":"*","id":""}"#),
            Err(ProtocolError::InvalidChannel)
        );
        // Unsubscribe by id (which wins over a channel) or by channel.
        assert_eq!(
            parse(r#"{"action":"unsubscribe","id":"x","channel":"*"}"#),
            Ok(ClientMessage::Unsubscribe(SubRef::Id("x".into())))
        );
        assert_eq!(
            parse(r#"{"action":"unsubscribe","channel":"t.*"}"#),
            Ok(ClientMessage::Unsubscribe(SubRef::Channel("t.*".into())))
        );
        assert_eq!(
            ProtocolError::InvalidId.frame().as_str(),
            r#"{"type":"error","code":"invalid_id","message":"id must be a string of 1 to 200 characters"}"#
        );
    }

    #[test]
    fn live_frames_wrap_the_envelope_bytes() {
        let head = live_frame_head("open \"p1\"");
        let f = live_event_frame(
            &head,
            Change::Removed,
            r#"{"id":"evt_1","payload":{"id":"r1"}}"#,
        );
        assert_eq!(
            f.as_str(),
            r#"{"type":"event","subscription":"open \"p1\"","change":"removed","event":{"id":"evt_1","payload":{"id":"r1"}}}"#
        );
        let v: Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(v["subscription"], "open \"p1\"");
        assert_eq!(
            subscribed_frame("t.*", Some("x")).as_str(),
            r#"{"type":"subscribed","channel":"t.*","id":"x"}"#
        );
        assert_eq!(
            subscribed_frame("t.*", None).as_str(),
            r#"{"type":"subscribed","channel":"t.*"}"#
        );
        assert_eq!(
            resumed_frame("t.*", Some("x"), true, 4).as_str(),
            r#"{"type":"resumed","channel":"t.*","subscription":"x","recovered":true,"lastSeq":4}"#
        );
        assert_eq!(
            resumed_frame("t.*", None, false, 4).as_str(),
            r#"{"type":"resumed","channel":"t.*","recovered":false,"lastSeq":4}"#
        );
    }
}
