//! Metrics for `GET /metrics` (docs/metrics.md): request counters recorded by a middleware,
//! everything else read from the subsystems' own counters at scrape time.

mod collect;
mod exposition;
mod http;

pub use collect::render;
pub use exposition::CONTENT_TYPE;
pub use http::{HttpMetrics, track};
