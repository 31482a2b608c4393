//! Notation (Notary Project v1) signature verification.
//!
//! The trust policy and trust store are notation's own files, read verbatim,
//! so an operator's existing notation setup means the same thing here. One
//! call to [`NotationVerifier::verify`] checks one envelope (JWS or COSE) for
//! one artifact, following the order of the trust-store-trust-policy
//! specification and notation-go: integrity (always enforced), authenticity
//! (trust store, then trusted identity), expiry, authentic timestamp,
//! revocation, each enforced or only logged as the statement's level says.
//! The payload must name exactly the artifact being pulled at every level;
//! that is checked as soon as integrity has authenticated the payload.
//!
//! What cannot be decided here fails closed. Revocation status cannot be
//! checked offline (sigmirror never contacts OCSP or CRL servers), so it
//! fails revocation validation, which only the policy's level or an
//! override can relax. Verification plugins and unknown critical attributes
//! refuse the signature at every level.

pub(crate) mod chain;
pub(crate) mod cose;
mod crypto;
pub(crate) mod envelope;
pub(crate) mod jws;
pub mod trustpolicy;
pub mod truststore;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use sha2::Digest as _;
use time::OffsetDateTime;

use super::timestamp::{self, TsaTrust};
use super::x509::{self, format_time, Certificate, Outside, Profile};
use envelope::{Envelope, Scheme};
use trustpolicy::{Action, Identities, Level, Statement, StoreRef, StoreType, TrustPolicy, VerifyTimestamp};
use truststore::TrustStore;

/// Envelopes are a few kilobytes (a payload, a chain, maybe a timestamp);
/// notation-go allows 32 MiB, but nothing legitimate comes near 1 MiB.
pub const MAX_ENVELOPE: usize = 1 << 20;

pub const MEDIA_TYPE_JWS: &str = "application/jose+json";
pub const MEDIA_TYPE_COSE: &str = "application/cose";

/// The loaded trust policy and the trust store directories it names.
#[derive(Clone, Debug)]
pub struct NotationVerifier {
    policy: TrustPolicy,
    policy_bytes: Vec<u8>,
    store: TrustStore,
}

/// The artifact a signature must be for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// `<registry>/<repository>`, matched exactly against `registryScopes`.
    pub registry_scope: &'a str,
    pub digest: &'a crate::oci::Digest,
    pub media_type: &'a str,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The signature verified. `logged` lists the validations that failed
    /// but that the level only logs (empty at `strict` by construction).
    Verified {
        logged: Vec<String>,
    },
    /// The applicable statement has level `skip`: no verification at all.
    Skipped,
    Refused(String),
}

impl NotationVerifier {
    /// Validates the loaded trust policy and reads the stores it references.
    /// Every problem goes to the checker; `None` when anything was wrong, so
    /// a half-understood policy is never used.
    pub fn load(n: &crate::config::NotationConfig, c: &mut crate::config::Checker) -> Option<NotationVerifier> {
        // Unset cannot happen (the key is required); Unreadable is already reported.
        let crate::config::FileSetting::Read(policy_file) = &n.trust_policy else { return None };
        let mut problems = Vec::new();
        let policy = trustpolicy::parse(&policy_file.bytes, &mut problems);
        for p in problems.drain(..) {
            c.problem(
                format!("notation.trust_policy: {}", p.at),
                format!("{}: {}", policy_file.name, p.message),
                p.fix,
            );
        }
        let policy = policy?;
        let store = truststore::load(&n.trust_store, &policy.referenced_stores(), &mut problems);
        let ok = problems.is_empty();
        for p in problems {
            c.problem(format!("notation.trust_store: {}", p.at), p.message, p.fix);
        }
        ok.then(|| NotationVerifier { policy, policy_bytes: policy_file.bytes.clone(), store })
    }

    /// Builds a verifier from bytes already in memory (tests, and callers that
    /// read the files themselves). Problems are returned as text.
    pub fn from_parts(policy_json: &[u8], trust_store_root: &std::path::Path) -> Result<NotationVerifier, Vec<String>> {
        let mut problems = Vec::new();
        let policy = trustpolicy::parse(policy_json, &mut problems);
        let Some(policy) = policy else {
            return Err(problems.into_iter().map(|p| format!("{}: {}", p.at, p.message)).collect());
        };
        let store = truststore::load(trust_store_root, &policy.referenced_stores(), &mut problems);
        if !problems.is_empty() {
            return Err(problems.into_iter().map(|p| format!("{}: {}", p.at, p.message)).collect());
        }
        Ok(NotationVerifier { policy, policy_bytes: policy_json.to_vec(), store })
    }

