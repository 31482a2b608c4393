//! Cosign v3 "format C" end to end: a Sigstore bundle (DSSE over an in-toto
//! statement) attached to the image as an OCI referrer, found through the
//! `sha256-<hex>` tag index of the real registry (distribution 2.8 has no
//! referrers API) or through the referrers API of a scripted upstream, and
//! verified by the real sigmirror binary.
//!
//! No third-party bundle signer runs offline, so these bundles are signed here
//! with a P-256 key, the way `cosign sign --key` lays them out (key-made, no
//! transparency log). The real cosign v3 bundle bytes are covered by the
//! known-answer tests in `src/verify/bundle.rs`.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use sha2::{Digest as _, Sha256};
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// A deterministic P-256 signing key.
fn key(label: &str) -> p256::ecdsa::SigningKey {
    let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    p256::ecdsa::SigningKey::from_slice(&seed).expect("P-256 key")
}

fn public_pem(k: &p256::ecdsa::SigningKey) -> String {
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    k.verifying_key().to_public_key_pem(LineEnding::LF).expect("PEM")
}

/// A v0.3 bundle as `cosign sign --key --tlog-upload=false` (v3) writes it:
/// a DSSE envelope over `{"_type","subject":[{"digest":{"sha256"}}],"predicateType"}`.
fn bundle(k: &p256::ecdsa::SigningKey, digest: &str, predicate: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": &digest["sha256:".len()..]}, "annotations": {}}],
        "predicateType": predicate,
    }))
    .unwrap();
    let payload_type = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let sig: p256::ecdsa::Signature = k.sign(&pae);
    serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64.encode(&statement),
            "payloadType": payload_type,
            "signatures": [{"sig": b64.encode(sig.to_der().as_bytes())}]
        }
    }))
    .unwrap()
}

/// The referrer manifest cosign v3 pushes for a bundle blob, and its index
/// descriptor (with the annotations a registry copies in).
fn referrer(
    bundle_digest: &str,
    bundle_len: usize,
    subject: &Pushed,
    predicate: Option<&str>,
) -> (Vec<u8>, serde_json::Value) {
    let mut annotations = serde_json::json!({"dev.sigstore.bundle.content": "dsse-envelope"});
    if let Some(p) = predicate {
        annotations["dev.sigstore.bundle.predicateType"] = p.into();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": bundle_digest, "size": bundle_len}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": annotations,
    }))
    .unwrap();
    let descriptor = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(&manifest),
        "size": manifest.len(),
        "artifactType": BUNDLE,
        "annotations": annotations,
    });
    (manifest, descriptor)
}

fn index_of(descriptors: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}))
        .unwrap()
}

/// Pushes each bundle as a referrer of `image` and maintains the
/// `sha256-<hex>` tag index, as clients must for a registry without a
/// referrers API.
fn attach(registry: &Registry, image: &Pushed, bundles: &[(Vec<u8>, Option<&str>)]) {
    push_blob(&registry.host, REPO, b"{}");
    let mut descriptors = Vec::new();
    for (bytes, predicate) in bundles {
        let digest = push_blob(&registry.host, REPO, bytes);
        let (manifest, descriptor) = referrer(&digest, bytes.len(), image, *predicate);
        push_raw_manifest(&registry.host, REPO, &sha256_digest(&manifest), OCI_MANIFEST, &manifest);
        descriptors.push(descriptor);
    }
    let tag = image.digest.replace(':', "-");
    push_raw_manifest(&registry.host, REPO, &tag, OCI_INDEX, &index_of(descriptors));
}

/// A mirror whose enforcing policy trusts `k` (as `release.pub`, no Rekor key).
fn mirror_trusting(upstream: &str, k: &p256::ecdsa::SigningKey) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), public_pem(k)).unwrap();
    let policy = "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
                  cosign_keys = [\"release.pub\"]\n";
    Sigmirror::start_in(dir, &mirror_config(upstream, policy))
}

