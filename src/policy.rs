//! Policies: which images need which signatures, and the one decision every
//! manifest goes through before a byte of it is served.
//!
//! A policy matches images by scope globs over `<registry>/<repository>`.
//! When several policies match, the **most specific** wins: the one whose
//! matching glob has the longest literal prefix (the characters before its
//! first wildcard). On a tie, the policy listed first in the file wins.
//! No matching policy means refuse.
//!
//! A policy lists *authorities*: each cosign key, each cosign certificate
//! entry, and Notation's trust policy count as one. With `require = "any"`
//! (the default) one satisfied authority allows the image; with
//! `require = "all"` every one must be satisfied. A policy with no authority
//! refuses everything: an empty list never means "allow".
//!
//! The outcome is a `Verdict` value, which `cache` stores and `server` turns
//! into a response. Only infrastructure failures (upstream down, timeout) are
//! `Err`, so they are never mistaken for, or cached as, a denial.

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{Checker, Mode, OnTagMove, RawConfig, RawPolicy, Require};
use crate::oci::{media, Digest, ManifestRef};
use crate::upstream::{Manifest, UpstreamClient, UpstreamError};
use crate::verify::bundle;
use crate::verify::cosign::{self, CosignAuthority, Refusal, SignatureLayer};
use crate::verify::notation::{self, NotationVerifier};

/// Cosign writes one layer per signature; more than this is not a signature
/// manifest anyone made by hand, and we stop before fetching them all.
pub const MAX_SIGNATURE_LAYERS: usize = 64;
/// A simple-signing payload is a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// Notation signatures examined per image.
pub const MAX_NOTATION_SIGNATURES: usize = 16;
/// A Notation envelope with a certificate chain and a timestamp is a few KiB.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Sigstore bundle referrers (cosign format C) examined per image.
pub const MAX_BUNDLE_REFERRERS: usize = 16;

pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// The `artifactType` of a cosign v3 signature referrer, and the media type of its one layer.
pub const BUNDLE_ARTIFACT_TYPE: &str = bundle::BUNDLE_MEDIA_TYPE;
/// The referrer annotation cosign copies the statement's predicateType into. Unsigned, so it is only
/// used to skip attestations before fetching them; the signed statement is what counts.
const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The decision for one manifest under one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Verdict {
    Allow {
        policy: String,
        /// What satisfied the policy, for the log and `verify`.
        by: String,
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

    /// The refusal message clients and the audit log both get.
    pub fn refusal_message(&self, image: &str) -> Option<String> {
        match self {
            Verdict::Allow { .. } => None,
            Verdict::Deny { policy: Some(p), reason } => Some(format!("policy {p} refused {image}: {reason}")),
            Verdict::Deny { policy: None, reason } => Some(format!("sigmirror refused {image}: {reason}")),
        }
    }
}

/// One authority's outcome; private to the combinator.
type AuthorityResult = Result<String, String>;

/// Why one cosign authority is not (yet) satisfied.
#[derive(Default)]
struct Unsatisfied {
    /// One per piece of evidence.
    reasons: Vec<String>,
    /// A signature verified with the authority but named another repository.
    /// Then no other format, and no bundle naming no repository, may satisfy
    /// the authority.
    wrong_repository: bool,
}

impl Unsatisfied {
    fn add(&mut self, prefix: &str, r: Refusal) {
        self.wrong_repository |= matches!(r, Refusal::WrongRepository(_));
        self.reasons.push(format!("{prefix}{r}"));
    }
}

/// One piece of cosign evidence found for an image, in either format.
enum CosignEvidence {
    /// A layer of the `sha256-<hex>.sig` manifest (format A).
    Layer(SignatureLayer),
    /// A Sigstore bundle from a referrer manifest (format C).
    Bundle(Vec<u8>),
    /// Something that claimed to be a signature but could not be fetched or read: a reason every
    /// authority reports, never a satisfied authority.
    Unusable(String),
}

/// A validated policy.
pub struct Policy {
    pub index: usize,
    pub name: String,
    scope: Vec<(String, GlobMatcher)>,
    pub mode: Mode,
    pub require: Require,
    pub cosign: Vec<CosignAuthority>,
    pub notation: Option<Arc<NotationVerifier>>,
    pub signature_repository: Option<String>,
    pub docker_reference: Option<String>,
    /// Accept cosign bundles whose statement names no repository (what cosign v3 writes). Off by
    /// default: such a bundle can be copied in from any other repository.
    pub dangerous_accept_unbound_bundles: bool,
    pub immutable_tags: Vec<(bool, GlobMatcher)>,
    pub on_tag_move: OnTagMove,
    /// sha256 over the policy's settings and every byte of its trust
    /// material. Part of every verdict cache key, so editing either can never
    /// reuse an old verdict.
    pub fingerprint: [u8; 32],
}

/// All policies of a config, plus what they share.
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// Validates every policy, recording every problem in `c`.
    pub fn build(raw: &RawConfig, c: &mut Checker) -> PolicySet {
        let notation = raw.notation.as_ref().and_then(|n| NotationVerifier::load(n, c)).map(Arc::new);
        let mut names = BTreeMap::new();
        let mut policies = Vec::new();
        if raw.policy.is_empty() {
            c.problem(
                "policy",
                "no [[policy]] is configured, so every image would be refused",
                "add a [[policy]] with a name, scope and authorities",
            );
        }
        for (i, p) in raw.policy.iter().enumerate() {
            if let Some(first) = names.insert(p.name.clone(), i) {
                c.problem(
                    format!("policy[{i}].name"),
                    format!("{:?} is also the name of policy[{first}]", p.name),
                    "give every policy a unique name; refusals and logs name it",
                );
            }
            if p.name.is_empty() || p.name.len() > 100 {
                c.problem(
                    format!("policy[{i}].name"),
                    "must be 1 to 100 characters",
                    "name the policy after the team or image set it guards",
                );
            }
            policies.push(build_policy(i, p, notation.clone(), c));
        }
        PolicySet { policies }
    }

    /// The policy that governs `<registry>/<repo>`: the most specific match.
    pub fn select(&self, registry: &str, repo: &str) -> Option<&Policy> {
        let name = format!("{registry}/{repo}");
        let mut best: Option<(usize, &Policy)> = None;
        for p in &self.policies {
            for (pattern, m) in &p.scope {
                if m.is_match(&name) {
                    let specificity = literal_prefix_len(pattern);
                    if best.is_none_or(|(s, _)| specificity > s) {
                        best = Some((specificity, p));
                    }
                }
            }
        }
        best.map(|(_, p)| p)
    }
}

fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len())
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    // `*` stays inside one path segment; `**` crosses segments.
    Ok(GlobBuilder::new(pattern).literal_separator(true).build()?.compile_matcher())
}

fn build_policy(i: usize, p: &RawPolicy, notation: Option<Arc<NotationVerifier>>, c: &mut Checker) -> Policy {
    let mut scope = Vec::new();
    if p.scope.is_empty() {
        c.problem(
            format!("policy[{i}].scope"),
            "is empty, so the policy matches nothing",
            "add globs such as \"docker.io/team-a/**\"",
        );
    }
    for (j, s) in p.scope.iter().enumerate() {
        if !s.contains('/') && !s.starts_with('*') {
            c.problem(
                format!("policy[{i}].scope[{j}]"),
                format!("{s:?} has no registry part"),
                "write <registry>/<repository glob>, for example \"ghcr.io/acme/**\"",
            );
        }
        match glob(s) {
            Ok(m) => scope.push((s.clone(), m)),
            Err(e) => c.problem(
                format!("policy[{i}].scope[{j}]"),
                format!("{s:?} is not a glob: {e}"),
                "use *, ** and ? wildcards",
            ),
        }
    }
    let mut immutable_tags = Vec::new();
    for (j, t) in p.immutable_tags.iter().enumerate() {
        let (negated, pat) = match t.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        match Glob::new(pat) {
            Ok(g) => immutable_tags.push((negated, g.compile_matcher())),
            Err(e) => c.problem(
                format!("policy[{i}].immutable_tags[{j}]"),
                format!("{t:?} is not a glob: {e}"),
                "use patterns like \"v*\" or \"!latest\"",
            ),
        }
    }
    if let Some(r) = &p.signature_repository {
        let segs: Vec<&str> = r.split('/').collect();
        if crate::oci::parse_route(&format!("/v2/{r}/tags/list")).is_err() || segs.is_empty() {
            c.problem(
                format!("policy[{i}].signature_repository"),
                format!("{r:?} is not a repository name"),
                "write a repository in the same registry, like \"acme/signatures\"",
            );
        }
    }
    let cosign = CosignAuthority::from_policy(i, p, c);
    if p.notation && notation.is_none() {
        c.problem(
            format!("policy[{i}].notation"),
            "is true but there is no [notation] table",
            "add [notation] with trust_policy and trust_store",
        );
    }
    let notation = if p.notation { notation } else { None };
    if p.dangerous_accept_unbound_bundles {
        tracing::warn!(
            policy = %p.name,
            "policy {} sets dangerous_accept_unbound_bundles: a cosign bundle whose statement names no repository \
             (as cosign v3 writes them) is accepted in every repository this policy covers, so an image signed for \
             another repository with a key this policy trusts can be copied here with its bundle and will be served",
            p.name
        );
    }

    let mut h = Sha256::new();
    h.update(serde_json::to_vec(p).unwrap_or_default());
    for a in &cosign {
        a.fingerprint(&mut h);
    }
    if let Some(n) = &notation {
        n.fingerprint(&mut h);
    }
    Policy {
        index: i,
        name: p.name.clone(),
        scope,
        mode: p.mode,
        require: p.require,
        cosign,
        notation,
        signature_repository: p.signature_repository.clone(),
        docker_reference: p.docker_reference.clone(),
        dangerous_accept_unbound_bundles: p.dangerous_accept_unbound_bundles,
        immutable_tags,
        on_tag_move: p.on_tag_move,
        fingerprint: h.finalize().into(),
    }
}

