//! A connection's outbound queue: bounded, allocation-free while empty, and also the channel
//! through which the hub tells the connection to close. One lock-free waker serves both, so an
//! idle connection costs a few dozen bytes here (a tokio channel would cost a kilobyte).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;

pub enum Pushed {
    /// Queued; the queue now holds this many frames.
    Queued(usize),
    /// The queue is full: the reader is not keeping up.
    Full,
    /// The connection is closing; frames are no longer taken.
    Closing,
}

pub enum Next {
    Frame(Utf8Bytes),
    Close(u16, &'static str),
    /// Time to ping the peer (requested by the hub's heartbeat).
    Heartbeat,
}

pub struct Outbox {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    /// `u32`s, like `limit`: a few bytes per idle connection add up over tens of thousands.
    capacity: u32,
    /// The current limit: `capacity`, raised while a resume's replay is being written so that
    /// live frames queued behind it do not count the replay against the client.
    limit: AtomicU32,
    /// 0 while open; the close code once closing.
    close_code: AtomicU32,
    close_reason: OnceLock<&'static str>,
    heartbeat: AtomicBool,
    waker: AtomicWaker,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        Outbox {
            frames: Mutex::new(VecDeque::new()),
            capacity,
            limit: AtomicU32::new(capacity),
            close_code: AtomicU32::new(0),
            close_reason: OnceLock::new(),
            heartbeat: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    pub fn push(&self, frame: Utf8Bytes) -> Pushed {
        if self.closing().is_some() {
            return Pushed::Closing;
        }
        let depth = {
            let Ok(mut q) = self.frames.lock() else {
                return Pushed::Closing;
            };
            if q.len() >= self.limit.load(Ordering::Relaxed) as usize {
                return Pushed::Full;
            }
            q.push_back(frame);
            q.len()
        };
        if depth == 1 {
            // Only the first frame of a batch needs to wake the writer; it drains the rest.
            self.waker.wake();
        }
        Pushed::Queued(depth)
    }

    /// Queues a resume's replayed frames regardless of the limit (the hub bounds a replay by
    /// `realtime.maxReplayEvents`), and keeps `capacity` free behind them for live frames.
    pub fn push_replay(&self, frames: Vec<Utf8Bytes>) {
        if frames.is_empty() || self.closing().is_some() {
            return;
        }
        let was_empty = {
            let Ok(mut q) = self.frames.lock() else {
                return;
            };
            let was_empty = q.is_empty();
            q.extend(frames);
            let want = (q.len() as u64 + u64::from(self.capacity)).min(u64::from(u32::MAX));
            self.limit.fetch_max(want as u32, Ordering::Relaxed);
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
    }

    /// Asks the connection to close with `code`; the first request wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.close_reason.set(reason).is_ok() {
            self.close_code.store(u32::from(code), Ordering::Release);
        }
        self.waker.wake();
    }

    /// Asks the connection to ping its peer. One hub timer drives every connection's
    /// heartbeat, so an idle connection carries no timer of its own.
    pub fn request_heartbeat(&self) {
        self.heartbeat.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn take_heartbeat(&self) -> bool {
        self.heartbeat.swap(false, Ordering::AcqRel)
    }

    pub fn closing(&self) -> Option<(u16, &'static str)> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some((code as u16, self.close_reason.get().copied().unwrap_or(""))),
        }
    }

    pub fn try_pop(&self) -> Option<Utf8Bytes> {
        let mut q = self.frames.lock().ok()?;
        let f = q.pop_front();
        if q.len() < self.capacity as usize && self.limit.load(Ordering::Relaxed) != self.capacity {
            self.limit.store(self.capacity, Ordering::Relaxed);
        }
        if q.is_empty() {
            // Most connections are idle most of the time: hold no buffer while empty. (The
            // next frame allocates a small one again; that costs far less than the send.)
            q.shrink_to_fit();
        }
        f
    }

    /// Whether frames are queued.
    pub fn has_frames(&self) -> bool {
        self.frames.lock().is_ok_and(|q| !q.is_empty())
    }

    fn ready(&self) -> Option<Next> {
        if let Some((code, reason)) = self.closing() {
            return Some(Next::Close(code, reason));
        }
        if self.take_heartbeat() {
            return Some(Next::Heartbeat);
        }
        self.try_pop().map(Next::Frame)
    }

    /// The next frame, or the request to close (which wins over queued frames).
    pub async fn next(&self) -> Next {
        poll_fn(|cx| {
            // Woken for a frame, the task finds it without registering its waker again; only
            // an empty queue registers, then looks once more so a push in between is not lost.
            if let Some(n) = self.ready() {
                return Poll::Ready(n);
            }
            self.waker.register(cx.waker());
            match self.ready() {
                Some(n) => Poll::Ready(n),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// While a write is in progress: resolves with `Some` when a close is requested, or `None`
    /// at a heartbeat (the caller counts how long the write has been stuck).
    pub async fn interrupted(&self) -> Option<(u16, &'static str)> {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if let Some(c) = self.closing() {
                return Poll::Ready(Some(c));
            }
            if self.take_heartbeat() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}
