//! Cosign end to end: signatures made by Sigstore's own Rust crate, pushed to
//! the real registry, verified by the real sigmirror binary, pulled by the
//! real containerd.

#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use signing::*;
use support::*;

const NS: &str = "registry.test";
const REPO: &str = "team-a/app";

/// A mirror whose enforcing policy trusts `key` for `registry.test/team-a/**`.
fn mirror_trusting(registry: &Registry, key: &CosignKey, extra: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let policy = format!(
        "[[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\nmode = \"enforce\"\n\
         cosign_keys = [\"release.pub\"]\n{extra}"
    );
    Sigmirror::start_in(dir, &mirror_config(&registry.url(), &policy))
}

fn manifest(m: &Sigmirror, method: &str, repo: &str, reference: &str) -> Response {
    http(method, &format!("{}/v2/{repo}/manifests/{reference}?ns={NS}", m.url()), &[("Accept", MANIFEST_ACCEPT)])
}

/// Asserts a 403 DENIED whose message names the policy, the image and `reason`.
fn assert_refused(r: &Response, digest: &str, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.oci_error_code().as_deref(), Some("DENIED"), "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert!(msg.starts_with("policy releases refused registry.test/"), "{msg}");
    assert!(msg.contains(digest), "message should name {digest}: {msg}");
    assert!(msg.contains(reason), "message should say {reason:?}: {msg}");
}

#[test]
fn a_cosign_signed_image_is_served_by_tag_and_digest_with_head_and_get() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "signed");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &image.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "");

    for (method, reference) in
        [("HEAD", "v1"), ("GET", "v1"), ("HEAD", image.digest.as_str()), ("GET", image.digest.as_str())]
    {
        let r = manifest(&m, method, REPO, reference);
        assert_eq!(r.status, 200, "{method} {reference}: {}\n{}", r.text(), m.logs());
        assert_eq!(r.header("docker-content-digest"), Some(image.digest.as_str()));
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        if method == "GET" {
            assert_eq!(r.body, image.manifest, "served bytes differ from upstream's");
        }
    }
    let logs = m.logs();
    assert!(logs.contains("cosign key release.pub"), "the decision log should say which key verified:\n{logs}");
}

#[test]
fn an_unsigned_image_is_refused_with_its_reason() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "unsigned");
    let m = mirror_trusting(&registry, &CosignKey::generate(), "");
    for method in ["GET", "HEAD"] {
        let r = manifest(&m, method, REPO, "v1");
        assert_eq!(r.status, 403, "{method}");
    }
    let r = manifest(&m, "GET", REPO, "v1");
    assert_refused(&r, &image.digest, "no cosign signature found");
    // The audit log carries the same words as the response.
    let msg = r.oci_error_message().unwrap();
    assert!(m.logs().contains(&msg), "decision log should repeat {msg:?}:\n{}", m.logs());
}

#[test]
fn a_signature_by_another_key_is_refused_as_untrusted() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "wrong-key");
    sign_and_push(&registry.host, REPO, &image.digest, &CosignKey::generate(), "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &CosignKey::generate(), "");
    assert_refused(&manifest(&m, "GET", REPO, "v1"), &image.digest, "key release.pub: signature by an untrusted key");
}

#[test]
fn a_p384_key_signature_verifies() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "p384");
    let key = CosignKey::generate_p384();
    sign_and_push(&registry.host, REPO, &image.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "");
    let r = manifest(&m, "GET", REPO, "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
}

#[test]
fn a_signature_replayed_from_another_image_is_refused() {
    let registry = Registry::start();
    let signed = push_image(&registry.host, REPO, "v1", "replay-signed");
    let other = push_image(&registry.host, REPO, "v2", "replay-other");
    let key = CosignKey::generate();
    // A valid signature for `signed`, copied under `other`'s signature tag.
    let layer = signed_layer(&signed.digest, &key, "registry.test/team-a/app");
    push_layers(&registry.host, REPO, &other.digest, vec![layer]);
    let m = mirror_trusting(&registry, &key, "");
    let r = manifest(&m, "GET", REPO, "v2");
    assert_refused(&r, &other.digest, &format!("signature is for {} not {}", signed.digest, other.digest));
}

