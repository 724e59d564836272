//! Shared vocabulary of Bakend. Every other crate depends on this one and it depends on none of
//! them: ids, timestamps, the event envelope, configuration and the log sink.

pub mod config;
pub mod event;
pub mod ids;
pub mod logging;
pub mod pattern;
pub mod sync;
pub mod time;

pub use event::{Event, EventSource, Origin, SharedEvent};

/// Full semantic version reported by `bak version`, `/health` and the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod access;
