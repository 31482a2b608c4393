//! The identity fields cosign policies match on: SANs and the Fulcio OIDC issuer.

use x509_parser::extensions::GeneralName;

use super::Certificate;
use crate::verify::der;

const OID_FULCIO_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_FULCIO_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_FULCIO_OTHERNAME_SAN: &str = "1.3.6.1.4.1.57264.1.7";

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
                let inner = der::exactly(value, 0xa0, "otherName value").map(|t| t.value).unwrap_or(value);
                if let Some(s) = der::utf8_string(inner) {
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
            OID_FULCIO_ISSUER_V2 => v2 = Some(der::utf8_string(ext.value)?),
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
