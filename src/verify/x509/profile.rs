//! Profiles: what each kind of chain requires of its leaf, its CAs and each issuance, and how it
//! words a refusal. Fulcio follows cosign (Go's crypto/x509 with the code-signing usage). The
//! Notary Project's code-signing and timestamping profiles follow the certificate requirements
//! of `signature-specification.md` as notation-core-go applies them; sigmirror also applies the
//! timestamping one to the RFC 3161 TSAs of Sigstore bundles.
//!
//! Every role check of every profile goes through [`Profile::check_role`], which applies the one
//! critical-extension rule before the profile's own, so no chain can skip it.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::KeyUsage;
use x509_parser::prelude::X509Version;

use super::rules::{self, CaStatus, Outside, SignatureError};
use super::{format_time, Certificate, ChainOptions, KeySpec};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Profile<'a> {
    /// cosign certificates: Fulcio's, or a private CA's.
    Fulcio(&'a ChainOptions),
    /// Notary Project signing chains. `at` is the authentic signing time (signing-authority
    /// scheme), when there is one; otherwise the caller checks validity (at "now", or against
    /// a timestamp).
    NotaryCodeSigning { at: Option<OffsetDateTime> },
    /// RFC 3161 TSA chains. Validity at the timestamp's time is checked by the caller.
    Timestamping,
}

/// Where a certificate sits on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Leaf,
    /// An issuer, with the number of CA certificates between it and the leaf.
    Ca {
        cas_below: usize,
    },
}

impl Profile<'_> {
    /// How refusals name `cert`.
    fn name(&self, cert: &Certificate, role: Role) -> String {
        match (self, role) {
            (Profile::Fulcio(_), Role::Leaf) => "certificate".into(),
            (Profile::Fulcio(_), Role::Ca { .. }) => format!("CA certificate {}", cert.display_name()),
            _ => format!("certificate {:?}", cert.go_subject()),
        }
    }

    /// Validity at the instant the profile checks the chain at, when it has one.
    pub(crate) fn check_time(&self, cert: &Certificate, role: Role) -> Result<(), String> {
        match self {
            Profile::Fulcio(opts) => rules::check_validity(cert, opts.at).map_err(|o| {
                let what = self.name(cert, role);
                match o {
                    Outside::NotYetValid(nb) => format!("{what} is not valid before {}", format_time(nb)),
                    Outside::Expired(na) => format!("{what} expired at {}", format_time(na)),
                }
            }),
            Profile::NotaryCodeSigning { at: Some(t) } => rules::check_validity(cert, *t).map_err(|_| {
                format!(
                    "certificate {:?} was not valid at the signing time {}; it is valid from {} to {}",
                    cert.go_subject(),
                    format_time(*t),
                    format_time(cert.not_before()),
                    format_time(cert.not_after())
                )
            }),
            Profile::NotaryCodeSigning { at: None } | Profile::Timestamping => Ok(()),
        }
    }

    /// Whether `issuer` issued `child` and may have: for cosign its signature (its name was
    /// matched by the search); for the Notary Project Go's `CheckSignatureFrom`.
    pub(crate) fn check_issued(&self, child: &Certificate, issuer: &Certificate) -> Result<(), String> {
        match self {
            Profile::Fulcio(_) => fulcio_issued(child, issuer),
            Profile::NotaryCodeSigning { .. } | Profile::Timestamping => notary_issued(child, issuer),
        }
    }

    /// The rules for `cert` in `role`: the critical-extension rule, then the profile's.
    pub(crate) fn check_role(&self, cert: &Certificate, role: Role) -> Result<(), String> {
        let parsed = cert.parsed()?;
        if let Some(oid) = rules::unknown_critical_extension(&parsed) {
            return Err(format!(
                "{} has a critical extension {oid} that sigmirror does not handle",
                self.name(cert, role)
            ));
        }
        let purpose = match self {
            Profile::Fulcio(opts) => {
                return match role {
                    Role::Leaf => fulcio_leaf(&parsed, opts),
                    Role::Ca { cas_below } => fulcio_ca(cert, &parsed, cas_below, opts),
                }
            }
            Profile::NotaryCodeSigning { .. } => Purpose::CodeSigning,
            Profile::Timestamping => Purpose::Timestamping,
        };
        match role {
            Role::Leaf => notary_leaf(cert, &parsed, purpose),
            Role::Ca { cas_below } => notary_ca(cert, &parsed, cas_below, purpose),
        }
    }
}

// ---- Fulcio (cosign) ----

fn fulcio_issued(child: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let parsed_child = child.parsed()?;
    let parsed_issuer = issuer.parsed()?;
    match rules::check_signature(&parsed_child, parsed_issuer.public_key()) {
        Ok(()) => Ok(()),
        Err(SignatureError::Sha1) => {
            Err(format!("certificate {} is signed with SHA-1, which is refused", child.display_name()))
        }
        Err(SignatureError::Rejected(X509Error::SignatureUnsupportedAlgorithm)) => Err(format!(
            "certificate {} uses an unsupported signature algorithm {}",
            child.display_name(),
            parsed_child.signature_algorithm.algorithm.to_id_string()
        )),
        Err(SignatureError::Rejected(_)) => Err(format!(
            "certificate {} names {} as issuer, but its signature does not verify with that certificate's key",
            child.display_name(),
            issuer.display_name()
        )),
    }
}

