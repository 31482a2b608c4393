//! The one DER reader for what x509-parser does not decode for us: the RFC
//! 3161 timestamp token (CMS SignedData) and the raw values of Fulcio's
//! certificate extensions.
//!
//! The token must be walked field by field while keeping the exact bytes of
//! some parts (the signed attributes are re-tagged and verified, the TSTInfo
//! is hashed), which a generic ASN.1 decoder makes awkward. Only definite
//! lengths and single-byte tags are accepted: DER never needs more, and BER
//! leniency is how parser differentials start.

/// One tag-length-value element.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    /// The content octets.
    pub value: &'a [u8],
    /// The whole element, header included.
    pub raw: &'a [u8],
}

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const GENERALIZED_TIME: u8 = 0x18;

/// Reads the first element of `input`, returning it and the rest.
pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not supported".into());
    }
    let (&first, rest) = rest.split_first().ok_or("unexpected end of data in a length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else if first == 0x80 {
        return Err("indefinite lengths are not DER".into());
    } else {
        let n = (first & 0x7f) as usize;
        if n > 4 || rest.len() < n {
            return Err("bad length".into());
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | *b as usize;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("an element runs past the end of the data".into());
    }
    let header = input.len() - rest.len();
    Ok((Tlv { tag, value: &rest[..len], raw: &input[..header + len] }, &rest[len..]))
}

/// Walks the elements inside a constructed value.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    pub fn next(&mut self) -> Result<Tlv<'a>, String> {
        let (t, rest) = read(self.rest)?;
        self.rest = rest;
        Ok(t)
    }

    pub fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.next().map_err(|e| format!("{what}: {e}"))?;
        if t.tag != tag {
            return Err(format!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", t.tag));
        }
        Ok(t)
    }

    /// The next element if it has `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, String> {
        if self.peek_tag() == Some(tag) {
            self.next().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Parses a whole input that must be exactly one element of `tag`.
pub fn exactly<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let (t, rest) = read(input).map_err(|e| format!("{what}: {e}"))?;
    if t.tag != tag {
        return Err(format!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", t.tag));
    }
    if !rest.is_empty() {
        return Err(format!("{what}: trailing data"));
    }
    Ok(t)
}

/// The text of a UTF8String that is the whole of `input`.
pub fn utf8_string(input: &[u8]) -> Option<String> {
    let t = exactly(input, UTF8_STRING, "UTF8String").ok()?;
    std::str::from_utf8(t.value).ok().map(str::to_string)
}

/// Dotted form of an OBJECT IDENTIFIER's content octets.
pub fn oid_string(v: &[u8]) -> Result<String, String> {
    if v.is_empty() {
        return Err("empty OID".into());
    }
    let mut parts: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, b) in v.iter().enumerate() {
        if acc > (u64::MAX >> 8) {
            return Err("OID component too large".into());
        }
        acc = (acc << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let (a, b2) = if acc < 40 {
                    (0, acc)
                } else if acc < 80 {
                    (1, acc - 40)
                } else {
                    (2, acc - 80)
                };
                parts.push(a);
                parts.push(b2);
            } else {
                parts.push(acc);
            }
            acc = 0;
        } else if i == v.len() - 1 {
            return Err("truncated OID".into());
        }
    }
    Ok(parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("."))
}

/// A small non-negative INTEGER.
pub fn small_uint(v: &[u8]) -> Result<u64, String> {
    if v.is_empty() || v.len() > 8 || v[0] & 0x80 != 0 {
        return Err("integer out of range".into());
    }
    Ok(v.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_refuses_truncation_indefinite_lengths_and_trailing_data() {
        assert!(read(&[0x30]).is_err());
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(read(&[0x30, 0x05, 0x01]).is_err());
        assert!(read(&[0x1f, 0x01, 0x00]).is_err());
        assert!(read(&[0x30, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]).is_err());
        assert!(exactly(&[0x04, 0x01, 0xaa, 0x00], OCTET_STRING, "x").is_err());
        let (t, rest) = read(&[0x04, 0x81, 0x01, 0xaa, 0x05]).unwrap();
        assert_eq!((t.tag, t.value, rest), (0x04, &[0xaa][..], &[0x05][..]));
        assert_eq!(
            oid_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]).unwrap(),
            "1.2.840.113549.1.7.2"
        );
        assert!(oid_string(&[0x2a, 0x86]).is_err());
    }

    #[test]
    fn utf8_strings_must_be_exactly_one_well_formed_element() {
        for bad in [&b"\x0c"[..], b"\x0c\x05ab", b"\x0c\x85aaaaa", b"\x04\x01a", b"\x0c\x01a\x00", b"\x0c\x02\xff\xfe"]
        {
            assert_eq!(utf8_string(bad), None);
        }
        assert_eq!(utf8_string(b"\x0c\x02ab").as_deref(), Some("ab"));
        assert_eq!(utf8_string(b"\x0c\x81\x02ab").as_deref(), Some("ab"));
    }
}
