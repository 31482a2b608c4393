//! HTTP: the pull side of the distribution API, and the one decision point
//! every manifest passes before a byte of it is sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use sha2::{Digest as _, Sha256};

use crate::cache::{ManifestCache, ManifestKey, VerdictCache, VerdictKey, VerifiedChildren};
use crate::config::{Config, Mode, OnTagMove};
use crate::error::{Body, BoxError, Error, Resource};
use crate::listing;
use crate::metrics::{DecisionLabels, PolicyLabels, METRICS};
use crate::oci::{media, parse_route, Digest, ManifestRef, Route};
use crate::pins::{MoveEvent, Pin, PinStore};
use crate::policy::{self, PolicySet, Subject, Verdict};
use crate::upstream::{Manifest, UpstreamClient, UpstreamError};

/// Everything built from one validated config. Replaced as a whole on reload,
/// so a request sees one consistent config from start to end.
pub struct State {
    pub config: Config,
    pub policies: PolicySet,
    pub upstreams: HashMap<String, Arc<UpstreamClient>>,
    pub verdicts: VerdictCache,
    pub manifests: ManifestCache,
    pub children: VerifiedChildren,
}

impl State {
    pub fn new(config: Config, policies: PolicySet) -> Result<State, String> {
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            if u.plain_http {
                tracing::warn!(registry = %u.registry, host = %u.host, "upstream uses plain HTTP: only use this for a registry on loopback");
            }
            upstreams.insert(u.registry.clone(), Arc::new(UpstreamClient::new(u)?));
        }
        Ok(State {
            verdicts: VerdictCache::new(config.allow_ttl, config.deny_ttl),
            manifests: ManifestCache::new(config.raw.cache.manifest_cache_bytes),
            children: VerifiedChildren::new(config.allow_ttl),
            config,
            policies,
            upstreams,
        })
    }

    /// The upstream for `ns` (or the default one). Unknown registries are never
    /// contacted: sigmirror is not an open proxy.
    fn upstream(&self, ns: Option<&str>) -> Result<(String, Arc<UpstreamClient>), Error> {
        let Some(u) = self.config.upstream_for(ns) else {
            let msg = match ns {
                Some(ns) => format!("sigmirror refused registry {ns:?}: it is not a configured upstream"),
                None => "sigmirror refused the request: no ns= parameter and no upstream is marked default".to_string(),
            };
            return Err(Error::UnknownRegistry(msg));
        };
        Ok((u.registry.clone(), self.upstreams[&u.registry].clone()))
    }

    /// Fetches (or recalls) a manifest, then decides on it. This is the only
    /// path by which a manifest reaches a client.
    pub async fn resolve_and_decide(
        &self,
        registry: &str,
        up: &UpstreamClient,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> Result<(Manifest, Verdict), Error> {
        let manifest = match reference {
            ManifestRef::Digest(d) => {
                // The bytes of a digest do not depend on Accept, and the cache is
                // shared by every client: ask for every type we serve.
                let key = ManifestKey { registry: registry.into(), repo: repo.into(), digest: d.clone() };
                self.manifests
                    .get_or_fetch(key, up.manifest(repo, reference, media::ALL_MANIFESTS))
                    .await
                    .map_err(|e| Error::upstream(Resource::Manifest, e))?
            }
            ManifestRef::Tag(_) => {
                let m =
                    up.manifest(repo, reference, accept).await.map_err(|e| Error::upstream(Resource::Manifest, e))?;
                let key = ManifestKey { registry: registry.into(), repo: repo.into(), digest: m.digest.clone() };
                self.manifests.insert(key, m.clone()).await;
                m
            }
        };
        let verdict = self.decide(registry, up, repo, &manifest).await?;
        Ok((manifest, verdict))
    }

    /// The decision point: which policy governs the image, and its verdict,
    /// from cache or freshly verified.
    pub async fn decide(
        &self,
        registry: &str,
        up: &UpstreamClient,
        repo: &str,
        m: &Manifest,
    ) -> Result<Verdict, Error> {
        let Some(policy) = self.policies.select(registry, repo) else {
            return Ok(Verdict::Deny { policy: None, reason: format!("no policy's scope matches {registry}/{repo}") });
        };
        let key = VerdictKey {
            registry: registry.into(),
            repo: repo.into(),
            digest: m.digest.clone(),
            policy_fingerprint: policy.fingerprint,
        };
        if let Some(parent) = self.children.parent_of(&key).await {
            return Ok(Verdict::Allow {
                policy: policy.name.clone(),
                by: format!("listed by verified index {parent}"),
            });
        }
        let subject = Subject { registry, repo, manifest: m };
        let verify = async {
            METRICS.verifications.get_or_create(&PolicyLabels { policy: policy.name.clone() }).inc();
            let v = policy.evaluate(up, &subject, time::OffsetDateTime::now_utc()).await?;
            // Only a real verification vouches for an index's children; an
            // audit-mode allow vouches for nothing.
            if v.is_allow() && policy.mode == Mode::Enforce {
                self.children.record(&key, policy::index_children(m)).await;
            }
            Ok::<_, UpstreamError>(v)
        };
        self.verdicts.get_or_verify(key.clone(), verify).await.map_err(|e| Error::upstream(Resource::Manifest, e))
    }
}