fn fulcio_leaf(parsed: &X509Certificate<'_>, opts: &ChainOptions) -> Result<(), String> {
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

fn fulcio_ca(
    ca: &Certificate,
    parsed: &X509Certificate<'_>,
    cas_below: usize,
    opts: &ChainOptions,
) -> Result<(), String> {
    let what = format!("CA certificate {}", ca.display_name());
    match rules::ca_status(parsed) {
        Ok(CaStatus::Ca { path_len }) => {
            if let Some(max) = rules::path_len_exceeded(path_len, cas_below) {
                return Err(format!("{what} allows {max} intermediate(s) below it, the chain has {cas_below}"));
            }
        }
        Ok(CaStatus::NotCa) => return Err(format!("{what} is not marked as a CA (basic constraints)")),
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

// ---- The Notary Project: code signing and timestamping ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    CodeSigning,
    Timestamping,
}

/// The key types and sizes the Notary Project allows, for signing and timestamping alike.
pub(crate) fn notary_allows(spec: KeySpec) -> bool {
    matches!(spec, KeySpec::Rsa(2048 | 3072 | 4096) | KeySpec::Ec(256 | 384 | 521))
}

/// `child`'s signature verifies with `key_holder`'s key (no CA checks), SHA-1 refused.
pub(super) fn notary_signature(child: &Certificate, key_holder: &Certificate) -> Result<(), String> {
    let c = child.parsed()?;
    let k = key_holder.parsed()?;
    rules::check_signature(&c, k.public_key()).map_err(|e| match e {
        SignatureError::Sha1 => format!("{:?} is signed with SHA-1, which is not allowed", child.go_subject()),
        SignatureError::Rejected(e) => format!(
            "the signature on {:?} does not verify with the key of {:?}: {e}",
            child.go_subject(),
            key_holder.go_subject()
        ),
    })
}

/// Go's `CheckSignatureFrom`, as notation-core-go relies on it: a v3 parent must be a CA and,
/// if it has a key usage, may sign certificates; then the signature and the issuer name.
fn notary_issued(child: &Certificate, parent: &Certificate) -> Result<(), String> {
    let p = parent.parsed()?;
    if p.version() == X509Version::V3 {
        match rules::ca_status(&p) {
            Ok(CaStatus::Ca { .. }) => {}
            Ok(CaStatus::NotCa) => return Err(format!("{:?} is not a CA", parent.go_subject())),
            Err(e) => return Err(format!("{:?} has bad basic constraints: {e}", parent.go_subject())),
        }
        if let Ok(Some(ku)) = p.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(format!("{:?} may not sign certificates (no keyCertSign)", parent.go_subject()));
            }
        }
    }
    notary_signature(child, parent)?;
    if !rules::names_issuer(&child.parsed()?, &p) {
        return Err(format!("{:?} does not name {:?} as its issuer", child.go_subject(), parent.go_subject()));
    }
    Ok(())
}

/// Self-signed in Go's sense: it verifies under its own key and names itself as issuer.
pub(super) fn notary_self_signed(c: &Certificate) -> bool {
    notary_issued(c, c).is_ok()
}

fn notary_key_usage<'a>(
    c: &Certificate,
    parsed: &'a X509Certificate<'_>,
    purpose: Purpose,
) -> Result<&'a KeyUsage, String> {
    let s = c.go_subject();
    match parsed.key_usage() {
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

fn notary_ca(c: &Certificate, parsed: &X509Certificate<'_>, cas_below: usize, purpose: Purpose) -> Result<(), String> {
    let s = c.go_subject();
    match rules::ca_status(parsed) {
        Ok(CaStatus::Ca { path_len }) => {
            if let Some(max) = rules::path_len_exceeded(path_len, cas_below) {
                return Err(format!(
                    "CA certificate {s:?} allows a path length of {max}, but {cas_below} certificates follow it"
                ));
            }
        }
        Ok(CaStatus::NotCa) => {
            return Err(format!("CA certificate {s:?} does not have basic constraints with cA=true"))
        }
        Err(e) => return Err(format!("CA certificate {s:?} has malformed basic constraints: {e}")),
    }
    let ku = notary_key_usage(c, parsed, purpose)?;
    if !ku.key_cert_sign() {
        return Err(format!("CA certificate {s:?}: key usage lacks keyCertSign"));
    }
    Ok(())
}

fn notary_leaf(c: &Certificate, parsed: &X509Certificate<'_>, purpose: Purpose) -> Result<(), String> {
    let s = c.go_subject();
    match rules::ca_status(parsed) {
        Ok(CaStatus::Ca { .. }) => {
            return Err(format!("signing certificate {s:?} is a CA (basic constraints cA=true)"))
        }
        Ok(CaStatus::NotCa) => {}
        Err(e) => return Err(format!("signing certificate {s:?} has malformed basic constraints: {e}")),
    }
    let ku = notary_key_usage(c, parsed, purpose)?;
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
    let eku = parsed
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
    let spec = c.key_spec().map_err(|e| format!("certificate {s:?}: {e}"))?;
    if !notary_allows(spec) {
        return Err(format!(
            "certificate {s:?} has an {spec} key; the Notary Project allows RSA 2048/3072/4096 and EC P-256/384/521"
        ));
    }
    Ok(())
}
