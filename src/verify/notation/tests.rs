//! Known-answer tests against real notation envelopes (tests/vectors/notation,
//! see its README for where each came from and why each outcome is
//! expected), and a refusal matrix over envelopes we sign ourselves with
//! rcgen certificates. Every test fixes "now"; none reads the clock.

use std::path::{Path, PathBuf};

use base64::Engine;
use p256::ecdsa::signature::Signer;
use time::macros::datetime;
use time::OffsetDateTime;

use super::*;
use crate::oci::Digest;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/notation")
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = vectors().join(p);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const SCOPE: &str = "registry.example/team/app";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A trust store directory and a trust policy with one global statement.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }

    /// Puts `der_or_pem` into `x509/<kind>/<name>/<file>`.
    fn cert(self, kind: &str, name: &str, file: &str, bytes: &[u8]) -> Fixture {
        let d = self.dir.path().join("truststore/x509").join(kind).join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), bytes).unwrap();
        self
    }

    fn verifier(&self, policy: &str) -> NotationVerifier {
        NotationVerifier::from_parts(policy.as_bytes(), &self.dir.path().join("truststore"))
            .unwrap_or_else(|p| panic!("policy does not load: {p:?}"))
    }
}

/// One global statement.
fn policy(level: &str, stores: &[&str], extra: &str) -> String {
    let stores: Vec<String> = stores.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"version":"1.0","trustPolicies":[{{"name":"test","registryScopes":["*"],"signatureVerification":{{"level":"{level}"{extra}}},"trustStores":[{}],"trustedIdentities":["*"]}}]}}"#,
        stores.join(",")
    )
}

fn verify_at(
    v: &NotationVerifier,
    media_type: &str,
    env: &[u8],
    digest: &str,
    artifact_type: &str,
    size: u64,
    now: OffsetDateTime,
) -> Outcome {
    let digest: Digest = digest.parse().unwrap();
    v.verify(&Target { registry_scope: SCOPE, digest: &digest, media_type: artifact_type, size }, media_type, env, now)
}

#[track_caller]
fn assert_verified(o: &Outcome) -> Vec<String> {
    match o {
        Outcome::Verified { logged } => logged.clone(),
        other => panic!("expected Verified, got {other:?}"),
    }
}

#[track_caller]
fn assert_verified_clean(o: &Outcome) {
    let logged = assert_verified(o);
    assert!(logged.is_empty(), "unexpected logged failures: {logged:?}");
}

#[track_caller]
fn assert_refused(o: &Outcome, wants: &[&str]) {
    match o {
        Outcome::Refused(r) => {
            for w in wants {
                assert!(r.contains(w), "refusal {r:?} does not contain {w:?}");
            }
        }
        other => panic!("expected Refused containing {wants:?}, got {other:?}"),
    }
}

/// DER of an envelope's `x5c[i]` / `x5chain[i]` (negative from the end).
fn chain_cert(media_type: &str, env: &[u8], i: isize) -> Vec<u8> {
    let e = if media_type == MEDIA_TYPE_JWS { jws::parse(env) } else { cose::parse(env) }.unwrap();
    let idx = if i < 0 { (e.chain.len() as isize + i) as usize } else { i as usize };
    e.chain[idx].clone()
}

/// The notation signatures in an OCI layout: manifests listed in index.json
/// (directly, or through a referrers tag index) that have a subject; for
/// each, the subject descriptor and the single layer's media type and blob.
fn layout_signatures(layout: &str) -> Vec<(serde_json::Value, String, Vec<u8>)> {
    let root = vectors().join("notation-cli-e2e").join(layout);
    let blob = |d: &str| std::fs::read(root.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let b: serde_json::Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        if m["mediaType"] == "application/vnd.oci.image.index.v1+json" {
            for r in b["manifests"].as_array().unwrap() {
                manifests.push(serde_json::from_slice(&blob(r["digest"].as_str().unwrap())).unwrap());
            }
        } else {
            manifests.push(b);
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for m in manifests {
        if m.get("subject").is_none() {
            continue;
        }
        let layer = &m["layers"][0];
        let d = layer["digest"].as_str().unwrap().to_string();
        if seen.contains(&d) {
            continue;
        }
        seen.push(d.clone());
        out.push((m["subject"].clone(), layer["mediaType"].as_str().unwrap().to_string(), blob(&d)));
    }
    out
}

/// The one signature in an e2e layout, verified against its subject.
fn e2e(layout: &str, v: &NotationVerifier, now: OffsetDateTime) -> Outcome {
    let sigs = layout_signatures(layout);
    assert_eq!(sigs.len(), 1, "{layout} should hold one signature");
    let (subject, mt, env) = &sigs[0];
    verify_at(
        v,
        mt,
        env,
        subject["digest"].as_str().unwrap(),
        subject["mediaType"].as_str().unwrap(),
        subject["size"].as_u64().unwrap(),
        now,
    )
}

const E2E_NOW: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);

// ---------------------------------------------------------------------------
// notation CLI e2e layouts

#[test]
fn the_e2e_valid_signature_verifies_at_strict_with_e2e_crt() {
    let f = Fixture::new().cert("ca", "e2e", "e2e.crt", &read("notation-cli-e2e/e2e.crt"));
    let sigs = layout_signatures("e2e-valid-signature");
    assert_eq!(sigs[0].0["digest"], "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9");
    assert_eq!(sigs[0].1, MEDIA_TYPE_JWS);
    assert_verified_clean(&e2e("e2e-valid-signature", &f.verifier(&policy("strict", &["ca:e2e"], "")), E2E_NOW));
}

#[test]
fn the_e2e_valid_signature_is_refused_for_authenticity_when_only_new_e2e_crt_is_trusted() {
    let f = Fixture::new().cert("ca", "e2e", "new_e2e.crt", &read("notation-cli-e2e/new_e2e.crt"));
    for level in ["strict", "permissive"] {
        let o = e2e("e2e-valid-signature", &f.verifier(&policy(level, &["ca:e2e"], "")), E2E_NOW);
        assert_refused(
            &o,
            &["notation: authenticity validation failed: certificate chain does not reach trust store ca:e2e"],
        );
    }
    // audit only logs authenticity
    let logged = assert_verified(&e2e("e2e-valid-signature", &f.verifier(&policy("audit", &["ca:e2e"], "")), E2E_NOW));
    assert!(logged[0].contains("authenticity validation failed (logged only"), "{logged:?}");
}

#[test]
fn the_e2e_expired_signature_is_refused_at_strict_and_only_logged_at_permissive() {
    let f = Fixture::new().cert("ca", "e2e", "e2e.crt", &read("notation-cli-e2e/e2e.crt"));
    let o = e2e("e2e-expired-signature", &f.verifier(&policy("strict", &["ca:e2e"], "")), E2E_NOW);
    assert_refused(&o, &["notation: expiry validation failed: signature expired at 2023-06-27T05:21:21Z"]);
    let logged =
        assert_verified(&e2e("e2e-expired-signature", &f.verifier(&policy("permissive", &["ca:e2e"], "")), E2E_NOW));
    assert_eq!(logged.len(), 1);
    assert!(logged[0].contains("expiry validation failed (logged only; statement \"test\" at level permissive): signature expired at 2023-06-27T05:21:21Z"), "{logged:?}");
    // Before its expiry it verifies cleanly at strict.
    assert_verified_clean(&e2e(
        "e2e-expired-signature",
        &f.verifier(&policy("strict", &["ca:e2e"], "")),
        datetime!(2023-06-27 05:21:00 UTC),
    ));
}

#[test]
fn the_e2e_invalid_signature_is_an_integrity_failure_at_strict_and_permissive() {
    let f = Fixture::new().cert("ca", "e2e", "e2e.crt", &read("notation-cli-e2e/e2e.crt"));
    for level in ["strict", "permissive", "audit"] {
        let v = f.verifier(&policy(level, &["ca:e2e"], ""));
        let o = e2e("e2e-invalid-signature", &v, E2E_NOW);
        assert_refused(
            &o,
            &["notation: integrity validation failed: envelope media type \"application/vnd.oci.image.layer.v1.tar\""],
        );
        // Even read as a JWS, "invalid signature\n" is not one.
        let (s, _, env) = &layout_signatures("e2e-invalid-signature")[0];
        assert_eq!(env.as_slice(), b"invalid signature\n");
        let o = verify_at(&v, MEDIA_TYPE_JWS, env, s["digest"].as_str().unwrap(), OCI_MANIFEST, 517, E2E_NOW);
        assert_refused(&o, &["notation: integrity validation failed: the JWS envelope is not valid JSON"]);
    }
}

#[test]
fn the_e2e_signature_with_an_expired_certificate_fails_authentic_timestamp_at_strict_and_is_logged_at_permissive() {
    let f = Fixture::new().cert("ca", "e2e", "expired_e2e.crt", &read("notation-cli-e2e/expired_e2e.crt"));
    let o = e2e("e2e-with-expired-cert", &f.verifier(&policy("strict", &["ca:e2e"], "")), E2E_NOW);
    assert_refused(
        &o,
        &["notation: authenticTimestamp validation failed: certificate \"O=Internet Widgits Pty Ltd,ST=Some-State,C=AU\" expired at 2023-06-27T06:10:00Z and no trusted timestamp"],
    );
    let logged =
        assert_verified(&e2e("e2e-with-expired-cert", &f.verifier(&policy("permissive", &["ca:e2e"], "")), E2E_NOW));
    assert!(
        logged.len() == 1
            && logged[0].contains("authenticTimestamp validation failed (logged only")
            && logged[0].contains("expired at 2023-06-27T06:10:00Z"),
        "{logged:?}"
    );
    // While the certificate was still valid, strict accepts it.
    assert_verified_clean(&e2e(
        "e2e-with-expired-cert",
        &f.verifier(&policy("strict", &["ca:e2e"], "")),
        datetime!(2023-06-27 06:09:00 UTC),
    ));
}

#[test]
fn the_e2e_timestamped_signature_is_refused_after_its_expiry_and_valid_inside_its_window_without_a_tsa_store() {
    let sigs = layout_signatures("e2e-with-timestamped-signature");
    let (subject, mt, env) = &sigs[0];
    assert_eq!(subject["digest"], "sha256:53b0191218aed9a3c1f7c661736ac40cfc8eb928642348fd843ba3f0483c0c20");
    let leaf = chain_cert(mt, env, 0);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&leaf)),
        "1717fa9d18f7e9c0f609499474adfe2b8e44172454f1d6e2183d5d04f79af475"
    );
    let f = Fixture::new().cert("ca", "leaf", "testcert7.crt", &leaf).cert(
        "tsa",
        "globalsign",
        "globalsignRoot.cer",
        &read("notation-go/truststore/tsa/globalsignRoot.cer"),
    );
    // Today: the signature's own expiry has passed; a timestamp never extends it.
    let o = e2e("e2e-with-timestamped-signature", &f.verifier(&policy("strict", &["ca:leaf"], "")), E2E_NOW);
    assert_refused(&o, &["notation: expiry validation failed: signature expired at 2025-01-21T12:39:46Z"]);
    // Inside the window, without a tsa store the timestamp is not needed.
    let inside = datetime!(2025-01-21 10:00 UTC);
    assert_verified_clean(&e2e(
        "e2e-with-timestamped-signature",
        &f.verifier(&policy("strict", &["ca:leaf"], "")),
        inside,
    ));
    // With a tsa store the (real, Microsoft) token parses and its imprint
    // matches, but the Microsoft root is not in the store.
    let o = e2e(
        "e2e-with-timestamped-signature",
        &f.verifier(&policy("strict", &["ca:leaf", "tsa:globalsign"], "")),
        inside,
    );
    assert_refused(&o, &["notation: authenticTimestamp validation failed: the timestamp countersignature does not verify: the TSA certificate", "Microsoft", "does not chain to a tsa trust store"]);
}

