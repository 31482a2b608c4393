//! The notation trust store directory: `x509/{ca,signingAuthority,tsa}/<name>/`
//! holding PEM or DER certificates (`.pem`, `.crt`, `.cer`).
//!
//! Only the named stores the trust policy refers to are read, all at load
//! time, so a missing store, a symlink or a certificate that cannot be a trust
//! anchor is a configuration error reported once, not a refusal on every pull.
//! The bytes read are kept for the configuration fingerprint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chain;
use super::trustpolicy::{PolicyProblem, StoreRef, StoreType};
use crate::verify::x509;

/// A certificate file is small; anything bigger is a mistake.
const MAX_FILE: u64 = 1 << 20;
/// Files per named store, so a wrong path cannot make load read a whole disk.
const MAX_FILES: usize = 1000;

#[derive(Clone, Debug)]
pub struct TrustedCert {
    pub der: Vec<u8>,
    /// `<type>/<name>/<file>`, for messages.
    pub file: String,
    pub subject: String,
}

#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    pub stores: BTreeMap<StoreRef, Vec<TrustedCert>>,
    /// Every file read, by relative path, for the fingerprint.
    pub files: Vec<(String, Vec<u8>)>,
}

impl TrustStore {
    pub fn certs(&self, r: &StoreRef) -> &[TrustedCert] {
        self.stores.get(r).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn problem(out: &mut Vec<PolicyProblem>, at: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
    out.push(PolicyProblem { at: at.into(), message: message.into(), fix: fix.into() });
}

/// Reads the named stores in `refs` under `root`, which is the notation
/// `truststore` directory (the one that contains `x509/`) or `x509/` itself.
pub fn load(root: &Path, refs: &[StoreRef], out: &mut Vec<PolicyProblem>) -> TrustStore {
    let mut ts = TrustStore::default();
    let base = if root.join("x509").is_dir() {
        root.join("x509")
    } else if root.file_name().is_some_and(|n| n == "x509") && root.is_dir() {
        root.to_path_buf()
    } else {
        problem(
            out,
            "(trust store)",
            format!("{} has no x509/ directory", root.display()),
            "point trust_store at notation's truststore directory, the one holding x509/ca/<name>/",
        );
        return ts;
    };
    for r in refs {
        let dir = base.join(r.kind.name()).join(&r.name);
        let at = format!("trust store {r}");
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                problem(
                    out,
                    at,
                    format!("{} is a symbolic link, which notation does not allow for named stores", dir.display()),
                    "replace the link with a real directory",
                );
                continue;
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                problem(
                    out,
                    at,
                    format!("{} is not a directory", dir.display()),
                    "make the named store a directory of certificate files",
                );
                continue;
            }
            Err(_) => {
                problem(
                    out,
                    at,
                    format!("the trust policy names {r}, but {} does not exist", dir.display()),
                    format!(
                        "create {} with the trusted root certificates, or fix the name in trustStores",
                        dir.display()
                    ),
                );
                continue;
            }
        }
        let certs = read_store(&dir, r, &mut ts.files, out);
        if certs.is_empty() {
            problem(
                out,
                format!("trust store {r}"),
                format!("{} holds no certificates", dir.display()),
                "add the trusted root certificates as .pem, .crt or .cer files",
            );
        }
        ts.stores.insert(r.clone(), certs);
    }
    ts
}

fn read_store(
    dir: &PathBuf,
    r: &StoreRef,
    files: &mut Vec<(String, Vec<u8>)>,
    out: &mut Vec<PolicyProblem>,
) -> Vec<TrustedCert> {
    let at = format!("trust store {r}");
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).take(MAX_FILES + 1).collect(),
        Err(e) => {
            problem(out, at, format!("cannot list {}: {e}", dir.display()), "check the directory permissions");
            return Vec::new();
        }
    };
    if entries.len() > MAX_FILES {
        problem(
            out,
            &at,
            format!("{} has more than {MAX_FILES} entries", dir.display()),
            "keep only the trusted root certificates in a named store",
        );
        return Vec::new();
    }
    entries.sort();
    let mut certs = Vec::new();
    for path in entries {
        let fname = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let rel = format!("{}/{}/{}", r.kind.name(), r.name, fname);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                problem(out, &at, format!("cannot read {}: {e}", path.display()), "check the file permissions");
                continue;
            }
        };
        if meta.file_type().is_symlink() {
            problem(
                out,
                &at,
                format!("{} is a symbolic link, which notation does not allow in trust stores", path.display()),
                "copy the certificate file instead of linking it",
            );
            continue;
        }
        if meta.is_dir() {
            // The specification says to ignore subdirectories and warn;
            // notation-go refuses them. A certificate an operator placed there
            // would silently not count, so say so instead.
            problem(
                out,
                &at,
                format!("{} is a subdirectory; certificates in it would not be trusted", path.display()),
                "move its certificates up into the named store, or remove it",
            );
            continue;
        }
        if meta.len() > MAX_FILE {
            problem(
                out,
                &at,
                format!("{} is {} bytes, more than {MAX_FILE}", path.display(), meta.len()),
                "trust stores hold certificates only",
            );
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                problem(out, &at, format!("cannot read {}: {e}", path.display()), "check the file permissions");
                continue;
            }
        };
        match parse_cert_file(&bytes) {
            Ok(ders) => {
                for der in ders {
                    match check_anchor(&der, r.kind) {
                        Ok(subject) => certs.push(TrustedCert { der, file: rel.clone(), subject }),
                        Err(e) => problem(
                            out,
                            &at,
                            format!("{}: {e}", path.display()),
                            "trust stores hold root (or CA) certificates; remove this file",
                        ),
                    }
                }
            }
            Err(e) => problem(out, &at, format!("{}: {e}", path.display()), "store PEM or DER X.509 certificates only"),
        }
        files.push((rel, bytes));
    }
    certs
}

/// PEM (one or more CERTIFICATE blocks) or a single DER certificate.
pub fn parse_cert_file(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let trimmed = bytes.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &bytes[i..]).unwrap_or(&[]);
    if trimmed.starts_with(b"-----BEGIN") {
        let mut out = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| format!("is not valid PEM: {e}"))?;
            if pem.label != "CERTIFICATE" {
                return Err(format!("holds a PEM {:?} block; only CERTIFICATE blocks are allowed", pem.label));
            }
            out.push(pem.contents);
        }
        if out.is_empty() {
            return Err("holds no certificates".into());
        }
        Ok(out)
    } else if bytes.is_empty() {
        Err("is empty".into())
    } else {
        Ok(vec![bytes.to_vec()])
    }
}

/// Notation only trusts CA certificates or self-signed certificates as
/// anchors, and only self-signed CA roots as TSA anchors.
fn check_anchor(der: &[u8], kind: StoreType) -> Result<String, String> {
    let c = chain::parse(der)?;
    let subject = c.go_subject();
    let parsed = c.parsed()?;
    let is_ca = matches!(x509::ca_status(&parsed), Ok(x509::CaStatus::Ca { .. }));
    let self_signed = c.is_self_issued() && x509::check_signature(&parsed, parsed.public_key()).is_ok();
    match kind {
        StoreType::Tsa if !(is_ca && self_signed) => {
            Err(format!("certificate {subject:?} is not a self-signed root CA, which tsa stores require"))
        }
        _ if !(is_ca || self_signed) => Err(format!("certificate {subject:?} is neither a CA nor self-signed")),
        _ => Ok(subject),
    }
}
