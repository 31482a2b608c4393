//! Hot reload with the real binary and the real registry: trust material and
//! policies change without a restart (same pid), an invalid change is
//! rejected whole, a key rotated under load refuses old signatures from the
//! next request on, ConfigMap-style `..data` swaps and SIGHUP reload.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use signing::*;
use support::*;

const NS: &str = "registry.test";
/// A reload is seen within two polls (one to notice, one to settle); room
/// for a loaded machine.
const RELOAD_WAIT: Duration = Duration::from_secs(20);

/// Two images in `team-a/`, one signed by each key.
struct Fixture {
    registry: Registry,
    old_key: CosignKey,
    new_key: CosignKey,
    by_old: Pushed,
    by_new: Pushed,
}

fn fixture() -> Fixture {
    let registry = Registry::start();
    let (old_key, new_key) = (CosignKey::generate(), CosignKey::generate());
    let by_old = push_image(&registry.host, "team-a/old", "v1", "signed by the old key");
    let by_new = push_image(&registry.host, "team-a/new", "v1", "signed by the new key");
    sign_and_push(&registry.host, "team-a/old", &by_old.digest, &old_key, "registry.test/team-a/old");
    sign_and_push(&registry.host, "team-a/new", &by_new.digest, &new_key, "registry.test/team-a/new");
    Fixture { registry, old_key, new_key, by_old, by_new }
}

/// The config: one enforcing policy for `team-a/**` trusting `keys`.
fn config(registry: &Registry, keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    mirror_config(
        &registry.url(),
        &format!(
            "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
             cosign_keys = [{}]\n{extra}",
            keys.join(", ")
        ),
    )
}

fn status(m: &Sigmirror, repo: &str) -> u16 {
    pull(m, repo).status
}

fn pull(m: &Sigmirror, repo: &str) -> Response {
    http("GET", &format!("{}/v2/{repo}/manifests/v1?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

fn reloads(m: &Sigmirror, result: &str) -> u64 {
    m.metric(&format!("sigmirror_config_reloads_total{{result=\"{result}\"}}"))
}

/// Waits until the `result` reload counter exceeds `before`.
fn wait_reload(m: &Sigmirror, result: &str, before: u64) {
    wait_for(&format!("a reload with result {result}"), RELOAD_WAIT, Duration::from_millis(100), || {
        (reloads(m, result) > before).then_some(())
    });
}

/// Replaces `path` by rename, as editors and config management do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_valid_config_change_is_applied_without_a_restart() {
    let f = fixture();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("old.pub"), f.old_key.public_pem()).unwrap();
    fs::write(dir.path().join("new.pub"), f.new_key.public_pem()).unwrap();
    let m = Sigmirror::start_in(dir, &config(&f.registry, &["old.pub"], ""));
    let pid = m.pid();
    assert_eq!(status(&m, "team-a/old"), 200, "{}", m.logs());
    assert_eq!(status(&m, "team-a/new"), 403);

    let before = reloads(&m, "ok");
    replace(m.config_path(), &config(&f.registry, &["new.pub"], ""));
    wait_reload(&m, "ok", before);

    let r = pull(&m, "team-a/old");
    assert_eq!(r.status, 403, "the old key is no longer trusted: {}", r.text());
    assert!(r.oci_error_message().unwrap().contains(&f.by_old.digest), "{}", r.text());
    assert_eq!(status(&m, "team-a/new"), 200, "{}", m.logs());
    assert_eq!(m.pid(), pid, "the process must not restart");
    assert!(m.logs().contains("config reloaded (a watched file changed)"), "{}", m.logs());
    let ready = http("GET", &format!("{}/readyz", m.url()), &[]);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["config"]["stale"], false, "{}", ready.text());
}

#[test]
fn an_invalid_change_is_rejected_whole_and_the_old_config_keeps_serving() {
    let f = fixture();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("old.pub"), f.old_key.public_pem()).unwrap();
    let m = Sigmirror::start_in(dir, &config(&f.registry, &["old.pub"], ""));
    assert_eq!(status(&m, "team-a/old"), 200, "{}", m.logs());
    assert_eq!(m.metric("sigmirror_config_stale"), 0);

    // Two problems at once: a key file that does not exist (while the other
    // half of the change, dropping old.pub, would be valid) and a bad glob.
    let before = reloads(&m, "error");
    let bad = config(&f.registry, &["missing.pub"], "immutable_tags = [\"[\"]\n");
    replace(m.config_path(), &bad);
    wait_reload(&m, "error", before);

    assert_eq!(m.metric("sigmirror_config_stale"), 1);
    assert_eq!(status(&m, "team-a/old"), 200, "the old config stays in force: {}", m.logs());
    assert_eq!(status(&m, "team-a/new"), 403);
    let ready = http("GET", &format!("{}/readyz", m.url()), &[]);
    assert_eq!(ready.status, 200, "a stale config still serves: {}", ready.text());
    let detail = ready.json();
    assert_eq!(detail["config"]["stale"], true, "{}", ready.text());
    let reason = detail["config"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("policy[0].cosign_keys[0]") && reason.contains("missing.pub"), "{reason}");
    assert!(reason.contains("policy[0].immutable_tags[0]"), "{reason}");
    let logs = m.logs();
    assert!(logs.contains("config reload rejected") && logs.contains("policy[0].cosign_keys[0]"), "{logs}");

    // Fixed: applied, and no longer stale.
    let before = reloads(&m, "ok");
    fs::write(m.dir.path().join("missing.pub"), f.new_key.public_pem()).unwrap();
    replace(m.config_path(), &config(&f.registry, &["missing.pub"], ""));
    wait_reload(&m, "ok", before);
    assert_eq!(m.metric("sigmirror_config_stale"), 0);
    assert_eq!(status(&m, "team-a/new"), 200, "{}", m.logs());
    assert_eq!(status(&m, "team-a/old"), 403);
}

