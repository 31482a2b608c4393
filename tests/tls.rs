//! HTTPS: sigmirror serves the registry API over rustls with the configured
//! certificate, and a client that trusts that certificate gets answers.

mod support;

use std::fs;

use support::*;

#[test]
fn sigmirror_serves_https_with_the_configured_certificate() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "tls");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n\n\
         [[upstream]]\nregistry = \"registry.test\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n{}",
        registry.url(),
        policy("team-a", &["registry.test/team-a/**"], "audit")
    );
    let m = Sigmirror::start_in(dir, &config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let trusted = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap()])
            .build()
            .unwrap();
        let url = format!("https://{}/v2/team-a/app/manifests/v1?ns=registry.test", m.addr);
        let r = trusted.get(&url).header("Accept", MANIFEST_ACCEPT).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), image.manifest.as_slice());
        // A client that does not trust the certificate cannot talk to it.
        let untrusting = reqwest::Client::builder().tls_certs_only([]).build().unwrap();
        assert!(untrusting.get(&url).send().await.is_err());
    });
}

/// A self-signed certificate for 127.0.0.1 and its key, both PEM.
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// Whether a fresh client (no pooled connection) trusting only `cert_pem`
/// gets an answer from `url`.
async fn answers_trusting(cert_pem: &str, url: &str) -> bool {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    client.get(url).send().await.is_ok_and(|r| r.status() == 200)
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let registry = Registry::start();
    let (old_cert, old_key) = self_signed();
    let (new_cert, new_key) = self_signed();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), &old_cert).unwrap();
    fs::write(dir.path().join("tls.key"), &old_key).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n\n\
         [[upstream]]\nregistry = \"registry.test\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n{}",
        registry.url(),
        policy("team-a", &["registry.test/team-a/**"], "audit")
    );
    let mut m = Sigmirror::start_in(dir, &config);
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
