//! The bound on password work. One argon2id hash or verification holds 19 MiB for tens of
//! milliseconds of CPU; without a bound, a flood of logins runs hundreds at once, the process
//! grows by hundreds of MiB and keeps it. Every hash and verification runs in a [`HashSlot`]:
//! at most `max_concurrent` slots are taken at once, at most `queue` more sign-ins wait for one,
//! each for at most `wait`; anyone else is told to come back later ([`AuthError::Busy`], 503
//! with `Retry-After`). The work runs on a blocking thread, never on the async executor.
//!
//! Callers take the slot *before* the account lookup that precedes the hash: every database
//! read is a blocking-pool thread of its own, so a flood that queued only at the hash would
//! still start hundreds of threads (each keeping its allocator's pages) to read first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AuthError;

pub struct HashLimiter {
    /// Running plus waiting: a request that cannot get one of these is turned away at once,
    /// so the queue itself is bounded.
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    wait: Duration,
}

impl HashLimiter {
    pub fn new(max_concurrent: usize, queue: usize, wait: Duration) -> HashLimiter {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS / 2);
        let queue = queue.min(Semaphore::MAX_PERMITS / 2);
        HashLimiter {
            admitted: Arc::new(Semaphore::new(max_concurrent + queue)),
            running: Arc::new(Semaphore::new(max_concurrent)),
            wait,
        }
    }

    fn busy(&self) -> AuthError {
        AuthError::Busy {
            retry_after_secs: self.wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Waits for a slot (or answers busy).
    pub async fn slot(&self) -> Result<HashSlot, AuthError> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            return Err(self.busy());
        };
        match tokio::time::timeout(self.wait, self.running.clone().acquire_owned()).await {
            Ok(Ok(running)) => Ok(HashSlot {
                _permits: (admitted, running),
            }),
            // Timed out, or closed (never: the semaphores are not closed).
            _ => Err(self.busy()),
        }
    }

    /// Runs `work` on a blocking thread once a slot is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, AuthError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.slot().await?.run(work).await
    }
}

/// The right to run one piece of password work; given back when dropped or when its work ends.
pub struct HashSlot {
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl HashSlot {
    /// Runs `work` on a blocking thread in this slot.
    pub async fn run<T, F>(self, work: F) -> Result<T, AuthError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The slot moves into the blocking task: if the request is dropped (the client went
        // away) the work still runs to its end, and the slot stays taken until then.
        tokio::task::spawn_blocking(move || {
            let _slot = self;
            work()
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn runs_at_most_the_bound_at_once() {
        let limiter = Arc::new(HashLimiter::new(2, 100, Duration::from_secs(10)));
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (limiter, now, peak) = (limiter.clone(), now.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                limiter
                    .run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_queue_and_a_long_wait_are_busy() {
        let limiter = Arc::new(HashLimiter::new(1, 1, Duration::from_millis(100)));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let l = limiter.clone();
        let running = tokio::spawn(async move {
            l.run(move || {
                let _ = hold.recv();
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One may wait; it times out because the slot stays taken.
        let l = limiter.clone();
        let waiting = tokio::spawn(async move { l.run(|| ()).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queue full: turned away at once.
        assert!(matches!(
            limiter.run(|| ()).await,
            Err(AuthError::Busy {
                retry_after_secs: 1
            })
        ));
        assert!(matches!(
            waiting.await.unwrap(),
            Err(AuthError::Busy { .. })
        ));
        release.send(()).unwrap();
        running.await.unwrap().unwrap();
        // Everything is given back.
        assert_eq!(limiter.run(|| 7).await.unwrap(), 7);
    }
}
