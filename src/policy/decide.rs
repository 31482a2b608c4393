//! A decision is gathering then judging: what `evidence` fetches for this
//! policy's authorities, judged by `evaluate`. Kept apart from both so that
//! neither the I/O nor the judgement imports the other.

use crate::upstream::UpstreamError;

use super::evidence::{self, Evidence, Registry};
use super::{evaluate, Policy, Subject, Verdict};

impl Policy {
    /// Gathers the evidence this policy's authorities need through `reg`, then
    /// judges it. Bundles are fetched only when the `.sig` tag left an
    /// authority open, so an image signed the classic way costs no extra
    /// upstream requests.
    pub async fn evaluate(
        &self,
        reg: &impl Registry,
        subject: &Subject<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Verdict, UpstreamError> {
        let digest = &subject.manifest.digest;
        let mut ev = Evidence::default();
        if !self.cosign.is_empty() {
            let sig_repo = self.signature_repo(subject);
            ev.signature_tag = Some(evidence::signature_tag(reg, sig_repo, digest).await?);
        }
        // Judged once here and reused by the verdict below.
        let tag = evaluate::after_signature_tag(self, subject, &ev, now);
        if !self.cosign.is_empty() && tag.bundles_could_help() {
            ev.bundles = Some(evidence::bundles(reg, self.signature_repo(subject), digest).await?);
        }
        if !self.attestations.is_empty() {
            let wanted: Vec<&str> = self.attestations.iter().map(|a| a.predicate_type.as_str()).collect();
            ev.attestations = Some(evidence::attestations(reg, self.signature_repo(subject), digest, &wanted).await?);
        }
        if self.notation.is_some() {
            ev.notation = Some(evidence::notation(reg, subject.repo, digest).await?);
        }
        Ok(evaluate::judge_after(self, subject, &ev, tag, now))
    }
}
