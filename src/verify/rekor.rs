//! Offline verification of the Rekor transparency-log "bundle" cosign stores in the
//! `dev.sigstore.cosign/bundle` layer annotation: the SignedEntryTimestamp (SET) and the binding of
//! the logged entry to the signature being verified.
//!
//! A verified SET proves the log saw this signature at `integratedTime`, which is what makes a
//! 10-minute Fulcio certificate checkable later. No inclusion proof is checked: the bundle does not
//! carry one in format A, and cosign's offline mode does not check one either.
//!
//! Sigstore bundles (format C, `verify::bundle`) carry their log entries as `tlogEntries`
//! ([`TlogEntry`]): the same SET over the same canonical JSON, plus an RFC 6962 inclusion proof and
//! a signed checkpoint, which [`verify_tlog_entry`] checks too; [`check_dsse_body`] binds a `dsse`
//! entry to the envelope being verified. Rekor v2 (tile-backed) entries have no SET: the signed
//! checkpoint is what the log vouches for, so it is required, and [`check_v2_body`] binds their
//! `hashedrekord`/`dsse` 0.0.2 bodies; their time must come from an RFC 3161 timestamp.

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::keys::{pem_blocks, truncate, PublicKey};
use super::x509::{format_time, Certificate};

/// Bundles are a few KiB; the body embeds at most a certificate chain.
const MAX_BUNDLE_BYTES: usize = 256 << 10;

/// A trusted Rekor log key.
#[derive(Clone, Debug)]
pub struct RekorKey {
    /// Where it came from, for messages: a file name or `trusted_root.json tlogs[0]`.
    pub name: String,
    key: LogKey,
    spki: Vec<u8>,
    /// Lowercase hex of the ID bundles name their log by: sha256 of the DER SubjectPublicKeyInfo
    /// for Rekor v1 logs, or the `logId` a trusted root states (Rekor v2 logs use the signed-note
    /// key ID, sha256(origin || 0x0A || 0x01 || key)). Its first four bytes are the key hint of
    /// the log's checkpoint signatures.
    log_id: String,
    valid_from: Option<OffsetDateTime>,
    valid_until: Option<OffsetDateTime>,
}

impl RekorKey {
    /// A key from a PEM `PUBLIC KEY` file such as `rekor.pub`; valid at any time.
    pub fn from_pem(name: impl Into<String>, pem: &[u8]) -> Result<RekorKey, String> {
        let key = LogKey::Pki(PublicKey::from_pem(pem)?);
        let blocks = pem_blocks(pem, 16)?;
        let der = blocks.iter().find(|b| b.label == "PUBLIC KEY").map(|b| b.der.clone()).unwrap_or_default();
        Ok(RekorKey::new(name.into(), key, der, None, None))
    }

    /// A key from DER, with the validity window `trusted_root.json` gives it.
    pub fn from_spki_der(
        name: impl Into<String>,
        der: &[u8],
        valid_from: Option<OffsetDateTime>,
        valid_until: Option<OffsetDateTime>,
    ) -> Result<RekorKey, String> {
        let key = LogKey::from_spki_der(der)?;
        Ok(RekorKey::new(name.into(), key, der.to_vec(), valid_from, valid_until))
    }

    /// The same key, named by the log ID a trusted root states for it (`logId.keyId`).
    pub fn with_log_id(mut self, log_id: &[u8]) -> RekorKey {
        self.log_id = hex::encode(log_id);
        self
    }

    /// Refuses a time outside the key's validity window.
    pub fn check_time(&self, when: OffsetDateTime) -> Result<(), String> {
        if self.valid_from.is_some_and(|f| when < f) || self.valid_until.is_some_and(|u| when > u) {
            return Err(format!("Rekor entry time {} is outside the validity of {}", format_time(when), self.name));
        }
        Ok(())
    }

    fn new(
        name: String,
        key: LogKey,
        spki: Vec<u8>,
        valid_from: Option<OffsetDateTime>,
        valid_until: Option<OffsetDateTime>,
    ) -> RekorKey {
        // The log ID is over the DER exactly as published, which is what Rekor hashes.
        let log_id = hex::encode(Sha256::digest(&spki));
        RekorKey { name, key, spki, log_id, valid_from, valid_until }
    }

    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Everything that decides what this key accepts, for configuration fingerprints.
    pub fn fingerprint(&self, h: &mut Sha256) {
        h.update((self.spki.len() as u64).to_be_bytes());
        h.update(&self.spki);
        h.update(self.log_id.as_bytes());
        for t in [self.valid_from, self.valid_until] {
            h.update(t.map(|t| t.unix_timestamp()).unwrap_or(i64::MIN).to_be_bytes());
        }
    }
}

