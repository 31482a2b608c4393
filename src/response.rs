//! Building HTTP responses: the body type every handler returns, and the few
//! shapes of successful answer. Error answers are built in `error.rs` from
//! these same parts.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::oci::Digest;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that is all there at once.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// `200` with `body` (empty for HEAD, with the length it would have had), its
/// content type, and `Docker-Content-Digest` when it is content-addressed.
pub fn bytes(content_type: &str, body: Bytes, digest: Option<&Digest>, head: bool) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(d) = digest {
        b = b.header("Docker-Content-Digest", d.as_str());
    }
    b.body(full(if head { Bytes::new() } else { body })).expect("valid headers")
}

/// `GET /v2/`: the API version check every client makes first.
pub fn api_base(head: bool) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(full(if head { Bytes::new() } else { Bytes::from_static(b"{}") }))
        .expect("static response")
}

/// `GET /metrics`: OpenMetrics text.
pub fn metrics(text: String, head: bool) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(full(if head { String::new() } else { text }))
        .expect("static response")
}
