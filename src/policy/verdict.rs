//! Verdicts and the combinator that makes one from per-authority results.
//!
//! A `Verdict` is a value: cached by `cache`, logged by `audit`, and turned
//! into a response by `server`. An allow says whether it *vouches*: only a
//! real verification under an enforcing policy pins tags and vouches for an
//! index's children, so nothing downstream has to look at the policy's mode
//! again.

use serde::Serialize;

use crate::config::Require;

/// The signature format that satisfied a policy: a bounded set, so it can be
/// a metric label as well as an audit field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Cosign,
    Notation,
    /// Nothing was verified: an audit-mode allow of what would be refused,
    /// or a Notation statement at level `skip`.
    None,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Cosign => "cosign",
            Scheme::Notation => "notation",
            Scheme::None => "none",
        }
    }
}

/// What satisfied one authority: the words for the log, the format, and who
/// signed (a key fingerprint, a certificate's subject and SAN, or a
/// Notation signer's subject), for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Satisfied {
    pub by: String,
    pub scheme: Scheme,
    pub signer: Option<String>,
}

/// The decision for one manifest under one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Verdict {
    Allow {
        policy: String,
        /// What satisfied the policy, for the log and `verify`.
        by: String,
        /// True when signatures were verified under an enforcing policy;
        /// false for an audit-mode allow, which pins and vouches for nothing.
        vouches: bool,
        scheme: Scheme,
        /// Who signed, as far as the verifier could name them.
        signer: Option<String>,
        /// The refusal an audit-mode policy let through (an `audit-deny`);
        /// `None` for what verified.
        would_refuse: Option<String>,
    },
    Deny {
        /// `None` when no policy's scope matched.
        policy: Option<String>,
        reason: String,
    },
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }

    /// Whether this allow may pin a tag and vouch for an index's children.
    pub fn vouches(&self) -> bool {
        matches!(self, Verdict::Allow { vouches: true, .. })
    }

    /// The refusal message clients and the audit log both get.
    pub fn refusal_message(&self, image: &str) -> Option<String> {
        match self {
            Verdict::Allow { .. } => None,
            Verdict::Deny { policy: Some(p), reason } => Some(format!("policy {p} refused {image}: {reason}")),
            Verdict::Deny { policy: None, reason } => Some(format!("sigmirror refused {image}: {reason}")),
        }
    }
}

/// One authority's outcome: what satisfied it, or why not.
pub type AuthorityResult = Result<Satisfied, String>;

