//! Immutable tags end to end: the real registry re-pushes a tag, the real
//! sigmirror binary keeps its pin (durably), and the CLI manages pins.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use signing::*;
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";

/// A mirror trusting `key`, pinning `v*` tags, revalidating every `revalidate` seconds.
fn pinning_mirror(
    registry: &Registry,
    key: &CosignKey,
    on_tag_move: &str,
    revalidate: u64,
    extra_top: &str,
) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npin_revalidate_secs = {revalidate}\n{extra_top}\n\
         [[upstream]]\nregistry = \"{NS}\"\nurl = \"{}\"\ndefault = true\n\n\
         [[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
         cosign_keys = [\"release.pub\"]\nimmutable_tags = [\"*\", \"!latest\"]\non_tag_move = \"{on_tag_move}\"\n",
        registry.url()
    );
    Sigmirror::start_in(dir, &config)
}

fn push_signed(registry: &Registry, tag: &str, seed: &str, key: &CosignKey) -> Pushed {
    let image = push_image(&registry.host, REPO, tag, seed);
    sign_and_push(&registry.host, REPO, &image.digest, key, "registry.test/team-a/app");
    image
}

fn get(m: &Sigmirror, reference: &str) -> Response {
    http("GET", &format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

fn cli(m: &Sigmirror, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
        .args(["pins", "--config", m.config_path().to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        (true, stdout)
    } else {
        (false, stdout + &String::from_utf8_lossy(&out.stderr))
    }
}

/// GETs `reference` until it answers `status` (at most 60 tries, 100 ms apart),
/// asserting that every 200 on the way carried `allowed_digest`.
fn get_until(m: &Sigmirror, reference: &str, status: u16, allowed_digest: &str) -> Response {
    for _ in 0..60 {
        let r = get(m, reference);
        if r.status == status {
            return r;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(allowed_digest), "a pinned tag served another digest");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{reference} never answered {status}:\n{}", m.logs());
}

#[test]
fn a_moved_tag_is_refused_under_deny_and_the_move_is_recorded() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "first", &key);
    let mut m = pinning_mirror(&registry, &key, "deny", 0, "");
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(first.digest.as_str()));

    // Re-push v1 upstream with other content that is also validly signed.
    let second = push_signed(&registry, "v1", "second", &key);
    let r = get_until(&m, "v1", 403, &first.digest);
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"));
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with("policy releases refused registry.test/team-a/app:v1: "), "{msg}");
    assert!(msg.contains(&format!("tag v1 of team-a/app was pinned to {} on 20", first.digest)), "{msg}");
    assert!(msg.contains(&format!("; upstream now serves {}", second.digest)), "{msg}");
    assert!(m.logs().contains(&msg), "the decision log should carry the same words:\n{}", m.logs());
    assert_eq!(m.metric("sigmirror_tag_moves_total{policy=\"releases\"}"), 1);
    // HEAD is refused too (containerd resolves with HEAD).
    let head = http("HEAD", &format!("{}/v2/{REPO}/manifests/v1?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
    assert_eq!(head.status, 403);
    // The digest itself is still servable: only the tag is refused.
    assert_eq!(get(&m, &first.digest).status, 200);

    // The move is kept in the store, for ops to see.
    m.kill9();
    let (ok, out) = cli(&m, &["list", "--moved"]);
    assert!(ok, "{out}");
    assert!(out.contains(&first.digest) && out.contains(&second.digest), "{out}");
}

#[test]
fn serve_pinned_keeps_serving_the_pinned_digest_and_logs_the_move() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "keep-first", &key);
    let m = pinning_mirror(&registry, &key, "serve-pinned", 0, "");
    assert_eq!(get(&m, "v1").header("docker-content-digest"), Some(first.digest.as_str()));
    let second = push_signed(&registry, "v1", "keep-second", &key);
    for _ in 0..10 {
        let r = get(&m, "v1");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(first.digest.as_str()));
        assert_eq!(r.body, first.manifest);
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = m.wait_for_log(&format!("upstream now serves {}", second.digest), Duration::from_secs(10));
    assert!(logs.contains("tag moved upstream"), "{logs}");
}

#[test]
fn a_mutable_tag_still_follows_upstream() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let a = push_signed(&registry, "latest", "latest-a", &key);
    let m = pinning_mirror(&registry, &key, "deny", 0, "");
    assert_eq!(get(&m, "latest").header("docker-content-digest"), Some(a.digest.as_str()));
    let b = push_signed(&registry, "latest", "latest-b", &key);
    assert_eq!(get(&m, "latest").header("docker-content-digest"), Some(b.digest.as_str()));
}

