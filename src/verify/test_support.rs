//! Helpers the verifiers' unit tests share: a fixed "now", and cosign
//! authorities built from policy fragments the way the config loader builds them.

use super::cosign::CosignAuthority;
use super::x509::tests::NOW;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// `tests/vectors`, where every carried vector lives.
pub(crate) fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The fixed instant the test CAs and the carried vectors are valid at.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("time")
}

/// The one cosign authority a policy fragment declares, with paths relative to `base`;
/// panics when the fragment has a config problem, so a test never runs on a half-loaded policy.
pub(crate) fn authority_in(base: &Path, fragment: &str) -> CosignAuthority {
    let (p, mut c) = crate::config::policy_fragment(base, fragment);
    let mut auths = CosignAuthority::from_policy(&p, &mut c);
    assert!(c.problems.is_empty(), "{:?}", c.problems.iter().map(|p| &p.message).collect::<Vec<_>>());
    assert_eq!(auths.len(), 1);
    auths.remove(0)
}

/// Public-good Fulcio and Rekor, from sigstore-rs's production trusted root.
pub(crate) fn fulcio(identity: &str, issuer: &str) -> CosignAuthority {
    authority_in(
        &vectors(),
        &format!(
            "[[cosign_certificates]]\nsigstore_trusted_root = \"cosign/sigstore-rs/trusted_root.json\"\n\
             identity = {identity:?}\nissuer = {issuer:?}"
        ),
    )
}
