//! One WebSocket connection: read client messages, write what the outbox could not write at
//! once, keep the peer honest with pings, and close when the hub says so. One task per
//! connection, kept small.
//!
//! Reading goes through tungstenite's frame decoder (masking, fragmentation, UTF-8, size
//! limits, automatic pong and close replies); writing bypasses it: server frames are framed
//! by [`crate::wire`] around shared payloads and written by the [`Outbox`].

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bakend_auth::{AuthContext, TokenCheck};
use bakend_core::ids;
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::hub::{Control, Hub};
use crate::live::Named;
use crate::outbox::{Drained, Next as OutNext, Outbox};
use crate::protocol::{self, ClientMessage};
use crate::wire;

pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Who the connection is at upgrade time.
pub struct Identity {
    pub ctx: AuthContext,
    /// Access-token expiry, seconds since the epoch.
    pub exp: Option<u64>,
    /// A token was given but none was valid: tell the client it is anonymous.
    pub token_rejected: bool,
    /// `?since=<epoch>:<seq>`: every channel subscribed on this connection (the first time,
    /// without its own `since`) resumes from there.
    pub since: Option<Box<protocol::Since>>,
    /// `?since=` was given but is not `<epoch>:<seq>`.
    pub since_rejected: bool,
}

/// The connect-time `since` and the subscriptions (by id) it has been applied to.
struct ConnectResume {
    since: Box<protocol::Since>,
    done: Vec<String>,
}

/// Serves an upgraded connection: `socket` is the raw TCP stream after the handshake and
/// `leftover` whatever the client sent right behind its upgrade request.
pub async fn serve(hub: Arc<Hub>, socket: TcpStream, leftover: Bytes, identity: Identity) {
    let id = hub.next_id();
    let outbox = Arc::new(Outbox::new(
        socket,
        hub.cfg.queue_capacity,
        hub.inline_writes,
    ));
    // A fresh, exact-size copy: `leftover` is a view into hyper's read buffer, and turning it
    // into a Vec would hand tungstenite that whole allocation (8 KiB) for good.
    let partial = leftover.to_vec();
    drop(leftover);
    let mut ws = WebSocketContext::from_partially_read(
        partial,
        Role::Server,
        Some(ws_config(hub.cfg.max_message_bytes)),
    );
    outbox.push(protocol::connected_frame(
        &ids::new_id(ids::CLIENT),
        identity.ctx.user(),
        hub.epoch(),
    ));
    if identity.since_rejected {
        outbox.push(protocol::ProtocolError::InvalidSince.frame());
    }
    // Boxed: most connections never use it, and every byte here is paid per idle socket.
    let mut resume = identity.since.map(|since| {
        Box::new(ConnectResume {
            since,
            done: Vec::new(),
        })
    });
    if identity.token_rejected {
        outbox.push(protocol::error_frame(
            "invalid_token",
            "The token is invalid or expired; connected anonymously",
        ));
    }
    hub.send(Control::Register {
        id,
        outbox: outbox.clone(),
        ctx: identity.ctx,
        exp: identity.exp,
    })
    .await;

    // A peer must show life between two heartbeats: any frame counts, including the pong a
    // standard client sends automatically.
    let mut heard_from_peer = true;
    // Messages that arrived with the upgrade request are already buffered: read them first.
    let mut read_now = true;
    loop {
        if read_now {
            read_now = false;
            heard_from_peer = true;
            match Box::pin(read_available(&hub, id, &outbox, &mut ws, &mut resume)).await {
                ReadEnd::WouldBlock => {}
                ReadEnd::Gone => break,
                ReadEnd::Closed(code) => {
                    // RFC 6455 §5.5.1: answer a close with a close echoing its code.
                    close(&outbox, code, "").await;
                    break;
                }
                ReadEnd::TooBig => {
                    outbox.close(CLOSE_MESSAGE_TOO_BIG, "message too big");
                    continue;
                }
            }
        }
        tokio::select! {
            // The outbox first: a close request must not wait behind reads.
            biased;
            next = outbox.next() => match next {
                OutNext::Drain => {
                    if !drain(&outbox).await {
                        break;
                    }
                    // While frames keep coming the biased select would never reach the read
                    // side (pongs, subscribes): give it a turn whenever the socket is known to
                    // be readable — a check of tokio's cached readiness, no system call.
                    if outbox.socket().readable().now_or_never().is_some() {
                        read_now = true;
                    }
                }
                OutNext::Close(code, reason) => {
                    close(&outbox, code, reason).await;
                    break;
                }
                OutNext::Heartbeat => {
                    if !heard_from_peer {
                        break;
                    }
                    heard_from_peer = false;
                    outbox.push_raw(Bytes::from_static(wire::PING));
                }
            },
            readable = outbox.socket().readable() => {
                if readable.is_err() {
                    break;
                }
                read_now = true;
            }
        }
    }
    hub.send(Control::Unregister { id }).await;
}

fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(128)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

enum ReadEnd {
    /// Everything available was read.
    WouldBlock,
    /// The peer went away without a close frame, broke the protocol, or the socket failed.
    Gone,
    /// The peer sent a close frame with this code.
    Closed(u16),
    /// A message over the size limit: close with 1009.
    TooBig,
}

