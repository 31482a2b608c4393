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
//! The admin listener is plain HTTP with no login of its own. A Prometheus
//! in another pod has to reach `/metrics`, so it may listen beyond loopback,
//! but `/admin/` answers only clients on loopback: `kubectl exec … sigmirror
//! pins …` in the pod is on loopback, a neighbour on the network is not.
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/pins` | every pin, JSON array |
//! | `GET /admin/pins/moved` | pins upstream moved away from, with their moves |
//! | `GET /admin/pins/moves` | every recorded move, oldest first, forgotten pins' too |
//! | `GET /admin/pins/export` | a pins file |
//! | `POST /admin/pins/import` | body: a pins file; answer: the import report |
//! | `POST /admin/pins/forget` | body: `{"registry","repository","tag"}`; 200, or 404 when there was no pin |

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::App;
use crate::metrics::METRICS;
use crate::pins::{PinError, PinsFile};
use crate::response::{self, full, Body};

/// A pins file of 100,000 pins is about 30 MB; an import bigger than this is
/// refused rather than read into memory.
pub const MAX_IMPORT_BYTES: usize = 64 << 20;

/// The body of `POST /admin/pins/forget`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForgetRequest {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

/// Serves the admin listener until `shutdown` completes. Connections still
/// open then are dropped: nothing here is worth a drain.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = crate::accept(&listener) => accepted,
            _ = &mut shutdown => return,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| handle(app.clone(), peer, req));
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "admin connection ended: {e}");
            }
        });
    }
}

/// One admin request. Never fails: errors are JSON `{"error": …}` answers.
pub async fn handle<B>(app: Arc<App>, peer: SocketAddr, req: Request<B>) -> Result<Response<Body>, Infallible>
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
            if !peer.ip().is_loopback() {
                tracing::warn!(%peer, "admin request {p} from off loopback refused");
                error(StatusCode::FORBIDDEN, "the admin API answers only on loopback (run the pins CLI in the pod)")
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
            match tags.forget(&f.registry, &f.repository, &f.tag).await {
                Ok(true) => {
                    tracing::info!(registry = %f.registry, repository = %f.repository, tag = %f.tag, "pin forgotten through the admin API");
                    Ok(json(&serde_json::json!({ "forgotten": true })))
                }
                Ok(false) => {
                    let msg = format!("no pin for {}/{}:{}", f.registry, f.repository, f.tag);
                    return error(StatusCode::NOT_FOUND, &msg);
                }
                Err(e) => Err(e),
            }
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
        Err(e) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}"))),
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

    /// An `App` over a minimal config, with no pin store.
    fn app() -> (tempfile::TempDir, Arc<App>) {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("sigmirror.toml");
        let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                    [[upstream]]\nregistry = \"registry.test\"\nurl = \"https://127.0.0.1:1\"\n\
                    [[policy]]\nname = \"audited\"\nscope = [\"registry.test/**\"]\nmode = \"audit\"\n";
        std::fs::write(&config, text).unwrap();
        let mirror = crate::load(&config).unwrap_or_else(|p| panic!("{p}"));
        (dir, Arc::new(App::new(mirror, None)))
    }

    async fn call(app: &Arc<App>, peer: &str, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder().method(method).uri(path).body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let resp = handle(app.clone(), peer.parse().unwrap(), req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_admin_api_answers_only_on_loopback_while_metrics_and_health_answer_anyone() {
        let (_dir, app) = app();
        let (status, body) = call(&app, "10.1.2.3:40000", Method::GET, "/admin/pins").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("only on loopback"), "{body}");
        let (status, _) = call(&app, "10.1.2.3:40000", Method::POST, "/admin/pins/forget").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = call(&app, "10.1.2.3:40000", Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("sigmirror_build_info"), "{body}");
        assert_eq!(call(&app, "10.1.2.3:40000", Method::GET, "/readyz").await.0, StatusCode::OK);
        // On loopback, past the guard: this process keeps no pins.
        let (status, body) = call(&app, "[::1]:40000", Method::GET, "/admin/pins").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(call(&app, "127.0.0.1:1", Method::GET, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
