//! In-memory caches: verdicts, manifests by digest, mutable tag
//! resolutions, verified index children and allowed blobs. Each key is
//! written down with the reason for every field, because a key that misses a
//! field lets one image's answer serve another; each cache says what bounds
//! it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::METRICS;
use crate::oci::Digest;
use crate::policy::Verdict;
use crate::upstream::{Manifest, UpstreamError};

/// The key of a verdict.
///
/// - `registry` and `repo`: the same digest in two repositories can be
///   signed in one and not the other (cosign signatures live per repository).
/// - `digest`: what was verified.
/// - `policy_fingerprint`: a hash of the policy's settings and every byte of
///   its trust material, so a config edit never reuses an old verdict.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub registry: String,
    pub repo: String,
    pub digest: Digest,
    pub policy_fingerprint: [u8; 32],
}

/// Verdicts, with a long TTL for allows and a short one for denials, so a
/// signature pushed after a refusal takes effect quickly.
///
/// Bound: `MAX_VERDICTS` entries in each of the two maps (a key and a verdict
/// are a few hundred bytes: some tens of MiB at the very most).
pub struct VerdictCache {
    inner: moka::future::Cache<VerdictKey, Verdict>,
    /// Allows, kept `stale_if_error` longer than `inner` keeps them, counted
    /// from the verification that made them. Only read when re-verifying
    /// failed because upstream is down (`stale_allow`), so an allow outlives
    /// its TTL only while nothing newer can be known. Denials are never kept:
    /// what was refused stays refused while upstream is down.
    stale: Option<moka::sync::Cache<VerdictKey, Verdict>>,
}

pub const MAX_VERDICTS: u64 = 100_000;

struct VerdictExpiry {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<VerdictKey, Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &VerdictKey, v: &Verdict, _: Instant) -> Option<Duration> {
        Some(if v.is_allow() { self.allow } else { self.deny })
    }
}

impl VerdictCache {
    /// Keeps nothing past its TTL.
    pub fn new(allow_ttl: Duration, deny_ttl: Duration) -> VerdictCache {
        VerdictCache::with_stale_if_error(allow_ttl, deny_ttl, Duration::ZERO)
    }

    /// Keeps allows `stale_if_error` past their TTL, for `stale_allow`.
    pub fn with_stale_if_error(allow_ttl: Duration, deny_ttl: Duration, stale_if_error: Duration) -> VerdictCache {
        VerdictCache {
            inner: moka::future::Cache::builder()
                .max_capacity(MAX_VERDICTS)
                .expire_after(VerdictExpiry { allow: allow_ttl, deny: deny_ttl })
                .build(),
            stale: (!stale_if_error.is_zero()).then(|| {
                moka::sync::Cache::builder().max_capacity(MAX_VERDICTS).time_to_live(allow_ttl + stale_if_error).build()
            }),
        }
    }

    /// Returns the cached verdict, or runs `verify()` once for all concurrent
    /// callers of the same key. An `Err` (upstream failure) is handed to every
    /// waiting caller and is **not** cached. Counted as a hit or a miss in
    /// `sigmirror_cache_{hits,misses}_total{cache="verdict"}`.
    ///
    /// `verify` is a closure, not a future: a hit then never builds the
    /// verification, and the miss path is boxed. A future's size is that of
    /// its largest state, and it is copied whole at every move; with the
    /// verification inline, every cached request carried (and copied) 16 KB
    /// of state it never used (callgrind: a third of a cached request).
    pub async fn get_or_verify<F, Fut>(
        &self,
        key: VerdictKey,
        verify: F,
    ) -> Result<Recalled<Verdict>, Arc<UpstreamError>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Verdict, UpstreamError>>,
    {
        if let Some(v) = self.inner.get(&key).await {
            METRICS.cache_lookup("verdict", true);
            return Ok(Recalled { value: v, cached: true });
        }
        Box::pin(self.verify_once(key, verify)).await
    }

    async fn verify_once<F, Fut>(&self, key: VerdictKey, verify: F) -> Result<Recalled<Verdict>, Arc<UpstreamError>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Verdict, UpstreamError>>,
    {
        let verify_and_keep = async {
            let verify = verify();
            let v = verify.await?;
            if let (Some(stale), true) = (&self.stale, v.is_allow()) {
                stale.insert(key.clone(), v.clone());
            }
            Ok(v)
        };
        let miss = Miss::default();
        let value = self.inner.try_get_with(key.clone(), miss.run(verify_and_keep)).await;
        let cached = miss.count("verdict");
        Ok(Recalled { value: value?, cached })
    }

    /// An allow for `key` made within `allow_ttl + stale_if_error`, for when
    /// it could not be made again because upstream is down.
    pub fn stale_allow(&self, key: &VerdictKey) -> Option<Verdict> {
        self.stale.as_ref()?.get(key)
    }