#[test]
fn a_signature_naming_another_repository_is_refused_unless_the_policy_allows_renames() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "renamed");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &image.digest, &key, "upstream.example/acme/app");
    let m = mirror_trusting(&registry, &key, "");
    assert_refused(&manifest(&m, "GET", REPO, "v1"), &image.digest, "signature names image upstream.example/acme/app");
    let m = mirror_trusting(&registry, &key, "dangerous_skip_docker_reference = true\n");
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200);
}

#[test]
fn a_tampered_payload_is_refused() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "tampered");
    let key = CosignKey::generate();
    let mut layer = signed_layer(&image.digest, &key, "registry.test/team-a/app");
    // sigstore serializes `simple_signing` when pushing: change it after signing.
    layer.simple_signing.optional = Some(Default::default());
    push_layers(&registry.host, REPO, &image.digest, vec![layer]);
    let m = mirror_trusting(&registry, &key, "");
    assert_refused(
        &manifest(&m, "GET", REPO, "v1"),
        &image.digest,
        "signature by an untrusted key (or over an altered payload)",
    );
}

#[test]
fn one_good_signature_among_bad_ones_is_enough() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "mixed");
    let key = CosignKey::generate();
    let bad = signed_layer(&image.digest, &CosignKey::generate(), "registry.test/team-a/app");
    let good = signed_layer(&image.digest, &key, "registry.test/team-a/app");
    push_layers(&registry.host, REPO, &image.digest, vec![bad, good]);
    let m = mirror_trusting(&registry, &key, "");
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200, "{}", m.logs());
}

#[test]
fn a_signature_manifest_with_thousands_of_layers_is_refused_without_fetching_them() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "many-layers");
    let payload = br#"{"critical":{}}"#;
    let payload_digest = push_blob(&registry.host, REPO, payload);
    let config_digest = push_blob(&registry.host, REPO, b"{}");
    let layer = serde_json::json!({
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": payload_digest, "size": payload.len(),
        "annotations": { "dev.cosignproject.cosign/signature": "MEUCIQ==" }
    });
    let sig_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2 },
        "layers": vec![layer; 5000],
    }))
    .unwrap();
    let tag = format!("{}.sig", image.digest.replace(':', "-"));
    push_raw_manifest(&registry.host, REPO, &tag, OCI_MANIFEST, &sig_manifest);
    let m = mirror_trusting(&registry, &CosignKey::generate(), "");
    assert_refused(
        &manifest(&m, "GET", REPO, "v1"),
        &image.digest,
        "has 5000 layers, more than the 64 sigmirror examines",
    );
    assert_eq!(m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"blob\"}"), 0);
}

#[test]
fn a_signed_index_vouches_for_its_platform_manifests() {
    let registry = Registry::start();
    let index = push_multiarch(&registry.host, REPO, "v1", "multi-signed");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &index.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "[audit]\npath = \"audit.log\"\n");
    let child = &index.children[0];
    // Before the index is verified, a platform manifest needs its own signature.
    assert_refused(&manifest(&m, "GET", REPO, &child.digest), &child.digest, "no cosign signature found");
    let r = manifest(&m, "GET", REPO, "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    for c in &index.children {
        let r = manifest(&m, "GET", REPO, &c.digest);
        assert_eq!(r.status, 200, "{}: {}", c.digest, r.text());
    }
    // A vouched allow is recalled, not verified: the audit log records it
    // (stderr has it only at debug).
    let audit = fs::read_to_string(m.dir.path().join("audit.log")).unwrap();
    let vouched = format!("\"reason\":\"listed by verified index {}\"", index.digest);
    assert_eq!(audit.matches(&vouched).count(), index.children.len(), "{audit}");
}

#[test]
fn an_unsigned_index_does_not_vouch_for_its_platform_manifests() {
    let registry = Registry::start();
    let index = push_multiarch(&registry.host, REPO, "v1", "multi-unsigned");
    let m = mirror_trusting(&registry, &CosignKey::generate(), "");
    assert_refused(&manifest(&m, "GET", REPO, "v1"), &index.digest, "no cosign signature found");
    let child = &index.children[0];
    assert_refused(&manifest(&m, "GET", REPO, &child.digest), &child.digest, "no cosign signature found");
}

