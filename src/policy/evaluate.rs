//! Judgement: pure functions from an [`Evidence`] value to a [`Verdict`].
//! Nothing here touches the network, so every rule can be tested with
//! hand-built evidence.
//!
//! Cosign: either format verifying satisfies an authority, with one
//! exception: an authority for which a signature verified but named another
//! repository is satisfied by nothing else. That signature is evidence the
//! image was copied here from elsewhere, and another format must not rescue
//! it; the refusal keeps its repository reason.

use crate::config::{IndexRule, Mode};
use crate::verify::bundle;
use crate::verify::cosign::{self, CosignAuthority, Refusal};
use crate::verify::notation::{self, NotationVerifier};

use super::attestation;
use super::evidence::{CosignEvidence, Evidence, Found, NotationEvidence};
use super::verdict::{combine, summarize, AuthorityResult, Satisfied, Scheme, Verdict};
use super::{Policy, Subject};

/// The verdict of `policy` on `subject` given what was found. Audit mode
/// turns a denial into an allow that says what would have been refused, and
/// that vouches for nothing.
pub fn judge(policy: &Policy, subject: &Subject<'_>, ev: &Evidence, now: time::OffsetDateTime) -> Verdict {
    let tag = after_signature_tag(policy, subject, ev, now);
    judge_after(policy, subject, ev, tag, now)
}

/// [`judge`], reusing the `.sig` tag outcomes gathering already computed to
/// decide whether to fetch bundles, so no layer is verified twice.
pub fn judge_after(
    policy: &Policy,
    subject: &Subject<'_>,
    ev: &Evidence,
    tag: TagOutcomes,
    now: time::OffsetDateTime,
) -> Verdict {
    let verdict = verify(policy, subject, ev, tag, now);
    let verdict = match (policy.index_rule, crate::oci::media::is_index(&subject.manifest.media_type)) {
        (IndexRule::Children, true) => index_for_children(&policy.name, verdict),
        _ => verdict,
    };
    match (policy.mode, verdict) {
        (Mode::Audit, Verdict::Deny { reason, .. }) => audit_allow(&policy.name, reason),
        (Mode::Audit, Verdict::Allow { vouches: _, policy, by, scheme, signer, would_refuse }) => {
            Verdict::Allow { policy, by, vouches: false, scheme, signer, would_refuse }
        }
        (Mode::Enforce, v) => v,
    }
}

/// `index = "children"`: an image index is served whether its own signature
/// verified or not, and vouches for nothing, so every platform manifest it
/// lists is judged on its own signature when it is fetched. An index holds
/// no layers, only digests of manifests that are checked in turn.
fn index_for_children(policy: &str, verdict: Verdict) -> Verdict {
    let own = match &verdict {
        Verdict::Allow { by, .. } => format!("its own signature verified: {by}"),
        Verdict::Deny { reason, .. } => format!("its own signature did not verify: {reason}"),
    };
    Verdict::Allow {
        policy: policy.to_string(),
        by: format!("index = \"children\": an index is served and vouches for nothing; each platform manifest must verify on its own ({own})"),
        vouches: false,
        scheme: Scheme::None,
        signer: None,
        would_refuse: None,
    }
}

/// What an audit-mode policy makes of a refusal: an allow that vouches for
/// nothing and keeps the reason, logged as an `audit-deny`.
pub fn audit_allow(policy: &str, reason: String) -> Verdict {
    Verdict::Allow {
        policy: policy.to_string(),
        by: format!("audit mode (would refuse: {reason})"),
        vouches: false,
        scheme: Scheme::None,
        signer: None,
        would_refuse: Some(reason),
    }
}

