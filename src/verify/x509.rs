//! X.509 certificates: PEM parsing, chain building and validation, and the identity fields
//! (SANs, Fulcio OIDC issuer) signature policies match on.
//!
//! `x509-parser` only parses and checks single signatures, so path building and the RFC 5280
//! subset we need are here. The rules follow Go's `crypto/x509` (what cosign and notation-go use)
//! where that is stricter or equal, and fail closed where Go would do something we do not
//! implement (for example a critical name-constraints extension).

use std::fmt;

use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use super::keys::{pem_blocks, truncate, PublicKey};

/// Most certificates ever seen in one chain or trust bundle are a handful; bundles of public CAs
/// have ~150, which is not what a signing trust root looks like.
pub const MAX_CERTIFICATES: usize = 64;

/// Longest path leaf → root we try to build; bounds the search on hostile intermediates.
const MAX_CHAIN_DEPTH: usize = 8;

const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_SAN: &str = "2.5.29.17";
const OID_SKI: &str = "2.5.29.14";
const OID_AKI: &str = "2.5.29.35";
const OID_CERT_POLICIES: &str = "2.5.29.32";
/// Critical extensions we understand. Anything else critical makes the certificate unusable, as
/// RFC 5280 requires. SAN is included because Fulcio marks it critical (Go strips it too).
const HANDLED_CRITICAL: [&str; 7] =
    [OID_KEY_USAGE, OID_BASIC_CONSTRAINTS, OID_EXT_KEY_USAGE, OID_SAN, OID_SKI, OID_AKI, OID_CERT_POLICIES];

const OID_SHA1_WITH_RSA: [&str; 2] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29"];
const OID_ECDSA_WITH_SHA1: &str = "1.2.840.10045.4.1";

const OID_FULCIO_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_FULCIO_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_FULCIO_OTHERNAME_SAN: &str = "1.3.6.1.4.1.57264.1.7";

/// One certificate. It owns its DER and keeps the few fields messages need; everything else is
/// re-parsed on demand (parsing is cheap and it avoids self-referential borrows).
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    pub der: Vec<u8>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    self_issued: bool,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({:?}, {})", self.subject, &self.sha256_fingerprint()[..16])
    }
}

impl Certificate {
    /// Parses one DER certificate; trailing bytes are refused so a certificate cannot smuggle data.
    pub fn from_der(der: &[u8]) -> Result<Certificate, String> {
        let (rest, c) =
            X509Certificate::from_der(der).map_err(|_| "is not a valid DER X.509 certificate".to_string())?;
        if !rest.is_empty() {
            return Err("has trailing bytes after the DER certificate".into());
        }
        let not_before = asn1_time(c.validity().not_before.timestamp())?;
        let not_after = asn1_time(c.validity().not_after.timestamp())?;
        Ok(Certificate {
            subject: c.subject().to_string(),
            self_issued: c.subject().as_raw() == c.issuer().as_raw(),
            not_before,
            not_after,
            der: der.to_vec(),
        })
    }

    fn parsed(&self) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(&self.der).map(|(_, c)| c).map_err(|_| "is not a valid DER X.509 certificate".into())
    }

    /// The subject DN in RFC 4514-like form, e.g. `C=US, O=Notary, CN=e2e`. Empty for Fulcio leaves.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn issuer(&self) -> String {
        self.parsed().map(|c| c.issuer().to_string()).unwrap_or_default()
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Subject equals issuer: a root candidate.
    pub fn is_self_issued(&self) -> bool {
        self.self_issued
    }

    /// The DER SubjectPublicKeyInfo exactly as in the certificate.
    pub fn spki_der(&self) -> Vec<u8> {
        self.parsed().map(|c| c.public_key().raw.to_vec()).unwrap_or_default()
    }

    pub fn public_key(&self) -> Result<PublicKey, String> {
        PublicKey::from_spki_der(&self.spki_der()).map_err(|e| format!("certificate key {e}"))
    }

    /// Lowercase hex SHA-256 of the DER, the fingerprint Notation and openssl print.
    pub fn sha256_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// A name for messages: the subject, or the first SAN when the subject is empty (Fulcio).
    pub fn display_name(&self) -> String {
        if !self.subject.is_empty() {
            return truncate(&self.subject, 200);
        }
        match san_identities(self).first() {
            Some(s) => truncate(s, 200),
            None => format!("sha256:{}", &self.sha256_fingerprint()[..16]),
        }
    }
}

fn asn1_time(ts: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(ts).map_err(|_| "has a validity date out of range".to_string())
}