    pub async fn get(&self, key: &VerdictKey) -> Option<Verdict> {
        self.inner.get(key).await
    }
}

/// A value from a cache, and whether this caller found it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recalled<T> {
    pub value: T,
    /// False when this caller's own computation made the value. A caller
    /// that waited for another's computation counts as a hit: the work was
    /// done once, for someone else.
    pub cached: bool,
}

/// Notes whether a cache's init future ran for this caller, and counts the
/// lookup as a hit or a miss of `cache` in `sigmirror_cache_*_total`.
#[derive(Default)]
struct Miss(AtomicBool);

impl Miss {
    async fn run<T>(&self, compute: impl std::future::Future<Output = T>) -> T {
        self.0.store(true, Ordering::Relaxed);
        compute.await
    }

    /// Counts the lookup; true when it was a hit.
    fn count(&self, cache: &'static str) -> bool {
        let hit = !self.0.load(Ordering::Relaxed);
        METRICS.cache_lookup(cache, hit);
        hit
    }
}

/// Manifests by `(registry, repo, digest)`. Content under a digest never
/// changes, but the repository is part of the key because upstream access
/// rights are per repository: serving repo B's request from repo A's fetch
/// would skip upstream's own check that B holds that digest.
///
/// The digest is the only thing the bytes depend on: they are hashed on
/// arrival and refused if they do not match, and they are fetched with every
/// manifest type in `Accept`, so no client's `Accept` shapes what is kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ManifestKey {
    pub registry: String,
    pub repo: String,
    pub digest: Digest,
}

/// Manifest bytes, verified or not: a manifest is cached before its verdict
/// is made, and every answer still goes through the verdict. Because the
/// key is the digest of the bytes, an entry is never stale, and while
/// upstream is down it answers as well as upstream would have.
///
/// Bound: `manifest_cache_bytes` of manifest bytes in total (each at most
/// `upstream::MAX_MANIFEST_BYTES`); an entry unused for an hour is dropped.
pub struct ManifestCache {
    inner: moka::future::Cache<ManifestKey, Manifest>,
}

impl ManifestCache {
    pub fn new(max_bytes: u64) -> ManifestCache {
        ManifestCache {
            inner: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, m: &Manifest| m.bytes.len().try_into().unwrap_or(u32::MAX))
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    pub async fn insert(&self, key: ManifestKey, m: Manifest) {
        self.inner.insert(key, m).await
    }

    /// One upstream fetch, `fetch()`, for all concurrent callers of the same
    /// digest. Counted in `sigmirror_cache_{hits,misses}_total{cache="manifest"}`.
    /// A closure and a boxed miss path, as in `VerdictCache::get_or_verify`:
    /// a hit neither builds nor carries the upstream request's state.
    pub async fn get_or_fetch<F, Fut>(&self, key: ManifestKey, fetch: F) -> Result<Manifest, Arc<UpstreamError>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Manifest, UpstreamError>>,
    {
        if let Some(m) = self.inner.get(&key).await {
            METRICS.cache_lookup("manifest", true);
            return Ok(m);
        }
        Box::pin(async {
            let miss = Miss::default();
            let value = self.inner.try_get_with(key, miss.run(async { fetch().await })).await;
            miss.count("manifest");
            value
        })
        .await
    }
}

/// A mutable tag's resolution is kept per `(registry, repo, tag, Accept)`.
/// The registry and repository for the reasons of `ManifestKey`; the
/// `Accept` because a registry answers a tag with another object for a
/// narrower `Accept` (an index for one client, one platform's manifest for
/// another), so a resolution made for one must not answer the other. The
/// `Accept` is kept as its SHA-256, so a client's long header costs 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TagKey {
    pub registry: String,
    pub repo: String,
    pub tag: String,
    accept: [u8; 32],
}

impl TagKey {
    pub fn new(registry: &str, repo: &str, tag: &str, accept: &str) -> TagKey {
        use sha2::Digest as _;
        TagKey {
            registry: registry.into(),
            repo: repo.into(),
            tag: tag.into(),
            accept: sha2::Sha256::digest(accept.as_bytes()).into(),
        }
    }
}

/// What a tag resolved to upstream, and when.
#[derive(Clone, Debug)]
struct Resolution {
    digest: Digest,
    at: Instant,
}

/// Mutable tags: the last digest upstream named for each, so that a tag is
/// asked upstream at most once per `tag_ttl` (`fresh`), and, while upstream
/// is down, still resolves to what it last named for `stale_if_error` after
/// upstream last said so (`stale`). The digest is only a name: what it names
/// is decided by policy on every request, like any digest.
///
/// Tags under a policy's `immutable_tags` never come here: their pins answer.
///
/// Bound: `MAX_TAG_RESOLUTIONS` entries of about 200 bytes; an entry goes
/// once neither window can use it.
pub struct TagCache {
    inner: Option<moka::sync::Cache<TagKey, Resolution>>,
    ttl: Duration,
    stale_if_error: Duration,
}