    /// Feeds every byte that can change a verdict: the policy file and each
    /// trust store file read, length-prefixed so boundaries are unambiguous.
    pub fn fingerprint(&self, h: &mut sha2::Sha256) {
        fn put(h: &mut sha2::Sha256, b: &[u8]) {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        put(h, b"sigmirror notation v1");
        put(h, &self.policy_bytes);
        for (name, bytes) in &self.store.files {
            put(h, name.as_bytes());
            put(h, bytes);
        }
    }

    /// The statement that applies to `<registry>/<repository>`, if any.
    pub fn statement_for(&self, registry_scope: &str) -> Option<&Statement> {
        self.policy.statement_for(registry_scope)
    }

    /// Verifies one signature envelope for the artifact.
    pub fn verify(&self, target: &Target, envelope_media_type: &str, envelope: &[u8], now: OffsetDateTime) -> Outcome {
        let Some(stmt) = self.policy.statement_for(target.registry_scope) else {
            return Outcome::Refused(format!(
                "notation: no notation trust policy statement applies to {}",
                target.registry_scope
            ));
        };
        if stmt.level == Level::Skip {
            return Outcome::Skipped;
        }
        let mut run = Run { stmt, logged: Vec::new() };
        match self.evaluate(&mut run, target, envelope_media_type, envelope, now) {
            Ok(()) => Outcome::Verified { logged: run.logged },
            Err(reason) => Outcome::Refused(reason),
        }
    }

    /// The subject of the certificate that signed an envelope `verify`
    /// accepted, as notation names it (`CN=…,O=…`), for the audit trail.
    /// Parsed again rather than carried in [`Outcome`]: only allows need it.
    pub fn signer_of(envelope_media_type: &str, envelope: &[u8]) -> Option<String> {
        let env = match envelope_media_type {
            MEDIA_TYPE_JWS => jws::parse(envelope),
            MEDIA_TYPE_COSE => cose::parse(envelope),
            _ => return None,
        }
        .ok()?;
        let leaf = chain::parse(env.chain.first()?).ok()?;
        Some(leaf.go_subject())
    }

    fn evaluate(
        &self,
        run: &mut Run,
        target: &Target,
        media_type: &str,
        bytes: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let integrity = |d: String| format!("notation: integrity validation failed: {d}");

        // 1. Integrity: parse, verify the signature with the leaf, check the
        //    signed attributes and the chain's structure.
        if bytes.len() > MAX_ENVELOPE {
            return Err(integrity(format!(
                "the envelope is {} bytes, more than the {MAX_ENVELOPE} allowed",
                bytes.len()
            )));
        }
        let env = match media_type {
            MEDIA_TYPE_JWS => jws::parse(bytes),
            MEDIA_TYPE_COSE => cose::parse(bytes),
            other => Err(format!("envelope media type {other:?} is neither {MEDIA_TYPE_JWS} nor {MEDIA_TYPE_COSE}")),
        }
        .map_err(integrity)?;
        let certs: Vec<Certificate> = env
            .chain
            .iter()
            .enumerate()
            .map(|(i, der)| chain::parse(der).map_err(|e| format!("certificate {i} in the chain: {e}")))
            .collect::<Result<_, _>>()
            .map_err(integrity)?;
        let leaf = &certs[0];
        let spec = leaf.key_spec().map_err(|e| integrity(format!("signing certificate: {e}")))?;
        let Some(expected) = chain::signature_alg(spec) else {
            return Err(integrity(format!("the signing certificate has an {spec} key, which the Notary Project does not allow (RSA keys must be 2048, 3072 or 4096 bits)")));
        };
        if expected != env.alg {
            return Err(integrity(format!(
                "the signature algorithm {} does not match the {spec} signing key, which requires {}",
                env.alg.jose_name(),
                expected.jose_name()
            )));
        }
        crypto::verify(&leaf.spki_der(), env.alg, &env.signed_bytes, &env.signature).map_err(integrity)?;
        let validated = env.validate_headers().map_err(integrity)?;
        // Notation validates the chain at the signing time only when that time
        // is authentic (signing-authority scheme); `signingTime` under
        // notary.x509 is the signer's unproven claim.
        let at = match validated.scheme {
            Scheme::SigningAuthority => env.authentic_signing_time,
            Scheme::X509 => None,
        };
        x509::check_in_order(&certs, &Profile::NotaryCodeSigning { at })
            .map_err(|e| integrity(format!("certificate chain: {e}")))?;

        // Extended critical attributes need a plugin or an extension we do not
        // have: never claim a signature verifies when part of it was ignored,
        // whatever the level.
        if let Some(why) = env.unsupported_critical() {
            return Err(format!("notation: {why}"));
        }

        // The payload is authenticated now; binding it to the artifact early
        // gives the precise reason for the common case of a signature that is
        // simply for another image.
        check_payload(&env, target)?;

        // 2. Authenticity: the chain must contain a certificate from one of the
        //    statement's stores of the scheme's type, then the leaf must match
        //    a trusted identity.
        let kind = match validated.scheme {
            Scheme::X509 => StoreType::Ca,
            Scheme::SigningAuthority => StoreType::SigningAuthority,
        };
        let stores: Vec<&StoreRef> = run.stmt.stores_of(kind).collect();
        let anchored = if stores.is_empty() {
            run.fail(
                run.stmt.actions.authenticity,
                "authenticity",
                format!(
                    "the signature uses the {} scheme, and trust policy statement {:?} lists no {} trust store",
                    validated.scheme.name(),
                    run.stmt.name,
                    kind.name()
                ),
            )?;
            false
        } else {
            let found = stores.iter().any(|r| self.store.certs(r).iter().any(|t| env.chain.contains(&t.der)));
            if !found {
                let names: Vec<String> = stores.iter().map(|r| r.to_string()).collect();
                run.fail(
                    run.stmt.actions.authenticity,
                    "authenticity",
                    format!("certificate chain does not reach trust store {}", names.join(", ")),
                )?;
            }
            found
        };
        if anchored {
            if let Identities::Subjects(ids) = &run.stmt.identities {
                let detail = match chain::subject_dn(leaf) {
                    Ok(dn) if ids.iter().any(|id| id.is_subset_of(&dn)) => None,
                    Ok(_) => Some(format!(
                        "signing certificate {:?} matches none of the trusted identities of trust policy statement {:?}",
                        leaf.go_subject(),
                        run.stmt.name
                    )),
                    Err(e) => Some(format!("signing certificate {:?}: {e}", leaf.go_subject())),
                };
                if let Some(d) = detail {
                    run.fail(run.stmt.actions.authenticity, "authenticity", d)?;
                }
            }
        }

        // 3. Expiry: the signer's "best before"; a timestamp does not extend it.
        if let Some(expiry) = env.expiry {
            if now >= expiry {
                run.fail(run.stmt.actions.expiry, "expiry", format!("signature expired at {}", format_time(expiry)))?;
            }
        }

        // 4. Authentic timestamp.
        match validated.scheme {
            Scheme::SigningAuthority => {
                // Validity at the authentic signing time was already required
                // as part of integrity (notation-core-go does the same), so
                // there is nothing left to prove here.
            }
            Scheme::X509 => self.authentic_timestamp(run, &env, &certs, now)?,
        }

        // 5. Revocation.
        self.revocation(run, &certs)?;
        Ok(())
    }

    /// Under notary.x509 the only proof of when the signature was made is an
    /// RFC 3161 timestamp. Without one (or when the policy does not ask for
    /// one), every certificate must be valid now.
    fn authentic_timestamp(
        &self,
        run: &mut Run,
        env: &Envelope,
        certs: &[Certificate],
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let action = run.stmt.actions.authentic_timestamp;
        let tsa: Vec<&StoreRef> = run.stmt.stores_of(StoreType::Tsa).collect();
        let mut use_timestamp = !tsa.is_empty();
        if use_timestamp && run.stmt.verify_timestamp == VerifyTimestamp::AfterCertExpiry {
            use_timestamp = certs.iter().any(|c| now > c.not_after());
        }
        if !use_timestamp {
            for c in certs {
                let detail = match x509::check_validity(c, now) {
                    Ok(()) => continue,
                    Err(Outside::NotYetValid(nb)) => {
                        format!("certificate {:?} is not valid until {}", c.go_subject(), format_time(nb))
                    }
                    Err(Outside::Expired(na)) => format!(
                        "certificate {:?} expired at {} and no trusted timestamp proves the signature was made before that",
                        c.go_subject(),
                        format_time(na)
                    ),
                };
                return run.fail(action, "authenticTimestamp", detail);
            }
            return Ok(());
        }
        let Some(token) = &env.timestamp else {
            return run.fail(
                action,
                "authenticTimestamp",
                "no timestamp countersignature was found in the signature envelope".into(),
            );
        };
        let stamp = match self.verify_timestamp(token, &env.signature, &tsa) {
            Ok(s) => s,
            Err(e) => {
                return run.fail(
                    action,
                    "authenticTimestamp",
                    format!("the timestamp countersignature does not verify: {e}"),
                )
            }
        };
        // The signature provably existed at some time in [lower, upper]; the
        // whole interval must lie inside every certificate's validity.
        for c in certs {
            let detail = match x509::check_window(c, stamp.lower, stamp.upper) {
                Ok(()) => continue,
                Err(Outside::NotYetValid(nb)) => format!(
                    "the timestamp ({}) can be before certificate {:?} became valid at {}",
                    format_time(stamp.lower),
                    c.go_subject(),
                    format_time(nb)
                ),
                Err(Outside::Expired(na)) => format!(
                    "the timestamp ({}) can be after certificate {:?} expired at {}",
                    format_time(stamp.upper),
                    c.go_subject(),
                    format_time(na)
                ),
            };
            return run.fail(action, "authenticTimestamp", detail);
        }
        // The TSA chain's revocation status cannot be checked offline either;
        // it falls under the same revocation setting as the signing chain.
        if let Some(d) = unknown_revocation(&stamp.chain, "timestamping") {
            return run.fail_revocation(d);
        }
        Ok(())
    }

    /// Verifies a timestamp countersignature: `token` over `signature`,
    /// anchored in the certificates of the statement's `tsa` trust stores.
    fn verify_timestamp(&self, token: &[u8], signature: &[u8], tsa: &[&StoreRef]) -> Result<timestamp::Stamp, String> {
        let roots: Vec<&[u8]> = tsa.iter().flat_map(|r| self.store.certs(r).iter()).map(|c| c.der.as_slice()).collect();
        if roots.is_empty() {
            return Err("the trust policy lists no tsa certificates".into());
        }
        timestamp::verify(
            token,
            signature,
            &TsaTrust { roots: &roots, intermediates: &[], roots_name: "tsa trust store" },
        )
    }

    /// sigmirror runs air-gapped and never contacts OCSP responders or CRL
    /// distribution points. Following the specification, a certificate that
    /// names neither is "non-revokable" and passes; one that names either has
    /// "revocation unavailable", which fails revocation validation. At
    /// `strict` that refuses the signature, at `permissive`/`audit` it is
    /// logged, and `override: {"revocation": "skip"}` turns the check off.
    fn revocation(&self, run: &mut Run, certs: &[Certificate]) -> Result<(), String> {
        match unknown_revocation(certs, "signing") {
            Some(d) => run.fail_revocation(d),
            None => Ok(()),
        }
    }
}

/// The first certificate (root excluded: roots are not revoked by their own
/// OCSP responder, and notation skips them too) whose revocation status would
/// need the network.
fn unknown_revocation(certs: &[Certificate], what: &str) -> Option<String> {
    let n = certs.len().saturating_sub(1).max(1);
    for c in certs.iter().take(n) {
        let eps = match chain::revocation_endpoints(c) {
            Ok(eps) => eps,
            // Unreadable means unknown, which fails like any unknown status.
            Err(e) => vec![e],
        };
        if !eps.is_empty() {
            return Some(format!(
                "{what} certificate {:?} revocation status is unknown: it names {}, and sigmirror does not contact revocation services",
                c.go_subject(),
                eps.join(", ")
            ));
        }
    }
    None
}

/// State of one evaluation: the statement and what was only logged.
struct Run<'a> {
    stmt: &'a Statement,
    logged: Vec<String>,
}

