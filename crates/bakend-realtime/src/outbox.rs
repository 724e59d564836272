//! A connection's outbound side: its socket, its bounded queue of frames, and the channel
//! through which the hub tells the connection to close or ping. One lock-free waker serves all
//! of it, so an idle connection costs a few dozen bytes here.
//!
//! Whoever queues a frame on an idle connection may also write it. The hub always makes the
//! first attempt at its frames itself, with one non-blocking `writev` per socket once it has
//! queued a round's frames and no task wake-up: an event must be in the kernel of every socket
//! with room before the write that caused it is answered (`Hub::delivered`), and waking and
//! polling ten thousand connection tasks per event would cost as much again as the sends. The
//! connection's own frames (pongs, errors, replays) are written by the pusher when the runtime
//! has a single worker (one core), and by the connection task with several. Either way
//! exactly one party drains a queue at a time (`Queue::busy`), frames leave in the order they
//! were queued, and a socket whose send buffer is full is handed to its connection task,
//! which waits until it is writable (the hub never waits on a client).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tungstenite::Utf8Bytes;

use crate::wire::{self, MAX_HEADER};

/// Where an outbox writes: the connection's socket, or a fake in tests (accepting all, part,
/// or failing). Only the non-blocking writes are needed; waiting for room is the connection
/// task's business.
pub trait Transport: Send + Sync + 'static {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl Transport for TcpStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

/// Most frames handed to one `writev`.
const MAX_BATCH: usize = 64;

pub enum Pushed {
    /// Queued (or already written); the queue held this many frames with it.
    Queued(usize),
    /// The queue is full: the reader is not keeping up.
    Full,
    /// The connection is closing; frames are no longer taken.
    Closing,
}

pub enum Next {
    /// Queued frames are waiting for the connection task to write them.
    Drain,
    Close(u16, &'static str),
    /// Time to ping the peer (requested by the hub's heartbeat).
    Heartbeat,
}

/// What one non-blocking drain achieved.
pub enum Drained {
    /// The queue is empty (and nobody is draining any more).
    Empty,
    /// The socket's send buffer is full; the caller still owns the drain.
    Blocked,
    /// The socket failed; the connection is over.
    Broken,
}

/// A queued frame: a text message (framed on the way out) or bytes already framed (control
/// frames).
enum Out {
    Text(Utf8Bytes),
    Raw(Bytes),
}

impl Out {
    #[cfg(test)]
    fn payload(&self) -> &[u8] {
        match self {
            Out::Text(t) => t.as_str().as_bytes(),
            Out::Raw(b) => b,
        }
    }

    /// Header bytes (none for a raw frame) and payload.
    fn parts<'a>(&'a self, header: &'a mut [u8; MAX_HEADER]) -> (&'a [u8], &'a [u8]) {
        match self {
            Out::Text(t) => {
                let p = t.as_str().as_bytes();
                let n = wire::text_header(p.len(), header);
                (&header[..n], p)
            }
            Out::Raw(b) => (&[], b),
        }
    }

    fn wire_len(&self) -> usize {
        let mut h = [0u8; MAX_HEADER];
        let (head, body) = self.parts(&mut h);
        head.len() + body.len()
    }
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Out>,
    /// Bytes of the front frame already written.
    sent: usize,
    /// Someone is responsible for draining the queue: a writer in the middle of its
    /// `writev`, or the connection task (see `handoff`). Others only append.
    busy: bool,
    /// The responsibility is the connection task's: it was woken to write, or a write found
    /// the socket full.
    handoff: bool,
}

