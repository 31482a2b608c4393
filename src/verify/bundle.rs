//! Cosign "format C": a Sigstore bundle (v0.3, or v0.2) attached to the image as an OCI referrer,
//! as `cosign sign` writes it since v3. Pure, like `cosign`: the caller fetches the bundle JSON and
//! passes bytes, the authority, the served digest and "now".
//!
//! What is signed is a DSSE envelope over an in-toto Statement whose subject is the image digest
//! and whose predicateType is `https://sigstore.dev/cosign/sign/v1`. The checks, in a fixed order
//! so refusals are predictable:
//!
//! 1. the bundle: at most [`MAX_BUNDLE_BYTES`], media type v0.3 (or v0.2), a `dsseEnvelope` with
//!    payloadType `application/vnd.in-toto+json` and exactly one signature;
//! 2. the signature over PAE(payloadType, payload), with the configured key (key authority) or
//!    the leaf certificate's key (certificate authority);
//! 3. the transparency log, through `rekor`: a `dsse` 0.0.1 entry whose SET verifies with a trusted
//!    Rekor key (chosen by logId), whose inclusion proof leads to its root hash and whose checkpoint
//!    is signed by the same key, and whose body records this payload, this signature and this
//!    signer; or a Rekor v2 `hashedrekord`/`dsse` 0.0.2 entry (no SET) whose inclusion proof and
//!    checkpoint verify the same way and whose body records sha256(PAE) (hashedrekord) or the
//!    payload hash (dsse), this signature and this signer. Certificate authorities always need one
//!    (a v1 `integratedTime` is the signing time the certificate is checked at; a v2 entry has
//!    none, see step 4); key authorities need one when they list Rekor keys, and refuse v2 entries;
//! 4. for certificates, the RFC 3161 timestamps of `timestampVerificationData`, when the trusted
//!    root lists timestamp authorities: every timestamp present must verify (its message imprint
//!    is the hash of the DSSE signature bytes; the CMS check is notation's, `timestamp::verify`)
//!    with one authority, inside that authority's `validFor`. With a Rekor v2 entry at least one
//!    timestamp is required (and must fall in the log key's validity): it is the signing time;
//! 5. for certificates, the chain, identity and issuer exactly as for format A
//!    (`cosign::check_certificate`), at every verified time: the Rekor `integratedTime` and each
//!    timestamp's `genTime`;
//! 6. the (now authenticated) statement: type, predicateType, subject digest, and last the
//!    repository the subject names (see "Repository binding" below).
//!
//! # Repository binding
//!
//! A format A payload names its repository (`critical.identity.docker-reference`), so a signature
//! copied into another repository is refused. An in-toto subject may name one too, and the name
//! is held to the same rule, with the same normalisation (`cosign::normalize_reference`: tag and
//! digest dropped, Docker Hub spellings folded) and the same words: "signature names image X but
//! this is Y". What signers put there, as of this writing:
//! * `cosign sign` v3 (`signDigestBundle` in `cmd/cosign/cli/sign/sign.go`) writes ONE subject
//!   with only `digest` and `annotations`, no `name`; the cosign v3 bundle among the known-answer
//!   vectors (`sigstore-rs/bundle_v03.json`) is exactly that. So a cosign v3 bundle binds the
//!   digest only, and cosign's own verifier checks only the digest
//!   (`verifyImageAttestationsSigstoreBundle` in `pkg/cosign/verify.go`).
//! * `cosign attest` (`attestation.GenerateStatement`) names the repository without tag:
//!   `digest.Repository.String()`; the attestation vector names `127.0.0.1:60943/repo`.
//! * GitHub's `actions/attest*` (sigstore-js) take `subject-name` as the image name, such as
//!   `ghcr.io/acme/api` or `index.docker.io/acme/api` (GitHub's docs for publishing images), and
//!   since actions/attest#464 keep a tag (`ghcr.io/acme/api:v1`) in the signed subject.
//!
//! The last two are attestations, which are refused here anyway; they show how a `name` is
//! written, so a signer that binds a `cosign/sign/v1` statement to its repository is read the
//! same way (repository, optional tag or digest). No vector here has a named `sign/v1` subject.
//!
//! A bundle whose subjects with the served digest name no repository could have been copied in
//! from any repository whose signer the policy trusts, so it is refused as [`Refusal::Unbound`];
//! the policy may opt in to accepting it (`dangerous_accept_unbound_bundles`). With
//! `docker_reference = "any"` nothing is compared, named or not: the policy has already opted out
//! of repository binding for format A too.
//!
//! Not done, on purpose:
//! * Without timestamp authorities (a `roots` PEM, or a trusted root that lists none) the
//!   timestamps cannot be checked, so they are ignored and are not a time source. They are also
//!   ignored for key authorities, which have no certificate to check at a time.
//! * A timestamp is an additional time source beside a Rekor v1 `integratedTime`. Rekor v2
//!   entries (`hashedrekord`/`dsse` 0.0.2, from a tile log) carry an inclusion proof and a signed
//!   checkpoint but no SET and no time, so for them the timestamps are the only time source:
//!   at least one must verify with a timestamp authority of the trusted root, or the bundle is
//!   refused. Key authorities have no timestamp authorities, so they refuse v2 entries.
//! * `messageSignature` bundles (`cosign sign-blob`) and attestations are not image signatures.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use time::OffsetDateTime;

use super::cosign::{self, CosignAuthority, Expectation, Refusal};
use super::keys::truncate;
use super::rekor::{self, strip_whitespace, RekorKey, Signer, TlogEntry};
use super::timestamp::{self, TsaTrust};
use super::x509::{self, Certificate};

/// The media type cosign v3 gives the bundle blob and the referrer's `artifactType`.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Every bundle media type accepted. All are v0.2 or later, so every log entry must carry an
/// inclusion proof; v0.1 bundles (SET only) are refused.
const ACCEPTED_MEDIA_TYPES: [&str; 3] = [
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
];
/// The predicate `cosign sign` (v3) signs; anything else is an attestation.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub(crate) const STATEMENT_TYPES: [&str; 2] = ["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"];

/// Real bundles are 5–12 KiB (a certificate, a proof, a timestamp).
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// The statement of an image signature is a few hundred bytes; annotations add a little.
const MAX_STATEMENT_BYTES: usize = 64 << 10;
/// Cosign writes one log entry.
const MAX_TLOG_ENTRIES: usize = 8;
/// Base64 of the largest signature accepted (RSA-8192), with room.
const MAX_SIGNATURE_B64: usize = 4 << 10;
/// Cosign writes one timestamp.
const MAX_TIMESTAMPS: usize = 8;

#[derive(Deserialize)]
struct BundleJson {
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "verificationMaterial")]
    material: Option<Material>,
    #[serde(rename = "dsseEnvelope")]
    dsse: Option<Envelope>,
    #[serde(rename = "messageSignature")]
    message_signature: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Material {
    certificate: Option<RawBytes>,
    #[serde(rename = "x509CertificateChain")]
    chain: Option<CertificateChain>,
    #[serde(rename = "publicKey")]
    public_key: Option<serde::de::IgnoredAny>,
    #[serde(rename = "tlogEntries", default)]
    tlog_entries: Vec<TlogEntry>,
    #[serde(rename = "timestampVerificationData")]
    timestamps: Option<TimestampData>,
}

#[derive(Deserialize)]
struct TimestampData {
    #[serde(rename = "rfc3161Timestamps", default)]
    rfc3161: Vec<SignedTimestamp>,
}

#[derive(Deserialize)]
struct SignedTimestamp {
    /// Base64 of a DER RFC 3161 `TimeStampResp`.
    #[serde(rename = "signedTimestamp")]
    signed_timestamp: String,
}

/// A time at which the signature is proven to have existed, and what proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifiedTime {
    /// The `integratedTime` of a verified Rekor entry.
    Rekor(OffsetDateTime),
    /// The `genTime` of a verified RFC 3161 timestamp, and the authority that vouched for it.
    Rfc3161 { at: OffsetDateTime, authority: String },
}

impl VerifiedTime {
    pub fn at(&self) -> OffsetDateTime {
        match self {
            VerifiedTime::Rekor(at) | VerifiedTime::Rfc3161 { at, .. } => *at,
        }
    }
}