impl Run<'_> {
    /// Records a failed validation: refuses when the action enforces it,
    /// otherwise logs it and lets evaluation continue.
    fn fail(&mut self, action: Action, kind: &str, detail: String) -> Result<(), String> {
        match action {
            Action::Enforce => Err(format!("notation: {kind} validation failed: {detail}")),
            Action::Log => {
                self.logged.push(format!(
                    "notation: {kind} validation failed (logged only; statement {:?} at level {}): {detail}",
                    self.stmt.name,
                    self.stmt.level.name()
                ));
                Ok(())
            }
            Action::Skip => Ok(()),
        }
    }

    fn fail_revocation(&mut self, detail: String) -> Result<(), String> {
        let action = self.stmt.actions.revocation;
        self.fail(action, "revocation", detail)
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "targetArtifact")]
    target_artifact: TargetArtifact,
}

#[derive(Deserialize)]
struct TargetArtifact {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

/// The payload must name exactly the artifact being verified: digest, size
/// and media type, like notation-go's `content.Equal`.
pub(crate) fn check_payload(env: &Envelope, target: &Target) -> Result<(), String> {
    let p: Payload = serde_json::from_slice(&env.payload).map_err(|e| {
        format!("notation: integrity validation failed: the payload is not a Notary Project payload: {e}")
    })?;
    let t = p.target_artifact;
    if t.digest != target.digest.as_str() {
        return Err(format!("notation: payload is for {} not {}", t.digest, target.digest.as_str()));
    }
    if t.size != target.size {
        return Err(format!("notation: payload says {} is {} bytes, not {}", t.digest, t.size, target.size));
    }
    if t.media_type != target.media_type {
        return Err(format!("notation: payload says {} is {:?}, not {:?}", t.digest, t.media_type, target.media_type));
    }
    Ok(())
}
