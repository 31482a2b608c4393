//! Request failures and the one place they become OCI error responses.
//!
//! Every refusal and failure a client sees is built by `Error::into_response`:
//! the status, the OCI error code, the message, and the log line. Keeping it
//! in one function keeps statuses consistent, and is why no other code logs a
//! failed request.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::oci::RouteError;
use crate::upstream::UpstreamError;

pub use crate::response::{Body, BoxError};

/// What the request was after, so "not found upstream" gets the right code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Manifest,
    Blob,
    Tags,
    Referrers,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("sigmirror is a read-only mirror: {0} is not supported")]
    WriteNotSupported(http::Method),
    #[error("{0}")]
    UnknownRegistry(String),
    /// A policy refused the image. `message` is what the audit log says too.
    #[error("{message}")]
    Denied { message: String, policy: Option<String>, image: String, reason: String },
    /// Shown to the client as `err`'s `Display`, which never holds an
    /// upstream URL or body (see `UpstreamError::detail`).
    #[error("{err}")]
    Upstream { resource: Resource, err: Arc<UpstreamError> },
    /// The manifest exists but is of a type the client's `Accept` excludes.
    #[error("{0}")]
    NotAcceptable(String),
    /// The pin store failed: we cannot know whether the tag may be served.
    #[error("pin store unavailable: {0}")]
    Pins(#[from] crate::pins::PinError),
    /// `[limits] manifest_timeout_secs` passed before the manifest was
    /// resolved and decided: nothing is served. `policy` governs the image.
    #[error(
        "policy {policy} could not verify {image} within limits.manifest_timeout_secs = {secs} s \
         (upstream too slow); nothing unverified is served, retry later"
    )]
    ManifestTimeout { policy: String, image: String, secs: u64 },
    /// The connection came in over `[limits] max_connections`; it gets this
    /// answer and is closed.
    #[error("sigmirror is serving its limit of {max} connections (limits.max_connections); retry shortly")]
    TooManyConnections { max: usize },
    /// An HTTP/2 request's header list is over `[limits] max_header_bytes`.
    /// (An HTTP/1.1 head over it never becomes a request: hyper answers
    /// `431` itself.)
    #[error("the request's header list is {size} bytes, over limits.max_header_bytes = {max}")]
    HeaderListTooLarge { size: usize, max: usize },
}

