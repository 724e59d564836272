//! A stand-in for the server's realtime endpoint, for tests only. It speaks the protocol's
//! frames (`connected`, `subscribed`, `unsubscribed`, `pong`, `error`) but, instead of
//! broadcasting records created over REST, emits a burst of event frames on every subscribe,
//! stamped on the test's clock exactly like the publishers stamp real records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::accept_hdr_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

#[derive(Clone, Copy)]
pub struct MockPlan {
    /// Time zero: the `ts_field` of every event is microseconds since this instant.
    pub clock: Instant,
    /// Events owned by the connection's user, sent right after each `subscribed` ack.
    pub events_per_subscribe: u32,
    /// Further events owned by another user, sent after those.
    pub foreign_events: u32,
    /// Name of the timestamp field in the payload.
    pub ts_field: &'static str,
    /// Close the socket after the first burst (for timing a known number of frames).
    pub close_after_burst: bool,
}

impl Default for MockPlan {
    fn default() -> MockPlan {
        MockPlan {
            clock: Instant::now(),
            events_per_subscribe: 0,
            foreign_events: 0,
            ts_field: "n",
            close_after_burst: false,
        }
    }
}

pub struct Mock {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Mock {
    pub async fn start(plan: MockPlan) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock address");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, plan, count.clone()));
            }
        });
        Mock { addr, connections }
    }

    /// A server that answers every request with 404, like one without the realtime route.
    pub async fn start_http_404() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        Mock {
            addr,
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Completed WebSocket handshakes so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, plan: MockPlan, count: Arc<AtomicUsize>) {
    let mut token: Option<String> = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        token = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_owned)
        });
        Ok(resp)
    };
    let Ok(mut ws) = accept_hdr_async(stream, callback).await else {
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    let me = token.unwrap_or_else(|| "usr_anonymous".to_owned());
    if ws
        .send(Message::text(
            r#"{"type":"connected","clientId":"rt_00000000-0000-4000-8000-000000000000"}"#,
        ))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            let _ = ws
                .send(Message::text(
                    r#"{"type":"error","code":"invalid_json","message":"Invalid JSON message"}"#,
                ))
                .await;
            continue;
        };
        let channel = v["channel"].as_str().unwrap_or_default().to_owned();
        let reply = match v["action"].as_str() {
            Some("ping") => r#"{"type":"pong"}"#.to_owned(),
            Some(action @ ("subscribe" | "unsubscribe")) => {
                if channel.is_empty() || channel.starts_with('*') {
                    r#"{"type":"error","code":"invalid_channel","message":"Channel name is invalid"}"#
                        .to_owned()
                } else {
                    format!(r#"{{"type":"{action}d","channel":"{channel}"}}"#)
                }
            }
            _ => r#"{"type":"error","code":"invalid_json","message":"Invalid JSON message"}"#
                .to_owned(),
        };
        let subscribed = reply.contains(r#""type":"subscribed""#);
        if ws.send(Message::text(reply)).await.is_err() {
            return;
        }
        if subscribed {
            let total = plan.events_per_subscribe + plan.foreign_events;
            for k in 0..total {
                let owner = if k < plan.events_per_subscribe {
                    me.as_str()
                } else {
                    "usr_someone_else"
                };
                let us = plan.clock.elapsed().as_micros();
                let frame = format!(
                    r#"{{"type":"event","event":{{"id":"evt_{k}","type":"bench.created","timestamp":"2026-06-08T12:00:00.000Z","source":"collections","payload":{{"id":"rec_{k}","createdAt":"x","updatedAt":"x","title":"bench","{}":{us},"user_id":"{owner}"}}}}}}"#,
                    plan.ts_field
                );
                if ws.feed(Message::text(frame)).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
            if plan.close_after_burst {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

/// How the full mock treats owner-read events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Deliver each event only to sockets of its `user_id` (what the real server must do).
    Filter,
    /// Deliver every event to every subscriber, i.e. a permission leak.
    Leak,
}

/// Shared state of the full mock: REST creates are broadcast to every subscribed socket.
struct Full {
    events: tokio::sync::broadcast::Sender<Arc<(String, String)>>,
    records: AtomicUsize,
    owners: Owners,
}

impl Mock {
    /// A mock of the whole path the realtime scenarios use on one port, like the real
    /// server: `/health`, collection list, `POST /api/auth/register` (token `tok_<i>` for
    /// user `usr_<i>`), `POST /api/<collection>` (201, record broadcast as an event to every
    /// subscribed socket, `user_id` set from the bearer token) and the WebSocket endpoint.
    pub async fn start_full(owners: Owners) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock address");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let (events, _) = tokio::sync::broadcast::channel(1 << 16);
        let state = Arc::new(Full {
            events,
            records: AtomicUsize::new(0),
            owners,
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 32];
                    let Ok(n) = stream.peek(&mut head).await else {
                        return;
                    };
                    if head[..n].starts_with(b"GET /api/realtime") {
                        serve_full_ws(stream, state, count).await;
                    } else {
                        serve_http(stream, state).await;
                    }
                });
            }
        });
        Mock { addr, connections }
    }
}

