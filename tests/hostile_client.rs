//! Clients that attack the mirror: slow request heads, huge ones, more
//! connections than `max_connections`, requests that would keep an upstream
//! busy, and names and `ns=` values that try to reach what they must not.
//! Every case runs against the real binary on loopback over real sockets,
//! and every wait is bounded. Upstreams are `MockUpstream`s that count what
//! reaches them.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const NS: &str = "registry.test";

/// A config for one default upstream at `url` under an audit policy, with
/// `limits` as the body of its `[limits]` table.
fn config(url: &str, limits: &str) -> String {
    let base = mirror_config(url, &policy("everything", &["registry.test/**"], "audit"));
    // Tables after the top-level keys of `base`.
    format!("{base}\n[limits]\n{limits}\n\n[audit]\npath = \"audit.log\"\n")
}

/// A counting mock upstream and a mirror in front of it with `limits`.
fn start(limits: &str) -> (MockUpstream, Sigmirror) {
    let mock = MockUpstream::start();
    let m = Sigmirror::start(&config(&mock.url(), limits));
    (mock, m)
}

fn connect(m: &Sigmirror) -> TcpStream {
    let s = TcpStream::connect_timeout(&m.addr.parse().unwrap(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads one response head and its `Content-Length` body off a kept-alive
/// connection (at most 64 KiB, within the socket's read timeout).
fn read_response(s: &mut TcpStream) -> Result<Response, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", raw.len())),
        }
    }
    parse(&raw)
}

/// Parses a whole response as `support::http` would.
fn parse(raw: &[u8]) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no response head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or("status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response { status, headers, body: raw[end + 4..].to_vec(), complete: true })
}

/// One keep-alive `GET` on an open connection.
fn get_on(s: &mut TcpStream, path: &str) -> Result<Response, String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: sigmirror\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    read_response(s)
}

/// Reads until the server closes the connection; how long that took, or
/// `None` when it was still open after `bound`.
fn time_until_closed(s: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < bound {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The end of a client-limit case: `limit` was hit `n` times, nothing
/// reached upstream, and memory stayed bounded (`case` names it).
fn assert_limit_hit(m: &Sigmirror, upstream: &MockUpstream, limit: &str, n: u64, case: &str) {
    wait_for_hits(m, limit, n);
    assert_eq!(upstream.total(), 0, "a client limit reached upstream: {:?}", upstream.requests());
    report_memory(m, case);
}

/// An answer over a limit: `status`, `Retry-After: 1`, and the OCI error.
fn assert_retry_later(r: &Response, status: u16, code: &str, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(r.oci_error_code().as_deref(), Some(code), "{}", r.text());
    assert_eq!(r.oci_error_message().as_deref(), Some(message), "{}", r.text());
}

fn limit_hits(m: &Sigmirror, limit: &str) -> u64 {
    m.metric(&format!("sigmirror_limit_hits_total{{limit=\"{limit}\"}}"))
}

/// Every line of the audit log so far, parsed.
fn audit_lines(m: &Sigmirror) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(m.dir.path().join("audit.log")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))).collect()
}

