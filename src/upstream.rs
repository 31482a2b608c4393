//! The one seam to upstream registries: every byte sigmirror reads from a
//! registry comes through `UpstreamClient`.
//!
//! Requests go out with `reqwest`, so bodies stream and every read is bounded
//! in size and time: manifests, tag lists, referrers, tokens and error bodies
//! each have their own limit below. Blob bodies are unbounded in size,
//! because they stream to the client and are hashed on the way, but not in
//! time: each must keep up `[limits] upstream_blob_min_bytes_per_sec`
//! (`limits::BlobRate`).
//!
//! The registry token dance (a `401` with `WWW-Authenticate: Bearer realm=…`,
//! then a token request to the realm) is done here too, bounded like
//! everything else, and its token is reused for a short while.
//!
//! Redirects are followed for blob reads only (registries send those to
//! storage), for a few hops, and never to a loopback, link-local or private
//! address unless the configured upstream itself lives in that kind of
//! address space. IP literals are checked in the redirect policy, names in
//! the resolver, so what is checked is what is connected to. A manifest, tag
//! list, referrers or token request that is redirected is an error.
//!
//! Errors say what failed in sigmirror's own words (`Display`, which clients
//! see); URLs, addresses and upstream's error bodies are kept apart in
//! `UpstreamError::detail`, for the log only.
//!
//! Each HTTP request is counted by kind and status class
//! (`sigmirror_upstream_requests_total`) and timed to its response headers
//! (`sigmirror_upstream_request_duration_seconds`), so tests and operators
//! can see how often upstream was asked and how it answered. Faults a real
//! registry cannot produce are tested by pointing an upstream at a fake HTTP
//! server, which keeps this code path the one that runs in production.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use http::StatusCode;

use crate::coalesce::SingleFlight;
use crate::config::{self, host_only, redact_userinfo};
use crate::limits::{FetchSlot, FetchSlots};
use crate::oci::{media, Digest, ManifestRef};

/// Manifests larger than this are refused: no real manifest comes close, and
/// we hold manifests in memory to hash and verify them.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// One page of `tags/list`. Clients page with `n=` and `last=`, and a 1 MiB
/// page is tens of thousands of tags; the bound keeps a hostile upstream from
/// making us buffer more for a request that is passed through unverified.
pub const MAX_TAG_LIST_BYTES: usize = 1 << 20;

/// A referrers index. Each descriptor is a few hundred bytes, so 1 MiB is
/// thousands of referrers, far more than the handful of signatures a policy
/// reads; the index is held in memory to be parsed.
pub const MAX_REFERRERS_BYTES: usize = 1 << 20;

/// A token response is a small JSON object holding a JWT of a few KiB;
/// 64 KiB leaves room for large claims and nothing more.
pub const MAX_TOKEN_BYTES: usize = 64 << 10;

/// How much of a non-2xx body we read, and for how long: enough for a
/// registry's JSON error (code and message) in the log line, and never a
/// reason to hold the client's answer back or to buffer a hostile body.
const ERROR_EXCERPT_BYTES: usize = 1 << 10;
const ERROR_EXCERPT_WAIT: Duration = Duration::from_secs(1);

/// Blob redirects followed in a row. Registries use one (to storage), CDNs
/// sometimes a second; more is a loop or an attack.
pub const MAX_BLOB_REDIRECTS: usize = 5;

/// Why an upstream request failed. These are infrastructure failures: they
/// become 5xx responses and are never cached as a denial.
///
/// `Display` is what a client is told, in sigmirror's words: it never holds
/// an upstream URL, an address or upstream's body. The `String` fields hold
/// those details; they reach the log through [`UpstreamError::detail`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    #[error("upstream refused our credentials")]
    Unauthorized(String),
    /// `retry_after` is upstream's `Retry-After` in seconds, when it sent a
    /// number we pass on (see `retry_after_secs`).
    #[error("upstream is rate limiting (429)")]
    TooManyRequests { retry_after: Option<u64> },
    /// Our own bound, not upstream's: every fetch slot stayed taken for
    /// `upstream_fetch_wait_secs`.
    #[error(
        "sigmirror is at its limit of {max} concurrent upstream fetches (limits.max_upstream_fetches); retry shortly"
    )]
    Saturated { max: usize },
    /// `url` and `body`, a short excerpt of upstream's error body, are for the log.
    #[error("upstream answered {status}")]
    Status { status: u16, url: String, body: String },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach upstream")]
    Unreachable(String),
    /// `[limits] upstream_blob_min_bytes_per_sec`, over a window of `secs`.
    #[error(
        "upstream sent {got} bytes of a blob in {secs} s, under limits.upstream_blob_min_bytes_per_sec = {min}; \
         the download was cut off"
    )]
    TooSlow { got: u64, secs: u64, min: u64 },
    #[error("upstream sent more than {limit} bytes for {what}")]
    TooLarge { what: &'static str, limit: usize },
    #[error("upstream sent content with digest {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("upstream response is malformed")]
    Protocol(String),
    #[error("upstream redirected a {what} request; sigmirror does not follow redirects for {plural}")]
    Redirected { what: &'static str, plural: &'static str },
    #[error("upstream redirected a blob more than {} times", MAX_BLOB_REDIRECTS)]
    TooManyRedirects,
    /// A redirect or token realm pointed at an address class we do not
    /// connect to, or downgraded to plain HTTP.
    #[error("upstream pointed sigmirror at an address it does not connect to")]
    RefusedAddress(String),
}

