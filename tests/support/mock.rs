//! [`MockUpstream`]: a scripted registry for faults a real one cannot
//! produce; [`Reply`] says what it does for one path. [`CountingProxy`]:
//! a counting pass-through in front of the real registry.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{find, sha256_digest, Pushed};

/// What the mock does for one path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal response (`Content-Length` added; no body on HEAD).
    Full { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Advertises the whole `body` in `Content-Length`, sends only the first
    /// `send` bytes, then closes the connection.
    Truncated { status: u16, headers: Vec<(String, String)>, body: Vec<u8>, send: usize },
    /// Waits `delay`, then replies.
    Slow { delay: Duration, reply: Box<Reply> },
    /// Sends the head and the body in pieces of `chunk` bytes, `every` apart.
    Drip { status: u16, headers: Vec<(String, String)>, body: Vec<u8>, chunk: usize, every: Duration },
    /// Accepts and never answers (until the mock is dropped, at most 5 minutes).
    Hang,
    /// Closes the connection without a response.
    Close,
    /// Sends the head without `Content-Length`, then `chunk` again and again
    /// until the client goes away, `max_bytes` are sent, or 60 s pass.
    Endless { status: u16, headers: Vec<(String, String)>, chunk: Vec<u8>, max_bytes: usize },
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full { status, headers: vec![], body: vec![] }
    }
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
    /// A redirect (`status` 301, 302, 303, 307 or 308) to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::Full { status, headers: vec![("Location".into(), location.into())], body: vec![] }
    }
}

#[derive(Default)]
struct MockState {
    routes: HashMap<String, Reply>,
    /// Every request: (method, target including query).
    log: Vec<(String, String)>,
    /// The headers of each request in `log`, same order; names lower-cased.
    headers: Vec<Vec<(String, String)>>,
}

/// A scripted HTTP/1.1 registry on 127.0.0.1. Routes match the request path
/// (query ignored); unknown paths get 404 `MANIFEST_UNKNOWN`/`BLOB_UNKNOWN`;
/// `/v2/` answers 200 unless scripted. One request per connection.
pub struct MockUpstream {
    pub host: String,
    state: Arc<Mutex<MockState>>,
    _acceptor: Acceptor,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let state = Arc::new(Mutex::new(MockState::default()));
        let st = state.clone();
        let acceptor = Acceptor::start(move |conn, stop| mock_serve(conn, st.clone(), stop));
        MockUpstream { host: acceptor.host.clone(), state, _acceptor: acceptor }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Scripts `path` (e.g. `/v2/team-a/app/manifests/v1`).
    pub fn set(&self, path: &str, reply: Reply) {
        self.state.lock().unwrap().routes.insert(path.to_string(), reply);
    }

    /// Serves `bytes` as manifest `repo:reference` with its true digest header.
    pub fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        self.manifest_claiming(repo, reference, media_type, bytes, &sha256_digest(bytes));
    }

    /// Serves `bytes` as manifest `repo:reference` with `Docker-Content-Digest: claimed`.
    pub fn manifest_claiming(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8], claimed: &str) {
        self.set(
            &format!("/v2/{repo}/manifests/{reference}"),
            Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), media_type.into()),
                    ("Docker-Content-Digest".into(), claimed.into()),
                ],
                body: bytes.to_vec(),
            },
        );
    }

    /// Serves `bytes` as blob `digest` of `repo` (which need not be their digest).
    pub fn blob(&self, repo: &str, digest: &str, bytes: &[u8]) {
        self.set(
            &format!("/v2/{repo}/blobs/{digest}"),
            Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("Docker-Content-Digest".into(), digest.into()),
                ],
                body: bytes.to_vec(),
            },
        );
    }

    /// Serves every manifest and blob of `image` under `repo` (manifest also by `tag`).
    pub fn serve_image(&self, repo: &str, tag: &str, image: &Pushed) {
        self.manifest(repo, tag, &image.media_type, &image.manifest);
        self.manifest(repo, &image.digest, &image.media_type, &image.manifest);
        for (d, b) in image.layer_digests.iter().zip(&image.layers) {
            self.blob(repo, d, b);
        }
        if !image.config.is_empty() {
            self.blob(repo, &image.config_digest, &image.config);
        }
    }

    /// How many requests (any method) had this path.
    pub fn count(&self, path: &str) -> usize {
        self.state.lock().unwrap().log.iter().filter(|(_, t)| t.split('?').next() == Some(path)).count()
    }

    /// How many requests had a path starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.state.lock().unwrap().log.iter().filter(|(_, t)| t.starts_with(prefix)).count()
    }

    pub fn total(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// Every request so far: (method, target).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// The headers (names lower-cased) of each request that had this path, in order.
    pub fn request_headers(&self, path: &str) -> Vec<Vec<(String, String)>> {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .zip(&s.headers)
            .filter(|((_, t), _)| t.split('?').next() == Some(path))
            .map(|(_, h)| h.clone())
            .collect()
    }
}

/// A listener on 127.0.0.1 that hands each connection to `serve` on a
/// thread of its own, with the flag that says the owner is gone. Stops
/// accepting on `Drop`.
struct Acceptor {
    host: String,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(serve: impl Fn(TcpStream, Arc<AtomicBool>) + Send + Sync + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (sp, serve) = (stop.clone(), Arc::new(serve));
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (sp, serve) = (sp.clone(), serve.clone());
                thread::spawn(move || serve(conn, sp));
            }
        });
        Acceptor { host, stop, accept: Some(accept) }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.host.parse().unwrap(), Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One request as read off a connection: method, target (with query),
