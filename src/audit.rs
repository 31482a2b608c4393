//! The audit trail: one JSON line per decision (allow, deny, or audit-deny:
//! what an audit-mode policy let through), and the one path by which a
//! refusal becomes an error.
//!
//! Every refusal a client sees passes through [`refuse`] (or
//! [`refuse_outside_scope`], [`refuse_unknown_registry`]), which writes the
//! audit line and counts the decision before the error exists, so the audit
//! trail and the error body carry the same words. The schema is in the
//! README, "Read a refusal".
//!
//! Who asked (the client address) and where lines go (the mirror's
//! [`AuditLog`]) are per request, set once by `server::handle` as a
//! task-local [`Scope`]. Refusals are made deep inside the tag guard, the
//! mirror and the scope guard; threading the client through each of those
//! signatures would tie every one of them to HTTP. What was decided is still
//! passed explicitly: only the "who asked, write where" context is ambient.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;

use crate::error::Error;
use crate::metrics::{DecisionLabels, METRICS};
use crate::oci::{Digest, ManifestRef};
use crate::policy::{Scheme, Verdict};
use crate::upstream::UpstreamError;

/// Where audit lines go: stdout (the default, for container log collectors)
/// or a file opened for append on first use.
pub struct AuditLog {
    path: Option<PathBuf>,
    /// The open file; `None` until the first line, and again after a write
    /// failed so the next line retries the open (a rotated or remounted file).
    file: Mutex<Option<File>>,
}

impl AuditLog {
    /// `None` for stdout.
    pub fn new(path: Option<PathBuf>) -> AuditLog {
        AuditLog { path, file: Mutex::new(None) }
    }

    /// Writes one line. A failure to write is logged, never a reason to
    /// refuse or serve differently: the decision was made and is also in
    /// the process log.
    fn write(&self, line: &[u8]) {
        let Some(path) = &self.path else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line).and_then(|()| out.flush());
            return;
        };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => *file = Some(f),
                Err(e) => return tracing::error!("cannot open the audit log {}: {e}", path.display()),
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(line) {
                tracing::error!("cannot write the audit log {}: {e}", path.display());
                *file = None;
            }
        }
    }
}

