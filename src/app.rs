//! The running service: the current [`Mirror`] and what outlives it, the pin
//! store and what immutable tags have seen.

use std::sync::Arc;

use crate::blobstore::BlobStore;
use crate::mirror::Mirror;
use crate::pins::guard::TagGuard;
use crate::pins::{PinStore, PinsFile};

pub struct App {
    mirror: Arc<Mirror>,
    /// `None` when the process runs without a pin store (in-process tests
    /// that do not pin).
    pub tags: Option<TagGuard>,
    /// The disk blob cache; `None` when `blob_max_bytes = 0` or in tests
    /// that run without one. Outlives config reloads: its files are
    /// verified content, whatever the policies say.
    pub blobs: Option<Arc<BlobStore>>,
}

impl App {
    pub fn new(mirror: Mirror, pins: Option<PinStore>) -> App {
        let every = mirror.config.pin_revalidate;
        App { tags: pins.map(|store| TagGuard::new(store, every)), mirror: Arc::new(mirror), blobs: None }
    }

    /// The mirror a request uses from start to end.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.clone()
    }

    /// What `sigmirror serve` starts: the pin store opened, `pins_file`
    /// applied, and the recorded tag moves loaded. Fails closed: without the
    /// moves a moved tag would be served. The `Err` is the message to print.
    pub async fn start(mirror: Mirror) -> Result<App, String> {
        let cfg = &mirror.config;
        let store = PinStore::open(&cfg.data_dir, cfg.pin_store.as_deref())
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
