//! Notation end to end, with signatures made by the notation CLI itself: the
//! OCI layouts in `tests/vectors/notation/notation-cli-e2e/` are pushed into
//! the real registry (signature manifest, envelope, and the `sha256-<hex>`
//! referrers tag index, as notation writes them for registries without a
//! referrers API), then fetched through the real sigmirror binary and the real
//! containerd. A fault-injecting upstream covers the referrers API path,
//! which distribution 2.8 does not have.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const NS: &str = "registry.test";
/// The image every notation-cli-e2e layout (but the timestamped ones) signs.
const SIGNED: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/notation/notation-cli-e2e")
}

struct Layout {
    blobs: Vec<(String, Vec<u8>)>,
    /// (reference to push under, media type, bytes), manifests before indexes.
    manifests: Vec<(String, String, Vec<u8>)>,
}

fn read_layout(name: &str) -> Layout {
    let dir = vectors().join(name);
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut manifests = Vec::new();
    let mut manifest_digests = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let digest = m["digest"].as_str().unwrap().to_string();
        let bytes = fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap();
        let reference = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or(&digest).to_string();
        manifests.push((reference, m["mediaType"].as_str().unwrap().to_string(), bytes));
        manifest_digests.push(digest);
    }
    manifests.sort_by_key(|(_, mt, _)| mt.contains("index"));
    let mut blobs = Vec::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let path = e.unwrap().path();
        let digest = format!("sha256:{}", path.file_name().unwrap().to_str().unwrap());
        if !manifest_digests.contains(&digest) {
            blobs.push((digest, fs::read(&path).unwrap()));
        }
    }
    Layout { blobs, manifests }
}

/// Pushes a notation CLI layout into `repo` of the real registry.
fn push_layout(registry: &Registry, repo: &str, name: &str) {
    let layout = read_layout(name);
    for (_, bytes) in &layout.blobs {
        push_blob(&registry.host, repo, bytes);
    }
    for (reference, media_type, bytes) in &layout.manifests {
        push_raw_manifest(&registry.host, repo, reference, media_type, bytes);
    }
}

/// A mirror whose `[notation]` trust policy is notation's e2e policy (strict,
/// `ca:e2e`, any identity) with `cert` as the only `ca:e2e` certificate.
fn notation_mirror(upstream: &str, cert: &str, level: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    let store = dir.path().join("truststore/x509/ca/e2e");
    fs::create_dir_all(&store).unwrap();
    fs::copy(vectors().join(cert), store.join(cert)).unwrap();
    let policy = serde_json::json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "e2e",
            "registryScopes": ["*"],
            "signatureVerification": { "level": level },
            "trustStores": ["ca:e2e"],
            "trustedIdentities": ["*"]
        }]
    });
    fs::write(dir.path().join("trustpolicy.json"), policy.to_string()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[notation]\ntrust_policy = \"trustpolicy.json\"\n\
         trust_store = \"truststore\"\n\n[[upstream]]\nregistry = \"{NS}\"\nurl = \"{upstream}\"\ndangerous_plain_http = true\ndefault = true\n\n\
         [[policy]]\nname = \"payments\"\nscope = [\"registry.test/e2e/**\"]\nmode = \"enforce\"\nnotation = true\n"
    );
    Sigmirror::start_in(dir, &config)
}

fn get(m: &Sigmirror, repo: &str, reference: &str) -> Response {
    http("GET", &format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

fn assert_refused(r: &Response, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"));
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with("policy payments refused registry.test/e2e/"), "{msg}");
    assert!(msg.contains(reason), "expected {reason:?} in {msg}");
}

#[test]
fn an_image_signed_by_the_notation_cli_is_served_through_the_referrers_tag_schema() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/valid", "e2e-valid-signature");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    for reference in ["v1", SIGNED] {
        let r = get(&m, "e2e/valid", reference);
        assert_eq!(r.status, 200, "{reference}: {}\n{}", r.text(), m.logs());
        assert_eq!(r.header("docker-content-digest"), Some(SIGNED));
    }
    let head = http("HEAD", &format!("{}/v2/e2e/valid/manifests/v1?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
    assert_eq!(head.status, 200);
    assert!(m.logs().contains("notation signature sha256:90ceaff2"), "{}", m.logs());
}

#[test]
fn a_notation_signature_from_an_untrusted_certificate_is_refused() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/valid", "e2e-valid-signature");
    let m = notation_mirror(&registry.url(), "new_e2e.crt", "strict");
    assert_refused(&get(&m, "e2e/valid", "v1"), "authenticity validation failed");
}

