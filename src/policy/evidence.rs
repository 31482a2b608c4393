//! Evidence: the only I/O in a decision. Signature manifests, Sigstore
//! bundles and Notation envelopes are fetched through a [`Registry`] into an
//! [`Evidence`] value; `evaluate` judges it without touching the network.
//!
//! Everything fetched is bounded (layers, payload and envelope sizes,
//! referrers examined), and every blob is checked against its descriptor.
//! What cannot be fetched or read becomes `Unusable` evidence with a reason,
//! never a satisfied authority; only upstream failures are `Err`.

use std::future::Future;

use bytes::Bytes;

use crate::oci::{media, Descriptor, Digest, ImageIndex, ImageManifest, ManifestRef};
use crate::upstream::{Manifest, UpstreamClient, UpstreamError};
use crate::verify::attestation::{self, Attestation};
use crate::verify::bundle;
use crate::verify::cosign::SignatureLayer;

/// Cosign writes one layer per signature; more than this is not a signature
/// manifest anyone made by hand, and we stop before fetching them all.
pub const MAX_SIGNATURE_LAYERS: usize = 64;
/// A simple-signing payload is a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// Notation signatures examined per image.
pub const MAX_NOTATION_SIGNATURES: usize = 16;
/// A Notation envelope with a certificate chain and a timestamp is a few KiB.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Sigstore bundle referrers (cosign format C) examined per image.
pub const MAX_BUNDLE_REFERRERS: usize = 16;

pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// The `artifactType` of a cosign v3 signature referrer, and the media type of its one layer.
pub const BUNDLE_ARTIFACT_TYPE: &str = bundle::BUNDLE_MEDIA_TYPE;
/// The referrer annotation cosign copies the statement's predicateType into. Unsigned, so it is only
/// used to skip attestations before fetching them; the signed statement is what counts.
const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// What evidence gathering needs from a registry: the three reads, so that
/// gathering can be tested against an in-memory registry.
pub trait Registry: Sync {
    /// A manifest, or `None` when upstream has none (404).
    fn optional_manifest(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> impl Future<Output = Result<Option<Manifest>, UpstreamError>> + Send;
    /// A small blob read whole, checked against `digest`, at most `limit` bytes.
    fn small_blob(
        &self,
        repo: &str,
        digest: &Digest,
        limit: usize,
    ) -> impl Future<Output = Result<Bytes, UpstreamError>> + Send;
    /// The referrers API answer, or `None` when the registry has none.
    fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> impl Future<Output = Result<Option<Bytes>, UpstreamError>> + Send;
}

impl Registry for UpstreamClient {
    fn optional_manifest(
        &self,
        repo: &str,
        reference: &ManifestRef,
        accept: &str,
    ) -> impl Future<Output = Result<Option<Manifest>, UpstreamError>> + Send {
        UpstreamClient::optional_manifest(self, repo, reference, accept)
    }
    fn small_blob(
        &self,
        repo: &str,
        digest: &Digest,
        limit: usize,
    ) -> impl Future<Output = Result<Bytes, UpstreamError>> + Send {
        UpstreamClient::small_blob(self, repo, digest, limit)
    }
    fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> impl Future<Output = Result<Option<Bytes>, UpstreamError>> + Send {
        UpstreamClient::referrers(self, repo, digest, artifact_type)
    }
}

/// What one lookup found: nothing, with why (for the "no signature found"
/// reason), or items to judge.
pub enum Found<T> {
    Absent(String),
    Present(T),
}

/// What reading one thing a signature lives in gave: the thing, or why it
/// cannot be used (a reason for the verdict; an outage is `Err` beside it).
enum Read<T> {
    Usable(T),
    Unusable(String),
}

/// One piece of cosign evidence found for an image, in either format.
pub enum CosignEvidence {
    /// A layer of the `sha256-<hex>.sig` manifest (format A).
    Layer(SignatureLayer),
    /// A Sigstore bundle from a referrer manifest (format C).
    Bundle(Vec<u8>),
    /// Something that claimed to be a signature but could not be fetched or read: a reason every
    /// authority reports, never a satisfied authority.
    Unusable(String),
}

/// One Notation signature found for an image.
pub enum NotationEvidence {
    /// The signature manifest's digest, and its envelope's media type and bytes.
    Envelope {
        signature: String,
        media_type: String,
        bytes: Vec<u8>,
    },
    Unusable(String),
}

/// One attestation found for an image, in either layout.
pub enum AttestationEvidence {
    Found(Attestation),
    /// Something that claimed to be an attestation but could not be fetched or read.
    Unusable(String),
}

/// Everything found for one image. `None` means "not looked up": bundles are
/// only fetched when the `.sig` tag left an authority unsatisfied, and each
/// kind only when the policy has an authority that reads it.
#[derive(Default)]
pub struct Evidence {
    pub signature_tag: Option<Found<Vec<CosignEvidence>>>,
    pub bundles: Option<Found<Vec<CosignEvidence>>>,
    pub notation: Option<Found<Vec<NotationEvidence>>>,
    /// Looked up only when the policy requires attestations.
    pub attestations: Option<Found<Vec<AttestationEvidence>>>,
}

/// The cosign signature layers of `digest` (format A: tag `sha256-<hex>.sig`
/// in `sig_repo`). A malformed manifest is `Unusable` evidence.
pub async fn signature_tag(
    reg: &impl Registry,
    sig_repo: &str,
    digest: &Digest,
) -> Result<Found<Vec<CosignEvidence>>, UpstreamError> {
    let unusable = |reason: String| Ok(Found::Present(vec![CosignEvidence::Unusable(reason)]));
    let tag = ManifestRef::Tag(digest.cosign_signature_tag());
    let accept = format!("{},{}", media::OCI_MANIFEST, media::DOCKER_MANIFEST);
    let Some(m) = reg.optional_manifest(sig_repo, &tag, &accept).await? else {
        return Ok(Found::Absent(format!("no tag {tag} in {sig_repo}")));
    };
    let parsed: ImageManifest = match serde_json::from_slice(&m.bytes) {
        Ok(p) => p,
        Err(e) => return unusable(format!("signature manifest {tag} is malformed: {e}")),
    };
    if parsed.layers.len() > MAX_SIGNATURE_LAYERS {
        return unusable(format!(
            "signature manifest {tag} has {} layers, more than the {MAX_SIGNATURE_LAYERS} sigmirror examines",
            parsed.layers.len()
        ));
    }
    let mut layers = Vec::new();
    for l in parsed.layers {
        if l.media_type != COSIGN_SIMPLESIGNING {
            continue;
        }
        let Ok(digest) = l.digest.parse::<Digest>() else {
            return unusable(format!("signature layer digest {:?} is invalid", l.digest));
        };
        if l.size > MAX_PAYLOAD_BYTES as u64 {
            return unusable(format!("signature payload {digest} is {} bytes, more than {MAX_PAYLOAD_BYTES}", l.size));
        }
        let payload = match reg.small_blob(sig_repo, &digest, MAX_PAYLOAD_BYTES).await {
            Ok(p) => p,
            // A payload whose bytes do not hash to its descriptor is a
            // tampered signature, not an outage.
            Err(UpstreamError::DigestMismatch { .. }) => {
                return unusable(format!("payload digest mismatch for {digest}"))
            }
            Err(UpstreamError::NotFound) => return unusable(format!("signature payload {digest} is missing upstream")),
            Err(e) => return Err(e),
        };
        layers.push(CosignEvidence::Layer(SignatureLayer {
            media_type: l.media_type,
            payload: payload.to_vec(),
            annotations: l.annotations.unwrap_or_default(),
        }));
    }
    if layers.is_empty() {
        return Ok(Found::Absent(format!("signature manifest {tag} has no simple-signing layer")));
    }
    Ok(Found::Present(layers))
}

/// The Sigstore bundles attached to `digest` as referrers in `repo`
/// (format C, cosign v3): the referrers API, or the `sha256-<hex>` tag
/// index. Attestation bundles are skipped before they are fetched.
pub async fn bundles(
    reg: &impl Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Found<Vec<CosignEvidence>>, UpstreamError> {
    let descriptors = match referrers(reg, repo, digest, BUNDLE_ARTIFACT_TYPE, false).await? {
        Read::Usable(d) => d,
        Read::Unusable(reason) => return Ok(Found::Present(vec![CosignEvidence::Unusable(reason)])),
    };
    let mut attestations = 0;
    let mut evidence = Vec::new();
    for d in descriptors {
        let predicate = d.annotations.as_ref().and_then(|a| a.get(BUNDLE_PREDICATE_ANNOTATION));
        if predicate.is_some_and(|p| p != bundle::COSIGN_SIGN_PREDICATE) {
            attestations += 1;
            continue;
        }
        if evidence.len() == MAX_BUNDLE_REFERRERS {
            break;
        }
        evidence.push(match referrer_blob(reg, repo, &d, digest, &BUNDLE_REFERRER).await? {
            Read::Usable((_, json)) => CosignEvidence::Bundle(json),
            Read::Unusable(reason) => CosignEvidence::Unusable(format!("sigstore bundle: {reason}")),
        });
    }
    if evidence.is_empty() {
        return Ok(Found::Absent(match attestations {
            0 => "no sigstore bundle referrer".to_string(),
            n => format!("no sigstore bundle referrer but {n} attestation bundle(s)"),
        }));
    }
    Ok(Found::Present(evidence))
}

/// Attestations of `digest` whose (unsigned) predicate type hint is one of `wanted`, or that
/// carry no hint: the layers of the `sha256-<hex>.att` tag in `sig_repo` (cosign before v3) and
/// the Sigstore bundle referrers that are not image signatures (cosign v3). At most
/// [`super::attestation::MAX_ATTESTATIONS`], each at most `attestation::MAX_ENVELOPE_BYTES`.
pub async fn attestations(
    reg: &impl Registry,
    sig_repo: &str,
    digest: &Digest,
    wanted: &[&str],
) -> Result<Found<Vec<AttestationEvidence>>, UpstreamError> {
    let max = super::attestation::MAX_ATTESTATIONS;
    let wanted_hint = |hint: Option<&String>| hint.is_none_or(|t| wanted.contains(&t.as_str()));
    let mut found = Vec::new();
    let mut absent = Vec::new();
    let tag = ManifestRef::Tag(digest.cosign_attestation_tag());
    let accept = format!("{},{}", media::OCI_MANIFEST, media::DOCKER_MANIFEST);
    match reg.optional_manifest(sig_repo, &tag, &accept).await? {
        None => absent.push(format!("no tag {tag} in {sig_repo}")),
        Some(m) => match serde_json::from_slice::<ImageManifest>(&m.bytes) {
            Err(e) => {
                found.push(AttestationEvidence::Unusable(format!("attestation manifest {tag} is malformed: {e}")))
            }
            Ok(parsed) => {
                for l in parsed.layers.into_iter().filter(|l| l.media_type == attestation::DSSE_MEDIA_TYPE) {
                    let annotations = l.annotations.unwrap_or_default();
                    if !wanted_hint(annotations.get(attestation::PREDICATE_TYPE_ANNOTATION)) {
                        continue;
                    }
                    if found.len() == max {
                        break;
                    }
                    found.push(att_layer(reg, sig_repo, &l.digest, l.size, annotations).await?);
                }
            }
        },
    }
    let descriptors = match referrers(reg, sig_repo, digest, BUNDLE_ARTIFACT_TYPE, false).await? {
        Read::Usable(d) => d,
        Read::Unusable(reason) => {
            found.push(AttestationEvidence::Unusable(reason));
            Vec::new()
        }
    };
    let mut bundles = 0;
    for d in descriptors {
        let hint = d.annotations.as_ref().and_then(|a| a.get(BUNDLE_PREDICATE_ANNOTATION));
        if hint.is_some_and(|p| p == bundle::COSIGN_SIGN_PREDICATE) || !wanted_hint(hint) {
            continue;
        }
        if found.len() == max {
            break;
        }
        bundles += 1;
        found.push(match referrer_blob(reg, sig_repo, &d, digest, &ATTESTATION_REFERRER).await? {
            Read::Usable((_, json)) => AttestationEvidence::Found(Attestation::Bundle(json)),
            Read::Unusable(reason) => AttestationEvidence::Unusable(format!("attestation bundle: {reason}")),
        });
    }
    if bundles == 0 {
        absent.push("no attestation bundle referrer".into());
    }
    if found.is_empty() {
        return Ok(Found::Absent(absent.join("; ")));
    }
    Ok(Found::Present(found))
}

/// One `.att` layer's envelope, checked against its descriptor.
async fn att_layer(
    reg: &impl Registry,
    repo: &str,
    digest: &str,
    size: u64,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<AttestationEvidence, UpstreamError> {
    let unusable = |r: String| Ok(AttestationEvidence::Unusable(r));
    let Ok(digest) = digest.parse::<Digest>() else {
        return unusable(format!("attestation layer digest {digest:?} is invalid"));
    };
    let max = attestation::MAX_ENVELOPE_BYTES;
    if size > max as u64 {
        return unusable(format!("attestation {digest} is {size} bytes, more than {max}"));
    }
    match reg.small_blob(repo, &digest, max).await {
        Ok(b) => Ok(AttestationEvidence::Found(Attestation::Layer { envelope: b.to_vec(), annotations })),
        Err(UpstreamError::DigestMismatch { .. }) => unusable(format!("attestation digest mismatch for {digest}")),
        Err(UpstreamError::NotFound) => unusable(format!("attestation {digest} is missing upstream")),
        Err(e) => Err(e),
    }
}

/// The Notation signatures of `digest` in `repo` (referrers API or tag
/// index), each with its envelope, at most `MAX_NOTATION_SIGNATURES`.
pub async fn notation(
    reg: &impl Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Found<Vec<NotationEvidence>>, UpstreamError> {
    let descriptors = match referrers(reg, repo, digest, NOTATION_ARTIFACT_TYPE, true).await? {
        Read::Usable(d) if d.is_empty() => return Ok(Found::Absent("no notation signature found".into())),
        Read::Usable(d) => d,
        Read::Unusable(reason) => {
            return Ok(Found::Present(vec![NotationEvidence::Unusable(format!("notation: {reason}"))]))
        }
    };
    let mut found = Vec::new();
    for d in descriptors.iter().take(MAX_NOTATION_SIGNATURES) {
        found.push(match referrer_blob(reg, repo, d, digest, &NOTATION_REFERRER).await? {
            Read::Usable((media_type, bytes)) => {
                NotationEvidence::Envelope { signature: d.digest.clone(), media_type, bytes }
            }
            Read::Unusable(reason) => NotationEvidence::Unusable(format!("notation: {reason}")),
        });
    }
    Ok(Found::Present(found))
}

/// Lists the referrers of `digest` with `artifact_type`: the referrers API,
/// or the `sha256-<hex>` tag index when the registry has no referrers API.
/// Empty when there are none; `Unusable` is a malformed index.
///
/// Neither the tag index nor a registry that ignores the filter is filtered,
/// so the list is filtered here. With `keep_untyped`, entries without an
/// `artifactType` are kept for the caller to check after fetching (old
/// notation writes the type only as the config media type).
async fn referrers(
    reg: &impl Registry,
    repo: &str,
    digest: &Digest,
    artifact_type: &str,
    keep_untyped: bool,
) -> Result<Read<Vec<Descriptor>>, UpstreamError> {
    let body = match reg.referrers(repo, digest, Some(artifact_type)).await? {
        Some(b) => b,
        None => match reg.optional_manifest(repo, &ManifestRef::Tag(digest.referrers_tag()), media::OCI_INDEX).await? {
            Some(m) => m.bytes,
            None => return Ok(Read::Usable(Vec::new())),
        },
    };
    let index: ImageIndex = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return Ok(Read::Unusable(format!("referrers index is malformed: {e}"))),
    };
    Ok(Read::Usable(
        index
            .manifests
            .into_iter()
            .filter(|d| match d.artifact_type.as_deref() {
                Some(t) => t == artifact_type,
                None => keep_untyped,
            })
            .collect(),
    ))
}

/// A kind of signature stored as an OCI referrer: a manifest whose `subject`
/// is the signed image and whose single layer is the signature blob. Sigstore
/// bundles and Notation envelopes differ only in these fields.
struct ReferrerKind {
    /// What the referrer manifest is called in reasons.
    manifest: &'static str,
    /// What its layer blob is called in reasons.
    blob: &'static str,
    max_blob_bytes: usize,
    is_kind: fn(&ImageManifest) -> bool,
    /// What a manifest of another kind is said not to be.
    kind_name: &'static str,
    layer_ok: fn(&str) -> bool,
    /// The reason when the blob's bytes do not hash to its descriptor:
    /// tampering, not an outage.
    mismatch: fn(&Digest) -> String,
}

const BUNDLE_REFERRER: ReferrerKind = ReferrerKind {
    manifest: "referrer manifest",
    blob: "bundle",
    max_blob_bytes: bundle::MAX_BUNDLE_BYTES,
    is_kind: |m| m.artifact_type.as_deref() == Some(BUNDLE_ARTIFACT_TYPE),
    kind_name: "sigstore bundle",
    layer_ok: |mt| mt.starts_with("application/vnd.dev.sigstore.bundle"),
    mismatch: |d| format!("bundle digest mismatch for {d}"),
};

/// An attestation bundle: a signature bundle with a predicate, so allowed to be larger.
const ATTESTATION_REFERRER: ReferrerKind = ReferrerKind {
    manifest: "referrer manifest",
    blob: "bundle",
    max_blob_bytes: attestation::MAX_ENVELOPE_BYTES,
    ..BUNDLE_REFERRER
};

const NOTATION_REFERRER: ReferrerKind = ReferrerKind {
    manifest: "signature manifest",
    blob: "envelope",
    max_blob_bytes: MAX_ENVELOPE_BYTES,
    // Older notation marks the type only as the config media type.
    is_kind: |m| {
        m.artifact_type.as_deref() == Some(NOTATION_ARTIFACT_TYPE)
            || m.config.as_ref().is_some_and(|c| c.media_type == NOTATION_ARTIFACT_TYPE)
    },
    kind_name: "notation signature",
    // The envelope's media type is checked by the verifier.
    layer_ok: |_| true,
    mismatch: |_| "integrity validation failed: envelope digest mismatch".to_string(),
};

/// Fetches one referrer manifest of `kind` and its layer blob, checking that
/// it is of that kind and that its subject is `digest`. Returns the layer's
/// media type and bytes; `Unusable` carries a denial reason, `Err` an
/// upstream failure.
async fn referrer_blob(
    reg: &impl Registry,
    repo: &str,
    d: &Descriptor,
    digest: &Digest,
    kind: &ReferrerKind,
) -> Result<Read<(String, Vec<u8>)>, UpstreamError> {
    let (what, blob) = (kind.manifest, kind.blob);
    let Ok(ref_digest) = d.digest.parse::<Digest>() else {
        return Ok(Read::Unusable(format!("referrer digest {:?} is invalid", d.digest)));
    };
    let Some(m) = reg.optional_manifest(repo, &ManifestRef::Digest(ref_digest.clone()), media::OCI_MANIFEST).await?
    else {
        return Ok(Read::Unusable(format!("{what} {ref_digest} is missing")));
    };
    let parsed: ImageManifest = match serde_json::from_slice(&m.bytes) {
        Ok(p) => p,
        Err(e) => return Ok(Read::Unusable(format!("{what} {ref_digest} is malformed: {e}"))),
    };
    if !(kind.is_kind)(&parsed) {
        return Ok(Read::Unusable(format!("{what} {ref_digest} is not a {}", kind.kind_name)));
    }
    if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
        return Ok(Read::Unusable(format!("{what} {ref_digest} has another subject")));
    }
    let [layer] = parsed.layers.as_slice() else {
        return Ok(Read::Unusable(format!("{what} {ref_digest} must have exactly one layer")));
    };
    if !(kind.layer_ok)(&layer.media_type) {
        return Ok(Read::Unusable(format!(
            "{what} {ref_digest} layer is {}, not a {}",
            crate::verify::keys::truncate(&layer.media_type, 100),
            kind.kind_name
        )));
    }
    let Ok(blob_digest) = layer.digest.parse::<Digest>() else {
        return Ok(Read::Unusable(format!("{blob} digest {:?} is invalid", layer.digest)));
    };
    if layer.size > kind.max_blob_bytes as u64 {
        return Ok(Read::Unusable(format!("{blob} is {} bytes, more than {}", layer.size, kind.max_blob_bytes)));
    }
    match reg.small_blob(repo, &blob_digest, kind.max_blob_bytes).await {
        Ok(b) => Ok(Read::Usable((layer.media_type.clone(), b.to_vec()))),
        Err(UpstreamError::DigestMismatch { .. }) => Ok(Read::Unusable((kind.mismatch)(&blob_digest))),
        Err(UpstreamError::NotFound) => Ok(Read::Unusable(format!("{blob} {blob_digest} is missing upstream"))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use serde_json::json;

    use super::*;
    use crate::policy::tests::set;
    use crate::policy::Subject;
    use crate::verify::bundle::tests::{key_signed, pem_of_key};

    /// An in-memory registry that records what it was asked.
    #[derive(Default)]
    struct Fake {
        manifests: HashMap<String, Manifest>,
        blobs: HashMap<Digest, Bytes>,
        referrers: HashMap<Digest, Bytes>,
        asked: Mutex<Vec<String>>,
    }

    impl Fake {
        fn manifest(&mut self, reference: &str, bytes: Vec<u8>) -> Digest {
            let digest = Digest::of(&bytes);
            let m = Manifest { bytes: bytes.into(), digest: digest.clone(), media_type: media::OCI_MANIFEST.into() };
            self.manifests.insert(reference.to_string(), m.clone());
            self.manifests.insert(digest.to_string(), m);
            digest
        }
        fn blob(&mut self, bytes: Vec<u8>) -> Digest {
            let d = Digest::of(&bytes);
            self.blobs.insert(d.clone(), bytes.into());
            d
        }
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Registry for Fake {
        async fn optional_manifest(
            &self,
            _repo: &str,
            reference: &ManifestRef,
            _accept: &str,
        ) -> Result<Option<Manifest>, UpstreamError> {
            self.asked.lock().unwrap().push(format!("manifest {reference}"));
            Ok(self.manifests.get(&reference.to_string()).cloned())
        }
        async fn small_blob(&self, _repo: &str, digest: &Digest, _limit: usize) -> Result<Bytes, UpstreamError> {
            self.asked.lock().unwrap().push(format!("blob {digest}"));
            self.blobs.get(digest).cloned().ok_or(UpstreamError::NotFound)
        }
        async fn referrers(
            &self,
            _repo: &str,
            digest: &Digest,
            _artifact_type: Option<&str>,
        ) -> Result<Option<Bytes>, UpstreamError> {
            self.asked.lock().unwrap().push(format!("referrers {digest}"));
            Ok(self.referrers.get(digest).cloned())
        }
    }

    const IMAGE: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(crate::verify::x509::tests::NOW).unwrap()
    }

    fn policy_trusting(k: &p256::ecdsa::SigningKey, dir: &std::path::Path) -> crate::policy::PolicySet {
        let key = dir.join("k.pub");
        std::fs::write(&key, pem_of_key(k)).unwrap();
        set(&format!("[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [{key:?}]\n"))
    }

    #[tokio::test]
    async fn a_valid_sig_tag_is_judged_without_asking_for_bundles() {
        let k = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let set = policy_trusting(&k, dir.path());
        let image: Digest = IMAGE.parse().unwrap();
        let mut fake = Fake::default();
        let payload = serde_json::to_vec(&json!({ "critical": {
            "identity": { "docker-reference": "r.test/team/app" },
            "image": { "docker-manifest-digest": IMAGE },
            "type": "cosign container image signature" }, "optional": null }))
        .unwrap();
        let sig: p256::ecdsa::Signature = k.sign(&payload);
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der());
        let payload_len = payload.len();
        let payload_digest = fake.blob(payload);
        let sig_manifest = json!({ "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": IMAGE, "size": 2 },
            "layers": [{ "mediaType": COSIGN_SIMPLESIGNING, "digest": payload_digest, "size": payload_len,
                         "annotations": { "dev.cosignproject.cosign/signature": sig } }] });
        fake.manifest(&image.cosign_signature_tag(), serde_json::to_vec(&sig_manifest).unwrap());

        let m = Manifest { bytes: Bytes::new(), digest: image.clone(), media_type: media::OCI_MANIFEST.into() };
        let subject = Subject { registry: "r.test", repo: "team/app", manifest: &m };
        let v = set.policies[0].evaluate(&fake, &subject, now()).await.unwrap();
        assert!(v.vouches(), "{v:?}");
        assert_eq!(
            fake.asked(),
            [format!("manifest {}", image.cosign_signature_tag()), format!("blob {payload_digest}")]
        );
    }

    #[tokio::test]
    async fn bundles_are_gathered_through_referrers_when_the_sig_tag_is_absent() {
        let k = p256::ecdsa::SigningKey::from_slice(&[6u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let set = policy_trusting(&k, dir.path());
        let image: Digest = IMAGE.parse().unwrap();
        let mut fake = Fake::default();
        let bundle = key_signed(&k, &[(IMAGE, Some("r.test/team/app"))]);
        let bundle_len = bundle.len();
        let bundle_digest = fake.blob(bundle);
        let referrer = json!({ "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": BUNDLE_ARTIFACT_TYPE,
            "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": IMAGE, "size": 2 },
            "layers": [{ "mediaType": BUNDLE_ARTIFACT_TYPE, "digest": bundle_digest, "size": bundle_len }],
            "subject": { "mediaType": media::OCI_MANIFEST, "digest": IMAGE, "size": 2 } });
        let referrer = serde_json::to_vec(&referrer).unwrap();
        let referrer_len = referrer.len();
        let referrer_digest = fake.manifest("unused", referrer);
        let index = json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
            { "mediaType": media::OCI_MANIFEST, "digest": referrer_digest, "size": referrer_len,
              "artifactType": BUNDLE_ARTIFACT_TYPE }] });
        fake.referrers.insert(image.clone(), serde_json::to_vec(&index).unwrap().into());

        let m = Manifest { bytes: Bytes::new(), digest: image.clone(), media_type: media::OCI_MANIFEST.into() };
        let subject = Subject { registry: "r.test", repo: "team/app", manifest: &m };
        let v = set.policies[0].evaluate(&fake, &subject, now()).await.unwrap();
        assert!(matches!(&v, crate::policy::Verdict::Allow { by, .. } if by.ends_with("(sigstore bundle)")), "{v:?}");
        assert_eq!(
            fake.asked(),
            [
                format!("manifest {}", image.cosign_signature_tag()),
                format!("referrers {image}"),
                format!("manifest {referrer_digest}"),
                format!("blob {bundle_digest}"),
            ]
        );
    }
}
