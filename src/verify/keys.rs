//! Public keys (ECDSA P-256/P-384, RSA) and the raw signature checks both signature formats need.
//!
//! Everything here works on untrusted bytes: every parser bounds its input and returns a short
//! human reason instead of panicking. The signature schemes are chosen from the key type, never from
//! anything the signer wrote, because cosign signatures carry no algorithm field.

use p256::pkcs8::DecodePublicKey as _;
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// PEM trust files and annotations are small; anything bigger is a mistake or an attack.
pub const MAX_PEM_BYTES: usize = 1 << 20;

/// RSA keys below this size are refused everywhere: they are breakable, and neither cosign nor
/// Notation produces them.
pub const MIN_RSA_BITS: usize = 2048;

/// Larger than the `rsa` crate's default 4096-bit limit, because 8192-bit CA and signing keys exist,
/// but still bounded so a huge modulus cannot make verification slow.
const MAX_RSA_BITS: usize = 8192;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";

/// A verification key of one of the types sigmirror accepts.
#[derive(Clone, Debug)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der() == other.spki_der()
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as written by `cosign generate-key-pair`
    /// and `openssl pkey -pubout`. Exactly one key block is accepted so a bundle of several keys is
    /// not silently reduced to its first one.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let blocks = pem_blocks(pem, 16)?;
        let keys: Vec<&PemBlock> = blocks.iter().filter(|b| b.label == "PUBLIC KEY").collect();
        match keys.as_slice() {
            [one] => PublicKey::from_spki_der(&one.der),
            [] => {
                if blocks.iter().any(|b| b.label == "CERTIFICATE") {
                    Err("is a certificate, not a PUBLIC KEY".into())
                } else if blocks.iter().any(|b| b.label.contains("PRIVATE KEY")) {
                    Err("is a private key; configure the public key".into())
                } else {
                    Err("contains no PEM PUBLIC KEY block".into())
                }
            }
            _ => Err(format!("contains {} PUBLIC KEY blocks; configure one key per entry", keys.len())),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo, as found in certificates, Rekor entries and
    /// `trusted_root.json`.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let spki =
            SubjectPublicKeyInfoRef::try_from(der).map_err(|_| "is not a DER SubjectPublicKeyInfo".to_string())?;
        match spki.algorithm.oid.to_string().as_str() {
            OID_EC_PUBLIC_KEY => {
                if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
                    Ok(PublicKey::P256(k))
                } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
                    Ok(PublicKey::P384(k))
                } else {
                    Err("is an EC key on an unsupported curve or malformed (only P-256 and P-384 are accepted)".into())
                }
            }
            OID_RSA_ENCRYPTION => {
                let bits = spki.subject_public_key.as_bytes().ok_or("is a malformed RSA key")?;
                let pkcs1 =
                    rsa::pkcs1::RsaPublicKey::try_from(bits).map_err(|_| "is a malformed RSA key".to_string())?;
                let n = rsa::BigUint::from_bytes_be(pkcs1.modulus.as_bytes());
                let e = rsa::BigUint::from_bytes_be(pkcs1.public_exponent.as_bytes());
                let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                    .map_err(|e| format!("is an unusable RSA key: {e}"))?;
                let k = PublicKey::Rsa(key);
                match k.rsa_bits() {
                    Some(b) if b < MIN_RSA_BITS => {
                        Err(format!("is a {b}-bit RSA key; at least {MIN_RSA_BITS} bits are required"))
                    }
                    _ => Ok(k),
                }
            }
            OID_ED25519 => Err("is an Ed25519 key, which sigmirror does not support yet".into()),
            other => Err(format!("has unsupported key algorithm {other}")),
        }
    }

    /// The canonical DER SubjectPublicKeyInfo, for comparing keys and fingerprinting trust material.
    pub fn spki_der(&self) -> Vec<u8> {
        use rsa::pkcs8::EncodePublicKey as _;
        let doc = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
            PublicKey::Rsa(k) => k.to_public_key_der(),
        };
        // Encoding a key we already hold cannot fail; an empty result would only make comparisons
        // fail closed.
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// A short name for messages: "ECDSA P-256", "RSA-4096".
    pub fn kind(&self) -> String {
        match self {
            PublicKey::P256(_) => "ECDSA P-256".into(),
            PublicKey::P384(_) => "ECDSA P-384".into(),
            PublicKey::Rsa(_) => format!("RSA-{}", self.rsa_bits().unwrap_or(0)),
        }
    }

    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts as _;
                Some(k.n().bits())
            }
            _ => None,
        }
    }

    /// Verifies a cosign signature over `msg`.
    ///
    /// cosign records no algorithm, so it follows from the key: ECDSA with a DER signature (high-S
    /// accepted, because Go signers do not normalise s), SHA-256 for P-256; for P-384 SHA-384, and
    /// SHA-256 too because cosign loads certificate keys with `crypto.SHA256` whatever the curve;
    /// RSA PKCS#1 v1.5 with SHA-256, or PSS with SHA-256.
    pub fn verify_cosign(&self, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        use p256::ecdsa::signature::Verifier as _;
        const BAD: &str = "signature does not verify";
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_der(sig)
                    .map_err(|_| "signature is not a DER ECDSA P-256 signature")?;
                k.verify(msg, &s).map_err(|_| BAD.into())
            }
            PublicKey::P384(k) => {
                let s = p384::ecdsa::Signature::from_der(sig)
                    .map_err(|_| "signature is not a DER ECDSA P-384 signature")?;
                k.verify_prehash(&Sha384::digest(msg), &s)
                    .or_else(|_| k.verify_prehash(&Sha256::digest(msg), &s))
                    .map_err(|_| BAD.into())
            }
            PublicKey::Rsa(k) => {
                let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| "signature is not an RSA signature")?;
                if rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone()).verify(msg, &s).is_ok() {
                    return Ok(());
                }
                let s = rsa::pss::Signature::try_from(sig).map_err(|_| "signature is not an RSA signature")?;
                rsa::pss::VerifyingKey::<Sha256>::new(k.clone()).verify(msg, &s).map_err(|_| BAD.into())
            }
        }
    }

    /// Verifies a JOSE-style signature (Notation JWS and COSE use the same algorithm names).
    /// ES* signatures are raw `r || s`; PS* use a salt as long as the hash, as Notation signs.
    pub fn verify_jose(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        use p256::ecdsa::signature::Verifier as _;
        const BAD: &str = "signature does not verify";
        let mismatch = || Err(format!("algorithm {alg} does not fit the signing key ({})", self.kind()));
        match (alg, self) {
            ("ES256", PublicKey::P256(k)) => {
                let s =
                    p256::ecdsa::Signature::from_slice(sig).map_err(|_| "ES256 signature is not 64 bytes of r || s")?;
                k.verify(msg, &s).map_err(|_| BAD.into())
            }
            ("ES384", PublicKey::P384(k)) => {
                let s =
                    p384::ecdsa::Signature::from_slice(sig).map_err(|_| "ES384 signature is not 96 bytes of r || s")?;
                k.verify(msg, &s).map_err(|_| BAD.into())
            }
            ("ES512", _) => Err("ES512 (ECDSA P-521) is not supported".into()),
            ("PS256" | "PS384" | "PS512", PublicKey::Rsa(k)) => {
                let bits = self.rsa_bits().unwrap_or(0);
                if bits < MIN_RSA_BITS {
                    return Err(format!("RSA key is {bits} bits; at least {MIN_RSA_BITS} are required"));
                }
                let s = rsa::pss::Signature::try_from(sig).map_err(|_| "signature is not an RSA signature")?;
                let ok = match alg {
                    "PS256" => rsa::pss::VerifyingKey::<Sha256>::new(k.clone()).verify(msg, &s).is_ok(),
                    "PS384" => rsa::pss::VerifyingKey::<Sha384>::new(k.clone()).verify(msg, &s).is_ok(),
                    _ => rsa::pss::VerifyingKey::<Sha512>::new(k.clone()).verify(msg, &s).is_ok(),
                };
                if ok {
                    Ok(())
                } else {
                    Err(BAD.into())
                }
            }
            ("ES256" | "ES384" | "PS256" | "PS384" | "PS512", _) => mismatch(),
            _ => Err(format!("unsupported signature algorithm {:?}", truncate(alg, 32))),
        }
    }
}