pub struct Outbox<T = TcpStream> {
    queue: Mutex<Queue>,
    socket: T,
    /// Write on the caller's stack instead of waking the connection task (single worker).
    inline_writes: bool,
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

impl<T: Transport> Outbox<T> {
    pub fn new(socket: T, capacity: usize, inline_writes: bool) -> Outbox<T> {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        Outbox {
            queue: Mutex::new(Queue::default()),
            socket,
            inline_writes,
            capacity,
            limit: AtomicU32::new(capacity),
            close_code: AtomicU32::new(0),
            close_reason: OnceLock::new(),
            heartbeat: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    pub(crate) fn socket(&self) -> &T {
        &self.socket
    }

    /// Queues a text frame, and writes it right away when this connection is idle and writes
    /// are inline.
    pub fn push(&self, frame: Utf8Bytes) -> Pushed {
        self.enqueue(Out::Text(frame), false).0
    }

    /// Queues bytes that are already a WebSocket frame (control frames).
    pub fn push_raw(&self, frame: Bytes) -> Pushed {
        self.enqueue(Out::Raw(frame), false).0
    }

    /// For the hub: queues a text frame without writing it yet. When the answer is `true`
    /// the caller has taken the drain and must call [`Outbox::flush`] soon — once it has
    /// queued everything else it has at hand, so that under load one `writev` carries many
    /// frames instead of one `send` each. In both write modes: what the socket does not take
    /// at once goes to the connection task.
    pub fn push_deferred(&self, frame: Utf8Bytes) -> (Pushed, bool) {
        self.enqueue(Out::Text(frame), true)
    }

    /// Writes what [`Outbox::push_deferred`] queued; a full or failed socket goes to the
    /// connection task.
    pub fn flush(&self) {
        match self.drain_now() {
            Drained::Empty => {}
            Drained::Blocked | Drained::Broken => self.hand_off(),
        }
    }

    /// The queue, or `None` if it is poisoned. Unlike Bakend's other locks
    /// (`bakend_core::sync`), a poisoned queue is not recovered: its holder panicked between
    /// writing part of a frame and recording how much, so the stream may be corrupt. The
    /// connection is treated as broken and closes; the client resumes with `since`.
    fn queue(&self) -> Option<std::sync::MutexGuard<'_, Queue>> {
        self.queue.lock().ok()
    }

    fn enqueue(&self, out: Out, defer: bool) -> (Pushed, bool) {
        if self.closing().is_some() {
            return (Pushed::Closing, false);
        }
        let depth = {
            let Some(mut q) = self.queue() else {
                return (Pushed::Closing, false);
            };
            if q.frames.len() >= self.limit.load(Ordering::Relaxed) as usize {
                return (Pushed::Full, false);
            }
            q.frames.push_back(out);
            let depth = q.frames.len();
            if q.busy {
                // Whoever is draining takes it along.
                return (Pushed::Queued(depth), false);
            }
            q.busy = true;
            // A deferred push (the hub's) takes the drain whatever the mode: the hub makes
            // the first write attempt itself, so that an event is in every socket that can
            // take it before REST answers the write that caused it (see `Hub::delivered`).
            q.handoff = !self.inline_writes && !defer;
            depth
        };
        if defer {
            return (Pushed::Queued(depth), true);
        }
        if self.inline_writes {
            self.flush();
        } else {
            self.waker.wake();
        }
        (Pushed::Queued(depth), false)
    }

    /// Passes the drain to the connection task (which waits for the socket, or finds it
    /// broken and ends).
    fn hand_off(&self) {
        if let Some(mut q) = self.queue() {
            q.handoff = true;
        }
        self.waker.wake();
    }

    /// Queues a resume's replayed frames regardless of the limit (the hub bounds a replay by
    /// `realtime.maxReplayEvents`), and keeps `capacity` free behind them for live frames.
    /// The connection task writes them: a replay can be large.
    pub fn push_replay(&self, frames: Vec<Utf8Bytes>) {
        if frames.is_empty() || self.closing().is_some() {
            return;
        }
        let wake = {
            let Some(mut q) = self.queue() else {
                return;
            };
            q.frames.extend(frames.into_iter().map(Out::Text));
            let want = (q.frames.len() as u64 + u64::from(self.capacity)).min(u64::from(u32::MAX));
            self.limit.fetch_max(want as u32, Ordering::Relaxed);
            let idle = !q.busy;
            if idle {
                q.busy = true;
                q.handoff = true;
            }
            idle
        };
        if wake {
            self.waker.wake();
        }
    }

    /// Writes queued frames until the queue is empty or the socket is full. Only the party
    /// holding `busy` calls this; the lock is never held across the write.
    pub fn drain_now(&self) -> Drained {
        let mut batch = {
            let Some(mut q) = self.queue() else {
                return Drained::Broken;
            };
            match q.take_batch() {
                Some(b) => b,
                None => return Drained::Empty,
            }
        };
        loop {
            let written = match batch.write(&self.socket) {
                Ok(0) => return Drained::Broken,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Drained::Broken,
            };
            let Some(mut q) = self.queue() else {
                return Drained::Broken;
            };
            q.advance(written);
            self.relax_limit(q.frames.len());
            batch = match q.take_batch() {
                Some(b) => b,
                None => return Drained::Empty,
            };
        }
    }

    /// Back to the normal limit once a replay's frames have left.
    fn relax_limit(&self, len: usize) {
        if len < self.capacity as usize && self.limit.load(Ordering::Relaxed) != self.capacity {
            self.limit.store(self.capacity, Ordering::Relaxed);
        }
    }

    /// For the connection task closing the socket: once nobody else is mid-write, drops every
    /// frame not yet started (a frame partly written must be finished, or the stream would be
    /// corrupt), queues the close frame behind it and takes the drain. `false` while another
    /// party is mid-`writev` (the hub flushing this socket from another worker): retry
    /// shortly.
    pub fn begin_close(&self, frame: Bytes) -> bool {
        let Some(mut q) = self.queue() else {
            return false;
        };
        if q.busy && !q.handoff {
            return false;
        }
        let keep = usize::from(q.sent > 0);
        q.frames.truncate(keep);
        q.frames.push_back(Out::Raw(frame));
        q.busy = true;
        q.handoff = true;
        true
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

    fn ready(&self) -> Option<Next> {
        if let Some((code, reason)) = self.closing() {
            return Some(Next::Close(code, reason));
        }
        if self.take_heartbeat() {
            return Some(Next::Heartbeat);
        }
        self.queue()
            .is_some_and(|q| q.handoff)
            .then_some(Next::Drain)
    }

    /// What the connection task must do next: close (which wins), ping, or write.
    pub async fn next(&self) -> Next {
        poll_fn(|cx| {
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

    /// While waiting for the socket to take more: resolves with `Some` when a close is
    /// requested, or `None` at a heartbeat (the caller counts how long it has been stuck).
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

/// Frames copied out of the queue for one write (handles to the shared bytes, not the bytes).
enum Batch {
    /// The common case on a lightly loaded connection.
    One { frame: Out, skip: usize },
    Many {
        frames: Box<[Option<Out>; MAX_BATCH]>,
        count: usize,
        skip: usize,
    },
}

/// Frames up to this size (header included) are copied into one stack buffer and sent with
/// one plain `send`, which costs the kernel less than a `writev` of header and payload.
const SMALL_FRAME: usize = 1024;

impl Batch {
    fn write(&self, socket: &impl Transport) -> io::Result<usize> {
        match self {
            Batch::One { frame, skip } => write_one(socket, frame, *skip),
            Batch::Many {
                frames,
                count,
                skip,
            } => write_batch(socket, &frames[..*count], *skip),
        }
    }
}

fn write_one(socket: &impl Transport, frame: &Out, skip: usize) -> io::Result<usize> {
    let mut header = [0u8; MAX_HEADER];
    let (head, body) = frame.parts(&mut header);
    let total = head.len() + body.len();
    if skip == 0 && !head.is_empty() && total <= SMALL_FRAME {
        let mut buf = [0u8; SMALL_FRAME];
        buf[..head.len()].copy_from_slice(head);
        buf[head.len()..total].copy_from_slice(body);
        socket.try_write(&buf[..total])
    } else if skip < head.len() {
        socket.try_write_vectored(&[IoSlice::new(&head[skip..]), IoSlice::new(body)])
    } else {
        socket.try_write(&body[skip - head.len()..])
    }
}

impl Queue {
    /// What to write next; with nothing left, releases the drain (`busy`) instead.
    fn take_batch(&mut self) -> Option<Batch> {
        let copy = |f: &Out| match f {
            Out::Text(t) => Out::Text(t.clone()),
            Out::Raw(b) => Out::Raw(b.clone()),
        };
        match self.frames.len() {
            0 => {
                self.busy = false;
                self.handoff = false;
                // Most connections are idle most of the time: hold no buffer while empty.
                self.frames.shrink_to_fit();
                None
            }
            1 => Some(Batch::One {
                frame: copy(&self.frames[0]),
                skip: self.sent,
            }),
            _ => {
                let mut frames = Box::new([const { None }; MAX_BATCH]);
                let mut count = 0;
                for (slot, f) in frames.iter_mut().zip(self.frames.iter()) {
                    *slot = Some(copy(f));
                    count += 1;
                }
                Some(Batch::Many {
                    frames,
                    count,
                    skip: self.sent,
                })
            }
        }
    }

    /// Drops what `written` bytes completed.
    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.wire_len() - self.sent;
            if written < left {
                self.sent += written;
                return;
            }
            written -= left;
            self.sent = 0;
            self.frames.pop_front();
        }
    }
}

/// One `writev` of the batch, skipping the `skip` bytes of the first frame already sent.
fn write_batch(socket: &impl Transport, batch: &[Option<Out>], skip: usize) -> io::Result<usize> {
    let mut headers = [[0u8; MAX_HEADER]; MAX_BATCH];
    let mut slices = [IoSlice::new(&[]); 2 * MAX_BATCH];
    let mut n = 0;
    let mut skip = skip;
    for (out, header) in batch.iter().flatten().zip(headers.iter_mut()) {
        let (head, body) = out.parts(header);
        for part in [head, body] {
            if part.is_empty() {
                continue;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices[n] = IoSlice::new(&part[skip..]);
            skip = 0;
            n += 1;
        }
    }
    socket.try_write_vectored(&slices[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};
    use tungstenite::protocol::frame::FrameHeader;

    /// A connected pair; a small send buffer on the server end makes writes fill it often.
    async fn pair(send_buffer: u32) -> (TcpStream, TcpStream) {
        let listener = TcpSocket::new_v4().unwrap();
        listener.set_send_buffer_size(send_buffer).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listener.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// What a connection task does with the outbox: drain when asked, wait while full.
    async fn writer(outbox: Arc<Outbox>) {
        loop {
            match outbox.next().await {
                Next::Drain => loop {
                    match outbox.drain_now() {
                        Drained::Empty => break,
                        Drained::Broken => return,
                        Drained::Blocked => {
                            if outbox.socket().writable().await.is_err() {
                                return;
                            }
                        }
                    }
                },
                Next::Close(..) => return,
                Next::Heartbeat => {}
            }
        }
    }

    /// Reads text frames off the raw stream until `want` have arrived (`slow`: pausing now and
    /// then, so the server's socket fills up).
    async fn read_frames(mut client: TcpStream, want: usize, slow: bool) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 1500];
        while out.len() < want {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream ended after {} frames", out.len());
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let mut cur = std::io::Cursor::new(&buf[..]);
                let Some((header, len)) = FrameHeader::parse(&mut cur).unwrap() else {
                    break;
                };
                let start = cur.position() as usize;
                let end = start + len as usize;
                if buf.len() < end {
                    break;
                }
                assert!(header.is_final && header.mask.is_none());
                out.push(String::from_utf8(buf[start..end].to_vec()).unwrap());
                buf.drain(..end);
            }
            if slow && out.len() % 97 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        out
    }

    /// Two parties push concurrently (the hub's deferred pushes and the connection's own)
    /// while the socket keeps filling up: every frame arrives whole, once, and each party's
    /// frames in the order it pushed them.
    async fn concurrent_pushes_arrive_whole_and_in_order(inline_writes: bool, slow: bool) {
        const N: usize = 1500;
        let (server, client) = pair(if slow { 4096 } else { 1 << 20 }).await;
        let outbox = Arc::new(Outbox::new(server, 1_000_000, inline_writes));
        let task = tokio::spawn(writer(outbox.clone()));
        fn frame(who: &str, i: usize) -> Utf8Bytes {
            // Lengths across all three header sizes.
            let pad = match i % 50 {
                0 => 70_000,
                1..=9 => 300,
                _ => i % 100,
            };
            Utf8Bytes::from(format!("{who}:{i}:{}", "x".repeat(pad)))
        }
        // OS threads, so the two really push at the same time.
        let hub = {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    let (_, flush) = outbox.push_deferred(frame("hub", i));
                    if flush {
                        outbox.flush();
                    }
                }
            })
        };
        let own = {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    outbox.push(frame("own", i));
                }
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(60), read_frames(client, 2 * N, slow))
            .await
            .expect("all frames within 60 s");
        hub.join().unwrap();
        own.join().unwrap();
        for who in ["hub", "own"] {
            let seq: Vec<usize> = got
                .iter()
                .filter_map(|f| f.strip_prefix(who)?.strip_prefix(':'))
                .map(|rest| {
                    let (i, pad) = rest.split_once(':').unwrap();
                    let i: usize = i.parse().unwrap();
                    assert_eq!(Utf8Bytes::from(format!("{who}:{i}:{pad}")), frame(who, i));
                    i
                })
                .collect();
            assert_eq!(seq, (0..N).collect::<Vec<_>>(), "{who}'s frames in order");
        }
        outbox.close(1000, "done");
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_with_connection_task_writes() {
        concurrent_pushes_arrive_whole_and_in_order(false, false).await;
        concurrent_pushes_arrive_whole_and_in_order(false, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_with_inline_writes() {
        concurrent_pushes_arrive_whole_and_in_order(true, false).await;
        concurrent_pushes_arrive_whole_and_in_order(true, true).await;
    }

    /// A transport that takes everything, takes only so many more bytes (then would block),
    /// or fails — centrifuge's `writerConfig` fakes for the queue logic.
    #[derive(Default)]
    struct FakeWire {
        /// `None`: takes everything; `Some(n)`: `n` more bytes, then `WouldBlock`.
        room: std::sync::Mutex<Option<usize>>,
        fail: std::sync::atomic::AtomicBool,
        written: std::sync::Mutex<Vec<u8>>,
        calls: std::sync::atomic::AtomicU32,
    }

    impl FakeWire {
        fn room(&self, room: Option<usize>) {
            *self.room.lock().unwrap() = room;
        }

        /// The frames written so far: (opcode, payload), each whole.
        fn frames(&self) -> Vec<(u8, String)> {
            let buf = self.written.lock().unwrap();
            let mut out = Vec::new();
            let mut cur = std::io::Cursor::new(&buf[..]);
            while (cur.position() as usize) < buf.len() {
                let (header, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
                let start = cur.position() as usize;
                let end = start + len as usize;
                assert!(end <= buf.len(), "a frame was cut short");
                let payload = String::from_utf8_lossy(&buf[start..end]).into_owned();
                out.push((u8::from(header.opcode), payload));
                cur.set_position(end as u64);
            }
            out
        }

        fn texts(&self) -> Vec<String> {
            self.frames()
                .into_iter()
                .filter(|(op, _)| *op == 1)
                .map(|(_, p)| p)
                .collect()
        }
    }

    impl Transport for Arc<FakeWire> {
        fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            self.try_write_vectored(&[IoSlice::new(buf)])
        }
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.fail.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let mut room = self.room.lock().unwrap();
            let mut n = 0;
            let mut written = self.written.lock().unwrap();
            for b in bufs {
                let take = room.map_or(b.len(), |r| b.len().min(r - n));
                written.extend_from_slice(&b[..take]);
                n += take;
            }
            if let Some(r) = room.as_mut() {
                if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                *r -= n;
            }
            Ok(n)
        }
    }

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_string())
    }

    fn fake(capacity: usize, inline_writes: bool) -> (Arc<FakeWire>, Outbox<Arc<FakeWire>>) {
        let wire = Arc::new(FakeWire::default());
        (wire.clone(), Outbox::new(wire, capacity, inline_writes))
    }

    fn wants_drain<T: Transport>(o: &Outbox<T>) -> bool {
        matches!(o.ready(), Some(Next::Drain))
    }

    /// A connection's own frames: written by the pusher (inline) or left for the connection
    /// task, which is told to drain.
    #[test]
    fn own_frames_in_both_write_modes() {
        for inline in [true, false] {
            let (wire, o) = fake(8, inline);
            assert!(matches!(o.push(text("a")), Pushed::Queued(1)));
            assert!(matches!(o.push(text("b")), Pushed::Queued(_)));
            if inline {
                assert_eq!(wire.texts(), ["a", "b"]);
                assert!(!wants_drain(&o));
            } else {
                assert!(wire.texts().is_empty());
                assert!(wants_drain(&o), "the task is asked to write");
                assert!(matches!(o.drain_now(), Drained::Empty));
                assert_eq!(wire.texts(), ["a", "b"]);
                assert!(!wants_drain(&o));
            }
        }
    }

    /// The hub's frames: deferred in both modes, the first push takes the drain, and one
    /// flush writes the whole round with one call.
    #[test]
    fn deferred_pushes_are_written_by_the_hub_in_one_call() {
        for inline in [true, false] {
            let (wire, o) = fake(8, inline);
            let (_, take) = o.push_deferred(text("1"));
            assert!(take, "inline={inline}: the hub takes the drain");
            for f in ["2", "3"] {
                let (pushed, take) = o.push_deferred(text(f));
                assert!(matches!(pushed, Pushed::Queued(_)) && !take);
            }
            assert!(wire.texts().is_empty() && !wants_drain(&o));
            o.flush();
            assert_eq!(wire.texts(), ["1", "2", "3"], "inline={inline}");
            assert_eq!(wire.calls.load(Ordering::Relaxed), 1);
            // Idle again: the next push takes the drain afresh.
            assert!(o.push_deferred(text("4")).1);
        }
    }

    /// A socket that takes part: the rest goes to the connection task, frames stay whole and
    /// in order, and later pushes queue behind.
    #[test]
    fn a_full_socket_hands_the_drain_to_the_task() {
        // (room at first, frames pushed before the socket frees up)
        let table: &[(usize, &[&str])] = &[
            (0, &["hello"]),
            (3, &["hello", "world"]),
            (6, &["hello", "world", "again"]), // all but the last byte
        ];
        for &(room, frames) in table {
            let (wire, o) = fake(8, true);
            wire.room(Some(room));
            o.push_deferred(text(frames[0]));
            o.flush();
            assert!(wants_drain(&o), "room {room}: handed to the task");
            for f in &frames[1..] {
                // Queued behind; nobody but the task writes now.
                assert!(!o.push_deferred(text(f)).1);
                o.push(text(f));
            }
            wire.room(None);
            assert!(matches!(o.drain_now(), Drained::Empty));
            let mut want = vec![frames[0]];
            for f in &frames[1..] {
                want.extend([*f, *f]);
            }
            assert_eq!(wire.texts(), want, "room {room}");
            assert!(!wants_drain(&o));
        }
    }

    #[test]
    fn a_failed_socket_is_broken() {
        let (wire, o) = fake(8, true);
        wire.fail.store(true, Ordering::Relaxed);
        o.push_deferred(text("x"));
        o.flush();
        assert!(wants_drain(&o), "the task finds out and ends");
        assert!(matches!(o.drain_now(), Drained::Broken));
    }

    #[test]
    fn a_full_queue_refuses_and_a_closing_one_takes_nothing() {
        let (wire, o) = fake(2, true);
        wire.room(Some(0));
        assert!(matches!(o.push(text("1")), Pushed::Queued(1)));
        assert!(matches!(o.push(text("2")), Pushed::Queued(2)));
        assert!(matches!(o.push(text("3")), Pushed::Full));
        o.close(4008, "slow_consumer");
        assert!(matches!(o.push(text("4")), Pushed::Closing));
        assert!(matches!(
            o.ready(),
            Some(Next::Close(4008, "slow_consumer"))
        ));
        // The first close request wins.
        o.close(1001, "going away");
        assert_eq!(o.closing(), Some((4008, "slow_consumer")));
    }

    /// Closing drops frames not yet started but finishes one partly written.
    #[test]
    fn close_finishes_a_partial_frame_then_sends_the_close() {
        let (wire, o) = fake(8, true);
        wire.room(Some(4));
        o.push(text("partly written"));
        o.push(text("never sent"));
        assert!(o.begin_close(crate::wire::close_frame(4008, "slow_consumer")));
        wire.room(None);
        assert!(matches!(o.drain_now(), Drained::Empty));
        let frames = wire.frames();
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0], (1, "partly written".to_string()));
        assert_eq!(frames[1].0, 8);
    }