#[test]
fn the_e2e_signature_with_an_invalid_timestamp_is_refused_whenever_the_timestamp_must_be_checked() {
    let sigs = layout_signatures("e2e-with-invalid-timestamped-signature");
    let (_, mt, env) = &sigs[0];
    let f = Fixture::new().cert("ca", "leaf", "testcert7.crt", &chain_cert(mt, env, 0)).cert(
        "tsa",
        "globalsign",
        "globalsignRoot.cer",
        &read("notation-go/truststore/tsa/globalsignRoot.cer"),
    );
    let during = datetime!(2025-01-21 09:00 UTC);
    let o = e2e(
        "e2e-with-invalid-timestamped-signature",
        &f.verifier(&policy("strict", &["ca:leaf", "tsa:globalsign"], "")),
        during,
    );
    assert_refused(&o, &["notation: authenticTimestamp validation failed: the timestamp countersignature does not verify: the token is not an RFC 3161 timestamp token"]);
    // Today the leaf has expired (2025-01-22) and nothing proves the signing time.
    let o = e2e("e2e-with-invalid-timestamped-signature", &f.verifier(&policy("strict", &["ca:leaf"], "")), E2E_NOW);
    assert_refused(&o, &["notation: authenticTimestamp validation failed: certificate \"CN=testcert7,O=Notary,L=Seattle,ST=WA,C=US\" expired at 2025-01-22T08:36:26Z"]);
}

// ---------------------------------------------------------------------------
// notation-go mock envelopes

const MOCK_DIGEST: &str = "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e";

fn mock(file: &str, v: &NotationVerifier, now: OffsetDateTime) -> Outcome {
    verify_at(v, MEDIA_TYPE_JWS, &read(format!("notation-go/{file}")), MOCK_DIGEST, DOCKER_V2, 528, now)
}

fn root_fixture() -> Fixture {
    let root = read("notation-go/truststore/ca/NotationTestRoot.pem");
    Fixture::new().cert("ca", "valid-trust-store", "NotationTestRoot.pem", &root).cert(
        "signingAuthority",
        "valid-trust-store",
        "NotationTestRoot.pem",
        &root,
    )
}

#[test]
fn the_notation_go_ca_valid_envelope_verifies_with_a_two_certificate_chain() {
    let f = root_fixture();
    assert_verified_clean(&mock(
        "ca_valid_sig_env.json",
        &f.verifier(&policy("strict", &["ca:valid-trust-store"], "")),
        E2E_NOW,
    ));
}

#[test]
fn the_notation_go_signing_authority_envelope_needs_a_signing_authority_store() {
    let f = root_fixture();
    assert_verified_clean(&mock(
        "sa_valid_sig_env.json",
        &f.verifier(&policy("strict", &["signingAuthority:valid-trust-store"], "")),
        E2E_NOW,
    ));
    let o = mock("sa_valid_sig_env.json", &f.verifier(&policy("strict", &["ca:valid-trust-store"], "")), E2E_NOW);
    assert_refused(&o, &["notation: authenticity validation failed: the signature uses the notary.x509.signingAuthority scheme, and trust policy statement \"test\" lists no signingAuthority trust store"]);
    // And a notary.x509 signature is not anchored by a signingAuthority store.
    let o = mock(
        "ca_valid_sig_env.json",
        &f.verifier(&policy("strict", &["signingAuthority:valid-trust-store"], "")),
        E2E_NOW,
    );
    assert_refused(&o, &["lists no ca trust store"]);
}

