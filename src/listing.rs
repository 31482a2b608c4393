//! The two listings sigmirror passes on from upstream, tag lists and
//! referrers, checked and re-serialised rather than relayed.
//!
//! Upstream bytes are never relabelled and forwarded: a listing is parsed into
//! the types the distribution spec defines, every entry is checked, and what
//! the client gets is our own serialisation of what passed. A referrers
//! answer only lists manifests whose `subject` really is the digest asked
//! about, so a registry cannot make one image appear to carry another's
//! signatures.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::mirror::Mirror;
use crate::oci::{is_valid_tag, media, Digest};
use crate::upstream::{UpstreamClient, UpstreamError, MAX_MANIFEST_BYTES};

/// Tags in one tag-list page. Registries page at 100 to 1,000; a page with
/// more is not something a client asked for.
pub const MAX_TAGS: usize = 10_000;
/// Referrers listed for one subject. Each one is fetched to check its
/// subject, so this also bounds the upstream requests one listing costs.
pub const MAX_REFERRERS: usize = 128;
/// Referrer manifests fetched at once while checking subjects.
const REFERRER_FETCH_CONCURRENCY: usize = 4;
/// Annotations per referrer descriptor, and the longest key or value kept.
const MAX_ANNOTATIONS: usize = 64;
const MAX_ANNOTATION_CHARS: usize = 4096;

#[derive(Deserialize)]
struct UpstreamTagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: Vec<String>,
}

/// Parses an upstream tag list and re-serialises it for `repo`. A list that
/// is not one, too long, or holding a string that is not a tag is refused
/// whole: a client paging through tags must not get a silently shortened page.
pub fn tag_list(repo: &str, body: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    let parsed: UpstreamTagList =
        serde_json::from_slice(body).map_err(|e| UpstreamError::Protocol(format!("tag list is malformed: {e}")))?;
    let tags = parsed.tags.unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(UpstreamError::Protocol(format!("tag list has {} tags, more than {MAX_TAGS}", tags.len())));
    }
    if let Some(n) = tags.iter().position(|t| !is_valid_tag(t)) {
        // The position, not the string: it is upstream's, not ours to repeat.
        return Err(UpstreamError::Protocol(format!("tag list entry {n} is not a tag")));
    }
    Ok(serde_json::to_vec(&TagList { name: repo, tags }).expect("strings serialise"))
}

/// A descriptor as the referrers API lists it; unknown fields are dropped.
#[derive(Deserialize, Serialize, Clone)]
pub(crate) struct ReferrerDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct UpstreamIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Serialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Deserialize)]
struct WithSubject {
    subject: Option<SubjectRef>,
}

#[derive(Deserialize)]
struct SubjectRef {
    digest: String,
}

/// Checks one descriptor's shape; the reason it is unusable otherwise.
pub(crate) fn check_descriptor(d: &ReferrerDescriptor) -> Result<Digest, String> {
    let digest: Digest = d.digest.parse().map_err(|_| format!("referrer digest {:?} is invalid", d.digest))?;
    if d.media_type != media::OCI_MANIFEST && d.media_type != media::OCI_INDEX {
        return Err(format!("referrer {digest} has media type {:?}, not an OCI manifest", d.media_type));
    }
    if d.size > MAX_MANIFEST_BYTES as u64 {
        return Err(format!("referrer {digest} claims {} bytes", d.size));
    }
    let long = |s: &String| s.len() > MAX_ANNOTATION_CHARS;
    if d.artifact_type.as_ref().is_some_and(long) {
        return Err(format!("referrer {digest} has an over-long artifactType"));
    }
    if let Some(a) = &d.annotations {
        if a.len() > MAX_ANNOTATIONS || a.iter().any(|(k, v)| long(k) || long(v)) {
            return Err(format!("referrer {digest} has too many or too long annotations"));
        }
    }
    Ok(digest)
}

/// The descriptors of an upstream referrers answer: an OCI index (schemaVersion 2) of at most
/// `MAX_REFERRERS`, each descriptor still to be checked with `check_descriptor`.
pub(crate) fn referrers_index(body: &[u8]) -> Result<Vec<ReferrerDescriptor>, UpstreamError> {
    let index: UpstreamIndex = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Protocol(format!("referrers answer is not an OCI index: {e}")))?;
    if index.schema_version != 2 || index.media_type.as_deref().is_some_and(|t| t != media::OCI_INDEX) {
        return Err(UpstreamError::Protocol("referrers answer is not an OCI image index (schemaVersion 2)".into()));
    }
    if index.manifests.len() > MAX_REFERRERS {
        return Err(UpstreamError::Protocol(format!(
            "referrers answer lists {} manifests, more than {MAX_REFERRERS}",
            index.manifests.len()
        )));
    }
    Ok(index.manifests)
}

