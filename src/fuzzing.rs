//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which replays
//! every committed corpus and regression file through them on a normal `cargo test`.
//!
//! Each is a `fn(&[u8])` that must never panic, whatever the bytes: a panic is the bug the
//! fuzzer looks for. They call the same functions the server calls on outside bytes (request
//! paths, upstream manifests and tag lists, signature layers, bundles, envelopes, certificates,
//! timestamp tokens, trust policies, the config file), with trust material from the real test
//! vectors built in, so a fuzzed input that is close to a real signature gets as deep as a real
//! one does.
//!
//! Signatures stop a fuzzer at the first byte it changes. Where the logic behind a signature is
//! what matters (the simple-signing claims, the in-toto statement, the Rekor entry of a bundle),
//! the entry point also re-signs the fuzzed content with a key of its own and verifies it with
//! an authority for that key, so the fuzzer reaches those checks.
//!
//! Two entry points are differential: the streaming blob hasher against `sha2` over the whole
//! buffer ([`integrity`]), and the Merkle inclusion-proof check against a direct RFC 6962 tree
//! ([`merkle`]); a disagreement panics.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::config::{Checker, Config};
use crate::oci::{Digest, ImageIndex, ImageManifest, ImageRef};
use crate::verify::cosign::{self, CosignAuthority, Expectation, Identity, SignatureLayer};
use crate::verify::keys::PublicKey;
use crate::verify::notation::{self, NotationVerifier, Target};
use crate::verify::rekor::{self, RekorKey};
use crate::verify::x509::{self, Certificate, ChainOptions};
use crate::verify::{bundle, der, timestamp};

/// What every entry point is: any bytes in, and no panic out.
pub type EntryPoint = fn(&[u8]);

/// Every entry point by name, in the order `scripts/fuzz` runs them. The fuzz crate has one
/// target per name, and `tests/fuzz_corpus.rs` replays `fuzz/corpus/<name>/` through each.
pub const TARGETS: &[(&str, EntryPoint)] = &[
    ("route", route),
    ("manifest", manifest),
    ("simple_signing", simple_signing),
    ("cosign_layer", cosign_layer),
    ("bundle", bundle),
    ("in_toto", in_toto),
    ("rekor", rekor_entry),
    ("jws", jws),
    ("cose", cose),
    ("x509_chain", x509_chain),
    ("der", der_reader),
    ("timestamp", timestamp_token),
    ("trust_policy", trust_policy),
    ("trust_material", trust_material),
    ("config", config),
    ("integrity", integrity),
    ("merkle", merkle),
];

/// The trust material of the vectors in `tests/vectors/`, built in so the fuzz binaries need no
/// files at run time.
mod material {
    macro_rules! vector {
        ($path:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/", $path)).as_slice()
        };
    }
    pub const COSIGN_PUB: &[u8] = vector!("cosign/containers-image/cosign.pub");
    pub const COSIGN2_PUB: &[u8] = vector!("cosign/containers-image/cosign2.pub");
    pub const REKOR_PUB: &[u8] = vector!("cosign/containers-image/rekor.pub");
    pub const PKI_ROOT: &[u8] = vector!("cosign/containers-image/pki_root_crts.pem");
    pub const PKI_INTERMEDIATE: &[u8] = vector!("cosign/containers-image/pki_intermediate_crts.pem");
    pub const FULCIO_V1: &[u8] = vector!("cosign/containers-image/fulcio_v1.crt.pem");
    pub const TRUSTED_ROOT: &[u8] = vector!("cosign/sigstore-rs/trusted_root.json");
    pub const NOTATION_TEST_ROOT: &[u8] = vector!("notation/notation-go/truststore/ca/NotationTestRoot.pem");
    pub const TEST_TIMESTAMP: &[u8] = vector!("notation/notation-go/truststore/ca/TestTimestamp.crt");
    pub const E2E_CRT: &[u8] = vector!("notation/notation-cli-e2e/e2e.crt");
    pub const GLOBALSIGN_ROOT: &[u8] = vector!("notation/notation-go/truststore/tsa/globalsignRoot.cer");
}

/// A P-256 key of the harness's own, fixed so every run is reproducible: what re-signed fuzzed
/// content is signed with.
fn harness_key() -> &'static p256::ecdsa::SigningKey {
    static KEY: OnceLock<p256::ecdsa::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let scalar = Sha256::digest(b"sigmirror fuzzing harness key");
        p256::ecdsa::SigningKey::from_slice(&scalar).expect("a sha256 output is a valid P-256 scalar")
    })
}

