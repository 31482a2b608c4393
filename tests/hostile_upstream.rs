//! An upstream that attacks the mirror: endless bodies, redirects to where
//! sigmirror must not go, and error bodies that must not reach a client.
//! Every upstream here is a `MockUpstream`, because a real registry cannot
//! misbehave like this. Memory is read from `/proc/<pid>/status` of the real
//! binary: `VmHWM` is the most it was ever resident, so a spike between two
//! requests cannot hide.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::*;

const NS: &str = "registry.test";

/// sigmirror idles at about 20 MiB; reading a hostile body whole took it past
/// 1.8 GiB. Anything below this bound means the reads were cut short.
const RSS_BOUND_KIB: u64 = 100 * 1024;

/// Enough of an endless body to push an unbounded reader far past
/// `RSS_BOUND_KIB`, and little enough not to exhaust a shared test machine.
const ENDLESS_MAX_BYTES: usize = 256 << 20;

fn audit_all() -> String {
    policy("everything", &["registry.test/**"], "audit")
}

/// A mirror config for one default upstream at `url`, with extra keys for its
/// `[[upstream]]` table.
fn config(url: &str, upstream_keys: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[upstream]]\nregistry = \"{NS}\"\nurl = \"{url}\"\ndangerous_plain_http = true\ndefault = \
         true\n{upstream_keys}\n\n{}\n",
        audit_all()
    )
}

fn manifest_url(m: &Sigmirror, repo: &str, reference: &str) -> String {
    format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url())
}

fn blob_url(m: &Sigmirror, repo: &str, digest: &str) -> String {
    format!("{}/v2/{repo}/blobs/{digest}?ns={NS}", m.url())
}

fn endless(status: u16) -> Reply {
    Reply::Endless {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        chunk: vec![b'x'; 64 << 10],
        max_bytes: ENDLESS_MAX_BYTES,
    }
}

fn bearer_challenge(realm: &str) -> Reply {
    Reply::Full {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer realm=\"{realm}\",service=\"mock\",scope=\"repository:team-a/app:pull\""),
        )],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
    }
}

/// GET with a client-side bound, so a test never hangs on a mirror that does.
fn get(url: &str) -> (Response, Duration) {
    let started = Instant::now();
    let r = try_http_timeout("GET", url, &[("Accept", MANIFEST_ACCEPT)], &[], Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r, started.elapsed())
}

fn message(r: &Response) -> String {
    r.oci_error_message().unwrap_or_else(|| panic!("not an OCI error: {} {}", r.status, r.text()))
}

fn assert_memory_bounded(m: &Sigmirror, what: &str) {
    let peak = m.proc_status_kib("VmHWM");
    let now = m.proc_status_kib("VmRSS");
    // The figure reports quote (`--nocapture`).
    eprintln!("memory peak {what}: {peak} KiB (now {now} KiB)");
    assert!(peak < RSS_BOUND_KIB, "{what}: sigmirror peaked at {peak} KiB resident (now {now} KiB)");
}

#[test]
fn an_endless_error_body_is_cut_short_so_the_client_gets_a_quick_502_and_memory_stays_bounded() {
    let mock = MockUpstream::start();
    let digest = sha256_digest(b"endless");
    for path in [
        "/v2/team-a/app/manifests/v1".to_string(),
        "/v2/team-a/app/manifests/v2".to_string(),
        format!("/v2/team-a/app/blobs/{digest}"),
        "/v2/team-a/app/tags/list".to_string(),
    ] {
        mock.set(&path, endless(500));
    }
    let m = Sigmirror::start(&config(&mock.url(), ""));
    let urls = [
        manifest_url(&m, "team-a/app", "v1"),
        manifest_url(&m, "team-a/app", "v2"),
        manifest_url(&m, "team-a/app", "v1"),
        blob_url(&m, "team-a/app", &digest),
        format!("{}/v2/team-a/app/tags/list?ns={NS}", m.url()),
    ];
    for url in &urls {
        let (r, took) = get(url);
        assert_eq!(r.status, 502, "{url}: {}", r.text());
        assert_eq!(message(&r), "upstream answered 500", "{url}");
        assert!(took < Duration::from_secs(5), "{url}: the answer took {took:?}");
    }
    assert!(mock.total() >= urls.len(), "{:?}", mock.requests());
    assert_memory_bounded(&m, "after endless 500 bodies");
}