/// headers (names lower-cased) and body.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head at most 1 MiB, body by `Content-Length`).
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let cl: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < cl {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(Request { method, target, headers, body })
}

fn mock_serve(mut conn: TcpStream, state: Arc<Mutex<MockState>>, stop: Arc<AtomicBool>) {
    if stop.load(Ordering::SeqCst) {
        return;
    }
    let Some(Request { method, target, headers, .. }) = read_request(&mut conn) else { return };
    let path = target.split('?').next().unwrap_or_default().to_string();
    let reply = {
        let mut s = state.lock().unwrap();
        s.log.push((method.clone(), target.clone()));
        s.headers.push(headers);
        s.routes.get(&path).cloned()
    };
    let reply = reply.unwrap_or_else(|| {
        if path == "/v2/" || path == "/v2" {
            Reply::json(200, "{}")
        } else {
            let code = if path.contains("/blobs/") { "BLOB_UNKNOWN" } else { "MANIFEST_UNKNOWN" };
            Reply::json(404, &format!(r#"{{"errors":[{{"code":"{code}","message":"not scripted in mock"}}]}}"#))
        }
    });
    mock_reply(&mut conn, &method, reply, &stop);
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_head(conn: &mut TcpStream, status: u16, headers: &[(String, String)], len: usize) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status} {}\r\nConnection: close\r\n", reason(status));
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    h.push_str("\r\n");
    conn.write_all(h.as_bytes())
}

fn mock_reply(conn: &mut TcpStream, method: &str, reply: Reply, stop: &AtomicBool) {
    let head_only = method == "HEAD";
    match reply {
        Reply::Full { status, headers, body } => {
            if write_head(conn, status, &headers, body.len()).is_ok() && !head_only {
                let _ = conn.write_all(&body);
            }
        }
        Reply::Truncated { status, headers, body, send } => {
            if write_head(conn, status, &headers, body.len()).is_ok() && !head_only {
                let _ = conn.write_all(&body[..send.min(body.len())]);
            }
        }
        Reply::Slow { delay, reply } => {
            let until = Instant::now() + delay;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
            }
            if !stop.load(Ordering::SeqCst) {
                mock_reply(conn, method, *reply, stop);
            }
        }
        Reply::Drip { status, headers, body, chunk, every } => {
            if write_head(conn, status, &headers, body.len()).is_err() || head_only {
                return;
            }
            for piece in body.chunks(chunk.max(1)) {
                if stop.load(Ordering::SeqCst) || conn.write_all(piece).is_err() {
                    return;
                }
                let _ = conn.flush();
                thread::sleep(every);
            }
        }
        Reply::Hang => {
            for _ in 0..(5 * 60 * 10) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // Stop early when the client goes away.
                let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                let mut b = [0u8; 1];
                if let Ok(0) = conn.read(&mut b) {
                    break;
                }
            }
        }
        Reply::Close => {}
        Reply::Endless { status, headers, chunk, max_bytes } => {
            let mut h = format!("HTTP/1.1 {status} {}\r\nConnection: close\r\n", reason(status));
            for (k, v) in &headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("\r\n");
            if conn.write_all(h.as_bytes()).is_err() || head_only || chunk.is_empty() {
                return;
            }
            let until = Instant::now() + Duration::from_secs(60);
            let mut sent = 0;
            while sent < max_bytes && Instant::now() < until && !stop.load(Ordering::SeqCst) {
                if conn.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len();
            }
        }
    }
}

/// A pass-through proxy in front of a real registry that counts what reaches
/// it, so a test can count upstream requests on the upstream side (the real
/// `docker-registry` counts nothing; its access log is off in `Registry`).
/// Each request is logged on arrival, held `delay` (so that concurrent
/// requests overlap however fast the registry answers), then sent on with
/// `Connection: close` and its response relayed as it came. One request per
/// connection. When the registry cannot be reached it answers 502.
pub struct CountingProxy {
    pub host: String,
    log: Arc<Mutex<Vec<(String, String)>>>,
    _acceptor: Acceptor,
}

impl CountingProxy {
    pub fn start(upstream_host: &str, delay: Duration) -> CountingProxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lg, up) = (log.clone(), upstream_host.to_string());
        let acceptor = Acceptor::start(move |conn, _| proxy_one(conn, &up, &lg, delay));
        CountingProxy { host: acceptor.host.clone(), log, _acceptor: acceptor }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// How many `method` requests had this path (query ignored).
    pub fn count(&self, method: &str, path: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|(m, t)| m == method && t.split('?').next() == Some(path)).count()
    }

    /// Every request so far: (method, target).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }
}

/// Relays one request to `upstream` and its whole response back (at most
/// 256 MiB, 30 s of silence).
fn proxy_one(mut conn: TcpStream, upstream: &str, log: &Mutex<Vec<(String, String)>>, delay: Duration) {
    let Some(req) = read_request(&mut conn) else { return };
    log.lock().unwrap().push((req.method.clone(), req.target.clone()));
    thread::sleep(delay);
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in req.headers.iter().filter(|(k, _)| k != "connection" && k != "host") {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("host: {upstream}\r\nconnection: close\r\n\r\n"));
    let addr = upstream.parse().expect("upstream is host:port");
    let Ok(mut up) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        let _ = write_head(&mut conn, 502, &[], 0);
        return;
    };
    let _ = up.set_read_timeout(Some(Duration::from_secs(30)));
    if up.write_all(head.as_bytes()).and_then(|_| up.write_all(&req.body)).is_err() {
        return;
    }
    let mut buf = [0u8; 64 * 1024];
    let mut relayed = 0usize;
    while relayed < 256 << 20 {
        match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
                relayed += n;
            }
        }
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}
