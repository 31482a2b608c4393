//! Immutable tag pins: the first verified digest a tag in an immutable scope resolves to, kept for good.
//!
//! A pin maps `(registry, repository, tag)` to a digest. It is written once,
//! insert-if-absent, the first time the tag resolves to a verified digest; it
//! only goes away through an operator's `forget`. When upstream later serves
//! another digest for a pinned tag, a [`MoveEvent`] is recorded so operators
//! can see which tags moved.
//!
//! Two backends sit behind [`PinStore`]:
//! - embedded (the default): a `redb` file at `<data_dir>/pins.redb`, for a
//!   single replica. redb locks its file per process, so the server and the
//!   `pins` CLI verbs cannot have it open at the same time;
//! - PostgreSQL (`pin_store = "postgres://…"`), shared by several replicas.
//!
//! Every storage failure is a [`PinError`]. It is never a policy decision: the
//! caller fails closed on it, but must not report it as "the image is denied".

pub mod cli;
mod embedded;
mod file;
pub mod guard;
mod postgres;
pub mod remote;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::oci::Digest;

/// How long a cached pin is trusted before it is read from storage again.
///
/// Pins never change except through `forget`, which invalidates this
/// process's cache at once. Another replica sharing a PostgreSQL store does
/// not hear about a forget, so it keeps serving the forgotten pin until its
/// cache entry expires: this TTL is the bound on that staleness.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Enough entries for every pinned tag of a large mirror; past it the least
/// used fall out and are simply read from storage again.
const CACHE_CAPACITY: u64 = 100_000;

/// A tag pinned to the digest it first resolved to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// When the pin was made, in Unix seconds.
    pub pinned_at: i64,
    /// The name of the policy whose immutable scope made the pin.
    pub policy: String,
}

/// Upstream served `seen` for a tag that is pinned to `pinned`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveEvent {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub pinned: Digest,
    pub seen: Digest,
    /// When the move was first seen, in Unix seconds.
    pub at: i64,
    pub policy: String,
}

/// The `pins export` / `pins import` file.
///
/// It is JSON, one object with a format version and the pins, sorted by
/// registry, repository and tag:
///
/// ```json
/// {
///   "version": 1,
///   "pins": [
///     {
///       "registry": "registry-1.docker.io",
///       "repository": "library/alpine",
///       "tag": "3.20",
///       "digest": "sha256:<64 lowercase hex>",
///       "pinned_at": 1718000000,
///       "policy": "production"
///     }
///   ]
/// }
/// ```
///
/// `version` is 1; any other version is refused rather than guessed at.
/// `pinned_at` is Unix seconds, `policy` the name of the policy that made the
/// pin. Digests must be `sha256:` followed by 64 lowercase hex characters.
/// Move events are not part of the file: they are an audit trail of the
/// store they were seen by, not state to carry to another one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinsFile {
    pub version: u32,
    pub pins: Vec<Pin>,
}

impl PinsFile {
    /// The only file format version this build reads and writes.
    pub const VERSION: u32 = 1;

    /// Parses a pins file and checks its version.
    pub fn from_json(bytes: &[u8]) -> Result<PinsFile, PinError> {
        let file: PinsFile = serde_json::from_slice(bytes).map_err(PinError::BadFile)?;
        file.check_version()?;
        Ok(file)
    }

    /// The file as pretty-printed JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("pins always serialize");
        s.push('\n');
        s
    }

    fn check_version(&self) -> Result<(), PinError> {
        if self.version == Self::VERSION {
            Ok(())
        } else {
            Err(PinError::UnsupportedFileVersion(self.version))
        }
    }
}

/// What `import` did with each pin of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Pins that were absent and are now stored.
    pub inserted: usize,
    /// Pins already stored with the same digest (time and policy may differ;
    /// the stored ones are kept).
    pub unchanged: usize,
    /// Pins whose tag is already pinned to another digest. The stored pin is
    /// kept: import never moves a pin; `forget` first to replace one.
    pub conflicts: Vec<ImportConflict>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportConflict {
    pub existing: Pin,
    pub imported: Pin,
}

