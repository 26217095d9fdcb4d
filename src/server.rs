//! The listener: accepts connections, at most `max_connections` at once (more wait in the
//! listen queue), serves HTTP/1.1 on each with hyper, and keeps the connection rules that
//! hyper leaves to its user. A request head must arrive complete within `header_read_timeout`
//! of its first byte; a keep-alive connection with no request in it closes after
//! `idle_timeout`. Neither applies while a request is being answered, so a relay stream is
//! never cut by them. On shutdown the listener closes (new connections are refused), open
//! connections finish what they are doing for up to `shutdown_grace`, and what is left then
//! is cut.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in it.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long connections may go on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module doc).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let activity = Arc::new(Activity::new());
        let connection = Connection {
            app: app.clone(),
            peer,
            activity: activity.clone(),
            _permit: permit,
        };
        let handle = connections.spawn(connection.serve(stream, draining.clone()));
        tokio::spawn(watch(activity, limits, handle, peer));
    }
    drop(listener);
    let _ = drain.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown grace period over: cutting the connections still open"
        );
        connections.shutdown().await;
    }
}

struct Connection {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// Its place among `max_connections`, given back when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut draining: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            activity: self.activity.clone(),
        });
        let service = RequestService {
            app: self.app,
            peer: self.peer,
            activity: self.activity,
        };
        let connection = http1::Builder::new().serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            // The connection first: it is what wakes this task on every request.
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = draining.changed() => {
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Closes the connection (ends its task) once it breaks a rule. A task of its own, so
/// nothing of this is polled with each request; it ends within a header timeout of the
/// connection's end.
async fn watch(
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    connection: AbortHandle,
    peer: SocketAddr,
) {
    if activity.timed_out(&limits, &connection).await {
        tracing::debug!(%peer, "closing a connection: header or idle timeout");
        connection.abort();
    }
}

/// What the timeouts need to know of a connection. Times are milliseconds since `base`.
struct Activity {
    base: Instant,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the connection last had no request in it.
    idle_since: AtomicU64,
    /// When the first byte of the request head being read arrived; `NO_HEAD` when none is.
    head_started: AtomicU64,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived; on a connection with no request in it they begin a request head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NO_HEAD
        {
            self.head_started.store(self.now(), Ordering::Release);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
    }

    fn response_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now(), Ordering::Release);
        }
    }

    /// Resolves `true` when the connection has broken a rule, `false` once it has ended by
    /// itself. It wakes at least once per header timeout to look, so a head that starts while
    /// it sleeps is caught in time; nothing per request wakes it.
    async fn timed_out(&self, limits: &ConnectionLimits, connection: &AbortHandle) -> bool {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        let (header, idle) = (
            millis(limits.header_read_timeout),
            millis(limits.idle_timeout),
        );
        loop {
            if connection.is_finished() {
                return false;
            }
            let now = self.now();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    NO_HEAD => Some(self.idle_since.load(Ordering::Acquire).saturating_add(idle)),
                    started => Some(started.saturating_add(header)),
                }
            };
            if deadline.is_some_and(|d| d <= now) {
                return true;
            }
            let wake = deadline.unwrap_or(u64::MAX).min(now.saturating_add(header));
            tokio::time::sleep_until(self.base + Duration::from_millis(wake)).await;
        }
    }
}

/// The socket, telling `Activity` when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// Hands each request to the router with the peer's address, and marks the connection busy
/// until its response has been sent in full.
#[derive(Clone)]
struct RequestService {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.activity.request_started();
        let busy = BusyGuard(self.activity.clone());
        let mut app = self.app.clone();
        ResponseFuture {
            inner: app.call(req),
            busy: Some(busy),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer with its body tracked; a named future, so nothing is allocated
    /// for it per request.
    struct ResponseFuture {
        #[pin]
        inner: RouteFuture<Infallible>,
        busy: Option<BusyGuard>,
    }
}

impl Future for ResponseFuture {
    type Output = Result<hyper::Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        // Polled again after it finished (hyper never does): it has nothing more to give.
        let Some(busy) = this.busy.take() else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, _busy: busy })))
    }
}

/// Marks the end of a request's life on the connection when dropped: with its response body
/// (sent or abandoned), or with the request itself if it never got one.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.response_finished();
    }
}

/// A response body that keeps its connection marked busy while it is being sent.
struct TrackedBody {
    inner: axum::body::Body,
    _busy: BusyGuard,
}

impl Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
