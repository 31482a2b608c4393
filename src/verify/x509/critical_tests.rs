//! One rule, every chain: a certificate with a critical extension sigmirror does not understand
//! is refused wherever it appears, in cosign certificate chains (leaf and CAs), Notation signing
//! chains and RFC 3161 TSA chains (Notation countersignatures and Sigstore bundle timestamps).
//! Each chain is built with rcgen and checked through the entry point its verifier uses.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair, KeyUsagePurpose};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::verify::cosign::{self, CosignAuthority, Expectation, Identity};
use crate::verify::notation::{NotationVerifier, Outcome, Target, MEDIA_TYPE_JWS};
use crate::verify::x509::tests::{ca_params, leaf_params, TestCa, NOW};
use crate::verify::x509::Certificate;

const UNKNOWN: &str = "has a critical extension 1.2.3.4 that sigmirror does not handle";

/// A critical extension no verifier understands (RFC 5280: such a certificate must be refused).
fn unknown_critical() -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
    ext.set_criticality(true);
    ext
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

fn p256_of(k: &KeyPair) -> p256::ecdsa::SigningKey {
    use p256::pkcs8::DecodePrivateKey as _;
    p256::ecdsa::SigningKey::from_pkcs8_der(&k.serialize_der()).expect("pkcs8")
}

fn cert(c: &rcgen::Certificate) -> Certificate {
    Certificate::from_der(c.der()).expect("parse")
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

// ---- cosign: the chain check every cosign format shares (`cosign::check_certificate`) ----

fn cosign_authority(roots: Vec<Certificate>) -> CosignAuthority {
    CosignAuthority::Certificate {
        trust_name: "roots test-ca.pem".into(),
        roots,
        intermediates: Vec::new(),
        identity: Identity::Exact("a@example.com".into()),
        issuer: None,
        rekor: Vec::new(),
        tsa: Vec::new(),
    }
}

#[test]
fn a_cosign_leaf_or_ca_with_an_unknown_critical_extension_is_refused() {
    let at = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    let ca = TestCa::new("Root");
    let auth = cosign_authority(vec![ca.root_cert()]);
    let (ok, _, _) = ca.issue(leaf_params("a@example.com", None));
    assert_eq!(cosign::check_certificate(&auth, &ok, vec![], at), Ok(()));

    let mut p = leaf_params("a@example.com", None);
    p.custom_extensions.push(unknown_critical());
    let (leaf, _, _) = ca.issue(p);
    assert_eq!(cosign::check_certificate(&auth, &leaf, vec![], at), Err(format!("certificate {UNKNOWN}")));

    // An intermediate the signature brings along.
    let inter_key = key();
    let mut p = ca_params("Intermediate", None);
    p.custom_extensions.push(unknown_critical());
    let inter = p.signed_by(&inter_key, &ca.root, &ca.root_key).expect("sign");
    let leaf = leaf_params("a@example.com", None).signed_by(&key(), &inter, &inter_key).expect("sign");
    assert_eq!(
        cosign::check_certificate(&auth, &cert(&leaf), vec![cert(&inter)], at),
        Err(format!("CA certificate O=sigmirror tests, CN=Intermediate {UNKNOWN}"))
    );

    // The configured root itself.
    let root_key = key();
    let mut p = ca_params("Odd Root", None);
    p.custom_extensions.push(unknown_critical());
    let root = p.self_signed(&root_key).expect("root");
    let leaf = leaf_params("a@example.com", None).signed_by(&key(), &root, &root_key).expect("sign");
    assert_eq!(
        cosign::check_certificate(&cosign_authority(vec![cert(&root)]), &cert(&leaf), vec![], at),
        Err(format!("CA certificate O=sigmirror tests, CN=Odd Root {UNKNOWN}"))
    );
}

// ---- Notation: signing chains and timestamp countersignatures ----

const NOTATION_NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn named(cn: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    d.push(DnType::OrganizationName, "sigmirror tests");
    d.push(DnType::CommonName, cn);
    d
}

/// A Notary Project signing leaf: critical key usage digitalSignature only, code signing EKU.
fn notary_leaf_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = named("builder");
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    p.not_before = datetime!(2024-01-01 00:00 UTC);
    p.not_after = datetime!(2030-01-01 00:00 UTC);
    p
}