/// Waits (bounded) until `limit` has been hit `n` times: a connection is
/// counted when its task ends, which can be just after the client saw the
/// answer.
fn wait_for_hits(m: &Sigmirror, limit: &str, n: u64) {
    let mut last = 0;
    for _ in 0..100 {
        last = limit_hits(m, limit);
        if last >= n {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, n, "sigmirror_limit_hits_total{{limit={limit:?}}}");
}

#[test]
fn a_slowloris_client_is_disconnected_after_header_read_timeout_while_others_are_served() {
    let (mock, m) = start("header_read_timeout_secs = 2\nidle_timeout_secs = 30");

    // One header line every 300 ms: the head never ends.
    let mut slow = connect(&m);
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: sigmirror\r\n").unwrap();
    let dripper = {
        let mut w = slow.try_clone().unwrap();
        thread::spawn(move || {
            for i in 0..40 {
                if w.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).is_err() {
                    return i;
                }
                thread::sleep(Duration::from_millis(300));
            }
            40
        })
    };
    // A client that says nothing at all.
    let mut silent = connect(&m);

    // Meanwhile, a normal client is served at once.
    let r = http("GET", &format!("{}/v2/", m.url()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    let took = time_until_closed(&mut slow, Duration::from_secs(10)).expect("the slow client was never disconnected");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "disconnected after {took:?}");
    let silent_took = time_until_closed(&mut silent, Duration::from_secs(10)).expect("the silent client stayed");
    assert!(silent_took < Duration::from_secs(4), "silent client disconnected after {silent_took:?}");
    let lines_sent = dripper.join().unwrap();
    assert!(lines_sent < 40, "the server read all 40 header lines");
    wait_for_hits(&m, "header_read_timeout_secs", 2);
    assert_eq!(mock.total(), 0, "{:?}", mock.requests());
    report_memory(&m, "a slowloris and a silent client");
}

#[test]
fn a_request_head_over_max_header_bytes_gets_431_and_one_under_it_is_served() {
    let (mock, m) = start("max_header_bytes = 8192");
    let url = format!("{}/v2/", m.url());

    let small = "a".repeat(6000);
    let r = http("GET", &url, &[("X-Padding", &small)]);
    assert_eq!(r.status, 200, "a 6 KB head is within the bound: {}", r.text());

    let big = "a".repeat(20_000);
    let r = try_http_timeout("GET", &url, &[("X-Padding", &big)], &[], Duration::from_secs(10))
        .expect("hyper answers an oversized head");
    assert_eq!(r.status, 431, "{:?}", r.headers);
    // Many small headers add up the same way.
    let many: Vec<(String, String)> = (0..90).map(|i| (format!("X-H{i}"), "b".repeat(120))).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = try_http_timeout("GET", &url, &many, &[], Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 431);
    assert_eq!(http("GET", &url, &[]).status, 200, "the mirror still serves");
    assert_limit_hit(&m, &mock, "max_header_bytes", 2, "oversized request heads");
}

#[test]
fn an_http2_header_list_over_max_header_bytes_gets_431_and_one_under_it_is_served() {
    let (mock, m) = start("max_header_bytes = 8192");
    let url = format!("{}/v2/", m.url());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // h2c with prior knowledge on the plain listener: the h2 client
        // sends what it is given, whatever the server's
        // SETTINGS_MAX_HEADER_LIST_SIZE says.
        let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let send = |headers: Vec<(String, String)>| {
            let mut rb = client.get(&url);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            async move { tokio::time::timeout(Duration::from_secs(10), rb.send()).await.expect("answered in time") }
        };
        let r = send(vec![("x-padding".into(), "a".repeat(6000))]).await.unwrap();
        assert_eq!(
            (r.version(), r.status().as_u16()),
            (reqwest::Version::HTTP_2, 200),
            "a 6 KB list is within the bound"
        );
        // Over the bound and under twice it: sigmirror's own answer.
        let r = send(vec![("x-padding".into(), "a".repeat(12_000))]).await.expect("answered, not reset");
        assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 431));
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
        assert!(message.ends_with("bytes, over limits.max_header_bytes = 8192"), "{message}");
        let many = (0..90).map(|i| (format!("x-h{i}"), "b".repeat(120))).collect();
        assert_eq!(send(many).await.unwrap().status(), 431, "many small headers add up the same way");
        // Over twice the bound h2 answers before sigmirror sees the request;
        // still a 431, not a reset, but not counted.
        let r = send(vec![("x-padding".into(), "a".repeat(20_000))]).await.expect("h2 answers, not resets");
        assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 431));
        // The same connection goes on serving.
        assert_eq!(send(vec![]).await.unwrap().status(), 200);
    });
    assert_limit_hit(&m, &mock, "max_header_bytes", 2, "oversized HTTP/2 header lists");
}