fn harness_sign(msg: &[u8]) -> String {
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = harness_key().sign(msg);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

fn harness_public_key() -> PublicKey {
    let spki = p256::pkcs8::EncodePublicKey::to_public_key_der(harness_key().verifying_key()).expect("P-256 SPKI");
    PublicKey::from_spki_der(spki.as_bytes()).expect("the harness key is a P-256 key")
}

/// Every cosign authority the vectors give, plus two for the harness key (with and without a
/// Rekor requirement).
struct Authorities {
    vectors: Vec<CosignAuthority>,
    harness: CosignAuthority,
    harness_rekor: CosignAuthority,
    /// The public-good Rekor keys from `trusted_root.json`.
    sigstore_rekor: Vec<RekorKey>,
}

fn authorities() -> &'static Authorities {
    static AUTH: OnceLock<Authorities> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = |name: &str, pem: &[u8], rekor: Vec<RekorKey>| CosignAuthority::Key {
            name: name.into(),
            key: PublicKey::from_pem(pem).expect("vector key"),
            rekor,
        };
        let rekor_pub = RekorKey::from_pem("rekor.pub", material::REKOR_PUB).expect("vector Rekor key");
        let trusted = cosign::parse_sigstore_trusted_root("trusted_root.json", material::TRUSTED_ROOT)
            .expect("vector trusted root");
        let (fulcio_roots, fulcio_inter) = x509::split_roots(trusted.certificates.clone());
        let pki = x509::parse_pem_certificates(material::PKI_ROOT).expect("vector PKI root");
        let pki_inter = x509::parse_pem_certificates(material::PKI_INTERMEDIATE).expect("vector PKI intermediate");
        let fulcio_v1 = x509::parse_pem_certificates(material::FULCIO_V1).expect("vector Fulcio root");
        let any = || Identity::regexp(".*").expect("regexp");
        let vectors = vec![
            key("cosign.pub", material::COSIGN_PUB, Vec::new()),
            key("cosign2.pub", material::COSIGN2_PUB, vec![rekor_pub.clone()]),
            CosignAuthority::Certificate {
                trust_name: "roots pki_root_crts.pem".into(),
                roots: pki,
                intermediates: pki_inter,
                identity: any(),
                issuer: None,
                rekor: Vec::new(),
                tsa: Vec::new(),
            },
            CosignAuthority::Certificate {
                trust_name: "roots fulcio_v1.crt.pem".into(),
                roots: fulcio_v1,
                intermediates: Vec::new(),
                identity: Identity::Exact("mitr@redhat.com".into()),
                issuer: Some("https://github.com/login/oauth".into()),
                rekor: vec![rekor_pub],
                tsa: Vec::new(),
            },
            CosignAuthority::Certificate {
                trust_name: "sigstore_trusted_root trusted_root.json".into(),
                roots: fulcio_roots,
                intermediates: fulcio_inter,
                identity: any(),
                issuer: None,
                rekor: trusted.rekor_keys.clone(),
                tsa: trusted.timestamp_authorities.clone(),
            },
        ];
        let harness = |rekor| CosignAuthority::Key { name: "harness".into(), key: harness_public_key(), rekor };
        Authorities {
            vectors,
            harness: harness(Vec::new()),
            harness_rekor: harness(trusted.rekor_keys.clone()),
            sigstore_rekor: trusted.rekor_keys,
        }
    })
}

/// What a signature must be about: `digest` under `reference`, and then without the repository
/// check.
fn expectations<'a>(digest: &'a Digest, reference: &'a str) -> [Expectation<'a>; 2] {
    let now = time::macros::datetime!(2025-06-01 00:00 UTC);
    [
        Expectation { digest, docker_reference: Some(reference), now },
        Expectation { digest, docker_reference: None, now },
    ]
}

