//! RFC 3161 timestamps, for Notation countersignatures
//! (`io.cncf.notary.timestampSignature`) and Sigstore bundles alike.
//!
//! The token is a CMS SignedData over a TSTInfo whose message imprint is the
//! hash of the envelope's signature bytes. It proves the signature existed at
//! `genTime ± accuracy` only if: the imprint matches, the CMS signature over
//! the signed attributes verifies with the TSA certificate, the signed
//! attributes bind the TSTInfo (content type, message digest) and the TSA
//! certificate (signingCertificateV2), the TSA chain reaches a trusted root
//! and meets the timestamping profile of `x509` (the Notary Project's TSA
//! certificate rules), and every TSA certificate was valid at `genTime`.
//! Anything else is an error, so an unverifiable timestamp never counts as
//! proof.
//!
//! The same check serves Sigstore bundles (`timestampVerificationData`), whose
//! tokens arrive wrapped in a TimeStampResp ([`token_of_response`]) and whose
//! TSA certificates usually come from `trusted_root.json` rather than the token.

use sha2::Digest as _;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;

use super::der::{self, Reader, Tlv};
use super::x509::{self, Certificate, KeySpec, Profile};

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SIGNING_CERT_V2: &str = "1.2.840.113549.1.9.16.2.47";
const OID_BASELINE_POLICY: &str = "0.4.0.2023.1.1";

/// Bounds on what a token may contain, against resource abuse.
const MAX_TOKEN: usize = 64 << 10;
const MAX_TOKEN_CERTS: usize = 10;

/// A verified timestamp: the TSA's time, the interval the signature provably
/// existed in, and the TSA chain (signer first, trusted root last).
#[derive(Debug)]
pub struct Stamp {
    pub gen_time: OffsetDateTime,
    pub lower: OffsetDateTime,
    pub upper: OffsetDateTime,
    pub chain: Vec<Certificate>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &str) -> Result<Hash, String> {
        match oid {
            "2.16.840.1.101.3.4.2.1" => Ok(Hash::Sha256),
            "2.16.840.1.101.3.4.2.2" => Ok(Hash::Sha384),
            "2.16.840.1.101.3.4.2.3" => Ok(Hash::Sha512),
            "1.3.14.3.2.26" => Err("SHA-1 is not allowed".into()),
            other => Err(format!("hash algorithm {other} is not supported")),
        }
    }

    fn digest(self, b: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(b).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(b).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(b).to_vec(),
        }
    }
}

/// The algorithm OID of an AlgorithmIdentifier.
fn alg_oid(t: &Tlv) -> Result<String, String> {
    let mut r = Reader::new(t.value);
    let oid = r.expect(der::OID, "algorithm identifier")?;
    der::oid_string(oid.value)
}

/// The certificates a timestamp may be anchored in: a notation `tsa` trust
/// store (anchors only), or a Sigstore trusted root's timestamp authority.
pub(crate) struct TsaTrust<'a> {
    /// Trust anchors (DER): the TSA chain must end in one of them (or the TSA
    /// certificate must be one of them, byte for byte).
    pub roots: &'a [&'a [u8]],
    /// Path-building material only (DER), for when the token does not carry
    /// the TSA certificate or its intermediates; trust still comes from `roots`.
    pub intermediates: &'a [&'a [u8]],
    /// What `roots` are, for messages ("tsa trust store").
    pub roots_name: &'a str,
}

