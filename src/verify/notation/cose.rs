//! The COSE envelope (`application/cose`): a tagged `COSE_Sign1` whose
//! protected header carries the Notary Project attributes under text labels
//! (times as CBOR tag 1, epoch seconds) and whose chain is the `x5chain`
//! header (label 33), normally unprotected.
//!
//! The signed bytes are the `Sig_structure` built from the protected header
//! bytes exactly as received (coset keeps them), so re-encoding differences
//! cannot change what is verified. coset refuses duplicate header labels.

use coset::cbor::value::Value;
use coset::iana::EnumI64;
use coset::{CoseSign1, Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable};
use time::OffsetDateTime;

use super::envelope::*;

const X5CHAIN: i64 = 33;

pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
    let msg = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("the COSE envelope is not a tagged COSE_Sign1: {e:?}"))?;
    let prot = &msg.protected.header;

    let alg = match &prot.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => a.to_i64(),
        Some(RegisteredLabelWithPrivate::PrivateUse(i)) => *i,
        Some(RegisteredLabelWithPrivate::Text(t)) => return Err(format!("COSE alg {t:?} is not allowed")),
        None => return Err("the COSE protected header has no alg".into()),
    };
    let alg =
        Alg::from_cose(alg).ok_or_else(|| format!("COSE alg {alg} is not allowed (PS256/384/512, ES256/384/512)"))?;

    let payload = msg.payload.clone().ok_or("the COSE payload is detached; notation always embeds it")?;
    let mut env = Envelope::new(alg, payload, msg.tbs_data(&[]), msg.signature.clone());
    env.present.push("1".into());
    for c in &prot.crit {
        env.crit.push(match c {
            RegisteredLabel::Assigned(a) => a.to_i64().to_string(),
            RegisteredLabel::Text(t) => t.clone(),
        });
    }
    match &prot.content_type {
        Some(RegisteredLabel::Text(t)) => {
            env.content_type = Some(t.clone());
            env.present.push("3".into());
        }
        Some(RegisteredLabel::Assigned(a)) => {
            return Err(format!("COSE content type {} is numeric, not {PAYLOAD_CONTENT_TYPE:?}", a.to_i64()))
        }
        None => {}
    }
    if !prot.key_id.is_empty()
        || !prot.iv.is_empty()
        || !prot.partial_iv.is_empty()
        || !prot.counter_signatures.is_empty()
    {
        // Not used by notation; present only to be listed for crit checks.
        env.present.push("other".into());
    }
    let mut chain_value = None;
    for (label, value) in &prot.rest {
        match label {
            Label::Text(name) => {
                match name.as_str() {
                    H_SIGNING_SCHEME => env.scheme_raw = Some(text(name, value)?),
                    H_SIGNING_TIME => env.signing_time = Some(epoch(name, value)?),
                    H_AUTHENTIC_SIGNING_TIME => env.authentic_signing_time = Some(epoch(name, value)?),
                    H_EXPIRY => env.expiry = Some(epoch(name, value)?),
                    H_VERIFICATION_PLUGIN => env.verification_plugin = Some(text(name, value)?),
                    _ => {}
                }
                env.present.push(name.clone());
            }
            Label::Int(i) => {
                if *i == X5CHAIN {
                    chain_value = Some(value);
                }
                env.present.push(i.to_string());
            }
        }
    }
    for (label, value) in &msg.unprotected.rest {
        match label {
            Label::Int(X5CHAIN) => {
                if chain_value.is_some() {
                    return Err("x5chain appears in both the protected and the unprotected header".into());
                }
                chain_value = Some(value);
            }
            Label::Text(name) if name == H_TIMESTAMP_SIGNATURE => match value {
                Value::Bytes(b) => env.timestamp = Some(b.clone()),
                _ => return Err(format!("{H_TIMESTAMP_SIGNATURE} is not a byte string")),
            },
            _ => {}
        }
    }
    match chain_value {
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err("the COSE x5chain is empty".into());
            }
            if items.len() > MAX_CHAIN {
                return Err(format!("the COSE x5chain has {} certificates, more than {MAX_CHAIN}", items.len()));
            }
            for (i, it) in items.iter().enumerate() {
                match it {
                    Value::Bytes(b) => env.chain.push(b.clone()),
                    _ => return Err(format!("x5chain[{i}] is not a byte string")),
                }
            }
        }
        // RFC 9360 allows a lone certificate as a plain byte string.
        Some(Value::Bytes(b)) => env.chain.push(b.clone()),
        Some(_) => return Err("the COSE x5chain is neither an array nor a byte string".into()),
        None => return Err("the COSE envelope has no x5chain (label 33) certificate chain".into()),
    }
    Ok(env)
}

fn text(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::Text(t) => Ok(t.clone()),
        _ => Err(format!("COSE header {name} is not a text string")),
    }
}

/// Notary Project COSE times are tag 1 (epoch-based date/time) with integer
/// seconds.
fn epoch(name: &str, v: &Value) -> Result<OffsetDateTime, String> {
    match v {
        Value::Tag(1, inner) => match inner.as_ref() {
            Value::Integer(i) => {
                let secs = i64::try_from(i128::from(*i)).map_err(|_| format!("COSE header {name} is out of range"))?;
                OffsetDateTime::from_unix_timestamp(secs).map_err(|_| format!("COSE header {name} is out of range"))
            }
            _ => Err(format!("COSE header {name} is not integer epoch seconds")),
        },
        _ => Err(format!("COSE header {name} is not a tag-1 epoch time")),
    }
}