#[test]
fn signatures_can_live_in_a_separate_signature_repository() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "sig-repo");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, "team-a/signatures", &image.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "");
    assert_refused(&manifest(&m, "GET", REPO, "v1"), &image.digest, "no cosign signature found");
    let m = mirror_trusting(&registry, &key, "signature_repository = \"team-a/signatures\"\n");
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200, "{}", m.logs());
}

#[test]
fn fifty_concurrent_heads_for_a_cold_digest_run_one_verification_and_one_signature_fetch() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "concurrent");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &image.digest, &key, "registry.test/team-a/app");
    let m = Arc::new(mirror_trusting(&registry, &key, ""));
    let url = format!("{}/v2/{REPO}/manifests/{}?ns={NS}", m.url(), image.digest);
    let barrier = Arc::new(std::sync::Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                try_http_timeout("HEAD", &url, &[("Accept", MANIFEST_ACCEPT)], &[], Duration::from_secs(30))
                    .map(|r| r.status)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(200));
    }
    assert_eq!(m.metric("sigmirror_verifications_total{policy=\"releases\"}"), 1);
    // One fetch of the image manifest, one of the .sig manifest, one payload blob.
    assert_eq!(m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"manifest\"}"), 2);
    assert_eq!(m.metric("sigmirror_upstream_requests_total{registry=\"registry.test\",kind=\"blob\"}"), 1);
    assert_eq!(m.metric("sigmirror_decisions_total{decision=\"allow\",policy=\"releases\"}"), 50);
}

#[test]
fn the_verify_command_prints_the_verdict_and_exits_by_it() {
    let registry = Registry::start();
    let signed = push_image(&registry.host, REPO, "v1", "cli-signed");
    push_image(&registry.host, REPO, "v2", "cli-unsigned");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &signed.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "");
    let run = |image: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
            .args(["verify", "--config", m.config_path().to_str().unwrap(), image])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code(), json)
    };
    let (code, json) = run("registry.test/team-a/app:v1");
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["verdict"]["decision"], "allow");
    assert_eq!(json["digest"], signed.digest.as_str());
    let (code, json) = run("registry.test/team-a/app:v2");
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["verdict"]["decision"], "deny");
    assert!(json["message"].as_str().unwrap().contains("no cosign signature found"), "{json}");
}

#[test]
fn containerd_pulls_cosign_signed_images_and_not_unsigned_or_wrongly_signed_ones() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    let single = push_image(&registry.host, REPO, "signed", "ctr-signed");
    sign_and_push(&registry.host, REPO, &single.digest, &key, "registry.test/team-a/app");
    let multi = push_multiarch(&registry.host, REPO, "multi", "ctr-multi");
    sign_and_push(&registry.host, REPO, &multi.digest, &key, "registry.test/team-a/app");
    push_image(&registry.host, REPO, "unsigned", "ctr-unsigned");
    let wrong = push_image(&registry.host, REPO, "wrong", "ctr-wrong");
    sign_and_push(&registry.host, REPO, &wrong.digest, &CosignKey::generate(), "registry.test/team-a/app");

    let m = mirror_trusting(&registry, &key, "");
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &m.addr);
    for tag in ["signed", "multi"] {
        let image_ref = format!("{NS}/{REPO}:{tag}");
        containerd.pull(&image_ref, hosts.path()).unwrap_or_else(|e| panic!("{tag}: {e}\nsigmirror:\n{}", m.logs()));
    }
    assert_eq!(containerd.read_unpacked_file(&single.file.0).unwrap(), single.file.1);
    let amd64 = multi.children.iter().find(|c| c.platform.1 == "amd64").unwrap();
    assert_eq!(containerd.read_unpacked_file(&amd64.file.0).unwrap(), amd64.file.1);
    for (tag, reason) in [("unsigned", "no cosign signature found"), ("wrong", "signature by an untrusted key")] {
        let image_ref = format!("{NS}/{REPO}:{tag}");
        match containerd.pull(&image_ref, hosts.path()) {
            Ok(out) => panic!("{tag} was pulled:\n{out}"),
            Err(e) => assert!(
                e.contains("403") || e.contains("denied") || e.contains("DENIED") || e.contains("forbidden"),
                "{tag}: {e}"
            ),
        }
        let logs = m.logs();
        assert!(
            logs.lines().any(|l| l.contains("decision=deny ") && l.contains(reason)),
            "{tag}: no deny line with {reason:?}:\n{logs}"
        );
    }
}