/// Verifies `token` (a DER TimeStampToken, i.e. CMS ContentInfo) as an RFC 3161
/// timestamp over `signed`: the message imprint must be the hash of these bytes,
/// and the TSA chain must reach one of `trust.roots`. Returns the verified time.
pub(crate) fn verify(token: &[u8], signed: &[u8], trust: &TsaTrust) -> Result<Stamp, String> {
    if token.len() > MAX_TOKEN {
        return Err(format!("the token is {} bytes, more than {MAX_TOKEN}", token.len()));
    }
    if trust.roots.is_empty() {
        return Err(format!("no {} certificate is configured", trust.roots_name));
    }
    if trust.intermediates.len() > MAX_TOKEN_CERTS {
        return Err(format!("more than {MAX_TOKEN_CERTS} TSA intermediate certificates are configured"));
    }
    let parsed = parse_token(token).map_err(|e| format!("the token is not an RFC 3161 timestamp token: {e}"))?;

    // The TSTInfo must be about this signature.
    let imprint_hash = Hash::from_oid(&parsed.imprint_alg).map_err(|e| format!("message imprint: {e}"))?;
    if imprint_hash.digest(signed) != parsed.imprint {
        return Err("the timestamp's message imprint is not the hash of this signature".into());
    }

    // The signed attributes bind the TSTInfo bytes.
    let digest_hash = Hash::from_oid(&parsed.digest_alg).map_err(|e| format!("signer digest: {e}"))?;
    if parsed.content_type_attr.as_deref() != Some(OID_TST_INFO) {
        return Err("the signed content-type attribute is not id-ct-TSTInfo".into());
    }
    if parsed.message_digest_attr.as_deref() != Some(digest_hash.digest(parsed.tst_info).as_slice()) {
        return Err("the signed message-digest attribute does not match the TSTInfo".into());
    }

    // Find the TSA certificate among the token's certificates and the
    // configured intermediates (a Sigstore TSA leaves its certificate out).
    let certs: Vec<Certificate> = parsed
        .certs
        .iter()
        .chain(trust.intermediates)
        .map(|d| Certificate::parse(d).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let signer = certs
        .iter()
        .find(|c| {
            c.parsed().is_ok_and(|c| match &parsed.sid {
                SignerId::IssuerSerial { issuer, serial } => {
                    c.issuer().as_raw() == *issuer && c.raw_serial() == *serial
                }
                SignerId::Ski(ski) => subject_key_id(&c).as_deref() == Some(*ski),
            })
        })
        .ok_or(if trust.intermediates.is_empty() {
            "the token does not include the TSA's certificate"
        } else {
            "neither the token nor the configured TSA certificates include the TSA's certificate"
        })?;

    // signingCertificateV2 names that certificate by hash.
    let (ess_hash, ess_value) =
        parsed.signing_cert_v2.as_ref().ok_or("the token has no signingCertificateV2 attribute")?;
    if ess_hash.digest(&signer.der) != *ess_value {
        return Err("the signingCertificateV2 attribute does not name the TSA's certificate".into());
    }

    // The CMS signature over the DER SET OF signed attributes.
    verify_cms_signature(signer, &parsed.sig_alg, digest_hash, &parsed.signed_attrs_set, parsed.signature)?;

    // The path to a trusted root: the TSA certificate may be a root itself,
    // or be issued (in Go's sense, as notation-core-go checks a TSA chain)
    // through the other certificates to one. Roots that do not parse anchor
    // nothing. The timestamping rules are then applied to the path in order,
    // so a refusal names the rule rather than "does not chain".
    let roots: Vec<Certificate> = trust.roots.iter().filter_map(|r| Certificate::parse(r).ok()).collect();
    let tsa = Profile::Timestamping;
    let path: Vec<Certificate> =
        match x509::search(signer, &certs, &roots, MAX_TOKEN_CERTS, &|c, i| tsa.check_issued(c, i), &|_, _| Ok(())) {
            Ok(found) => found.path.into_iter().cloned().collect(),
            Err(none) if none.cut_short => return Err("the TSA chain is too long".into()),
            Err(_) => {
                return Err(format!(
                    "the TSA certificate {:?} does not chain to a {} certificate",
                    signer.go_subject(),
                    trust.roots_name
                ))
            }
        };
    x509::check_in_order(&path, &tsa).map_err(|e| format!("TSA certificate chain: {e}"))?;
    for c in &path {
        if x509::check_validity(c, parsed.gen_time).is_err() {
            return Err(format!(
                "TSA certificate {:?} was not valid at the timestamp's time {}",
                c.go_subject(),
                x509::format_time(parsed.gen_time)
            ));
        }
    }

    let accuracy = match parsed.accuracy {
        Some(a) => a,
        // RFC 3628 baseline policy promises one second.
        None if parsed.policy == OID_BASELINE_POLICY => Duration::seconds(1),
        None => Duration::ZERO,
    };
    // Checked: a hostile accuracy near the end of the calendar must not panic.
    let lower = parsed.gen_time.checked_sub(accuracy).ok_or("the timestamp's accuracy is out of range")?;
    let upper = parsed.gen_time.checked_add(accuracy).ok_or("the timestamp's accuracy is out of range")?;
    Ok(Stamp { gen_time: parsed.gen_time, lower, upper, chain: path })
}

/// The TimeStampToken inside a DER `TimeStampResp` (RFC 3161 §2.4.2), which is
/// what a Sigstore bundle's `signedTimestamp` holds. The status must be
/// granted (0) or grantedWithMods (1), and a token must be present.
pub(crate) fn token_of_response(resp: &[u8]) -> Result<&[u8], String> {
    if resp.len() > MAX_TOKEN + 1024 {
        return Err(format!("the response is {} bytes, more than {}", resp.len(), MAX_TOKEN + 1024));
    }
    let seq = der::exactly(resp, der::SEQUENCE, "TimeStampResp").map_err(|e| format!("not a TimeStampResp: {e}"))?;
    let mut r = Reader::new(seq.value);
    let status_info = r.expect(der::SEQUENCE, "PKIStatusInfo").map_err(|e| format!("not a TimeStampResp: {e}"))?;
    let status = der::small_uint(Reader::new(status_info.value).expect(der::INTEGER, "PKIStatus")?.value)
        .map_err(|e| format!("PKIStatus: {e}"))?;
    if status > 1 {
        return Err(format!("the TSA did not grant the timestamp (PKIStatus {status})"));
    }
    let token = r.expect(der::SEQUENCE, "timeStampToken").map_err(|_| "the response has no timeStampToken")?;
    if !r.is_empty() {
        return Err("the TimeStampResp has trailing data".into());
    }
    Ok(token.raw)
}

enum SignerId<'a> {
    IssuerSerial { issuer: &'a [u8], serial: &'a [u8] },
    Ski(&'a [u8]),
}

struct Parsed<'a> {
    tst_info: &'a [u8],
    policy: String,
    imprint_alg: String,
    imprint: Vec<u8>,
    gen_time: OffsetDateTime,
    accuracy: Option<Duration>,
    certs: Vec<&'a [u8]>,
    sid: SignerId<'a>,
    digest_alg: String,
    signed_attrs_set: Vec<u8>,
    content_type_attr: Option<String>,
    message_digest_attr: Option<Vec<u8>>,
    signing_cert_v2: Option<(Hash, Vec<u8>)>,
    sig_alg: String,
    signature: &'a [u8],
}

