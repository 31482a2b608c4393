//! The PostgreSQL pin store against a real, throwaway PostgreSQL cluster.
//!
//! Two `PinStore`s on one database stand for two replicas of the mirror: each
//! has its own connections and its own cache, as separate processes would.

#[path = "support/postgres.rs"]
mod postgres;

use std::path::Path;
use std::time::Duration;

use postgres::TestPostgres;
use sigmirror::oci::Digest;
use sigmirror::pins::{MoveEvent, Pin, PinError, PinStore, PinsFile};

fn pin(tag: &str, digest_seed: &str, policy: &str) -> Pin {
    Pin {
        registry: "registry.example".into(),
        repository: "team/app".into(),
        tag: tag.into(),
        digest: Digest::of(digest_seed.as_bytes()),
        pinned_at: 1_700_000_000,
        policy: policy.into(),
    }
}

/// The data dir is unused by the postgres backend; a path that cannot be
/// created proves nothing is written there.
fn no_data_dir() -> &'static Path {
    Path::new("/nonexistent/sigmirror-test")
}

async fn open(url: &str) -> PinStore {
    PinStore::open(no_data_dir(), Some(url), None).await.unwrap_or_else(|e| panic!("open postgres pin store: {e}"))
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect for inspection");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_to_pin_the_same_tags_agree_on_exactly_one_winner_per_tag() {
    let pg = TestPostgres::start();
    let a = open(&pg.url).await;
    let b = open(&pg.url).await;
    const TAGS: usize = 300;

    let mut races = Vec::new();
    for i in 0..TAGS {
        let tag = format!("t{i}");
        let (ours_a, ours_b) = (pin(&tag, &format!("a{i}"), "a"), pin(&tag, &format!("b{i}"), "b"));
        let (a, b) = (a.clone(), b.clone());
        // Both replicas' inserts are spawned before either is awaited, so
        // they are in flight on separate connections at the same time.
        let ta = tokio::spawn({
            let p = ours_a.clone();
            async move { a.pin(p).await }
        });
        let tb = tokio::spawn({
            let p = ours_b.clone();
            async move { b.pin(p).await }
        });
        races.push((tag, ours_a, ours_b, ta, tb));
    }

    let mut wins = (0, 0);
    let mut winners = Vec::new();
    for (tag, ours_a, ours_b, ta, tb) in races {
        let got_a = ta.await.unwrap().expect("replica a pin");
        let got_b = tb.await.unwrap().expect("replica b pin");
        assert_eq!(got_a, got_b, "replicas disagree on {tag}");
        match (got_a == ours_a, got_a == ours_b) {
            (true, false) => wins.0 += 1,
            (false, true) => wins.1 += 1,
            _ => panic!("{tag}: winner {got_a:?} is neither racer's pin"),
        }
        winners.push(got_a);
    }
    assert_eq!(wins.0 + wins.1, TAGS);
    eprintln!("wins: replica a {}, replica b {}", wins.0, wins.1);

    // Both replicas read the winner, and so does a third with a cold cache
    // (so this is what is stored, not what each cached).
    let c = open(&pg.url).await;
    for w in &winners {
        for (name, s) in [("a", &a), ("b", &b), ("c", &c)] {
            assert_eq!(s.get(&w.registry, &w.repository, &w.tag).await.unwrap().as_ref(), Some(w), "replica {name}");
        }
    }
    let mut listed = c.list().await.unwrap();
    let mut expected = winners.clone();
    listed.sort_by(|x, y| x.tag.cmp(&y.tag));
    expected.sort_by(|x, y| x.tag.cmp(&y.tag));
    assert_eq!(listed, expected, "exactly one row per tag");
}

