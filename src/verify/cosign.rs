//! Cosign "format A" signatures (the `sha256-<hex>.sig` tag): one simple-signing layer checked
//! against one configured authority, a public key or a certificate trust root, with the optional
//! Rekor bundle. Pure: the caller fetches the layer and passes bytes, a digest and "now".
//!
//! The order of checks is fixed so refusals are predictable: media type and sizes, the signature
//! over the exact payload bytes, Rekor, the certificate chain and identity, and only then the
//! claims inside the (now authenticated) payload.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::keys::{truncate, PublicKey};
use super::rekor::{self, strip_whitespace, RekorKey, Signer};
use super::x509::{self, Certificate, ChainOptions};
use crate::config::{Checker, CosignCertificateConfig, FileSetting, PolicyConfig, TrustFile};
use crate::oci::Digest;

pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
pub const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
pub const ANNOTATION_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// The `critical.type` every cosign and containers/image signature carries.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// Real payloads are ~250 bytes; cosign itself caps them too.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// Base64 of the largest signature we accept (RSA-8192 is 1 KiB raw), with room for newlines.
const MAX_SIGNATURE_ANNOTATION: usize = 4 << 10;
/// A leaf certificate in PEM; Fulcio leaves are ~1 KiB, RSA-4096 ones ~2 KiB.
const MAX_CERTIFICATE_ANNOTATION: usize = 64 << 10;

/// One layer of a cosign signature manifest: the payload blob and the layer's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLayer {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SigstoreJsonFile {
    #[serde(rename = "mimeType")]
    mime_type: String,
    payload: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl SignatureLayer {
    /// Reads the containers/image `dir:` transport file: `"\x00sigstore-json\n"` followed by JSON
    /// `{"mimeType", "payload" (base64), "annotations"}`. Used for the known-answer vectors.
    pub fn from_sigstore_json_file(bytes: &[u8]) -> Result<Self, String> {
        const PREFIX: &[u8] = b"\x00sigstore-json\n";
        if bytes.len() > 1 << 20 {
            return Err("signature file is larger than 1 MiB".into());
        }
        let json = bytes.strip_prefix(PREFIX).ok_or("signature file does not start with the sigstore-json marker")?;
        let f: SigstoreJsonFile =
            serde_json::from_slice(json).map_err(|e| format!("signature file is malformed: {e}"))?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(strip_whitespace(&f.payload))
            .map_err(|_| "signature file payload is not valid base64")?;
        Ok(SignatureLayer { media_type: f.mime_type, payload, annotations: f.annotations })
    }
}

/// The identity a certificate must be issued to.
#[derive(Clone, Debug)]
pub enum Identity {
    Exact(String),
    /// Matched against the whole SAN: the pattern is wrapped in `^(?:…)$`. Unlike cosign
    /// (unanchored Go regexp), a forgotten anchor cannot widen trust to `x@acme.example.evil.com`.
    Regexp {
        pattern: String,
        re: regex::Regex,
    },
}

impl Identity {
    pub fn regexp(pattern: &str) -> Result<Identity, String> {
        let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("{pattern:?} is not a valid regular expression: {e}"))?;
        Ok(Identity::Regexp { pattern: pattern.to_string(), re })
    }

    pub fn matches(&self, san: &str) -> bool {
        match self {
            Identity::Exact(s) => s == san,
            Identity::Regexp { re, .. } => re.is_match(san),
        }
    }

    fn describe(&self) -> String {
        match self {
            Identity::Exact(s) => s.clone(),
            Identity::Regexp { pattern, .. } => format!("/{pattern}/"),
        }
    }
}

/// One trusted signer of a policy: an entry of `cosign_keys` or of `cosign_certificates`.
#[derive(Clone, Debug)]
pub enum CosignAuthority {
    Key {
        /// The key file as written in the config.
        name: String,
        key: PublicKey,
        /// When non-empty, a signature must carry a Rekor bundle signed by one of these.
        rekor: Vec<RekorKey>,
    },
    Certificate {
        /// `roots <file>` or `sigstore_trusted_root <file>`, for messages.
        trust_name: String,
        roots: Vec<Certificate>,
        /// CA certificates from the trust file that are not self-signed: usable on a path, not anchors.
        intermediates: Vec<Certificate>,
        identity: Identity,
        issuer: Option<String>,
        /// When non-empty, a bundle is required and the chain is checked at its integratedTime.
        rekor: Vec<RekorKey>,
        /// RFC 3161 timestamp authorities (`sigstore_trusted_root` only). When non-empty, every
        /// timestamp in a Sigstore bundle must verify with one of them, and the certificate must
        /// also be valid at each timestamp's time.
        tsa: Vec<TimestampAuthority>,
    },
}

impl CosignAuthority {
    /// Builds every cosign authority of a policy from its loaded files,
    /// recording each problem with its config key. An entry with any problem
    /// (an unreadable file included) is left out, so a broken entry can never
    /// trust more.
    pub fn from_policy(p: &PolicyConfig, c: &mut Checker) -> Vec<CosignAuthority> {
        let mut out = Vec::new();
        let mut policy_rekor = Vec::new();
        for f in p.rekor_keys.iter().filter_map(read) {
            match RekorKey::from_pem(&f.name, &f.bytes) {
                Ok(k) => policy_rekor.push(k),
                Err(e) => c.problem(&f.key, format!("{} {e}", f.name), "point at the Rekor public key PEM (rekor.pub)"),
            }
        }
        for f in p.cosign_keys.iter().filter_map(read) {
            match PublicKey::from_pem(&f.bytes) {
                Ok(k) => out.push(CosignAuthority::Key { name: f.name.clone(), key: k, rekor: policy_rekor.clone() }),
                Err(e) => c.problem(
                    &f.key,
                    format!("{} {e}", f.name),
                    "point at the PEM public key written by `cosign generate-key-pair` (cosign.pub)",
                ),
            }
        }
        for cc in &p.cosign_certificates {
            let before = c.problems.len();
            let built = certificate_authority(cc, &policy_rekor, c);
            if c.problems.len() == before {
                out.extend(built);
            }
        }
        out
    }

    /// A short name used as the prefix of every reason about this authority.
    pub fn describe(&self) -> String {
        match self {
            CosignAuthority::Key { name, .. } => format!("key {name}"),
            CosignAuthority::Certificate { trust_name, identity, issuer, .. } => {
                let mut s = format!("certificate {trust_name} identity {}", identity.describe());
                if let Some(i) = issuer {
                    s.push_str(&format!(" issuer {i}"));
                }
                s
            }
        }
    }

    /// Feeds every byte of trust material and every setting into `h`, length-prefixed, so a
    /// changed key file or identity changes the policy fingerprint and invalidates cached verdicts.
    pub fn fingerprint(&self, h: &mut Sha256) {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        match self {
            CosignAuthority::Key { name, key, rekor } => {
                field(h, b"cosign-key");
                field(h, name.as_bytes());
                field(h, &key.spki_der());
                field(h, &(rekor.len() as u64).to_be_bytes());
                rekor.iter().for_each(|k| k.fingerprint(h));
            }
            CosignAuthority::Certificate { trust_name, roots, intermediates, identity, issuer, rekor, tsa } => {
                field(h, b"cosign-certificate");
                field(h, trust_name.as_bytes());
                for set in [roots, intermediates] {
                    field(h, &(set.len() as u64).to_be_bytes());
                    set.iter().for_each(|c| field(h, &c.der));
                }
                match identity {
                    Identity::Exact(s) => {
                        field(h, b"exact");
                        field(h, s.as_bytes());
                    }
                    Identity::Regexp { pattern, .. } => {
                        field(h, b"regexp");
                        field(h, pattern.as_bytes());
                    }
                }
                field(h, issuer.as_deref().unwrap_or("\0none").as_bytes());
                field(h, &(rekor.len() as u64).to_be_bytes());
                rekor.iter().for_each(|k| k.fingerprint(h));
                field(h, &(tsa.len() as u64).to_be_bytes());
                for t in tsa {
                    field(h, t.name.as_bytes());
                    for set in [&t.roots, &t.intermediates] {
                        field(h, &(set.len() as u64).to_be_bytes());
                        set.iter().for_each(|d| field(h, d));
                    }
                    for bound in [t.valid_from, t.valid_until] {
                        field(h, bound.map(|b| b.unix_timestamp().to_string()).unwrap_or_default().as_bytes());
                    }
                }
            }
        }
    }
}

