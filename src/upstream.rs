//! The one seam to upstream registries: every byte sigmirror reads from a
//! registry comes through `UpstreamClient`.
//!
//! Requests go out with `reqwest`, so bodies stream and every read is bounded.
//! The registry token dance (a `401` with `WWW-Authenticate: Bearer realm=…`,
//! then a token request) is `oci-client`'s `auth`, which we call only when a
//! registry asks for it, and whose token we reuse for a short while.
//!
//! Each request is counted by kind (`sigmirror_upstream_requests_total`), so
//! tests and operators can see how often upstream was asked. Faults a real registry cannot produce are tested
//! by pointing an upstream at a fake HTTP server, which keeps this code path
//! the one that runs in production.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::StatusCode;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use crate::config;
use crate::oci::{media, Digest, ManifestRef};

/// Manifests larger than this are refused: no real manifest comes close, and
/// we hold manifests in memory to hash and verify them.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Why an upstream request failed. These are infrastructure failures: they
/// become 5xx responses and are never cached as a denial.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    #[error("upstream refused our credentials: {0}")]
    Unauthorized(String),
    #[error("upstream is rate limiting (429)")]
    TooManyRequests,
    #[error("upstream answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach upstream: {0}")]
    Unreachable(String),
    #[error("upstream sent more than {limit} bytes for {what}")]
    TooLarge { what: &'static str, limit: usize },
    #[error("upstream sent content with digest {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("upstream response is malformed: {0}")]
    Protocol(String),
}

