//! The mirror: everything built from one validated config, and the two steps
//! every manifest goes through, **resolve** (fetch or recall the bytes) and
//! **decide** (the verdict of the policy that governs them).
//!
//! The HTTP server and the `verify` command both come through here, so a
//! verdict means the same whichever asked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allowed_blobs::AllowedBlobs;
use crate::audit::{self, refuse, AuditLog};
use crate::cache::{
    ManifestCache, ManifestKey, Recalled, TagCache, TagKey, VerdictCache, VerdictKey, VerifiedChildren,
};
use crate::config::{Config, Mode};
use crate::error::{Error, Resource};
use crate::limits::FetchSlots;
use crate::metrics::{PolicyLabels, SchemeLabels, StaleLabels, METRICS};
use crate::oci::{media, Digest, ManifestRef};
use crate::policy::{Policy, PolicySet, Scheme, Subject, Verdict};
use crate::upstream::{Manifest, UpstreamClient, UpstreamError};

/// One manifest request, as the server parsed it.
pub struct Pull {
    /// The configured registry name (`ns=`), never a host a client made up.
    pub registry: String,
    pub up: Arc<UpstreamClient>,
    pub repo: String,
    pub reference: ManifestRef,
    /// The client's `Accept`, used to resolve mutable tags as it asked.
    pub accept: String,
    pub head: bool,
}

impl Pull {
    /// `<registry>/<repo>@<digest>`: how an image is named in verdicts and logs.
    pub fn image(&self, m: &Manifest) -> String {
        format!("{}/{}@{}", self.registry, self.repo, m.digest)
    }
}

/// Everything built from one validated config. Replaced as a whole on reload,
/// so a request sees one consistent config from start to end.
pub struct Mirror {
    pub config: Config,
    pub policies: PolicySet,
    pub upstreams: HashMap<String, Arc<UpstreamClient>>,
    pub verdicts: VerdictCache,
    pub manifests: ManifestCache,
    pub tags: TagCache,
    pub children: VerifiedChildren,
    /// Shared with the mirrors before and after a reload (`App::replace`).
    pub blobs: Arc<AllowedBlobs>,
    /// Where this config's decisions are written (`[audit] path`).
    pub audit: Arc<AuditLog>,
    /// The listener's TLS, from `tls_cert` and `tls_key` (set by `lib::load`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What `check-config` warns about (set by `lib::load`); logged when this
    /// config starts serving.
    pub warnings: Vec<crate::config::Problem>,
}

