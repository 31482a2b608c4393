//! Immutable tags at serve time: a tag under `immutable_tags` is served from
//! its pin without asking upstream, pinned the first time it resolves to a
//! verified digest (or to an index under `index = "children"`, see
//! [`may_pin`]), and re-resolved in the background to notice moves.
//!
//! Pins and revalidation resolve with one fixed, complete `Accept`
//! (`media::ALL_MANIFESTS`), never the client's: a registry answers a narrower
//! `Accept` with another object, and a client must not decide what a tag is
//! pinned to, or make it look moved.

use std::time::Duration;

use crate::audit::{refuse, Subject};
use crate::cache::Recalled;
use crate::config::{IndexRule, Mode, OnTagMove};
use crate::error::Error;
use crate::metrics::{PolicyLabels, METRICS};
use crate::mirror::{refuse_unverifiable, Mirror, Pull};
use crate::oci::{media, Digest, ManifestRef};
use crate::pins::{MoveEvent, Pin, PinError, PinStore};
use crate::policy::{Policy, Verdict};
use crate::upstream::{Manifest, UpstreamClient};

type TagKey = (String, String, String);

/// The pin store and what this process has learnt about upstream since it
/// started. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct TagGuard {
    store: PinStore,
    /// Tags whose upstream moved away from their pin: `(registry, repo, tag)
    /// → (digest upstream serves, when)`. Filled by revalidation and, at
    /// start, from the stored move events.
    /// Keyed by tag, it holds `(pinned, seen)`: a move applies only to the
    /// pin it was seen against, so a move of a since forgotten pin (recorded
    /// late by a revalidation that was already running, or still held by
    /// another replica) never refuses the tag's new pin.
    moved: moka::sync::Cache<TagKey, Moved>,
    /// Pinned tags checked recently; an entry expires after the interval.
    revalidated: moka::sync::Cache<TagKey, ()>,
    /// `pin_revalidate_secs`; zero revalidates on every request.
    interval: Duration,
}

impl TagGuard {
    pub fn new(store: PinStore, interval: Duration) -> TagGuard {
        TagGuard {
            store,
            moved: moka::sync::Cache::builder().max_capacity(100_000).build(),
            revalidated: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(interval.max(Duration::from_millis(1)))
                .build(),
            interval,
        }
    }

    pub fn store(&self) -> &PinStore {
        &self.store
    }

    /// Forgets the pin of a tag, for a deliberate re-release, and what this
    /// process knew of its moves and revalidation: the next request pins the
    /// tag afresh. The move events stay in the store as history.
    pub async fn forget(&self, registry: &str, repo: &str, tag: &str) -> Result<bool, PinError> {
        let removed = self.store.forget(registry, repo, tag).await?;
        let key = (registry.to_string(), repo.to_string(), tag.to_string());
        self.moved.invalidate(&key);
        self.revalidated.invalidate(&key);
        Ok(removed)
    }

    /// Loads the moves recorded against the current pins into memory, so a
    /// moved tag is refused under `on_tag_move = "deny"` from the first
    /// request after a restart, not only once revalidation has seen it again.
    /// A tag that moved back is cleared by its next revalidation. Returns how
    /// many moved tags were loaded.
    pub async fn load_moves(&self) -> Result<usize, PinError> {
        let moved = self.store.list_moved().await?;
        for (pin, events) in &moved {
            // Events are oldest first: the last one is what upstream served last.
            if let Some(last) = events.last() {
                let key = (pin.registry.clone(), pin.repository.clone(), pin.tag.clone());
                self.moved.insert(key, Moved { pinned: pin.digest.clone(), seen: last.seen.clone() });
            }
        }
        Ok(moved.len())
    }

    /// The manifest and verdict for `tag` under `policy`, which pins it.
    ///
    /// A pinned tag needs nothing from upstream: while upstream is down it is
    /// served from its pin as long as its manifest and verdict are cached
    /// (an allow for up to `stale_if_error` past its TTL, see
    /// `Mirror::decide`). What upstream is needed for and cannot give, an
    /// unpinned tag's first resolution or a manifest no longer cached, is
    /// refused under an enforcing policy (`mirror::refuse_unverifiable`).
    pub async fn resolve(
        &self,
        mirror: &Mirror,
        policy: &Policy,
        pull: &Pull,
        tag: &str,
    ) -> Result<(Manifest, Recalled<Verdict>), Error> {
        self.resolve_pinned(mirror, policy, pull, tag).await.map_err(|e| {
            refuse_unverifiable(policy, crate::audit::Subject::request(&pull.registry, &pull.repo, &pull.reference), e)
        })
    }