fn verify(
    policy: &Policy,
    subject: &Subject<'_>,
    ev: &Evidence,
    tag: TagOutcomes,
    now: time::OffsetDateTime,
) -> Verdict {
    if policy.authority_count() == 0 {
        return Verdict::Deny {
            policy: Some(policy.name.clone()),
            reason: "no signature verifier configured (the policy lists no cosign key, certificate or notation)".into(),
        };
    }
    let mut results: Vec<AuthorityResult> = Vec::new();
    if !policy.cosign.is_empty() {
        results.extend(cosign_results(policy, subject, ev, tag.0, now));
    }
    if let Some(n) = &policy.notation {
        results.push(notation_result(policy, n, subject, ev, now));
    }
    let verdict = combine(&policy.name, policy.require, results);
    if policy.attestations.is_empty() {
        return verdict;
    }
    // Attestations are judged only once the signatures allow: a refusal then keeps the
    // signature's reason, which is the one to fix first.
    let Verdict::Allow { policy: name, by, vouches, scheme, signer, would_refuse } = verdict else { return verdict };
    let digest = &subject.manifest.digest;
    match attestation::judge(&policy.attestations, &policy.cosign, ev.attestations.as_ref(), digest, now) {
        Ok(attested) => {
            Verdict::Allow { policy: name, by: format!("{by}; {attested}"), vouches, scheme, signer, would_refuse }
        }
        Err(reason) => Verdict::Deny { policy: Some(name), reason },
    }
}

/// The cosign authorities' outcomes from the `.sig` tag alone: what tells
/// gathering whether bundles are worth fetching, and what judging goes on from.
pub struct TagOutcomes(CosignOutcomes);

impl TagOutcomes {
    /// Whether looking up bundles could change the verdict: some cosign
    /// authority is unsatisfied by the `.sig` tag and not blocked by a
    /// signature naming another repository. Lets a signed image cost no
    /// extra requests.
    pub fn bundles_could_help(&self) -> bool {
        self.0.outcomes.iter().any(is_open)
    }
}

/// Judges the `.sig` tag evidence of `ev` for every cosign authority.
pub fn after_signature_tag(
    policy: &Policy,
    subject: &Subject<'_>,
    ev: &Evidence,
    now: time::OffsetDateTime,
) -> TagOutcomes {
    let exp_ref = expected_reference(policy, subject);
    let exp = expectation(subject, exp_ref.as_deref(), now);
    TagOutcomes(tag_outcomes(policy, ev.signature_tag.as_ref(), &exp))
}

/// [`TagOutcomes::bundles_could_help`] straight from evidence.
pub fn bundles_could_help(policy: &Policy, subject: &Subject<'_>, ev: &Evidence, now: time::OffsetDateTime) -> bool {
    after_signature_tag(policy, subject, ev, now).bundles_could_help()
}

fn expected_reference(policy: &Policy, s: &Subject<'_>) -> Option<String> {
    if policy.dangerous_skip_docker_reference {
        return None;
    }
    match policy.docker_reference.as_deref() {
        Some(r) => Some(r.to_string()),
        None => Some(format!("{}/{}", s.registry, s.repo)),
    }
}

fn expectation<'a>(
    subject: &'a Subject<'_>,
    docker_reference: Option<&'a str>,
    now: time::OffsetDateTime,
) -> cosign::Expectation<'a> {
    cosign::Expectation { digest: &subject.manifest.digest, docker_reference, now }
}

/// Why one cosign authority is not (yet) satisfied.
#[derive(Default, Debug)]
pub(super) struct Unsatisfied {
    /// One per piece of evidence.
    pub(super) reasons: Vec<String>,
    /// A signature verified with the authority but named another repository.
    /// Then no other format, and no bundle naming no repository, may satisfy
    /// the authority.
    pub(super) wrong_repository: bool,
}

impl Unsatisfied {
    fn add(&mut self, prefix: &str, r: Refusal) {
        self.wrong_repository |= matches!(r, Refusal::WrongRepository(_));
        self.reasons.push(format!("{prefix}{r}"));
    }
}

/// Unsatisfied and not blocked by a signature naming another repository.
fn is_open(o: &Result<Satisfied, Unsatisfied>) -> bool {
    matches!(o, Err(u) if !u.wrong_repository)
}

struct CosignOutcomes {
    outcomes: Vec<Result<Satisfied, Unsatisfied>>,
    /// Whether any format held something to verify.
    found: bool,
    /// Why each format that was looked up held nothing.
    absent: Vec<String>,
}

