//! X.509 certificates and certificate paths, for every chain sigmirror checks: cosign (Fulcio or
//! a private CA), Notary Project signing chains, and RFC 3161 TSA chains (Notation
//! countersignatures and Sigstore bundle timestamps).
//!
//! `x509-parser` only parses and checks single signatures, so path building and the RFC 5280
//! subset we need are here. The rules follow Go's `crypto/x509` (what cosign and notation-go use)
//! where that is stricter or equal, and fail closed where Go would do something we do not
//! implement (for example a critical name-constraints extension).
//!
//! * `cert`: the one parser; [`Certificate`] owns its DER and the fields messages need.
//! * `rules`: what every path shares: the validity window, the one critical-extension rule,
//!   issuance and basic constraints.
//! * `profile`: what Fulcio, Notary code signing and RFC 3161 timestamping each require of a
//!   leaf and its CAs, worded the way each ecosystem words it.
//! * `path`: path building, by search (cosign, TSAs) or in the signer's fixed order (Notation).
//! * `identity`: the SANs and Fulcio issuer cosign policies match on.
//!
//! What is specific to the Notary Project beyond its certificate profile (the key a signature
//! algorithm implies, `x509.subject` matching, revocation endpoints) stays in
//! `verify::notation::chain`.

mod cert;
mod identity;
mod path;
pub(crate) mod profile;
mod rules;

#[cfg(test)]
mod critical_tests;
#[cfg(test)]
pub(crate) mod tests;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(crate) use cert::short_name;
pub use cert::{Certificate, KeySpec, ParseError};
pub use identity::{fulcio_issuer, san_identities};
pub(crate) use path::{check_in_order, search};
pub(crate) use profile::Profile;
pub(crate) use rules::{ca_status, check_signature, CaStatus};
pub use rules::{check_validity, check_window, Outside};

use super::keys::pem_blocks;
use profile::Role;

/// Most certificates ever seen in one chain or trust bundle are a handful; bundles of public CAs
/// have ~150, which is not what a signing trust root looks like.
pub const MAX_CERTIFICATES: usize = 64;

/// Longest path leaf → root cosign tries to build; bounds the search on hostile intermediates.
const MAX_CHAIN_DEPTH: usize = 8;

/// RFC 3339 in UTC, the one way refusals print a time, e.g. `2023-01-20T21:01:31Z`. Fractions of
/// a second appear only when the time has them (an RFC 3161 genTime may), so a message never
/// rounds a time across the bound it is compared with.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
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

/// What a cosign chain must satisfy besides reaching a root.
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

/// Builds a cosign path leaf → intermediates → one of `roots` and validates it with the Fulcio
/// profile. Returns the index in `roots` of the anchor used. A leaf that is itself one of the
/// roots is trusted directly (a self-signed signing certificate), but it still has to pass the
/// leaf checks.
///
/// The error is the most specific reason found: a problem with the leaf itself wins, then a
/// problem with a CA that would otherwise have completed a path, then "does not reach".
pub fn validate_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    opts: &ChainOptions,
) -> Result<usize, String> {
    let profile = Profile::Fulcio(opts);
    profile.check_time(leaf, Role::Leaf)?;
    profile.check_role(leaf, Role::Leaf)?;
    let accept = |ca: &Certificate, cas_below: usize| {
        let role = Role::Ca { cas_below };
        profile.check_time(ca, role)?;
        profile.check_role(ca, role)
    };
    match search(leaf, intermediates, roots, MAX_CHAIN_DEPTH, &|c, i| profile.check_issued(c, i), &accept) {
        Ok(found) => Ok(found.root),
        Err(none) => {
            Err(none.reason.unwrap_or_else(|| format!("certificate chain does not reach {}", opts.roots_name)))
        }
    }
}