#[test]
fn the_notation_go_tampered_envelope_fails_integrity() {
    let f = root_fixture();
    for level in ["strict", "audit"] {
        // Upstream's tampering left a stray "=" on the payload, which is not
        // valid unpadded base64url, so the envelope fails before the signature.
        let o = mock("ca_invalid_sig_env.json", &f.verifier(&policy(level, &["ca:valid-trust-store"], "")), E2E_NOW);
        assert_refused(&o, &["notation: integrity validation failed: the JWS payload is not base64url"]);
    }
}

#[test]
fn the_notation_go_expired_envelopes_are_refused_at_strict_and_logged_at_permissive_and_audit() {
    let f = root_fixture();
    for (file, store) in [
        ("ca_expired_sig_env.json", "ca:valid-trust-store"),
        ("sa_expired_sig_env.json", "signingAuthority:valid-trust-store"),
    ] {
        let o = mock(file, &f.verifier(&policy("strict", &[store], "")), E2E_NOW);
        assert_refused(&o, &["notation: expiry validation failed: signature expired at 2022-07-29T23:59:00Z"]);
        for level in ["permissive", "audit"] {
            let logged = assert_verified(&mock(file, &f.verifier(&policy(level, &[store], "")), E2E_NOW));
            assert!(
                logged.len() == 1 && logged[0].contains("expiry validation failed (logged only"),
                "{file} {level}: {logged:?}"
            );
        }
        // An override can enforce expiry even at audit.
        let o = mock(file, &f.verifier(&policy("audit", &[store], r#","override":{"expiry":"enforce"}"#)), E2E_NOW);
        assert_refused(&o, &["expiry validation failed"]);
    }
}

#[test]
fn the_notation_go_plugin_envelope_is_refused_because_plugins_are_not_supported() {
    let f = root_fixture();
    for level in ["strict", "permissive", "audit"] {
        let o = mock("ca_plugin_sig_env.json", &f.verifier(&policy(level, &["ca:valid-trust-store"], "")), E2E_NOW);
        assert_refused(&o, &["notation: the signature requires the verification plugin \"plugin-name\", and sigmirror does not run notation plugins"]);
    }
}

#[test]
fn the_notation_go_envelope_with_metadata_is_valid_only_inside_its_certificate_day() {
    let env = read("notation-go/sig_env_with_metadata.json");
    let f = Fixture::new().cert("ca", "wabbit", "wabbit.crt", &chain_cert(MEDIA_TYPE_JWS, &env, 0));
    let v = f.verifier(&policy("strict", &["ca:wabbit"], ""));
    let digest = "sha256:5a07385af4e6b6af81b0ebfd435aedccdfa3507f0609c658209e1aba57159b2b";
    let o = verify_at(&v, MEDIA_TYPE_JWS, &env, digest, DOCKER_V2, 942, E2E_NOW);
    assert_refused(
        &o,
        &[
            "notation: authenticTimestamp validation failed: certificate \"CN=wabbit-networks.io",
            "expired at 2023-01-12T00:52:12Z",
        ],
    );
    assert_verified_clean(&verify_at(
        &v,
        MEDIA_TYPE_JWS,
        &env,
        digest,
        DOCKER_V2,
        942,
        datetime!(2023-01-11 18:00 UTC),
    ));
    // The size is part of the binding too.
    let o = verify_at(&v, MEDIA_TYPE_JWS, &env, digest, DOCKER_V2, 941, datetime!(2023-01-11 18:00 UTC));
    assert_refused(&o, &["notation: payload says sha256:5a07385a", "is 942 bytes, not 941"]);
}

#[test]
fn the_notation_go_plain_jws_and_cose_envelopes_verify_for_the_manifest_in_the_oci_layout() {
    let manifest =
        read("notation-go/oci-layout/blobs/sha256/19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0");
    let digest = Digest::of(&manifest);
    assert_eq!(digest.as_str(), "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0");
    for (file, mt) in [("jws_signature.sig", MEDIA_TYPE_JWS), ("cose_signature.sig", MEDIA_TYPE_COSE)] {
        let env = read(format!("notation-go/{file}"));
        let leaf = chain_cert(mt, &env, 0);
        let f = Fixture::new().cert("ca", "alpine", "alpine.pem", pem("CERTIFICATE", &leaf).as_bytes());
        let v = f.verifier(&policy("strict", &["ca:alpine"], ""));
        assert_verified_clean(&verify_at(&v, mt, &env, digest.as_str(), OCI_MANIFEST, manifest.len() as u64, E2E_NOW));
        // The wrong envelope media type is an integrity failure, not a crash.
        let other = if mt == MEDIA_TYPE_JWS { MEDIA_TYPE_COSE } else { MEDIA_TYPE_JWS };
        assert_refused(
            &verify_at(&v, other, &env, digest.as_str(), OCI_MANIFEST, 481, E2E_NOW),
            &["notation: integrity validation failed"],
        );
    }
}

// ---------------------------------------------------------------------------
// notation-go timestamped envelopes (RFC 3161, GlobalSign TSA)

const TS_DIGEST: &str = "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda";

fn ts_fixture(ca_file: &[u8]) -> Fixture {
    Fixture::new().cert("ca", "valid-trust-store", "signer.crt", ca_file).cert(
        "tsa",
        "test-timestamp",
        "globalsignRoot.cer",
        &read("notation-go/truststore/tsa/globalsignRoot.cer"),
    )
}

fn ts(file: &str, v: &NotationVerifier) -> Outcome {
    let mt =
        if file.starts_with("cose") || file == "timestampAfterNotAfter.sig" { MEDIA_TYPE_COSE } else { MEDIA_TYPE_JWS };
    verify_at(v, mt, &read(format!("notation-go/{file}")), TS_DIGEST, DOCKER_V2, 528, E2E_NOW)
}

/// The GlobalSign TSA certificates name OCSP/CRL endpoints, which an
/// air-gapped verifier cannot reach, so the tests that expect a valid
/// timestamp relax revocation to "log" and check that it was logged.
const TS_POLICY_EXTRA: &str = r#","override":{"revocation":"log"}"#;

#[test]
fn the_notation_go_jws_and_cose_timestamps_verify_against_the_globalsign_root() {
    let f = ts_fixture(&read("notation-go/truststore/ca/TestTimestamp.crt"));
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], TS_POLICY_EXTRA));
    for file in ["jwsWithTimestamp.sig", "coseWithTimestamp.sig"] {
        let logged = assert_verified(&ts(file, &v));
        assert!(
            logged.len() == 1
                && logged[0].contains("revocation validation failed (logged only")
                && logged[0].contains("timestamping certificate"),
            "{file}: {logged:?}"
        );
    }
    // At plain strict, unknown TSA revocation status refuses: fail closed.
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], ""));
    assert_refused(
        &ts("jwsWithTimestamp.sig", &v),
        &["notation: revocation validation failed: timestamping certificate", "revocation status is unknown"],
    );
    // Skipping revocation gives a clean result.
    let v = f.verifier(&policy(
        "strict",
        &["ca:valid-trust-store", "tsa:test-timestamp"],
        r#","override":{"revocation":"skip"}"#,
    ));
    assert_verified_clean(&ts("coseWithTimestamp.sig", &v));
}