#[test]
fn connections_over_max_connections_get_503_with_retry_after_and_the_others_keep_working() {
    let (mock, m) = start("max_connections = 2\nheader_read_timeout_secs = 30");

    // Two kept-alive connections hold both slots.
    let mut a = connect(&m);
    let mut b = connect(&m);
    assert_eq!(get_on(&mut a, "/v2/").unwrap().status, 200);
    assert_eq!(get_on(&mut b, "/v2/").unwrap().status, 200);

    // A third is answered, not hung or reset.
    let started = Instant::now();
    let r = try_http_timeout("GET", &format!("{}/v2/", m.url()), &[], &[], Duration::from_secs(10))
        .expect("the connection over the limit gets an answer");
    let message = "sigmirror is serving its limit of 2 connections (limits.max_connections); retry shortly";
    assert_retry_later(&r, 503, "UNAVAILABLE", message);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // The admitted connections keep working meanwhile.
    assert_eq!(get_on(&mut a, "/v2/").unwrap().status, 200);
    assert_eq!(get_on(&mut b, "/healthz").unwrap().status, 200);

    // Once one closes, a new connection is served again.
    drop(b);
    assert_eq!(mock.total(), 0, "a client limit reached upstream: {:?}", mock.requests());
    report_memory(&m, "connections over max_connections");
    let r = wait_for("a freed connection slot", Duration::from_secs(5), Duration::from_millis(50), || {
        let r = try_http_timeout("GET", &format!("{}/v2/", m.url()), &[], &[], Duration::from_secs(5)).ok()?;
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.status, 200);
    // Counted (read through the held connection, so reading takes no slot;
    // tries while the freed slot was not yet seen count too).
    let metrics = get_on(&mut a, "/metrics").unwrap().text();
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sigmirror_limit_hits_total{limit=\"max_connections\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(hits.is_some_and(|n| n >= 1), "{metrics}");
}

/// sigmirror idles at about 20 MiB resident (40 MiB in a debug build); no
/// hostile client may take it far past that.
const RSS_BOUND_KIB: u64 = 100 * 1024;

/// Prints the memory peak (`VmHWM`) a report quotes, and checks it.
fn report_memory(m: &Sigmirror, case: &str) {
    let peak = m.proc_status_kib("VmHWM");
    eprintln!("memory peak after {case}: {peak} KiB");
    assert!(peak < RSS_BOUND_KIB, "{case}: sigmirror peaked at {peak} KiB resident");
}

#[test]
fn a_flood_of_connections_gets_the_limit_served_64_answered_503_and_the_rest_closed_at_once() {
    const SILENT: usize = 100;
    let (mock, m) = start("max_connections = 20\nheader_read_timeout_secs = 30");
    // 20 kept-alive connections hold every slot.
    let mut held: Vec<TcpStream> = (0..20).map(|_| connect(&m)).collect();
    for c in &mut held {
        assert_eq!(get_on(c, "/v2/").unwrap().status, 200);
    }
    // A flood that says nothing: 64 wait for their 503 (up to 5 s each),
    // the rest are closed at once.
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(&m)).collect();
    thread::sleep(Duration::from_millis(500));
    let mut waiting = Vec::new();
    let mut closed = 0;
    for mut c in silent.drain(..) {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                c.set_nonblocking(false).unwrap();
                waiting.push(c);
            }
            Ok(0) | Err(_) => closed += 1,
            Ok(_) => panic!("a silent connection was sent bytes before asking"),
        }
    }
    assert_eq!((waiting.len(), closed), (64, SILENT - 64));
    for c in &mut waiting {
        let r = get_on(c, "/v2/").expect("a waiting connection is answered");
        let message = "sigmirror is serving its limit of 20 connections (limits.max_connections); retry shortly";
        assert_retry_later(&r, 503, "UNAVAILABLE", message);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the flood took {took:?}");
    assert_eq!(mock.total(), 0, "a client limit reached upstream: {:?}", mock.requests());
    report_memory(&m, &format!("20 held and {SILENT} flooding connections"));
    // The admitted connections still work, and every refused one is counted.
    let metrics = get_on(&mut held[0], "/metrics").unwrap().text();
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sigmirror_limit_hits_total{limit=\"max_connections\"} "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    assert_eq!(hits, Some(SILENT), "{metrics}");
}

#[test]
fn an_http2_connection_that_sends_no_request_is_closed_after_idle_timeout() {
    let (mock, m) = start("idle_timeout_secs = 2\nheader_read_timeout_secs = 30");
    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame,
    // then nothing. The header clock is HTTP/1.1's only.
    let mut c = connect(&m);
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let took = time_until_closed(&mut c, Duration::from_secs(10)).expect("the idle HTTP/2 connection stayed open");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "closed after {took:?}");
    assert_limit_hit(&m, &mock, "idle_timeout_secs", 1, "an idle HTTP/2 connection");
}

