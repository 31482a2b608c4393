//! The disk blob cache, end to end: the real `docker-registry` upstream
//! (requests counted from its own access log), images signed with Sigstore's
//! `sigstore` crate and an enforcing policy, the real sigmirror binary, and
//! the real containerd for the second-pull test. `MockUpstream` only where a
//! real registry cannot be made slow.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use signing::*;
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";
const MIB: usize = 1 << 20;

/// A mirror whose enforcing policy trusts `key`, with `[cache] <cache>`.
fn mirror_trusting(registry_url: &str, key: &CosignKey, cache: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    Sigmirror::start_in(dir, &config(registry_url, cache))
}

fn config(registry_url: &str, cache: &str) -> String {
    let policy = "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
                  cosign_keys = [\"release.pub\"]\n";
    mirror_config(registry_url, &format!("{policy}\n[cache]\n{cache}\n"))
}

/// Pushes a signed image whose layer holds `bytes` bytes, under `tag`.
fn push_signed(registry: &Registry, key: &CosignKey, tag: &str, bytes: usize) -> Pushed {
    let image = build_big_image(&format!("blobcache-{tag}"), bytes);
    push_built(&registry.host, REPO, Some(tag), &image);
    sign_and_push(&registry.host, REPO, &image.digest, key, "registry.test/team-a/app");
    image
}

fn get_manifest(m: &Sigmirror, reference: &str) -> Response {
    let r =
        http("GET", &format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
    assert_eq!(r.status, 200, "manifest {reference}: {}", r.text());
    r
}

fn blob(m: &Sigmirror, method: &str, digest: &str, headers: &[(&str, &str)]) -> Response {
    http(method, &format!("{}/v2/{REPO}/blobs/{digest}?ns={NS}", m.url()), headers)
}

fn upstream_blob_gets(registry: &Registry, digest: &str) -> usize {
    registry.requests("GET", &format!("/v2/{REPO}/blobs/{digest}"))
}

fn assert_whole(r: &Response, bytes: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body[..r.body.len().min(300)]));
    assert!(r.complete, "{what}: body incomplete");
    assert!(r.body == bytes, "{what}: {} bytes, not the blob's {}", r.body.len(), bytes.len());
}

fn cached_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(data_dir.join("blobs/sha256")).into_iter().flatten().flatten() {
        for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            out.push(f.path());
        }
    }
    out
}

fn blob_file(data_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[test]
fn a_herd_of_clients_makes_one_upstream_fetch_per_blob_and_every_client_gets_the_whole_blob() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let image = push_signed(&registry, &key, "herd", 4 * MIB);
    let m = mirror_trusting(&registry.url(), &key, "");
    get_manifest(&m, "herd");
    let layer = Arc::new(image.layers[0].clone());
    let digest = image.layer_digests[0].clone();
    // The push itself HEADs each blob first.
    let heads = registry.requests("HEAD", &format!("/v2/{REPO}/blobs/{digest}"));
    let url = Arc::new(m.url());
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (url, digest) = (url.clone(), digest.clone());
            thread::spawn(move || {
                let r = http("GET", &format!("{url}/v2/{REPO}/blobs/{digest}?ns={NS}"), &[]);
                (i, r)
            })
        })
        .collect();
    for c in clients {
        let (i, r) = c.join().unwrap();
        assert_whole(&r, &layer, &format!("client {i}"));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }
    assert_eq!(upstream_blob_gets(&registry, &digest), 1, "32 concurrent clients, one upstream GET");
    // Later requests, GET and HEAD, come from disk.
    assert_whole(&blob(&m, "GET", &digest, &[]), &layer, "from cache");
    let head = blob(&m, "HEAD", &digest, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(layer.len().to_string().as_str()));
    assert_eq!(upstream_blob_gets(&registry, &digest), 1);
    assert_eq!(registry.requests("HEAD", &format!("/v2/{REPO}/blobs/{digest}")), heads, "HEAD answered from the cache");
    assert_eq!(cached_files(&m.dir.path().join("data")), vec![blob_file(&m.dir.path().join("data"), &digest)]);
}