#[test]
fn expired_signing_certificates_are_rescued_only_by_a_trusted_timestamp() {
    for file in ["jwsExpiredWithTimestamp.sig", "coseExpiredWithTimestamp.sig"] {
        let mt = if file.starts_with("cose") { MEDIA_TYPE_COSE } else { MEDIA_TYPE_JWS };
        let leaf = chain_cert(mt, &read(format!("notation-go/{file}")), 0);
        let f = ts_fixture(&leaf).cert(
            "tsa",
            "test-mismatch",
            "root.pem",
            &read("notation-go/truststore/ca/NotationTestRoot.pem"),
        );
        let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], TS_POLICY_EXTRA));
        assert_verified(&ts(file, &v));
        let v = f.verifier(&policy("strict", &["ca:valid-trust-store"], ""));
        assert_refused(&ts(file, &v), &["notation: authenticTimestamp validation failed: certificate \"CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US\" expired at 2024-06-18T07:30:31Z"]);
        let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-mismatch"], TS_POLICY_EXTRA));
        assert_refused(
            &ts(file, &v),
            &[
                "notation: authenticTimestamp validation failed: the timestamp countersignature does not verify",
                "does not chain to a tsa trust store",
            ],
        );
    }
}

#[test]
fn a_timestamp_outside_the_certificate_validity_is_refused() {
    let f = ts_fixture(&read("notation-go/truststore/ca/TestTimestampNotYetValid.crt"));
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], TS_POLICY_EXTRA));
    assert_refused(&ts("timestampBeforeNotBefore.sig", &v), &["notation: authenticTimestamp validation failed: the timestamp", "can be before certificate \"CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US\" became valid at 2099-09-18T11:54:34Z"]);

    let leaf = chain_cert(MEDIA_TYPE_COSE, &read("notation-go/timestampAfterNotAfter.sig"), 0);
    let f = ts_fixture(&leaf);
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], TS_POLICY_EXTRA));
    assert_refused(
        &ts("timestampAfterNotAfter.sig", &v),
        &[
            "notation: authenticTimestamp validation failed: the timestamp",
            "can be after certificate \"CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US\" expired at 2001-09-18T11:54:34Z",
        ],
    );
}

#[test]
fn a_missing_timestamp_fails_only_when_the_policy_asks_for_one() {
    let f = ts_fixture(&read("notation-go/truststore/ca/TestTimestamp.crt"));
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], ""));
    assert_refused(&ts("withoutTimestamp.sig", &v), &["notation: authenticTimestamp validation failed: no timestamp countersignature was found in the signature envelope"]);
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store"], ""));
    assert_verified_clean(&ts("withoutTimestamp.sig", &v));
    let v = f.verifier(&policy(
        "strict",
        &["ca:valid-trust-store", "tsa:test-timestamp"],
        r#","verifyTimestamp":"afterCertExpiry""#,
    ));
    assert_verified_clean(&ts("withoutTimestamp.sig", &v));
}

// ---------------------------------------------------------------------------
// Refusal matrix over envelopes we sign ourselves

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn dn(parts: &[(rcgen::DnType, &str)]) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    for (t, v) in parts {
        d.push(t.clone(), *v);
    }
    d
}

struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    leaf: rcgen::Certificate,
    leaf_key: p256::ecdsa::SigningKey,
}

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn(&[
        (rcgen::DnType::CountryName, "US"),
        (rcgen::DnType::OrganizationName, "Test"),
        (rcgen::DnType::CommonName, cn),
    ]);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = datetime!(2020-01-01 00:00 UTC);
    p.not_after = datetime!(2040-01-01 00:00 UTC);
    p
}

fn leaf_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn(&[
        (rcgen::DnType::CountryName, "US"),
        (rcgen::DnType::StateOrProvinceName, "WA"),
        (rcgen::DnType::LocalityName, "Seattle"),
        (rcgen::DnType::OrganizationName, "Acme Rockets"),
        (rcgen::DnType::CommonName, "builder"),
    ]);
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    p.not_before = datetime!(2024-01-01 00:00 UTC);
    p.not_after = datetime!(2030-01-01 00:00 UTC);
    p
}

fn pki_with(ca_cn: &str, leaf: rcgen::CertificateParams) -> Pki {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = ca_params(ca_cn).self_signed(&ca_key).unwrap();
    let leaf_kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf_cert = leaf.signed_by(&leaf_kp, &ca, &ca_key).unwrap();
    use p256::pkcs8::DecodePrivateKey;
    let leaf_key = p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_kp.serialize_der()).unwrap();
    Pki { ca, ca_key, leaf: leaf_cert, leaf_key }
}

fn pki() -> Pki {
    pki_with("Test Root", leaf_params())
}

const OWN_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

fn payload_for(digest: &str) -> String {
    format!(
        r#"{{"targetArtifact":{{"digest":"{digest}","mediaType":"{OCI_MANIFEST}","size":1234,"annotations":{{"k":"v"}}}}}}"#
    )
}

fn default_header() -> serde_json::Value {
    serde_json::json!({
        "alg": "ES256",
        "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2026-02-01T10:00:00+02:00",
        "io.cncf.notary.expiry": "2027-02-01T08:00:00Z",
    })
}

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An ES256 JWS over `payload` with header `h`, x5c = `chain`.
fn jws_raw(key: &p256::ecdsa::SigningKey, protected_json: &str, payload: &str, chain: &[&[u8]]) -> Vec<u8> {
    let protected = b64u(protected_json.as_bytes());
    let payload = b64u(payload.as_bytes());
    let sig: p256::ecdsa::Signature = key.sign(format!("{protected}.{payload}").as_bytes());
    let x5c: Vec<String> = chain.iter().map(|c| base64::engine::general_purpose::STANDARD.encode(c)).collect();
    serde_json::to_vec(&serde_json::json!({
        "payload": payload,
        "protected": protected,
        "header": {"x5c": x5c, "io.cncf.notary.signingAgent": "sigmirror-test"},
        "signature": b64u(&sig.to_bytes()),
    }))
    .unwrap()
}

fn jws(p: &Pki, h: &serde_json::Value, payload: &str) -> Vec<u8> {
    jws_raw(&p.leaf_key, &h.to_string(), payload, &[p.leaf.der(), p.ca.der()])
}

fn fixture_for(p: &Pki) -> Fixture {
    Fixture::new().cert("ca", "test", "root.pem", p.ca.pem().as_bytes())
}

fn own(v: &NotationVerifier, mt: &str, env: &[u8], now: OffsetDateTime) -> Outcome {
    verify_at(v, mt, env, OWN_DIGEST, OCI_MANIFEST, 1234, now)
}

fn strict(f: &Fixture) -> NotationVerifier {
    f.verifier(&policy("strict", &["ca:test"], ""))
}

#[test]
fn an_es256_jws_with_a_two_certificate_chain_verifies() {
    let p = pki();
    let f = fixture_for(&p);
    assert_verified_clean(&own(
        &strict(&f),
        MEDIA_TYPE_JWS,
        &jws(&p, &default_header(), &payload_for(OWN_DIGEST)),
        NOW,
    ));
}

#[test]
fn a_chain_from_an_untrusted_ca_fails_authenticity_and_is_only_logged_at_audit() {
    let p = pki();
    let other = pki_with("Other Root", leaf_params());
    let f = fixture_for(&other);
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &env, NOW),
        &["notation: authenticity validation failed: certificate chain does not reach trust store ca:test"],
    );
    let logged = assert_verified(&own(&f.verifier(&policy("audit", &["ca:test"], "")), MEDIA_TYPE_JWS, &env, NOW));
    assert!(
        logged.len() == 1
            && logged[0].contains("authenticity validation failed (logged only; statement \"test\" at level audit)"),
        "{logged:?}"
    );
    // An override enforcing authenticity at audit refuses again.
    let v = f.verifier(&policy("audit", &["ca:test"], r#","override":{"authenticity":"enforce"}"#));
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["authenticity validation failed"]);
}

fn with_identities(ids: &[&str]) -> String {
    let ids: Vec<String> = ids.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"version":"1.0","trustPolicies":[{{"name":"ids","registryScopes":["{SCOPE}"],"signatureVerification":{{"level":"strict"}},"trustStores":["ca:test"],"trustedIdentities":[{}]}}]}}"#,
        ids.join(",")
    )
}