#[test]
fn a_kept_alive_connection_waits_idle_timeout_not_header_read_timeout_for_its_next_request() {
    let (mock, m) = start("idle_timeout_secs = 3\nheader_read_timeout_secs = 1");
    let mut c = connect(&m);
    assert_eq!(get_on(&mut c, "/v2/").unwrap().status, 200);
    let took = time_until_closed(&mut c, Duration::from_secs(10)).expect("the idle connection stayed open");
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(5), "closed after {took:?}");
    wait_for_hits(&m, "idle_timeout_secs", 1);
    assert_eq!(limit_hits(&m, "header_read_timeout_secs"), 0, "an idle connection is not a slow client");
    // A next request that starts but never ends is a slow client again.
    let mut c = connect(&m);
    assert_eq!(get_on(&mut c, "/v2/").unwrap().status, 200);
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: sig").unwrap();
    let took = time_until_closed(&mut c, Duration::from_secs(10)).expect("the half-sent head was waited for");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "closed after {took:?}");
    assert_limit_hit(&m, &mock, "header_read_timeout_secs", 1, "idle and half-sent HTTP/1.1 requests");
}

/// Serves `image` as `repo:tag`, answering only after `delay`.
fn slow_manifest(mock: &MockUpstream, repo: &str, tag: &str, image: &Pushed, delay: Duration) {
    let reply = Reply::Full {
        status: 200,
        headers: vec![
            ("Content-Type".into(), OCI_MANIFEST.into()),
            ("Docker-Content-Digest".into(), image.digest.clone()),
        ],
        body: image.manifest.clone(),
    };
    mock.set(&format!("/v2/{repo}/manifests/{tag}"), Reply::Slow { delay, reply: Box::new(reply) });
}

#[test]
fn a_manifest_upstream_answers_too_slowly_is_refused_with_504_at_manifest_timeout() {
    let mock = MockUpstream::start();
    let image = build_image("slow-manifest", "amd64");
    slow_manifest(&mock, "team-a/app", "v1", &image, Duration::from_secs(20));
    let m = Sigmirror::start(&config(&mock.url(), "manifest_timeout_secs = 2"));
    let started = Instant::now();
    let r = try_http_timeout(
        "GET",
        &format!("{}/v2/team-a/app/manifests/v1?ns={NS}", m.url()),
        &[("Accept", OCI_MANIFEST)],
        &[],
        Duration::from_secs(30),
    )
    .expect("an answer");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"));
    let message = r.oci_error_message().unwrap();
    assert_eq!(
        message,
        "policy everything could not verify registry.test/team-a/app:v1 within limits.manifest_timeout_secs = 2 s \
         (upstream too slow); nothing unverified is served, retry later"
    );
    assert!(!r.body.windows(image.manifest.len()).any(|w| w == image.manifest), "no manifest byte was served");
    assert_eq!(limit_hits(&m, "manifest_timeout_secs"), 1);
    let line = wait_for("the audit line", Duration::from_secs(5), Duration::from_millis(50), || {
        audit_lines(&m).into_iter().find(|l| l["reason"].as_str().is_some_and(|r| r.contains(&message)))
    });
    assert_eq!((line["verdict"].as_str(), line["policy"].as_str()), (Some("deny"), Some("everything")), "{line}");
    assert_eq!(line["tag"], "v1", "{line}");
    assert_eq!(r.json()["errors"][0]["detail"]["reason"], line["reason"], "the body and the audit line agree");
    report_memory(&m, "a manifest past manifest_timeout_secs");
}

