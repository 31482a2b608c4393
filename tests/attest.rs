//! `[[policy.attestation]]` end to end: the real registry holds an image, its
//! cosign signature (made by Sigstore's Rust crate) and its attestations, made
//! by Sigstore's own JS signer (`@sigstore/sign`, run by `tests/js/attest.js`,
//! installed by scripts/test-all with `npm ci`), in both layouts: a Sigstore
//! bundle attached as a referrer (cosign v3) and the DSSE envelope as a layer
//! of the `sha256-<hex>.att` tag (cosign before v3). The real sigmirror binary
//! decides, and every refusal's message is checked.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use sha2::{Digest as _, Sha256};
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

/// A signer: the PKCS#8 key file node reads, and the same key for the image signature.
struct Signer {
    pem_file: PathBuf,
    public_pem: String,
    cosign: signing::CosignKey,
    _dir: tempfile::TempDir,
}

fn signer(label: &str) -> Signer {
    let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    let k = p256::ecdsa::SigningKey::from_slice(&seed).unwrap();
    signer_of_pem(&k.to_pkcs8_pem(LineEnding::LF).unwrap())
}

/// A signer of a P-256 PKCS#8 private key PEM.
fn signer_of_pem(pem: &str) -> Signer {
    let dir = tempfile::TempDir::new().unwrap();
    let pem_file = dir.path().join("key.pem");
    fs::write(&pem_file, pem).unwrap();
    let cosign = signing::CosignKey::from_pkcs8_pem(pem);
    Signer { pem_file, public_pem: cosign.public_pem(), cosign, _dir: dir }
}