/// The swappable handle on the current state (hot reload replaces it), and
/// what outlives a reload: the pin store and what it has seen.
pub struct App {
    current: RwLock<Arc<State>>,
    pub pins: Option<PinStore>,
    /// Tags whose upstream moved away from their pin, as seen by background
    /// revalidation: `(registry, repo, tag) → (digest upstream serves, when)`.
    moved: moka::sync::Cache<(String, String, String), (Digest, i64)>,
    /// Pinned tags checked recently; an entry expires after the interval.
    revalidated: moka::sync::Cache<(String, String, String), ()>,
}

impl App {
    pub fn new(state: State, pins: Option<PinStore>) -> App {
        let every = std::time::Duration::from_secs(state.config.raw.pin_revalidate_secs);
        App {
            current: RwLock::new(Arc::new(state)),
            pins,
            moved: moka::sync::Cache::builder().max_capacity(100_000).build(),
            revalidated: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(every.max(std::time::Duration::from_millis(1)))
                .build(),
        }
    }

    pub fn state(&self) -> Arc<State> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the moves recorded against the current pins into memory, so a
    /// moved tag is refused under `on_tag_move = "deny"` from the first
    /// request after a restart, not only once revalidation has seen it again.
    /// A tag that moved back is cleared by its next revalidation. Returns how
    /// many moved tags were loaded.
    pub async fn load_moves(&self) -> Result<usize, crate::pins::PinError> {
        let Some(store) = &self.pins else { return Ok(0) };
        let moved = store.list_moved().await?;
        for (pin, events) in &moved {
            // Events are oldest first: the last one is what upstream served last.
            if let Some(last) = events.last() {
                let key = (pin.registry.clone(), pin.repository.clone(), pin.tag.clone());
                self.moved.insert(key, (last.seen.clone(), last.at));
            }
        }
        Ok(moved.len())
    }

    pub fn replace(&self, state: State) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    /// Re-resolves a pinned tag upstream in the background, at most once per
    /// interval, and records a move when upstream now serves another digest.
    /// The request that triggers it is served from the pin without waiting.
    fn revalidate_in_background(self: &Arc<Self>, up: Arc<UpstreamClient>, pin: Pin) {
        let key = (pin.registry.clone(), pin.repository.clone(), pin.tag.clone());
        let interval = self.state().config.raw.pin_revalidate_secs;
        if interval > 0 && self.revalidated.contains_key(&key) {
            return;
        }
        self.revalidated.insert(key.clone(), ());
        let app = self.clone();
        tokio::spawn(async move {
            let reference = ManifestRef::Tag(pin.tag.clone());
            // The same complete Accept the pin was made with: only then is
            // another digest a move and not a narrower answer.
            let seen = match up.manifest(&pin.repository, &reference, media::ALL_MANIFESTS).await {
                Ok(m) => m.digest,
                Err(e) => {
                    // Cannot tell; keep serving the pin and try again next interval.
                    tracing::debug!(tag = %pin.tag, repo = %pin.repository, "pin revalidation failed: {e}");
                    return;
                }
            };
            if seen == pin.digest {
                app.moved.invalidate(&key);
                return;
            }
            let at = time::OffsetDateTime::now_utc().unix_timestamp();
            if app.moved.get(&key).is_some_and(|(d, _)| d == seen) {
                return; // already recorded this move
            }
            METRICS.tag_moves.get_or_create(&PolicyLabels { policy: pin.policy.clone() }).inc();
            tracing::warn!(
                target: "sigmirror::decision",
                registry = %pin.registry, repo = %pin.repository, tag = %pin.tag,
                pinned = %pin.digest, seen = %seen, policy = %pin.policy,
                "tag moved upstream: {}", tag_moved_reason(&pin, &seen)
            );
            // Stored before it takes effect, so a refusal a client saw is one a
            // restart still makes (see `load_moves`).
            if let Some(store) = &app.pins {
                let ev = MoveEvent {
                    registry: pin.registry.clone(),
                    repository: pin.repository.clone(),
                    tag: pin.tag.clone(),
                    pinned: pin.digest.clone(),
                    seen: seen.clone(),
                    at,
                    policy: pin.policy.clone(),
                };
                if let Err(e) = store.record_move(ev).await {
                    tracing::error!("cannot record tag move: {e}");
                }
            }
            app.moved.insert(key, (seen, at));
        });
    }
}

