//! The one event envelope (spec `events.md` §1). Every subsystem emits these; consumers never
//! learn who emitted them.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::access::Caller;
use crate::ids;
use crate::time;

/// Which subsystem produced an event (the envelope's `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    Collections,
    Auth,
    Storage,
    Functions,
    Jobs,
    System,
}

#[derive(Debug, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    pub source: EventSource,
    pub payload: Value,
    /// Position in the event journal (strictly increasing in commit order), set when the event
    /// is journaled with the change that caused it. Events that are not journaled (function and
    /// job lifecycle) have none, and the envelope then has no `seq` key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The user the event is about — the owner of a record (for a deletion, the owner it had
    /// before), the account of an auth event, the uploader of a file. Never serialized: it
    /// lets the realtime hub route owner-only events without reading the database.
    #[serde(skip)]
    pub subject: Option<String>,
    /// The signed-in user whose request caused the event, if any. Never serialized: user
    /// functions see it as `ctx.auth.user`.
    #[serde(skip)]
    pub actor: Option<Arc<Caller>>,
    /// The record as it was before an update or delete. Never serialized (the wire payload of a
    /// deletion stays `{id}`): user functions see it as `ctx.previous`.
    #[serde(skip)]
    pub previous: Option<Value>,
    /// How many user-function writes led to this event (0 for a client's request). Lets the
    /// functions host stop a trigger that keeps re-triggering itself.
    #[serde(skip)]
    pub depth: u8,
    /// Committed by another server sharing the database (PostgreSQL), read here from the
    /// journal: delivered to this server's realtime clients; its functions run on the server
    /// that committed it, not here.
    #[serde(skip)]
    pub remote: bool,
    /// The envelope serialized once, shared by every consumer that needs the bytes.
    #[serde(skip)]
    json: OnceLock<Arc<str>>,
}

/// Who or what started a write, carried into the events it emits.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The signed-in user making the request (`None` for anonymous requests and the system).
    pub actor: Option<Arc<Caller>>,
    /// See [`Event::depth`].
    pub depth: u8,
}

/// Events are immutable once emitted and shared between consumers without copying.
pub type SharedEvent = Arc<Event>;

impl Event {
    pub fn new(event_type: impl Into<String>, source: EventSource, payload: Value) -> Self {
        Event {
            id: ids::new_id(ids::EVENT),
            event_type: event_type.into(),
            timestamp: time::now_iso(),
            source,
            payload,
            seq: None,
            subject: None,
            actor: None,
            previous: None,
            depth: 0,
            remote: false,
            json: OnceLock::new(),
        }
    }

    /// Sets who caused the event and how deep in a chain of function writes it is.
    pub fn caused_by(mut self, origin: &Origin) -> Self {
        self.actor = origin.actor.clone();
        self.depth = origin.depth;
        self
    }

    /// Sets [`Event::previous`].
    pub fn with_previous(mut self, previous: Value) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Sets [`Event::subject`].
    pub fn about(mut self, user_id: Option<String>) -> Self {
        self.subject = user_id;
        self
    }

    /// An event read back from the journal: its stored envelope (which becomes the cached
    /// serialization, byte for byte) and the hidden owner it had when it was journaled.
    pub fn from_journal(
        envelope: &str,
        subject: Option<String>,
    ) -> Result<Event, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Stored {
            id: String,
            #[serde(rename = "type")]
            event_type: String,
            timestamp: String,
            source: EventSource,
            payload: Value,
            seq: Option<u64>,
        }
        let s: Stored = serde_json::from_str(envelope)?;
        let json = OnceLock::new();
        let _ = json.set(Arc::from(envelope));
        Ok(Event {
            id: s.id,
            event_type: s.event_type,
            timestamp: s.timestamp,
            source: s.source,
            payload: s.payload,
            seq: s.seq,
            subject,
            actor: None,
            previous: None,
            depth: 0,
            remote: false,
            json,
        })
    }

    /// The envelope as JSON text, computed on first use and then shared.
    pub fn envelope_json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| {
                // Serializing a struct of strings and a `Value` cannot fail.
                let text = serde_json::to_string(self).unwrap_or_default();
                Arc::from(text)
            })
            .clone()
    }
}

impl Clone for Event {
    fn clone(&self) -> Self {
        Event {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            timestamp: self.timestamp.clone(),
            source: self.source,
            payload: self.payload.clone(),
            seq: self.seq,
            subject: self.subject.clone(),
            actor: self.actor.clone(),
            previous: self.previous.clone(),
            depth: self.depth,
            remote: self.remote,
            json: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_spec_key_order() {
        let e = Event::new(
            "posts.created",
            EventSource::Collections,
            serde_json::json!({"id": "rec_1"}),
        );
        let text = e.envelope_json();
        let id_at = text.find("\"id\"").unwrap();
        let type_at = text.find("\"type\"").unwrap();
        let ts_at = text.find("\"timestamp\"").unwrap();
        let src_at = text.find("\"source\"").unwrap();
        let payload_at = text.find("\"payload\"").unwrap();
        assert!(id_at < type_at && type_at < ts_at && ts_at < src_at && src_at < payload_at);
        assert!(text.contains("\"source\":\"collections\""));
        assert!(e.id.starts_with("evt_"));
    }
}
