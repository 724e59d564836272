//! The delivery watermark: how far along the bus (in event positions, see `bakend_events`) the
//! hub has handed events to sockets. The hub advances it once an event's frames are queued in
//! every recipient's outbox and written to every socket that had room; whoever answers a write
//! waits for it to pass the write's event, so a subscriber on this node has the event before the
//! writer hears "done" (v1's order: event first, then the response).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Watermark {
    reached: AtomicU64,
    moved: Notify,
}

impl Watermark {
    pub fn reached(&self) -> u64 {
        self.reached.load(Ordering::Acquire)
    }

    /// For the hub only (one writer): everything up to `position` has been handed over.
    pub fn advance(&self, position: u64) {
        if position > self.reached.load(Ordering::Relaxed) {
            self.reached.store(position, Ordering::Release);
            self.moved.notify_waiters();
        }
    }

    /// Resolves once the watermark is at or past `position`.
    pub async fn wait(&self, position: u64) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so an advance in between is not missed.
            moved.as_mut().enable();
            if self.reached() >= position {
                return;
            }
            moved.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_once_their_position_is_reached() {
        let w = Arc::new(Watermark::default());
        let waiter = |p: u64| {
            let w = w.clone();
            tokio::spawn(async move { w.wait(p).await })
        };
        let (two, five) = (waiter(2), waiter(5));
        tokio::task::yield_now().await;
        w.advance(2);
        tokio::time::timeout(Duration::from_secs(1), two)
            .await
            .unwrap()
            .unwrap();
        tokio::task::yield_now().await;
        assert!(!five.is_finished());
        // It never goes back.
        w.advance(1);
        assert_eq!(w.reached(), 2);
        w.advance(7);
        tokio::time::timeout(Duration::from_secs(1), five)
            .await
            .unwrap()
            .unwrap();
        // Already reached: no wait at all.
        tokio::time::timeout(Duration::from_millis(1), w.wait(3))
            .await
            .unwrap();
    }
}