/// A storage failure. Callers fail closed on it; it is not a verdict on the image.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("embedded pin store: {0}")]
    Embedded(#[source] Box<redb::Error>),
    #[error(
        "embedded pin store {0} is open in another process (the server?); set admin_listen so the pins CLI goes through the running server, stop it, or use a shared postgres pin store"
    )]
    Locked(std::path::PathBuf),
    #[error("postgres pin store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("pin store I/O on {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("unsupported pin store URL (expected postgres:// or postgresql://)")]
    UnsupportedUrl,
    #[error("pin store schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("corrupt pin store record: {0}")]
    Corrupt(String),
    #[error("invalid pin: {0}")]
    InvalidPin(String),
    #[error("pins file: {0}")]
    BadFile(serde_json::Error),
    #[error("pins file version {0} is not supported (expected {v})", v = PinsFile::VERSION)]
    UnsupportedFileVersion(u32),
    #[error("pin store kept changing under an insert; gave up after {0} attempts")]
    Contended(u32),
    #[error("pin store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The pin store of this process, with a read-through cache in front.
///
/// Cheap to clone; clones share the storage and the cache.
#[derive(Clone)]
pub struct PinStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Positive entries only: a miss always goes to storage, so a pin made by
    /// another replica is seen at once, and only forget can make an entry stale.
    cache: moka::future::Cache<PinKey, Pin>,
    /// Bumped by every forget, so that a lookup racing with one does not put
    /// the forgotten pin back into the cache (see `cache_put`).
    forgets: AtomicU64,
}

enum Backend {
    Embedded(embedded::EmbeddedStore),
    // Boxed: it is much the larger, and there is one per store anyway.
    Postgres(Box<postgres::PostgresStore>),
}

type PinKey = (String, String, String);

fn key(registry: &str, repository: &str, tag: &str) -> PinKey {
    (registry.to_string(), repository.to_string(), tag.to_string())
}

fn pin_key(p: &Pin) -> PinKey {
    key(&p.registry, &p.repository, &p.tag)
}

