//! Configuration: the TOML file ops teams keep in git, parsed strictly.
//!
//! Loading is two steps. `serde` with `deny_unknown_fields` turns the text
//! into `Raw*` structs, so a typo is an error and never a silently ignored key.
//! Then `validate` checks every value, reads every trust file, and reports *all*
//! problems at once, each with the key and a fix, so `check-config` can be run
//! once in CI instead of once per mistake.
//!
//! Relative paths are resolved against the directory of the config file, so
//! the same file works from any working directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The config file as written, before validation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    #[serde(default)]
    pub cache: RawCache,
    pub notation: Option<RawNotation>,
    /// `postgres://…` for a shared pin store; default is the embedded store.
    pub pin_store: Option<String>,
    pub pins_file: Option<PathBuf>,
    /// How often a pinned tag is re-resolved upstream, in the background, to
    /// detect moves. 0 checks on every fetch (still in the background).
    #[serde(default = "default_pin_revalidate")]
    pub pin_revalidate_secs: u64,
}

fn default_pin_revalidate() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The registry name clients use: containerd's `ns=` value.
    pub registry: String,
    pub url: String,
    #[serde(default)]
    pub default: bool,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse whatever does not verify.
    #[default]
    Enforce,
    /// Allow everything, but log what would have been refused.
    Audit,
}

/// How a policy combines its authorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Any one satisfied authority allows the image.
    #[default]
    Any,
    /// Every configured authority must be satisfied.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnTagMove {
    #[default]
    Deny,
    ServePinned,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    pub scope: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub require: Require,
    #[serde(default)]
    pub cosign_keys: Vec<PathBuf>,
    #[serde(default)]
    pub cosign_certificates: Vec<RawCosignCertificate>,
    /// Rekor public keys; when set, a cosign signature must carry a bundle
    /// (SET) signed by one of them.
    #[serde(default)]
    pub rekor_keys: Vec<PathBuf>,
    /// Where cosign signatures live, like `COSIGN_REPOSITORY`: `<repo>` in the same registry.
    pub signature_repository: Option<String>,
    /// What `critical.identity.docker-reference` must name. Default:
    /// `<registry>/<repository>`; `"any"` skips the check (for renamed mirrors).
    pub docker_reference: Option<String>,
    /// Accept cosign bundles whose signed statement names no repository, as
    /// cosign v3 writes them. Insecure: such a bundle can be copied, with the
    /// image, from any repository signed by a trusted key. Warned at start.
    #[serde(default)]
    pub dangerous_accept_unbound_bundles: bool,
    #[serde(default)]
    pub notation: bool,
    #[serde(default)]
    pub immutable_tags: Vec<String>,
    #[serde(default)]
    pub on_tag_move: OnTagMove,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCosignCertificate {
    pub roots: Option<PathBuf>,
    pub sigstore_trusted_root: Option<PathBuf>,
    pub identity: Option<String>,
    pub identity_regexp: Option<String>,
    pub issuer: Option<String>,
    pub rekor_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotation {
    pub trust_policy: PathBuf,
    pub trust_store: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// How long an allow verdict is reused.
    #[serde(default = "default_allow_ttl")]
    pub allow_ttl_secs: u64,
    /// How long a denial is reused; short, so a fix upstream shows quickly.
    #[serde(default = "default_deny_ttl")]
    pub deny_ttl_secs: u64,
    /// Manifests kept in memory, by total bytes.
    #[serde(default = "default_manifest_cache_bytes")]
    pub manifest_cache_bytes: u64,
    /// How often a mutable tag (one no `immutable_tags` pins) is re-resolved
    /// upstream; in between, the last resolution answers (still decided by
    /// policy). 0 resolves on every request.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl_secs: u64,
    /// While upstream is down (unreachable, timing out, 5xx), how long a
    /// mutable tag's last resolution and an allow past `allow_ttl_secs` may
    /// still answer. 0 serves nothing stale.
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error_secs: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            allow_ttl_secs: default_allow_ttl(),
            deny_ttl_secs: default_deny_ttl(),
            manifest_cache_bytes: default_manifest_cache_bytes(),
            tag_ttl_secs: default_tag_ttl(),
            stale_if_error_secs: default_stale_if_error(),
        }
    }
}

