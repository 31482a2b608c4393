//! HTTP: the pull side of the distribution API. Routes a request, applies
//! the one scope guard, and hands manifests to the mirror and the tag guard,
//! blobs to `blob`, listings to `listing`. Every error becomes an OCI answer
//! in `error.rs`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};

use crate::app::App;
use crate::audit::{self, log_decision, refuse, refuse_outside_scope, Subject};
use crate::cache::Recalled;
use crate::config::Mode;
use crate::error::{Error, Resource};
use crate::metrics::{status_class, InFlight, RequestLabels, METRICS};
use crate::mirror::{Mirror, Pull};
use crate::oci::{media, parse_route, Digest, ManifestRef, Route};
use crate::policy::evaluate::audit_allow;
use crate::policy::{Policy, Verdict};
use crate::response::{self, Body};
use crate::upstream::{Manifest, UpstreamError};
use crate::{blob, listing};

/// Serves one request from `client`. Never fails: every error becomes an
/// OCI response. Counted by route and status class, and in flight until the
/// answer's head is ready (a blob body streams on after that).
pub async fn handle<B>(app: Arc<App>, client: SocketAddr, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let _in_flight = InFlight::start();
    let head = req.method() == Method::HEAD;
    let route = route_label(req.uri().path());
    let scope = audit::Scope { client: Some(client), log: app.mirror().audit.clone() };
    let resp = match audit::scoped(scope, route_request(&app, &req)).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    let status_class = status_class(resp.status().as_u16());
    METRICS.requests.get_or_create(&RequestLabels { route, status_class }).inc();
    Ok(resp)
}

/// The `route` label of `sigmirror_requests_total`: a fixed set, whatever
/// the path.
pub(crate) fn route_label(path: &str) -> &'static str {
    match path {
        "/metrics" => return "metrics",
        "/healthz" | "/readyz" => return "health",
        _ => {}
    }
    match parse_route(path) {
        Ok(Route::Base) => "base",
        Ok(Route::Manifest { .. }) => "manifest",
        Ok(Route::Blob { .. }) => "blob",
        Ok(Route::TagsList { .. }) => "tags",
        Ok(Route::Referrers { .. }) => "referrers",
        Err(_) => "other",
    }
}