#[test]
fn a_request_that_finds_every_upstream_fetch_slot_taken_gets_429_with_retry_after() {
    let mock = MockUpstream::start();
    let (one, two) = (build_image("busy-one", "amd64"), build_image("busy-two", "amd64"));
    slow_manifest(&mock, "team-a/app", "v1", &one, Duration::from_secs(4));
    mock.manifest("team-a/app", "v2", OCI_MANIFEST, &two.manifest);
    let m = Sigmirror::start(&config(&mock.url(), "max_upstream_fetches = 1\nupstream_fetch_wait_secs = 1"));
    let url = |tag: &str| format!("{}/v2/team-a/app/manifests/{tag}?ns={NS}", m.url());

    let first = {
        let url = url("v1");
        thread::spawn(move || try_http_timeout("GET", &url, &[("Accept", OCI_MANIFEST)], &[], Duration::from_secs(30)))
    };
    wait_for("the slow fetch to hold the slot", Duration::from_secs(5), Duration::from_millis(20), || {
        (mock.count("/v2/team-a/app/manifests/v1") == 1).then_some(())
    });
    let started = Instant::now();
    let r = try_http_timeout("GET", &url("v2"), &[("Accept", OCI_MANIFEST)], &[], Duration::from_secs(30)).unwrap();
    let took = started.elapsed();
    let message =
        "sigmirror is at its limit of 1 concurrent upstream fetches (limits.max_upstream_fetches); retry shortly";
    assert_retry_later(&r, 429, "TOOMANYREQUESTS", message);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(mock.count("/v2/team-a/app/manifests/v2"), 0, "the refused request reached upstream");

    // The request holding the slot is served whole, and after it the
    // refused one succeeds.
    let r = first.join().unwrap().expect("the slow request is answered");
    assert_eq!((r.status, r.body == one.manifest), (200, true), "{}", r.text());
    let r = try_http_timeout("GET", &url("v2"), &[("Accept", OCI_MANIFEST)], &[], Duration::from_secs(30)).unwrap();
    assert_eq!((r.status, r.body == two.manifest), (200, true), "{}", r.text());
    assert!(limit_hits(&m, "max_upstream_fetches") >= 1);
    report_memory(&m, "a request over max_upstream_fetches");
}

const HEX64: &str = "b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

