//! Certificate rules specific to the Notary Project: the envelope carries its
//! whole chain (leaf first, ending in a self-signed root), and the chain must
//! meet the certificate requirements of `signature-specification.md` (as
//! notation-core-go applies them) before the trust store is even consulted.
//!
//! These differ from generic path building: the order is fixed by the signer,
//! trust is anchored by byte equality with a trust store certificate, and the
//! validity window is checked separately (at "now", or at a proven signing
//! time), so they live here rather than in `verify::x509`.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Name, X509Version};

use super::envelope::{rfc3339, Alg};
use super::trustpolicy::Dn;

/// Parses one DER certificate; trailing bytes are refused because a
/// certificate "with extra data" is not the certificate that was signed.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err("certificate has trailing data".into()),
        Err(e) => Err(format!("certificate does not parse: {e}")),
    }
}

pub fn not_before(c: &X509Certificate) -> OffsetDateTime {
    c.validity().not_before.to_datetime()
}

pub fn not_after(c: &X509Certificate) -> OffsetDateTime {
    c.validity().not_after.to_datetime()
}

/// Attribute short names as Go's `pkix.Name.String()` renders them, which is
/// the form notation matches `x509.subject` identities against.
fn short_name(oid: &Oid) -> Option<&'static str> {
    let s = oid.to_id_string();
    Some(match s.as_str() {
        "2.5.4.6" => "C",
        "2.5.4.8" => "ST",
        "2.5.4.7" => "L",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.3" => "CN",
        "2.5.4.9" => "STREET",
        "2.5.4.17" => "POSTALCODE",
        "2.5.4.5" => "SERIALNUMBER",
        _ => return None,
    })
}

/// Go's fixed rendering order (reverse of `ToRDNSequence`).
const GO_ORDER: [&str; 9] = ["SERIALNUMBER", "CN", "OU", "O", "POSTALCODE", "STREET", "L", "ST", "C"];

/// A subject as notation prints it (`CN=e2e,O=Notary,L=Seattle,ST=WA,C=US`),
/// so our refusal messages read like notation's.
pub fn subject_string(name: &X509Name) -> String {
    let mut parts = Vec::new();
    for key in GO_ORDER {
        let vals: Vec<String> = name
            .iter_attributes()
            .filter(|a| short_name(a.attr_type()) == Some(key))
            .map(|a| format!("{key}={}", a.as_str().unwrap_or("?")))
            .collect();
        if !vals.is_empty() {
            parts.push(vals.join("+"));
        }
    }
    for a in name.iter_attributes().filter(|a| short_name(a.attr_type()).is_none()) {
        parts.push(format!("{}={}", a.attr_type().to_id_string(), a.as_str().unwrap_or("?")));
    }
    parts.join(",")
}

pub fn subject_of(c: &X509Certificate) -> String {
    subject_string(c.subject())
}

/// The leaf subject as attributes for `x509.subject` matching. Notation goes
/// through `pkix.Name.String()` and back, which fails for attributes Go has
/// no name for (rendered `oid=#hex`) and for repeated types (rendered as a
/// multi-valued RDN); we fail the same way instead of guessing.
pub fn subject_dn(c: &X509Certificate) -> Result<Dn, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in c.subject().iter_attributes() {
        let Some(k) = short_name(a.attr_type()) else {
            return Err(format!(
                "the subject has attribute {} that x509.subject identities cannot name",
                a.attr_type().to_id_string()
            ));
        };
        let v = a.as_str().map_err(|_| format!("the subject's {k} is not a text string"))?;
        if out.iter().any(|(t, _)| t == k) {
            return Err(format!("the subject has more than one {k}"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(Dn(out))
}

/// The key types and sizes the Notary Project allows, and the one algorithm
/// each implies: a signature must use exactly that algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(usize),
    Ec(usize),
}

impl KeySpec {
    pub fn alg(self) -> Option<Alg> {
        match self {
            KeySpec::Rsa(2048) => Some(Alg::Ps256),
            KeySpec::Rsa(3072) => Some(Alg::Ps384),
            KeySpec::Rsa(4096) => Some(Alg::Ps512),
            KeySpec::Ec(256) => Some(Alg::Es256),
            KeySpec::Ec(384) => Some(Alg::Es384),
            KeySpec::Ec(521) => Some(Alg::Es512),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::Rsa(b) => write!(f, "RSA {b}-bit"),
            KeySpec::Ec(b) => write!(f, "EC P-{b}"),
        }
    }
}

pub fn key_spec(c: &X509Certificate) -> Result<KeySpec, String> {
    let spki = c.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Ok(KeySpec::Rsa(bit_len(rsa.modulus))),
            _ => Err("the RSA public key does not parse".into()),
        }
    } else if *alg == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
        match curve.as_deref() {
            Some("1.2.840.10045.3.1.7") => Ok(KeySpec::Ec(256)),
            Some("1.3.132.0.34") => Ok(KeySpec::Ec(384)),
            Some("1.3.132.0.35") => Ok(KeySpec::Ec(521)),
            Some(other) => Err(format!("EC curve {other} is not allowed")),
            None => Err("the EC public key names no curve".into()),
        }
    } else {
        Err(format!("public key algorithm {} is not allowed (only RSA and ECDSA)", alg.to_id_string()))
    }
}