/// Who is asking, and where their decisions are written.
#[derive(Clone)]
pub struct Scope {
    pub client: Option<SocketAddr>,
    pub log: Arc<AuditLog>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` (one request) with `scope` as its audit context.
pub async fn scoped<F: std::future::Future>(scope: Scope, f: F) -> F::Output {
    SCOPE.scope(scope, f).await
}

/// Outside a request (the `verify` command, unit tests) lines go to stdout
/// with no client: a decision is never dropped for want of a scope.
static UNSCOPED: LazyLock<Arc<AuditLog>> = LazyLock::new(|| Arc::new(AuditLog::new(None)));

/// What a decision was about. `name` is how refusal messages name it, word
/// for word as clients have always seen them; the other fields are the
/// audit line's, `None` where the request did not get that far.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub name: String,
    pub registry: Option<String>,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Subject {
    /// `<registry>/<repo>` asked for by `reference`, before a digest is known.
    pub fn request(registry: &str, repo: &str, reference: &ManifestRef) -> Subject {
        let (tag, digest) = match reference {
            ManifestRef::Tag(t) => (Some(t.clone()), None),
            ManifestRef::Digest(d) => (None, Some(d.to_string())),
        };
        Subject {
            name: format!("{registry}/{repo}{}", reference.suffix()),
            registry: Some(registry.into()),
            repository: Some(repo.into()),
            tag,
            digest,
        }
    }

    /// A manifest resolved to `digest`: named `<registry>/<repo>@<digest>`.
    pub fn manifest(registry: &str, repo: &str, reference: &ManifestRef, digest: &Digest) -> Subject {
        Subject {
            name: format!("{registry}/{repo}@{digest}"),
            registry: Some(registry.into()),
            repository: Some(repo.into()),
            tag: match reference {
                ManifestRef::Tag(t) => Some(t.clone()),
                ManifestRef::Digest(_) => None,
            },
            digest: Some(digest.to_string()),
        }
    }

    /// A blob of `<registry>/<repo>`.
    pub fn blob(registry: &str, repo: &str, digest: &Digest) -> Subject {
        Subject::manifest(registry, repo, &ManifestRef::Digest(digest.clone()), digest)
    }
}

/// Logs and counts a refusal, then returns the error the client gets.
pub fn refuse(policy: Option<String>, reason: String, subject: Subject) -> Error {
    refuse_recalled(policy, reason, subject, false)
}

/// [`refuse`] for a denial that may have come from the verdict cache.
pub fn refuse_recalled(policy: Option<String>, reason: String, subject: Subject, cached: bool) -> Error {
    let verdict = Verdict::Deny { policy: policy.clone(), reason: reason.clone() };
    log_decision(&verdict, &subject, cached);
    let message = verdict.refusal_message(&subject.name).unwrap_or_default();
    Error::Denied { message, policy, image: subject.name, reason }
}

/// Refuses a request for a repository no policy covers. `what` follows the
/// repository name: `:tag`, `@digest`, or a word such as `tags/list`.
pub fn refuse_outside_scope(registry: &str, repo: &str, what: &str) -> Error {
    let sep = if what.starts_with(['@', ':']) { "" } else { " " };
    let subject = Subject {
        name: format!("{registry}/{repo}{sep}{what}"),
        registry: Some(registry.into()),
        repository: Some(repo.into()),
        tag: what.strip_prefix(':').map(str::to_string),
        digest: what.strip_prefix('@').or_else(|| what.strip_prefix("referrers/")).map(str::to_string),
    };
    refuse(None, format!("no policy's scope matches {registry}/{repo}"), subject)
}

/// Refuses a registry that is not a configured upstream (`ns=` names
/// nothing we know). Nothing was contacted; the refusal is still a decision,
/// logged and counted like every other, with no policy. `what` is the
/// subject of the message ("registry \"x\"", or "the request").
pub fn refuse_unknown_registry(ns: Option<&str>, what: String, reason: &str) -> Error {
    let verdict = Verdict::Deny { policy: None, reason: reason.to_string() };
    let subject = Subject { name: what, registry: ns.map(str::to_string), ..Subject::default() };
    log_decision(&verdict, &subject, false);
    Error::UnknownRegistry(verdict.refusal_message(&subject.name).unwrap_or_default())
}

/// Writes the audit line for a manifest request that failed for want of an
/// answer (upstream down, the pin store unavailable): nothing was served,
/// and the operator reading why a pull failed finds it here too. Not a
/// verdict, so not cached; counted as a denial under the policy.
/// A manifest upstream does not have is not a refusal, and a refusal was
/// logged already.
pub fn log_failure(policy: &str, subject: &Subject, err: &Error) {
    let worth_a_line = match err {
        Error::Upstream { err, .. } => !matches!(**err, UpstreamError::NotFound),
        Error::Pins(_) | Error::ManifestTimeout { .. } => true,
        _ => false,
    };
    if worth_a_line {
        let reason = err.cannot_decide();
        log_decision(&Verdict::Deny { policy: Some(policy.to_string()), reason }, subject, false);
    }
}

/// One audit line, as documented in the README ("Read a refusal").
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: Option<String>,
    registry: Option<&'a str>,
    repository: Option<&'a str>,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
    verdict: &'static str,
    policy: Option<&'a str>,
    scheme: &'static str,
    signer: Option<&'a str>,
    reason: &'a str,
    /// The refusal message the client got, word for word.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    cached: bool,
}

/// One line per decision: the audit trail of what was served and refused,
/// the process log's decision line, and the decision counter. `cached` says
/// whether the verdict was recalled rather than verified for this request.
pub fn log_decision(v: &Verdict, subject: &Subject, cached: bool) {
    let (verdict, policy, scheme, signer, reason) = match v {
        Verdict::Allow { policy, by, scheme, signer, would_refuse, .. } => match would_refuse {
            Some(r) => ("audit-deny", Some(policy.as_str()), *scheme, signer.as_deref(), r.as_str()),
            None => ("allow", Some(policy.as_str()), *scheme, signer.as_deref(), by.as_str()),
        },
        Verdict::Deny { policy, reason } => ("deny", policy.as_deref(), Scheme::None, None, reason.as_str()),
    };
    let label_scheme = if verdict == "deny" { "-" } else { scheme.as_str() };
    METRICS
        .decisions
        .get_or_create(&DecisionLabels {
            decision: verdict,
            policy: policy.unwrap_or("-").to_string(),
            scheme: label_scheme,
        })
        .inc();
    let message = v.refusal_message(&subject.name);
    let image = &subject.name;
    let p = policy.unwrap_or("-");
    // An audit-deny was served: its message says allow, its decision field
    // says what audit mode let through.
    match (&message, v) {
        // A recalled allow is the bulk of a fleet's traffic and says nothing
        // the audit line below and the first (verified) allow did not: at
        // info it cost a fifth of a cached request's instructions (callgrind).
        // Refusals, audit-denies and fresh verifications stay at info.
        (None, Verdict::Allow { by, .. }) if cached => {
            tracing::debug!(target: "sigmirror::decision", decision = verdict, policy = p, %image, by = %by, cached, "allow {image}")
        }
        (None, Verdict::Allow { by, .. }) => {
            tracing::info!(target: "sigmirror::decision", decision = verdict, policy = p, %image, by = %by, cached, "allow {image}")
        }
        (m, _) => {
            let m = m.as_deref().unwrap_or_default();
            tracing::info!(target: "sigmirror::decision", decision = verdict, policy = p, %image, cached, "{m}")
        }
    }
    let (client, log) = SCOPE
        .try_with(|s| (s.client.map(|a| a.to_string()), s.log.clone()))
        .unwrap_or_else(|_| (None, UNSCOPED.clone()));
    let line = Line {
        time: now_rfc3339(),
        client,
        registry: subject.registry.as_deref(),
        repository: subject.repository.as_deref(),
        tag: subject.tag.as_deref(),
        digest: subject.digest.as_deref(),
        verdict,
        policy,
        scheme: scheme.as_str(),
        signer,
        reason,
        message,
        cached,
    };
    match serde_json::to_vec(&line) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            log.write(&bytes);
        }
        Err(e) => tracing::error!("cannot encode an audit line: {e}"),
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_refusal_writes_one_line_with_the_client_and_the_words_the_client_gets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let scope =
            Scope { client: Some("127.0.0.9:4321".parse().unwrap()), log: Arc::new(AuditLog::new(Some(path.clone()))) };
        let err = scoped(scope, async { refuse_outside_scope("r.test", "team/app", ":v1") }).await;
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        assert_eq!(l["client"], "127.0.0.9:4321");
        assert_eq!(
            (l["registry"].as_str(), l["repository"].as_str(), l["tag"].as_str()),
            (Some("r.test"), Some("team/app"), Some("v1"))
        );
        assert_eq!(
            (l["verdict"].as_str(), l["scheme"].as_str(), l["cached"].as_bool()),
            (Some("deny"), Some("none"), Some(false))
        );
        assert!(l["policy"].is_null() && l["digest"].is_null() && l["signer"].is_null(), "{l}");
        assert_eq!(l["reason"], "no policy's scope matches r.test/team/app");
        assert_eq!(l["message"].as_str(), Some(err.to_string().as_str()));
        let t = l["time"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok() && t.ends_with('Z'),
            "{t}"
        );
    }
}