#[test]
fn trusted_identities_match_as_a_subset_of_the_leaf_subject() {
    let p = pki();
    let f = fixture_for(&p);
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    let ok = f.verifier(&with_identities(&["x509.subject: C=US, ST=WA, O=Acme Rockets"]));
    assert_verified_clean(&own(&ok, MEDIA_TYPE_JWS, &env, NOW));
    let ok = f.verifier(&with_identities(&[
        "x509.subject: C=US, ST=WA, O=Other",
        "x509.subject: C=US, S=WA, L=Seattle, O=Acme Rockets, CN=builder",
    ]));
    assert_verified_clean(&own(&ok, MEDIA_TYPE_JWS, &env, NOW));
    for id in ["x509.subject: C=US, ST=WA, O=acme rockets", "x509.subject: C=US, ST=WA, O=Acme Rockets, OU=Security"] {
        let v = f.verifier(&with_identities(&[id]));
        assert_refused(
            &own(&v, MEDIA_TYPE_JWS, &env, NOW),
            &["notation: authenticity validation failed: signing certificate \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" matches none of the trusted identities of trust policy statement \"ids\""],
        );
    }
}

#[test]
fn a_tampered_signature_or_payload_fails_integrity() {
    let p = pki();
    let f = fixture_for(&p);
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    let mut j: serde_json::Value = serde_json::from_slice(&env).unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(j["signature"].as_str().unwrap()).unwrap();
    sig[10] ^= 1;
    j["signature"] = b64u(&sig).into();
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &serde_json::to_vec(&j).unwrap(), NOW),
        &["notation: integrity validation failed: signature does not verify"],
    );

    let mut j: serde_json::Value = serde_json::from_slice(&env).unwrap();
    j["payload"] =
        b64u(payload_for("sha256:2222222222222222222222222222222222222222222222222222222222222222").as_bytes()).into();
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &serde_json::to_vec(&j).unwrap(), NOW),
        &["notation: integrity validation failed: signature does not verify"],
    );

    // A different but validly signed header claiming another algorithm.
    let mut h = default_header();
    h["alg"] = "ES384".into();
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW),
        &["notation: integrity validation failed: the signature algorithm ES384 does not match the EC P-256 signing key, which requires ES256"],
    );
    h["alg"] = "none".into();
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW),
        &["JWS alg \"none\" is not allowed"],
    );
}

#[test]
fn a_signature_for_another_digest_is_refused_at_every_level() {
    let p = pki();
    let f = fixture_for(&p);
    let other = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let env = jws(&p, &default_header(), &payload_for(other));
    for level in ["strict", "permissive", "audit"] {
        let o = own(&f.verifier(&policy(level, &["ca:test"], "")), MEDIA_TYPE_JWS, &env, NOW);
        assert_refused(&o, &[&format!("notation: payload is for {other} not {OWN_DIGEST}")]);
    }
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    let o =
        verify_at(&strict(&f), MEDIA_TYPE_JWS, &env, OWN_DIGEST, "application/vnd.oci.image.index.v1+json", 1234, NOW);
    assert_refused(
        &o,
        &[
            "notation: payload says",
            "is \"application/vnd.oci.image.manifest.v1+json\", not \"application/vnd.oci.image.index.v1+json\"",
        ],
    );
    let env = jws(&p, &default_header(), r#"{"targetArtifact":{"digest":"x"}}"#);
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &env, NOW),
        &["notation: integrity validation failed: the payload is not a Notary Project payload"],
    );
}

#[test]
fn an_expiry_in_the_past_is_refused_at_strict_and_logged_at_permissive() {
    let p = pki();
    let f = fixture_for(&p);
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    let after = datetime!(2027-02-01 08:00 UTC);
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &env, after),
        &["notation: expiry validation failed: signature expired at 2027-02-01T08:00:00Z"],
    );
    let logged =
        assert_verified(&own(&f.verifier(&policy("permissive", &["ca:test"], "")), MEDIA_TYPE_JWS, &env, after));
    assert_eq!(logged.len(), 1);
    // expiry not after the signing time is malformed
    let mut h = default_header();
    h["io.cncf.notary.expiry"] = "2026-02-01T08:00:00Z".into();
    assert_refused(&own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW), &["integrity validation failed: expiry 2026-02-01T08:00:00Z is not after the signing time 2026-02-01T08:00:00Z"]);
    // expiry present but not critical
    let mut h = default_header();
    h["crit"] = serde_json::json!(["io.cncf.notary.signingScheme"]);
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW),
        &["integrity validation failed: io.cncf.notary.expiry is present but not listed in crit"],
    );
}

#[test]
fn a_leaf_that_had_expired_at_signing_time_is_refused() {
    let mut lp = leaf_params();
    lp.not_before = datetime!(2020-01-01 00:00 UTC);
    lp.not_after = datetime!(2021-01-01 00:00 UTC);
    let p = pki_with("Test Root", lp);
    let f = fixture_for(&p);
    // notary.x509: the claimed signing time proves nothing, so the chain
    // must be valid now, and it is not.
    let o = own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &default_header(), &payload_for(OWN_DIGEST)), NOW);
    assert_refused(&o, &["notation: authenticTimestamp validation failed: certificate \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" expired at 2021-01-01T00:00:00Z"]);
    // notary.x509.signingAuthority: the authentic signing time is outside
    // the leaf's validity, which breaks integrity.
    let f = Fixture::new().cert("signingAuthority", "test", "root.pem", p.ca.pem().as_bytes());
    let h = serde_json::json!({
        "alg": "ES256",
        "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.authenticSigningTime"],
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509.signingAuthority",
        "io.cncf.notary.authenticSigningTime": "2022-06-01T00:00:00Z",
    });
    let o = own(
        &f.verifier(&policy("strict", &["signingAuthority:test"], "")),
        MEDIA_TYPE_JWS,
        &jws(&p, &h, &payload_for(OWN_DIGEST)),
        NOW,
    );
    assert_refused(&o, &["notation: integrity validation failed: certificate chain: certificate \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" was not valid at the signing time 2022-06-01T00:00:00Z"]);
}

#[test]
fn an_unknown_critical_header_is_refused_at_every_level() {
    let p = pki();
    let f = fixture_for(&p);
    let mut h = default_header();
    h["com.example.mustUnderstand"] = "yes".into();
    h["crit"].as_array_mut().unwrap().push("com.example.mustUnderstand".into());
    let env = jws(&p, &h, &payload_for(OWN_DIGEST));
    for level in ["strict", "audit"] {
        assert_refused(
            &own(&f.verifier(&policy(level, &["ca:test"], "")), MEDIA_TYPE_JWS, &env, NOW),
            &["notation: unsupported critical header \"com.example.mustUnderstand\""],
        );
    }
    // Listed as critical but absent.
    let mut h = default_header();
    h["crit"].as_array_mut().unwrap().push("com.example.absent".into());
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW),
        &["integrity validation failed: crit lists \"com.example.absent\", which is not in the protected header"],
    );
    // Non-critical extension headers are fine.
    let mut h = default_header();
    h["com.example.note"] = "informational".into();
    assert_verified_clean(&own(&strict(&f), MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW));
}

