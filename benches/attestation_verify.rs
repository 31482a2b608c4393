//! Attestation micro-benchmarks: what one `[[policy.attestation]]` with a condition costs on a
//! verdict cache miss, beside verifying an image signature bundle of the same kind.
//!
//! Run: `cargo bench --bench attestation_verify`
//! (quick: `cargo bench --bench attestation_verify -- --warm-up-time 1 --measurement-time 3`).
//!
//! - `attestation/judge_kat_with_condition`: the real `cosign attest` bundle
//!   (`tests/vectors/cosign/cosign/oci-attestation.sigstore.json`, keyless, Rekor `dsse` entry)
//!   through `policy::attestation::judge`: bundle parse, DSSE PAE signature with the Fulcio
//!   leaf's key, Rekor SET, inclusion proof and checkpoint, certificate chain, identity and issuer
//!   at the log time, the statement (subject digest), then the CEL condition
//!   `predicate.Data.contains("foo") && now - timestamp(predicate.Timestamp) < duration("168h")`.
//! - `attestation/judge_att_layer_with_rekor`: the same envelope and Rekor entry as a
//!   `sha256-<hex>.att` layer (`tests/vectors/att/cosign-dsse-v001`): envelope parse, PAE
//!   signature, the cosign bundle's SET and the `dsse` body bound to the layer bytes, the
//!   certificate at the log time, the statement and the condition (no inclusion proof: the
//!   annotation carries none).
//! - `attestation/condition_only`: that condition alone, over the parsed predicate (JSON to CEL
//!   values, a fresh CEL context, evaluation).
//! - `signature/verify_bundle_kat`: for comparison, the real cosign v3 *signature* bundle
//!   (`tests/vectors/cosign/sigstore-rs/bundle_v03.json`, keyless, same checks but no condition)
//!   through `verify::bundle::verify_bundle`.
//!
//! "now" is fixed (2025-03-01 for the attestation, 2026-11-23 for the signature); nothing reads
//! the clock.
//!
//! Measured on this 2-core VM (2026-12-02, `--warm-up-time 1 --measurement-time 3`, load
//! average 6 from other builds sharing the machine; criterion medians [95% interval]):
//! - attestation/judge_kat_with_condition:  6.80 ms [6.54 .. 7.08 ms]
//! - attestation/condition_only:            23.0 µs [20.8 .. 25.8 µs]
//! - signature/verify_bundle_kat:           7.83 ms [7.25 .. 8.49 ms]
//! - (cosign_verify's cosign/verify_layer, a keyed `.sig` signature, same day: 451 µs)
//!
//! Before conditions ran on their own 64 MiB stack (`stacker`), condition_only was 4.6 µs and
//! judge 4.6 ms in a quieter minute: the extra ~18 µs is the stack's mmap per evaluation, the
//! price of no condition ever overflowing a worker's stack. Either way an attestation with its
//! condition costs what a keyless signature bundle costs: the
//! certificate chain and the Rekor proofs dominate, and the CEL condition is well under 1% of it.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use time::OffsetDateTime;

use sigmirror::config::{Checker, Config};
use sigmirror::oci::Digest;
use sigmirror::policy::attestation::{judge, requirements};
use sigmirror::policy::evidence::{AttestationEvidence, Found};
use sigmirror::verify::attestation::Attestation;
use sigmirror::verify::bundle::verify_bundle;
use sigmirror::verify::cosign::{CosignAuthority, Expectation};

const CONDITION: &str = "predicate.Data.contains(\"foo\") && now - timestamp(predicate.Timestamp) < duration(\"168h\")";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cosign")
}

/// One policy, loaded the way the config loader loads it, trusting `identity` and `issuer`
/// through the public-good trusted root, with `extra` TOML after it.
fn policy(identity: &str, issuer: &str, extra: &str) -> (sigmirror::config::PolicyConfig, Checker) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r\"\nurl = \"http://127.0.0.1:1\"\n\
         dangerous_plain_http = true\n[[policy]]\nname = \"bench\"\nscope = [\"*\"]\n\
         [[policy.cosign_certificates]]\nsigstore_trusted_root = \"sigstore-rs/trusted_root.json\"\n\
         identity = {identity:?}\nissuer = {issuer:?}\n{extra}"
    );
    let (_, mut section, c) = Config::from_str(&text, Checker::new(&vectors().join("sigmirror.toml"))).expect("toml");
    (section.policy.remove(0), c)
}

fn attestation(c: &mut Criterion) {
    let extra = format!("[[policy.attestation]]\npredicate_type = \"custom\"\ncondition = '{CONDITION}'\n");
    let (p, mut checker) = policy("cody@soyland.com", "https://github.com/login/oauth", &extra);
    let auths = CosignAuthority::from_policy(&p, &mut checker);
    let reqs = requirements(&p, &mut checker);
    assert!(checker.problems.is_empty(), "{:?}", checker.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let bytes = std::fs::read(vectors().join("cosign/oci-attestation.sigstore.json")).expect("vector");
    let found = Found::Present(vec![AttestationEvidence::Found(Attestation::Bundle(bytes))]);
    let digest: Digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4".parse().unwrap();
    let now = OffsetDateTime::from_unix_timestamp(1_740_787_200).expect("2025-03-01");
    // Never measure a refusal.
    judge(&reqs, &auths, Some(&found), &digest, now).expect("the vector meets the condition");

    let mut g = c.benchmark_group("attestation");
    g.bench_function("judge_kat_with_condition", |b| {
        b.iter(|| judge(black_box(&reqs), &auths, Some(black_box(&found)), &digest, now).is_ok())
    });
    // The same envelope and Rekor entry as a `.att` layer (tests/vectors/att/cosign-dsse-v001).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/att/cosign-dsse-v001");
    let envelope = std::fs::read(dir.join("envelope.json")).expect("vector");
    let annotations = serde_json::from_slice(&std::fs::read(dir.join("annotations.json")).expect("vector")).unwrap();
    let layer = Found::Present(vec![AttestationEvidence::Found(Attestation::Layer { envelope, annotations })]);
    judge(&reqs, &auths, Some(&layer), &digest, now).expect("the layer meets the condition");
    g.bench_function("judge_att_layer_with_rekor", |b| {
        b.iter(|| judge(black_box(&reqs), &auths, Some(black_box(&layer)), &digest, now).is_ok())
    });
    let cond = reqs[0].condition.as_ref().expect("condition");
    let predicate = serde_json::json!({"Data": "{\"foo\": \"bar\"}\n", "Timestamp": "2025-02-28T19:18:11Z"});
    assert_eq!(cond.evaluate(&predicate, now), Ok(true));
    g.bench_function("condition_only", |b| b.iter(|| cond.evaluate(black_box(&predicate), now)));
    g.finish();

    let identity =
        "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    let (p, mut checker) = policy(identity, "https://token.actions.githubusercontent.com", "");
    let auth = CosignAuthority::from_policy(&p, &mut checker).remove(0);
    let bundle = std::fs::read(vectors().join("sigstore-rs/bundle_v03.json")).expect("vector");
    let digest: Digest = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172".parse().unwrap();
    let exp = Expectation {
        digest: &digest,
        docker_reference: None,
        now: OffsetDateTime::from_unix_timestamp(1_795_392_000).expect("now"),
    };
    assert_eq!(verify_bundle(&auth, &bundle, &exp), Ok(()));
    let mut g = c.benchmark_group("signature");
    g.bench_function("verify_bundle_kat", |b| b.iter(|| verify_bundle(&auth, black_box(&bundle), &exp).is_ok()));
    g.finish();
}

criterion_group!(benches, attestation);
criterion_main!(benches);
