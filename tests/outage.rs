//! One upstream fetch per manifest, mutable tags' `tag_ttl_secs`, and serving
//! through an upstream outage (`stale_if_error_secs`), end to end against the
//! real sigmirror binary and the real `docker-registry`. Upstream requests
//! are counted on the upstream side, by a `CountingProxy` in front of the
//! registry; the outage is the registry process killed.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use signing::*;
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";

/// A mirror of `upstream_url` whose enforcing policy trusts `key` for
/// `registry.test/team-a/**`, with `cache` in its `[cache]` table and `extra`
/// in its policy.
fn signed_mirror(upstream_url: &str, key: &CosignKey, cache: &str, extra: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let rest = format!(
        "[cache]\n{cache}\n\n[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\n\
         mode = \"enforce\"\ncosign_keys = [\"release.pub\"]\n{extra}\n"
    );
    Sigmirror::start_in(dir, &mirror_config(upstream_url, &rest))
}

fn push_signed(registry: &Registry, tag: &str, seed: &str, key: &CosignKey) -> Pushed {
    let image = push_image(&registry.host, REPO, tag, seed);
    sign_and_push(&registry.host, REPO, &image.digest, key, "registry.test/team-a/app");
    image
}

fn manifest(m: &Sigmirror, method: &str, reference: &str) -> Response {
    http(method, &format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

fn assert_served(r: &Response, image: &Pushed, what: &str, m: &Sigmirror) {
    assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), m.logs());
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()), "{what}");
}

/// Asserts the refusal of an outage: 403 DENIED, in the usual words, naming
/// the policy, `image` and that upstream is unreachable; the decision log
/// carries the same message.
fn assert_refused_as_unreachable(r: &Response, image: &str, m: &Sigmirror) {
    assert_eq!(r.status, 403, "{image}: {}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    let expected = format!(
        "policy releases refused {image}: upstream is unreachable (cannot reach upstream) and sigmirror holds no \
         verified answer it may serve instead"
    );
    assert_eq!(msg, expected);
    m.wait_for_log(&msg, Duration::from_secs(5));
}

/// `n` clients send `method reference` at once; each must be served `image`.
fn herd(m: &Sigmirror, n: usize, method: &str, reference: &str, image: &Pushed) {
    let start = Arc::new(Barrier::new(n));
    let url = format!("{}/v2/{REPO}/manifests/{reference}?ns={NS}", m.url());
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let (start, url, method) = (start.clone(), url.clone(), method.to_string());
            thread::spawn(move || {
                start.wait();
                http(&method, &url, &[("Accept", MANIFEST_ACCEPT)])
            })
        })
        .collect();
    for c in clients {
        let r = c.join().expect("client thread");
        assert_served(&r, image, &format!("{method} {reference}"), m);
    }
}

#[test]
fn a_herd_of_fifty_pulls_sends_one_upstream_request_per_manifest_by_tag_and_by_digest() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let by_get = push_signed(&registry, "get-herd", "herd-get", &key);
    let by_head = push_signed(&registry, "head-herd", "herd-head", &key);
    let by_digest = push_signed(&registry, "digest-herd", "herd-digest", &key);
    // Every upstream answer takes 300 ms, so the herd is all in flight at once
    // however fast the registry is; and with tag_ttl_secs = 0 no cached tag
    // resolution can stand in for coalescing.
    let proxy = CountingProxy::start(&registry.host, Duration::from_millis(300));
    let m = signed_mirror(&proxy.url(), &key, "tag_ttl_secs = 0", "");

    herd(&m, 50, "GET", "get-herd", &by_get);
    herd(&m, 50, "HEAD", "head-herd", &by_head);
    herd(&m, 50, "GET", &by_digest.digest, &by_digest);

    let path = |reference: &str| format!("/v2/{REPO}/manifests/{reference}");
    let seen = proxy.requests();
    assert_eq!(proxy.count("GET", &path("get-herd")), 1, "GET by tag: {seen:?}");
    assert_eq!(proxy.count("HEAD", &path("head-herd")), 1, "HEAD by tag: {seen:?}");
    // A HEAD by tag is answered with the manifest fetched by digest, to verify it.
    assert_eq!(proxy.count("GET", &path(&by_head.digest)), 1, "{seen:?}");
    assert_eq!(proxy.count("GET", &path(&by_digest.digest)), 1, "GET by digest: {seen:?}");
    for image in [&by_get, &by_head, &by_digest] {
        let sig = path(&format!("{}.sig", image.digest.replace(':', "-")));
        assert_eq!(proxy.count("GET", &sig), 1, "signature manifest of {}: {seen:?}", image.digest);
    }
}