/// The images the cosign vectors sign, by digest and reference.
fn cosign_images() -> &'static [(Digest, &'static str); 4] {
    static I: OnceLock<[(Digest, &'static str); 4]> = OnceLock::new();
    I.get_or_init(|| {
        [
            (
                "634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00",
                "192.168.64.2:5000/cosign-signed-single-sample",
            ),
            (
                "0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a",
                "192.168.64.2:5000/cosign-signed/key-1",
            ),
            (
                "0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a",
                "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
            ),
            ("253c890b744fe3efa923b68e3a1be07bd007eb44ba29da1e7deb1d4c53b3e212", "localhost:5000/test"),
        ]
        .map(|(hex, reference)| (format!("sha256:{hex}").parse().expect("digest"), reference))
    })
}

/// The expectations for a cosign payload: of the vector image whose digest and reference it
/// mentions (so a fuzzed payload near a real one is checked as that image's), else of the first.
fn cosign_expectations(payload: &[u8]) -> [Expectation<'static>; 2] {
    let mentions = |s: &str| payload.windows(s.len()).any(|w| w == s.as_bytes());
    let images = cosign_images();
    let (digest, reference) = images.iter().find(|(d, r)| mentions(d.hex()) && mentions(r)).unwrap_or(&images[0]);
    expectations(digest, reference)
}

/// The image the Sigstore bundle vector signs; its statement names no repository.
fn bundle_expectations() -> [Expectation<'static>; 2] {
    static D: OnceLock<Digest> = OnceLock::new();
    let d = D.get_or_init(|| {
        "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172".parse().expect("digest")
    });
    expectations(d, "ghcr.io/kubewarden/policies/safe-labels")
}

/// A request line's target, as `server::handle` takes it apart: the route from the path, `ns`
/// and `artifactType` from the query, and the upstream `ns` selects in a fixed config. Whatever
/// the encoding, `ns` selects a configured upstream or none.
pub fn route(data: &[u8]) {
    let target = String::from_utf8_lossy(data);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let _ = crate::server::route_label(path);
    if let Err(e) = crate::oci::parse_route(path) {
        let _ = crate::error::Error::from(e).into_response(false);
    }
    let ns = crate::server::query_param(query, "ns");
    let _ = crate::server::query_param(query, "artifactType");
    let _ = crate::server::strip_ns(query);
    let config = route_config();
    if let Some(up) = config.upstream_for(ns.as_deref()) {
        assert!(
            ns.is_none() || ns.as_deref() == Some(up.registry.as_str()),
            "ns {ns:?} selected upstream {}",
            up.registry
        );
    }
    let _ = target.parse::<ImageRef>();
    let _ = target.parse::<Digest>();
    let _ = crate::oci::media::accepts(&target, crate::oci::media::OCI_MANIFEST);
}

fn route_config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
            [[upstream]]\nregistry = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n\
            [[upstream]]\nregistry = \"localhost:5000\"\nurl = \"http://127.0.0.1:5000\"\ndangerous_plain_http = true\n\
            [[policy]]\nname = \"all\"\nscope = [\"**\"]\nmode = \"audit\"\n";
        let (config, _, c) = Config::from_str(text, Checker::new(Path::new("/nonexistent/sigmirror.toml")))
            .unwrap_or_else(|p| panic!("the route fuzzer's config is wrong: {p}"));
        assert!(c.problems.is_empty(), "the route fuzzer's config has problems: {:?}", c.problems);
        config
    })
}

/// Manifest, index and tag-list JSON as upstream sends them.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<ImageManifest>(data) {
        for d in m.layers.iter().chain(m.config.iter()).chain(m.subject.iter()) {
            let _ = d.digest.parse::<Digest>();
        }
    }
    if let Ok(i) = serde_json::from_slice::<ImageIndex>(data) {
        for d in &i.manifests {
            let _ = d.digest.parse::<Digest>();
        }
    }
    let _ = crate::listing::tag_list("library/busybox", data);
    if let Ok(descriptors) = crate::listing::referrers_index(data) {
        for d in &descriptors {
            let _ = crate::listing::check_descriptor(d);
        }
    }
}

/// The cosign simple-signing payload's claims, as checked once its signature verified.
pub fn simple_signing(data: &[u8]) {
    for exp in cosign_expectations(data) {
        let _ = cosign::check_payload(data, &exp);
    }
}

/// A cosign signature layer in the containers/image `dir:` form (`\0sigstore-json\n` + JSON),
/// against every vector authority; then re-signed with the harness key, so the payload claims
/// and the Rekor bundle annotation are checked too.
pub fn cosign_layer(data: &[u8]) {
    let Ok(mut layer) = SignatureLayer::from_sigstore_json_file(data) else { return };
    let auth = authorities();
    for exp in cosign_expectations(&layer.payload) {
        for a in &auth.vectors {
            if cosign::verify_layer(a, &layer, &exp).is_ok() {
                let _ = cosign::signer_of_layer(a, &layer);
            }
        }
    }
    layer.annotations.insert(cosign::ANNOTATION_SIGNATURE.into(), harness_sign(&layer.payload));
    let rekor = vec![RekorKey::from_pem("rekor.pub", material::REKOR_PUB).expect("vector Rekor key")];
    let harness_rekor = CosignAuthority::Key { name: "harness".into(), key: harness_public_key(), rekor };
    for exp in cosign_expectations(&layer.payload) {
        let _ = cosign::verify_layer(&auth.harness, &layer, &exp);
        let _ = cosign::verify_layer(&harness_rekor, &layer, &exp);
    }
}