/// RFC 3339 in UTC with second precision, e.g. `2023-01-20T21:01:31Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Parses every `CERTIFICATE` block of a PEM text (other blocks are ignored). Bounded to
/// [`MAX_CERTIFICATES`]; an empty result is an error because "trust nothing" is never meant.
pub fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    let blocks = pem_blocks(pem, MAX_CERTIFICATES)?;
    let mut out = Vec::new();
    for (i, b) in blocks.iter().filter(|b| b.label == "CERTIFICATE").enumerate() {
        out.push(Certificate::from_der(&b.der).map_err(|e| format!("certificate #{} {e}", i + 1))?);
    }
    if out.is_empty() {
        return Err("contains no PEM CERTIFICATE block".into());
    }
    Ok(out)
}

/// Splits a trust bundle: self-issued certificates are roots (trust anchors), the rest are
/// intermediates that may be used to build a path but are not trusted on their own.
pub fn split_roots(certs: Vec<Certificate>) -> (Vec<Certificate>, Vec<Certificate>) {
    certs.into_iter().partition(Certificate::is_self_issued)
}

/// What a chain must satisfy besides reaching a root.
#[derive(Clone, Debug)]
pub struct ChainOptions {
    /// Every certificate on the path must be valid at this instant (signing time when it is
    /// proven by Rekor or a timestamp, otherwise now).
    pub at: OffsetDateTime,
    /// When the leaf (or a CA on the path) restricts its extended key usage, code signing must be
    /// among the allowed uses. A certificate without the EKU extension allows any use, as in Go.
    pub require_code_signing_eku: bool,
    /// How the roots are named in "does not reach" messages, e.g. `roots trust/corp-ca.pem`.
    pub roots_name: String,
}

impl ChainOptions {
    pub fn new(at: OffsetDateTime, roots_name: impl Into<String>) -> ChainOptions {
        ChainOptions { at, require_code_signing_eku: true, roots_name: roots_name.into() }
    }
}

/// Builds a path leaf → intermediates → one of `roots` and validates it. Returns the index in
/// `roots` of the anchor used. A leaf that is itself one of the roots is trusted directly (the
/// Notation self-signed case), but it still has to pass the leaf checks.
///
/// The error is the most specific reason found: a problem with the leaf itself wins, then a
/// problem with a CA that would otherwise have completed a path, then "does not reach".
pub fn validate_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    opts: &ChainOptions,
) -> Result<usize, String> {
    let parsed_leaf = leaf.parsed()?;
    check_leaf(leaf, &parsed_leaf, opts)?;
    if let Some(i) = roots.iter().position(|r| r.der == leaf.der) {
        return Ok(i);
    }
    let mut search = Search { intermediates, roots, opts, best_error: None, budget: MAX_SIGNATURE_CHECKS };
    let mut path: Vec<&Certificate> = vec![leaf];
    match search.extend(&mut path) {
        Some(i) => Ok(i),
        None => {
            Err(search.best_error.unwrap_or_else(|| format!("certificate chain does not reach {}", opts.roots_name)))
        }
    }
}

/// Signature checks one path search may spend. Real chains need two or three; the bound stops
/// a signer from shipping a mesh of cross-signed intermediates that makes the search exponential.
const MAX_SIGNATURE_CHECKS: usize = 128;

struct Search<'a> {
    intermediates: &'a [Certificate],
    roots: &'a [Certificate],
    opts: &'a ChainOptions,
    /// The first specific failure met, reported if no path is found.
    best_error: Option<String>,
    budget: usize,
}

impl<'a> Search<'a> {
    fn note(&mut self, e: String) {
        self.best_error.get_or_insert(e);
    }

    /// Whether `issuer` issued `child`, spending budget only on real candidates.
    fn issued_by(&mut self, parsed_child: &X509Certificate<'_>, child: &Certificate, issuer: &Certificate) -> bool {
        if !names_match(parsed_child, issuer) {
            return false;
        }
        if self.budget == 0 {
            self.best_error = Some("certificate chain is too complex to evaluate".into());
            return false;
        }
        self.budget -= 1;
        match verify_issued_by(parsed_child, child, issuer) {
            Ok(()) => true,
            Err(e) => {
                self.note(e);
                false
            }
        }
    }

