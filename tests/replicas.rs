//! Two sigmirror replicas (two real processes) sharing one PostgreSQL pin
//! store race to pin the same tag while their upstreams disagree about it:
//! exactly one pin wins, and both replicas then serve the winner.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/signing.rs"]
mod signing;
mod support;

use std::fs;

use signing::*;
use support::*;

const REPO: &str = "team-a/app";

fn replica(registry: &Registry, key: &CosignKey, pin_store: &str) -> Sigmirror {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npin_store = \"{pin_store}\"\npin_revalidate_secs = 3600\n\n\
         [[upstream]]\nregistry = \"registry.test\"\nurl = \"{}\"\ndangerous_plain_http = true\ndefault = true\n\n\
         [[policy]]\nname = \"releases\"\nscope = [\"registry.test/team-a/**\"]\ncosign_keys = [\"release.pub\"]\n\
         immutable_tags = [\"v*\"]\non_tag_move = \"serve-pinned\"\n",
        registry.url()
    );
    Sigmirror::start_in(dir, &config)
}

#[test]
fn two_replicas_racing_to_pin_a_tag_agree_on_one_winner_and_both_serve_it() {
    let pg = postgres::TestPostgres::start();
    let key = CosignKey::generate();
    // Two upstreams that disagree about v1: each has both images, but v1
    // points at A on one and at B on the other.
    let (r1, r2) = (Registry::start(), Registry::start());
    let a = build_image("replica-a", "amd64");
    let b = build_image("replica-b", "amd64");
    for (registry, tagged, other) in [(&r1, &a, &b), (&r2, &b, &a)] {
        push_built(&registry.host, REPO, Some("v1"), tagged);
        push_built(&registry.host, REPO, None, other);
        for image in [&a, &b] {
            sign_and_push(&registry.host, REPO, &image.digest, &key, "registry.test/team-a/app");
        }
    }
    let one = replica(&r1, &key, &pg.url);
    let two = replica(&r2, &key, &pg.url);

    let url = |m: &Sigmirror| format!("{}/v2/{REPO}/manifests/v1?ns=registry.test", m.url());
    let (u1, u2) = (url(&one), url(&two));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let race = |u: String, barrier: std::sync::Arc<std::sync::Barrier>| {
        std::thread::spawn(move || {
            barrier.wait();
            http("GET", &u, &[("Accept", MANIFEST_ACCEPT)])
        })
    };
    let t1 = race(u1.clone(), barrier.clone());
    let t2 = race(u2.clone(), barrier);
    let (first1, first2) = (t1.join().unwrap(), t2.join().unwrap());
    assert_eq!(first1.status, 200, "{}\n{}", first1.text(), one.logs());
    assert_eq!(first2.status, 200, "{}\n{}", first2.text(), two.logs());
    let winner = first1.header("docker-content-digest").unwrap().to_string();
    assert!(winner == a.digest || winner == b.digest);
    assert_eq!(first2.header("docker-content-digest"), Some(winner.as_str()), "the replicas disagree");
    // And they keep agreeing.
    for u in [&u1, &u2, &u1, &u2] {
        assert_eq!(
            http("GET", u, &[("Accept", MANIFEST_ACCEPT)]).header("docker-content-digest"),
            Some(winner.as_str())
        );
    }
    let pinned_lines = one.logs().matches("pinned tag").count() + two.logs().matches("pinned tag").count();
    assert_eq!(pinned_lines, 1, "exactly one replica should have made the pin");
}
