//! What every handler can reach.

use std::sync::Arc;

use bakend_auth::AuthService;
use bakend_core::config::Config;
use bakend_events::EventBus;
use bakend_functions::FunctionsHost;
use bakend_jobs::Jobs;
use bakend_jobs::local_access::LocalAccess;
use bakend_realtime::Hub;
use bakend_storage::FileService;
use bakend_store::RecordStore;

use crate::metrics::HttpMetrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub bus: Arc<dyn EventBus>,
    pub records: RecordStore,
    pub auth: Arc<AuthService>,
    pub realtime: Arc<Hub>,
    /// The loaded function triggers and their counters, for the admin API.
    pub functions: Arc<FunctionsHost>,
    pub files: Arc<FileService>,
    pub jobs: JobsView,
    /// Request counters for `GET /metrics` (recorded only while metrics are enabled).
    pub http_metrics: Arc<HttpMetrics>,
    /// The HS256 secret for access tokens (configured, or generated and kept in the database).
    pub jwt_secret: Arc<str>,
    /// This server as a node: its name, NATS link and the other nodes' stats.
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// The scheduler, and the token that lets `bak jobs run` on this machine run a job.
#[derive(Clone)]
pub struct JobsView {
    pub jobs: Arc<Jobs>,
    pub local: Option<Arc<LocalAccess>>,
}