/// The words of a tag-move refusal, in the log and the error body alike.
fn tag_moved_reason(pin: &Pin, seen: &Digest) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp(pin.pinned_at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| pin.pinned_at.to_string());
    format!("tag {} of {} was pinned to {} on {when}; upstream now serves {seen}", pin.tag, pin.repository, pin.digest)
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// Serves one request. Never fails: every error becomes an OCI response.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let head = req.method() == Method::HEAD;
    let resp = match route_request(&app, &req).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    Ok(resp)
}

async fn route_request<B>(app: &Arc<App>, req: &Request<B>) -> Result<Response<Body>, Error> {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Err(Error::WriteNotSupported(method));
    }
    let head = method == Method::HEAD;
    if req.uri().path() == "/metrics" {
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(full(if head { String::new() } else { METRICS.encode() }))
            .expect("static response"));
    }
    let route = parse_route(req.uri().path())?;
    let query = req.uri().query().unwrap_or("");
    let ns = query_param(query, "ns");
    let state = app.state();
    match route {
        Route::Base => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .body(full(if head { Bytes::new() } else { Bytes::from_static(b"{}") }))
            .expect("static response")),
        Route::Manifest { repo, reference } => {
            let (registry, up) = state.upstream(ns.as_deref())?;
            let accept = accept_header(req);
            serve_manifest(app, &state, &registry, &up, &repo, &reference, &accept, head).await
        }
        Route::Blob { repo, digest } => {
            let (registry, up) = state.upstream(ns.as_deref())?;
            // Blobs carry no signature of their own, but a repository no
            // policy covers gets nothing at all from us.
            if state.policies.select(&registry, &repo).is_none() {
                return Err(deny_outside_scope(&registry, &repo, &format!("@{digest}")));
            }
            serve_blob(&up, &repo, &digest, head).await
        }
        Route::TagsList { repo } => {
            let (registry, up) = state.upstream(ns.as_deref())?;
            // Listing tags reveals what a repository holds: only for covered ones.
            if state.policies.select(&registry, &repo).is_none() {
                return Err(deny_outside_scope(&registry, &repo, "tags/list"));
            }
            let q = strip_ns(query);
            let (_, body) = up.tags_list(&repo, q.as_deref()).await.map_err(|e| Error::upstream(Resource::Tags, e))?;
            let body = listing::tag_list(&repo, &body).map_err(|e| Error::upstream(Resource::Tags, e))?;
            Ok(bytes_response("application/json", body.into(), None, head))
        }
        Route::Referrers { repo, digest } => {
            let (registry, up) = state.upstream(ns.as_deref())?;
            if state.policies.select(&registry, &repo).is_none() {
                return Err(deny_outside_scope(&registry, &repo, &format!("referrers/{digest}")));
            }
            let artifact_type = query_param(query, "artifactType");
            match listing::referrers(&state, &registry, &up, &repo, &digest, artifact_type.as_deref()).await {
                Ok(Some(body)) => {
                    let mut resp = bytes_response(media::OCI_INDEX, body.into(), None, head);
                    if artifact_type.is_some() {
                        // We filtered ourselves, whatever upstream did.
                        resp.headers_mut().insert("OCI-Filters-Applied", HeaderValue::from_static("artifactType"));
                    }
                    Ok(resp)
                }
                Ok(None) => Err(Error::upstream(Resource::Referrers, UpstreamError::NotFound)),
                Err(e) => Err(Error::upstream(Resource::Referrers, e)),
            }
        }
    }
}