/// An RFC 3161 TSA certificate as the Notary Project requires it: timeStamping as the only,
/// critical, extended key usage (rcgen writes EKU non-critical, so it is added by hand).
fn tsa_leaf_params() -> CertificateParams {
    let mut p = notary_leaf_params();
    p.distinguished_name = named("Test TSA");
    p.extended_key_usages = Vec::new();
    let eku = [0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 37], eku.to_vec());
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    p
}

/// A root (self-signed CA) and one certificate it issued, each with its key.
struct Issued {
    root: rcgen::Certificate,
    leaf: rcgen::Certificate,
    leaf_key: KeyPair,
}

fn issue(root: CertificateParams, leaf: CertificateParams) -> Issued {
    let root_key = key();
    let root = root.self_signed(&root_key).expect("root");
    let leaf_key = key();
    let leaf = leaf.signed_by(&leaf_key, &root, &root_key).expect("leaf");
    Issued { root, leaf, leaf_key }
}

fn pem(der: &[u8]) -> String {
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64(der))
}

/// A trust store with `ca:test` and, if given, `tsa:test`, and a strict global policy on them.
fn notation_verifier(ca_root: &[u8], tsa_root: Option<&[u8]>) -> (tempfile::TempDir, NotationVerifier) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut stores = vec!["\"ca:test\""];
    for (kind, der) in [("ca", Some(ca_root)), ("tsa", tsa_root)] {
        let Some(der) = der else { continue };
        let d = dir.path().join("truststore/x509").join(kind).join("test");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("root.pem"), pem(der)).expect("write");
    }
    if tsa_root.is_some() {
        stores.push("\"tsa:test\"");
    }
    let policy = format!(
        r#"{{"version":"1.0","trustPolicies":[{{"name":"test","registryScopes":["*"],"signatureVerification":{{"level":"strict"}},"trustStores":[{}],"trustedIdentities":["*"]}}]}}"#,
        stores.join(",")
    );
    let v = NotationVerifier::from_parts(policy.as_bytes(), &dir.path().join("truststore")).expect("policy");
    (dir, v)
}

