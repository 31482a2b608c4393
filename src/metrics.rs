//! Prometheus metrics, served at `GET /metrics`.
//!
//! Names follow `sigmirror_<thing>_<unit>_total`. Labels come from bounded
//! sets only (policy names and registries from the config, fixed kinds and
//! classes), never a digest, a repository or an error string, so cardinality
//! cannot grow with traffic. The README's "Alert on the metrics" lists them.
//!
//! One process-wide set: metrics must survive config reloads, and every
//! counter has exactly one meaning per process.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// base, manifest, blob, tags, referrers, metrics, health or other.
    pub route: &'static str,
    /// 2xx, 3xx, 4xx or 5xx.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow, deny or audit-deny (what an audit-mode policy let through).
    pub decision: &'static str,
    /// The policy name, or "-" when no policy matched.
    pub policy: String,
    /// cosign, notation or none for allows; "-" for denials.
    pub scheme: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchemeLabels {
    /// What the policy verifies: cosign, notation, none, or "-" for both.
    pub scheme: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub registry: String,
    /// manifest, manifest_head, blob, referrers, tags or auth.
    pub kind: &'static str,
    /// 2xx, 3xx, 4xx, 5xx, or error when no answer came (timeout, refused
    /// connection, TLS failure, refused redirect).
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamKindLabels {
    pub registry: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// manifest, verdict, blob or tag.
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// "ok" or "error".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StaleLabels {
    /// What answered from cache while upstream was down: tag or verdict.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The `[limits]` key that was hit: max_connections,
    /// header_read_timeout_secs, max_header_bytes, idle_timeout_secs,
    /// manifest_timeout_secs or max_upstream_fetches.
    pub limit: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub in_flight: Gauge,
    pub decisions: Family<DecisionLabels, Counter>,
    pub verifications: Family<PolicyLabels, Counter>,
    pub verification_duration: Histograms<SchemeLabels>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub upstream_duration: Histograms<UpstreamKindLabels>,
    pub cache_hits: Family<CacheLabels, Counter>,
    pub cache_misses: Family<CacheLabels, Counter>,
    pub tag_moves: Family<PolicyLabels, Counter>,
    pub blob_digest_mismatches: Counter,
    /// The disk blob cache: writes that failed (disk full, unwritable), files
    /// found corrupt before serving, and files evicted for the size bound.
    pub blob_cache_write_errors: Counter,
    pub blob_cache_corrupt: Counter,
    pub blob_cache_evictions: Counter,
    pub build_info: Family<BuildLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_stale: Gauge,
    pub stale_answers: Family<StaleLabels, Counter>,
    pub limit_hits: Family<LimitLabels, Counter>,
    /// Tasks alive on the runtime, read when metrics are encoded: a leak of
    /// connections, downloads or timers shows here before it shows in RSS.
    pub tasks: Gauge,
}

/// Seconds, from a cached verdict's recheck (milliseconds) to a slow
/// upstream's 30 s request timeout.
fn duration_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sigmirror");
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register("requests", "Client requests answered, by route and status class", requests.clone());
    let in_flight = Gauge::default();
    registry.register("in_flight_requests", "Client requests being answered now", in_flight.clone());
    let decisions = Family::<DecisionLabels, Counter>::default();
    registry.register(
        "decisions",
        "Decisions (one per audit log line) by outcome, policy and signature scheme",
        decisions.clone(),
    );
    let verifications = Family::<PolicyLabels, Counter>::default();
    registry.register("verifications", "Signature verifications run (verdict cache misses)", verifications.clone());
    let verification_duration: Histograms<SchemeLabels> = Family::new_with_constructor(duration_histogram);
    registry.register(
        "verification_duration_seconds",
        "Time to gather and verify a manifest's signatures, by the scheme the policy verifies",
        verification_duration.clone(),
    );
    let upstream_requests = Family::<UpstreamLabels, Counter>::default();
    registry.register(
        "upstream_requests",
        "HTTP requests sent to upstream registries, by kind and answer",
        upstream_requests.clone(),
    );
    let upstream_duration: Histograms<UpstreamKindLabels> = Family::new_with_constructor(duration_histogram);
    registry.register(
        "upstream_request_duration_seconds",
        "Time from sending an upstream request to its response headers (or failure)",
        upstream_duration.clone(),
    );
    let cache_hits = Family::<CacheLabels, Counter>::default();
    registry.register("cache_hits", "Lookups answered from a cache", cache_hits.clone());
    let cache_misses = Family::<CacheLabels, Counter>::default();
    registry.register("cache_misses", "Lookups that had to compute or fetch", cache_misses.clone());
    let tag_moves = Family::<PolicyLabels, Counter>::default();
    registry.register("tag_moves", "Pinned tags seen to move upstream", tag_moves.clone());
    let blob_digest_mismatches = Counter::default();
    registry.register(
        "blob_digest_mismatches",
        "Blob responses aborted because upstream bytes did not match the digest",
        blob_digest_mismatches.clone(),
    );
    let blob_cache_write_errors = Counter::default();
    registry.register(
        "blob_cache_write_errors",
        "Blobs streamed without caching because the cache could not be written",
        blob_cache_write_errors.clone(),
    );
    let blob_cache_corrupt = Counter::default();
    registry.register(
        "blob_cache_corrupt",
        "Cached blob files that no longer matched their digest and were deleted",
        blob_cache_corrupt.clone(),
    );
    let blob_cache_evictions = Counter::default();
    registry.register(
        "blob_cache_evictions",
        "Cached blobs evicted to stay under blob_max_bytes",
        blob_cache_evictions.clone(),
    );
    let build_info = Family::<BuildLabels, Gauge>::default();
    registry.register("build_info", "Always 1; the version label names the running build", build_info.clone());
    build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
    let config_reloads = Family::<ResultLabels, Counter>::default();
    registry.register("config_reloads", "Config reloads by result", config_reloads.clone());
    let config_stale = Gauge::default();
    registry.register(
        "config_stale",
        "1 when the last reload was rejected and an older config is in force",
        config_stale.clone(),
    );
    let stale_answers = Family::<StaleLabels, Counter>::default();
    registry.register(
        "stale_answers",
        "Answers served from cache while upstream was down (stale_if_error_secs)",
        stale_answers.clone(),
    );
    let limit_hits = Family::<LimitLabels, Counter>::default();
    registry.register(
        "limit_hits",
        "Connections and requests cut short or refused by a [limits] bound, by limit",
        limit_hits.clone(),
    );
    let tasks = Gauge::default();
    registry.register("tasks", "Tokio tasks alive in the serving runtime, when metrics were read", tasks.clone());
    Metrics {
        registry,
        requests,
        in_flight,
        decisions,
        verifications,
        verification_duration,
        upstream_requests,
        upstream_duration,
        cache_hits,
        cache_misses,
        tag_moves,
        blob_digest_mismatches,
        blob_cache_write_errors,
        blob_cache_corrupt,
        blob_cache_evictions,
        build_info,
        config_reloads,
        config_stale,
        stale_answers,
        limit_hits,
        tasks,
    }
});

