//! The Notary Project trust policy (`trustpolicy.json`, version "1.0"), read
//! verbatim as notation writes it and validated up front.
//!
//! Operators copy this file from their notation setup, so the schema is
//! notation's and not ours. Validation happens once, at load, and reports every
//! problem with the statement it is in: a policy that notation would reject at
//! verification time is rejected here before the proxy serves anything.
//! Unknown keys are refused as well, because a key we do not understand could
//! be a restriction we would silently drop.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a verification level does with one kind of validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A failure refuses the signature.
    Enforce,
    /// A failure is reported but does not refuse.
    Log,
    /// The validation is not run (only revocation can be skipped).
    Skip,
}

/// `signatureVerification.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Strict,
    Permissive,
    Audit,
    Skip,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Strict => "strict",
            Level::Permissive => "permissive",
            Level::Audit => "audit",
            Level::Skip => "skip",
        }
    }
}

/// The resolved action for each overridable validation. Integrity is not
/// here because no level except `skip` relaxes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actions {
    pub authenticity: Action,
    pub authentic_timestamp: Action,
    pub expiry: Action,
    pub revocation: Action,
}

impl Actions {
    /// The table in the trust-store-trust-policy specification.
    fn for_level(level: Level) -> Actions {
        use Action::*;
        match level {
            Level::Strict => {
                Actions { authenticity: Enforce, authentic_timestamp: Enforce, expiry: Enforce, revocation: Enforce }
            }
            Level::Permissive => {
                Actions { authenticity: Enforce, authentic_timestamp: Log, expiry: Log, revocation: Log }
            }
            Level::Audit => Actions { authenticity: Log, authentic_timestamp: Log, expiry: Log, revocation: Log },
            Level::Skip => Actions { authenticity: Skip, authentic_timestamp: Skip, expiry: Skip, revocation: Skip },
        }
    }
}

/// `verifyTimestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyTimestamp {
    Always,
    AfterCertExpiry,
}

/// The three kinds of named trust store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreType {
    Ca,
    SigningAuthority,
    Tsa,
}

impl StoreType {
    pub fn name(self) -> &'static str {
        match self {
            StoreType::Ca => "ca",
            StoreType::SigningAuthority => "signingAuthority",
            StoreType::Tsa => "tsa",
        }
    }

    pub fn all() -> [StoreType; 3] {
        [StoreType::Ca, StoreType::SigningAuthority, StoreType::Tsa]
    }
}

/// `"<type>:<name>"` in `trustStores`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreRef {
    pub kind: StoreType,
    pub name: String,
}

impl std::fmt::Display for StoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.name)
    }
}

/// A parsed `x509.subject:` identity: attribute short name → value, in the
/// order written (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dn(pub Vec<(String, String)>);

