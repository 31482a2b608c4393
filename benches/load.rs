//! Load benchmark: sigmirror side by side with what a platform team would use
//! instead, on the same machine, in one run.
//!
//! Run: `cargo bench --bench load` (needs docker-registry and nginx; the test
//! command installs both). Optional: `LOAD_SECS=10 LOAD_CONCURRENCY=32
//! LOAD_HUGE_MIB=1024`.
//!
//! Peers, all on loopback, all serving the same bytes:
//! - **nginx**: the same manifest and blob bytes as static files (sendfile).
//!   The floor: no verification, no proxying.
//! - **distribution pull-through cache**: `docker-registry` with a `proxy:`
//!   section in front of the origin registry, warmed first.
//! - **sigmirror**: in front of the same origin, with an enforcing policy
//!   that requires a cosign signature by a key (made by Sigstore's crate);
//!   the images are signed, so the steady state is the cached-verdict path
//!   and blobs come from its disk cache.
//!
//! Tables, all from one run, ratios against nginx (or against a pull
//! straight from the origin for cold pulls), because these 2-core machines
//! are noisy and the load generator shares the cores with the servers:
//! 1. manifests: by digest, GET and HEAD of a pinned tag, HEAD of a mutable tag
//!    (req/s, p50/p99);
//! 2. a cached 50 MB blob with 4 and 32 connections (MB/s);
//! 3. a cold pull of a signed 4-layer image: time, and requests the origin
//!    received (counted in its own access log);
//! 4. a herd of 100 concurrent cold pulls of one image: origin requests per
//!    object;
//! 5. sigmirror's peak RSS with 256 connections, and while 8 clients stream
//!    a `LOAD_HUGE_MIB` (default 1024) blob, cold and then cached.
//!
//! The figures of the last run (2026-12-03, a quiet 2-core VM) are
//! in README.md ("Performance"), with the targets they miss.

#[path = "../tests/support/signing.rs"]
mod signing;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const REPO: &str = "bench/app";

struct Peer {
    name: &'static str,
    base: String,
    /// Query string the peer needs (sigmirror: `ns=`).
    query: &'static str,
    /// The server's process; its CPU time (and its children's, for nginx's
    /// workers) is read from /proc around each cell. None: not measured.
    pid: Option<u32>,
}