/// An ES256 JWS over a payload for [`DIGEST`] with `chain` as `x5c`, countersigned by the TSA
/// when one is given.
fn notation_jws(key: &p256::ecdsa::SigningKey, chain: &[&[u8]], tsa: Option<&Tsa>) -> Vec<u8> {
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({
        "alg": "ES256",
        "crit": ["io.cncf.notary.signingScheme"],
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2026-02-01T10:00:00Z",
    });
    let payload = format!(r#"{{"targetArtifact":{{"digest":"{DIGEST}","mediaType":"{OCI_MANIFEST}","size":1234}}}}"#);
    let (protected, payload) = (b64u(header.to_string().as_bytes()), b64u(payload.as_bytes()));
    let sig: p256::ecdsa::Signature = key.sign(format!("{protected}.{payload}").as_bytes());
    let sig = sig.to_bytes().to_vec();
    let mut unprotected = json!({"x5c": chain.iter().map(|c| b64(c)).collect::<Vec<_>>()});
    if let Some(tsa) = tsa {
        let token = tsa.token(&sig, "20260201100000Z", true);
        unprotected["io.cncf.notary.timestampSignature"] = b64(&token).into();
    }
    serde_json::to_vec(
        &json!({"payload": payload, "protected": protected, "header": unprotected, "signature": b64u(&sig)}),
    )
    .expect("json")
}

fn notation_verify(v: &NotationVerifier, env: &[u8]) -> Outcome {
    let digest = DIGEST.parse().expect("digest");
    let target =
        Target { registry_scope: "registry.example/app", digest: &digest, media_type: OCI_MANIFEST, size: 1234 };
    v.verify(&target, MEDIA_TYPE_JWS, env, NOTATION_NOW)
}

#[test]
fn a_notation_signing_certificate_with_an_unknown_critical_extension_is_refused() {
    let refused = |o: Outcome, subject: &str| {
        assert_eq!(
            o,
            Outcome::Refused(format!(
                "notation: integrity validation failed: certificate chain: certificate \"{subject}\" {UNKNOWN}"
            ))
        )
    };
    let good = issue(ca_params("Root", None), notary_leaf_params());
    let (_d, v) = notation_verifier(good.root.der(), None);
    let env = notation_jws(&p256_of(&good.leaf_key), &[good.leaf.der(), good.root.der()], None);
    assert_eq!(notation_verify(&v, &env), Outcome::Verified { logged: vec![] });

    // The leaf.
    let mut lp = notary_leaf_params();
    lp.custom_extensions.push(unknown_critical());
    let bad = issue(ca_params("Root", None), lp);
    let (_d, v) = notation_verifier(bad.root.der(), None);
    let env = notation_jws(&p256_of(&bad.leaf_key), &[bad.leaf.der(), bad.root.der()], None);
    refused(notation_verify(&v, &env), "CN=builder,O=sigmirror tests");

    // The root, which is also the trust store's certificate.
    let mut rp = ca_params("Root", None);
    rp.custom_extensions.push(unknown_critical());
    let bad = issue(rp, notary_leaf_params());
    let (_d, v) = notation_verifier(bad.root.der(), None);
    let env = notation_jws(&p256_of(&bad.leaf_key), &[bad.leaf.der(), bad.root.der()], None);
    refused(notation_verify(&v, &env), "CN=Root,O=sigmirror tests");

    // An intermediate between them.
    let root_key = key();
    let root = ca_params("Root", None).self_signed(&root_key).expect("root");
    let mut ip = ca_params("Intermediate", None);
    ip.custom_extensions.push(unknown_critical());
    let inter_key = key();
    let inter = ip.signed_by(&inter_key, &root, &root_key).expect("inter");
    let leaf_key = key();
    let leaf = notary_leaf_params().signed_by(&leaf_key, &inter, &inter_key).expect("leaf");
    let (_d, v) = notation_verifier(root.der(), None);
    let env = notation_jws(&p256_of(&leaf_key), &[leaf.der(), inter.der(), root.der()], None);
    refused(notation_verify(&v, &env), "CN=Intermediate,O=sigmirror tests");
}

#[test]
fn a_name_constrained_ca_is_refused_because_sigmirror_does_not_enforce_name_constraints() {
    // RFC 5280 requires name constraints to be critical; trusting the CA while ignoring them
    // would trust it beyond its constraints, so the extension is not on the understood list.
    let constrained = || {
        let mut p = ca_params("Constrained Root", None);
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: Vec::new(),
        });
        p
    };
    let nc = "has a critical extension 2.5.29.30 that sigmirror does not handle";
    let cosign = issue(constrained(), leaf_params("a@example.com", None));
    assert_eq!(
        cosign::check_certificate(
            &cosign_authority(vec![cert(&cosign.root)]),
            &cert(&cosign.leaf),
            vec![],
            OffsetDateTime::from_unix_timestamp(NOW).expect("time")
        ),
        Err(format!("CA certificate O=sigmirror tests, CN=Constrained Root {nc}"))
    );
    let notary = issue(constrained(), notary_leaf_params());
    let (_d, v) = notation_verifier(notary.root.der(), None);
    let env = notation_jws(&p256_of(&notary.leaf_key), &[notary.leaf.der(), notary.root.der()], None);
    assert_eq!(
        notation_verify(&v, &env),
        Outcome::Refused(format!(
            "notation: integrity validation failed: certificate chain: certificate \"CN=Constrained Root,O=sigmirror tests\" {nc}"
        ))
    );
}

// ---- RFC 3161 tokens, made the way a TSA makes them ----

/// Minimal DER writing for the token: enough to build what `timestamp` parses.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().expect("arc")).collect();
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut chunk = vec![(a & 0x7f) as u8];
        let mut rest = a >> 7;
        while rest > 0 {
            chunk.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        body.extend(chunk.iter().rev());
    }
    tlv(0x06, &body)
}

/// A TSA: its root and its (P-256) signing certificate.
struct Tsa {
    issued: Issued,
}

impl Tsa {
    fn new(root: CertificateParams, leaf: CertificateParams) -> Tsa {
        Tsa { issued: issue(root, leaf) }
    }

    fn root(&self) -> &[u8] {
        self.issued.root.der()
    }

    fn cert(&self) -> &[u8] {
        self.issued.leaf.der()
    }