impl Dn {
    /// True when every attribute of `self` appears with the same value in
    /// `leaf`: notation's `IsSubsetDN`, exact and case-sensitive.
    pub fn is_subset_of(&self, leaf: &Dn) -> bool {
        self.0.iter().all(|(k, v)| leaf.0.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

impl std::fmt::Display for Dn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identities {
    /// `"*"`: any leaf that chains to the trust stores.
    Any,
    Subjects(Vec<Dn>),
}

/// One validated trust policy statement.
#[derive(Clone, Debug)]
pub struct Statement {
    pub name: String,
    /// Exact `<registry>/<repository>` scopes; empty for the global statement.
    pub scopes: Vec<String>,
    pub global: bool,
    pub level: Level,
    pub actions: Actions,
    pub verify_timestamp: VerifyTimestamp,
    pub trust_stores: Vec<StoreRef>,
    pub identities: Identities,
}

impl Statement {
    /// The named stores of one type, in policy order.
    pub fn stores_of(&self, kind: StoreType) -> impl Iterator<Item = &StoreRef> {
        self.trust_stores.iter().filter(move |s| s.kind == kind)
    }
}

/// The validated policy document.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    pub statements: Vec<Statement>,
}

impl TrustPolicy {
    /// The statement for `<registry>/<repository>`: an exact scope match wins
    /// over the global `*` statement; no match means no statement.
    pub fn statement_for(&self, scope: &str) -> Option<&Statement> {
        self.statements
            .iter()
            .find(|s| s.scopes.iter().any(|x| x == scope))
            .or_else(|| self.statements.iter().find(|s| s.global))
    }

    /// Every store any statement names, deduplicated, so the trust store
    /// loader knows what to read.
    pub fn referenced_stores(&self) -> Vec<StoreRef> {
        let mut v: Vec<StoreRef> = self.statements.iter().flat_map(|s| s.trust_stores.iter().cloned()).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDoc {
    version: String,
    trust_policies: Vec<RawStatement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStatement {
    name: String,
    registry_scopes: Vec<String>,
    signature_verification: RawSignatureVerification,
    #[serde(default)]
    trust_stores: Option<Vec<String>>,
    #[serde(default)]
    trusted_identities: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSignatureVerification {
    level: String,
    #[serde(default, rename = "override")]
    override_: Option<BTreeMap<String, String>>,
    #[serde(default)]
    verify_timestamp: Option<String>,
}

/// One problem found while validating: where in the document and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub at: String,
    pub message: String,
    pub fix: String,
}

fn problem(out: &mut Vec<PolicyProblem>, at: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
    out.push(PolicyProblem { at: at.into(), message: message.into(), fix: fix.into() });
}

/// Parses and validates the trust policy JSON. Returns the policy only when
/// there were no problems; every problem found is pushed to `out`.
pub fn parse(bytes: &[u8], out: &mut Vec<PolicyProblem>) -> Option<TrustPolicy> {
    let raw: RawDoc = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            problem(
                out,
                "(document)",
                format!("is not a notation trust policy: {e}"),
                "write the trust policy as notation documents it: {\"version\": \"1.0\", \"trustPolicies\": [...]}",
            );
            return None;
        }
    };
    let before = out.len();
    if raw.version != "1.0" {
        problem(out, "version", format!("{:?} is not supported", raw.version), "set \"version\": \"1.0\"");
    }
    if raw.trust_policies.is_empty() {
        problem(
            out,
            "trustPolicies",
            "is empty, so every artifact would be refused",
            "add at least one trust policy statement",
        );
    }
    let mut statements = Vec::new();
    for (i, s) in raw.trust_policies.iter().enumerate() {
        if let Some(st) = validate_statement(i, s, out) {
            statements.push(st);
        }
    }
    // Cross-statement rules: names and scopes are unique, one global.
    for (i, s) in raw.trust_policies.iter().enumerate() {
        if raw.trust_policies[..i].iter().any(|o| o.name == s.name) {
            problem(
                out,
                format!("trustPolicies[{i}].name"),
                format!("statement name {:?} is used more than once", s.name),
                "give every statement a distinct name",
            );
        }
        for scope in &s.registry_scopes {
            if scope == "*" {
                continue;
            }
            if raw.trust_policies[..i].iter().any(|o| o.registry_scopes.contains(scope)) {
                problem(
                    out,
                    format!("trustPolicies[{i}].registryScopes"),
                    format!("scope {scope:?} appears in more than one statement, so which applies would be ambiguous"),
                    "list each repository in exactly one statement",
                );
            }
        }
    }
    let globals = raw.trust_policies.iter().filter(|s| s.registry_scopes.iter().any(|x| x == "*")).count();
    if globals > 1 {
        problem(
            out,
            "trustPolicies",
            format!("{globals} statements use the global scope \"*\""),
            "keep \"*\" in at most one statement",
        );
    }
    if out.len() > before {
        return None;
    }
    Some(TrustPolicy { statements })
}

fn validate_statement(i: usize, s: &RawStatement, out: &mut Vec<PolicyProblem>) -> Option<Statement> {
    let before = out.len();
    let at = |k: &str| format!("trustPolicies[{i}] ({:?}).{k}", s.name);
    if s.name.trim().is_empty() {
        problem(out, format!("trustPolicies[{i}].name"), "is empty", "name every statement");
    }

    // registryScopes
    let mut global = false;
    let mut scopes = Vec::new();
    if s.registry_scopes.is_empty() {
        problem(
            out,
            at("registryScopes"),
            "is empty",
            "list fully qualified repositories such as \"registry.example.com/team/app\", or \"*\"",
        );
    }
    for scope in &s.registry_scopes {
        if scope == "*" {
            global = true;
            if s.registry_scopes.len() > 1 {
                problem(
                    out,
                    at("registryScopes"),
                    "\"*\" is mixed with other scopes",
                    "use \"*\" alone in its statement",
                );
            }
        } else if let Err(why) = check_scope(scope) {
            problem(out, at("registryScopes"), format!("{scope:?} {why}"), "write <registry>/<repository> with no tag, digest or wildcard, for example \"docker.io/library/alpine\"");
        } else {
            scopes.push(scope.clone());
        }
    }

    // signatureVerification
    let sv = &s.signature_verification;
    let level = match sv.level.as_str() {
        "strict" => Some(Level::Strict),
        "permissive" => Some(Level::Permissive),
        "audit" => Some(Level::Audit),
        "skip" => Some(Level::Skip),
        other => {
            problem(
                out,
                at("signatureVerification.level"),
                format!("{other:?} is not a verification level"),
                "use strict, permissive, audit or skip",
            );
            None
        }
    };
    let mut actions = level.map(Actions::for_level);
    if let (Some(lvl), Some(ov)) = (level, &sv.override_) {
        if lvl == Level::Skip && !ov.is_empty() {
            problem(
                out,
                at("signatureVerification.override"),
                "the skip level cannot be customised",
                "remove override, or use another level",
            );
        }
        if let Some(a) = actions.as_mut() {
            for (k, v) in ov {
                let parsed = match v.as_str() {
                    "enforce" => Some(Action::Enforce),
                    "log" => Some(Action::Log),
                    "skip" => Some(Action::Skip),
                    _ => None,
                };
                let slot = match k.as_str() {
                    "authenticity" => Some(&mut a.authenticity),
                    "authenticTimestamp" => Some(&mut a.authentic_timestamp),
                    "expiry" => Some(&mut a.expiry),
                    "revocation" => Some(&mut a.revocation),
                    "integrity" => {
                        problem(
                            out,
                            at("signatureVerification.override"),
                            "integrity cannot be overridden",
                            "remove the integrity key",
                        );
                        None
                    }
                    other => {
                        problem(
                            out,
                            at("signatureVerification.override"),
                            format!("{other:?} is not a validation that can be overridden"),
                            "use authenticity, authenticTimestamp, expiry or revocation",
                        );
                        None
                    }
                };
                let Some(slot) = slot else { continue };
                match parsed {
                    // Only revocation may be skipped: the others are part of
                    // what a signature means.
                    Some(Action::Skip) if k != "revocation" => {
                        problem(
                            out,
                            at("signatureVerification.override"),
                            format!("{k} cannot be set to skip"),
                            "use enforce or log",
                        );
                    }
                    Some(act) => *slot = act,
                    None => problem(
                        out,
                        at("signatureVerification.override"),
                        format!("{k}: {v:?} is not an action"),
                        "use enforce or log (and skip for revocation)",
                    ),
                }
            }
        }
    }
    let verify_timestamp = match sv.verify_timestamp.as_deref() {
        None | Some("always") => VerifyTimestamp::Always,
        Some("afterCertExpiry") => VerifyTimestamp::AfterCertExpiry,
        Some(other) => {
            problem(
                out,
                at("signatureVerification.verifyTimestamp"),
                format!("{other:?} is not supported"),
                "use \"always\" or \"afterCertExpiry\"",
            );
            VerifyTimestamp::Always
        }
    };
    if level == Some(Level::Skip) && global {
        problem(
            out,
            at("signatureVerification.level"),
            "skip cannot be used with the global scope \"*\"",
            "list the repositories that may be unsigned explicitly",
        );
    }

    // trustStores and trustedIdentities
    let stores_raw = s.trust_stores.as_deref().unwrap_or_default();
    let ids_raw = s.trusted_identities.as_deref().unwrap_or_default();
    let mut trust_stores = Vec::new();
    let mut identities = Identities::Subjects(Vec::new());
    if level == Some(Level::Skip) {
        if !stores_raw.is_empty() || !ids_raw.is_empty() {
            problem(
                out,
                at("trustStores"),
                "a skip statement must not list trust stores or trusted identities",
                "remove trustStores and trustedIdentities from this statement",
            );
        }
    } else {
        if stores_raw.is_empty() || ids_raw.is_empty() {
            problem(
                out,
                at("trustStores"),
                "trust stores and trusted identities must both be listed",
                "add \"trustStores\": [\"ca:<name>\"] and \"trustedIdentities\": [\"*\"] or x509.subject identities",
            );
        }
        for ts in stores_raw {
            match parse_store_ref(ts) {
                Ok(r) => {
                    if trust_stores.contains(&r) {
                        problem(
                            out,
                            at("trustStores"),
                            format!("{ts:?} is listed twice"),
                            "list each trust store once",
                        );
                    } else {
                        trust_stores.push(r);
                    }
                }
                Err(why) => problem(
                    out,
                    at("trustStores"),
                    format!("{ts:?} {why}"),
                    "write \"ca:<name>\", \"signingAuthority:<name>\" or \"tsa:<name>\"",
                ),
            }
        }
        if !stores_raw.is_empty() && !trust_stores.iter().any(|r| r.kind != StoreType::Tsa) {
            problem(
                out,
                at("trustStores"),
                "only tsa stores are listed, so no signing certificate can be trusted",
                "add a ca:<name> or signingAuthority:<name> store",
            );
        }
        match parse_identities(ids_raw) {
            Ok(ids) => identities = ids,
            Err(why) => problem(
                out,
                at("trustedIdentities"),
                why,
                "use [\"*\"], or \"x509.subject: C=..., ST=..., O=...\" entries that do not overlap",
            ),
        }
    }
    if out.len() > before {
        return None;
    }
    Some(Statement {
        name: s.name.clone(),
        scopes,
        global,
        level: level?,
        actions: actions?,
        verify_timestamp,
        trust_stores,
        identities,
    })
}

/// A scope is `host[:port]/path`, with the path in OCI repository syntax and
/// no tag or digest: notation matches it exactly, so anything else would
/// never match and hide a typo.
fn check_scope(scope: &str) -> Result<(), &'static str> {
    if scope.contains('*') {
        return Err("contains a wildcard; only the single value \"*\" is allowed");
    }
    if scope.contains('@') {
        return Err("contains a digest");
    }
    let Some((host, path)) = scope.split_once('/') else {
        return Err("is not <registry>/<repository>");
    };
    if host.is_empty() || host.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
    {
        return Err("does not start with a registry host name");
    }
    if path.is_empty() {
        return Err("has no repository");
    }
    for comp in path.split('/') {
        if !is_path_component(comp) {
            return Err("is not a valid repository name (lowercase letters, digits and separators; no tag)");
        }
    }
    Ok(())
}

/// OCI distribution path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn parse_store_ref(s: &str) -> Result<StoreRef, &'static str> {
    let Some((kind, name)) = s.split_once(':') else {
        return Err("has no type prefix");
    };
    let kind = match kind {
        "ca" => StoreType::Ca,
        "signingAuthority" => StoreType::SigningAuthority,
        "tsa" => StoreType::Tsa,
        _ => return Err("has an unknown trust store type"),
    };
    if !is_store_name(name) {
        return Err("has an invalid store name (letters, digits, '.', '_' and '-' only)");
    }
    Ok(StoreRef { kind, name: name.to_string() })
}

/// Store names become directory names, so they are restricted the way
/// notation restricts them; this also rules out `..` and path separators.
pub fn is_store_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_identities(ids: &[String]) -> Result<Identities, String> {
    if ids.iter().any(|i| i == "*") {
        if ids.len() > 1 {
            return Err("\"*\" is mixed with other identities".into());
        }
        return Ok(Identities::Any);
    }
    let mut dns: Vec<Dn> = Vec::new();
    for id in ids {
        let Some((prefix, value)) = id.split_once(':') else {
            return Err(format!("{id:?} has no \"x509.subject:\" prefix"));
        };
        if prefix.trim() != "x509.subject" {
            return Err(format!("{id:?}: only x509.subject identities are supported"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{id:?} has no distinguished name"));
        }
        let dn = parse_dn(value).map_err(|e| format!("{id:?}: {e}"))?;
        for k in ["C", "ST", "O"] {
            if !dn.0.iter().any(|(t, _)| t == k) {
                return Err(format!("{id:?} has no {k}; every x509.subject identity needs C, ST and O"));
            }
        }
        if let Some(o) = dns.iter().find(|o| o.is_subset_of(&dn) || dn.is_subset_of(o)) {
            return Err(format!("{id:?} overlaps with \"x509.subject: {o}\"; one certificate would match both"));
        }
        dns.push(dn);
    }
    Ok(Identities::Subjects(dns))
}

/// Parses an RFC 4514 distinguished name the way notation does: single-valued
/// RDNs only, no repeated attribute types, no `#hex` values, `S` as an alias
/// of `ST`. Attribute types are kept as written (notation compares them
/// case-sensitively).
pub fn parse_dn(s: &str) -> Result<Dn, String> {
    if s.contains("=#") {
        return Err("hex-encoded (=#) attribute values are not supported".into());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    loop {
        // attribute type, up to '='
        let mut ty = String::new();
        while i < chars.len() && chars[i] != '=' {
            if matches!(chars[i], ',' | ';' | '+' | '\\') {
                return Err(format!("attribute type is malformed near {:?}", chars[i]));
            }
            ty.push(chars[i]);
            i += 1;
        }
        if i >= chars.len() {
            return Err(format!("{:?} has no '='", ty.trim()));
        }
        i += 1; // '='
        let ty = ty.trim().to_string();
        if ty.is_empty() || !ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            return Err(format!("{ty:?} is not an attribute type"));
        }
        // attribute value, with escapes, up to an unescaped separator
        let mut val = String::new();
        // Trailing spaces are dropped unless escaped, so track where escaped
        // content ends.
        let mut keep_len = 0usize;
        let mut pending: Vec<u8> = Vec::new();
        let mut end = None;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '\\' => {
                    let next = chars.get(i + 1).copied().ok_or("ends with a lone backslash")?;
                    if next.is_ascii_hexdigit() {
                        let n2 = chars
                            .get(i + 2)
                            .copied()
                            .filter(|c| c.is_ascii_hexdigit())
                            .ok_or("has a bad \\hex escape")?;
                        let byte =
                            u8::from_str_radix(&format!("{next}{n2}"), 16).map_err(|_| "has a bad \\hex escape")?;
                        pending.push(byte);
                        i += 3;
                        // Hex escapes build UTF-8 byte sequences.
                        if let Ok(s) = std::str::from_utf8(&pending) {
                            val.push_str(s);
                            pending.clear();
                            keep_len = val.len();
                        }
                        continue;
                    }
                    if !pending.is_empty() {
                        return Err("has a \\hex escape that is not UTF-8".into());
                    }
                    val.push(next);
                    keep_len = val.len();
                    i += 2;
                }
                ',' | ';' | '+' => {
                    end = Some(c);
                    i += 1;
                    break;
                }
                _ => {
                    if !pending.is_empty() {
                        return Err("has a \\hex escape that is not UTF-8".into());
                    }
                    if val.is_empty() && c == ' ' {
                        // leading unescaped space
                    } else {
                        val.push(c);
                        if c != ' ' {
                            keep_len = val.len();
                        }
                    }
                    i += 1;
                }
            }
        }
        if !pending.is_empty() {
            return Err("has a \\hex escape that is not UTF-8".into());
        }
        val.truncate(keep_len);
        if end == Some('+') {
            return Err("multi-valued RDNs (+) are not supported".into());
        }
        let ty = if ty == "S" { "ST".to_string() } else { ty };
        if attrs.iter().any(|(t, _)| *t == ty) {
            return Err(format!("attribute {ty} appears more than once"));
        }
        attrs.push((ty, val));
        match end {
            None => break,
            Some(_) => {
                if chars[i..].iter().all(|c| c.is_whitespace()) {
                    return Err("ends with a separator".into());
                }
            }
        }
    }
    Ok(Dn(attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(json: &str) -> Vec<String> {
        let mut out = Vec::new();
        let r = parse(json.as_bytes(), &mut out);
        assert_eq!(r.is_some(), out.is_empty());
        out.into_iter().map(|p| format!("{}: {}", p.at, p.message)).collect()
    }

    fn one(stmt: &str) -> String {
        format!(r#"{{"version":"1.0","trustPolicies":[{stmt}]}}"#)
    }

    #[test]
    fn a_policy_as_notation_documents_it_loads_with_levels_and_overrides_resolved() {
        let json = r#"{
          "version": "1.0",
          "trustPolicies": [
            {"name": "wabbit", "registryScopes": ["registry.acme-rockets.io/software/net-monitor"],
             "signatureVerification": {"level": "strict", "override": {"expiry": "log", "revocation": "skip"}, "verifyTimestamp": "afterCertExpiry"},
             "trustStores": ["ca:wabbit-networks", "tsa:trusted-tsa"],
             "trustedIdentities": ["x509.subject: C=US, ST=WA, L=Seattle, O=wabbit-networks.io, OU=Security Tools"]},
            {"name": "unsigned", "registryScopes": ["registry.wabbit-networks.io/software/unsigned/net-utils"],
             "signatureVerification": {"level": "skip"}},
            {"name": "global", "registryScopes": ["*"], "signatureVerification": {"level": "audit"},
             "trustStores": ["ca:acme-rockets"], "trustedIdentities": ["*"]}
          ]}"#;
        let mut out = Vec::new();
        let p = parse(json.as_bytes(), &mut out).expect("valid");
        assert!(out.is_empty());
        let s = p.statement_for("registry.acme-rockets.io/software/net-monitor").unwrap();
        assert_eq!(s.name, "wabbit");
        assert_eq!(
            s.actions,
            Actions {
                authenticity: Action::Enforce,
                authentic_timestamp: Action::Enforce,
                expiry: Action::Log,
                revocation: Action::Skip
            }
        );
        assert_eq!(s.verify_timestamp, VerifyTimestamp::AfterCertExpiry);
        assert_eq!(
            p.statement_for("registry.wabbit-networks.io/software/unsigned/net-utils").unwrap().level,
            Level::Skip
        );
        assert_eq!(p.statement_for("docker.io/library/alpine").unwrap().name, "global");
        match &s.identities {
            Identities::Subjects(d) => assert_eq!(d[0].0[4], ("OU".to_string(), "Security Tools".to_string())),
            _ => panic!(),
        }
    }

    #[test]
    fn without_a_global_statement_an_unlisted_repository_has_no_statement() {
        let json = one(
            r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#,
        );
        let mut out = Vec::new();
        let p = parse(json.as_bytes(), &mut out).unwrap();
        assert!(p.statement_for("r.io/a").is_some());
        assert!(p.statement_for("r.io/a/b").is_none());
        assert!(p.statement_for("r.io/ab").is_none());
    }

    #[test]
    fn malformed_policies_are_reported_with_the_statement_they_are_in() {
        let cases: Vec<(String, &str)> = vec![
            (r#"{"version":"2.0","trustPolicies":[]}"#.into(), "\"2.0\" is not supported"),
            ("not json".into(), "is not a notation trust policy"),
            (r#"{"version":"1.0","trustPolicies":[],"extra":1}"#.into(), "unknown field"),
            (one(r#"{"name":"a","registryScopes":["*"],"signatureVerification":{"level":"strictest"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "\"strictest\" is not a verification level"),
            (one(r#"{"name":"a","registryScopes":["*"],"signatureVerification":{"level":"skip"}}"#), "skip cannot be used with the global scope"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"skip"},"trustStores":["ca:x"]}"#), "must not list trust stores"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"}}"#), "must both be listed"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["root:x"],"trustedIdentities":["*"]}"#), "unknown trust store type"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:../x"],"trustedIdentities":["*"]}"#), "invalid store name"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["tsa:x"],"trustedIdentities":["*"]}"#), "only tsa stores"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict","override":{"integrity":"log"}},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "integrity cannot be overridden"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict","override":{"expiry":"skip"}},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "expiry cannot be set to skip"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict","verifyTimestamp":"never"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "\"never\" is not supported"),
            (one(r#"{"name":"a","registryScopes":["r.io/a:tag"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "not a valid repository name"),
            (one(r#"{"name":"a","registryScopes":["r.io/*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "wildcard"),
            (one(r#"{"name":"a","registryScopes":["*","r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}"#), "mixed with other scopes"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["x509.subject: C=US, O=x"]}"#), "has no ST"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["CN=x"]}"#), "no \"x509.subject:\" prefix"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*","x509.subject: C=US, ST=WA, O=x"]}"#), "mixed with other identities"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=x, OU=a","x509.subject: C=US, ST=WA, O=x"]}"#), "overlaps"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["x509.subject: C=US+ST=WA, O=x"]}"#), "multi-valued"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=#0101"]}"#), "=#"),
            (one(r#"{"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=x, O=y"]}"#), "more than once"),
            (
                r#"{"version":"1.0","trustPolicies":[
                  {"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]},
                  {"name":"a","registryScopes":["r.io/a"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}"#
                    .into(),
                "appears in more than one statement",
            ),
            (
                r#"{"version":"1.0","trustPolicies":[
                  {"name":"a","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]},
                  {"name":"b","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}"#
                    .into(),
                "2 statements use the global scope",
            ),
        ];
        for (json, want) in cases {
            let got = problems_of(&json);
            assert!(got.iter().any(|p| p.contains(want)), "{json}\n wanted {want:?}, got {got:?}");
        }
    }

    #[test]
    fn distinguished_names_parse_like_rfc_4514_with_escapes_and_the_s_alias() {
        let dn = parse_dn(r"C=US, S=WA, O=Acme\, Inc., OU=\ lead space, CN=a\2Bb ").unwrap();
        assert_eq!(
            dn.0,
            vec![
                ("C".into(), "US".into()),
                ("ST".into(), "WA".into()),
                ("O".into(), "Acme, Inc.".into()),
                ("OU".into(), " lead space".into()),
                ("CN".into(), "a+b".into()),
            ]
        );
        assert!(parse_dn("C=US,").is_err());
        assert!(parse_dn("C").is_err());
        assert!(parse_dn(r"C=US\").is_err());
        let leaf = parse_dn("C=US, ST=WA, L=Seattle, O=Notary, CN=e2e").unwrap();
        assert!(parse_dn("C=US, ST=WA, O=Notary").unwrap().is_subset_of(&leaf));
        assert!(!parse_dn("C=US, ST=WA, O=notary").unwrap().is_subset_of(&leaf));
    }
}
