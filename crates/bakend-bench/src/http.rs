//! A deliberately tiny HTTP/1.1 client: one TCP connection per virtual client, kept alive and
//! reused for every request. A pooled client (reqwest, hyper-util's legacy client) would hide
//! how many connections the server really sees and add per-request bookkeeping to a tool that
//! shares a single core with nothing else but must not become the bottleneck itself.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the server is, resolved once so reconnects never pay for name resolution.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `http://host:port` plus any path prefix, without a trailing slash; only for messages.
    pub origin: String,
    /// Path prefix from `--url` (empty or `/something`), so the tool works behind a proxy mount.
    pub base_path: String,
    pub host: HeaderValue,
}

impl Target {
    pub async fn resolve(url: &str) -> Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid --url {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("--url scheme {other:?} is not supported (only http)"),
            None => bail!("--url {url:?} must start with http://"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?} has no host"))?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}:{port}"))?
            .next()
            .with_context(|| format!("{host}:{port} resolved to no address"))?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Target {
            addr,
            origin: format!("http://{authority}{base_path}"),
            base_path,
            host: HeaderValue::from_str(authority.as_str()).context("invalid host in --url")?,
        })
    }

    /// Builds a request URI once so the hot loop only clones it (a refcount bump, no copy).
    pub fn path_uri(&self, path_and_query: &str) -> Result<Uri> {
        let full = format!("{}{}", self.base_path, path_and_query);
        full.parse()
            .with_context(|| format!("invalid request path {full:?}"))
    }
}

/// A request template shared by every request a client sends; everything in it is
/// reference-counted, so stamping out a request costs no copies of the body or headers.
#[derive(Clone)]
pub struct RequestTemplate {
    pub method: Method,
    pub uri: Uri,
    pub host: HeaderValue,
    /// `Some` for requests with a JSON body.
    pub json_body: Option<Bytes>,
    /// `Some("Bearer …")` for requests made as a signed-in user.
    pub authorization: Option<HeaderValue>,
}

impl RequestTemplate {
    fn build(&self) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(HOST, self.host.clone());
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let body = match &self.json_body {
            Some(b) => {
                builder =
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                b.clone()
            }
            None => Bytes::new(),
        };
        // Method, URI and headers were validated when the template was made.
        builder
            .body(Full::new(body))
            .context("building a request from its template")
    }
}

/// Opens `n` connections to `addr` up front, so connection setup is never measured and a
/// server that refuses connections fails the run before it starts. `what` names one of them
/// in the error ("connection", "writer", …).
pub async fn connect_all(addr: SocketAddr, n: u32, what: &str) -> Result<Vec<KeepAlive>> {
    let mut conns = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut c = KeepAlive::new(addr);
        c.connect()
            .await
            .with_context(|| format!("opening {what} {} of {n}", i + 1))?;
        conns.push(c);
    }
    Ok(conns)
}

/// One persistent connection that transparently reopens itself when the server closes it.
pub struct KeepAlive {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened after the first; a rising count means the server is dropping
    /// keep-alive connections, which changes what is being measured.
    pub reconnects: u64,
    opened: bool,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            sender: None,
            reconnects: 0,
            opened: false,
        }
    }

    /// Opens the connection ahead of time so connection setup is not part of the measurement.
    pub async fn connect(&mut self) -> Result<()> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        // Requests are small and latency is the point: never let Nagle hold a segment back.
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        // The connection future does the actual I/O; it ends when the sender is dropped or
        // the server closes the socket, and any error it reports resurfaces on the next send.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if self.opened {
            self.reconnects += 1;
        }
        self.opened = true;
        self.sender = Some(sender);
        Ok(())
    }

    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        // A closed connection is not a failed request (the server may legitimately close an
        // idle or `Connection: close` connection), so reopen before counting anything.
        let usable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            self.connect().await?;
        }
        self.sender
            .as_mut()
            .context("the connection closed while it was being opened")
    }

    /// Sends one request and drains the response body, returning the status and body size.
    /// The body is read frame by frame and dropped, rather than collected, so the hot path
    /// never copies or aggregates it.
    pub async fn send(&mut self, template: &RequestTemplate) -> Result<(StatusCode, usize)> {
        let sender = self.ready_sender().await?;
        let response = match sender.send_request(template.build()?).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e).context("send request");
            }
        };
        let status = response.status();
        let mut body = response.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(data) = f.data_ref() {
                        len += data.len();
                    }
                }
                Err(e) => {
                    self.sender = None;
                    return Err(e).context("read response body");
                }
            }
        }
        Ok((status, len))
    }

    /// Like [`KeepAlive::send`] but keeps the body, for checks that need to show it in an
    /// error message; not meant for the measured loop.
    pub async fn fetch(&mut self, template: &RequestTemplate) -> Result<(StatusCode, Bytes)> {
        let sender = self.ready_sender().await?;
        let response = match sender.send_request(template.build()?).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e).context("send request");
            }
        };
        let status = response.status();
        match response.into_body().collect().await {
            Ok(b) => Ok((status, b.to_bytes())),
            Err(e) => {
                self.sender = None;
                Err(e).context("read response body")
            }
        }
    }
}