#[test]
fn an_expired_notation_signature_is_refused_at_strict_and_logged_at_permissive() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/expired", "e2e-expired-signature");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    assert_refused(&get(&m, "e2e/expired", "v1"), "expiry validation failed");
    let m = notation_mirror(&registry.url(), "e2e.crt", "permissive");
    let r = get(&m, "e2e/expired", "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(m.logs().contains("expir"), "the expiry failure should be logged:\n{}", m.logs());
}

#[test]
fn a_notation_signature_layer_that_is_not_an_envelope_is_refused() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/invalid", "e2e-invalid-signature");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    assert_refused(&get(&m, "e2e/invalid", "v1"), "integrity validation failed");
}

#[test]
fn a_signature_whose_certificate_expired_before_use_is_refused() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/expired-cert", "e2e-with-expired-cert");
    let m = notation_mirror(&registry.url(), "expired_e2e.crt", "strict");
    assert_refused(&get(&m, "e2e/expired-cert", "v1"), "expired");
}

#[test]
fn an_image_without_notation_signatures_is_refused() {
    let registry = Registry::start();
    push_image(&registry.host, "e2e/unsigned", "v1", "notation-unsigned");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    assert_refused(&get(&m, "e2e/unsigned", "v1"), "no notation signature found");
}

#[test]
fn notation_signatures_are_found_through_the_referrers_api_when_upstream_has_one() {
    let mock = MockUpstream::start();
    let layout = read_layout("e2e-valid-signature");
    let repo = "e2e/api";
    for (digest, bytes) in &layout.blobs {
        mock.blob(repo, digest, bytes);
    }
    let mut referrers_index = Vec::new();
    for (reference, media_type, bytes) in &layout.manifests {
        if media_type.contains("index") {
            referrers_index = bytes.clone();
        } else {
            mock.manifest(repo, reference, media_type, bytes);
            mock.manifest(repo, &sha256_digest(bytes), media_type, bytes);
        }
    }
    mock.set(
        &format!("/v2/{repo}/referrers/{SIGNED}"),
        Reply::Full { status: 200, headers: vec![("Content-Type".into(), OCI_INDEX.into())], body: referrers_index },
    );
    let m = notation_mirror(&mock.url(), "e2e.crt", "strict");
    let r = get(&m, repo, "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(mock.count(&format!("/v2/{repo}/referrers/{SIGNED}")), 1, "{:?}", mock.requests());
    let fallback_tag = format!("/v2/{repo}/manifests/{}", SIGNED.replace(':', "-"));
    assert_eq!(mock.count(&fallback_tag), 0, "the tag schema was used although the API answered");
}

#[test]
fn the_verify_command_works_for_notation_signed_images() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/valid", "e2e-valid-signature");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
        .args(["verify", "--config", m.config_path().to_str().unwrap(), "registry.test/e2e/valid:v1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"]["decision"], "allow");
    assert_eq!(json["digest"], SIGNED);
}

/// The notation CLI's test image has a layer that is not a tar, so containerd
/// fetches it (`ctr content fetch`: resolve, manifest and blobs, through the
/// mirror) rather than unpacking it.
#[test]
fn containerd_fetches_a_notation_signed_image_and_not_a_badly_signed_one() {
    let registry = Registry::start();
    push_layout(&registry, "e2e/valid", "e2e-valid-signature");
    push_layout(&registry, "e2e/invalid", "e2e-invalid-signature");
    let m = notation_mirror(&registry.url(), "e2e.crt", "strict");
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &m.addr);
    let hosts = hosts.path().to_str().unwrap();
    let fetch = |image: &str| {
        containerd.ctr(&["content", "fetch", "--hosts-dir", hosts, image], std::time::Duration::from_secs(60))
    };
    fetch("registry.test/e2e/valid:v1").unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    let listed = containerd.ctr(&["content", "ls"], std::time::Duration::from_secs(20)).unwrap();
    assert!(listed.contains(SIGNED), "{listed}");
    let err = fetch("registry.test/e2e/invalid:v1").expect_err("a badly signed image was fetched");
    assert!(err.contains("403") || err.to_lowercase().contains("denied") || err.contains("forbidden"), "{err}");
    assert!(m.logs().contains("integrity validation failed"), "{}", m.logs());
}

/// A Notation signer for images no public vector covers (a real, unpackable
/// image): ES256 JWS with a 2-certificate x5c chain, written in the layout
/// the notation CLI uses (legacy signature manifest plus the referrers tag
/// index). No Notation signer is available offline, so this one is ours; the
/// notation CLI layouts above are the third-party evidence.
mod sign {
    use super::*;
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::DecodePrivateKey as _;

    pub struct Pki {
        pub ca_pem: String,
        ca_der: Vec<u8>,
        leaf_der: Vec<u8>,
        key: p256::ecdsa::SigningKey,
    }

