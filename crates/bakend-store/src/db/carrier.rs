//! What carries a node's committed events to the other nodes of a cluster (NATS, in
//! `bakend-cluster`), and the bytes it carries.
//!
//! The journal stays the source of truth: a carrier only makes the other nodes see an event
//! sooner than reading the journal would. A message that is lost, late or unreadable leaves a
//! seq gap that the [`super::sequencer::Follower`] fills from the journal, so the carrier may
//! drop messages (a full queue, a broker restart) but never decides what is delivered.
//!
//! One message per commit group: `[1][node id length: u8][node id]` then, per event,
//! `[seq: u64][subject][previous][envelope]`, each of the last three a `u32` length
//! (`u32::MAX`: absent) followed by its bytes; integers big-endian. The envelope is the bytes
//! already serialized for the journal and the sockets (serialized once).

use bakend_core::Event;

/// Sends this node's committed events to the other nodes. Both methods are called from the
/// writer's thread and must not block.
pub trait Carrier: Send + Sync {
    /// Hands over one encoded commit group ([`encode`]); may drop it (the journal has it).
    fn publish(&self, message: Vec<u8>);
    /// Whether messages reach the broker now. While not, commits also wake the other nodes
    /// through the database (`NOTIFY`), as without a carrier.
    fn connected(&self) -> bool;
}

const VERSION: u8 = 1;
const ABSENT: u32 = u32::MAX;

/// One event as carried: enough to rebuild it as the journal would ([`super::journal`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Carried {
    pub seq: u64,
    pub subject: Option<String>,
    pub previous: Option<String>,
    pub envelope: String,
}

/// The message for `events` (those with a seq) committed by node `from`; `None` when none has
/// a seq.
pub fn encode<'a>(from: &str, events: impl Iterator<Item = &'a Event>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSION);
    let from = &from.as_bytes()[..from.len().min(255)];
    out.push(from.len() as u8);
    out.extend_from_slice(from);
    let header = out.len();
    for e in events {
        let Some(seq) = e.seq else { continue };
        out.extend_from_slice(&seq.to_be_bytes());
        put(&mut out, e.subject.as_deref().map(str::as_bytes));
        let previous = e.previous.as_ref().map(|p| p.to_string());
        put(&mut out, previous.as_deref().map(str::as_bytes));
        put(&mut out, Some(e.envelope_json().as_bytes()));
    }
    (out.len() > header).then_some(out)
}

fn put(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&ABSENT.to_be_bytes()),
    }
}

/// Appends `next`'s events to `into` (messages of the same sender): commit groups that queued
/// up travel as one message. `false` (nothing appended) when `next` is not such a message.
pub fn append(into: &mut Vec<u8>, next: &[u8]) -> bool {
    let (Some(&version), Some(&n)) = (next.first(), next.get(1)) else {
        return false;
    };
    let header = 2 + n as usize;
    if version != VERSION || next.len() < header || into.get(..header) != next.get(..header) {
        return false;
    }
    into.extend_from_slice(&next[header..]);
    true
}

/// The sending node and the events of a message; `None` when it is not one (another version,
/// cut short, not UTF-8).
pub fn decode(message: &[u8]) -> Option<(&str, Vec<Carried>)> {
    let mut r = Reader(message);
    if r.take(1)? != [VERSION] {
        return None;
    }
    let n = r.take(1)?[0] as usize;
    let from = std::str::from_utf8(r.take(n)?).ok()?;
    let mut events = Vec::new();
    while !r.0.is_empty() {
        let seq = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let subject = r.text()?;
        let previous = r.text()?;
        let envelope = r.text()??;
        events.push(Carried {
            seq,
            subject,
            previous,
            envelope,
        });
    }
    Some((from, events))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// `Some(None)`: absent; `None`: malformed.
    fn text(&mut self) -> Option<Option<String>> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        if len == ABSENT {
            return Some(None);
        }
        let bytes = self.take(len as usize)?;
        Some(Some(std::str::from_utf8(bytes).ok()?.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::EventSource;
    use serde_json::json;

    fn event(
        seq: Option<u64>,
        subject: Option<&str>,
        previous: Option<serde_json::Value>,
    ) -> Event {
        let mut e = Event::new(
            "posts.updated",
            EventSource::Collections,
            json!({"id": "r1", "t": "é\n"}),
        );
        e.seq = seq;
        e.subject = subject.map(String::from);
        e.previous = previous;
        e
    }

    #[test]
    fn a_commit_group_round_trips() {
        let events = [
            event(Some(7), Some("u1"), Some(json!({"id": "r1", "t": "old"}))),
            event(None, None, None), // not journaled: not carried
            event(Some(8), None, None),
        ];
        let message = encode("node-a", events.iter()).unwrap();
        let (from, got) = decode(&message).unwrap();
        assert_eq!(from, "node-a");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].seq, 7);
        assert_eq!(got[0].subject.as_deref(), Some("u1"));
        assert_eq!(got[0].previous.as_deref(), Some(r#"{"id":"r1","t":"old"}"#));
        assert_eq!(got[0].envelope, &*events[0].envelope_json());
        assert_eq!(
            (
                got[1].seq,
                got[1].subject.as_deref(),
                got[1].previous.as_deref()
            ),
            (8, None, None)
        );
        let rebuilt = Event::from_journal(&got[1].envelope, None).unwrap();
        assert_eq!(rebuilt.payload, events[2].payload);
        assert_eq!(rebuilt.seq, Some(8));
    }

    #[test]
    fn queued_groups_travel_as_one_message() {
        let mut first = encode("n", [event(Some(1), None, None)].iter()).unwrap();
        let second = encode(
            "n",
            [event(Some(2), Some("u"), None), event(Some(3), None, None)].iter(),
        )
        .unwrap();
        assert!(append(&mut first, &second));
        let (_, events) = decode(&first).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let other = encode("m", [event(Some(4), None, None)].iter()).unwrap();
        assert!(!append(&mut first, &other), "another sender's");
        assert!(!append(&mut first, &[1]), "cut short");
    }

    #[test]
    fn nothing_journaled_is_no_message() {
        assert!(encode("n", [event(None, None, None)].iter()).is_none());
    }

    #[test]
    fn a_damaged_message_is_refused_not_misread() {
        let message = encode("n", [event(Some(1), Some("u"), None)].iter()).unwrap();
        for cut in 0..message.len() {
            if cut == 3 {
                continue; // the header alone: a valid message with no events
            }
            assert!(decode(&message[..cut]).is_none(), "cut at {cut}");
        }
        let mut other = message.clone();
        other[0] = 2;
        assert!(decode(&other).is_none());
        assert_eq!(decode(&message[..3]).map(|(_, e)| e.len()), Some(0));
    }
}