impl UpstreamError {
    /// Whether upstream is down rather than answering: it cannot be reached,
    /// did not answer in time, or answered with a server error. Only then may
    /// a cached, verified answer stand in for upstream's (`[cache]
    /// stale_if_error_secs`); a 404 or a refusal is an answer, and is passed on.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Timeout(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// What only the log may see: the URL, address or upstream body behind
    /// this error. `None` when `Display` says it all.
    pub fn detail(&self) -> Option<String> {
        match self {
            UpstreamError::Unauthorized(d)
            | UpstreamError::Unreachable(d)
            | UpstreamError::Protocol(d)
            | UpstreamError::RefusedAddress(d) => Some(d.clone()),
            UpstreamError::Status { url, body, .. } => Some(format!("from {url}; body {body:?}")),
            _ => None,
        }
    }

    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> UpstreamError {
        // Our own refusals travel inside reqwest's error; they come first, so
        // a refused address is never reported as an unreachable one.
        if let Some(refusal) = find_refusal(&e) {
            return match refusal {
                Refusal::Address(why) => UpstreamError::RefusedAddress(match e.url() {
                    Some(url) => format!("{why} (while fetching {})", redact_userinfo(url.as_str())),
                    None => why.clone(),
                }),
                Refusal::TooManyRedirects => UpstreamError::TooManyRedirects,
            };
        }
        if e.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else if e.is_connect() {
            UpstreamError::Unreachable(error_chain(&e))
        } else {
            UpstreamError::Protocol(error_chain(&e))
        }
    }

    fn redirected(kind: Kind) -> UpstreamError {
        let (what, plural) = kind.noun();
        UpstreamError::Redirected { what, plural }
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

/// A refusal made inside reqwest (redirect policy, resolver), found again in
/// its error chain by `UpstreamError::from_reqwest`.
#[derive(Debug, Clone, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Address(String),
    #[error("more than {} redirects", MAX_BLOB_REDIRECTS)]
    TooManyRedirects,
}

fn find_refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// What a request is for: how it is counted, and whether it may be redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    ManifestHead,
    Blob,
    Tags,
    Referrers,
    Token,
}

impl Kind {
    /// The `kind` label of `sigmirror_upstream_requests_total`.
    fn metric(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::ManifestHead => "manifest_head",
            Kind::Blob => "blob",
            Kind::Tags => "tags",
            Kind::Referrers => "referrers",
            Kind::Token => "auth",
        }
    }

    /// Singular and plural, for messages.
    fn noun(self) -> (&'static str, &'static str) {
        match self {
            Kind::Manifest | Kind::ManifestHead => ("manifest", "manifests"),
            Kind::Blob => ("blob", "blobs"),
            Kind::Tags => ("tag list", "tag lists"),
            Kind::Referrers => ("referrers", "referrers"),
            Kind::Token => ("token", "tokens"),
        }
    }
}

/// A manifest as fetched: raw bytes (never re-serialized), their digest, and
/// the media type upstream declared.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// What a `HEAD` on a manifest says: enough to resolve a tag to a digest
/// without fetching the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadInfo {
    pub digest: Digest,
    /// `Content-Type`, unless it is a generic type that names no manifest.
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