pub const MAX_TAG_RESOLUTIONS: u64 = 50_000;

impl TagCache {
    pub fn new(ttl: Duration, stale_if_error: Duration) -> TagCache {
        let keep = ttl.max(stale_if_error);
        TagCache {
            inner: (!keep.is_zero())
                .then(|| moka::sync::Cache::builder().max_capacity(MAX_TAG_RESOLUTIONS).time_to_live(keep).build()),
            ttl,
            stale_if_error,
        }
    }

    /// Records that upstream resolved `key` to `digest` at `now`.
    pub fn record(&self, key: TagKey, digest: Digest, now: Instant) {
        if let Some(inner) = &self.inner {
            inner.insert(key, Resolution { digest, at: now });
        }
    }

    /// The digest `key` resolved to less than `tag_ttl` before `now`.
    pub fn fresh(&self, key: &TagKey, now: Instant) -> Option<Digest> {
        let r = self.inner.as_ref()?.get(key)?;
        (now.saturating_duration_since(r.at) < self.ttl).then_some(r.digest)
    }

    /// The digest `key` last resolved to, and how long ago, if that was at
    /// most `stale_if_error` before `now`: for when upstream is down.
    pub fn stale(&self, key: &TagKey, now: Instant) -> Option<(Digest, Duration)> {
        let r = self.inner.as_ref()?.get(key)?;
        let age = now.saturating_duration_since(r.at);
        (!self.stale_if_error.is_zero() && age <= self.stale_if_error).then_some((r.digest, age))
    }
}

/// Children of verified image indexes: `(registry, repo, child digest,
/// policy fingerprint) → index digest`. containerd verifies nothing itself:
/// it resolves the index, then fetches one platform manifest by digest. That
/// manifest is allowed because the index that lists it was verified under the
/// same policy, in the same repository. Entries live as long as an allow.
pub struct VerifiedChildren {
    inner: moka::future::Cache<VerdictKey, Digest>,
}

impl VerifiedChildren {
    pub fn new(ttl: Duration) -> VerifiedChildren {
        VerifiedChildren { inner: moka::future::Cache::builder().max_capacity(100_000).time_to_live(ttl).build() }
    }

    pub async fn record(&self, parent: &VerdictKey, children: Vec<Digest>) {
        for child in children {
            let key = VerdictKey { digest: child, ..parent.clone() };
            self.inner.insert(key, parent.digest.clone()).await;
        }
    }

