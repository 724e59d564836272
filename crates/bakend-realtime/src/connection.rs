//! One WebSocket connection: read client messages, write queued frames in batches, keep the
//! peer honest with pings, and close when the hub says so. One task per connection, kept small.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bakend_auth::{AuthContext, TokenCheck};
use bakend_core::ids;
use futures_util::{FutureExt, SinkExt};

use crate::hub::{Control, Hub};
use crate::outbox::{Next as OutNext, Outbox};
use crate::protocol::{self, ClientMessage};

/// Most frames written before one flush.
const MAX_BATCH: usize = 64;
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

/// The connect-time `since` and the channels it has been applied to.
struct ConnectResume {
    since: Box<protocol::Since>,
    done: Vec<String>,
}

pub async fn serve(hub: Arc<Hub>, mut socket: WebSocket, identity: Identity) {
    let id = hub.next_id();
    let outbox = Arc::new(Outbox::new(hub.cfg.queue_capacity));
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
    loop {
        tokio::select! {
            // Frames first: writing is what a connection mostly does, and a woken writer need
            // not poll the socket's read side. Reads still get a turn after every batch.
            biased;
            next = outbox.next() => match next {
                OutNext::Frame(first) => {
                    match write_guarded(&mut socket, first, &outbox).await {
                        WriteOutcome::Written => {}
                        WriteOutcome::Failed => break,
                        WriteOutcome::Close(code, reason) => {
                            close(&mut socket, code, reason).await;
                            break;
                        }
                    }
                    // While frames keep coming the biased select would never reach the read
                    // side: give it a turn here. With the queue drained the select polls it
                    // anyway, so the common single-frame wake-up skips this.
                    if outbox.has_frames() {
                        match socket.recv().now_or_never() {
                            None => {}
                            Some(incoming) => {
                                heard_from_peer = true;
                                if !on_incoming(&hub, id, &outbox, &mut socket, &mut resume, incoming).await {
                                    break;
                                }
                            }
                        }
                    }
                }
                OutNext::Close(code, reason) => {
                    close(&mut socket, code, reason).await;
                    break;
                }
                OutNext::Heartbeat => {
                    if !heard_from_peer {
                        break;
                    }
                    heard_from_peer = false;
                    let sent = tokio::time::timeout(hub.cfg.heartbeat, socket.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
            },
            incoming = socket.recv() => {
                heard_from_peer = true;
                if !on_incoming(&hub, id, &outbox, &mut socket, &mut resume, incoming).await {
                    break;
                }
            }
        }
    }
    hub.send(Control::Unregister { id }).await;
}

/// Handles one read result; `false` ends the connection.
async fn on_incoming(
    hub: &Arc<Hub>,
    id: u64,
    outbox: &Outbox,
    socket: &mut WebSocket,
    resume: &mut Option<Box<ConnectResume>>,
    incoming: Option<Result<Message, axum::Error>>,
) -> bool {
    match incoming {
        // Boxed: handling a message (token checks included) is rare next to writing frames,
        // and keeping its state out of the connection future keeps idle sockets small.
        Some(Ok(Message::Text(t))) => Box::pin(handle(hub, id, outbox, resume, t.as_str())).await,
        Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
            Ok(t) => Box::pin(handle(hub, id, outbox, resume, t)).await,
            Err(_) => {
                outbox.push(protocol::ProtocolError::InvalidJson.frame());
            }
        },
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        Some(Ok(Message::Close(_))) | None => return false,
        Some(Err(e)) => {
            if too_big(e) {
                close(socket, CLOSE_MESSAGE_TOO_BIG, "message too big").await;
            }
            return false;
        }
    }
    true
}

enum WriteOutcome {
    Written,
    Failed,
    Close(u16, &'static str),
}

/// Writes a batch, racing the hub's close signal and the heartbeat: a peer that lets a write
/// stall across two heartbeats is gone.
async fn write_guarded(socket: &mut WebSocket, first: Utf8Bytes, outbox: &Outbox) -> WriteOutcome {
    let write = write_batch(socket, first, outbox);
    tokio::pin!(write);
    let mut stalled = 0;
    loop {
        tokio::select! {
            written = &mut write => {
                return if written.is_ok() { WriteOutcome::Written } else { WriteOutcome::Failed };
            }
            interrupted = outbox.interrupted() => match interrupted {
                Some((code, reason)) => return WriteOutcome::Close(code, reason),
                None => {
                    stalled += 1;
                    if stalled >= 2 {
                        return WriteOutcome::Failed;
                    }
                }
            },
        }
    }
}

async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    outbox: &Outbox,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        match outbox.try_pop() {
            Some(f) => socket.feed(Message::Text(f)).await?,
            None => break,
        }
    }
    socket.flush().await
}

/// How long a close frame may take to get out. A slow consumer's socket is full when it is
/// closed, so its close frame only leaves once the client reads again; give it that chance,
/// then let go.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Boxed: closing happens once per connection, and its timer and frame would otherwise sit in
/// every connection's future.
fn close<'a>(
    socket: &'a mut WebSocket,
    code: u16,
    reason: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(close_now(socket, code, reason))
}

async fn close_now(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        socket.send(frame).await?;
        socket.flush().await
    })
    .await;
}

fn too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
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
        }) => {
            let since = since.map(Box::new).or_else(|| {
                let r = resume.as_mut()?;
                if r.done.contains(&channel) {
                    return None;
                }
                r.done.push(channel.clone());
                Some(r.since.clone())
            });
            hub.send(Control::Subscribe {
                id,
                channel,
                since,
                snapshot,
            })
            .await
        }
        Ok(ClientMessage::Unsubscribe(channel)) => {
            hub.send(Control::Unsubscribe { id, channel }).await
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