#[allow(clippy::result_large_err)]
async fn serve_full_ws(stream: TcpStream, state: Arc<Full>, count: Arc<AtomicUsize>) {
    let mut token: Option<String> = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        token = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_owned)
        });
        Ok(resp)
    };
    let Ok(mut ws) = accept_hdr_async(stream, callback).await else {
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    let me = token.and_then(|t| t.strip_prefix("tok_").map(|i| format!("usr_{i}")));
    let mut rx = state.events.subscribe();
    let mut subscribed = false;
    if ws
        .send(Message::text(r#"{"type":"connected","clientId":"rt_x"}"#))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let channel = v["channel"].as_str().unwrap_or_default();
                let reply = match v["action"].as_str() {
                    Some("subscribe") => {
                        subscribed = true;
                        format!(r#"{{"type":"subscribed","channel":"{channel}"}}"#)
                    }
                    Some("unsubscribe") => {
                        subscribed = false;
                        format!(r#"{{"type":"unsubscribed","channel":"{channel}"}}"#)
                    }
                    _ => r#"{"type":"pong"}"#.to_owned(),
                };
                if ws.send(Message::text(reply)).await.is_err() {
                    return;
                }
            }
            ev = rx.recv() => {
                let Ok(ev) = ev else { return };
                let (owner, frame) = &*ev;
                let allowed = state.owners == Owners::Leak
                    || owner.is_empty()
                    || me.as_deref() == Some(owner.as_str());
                if subscribed && allowed && ws.send(Message::text(frame.clone())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Just enough HTTP/1.1 (keep-alive, Content-Length bodies) for the bench's own client.
async fn serve_http(mut stream: TcpStream, state: Arc<Full>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
        buf.drain(..head_end + len);
        let mut parts = head.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let user = header("authorization")
            .and_then(|a| a.strip_prefix("Bearer tok_").map(|i| format!("usr_{i}")));
        let (status, reply) = match (method, path) {
            ("GET", _) => {
                // Any GET answers like a list: a few ids (enough to sample for gets) and a
                // total counting every POST so far.
                let n = state.records.load(Ordering::SeqCst);
                let items: Vec<String> = (0..n.min(3))
                    .map(|k| format!(r#"{{"id":"rec_{k}"}}"#))
                    .collect();
                let list = format!(r#"{{"items":[{}],"totalItems":{n}}}"#, items.join(","));
                ("200 OK", list)
            }
            ("POST", "/api/auth/register") => {
                let i = state.records.fetch_add(1, Ordering::SeqCst);
                (
                    "201 Created",
                    format!(
                        r#"{{"token":"tok_{i}","refreshToken":"rt_{i}","user":{{"id":"usr_{i}","email":"x","role":"authenticated","createdAt":"x"}}}}"#
                    ),
                )
            }
            ("POST", p) if p.starts_with("/api/") => {
                let k = state.records.fetch_add(1, Ordering::SeqCst);
                let collection = &p["/api/".len()..];
                let mut record = serde_json::json!({"id": format!("rec_{k}"), "createdAt": "x", "updatedAt": "x"});
                if let (Some(r), Some(b)) = (record.as_object_mut(), body.as_object()) {
                    for (key, v) in b {
                        r.insert(key.clone(), v.clone());
                    }
                    if let Some(u) = &user {
                        r.insert("user_id".into(), serde_json::json!(u));
                    }
                }
                let frame = serde_json::json!({"type": "event", "event": {
                    "id": format!("evt_{k}"), "type": format!("{collection}.created"),
                    "timestamp": "x", "source": "collections", "payload": record}});
                let _ = state.events.send(Arc::new((
                    user.clone().unwrap_or_default(),
                    frame.to_string(),
                )));
                ("201 Created", record.to_string())
            }
            _ => ("404 Not Found", "{}".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
