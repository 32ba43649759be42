//! The admin API's HTTP/1 server loop: every limit that holds before authentication lives
//! here. [`run`] accepts connections under a cap ([`Connections`]), gives each a header read
//! timeout, an idle timeout (no byte moving while a request is in progress) and a request
//! timeout, and hands requests to the axum router with the client's address
//! ([`axum::extract::ConnectInfo`]).
//!
//! Past the cap, the oldest connection with no request in progress (a half-sent header, an
//! idle keep-alive) is closed to make room, else the oldest one that never passed the token
//! check ([`ConnectionTrust`]); only when every connection is trusted and busy is the new one
//! refused at once. A request counts as in progress from when its handler starts (not when
//! hyper parses a pipelined header it cannot answer yet), and a connection whose answer does
//! not drain for the idle timeout is closed. So a flood of half-open, pipelining or
//! non-reading connections can neither exhaust the daemon's file descriptors nor lock out an
//! operator's pause.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::auth::ConnectionTrust;
use super::problem::Problem;
use super::ServerLimits;

/// Largest read buffer of a connection, so also the largest request header (hyper answers 431
/// past it): 64 connections cannot make the daemon hold more than a few MiB of headers.
const READ_BUFFER_MAX: usize = 64 * 1024;
/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// What a refused connection reads before it is closed.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The open connections, oldest first, and whether each has a request in progress.
#[derive(Default)]
pub(crate) struct Connections {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

struct Slot {
    busy: Arc<AtomicUsize>,
    trust: ConnectionTrust,
    close: CancellationToken,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Serve it (an idle connection may have been closed for it).
    Admit {
        /// Its id.
        id: u64,
        /// An older connection closed to make room.
        evicted: Option<u64>,
    },
    /// Every connection is trusted and busy: close the new one at once.
    Refuse,
}

impl Connections {
    /// Admits a connection under `cap`, closing the oldest idle one, else the oldest untrusted
    /// one, if that makes room.
    pub(crate) fn admit(
        &mut self,
        cap: usize,
        busy: Arc<AtomicUsize>,
        trust: ConnectionTrust,
        close: CancellationToken,
    ) -> Admission {
        let mut evicted = None;
        if self.open.len() >= cap {
            let oldest_idle = self
                .open
                .iter()
                .find(|(_, s)| s.busy.load(Ordering::SeqCst) == 0)
                .or_else(|| self.open.iter().find(|(_, s)| !s.trust.trusted()))
                .map(|(id, _)| *id);
            match oldest_idle {
                Some(id) => {
                    if let Some(slot) = self.open.remove(&id) {
                        slot.close.cancel();
                    }
                    evicted = Some(id);
                }
                None => return Admission::Refuse,
            }
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(id, Slot { busy, trust, close });
        Admission::Admit { id, evicted }
    }

    /// The connection ended.
    pub(crate) fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

/// When a connection last moved a byte, in milliseconds since the server started.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
        };
        a.touch();
        a
    }
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A TCP stream that records when bytes last moved.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request in progress until its answer's body is sent (or dropped).
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(busy: Arc<AtomicUsize>) -> BusyGuard {
        busy.fetch_add(1, Ordering::SeqCst);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in progress while it streams.
struct GuardedBody {
    inner: axum::body::Body,
    _busy: BusyGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown`; then stops accepting, lets the
/// requests in progress finish and returns.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let conns = Arc::new(Mutex::new(Connections::default()));
    let tasks = TaskTracker::new();
    let epoch = Instant::now();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the listener stays; pause instead of spinning.
                    tracing::warn!(error = %e, "Admin API accept failed.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let trust = ConnectionTrust::default();
        let close = CancellationToken::new();
        let admission = conns.lock().expect("connections lock").admit(
            limits.max_connections,
            busy.clone(),
            trust.clone(),
            close.clone(),
        );
        let id = match admission {
            Admission::Refuse => {
                metrics::counter!(crate::metrics::ADMIN_CONNECTIONS_REFUSED).increment(1);
                let _ = stream.try_write(REFUSED);
                drop(stream);
                continue;
            }
            Admission::Admit { id, evicted } => {
                if evicted.is_some() {
                    metrics::counter!(crate::metrics::ADMIN_CONNECTIONS_EVICTED).increment(1);
                }
                id
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let conns = conns.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            serve_connection(
                stream, peer, app, &limits, busy, trust, close, shutdown, epoch,
            )
            .await;
            conns.lock().expect("connections lock").remove(id);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &ServerLimits,
    busy: Arc<AtomicUsize>,
    trust: ConnectionTrust,
    close: CancellationToken,
    shutdown: CancellationToken,
    epoch: Instant,
) {
    let activity = Arc::new(Activity::new(epoch));
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let request_timeout = limits.request_timeout;
    let service_busy = busy.clone();
    // Handlers at work (a dry run of a big CSV moves no byte for a while): the idle timeout
    // waits for them; the request timeout bounds them.
    let handling = Arc::new(AtomicUsize::new(0));
    let service_handling = handling.clone();
    let service_activity = activity.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            // hyper parses a pipelined request's header (and calls this) before it can answer
            // the previous one; only once hyper polls the future below is the request served.
            let busy = service_busy.clone();
            let handling = service_handling.clone();
            let activity = service_activity.clone();
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(trust.clone());
            let app = app.clone();
            async move {
                let guard = BusyGuard::new(busy);
                let working = BusyGuard::new(handling);
                let request = request.map(axum::body::Body::new);
                let response =
                    match tokio::time::timeout(request_timeout, app.oneshot(request)).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(_) => Problem::new(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request took longer than admin.request_timeout ({})",
                                humantime::format_duration(request_timeout)
                            ),
                        )
                        .into_response(),
                    };
                drop(working);
                activity.touch();
                Ok::<_, Infallible>(response.map(|inner| GuardedBody {
                    inner,
                    _busy: guard,
                }))
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER_MAX)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "Admin connection ended with an error.");
                }
                return;
            }
            // Evicted to make room, or the server is going away hard: drop it.
            () = close.cancelled(), if !shutdown.is_cancelled() => return,
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                if handling.load(Ordering::SeqCst) > 0 {
                    // A handler at work: idle counts from when it answers.
                    activity.touch();
                } else if activity.last() + limits.idle_timeout <= Instant::now() {
                    // Nothing moved for the idle timeout and no handler at work: a reader
                    // that stopped reading its report or its pipelined answers (a write
                    // stall), a connection hyper did not close.
                    tracing::debug!(%peer, busy = busy.load(Ordering::SeqCst), "Admin connection idle; closed.");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(c: &mut Connections, cap: usize) -> (Admission, Arc<AtomicUsize>, CancellationToken) {
        let (a, busy, _, close) = admit_trust(c, cap);
        (a, busy, close)
    }

    fn admit_trust(
        c: &mut Connections,
        cap: usize,
    ) -> (
        Admission,
        Arc<AtomicUsize>,
        ConnectionTrust,
        CancellationToken,
    ) {
        let busy = Arc::new(AtomicUsize::new(0));
        let trust = ConnectionTrust::default();
        let close = CancellationToken::new();
        let a = c.admit(cap, busy.clone(), trust.clone(), close.clone());
        (a, busy, trust, close)
    }

    #[test]
    fn past_the_cap_the_oldest_idle_then_the_oldest_untrusted_connection_makes_room() {
        let mut c = Connections::default();
        let (a, a_busy, a_trust, a_close) = admit_trust(&mut c, 3);
        let (b, _b_busy, b_close) = admit(&mut c, 3);
        let (_, c_busy, c_trust, c_close) = admit_trust(&mut c, 3);
        assert_eq!(
            a,
            Admission::Admit {
                id: 0,
                evicted: None
            }
        );
        assert_eq!(
            b,
            Admission::Admit {
                id: 1,
                evicted: None
            }
        );
        // a is serving a request: b, the oldest idle one, goes.
        a_busy.store(1, Ordering::SeqCst);
        a_trust.grant();
        let (d, d_busy, d_trust, _) = admit_trust(&mut c, 3);
        assert_eq!(
            d,
            Admission::Admit {
                id: 3,
                evicted: Some(1)
            }
        );
        assert!(b_close.is_cancelled() && !a_close.is_cancelled());
        assert_eq!(c.len(), 3);
        // Every connection busy (a pipelining client that never reads looks busy): the oldest
        // one that never passed the token check goes.
        c_busy.store(1, Ordering::SeqCst);
        d_busy.store(1, Ordering::SeqCst);
        let (e, e_busy, e_trust, _) = admit_trust(&mut c, 3);
        assert_eq!(
            e,
            Admission::Admit {
                id: 4,
                evicted: Some(2)
            }
        );
        assert!(c_close.is_cancelled() && !a_close.is_cancelled());
        assert!(!c_trust.trusted());
        // Every connection busy and trusted: refused.
        d_trust.grant();
        e_busy.store(1, Ordering::SeqCst);
        e_trust.grant();
        let (f, _, f_close) = admit(&mut c, 3);
        assert_eq!(f, Admission::Refuse);
        assert!(!f_close.is_cancelled());
        assert_eq!(c.len(), 3);
        c.remove(0);
        assert!(matches!(
            admit(&mut c, 3).0,
            Admission::Admit { evicted: None, .. }
        ));
    }
}