/// The verifier of a log key. Ed25519 (Rekor v2 logs) lives here rather than in [`PublicKey`]
/// so that it is trusted for log checkpoints only, never as a signing key of an image.
#[derive(Clone, Debug)]
enum LogKey {
    Pki(PublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl LogKey {
    fn from_spki_der(der: &[u8]) -> Result<LogKey, String> {
        use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
        const OID_ED25519: &str = "1.3.101.112";
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|_| "is not a DER SubjectPublicKeyInfo")?;
        if spki.algorithm.oid.to_string() != OID_ED25519 {
            return PublicKey::from_spki_der(der).map(LogKey::Pki);
        }
        let raw: &[u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or("is a malformed Ed25519 key (not 32 bytes)")?;
        ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map(LogKey::Ed25519)
            .map_err(|_| "is an invalid Ed25519 key".into())
    }

    /// ECDSA/RSA as cosign signs (DER signatures); Ed25519 as a signed note does (64 raw bytes,
    /// strict verification so a signature has one encoding).
    fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        match self {
            LogKey::Pki(k) => k.verify_cosign(msg, sig),
            LogKey::Ed25519(k) => {
                let s = ed25519_dalek::Signature::from_slice(sig).map_err(|_| "signature is not 64 bytes")?;
                k.verify_strict(msg, &s).map_err(|_| "signature does not verify".into())
            }
        }
    }
}

/// Who made the signature, to check the Rekor entry logged the same certificate or key.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    Certificate(&'a Certificate),
    Key(&'a PublicKey),
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: BundlePayload,
}

#[derive(Deserialize)]
struct BundlePayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// Verifies a cosign bundle offline and returns its `integratedTime` (Unix seconds).
///
/// Checks: the SET is a signature by a trusted log key (chosen by `logID`) over the canonical JSON
/// of the payload; the time lies in that key's validity; the logged entry (`hashedrekord` or
/// `rekord` 0.0.1) records sha256 of `payload` and the same signature bytes.
pub fn verify_cosign_bundle(
    bundle_json: &str,
    keys: &[RekorKey],
    payload: &[u8],
    signature: &[u8],
) -> Result<i64, String> {
    verify_cosign_bundle_for(bundle_json, keys, payload, signature, None)
}

/// [`verify_cosign_bundle`], and also requires the logged entry to name `signer`: the same
/// certificate, or a certificate or key with the same public key.
pub fn verify_cosign_bundle_for(
    bundle_json: &str,
    keys: &[RekorKey],
    payload: &[u8],
    signature: &[u8],
    signer: Option<Signer<'_>>,
) -> Result<i64, String> {
    let (body, integrated_time) = verify_set(bundle_json, keys)?;
    check_body(&body, payload, signature, signer)?;
    Ok(integrated_time)
}

/// The SET of a cosign bundle: a signature by a trusted log key (chosen by `logID`) over the
/// canonical JSON of the payload, at a time inside that key's validity. Returns the logged body,
/// which the caller must bind to what it verified, and `integratedTime`.
fn verify_set(bundle_json: &str, keys: &[RekorKey]) -> Result<(Vec<u8>, i64), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if bundle_json.len() > MAX_BUNDLE_BYTES {
        return Err(format!("Rekor bundle is {} bytes, more than the {MAX_BUNDLE_BYTES} allowed", bundle_json.len()));
    }
    let bundle: Bundle = serde_json::from_str(bundle_json).map_err(|e| format!("Rekor bundle is malformed: {e}"))?;
    let p = &bundle.payload;
    let key = keys.iter().find(|k| k.log_id.eq_ignore_ascii_case(&p.log_id)).ok_or_else(|| {
        format!("Rekor bundle is from log {}, which is not a trusted Rekor key", truncate(&p.log_id, 64))
    })?;
    let set =
        b64.decode(strip_whitespace(&bundle.set)).map_err(|_| "Rekor SignedEntryTimestamp is not valid base64")?;
    key.key
        .verify(&canonical_payload(p), &set)
        .map_err(|_| format!("Rekor SignedEntryTimestamp does not verify with {}", key.name))?;

    let when = OffsetDateTime::from_unix_timestamp(p.integrated_time)
        .map_err(|_| format!("Rekor integratedTime {} is out of range", p.integrated_time))?;
    key.check_time(when)?;

    let body = b64.decode(p.body.as_bytes()).map_err(|_| "Rekor entry body is not valid base64")?;
    Ok((body, p.integrated_time))
}