struct Cell {
    rps: f64,
    requests: usize,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

fn main() {
    let secs: u64 = env_or("LOAD_SECS", 5);
    let conc: usize = env_or("LOAD_CONCURRENCY", 16);
    let huge_mib: usize = env_or("LOAD_HUGE_MIB", 1024);

    // The origin and what every peer serves. Each cold workload gets images
    // of its own per peer, so "cold" really is cold.
    let origin = Registry::start();
    let key = signing::CosignKey::generate();
    let sign =
        |image: &Pushed| signing::sign_and_push(&origin.host, REPO, &image.digest, &key, "registry.test/bench/app");
    let image = push_image(&origin.host, REPO, "v1", "bench");
    push_raw_manifest(&origin.host, REPO, "latest", &image.media_type, &image.manifest);
    sign(&image);
    let big = build_big_image("bench-50mb", 50 << 20);
    push_built(&origin.host, REPO, Some("big"), &big);
    sign(&big);
    let cold: Vec<(&str, Pushed)> = ["origin", "proxy", "sigmirror", "herd-proxy", "herd-sigmirror"]
        .into_iter()
        .map(|who| {
            let img = build_layered_image(&format!("bench-cold-{who}"), 4, 2 << 20);
            push_built(&origin.host, REPO, Some(&format!("cold-{who}")), &img);
            sign(&img);
            (who, img)
        })
        .collect();

    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = mirror_config(
        &origin.url(),
        "[[policy]]\nname = \"bench\"\nscope = [\"registry.test/bench/**\"]\nmode = \"enforce\"\ncosign_keys = [\"release.pub\"]\n\
         immutable_tags = [\"v*\"]\n",
    );
    let mirror = Sigmirror::start_in(dir, &config);
    let proxy = start_distribution_proxy(&origin.url());
    let nginx = start_nginx(&image, &big);
    let peers = [
        Peer {
            name: "nginx (static files)",
            base: format!("http://{}", nginx.addr),
            query: "",
            pid: Some(nginx.child.id()),
        },
        Peer {
            name: "distribution proxy",
            base: format!("http://{}", proxy.addr),
            query: "",
            pid: Some(proxy.child.id()),
        },
        Peer { name: "sigmirror", base: mirror.url(), query: "?ns=registry.test", pid: Some(mirror.pid()) },
    ];
    for p in &peers[1..] {
        // The blob's manifest first: sigmirror serves a blob only once a
        // manifest it allowed references it.
        pull(&p.base, p.query, "big").unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("load: {conc} connections, {secs} s per cell, one run, ratios against nginx");
    println!("sigmirror RSS after start: {} MiB\n", mirror.proc_status_kib("VmRSS") / 1024);
    println!("1. manifests");
    let manifests: [(&str, &str, String); 4] = [
        ("GET manifest by digest", "GET", format!("/v2/{REPO}/manifests/{}", image.digest)),
        ("GET immutable tag (pinned in sigmirror)", "GET", format!("/v2/{REPO}/manifests/v1")),
        ("HEAD immutable tag (pinned in sigmirror)", "HEAD", format!("/v2/{REPO}/manifests/v1")),
        ("HEAD mutable tag", "HEAD", format!("/v2/{REPO}/manifests/latest")),
    ];
    for (label, method, path) in manifests.iter().filter(|_| only("manifests")) {
        println!("  {label}");
        let mut floor = None;
        for p in &peers {
            let url = format!("{}{path}{}", p.base, p.query);
            let warm = http(method, &url, &[("Accept", MANIFEST_ACCEPT)]);
            assert_eq!(warm.status, 200, "{} {label}: {}", p.name, warm.text());
            let cpu = cpu_secs(p.pid.expect("peer pid"));
            let cell = rt.block_on(load(method, &url, conc, Duration::from_secs(secs)));
            let cpu_us = (cpu_secs(p.pid.expect("peer pid")) - cpu) * 1e6 / cell.requests.max(1) as f64;
            let base = *floor.get_or_insert(cell.rps);
            println!(
                "    {:<22} {:>9.0} req/s  p50 {:>6} µs  p99 {:>7} µs  errors {:>3}  ratio {:.2}  server CPU {:>6.1} µs/req",
                p.name,
                cell.rps,
                cell.p50_us,
                cell.p99_us,
                cell.errors,
                cell.rps / base,
                cpu_us
            );
        }
    }

    if only("blob") {
        println!("\n2. cached 50 MB blob");
        let blob_path = format!("/v2/{REPO}/blobs/{}", big.layer_digests[0]);
        let mb = big.layers[0].len() as f64 / 1e6;
        for c in [4, 32] {
            println!("  {c} connections");
            let mut floor = None;
            for p in &peers {
                let url = format!("{}{blob_path}{}", p.base, p.query);
                assert_eq!(http("GET", &url, &[]).body.len(), big.layers[0].len(), "{} warm", p.name);
                let cpu = cpu_secs(p.pid.expect("peer pid"));
                let cell = rt.block_on(load("GET", &url, c, Duration::from_secs(secs)));
                let cpu_per_gb = (cpu_secs(p.pid.expect("peer pid")) - cpu) * 1e3 / (cell.requests.max(1) as f64 * mb);
                let base = *floor.get_or_insert(cell.rps);
                println!(
                "    {:<22} {:>7.0} MB/s  p50 {:>6} ms  p99 {:>6} ms  errors {:>3}  ratio {:.2}  server CPU {:>5.2} s/GB",
                p.name,
                cell.rps * mb,
                cell.p50_us / 1000,
                cell.p99_us / 1000,
                cell.errors,
                cell.rps / base,
                cpu_per_gb
            );
            }
        }
    }

    if only("cold") {
        println!("\n3. cold pull of a signed 4-layer image (4 x 2 MiB), one client");
        let origin_peer = Peer { name: "straight from origin", base: origin.url(), query: "", pid: None };
        let mut direct = None;
        for (p, who) in [(&origin_peer, "origin"), (&peers[1], "proxy"), (&peers[2], "sigmirror")] {
            let before = origin_requests(&origin);
            let t = Instant::now();
            pull(&p.base, p.query, &format!("cold-{who}")).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            let took = t.elapsed().as_secs_f64() * 1e3;
            let base = *direct.get_or_insert(took);
            println!(
                "    {:<22} {:>7.1} ms  origin requests {:>3}  time ratio {:.2}",
                p.name,
                took,
                origin_requests(&origin) - before,
                took / base
            );
        }
    }

    if only("herd") {
        println!("\n4. herd: 100 concurrent cold pulls of one image (4 layers + config)");
        for (p, who) in [(&peers[1], "herd-proxy"), (&peers[2], "herd-sigmirror")] {
            let img = &cold.iter().find(|(w, _)| *w == who).unwrap().1;
            let before: Vec<usize> = objects(img).iter().map(|path| origin.requests("GET", path)).collect();
            let t = Instant::now();
            let herd: Vec<_> = (0..100)
                .map(|_| {
                    let (base, query, tag) = (p.base.clone(), p.query, format!("cold-{who}"));
                    std::thread::spawn(move || pull(&base, query, &tag))
                })
                .collect();
            let failed = herd.into_iter().map(|h| h.join()).filter(|r| !matches!(r, Ok(Ok(())))).count();
            let per_object: Vec<usize> =
                objects(img).iter().zip(before).map(|(path, b)| origin.requests("GET", path) - b).collect();
            println!(
                "    {:<22} {:>7.0} ms  failed pulls {failed:>3}  origin GETs per object {per_object:?} (max {})",
                p.name,
                t.elapsed().as_secs_f64() * 1e3,
                per_object.iter().max().unwrap_or(&0)
            );
        }
    }
    if !only("rss") {
        return;
    }

    println!("\n5. sigmirror peak RSS (sampled every 50 ms from /proc)");
    let rss = || mirror.proc_status_kib("VmRSS");
    let rss_during = |what: &str, work: &dyn Fn()| {
        let stop = AtomicBool::new(false);
        let peak = AtomicU64::new(0);
        let at_start = rss();
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            work();
            stop.store(true, Ordering::Relaxed);
        });
        println!(
            "    {what:<48} start {:>6} MiB  peak {:>6} MiB",
            at_start / 1024,
            peak.load(Ordering::Relaxed) / 1024
        );
    };
    let digest_url = format!("{}/v2/{REPO}/manifests/{}?ns=registry.test", mirror.url(), image.digest);
    rss_during("256 connections, GET manifest by digest", &|| {
        let cell = rt.block_on(load("GET", &digest_url, 256, Duration::from_secs(secs)));
        assert!(cell.rps > 0.0);
    });
    let huge = build_big_image("bench-huge", huge_mib << 20);
    push_built(&origin.host, REPO, Some("huge"), &huge);
    sign(&huge);
    pull_manifest_only(&mirror.url(), "?ns=registry.test", "huge").unwrap();
    let huge_url = format!("{}/v2/{REPO}/blobs/{}?ns=registry.test", mirror.url(), huge.layer_digests[0]);
    let huge_len = huge.layers[0].len() as u64;
    drop(huge);
    for phase in ["cold", "cached"] {
        rss_during(&format!("8 clients streaming a {huge_mib} MiB blob, {phase}"), &|| {
            let got = rt.block_on(stream_clients(&huge_url, 8));
            assert!(got.iter().all(|n| *n == huge_len), "incomplete: {got:?}");
        });
    }
}