#[test]
fn an_unverified_tag_is_never_pinned() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    push_image(&registry.host, REPO, "v1", "unsigned-first");
    let mut m = pinning_mirror(&registry, &key, "deny", 0, "");
    assert_eq!(get(&m, "v1").status, 403);
    // Once a signed image is pushed, that is what gets pinned and served.
    let signed = push_signed(&registry, "v1", "signed-later", &key);
    let r = get_until(&m, "v1", 200, &signed.digest);
    assert_eq!(r.header("docker-content-digest"), Some(signed.digest.as_str()));
    m.kill9();
    let (ok, out) = cli(&m, &["list"]);
    assert!(ok && out.contains(&signed.digest), "{out}");
}

#[test]
fn a_pinned_tag_is_served_without_an_upstream_request() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let image = push_signed(&registry, "v1", "no-roundtrip", &key);
    let m = pinning_mirror(&registry, &key, "deny", 3600, "");
    assert_eq!(get(&m, "v1").status, 200);
    let before = m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\"}");
    assert!(before >= 2, "the first fetch resolves the tag and the signature upstream");
    for _ in 0..5 {
        let r = get(&m, "v1");
        assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()));
    }
    let after = m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\"}");
    assert_eq!(after, before, "a pinned tag went upstream");
}

#[test]
fn a_pin_survives_kill_9_right_after_the_pinning_pull() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "durable-first", &key);
    let mut m = pinning_mirror(&registry, &key, "serve-pinned", 3600, "");
    assert_eq!(get(&m, "v1").header("docker-content-digest"), Some(first.digest.as_str()));
    m.kill9();
    push_signed(&registry, "v1", "durable-second", &key);
    m.restart();
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(first.digest.as_str()), "the pin was lost in the crash");
}

#[test]
fn forget_allows_a_deliberate_re_release() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "rerelease-first", &key);
    let mut m = pinning_mirror(&registry, &key, "deny", 3600, "");
    assert_eq!(get(&m, "v1").header("docker-content-digest"), Some(first.digest.as_str()));
    let second = push_signed(&registry, "v1", "rerelease-second", &key);
    m.kill9();
    let (ok, out) = cli(&m, &["forget", "registry.test/team-a/app:v1"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&m, &["forget", "registry.test/team-a/app:v1"]);
    assert!(!ok && out.contains("no pin"), "forgetting twice should say so: {out}");
    m.restart();
    assert_eq!(get(&m, "v1").header("docker-content-digest"), Some(second.digest.as_str()));
}

#[test]
fn pins_export_import_round_trip_and_a_pins_file_seeds_the_store() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "seed-first", &key);
    let mut a = pinning_mirror(&registry, &key, "serve-pinned", 3600, "");
    assert_eq!(get(&a, "v1").status, 200);
    a.kill9();
    let (ok, exported) = cli(&a, &["export"]);
    assert!(ok, "{exported}");
    let file: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["pins"][0]["digest"], first.digest.as_str());
    assert_eq!(file["pins"][0]["tag"], "v1");

    // Upstream moves; a fresh mirror seeded from the file still serves the pin.
    push_signed(&registry, "v1", "seed-second", &key);
    let seed = tempfile::NamedTempFile::new().unwrap();
    fs::write(seed.path(), &exported).unwrap();
    let b = pinning_mirror(&registry, &key, "serve-pinned", 3600, &format!("pins_file = {:?}", seed.path()));
    assert_eq!(get(&b, "v1").header("docker-content-digest"), Some(first.digest.as_str()));

    // Import into a third, empty store reproduces the export exactly.
    let mut c = pinning_mirror(&registry, &key, "deny", 3600, "");
    c.kill9();
    let (ok, out) = cli(&c, &["import", seed.path().to_str().unwrap()]);
    assert!(ok && out.contains("\"inserted\": 1"), "{out}");
    let (ok, again) = cli(&c, &["export"]);
    assert!(ok);
    assert_eq!(again, exported);
}

#[test]
fn containerd_cannot_pull_a_tag_that_moved_upstream() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "ctr-first", &key);
    let m = pinning_mirror(&registry, &key, "deny", 0, "");
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &m.addr);
    let image_ref = format!("{NS}/{REPO}:v1");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(first.digest.as_str()));

    let second = push_signed(&registry, "v1", "ctr-second", &key);
    get_until(&m, "v1", 403, &first.digest);
    let err = containerd.pull(&image_ref, hosts.path()).expect_err("a moved tag was pulled");
    assert!(!err.contains(&second.digest) || err.contains("403") || err.contains("denied"), "{err}");
    // containerd still has the pinned image, never the moved one.
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(first.digest.as_str()));
}