/// Exact bit length of a big-endian modulus (x509-parser only counts bytes).
fn bit_len(m: &[u8]) -> usize {
    let m = match m.iter().position(|b| *b != 0) {
        Some(i) => &m[i..],
        None => return 0,
    };
    m.len() * 8 - m[0].leading_zeros() as usize
}

/// Checks that `child` is signed by `parent`'s key and names it as issuer,
/// like Go's `CheckSignatureFrom`: a v3 parent must be a CA and, if it has a
/// key usage, may sign certificates. SHA-1 signatures are refused.
pub fn issued_by(child: &X509Certificate, parent: &X509Certificate) -> Result<(), String> {
    if parent.version() == X509Version::V3 {
        match parent.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(format!("{:?} is not a CA", subject_of(parent))),
            Err(e) => return Err(format!("{:?} has bad basic constraints: {e}", subject_of(parent))),
        }
        if let Ok(Some(ku)) = parent.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(format!("{:?} may not sign certificates (no keyCertSign)", subject_of(parent)));
            }
        }
    }
    check_signature(child, parent)?;
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return Err(format!("{:?} does not name {:?} as its issuer", subject_of(child), subject_of(parent)));
    }
    Ok(())
}

/// Verifies `child`'s signature with `parent`'s key (no CA checks).
pub fn check_signature(child: &X509Certificate, parent: &X509Certificate) -> Result<(), String> {
    let sig_oid = &child.signature_algorithm.algorithm;
    if *sig_oid == oid_registry::OID_PKCS1_SHA1WITHRSA
        || *sig_oid == oid_registry::OID_SHA1_WITH_RSA
        || sig_oid.to_id_string() == "1.2.840.10045.4.1"
    {
        return Err(format!("{:?} is signed with SHA-1, which is not allowed", subject_of(child)));
    }
    child.verify_signature(Some(parent.public_key())).map_err(|e| {
        format!(
            "the signature on {:?} does not verify with the key of {:?}: {e}",
            subject_of(child),
            subject_of(parent)
        )
    })
}

/// Self-signed in Go's sense for a chain's last element: it verifies under
/// its own key and names itself as issuer.
fn is_self_signed(c: &X509Certificate) -> bool {
    issued_by(c, c).is_ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    CodeSigning,
    Timestamping,
}

/// notation-core-go `validateCertChain`: order and issuance, a self-signed
/// root at the end and nowhere else, and the leaf and CA requirements.
/// `at`, when given, must fall inside every certificate's validity (used for
/// the signing-authority scheme's authentic signing time).
pub fn validate_chain(certs: &[X509Certificate], purpose: Purpose, at: Option<OffsetDateTime>) -> Result<(), String> {
    if certs.is_empty() {
        return Err("the certificate chain is empty".into());
    }
    let check_time = |c: &X509Certificate| -> Result<(), String> {
        if let Some(t) = at {
            if t < not_before(c) || t > not_after(c) {
                return Err(format!(
                    "certificate {:?} was not valid at the signing time {}; it is valid from {} to {}",
                    subject_of(c),
                    rfc3339(t),
                    rfc3339(not_before(c)),
                    rfc3339(not_after(c))
                ));
            }
        }
        Ok(())
    };
    if certs.len() == 1 {
        let c = &certs[0];
        check_time(c)?;
        check_signature(c, c).map_err(|e| format!("the single certificate is not validly self-signed: {e}"))?;
        if c.issuer().as_raw() != c.subject().as_raw() {
            return Err(format!(
                "the single certificate {:?} is not self-signed, so the chain does not end in a root",
                subject_of(c)
            ));
        }
        return validate_leaf(c, purpose);
    }
    for (i, c) in certs.iter().enumerate() {
        check_time(c)?;
        if i == certs.len() - 1 {
            if !is_self_signed(c) {
                return Err(format!("the chain ends with {:?}, which is not a self-signed root", subject_of(c)));
            }
        } else {
            if is_self_signed(c) {
                let what = if i == 0 { "leaf" } else { "intermediate" };
                return Err(format!("the {what} certificate {:?} is self-signed", subject_of(c)));
            }
            issued_by(c, &certs[i + 1])?;
        }
        if i == 0 {
            validate_leaf(c, purpose)?;
        } else {
            validate_ca(c, i - 1, purpose)?;
        }
    }
    Ok(())
}

fn validate_ca(c: &X509Certificate, expected_path_len: usize, purpose: Purpose) -> Result<(), String> {
    let s = subject_of(c);
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(max) = bc.value.path_len_constraint {
                if (max as usize) < expected_path_len {
                    return Err(format!("CA certificate {s:?} allows a path length of {max}, but {expected_path_len} certificates follow it"));
                }
            }
        }
        Ok(_) => return Err(format!("CA certificate {s:?} does not have basic constraints with cA=true")),
        Err(e) => return Err(format!("CA certificate {s:?} has malformed basic constraints: {e}")),
    }
    let ku = key_usage(c, purpose)?;
    if !ku.key_cert_sign() {
        return Err(format!("CA certificate {s:?}: key usage lacks keyCertSign"));
    }
    Ok(())
}