/// The file of a setting that was read; an unreadable one's problem is
/// already recorded by the config loader.
fn read(f: &FileSetting) -> Option<&TrustFile> {
    match f {
        FileSetting::Read(f) => Some(f),
        FileSetting::Unset | FileSetting::Unreadable => None,
    }
}

fn certificate_authority(
    cc: &CosignCertificateConfig,
    policy_rekor: &[RekorKey],
    c: &mut Checker,
) -> Option<CosignAuthority> {
    let prefix = &cc.key;
    let mut rekor: Vec<RekorKey> = Vec::new();
    let mut tsa: Vec<TimestampAuthority> = Vec::new();
    // An unreadable file leaves the entry out; its problem is already recorded.
    let unreadable =
        [&cc.roots, &cc.sigstore_trusted_root, &cc.rekor_key].iter().any(|f| matches!(f, FileSetting::Unreadable));
    let trust = match (cc.roots.is_set(), cc.sigstore_trusted_root.is_set()) {
        (true, true) => {
            c.problem(
                format!("{prefix}.roots"),
                "roots and sigstore_trusted_root are both set",
                "keep roots for a private CA, or sigstore_trusted_root for Fulcio, not both",
            );
            None
        }
        (false, false) => {
            c.problem(
                format!("{prefix}.roots"),
                "neither roots nor sigstore_trusted_root is set",
                "set roots (a CA bundle PEM) for a private CA, or sigstore_trusted_root for Fulcio",
            );
            None
        }
        (true, false) => read(&cc.roots).and_then(|f| match roots_from_pem(f) {
            Ok((roots, inter)) => Some((format!("roots {}", f.name), roots, inter)),
            Err(e) => {
                c.problem(
                    &f.key,
                    format!("{} {e}", f.name),
                    "point at a PEM file with the root CA (and optionally intermediates)",
                );
                None
            }
        }),
        (false, true) => {
            read(&cc.sigstore_trusted_root).and_then(|f| match parse_sigstore_trusted_root(&f.name, &f.bytes) {
                Ok(tr) => {
                    rekor.extend(tr.rekor_keys);
                    tsa = tr.timestamp_authorities;
                    let (roots, inter) = x509::split_roots(tr.certificates);
                    Some((format!("sigstore_trusted_root {}", f.name), roots, inter))
                }
                Err(e) => {
                    c.problem(
                        &f.key,
                        format!("{} {e}", f.name),
                        "use a sigstore trusted_root.json, e.g. from `cosign trusted-root create`",
                    );
                    None
                }
            })
        }
    };
    let identity = match (&cc.identity, &cc.identity_regexp) {
        (Some(_), Some(_)) => {
            c.problem(format!("{prefix}.identity"), "identity and identity_regexp are both set", "keep one of them");
            None
        }
        (None, None) => {
            c.problem(
                format!("{prefix}.identity"),
                "neither identity nor identity_regexp is set",
                "set identity to the certificate's email or URI SAN, for example \"release@acme.example\"",
            );
            None
        }
        (Some(s), None) if s.is_empty() => {
            c.problem(format!("{prefix}.identity"), "is empty", "set the certificate's email or URI SAN");
            None
        }
        (Some(s), None) => Some(Identity::Exact(s.clone())),
        (None, Some(re)) => match Identity::regexp(re) {
            Ok(i) => Some(i),
            Err(e) => {
                c.problem(format!("{prefix}.identity_regexp"), e, "write a Rust regex; it must match the whole SAN");
                None
            }
        },
    };
    if cc.issuer.as_deref() == Some("") {
        c.problem(format!("{prefix}.issuer"), "is empty", "set the OIDC issuer URL, or remove the key");
    }
    if cc.sigstore_trusted_root.is_set() && !cc.roots.is_set() && cc.issuer.is_none() {
        c.problem(
            format!("{prefix}.issuer"),
            "is required with sigstore_trusted_root: without it anyone's Fulcio identity provider would be trusted",
            "set issuer, for example \"https://token.actions.githubusercontent.com\"",
        );
    }
    if let Some(f) = read(&cc.rekor_key) {
        match RekorKey::from_pem(&f.name, &f.bytes) {
            Ok(k) => rekor.push(k),
            Err(e) => c.problem(&f.key, format!("{} {e}", f.name), "point at the Rekor public key PEM (rekor.pub)"),
        }
    }
    rekor.extend(policy_rekor.iter().cloned());
    if unreadable {
        return None;
    }
    let (trust_name, roots, intermediates) = trust?;
    Some(CosignAuthority::Certificate {
        trust_name,
        roots,
        intermediates,
        identity: identity?,
        issuer: cc.issuer.clone(),
        rekor,
        tsa,
    })
}

fn roots_from_pem(f: &TrustFile) -> Result<(Vec<Certificate>, Vec<Certificate>), String> {
    let (roots, inter) = x509::split_roots(x509::parse_pem_certificates(&f.bytes)?);
    if roots.is_empty() {
        return Err("contains no self-signed root certificate".into());
    }
    Ok((roots, inter))
}

/// What sigmirror uses from a sigstore `trusted_root.json`.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    /// Every Fulcio CA certificate (roots and intermediates, unsorted).
    pub certificates: Vec<Certificate>,
    /// The transparency-log keys sigmirror can use (P-256/P-384/RSA); others are skipped.
    pub rekor_keys: Vec<RekorKey>,
    /// The RFC 3161 timestamp authorities of `timestampAuthorities` (possibly none).
    pub timestamp_authorities: Vec<TimestampAuthority>,
}

/// One `timestampAuthorities[]` entry of a `trusted_root.json`.
#[derive(Clone, Debug)]
pub struct TimestampAuthority {
    /// `<file> timestampAuthorities[i]`, for messages.
    pub name: String,
    /// The self-signed certificates of its `certChain` (DER): the trust anchors.
    pub roots: Vec<Vec<u8>>,
    /// The other certificates of its `certChain` (DER): the TSA leaf and intermediates, which
    /// Sigstore TSAs leave out of their tokens. Path-building material, not anchors.
    pub intermediates: Vec<Vec<u8>>,
    /// `validFor`: a timestamp whose time falls outside is not accepted.
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
}

/// At most this many timestamp authorities are read from a trusted root (public good has one).
const MAX_TIMESTAMP_AUTHORITIES: usize = 16;

#[derive(Deserialize)]
struct TrJson {
    #[serde(default, rename = "certificateAuthorities")]
    certificate_authorities: Vec<TrCa>,
    #[serde(default)]
    tlogs: Vec<TrTlog>,
    #[serde(default, rename = "timestampAuthorities")]
    timestamp_authorities: Vec<TrTsa>,
}

#[derive(Deserialize)]
struct TrTsa {
    #[serde(rename = "certChain")]
    cert_chain: TrChain,
    #[serde(rename = "validFor")]
    valid_for: Option<TrValidFor>,
}

#[derive(Deserialize)]
struct TrCa {
    #[serde(rename = "certChain")]
    cert_chain: TrChain,
}

#[derive(Deserialize)]
struct TrChain {
    #[serde(default)]
    certificates: Vec<TrRaw>,
}

#[derive(Deserialize)]
struct TrRaw {
    #[serde(rename = "rawBytes")]
    raw_bytes: String,
}

#[derive(Deserialize)]
struct TrTlog {
    #[serde(rename = "publicKey")]
    public_key: TrPublicKey,
    #[serde(rename = "logId")]
    log_id: Option<TrLogId>,
}

#[derive(Deserialize)]
struct TrLogId {
    #[serde(rename = "keyId")]
    key_id: String,
}