impl Manifest {
    /// The child manifests of an image index (OCI index or Docker list), for
    /// the multi-arch rule: a platform manifest listed by a verified index is
    /// allowed without its own signature. Empty for anything else.
    pub fn children(&self) -> Vec<Digest> {
        if !crate::oci::media::is_index(&self.media_type) {
            return Vec::new();
        }
        serde_json::from_slice::<crate::oci::ImageIndex>(&self.bytes)
            .map(|i| i.manifests.into_iter().filter_map(|d| d.digest.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The blobs an image manifest references (config and layers); none for
    /// an index or anything that does not parse, whose blobs are reached only
    /// through child manifests.
    pub fn blobs(&self) -> Vec<Digest> {
        if crate::oci::media::is_index(&self.media_type) {
            return Vec::new();
        }
        let Ok(m) = serde_json::from_slice::<crate::oci::ImageManifest>(&self.bytes) else { return Vec::new() };
        m.config.iter().chain(m.layers.iter()).filter_map(|d| d.digest.parse().ok()).collect()
    }
}

/// A blob response whose body is still streaming.
pub struct BlobStream {
    pub content_length: Option<u64>,
    /// The blob offset of the body's first byte (non-zero only for a `206`).
    pub offset: u64,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
}

pub struct UpstreamClient {
    cfg: config::Upstream,
    /// For everything but blobs: follows no redirect.
    http: reqwest::Client,
    /// For blobs: follows up to `MAX_BLOB_REDIRECTS`, to allowed addresses.
    blob_http: reqwest::Client,
    addresses: Arc<AddressRules>,
    /// Bearer tokens per repository, reused until shortly before a typical
    /// registry token expires (Docker Hub: 300 s; the spec's floor: 60 s).
    tokens: moka::future::Cache<String, String>,
    /// Requests in flight, so concurrent identical ones go upstream once.
    flights: Flights,
    /// `max_upstream_fetches`, shared with the config's other upstreams.
    slots: Arc<FetchSlots>,
}

/// What makes two upstream requests identical, within one upstream (each
/// `UpstreamClient` has its own): the repository, what is asked for (a
/// reference, or a referrers query), and the `Accept` sent, since a registry
/// answers a tag with another object for a narrower `Accept`. The method is
/// the flight table the key is in.
type FlightKey = (String, String, String);

/// One single-flight table per kind of request, as each answers with its
/// own type. Entries live only while a request is in flight.
#[derive(Default)]
struct Flights {
    manifests: SingleFlight<FlightKey, Result<Manifest, UpstreamError>>,
    heads: SingleFlight<FlightKey, Result<Option<HeadInfo>, UpstreamError>>,
    referrers: SingleFlight<FlightKey, Result<Option<Bytes>, UpstreamError>>,
}

impl UpstreamClient {
    pub fn new(cfg: &config::Upstream, slots: Arc<FetchSlots>) -> Result<UpstreamClient, String> {
        let addresses = Arc::new(AddressRules::new(&cfg.host));
        let builder = || -> Result<reqwest::ClientBuilder, String> {
            let mut b = reqwest::Client::builder()
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.request_timeout)
                .user_agent(concat!("sigmirror/", env!("CARGO_PKG_VERSION")))
                .dns_resolver(Arc::new(FilteringResolver { rules: addresses.clone() }));
            if let Some(ca) = &cfg.ca {
                // The token endpoint and blob storage may sit behind the same private CA.
                let certs = reqwest::Certificate::from_pem_bundle(&ca.bytes)
                    .map_err(|e| format!("ca_file {}: {e}", ca.name))?;
                b = b.tls_certs_merge(certs);
            }
            Ok(b)
        };
        let http = builder()?.redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
        let rules = addresses.clone();
        let upstream_is_https = !cfg.plain_http;
        let blob_http = builder()?
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // `previous` starts with the URL first asked for.
                if attempt.previous().len() > MAX_BLOB_REDIRECTS {
                    return attempt.error(Refusal::TooManyRedirects);
                }
                match check_target(attempt.url(), &rules, upstream_is_https) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            }))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(UpstreamClient {
            cfg: cfg.clone(),
            http,
            blob_http,
            addresses,
            tokens: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(50)).build(),
            flights: Flights::default(),
            slots,
        })
    }

    /// Sends one HTTP request: every exchange with upstream goes through
    /// here, so each is counted and timed once, by kind and answer.
    async fn exchange(
        &self,
        kind: Kind,
        rb: reqwest::RequestBuilder,
        limit: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = std::time::Instant::now();
        let r = rb.send().await;
        let status = r.as_ref().ok().map(|r| r.status().as_u16());
        crate::metrics::METRICS.upstream(&self.cfg.registry, kind.metric(), status, started.elapsed());
        r.map_err(|e| UpstreamError::from_reqwest(e, limit))
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.cfg.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{path}", self.cfg.host)
    }

    /// Sends a request, answering one bearer challenge if the registry asks.
    /// Only `Kind::Blob` requests follow redirects. The fetch slot comes
    /// back with the response: the caller holds it until the body is read.
    async fn send(
        &self,
        kind: Kind,
        repo: &str,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, FetchSlot), UpstreamError> {
        self.send_with(kind, repo, method, path, accept, timeout, None).await
    }

    /// [`Self::send`] with an optional `Range` header value.
    #[allow(clippy::too_many_arguments)]
    async fn send_with(
        &self,
        kind: Kind,
        repo: &str,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
        range: Option<&str>,
    ) -> Result<(reqwest::Response, FetchSlot), UpstreamError> {
        // One slot for the whole exchange, token request included, so a
        // request never waits for a second slot while holding a first.
        let slot = self.slots.take().await?;
        let url = self.url(path);
        let client = if kind == Kind::Blob { &self.blob_http } else { &self.http };
        let build = |token: Option<&str>| {
            let mut rb = client.request(method.clone(), &url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(r) = range {
                rb = rb.header(RANGE, r);
            }
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            // Both go in `Authorization`, which reqwest drops when a redirect
            // leaves this host, port or scheme (`redirect::remove_sensitive_headers`).
            match (token, &self.cfg.username, &self.cfg.password) {
                (Some(t), _, _) => rb.header(AUTHORIZATION, format!("Bearer {t}")),
                (None, Some(u), Some(p)) => rb.basic_auth(u, Some(p)),
                _ => rb,
            }
        };
        let limit = timeout.unwrap_or(self.cfg.request_timeout);
        let cached = self.tokens.get(repo).await;
        let resp = self.exchange(kind, build(cached.as_deref()), limit).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok((resp, slot));
        }
        let challenge = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_bearer_challenge);
        let Some(challenge) = challenge else {
            return Err(UpstreamError::Unauthorized(format!("{} for {}", resp.status(), redact_userinfo(&url))));
        };
        drop(resp);
        let token = self.fetch_token(repo, &challenge).await?;
        let resp = self.exchange(kind, build(Some(&token)), limit).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Unauthorized(format!("token refused for {}", redact_userinfo(&url))));
        }
        Ok((resp, slot))
    }

    /// Asks the challenge's realm for a pull token for `repo`, with our
    /// credentials when we have some. The scope is ours, not the
    /// challenge's: we only ever need to pull this one repository.
    async fn fetch_token(&self, repo: &str, challenge: &BearerChallenge) -> Result<String, UpstreamError> {
        let url = token_url(challenge, repo, &self.addresses, !self.cfg.plain_http)?;
        let timeout = self.cfg.request_timeout;
        let mut rb = self.http.get(url).timeout(timeout);
        if let (Some(u), Some(p)) = (&self.cfg.username, &self.cfg.password) {
            rb = rb.basic_auth(u, Some(p));
        }
        let resp = self.exchange(Kind::Token, rb, timeout).await?;
        let resp = check_status(resp, Kind::Token).await?;
        let body = read_bounded(resp, MAX_TOKEN_BYTES, "a token response", timeout).await?;
        let token = parse_token(&body)?;
        self.tokens.insert(repo.to_string(), token.clone()).await;
        Ok(token)
    }

    /// `GET /v2/<repo>/manifests/<ref>`: bounded, and checked against the
    /// digest asked for (by digest) or the digest upstream declares (by tag).
    /// Concurrent identical requests go upstream once and share the answer.
    pub async fn manifest(&self, repo: &str, reference: &ManifestRef, accept: &str) -> Result<Manifest, UpstreamError> {
        let key = (repo.to_string(), reference.to_string(), accept.to_string());
        self.flights.manifests.run(key, self.fetch_manifest(repo, reference, accept)).await
    }

    async fn fetch_manifest(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<Manifest, UpstreamError> {
        let (resp, _slot) = self.manifest_request(Kind::Manifest, repo, reference, accept).await?;
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
        let media_type = specific_media_type(content_type)
            .or_else(|| sniff_media_type(&bytes))
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        Ok(Manifest { bytes, digest, media_type })
    }

    /// `GET` (`Kind::Manifest`) or `HEAD` (`Kind::ManifestHead`) of
    /// `/v2/<repo>/manifests/<ref>`, answered with a success status.
    async fn manifest_request(
        &self,
        kind: Kind,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<(reqwest::Response, FetchSlot), UpstreamError> {
        let method = if kind == Kind::ManifestHead { reqwest::Method::HEAD } else { reqwest::Method::GET };
        let path = format!("{repo}/manifests/{reference}");
        let (resp, slot) = self.send(kind, repo, method, &path, Some(accept), Some(self.cfg.request_timeout)).await?;
        Ok((check_status(resp, kind).await?, slot))
    }

    /// `HEAD /v2/<repo>/manifests/<ref>`: the digest upstream declares, to
    /// resolve a tag cheaply. `Ok(None)` when upstream sends no usable
    /// `Docker-Content-Digest` (missing, or not sha256); the caller then
    /// fetches the manifest, which it must do anyway to verify it.
    /// Concurrent identical requests go upstream once and share the answer.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<Option<HeadInfo>, UpstreamError> {
        let key = (repo.to_string(), reference.to_string(), accept.to_string());
        self.flights.heads.run(key, self.fetch_head(repo, reference, accept)).await
    }

    async fn fetch_head(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<Option<HeadInfo>, UpstreamError> {
        let (resp, _slot) = self.manifest_request(Kind::ManifestHead, repo, reference, accept).await?;
        let Some(digest) = header(&resp, "docker-content-digest").and_then(|d| d.trim().parse::<Digest>().ok()) else {
            return Ok(None);
        };
        // Asked by digest, upstream must not claim another.
        if let ManifestRef::Digest(asked) = reference {
            if *asked != digest {
                return Err(UpstreamError::DigestMismatch { expected: asked.to_string(), actual: digest.to_string() });
            }
        }
        Ok(Some(HeadInfo {
            digest,
            media_type: specific_media_type(header(&resp, CONTENT_TYPE.as_str())),
            size: header(&resp, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()),
        }))
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
        let (resp, _slot) = self
            .send(
                Kind::Blob,
                repo,
                reqwest::Method::GET,
                &format!("{repo}/blobs/{digest}"),
                None,
                Some(self.cfg.request_timeout),
            )
            .await?;
        let resp = check_status(resp, Kind::Blob).await?;
        let bytes = read_bounded(resp, limit, "a signature blob", self.cfg.request_timeout).await?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(UpstreamError::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
        }
        Ok(bytes)
    }

    /// `GET|HEAD /v2/<repo>/blobs/<digest>` as a stream. The caller hashes it.
    /// No whole-request timeout: layers can take minutes. The read timeout
    /// catches a stalled upstream, the blob rate (`limits::BlobRate`) one
    /// that drips.
    pub async fn blob(&self, repo: &str, digest: &Digest, head: bool) -> Result<BlobStream, UpstreamError> {
        let method = if head { reqwest::Method::HEAD } else { reqwest::Method::GET };
        self.blob_request(repo, digest, method, None).await
    }

    /// `GET` of a blob from byte `offset` on, for a reader whose shared
    /// download could not be cached. `BlobStream::offset` says where the body
    /// really starts: a registry that ignores `Range` answers `200` from 0.
    pub async fn blob_from(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobStream, UpstreamError> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        self.blob_request(repo, digest, reqwest::Method::GET, range).await
    }

    async fn blob_request(
        &self,
        repo: &str,
        digest: &Digest,
        method: reqwest::Method,
        range: Option<String>,
    ) -> Result<BlobStream, UpstreamError> {
        let path = format!("{repo}/blobs/{digest}");
        let (resp, slot) = self.send_with(Kind::Blob, repo, method, &path, None, None, range.as_deref()).await?;
        let resp = check_status(resp, Kind::Blob).await?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let offset = if partial {
            let start = header(&resp, CONTENT_RANGE.as_str()).and_then(|v| content_range_start(&v));
            start.ok_or_else(|| UpstreamError::Protocol("206 without a usable Content-Range".into()))?
        } else {
            0
        };
        let content_length = header(&resp, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        let timeout = self.cfg.request_timeout;
        // The slot lives in the stream: it is released when the body ends or
        // its reader drops it.
        let body = resp.bytes_stream().map(move |r| {
            let _held = &slot;
            r.map_err(|e| UpstreamError::from_reqwest(e, timeout))
        });
        let body = self.slots.blob_rate.enforce(body);
        Ok(BlobStream { content_length, offset, body: Box::pin(body) })
    }

    /// `GET /v2/<repo>/tags/list`, passed through (bounded).
    pub async fn tags_list(&self, repo: &str, query: Option<&str>) -> Result<(String, Bytes), UpstreamError> {
        let path = match query {
            Some(q) => format!("{repo}/tags/list?{q}"),
            None => format!("{repo}/tags/list"),
        };
        let (resp, _slot) =
            self.send(Kind::Tags, repo, reqwest::Method::GET, &path, None, Some(self.cfg.request_timeout)).await?;
        let resp = check_status(resp, Kind::Tags).await?;
        let ct = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_else(|| "application/json".into());
        Ok((ct, read_bounded(resp, MAX_TAG_LIST_BYTES, "a tag list", self.cfg.request_timeout).await?))
    }

    /// `GET /v2/<repo>/referrers/<digest>`. `Ok(None)` when the registry has no
    /// referrers API (404), so callers fall back to the `sha256-<hex>` tag.
    /// Concurrent identical requests go upstream once and share the answer.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let query = format!("{digest} {artifact_type:?}");
        let key = (repo.to_string(), query, String::new());
        self.flights.referrers.run(key, self.fetch_referrers(repo, digest, artifact_type)).await
    }

    async fn fetch_referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let path = match artifact_type {
            // `+` (as in `…bundle.v0.3+json`) would reach the registry as a space.
            Some(t) => format!("{repo}/referrers/{digest}?artifactType={}", query_escape(t)),
            None => format!("{repo}/referrers/{digest}"),
        };
        let (resp, _slot) = self
            .send(
                Kind::Referrers,
                repo,
                reqwest::Method::GET,
                &path,
                Some(media::OCI_INDEX),
                Some(self.cfg.request_timeout),
            )
            .await?;
        match check_status(resp, Kind::Referrers).await {
            Ok(resp) => {
                Ok(Some(read_bounded(resp, MAX_REFERRERS_BYTES, "a referrers index", self.cfg.request_timeout).await?))
            }
            Err(UpstreamError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Where redirects and token realms may lead
// ---------------------------------------------------------------------------

/// Kinds of address, for deciding where an upstream may send us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrClass {
    Public,
    Loopback,
    /// RFC 1918, CGNAT 100.64/10, IPv6 ULA fc00::/7.
    Private,
    /// 169.254/16 (cloud metadata at 169.254.169.254), fe80::/10.
    LinkLocal,
    /// Unspecified, multicast, broadcast, reserved: nothing to fetch from.
    Special,
}

impl AddrClass {
    fn of(ip: IpAddr) -> AddrClass {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some(v4) => Self::of_v4(v4),
                None => Self::of_v6(v6),
            },
        }
    }

    fn of_v4(ip: Ipv4Addr) -> AddrClass {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() {
            AddrClass::Loopback
        } else if ip.is_private() || (a == 100 && (b & 0xc0) == 64) {
            AddrClass::Private
        } else if ip.is_link_local() {
            AddrClass::LinkLocal
        } else if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
            AddrClass::Special
        } else {
            AddrClass::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> AddrClass {
        let first = ip.segments()[0];
        if ip.is_loopback() {
            AddrClass::Loopback
        } else if first & 0xfe00 == 0xfc00 {
            AddrClass::Private
        } else if first & 0xffc0 == 0xfe80 {
            AddrClass::LinkLocal
        } else if ip.is_unspecified() || ip.is_multicast() {
            AddrClass::Special
        } else {
            AddrClass::Public
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn name(self) -> &'static str {
        match self {
            AddrClass::Public => "a public",
            AddrClass::Loopback => "a loopback",
            AddrClass::Private => "a private",
            AddrClass::LinkLocal => "a link-local",
            AddrClass::Special => "an unspecified, multicast or reserved",
        }
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64
/// (`64:ff9b::a.b.c.d`) address: connecting to it reaches that IPv4 host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// Which addresses an upstream may redirect us (or point a token realm) to:
/// public ones, and those of the kinds the configured upstream itself lives
/// at. An upstream on 127.0.0.1 may send us to loopback, one on 10.x to
/// private addresses; one on the internet to neither.
#[derive(Debug)]
struct AddressRules {
    /// The configured upstream host (no port, lower case). Its own addresses
    /// are never filtered: the operator chose it.
    upstream_host: String,
    /// `AddrClass::bit`s of the upstream's addresses: from the config for an
    /// IP literal, else as the resolver sees them. A redirect can only come
    /// after we connected to the upstream, so they are known by then.
    upstream_classes: AtomicU8,
}

impl AddressRules {
    fn new(host_port: &str) -> AddressRules {
        let host = host_only(host_port).to_ascii_lowercase();
        let rules = AddressRules { upstream_host: host.clone(), upstream_classes: AtomicU8::new(0) };
        if let Ok(ip) = host.parse::<IpAddr>() {
            rules.note_upstream(ip);
        }
        rules
    }

    fn note_upstream(&self, ip: IpAddr) {
        self.upstream_classes.fetch_or(AddrClass::of(ip).bit(), Ordering::Relaxed);
    }

    fn is_upstream(&self, host: &str) -> bool {
        host.trim_end_matches('.').eq_ignore_ascii_case(&self.upstream_host)
    }

    fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let class = AddrClass::of(ip);
        if class == AddrClass::Public || self.upstream_classes.load(Ordering::Relaxed) & class.bit() != 0 {
            Ok(())
        } else {
            Err(Refusal::Address(format!(
                "{ip} is {} address and the upstream is not; sigmirror does not follow an upstream there",
                class.name()
            )))
        }
    }
}

/// The IP of a URL whose host is an IP literal. Such hosts never reach the
/// resolver, so redirect targets and realms are checked with this.
fn url_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether a blob redirect may go to `url`: http(s) only, no downgrade from
/// an https upstream to plain http, and an IP literal must be allowed.
/// Names are checked when they are resolved.
fn check_target(url: &reqwest::Url, rules: &AddressRules, upstream_is_https: bool) -> Result<(), Refusal> {
    match url.scheme() {
        "https" => {}
        "http" if !upstream_is_https => {}
        "http" => {
            return Err(Refusal::Address(format!(
                "{} is plain http and the upstream is https",
                redact_userinfo(url.as_str())
            )))
        }
        other => return Err(Refusal::Address(format!("scheme {other:?} is not http(s)"))),
    }
    match url_ip(url) {
        Some(ip) => rules.check(ip),
        None => Ok(()),
    }
}

/// Resolves like the system does, then drops the addresses an upstream may
/// not send us to (see `AddressRules`). The addresses returned are the ones
/// connected to, so a name cannot pass the check and then resolve elsewhere.
struct FilteringResolver {
    rules: Arc<AddressRules>,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(filter_addrs(&rules, &host, addrs)?.into_iter());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

fn filter_addrs(rules: &AddressRules, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
    if rules.is_upstream(host) {
        for a in &addrs {
            rules.note_upstream(a.ip());
        }
        return Ok(addrs);
    }
    let total = addrs.len();
    let mut refused = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match rules.check(a.ip()) {
            Ok(()) => true,
            Err(e) => {
                refused.get_or_insert(e);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), refused) {
        (true, Some(Refusal::Address(why))) => {
            Err(Refusal::Address(format!("{host} resolves only to addresses sigmirror refuses ({total}); {why}")))
        }
        _ => Ok(allowed),
    }
}

// ---------------------------------------------------------------------------
// The bearer token dance
// ---------------------------------------------------------------------------

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

/// The Bearer challenge in one `WWW-Authenticate` value (RFC 7235
/// auth-params: tokens or quoted strings with `\` escapes, so commas inside
/// quotes are data). `None` when no Bearer challenge with a realm is there.
fn parse_bearer_challenge(value: &str) -> Option<BearerChallenge> {
    for (scheme, params) in parse_challenges(value) {
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
            return Some(BearerChallenge { realm, service: get("service"), scope: get("scope") });
        }
    }
    None
}

type Challenge = (String, Vec<(String, String)>);

/// Every challenge in a `WWW-Authenticate` value: a scheme, then `name=value`
/// params; a token that is not followed by `=` starts the next challenge.
fn parse_challenges(value: &str) -> Vec<Challenge> {
    let s = value.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_sep = |b: u8| b == b',' || b == b' ' || b == b'\t';
    while i < s.len() {
        while i < s.len() && is_sep(s[i]) {
            i += 1;
        }
        let start = i;
        while i < s.len() && !is_sep(s[i]) && s[i] != b'=' {
            i += 1;
        }
        if start == i {
            // A stray `=` or quote; skip it rather than loop.
            i += 1;
            continue;
        }
        let token = value[start..i].to_string();
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' {
            i = j + 1;
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            let mut v = String::new();
            if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut chars = value[i..].char_indices();
                let mut end = value.len() - i;
                while let Some((k, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                v.push(e);
                            }
                        }
                        '"' => {
                            end = k + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                i += end;
            } else {
                let vs = i;
                while i < s.len() && !is_sep(s[i]) {
                    i += 1;
                }
                v.push_str(&value[vs..i]);
            }
            match out.last_mut() {
                Some((_, params)) => params.push((token, v)),
                None => out.push((String::new(), vec![(token, v)])),
            }
        } else {
            out.push((token, Vec::new()));
        }
    }
    out
}

/// The token request URL: the realm with `service` and our pull scope.
/// The realm comes from upstream, so it is held to the redirect rules: http(s)
/// only, https unless the upstream itself is plain http, and no address an
/// upstream may not send us to.
fn token_url(
    challenge: &BearerChallenge,
    repo: &str,
    rules: &AddressRules,
    upstream_is_https: bool,
) -> Result<reqwest::Url, UpstreamError> {
    let mut url = reqwest::Url::parse(&challenge.realm)
        .map_err(|e| UpstreamError::Protocol(format!("token realm {:?} is not a URL: {e}", challenge.realm)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UpstreamError::Protocol(format!("token realm {:?} is not http(s)", challenge.realm)));
    }
    check_target(&url, rules, upstream_is_https)
        .map_err(|r| UpstreamError::RefusedAddress(format!("token realm: {r}")))?;
    // Credentials go in our header, never in a URL upstream chose.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    {
        let mut q = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            q.append_pair("service", service);
        }
        q.append_pair("scope", &format!("repository:{repo}:pull"));
    }
    Ok(url)
}

/// The token in a token response: `token`, or OAuth2's `access_token`.
fn parse_token(body: &[u8]) -> Result<String, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Unauthorized(format!("token response is not JSON: {e}")))?;
    let token = r.token.filter(|t| !t.is_empty()).or(r.access_token.filter(|t| !t.is_empty()));
    match token {
        // It goes into a header: visible ASCII only, so it cannot add one.
        Some(t) if t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t),
        Some(_) => Err(UpstreamError::Unauthorized("token holds characters a header cannot".into())),
        None => Err(UpstreamError::Unauthorized("token response holds no token".into())),
    }
}

