//! Notation verification micro-benchmarks: one real envelope of each format
//! verified end to end by `NotationVerifier::verify` at level `strict`.
//!
//! Run: `cargo bench --bench notation_verify`
//! (quick: `cargo bench --bench notation_verify -- --warm-up-time 1 --measurement-time 3`).
//!
//! - `notation/jws_ps384_2cert_chain`: notation-go's mock
//!   `tests/vectors/notation/notation-go/ca_valid_sig_env.json` (JWS, PS384,
//!   `x5c` leaf + root, scheme notary.x509), target
//!   `sha256:60043cf4…d74e`, docker v2 manifest, 528 bytes; trust store
//!   `ca:valid-trust-store` holding `truststore/ca/NotationTestRoot.pem`.
//! - `notation/cose_ps256_self_signed`: notation-go's `cose_signature.sig`
//!   (COSE_Sign1, PS256, self-signed `CN=alpine` leaf in `x5chain`), target
//!   `sha256:19dbd2e4…cef0`, OCI image manifest, 481 bytes; trust store
//!   `ca:alpine` holding that leaf (taken from the envelope in setup).
//!
//! Each iteration does the whole check: envelope parse, X.509 parse of the
//! chain, RSA-PSS verification, signed-attribute checks, chain validation,
//! payload binding, trust-store anchoring, identity, expiry, validity at
//! "now" (no TSA store, so no timestamp) and the offline revocation check.
//! Setup asserts that both verify cleanly, so the bench never measures a
//! refusal. "now" is fixed at 2025-06-01T00:00:00Z, as in the unit tests.
//!
//! Measured on this 2-core VM (2026-11-23, `--warm-up-time 1
//! --measurement-time 3`, criterion medians of a run with the machine idle;
//! in brackets, the medians of two earlier runs while other builds ran):
//! - notation/jws_ps384_2cert_chain:   728 µs [684 µs .. 867 µs]
//! - notation/cose_ps256_self_signed:  286 µs [293 µs .. 439 µs]
//!
//! The JWS case does more work: two RSA-3072 certificates to parse, and chain
//! validation checks the leaf's signature by the root, besides the envelope's
//! own PS384 signature. The COSE leaf is a single RSA-2048 certificate.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use coset::cbor::value::Value;
use coset::{CoseSign1, Label, TaggedCborSerializable};
use criterion::{criterion_group, criterion_main, Criterion};
use time::macros::datetime;
use time::OffsetDateTime;

use sigmirror::oci::Digest;
use sigmirror::verify::notation::{NotationVerifier, Outcome, Target, MEDIA_TYPE_COSE, MEDIA_TYPE_JWS};

const NOW: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);
const SCOPE: &str = "registry.example/team/app";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MOCK_DIGEST: &str = "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e";
const ALPINE_DIGEST: &str = "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/notation/notation-go")
}

fn read(name: &str) -> Vec<u8> {
    let p = vectors().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A verifier whose only statement (scope `*`, level strict, any identity)
/// trusts the `ca` store `store`, which holds `cert` (PEM or DER). The trust
/// store is read into memory by `from_parts`, so the tempdir can go after.
fn verifier(store: &str, file: &str, cert: &[u8]) -> NotationVerifier {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("truststore/x509/ca").join(store);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(file), cert).expect("write cert");
    let policy = format!(
        r#"{{"version":"1.0","trustPolicies":[{{"name":"bench","registryScopes":["*"],"signatureVerification":{{"level":"strict"}},"trustStores":["ca:{store}"],"trustedIdentities":["*"]}}]}}"#
    );
    NotationVerifier::from_parts(policy.as_bytes(), &dir.path().join("truststore"))
        .unwrap_or_else(|p| panic!("policy does not load: {p:?}"))
}

/// The DER of the first `x5chain` (label 33) certificate of a COSE_Sign1.
fn cose_leaf(env: &[u8]) -> Vec<u8> {
    let msg = CoseSign1::from_tagged_slice(env).expect("COSE_Sign1");
    let (_, v) = msg
        .unprotected
        .rest
        .iter()
        .chain(&msg.protected.header.rest)
        .find(|(l, _)| *l == Label::Int(33))
        .expect("x5chain");
    match v {
        Value::Bytes(der) => der.clone(),
        Value::Array(a) => match a.first() {
            Some(Value::Bytes(der)) => der.clone(),
            other => panic!("x5chain[0] is {other:?}"),
        },
        other => panic!("x5chain is {other:?}"),
    }
}

#[track_caller]
fn assert_verified_clean(o: &Outcome) {
    assert_eq!(o, &Outcome::Verified { logged: Vec::new() });
}

fn notation(c: &mut Criterion) {
    let mut g = c.benchmark_group("notation");

    let jws = read("ca_valid_sig_env.json");
    let jws_verifier =
        verifier("valid-trust-store", "NotationTestRoot.pem", &read("truststore/ca/NotationTestRoot.pem"));
    let mock_digest: Digest = MOCK_DIGEST.parse().expect("digest");
    let jws_target = Target { registry_scope: SCOPE, digest: &mock_digest, media_type: DOCKER_V2, size: 528 };
    assert_verified_clean(&jws_verifier.verify(&jws_target, MEDIA_TYPE_JWS, &jws, NOW));
    g.bench_function("jws_ps384_2cert_chain", |b| {
        b.iter(|| jws_verifier.verify(black_box(&jws_target), MEDIA_TYPE_JWS, black_box(&jws), NOW))
    });

    let cose = read("cose_signature.sig");
    let cose_verifier = verifier("alpine", "alpine.crt", &cose_leaf(&cose));
    let manifest = read(&format!("oci-layout/blobs/sha256/{}", ALPINE_DIGEST.trim_start_matches("sha256:")));
    let alpine_digest = Digest::of(&manifest);
    assert_eq!(alpine_digest.as_str(), ALPINE_DIGEST);
    assert_eq!(manifest.len(), 481);
    let cose_target =
        Target { registry_scope: SCOPE, digest: &alpine_digest, media_type: OCI_MANIFEST, size: manifest.len() as u64 };
    assert_verified_clean(&cose_verifier.verify(&cose_target, MEDIA_TYPE_COSE, &cose, NOW));
    g.bench_function("cose_ps256_self_signed", |b| {
        b.iter(|| cose_verifier.verify(black_box(&cose_target), MEDIA_TYPE_COSE, black_box(&cose), NOW))
    });

    g.finish();
}

criterion_group!(benches, notation);
criterion_main!(benches);