async fn route_request<B>(app: &Arc<App>, req: &Request<B>) -> Result<Response<Body>, Error> {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Err(Error::WriteNotSupported(method));
    }
    let head = method == Method::HEAD;
    match req.uri().path() {
        "/metrics" => return Ok(response::metrics(METRICS.encode(), head)),
        "/healthz" => return Ok(crate::health::healthz(head)),
        "/readyz" => {
            let pin_store = app.tags.as_ref().map(|t| t.store().describe());
            return Ok(crate::health::readyz(&app.health, &app.mirror().config.file, pin_store, head));
        }
        _ => {}
    }
    let route = parse_route(req.uri().path())?;
    let query = req.uri().query().unwrap_or("");
    let ns = query_param(query, "ns");
    let mirror = app.mirror();
    match route {
        Route::Base => Ok(response::api_base(head)),
        Route::Manifest { repo, reference } => {
            let (registry, up) = mirror.upstream(ns.as_deref())?;
            let policy = scope_guard(&mirror, &registry, &repo, &reference.suffix())?;
            let pull = Pull { registry, up, repo, reference, accept: accept_header(req), head };
            // One deadline over everything a manifest needs (resolution,
            // signatures, pins): each upstream request has its own timeout,
            // but a dozen slow ones in a row would hold the client for minutes.
            let deadline = mirror.config.limits.manifest_timeout;
            // Boxed, so the futures around it (timeout, audit scope, hyper)
            // move a pointer rather than the manifest path's state machine.
            let serve = Box::pin(serve_manifest(app, &mirror, policy, &pull));
            let served = match tokio::time::timeout(deadline, serve).await {
                Ok(served) => served,
                Err(_) => {
                    crate::limits::count_hit("manifest_timeout_secs");
                    let image = Subject::request(&pull.registry, &pull.repo, &pull.reference).name;
                    Err(Error::ManifestTimeout { policy: policy.name.clone(), image, secs: deadline.as_secs() })
                }
            };
            // Built only for a failure: a served manifest does not pay for it.
            served.inspect_err(|e| {
                audit::log_failure(&policy.name, &Subject::request(&pull.registry, &pull.repo, &pull.reference), e)
            })
        }
        Route::Blob { repo, digest } => {
            let (registry, up) = mirror.upstream(ns.as_deref())?;
            let policy = scope_guard(&mirror, &registry, &repo, &format!("@{digest}"))?;
            blob_guard(&mirror, policy, &registry, &repo, &digest)?;
            let req = blob::BlobRequest { up: &up, repo: &repo, digest: &digest, head, headers: req.headers() };
            // Boxed, as every upstream exchange on this path: the request's
            // future is as large as its largest branch (see `cache.rs`).
            Box::pin(blob::serve(app.blobs.as_ref(), req)).await
        }
        Route::TagsList { repo } => {
            let (registry, up) = mirror.upstream(ns.as_deref())?;
            scope_guard(&mirror, &registry, &repo, "tags/list")?;
            let q = strip_ns(query);
            let (_, body) =
                Box::pin(up.tags_list(&repo, q.as_deref())).await.map_err(|e| Error::upstream(Resource::Tags, e))?;
            let body = listing::tag_list(&repo, &body).map_err(|e| Error::upstream(Resource::Tags, e))?;
            Ok(response::bytes("application/json", body.into(), None, head))
        }
        Route::Referrers { repo, digest } => {
            let (registry, up) = mirror.upstream(ns.as_deref())?;
            scope_guard(&mirror, &registry, &repo, &format!("referrers/{digest}"))?;
            let artifact_type = query_param(query, "artifactType");
            match Box::pin(listing::referrers(&mirror, &registry, &up, &repo, &digest, artifact_type.as_deref())).await
            {
                Ok(Some(body)) => {
                    let mut resp = response::bytes(media::OCI_INDEX, body.into(), None, head);
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

/// The one scope guard: the policy that governs `<registry>/<repo>`, or a
/// refusal before anything is asked upstream. A repository no policy covers
/// gets nothing from us, not even whether a tag exists. `what` names the
/// request in the refusal (`:tag`, `@digest`, `tags/list`, …).
fn scope_guard<'m>(mirror: &'m Mirror, registry: &str, repo: &str, what: &str) -> Result<&'m Policy, Error> {
    mirror.policies.select(registry, repo).ok_or_else(|| refuse_outside_scope(registry, repo, what))
}

/// Blob access follows verification: a blob is served only when a manifest
/// the policy allowed (enforcing) references it. In audit mode it is served,
/// and the refusal it would have been is logged.
fn blob_guard(mirror: &Mirror, policy: &Policy, registry: &str, repo: &str, digest: &Digest) -> Result<(), Error> {
    if mirror.blob_allowed(registry, repo, policy, digest) {
        return Ok(());
    }
    let subject = Subject::blob(registry, repo, digest);
    let reason = format!(
        "blob {digest} is not referenced by any manifest this policy allowed in {registry}/{repo} (fetch the image's manifest first)"
    );
    if policy.mode == Mode::Audit {
        log_decision(&audit_allow(&policy.name, reason), &subject, false);
        return Ok(());
    }
    Err(refuse(Some(policy.name.clone()), reason, subject))
}

/// A manifest: through the tag guard when the tag is immutable and pins are
/// kept, else resolved and decided directly; then served or refused.
async fn serve_manifest(app: &App, mirror: &Mirror, policy: &Policy, pull: &Pull) -> Result<Response<Body>, Error> {
    let (manifest, verdict) = match (&pull.reference, &app.tags) {
        (ManifestRef::Tag(tag), Some(tags)) if policy.is_immutable_tag(tag) => {
            tags.resolve(mirror, policy, pull, tag).await?
        }
        _ => mirror.pull(pull, policy).await?,
    };
    respond(pull, manifest, verdict)
}

/// Turns a decided manifest into the response: the bytes as upstream sent
/// them, or the refusal.
fn respond(pull: &Pull, manifest: Manifest, decided: Recalled<Verdict>) -> Result<Response<Body>, Error> {
    let subject = Subject::manifest(&pull.registry, &pull.repo, &pull.reference, &manifest.digest);
    match decided.value {
        Verdict::Allow { .. } => {
            log_decision(&decided.value, &subject, decided.cached);
            Ok(response::bytes(&manifest.media_type, manifest.bytes, Some(&manifest.digest), pull.head))
        }
        Verdict::Deny { policy, reason } => Err(audit::refuse_recalled(policy, reason, subject, decided.cached)),
    }
}

fn accept_header<B>(req: &Request<B>) -> String {
    let values: Vec<&str> = req.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    if values.is_empty() {
        media::DEFAULT_ACCEPT.join(", ")
    } else {
        values.join(", ")
    }
}

pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// The query without `ns=`, for passing on to upstream.
pub(crate) fn strip_ns(query: &str) -> Option<String> {
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

    /// A request's future is as large as its largest state and is copied
    /// whole at every move (into the audit scope, the deadline, hyper). The
    /// cached path once carried the verification and the upstream fetches
    /// inline, 17 KB moved several times per request, most of a cached
    /// request's instructions under callgrind; they are built and boxed only
    /// on a miss now. This keeps them from creeping back in.
    #[tokio::test]
    async fn a_request_future_stays_small_so_the_cached_path_does_not_copy_the_cold_one() {
        let (_dir, app) = crate::app::audited_test_app();
        let req = Request::get("/v2/a/manifests/v1?ns=registry.test").body(()).unwrap();
        let request = handle(app.clone(), "127.0.0.1:1".parse().unwrap(), req);
        let mirror = app.mirror();
        let (registry, up) = mirror.upstream(Some("registry.test")).unwrap();
        let reference = ManifestRef::Tag("v1".into());
        let pull = Pull { registry, up, repo: "a".into(), reference, accept: String::new(), head: false };
        let policy = mirror.policies.select("registry.test", "a").unwrap();
        let manifest = serve_manifest(&app, &mirror, policy, &pull);
        let pulled = mirror.pull(&pull, policy);
        let sizes = [
            ("handle", std::mem::size_of_val(&request)),
            ("serve_manifest", std::mem::size_of_val(&manifest)),
            ("Mirror::pull", std::mem::size_of_val(&pulled)),
        ];
        eprintln!("future sizes in bytes: {sizes:?}");
        for (what, size) in sizes {
            assert!(size <= 4096, "{what}'s future is {size} bytes; box what only a cache miss needs");
        }
    }

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
}