impl Mirror {
    pub fn new(config: Config, policies: PolicySet) -> Result<Mirror, String> {
        // One set of fetch slots for every upstream: the bound is on what
        // this process holds open, whichever registry it is open to. A
        // reload starts a new set; fetches in flight keep the old one's.
        let limits = &config.limits;
        let slots = Arc::new(FetchSlots::of(limits));
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            upstreams.insert(u.registry.clone(), Arc::new(UpstreamClient::new(u, slots.clone())?));
        }
        Ok(Mirror {
            verdicts: VerdictCache::with_stale_if_error(config.allow_ttl, config.deny_ttl, config.stale_if_error),
            manifests: ManifestCache::new(config.manifest_cache_bytes),
            tags: TagCache::new(config.tag_ttl, config.stale_if_error),
            children: VerifiedChildren::new(config.allow_ttl),
            blobs: Arc::new(AllowedBlobs::default()),
            audit: Arc::new(AuditLog::new(config.audit_log.clone())),
            config,
            policies,
            upstreams,
            tls: None,
            warnings: Vec::new(),
        })
    }

    /// Logs every warning of this config, once, when it starts serving.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(key = %w.key, "config warning: {w}");
        }
    }

    /// The upstream for `ns` (or the default one). Unknown registries are never
    /// contacted: sigmirror is not an open proxy.
    pub fn upstream(&self, ns: Option<&str>) -> Result<(String, Arc<UpstreamClient>), Error> {
        let Some(u) = self.config.upstream_for(ns) else {
            let (what, reason) = match ns {
                Some(ns) => (format!("registry {ns:?}"), "it is not a configured upstream"),
                None => ("the request".to_string(), "no ns= parameter and no upstream is marked default"),
            };
            return Err(crate::audit::refuse_unknown_registry(ns, what, reason));
        };
        Ok((u.registry.clone(), self.upstreams[&u.registry].clone()))
    }

    /// A manifest and its verdict for a request no pin answers: a digest, or
    /// a mutable tag resolved at most every `tag_ttl` (`resolve_mutable`).
    /// While upstream is down, what is cached and verified answers; under an
    /// enforcing policy the rest is refused (`refuse_unverifiable`).
    pub async fn pull(&self, pull: &Pull, policy: &Policy) -> Result<(Manifest, Recalled<Verdict>), Error> {
        let (registry, repo, reference) = (&pull.registry, &pull.repo, &pull.reference);
        let m = match reference {
            ManifestRef::Digest(d) => self.by_digest(pull, d).await,
            ManifestRef::Tag(tag) => self.resolve_mutable(pull, tag).await,
        };
        let m = m.map_err(|e| refuse_unverifiable(policy, audit::Subject::request(registry, repo, reference), e))?;
        let v = self.decide(pull, policy, &m).await.map_err(|e| {
            refuse_unverifiable(policy, audit::Subject::manifest(registry, repo, reference, &m.digest), e)
        })?;
        Ok((m, v))
    }

    /// A mutable tag: from its last resolution when that is younger than
    /// `tag_ttl`, else resolved upstream. When upstream is down, the last
    /// resolution answers for up to `stale_if_error` after upstream gave it.
    /// Either way the digest is only a name: its manifest and verdict come
    /// from the caches or upstream as for any digest, so a stale resolution
    /// serves nothing that is not verified.
    async fn resolve_mutable(&self, pull: &Pull, tag: &str) -> Result<Manifest, Error> {
        let key = TagKey::new(&pull.registry, &pull.repo, tag, &pull.accept);
        if let Some(d) = self.tags.fresh(&key, Instant::now()) {
            return self.by_digest(pull, &d).await;
        }
        let err = match self.resolve(pull, &pull.reference, &pull.accept).await {
            Ok(m) => {
                self.tags.record(key, m.digest.clone(), Instant::now());
                return Ok(m);
            }
            Err(e) => e,
        };
        let Some(down) = outage(&err) else { return Err(err) };
        let Some((d, age)) = self.tags.stale(&key, Instant::now()) else { return Err(err) };
        stale_answer("tag", &format!("{}/{}:{tag}", pull.registry, pull.repo), &d, age, down);
        self.by_digest(pull, &d).await
    }

    /// Fetches (or recalls) the manifest `reference` names. By digest the bytes
    /// come from the manifest cache when they can; by tag upstream is asked
    /// (always: `resolve_mutable` is the path that remembers tags) with
    /// `accept`, and the answer is cached under its digest. A client's
    /// HEAD by tag is resolved with a HEAD upstream (registries count GETs
    /// against pull rate limits, and containerd resolves every pull with a
    /// HEAD), then the manifest is recalled or fetched by that digest: its
    /// bytes are needed to verify it, and fetching by digest checks them.
    pub async fn resolve(&self, pull: &Pull, reference: &ManifestRef, accept: &str) -> Result<Manifest, Error> {
        let (repo, up) = (&pull.repo, &pull.up);
        match reference {
            ManifestRef::Digest(d) => self.by_digest(pull, d).await,
            // The upstream requests are boxed: each is a large state machine
            // (an HTTP exchange under a timeout), and inline it would make
            // every caller's future that large, cached answers included.
            ManifestRef::Tag(_) => {
                if pull.head {
                    let head = Box::pin(up.head_manifest(repo, reference, accept)).await;
                    if let Some(info) = head.map_err(|e| Error::upstream(Resource::Manifest, e))? {
                        return self.by_digest(pull, &info.digest).await;
                    }
                }
                let m = Box::pin(up.manifest(repo, reference, accept))
                    .await
                    .map_err(|e| Error::upstream(Resource::Manifest, e))?;
                let key = ManifestKey { registry: pull.registry.clone(), repo: repo.clone(), digest: m.digest.clone() };
                self.manifests.insert(key, m.clone()).await;
                Ok(m)
            }
        }
    }

    /// A manifest by digest, through the manifest cache: one upstream fetch
    /// for all concurrent callers. The bytes of a digest do not depend on
    /// Accept, and the cache is shared by every client: ask for every type.
    pub async fn manifest_by_digest(
        &self,
        registry: &str,
        up: &UpstreamClient,
        repo: &str,
        d: &Digest,
    ) -> Result<Manifest, Arc<UpstreamError>> {
        let key = ManifestKey { registry: registry.into(), repo: repo.into(), digest: d.clone() };
        let reference = ManifestRef::Digest(d.clone());
        // Built only on a miss: see `VerdictCache::get_or_verify`.
        self.manifests.get_or_fetch(key, || up.manifest(repo, &reference, media::ALL_MANIFESTS)).await
    }

    async fn by_digest(&self, pull: &Pull, d: &Digest) -> Result<Manifest, Error> {
        self.manifest_by_digest(&pull.registry, &pull.up, &pull.repo, d)
            .await
            .map_err(|e| Error::upstream(Resource::Manifest, e))
    }

    /// The verdict of `policy` on `m`, from cache or freshly verified, and
    /// which of the two (for the audit line).
    pub async fn decide(&self, pull: &Pull, policy: &Policy, m: &Manifest) -> Result<Recalled<Verdict>, Error> {
        let key = VerdictKey {
            registry: pull.registry.clone(),
            repo: pull.repo.clone(),
            digest: m.digest.clone(),
            policy_fingerprint: policy.fingerprint,
        };
        if let Some(parent) = self.children.parent_of(&key).await {
            self.blobs.record(&key, || m.blobs());
            // The index's signer signed this manifest too, by listing it.
            let parent_key = VerdictKey { digest: parent.clone(), ..key.clone() };
            let (scheme, signer) = match self.verdicts.get(&parent_key).await {
                Some(Verdict::Allow { scheme, signer, .. }) => (scheme, signer),
                _ => (Scheme::None, None),
            };
            let by = format!("listed by verified index {parent}");
            let verdict =
                Verdict::Allow { policy: policy.name.clone(), by, vouches: true, scheme, signer, would_refuse: None };
            return Ok(Recalled { value: verdict, cached: true });
        }
        let subject = Subject { registry: &pull.registry, repo: &pull.repo, manifest: m };
        let key_ref = &key;
        let verify = || async move {
            let key = key_ref;
            METRICS.verifications.get_or_create(&PolicyLabels { policy: policy.name.clone() }).inc();
            let started = std::time::Instant::now();
            // Boxed: verification is the largest state machine of all.
            let v = Box::pin(policy.evaluate(&*pull.up, &subject, time::OffsetDateTime::now_utc())).await;
            let scheme = policy.scheme_label();
            METRICS
                .verification_duration
                .get_or_create(&SchemeLabels { scheme })
                .observe(started.elapsed().as_secs_f64());
            let v = v?;
            // Only a real verification vouches for an index's children; an
            // audit-mode allow vouches for nothing.
            if v.vouches() {
                self.children.record(key, m.children()).await;
            }
            // An audit allow records blobs too, so audit mode logs a would-be
            // refusal only for blobs no manifest referenced. The policy
            // fingerprint (which covers the mode) keeps them from an
            // enforcing policy.
            if v.is_allow() {
                self.blobs.record(key, || m.blobs());
            }
            Ok::<_, UpstreamError>(v)
        };
        let err = match self.verdicts.get_or_verify(key.clone(), verify).await {
            Ok(v) => return Ok(v),
            Err(e) => Error::upstream(Resource::Manifest, e),
        };
        // Upstream is down and the verdict is past its TTL: an allow made
        // within `stale_if_error` of that stands, as it would have had
        // upstream never been asked; anything else stays unanswered.
        let Some(down) = outage(&err) else { return Err(err) };
        let Some(v) = self.verdicts.stale_allow(&key) else { return Err(err) };
        stale_answer("verdict", &pull.image(m), &m.digest, self.config.allow_ttl, down);
        if v.vouches() {
            self.children.record(&key, m.children()).await;
        }
        self.blobs.record(&key, || m.blobs());
        Ok(Recalled { value: v, cached: true })
    }

    /// Whether `digest` is a blob of a manifest `policy` allowed in this
    /// registry and repository (see `allowed_blobs`).
    pub fn blob_allowed(&self, registry: &str, repo: &str, policy: &Policy, digest: &Digest) -> bool {
        self.blobs.contains(&VerdictKey {
            registry: registry.into(),
            repo: repo.into(),
            digest: digest.clone(),
            policy_fingerprint: policy.fingerprint,
        })
    }

    /// Resolve, then decide, under the policy that governs the repository,
    /// for the `verify` command. A repository no policy covers is refused
    /// before upstream is asked, so there is no manifest to show.
    pub async fn verify(&self, pull: &Pull) -> Result<(Option<Manifest>, Verdict), Error> {
        let Some(policy) = self.policies.select(&pull.registry, &pull.repo) else {
            let reason = format!("no policy's scope matches {}/{}", pull.registry, pull.repo);
            return Ok((None, Verdict::Deny { policy: None, reason }));
        };
        let m = self.resolve(pull, &pull.reference, &pull.accept).await?;
        let v = self.decide(pull, policy, &m).await?.value;
        Ok((Some(m), v))
    }
}