#[derive(Deserialize)]
struct TrPublicKey {
    #[serde(rename = "rawBytes")]
    raw_bytes: Option<String>,
    #[serde(rename = "validFor")]
    valid_for: Option<TrValidFor>,
}

#[derive(Deserialize)]
struct TrValidFor {
    start: Option<String>,
    end: Option<String>,
}

/// Parses a sigstore `trusted_root.json`: the Fulcio certificates of `certificateAuthorities`
/// and the keys of `tlogs` with their validity windows and log IDs (ECDSA, RSA, and Ed25519 for
/// Rekor v2 logs).
pub fn parse_sigstore_trusted_root(name: &str, bytes: &[u8]) -> Result<TrustedRoot, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let tr: TrJson = serde_json::from_slice(bytes).map_err(|e| format!("is not a trusted_root.json: {e}"))?;
    let mut certificates = Vec::new();
    for (i, ca) in tr.certificate_authorities.iter().enumerate() {
        for (j, raw) in ca.cert_chain.certificates.iter().enumerate() {
            if certificates.len() >= x509::MAX_CERTIFICATES {
                return Err(format!("has more than {} CA certificates", x509::MAX_CERTIFICATES));
            }
            let der = b64
                .decode(&raw.raw_bytes)
                .map_err(|_| format!("certificateAuthorities[{i}] certificate {j} is not base64"))?;
            certificates.push(
                Certificate::from_der(&der).map_err(|e| format!("certificateAuthorities[{i}] certificate {j} {e}"))?,
            );
        }
    }
    if certificates.is_empty() {
        return Err("lists no certificateAuthorities".into());
    }
    let time = |s: &Option<String>, what: &str| -> Result<Option<OffsetDateTime>, String> {
        s.as_deref()
            .map(|s| OffsetDateTime::parse(s, &Rfc3339).map_err(|_| format!("{what} {s:?} is not an RFC 3339 time")))
            .transpose()
    };
    let mut rekor_keys = Vec::new();
    for (i, t) in tr.tlogs.iter().enumerate().take(64) {
        let Some(raw) = &t.public_key.raw_bytes else { continue };
        let der = b64.decode(raw).map_err(|_| format!("tlogs[{i}] publicKey is not base64"))?;
        let (from, until) = match &t.public_key.valid_for {
            Some(v) => (time(&v.start, "tlog validFor.start")?, time(&v.end, "tlog validFor.end")?),
            None => (None, None),
        };
        // Rekor v2 logs are named by their signed-note key ID rather than by sha256 of the key,
        // so the stated logId is what entries and checkpoints must match.
        let log_id = match &t.log_id {
            Some(id) => Some(b64.decode(&id.key_id).map_err(|_| format!("tlogs[{i}] logId.keyId is not base64"))?),
            None => None,
        };
        if let Ok(k) = RekorKey::from_spki_der(format!("{name} tlogs[{i}]"), &der, from, until) {
            rekor_keys.push(match &log_id {
                Some(id) => k.with_log_id(id),
                None => k,
            });
        }
    }
    if rekor_keys.is_empty() {
        return Err("lists no usable tlogs key (ECDSA, RSA or Ed25519)".into());
    }
    if tr.timestamp_authorities.len() > MAX_TIMESTAMP_AUTHORITIES {
        return Err(format!("has more than {MAX_TIMESTAMP_AUTHORITIES} timestampAuthorities"));
    }
    let mut timestamp_authorities = Vec::new();
    for (i, t) in tr.timestamp_authorities.iter().enumerate() {
        let (mut roots, mut intermediates) = (Vec::new(), Vec::new());
        if t.cert_chain.certificates.len() > x509::MAX_CERTIFICATES {
            return Err(format!("timestampAuthorities[{i}] has more than {} certificates", x509::MAX_CERTIFICATES));
        }
        for (j, raw) in t.cert_chain.certificates.iter().enumerate() {
            let der = b64
                .decode(&raw.raw_bytes)
                .map_err(|_| format!("timestampAuthorities[{i}] certificate {j} is not base64"))?;
            let cert =
                Certificate::from_der(&der).map_err(|e| format!("timestampAuthorities[{i}] certificate {j} {e}"))?;
            if cert.is_self_issued() {
                roots.push(der);
            } else {
                intermediates.push(der);
            }
        }
        if roots.is_empty() {
            return Err(format!("timestampAuthorities[{i}] certChain has no self-signed root certificate"));
        }
        let (valid_from, valid_until) = match &t.valid_for {
            Some(v) => (
                time(&v.start, &format!("timestampAuthorities[{i}] validFor.start"))?,
                time(&v.end, &format!("timestampAuthorities[{i}] validFor.end"))?,
            ),
            None => (None, None),
        };
        timestamp_authorities.push(TimestampAuthority {
            name: format!("{name} timestampAuthorities[{i}]"),
            roots,
            intermediates,
            valid_from,
            valid_until,
        });
    }
    Ok(TrustedRoot { certificates, rekor_keys, timestamp_authorities })
}

/// What the signature must be about.
#[derive(Clone, Debug)]
pub struct Expectation<'a> {
    /// The manifest digest the client asked for.
    pub digest: &'a Digest,
    /// What `critical.identity.docker-reference` must name; `None` skips the check.
    pub docker_reference: Option<&'a str>,
    /// Used for certificate validity when no Rekor time is available.
    pub now: OffsetDateTime,
}

/// Why one signature does not satisfy one authority, in either format. `Display` is the short
/// reason for the log and the refusal message.
///
/// The repository cases are variants of their own because `policy` acts on them: a signature that
/// verified but names another repository keeps other formats from satisfying its authority, and
/// one that names none is refused unless the policy opts in. Matching on message text instead
/// would break silently the day a message is reworded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The signature verified with the authority and is for this digest, but names another image:
    /// "signature names image X but this is Y".
    WrongRepository(String),
    /// The signature verified with the authority and is for this digest, but names no repository
    /// at all (a cosign v3 bundle), while the policy expects one.
    Unbound,
    /// Any other reason.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrongRepository(r) | Refusal::Invalid(r) => f.write_str(r),
            Refusal::Unbound => f.write_str(
                "the signed statement names no repository, so it could have been copied from another repository",
            ),
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Invalid(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Invalid(reason.to_string())
    }
}

/// Verifies one signature layer against one authority.
pub fn verify_layer(auth: &CosignAuthority, layer: &SignatureLayer, exp: &Expectation) -> Result<(), Refusal> {
    if layer.media_type != SIMPLESIGNING_MEDIA_TYPE {
        return Err(format!("layer media type {} is not a cosign signature", truncate(&layer.media_type, 100)).into());
    }
    if layer.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(
            format!("payload is {} bytes, more than the {MAX_PAYLOAD_BYTES} allowed", layer.payload.len()).into()
        );
    }
    let sig = decode_signature(&layer.annotations)?;
    let payload = &layer.payload;
    match auth {
        CosignAuthority::Key { key, rekor, .. } => {
            key.verify_cosign(payload, &sig).map_err(|e| {
                if e == "signature does not verify" {
                    "signature by an untrusted key (or over an altered payload)".to_string()
                } else {
                    e
                }
            })?;
            if !rekor.is_empty() {
                let bundle = required_bundle(&layer.annotations)?;
                rekor::verify_cosign_bundle_for(bundle, rekor, payload, &sig, Some(Signer::Key(key)))?;
            }
        }
        CosignAuthority::Certificate { rekor, .. } => {
            let (leaf, chain) = signature_certificates(&layer.annotations)?;
            let key = leaf.public_key()?;
            key.verify_cosign(payload, &sig).map_err(|e| {
                if e == "signature does not verify" {
                    "signature does not verify with its certificate's key (payload altered?)".to_string()
                } else {
                    e
                }
            })?;
            // With a trusted log time, the certificate must have been valid when the log saw the
            // signature (Fulcio leaves live 10 minutes); without one, it must be valid now.
            let at = if rekor.is_empty() {
                exp.now
            } else {
                let bundle = required_bundle(&layer.annotations)?;
                let t =
                    rekor::verify_cosign_bundle_for(bundle, rekor, payload, &sig, Some(Signer::Certificate(&leaf)))?;
                OffsetDateTime::from_unix_timestamp(t).map_err(|_| "Rekor integratedTime is out of range")?
            };
            check_certificate(auth, &leaf, chain, at)?;
        }
    }
    check_payload(payload, exp)
}

