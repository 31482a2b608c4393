//! One client connection, served under `[limits]`: admitted or answered
//! `503` by the connection gate, its request heads bounded in time and size
//! by hyper, and closed once idle.
//!
//! hyper enforces two of the limits itself: `header_read_timeout_secs`
//! (HTTP/1.1; the clock runs whenever the connection waits for a request
//! head, so it also closes an HTTP/1.1 keep-alive connection idle that long)
//! and `max_header_bytes` (`431` for HTTP/1.1, the same bound on HTTP/2
//! header lists). Idleness is watched here, for every protocol: a
//! connection with no request in flight for `idle_timeout_secs` is closed,
//! which is what bounds an idle HTTP/2 connection; and a connection whose
//! first request head has not arrived `header_read_timeout_secs` after it
//! was accepted is closed too, whatever protocol it might have spoken.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::error::Error;
use crate::limits::{count_hit, Limits};
use crate::response::Body;

/// Connections beyond `max_connections` that still get a `503` (so a client
/// learns to back off instead of seeing a reset). Past this many more, a
/// connection is closed at once: answering costs a task each, and a flood
/// must not buy itself unbounded ones.
const OVERFLOW_ANSWERS: usize = 64;

/// How long an over-limit connection may take to send its request and read
/// the `503`.
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(5);

/// Who may be served: `max_connections` slots, and `OVERFLOW_ANSWERS` more
/// for refusing. Sized once, when `run` starts (a reload does not resize it).
pub struct Gate {
    max: usize,
    serving: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
}

/// What the gate decided for one new connection. The permit is held for
/// the connection's life.
pub enum Admission {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit),
    Close,
}

impl Gate {
    pub fn new(max: usize) -> Gate {
        Gate { max, serving: Arc::new(Semaphore::new(max)), refusing: Arc::new(Semaphore::new(OVERFLOW_ANSWERS)) }
    }

    pub fn admit(&self) -> Admission {
        if let Ok(p) = self.serving.clone().try_acquire_owned() {
            return Admission::Serve(p);
        }
        count_hit("max_connections");
        match self.refusing.clone().try_acquire_owned() {
            Ok(p) => Admission::Refuse(p),
            Err(_) => Admission::Close,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Requests in flight on one connection, and since when there were none.
/// A request counts from its head until its response body is dropped
/// (sent whole, or abandoned), so a blob streaming for minutes is not idle.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Whether any request head has arrived yet.
    started: AtomicBool,
}

struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        let idle_since = Mutex::new(Instant::now());
        Arc::new(Activity { in_flight: AtomicUsize::new(0), idle_since, started: AtomicBool::new(false) })
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.started.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Completes when no request head has arrived `timeout` after the
    /// connection was accepted; never, once one has. hyper's own header
    /// clock starts only once the first bytes chose HTTP/1.1, so this is
    /// what bounds a client that connects and sends nothing, or too little
    /// to choose a protocol.
    async fn no_request_within(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
        if self.started.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    /// Completes once the connection has had no request in flight for
    /// `timeout`. Wakes at most once per `timeout` while requests run.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                timeout
            } else {
                let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                match (since + timeout).checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// The hyper builder with the limits applied to both protocols.
fn builder(limits: &Limits, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when a head does not fit its read buffer.
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(keep_alive);
    b.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Serves one admitted connection until it ends, goes idle, or the drain
/// ends it.
pub async fn serve<I>(io: I, app: Arc<App>, peer: SocketAddr, limits: Limits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let (app, in_flight) = (app.clone(), act.start());
        async move {
            let resp = crate::server::handle(app, peer, req).await?;
            // The body carries the in-flight mark until it is dropped.
            Ok::<_, std::convert::Infallible>(resp.map(|b| hold_until_sent(b, in_flight)))
        }
    });
    let builder = builder(&limits, true);
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), service).into_owned());
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            count_connection_error(&*e);
            tracing::debug!(%peer, "connection ended: {e}");
        },
        _ = activity.no_request_within(limits.header_read_timeout) => {
            count_hit("header_read_timeout_secs");
            tracing::debug!(%peer, "connection closed: no request head within {} s", limits.header_read_timeout.as_secs());
        }
        _ = activity.idle_for(limits.idle_timeout) => {
            count_hit("idle_timeout_secs");
            tracing::debug!(%peer, "connection closed: idle for {} s", limits.idle_timeout.as_secs());
        }
    }
}

/// Answers every request on a connection over `max_connections` with `503`
/// and `Retry-After`, and closes it; bounded by `OVERFLOW_DEADLINE`.
pub async fn refuse<I>(io: I, max: usize, limits: Limits, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
        let head = req.method() == http::Method::HEAD;
        Ok::<_, std::convert::Infallible>(Error::TooManyConnections { max }.into_response(head))
    });
    let builder = builder(&limits, false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if tokio::time::timeout(OVERFLOW_DEADLINE, conn).await.is_err() {
        tracing::debug!(%peer, "over-limit connection closed after {OVERFLOW_DEADLINE:?}");
    }
}

fn hold_until_sent(body: Body, in_flight: InFlight) -> Body {
    body.map_frame(move |frame| {
        let _held = &in_flight;
        frame
    })
    .boxed_unsync()
}

/// Counts a connection that hyper ended for a limit: a head too slow
/// (`header_read_timeout_secs`) or too large (`max_header_bytes`, after
/// hyper's 431).
fn count_connection_error(e: &(dyn std::error::Error + 'static)) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else { return };
    if e.is_timeout() {
        count_hit("header_read_timeout_secs");
    } else if e.is_parse_too_large() {
        count_hit("max_header_bytes");
    }
}
