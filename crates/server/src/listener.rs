//! Accepting client connections and holding each to `server.limits`, so slow, idle or too
//! many connections cannot lock other clients out.
//!
//! hyper serves each connection (HTTP/1.1 or HTTP/2, as the client speaks); this module owns
//! what hyper leaves to the server:
//!
//! - **Connection cap.** Past `max_connections`, a new connection is answered one
//!   `503 overloaded` (OpenAI shape, `Retry-After: 1`) and closed, instead of being accepted
//!   until the process runs out of file descriptors and every request fails.
//! - **Header and idle deadlines.** A per-connection watchdog knows whether a request is in
//!   flight (counted from the service call until its response body is dropped) and when bytes
//!   last moved. With nothing in flight, a connection that has sent part of a request must
//!   finish its headers within `header_read_timeout` (slowloris), and one that sends nothing
//!   is closed after `idle_timeout` (idle keep-alive). A request in flight is never cut here:
//!   its body has its own deadline (`http::body`), and the answer takes as long as upstream.
//!   hyper's own header timer is not used because it also starts on an idle keep-alive
//!   connection, so it cannot tell the two deadlines apart.
//! - **Accept errors.** `EMFILE` and friends are counted and logged (at most once a second),
//!   and accepting pauses briefly instead of spinning.
//! - **Graceful shutdown.** When draining starts the listener closes and every connection is
//!   told to finish its requests; [`run`] returns when all have closed.
//! - **The peer address.** Every request carries its client's socket address as axum's
//!   `ConnectInfo<SocketAddr>` extension (the admin API records it in the audit trail).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tollgate_types::{ApiError, ErrorCode};
use tower::ServiceExt;

use crate::gateway::{Gateway, Limits};

/// How long a refused connection gets to take its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of descriptors, usually): long enough not to spin, short
/// enough to pick up again as soon as connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves `app` on `listener` until `draining` is cancelled, then waits for every connection
/// to finish its requests and close.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    gw: Gateway,
    draining: CancellationToken,
) -> io::Result<()> {
    let limits = gw.settings().limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = draining.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    gw.0.metrics.connections.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed (out of file descriptors?)");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY, Nagle's algorithm holds small writes (one SSE chunk) until the
        // client's delayed ACK: tens of milliseconds of bunching on streams.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            gw.0.metrics
                .connections
                .refused
                .fetch_add(1, Ordering::Relaxed);
            #[expect(
                clippy::disallowed_methods,
                reason = "a refusal records no row and ends within REFUSAL_WRITE"
            )]
            tokio::spawn(refuse(tcp, limits.max_connections));
            continue;
        };
        let state = Arc::new(ConnState::new());
        let io = TokioIo::new(Tracked {
            inner: tcp,
            state: state.clone(),
        });
        let svc = ConnService {
            app: app.clone(),
            state: state.clone(),
            peer,
        };
        let conn = graceful.watch(builder.serve_connection(io, svc).into_owned());
        let gw = gw.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "a connection holds no row itself: each request's row holds a tracker \
                      token (PendingRow), and graceful shutdown waits for the connections"
        )]
        tokio::spawn(async move {
            let stats = &gw.0.metrics.connections;
            stats.open.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                why = watchdog(&state, limits) => {
                    // Dropping the connection closes the socket; nothing was in flight.
                    match why {
                        Closed::Idle => stats.closed_idle.fetch_add(1, Ordering::Relaxed),
                        Closed::HeaderTimeout => {
                            stats.closed_header_timeout.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection over the cap with one `503 overloaded` and closes it.
async fn refuse(mut tcp: TcpStream, max: usize) {
    let mut e = ApiError::new(
        ErrorCode::Overloaded,
        format!("the gateway is at its limit of {max} open connections; retry shortly"),
    );
    e.retry_after_secs = Some(1);
    let body = crate::http::error::WireFormat::OpenAi
        .error_body(&e)
        .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE, write).await;
}

/// Why the watchdog closed a connection.
enum Closed {
    Idle,
    HeaderTimeout,
}

/// Resolves when the connection must be closed: nothing in flight and either a started
/// request's headers overdue or no bytes for the idle timeout. Sleeps until the next
/// deadline, then re-reads the state (activity moves the deadlines; nothing wakes it early).
async fn watchdog(state: &ConnState, limits: Limits) -> Closed {
    loop {
        let now = state.elapsed_ms();
        let deadline = if state.in_flight.load(Ordering::Acquire) > 0 {
            // A request in flight holds the connection open; look again later.
            now.saturating_add(millis(limits.idle_timeout))
        } else {
            match state.partial_since.load(Ordering::Acquire) {
                0 => {
                    let due = state
                        .last_activity
                        .load(Ordering::Acquire)
                        .saturating_add(millis(limits.idle_timeout));
                    if now >= due {
                        return Closed::Idle;
                    }
                    due
                }
                since => {
                    let due = since.saturating_add(millis(limits.header_read_timeout));
                    if now >= due {
                        return Closed::HeaderTimeout;
                    }
                    due
                }
            }
        };
        tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now).max(1))).await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One connection's activity, shared by its socket wrapper, its service and its watchdog.
/// Times are milliseconds since the connection opened, offset by one so 0 can mean "none".
struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    last_activity: AtomicU64,
    /// When bytes of a request arrived with nothing in flight (0: none pending).
    partial_since: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(1),
            partial_since: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        millis(self.opened.elapsed()).saturating_add(1)
    }

    fn read(&self) {
        let now = self.elapsed_ms();
        self.last_activity.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.partial_since
                    .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn wrote(&self) {
        self.last_activity
            .store(self.elapsed_ms(), Ordering::Release);
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.partial_since.store(0, Ordering::Release);
    }

    fn end(&self) {
        self.last_activity
            .store(self.elapsed_ms(), Ordering::Release);
        self.partial_since.store(0, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, noting activity.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The app, counting the connection's requests in flight until each response body is done,
/// and telling each request its peer's address.
#[derive(Clone)]
struct ConnService {
    app: Router,
    state: Arc<ConnState>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.state.begin();
        let guard = InFlight(self.state.clone());
        let app = self.app.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(async move {
            let resp = app.oneshot(req).await?;
            Ok(resp.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// Ends the request's in-flight count when dropped (the response body is done or the
/// connection went away).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that holds its request's [`InFlight`] guard.
struct TrackedBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
