//! Shared integration-test harness: real processes on 127.0.0.1, all of them
//! killed on `Drop`, all temporary state in `TempDir`s, every wait bounded.
//!
//! - [`Registry`]: the real `docker-registry` (distribution 2.8) on a free port.
//! - Push helpers ([`push_image`], [`push_index`], [`push_multiarch`], [`push_blob`],
//!   [`push_raw_manifest`]): the registry v2 push protocol over plain HTTP.
//! - [`Sigmirror`]: the real binary under test, its stderr kept in a log file.
//! - [`http`] / [`try_http`]: a raw HTTP/1.1 client that reports truncated bodies.
//! - [`Containerd`]: a private containerd with its own root, state and socket; [`hosts_dir`].
//! - [`MockUpstream`]: a scripted registry for faults a real one cannot produce.
//!
//! Everything here is blocking; it is safe to call from `#[test]` and from
//! multi-threaded `#[tokio::test]`s.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// What containerd sends as `Accept` on manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `f` every `every` until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let max_tries = (timeout.as_millis() / every.as_millis().max(1)) as usize + 2;
    for _ in 0..max_tries {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(every);
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Kills (SIGKILL) and reaps a child; ignores "already exited".
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

// ---------------------------------------------------------------------------
// docker-registry
// ---------------------------------------------------------------------------

/// The real `docker-registry` (distribution 2.8) serving from a tempdir.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Child,
    dir: TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = "/usr/bin/docker-registry";
        assert!(Path::new(bin).exists(), "{bin} is missing: apt-get install docker-registry");
        let dir = TempDir::new().unwrap();
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let storage = dir.path().join("storage");
            fs::create_dir_all(&storage).unwrap();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\nhttp:\n  addr: {host}\n",
                storage.display()
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(bin)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut ready = false;
            for _ in 0..400 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(r) = try_http_timeout("GET", &format!("http://{host}/v2/"), &[], &[], Duration::from_secs(2))
                {
                    if r.status == 200 {
                        ready = true;
                        break;
                    }
                }
                if Instant::now() > deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            if ready {
                return Registry { host, child, dir };
            }
            kill_and_reap(&mut child);
            last_log = read_lossy(&log_path);
        }
        panic!("docker-registry did not come up after 5 attempts; last log:\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..5 {
            out.push_str(&read_lossy(&self.dir.path().join(format!("registry-{i}.log"))));
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// Images and pushing
// ---------------------------------------------------------------------------

/// A pushed manifest (image or index) and what it is made of.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub size: u64,
    /// Empty for an index.
    pub layer_digests: Vec<String>,
    /// The bytes of each layer, same order as `layer_digests`.
    pub layers: Vec<Vec<u8>>,
    /// Empty for an index.
    pub config_digest: String,
    pub config: Vec<u8>,
    /// `(os, architecture)` for an image; `("", "")` for an index.
    pub platform: (String, String),
    /// For an index: the platform manifests it lists.
    pub children: Vec<Pushed>,
    /// The file the layer contains (`hello-<seed>.txt`) and its contents.
    pub file: (String, Vec<u8>),
}

/// A POSIX ustar archive with a single regular file.
pub fn tar_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let put_octal = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    put_octal(&mut h, 100, 8, 0o644); // mode
    put_octal(&mut h, 108, 8, 0); // uid
    put_octal(&mut h, 116, 8, 0); // gid
    put_octal(&mut h, 124, 12, contents.len() as u64); // size
    put_octal(&mut h, 136, 12, 1_700_000_000); // mtime
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let chk = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(chk.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(contents);
    let pad = (512 - contents.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// A tiny real image: one uncompressed tar layer holding `hello-<seed>.txt`.
pub fn build_image(seed: &str, arch: &str) -> Pushed {
    let file_name = format!("hello-{seed}.txt");
    let contents = format!("hello from {seed} on linux/{arch}\n").into_bytes();
    let layer = tar_one_file(&file_name, &contents);
    let layer_digest = sha256_digest(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/"], "Cmd": [format!("/{file_name}")], "Labels": { "seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": format!("sigmirror test harness, seed {seed}") }]
    }))
    .unwrap();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() }]
    }))
    .unwrap();
    Pushed {
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
        manifest,
        media_type: OCI_MANIFEST.into(),
        layer_digests: vec![layer_digest],
        layers: vec![layer],
        config_digest,
        config,
        platform: ("linux".into(), arch.into()),
        children: vec![],
        file: (file_name, contents),
    }
}

