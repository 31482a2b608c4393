//! containerd end to end: the real `ctr images pull` against the real registry,
//! directly (harness check) and through sigmirror as its fail-closed mirror.

mod support;

use std::time::Duration;

use support::*;

/// The registry name containerd is told to pull from; it never resolves, so a
/// pull can only succeed through the hosts.toml we write.
const REG: &str = "registry.test";

#[test]
fn containerd_pulls_directly_from_the_test_registry() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "direct");
    let containerd = Containerd::start();
    let hosts = hosts_dir(REG, &registry.host);

    let image_ref = format!("{REG}/team-a/app:v1");
    let out = containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\n{}", containerd.logs()));
    assert!(out.contains("unpacking linux/amd64"), "{out}");
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(image.digest.as_str()));
    // The layer was unpacked, not only fetched.
    let contents = containerd.read_unpacked_file(&image.file.0).expect("read file from the unpacked image");
    assert_eq!(contents, image.file.1);
}

#[test]
fn containerd_pulls_an_audit_allowed_image_through_sigmirror() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "through-mirror");
    let mirror =
        Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    let containerd = Containerd::start();
    let hosts = hosts_dir(REG, &mirror.addr);

    let image_ref = format!("{REG}/team-a/app:v1");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\nsigmirror log:\n{}", mirror.logs()));
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(image.digest.as_str()));
    assert_eq!(containerd.read_unpacked_file(&image.file.0).expect("unpacked layer"), image.file.1);
    // The allow was decided by the audit policy, and logged.
    let logs = mirror.wait_for_log(&format!("registry.test/team-a/app@{}", image.digest), Duration::from_secs(5));
    let line = logs.lines().find(|l| l.contains(&image.digest) && l.contains("allow")).unwrap_or_else(|| {
        panic!("no allow line for {}:\n{logs}", image.digest);
    });
    assert!(line.contains("team-a"), "{line}");
}

#[test]
fn containerd_pulls_a_multi_arch_index_through_sigmirror() {
    let registry = Registry::start();
    let index = push_multiarch(&registry.host, "team-a/multi", "v1", "multi-mirror");
    let mirror =
        Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    let containerd = Containerd::start();
    let hosts = hosts_dir(REG, &mirror.addr);

    let image_ref = format!("{REG}/team-a/multi:v1");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\nsigmirror log:\n{}", mirror.logs()));
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(index.digest.as_str()));
    let amd64 = index.children.iter().find(|c| c.platform.1 == "amd64").unwrap();
    let arm64 = index.children.iter().find(|c| c.platform.1 == "arm64").unwrap();
    assert_eq!(containerd.read_unpacked_file(&amd64.file.0).expect("amd64 layer unpacked"), amd64.file.1);
    assert!(containerd.read_unpacked_file(&arm64.file.0).is_err(), "arm64 layer unpacked on amd64");
}

#[test]
fn containerd_cannot_pull_an_image_no_policy_matches() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-b/app", "v1", "refused");
    let mirror =
        Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    let containerd = Containerd::start();
    let hosts = hosts_dir(REG, &mirror.addr);

    let image_ref = format!("{REG}/team-b/app:v1");
    let err = match containerd.pull(&image_ref, hosts.path()) {
        Ok(out) => panic!("pull of an image no policy covers succeeded:\n{out}\nsigmirror log:\n{}", mirror.logs()),
        Err(e) => e,
    };
    // Fail closed: containerd did not go around the mirror (it could not
    // resolve registry.test anyway), and holds nothing of the image.
    assert!(!err.contains("timed out"), "{err}");
    assert!(err.contains("403 Forbidden") && err.contains(&mirror.addr), "refused for another reason: {err}");
    assert_eq!(containerd.image_digest(&image_ref), None);
    assert!(containerd.read_unpacked_file(&image.file.0).is_err());
    // Refused by tag, before upstream was asked: the log names the tag.
    let name = "registry.test/team-b/app:v1";
    let logs = mirror.wait_for_log(name, Duration::from_secs(5));
    let line = logs.lines().find(|l| l.contains(name)).unwrap();
    assert!(line.contains("deny") && line.contains("refused"), "{line}");
    assert!(!logs.contains(&image.digest), "the digest was fetched: {logs}");
}

#[test]
fn with_only_the_default_hosts_file_every_registry_goes_through_sigmirror() {
    let registry = Registry::start();
    let image = push_image(&registry.host, "team-a/app", "v1", "default-hosts");
    let mirror =
        Sigmirror::start(&mirror_config(&registry.url(), &policy("team-a", &["registry.test/team-a/**"], "audit")));
    let containerd = Containerd::start();
    // The shipped catch-all, pointed at this test's sigmirror over plain HTTP.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/containerd/certs.d/_default/hosts.toml"))
            .unwrap();
    let local = format!("http://{}", mirror.addr);
    let hosts_toml: String = shipped
        .replace("https://10.96.0.50:5050", &local)
        .lines()
        .filter(|l| !l.trim_start().starts_with("ca ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(hosts_toml.contains(&format!("server = \"{local}\"")), "{hosts_toml}");
    let hosts = tempfile::TempDir::new().unwrap();
    std::fs::create_dir_all(hosts.path().join("_default")).unwrap();
    std::fs::write(hosts.path().join("_default/hosts.toml"), hosts_toml).unwrap();

    // A configured registry with no directory of its own: through sigmirror, verified.
    let image_ref = format!("{REG}/team-a/app:v1");
    containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\nsigmirror log:\n{}", mirror.logs()));
    assert_eq!(containerd.image_digest(&image_ref).as_deref(), Some(image.digest.as_str()));
    assert!(mirror.logs().contains(&format!("allow registry.test/team-a/app@{}", image.digest)), "{}", mirror.logs());

    // A registry nobody configured: refused by sigmirror, not pulled around it.
    let elsewhere = "unconfigured.example/team-a/app:v1";
    let err = containerd.pull(elsewhere, hosts.path()).expect_err("a pull from an unconfigured registry succeeded");
    assert!(err.contains("403") && err.contains(&mirror.addr), "refused for another reason: {err}");
    let logs = mirror.wait_for_log("unconfigured.example", Duration::from_secs(5));
    assert!(logs.contains("not a configured upstream"), "{logs}");
    assert!(
        mirror.metric("sigmirror_decisions_total{decision=\"deny\",policy=\"-\"}") > 0,
        "the refusal was not counted"
    );
}