fn blob(m: &Sigmirror, repo: &str, digest: &str) -> Response {
    http("GET", &format!("{}/v2/{repo}/blobs/{digest}?ns={NS}", m.url()), &[])
}

#[test]
fn a_blob_is_served_only_after_a_manifest_the_policy_allowed_references_it() {
    let registry = Registry::start();
    let signed = push_image(&registry.host, REPO, "v1", "blob-gate-signed");
    let unsigned = push_image(&registry.host, REPO, "v2", "blob-gate-unsigned");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &signed.digest, &key, "registry.test/team-a/app");
    let m = mirror_trusting(&registry, &key, "");
    let layer = &signed.layer_digests[0];

    // Asked for directly, by a client that never fetched (and so never had
    // verified) the manifest: refused, with the rule that refused it.
    let r = blob(&m, REPO, layer);
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = r.oci_error_message().unwrap();
    assert_eq!(
        msg,
        format!(
            "policy releases refused registry.test/{REPO}@{layer}: blob {layer} is not referenced by any manifest \
             this policy allowed in registry.test/{REPO} (fetch the image's manifest first)"
        )
    );
    assert!(m.logs().contains(&msg), "the decision log should carry the same words:\n{}", m.logs());

    // Once the signed manifest was served, its config and layer are served.
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200);
    let r = blob(&m, REPO, layer);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, signed.layers[0]);
    assert_eq!(blob(&m, REPO, &signed.config_digest).status, 200);
    // Not in another repository, and never for an image that was refused.
    assert_eq!(blob(&m, "team-a/other", layer).status, 403);
    assert_eq!(manifest(&m, "GET", REPO, "v2").status, 403);
    assert_eq!(blob(&m, REPO, &unsigned.layer_digests[0]).status, 403);
    // containerd's retry of a refused manifest digest under /blobs/ is refused too.
    assert_eq!(blob(&m, REPO, &unsigned.digest).status, 403);
}

/// Waits (bounded) until the mirror has applied `n` reloads.
fn wait_reloads(m: &Sigmirror, n: u64) {
    wait_for("the reload", Duration::from_secs(20), Duration::from_millis(50), || {
        (m.metric("sigmirror_config_reloads_total{result=\"ok\"}") >= n).then_some(())
    });
}

#[test]
fn the_blobs_a_verified_manifest_opened_stay_open_across_a_restart_and_a_reload_that_keeps_the_policy() {
    let registry = Registry::start();
    let signed = push_image(&registry.host, REPO, "v1", "blob-gate-restart");
    let key = CosignKey::generate();
    sign_and_push(&registry.host, REPO, &signed.digest, &key, "registry.test/team-a/app");
    let mut m = mirror_trusting(&registry, &key, "");
    let layer = &signed.layer_digests[0];
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200);
    assert_eq!(blob(&m, REPO, layer).status, 200);

    // A node resuming its layer download after sigmirror restarted: no
    // manifest fetch in between (the journal kept the entry).
    m.restart();
    let r = blob(&m, REPO, layer);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, signed.layers[0]);

    // A reload that leaves the policy as it was keeps the blob open...
    let path = m.config_path().to_path_buf();
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, format!("{text}\n# touched by the test\n")).unwrap();
    wait_reloads(&m, 1);
    assert_eq!(blob(&m, REPO, &signed.config_digest).status, 200);

    // ...one that changes its trust material closes it, until the manifest
    // is verified again under the new material.
    let other = CosignKey::generate();
    fs::write(m.dir.path().join("other.pub"), other.public_pem()).unwrap();
    let text = fs::read_to_string(&path).unwrap().replace("[\"release.pub\"]", "[\"release.pub\", \"other.pub\"]");
    fs::write(&path, text).unwrap();
    wait_reloads(&m, 2);
    let r = blob(&m, REPO, layer);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.oci_error_message().unwrap().contains("(fetch the image's manifest first)"), "{}", r.text());
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200);
    assert_eq!(blob(&m, REPO, layer).status, 200);
}

