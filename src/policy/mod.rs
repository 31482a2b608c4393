//! Policies: which images need which signatures, and the one decision every
//! manifest goes through before a byte of it is served.
//!
//! A policy matches images by scope globs over `<registry>/<repository>`.
//! When several policies match, the **most specific** wins: the one whose
//! matching glob has the longest literal prefix (the characters before its
//! first wildcard). On a tie, the policy listed first in the file wins.
//! No matching policy means refuse. A policy's `exclude` globs take a name out
//! of that policy alone, as if it had never listed it: the next most specific
//! policy decides, or none does.
//!
//! A policy lists *authorities*: each cosign key, each cosign certificate
//! entry, and Notation's trust policy count as one. With `require = "any"`
//! (the default) one satisfied authority allows the image; with
//! `require = "all"` every one must be satisfied; with `require = { count = N }`
//! at least N distinct signers. A policy with no authority refuses everything:
//! an empty list never means "allow". Required attestations (`attestation`,
//! with CEL conditions in `condition`) are judged on top of the signatures.
//!
//! A decision is gathering then judging: `evidence` fetches what the
//! authorities need (the only I/O), `evaluate` turns it into a `Verdict`
//! (`verdict`) without touching the network. Only infrastructure failures
//! (upstream down, timeout) are `Err`, so they are never mistaken for, or
//! cached as, a denial.

pub mod attestation;
pub mod condition;
mod decide;
pub mod evaluate;
pub mod evidence;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher};
use sha2::{Digest as _, Sha256};

use crate::config::{Checker, IndexRule, Mode, OnTagMove, PolicyConfig, PolicySection, Require};
use crate::upstream::Manifest;
use crate::verify::cosign::CosignAuthority;
use crate::verify::notation::NotationVerifier;

pub use evidence::Registry;
pub use verdict::{Scheme, Verdict};

/// A validated policy.
pub struct Policy {
    pub name: String,
    scope: Vec<(String, GlobMatcher)>,
    /// `exclude`: names this policy does not cover although a scope matches.
    exclude: Vec<GlobMatcher>,
    pub mode: Mode,
    pub require: Require,
    pub cosign: Vec<CosignAuthority>,
    pub notation: Option<Arc<NotationVerifier>>,
    pub signature_repository: Option<String>,
    pub docker_reference: Option<String>,
    /// `dangerous_skip_docker_reference`: the payload may name any image.
    pub dangerous_skip_docker_reference: bool,
    /// Accept cosign bundles whose statement names no repository (what cosign v3 writes). Off by
    /// default: such a bundle can be copied in from any other repository.
    pub dangerous_accept_unbound_bundles: bool,
    pub immutable_tags: Vec<(bool, GlobMatcher)>,
    pub on_tag_move: OnTagMove,
    /// `index`: whether an image index needs a signature of its own.
    pub index_rule: IndexRule,
    /// `[[policy.attestation]]`: every one must be met, beside the signatures.
    pub attestations: Vec<attestation::Requirement>,
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
    pub fn build(raw: &PolicySection, c: &mut Checker) -> PolicySet {
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
        for p in &raw.policy {
            let i = p.index;
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
            policies.push(build_policy(p, notation.clone(), c));
        }
        warn_unreachable_scopes(raw, c);
        PolicySet { policies }
    }