/// Refuses a non-manifest request for a repository no policy covers.
/// `what` is appended to the repository name in the message.
fn deny_outside_scope(registry: &str, repo: &str, what: &str) -> Error {
    let sep = if what.starts_with(['@', ':']) { "" } else { " " };
    let image = format!("{registry}/{repo}{sep}{what}");
    refuse(None, format!("no policy's scope matches {registry}/{repo}"), image, what)
}

/// The one place a refusal becomes an error: it is logged and counted as a
/// decision first, so every refusal a client sees is in the audit trail in
/// the same words.
fn refuse(policy: Option<String>, reason: String, image: String, reference: &str) -> Error {
    let verdict = Verdict::Deny { policy: policy.clone(), reason: reason.clone() };
    log_decision(&verdict, &image, reference);
    let message = verdict.refusal_message(&image).unwrap_or_default();
    Error::Denied { message, policy, image, reason }
}

#[allow(clippy::too_many_arguments)]
async fn serve_manifest(
    app: &Arc<App>,
    state: &State,
    registry: &str,
    up: &Arc<UpstreamClient>,
    repo: &str,
    reference: &ManifestRef,
    accept: &str,
    head: bool,
) -> Result<Response<Body>, Error> {
    // A repository no policy covers is refused before anything is asked
    // upstream: its digests are none of the client's business.
    let Some(policy) = state.policies.select(registry, repo) else {
        let what = match reference {
            ManifestRef::Tag(t) => format!(":{t}"),
            ManifestRef::Digest(d) => format!("@{d}"),
        };
        return Err(deny_outside_scope(registry, repo, &what));
    };
    if let (ManifestRef::Tag(tag), Some(store)) = (reference, &app.pins) {
        if policy.is_immutable_tag(tag) {
            return serve_immutable_tag(app, store, state, policy, registry, up, repo, tag, accept, head).await;
        }
    }
    let (manifest, verdict) = state.resolve_and_decide(registry, up, repo, reference, accept).await?;
    respond(registry, repo, reference, manifest, verdict, head)
}

/// An index served for a pinned tag to a client whose `Accept` does not list
/// its type. Upstream would hand such a client one platform's manifest; a pin
/// names one object for every client, so this client is told so instead.
fn check_client_accepts(accept: &str, m: &Manifest, repo: &str, tag: &str) -> Result<(), Error> {
    if media::is_index(&m.media_type) && !media::accepts(accept, &m.media_type) {
        return Err(Error::NotAcceptable(format!(
            "tag {tag} of {repo} is pinned to {} ({}), which this client's Accept header does not list",
            m.digest, m.media_type
        )));
    }
    Ok(())
}

/// Turns a decided manifest into the response: the bytes as upstream sent
/// them, or the refusal.
fn respond(
    registry: &str,
    repo: &str,
    reference: &ManifestRef,
    manifest: Manifest,
    verdict: Verdict,
    head: bool,
) -> Result<Response<Body>, Error> {
    let image = format!("{registry}/{repo}@{}", manifest.digest);
    match verdict {
        Verdict::Allow { .. } => {
            log_decision(&verdict, &image, &reference.to_string());
            Ok(bytes_response(&manifest.media_type, manifest.bytes, Some(&manifest.digest), head))
        }
        Verdict::Deny { policy, reason } => Err(refuse(policy, reason, image, &reference.to_string())),
    }
}