/// An in-toto v1 statement about `digest`.
fn statement(digest: &str, predicate_type: &str, predicate: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{NS}/{REPO}"), "digest": {"sha256": &digest["sha256:".len()..]}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

/// The bundle `@sigstore/sign` makes of `statement` with `s`'s key.
fn attest(s: &Signer, statement: &[u8]) -> Vec<u8> {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(js.join("node_modules/@sigstore/sign").is_dir(), "run `npm ci` in tests/js first (scripts/test-all does)");
    let st = s._dir.path().join("statement.json");
    fs::write(&st, statement).unwrap();
    let out = Command::new("node").arg(js.join("attest.js")).arg(&s.pem_file).arg(&st).output().expect("run node");
    assert!(out.status.success(), "attest.js failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The DSSE envelope inside a bundle: what a `.att` layer holds.
fn envelope_of(bundle: &[u8]) -> Vec<u8> {
    let b: serde_json::Value = serde_json::from_slice(bundle).unwrap();
    serde_json::to_vec(&b["dsseEnvelope"]).unwrap()
}

/// Pushes envelopes as the `sha256-<hex>.att` manifest of `image`, as `cosign attest` (v2) does.
fn push_att(registry: &Registry, image: &Pushed, envelopes: &[(Vec<u8>, &str)]) {
    let layers: Vec<(Vec<u8>, serde_json::Value)> = envelopes
        .iter()
        .map(|(env, predicate)| {
            (env.clone(), serde_json::json!({"dev.cosignproject.cosign/signature": "", "predicateType": predicate}))
        })
        .collect();
    push_att_layers(registry, image, &layers);
}

/// Pushes `.att` layers (envelope, annotations) for `image`.
fn push_att_layers(registry: &Registry, image: &Pushed, envelopes: &[(Vec<u8>, serde_json::Value)]) {
    let config = push_blob(&registry.host, REPO, b"{}");
    let layers: Vec<serde_json::Value> = envelopes
        .iter()
        .map(|(env, annotations)| {
            let digest = push_blob(&registry.host, REPO, env);
            serde_json::json!({"mediaType": DSSE, "digest": digest, "size": env.len(), "annotations": annotations})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    }))
    .unwrap();
    let tag = format!("{}.att", image.digest.replace(':', "-"));
    push_raw_manifest(&registry.host, REPO, &tag, OCI_MANIFEST, &manifest);
}

/// An image in REPO signed by `s` (format A, the `sigstore` crate).
fn signed_image(registry: &Registry, s: &Signer, tag: &str) -> Pushed {
    let image = push_image(&registry.host, REPO, tag, &format!("attest-{tag}"));
    signing::sign_and_push(&registry.host, REPO, &image.digest, &s.cosign, &format!("{NS}/{REPO}"));
    image
}

/// Attaches to `image`, as a referrer, a provenance bundle by `s` about `about` (a digest)
/// naming `repository` as the workflow's.
fn attach_provenance(registry: &Registry, s: &Signer, image: &Pushed, about: &str, repository: &str) {
    let b = attest(s, &statement(about, PROVENANCE, provenance(repository)));
    attach_in(registry, REPO, image, &[(b, Some(PROVENANCE))]);
}

/// A mirror whose policy `releases` trusts `s` and requires `attestation` (TOML tables).
fn mirror(registry: &Registry, s: &Signer, extra: &str) -> Sigmirror {
    mirror_with(registry, s, &[], extra)
}

/// [`mirror`], with more trust files in the mirror's directory.
fn mirror_with(registry: &Registry, s: &Signer, files: &[(&str, &str)], extra: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    fs::write(dir.path().join("release.pub"), &s.public_pem).unwrap();
    let policy = format!(
        "[[policy]]\nname = \"releases\"\nscope = [\"{NS}/team-a/**\"]\ncosign_keys = [\"release.pub\"]\n{extra}"
    );
    Sigmirror::start_in(dir, &mirror_config(&registry.url(), &policy))
}

fn get(m: &Sigmirror, repo: &str, reference: &str) -> Response {
    http("GET", &format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

fn assert_served(r: &Response, image: &Pushed, m: &Sigmirror) {
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()));
}

fn assert_refused(r: &Response, image: &Pushed, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert_eq!(msg, format!("policy releases refused {NS}/{REPO}@{}: {reason}", image.digest));
}

const WORKFLOW: &str =
    "predicate.buildDefinition.externalParameters.workflow.repository == \"https://github.com/acme/api\"";

fn provenance(repository: &str) -> serde_json::Value {
    serde_json::json!({"buildDefinition": {
        "buildType": "https://actions.github.io/buildtypes/workflow/v1",
        "externalParameters": {"workflow": {"ref": "refs/tags/v1", "repository": repository, "path": ".github/workflows/release.yml"}}},
        "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}}})
}

#[test]
fn slsa_provenance_bundles_are_served_when_their_condition_holds_and_refused_when_not() {
    let registry = Registry::start();
    let s = signer("release");
    let good = signed_image(&registry, &s, "good");
    attach_provenance(&registry, &s, &good, &good.digest, "https://github.com/acme/api");
    let forked = signed_image(&registry, &s, "forked");
    attach_provenance(&registry, &s, &forked, &forked.digest, "https://github.com/evil/api");
    let bare = signed_image(&registry, &s, "bare");

    let m = mirror(
        &registry,
        &s,
        &format!("[[policy.attestation]]\npredicate_type = \"slsaprovenance1\"\ncondition = '{WORKFLOW}'\n"),
    );
    let r = get(&m, REPO, "good");
    assert_served(&r, &good, &m);
    assert!(m.logs().contains(&format!("attestations {PROVENANCE} by key release.pub")), "{}", m.logs());
    let want = format!("attestation {PROVENANCE} (condition `{WORKFLOW}`)");
    assert_refused(&get(&m, REPO, "forked"), &forked, &format!("{want}: condition is false"));
    // The decision log says the same words.
    let logged = format!("policy releases refused {NS}/{REPO}@{}: {want}: condition is false", forked.digest);
    m.wait_for_log(&logged, std::time::Duration::from_secs(5));
    assert_refused(
        &get(&m, REPO, "bare"),
        &bare,
        &format!(
            "{want}: no verified attestation of this type (no tag {}.att in {REPO}; no attestation bundle referrer)",
            bare.digest.replace(':', "-")
        ),
    );
}

#[test]
fn a_stale_vulnerability_report_in_the_att_tag_is_refused_and_a_fresh_one_served() {
    let registry = Registry::start();
    let s = signer("release");
    let rfc3339 = |ago_hours: i64| {
        let t = time::OffsetDateTime::now_utc() - time::Duration::hours(ago_hours);
        t.format(&time::format_description::well_known::Rfc3339).unwrap()
    };
    let report = |finished: String| {
        serde_json::json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.58.1", "version": "0.58.1",
            "result": {"summary": {"critical": 0, "high": 1}}},
            "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished}})
    };
    let fresh = signed_image(&registry, &s, "fresh");
    let env = envelope_of(&attest(&s, &statement(&fresh.digest, VULN, report(rfc3339(2)))));
    push_att(&registry, &fresh, &[(env, VULN)]);
    let stale = signed_image(&registry, &s, "stale");
    let env = envelope_of(&attest(&s, &statement(&stale.digest, VULN, report(rfc3339(24 * 30)))));
    push_att(&registry, &stale, &[(env, VULN)]);

    let cond = "predicate.scanner.result.summary.critical == 0 && now - timestamp(predicate.metadata.scanFinishedOn) < duration(\"168h\")";
    let m =
        mirror(&registry, &s, &format!("[[policy.attestation]]\npredicate_type = \"vuln\"\ncondition = '{cond}'\n"));
    assert_served(&get(&m, REPO, "fresh"), &fresh, &m);
    assert_refused(
        &get(&m, REPO, "stale"),
        &stale,
        &format!("attestation {VULN} (condition `{cond}`): condition is false"),
    );
}

#[test]
fn an_attestation_about_another_image_or_by_an_untrusted_key_is_refused() {
    let registry = Registry::start();
    let s = signer("release");
    let intruder = signer("intruder");
    let image = signed_image(&registry, &s, "v1");
    let other = signed_image(&registry, &s, "other");
    // A genuine attestation about `other`, attached to `image`.
    attach_provenance(&registry, &s, &image, &other.digest, "https://github.com/acme/api");
    // A forged one for `forged`: the right statement, signed by a key the policy does not trust.
    let forged = signed_image(&registry, &s, "forged");
    attach_provenance(&registry, &intruder, &forged, &forged.digest, "https://github.com/acme/api");

    let m = mirror(&registry, &s, "[[policy.attestation]]\npredicate_type = \"https://slsa.dev/provenance/v1\"\n");
    let want = format!("attestation {PROVENANCE}: no verified attestation of this type");
    assert_refused(
        &get(&m, REPO, "v1"),
        &image,
        &format!(
            "{want} (key release.pub: statement digest mismatch: attestation is for {} not {})",
            other.digest, image.digest
        ),
    );
    assert_refused(
        &get(&m, REPO, "forged"),
        &forged,
        &format!("{want} (key release.pub: signature by an untrusted key (or over an altered payload))"),
    );
}

#[test]
fn an_excluded_repository_is_as_if_the_policy_did_not_list_it() {
    let registry = Registry::start();
    let s = signer("release");
    let image = push_image(&registry.host, "team-a/sandbox/tool", "v1", "sandbox");
    signing::sign_and_push(
        &registry.host,
        "team-a/sandbox/tool",
        &image.digest,
        &s.cosign,
        &format!("{NS}/team-a/sandbox/tool"),
    );
    let m = mirror(&registry, &s, &format!("exclude = [\"{NS}/team-a/sandbox/**\"]\n"));
    let r = get(&m, "team-a/sandbox/tool", "v1");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.oci_error_message().unwrap(),
        format!("sigmirror refused {NS}/team-a/sandbox/tool:v1: no policy's scope matches {NS}/team-a/sandbox/tool")
    );
}

#[test]
fn a_count_threshold_is_met_by_two_distinct_signers_and_not_by_one() {
    let registry = Registry::start();
    let (a, b) = (signer("release-a"), signer("release-b"));
    let reference = format!("{NS}/{REPO}");
    let one = push_image(&registry.host, REPO, "one", "count-one");
    signing::sign_and_push(&registry.host, REPO, &one.digest, &a.cosign, &reference);
    let both = push_image(&registry.host, REPO, "both", "count-both");
    let layers = vec![
        signing::signed_layer(&both.digest, &a.cosign, &reference),
        signing::signed_layer(&both.digest, &b.cosign, &reference),
    ];
    signing::push_layers(&registry.host, REPO, &both.digest, layers);

    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("a.pub"), &a.public_pem).unwrap();
    fs::write(dir.path().join("b.pub"), &b.public_pem).unwrap();
    let policy = format!(
        "[[policy]]\nname = \"releases\"\nscope = [\"{NS}/team-a/**\"]\ncosign_keys = [\"a.pub\", \"b.pub\"]\n\
         require = {{ count = 2 }}\n"
    );
    let m = Sigmirror::start_in(dir, &mirror_config(&registry.url(), &policy));
    assert_served(&get(&m, REPO, "both"), &both, &m);
    assert_refused(
        &get(&m, REPO, "one"),
        &one,
        "require = { count = 2 } and 1 distinct authorities verified: key b.pub: signature by an untrusted key (or \
         over an altered payload)",
    );
}

// ---- Keyless `.att` attestations with a Rekor entry ----

/// A private "Fulcio" (a test CA issuing a ten-minute leaf that expired an hour ago) and a
/// Rekor log key. The envelope is signed by `@sigstore/sign` with the leaf's key; the log entry
/// (`dsse` 0.0.1, as `cosign attest` uploads since v2.2) and its SET are built here, with the
/// log's own key, because no Rekor runs offline.
struct Keyless {
    ca_pem: String,
    leaf_pem: String,
    other_leaf_pem: String,
    signer: Signer,
    log: p256::ecdsa::SigningKey,
    log_pem: String,
    /// Inside the leaf's ten minutes.
    signed_at: i64,
}

fn keyless() -> Keyless {
    use p256::pkcs8::EncodePublicKey as _;
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Test Fulcio");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
    ca.not_after = time::macros::datetime!(2099-01-01 00:00 UTC);
    let ca = ca.self_signed(&ca_key).unwrap();
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(70);
    let leaf = |key: &rcgen::KeyPair| {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name("release@acme.example".try_into().unwrap())];
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        p.not_before = not_before;
        p.not_after = not_before + time::Duration::minutes(10);
        p.signed_by(key, &ca, &ca_key).unwrap().pem()
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let log = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let log_pem = log.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    Keyless {
        ca_pem: ca.pem(),
        leaf_pem: leaf(&key),
        other_leaf_pem: leaf(&other),
        signer: signer_of_pem(&key.serialize_pem()),
        log,
        log_pem,
        signed_at: (not_before + time::Duration::minutes(1)).unix_timestamp(),
    }
}

/// The `dev.sigstore.cosign/bundle` of a `dsse` 0.0.1 entry for `envelope`, naming `verifier`
/// (a PEM), its SET by `log`: what Rekor returns and cosign stores.
fn rekor_bundle(log: &p256::ecdsa::SigningKey, envelope: &[u8], verifier: &str, integrated_time: i64) -> String {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let env: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let sha = |b: &[u8]| serde_json::json!({"algorithm": "sha256", "value": hex::encode(Sha256::digest(b))});
    let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "envelopeHash": sha(envelope), "payloadHash": sha(&payload),
        "signatures": [{"signature": env["signatures"][0]["sig"], "verifier": b64.encode(verifier)}]}});
    let body = b64.encode(serde_json::to_vec(&body).unwrap());
    let log_id = hex::encode(Sha256::digest(log.verifying_key().to_public_key_der().unwrap().as_bytes()));
    // The SET signs the RFC 8785 form of these four fields: sorted keys, no spaces.
    let signed =
        format!("{{\"body\":\"{body}\",\"integratedTime\":{integrated_time},\"logID\":\"{log_id}\",\"logIndex\":7}}");
    let set: p256::ecdsa::Signature = log.sign(signed.as_bytes());
    serde_json::json!({"SignedEntryTimestamp": b64.encode(set.to_der().as_bytes()),
        "Payload": {"body": body, "integratedTime": integrated_time, "logIndex": 7, "logID": log_id}})
    .to_string()
}