    /// A replay goes past the limit and keeps `capacity` free behind it for live frames; the
    /// limit relaxes once it has left.
    #[test]
    fn a_replay_is_taken_whole_with_room_for_live_frames() {
        let (wire, o) = fake(2, true);
        wire.room(Some(0));
        o.push_replay((0..5).map(|i| text(&format!("r{i}"))).collect());
        assert!(wants_drain(&o), "the task writes a replay");
        assert!(matches!(o.push(text("live1")), Pushed::Queued(6)));
        assert!(matches!(o.push(text("live2")), Pushed::Queued(7)));
        assert!(matches!(o.push(text("live3")), Pushed::Full));
        wire.room(None);
        assert!(matches!(o.drain_now(), Drained::Empty));
        assert_eq!(
            wire.texts(),
            ["r0", "r1", "r2", "r3", "r4", "live1", "live2"]
        );
        assert_eq!(o.limit.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn advance_keeps_partial_frames_at_the_front() {
        let mut q = Queue::default();
        q.frames.push_back(Out::Raw(Bytes::from_static(b"abcd")));
        q.frames.push_back(Out::Raw(Bytes::from_static(b"ef")));
        q.advance(3);
        assert_eq!((q.frames.len(), q.sent), (2, 3));
        q.advance(2);
        assert_eq!((q.frames.len(), q.sent), (1, 1));
        assert_eq!(q.frames[0].payload(), b"ef");
        q.advance(1);
        assert!(q.frames.is_empty());
        assert_eq!(q.sent, 0);
    }
}
