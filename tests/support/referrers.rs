//! Sigstore bundles attached as OCI referrers, laid out as cosign v3 pushes
//! them: a referrer manifest per bundle and the `sha256-<hex>` tag index.

use super::*;

/// The media type of a Sigstore bundle v0.3, and the referrer's `artifactType`.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// The referrer manifest cosign v3 pushes for a bundle blob, and its index
/// descriptor (with the annotations a registry copies in).
pub fn referrer(
    bundle_digest: &str,
    bundle_len: usize,
    subject: &Pushed,
    predicate: Option<&str>,
) -> (Vec<u8>, serde_json::Value) {
    let mut annotations = serde_json::json!({"dev.sigstore.bundle.content": "dsse-envelope"});
    if let Some(p) = predicate {
        annotations["dev.sigstore.bundle.predicateType"] = p.into();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": bundle_digest, "size": bundle_len}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": annotations,
    }))
    .unwrap();
    let descriptor = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(&manifest),
        "size": manifest.len(),
        "artifactType": BUNDLE,
        "annotations": annotations,
    });
    (manifest, descriptor)
}

pub fn index_of(descriptors: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}))
        .unwrap()
}

/// Pushes each bundle (with its predicate type hint) as a referrer of
/// `image` in `repo`, and maintains the `sha256-<hex>` tag index, as clients
/// must for a registry without a referrers API (distribution 2.8). The referrer manifests and the tag index are built
/// from the bundle bytes alone, so attaching the same bundles in another
/// repository writes byte-identical copies: what copying an image with its
/// signatures (`crane copy`, `oras cp -r`) produces.
pub fn attach_in(registry: &Registry, repo: &str, image: &Pushed, bundles: &[(Vec<u8>, Option<&str>)]) {
    push_blob(&registry.host, repo, b"{}");
    let mut descriptors = Vec::new();
    for (bytes, predicate) in bundles {
        let digest = push_blob(&registry.host, repo, bytes);
        let (manifest, descriptor) = referrer(&digest, bytes.len(), image, *predicate);
        push_raw_manifest(&registry.host, repo, &sha256_digest(&manifest), OCI_MANIFEST, &manifest);
        descriptors.push(descriptor);
    }
    let tag = image.digest.replace(':', "-");
    push_raw_manifest(&registry.host, repo, &tag, OCI_INDEX, &index_of(descriptors));
}
