//! What operators see: the audit log's line per decision, the metrics after
//! a known sequence of requests, client-certificate authentication on the
//! listener, and upstream credentials kept out of every output.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use sha2::Digest as _;
use signing::*;
use support::*;

const NS: &str = "registry.test";

/// `sha256:<hex>` of the DER inside a public key PEM, computed here from the
/// PEM text so the audit line's fingerprint is checked independently.
fn fingerprint_of_pem(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

fn manifest_url(base: &str, repo: &str, reference: &str) -> String {
    format!("{base}/v2/{repo}/manifests/{reference}?ns={NS}")
}

fn get_manifest(base: &str, repo: &str, reference: &str) -> Response {
    http("GET", &manifest_url(base, repo, reference), &[("Accept", MANIFEST_ACCEPT)])
}

/// `releases` enforces `release.pub` on team-a; `watch` audits team-b with it.
fn two_policies() -> String {
    "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\ncosign_keys = [\"release.pub\"]\n\n\
     [[policy]]\nname = \"watch\"\nscope = [\"registry.test/team-b/**\"]\nmode = \"audit\"\n\
     cosign_keys = [\"release.pub\"]\n"
        .to_string()
}

#[test]
fn the_audit_log_has_one_line_per_allow_deny_and_audit_mode_deny_with_every_field() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let signed = push_image(&registry.host, "team-a/app", "v1", "audit-signed");
    sign_and_push(&registry.host, "team-a/app", &signed.digest, &key, "registry.test/team-a/app");
    let unsigned = push_image(&registry.host, "team-a/app", "v2", "audit-unsigned");
    let audited = push_image(&registry.host, "team-b/app", "v1", "audit-audited");
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = mirror_config(&registry.url(), &format!("[audit]\npath = \"audit.jsonl\"\n\n{}", two_policies()));
    let m = InProcess::start_in(dir, &config, true);
    let base = m.url();

    assert_eq!(get_manifest(&base, "team-a/app", "v1").status, 200);
    assert_eq!(get_manifest(&base, "team-a/app", "v1").status, 200);
    let denied = get_manifest(&base, "team-a/app", "v2");
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(get_manifest(&base, "team-b/app", "v1").status, 200);

    let lines = audit_lines(&m.dir.path().join("audit.jsonl"));
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let client = lines[0]["client"].as_str().unwrap_or_default();
    assert!(client.starts_with("127.0.0.1:"), "{lines:#?}");
    for l in &lines {
        let t = l["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() >= 20, "time is RFC 3339 UTC: {t}");
        assert_eq!((l["registry"].as_str(), l["client"].is_string()), (Some(NS), true), "{l}");
    }

    let (first, again) = (&lines[0], &lines[1]);
    for (allow, cached) in [(first, false), (again, true)] {
        assert_eq!(allow["verdict"], "allow", "{allow}");
        assert_eq!(allow["policy"], "releases");
        assert_eq!(allow["scheme"], "cosign");
        assert_eq!(allow["signer"].as_str(), Some(fingerprint_of_pem(&key.public_pem()).as_str()), "{allow}");
        assert_eq!((allow["repository"].as_str(), allow["tag"].as_str()), (Some("team-a/app"), Some("v1")));
        assert_eq!(allow["digest"].as_str(), Some(signed.digest.as_str()));
        assert_eq!(allow["reason"], "cosign key release.pub");
        assert_eq!(allow["cached"], cached, "{allow}");
        assert!(allow.get("message").is_none(), "{allow}");
    }

    let deny = &lines[2];
    assert_eq!((deny["verdict"].as_str(), deny["policy"].as_str()), (Some("deny"), Some("releases")), "{deny}");
    assert_eq!((deny["tag"].as_str(), deny["digest"].as_str()), (Some("v2"), Some(unsigned.digest.as_str())));
    assert_eq!(deny["scheme"], "none");
    assert!(deny["signer"].is_null());
    let reason = deny["reason"].as_str().unwrap();
    assert!(reason.starts_with("key release.pub: no cosign signature found"), "{reason}");
    // The same words as the client's error body.
    assert_eq!(deny["message"].as_str(), denied.oci_error_message().as_deref());

    let audit = &lines[3];
    assert_eq!((audit["verdict"].as_str(), audit["policy"].as_str()), (Some("audit-deny"), Some("watch")), "{audit}");
    assert_eq!(
        (audit["repository"].as_str(), audit["digest"].as_str()),
        (Some("team-b/app"), Some(audited.digest.as_str()))
    );
    assert_eq!(audit["scheme"], "none");
    assert!(audit["reason"].as_str().unwrap().starts_with("key release.pub: no cosign signature found"), "{audit}");
    assert!(audit.get("message").is_none(), "an audit-deny was served: {audit}");
}

/// Every `/metrics` sample line, by name and labels.
fn samples(base: &str) -> HashMap<String, f64> {
    let text = http("GET", &format!("{base}/metrics"), &[]).text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_move_by_exactly_a_known_sequence_of_requests() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let signed = push_image(&registry.host, "team-a/app", "v1", "metrics-signed");
    sign_and_push(&registry.host, "team-a/app", &signed.digest, &key, "registry.test/team-a/app");
    push_image(&registry.host, "team-a/app", "v2", "metrics-unsigned");
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let m = Sigmirror::start_in(dir, &mirror_config(&registry.url(), &two_policies()));
    let base = m.url();

    let before = samples(&base);
    assert_eq!(http("GET", &format!("{base}/v2/"), &[]).status, 200);
    assert_eq!(get_manifest(&base, "team-a/app", "v1").status, 200);
    assert_eq!(get_manifest(&base, "team-a/app", "v1").status, 200);
    assert_eq!(get_manifest(&base, "team-a/app", "v2").status, 403);
    let unconfigured = http("GET", &format!("{base}/v2/team-a/app/manifests/v1?ns=nowhere.test"), &[]);
    assert_eq!(unconfigured.status, 403);
    let stray = sha256_digest(b"a blob no manifest references");
    assert_eq!(http("GET", &format!("{base}/v2/team-a/app/blobs/{stray}?ns={NS}"), &[]).status, 403);
    assert_eq!(http("GET", &format!("{base}/nothing-here"), &[]).status, 404);
    let after = samples(&base);

    let delta = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let want = [
        ("sigmirror_requests_total{route=\"base\",status_class=\"2xx\"}", 1.0),
        ("sigmirror_requests_total{route=\"manifest\",status_class=\"2xx\"}", 2.0),
        ("sigmirror_requests_total{route=\"manifest\",status_class=\"4xx\"}", 2.0),
        ("sigmirror_requests_total{route=\"blob\",status_class=\"4xx\"}", 1.0),
        ("sigmirror_requests_total{route=\"other\",status_class=\"4xx\"}", 1.0),
        // The first snapshot's own request, counted once it was answered.
        ("sigmirror_requests_total{route=\"metrics\",status_class=\"2xx\"}", 1.0),
        ("sigmirror_decisions_total{decision=\"allow\",policy=\"releases\",scheme=\"cosign\"}", 2.0),
        ("sigmirror_decisions_total{decision=\"deny\",policy=\"releases\",scheme=\"-\"}", 2.0),
        ("sigmirror_decisions_total{decision=\"deny\",policy=\"-\",scheme=\"-\"}", 1.0),
        ("sigmirror_cache_misses_total{cache=\"verdict\"}", 2.0),
        ("sigmirror_cache_hits_total{cache=\"verdict\"}", 1.0),
        ("sigmirror_verifications_total{policy=\"releases\"}", 2.0),
        ("sigmirror_verification_duration_seconds_count{scheme=\"cosign\"}", 2.0),
        // v1 resolved once (the second GET is within tag_ttl_secs), v2 once,
        // and v1's `.sig` tag; v2 has no `.sig` tag and no referrers
        // fallback tag (for bundles); one signature blob.
        ("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\",status_class=\"2xx\"}", 3.0),
        ("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\",status_class=\"4xx\"}", 2.0),
        ("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"blob\",status_class=\"2xx\"}", 1.0),
        ("sigmirror_upstream_request_duration_seconds_count{registry=\"registry.test\",kind=\"manifest\"}", 5.0),
    ];
    let mut wrong = Vec::new();
    for (k, v) in want {
        if delta(k) != v {
            wrong.push(format!("{k}: moved by {}, expected {v}", delta(k)));
        }
    }
    let version = format!("sigmirror_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    if after.get(&version) != Some(&1.0) {
        wrong.push(format!("{version} is {:?}", after.get(&version)));
    }
    // Only the request reading the metrics is in flight.
    if after.get("sigmirror_in_flight_requests") != Some(&1.0) {
        wrong.push(format!("in flight: {:?}", after.get("sigmirror_in_flight_requests")));
    }
    let moved: Vec<String> =
        after.keys().filter(|k| delta(k) != 0.0 && !k.contains("_bucket") && !k.contains("_sum")).cloned().collect();
    assert!(wrong.is_empty(), "{wrong:#?}\nevery series that moved: {moved:#?}");
}

#[test]
fn an_unconfigured_registry_is_refused_logged_to_the_audit_trail_and_counted() {
    let registry = Registry::start();
    let m = Sigmirror::start(&mirror_config(&registry.url(), &policy("all", &["registry.test/**"], "audit")));
    let r = http("GET", &format!("{}/v2/team-a/app/manifests/v1?ns=ghcr.io", m.url()), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    let message = "sigmirror refused registry \"ghcr.io\": it is not a configured upstream";
    assert_eq!(r.oci_error_message().as_deref(), Some(message));
    m.wait_for_log(message, std::time::Duration::from_secs(5));
    // No `[audit] path`: the audit trail is on stdout.
    let stdout = m.dir.path().join("stdout-1.txt");
    let line = wait_for(
        "the audit line on stdout",
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        || audit_lines(&stdout).into_iter().find(|l| l["registry"] == "ghcr.io"),
    );
    assert_eq!((line["verdict"].as_str(), line["message"].as_str()), (Some("deny"), Some(message)), "{line}");
    assert!(line["policy"].is_null() && line["repository"].is_null(), "{line}");
    assert_eq!(line["reason"], "it is not a configured upstream");
    assert_eq!(m.metric("sigmirror_decisions_total{decision=\"deny\",policy=\"-\",scheme=\"-\"}"), 1);
    assert_eq!(m.metric("sigmirror_upstream_requests_total"), 0, "nothing was asked upstream");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both
/// issued by the CA; and a client certificate of another CA.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
    client_identity: String,
    stranger_identity: String,
}

fn pki() -> Pki {
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        (params.self_signed(&key).unwrap(), key)
    };
    let issue = |issuer: &(rcgen::Certificate, rcgen::KeyPair), server: bool| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &issuer.0, &issuer.1).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (nodes, strangers) = (ca("nodes CA"), ca("stranger CA"));
    let (server_pem, server_key) = issue(&nodes, true);
    let (client, client_key) = issue(&nodes, false);
    let (stranger, stranger_key) = issue(&strangers, false);
    Pki {
        ca_pem: nodes.0.pem(),
        server_pem,
        server_key,
        client_identity: format!("{client}{client_key}"),
        stranger_identity: format!("{stranger}{stranger_key}"),
    }
}