fn parse_token(token: &[u8]) -> Result<Parsed<'_>, String> {
    let ci = der::exactly(token, der::SEQUENCE, "ContentInfo")?;
    let mut r = Reader::new(ci.value);
    let ct = r.expect(der::OID, "contentType")?;
    if der::oid_string(ct.value)? != OID_SIGNED_DATA {
        return Err("the content is not CMS SignedData".into());
    }
    let explicit = r.expect(0xa0, "content")?;
    let sd = der::exactly(explicit.value, der::SEQUENCE, "SignedData")?;
    let mut r = Reader::new(sd.value);
    r.expect(der::INTEGER, "SignedData.version")?;
    r.expect(der::SET, "digestAlgorithms")?;
    let encap = r.expect(der::SEQUENCE, "encapContentInfo")?;
    let mut er = Reader::new(encap.value);
    let ect = er.expect(der::OID, "eContentType")?;
    if der::oid_string(ect.value)? != OID_TST_INFO {
        return Err("the signed content is not a TSTInfo".into());
    }
    let econtent = er.expect(0xa0, "eContent")?;
    let tst_octets = der::exactly(econtent.value, der::OCTET_STRING, "eContent")?;
    let tst_info = tst_octets.value;

    let mut certs = Vec::new();
    if let Some(cs) = r.optional(0xa0)? {
        let mut cr = Reader::new(cs.value);
        while !cr.is_empty() {
            let c = cr.next()?;
            // Other CertificateChoices (attribute certificates…) are ignored.
            if c.tag == der::SEQUENCE {
                if certs.len() >= MAX_TOKEN_CERTS {
                    return Err(format!("the token carries more than {MAX_TOKEN_CERTS} certificates"));
                }
                certs.push(c.raw);
            }
        }
    }
    r.optional(0xa1)?; // crls
    let sis = r.expect(der::SET, "signerInfos")?;
    let mut sr = Reader::new(sis.value);
    let si = sr.expect(der::SEQUENCE, "SignerInfo")?;
    if !sr.is_empty() {
        return Err("the token has more than one SignerInfo".into());
    }

    let mut r = Reader::new(si.value);
    r.expect(der::INTEGER, "SignerInfo.version")?;
    let sid_t = r.next()?;
    let sid = match sid_t.tag {
        der::SEQUENCE => {
            let mut ir = Reader::new(sid_t.value);
            let issuer = ir.expect(der::SEQUENCE, "issuer")?;
            let serial = ir.expect(der::INTEGER, "serialNumber")?;
            SignerId::IssuerSerial { issuer: issuer.raw, serial: serial.value }
        }
        0x80 => SignerId::Ski(sid_t.value),
        t => return Err(format!("unexpected signer identifier tag 0x{t:02x}")),
    };
    let digest_alg = alg_oid(&r.expect(der::SEQUENCE, "digestAlgorithm")?)?;
    let attrs = r.expect(0xa0, "signedAttrs").map_err(|_| "the SignerInfo has no signed attributes".to_string())?;
    // The signature covers the attributes encoded as a SET OF (tag 0x31),
    // not with the implicit [0] tag they are stored under.
    let mut signed_attrs_set = attrs.raw.to_vec();
    signed_attrs_set[0] = der::SET;
    let sig_alg = alg_oid(&r.expect(der::SEQUENCE, "signatureAlgorithm")?)?;
    let signature = r.expect(der::OCTET_STRING, "signature")?.value;

    let mut content_type_attr = None;
    let mut message_digest_attr = None;
    let mut signing_cert_v2 = None;
    let mut ar = Reader::new(attrs.value);
    let mut seen: Vec<String> = Vec::new();
    while !ar.is_empty() {
        let a = ar.expect(der::SEQUENCE, "Attribute")?;
        let mut r = Reader::new(a.value);
        let oid = der::oid_string(r.expect(der::OID, "attrType")?.value)?;
        if seen.contains(&oid) {
            return Err(format!("signed attribute {oid} appears twice"));
        }
        seen.push(oid.clone());
        let vals = r.expect(der::SET, "attrValues")?;
        let (first, more) = der::read(vals.value)?;
        if !more.is_empty() {
            return Err(format!("signed attribute {oid} has more than one value"));
        }
        match oid.as_str() {
            OID_CONTENT_TYPE => {
                if first.tag != der::OID {
                    return Err("the content-type attribute is not an OID".into());
                }
                content_type_attr = Some(der::oid_string(first.value)?);
            }
            OID_MESSAGE_DIGEST => {
                if first.tag != der::OCTET_STRING {
                    return Err("the message-digest attribute is not an OCTET STRING".into());
                }
                message_digest_attr = Some(first.value.to_vec());
            }
            OID_SIGNING_CERT_V2 => signing_cert_v2 = Some(parse_signing_cert_v2(first)?),
            _ => {}
        }
    }

    // TSTInfo
    let tst = der::exactly(tst_info, der::SEQUENCE, "TSTInfo")?;
    let mut r = Reader::new(tst.value);
    let version = der::small_uint(r.expect(der::INTEGER, "TSTInfo.version")?.value)?;
    if version != 1 {
        return Err(format!("TSTInfo version {version} is not 1"));
    }
    let policy = der::oid_string(r.expect(der::OID, "TSTInfo.policy")?.value)?;
    let mi = r.expect(der::SEQUENCE, "messageImprint")?;
    let mut mr = Reader::new(mi.value);
    let imprint_alg = alg_oid(&mr.expect(der::SEQUENCE, "hashAlgorithm")?)?;
    let imprint = mr.expect(der::OCTET_STRING, "hashedMessage")?.value.to_vec();
    r.expect(der::INTEGER, "serialNumber")?;
    let gen_time = generalized_time(r.expect(der::GENERALIZED_TIME, "genTime")?.value)?;
    let accuracy = match r.optional(der::SEQUENCE)? {
        Some(acc) => Some(parse_accuracy(acc.value)?),
        None => None,
    };
    Ok(Parsed {
        tst_info,
        policy,
        imprint_alg,
        imprint,
        gen_time,
        accuracy,
        certs,
        sid,
        digest_alg,
        signed_attrs_set,
        content_type_attr,
        message_digest_attr,
        signing_cert_v2,
        sig_alg,
        signature,
    })
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, … }`;
/// the first ESSCertIDv2 identifies the signer (RFC 5035).
fn parse_signing_cert_v2(v: Tlv) -> Result<(Hash, Vec<u8>), String> {
    if v.tag != der::SEQUENCE {
        return Err("signingCertificateV2 is not a SEQUENCE".into());
    }
    let mut r = Reader::new(v.value);
    let certs = r.expect(der::SEQUENCE, "signingCertificateV2.certs")?;
    let mut cr = Reader::new(certs.value);
    let first = cr.expect(der::SEQUENCE, "ESSCertIDv2")?;
    let mut er = Reader::new(first.value);
    let hash = match er.optional(der::SEQUENCE)? {
        Some(alg) => Hash::from_oid(&alg_oid(&alg)?)?,
        None => Hash::Sha256,
    };
    let value = er.expect(der::OCTET_STRING, "certHash")?.value.to_vec();
    Ok((hash, value))
}

fn parse_accuracy(v: &[u8]) -> Result<Duration, String> {
    let mut r = Reader::new(v);
    let mut d = Duration::ZERO;
    if let Some(s) = r.optional(der::INTEGER)? {
        d += Duration::seconds(der::small_uint(s.value)?.min(1 << 32) as i64);
    }
    if let Some(ms) = r.optional(0x80)? {
        d += Duration::milliseconds(der::small_uint(ms.value)?.min(999) as i64);
    }
    if let Some(us) = r.optional(0x81)? {
        d += Duration::microseconds(der::small_uint(us.value)?.min(999) as i64);
    }
    Ok(d)
}

/// `YYYYMMDDHHMMSS[.f+]Z`, the only GeneralizedTime form RFC 3161 allows.
fn generalized_time(v: &[u8]) -> Result<OffsetDateTime, String> {
    let s = std::str::from_utf8(v).map_err(|_| "genTime is not ASCII")?;
    let s = s.strip_suffix('Z').ok_or("genTime is not in UTC")?;
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("genTime {s:?} is malformed"));
    }
    let n = |a: usize, b: usize| main[a..b].parse::<u32>().map_err(|_| "genTime is malformed".to_string());
    let month = time::Month::try_from(n(4, 6)? as u8).map_err(|_| "genTime month is out of range")?;
    let date = time::Date::from_calendar_date(n(0, 4)? as i32, month, n(6, 8)? as u8)
        .map_err(|_| "genTime date is out of range")?;
    let mut nanos = 0u32;
    if let Some(f) = frac {
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err("genTime fraction is malformed".into());
        }
        nanos = format!("{f:0<9}").parse::<u32>().map_err(|_| "genTime fraction is malformed")?;
    }
    let t = time::Time::from_hms_nano(n(8, 10)? as u8, n(10, 12)? as u8, n(12, 14)? as u8, nanos)
        .map_err(|_| "genTime time is out of range")?;
    Ok(time::PrimitiveDateTime::new(date, t).assume_utc())
}

fn subject_key_id(c: &X509Certificate) -> Option<Vec<u8>> {
    c.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// Verifies the SignerInfo signature over the signed attributes with the TSA
/// certificate's key. RSA PKCS#1 v1.5 and ECDSA (P-256, P-384) are what TSAs
/// use; the hash is the SignerInfo's digest algorithm.
fn verify_cms_signature(signer: &Certificate, sig_alg: &str, hash: Hash, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    let digest = hash.digest(msg);
    let spki_der = signer.spki_der();
    let spki = spki_der.as_slice();
    let bad = || "the TSA's signature over the timestamp does not verify".to_string();
    match sig_alg {
        // rsaEncryption, or sha{256,384,512}WithRSAEncryption agreeing with the digest.
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.11" | "1.2.840.113549.1.1.12" | "1.2.840.113549.1.1.13" => {
            let named = match sig_alg {
                "1.2.840.113549.1.1.11" => Some(Hash::Sha256),
                "1.2.840.113549.1.1.12" => Some(Hash::Sha384),
                "1.2.840.113549.1.1.13" => Some(Hash::Sha512),
                _ => None,
            };
            if named.is_some_and(|h| h != hash) {
                return Err("the signature algorithm's hash differs from the digest algorithm".into());
            }
            use rsa::pkcs8::DecodePublicKey;
            let key = rsa::RsaPublicKey::from_public_key_der(spki)
                .map_err(|e| format!("the TSA's RSA key does not parse: {e}"))?;
            let scheme = match hash {
                Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            key.verify(scheme, &digest, sig).map_err(|_| bad())
        }
        "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3" | "1.2.840.10045.4.3.4" | "1.2.840.10045.2.1" => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            match signer.key_spec()? {
                KeySpec::Ec(256) => {
                    use p256::pkcs8::DecodePublicKey;
                    let k = p256::ecdsa::VerifyingKey::from_public_key_der(spki)
                        .map_err(|e| format!("the TSA's EC key does not parse: {e}"))?;
                    let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                    k.verify_prehash(&digest, &s).map_err(|_| bad())
                }
                KeySpec::Ec(384) => {
                    use p384::pkcs8::DecodePublicKey;
                    let k = p384::ecdsa::VerifyingKey::from_public_key_der(spki)
                        .map_err(|e| format!("the TSA's EC key does not parse: {e}"))?;
                    let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
                    k.verify_prehash(&digest, &s).map_err(|_| bad())
                }
                other => Err(format!("TSA key {other} is not supported")),
            }
        }
        other => Err(format!("TSA signature algorithm {other} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times_parse_with_and_without_fractions_and_refuse_local_time() {
        assert_eq!(x509::format_time(generalized_time(b"20240618072138Z").unwrap()), "2024-06-18T07:21:38Z");
        assert_eq!(generalized_time(b"20240618072138.25Z").unwrap().nanosecond(), 250_000_000);
        assert!(generalized_time(b"20240618072138").is_err());
        assert!(generalized_time(b"20241318072138Z").is_err());
        assert!(generalized_time(b"2024061807213Z").is_err());
        assert!(generalized_time(b"20240618072138.Z").is_err());
    }

    #[test]
    fn accuracy_is_seconds_millis_and_micros() {
        // seconds 2, millis [0] 5, micros [1] 7
        let acc = [0x02, 0x01, 0x02, 0x80, 0x01, 0x05, 0x81, 0x01, 0x07];
        assert_eq!(
            parse_accuracy(&acc).unwrap(),
            Duration::seconds(2) + Duration::milliseconds(5) + Duration::microseconds(7)
        );
        assert!(parse_accuracy(&[0x02, 0x01, 0xff]).is_err());
    }

    #[test]
    fn garbage_tokens_are_refused_without_panicking() {
        let root: &[u8] = &[0x30, 0x00];
        let trust = TsaTrust { roots: &[root], intermediates: &[], roots_name: "tsa trust store" };
        for t in [&b""[..], b"\x30", b"\x30\x03\x06\x01\x00", b"\x30\x80\x00\x00", &[0x30; 64][..]] {
            assert!(verify(t, b"sig", &trust).is_err());
            assert!(token_of_response(t).is_err());
        }
    }
}
