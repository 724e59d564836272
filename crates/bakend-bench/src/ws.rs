//! The WebSocket client side of the realtime scenarios: connecting (from spread-out source
//! addresses, with bounded concurrency), the `connected`/`subscribe` protocol steps, and the
//! byte-level frame inspection used on the receive hot path.
//!
//! The receive side must stay far cheaper than the server's send side, or the tool measures
//! itself: frames are therefore classified and mined for the one or two fields needed by
//! scanning bytes, never by parsing JSON.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::http::Target;

pub type Ws = WebSocketStream<TcpStream>;

/// Budget for TCP connect + upgrade + the server's `connected` frame. Generous, because under
/// a bulk connect the server may legitimately be slow; a handshake slower than this is a
/// failure worth reporting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `subscribe`/`unsubscribe` may wait for its acknowledgement.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per connection before the run is declared broken. A retry absorbs a transient
/// accept-queue overflow; a third failure in a row means something systematic.
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Read buffer per socket. Event frames are a few hundred bytes; a 4 KiB buffer still
/// batches many of them per read syscall, and tungstenite grows it for a larger frame.
pub const READ_BUFFER: usize = 4 * 1024;

/// Idle sockets receive (almost) nothing, so they get the smallest buffer that still holds
/// a control frame; at 19k sockets every KiB here is 19 MiB of client RSS.
pub const IDLE_READ_BUFFER: usize = 1024;

/// File descriptors kept free beyond the sockets a run opens (stdio, epoll, HTTP clients).
const SPARE_FDS: u64 = 64;

/// Start of every event frame as the server serialises it (`type` first); frames that start
/// differently are classified by a slower substring search instead.
const EVENT_PREFIX: &[u8] = br#"{"type":"event""#;
const TYPE_PREFIX: &[u8] = br#"{"type":""#;
const EVENT_KEY: &[u8] = br#""event":{"#;

/// Where the realtime endpoint is and how to reach it.
pub struct Endpoint {
    addr: SocketAddr,
    /// `ws://host:port[/prefix]/api/realtime`, without query.
    pub url: String,
    source_ips: Vec<IpAddr>,
    config: WebSocketConfig,
}

impl Endpoint {
    pub fn new(target: &Target, source_ips: u8, read_buffer: usize) -> Endpoint {
        let url = format!(
            "ws://{}{}/api/realtime",
            target.host.to_str().unwrap_or("localhost"),
            target.base_path
        );
        Endpoint {
            addr: target.addr,
            url,
            source_ips: source_addresses(target.addr, source_ips),
            config: ws_config(read_buffer),
        }
    }

    /// Number of distinct source addresses actually used (0 = chosen by the OS).
    pub fn source_ip_count(&self) -> usize {
        self.source_ips.len()
    }

    /// Opens connection number `index` (which picks its source address) and waits for the
    /// server's `connected` frame, so a returned socket is known to speak the protocol.
    pub async fn connect(&self, index: usize, token: Option<&str>) -> Result<Ws> {
        self.connect_with_hello(index, token)
            .await
            .map(|(ws, _)| ws)
    }