/// Uploads a blob (monolithic POST + PUT); returns its digest.
pub fn push_blob(host: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let head = http("HEAD", &format!("http://{host}/v2/{repo}/blobs/{digest}"), &[]);
    if head.status == 200 {
        return digest;
    }
    let start = http_body("POST", &format!("http://{host}/v2/{repo}/blobs/uploads/"), &[], &[]);
    assert_eq!(start.status, 202, "start upload to {repo}: {}", start.text());
    let location = start.header("location").expect("upload Location").to_string();
    let location = if location.starts_with('/') { format!("http://{host}{location}") } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http_body(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(put.status, 201, "finish upload of {digest} to {repo}: {}", put.text());
    digest
}

/// PUTs a manifest by tag or digest; returns the digest the registry reports.
pub fn push_raw_manifest(host: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
    let r = http_body(
        "PUT",
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    );
    assert_eq!(r.status, 201, "push manifest {repo}:{reference}: {}", r.text());
    let digest = r.header("docker-content-digest").expect("Docker-Content-Digest").to_string();
    assert_eq!(digest, sha256_digest(bytes), "registry changed the manifest bytes");
    digest
}

/// Pushes blobs and manifest of a built image; `tag` None pushes by digest only.
pub fn push_built(host: &str, repo: &str, tag: Option<&str>, image: &Pushed) {
    for layer in &image.layers {
        push_blob(host, repo, layer);
    }
    if !image.config.is_empty() {
        push_blob(host, repo, &image.config);
    }
    push_raw_manifest(host, repo, tag.unwrap_or(&image.digest), &image.media_type, &image.manifest);
}

/// Pushes a linux/amd64 image as `repo:tag`. Different seeds give different digests.
pub fn push_image(host: &str, repo: &str, tag: &str, seed: &str) -> Pushed {
    push_image_for(host, repo, tag, seed, "amd64")
}

pub fn push_image_for(host: &str, repo: &str, tag: &str, seed: &str, arch: &str) -> Pushed {
    let image = build_image(seed, arch);
    push_built(host, repo, Some(tag), &image);
    image
}

/// Builds an OCI index listing `children` (each with its own platform).
pub fn build_index(children: &[Pushed]) -> Pushed {
    let manifests: Vec<_> = children
        .iter()
        .map(|c| {
            serde_json::json!({
                "mediaType": c.media_type,
                "digest": c.digest,
                "size": c.size,
                "platform": { "os": c.platform.0, "architecture": c.platform.1 }
            })
        })
        .collect();
    let manifest =
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }))
            .unwrap();
    Pushed {
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
        manifest,
        media_type: OCI_INDEX.into(),
        layer_digests: vec![],
        layers: vec![],
        config_digest: String::new(),
        config: vec![],
        platform: (String::new(), String::new()),
        children: children.to_vec(),
        file: (String::new(), vec![]),
    }
}

/// Pushes each platform manifest (by digest) and then the index as `repo:tag`.
pub fn push_index(host: &str, repo: &str, tag: &str, children: &[Pushed]) -> Pushed {
    for c in children {
        push_built(host, repo, None, c);
    }
    let index = build_index(children);
    push_raw_manifest(host, repo, tag, OCI_INDEX, &index.manifest);
    index
}

/// A linux/amd64 + linux/arm64 index as `repo:tag`; platform images in `children`.
pub fn push_multiarch(host: &str, repo: &str, tag: &str, seed: &str) -> Pushed {
    let children = vec![build_image(&format!("{seed}-amd64"), "amd64"), build_image(&format!("{seed}-arm64"), "arm64")];
    push_index(host, repo, tag, &children)
}

// ---------------------------------------------------------------------------
// sigmirror
// ---------------------------------------------------------------------------

/// The sigmirror binary under test, serving from its own tempdir.
pub struct Sigmirror {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: TempDir,
    config_path: PathBuf,
    child: Option<Child>,
    starts: usize,
}

/// A sigmirror config: `listen = 127.0.0.1:0`, `data_dir = "data"`, one default
/// upstream `registry.test` at `upstream_url`, then `rest` (policies etc.) verbatim.
pub fn mirror_config(upstream_url: &str, rest: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[upstream]]\nregistry = \"registry.test\"\nurl = \
         \"{upstream_url}\"\ndefault = true\n\n{rest}\n"
    )
}

