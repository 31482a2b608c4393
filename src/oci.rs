//! OCI vocabulary: digests, references and the pull-side URL routes.
//!
//! Untrusted strings from clients and registries are parsed here into checked
//! types. The rest of the crate takes `Digest` and `Route` and never re-checks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Media types we meet often enough to name.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// What we ask upstream for when the client sends no `Accept` header.
    pub const DEFAULT_ACCEPT: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
    /// Every manifest type sigmirror serves, as one `Accept` value. Pins and
    /// their revalidation resolve tags with exactly this, whatever the client
    /// sent: registries answer a narrower `Accept` with another object
    /// (distribution rewrites a Docker manifest list to its linux/amd64
    /// child), so a client's header must never decide what a tag is pinned to.
    pub const ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.docker.distribution.manifest.v2+json";

    /// Whether `media_type` is a multi-platform index (OCI index or Docker list).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether a client's `Accept` header admits `media_type`: listed exactly
    /// (parameters ignored), or by `*/*` or `application/*`.
    pub fn accepts(accept: &str, media_type: &str) -> bool {
        accept
            .split(',')
            .map(|v| v.split(';').next().unwrap_or("").trim())
            .any(|v| v.eq_ignore_ascii_case(media_type) || v == "*/*" || v.eq_ignore_ascii_case("application/*"))
    }
}