impl UpstreamError {
    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> UpstreamError {
        if e.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else if e.is_connect() {
            UpstreamError::Unreachable(error_chain(&e))
        } else {
            UpstreamError::Protocol(error_chain(&e))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A manifest as fetched: raw bytes (never re-serialized), their digest, and
/// the media type upstream declared.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// A blob response whose body is still streaming.
pub struct BlobStream {
    pub content_length: Option<u64>,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
}

pub struct UpstreamClient {
    cfg: config::Upstream,
    http: reqwest::Client,
    auth: oci_client::Client,
    /// Bearer tokens per repository, reused until shortly before a typical
    /// registry token expires (Docker Hub: 300 s; the spec's floor: 60 s).
    tokens: moka::future::Cache<String, String>,
}

impl UpstreamClient {
    pub fn new(cfg: &config::Upstream) -> Result<UpstreamClient, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.request_timeout)
            .user_agent(concat!("sigmirror/", env!("CARGO_PKG_VERSION")))
            // Registries redirect blob reads to storage; follow a few.
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(ca) = &cfg.ca {
            let certs =
                reqwest::Certificate::from_pem_bundle(&ca.bytes).map_err(|e| format!("ca_file {}: {e}", ca.name))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        let auth = oci_client::Client::try_from(oci_client::client::ClientConfig {
            protocol: if cfg.plain_http {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            // The token endpoint may sit behind the same private CA.
            extra_root_certificates: ca_ders(cfg)
                .into_iter()
                .map(|der| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Der,
                    data: der,
                })
                .collect(),
            connect_timeout: Some(cfg.connect_timeout),
            read_timeout: Some(cfg.request_timeout),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(UpstreamClient {
            cfg: cfg.clone(),
            http,
            auth,
            tokens: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(50)).build(),
        })
    }

    /// Every upstream request is counted, by kind, in `sigmirror_upstream_requests_total`.
    fn count(&self, kind: &'static str) {
        crate::metrics::METRICS.upstream(&self.cfg.registry, kind);
    }

    pub fn registry(&self) -> &str {
        &self.cfg.registry
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.cfg.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{path}", self.cfg.host)
    }

    /// Sends a request, answering one bearer challenge if the registry asks.
    async fn send(
        &self,
        repo: &str,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.url(path);
        let build = |token: Option<&str>| {
            let mut rb = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            match (token, &self.cfg.username, &self.cfg.password) {
                (Some(t), _, _) => rb.header(AUTHORIZATION, format!("Bearer {t}")),
                (None, Some(u), Some(p)) => rb.basic_auth(u, Some(p)),
                _ => rb,
            }
        };
        let limit = timeout.unwrap_or(self.cfg.request_timeout);
        let cached = self.tokens.get(repo).await;
        let resp = build(cached.as_deref()).send().await.map_err(|e| UpstreamError::from_reqwest(e, limit))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !challenge.to_ascii_lowercase().starts_with("bearer") {
            return Err(UpstreamError::Unauthorized(format!("{} for {}", resp.status(), redact(&url))));
        }
        let token = self.fetch_token(repo).await?;
        let resp = build(Some(&token)).send().await.map_err(|e| UpstreamError::from_reqwest(e, limit))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Unauthorized(format!("token refused for {}", redact(&url))));
        }
        Ok(resp)
    }

    async fn fetch_token(&self, repo: &str) -> Result<String, UpstreamError> {
        self.count("auth");
        let reference = Reference::with_tag(self.cfg.host.clone(), repo.to_string(), "latest".into());
        let auth = match (&self.cfg.username, &self.cfg.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        };
        match self.auth.auth(&reference, &auth, RegistryOperation::Pull).await {
            Ok(Some(token)) => {
                self.tokens.insert(repo.to_string(), token.clone()).await;
                Ok(token)
            }
            Ok(None) => Err(UpstreamError::Unauthorized("registry offered no bearer token".into())),
            Err(e) => Err(UpstreamError::Unauthorized(error_chain(&e))),
        }
    }

    /// `GET /v2/<repo>/manifests/<ref>`: bounded, and checked against the
    /// digest asked for (by digest) or the digest upstream declares (by tag).
    pub async fn manifest(&self, repo: &str, reference: &ManifestRef, accept: &str) -> Result<Manifest, UpstreamError> {
        self.count("manifest");
        let resp = self
            .send(
                repo,
                reqwest::Method::GET,
                &format!("{repo}/manifests/{reference}"),
                Some(accept),
                Some(self.cfg.request_timeout),
            )
            .await?;
        let resp = check_status(resp).await?;
        let declared = header(&resp, "docker-content-digest");
        let content_type = header(&resp, CONTENT_TYPE.as_str());
        let bytes = read_bounded(resp, MAX_MANIFEST_BYTES, "a manifest", self.cfg.request_timeout).await?;
        let digest = Digest::of(&bytes);
        let expected = match reference {
            ManifestRef::Digest(d) => Some(d.to_string()),
            // A sha256 digest header must match what we hashed; other
            // algorithms we cannot check and ignore.
            ManifestRef::Tag(_) => declared.filter(|d| d.starts_with("sha256:")),
        };
        if let Some(expected) = expected {
            if expected != digest.as_str() {
                return Err(UpstreamError::DigestMismatch { expected, actual: digest.to_string() });
            }
        }
        let media_type = content_type
            .filter(|c| !c.is_empty() && c != "application/octet-stream" && c != "text/plain")
            .or_else(|| sniff_media_type(&bytes))
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        Ok(Manifest { bytes, digest, media_type })
    }

    /// Like `manifest`, but `None` for a 404 instead of an error: signature
    /// manifests are optional, and their absence is an answer.
    pub async fn optional_manifest(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<Option<Manifest>, UpstreamError> {
        match self.manifest(repo, reference, accept).await {
            Ok(m) => Ok(Some(m)),
            Err(UpstreamError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>` read fully, for small blobs such as
    /// signature payloads. Bounded and checked against the digest.
    pub async fn small_blob(&self, repo: &str, digest: &Digest, limit: usize) -> Result<Bytes, UpstreamError> {
        self.count("blob");
        let resp = self
            .send(repo, reqwest::Method::GET, &format!("{repo}/blobs/{digest}"), None, Some(self.cfg.request_timeout))
            .await?;
        let resp = check_status(resp).await?;
        let bytes = read_bounded(resp, limit, "a signature blob", self.cfg.request_timeout).await?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(UpstreamError::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
        }
        Ok(bytes)
    }

    /// `GET|HEAD /v2/<repo>/blobs/<digest>` as a stream. The caller hashes it.
    /// No whole-request timeout: layers can take minutes. The read timeout
    /// still catches a stalled upstream.
    pub async fn blob(&self, repo: &str, digest: &Digest, head: bool) -> Result<BlobStream, UpstreamError> {
        self.count("blob");
        let method = if head { reqwest::Method::HEAD } else { reqwest::Method::GET };
        let resp = self.send(repo, method, &format!("{repo}/blobs/{digest}"), None, None).await?;
        let resp = check_status(resp).await?;
        let content_length = header(&resp, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        let timeout = self.cfg.request_timeout;
        let body = resp.bytes_stream().map(move |r| r.map_err(|e| UpstreamError::from_reqwest(e, timeout)));
        Ok(BlobStream { content_length, body: Box::pin(body) })
    }

    /// `GET /v2/<repo>/tags/list`, passed through (bounded).
    pub async fn tags_list(&self, repo: &str, query: Option<&str>) -> Result<(String, Bytes), UpstreamError> {
        self.count("tags");
        let path = match query {
            Some(q) => format!("{repo}/tags/list?{q}"),
            None => format!("{repo}/tags/list"),
        };
        let resp = self.send(repo, reqwest::Method::GET, &path, None, Some(self.cfg.request_timeout)).await?;
        let resp = check_status(resp).await?;
        let ct = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_else(|| "application/json".into());
        Ok((ct, read_bounded(resp, MAX_MANIFEST_BYTES, "a tag list", self.cfg.request_timeout).await?))
    }

    /// `GET /v2/<repo>/referrers/<digest>`. `Ok(None)` when the registry has no
    /// referrers API (404), so callers fall back to the `sha256-<hex>` tag.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Bytes>, UpstreamError> {
        self.count("referrers");
        let path = match artifact_type {
            // `+` (as in `…bundle.v0.3+json`) would reach the registry as a space.
            Some(t) => format!("{repo}/referrers/{digest}?artifactType={}", query_escape(t)),
            None => format!("{repo}/referrers/{digest}"),
        };
        let resp = self
            .send(repo, reqwest::Method::GET, &path, Some(media::OCI_INDEX), Some(self.cfg.request_timeout))
            .await?;
        match check_status(resp).await {
            Ok(resp) => {
                Ok(Some(read_bounded(resp, MAX_MANIFEST_BYTES, "a referrers index", self.cfg.request_timeout).await?))
            }
            Err(UpstreamError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters and `/`.
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn ca_ders(cfg: &config::Upstream) -> Vec<Vec<u8>> {
    let Some(ca) = &cfg.ca else { return Vec::new() };
    rustls_pemfile::certs(&mut ca.bytes.as_slice()).filter_map(Result::ok).map(|c| c.to_vec()).collect()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Maps upstream statuses to our error kinds; passes 2xx through.
async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    match status {
        StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
        StatusCode::TOO_MANY_REQUESTS => Err(UpstreamError::TooManyRequests),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(UpstreamError::Unauthorized(format!("{status} from {}", redact(resp.url().as_str()))))
        }
        _ => {
            // Keep a short, printable excerpt of the error body for the log.
            let body = tokio::time::timeout(Duration::from_secs(2), resp.bytes()).await;
            let excerpt = match body {
                Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned(),
                _ => String::new(),
            };
            Err(UpstreamError::Status { status: status.as_u16(), body: excerpt })
        }
    }
}

/// Reads a whole body but never more than `limit` bytes, whatever
/// `Content-Length` claims.
async fn read_bounded(
    resp: reqwest::Response,
    limit: usize,
    what: &'static str,
    timeout: Duration,
) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge { what, limit });
    }
    let mut buf = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::from_reqwest(e, timeout))?;
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::TooLarge { what, limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The `mediaType` field of a manifest, for registries that send a generic
/// Content-Type.
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

/// URLs in logs never carry credentials.
fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, rest)) if scheme_user.contains("://") => {
            let scheme = scheme_user.split("://").next().unwrap_or("");
            format!("{scheme}://…@{rest}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_artifact_types_are_percent_encoded_so_plus_survives() {
        assert_eq!(
            query_escape("application/vnd.dev.sigstore.bundle.v0.3+json"),
            "application/vnd.dev.sigstore.bundle.v0.3%2Bjson"
        );
        assert_eq!(query_escape("application/vnd.cncf.notary.signature"), "application/vnd.cncf.notary.signature");
        assert_eq!(query_escape("a b;c=d&e"), "a%20b%3Bc%3Dd%26e");
    }
}