    /// A DER TimeStampToken (CMS SignedData over a TSTInfo) over sha256(`signed`) at `gen_time`
    /// (`YYYYMMDDHHMMSSZ`), carrying the TSA certificate when `with_cert` (Sigstore's TSA does
    /// not; notation's do).
    fn token(&self, signed: &[u8], gen_time: &str, with_cert: bool) -> Vec<u8> {
        let sha256 = seq(&[&oid("2.16.840.1.101.3.4.2.1")]);
        let tst_info = seq(&[
            &tlv(0x02, &[1]),
            &oid("1.2.3.4.1"),
            &seq(&[&sha256, &tlv(0x04, &Sha256::digest(signed))]),
            &tlv(0x02, &[7]),
            &tlv(0x18, gen_time.as_bytes()),
        ]);
        let attr = |t: &str, v: &[u8]| seq(&[&oid(t), &tlv(0x31, v)]);
        let attrs = [
            attr("1.2.840.113549.1.9.3", &oid("1.2.840.113549.1.9.16.1.4")),
            attr("1.2.840.113549.1.9.4", &tlv(0x04, &Sha256::digest(&tst_info))),
            attr("1.2.840.113549.1.9.16.2.47", &seq(&[&seq(&[&seq(&[&tlv(0x04, &Sha256::digest(self.cert()))])])])),
        ]
        .concat();
        let sig: p256::ecdsa::Signature = p256_of(&self.issued.leaf_key).sign(&tlv(0x31, &attrs));
        let (_, parsed) = x509_parser::parse_x509_certificate(self.cert()).expect("tsa cert");
        let signer_info = seq(&[
            &tlv(0x02, &[1]),
            &seq(&[parsed.issuer().as_raw(), &tlv(0x02, parsed.raw_serial())]),
            &sha256,
            &tlv(0xa0, &attrs),
            &seq(&[&oid("1.2.840.10045.4.3.2")]),
            &tlv(0x04, sig.to_der().as_bytes()),
        ]);
        let certs = if with_cert { tlv(0xa0, self.cert()) } else { Vec::new() };
        let signed_data = seq(&[
            &tlv(0x02, &[3]),
            &tlv(0x31, &sha256),
            &seq(&[&oid("1.2.840.113549.1.9.16.1.4"), &tlv(0xa0, &tlv(0x04, &tst_info))]),
            &certs,
            &tlv(0x31, &signer_info),
        ]);
        seq(&[&oid("1.2.840.113549.1.7.2"), &tlv(0xa0, &signed_data)])
    }
}

fn tsa_with_unknown_critical(in_leaf: bool) -> Tsa {
    let (mut root, mut leaf) = (ca_params("TSA Root", None), tsa_leaf_params());
    let target = if in_leaf { &mut leaf } else { &mut root };
    target.custom_extensions.push(unknown_critical());
    Tsa::new(root, leaf)
}

#[test]
fn a_notation_tsa_certificate_with_an_unknown_critical_extension_is_refused() {
    let signer = issue(ca_params("Root", None), notary_leaf_params());
    let env_for = |tsa: &Tsa| {
        let env = notation_jws(&p256_of(&signer.leaf_key), &[signer.leaf.der(), signer.root.der()], Some(tsa));
        let (_d, v) = notation_verifier(signer.root.der(), Some(tsa.root()));
        notation_verify(&v, &env)
    };
    let good = Tsa::new(ca_params("TSA Root", None), tsa_leaf_params());
    assert_eq!(env_for(&good), Outcome::Verified { logged: vec![] });
    for (in_leaf, subject) in [(true, "CN=Test TSA,O=sigmirror tests"), (false, "CN=TSA Root,O=sigmirror tests")] {
        assert_eq!(
            env_for(&tsa_with_unknown_critical(in_leaf)),
            Outcome::Refused(format!(
                "notation: authenticTimestamp validation failed: the timestamp countersignature does not verify: \
                 TSA certificate chain: certificate \"{subject}\" {UNKNOWN}"
            ))
        );
    }
}

// ---- Sigstore bundles: the RFC 3161 timestamps of `timestampVerificationData` ----

