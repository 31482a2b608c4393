//! The soak (issue 11): the real `docker-registry` and the real sigmirror
//! binary (the release build when `SIGMIRROR_BIN` names it, as
//! `scripts/soak` does), mixed concurrent traffic for `SOAK_SECS`, and the
//! process's resident memory, file descriptors, threads and tokio tasks
//! sampled every few seconds into `SOAK_OUT/soak.csv` (and plotted in
//! `soak.svg`).
//!
//! Every answer is checked against what that request must get: signed
//! pulls by tag and by digest `200` with bytes that hash to their digest,
//! unsigned pulls `403 DENIED` with no byte of the unsigned manifest or
//! layer, the pinned tag its first digest until it moves upstream and then
//! `403` naming the pin, the mutable tag one of the signed digests it was
//! moved to, and the hostile clients (slowloris, oversized heads, invalid
//! names, a foreign `ns=`, connection floods past `max_connections`) their
//! limit's answer. A request that meets a flood may be answered `503` with
//! `Retry-After`; it retries, and that is counted, not an error.
//!
//! Growth is judged after a warm-up (a tenth of the run, at least 5 s): the
//! median of the last third of the samples against the median of the first
//! third. RSS fails past both +25% and +16 MiB (both, so neither allocator
//! noise on a small heap nor proportional noise on a large one fails it),
//! fds past +50% and +32, tasks past +100% and +100 (they follow the
//! requests in flight), threads past +32 (tokio's blocking pool comes and
//! goes). Bounded caches fill during the first third; a leak keeps going.
//!
//! Ignored by `cargo test` (it runs for minutes); `scripts/soak` runs it.
#[path = "support/signing.rs"]
mod signing;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use signing::*;
use support::*;

const NS: &str = "registry.test";
const SIGNED: &str = "soak/signed";
const UNSIGNED: &str = "soak/unsigned";
const MAX_CONNECTIONS: usize = 64;
const HEADER_READ_TIMEOUT_SECS: u64 = 3;
/// How many errors are kept word for word; all are counted.
const KEPT_ERRORS: usize = 50;
/// Threads pulling at once (besides the pusher, the hostile client and the sampler).
const PULLERS: usize = 6;

/// An image the mirror must serve, and what it is made of.
#[derive(Clone)]
struct Image {
    digest: String,
    /// `(digest, bytes)` of the config and each layer.
    blobs: Vec<(String, usize)>,
    tag: String,
}

impl Image {
    fn of(p: &Pushed, tag: &str) -> Image {
        let mut blobs = vec![(p.config_digest.clone(), p.config.len())];
        blobs.extend(p.layer_digests.iter().cloned().zip(p.layers.iter().map(Vec::len)));
        Image { digest: p.digest.clone(), blobs, tag: tag.to_string() }
    }
}

/// What every request is checked against; grows as the pusher pushes.
struct World {
    mirror: String,
    signed: Mutex<Vec<Image>>,
    /// Every digest `latest` was ever moved to (all signed).
    latest: Mutex<HashSet<String>>,
    pinned: String,
    /// Set just before the pinned tag is first re-pushed upstream.
    pinned_moved: AtomicBool,
    /// Unsigned images: manifest and layer bytes that must never go out.
    unsigned: Mutex<Vec<Pushed>>,
    deadline: Instant,
    tally: Tally,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    kept: Mutex<Vec<String>>,
    /// Answers by what was asked and what came, e.g. `signed-manifest 200`.
    by_kind: Mutex<BTreeMap<String, u64>>,
    /// Answers `503` over `max_connections` that a request retried.
    busy: AtomicU64,
    blob_bytes_verified: AtomicU64,
}

impl Tally {
    fn count(&self, kind: &str, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.by_kind.lock().unwrap().entry(format!("{kind} {status}")).or_default() += 1;
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap();
        if kept.len() < KEPT_ERRORS {
            eprintln!("soak error: {what}");
            kept.push(what);
        }
    }
}