/// RFC 8785 canonical JSON of the four payload fields: keys sorted, no whitespace. Written by hand
/// so the bytes cannot depend on serde_json features (`preserve_order`) enabled elsewhere.
fn canonical_payload(p: &BundlePayload) -> Vec<u8> {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    format!(
        "{{\"body\":{},\"integratedTime\":{},\"logID\":{},\"logIndex\":{}}}",
        s(&p.body),
        p.integrated_time,
        s(&p.log_id),
        p.log_index
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    spec: EntrySpec,
}

#[derive(Deserialize)]
struct EntrySpec {
    data: Option<EntryData>,
    signature: Option<EntrySignature>,
}

#[derive(Deserialize)]
struct EntryData {
    hash: Option<EntryHash>,
}

#[derive(Deserialize)]
struct EntryHash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
struct EntrySignature {
    content: String,
    #[serde(rename = "publicKey")]
    public_key: Option<EntryContent>,
}

#[derive(Deserialize)]
struct EntryContent {
    content: String,
}

fn check_body(body: &[u8], payload: &[u8], signature: &[u8], signer: Option<Signer<'_>>) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let entry: Entry = serde_json::from_slice(body).map_err(|e| format!("Rekor entry body is malformed: {e}"))?;
    if !matches!(entry.kind.as_str(), "hashedrekord" | "rekord") || entry.api_version != "0.0.1" {
        return Err(format!(
            "Rekor entry is a {} {} entry, not a hashedrekord or rekord 0.0.1 signature entry",
            truncate(&entry.kind, 32),
            truncate(&entry.api_version, 16)
        ));
    }
    let hash = entry.spec.data.and_then(|d| d.hash).ok_or("Rekor entry records no payload hash")?;
    if hash.algorithm != "sha256" {
        return Err(format!("Rekor entry hash algorithm {} is not sha256", truncate(&hash.algorithm, 16)));
    }
    if !hash.value.eq_ignore_ascii_case(&hex::encode(Sha256::digest(payload))) {
        return Err("Rekor entry is for another payload (payload hash mismatch)".into());
    }
    let sig = entry.spec.signature.ok_or("Rekor entry records no signature")?;
    let logged = b64.decode(strip_whitespace(&sig.content)).map_err(|_| "Rekor entry signature is not valid base64")?;
    if logged != signature {
        return Err("Rekor entry records a different signature".into());
    }
    if let Some(signer) = signer {
        let pk = sig.public_key.ok_or("Rekor entry records no certificate or key")?;
        let pem = b64.decode(strip_whitespace(&pk.content)).map_err(|_| "Rekor entry key is not valid base64")?;
        check_signer(&pem, signer)?;
    }
    Ok(())
}

/// The logged PEM is a certificate or a public key; compare what both sides can express.
fn check_signer(pem: &[u8], signer: Signer<'_>) -> Result<(), String> {
    let blocks = pem_blocks(pem, 4).map_err(|e| format!("Rekor entry key {e}"))?;
    let block = blocks.first().ok_or("Rekor entry key contains no PEM block")?;
    check_signer_der(&block.label, &block.der, signer)
}

/// [`check_signer`] for a logged `CERTIFICATE` or `PUBLIC KEY` (SubjectPublicKeyInfo) in DER.
fn check_signer_der(label: &str, der: &[u8], signer: Signer<'_>) -> Result<(), String> {
    const MISMATCH: &str = "Rekor entry records a different certificate or key than the signature's";
    let same = match (label, signer) {
        ("CERTIFICATE", Signer::Certificate(c)) => der == c.der,
        ("CERTIFICATE", Signer::Key(k)) => {
            let logged = Certificate::from_der(der).map_err(|e| format!("Rekor entry certificate {e}"))?;
            logged.public_key().is_ok_and(|l| &l == k)
        }
        ("PUBLIC KEY", Signer::Certificate(c)) => {
            PublicKey::from_spki_der(der).is_ok_and(|l| c.public_key().is_ok_and(|k| k == l))
        }
        ("PUBLIC KEY", Signer::Key(k)) => PublicKey::from_spki_der(der).is_ok_and(|l| &l == k),
        (other, _) => {
            return Err(format!("Rekor entry key is a PEM {}, not a certificate or public key", truncate(other, 32)))
        }
    };
    if same {
        Ok(())
    } else {
        Err(MISMATCH.into())
    }
}

pub(crate) fn strip_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

// ---- Sigstore bundle log entries (`verificationMaterial.tlogEntries[]`) ----

/// The `kindVersion.version` (and body `apiVersion`) of Rekor v2 entries, hashedrekord and dsse.
pub const REKOR_V2_VERSION: &str = "0.0.2";
/// Log entries (and their bodies) in a bundle are a few KiB; the body embeds a certificate.
const MAX_ENTRY_BODY_BYTES: usize = 256 << 10;
/// A Merkle audit path for a tree of 2^64 leaves has 64 hashes.
const MAX_PROOF_HASHES: usize = 64;
/// A checkpoint is a few lines and a signature or two (witnesses add more).
const MAX_CHECKPOINT_BYTES: usize = 16 << 10;
const MAX_CHECKPOINT_SIGNATURES: usize = 16;

/// One `tlogEntries[]` element of a Sigstore bundle (protobuf-specs `TransparencyLogEntry`, in its
/// protojson form: camelCase, int64 as strings, bytes as standard base64).
#[derive(Deserialize, Clone, Debug)]
pub struct TlogEntry {
    #[serde(rename = "logIndex", deserialize_with = "de_int64")]
    log_index: i64,
    #[serde(rename = "logId")]
    log_id: TlogLogId,
    #[serde(rename = "kindVersion")]
    kind_version: TlogKindVersion,
    #[serde(rename = "integratedTime", default, deserialize_with = "de_int64")]
    integrated_time: i64,
    #[serde(rename = "inclusionPromise")]
    inclusion_promise: Option<TlogPromise>,
    #[serde(rename = "inclusionProof")]
    inclusion_proof: Option<TlogProof>,
    #[serde(rename = "canonicalizedBody")]
    canonicalized_body: String,
}

#[derive(Deserialize, Clone, Debug)]
struct TlogLogId {
    #[serde(rename = "keyId")]
    key_id: String,
}

#[derive(Deserialize, Clone, Debug)]
struct TlogKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize, Clone, Debug)]
struct TlogPromise {
    #[serde(rename = "signedEntryTimestamp")]
    signed_entry_timestamp: String,
}

#[derive(Deserialize, Clone, Debug)]
struct TlogProof {
    #[serde(rename = "logIndex", deserialize_with = "de_int64")]
    log_index: i64,
    #[serde(rename = "rootHash")]
    root_hash: String,
    #[serde(rename = "treeSize", deserialize_with = "de_int64")]
    tree_size: i64,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<TlogCheckpoint>,
}

#[derive(Deserialize, Clone, Debug)]
struct TlogCheckpoint {
    envelope: String,
}

/// protojson writes int64 as a string but accepts a number; so do we.
fn de_int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => {
            s.parse().map_err(|_| serde::de::Error::custom(format!("{:?} is not an integer", truncate(&s, 32))))
        }
    }
}

/// What a verified log entry proves: the log recorded `body` at `integrated_time`.
#[derive(Clone, Debug)]
pub struct LoggedEntry {
    /// Unix seconds, covered by the SET; `None` for a Rekor v2 entry, which has no time: the
    /// caller must take one from a verified RFC 3161 timestamp and check it with `log`.
    pub integrated_time: Option<i64>,
    /// The trusted key that vouched for the entry.
    pub log: RekorKey,
    /// The canonicalized entry body (JSON), covered by the SET and the inclusion proof.
    pub body: Vec<u8>,
    /// `kindVersion` as the bundle states it; the caller compares it with the body.
    pub kind: String,
    pub version: String,
}

