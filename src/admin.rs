//! The admin listener (`admin_listen`): what operators and their tools ask
//! of a running sigmirror, kept off the pull listener.
//!
//! - `/metrics`, `/healthz`, `/readyz`, as on the main listener, so
//!   Prometheus and probes can reach them on a port of their own.
//! - `/admin/pins…`, the pin store of the running process, for the `pins`
//!   CLI. The embedded store is locked by the server, so a CLI in another
//!   process could not open it; and a `forget` must reach the server anyway,
//!   so that its cached pin and what it knows of the tag's moves go too.
//!
//! The admin listener is plain HTTP. A Prometheus in another pod has to
//! reach `/metrics`, so it may listen beyond loopback. `/admin/` takes two
//! things: a client on loopback, and the bearer token the server writes at
//! start to `<data_dir>/admin.token` (mode 0600, readable only by the
//! server's user). The peer address alone is not enough: a service-mesh
//! sidecar or a `kubectl port-forward` delivers remote clients from
//! loopback. The `pins` CLI run in the pod (`kubectl exec`) as the server's
//! user reads the token from the same data directory.
//!
//! Connections are HTTP/1 with a header read timeout and a cap on how many
//! are open, so idle clients on a port reachable from the network cannot
//! use up the process's file descriptors.
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/pins` | every pin, JSON array |
//! | `GET /admin/pins/moved` | pins upstream moved away from, with their moves |
//! | `GET /admin/pins/moves` | every recorded move, oldest first, forgotten pins' too |
//! | `GET /admin/pins/export` | a pins file |
//! | `POST /admin/pins/import` | body: a pins file; answer: the import report |
//! | `POST /admin/pins/forget` | body: `{"registry","repository","tag"}`; answer: `{"forgotten": true \| false}` |

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;
use crate::metrics::METRICS;
use crate::pins::{PinError, PinsFile};
use crate::response::{self, full, Body};

/// A pins file of 100,000 pins is about 30 MB; an import bigger than this is
/// refused rather than read into memory. Answers are bounded the same way
/// by the CLI.
pub const MAX_IMPORT_BYTES: usize = 64 << 20;

/// Open admin connections at most; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// A client that has not sent its request head by then is dropped.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The file, in `data_dir`, that holds the admin API's bearer token.
pub const TOKEN_FILE: &str = "admin.token";

/// The bearer token `/admin/` requires: 32 random bytes, hex.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A fresh token, written to `<data_dir>/admin.token` with mode 0600
    /// (replacing the last run's), for the CLI to read.
    pub fn create(data_dir: &std::path::Path) -> std::io::Result<Token> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        let token = hex::encode(raw);
        let path = data_dir.join(TOKEN_FILE);
        let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Token(token))
    }

    /// The token a running server wrote to `<data_dir>/admin.token`.
    pub fn read(data_dir: &std::path::Path) -> std::io::Result<String> {
        let text = std::fs::read_to_string(data_dir.join(TOKEN_FILE))?;
        Ok(text.trim().to_string())
    }

    /// Whether `header` is `Bearer <this token>`, compared in constant time.
    fn admits(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(given) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), self.0.as_bytes()).into()
    }
}

/// The body of `POST /admin/pins/forget`; the answer is `{"forgotten": bool}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForgetRequest {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

/// Serves the admin listener until `shutdown` completes. Connections still
/// open then are dropped: nothing here is worth a drain.
pub async fn run(listener: TcpListener, app: Arc<App>, token: Token, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            accepted = crate::accept(&listener) => accepted,
            _ = &mut shutdown => return,
        };
        let (app, token) = (app.clone(), token.clone());
        let service = hyper::service::service_fn(move |req| handle(app.clone(), token.clone(), peer, req));
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "admin connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// One admin request. Never fails: errors are JSON `{"error": …}` answers.
pub async fn handle<B>(
    app: Arc<App>,
    token: Token,
    peer: SocketAddr,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body,
    B::Error: Into<crate::response::BoxError>,
{
    let head = req.method() == Method::HEAD;
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/metrics" => response::metrics(METRICS.encode(), head),
        "/healthz" => crate::health::healthz(head),
        "/readyz" => {
            let pin_store = app.tags.as_ref().map(|t| t.store().describe());
            crate::health::readyz(&app.health, &app.mirror().config.file, pin_store, head)
        }
        p if p.starts_with("/admin/") => {
            // Canonical, so an IPv4 client of a dual-stack listener
            // (`::ffff:127.0.0.1`) is on loopback too.
            if !peer.ip().to_canonical().is_loopback() {
                tracing::warn!(%peer, path = p, "admin request from off loopback refused");
                error(StatusCode::FORBIDDEN, "the admin API answers only on loopback (run the pins CLI in the pod)")
            } else if !token.admits(req.headers().get(header::AUTHORIZATION)) {
                tracing::warn!(%peer, path = p, "admin request without the admin token refused");
                let msg = format!("the admin API needs the bearer token in <data_dir>/{TOKEN_FILE} (run the pins CLI as the server's user)");
                error(StatusCode::UNAUTHORIZED, &msg)
            } else {
                pins(&app, req).await
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    Ok(resp)
}

async fn pins<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<crate::response::BoxError>,
{
    let Some(tags) = &app.tags else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "this process keeps no pins");
    };
    let store = tags.store();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let result: Result<Response<Body>, PinError> = match (&method, path.as_str()) {
        (&Method::GET, "/admin/pins") => store.list().await.map(|p| json(&p)),
        (&Method::GET, "/admin/pins/moved") => store.list_moved().await.map(|m| json(&m)),
        (&Method::GET, "/admin/pins/moves") => store.moves().await.map(|m| json(&m)),
        (&Method::GET, "/admin/pins/export") => store.export().await.map(|f| json(&f)),
        (&Method::POST, "/admin/pins/import") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match PinsFile::from_json(&body) {
                Ok(file) => store.import(&file).await.map(|r| json(&r)),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
            .or_else(|e| match e {
                // A pin the file should not hold is the client's mistake.
                PinError::InvalidPin(_) => Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
                e => Err(e),
            })
        }
        (&Method::POST, "/admin/pins/forget") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let f: ForgetRequest = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("forget request: {e}")),
            };
            tags.forget(&f.registry, &f.repository, &f.tag).await.map(|forgotten| {
                if forgotten {
                    tracing::info!(registry = %f.registry, repository = %f.repository, tag = %f.tag, "pin forgotten through the admin API");
                }
                json(&serde_json::json!({ "forgotten": forgotten }))
            })
        }
        (_, "/admin/pins" | "/admin/pins/moved" | "/admin/pins/moves" | "/admin/pins/export") => {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        (_, "/admin/pins/import" | "/admin/pins/forget") => return error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => return error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    result.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

/// The request body, up to [`MAX_IMPORT_BYTES`].
async fn read_body<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body,
    B::Error: Into<crate::response::BoxError>,
{
    match http_body_util::Limited::new(body, MAX_IMPORT_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body over {MAX_IMPORT_BYTES} bytes")))
        }
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("request body: {e}"))),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    with_json(StatusCode::OK, body)
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    with_json(status, body)
}