    async fn resolve_pinned(
        &self,
        mirror: &Mirror,
        policy: &Policy,
        pull: &Pull,
        tag: &str,
    ) -> Result<(Manifest, Recalled<Verdict>), Error> {
        let (registry, repo) = (pull.registry.as_str(), pull.repo.as_str());
        let pin = match self.store.get(registry, repo, tag).await? {
            Some(pin) => pin,
            None => {
                // Resolved with every type we serve, never the client's Accept, so
                // the pin names the object the tag really points at.
                let m = mirror.resolve(pull, &pull.reference, media::ALL_MANIFESTS).await?;
                let verdict = mirror.decide(pull, policy, &m).await?;
                if !may_pin(policy, &m, &verdict.value) {
                    return Ok((m, verdict));
                }
                let ours = Pin {
                    registry: registry.into(),
                    repository: repo.into(),
                    tag: tag.into(),
                    digest: m.digest.clone(),
                    pinned_at: time::OffsetDateTime::now_utc().unix_timestamp(),
                    policy: policy.name.clone(),
                };
                // Durable before the response that relies on it is sent.
                let stored = self.store.pin(ours).await?;
                // Just resolved upstream: the next check is one interval away.
                self.revalidated.insert((registry.to_string(), repo.to_string(), tag.to_string()), ());
                if stored.digest == m.digest {
                    tracing::info!(target: "sigmirror::decision", %registry, %repo, %tag, digest = %stored.digest, policy = %policy.name, "pinned tag");
                    check_client_accepts(&pull.accept, &m, repo, tag)?;
                    return Ok((m, verdict));
                }
                // Another replica pinned first, to another digest: serve the winner.
                tracing::info!(
                    target: "sigmirror::decision", %registry, %repo, %tag, pinned = %stored.digest, seen = %m.digest,
                    "tag was pinned first by another replica; serving its pin"
                );
                stored
            }
        };
        self.revalidate_in_background(pull.up.clone(), pin.clone());
        let key = (registry.to_string(), repo.to_string(), tag.to_string());
        if let Some(moved) = self.moved.get(&key).filter(|m| m.pinned == pin.digest) {
            if policy.on_tag_move == OnTagMove::Deny {
                let mut subject = Subject::manifest(registry, repo, &pull.reference, &pin.digest);
                subject.name = format!("{registry}/{repo}:{tag}");
                return Err(refuse(Some(policy.name.clone()), tag_moved_reason(&pin, &moved.seen), subject));
            }
        }
        let m = mirror.resolve(pull, &ManifestRef::Digest(pin.digest.clone()), &pull.accept).await?;
        let verdict = mirror.decide(pull, policy, &m).await?;
        if verdict.value.is_allow() {
            check_client_accepts(&pull.accept, &m, repo, tag)?;
        }
        Ok((m, verdict))
    }

    /// Re-resolves a pinned tag upstream in the background, at most once per
    /// interval, and records a move when upstream now serves another digest.
    /// The request that triggers it is served from the pin without waiting.
    fn revalidate_in_background(&self, up: std::sync::Arc<UpstreamClient>, pin: Pin) {
        let key = (pin.registry.clone(), pin.repository.clone(), pin.tag.clone());
        if !self.interval.is_zero() && self.revalidated.contains_key(&key) {
            return;
        }
        self.revalidated.insert(key.clone(), ());
        let guard = self.clone();
        tokio::spawn(async move {
            let reference = ManifestRef::Tag(pin.tag.clone());
            // The same complete Accept the pin was made with: only then is
            // another digest a move and not a narrower answer.
            // A HEAD first: it does not count against upstream pull rate limits.
            let seen = match up.head_manifest(&pin.repository, &reference, media::ALL_MANIFESTS).await {
                Ok(Some(info)) => Ok(info.digest),
                Ok(None) => up.manifest(&pin.repository, &reference, media::ALL_MANIFESTS).await.map(|m| m.digest),
                Err(e) => Err(e),
            };
            let seen = match seen {
                Ok(d) => d,
                Err(e) => {
                    // Cannot tell; keep serving the pin and try again next interval.
                    tracing::debug!(tag = %pin.tag, repo = %pin.repository, detail = ?e.detail(), "pin revalidation failed: {e}");
                    return;
                }
            };
            if seen == pin.digest {
                guard.moved.invalidate(&key);
                return;
            }
            if guard.moved.get(&key).is_some_and(|m| m.pinned == pin.digest && m.seen == seen) {
                return; // already recorded this move
            }
            guard.record_move(key, &pin, seen).await;
        });
    }

    async fn record_move(&self, key: TagKey, pin: &Pin, seen: Digest) {
        let at = time::OffsetDateTime::now_utc().unix_timestamp();
        METRICS.tag_moves.get_or_create(&PolicyLabels { policy: pin.policy.clone() }).inc();
        tracing::warn!(
            target: "sigmirror::decision",
            registry = %pin.registry, repo = %pin.repository, tag = %pin.tag,
            pinned = %pin.digest, seen = %seen, policy = %pin.policy,
            "tag moved upstream: {}", tag_moved_reason(pin, &seen)
        );
        // Stored before it takes effect, so a refusal a client saw is one a
        // restart still makes (see `load_moves`).
        let ev = MoveEvent {
            registry: pin.registry.clone(),
            repository: pin.repository.clone(),
            tag: pin.tag.clone(),
            pinned: pin.digest.clone(),
            seen: seen.clone(),
            at,
            policy: pin.policy.clone(),
        };
        if let Err(e) = self.store.record_move(ev).await {
            tracing::error!("cannot record tag move: {e}");
        }
        self.moved.insert(key, Moved { pinned: pin.digest.clone(), seen });
    }
}

/// Upstream served `seen` for a tag pinned to `pinned`.
#[derive(Clone)]
struct Moved {
    pinned: Digest,
    seen: Digest,
}

/// The words of a tag-move refusal, in the log and the error body alike.
fn tag_moved_reason(pin: &Pin, seen: &Digest) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp(pin.pinned_at)
        .map(crate::verify::x509::format_time)
        .unwrap_or_else(|_| pin.pinned_at.to_string());
    format!("tag {} of {} was pinned to {} on {when}; upstream now serves {seen}", pin.tag, pin.repository, pin.digest)
}

/// Whether serving `m` for an immutable tag pins the tag to it.
///
/// A real verification pins. So does an index under `index = "children"`,
/// signed or not: it vouches for none of its children, but the tag must
/// still not move, or an unsigned index could later list another release's
/// signed children (an older, vulnerable one) under the same tag. An
/// audit-mode allow pins nothing: nothing was enforced.
fn may_pin(policy: &Policy, m: &Manifest, verdict: &Verdict) -> bool {
    let index_served = policy.index_rule == IndexRule::Children && media::is_index(&m.media_type);
    verdict.vouches() || (policy.mode == Mode::Enforce && verdict.is_allow() && index_served)
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
