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
//!
//! Cosign v3 names no repository in the statement, so its bundles can be
//! copied into another repository and are refused unless the policy sets
//! `dangerous_accept_unbound_bundles`. Most tests here therefore name the
//! repository in the subject, the way GitHub's attest actions name theirs, so
//! that they test what they are about; the tests under "Repository binding"
//! are about the binding itself.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use sha2::{Digest as _, Sha256};
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";
/// Another repository the same policy covers: where copies go.
const COPY: &str = "team-a/copy";
/// The subject name a GitHub-style signer writes for `REPO`.
const NAME: &str = "registry.test/team-a/app";
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// A deterministic P-256 signing key.
fn key(label: &str) -> p256::ecdsa::SigningKey {
    let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    p256::ecdsa::SigningKey::from_slice(&seed).expect("P-256 key")
}

fn public_pem(k: &p256::ecdsa::SigningKey) -> String {
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    k.verifying_key().to_public_key_pem(LineEnding::LF).expect("PEM")
}

/// A bundle for `REPO`, its subject named as GitHub's attest actions name it.
fn bundle(k: &p256::ecdsa::SigningKey, digest: &str, predicate: &str) -> Vec<u8> {
    bundle_naming(k, digest, predicate, Some(NAME))
}

/// A v0.3 bundle as `cosign sign --key --tlog-upload=false` (v3) writes it:
/// a DSSE envelope over `{"_type","subject":[{"digest":{"sha256"}}],"predicateType"}`,
/// which is `name: None`. With a name, the subject also has `"name"`.
fn bundle_naming(k: &p256::ecdsa::SigningKey, digest: &str, predicate: &str, name: Option<&str>) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut subject = serde_json::json!({"digest": {"sha256": &digest["sha256:".len()..]}, "annotations": {}});
    if let Some(name) = name {
        subject["name"] = name.into();
    }
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [subject],
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

/// Pushes each bundle as a referrer of `image` and maintains the
/// `sha256-<hex>` tag index, as clients must for a registry without a
/// referrers API.
fn attach(registry: &Registry, image: &Pushed, bundles: &[(Vec<u8>, Option<&str>)]) {
    attach_in(registry, REPO, image, bundles);
}

/// A mirror whose enforcing policy trusts `k` (as `release.pub`, no Rekor key).
fn mirror_trusting(upstream: &str, k: &p256::ecdsa::SigningKey) -> Sigmirror {
    mirror_trusting_with(upstream, k, "")
}

/// [`mirror_trusting`], with `extra` lines in the policy.
fn mirror_trusting_with(upstream: &str, k: &p256::ecdsa::SigningKey, extra: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), public_pem(k)).unwrap();
    let policy = format!(
        "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
         cosign_keys = [\"release.pub\"]\n{extra}"
    );
    Sigmirror::start_in(dir, &mirror_config(upstream, &policy))
}

fn get(m: &Sigmirror, reference: &str) -> Response {
    get_in(m, REPO, reference)
}

fn get_in(m: &Sigmirror, repo: &str, reference: &str) -> Response {
    http("GET", &format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

/// Asserts a 403 DENIED whose message names the policy, the image and `reason`.
fn assert_refused(r: &Response, digest: &str, reason: &str) {
    assert_refused_in(r, REPO, digest, reason);
}

fn assert_refused_in(r: &Response, repo: &str, digest: &str, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with(&format!("policy releases refused registry.test/{repo}@{digest}")), "{msg}");
    assert!(msg.contains(reason), "message should say {reason:?}: {msg}");
}

fn assert_served(r: &Response, image: &Pushed, m: &Sigmirror) {
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()));
}

// ---- Repository binding: an image copied with its signatures into another repository ----

/// What a cosign v3 bundle refused for naming no repository says.
const UNBOUND: &str = "key release.pub: sigstore bundle: the signed statement names no repository, so it could have \
                       been copied from another repository (set dangerous_accept_unbound_bundles = true on policy \
                       releases to accept; see README)";

#[test]
fn a_copied_cosign_v3_bundle_naming_no_repository_is_refused_unless_the_policy_accepts_unbound_bundles() {
    let registry = Registry::start();
    let k = key("release");
    let image = push_image(&registry.host, REPO, "v1", "bundle-unbound");
    // As cosign v3 signs: the statement names the digest only.
    let b = bundle_naming(&k, &image.digest, SIGN_PREDICATE, None);
    attach(&registry, &image, &[(b.clone(), Some(SIGN_PREDICATE))]);
    // The image, its referrers index, the referrer manifest and the bundle, copied to COPY.
    push_built(&registry.host, COPY, Some("v1"), &image);
    attach_in(&registry, COPY, &image, &[(b, Some(SIGN_PREDICATE))]);

    let m = mirror_trusting(&registry.url(), &k);
    assert_refused_in(&get_in(&m, COPY, "v1"), COPY, &image.digest, UNBOUND);
    // The copy cannot be told from the original, so the original is refused too.
    assert_refused(&get(&m, "v1"), &image.digest, UNBOUND);
    assert!(!m.logs().contains("dangerous_accept_unbound_bundles: a cosign bundle"), "no warning without the opt-in");

    let m = mirror_trusting_with(&registry.url(), &k, "dangerous_accept_unbound_bundles = true\n");
    m.wait_for_log(
        "in policy \"releases\": policy[0].dangerous_accept_unbound_bundles: a cosign bundle whose statement names no repository",
        Duration::from_secs(5),
    );
    let r = get_in(&m, COPY, "v1");
    assert_served(&r, &image, &m);
    let logs = m.logs();
    assert!(
        logs.contains("cosign key release.pub (sigstore bundle naming no repository, accepted by dangerous_accept_unbound_bundles)"),
        "the decision should say the bundle was unbound:\n{logs}"
    );

    // dangerous_skip_docker_reference already opts out of repository binding, named or not.
    let m = mirror_trusting_with(&registry.url(), &k, "dangerous_skip_docker_reference = true\n");
    assert_served(&get_in(&m, COPY, "v1"), &image, &m);
}