#[test]
fn malformed_protected_headers_fail_integrity() {
    let p = pki();
    let f = fixture_for(&p);
    let v = strict(&f);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut h = default_header();
                h["cty"] = "application/json".into();
                h
            },
            "payload content type \"application/json\" is not",
        ),
        (
            {
                let mut h = default_header();
                h.as_object_mut().unwrap().remove("cty");
                h
            },
            "has no content type",
        ),
        (
            {
                let mut h = default_header();
                h["io.cncf.notary.signingScheme"] = "notary.other".into();
                h
            },
            "signing scheme \"notary.other\" is not supported",
        ),
        (
            {
                let mut h = default_header();
                h.as_object_mut().unwrap().remove("io.cncf.notary.signingTime");
                h
            },
            "io.cncf.notary.signingTime is required",
        ),
        (
            {
                let mut h = default_header();
                h["io.cncf.notary.signingTime"] = "yesterday".into();
                h
            },
            "is not an RFC 3339 time",
        ),
        (
            {
                let mut h = default_header();
                h["crit"] = serde_json::json!([]);
                h
            },
            "has no crit list",
        ),
        (
            {
                let mut h = default_header();
                h["crit"] = serde_json::json!(["io.cncf.notary.expiry"]);
                h
            },
            "io.cncf.notary.signingScheme is present but not listed in crit",
        ),
        (
            {
                let mut h = default_header();
                h["io.cncf.notary.authenticSigningTime"] = "2026-02-01T08:00:00Z".into();
                h
            },
            "not allowed with the notary.x509 scheme",
        ),
        (
            {
                let mut h = default_header();
                h["alg"] = 7.into();
                h
            },
            "JWS header alg is not a string",
        ),
    ];
    for (h, want) in cases {
        let o = own(&v, MEDIA_TYPE_JWS, &jws(&p, &h, &payload_for(OWN_DIGEST)), NOW);
        assert_refused(&o, &["notation: integrity validation failed: ", want]);
    }
    // Duplicate keys in the protected header are ambiguous.
    let dup = r#"{"alg":"ES256","alg":"ES256","crit":["io.cncf.notary.signingScheme"],"cty":"application/vnd.cncf.notary.payload.v1+json","io.cncf.notary.signingScheme":"notary.x509","io.cncf.notary.signingTime":"2026-02-01T08:00:00Z"}"#;
    let env = jws_raw(&p.leaf_key, dup, &payload_for(OWN_DIGEST), &[p.leaf.der(), p.ca.der()]);
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["key \"alg\" appears twice"]);
}

#[test]
fn garbage_envelopes_fail_integrity_without_panicking() {
    let p = pki();
    let f = fixture_for(&p);
    let v = strict(&f);
    let good = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["protected"] = "!!!not base64!!!".into();
    let bad_b64 = serde_json::to_vec(&j).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["header"]["x5c"] = serde_json::json!(["@@@"]);
    let bad_x5c = serde_json::to_vec(&j).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["header"]["x5c"] = serde_json::json!([base64::engine::general_purpose::STANDARD.encode(b"not a certificate")]);
    let bad_cert = serde_json::to_vec(&j).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["header"]["x5c"] = serde_json::json!([]);
    let empty_x5c = serde_json::to_vec(&j).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["extra"] = 1.into();
    let extra = serde_json::to_vec(&j).unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let huge = vec![b' '; MAX_ENVELOPE + 1];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (MEDIA_TYPE_JWS, b"{".to_vec(), "not valid JSON"),
        (MEDIA_TYPE_JWS, b"".to_vec(), "not valid JSON"),
        (MEDIA_TYPE_JWS, deep, "not valid JSON"),
        (MEDIA_TYPE_JWS, bad_b64, "protected header is not base64url"),
        (MEDIA_TYPE_JWS, bad_x5c, "x5c[0] is not base64"),
        (MEDIA_TYPE_JWS, bad_cert, "certificate 0 in the chain: certificate does not parse"),
        (MEDIA_TYPE_JWS, empty_x5c, "x5c certificate chain is empty"),
        (MEDIA_TYPE_JWS, extra, "unknown field"),
        (MEDIA_TYPE_JWS, huge, "more than the 1048576 allowed"),
        (MEDIA_TYPE_COSE, b"\xd2\x84".to_vec(), "not a tagged COSE_Sign1"),
        (MEDIA_TYPE_COSE, b"\x84\x40\xa0\x40\x40".to_vec(), "not a tagged COSE_Sign1"),
        (MEDIA_TYPE_COSE, vec![0x9f; 100_000], "not a tagged COSE_Sign1"),
        (MEDIA_TYPE_COSE, good.clone(), "not a tagged COSE_Sign1"),
        ("application/octet-stream", good, "envelope media type \"application/octet-stream\""),
    ];
    for (mt, env, want) in cases {
        let o = own(&v, mt, &env, NOW);
        assert_refused(&o, &["notation: integrity validation failed: ", want]);
    }
}

/// A PKCS#1 RSAPublicKey for rcgen to put in a certificate.
struct RsaPub(Vec<u8>);

impl rcgen::PublicKeyData for RsaPub {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

#[test]
fn an_rsa_1024_signing_key_is_refused() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    let p = pki();
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let pub_der = key.to_public_key().to_pkcs1_der().unwrap().as_bytes().to_vec();
    let leaf = leaf_params().signed_by(&RsaPub(pub_der), &p.ca, &p.ca_key).unwrap();
    let f = fixture_for(&p);
    let mut h = default_header();
    h["alg"] = "PS256".into();
    // The signature bytes do not matter: the key is refused before them.
    let env = jws_raw(&p.leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[leaf.der(), p.ca.der()]);
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &env, NOW),
        &["notation: integrity validation failed: the signing certificate has an RSA 1024-bit key"],
    );
}

#[test]
fn a_ps256_jws_from_an_rsa_2048_leaf_verifies() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let p = pki();
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pub_der = key.to_public_key().to_pkcs1_der().unwrap().as_bytes().to_vec();
    let leaf = leaf_params().signed_by(&RsaPub(pub_der), &p.ca, &p.ca_key).unwrap();
    let mut h = default_header();
    h["alg"] = "PS256".into();
    let protected = b64u(h.to_string().as_bytes());
    let payload = b64u(payload_for(OWN_DIGEST).as_bytes());
    let sk = rsa::pss::SigningKey::<sha2::Sha256>::new(key);
    let sig = sk.sign_with_rng(&mut rsa::rand_core::OsRng, format!("{protected}.{payload}").as_bytes());
    let env = serde_json::to_vec(&serde_json::json!({
        "payload": payload, "protected": protected,
        "header": {"x5c": [base64::engine::general_purpose::STANDARD.encode(leaf.der()), base64::engine::general_purpose::STANDARD.encode(p.ca.der())]},
        "signature": b64u(&sig.to_vec()),
    }))
    .unwrap();
    assert_verified_clean(&own(&strict(&fixture_for(&p)), MEDIA_TYPE_JWS, &env, NOW));
}

