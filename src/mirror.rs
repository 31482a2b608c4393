//! The mirror: everything built from one validated config, and the two steps
//! every manifest goes through, **resolve** (fetch or recall the bytes) and
//! **decide** (the verdict of the policy that governs them).
//!
//! The HTTP server and the `verify` command both come through here, so a
//! verdict means the same whichever asked.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::cache::{AllowedBlobs, ManifestCache, ManifestKey, Recalled, VerdictCache, VerdictKey, VerifiedChildren};
use crate::config::Config;
use crate::error::{Error, Resource};
use crate::metrics::{PolicyLabels, SchemeLabels, METRICS};
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
    pub children: VerifiedChildren,
    pub blobs: AllowedBlobs,
    /// Where this config's decisions are written (`[audit] path`).
    pub audit: Arc<AuditLog>,
    /// The listener's TLS, from `tls_cert` and `tls_key` (set by `lib::load`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Mirror {
    pub fn new(config: Config, policies: PolicySet) -> Result<Mirror, String> {
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            if u.plain_http {
                tracing::warn!(registry = %u.registry, host = %u.host, "upstream uses plain HTTP: only use this for a registry on loopback");
            }
            upstreams.insert(u.registry.clone(), Arc::new(UpstreamClient::new(u)?));
        }
        Ok(Mirror {
            verdicts: VerdictCache::new(config.allow_ttl, config.deny_ttl),
            manifests: ManifestCache::new(config.manifest_cache_bytes),
            children: VerifiedChildren::new(config.allow_ttl),
            blobs: AllowedBlobs::default(),
            audit: Arc::new(AuditLog::new(config.audit_log.clone())),
            config,
            policies,
            upstreams,
            tls: None,
        })
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

    /// Fetches (or recalls) the manifest `reference` names. By digest the bytes
    /// come from the manifest cache when they can; by tag upstream is asked
    /// with `accept`, and the answer is cached under its digest. A client's
    /// HEAD by tag is resolved with a HEAD upstream (registries count GETs
    /// against pull rate limits, and containerd resolves every pull with a
    /// HEAD), then the manifest is recalled or fetched by that digest: its
    /// bytes are needed to verify it, and fetching by digest checks them.
    pub async fn resolve(&self, pull: &Pull, reference: &ManifestRef, accept: &str) -> Result<Manifest, Error> {
        let (repo, up) = (&pull.repo, &pull.up);
        match reference {
            ManifestRef::Digest(d) => self.by_digest(pull, d).await,
            ManifestRef::Tag(_) => {
                if pull.head {
                    let head = up.head_manifest(repo, reference, accept).await;
                    if let Some(info) = head.map_err(|e| Error::upstream(Resource::Manifest, e))? {
                        return self.by_digest(pull, &info.digest).await;
                    }
                }
                let m =
                    up.manifest(repo, reference, accept).await.map_err(|e| Error::upstream(Resource::Manifest, e))?;
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
        self.manifests.get_or_fetch(key, up.manifest(repo, &reference, media::ALL_MANIFESTS)).await
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
        let verify = async {
            METRICS.verifications.get_or_create(&PolicyLabels { policy: policy.name.clone() }).inc();
            let started = std::time::Instant::now();
            let v = policy.evaluate(&*pull.up, &subject, time::OffsetDateTime::now_utc()).await;
            let scheme = policy.scheme_label();
            METRICS
                .verification_duration
                .get_or_create(&SchemeLabels { scheme })
                .observe(started.elapsed().as_secs_f64());
            let v = v?;
            // Only a real verification vouches for an index's children; an
            // audit-mode allow vouches for nothing.
            if v.vouches() {
                self.children.record(&key, m.children()).await;
            }
            // An audit allow records blobs too, so audit mode logs a would-be
            // refusal only for blobs no manifest referenced. The policy
            // fingerprint (which covers the mode) keeps them from an
            // enforcing policy.
            if v.is_allow() {
                self.blobs.record(&key, || m.blobs());
            }
            Ok::<_, UpstreamError>(v)
        };
        self.verdicts.get_or_verify(key.clone(), verify).await.map_err(|e| Error::upstream(Resource::Manifest, e))
    }

    /// Whether `digest` is a blob of a manifest `policy` allowed in this
    /// registry and repository (see `cache::AllowedBlobs`).
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