/// A v0.3 certificate bundle for `digest`, signed by a Fulcio-like leaf, logged by `log` and
/// timestamped by `tsa`, and the trusted_root.json that trusts all three.
fn sigstore_bundle(
    ca: &TestCa,
    log: &p256::ecdsa::SigningKey,
    tsa: &Tsa,
    digest: &str,
) -> (serde_json::Value, serde_json::Value) {
    use crate::verify::bundle::{pae, BUNDLE_MEDIA_TYPE, COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE};
    use crate::verify::rekor;
    let (leaf, signer, _) = ca.issue(leaf_params("a@example.com", Some("https://issuer.example")));
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": &digest[7..]}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
    }))
    .expect("json");
    let sig: p256::ecdsa::Signature = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &statement));
    let sig = sig.to_der().as_bytes().to_vec();

    let body = serde_json::to_vec(&json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&statement))},
        "signatures": [{"signature": b64(&sig), "verifier": b64(pem(&leaf.der).as_bytes())}]
    }}))
    .expect("json");
    let log_key = rekor::tests::test_log_key(log);
    let t = 1_790_000_000i64;
    let canonical = format!(
        "{{\"body\":{},\"integratedTime\":{t},\"logID\":\"{}\",\"logIndex\":7}}",
        serde_json::to_string(&b64(&body)).expect("json"),
        log_key.log_id()
    );
    let set: p256::ecdsa::Signature = log.sign(canonical.as_bytes());
    let root = rekor::merkle_leaf(&body);
    let note = format!("test.log - 1\n1\n{}\n", b64(&root));
    let note_sig: p256::ecdsa::Signature = log.sign(note.as_bytes());
    let log_id = hex::decode(log_key.log_id()).expect("hex");
    let mut hinted = log_id[..4].to_vec();
    hinted.extend_from_slice(note_sig.to_der().as_bytes());
    // 2026-09-21T00:00:00Z: inside the leaf's and the TSA's validity, as a real timestamp is.
    let token = tsa.token(&sig, "20260921000000Z", false);
    let response = seq(&[&seq(&[&tlv(0x02, &[0])]), &token]);
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "certificate": {"rawBytes": b64(&leaf.der)},
            "tlogEntries": [{
                "logIndex": "7",
                "logId": {"keyId": b64(&log_id)},
                "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                "integratedTime": t.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": b64(set.to_der().as_bytes())},
                "inclusionProof": {
                    "logIndex": "0", "treeSize": "1", "rootHash": b64(&root), "hashes": [],
                    "checkpoint": {"envelope": format!("{note}\n\u{2014} test.log {}\n", b64(&hinted))}
                },
                "canonicalizedBody": b64(&body),
            }],
            "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": b64(&response)}]},
        },
        "dsseEnvelope": {
            "payload": b64(&statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64(&sig), "keyid": ""}]
        }
    });
    let trusted_root = json!({
        "certificateAuthorities": [{"certChain": {"certificates": [{"rawBytes": b64(ca.root.der())}]}}],
        "tlogs": [{"publicKey": {"rawBytes": b64(log_key.spki_der())}}],
        "timestampAuthorities": [{"certChain": {"certificates": [{"rawBytes": b64(tsa.cert())}, {"rawBytes": b64(tsa.root())}]}}],
    });
    (bundle, trusted_root)
}

#[test]
fn a_bundle_tsa_certificate_with_an_unknown_critical_extension_is_refused() {
    use crate::verify::bundle::{verify_bundle_times, VerifiedTime};
    let ca = TestCa::new("Fulcio Root");
    let log = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).expect("key");
    let digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let check = |tsa: &Tsa| {
        let (bundle, trusted_root) = sigstore_bundle(&ca, &log, tsa, digest);
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("tr.json"), trusted_root.to_string()).expect("write");
        let (p, mut c) = crate::config::policy_fragment(
            dir.path(),
            "[[cosign_certificates]]\nsigstore_trusted_root = \"tr.json\"\n\
             identity = \"a@example.com\"\nissuer = \"https://issuer.example\"",
        );
        let auth = CosignAuthority::from_policy(&p, &mut c).remove(0);
        assert!(c.problems.is_empty());
        let d = digest.parse().expect("digest");
        let exp =
            Expectation { digest: &d, docker_reference: None, now: OffsetDateTime::from_unix_timestamp(NOW).unwrap() };
        verify_bundle_times(&auth, bundle.to_string().as_bytes(), &exp)
    };
    let good = check(&Tsa::new(ca_params("TSA Root", None), tsa_leaf_params())).expect("verifies");
    assert!(matches!(good.as_slice(), [VerifiedTime::Rekor(_), VerifiedTime::Rfc3161 { .. }]), "{good:?}");
    for (in_leaf, subject) in [(true, "CN=Test TSA,O=sigmirror tests"), (false, "CN=TSA Root,O=sigmirror tests")] {
        assert_eq!(
            check(&tsa_with_unknown_critical(in_leaf)),
            Err(crate::verify::cosign::Refusal::Invalid(format!(
                "bundle RFC 3161 timestamp does not verify: TSA certificate chain: certificate \"{subject}\" {UNKNOWN}"
            )))
        );
    }
}