impl PinStore {
    /// Opens the pin store: PostgreSQL when `pin_store_url` is given (its
    /// schema is migrated first), else the embedded store at
    /// `<data_dir>/pins.redb`.
    ///
    /// The PostgreSQL connection has no TLS yet: use it over loopback or a
    /// trusted network only. A URL asking for `sslmode=require` fails to
    /// connect rather than fall back to plaintext.
    ///
    /// `password`, from `pin_store_password_file` or `_env`, is given apart
    /// from the URL so the URL (which is logged) never holds it.
    pub async fn open(
        data_dir: &Path,
        pin_store_url: Option<&str>,
        password: Option<&str>,
    ) -> Result<PinStore, PinError> {
        match pin_store_url {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(PinError::UnsupportedUrl);
                }
                let pg = postgres::PostgresStore::open(url, password).await?;
                Ok(PinStore { inner: Arc::new(Inner::new(Backend::Postgres(Box::new(pg)))) })
            }
            None => {
                // redb allows one open per process, so a second open of the same
                // file hands back the store (and cache) that is already open.
                let inner = embedded::open_shared(data_dir, |db| Inner::new(Backend::Embedded(db))).await?;
                Ok(PinStore { inner })
            }
        }
    }

    /// Where the pins live, for logs: never includes a password.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Embedded(db) => format!("embedded ({})", db.path().display()),
            Backend::Postgres(pg) => format!("postgres ({})", pg.describe()),
        }
    }

    pub async fn get(&self, registry: &str, repository: &str, tag: &str) -> Result<Option<Pin>, PinError> {
        let k = key(registry, repository, tag);
        if let Some(p) = self.inner.cache.get(&k).await {
            return Ok(Some(p));
        }
        let generation = self.inner.forgets.load(Ordering::SeqCst);
        let found = match &self.inner.backend {
            Backend::Embedded(db) => db.get(k.clone()).await?,
            Backend::Postgres(pg) => pg.get(&k.0, &k.1, &k.2).await?,
        };
        if let Some(p) = &found {
            self.cache_put(generation, p.clone()).await;
        }
        Ok(found)
    }

    /// Insert-if-absent. Returns the pin that is now stored: `pin` if it won,
    /// the existing one otherwise (whatever its digest). The pin is durable
    /// (committed and fsynced) before this returns.
    pub async fn pin(&self, pin: Pin) -> Result<Pin, PinError> {
        validate(&pin)?;
        let generation = self.inner.forgets.load(Ordering::SeqCst);
        let stored = match &self.inner.backend {
            Backend::Embedded(db) => db.insert_if_absent(vec![pin]).await?.pop().expect("one winner per pin").0,
            Backend::Postgres(pg) => pg.insert_if_absent(&pin).await?.0,
        };
        self.cache_put(generation, stored.clone()).await;
        Ok(stored)
    }

    /// Records that upstream served another digest for a pinned tag.
    ///
    /// Only the first sighting of each `(tag, pinned, seen)` triple is kept:
    /// clients keep pulling a moved tag, and one row per pull would grow
    /// without bound while telling operators nothing new.
    pub async fn record_move(&self, ev: MoveEvent) -> Result<(), PinError> {
        validate_fields(&ev.registry, &ev.repository, &ev.tag, &ev.policy)?;
        match &self.inner.backend {
            Backend::Embedded(db) => db.record_move(ev).await,
            Backend::Postgres(pg) => pg.record_move(&ev).await,
        }
    }

    /// All pins, sorted by registry, repository and tag.
    pub async fn list(&self) -> Result<Vec<Pin>, PinError> {
        let mut pins = match &self.inner.backend {
            Backend::Embedded(db) => db.list().await?,
            Backend::Postgres(pg) => pg.list().await?,
        };
        // Sorted here rather than by the backend: PostgreSQL orders text by
        // its collation, redb by bytes, and exports should not depend on which.
        pins.sort_by(|a, b| (&a.registry, &a.repository, &a.tag).cmp(&(&b.registry, &b.repository, &b.tag)));
        Ok(pins)
    }

    /// All move events, oldest first.
    pub async fn moves(&self) -> Result<Vec<MoveEvent>, PinError> {
        let mut moves = match &self.inner.backend {
            Backend::Embedded(db) => db.moves().await?,
            Backend::Postgres(pg) => pg.moves().await?,
        };
        moves.sort_by(|a, b| {
            (a.at, &a.registry, &a.repository, &a.tag, &a.pinned, &a.seen).cmp(&(
                b.at,
                &b.registry,
                &b.repository,
                &b.tag,
                &b.pinned,
                &b.seen,
            ))
        });
        Ok(moves)
    }

    /// The current pins that upstream has moved away from, each with its
    /// move events (oldest first): what `pins list --moved` shows. Moves
    /// recorded against an earlier, since forgotten, pin of the tag are left out.
    pub async fn list_moved(&self) -> Result<Vec<(Pin, Vec<MoveEvent>)>, PinError> {
        let pins = self.list().await?;
        let mut by_pin: std::collections::HashMap<(PinKey, Digest), Vec<MoveEvent>> = Default::default();
        // `moves` is oldest first, so each group stays oldest first.
        for m in self.moves().await? {
            let k = (key(&m.registry, &m.repository, &m.tag), m.pinned.clone());
            by_pin.entry(k).or_default().push(m);
        }
        Ok(pins
            .into_iter()
            .filter_map(|p| {
                let evs = by_pin.remove(&(pin_key(&p), p.digest.clone()))?;
                Some((p, evs))
            })
            .collect())
    }

    /// Removes a pin, so the tag is pinned afresh the next time it resolves.
    /// Returns whether there was one. Move events are kept as history.
    pub async fn forget(&self, registry: &str, repository: &str, tag: &str) -> Result<bool, PinError> {
        let k = key(registry, repository, tag);
        let removed = match &self.inner.backend {
            Backend::Embedded(db) => db.forget(k.clone()).await?,
            Backend::Postgres(pg) => pg.forget(&k.0, &k.1, &k.2).await?,
        };
        // Bump first, then invalidate: a lookup that read the old pin before
        // the delete either sees the new count and drops its own entry, or
        // inserted before this invalidation and is removed by it.
        self.inner.forgets.fetch_add(1, Ordering::SeqCst);
        self.inner.cache.invalidate(&k).await;
        Ok(removed)
    }

    pub async fn export(&self) -> Result<PinsFile, PinError> {
        Ok(PinsFile { version: PinsFile::VERSION, pins: self.list().await? })
    }

    /// Inserts each pin of the file if its tag is not pinned yet; never
    /// replaces a stored pin. Conflicts are reported, not errors.
    ///
    /// Embedded, the whole file is one transaction. On PostgreSQL each pin
    /// commits on its own, so an error midway leaves the pins before it
    /// stored; running the import again is safe, as it is insert-if-absent.
    pub async fn import(&self, f: &PinsFile) -> Result<ImportReport, PinError> {
        f.check_version()?;
        for p in &f.pins {
            validate(p)?;
        }
        let generation = self.inner.forgets.load(Ordering::SeqCst);
        let winners = match &self.inner.backend {
            // One transaction: one fsync for the whole file rather than one per pin.
            Backend::Embedded(db) => db.insert_if_absent(f.pins.clone()).await?,
            Backend::Postgres(pg) => {
                let mut w = Vec::with_capacity(f.pins.len());
                for p in &f.pins {
                    w.push(pg.insert_if_absent(p).await?);
                }
                w
            }
        };
        let mut report = ImportReport::default();
        // `inserted` comes from the backend rather than from comparing pins: a
        // re-import of identical pins, or a pin listed twice, inserts nothing.
        for (imported, (stored, inserted)) in f.pins.iter().zip(winners) {
            if inserted {
                report.inserted += 1;
            } else if stored.digest == imported.digest {
                report.unchanged += 1;
            } else {
                report.conflicts.push(ImportConflict { existing: stored.clone(), imported: imported.clone() });
            }
            self.cache_put(generation, stored).await;
        }
        Ok(report)
    }

    /// Caches a pin read or written while the forget count was `generation`.
    async fn cache_put(&self, generation: u64, pin: Pin) {
        let k = pin_key(&pin);
        self.inner.cache.insert(k.clone(), pin).await;
        if self.inner.forgets.load(Ordering::SeqCst) != generation {
            // A forget ran meanwhile and may have removed this very pin after
            // we read it; don't let the entry outlive it.
            self.inner.cache.invalidate(&k).await;
        }
    }
}

