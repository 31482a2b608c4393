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

use crate::config_text::Source;

/// The config file as written, before validation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: String,
    /// A second, plain-HTTP listener for operators: metrics, health and the
    /// admin API the `pins` CLI uses while the server runs (`admin`).
    pub admin_listen: Option<String>,
    /// The process log on stderr: `text` (default) or `json`. Read at
    /// start; a reload does not change it.
    #[serde(default)]
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates must chain to; when set,
    /// the TLS listener refuses clients without one.
    pub client_ca: Option<PathBuf>,
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub limits: crate::limits::RawLimits,
    pub notation: Option<RawNotation>,
    /// `postgres://…` for a shared pin store; default is the embedded store.
    pub pin_store: Option<String>,
    /// The pin store's password, kept out of the URL (which is logged and
    /// often kept in git): a file (a mounted Secret) or an environment
    /// variable.
    pub pin_store_password_file: Option<PathBuf>,
    pub pin_store_password_env: Option<String>,
    pub pins_file: Option<PathBuf>,
    /// How often a pinned tag is re-resolved upstream, in the background, to
    /// detect moves. 0 checks on every fetch (still in the background).
    #[serde(default = "default_pin_revalidate")]
    pub pin_revalidate_secs: u64,
    /// After SIGTERM, how long requests in flight may take to finish.
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_pin_revalidate() -> u64 {
    60
}

/// Kubernetes sends SIGKILL 30 s after SIGTERM by default
/// (`terminationGracePeriodSeconds`); 25 s lets a slow blob finish and still
/// leaves the process time to exit on its own.
fn default_drain() -> u64 {
    25
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
    /// The name of an environment variable that holds the password, as
    /// Kubernetes sets from a Secret (`env.valueFrom.secretKeyRef`).
    pub password_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Required for an `http://` url: requests, tokens and credentials then
    /// cross the network in the clear. Warned at start.
    #[serde(default)]
    pub dangerous_plain_http: bool,
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

/// How a policy combines its authorities: `"any"`, `"all"`, or
/// `{ count = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Any one satisfied authority allows the image.
    #[default]
    Any,
    /// Every configured authority must be satisfied.
    All,
    /// At least this many distinct authorities must be satisfied (two
    /// entries for the same key count once).
    Count(usize),
}

/// By hand, because TOML writes the two shapes differently: a word
/// (`require = "all"`) or a table (`require = { count = 2 }`).
impl<'de> Deserialize<'de> for Require {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Require;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"any\", \"all\" or { count = N }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Require, E> {
                match s {
                    "any" => Ok(Require::Any),
                    "all" => Ok(Require::All),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Require, A::Error> {
                let mut count = None;
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "count" if count.is_none() => count = Some(m.next_value::<usize>()?),
                        "count" => return Err(serde::de::Error::duplicate_field("count")),
                        other => return Err(serde::de::Error::unknown_field(other, &["count"])),
                    }
                }
                count.map(Require::Count).ok_or_else(|| serde::de::Error::missing_field("count"))
            }
        }
        d.deserialize_any(V)
    }
}

/// What an image index needs (`index`): its own signature (`signed`, the
/// default: a verified index vouches for the platform manifests it lists),
/// or nothing (`children`: an index is served whether or not it is signed,
/// vouches for nothing, and each platform manifest must verify on its own
/// when it is fetched, for publishers that sign per platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IndexRule {
    #[default]
    Signed,
    Children,
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
    /// Globs over `<registry>/<repository>` this policy does not cover even
    /// though a scope matches: as if the policy did not list them.
    #[serde(default)]
    pub exclude: Vec<String>,
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
    /// `<registry>/<repository>`.
    pub docker_reference: Option<String>,
    /// Skip the docker-reference check (for images copied under another
    /// name). Insecure: a signature made for any image name is accepted.
    /// Warned at start. Replaces `docker_reference = "any"`.
    #[serde(default)]
    pub dangerous_skip_docker_reference: bool,
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
    #[serde(default)]
    pub index: IndexRule,
    /// `[[policy.attestation]]`: attestations the image must carry, beside
    /// its signature.
    #[serde(default)]
    pub attestation: Vec<RawAttestation>,
}

/// One `[[policy.attestation]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttestation {
    /// A predicate type URI, or one of cosign's `--type` names
    /// (`slsaprovenance`, `slsaprovenance1`, `spdxjson`, `cyclonedx`, `vuln`,
    /// `custom`).
    pub predicate_type: String,
    /// A CEL expression over `predicate` and `now` that must be true.
    pub condition: Option<String>,
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