    fn dn(cn: &str) -> rcgen::DistinguishedName {
        let mut d = rcgen::DistinguishedName::new();
        d.push(rcgen::DnType::CountryName, "US");
        d.push(rcgen::DnType::StateOrProvinceName, "WA");
        d.push(rcgen::DnType::OrganizationName, "Acme Payments");
        d.push(rcgen::DnType::CommonName, cn);
        d
    }

    pub fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name = dn("Payments Root");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        ca.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
        ca.not_after = time::macros::datetime!(2099-01-01 00:00 UTC);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = rcgen::CertificateParams::default();
        leaf.distinguished_name = dn("payments release signer");
        leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
        leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        leaf.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
        leaf.not_after = time::macros::datetime!(2098-01-01 00:00 UTC);
        let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            key: p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_key.serialize_der()).unwrap(),
        }
    }

    /// Signs `image` and pushes envelope, signature manifest and referrers index.
    pub fn sign_and_push(registry: &Registry, repo: &str, image: &Pushed, pki: &Pki) {
        let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
        let protected = serde_json::json!({
            "alg": "ES256",
            "crit": ["io.cncf.notary.signingScheme"],
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": now,
        });
        let payload = serde_json::json!({
            "targetArtifact": { "mediaType": image.media_type, "digest": image.digest, "size": image.size }
        });
        let (protected, payload) = (b64u(protected.to_string().as_bytes()), b64u(payload.to_string().as_bytes()));
        let sig: p256::ecdsa::Signature = pki.key.sign(format!("{protected}.{payload}").as_bytes());
        let std = base64::engine::general_purpose::STANDARD;
        let envelope = serde_json::to_vec(&serde_json::json!({
            "payload": payload, "protected": protected,
            "header": { "x5c": [std.encode(&pki.leaf_der), std.encode(&pki.ca_der)] },
            "signature": b64u(&sig.to_bytes()),
        }))
        .unwrap();
        let env_digest = push_blob(&registry.host, repo, &envelope);
        let empty = push_blob(&registry.host, repo, b"{}");
        let sig_manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.cncf.notary.signature", "digest": empty, "size": 2 },
            "layers": [{ "mediaType": "application/jose+json", "digest": env_digest, "size": envelope.len() }],
            "subject": { "mediaType": image.media_type, "digest": image.digest, "size": image.size },
        }))
        .unwrap();
        let sig_digest =
            push_raw_manifest(&registry.host, repo, &sha256_digest(&sig_manifest), OCI_MANIFEST, &sig_manifest);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{ "mediaType": OCI_MANIFEST, "digest": sig_digest, "size": sig_manifest.len(),
                            "artifactType": "application/vnd.cncf.notary.signature" }],
        }))
        .unwrap();
        push_raw_manifest(&registry.host, repo, &image.digest.replace(':', "-"), OCI_INDEX, &index);
    }
}

#[test]
fn containerd_pulls_a_notation_signed_image_and_not_an_unsigned_one() {
    let registry = Registry::start();
    let pki = sign::pki();
    let signed = push_image(&registry.host, "e2e/pay", "signed", "notation-ctr-signed");
    sign::sign_and_push(&registry, "e2e/pay", &signed, &pki);
    push_image(&registry.host, "e2e/pay", "unsigned", "notation-ctr-unsigned");

    let dir = tempfile::TempDir::new().unwrap();
    let store = dir.path().join("truststore/x509/ca/payments");
    fs::create_dir_all(&store).unwrap();
    fs::write(store.join("root.pem"), &pki.ca_pem).unwrap();
    let policy = serde_json::json!({ "version": "1.0", "trustPolicies": [{
        "name": "payments", "registryScopes": ["registry.test/e2e/pay"],
        "signatureVerification": { "level": "strict" }, "trustStores": ["ca:payments"],
        "trustedIdentities": ["x509.subject: C=US, ST=WA, O=Acme Payments, CN=payments release signer"] }] });
    fs::write(dir.path().join("trustpolicy.json"), policy.to_string()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[notation]\ntrust_policy = \"trustpolicy.json\"\n\
         trust_store = \"truststore\"\n\n[[upstream]]\nregistry = \"{NS}\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n\
         [[policy]]\nname = \"payments\"\nscope = [\"registry.test/e2e/**\"]\nnotation = true\n",
        registry.url()
    );
    let m = Sigmirror::start_in(dir, &config);
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &m.addr);
    containerd.pull("registry.test/e2e/pay:signed", hosts.path()).unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    assert_eq!(containerd.read_unpacked_file(&signed.file.0).unwrap(), signed.file.1);
    let err = containerd.pull("registry.test/e2e/pay:unsigned", hosts.path()).expect_err("unsigned image was pulled");
    assert!(err.contains("403") || err.to_lowercase().contains("denied"), "{err}");
    assert!(m.logs().contains("no notation signature found"), "{}", m.logs());
}
