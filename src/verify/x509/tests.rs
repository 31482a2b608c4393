use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

fn vector(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"))).expect("vector file")
}

fn at(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).expect("time")
}

/// 2026-11-23T00:00:00Z: tests never read the wall clock.
pub(crate) const NOW: i64 = 1_795_392_000;

/// A small CA for tests: a root, optionally an intermediate, and leaves with chosen traits.
pub(crate) struct TestCa {
    pub root: rcgen::Certificate,
    pub root_key: KeyPair,
}

pub(crate) fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sigmirror tests");
    dn.push(DnType::CommonName, cn);
    dn
}

pub(crate) fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = name(cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

/// Leaf parameters like a Fulcio certificate: email SAN, code-signing EKU, issuer extensions.
pub(crate) fn leaf_params(email: &str, issuer: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().expect("ia5"))];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2027, 1, 1);
    if let Some(iss) = issuer {
        p.custom_extensions
            .push(CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 1], iss.as_bytes().to_vec()));
        let mut v2 = vec![0x0c, iss.len() as u8];
        v2.extend_from_slice(iss.as_bytes());
        p.custom_extensions.push(CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], v2));
    }
    p
}

impl TestCa {
    pub(crate) fn new(cn: &str) -> TestCa {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let root = ca_params(cn, None).self_signed(&root_key).expect("root");
        TestCa { root, root_key }
    }

    /// Issues a certificate; returns it with the P-256 signing key of its subject.
    pub(crate) fn issue(&self, p: CertificateParams) -> (Certificate, p256::ecdsa::SigningKey, KeyPair) {
        use p256::pkcs8::DecodePrivateKey as _;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = p.signed_by(&key, &self.root, &self.root_key).expect("sign");
        let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&key.serialize_der()).expect("pkcs8");
        (Certificate::from_der(cert.der()).expect("parse"), sk, key)
    }

    pub(crate) fn root_cert(&self) -> Certificate {
        Certificate::from_der(self.root.der()).expect("parse")
    }
}

fn opts(ts: i64) -> ChainOptions {
    ChainOptions::new(at(ts), "roots test-ca.pem")
}

#[test]
fn the_private_pki_vector_chains_through_its_intermediate_to_its_root() {
    let roots = parse_pem_certificates(&vector("cosign/containers-image/pki_root_crts.pem")).expect("roots");
    let inter = parse_pem_certificates(&vector("cosign/containers-image/pki_intermediate_crts.pem")).expect("inter");
    let layer = super::super::cosign::SignatureLayer::from_sigstore_json_file(&vector(
        "cosign/containers-image/dir-img-cosign-pki-valid/signature-1",
    ))
    .expect("layer");
    let leaf = parse_pem_certificates(layer.annotations["dev.sigstore.cosign/certificate"].as_bytes()).expect("leaf");
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf[0].public_key().expect("key").rsa_bits(), Some(4096));
    assert_eq!(validate_chain(&leaf[0], &inter, &roots, &opts(NOW)), Ok(0));
    assert_eq!(
        validate_chain(&leaf[0], &[], &roots, &opts(NOW)),
        Err("certificate chain does not reach roots test-ca.pem".into())
    );
    assert_eq!(san_identities(&leaf[0]), vec!["myhost.example.com".to_string(), "qiwan@redhat.com".to_string()]);
    assert_eq!(fulcio_issuer(&leaf[0]), None);
    assert!(roots[0].is_self_issued() && !inter[0].is_self_issued());
    assert_eq!(
        validate_chain(&leaf[0], &inter, &roots, &opts(1_600_000_000)),
        Err("certificate is not valid before 2024-10-01T14:28:43Z".into())
    );
}

#[test]
fn the_fulcio_vector_is_valid_at_signing_time_and_expired_today() {
    let layer = super::super::cosign::SignatureLayer::from_sigstore_json_file(&vector(
        "cosign/containers-image/dir-img-cosign-fulcio-rekor-valid/signature-1",
    ))
    .expect("layer");
    let leaf = parse_pem_certificates(layer.annotations["dev.sigstore.cosign/certificate"].as_bytes()).expect("leaf");
    let chain = parse_pem_certificates(layer.annotations["dev.sigstore.cosign/chain"].as_bytes()).expect("chain");
    let (roots, inters) = split_roots(chain);
    assert_eq!((roots.len(), inters.len()), (1, 1));
    assert_eq!(validate_chain(&leaf[0], &inters, &roots, &opts(1_674_247_893)), Ok(0));
    assert_eq!(
        validate_chain(&leaf[0], &inters, &roots, &opts(NOW)),
        Err("certificate expired at 2023-01-20T21:01:31Z".into())
    );
    assert_eq!(san_identities(&leaf[0]), vec!["mitr@redhat.com".to_string()]);
    assert_eq!(fulcio_issuer(&leaf[0]).as_deref(), Some("https://github.com/login/oauth"));
    assert_eq!(leaf[0].display_name(), "mitr@redhat.com");
}