impl Inner {
    fn new(backend: Backend) -> Inner {
        Inner {
            backend,
            cache: moka::future::Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(CACHE_TTL).build(),
            forgets: AtomicU64::new(0),
        }
    }
}

fn validate(p: &Pin) -> Result<(), PinError> {
    validate_fields(&p.registry, &p.repository, &p.tag, &p.policy)
}

/// Keys must be non-empty, and no field may hold NUL, which PostgreSQL text
/// cannot store: refusing it here keeps both backends accepting the same pins.
fn validate_fields(registry: &str, repository: &str, tag: &str, policy: &str) -> Result<(), PinError> {
    for (name, v) in [("registry", registry), ("repository", repository), ("tag", tag)] {
        if v.is_empty() {
            return Err(PinError::InvalidPin(format!("empty {name}")));
        }
    }
    for (name, v) in [("registry", registry), ("repository", repository), ("tag", tag), ("policy", policy)] {
        if v.contains('\0') {
            return Err(PinError::InvalidPin(format!("NUL in {name}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn pin(tag: &str, digest: &str) -> Pin {
        Pin {
            registry: "registry.example".into(),
            repository: "team/app".into(),
            tag: tag.into(),
            digest: d(digest),
            pinned_at: 1_700_000_000,
            policy: "prod".into(),
        }
    }

    fn mv(tag: &str, pinned: &str, seen: &str, at: i64) -> MoveEvent {
        MoveEvent {
            registry: "registry.example".into(),
            repository: "team/app".into(),
            tag: tag.into(),
            pinned: d(pinned),
            seen: d(seen),
            at,
            policy: "prod".into(),
        }
    }

    async fn store(dir: &Path) -> PinStore {
        PinStore::open(dir, None, None).await.expect("open embedded store")
    }

    #[tokio::test]
    async fn a_pinned_tag_is_returned_by_get_and_an_unpinned_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), None);
        let p = pin("v1", "a");
        assert_eq!(s.pin(p.clone()).await.unwrap(), p);
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), Some(p));
        assert_eq!(s.get("registry.example", "team/app", "v2").await.unwrap(), None);
        assert_eq!(s.get("other.example", "team/app", "v1").await.unwrap(), None);
        assert!(dir.path().join("pins.redb").is_file());
    }

    #[tokio::test]
    async fn a_second_pin_with_another_digest_returns_the_first_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let first = pin("v1", "a");
        s.pin(first.clone()).await.unwrap();
        let mut second = pin("v1", "b");
        second.pinned_at += 60;
        second.policy = "other".into();
        assert_eq!(s.pin(second).await.unwrap(), first);
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), Some(first.clone()));
        assert_eq!(s.list().await.unwrap(), vec![first]);
    }

    #[tokio::test]
    async fn concurrent_pins_of_one_tag_all_agree_on_a_single_winner() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.pin(pin("race", &format!("digest-{i}"))).await.unwrap() }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            winners.push(t.await.unwrap());
        }
        assert!(winners.iter().all(|w| w == &winners[0]), "racers disagree: {winners:?}");
        assert_eq!(s.get("registry.example", "team/app", "race").await.unwrap().as_ref(), Some(&winners[0]));
    }

    #[tokio::test]
    async fn forget_removes_the_pin_even_when_cached_and_the_tag_can_be_pinned_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        s.pin(pin("v1", "a")).await.unwrap();
        s.pin(pin("v2", "a")).await.unwrap();
        // Fill the cache, so forget has to invalidate it.
        assert!(s.get("registry.example", "team/app", "v1").await.unwrap().is_some());
        assert!(s.forget("registry.example", "team/app", "v1").await.unwrap());
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), None);
        assert!(!s.forget("registry.example", "team/app", "v1").await.unwrap(), "forgetting twice reports nothing");
        assert_eq!(s.list().await.unwrap(), vec![pin("v2", "a")]);
        let fresh = pin("v1", "b");
        assert_eq!(s.pin(fresh.clone()).await.unwrap(), fresh);
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), Some(fresh));
    }

    #[tokio::test]
    async fn moves_are_kept_once_per_distinct_digest_pair_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        s.pin(pin("v1", "a")).await.unwrap();
        s.pin(pin("v2", "a")).await.unwrap();
        s.record_move(mv("v1", "a", "b", 200)).await.unwrap();
        s.record_move(mv("v1", "a", "b", 300)).await.unwrap(); // seen again: no new event
        s.record_move(mv("v1", "a", "c", 400)).await.unwrap();
        s.record_move(mv("v2", "a", "b", 100)).await.unwrap();
        assert_eq!(
            s.moves().await.unwrap(),
            vec![mv("v2", "a", "b", 100), mv("v1", "a", "b", 200), mv("v1", "a", "c", 400)]
        );
        let moved = s.list_moved().await.unwrap();
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[0], (pin("v1", "a"), vec![mv("v1", "a", "b", 200), mv("v1", "a", "c", 400)]));
        assert_eq!(moved[1], (pin("v2", "a"), vec![mv("v2", "a", "b", 100)]));
        // Once v2 is forgotten and re-pinned to what upstream now serves, its
        // old moves are history, not a current move.
        s.forget("registry.example", "team/app", "v2").await.unwrap();
        s.pin(pin("v2", "b")).await.unwrap();
        let moved = s.list_moved().await.unwrap();
        assert_eq!(moved.iter().map(|(p, _)| p.tag.as_str()).collect::<Vec<_>>(), vec!["v1"]);
        assert_eq!(s.moves().await.unwrap().len(), 3, "forget keeps move history");
    }

    #[tokio::test]
    async fn export_then_import_round_trips_and_reports_conflicts_without_replacing() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = store(src_dir.path()).await;
        for (tag, dg) in [("b", "1"), ("a", "2"), ("c", "3")] {
            src.pin(pin(tag, dg)).await.unwrap();
        }
        let file = src.export().await.unwrap();
        assert_eq!(file.version, 1);
        assert_eq!(file.pins.iter().map(|p| p.tag.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let parsed = PinsFile::from_json(file.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, file);

        let dst_dir = tempfile::tempdir().unwrap();
        let dst = store(dst_dir.path()).await;
        let mut same_digest = pin("a", "2");
        same_digest.pinned_at = 5; // different metadata, same digest: unchanged
        dst.pin(same_digest.clone()).await.unwrap();
        dst.pin(pin("c", "other")).await.unwrap();
        let report = dst.import(&parsed).await.unwrap();
        assert_eq!(report.inserted, 1);
        assert_eq!(report.unchanged, 1);
        assert_eq!(report.conflicts, vec![ImportConflict { existing: pin("c", "other"), imported: pin("c", "3") }]);
        assert_eq!(dst.list().await.unwrap(), vec![same_digest, pin("b", "1"), pin("c", "other")]);

        // Importing again changes nothing, and a pin listed twice is inserted once.
        let again = dst.import(&parsed).await.unwrap();
        assert_eq!((again.inserted, again.unchanged, again.conflicts.len()), (0, 2, 1));
        let twice = PinsFile { version: 1, pins: vec![pin("d", "4"), pin("d", "4"), pin("d", "5")] };
        let report = dst.import(&twice).await.unwrap();
        assert_eq!((report.inserted, report.unchanged, report.conflicts.len()), (1, 1, 1));

        // A fresh store gets exactly the exported pins.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = store(fresh_dir.path()).await;
        let report = fresh.import(&parsed).await.unwrap();
        assert_eq!(report.inserted, 3);
        assert_eq!(fresh.export().await.unwrap(), file);
    }

    #[test]
    fn a_pins_file_of_another_version_or_with_a_bad_digest_is_refused() {
        let v2 = br#"{"version":2,"pins":[]}"#;
        assert!(matches!(PinsFile::from_json(v2), Err(PinError::UnsupportedFileVersion(2))));
        let bad = br#"{"version":1,"pins":[{"registry":"r","repository":"a","tag":"t","digest":"sha256:00","pinned_at":1,"policy":"p"}]}"#;
        assert!(matches!(PinsFile::from_json(bad), Err(PinError::BadFile(_))));
        assert!(PinsFile::from_json(br#"{"version":1,"pins":[]}"#).unwrap().pins.is_empty());
    }

    #[tokio::test]
    async fn importing_a_file_of_another_version_is_refused_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let f = PinsFile { version: 7, pins: vec![pin("v1", "a")] };
        assert!(matches!(s.import(&f).await, Err(PinError::UnsupportedFileVersion(7))));
        assert!(s.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_pin_survives_closing_and_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let p = pin("v1", "a");
        {
            let s = store(dir.path()).await;
            s.pin(p.clone()).await.unwrap();
            s.record_move(mv("v1", "a", "b", 9)).await.unwrap();
        }
        // The first store is dropped, so this opens the file afresh.
        let s = store(dir.path()).await;
        assert_eq!(s.get("registry.example", "team/app", "v1").await.unwrap(), Some(p.clone()));
        assert_eq!(s.moves().await.unwrap(), vec![mv("v1", "a", "b", 9)]);
        drop(s);
        // And what is on disk is readable by redb itself, not only via our cache.
        let db = redb::Database::create(dir.path().join("pins.redb")).unwrap();
        use redb::{ReadableTableMetadata, TableDefinition};
        let table: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("pins");
        assert_eq!(db.begin_read().unwrap().open_table(table).unwrap().len().unwrap(), 1);
    }

    #[tokio::test]
    async fn opening_the_same_store_twice_in_one_process_shares_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path()).await;
        let b = store(dir.path()).await; // would fail with "already open" without sharing
        a.pin(pin("v1", "a")).await.unwrap();
        assert_eq!(b.get("registry.example", "team/app", "v1").await.unwrap(), Some(pin("v1", "a")));
        // The cache is shared too, so a forget through one handle is seen by the other.
        assert!(b.forget("registry.example", "team/app", "v1").await.unwrap());
        assert_eq!(a.get("registry.example", "team/app", "v1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_store_written_by_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(dir.path()).await);
        {
            let db = redb::Database::create(dir.path().join("pins.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap();
                meta.insert("schema_version", 99).unwrap();
            }
            txn.commit().unwrap();
        }
        match PinStore::open(dir.path(), None, None).await {
            Err(PinError::SchemaTooNew { found: 99, supported: 1 }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }

    #[tokio::test]
    async fn invalid_pins_and_unsupported_store_urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let mut empty_tag = pin("", "a");
        assert!(matches!(s.pin(empty_tag.clone()).await, Err(PinError::InvalidPin(_))));
        empty_tag.tag = "a\0b".into();
        assert!(matches!(s.pin(empty_tag).await, Err(PinError::InvalidPin(_))));
        assert!(s.list().await.unwrap().is_empty());
        for url in ["mysql://x", "", "redis://localhost"] {
            assert!(
                matches!(PinStore::open(dir.path(), Some(url), None).await, Err(PinError::UnsupportedUrl)),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn describe_names_the_embedded_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        assert!(s.describe().starts_with("embedded ("), "{}", s.describe());
        assert!(s.describe().contains("pins.redb"));
    }
}
