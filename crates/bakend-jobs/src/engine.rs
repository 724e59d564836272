//! What runs a job's handler. The real engine is the embedded JavaScript runtime of
//! `bakend-functions`; tests use plain Rust closures.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;

pub trait JobEngine: Send + Sync + 'static {
    /// Runs one attempt of job `name`. `Err` carries the message of a throw, a timeout (the
    /// engine enforces `timeout`) or an exhausted limit.
    fn run(&self, name: &str, run_id: &str, attempt: u32, timeout: Duration) -> RunFuture;

    /// Stops the engine after the scheduler has let go of it. Blocking is allowed.
    fn shutdown(&self) {}
}