/// A Sigstore bundle (cosign v3) against every vector authority; then with its DSSE envelope
/// re-signed by the harness key, so the transparency-log entry, inclusion proof, checkpoint and
/// in-toto statement are checked too.
pub fn bundle(data: &[u8]) {
    let auth = authorities();
    for exp in bundle_expectations() {
        for a in &auth.vectors {
            if bundle::verify_bundle(a, data, &exp).is_ok() {
                let _ = bundle::signer_of_bundle(a, data);
            }
        }
    }
    let Some(resigned) = resign_dsse(data) else { return };
    for exp in bundle_expectations() {
        let _ = bundle::verify_bundle(&auth.harness, &resigned, &exp);
        let _ = bundle::verify_bundle(&auth.harness_rekor, &resigned, &exp);
    }
}

/// The bundle with `dsseEnvelope.signatures[0].sig` replaced by the harness key's signature over
/// the envelope's PAE; `None` when there is no envelope to sign.
fn resign_dsse(data: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let env = v.get_mut("dsseEnvelope")?;
    let payload_type = env.get("payloadType")?.as_str()?.to_string();
    let payload = rekor::strip_whitespace(env.get("payload")?.as_str()?);
    let payload = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    let sig = harness_sign(&bundle::pae(&payload_type, &payload));
    let first = env.get_mut("signatures")?.as_array_mut()?.first_mut()?;
    *first.as_object_mut()?.entry("sig").or_insert(serde_json::Value::Null) = sig.into();
    serde_json::to_vec(&v).ok()
}

/// The in-toto statement of a DSSE envelope, as checked once its signature verified.
pub fn in_toto(data: &[u8]) {
    for exp in bundle_expectations() {
        let _ = bundle::check_statement(data, &exp);
    }
}