#[test]
fn a_leaf_issued_by_another_ca_does_not_reach_the_roots() {
    let ca = TestCa::new("Good Root");
    let other = TestCa::new("Other Root");
    let (leaf, _, _) = other.issue(leaf_params("a@example.com", None));
    assert_eq!(
        validate_chain(&leaf, &[], &[ca.root_cert()], &opts(NOW)),
        Err("certificate chain does not reach roots test-ca.pem".into())
    );
    // Same subject name as the trusted root, but a different key: the signature check catches it.
    let impostor = TestCa::new("Good Root");
    let (leaf, _, _) = impostor.issue(leaf_params("a@example.com", None));
    let err = validate_chain(&leaf, &[], &[ca.root_cert()], &opts(NOW)).unwrap_err();
    assert!(err.contains("its signature does not verify"), "{err}");
}

#[test]
fn leaf_checks_give_precise_reasons() {
    let ca = TestCa::new("Root");
    let roots = [ca.root_cert()];
    let (ok, _, _) = ca.issue(leaf_params("a@example.com", Some("https://issuer.example")));
    assert_eq!(validate_chain(&ok, &[], &roots, &opts(NOW)), Ok(0));
    assert_eq!(fulcio_issuer(&ok).as_deref(), Some("https://issuer.example"));

    let mut p = leaf_params("a@example.com", None);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (no_eku, _, _) = ca.issue(p);
    assert_eq!(
        validate_chain(&no_eku, &[], &roots, &opts(NOW)),
        Err("certificate is missing the code-signing extended key usage".into())
    );
    let mut o = opts(NOW);
    o.require_code_signing_eku = false;
    assert_eq!(validate_chain(&no_eku, &[], &roots, &o), Ok(0));

    let mut p = leaf_params("a@example.com", None);
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let (no_ds, _, _) = ca.issue(p);
    assert_eq!(
        validate_chain(&no_ds, &[], &roots, &opts(NOW)),
        Err("certificate key usage does not allow digital signatures".into())
    );

    let mut p = leaf_params("a@example.com", None);
    p.not_after = rcgen::date_time_ymd(2026, 3, 1);
    let (expired, _, _) = ca.issue(p);
    assert_eq!(
        validate_chain(&expired, &[], &roots, &opts(NOW)),
        Err("certificate expired at 2026-03-01T00:00:00Z".into())
    );

    let mut p = leaf_params("a@example.com", None);
    let mut ext = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    let (crit, _, _) = ca.issue(p);
    assert_eq!(
        validate_chain(&crit, &[], &roots, &opts(NOW)),
        Err("certificate has a critical extension 1.2.3.4 that sigmirror does not handle".into())
    );
}

#[test]
fn intermediates_must_be_cas_within_path_length_and_time() {
    let ca = TestCa::new("Root");
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let build = |p: CertificateParams| {
        let c = p.signed_by(&inter_key, &ca.root, &ca.root_key).expect("sign");
        (Certificate::from_der(c.der()).expect("parse"), c)
    };
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf_under = |issuer: &rcgen::Certificate| {
        let c = leaf_params("a@example.com", None).signed_by(&leaf_key, issuer, &inter_key).expect("sign");
        Certificate::from_der(c.der()).expect("parse")
    };
    let roots = [ca.root_cert()];

    let (good, good_rc) = build(ca_params("Intermediate", Some(0)));
    assert_eq!(validate_chain(&leaf_under(&good_rc), std::slice::from_ref(&good), &roots, &opts(NOW)), Ok(0));

    let mut p = ca_params("Intermediate", None);
    p.is_ca = IsCa::ExplicitNoCa;
    let (not_ca, rc) = build(p);
    assert_eq!(
        validate_chain(&leaf_under(&rc), &[not_ca], &roots, &opts(NOW)),
        Err("CA certificate O=sigmirror tests, CN=Intermediate is not marked as a CA (basic constraints)".into())
    );

    let mut p = ca_params("Intermediate", None);
    p.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let (old, rc) = build(p);
    assert_eq!(
        validate_chain(&leaf_under(&rc), &[old], &roots, &opts(NOW)),
        Err("CA certificate O=sigmirror tests, CN=Intermediate expired at 2025-01-01T00:00:00Z".into())
    );

    // Root constrained to pathlen 0 cannot have an intermediate below it.
    let strict_root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let strict_root = ca_params("Strict Root", Some(0)).self_signed(&strict_root_key).expect("root");
    let inter = ca_params("Intermediate", None).signed_by(&inter_key, &strict_root, &strict_root_key).expect("sign");
    let err = validate_chain(
        &leaf_under(&inter),
        &[Certificate::from_der(inter.der()).expect("parse")],
        &[Certificate::from_der(strict_root.der()).expect("parse")],
        &opts(NOW),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "CA certificate O=sigmirror tests, CN=Strict Root allows 0 intermediate(s) below it, the chain has 1"
    );
}

