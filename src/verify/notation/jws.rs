//! The JWS envelope (`application/jose+json`): flattened JWS JSON
//! serialization with the Notary Project's protected header and the
//! certificate chain in the unprotected `x5c`.
//!
//! The signing input is the two base64url strings exactly as stored, joined
//! by ".", so nothing is re-encoded. The protected header is parsed with
//! duplicate keys refused: two `alg` or `crit` values would let two readers
//! disagree about what was signed.

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::crypto::{b64_std, b64_url};
use super::envelope::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJws {
    payload: String,
    protected: String,
    header: RawUnprotected,
    signature: String,
}

#[derive(Deserialize)]
struct RawUnprotected {
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default, rename = "io.cncf.notary.timestampSignature")]
    timestamp: Option<String>,
}

/// A JSON object whose keys are all distinct, in document order.
struct UniqueObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueObject, A::Error> {
                let mut v: Vec<(String, Value)> = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, Value>()? {
                    if v.iter().any(|(x, _)| *x == k) {
                        return Err(A::Error::custom(format!("key {k:?} appears twice")));
                    }
                    v.push((k, val));
                }
                Ok(UniqueObject(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Decodes a JWS envelope. Errors are integrity failures: the envelope is
/// not something notation would have produced.
pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
    let raw: RawJws = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JWS envelope is not valid JSON of the expected shape: {e}"))?;
    let protected = b64_url(&raw.protected).map_err(|e| format!("the JWS protected header is not base64url: {e}"))?;
    let payload = b64_url(&raw.payload).map_err(|e| format!("the JWS payload is not base64url: {e}"))?;
    let signature = b64_url(&raw.signature).map_err(|e| format!("the JWS signature is not base64url: {e}"))?;
    let header: UniqueObject = serde_json::from_slice(&protected)
        .map_err(|e| format!("the JWS protected header is not a JSON object: {e}"))?;

    let mut alg = None;
    // The alg is set from the header below; PS256 is only a placeholder.
    let signed_bytes = format!("{}.{}", raw.protected, raw.payload).into_bytes();
    let mut env = Envelope::new(Alg::Ps256, payload, signed_bytes, signature);
    for (k, v) in header.0 {
        match k.as_str() {
            "alg" => {
                let s = string(&k, &v)?;
                alg = Some(
                    Alg::from_jose(s)
                        .ok_or_else(|| format!("JWS alg {s:?} is not allowed (PS256/384/512, ES256/384/512)"))?,
                );
            }
            "cty" => env.content_type = Some(string(&k, &v)?.to_string()),
            "crit" => {
                let arr = v.as_array().ok_or("JWS crit is not an array")?;
                for c in arr {
                    env.crit.push(c.as_str().ok_or("JWS crit has a non-string entry")?.to_string());
                }
            }
            H_SIGNING_SCHEME => env.scheme_raw = Some(string(&k, &v)?.to_string()),
            H_SIGNING_TIME => env.signing_time = Some(time_of(&k, &v)?),
            H_AUTHENTIC_SIGNING_TIME => env.authentic_signing_time = Some(time_of(&k, &v)?),
            H_EXPIRY => env.expiry = Some(time_of(&k, &v)?),
            H_VERIFICATION_PLUGIN => env.verification_plugin = Some(string(&k, &v)?.to_string()),
            _ => {}
        }
        env.present.push(k);
    }
    env.alg = alg.ok_or("the JWS protected header has no alg")?;

    let x5c = raw.header.x5c.ok_or("the JWS unprotected header has no x5c certificate chain")?;
    if x5c.is_empty() {
        return Err("the JWS x5c certificate chain is empty".into());
    }
    if x5c.len() > MAX_CHAIN {
        return Err(format!("the JWS x5c chain has {} certificates, more than {MAX_CHAIN}", x5c.len()));
    }
    for (i, c) in x5c.iter().enumerate() {
        env.chain.push(b64_std(c).map_err(|e| format!("x5c[{i}] is not base64: {e}"))?);
    }
    if let Some(ts) = raw.header.timestamp {
        env.timestamp = Some(b64_std(&ts).map_err(|e| format!("{H_TIMESTAMP_SIGNATURE} is not base64: {e}"))?);
    }
    Ok(env)
}

fn string<'a>(k: &str, v: &'a Value) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("JWS header {k} is not a string"))
}

fn time_of(k: &str, v: &Value) -> Result<OffsetDateTime, String> {
    let s = string(k, v)?;
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| format!("JWS header {k} is not an RFC 3339 time: {s:?}"))
}