#[test]
fn rotating_a_key_under_load_refuses_old_signatures_from_the_next_request_on() {
    let f = fixture();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release-2026.pub"), f.old_key.public_pem()).unwrap();
    let m = Arc::new(Sigmirror::start_in(dir, &config(&f.registry, &["release-2026.pub"], "")));
    let pid = m.pid();
    assert_eq!(status(&m, "team-a/old"), 200, "{}", m.logs());

    // The load: both images, over and over, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (m, stop) = (m.clone(), stop.clone());
        thread::spawn(move || {
            let (mut seen, mut old_refused) = (Vec::new(), false);
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..5_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let repo = if i % 2 == 0 { "team-a/old" } else { "team-a/new" };
                let s = status(&m, repo);
                assert!(s == 200 || s == 403, "{repo} answered {s} during the rotation");
                if repo == "team-a/old" {
                    // Once refused, the old signature never comes back.
                    assert!(!(old_refused && s == 200), "team-a/old was served again after a refusal");
                    old_refused |= s == 403;
                }
                seen.push(s);
            }
            seen
        })
    };
    thread::sleep(Duration::from_millis(300));

    // Remove the old public key, add the new one, point the policy at it.
    let before = reloads(&m, "ok");
    fs::remove_file(m.dir.path().join("release-2026.pub")).unwrap();
    fs::write(m.dir.path().join("release-2027.pub"), f.new_key.public_pem()).unwrap();
    replace(m.config_path(), &config(&f.registry, &["release-2027.pub"], ""));
    wait_reload(&m, "ok", before);
    // The very next request after the reload.
    let r = pull(&m, "team-a/old");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.oci_error_message().unwrap().contains(&f.by_old.digest));
    assert_eq!(status(&m, "team-a/new"), 200);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);

    let seen = load.join().expect("no 5xx and no relapse during the rotation");
    assert!(seen.len() >= 4, "the load made only {} requests", seen.len());
    assert!(seen.contains(&403), "the load never saw the rotation: {seen:?}");
    assert_eq!(m.pid(), pid, "the process must not restart");
    assert!(!m.logs().contains("panicked"), "{}", m.logs());
    let _ = &f.by_new;
}

#[test]
fn a_configmap_style_data_symlink_swap_is_reloaded() {
    let f = fixture();
    // The layout the kubelet writes: files are links through `..data`, a
    // link to a timestamped directory, swapped by rename on an update.
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path();
    let first = d.join("..2026_01_01");
    fs::create_dir(&first).unwrap();
    fs::write(first.join("release.pub"), f.old_key.public_pem()).unwrap();
    std::os::unix::fs::symlink("..2026_01_01", d.join("..data")).unwrap();
    for name in ["sigmirror.toml", "release.pub"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), d.join(name)).unwrap();
    }
    // start_in writes sigmirror.toml through the link, into ..2026_01_01.
    let m = Sigmirror::start_in(dir, &config(&f.registry, &["release.pub"], ""));
    let pid = m.pid();
    assert!(m.dir.path().join("..2026_01_01/sigmirror.toml").is_file());
    assert_eq!(status(&m, "team-a/old"), 200, "{}", m.logs());

    let d = m.dir.path();
    let second = d.join("..2026_02_01");
    fs::create_dir(&second).unwrap();
    fs::write(second.join("release.pub"), f.new_key.public_pem()).unwrap();
    fs::copy(first.join("sigmirror.toml"), second.join("sigmirror.toml")).unwrap();
    let before = reloads(&m, "ok");
    std::os::unix::fs::symlink("..2026_02_01", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    // The kubelet then removes the old directory.
    fs::remove_dir_all(&first).unwrap();
    wait_reload(&m, "ok", before);

    assert_eq!(status(&m, "team-a/old"), 403);
    assert_eq!(status(&m, "team-a/new"), 200, "{}", m.logs());
    assert_eq!(m.pid(), pid);
}

#[test]
fn sighup_reloads_instead_of_ending_the_process() {
    let f = fixture();
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("old.pub"), f.old_key.public_pem()).unwrap();
    let mut m = Sigmirror::start_in(dir, &config(&f.registry, &["old.pub"], ""));
    let pid = m.pid();
    for round in 1..=2u64 {
        m.signal("HUP");
        wait_reload(&m, "ok", round - 1);
        assert!(m.is_running(), "SIGHUP ended the process: {}", m.logs());
    }
    assert!(m.logs().contains("config reloaded (SIGHUP)"), "{}", m.logs());
    assert_eq!(m.pid(), pid);
    assert_eq!(status(&m, "team-a/old"), 200, "{}", m.logs());
}
