//! The time budget of one invocation, shared by the QuickJS interrupt handler and the SQLite
//! progress handler so that neither a JS loop nor a runaway query outlives it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub(crate) struct Budget {
    /// Milliseconds since `epoch` at which the budget ends; 0 while disarmed.
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
}

impl Budget {
    pub fn new() -> Budget {
        Budget {
            deadline: Arc::new(AtomicU64::new(0)),
            interrupted: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
        }
    }

    pub fn arm(&self, budget: Duration) {
        let at = self.epoch.elapsed() + budget;
        self.interrupted.store(false, Ordering::SeqCst);
        self.deadline
            .store((at.as_millis() as u64).max(1), Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.deadline.store(0, Ordering::SeqCst);
    }

    /// True (and remembered) once an armed budget has run out.
    pub fn expired(&self) -> bool {
        let d = self.deadline.load(Ordering::Relaxed);
        if d != 0 && self.epoch.elapsed().as_millis() as u64 >= d {
            self.interrupted.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Whether the last armed budget ran out.
    pub fn was_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}
