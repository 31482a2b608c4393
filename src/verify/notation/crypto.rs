//! The primitive signature check for JWS and COSE envelopes: RSASSA-PSS with
//! salt length = hash length (what notation signs with), or ECDSA with the
//! raw `r || s` encoding both JWS and COSE use.
//!
//! P-521 (ES512) is refused: the crate set has no P-521 implementation, and
//! failing closed on a rare algorithm is better than a half-checked one.

use base64::Engine;

use super::envelope::Alg;

/// Verifies `sig` over `msg` with the public key in `spki_der`.
pub fn verify(spki_der: &[u8], alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    match alg {
        Alg::Ps256 => verify_pss::<sha2::Sha256>(spki_der, msg, sig),
        Alg::Ps384 => verify_pss::<sha2::Sha384>(spki_der, msg, sig),
        Alg::Ps512 => verify_pss::<sha2::Sha512>(spki_der, msg, sig),
        Alg::Es256 => {
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|e| format!("the P-256 key does not parse: {e}"))?;
            let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| format!("an ES256 signature is 64 bytes of r||s, not {} bytes", sig.len()))?;
            key.verify(msg, &sig).map_err(|_| "signature does not verify".to_string())
        }
        Alg::Es384 => {
            use p384::ecdsa::signature::Verifier;
            use p384::pkcs8::DecodePublicKey;
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|e| format!("the P-384 key does not parse: {e}"))?;
            let sig = p384::ecdsa::Signature::from_slice(sig).map_err(|_| format!("an ES384 signature is 96 bytes of r||s, not {} bytes", sig.len()))?;
            key.verify(msg, &sig).map_err(|_| "signature does not verify".to_string())
        }
        Alg::Es512 => Err("ES512 (P-521) signatures are not supported by sigmirror".into()),
    }
}

fn verify_pss<D>(spki_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String>
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| format!("the RSA key does not parse: {e}"))?;
    let vk = rsa::pss::VerifyingKey::<D>::new(key);
    let sig = rsa::pss::Signature::try_from(sig).map_err(|e| format!("the RSA-PSS signature is malformed: {e}"))?;
    vk.verify(msg, &sig).map_err(|_| "signature does not verify".to_string())
}

/// Standard base64 (x5c, timestampSignature), tolerating missing padding.
pub fn b64_std(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s).or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
}

/// base64url (JWS protected, payload, signature), tolerating padding.
pub fn b64_url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
}
