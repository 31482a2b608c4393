//! The foundation, end to end against the real binary: the distribution API
//! pull side, policy selection and fail-closed refusals, upstream integrity
//! and upstream faults. The real `docker-registry` is the upstream wherever it
//! can be; `MockUpstream` only where a real registry cannot misbehave. Tests
//! that only look at HTTP answers run the server in-process (`InProcess`);
//! those that read its log or metrics, or kill it, run the binary.

mod support;

use std::time::{Duration, Instant};

use support::*;

const NS: &str = "registry.test";

fn audit_all() -> String {
    policy("everything", &["registry.test/**"], "audit")
}

fn manifest_url(m: &impl Served, repo: &str, reference: &str) -> String {
    format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url())
}

fn blob_url(m: &impl Served, repo: &str, digest: &str) -> String {
    format!("{}/v2/{repo}/blobs/{digest}?ns={NS}", m.url())
}

fn get_manifest(m: &impl Served, repo: &str, reference: &str) -> Response {
    http("GET", &manifest_url(m, repo, reference), &[("Accept", MANIFEST_ACCEPT)])
}

fn head_manifest(m: &impl Served, repo: &str, reference: &str) -> Response {
    http("HEAD", &manifest_url(m, repo, reference), &[("Accept", MANIFEST_ACCEPT)])
}

/// Asserts a served manifest is exactly what was pushed.
fn assert_serves(r: &Response, image: &Pushed, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert!(r.complete, "{what}: body incomplete");
    assert_eq!(r.header("content-type"), Some(image.media_type.as_str()), "{what}");
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()), "{what}");
    assert_eq!(r.body, image.manifest, "{what}: bytes differ from upstream");
}

fn assert_heads(r: &Response, image: &Pushed, what: &str) {
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(r.header("content-type"), Some(image.media_type.as_str()), "{what}");
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()), "{what}");
    assert_eq!(r.header("content-length"), Some(image.size.to_string().as_str()), "{what}");
    assert!(r.body.is_empty(), "{what}: HEAD has a body");
}

/// Asserts an OCI error response: status, code, and that the message has every needle.
fn assert_oci_error(r: &Response, statuses: &[u16], code: &str, needles: &[&str]) {
    assert!(statuses.contains(&r.status), "status {} not in {statuses:?}: {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some(code), "{}", r.text());
    let message = r.oci_error_message().unwrap_or_else(|| panic!("no errors[0].message: {}", r.text()));
    for n in needles {
        assert!(message.contains(n), "message {message:?} lacks {n:?}");
    }
}

#[test]
fn the_base_endpoint_answers_200_with_the_api_version_header() {
    let registry = Registry::start();
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    let r = http("GET", &format!("{}/v2/", m.url()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    let r = http("HEAD", &format!("{}/v2/", m.url()), &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_manifest_by_tag_passes_an_audit_policy_byte_for_byte() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "by-tag");
    let m = InProcess::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    assert_serves(&get_manifest(&m, "team-a/app", "v1"), &image, "GET by tag");
    assert_heads(&head_manifest(&m, "team-a/app", "v1"), &image, "HEAD by tag");
}

#[test]
fn a_manifest_by_digest_passes_an_audit_policy_byte_for_byte() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "by-digest");
    let m = InProcess::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    assert_heads(&head_manifest(&m, "team-a/app", &image.digest), &image, "HEAD by digest");
    assert_serves(&get_manifest(&m, "team-a/app", &image.digest), &image, "GET by digest");
}

#[test]
fn a_request_without_ns_uses_the_default_upstream() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "no-ns");
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    let r = http("GET", &format!("{}/v2/team-a/app/manifests/v1", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
    assert_serves(&r, &image, "GET without ns=");
}

#[test]
fn a_multi_arch_index_and_each_platform_manifest_are_served() {
    let registry = Registry::start();
    let index = push_multiarch(&registry.host, "team-a/multi", "v1", "multi");
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    assert_serves(&get_manifest(&m, "team-a/multi", "v1"), &index, "index by tag");
    for child in &index.children {
        assert_serves(&get_manifest(&m, "team-a/multi", &child.digest), child, &format!("{:?}", child.platform));
    }
}

#[test]
fn an_audit_allow_is_logged_with_what_would_have_been_refused() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "audit-log");
    let m = Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    assert_eq!(get_manifest(&m, "team-a/app", "v1").status, 200);
    let logs = m.wait_for_log(&format!("registry.test/team-a/app@{}", image.digest), Duration::from_secs(5));
    let line = logs.lines().find(|l| l.contains(&image.digest)).unwrap();
    assert!(line.contains("allow"), "{line}");
    assert!(line.contains("audit mode"), "{line}");
    assert!(line.contains("team-a"), "{line}");
}

