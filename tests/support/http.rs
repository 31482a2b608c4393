//! A raw HTTP/1.1 client ([`http`], [`try_http`] and friends) that reports
//! truncated bodies, and the [`Response`] it returns.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::find;

/// One HTTP response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when the connection ended before the body did (short
    /// `Content-Length`, no terminating chunk, or a reset / read error).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}); status {}: {}", self.status, self.text()))
    }
    /// `errors[0].code` of an OCI error body, if it is one.
    pub fn oci_error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["errors"][0]["code"].as_str()?.to_string())
    }
    pub fn oci_error_message(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["errors"][0]["message"].as_str()?.to_string())
    }
}

/// Splits `http://host:port/path?q` into (`host:port`, `/path?q`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("only http:// URLs are supported: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
/// `Err` only when no response head could be read at all.
pub fn try_http_body(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
    try_http_timeout(method, url, headers, body, Duration::from_secs(60))
}

pub fn try_http_timeout(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let (host, target) = split_url(url);
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {host}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).map_err(|e| format!("write request to {host}: {e}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut read_error = None;
    let deadline = Instant::now() + timeout;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
        if Instant::now() > deadline {
            read_error = Some("client deadline".into());
            break;
        }
    }
    parse_response(&raw, method == "HEAD", read_error)
}

fn parse_response(raw: &[u8], head_request: bool, read_error: Option<String>) -> Result<Response, String> {
    let mut raw = raw;
    loop {
        let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
            format!(
                "no complete response head ({} bytes; read error: {:?}): {:?}",
                raw.len(),
                read_error,
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        })?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let rest = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (body, complete) = if head_request || status == 204 || status == 304 {
            (Vec::new(), true)
        } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)
        } else if let Some(cl) = get("content-length") {
            let cl: usize = cl.parse().map_err(|_| format!("bad content-length {cl:?}"))?;
            if rest.len() >= cl {
                (rest[..cl].to_vec(), true)
            } else {
                (rest.to_vec(), false)
            }
        } else {
            (rest.to_vec(), read_error.is_none())
        };
        return Ok(Response { status, headers, body, complete });
    }
}

/// Decodes a chunked body; `complete` only when the terminating chunk arrived.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else { return (body, false) };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { return (body, false) };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

pub fn try_http(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    try_http_body(method, url, headers, &[])
}

/// Like [`try_http`], panicking when there is no response at all.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    try_http(method, url, headers).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub fn http_body(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_http_body(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}
