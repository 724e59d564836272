//! How far this server's triggers have run, for a cluster (docs/cluster.md): every event this
//! server committed up to [`TriggerProgress::done_through`] has had its triggers run (or
//! refused). The server writes it with its heartbeat; when the server is lost, another node
//! runs the triggers of its events after that point — at least once, never skipped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bakend_core::sync;

#[derive(Default)]
pub struct TriggerProgress {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Seqs with invocations queued or running, and how many.
    pending: BTreeMap<u64, u32>,
    /// The newest own event dispatched (or the journal's end when the server started).
    seen: u64,
}

/// Held by an event's invocations; the last one dropped (run, refused or discarded) marks the
/// event done.
pub(crate) struct Done {
    seq: u64,
    progress: Arc<TriggerProgress>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let mut s = sync::lock(&self.progress.state);
        if let Some(n) = s.pending.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                s.pending.remove(&self.seq);
            }
        }
    }
}

impl TriggerProgress {
    /// Events up to `seq` need nothing from this server (it started after them).
    pub fn start_after(&self, seq: u64) {
        let mut s = sync::lock(&self.state);
        s.seen = s.seen.max(seq);
    }

    /// An event being dispatched: its invocations hold the returned guard.
    pub(crate) fn begin(self: &Arc<Self>, seq: u64) -> Arc<Done> {
        *sync::lock(&self.state).pending.entry(seq).or_insert(0) += 1;
        Arc::new(Done {
            seq,
            progress: self.clone(),
        })
    }

    /// Event `seq` has been dispatched (its invocations, if any, hold their guards).
    pub(crate) fn seen(&self, seq: u64) {
        let mut s = sync::lock(&self.state);
        s.seen = s.seen.max(seq);
    }

    /// Every own event up to this seq has had its triggers run.
    pub fn done_through(&self) -> u64 {
        let s = sync::lock(&self.state);
        match s.pending.keys().next() {
            Some(&first) => (first - 1).min(s.seen),
            None => s.seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_stops_before_the_oldest_event_still_running() {
        let p = Arc::new(TriggerProgress::default());
        p.start_after(10);
        assert_eq!(p.done_through(), 10);
        let a = p.begin(12);
        let a2 = a.clone(); // two triggers of one event
        p.seen(12);
        let b = p.begin(14);
        p.seen(14);
        p.seen(15); // no trigger matched
        assert_eq!(p.done_through(), 11);
        drop(b); // a later event finished first
        assert_eq!(p.done_through(), 11);
        drop(a);
        assert_eq!(
            p.done_through(),
            11,
            "one of its two invocations still runs"
        );
        drop(a2);
        assert_eq!(p.done_through(), 15);
    }
}
