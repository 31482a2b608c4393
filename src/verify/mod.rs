//! Signature verifiers. Each submodule turns untrusted signature bytes plus
//! configured trust material into a yes/no answer with a reason. They do no
//! network I/O: `policy` fetches the evidence through `upstream` and hands the
//! bytes in, so every verifier can be tested with fixed vectors and a fixed
//! "now".

pub mod bundle;
pub mod cosign;
pub mod keys;
pub mod notation;
pub mod rekor;
pub mod x509;