    /// [`Endpoint::connect`], also returning the `connected` frame (it carries the journal
    /// epoch).
    pub async fn connect_with_hello(
        &self,
        index: usize,
        token: Option<&str>,
    ) -> Result<(Ws, Bytes)> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connect_inner(index, token))
            .await
            .with_context(|| format!("no WebSocket handshake within {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn connect_inner(&self, index: usize, token: Option<&str>) -> Result<(Ws, Bytes)> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("create a TCP socket")?;
        if !self.source_ips.is_empty() {
            let ip = self.source_ips[index % self.source_ips.len()];
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind the client socket to {ip}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        // Subscribe requests and their acks are tiny; Nagle would only add latency.
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let url = match token {
            Some(t) => format!("{}?token={}", self.url, percent_encode(t)),
            None => self.url.clone(),
        };
        let request = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("invalid WebSocket URL {}", self.url))?;
        let (mut ws, _response) = client_async_with_config(request, stream, Some(self.config))
            .await
            .with_context(|| format!("WebSocket upgrade at {}", self.url))?;
        let first = next_data(&mut ws)
            .await
            .context("waiting for the server's connected frame")?;
        if memmem::find(&first, br#""type":"connected""#).is_none() {
            bail!("expected a connected frame first, got {}", snippet(&first));
        }
        Ok((ws, first))
    }

    /// [`Endpoint::connect`] with a couple of retries, so one transient failure among
    /// thousands of handshakes does not end the run while a systematic one still does.
    pub async fn connect_retry(&self, index: usize, token: Option<&str>) -> Result<Ws> {
        let mut attempt = 1;
        loop {
            match self.connect(index, token).await {
                Ok(ws) => return Ok(ws),
                Err(e) if attempt >= CONNECT_ATTEMPTS => {
                    return Err(e.context(format!("failed {CONNECT_ATTEMPTS} times")));
                }
                Err(_) => {
                    tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// Small buffers: many sockets, small frames. Writes go out eagerly since the client only
/// ever sends a few tiny control messages.
fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// 127.0.0.2 … 127.0.0.(k+1) when the server is on IPv4 loopback (Linux routes all of
/// 127/8 to `lo`); otherwise the OS picks, since a loopback source cannot reach a remote host.
fn source_addresses(server: SocketAddr, k: u8) -> Vec<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (0..k)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Escapes a query value or path segment byte-wise (all but RFC 3986's unreserved
/// characters). Tokens are base64url JWTs, which need no escaping; anything else still
/// reaches the server as sent.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The payload of the next text or binary frame; control frames are skipped (tungstenite
/// answers pings itself while reading).
pub async fn next_data(ws: &mut Ws) -> Result<Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.into()),
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(Message::Close(frame))) => {
                bail!("the server closed the connection ({frame:?})")
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("WebSocket read"),
            None => bail!("the server closed the connection"),
        }
    }
}

/// Sends `{"action":…,"channel":…}` and waits for the matching acknowledgement
/// (`subscribed`/`unsubscribed`). Event frames that arrive meanwhile belong to earlier
/// subscriptions; they are skipped and their number returned so callers can account for them.
pub async fn channel_request(ws: &mut Ws, action: Action, channel: &str) -> Result<u64> {
    let msg = serde_json::json!({"action": action.as_str(), "channel": channel}).to_string();
    ws.send(Message::text(msg))
        .await
        .with_context(|| format!("send {} {channel:?}", action.as_str()))?;
    let ack = format!(r#""type":"{}""#, action.ack());
    let mut skipped = 0;
    let wait = async {
        loop {
            let frame = next_data(ws).await?;
            if is_event(&frame) {
                skipped += 1;
                continue;
            }
            if memmem::find(&frame, ack.as_bytes()).is_some() {
                return Ok(());
            }
            if memmem::find(&frame, br#""type":"error""#).is_some() {
                bail!(
                    "server refused {} {channel:?}: {}",
                    action.as_str(),
                    snippet(&frame)
                );
            }
            // Anything else (a pong, an ack of an earlier request) is not ours to judge.
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .with_context(|| {
            format!(
                "no {} acknowledgement within {REPLY_TIMEOUT:?}",
                action.as_str()
            )
        })??;
    Ok(skipped)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Unsubscribe,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
        }
    }

    fn ack(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribed",
            Action::Unsubscribe => "unsubscribed",
        }
    }
}

/// Runs `make(0..n)` with at most `concurrency` in flight and returns the results in index
/// order. The first failure aborts everything still running: with retries already inside
/// each attempt, a failure here is systematic and the run would be meaningless.
pub async fn run_bounded<T, F, Fut>(
    n: usize,
    concurrency: usize,
    what: &str,
    make: F,
) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    while done < n {
        while next < n && set.len() < concurrency.max(1) {
            let fut = make(next);
            let i = next;
            set.spawn(async move { (i, fut.await) });
            next += 1;
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, result) = joined.with_context(|| format!("a {what} task panicked"))?;
        match result {
            Ok(v) => {
                out[i] = Some(v);
                done += 1;
            }
            Err(e) => {
                set.abort_all();
                return Err(e.context(format!(
                    "{what} {} of {n} failed ({done} had succeeded)",
                    i + 1
                )));
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Raises the soft open-file limit to the hard limit and checks that `sockets` more
/// descriptors fit, so a large run fails up front with advice instead of with EMFILE midway.
pub fn ensure_fd_capacity(sockets: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard limit
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        lim = raised;
    }
    let limit: u64 = lim.rlim_cur;
    let needed = sockets.saturating_add(SPARE_FDS);
    if limit < needed {
        bail!(
            "this run needs about {needed} open files but the hard limit is {limit}; \
             raise it (e.g. `ulimit -Hn {needed}` as root or in limits.conf) or use fewer connections"
        );
    }
    Ok(limit)
}

/// True for an event frame. The server writes `type` first, so the common case is one
/// prefix comparison; a differently ordered frame falls back to a substring search, which
/// control frames (`connected`, `subscribed`, `pong`, `error`) never match.
#[inline]
pub fn is_event(frame: &[u8]) -> bool {
    if frame.starts_with(EVENT_PREFIX) {
        return true;
    }
    !frame.starts_with(TYPE_PREFIX) && memmem::find(frame, EVENT_KEY).is_some()
}

/// Finds `"<field>":` in a frame and reads the unsigned integer after it, without parsing
/// the JSON. Built once per run; searching is SIMD-accelerated by `memchr`.
pub struct FieldScanner {
    finder: memmem::Finder<'static>,
}

impl FieldScanner {
    pub fn new(field: &str) -> FieldScanner {
        let needle = format!("\"{field}\":");
        FieldScanner {
            finder: memmem::Finder::new(needle.as_bytes()).into_owned(),
        }
    }

    /// The integer value of the field's first occurrence, or `None` if the field is absent
    /// or not a non-negative integer (for example a float or a string).
    #[inline]
    pub fn u64(&self, frame: &[u8]) -> Option<u64> {
        let at = self.finder.find(frame)? + self.finder.needle().len();
        let rest = skip_ws(&frame[at..]);
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut v: u64 = 0;
        for &b in &rest[..digits] {
            v = v * 10 + u64::from(b - b'0');
        }
        Some(v)
    }

    /// The raw bytes of the field's first occurrence if it is a string without escapes
    /// (ids always are), or `None`.
    #[inline]
    pub fn str<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let at = self.finder.find(frame)? + self.finder.needle().len();
        let rest = skip_ws(&frame[at..]);
        let rest = rest.strip_prefix(b"\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        Some(&rest[..end])
    }
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &b[n..]
}

/// The start of a frame, for error messages.
pub fn snippet(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).chars().take(300).collect()
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status` (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("read {path} (is {pid} running?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS line in {path}"))
}

/// Checks a `--collection`-style name before it is put into paths and channel names.
pub fn check_name(flag: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("{flag} {name:?} must be letters, digits, '_' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &[u8] = br#"{"type":"event","event":{"id":"evt_1","type":"posts.created","timestamp":"2026-06-08T12:00:00.000Z","source":"collections","payload":{"id":"rec_1","createdAt":"x","updatedAt":"x","title":"bench","n":1234567,"user_id":"usr_abc"}}}"#;

    #[test]
    fn extracts_integer_field() {
        let s = FieldScanner::new("n");
        assert_eq!(s.u64(FRAME), Some(1_234_567));
        // Tolerates whitespace after the colon and a field at the very end.
        assert_eq!(s.u64(br#"{"n": 42}"#), Some(42));
        assert_eq!(s.u64(br#"{"n":0"#), Some(0));
        // Absent, wrong type, or not a plain integer.
        assert_eq!(s.u64(br#"{"title":"n"}"#), None);
        assert_eq!(s.u64(br#"{"n":"12"}"#), None);
        assert_eq!(s.u64(br#"{"n":-5}"#), None);
        assert_eq!(s.u64(br#"{"n":1.5}"#), None);
        assert_eq!(s.u64(br#"{"n":1e3}"#), None);
        assert_eq!(s.u64(br#"{"n":99999999999999999999}"#), None);
        // A longer key ending in the field name must not match.
        assert_eq!(s.u64(br#"{"un":7}"#), None);
        // An escaped quote inside a string value is not a key.
        assert_eq!(s.u64(br#"{"title":"\"n\":5","x":1}"#), None);
        assert_eq!(
            FieldScanner::new("sent_us").u64(br#"{"a":1,"sent_us":17}"#),
            Some(17)
        );
    }

    #[test]
    fn extracts_string_field() {
        let s = FieldScanner::new("user_id");
        assert_eq!(s.str(FRAME), Some(&b"usr_abc"[..]));
        assert_eq!(s.str(br#"{"user_id":null}"#), None);
        assert_eq!(s.str(br#"{"user_id":"a\"b"}"#), None);
        assert_eq!(s.str(br#"{"user_id":"unterminated"#), None);
        assert_eq!(s.str(br#"{"x":1}"#), None);
    }

    #[test]
    fn classifies_frames() {
        assert!(is_event(FRAME));
        assert!(is_event(
            br#"{"event":{"type":"posts.created","payload":{}},"type":"event"}"#
        ));
        assert!(!is_event(br#"{"type":"connected","clientId":"rt_1"}"#));
        assert!(!is_event(br#"{"type":"subscribed","channel":"posts.*"}"#));
        assert!(!is_event(br#"{"type":"pong"}"#));
        assert!(!is_event(
            br#"{"type":"error","code":"invalid_channel","message":"Channel name is invalid"}"#
        ));
    }

    #[test]
    fn source_addresses_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let ips = source_addresses(lo, 3);
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(ips[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        let remote: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert!(source_addresses(remote, 8).is_empty());
        assert!(source_addresses(lo, 0).is_empty());
    }

    #[test]
    fn encodes_token() {
        assert_eq!(percent_encode("eyJ.a-b_c"), "eyJ.a-b_c");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