/// `2xx` … `5xx` for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        // 1xx never reach a final answer here; anything else is upstream's oddity.
        _ => "error",
    }
}

impl Metrics {
    /// One upstream HTTP exchange: `status` is `None` when no answer came.
    pub fn upstream(&self, registry: &str, kind: &'static str, status: Option<u16>, took: Duration) {
        let status_class = status.map_or("error", status_class);
        self.upstream_requests
            .get_or_create(&UpstreamLabels { registry: registry.to_string(), kind, status_class })
            .inc();
        self.upstream_duration
            .get_or_create(&UpstreamKindLabels { registry: registry.to_string(), kind })
            .observe(took.as_secs_f64());
    }

    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let family = if hit { &self.cache_hits } else { &self.cache_misses };
        family.get_or_create(&CacheLabels { cache }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts a client request in flight until dropped, whatever path ends it.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        METRICS.in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_answer() {
        assert_eq!(
            [200, 204, 307, 404, 429, 500, 503, 99].map(status_class),
            ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx", "error"]
        );
    }

    #[test]
    fn build_info_and_the_histograms_are_exposed_under_the_contract_names() {
        METRICS.upstream("metrics.test", "auth", None, Duration::from_millis(3));
        let text = METRICS.encode();
        for want in [
            &format!("sigmirror_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
            "sigmirror_upstream_requests_total{registry=\"metrics.test\",kind=\"auth\",status_class=\"error\"} 1",
            "sigmirror_upstream_request_duration_seconds_bucket{le=\"0.005\",registry=\"metrics.test\",kind=\"auth\"} 1",
            "# TYPE sigmirror_verification_duration_seconds histogram",
            "# TYPE sigmirror_in_flight_requests gauge",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }
}
