//! Cosign attestations: a DSSE envelope over an in-toto Statement about the image, signed by an
//! authority a policy trusts. Pure, like `cosign` and `bundle`: the caller fetches the bytes.
//!
//! Two layouts, as cosign writes them:
//! * the `sha256-<hex>.att` tag (`cosign attest` before v3): one layer per attestation, of media
//!   type `application/vnd.dsse.envelope.v1+json`, whose blob is the envelope itself and whose
//!   annotations carry the certificate (`dev.sigstore.cosign/certificate`, `…/chain`) and the
//!   Rekor bundle, exactly as for signatures;
//! * a Sigstore bundle attached as an OCI referrer (cosign v3, GitHub's attest actions), verified
//!   by `bundle::verify_envelope` exactly as a signature bundle is: PAE signature, Rekor entry with
//!   inclusion proof, timestamps, certificate at the signing time.
//!
//! After the signature, the statement: an in-toto Statement (v0.1 or v1) one of whose subjects has
//! the served digest. The subject's `name` is not compared with the repository: an attestation is
//! about content (what built these bytes, what a scan found in them), which a copy does not
//! change, and the image's signature, which a policy requires as well, binds the repository.
//!
//! A `.att` layer under an authority that requires a log (a key with `rekor_keys`, any
//! certificate authority with a Rekor key, i.e. every keyless Fulcio setup) must carry its Rekor
//! v1 bundle (`dev.sigstore.cosign/bundle`), verified as cosign does
//! (`rekor::verify_attestation_bundle`): the SignedEntryTimestamp with a trusted log key, then
//! the logged body bound to this layer: an `intoto` 0.0.1 entry (what `cosign attest` uploaded
//! until v2.2), `intoto` 0.0.2 (other clients) or `dsse` 0.0.1 (cosign since v2.2) recording
//! sha256 of the envelope bytes, sha256 of the payload, the signature that verified (0.0.2 and
//! dsse) and the same certificate or key. The certificate is then checked at the entry's
//! integratedTime. Any other kind or version is refused. Without a log, the certificate is
//! checked now.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use time::OffsetDateTime;

use super::bundle::{self, Envelope, EnvelopeLimits, IN_TOTO_PAYLOAD_TYPE, STATEMENT_TYPES};
use super::cosign::{self, CosignAuthority};
use super::keys::truncate;
use super::rekor::{self, strip_whitespace, AttestedEnvelope, Signer};
use crate::oci::Digest;

/// The media type of a `.att` layer.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The `.att` layer annotation cosign copies the predicate type into (unsigned: only a hint for
/// what to fetch).
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// An envelope or bundle: SBOMs of large images run to a few MiB.
pub const MAX_ENVELOPE_BYTES: usize = 4 << 20;
/// The decoded statement, and so the most a condition ever evaluates over.
pub const MAX_STATEMENT_BYTES: usize = 3 << 20;
/// Cosign writes one signature per envelope; DSSE allows several.
const MAX_SIGNATURES: usize = 4;
const MAX_SIGNATURE_B64: usize = 4 << 10;

const LIMITS: EnvelopeLimits = EnvelopeLimits { bundle: MAX_ENVELOPE_BYTES, statement: MAX_STATEMENT_BYTES };

/// One attestation as found, in either layout.
#[derive(Clone, Debug)]
pub enum Attestation {
    /// A `.att` layer: the envelope bytes and the layer's annotations.
    Layer { envelope: Vec<u8>, annotations: BTreeMap<String, String> },
    /// A Sigstore bundle referrer.
    Bundle(Vec<u8>),
}

/// What a verified attestation says.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// Verifies `att` with `auth` and checks that it is about `digest`; returns what it says.
pub fn verify(
    auth: &CosignAuthority,
    att: &Attestation,
    digest: &Digest,
    now: OffsetDateTime,
) -> Result<Statement, String> {
    let payload = match att {
        Attestation::Bundle(json) => bundle::verify_envelope(auth, json, &LIMITS)?.1,
        Attestation::Layer { envelope, annotations } => verify_layer(auth, envelope, annotations, now)?,
    };
    statement(&payload, digest)
}