/// A content digest `sha256:<64 lowercase hex>`.
///
/// Only sha256 is accepted: it is what every registry and both signature
/// formats use, and refusing the rest keeps hashing code in one place.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex characters>")]
pub struct InvalidDigest(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn from_sha256(hash: &[u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The tag under which the referrers fallback index lives: `sha256-<hex>`.
    pub fn referrers_tag(&self) -> String {
        format!("sha256-{}", self.hex())
    }

    /// The tag under which cosign stores signatures: `sha256-<hex>.sig`.
    pub fn cosign_signature_tag(&self) -> String {
        format!("sha256-{}.sig", self.hex())
    }

    /// The tag under which `cosign attest` (before v3) stores attestations: `sha256-<hex>.att`.
    pub fn cosign_attestation_tag(&self) -> String {
        format!("sha256-{}.att", self.hex())
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(InvalidDigest(s.chars().take(100).collect()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The thing a manifest request names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    /// How an image name ends with this reference: `:tag` or `@digest`.
    pub fn suffix(&self) -> String {
        match self {
            ManifestRef::Tag(t) => format!(":{t}"),
            ManifestRef::Digest(d) => format!("@{d}"),
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => f.write_str(t),
            ManifestRef::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// One pull-side route of the distribution API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    Manifest {
        repo: String,
        reference: ManifestRef,
    },
    Blob {
        repo: String,
        digest: Digest,
    },
    TagsList {
        repo: String,
    },
    Referrers {
        repo: String,
        digest: Digest,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("not a registry API path")]
    NotFound,
    #[error("invalid repository name {0:?}")]
    BadName(String),
    #[error("invalid tag {0:?}")]
    BadTag(String),
    #[error(transparent)]
    BadDigest(#[from] InvalidDigest),
}

/// Parses a request path (without the query) into a route.
///
/// Repository names have any number of `/`-separated components, so the path
/// is read from the right: the last one or two segments name the endpoint and
/// everything between `/v2/` and them is the repository.
pub fn parse_route(path: &str) -> Result<Route, RouteError> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Base);
    }
    let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    if n >= 3 && segments[n - 2] == "manifests" {
        let repo = checked_repo(&segments[..n - 2])?;
        let last = segments[n - 1];
        let reference = if last.contains(':') {
            ManifestRef::Digest(last.parse()?)
        } else if is_valid_tag(last) {
            ManifestRef::Tag(last.to_string())
        } else {
            return Err(RouteError::BadTag(last.chars().take(200).collect()));
        };
        return Ok(Route::Manifest { repo, reference });
    }
    if n >= 3 && segments[n - 2] == "blobs" {
        let repo = checked_repo(&segments[..n - 2])?;
        return Ok(Route::Blob { repo, digest: segments[n - 1].parse()? });
    }
    if n >= 3 && segments[n - 2] == "referrers" {
        let repo = checked_repo(&segments[..n - 2])?;
        return Ok(Route::Referrers { repo, digest: segments[n - 1].parse()? });
    }
    if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
        let repo = checked_repo(&segments[..n - 2])?;
        return Ok(Route::TagsList { repo });
    }
    Err(RouteError::NotFound)
}

fn checked_repo(segments: &[&str]) -> Result<String, RouteError> {
    let name = segments.join("/");
    if name.len() <= 255 && !segments.is_empty() && segments.iter().all(|s| is_valid_component(s)) {
        Ok(name)
    } else {
        Err(RouteError::BadName(name.chars().take(200).collect()))
    }
}

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A user-facing image reference `<registry>/<repo>(:<tag>|@<digest>)`, as the
/// `verify` command takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repo: String,
    pub reference: ManifestRef,
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (registry, rest) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not <registry>/<repository>:<tag> or @<digest>"))?;
        let (repo, reference) = if let Some((repo, d)) = rest.split_once('@') {
            (repo, ManifestRef::Digest(d.parse().map_err(|e: InvalidDigest| e.to_string())?))
        } else if let Some((repo, t)) = rest.rsplit_once(':') {
            if !is_valid_tag(t) {
                return Err(format!("invalid tag {t:?}"));
            }
            (repo, ManifestRef::Tag(t.to_string()))
        } else {
            (rest, ManifestRef::Tag("latest".into()))
        };
        let segs: Vec<&str> = repo.split('/').collect();
        let repo = checked_repo(&segs).map_err(|e| e.to_string())?;
        Ok(ImageRef { registry: registry.to_string(), repo, reference })
    }
}

/// The parts of an image manifest that signature discovery reads; other
/// fields are ignored.
#[derive(Deserialize)]
pub struct ImageManifest {
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    pub config: Option<Descriptor>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
    pub subject: Option<Descriptor>,
}

#[derive(Deserialize, Clone, Debug)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
pub struct ImageIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

    #[test]
    fn multi_segment_repository_names_are_read_from_the_right() {
        let r = parse_route("/v2/a/b/c/manifests/v1").unwrap();
        assert_eq!(r, Route::Manifest { repo: "a/b/c".into(), reference: ManifestRef::Tag("v1".into()) });
        // A repository may itself contain a component called "manifests".
        let r = parse_route(&format!("/v2/x/manifests/blobs/{D}")).unwrap();
        assert_eq!(r, Route::Blob { repo: "x/manifests".into(), digest: D.parse().unwrap() });
        let r = parse_route("/v2/library/tags/tags/list").unwrap();
        assert_eq!(r, Route::TagsList { repo: "library/tags".into() });
    }

    #[test]
    fn digests_and_referrers_parse() {
        let r = parse_route(&format!("/v2/team/app/manifests/{D}")).unwrap();
        assert_eq!(r, Route::Manifest { repo: "team/app".into(), reference: ManifestRef::Digest(D.parse().unwrap()) });
        let r = parse_route(&format!("/v2/team/app/referrers/{D}")).unwrap();
        assert_eq!(r, Route::Referrers { repo: "team/app".into(), digest: D.parse().unwrap() });
        assert_eq!(parse_route("/v2/").unwrap(), Route::Base);
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        assert_eq!(parse_route("/v1/x/manifests/a"), Err(RouteError::NotFound));
        assert_eq!(parse_route("/v2/manifests/a"), Err(RouteError::NotFound));
        assert!(matches!(parse_route("/v2/UPPER/manifests/a"), Err(RouteError::BadName(_))));
        assert!(matches!(parse_route("/v2/a//b/manifests/a"), Err(RouteError::BadName(_))));
        assert!(matches!(parse_route("/v2/../etc/manifests/a"), Err(RouteError::BadName(_))));
        assert!(matches!(parse_route("/v2/a/manifests/-bad"), Err(RouteError::BadTag(_))));
        assert!(matches!(parse_route("/v2/a/manifests/sha256:abc"), Err(RouteError::BadDigest(_))));
        assert!(matches!(parse_route("/v2/a/manifests/md5:00"), Err(RouteError::BadDigest(_))));
        assert!(matches!(parse_route("/v2/a/blobs/latest"), Err(RouteError::BadDigest(_))));
        let long_tag = "a".repeat(129);
        assert!(matches!(parse_route(&format!("/v2/a/manifests/{long_tag}")), Err(RouteError::BadTag(_))));
        assert!(matches!(parse_route("/v2/a/tags/other"), Err(RouteError::NotFound)));
    }

    #[test]
    fn repository_components_follow_the_distribution_grammar() {
        for ok in ["a", "a0", "a.b", "a_b", "a__b", "a---b", "library"] {
            assert!(is_valid_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a._b", "A", "a b"] {
            assert!(!is_valid_component(bad), "{bad}");
        }
    }

    #[test]
    fn digest_helpers() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(d.referrers_tag(), format!("sha256-{}", &D[7..]));
        assert_eq!(d.cosign_signature_tag(), format!("sha256-{}.sig", &D[7..]));
        assert_eq!(
            Digest::of(b"{}").as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert!("SHA256:00".parse::<Digest>().is_err());
    }

    #[test]
    fn image_references_parse() {
        let r: ImageRef = "localhost:5000/a/b:v1".parse().unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repo, "a/b");
        assert_eq!(r.reference, ManifestRef::Tag("v1".into()));
        let r: ImageRef = format!("docker.io/x@{D}").parse().unwrap();
        assert_eq!(r.reference, ManifestRef::Digest(D.parse().unwrap()));
        assert!("nope".parse::<ImageRef>().is_err());
    }

    #[test]
    fn accept_headers_admit_listed_types_and_wildcards_only() {
        use media::*;
        let containerd =
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json;q=0.9";
        assert!(accepts(containerd, OCI_INDEX));
        assert!(accepts(containerd, DOCKER_MANIFEST));
        assert!(!accepts(containerd, DOCKER_LIST));
        assert!(accepts("*/*", DOCKER_LIST));
        assert!(accepts("application/*", OCI_INDEX));
        assert!(!accepts("", OCI_INDEX));
        assert!(!accepts("application/vnd.oci.image.index.v1+jsonx", OCI_INDEX));
        for t in DEFAULT_ACCEPT {
            assert!(accepts(ALL_MANIFESTS, t), "{t}");
        }
    }
}
