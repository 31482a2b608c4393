//! `[[policy.attestation]]`: attestations an image must carry beside its signature, each a
//! predicate type and an optional CEL condition over the predicate (`condition`).
//!
//! A requirement is met when at least one attestation of its predicate type
//! * verifies with **any** of the policy's cosign authorities (`verify::attestation`: the
//!   envelope signature, the log entry for bundles, the certificate's identity),
//! * has the served digest among its statement's subjects, and
//! * makes the condition true (no condition: any such attestation).
//!
//! Every requirement must be met, on top of the signatures the policy requires (`require` counts
//! signature authorities only). A refusal names the predicate type, the condition and why, in one
//! line: `attestation https://slsa.dev/provenance/v1 (condition `…`): condition is false`.

use time::OffsetDateTime;

use crate::config::{Checker, PolicyConfig};
use crate::oci::Digest;
use crate::verify::attestation::{self, Attestation, Statement};
use crate::verify::cosign::CosignAuthority;

use super::condition::Condition;
use super::evidence::{AttestationEvidence, Found};
use super::verdict::summarize;

/// Most attestations examined per image.
pub const MAX_ATTESTATIONS: usize = 16;

/// cosign's `--type` names, so a config can say what `cosign attest --type` said.
const ALIASES: [(&str, &str); 10] = [
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("link", "https://in-toto.io/attestation/link/v0.3"),
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
];

/// One required attestation.
#[derive(Debug)]
pub struct Requirement {
    pub predicate_type: String,
    pub condition: Option<Condition>,
}

impl Requirement {
    /// `attestation <type>` or `attestation <type> (condition `…`)`: how refusals name it.
    pub fn describe(&self) -> String {
        match &self.condition {
            Some(c) => format!("attestation {} (condition `{}`)", self.predicate_type, c.source),
            None => format!("attestation {}", self.predicate_type),
        }
    }
}

/// The requirements of a policy, every problem recorded with its key path.
pub fn requirements(p: &PolicyConfig, c: &mut Checker) -> Vec<Requirement> {
    let mut out = Vec::new();
    for (j, a) in p.attestation.iter().enumerate() {
        let key = format!("policy[{}].attestation[{j}]", p.index);
        let predicate_type = match ALIASES.iter().find(|(alias, _)| *alias == a.predicate_type) {
            Some((_, uri)) => uri.to_string(),
            None if a.predicate_type.contains("://") && a.predicate_type.len() <= 512 => a.predicate_type.clone(),
            None => {
                let names: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).collect();
                c.problem(
                    format!("{key}.predicate_type"),
                    format!("{:?} is neither a predicate type URI nor a cosign --type name", a.predicate_type),
                    format!("write the URI (https://slsa.dev/provenance/v1) or one of {}", names.join(", ")),
                );
                continue;
            }
        };
        let condition = match a.condition.as_deref().map(Condition::compile) {
            None => None,
            Some(Ok(cond)) => Some(cond),
            Some(Err(e)) => {
                c.problem(
                    format!("{key}.condition"),
                    e,
                    "write a CEL expression over predicate and now, e.g. \
                     predicate.buildDefinition.buildType == \"https://actions.github.io/buildtypes/workflow/v1\"",
                );
                continue;
            }
        };
        out.push(Requirement { predicate_type, condition });
    }
    if !p.attestation.is_empty() && p.cosign_keys.is_empty() && p.cosign_certificates.is_empty() {
        c.problem(
            format!("policy[{}].attestation", p.index),
            "requires attestations, but the policy lists no cosign_keys or cosign_certificates to verify them with \
             (Notation-signed attestations are not supported)",
            "add the key or certificate identity that signs the attestations",
        );
    }
    out
}

