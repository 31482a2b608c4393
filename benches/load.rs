//! Load benchmark: sigmirror side by side with what a platform team would use
//! instead, on the same machine, in one run.
//!
//! Run: `cargo bench --bench load` (needs docker-registry and nginx; the test
//! command installs both). Optional: `LOAD_SECS=10 LOAD_CONCURRENCY=32`.
//!
//! Peers, all on loopback, all serving the same image:
//! - **nginx**: the same manifest and blob bytes as static files. The floor:
//!   no verification, no proxying.
//! - **distribution pull-through cache**: `docker-registry` with a `proxy:`
//!   section in front of the origin registry, warmed first.
//! - **sigmirror**: in front of the same origin, with an enforcing policy
//!   that requires a cosign signature by a key; the image is signed, so the
//!   steady state is the cached-verdict path.
//!
//! Workloads: GET manifest by digest (what containerd does after resolving),
//! HEAD of an immutable tag (pinned: no upstream round trip in sigmirror),
//! HEAD of a mutable tag (every peer but nginx asks upstream), and GET of a
//! 1 MiB blob (sigmirror streams it from upstream, hashing; it has no blob
//! cache yet).
//! Ratios are printed against nginx from one run, because these 2-core
//! machines are noisy; the load generator shares the cores with the servers.
//!
//! Last measured (2-core VM, 16 connections, 5 s per cell, 2026-12-02;
//! req/s, ratio against nginx in brackets). Since the previous run a client
//! HEAD by tag is a HEAD upstream, and blobs are served only once a manifest
//! that references them was allowed (the 1 MiB blob is a signed image's layer):
//!
//! | workload                    | nginx  | distribution proxy | sigmirror      |
//! |-----------------------------|--------|--------------------|----------------|
//! | GET manifest by digest      | 17855  | 530 (0.03)         | 22052 (1.24)   |
//! | HEAD immutable tag (pinned) | 20877  | 177 (0.01)         | 22667 (1.09)   |
//! | HEAD mutable tag            | 22114  | 180 (0.01)         | 752 (0.03)     |
//! | GET 1 MiB blob              | 2574   | 273 (0.11)         | 245 (0.10)     |

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
}

struct Cell {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

fn main() {
    let secs: u64 = std::env::var("LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let conc: usize = std::env::var("LOAD_CONCURRENCY").ok().and_then(|s| s.parse().ok()).unwrap_or(16);

    // The origin and the image every peer serves.
    let origin = Registry::start();
    let image = push_image(&origin.host, REPO, "v1", "bench");
    push_raw_manifest(&origin.host, REPO, "latest", &image.media_type, &image.manifest);
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let big_digest = push_blob(&origin.host, REPO, &big);
    // sigmirror serves a blob only once a manifest it allowed references it:
    // the 1 MiB blob is the layer of a second signed image.
    let big_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": image.config_digest, "size": image.config.len() },
        "layers": [{ "mediaType": OCI_LAYER_TAR, "digest": big_digest, "size": big.len() }]
    }))
    .unwrap();
    let big_image = push_raw_manifest(&origin.host, REPO, "big", OCI_MANIFEST, &big_manifest);

    // sigmirror with a real cosign signature made by Sigstore's crate.
    let key = signing::CosignKey::generate();
    signing::sign_and_push(&origin.host, REPO, &image.digest, &key, "registry.test/bench/app");
    signing::sign_and_push(&origin.host, REPO, &big_image, &key, "registry.test/bench/app");
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = mirror_config(
        &origin.url(),
        "[[policy]]\nname = \"bench\"\nscope = [\"registry.test/bench/**\"]\nmode = \"enforce\"\ncosign_keys = [\"release.pub\"]\n\
         immutable_tags = [\"v*\"]\n",
    );
    let mirror = Sigmirror::start_in(dir, &config);
    let allowed = http("GET", &format!("{}/v2/{REPO}/manifests/{big_image}?ns=registry.test", mirror.url()), &[]);
    assert_eq!(allowed.status, 200, "the blob's manifest: {}", allowed.text());

    let proxy = start_distribution_proxy(&origin.url());
    let nginx = start_nginx(&image, &big_digest, &big);

    let peers = [
        Peer { name: "nginx (static files)", base: format!("http://{}", nginx.addr), query: "" },
        Peer { name: "distribution proxy", base: format!("http://{}", proxy.addr), query: "" },
        Peer { name: "sigmirror", base: mirror.url(), query: "?ns=registry.test" },
    ];
    let workloads: [(&str, &str, String); 4] = [
        ("GET manifest by digest", "GET", format!("/v2/{REPO}/manifests/{}", image.digest)),
        ("HEAD immutable tag (pinned in sigmirror)", "HEAD", format!("/v2/{REPO}/manifests/v1")),
        ("HEAD mutable tag (resolved upstream)", "HEAD", format!("/v2/{REPO}/manifests/latest")),
        ("GET 1 MiB blob", "GET", format!("/v2/{REPO}/blobs/{big_digest}")),
    ];

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("load: {conc} connections, {secs} s per cell, one run, ratios against nginx\n");
    for (label, method, path) in &workloads {
        println!("{label}");
        let mut floor = None;
        for p in &peers {
            let url = format!("{}{path}{}", p.base, p.query);
            // Warm caches (distribution pulls from origin on first access).
            let warm = http(method, &url, &[("Accept", MANIFEST_ACCEPT)]);
            assert_eq!(warm.status, 200, "{} {label}: {}", p.name, warm.text());
            let cell = rt.block_on(load(method, &url, conc, Duration::from_secs(secs)));
            let base = *floor.get_or_insert(cell.rps);
            println!(
                "  {:<24} {:>9.0} req/s  p50 {:>6} µs  p99 {:>7} µs  errors {:>3}  ratio {:.2}",
                p.name,
                cell.rps,
                cell.p50_us,
                cell.p99_us,
                cell.errors,
                cell.rps / base
            );
        }
        println!();
    }
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
    fn drop(&mut self) {
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

fn start_nginx(image: &Pushed, big_digest: &str, big: &[u8]) -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().join("root");
    let repo = root.join("v2").join(REPO);
    fs::create_dir_all(repo.join("manifests")).unwrap();
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(root.join("v2").join("index.html"), "{}").unwrap();
    fs::write(repo.join("manifests").join(&image.digest), &image.manifest).unwrap();
    fs::write(repo.join("manifests").join("v1"), &image.manifest).unwrap();
    fs::write(repo.join("manifests").join("latest"), &image.manifest).unwrap();
    fs::write(repo.join("blobs").join(big_digest), big).unwrap();
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