/// The image being decided on.
pub struct Subject<'a> {
    pub registry: &'a str,
    pub repo: &'a str,
    pub manifest: &'a Manifest,
}

impl Subject<'_> {
    pub fn image(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repo, self.manifest.digest)
    }
}

impl Policy {
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    pub fn authority_count(&self) -> usize {
        self.cosign.len() + usize::from(self.notation.is_some())
    }

    /// Whether `tag` falls under this policy's immutable tags: the last
    /// matching pattern decides, so `["*", "!latest"]` pins all but latest.
    pub fn is_immutable_tag(&self, tag: &str) -> bool {
        let mut pinned = false;
        for (negated, m) in &self.immutable_tags {
            if m.is_match(tag) {
                pinned = !negated;
            }
        }
        pinned
    }

    /// Verifies the subject against this policy's authorities, fetching the
    /// signatures it needs through `up`. Audit mode turns a denial into an
    /// allow that says what would have been refused.
    pub async fn evaluate(
        &self,
        up: &UpstreamClient,
        subject: &Subject<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Verdict, UpstreamError> {
        let verdict = self.verify(up, subject, now).await?;
        Ok(match (self.mode, verdict) {
            (Mode::Audit, Verdict::Deny { reason, .. }) => {
                Verdict::Allow { policy: self.name.clone(), by: format!("audit mode (would refuse: {reason})") }
            }
            (_, v) => v,
        })
    }

    async fn verify(
        &self,
        up: &UpstreamClient,
        subject: &Subject<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Verdict, UpstreamError> {
        if self.authority_count() == 0 {
            return Ok(
                self.deny("no signature verifier configured (the policy lists no cosign key, certificate or notation)")
            );
        }
        let mut results: Vec<AuthorityResult> = Vec::new();
        if !self.cosign.is_empty() {
            results.extend(self.check_cosign(up, subject, now).await?);
        }
        if let Some(n) = &self.notation {
            results.push(self.check_notation(n, up, subject, now).await?);
        }
        Ok(self.combine(results))
    }

    /// The any/all combinator. Kept apart so its truth table can be tested.
    fn combine(&self, results: Vec<AuthorityResult>) -> Verdict {
        combine(&self.name, self.require, results)
    }

    fn deny(&self, reason: impl Into<String>) -> Verdict {
        Verdict::Deny { policy: Some(self.name.clone()), reason: reason.into() }
    }

    fn expected_docker_reference(&self, s: &Subject<'_>) -> Option<String> {
        match self.docker_reference.as_deref() {
            Some("any") => None,
            Some(r) => Some(r.to_string()),
            None => Some(format!("{}/{}", s.registry, s.repo)),
        }
    }

    /// Every cosign authority's result. Format A (`.sig` tag) is looked at
    /// first; Sigstore bundle referrers (format C) only when an authority is
    /// left unsatisfied, so a signed image costs no extra upstream requests.
    /// Either format verifying satisfies an authority, with one exception: an
    /// authority for which a format A signature verified but named another
    /// repository is not looked up in bundles. That signature is evidence
    /// the image was copied here from elsewhere, and a bundle must not rescue
    /// it; the refusal keeps its repository reason.
    async fn check_cosign(
        &self,
        up: &UpstreamClient,
        subject: &Subject<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Vec<AuthorityResult>, UpstreamError> {
        let reference = self.expected_docker_reference(subject);
        let exp = cosign::Expectation { digest: &subject.manifest.digest, docker_reference: reference.as_deref(), now };
        let mut absent = Vec::new();
        let mut found = false;
        let mut outcomes: Vec<Result<String, Unsatisfied>> = match self.cosign_layers(up, subject).await? {
            Ok(layers) => {
                found = true;
                self.cosign.iter().map(|a| self.check_cosign_authority(a, &layers, &exp)).collect()
            }
            Err(note) => {
                absent.push(note);
                self.cosign.iter().map(|_| Err(Unsatisfied::default())).collect()
            }
        };
        // Unsatisfied and not blocked by a signature naming another repository.
        let open = |o: &Result<String, Unsatisfied>| matches!(o, Err(u) if !u.wrong_repository);
        if outcomes.iter().any(open) {
            match self.cosign_bundles(up, subject).await? {
                Ok(bundles) => {
                    found = true;
                    for (auth, outcome) in self.cosign.iter().zip(outcomes.iter_mut()) {
                        if !open(outcome) {
                            continue;
                        }
                        match self.check_cosign_authority(auth, &bundles, &exp) {
                            Ok(by) => *outcome = Ok(by),
                            Err(more) => {
                                if let Err(u) = outcome {
                                    u.reasons.extend(more.reasons);
                                    u.wrong_repository |= more.wrong_repository;
                                }
                            }
                        }
                    }
                }
                Err(note) => absent.push(note),
            }
        }
        if !found {
            let reason = format!("no cosign signature found ({})", absent.join("; "));
            return Ok(self.cosign.iter().map(|a| Err(format!("{}: {reason}", a.describe()))).collect());
        }
        Ok(self
            .cosign
            .iter()
            .zip(outcomes)
            .map(|(a, o)| o.map_err(|u| format!("{}: {}", a.describe(), summarize(&u.reasons))))
            .collect())
    }

    /// The repository cosign signatures live in: `signature_repository`
    /// (cosign's `COSIGN_REPOSITORY`) or the image's own.
    fn signature_repo<'a>(&'a self, subject: &Subject<'a>) -> &'a str {
        self.signature_repository.as_deref().unwrap_or(subject.repo)
    }

    /// Fetches the cosign signature layers (format A: tag `sha256-<hex>.sig`).
    /// The inner `Err` says why there is nothing to verify (for the "no cosign
    /// signature found" reason); a malformed manifest is `Unusable` evidence;
    /// the outer `Err` is an upstream failure.
    async fn cosign_layers(
        &self,
        up: &UpstreamClient,
        subject: &Subject<'_>,
    ) -> Result<Result<Vec<CosignEvidence>, String>, UpstreamError> {
        let unusable = |reason: String| Ok(Ok(vec![CosignEvidence::Unusable(reason)]));
        let sig_repo = self.signature_repo(subject);
        let tag = ManifestRef::Tag(subject.manifest.digest.cosign_signature_tag());
        let accept = format!("{},{}", media::OCI_MANIFEST, media::DOCKER_MANIFEST);
        let Some(m) = up.optional_manifest(sig_repo, &tag, &accept).await? else {
            return Ok(Err(format!("no tag {tag} in {sig_repo}")));
        };
        let parsed: ImageManifest = match serde_json::from_slice(&m.bytes) {
            Ok(p) => p,
            Err(e) => return unusable(format!("signature manifest {tag} is malformed: {e}")),
        };
        if parsed.layers.len() > MAX_SIGNATURE_LAYERS {
            return unusable(format!(
                "signature manifest {tag} has {} layers, more than the {MAX_SIGNATURE_LAYERS} sigmirror examines",
                parsed.layers.len()
            ));
        }
        let mut layers = Vec::new();
        for l in parsed.layers {
            if l.media_type != COSIGN_SIMPLESIGNING {
                continue;
            }
            let Ok(digest) = l.digest.parse::<Digest>() else {
                return unusable(format!("signature layer digest {:?} is invalid", l.digest));
            };
            if l.size > MAX_PAYLOAD_BYTES as u64 {
                return unusable(format!(
                    "signature payload {digest} is {} bytes, more than {MAX_PAYLOAD_BYTES}",
                    l.size
                ));
            }
            let payload = match up.small_blob(sig_repo, &digest, MAX_PAYLOAD_BYTES).await {
                Ok(p) => p,
                // A payload whose bytes do not hash to its descriptor is a
                // tampered signature, not an outage.
                Err(UpstreamError::DigestMismatch { .. }) => {
                    return unusable(format!("payload digest mismatch for {digest}"))
                }
                Err(UpstreamError::NotFound) => {
                    return unusable(format!("signature payload {digest} is missing upstream"))
                }
                Err(e) => return Err(e),
            };
            layers.push(CosignEvidence::Layer(SignatureLayer {
                media_type: l.media_type,
                payload: payload.to_vec(),
                annotations: l.annotations.unwrap_or_default(),
            }));
        }
        if layers.is_empty() {
            return Ok(Err(format!("signature manifest {tag} has no simple-signing layer")));
        }
        Ok(Ok(layers))
    }

    /// Fetches the Sigstore bundles attached to the image as referrers
    /// (format C, cosign v3): the referrers API, or the `sha256-<hex>` tag
    /// index. Same shape as [`Policy::cosign_layers`].
    async fn cosign_bundles(
        &self,
        up: &UpstreamClient,
        subject: &Subject<'_>,
    ) -> Result<Result<Vec<CosignEvidence>, String>, UpstreamError> {
        let repo = self.signature_repo(subject);
        let digest = &subject.manifest.digest;
        let descriptors = match referrers(up, repo, digest, BUNDLE_ARTIFACT_TYPE, false).await? {
            Ok(d) => d,
            Err(reason) => return Ok(Ok(vec![CosignEvidence::Unusable(reason)])),
        };
        let mut attestations = 0;
        let mut evidence = Vec::new();
        for d in descriptors {
            let predicate = d.annotations.as_ref().and_then(|a| a.get(BUNDLE_PREDICATE_ANNOTATION));
            if predicate.is_some_and(|p| p != bundle::COSIGN_SIGN_PREDICATE) {
                attestations += 1;
                continue;
            }
            if evidence.len() == MAX_BUNDLE_REFERRERS {
                break;
            }
            evidence.push(match referrer_blob(up, repo, &d, digest, &BUNDLE_REFERRER).await? {
                Ok((_, json)) => CosignEvidence::Bundle(json),
                Err(reason) => CosignEvidence::Unusable(format!("sigstore bundle: {reason}")),
            });
        }
        if evidence.is_empty() {
            return Ok(Err(match attestations {
                0 => "no sigstore bundle referrer".to_string(),
                n => format!("no sigstore bundle referrer but {n} attestation bundle(s)"),
            }));
        }
        Ok(Ok(evidence))
    }

    /// Runs evidence against one authority: one verified layer or bundle
    /// satisfies it. Otherwise the reasons, one per piece of evidence.
    ///
    /// A bundle naming no repository satisfies the authority only with
    /// `dangerous_accept_unbound_bundles`, and only when no evidence here
    /// named another repository: a signature naming somewhere else outweighs
    /// one naming nowhere, whatever order they come in.
    fn check_cosign_authority(
        &self,
        auth: &CosignAuthority,
        evidence: &[CosignEvidence],
        exp: &cosign::Expectation<'_>,
    ) -> Result<String, Unsatisfied> {
        let mut failed = Unsatisfied::default();
        let mut unbound = None;
        for e in evidence {
            match e {
                CosignEvidence::Layer(layer) => match cosign::verify_layer(auth, layer, exp) {
                    Ok(()) => return Ok(format!("cosign {}", auth.describe())),
                    Err(r) => failed.add("", r),
                },
                CosignEvidence::Bundle(json) => match bundle::verify_bundle(auth, json, exp) {
                    Ok(()) => return Ok(format!("cosign {} (sigstore bundle)", auth.describe())),
                    Err(Refusal::Unbound) if self.dangerous_accept_unbound_bundles => {
                        unbound = Some(format!(
                            "cosign {} (sigstore bundle naming no repository, accepted by \
                             dangerous_accept_unbound_bundles)",
                            auth.describe()
                        ));
                    }
                    Err(Refusal::Unbound) => failed.reasons.push(format!(
                        "sigstore bundle: {} (set dangerous_accept_unbound_bundles = true on policy {} to accept; \
                         see README)",
                        Refusal::Unbound,
                        self.name
                    )),
                    Err(r) => failed.add("sigstore bundle: ", r),
                },
                CosignEvidence::Unusable(r) => failed.reasons.push(r.clone()),
            }
        }
        match unbound {
            Some(by) if !failed.wrong_repository => Ok(by),
            _ => Err(failed),
        }
    }

    async fn check_notation(
        &self,
        verifier: &NotationVerifier,
        up: &UpstreamClient,
        subject: &Subject<'_>,
        now: time::OffsetDateTime,
    ) -> Result<AuthorityResult, UpstreamError> {
        let digest = &subject.manifest.digest;
        let descriptors = match referrers(up, subject.repo, digest, NOTATION_ARTIFACT_TYPE, true).await? {
            Ok(d) if d.is_empty() => return Ok(Err("notation: no notation signature found".into())),
            Ok(d) => d,
            Err(reason) => return Ok(Err(format!("notation: {reason}"))),
        };
        let scope = format!("{}/{}", subject.registry, subject.repo);
        let target = notation::Target {
            registry_scope: &scope,
            digest,
            media_type: &subject.manifest.media_type,
            size: subject.manifest.bytes.len() as u64,
        };
        let mut reasons = Vec::new();
        for d in descriptors.iter().take(MAX_NOTATION_SIGNATURES) {
            let envelope = match referrer_blob(up, subject.repo, d, digest, &NOTATION_REFERRER).await? {
                Ok(e) => e,
                Err(reason) => {
                    reasons.push(format!("notation: {reason}"));
                    continue;
                }
            };
            match verifier.verify(&target, &envelope.0, &envelope.1, now) {
                notation::Outcome::Verified { logged } => {
                    for l in &logged {
                        tracing::warn!(policy = %self.name, image = %subject.image(), "notation: {l}");
                    }
                    return Ok(Ok(format!("notation signature {}", d.digest)));
                }
                notation::Outcome::Skipped => return Ok(Ok("notation trust policy level skip".into())),
                notation::Outcome::Refused(r) => reasons.push(r),
            }
        }
        if reasons.is_empty() {
            return Ok(Err("notation: no notation signature found".into()));
        }
        Ok(Err(summarize(&reasons)))
    }
}

/// The any/all combinator over per-authority results.
pub fn combine(policy: &str, require: Require, results: Vec<AuthorityResult>) -> Verdict {
    let deny = |reason: String| Verdict::Deny { policy: Some(policy.to_string()), reason };
    if results.is_empty() {
        return deny("no signature verifier configured".into());
    }
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let ok: Vec<String> = ok.into_iter().filter_map(Result::ok).collect();
    let failed: Vec<String> = failed.into_iter().filter_map(Result::err).collect();
    match require {
        Require::Any if !ok.is_empty() => Verdict::Allow { policy: policy.into(), by: ok.join(", ") },
        Require::All if failed.is_empty() => Verdict::Allow { policy: policy.into(), by: ok.join(" and ") },
        Require::Any => deny(summarize(&failed)),
        Require::All => deny(format!("require = \"all\" and {}", summarize(&failed))),
    }
}

/// Joins distinct reasons, keeping messages short enough for a log line.
fn summarize(reasons: &[String]) -> String {
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

/// The parts of an image manifest signature discovery needs.
#[derive(Deserialize)]
pub struct ImageManifest {
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    pub config: Option<Descriptor>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
    pub subject: Option<Descriptor>,
}

#[derive(Deserialize, Clone, Debug)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
pub struct ImageIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Lists the referrers of `digest` with `artifact_type`: the referrers API,
/// or the `sha256-<hex>` tag index when the registry has no referrers API.
/// Empty when there are none; the inner `Err` is a malformed index.
///
/// Neither the tag index nor a registry that ignores the filter is filtered,
/// so the list is filtered here. With `keep_untyped`, entries without an
/// `artifactType` are kept for the caller to check after fetching (old
/// notation writes the type only as the config media type).
async fn referrers(
    up: &UpstreamClient,
    repo: &str,
    digest: &Digest,
    artifact_type: &str,
    keep_untyped: bool,
) -> Result<Result<Vec<Descriptor>, String>, UpstreamError> {
    let body = match up.referrers(repo, digest, Some(artifact_type)).await? {
        Some(b) => b,
        None => match up.optional_manifest(repo, &ManifestRef::Tag(digest.referrers_tag()), media::OCI_INDEX).await? {
            Some(m) => m.bytes,
            None => return Ok(Ok(Vec::new())),
        },
    };
    let index: ImageIndex = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return Ok(Err(format!("referrers index is malformed: {e}"))),
    };
    Ok(Ok(index
        .manifests
        .into_iter()
        .filter(|d| match d.artifact_type.as_deref() {
            Some(t) => t == artifact_type,
            None => keep_untyped,
        })
        .collect()))
}

/// A kind of signature stored as an OCI referrer: a manifest whose `subject`
/// is the signed image and whose single layer is the signature blob. Sigstore
/// bundles and Notation envelopes differ only in these fields.
struct ReferrerKind {
    /// What the referrer manifest is called in reasons.
    manifest: &'static str,
    /// What its layer blob is called in reasons.
    blob: &'static str,
    max_blob_bytes: usize,
    is_kind: fn(&ImageManifest) -> bool,
    /// What a manifest of another kind is said not to be.
    kind_name: &'static str,
    layer_ok: fn(&str) -> bool,
    /// The reason when the blob's bytes do not hash to its descriptor:
    /// tampering, not an outage.
    mismatch: fn(&Digest) -> String,
}

const BUNDLE_REFERRER: ReferrerKind = ReferrerKind {
    manifest: "referrer manifest",
    blob: "bundle",
    max_blob_bytes: bundle::MAX_BUNDLE_BYTES,
    is_kind: |m| m.artifact_type.as_deref() == Some(BUNDLE_ARTIFACT_TYPE),
    kind_name: "sigstore bundle",
    layer_ok: |mt| mt.starts_with("application/vnd.dev.sigstore.bundle"),
    mismatch: |d| format!("bundle digest mismatch for {d}"),
};

const NOTATION_REFERRER: ReferrerKind = ReferrerKind {
    manifest: "signature manifest",
    blob: "envelope",
    max_blob_bytes: MAX_ENVELOPE_BYTES,
    // Older notation marks the type only as the config media type.
    is_kind: |m| {
        m.artifact_type.as_deref() == Some(NOTATION_ARTIFACT_TYPE)
            || m.config.as_ref().is_some_and(|c| c.media_type == NOTATION_ARTIFACT_TYPE)
    },
    kind_name: "notation signature",
    // The envelope's media type is checked by the verifier.
    layer_ok: |_| true,
    mismatch: |_| "integrity validation failed: envelope digest mismatch".to_string(),
};

/// Fetches one referrer manifest of `kind` and its layer blob, checking that
/// it is of that kind and that its subject is `digest`. Returns the layer's
/// media type and bytes; the inner `Err` is a denial reason, the outer one an
/// upstream failure.
async fn referrer_blob(
    up: &UpstreamClient,
    repo: &str,
    d: &Descriptor,
    digest: &Digest,
    kind: &ReferrerKind,
) -> Result<Result<(String, Vec<u8>), String>, UpstreamError> {
    let (what, blob) = (kind.manifest, kind.blob);
    let Ok(ref_digest) = d.digest.parse::<Digest>() else {
        return Ok(Err(format!("referrer digest {:?} is invalid", d.digest)));
    };
    let Some(m) = up.optional_manifest(repo, &ManifestRef::Digest(ref_digest.clone()), media::OCI_MANIFEST).await?
    else {
        return Ok(Err(format!("{what} {ref_digest} is missing")));
    };
    let parsed: ImageManifest = match serde_json::from_slice(&m.bytes) {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("{what} {ref_digest} is malformed: {e}"))),
    };
    if !(kind.is_kind)(&parsed) {
        return Ok(Err(format!("{what} {ref_digest} is not a {}", kind.kind_name)));
    }
    if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
        return Ok(Err(format!("{what} {ref_digest} has another subject")));
    }
    let [layer] = parsed.layers.as_slice() else {
        return Ok(Err(format!("{what} {ref_digest} must have exactly one layer")));
    };
    if !(kind.layer_ok)(&layer.media_type) {
        return Ok(Err(format!(
            "{what} {ref_digest} layer is {}, not a {}",
            crate::verify::keys::truncate(&layer.media_type, 100),
            kind.kind_name
        )));
    }
    let Ok(blob_digest) = layer.digest.parse::<Digest>() else {
        return Ok(Err(format!("{blob} digest {:?} is invalid", layer.digest)));
    };
    if layer.size > kind.max_blob_bytes as u64 {
        return Ok(Err(format!("{blob} is {} bytes, more than {}", layer.size, kind.max_blob_bytes)));
    }
    match up.small_blob(repo, &blob_digest, kind.max_blob_bytes).await {
        Ok(b) => Ok(Ok((layer.media_type.clone(), b.to_vec()))),
        Err(UpstreamError::DigestMismatch { .. }) => Ok(Err((kind.mismatch)(&blob_digest))),
        Err(UpstreamError::NotFound) => Ok(Err(format!("{blob} {blob_digest} is missing upstream"))),
        Err(e) => Err(e),
    }
}