#[test]
fn with_client_ca_only_clients_with_a_certificate_from_that_ca_are_answered() {
    let registry = Registry::start();
    let pki = pki();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("tls.crt"), &pki.server_pem).unwrap();
    fs::write(dir.path().join("tls.key"), &pki.server_key).unwrap();
    fs::write(dir.path().join("nodes-ca.pem"), &pki.ca_pem).unwrap();
    let config = format!(
        "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\nclient_ca = \"nodes-ca.pem\"\n{}",
        mirror_config(&registry.url(), &policy("all", &["registry.test/**"], "audit"))
    );
    let m = InProcess::start_in(dir, &config, false);
    let url = format!("https://{}/v2/", m.addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server_ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        let client = |identity: Option<&str>| {
            let mut b = reqwest::Client::builder().tls_certs_only([server_ca.clone()]);
            if let Some(pem) = identity {
                b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
            }
            b.build().unwrap()
        };
        let r = client(Some(&pki.client_identity)).get(&url).send().await.expect("a node's certificate is accepted");
        assert_eq!(r.status(), 200);
        // TLS 1.3 may report the refused handshake at the first read, not the connect.
        for (who, identity) in
            [("no certificate", None), ("another CA's certificate", Some(pki.stranger_identity.as_str()))]
        {
            let answer = match client(identity).get(&url).send().await {
                Ok(r) => r.bytes().await.map(|b| b.len()),
                Err(e) => Err(e),
            };
            assert!(answer.is_err(), "a client with {who} got an answer: {answer:?}");
        }
    });
}