#[test]
fn a_manifest_no_policy_matches_is_refused_with_an_oci_denied_error() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-b/app", "v1", "no-policy");
    let m = Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    for (reference, image_name) in [
        ("v1", "registry.test/team-b/app:v1".to_string()),
        (image.digest.as_str(), format!("registry.test/team-b/app@{}", image.digest)),
    ] {
        let r = get_manifest(&m, "team-b/app", reference);
        assert_oci_error(
            &r,
            &[403],
            "DENIED",
            &[&format!("sigmirror refused {image_name}: no policy's scope matches registry.test/team-b/app")],
        );
        assert!(!r.text().contains("\"schemaVersion\""), "a refusal must not carry the manifest: {}", r.text());
        let h = head_manifest(&m, "team-b/app", reference);
        assert_eq!(h.status, 403, "HEAD {reference}");
        assert_eq!(h.header("docker-content-digest"), None, "HEAD {reference} leaks the digest header");
        let logs = m.wait_for_log(&image_name, Duration::from_secs(5));
        let line = logs.lines().find(|l| l.contains(&image_name)).unwrap();
        assert!(line.contains("deny"), "{line}");
    }
    // Refused before upstream was asked: a tag refusal does not reveal the
    // digest it points at, and nothing was fetched.
    let r = get_manifest(&m, "team-b/app", "v1");
    assert!(!r.text().contains(&image.digest), "{}", r.text());
    assert_eq!(m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\"}"), 0);
}

#[test]
fn an_enforce_policy_without_verifiers_refuses_naming_the_policy_and_the_reason() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "enforce-empty");
    let m =
        Sigmirror::start(&mirror_config(&registry.url(), &policy("strict-a", &["registry.test/team-a/**"], "enforce")));
    for reference in ["v1", image.digest.as_str()] {
        let r = get_manifest(&m, "team-a/app", reference);
        assert_oci_error(
            &r,
            &[403],
            "DENIED",
            &["strict-a", &format!("registry.test/team-a/app@{}", image.digest), "no signature verifier configured"],
        );
        assert_eq!(head_manifest(&m, "team-a/app", reference).status, 403, "HEAD {reference}");
    }
}

#[test]
fn the_most_specific_policy_scope_decides() {
    let registry = Registry::start();
    push_image(&registry.host, "team-a/app", "v1", "specific-app");
    let other = push_image(&registry.host, "team-a/other", "v1", "specific-other");
    let policies = format!(
        "{}\n{}",
        policy("broad-audit", &["registry.test/**"], "audit"),
        policy("strict-app", &["registry.test/team-a/app"], "enforce")
    );
    let m = Sigmirror::start(&mirror_config(&registry.url(), &policies));
    assert_oci_error(&get_manifest(&m, "team-a/app", "v1"), &[403], "DENIED", &["strict-app"]);
    assert_serves(&get_manifest(&m, "team-a/other", "v1"), &other, "covered by the broad audit policy");
}