/// The `.att` layout: the envelope's signature over PAE, with the key or the annotated
/// certificate; then, when the authority requires a log, the layer's Rekor bundle, whose entry
/// must bind this very envelope, payload, signature and signer (`rekor::verify_attestation_bundle`).
/// A certificate is checked at the log's integratedTime when there is one, and now otherwise.
fn verify_layer(
    auth: &CosignAuthority,
    envelope: &[u8],
    annotations: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(format!("DSSE envelope is {} bytes, more than the {MAX_ENVELOPE_BYTES} allowed", envelope.len()));
    }
    let env: Envelope = serde_json::from_slice(envelope).map_err(|e| format!("DSSE envelope is malformed: {e}"))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!("DSSE payloadType {} is not {IN_TOTO_PAYLOAD_TYPE}", truncate(&env.payload_type, 100)));
    }
    let payload = b64.decode(strip_whitespace(&env.payload)).map_err(|_| "DSSE payload is not valid base64")?;
    if payload.len() > MAX_STATEMENT_BYTES {
        return Err(format!("DSSE payload is more than the {MAX_STATEMENT_BYTES} bytes allowed"));
    }
    if env.signatures.is_empty() || env.signatures.len() > MAX_SIGNATURES {
        return Err(format!("DSSE envelope has {} signatures; expected 1 to {MAX_SIGNATURES}", env.signatures.len()));
    }
    let signed = bundle::pae(&env.payload_type, &payload);
    let (CosignAuthority::Key { rekor, .. } | CosignAuthority::Certificate { rekor, .. }) = auth;
    let (key, certificate, what) = match auth {
        CosignAuthority::Key { key, .. } => (key.clone(), None, "signature by an untrusted key"),
        CosignAuthority::Certificate { .. } => {
            let (leaf, chain) = cosign::signature_certificates(annotations)?;
            (leaf.public_key()?, Some((leaf, chain)), "signature does not verify with its certificate's key")
        }
    };
    let signature = env
        .signatures
        .iter()
        .filter(|s| s.sig.len() <= MAX_SIGNATURE_B64)
        .filter_map(|s| b64.decode(strip_whitespace(&s.sig)).ok())
        .find(|sig| key.verify_cosign(&signed, sig).is_ok())
        .ok_or_else(|| format!("{what} (or over an altered payload)"))?;
    let logged_at = if rekor.is_empty() {
        None
    } else {
        let bundle = annotations
            .get(cosign::ANNOTATION_BUNDLE)
            .ok_or("attestation has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one")?;
        let signer = match &certificate {
            Some((leaf, _)) => Signer::Certificate(leaf),
            None => Signer::Key(&key),
        };
        let attested =
            AttestedEnvelope { envelope, payload_type: &env.payload_type, payload: &payload, signature: &signature };
        let t = rekor::verify_attestation_bundle(bundle, rekor, &attested, signer)?;
        Some(OffsetDateTime::from_unix_timestamp(t).map_err(|_| "Rekor integratedTime is out of range")?)
    };
    if let Some((leaf, chain)) = certificate {
        cosign::check_certificate(auth, &leaf, chain, logged_at.unwrap_or(now))?;
    }
    Ok(payload)
}