/// The annotations of a keyless `.att` layer: the certificate and, when given, the bundle.
fn keyless_annotations(k: &Keyless, bundle: Option<String>) -> serde_json::Value {
    let mut a = serde_json::json!({"dev.cosignproject.cosign/signature": "", "predicateType": PROVENANCE,
        "dev.sigstore.cosign/certificate": k.leaf_pem});
    if let Some(b) = bundle {
        a["dev.sigstore.cosign/bundle"] = b.into();
    }
    a
}

#[test]
fn a_keyless_att_attestation_with_a_rekor_entry_verifies_at_its_log_time_and_its_condition_decides() {
    let registry = Registry::start();
    let release = signer("release");
    let k = keyless();
    let provenance_att = |image: &Pushed, repository: &str| {
        envelope_of(&attest(&k.signer, &statement(&image.digest, PROVENANCE, provenance(repository))))
    };
    let good = signed_image(&registry, &release, "keyless-good");
    let env = provenance_att(&good, "https://github.com/acme/api");
    let ann = keyless_annotations(&k, Some(rekor_bundle(&k.log, &env, &k.leaf_pem, k.signed_at)));
    push_att_layers(&registry, &good, &[(env, ann)]);
    let forked = signed_image(&registry, &release, "keyless-forked");
    let env = provenance_att(&forked, "https://github.com/evil/api");
    let ann = keyless_annotations(&k, Some(rekor_bundle(&k.log, &env, &k.leaf_pem, k.signed_at)));
    push_att_layers(&registry, &forked, &[(env, ann)]);
    // The entry of `good`'s envelope, under `other`'s envelope.
    let other = signed_image(&registry, &release, "keyless-other-envelope");
    let good_env = provenance_att(&good, "https://github.com/acme/api");
    let env = provenance_att(&other, "https://github.com/acme/api");
    let ann = keyless_annotations(&k, Some(rekor_bundle(&k.log, &good_env, &k.leaf_pem, k.signed_at)));
    push_att_layers(&registry, &other, &[(env, ann)]);
    // An entry naming another certificate (same CA, same identity, another key).
    let named = signed_image(&registry, &release, "keyless-other-key");
    let env = provenance_att(&named, "https://github.com/acme/api");
    let ann = keyless_annotations(&k, Some(rekor_bundle(&k.log, &env, &k.other_leaf_pem, k.signed_at)));
    push_att_layers(&registry, &named, &[(env, ann)]);
    // A SET by a log the policy does not trust.
    let rogue_log = p256::ecdsa::SigningKey::from_slice(&[0x43; 32]).unwrap();
    let rogue = signed_image(&registry, &release, "keyless-rogue-log");
    let env = provenance_att(&rogue, "https://github.com/acme/api");
    let ann = keyless_annotations(&k, Some(rekor_bundle(&rogue_log, &env, &k.leaf_pem, k.signed_at)));
    push_att_layers(&registry, &rogue, &[(env, ann)]);
    // No bundle at all.
    let unlogged = signed_image(&registry, &release, "keyless-unlogged");
    let env = provenance_att(&unlogged, "https://github.com/acme/api");
    push_att_layers(&registry, &unlogged, &[(env, keyless_annotations(&k, None))]);

    let policy = format!(
        "cosign_certificates = [{{ roots = \"ca.pem\", identity = \"release@acme.example\", rekor_key = \"rekor.pub\" }}]\n\
         [[policy.attestation]]\npredicate_type = \"slsaprovenance1\"\ncondition = '{WORKFLOW}'\n"
    );
    let m = mirror_with(&registry, &release, &[("ca.pem", &k.ca_pem), ("rekor.pub", &k.log_pem)], &policy);
    assert_served(&get(&m, REPO, "keyless-good"), &good, &m);
    let want = format!("attestation {PROVENANCE} (condition `{WORKFLOW}`)");
    assert_refused(&get(&m, REPO, "keyless-forked"), &forked, &format!("{want}: condition is false"));
    // The leaf expired an hour ago: `good` is served only because the log saw it in time.
    let refused = |image: &Pushed, tag: &str, reason: &str| {
        let why = format!(
            "{want}: no verified attestation of this type (key release.pub: signature by an untrusted key (or over \
             an altered payload); certificate roots ca.pem identity release@acme.example: {reason})"
        );
        assert_refused(&get(&m, REPO, tag), image, &why);
    };
    refused(&other, "keyless-other-envelope", "Rekor entry is for another envelope (envelope hash mismatch)");
    refused(&named, "keyless-other-key", "Rekor entry records a different certificate or key than the signature's");
    let rogue_id = {
        use p256::pkcs8::EncodePublicKey as _;
        hex::encode(Sha256::digest(rogue_log.verifying_key().to_public_key_der().unwrap().as_bytes()))
    };
    refused(
        &rogue,
        "keyless-rogue-log",
        &format!("Rekor bundle is from log {rogue_id}, which is not a trusted Rekor key"),
    );
    refused(
        &unlogged,
        "keyless-unlogged",
        "attestation has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one",
    );
}