/// A Rekor entry as a bundle lists it (`tlogEntries[]`, protojson), and the SET bundle of a
/// cosign signature layer (`dev.sigstore.cosign/bundle`).
pub fn rekor_entry(data: &[u8]) {
    let auth = authorities();
    if let Ok(entry) = serde_json::from_slice::<rekor::TlogEntry>(data) {
        for require_proof in [true, false] {
            let _ = rekor::verify_tlog_entry(&entry, &auth.sigstore_rekor, require_proof);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let rekor = [RekorKey::from_pem("rekor.pub", material::REKOR_PUB).expect("vector Rekor key")];
        let _ = rekor::verify_cosign_bundle(text, &rekor, b"payload", b"signature");
    }
}

/// A Notation JWS envelope: parsed, its headers validated, and verified against the vector trust
/// store for the artifacts the vectors sign.
pub fn jws(data: &[u8]) {
    if let Ok(env) = notation::jws::parse(data) {
        notation_envelope(&env);
    }
    notation_verify(notation::MEDIA_TYPE_JWS, data);
}

/// A Notation COSE_Sign1 envelope, as [`jws`] does it.
pub fn cose(data: &[u8]) {
    if let Ok(env) = notation::cose::parse(data) {
        notation_envelope(&env);
    }
    notation_verify(notation::MEDIA_TYPE_COSE, data);
}

fn notation_envelope(env: &notation::envelope::Envelope) {
    let _ = env.validate_headers();
    let _ = env.unsupported_critical();
    for (target, _) in notation_targets() {
        let _ = notation::check_payload(env, &target);
    }
}

fn notation_verify(media_type: &str, data: &[u8]) {
    let Some(verifier) = notation_verifier() else { return };
    for (target, at) in notation_targets() {
        if matches!(verifier.verify(&target, media_type, data, at), notation::Outcome::Verified { .. }) {
            let _ = NotationVerifier::signer_of(media_type, data);
        }
    }
}

/// The artifacts the notation vectors sign, with an instant at which each is valid.
fn notation_targets() -> [(Target<'static>, OffsetDateTime); 3] {
    static D: OnceLock<[Digest; 3]> = OnceLock::new();
    let d = D.get_or_init(|| {
        [
            "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9",
            "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e",
            "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda",
        ]
        .map(|s| s.parse().expect("digest"))
    });
    let oci = crate::oci::media::OCI_MANIFEST;
    let docker = crate::oci::media::DOCKER_MANIFEST;
    [
        (
            Target { registry_scope: "localhost:5000/e2e", digest: &d[0], media_type: oci, size: 517 },
            time::macros::datetime!(2025-06-01 00:00 UTC),
        ),
        (
            Target {
                registry_scope: "registry.acme-rockets.io/software/net-monitor",
                digest: &d[1],
                media_type: docker,
                size: 528,
            },
            time::macros::datetime!(2025-06-01 00:00 UTC),
        ),
        (
            Target { registry_scope: "localhost:5000/timestamp", digest: &d[2], media_type: docker, size: 528 },
            time::macros::datetime!(2025-06-01 00:00 UTC),
        ),
    ]
}

/// A verifier over the vector trust store: the notation trust store layout is directories, so
/// it is written once under the temporary directory.
fn notation_verifier() -> Option<&'static NotationVerifier> {
    static V: OnceLock<Option<NotationVerifier>> = OnceLock::new();
    V.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("sigmirror-fuzz-truststore-{}", std::process::id()));
        let files: [(&str, &[u8]); 4] = [
            ("x509/ca/vectors/NotationTestRoot.pem", material::NOTATION_TEST_ROOT),
            ("x509/ca/vectors/TestTimestamp.crt", material::TEST_TIMESTAMP),
            ("x509/ca/vectors/e2e.crt", material::E2E_CRT),
            ("x509/tsa/vectors/globalsignRoot.cer", material::GLOBALSIGN_ROOT),
        ];
        for (rel, bytes) in files {
            let path: PathBuf = root.join(rel);
            std::fs::create_dir_all(path.parent()?).ok()?;
            std::fs::write(&path, bytes).ok()?;
        }
        // The untimestamped vectors' scopes without a TSA store, as notation-go's tests have
        // them; every other scope needs a timestamp, and only logs revocation (the GlobalSign
        // TSA names OCSP and CRL endpoints, which sigmirror never contacts).
        let policy = br#"{"version":"1.0","trustPolicies":[
            {"name":"untimestamped","registryScopes":["localhost:5000/e2e","registry.acme-rockets.io/software/net-monitor"],
             "signatureVerification":{"level":"strict"},"trustStores":["ca:vectors"],"trustedIdentities":["*"]},
            {"name":"timestamped","registryScopes":["*"],
             "signatureVerification":{"level":"strict","override":{"revocation":"log"}},
             "trustStores":["ca:vectors","tsa:vectors"],"trustedIdentities":["*"]}]}"#;
        NotationVerifier::from_parts(policy, &root).ok()
    })
    .as_ref()
}

/// A certificate chain as a signature carries it, checked with the cosign (Fulcio), Notary
/// signing and timestamping profiles. The input is one flags byte, then DER certificates one
/// after the other (the leaf first), so real chains are seeds as they are:
/// bit 0 trusts the vector roots too, bit 1 makes the last certificate a root, and bits 2 to 7
/// pick the instant the chain is checked at.
pub fn x509_chain(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut certs = Vec::new();
    while !rest.is_empty() && certs.len() < x509::MAX_CERTIFICATES {
        let Ok((tlv, tail)) = der::read(rest) else { break };
        if let Ok(c) = Certificate::from_der(tlv.raw) {
            certs.push(c);
        }
        rest = tail;
    }
    if certs.is_empty() {
        let _ = x509::parse_pem_certificates(rest);
        return;
    }
    let mut roots = Vec::new();
    if flags & 2 != 0 && certs.len() > 1 {
        roots.extend(certs.pop());
    }
    if flags & 1 != 0 {
        for a in &authorities().vectors {
            if let CosignAuthority::Certificate { roots: r, .. } = a {
                roots.extend(r.iter().cloned());
            }
        }
    }
    // From 2000 to 2063 in steps of a year, which covers every vector's validity.
    let at = OffsetDateTime::from_unix_timestamp(946_684_800 + i64::from(flags >> 2) * 31_557_600).expect("in range");
    let leaf = &certs[0];
    let _ = x509::validate_chain(leaf, &certs[1..], &roots, &ChainOptions::new(at, "fuzzed roots"));
    let _ = x509::san_identities(leaf);
    let _ = x509::fulcio_issuer(leaf);
    let _ = leaf.key_spec();
    let _ = leaf.public_key();
    let _ = notation::chain::subject_dn(leaf);
    let _ = notation::chain::revocation_endpoints(leaf);
    certs.extend(roots);
    let _ = x509::check_in_order(&certs, &x509::Profile::NotaryCodeSigning { at: Some(at) });
    let _ = x509::check_in_order(&certs, &x509::Profile::NotaryCodeSigning { at: None });
    let _ = x509::check_in_order(&certs, &x509::Profile::Timestamping);
}

