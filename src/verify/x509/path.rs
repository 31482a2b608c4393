//! Certificate paths, built the two ways sigmirror's ecosystems need: by search from a leaf to a
//! trusted root ([`search`]: cosign, whose signatures bring loose intermediates, and RFC 3161
//! TSAs, whose tokens name only the signer), or taken in the fixed order the signer sent
//! ([`check_in_order`]: the Notary Project, whose chains end in their root).

use super::profile::{self, Profile, Role};
use super::Certificate;

/// Signature checks one path search may spend. Real chains need two or three; the bound stops
/// a signer from shipping a mesh of cross-signed intermediates that makes the search exponential.
const MAX_SIGNATURE_CHECKS: usize = 128;

/// A path from the leaf to `roots[root]`, both included (just the leaf when it is a root).
pub(crate) struct Found<'a> {
    pub path: Vec<&'a Certificate>,
    pub root: usize,
}

/// No path was found.
pub(crate) struct NotFound {
    /// The first specific failure met on the way (an issuer that did not verify, a CA that broke
    /// a rule), or that the search ran out of budget.
    pub reason: Option<String>,
    /// The depth limit stopped the search while a certificate naming the issuer was unexplored.
    pub cut_short: bool,
}

/// Depth-first search for a path leaf → `intermediates` → one of `roots`, at most `max_depth`
/// certificates before the root. A leaf that is itself one of the roots is its own path.
///
/// An issuer is a certificate whose subject is the child's issuer name (compared first, so
/// only real candidates spend budget), for which `issued(child, issuer)` holds and which
/// `accept(issuer, cas_below)` takes. Roots are tried before intermediates, so the shortest
/// trusted path wins. Trust comes only from `roots`: an intermediate, even a self-issued one,
/// is only a step, and a path that does not end in a root is no path.
pub(crate) fn search<'a>(
    leaf: &'a Certificate,
    intermediates: &'a [Certificate],
    roots: &'a [Certificate],
    max_depth: usize,
    issued: &dyn Fn(&Certificate, &Certificate) -> Result<(), String>,
    accept: &dyn Fn(&Certificate, usize) -> Result<(), String>,
) -> Result<Found<'a>, NotFound> {
    if let Some(root) = roots.iter().position(|r| r.der == leaf.der) {
        return Ok(Found { path: vec![leaf], root });
    }
    let mut s = Search {
        intermediates,
        roots,
        max_depth,
        issued,
        accept,
        best_error: None,
        budget: MAX_SIGNATURE_CHECKS,
        cut_short: false,
    };
    let mut path: Vec<&Certificate> = vec![leaf];
    match s.extend(&mut path) {
        Some(root) => {
            path.push(&roots[root]);
            Ok(Found { path, root })
        }
        None => Err(NotFound { reason: s.best_error, cut_short: s.cut_short }),
    }
}

struct Search<'a, 'f> {
    intermediates: &'a [Certificate],
    roots: &'a [Certificate],
    max_depth: usize,
    issued: &'f dyn Fn(&Certificate, &Certificate) -> Result<(), String>,
    accept: &'f dyn Fn(&Certificate, usize) -> Result<(), String>,
    best_error: Option<String>,
    budget: usize,
    cut_short: bool,
}

impl<'a> Search<'a, '_> {
    fn note(&mut self, e: String) {
        self.best_error.get_or_insert(e);
    }

    /// Whether `issuer` issued `child`, spending budget only on real candidates.
    fn issued_by(&mut self, child: &Certificate, issuer: &Certificate) -> bool {
        if !names_match(child, issuer) {
            return false;
        }
        if self.budget == 0 {
            self.best_error = Some("certificate chain is too complex to evaluate".into());
            return false;
        }
        self.budget -= 1;
        match (self.issued)(child, issuer) {
            Ok(()) => true,
            Err(e) => {
                self.note(e);
                false
            }
        }
    }

    /// An issuer for the last certificate of `path`, recursively; the index of the root reached.
    fn extend(&mut self, path: &mut Vec<&'a Certificate>) -> Option<usize> {
        let child = *path.last()?;
        // Number of CA certificates below a new issuer, for pathLenConstraint.
        let cas_below = path.len() - 1;
        let roots = self.roots;
        for (i, root) in roots.iter().enumerate() {
            if self.issued_by(child, root) {
                match (self.accept)(root, cas_below) {
                    Ok(()) => return Some(i),
                    Err(e) => self.note(e),
                }
            }
        }
        let intermediates = self.intermediates;
        if path.len() >= self.max_depth {
            self.cut_short |= intermediates.iter().any(|c| !on(path, c) && names_match(child, c));
            return None;
        }
        for cand in intermediates {
            if on(path, cand) || !self.issued_by(child, cand) {
                continue;
            }
            if let Err(e) = (self.accept)(cand, cas_below) {
                self.note(e);
                continue;
            }
            path.push(cand);
            if let Some(i) = self.extend(path) {
                return Some(i);
            }
            path.pop();
        }
        None
    }
}

fn on(path: &[&Certificate], c: &Certificate) -> bool {
    path.iter().any(|p| p.der == c.der)
}

fn names_match(child: &Certificate, issuer: &Certificate) -> bool {
    match (child.parsed(), issuer.parsed()) {
        (Ok(c), Ok(i)) => super::rules::names_issuer(&c, &i),
        _ => false,
    }
}

/// The Notary Project's order: `certs[0]` is the leaf, each certificate is issued by the next,
/// and the last, and only the last, is a self-signed root (notation-core-go
/// `validateCertChain`). Each certificate is checked in turn: its time (for profiles checked at
/// an instant), its place in the order, then its role's rules.
pub(crate) fn check_in_order(certs: &[Certificate], profile: &Profile) -> Result<(), String> {
    let Some(last) = certs.len().checked_sub(1) else {
        return Err("the certificate chain is empty".into());
    };
    if last == 0 {
        let c = &certs[0];
        profile.check_time(c, Role::Leaf)?;
        profile::notary_signature(c, c)
            .map_err(|e| format!("the single certificate is not validly self-signed: {e}"))?;
        if !c.is_self_issued() {
            return Err(format!(
                "the single certificate {:?} is not self-signed, so the chain does not end in a root",
                c.go_subject()
            ));
        }
        return profile.check_role(c, Role::Leaf);
    }
    for (i, c) in certs.iter().enumerate() {
        let role = if i == 0 { Role::Leaf } else { Role::Ca { cas_below: i - 1 } };
        profile.check_time(c, role)?;
        if i == last {
            if !profile::notary_self_signed(c) {
                return Err(format!("the chain ends with {:?}, which is not a self-signed root", c.go_subject()));
            }
        } else {
            if profile::notary_self_signed(c) {
                let what = if i == 0 { "leaf" } else { "intermediate" };
                return Err(format!("the {what} certificate {:?} is self-signed", c.go_subject()));
            }
            profile.check_issued(c, &certs[i + 1])?;
        }
        profile.check_role(c, role)?;
    }
    Ok(())
}