#[test]
fn chains_that_break_the_certificate_requirements_fail_integrity() {
    let p = pki();
    let f = fixture_for(&p);
    let v = strict(&f);
    let h = default_header();
    // Leaf alone: not self-signed, so the chain does not end in a root.
    let env = jws_raw(&p.leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[p.leaf.der()]);
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["integrity validation failed: certificate chain: the single certificate is not validly self-signed: the signature on \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" does not verify"]);
    // A root in the middle of the chain.
    let env = jws_raw(&p.leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[p.leaf.der(), p.ca.der(), p.leaf.der()]);
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["integrity validation failed: certificate chain: the intermediate certificate \"CN=Test Root,O=Test,C=US\" is self-signed"]);
    // A chain that stops short of its root.
    let mid_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mid = ca_params("Intermediate").signed_by(&mid_key, &p.ca, &p.ca_key).unwrap();
    let leaf_kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = leaf_params().signed_by(&leaf_kp, &mid, &mid_key).unwrap();
    use p256::pkcs8::DecodePrivateKey;
    let leaf_key = p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_kp.serialize_der()).unwrap();
    let env = jws_raw(&leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[leaf.der(), mid.der()]);
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["integrity validation failed: certificate chain: the chain ends with \"CN=Intermediate,O=Test,C=US\", which is not a self-signed root"]);
    // The full three-certificate chain verifies.
    let env = jws_raw(&leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[leaf.der(), mid.der(), p.ca.der()]);
    assert_verified_clean(&own(&v, MEDIA_TYPE_JWS, &env, NOW));
    // A root that did not issue the chain.
    let other = pki_with("Other Root", leaf_params());
    let env = jws_raw(&p.leaf_key, &h.to_string(), &payload_for(OWN_DIGEST), &[p.leaf.der(), other.ca.der()]);
    assert_refused(&own(&v, MEDIA_TYPE_JWS, &env, NOW), &["integrity validation failed: certificate chain: the signature on \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" does not verify with the key of \"CN=Other Root,O=Test,C=US\""]);
    // A leaf that may also sign certificates.
    let mut lp = leaf_params();
    lp.key_usages.push(rcgen::KeyUsagePurpose::KeyCertSign);
    let bad = pki_with("Test Root", lp);
    let env = jws(&bad, &h, &payload_for(OWN_DIGEST));
    assert_refused(
        &own(&strict(&fixture_for(&bad)), MEDIA_TYPE_JWS, &env, NOW),
        &["key usage must be digitalSignature only, but also has CertSign"],
    );
    // A TLS server certificate is not a code signing certificate.
    let mut lp = leaf_params();
    lp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let bad = pki_with("Test Root", lp);
    let env = jws(&bad, &h, &payload_for(OWN_DIGEST));
    assert_refused(
        &own(&strict(&fixture_for(&bad)), MEDIA_TYPE_JWS, &env, NOW),
        &["extended key usage must not include serverAuth"],
    );
}

#[test]
fn revocation_endpoints_cannot_be_checked_offline_so_strict_refuses_and_overrides_relax_it() {
    let mut lp = leaf_params();
    lp.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec!["http://crl.example/ca.crl".into()] }];
    let p = pki_with("Test Root", lp);
    let f = fixture_for(&p);
    let env = jws(&p, &default_header(), &payload_for(OWN_DIGEST));
    assert_refused(
        &own(&strict(&f), MEDIA_TYPE_JWS, &env, NOW),
        &["notation: revocation validation failed: signing certificate \"CN=builder,O=Acme Rockets,L=Seattle,ST=WA,C=US\" revocation status is unknown: it names CRL http://crl.example/ca.crl"],
    );
    let logged = assert_verified(&own(&f.verifier(&policy("permissive", &["ca:test"], "")), MEDIA_TYPE_JWS, &env, NOW));
    assert!(logged.len() == 1 && logged[0].contains("revocation validation failed (logged only"), "{logged:?}");
    assert_verified_clean(&own(
        &f.verifier(&policy("strict", &["ca:test"], r#","override":{"revocation":"skip"}"#)),
        MEDIA_TYPE_JWS,
        &env,
        NOW,
    ));
}

#[test]
fn skip_level_and_missing_statements_are_reported_without_reading_the_envelope() {
    let p = pki();
    let f = fixture_for(&p);
    let json = format!(
        r#"{{"version":"1.0","trustPolicies":[
          {{"name":"unsigned","registryScopes":["{SCOPE}"],"signatureVerification":{{"level":"skip"}}}},
          {{"name":"strict","registryScopes":["registry.example/other"],"signatureVerification":{{"level":"strict"}},"trustStores":["ca:test"],"trustedIdentities":["*"]}}]}}"#
    );
    let v = f.verifier(&json);
    assert_eq!(own(&v, MEDIA_TYPE_JWS, b"garbage", NOW), Outcome::Skipped);
    let digest: Digest = OWN_DIGEST.parse().unwrap();
    let o = v.verify(
        &Target { registry_scope: "registry.example/third", digest: &digest, media_type: OCI_MANIFEST, size: 1 },
        MEDIA_TYPE_JWS,
        b"garbage",
        NOW,
    );
    assert_eq!(
        o,
        Outcome::Refused("notation: no notation trust policy statement applies to registry.example/third".into())
    );
    // The exact scope wins over the global statement.
    let json = format!(
        r#"{{"version":"1.0","trustPolicies":[
          {{"name":"exact","registryScopes":["{SCOPE}"],"signatureVerification":{{"level":"strict"}},"trustStores":["ca:test"],"trustedIdentities":["*"]}},
          {{"name":"global","registryScopes":["*"],"signatureVerification":{{"level":"audit"}},"trustStores":["ca:test"],"trustedIdentities":["*"]}}]}}"#
    );
    let v = f.verifier(&json);
    assert_eq!(v.statement_for(SCOPE).unwrap().name, "exact");
    assert_eq!(v.statement_for("registry.example/other").unwrap().name, "global");
}

/// An ES256 COSE_Sign1 the way notation writes one.
fn cose_env(p: &Pki, tamper: impl FnOnce(&mut coset::CoseSign1)) -> Vec<u8> {
    use coset::cbor::value::Value;
    use coset::{iana, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
    let tag1 = |t: i64| Value::Tag(1, Box::new(Value::Integer(t.into())));
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .add_critical_label(coset::RegisteredLabel::Text("io.cncf.notary.signingScheme".into()))
        .add_critical_label(coset::RegisteredLabel::Text("io.cncf.notary.expiry".into()))
        .content_type("application/vnd.cncf.notary.payload.v1+json".into())
        .text_value("io.cncf.notary.signingScheme".into(), Value::Text("notary.x509".into()))
        .text_value("io.cncf.notary.signingTime".into(), tag1(datetime!(2026-02-01 08:00 UTC).unix_timestamp()))
        .text_value("io.cncf.notary.expiry".into(), tag1(datetime!(2027-02-01 08:00 UTC).unix_timestamp()))
        .build();
    let unprotected = HeaderBuilder::new()
        .value(33, Value::Array(vec![Value::Bytes(p.leaf.der().to_vec()), Value::Bytes(p.ca.der().to_vec())]))
        .text_value("io.cncf.notary.signingAgent".into(), Value::Text("sigmirror-test".into()))
        .build();
    let mut msg = CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload_for(OWN_DIGEST).into_bytes())
        .create_signature(&[], |tbs| {
            let s: p256::ecdsa::Signature = p.leaf_key.sign(tbs);
            s.to_bytes().to_vec()
        })
        .build();
    tamper(&mut msg);
    msg.to_tagged_vec().unwrap()
}

#[test]
fn an_es256_cose_envelope_verifies_and_tampering_with_it_fails_integrity() {
    let p = pki();
    let f = fixture_for(&p);
    let v = strict(&f);
    assert_verified_clean(&own(&v, MEDIA_TYPE_COSE, &cose_env(&p, |_| {}), NOW));
    assert_refused(
        &own(&v, MEDIA_TYPE_COSE, &cose_env(&p, |m| m.signature[3] ^= 1), NOW),
        &["notation: integrity validation failed: signature does not verify"],
    );
    assert_refused(
        &own(
            &v,
            MEDIA_TYPE_COSE,
            &cose_env(&p, |m| {
                m.payload = Some(
                    payload_for("sha256:3333333333333333333333333333333333333333333333333333333333333333").into_bytes(),
                )
            }),
            NOW,
        ),
        &["signature does not verify"],
    );
    assert_refused(
        &own(&v, MEDIA_TYPE_COSE, &cose_env(&p, |m| m.payload = None), NOW),
        &["the COSE payload is detached"],
    );
    assert_refused(&own(&v, MEDIA_TYPE_COSE, &cose_env(&p, |m| m.unprotected.rest.clear()), NOW), &["has no x5chain"]);
    // Expiry is read from the tag-1 time, so it is enforced for COSE too.
    assert_refused(
        &own(&v, MEDIA_TYPE_COSE, &cose_env(&p, |_| {}), datetime!(2028-01-01 00:00 UTC)),
        &["notation: expiry validation failed: signature expired at 2027-02-01T08:00:00Z"],
    );
    // Untagged COSE_Sign1 is not what notation writes.
    let tagged = cose_env(&p, |_| {});
    assert_refused(&own(&v, MEDIA_TYPE_COSE, &tagged[1..], NOW), &["not a tagged COSE_Sign1"]);
}