/// Judges every requirement: `Ok` with what satisfied them, for the allow's `by`; `Err` with the
/// first unmet requirement's one-line reason.
pub fn judge(
    reqs: &[Requirement],
    authorities: &[CosignAuthority],
    found: Option<&Found<Vec<AttestationEvidence>>>,
    digest: &Digest,
    now: OffsetDateTime,
) -> Result<String, String> {
    let (verified, unverified) = match found {
        Some(Found::Present(items)) => verify_all(authorities, items, digest, now),
        Some(Found::Absent(note)) => (Vec::new(), vec![note.clone()]),
        None => (Vec::new(), vec!["attestations were not looked up".to_string()]),
    };
    let mut by = Vec::new();
    for req in reqs {
        let of_type: Vec<&(String, Statement)> =
            verified.iter().filter(|(_, s)| s.predicate_type == req.predicate_type).collect();
        if of_type.is_empty() {
            let why = if unverified.is_empty() {
                "no attestation of this type found".to_string()
            } else {
                format!("no verified attestation of this type ({})", summarize(&unverified))
            };
            return Err(format!("{}: {why}", req.describe()));
        }
        let Some(cond) = &req.condition else {
            by.push(format!("{} by {}", req.predicate_type, of_type[0].0));
            continue;
        };
        let mut failures = Vec::new();
        let mut met = None;
        for (who, st) in &of_type {
            match cond.evaluate(&st.predicate, now) {
                Ok(true) => {
                    met = Some(who);
                    break;
                }
                Ok(false) => failures.push("condition is false".to_string()),
                Err(e) => failures.push(format!("condition failed: {e}")),
            }
        }
        match met {
            Some(who) => by.push(format!("{} by {who}", req.predicate_type)),
            None => return Err(format!("{}: {}", req.describe(), summarize(&failures))),
        }
    }
    Ok(format!("attestations {}", by.join(", ")))
}

