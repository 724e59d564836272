//! The HTTP/1.1 accept loop: one hyper connection per TCP stream, upgrades enabled, graceful
//! shutdown. It replaces `axum::serve` for one reason: that one serves every connection
//! through hyper-util's auto-detecting builder, which wraps the stream in a private type, so
//! an upgraded WebSocket could not get its `TcpStream` back — and the realtime outbox writes
//! frames to the raw stream (see `bakend_realtime::outbox`).
//!
//! Each connection's task also closes it when it waits too long for a request head, or when
//! the loop runs out of file descriptors and sheds it (`conn_watch`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tower::ServiceExt;

pub(crate) use crate::conn_watch::Timeouts;
use crate::conn_watch::{Registry, TrackedBody};

/// After an accept error that is not about one connection (out of file descriptors, say), the
/// loop pauses before trying again, doubling the pause up to the maximum while errors last,
/// so it never spins.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Out of file descriptors: at most this many connections still waiting for a request head
/// are closed per failed accept (oldest first), to let waiting clients in.
const SHED_BATCH: usize = 64;
/// Accept errors are logged at most this often (with a count of those not logged).
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// Serves `app` until `stop` fires, then stops accepting and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    // Shutdown: `signal` asks every connection to finish its request and close; each holds a
    // `close_rx` clone, so `close_tx.closed()` resolves once the last one has gone.
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    let registry = Registry::new(timeouts);
    let mut errors = AcceptErrors::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                errors.pause = ACCEPT_PAUSE_MIN;
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let shed = if out_of_descriptors(&e) {
                    registry.shed_oldest_waiting(SHED_BATCH)
                } else {
                    0
                };
                errors.log(&e, shed);
                // Shed connections free their descriptors as soon as their tasks run: retry
                // after the shortest pause then. Otherwise back off.
                let pause = if shed > 0 {
                    ACCEPT_PAUSE_MIN
                } else {
                    errors.next_pause()
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut stop => break,
                }
                continue;
            }
        };
        let (signal, close_rx) = (signal_rx.clone(), close_rx.clone());
        tokio::spawn(serve_connection(
            tcp,
            peer,
            app.clone(),
            registry.clone(),
            signal,
            close_rx,
        ));
    }
    drop(listener);
    drop(signal_rx);
    let _ = signal_tx.send(());
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// One connection until it ends, upgrades, times out waiting for a request head, is shed, or
/// (on shutdown) has finished its request.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    registry: Arc<Registry>,
    mut signal: watch::Receiver<()>,
    close_rx: watch::Receiver<()>,
) {
    // Realtime frames and API responses are small and latency-bound: no Nagle delays.
    let _ = tcp.set_nodelay(true);
    let watch = registry.register();
    let service = {
        let requests = watch.requests();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let in_flight = requests.started();
            let response = app.clone().oneshot(req);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| TrackedBody::new(body, in_flight)),
                )
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let ended = loop {
        let wake = watch
            .deadline()
            .unwrap_or_else(|| Instant::now() + watch.recheck_after());
        tokio::select! {
            ended = conn.as_mut() => break ended,
            _ = signal.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watch.shed_requested() => {
                if watch.is_waiting() {
                    tracing::debug!(%peer, "closing a connection still waiting for its request head: out of file descriptors");
                    break Ok(());
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if watch.deadline().is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection that sent no complete request head in time");
                    break Ok(());
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
    drop(watch);
    drop(close_rx);
}

/// Whether `accept` failed because this process (or the system) has no file descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The accept loop's back-off and its rate-limited log of errors.
struct AcceptErrors {
    pause: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
    unlogged_shed: usize,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            pause: ACCEPT_PAUSE_MIN,
            last_logged: None,
            unlogged: 0,
            unlogged_shed: 0,
        }
    }
}

impl AcceptErrors {
    fn next_pause(&mut self) -> Duration {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(ACCEPT_PAUSE_MAX);
        pause
    }

    fn log(&mut self, e: &io::Error, shed: usize) {
        self.unlogged += 1;
        self.unlogged_shed += shed;
        if self
            .last_logged
            .is_some_and(|t| t.elapsed() < ACCEPT_ERROR_LOG_EVERY)
        {
            return;
        }
        tracing::error!(
            "Accepting a connection failed ({} times since the last report): {e}; closed {} connections still waiting for their request head",
            self.unlogged,
            self.unlogged_shed
        );
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
        self.unlogged_shed = 0;
    }
}
/// Errors that concern one connection only (it was reset before being accepted, say).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_doubling_to_a_cap() {
        let mut e = AcceptErrors::default();
        let pauses: Vec<u64> = (0..9).map(|_| e.next_pause().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn only_running_out_of_descriptors_sheds() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENOMEM
        )));
        assert!(is_connection_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