/// What a client over a limit is told to wait before retrying, in seconds,
/// when no upstream said otherwise: long enough for a slot to free, short
/// enough that a pull is not held up noticeably.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Serialize)]
struct Errors<'a> {
    errors: [ErrorBody<'a>; 1],
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

impl Error {
    pub fn upstream(resource: Resource, err: impl Into<Arc<UpstreamError>>) -> Error {
        Error::Upstream { resource, err: err.into() }
    }

    /// Status, OCI error code, and detail for this error.
    fn parts(&self) -> (StatusCode, &'static str, Option<serde_json::Value>) {
        use UpstreamError as U;
        match self {
            Error::Route(RouteError::NotFound) => (StatusCode::NOT_FOUND, "NOT_FOUND", None),
            Error::Route(RouteError::BadName(_)) => (StatusCode::BAD_REQUEST, "NAME_INVALID", None),
            Error::Route(RouteError::BadTag(_)) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID", None),
            Error::Route(RouteError::BadDigest(_)) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID", None),
            Error::WriteNotSupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", None),
            Error::UnknownRegistry(_) => (StatusCode::FORBIDDEN, "DENIED", None),
            Error::Denied { policy, image, reason, .. } => (
                StatusCode::FORBIDDEN,
                "DENIED",
                Some(serde_json::json!({ "policy": policy, "image": image, "reason": reason })),
            ),
            Error::Pins(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
            Error::TooManyConnections { .. } => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
            Error::HeaderListTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "DENIED", None),
            // A refusal (nothing is served) whose cause is time: 504 says a
            // retry may succeed, DENIED that nothing unverified was sent.
            Error::ManifestTimeout { policy, image, .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "DENIED",
                Some(serde_json::json!({ "policy": policy, "image": image, "reason": self.cannot_decide() })),
            ),
            // What distribution answers a client that cannot accept an index.
            Error::NotAcceptable(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", None),
            Error::Upstream { resource, err } => match (&**err, resource) {
                (U::NotFound, Resource::Manifest) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", None),
                (U::NotFound, Resource::Blob) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN", None),
                (U::NotFound, _) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN", None),
                (U::TooManyRequests { .. } | U::Saturated { .. }, _) => {
                    (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", None)
                }
                (U::Timeout(_), _) => (StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE", None),
                (U::Unreachable(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
                (U::TooLarge { .. }, Resource::Manifest) => (StatusCode::BAD_GATEWAY, "MANIFEST_INVALID", None),
                (U::DigestMismatch { .. }, Resource::Manifest) => (StatusCode::BAD_GATEWAY, "MANIFEST_INVALID", None),
                (U::DigestMismatch { .. }, _) => (StatusCode::BAD_GATEWAY, "DIGEST_INVALID", None),
                _ => (StatusCode::BAD_GATEWAY, "UNAVAILABLE", None),
            },
        }
    }

    /// The audit line's `reason` for a request that failed before a
    /// decision (`audit::log_failure`), and the error body's
    /// `detail.reason` where it has one: the same words in both.
    pub fn cannot_decide(&self) -> String {
        format!("cannot decide: {self}")
    }

    /// `Retry-After` seconds for an answer that asks the client to come back:
    /// upstream's own when it rate limits us, else ours.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Upstream { err, .. } => match &**err {
                UpstreamError::TooManyRequests { retry_after } => Some(retry_after.unwrap_or(RETRY_AFTER_SECS)),
                UpstreamError::Saturated { .. } => Some(RETRY_AFTER_SECS),
                _ => None,
            },
            Error::TooManyConnections { .. } => Some(RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Builds the OCI error response and writes the one log line for it.
    pub fn into_response(self, head: bool) -> Response<Body> {
        let (status, code, detail) = self.parts();
        // An upstream error's `Display` is sigmirror's own words; its detail
        // (URLs, addresses, upstream's body) goes to the log line only.
        let message = self.to_string();
        match &self {
            // Denials are logged by the decision log line already.
            Error::Denied { .. } => {}
            Error::Upstream { err, .. } => tracing::warn!(
                status = status.as_u16(),
                code,
                %message,
                detail = %err.detail().as_deref().unwrap_or("-"),
                "upstream failure"
            ),
            Error::Pins(_) => tracing::error!(status = status.as_u16(), code, %message, "pin store failure"),
            _ => tracing::debug!(status = status.as_u16(), code, %message, "request refused"),
        }
        let body = serde_json::to_vec(&Errors { errors: [ErrorBody { code, message, detail }] })
            .unwrap_or_else(|_| b"{\"errors\":[]}".to_vec());
        let mut resp = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp = resp.header(http::header::ALLOW, "GET, HEAD");
        }
        if let Some(secs) = self.retry_after() {
            resp = resp.header(http::header::RETRY_AFTER, secs);
        }
        let body = if head { Bytes::new() } else { Bytes::from(body) };
        resp.body(crate::response::full(body)).expect("static headers are valid")
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_of(e: Error) -> (StatusCode, String) {
        let resp = e.into_response(false);
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn an_upstream_failure_tells_the_client_what_failed_but_not_where_or_what_upstream_said() {
        let url = "http://10.1.2.3:5000/v2/team-a/app/manifests/v1";
        let cases = [
            (UpstreamError::Status { status: 500, url: url.into(), body: "SECRET".into() }, "upstream answered 500"),
            (UpstreamError::Unauthorized(format!("401 for {url}")), "upstream refused our credentials"),
            (UpstreamError::Unreachable(format!("error sending request for url ({url})")), "cannot reach upstream"),
            (UpstreamError::Protocol(format!("connection closed: {url}")), "upstream response is malformed"),
        ];
        for (err, message) in cases {
            let (status, body) = body_of(Error::upstream(Resource::Manifest, err)).await;
            assert!(status.is_server_error(), "{status}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["errors"][0]["message"], message, "{body}");
            assert!(!body.contains("10.1.2.3") && !body.contains("SECRET"), "{body}");
        }
    }
}