/// 30 s: a fleet rolling out a release resolves each tag within seconds of
/// each other, so upstream sees one resolution per tag instead of one per
/// node (registries count them against rate limits), while a push to a
/// mutable tag is still seen within half a minute.
fn default_tag_ttl() -> u64 {
    30
}
/// An hour: long enough to ride out a typical registry incident, short enough
/// that what is served was verified, and named by its tag, within the hour.
fn default_stale_if_error() -> u64 {
    3600
}
/// Longer than this, a mutable tag would in effect be pinned without the
/// pin store's move detection: `immutable_tags` is the tool for that.
const MAX_TAG_TTL: u64 = 3600;
/// A week: beyond this, a stale answer is history, not a cache.
const MAX_STALE_IF_ERROR: u64 = 7 * 86400;

fn default_allow_ttl() -> u64 {
    300
}
fn default_deny_ttl() -> u64 {
    10
}
fn default_manifest_cache_bytes() -> u64 {
    64 << 20
}

/// One thing wrong with the config: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {} (fix: {})", self.file.display(), self.key, self.message, self.fix)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while validating.
pub struct Checker {
    file: PathBuf,
    base: PathBuf,
    pub problems: Vec<Problem>,
}

impl Checker {
    pub fn new(file: &Path) -> Checker {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Checker { file: file.to_path_buf(), base, problems: Vec::new() }
    }

    pub fn problem(&mut self, key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Reads a trust file, or records why it cannot be read.
    pub fn read(&mut self, key: &str, p: &Path) -> Option<TrustFile> {
        let path = self.resolve(p);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_TRUST_FILE => {
                self.problem(
                    key,
                    format!("{} is {} bytes, more than the {MAX_TRUST_FILE} allowed", path.display(), m.len()),
                    "point at the key or certificate file itself",
                );
                return None;
            }
            _ => {}
        }
        match std::fs::read(&path) {
            Ok(bytes) => Some(TrustFile { name: p.display().to_string(), path, bytes }),
            Err(e) => {
                self.problem(
                    key,
                    format!("cannot read {}: {e}", path.display()),
                    "check the path; relative paths are resolved against the config file's directory",
                );
                None
            }
        }
    }
}

/// Trust material files are small; a huge file is a mistake, not a key.
const MAX_TRUST_FILE: u64 = 16 << 20;

/// A file of trust material with its bytes, read once at load.
#[derive(Clone, Debug)]
pub struct TrustFile {
    /// The path as written in the config, used in refusal messages.
    pub name: String,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// A validated upstream registry.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub registry: String,
    /// `host[:port]` of the real registry.
    pub host: String,
    /// Plain HTTP: only for loopback test registries; warned about at start.
    pub plain_http: bool,
    pub default: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca: Option<TrustFile>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// The validated configuration. Everything downstream trusts it.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: Option<(TrustFile, TrustFile)>,
    pub upstreams: Vec<Upstream>,
    pub allow_ttl: Duration,
    pub deny_ttl: Duration,
    pub manifest_cache_bytes: u64,
    /// `[cache] tag_ttl_secs`.
    pub tag_ttl: Duration,
    /// `[cache] stale_if_error_secs`.
    pub stale_if_error: Duration,
    /// `pin_revalidate_secs`.
    pub pin_revalidate: Duration,
    /// A `postgres://` URL (scheme checked), or `None` for the embedded store.
    pub pin_store: Option<String>,
    /// The pins file, read; `lib::load` checks that it parses.
    pub pins_file: Option<TrustFile>,
}

/// The parts of the file that `policy::PolicySet::build` validates: the
/// policies and the Notation trust material they share.
pub struct PolicySection {
    pub policy: Vec<RawPolicy>,
    pub notation: Option<RawNotation>,
}