    /// Depth-first search for an issuer of the last certificate of `path`. Roots are tried
    /// before intermediates so the shortest trusted path wins.
    fn extend(&mut self, path: &mut Vec<&'a Certificate>) -> Option<usize> {
        let child = *path.last()?;
        let Ok(parsed_child) = child.parsed() else { return None };
        // Number of CA certificates below a new issuer, for pathLenConstraint.
        let cas_below = path.len() - 1;
        let roots = self.roots;
        for (i, root) in roots.iter().enumerate() {
            if self.issued_by(&parsed_child, child, root) {
                match check_ca(root, cas_below, self.opts) {
                    Ok(()) => return Some(i),
                    Err(e) => self.note(e),
                }
            }
        }
        if path.len() >= MAX_CHAIN_DEPTH {
            return None;
        }
        let intermediates = self.intermediates;
        for cand in intermediates {
            // A self-issued certificate from untrusted input is an untrusted root, never a step.
            if cand.is_self_issued() || path.iter().any(|p| p.der == cand.der) {
                continue;
            }
            if !self.issued_by(&parsed_child, child, cand) {
                continue;
            }
            if let Err(e) = check_ca(cand, cas_below, self.opts) {
                self.note(e);
                continue;
            }
            path.push(cand);
            if let Some(i) = self.extend(path) {
                return Some(i);
            }
            path.pop();
        }
        None
    }
}

fn names_match(parsed_child: &X509Certificate<'_>, issuer: &Certificate) -> bool {
    issuer.parsed().is_ok_and(|p| parsed_child.issuer().as_raw() == p.subject().as_raw())
}

/// Checks the signature of `child` with the key of `issuer` (whose subject names it), refusing
/// SHA-1 as Notation requires and modern Go does.
fn verify_issued_by(
    parsed_child: &X509Certificate<'_>,
    child: &Certificate,
    issuer: &Certificate,
) -> Result<(), String> {
    let parsed_issuer = issuer.parsed()?;
    let alg = parsed_child.signature_algorithm.algorithm.to_id_string();
    if OID_SHA1_WITH_RSA.contains(&alg.as_str()) || alg == OID_ECDSA_WITH_SHA1 {
        return Err(format!("certificate {} is signed with SHA-1, which is refused", child.display_name()));
    }
    match parsed_child.verify_signature(Some(parsed_issuer.public_key())) {
        Ok(()) => Ok(()),
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {
            Err(format!("certificate {} uses an unsupported signature algorithm {alg}", child.display_name()))
        }
        Err(_) => Err(format!(
            "certificate {} names {} as issuer, but its signature does not verify with that certificate's key",
            child.display_name(),
            issuer.display_name()
        )),
    }
}

fn check_validity(cert: &Certificate, what: &str, at: OffsetDateTime) -> Result<(), String> {
    if at < cert.not_before {
        return Err(format!("{what} is not valid before {}", format_time(cert.not_before)));
    }
    if at > cert.not_after {
        return Err(format!("{what} expired at {}", format_time(cert.not_after)));
    }
    Ok(())
}

fn check_critical_extensions(parsed: &X509Certificate<'_>, what: &str) -> Result<(), String> {
    for ext in parsed.extensions() {
        let oid = ext.oid.to_id_string();
        if ext.critical && !HANDLED_CRITICAL.contains(&oid.as_str()) {
            return Err(format!("{what} has a critical extension {oid} that sigmirror does not handle"));
        }
    }
    Ok(())
}

fn check_leaf(leaf: &Certificate, parsed: &X509Certificate<'_>, opts: &ChainOptions) -> Result<(), String> {
    check_validity(leaf, "certificate", opts.at)?;
    check_critical_extensions(parsed, "certificate")?;
    match parsed.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => {
            return Err("certificate key usage does not allow digital signatures".into());
        }
        Ok(_) => {}
        Err(_) => return Err("certificate has a malformed or repeated key usage extension".into()),
    }
    match parsed.extended_key_usage() {
        Ok(Some(eku)) if opts.require_code_signing_eku && !eku.value.code_signing && !eku.value.any => {
            return Err("certificate is missing the code-signing extended key usage".into());
        }
        Ok(_) => {}
        Err(_) => return Err("certificate has a malformed or repeated extended key usage extension".into()),
    }
    Ok(())
}