fn with_json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(body))
        .expect("static headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `App` over a minimal config, with no pin store, and its admin token.
    fn app() -> (tempfile::TempDir, Arc<App>, Token) {
        let (dir, app) = crate::app::audited_test_app();
        let token = Token::create(dir.path()).unwrap();
        (dir, app, token)
    }

    async fn call(app: &Arc<App>, token: &Token, peer: &str, bearer: Option<&str>, path: &str) -> (StatusCode, String) {
        let mut req = Request::builder().uri(path);
        if let Some(b) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        let req = req.body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let resp = handle(app.clone(), token.clone(), peer.parse().unwrap(), req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_admin_api_takes_loopback_and_the_token_while_metrics_and_health_answer_anyone() {
        let (dir, app, token) = app();
        let secret = Token::read(dir.path()).unwrap();
        assert_eq!(secret.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is readable by others");
        let t = Some(secret.as_str());

        // Off loopback, even with the token; an IPv4-mapped address is
        // judged by its IPv4 address.
        for peer in ["10.1.2.3:40000", "[::ffff:10.1.2.3]:40000"] {
            let (status, body) = call(&app, &token, peer, t, "/admin/pins").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{peer}");
            assert!(body.contains("only on loopback"), "{body}");
        }
        // On loopback (a sidecar's forwarded client looks like this too)
        // without the token, or with another one.
        for bearer in [None, Some("0".repeat(64).as_str()), Some(&secret[1..])] {
            let (status, body) = call(&app, &token, "127.0.0.1:40000", bearer, "/admin/pins").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}");
            assert!(body.contains("admin.token"), "{body}");
        }
        // Both: past the guard (this process keeps no pins).
        for peer in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            let (status, body) = call(&app, &token, peer, t, "/admin/pins").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{peer}: {body}");
        }
        // Metrics and health need neither.
        let (status, body) = call(&app, &token, "10.1.2.3:40000", None, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("sigmirror_build_info"), "{body}");
        assert_eq!(call(&app, &token, "10.1.2.3:40000", None, "/readyz").await.0, StatusCode::OK);
        assert_eq!(call(&app, &token, "127.0.0.1:1", None, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