#[test]
fn names_references_and_digests_the_distribution_spec_forbids_are_refused_before_upstream_is_asked() {
    let (mock, m) = start("");
    let long_name = vec!["abcdefghij"; 24].join("/"); // 263 characters
    let long_tag = "t".repeat(129);
    let upper_hex = HEX64.to_ascii_uppercase();
    let short_hex = &HEX64[..63];
    let sha512 = format!("sha512:{HEX64}{HEX64}");
    // (path, status, OCI code); `None` where hyper refuses the request line
    // itself, before sigmirror sees it.
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("/v2/team-a%2Fapp/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a%2fapp/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/%2E%2E/app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/../app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/../manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/./app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a//app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2//team-a/app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/app//manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/Team-A/app/manifests/v1".into(), 400, Some("NAME_INVALID")),
        (format!("/v2/{long_name}/manifests/v1"), 400, Some("NAME_INVALID")),
        ("/v2/team-a/app%00/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/app%0A/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/a%20pp/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/app-/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/a...pp/manifests/v1".into(), 400, Some("NAME_INVALID")),
        ("/v2/team-a/app\x01/manifests/v1".into(), 400, None),
        ("/v2/team-a/app/manifests/v1%00".into(), 400, Some("MANIFEST_INVALID")),
        ("/v2/team-a/app/manifests/.v1".into(), 400, Some("MANIFEST_INVALID")),
        ("/v2/team-a/app/manifests/-v1".into(), 400, Some("MANIFEST_INVALID")),
        (format!("/v2/team-a/app/manifests/{long_tag}"), 400, Some("MANIFEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256%3A{HEX64}"), 400, Some("MANIFEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256:{short_hex}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256:{HEX64}0"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256:{upper_hex}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256:{}g", short_hex), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/SHA256:{HEX64}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/{sha512}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/md5:{}", &HEX64[..32]), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/manifests/sha256:{HEX64}%00"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/blobs/sha256%3A{HEX64}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/blobs/sha256:{short_hex}"), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/blobs/{sha512}"), 400, Some("DIGEST_INVALID")),
        ("/v2/team-a/app/blobs/latest".into(), 400, Some("DIGEST_INVALID")),
        (format!("/v2/team-a/app/referrers/sha256:{upper_hex}"), 400, Some("DIGEST_INVALID")),
        ("/v2/Team-A/app/tags/list".into(), 400, Some("NAME_INVALID")),
        (format!("/v2/team-a%2Fapp/blobs/sha256:{HEX64}"), 400, Some("NAME_INVALID")),
    ];
    for (path, status, code) in &cases {
        let r = try_http_timeout("GET", &format!("{}{path}?ns={NS}", m.url()), &[], &[], Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(r.status, *status, "{path:?}: {}", r.text());
        assert_eq!(r.oci_error_code().as_deref(), *code, "{path:?}: {}", r.text());
        if code.is_some() {
            let message = r.oci_error_message().unwrap();
            assert!(message.starts_with("invalid "), "{path:?}: the message says what is wrong: {message}");
        }
    }
    assert_eq!(mock.total(), 0, "upstream was asked: {:?}", mock.requests());
    // The same mirror still serves what is valid.
    let image = build_image("valid-name", "amd64");
    mock.manifest("team-a/app", "v1", OCI_MANIFEST, &image.manifest);
    let r = http("GET", &format!("{}/v2/team-a/app/manifests/v1?ns={NS}", m.url()), &[("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 200, "{}", r.text());
    report_memory(&m, "invalid names, references and digests");
}

#[test]
fn no_ns_value_makes_sigmirror_contact_a_host_that_is_not_configured() {
    let configured = MockUpstream::start();
    // A host an attacker would like sigmirror to reach: it counts every request.
    let target = MockUpstream::start();
    let image = build_image("ns-target", "amd64");
    target.manifest("team-a/app", "v1", OCI_MANIFEST, &image.manifest);
    let m = Sigmirror::start(&config(&configured.url(), ""));
    let t = &target.host; // 127.0.0.1:PORT
    let port = t.rsplit(':').next().unwrap();
    let c = &configured.host;
    let values: Vec<String> = vec![
        t.clone(),
        format!("http://{t}"),
        format!("{NS}@{t}"),
        format!("{NS}%40{t}"),
        format!("user:pass@{t}"),
        format!("user%3Apass%40{t}"),
        format!("{NS}:{port}"),
        format!("{NS}%3A{port}"),
        format!("127.0.0.1%3A{port}"),
        format!("{t}%2F"),
        format!("{NS}%2F..%2F{t}"),
        format!("{NS}/{t}"),
        format!("[::1]:{port}"),
        format!("%5B%3A%3A1%5D%3A{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("{NS}."),
        format!("{NS}.."),
        "Registry.Test".into(),
        "REGISTRY.TEST".into(),
        format!("{NS}%00"),
        format!("{NS}%00{t}"),
        format!("%20{NS}"),
        format!("{NS}%0D%0AHost:{t}"),
        "localhost".into(),
        format!("localhost:{port}"),
        // The configured upstream's own address is not its registry name.
        c.clone(),
        String::new(),
    ];
    for ns in &values {
        for path in ["/v2/team-a/app/manifests/v1".to_string(), format!("/v2/team-a/app/blobs/sha256:{HEX64}")] {
            let url = format!("{}{path}?ns={ns}", m.url());
            let r = try_http_timeout("GET", &url, &[], &[], Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(r.status, 403, "ns={ns:?}: {}", r.text());
            assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "ns={ns:?}");
            let message = r.oci_error_message().unwrap();
            assert!(message.contains("is not a configured upstream"), "ns={ns:?}: {message}");
        }
    }
    assert_eq!(target.total(), 0, "an unconfigured host was contacted: {:?}", target.requests());
    assert_eq!(configured.total(), 0, "the configured upstream was asked: {:?}", configured.requests());
    // Each refusal is in the audit log with its reason.
    let refused: Vec<_> = audit_lines(&m)
        .into_iter()
        .filter(|l| l["verdict"] == "deny" && l["reason"] == "it is not a configured upstream")
        .collect();
    assert_eq!(refused.len(), values.len() * 2, "{refused:?}");
    report_memory(&m, "hostile ns= values");
}

#[test]
fn a_blob_holds_its_upstream_fetch_slot_until_its_body_has_streamed() {
    let (mock, m) = start("max_upstream_fetches = 1\nupstream_fetch_wait_secs = 1");
    let (image, other) = (build_image("slot-blob", "amd64"), build_image("slot-other", "amd64"));
    mock.serve_image("team-a/app", "v1", &image);
    mock.manifest("team-a/app", "v2", OCI_MANIFEST, &other.manifest);
    // The layer streams for about 3 s: 2 KiB in 64-byte pieces, 100 ms apart.
    let (layer_digest, layer) = (image.layer_digests[0].clone(), image.layers[0].clone());
    mock.set(
        &format!("/v2/team-a/app/blobs/{layer_digest}"),
        Reply::Drip {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: layer.clone(),
            chunk: 64,
            every: Duration::from_millis(100),
        },
    );
    let get = |path: String| {
        try_http_timeout("GET", &format!("{}{path}?ns={NS}", m.url()), &[], &[], Duration::from_secs(30))
    };
    let r = get("/v2/team-a/app/manifests/v1".into()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let streaming = {
        let url = format!("{}/v2/team-a/app/blobs/{layer_digest}?ns={NS}", m.url());
        thread::spawn(move || try_http_timeout("GET", &url, &[], &[], Duration::from_secs(30)))
    };
    wait_for("the blob download to start", Duration::from_secs(5), Duration::from_millis(20), || {
        (mock.count(&format!("/v2/team-a/app/blobs/{layer_digest}")) == 1).then_some(())
    });
    // Its headers came long ago; its body still holds the one slot.
    thread::sleep(Duration::from_millis(300));
    let r = get("/v2/team-a/app/manifests/v2".into()).unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let blob = streaming.join().unwrap().expect("the streaming blob is answered");
    assert_eq!((blob.status, blob.complete, blob.body == layer), (200, true, true), "{}", blob.status);
    // The slot is free again once the body has ended.
    let r = wait_for("the slot to be released", Duration::from_secs(5), Duration::from_millis(100), || {
        get("/v2/team-a/app/manifests/v2".into()).ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, other.manifest);
    report_memory(&m, "a blob streaming in one upstream fetch slot");
}

#[test]
fn a_request_body_is_never_read_and_a_huge_one_costs_no_memory() {
    let (mock, m) = start("");
    for method in ["PUT", "POST", "GET"] {
        let mut c = connect(&m);
        // Announces 10 GB, then keeps sending.
        let head = format!(
            "{method} /v2/team-a/app/blobs/uploads/ HTTP/1.1\r\nHost: s\r\nContent-Length: 10000000000\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        let mut w = c.try_clone().unwrap();
        let pusher = thread::spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            // At most 256 MiB: far past any buffer, bounded for the test.
            (0..4096).take_while(|_| w.write_all(&chunk).is_ok()).count()
        });
        let r = read_response(&mut c).unwrap_or_else(|e| panic!("{method}: {e}"));
        let want = if method == "GET" { (404, "NOT_FOUND") } else { (405, "UNSUPPORTED") };
        assert_eq!((r.status, r.oci_error_code().as_deref()), (want.0, Some(want.1)), "{method}: {}", r.text());
        let took = time_until_closed(&mut c, Duration::from_secs(10));
        assert!(took.is_some(), "{method}: the connection was kept open to read the body");
        let sent = pusher.join().unwrap();
        assert!(sent < 4096, "{method}: sigmirror read all 256 MiB");
    }
    assert_eq!(mock.total(), 0, "{:?}", mock.requests());
    report_memory(&m, "requests announcing 10 GB bodies");
}
