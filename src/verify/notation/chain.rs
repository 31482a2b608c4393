//! What the Notary Project asks of certificates beyond its certificate profile (which is
//! `verify::x509`'s, with the path checked in the envelope's order): the signature algorithm a
//! signing key implies, `x509.subject` identity matching, and the revocation endpoints that
//! decide whether a certificate is "revokable".

use x509_parser::prelude::ParsedExtension;

use super::envelope::Alg;
use super::trustpolicy::Dn;
use crate::verify::x509::{self, Certificate, KeySpec};

/// Parses one DER certificate of an envelope or trust store, in notation's words.
pub fn parse(der: &[u8]) -> Result<Certificate, String> {
    Certificate::parse(der).map_err(|e| e.to_string())
}

/// The leaf subject as attributes for `x509.subject` matching. Notation goes
/// through `pkix.Name.String()` and back, which fails for attributes Go has
/// no name for (rendered `oid=#hex`) and for repeated types (rendered as a
/// multi-valued RDN); we fail the same way instead of guessing.
pub fn subject_dn(c: &Certificate) -> Result<Dn, String> {
    let parsed = c.parsed()?;
    let mut out: Vec<(String, String)> = Vec::new();
    for a in parsed.subject().iter_attributes() {
        let Some(k) = x509::short_name(a.attr_type()) else {
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

/// The one algorithm a signing key allows: a signature must use exactly
/// that algorithm. `None` exactly for the keys the Notary Project refuses.
pub fn signature_alg(spec: KeySpec) -> Option<Alg> {
    match spec {
        KeySpec::Rsa(2048) => Some(Alg::Ps256),
        KeySpec::Rsa(3072) => Some(Alg::Ps384),
        KeySpec::Rsa(4096) => Some(Alg::Ps512),
        KeySpec::Ec(256) => Some(Alg::Es256),
        KeySpec::Ec(384) => Some(Alg::Es384),
        KeySpec::Ec(521) => Some(Alg::Es512),
        _ => None,
    }
}

/// Whether the certificate names an OCSP responder or CRL distribution
/// point, i.e. whether the Notary Project would check its revocation status
/// over the network. Certificates without either are "non-revokable" and
/// pass the revocation check by definition.
pub fn revocation_endpoints(c: &Certificate) -> Result<Vec<String>, String> {
    let parsed = c.parsed()?;
    let mut out = Vec::new();
    for ext in parsed.extensions() {
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
    Ok(out)
}

fn general_name(n: &x509_parser::extensions::GeneralName) -> String {
    match n {
        x509_parser::extensions::GeneralName::URI(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_implies_an_algorithm_exactly_when_the_notary_profile_allows_it() {
        for bits in [1024, 2047, 2048, 3072, 4096, 8192] {
            assert_eq!(
                signature_alg(KeySpec::Rsa(bits)).is_some(),
                x509::profile::notary_allows(KeySpec::Rsa(bits)),
                "{bits}"
            );
        }
        for bits in [224, 256, 384, 521] {
            assert_eq!(
                signature_alg(KeySpec::Ec(bits)).is_some(),
                x509::profile::notary_allows(KeySpec::Ec(bits)),
                "{bits}"
            );
        }
    }
}