/// The referrers of `subject` in `repo`, as an OCI index sigmirror wrote:
/// `Ok(None)` when upstream has no referrers API (clients then fall back to
/// the `sha256-<hex>` tag). Every listed manifest is fetched (through the
/// manifest cache) and kept only if its `subject` is `subject`; descriptors
/// are filtered by `artifact_type` here whether or not upstream did.
pub async fn referrers(
    mirror: &Mirror,
    registry: &str,
    up: &UpstreamClient,
    repo: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Option<Vec<u8>>, UpstreamError> {
    let Some(body) = up.referrers(repo, subject, artifact_type).await? else {
        return Ok(None);
    };
    let wanted = referrers_index(&body)?.into_iter().filter(|d| match artifact_type {
        Some(t) => d.artifact_type.as_deref() == Some(t),
        None => true,
    });
    let checks = futures_util::stream::iter(wanted.map(|d| async move {
        let digest = match check_descriptor(&d) {
            Ok(digest) => digest,
            Err(reason) => return Ok((d, Err(reason))),
        };
        let verdict = match mirror.manifest_by_digest(registry, up, repo, &digest).await {
            Ok(m) => match serde_json::from_slice::<WithSubject>(&m.bytes) {
                Ok(WithSubject { subject: Some(s) }) if s.digest == subject.as_str() => Ok(()),
                Ok(_) => Err(format!("referrer {digest} names another subject (or none)")),
                Err(_) => Err(format!("referrer {digest} is not a manifest")),
            },
            Err(e) if matches!(*e, UpstreamError::NotFound) => Err(format!("referrer {digest} is missing upstream")),
            Err(e) => return Err((*e).clone()),
        };
        Ok((d, verdict))
    }))
    .buffered(REFERRER_FETCH_CONCURRENCY);
    let checked: Vec<Result<_, UpstreamError>> = checks.collect().await;
    let mut manifests = Vec::new();
    for c in checked {
        let (d, verdict) = c?;
        match verdict {
            Ok(()) => manifests.push(d),
            Err(reason) => tracing::warn!(%registry, %repo, %subject, "dropped from referrers answer: {reason}"),
        }
    }
    let out = Index { schema_version: 2, media_type: media::OCI_INDEX, manifests };
    Ok(Some(serde_json::to_vec(&out).expect("plain data serialises")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_list_is_re_serialised_for_the_repository_asked_about() {
        let out = tag_list("team/app", br#"{"name":"elsewhere","tags":["v1","latest"],"extra":1}"#).unwrap();
        assert_eq!(out, br#"{"name":"team/app","tags":["v1","latest"]}"#);
        let out = tag_list("team/app", br#"{"name":"team/app","tags":null}"#).unwrap();
        assert_eq!(out, br#"{"name":"team/app","tags":[]}"#);
    }

    #[test]
    fn a_tag_list_with_a_non_tag_or_that_is_not_json_is_refused() {
        for body in [&br#"{"tags":["v1","../../etc"]}"#[..], b"<html>", br#"{"tags":"v1"}"#, br#"{"tags":[""]}"#] {
            assert!(tag_list("r", body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "tags": many })).unwrap();
        assert!(tag_list("r", &body).unwrap_err().detail().unwrap().contains("more than"));
    }

    #[test]
    fn descriptors_must_be_oci_manifests_of_bounded_size() {
        let d = |mt: &str, digest: &str, size: u64| ReferrerDescriptor {
            media_type: mt.into(),
            digest: digest.into(),
            size,
            artifact_type: None,
            annotations: None,
        };
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(check_descriptor(&d(media::OCI_MANIFEST, &good, 500)).is_ok());
        assert!(check_descriptor(&d(media::OCI_MANIFEST, "sha256:short", 500)).is_err());
        assert!(check_descriptor(&d("text/html", &good, 500)).is_err());
        assert!(check_descriptor(&d(media::OCI_MANIFEST, &good, u64::MAX)).is_err());
    }
}