#[test]
fn an_unknown_registry_is_refused_without_contacting_any_upstream() {
    let mock = MockUpstream::start();
    let image = build_image("unknown-ns", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    let m = Sigmirror::start(&mirror_config(&mock.url(), &policy("all", &["**"], "audit")));
    for path in ["manifests/v1", &format!("blobs/{}", image.layer_digests[0]), "tags/list"] {
        let r =
            http("GET", &format!("{}/v2/team-a/app/{path}?ns=evil.example", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
        assert!(matches!(r.status, 403 | 404), "{path}: {} {}", r.status, r.text());
        let code = r.oci_error_code().unwrap_or_else(|| panic!("{path}: not an OCI error: {}", r.text()));
        assert!(matches!(code.as_str(), "DENIED" | "NAME_UNKNOWN"), "{path}: {code}");
        assert!(r.text().contains("evil.example"), "{path}: the refusal should name the registry: {}", r.text());
    }
    assert_eq!(mock.count_prefix("/v2/team-a/"), 0, "upstream was contacted: {:?}", mock.requests());
    // Control: the configured registry name does reach the mock.
    assert_eq!(get_manifest(&m, "team-a/app", "v1").status, 200);
    assert_eq!(mock.count("/v2/team-a/app/manifests/v1"), 1, "{:?}", mock.requests());
}

#[test]
fn a_request_without_ns_is_refused_when_no_upstream_is_default() {
    let mock = MockUpstream::start();
    let image = build_image("no-default", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[upstream]]\nregistry = \"registry.test\"\nurl = \"{}\"\ndangerous_plain_http = true\n\n{}",
        mock.url(),
        audit_all()
    );
    let m = Sigmirror::start(&config);
    let r = http("GET", &format!("{}/v2/team-a/app/manifests/v1", m.url()), &[("Accept", MANIFEST_ACCEPT)]);
    assert!(matches!(r.status, 403 | 404), "{} {}", r.status, r.text());
    assert!(r.oci_error_code().is_some(), "{}", r.text());
    assert_eq!(mock.count_prefix("/v2/team-a/"), 0, "{:?}", mock.requests());
    assert_serves(&get_manifest(&m, "team-a/app", "v1"), &image, "with ns=");
}

#[test]
fn write_methods_are_refused_with_405_unsupported_and_change_nothing_upstream() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "writes");
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    let base = m.url();
    let cases = [
        ("PUT", format!("/v2/team-a/app/manifests/v1?ns={NS}")),
        ("DELETE", format!("/v2/team-a/app/manifests/{}?ns={NS}", image.digest)),
        ("POST", format!("/v2/team-a/app/blobs/uploads/?ns={NS}")),
        ("PATCH", format!("/v2/team-a/app/blobs/uploads/abc?ns={NS}")),
        ("DELETE", format!("/v2/team-a/app/blobs/{}?ns={NS}", image.layer_digests[0])),
    ];
    for (method, path) in &cases {
        let r = http_body(method, &format!("{base}{path}"), &[("Content-Type", OCI_MANIFEST)], &image.manifest);
        assert_oci_error(&r, &[405], "UNSUPPORTED", &[]);
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    // Upstream still has everything.
    let direct = http("GET", &format!("{}/v2/team-a/app/manifests/v1", registry.url()), &[("Accept", OCI_MANIFEST)]);
    assert_eq!(direct.body, image.manifest);
    let direct = http("HEAD", &format!("{}/v2/team-a/app/blobs/{}", registry.url(), image.layer_digests[0]), &[]);
    assert_eq!(direct.status, 200);
}

#[test]
fn blobs_stream_with_the_right_bytes_and_headers() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "blobs");
    // A multi-megabyte blob, so the stream really is streamed in many chunks.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let big_digest = push_blob(&registry.host, "team-a/app", &big);
    let m = Sigmirror::start(&mirror_config(&registry.url(), &audit_all()));
    let blobs =
        [(&image.layer_digests[0], &image.layers[0]), (&image.config_digest, &image.config), (&big_digest, &big)];
    for (digest, bytes) in blobs {
        let r = http("GET", &blob_url(&m, "team-a/app", digest), &[]);
        assert_eq!(r.status, 200, "{digest}: {}", r.text());
        assert!(r.complete, "{digest}: incomplete body");
        assert_eq!(r.body.len(), bytes.len(), "{digest}");
        assert!(r.body == *bytes, "{digest}: wrong bytes");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        let h = http("HEAD", &blob_url(&m, "team-a/app", digest), &[]);
        assert_eq!(h.status, 200, "HEAD {digest}");
        assert_eq!(h.header("content-length"), Some(bytes.len().to_string().as_str()), "HEAD {digest}");
        assert_eq!(h.header("docker-content-digest"), Some(digest.as_str()), "HEAD {digest}");
    }
}

