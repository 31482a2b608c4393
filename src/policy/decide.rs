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
    /// upstream requests (at the price of judging the `.sig` layers twice on
    /// a verdict-cache miss).
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
            if evaluate::bundles_could_help(self, subject, &ev, now) {
                ev.bundles = Some(evidence::bundles(reg, sig_repo, digest).await?);
            }
        }
        if self.notation.is_some() {
            ev.notation = Some(evidence::notation(reg, subject.repo, digest).await?);
        }
        Ok(evaluate::judge(self, subject, &ev, now))
    }
}