/// The DER reader: every element, recursively, and the value decoders.
pub fn der_reader(data: &[u8]) {
    fn walk(bytes: &[u8], depth: usize) {
        let mut r = der::Reader::new(bytes);
        while !r.is_empty() {
            let Ok(t) = r.next() else { return };
            assert!(t.raw.ends_with(t.value), "an element's raw bytes end with its value");
            let _ = der::oid_string(t.value);
            let _ = der::small_uint(t.value);
            let _ = der::utf8_string(t.raw);
            // Constructed: descend, bounded so a deep nesting cannot exhaust the stack.
            if t.tag & 0x20 != 0 && depth < 64 {
                walk(t.value, depth + 1);
            }
        }
    }
    walk(data, 0);
    let _ = der::exactly(data, der::SEQUENCE, "fuzzed");
}

/// An RFC 3161 timestamp token (and the TimeStampResp it may come in), verified over fixed
/// signed bytes against the GlobalSign TSA root of the notation vectors.
pub fn timestamp_token(data: &[u8]) {
    let trust =
        timestamp::TsaTrust { roots: &[material::GLOBALSIGN_ROOT], intermediates: &[], roots_name: "tsa trust store" };
    let _ = timestamp::verify(data, b"signed bytes", &trust);
    if let Ok(token) = timestamp::token_of_response(data) {
        let _ = timestamp::verify(token, b"signed bytes", &trust);
    }
}

/// A Notation `trustpolicy.json`, and the distinguished names and store names in it.
pub fn trust_policy(data: &[u8]) {
    let mut problems = Vec::new();
    if let Some(p) = notation::trustpolicy::parse(data, &mut problems) {
        let _ = p.statement_for("docker.io/library/busybox");
        let _ = p.referenced_stores();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = notation::trustpolicy::parse_dn(s);
        let _ = notation::trustpolicy::is_store_name(s);
    }
}

/// Trust files the config names: PEM public keys, Rekor keys, certificate bundles, notation
/// trust store certificates and a Sigstore `trusted_root.json`.
pub fn trust_material(data: &[u8]) {
    let _ = PublicKey::from_pem(data);
    let _ = PublicKey::from_spki_der(data);
    let _ = RekorKey::from_pem("fuzzed", data);
    let _ = crate::verify::keys::pem_blocks(data, 8);
    if let Ok(certs) = x509::parse_pem_certificates(data) {
        let _ = x509::split_roots(certs);
    }
    let _ = notation::truststore::parse_cert_file(data);
    let _ = cosign::parse_sigstore_trusted_root("fuzzed", data);
}

/// The config file: TOML syntax, every key and value, and the policies built from it. Files it
/// names are resolved against `tests/vectors/`, so real keys can be reached; a name under a
/// device or process file system is not followed (a FIFO there would block the run, and that
/// is the operator's file, not outside input).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(source) = crate::config_text::Source::parse(text) {
        let _ = source.locate("policy[0].cosign_keys[0]");
        let _ = source.policy_name(0);
    }
    if ["/dev", "/proc", "/sys", "/run", "..", "fifo"].iter().any(|p| text.contains(p)) {
        return;
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sigmirror.toml");
    if let Ok((_, section, mut c)) = Config::from_str(text, Checker::new(&base)) {
        let _ = crate::policy::PolicySet::build(&section, &mut c);
    }
}