    pub async fn parent_of(&self, key: &VerdictKey) -> Option<Digest> {
        self.inner.get(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn allow() -> Verdict {
        let scheme = crate::policy::Scheme::Cosign;
        Verdict::Allow { policy: "p".into(), by: "k".into(), vouches: true, scheme, signer: None, would_refuse: None }
    }

    fn key(n: u8) -> VerdictKey {
        VerdictKey { registry: "r".into(), repo: "x".into(), digest: Digest::of(&[n]), policy_fingerprint: [n; 32] }
    }

    #[tokio::test]
    async fn fifty_concurrent_callers_run_one_verification() {
        let cache = Arc::new(VerdictCache::new(Duration::from_secs(60), Duration::from_secs(5)));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, runs) = (cache.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_verify(key(1), || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(allow())
                    })
                    .await
            }));
        }
        let mut computed = 0;
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            assert!(r.value.is_allow());
            computed += usize::from(!r.cached);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Exactly the caller that ran the verification saw it uncached.
        assert_eq!(computed, 1);
    }

    #[tokio::test]
    async fn upstream_errors_are_not_cached_as_denials() {
        let cache = VerdictCache::new(Duration::from_secs(60), Duration::from_secs(5));
        let r = cache.get_or_verify(key(2), || async { Err(UpstreamError::Timeout(Duration::from_secs(1))) }).await;
        assert!(r.is_err());
        assert_eq!(cache.get(&key(2)).await, None);
        let r = cache.get_or_verify(key(2), || async { Ok(allow()) }).await;
        assert!(r.unwrap().value.is_allow());
    }

    #[tokio::test]
    async fn a_different_policy_fingerprint_is_a_different_verdict() {
        let cache = VerdictCache::new(Duration::from_secs(60), Duration::from_secs(5));
        let deny = Verdict::Deny { policy: Some("p".into()), reason: "r".into() };
        cache.get_or_verify(key(3), || async { Ok(deny.clone()) }).await.unwrap();
        let mut other = key(3);
        other.policy_fingerprint = [9; 32];
        assert_eq!(cache.get(&key(3)).await, Some(deny));
        assert_eq!(cache.get(&other).await, None);
    }

    #[tokio::test]
    async fn denials_expire_sooner_than_allows() {
        let cache = VerdictCache::new(Duration::from_secs(60), Duration::from_millis(100));
        let deny = Verdict::Deny { policy: Some("p".into()), reason: "r".into() };
        let allow = allow();
        cache.get_or_verify(key(4), || async { Ok(deny) }).await.unwrap();
        cache.get_or_verify(key(5), || async { Ok(allow) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cache.get(&key(4)).await, None);
        assert!(cache.get(&key(5)).await.is_some());
    }

    #[tokio::test]
    async fn only_allows_outlive_their_ttl_for_stale_if_error_and_then_go() {
        let cache = VerdictCache::with_stale_if_error(
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_millis(300),
        );
        let deny = Verdict::Deny { policy: Some("p".into()), reason: "r".into() };
        let allow = allow();
        cache.get_or_verify(key(6), || async { Ok(deny) }).await.unwrap();
        cache.get_or_verify(key(7), || async { Ok(allow.clone()) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.get(&key(7)).await, None, "the allow is past its TTL");
        assert_eq!(cache.stale_allow(&key(7)), Some(allow), "but kept for an outage");
        assert_eq!(cache.stale_allow(&key(6)), None, "a denial is never kept");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cache.stale_allow(&key(7)), None, "past allow_ttl + stale_if_error");
    }

    #[test]
    fn without_stale_if_error_nothing_is_kept_past_its_ttl() {
        let cache = VerdictCache::new(Duration::from_secs(60), Duration::from_secs(5));
        assert!(cache.stale.is_none());
        assert_eq!(cache.stale_allow(&key(1)), None);
    }

    fn tag(name: &str, accept: &str) -> TagKey {
        TagKey::new("r", "x", name, accept)
    }

    #[test]
    fn a_tag_resolution_is_fresh_for_tag_ttl_and_usable_in_an_outage_for_stale_if_error() {
        let tags = TagCache::new(Duration::from_secs(30), Duration::from_secs(300));
        let t0 = Instant::now();
        let d = Digest::of(b"a");
        tags.record(tag("v", "*/*"), d.clone(), t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(tags.fresh(&tag("v", "*/*"), at(29)), Some(d.clone()));
        assert_eq!(tags.fresh(&tag("v", "*/*"), at(30)), None, "re-resolved once tag_ttl is over");
        assert_eq!(tags.stale(&tag("v", "*/*"), at(300)), Some((d.clone(), Duration::from_secs(300))));
        assert_eq!(tags.stale(&tag("v", "*/*"), at(301)), None, "past stale_if_error");
        // A newer resolution starts both windows again.
        let e = Digest::of(b"b");
        tags.record(tag("v", "*/*"), e.clone(), at(290));
        assert_eq!(tags.fresh(&tag("v", "*/*"), at(300)), Some(e));
    }

    #[test]
    fn a_tag_resolution_answers_only_the_same_registry_repo_tag_and_accept() {
        let tags = TagCache::new(Duration::from_secs(30), Duration::from_secs(300));
        let now = Instant::now();
        tags.record(tag("v", "application/vnd.oci.image.index.v1+json"), Digest::of(b"a"), now);
        assert!(tags.fresh(&tag("v", "application/vnd.oci.image.index.v1+json"), now).is_some());
        assert_eq!(tags.fresh(&tag("v", "application/vnd.oci.image.manifest.v1+json"), now), None);
        assert_eq!(tags.fresh(&tag("w", "application/vnd.oci.image.index.v1+json"), now), None);
        let other_repo = TagKey::new("r", "y", "v", "application/vnd.oci.image.index.v1+json");
        assert_eq!(tags.fresh(&other_repo, now), None);
        let other_registry = TagKey::new("s", "x", "v", "application/vnd.oci.image.index.v1+json");
        assert_eq!(tags.stale(&other_registry, now), None);
    }

    #[test]
    fn with_both_windows_zero_no_tag_is_kept_and_zero_stale_serves_nothing_stale() {
        let off = TagCache::new(Duration::ZERO, Duration::ZERO);
        let now = Instant::now();
        off.record(tag("v", "a"), Digest::of(b"a"), now);
        assert_eq!(off.fresh(&tag("v", "a"), now), None);
        assert_eq!(off.stale(&tag("v", "a"), now), None);
        let no_stale = TagCache::new(Duration::from_secs(30), Duration::ZERO);
        no_stale.record(tag("v", "a"), Digest::of(b"a"), now);
        assert!(no_stale.fresh(&tag("v", "a"), now).is_some());
        assert_eq!(no_stale.stale(&tag("v", "a"), now), None);
    }
}