#[derive(Deserialize)]
struct RawBytes {
    #[serde(rename = "rawBytes")]
    raw_bytes: String,
}

#[derive(Deserialize)]
struct CertificateChain {
    #[serde(default)]
    certificates: Vec<RawBytes>,
}

/// A DSSE envelope, as a bundle carries it and as a `.att` layer is (`verify::attestation`).
#[derive(Deserialize)]
pub(crate) struct Envelope {
    pub(crate) payload: String,
    #[serde(rename = "payloadType")]
    pub(crate) payload_type: String,
    #[serde(default)]
    pub(crate) signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
pub(crate) struct EnvelopeSignature {
    pub(crate) sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
    #[serde(default)]
    subject: Vec<StatementSubject>,
}

#[derive(Deserialize)]
struct StatementSubject {
    /// The artifact's name; for an image, its repository (see "Repository binding").
    name: Option<String>,
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// How large a bundle and its statement may be. Image signatures are small; attestations carry a
/// predicate (an SBOM, a scan report) and are allowed more (`verify::attestation`).
pub(crate) struct EnvelopeLimits {
    pub bundle: usize,
    pub statement: usize,
}

pub(super) const SIGNATURE_LIMITS: EnvelopeLimits =
    EnvelopeLimits { bundle: MAX_BUNDLE_BYTES, statement: MAX_STATEMENT_BYTES };

/// Verifies one bundle against one authority.
pub fn verify_bundle(auth: &CosignAuthority, json: &[u8], exp: &Expectation) -> Result<(), Refusal> {
    verify_bundle_times(auth, json, exp).map(|_| ())
}

/// Who made a bundle that verified with `auth`, for the audit trail (see
/// [`cosign::signer_of_layer`]).
pub fn signer_of_bundle(auth: &CosignAuthority, json: &[u8]) -> Option<String> {
    match auth {
        CosignAuthority::Key { key, .. } => Some(cosign::key_fingerprint(key)),
        CosignAuthority::Certificate { .. } => {
            let bundle: BundleJson = serde_json::from_slice(json).ok()?;
            let (leaf, _) = bundle_certificates(bundle.material.as_ref()?).ok()?;
            Some(cosign::certificate_identity(&leaf))
        }
    }
}

/// [`verify_bundle`], returning the verified time sources the certificate was checked at (for a
/// key authority: the Rekor time, if a log entry was required).
pub fn verify_bundle_times(
    auth: &CosignAuthority,
    json: &[u8],
    exp: &Expectation,
) -> Result<Vec<VerifiedTime>, Refusal> {
    let (times, statement) = verify_envelope(auth, json, &SIGNATURE_LIMITS)?;
    check_statement(&statement, exp)?;
    Ok(times)
}

/// Checks 1 to 5: everything but the statement's claims. Returns the verified times and the
/// authenticated statement bytes.
pub(crate) fn verify_envelope(
    auth: &CosignAuthority,
    json: &[u8],
    limits: &EnvelopeLimits,
) -> Result<(Vec<VerifiedTime>, Vec<u8>), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if json.len() > limits.bundle {
        return Err(format!("bundle is {} bytes, more than the {} allowed", json.len(), limits.bundle));
    }
    let bundle: BundleJson = serde_json::from_slice(json).map_err(|e| format!("bundle is malformed: {e}"))?;
    if !ACCEPTED_MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
        return Err(format!(
            "bundle media type {} is not a Sigstore bundle v0.2 or v0.3",
            truncate(&bundle.media_type, 100)
        ));
    }
    let Some(env) = &bundle.dsse else {
        return Err(if bundle.message_signature.is_some() {
            "bundle holds a messageSignature (cosign sign-blob), not a DSSE image signature".into()
        } else {
            "bundle has no dsseEnvelope".into()
        });
    };
    let material = bundle.material.as_ref().ok_or("bundle has no verificationMaterial")?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!("DSSE payloadType {} is not {IN_TOTO_PAYLOAD_TYPE}", truncate(&env.payload_type, 100)));
    }
    if env.payload.len() > limits.statement * 4 / 3 + 4 {
        return Err(format!("DSSE payload is more than the {} bytes allowed", limits.statement));
    }
    let payload = b64.decode(strip_whitespace(&env.payload)).map_err(|_| "DSSE payload is not valid base64")?;
    let [signature] = env.signatures.as_slice() else {
        return Err(format!("DSSE envelope has {} signatures; a bundle carries exactly one", env.signatures.len()));
    };
    if signature.sig.len() > MAX_SIGNATURE_B64 {
        return Err(format!("DSSE signature is more than the {MAX_SIGNATURE_B64} characters allowed"));
    }
    let sig = b64.decode(strip_whitespace(&signature.sig)).map_err(|_| "DSSE signature is not valid base64")?;
    let signed = pae(&env.payload_type, &payload);
    let env_signed = rekor::SignedEnvelope { payload: &payload, signed: &signed, signature: &sig };
    // Every accepted media type is v0.2 or later, which requires inclusion proofs.
    let require_proof = true;
    let mut times = Vec::new();

    match auth {
        CosignAuthority::Key { key, rekor, .. } => {
            // The bundle's key hint, if any, is not trusted: the configured key decides.
            key.verify_cosign(&signed, &sig).map_err(|e| {
                if e == "signature does not verify" {
                    "signature by an untrusted key (or over an altered payload)".to_string()
                } else {
                    e
                }
            })?;
            if !rekor.is_empty() {
                let logged = logged_entry(material, rekor, &env_signed, Signer::Key(key), require_proof)?;
                let t = logged.integrated_time.ok_or(
                    "bundle's log entry is from a Rekor v2 log, which records no signing time, and key \
                     authorities have no timestamp authority to prove one",
                )?;
                times.push(VerifiedTime::Rekor(rekor_time(t)?));
            }
        }
        CosignAuthority::Certificate { rekor, tsa, .. } => {
            let (leaf, chain) = bundle_certificates(material)?;
            let key = leaf.public_key()?;
            key.verify_cosign(&signed, &sig).map_err(|e| {
                if e == "signature does not verify" {
                    "signature does not verify with its certificate's key (payload altered?)".to_string()
                } else {
                    e
                }
            })?;
            if rekor.is_empty() {
                return Err("a certificate bundle needs a Rekor key to prove its signing time, and this authority \
                            has none (set rekor_key, or use sigstore_trusted_root)"
                    .into());
            }
            let logged = logged_entry(material, rekor, &env_signed, Signer::Certificate(&leaf), require_proof)?;
            match logged.integrated_time {
                Some(t) => {
                    times.push(VerifiedTime::Rekor(rekor_time(t)?));
                    // Without timestamp authorities the timestamps cannot be checked: they are
                    // ignored and are not a time source (the Rekor time above still is).
                    if !tsa.is_empty() {
                        times.extend(timestamp_times(material, tsa, &sig)?);
                    }
                }
                // A Rekor v2 entry proves inclusion but no time: the timestamps are the only
                // time sources, so at least one must verify, inside the log key's validity too.
                None => {
                    if tsa.is_empty() {
                        return Err("bundle's log entry is from a Rekor v2 log, which records no signing time, \
                                    and this authority has no timestamp authority to prove one (use a \
                                    sigstore_trusted_root that lists timestampAuthorities)"
                            .into());
                    }
                    let stamps = timestamp_times(material, tsa, &sig)?;
                    if stamps.is_empty() {
                        return Err("bundle's log entry is from a Rekor v2 log, which records no signing time, \
                                    and the bundle has no RFC 3161 timestamp to prove one"
                            .into());
                    }
                    for t in &stamps {
                        logged.log.check_time(t.at())?;
                    }
                    times.extend(stamps);
                }
            }
            cosign::check_certificate(auth, &leaf, chain.clone(), times[0].at())?;
            // The certificate must also have been valid at every timestamp's genTime (as cosign
            // and sigstore-go check it; widening by the accuracy would refuse real bundles, whose
            // timestamp falls in the Fulcio certificate's first second).
            let many = times.len() > 2;
            for (n, t) in times.iter().skip(1).enumerate() {
                let VerifiedTime::Rfc3161 { at, .. } = t else { continue };
                cosign::check_certificate(auth, &leaf, chain.clone(), *at).map_err(|e| {
                    let which = if many { format!(" #{}", n + 1) } else { String::new() };
                    format!("at the time of bundle RFC 3161 timestamp{which} ({}): {e}", x509::format_time(*at))
                })?;
            }
        }
    }
    Ok((times, payload))
}