/// One `-----BEGIN <label>-----` block, decoded.
#[derive(Clone, Debug)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Splits PEM text into blocks. Text between blocks is ignored (OpenSSL writes `subject=` lines
/// into bundles), but a block that is not terminated, or whose body is not base64, is an error
/// rather than skipped, so damaged trust material is noticed.
pub fn pem_blocks(input: &[u8], max_blocks: usize) -> Result<Vec<PemBlock>, String> {
    use base64::Engine as _;
    if input.len() > MAX_PEM_BYTES {
        return Err(format!("PEM data is {} bytes, more than the {MAX_PEM_BYTES} allowed", input.len()));
    }
    let text = std::str::from_utf8(input).map_err(|_| "is not PEM text".to_string())?;
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        match &mut current {
            None => {
                if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
                    if out.len() >= max_blocks {
                        return Err(format!("contains more than {max_blocks} PEM blocks"));
                    }
                    current = Some((label.to_string(), String::new()));
                }
            }
            Some((label, body)) => {
                if let Some(end) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
                    if end != label {
                        return Err(format!("PEM block BEGIN {label} ends with END {end}"));
                    }
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(body.as_bytes())
                        .map_err(|_| format!("PEM block {label} is not valid base64"))?;
                    out.push(PemBlock { label: label.clone(), der });
                    current = None;
                } else if line.starts_with("-----") {
                    return Err(format!("PEM block {label} is not terminated"));
                } else if line.contains(':') {
                    // RFC 1421 headers (Proc-Type, DEK-Info) mean encrypted content we cannot use.
                    return Err(format!("PEM block {label} has headers; it may be encrypted"));
                } else {
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((label, _)) = current {
        return Err(format!("PEM block {label} is not terminated"));
    }
    Ok(out)
}

/// Cuts untrusted text for inclusion in a message.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"))).expect("vector file")
    }

    fn p256_key() -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("fixed scalar");
        let pk = PublicKey::P256(*sk.verifying_key());
        (sk, pk)
    }

    #[test]
    fn the_cosign_test_public_key_parses_as_p256() {
        let k = PublicKey::from_pem(&vector("cosign/containers-image/cosign.pub")).expect("parses");
        assert_eq!(k.kind(), "ECDSA P-256");
        assert_eq!(k.rsa_bits(), None);
        // Round trip through DER gives back the same key.
        assert_eq!(PublicKey::from_spki_der(&k.spki_der()).expect("der"), k);
    }

    #[test]
    fn sigstore_rs_kat1_verifies_and_a_flipped_payload_does_not() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cuOSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==\n-----END PUBLIC KEY-----\n";
        let key = PublicKey::from_pem(pem.as_bytes()).expect("key");
        let payload = br#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;
        let sig = b64
            .decode("MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=")
            .expect("b64");
        key.verify_cosign(payload, &sig).expect("KAT1 verifies");
        let mut tampered = payload.to_vec();
        tampered[10] ^= 1;
        assert_eq!(key.verify_cosign(&tampered, &sig), Err("signature does not verify".into()));
    }

    #[test]
    fn garbage_and_truncated_der_signatures_are_refused_with_a_reason() {
        let (sk, pk) = p256_key();
        let sig: p256::ecdsa::Signature = sk.sign(b"msg");
        let der = sig.to_der();
        pk.verify_cosign(b"msg", der.as_bytes()).expect("valid");
        let truncated = &der.as_bytes()[..der.as_bytes().len() - 3];
        assert_eq!(pk.verify_cosign(b"msg", truncated), Err("signature is not a DER ECDSA P-256 signature".into()));
        assert_eq!(pk.verify_cosign(b"msg", b""), Err("signature is not a DER ECDSA P-256 signature".into()));
        assert_eq!(pk.verify_cosign(b"msg", &[0x30; 200]), Err("signature is not a DER ECDSA P-256 signature".into()));
    }

    #[test]
    fn a_p384_key_accepts_sha384_and_sha256_cosign_signatures() {
        use p384::ecdsa::signature::hazmat::PrehashSigner as _;
        let sk = p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).expect("fixed scalar");
        let pk = PublicKey::P384(*sk.verifying_key());
        let s384: p384::ecdsa::Signature = sk.sign_prehash(&Sha384::digest(b"m")).expect("sign");
        let s256: p384::ecdsa::Signature = sk.sign_prehash(&Sha256::digest(b"m")).expect("sign");
        pk.verify_cosign(b"m", s384.to_der().as_bytes()).expect("sha384");
        pk.verify_cosign(b"m", s256.to_der().as_bytes()).expect("sha256");
        assert!(pk.verify_cosign(b"n", s256.to_der().as_bytes()).is_err());
        // JOSE ES384 uses raw r||s with SHA-384 only.
        pk.verify_jose("ES384", b"m", &s384.to_bytes()).expect("es384");
        assert!(pk.verify_jose("ES384", b"m", &s256.to_bytes()).is_err());
    }

    #[test]
    fn jose_es256_needs_raw_r_and_s_and_the_matching_key_type() {
        let (sk, pk) = p256_key();
        let sig: p256::ecdsa::Signature = sk.sign(b"jws");
        pk.verify_jose("ES256", b"jws", &sig.to_bytes()).expect("raw r||s");
        assert_eq!(
            pk.verify_jose("ES256", b"jws", sig.to_der().as_bytes()),
            Err("ES256 signature is not 64 bytes of r || s".into())
        );
        assert_eq!(
            pk.verify_jose("PS256", b"jws", &sig.to_bytes()),
            Err("algorithm PS256 does not fit the signing key (ECDSA P-256)".into())
        );
        assert_eq!(
            pk.verify_jose("ES512", b"jws", &sig.to_bytes()),
            Err("ES512 (ECDSA P-521) is not supported".into())
        );
        assert_eq!(pk.verify_jose("none", b"jws", b""), Err("unsupported signature algorithm \"none\"".into()));
    }

    /// Fixed test keys (made with `openssl genpkey`): generating RSA keys in a debug build is slow.
    const RSA_2048_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCsEbIXU8H7tr3i\nEysIdOSo9yUj0txvB8bvV/ts8L0d6OoGEQQPwH0szrSy7pMh6xSLt+1mC89KxByB\n+tToN7rXpjmp6IGE248+Z3iNB7b66gPCTeeCrN1j4xrc4IY0k3UAaw3CAotcF5fW\nO/WQHQXTxJdmx3cmQTmlAXNAJW5Enrnq/mq0ehcmf6pmjVDgjV/TXZrYPspqpmsp\nc9qahAgUZwzXYWbjWxhzh81eFeycvUI/2hcFvBDvX303dveJewSdTlWxiHzEv1I4\nri0gX8fXAse4mNFdcsGZRndxj0mgfEcvCDE5CF6Ox3+3QjcFy0TmSiSHvqgbD4CU\nSE5G4c+1AgMBAAECggEAGCh63coRaecIBVHmII+S3AMo+HzeHIuVu1xZrTumfajK\nFJR2gsSmfnA+EAItb51q+svVvZZKYgejLf+avUi3x5ersGZ3qsDNvXf3Bavv3Y4V\n/YWFC8R7586Gory2MvMCAg9FtPe4+7LHS1mLOlLM0uTe0dwO5zTQpFFODlNDBkic\nTeioWIS+gXStN7A8+6vCzkeoqDzvjiOW15+iWF0STqHZrdJ7WIftSPS9vYu8xhJg\n4A1T7TBNqvJQ2/zdHf5YUTNESL6XCWAc+UVbfuDyNg91dTjd2uPzgE3YchiCm/Yd\nuBKhFre/uAExyEhpqYdRdueLFHP9K5FZavARoWcvkQKBgQDuVnR5LyotmN/rON3J\n/cfF+1fSqtjzqqvB90SUmPQDSnflltjl+jTNSuQ9gbtnjuI9IbM9AwUXPQE90rr0\nAabOsn58edbEmfBJLHWoWvDjUQLKpC7mnjfXudukdRZRswDglJOvnd1uHtD1q6rH\n/w2evdUgVV/1WWdCUsOttyCkpQKBgQC40gxOAtgKC0rUCr+/3lIKqYL6JGF7xNZK\nbWXsnruskpA8XxIYFwAHdNfulnUmlPMRIAKdF9w5+u3fLO466jPllD2PKw1vTTMs\nCZpsxJYSKKbBRxGyfz6FAn+fEIF9hGsyPIuNdKqKgNb1u24XXeidJPVONEYZlEWC\nWZlBar/B0QKBgB4wKy6ST8hYvbwAhu8nyt8D1/riEvrCGmFGHZSozvd/vjIBalWu\n3HNIUiKMRR131qYhl59Zu5JW8spO38k6UFOL/kNr900NpobOL9T0N+DDCRR7uUkS\nr0YOz4hEIGCWyLypdQ9gcoSZOKR1avtMDgCWUOF4jt/3xAF9lDVzpZnVAoGAR7H7\n4ftKcUMGKRFuZvDIZKhzTbP1OP0Xn9GmW08MQJquZyz+KOgrM7lI1p35Hhlj3T3M\npcIOxVMpGY0lcSdPMHz8EGDEGmwZMLkc9ZqhGLQ6U/nMzLB9wT1B4qOVh+ppZxiD\njkE2svnd6X9m6pucU/F1U3wFwYB6ImG9iNnvPzECgYEAsKuJfN/n8/7c84zKRITb\nXts2FkDUoCbKweBVPNZxf+8gfztzoc2GHhs75mK8Vt21o3278ReePjhYLntYfiWa\nZAagyxM6so1hoXJpMiMy9wXhM1DH1dpAmEMvQ7TkgOZcQ22ZmjmIJt/2gIL4meRk\nQT1MXCuwjzLs+MITCDV7V30=\n-----END PRIVATE KEY-----\n";
    const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDJhRe3BEoLKB6PjmDHf1pB/I2h\nxUClxljyl2/fQSuSvl9Eyitno87zbQGvaLAfV43sPE2ji21vtcLCAV6WpDXwU+tT\nhpUt1CL0L76T1BH73meEAfH7NHMV7HKv3L8wYqbfIRX4tpDJMGZCRGNnxQbLSU7u\nKdNc2MQG0eZIwPtfpwIDAQAB\n-----END PUBLIC KEY-----\n";

    #[test]
    fn rsa_keys_verify_pkcs1_and_pss_and_small_keys_are_refused() {
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
        let mut rng = test_rng();
        let sk = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_2048_PRIVATE).expect("fixed key");
        let pk = PublicKey::Rsa(sk.to_public_key());
        assert_eq!(pk.rsa_bits(), Some(2048));
        assert_eq!(pk.kind(), "RSA-2048");
        let pkcs1 = rsa::pkcs1v15::SigningKey::<Sha256>::new(sk.clone()).sign(b"p").to_vec();
        pk.verify_cosign(b"p", &pkcs1).expect("pkcs1");
        assert_eq!(pk.verify_cosign(b"q", &pkcs1), Err("signature does not verify".into()));
        let pss256 = rsa::pss::SigningKey::<Sha256>::new(sk.clone()).sign_with_rng(&mut rng, b"p").to_vec();
        pk.verify_cosign(b"p", &pss256).expect("cosign accepts PSS too");
        pk.verify_jose("PS256", b"p", &pss256).expect("ps256");
        let pss = rsa::pss::SigningKey::<Sha384>::new(sk.clone()).sign_with_rng(&mut rng, b"p").to_vec();
        pk.verify_jose("PS384", b"p", &pss).expect("ps384");
        assert_eq!(pk.verify_jose("PS256", b"p", &pss), Err("signature does not verify".into()));
        assert_eq!(
            pk.verify_jose("ES256", b"p", &pss),
            Err("algorithm ES256 does not fit the signing key (RSA-2048)".into())
        );
        assert_eq!(pk.verify_jose("PS256", b"p", &pss[..10]), Err("signature does not verify".into()));
        // Round trip through SPKI.
        assert_eq!(PublicKey::from_spki_der(&pk.spki_der()).expect("der").rsa_bits(), Some(2048));

        assert_eq!(
            PublicKey::from_pem(RSA_1024_PUBLIC.as_bytes()).err(),
            Some("is a 1024-bit RSA key; at least 2048 bits are required".into())
        );
    }

    /// A deterministic RNG is enough for PSS salts in tests.
    fn test_rng() -> impl rsa::rand_core::CryptoRngCore {
        struct Xorshift(u64);
        impl rsa::rand_core::RngCore for Xorshift {
            fn next_u32(&mut self) -> u32 {
                self.next_u64() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                for b in dest {
                    *b = self.next_u64() as u8;
                }
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        impl rsa::rand_core::CryptoRng for Xorshift {}
        Xorshift(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn pem_parsing_reports_what_is_wrong() {
        assert_eq!(PublicKey::from_pem(b"hello").err(), Some("contains no PEM PUBLIC KEY block".into()));
        assert_eq!(
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n").err(),
            Some("PEM block PUBLIC KEY is not terminated".into())
        );
        assert_eq!(
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n").err(),
            Some("PEM block PUBLIC KEY is not valid base64".into())
        );
        assert_eq!(
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").err(),
            Some("is not a DER SubjectPublicKeyInfo".into())
        );
        assert_eq!(
            PublicKey::from_pem(&vector("cosign/containers-image/pki_root_crts.pem")).err(),
            Some("is a certificate, not a PUBLIC KEY".into())
        );
        let two =
            [vector("cosign/containers-image/cosign.pub"), vector("cosign/containers-image/cosign2.pub")].concat();
        assert_eq!(
            PublicKey::from_pem(&two).err(),
            Some("contains 2 PUBLIC KEY blocks; configure one key per entry".into())
        );
        assert!(PublicKey::from_pem(&[0xff, 0xfe]).is_err());
        assert!(PublicKey::from_pem(&vec![b'a'; MAX_PEM_BYTES + 1]).is_err());
    }
}