fn get(m: &Sigmirror, reference: &str) -> Response {
    http("GET", &format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

/// Asserts a 403 DENIED whose message names the policy, the image and `reason`.
fn assert_refused(r: &Response, digest: &str, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with(&format!("policy releases refused registry.test/{REPO}@{digest}")), "{msg}");
    assert!(msg.contains(reason), "message should say {reason:?}: {msg}");
}

#[test]
fn an_image_signed_with_a_cosign_v3_bundle_is_served_through_the_referrers_tag_schema() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-signed");
    let k = key("release");
    attach(&registry, &image, &[(bundle(&k, &image.digest, SIGN_PREDICATE), Some(SIGN_PREDICATE))]);
    let m = mirror_trusting(&registry.url(), &k);
    for reference in ["v1", image.digest.as_str()] {
        let r = get(&m, reference);
        assert_eq!(r.status, 200, "{reference}: {}\n{}", r.text(), m.logs());
        assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()));
        assert_eq!(r.body, image.manifest);
    }
    let logs = m.logs();
    assert!(logs.contains("cosign key release.pub (sigstore bundle)"), "the decision should name the format:\n{logs}");
}

#[test]
fn a_bundle_whose_statement_names_another_digest_is_refused() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-replayed");
    let other = push_image(&registry.host, REPO, "v2", "bundle-other");
    let k = key("release");
    // A genuine signature for `other`, attached to `image`.
    attach(&registry, &image, &[(bundle(&k, &other.digest, SIGN_PREDICATE), Some(SIGN_PREDICATE))]);
    let m = mirror_trusting(&registry.url(), &k);
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        &format!(
            "key release.pub: sigstore bundle: statement digest mismatch: signature is for {} not {}",
            other.digest, image.digest
        ),
    );
}

#[test]
fn an_attestation_bundle_is_refused_as_not_an_image_signature() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-attested");
    let k = key("release");
    let provenance = "https://slsa.dev/provenance/v1";
    // Without the predicateType annotation the bundle is fetched, verified, and its signed claim refused.
    attach(&registry, &image, &[(bundle(&k, &image.digest, provenance), None)]);
    let m = mirror_trusting(&registry.url(), &k);
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        "key release.pub: sigstore bundle: bundle is an attestation (predicateType https://slsa.dev/provenance/v1), \
         not an image signature (https://sigstore.dev/cosign/sign/v1)",
    );
    // With it, the attestation is skipped unfetched and the image counts as unsigned.
    let image2 = push_image(&registry.host, REPO, "v2", "bundle-attested-annotated");
    attach(&registry, &image2, &[(bundle(&k, &image2.digest, provenance), Some(provenance))]);
    assert_refused(
        &get(&m, "v2"),
        &image2.digest,
        &format!(
            "no cosign signature found (no tag {}.sig in {REPO}; no sigstore bundle referrer but 1 attestation bundle(s))",
            image2.digest.replace(':', "-")
        ),
    );
}

#[test]
fn a_bundle_signed_by_another_key_is_refused_as_untrusted() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-wrong-key");
    attach(&registry, &image, &[(bundle(&key("intruder"), &image.digest, SIGN_PREDICATE), Some(SIGN_PREDICATE))]);
    let m = mirror_trusting(&registry.url(), &key("release"));
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        "key release.pub: sigstore bundle: signature by an untrusted key (or over an altered payload)",
    );
}

#[test]
fn an_unsigned_image_is_refused_naming_both_signature_formats() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-unsigned");
    let m = mirror_trusting(&registry.url(), &key("release"));
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        &format!(
            "key release.pub: no cosign signature found (no tag {}.sig in {REPO}; no sigstore bundle referrer)",
            image.digest.replace(':', "-")
        ),
    );
}

#[test]
fn a_valid_bundle_satisfies_the_key_even_when_the_sig_tag_holds_a_bad_signature() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "bundle-and-sig");
    let k = key("release");
    signing::sign_and_push(
        &registry.host,
        REPO,
        &image.digest,
        &signing::CosignKey::generate(),
        "registry.test/team-a/app",
    );
    let m = mirror_trusting(&registry.url(), &k);
    assert_refused(&get(&m, "v1"), &image.digest, "key release.pub: signature by an untrusted key");
    attach(&registry, &image, &[(bundle(&k, &image.digest, SIGN_PREDICATE), Some(SIGN_PREDICATE))]);
    let m = mirror_trusting(&registry.url(), &k);
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
}