// ---------------------------------------------------------------------------
// Reading responses
// ---------------------------------------------------------------------------

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

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Upstream's `Retry-After` as whole seconds, capped at an hour: a client
/// told to wait a day would stop pulling, and a value we cannot read (an
/// HTTP date, garbage) is dropped so the client gets our own short default.
fn retry_after_secs(v: &str) -> Option<u64> {
    const MAX_RETRY_AFTER: u64 = 3600;
    v.trim().parse::<u64>().ok().map(|s| s.min(MAX_RETRY_AFTER))
}

/// A `Content-Type` that names a manifest type, not a generic one.
fn specific_media_type(content_type: Option<String>) -> Option<String> {
    content_type.filter(|c| !c.is_empty() && c != "application/octet-stream" && c != "text/plain")
}

/// Maps upstream statuses to our error kinds; passes 2xx through. A 3xx here
/// was not followed: for anything but a blob that is the rule, and for a blob
/// it had no usable `Location`.
async fn check_status(resp: reqwest::Response, kind: Kind) -> Result<reqwest::Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    match status {
        StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
        StatusCode::TOO_MANY_REQUESTS => Err(UpstreamError::TooManyRequests {
            retry_after: header(&resp, "retry-after").and_then(|v| retry_after_secs(&v)),
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(UpstreamError::Unauthorized(format!("{status} from {}", redact_userinfo(resp.url().as_str()))))
        }
        s if s.is_redirection() && kind != Kind::Blob => Err(UpstreamError::redirected(kind)),
        s if s.is_redirection() => Err(UpstreamError::Protocol(format!(
            "{s} without a usable Location from {}",
            redact_userinfo(resp.url().as_str())
        ))),
        _ => {
            let url = redact_userinfo(resp.url().as_str());
            Err(UpstreamError::Status { status: status.as_u16(), url, body: error_excerpt(resp).await })
        }
    }
}

