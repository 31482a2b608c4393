//! One certificate, parsed once at the boundary: [`Certificate::parse`] is the only place DER
//! becomes a certificate, for cosign, Notation and RFC 3161 chains alike.

use std::fmt;

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::{FromDer as _, X509Name};

use super::identity::san_identities;
use crate::verify::keys::{truncate, PublicKey};

/// Why bytes are not a certificate. It displays the way Notation and TSA refusals have always
/// said it; cosign's wording is [`Certificate::from_der`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a DER X.509 certificate; x509-parser's reason.
    Malformed(String),
    /// A certificate followed by more bytes: not the certificate that was signed, and room to
    /// smuggle data.
    TrailingData,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(e) => write!(f, "certificate does not parse: {e}"),
            ParseError::TrailingData => f.write_str("certificate has trailing data"),
        }
    }
}

/// One certificate. It owns its DER and keeps the few fields messages and validity checks need;
/// everything else is re-parsed on demand (parsing is cheap and it avoids self-referential borrows).
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
    /// Parses one DER certificate.
    pub fn parse(der: &[u8]) -> Result<Certificate, ParseError> {
        let (rest, c) = X509Certificate::from_der(der).map_err(|e| ParseError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ParseError::TrailingData);
        }
        Ok(Certificate {
            subject: c.subject().to_string(),
            self_issued: c.subject().as_raw() == c.issuer().as_raw(),
            not_before: c.validity().not_before.to_datetime(),
            not_after: c.validity().not_after.to_datetime(),
            der: der.to_vec(),
        })
    }

    /// [`Certificate::parse`] with cosign's wording, which follows the file or annotation name.
    pub fn from_der(der: &[u8]) -> Result<Certificate, String> {
        Certificate::parse(der).map_err(|e| match e {
            ParseError::Malformed(_) => "is not a valid DER X.509 certificate".to_string(),
            ParseError::TrailingData => "has trailing bytes after the DER certificate".to_string(),
        })
    }

    /// The x509-parser view, for the rules. It parsed when `self` was made, so this cannot fail
    /// in practice; callers still treat an error as a refusal rather than panic.
    pub(crate) fn parsed(&self) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(&self.der).map(|(_, c)| c).map_err(|_| "is not a valid DER X.509 certificate".into())
    }

    /// The subject DN in RFC 4514-like form, e.g. `C=US, O=Notary, CN=e2e`. Empty for Fulcio leaves.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject as Go's `pkix.Name.String()` renders it (`CN=e2e,O=Notary,L=Seattle,ST=WA,C=US`),
    /// which is how notation names certificates, so Notary and TSA refusals read like notation's.
    pub fn go_subject(&self) -> String {
        self.parsed().map(|c| go_name(c.subject())).unwrap_or_default()
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

    /// The key's type and size, for the Notary Project's key rules and for CMS signatures.
    pub fn key_spec(&self) -> Result<KeySpec, String> {
        let c = self.parsed()?;
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

/// A key type and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(usize),
    Ec(usize),
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa(b) => write!(f, "RSA {b}-bit"),
            KeySpec::Ec(b) => write!(f, "EC P-{b}"),
        }
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

/// Attribute short names as Go's `pkix.Name.String()` renders them, which is also the form
/// notation matches `x509.subject` identities against.
pub(crate) fn short_name(oid: &Oid) -> Option<&'static str> {
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

fn go_name(name: &X509Name) -> String {
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
