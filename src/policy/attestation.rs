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
    if !out.is_empty() && p.cosign_keys.is_empty() && p.cosign_certificates.is_empty() {
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
