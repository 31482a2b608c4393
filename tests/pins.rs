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
    pinning_mirror_with(registry, key, on_tag_move, revalidate, extra_top, "")
}

/// [`pinning_mirror`] with `extra_policy` lines in its policy.
fn pinning_mirror_with(
    registry: &Registry,
    key: &CosignKey,
    on_tag_move: &str,
    revalidate: u64,
    extra_top: &str,
    extra_policy: &str,
) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npin_revalidate_secs = {revalidate}\n{extra_top}\n\
         [[upstream]]\nregistry = \"{NS}\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n\
         [[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
         cosign_keys = [\"release.pub\"]\nimmutable_tags = [\"*\", \"!latest\"]\non_tag_move = \"{on_tag_move}\"\n{extra_policy}",
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
    // tag_ttl_secs = 0: every request re-resolves a mutable tag.
    let m = pinning_mirror(&registry, &key, "deny", 0, "[cache]\ntag_ttl_secs = 0\n");
    assert_eq!(get(&m, "latest").header("docker-content-digest"), Some(a.digest.as_str()));
    let b = push_signed(&registry, "latest", "latest-b", &key);
    assert_eq!(get(&m, "latest").header("docker-content-digest"), Some(b.digest.as_str()));
}

/// `index = "children"`: an unsigned index is served, and an immutable tag
/// naming it is pinned all the same, so the tag cannot later name another
/// index of (validly signed) children.
#[test]
fn under_index_children_an_unsigned_index_pins_its_tag_and_a_move_is_refused() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let sign_children = |index: &Pushed| {
        for c in &index.children {
            sign_and_push(&registry.host, REPO, &c.digest, &key, "registry.test/team-a/app");
        }
    };
    let first = push_multiarch(&registry.host, REPO, "v1", "children-first");
    sign_children(&first);
    let mut m = pinning_mirror_with(&registry, &key, "deny", 0, "", "index = \"children\"\n");
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(first.digest.as_str()));

    // Another index, its children validly signed too, pushed to the same tag.
    let second = push_multiarch(&registry.host, REPO, "v1", "children-second");
    sign_children(&second);
    let r = get_until(&m, "v1", 403, &first.digest);
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with("policy releases refused registry.test/team-a/app:v1: "), "{msg}");
    assert!(msg.contains(&format!("tag v1 of team-a/app was pinned to {} on 20", first.digest)), "{msg}");
    assert!(msg.contains(&format!("; upstream now serves {}", second.digest)), "{msg}");
    m.kill9();
    let (ok, out) = cli(&m, &["list"]);
    assert!(ok && out.contains(&first.digest), "{out}");
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
    let (ok, out) = cli(&c, &["import", seed.path().to_str().unwrap(), "--json"]);
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

#[test]
fn a_move_is_refused_on_the_first_request_after_a_restart() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "restart-first", &key);
    // Revalidated on every request until the restart, at most hourly after it:
    // then only the stored move can refuse the first request.
    let mut m = pinning_mirror(&registry, &key, "deny", 0, "");
    assert_eq!(get(&m, "v1").status, 200);
    let second = push_signed(&registry, "v1", "restart-second", &key);
    get_until(&m, "v1", 403, &first.digest);

    let text = fs::read_to_string(m.config_path()).unwrap();
    fs::write(m.config_path(), text.replace("pin_revalidate_secs = 0", "pin_revalidate_secs = 3600")).unwrap();
    m.restart();
    let r = get(&m, "v1");
    assert_eq!(r.status, 403, "the first request after a restart served a moved tag: {}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert!(msg.contains(&format!("pinned to {}", first.digest)), "{msg}");
    assert!(msg.contains(&format!("upstream now serves {}", second.digest)), "{msg}");
    assert!(m.logs().contains("moved upstream before this start"), "{}", m.logs());
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Pushes a real Docker manifest list (schema 2 children for linux/amd64 and
/// linux/arm64) as `REPO:tag` and signs the list. Returns (list digest, amd64 child digest).
fn push_signed_docker_list(registry: &Registry, tag: &str, seed: &str, key: &CosignKey) -> (String, String) {
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let image = build_image(&format!("{seed}-{arch}"), arch);
        push_blob(&registry.host, REPO, &image.layers[0]);
        push_blob(&registry.host, REPO, &image.config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": { "mediaType": "application/vnd.docker.container.image.v1+json",
                        "digest": image.config_digest, "size": image.config.len() },
            "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                         "digest": image.layer_digests[0], "size": image.layers[0].len() }]
        }))
        .unwrap();
        let digest = push_raw_manifest(&registry.host, REPO, &sha256_digest(&manifest), DOCKER_MANIFEST, &manifest);
        children.push(serde_json::json!({
            "mediaType": DOCKER_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" }
        }));
    }
    let amd64 = children[0]["digest"].as_str().unwrap().to_string();
    let list =
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children }))
            .unwrap();
    let digest = push_raw_manifest(&registry.host, REPO, tag, DOCKER_LIST, &list);
    sign_and_push(&registry.host, REPO, &digest, key, "registry.test/team-a/app");
    (digest, amd64)
}