/// Whether `LOAD_ONLY` (a comma-separated list of `manifests`, `blob`,
/// `cold`, `herd`, `rss`; unset: all) names this section.
fn only(section: &str) -> bool {
    std::env::var("LOAD_ONLY").map(|v| v.split(',').any(|s| s.trim() == section)).unwrap_or(true)
}

/// CPU seconds (user + system) `pid` and its direct children (nginx's
/// workers) have used so far, from /proc: what a cell cost the server, as
/// opposed to the load generator sharing its cores.
fn cpu_secs(pid: u32) -> f64 {
    // Fields after the `(comm)`: state is field 3; ppid 4; utime 14, stime 15.
    let fields = |stat: &str| -> Option<(u32, u64)> {
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((rest.get(1)?.parse().ok()?, rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?))
    };
    let mut ticks = 0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some((ppid, t)) = fs::read_to_string(format!("/proc/{p}/stat")).ok().as_deref().and_then(fields) else {
            continue;
        };
        if p == pid || ppid == pid {
            ticks += t;
        }
    }
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Every request the origin has logged so far.
fn origin_requests(origin: &Registry) -> usize {
    origin.logs().lines().filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/")).count()
}

/// The blob paths of an image: its config and its layers.
fn objects(image: &Pushed) -> Vec<String> {
    std::iter::once(&image.config_digest).chain(&image.layer_digests).map(|d| format!("/v2/{REPO}/blobs/{d}")).collect()
}