/// Differential: a blob split into arbitrary chunks (empty ones included) through the streaming
/// hasher must come out exactly as `sha2` over the whole buffer says: all of it when the digest
/// and length are right, and never all of it otherwise.
pub fn integrity(data: &[u8]) {
    #[derive(Arbitrary, Debug)]
    struct Case<'a> {
        blob: &'a [u8],
        /// Chunk lengths, taken in turn (0 makes an empty chunk); the rest is one last chunk.
        cuts: Vec<u8>,
        /// Expect the blob's own digest, or another's.
        right_digest: bool,
        /// `Content-Length`: none, the blob's length, or this one.
        length: Option<Option<u16>>,
    }
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let blob = case.blob;
    let whole: [u8; 32] = Sha256::digest(blob).into();
    let expected = if case.right_digest { Digest::from_sha256(&whole) } else { Digest::of(b"another blob") };
    let content_length = case.length.map(|l| l.map_or(blob.len() as u64, u64::from));

    let mut chunks: Vec<Result<Bytes, crate::upstream::UpstreamError>> = Vec::new();
    let mut rest = blob;
    for &cut in case.cuts.iter().take(1024) {
        let (chunk, tail) = rest.split_at((cut as usize).min(rest.len()));
        chunks.push(Ok(Bytes::copy_from_slice(chunk)));
        rest = tail;
    }
    chunks.push(Ok(Bytes::copy_from_slice(rest)));
    let (out, error) = drain(crate::integrity::verify_stream(
        Box::pin(futures_util::stream::iter(chunks)),
        expected.clone(),
        content_length,
    ));

    assert!(blob.starts_with(&out), "the stream sent bytes that are not the blob's");
    let honest = Digest::from_sha256(&whole) == expected && content_length.is_none_or(|n| n >= blob.len() as u64);
    if honest {
        assert_eq!(error, None, "a correct blob was cut off");
        assert_eq!(out.len(), blob.len(), "a correct blob did not stream whole");
    } else {
        assert!(error.is_some(), "a wrong blob ended without an error");
        assert!(out.len() < blob.len() || blob.is_empty(), "a wrong blob reached the client whole");
    }
}

/// Polls a stream to its end with a no-op waker: the chunk stream is always ready, so a
/// `Pending` would be a bug in the hasher.
fn drain<S: futures_util::Stream<Item = Result<Bytes, crate::response::BoxError>>>(s: S) -> (Vec<u8>, Option<String>) {
    use std::task::{Context, Poll};
    let mut s = std::pin::pin!(s);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match s.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
            Poll::Ready(Some(Err(e))) => return (out, Some(e.to_string())),
            Poll::Ready(None) => return (out, None),
            Poll::Pending => panic!("the blob stream waited on a ready source"),
        }
    }
}

/// Differential: the inclusion-proof check (`rekor::merkle_root`) against a Merkle tree built
/// directly by RFC 6962's definition. For every leaf, the direct audit path must lead the check
/// to the direct root; a path one hash short or long, or for another leaf, must not.
pub fn merkle(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(count) = u.int_in_range(1u64..=64) else { return };
    let leaves: Vec<[u8; 32]> = (0..count).map(|i| rekor::merkle_leaf(&i.to_be_bytes())).collect();
    let Ok(index) = u.int_in_range(0..=count - 1) else { return };
    let root = tree_root(&leaves);
    let path = audit_path(index as usize, &leaves);
    let leaf = leaves[index as usize];
    assert_eq!(rekor::merkle_root(index, count, leaf, &path), Some(root), "leaf {index} of {count}");
    if let Some((_, shorter)) = path.split_last() {
        assert_ne!(rekor::merkle_root(index, count, leaf, shorter), Some(root), "a short path verified");
    }
    let mut longer = path.clone();
    longer.push(root);
    assert_ne!(rekor::merkle_root(index, count, leaf, &longer), Some(root), "a long path verified");
    if count > 1 {
        let other = (index + 1) % count;
        assert_ne!(rekor::merkle_root(other, count, leaf, &path), Some(root), "the path verified another index");
    }
    // Fuzzed indices, sizes and paths must never panic.
    let Ok(i) = u64::arbitrary(&mut u) else { return };
    let Ok(n) = u64::arbitrary(&mut u) else { return };
    let hashes: Vec<[u8; 32]> = Vec::arbitrary(&mut u).unwrap_or_default();
    let _ = rekor::merkle_root(i, n, leaf, &hashes);
}

/// MTH(D[n]) of RFC 6962 section 2.1, on leaf hashes.
fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split_point(leaves.len());
    rekor::merkle_node(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
}

/// PATH(m, D[n]) of RFC 6962 section 2.1.1, leaf side first.
fn audit_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() == 1 {
        return Vec::new();
    }
    let k = split_point(leaves.len());
    let (mut path, sibling) = if m < k {
        (audit_path(m, &leaves[..k]), &leaves[k..])
    } else {
        (audit_path(m - k, &leaves[k..]), &leaves[..k])
    };
    path.push(tree_root(sibling));
    path
}