#[test]
fn a_follower_that_joins_mid_download_receives_the_complete_blob_from_the_same_download() {
    // A real registry cannot be made slow: the mock drips the layer out over
    // about two seconds, and a second client joins after the first bytes.
    let mock = MockUpstream::start();
    let image = build_big_image("follower", 2 * MIB);
    mock.serve_image(REPO, "v1", &image);
    let digest = image.layer_digests[0].clone();
    let layer = image.layers[0].clone();
    mock.set(
        &format!("/v2/{REPO}/blobs/{digest}"),
        Reply::Drip {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: layer.clone(),
            chunk: 64 << 10,
            every: Duration::from_millis(60),
        },
    );
    // Audit mode: the mock has no signatures; blob access is still logged.
    let m = Sigmirror::start(&mirror_config(&mock.url(), &policy("everything", &["registry.test/**"], "audit")));
    get_manifest(&m, "v1");
    let url = format!("{}/v2/{REPO}/blobs/{digest}?ns={NS}", m.url());
    let first = {
        let url = url.clone();
        thread::spawn(move || http("GET", &url, &[]))
    };
    wait_for("the download to start", Duration::from_secs(10), Duration::from_millis(20), || {
        (mock.count(&format!("/v2/{REPO}/blobs/{digest}")) == 1).then_some(())
    });
    thread::sleep(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let second = http("GET", &url, &[]);
    assert_whole(&second, &layer, "follower");
    assert_whole(&first.join().unwrap(), &layer, "first client");
    assert_eq!(mock.count(&format!("/v2/{REPO}/blobs/{digest}")), 1, "the follower joined the running download");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn ranges_are_served_from_the_cache_and_bad_ranges_get_416() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let image = push_signed(&registry, &key, "range", MIB);
    let m = mirror_trusting(&registry.url(), &key, "");
    get_manifest(&m, "range");
    let (digest, layer) = (&image.layer_digests[0], &image.layers[0]);
    let size = layer.len();

    // A Range on an uncached blob waits for the verified download.
    let r = blob(&m, "GET", digest, &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.header("content-range"), Some(format!("bytes 1000-{}/{size}", size - 1).as_str()));
    assert!(r.body == layer[1000..], "resumed bytes");
    for (range, want) in [("bytes=0-99", &layer[..100]), ("bytes=-10", &layer[size - 10..])] {
        let r = blob(&m, "GET", digest, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert!(r.body == want, "{range}");
    }
    for bad in [format!("bytes={size}-"), "bytes=9-3".to_string(), "bytes=0-1,5-6".to_string(), "pages=1-2".into()] {
        let r = blob(&m, "GET", digest, &[("Range", bad.as_str())]);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("content-range"), Some(format!("bytes */{size}").as_str()), "{bad}");
    }
    assert_eq!(upstream_blob_gets(&registry, digest), 1);
}

#[test]
fn eviction_keeps_the_cache_under_blob_max_bytes_least_recently_used_first() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let images: Vec<Pushed> = (0..3).map(|i| push_signed(&registry, &key, &format!("evict{i}"), MIB)).collect();
    let bound = 2 * MIB + MIB / 2;
    let m = mirror_trusting(&registry.url(), &key, &format!("blob_max_bytes = {bound}"));
    for (i, image) in images.iter().enumerate() {
        get_manifest(&m, &format!("evict{i}"));
        assert_whole(&blob(&m, "GET", &image.layer_digests[0], &[]), &image.layers[0], "layer");
    }
    let data = m.dir.path().join("data");
    let total: u64 = cached_files(&data).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(total <= bound as u64, "{total} bytes cached, bound {bound}");
    assert!(!blob_file(&data, &images[0].layer_digests[0]).exists(), "the least recently used layer was evicted");
    assert!(blob_file(&data, &images[2].layer_digests[0]).exists(), "the newest layer is kept");
    assert!(m.metric("sigmirror_blob_cache_evictions_total") >= 1);
    // An evicted blob is fetched again, correctly.
    assert_whole(&blob(&m, "GET", &images[0].layer_digests[0], &[]), &images[0].layers[0], "after eviction");
    assert_eq!(upstream_blob_gets(&registry, &images[0].layer_digests[0]), 2);
}