impl World {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?ns={NS}", self.mirror)
    }

    /// One GET, retried while the mirror answers `503` over
    /// `max_connections` (a flood is on); `None`, with the error counted,
    /// when no answer came.
    fn get(&self, kind: &str, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        let url = self.url(path);
        for _ in 0..100 {
            let r = match try_http_timeout("GET", &url, headers, &[], Duration::from_secs(30)) {
                Ok(r) => r,
                Err(e) => {
                    self.tally.count(kind, 0);
                    self.tally.error(format!("{kind} GET {path}: no answer: {e}"));
                    return None;
                }
            };
            self.tally.count(kind, r.status);
            if r.status == 503 && r.oci_error_message().is_some_and(|m| m.contains("(limits.max_connections)")) {
                self.tally.busy.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            self.check_never_unsigned(kind, path, &r);
            return Some(r);
        }
        self.tally.error(format!("{kind} GET {path}: 100 answers 503 in a row"));
        None
    }

    /// No answer to anything may carry an unsigned manifest or layer.
    fn check_never_unsigned(&self, kind: &str, path: &str, r: &Response) {
        if r.body.is_empty() {
            return;
        }
        let unsigned = self.unsigned.lock().unwrap();
        for u in unsigned.iter() {
            let leaked = r.body == u.manifest || u.layers.iter().any(|l| r.body.len() >= 512 && l.starts_with(&r.body));
            if leaked {
                self.tally.error(format!("{kind} GET {path}: served bytes of unsigned image {}", u.digest));
            }
        }
    }

    fn expect(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.tally.error(what());
        }
    }

    /// A manifest answer that must be `200` with `digest` (or, for `None`,
    /// any digest in `allowed`), whose bytes hash to it.
    fn check_manifest(&self, kind: &str, path: &str, r: &Response, allowed: &dyn Fn(&str) -> bool) {
        let header = r.header("docker-content-digest").unwrap_or("");
        let actual = sha256_digest(&r.body);
        self.expect(r.status == 200 && r.complete, || format!("{kind} {path}: {} {}", r.status, r.text()));
        self.expect(r.status != 200 || (actual == header && allowed(&actual)), || {
            format!("{kind} {path}: served {actual} (header {header}), not what may be served")
        });
    }

    fn check_blob(&self, kind: &str, repo: &str, digest: &str, len: usize) {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let Some(r) = self.get(kind, &path, &[]) else { return };
        let actual = sha256_digest(&r.body);
        self.expect(r.status == 200 && r.complete && actual == digest && r.body.len() == len, || {
            format!("{kind} {path}: {} complete={} {} bytes hashing to {actual}", r.status, r.complete, r.body.len())
        });
        if actual == digest {
            self.tally.blob_bytes_verified.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    fn check_refused(&self, kind: &str, path: &str, r: &Response, reason: &str) {
        let message = r.oci_error_message().unwrap_or_default();
        self.expect(
            r.status == 403 && r.oci_error_code().as_deref() == Some("DENIED") && message.contains(reason),
            || format!("{kind} {path}: expected 403 DENIED ({reason}), got {} {}", r.status, r.text()),
        );
    }
}

/// Pulls signed images by tag and by digest, manifest then every blob.
fn signed_puller(w: &World, n: usize) {
    let mut i = n;
    while w.running() {
        let image = {
            let signed = w.signed.lock().unwrap();
            // Every fourth pull takes the newest image: its blobs are cold.
            if i.is_multiple_of(4) { signed.last() } else { signed.get(i % signed.len()) }.cloned()
        };
        let Some(image) = image else { return };
        i += PULLERS;
        let reference = if i.is_multiple_of(2) { image.tag.clone() } else { image.digest.clone() };
        let path = format!("/v2/{SIGNED}/manifests/{reference}");
        let Some(r) = w.get("signed-manifest", &path, &[("Accept", MANIFEST_ACCEPT)]) else { continue };
        w.check_manifest("signed-manifest", &path, &r, &|d| d == image.digest);
        if r.status != 200 {
            // Counted already; its blobs are rightly refused after it.
            continue;
        }
        for (digest, len) in &image.blobs {
            w.check_blob("signed-blob", SIGNED, digest, *len);
        }
    }
}

/// `latest`, moved among signed images, and the pinned tag, moved upstream once in a while.
fn tag_puller(w: &World) {
    while w.running() {
        let path = format!("/v2/{SIGNED}/manifests/latest");
        if let Some(r) = w.get("latest", &path, &[("Accept", MANIFEST_ACCEPT)]) {
            let latest = w.latest.lock().unwrap().clone();
            w.check_manifest("latest", &path, &r, &|d| latest.contains(d));
        }
        let path = format!("/v2/{SIGNED}/manifests/pinned");
        // Read before the request: a move pushed after this can only make a 403 newly right.
        let moved = w.pinned_moved.load(Ordering::SeqCst);
        let Some(r) = w.get("pinned", &path, &[("Accept", MANIFEST_ACCEPT)]) else { continue };
        let moved = moved || w.pinned_moved.load(Ordering::SeqCst);
        if r.status == 403 {
            let reason = format!("tag pinned of {SIGNED} was pinned to {}", w.pinned);
            w.expect(moved, || format!("pinned: refused before it moved: {}", r.text()));
            w.check_refused("pinned", &path, &r, &reason);
        } else {
            w.check_manifest("pinned", &path, &r, &|d| d == w.pinned);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Unsigned images by tag and digest, and their layers: refused, always.
fn unsigned_puller(w: &World) {
    let mut i = 0;
    while w.running() {
        let u = {
            let unsigned = w.unsigned.lock().unwrap();
            unsigned[i % unsigned.len()].clone()
        };
        i += 1;
        // Each unsigned image is pushed with its seed as its tag.
        let tag = u.file.0.trim_start_matches("hello-").trim_end_matches(".txt").to_string();
        for reference in [tag, u.digest.clone()] {
            let path = format!("/v2/{UNSIGNED}/manifests/{reference}");
            if let Some(r) = w.get("unsigned-manifest", &path, &[("Accept", MANIFEST_ACCEPT)]) {
                w.check_refused("unsigned-manifest", &path, &r, "no cosign signature found");
            }
        }
        let path = format!("/v2/{UNSIGNED}/blobs/{}", u.layer_digests[0]);
        if let Some(r) = w.get("unsigned-blob", &path, &[]) {
            w.check_refused("unsigned-blob", &path, &r, "is not referenced by any manifest this policy allowed");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Pushes what the others pull: a new signed image (new, cold blobs) every
/// 3 s, `latest` moved every 6 s, a new unsigned image every 9 s, and the
/// pinned tag moved every 21 s.
///
/// The tags move to images of their own, never to one the signed pullers
/// fetch: distribution's filesystem driver rewrites a manifest's revision
/// link in place when it is tagged again, and a read of that digest at the
/// same moment fails with `500 invalid checksum digest format` (seen in the
/// first 10-minute run), which sigmirror rightly refuses as an upstream
/// failure.
fn pusher(w: &World, registry: &str, key: &CosignKey) {
    let started = Instant::now();
    let mut n = 0u64;
    while w.running() {
        n += 1;
        let seed = format!("soak-{n}-{}", std::process::id());
        let tag = format!("c{n}");
        let image = signed_image(registry, key, &seed, Some(&tag));
        w.signed.lock().unwrap().push(Image::of(&image, &tag));
        if n.is_multiple_of(2) {
            // `latest` moves to a signed image; it may be served once it is in the set.
            let latest = signed_image(registry, key, &format!("latest-{seed}"), None);
            w.latest.lock().unwrap().insert(latest.digest.clone());
            push_raw_manifest(registry, SIGNED, "latest", &latest.media_type, &latest.manifest);
        }
        if n.is_multiple_of(3) {
            let u = build_image(&format!("unsigned-{n}"), "amd64");
            push_built(registry, UNSIGNED, Some(&format!("unsigned-{n}")), &u);
            w.unsigned.lock().unwrap().push(u);
        }
        if n.is_multiple_of(7) {
            let moved = signed_image(registry, key, &format!("pinned-{seed}"), None);
            w.pinned_moved.store(true, Ordering::SeqCst);
            push_raw_manifest(registry, SIGNED, "pinned", &moved.media_type, &moved.manifest);
        }
        let next = started + Duration::from_secs(3 * n);
        while w.running() && Instant::now() < next {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A new image of a 64 KiB-and-some layer, pushed as `tag` (or by digest
/// only) and signed by `key`.
fn signed_image(registry: &str, key: &CosignKey, seed: &str, tag: Option<&str>) -> Pushed {
    let image = build_big_image(seed, (64 << 10) + seed.len() * 13 % 997);
    push_built(registry, SIGNED, tag, &image);
    sign_and_push(registry, SIGNED, &image.digest, key, &format!("{NS}/{SIGNED}"));
    image
}

/// One raw request on a fresh connection; the status line's code, or `None`.
fn raw_status(addr: &str, request: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request).ok()?;
    let mut raw = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Hostile clients, one case after another.
fn hostile(w: &World, addr: &str) {
    let mut round = 0usize;
    let tally = &w.tally;
    while w.running() {
        round += 1;
        match round % 5 {
            0 => {
                // Slowloris: a header line every 500 ms, never the end.
                let started = Instant::now();
                let closed = slowloris(addr);
                tally.count("slowloris", 0);
                let bound = Duration::from_secs(HEADER_READ_TIMEOUT_SECS + 2);
                w.expect(closed.is_some_and(|t| t < bound), || {
                    format!("slowloris: not disconnected within {bound:?} ({:?})", started.elapsed())
                });
            }
            1 => {
                let pad = "a".repeat(20_000);
                let req = format!("GET /v2/ HTTP/1.1\r\nHost: s\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n");
                let got = raw_status(addr, req.as_bytes());
                tally.count("oversized-head", got.as_ref().map_or(0, |g| g.0));
                w.expect(matches!(got, Some((431, _))), || format!("oversized head: {got:?}"));
            }
            2 => {
                for (path, code) in [
                    ("/v2/soak/Signed/manifests/c1", "NAME_INVALID"),
                    ("/v2/soak%2Fsigned/manifests/c1", "NAME_INVALID"),
                    ("/v2/soak/../signed/manifests/c1", "NAME_INVALID"),
                    ("/v2/soak/signed/manifests/sha256:abc", "DIGEST_INVALID"),
                    ("/v2/soak/signed/blobs/md5:0123", "DIGEST_INVALID"),
                ] {
                    if let Some(r) = w.get("bad-name", path, &[]) {
                        w.expect(r.status == 400 && r.oci_error_code().as_deref() == Some(code), || {
                            format!("bad name {path}: {} {}", r.status, r.text())
                        });
                    }
                }
                let url = format!("{}/v2/{SIGNED}/manifests/c1?ns={addr}", w.mirror);
                let r = try_http_timeout("GET", &url, &[], &[], Duration::from_secs(10));
                let status = r.as_ref().map_or(0, |r| r.status);
                tally.count("foreign-ns", status);
                w.expect(
                    r.as_ref().is_ok_and(|r| {
                        r.status == 503
                            || r.oci_error_message().is_some_and(|m| m.contains("is not a configured upstream"))
                    }),
                    || format!("foreign ns: {r:?}"),
                );
            }
            3 => flood(w, addr),
            _ => thread::sleep(Duration::from_millis(500)),
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Sends a head that never ends; how long until the mirror hung up.
fn slowloris(addr: &str) -> Option<Duration> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let started = Instant::now();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: s\r\n").ok()?;
    let mut buf = [0u8; 512];
    for i in 0..40 {
        if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).is_err() {
            return Some(started.elapsed());
        }
        match s.read(&mut buf) {
            Ok(_) => return Some(started.elapsed()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// More connections than `max_connections` at once: each is answered `200`
/// (admitted) or `503` naming the limit, and at least one is refused.
fn flood(w: &World, addr: &str) {
    let n = MAX_CONNECTIONS + 16;
    let Ok(sock) = addr.parse() else { return };
    let mut conns: Vec<TcpStream> =
        (0..n).filter_map(|_| TcpStream::connect_timeout(&sock, Duration::from_secs(5)).ok()).collect();
    // Silent for a moment, so every one is accepted and the admitted ones
    // hold their slots (`header_read_timeout_secs`) while the rest wait
    // for their 503. Sent at once, the release build answers the first
    // ones before it accepts the last.
    thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for c in &mut conns {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    }
    for c in &mut conns {
        let mut raw = Vec::new();
        let _ = c.take(64 << 10).read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        w.tally.count("flood", status);
        match status {
            200 => {}
            503 if text.contains("(limits.max_connections)")
                && text.to_ascii_lowercase().contains("retry-after: 1") =>
            {
                refused += 1
            }
            _ => w.tally.error(format!("flood: {status} {:?}", &text[..text.len().min(300)])),
        }
    }
    w.expect(conns.len() == n && refused >= 1, || format!("flood: {} connections, {refused} refused", conns.len()));
}

/// One sample of the process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
    requests: u64,
    errors: u64,
}

fn sample(pid: u32, m: &Sigmirror, started: Instant, tally: &Tally) -> Option<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    // The sampler's own scrape meets the floods too: retried past their 503s.
    let scrape = || try_http_timeout("GET", &format!("{}/metrics", m.url()), &[], &[], Duration::from_secs(10)).ok();
    let tasks = (0..50).find_map(|_| {
        let found =
            scrape()?.text().lines().find_map(|l| l.strip_prefix("sigmirror_tasks ")?.trim().parse::<f64>().ok());
        if found.is_none() {
            thread::sleep(Duration::from_millis(100));
        }
        found
    })? as u64;
    Some(Sample {
        secs: started.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS")?,
        fds,
        threads: field("Threads")?,
        tasks,
        requests: tally.requests.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The growth rule of the module header: `Some(why)` when `series` grew.
fn grew(name: &str, early: u64, late: u64, ratio: f64, plus: u64) -> Option<String> {
    (late as f64 > early as f64 * ratio && late > early + plus).then(|| {
        format!("{name}: the last third's median {late} is over {ratio}x and +{plus} of the first third's {early}")
    })
}

fn growth(samples: &[Sample], warmup_secs: f64) -> (Vec<String>, String) {
    let judged: Vec<&Sample> = samples.iter().filter(|s| s.secs >= warmup_secs).collect();
    let third = judged.len() / 3;
    if third < 2 {
        return (vec![format!("too few samples after warm-up ({}) to judge growth", judged.len())], String::new());
    }
    let (first, last) = (&judged[..third], &judged[judged.len() - third..]);
    let med = |part: &[&Sample], f: fn(&Sample) -> u64| median(part.iter().map(|s| f(s)).collect());
    // (name, value, ratio and absolute growth the last third may show over the first)
    type Series = (&'static str, fn(&Sample) -> u64, f64, u64);
    let series: [Series; 4] = [
        ("RSS KiB", |s| s.rss_kib, 1.25, 16 << 10),
        ("fds", |s| s.fds, 1.5, 32),
        ("tasks", |s| s.tasks, 2.0, 100),
        ("threads", |s| s.threads, 1.0, 32),
    ];
    let mut failures = Vec::new();
    let mut medians = String::new();
    for (name, f, ratio, plus) in series {
        let (early, late) = (med(first, f), med(last, f));
        let _ = write!(medians, "{name} median first third {early}, last third {late}; ");
        failures.extend(grew(name, early, late, ratio, plus));
    }
    (failures, medians)
}

/// The CSV, one row per sample.
fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("secs,rss_kib,fds,threads,tasks,requests,errors\n");
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{}",
            s.secs, s.rss_kib, s.fds, s.threads, s.tasks, s.requests, s.errors
        );
    }
    out
}

/// Three stacked panels (RSS MiB; fds and threads; tasks) over time, as
/// plain SVG polylines.
fn svg(samples: &[Sample], title: &str) -> String {
    const W: f64 = 900.0;
    const PANEL: f64 = 170.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    let end = samples.last().map_or(1.0, |s| s.secs).max(1.0);
    let x = |secs: f64| LEFT + secs / end * (W - LEFT - RIGHT);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" font-family=\"sans-serif\" \
         font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{title}</text>\n",
        40.0 + 3.0 * (PANEL + 30.0)
    );
    type Series = (&'static str, &'static str, fn(&Sample) -> f64);
    let panels: [(&str, Vec<Series>); 3] = [
        ("RSS (MiB)", vec![("RSS", "#c0392b", |s| s.rss_kib as f64 / 1024.0)]),
        ("fds / threads", vec![("fds", "#2471a3", |s| s.fds as f64), ("threads", "#7d3c98", |s| s.threads as f64)]),
        ("tokio tasks", vec![("tasks", "#1e8449", |s| s.tasks as f64)]),
    ];
    for (i, (label, series)) in panels.iter().enumerate() {
        let top = 40.0 + i as f64 * (PANEL + 30.0);
        let max = series.iter().flat_map(|(_, _, f)| samples.iter().map(f)).fold(1.0, f64::max) * 1.1;
        let y = |v: f64| top + PANEL - v / max * PANEL;
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{LEFT}\" y=\"{}\">{label}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n\
             <text x=\"{LEFT}\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{end:.0} s</text>",
            W - LEFT - RIGHT,
            top - 4.0,
            LEFT - 4.0,
            top + 12.0,
            max,
            LEFT - 4.0,
            top + PANEL,
            top + PANEL + 14.0,
            W - RIGHT,
            top + PANEL + 14.0,
        );
        for (j, (name, colour, f)) in series.iter().enumerate() {
            let points: Vec<String> = samples.iter().map(|s| format!("{:.1},{:.1}", x(s.secs), y(f(s)))).collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
                 <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
                points.join(" "),
                W - RIGHT - 80.0,
                top + 16.0 + 14.0 * j as f64,
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn mirror_config(registry: &Registry) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npin_revalidate_secs = 1\n\n\
         [[upstream]]\nregistry = \"{NS}\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n\
         [[policy]]\nname = \"soak\"\nscope = [\"{NS}/soak/**\"]\nmode = \"enforce\"\ncosign_keys = [\"soak.pub\"]\n\
         immutable_tags = [\"*\", \"!latest\"]\non_tag_move = \"deny\"\n\n\
         [cache]\ntag_ttl_secs = 1\n\n\
         [limits]\nmax_connections = {MAX_CONNECTIONS}\nheader_read_timeout_secs = {HEADER_READ_TIMEOUT_SECS}\n\
         max_header_bytes = 16384\n\n[audit]\npath = \"audit.log\"\n",
        registry.url()
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "minutes long; scripts/soak runs it"]
fn soak_mixed_traffic_serves_only_verified_bytes_and_stays_bounded() {
    let secs: u64 = env_or("SOAK_SECS", 1800);
    let every = Duration::from_secs(env_or("SOAK_SAMPLE_SECS", if secs >= 300 { 5 } else { 1 }));
    let out = PathBuf::from(env_or("SOAK_OUT", "target/soak".to_string()));
    fs::create_dir_all(&out).unwrap();

    let registry = Registry::start();
    let key = CosignKey::generate();
    let signed_ref = format!("{NS}/{SIGNED}");
    // What exists before the mirror starts: two signed images (one also
    // `latest`, one `pinned`) and one unsigned.
    let first = build_big_image("soak-first", 64 << 10);
    push_built(&registry.host, SIGNED, Some("c0"), &first);
    sign_and_push(&registry.host, SIGNED, &first.digest, &key, &signed_ref);
    push_raw_manifest(&registry.host, SIGNED, "latest", &first.media_type, &first.manifest);
    let pinned = build_image("soak-pinned", "amd64");
    push_built(&registry.host, SIGNED, Some("pinned"), &pinned);
    sign_and_push(&registry.host, SIGNED, &pinned.digest, &key, &signed_ref);
    let unsigned = build_image("unsigned-0", "amd64");
    push_built(&registry.host, UNSIGNED, Some("unsigned-0"), &unsigned);

    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("soak.pub"), key.public_pem()).unwrap();
    let m = Sigmirror::start_in(dir, &mirror_config(&registry));
    let pid = m.pid();
    let bin = std::env::var("SIGMIRROR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sigmirror").into());

    let started = Instant::now();
    let world = Arc::new(World {
        mirror: m.url(),
        signed: Mutex::new(vec![Image::of(&first, "c0")]),
        latest: Mutex::new([first.digest.clone()].into_iter().collect()),
        pinned: pinned.digest.clone(),
        pinned_moved: AtomicBool::new(false),
        unsigned: Mutex::new(vec![unsigned]),
        deadline: started + Duration::from_secs(secs),
        tally: Tally::default(),
    });
    let mut workers = Vec::new();
    for n in 0..PULLERS {
        let w = world.clone();
        workers.push(thread::spawn(move || signed_puller(&w, n)));
    }
    let w = world.clone();
    workers.push(thread::spawn(move || tag_puller(&w)));
    let w = world.clone();
    workers.push(thread::spawn(move || unsigned_puller(&w)));
    let (w, host) = (world.clone(), registry.host.clone());
    workers.push(thread::spawn(move || pusher(&w, &host, &key)));
    let (w, addr) = (world.clone(), m.addr.clone());
    workers.push(thread::spawn(move || hostile(&w, &addr)));

    let mut samples = Vec::new();
    let mut next = started;
    while world.running() {
        match sample(pid, &m, started, &world.tally) {
            Some(s) => samples.push(s),
            None => world.tally.error("a sample could not be read (did sigmirror exit?)".into()),
        }
        next += every;
        while world.running() && Instant::now() < next {
            thread::sleep(Duration::from_millis(50));
        }
    }
    for worker in workers {
        if worker.join().is_err() {
            world.tally.error("a worker thread panicked".into());
        }
    }
    samples.extend(sample(pid, &m, started, &world.tally));

    let t = &world.tally;
    let by_kind = t.by_kind.lock().unwrap().clone();
    let seen = |kind: &str, status: u16| by_kind.get(&format!("{kind} {status}")).copied().unwrap_or(0);
    // Every kind of traffic really ran.
    for (kind, status) in [
        ("signed-manifest", 200),
        ("signed-blob", 200),
        ("latest", 200),
        ("pinned", 200),
        ("unsigned-manifest", 403),
        ("unsigned-blob", 403),
        ("bad-name", 400),
        ("flood", 503),
    ] {
        if seen(kind, status) == 0 {
            t.error(format!("no {kind} request was answered {status}"));
        }
    }
    if secs >= 60 && seen("pinned", 403) == 0 {
        t.error("the pinned tag moved upstream but was never refused".into());
    }
    if secs >= 30 && seen("slowloris", 0) == 0 {
        t.error("no slowloris client ran".into());
    }

    let warmup = (secs as f64 / 10.0).max(5.0);
    let (growth_failures, medians) = growth(&samples, warmup);
    let (first_s, last_s) = (samples.first().copied(), samples.last().copied());
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let hwm = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string())))
        .unwrap_or_default();
    let mut summary = String::new();
    let _ = writeln!(summary, "soak of {bin}");
    let _ = writeln!(
        summary,
        "duration: {:.0} s (asked {secs} s), samples every {every:?}: {}",
        started.elapsed().as_secs_f64(),
        samples.len()
    );
    let _ = writeln!(
        summary,
        "requests: {} ({} retried 503 over max_connections), errors: {}, blob bytes verified: {}",
        t.requests.load(Ordering::Relaxed),
        t.busy.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
        t.blob_bytes_verified.load(Ordering::Relaxed)
    );
    if let (Some(a), Some(b)) = (first_s, last_s) {
        let _ = writeln!(
            summary,
            "RSS start {} KiB, end {} KiB, peak {peak} KiB sampled (VmHWM {hwm}); fds start {}, end {}; threads {} -> {}; tasks {} -> {}",
            a.rss_kib, b.rss_kib, a.fds, b.fds, a.threads, b.threads, a.tasks, b.tasks
        );
    }
    let _ = writeln!(summary, "after {warmup:.0} s warm-up: {medians}");
    let _ = writeln!(
        summary,
        "signed images pushed: {}, unsigned: {}",
        world.signed.lock().unwrap().len(),
        world.unsigned.lock().unwrap().len()
    );
    let _ = writeln!(summary, "answers by kind:");
    for (k, v) in &by_kind {
        let _ = writeln!(summary, "  {k}: {v}");
    }
    for f in &growth_failures {
        let _ = writeln!(summary, "GROWTH: {f}");
    }
    for e in t.kept.lock().unwrap().iter() {
        let _ = writeln!(summary, "ERROR: {e}");
    }
    let verdict = if growth_failures.is_empty() && t.errors.load(Ordering::Relaxed) == 0 { "PASS" } else { "FAIL" };
    let _ = writeln!(summary, "verdict: {verdict}");
    fs::write(out.join("soak.csv"), csv(&samples)).unwrap();
    let title = format!(
        "sigmirror soak: {:.0} s, {} requests, {} errors",
        started.elapsed().as_secs_f64(),
        t.requests.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed)
    );
    fs::write(out.join("soak.svg"), svg(&samples, &title)).unwrap();
    fs::write(out.join("summary.txt"), &summary).unwrap();
    println!("{summary}");
    println!("wrote {}/soak.csv, soak.svg, summary.txt", out.display());
    assert_eq!(verdict, "PASS", "{summary}");
}