/// Reads and handles every complete message the socket has; replies tungstenite produces
/// (pong, close) are queued like any other frame.
async fn read_available(
    hub: &Arc<Hub>,
    id: u64,
    outbox: &Outbox,
    ws: &mut WebSocketContext,
    resume: &mut Option<Box<ConnectResume>>,
) -> ReadEnd {
    loop {
        let mut replies = Vec::new();
        let read = ws.read(&mut SocketIo {
            socket: outbox.socket(),
            replies: &mut replies,
        });
        if !replies.is_empty() {
            outbox.push_raw(Bytes::from(replies));
        }
        match read {
            Ok(Message::Text(t)) => handle(hub, id, outbox, resume, t.as_str()).await,
            Ok(Message::Binary(b)) => match std::str::from_utf8(&b) {
                Ok(t) => handle(hub, id, outbox, resume, t).await,
                Err(_) => {
                    outbox.push(protocol::ProtocolError::InvalidJson.frame());
                }
            },
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(frame)) => {
                return ReadEnd::Closed(frame.map_or(1000, |f| u16::from(f.code)));
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return ReadEnd::WouldBlock;
            }
            Err(WsError::Capacity(_)) => return ReadEnd::TooBig,
            Err(_) => return ReadEnd::Gone,
        }
    }
}

/// The socket as tungstenite's decoder sees it: reads never block (a `WouldBlock` ends the
/// read pass), and its writes — automatic pong and close replies — are collected to be
/// queued in order with everything else.
struct SocketIo<'a> {
    socket: &'a TcpStream,
    replies: &'a mut Vec<u8>,
}

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.replies.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what is queued, waiting for the socket whenever it is full. A close request ends
/// the wait; so does a peer that leaves a write stuck across two heartbeats (it is gone).
/// `false` ends the connection.
async fn drain(outbox: &Outbox) -> bool {
    let mut stalled = 0;
    loop {
        match outbox.drain_now() {
            Drained::Empty => return true,
            Drained::Broken => return false,
            Drained::Blocked => {}
        }
        tokio::select! {
            writable = outbox.socket().writable() => {
                if writable.is_err() {
                    return false;
                }
            }
            interrupted = outbox.interrupted() => match interrupted {
                // The close path takes over the drain (finishing a partly written frame).
                Some(_) => return true,
                None => {
                    stalled += 1;
                    if stalled >= 2 {
                        return false;
                    }
                }
            },
        }
    }
}

/// How long a close frame may take to get out. A slow consumer's socket is full when it is
/// closed, so its close frame only leaves once the client reads again; give it that chance,
/// then let go.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the close frame (after any frame already partly written), bounded in time. Boxed:
/// closing happens once per connection, and its timer would otherwise sit in every
/// connection's future.
fn close<'a>(
    outbox: &'a Outbox,
    code: u16,
    reason: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let frame = wire::close_frame(code, reason);
            while !outbox.begin_close(frame.clone()) {
                tokio::task::yield_now().await;
            }
            loop {
                match outbox.drain_now() {
                    Drained::Empty | Drained::Broken => return,
                    Drained::Blocked => {
                        if outbox.socket().writable().await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
    })
}

async fn handle(
    hub: &Arc<Hub>,
    id: u64,
    outbox: &Outbox,
    resume: &mut Option<Box<ConnectResume>>,
    text: &str,
) {
    match protocol::parse(text) {
        Ok(ClientMessage::Subscribe {
            channel,
            since,
            snapshot,
            id: sub_id,
            filter,
            sort,
            per_page,
        }) => {
            let since = since.map(Box::new).or_else(|| {
                let r = resume.as_mut()?;
                let key = sub_id.as_ref().unwrap_or(&channel);
                if r.done.contains(key) {
                    return None;
                }
                r.done.push(key.clone());
                Some(r.since.clone())
            });
            let named =
                (sub_id.is_some() || filter.is_some() || sort.is_some() || per_page.is_some())
                    .then(|| {
                        Box::new(Named {
                            id: sub_id,
                            filter,
                            sort,
                            per_page,
                        })
                    });
            hub.send(Control::Subscribe {
                id,
                channel,
                named,
                since,
                snapshot,
            })
            .await
        }
        Ok(ClientMessage::Unsubscribe(target)) => {
            hub.send(Control::Unsubscribe { id, target }).await
        }
        Ok(ClientMessage::Ping) => {
            outbox.push(protocol::pong_frame());
        }
        Ok(ClientMessage::Auth(token)) => {
            let check = match token {
                Some(t) => hub.auth.check_token(&t).await,
                None => TokenCheck::Invalid,
            };
            match check {
                TokenCheck::Valid { caller, exp } => {
                    let ack = protocol::authenticated_frame(&caller);
                    hub.send(Control::Identity {
                        id,
                        ctx: AuthContext::User(caller),
                        exp: Some(exp),
                        ack,
                    })
                    .await;
                }
                TokenCheck::Expired | TokenCheck::Invalid => {
                    outbox.push(protocol::error_frame(
                        "invalid_token",
                        "The token is invalid or expired; the connection's identity is unchanged",
                    ));
                }
            }
        }
        Err(e) => {
            outbox.push(e.frame());
        }
    }
}