/// Each attestation checked against the authorities until one verifies it: the verified ones
/// with who verified them, and the reasons of the rest.
fn verify_all(
    authorities: &[CosignAuthority],
    items: &[AttestationEvidence],
    digest: &Digest,
    now: OffsetDateTime,
) -> (Vec<(String, Statement)>, Vec<String>) {
    let mut verified = Vec::new();
    let mut reasons = Vec::new();
    for item in items.iter().take(MAX_ATTESTATIONS) {
        let att: &Attestation = match item {
            AttestationEvidence::Found(a) => a,
            AttestationEvidence::Unusable(r) => {
                reasons.push(r.clone());
                continue;
            }
        };
        let mut failed = Vec::new();
        let ok = authorities.iter().find_map(|auth| match attestation::verify(auth, att, digest, now) {
            Ok(st) => Some((auth.describe(), st)),
            Err(e) => {
                failed.push(format!("{}: {e}", auth.describe()));
                None
            }
        });
        match ok {
            Some(v) => verified.push(v),
            None => reasons.extend(failed),
        }
    }
    (verified, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawAttestation;
    use crate::verify::attestation::Attestation;

    /// The real `cosign attest` bundle among the known-answer vectors (sigstore/cosign
    /// `pkg/cosign/testdata/oci-attestation.sigstore.json`): keyless (cody@soyland.com, GitHub
    /// OAuth), logged in Rekor at 1740770291 (2025-02-28T19:18:11Z), predicate type
    /// `https://cosign.sigstore.dev/attestation/v1` (cosign's `custom`), predicate
    /// `{"Data": "{\"foo\": \"bar\"}\n", "Timestamp": "2025-02-28T19:18:11Z"}`.
    const KAT_DIGEST: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
    const CUSTOM: &str = "https://cosign.sigstore.dev/attestation/v1";

    fn vectors() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cosign")
    }

    fn kat() -> Vec<AttestationEvidence> {
        let bytes = std::fs::read(vectors().join("cosign/oci-attestation.sigstore.json")).unwrap();
        vec![AttestationEvidence::Found(Attestation::Bundle(bytes))]
    }

    /// The Fulcio authority for `identity` through the public-good trusted root, and the
    /// requirements built from `attestation` tables.
    fn policy(identity: &str, attestations: &[(&str, Option<&str>)]) -> (Vec<CosignAuthority>, Vec<Requirement>) {
        let (mut p, mut c) = crate::config::policy_fragment(
            &vectors(),
            &format!(
                "[[cosign_certificates]]\nsigstore_trusted_root = \"sigstore-rs/trusted_root.json\"\n\
                 identity = {identity:?}\nissuer = \"https://github.com/login/oauth\""
            ),
        );
        p.attestation = attestations
            .iter()
            .map(|(t, cond)| RawAttestation { predicate_type: t.to_string(), condition: cond.map(str::to_string) })
            .collect();
        let auths = CosignAuthority::from_policy(&p, &mut c);
        let reqs = requirements(&p, &mut c);
        assert!(c.problems.is_empty(), "{:?}", c.problems.iter().map(|p| &p.message).collect::<Vec<_>>());
        (auths, reqs)
    }

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    const FRESH: &str = "predicate.Data.contains(\"foo\") && now - timestamp(predicate.Timestamp) < duration(\"168h\")";

    #[test]
    fn the_real_cosign_attest_bundle_meets_a_condition_while_fresh_and_is_refused_when_stale() {
        let (auths, reqs) = policy("cody@soyland.com", &[("custom", Some(FRESH))]);
        let d: Digest = KAT_DIGEST.parse().unwrap();
        let found = Found::Present(kat());
        let by = judge(&reqs, &auths, Some(&found), &d, at("2025-03-01T00:00:00Z")).unwrap();
        assert_eq!(
            by,
            format!(
                "attestations {CUSTOM} by certificate sigstore_trusted_root sigstore-rs/trusted_root.json identity \
                 cody@soyland.com issuer https://github.com/login/oauth"
            )
        );
        assert_eq!(
            judge(&reqs, &auths, Some(&found), &d, at("2025-04-01T00:00:00Z")),
            Err(format!("attestation {CUSTOM} (condition `{FRESH}`): condition is false"))
        );
        // A condition over a field the predicate does not have cannot be evaluated: refused.
        let (auths, reqs) = policy("cody@soyland.com", &[(CUSTOM, Some("predicate.scanner.result == 1"))]);
        let err = judge(&reqs, &auths, Some(&found), &d, at("2025-03-01T00:00:00Z")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "attestation {CUSTOM} (condition `predicate.scanner.result == 1`): condition failed: "
            )),
            "{err}"
        );
    }

    #[test]
    fn the_real_cosign_attest_bundle_is_refused_for_another_image_type_or_signer() {
        let now = at("2025-03-01T00:00:00Z");
        let found = Found::Present(kat());
        let (auths, reqs) = policy("cody@soyland.com", &[("custom", None)]);
        let other: Digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111".parse().unwrap();
        let describe = auths[0].describe();
        assert_eq!(
            judge(&reqs, &auths, Some(&found), &other, now),
            Err(format!(
                "attestation {CUSTOM}: no verified attestation of this type ({describe}: statement digest mismatch: \
                 attestation is for {KAT_DIGEST} not {other})"
            ))
        );
        // Verified, but not the predicate type required.
        let d: Digest = KAT_DIGEST.parse().unwrap();
        let (auths, reqs) = policy("cody@soyland.com", &[("slsaprovenance1", None)]);
        assert_eq!(
            judge(&reqs, &auths, Some(&found), &d, now),
            Err("attestation https://slsa.dev/provenance/v1: no attestation of this type found".into())
        );
        // Signed by someone else than the policy trusts.
        let (auths, reqs) = policy("release@acme.example", &[("custom", None)]);
        let err = judge(&reqs, &auths, Some(&found), &d, now).unwrap_err();
        assert!(err.contains("certificate identity cody@soyland.com does not match release@acme.example"), "{err}");
        // Nothing found at all.
        let absent = Found::Absent("no tag sha256-7321.att in repo; no attestation bundle referrer".into());
        assert_eq!(
            judge(&reqs, &auths, Some(&absent), &d, now),
            Err(format!(
                "attestation {CUSTOM}: no verified attestation of this type (no tag sha256-7321.att in repo; no \
                 attestation bundle referrer)"
            ))
        );
    }

    #[test]
    fn every_requirement_must_be_met() {
        let now = at("2025-03-01T00:00:00Z");
        let d: Digest = KAT_DIGEST.parse().unwrap();
        let found = Found::Present(kat());
        let (auths, reqs) = policy("cody@soyland.com", &[("custom", None), ("vuln", None)]);
        assert_eq!(
            judge(&reqs, &auths, Some(&found), &d, now),
            Err("attestation https://cosign.sigstore.dev/attestation/vuln/v1: no attestation of this type found".into())
        );
    }

    #[test]
    fn bad_attestation_tables_are_config_problems_with_their_key() {
        let (mut p, mut c) = crate::config::policy_fragment(std::path::Path::new("/nonexistent"), "");
        p.attestation = vec![
            RawAttestation { predicate_type: "slsa".into(), condition: None },
            RawAttestation { predicate_type: "vuln".into(), condition: Some("predicate.x ==".into()) },
        ];
        assert!(requirements(&p, &mut c).is_empty());
        let got: Vec<(&str, &str)> = c.problems.iter().map(|p| (p.key.as_str(), p.message.as_str())).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "policy[0].attestation[0].predicate_type");
        assert_eq!(got[0].1, "\"slsa\" is neither a predicate type URI nor a cosign --type name");
        assert_eq!(got[1].0, "policy[0].attestation[1].condition");
        assert!(got[1].1.starts_with("is not valid CEL"), "{}", got[1].1);
        assert_eq!(got[2].0, "policy[0].attestation");
    }
}