fn rekor_time(t: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|_| "Rekor integratedTime is out of range".into())
}

/// Verifies every RFC 3161 timestamp of the bundle over the DSSE signature bytes `sig`: each must
/// verify with one of `authorities` at a time inside its `validFor`, or the bundle is refused.
fn timestamp_times(
    m: &Material,
    authorities: &[cosign::TimestampAuthority],
    sig: &[u8],
) -> Result<Vec<VerifiedTime>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let stamps = m.timestamps.as_ref().map(|t| t.rfc3161.as_slice()).unwrap_or_default();
    if stamps.len() > MAX_TIMESTAMPS {
        return Err(format!("bundle has {} RFC 3161 timestamps, more than {MAX_TIMESTAMPS}", stamps.len()));
    }
    let mut out = Vec::new();
    for (n, st) in stamps.iter().enumerate() {
        let which = if stamps.len() > 1 { format!(" #{}", n + 1) } else { String::new() };
        let refuse = |e: String| format!("bundle RFC 3161 timestamp{which} does not verify: {e}");
        let resp = b64
            .decode(strip_whitespace(&st.signed_timestamp))
            .map_err(|_| refuse("signedTimestamp is not valid base64".into()))?;
        let token = timestamp::token_of_response(&resp).map_err(refuse)?;
        let mut reasons: Vec<String> = Vec::new();
        let mut verified = None;
        for a in authorities {
            let roots: Vec<&[u8]> = a.roots.iter().map(Vec::as_slice).collect();
            let intermediates: Vec<&[u8]> = a.intermediates.iter().map(Vec::as_slice).collect();
            let trust = TsaTrust { roots: &roots, intermediates: &intermediates, roots_name: &a.name };
            let checked = timestamp::verify(token, sig, &trust).and_then(|stamp| {
                let t = stamp.gen_time;
                if a.valid_from.is_some_and(|f| t < f) || a.valid_until.is_some_and(|u| t > u) {
                    Err(format!("its time {} is outside the validFor of {}", x509::format_time(t), a.name))
                } else {
                    Ok(stamp)
                }
            });
            match checked {
                Ok(stamp) => {
                    verified = Some(VerifiedTime::Rfc3161 { at: stamp.gen_time, authority: a.name.clone() });
                    break;
                }
                Err(r) if !reasons.contains(&r) => reasons.push(r),
                Err(_) => {}
            }
        }
        out.push(verified.ok_or_else(|| refuse(reasons.join("; ")))?);
    }
    Ok(out)
}

/// DSSE v1 pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The leaf (and any chain) of the verification material; a key-made bundle has none.
fn bundle_certificates(m: &Material) -> Result<(Certificate, Vec<Certificate>), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raws: Vec<&RawBytes> = match (&m.certificate, &m.chain) {
        (Some(c), _) => vec![c],
        (None, Some(chain)) => chain.certificates.iter().take(x509::MAX_CERTIFICATES).collect(),
        (None, None) if m.public_key.is_some() => {
            return Err("bundle was made with a key (verificationMaterial.publicKey), not a certificate".into())
        }
        (None, None) => return Err("bundle verificationMaterial has no certificate".into()),
    };
    let mut certs = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let der = b64
            .decode(strip_whitespace(&raw.raw_bytes))
            .map_err(|_| format!("bundle certificate #{} is not valid base64", i + 1))?;
        certs.push(Certificate::from_der(&der).map_err(|e| format!("bundle certificate #{} {e}", i + 1))?);
    }
    if certs.is_empty() {
        return Err("bundle x509CertificateChain is empty".into());
    }
    let leaf = certs.remove(0);
    Ok((leaf, certs))
}

/// The first log entry that verifies and records this envelope: a Rekor v1 `dsse` 0.0.1 entry
/// (with its SET time), or a Rekor v2 `hashedrekord`/`dsse` 0.0.2 entry (no time).
fn logged_entry(
    m: &Material,
    keys: &[RekorKey],
    env: &rekor::SignedEnvelope<'_>,
    signer: Signer<'_>,
    require_proof: bool,
) -> Result<rekor::LoggedEntry, String> {
    if m.tlog_entries.is_empty() {
        return Err("bundle has no transparency-log entry, but the policy requires one (Rekor)".into());
    }
    if m.tlog_entries.len() > MAX_TLOG_ENTRIES {
        return Err(format!(
            "bundle has {} transparency-log entries, more than {MAX_TLOG_ENTRIES}",
            m.tlog_entries.len()
        ));
    }
    let mut reasons: Vec<String> = Vec::new();
    for entry in &m.tlog_entries {
        let checked = rekor::verify_tlog_entry(entry, keys, require_proof).and_then(|logged| {
            if logged.integrated_time.is_none() {
                rekor::check_v2_body(&logged, env, signer)?;
            } else {
                rekor::check_dsse_body(&logged, env.payload, env.signature, signer)?;
            }
            Ok(logged)
        });
        match checked {
            Ok(logged) => return Ok(logged),
            Err(r) if !reasons.contains(&r) => reasons.push(r),
            Err(_) => {}
        }
    }
    Err(reasons.join("; "))
}

/// The claims of the authenticated statement. The repository comes last, so a bundle refused as
/// [`Refusal::Unbound`] or [`Refusal::WrongRepository`] is otherwise a valid signature for this
/// digest.
pub(crate) fn check_statement(payload: &[u8], exp: &Expectation) -> Result<(), Refusal> {
    let st: Statement =
        serde_json::from_slice(payload).map_err(|e| format!("signed statement is not an in-toto Statement: {e}"))?;
    match st.statement_type.as_deref() {
        Some(t) if STATEMENT_TYPES.contains(&t) => {}
        Some(t) => return Err(format!("signed statement type {} is not an in-toto Statement", truncate(t, 100)).into()),
        None => return Err("signed statement has no _type".into()),
    }
    match st.predicate_type.as_deref() {
        Some(COSIGN_SIGN_PREDICATE) => {}
        Some(p) => {
            return Err(format!(
                "bundle is an attestation (predicateType {}), not an image signature ({COSIGN_SIGN_PREDICATE})",
                truncate(p, 100)
            )
            .into())
        }
        None => return Err(format!("signed statement has no predicateType; expected {COSIGN_SIGN_PREDICATE}").into()),
    }
    let want = exp.digest.hex();
    fn digest_of(s: &StatementSubject) -> Option<&str> {
        s.digest.get("sha256").map(String::as_str)
    }
    let matching: Vec<&StatementSubject> =
        st.subject.iter().filter(|s| digest_of(s).is_some_and(|d| d.eq_ignore_ascii_case(want))).collect();
    if matching.is_empty() {
        let subjects: Vec<&str> = st.subject.iter().filter_map(digest_of).collect();
        if subjects.is_empty() {
            return Err("signed statement has no subject with a sha256 digest".into());
        }
        let named: Vec<String> = subjects.iter().take(3).map(|d| format!("sha256:{}", truncate(d, 64))).collect();
        return Err(
            format!("statement digest mismatch: signature is for {} not {}", named.join(", "), exp.digest).into()
        );
    }
    let Some(reference) = exp.docker_reference else { return Ok(()) };
    check_subject_names(&matching, reference)
}

