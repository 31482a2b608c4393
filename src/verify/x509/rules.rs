//! The rules every certificate path shares, whatever its profile: the validity window, the one
//! critical-extension rule, issuance (names and signature, SHA-1 refused) and CA basic
//! constraints. They return values, not messages: each profile words its refusals the way its
//! ecosystem does (and tests pin those words), but none can decide differently.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::Certificate;

const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_SAN: &str = "2.5.29.17";
const OID_SKI: &str = "2.5.29.14";
const OID_AKI: &str = "2.5.29.35";
const OID_CERT_POLICIES: &str = "2.5.29.32";

/// The extensions sigmirror understands when they are critical; a certificate with any other
/// critical extension is unusable, as RFC 5280 §4.2 requires, in every chain sigmirror checks.
///
/// * Basic constraints, key usage and extended key usage are enforced by every profile.
/// * SAN is read for cosign identities, and must be critical when the subject is empty (Fulcio).
/// * Subject and authority key identifiers only name keys; marking them critical restricts nothing.
/// * Certificate policies: without policy constraints, inhibitAnyPolicy or policy mappings (which
///   RFC 5280 requires, or for mappings recommends, to be critical, so they are refused here),
///   RFC 5280 path validation with sigmirror's inputs (any policy, none required) accepts whatever
///   policies a path carries, so there is nothing left to enforce. Go's crypto/x509, which cosign
///   and notation use, accepts it critical too, as sigmirror's cosign check always has.
///
/// Name constraints are deliberately absent: sigmirror does not enforce them, so a constrained CA
/// is refused rather than trusted beyond its constraints.
const UNDERSTOOD_CRITICAL: [&str; 7] =
    [OID_KEY_USAGE, OID_BASIC_CONSTRAINTS, OID_EXT_KEY_USAGE, OID_SAN, OID_SKI, OID_AKI, OID_CERT_POLICIES];

/// The first critical extension sigmirror does not understand, as a dotted OID.
pub(crate) fn unknown_critical_extension(parsed: &X509Certificate<'_>) -> Option<String> {
    parsed
        .extensions()
        .iter()
        .filter(|ext| ext.critical)
        .map(|ext| ext.oid.to_id_string())
        .find(|oid| !UNDERSTOOD_CRITICAL.contains(&oid.as_str()))
}

/// Why a certificate is not valid over an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// The interval starts before the certificate's notBefore.
    NotYetValid(OffsetDateTime),
    /// The interval ends after the certificate's notAfter.
    Expired(OffsetDateTime),
}

/// The one validity check: `cert` must be valid over all of `[from, to]` (both bounds
/// inclusive, as RFC 5280 defines the window). notBefore is checked first.
pub fn check_window(cert: &Certificate, from: OffsetDateTime, to: OffsetDateTime) -> Result<(), Outside> {
    if from < cert.not_before() {
        return Err(Outside::NotYetValid(cert.not_before()));
    }
    if to > cert.not_after() {
        return Err(Outside::Expired(cert.not_after()));
    }
    Ok(())
}

/// [`check_window`] at one instant.
pub fn check_validity(cert: &Certificate, at: OffsetDateTime) -> Result<(), Outside> {
    check_window(cert, at, at)
}

/// Whether `child` names `issuer`'s subject as its issuer, byte for byte (as Go compares them).
pub(crate) fn names_issuer(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == issuer.subject().as_raw()
}

/// Why a certificate's signature does not check out.
#[derive(Debug)]
pub(crate) enum SignatureError {
    /// SHA-1, refused as the Notary Project requires and modern Go does.
    Sha1,
    /// x509-parser's verdict: an unsupported algorithm, or a signature that does not verify.
    Rejected(X509Error),
}

const OID_SHA1_WITH_RSA: [&str; 2] = ["1.2.840.113549.1.1.5", "1.3.14.3.2.29"];
const OID_ECDSA_WITH_SHA1: &str = "1.2.840.10045.4.1";

/// Verifies `child`'s signature with `key` (the issuer's, or its own for a self-signed root).
pub(crate) fn check_signature(
    child: &X509Certificate<'_>,
    key: &SubjectPublicKeyInfo<'_>,
) -> Result<(), SignatureError> {
    let alg = child.signature_algorithm.algorithm.to_id_string();
    if OID_SHA1_WITH_RSA.contains(&alg.as_str()) || alg == OID_ECDSA_WITH_SHA1 {
        return Err(SignatureError::Sha1);
    }
    child.verify_signature(Some(key)).map_err(SignatureError::Rejected)
}

/// What basic constraints say about a certificate as an issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CaStatus {
    /// No basic constraints, or cA=false.
    NotCa,
    /// cA=true, with its pathLenConstraint if any.
    Ca { path_len: Option<u32> },
}

/// Reads basic constraints; an error is a malformed or repeated extension.
pub(crate) fn ca_status(parsed: &X509Certificate<'_>) -> Result<CaStatus, X509Error> {
    Ok(match parsed.basic_constraints()? {
        Some(bc) if bc.value.ca => CaStatus::Ca { path_len: bc.value.path_len_constraint },
        _ => CaStatus::NotCa,
    })
}

/// pathLenConstraint, the most CA certificates that may follow a CA on the way to the leaf:
/// the constraint when `cas_below` exceeds it.
pub(crate) fn path_len_exceeded(path_len: Option<u32>, cas_below: usize) -> Option<u32> {
    path_len.filter(|max| cas_below > *max as usize)
}
