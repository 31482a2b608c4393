//! Cosign verification micro-benchmarks: the cost of a cache miss (one keyed
//! signature verified end to end) against a cache hit (a warm verdict).
//!
//! Run: `cargo bench --bench cosign_verify`
//! (quick: `cargo bench --bench cosign_verify -- --warm-up-time 1 --measurement-time 3`).
//!
//! - `cosign/verify_layer`: the real containers/image vector
//!   `tests/vectors/cosign/containers-image/dir-img-cosign-valid/signature-1`
//!   against `cosign.pub`, through `verify_layer`: media type and size checks,
//!   the signature annotation's base64, ECDSA P-256/SHA-256 verification of
//!   the (high-S) signature over the payload, then the simple-signing payload
//!   claims (JSON parse, type, manifest digest). The layer is parsed once in
//!   setup.
//! - `cosign/parse_and_verify_layer`: the same, plus reading the layer from the
//!   `\x00sigstore-json` file bytes (JSON + base64 payload) on every iteration.
//! - `cache/get_or_verify_warm`: `VerdictCache::get_or_verify` on a key whose
//!   allow verdict is already cached (the steady-state path of a pull), on a
//!   current-thread tokio runtime. Each iteration clones the key (two short
//!   strings and a digest), as a request builds its own key.
//!
//! "now" is fixed at 2026-11-23T00:00:00Z; nothing reads the clock.
//!
//! Measured on this 2-core VM (2026-11-23, `--warm-up-time 1
//! --measurement-time 3`, criterion medians of a run with the machine idle;
//! in brackets, the medians of two earlier runs while other builds ran):
//! - cosign/verify_layer:            352 µs  [334 µs .. 422 µs]
//! - cosign/parse_and_verify_layer:  363 µs  [334 µs .. 373 µs]
//! - cache/get_or_verify_warm:       0.53 µs [0.43 µs .. 0.74 µs]
//!
//! So a warm verdict is ~650x cheaper than verifying one keyed signature, and
//! reading the layer from its file adds only ~10 µs to the verification.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use time::OffsetDateTime;

use sigmirror::cache::{VerdictCache, VerdictKey};
use sigmirror::config::{Checker, Config};
use sigmirror::oci::Digest;
use sigmirror::policy::Verdict;
use sigmirror::upstream::UpstreamError;
use sigmirror::verify::cosign::{verify_layer, CosignAuthority, Expectation, SignatureLayer};

/// 2026-11-23T00:00:00Z, the same fixed "now" as the unit tests.
const NOW: i64 = 1_795_392_000;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cosign/containers-image")
}

/// The `cosign.pub` authority, built the way the config loader builds it.
/// The key file is read relative to the directory of the (nonexistent)
/// config path the `Checker` is given.
fn authority() -> CosignAuthority {
    let text =
        "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r\"\nurl = \"http://127.0.0.1:1\"\ndangerous_plain_http = true\n\
                [[policy]]\nname = \"bench\"\nscope = [\"*\"]\ncosign_keys = [\"cosign.pub\"]\n";
    let (_, section, mut c) =
        Config::from_str(text, Checker::new(&vectors().join("sigmirror.toml"))).expect("config toml");
    let mut auths = CosignAuthority::from_policy(&section.policy[0], &mut c);
    assert!(c.problems.is_empty(), "{:?}", c.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    assert_eq!(auths.len(), 1);
    auths.remove(0)
}

fn cosign(c: &mut Criterion) {
    let dir = vectors().join("dir-img-cosign-valid");
    let file = std::fs::read(dir.join("signature-1")).expect("signature-1");
    let digest = Digest::of(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"));
    let layer = SignatureLayer::from_sigstore_json_file(&file).expect("layer");
    let auth = authority();
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("now");
    let exp = Expectation { digest: &digest, docker_reference: None, now };
    // Never measure a refusal.
    assert_eq!(verify_layer(&auth, &layer, &exp), Ok(()));

    let mut g = c.benchmark_group("cosign");
    g.bench_function("verify_layer", |b| {
        b.iter(|| verify_layer(black_box(&auth), black_box(&layer), black_box(&exp)).expect("verifies"))
    });
    g.bench_function("parse_and_verify_layer", |b| {
        b.iter(|| {
            let layer = SignatureLayer::from_sigstore_json_file(black_box(&file)).expect("layer");
            verify_layer(&auth, &layer, black_box(&exp)).expect("verifies")
        })
    });
    g.finish();
}

/// The verification a warm key must never run again.
async fn must_not_run() -> Result<Verdict, UpstreamError> {
    panic!("the warm key was verified again: the bench would measure a miss")
}

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cache = VerdictCache::new(Duration::from_secs(3600), Duration::from_secs(30));
    let key = VerdictKey {
        registry: "registry.example".into(),
        repo: "team/app".into(),
        digest: Digest::of(b"bench manifest"),
        policy_fingerprint: [7; 32],
    };
    let allow = Verdict::Allow {
        policy: "bench".into(),
        by: "key cosign.pub".into(),
        vouches: true,
        scheme: sigmirror::policy::Scheme::Cosign,
        signer: None,
        would_refuse: None,
    };
    let first = rt.block_on(cache.get_or_verify(key.clone(), || async { Ok(allow.clone()) })).expect("first verify");
    assert!(first.value.is_allow());
    let warm = rt.block_on(cache.get_or_verify(key.clone(), must_not_run)).expect("warm hit");
    assert_eq!((warm.value, warm.cached), (allow, true));

    c.bench_function("cache/get_or_verify_warm", |b| {
        b.to_async(&rt).iter(|| async {
            let v = cache.get_or_verify(black_box(key.clone()), must_not_run).await.expect("warm hit");
            black_box(v)
        })
    });
}

criterion_group!(benches, cosign, cache);
criterion_main!(benches);
