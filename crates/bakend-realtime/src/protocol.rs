//! The wire protocol (spec `realtime.md` §3–6, with v1's error codes fixed): parsing client
//! messages, validating channel names, and building server frames.

use bakend_auth::{Caller, safe_user};
use bakend_core::pattern::{self, Wildcards};
use serde_json::{Value, json};
use tungstenite::Utf8Bytes;

pub const MAX_CHANNEL_LEN: usize = 200;

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
    },
    Unsubscribe(String),
    Ping,
    /// Switch identity; `None` when the message had no string token.
    Auth(Option<String>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ProtocolError {
    InvalidJson,
    InvalidAction,
    InvalidChannel,
    /// `since` is present but not `{"epoch": string, "seq": non-negative integer}`.
    InvalidSince,
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
    match msg.get("action").and_then(Value::as_str) {
        Some("subscribe") => Ok(ClientMessage::Subscribe {
            channel: channel()?,
            since: since()?,
            snapshot: msg.get("snapshot") == Some(&Value::Bool(true)),
        }),
        Some("unsubscribe") => Ok(ClientMessage::Unsubscribe(channel()?)),
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

pub fn resumed_frame(channel: &str, recovered: bool, last_seq: u64) -> Utf8Bytes {
    frame(
        json!({ "type": "resumed", "channel": channel, "recovered": recovered, "lastSeq": last_seq }),
    )
}

pub fn subscribed_frame(channel: &str) -> Utf8Bytes {
    frame(json!({ "type": "subscribed", "channel": channel }))
}

pub fn unsubscribed_frame(channel: &str) -> Utf8Bytes {
    frame(json!({ "type": "unsubscribed", "channel": channel }))
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
                snapshot: false
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
                snapshot: false
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
}