/// Verifies one bundle log entry offline against the trusted log keys:
///
/// 1. the log is one of `keys` (by `logId.keyId`, see [`RekorKey`]);
/// 2. the SET (`inclusionPromise`) is that key's signature over the canonical JSON of body,
///    integratedTime, logID and logIndex, exactly as for format A bundles, and the time lies in
///    the key's validity window. A Rekor v2 entry (version 0.0.2) has no SET: it must carry an
///    inclusion proof with a checkpoint, and comes back with no time (the caller needs an
///    RFC 3161 timestamp);
/// 3. the inclusion proof, when present (required with `require_proof`), leads from
///    sha256(0x00 || body) to `rootHash` by the RFC 9162 audit-path algorithm;
/// 4. its checkpoint, when present, is a signed note by the same key naming that root and size.
pub fn verify_tlog_entry(entry: &TlogEntry, keys: &[RekorKey], require_proof: bool) -> Result<LoggedEntry, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let log_id =
        b64.decode(strip_whitespace(&entry.log_id.key_id)).map_err(|_| "tlog entry logId.keyId is not valid base64")?;
    let log_id = hex::encode(log_id);
    let key = keys
        .iter()
        .find(|k| k.log_id.eq_ignore_ascii_case(&log_id))
        .ok_or_else(|| format!("tlog entry is from log {}, which is not a trusted Rekor key", truncate(&log_id, 64)))?;
    if entry.canonicalized_body.len() > MAX_ENTRY_BODY_BYTES * 4 / 3 + 4 {
        return Err(format!("tlog entry body is more than the {MAX_ENTRY_BODY_BYTES} bytes allowed"));
    }
    let body = b64
        .decode(strip_whitespace(&entry.canonicalized_body))
        .map_err(|_| "tlog entry canonicalizedBody is not valid base64")?;

    let integrated_time = match &entry.inclusion_promise {
        Some(promise) => {
            check_promise(promise, entry, &body, &log_id, key)?;
            Some(entry.integrated_time)
        }
        // Rekor v2 (rekor-tiles) signs no entry timestamp: what it vouches for is its checkpoint,
        // so the proof and checkpoint are required and the time must come from a timestamp.
        None if entry.kind_version.version == REKOR_V2_VERSION => {
            let proof = entry.inclusion_proof.as_ref().ok_or("Rekor v2 tlog entry has no inclusionProof")?;
            if proof.checkpoint.is_none() {
                return Err("Rekor v2 tlog entry has no signed checkpoint".into());
            }
            None
        }
        None => {
            return Err(format!(
                "tlog entry has no inclusionPromise (SET) and is not a Rekor v2 ({REKOR_V2_VERSION}) entry"
            ))
        }
    };
    match &entry.inclusion_proof {
        Some(proof) => check_inclusion_proof(proof, &body, key)?,
        None if require_proof => return Err("tlog entry has no inclusionProof (required since bundle v0.2)".into()),
        None => {}
    }
    Ok(LoggedEntry {
        integrated_time,
        log: key.clone(),
        body,
        kind: entry.kind_version.kind.clone(),
        version: entry.kind_version.version.clone(),
    })
}

/// A Rekor v1 SET: the log key's signature over the canonical JSON of body, integratedTime,
/// logID and logIndex (exactly as for format A bundles), at a time inside the key's validity.
fn check_promise(
    promise: &TlogPromise,
    entry: &TlogEntry,
    body: &[u8],
    log_id: &str,
    key: &RekorKey,
) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let set = b64
        .decode(strip_whitespace(&promise.signed_entry_timestamp))
        .map_err(|_| "Rekor SignedEntryTimestamp is not valid base64")?;
    // The SET covers the body as Rekor's API returns it: standard base64 of the same bytes.
    let signed = BundlePayload {
        body: b64.encode(body),
        integrated_time: entry.integrated_time,
        log_index: entry.log_index,
        log_id: log_id.to_string(),
    };
    key.key
        .verify(&canonical_payload(&signed), &set)
        .map_err(|_| format!("Rekor SignedEntryTimestamp does not verify with {}", key.name))?;
    let when = OffsetDateTime::from_unix_timestamp(entry.integrated_time)
        .map_err(|_| format!("Rekor integratedTime {} is out of range", entry.integrated_time))?;
    key.check_time(when)
}

fn decode_hash(s: &str, what: &str) -> Result<[u8; 32], String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(strip_whitespace(s))
        .map_err(|_| format!("tlog inclusion proof {what} is not valid base64"))?;
    raw.try_into().map_err(|_| format!("tlog inclusion proof {what} is not a sha256 hash"))
}

fn check_inclusion_proof(proof: &TlogProof, body: &[u8], key: &RekorKey) -> Result<(), String> {
    if proof.hashes.len() > MAX_PROOF_HASHES {
        return Err(format!("tlog inclusion proof has {} hashes, more than {MAX_PROOF_HASHES}", proof.hashes.len()));
    }
    let (Ok(index), Ok(size)) = (u64::try_from(proof.log_index), u64::try_from(proof.tree_size)) else {
        return Err("tlog inclusion proof has a negative logIndex or treeSize".into());
    };
    let root = decode_hash(&proof.root_hash, "rootHash")?;
    let path = proof.hashes.iter().map(|h| decode_hash(h, "hash")).collect::<Result<Vec<_>, _>>()?;
    let leaf = merkle_leaf(body);
    if merkle_root(index, size, leaf, &path) != Some(root) {
        return Err("tlog inclusion proof does not lead to its rootHash".into());
    }
    if let Some(cp) = &proof.checkpoint {
        check_checkpoint(&cp.envelope, size, &root, key)?;
    }
    Ok(())
}

