//! The WebSocket client-message decoder and the channel parser
//! (`bakend_realtime::protocol`). Any text frame a client can send: parsing never panics, a
//! parsed message serialized back parses to the same message, and every valid channel behaves
//! as a subscription key (it matches itself, its prefix form matches what it covers, and a
//! per-record channel splits and rebuilds to itself).

#![no_main]

use bakend_realtime::protocol::{self, ClientMessage, MAX_CHANNEL_LEN, Since, SubRef};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (tungstenite refuses others before the decoder).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_channel(text);
    if let Some(since) = Since::parse_param(text) {
        let back = format!("{}:{}", since.epoch, since.seq);
        assert_eq!(Since::parse_param(&back), Some(since));
    }
    match protocol::parse(text) {
        Ok(msg) => {
            if let ClientMessage::Subscribe { channel, .. }
            | ClientMessage::Unsubscribe(SubRef::Channel(channel)) = &msg
            {
                assert!(protocol::valid_channel(channel), "{channel:?}");
            }
            if let ClientMessage::Subscribe { id: Some(id), .. }
            | ClientMessage::Unsubscribe(SubRef::Id(id)) = &msg
            {
                assert!(protocol::valid_id(id), "{id:?}");
            }
            if let ClientMessage::Subscribe {
                filter: Some(f), ..
            } = &msg
            {
                assert!(!f.trim().is_empty(), "{f:?}");
            }
            let again = serialize(&msg);
            assert_eq!(protocol::parse(&again), Ok(msg), "{again}");
        }
        Err(e) => {
            let _ = e.frame();
        }
    }
});

fn serialize(m: &ClientMessage) -> String {
    match m {
        ClientMessage::Subscribe {
            channel,
            since,
            snapshot,
            id,
            filter,
            sort,
            per_page,
        } => {
            let mut v = json!({"action": "subscribe", "channel": channel});
            if let Some(s) = sort {
                v["sort"] = json!(s);
            }
            if let Some(n) = per_page {
                v["perPage"] = json!(n);
            }
            if let Some(s) = since {
                v["since"] = json!({"epoch": s.epoch, "seq": s.seq});
            }
            if *snapshot {
                v["snapshot"] = json!(true);
            }
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            if let Some(f) = filter {
                v["filter"] = json!(f);
            }
            v.to_string()
        }
        ClientMessage::Unsubscribe(SubRef::Channel(c)) => {
            json!({"action": "unsubscribe", "channel": c}).to_string()
        }
        ClientMessage::Unsubscribe(SubRef::Id(id)) => {
            json!({"action": "unsubscribe", "id": id}).to_string()
        }
        ClientMessage::Ping => json!({"action": "ping"}).to_string(),
        ClientMessage::Auth(t) => json!({"action": "auth", "token": t}).to_string(),
    }
}

fn check_channel(c: &str) {
    if !protocol::valid_channel(c) {
        return;
    }
    assert!(!c.is_empty() && c.len() <= MAX_CHANNEL_LEN);
    let sub = json!({"action": "subscribe", "channel": c}).to_string();
    assert_eq!(
        protocol::parse(&sub),
        Ok(ClientMessage::Subscribe {
            channel: c.to_string(),
            since: None,
            snapshot: false,
            id: None,
            filter: None,
            sort: None,
            per_page: None,
        })
    );
    let (key, prefix) = protocol::index_key(c);
    if prefix {
        assert!(c.ends_with(".*") && key.ends_with('.'), "{c:?} -> {key:?}");
        assert!(protocol::matches(c, &format!("{key}created")));
        assert!(!protocol::matches(c, key.trim_end_matches('.')));
    } else {
        assert_eq!(key, c);
        assert!(protocol::matches(c, c));
    }
    if let Some((collection, id)) = protocol::parse_record_channel(c) {
        let action = c.rsplit('.').next().unwrap_or_default();
        let event = format!("{collection}.{action}");
        assert_eq!(protocol::record_channel(&event, id).as_deref(), Some(c));
        assert!(protocol::matches_event(c, &event, Some(c)));
    }
}