impl From<RawConfig> for PolicySection {
    fn from(raw: RawConfig) -> PolicySection {
        PolicySection { policy: raw.policy, notation: raw.notation }
    }
}

impl Config {
    /// Reads and validates a config file. `Err` only when the file cannot be
    /// read or parsed; other problems are collected in the returned `Checker`,
    /// to which `policy::PolicySet::build` adds the policies' problems.
    pub fn load(path: &Path) -> Result<(Config, PolicySection, Checker), Problems> {
        let mut c = Checker::new(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                c.problem("(file)", format!("cannot read: {e}"), "pass --config with the path of sigmirror.toml");
                return Err(Problems(c.problems));
            }
        };
        Self::from_str(&text, c)
    }

    pub fn from_str(text: &str, mut c: Checker) -> Result<(Config, PolicySection, Checker), Problems> {
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let key = e.span().map(|s| format!("at byte {}", s.start)).unwrap_or_else(|| "(syntax)".into());
                c.problem(key, e.message().to_string(), "see config/sigmirror.toml for every accepted key");
                return Err(Problems(c.problems));
            }
        };
        let listen = match raw.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.problem(
                    "listen",
                    format!("{:?} is not an address", raw.listen),
                    "write host:port, for example \"127.0.0.1:5050\"",
                );
                "127.0.0.1:0".parse().expect("literal")
            }
        };
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => {
                let cert = c.read("tls_cert", cert);
                let key = c.read("tls_key", key);
                cert.zip(key)
            }
            (None, None) => None,
            _ => {
                c.problem(
                    "tls_cert",
                    "tls_cert and tls_key must be set together",
                    "set both, or neither for plain HTTP",
                );
                None
            }
        };
        let data_dir = c.resolve(&raw.data_dir);
        let upstreams = validate_upstreams(&raw.upstream, &mut c);
        let config = Config {
            file: c.file.clone(),
            listen,
            data_dir,
            tls,
            upstreams,
            allow_ttl: Duration::from_secs(raw.cache.allow_ttl_secs),
            deny_ttl: Duration::from_secs(raw.cache.deny_ttl_secs),
            manifest_cache_bytes: raw.cache.manifest_cache_bytes,
            tag_ttl: Duration::from_secs(raw.cache.tag_ttl_secs),
            stale_if_error: Duration::from_secs(raw.cache.stale_if_error_secs),
            pin_revalidate: Duration::from_secs(raw.pin_revalidate_secs),
            pin_store: validate_pin_store(raw.pin_store.as_deref(), &mut c),
            pins_file: raw.pins_file.as_ref().and_then(|f| c.read("pins_file", f)),
        };
        if config.allow_ttl.is_zero() {
            c.problem("cache.allow_ttl_secs", "must be at least 1", "set a few minutes, for example 300");
        }
        if raw.cache.tag_ttl_secs > MAX_TAG_TTL {
            c.problem(
                "cache.tag_ttl_secs",
                format!("{} is more than {MAX_TAG_TTL}", raw.cache.tag_ttl_secs),
                "keep it under an hour; list tags that must not move in a policy's immutable_tags instead",
            );
        }
        if raw.cache.stale_if_error_secs > MAX_STALE_IF_ERROR {
            c.problem(
                "cache.stale_if_error_secs",
                format!("{} is more than {MAX_STALE_IF_ERROR} (a week)", raw.cache.stale_if_error_secs),
                "set the longest upstream outage you would serve through, for example 3600",
            );
        }
        // Problems so far stay in the checker: the caller validates the
        // policies too and then reports everything at once.
        Ok((config, raw.into(), c))
    }

    /// The upstream for a request: the one whose `registry` equals `ns`, or the
    /// default one when the client sent no `ns`. `None` means refuse: we never
    /// contact a registry that is not configured.
    pub fn upstream_for(&self, ns: Option<&str>) -> Option<&Upstream> {
        match ns {
            Some(ns) => self.upstreams.iter().find(|u| u.registry == ns),
            None => self.upstreams.iter().find(|u| u.default),
        }
    }
}

