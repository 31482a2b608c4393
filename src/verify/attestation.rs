//! Cosign attestations: a DSSE envelope over an in-toto Statement about the image, signed by an
//! authority a policy trusts. Pure, like `cosign` and `bundle`: the caller fetches the bytes.
//!
//! Two layouts, as cosign writes them:
//! * the `sha256-<hex>.att` tag (`cosign attest` before v3): one layer per attestation, of media
//!   type `application/vnd.dsse.envelope.v1+json`, whose blob is the envelope itself and whose
//!   annotations carry the certificate (`dev.sigstore.cosign/certificate`, `…/chain`) and the
//!   Rekor bundle, exactly as for signatures;
//! * a Sigstore bundle attached as an OCI referrer (cosign v3, GitHub's attest actions), verified
//!   by `bundle::verify_envelope` exactly as a signature bundle is: PAE signature, Rekor entry with
//!   inclusion proof, timestamps, certificate at the signing time.
//!
//! After the signature, the statement: an in-toto Statement (v0.1 or v1) one of whose subjects has
//! the served digest. The subject's `name` is not compared with the repository: an attestation is
//! about content (what built these bytes, what a scan found in them), which a copy does not
//! change, and the image's signature, which a policy requires as well, binds the repository.
//!
//! Not done: the Rekor entry of a `.att` layer (an `intoto` entry, which `rekor` does not read).
//! An authority that requires a log (a key with `rekor_keys`, any certificate authority with a
//! Rekor key) therefore refuses `.att` attestations with a reason saying so; Sigstore bundle
//! attestations carry a `dsse` entry and are verified in full.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use time::OffsetDateTime;

use super::bundle::{self, Envelope, EnvelopeLimits, IN_TOTO_PAYLOAD_TYPE, STATEMENT_TYPES};
use super::cosign::{self, CosignAuthority};
use super::keys::truncate;
use super::rekor::strip_whitespace;
use crate::oci::Digest;

/// The media type of a `.att` layer.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The `.att` layer annotation cosign copies the predicate type into (unsigned: only a hint for
/// what to fetch).
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// An envelope or bundle: SBOMs of large images run to a few MiB.
pub const MAX_ENVELOPE_BYTES: usize = 4 << 20;
/// The decoded statement, and so the most a condition ever evaluates over.
pub const MAX_STATEMENT_BYTES: usize = 3 << 20;
/// Cosign writes one signature per envelope; DSSE allows several.
const MAX_SIGNATURES: usize = 4;
const MAX_SIGNATURE_B64: usize = 4 << 10;

const LIMITS: EnvelopeLimits = EnvelopeLimits { bundle: MAX_ENVELOPE_BYTES, statement: MAX_STATEMENT_BYTES };

/// One attestation as found, in either layout.
#[derive(Clone, Debug)]
pub enum Attestation {
    /// A `.att` layer: the envelope bytes and the layer's annotations.
    Layer { envelope: Vec<u8>, annotations: BTreeMap<String, String> },
    /// A Sigstore bundle referrer.
    Bundle(Vec<u8>),
}

/// What a verified attestation says.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// Verifies `att` with `auth` and checks that it is about `digest`; returns what it says.
pub fn verify(
    auth: &CosignAuthority,
    att: &Attestation,
    digest: &Digest,
    now: OffsetDateTime,
) -> Result<Statement, String> {
    let payload = match att {
        Attestation::Bundle(json) => bundle::verify_envelope(auth, json, &LIMITS)?.1,
        Attestation::Layer { envelope, annotations } => verify_layer(auth, envelope, annotations, now)?,
    };
    statement(&payload, digest)
}

/// The `.att` layout: the envelope's signature over PAE, with the key or the annotated
/// certificate (checked now: without a log entry there is no earlier proven time).
fn verify_layer(
    auth: &CosignAuthority,
    envelope: &[u8],
    annotations: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(format!("DSSE envelope is {} bytes, more than the {MAX_ENVELOPE_BYTES} allowed", envelope.len()));
    }
    let env: Envelope = serde_json::from_slice(envelope).map_err(|e| format!("DSSE envelope is malformed: {e}"))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!("DSSE payloadType {} is not {IN_TOTO_PAYLOAD_TYPE}", truncate(&env.payload_type, 100)));
    }
    let payload = b64.decode(strip_whitespace(&env.payload)).map_err(|_| "DSSE payload is not valid base64")?;
    if payload.len() > MAX_STATEMENT_BYTES {
        return Err(format!("DSSE payload is more than the {MAX_STATEMENT_BYTES} bytes allowed"));
    }
    if env.signatures.is_empty() || env.signatures.len() > MAX_SIGNATURES {
        return Err(format!("DSSE envelope has {} signatures; expected 1 to {MAX_SIGNATURES}", env.signatures.len()));
    }
    let signed = bundle::pae(&env.payload_type, &payload);
    let (CosignAuthority::Key { rekor, .. } | CosignAuthority::Certificate { rekor, .. }) = auth;
    if !rekor.is_empty() {
        return Err("this authority requires a Rekor entry, and sigmirror does not read the intoto entries of \
                    .att attestations; attach the attestation as a Sigstore bundle (cosign v3)"
            .into());
    }
    let (key, what) = match auth {
        CosignAuthority::Key { key, .. } => (key.clone(), "signature by an untrusted key"),
        CosignAuthority::Certificate { .. } => {
            let (leaf, chain) = cosign::signature_certificates(annotations)?;
            cosign::check_certificate(auth, &leaf, chain, now)?;
            (leaf.public_key()?, "signature does not verify with its certificate's key")
        }
    };
    for s in &env.signatures {
        if s.sig.len() > MAX_SIGNATURE_B64 {
            continue;
        }
        let Ok(sig) = b64.decode(strip_whitespace(&s.sig)) else { continue };
        if key.verify_cosign(&signed, &sig).is_ok() {
            return Ok(payload);
        }
    }
    Err(format!("{what} (or over an altered payload)"))
}

/// The authenticated statement: an in-toto Statement with a subject of `digest`.
fn statement(payload: &[u8], digest: &Digest) -> Result<Statement, String> {
    let st: RawStatement =
        serde_json::from_slice(payload).map_err(|e| format!("signed statement is not an in-toto Statement: {e}"))?;
    match st.statement_type.as_deref() {
        Some(t) if STATEMENT_TYPES.contains(&t) => {}
        Some(t) => return Err(format!("signed statement type {} is not an in-toto Statement", truncate(t, 100))),
        None => return Err("signed statement has no _type".into()),
    }
    let predicate_type = st.predicate_type.ok_or("signed statement has no predicateType")?;
    let digests: Vec<&str> = st.subject.iter().filter_map(|s| s.digest.get("sha256").map(String::as_str)).collect();
    if !digests.iter().any(|d| d.eq_ignore_ascii_case(digest.hex())) {
        if digests.is_empty() {
            return Err("signed statement has no subject with a sha256 digest".into());
        }
        let named: Vec<String> = digests.iter().take(3).map(|d| format!("sha256:{}", truncate(d, 64))).collect();
        return Err(format!("statement digest mismatch: attestation is for {} not {digest}", named.join(", ")));
    }
    Ok(Statement { predicate_type, predicate: st.predicate })
}