#[test]
fn within_tag_ttl_a_tag_move_upstream_is_not_seen_and_after_it_is() {
    const TTL: Duration = Duration::from_secs(4);
    let registry = Registry::start();
    let key = CosignKey::generate();
    let first = push_signed(&registry, "latest", "ttl-first", &key);
    let m = signed_mirror(&registry.url(), &key, &format!("tag_ttl_secs = {}", TTL.as_secs()), "");
    let asked = Instant::now();
    assert_served(&manifest(&m, "GET", "latest"), &first, "first resolution", &m);

    let second = push_signed(&registry, "latest", "ttl-second", &key);
    assert_served(&manifest(&m, "GET", "latest"), &first, "GET within the TTL", &m);
    assert_served(&manifest(&m, "HEAD", "latest"), &first, "HEAD within the TTL", &m);
    // The tag was resolved after `asked`, so until TTL past it the answers above were within the TTL.
    assert!(asked.elapsed() < TTL, "too slow to look within the TTL ({:?})", asked.elapsed());

    let r = wait_for("the move to be seen", Duration::from_secs(20), Duration::from_millis(200), || {
        let r = manifest(&m, "GET", "latest");
        (r.header("docker-content-digest") == Some(second.digest.as_str())).then_some(r)
    });
    assert!(asked.elapsed() >= TTL, "the move was seen before the TTL was over ({:?})", asked.elapsed());
    assert_served(&r, &second, "after the TTL", &m);
    assert_served(&manifest(&m, "HEAD", "latest"), &second, "HEAD after the TTL", &m);
}

#[test]
fn when_upstream_is_killed_what_is_cached_and_verified_is_served_and_the_rest_is_refused() {
    const STALE: Duration = Duration::from_secs(5);
    let registry = Registry::start();
    let key = CosignKey::generate();
    let pinned = push_signed(&registry, "v1", "outage-pinned", &key);
    let mutable = push_signed(&registry, "latest", "outage-mutable", &key);
    let digest_only = push_signed(&registry, "by-digest", "outage-digest", &key);
    let unsigned = push_image(&registry.host, REPO, "unsigned", "outage-unsigned");
    let never = push_signed(&registry, "never", "outage-never", &key);
    // Verdicts and tags go past their TTLs during the outage, so what is
    // served below is served because of stale_if_error_secs.
    let cache =
        format!("allow_ttl_secs = 1\ndeny_ttl_secs = 1\ntag_ttl_secs = 1\nstale_if_error_secs = {}", STALE.as_secs());
    let m = signed_mirror(&registry.url(), &key, &cache, "immutable_tags = [\"v*\"]");

    assert_served(&manifest(&m, "GET", "v1"), &pinned, "pinning pull", &m);
    assert_served(&manifest(&m, "GET", &digest_only.digest), &digest_only, "pull by digest", &m);
    let unsigned_r = manifest(&m, "GET", "unsigned");
    assert_eq!(unsigned_r.status, 403, "{}", unsigned_r.text());
    // The tag's resolution is recorded between `before` and `after`.
    let before = Instant::now();
    assert_served(&manifest(&m, "GET", "latest"), &mutable, "mutable tag", &m);
    let after = Instant::now();

    drop(registry);
    // Past every TTL (1 s), well within stale_if_error_secs.
    thread::sleep(Duration::from_millis(1500));

    assert_served(&manifest(&m, "GET", "v1"), &pinned, "pinned tag while upstream is down", &m);
    assert_served(&manifest(&m, "HEAD", "v1"), &pinned, "HEAD pinned tag while upstream is down", &m);
    assert_served(
        &manifest(&m, "GET", &digest_only.digest),
        &digest_only,
        "verified digest while upstream is down",
        &m,
    );
    assert_served(&manifest(&m, "GET", "latest"), &mutable, "mutable tag while upstream is down", &m);
    assert_served(&manifest(&m, "HEAD", "latest"), &mutable, "HEAD mutable tag while upstream is down", &m);
    assert!(before.elapsed() < STALE, "too slow to look within stale_if_error_secs ({:?})", before.elapsed());
    assert!(m.metric("sigmirror_stale_answers_total{kind=\"tag\"}") >= 2, "{}", m.logs());
    assert!(m.metric("sigmirror_stale_answers_total{kind=\"verdict\"}") >= 4, "{}", m.logs());
    m.wait_for_log(
        &format!("stale answer: upstream is down, so registry.test/{REPO}:latest is answered from cache (tag"),
        Duration::from_secs(5),
    );

    // Never verified: refused, by tag (its resolution is known) and by digest.
    let unsigned_image = format!("registry.test/{REPO}@{}", unsigned.digest);
    assert_refused_as_unreachable(&manifest(&m, "GET", "unsigned"), &unsigned_image, &m);
    assert_refused_as_unreachable(&manifest(&m, "GET", &unsigned.digest), &unsigned_image, &m);
    // Never seen: nothing to answer with.
    assert_refused_as_unreachable(&manifest(&m, "GET", "never"), &format!("registry.test/{REPO}:never"), &m);
    let never_image = format!("registry.test/{REPO}@{}", never.digest);
    assert_refused_as_unreachable(&manifest(&m, "GET", &never.digest), &never_image, &m);
    assert_eq!(manifest(&m, "HEAD", "never").status, 403);

    // Past stale_if_error_secs the mutable tag's last resolution answers no more.
    thread::sleep(STALE.saturating_sub(after.elapsed()) + Duration::from_millis(200));
    assert_refused_as_unreachable(&manifest(&m, "GET", "latest"), &format!("registry.test/{REPO}:latest"), &m);
}

