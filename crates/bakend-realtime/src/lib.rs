//! The realtime hub: WebSocket subscriptions to every event on the bus, filtered by the same
//! read permission as REST.
//!
//! - [`protocol`]: client messages, channel rules, server frames.
//! - [`audience`]: who may receive an event and which payload they see.
//! - [`hub`]: the single task that owns subscriptions and fans events out.
//! - `hub_state`: the hub's state and decisions, without I/O (unit-tested with fake sinks).
//! - `live`: filtered subscriptions — what an event means to one, and their index.
//! - [`connection`]: the per-socket task.
//! - `delivery`: the watermark a REST write waits on until its event is in the sockets.
//! - [`outbox`]: a connection's socket and bounded outbound queue, written without copies.
//! - [`upgrade`]: the WebSocket handshake that hands over the raw TCP stream.
//! - [`wire`]: server frame headers.

pub mod audience;
pub mod connection;
mod delivery;
pub mod hub;
mod hub_state;
pub mod journal;
mod live;
pub mod outbox;
pub mod protocol;
pub mod upgrade;
pub mod wire;

pub use audience::ReadRules;
pub use connection::{Identity, serve};
pub use hub::{Hub, HubSources, HubStats};
pub use journal::{JournalSource, ListError, ListPage, ListRequest, Replayed, SnapshotSource};
pub use upgrade::{UpgradeError, WsUpgrade};