#[test]
fn a_blob_of_a_repository_no_policy_covers_is_refused() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-b/app", "v1", "blob-scope");
    let m = InProcess::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    let r = http("GET", &blob_url(&m, "team-b/app", &image.layer_digests[0]), &[]);
    assert_oci_error(&r, &[403], "DENIED", &["registry.test/team-b/app"]);
    assert!(find_bytes(&r.body, &image.layers[0][..64]).is_none(), "the blob leaked");
}

#[test]
fn missing_manifests_and_blobs_are_404_with_the_oci_code() {
    let registry = Registry::start();
    push_image(&registry.host, "team-a/app", "v1", "missing");
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    assert_oci_error(&get_manifest(&m, "team-a/app", "nope"), &[404], "MANIFEST_UNKNOWN", &[]);
    let absent = sha256_digest(b"absent");
    assert_oci_error(&get_manifest(&m, "team-a/app", &absent), &[404], "MANIFEST_UNKNOWN", &[]);
    assert_oci_error(&http("GET", &blob_url(&m, "team-a/app", &absent), &[]), &[404], "BLOB_UNKNOWN", &[]);
}

#[test]
fn tags_list_is_proxied() {
    let registry = Registry::start();
    push_image(&registry.host, "team-a/app", "v1", "tags-1");
    push_image(&registry.host, "team-a/app", "v2", "tags-2");
    let m = InProcess::start(&mirror_config(&registry.url(), &audit_all()));
    let r = http("GET", &format!("{}/v2/team-a/app/tags/list?ns={NS}", m.url()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], "team-a/app");
    let mut tags: Vec<&str> = v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
}