#[test]
fn in_audit_mode_an_unreferenced_blob_is_served_and_the_refusal_it_would_be_is_logged() {
    let registry = Registry::start();
    let image = push_image(&registry.host, REPO, "v1", "blob-gate-audit");
    let m = Sigmirror::start(&mirror_config(&registry.url(), &policy("watch", &["registry.test/team-a/**"], "audit")));
    let layer = &image.layer_digests[0];
    let r = blob(&m, REPO, layer);
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = m.wait_for_log("would refuse: blob", Duration::from_secs(5));
    assert!(logs.contains(&format!("blob {layer} is not referenced")), "{logs}");
    // After the manifest (allowed in audit mode), its blobs are no longer reported.
    assert_eq!(manifest(&m, "GET", REPO, "v1").status, 200);
    assert_eq!(blob(&m, REPO, &image.config_digest).status, 200);
    let config_line = format!("blob {} is not referenced", image.config_digest);
    assert!(!m.logs().contains(&config_line), "{}", m.logs());
}

/// A mirror trusting `key` for `registry.test/team-a/**` with `index = "<rule>"`.
fn mirror_with_index_rule(registry: &Registry, key: &CosignKey, rule: &str) -> Sigmirror {
    mirror_trusting(registry, key, &format!("index = {rule:?}\n"))
}

#[test]
fn index_children_serves_an_unsigned_index_and_containerd_gets_only_platform_manifests_that_verify() {
    let registry = Registry::start();
    let key = CosignKey::generate();
    // Signed per platform, not as an index (as some publishers do).
    let multi = push_multiarch(&registry.host, "team-a/multi", "v1", "children-all");
    for c in &multi.children {
        sign_and_push(&registry.host, "team-a/multi", &c.digest, &key, "registry.test/team-a/multi");
    }
    // Only the arm64 platform signed: the amd64 one a node pulls is not.
    let partial = push_multiarch(&registry.host, "team-a/partial", "v1", "children-partial");
    let amd64 = partial.children.iter().find(|c| c.platform.1 == "amd64").unwrap();
    let arm64 = partial.children.iter().find(|c| c.platform.1 == "arm64").unwrap();
    sign_and_push(&registry.host, "team-a/partial", &arm64.digest, &key, "registry.test/team-a/partial");

    let children = mirror_with_index_rule(&registry, &key, "children");
    let containerd = Containerd::start();
    let hosts = hosts_dir(NS, &children.addr);
    let image_ref = "registry.test/team-a/multi:v1";
    containerd.pull(image_ref, hosts.path()).unwrap_or_else(|e| panic!("{e}\nsigmirror log:\n{}", children.logs()));
    assert_eq!(containerd.image_digest(image_ref).as_deref(), Some(multi.digest.as_str()));
    let pulled = multi.children.iter().find(|c| c.platform.1 == "amd64").unwrap();
    assert_eq!(containerd.read_unpacked_file(&pulled.file.0).expect("amd64 layer unpacked"), pulled.file.1);
    let logs = children.logs();
    assert!(logs.contains("index = \\\"children\\\": an index is served and vouches for nothing"), "{logs}");

    // The unsigned amd64 manifest is refused at its own fetch, index or not.
    let err = match containerd.pull("registry.test/team-a/partial:v1", hosts.path()) {
        Ok(out) => panic!("an unsigned platform manifest was pulled:\n{out}\n{}", children.logs()),
        Err(e) => e,
    };
    assert!(err.contains("403"), "{err}");
    assert!(containerd.read_unpacked_file(&amd64.file.0).is_err(), "the unsigned platform's layer was unpacked");
    let r = manifest(&children, "GET", "team-a/partial", &amd64.digest);
    assert_refused(&r, &amd64.digest, "no cosign signature found");
    // The signed platform of the same index is served.
    assert_eq!(manifest(&children, "GET", "team-a/partial", &arm64.digest).status, 200);

    // Under the default, `index = "signed"`, the unsigned index itself is refused.
    let signed = mirror_with_index_rule(&registry, &key, "signed");
    let r = manifest(&signed, "GET", "team-a/multi", "v1");
    assert_refused(&r, &multi.digest, "no cosign signature found");
}