    /// The policy that governs `<registry>/<repo>`: the most specific match.
    /// A policy whose `exclude` matches the name is passed over as if it did
    /// not list it, so the next most specific policy decides, or none does
    /// (refuse).
    pub fn select(&self, registry: &str, repo: &str) -> Option<&Policy> {
        let name = format!("{registry}/{repo}");
        let mut best: Option<(usize, &Policy)> = None;
        for p in &self.policies {
            if p.exclude.iter().any(|m| m.is_match(&name)) {
                continue;
            }
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

/// Scopes that are legal but can never decide anything: a registry part no
/// configured upstream is named by (a typo such as `ghrc.io/**`), and a
/// pattern an earlier scope covers ([`covers`]: on a tie of specificity the
/// first policy wins, so the later one never does). A policy all of whose
/// patterns are shadowed this way is named as such.
fn warn_unreachable_scopes(raw: &PolicySection, c: &mut Checker) {
    // Every scope seen so far, in order, with the policy that listed it.
    let mut earlier: Vec<(&str, &str)> = Vec::new();
    for p in &raw.policy {
        let i = p.index;
        let mut shadowed = 0;
        for (j, s) in p.scope.iter().enumerate() {
            let registry = s.split('/').next().unwrap_or("");
            let reachable = match Glob::new(registry) {
                Ok(g) => {
                    let m = g.compile_matcher();
                    raw.registries.iter().any(|r| m.is_match(r))
                }
                Err(_) => true, // reported as a bad glob already
            };
            if !reachable && !raw.registries.is_empty() {
                c.warn(
                    format!("policy[{i}].scope[{j}]"),
                    format!("{s:?} names registry {registry:?}, which no [[upstream]] is, so it can never match"),
                    format!("check the spelling; configured registries: {}", raw.registries.join(", ")),
                );
            }
            match earlier.iter().find(|(q, _)| covers(q, s)) {
                Some((q, first)) if *first == p.name => {
                    shadowed += 1;
                    c.warn(
                        format!("policy[{i}].scope[{j}]"),
                        format!("{s:?} is redundant: this policy's own scope {q:?} already matches all it matches"),
                        "remove it",
                    );
                }
                Some((q, first)) if q == s => {
                    shadowed += 1;
                    c.warn(
                        format!("policy[{i}].scope[{j}]"),
                        format!("{s:?} is also a scope of policy {first:?}, listed earlier, which always wins it"),
                        "remove the duplicate, or make one of the scopes more specific",
                    );
                }
                Some((q, first)) => {
                    shadowed += 1;
                    c.warn(
                        format!("policy[{i}].scope[{j}]"),
                        format!(
                            "{s:?} only matches what {q:?} of policy {first:?}, listed earlier, matches too, with as long a literal prefix, so that policy always wins it"
                        ),
                        "make this scope more specific (a longer literal prefix wins), or list this policy first",
                    );
                }
                None => {}
            }
            earlier.push((s, &p.name));
        }
        if shadowed > 0 && shadowed == p.scope.len() {
            c.warn(
                format!("policy[{i}]"),
                "is fully shadowed: every one of its scopes belongs to an earlier policy, so it never decides",
                "merge it into the earlier policy or remove it",
            );
        }
    }
}

/// Whether the earlier scope `q` wins every repository the later scope `s`
/// matches. `select` picks the longest literal prefix and, on a tie, the
/// first policy; so `q` must have the same literal prefix and match a
/// superset: the same pattern, `<prefix>**` (anything after the prefix), or
/// `<prefix>*` over a rest that stays in one path segment. Patterns that
/// shadow only together, or by a set argument these cases miss, are not
/// reported: a missed warning, never a false one.
fn covers(q: &str, s: &str) -> bool {
    if q == s {
        return true;
    }
    let (q_prefix, q_rest) = q.split_at(literal_prefix_len(q));
    let (s_prefix, s_rest) = s.split_at(literal_prefix_len(s));
    if q_prefix != s_prefix || s_rest.is_empty() {
        return false;
    }
    match q_rest {
        "**" => true,
        "*" => !s_rest.contains('/') && !s_rest.contains("**"),
        _ => false,
    }
}

fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len())
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    // `*` stays inside one path segment; `**` crosses segments.
    Ok(GlobBuilder::new(pattern).literal_separator(true).build()?.compile_matcher())
}

fn build_policy(p: &PolicyConfig, notation: Option<Arc<NotationVerifier>>, c: &mut Checker) -> Policy {
    let i = p.index;
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
    let mut exclude = Vec::new();
    for (j, s) in p.exclude.iter().enumerate() {
        match glob(s) {
            Ok(m) => exclude.push(m),
            Err(e) => c.problem(
                format!("policy[{i}].exclude[{j}]"),
                format!("{s:?} is not a glob: {e}"),
                "use *, ** and ? wildcards, like \"ghcr.io/acme/sandbox/**\"",
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
    let cosign = CosignAuthority::from_policy(p, c);
    let attestations = attestation::requirements(p, c);
    if p.notation && notation.is_none() {
        c.problem(
            format!("policy[{i}].notation"),
            "is true but there is no [notation] table",
            "add [notation] with trust_policy and trust_store",
        );
    }
    let notation = if p.notation { notation } else { None };
    if p.dangerous_accept_unbound_bundles {
        c.warn(
            format!("policy[{i}].dangerous_accept_unbound_bundles"),
            "a cosign bundle whose statement names no repository (as cosign v3 writes them) is accepted in every \
             repository this policy covers, so an image signed for another repository with a key this policy trusts \
             can be copied here with its bundle and will be served",
            "sign with a statement that names the repository, and remove the flag",
        );
    }
    if p.mode == Mode::Enforce && cosign.is_empty() && notation.is_none() {
        c.warn(
            format!("policy[{i}]"),
            "enforces but lists no authority (cosign_keys, cosign_certificates or notation), so it refuses every image",
            "add the keys or certificates that sign these images, or mode = \"audit\" while rolling out",
        );
    }

    if let Require::Count(n) = p.require {
        let listed = p.cosign_keys.len() + p.cosign_certificates.len() + usize::from(p.notation);
        let fix = "set count between 1 and the number of cosign keys, certificate entries and notation";
        if n == 0 {
            // Zero would allow what nothing verified: never load it.
            c.problem(format!("policy[{i}].require.count"), "is 0, which would allow unsigned images", fix);
        } else if n > listed {
            c.problem(
                format!("policy[{i}].require.count"),
                format!("is {n}, but the policy lists {listed} authorities, so it could never be met as meant"),
                fix,
            );
        }
    }

    let mut h = Sha256::new();
    h.update(&p.settings);
    for a in &cosign {
        a.fingerprint(&mut h);
    }
    if let Some(n) = &notation {
        n.fingerprint(&mut h);
    }
    Policy {
        name: p.name.clone(),
        scope,
        exclude,
        mode: p.mode,
        require: p.require,
        cosign,
        notation,
        signature_repository: p.signature_repository.clone(),
        docker_reference: p.docker_reference.clone(),
        dangerous_skip_docker_reference: p.dangerous_skip_docker_reference,
        dangerous_accept_unbound_bundles: p.dangerous_accept_unbound_bundles,
        immutable_tags,
        on_tag_move: p.on_tag_move,
        index_rule: p.index_rule,
        attestations,
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
    pub fn authority_count(&self) -> usize {
        self.cosign.len() + usize::from(self.notation.is_some())
    }

    /// What this policy verifies, as the `scheme` label of the verification
    /// histogram: cosign, notation, none, or "-" for both.
    pub fn scheme_label(&self) -> &'static str {
        match (self.cosign.is_empty(), self.notation.is_none()) {
            (false, true) => "cosign",
            (true, false) => "notation",
            (true, true) => "none",
            (false, false) => "-",
        }
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

    /// The repository cosign signatures live in: `signature_repository`
    /// (cosign's `COSIGN_REPOSITORY`) or the image's own.
    pub(crate) fn signature_repo<'a>(&'a self, subject: &Subject<'a>) -> &'a str {
        self.signature_repository.as_deref().unwrap_or(subject.repo)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn set(toml_policies: &str) -> PolicySet {
        let text = format!("listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r.test\"\nurl = \"http://127.0.0.1:1\"\ndangerous_plain_http = true\n{toml_policies}");
        let c = Checker::new(std::path::Path::new("/nonexistent/sigmirror.toml"));
        let (_, section, mut c) = crate::config::Config::from_str(&text, c).unwrap();
        let s = PolicySet::build(&section, &mut c);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        s
    }

    #[test]
    fn covers_claims_a_shadow_only_where_select_really_always_picks_the_earlier_policy() {
        let names = ["r.test/acme/api", "r.test/acme/web", "r.test/acme/x/y", "r.test/acme/", "r.test/other/api"];
        let cases = [
            ("r.test/acme/**", "r.test/acme/*", true),
            ("r.test/acme/**", "r.test/acme/{api,web}", true),
            ("r.test/acme/*", "r.test/acme/?pi", true),
            ("r.test/acme/*", "r.test/acme/**", false),
            ("r.test/acme/*", "r.test/acme/*/y", false),
            ("r.test/acme/**", "r.test/acme/api", false),
            ("r.test/acme/**", "r.test/acme/a*", false),
            ("r.test/**", "r.test/acme/*", false),
            ("r.test/acme/api", "r.test/acme/api", true),
        ];
        for (q, later, claimed) in cases {
            assert_eq!(covers(q, later), claimed, "covers({q:?}, {later:?})");
            let set = set(&format!(
                "[[policy]]\nname = \"first\"\nscope = [{q:?}]\nmode = \"audit\"\n\
                 [[policy]]\nname = \"later\"\nscope = [{later:?}]\nmode = \"audit\"\n"
            ));
            let later_wins_one = names.iter().any(|n| {
                let (reg, repo) = n.split_once('/').unwrap();
                set.select(reg, repo).is_some_and(|p| p.name == "later")
            });
            if claimed {
                assert!(!later_wins_one, "{later:?} is said to be shadowed by {q:?} but wins a repository");
            } else {
                assert!(
                    later_wins_one,
                    "{later:?} wins no sample repository over {q:?}: add one, or this is a missed shadow"
                );
            }
        }
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

    /// An excluded repository is as if the policy did not list it: the next most specific
    /// policy decides, and with none left, nothing does (refuse).
    #[test]
    fn an_excluded_repository_falls_to_the_next_matching_policy_or_to_none() {
        let team = "[[policy]]\nname = \"team\"\nscope = [\"r.test/team-a/**\"]\n\
                    exclude = [\"r.test/team-a/sandbox/**\", \"r.test/team-a/tmp-*\"]\n";
        let s = set(&format!("[[policy]]\nname = \"broad\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n{team}"));
        assert_eq!(s.select("r.test", "team-a/api").unwrap().name, "team");
        assert_eq!(s.select("r.test", "team-a/sandbox/tool").unwrap().name, "broad");
        assert_eq!(s.select("r.test", "team-a/tmp-1").unwrap().name, "broad");
        assert_eq!(s.select("r.test", "team-a/tmp-1/x").unwrap().name, "team", "* stays in one segment");
        assert!(set(team).select("r.test", "team-a/sandbox/tool").is_none());
        // An exclusion applies to its own policy only, however specific the other is.
        let s = set(&format!("{team}[[policy]]\nname = \"exact\"\nscope = [\"r.test/team-a/sandbox/tool\"]\n"));
        assert_eq!(s.select("r.test", "team-a/sandbox/tool").unwrap().name, "exact");
    }

    #[test]
    fn a_count_no_authority_list_can_meet_or_a_bad_exclude_is_a_problem() {
        let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r.test\"\nurl = \"http://127.0.0.1:1\"\n\
                    dangerous_plain_http = true\n[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nnotation = false\n\
                    require = { count = 2 }\nexclude = [\"r.test/[\"]\n";
        let c = Checker::new(std::path::Path::new("/nonexistent/sigmirror.toml"));
        let (_, section, mut c) = crate::config::Config::from_str(text, c).unwrap();
        PolicySet::build(&section, &mut c);
        let got: Vec<(&str, &str)> = c.problems.iter().map(|p| (p.key.as_str(), p.message.as_str())).collect();
        assert!(got.iter().any(|(k, _)| *k == "policy[0].exclude[0]"), "{got:?}");
        assert!(
            got.contains(&(
                "policy[0].require.count",
                "is 2, but the policy lists 0 authorities, so it could never be met as meant"
            )),
            "{got:?}"
        );
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

    #[test]
    fn the_unbound_bundle_opt_in_is_part_of_the_fingerprint() {
        let a = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\n");
        let b = set("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ndangerous_accept_unbound_bundles = true\n");
        assert!(!a.policies[0].dangerous_accept_unbound_bundles);
        assert!(b.policies[0].dangerous_accept_unbound_bundles);
        assert_ne!(a.policies[0].fingerprint, b.policies[0].fingerprint);
    }
}
