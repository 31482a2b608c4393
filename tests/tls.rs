//! HTTPS: sigmirror serves the registry API over rustls with the configured
//! certificate, and a client that trusts that certificate gets answers.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// A config serving HTTPS from `tls.crt` and `tls.key` in front of
/// `upstream_url`; `extra` (tables) goes last.
fn tls_config(upstream_url: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n\n\
         [[upstream]]\nregistry = \"registry.test\"\nurl = \"{upstream_url}\"\ndangerous_plain_http = true\n\
         default = true\n\n{}\n{extra}",
        policy("team-a", &["registry.test/team-a/**"], "audit")
    )
}

/// A mirror serving HTTPS with a fresh self-signed certificate, and that
/// certificate (PEM).
fn https_mirror(upstream_url: &str, extra: &str) -> (Sigmirror, String) {
    let (cert, key) = self_signed();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    fs::write(dir.path().join("tls.key"), key).unwrap();
    (Sigmirror::start_in(dir, &tls_config(upstream_url, extra)), cert)
}

fn trusting(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[test]
fn sigmirror_serves_https_with_the_configured_certificate() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "tls");
    let (m, cert) = https_mirror(&registry.url(), "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("https://{}/v2/team-a/app/manifests/v1?ns=registry.test", m.addr);
        let r = trusting(&cert).get(&url).header("Accept", MANIFEST_ACCEPT).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), image.manifest.as_slice());
        // A client that does not trust the certificate cannot talk to it.
        let untrusting = reqwest::Client::builder().tls_certs_only([]).build().unwrap();
        assert!(untrusting.get(&url).send().await.is_err());
    });
}

#[test]
fn a_client_that_never_finishes_its_tls_handshake_is_disconnected_after_header_read_timeout() {
    let mock = MockUpstream::start();
    let (m, cert) = https_mirror(&mock.url(), "[limits]\nheader_read_timeout_secs = 2");
    // Connects, sends the first bytes of a ClientHello, and stops.
    let mut stalled = TcpStream::connect_timeout(&m.addr.parse().unwrap(), Duration::from_secs(5)).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    // Meanwhile a real client is served over HTTP/2 (ALPN) or HTTP/1.1.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let r = trusting(&cert).get(format!("https://{}/v2/", m.addr)).send().await.unwrap();
        r.status().as_u16()
    });
    assert_eq!(status, 200);
    let mut b = [0u8; 64];
    let ended = stalled.read(&mut b);
    let took = started.elapsed();
    assert!(matches!(ended, Ok(0) | Err(_)), "the stalled handshake got bytes: {ended:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "disconnected after {took:?}");
    let counted = rt.block_on(async {
        let text = trusting(&cert).get(format!("https://{}/metrics", m.addr)).send().await.unwrap().text().await;
        text.unwrap()
    });
    assert!(counted.contains("sigmirror_limit_hits_total{limit=\"header_read_timeout_secs\"} 1"), "{counted}");
}

/// A self-signed certificate for 127.0.0.1 and its key, both PEM.
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// Whether a fresh client (no pooled connection) trusting only `cert_pem`
/// gets an answer from `url` within 5 s.
async fn answers_trusting(cert_pem: &str, url: &str) -> bool {
    let sent = tokio::time::timeout(Duration::from_secs(5), trusting(cert_pem).get(url).send()).await;
    sent.is_ok_and(|r| r.is_ok_and(|r| r.status() == 200))
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let registry = Registry::start();
    let (old_cert, old_key) = self_signed();
    let (new_cert, new_key) = self_signed();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), &old_cert).unwrap();
    fs::write(dir.path().join("tls.key"), &old_key).unwrap();
    let mut m = Sigmirror::start_in(dir, &tls_config(&registry.url(), ""));
    let pid = m.pid();
    let url = format!("https://{}/v2/", m.addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert!(answers_trusting(&old_cert, &url).await);
        assert!(!answers_trusting(&new_cert, &url).await);
        // Renewal as cert-manager does it: the key, then the certificate,
        // each replaced whole by a rename.
        let d = m.dir.path();
        for (name, pem) in [("tls.key", &new_key), ("tls.crt", &new_cert)] {
            fs::write(d.join(format!("{name}.new")), pem).unwrap();
            fs::rename(d.join(format!("{name}.new")), d.join(name)).unwrap();
        }
        let mut renewed = false;
        for _ in 0..100 {
            if answers_trusting(&new_cert, &url).await {
                renewed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(renewed, "the renewed certificate was never served:\n{}", m.logs());
        assert!(!answers_trusting(&old_cert, &url).await, "a new connection still got the old certificate");
    });
    assert!(m.is_running(), "{}", m.logs());
    assert_eq!(m.pid(), pid, "the process was not restarted");
}

#[test]
fn a_tls_connection_over_max_connections_is_answered_503_with_retry_after_after_its_handshake() {
    let mock = MockUpstream::start();
    let (m, cert) = https_mirror(&mock.url(), "[limits]\nmax_connections = 2\nheader_read_timeout_secs = 30");
    // Two connections that have not finished a handshake hold both slots.
    let held: Vec<TcpStream> =
        (0..2).map(|_| TcpStream::connect_timeout(&m.addr.parse().unwrap(), Duration::from_secs(5)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("https://{}/v2/", m.addr);
    rt.block_on(async {
        // The third completes its handshake (ALPN picks HTTP/2) and is
        // answered, not reset: the refusal is the same over TLS.
        for http2 in [true, false] {
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
                .pool_max_idle_per_host(0);
            let client = if http2 { client } else { client.http1_only() }.build().unwrap();
            let started = Instant::now();
            let r = client.get(&url).send().await.expect("the connection over the limit is answered");
            assert_eq!(r.version(), if http2 { reqwest::Version::HTTP_2 } else { reqwest::Version::HTTP_11 });
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
            assert_eq!(
                body["errors"][0]["message"],
                "sigmirror is serving its limit of 2 connections (limits.max_connections); retry shortly"
            );
            assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        }
    });
    let peak = m.proc_status_kib("VmHWM");
    eprintln!("memory peak after TLS connections over max_connections: {peak} KiB");
    assert!(peak < 100 * 1024, "sigmirror peaked at {peak} KiB");
    // Once the held ones go, TLS clients are served again, and the
    // refusals were counted.
    drop(held);
    rt.block_on(async {
        let mut served = false;
        for _ in 0..50 {
            if answers_trusting(&cert, &url).await {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "a freed slot was never served:\n{}", m.logs());
        let text = trusting(&cert).get(format!("https://{}/metrics", m.addr)).send().await.unwrap().text().await;
        let hits = text
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("sigmirror_limit_hits_total{limit=\"max_connections\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(hits.is_some_and(|n| n >= 2), "{hits:?}");
    });
    assert_eq!(mock.total(), 0, "{:?}", mock.requests());
}
