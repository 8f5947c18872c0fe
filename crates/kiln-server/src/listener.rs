//! The accept loop: HTTP/1.1 connections with a deadline for a request's headers (which is also how
//! long a kept-alive connection may sit idle), request bodies that must keep arriving (no pause
//! longer than that deadline, and a minimum average rate), and a cap on open connections. At the cap, a new
//! connection displaces the connection that has been idle longest (no request in flight, waiting
//! for headers), so that idle or never-speaking connections cannot crowd out a client that sends a
//! request; only when every connection is busy is the newcomer turned away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::metrics::{RequestKind, ServerMetrics};

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, counted from the connection's start or
    /// the previous response: an idle kept-alive connection is closed after it too.
    pub header_timeout: Duration,
}

/// The default header deadline.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Slowest average rate a request body may arrive at, counted after its first header deadline:
/// a client trickling a body holds a connection that cannot be displaced (its request is in
/// flight), so a body slower than this is cut off.
pub const MIN_BODY_BYTES_PER_SECOND: u64 = 1024;
/// The default cap on connections, before the file-descriptor limit is taken into account.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl ConnectionLimits {
    /// The defaults for a process allowed `fd_limit` open files: half of them for connections (the
    /// rest for databases, blobs and jobs' pipes), at most [`DEFAULT_MAX_CONNECTIONS`].
    pub fn for_fd_limit(fd_limit: u64) -> Self {
        Self {
            max_connections: (fd_limit / 2).clamp(16, DEFAULT_MAX_CONNECTIONS as u64) as usize,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Raises the soft limit of open files to the hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(target: "kiln::serve", "cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// One open connection, as the registry sees it.
struct Conn {
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the last request finished (milliseconds since the registry's start).
    idle_since: AtomicU64,
    /// Told to close when displaced.
    close: Notify,
}

struct Registry {
    start: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Registers a new connection, displacing the longest-idle one at the cap; `None` when every
    /// connection is busy.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock().ok()?;
        if conns.len() >= max {
            let victim = conns
                .iter()
                .filter(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::Acquire))
                .map(|(id, _)| *id)?;
            if let Some(c) = conns.remove(&victim) {
                c.close.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }
}

/// Marks a request in flight until its response body is dropped.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn begin(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.registry.now_ms(), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is sent (and counts the
/// bytes of S3's responses).
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
    s3: Option<Arc<ServerMetrics>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(m), Poll::Ready(Some(Ok(frame)))) = (&self.s3, &polled)
            && let Some(data) = frame.data_ref()
        {
            m.s3_sent(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Requests answered later than this are logged (at info), with their operation.
const SLOW_REQUEST: Duration = Duration::from_millis(250);

/// A request's method and path, and its `X-Amz-Target` where it has one, for the logs.
fn describe_request<B>(req: &hyper::Request<B>) -> String {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| format!(" {t}"))
        .unwrap_or_default();
    format!("{} {}{target}", req.method(), req.uri().path())
}

/// A request body that must keep arriving: the body fails (and hyper closes the connection) when
/// the client sends nothing for `idle` while the server waits for it, or when, once the server has
/// waited for it longer than `idle` in all, it has come at less than [`MIN_BODY_BYTES_PER_SECOND`]
/// over that waiting time. Only time spent waiting on the client counts, so a server slow to
/// read a body never cuts its client off.
struct Guarded {
    inner: Incoming,
    idle: Duration,
    received: u64,
    /// Time spent waiting for data, before the current wait.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<tokio::time::Instant>,
    quiet: Pin<Box<tokio::time::Sleep>>,
    /// Where an S3 request's bytes are counted.
    s3: Option<Arc<ServerMetrics>>,
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
enum BodyStalled {
    #[error("no request body data for {0:?}")]
    Idle(Duration),
    #[error("request body arriving at {0} bytes/s, below the minimum of {MIN_BODY_BYTES_PER_SECOND}")]
    TooSlow(u64),
}

impl Guarded {
    fn new(inner: Incoming, idle: Duration, s3: Option<Arc<ServerMetrics>>) -> Self {
        Self {
            inner,
            idle,
            s3,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            quiet: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The body's rate over the time waited for it, if that time is past `idle` and the rate
    /// below the minimum.
    fn too_slow(&self) -> Option<u64> {
        let counted = self.waited.checked_sub(self.idle)?.as_secs_f64();
        let floor = MIN_BODY_BYTES_PER_SECOND as f64 * counted;
        ((self.received as f64) < floor).then(|| (self.received as f64 / self.waited.as_secs_f64()) as u64)
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if !polled.is_pending()
            && let Some(since) = this.waiting_since.take()
        {
            this.waited += since.elapsed();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(m) = &this.s3 {
                        m.s3_received(data.len() as u64);
                    }
                    if !this.inner.is_end_stream()
                        && let Some(rate) = this.too_slow()
                    {
                        return Poll::Ready(Some(Err(BodyStalled::TooSlow(rate).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = tokio::time::Instant::now();
                    this.waiting_since = Some(now);
                    this.quiet.as_mut().reset(now + this.idle);
                }
                match this.quiet.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled::Idle(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Set once the server stops accepting connections: responses that would go on indefinitely (the
/// console's log tail) end, so that in-flight requests can finish.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the server is shutting down.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<ServerMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry {
        start: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    tracing::warn!(target: "kiln::serve", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, conn)) = registry.admit(limits.max_connections) else {
            tracing::warn!(
                target: "kiln::serve",
                "{} connections, all busy: refusing a new one",
                limits.max_connections
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let registry = registry.clone();
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let service = {
                let conn = conn.clone();
                let registry = registry.clone();
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let in_flight = InFlight::begin(conn.clone(), registry.clone());
                    let kind = RequestKind::of(&req);
                    // S3's bytes in and out are counted as they pass.
                    let s3 = (kind.service == "s3").then(|| metrics.clone());
                    let req = req.map(|body| Body::new(Guarded::new(body, limits.header_timeout, s3.clone())));
                    let router = router.clone();
                    let metrics = metrics.clone();
                    async move {
                        let started = Instant::now();
                        let what = describe_request(&req);
                        // A warm pool's allocation asking what to run next is held on purpose.
                        let held = req.uri().path().ends_with("/pool/next");
                        let response = match router.oneshot(req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        };
                        let took = started.elapsed();
                        metrics.record(kind, response.status().as_u16(), took);
                        if took >= SLOW_REQUEST && !held {
                            tracing::info!(
                                target: "kiln::serve",
                                "slow request: {what} answered {} after {} ms",
                                response.status().as_u16(),
                                took.as_millis()
                            );
                        }
                        Ok::<_, Infallible>(response.map(|inner| Tracked {
                            inner,
                            _in_flight: in_flight,
                            s3,
                        }))
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut stopping = *stop.borrow();
            if stopping {
                connection.as_mut().graceful_shutdown();
            }
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    // Displaced by a newer connection while idle: dropping closes the socket.
                    _ = conn.close.notified() => break,
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            registry.remove(id);
        });
    }
    drop(listener);
    STOPPING.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}
