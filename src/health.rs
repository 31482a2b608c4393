//! Liveness and readiness: `/healthz` answers while the process serves at
//! all; `/readyz` only while it should be sent traffic: a config loaded,
//! the stores open, and not draining. Its body says why, including a config
//! that is stale because the last reload was rejected (the older config is
//! still in force, so the mirror stays ready: refusing traffic would not
//! make the new config any more valid).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::metrics::METRICS;
use crate::response::{full, Body};

/// What `/readyz` reports beyond the running mirror.
#[derive(Default)]
pub struct Health {
    draining: AtomicBool,
    /// Why the last reload was rejected; `None` while the running config is
    /// the one on disk.
    stale: Mutex<Option<String>>,
}

impl Health {
    /// After SIGTERM: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records the outcome of a reload: `Some(why)` when it was rejected.
    pub fn set_stale(&self, why: Option<String>) {
        METRICS.config_stale.set(i64::from(why.is_some()));
        *self.stale.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn stale(&self) -> Option<String> {
        self.stale.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `GET /healthz`: the process is alive and answering.
pub fn healthz(head: bool) -> Response<Body> {
    text(StatusCode::OK, "ok\n".into(), head)
}

/// `GET /readyz`: 200 when traffic should come here, else 503; the body is a
/// JSON detail either way.
pub fn readyz(health: &Health, config_file: &std::path::Path, pin_store: Option<String>, head: bool) -> Response<Body> {
    let draining = health.is_draining();
    let stale = health.stale();
    let detail = serde_json::json!({
        "ready": !draining,
        "draining": draining,
        "config": {
            "file": config_file.display().to_string(),
            "stale": stale.is_some(),
            "reason": stale,
        },
        "pin_store": pin_store,
    });
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let mut body = serde_json::to_string_pretty(&detail).unwrap_or_default();
    body.push('\n');
    let mut r = text(status, body, head);
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn text(status: StatusCode, body: String, head: bool) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(if head { Bytes::new() } else { Bytes::from(body) }))
        .expect("static headers")
}