/// Per-authority outcomes of the `.sig` tag.
fn tag_outcomes(
    policy: &Policy,
    signature_tag: Option<&Found<Vec<CosignEvidence>>>,
    exp: &cosign::Expectation<'_>,
) -> CosignOutcomes {
    let mut absent = Vec::new();
    let mut found = false;
    // An empty `Present` (which gathering never makes) counts as nothing found.
    let outcomes: Vec<Result<Satisfied, Unsatisfied>> = match signature_tag {
        Some(Found::Present(layers)) if !layers.is_empty() => {
            found = true;
            policy.cosign.iter().map(|a| check_cosign_authority(policy, a, layers, exp)).collect()
        }
        other => {
            if let Some(Found::Absent(note)) = other {
                absent.push(note.clone());
            }
            policy.cosign.iter().map(|_| Err(Unsatisfied::default())).collect()
        }
    };
    CosignOutcomes { outcomes, found, absent }
}

/// Adds the bundles to `o`, for the authorities still open.
fn add_bundles(
    policy: &Policy,
    o: &mut CosignOutcomes,
    bundles: Option<&Found<Vec<CosignEvidence>>>,
    exp: &cosign::Expectation<'_>,
) {
    match bundles {
        Some(Found::Present(bundles)) if !bundles.is_empty() => {
            o.found = true;
            for (auth, outcome) in policy.cosign.iter().zip(o.outcomes.iter_mut()) {
                if !is_open(outcome) {
                    continue;
                }
                match check_cosign_authority(policy, auth, bundles, exp) {
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
        Some(Found::Absent(note)) => o.absent.push(note.clone()),
        _ => {}
    }
}

/// Every cosign authority's result.
fn cosign_results(
    policy: &Policy,
    subject: &Subject<'_>,
    ev: &Evidence,
    mut tag: CosignOutcomes,
    now: time::OffsetDateTime,
) -> Vec<AuthorityResult> {
    let exp_ref = expected_reference(policy, subject);
    let exp = expectation(subject, exp_ref.as_deref(), now);
    add_bundles(policy, &mut tag, ev.bundles.as_ref(), &exp);
    let CosignOutcomes { outcomes, found, absent } = tag;
    if !found {
        let reason = format!("no cosign signature found ({})", absent.join("; "));
        return policy.cosign.iter().map(|a| Err(format!("{}: {reason}", a.describe()))).collect();
    }
    policy
        .cosign
        .iter()
        .zip(outcomes)
        .map(|(a, o)| o.map_err(|u| format!("{}: {}", a.describe(), summarize(&u.reasons))))
        .collect()
}

/// Runs evidence against one authority: one verified layer or bundle
/// satisfies it. Otherwise the reasons, one per piece of evidence.
///
/// A bundle naming no repository satisfies the authority only with
/// `dangerous_accept_unbound_bundles`, and only when no evidence here
/// named another repository: a signature naming somewhere else outweighs
/// one naming nowhere, whatever order they come in.
pub(super) fn check_cosign_authority(
    policy: &Policy,
    auth: &CosignAuthority,
    evidence: &[CosignEvidence],
    exp: &cosign::Expectation<'_>,
) -> Result<Satisfied, Unsatisfied> {
    let mut failed = Unsatisfied::default();
    let mut unbound = None;
    let cosign = |by: String, signer: Option<String>| Satisfied { by, scheme: Scheme::Cosign, signer };
    for e in evidence {
        match e {
            CosignEvidence::Layer(layer) => match cosign::verify_layer(auth, layer, exp) {
                Ok(()) => {
                    return Ok(cosign(format!("cosign {}", auth.describe()), cosign::signer_of_layer(auth, layer)))
                }
                Err(r) => failed.add("", r),
            },
            CosignEvidence::Bundle(json) => match bundle::verify_bundle(auth, json, exp) {
                Ok(()) => {
                    let by = format!("cosign {} (sigstore bundle)", auth.describe());
                    return Ok(cosign(by, bundle::signer_of_bundle(auth, json)));
                }
                Err(Refusal::Unbound) if policy.dangerous_accept_unbound_bundles => {
                    let by = format!(
                        "cosign {} (sigstore bundle naming no repository, accepted by \
                         dangerous_accept_unbound_bundles)",
                        auth.describe()
                    );
                    unbound = Some(cosign(by, bundle::signer_of_bundle(auth, json)));
                }
                Err(Refusal::Unbound) => failed.reasons.push(format!(
                    "sigstore bundle: {} (set dangerous_accept_unbound_bundles = true on policy {} to accept; \
                     see README)",
                    Refusal::Unbound,
                    policy.name
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

/// The Notation authority's result: the first signature that passes the
/// trust policy satisfies it.
fn notation_result(
    policy: &Policy,
    verifier: &NotationVerifier,
    subject: &Subject<'_>,
    ev: &Evidence,
    now: time::OffsetDateTime,
) -> AuthorityResult {
    let items = match &ev.notation {
        Some(Found::Present(items)) => items,
        Some(Found::Absent(_)) | None => return Err("notation: no notation signature found".into()),
    };
    let digest = &subject.manifest.digest;
    let scope = format!("{}/{}", subject.registry, subject.repo);
    let target = notation::Target {
        registry_scope: &scope,
        digest,
        media_type: &subject.manifest.media_type,
        size: subject.manifest.bytes.len() as u64,
    };
    let mut reasons = Vec::new();
    for item in items {
        let (signature, media_type, bytes) = match item {
            NotationEvidence::Envelope { signature, media_type, bytes } => (signature, media_type, bytes),
            NotationEvidence::Unusable(reason) => {
                reasons.push(reason.clone());
                continue;
            }
        };
        match verifier.verify(&target, media_type, bytes, now) {
            notation::Outcome::Verified { logged } => {
                for l in &logged {
                    tracing::warn!(policy = %policy.name, image = %subject.image(), "notation: {l}");
                }
                return Ok(Satisfied {
                    by: format!("notation signature {signature}"),
                    scheme: Scheme::Notation,
                    signer: NotationVerifier::signer_of(media_type, bytes),
                });
            }
            notation::Outcome::Skipped => {
                let by = "notation trust policy level skip".to_string();
                return Ok(Satisfied { by, scheme: Scheme::None, signer: None });
            }
            notation::Outcome::Refused(r) => reasons.push(r),
        }
    }
    if reasons.is_empty() {
        return Err("notation: no notation signature found".into());
    }
    Err(summarize(&reasons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::policy::tests::set;
    use crate::upstream::Manifest;
    use crate::verify::bundle::tests::{key_signed, pem_of_key};

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
            let got = check_cosign_authority(p, &p.cosign[0], &evidence, &exp);
            let got: Want = match &got {
                Ok(s) => Ok(s.by.as_str()),
                Err(u) => Err((u.reasons.iter().map(String::as_str).collect(), u.wrong_repository)),
            };
            assert_eq!(got, want, "{names:?} with opt-in {opt_in}");
        }
    }

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(crate::verify::x509::tests::NOW).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest { bytes: bytes::Bytes::from_static(b"{}"), digest: D.parse().unwrap(), media_type: "m".into() }
    }

    /// Two trusted keys `a` and `b`, and a policy over them with `require`/`mode`.
    struct Two {
        a: p256::ecdsa::SigningKey,
        b: p256::ecdsa::SigningKey,
        set: crate::policy::PolicySet,
        _dir: tempfile::TempDir,
    }

    fn two(extra: &str) -> Two {
        let a = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let b = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb) = (dir.path().join("a.pub"), dir.path().join("b.pub"));
        std::fs::write(&ka, pem_of_key(&a)).unwrap();
        std::fs::write(&kb, pem_of_key(&b)).unwrap();
        let set =
            set(&format!("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [{ka:?}, {kb:?}]\n{extra}"));
        Two { a, b, set, _dir: dir }
    }

    fn bundles_by(keys: &[&p256::ecdsa::SigningKey]) -> Evidence {
        let items =
            keys.iter().map(|k| CosignEvidence::Bundle(key_signed(k, &[(D, Some("r.test/team/app"))]))).collect();
        Evidence {
            signature_tag: Some(Found::Absent(format!("no tag sha256-{}.sig in team/app", &D[7..]))),
            bundles: Some(Found::Present(items)),
            notation: None,
            attestations: None,
        }
    }

    /// The any/all/count truth table, run through `judge` on hand-built evidence:
    /// which of the two keys signed, under each `require`, in each mode.
    #[test]
    fn the_combinator_truth_table_holds_through_judge() {
        let m = manifest();
        let subject = Subject { registry: "r.test", repo: "team/app", manifest: &m };
        // `require` as written in TOML, and whether 0, 1 (a or b) or 2 signers satisfy it.
        let table: [(&str, [bool; 3]); 4] = [
            ("\"any\"", [false, true, true]),
            ("\"all\"", [false, false, true]),
            ("{ count = 1 }", [false, true, true]),
            ("{ count = 2 }", [false, false, true]),
        ];
        for (require, allows) in table {
            for mode in ["enforce", "audit"] {
                let t = two(&format!("require = {require}\nmode = {mode:?}\n"));
                let p = &t.set.policies[0];
                for (signers, verified) in [
                    (vec![], allows[0]),
                    (vec![&t.a], allows[1]),
                    (vec![&t.b], allows[1]),
                    (vec![&t.a, &t.b], allows[2]),
                ] {
                    let v = judge(p, &subject, &bundles_by(&signers), now());
                    let what = format!("require {require}, mode {mode}, {} signer(s)", signers.len());
                    // Audit allows everything, and vouches for nothing.
                    assert_eq!(v.is_allow(), verified || mode == "audit", "{what}: {v:?}");
                    assert_eq!(v.vouches(), verified && mode == "enforce", "{what}: {v:?}");
                    if !v.is_allow() {
                        let Verdict::Deny { reason, .. } = &v else { unreachable!() };
                        let why = if signers.is_empty() {
                            "no cosign signature found"
                        } else {
                            "signature by an untrusted key"
                        };
                        assert!(reason.contains(why), "{what}: {reason}");
                        if require.contains("count") {
                            let prefix =
                                format!("require = {require} and {} distinct authorities verified", signers.len());
                            assert!(reason.starts_with(&prefix), "{what}: {reason}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_found_refuses_naming_what_was_looked_for() {
        let t = two("");
        let p = &t.set.policies[0];
        let m = manifest();
        let subject = Subject { registry: "r.test", repo: "team/app", manifest: &m };
        let ev = Evidence {
            signature_tag: Some(Found::Absent("no tag sha256-1.sig in team/app".into())),
            bundles: Some(Found::Absent("no sigstore bundle referrer".into())),
            notation: None,
            attestations: None,
        };
        let v = judge(p, &subject, &ev, now());
        let Verdict::Deny { reason, .. } = v else { panic!("{v:?}") };
        assert!(
            reason
                .ends_with("no cosign signature found (no tag sha256-1.sig in team/app; no sigstore bundle referrer)"),
            "{reason}"
        );
        // Unusable evidence is a reason, never an allow.
        let ev = Evidence {
            signature_tag: Some(Found::Present(vec![CosignEvidence::Unusable("payload digest mismatch".into())])),
            bundles: None,
            notation: None,
            attestations: None,
        };
        let v = judge(p, &subject, &ev, now());
        assert!(matches!(&v, Verdict::Deny { reason, .. } if reason.contains("payload digest mismatch")), "{v:?}");
        assert!(bundles_could_help(p, &subject, &ev, now()));
    }

    #[test]
    fn a_policy_without_authorities_refuses_whatever_the_evidence() {
        let s = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\n");
        let m = manifest();
        let subject = Subject { registry: "r.test", repo: "team/app", manifest: &m };
        let v = judge(&s.policies[0], &subject, &Evidence::default(), now());
        assert!(matches!(&v, Verdict::Deny { reason, .. } if reason.starts_with("no signature verifier configured")));
    }
}
