//! The primitive signature check for JWS and COSE envelopes, and the base64
//! flavours JWS uses.
//!
//! Both envelope formats name the algorithm the JOSE way (COSE's integer is
//! mapped first), ECDSA signatures are raw `r || s` in both, and RSASSA-PSS
//! uses salt length = hash length, which is what `keys::PublicKey::verify_jose`
//! implements for every verifier in the crate. P-521 (ES512) is refused there:
//! failing closed on a rare algorithm beats a half-checked one.

use base64::Engine;

use super::envelope::Alg;
use crate::verify::keys::PublicKey;

/// Verifies `sig` over `msg` with the public key in `spki_der`.
pub fn verify(spki_der: &[u8], alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    let key = PublicKey::from_spki_der(spki_der).map_err(|e| format!("the signing key {e}"))?;
    key.verify_jose(alg.jose_name(), msg, sig)
}

/// Standard base64 (x5c, timestampSignature), tolerating missing padding.
pub fn b64_std(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
}

/// base64url (JWS protected, payload, signature), tolerating padding.
pub fn b64_url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
}