fn validate_upstreams(raw: &[RawUpstream], c: &mut Checker) -> Vec<Upstream> {
    let mut out = Vec::new();
    if raw.is_empty() {
        c.problem("upstream", "no [[upstream]] is configured", "add an [[upstream]] table with registry and url");
    }
    let defaults = raw.iter().filter(|u| u.default).count();
    if defaults > 1 {
        c.problem(
            "upstream.default",
            format!("{defaults} upstreams are marked default"),
            "mark at most one upstream default = true",
        );
    }
    for (i, u) in raw.iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        if u.registry.is_empty() || u.registry.contains('/') || u.registry.contains(char::is_whitespace) {
            c.problem(
                key("registry"),
                format!("{:?} is not a registry host name", u.registry),
                "use the name clients send as ns=, for example \"docker.io\"",
            );
        }
        if raw[..i].iter().any(|o| o.registry == u.registry) {
            c.problem(
                key("registry"),
                format!("{:?} is configured twice", u.registry),
                "keep one [[upstream]] per registry",
            );
        }
        let (plain_http, host) = if let Some(h) = u.url.strip_prefix("https://") {
            (false, h)
        } else if let Some(h) = u.url.strip_prefix("http://") {
            (true, h)
        } else {
            c.problem(
                key("url"),
                format!("{:?} does not start with https://", u.url),
                "write the registry's base URL, for example \"https://registry-1.docker.io\"",
            );
            (false, "")
        };
        let host = host.trim_end_matches('/');
        // Credentials in the URL would be printed wherever the URL is (start-up
        // warnings, logs) and sent to whatever host a redirect names.
        if host.contains('@') {
            c.problem(
                key("url"),
                format!("{:?} carries credentials (user:password@)", redact_userinfo(&u.url)),
                "remove them from the url; set username and password_file instead",
            );
        }
        if host.is_empty() || host.contains('/') {
            c.problem(
                key("url"),
                format!("{:?} must be a scheme and host[:port] only", u.url),
                "drop any path; sigmirror adds /v2/ itself",
            );
        }
        let password = match (&u.username, &u.password_file) {
            (Some(_), Some(p)) => {
                c.read(&key("password_file"), p).map(|f| String::from_utf8_lossy(&f.bytes).trim().to_string())
            }
            (None, None) => None,
            _ => {
                c.problem(
                    key("username"),
                    "username and password_file must be set together",
                    "set both for basic or token auth, or neither for anonymous pulls",
                );
                None
            }
        };
        let ca = u.ca_file.as_ref().and_then(|p| c.read(&key("ca_file"), p));
        if u.connect_timeout_secs == 0 || u.request_timeout_secs == 0 {
            c.problem(
                key("request_timeout_secs"),
                "timeouts must be at least 1 second",
                "remove the key to use the defaults (5 s connect, 30 s request)",
            );
        }
        out.push(Upstream {
            registry: u.registry.clone(),
            host: host.to_string(),
            plain_http,
            default: u.default,
            username: u.username.clone(),
            password,
            ca,
            connect_timeout: Duration::from_secs(u.connect_timeout_secs),
            request_timeout: Duration::from_secs(u.request_timeout_secs),
        });
    }
    out
}

/// A URL with its userinfo (`user:password@`) replaced by `…`, for
/// anything printed: problem reports and logs. Only the authority is looked
/// at, so an `@` in a path stays, and one inside a password does not leak.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://…{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The pin store URL, if its scheme is one sigmirror can open. Checked here
/// so `check-config` reports it, not only `serve` when it opens the store.
fn validate_pin_store(url: Option<&str>, c: &mut Checker) -> Option<String> {
    let url = url?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Some(url.to_string());
    }
    c.problem(
        "pin_store",
        "is not a postgres:// or postgresql:// URL",
        "write postgres://user:password@host/db, or remove the key for the embedded store under data_dir",
    );
    None
}
