//! Known-answer tests for Rekor v2 (rekor-tiles) log entries, on real bundles from
//! sigstore-conformance (`tests/vectors/rekor2/README.md`): a v2 entry verifies by its checkpoint,
//! its inclusion proof and an RFC 3161 timestamp, and each of those failing is refused by name.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;

use super::bundle::{verify_bundle, verify_envelope, VerifiedTime, SIGNATURE_LIMITS};
use super::cosign::{parse_sigstore_trusted_root, CosignAuthority, Expectation};
use super::rekor::{check_v2_body, verify_tlog_entry, SignedEnvelope, Signer, TlogEntry};
use super::x509::Certificate;
use crate::oci::Digest;

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/\
                        .github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
/// sha256 of `a.txt`, the artifact both happy-path bundles sign (the DSSE one as its subject).
const A_TXT: &str = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";
const DSSE: &str = "rekor2-dsse-happy-path";
/// The staging TSA of the DSSE bundle's trusted root, as the authority names it.
const TSA: &str = "rekor2-dsse-happy-path/trusted_root.json timestampAuthorities[0]";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rekor2")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(vectors().join(rel)).expect("vector")
}

fn bundle(dir: &str) -> Value {
    serde_json::from_slice(&read(&format!("{dir}/bundle.sigstore.json"))).expect("json")
}

/// A Fulcio authority on the vector's own (staging) trusted root, as a policy configures it.
fn authority(dir: &str) -> CosignAuthority {
    let fragment = format!(
        "[[cosign_certificates]]\nsigstore_trusted_root = \"{dir}/trusted_root.json\"\n\
         identity = {IDENTITY:?}\nissuer = {ISSUER:?}"
    );
    let (p, mut c) = crate::config::policy_fragment(&vectors(), &fragment);
    let mut auths = CosignAuthority::from_policy(&p, &mut c);
    assert!(c.problems.is_empty(), "{:?}", c.problems.iter().map(|p| &p.message).collect::<Vec<_>>());
    auths.remove(0)
}

fn envelope(b: &Value) -> Result<Vec<VerifiedTime>, String> {
    verify_envelope(&authority(DSSE), &serde_json::to_vec(b).expect("json"), &SIGNATURE_LIMITS).map(|(times, _)| times)
}

fn entry(b: &mut Value) -> &mut Value {
    &mut b["verificationMaterial"]["tlogEntries"][0]
}

/// Flips one bit of the decoded bytes of a base64 field and re-encodes it.
fn flip_b64(v: &mut Value, byte: usize) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(v.as_str().expect("string")).expect("base64");
    raw[byte] ^= 1;
    *v = Value::String(b64.encode(raw));
}

fn gen_time() -> OffsetDateTime {
    // genTime of the DSSE bundle's timestamp (openssl ts -reply -text), inside the certificate's
    // 10 minutes (2026-05-13 19:23:32 to 19:33:32).
    time::macros::datetime!(2026-05-13 19:23:33 UTC)
}

#[test]
fn the_real_rekor_v2_dsse_bundle_verifies_with_its_timestamp_as_the_signing_time() {
    let b = bundle(DSSE);
    let times = envelope(&b).expect("verifies");
    assert_eq!(times, vec![VerifiedTime::Rfc3161 { at: gen_time(), authority: TSA.into() }]);
    // Through the policy's entry point, everything up to the statement passes: the bundle is
    // refused only because it is SLSA provenance, not a cosign image signature.
    let d: Digest = A_TXT.parse().expect("digest");
    let exp = Expectation { digest: &d, docker_reference: None, now: gen_time() };
    let refused = verify_bundle(&authority(DSSE), &serde_json::to_vec(&b).expect("json"), &exp).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "bundle is an attestation (predicateType https://slsa.dev/provenance/v1), not an image signature \
         (https://sigstore.dev/cosign/sign/v1)"
    );
}

#[test]
fn a_rekor_v2_entry_with_a_tampered_inclusion_proof_hash_is_refused() {
    let mut b = bundle(DSSE);
    flip_b64(&mut entry(&mut b)["inclusionProof"]["hashes"][0], 5);
    assert_eq!(envelope(&b), Err("tlog inclusion proof does not lead to its rootHash".into()));
    // A root hash that is not the checkpoint's is refused too, by the proof.
    let mut b = bundle(DSSE);
    flip_b64(&mut entry(&mut b)["inclusionProof"]["rootHash"], 0);
    assert_eq!(envelope(&b), Err("tlog inclusion proof does not lead to its rootHash".into()));
}