#[test]
fn loading_reports_unknown_trust_stores_and_bad_anchors_to_the_checker() {
    let p = pki();
    let f = fixture_for(&p).cert("ca", "leafonly", "leaf.pem", p.leaf.pem().as_bytes()).cert(
        "ca",
        "junk",
        "junk.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let dir = f.dir.path();
    std::fs::write(
        dir.join("trustpolicy.json"),
        policy("strict", &["ca:test", "ca:missing", "ca:leafonly", "ca:junk"], ""),
    )
    .unwrap();
    let load = || crate::config::notation_fragment(dir, "trustpolicy.json", "truststore");
    let (raw, mut c) = load();
    assert!(NotationVerifier::load(&raw, &mut c).is_none());
    let all: Vec<String> = c.problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert!(
        all.iter()
            .any(|p| p.starts_with("notation.trust_store: trust store ca:missing") && p.contains("does not exist")),
        "{all:?}"
    );
    assert!(all.iter().any(|p| p.contains("ca:leafonly") && p.contains("is neither a CA nor self-signed")), "{all:?}");
    assert!(all.iter().any(|p| p.contains("ca:junk") && p.contains("certificate does not parse")), "{all:?}");

    std::fs::write(dir.join("trustpolicy.json"), policy("strict", &["ca:test"], "")).unwrap();
    let (raw, mut c) = load();
    let v = NotationVerifier::load(&raw, &mut c).expect("loads");
    assert!(c.problems.is_empty());
    assert_verified_clean(&own(&v, MEDIA_TYPE_JWS, &jws(&p, &default_header(), &payload_for(OWN_DIGEST)), NOW));

    std::fs::write(dir.join("trustpolicy.json"), b"{\"version\":\"1.0\"").unwrap();
    let (raw, mut c) = load();
    assert!(NotationVerifier::load(&raw, &mut c).is_none());
    assert!(
        c.problems[0].key.starts_with("notation.trust_policy")
            && c.problems[0].message.contains("is not a notation trust policy"),
        "{:?}",
        c.problems
    );
}

#[test]
fn trust_store_symlinks_and_subdirectories_are_refused() {
    let p = pki();
    let f = fixture_for(&p);
    let ca = f.dir.path().join("truststore/x509/ca");
    std::os::unix::fs::symlink(ca.join("test"), ca.join("linked")).unwrap();
    std::fs::create_dir_all(ca.join("test/nested")).unwrap();
    let err = NotationVerifier::from_parts(
        policy("strict", &["ca:linked", "ca:test"], "").as_bytes(),
        &f.dir.path().join("truststore"),
    )
    .unwrap_err();
    assert!(err.iter().any(|e| e.contains("ca:linked") && e.contains("symbolic link")), "{err:?}");
    assert!(err.iter().any(|e| e.contains("ca:test") && e.contains("is a subdirectory")), "{err:?}");
}

#[test]
fn the_fingerprint_covers_the_policy_and_every_trust_store_byte() {
    let p = pki();
    let f = fixture_for(&p);
    let fp = |v: &NotationVerifier| {
        let mut h = sha2::Sha256::new();
        v.fingerprint(&mut h);
        hex::encode(h.finalize())
    };
    let a = fp(&strict(&f));
    assert_eq!(a, fp(&strict(&f)));
    assert_ne!(a, fp(&f.verifier(&policy("permissive", &["ca:test"], ""))));
    let other = pki();
    let f2 = f.cert("ca", "test", "root.pem", other.ca.pem().as_bytes());
    assert_ne!(a, fp(&strict(&f2)));
}

#[test]
fn mutated_timestamp_tokens_and_truncated_envelopes_never_panic() {
    use coset::TaggedCborSerializable;
    let f = ts_fixture(&read("notation-go/truststore/ca/TestTimestamp.crt"));
    let v = f.verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], TS_POLICY_EXTRA));
    let env = read("notation-go/coseWithTimestamp.sig");
    let msg = coset::CoseSign1::from_tagged_slice(&env).unwrap();
    let label = coset::Label::Text("io.cncf.notary.timestampSignature".into());
    let token = match &msg.unprotected.rest.iter().find(|(l, _)| *l == label).unwrap().1 {
        coset::cbor::value::Value::Bytes(b) => b.clone(),
        _ => unreachable!(),
    };
    let with_token = |t: Vec<u8>| {
        let mut m = msg.clone();
        for (l, val) in m.unprotected.rest.iter_mut() {
            if *l == label {
                *val = coset::cbor::value::Value::Bytes(t.clone());
            }
        }
        m.to_tagged_vec().unwrap()
    };
    // The token is unprotected, so the envelope signature still verifies and
    // every mutation reaches the RFC 3161 parser.
    // The token carries its own copy of the GlobalSign root; the trust
    // store's copy is the anchor, so damage to the token's copy is harmless.
    let root = read("notation-go/truststore/tsa/globalsignRoot.cer");
    let root_at = token.windows(root.len()).position(|w| w == root.as_slice()).expect("token carries the root");
    let step = (token.len() / 120).max(1);
    for i in (0..token.len()).step_by(step) {
        let mut t = token.clone();
        t[i] ^= 0xff;
        let o = verify_at(&v, MEDIA_TYPE_COSE, &with_token(t), TS_DIGEST, DOCKER_V2, 528, E2E_NOW);
        if matches!(o, Outcome::Verified { .. }) {
            // Only unsigned framing (the CMS version numbers) or the unused
            // root copy may change without consequence.
            assert!((root_at..root_at + root.len()).contains(&i) || i < 32, "token mutated at {i} still verified");
        }
        let o = verify_at(&v, MEDIA_TYPE_COSE, &with_token(token[..i].to_vec()), TS_DIGEST, DOCKER_V2, 528, E2E_NOW);
        assert!(matches!(o, Outcome::Refused(_)), "truncated token at {i} was accepted");
    }
    // Truncated envelopes of both kinds.
    let jws = read("notation-go/jwsWithTimestamp.sig");
    for (mt, bytes) in [(MEDIA_TYPE_COSE, &env), (MEDIA_TYPE_JWS, &jws)] {
        for n in (0..bytes.len()).step_by(97) {
            let o = verify_at(&v, mt, &bytes[..n], TS_DIGEST, DOCKER_V2, 528, E2E_NOW);
            assert!(matches!(o, Outcome::Refused(_)), "{mt} truncated at {n} was accepted");
        }
    }
}

#[test]
fn the_e2e_signature_matches_an_x509_subject_identity_under_an_exact_scope() {
    let f = Fixture::new().cert("ca", "e2e", "e2e.crt", &read("notation-cli-e2e/e2e.crt"));
    let json = format!(
        r#"{{"version":"1.0","trustPolicies":[{{"name":"e2e","registryScopes":["{SCOPE}"],"signatureVerification":{{"level":"strict"}},"trustStores":["ca:e2e"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=Notary, CN=e2e"]}}]}}"#
    );
    assert_verified_clean(&e2e("e2e-valid-signature", &f.verifier(&json), E2E_NOW));
    let json = json.replace("CN=e2e", "CN=someone-else");
    assert_refused(
        &e2e("e2e-valid-signature", &f.verifier(&json), E2E_NOW),
        &["matches none of the trusted identities of trust policy statement \"e2e\""],
    );
}