/// Child manifests of an image index, for the multi-arch rule: a platform
/// manifest listed by a verified index is allowed without its own signature.
pub fn index_children(manifest: &Manifest) -> Vec<Digest> {
    if manifest.media_type != media::OCI_INDEX && manifest.media_type != media::DOCKER_LIST {
        return Vec::new();
    }
    serde_json::from_slice::<ImageIndex>(&manifest.bytes)
        .map(|i| i.manifests.into_iter().filter_map(|d| d.digest.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> AuthorityResult {
        Ok(s.into())
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
    fn an_empty_authority_list_fails_closed_for_any_and_all() {
        for r in [Require::Any, Require::All] {
            let v = combine("p", r, vec![]);
            assert_eq!(
                v,
                Verdict::Deny { policy: Some("p".into()), reason: "no signature verifier configured".into() }
            );
        }
    }

    fn set(toml_policies: &str) -> PolicySet {
        let text = format!("listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r.test\"\nurl = \"http://127.0.0.1:1\"\n{toml_policies}");
        let raw: RawConfig = toml::from_str(&text).unwrap();
        let mut c = Checker::new(std::path::Path::new("/nonexistent/sigmirror.toml"));
        let s = PolicySet::build(&raw, &mut c);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        s
    }

    #[test]
    fn the_most_specific_scope_wins_and_ties_go_to_the_first_policy() {
        let s = set(r#"
[[policy]]
name = "broad"
scope = ["r.test/**"]
mode = "audit"
[[policy]]
name = "team"
scope = ["r.test/team-a/**"]
[[policy]]
name = "exact"
scope = ["r.test/team-a/api"]
[[policy]]
name = "tie"
scope = ["r.test/team-a/**"]
"#);
        assert_eq!(s.select("r.test", "other/x").unwrap().name, "broad");
        assert_eq!(s.select("r.test", "team-a/web").unwrap().name, "team");
        assert_eq!(s.select("r.test", "team-a/api").unwrap().name, "exact");
        assert!(s.select("other.test", "team-a/api").is_none());
    }

    #[test]
    fn single_star_stays_inside_one_path_segment() {
        let s = set("[[policy]]\nname = \"one\"\nscope = [\"r.test/team/*\"]\n");
        assert!(s.select("r.test", "team/app").is_some());
        assert!(s.select("r.test", "team/app/sub").is_none());
    }

    #[test]
    fn immutable_tag_patterns_honour_exclusions_in_order() {
        let s = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nimmutable_tags = [\"*\", \"!latest\"]\n");
        let p = &s.policies[0];
        assert!(p.is_immutable_tag("v1.4.2"));
        assert!(!p.is_immutable_tag("latest"));
        let s = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nimmutable_tags = [\"v*\", \"release-*\"]\n");
        assert!(s.policies[0].is_immutable_tag("release-7"));
        assert!(!s.policies[0].is_immutable_tag("main"));
    }

    #[test]
    fn fingerprints_change_with_policy_settings() {
        let a = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\n");
        let b = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n");
        assert_ne!(a.policies[0].fingerprint, b.policies[0].fingerprint);
    }

    /// The outcomes of `check_cosign_authority` for bundles alone (the cross-format rule, that a
    /// format A repository failure keeps bundles from being consulted, is in
    /// `tests/cosign_bundle.rs`): a bundle naming this repository satisfies, one naming another
    /// blocks one naming none, in either order, and one naming none needs the opt-in.
    #[test]
    fn a_bundle_naming_another_repository_outweighs_one_naming_none_in_either_order() {
        use crate::verify::bundle::tests::{key_signed, pem_of_key};
        let signer = p256::ecdsa::SigningKey::from_slice(&[1u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pub");
        std::fs::write(&key, pem_of_key(&signer)).unwrap();
        let policy = |extra: &str| {
            set(&format!("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [{key:?}]\n{extra}"))
        };
        let d: Digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111".parse().unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(crate::verify::x509::tests::NOW).unwrap();
        let exp = cosign::Expectation { digest: &d, docker_reference: Some("r.test/team/app"), now };
        let bundle = |name: Option<&str>| CosignEvidence::Bundle(key_signed(&signer, &[(d.as_str(), name)]));
        let (here, other, none) = (Some("r.test/team/app"), Some("r.test/team/other"), None);
        let wrong = "sigstore bundle: signature names image r.test/team/other but this is r.test/team/app";
        let unbound = "sigstore bundle: the signed statement names no repository, so it could have been copied from \
                       another repository (set dangerous_accept_unbound_bundles = true on policy p to accept; see README)";
        let by_bound = &format!("cosign key {} (sigstore bundle)", key.display());
        let by_unbound = &format!(
            "cosign key {} (sigstore bundle naming no repository, accepted by dangerous_accept_unbound_bundles)",
            key.display()
        );
        type Want<'a> = Result<&'a str, (Vec<&'a str>, bool)>;
        let table: Vec<(Vec<Option<&str>>, bool, Want)> = vec![
            (vec![here], false, Ok(by_bound)),
            (vec![other, here], false, Ok(by_bound)),
            (vec![other], false, Err((vec![wrong], true))),
            (vec![none], false, Err((vec![unbound], false))),
            (vec![none], true, Ok(by_unbound)),
            (vec![none, other], true, Err((vec![wrong], true))),
            (vec![other, none], true, Err((vec![wrong], true))),
            (vec![none, here], true, Ok(by_bound)),
            (vec![none, other], false, Err((vec![unbound, wrong], true))),
        ];
        for (names, opt_in, want) in table {
            let p = policy(if opt_in { "dangerous_accept_unbound_bundles = true" } else { "" });
            let p = &p.policies[0];
            let evidence: Vec<CosignEvidence> = names.iter().map(|n| bundle(*n)).collect();
            let got = p.check_cosign_authority(&p.cosign[0], &evidence, &exp);
            let got: Want = match &got {
                Ok(by) => Ok(by.as_str()),
                Err(u) => Err((u.reasons.iter().map(String::as_str).collect(), u.wrong_repository)),
            };
            assert_eq!(got, want, "{names:?} with opt-in {opt_in}");
        }
    }

    #[test]
    fn the_unbound_bundle_opt_in_is_part_of_the_fingerprint() {
        let a = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\n");
        let b = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ndangerous_accept_unbound_bundles = true\n");
        assert!(!a.policies[0].dangerous_accept_unbound_bundles);
        assert!(b.policies[0].dangerous_accept_unbound_bundles);
        assert_ne!(a.policies[0].fingerprint, b.policies[0].fingerprint);
    }

    #[test]
    fn refusal_messages_name_the_policy_image_and_reason() {
        let v = Verdict::Deny { policy: Some("team-a".into()), reason: "no cosign signature found".into() };
        assert_eq!(
            v.refusal_message("r/x@sha256:1").unwrap(),
            "policy team-a refused r/x@sha256:1: no cosign signature found"
        );
    }
}
