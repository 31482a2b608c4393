//! The decision log: one line per manifest decision, allow or deny, and the
//! one path by which a refusal becomes an error.
//!
//! Every refusal a client sees passes through [`refuse`], which logs and
//! counts it before the error exists, so the audit trail and the error body
//! carry the same words.

use crate::error::Error;
use crate::metrics::{DecisionLabels, METRICS};
use crate::policy::Verdict;

/// Logs and counts a refusal, then returns the error the client gets.
pub fn refuse(policy: Option<String>, reason: String, image: String, reference: &str) -> Error {
    let verdict = Verdict::Deny { policy: policy.clone(), reason: reason.clone() };
    log_decision(&verdict, &image, reference);
    let message = verdict.refusal_message(&image).unwrap_or_default();
    Error::Denied { message, policy, image, reason }
}

/// Refuses a request for a repository no policy covers. `what` follows the
/// repository name: `:tag`, `@digest`, or a word such as `tags/list`.
pub fn refuse_outside_scope(registry: &str, repo: &str, what: &str) -> Error {
    let sep = if what.starts_with(['@', ':']) { "" } else { " " };
    let image = format!("{registry}/{repo}{sep}{what}");
    refuse(None, format!("no policy's scope matches {registry}/{repo}"), image, what)
}

/// Refuses a registry that is not a configured upstream (`ns=` names
/// nothing we know). Nothing was contacted; the refusal is still a decision,
/// logged and counted like every other, with no policy. `what` is the
/// subject of the message ("registry \"x\"", or "the request").
pub fn refuse_unknown_registry(what: String, reason: &str) -> Error {
    let verdict = Verdict::Deny { policy: None, reason: reason.to_string() };
    log_decision(&verdict, &what, "-");
    Error::UnknownRegistry(verdict.refusal_message(&what).unwrap_or_default())
}

/// One line per decision: the audit trail of what was served and refused.
pub fn log_decision(v: &Verdict, image: &str, reference: &str) {
    let (decision, policy) = match v {
        Verdict::Allow { policy, .. } => ("allow", policy.clone()),
        Verdict::Deny { policy, .. } => ("deny", policy.clone().unwrap_or_else(|| "-".into())),
    };
    METRICS.decisions.get_or_create(&DecisionLabels { decision, policy }).inc();
    match v {
        Verdict::Allow { policy, by, .. } => {
            tracing::info!(target: "sigmirror::decision", decision = "allow", %policy, %image, reference = %reference, by = %by, "allow {image}")
        }
        Verdict::Deny { policy, .. } => {
            let message = v.refusal_message(image).unwrap_or_default();
            let policy = policy.as_deref().unwrap_or("-");
            tracing::info!(target: "sigmirror::decision", decision = "deny", %policy, %image, reference = %reference, "{message}")
        }
    }
}