fn key_usage<'a>(c: &'a X509Certificate, purpose: Purpose) -> Result<&'a x509_parser::extensions::KeyUsage, String> {
    let s = subject_of(c);
    match c.key_usage() {
        Ok(Some(ku)) => {
            // RFC 3161 TSAs commonly leave key usage non-critical, and
            // notation accepts that for timestamping chains only.
            if !ku.critical && purpose == Purpose::CodeSigning {
                return Err(format!("certificate {s:?}: the key usage extension must be critical"));
            }
            Ok(ku.value)
        }
        Ok(None) => Err(format!("certificate {s:?} has no key usage extension")),
        Err(e) => Err(format!("certificate {s:?} has a malformed key usage: {e}")),
    }
}

fn validate_leaf(c: &X509Certificate, purpose: Purpose) -> Result<(), String> {
    let s = subject_of(c);
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            return Err(format!("signing certificate {s:?} is a CA (basic constraints cA=true)"))
        }
        Ok(_) => {}
        Err(e) => return Err(format!("signing certificate {s:?} has malformed basic constraints: {e}")),
    }
    let ku = key_usage(c, purpose)?;
    if !ku.digital_signature() {
        return Err(format!("signing certificate {s:?}: key usage lacks digitalSignature"));
    }
    let mut bad = Vec::new();
    for (set, name) in [
        (ku.non_repudiation(), "ContentCommitment"),
        (ku.key_encipherment(), "KeyEncipherment"),
        (ku.data_encipherment(), "DataEncipherment"),
        (ku.key_agreement(), "KeyAgreement"),
        (ku.key_cert_sign(), "CertSign"),
        (ku.crl_sign(), "CRLSign"),
        (ku.encipher_only(), "EncipherOnly"),
        (ku.decipher_only(), "DecipherOnly"),
    ] {
        if set {
            bad.push(name);
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "signing certificate {s:?}: key usage must be digitalSignature only, but also has {}",
            bad.join(", ")
        ));
    }
    let eku = c
        .extended_key_usage()
        .map_err(|e| format!("signing certificate {s:?} has a malformed extended key usage: {e}"))?;
    match purpose {
        Purpose::Timestamping => {
            // RFC 3161 2.3: exactly one EKU, timeStamping, marked critical.
            let Some(eku) = eku else {
                return Err(format!("timestamping certificate {s:?} has no extended key usage"));
            };
            let e = eku.value;
            let only_ts = e.time_stamping
                && !e.any
                && !e.server_auth
                && !e.client_auth
                && !e.code_signing
                && !e.email_protection
                && !e.ocsp_signing
                && e.other.is_empty();
            if !only_ts {
                return Err(format!(
                    "timestamping certificate {s:?} must have timeStamping as its only extended key usage"
                ));
            }
            if !eku.critical {
                return Err(format!("timestamping certificate {s:?}: the extended key usage must be critical"));
            }
        }
        Purpose::CodeSigning => {
            if let Some(eku) = eku {
                let e = eku.value;
                for (set, name) in [
                    (e.any, "anyExtendedKeyUsage"),
                    (e.server_auth, "serverAuth"),
                    (e.client_auth, "clientAuth"),
                    (e.email_protection, "emailProtection"),
                    (e.ocsp_signing, "OCSPSigning"),
                    (e.time_stamping, "timeStamping"),
                ] {
                    if set {
                        return Err(format!("signing certificate {s:?}: extended key usage must not include {name}"));
                    }
                }
            }
        }
    }
    let spec = key_spec(c).map_err(|e| format!("certificate {s:?}: {e}"))?;
    if spec.alg().is_none() {
        return Err(format!(
            "certificate {s:?} has an {spec} key; the Notary Project allows RSA 2048/3072/4096 and EC P-256/384/521"
        ));
    }
    Ok(())
}

/// Whether the certificate names an OCSP responder or CRL distribution
/// point, i.e. whether the Notary Project would check its revocation status
/// over the network. Certificates without either are "non-revokable" and
/// pass the revocation check by definition.
pub fn revocation_endpoints(c: &X509Certificate) -> Vec<String> {
    let mut out = Vec::new();
    for ext in c.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    if ad.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1" {
                        out.push(format!("OCSP {}", general_name(&ad.access_location)));
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(cdp) => {
                for dp in cdp.iter() {
                    match &dp.distribution_point {
                        Some(x509_parser::extensions::DistributionPointName::FullName(names)) => {
                            for n in names {
                                out.push(format!("CRL {}", general_name(n)));
                            }
                        }
                        _ => out.push("CRL (relative name)".into()),
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn general_name(n: &x509_parser::extensions::GeneralName) -> String {
    match n {
        x509_parser::extensions::GeneralName::URI(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}