#[test]
fn check_config_reports_a_client_ca_that_holds_no_certificate_and_one_without_tls() {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("not-a-ca.pem"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    for (extra, want) in [
        (
            "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n",
            "client_ca: client_ca not-a-ca.pem: holds no PEM certificate",
        ),
        ("", "client_ca: client certificates need TLS"),
    ] {
        fs::write(dir.path().join("tls.crt"), "").unwrap();
        fs::write(dir.path().join("tls.key"), "").unwrap();
        let rest =
            format!("[audit]\npath = \"no-such-dir/audit.jsonl\"\n\n{}", policy("all", &["registry.test/**"], "audit"));
        let config = format!("client_ca = \"not-a-ca.pem\"\n{extra}{}", mirror_config("http://127.0.0.1:5000", &rest));
        let path = dir.path().join("sigmirror.toml");
        fs::write(&path, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(want), "{text}");
        assert!(text.contains("audit.path: the directory of"), "every problem at once: {text}");
    }
}

#[test]
fn upstream_credentials_appear_in_no_log_audit_line_metric_or_error_body_and_client_authorization_stays_here() {
    let password = "pw-Zq7!s3cr3t-9041";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("puller:{password}"));
    let client_token = "client-token-6d1f0aa";
    let key = CosignKey::generate();
    let mock = MockUpstream::start();
    mock.serve_image("team-b/app", "v1", &build_image("creds-audited", "amd64"));
    mock.serve_image("team-a/app", "v1", &build_image("creds-unsigned", "amd64"));
    // Upstream refuses us (no challenge to answer): an upstream failure body.
    mock.set("/v2/team-b/locked/manifests/v1", Reply::status(401));
    mock.set("/v2/team-b/broken/manifests/v1", Reply::json(500, "{\"errors\":[{\"code\":\"UNKNOWN\"}]}"));
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    fs::write(dir.path().join("password"), format!("{password}\n")).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[audit]\npath = \"audit.jsonl\"\n\n[[upstream]]\n\
         registry = \"{NS}\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\nusername = \"puller\"\npassword_file = \"password\"\n\n{}",
        mock.url(),
        two_policies()
    );
    let m = Sigmirror::start_in(dir, &config);
    let base = m.url();
    let auth_headers = [("Accept", MANIFEST_ACCEPT), ("Authorization", &format!("Bearer {client_token}") as &str)];
    let mut bodies = Vec::new();
    for (url, status) in [
        (manifest_url(&base, "team-b/app", "v1"), 200),
        (manifest_url(&base, "team-a/app", "v1"), 403),
        (manifest_url(&base, "team-b/locked", "v1"), 502),
        (manifest_url(&base, "team-b/broken", "v1"), 502),
        (format!("{base}/v2/team-b/app/manifests/v1?ns=nowhere.test"), 403),
        (format!("{base}/v2/team-c/app/manifests/v1?ns={NS}"), 403),
        (format!("{base}/v2/team-a/app/blobs/{}?ns={NS}", sha256_digest(b"stray")), 403),
    ] {
        let r = http("GET", &url, &auth_headers);
        assert_eq!(r.status, status, "{url}: {}", r.text());
        bodies.push(r.text());
    }
    let metrics = http("GET", &format!("{base}/metrics"), &[]).text();
    let logs = m.logs();
    let audit = fs::read_to_string(m.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 6, "{audit}");
    for (what, text) in
        [("logs", &logs), ("audit log", &audit), ("/metrics", &metrics), ("error bodies", &bodies.join("\n"))]
    {
        for secret in [password, basic.as_str()] {
            assert!(!text.contains(secret), "{what} hold the upstream password: {text}");
        }
    }

    // Our credentials went upstream (so the check above could have seen
    // them), and the client's Authorization never did.
    let sent = mock.request_headers("/v2/team-b/app/manifests/v1");
    assert!(!sent.is_empty());
    for headers in &sent {
        let auth: Vec<&str> = headers.iter().filter(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).collect();
        assert_eq!(auth, [format!("Basic {basic}").as_str()], "{headers:?}");
    }
    for (_, target) in mock.requests() {
        let path = target.split('?').next().unwrap_or_default().to_string();
        for headers in mock.request_headers(&path) {
            assert!(headers.iter().all(|(_, v)| !v.contains(client_token)), "{target}: {headers:?}");
        }
    }
}
