//! What the JWS and COSE envelopes have in common once decoded: the signed
//! attributes, the signed bytes, the signature and the certificate chain.
//!
//! Both parsers fill in an [`Envelope`] and then [`Envelope::validate_headers`]
//! applies the Notary Project rules for signed attributes once, so JWS and
//! COSE cannot drift apart in what they accept.

use time::OffsetDateTime;

use crate::verify::x509::format_time;

pub const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

pub const H_SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
pub const H_SIGNING_TIME: &str = "io.cncf.notary.signingTime";
pub const H_AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
pub const H_EXPIRY: &str = "io.cncf.notary.expiry";
pub const H_VERIFICATION_PLUGIN: &str = "io.cncf.notary.verificationPlugin";
pub const H_VERIFICATION_PLUGIN_MIN_VERSION: &str = "io.cncf.notary.verificationPluginMinVersion";
pub const H_TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";

/// More certificates than this in `x5c` is not a real signing chain; the
/// bound keeps the per-signature work small.
pub const MAX_CHAIN: usize = 10;

/// The signature algorithms the Notary Project allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Alg {
    pub fn from_jose(s: &str) -> Option<Alg> {
        Some(match s {
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            _ => return None,
        })
    }

    pub fn from_cose(v: i64) -> Option<Alg> {
        Some(match v {
            -37 => Alg::Ps256,
            -38 => Alg::Ps384,
            -39 => Alg::Ps512,
            -7 => Alg::Es256,
            -35 => Alg::Es384,
            -36 => Alg::Es512,
            _ => return None,
        })
    }

    pub fn jose_name(self) -> &'static str {
        match self {
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `notary.x509`: roots in `ca` stores; time proven by RFC 3161 only.
    X509,
    /// `notary.x509.signingAuthority`: roots in `signingAuthority` stores;
    /// the signing time is vouched for by the signing authority.
    SigningAuthority,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::X509 => "notary.x509",
            Scheme::SigningAuthority => "notary.x509.signingAuthority",
        }
    }
}

/// A decoded envelope. Nothing in it is trusted until the signature over
/// `signed_bytes` has been checked with `chain[0]`.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub alg: Alg,
    pub content_type: Option<String>,
    pub scheme_raw: Option<String>,
    pub signing_time: Option<OffsetDateTime>,
    pub authentic_signing_time: Option<OffsetDateTime>,
    pub expiry: Option<OffsetDateTime>,
    /// Names listed in `crit`, as written.
    pub crit: Vec<String>,
    /// Names of every protected header present, as written (for the rule
    /// that each critical name must be present).
    pub present: Vec<String>,
    pub verification_plugin: Option<String>,
    pub payload: Vec<u8>,
    pub signed_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub timestamp: Option<Vec<u8>>,
}

/// Signed attributes after validation.
#[derive(Clone, Copy, Debug)]
pub struct Validated {
    pub scheme: Scheme,
}

impl Envelope {
    /// An envelope with only what every format has; the format's parser fills
    /// in the signed attributes it finds.
    pub fn new(alg: Alg, payload: Vec<u8>, signed_bytes: Vec<u8>, signature: Vec<u8>) -> Envelope {
        Envelope {
            alg,
            content_type: None,
            scheme_raw: None,
            signing_time: None,
            authentic_signing_time: None,
            expiry: None,
            crit: Vec::new(),
            present: Vec::new(),
            verification_plugin: None,
            payload,
            signed_bytes,
            signature,
            chain: Vec::new(),
            timestamp: None,
        }
    }

    /// The Notary Project rules for signed attributes (`signature-specification.md`,
    /// notation-core-go `validate`): content type, scheme, the time attribute
    /// that goes with the scheme, expiry after signing time, and `crit`.
    /// Unknown critical attributes fail: a verifier that does not understand
    /// a critical attribute must not claim the signature is valid.
    pub fn validate_headers(&self) -> Result<Validated, String> {
        match self.content_type.as_deref() {
            Some(PAYLOAD_CONTENT_TYPE) => {}
            Some(other) => return Err(format!("payload content type {other:?} is not {PAYLOAD_CONTENT_TYPE:?}")),
            None => return Err("the protected header has no content type (cty)".into()),
        }
        let scheme = match self.scheme_raw.as_deref() {
            Some("notary.x509") => Scheme::X509,
            Some("notary.x509.signingAuthority") => Scheme::SigningAuthority,
            Some(other) => return Err(format!("signing scheme {other:?} is not supported")),
            None => return Err(format!("the protected header has no {H_SIGNING_SCHEME}")),
        };
        let signed_at = match scheme {
            Scheme::X509 => {
                if self.authentic_signing_time.is_some() {
                    return Err(format!("{H_AUTHENTIC_SIGNING_TIME} is not allowed with the notary.x509 scheme"));
                }
                self.signing_time.ok_or_else(|| format!("{H_SIGNING_TIME} is required with the notary.x509 scheme"))?
            }
            Scheme::SigningAuthority => {
                if self.signing_time.is_some() {
                    return Err(format!(
                        "{H_SIGNING_TIME} is not allowed with the notary.x509.signingAuthority scheme"
                    ));
                }
                self.authentic_signing_time.ok_or_else(|| {
                    format!("{H_AUTHENTIC_SIGNING_TIME} is required with the notary.x509.signingAuthority scheme")
                })?
            }
        };
        if let Some(expiry) = self.expiry {
            if expiry <= signed_at {
                return Err(format!(
                    "expiry {} is not after the signing time {}",
                    format_time(expiry),
                    format_time(signed_at)
                ));
            }
        }
        if self.crit.is_empty() {
            return Err("the protected header has no crit list".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for c in &self.crit {
            if seen.contains(&c.as_str()) {
                return Err(format!("crit lists {c:?} twice"));
            }
            seen.push(c);
            if !self.present.iter().any(|p| p == c) {
                return Err(format!("crit lists {c:?}, which is not in the protected header"));
            }
        }
        let must = |name: &str| -> Result<(), String> {
            if self.crit.iter().any(|c| c == name) {
                Ok(())
            } else {
                Err(format!("{name} is present but not listed in crit"))
            }
        };
        must(H_SIGNING_SCHEME)?;
        if self.expiry.is_some() {
            must(H_EXPIRY)?;
        }
        if scheme == Scheme::SigningAuthority {
            must(H_AUTHENTIC_SIGNING_TIME)?;
        }
        if self.verification_plugin.is_some() {
            must(H_VERIFICATION_PLUGIN)?;
        }
        if self.present.iter().any(|p| p == H_VERIFICATION_PLUGIN_MIN_VERSION) {
            must(H_VERIFICATION_PLUGIN_MIN_VERSION)?;
        }
        Ok(Validated { scheme })
    }

    /// Critical attributes this verifier does not process. Plugin attributes
    /// come first so the refusal names the plugin, which is what an operator
    /// needs to know.
    pub fn unsupported_critical(&self) -> Option<String> {
        if let Some(p) = &self.verification_plugin {
            return Some(format!(
                "the signature requires the verification plugin {p:?}, and sigmirror does not run notation plugins"
            ));
        }
        let known = [H_SIGNING_SCHEME, H_EXPIRY, H_AUTHENTIC_SIGNING_TIME, H_SIGNING_TIME];
        let unknown: Vec<&str> = self.crit.iter().map(String::as_str).filter(|c| !known.contains(c)).collect();
        if unknown.is_empty() {
            None
        } else {
            Some(format!(
                "unsupported critical header {}",
                unknown.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
            ))
        }
    }
}