/// Who made a layer's signature that verified with `auth`, for the audit
/// trail: the key's fingerprint, or the signing certificate's subject and SANs.
pub fn signer_of_layer(auth: &CosignAuthority, layer: &SignatureLayer) -> Option<String> {
    match auth {
        CosignAuthority::Key { key, .. } => Some(key_fingerprint(key)),
        CosignAuthority::Certificate { .. } => {
            signature_certificates(&layer.annotations).ok().map(|(leaf, _)| certificate_identity(&leaf))
        }
    }
}

/// `sha256:<hex>` of the key's SubjectPublicKeyInfo DER: what
/// `openssl pkey -pubin -outform der | sha256sum` prints for the PEM file.
pub fn key_fingerprint(key: &PublicKey) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.spki_der())))
}

/// `subject=<DN> san=<SAN>[,<SAN>…]`; Fulcio leaves have an empty subject.
pub fn certificate_identity(leaf: &Certificate) -> String {
    let sans: Vec<String> = x509::san_identities(leaf).iter().take(4).map(|s| truncate(s, 200)).collect();
    format!("subject={} san={}", truncate(leaf.subject(), 200), sans.join(","))
}

/// What a certificate authority requires of a signing certificate, whatever the signature format:
/// a path to its roots valid at `at` (the proven signing time, or now), the code-signing usage, the
/// identity and the issuer. `chain` holds the certificates the signature brought along.
pub(crate) fn check_certificate(
    auth: &CosignAuthority,
    leaf: &Certificate,
    chain: Vec<Certificate>,
    at: OffsetDateTime,
) -> Result<(), String> {
    let CosignAuthority::Certificate { trust_name, roots, intermediates, identity, issuer, .. } = auth else {
        return Err(format!("{} does not trust certificates", auth.describe()));
    };
    // Intermediates from the signature are untrusted helpers; self-signed ones are dropped so a
    // signer cannot bring its own root.
    let mut pool: Vec<Certificate> = intermediates.clone();
    pool.extend(chain.into_iter().filter(|c| !c.is_self_issued()));
    let opts = ChainOptions { at, require_code_signing_eku: true, roots_name: trust_name.clone() };
    x509::validate_chain(leaf, &pool, roots, &opts)?;
    let sans = x509::san_identities(leaf);
    if !sans.iter().any(|s| identity.matches(s)) {
        return Err(if sans.is_empty() {
            format!("certificate has no email or URI identity; expected {}", identity.describe())
        } else {
            let shown: Vec<String> = sans.iter().take(4).map(|s| truncate(s, 100)).collect();
            format!("certificate identity {} does not match {}", shown.join(", "), identity.describe())
        });
    }
    if let Some(want) = issuer {
        match x509::fulcio_issuer(leaf) {
            None => {
                return Err(format!("certificate has no (or a contradictory) OIDC issuer extension; expected {want}"))
            }
            Some(got) if &got != want => {
                return Err(format!("certificate issuer {} does not match {want}", truncate(&got, 100)))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn decode_signature(annotations: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let s =
        annotations.get(ANNOTATION_SIGNATURE).ok_or("layer has no dev.cosignproject.cosign/signature annotation")?;
    if s.len() > MAX_SIGNATURE_ANNOTATION {
        return Err(format!(
            "signature annotation is {} bytes, more than the {MAX_SIGNATURE_ANNOTATION} allowed",
            s.len()
        ));
    }
    // Signatures attached from files carry newlines; cosign strips whitespace too.
    let s = strip_whitespace(s);
    if s.is_empty() {
        return Err("signature annotation is empty (an attestation, not a signature)".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|_| "signature annotation is not valid base64".into())
}

fn required_bundle(annotations: &BTreeMap<String, String>) -> Result<&str, String> {
    annotations
        .get(ANNOTATION_BUNDLE)
        .map(String::as_str)
        .ok_or_else(|| "signature has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one".into())
}

pub(crate) fn signature_certificates(
    annotations: &BTreeMap<String, String>,
) -> Result<(Certificate, Vec<Certificate>), String> {
    let pem = annotations
        .get(ANNOTATION_CERTIFICATE)
        .filter(|s| !s.trim().is_empty())
        .ok_or("signature has no certificate (dev.sigstore.cosign/certificate); it was made with a key")?;
    if pem.len() > MAX_CERTIFICATE_ANNOTATION {
        return Err(format!(
            "certificate annotation is {} bytes, more than the {MAX_CERTIFICATE_ANNOTATION} allowed",
            pem.len()
        ));
    }
    let mut leaf = x509::parse_pem_certificates(pem.as_bytes()).map_err(|e| format!("certificate annotation {e}"))?;
    if leaf.len() != 1 {
        return Err(format!("certificate annotation holds {} certificates, expected one", leaf.len()));
    }
    let chain = match annotations.get(ANNOTATION_CHAIN).filter(|s| !s.trim().is_empty()) {
        Some(pem) => x509::parse_pem_certificates(pem.as_bytes()).map_err(|e| format!("chain annotation {e}"))?,
        None => Vec::new(),
    };
    Ok((leaf.remove(0), chain))
}

/// Checks the simple-signing claims. Keys are looked up exactly, then case-insensitively, as Go's
/// `encoding/json` (what cosign uses) does.
pub(crate) fn check_payload(payload: &[u8], exp: &Expectation) -> Result<(), Refusal> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| "payload is not JSON")?;
    let critical = field(&v, "critical").ok_or("payload has no critical section")?;
    match field(critical, "type").and_then(|t| t.as_str()) {
        Some(COSIGN_SIGNATURE_TYPE) => {}
        Some(other) => {
            return Err(format!("payload type {:?} is not {COSIGN_SIGNATURE_TYPE:?}", truncate(other, 100)).into())
        }
        None => return Err("payload has no critical.type".into()),
    }
    let digest = field(critical, "image")
        .and_then(|i| field(i, "docker-manifest-digest"))
        .and_then(|d| d.as_str())
        .ok_or("payload has no critical.image.docker-manifest-digest")?;
    if digest != exp.digest.as_str() {
        return Err(
            format!("payload digest mismatch: signature is for {} not {}", truncate(digest, 80), exp.digest).into()
        );
    }
    if let Some(want) = exp.docker_reference {
        let got = field(critical, "identity")
            .and_then(|i| field(i, "docker-reference"))
            .and_then(|r| r.as_str())
            .ok_or_else(|| format!("payload has no critical.identity.docker-reference; expected {want}"))?;
        if normalize_reference(got) != normalize_reference(want) {
            return Err(Refusal::WrongRepository(wrong_repository(&[got], want)));
        }
    }
    Ok(())
}

/// The refusal for a signature that names `got` (one or more images) where `want` was expected;
/// the same words for both formats.
pub(crate) fn wrong_repository(got: &[&str], want: &str) -> String {
    let shown: Vec<String> = got.iter().take(3).map(|g| truncate(g, 200)).collect();
    format!("signature names image {} but this is {want}", shown.join(", "))
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    let map = v.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// Reduces an image reference to `domain/path` for comparison: drops `@digest` and `:tag`, adds
/// Docker Hub's implied `docker.io` and `library/`, and folds `index.docker.io` into `docker.io`,
/// so `nginx`, `docker.io/library/nginx:1.25` and `index.docker.io/library/nginx` are equal.
pub fn normalize_reference(r: &str) -> String {
    let r = r.split('@').next().unwrap_or(r);
    let r = match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => &r[..i],
        _ => r,
    };
    let (domain, path) = match r.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => (d.to_ascii_lowercase(), p),
        _ => ("docker.io".to_string(), r),
    };
    let domain = match domain.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => domain,
    };
    if domain == "docker.io" && !path.contains('/') {
        format!("docker.io/library/{path}")
    } else {
        format!("{domain}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rekor::tests::make_bundle;
    use crate::verify::x509::tests::{leaf_params, TestCa, NOW};
    use p256::ecdsa::signature::Signer as _;
    use std::path::{Path, PathBuf};

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cosign/containers-image")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).expect("time")
    }

    /// One signature file of a vector folder and the digest of its manifest.
    fn vector(dir: &str, n: u32) -> (SignatureLayer, Digest) {
        let d = vectors().join(dir);
        let layer =
            SignatureLayer::from_sigstore_json_file(&std::fs::read(d.join(format!("signature-{n}"))).expect("read"))
                .expect("layer");
        (layer, Digest::of(&std::fs::read(d.join("manifest.json")).expect("manifest")))
    }

    /// Builds the authorities of one policy from a TOML fragment, with paths relative to `base`.
    fn authorities_in(base: &Path, fragment: &str) -> (Vec<CosignAuthority>, Vec<String>) {
        let (p, mut c) = crate::config::policy_fragment(base, fragment);
        let auths = CosignAuthority::from_policy(&p, &mut c);
        let problems = c.problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
        (auths, problems)
    }

    fn authority(fragment: &str) -> CosignAuthority {
        authority_in(&vectors(), fragment)
    }

    fn authority_in(base: &Path, fragment: &str) -> CosignAuthority {
        let (mut a, problems) = authorities_in(base, fragment);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(a.len(), 1);
        a.remove(0)
    }

    fn exp(digest: &Digest) -> Expectation<'_> {
        Expectation { digest, docker_reference: None, now: now() }
    }

    const COSIGN_PUB: &str = "cosign_keys = [\"cosign.pub\"]";

    // ---- Known answers: real cosign / skopeo signatures ----

    #[test]
    fn the_high_s_cosign_signature_is_valid() {
        let (layer, digest) = vector("dir-img-cosign-valid", 1);
        let sig = decode_signature(&layer.annotations).expect("sig");
        let s = p256::ecdsa::Signature::from_der(&sig).expect("der");
        assert!(s.normalize_s().is_some(), "the vector is high-S");
        assert_eq!(verify_layer(&authority(COSIGN_PUB), &layer, &exp(&digest)), Ok(()));
    }

    #[test]
    fn both_signatures_of_valid_2_are_valid() {
        let auth = authority(COSIGN_PUB);
        for n in [1, 2] {
            let (layer, digest) = vector("dir-img-cosign-valid-2", n);
            assert_eq!(verify_layer(&auth, &layer, &exp(&digest)), Ok(()), "signature-{n}");
        }
    }

    #[test]
    fn the_skopeo_signature_with_a_tag_matches_its_repository() {
        let auth = authority(COSIGN_PUB);
        let (layer, digest) = vector("dir-img-cosign-valid-with-tag", 1);
        assert_eq!(verify_layer(&auth, &layer, &exp(&digest)), Ok(()));
        let with = |r| Expectation { digest: &digest, docker_reference: Some(r), now: now() };
        assert_eq!(verify_layer(&auth, &layer, &with("192.168.64.2:5000/skopeo-signed")), Ok(()));
        assert_eq!(verify_layer(&auth, &layer, &with("192.168.64.2:5000/skopeo-signed:other")), Ok(()));
        assert_eq!(
            verify_layer(&auth, &layer, &with("192.168.64.2:5000/skopeo-unsigned")),
            Err(Refusal::WrongRepository(
                "signature names image 192.168.64.2:5000/skopeo-signed:tag but this is 192.168.64.2:5000/skopeo-unsigned"
                    .into()
            ))
        );
    }

    #[test]
    fn the_key_signature_with_a_rekor_bundle_is_valid_with_rekor_pub() {
        let (layer, digest) = vector("dir-img-cosign-key-rekor-valid", 1);
        let auth = authority("cosign_keys = [\"cosign2.pub\"]\nrekor_keys = [\"rekor.pub\"]");
        assert_eq!(verify_layer(&auth, &layer, &exp(&digest)), Ok(()));
        // Without its bundle the same signature no longer satisfies a policy that wants Rekor.
        let mut stripped = layer.clone();
        stripped.annotations.remove(ANNOTATION_BUNDLE);
        assert_eq!(
            verify_layer(&auth, &stripped, &exp(&digest)),
            Err("signature has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one".into())
        );
        // A policy without rekor_keys ignores the tlog.
        assert_eq!(verify_layer(&authority("cosign_keys = [\"cosign2.pub\"]"), &stripped, &exp(&digest)), Ok(()));
        assert_eq!(
            verify_layer(&authority(COSIGN_PUB), &layer, &exp(&digest)),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );
    }

    const FULCIO: &str = "[[cosign_certificates]]\nsigstore_trusted_root = \"../sigstore-rs/trusted_root.json\"\n";

    #[test]
    fn the_keyless_fulcio_signature_is_valid_at_its_rekor_time() {
        let (layer, digest) = vector("dir-img-cosign-fulcio-rekor-valid", 1);
        let auth =
            authority(&format!("{FULCIO}identity = \"mitr@redhat.com\"\nissuer = \"https://github.com/login/oauth\""));
        assert_eq!(
            auth.describe(),
            "certificate sigstore_trusted_root ../sigstore-rs/trusted_root.json identity mitr@redhat.com issuer https://github.com/login/oauth"
        );
        assert_eq!(verify_layer(&auth, &layer, &exp(&digest)), Ok(()));
        let regexp = authority(&format!(
            "{FULCIO}identity_regexp = \".*@redhat\\\\.com\"\nissuer = \"https://github.com/login/oauth\""
        ));
        assert_eq!(verify_layer(&regexp, &layer, &exp(&digest)), Ok(()));

        let wrong_id = authority(&format!(
            "{FULCIO}identity = \"release@acme.example\"\nissuer = \"https://github.com/login/oauth\""
        ));
        assert_eq!(
            verify_layer(&wrong_id, &layer, &exp(&digest)),
            Err("certificate identity mitr@redhat.com does not match release@acme.example".into())
        );
        // The regexp must match the whole SAN, not a part of it.
        let partial = authority(&format!(
            "{FULCIO}identity_regexp = \"mitr@redhat\"\nissuer = \"https://github.com/login/oauth\""
        ));
        assert_eq!(
            verify_layer(&partial, &layer, &exp(&digest)),
            Err("certificate identity mitr@redhat.com does not match /mitr@redhat/".into())
        );
        let wrong_issuer =
            authority(&format!("{FULCIO}identity = \"mitr@redhat.com\"\nissuer = \"https://accounts.google.com\""));
        assert_eq!(
            verify_layer(&wrong_issuer, &layer, &exp(&digest)),
            Err("certificate issuer https://github.com/login/oauth does not match https://accounts.google.com".into())
        );
        let mut no_bundle = layer.clone();
        no_bundle.annotations.remove(ANNOTATION_BUNDLE);
        assert_eq!(
            verify_layer(&auth, &no_bundle, &exp(&digest)),
            Err("signature has no Rekor bundle (dev.sigstore.cosign/bundle), but the policy requires one".into())
        );
    }

    #[test]
    fn the_keyless_fulcio_signature_is_expired_today_without_a_rekor_key() {
        let (layer, digest) = vector("dir-img-cosign-fulcio-rekor-valid", 1);
        // Trust the Fulcio root and intermediate as a plain PEM bundle, with no Rekor key.
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("fulcio.pem"), &layer.annotations[ANNOTATION_CHAIN]).expect("write");
        let plain =
            authority_in(dir.path(), "[[cosign_certificates]]\nroots = \"fulcio.pem\"\nidentity = \"mitr@redhat.com\"");
        assert_eq!(
            verify_layer(&plain, &layer, &exp(&digest)),
            Err("certificate expired at 2023-01-20T21:01:31Z".into())
        );
        let rekor = vectors().join("rekor.pub");
        let with_rekor = authority_in(
            dir.path(),
            &format!("[[cosign_certificates]]\nroots = \"fulcio.pem\"\nidentity = \"mitr@redhat.com\"\nrekor_key = {rekor:?}"),
        );
        assert_eq!(verify_layer(&with_rekor, &layer, &exp(&digest)), Ok(()));
    }

    #[test]
    fn the_private_pki_rsa_4096_signature_is_valid() {
        let (layer, digest) = vector("dir-img-cosign-pki-valid", 1);
        let auth = authority("[[cosign_certificates]]\nroots = \"pki_root_crts.pem\"\nidentity = \"qiwan@redhat.com\"");
        assert_eq!(auth.describe(), "certificate roots pki_root_crts.pem identity qiwan@redhat.com");
        assert_eq!(verify_layer(&auth, &layer, &exp(&digest)), Ok(()));
        // The intermediate can come from the trust file instead of the chain annotation.
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = [
            std::fs::read(vectors().join("pki_root_crts.pem")).expect("root"),
            std::fs::read(vectors().join("pki_intermediate_crts.pem")).expect("inter"),
        ]
        .concat();
        std::fs::write(dir.path().join("ca.pem"), bundle).expect("write");
        let both =
            authority_in(dir.path(), "[[cosign_certificates]]\nroots = \"ca.pem\"\nidentity = \"qiwan@redhat.com\"");
        let mut no_chain = layer.clone();
        no_chain.annotations.remove(ANNOTATION_CHAIN);
        assert_eq!(verify_layer(&both, &no_chain, &exp(&digest)), Ok(()));
        assert_eq!(
            verify_layer(&auth, &no_chain, &exp(&digest)),
            Err("certificate chain does not reach roots pki_root_crts.pem".into())
        );
        // The issuer is not recorded in private-PKI certificates, so requiring one refuses.
        let iss = authority("[[cosign_certificates]]\nroots = \"pki_root_crts.pem\"\nidentity = \"qiwan@redhat.com\"\nissuer = \"https://x\"");
        assert_eq!(
            verify_layer(&iss, &layer, &exp(&digest)),
            Err("certificate has no (or a contradictory) OIDC issuer extension; expected https://x".into())
        );
        // A key authority does not accept a certificate signature made with another key.
        assert_eq!(
            verify_layer(&authority(COSIGN_PUB), &layer, &exp(&digest)),
            Err("signature is not a DER ECDSA P-256 signature".into())
        );
    }

    #[test]
    fn in_the_mixed_folder_one_signature_fails_and_the_other_passes() {
        let auth = authority(COSIGN_PUB);
        let (one, digest) = vector("dir-img-cosign-mixed", 1);
        let (two, _) = vector("dir-img-cosign-mixed", 2);
        assert_eq!(
            verify_layer(&auth, &one, &exp(&digest)),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );
        assert_eq!(verify_layer(&auth, &two, &exp(&digest)), Ok(()));
    }

    #[test]
    fn a_valid_signature_for_a_modified_manifest_is_refused_as_a_digest_mismatch() {
        let auth = authority(COSIGN_PUB);
        for dir in ["dir-img-cosign-modified-manifest", "dir-img-cosign-manifest-digest-error"] {
            let (layer, digest) = vector(dir, 1);
            assert_eq!(
                verify_layer(&auth, &layer, &exp(&digest)),
                Err(format!(
                    "payload digest mismatch: signature is for sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00 not {digest}"
                )
                .into()),
                "{dir}"
            );
        }
    }

    #[test]
    fn another_attachment_never_counts_as_a_signature() {
        let (layer, digest) = vector("dir-img-cosign-other-attachment", 1);
        let pki = authority("[[cosign_certificates]]\nroots = \"pki_root_crts.pem\"\nidentity = \"qiwan@redhat.com\"");
        for auth in [authority(COSIGN_PUB), pki] {
            assert_eq!(
                verify_layer(&auth, &layer, &exp(&digest)),
                Err("layer media type text/plain is not a cosign signature".into())
            );
        }
    }

    // ---- Refusal matrix with generated material ----

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn payload_for(digest: &str, reference: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{COSIGN_SIGNATURE_TYPE}"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn signed_layer(sk: &p256::ecdsa::SigningKey, payload: Vec<u8>, extra: &[(&str, &str)]) -> SignatureLayer {
        let sig: p256::ecdsa::Signature = sk.sign(&payload);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            ANNOTATION_SIGNATURE.to_string(),
            base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
        );
        for (k, v) in extra {
            annotations.insert(k.to_string(), v.to_string());
        }
        SignatureLayer { media_type: SIMPLESIGNING_MEDIA_TYPE.into(), payload, annotations }
    }

    /// A temp dir holding `key.pub` (the signer), `other.pub`, `ca.pem` (a test CA root) and
    /// `rekor.pub` (a test log key).
    struct Fixture {
        dir: tempfile::TempDir,
        signer: p256::ecdsa::SigningKey,
        ca: TestCa,
        log: p256::ecdsa::SigningKey,
    }

    fn pem_of(sk: &p256::ecdsa::SigningKey) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        sk.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem")
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let signer = p256::ecdsa::SigningKey::from_slice(&[1u8; 32]).expect("key");
        let other = p256::ecdsa::SigningKey::from_slice(&[2u8; 32]).expect("key");
        let log = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).expect("key");
        let ca = TestCa::new("Test Root");
        std::fs::write(dir.path().join("key.pub"), pem_of(&signer)).expect("write");
        std::fs::write(dir.path().join("other.pub"), pem_of(&other)).expect("write");
        std::fs::write(dir.path().join("rekor.pub"), pem_of(&log)).expect("write");
        std::fs::write(dir.path().join("ca.pem"), ca.root.pem()).expect("write");
        Fixture { dir, signer, ca, log }
    }

    const CERT_POLICY: &str = "[[cosign_certificates]]\nroots = \"ca.pem\"\nidentity = \"release@acme.example\"\nissuer = \"https://issuer.example\"";

    impl Fixture {
        fn auth(&self, fragment: &str) -> CosignAuthority {
            authority_in(self.dir.path(), fragment)
        }

        /// A certificate-signed layer for DIGEST, leaf issued by `ca` with parameters `p`.
        fn cert_layer(&self, ca: &TestCa, p: rcgen::CertificateParams) -> SignatureLayer {
            let (leaf, sk, _) = ca.issue(p);
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(&leaf.der)
            );
            signed_layer(
                &sk,
                payload_for(DIGEST, "r.example/app"),
                &[(ANNOTATION_CERTIFICATE, &pem), (ANNOTATION_CHAIN, "")],
            )
        }
    }

    fn digest() -> Digest {
        DIGEST.parse().expect("digest")
    }

    fn good_leaf() -> rcgen::CertificateParams {
        leaf_params("release@acme.example", Some("https://issuer.example"))
    }

    #[test]
    fn key_signatures_are_refused_for_the_wrong_key_tampering_and_bad_encodings() {
        let f = fixture();
        let d = digest();
        let good = signed_layer(&f.signer, payload_for(DIGEST, "r.example/app"), &[]);
        assert_eq!(verify_layer(&f.auth("cosign_keys = [\"key.pub\"]"), &good, &exp(&d)), Ok(()));
        let wrong = f.auth("cosign_keys = [\"other.pub\"]");
        assert_eq!(wrong.describe(), "key other.pub");
        assert_eq!(
            verify_layer(&wrong, &good, &exp(&d)),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );

        let auth = f.auth("cosign_keys = [\"key.pub\"]");
        let mut tampered = good.clone();
        tampered.payload = payload_for(DIGEST, "r.example/evil");
        assert_eq!(
            verify_layer(&auth, &tampered, &exp(&d)),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );

        let with_sig = |s: &str| {
            let mut l = good.clone();
            l.annotations.insert(ANNOTATION_SIGNATURE.into(), s.into());
            verify_layer(&auth, &l, &exp(&d))
        };
        let b64 = good.annotations[ANNOTATION_SIGNATURE].clone();
        assert_eq!(with_sig(&b64[..b64.len() - 5]), Err("signature annotation is not valid base64".into()));
        assert_eq!(with_sig("%%%%"), Err("signature annotation is not valid base64".into()));
        assert_eq!(with_sig("AAAA"), Err("signature is not a DER ECDSA P-256 signature".into()));
        assert_eq!(with_sig(""), Err("signature annotation is empty (an attestation, not a signature)".into()));
        assert_eq!(
            with_sig(&"A".repeat(10_000)),
            Err("signature annotation is 10000 bytes, more than the 4096 allowed".into())
        );
        // Whitespace inside the base64 is tolerated, as cosign does.
        let wrapped = format!("{}\n{}\n", &b64[..20], &b64[20..]);
        assert_eq!(with_sig(&wrapped), Ok(()));
        let mut none = good.clone();
        none.annotations.clear();
        assert_eq!(
            verify_layer(&auth, &none, &exp(&d)),
            Err("layer has no dev.cosignproject.cosign/signature annotation".into())
        );
        let mut big = good.clone();
        big.payload = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            verify_layer(&auth, &big, &exp(&d)),
            Err("payload is 65537 bytes, more than the 65536 allowed".into())
        );
    }

    #[test]
    fn signed_payloads_with_the_wrong_claims_are_refused() {
        let f = fixture();
        let auth = f.auth("cosign_keys = [\"key.pub\"]");
        let d = digest();
        let other = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let layer = signed_layer(&f.signer, payload_for(other, "r.example/app"), &[]);
        assert_eq!(
            verify_layer(&auth, &layer, &exp(&d)),
            Err(format!("payload digest mismatch: signature is for {other} not {DIGEST}").into())
        );
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "payload is not JSON"),
            (b"{}", "payload has no critical section"),
            (br#"{"critical":{"type":"x"}}"#, "payload type \"x\" is not \"cosign container image signature\""),
            (
                br#"{"critical":{"type":"cosign container image signature"}}"#,
                "payload has no critical.image.docker-manifest-digest",
            ),
            (
                br#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":7}}}"#,
                "payload has no critical.image.docker-manifest-digest",
            ),
        ];
        for (payload, reason) in cases {
            let layer = signed_layer(&f.signer, payload.to_vec(), &[]);
            assert_eq!(verify_layer(&auth, &layer, &exp(&d)), Err(reason.into()));
        }
        // Go's decoder matches keys case-insensitively; the spec's own example capitalises one.
        let capital = String::from_utf8(payload_for(DIGEST, "r.example/app"))
            .expect("utf8")
            .replace("docker-manifest-digest", "Docker-manifest-digest");
        let layer = signed_layer(&f.signer, capital.into_bytes(), &[]);
        assert_eq!(verify_layer(&auth, &layer, &exp(&d)), Ok(()));
    }

    #[test]
    fn certificate_signatures_are_refused_with_a_precise_reason() {
        let f = fixture();
        let d = digest();
        let auth = f.auth(CERT_POLICY);
        assert_eq!(
            auth.describe(),
            "certificate roots ca.pem identity release@acme.example issuer https://issuer.example"
        );
        assert_eq!(verify_layer(&auth, &f.cert_layer(&f.ca, good_leaf()), &exp(&d)), Ok(()));

        let stranger = TestCa::new("Stranger Root");
        assert_eq!(
            verify_layer(&auth, &f.cert_layer(&stranger, good_leaf()), &exp(&d)),
            Err("certificate chain does not reach roots ca.pem".into())
        );

        let mut p = good_leaf();
        p.not_after = rcgen::date_time_ymd(2026, 6, 30);
        assert_eq!(
            verify_layer(&auth, &f.cert_layer(&f.ca, p), &exp(&d)),
            Err("certificate expired at 2026-06-30T00:00:00Z".into())
        );

        let p = leaf_params("intruder@acme.example", Some("https://issuer.example"));
        assert_eq!(
            verify_layer(&auth, &f.cert_layer(&f.ca, p), &exp(&d)),
            Err("certificate identity intruder@acme.example does not match release@acme.example".into())
        );

        let p = leaf_params("release@acme.example", Some("https://evil.example"));
        assert_eq!(
            verify_layer(&auth, &f.cert_layer(&f.ca, p), &exp(&d)),
            Err("certificate issuer https://evil.example does not match https://issuer.example".into())
        );

        let mut p = good_leaf();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::EmailProtection];
        assert_eq!(
            verify_layer(&auth, &f.cert_layer(&f.ca, p), &exp(&d)),
            Err("certificate is missing the code-signing extended key usage".into())
        );

        let mut tampered = f.cert_layer(&f.ca, good_leaf());
        tampered.payload = payload_for(DIGEST, "r.example/evil");
        assert_eq!(
            verify_layer(&auth, &tampered, &exp(&d)),
            Err("signature does not verify with its certificate's key (payload altered?)".into())
        );

        let keyed = signed_layer(&f.signer, payload_for(DIGEST, "r.example/app"), &[]);
        assert_eq!(
            verify_layer(&auth, &keyed, &exp(&d)),
            Err("signature has no certificate (dev.sigstore.cosign/certificate); it was made with a key".into())
        );

        let mut garbage = f.cert_layer(&f.ca, good_leaf());
        garbage.annotations.insert(
            ANNOTATION_CERTIFICATE.into(),
            "-----BEGIN CERTIFICATE-----\nMIIBAAA=\n-----END CERTIFICATE-----\n".into(),
        );
        assert_eq!(
            verify_layer(&auth, &garbage, &exp(&d)),
            Err("certificate annotation certificate #1 is not a valid DER X.509 certificate".into())
        );
        garbage.annotations.insert(ANNOTATION_CERTIFICATE.into(), "-----BEGIN CERTIFICATE-----\nMIIB".into());
        assert_eq!(
            verify_layer(&auth, &garbage, &exp(&d)),
            Err("certificate annotation PEM block CERTIFICATE is not terminated".into())
        );

        // A self-signed "root" smuggled in the chain annotation is never trusted.
        let rogue = TestCa::new("Test Root");
        let mut smuggled = f.cert_layer(&rogue, good_leaf());
        smuggled.annotations.insert(ANNOTATION_CHAIN.into(), rogue.root.pem());
        assert_eq!(
            verify_layer(&auth, &smuggled, &exp(&d)),
            Err("certificate release@acme.example names O=sigmirror tests, CN=Test Root as issuer, but its signature \
                 does not verify with that certificate's key"
                .into())
        );
    }

    #[test]
    fn a_rekor_bundle_signed_by_another_log_is_refused() {
        let f = fixture();
        let d = digest();
        let payload = payload_for(DIGEST, "r.example/app");
        let sig: p256::ecdsa::Signature = f.signer.sign(&payload);
        let sig = sig.to_der().as_bytes().to_vec();
        let good = make_bundle(&f.log, &payload, &sig, &pem_of(&f.signer), 1_790_000_000);
        let rogue_log = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).expect("key");
        let rogue = make_bundle(&rogue_log, &payload, &sig, &pem_of(&f.signer), 1_790_000_000);
        let layer = |bundle: &str| signed_layer(&f.signer, payload.clone(), &[(ANNOTATION_BUNDLE, bundle)]);
        let auth = f.auth("cosign_keys = [\"key.pub\"]\nrekor_keys = [\"rekor.pub\"]");
        assert_eq!(verify_layer(&auth, &layer(&good), &exp(&d)), Ok(()));
        let err = verify_layer(&auth, &layer(&rogue), &exp(&d)).unwrap_err().to_string();
        assert!(
            err.starts_with("Rekor bundle is from log ") && err.ends_with(", which is not a trusted Rekor key"),
            "{err}"
        );
        // A genuine log entry for another signer's key does not vouch for this one.
        let other_signer = make_bundle(
            &f.log,
            &payload,
            &sig,
            &std::fs::read_to_string(f.dir.path().join("other.pub")).expect("pem"),
            1,
        );
        assert_eq!(
            verify_layer(&auth, &layer(&other_signer), &exp(&d)),
            Err("Rekor entry records a different certificate or key than the signature's".into())
        );
    }

    #[test]
    fn a_certificate_checked_at_rekor_time_may_have_expired_since() {
        let f = fixture();
        let d = digest();
        let mut p = good_leaf();
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 1, 2);
        let mut layer = f.cert_layer(&f.ca, p);
        let leaf =
            x509::parse_pem_certificates(layer.annotations[ANNOTATION_CERTIFICATE].as_bytes()).expect("leaf").remove(0);
        let sig = decode_signature(&layer.annotations).expect("sig");
        let pem = layer.annotations[ANNOTATION_CERTIFICATE].clone();
        let inside = 1_735_700_000; // 2025-01-01T02:53:20Z
        layer.annotations.insert(ANNOTATION_BUNDLE.into(), make_bundle(&f.log, &layer.payload, &sig, &pem, inside));
        let auth = f.auth(&format!("{CERT_POLICY}\nrekor_key = \"rekor.pub\""));
        assert_eq!(verify_layer(&auth, &layer, &exp(&d)), Ok(()));
        assert!(leaf.not_after() < now());
        let outside = make_bundle(&f.log, &layer.payload, &sig, &pem, inside + 2 * 86_400);
        layer.annotations.insert(ANNOTATION_BUNDLE.into(), outside);
        assert_eq!(verify_layer(&auth, &layer, &exp(&d)), Err("certificate expired at 2025-01-02T00:00:00Z".into()));
        // Without a Rekor key the chain is checked now, and the certificate has expired.
        assert_eq!(
            verify_layer(&f.auth(CERT_POLICY), &layer, &exp(&d)),
            Err("certificate expired at 2025-01-02T00:00:00Z".into())
        );
    }

    #[test]
    fn policy_problems_are_reported_with_their_keys() {
        let f = fixture();
        std::fs::write(f.dir.path().join("not-a-key.pub"), "hello").expect("write");
        let (auths, problems) = authorities_in(
            f.dir.path(),
            r#"
cosign_keys = ["missing.pub", "not-a-key.pub", "ca.pem", "key.pub"]
rekor_keys = ["ca.pem"]
[[cosign_certificates]]
roots = "ca.pem"
[[cosign_certificates]]
roots = "ca.pem"
sigstore_trusted_root = "x.json"
identity = "a"
[[cosign_certificates]]
identity = "a"
[[cosign_certificates]]
roots = "ca.pem"
identity_regexp = "("
[[cosign_certificates]]
roots = "ca.pem"
identity = "a"
identity_regexp = "a"
[[cosign_certificates]]
roots = "key.pub"
identity = "a"
[[cosign_certificates]]
sigstore_trusted_root = "ca.pem"
identity = "a"
"#,
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap_or("")).collect();
        assert_eq!(
            keys,
            [
                // Unreadable files are reported by the config loader, first.
                "policy[0].cosign_keys[0]",
                "policy[0].rekor_keys[0]",
                "policy[0].cosign_keys[1]",
                "policy[0].cosign_keys[2]",
                "policy[0].cosign_certificates[0].identity",
                "policy[0].cosign_certificates[1].roots",
                "policy[0].cosign_certificates[2].roots",
                "policy[0].cosign_certificates[3].identity_regexp",
                "policy[0].cosign_certificates[4].identity",
                "policy[0].cosign_certificates[5].roots",
                "policy[0].cosign_certificates[6].sigstore_trusted_root",
                "policy[0].cosign_certificates[6].issuer",
            ],
            "{problems:#?}"
        );
        assert!(problems[2].ends_with("not-a-key.pub contains no PEM PUBLIC KEY block"), "{}", problems[2]);
        assert!(problems[3].ends_with("ca.pem is a certificate, not a PUBLIC KEY"), "{}", problems[3]);
        assert!(problems[9].ends_with("key.pub contains no PEM CERTIFICATE block"), "{}", problems[9]);
        // Only the one good entry survives.
        assert_eq!(auths.len(), 1);
        assert_eq!(auths[0].describe(), "key key.pub");
    }

    #[test]
    fn fingerprints_change_with_trust_material_and_settings() {
        let f = fixture();
        let fp = |a: &CosignAuthority| {
            let mut h = Sha256::new();
            a.fingerprint(&mut h);
            hex::encode(h.finalize())
        };
        let a = fp(&f.auth(CERT_POLICY));
        assert_eq!(a, fp(&f.auth(CERT_POLICY)));
        assert_ne!(a, fp(&f.auth(&CERT_POLICY.replace("release@", "other@"))));
        assert_ne!(a, fp(&f.auth(&format!("{CERT_POLICY}\nrekor_key = \"rekor.pub\""))));
        assert_ne!(fp(&f.auth("cosign_keys = [\"key.pub\"]")), fp(&f.auth("cosign_keys = [\"other.pub\"]")));
    }

    #[test]
    fn docker_references_compare_by_repository() {
        for (a, b) in [
            ("nginx", "docker.io/library/nginx"),
            ("index.docker.io/library/nginx:1.25", "docker.io/library/nginx"),
            ("docker.io/acme/app@sha256:abc", "acme/app"),
            ("localhost:5000/app:tag", "localhost:5000/app"),
            ("Registry.Example/app", "registry.example/app"),
        ] {
            assert_eq!(normalize_reference(a), normalize_reference(b), "{a} vs {b}");
        }
        for (a, b) in
            [("nginx", "docker.io/acme/nginx"), ("r.example/a", "r.example/b"), ("r.example:5000/a", "r.example/a")]
        {
            assert_ne!(normalize_reference(a), normalize_reference(b), "{a} vs {b}");
        }
    }

    #[test]
    fn flipping_bits_anywhere_in_a_keyless_signature_never_panics_and_never_verifies_a_changed_payload() {
        let (layer, digest) = vector("dir-img-cosign-fulcio-rekor-valid", 1);
        let auth =
            authority(&format!("{FULCIO}identity = \"mitr@redhat.com\"\nissuer = \"https://github.com/login/oauth\""));
        for key in [ANNOTATION_SIGNATURE, ANNOTATION_CERTIFICATE, ANNOTATION_CHAIN, ANNOTATION_BUNDLE] {
            let original = layer.annotations[key].as_bytes().to_vec();
            for i in (0..original.len()).step_by(13) {
                let mut bytes = original.clone();
                bytes[i] ^= 0x01;
                let mut l = layer.clone();
                l.annotations.insert(key.into(), String::from_utf8_lossy(&bytes).into_owned());
                // Only the result matters here: no panic. (Some flips, e.g. inside PEM line
                // endings, do not change the decoded bytes and may still verify.)
                let _ = verify_layer(&auth, &l, &exp(&digest));
            }
        }
        for i in 0..layer.payload.len() {
            let mut l = layer.clone();
            l.payload[i] ^= 0x01;
            assert!(verify_layer(&auth, &l, &exp(&digest)).is_err(), "payload byte {i}");
        }
        for cut in [0, 1, 10, 40, 90, 95] {
            let mut l = layer.clone();
            let sig = l.annotations[ANNOTATION_SIGNATURE].clone();
            l.annotations.insert(ANNOTATION_SIGNATURE.into(), sig[..cut].to_string());
            assert!(verify_layer(&auth, &l, &exp(&digest)).is_err(), "signature cut at {cut}");
        }
    }

    #[test]
    fn the_sigstore_json_reader_refuses_garbage() {
        assert!(SignatureLayer::from_sigstore_json_file(b"{}").is_err());
        assert!(SignatureLayer::from_sigstore_json_file(b"\x00sigstore-json\n{").is_err());
        assert!(SignatureLayer::from_sigstore_json_file(b"\x00sigstore-json\n{\"mimeType\":\"a\",\"payload\":\"!\"}")
            .is_err());
        let l =
            SignatureLayer::from_sigstore_json_file(b"\x00sigstore-json\n{\"mimeType\":\"a\",\"payload\":\"YQ==\"}")
                .expect("ok");
        assert_eq!((l.media_type.as_str(), l.payload.as_slice()), ("a", &b"a"[..]));
    }
}
