//! The process's life: `/healthz` and `/readyz`, a SIGTERM drain that lets a
//! slow request finish, and `serve` refusing to start (before it listens)
//! on TLS material or a data directory it cannot use, which `check-config`
//! reports too.

mod support;

use std::fs;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

fn check_config(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
        .arg("check-config")
        .arg("--config")
        .arg(dir.join("sigmirror.toml"))
        .output()
        .expect("run check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn audit_config(upstream: &str, extra: &str) -> String {
    let base = mirror_config(upstream, &policy("audited", &["registry.test/**"], "audit"));
    format!("{extra}\n{base}")
}

#[test]
fn healthz_and_readyz_say_alive_and_ready_with_detail() {
    let mock = MockUpstream::start();
    let m = Sigmirror::start(&audit_config(&mock.url(), ""));
    let h = http("GET", &format!("{}/healthz", m.url()), &[]);
    assert_eq!((h.status, h.text().trim()), (200, "ok"));
    let r = http("GET", &format!("{}/readyz", m.url()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let detail = r.json();
    assert_eq!(detail["ready"], true);
    assert_eq!(detail["draining"], false);
    assert_eq!(detail["config"]["stale"], false);
    assert!(detail["pin_store"].as_str().unwrap_or_default().starts_with("embedded"), "{}", r.text());
}

#[test]
fn sigterm_drains_a_slow_request_refuses_new_connections_and_exits_zero() {
    let mock = MockUpstream::start();
    let image = build_image("slow", "amd64");
    mock.set(
        "/v2/team-a/app/manifests/v1",
        Reply::Slow {
            delay: Duration::from_secs(3),
            reply: Box::new(Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), OCI_MANIFEST.into()),
                    ("Docker-Content-Digest".into(), image.digest.clone()),
                ],
                body: image.manifest.clone(),
            }),
        },
    );
    let mut m = Sigmirror::start(&audit_config(&mock.url(), "drain_secs = 20\nadmin_listen = \"127.0.0.1:0\""));
    let admin = m.admin_addr.clone().expect("the admin listening line");
    assert_eq!(http("GET", &format!("http://{admin}/readyz"), &[]).status, 200);
    let url = format!("{}/v2/team-a/app/manifests/v1?ns=registry.test", m.url());
    let slow =
        thread::spawn(move || try_http_timeout("GET", &url, &[("Accept", OCI_MANIFEST)], &[], Duration::from_secs(30)));
    wait_for("the slow request to reach upstream", Duration::from_secs(10), Duration::from_millis(20), || {
        (mock.count("/v2/team-a/app/manifests/v1") > 0).then_some(())
    });
    let started = Instant::now();
    m.signal("TERM");

    // New connections are refused while the slow one is still in flight.
    let addr = m.addr.clone();
    wait_for("the listener to close", Duration::from_secs(5), Duration::from_millis(20), || {
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_err().then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(3), "the listener closed only after the slow request");
    // Not ready while draining: the admin listener, still up, says why.
    let ready = http("GET", &format!("http://{admin}/readyz"), &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!((ready.json()["ready"].clone(), ready.json()["draining"].clone()), (false.into(), true.into()));

    let r = slow.join().unwrap().expect("the in-flight request got an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, image.manifest, "the in-flight answer is whole");
    let status = m.wait_exit(Duration::from_secs(15)).expect("sigmirror exits after draining");
    assert_eq!(status.code(), Some(0), "{}", m.logs());
    let logs = m.logs();
    assert!(logs.contains("draining") && logs.contains("drained"), "{logs}");
}

#[test]
fn serve_fails_before_listening_on_a_tls_key_that_does_not_match_the_certificate() {
    let mock = MockUpstream::start();
    let dir = tempfile::TempDir::new().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    fs::write(dir.path().join("tls.key"), other.serialize_pem()).unwrap();
    let config = audit_config(&mock.url(), "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"");
    fs::write(dir.path().join("sigmirror.toml"), &config).unwrap();

    let (code, out) = check_config(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("tls_key") && out.contains("tls.crt and tls.key"), "{out}");

    let err = Sigmirror::try_start(
        &config
            .replace("tls.crt", &dir.path().join("tls.crt").display().to_string())
            .replace("tls.key", &dir.path().join("tls.key").display().to_string()),
    )
    .err()
    .expect("serve must not start on a mismatched key");
    assert!(err.contains("before listening") && err.contains("tls_key"), "{err}");

    // The matching key starts, over TLS.
    fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn serve_and_check_config_refuse_a_data_dir_that_cannot_be_written() {
    let mock = MockUpstream::start();
    let dir = tempfile::TempDir::new().unwrap();
    // A file where a directory should be: unwritable even for root.
    fs::write(dir.path().join("not-a-dir"), "x").unwrap();
    let config = mirror_config(&mock.url(), &policy("audited", &["registry.test/**"], "audit"))
        .replace("data_dir = \"data\"", "data_dir = \"not-a-dir/data\"");
    fs::write(dir.path().join("sigmirror.toml"), &config).unwrap();
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not-a-dir/data is not writable"), "{out}");

    let path = dir.path().join("not-a-dir").display().to_string();
    let err = Sigmirror::try_start(&config.replace("not-a-dir", &path)).err().expect("serve must not start");
    assert!(err.contains("before listening") && err.contains("is not writable"), "{err}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line_and_a_bad_value_is_a_located_problem() {
    let mock = MockUpstream::start();
    let m = Sigmirror::start(&audit_config(&mock.url(), "log_format = \"json\""));
    let logs = m.wait_for_log("sigmirror listening on", Duration::from_secs(5));
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("sigmirror listening on http://")))
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["policies"], 1, "fields flattened beside the message: {listening}");
    assert!(listening["timestamp"].as_str().is_some_and(|t| t.starts_with("20")), "{listening}");

    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("sigmirror.toml"), audit_config(&mock.url(), "log_format = \"yaml\"")).unwrap();
    let (code, out) = check_config(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sigmirror.toml:1:") && out.contains("log_format") && out.contains("unknown variant `yaml`"),
        "{out}"
    );
}
