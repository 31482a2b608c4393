//! Prometheus metrics, served at `GET /metrics`.
//!
//! Names follow `sigmirror_<thing>_total`. Labels come from bounded sets only
//! (policy names and registries from the config, fixed kinds), never a
//! digest, a repository or an error string, so cardinality cannot grow with
//! traffic.
//!
//! One process-wide set: metrics must survive config reloads, and every
//! counter has exactly one meaning per process.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// "allow" or "deny".
    pub decision: &'static str,
    /// The policy name, or "-" when no policy matched.
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub registry: String,
    /// manifest, manifest_head, blob, referrers, tags or auth.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StaleLabels {
    /// What answered from cache while upstream was down: tag or verdict.
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub verifications: Family<PolicyLabels, Counter>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub tag_moves: Family<PolicyLabels, Counter>,
    pub blob_digest_mismatches: Counter,
    pub stale_answers: Family<StaleLabels, Counter>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sigmirror");
    let decisions = Family::<DecisionLabels, Counter>::default();
    registry.register("decisions", "Manifest decisions by outcome and policy", decisions.clone());
    let verifications = Family::<PolicyLabels, Counter>::default();
    registry.register("verifications", "Signature verifications run (verdict cache misses)", verifications.clone());
    let upstream_requests = Family::<UpstreamLabels, Counter>::default();
    registry.register("upstream_requests", "Requests sent to upstream registries", upstream_requests.clone());
    let tag_moves = Family::<PolicyLabels, Counter>::default();
    registry.register("tag_moves", "Pinned tags seen to move upstream", tag_moves.clone());
    let blob_digest_mismatches = Counter::default();
    registry.register(
        "blob_digest_mismatches",
        "Blob responses aborted because upstream bytes did not match the digest",
        blob_digest_mismatches.clone(),
    );
    let stale_answers = Family::<StaleLabels, Counter>::default();
    registry.register(
        "stale_answers",
        "Answers served from cache while upstream was down (stale_if_error_secs)",
        stale_answers.clone(),
    );
    Metrics { registry, decisions, verifications, upstream_requests, tag_moves, blob_digest_mismatches, stale_answers }
});

impl Metrics {
    pub fn upstream(&self, registry: &str, kind: &'static str) {
        self.upstream_requests.get_or_create(&UpstreamLabels { registry: registry.to_string(), kind }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