/// A scripted upstream with the referrers API: the image, the API's answer
/// for it, and each referrer manifest with its bundle blob.
fn mock_with_referrers(image: &Pushed, referrers: &[(Vec<u8>, Vec<u8>, serde_json::Value)]) -> MockUpstream {
    let mock = MockUpstream::start();
    mock.serve_image(REPO, "v1", image);
    let mut descriptors = Vec::new();
    for (manifest, blob, descriptor) in referrers {
        mock.manifest(REPO, &sha256_digest(manifest), OCI_MANIFEST, manifest);
        mock.blob(REPO, &sha256_digest(blob), blob);
        descriptors.push(descriptor.clone());
    }
    mock.set(
        &format!("/v2/{REPO}/referrers/{}", image.digest),
        Reply::Full {
            status: 200,
            headers: vec![
                ("Content-Type".into(), OCI_INDEX.into()),
                ("OCI-Filters-Applied".into(), "artifactType".into()),
            ],
            body: index_of(descriptors),
        },
    );
    mock
}

#[test]
fn bundles_are_found_through_the_referrers_api_when_upstream_has_one() {
    let image = build_image("bundle-api", "amd64");
    let k = key("release");
    let b = bundle(&k, &image.digest, SIGN_PREDICATE);
    let (manifest, descriptor) = referrer(&sha256_digest(&b), b.len(), &image, Some(SIGN_PREDICATE));
    let mock = mock_with_referrers(&image, &[(manifest, b, descriptor)]);
    let m = mirror_trusting(&mock.url(), &k);
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    let asked: Vec<String> =
        mock.requests().into_iter().map(|(_, t)| t).filter(|t| t.contains("/referrers/")).collect();
    assert_eq!(
        asked,
        [format!("/v2/{REPO}/referrers/{}?artifactType=application/vnd.dev.sigstore.bundle.v0.3%2Bjson", image.digest)],
        "the artifact type must be percent-encoded, or `+` reaches the registry as a space"
    );
    let fallback_tag = format!("/v2/{REPO}/manifests/{}", image.digest.replace(':', "-"));
    assert_eq!(mock.count(&fallback_tag), 0, "the tag schema was used although the API answered");
}

#[test]
fn a_referrer_whose_manifest_subject_is_another_image_is_refused() {
    let image = build_image("bundle-api-subject", "amd64");
    let other = build_image("bundle-api-subject-other", "amd64");
    let k = key("release");
    // Listed for `image`, but the manifest (and the signed statement) are about `other`.
    let b = bundle(&k, &other.digest, SIGN_PREDICATE);
    let (manifest, descriptor) = referrer(&sha256_digest(&b), b.len(), &other, Some(SIGN_PREDICATE));
    let referrer_digest = sha256_digest(&manifest);
    let mock = mock_with_referrers(&image, &[(manifest, b, descriptor)]);
    let m = mirror_trusting(&mock.url(), &k);
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        &format!("key release.pub: sigstore bundle: referrer manifest {referrer_digest} has another subject"),
    );
}

#[test]
fn a_bundle_blob_that_does_not_match_its_descriptor_is_refused_as_tampered() {
    let image = build_image("bundle-api-tampered", "amd64");
    let k = key("release");
    let b = bundle(&k, &image.digest, SIGN_PREDICATE);
    let blob_digest = sha256_digest(&b);
    let (manifest, descriptor) = referrer(&blob_digest, b.len(), &image, Some(SIGN_PREDICATE));
    let mock = mock_with_referrers(&image, &[(manifest, b.clone(), descriptor)]);
    // Upstream now serves other bytes under the bundle's digest.
    let mut swapped = b;
    let last = swapped.len() - 2;
    swapped[last] ^= 0x01;
    mock.blob(REPO, &blob_digest, &swapped);
    let m = mirror_trusting(&mock.url(), &k);
    assert_refused(
        &get(&m, "v1"),
        &image.digest,
        &format!("key release.pub: sigstore bundle: bundle digest mismatch for {blob_digest}"),
    );
}