/// The upstream failure in `e` when it means upstream is down (see
/// `UpstreamError::is_outage`).
fn outage(e: &Error) -> Option<&UpstreamError> {
    match e {
        Error::Upstream { err, .. } if err.is_outage() => Some(err),
        _ => None,
    }
}

/// Logs and counts one answer given from cache because upstream is down.
/// `age` is how old the cached answer is at least.
fn stale_answer(kind: &'static str, what: &str, digest: &Digest, age: Duration, down: &UpstreamError) {
    METRICS.stale_answers.get_or_create(&StaleLabels { kind }).inc();
    tracing::warn!(
        target: "sigmirror::decision",
        kind, %what, %digest, age_secs = age.as_secs(), upstream = %down, detail = %down.detail().as_deref().unwrap_or("-"),
        "stale answer: upstream is down, so {what} is answered from cache ({kind}, {} s old): {digest}", age.as_secs()
    );
}

/// Under an enforcing policy, an upstream outage that leaves `image` without a
/// verified answer in the caches is a refusal, logged and worded like every
/// other: nothing unverified is served in its place. Under an audit policy,
/// and for every other error, `e` is returned as it is.
pub fn refuse_unverifiable(policy: &Policy, subject: audit::Subject, e: Error) -> Error {
    let Some(down) = outage(&e).filter(|_| policy.mode == Mode::Enforce) else { return e };
    tracing::warn!(image = %subject.name, detail = %down.detail().as_deref().unwrap_or("-"), "upstream failure: {down}");
    let reason =
        format!("upstream is unreachable ({down}) and sigmirror holds no verified answer it may serve instead");
    refuse(Some(policy.name.clone()), reason, subject)
}