#[test]
fn an_endless_token_response_is_refused_and_memory_stays_bounded() {
    let mock = MockUpstream::start();
    // Like a real registry, the base endpoint challenges too.
    let challenge = bearer_challenge(&format!("{}/token", mock.url()));
    mock.set("/v2/", challenge.clone());
    mock.set("/v2/team-a/app/manifests/v1", challenge);
    mock.set("/token", endless(200));
    let m = Sigmirror::start(&config(&mock.url(), ""));
    for attempt in 0..3 {
        let (r, took) = get(&manifest_url(&m, "team-a/app", "v1"));
        assert_eq!(r.status, 502, "attempt {attempt}: {}", r.text());
        assert_eq!(message(&r), "upstream sent more than 65536 bytes for a token response", "attempt {attempt}");
        assert!(took < Duration::from_secs(10), "attempt {attempt}: the answer took {took:?}");
    }
    assert_eq!(mock.count("/token"), 3, "one token request per attempt: {:?}", mock.requests());
    assert_memory_bounded(&m, "after endless token responses");
}

#[test]
fn a_token_realm_on_another_scheme_or_a_refused_address_is_not_asked() {
    let mock = MockUpstream::start();
    mock.set("/v2/team-a/app/manifests/v1", bearer_challenge("http://169.254.169.254/latest/meta-data/token"));
    mock.set("/v2/team-a/app/manifests/v2", bearer_challenge("file:///etc/passwd"));
    let m = Sigmirror::start(&config(&mock.url(), ""));
    let (r, took) = get(&manifest_url(&m, "team-a/app", "v1"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(message(&r), "upstream pointed sigmirror at an address it does not connect to");
    assert!(took < Duration::from_secs(3), "took {took:?}: sigmirror tried to connect");
    let (r, _) = get(&manifest_url(&m, "team-a/app", "v2"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(message(&r), "upstream response is malformed");
    m.wait_for_log("169.254.169.254 is a link-local address", Duration::from_secs(5));
}

#[test]
fn a_redirected_manifest_tag_list_or_referrers_request_is_an_upstream_error_and_is_not_followed() {
    let upstream = MockUpstream::start();
    let elsewhere = MockUpstream::start();
    let image = build_image("redirected", "amd64");
    elsewhere.serve_image("team-a/app", "v1", &image);
    elsewhere.set("/v2/team-a/app/tags/list", Reply::json(200, r#"{"name":"team-a/app","tags":["v1"]}"#));
    let paths = [
        ("/v2/team-a/app/manifests/v1".to_string(), 307),
        (format!("/v2/team-a/app/manifests/{}", image.digest), 302),
        ("/v2/team-a/app/tags/list".to_string(), 301),
        (format!("/v2/team-a/app/referrers/{}", image.digest), 308),
    ];
    for (path, status) in &paths {
        upstream.set(path, Reply::redirect(*status, &format!("{}{path}", elsewhere.url())));
    }
    let m = Sigmirror::start(&config(&upstream.url(), ""));

    let manifest_refusal = "upstream redirected a manifest request; sigmirror does not follow redirects for manifests";
    for reference in ["v1", image.digest.as_str()] {
        let (r, _) = get(&manifest_url(&m, "team-a/app", reference));
        assert_eq!(r.status, 502, "{reference}: {}", r.text());
        assert_eq!(r.oci_error_code().as_deref(), Some("UNAVAILABLE"), "{}", r.text());
        assert_eq!(message(&r), manifest_refusal, "{reference}");
        assert!(!r.text().contains("schemaVersion"), "{reference}: the redirected manifest was served");
        let h = http("HEAD", &manifest_url(&m, "team-a/app", reference), &[("Accept", MANIFEST_ACCEPT)]);
        assert_eq!(h.status, 502, "HEAD {reference}");
    }
    let (r, _) = get(&format!("{}/v2/team-a/app/tags/list?ns={NS}", m.url()));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        message(&r),
        "upstream redirected a tag list request; sigmirror does not follow redirects for tag lists"
    );
    let (r, _) = get(&format!("{}/v2/team-a/app/referrers/{}?ns={NS}", m.url(), image.digest));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(message(&r).starts_with("upstream redirected a referrers request"), "{}", r.text());

    assert!(upstream.total() >= paths.len(), "{:?}", upstream.requests());
    assert_eq!(elsewhere.total(), 0, "a redirect was followed: {:?}", elsewhere.requests());
}

#[test]
fn a_blob_redirect_to_a_private_link_local_or_metadata_address_is_refused_without_connecting() {
    let upstream = MockUpstream::start();
    // The upstream is on loopback, so none of these kinds of address are its own.
    let targets = [
        "http://10.255.255.1/blob",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://100.64.0.1/blob",
        "http://192.168.0.1:8080/blob",
        "http://[fd00::1]/blob",
        "http://[fe80::1]/blob",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://0.0.0.0:80/blob",
    ];
    let digests: Vec<String> = (0..targets.len()).map(|i| sha256_digest(format!("blob {i}").as_bytes())).collect();
    for (target, digest) in targets.iter().zip(&digests) {
        upstream.set(&format!("/v2/team-a/app/blobs/{digest}"), Reply::redirect(307, target));
    }
    let m = Sigmirror::start(&config(&upstream.url(), "connect_timeout_secs = 5"));
    for (target, digest) in targets.iter().zip(&digests) {
        let (r, took) = get(&blob_url(&m, "team-a/app", digest));
        assert_eq!(r.status, 502, "{target}: {}", r.text());
        assert_eq!(r.oci_error_code().as_deref(), Some("UNAVAILABLE"), "{target}: {}", r.text());
        assert_eq!(message(&r), "upstream pointed sigmirror at an address it does not connect to", "{target}");
        // Connecting to an unroutable address would wait out the 5 s connect timeout.
        assert!(took < Duration::from_secs(3), "{target}: took {took:?}");
    }
    let logs = m.wait_for_log("169.254.169.254 is a link-local address", Duration::from_secs(5));
    assert!(logs.contains("10.255.255.1 is a private address"), "{logs}");
}

#[test]
fn a_blob_redirect_to_another_loopback_server_is_followed_without_our_credentials() {
    let upstream = MockUpstream::start();
    let storage = MockUpstream::start();
    let storage_port = storage.host.rsplit(':').next().unwrap().to_string();
    let blobs: Vec<Vec<u8>> = (0..2).map(|i| format!("layer {i} from storage ").repeat(500).into_bytes()).collect();
    let digests: Vec<String> = blobs.iter().map(|b| sha256_digest(b)).collect();
    // One by IP literal (the redirect policy checks it), one by name (the resolver does).
    let hosts = [storage.host.clone(), format!("localhost:{storage_port}")];
    for ((bytes, digest), host) in blobs.iter().zip(&digests).zip(&hosts) {
        let storage_path = format!("/storage/{}", &digest["sha256:".len()..]);
        upstream.set(
            &format!("/v2/team-a/app/blobs/{digest}"),
            Reply::redirect(307, &format!("http://{host}{storage_path}")),
        );
        storage.set(
            &storage_path,
            Reply::Full {
                status: 200,
                headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                body: bytes.clone(),
            },
        );
    }
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret-pw\n").unwrap();
    let m = Sigmirror::start_in(dir, &config(&upstream.url(), "username = \"puller\"\npassword_file = \"password\""));

    for (bytes, digest) in blobs.iter().zip(&digests) {
        let (r, _) = get(&blob_url(&m, "team-a/app", digest));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.complete, "body incomplete");
        assert_eq!(&r.body, bytes, "bytes differ from what storage served");
    }
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("puller:s3cret-pw"));
    for digest in &digests {
        let sent = upstream.request_headers(&format!("/v2/team-a/app/blobs/{digest}"));
        assert!(!sent.is_empty());
        for h in &sent {
            let auth = h.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
            assert_eq!(auth, Some(basic.as_str()), "the upstream itself gets our credentials");
        }
        let redirected = storage.request_headers(&format!("/storage/{}", &digest["sha256:".len()..]));
        assert_eq!(redirected.len(), 1, "{:?}", storage.requests());
        for h in &redirected {
            assert!(!h.iter().any(|(k, _)| k == "authorization"), "credentials crossed hosts: {h:?}");
            assert!(!h.iter().any(|(_, v)| v.contains("s3cret") || v.contains(&basic[6..])), "{h:?}");
        }
    }
    assert_memory_bounded(&m, "after blobs redirected to another host");
}

#[test]
fn blob_redirects_are_followed_for_five_hops_and_refused_at_six() {
    let upstream = MockUpstream::start();
    let storage = MockUpstream::start();
    let mut digests = Vec::new();
    for hops in [5usize, 6] {
        let bytes = format!("a blob {hops} redirects away").into_bytes();
        let digest = sha256_digest(&bytes);
        // upstream → /c<hops>/1 → … → /c<hops>/<hops>, which serves the blob.
        let hop = |k: usize| format!("/c{hops}/{k}");
        upstream.set(
            &format!("/v2/team-a/app/blobs/{digest}"),
            Reply::redirect(302, &format!("{}{}", storage.url(), hop(1))),
        );
        for k in 1..hops {
            storage.set(&hop(k), Reply::redirect(307, &format!("{}{}", storage.url(), hop(k + 1))));
        }
        storage.set(&hop(hops), Reply::Full { status: 200, headers: vec![], body: bytes.clone() });
        digests.push((hops, digest, bytes));
    }
    let m = Sigmirror::start(&config(&upstream.url(), ""));
    for (hops, digest, bytes) in &digests {
        let (r, _) = get(&blob_url(&m, "team-a/app", digest));
        if *hops <= 5 {
            assert_eq!(r.status, 200, "{hops} hops: {}", r.text());
            assert_eq!(&r.body, bytes);
        } else {
            assert_eq!(r.status, 502, "{hops} hops: {}", r.text());
            assert_eq!(message(&r), "upstream redirected a blob more than 5 times");
            assert_eq!(storage.count(&format!("/c{hops}/{hops}")), 0, "the sixth hop was followed");
        }
    }
    assert_memory_bounded(&m, "after redirect chains of five and six hops");
}

#[test]
fn no_error_a_client_receives_names_the_upstream_or_repeats_its_body() {
    const MARKER: &str = "MARKER-internal-7f3a";
    let mock = MockUpstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let marked = format!(r#"{{"errors":[{{"code":"UNKNOWN","message":"{MARKER} at http://10.9.8.7:5000/db"}}]}}"#);
    let digest = sha256_digest(b"error blob");
    mock.set("/v2/team-a/app/manifests/server-error", Reply::json(500, &marked));
    mock.set("/v2/team-a/app/manifests/unavailable", Reply::json(503, &marked));
    mock.set(
        "/v2/team-a/app/manifests/basic-401",
        Reply::Full {
            status: 401,
            headers: vec![("WWW-Authenticate".into(), format!("Basic realm=\"{MARKER}\""))],
            body: marked.clone().into_bytes(),
        },
    );
    mock.set("/v2/team-a/app/manifests/forbidden", Reply::json(403, &marked));
    mock.set("/v2/team-a/app/manifests/token-refused", bearer_challenge(&format!("{}/token", mock.url())));
    mock.set("/token", Reply::json(401, &marked));
    mock.set("/v2/team-a/app/manifests/hang", Reply::Hang);
    mock.set("/v2/team-a/app/manifests/closed", Reply::Close);
    mock.set(&format!("/v2/team-a/app/blobs/{digest}"), Reply::json(500, &marked));
    mock.set("/v2/team-a/app/tags/list", Reply::json(502, &marked));
    let config = format!(
        "{}\n[[upstream]]\nregistry = \"dead.test\"\nurl = \"http://{dead}\"\ndangerous_plain_http = true\n\n{}",
        config(&mock.url(), "request_timeout_secs = 2"),
        policy("dead", &["dead.test/**"], "audit")
    );
    let m = Sigmirror::start(&config);

    let cases = [
        ("500 with a body", manifest_url(&m, "team-a/app", "server-error"), "upstream answered 500"),
        ("503 with a body", manifest_url(&m, "team-a/app", "unavailable"), "upstream answered 503"),
        ("401 basic", manifest_url(&m, "team-a/app", "basic-401"), "upstream refused our credentials"),
        ("403", manifest_url(&m, "team-a/app", "forbidden"), "upstream refused our credentials"),
        ("token refused", manifest_url(&m, "team-a/app", "token-refused"), "upstream refused our credentials"),
        ("timeout", manifest_url(&m, "team-a/app", "hang"), "upstream did not answer within 2s"),
        ("closed", manifest_url(&m, "team-a/app", "closed"), "upstream response is malformed"),
        ("blob 500", blob_url(&m, "team-a/app", &digest), "upstream answered 500"),
        ("tags 502", format!("{}/v2/team-a/app/tags/list?ns={NS}", m.url()), "upstream answered 502"),
        ("unreachable", format!("{}/v2/team-a/app/manifests/v1?ns=dead.test", m.url()), "cannot reach upstream"),
    ];
    for (what, url, expected) in &cases {
        let (r, _) = get(url);
        assert!((500..600).contains(&r.status), "{what}: {} {}", r.status, r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        let text = r.text();
        for leak in [mock.host.as_str(), dead.as_str(), "127.0.0.1", "10.9.8.7", "http://", MARKER, "UNKNOWN"] {
            assert!(!text.contains(leak), "{what}: the client saw {leak:?}: {text}");
        }
        assert_eq!(&message(&r), expected, "{what}");
    }
    // The details are not lost: the log has them.
    let logs = m.wait_for_log(MARKER, Duration::from_secs(5));
    assert!(logs.contains(&mock.host), "the log names the upstream: {logs}");
}

/// An `UpstreamClient` for the default upstream of `mirror_config(url, "")`,
/// built from config text so new config fields need no change here.
fn client_for(url: &str) -> sigmirror::upstream::UpstreamClient {
    use sigmirror::config::{Checker, Config};
    let (config, _, checker) =
        Config::from_str(&mirror_config(url, ""), Checker::new(Path::new("sigmirror.toml"))).expect("config parses");
    assert!(checker.problems.is_empty(), "{:?}", checker.problems);
    sigmirror::upstream::UpstreamClient::new(&config.upstreams[0], Default::default()).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_manifest_resolves_a_tag_from_the_digest_header_without_fetching_the_bytes() {
    use sigmirror::oci::ManifestRef;
    use sigmirror::upstream::UpstreamError;

    let mock = MockUpstream::start();
    let image = build_image("head", "amd64");
    let other = build_image("head-other", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    let no_digest = Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
        body: image.manifest.clone(),
    };
    mock.set("/v2/team-a/app/manifests/no-digest", no_digest);
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    mock.manifest_claiming("team-a/app", "sha512", "application/octet-stream", &image.manifest, &sha512);
    mock.manifest_claiming("team-a/app", &other.digest, OCI_MANIFEST, &other.manifest, &image.digest);
    mock.set("/v2/team-a/app/manifests/redirected", Reply::redirect(307, &format!("{}/elsewhere", mock.url())));
    let up = client_for(&mock.url());
    let tag = |t: &str| ManifestRef::Tag(t.to_string());

    let info = up.head_manifest("team-a/app", &tag("v1"), MANIFEST_ACCEPT).await.unwrap().expect("a digest");
    assert_eq!(info.digest.as_str(), image.digest);
    assert_eq!(info.media_type.as_deref(), Some(image.media_type.as_str()));
    assert_eq!(info.size, Some(image.size));
    let by_digest = ManifestRef::Digest(image.digest.parse().unwrap());
    assert_eq!(up.head_manifest("team-a/app", &by_digest, MANIFEST_ACCEPT).await.unwrap(), Some(info));

    // No usable digest header: the caller falls back to GET.
    assert_eq!(up.head_manifest("team-a/app", &tag("no-digest"), MANIFEST_ACCEPT).await.unwrap(), None);
    assert_eq!(up.head_manifest("team-a/app", &tag("sha512"), MANIFEST_ACCEPT).await.unwrap(), None);

    let lying = ManifestRef::Digest(other.digest.parse().unwrap());
    let e = up.head_manifest("team-a/app", &lying, MANIFEST_ACCEPT).await.unwrap_err();
    assert!(matches!(e, UpstreamError::DigestMismatch { .. }), "{e:?}");
    let e = up.head_manifest("team-a/app", &tag("missing"), MANIFEST_ACCEPT).await.unwrap_err();
    assert!(matches!(e, UpstreamError::NotFound), "{e:?}");
    let e = up.head_manifest("team-a/app", &tag("redirected"), MANIFEST_ACCEPT).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Redirected { .. }), "{e:?}");

    let manifest_requests: Vec<_> =
        mock.requests().into_iter().filter(|(_, target)| target.contains("/manifests/")).collect();
    assert_eq!(manifest_requests.len(), 7, "{manifest_requests:?}");
    assert!(manifest_requests.iter().all(|(method, _)| method == "HEAD"), "{manifest_requests:?}");
    assert_eq!(mock.count("/elsewhere"), 0);
    let metrics = sigmirror::metrics::METRICS.encode();
    // One line per status class; together they are every HEAD sent.
    let sent: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sigmirror_upstream_requests_total{") && l.contains("kind=\"manifest_head\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sent, 7.0, "{metrics}");
}

/// A mirror whose enforcing policy trusts a fresh P-256 key for
/// `registry.test/team-a/**` (nothing here is signed by it: every case is
/// about what upstream sends around the signature).
fn enforcing(url: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("release.pub"), key.public_key_pem()).unwrap();
    let policy = "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
                  cosign_keys = [\"release.pub\"]\n";
    Sigmirror::start_in(dir, &mirror_config(url, policy))
}

fn manifest_reply(media_type: &str, bytes: &[u8]) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![
            ("Content-Type".into(), media_type.into()),
            ("Docker-Content-Digest".into(), sha256_digest(bytes)),
        ],
        body: bytes.to_vec(),
    }
}

/// GETs `url` and checks the error answer and that it came within `within`.
fn assert_quick_error(url: &str, status: u16, want: &str, within: Duration) -> Response {
    let (r, took) = get(url);
    assert_eq!(r.status, status, "{url}: {}", r.text());
    assert_eq!(message(&r), want, "{url}");
    assert!(took < within, "{url}: took {took:?}");
    r
}

#[test]
fn a_manifest_shorter_or_longer_than_its_content_length_is_refused_and_never_served() {
    let mock = MockUpstream::start();
    let image = build_image("content-length", "amd64");
    // Fewer bytes than announced, then the connection closes.
    mock.set(
        &format!("/v2/team-a/app/manifests/{}", image.digest),
        Reply::Truncated {
            status: 200,
            headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
            body: image.manifest.clone(),
            send: image.manifest.len() / 2,
        },
    );
    // More bytes than announced: what follows `Content-Length` is not part
    // of the answer, so the manifest is the first `announced` bytes.
    let mut longer = image.manifest.clone();
    longer.extend_from_slice(b"{\"smuggled\":true}");
    let announced = image.manifest.len() - 10;
    let longer_reply = |digest: Option<&str>| {
        let mut headers =
            vec![("Content-Type".into(), OCI_MANIFEST.into()), ("Content-Length".into(), announced.to_string())];
        headers.extend(digest.map(|d| ("Docker-Content-Digest".to_string(), d.to_string())));
        Reply::Full { status: 200, headers, body: longer.clone() }
    };
    // With the digest a registry sends, the cut manifest does not match it.
    mock.set("/v2/team-a/app/manifests/longer", longer_reply(Some(&image.digest)));
    mock.set("/v2/team-a/app/manifests/longer-undigested", longer_reply(None));
    let m = Sigmirror::start(&config(&mock.url(), ""));

    let malformed = "upstream response is malformed";
    assert_quick_error(&manifest_url(&m, "team-a/app", &image.digest), 502, malformed, Duration::from_secs(5));

    let (r, _) = get(&manifest_url(&m, "team-a/app", "longer"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("MANIFEST_INVALID"), "{}", r.text());
    assert!(message(&r).starts_with("upstream sent content with digest sha256:"), "{}", r.text());
    assert!(!r.text().contains("smuggled"), "{}", r.text());
    // Without one, the audit policy serves exactly the announced bytes,
    // under their own digest: never the bytes past Content-Length.
    let (r, _) = get(&manifest_url(&m, "team-a/app", "longer-undigested"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, image.manifest[..announced], "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(&image.manifest[..announced]).as_str()));
    // Nothing half-read was cached: both are asked again.
    let (r, _) = get(&manifest_url(&m, "team-a/app", &image.digest));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(mock.count(&format!("/v2/team-a/app/manifests/{}", image.digest)), 2);
    assert_memory_bounded(&m, "after short and long manifests");
}

#[test]
fn a_blob_longer_than_its_content_length_is_cut_there_and_its_response_aborted() {
    // 300,000 bytes, announced as 299,000: the blob's last bytes are not
    // part of the answer, so what arrives does not hash to the digest.
    let real = "a blob past its length".repeat(15_000).into_bytes()[..300_000].to_vec();
    let digest = sha256_digest(&real);
    let mock = MockUpstream::start();
    mock.set(
        &format!("/v2/team-a/app/blobs/{digest}"),
        Reply::Full {
            status: 200,
            headers: vec![("Content-Length".into(), (real.len() - 1000).to_string())],
            body: real.clone(),
        },
    );
    let m = Sigmirror::start(&config(&mock.url(), ""));
    for attempt in 0..2 {
        let r = try_http_timeout("GET", &blob_url(&m, "team-a/app", &digest), &[], &[], Duration::from_secs(20));
        let r = r.unwrap_or_else(|e| panic!("attempt {attempt}: no answer: {e}"));
        // The head went out before the end of the body could be checked;
        // the body is then aborted, never completed with the wrong bytes.
        assert_eq!((r.status, r.header("content-length")), (200, Some("299000")), "attempt {attempt}");
        assert!(!r.complete, "attempt {attempt}: a complete answer of {} bytes", r.body.len());
        assert!(r.body.len() < real.len() - 1000, "attempt {attempt}: {} bytes went out", r.body.len());
    }
    // Nothing was cached: the second attempt went upstream again.
    assert_eq!(mock.count(&format!("/v2/team-a/app/blobs/{digest}")), 2, "{:?}", mock.requests());
    m.wait_for_log(&digest, Duration::from_secs(5));
    assert_memory_bounded(&m, "after a blob longer than its Content-Length");
}

#[test]
fn an_upstream_429_reaches_the_client_with_its_retry_after_capped_at_an_hour() {
    let mock = MockUpstream::start();
    let limited = |retry_after: &str| Reply::Full {
        status: 429,
        headers: vec![("Retry-After".into(), retry_after.into())],
        body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_vec(),
    };
    mock.set("/v2/team-a/app/manifests/seven", limited("7"));
    mock.set("/v2/team-a/app/manifests/day", limited("86400"));
    mock.set("/v2/team-a/app/manifests/date", limited("Wed, 21 Oct 2026 07:28:00 GMT"));
    let m = enforcing(&mock.url());
    for (tag, want) in [("seven", "7"), ("day", "3600"), ("date", "1")] {
        let (r, took) = get(&manifest_url(&m, "team-a/app", tag));
        assert_eq!(r.status, 429, "{tag}: {}", r.text());
        assert_eq!(r.header("retry-after"), Some(want), "{tag}");
        assert_eq!(r.oci_error_code().as_deref(), Some("TOOMANYREQUESTS"), "{tag}");
        assert_eq!(message(&r), "upstream is rate limiting (429)", "{tag}");
        assert!(took < Duration::from_secs(3), "{tag}: took {took:?}");
    }
    assert_memory_bounded(&m, "after upstream 429s");
}

/// A signature manifest for `image` with `layers` simple-signing layers.
fn signature_manifest(layers: usize) -> Vec<u8> {
    let layer = format!(
        r#"{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:{}","size":300}}"#,
        "a".repeat(64)
    );
    let layers = vec![layer; layers].join(",");
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[{layers}]}}"#,
        "b".repeat(64)
    )
    .into_bytes()
}

#[test]
fn a_signature_manifest_with_100000_layers_is_refused_without_fetching_a_layer() {
    let mock = MockUpstream::start();
    let (huge, many) = (build_image("sig-huge", "amd64"), build_image("sig-many", "amd64"));
    mock.serve_image("team-a/huge", "v1", &huge);
    mock.serve_image("team-a/many", "v1", &many);
    let sig_tag = |d: &str| format!("sha256-{}.sig", &d["sha256:".len()..]);
    // 100,000 layers are about 15 MB of JSON: over the 4 MiB manifest bound.
    let hundred_thousand = signature_manifest(100_000);
    mock.set(
        &format!("/v2/team-a/huge/manifests/{}", sig_tag(&huge.digest)),
        manifest_reply(OCI_MANIFEST, &hundred_thousand),
    );
    // 20,000 fit in the byte bound, and are still far more than are examined.
    mock.set(
        &format!("/v2/team-a/many/manifests/{}", sig_tag(&many.digest)),
        manifest_reply(OCI_MANIFEST, &signature_manifest(20_000)),
    );
    let m = enforcing(&mock.url());

    let too_large = "upstream sent more than 4194304 bytes for a manifest";
    assert_quick_error(&manifest_url(&m, "team-a/huge", "v1"), 502, too_large, Duration::from_secs(10));

    let (r, _) = get(&manifest_url(&m, "team-a/many", "v1"));
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = message(&r);
    assert!(msg.starts_with("policy releases refused registry.test/team-a/many@"), "{msg}");
    assert!(msg.contains("has 20000 layers, more than the 64 sigmirror examines"), "{msg}");
    assert_eq!(mock.count_prefix("/v2/team-a/many/blobs/"), 0, "a signature layer was fetched");
    assert_eq!(mock.count_prefix("/v2/team-a/huge/blobs/"), 0, "a signature layer was fetched");
    assert_memory_bounded(&m, "after signature manifests with 100,000 and 20,000 layers");
}

/// A referrers index of `n` descriptors of `artifact_type`.
fn referrers_index(n: usize, artifact_type: &str) -> Vec<u8> {
    let d = format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","digest":"sha256:{}","size":500}}"#,
        "c".repeat(64)
    );
    format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, vec![d; n].join(",")).into_bytes()
}

#[test]
fn a_10000_entry_referrers_index_is_refused_for_clients_and_for_verification() {
    let mock = MockUpstream::start();
    let image = build_image("referrers-flood", "amd64");
    mock.serve_image("team-a/app", "v1", &image);
    let bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json";
    mock.set(
        &format!("/v2/team-a/app/referrers/{}", image.digest),
        manifest_reply(OCI_INDEX, &referrers_index(10_000, bundle_type)),
    );
    let m = enforcing(&mock.url());

    let (r, _) = get(&format!("{}/v2/team-a/app/referrers/{}?ns={NS}", m.url(), image.digest));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(message(&r), "upstream sent more than 1048576 bytes for a referrers index");

    let r = assert_quick_error(
        &manifest_url(&m, "team-a/app", "v1"),
        502,
        "upstream sent more than 1048576 bytes for a referrers index",
        Duration::from_secs(10),
    );
    assert!(!r.body.windows(image.manifest.len()).any(|w| w == image.manifest));
    assert_eq!(mock.count_prefix("/v2/team-a/app/manifests/sha256:cccc"), 0, "a listed referrer was fetched");
    assert_memory_bounded(&m, "after a 10,000-entry referrers index");
}

#[test]
fn a_manifest_sent_byte_by_byte_is_cut_at_manifest_timeout_and_nothing_is_served() {
    let mock = MockUpstream::start();
    let image = build_image("drip", "amd64");
    // One byte every 100 ms: each arrives well within the read timeout, and
    // the whole manifest would take minutes.
    let drip = |body: &[u8]| Reply::Drip {
        status: 200,
        headers: vec![
            ("Content-Type".into(), OCI_MANIFEST.into()),
            ("Docker-Content-Digest".into(), sha256_digest(body)),
        ],
        body: body.to_vec(),
        chunk: 1,
        every: Duration::from_millis(100),
    };
    mock.set("/v2/team-a/app/manifests/v1", drip(&image.manifest));
    let m = Sigmirror::start(&format!("{}\n[limits]\nmanifest_timeout_secs = 3\n", config(&mock.url(), "")));
    let (r, took) = get(&manifest_url(&m, "team-a/app", "v1"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"));
    assert!(message(&r).contains("within limits.manifest_timeout_secs = 3 s"), "{}", r.text());
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(6), "answered after {took:?}");
    assert!(!r.body.windows(image.manifest.len()).any(|w| w == image.manifest));
    assert_memory_bounded(&m, "after a manifest sent byte by byte");
}

#[test]
fn a_blob_dripping_under_the_minimum_rate_is_cut_off_at_its_window_its_response_aborted_and_nothing_cached() {
    // 16 KiB at 64 bytes every 100 ms (640 B/s): every read arrives well
    // within the read timeout, and the whole blob would take 26 s.
    let blob: Vec<u8> = (0..16_384u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256_digest(&blob);
    let path = format!("/v2/team-a/app/blobs/{digest}");
    let mock = MockUpstream::start();
    let headers = vec![("Content-Type".to_string(), "application/octet-stream".to_string())];
    mock.set(
        &path,
        Reply::Drip {
            status: 200,
            headers: headers.clone(),
            body: blob.clone(),
            chunk: 64,
            every: Duration::from_millis(100),
        },
    );
    let limits = "[limits]\nupstream_blob_min_bytes_per_sec = 4096\nupstream_blob_rate_window_secs = 2";
    let m = Sigmirror::start(&format!("{}\n{limits}\n", config(&mock.url(), "")));
    for attempt in 1..=2 {
        let started = Instant::now();
        let r = try_http_timeout("GET", &blob_url(&m, "team-a/app", &digest), &[], &[], Duration::from_secs(40))
            .unwrap_or_else(|e| panic!("attempt {attempt}: no answer: {e}"));
        let took = started.elapsed();
        // The head went out with the first bytes; the body is aborted.
        assert_eq!((r.status, r.header("content-length")), (200, Some("16384")), "attempt {attempt}");
        assert!(!r.complete, "attempt {attempt}: a complete answer of {} bytes", r.body.len());
        assert!(r.body.len() < 4096, "attempt {attempt}: {} bytes went out", r.body.len());
        assert_eq!(r.body, blob[..r.body.len()], "attempt {attempt}: what went out is the blob's start");
        assert!(took >= Duration::from_millis(1800) && took < Duration::from_secs(6), "attempt {attempt}: {took:?}");
        assert_eq!(mock.count(&path), attempt, "attempt {attempt}: nothing was cached, so upstream is asked again");
    }
    m.wait_for_log(
        "under limits.upstream_blob_min_bytes_per_sec = 4096; the download was cut off",
        Duration::from_secs(5),
    );
    assert_eq!(m.metric("sigmirror_limit_hits_total{limit=\"upstream_blob_min_bytes_per_sec\"}"), 2);
    // At full speed the same blob is served whole and then from the cache.
    mock.set(&path, Reply::Full { status: 200, headers, body: blob.clone() });
    for _ in 0..2 {
        let r =
            try_http_timeout("GET", &blob_url(&m, "team-a/app", &digest), &[], &[], Duration::from_secs(20)).unwrap();
        assert_eq!((r.status, r.complete, r.body == blob), (200, true, true));
    }
    assert_eq!(mock.count(&path), 3, "{:?}", mock.requests());
    assert_memory_bounded(&m, "after a blob dripping under the minimum rate");
}