fn request_with_accept(m: &Sigmirror, method: &str, reference: &str, accept: &str) -> Response {
    http(method, &format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", accept)])
}

#[test]
fn the_real_registry_rewrites_a_docker_list_for_a_narrow_accept() {
    // The premise of the two tests below, checked against distribution itself.
    let registry = Registry::start();
    let key = CosignKey::generate();
    let (list, amd64) = push_signed_docker_list(&registry, "v1", "premise", &key);
    let url = format!("{}/v2/{REPO}/manifests/v1", registry.url());
    let narrow = http("GET", &url, &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(narrow.header("docker-content-digest"), Some(amd64.as_str()));
    let full = http("GET", &url, &[("Accept", MANIFEST_ACCEPT)]);
    assert_eq!(full.header("docker-content-digest"), Some(list.as_str()));
}

#[test]
fn a_narrow_accept_head_cannot_make_a_pinned_tag_look_moved() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let (list, _) = push_signed_docker_list(&registry, "v1", "narrow-head", &key);
    // Revalidate on every request, so each narrow HEAD below triggers one.
    let m = pinning_mirror(&registry, &key, "deny", 0, "");
    let r = request_with_accept(&m, "GET", "v1", MANIFEST_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(list.as_str()));
    for _ in 0..5 {
        let h = request_with_accept(&m, "HEAD", "v1", DOCKER_MANIFEST);
        // The pinned list is not what this client accepts; it is not served another object either.
        assert_eq!(h.status, 404, "narrow HEAD");
        assert_eq!(h.header("docker-content-digest"), None);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = request_with_accept(&m, "GET", "v1", DOCKER_MANIFEST);
    assert_eq!(r.oci_error_code().as_deref(), Some("MANIFEST_UNKNOWN"), "{}", r.text());
    assert!(r.oci_error_message().unwrap().contains(&format!("pinned to {list}")), "{}", r.text());
    // Let any background revalidation finish, then the tag still serves the list.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let r = request_with_accept(&m, "GET", "v1", MANIFEST_ACCEPT);
        assert_eq!(r.status, 200, "a narrow Accept made the tag look moved: {}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(list.as_str()));
    }
    assert_eq!(m.metric("sigmirror_tag_moves_total{policy=\"releases\"}"), 0);
    assert!(!m.logs().contains("tag moved upstream"), "{}", m.logs());
}

#[test]
fn a_narrow_accept_cannot_pin_a_tag_to_one_platform() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let (list, amd64) = push_signed_docker_list(&registry, "v2", "narrow-pin", &key);
    let m = pinning_mirror(&registry, &key, "deny", 3600, "");
    // The list verified by digest, so its children are vouched for (as after a containerd pull).
    assert_eq!(request_with_accept(&m, "GET", &list, MANIFEST_ACCEPT).status, 200);
    assert_eq!(request_with_accept(&m, "GET", &amd64, MANIFEST_ACCEPT).status, 200);
    // The first request for the tag comes from a client that only takes schema 2 manifests.
    let r = request_with_accept(&m, "GET", "v2", DOCKER_MANIFEST);
    assert_ne!(r.header("docker-content-digest"), Some(amd64.as_str()), "pinned to the amd64 child");
    assert_eq!(r.status, 404, "{}", r.text());
    // Every other client gets the list: the pin names it.
    let r = request_with_accept(&m, "GET", "v2", MANIFEST_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(list.as_str()));
    assert!(m.logs().contains(&format!("digest={list}")) && m.logs().contains("pinned tag"), "{}", m.logs());
}

/// A loopback port nothing listens on right now, for a config that must name
/// its admin port before the server starts (the CLI reads it from there).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_pins_cli_works_while_the_server_runs_through_admin_listen() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "admin-first", &key);
    let port = free_port();
    let m = pinning_mirror(&registry, &key, "deny", 0, &format!("admin_listen = \"127.0.0.1:{port}\""));
    assert_eq!(m.admin_addr.as_deref(), Some(format!("127.0.0.1:{port}").as_str()), "{}", m.logs());
    assert_eq!(get(&m, "v1").header("docker-content-digest"), Some(first.digest.as_str()));

    // A table for a person, with the server running on the embedded store
    // (which it holds locked: only the admin API can reach it).
    let (ok, out) = cli(&m, &["list"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["IMAGE", "DIGEST", "PINNED", "POLICY"]),
        "{out}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "registry.test/team-a/app:v1", "{out}");
    assert_eq!(row[1], first.digest, "{out}");
    assert!(row[2].starts_with("20") && row[2].ends_with('Z'), "pinned time as RFC 3339: {out}");
    assert_eq!(row[3], "releases", "{out}");
    assert_eq!(lines.last(), Some(&"1 pin(s)"), "{out}");
    // JSON with --json.
    let (ok, out) = cli(&m, &["list", "--json"]);
    assert!(ok, "{out}");
    let pins: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pins[0]["digest"], first.digest.as_str());

    // Upstream moves; the running server refuses it and the CLI shows it.
    let second = push_signed(&registry, "v1", "admin-second", &key);
    assert_eq!(get_until(&m, "v1", 403, &first.digest).status, 403);
    let (ok, out) = cli(&m, &["list", "--moved"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("IMAGE") && out.contains(&first.digest) && out.contains(&second.digest), "{out}");

    // A bare repo:tag gets a hint that the registry is needed; nothing is forgotten.
    for bare in ["alpine:3.20", "team-a/app:v1"] {
        let (ok, out) = cli(&m, &["forget", bare]);
        assert!(!ok, "{out}");
        assert!(out.contains("give the registry too") && out.contains("registry.test/library/alpine:3.20"), "{out}");
        assert!(out.contains("configured registries: registry.test"), "{out}");
    }
    let (ok, out) = cli(&m, &["forget", "registry.test/team-a/app"]);
    assert!(!ok && out.contains("names no tag"), "{out}");

    // forget goes through the running server: the very next request pins
    // the new release, with no restart.
    let (ok, out) = cli(&m, &["forget", "registry.test/team-a/app:v1"]);
    assert!(ok && out.contains("forgot registry.test/team-a/app:v1"), "{out}");
    let r = get(&m, "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(second.digest.as_str()));
    let (ok, out) = cli(&m, &["forget", "registry.test/team-a/app:v9"]);
    assert!(!ok && out.contains("no pin for registry.test/team-a/app:v9"), "{out}");

    // The move history outlives the forgotten pin.
    let (ok, out) = cli(&m, &["moves", "--json"]);
    assert!(ok, "{out}");
    let moves: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(moves[0]["pinned"], first.digest.as_str(), "{out}");
    assert_eq!(moves[0]["seen"], second.digest.as_str(), "{out}");
    let (ok, out) = cli(&m, &["moves"]);
    assert!(ok && out.starts_with("SEEN AT") && out.contains(&second.digest), "{out}");
    // No current pin has moved now.
    let (ok, out) = cli(&m, &["list", "--moved"]);
    assert!(ok && out.trim_end().ends_with("0 pinned tag(s) moved upstream"), "{out}");

    // The admin listener serves metrics and health too.
    let admin = m.admin_addr.clone().unwrap();
    assert_eq!(http("GET", &format!("http://{admin}/healthz"), &[]).status, 200);
    let metrics = http("GET", &format!("http://{admin}/metrics"), &[]);
    assert!(metrics.text().contains("sigmirror_build_info"), "{}", metrics.text());
}

#[test]
fn with_no_server_running_the_pins_cli_opens_the_store_itself_even_with_admin_listen_set() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "v1", "offline-first", &key);
    let mut m = pinning_mirror(&registry, &key, "deny", 3600, &format!("admin_listen = \"127.0.0.1:{}\"", free_port()));
    assert_eq!(get(&m, "v1").status, 200);
    m.kill9();
    let (ok, out) = cli(&m, &["list", "--json"]);
    assert!(ok, "{out}");
    let pins: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pins[0]["digest"], first.digest.as_str());
}