/// A tag under `immutable_tags`: served from its pin without asking
/// upstream, or pinned the first time it resolves to a verified digest.
#[allow(clippy::too_many_arguments)]
async fn serve_immutable_tag(
    app: &Arc<App>,
    store: &PinStore,
    state: &State,
    policy: &policy::Policy,
    registry: &str,
    up: &Arc<UpstreamClient>,
    repo: &str,
    tag: &str,
    accept: &str,
    head: bool,
) -> Result<Response<Body>, Error> {
    let reference = ManifestRef::Tag(tag.to_string());
    let pin = match store.get(registry, repo, tag).await? {
        Some(pin) => pin,
        None => {
            // Resolved with every type we serve, never the client's Accept, so
            // the pin names the object the tag really points at.
            let (manifest, verdict) =
                state.resolve_and_decide(registry, up, repo, &reference, media::ALL_MANIFESTS).await?;
            // Only a real verification pins; an audit-mode allow vouches for nothing.
            if !(verdict.is_allow() && policy.mode == Mode::Enforce) {
                return respond(registry, repo, &reference, manifest, verdict, head);
            }
            let ours = Pin {
                registry: registry.into(),
                repository: repo.into(),
                tag: tag.into(),
                digest: manifest.digest.clone(),
                pinned_at: time::OffsetDateTime::now_utc().unix_timestamp(),
                policy: policy.name.clone(),
            };
            // Durable before the response that relies on it is sent.
            let stored = store.pin(ours).await?;
            // Just resolved upstream: the next check is one interval away.
            app.revalidated.insert((registry.to_string(), repo.to_string(), tag.to_string()), ());
            if stored.digest == manifest.digest {
                tracing::info!(target: "sigmirror::decision", %registry, %repo, %tag, digest = %stored.digest, policy = %policy.name, "pinned tag");
                check_client_accepts(accept, &manifest, repo, tag)?;
                return respond(registry, repo, &reference, manifest, verdict, head);
            }
            // Another replica pinned first, to another digest: serve the winner.
            tracing::info!(
                target: "sigmirror::decision", %registry, %repo, %tag, pinned = %stored.digest, seen = %manifest.digest,
                "tag was pinned first by another replica; serving its pin"
            );
            stored
        }
    };
    app.revalidate_in_background(up.clone(), pin.clone());
    let key = (registry.to_string(), repo.to_string(), tag.to_string());
    if let Some((seen, _)) = app.moved.get(&key) {
        if policy.on_tag_move == OnTagMove::Deny {
            let image = format!("{registry}/{repo}:{tag}");
            return Err(refuse(Some(policy.name.clone()), tag_moved_reason(&pin, &seen), image, tag));
        }
    }
    let (manifest, verdict) =
        state.resolve_and_decide(registry, up, repo, &ManifestRef::Digest(pin.digest.clone()), accept).await?;
    if verdict.is_allow() {
        check_client_accepts(accept, &manifest, repo, tag)?;
    }
    respond(registry, repo, &reference, manifest, verdict, head)
}

/// One line per decision: the audit trail of what was served and refused.
pub fn log_decision(v: &Verdict, image: &str, reference: &str) {
    let (decision, policy) = match v {
        Verdict::Allow { policy, .. } => ("allow", policy.clone()),
        Verdict::Deny { policy, .. } => ("deny", policy.clone().unwrap_or_else(|| "-".into())),
    };
    METRICS.decisions.get_or_create(&DecisionLabels { decision, policy }).inc();
    match v {
        Verdict::Allow { policy, by } => {
            tracing::info!(target: "sigmirror::decision", decision = "allow", %policy, %image, reference = %reference, by = %by, "allow {image}")
        }
        Verdict::Deny { policy, .. } => {
            let message = v.refusal_message(image).unwrap_or_default();
            let policy = policy.as_deref().unwrap_or("-");
            tracing::info!(target: "sigmirror::decision", decision = "deny", %policy, %image, reference = %reference, "{message}")
        }
    }
}

