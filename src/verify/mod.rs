//! Signature verifiers. Each submodule turns untrusted signature bytes plus
//! configured trust material into a yes/no answer with a reason. They do no
//! network I/O: `policy` fetches the evidence through `upstream` and hands the
//! bytes in, so every verifier can be tested with fixed vectors and a fixed
//! "now".
//!
//! `cosign` (format A), `bundle` (Sigstore bundles) and `notation` share
//! `x509` (one certificate parser, path builder and set of certificate rules,
//! with a profile per ecosystem), `timestamp` (RFC 3161) and `der`.

pub mod attestation;
pub mod bundle;
pub mod cosign;
pub(crate) mod der;
pub mod keys;
pub mod notation;
pub mod rekor;
#[cfg(test)]
mod rekor2_tests;
#[cfg(test)]
mod test_support;
pub(crate) mod timestamp;
pub mod x509;