/// What a pull does: the manifest by tag, then every blob it names.
fn pull(base: &str, query: &str, tag: &str) -> Result<(), String> {
    let manifest = pull_manifest_only(base, query, tag)?;
    let m: serde_json::Value = serde_json::from_slice(&manifest).map_err(|e| e.to_string())?;
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    for d in std::iter::once(&m["config"]).chain(layers.iter()) {
        let digest = d["digest"].as_str().ok_or("no digest")?;
        let r = try_http("GET", &format!("{base}/v2/{REPO}/blobs/{digest}{query}"), &[])?;
        if r.status != 200 || r.body.len() as u64 != d["size"].as_u64().unwrap_or(0) || !r.complete {
            return Err(format!("blob {digest}: {} with {} bytes", r.status, r.body.len()));
        }
    }
    Ok(())
}

fn pull_manifest_only(base: &str, query: &str, tag: &str) -> Result<Vec<u8>, String> {
    let r = try_http("GET", &format!("{base}/v2/{REPO}/manifests/{tag}{query}"), &[("Accept", MANIFEST_ACCEPT)])?;
    if r.status != 200 {
        return Err(format!("manifest {tag}: {} {}", r.status, r.text()));
    }
    Ok(r.body)
}

/// `n` clients each reading the whole blob at `url`, counting bytes (never
/// holding them); returns the bytes each received.
async fn stream_clients(url: &str, n: usize) -> Vec<u64> {
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                use futures_util::StreamExt;
                let Ok(r) = client.get(&url).send().await else { return 0 };
                let mut body = r.bytes_stream();
                let mut got = 0u64;
                while let Some(Ok(chunk)) = body.next().await {
                    got += chunk.len() as u64;
                }
                got
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or(0));
    }
    out
}

/// Closed-loop load: `conc` workers, each sending its next request when the
/// previous one is complete, for `dur`.
async fn load(method: &str, url: &str, conc: usize, dur: Duration) -> Cell {
    let client = reqwest::Client::builder().pool_max_idle_per_host(conc).build().unwrap();
    let method: reqwest::Method = method.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, method, url, stop, errors) =
            (client.clone(), method.clone(), url.to_string(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match client.request(method.clone(), &url).header("Accept", MANIFEST_ACCEPT).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Cell {
        rps: all.len() as f64 / elapsed,
        requests: all.len(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

struct Server {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// SIGTERM first: nginx's master stops its workers on it, while a
    /// SIGKILLed master leaves them running, serving the old port.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(addr: &str, child: &mut Child, what: &str) {
    wait_for(what, Duration::from_secs(20), Duration::from_millis(50), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        try_http("GET", &format!("http://{addr}/v2/"), &[]).ok().filter(|r| r.status == 200).map(|_| ())
    });
}

fn start_distribution_proxy(origin: &str) -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: {addr}\nproxy:\n  remoteurl: {origin}\n",
        dir.path().join("storage").display()
    );
    fs::write(dir.path().join("config.yml"), config).unwrap();
    let mut child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry");
    wait_ready(&addr, &mut child, "distribution proxy");
    Server { addr, child, _dir: dir }
}

fn start_nginx(image: &Pushed, big: &Pushed) -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().join("root");
    let repo = root.join("v2").join(REPO);
    fs::create_dir_all(repo.join("manifests")).unwrap();
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(root.join("v2").join("index.html"), "{}").unwrap();
    fs::write(repo.join("manifests").join(&image.digest), &image.manifest).unwrap();
    fs::write(repo.join("manifests").join("v1"), &image.manifest).unwrap();
    fs::write(repo.join("manifests").join("latest"), &image.manifest).unwrap();
    fs::write(repo.join("blobs").join(&big.layer_digests[0]), &big.layers[0]).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = format!(
        "daemon off;\nworker_processes 2;\nuser root;\npid {pid};\nerror_log {err} error;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  \
         uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  sendfile on;\n  keepalive_requests 1000000;\n  server {{\n    \
         listen {addr};\n    root {root};\n    location /v2/ {{ default_type application/json; index index.html; }}\n    \
         location ~ /manifests/ {{ default_type {mt}; add_header Docker-Content-Digest {digest}; }}\n    \
         location ~ /blobs/ {{ default_type application/octet-stream; }}\n  }}\n}}\n",
        pid = dir.path().join("nginx.pid").display(),
        err = dir.path().join("error.log").display(),
        tmp = dir.path().display(),
        root = root.display(),
        mt = OCI_MANIFEST,
        digest = image.digest,
    );
    let conf_path = dir.path().join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();
    let nginx =
        ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists()).expect("nginx is missing");
    let mut child = Command::new(nginx)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    wait_ready(&addr, &mut child, "nginx");
    Server { addr, child, _dir: dir }
}