/// `[audit]`: where the decision log goes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// A file to append JSON lines to, or `"-"` (or no key) for stdout.
    pub path: Option<PathBuf>,
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
    /// Blobs kept on disk under `data_dir/blobs`, by total bytes; 0 turns
    /// the disk cache off (every blob streams from upstream).
    #[serde(default = "default_blob_max_bytes")]
    pub blob_max_bytes: u64,
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
            blob_max_bytes: default_blob_max_bytes(),
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
/// 20 GiB: a few releases of a typical fleet's images, and small beside the
/// disks mirror nodes get. Set it to what the volume holds.
fn default_blob_max_bytes() -> u64 {
    20 << 30
}

/// One thing wrong with the config: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Line and column (1-based) of the key, or of its table when the key
    /// is missing; `None` for problems of no one place.
    pub at: Option<(usize, usize)>,
    /// The `name` of the policy the key belongs to, when it is in one.
    pub policy: Option<String>,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(name) = &self.policy {
            write!(f, ": in policy {name:?}")?;
        }
        write!(f, ": {}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        // In file order, as an editor shows them; problems of no one place last.
        let mut sorted: Vec<&Problem> = self.0.iter().collect();
        sorted.sort_by(|a, b| (&a.file, a.at.is_none(), a.at).cmp(&(&b.file, b.at.is_none(), b.at)));
        for p in sorted {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while validating.
pub struct Checker {
    file: PathBuf,
    base: PathBuf,
    /// The file's text, to place every problem at its line and column.
    source: Option<std::sync::Arc<Source>>,
    /// Keys the strict parse already reported and stepped over: a value
    /// stood in for them must not be reported again.
    replaced: Vec<String>,
    pub problems: Vec<Problem>,
    /// Legal but almost always a mistake: printed by `check-config` and
    /// logged at start, never fatal.
    pub warnings: Vec<Problem>,
    /// Every path the config made us read (or try to), the config file first:
    /// what a reload watches.
    pub watched: Vec<PathBuf>,
}

impl Checker {
    pub fn new(file: &Path) -> Checker {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Checker {
            file: file.to_path_buf(),
            base,
            source: None,
            replaced: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            watched: vec![file.to_path_buf()],
        }
    }

    pub fn problem(&mut self, key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        let key = key.into();
        let under = |r: &String| key == *r || key.starts_with(&format!("{r}.")) || key.starts_with(&format!("{r}["));
        if self.replaced.iter().any(under) {
            return;
        }
        let p = self.placed(key, message.into(), fix.into());
        self.problems.push(p);
    }

    /// Records something legal that is almost always a mistake.
    pub fn warn(&mut self, key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        let p = self.placed(key.into(), message.into(), fix.into());
        self.warnings.push(p);
    }

    fn placed(&self, key: String, message: String, fix: String) -> Problem {
        let at = self.source.as_ref().and_then(|s| s.locate(&key));
        let policy = key
            .strip_prefix("policy[")
            .and_then(|r| r.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| self.source.as_ref()?.policy_name(i).map(str::to_string));
        Problem { file: self.file.clone(), at, policy, key, message, fix }
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
        self.watched.push(path.clone());
        // Read through the limit, never by the file's length: a device or a
        // FIFO (`/dev/zero`) reports none and would be read forever.
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_TRUST_FILE + 1), &mut bytes)?;
            Ok(bytes)
        });
        match read {
            Ok(bytes) if bytes.len() as u64 > MAX_TRUST_FILE => {
                self.problem(
                    key,
                    format!("{} is longer than the {MAX_TRUST_FILE} bytes allowed", path.display()),
                    "point at the key or certificate file itself",
                );
                None
            }
            Ok(bytes) => Some(TrustFile { key: key.to_string(), name: p.display().to_string(), path, bytes }),
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

    /// A password from a file (a mounted Secret) or an environment variable
    /// (set from a Secret), at most one of the two; trimmed.
    fn secret(
        &mut self,
        file_key: &str,
        file: Option<&PathBuf>,
        env_key: &str,
        env: Option<&String>,
    ) -> Option<String> {
        match (file, env) {
            (Some(_), Some(_)) => {
                self.problem(env_key, format!("{file_key} is set too"), "keep one source of the password");
                None
            }
            (Some(f), None) => self.read(file_key, f).map(|f| String::from_utf8_lossy(&f.bytes).trim().to_string()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => {
                    self.problem(
                        env_key,
                        format!("the environment variable {var} is not set or empty"),
                        format!("set it (from a Secret), or use {file_key}"),
                    );
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A file key that may be unset: read when set.
    fn setting(&mut self, key: &str, p: Option<&PathBuf>) -> FileSetting {
        match p {
            None => FileSetting::Unset,
            Some(p) => self.read(key, p).map_or(FileSetting::Unreadable, FileSetting::Read),
        }
    }
}

/// Trust material files are small; a huge file is a mistake, not a key.
const MAX_TRUST_FILE: u64 = 16 << 20;

/// A file of trust material with its bytes, read once at load.
#[derive(Clone, Debug)]
pub struct TrustFile {
    /// The config key that names it (`policy[0].cosign_keys[1]`), for problems.
    pub key: String,
    /// The path as written in the config, used in refusal messages.
    pub name: String,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// A file key of the config after loading. `Unreadable` means the problem is
/// already recorded; consumers must still treat the entry as broken, so a
/// file that could not be read never leaves an entry trusting more.
#[derive(Clone, Debug)]
pub enum FileSetting {
    Unset,
    Unreadable,
    Read(TrustFile),
}

impl FileSetting {
    pub fn is_set(&self) -> bool {
        !matches!(self, FileSetting::Unset)
    }
}

/// A `[[policy]]` table with every file it names read, for
/// `policy::PolicySet::build` and the verifiers to validate.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Its place in the file, for problem keys (`policy[2].scope`).
    pub index: usize,
    pub name: String,
    pub scope: Vec<String>,
    pub exclude: Vec<String>,
    pub mode: Mode,
    pub require: Require,
    /// `Read` or `Unreadable`, in the order written.
    pub cosign_keys: Vec<FileSetting>,
    pub cosign_certificates: Vec<CosignCertificateConfig>,
    /// `Read` or `Unreadable`, in the order written.
    pub rekor_keys: Vec<FileSetting>,
    pub signature_repository: Option<String>,
    pub docker_reference: Option<String>,
    pub dangerous_skip_docker_reference: bool,
    pub dangerous_accept_unbound_bundles: bool,
    pub notation: bool,
    pub immutable_tags: Vec<String>,
    pub on_tag_move: OnTagMove,
    /// `index`.
    pub index_rule: IndexRule,
    pub attestation: Vec<RawAttestation>,
    /// The table as written (paths, not file contents), serialised: the part
    /// of the policy fingerprint that the trust material does not cover.
    pub settings: Vec<u8>,
}

/// One `[[policy.cosign_certificates]]` entry, its files read.
#[derive(Clone, Debug)]
pub struct CosignCertificateConfig {
    /// `policy[i].cosign_certificates[j]`, the prefix of its problem keys.
    pub key: String,
    pub roots: FileSetting,
    pub sigstore_trusted_root: FileSetting,
    pub identity: Option<String>,
    pub identity_regexp: Option<String>,
    pub issuer: Option<String>,
    pub rekor_key: FileSetting,
}

/// `[notation]`: the trust policy read, and the trust store directory
/// resolved. The store is read by `verify::notation`, because which of its
/// named stores are read depends on the trust policy.
#[derive(Clone, Debug)]
pub struct NotationConfig {
    pub trust_policy: FileSetting,
    pub trust_store: PathBuf,
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
    /// `admin_listen`.
    pub admin_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub tls: Option<(TrustFile, TrustFile)>,
    /// `client_ca`, read and checked to hold CA certificates.
    pub client_ca: Option<TrustFile>,
    /// `[audit] path`, resolved; `None` writes the audit log to stdout.
    pub audit_log: Option<PathBuf>,
    pub upstreams: Vec<Upstream>,
    pub allow_ttl: Duration,
    pub deny_ttl: Duration,
    pub manifest_cache_bytes: u64,
    /// `[cache] blob_max_bytes`; 0 means no disk blob cache.
    pub blob_max_bytes: u64,
    /// `[cache] tag_ttl_secs`.
    pub tag_ttl: Duration,
    /// `[cache] stale_if_error_secs`.
    pub stale_if_error: Duration,
    /// `pin_revalidate_secs`.
    pub pin_revalidate: Duration,
    /// A `postgres://` URL (scheme checked), or `None` for the embedded store.
    pub pin_store: Option<String>,
    /// From `pin_store_password_file` or `pin_store_password_env`.
    pub pin_store_password: Option<String>,
    /// The pins file, read; `lib::load` checks that it parses.
    pub pins_file: Option<TrustFile>,
    /// `drain_secs`.
    pub drain: Duration,
    /// `[limits]`.
    pub limits: crate::limits::Limits,
    /// The config file and every file and directory it references: what a
    /// reload watches for changes.
    pub watched: Vec<PathBuf>,
}

/// The parts of the file that `policy::PolicySet::build` validates: the
/// policies and the Notation trust material they share.
pub struct PolicySection {
    pub policy: Vec<PolicyConfig>,
    pub notation: Option<NotationConfig>,
    /// The configured upstreams' registry names: a scope none of them can
    /// match is warned about.
    pub registries: Vec<String>,
}

impl PolicySection {
    /// Reads every file the policies and `[notation]` name. Problems reading
    /// go to `c`; the rest is validated by `policy::PolicySet::build`.
    fn load(raw: &RawConfig, c: &mut Checker) -> PolicySection {
        // Notation first, as the policies are built after it.
        let notation = raw.notation.as_ref().map(|n| {
            let trust_policy = c.setting("notation.trust_policy", Some(&n.trust_policy));
            let trust_store = c.resolve(&n.trust_store);
            c.watched.push(trust_store.clone());
            NotationConfig { trust_policy, trust_store }
        });
        let policy = raw.policy.iter().enumerate().map(|(i, p)| policy_config(i, p, c)).collect();
        let registries = raw.upstream.iter().map(|u| u.registry.clone()).collect();
        PolicySection { policy, notation, registries }
    }
}

fn policy_config(i: usize, p: &RawPolicy, c: &mut Checker) -> PolicyConfig {
    let files = |c: &mut Checker, what: &str, paths: &[PathBuf]| -> Vec<FileSetting> {
        paths.iter().enumerate().map(|(j, f)| c.setting(&format!("policy[{i}].{what}[{j}]"), Some(f))).collect()
    };
    match (p.docker_reference.as_deref(), p.dangerous_skip_docker_reference) {
        (Some("any"), _) => c.problem(
            format!("policy[{i}].docker_reference"),
            "\"any\" no longer turns the docker-reference check off",
            "set dangerous_skip_docker_reference = true instead, if you must",
        ),
        (Some(_), true) => c.problem(
            format!("policy[{i}].dangerous_skip_docker_reference"),
            "is set together with docker_reference",
            "keep docker_reference (checked) or the skip, not both",
        ),
        (None, true) => c.warn(
            format!("policy[{i}].dangerous_skip_docker_reference"),
            "the docker-reference check is off: a signature this policy trusts for any image name is accepted here",
            "name the signed reference with docker_reference instead",
        ),
        _ => {}
    }
    // In the order the verifiers report on them.
    let rekor_keys = files(c, "rekor_keys", &p.rekor_keys);
    let cosign_keys = files(c, "cosign_keys", &p.cosign_keys);
    let cosign_certificates = p
        .cosign_certificates
        .iter()
        .enumerate()
        .map(|(j, cc)| {
            let key = format!("policy[{i}].cosign_certificates[{j}]");
            // Both set is a contradiction the verifier reports; neither file
            // is read (or reported unreadable) then, as it would not be used.
            let (roots, sigstore_trusted_root) = match (&cc.roots, &cc.sigstore_trusted_root) {
                (Some(_), Some(_)) => (FileSetting::Unreadable, FileSetting::Unreadable),
                (r, t) => (
                    c.setting(&format!("{key}.roots"), r.as_ref()),
                    c.setting(&format!("{key}.sigstore_trusted_root"), t.as_ref()),
                ),
            };
            CosignCertificateConfig {
                roots,
                sigstore_trusted_root,
                rekor_key: c.setting(&format!("{key}.rekor_key"), cc.rekor_key.as_ref()),
                identity: cc.identity.clone(),
                identity_regexp: cc.identity_regexp.clone(),
                issuer: cc.issuer.clone(),
                key,
            }
        })
        .collect();
    PolicyConfig {
        index: i,
        name: p.name.clone(),
        scope: p.scope.clone(),
        exclude: p.exclude.clone(),
        mode: p.mode,
        require: p.require,
        cosign_keys,
        cosign_certificates,
        rekor_keys,
        signature_repository: p.signature_repository.clone(),
        docker_reference: p.docker_reference.clone(),
        dangerous_skip_docker_reference: p.dangerous_skip_docker_reference,
        dangerous_accept_unbound_bundles: p.dangerous_accept_unbound_bundles,
        notation: p.notation,
        immutable_tags: p.immutable_tags.clone(),
        on_tag_move: p.on_tag_move,
        index_rule: p.index,
        attestation: p.attestation.clone(),
        settings: serde_json::to_vec(p).unwrap_or_default(),
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
        const KEYS_FIX: &str = "see config/sigmirror.toml and the README's configuration table for every accepted key";
        let source = match Source::parse(text) {
            Ok(s) => std::sync::Arc::new(s),
            Err((at, message)) => {
                let mut p = c.placed("(syntax)".into(), message.trim().to_string(), "fix the TOML syntax".into());
                p.at = at;
                c.problems.push(p);
                return Err(Problems(c.problems));
            }
        };
        c.source = Some(source.clone());
        // Every unknown key and wrong type at once; validation then goes on
        // over what parsed, so its problems are reported in the same run.
        let parsed = source.deserialize::<RawConfig>();
        for p in &parsed.problems {
            c.problem(p.key.clone(), p.message.clone(), KEYS_FIX);
        }
        c.replaced = parsed.replaced;
        let Some(raw) = parsed.raw else {
            return Err(Problems(c.problems));
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
        let admin_listen = validate_admin_listen(raw.admin_listen.as_deref(), listen, &mut c);
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
        let client_ca = validate_client_ca(raw.client_ca.as_deref(), tls.is_some() || raw.tls_cert.is_some(), &mut c);
        let audit_log = validate_audit_path(raw.audit.as_ref().and_then(|a| a.path.as_deref()), &mut c);
        let config = Config {
            file: c.file.clone(),
            listen,
            admin_listen,
            log_format: raw.log_format,
            data_dir,
            tls,
            client_ca,
            audit_log,
            upstreams,
            allow_ttl: Duration::from_secs(raw.cache.allow_ttl_secs),
            deny_ttl: Duration::from_secs(raw.cache.deny_ttl_secs),
            manifest_cache_bytes: raw.cache.manifest_cache_bytes,
            blob_max_bytes: raw.cache.blob_max_bytes,
            tag_ttl: Duration::from_secs(raw.cache.tag_ttl_secs),
            stale_if_error: Duration::from_secs(raw.cache.stale_if_error_secs),
            pin_revalidate: Duration::from_secs(raw.pin_revalidate_secs),
            pin_store: validate_pin_store(raw.pin_store.as_deref(), &mut c),
            pin_store_password: c.secret(
                "pin_store_password_file",
                raw.pin_store_password_file.as_ref(),
                "pin_store_password_env",
                raw.pin_store_password_env.as_ref(),
            ),
            pins_file: raw.pins_file.as_ref().and_then(|f| c.read("pins_file", f)),
            drain: Duration::from_secs(raw.drain_secs),
            limits: crate::limits::Limits::validate(&raw.limits, &mut c),
            watched: Vec::new(),
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
        let section = PolicySection::load(&raw, &mut c);
        let config = Config { watched: c.watched.clone(), ..config };
        // Problems so far stay in the checker: the caller validates the
        // policies too and then reports everything at once.
        Ok((config, section, c))
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
            if u.dangerous_plain_http {
                c.problem(
                    key("dangerous_plain_http"),
                    "is set, but the url is https://",
                    "remove dangerous_plain_http",
                );
            }
            (false, h)
        } else if let Some(h) = u.url.strip_prefix("http://") {
            if !u.dangerous_plain_http {
                c.problem(
                    key("url"),
                    format!(
                        "{:?} is plain HTTP, which sends requests and credentials in the clear",
                        redact_userinfo(&u.url)
                    ),
                    "use https://, or set dangerous_plain_http = true for a registry on loopback",
                );
            } else if !is_loopback_host(h.trim_end_matches('/')) {
                c.warn(
                    key("url"),
                    format!("{:?} is plain HTTP to a host that is not loopback", redact_userinfo(&u.url)),
                    "use https://; plain HTTP is meant for a registry on the same machine",
                );
            } else {
                c.warn(key("dangerous_plain_http"), "plain HTTP to a loopback registry", "use https:// in production");
            }
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
        let has_password = u.password_file.is_some() || u.password_env.is_some();
        let password = match (&u.username, has_password) {
            (Some(_), true) => {
                c.secret(&key("password_file"), u.password_file.as_ref(), &key("password_env"), u.password_env.as_ref())
            }
            (None, false) => None,
            _ => {
                c.problem(
                    key("username"),
                    "username and a password (password_file or password_env) must be set together",
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

/// `host` of `host[:port]`, without the brackets of an IPv6 literal.
pub(crate) fn host_only(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    }
}

/// `host[:port]` names this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback_host(host_port: &str) -> bool {
    let host = host_only(host_port);
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

/// `admin_listen`: an address, and not the main listener's.
fn validate_admin_listen(raw: Option<&str>, listen: SocketAddr, c: &mut Checker) -> Option<SocketAddr> {
    let addr = match raw?.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let fix =
                "write host:port, for example \"127.0.0.1:9090\" (or \"0.0.0.0:9090\" for a Prometheus in another pod)";
            c.problem("admin_listen", format!("{:?} is not an address", raw.unwrap_or_default()), fix);
            return None;
        }
    };
    if addr == listen && addr.port() != 0 {
        c.problem("admin_listen", format!("{addr} is the main listener's address too"), "give it a port of its own");
        return None;
    }
    Some(addr)
}

/// `client_ca`, read. It only means something on a TLS listener.
fn validate_client_ca(path: Option<&Path>, tls: bool, c: &mut Checker) -> Option<TrustFile> {
    let f = c.read("client_ca", path?)?;
    if !tls {
        c.problem(
            "client_ca",
            "client certificates need TLS, and tls_cert and tls_key are not set",
            "set tls_cert and tls_key, or remove client_ca",
        );
        return None;
    }
    // Its certificates are parsed where the listener is built
    // (`lib::load`, through `tls::acceptor`), which reports them under
    // this key.
    Some(f)
}

/// `[audit] path`: `"-"` or absent is stdout; a file must be creatable:
/// its directory exists, and it is not itself a directory.
fn validate_audit_path(path: Option<&Path>, c: &mut Checker) -> Option<PathBuf> {
    let path = path.filter(|p| *p != Path::new("-"))?;
    let fix = "name a file in an existing directory, or \"-\" for stdout";
    if path.as_os_str().is_empty() {
        c.problem("audit.path", "is empty", fix);
        return None;
    }
    let resolved = c.resolve(path);
    if resolved.is_dir() {
        c.problem("audit.path", format!("{} is a directory", resolved.display()), fix);
        return None;
    }
    match resolved.parent() {
        Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => Some(resolved),
        _ => {
            c.problem("audit.path", format!("the directory of {} does not exist", resolved.display()), fix);
            None
        }
    }
}

/// The pin store URL, if its scheme is one sigmirror can open. Checked here
/// so `check-config` reports it, not only `serve` when it opens the store.
fn validate_pin_store(url: Option<&str>, c: &mut Checker) -> Option<String> {
    let url = url?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let authority = url.split_once("://").map_or("", |(_, r)| r.split(['/', '?']).next().unwrap_or(""));
        if authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':')) {
            c.problem(
                "pin_store",
                format!("{:?} holds a password", redact_userinfo(url)),
                "drop it from the URL and set pin_store_password_file (a mounted Secret) or pin_store_password_env",
            );
            return None;
        }
        return Some(url.to_string());
    }
    c.problem(
        "pin_store",
        "is not a postgres:// or postgresql:// URL",
        "write postgres://user:password@host/db, or remove the key for the embedded store under data_dir",
    );
    None
}

/// For unit tests of the verifiers: one `[[policy]]` table (name and scope
/// supplied) loaded with paths relative to `base`, and its checker.
#[cfg(test)]
pub(crate) fn policy_fragment(base: &Path, fragment: &str) -> (PolicyConfig, Checker) {
    let raw: RawPolicy = toml::from_str(&format!("name = \"t\"\nscope = [\"*\"]\n{fragment}")).expect("policy toml");
    let mut c = Checker::new(&base.join("sigmirror.toml"));
    let p = policy_config(0, &raw, &mut c);
    (p, c)
}

/// For unit tests of the Notation verifier: a `[notation]` table loaded with
/// paths relative to `base`, and its checker.
#[cfg(test)]
pub(crate) fn notation_fragment(base: &Path, trust_policy: &str, trust_store: &str) -> (NotationConfig, Checker) {
    let mut c = Checker::new(&base.join("sigmirror.toml"));
    let raw = RawNotation { trust_policy: trust_policy.into(), trust_store: trust_store.into() };
    let trust_policy = c.setting("notation.trust_policy", Some(&raw.trust_policy));
    let n = NotationConfig { trust_policy, trust_store: c.resolve(&raw.trust_store) };
    (n, c)
}