/// A mock serving an image as `latest`, and an audit-mode mirror of it with
/// `tag_ttl_secs = 1` and `stale_if_error_secs = stale_secs`.
fn audit_mirror_of_latest(seed: &str, stale_secs: u64) -> (MockUpstream, Pushed, Sigmirror) {
    let mock = MockUpstream::start();
    let image = build_image(seed, "amd64");
    mock.serve_image(REPO, "latest", &image);
    let rest = format!(
        "[cache]\ntag_ttl_secs = 1\nstale_if_error_secs = {stale_secs}\n\n{}",
        policy("audit", &["registry.test/**"], "audit")
    );
    let m = Sigmirror::start(&mirror_config(&mock.url(), &rest));
    (mock, image, m)
}

#[test]
fn a_5xx_from_upstream_is_an_outage_but_a_404_is_an_answer() {
    let (mock, image, m) = audit_mirror_of_latest("outage-5xx", 60);
    let get = || manifest(&m, "GET", "latest");
    assert_served(&get(), &image, "first resolution", &m);

    let tag_path = format!("/v2/{REPO}/manifests/latest");
    mock.set(&tag_path, Reply::json(503, r#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#));
    thread::sleep(Duration::from_millis(1200));
    let asked = mock.count(&tag_path);
    assert_served(&get(), &image, "503 upstream: last resolution", &m);
    assert!(mock.count(&tag_path) > asked, "the tag was not asked upstream after its TTL");
    assert_eq!(m.metric("sigmirror_stale_answers_total{kind=\"tag\"}"), 1, "{}", m.logs());

    // Deleted upstream: that is an answer, not an outage.
    mock.set(&tag_path, Reply::json(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone"}]}"#));
    let r = get();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("MANIFEST_UNKNOWN"));
}

#[test]
fn with_stale_if_error_off_an_outage_serves_no_mutable_tag() {
    let (mock, image, m) = audit_mirror_of_latest("outage-off", 0);
    assert_served(&manifest(&m, "GET", "latest"), &image, "first resolution", &m);
    mock.set(&format!("/v2/{REPO}/manifests/latest"), Reply::status(503));
    thread::sleep(Duration::from_millis(1200));
    // An audit policy refuses nothing: upstream's failure is passed on as one.
    let r = manifest(&m, "GET", "latest");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.oci_error_message().as_deref(), Some("upstream answered 503"));
}