/// One `[[policy]]` table.
pub fn policy(name: &str, scope: &[&str], mode: &str) -> String {
    let scope: Vec<String> = scope.iter().map(|s| format!("{s:?}")).collect();
    format!("[[policy]]\nname = {name:?}\nscope = [{}]\nmode = {mode:?}\n", scope.join(", "))
}

impl Sigmirror {
    /// Writes `config_toml` as `sigmirror.toml` in a fresh tempdir and starts the binary.
    pub fn start(config_toml: &str) -> Sigmirror {
        Self::start_in(TempDir::new().unwrap(), config_toml)
    }

    /// Like [`Sigmirror::start`] in a directory the test prepared (trust files etc.).
    pub fn start_in(dir: TempDir, config_toml: &str) -> Sigmirror {
        let config_path = dir.path().join("sigmirror.toml");
        fs::write(&config_path, config_toml).unwrap();
        let mut s = Sigmirror { addr: String::new(), dir, config_path, child: None, starts: 0 };
        s.spawn().unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// Runs `sigmirror serve`; Err (with the logs) when it exits or never prints its address.
    pub fn try_start(config_toml: &str) -> Result<Sigmirror, String> {
        let dir = TempDir::new().unwrap();
        let config_path = dir.path().join("sigmirror.toml");
        fs::write(&config_path, config_toml).unwrap();
        let mut s = Sigmirror { addr: String::new(), dir, config_path, child: None, starts: 0 };
        s.spawn()?;
        Ok(s)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sigmirror.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("SIGMIRROR_LOG", std::env::var("SIGMIRROR_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run sigmirror: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_path = self.dir.path().join(format!("stdout-{}.txt", self.starts));
        thread::spawn(move || {
            let mut copy = fs::File::create(stdout_path).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                kill_and_reap(&mut child);
                return Err(format!(
                    "sigmirror printed no listening line within 20 s; stdout: {seen:?}\nlog:\n{}",
                    self.logs()
                ));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line
                        .strip_prefix("sigmirror listening on http://")
                        .or_else(|| line.strip_prefix("sigmirror listening on https://"))
                    {
                        break rest.trim().to_string();
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!(
                            "sigmirror exited with {status} before listening; stdout: {seen:?}\nlog:\n{}",
                            self.logs()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    return Err(format!(
                        "sigmirror closed stdout (exit {status:?}) before listening; stdout: {seen:?}\nlog:\n{}",
                        self.logs()
                    ));
                }
            }
        };
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process wrote to stderr so far (all runs).
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Waits (bounded) until the log contains `needle`; returns the logs.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        for _ in 0..((timeout.as_millis() / 50) as usize + 2) {
            last = self.logs();
            if last.contains(needle) || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        assert!(last.contains(needle), "sigmirror log never contained {needle:?}; log:\n{last}");
        last
    }

    /// The value of the first `/metrics` line starting with `line_prefix`
    /// (metric name and labels), or 0 when there is none yet.
    pub fn metric(&self, line_prefix: &str) -> u64 {
        let text = http("GET", &format!("{}/metrics", self.url()), &[]).text();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process id of the running binary.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sigmirror is not running").id()
    }

    /// A `/proc/<pid>/status` field in KiB: `VmRSS` (resident now) or
    /// `VmHWM` (the most it was ever resident).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// SIGKILL, as in a crash. The data dir stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops (SIGKILL) if running and starts again on the same address, same
    /// config and data dir. The config's `listen` line is rewritten to the old address.
    pub fn restart(&mut self) {
        self.kill9();
        let text = fs::read_to_string(&self.config_path).unwrap();
        let mut replaced = false;
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if !replaced && l.trim_start().starts_with("listen") && l.contains('=') {
                    replaced = true;
                    format!("listen = \"{}\"", self.addr)
                } else {
                    l.to_string()
                }
            })
            .collect();
        fs::write(&self.config_path, new.join("\n") + "\n").unwrap();
        // The old port may linger briefly; retry a few times.
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(300));
        }
        panic!("sigmirror did not restart on {}: {last}", self.addr);
    }
}

impl Drop for Sigmirror {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() || std::env::var_os("SIGMIRROR_TEST_SHOW_LOGS").is_some() {
            eprintln!("----- sigmirror log ({}) -----\n{}\n----- end -----", self.addr, self.logs());
        }
    }
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

/// A private containerd: own root, state, socket; CRI disabled; native snapshotter.
pub struct Containerd {
    pub socket: PathBuf,
    pub dir: TempDir,
    child: Child,
}

/// A containerd hosts directory for `registry_name` in the fail-closed form:
/// `server` and the only `[host]` are both `mirror` (`host:port`, plain HTTP).
pub fn hosts_dir(registry_name: &str, mirror: &str) -> TempDir {
    let mirror = mirror.trim_start_matches("http://");
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join(registry_name);
    fs::create_dir_all(&sub).unwrap();
    fs::write(
        sub.join("hosts.toml"),
        format!(
            "server = \"http://{mirror}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    dir
}

impl Containerd {
    pub fn start() -> Containerd {
        for bin in ["/usr/bin/containerd", "/usr/bin/ctr"] {
            assert!(Path::new(bin).exists(), "{bin} is missing: apt-get install containerd");
        }
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        for sub in ["root", "state", "opt"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
        );
        let config_path = d.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let mut child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run containerd");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ok = false;
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("containerd exited with {status}:\n{}", read_lossy(&d.join("containerd.log")));
            }
            if socket.exists() {
                let out = Command::new("/usr/bin/ctr").arg("--address").arg(&socket).arg("version").output();
                if out.is_ok_and(|o| o.status.success()) {
                    ok = true;
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if !ok {
            kill_and_reap(&mut child);
            panic!("containerd did not come up in 30 s:\n{}", read_lossy(&d.join("containerd.log")));
        }
        Containerd { socket, dir, child }
    }

    pub fn logs(&self) -> String {
        read_lossy(&self.dir.path().join("containerd.log"))
    }

    /// Runs `ctr` against this containerd in namespace `test` (bounded by `timeout`).
    /// Ok(stdout) on success, Err(stdout + stderr) on failure or timeout.
    pub fn ctr(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let out_dir = TempDir::new().unwrap();
        let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
        let mut child = Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg("test")
            .args(args)
            // `ctr images mount` ignores its --snapshotter flag in 1.6; the env var works.
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("run ctr");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = (read_lossy(&out_path), read_lossy(&err_path));
        match status {
            Some(s) if s.success() => Ok(out),
            Some(s) => Err(format!("ctr {args:?} failed ({s}):\n{out}\n{err}")),
            None => Err(format!("ctr {args:?} timed out after {timeout:?}:\n{out}\n{err}")),
        }
    }

    /// `ctr images pull --snapshotter native --hosts-dir <hosts> <image_ref>` (90 s bound).
    pub fn pull(&self, image_ref: &str, hosts: &Path) -> Result<String, String> {
        let hosts = hosts.to_str().unwrap();
        self.ctr(
            &["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts, image_ref],
            Duration::from_secs(90),
        )
    }

    /// Digest (`sha256:…`) of the image `image_ref` as containerd recorded it.
    pub fn image_digest(&self, image_ref: &str) -> Option<String> {
        let out = self.ctr(&["images", "ls"], Duration::from_secs(20)).ok()?;
        out.lines()
            .filter(|l| l.split_whitespace().next() == Some(image_ref))
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")).map(str::to_string))
    }

    /// Reads `path` from the unpacked snapshots of the native snapshotter (any
    /// snapshot that has it). Proves the layers were unpacked, not only fetched.
    /// (`ctr images mount` in 1.6 ignores `--snapshotter`, so we look on disk.)
    pub fn read_unpacked_file(&self, path: &str) -> Result<Vec<u8>, String> {
        let snaps = self.dir.path().join("root/io.containerd.snapshotter.v1.native/snapshots");
        let entries = fs::read_dir(&snaps).map_err(|e| format!("{}: {e}", snaps.display()))?;
        for e in entries.flatten() {
            if let Ok(b) = fs::read(e.path().join(path.trim_start_matches('/'))) {
                return Ok(b);
            }
        }
        Err(format!("{path} is in no native snapshot under {}", snaps.display()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGTERM first so it releases mounts; SIGKILL if it lingers.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// MockUpstream
// ---------------------------------------------------------------------------

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
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(MockState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, sp) = (st.clone(), sp.clone());
                thread::spawn(move || mock_serve(conn, st, sp));
            }
        });
        MockUpstream { host, state, stop, accept: Some(accept) }
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

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.host.parse().unwrap(), Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn mock_serve(mut conn: TcpStream, state: Arc<Mutex<MockState>>, stop: Arc<AtomicBool>) {
    if stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.len() > 1 << 20 {
            return;
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
    // Drain a request body, if any.
    let cl: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut have = raw.len() - head_end - 4;
    while have < cl {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
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