/// The any/all combinator over per-authority results. An empty list refuses:
/// no authority never means "allow".
pub fn combine(policy: &str, require: Require, results: Vec<AuthorityResult>) -> Verdict {
    let deny = |reason: String| Verdict::Deny { policy: Some(policy.to_string()), reason };
    if results.is_empty() {
        return deny("no signature verifier configured".into());
    }
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let ok: Vec<Satisfied> = ok.into_iter().filter_map(Result::ok).collect();
    let failed: Vec<String> = failed.into_iter().filter_map(Result::err).collect();
    // One scheme per verdict, for a bounded label: the first satisfied
    // authority's (cosign authorities come first). Every signer is named.
    let allow = |sep: &str| {
        let signers: Vec<&str> = ok.iter().filter_map(|s| s.signer.as_deref()).collect();
        Verdict::Allow {
            policy: policy.into(),
            by: ok.iter().map(|s| s.by.as_str()).collect::<Vec<_>>().join(sep),
            vouches: true,
            scheme: ok.first().map_or(Scheme::None, |s| s.scheme),
            signer: (!signers.is_empty()).then(|| signers.join("; ")),
            would_refuse: None,
        }
    };
    // Distinct by who signed: two config entries for the same key are one authority.
    let mut distinct: Vec<&str> = ok.iter().map(|s| s.signer.as_deref().unwrap_or(&s.by)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    match require {
        Require::Any if !ok.is_empty() => allow(", "),
        Require::All if failed.is_empty() => allow(" and "),
        Require::Count(n) if distinct.len() >= n => allow(" and "),
        Require::Any => deny(summarize(&failed)),
        Require::All => deny(format!("require = \"all\" and {}", summarize(&failed))),
        Require::Count(n) => {
            let reasons = if failed.is_empty() { String::new() } else { format!(": {}", summarize(&failed)) };
            deny(format!("require = {{ count = {n} }} and {} distinct authorities verified{reasons}", distinct.len()))
        }
    }
}

/// Joins distinct reasons, keeping messages short enough for a log line.
pub fn summarize(reasons: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for r in reasons {
        if !seen.contains(&r.as_str()) {
            seen.push(r);
        }
    }
    let shown: Vec<&str> = seen.iter().take(4).copied().collect();
    let mut s = shown.join("; ");
    if seen.len() > shown.len() {
        s.push_str(&format!("; and {} more", seen.len() - shown.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> AuthorityResult {
        Ok(Satisfied { by: s.into(), scheme: Scheme::Cosign, signer: Some(format!("signer of {s}")) })
    }
    fn no(s: &str) -> AuthorityResult {
        Err(s.into())
    }

    #[test]
    fn any_allows_when_one_authority_is_satisfied() {
        assert!(combine("p", Require::Any, vec![ok("a")]).is_allow());
        assert!(combine("p", Require::Any, vec![no("a"), ok("b")]).is_allow());
        assert!(combine("p", Require::Any, vec![ok("a"), ok("b")]).is_allow());
        let v = combine("p", Require::Any, vec![no("key a: wrong"), no("key b: wrong too")]);
        assert_eq!(v, Verdict::Deny { policy: Some("p".into()), reason: "key a: wrong; key b: wrong too".into() });
    }

    #[test]
    fn all_requires_every_authority() {
        assert!(combine("p", Require::All, vec![ok("a"), ok("b")]).is_allow());
        let v = combine("p", Require::All, vec![ok("a"), no("notation: expired")]);
        assert_eq!(
            v,
            Verdict::Deny { policy: Some("p".into()), reason: "require = \"all\" and notation: expired".into() }
        );
        assert!(!combine("p", Require::All, vec![no("a"), no("b")]).is_allow());
    }

    #[test]
    fn count_needs_that_many_distinct_signers() {
        let two = Require::Count(2);
        assert!(combine("p", two, vec![ok("a"), ok("b")]).is_allow());
        assert!(combine("p", two, vec![ok("a"), no("b"), ok("c")]).is_allow());
        let v = combine("p", two, vec![ok("a"), no("key b: untrusted")]);
        assert_eq!(
            v,
            Verdict::Deny {
                policy: Some("p".into()),
                reason: "require = { count = 2 } and 1 distinct authorities verified: key b: untrusted".into()
            }
        );
        // The same key listed twice is one authority.
        let same = |by: &str| Ok(Satisfied { by: by.into(), scheme: Scheme::Cosign, signer: Some("sha256:k".into()) });
        let v = combine("p", two, vec![same("key a.pub"), same("key a-copy.pub")]);
        assert_eq!(
            v,
            Verdict::Deny {
                policy: Some("p".into()),
                reason: "require = { count = 2 } and 1 distinct authorities verified".into()
            }
        );
    }

    #[test]
    fn an_empty_authority_list_fails_closed_for_any_and_all() {
        for r in [Require::Any, Require::All, Require::Count(1)] {
            let v = combine("p", r, vec![]);
            assert_eq!(
                v,
                Verdict::Deny { policy: Some("p".into()), reason: "no signature verifier configured".into() }
            );
        }
    }

    #[test]
    fn an_allow_carries_the_scheme_and_every_signer() {
        let notation = Ok(Satisfied { by: "n".into(), scheme: Scheme::Notation, signer: Some("CN=n".into()) });
        let v = combine("p", Require::All, vec![ok("a"), notation]);
        let Verdict::Allow { scheme, signer, by, would_refuse, .. } = v else { panic!("{v:?}") };
        assert_eq!((scheme, signer.as_deref(), by.as_str()), (Scheme::Cosign, Some("signer of a; CN=n"), "a and n"));
        assert_eq!(would_refuse, None);
    }

    #[test]
    fn a_combined_allow_vouches() {
        assert!(combine("p", Require::Any, vec![ok("a")]).vouches());
        assert!(!combine("p", Require::Any, vec![no("a")]).vouches());
    }

    #[test]
    fn refusal_messages_name_the_policy_image_and_reason() {
        let v = Verdict::Deny { policy: Some("team-a".into()), reason: "no cosign signature found".into() };
        assert_eq!(
            v.refusal_message("r/x@sha256:1").unwrap(),
            "policy team-a refused r/x@sha256:1: no cosign signature found"
        );
        let v = Verdict::Deny { policy: None, reason: "no policy's scope matches r/x".into() };
        assert_eq!(v.refusal_message("r/x:v1").unwrap(), "sigmirror refused r/x:v1: no policy's scope matches r/x");
    }
}
