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