#[test]
fn a_rekor_v2_entry_with_a_tampered_checkpoint_signature_is_refused() {
    let mut b = bundle(DSSE);
    let cp = &mut entry(&mut b)["inclusionProof"]["checkpoint"]["envelope"];
    let text = cp.as_str().expect("checkpoint").to_string();
    // The log's signature line is the first; flip a character of its signature (after the hint).
    let line = text.lines().find(|l| l.starts_with("\u{2014} log2025-alpha3")).expect("log signature").to_string();
    let (head, sig) = line.rsplit_once(' ').expect("line");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(sig).expect("sig");
    raw[10] ^= 1;
    *cp = Value::String(text.replace(&line, &format!("{head} {}", b64.encode(raw))));
    assert_eq!(
        envelope(&b),
        Err("tlog checkpoint signature does not verify with rekor2-dsse-happy-path/trusted_root.json tlogs[3]".into())
    );
    // Only the witnesses' cosignatures left: no signature by the log.
    let mut b = bundle(DSSE);
    let cp = &mut entry(&mut b)["inclusionProof"]["checkpoint"]["envelope"];
    let without: String = text.split_inclusive('\n').filter(|l| !l.starts_with("\u{2014} log2025")).collect();
    *cp = Value::String(without);
    assert_eq!(
        envelope(&b),
        Err("tlog checkpoint signature does not verify with rekor2-dsse-happy-path/trusted_root.json tlogs[3]".into())
    );
}

#[test]
fn a_rekor_v2_bundle_without_a_timestamp_is_refused() {
    let mut b = bundle(DSSE);
    b["verificationMaterial"].as_object_mut().expect("object").remove("timestampVerificationData");
    assert_eq!(
        envelope(&b),
        Err("bundle's log entry is from a Rekor v2 log, which records no signing time, and the bundle has no \
             RFC 3161 timestamp to prove one"
            .into())
    );
    // A tampered timestamp is not a time source either.
    let mut b = bundle(DSSE);
    let st = &mut b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"];
    let len = base64::engine::general_purpose::STANDARD.decode(st.as_str().expect("s")).expect("b64").len();
    flip_b64(st, len - 10);
    assert_eq!(
        envelope(&b),
        Err("bundle RFC 3161 timestamp does not verify: the TSA's signature over the timestamp does not verify".into())
    );
}

#[test]
fn a_rekor_v2_entry_that_logs_another_signature_is_refused() {
    // Swap in a different (valid DER) signature for the envelope: the log entry, whose body is
    // covered by the proof, no longer records the signature being verified. The envelope
    // signature check comes first, so bind the entry directly, as `bundle` does after it.
    let b = bundle(DSSE);
    let tr = parse_sigstore_trusted_root("tr", &read(&format!("{DSSE}/trusted_root.json"))).expect("trusted root");
    let e: TlogEntry = serde_json::from_value(b["verificationMaterial"]["tlogEntries"][0].clone()).expect("entry");
    let logged = verify_tlog_entry(&e, &tr.rekor_keys, true).expect("entry verifies");
    assert_eq!(logged.integrated_time, None);
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = &b["dsseEnvelope"];
    let payload = b64.decode(env["payload"].as_str().expect("p")).expect("b64");
    let sig = b64.decode(env["signatures"][0]["sig"].as_str().expect("s")).expect("b64");
    let signed = super::bundle::pae("application/vnd.in-toto+json", &payload);
    let cert_der = b64.decode(b["verificationMaterial"]["certificate"]["rawBytes"].as_str().expect("c")).expect("b64");
    let cert = Certificate::from_der(&cert_der).expect("cert");
    let signer = Signer::Certificate(&cert);
    let good = SignedEnvelope { payload: &payload, signed: &signed, signature: &sig };
    assert!(check_v2_body(&logged, &good, signer).is_ok());
    let mut other_sig = sig.clone();
    other_sig[12] ^= 1;
    assert_eq!(
        check_v2_body(&logged, &SignedEnvelope { signature: &other_sig, ..good }, signer),
        Err("Rekor entry records a different signature".into())
    );
    let other_signed = super::bundle::pae("application/vnd.in-toto+json", b"{}");
    assert_eq!(
        check_v2_body(&logged, &SignedEnvelope { signed: &other_signed, ..good }, signer),
        Err("Rekor entry is for another payload (payload hash mismatch)".into())
    );
    let other_cert = Certificate::from_der(&tr.timestamp_authorities[0].roots[0]).expect("cert");
    assert_eq!(
        check_v2_body(&logged, &good, Signer::Certificate(&other_cert)),
        Err("Rekor entry records a different certificate or key than the signature's".into())
    );
}

