//! One client connection, served under `[limits]`: admitted or answered
//! `503` by the connection gate, its request heads bounded in time
//! (`clock`) and size, and closed once idle (`clock`).
//!
//! `max_header_bytes` bounds a request head: hyper answers `431` for an
//! HTTP/1.1 head that does not fit its read buffer, and this module answers
//! it for an HTTP/2 header list over the bound (`check_header_list`). Both
//! are counted.

mod clock;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::error::Error;
use crate::limits::{count_hit, Limits};
use crate::response::Body;
use clock::{Activity, InFlight, Watched};

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

/// How far over `max_header_bytes` an HTTP/2 header list may be and still
/// reach sigmirror, which answers it with a counted `431`
/// (`check_header_list`). h2 answers a list beyond this itself, before
/// sigmirror sees the request, so that one is not counted; the factor keeps
/// what one stream's header list can hold in memory at twice the limit.
const H2_HEADER_LIST_FACTOR: usize = 2;

/// The hyper builder with the limits applied to both protocols.
fn builder(limits: &Limits, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // `clock` keeps the header time instead (see there why).
        .header_read_timeout(None)
        // hyper answers 431 when a head does not fit its read buffer.
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(keep_alive);
    let h2_list = limits.max_header_bytes.saturating_mul(H2_HEADER_LIST_FACTOR);
    b.http2().max_header_list_size(u32::try_from(h2_list).unwrap_or(u32::MAX));
    b
}

/// Serves one admitted connection until it ends, goes idle, or the drain
/// ends it.
pub async fn serve<I>(io: I, app: Arc<App>, peer: SocketAddr, limits: Limits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Watched::new(io, activity.clone());
    let act = activity.clone();
    let max_header_bytes = limits.max_header_bytes;
    let service = hyper::service::service_fn(move |req| {
        let (app, in_flight) = (app.clone(), act.start());
        async move {
            let resp = match check_header_list(&req, max_header_bytes) {
                Ok(()) => crate::server::handle(app, peer, req).await?,
                Err(e) => e.into_response(req.method() == http::Method::HEAD),
            };
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
        _ = activity.head_too_slow(limits.header_read_timeout) => {
            count_hit("header_read_timeout_secs");
            tracing::debug!(%peer, "connection closed: a request head took over {} s", limits.header_read_timeout.as_secs());
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

/// Refuses an HTTP/2 request whose header list is over `max` bytes,
/// measured as `SETTINGS_MAX_HEADER_LIST_SIZE` measures it (RFC 9113
/// §6.5.2): each field's name and value plus 32, the pseudo-header fields
/// included. An HTTP/1.1 request passes: hyper has bounded its head already.
fn check_header_list<B>(req: &http::Request<B>, max: usize) -> Result<(), Error> {
    if req.version() != http::Version::HTTP_2 {
        return Ok(());
    }
    let field = |name: &str, value: &[u8]| name.len() + value.len() + 32;
    let uri = req.uri();
    let pseudo = [
        (":method", Some(req.method().as_str())),
        (":scheme", uri.scheme_str()),
        (":authority", uri.authority().map(|a| a.as_str())),
        (":path", uri.path_and_query().map(|p| p.as_str())),
    ];
    let pseudo = pseudo.into_iter().filter_map(|(name, value)| Some(field(name, value?.as_bytes()))).sum();
    let size = req.headers().iter().fold(pseudo, |n: usize, (k, v)| n.saturating_add(field(k.as_str(), v.as_bytes())));
    if size <= max {
        return Ok(());
    }
    count_hit("max_header_bytes");
    Err(Error::HeaderListTooLarge { size, max })
}

fn hold_until_sent(body: Body, in_flight: InFlight) -> Body {
    body.map_frame(move |frame| {
        let _held = &in_flight;
        frame
    })
    .boxed_unsync()
}

/// Counts a connection that hyper ended for a limit: a head too large
/// (`max_header_bytes`, after hyper's 431).
fn count_connection_error(e: &(dyn std::error::Error + 'static)) {
    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse_too_large) {
        count_hit("max_header_bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_request(padding: usize) -> http::Request<()> {
        http::Request::get("http://m:5000/v2/")
            .version(http::Version::HTTP_2)
            .header("x-padding", "a".repeat(padding))
            .body(())
            .unwrap()
    }

    #[test]
    fn an_http2_header_list_is_measured_as_settings_max_header_list_size_counts_it() {
        // :method GET (7+3+32) + :scheme http (7+4+32) + :authority m:5000
        // (10+6+32) + :path /v2/ (5+4+32) + x-padding (9+100+32).
        let size = 42 + 43 + 48 + 41 + 141;
        assert!(check_header_list(&h2_request(100), size).is_ok());
        match check_header_list(&h2_request(100), size - 1) {
            Err(Error::HeaderListTooLarge { size: s, max }) => assert_eq!((s, max), (size, size - 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_http1_request_is_left_to_hypers_own_bound() {
        let mut req = h2_request(100_000);
        *req.version_mut() = http::Version::HTTP_11;
        assert!(check_header_list(&req, 8192).is_ok());
    }
}