/// The largest power of two smaller than `n` (n > 1).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

#[cfg(test)]
mod tests {
    //! The harness's trust material must verify the real vectors, or every fuzz target built on
    //! it would stop at the first check and the fuzzer would only ever see refusals.
    use super::*;

    macro_rules! vector {
        ($path:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/", $path)).as_slice()
        };
    }

    fn layer(bytes: &[u8]) -> SignatureLayer {
        SignatureLayer::from_sigstore_json_file(bytes).expect("vector layer")
    }

    #[test]
    fn the_cosign_vectors_verify_with_the_harness_authorities() {
        let v = &authorities().vectors;
        let cases: [(&CosignAuthority, &[u8]); 4] = [
            (&v[0], vector!("cosign/containers-image/dir-img-cosign-valid/signature-1")),
            (&v[1], vector!("cosign/containers-image/dir-img-cosign-key-rekor-valid/signature-1")),
            (&v[2], vector!("cosign/containers-image/dir-img-cosign-pki-valid/signature-1")),
            (&v[3], vector!("cosign/containers-image/dir-img-cosign-fulcio-rekor-valid/signature-1")),
        ];
        for (auth, bytes) in cases {
            let l = layer(bytes);
            for exp in cosign_expectations(&l.payload) {
                assert_eq!(cosign::verify_layer(auth, &l, &exp), Ok(()), "{}", auth.describe());
            }
        }
    }

    #[test]
    fn a_re_signed_cosign_layer_reaches_the_payload_claims() {
        let mut l = layer(vector!("cosign/containers-image/dir-img-cosign-valid/signature-1"));
        l.annotations.insert(cosign::ANNOTATION_SIGNATURE.into(), harness_sign(&l.payload));
        let [exp, _] = cosign_expectations(&l.payload);
        assert_eq!(cosign::verify_layer(&authorities().harness, &l, &exp), Ok(()));
        l.payload = br#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"},"identity":{"docker-reference":"elsewhere/x"}}}"#.to_vec();
        l.annotations.insert(cosign::ANNOTATION_SIGNATURE.into(), harness_sign(&l.payload));
        let refused = cosign::verify_layer(&authorities().harness, &l, &exp).unwrap_err();
        assert!(matches!(refused, cosign::Refusal::WrongRepository(_)), "{refused}");
    }

    #[test]
    fn the_bundle_vector_verifies_and_re_signed_reaches_the_statement() {
        let bytes = vector!("cosign/sigstore-rs/bundle_v03.json");
        let [_, unbound] = bundle_expectations();
        assert_eq!(bundle::verify_bundle(&authorities().vectors[4], bytes, &unbound), Ok(()));
        let resigned = resign_dsse(bytes).expect("the vector has an envelope");
        assert_eq!(bundle::verify_bundle(&authorities().harness, &resigned, &unbound), Ok(()));
        // With a log required, the re-signed envelope gets as far as the log entry, which
        // recorded the original signature.
        let refused = bundle::verify_bundle(&authorities().harness_rekor, &resigned, &unbound).unwrap_err();
        assert!(refused.to_string().contains("Rekor"), "{refused}");
    }

    #[test]
    fn the_notation_vectors_verify_with_the_harness_trust_store() {
        let verifier = notation_verifier().expect("the harness trust store loads");
        let targets = notation_targets();
        let cases: [(usize, &str, &[u8]); 4] = [
            (0, notation::MEDIA_TYPE_JWS, vector!("notation/notation-cli-e2e/e2e-valid-signature/blobs/sha256/c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50")),
            (1, notation::MEDIA_TYPE_JWS, vector!("notation/notation-go/ca_valid_sig_env.json")),
            (2, notation::MEDIA_TYPE_JWS, vector!("notation/notation-go/jwsWithTimestamp.sig")),
            (2, notation::MEDIA_TYPE_COSE, vector!("notation/notation-go/coseWithTimestamp.sig")),
        ];
        for (i, media_type, bytes) in cases {
            let (target, at) = &targets[i];
            let outcome = verifier.verify(target, media_type, bytes, *at);
            assert!(
                matches!(outcome, notation::Outcome::Verified { .. }),
                "{media_type} for {}: {outcome:?}",
                target.digest
            );
        }
    }

    #[test]
    fn the_differential_targets_agree_on_plain_inputs() {
        for n in 0..64u8 {
            let input: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            integrity(&input);
            merkle(&input);
        }
    }
}