#[test]
fn the_real_rekor_v2_hashedrekord_entry_binds_to_its_artifact() {
    // The message-signature bundle (`cosign sign-blob` shape) over a.txt, in log2025-alpha1.
    let b = bundle("rekor2-happy-path");
    let tr = parse_sigstore_trusted_root("tr", &read("rekor2-happy-path/trusted_root.json")).expect("trusted root");
    let e: TlogEntry = serde_json::from_value(b["verificationMaterial"]["tlogEntries"][0].clone()).expect("entry");
    let logged = verify_tlog_entry(&e, &tr.rekor_keys, true).expect("entry verifies");
    assert_eq!(
        (logged.kind.as_str(), logged.version.as_str(), logged.integrated_time),
        ("hashedrekord", "0.0.2", None)
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64.decode(b["messageSignature"]["signature"].as_str().expect("s")).expect("b64");
    let cert_der = b64.decode(b["verificationMaterial"]["certificate"]["rawBytes"].as_str().expect("c")).expect("b64");
    let cert = Certificate::from_der(&cert_der).expect("cert");
    let artifact = read("a.txt");
    let env = SignedEnvelope { payload: &artifact, signed: &artifact, signature: &sig };
    assert!(check_v2_body(&logged, &env, Signer::Certificate(&cert)).is_ok());
    // The key verifies the signature over the artifact, so the bytes are what was signed.
    assert!(cert.public_key().expect("key").verify_cosign(&artifact, &sig).is_ok());
    // An entry naming a log the trusted root does not hold is not trusted.
    let mut v = b["verificationMaterial"]["tlogEntries"][0].clone();
    v["logId"]["keyId"] = Value::String(b64.encode([7u8; 32]));
    let forged: TlogEntry = serde_json::from_value(v).expect("entry");
    let err = verify_tlog_entry(&forged, &tr.rekor_keys, true).unwrap_err();
    assert!(err.ends_with("which is not a trusted Rekor key"), "{err}");
}

#[test]
fn the_real_no_timestamp_vector_has_a_valid_entry_but_no_time() {
    // rekor2-no-timestamp_fail: the entry itself is fine; what it lacks is a time, which is why
    // `bundle` refuses v2 entries without a verified timestamp (tested above).
    let b = bundle("rekor2-no-timestamp_fail");
    assert!(b["verificationMaterial"].get("timestampVerificationData").is_none());
    let tr = parse_sigstore_trusted_root("tr", &read("rekor2-happy-path/trusted_root.json")).expect("trusted root");
    let e: TlogEntry = serde_json::from_value(b["verificationMaterial"]["tlogEntries"][0].clone()).expect("entry");
    assert_eq!(verify_tlog_entry(&e, &tr.rekor_keys, true).expect("entry").integrated_time, None);
}

#[test]
fn a_rekor_v2_entry_without_its_proof_or_checkpoint_is_refused() {
    let mut b = bundle(DSSE);
    entry(&mut b)["inclusionProof"].as_object_mut().expect("proof").remove("checkpoint");
    assert_eq!(envelope(&b), Err("Rekor v2 tlog entry has no signed checkpoint".into()));
    let mut b = bundle(DSSE);
    entry(&mut b).as_object_mut().expect("entry").remove("inclusionProof");
    assert_eq!(envelope(&b), Err("Rekor v2 tlog entry has no inclusionProof".into()));
    // An entry that is neither v1 with a SET nor v2 is refused, whatever it proves.
    let mut b = bundle(DSSE);
    entry(&mut b)["kindVersion"]["version"] = Value::String("0.0.1".into());
    assert_eq!(
        envelope(&b),
        Err("tlog entry has no inclusionPromise (SET) and is not a Rekor v2 (0.0.2) entry".into())
    );
}

#[test]
fn a_rekor_v2_entry_outside_its_log_key_validity_is_refused() {
    // The log key of tlogs[3] starts later than the timestamp: its checkpoint is not trusted then.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tr: Value = serde_json::from_slice(&read(&format!("{DSSE}/trusted_root.json"))).expect("json");
    tr["tlogs"][3]["publicKey"]["validFor"] = serde_json::json!({"start": "2026-06-01T00:00:00Z"});
    std::fs::write(dir.path().join("tr.json"), tr.to_string()).expect("write");
    let fragment = format!(
        "[[cosign_certificates]]\nsigstore_trusted_root = \"tr.json\"\nidentity = {IDENTITY:?}\nissuer = {ISSUER:?}"
    );
    let (p, mut c) = crate::config::policy_fragment(dir.path(), &fragment);
    let auth = CosignAuthority::from_policy(&p, &mut c).remove(0);
    assert_eq!(
        verify_envelope(&auth, &serde_json::to_vec(&bundle(DSSE)).expect("json"), &SIGNATURE_LIMITS).map(|_| ()),
        Err("Rekor entry time 2026-05-13T19:23:33Z is outside the validity of tr.json tlogs[3]".into())
    );
}

/// The entry of a vector bundle, checked against its (shared) trusted root.
fn tlog_outcome(dir: &str, root_dir: &str) -> Result<(), String> {
    let b = bundle(dir);
    let tr = parse_sigstore_trusted_root("tr", &read(&format!("{root_dir}/trusted_root.json"))).expect("trusted root");
    let e: TlogEntry = serde_json::from_value(b["verificationMaterial"]["tlogEntries"][0].clone()).expect("entry");
    verify_tlog_entry(&e, &tr.rekor_keys, true).map(|_| ())
}

#[test]
fn the_conformance_checkpoint_and_proof_vectors_give_their_expected_outcomes() {
    // Upstream's expectation is in the name (`_fail`: must be refused); the reason is ours.
    let root = "rekor2-happy-path";
    let signature = Err("tlog checkpoint signature does not verify with tr tlogs[1]".to_string());
    let short = Err("tlog checkpoint has fewer than three lines".to_string());
    let cases = [
        ("rekor2-happy-path", Ok(())),
        ("rekor2-no-timestamp_fail", Ok(())), // refused by `bundle` for its missing timestamp
        ("rekor2-checkpoint-cosigned", Ok(())),
        ("rekor2-checkpoint-multiple-cosigs", Ok(())),
        ("rekor2-checkpoint-origin-not-first", Ok(())),
        ("rekor2-checkpoint-two-sigs-cosigned", Ok(())),
        ("rekor2-checkpoint-two-sigs-from-origin", Ok(())),
        ("rekor2-checkpoint-missing-log-signature_fail", signature.clone()),
        ("rekor2-checkpoint-no-matching-signature_fail", signature),
        ("rekor2-checkpoint-missing-origin_fail", short.clone()),
        ("rekor2-checkpoint-missing-root-hash_fail", short.clone()),
        ("rekor2-checkpoint-missing-size_fail", short),
        ("rekor2-no-inclusion-proof_fail", Err("Rekor v2 tlog entry has no inclusionProof".into())),
    ];
    for (dir, expected) in cases {
        assert_eq!(tlog_outcome(dir, root), expected, "{dir}");
    }
}

#[test]
fn the_conformance_dsse_vectors_give_their_expected_outcomes() {
    let cases = [
        (DSSE, Ok(())),
        (
            "rekor2-dsse-invalid-sig_fail",
            Err("signature does not verify with its certificate's key (payload altered?)"),
        ),
        ("rekor2-dsse-mismatch-envelope_fail", Err("Rekor entry is for another payload (payload hash mismatch)")),
        ("rekor2-dsse-mismatch-sig_fail", Err("Rekor entry records a different signature")),
    ];
    for (dir, expected) in cases {
        assert_eq!(envelope(&bundle(dir)).map(|_| ()), expected.map_err(String::from), "{dir}");
        // Every entry is itself a valid log entry: what fails is its binding to the envelope.
        assert_eq!(tlog_outcome(dir, DSSE), Ok(()), "{dir}");
    }
}
