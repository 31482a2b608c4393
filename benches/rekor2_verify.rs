//! What an attestation on the 2026 Sigstore log (Rekor v2, rekor-tiles) costs on a verdict cache
//! miss: the real sigstore-conformance bundle `tests/vectors/rekor2/rekor2-dsse-happy-path`
//! (keyless SLSA provenance v1 in a DSSE envelope, a Rekor v2 entry with its inclusion proof and
//! signed checkpoint, an RFC 3161 timestamp from the staging TSA; provenance in
//! `tests/vectors/rekor2/README.md`) through `policy::attestation::judge`, as a policy with
//! `[[policy.attestation]] predicate_type = "https://slsa.dev/provenance/v1"` and a condition
//! on the build type runs it: DSSE signature, checkpoint signature by the log key, inclusion
//! proof to the checkpoint's root, entry body against the envelope, the timestamp token and its
//! TSA chain, the Fulcio chain and identity at the timestamp, the statement's subject, the CEL
//! condition.
//!
//! Run: `cargo bench --bench rekor2_verify`
//! (quick: `cargo bench --bench rekor2_verify -- --warm-up-time 1 --measurement-time 3`).
//!
//! Measured on this 2-core VM (2026-12-02, quick settings, other builds sharing the machine;
//! criterion median [95% interval]):
//! - rekor2/judge_dsse_provenance_with_condition: 12.3 ms [11.96 .. 12.57 ms], load average ~7
//!   (the keyless v1 attestation of `attestation_verify` measured 6.8 ms on a quieter minute; the
//!   extra is the RFC 3161 token and its TSA chain, which a v1 entry's SET replaces)

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

use sigmirror::config::{Checker, Config};
use sigmirror::oci::Digest;
use sigmirror::policy::attestation::{judge, requirements};
use sigmirror::policy::evidence::{AttestationEvidence, Found};
use sigmirror::verify::attestation::Attestation;
use sigmirror::verify::cosign::CosignAuthority;

const VECTOR: &str = "rekor2-dsse-happy-path";
const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/\
                        .github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
/// sha256 of the artifact the statement is about (`tests/vectors/rekor2/a.txt`).
const SUBJECT: &str = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";
const CONDITION: &str =
    "predicate.buildDefinition.buildType == \"https://github.com/sigstore-conformance/rekor2-dsse-hashedrekord-regen\"";

fn rekor2(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rekor2");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r\"\nurl = \"http://127.0.0.1:1\"\n\
         dangerous_plain_http = true\n[[policy]]\nname = \"bench\"\nscope = [\"*\"]\n\
         [[policy.cosign_certificates]]\nsigstore_trusted_root = \"{VECTOR}/trusted_root.json\"\n\
         identity = {IDENTITY:?}\nissuer = {ISSUER:?}\n\
         [[policy.attestation]]\npredicate_type = \"https://slsa.dev/provenance/v1\"\ncondition = '{CONDITION}'\n"
    );
    let (_, mut section, mut checker) =
        Config::from_str(&text, Checker::new(&dir.join("sigmirror.toml"))).expect("toml");
    let p = section.policy.remove(0);
    let auths = CosignAuthority::from_policy(&p, &mut checker);
    let reqs = requirements(&p, &mut checker);
    assert!(checker.problems.is_empty(), "{:?}", checker.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let bytes = std::fs::read(dir.join(VECTOR).join("bundle.sigstore.json")).expect("vector");
    let found = Found::Present(vec![AttestationEvidence::Found(Attestation::Bundle(bytes))]);
    let digest: Digest = SUBJECT.parse().unwrap();
    // Inside the Fulcio certificate's ten minutes, a second after the timestamp's genTime.
    let now = time::macros::datetime!(2026-05-13 19:23:34 UTC);
    // Never measure a refusal.
    judge(&reqs, &auths, Some(&found), &digest, now).expect("the vector meets the condition");

    let mut g = c.benchmark_group("rekor2");
    g.bench_function("judge_dsse_provenance_with_condition", |b| {
        b.iter(|| judge(black_box(&reqs), &auths, Some(black_box(&found)), &digest, now).is_ok())
    });
    g.finish();
}

criterion_group!(benches, rekor2);
criterion_main!(benches);