#[test]
fn a_bundle_naming_its_repository_is_served_there_and_refused_when_copied_to_another() {
    let registry = Registry::start();
    let k = key("release");
    let image = push_image(&registry.host, REPO, "v1", "bundle-named");
    let b = bundle_naming(&k, &image.digest, SIGN_PREDICATE, Some("registry.test/team-a/app:v1"));
    attach(&registry, &image, &[(b.clone(), Some(SIGN_PREDICATE))]);
    push_built(&registry.host, COPY, Some("v1"), &image);
    attach_in(&registry, COPY, &image, &[(b, Some(SIGN_PREDICATE))]);

    let m = mirror_trusting(&registry.url(), &k);
    assert_served(&get(&m, "v1"), &image, &m);
    assert_refused_in(
        &get_in(&m, COPY, "v1"),
        COPY,
        &image.digest,
        "key release.pub: sigstore bundle: signature names image registry.test/team-a/app:v1 but this is \
         registry.test/team-a/copy",
    );
    // The opt-in is about bundles naming no repository; one naming another stays refused.
    let m = mirror_trusting_with(&registry.url(), &k, "dangerous_accept_unbound_bundles = true\n");
    assert_refused_in(
        &get_in(&m, COPY, "v1"),
        COPY,
        &image.digest,
        "signature names image registry.test/team-a/app:v1 but this is registry.test/team-a/copy",
    );
}

#[test]
fn a_bundle_never_rescues_a_sig_signature_that_names_another_repository() {
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    let registry = Registry::start();
    let k = key("release");
    // The same trusted key signs both formats.
    let sig_key = signing::CosignKey::from_pkcs8_pem(&k.to_pkcs8_pem(LineEnding::LF).unwrap());
    let copy_name = "registry.test/team-a/copy";
    // sigstore-rs writes the digest into `docker-reference` too.
    let wrong_repository =
        |digest: &str| format!("key release.pub: signature names image {NAME}@{digest} but this is {copy_name}");

    // In COPY: a `.sig` signature made for REPO (copied from there), and a bundle that on its own
    // would satisfy the key in COPY.
    let image = push_image(&registry.host, COPY, "v1", "bundle-rescue");
    signing::sign_and_push(&registry.host, COPY, &image.digest, &sig_key, NAME);
    attach_in(
        &registry,
        COPY,
        &image,
        &[(bundle_naming(&k, &image.digest, SIGN_PREDICATE, Some(copy_name)), Some(SIGN_PREDICATE))],
    );
    // In COPY too, the same kind of bundle alone: served, so the bundle above is a valid one.
    let alone = push_image(&registry.host, COPY, "v2", "bundle-rescue-alone");
    attach_in(
        &registry,
        COPY,
        &alone,
        &[(bundle_naming(&k, &alone.digest, SIGN_PREDICATE, Some(copy_name)), Some(SIGN_PREDICATE))],
    );

    let m = mirror_trusting(&registry.url(), &k);
    assert_served(&get_in(&m, COPY, "v2"), &alone, &m);
    let r = get_in(&m, COPY, "v1");
    assert_refused_in(&r, COPY, &image.digest, &wrong_repository(&image.digest));
    let msg = r.oci_error_message().unwrap();
    assert!(!msg.contains("sigstore bundle"), "the bundles must not even be consulted: {msg}");

    // Nor does a bundle naming no repository, accepted by the opt-in.
    let unbound = push_image(&registry.host, COPY, "v3", "bundle-rescue-unbound");
    signing::sign_and_push(&registry.host, COPY, &unbound.digest, &sig_key, NAME);
    attach_in(
        &registry,
        COPY,
        &unbound,
        &[(bundle_naming(&k, &unbound.digest, SIGN_PREDICATE, None), Some(SIGN_PREDICATE))],
    );
    let m = mirror_trusting_with(&registry.url(), &k, "dangerous_accept_unbound_bundles = true\n");
    assert_refused_in(&get_in(&m, COPY, "v3"), COPY, &unbound.digest, &wrong_repository(&unbound.digest));
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
