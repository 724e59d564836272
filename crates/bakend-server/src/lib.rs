//! Bakend's HTTP server: one port for the REST API (and, as later subsystems land, auth,
//! storage, admin and realtime). [`start`] brings the whole system up in the order of spec
//! `cli-and-config.md` §4 and returns a handle that shuts it down gracefully.

mod auth;
mod body;
mod cluster;
mod collection_files;
mod conn_watch;
mod cors;
mod dashboard;
mod error;
mod http_serve;
mod journal;
mod metrics;
mod openapi;
mod response;
mod routes;
mod startup;
mod startup_jobs;
mod state;
mod user_code;

pub use error::ApiError;
pub use startup::{Server, StartError, start, start_with_bus};
pub use state::AppState;