#[tokio::test]
async fn migrations_are_idempotent_whether_stores_open_one_after_another_or_together() {
    let pg = TestPostgres::start();
    let first = open(&pg.url).await;
    first.pin(pin("v1", "a", "p")).await.unwrap();
    drop(first);
    // Reopening finds the schema in place and the data intact.
    let again = open(&pg.url).await;
    assert_eq!(again.get("registry.example", "team/app", "v1").await.unwrap(), Some(pin("v1", "a", "p")));
    // Replicas starting at the same moment serialize on the migration lock.
    let (x, y, z) = tokio::join!(
        PinStore::open(no_data_dir(), Some(&pg.url), None),
        PinStore::open(no_data_dir(), Some(&pg.url), None),
        PinStore::open(no_data_dir(), Some(&pg.url), None),
    );
    for s in [x, y, z] {
        assert_eq!(s.unwrap().list().await.unwrap(), vec![pin("v1", "a", "p")]);
    }
    let client = raw_client(&pg.url).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_version WHERE component = 'pins' ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1], "each migration is recorded once");

    // Concurrent opens on a fresh database, where the tables do not exist yet.
    let fresh = pg.create_database("fresh");
    let opens: Vec<_> = (0..4).map(|_| PinStore::open(no_data_dir(), Some(&fresh), None)).collect();
    for s in futures_util::future::join_all(opens).await {
        assert!(s.expect("concurrent first-time migration").list().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let pg = TestPostgres::start();
    drop(open(&pg.url).await);
    raw_client(&pg.url)
        .await
        .execute("INSERT INTO schema_version (component, version) VALUES ('pins', 99)", &[])
        .await
        .unwrap();
    match PinStore::open(no_data_dir(), Some(&pg.url), None).await {
        Err(PinError::SchemaTooNew { found: 99, supported: 1 }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a schema from a newer build"),
    }
}

#[tokio::test]
async fn forget_moves_and_import_work_across_replicas() {
    let pg = TestPostgres::start();
    let a = open(&pg.url).await;
    let b = open(&pg.url).await;
    a.pin(pin("v1", "a", "p")).await.unwrap();
    a.pin(pin("v2", "a", "p")).await.unwrap();

    // b has not cached v1, so a's forget is visible to it at once.
    assert!(a.forget("registry.example", "team/app", "v1").await.unwrap());
    assert_eq!(b.get("registry.example", "team/app", "v1").await.unwrap(), None);
    assert!(!b.forget("registry.example", "team/app", "v1").await.unwrap());
    assert_eq!(b.pin(pin("v1", "b", "p")).await.unwrap(), pin("v1", "b", "p"));

    let ev = |seen: &str, at| MoveEvent {
        registry: "registry.example".into(),
        repository: "team/app".into(),
        tag: "v2".into(),
        pinned: Digest::of(b"a"),
        seen: Digest::of(seen.as_bytes()),
        at,
        policy: "p".into(),
    };
    a.record_move(ev("x", 10)).await.unwrap();
    b.record_move(ev("x", 11)).await.unwrap(); // same pair from the other replica: kept once
    b.record_move(ev("y", 12)).await.unwrap();
    assert_eq!(a.moves().await.unwrap(), vec![ev("x", 10), ev("y", 12)]);
    let moved = b.list_moved().await.unwrap();
    assert_eq!(moved, vec![(pin("v2", "a", "p"), vec![ev("x", 10), ev("y", 12)])]);

    // Export from the shared store, import into a fresh database.
    let file = PinsFile::from_json(a.export().await.unwrap().to_json().as_bytes()).unwrap();
    assert_eq!(file.pins, vec![pin("v1", "b", "p"), pin("v2", "a", "p")]);
    let other = open(&pg.create_database("other")).await;
    other.pin(pin("v2", "z", "p")).await.unwrap();
    let report = other.import(&file).await.unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(report.unchanged, 0);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].existing, pin("v2", "z", "p"));
    assert_eq!(other.list().await.unwrap(), vec![pin("v1", "b", "p"), pin("v2", "z", "p")]);
}

#[tokio::test]
async fn a_store_reconnects_after_the_database_restarts() {
    let mut pg = TestPostgres::start();
    let s = open(&pg.url).await;
    s.pin(pin("v1", "a", "p")).await.unwrap();
    pg.restart();
    // Connections cut by the restart may fail once each; within a bounded
    // number of tries every pool slot has reconnected.
    let mut last = None;
    for _ in 0..20 {
        match s.list().await {
            Ok(pins) => {
                last = Some(pins);
                break;
            }
            Err(PinError::Postgres(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(last, Some(vec![pin("v1", "a", "p")]), "no reconnect after restart:\n{}", pg.log());
    assert_eq!(s.pin(pin("v2", "a", "p")).await.unwrap(), pin("v2", "a", "p"));
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_at_open_not_a_hang() {
    // Bind and drop: a loopback port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let res = tokio::time::timeout(Duration::from_secs(30), PinStore::open(no_data_dir(), Some(&url), None)).await;
    match res.expect("open did not return within 30s") {
        Err(PinError::Postgres(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a store with no server"),
    }
}
