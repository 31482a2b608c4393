//! The embedded pin store: one crash-safe `redb` file, `<data_dir>/pins.redb`.
//!
//! redb calls block on disk I/O (and on fsync for every commit), so each runs
//! on tokio's blocking pool rather than on a reactor thread.
//!
//! Tables (redb compares keys bytewise; values are the JSON of the record, so
//! a field can be added without a table rewrite):
//! - `pins`: `(registry, repository, tag)` -> `Pin`
//! - `pin_moves`: `(registry, repository, tag, pinned, seen)` -> `MoveEvent`
//! - `meta`: `"schema_version"` -> `1`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{Inner, MoveEvent, Pin, PinError, PinKey};

const PINS: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("pins");
const MOVES: TableDefinition<(&str, &str, &str, &str, &str), &str> = TableDefinition::new("pin_moves");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_VERSION: u64 = 1;

pub(super) struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

/// The stores open in this process, by canonical file path.
///
/// redb takes an exclusive lock on its file, and a second `Database::create`
/// of the same file fails even within one process. Handing out the store that
/// is already open lets several parts of the process (or several tests) open
/// the pins without coordinating; the Weak lets the file close when the last
/// handle goes.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// Opens `<data_dir>/pins.redb` (creating it and `data_dir` if needed), or
/// returns the store this process already has open on it.
pub(super) async fn open_shared(
    data_dir: &Path,
    make: impl FnOnce(EmbeddedStore) -> Inner + Send + 'static,
) -> Result<Arc<Inner>, PinError> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let io = |source| PinError::Io { path: data_dir.clone(), source };
        std::fs::create_dir_all(&data_dir).map_err(io)?;
        let path = data_dir.canonicalize().map_err(io)?.join("pins.redb");
        // Held across the open so two concurrent opens cannot both miss the
        // registry and race for the file lock.
        let mut open = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(inner) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(inner);
        }
        open.retain(|_, weak| weak.strong_count() > 0);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(PinError::Locked(path)),
            Err(e) => return Err(redb_err(e)),
        };
        init_schema(&db)?;
        // The file may be new: make its directory entry durable too, or a
        // crash could lose the whole file along with the pins committed in it.
        std::fs::File::open(&data_dir).and_then(|d| d.sync_all()).map_err(io)?;
        let inner = Arc::new(make(EmbeddedStore { db: Arc::new(db), path: path.clone() }));
        open.insert(path, Arc::downgrade(&inner));
        Ok(inner)
    })
    .await?
}

/// Creates the tables (so readers never meet a missing one) and records or
/// checks the schema version. A newer version is refused: this build cannot
/// know what a later one changed, and a pin store read wrong is a security bug.
fn init_schema(db: &Database) -> Result<(), PinError> {
    let mut txn = db.begin_write().map_err(redb_err)?;
    txn.set_durability(Durability::Immediate);
    {
        txn.open_table(PINS).map_err(redb_err)?;
        txn.open_table(MOVES).map_err(redb_err)?;
        let mut meta = txn.open_table(META).map_err(redb_err)?;
        let found = meta.get("schema_version").map_err(redb_err)?.map(|g| g.value());
        match found {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(redb_err)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(PinError::SchemaTooNew { found: v as i64, supported: SCHEMA_VERSION as i64 });
            }
            Some(_) => {}
        }
    }
    txn.commit().map_err(redb_err)?;
    Ok(())
}

fn redb_err(e: impl Into<redb::Error>) -> PinError {
    PinError::Embedded(Box::new(e.into()))
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("pin records always serialize")
}

/// Every value of a table of JSON rows, decoded.
fn values_of<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    db: &Database,
    def: TableDefinition<K, &str>,
) -> Result<Vec<T>, PinError> {
    let txn = db.begin_read().map_err(redb_err)?;
    let table = txn.open_table(def).map_err(redb_err)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(redb_err)? {
        let (_, v) = row.map_err(redb_err)?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, PinError> {
    serde_json::from_str(json)
        .map_err(|e| PinError::Corrupt(format!("{e}: {}", json.chars().take(200).collect::<String>())))
}

impl EmbeddedStore {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, PinError> + Send + 'static,
    ) -> Result<T, PinError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    pub(super) async fn get(&self, k: PinKey) -> Result<Option<Pin>, PinError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_err)?;
            let table = txn.open_table(PINS).map_err(redb_err)?;
            let found = table.get((k.0.as_str(), k.1.as_str(), k.2.as_str())).map_err(redb_err)?;
            found.map(|g| decode(g.value())).transpose()
        })
        .await
    }

    /// Insert-if-absent for each pin, in one durable transaction. Returns, in
    /// order, the pin now stored under each key and whether this call put it
    /// there. redb runs one write transaction at a time, which is what makes
    /// the check-then-insert atomic.
    pub(super) async fn insert_if_absent(&self, pins: Vec<Pin>) -> Result<Vec<(Pin, bool)>, PinError> {
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(redb_err)?;
            txn.set_durability(Durability::Immediate);
            let mut out = Vec::with_capacity(pins.len());
            let mut wrote = false;
            {
                let mut table = txn.open_table(PINS).map_err(redb_err)?;
                for p in pins {
                    let k = (p.registry.as_str(), p.repository.as_str(), p.tag.as_str());
                    let existing = table.get(k).map_err(redb_err)?.map(|g| g.value().to_string());
                    match existing {
                        Some(json) => out.push((decode(&json)?, false)),
                        None => {
                            table.insert(k, encode(&p).as_str()).map_err(redb_err)?;
                            wrote = true;
                            out.push((p, true));
                        }
                    }
                }
            }
            // Nothing new: skip the commit and its fsync.
            if wrote {
                txn.commit().map_err(redb_err)?;
            } else {
                txn.abort().map_err(redb_err)?;
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn record_move(&self, ev: MoveEvent) -> Result<(), PinError> {
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(redb_err)?;
            txn.set_durability(Durability::Immediate);
            let wrote = {
                let mut table = txn.open_table(MOVES).map_err(redb_err)?;
                let k = (
                    ev.registry.as_str(),
                    ev.repository.as_str(),
                    ev.tag.as_str(),
                    ev.pinned.as_str(),
                    ev.seen.as_str(),
                );
                let known = table.get(k).map_err(redb_err)?.is_some();
                if !known {
                    table.insert(k, encode(&ev).as_str()).map_err(redb_err)?;
                }
                !known
            };
            if wrote {
                txn.commit().map_err(redb_err)?;
            } else {
                txn.abort().map_err(redb_err)?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn list(&self) -> Result<Vec<Pin>, PinError> {
        self.blocking(|db| values_of(db, PINS)).await
    }

    pub(super) async fn moves(&self) -> Result<Vec<MoveEvent>, PinError> {
        self.blocking(|db| values_of(db, MOVES)).await
    }

    pub(super) async fn forget(&self, k: PinKey) -> Result<bool, PinError> {
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(redb_err)?;
            txn.set_durability(Durability::Immediate);
            let removed = {
                let mut table = txn.open_table(PINS).map_err(redb_err)?;
                let removed = table.remove((k.0.as_str(), k.1.as_str(), k.2.as_str())).map_err(redb_err)?.is_some();
                removed
            };
            if removed {
                txn.commit().map_err(redb_err)?;
            } else {
                txn.abort().map_err(redb_err)?;
            }
            Ok(removed)
        })
        .await
    }
}