/// The first byte position of a `Content-Range: bytes <first>-<last>/<len>`.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes ")?.split_once('-')?.0.trim().parse().ok()
}

/// The start of an error body, for the log: at most `ERROR_EXCERPT_BYTES`,
/// read for at most `ERROR_EXCERPT_WAIT`. Dropping the response then closes
/// the connection, so an endless body costs nothing more.
async fn error_excerpt(resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let room = ERROR_EXCERPT_BYTES - buf.len();
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() >= ERROR_EXCERPT_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_EXCERPT_WAIT, read).await;
    String::from_utf8_lossy(&buf).into_owned()
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

    fn challenge(realm: &str, service: Option<&str>, scope: Option<&str>) -> Option<BearerChallenge> {
        Some(BearerChallenge { realm: realm.into(), service: service.map(Into::into), scope: scope.map(Into::into) })
    }

    #[test]
    fn a_docker_hub_bearer_challenge_is_parsed_with_the_comma_inside_the_quoted_scope() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;
        assert_eq!(
            parse_bearer_challenge(h),
            challenge(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull,push")
            )
        );
    }

    #[test]
    fn challenge_parsing_takes_any_case_spaces_tokens_and_escapes() {
        let h = r#"bearer  Realm = "https://a.test/t?x=1" , SERVICE=reg.test, scope="say \"hi\", then \\ go""#;
        assert_eq!(
            parse_bearer_challenge(h),
            challenge("https://a.test/t?x=1", Some("reg.test"), Some(r#"say "hi", then \ go"#))
        );
    }

    #[test]
    fn the_bearer_challenge_is_found_after_another_scheme_in_the_same_header() {
        let h = r#"Basic realm="x, y", Bearer realm="https://a.test/token",service="s""#;
        assert_eq!(parse_bearer_challenge(h), challenge("https://a.test/token", Some("s"), None));
    }

    #[test]
    fn challenges_without_bearer_or_realm_are_not_bearer_challenges() {
        for h in [
            r#"Basic realm="registry""#,
            "Bearer",
            r#"Bearer service="s""#,
            r#"Bearer realm="""#,
            "",
            "=,\"",
            "Bearer realm=\"unterminated",
        ] {
            let parsed = parse_bearer_challenge(h);
            if h.ends_with("unterminated") {
                // Unterminated quotes run to the end of the value.
                assert_eq!(parsed, challenge("unterminated", None, None), "{h:?}");
            } else {
                assert_eq!(parsed, None, "{h:?}");
            }
        }
    }

    fn rules(upstream: &str) -> AddressRules {
        AddressRules::new(upstream)
    }

    #[test]
    fn address_classes_cover_loopback_private_cgnat_link_local_ula_and_mapped_forms() {
        let cases = [
            ("127.0.0.1", AddrClass::Loopback),
            ("127.9.9.9", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("10.255.255.1", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Private),
            ("100.127.255.255", AddrClass::Private),
            ("fd00::1", AddrClass::Private),
            ("fc00::1", AddrClass::Private),
            ("169.254.169.254", AddrClass::LinkLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("febf::1", AddrClass::LinkLocal),
            ("::ffff:169.254.169.254", AddrClass::LinkLocal),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Special),
            ("::", AddrClass::Special),
            ("224.0.0.1", AddrClass::Special),
            ("ff02::1", AddrClass::Special),
            ("255.255.255.255", AddrClass::Special),
            ("8.8.8.8", AddrClass::Public),
            ("100.128.0.1", AddrClass::Public),
            ("172.32.0.1", AddrClass::Public),
            ("2600:1f18::1", AddrClass::Public),
        ];
        for (ip, class) in cases {
            assert_eq!(AddrClass::of(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn an_upstream_may_send_us_to_public_addresses_and_to_its_own_kind_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let loopback = rules("127.0.0.1:5000");
        assert!(loopback.check(ip("127.0.0.2")).is_ok());
        assert!(loopback.check(ip("8.8.8.8")).is_ok());
        assert!(loopback.check(ip("10.0.0.1")).is_err());
        assert!(loopback.check(ip("169.254.169.254")).is_err());

        let private = rules("10.1.2.3");
        assert!(private.check(ip("192.168.0.9")).is_ok());
        assert!(private.check(ip("127.0.0.1")).is_err());
        assert!(private.check(ip("169.254.169.254")).is_err());

        let v6 = rules("[fd12::5]:443");
        assert!(v6.check(ip("10.0.0.1")).is_ok(), "ULA and RFC 1918 are both private");
        assert!(v6.check(ip("::1")).is_err());

        // A name's classes are only known once it resolved; until then only public.
        let named = rules("registry.example:443");
        for refused in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "fe80::1", "::", "224.0.0.1"] {
            let e = named.check(ip(refused)).unwrap_err();
            assert!(e.to_string().contains(refused), "{e}");
        }
        assert!(named.check(ip("93.184.216.34")).is_ok());
    }

    #[test]
    fn the_resolver_drops_refused_addresses_and_fails_when_none_are_left() {
        let sa = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        let r = rules("registry.example");
        let mixed = vec![sa("10.0.0.1"), sa("93.184.216.34"), sa("169.254.169.254")];
        assert_eq!(filter_addrs(&r, "storage.example", mixed).unwrap(), vec![sa("93.184.216.34")]);
        let e = filter_addrs(&r, "evil.example", vec![sa("169.254.169.254"), sa("127.0.0.1")]).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("evil.example resolves only to addresses sigmirror refuses"), "{e}");

        // The configured upstream's own name is never filtered, and teaches
        // the rules its kind: after it resolved to 10.x, private is allowed.
        let up = filter_addrs(&r, "Registry.Example.", vec![sa("10.0.0.7")]).unwrap();
        assert_eq!(up, vec![sa("10.0.0.7")]);
        assert_eq!(filter_addrs(&r, "storage.example", vec![sa("10.9.9.9")]).unwrap(), vec![sa("10.9.9.9")]);
        assert!(filter_addrs(&r, "storage.example", vec![sa("127.0.0.1")]).is_err());
    }

    #[tokio::test]
    async fn a_request_to_a_name_that_resolves_only_to_refused_addresses_fails_as_a_refusal() {
        // `localhost` is loopback; an upstream known only by name is not.
        let rules = Arc::new(rules("registry.example"));
        let client =
            reqwest::Client::builder().no_proxy().dns_resolver(Arc::new(FilteringResolver { rules })).build().unwrap();
        let e = client.get("http://localhost:9/blob").send().await.unwrap_err();
        match UpstreamError::from_reqwest(e, Duration::from_secs(1)) {
            UpstreamError::RefusedAddress(d) => {
                assert!(d.contains("localhost resolves only to addresses sigmirror refuses"), "{d}");
                assert!(d.contains("http://localhost:9/blob"), "{d}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blob_redirect_targets_must_be_http_s_without_downgrade_and_allowed_literals() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let r = rules("registry.example");
        assert!(check_target(&url("https://storage.example/b"), &r, true).is_ok());
        assert!(check_target(&url("http://storage.example/b"), &r, true).is_err(), "downgrade");
        assert!(check_target(&url("http://storage.example/b"), &r, false).is_ok());
        assert!(check_target(&url("ftp://storage.example/b"), &r, false).is_err());
        assert!(check_target(&url("https://169.254.169.254/latest/meta-data/"), &r, true).is_err());
        assert!(check_target(&url("https://[::1]:8443/b"), &r, true).is_err());
        assert!(check_target(&url("https://[::ffff:10.0.0.1]/b"), &r, true).is_err());
        // The URL parser normalizes other spellings of an IPv4 address, so they are checked too.
        assert!(check_target(&url("https://2852039166/latest/meta-data/"), &r, true).is_err());
        assert!(check_target(&url("https://0x7f.1/b"), &r, true).is_err());
        assert!(check_target(&url("https://93.184.216.34/b"), &r, true).is_ok());
    }

    #[test]
    fn token_urls_carry_service_and_our_own_pull_scope_and_refuse_bad_realms() {
        let r = rules("127.0.0.1:5000");
        let ch = |realm: &str| BearerChallenge {
            realm: realm.into(),
            service: Some("reg svc".into()),
            scope: Some("repository:other:push".into()),
        };
        let u = token_url(&ch("http://127.0.0.1:5000/token?a=b"), "team-a/app", &r, false).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5000/token?a=b&service=reg+svc&scope=repository%3Ateam-a%2Fapp%3Apull"
        );
        let u = token_url(&ch("https://user:pw@auth.example/token"), "x", &r, true).unwrap();
        assert_eq!(u.username(), "");
        assert_eq!(u.password(), None);

        let refused = |realm: &str, https: bool| token_url(&ch(realm), "x", &r, https).unwrap_err();
        assert!(matches!(refused("http://auth.example/token", true), UpstreamError::RefusedAddress(_)));
        assert!(matches!(refused("https://169.254.169.254/token", true), UpstreamError::RefusedAddress(_)));
        assert!(matches!(refused("file:///etc/passwd", false), UpstreamError::Protocol(_)));
        assert!(matches!(refused("not a url", false), UpstreamError::Protocol(_)));
    }

    #[test]
    fn token_responses_give_token_or_access_token() {
        assert_eq!(parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap(), "abc");
        assert_eq!(parse_token(br#"{"access_token":"xyz"}"#).unwrap(), "xyz");
        assert_eq!(parse_token(br#"{"token":"","access_token":"xyz"}"#).unwrap(), "xyz");
        assert!(parse_token(br#"{"expires_in":300}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
        assert!(parse_token(b"{\"token\":\"a\\r\\nX-Injected: 1\"}").is_err());
    }

    #[test]
    fn what_a_client_sees_of_an_upstream_error_holds_no_url_address_or_body() {
        let secret = "http://10.1.2.3:5000/v2/x SECRET-BODY";
        let errors = [
            UpstreamError::Unauthorized(secret.into()),
            UpstreamError::Status { status: 500, url: secret.into(), body: secret.into() },
            UpstreamError::Unreachable(secret.into()),
            UpstreamError::Protocol(secret.into()),
            UpstreamError::RefusedAddress(secret.into()),
        ];
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.contains("10.1.2.3") && !shown.contains("SECRET"), "{shown}");
            assert!(e.detail().is_some_and(|d| d.contains("SECRET-BODY")), "{e:?}");
        }
        let status = UpstreamError::Status { status: 500, url: "u".into(), body: "x".into() };
        assert_eq!(status.to_string(), "upstream answered 500");
        assert_eq!(UpstreamError::Timeout(Duration::from_secs(30)).to_string(), "upstream did not answer within 30s");
        assert_eq!(
            UpstreamError::redirected(Kind::Manifest).to_string(),
            "upstream redirected a manifest request; sigmirror does not follow redirects for manifests"
        );
    }

    #[test]
    fn host_only_strips_ports_and_ipv6_brackets() {
        assert_eq!(host_only("registry.example:5000"), "registry.example");
        assert_eq!(host_only("registry.example"), "registry.example");
        assert_eq!(host_only("[::1]:5000"), "::1");
        assert_eq!(host_only("[fd00::1]"), "fd00::1");
        assert_eq!(host_only("127.0.0.1:80"), "127.0.0.1");
    }
}