#[test]
fn a_trusted_self_signed_leaf_is_its_own_anchor() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = leaf_params("a@example.com", None);
    p.distinguished_name = name("self");
    let c = Certificate::from_der(p.self_signed(&key).expect("cert").der()).expect("parse");
    assert_eq!(validate_chain(&c, &[], std::slice::from_ref(&c), &opts(NOW)), Ok(0));
    assert_eq!(
        validate_chain(&c, std::slice::from_ref(&c), &[], &opts(NOW)),
        Err("certificate chain does not reach roots test-ca.pem".into())
    );
}

#[test]
fn a_mesh_of_cross_signed_intermediates_cannot_make_the_search_explode() {
    // Ten "M1" and ten "M2" CAs sharing two keys: every M2 verifies every M1 and vice versa,
    // so an unbounded depth-first search would walk 10^8 paths.
    let ca = TestCa::new("Root");
    let k1 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let k2 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let as_issuer = |cn: &str, k: &KeyPair| ca_params(cn, None).self_signed(k).expect("issuer");
    let (i1, i2) = (as_issuer("M1", &k1), as_issuer("M2", &k2));
    let mut mesh = Vec::new();
    for n in 0..10u8 {
        let mut p = ca_params("M1", None);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[1, n + 1]));
        mesh.push(Certificate::from_der(p.signed_by(&k1, &i2, &k2).expect("sign").der()).expect("parse"));
        let mut p = ca_params("M2", None);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[2, n + 1]));
        mesh.push(Certificate::from_der(p.signed_by(&k2, &i1, &k1).expect("sign").der()).expect("parse"));
    }
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = leaf_params("a@example.com", None).signed_by(&leaf_key, &i1, &k1).expect("leaf");
    let leaf = Certificate::from_der(leaf.der()).expect("parse");
    let started = std::time::Instant::now();
    assert_eq!(
        validate_chain(&leaf, &mesh, &[ca.root_cert()], &opts(NOW)),
        Err("certificate chain is too complex to evaluate".into())
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn fulcio_username_othername_sans_are_identities() {
    let ca = TestCa::new("Root");
    let mut p = leaf_params("a@example.com", None);
    p.subject_alt_names.push(SanType::URI("https://github.com/acme/app".try_into().expect("ia5")));
    p.subject_alt_names.push(SanType::OtherName((
        vec![1, 3, 6, 1, 4, 1, 57264, 1, 7],
        rcgen::OtherNameValue::Utf8String("octocat!github.com".into()),
    )));
    let (leaf, _, _) = ca.issue(p);
    assert_eq!(san_identities(&leaf), ["a@example.com", "https://github.com/acme/app", "octocat!github.com"]);
}

#[test]
fn garbage_pem_and_der_are_refused_without_panicking() {
    assert_eq!(parse_pem_certificates(b"").err(), Some("contains no PEM CERTIFICATE block".into()));
    assert_eq!(
        parse_pem_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").err(),
        Some("certificate #1 is not a valid DER X.509 certificate".into())
    );
    let good = vector("cosign/containers-image/pki_root_crts.pem");
    let der = parse_pem_certificates(&good).expect("ok")[0].der.clone();
    for cut in [1, 10, der.len() / 2, der.len() - 1] {
        assert!(Certificate::from_der(&der[..cut]).is_err());
    }
    let mut trailing = der.clone();
    trailing.push(0);
    assert_eq!(Certificate::from_der(&trailing).err(), Some("has trailing bytes after the DER certificate".into()));
    let many = String::from_utf8(good).expect("utf8").repeat(MAX_CERTIFICATES + 1);
    assert_eq!(
        parse_pem_certificates(many.as_bytes()).err(),
        Some(format!("contains more than {MAX_CERTIFICATES} PEM blocks"))
    );
}

#[test]
fn the_validity_window_includes_both_bounds_and_reports_not_before_first() {
    let ca = TestCa::new("Root");
    let (c, _, _) = ca.issue(leaf_params("a@example.com", None));
    let (nb, na) = (c.not_before(), c.not_after());
    assert_eq!(check_validity(&c, nb), Ok(()));
    assert_eq!(check_validity(&c, na), Ok(()));
    assert_eq!(check_window(&c, nb, na), Ok(()));
    let second = time::Duration::SECOND;
    assert_eq!(check_validity(&c, nb - second), Err(Outside::NotYetValid(nb)));
    assert_eq!(check_validity(&c, na + second), Err(Outside::Expired(na)));
    assert_eq!(check_window(&c, nb - second, na + second), Err(Outside::NotYetValid(nb)));
    assert_eq!(check_window(&c, nb, na + second), Err(Outside::Expired(na)));
}

#[test]
fn times_print_in_utc_with_fractions_only_when_present() {
    let t = at(1_674_247_891);
    assert_eq!(format_time(t), "2023-01-20T20:51:31Z");
    assert_eq!(format_time(t.to_offset(time::macros::offset!(+2))), "2023-01-20T20:51:31Z");
    assert_eq!(format_time(t + time::Duration::milliseconds(250)), "2023-01-20T20:51:31.25Z");
}