/// The authenticated statement: an in-toto Statement with a subject of `digest`.
fn statement(payload: &[u8], digest: &Digest) -> Result<Statement, String> {
    let st: RawStatement =
        serde_json::from_slice(payload).map_err(|e| format!("signed statement is not an in-toto Statement: {e}"))?;
    match st.statement_type.as_deref() {
        Some(t) if STATEMENT_TYPES.contains(&t) => {}
        Some(t) => return Err(format!("signed statement type {} is not an in-toto Statement", truncate(t, 100))),
        None => return Err("signed statement has no _type".into()),
    }
    let predicate_type = st.predicate_type.ok_or("signed statement has no predicateType")?;
    let digests: Vec<&str> = st.subject.iter().filter_map(|s| s.digest.get("sha256").map(String::as_str)).collect();
    if !digests.iter().any(|d| d.eq_ignore_ascii_case(digest.hex())) {
        if digests.is_empty() {
            return Err("signed statement has no subject with a sha256 digest".into());
        }
        let named: Vec<String> = digests.iter().take(3).map(|d| format!("sha256:{}", truncate(d, 64))).collect();
        return Err(format!("statement digest mismatch: attestation is for {} not {digest}", named.join(", ")));
    }
    Ok(Statement { predicate_type, predicate: st.predicate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rekor::tests::bundle_with_body;
    use crate::verify::test_support::{authority_in, fulcio, now, vectors};
    use crate::verify::x509::tests::{leaf_params, TestCa, NOW};
    use p256::ecdsa::signature::Signer as _;
    use serde_json::json;
    use sha2::{Digest as _, Sha256};

    const ANNOTATION_BUNDLE: &str = cosign::ANNOTATION_BUNDLE;

    /// A `.att` vector folder: the layer blob and its annotations.
    fn layer(dir: &str) -> (Vec<u8>, BTreeMap<String, String>) {
        let d = vectors().join("att").join(dir);
        let envelope = std::fs::read(d.join("envelope.json")).expect("envelope");
        let annotations =
            serde_json::from_slice(&std::fs::read(d.join("annotations.json")).expect("ann")).expect("json");
        (envelope, annotations)
    }

    fn verify_layer_vector(
        auth: &CosignAuthority,
        envelope: &[u8],
        annotations: &BTreeMap<String, String>,
        digest: &str,
    ) -> Result<Statement, String> {
        let att = Attestation::Layer { envelope: envelope.to_vec(), annotations: annotations.clone() };
        verify(auth, &att, &digest.parse().expect("digest"), now())
    }

    const SLSA_GENERATOR: &str = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/heads/main";
    const GITHUB_ACTIONS: &str = "https://token.actions.githubusercontent.com";
    const GITHUB_OAUTH: &str = "https://github.com/login/oauth";
    const ZLABJP_IMAGE: &str = "sha256:3dbd76ff6dc789a8bfd7b3303b15dd6fbac052af442f830b2eb527ab26976cf3";
    const COSIGN_IMAGE: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";

    // ---- Known answers: real entries in the public-good Rekor log ----

    #[test]
    fn the_published_att_layer_with_an_intoto_0_0_1_entry_verifies_at_its_log_time() {
        let (envelope, annotations) = layer("zlabjp-intoto-v001");
        let auth = fulcio(SLSA_GENERATOR, GITHUB_ACTIONS);
        let st = verify_layer_vector(&auth, &envelope, &annotations, ZLABJP_IMAGE).expect("verifies");
        assert_eq!(st.predicate_type, "https://slsa.dev/provenance/v0.2");
        assert_eq!(st.predicate["invocation"]["configSource"]["entryPoint"], ".github/workflows/slsa-provenance.yml");
        // The certificate lived ten minutes in March 2023: only the log's time makes it valid.
        assert_eq!(
            verify_layer_vector(&auth, &envelope, &annotations, COSIGN_IMAGE).unwrap_err(),
            format!("statement digest mismatch: attestation is for {ZLABJP_IMAGE} not {COSIGN_IMAGE}")
        );
    }

    #[test]
    fn the_published_intoto_0_0_1_layer_is_refused_when_tampered() {
        let (envelope, annotations) = layer("zlabjp-intoto-v001");
        let auth = fulcio(SLSA_GENERATOR, GITHUB_ACTIONS);
        let check = |env: &[u8], ann: &BTreeMap<String, String>| {
            verify_layer_vector(&auth, env, ann, ZLABJP_IMAGE).map(|_| ()).unwrap_err()
        };
        // Re-serialized (a trailing space): the signature still verifies, the logged hash does not.
        let mut spaced = envelope.clone();
        spaced.push(b' ');
        assert_eq!(check(&spaced, &annotations), "Rekor entry is for another envelope (envelope hash mismatch)");
        // Another real entry of the same log, for another envelope.
        let (_, other) = layer("cosign-dsse-v001");
        let mut swapped = annotations.clone();
        swapped.insert(ANNOTATION_BUNDLE.into(), other[ANNOTATION_BUNDLE].clone());
        assert_eq!(check(&envelope, &swapped), "Rekor entry is for another envelope (envelope hash mismatch)");
        // A changed integratedTime is no longer what the log signed.
        let mut late = annotations.clone();
        late.insert(
            ANNOTATION_BUNDLE.into(),
            annotations[ANNOTATION_BUNDLE].replace("\"integratedTime\":1678176390", "\"integratedTime\":1678176391"),
        );
        assert_eq!(
            check(&envelope, &late),
            "Rekor SignedEntryTimestamp does not verify with cosign/sigstore-rs/trusted_root.json tlogs[0]"
        );
        let mut bare = annotations.clone();
        bare.remove(ANNOTATION_BUNDLE);
        assert_eq!(
            check(&envelope, &bare),
            "attestation has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one"
        );
        // Another identity is refused at the certificate, after the log.
        let other_id = fulcio("https://github.com/acme/.github/workflows/release.yml@refs/heads/main", GITHUB_ACTIONS);
        assert!(verify_layer_vector(&other_id, &envelope, &annotations, ZLABJP_IMAGE)
            .unwrap_err()
            .starts_with("certificate identity https://github.com/slsa-framework/"));
    }

    #[test]
    fn the_cosign_attest_envelope_with_its_dsse_0_0_1_entry_verifies_as_a_layer() {
        let (envelope, annotations) = layer("cosign-dsse-v001");
        let auth = fulcio("cody@soyland.com", GITHUB_OAUTH);
        let st = verify_layer_vector(&auth, &envelope, &annotations, COSIGN_IMAGE).expect("verifies");
        assert_eq!(st.predicate_type, "https://cosign.sigstore.dev/attestation/v1");
        // The certificate of another real entry does not verify this envelope's signature.
        let (_, zlabjp) = layer("zlabjp-intoto-v001");
        let mut other_cert = annotations.clone();
        other_cert.insert(cosign::ANNOTATION_CERTIFICATE.into(), zlabjp[cosign::ANNOTATION_CERTIFICATE].clone());
        assert_eq!(
            verify_layer_vector(&auth, &envelope, &other_cert, COSIGN_IMAGE).unwrap_err(),
            "signature does not verify with its certificate's key (or over an altered payload)"
        );
    }

    #[test]
    fn the_sigstore_js_intoto_0_0_2_entry_binds_its_envelope_signature_and_certificate() {
        let (envelope, annotations) = layer("sigstore-js-intoto-v002");
        let auth = fulcio("brian@dehamer.com", GITHUB_OAUTH);
        // Everything up to the statement verifies (SET, body, signature, certificate at the log
        // time); the payload of this demo is plain text, so the statement is what is refused.
        let err = verify_layer_vector(&auth, &envelope, &annotations, COSIGN_IMAGE).unwrap_err();
        assert!(err.starts_with("signed statement is not an in-toto Statement"), "{err}");
        let (CosignAuthority::Certificate { rekor, .. } | CosignAuthority::Key { rekor, .. }) = &auth;
        let env: Envelope = serde_json::from_slice(&envelope).expect("envelope");
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(&env.payload).expect("payload");
        let sig = b64.decode(&env.signatures[0].sig).expect("sig");
        let (leaf, _) = cosign::signature_certificates(&annotations).expect("cert");
        let attested = AttestedEnvelope {
            envelope: &envelope,
            payload_type: &env.payload_type,
            payload: &payload,
            signature: &sig,
        };
        let bundle = &annotations[ANNOTATION_BUNDLE];
        assert_eq!(
            rekor::verify_attestation_bundle(bundle, rekor, &attested, Signer::Certificate(&leaf)),
            Ok(1_691_781_533)
        );
        let mut other_sig = sig.clone();
        other_sig[10] ^= 1;
        let forged = AttestedEnvelope { signature: &other_sig, ..attested };
        assert_eq!(
            rekor::verify_attestation_bundle(bundle, rekor, &forged, Signer::Certificate(&leaf)),
            Err("Rekor entry records a different signature".into())
        );
        let other_payload = AttestedEnvelope { payload: b"content to be signed", ..attested };
        assert_eq!(
            rekor::verify_attestation_bundle(bundle, rekor, &other_payload, Signer::Certificate(&leaf)),
            Err("Rekor entry is for another payload (payload hash mismatch)".into())
        );
        let (other_leaf, _) = cosign::signature_certificates(&layer("cosign-dsse-v001").1).expect("cert");
        assert_eq!(
            rekor::verify_attestation_bundle(bundle, rekor, &attested, Signer::Certificate(&other_leaf)),
            Err("Rekor entry records a different certificate or key than the signature's".into())
        );
    }

    // ---- Constructed entries: every binding field, for every kind ----

    /// A signer key, a test CA and a test log, in a directory a policy can name.
    struct Fixture {
        dir: tempfile::TempDir,
        key: p256::ecdsa::SigningKey,
        log: p256::ecdsa::SigningKey,
        ca: TestCa,
    }

    fn pem_of(sk: &p256::ecdsa::SigningKey) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        sk.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem")
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let log = p256::ecdsa::SigningKey::from_slice(&[8u8; 32]).expect("key");
        let ca = TestCa::new("Test Fulcio");
        std::fs::write(dir.path().join("key.pub"), pem_of(&key)).expect("write");
        std::fs::write(dir.path().join("rekor.pub"), pem_of(&log)).expect("write");
        std::fs::write(dir.path().join("ca.pem"), ca.root.pem()).expect("write");
        Fixture { dir, key, log, ca }
    }

    const DIGEST: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";

    /// An envelope over a statement about DIGEST signed by `sk`: its bytes, payload and signature.
    fn envelope(sk: &p256::ecdsa::SigningKey, predicate: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = serde_json::to_vec(&json!({"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "r.example/app", "digest": {"sha256": &DIGEST[7..]}}],
            "predicateType": "https://slsa.dev/provenance/v1", "predicate": {"p": predicate}}))
        .expect("json");
        let sig: p256::ecdsa::Signature = sk.sign(&bundle::pae(IN_TOTO_PAYLOAD_TYPE, &payload));
        let sig = sig.to_der().as_bytes().to_vec();
        let env = json!({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": b64.encode(&payload),
            "signatures": [{"keyid": "", "sig": b64.encode(&sig)}]});
        (serde_json::to_vec(&env).expect("json"), payload, sig)
    }

    fn sha(b: &[u8]) -> serde_json::Value {
        json!({"algorithm": "sha256", "value": hex::encode(Sha256::digest(b))})
    }

    /// The body `kind` ("intoto 0.0.1", "intoto 0.0.2", "dsse 0.0.1") logs for an envelope.
    fn body(kind: &str, envelope: &[u8], payload: &[u8], sig: &[u8], signer_pem: &str) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b64.encode(signer_pem);
        match kind {
            "intoto 0.0.1" => json!({"apiVersion": "0.0.1", "kind": "intoto", "spec": {
                "content": {"hash": sha(envelope), "payloadHash": sha(payload)}, "publicKey": key}}),
            "intoto 0.0.2" => json!({"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
                "envelope": {"payloadType": IN_TOTO_PAYLOAD_TYPE,
                    "signatures": [{"sig": b64.encode(b64.encode(sig)), "publicKey": key}]},
                "hash": sha(envelope), "payloadHash": sha(payload)}}}),
            "dsse 0.0.1" => json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
                "envelopeHash": sha(envelope), "payloadHash": sha(payload),
                "signatures": [{"signature": b64.encode(sig), "verifier": key}]}}),
            other => panic!("{other}"),
        }
    }

    const KINDS: [&str; 3] = ["intoto 0.0.1", "intoto 0.0.2", "dsse 0.0.1"];

    fn with_bundle(bundle: String) -> BTreeMap<String, String> {
        BTreeMap::from([(ANNOTATION_BUNDLE.to_string(), bundle)])
    }

    #[test]
    fn a_keyed_att_layer_verifies_with_each_entry_kind_and_refuses_an_entry_for_anything_else() {
        let f = fixture();
        let auth = authority_in(f.dir.path(), "cosign_keys = [\"key.pub\"]\nrekor_keys = [\"rekor.pub\"]");
        let signer = pem_of(&f.key);
        let other_key = pem_of(&p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("key"));
        let (env, payload, sig) = envelope(&f.key, "a");
        let (other_env, other_payload, other_sig) = envelope(&f.key, "b");
        let check = |body: serde_json::Value| {
            let ann = with_bundle(bundle_with_body(&f.log, &body, NOW - 3600));
            verify_layer_vector(&auth, &env, &ann, DIGEST).map(|s| s.predicate_type)
        };
        for kind in KINDS {
            assert_eq!(check(body(kind, &env, &payload, &sig, &signer)), Ok("https://slsa.dev/provenance/v1".into()));
            // Each field that binds the entry, taken from another envelope or signer.
            let another_envelope = Err("Rekor entry is for another envelope (envelope hash mismatch)".to_string());
            assert_eq!(check(body(kind, &other_env, &payload, &sig, &signer)), another_envelope, "{kind}");
            assert_eq!(
                check(body(kind, &env, &env, &sig, &signer)),
                Err("Rekor entry is for another payload (payload hash mismatch)".into()),
                "{kind}"
            );
            assert_eq!(
                check(body(kind, &env, &payload, &sig, &other_key)),
                Err("Rekor entry records a different certificate or key than the signature's".into()),
                "{kind}"
            );
            if kind != "intoto 0.0.1" {
                // intoto 0.0.1 logs no signature: its envelope hash covers it.
                assert_eq!(
                    check(body(kind, &env, &payload, &other_sig, &signer)),
                    Err("Rekor entry records a different signature".into()),
                    "{kind}"
                );
            }
            // The whole entry of another envelope (a valid SET) is refused.
            assert_eq!(check(body(kind, &other_env, &other_payload, &other_sig, &signer)), another_envelope);
        }
        // The oldest intoto entries carry no payloadHash; the envelope hash covers the payload.
        let mut old = body("intoto 0.0.1", &env, &payload, &sig, &signer);
        old["spec"]["content"].as_object_mut().expect("content").remove("payloadHash");
        assert!(check(old).is_ok());
        let mut typed = body("intoto 0.0.2", &env, &payload, &sig, &signer);
        typed["spec"]["content"]["envelope"]["payloadType"] = json!("text/plain");
        assert_eq!(check(typed), Err("Rekor entry is for another payload type (text/plain)".into()));
        let mut unknown = body("dsse 0.0.1", &env, &payload, &sig, &signer);
        unknown["apiVersion"] = json!("0.0.2");
        assert_eq!(
            check(unknown),
            Err("Rekor entry is a dsse 0.0.2 entry, not an attestation entry (intoto 0.0.1 or 0.0.2, dsse 0.0.1)"
                .into())
        );
        let hashedrekord = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {}});
        assert!(check(hashedrekord).unwrap_err().starts_with("Rekor entry is a hashedrekord 0.0.1 entry"));
        let mut malformed = body("intoto 0.0.2", &env, &payload, &sig, &signer);
        malformed["spec"]["content"].as_object_mut().expect("content").remove("envelope");
        assert!(check(malformed).unwrap_err().starts_with("Rekor intoto 0.0.2 entry is malformed"));
        // A SET by a log the policy does not trust.
        let rogue = p256::ecdsa::SigningKey::from_slice(&[10u8; 32]).expect("key");
        let ann = with_bundle(bundle_with_body(&rogue, &body("dsse 0.0.1", &env, &payload, &sig, &signer), NOW));
        let err = verify_layer_vector(&auth, &env, &ann, DIGEST).unwrap_err();
        assert!(
            err.starts_with("Rekor bundle is from log ") && err.ends_with("which is not a trusted Rekor key"),
            "{err}"
        );
        assert_eq!(
            verify_layer_vector(&auth, &env, &BTreeMap::new(), DIGEST).unwrap_err(),
            "attestation has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one"
        );
    }

    #[test]
    fn a_keyless_att_layer_is_checked_at_its_log_time_and_bound_to_its_certificate() {
        let f = fixture();
        let auth = authority_in(
            f.dir.path(),
            "[[cosign_certificates]]\nroots = \"ca.pem\"\nidentity = \"release@acme.example\"\nrekor_key = \"rekor.pub\"",
        );
        // A ten-minute leaf, long expired by NOW.
        let mut p = leaf_params("release@acme.example", None);
        p.not_before = rcgen::date_time_ymd(2026, 3, 1);
        p.not_after = p.not_before + std::time::Duration::from_secs(600);
        let (leaf, sk, _) = f.ca.issue(p.clone());
        let (other_leaf, _, _) = f.ca.issue(p);
        let pem = |c: &crate::verify::x509::Certificate| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&c.der);
            format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
        };
        let (env, payload, sig) = envelope(&sk, "a");
        let signed_at = rcgen::date_time_ymd(2026, 3, 1).unix_timestamp() + 60;
        let layer_at = |cert: &str, logged: &str, t: i64| {
            let mut ann = with_bundle(bundle_with_body(&f.log, &body("dsse 0.0.1", &env, &payload, &sig, logged), t));
            ann.insert(cosign::ANNOTATION_CERTIFICATE.into(), cert.to_string());
            verify_layer_vector(&auth, &env, &ann, DIGEST).map(|s| s.predicate_type)
        };
        let (mine, theirs) = (pem(&leaf), pem(&other_leaf));
        assert_eq!(layer_at(&mine, &mine, signed_at), Ok("https://slsa.dev/provenance/v1".into()));
        let late = layer_at(&mine, &mine, signed_at + 3600).unwrap_err();
        assert_eq!(late, "certificate expired at 2026-03-01T00:10:00Z");
        assert_eq!(
            layer_at(&mine, &theirs, signed_at),
            Err("Rekor entry records a different certificate or key than the signature's".into())
        );
        // The same public key in another form (a PUBLIC KEY PEM) is the same signer.
        let spki = pem_of(&sk);
        assert!(layer_at(&mine, &spki, signed_at).is_ok());
    }
}