#[test]
fn tags_list_pagination_parameters_reach_upstream_without_ns() {
    // distribution 2.8 ignores `n` on tags/list, so a mock shows what was forwarded.
    let mock = MockUpstream::start();
    mock.set("/v2/team-a/app/tags/list", Reply::json(200, r#"{"name":"team-a/app","tags":["v2"]}"#));
    let m = InProcess::start(&mirror_config(&mock.url(), &audit_all()));
    let r = http("GET", &format!("{}/v2/team-a/app/tags/list?ns={NS}&n=1&last=v1", m.url()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["v2"]));
    let forwarded: Vec<String> =
        mock.requests().into_iter().filter(|(_, t)| t.contains("/tags/list")).map(|(_, t)| t).collect();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    let query = forwarded[0].split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params: Vec<&str> = query.split('&').collect();
    params.sort();
    assert_eq!(params, ["last=v1", "n=1"], "forwarded {}", forwarded[0]);
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_never_reaches_the_client_complete() {
    let mock = MockUpstream::start();
    let real: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256_digest(&real);
    let mut wrong = real.clone();
    wrong[299_999] ^= 0xff; // same length, last byte flipped
    mock.blob("team-a/app", &digest, &wrong);
    let short_digest = sha256_digest(b"the real small blob");
    mock.blob("team-a/app", &short_digest, b"a tampered small blob");
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));

    for (d, bad) in [(&digest, &wrong[..]), (&short_digest, &b"a tampered small blob"[..])] {
        for attempt in 0..2 {
            let r = try_http("GET", &blob_url(&m, "team-a/app", d), &[]);
            if let Ok(r) = r {
                assert!(
                    !(r.status == 200 && r.complete),
                    "attempt {attempt}: client received a complete 200 body for {d} ({} bytes)",
                    r.body.len()
                );
                assert!(r.body.len() < bad.len() || r.status != 200, "attempt {attempt}: whole wrong blob delivered");
            }
        }
    }
    assert!(mock.count(&format!("/v2/team-a/app/blobs/{digest}")) >= 2, "the second attempt must go upstream again");
    m.wait_for_log(&digest, Duration::from_secs(5));
}

#[test]
fn a_blob_cut_off_by_upstream_is_cut_off_for_the_client() {
    let mock = MockUpstream::start();
    let real: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256_digest(&real);
    mock.set(
        &format!("/v2/team-a/app/blobs/{digest}"),
        Reply::Truncated { status: 200, headers: vec![], body: real.clone(), send: 100_000 },
    );
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    if let Ok(r) = try_http("GET", &blob_url(&m, "team-a/app", &digest), &[]) {
        assert!(!(r.status == 200 && r.complete), "client got a complete response of {} bytes", r.body.len());
    }
}

#[test]
fn a_manifest_whose_bytes_do_not_match_the_digest_asked_for_is_refused() {
    let mock = MockUpstream::start();
    let real = build_image("real", "amd64");
    let forged = build_image("forged", "amd64");
    // Asked for `real.digest`, upstream answers with other bytes (and claims the asked digest).
    mock.manifest_claiming("team-a/app", &real.digest, OCI_MANIFEST, &forged.manifest, &real.digest);
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let r = get_manifest(&m, "team-a/app", &real.digest);
    assert_oci_error(&r, &[502], "MANIFEST_INVALID", &[]);
    assert!(find_bytes(&r.body, &forged.manifest).is_none());
    assert_eq!(head_manifest(&m, "team-a/app", &real.digest).status, 502);
}

#[test]
fn a_tag_whose_declared_digest_does_not_match_its_bytes_is_refused() {
    let mock = MockUpstream::start();
    let real = build_image("real-tag", "amd64");
    let forged = build_image("forged-tag", "amd64");
    mock.manifest_claiming("team-a/app", "v1", OCI_MANIFEST, &forged.manifest, &real.digest);
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let r = get_manifest(&m, "team-a/app", "v1");
    assert_oci_error(&r, &[502], "MANIFEST_INVALID", &[]);
}

#[test]
fn a_manifest_fetched_by_digest_is_served_from_cache_the_second_time() {
    let mock = MockUpstream::start();
    let image = build_image("cached", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let path = format!("/v2/team-a/app/manifests/{}", image.digest);
    assert_serves(&get_manifest(&m, "team-a/app", &image.digest), &image, "first");
    let first = mock.count(&path);
    assert!(first >= 1);
    assert_serves(&get_manifest(&m, "team-a/app", &image.digest), &image, "second");
    assert_heads(&head_manifest(&m, "team-a/app", &image.digest), &image, "head");
    assert_eq!(mock.count(&path), first, "{:?}", mock.requests());
}

#[test]
fn an_unreachable_upstream_gives_a_5xx_oci_error() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let m = Sigmirror::start(&mirror_config(&dead, &audit_all()));
    let started = Instant::now();
    let r = get_manifest(&m, "team-a/app", "v1");
    assert!(matches!(r.status, 502..=504), "{} {}", r.status, r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("UNAVAILABLE"), "{}", r.text());
    let r = http("GET", &blob_url(&m, "team-a/app", &sha256_digest(b"x")), &[]);
    assert!(matches!(r.status, 502..=504), "{} {}", r.status, r.text());
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn an_upstream_server_error_is_a_502_not_a_pass_through() {
    let mock = MockUpstream::start();
    mock.set("/v2/team-a/app/manifests/v1", Reply::json(500, r#"{"errors":[{"code":"UNKNOWN","message":"boom"}]}"#));
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let r = get_manifest(&m, "team-a/app", "v1");
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.text());
    assert!(r.oci_error_code().is_some(), "{}", r.text());
}

#[test]
fn a_hanging_upstream_times_out_with_504() {
    let mock = MockUpstream::start();
    mock.set("/v2/team-a/app/manifests/v1", Reply::Hang);
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[upstream]]\nregistry = \"registry.test\"\nurl = \
         \"{}\"\ndangerous_plain_http = true\nrequest_timeout_secs = 2\n\n{}",
        mock.url(),
        audit_all()
    );
    let m = Sigmirror::start(&config);
    let started = Instant::now();
    let r = get_manifest(&m, "team-a/app", "v1");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("UNAVAILABLE"));
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn sigmirror_serves_again_after_being_killed() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "restart");
    let mut m = Sigmirror::start(&mirror_config(&registry.url(), &audit_all()));
    assert_serves(&get_manifest(&m, "team-a/app", "v1"), &image, "before");
    let addr = m.addr.clone();
    m.kill9();
    assert!(try_http("GET", &format!("http://{addr}/v2/"), &[]).is_err(), "still answering after kill -9");
    m.restart();
    assert_eq!(m.addr, addr);
    assert_serves(&get_manifest(&m, "team-a/app", "v1"), &image, "after restart");
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_bearer_challenge_from_upstream_is_answered_with_the_token_dance() {
    let mock = MockUpstream::start();
    let challenge =
        format!("Bearer realm=\"{}/token\",service=\"mock\",scope=\"repository:team-a/app:pull\"", mock.url());
    let unauthorized = Reply::Full {
        status: 401,
        headers: vec![("WWW-Authenticate".into(), challenge), ("Content-Type".into(), "application/json".into())],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
    };
    // The registry refuses everything, even with the token it hands out.
    mock.set("/v2/", unauthorized.clone());
    mock.set("/v2/team-a/app/manifests/v1", unauthorized);
    mock.set("/token", Reply::json(200, r#"{"token":"t0k3n","expires_in":300}"#));
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let r = get_manifest(&m, "team-a/app", "v1");
    assert_oci_error(&r, &[502], "UNAVAILABLE", &["upstream refused our credentials"]);
    // sigmirror asked the token endpoint named in the challenge, then retried.
    assert!(mock.count("/token") >= 1, "{:?}", mock.requests());
    assert_eq!(mock.count("/v2/team-a/app/manifests/v1"), 2, "{:?}", mock.requests());
}

#[test]
fn a_tag_list_that_is_not_one_is_refused_not_relayed() {
    let mock = MockUpstream::start();
    let marker = "<script>upstream-said-this</script>";
    mock.set(
        "/v2/team-a/app/tags/list",
        Reply::json(200, &format!(r#"{{"name":"team-a/app","tags":["v1","{marker}"]}}"#)),
    );
    mock.set("/v2/team-a/html/tags/list", Reply::json(200, marker));
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    for repo in ["team-a/app", "team-a/html"] {
        let r = http("GET", &format!("{}/v2/{repo}/tags/list?ns={NS}", m.url()), &[]);
        assert_oci_error(&r, &[502], "UNAVAILABLE", &[]);
        assert!(!r.text().contains("upstream-said-this"), "upstream bytes relayed: {}", r.text());
    }
}

/// A referrer manifest (an OCI artifact) naming `subject`.
fn referrer_manifest(subject: &Pushed, artifact_type: &str, seed: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(b"{}"), "size": 2 },
        "layers": [{ "mediaType": "application/octet-stream", "digest": sha256_digest(seed.as_bytes()), "size": seed.len() }],
        "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size }
    }))
    .unwrap()
}