fn bytes_response(content_type: &str, body: Bytes, digest: Option<&Digest>, head: bool) -> Response<Body> {
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

async fn serve_blob(up: &UpstreamClient, repo: &str, digest: &Digest, head: bool) -> Result<Response<Body>, Error> {
    let blob = up.blob(repo, digest, head).await.map_err(|e| Error::upstream(Resource::Blob, e))?;
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", digest.as_str());
    if let Some(n) = blob.content_length {
        b = b.header(header::CONTENT_LENGTH, n);
    }
    let body = if head {
        full(Bytes::new())
    } else {
        let verified = verify_stream(blob.body, digest.clone(), blob.content_length);
        BodyExt::boxed_unsync(StreamBody::new(verified.map(|r| r.map(Frame::data))))
    };
    Ok(b.body(body).expect("valid headers"))
}

#[derive(Debug, thiserror::Error)]
#[error("blob {expected}: {what}; response aborted")]
pub struct BlobIntegrityError {
    expected: Digest,
    what: String,
}

/// Streams a blob while hashing it, holding back the last chunk until the
/// hash is checked. On a mismatch the stream ends in an error, which makes
/// hyper abort the response, so the client never holds a complete wrong blob.
/// Memory stays at about one chunk whatever the blob size.
pub fn verify_stream(
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
    expected: Digest,
    content_length: Option<u64>,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
    struct St {
        inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
        hasher: Sha256,
        held: Option<Bytes>,
        total: u64,
        expected: Digest,
        content_length: Option<u64>,
        done: bool,
    }
    let st = St { inner, hasher: Sha256::new(), held: None, total: 0, expected, content_length, done: false };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    st.total += chunk.len() as u64;
                    if st.content_length.is_some_and(|n| st.total > n) {
                        st.done = true;
                        let e = BlobIntegrityError {
                            expected: st.expected.clone(),
                            what: "more bytes than Content-Length".into(),
                        };
                        tracing::warn!("{e}");
                        return Some((Err(e.into()), st));
                    }
                    if let Some(prev) = st.held.replace(chunk) {
                        return Some((Ok(prev), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    tracing::warn!(blob = %st.expected, "upstream blob stream failed: {e}");
                    return Some((Err(e.into()), st));
                }
                None => {
                    st.done = true;
                    let hash: [u8; 32] = std::mem::take(&mut st.hasher).finalize().into();
                    let actual = Digest::from_sha256(&hash);
                    if actual != st.expected {
                        METRICS.blob_digest_mismatches.inc();
                        let e = BlobIntegrityError {
                            expected: st.expected.clone(),
                            what: format!("upstream sent {actual}"),
                        };
                        tracing::warn!("{e}");
                        return Some((Err(e.into()), st));
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
}

fn accept_header<B>(req: &Request<B>) -> String {
    let values: Vec<&str> = req.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    if values.is_empty() {
        media::DEFAULT_ACCEPT.join(", ")
    } else {
        values.join(", ")
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// The query without `ns=`, for passing on to upstream.
fn strip_ns(query: &str) -> Option<String> {
    let rest: Vec<&str> = query.split('&').filter(|kv| !kv.is_empty() && !kv.starts_with("ns=")).collect();
    (!rest.is_empty()).then(|| rest.join("&"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(query_param("ns=docker.io&x=1", "ns").as_deref(), Some("docker.io"));
        assert_eq!(query_param("a=1&ns=localhost%3A5000", "ns").as_deref(), Some("localhost:5000"));
        assert_eq!(query_param("a=1", "ns"), None);
        assert_eq!(strip_ns("ns=docker.io&n=10").as_deref(), Some("n=10"));
        assert_eq!(strip_ns("ns=docker.io"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%é%41"), "%éA");
    }

    async fn collect(s: impl Stream<Item = Result<Bytes, BoxError>>) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn chunks(parts: &[&'static [u8]]) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>> {
        let v: Vec<Result<Bytes, UpstreamError>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn a_correct_blob_streams_through_whole() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verify_stream(chunks(&[b"hello", b" ", b"world"]), d, Some(11))).await;
        assert_eq!(out, b"hello world");
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn a_wrong_blob_never_reaches_the_client_complete() {
        let d = Digest::of(b"hello world");
        let (out, err) = collect(verify_stream(chunks(&[b"hello", b" ", b"WORLD"]), d.clone(), Some(11))).await;
        // The last chunk is held back, so the client got less than the blob.
        assert_eq!(out, b"hello ");
        assert!(err.unwrap().contains(&format!("blob {d}: upstream sent sha256:")));
        let (out, err) = collect(verify_stream(chunks(&[b"tampered"]), d, None)).await;
        assert!(out.is_empty());
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn a_blob_longer_than_its_content_length_is_cut_off() {
        let d = Digest::of(b"abc");
        let (_, err) = collect(verify_stream(chunks(&[b"abc", b"def"]), d, Some(3))).await;
        assert!(err.unwrap().contains("more bytes than Content-Length"));
    }

    #[tokio::test]
    async fn an_empty_blob_verifies() {
        let (out, err) = collect(verify_stream(chunks(&[]), Digest::of(b""), Some(0))).await;
        assert!(out.is_empty() && err.is_none());
    }
}
