//! The running service: the current [`Mirror`] and what outlives it, the pin
//! store and what immutable tags have seen, and the health `/readyz` reports.
//!
//! The mirror sits behind an atomic swap. A request takes its `Arc<Mirror>`
//! once ([`App::mirror`]) and keeps it to the end, so it sees one config
//! whole; a reload ([`App::replace`]) only changes what later requests take.
//! A new mirror starts with empty caches, so no verdict made under old trust
//! material is ever reused (the policy fingerprint in every verdict key,
//! which covers the trust material, would keep them apart too).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::allowed_blobs::AllowedBlobs;
use crate::blobstore::BlobStore;
use crate::health::Health;
use crate::mirror::Mirror;
use crate::pins::guard::TagGuard;
use crate::pins::{PinStore, PinsFile};

pub struct App {
    mirror: ArcSwap<Mirror>,
    /// `None` when the process runs without a pin store (in-process tests
    /// that do not pin).
    pub tags: Option<TagGuard>,
    /// The disk blob cache; `None` when `blob_max_bytes = 0` or in tests
    /// that run without one. Outlives config reloads: its files are
    /// verified content, whatever the policies say.
    pub blobs: Option<Arc<BlobStore>>,
    pub health: Health,
}

impl App {
    pub fn new(mirror: Mirror, pins: Option<PinStore>) -> App {
        let every = mirror.config.pin_revalidate;
        App {
            tags: pins.map(|store| TagGuard::new(store, every)),
            mirror: ArcSwap::from_pointee(mirror),
            health: Health::default(),
            blobs: None,
        }
    }

    /// The mirror a request uses from start to end.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.load_full()
    }

    /// Makes `mirror` the one new requests see; requests running keep theirs.
    /// The allowed blobs carry over: their keys hold the policy fingerprint,
    /// so only policies the reload left unchanged still match them.
    pub fn replace(&self, mut mirror: Mirror) {
        mirror.blobs = self.mirror.load().blobs.clone();
        self.mirror.store(Arc::new(mirror));
    }

    /// What `sigmirror serve` starts: the data directory checked, the pin
    /// store opened, `pins_file` applied, and the recorded tag moves loaded.
    /// Fails closed: without the moves a moved tag would be served. The `Err`
    /// is the message to print.
    pub async fn start(mut mirror: Mirror) -> Result<App, String> {
        data_dir_writable(&mirror.config.data_dir)?;
        let journal = mirror.config.data_dir.join("allowed-blobs.journal");
        let allowed = AllowedBlobs::open(&journal).map_err(|e| format!("cannot open {}: {e}", journal.display()))?;
        mirror.blobs = Arc::new(allowed);
        let cfg = &mirror.config;
        let store = PinStore::open(&cfg.data_dir, cfg.pin_store.as_deref(), cfg.pin_store_password.as_deref())
            .await
            .map_err(|e| format!("cannot open the pin store: {e}"))?;
        tracing::info!("pin store: {}", store.describe());
        if let Some(file) = &cfg.pins_file {
            // Parsed once already by `load`, which reported any problem.
            let parsed = PinsFile::from_json(&file.bytes).map_err(|e| format!("pins_file {}: {e}", file.name))?;
            let r = store.import(&parsed).await.map_err(|e| format!("pins_file {}: {e}", file.name))?;
            tracing::info!(
                inserted = r.inserted,
                unchanged = r.unchanged,
                conflicts = r.conflicts.len(),
                "pins_file {} applied",
                file.name
            );
        }
        let blobs = match cfg.blob_max_bytes {
            0 => None,
            max => {
                let dir = cfg.data_dir.join("blobs");
                let store = BlobStore::open(&dir, max)
                    .map_err(|e| format!("cannot open the blob cache {}: {e}", dir.display()))?;
                Some(Arc::new(store))
            }
        };
        let mut app = App::new(mirror, Some(store));
        app.blobs = blobs;
        if let Some(tags) = &app.tags {
            let n = tags
                .load_moves()
                .await
                .map_err(|e| format!("cannot load recorded tag moves from the pin store: {e}"))?;
            if n > 0 {
                tracing::warn!(
                    "{n} pinned tag(s) moved upstream before this start; they stay refused under on_tag_move = \"deny\""
                );
            }
        }
        Ok(app)
    }
}

/// What `check-config` can check of the stores without taking them from a
/// running server: the data directory is writable, and the pin store is
/// reachable and writable (PostgreSQL: connected and its schema migrated;
/// embedded: its file, when there is one, opens for writing; the lock a
/// running server holds is not taken).
pub async fn check_stores(mirror: &Mirror) -> Result<(), String> {
    let cfg = &mirror.config;
    data_dir_writable(&cfg.data_dir)?;
    match cfg.pin_store.as_deref() {
        Some(url) => PinStore::open(&cfg.data_dir, Some(url), cfg.pin_store_password.as_deref())
            .await
            .map(drop)
            .map_err(|e| format!("cannot open the pin store: {e}")),
        None => {
            let file = cfg.data_dir.join("pins.redb");
            match std::fs::OpenOptions::new().read(true).write(true).open(&file) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot open the pin store {}: {e}", file.display())),
            }
        }
    }
}

/// The data directory exists (or is created) and takes a file: found before
/// the listening line rather than at the first pin.
fn data_dir_writable(dir: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("data_dir {} is not writable: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".sigmirror-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// For unit tests: an `App` over a minimal config (one upstream nothing
/// answers on, one audit-mode policy over all of it), with no pin store.
#[cfg(test)]
pub(crate) fn audited_test_app() -> (tempfile::TempDir, Arc<App>) {
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("sigmirror.toml");
    let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                [[upstream]]\nregistry = \"registry.test\"\nurl = \"https://127.0.0.1:1\"\n\
                [[policy]]\nname = \"audited\"\nscope = [\"registry.test/**\"]\nmode = \"audit\"\n";
    std::fs::write(&config, text).unwrap();
    let mirror = crate::load(&config).unwrap_or_else(|p| panic!("{p}"));
    (dir, Arc::new(App::new(mirror, None)))
}