fn descriptor(bytes: &[u8], artifact_type: &str) -> serde_json::Value {
    serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": sha256_digest(bytes), "size": bytes.len(), "artifactType": artifact_type })
}

#[test]
fn a_referrers_answer_lists_only_manifests_whose_subject_is_the_digest() {
    let mock = MockUpstream::start();
    let image = build_image("referrers-subject", "amd64");
    let other = build_image("referrers-other", "amd64");
    let mine = referrer_manifest(&image, "application/vnd.example.sbom", "mine");
    let theirs = referrer_manifest(&other, "application/vnd.example.sbom", "theirs");
    let typed_other = referrer_manifest(&image, "application/vnd.example.other", "typed");
    for m in [&mine, &theirs, &typed_other] {
        mock.manifest("team-a/app", &sha256_digest(m), OCI_MANIFEST, m);
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(&mine, "application/vnd.example.sbom"), descriptor(&theirs, "application/vnd.example.sbom"),
                      descriptor(&typed_other, "application/vnd.example.other")],
        "annotations": { "upstream": "extra fields are dropped" }
    });
    mock.set(&format!("/v2/team-a/app/referrers/{}", image.digest), Reply::json(200, &index.to_string()));
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let url = format!("{}/v2/team-a/app/referrers/{}?ns={NS}", m.url(), image.digest);
    let r = http("GET", &url, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let listed: Vec<String> =
        r.json()["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, [sha256_digest(&mine), sha256_digest(&typed_other)], "{}", r.text());
    assert!(!r.text().contains("extra fields"), "{}", r.text());
    assert!(m.logs().contains(&format!("referrer {} names another subject", sha256_digest(&theirs))), "{}", m.logs());

    // Filtered by artifactType here, whatever upstream did with the parameter.
    let r = http("GET", &format!("{url}&artifactType=application/vnd.example.other"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let listed = r.json()["manifests"].as_array().unwrap().len();
    assert_eq!(listed, 1, "{}", r.text());
}

#[test]
fn a_referrers_answer_that_is_not_a_valid_index_is_refused() {
    let mock = MockUpstream::start();
    let image = build_image("referrers-bad", "amd64");
    let d = format!("sha256:{}", "ab".repeat(32));
    let bad = [
        "not json at all".to_string(),
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#.to_string(),
        r#"{"schemaVersion":1,"manifests":[]}"#.to_string(),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:zz","size":1}}]}}"#
        ),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":1}}]}}"#),
    ];
    let m = Sigmirror::start(&mirror_config(&mock.url(), &audit_all()));
    let path = format!("/v2/team-a/app/referrers/{}", image.digest);
    for body in &bad {
        mock.set(&path, Reply::json(200, body));
        let r = http("GET", &format!("{}{path}?ns={NS}", m.url()), &[]);
        // A descriptor with a bad digest is dropped; anything not an index is refused.
        if r.status == 200 {
            assert_eq!(r.json()["manifests"], serde_json::json!([]), "{body} gave {}", r.text());
        } else {
            assert_oci_error(&r, &[502], "UNAVAILABLE", &[]);
        }
        assert!(!r.text().contains("not json") && !r.text().contains("sha256:zz"), "{}", r.text());
    }
    // The three that are not indexes at all are refused outright.
    for body in &bad[..3] {
        mock.set(&path, Reply::json(200, body));
        let r = http("GET", &format!("{}{path}?ns={NS}", m.url()), &[]);
        assert_eq!(r.status, 502, "{body}: {}", r.text());
    }
}

#[test]
fn a_client_head_by_tag_is_a_head_upstream_and_never_a_get_of_the_tag() {
    let mock = MockUpstream::start();
    let image = build_image("head-upstream", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    // tag_ttl_secs = 0: every client HEAD resolves the tag upstream.
    let m = Sigmirror::start(&mirror_config(&mock.url(), &format!("[cache]\ntag_ttl_secs = 0\n\n{}", audit_all())));
    for _ in 0..3 {
        let h = head_manifest(&m, "team-a/app", "v1");
        assert_heads(&h, &image, "HEAD v1");
    }
    let tag_path = "/v2/team-a/app/manifests/v1";
    let digest_path = format!("/v2/team-a/app/manifests/{}", image.digest);
    let requests = mock.requests();
    let on = |method: &str, path: &str| {
        requests.iter().filter(|(m, t)| m == method && t.split('?').next() == Some(path)).count()
    };
    assert_eq!(on("GET", tag_path), 0, "a client HEAD became an upstream GET of the tag: {requests:?}");
    assert_eq!(on("HEAD", tag_path), 3, "{requests:?}");
    // The bytes are needed once, to verify; later HEADs use the cached manifest.
    assert_eq!(on("GET", &digest_path), 1, "{requests:?}");
}

#[test]
fn the_log_written_to_a_file_carries_no_terminal_colour_codes() {
    let registry = Registry::start();
    let m = Sigmirror::start(&mirror_config(&registry.url(), &audit_all()));
    // A refusal, so the decision log has a line with fields.
    let r = http("GET", &format!("{}/v2/x/manifests/v1?ns=evil.example", m.url()), &[]);
    assert_eq!(r.status, 403);
    let logs = m.wait_for_log("evil.example", Duration::from_secs(5));
    assert!(logs.contains("decision=deny "), "{logs}");
    assert!(!logs.contains('\u{1b}'), "escape codes in the log file:\n{logs}");
}