fn check_ca(ca: &Certificate, cas_below: usize, opts: &ChainOptions) -> Result<(), String> {
    let parsed = ca.parsed()?;
    let what = format!("CA certificate {}", ca.display_name());
    check_validity(ca, &what, opts.at)?;
    check_critical_extensions(&parsed, &what)?;
    match parsed.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(max) = bc.value.path_len_constraint {
                if cas_below > max as usize {
                    return Err(format!("{what} allows {max} intermediate(s) below it, the chain has {cas_below}"));
                }
            }
        }
        Ok(_) => return Err(format!("{what} is not marked as a CA (basic constraints)")),
        Err(_) => return Err(format!("{what} has a malformed or repeated basic constraints extension")),
    }
    match parsed.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(format!("{what} key usage does not allow signing certificates"));
        }
        Ok(_) => {}
        Err(_) => return Err(format!("{what} has a malformed or repeated key usage extension")),
    }
    // Go nests EKUs: a CA that restricts its uses must allow the one requested of the leaf.
    match parsed.extended_key_usage() {
        Ok(Some(eku)) if opts.require_code_signing_eku && !eku.value.code_signing && !eku.value.any => {
            return Err(format!("{what} does not allow code signing (extended key usage)"));
        }
        Ok(_) => {}
        Err(_) => return Err(format!("{what} has a malformed or repeated extended key usage extension")),
    }
    Ok(())
}

/// The identities a certificate is issued to: SAN DNS names, emails, URIs and the Fulcio
/// username OtherName, in that order (cosign's `GetSubjectAlternateNames` order, minus IPs).
pub fn san_identities(cert: &Certificate) -> Vec<String> {
    let Ok(parsed) = cert.parsed() else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    let mut dns = Vec::new();
    let mut email = Vec::new();
    let mut uri = Vec::new();
    let mut other = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(s) => dns.push(s.to_string()),
            GeneralName::RFC822Name(s) => email.push(s.to_string()),
            GeneralName::URI(s) => uri.push(s.to_string()),
            GeneralName::OtherName(oid, value) if oid.to_id_string() == OID_FULCIO_OTHERNAME_SAN => {
                // The value is `[0] EXPLICIT UTF8String`; x509-parser may or may not have stripped
                // the explicit tag, so accept both.
                let inner = der_unwrap(value, 0xa0).unwrap_or(value);
                if let Some(s) = der_utf8_string(inner) {
                    other.push(s);
                }
            }
            _ => {}
        }
    }
    dns.into_iter().chain(email).chain(uri).chain(other).collect()
}

/// The OIDC issuer Fulcio recorded: extension `.1.8` (a DER UTF8String) or, in older
/// certificates, `.1.1` (raw bytes). When both are present they must agree; if they differ the
/// certificate is contradictory and `None` is returned, which fails any issuer check.
pub fn fulcio_issuer(cert: &Certificate) -> Option<String> {
    let parsed = cert.parsed().ok()?;
    let mut v2 = None;
    let mut v1 = None;
    for ext in parsed.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_FULCIO_ISSUER_V2 => v2 = Some(der_utf8_string(ext.value)?),
            OID_FULCIO_ISSUER_V1 => v1 = Some(std::str::from_utf8(ext.value).ok()?.to_string()),
            _ => {}
        }
    }
    match (v2, v1) {
        (Some(a), Some(b)) if a != b => None,
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// Reads one DER TLV with the given tag and returns its content, requiring it to span `input`.
fn der_unwrap(input: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = match l {
        0..=0x7f => (l as usize, rest),
        0x81 => (*rest.first()? as usize, rest.get(1..)?),
        0x82 => ((*rest.first()? as usize) << 8 | *rest.get(1)? as usize, rest.get(2..)?),
        _ => return None,
    };
    if rest.len() != len {
        return None;
    }
    Some(rest)
}

fn der_utf8_string(input: &[u8]) -> Option<String> {
    std::str::from_utf8(der_unwrap(input, 0x0c)?).ok().map(str::to_string)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let inter =
            parse_pem_certificates(&vector("cosign/containers-image/pki_intermediate_crts.pem")).expect("inter");
        let layer = super::super::cosign::SignatureLayer::from_sigstore_json_file(&vector(
            "cosign/containers-image/dir-img-cosign-pki-valid/signature-1",
        ))
        .expect("layer");
        let leaf =
            parse_pem_certificates(layer.annotations["dev.sigstore.cosign/certificate"].as_bytes()).expect("leaf");
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
        let leaf =
            parse_pem_certificates(layer.annotations["dev.sigstore.cosign/certificate"].as_bytes()).expect("leaf");
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
        let inter =
            ca_params("Intermediate", None).signed_by(&inter_key, &strict_root, &strict_root_key).expect("sign");
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
        for bad in [&b"\x0c"[..], b"\x0c\x05ab", b"\x0c\x85aaaaa", b"\x04\x01a"] {
            assert_eq!(der_utf8_string(bad), None);
        }
        assert_eq!(der_utf8_string(b"\x0c\x02ab").as_deref(), Some("ab"));
    }
}