#[test]
fn a_restart_keeps_the_cache_and_never_serves_a_corrupted_file_or_a_leftover_temp_file() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let kept = push_signed(&registry, &key, "kept", MIB);
    let rotted = push_signed(&registry, &key, "rotted", MIB);
    let mut m = mirror_trusting(&registry.url(), &key, "");
    for (tag, image) in [("kept", &kept), ("rotted", &rotted)] {
        get_manifest(&m, tag);
        assert_whole(&blob(&m, "GET", &image.layer_digests[0], &[]), &image.layers[0], tag);
    }
    m.kill9();
    let data = m.dir.path().join("data");
    // Bit rot in one file; a download an earlier run left unfinished.
    let rotten = blob_file(&data, &rotted.layer_digests[0]);
    let mut bytes = fs::read(&rotten).unwrap();
    bytes[4096] ^= 0x01;
    fs::write(&rotten, &bytes).unwrap();
    let leftover = data.join("blobs/tmp").join(format!("{}-7", kept.layer_digests[0].trim_start_matches("sha256:")));
    fs::write(&leftover, b"half a download").unwrap();
    m.restart();
    for tag in ["kept", "rotted"] {
        get_manifest(&m, tag);
    }
    assert!(!leftover.exists(), "unfinished downloads are removed at start");
    assert_whole(&blob(&m, "GET", &kept.layer_digests[0], &[]), &kept.layers[0], "kept across the restart");
    assert_eq!(upstream_blob_gets(&registry, &kept.layer_digests[0]), 1, "served from disk after the restart");
    assert_whole(&blob(&m, "GET", &rotted.layer_digests[0], &[]), &rotted.layers[0], "rotted file replaced");
    assert_eq!(upstream_blob_gets(&registry, &rotted.layer_digests[0]), 2, "the corrupt file was fetched again");
    assert_eq!(m.metric("sigmirror_blob_cache_corrupt_total"), 1);
    assert_eq!(fs::read(&rotten).unwrap(), rotted.layers[0], "and the good bytes are cached now");
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop. Needs root, as CI
/// runs: a full disk is made real, not simulated.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_still_serves_the_pull_uncached_and_counts_it() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let image = push_signed(&registry, &key, "full", 3 * MIB);
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    // The blob directory is a 1 MiB filesystem: the 3 MiB layer's download
    // runs out of space part way, after clients have had the first bytes.
    let _fs = Tmpfs::mount(&dir.path().join("data/blobs"), "1m");
    let m = Sigmirror::start_in(dir, &config(&registry.url(), ""));
    get_manifest(&m, "full");
    let digest = &image.layer_digests[0];
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/v2/{REPO}/blobs/{digest}?ns={NS}", m.url());
            thread::spawn(move || http("GET", &url, &[]))
        })
        .collect();
    for c in clients {
        assert_whole(&c.join().unwrap(), &image.layers[0], "pull on a full disk");
    }
    assert!(m.metric("sigmirror_blob_cache_write_errors_total") >= 1, "the failed cache write is counted");
    // The shared download, then each client's ranged continuation: more
    // GETs than clients, which a plain stream-through would not make.
    assert!(upstream_blob_gets(&registry, digest) >= 5, "{} upstream GETs", upstream_blob_gets(&registry, digest));
    assert!(m.logs().contains("blob cache cannot be written"), "and logged:\n{}", m.logs());
    assert!(!blob_file(&m.dir.path().join("data"), digest).exists(), "nothing half-written is cached");
    // Once space is free again (a smaller blob fits), caching resumes.
    assert_whole(&blob(&m, "GET", &image.config_digest, &[]), &image.config, "config blob");
    assert!(blob_file(&m.dir.path().join("data"), &image.config_digest).exists());
}

#[test]
fn containerd_pulls_twice_through_sigmirror_and_the_second_pull_fetches_no_blob_upstream() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let image = push_signed(&registry, &key, "twice", 2 * MIB);
    let m = mirror_trusting(&registry.url(), &key, "");
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &m.addr);
    let image_ref = format!("{NS}/{REPO}:twice");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("first pull: {e}\n{}", m.logs()));
    let blobs = [&image.layer_digests[0], &image.config_digest];
    let after_first: Vec<usize> = blobs.iter().map(|d| upstream_blob_gets(&registry, d)).collect();
    assert_eq!(after_first, vec![1, 1], "the first pull fetched each blob once");
    // Forget the image and its content, so containerd must fetch every blob again.
    containerd.ctr(&["images", "rm", "--sync", &image_ref], Duration::from_secs(30)).unwrap();
    let content = containerd.ctr(&["content", "ls", "-q"], Duration::from_secs(30)).unwrap();
    assert!(!content.contains(image.layer_digests[0].as_str()), "containerd still holds the layer:\n{content}");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("second pull: {e}\n{}", m.logs()));
    let after_second: Vec<usize> = blobs.iter().map(|d| upstream_blob_gets(&registry, d)).collect();
    assert_eq!(after_second, after_first, "the second pull came from sigmirror's disk");
    assert_eq!(containerd.read_unpacked_file(&image.file.0).unwrap(), image.file.1);
}
