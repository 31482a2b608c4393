//! HTTPS: sigmirror serves the registry API over rustls with the configured
//! certificate, and a client that trusts that certificate gets answers.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// A self-signed certificate for 127.0.0.1 and a mirror serving HTTPS with
/// it in front of `upstream_url`; `extra` goes into the config's top level.
fn https_mirror(upstream_url: &str, extra: &str) -> (Sigmirror, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n\n\
         [[upstream]]\nregistry = \"registry.test\"\nurl = \"{upstream_url}\"\ndangerous_plain_http = true\n\
         default = true\n\n{}\n{extra}",
        policy("team-a", &["registry.test/team-a/**"], "audit")
    );
    (Sigmirror::start_in(dir, &config), cert)
}

fn trusting(cert: &rcgen::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap()])
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