/// The repository check on the subjects that carry the served digest: one of their names must be
/// `reference`, compared as format A compares `docker-reference`. A subject may be listed under
/// several names (an image pushed to several repositories and attested once); any one matching is
/// enough. Only when none of them has a name is the bundle unbound: a name elsewhere is evidence
/// of another repository, never of none.
fn check_subject_names(matching: &[&StatementSubject], reference: &str) -> Result<(), Refusal> {
    let names: Vec<&str> = matching.iter().filter_map(|s| s.name.as_deref()).filter(|n| !n.trim().is_empty()).collect();
    if names.is_empty() {
        return Err(Refusal::Unbound);
    }
    let want = cosign::normalize_reference(reference);
    if names.iter().any(|n| cosign::normalize_reference(n) == want) {
        return Ok(());
    }
    Err(Refusal::WrongRepository(cosign::wrong_repository(&names, reference)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::verify::rekor::tests::test_log_key;
    use crate::verify::test_support::{authority_in, fulcio, now};
    use p256::ecdsa::signature::Signer as _;
    use serde_json::{json, Value};
    use sha2::{Digest as _, Sha256};
    use std::path::{Path, PathBuf};

    const KAT_DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    const KAT_IDENTITY: &str =
        "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    const KAT_ISSUER: &str = "https://token.actions.githubusercontent.com";
    const OTHER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cosign")
    }

    fn read_json(rel: &str) -> Value {
        serde_json::from_slice(&std::fs::read(vectors().join(rel)).expect("vector")).expect("json")
    }

    /// Verifies with no repository expected (`docker_reference = "any"`), the reason as text.
    fn verify(auth: &CosignAuthority, bundle: &Value, digest: &str) -> Result<(), String> {
        verify_as(auth, bundle, digest, None).map_err(|r| r.to_string())
    }

    /// Verifies expecting `reference` (`None`: no repository check).
    fn verify_as(auth: &CosignAuthority, bundle: &Value, digest: &str, reference: Option<&str>) -> Result<(), Refusal> {
        let d: Digest = digest.parse().expect("digest");
        let exp = Expectation { digest: &d, docker_reference: reference, now: now() };
        verify_bundle(auth, &serde_json::to_vec(bundle).expect("json"), &exp)
    }

    fn kat() -> Value {
        read_json("sigstore-rs/bundle_v03.json")
    }

    fn entry(b: &mut Value) -> &mut Value {
        &mut b["verificationMaterial"]["tlogEntries"][0]
    }

    /// Flips one bit inside a base64 field and re-encodes it.
    fn flip_b64(v: &mut Value, byte: usize) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64.decode(v.as_str().expect("string")).expect("b64");
        raw[byte] ^= 0x01;
        *v = Value::String(b64.encode(raw));
    }

    // ---- Known answers: a real cosign v3 bundle and a real cosign attestation ----

    #[test]
    fn the_cosign_v3_bundle_verifies_for_its_digest_identity_and_issuer() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        assert_eq!(verify(&auth, &kat(), KAT_DIGEST), Ok(()));
        // The identity may also be given as an anchored regexp.
        let regexp = authority_in(
            &vectors(),
            &format!(
                "[[cosign_certificates]]\nsigstore_trusted_root = \"sigstore-rs/trusted_root.json\"\n\
                 identity_regexp = \"https://github\\\\.com/kubewarden/.*\"\nissuer = {KAT_ISSUER:?}"
            ),
        );
        assert_eq!(verify(&regexp, &kat(), KAT_DIGEST), Ok(()));
    }

    /// `trusted_root.json` plus the public-good Sigstore TSA (`CN=sigstore-tsa` under
    /// `CN=sigstore-tsa-selfsigned`, from `cosign trusted-root create --with-default-services`).
    fn fulcio_with_tsa() -> CosignAuthority {
        authority_in(
            &vectors(),
            &format!(
                "[[cosign_certificates]]\nsigstore_trusted_root = \"sigstore-rs/trusted_root_with_tsa.json\"\n\
                 identity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}"
            ),
        )
    }

    fn verify_times(auth: &CosignAuthority, bundle: &Value) -> Result<Vec<VerifiedTime>, Refusal> {
        let d: Digest = KAT_DIGEST.parse().expect("digest");
        let exp = Expectation { digest: &d, docker_reference: None, now: now() };
        verify_bundle_times(auth, &serde_json::to_vec(bundle).expect("json"), &exp)
    }

    fn signed_timestamp(b: &mut Value) -> &mut Value {
        &mut b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"]
    }

    #[test]
    fn the_cosign_v3_bundle_timestamp_verifies_and_is_a_time_source() {
        let utc = |s: &str| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        let tsa = "sigstore-rs/trusted_root_with_tsa.json timestampAuthorities[0]";
        assert_eq!(
            verify_times(&fulcio_with_tsa(), &kat()),
            Ok(vec![
                VerifiedTime::Rekor(OffsetDateTime::from_unix_timestamp(1775719409).unwrap()),
                // genTime 2026-04-09T07:23:29Z (accuracy 1 s), the leaf's first second.
                VerifiedTime::Rfc3161 { at: utc("2026-04-09T07:23:29Z"), authority: tsa.into() },
            ])
        );
        // Without timestamp authorities the timestamp is not checked and not a time source.
        assert_eq!(
            verify_times(&fulcio(KAT_IDENTITY, KAT_ISSUER), &kat()),
            Ok(vec![VerifiedTime::Rekor(OffsetDateTime::from_unix_timestamp(1775719409).unwrap())])
        );
        // A bundle without timestamps still verifies with the Rekor time alone.
        let mut b = kat();
        b["verificationMaterial"].as_object_mut().unwrap().remove("timestampVerificationData");
        assert_eq!(verify_times(&fulcio_with_tsa(), &b).map(|t| t.len()), Ok(1));
    }

    #[test]
    fn a_tampered_or_foreign_timestamp_in_the_cosign_v3_bundle_is_refused() {
        let auth = fulcio_with_tsa();
        let prefix = "bundle RFC 3161 timestamp does not verify: ";
        // A flipped bit in the TSA's signature (the last bytes of the response).
        let mut b = kat();
        let len = {
            let b64 = base64::engine::general_purpose::STANDARD;
            b64.decode(signed_timestamp(&mut b).as_str().unwrap()).unwrap().len()
        };
        flip_b64(signed_timestamp(&mut b), len - 10);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("{prefix}the TSA's signature over the timestamp does not verify"))
        );
        // A flipped bit in the TSTInfo's message imprint (offset 69 + 2 + 3 + 11 + 15 + 4 into the
        // response: inside hashedMessage), and the same token over another signature.
        let mut b = kat();
        flip_b64(signed_timestamp(&mut b), 110);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("{prefix}the timestamp's message imprint is not the hash of this signature"))
        );
        let mut b = kat();
        flip_b64(signed_timestamp(&mut b), 150);
        let err = verify(&auth, &b, KAT_DIGEST).unwrap_err();
        assert!(err.starts_with(prefix), "{err}");
        // Garbage and a refused status.
        let mut b = kat();
        *signed_timestamp(&mut b) = json!("AAAA");
        let err = verify(&auth, &b, KAT_DIGEST).unwrap_err();
        assert!(err.starts_with(&format!("{prefix}not a TimeStampResp")), "{err}");
        let mut b = kat();
        flip_b64(signed_timestamp(&mut b), 8); // PKIStatus 0 -> 1 (grantedWithMods) still verifies
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Ok(()));
        let mut b = kat();
        *signed_timestamp(&mut b) = json!("MAUwAwIBAg=="); // status 2 (rejection), no token
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("{prefix}the TSA did not grant the timestamp (PKIStatus 2)"))
        );
        // A TSA the trusted root does not list: the Fulcio-only root's authority is gone, and a
        // trusted root whose only TSA is another one refuses.
        let dir = tempfile::tempdir().expect("tmp");
        let mut tr = read_json("sigstore-rs/trusted_root_with_tsa.json");
        let fulcio_root = tr["certificateAuthorities"][0]["certChain"]["certificates"][0].clone();
        tr["timestampAuthorities"][0]["certChain"]["certificates"] = json!([fulcio_root]);
        std::fs::write(dir.path().join("tr.json"), serde_json::to_vec(&tr).unwrap()).unwrap();
        let other = authority_in(
            dir.path(),
            &format!(
                "[[cosign_certificates]]\nsigstore_trusted_root = \"tr.json\"\n\
                 identity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}"
            ),
        );
        assert_eq!(
            verify(&other, &kat(), KAT_DIGEST),
            Err(format!("{prefix}the token does not include the TSA's certificate"))
        );
        // The authority's validFor must cover the timestamp.
        let mut tr = read_json("sigstore-rs/trusted_root_with_tsa.json");
        tr["timestampAuthorities"][0]["validFor"] = json!({"start": "2026-05-01T00:00:00Z"});
        std::fs::write(dir.path().join("tr.json"), serde_json::to_vec(&tr).unwrap()).unwrap();
        let later = authority_in(
            dir.path(),
            &format!(
                "[[cosign_certificates]]\nsigstore_trusted_root = \"tr.json\"\n\
                 identity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}"
            ),
        );
        assert_eq!(
            verify(&later, &kat(), KAT_DIGEST),
            Err(format!(
                "{prefix}its time 2026-04-09T07:23:29Z is outside the validFor of tr.json timestampAuthorities[0]"
            ))
        );
    }

    #[test]
    fn the_cosign_v3_bundle_is_refused_for_another_digest() {
        assert_eq!(
            verify(&fulcio(KAT_IDENTITY, KAT_ISSUER), &kat(), OTHER),
            Err(format!("statement digest mismatch: signature is for {KAT_DIGEST} not {OTHER}"))
        );
    }

    #[test]
    fn the_cosign_v3_bundle_names_no_repository_so_it_is_unbound_wherever_one_is_expected() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        let here = Some("ghcr.io/kubewarden/kubewarden-controller");
        assert_eq!(verify_as(&auth, &kat(), KAT_DIGEST, here), Err(Refusal::Unbound));
        assert_eq!(verify_as(&auth, &kat(), KAT_DIGEST, None), Ok(()));
        // Unbound is the last word: every other refusal comes first.
        assert_eq!(
            verify_as(&auth, &kat(), OTHER, here),
            Err(format!("statement digest mismatch: signature is for {KAT_DIGEST} not {OTHER}").into())
        );
        let stranger = fulcio("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1", KAT_ISSUER);
        assert!(matches!(verify_as(&stranger, &kat(), KAT_DIGEST, here), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn the_cosign_attestation_bundle_names_its_repository() {
        // `cosign attest` names the repository (`127.0.0.1:60943/repo`); here it is refused as an
        // attestation first, which shows the name is parsed without tripping over anything else.
        let att = read_json("cosign/oci-attestation.sigstore.json");
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(att["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
        let st: Statement = serde_json::from_slice(&payload).unwrap();
        assert_eq!(st.subject[0].name.as_deref(), Some("127.0.0.1:60943/repo"));
        let subjects: Vec<&StatementSubject> = st.subject.iter().collect();
        assert_eq!(check_subject_names(&subjects, "127.0.0.1:60943/repo"), Ok(()));
        assert_eq!(
            check_subject_names(&subjects, "127.0.0.1:60943/other"),
            Err(Refusal::WrongRepository(
                "signature names image 127.0.0.1:60943/repo but this is 127.0.0.1:60943/other".into()
            ))
        );
    }

    #[test]
    fn the_cosign_v3_bundle_is_refused_for_another_identity_or_issuer() {
        assert_eq!(
            verify(&fulcio("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1", KAT_ISSUER), &kat(), KAT_DIGEST),
            Err(format!(
                "certificate identity {KAT_IDENTITY} does not match https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
            ))
        );
        assert_eq!(
            verify(&fulcio(KAT_IDENTITY, "https://accounts.google.com"), &kat(), KAT_DIGEST),
            Err(format!("certificate issuer {KAT_ISSUER} does not match https://accounts.google.com"))
        );
    }

    #[test]
    fn a_tampered_payload_or_signature_in_the_cosign_v3_bundle_is_refused() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        let b64 = base64::engine::general_purpose::STANDARD;
        // A statement for another digest, under the original signature.
        let mut b = kat();
        let payload = String::from_utf8(b64.decode(b["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap()).unwrap();
        let forged = payload.replace(&KAT_DIGEST[7..], &OTHER[7..]);
        b["dsseEnvelope"]["payload"] = Value::String(b64.encode(forged));
        assert_eq!(
            verify(&auth, &b, OTHER),
            Err("signature does not verify with its certificate's key (payload altered?)".into())
        );
        // A flipped bit in r of the DER signature.
        let mut b = kat();
        flip_b64(&mut b["dsseEnvelope"]["signatures"][0]["sig"], 10);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("signature does not verify with its certificate's key (payload altered?)".into())
        );
        // The payload type is part of what is signed.
        let mut b = kat();
        b["dsseEnvelope"]["payloadType"] = json!("application/json");
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("DSSE payloadType application/json is not application/vnd.in-toto+json".into())
        );
    }

    #[test]
    fn a_tampered_set_inclusion_proof_or_checkpoint_in_the_cosign_v3_bundle_is_refused() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        let name = "cosign/sigstore-rs/trusted_root.json tlogs[0]";
        let mut b = kat();
        flip_b64(&mut entry(&mut b)["inclusionPromise"]["signedEntryTimestamp"], 12);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("Rekor SignedEntryTimestamp does not verify with {name}"))
        );
        let mut b = kat();
        entry(&mut b)["integratedTime"] = json!("1775719410");
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("Rekor SignedEntryTimestamp does not verify with {name}"))
        );
        let mut b = kat();
        entry(&mut b)["logIndex"] = json!("1261105808");
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("Rekor SignedEntryTimestamp does not verify with {name}"))
        );

        for field in ["hashes/3", "rootHash"] {
            let mut b = kat();
            let proof = &mut entry(&mut b)["inclusionProof"];
            let v = match field.split_once('/') {
                Some((h, i)) => &mut proof[h][i.parse::<usize>().unwrap()],
                None => &mut proof[field],
            };
            flip_b64(v, 0);
            assert_eq!(
                verify(&auth, &b, KAT_DIGEST),
                Err("tlog inclusion proof does not lead to its rootHash".into()),
                "{field}"
            );
        }
        let mut b = kat();
        entry(&mut b)["inclusionProof"]["logIndex"] = json!("1139201544");
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Err("tlog inclusion proof does not lead to its rootHash".into()));
        let mut b = kat();
        let proof = &mut entry(&mut b)["inclusionProof"];
        let hashes = proof["hashes"].as_array_mut().unwrap();
        hashes.pop();
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Err("tlog inclusion proof does not lead to its rootHash".into()));

        // The checkpoint note: its signature covers the size and root it names.
        let cp = |b: &mut Value| -> String {
            entry(b)["inclusionProof"]["checkpoint"]["envelope"].as_str().unwrap().to_string()
        };
        let mut b = kat();
        let text = cp(&mut b).replace("rekor.sigstore.dev - 1193050959916656506", "rekor.sigstore.dev - 1");
        entry(&mut b)["inclusionProof"]["checkpoint"]["envelope"] = json!(text);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("tlog checkpoint signature does not verify with {name}"))
        );
        let mut b = kat();
        let text = cp(&mut b).replace("wNI9ajBF", "AAAAAjBF");
        entry(&mut b)["inclusionProof"]["checkpoint"]["envelope"] = json!(text);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err(format!("tlog checkpoint signature does not verify with {name}"))
        );
        let mut b = kat();
        entry(&mut b)["inclusionProof"]["checkpoint"]["envelope"] = json!("garbage");
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Err("tlog checkpoint is not a signed note".into()));

        // v0.2 and later require the proof.
        let mut b = kat();
        entry(&mut b).as_object_mut().unwrap().remove("inclusionProof");
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("tlog entry has no inclusionProof (required since bundle v0.2)".into())
        );
        let mut b = kat();
        entry(&mut b).as_object_mut().unwrap().remove("inclusionPromise");
        let err = verify(&auth, &b, KAT_DIGEST).unwrap_err();
        assert!(err.starts_with("tlog entry has no inclusionPromise (SET)"), "{err}");
        let mut b = kat();
        b["verificationMaterial"]["tlogEntries"] = json!([]);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("bundle has no transparency-log entry, but the policy requires one (Rekor)".into())
        );
    }

    #[test]
    fn the_cosign_v3_bundle_needs_a_trusted_rekor_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let b64 = base64::engine::general_purpose::STANDARD;
        // The Fulcio CAs from the trusted root as a plain PEM bundle: no Rekor key.
        let tr = read_json("sigstore-rs/trusted_root.json");
        let mut pem = String::new();
        for ca in tr["certificateAuthorities"].as_array().unwrap() {
            for c in ca["certChain"]["certificates"].as_array().unwrap() {
                let der = b64.decode(c["rawBytes"].as_str().unwrap()).unwrap();
                pem.push_str(&format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64.encode(der)));
            }
        }
        std::fs::write(dir.path().join("fulcio.pem"), pem).unwrap();
        let plain = authority_in(
            dir.path(),
            &format!(
                "[[cosign_certificates]]\nroots = \"fulcio.pem\"\nidentity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}"
            ),
        );
        assert_eq!(
            verify(&plain, &kat(), KAT_DIGEST),
            Err("a certificate bundle needs a Rekor key to prove its signing time, and this authority has none \
                 (set rekor_key, or use sigstore_trusted_root)"
                .into())
        );
        // A Rekor key that is not the one that logged the entry.
        let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        std::fs::write(dir.path().join("other-rekor.pub"), pem_of(&other)).unwrap();
        let wrong_log = authority_in(
            dir.path(),
            &format!(
                "[[cosign_certificates]]\nroots = \"fulcio.pem\"\nidentity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}\n\
                 rekor_key = \"other-rekor.pub\""
            ),
        );
        assert_eq!(
            verify(&wrong_log, &kat(), KAT_DIGEST),
            Err("tlog entry is from log c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d, which is not a \
                 trusted Rekor key"
                .into())
        );
        // With the production Rekor key as a PEM file it verifies again.
        let rekor = vectors().join("containers-image/rekor.pub");
        let with_rekor = authority_in(
            dir.path(),
            &format!(
                "[[cosign_certificates]]\nroots = \"fulcio.pem\"\nidentity = {KAT_IDENTITY:?}\nissuer = {KAT_ISSUER:?}\n\
                 rekor_key = {rekor:?}"
            ),
        );
        assert_eq!(verify(&with_rekor, &kat(), KAT_DIGEST), Ok(()));
    }

    #[test]
    fn the_cosign_attestation_bundle_is_not_an_image_signature() {
        let att = read_json("cosign/oci-attestation.sigstore.json");
        let digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
        // Everything but the claim verifies: the signer, chain, SET, proof and checkpoint are genuine.
        let auth = fulcio("cody@soyland.com", "https://github.com/login/oauth");
        assert_eq!(
            verify(&auth, &att, digest),
            Err("bundle is an attestation (predicateType https://cosign.sigstore.dev/attestation/v1), not an image \
                 signature (https://sigstore.dev/cosign/sign/v1)"
                .into())
        );
        assert_eq!(
            verify(&fulcio(KAT_IDENTITY, KAT_ISSUER), &att, digest),
            Err(format!("certificate identity cody@soyland.com does not match {KAT_IDENTITY}"))
        );
    }

    #[test]
    fn malformed_bundles_are_refused_with_a_reason() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        let d: Digest = KAT_DIGEST.parse().unwrap();
        let exp = Expectation { digest: &d, docker_reference: None, now: now() };
        assert!(verify_bundle(&auth, b"{", &exp).unwrap_err().to_string().starts_with("bundle is malformed"));
        assert_eq!(
            verify_bundle(&auth, &vec![b' '; MAX_BUNDLE_BYTES + 1], &exp),
            Err("bundle is 1048577 bytes, more than the 1048576 allowed".into())
        );
        let mut b = kat();
        b["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("bundle media type application/vnd.dev.sigstore.bundle+json;version=0.1 is not a Sigstore bundle v0.2 or v0.3".into())
        );
        for accepted in [
            "application/vnd.dev.sigstore.bundle+json;version=0.3",
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
        ] {
            let mut b = kat();
            b["mediaType"] = json!(accepted);
            assert_eq!(verify(&auth, &b, KAT_DIGEST), Ok(()), "{accepted}");
        }
        let mut b = kat();
        b.as_object_mut().unwrap().remove("dsseEnvelope");
        b["messageSignature"] =
            json!({"messageDigest": {"algorithm": "SHA2_256", "digest": "AAAA"}, "signature": "AAAA"});
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("bundle holds a messageSignature (cosign sign-blob), not a DSSE image signature".into())
        );
        let mut b = kat();
        let s = b["dsseEnvelope"]["signatures"][0].clone();
        b["dsseEnvelope"]["signatures"] = json!([s.clone(), s]);
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("DSSE envelope has 2 signatures; a bundle carries exactly one".into())
        );
        // Without timestamp authorities, RFC 3161 timestamps are not used: without them the bundle
        // verifies the same.
        let mut b = kat();
        b["verificationMaterial"].as_object_mut().unwrap().remove("timestampVerificationData");
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Ok(()));
        // The same leaf as a v0.2-style chain works; a key-made bundle is not a certificate bundle.
        let mut b = kat();
        let leaf = b["verificationMaterial"]["certificate"].clone();
        let m = b["verificationMaterial"].as_object_mut().unwrap();
        m.remove("certificate");
        m.insert("x509CertificateChain".into(), json!({"certificates": [leaf]}));
        assert_eq!(verify(&auth, &b, KAT_DIGEST), Ok(()));
        let m = b["verificationMaterial"].as_object_mut().unwrap();
        m.remove("x509CertificateChain");
        m.insert("publicKey".into(), json!({"hint": "x"}));
        assert_eq!(
            verify(&auth, &b, KAT_DIGEST),
            Err("bundle was made with a key (verificationMaterial.publicKey), not a certificate".into())
        );
    }

    #[test]
    fn flipping_bits_in_the_cosign_v3_bundle_never_panics_and_never_verifies_another_digest() {
        let auth = fulcio(KAT_IDENTITY, KAT_ISSUER);
        let bytes = serde_json::to_vec(&kat()).unwrap();
        let other: Digest = OTHER.parse().unwrap();
        let exp = Expectation { digest: &other, docker_reference: None, now: now() };
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(verify_bundle(&auth, &b, &exp).is_err(), "byte {i}");
        }
    }

    // ---- Generated bundles: key authorities, and log bodies that do not match ----

    fn pem_of(sk: &p256::ecdsa::SigningKey) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        sk.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem")
    }

    fn statement(digest: &str, predicate: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": &digest[7..]}}],
            "predicateType": predicate,
        }))
        .unwrap()
    }

    /// A v0.3 bundle signed by `signer`, with a `dsse` entry logged by `log` (if any) in a
    /// one-leaf tree, whose body is `body(payload, sig)` (by default the honest one).
    fn make(
        signer: &p256::ecdsa::SigningKey,
        payload: &[u8],
        log: Option<&p256::ecdsa::SigningKey>,
        body: impl Fn(&[u8], &[u8]) -> Value,
    ) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig: p256::ecdsa::Signature = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, payload));
        let sig = sig.to_der().as_bytes().to_vec();
        let mut tlog = Vec::new();
        if let Some(log) = log {
            let body = serde_json::to_vec(&body(payload, &sig)).unwrap();
            let key = test_log_key(log);
            let t = 1_790_000_000i64;
            let canonical = format!(
                "{{\"body\":{},\"integratedTime\":{t},\"logID\":\"{}\",\"logIndex\":7}}",
                serde_json::to_string(&b64.encode(&body)).unwrap(),
                key.log_id()
            );
            let set: p256::ecdsa::Signature = log.sign(canonical.as_bytes());
            let root = rekor::merkle_leaf(&body);
            let note = format!("test.log - 1\n1\n{}\n", b64.encode(root));
            let note_sig: p256::ecdsa::Signature = log.sign(note.as_bytes());
            let mut hinted = hex::decode(key.log_id()).unwrap()[..4].to_vec();
            hinted.extend_from_slice(note_sig.to_der().as_bytes());
            tlog.push(json!({
                "logIndex": "7",
                "logId": {"keyId": b64.encode(hex::decode(key.log_id()).unwrap())},
                "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                "integratedTime": t.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": b64.encode(set.to_der().as_bytes())},
                "inclusionProof": {
                    "logIndex": "0", "treeSize": "1", "rootHash": b64.encode(root), "hashes": [],
                    "checkpoint": {"envelope": format!("{note}\n\u{2014} test.log {}\n", b64.encode(hinted))}
                },
                "canonicalizedBody": b64.encode(&body),
            }));
        }
        json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "anything"}, "tlogEntries": tlog},
            "dsseEnvelope": {
                "payload": b64.encode(payload),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": b64.encode(&sig), "keyid": ""}]
            }
        })
    }

    fn honest_body(signer_pem: String) -> impl Fn(&[u8], &[u8]) -> Value {
        move |payload, sig| {
            let b64 = base64::engine::general_purpose::STANDARD;
            json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": "00"},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))},
                "signatures": [{"signature": b64.encode(sig), "verifier": b64.encode(&signer_pem)}]
            }})
        }
    }

    /// Makes a log entry body from the payload and signature.
    type BodyFn = Box<dyn Fn(&[u8], &[u8]) -> Value>;

    struct Keys {
        dir: tempfile::TempDir,
        signer: p256::ecdsa::SigningKey,
        log: p256::ecdsa::SigningKey,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let signer = p256::ecdsa::SigningKey::from_slice(&[1u8; 32]).unwrap();
        let other = p256::ecdsa::SigningKey::from_slice(&[2u8; 32]).unwrap();
        let log = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).unwrap();
        std::fs::write(dir.path().join("key.pub"), pem_of(&signer)).unwrap();
        std::fs::write(dir.path().join("other.pub"), pem_of(&other)).unwrap();
        std::fs::write(dir.path().join("rekor.pub"), pem_of(&log)).unwrap();
        Keys { dir, signer, log }
    }

    #[test]
    fn a_key_signed_bundle_verifies_with_the_key_and_without_a_log_when_no_rekor_key_is_configured() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]");
        let b = make(&k.signer, &statement(OTHER, COSIGN_SIGN_PREDICATE), None, |_, _| json!({}));
        assert_eq!(verify(&auth, &b, OTHER), Ok(()));
        assert_eq!(
            verify(&authority_in(k.dir.path(), "cosign_keys = [\"other.pub\"]"), &b, OTHER),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );
        let att = make(&k.signer, &statement(OTHER, "https://slsa.dev/provenance/v1"), None, |_, _| json!({}));
        assert_eq!(
            verify(&auth, &att, OTHER),
            Err("bundle is an attestation (predicateType https://slsa.dev/provenance/v1), not an image signature \
                 (https://sigstore.dev/cosign/sign/v1)"
                .into())
        );
        let mut old = statement(OTHER, COSIGN_SIGN_PREDICATE);
        old = String::from_utf8(old).unwrap().replace("Statement/v1", "Statement/v0.1").into_bytes();
        assert_eq!(verify(&auth, &make(&k.signer, &old, None, |_, _| json!({})), OTHER), Ok(()));
        let odd = String::from_utf8(statement(OTHER, COSIGN_SIGN_PREDICATE)).unwrap().replace("in-toto.io", "x.io");
        assert_eq!(
            verify(&auth, &make(&k.signer, odd.as_bytes(), None, |_, _| json!({})), OTHER),
            Err("signed statement type https://x.io/Statement/v1 is not an in-toto Statement".into())
        );
    }

    /// A bundle signed by `signer` without a log entry (`cosign sign --key --tlog-upload=false`)
    /// over a `cosign/sign/v1` statement with these subjects, as bytes.
    pub(crate) fn key_signed(signer: &p256::ecdsa::SigningKey, subjects: &[(&str, Option<&str>)]) -> Vec<u8> {
        serde_json::to_vec(&make(signer, &statement_of(subjects), None, |_, _| json!({}))).unwrap()
    }

    pub(crate) fn pem_of_key(sk: &p256::ecdsa::SigningKey) -> String {
        pem_of(sk)
    }

    /// A `cosign/sign/v1` statement with these subjects (each `(sha256 digest, name)`).
    fn statement_of(subjects: &[(&str, Option<&str>)]) -> Vec<u8> {
        let subjects: Vec<Value> = subjects
            .iter()
            .map(|(d, n)| {
                let mut s = json!({"digest": {"sha256": &d[7..]}, "annotations": {}});
                if let Some(n) = n {
                    s["name"] = json!(n);
                }
                s
            })
            .collect();
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subjects,
            "predicateType": COSIGN_SIGN_PREDICATE,
        }))
        .unwrap()
    }

    #[test]
    fn a_subject_name_must_name_the_repository_the_image_is_served_from() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]");
        let signed =
            |subjects: &[(&str, Option<&str>)]| make(&k.signer, &statement_of(subjects), None, |_, _| json!({}));
        let wrong = |got: &str, want: &str| {
            Err(Refusal::WrongRepository(format!("signature names image {got} but this is {want}")))
        };
        let here = "r.example/team/app";
        // The name as GitHub's attest actions write it, with a tag, a digest or both: the repository counts.
        for name in [
            "r.example/team/app",
            "r.example/team/app:v1",
            &format!("r.example/team/app@{OTHER}"),
            &format!("r.example/team/app:v1@{OTHER}"),
            "R.Example/team/app",
        ] {
            assert_eq!(verify_as(&auth, &signed(&[(OTHER, Some(name))]), OTHER, Some(here)), Ok(()), "{name}");
        }
        for name in
            ["r.example/team/other", "r.example/team", "r.example/team/app/sub", "r.example:5000/team/app", "team/app"]
        {
            assert_eq!(
                verify_as(&auth, &signed(&[(OTHER, Some(name))]), OTHER, Some(here)),
                wrong(name, here),
                "{name}"
            );
        }
        // The expected reference may carry a tag too; only the repository is compared.
        assert_eq!(verify_as(&auth, &signed(&[(OTHER, Some(here))]), OTHER, Some("r.example/team/app:v2")), Ok(()));
        // Docker Hub's spellings are one repository, as for format A.
        for (name, reference) in [
            ("index.docker.io/acme/api", "docker.io/acme/api"),
            ("acme/api:v1", "docker.io/acme/api"),
            ("nginx", "docker.io/library/nginx"),
            ("registry-1.docker.io/library/nginx:1.25", "docker.io/library/nginx"),
            ("localhost:5000/app:tag", "localhost:5000/app"),
        ] {
            assert_eq!(verify_as(&auth, &signed(&[(OTHER, Some(name))]), OTHER, Some(reference)), Ok(()), "{name}");
        }
        assert_eq!(
            verify_as(&auth, &signed(&[(OTHER, Some("docker.io/acme/nginx"))]), OTHER, Some("docker.io/library/nginx")),
            wrong("docker.io/acme/nginx", "docker.io/library/nginx")
        );
        // No name, or an empty one, is unbound; with no reference expected ("any") nothing is compared.
        for subject in [(OTHER, None), (OTHER, Some("")), (OTHER, Some("  "))] {
            assert_eq!(verify_as(&auth, &signed(&[subject]), OTHER, Some(here)), Err(Refusal::Unbound), "{subject:?}");
        }
        assert_eq!(verify_as(&auth, &signed(&[(OTHER, None)]), OTHER, None), Ok(()));
        assert_eq!(verify_as(&auth, &signed(&[(OTHER, Some("r.example/x"))]), OTHER, None), Ok(()));
    }

    #[test]
    fn only_the_names_of_subjects_with_the_served_digest_count() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]");
        let signed =
            |subjects: &[(&str, Option<&str>)]| make(&k.signer, &statement_of(subjects), None, |_, _| json!({}));
        let here = "r.example/team/app";
        let third = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
        // One image attested under two names: either one is enough.
        let two_names = signed(&[(OTHER, Some("r.example/team/mirror")), (OTHER, Some(here))]);
        assert_eq!(verify_as(&auth, &two_names, OTHER, Some(here)), Ok(()));
        assert_eq!(verify_as(&auth, &two_names, OTHER, Some("r.example/team/mirror")), Ok(()));
        assert_eq!(
            verify_as(&auth, &two_names, OTHER, Some("r.example/team/third")),
            Err(Refusal::WrongRepository(
                "signature names image r.example/team/mirror, r.example/team/app but this is r.example/team/third"
                    .into()
            ))
        );
        // Another artifact's subject naming this repository binds nothing.
        let elsewhere = signed(&[(OTHER, Some("r.example/team/other")), (third, Some(here))]);
        assert_eq!(
            verify_as(&auth, &elsewhere, OTHER, Some(here)),
            Err(Refusal::WrongRepository(format!("signature names image r.example/team/other but this is {here}")))
        );
        assert_eq!(
            verify_as(&auth, &signed(&[(OTHER, None), (third, Some(here))]), OTHER, Some(here)),
            Err(Refusal::Unbound)
        );
        // A name elsewhere is evidence of another repository, never of none.
        let mixed = signed(&[(OTHER, None), (OTHER, Some("r.example/team/other"))]);
        assert_eq!(
            verify_as(&auth, &mixed, OTHER, Some(here)),
            Err(Refusal::WrongRepository(format!("signature names image r.example/team/other but this is {here}")))
        );
    }

    #[test]
    fn the_subject_name_is_signed() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut b = make(&k.signer, &statement_of(&[(OTHER, Some("r.example/team/a"))]), None, |_, _| json!({}));
        let renamed = String::from_utf8(statement_of(&[(OTHER, Some("r.example/team/b"))])).unwrap();
        b["dsseEnvelope"]["payload"] = json!(b64.encode(renamed));
        assert_eq!(
            verify_as(&auth, &b, OTHER, Some("r.example/team/b")),
            Err("signature by an untrusted key (or over an altered payload)".into())
        );
    }

    #[test]
    fn a_key_authority_with_rekor_keys_requires_a_log_entry_that_binds_the_envelope() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]\nrekor_keys = [\"rekor.pub\"]");
        let payload = statement(OTHER, COSIGN_SIGN_PREDICATE);
        let good = make(&k.signer, &payload, Some(&k.log), honest_body(pem_of(&k.signer)));
        assert_eq!(verify(&auth, &good, OTHER), Ok(()));
        let none = make(&k.signer, &payload, None, |_, _| json!({}));
        assert_eq!(
            verify(&auth, &none, OTHER),
            Err("bundle has no transparency-log entry, but the policy requires one (Rekor)".into())
        );
        // Honest logs of other things, each signed by the trusted log.
        let other_pem = std::fs::read_to_string(k.dir.path().join("other.pub")).unwrap();
        let cases: Vec<(BodyFn, &str)> = vec![
            (
                Box::new(honest_body(other_pem)),
                "Rekor entry records a different certificate or key than the signature's",
            ),
            (
                Box::new(|p: &[u8], s: &[u8]| {
                    let mut v = honest_body(String::new())(p, s);
                    v["spec"]["payloadHash"]["value"] = json!(hex::encode(Sha256::digest(b"other")));
                    v
                }),
                "Rekor entry is for another payload (payload hash mismatch)",
            ),
            (
                Box::new(|p: &[u8], _s: &[u8]| honest_body(String::new())(p, b"another signature")),
                "Rekor entry records a different signature",
            ),
            (
                Box::new(|p: &[u8], s: &[u8]| {
                    let mut v = honest_body(String::new())(p, s);
                    v["kind"] = json!("hashedrekord");
                    v
                }),
                "Rekor entry is a hashedrekord 0.0.1 entry, not a dsse 0.0.1 entry",
            ),
        ];
        for (body, reason) in cases {
            let b = make(&k.signer, &payload, Some(&k.log), body);
            assert_eq!(verify(&auth, &b, OTHER), Err(reason.to_string()));
        }
        // A log we do not trust.
        let rogue = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
        let b = make(&k.signer, &payload, Some(&rogue), honest_body(pem_of(&k.signer)));
        let err = verify(&auth, &b, OTHER).unwrap_err();
        assert!(err.ends_with("which is not a trusted Rekor key"), "{err}");
    }

    /// A Rekor v2 entry body for `payload`/`sig` by `signer_der` (SPKI): `hashedrekord` over
    /// PAE, or `dsse` over the payload, in the protojson form rekor-tiles logs.
    fn v2_body(kind: &'static str, signer_der: Vec<u8>) -> impl Fn(&[u8], &[u8]) -> Value {
        move |payload, sig| {
            let b64 = base64::engine::general_purpose::STANDARD;
            let signature = json!({"content": b64.encode(sig), "verifier": {
                "keyDetails": "PKIX_ECDSA_P256_SHA_256", "publicKey": {"rawBytes": b64.encode(&signer_der)}}});
            let spec = if kind == "dsse" {
                json!({"dsseV002": {"payloadHash": {"algorithm": "SHA2_256",
                    "digest": b64.encode(Sha256::digest(payload))}, "signatures": [signature]}})
            } else {
                json!({"hashedRekordV002": {"data": {"algorithm": "SHA2_256",
                    "digest": b64.encode(Sha256::digest(pae(IN_TOTO_PAYLOAD_TYPE, payload)))}, "signature": signature}})
            };
            json!({"apiVersion": "0.0.2", "kind": kind, "spec": spec})
        }
    }

    /// Turns the v1 entry `make` wrote into a Rekor v2 one: no SET, no time, version 0.0.2.
    fn as_v2(mut b: Value, kind: &str) -> Value {
        let e = entry(&mut b).as_object_mut().unwrap();
        e.remove("inclusionPromise");
        e.remove("integratedTime");
        e.insert("kindVersion".into(), json!({"kind": kind, "version": "0.0.2"}));
        b
    }

    #[test]
    fn a_key_authority_refuses_a_rekor_v2_entry_for_want_of_a_signing_time() {
        let k = keys();
        let auth = authority_in(k.dir.path(), "cosign_keys = [\"key.pub\"]\nrekor_keys = [\"rekor.pub\"]");
        let payload = statement(OTHER, COSIGN_SIGN_PREDICATE);
        let der = crate::verify::keys::PublicKey::P256(*k.signer.verifying_key()).spki_der();
        let no_time = "bundle's log entry is from a Rekor v2 log, which records no signing time, and key \
                       authorities have no timestamp authority to prove one";
        for kind in ["hashedrekord", "dsse"] {
            // The entry verifies and binds the envelope (proof, checkpoint, body): what is missing
            // is a time, which only a timestamp authority could give.
            let b = as_v2(make(&k.signer, &payload, Some(&k.log), v2_body(kind, der.clone())), kind);
            assert_eq!(verify(&auth, &b, OTHER), Err(no_time.into()), "{kind}");
            // A v2 entry logging another key is refused before that.
            let other = crate::verify::keys::PublicKey::P256(
                *p256::ecdsa::SigningKey::from_slice(&[2u8; 32]).unwrap().verifying_key(),
            );
            let b = as_v2(make(&k.signer, &payload, Some(&k.log), v2_body(kind, other.spki_der())), kind);
            assert_eq!(
                verify(&auth, &b, OTHER),
                Err("Rekor entry records a different certificate or key than the signature's".into()),
                "{kind}"
            );
        }
        // A body of another kind than its kindVersion says.
        let b = as_v2(make(&k.signer, &payload, Some(&k.log), v2_body("dsse", der)), "hashedrekord");
        assert_eq!(
            verify(&auth, &b, OTHER),
            Err("tlog entry kindVersion hashedrekord 0.0.2 does not match its body (dsse 0.0.2)".into())
        );
    }

    #[test]
    fn pae_is_the_dsse_v1_encoding() {
        assert_eq!(pae("application/vnd.in-toto+json", b"{}"), b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec());
    }

    #[test]
    fn the_audit_path_algorithm_matches_rfc_9162_for_small_trees() {
        // Build every tree of up to 9 leaves, and check every leaf's path.
        let leaves: Vec<[u8; 32]> = (0u8..9).map(|i| rekor::merkle_leaf(&[i])).collect();
        fn root(l: &[[u8; 32]]) -> [u8; 32] {
            if l.len() == 1 {
                return l[0];
            }
            let k = l.len().next_power_of_two() / 2;
            rekor::merkle_node(&root(&l[..k]), &root(&l[k..]))
        }
        fn path(m: usize, l: &[[u8; 32]]) -> Vec<[u8; 32]> {
            if l.len() == 1 {
                return vec![];
            }
            let k = l.len().next_power_of_two() / 2;
            if m < k {
                let mut p = path(m, &l[..k]);
                p.push(root(&l[k..]));
                p
            } else {
                let mut p = path(m - k, &l[k..]);
                p.push(root(&l[..k]));
                p
            }
        }
        for n in 1..=leaves.len() {
            let tree = &leaves[..n];
            for m in 0..n {
                let p = path(m, tree);
                assert_eq!(rekor::merkle_root(m as u64, n as u64, tree[m], &p), Some(root(tree)), "{m}/{n}");
                if n > 1 {
                    assert_ne!(
                        rekor::merkle_root(((m + 1) % n) as u64, n as u64, tree[m], &p),
                        Some(root(tree)),
                        "{m}/{n} at the wrong index"
                    );
                }
            }
            assert_eq!(rekor::merkle_root(n as u64, n as u64, tree[0], &[]), None);
        }
    }
}
