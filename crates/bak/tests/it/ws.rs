//! A small WebSocket test client over tokio-tungstenite.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

pub enum Next {
    Frame(Value),
    Closed(u16, String),
    Silent,
}

impl Ws {
    /// Connects and returns the socket with its `connected` frame.
    pub async fn connect(url: &str) -> (Ws, Value) {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (stream, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let mut ws = Ws { stream };
        let connected = ws.next().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        (ws, connected)
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream.send(Message::text(s)).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.stream.send(m).await.unwrap();
    }

    pub async fn poll(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(msg) = tokio::time::timeout_at(deadline, self.stream.next()).await else {
                return Next::Silent;
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Next::Frame(serde_json::from_str(t.as_str()).unwrap());
                }
                Some(Ok(Message::Close(f))) => {
                    return match f {
                        Some(f) => Next::Closed(f.code.into(), f.reason.to_string()),
                        None => Next::Closed(1005, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(1006, String::new()),
            }
        }
    }

    /// The next text frame (5 s at most).
    pub async fn next(&mut self) -> Value {
        match self.poll(Duration::from_secs(5)).await {
            Next::Frame(v) => v,
            Next::Closed(c, r) => panic!("socket closed ({c} {r}) while waiting for a frame"),
            Next::Silent => panic!("no frame within 5 s"),
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn silent(&mut self, wait: Duration) {
        if let Next::Frame(v) = self.poll(wait).await {
            panic!("unexpected frame: {v}");
        }
    }

    /// Waits for the server's close frame.
    pub async fn closed(&mut self, wait: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.poll(deadline - tokio::time::Instant::now()).await {
                Next::Closed(c, r) => return (c, r),
                Next::Frame(_) => continue,
                Next::Silent => panic!("socket not closed within {wait:?}"),
            }
        }
    }

    /// Drops the connection with a TCP reset, as a vanished client would.
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(tcp) = self.stream.get_ref() {
            // A zero linger does not block on drop (the deprecation's concern): it sends RST.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
        drop(self);
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.send(json!({"action": "subscribe", "channel": channel}))
            .await;
        let ack = self.next().await;
        assert_eq!(ack, json!({"type": "subscribed", "channel": channel}));
    }

    /// Collects event frames up to (not including) the event about record `barrier_id`. Frames
    /// arrive in bus order, so everything emitted before the barrier has arrived by then.
    pub async fn events_until(&mut self, barrier_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.next().await;
            if v["type"] != "event" {
                continue;
            }
            if v["event"]["payload"]["id"] == barrier_id {
                return out;
            }
            out.push(v["event"].clone());
        }
    }

    /// Collects event frames until `wait` passes with nothing new.
    pub async fn events(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Next::Frame(v) = self.poll(wait).await {
            if v["type"] == "event" {
                out.push(v["event"].clone());
            }
        }
        out
    }
}

impl Ws {
    /// Whether the server's next bytes are already in this socket's receive buffer (a
    /// non-blocking peek: no waiting, nothing consumed). Only meaningful when every earlier
    /// frame has been read.
    pub fn readable_now(&self) -> bool {
        use std::os::fd::AsRawFd;
        let MaybeTlsStream::Plain(tcp) = self.stream.get_ref() else {
            panic!("plain TCP only");
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a live local buffer on our own open socket.
        let n = unsafe {
            libc::recv(
                tcp.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }
}