/// RFC 6962 leaf hash.
pub(crate) fn merkle_leaf(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node hash.
pub(crate) fn merkle_node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root an audit path leads to (RFC 9162 §2.1.3.2), or `None` when the path does not fit a
/// tree of `size` leaves.
pub(crate) fn merkle_root(index: u64, size: u64, leaf: [u8; 32], path: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = merkle_node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = merkle_node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// Checks a checkpoint (a signed note): `<origin>\n<size>\n<b64 root>\n[extensions]\n\n` followed
/// by signature lines `— <name> <b64(key hint[4] || DER signature)>`. One signature whose hint is
/// the first four bytes of the log ID must verify with the log key over the note text, and the note
/// must name the proof's tree size and root.
fn check_checkpoint(envelope: &str, size: u64, root: &[u8; 32], key: &RekorKey) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if envelope.len() > MAX_CHECKPOINT_BYTES {
        return Err(format!("tlog checkpoint is more than {MAX_CHECKPOINT_BYTES} bytes"));
    }
    let (text, signatures) = envelope.split_once("\n\n").ok_or("tlog checkpoint is not a signed note")?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let (Some(_origin), Some(note_size), Some(note_root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err("tlog checkpoint has fewer than three lines".into());
    };
    let hint = hex::decode(&key.log_id).unwrap_or_default();
    let mut verified = false;
    for line in signatures.lines().filter(|l| !l.is_empty()).take(MAX_CHECKPOINT_SIGNATURES) {
        let Some((_, sig)) = line.strip_prefix("\u{2014} ").and_then(|l| l.rsplit_once(' ')) else {
            return Err("tlog checkpoint has a malformed signature line".into());
        };
        let Ok(sig) = b64.decode(sig) else {
            return Err("tlog checkpoint signature is not valid base64".into());
        };
        if sig.len() > 4
            && hint.len() >= 4
            && sig[..4] == hint[..4]
            && key.key.verify(text.as_bytes(), &sig[4..]).is_ok()
        {
            verified = true;
            break;
        }
    }
    if !verified {
        return Err(format!("tlog checkpoint signature does not verify with {}", key.name));
    }
    if note_size.parse::<u64>().ok() != Some(size) {
        return Err(format!("tlog checkpoint is for tree size {}, not the proof's {size}", truncate(note_size, 24)));
    }
    if b64.decode(note_root).ok().as_deref() != Some(&root[..]) {
        return Err("tlog checkpoint names another root hash than the inclusion proof".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct DsseEntry {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    spec: DsseSpec,
}

#[derive(Deserialize)]
struct DsseSpec {
    #[serde(rename = "envelopeHash")]
    envelope_hash: Option<EntryHash>,
    #[serde(rename = "payloadHash")]
    payload_hash: Option<EntryHash>,
    #[serde(default)]
    signatures: Vec<DsseEntrySignature>,
}

#[derive(Deserialize)]
struct DsseEntrySignature {
    signature: String,
    verifier: String,
}

/// Binds a verified `dsse` 0.0.1 entry to a DSSE envelope: the body must be the kind the bundle
/// says, record sha256 of the (decoded) payload, and list `signature` with a verifier that is the
/// same certificate or key as `signer`. The envelope hash is not compared: it depends on how the
/// signer serialized the envelope, which a bundle does not preserve.
pub fn check_dsse_body(
    logged: &LoggedEntry,
    payload: &[u8],
    signature: &[u8],
    signer: Signer<'_>,
) -> Result<(), String> {
    let entry: DsseEntry =
        serde_json::from_slice(&logged.body).map_err(|e| format!("Rekor entry body is malformed: {e}"))?;
    if entry.kind != "dsse" || entry.api_version != "0.0.1" {
        return Err(format!(
            "Rekor entry is a {} {} entry, not a dsse 0.0.1 entry",
            truncate(&entry.kind, 32),
            truncate(&entry.api_version, 16)
        ));
    }
    if logged.kind != entry.kind || logged.version != entry.api_version {
        return Err(format!(
            "tlog entry kindVersion {} {} does not match its body",
            truncate(&logged.kind, 32),
            truncate(&logged.version, 16)
        ));
    }
    check_dsse_spec(&entry.spec, payload, signature, signer)
}

/// The payload hash and the signature with its verifier of a `dsse` 0.0.1 body.
fn check_dsse_spec(spec: &DsseSpec, payload: &[u8], signature: &[u8], signer: Signer<'_>) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    check_hash(spec.payload_hash.as_ref(), payload, "payload")?;
    let logged_sig = spec
        .signatures
        .iter()
        .take(MAX_LOGGED_SIGNATURES)
        .find(|s| b64.decode(strip_whitespace(&s.signature)).is_ok_and(|d| d == signature))
        .ok_or("Rekor entry records a different signature")?;
    let pem = b64.decode(strip_whitespace(&logged_sig.verifier)).map_err(|_| "Rekor entry key is not valid base64")?;
    check_signer(&pem, signer)
}

/// A logged sha256 `hash` of `data`, which is the `what` ("payload", "envelope") verified.
fn check_hash(hash: Option<&EntryHash>, data: &[u8], what: &str) -> Result<(), String> {
    let hash = hash.ok_or_else(|| format!("Rekor entry records no {what} hash"))?;
    if hash.algorithm != "sha256" {
        return Err(format!("Rekor entry hash algorithm {} is not sha256", truncate(&hash.algorithm, 16)));
    }
    if !hash.value.eq_ignore_ascii_case(&hex::encode(Sha256::digest(data))) {
        return Err(format!("Rekor entry is for another {what} ({what} hash mismatch)"));
    }
    Ok(())
}

/// Signatures a logged DSSE entry may list; cosign writes one.
const MAX_LOGGED_SIGNATURES: usize = 16;

// ---- The Rekor entries of `.att` attestation layers (cosign bundle annotation) ----

/// What the Rekor entry of a `.att` layer must record: the envelope exactly as the layer holds
/// it (the bytes cosign uploaded, so its hash is comparable, unlike in a Sigstore bundle), its
/// payload and the signature that verified.
pub struct AttestedEnvelope<'a> {
    /// The layer blob: the serialized DSSE envelope.
    pub envelope: &'a [u8],
    pub payload_type: &'a str,
    /// The decoded payload.
    pub payload: &'a [u8],
    /// The signature bytes that verified with `signer`.
    pub signature: &'a [u8],
}

/// Verifies the cosign bundle of a `.att` layer offline and returns its `integratedTime`: the SET
/// as for signatures ([`verify_cosign_bundle`]), then the logged body, which must be one of the
/// kinds `cosign attest` has uploaded and bind this envelope, payload, signature and signer:
///
/// * `intoto` 0.0.1: sha256 of the envelope, sha256 of the payload (absent from the oldest
///   entries; the envelope hash covers it), and the signer's key or certificate (`publicKey`);
/// * `intoto` 0.0.2: the same hashes, the payload type, and the signature among the envelope's
///   `signatures` (each `sig` is base64 of the envelope's base64 signature) with its `publicKey`;
/// * `dsse` 0.0.1: `envelopeHash`, `payloadHash`, and the signature among `signatures` with its
///   `verifier`.
///
/// Any other kind or version is refused.
pub fn verify_attestation_bundle(
    bundle_json: &str,
    keys: &[RekorKey],
    env: &AttestedEnvelope<'_>,
    signer: Signer<'_>,
) -> Result<i64, String> {
    let (body, integrated_time) = verify_set(bundle_json, keys)?;
    check_attestation_body(&body, env, signer)?;
    Ok(integrated_time)
}

#[derive(Deserialize)]
struct AnyEntry {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    spec: serde_json::Value,
}

#[derive(Deserialize)]
struct IntotoV001 {
    content: IntotoV001Content,
    #[serde(rename = "publicKey")]
    public_key: String,
}

#[derive(Deserialize)]
struct IntotoV001Content {
    hash: Option<EntryHash>,
    #[serde(rename = "payloadHash")]
    payload_hash: Option<EntryHash>,
}

#[derive(Deserialize)]
struct IntotoV002 {
    content: IntotoV002Content,
}

#[derive(Deserialize)]
struct IntotoV002Content {
    envelope: IntotoV002Envelope,
    hash: Option<EntryHash>,
    #[serde(rename = "payloadHash")]
    payload_hash: Option<EntryHash>,
}

#[derive(Deserialize)]
struct IntotoV002Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<IntotoV002Signature>,
}

#[derive(Deserialize)]
struct IntotoV002Signature {
    sig: String,
    #[serde(rename = "publicKey")]
    public_key: String,
}

fn check_attestation_body(body: &[u8], env: &AttestedEnvelope<'_>, signer: Signer<'_>) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let AnyEntry { api_version, kind, spec } =
        serde_json::from_slice(body).map_err(|e| format!("Rekor entry body is malformed: {e}"))?;
    let malformed = |e: serde_json::Error| {
        format!("Rekor {} {} entry is malformed: {e}", truncate(&kind, 32), truncate(&api_version, 16))
    };
    match (kind.as_str(), api_version.as_str()) {
        ("intoto", "0.0.1") => {
            let s: IntotoV001 = serde_json::from_value(spec).map_err(malformed)?;
            check_hash(s.content.hash.as_ref(), env.envelope, "envelope")?;
            if s.content.payload_hash.is_some() {
                check_hash(s.content.payload_hash.as_ref(), env.payload, "payload")?;
            }
            let pem = b64.decode(strip_whitespace(&s.public_key)).map_err(|_| "Rekor entry key is not valid base64")?;
            check_signer(&pem, signer)
        }
        ("intoto", "0.0.2") => {
            let s: IntotoV002 = serde_json::from_value(spec).map_err(malformed)?;
            check_hash(s.content.hash.as_ref(), env.envelope, "envelope")?;
            check_hash(s.content.payload_hash.as_ref(), env.payload, "payload")?;
            if s.content.envelope.payload_type != env.payload_type {
                return Err(format!(
                    "Rekor entry is for another payload type ({})",
                    truncate(&s.content.envelope.payload_type, 100)
                ));
            }
            let twice = |s: &str| b64.decode(strip_whitespace(s)).ok().and_then(|once| b64.decode(once).ok());
            let logged_sig = s
                .content
                .envelope
                .signatures
                .iter()
                .take(MAX_LOGGED_SIGNATURES)
                .find(|s| twice(&s.sig).as_deref() == Some(env.signature))
                .ok_or("Rekor entry records a different signature")?;
            let pem = b64
                .decode(strip_whitespace(&logged_sig.public_key))
                .map_err(|_| "Rekor entry key is not valid base64")?;
            check_signer(&pem, signer)
        }
        ("dsse", "0.0.1") => {
            let s: DsseSpec = serde_json::from_value(spec).map_err(malformed)?;
            check_hash(s.envelope_hash.as_ref(), env.envelope, "envelope")?;
            check_dsse_spec(&s, env.payload, env.signature, signer)
        }
        (kind, version) => Err(format!(
            "Rekor entry is a {} {} entry, not an attestation entry (intoto 0.0.1 or 0.0.2, dsse 0.0.1)",
            truncate(kind, 32),
            truncate(version, 16)
        )),
    }
}

// ---- Rekor v2 entry bodies (protobuf-specs `rekor.v2.Entry`, protojson) ----

#[derive(Deserialize)]
struct V2Entry {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    spec: V2Spec,
}

#[derive(Deserialize)]
struct V2Spec {
    #[serde(rename = "hashedRekordV002")]
    hashed_rekord: Option<V2HashedRekord>,
    #[serde(rename = "dsseV002")]
    dsse: Option<V2Dsse>,
}

#[derive(Deserialize)]
struct V2HashedRekord {
    data: V2Hash,
    signature: V2Signature,
}

#[derive(Deserialize)]
struct V2Dsse {
    #[serde(rename = "payloadHash")]
    payload_hash: V2Hash,
    #[serde(default)]
    signatures: Vec<V2Signature>,
}

#[derive(Deserialize)]
struct V2Hash {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
struct V2Signature {
    content: String,
    verifier: V2Verifier,
}

#[derive(Deserialize)]
struct V2Verifier {
    #[serde(rename = "x509Certificate")]
    certificate: Option<V2Raw>,
    #[serde(rename = "publicKey")]
    public_key: Option<V2Raw>,
}

#[derive(Deserialize)]
struct V2Raw {
    #[serde(rename = "rawBytes")]
    raw_bytes: String,
}

/// What a Rekor v2 entry must record for a DSSE envelope to be the one logged.
pub struct SignedEnvelope<'a> {
    /// The DSSE payload (its sha256 is a `dsse` entry's `payloadHash`).
    pub payload: &'a [u8],
    /// PAE(payloadType, payload), the bytes signed (its sha256 is a `hashedrekord` entry's
    /// digest: the "hashedrekord over DSSE" encoding rekor-tiles clients write).
    pub signed: &'a [u8],
    /// The signature bytes.
    pub signature: &'a [u8],
}

/// Binds a verified Rekor v2 entry (`hashedrekord` or `dsse`, 0.0.2) to a DSSE envelope: the
/// body is the kind the bundle says, records the sha256 of what was signed (see
/// [`SignedEnvelope`]), this signature, and a verifier that is the same certificate or key as
/// `signer`.
pub fn check_v2_body(logged: &LoggedEntry, env: &SignedEnvelope<'_>, signer: Signer<'_>) -> Result<(), String> {
    let entry: V2Entry =
        serde_json::from_slice(&logged.body).map_err(|e| format!("Rekor v2 entry body is malformed: {e}"))?;
    if entry.api_version != REKOR_V2_VERSION || logged.kind != entry.kind || logged.version != entry.api_version {
        return Err(format!(
            "tlog entry kindVersion {} {} does not match its body ({} {})",
            truncate(&logged.kind, 32),
            truncate(&logged.version, 16),
            truncate(&entry.kind, 32),
            truncate(&entry.api_version, 16)
        ));
    }
    let (hash, expected, signatures) = match (entry.kind.as_str(), &entry.spec) {
        ("hashedrekord", V2Spec { hashed_rekord: Some(h), .. }) => {
            (&h.data, Sha256::digest(env.signed), std::slice::from_ref(&h.signature))
        }
        ("dsse", V2Spec { dsse: Some(d), .. }) => {
            (&d.payload_hash, Sha256::digest(env.payload), d.signatures.as_slice())
        }
        (kind, _) => {
            return Err(format!(
                "Rekor v2 entry is a {} entry without its spec, not hashedrekord or dsse",
                truncate(kind, 32)
            ))
        }
    };
    if hash.algorithm != "SHA2_256" {
        return Err(format!("Rekor entry hash algorithm {} is not SHA2_256", truncate(&hash.algorithm, 16)));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if b64.decode(strip_whitespace(&hash.digest)).ok().as_deref() != Some(&expected[..]) {
        return Err("Rekor entry is for another payload (payload hash mismatch)".into());
    }
    let logged_sig = signatures
        .iter()
        .take(16)
        .find(|s| b64.decode(strip_whitespace(&s.content)).is_ok_and(|d| d == env.signature))
        .ok_or("Rekor entry records a different signature")?;
    let v = &logged_sig.verifier;
    let (label, raw) = match (&v.certificate, &v.public_key) {
        (Some(c), _) => ("CERTIFICATE", c),
        (None, Some(k)) => ("PUBLIC KEY", k),
        (None, None) => return Err("Rekor entry records no certificate or key".into()),
    };
    let der = b64.decode(strip_whitespace(&raw.raw_bytes)).map_err(|_| "Rekor entry key is not valid base64")?;
    check_signer_der(label, &der, signer)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"))).expect("vector file")
    }

    pub(crate) fn rekor_pub() -> RekorKey {
        RekorKey::from_pem("rekor.pub", &vector("cosign/containers-image/rekor.pub")).expect("rekor.pub")
    }

    fn layer(dir: &str) -> (Vec<u8>, Vec<u8>, String, std::collections::BTreeMap<String, String>) {
        let l = super::super::cosign::SignatureLayer::from_sigstore_json_file(&vector(&format!(
            "cosign/containers-image/{dir}/signature-1"
        )))
        .expect("layer");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(strip_whitespace(&l.annotations["dev.cosignproject.cosign/signature"]))
            .expect("sig");
        let bundle = l.annotations["dev.sigstore.cosign/bundle"].clone();
        (l.payload, sig, bundle, l.annotations)
    }

    /// A bundle for `payload`/`sig` signed by a test log key, as Rekor would make it.
    pub(crate) fn make_bundle(
        log: &p256::ecdsa::SigningKey,
        payload: &[u8],
        sig: &[u8],
        signer_pem: &str,
        integrated_time: i64,
    ) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {"content": b64.encode(sig), "publicKey": {"content": b64.encode(signer_pem)}}
            }
        });
        bundle_with_body(log, &body, integrated_time)
    }

    /// A cosign bundle (`dev.sigstore.cosign/bundle`) logging `body`, its SET by `log`.
    pub(crate) fn bundle_with_body(
        log: &p256::ecdsa::SigningKey,
        body: &serde_json::Value,
        integrated_time: i64,
    ) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let p = BundlePayload {
            body: b64.encode(serde_json::to_vec(body).expect("json")),
            integrated_time,
            log_index: 42,
            log_id: test_log_key(log).log_id,
        };
        let set: p256::ecdsa::Signature = log.sign(&canonical_payload(&p));
        serde_json::json!({
            "SignedEntryTimestamp": b64.encode(set.to_der().as_bytes()),
            "Payload": {"body": p.body, "integratedTime": p.integrated_time, "logIndex": p.log_index, "logID": p.log_id}
        })
        .to_string()
    }

    pub(crate) fn test_log_key(log: &p256::ecdsa::SigningKey) -> RekorKey {
        let der = PublicKey::P256(*log.verifying_key()).spki_der();
        RekorKey::from_spki_der("test-rekor.pub", &der, None, None).expect("key")
    }

    #[test]
    fn the_rekor_test_key_has_the_production_log_id() {
        assert_eq!(rekor_pub().log_id(), "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d");
    }

    #[test]
    fn the_key_rekor_vector_bundle_verifies_and_binds_to_its_key() {
        let (payload, sig, bundle, _) = layer("dir-img-cosign-key-rekor-valid");
        assert_eq!(verify_cosign_bundle(&bundle, &[rekor_pub()], &payload, &sig), Ok(1_674_251_859));
        let key = PublicKey::from_pem(&vector("cosign/containers-image/cosign2.pub")).expect("key");
        assert!(verify_cosign_bundle_for(&bundle, &[rekor_pub()], &payload, &sig, Some(Signer::Key(&key))).is_ok());
        let other = PublicKey::from_pem(&vector("cosign/containers-image/cosign.pub")).expect("key");
        assert_eq!(
            verify_cosign_bundle_for(&bundle, &[rekor_pub()], &payload, &sig, Some(Signer::Key(&other))),
            Err("Rekor entry records a different certificate or key than the signature's".into())
        );
    }

    #[test]
    fn the_fulcio_vector_bundle_verifies_at_its_integrated_time() {
        let (payload, sig, bundle, ann) = layer("dir-img-cosign-fulcio-rekor-valid");
        let cert = super::super::x509::parse_pem_certificates(ann["dev.sigstore.cosign/certificate"].as_bytes())
            .expect("cert")
            .remove(0);
        assert_eq!(
            verify_cosign_bundle_for(&bundle, &[rekor_pub()], &payload, &sig, Some(Signer::Certificate(&cert))),
            Ok(1_674_247_893)
        );
        // A key whose validity window does not cover the entry time is not trusted for it.
        let late = RekorKey::from_spki_der(
            "late",
            rekor_pub().spki_der(),
            Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t")),
            None,
        )
        .expect("key");
        assert_eq!(
            verify_cosign_bundle(&bundle, &[late], &payload, &sig),
            Err("Rekor entry time 2023-01-20T20:51:33Z is outside the validity of late".into())
        );
    }

    #[test]
    fn bundles_that_do_not_match_the_signature_are_refused_with_reasons() {
        let (payload, sig, bundle, _) = layer("dir-img-cosign-key-rekor-valid");
        let keys = [rekor_pub()];
        let mut other_payload = payload.clone();
        other_payload.push(b' ');
        assert_eq!(
            verify_cosign_bundle(&bundle, &keys, &other_payload, &sig),
            Err("Rekor entry is for another payload (payload hash mismatch)".into())
        );
        let mut other_sig = sig.clone();
        other_sig[8] ^= 1;
        assert_eq!(
            verify_cosign_bundle(&bundle, &keys, &payload, &other_sig),
            Err("Rekor entry records a different signature".into())
        );
        // Change the integrated time: the SET no longer covers the payload.
        let forged = bundle.replace("\"integratedTime\":", "\"integratedTime\":1");
        assert_eq!(
            verify_cosign_bundle(&forged, &keys, &payload, &sig),
            Err("Rekor SignedEntryTimestamp does not verify with rekor.pub".into())
        );
        assert!(verify_cosign_bundle("{", &keys, &payload, &sig).unwrap_err().starts_with("Rekor bundle is malformed"));
        assert!(verify_cosign_bundle("[]", &keys, &payload, &sig).is_err());
        assert_eq!(verify_cosign_bundle(&bundle, &[], &payload, &sig).unwrap_err(),
            "Rekor bundle is from log c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d, which is not a trusted Rekor key");
    }

    #[test]
    fn a_bundle_signed_by_another_log_key_is_refused() {
        let (payload, sig, _, _) = layer("dir-img-cosign-key-rekor-valid");
        let rogue = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).expect("key");
        let pem = String::from_utf8(vector("cosign/containers-image/cosign2.pub")).expect("pem");
        let bundle = make_bundle(&rogue, &payload, &sig, &pem, 1_700_000_000);
        // Accepted by its own key, so the construction is right …
        assert_eq!(verify_cosign_bundle(&bundle, &[test_log_key(&rogue)], &payload, &sig), Ok(1_700_000_000));
        // … but not by the trusted log.
        let err = verify_cosign_bundle(&bundle, &[rekor_pub()], &payload, &sig).unwrap_err();
        assert!(err.ends_with("which is not a trusted Rekor key"), "{err}");
        // Claiming the trusted log's ID does not help: the SET does not verify with its key.
        let lying = bundle.replace(test_log_key(&rogue).log_id(), rekor_pub().log_id());
        assert_eq!(
            verify_cosign_bundle(&lying, &[rekor_pub()], &payload, &sig),
            Err("Rekor SignedEntryTimestamp does not verify with rekor.pub".into())
        );
        let garbage = bundle.replace("\"SignedEntryTimestamp\":\"", "\"SignedEntryTimestamp\":\"!!");
        assert_eq!(
            verify_cosign_bundle(&garbage, &[test_log_key(&rogue)], &payload, &sig),
            Err("Rekor SignedEntryTimestamp is not valid base64".into())
        );
    }
}
