//! The disk blob cache: content-addressed files under `<data_dir>/blobs`.
//!
//! # Layout
//!
//! - `blobs/sha256/<first two hex>/<64 hex>`: a blob whose bytes hashed to
//!   its name when it was written. The directory *is* the index: a restart
//!   scans it, so nothing else has to be kept consistent with it.
//! - `blobs/tmp/<64 hex>-<n>`: a download in progress. Removed at start,
//!   since a process that died mid-download left it unverified.
//!
//! # Key
//!
//! The digest alone. Content under a digest is the same in every registry
//! and repository, so one file serves all of them. *Who may read it* is not
//! decided here: `server::blob_guard` has already checked that an allowed
//! manifest of the requesting repository references the digest.
//!
//! # Integrity
//!
//! A file is renamed into place only after its bytes matched the digest and
//! were fsynced. A file found at start (it may have rotted, or been edited by
//! hand) is re-hashed before it is first served in this process; one that no
//! longer matches is deleted and fetched again.
//!
//! # Bound
//!
//! `[cache] blob_max_bytes` of finished files, least recently used evicted
//! first, never a file a client is reading. Recency survives a restart as
//! file modification times, touched at most once per [`TOUCH_EVERY`].

mod download;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

pub use download::{file_range, Download, Fetch, Progress, Reader};

use crate::metrics::METRICS;
use crate::oci::Digest;

/// How stale a file's modification time may get before a serve refreshes it.
/// Recency within the hour is kept in memory; across restarts, hour-grained
/// recency is enough to pick what to evict.
pub const TOUCH_EVERY: Duration = Duration::from_secs(3600);

pub struct BlobStore {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    downloads: Mutex<HashMap<Digest, Arc<Download>>>,
    temp_counter: AtomicU64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    total: u64,
    /// A logical clock for recency: bumped on every use.
    clock: u64,
}

struct Entry {
    size: u64,
    used: u64,
    /// Hashed in this process (written by us, or re-hashed since start).
    checked: bool,
    /// One clone per open reader; eviction skips an entry while any exists.
    readers: Arc<()>,
    touched: SystemTime,
}

/// A cached blob opened for one response. Holding it keeps the file from
/// being evicted.
pub struct Cached {
    pub file: std::fs::File,
    pub size: u64,
    pub guard: ReadGuard,
}

/// Keeps a cached file from eviction while a response reads it.
pub struct ReadGuard(#[allow(dead_code)] Arc<()>);

impl BlobStore {
    /// Opens (creating) the cache under `root`: leftover temp files removed,
    /// finished files indexed by their modification time, and the bound
    /// applied. Fails when the directory cannot be created or read, which
    /// `serve` reports before it listens.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<BlobStore> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join("sha256"))?;
        let mut removed = 0;
        for e in std::fs::read_dir(&tmp)? {
            let e = e?;
            if std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!("blob cache: removed {removed} unfinished download(s) left by an earlier run");
        }
        let mut found: Vec<(Digest, u64, SystemTime)> = Vec::new();
        for shard in std::fs::read_dir(root.join("sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(shard.path())? {
                let f = f?;
                let name = f.file_name();
                let Some(digest) = name.to_str().and_then(|h| format!("sha256:{h}").parse::<Digest>().ok()) else {
                    // Not ours (a hand-placed file): leave it, never serve it.
                    continue;
                };
                let meta = f.metadata()?;
                if meta.is_file() {
                    found.push((digest, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                }
            }
        }
        // Oldest first, so the logical clock orders them as their mtimes do.
        found.sort_by_key(|(_, _, t)| *t);
        let mut index = Index::default();
        for (digest, size, touched) in found {
            index.clock += 1;
            index.total += size;
            let entry = Entry { size, used: index.clock, checked: false, readers: Arc::new(()), touched };
            index.entries.insert(digest, entry);
        }
        let store = BlobStore {
            root: root.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
            downloads: Mutex::new(HashMap::new()),
            temp_counter: AtomicU64::new(0),
        };
        let (n, bytes) = store.usage();
        tracing::info!("blob cache: {n} blob(s), {bytes} bytes, under {}", root.display());
        store.evict();
        Ok(store)
    }

    /// Number of cached blobs and their total size.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.index.lock().expect("blob index lock");
        (index.entries.len(), index.total)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// The blob's size when it is cached, without opening it (for HEAD).
    /// A file not yet re-hashed since start counts as absent, so HEAD never
    /// vouches for bytes GET might refuse.
    pub fn cached_size(&self, digest: &Digest) -> Option<u64> {
        let index = self.index.lock().expect("blob index lock");
        index.entries.get(digest).filter(|e| e.checked).map(|e| e.size)
    }

    /// Opens a cached blob for serving, re-hashing it first when this process
    /// has not checked it yet. `None` when it is not cached, or was and no
    /// longer matches its digest (then it is deleted).
    pub async fn open_cached(self: &Arc<Self>, digest: &Digest) -> Option<Cached> {
        // One lock per serve: recency, the reader guard, and whether the
        // file's mtime is due a refresh (see `TOUCH_EVERY`).
        let now = SystemTime::now();
        let (checked, reader, touch) = {
            let mut index = self.index.lock().expect("blob index lock");
            index.clock += 1;
            let clock = index.clock;
            let e = index.entries.get_mut(digest)?;
            e.used = clock;
            let touch = now.duration_since(e.touched).unwrap_or_default() >= TOUCH_EVERY;
            if touch {
                e.touched = now;
            }
            (e.checked, e.readers.clone(), touch)
        };
        let path = self.path(digest);
        if !checked {
            let (p, d) = (path.clone(), digest.clone());
            let ok = tokio::task::spawn_blocking(move || file_matches(&p, &d)).await.unwrap_or(false);
            if !ok {
                tracing::warn!(blob = %digest, "cached blob no longer matches its digest; deleted, fetching again");
                METRICS.blob_cache_corrupt.inc();
                drop(reader);
                self.remove(digest);
                return None;
            }
            if let Some(e) = self.index.lock().expect("blob index lock").entries.get_mut(digest) {
                e.checked = true;
            }
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(blob = %digest, "cached blob cannot be opened ({e}); fetching again");
                drop(reader);
                self.remove(digest);
                return None;
            }
        };
        let size = file.metadata().map(|m| m.len()).ok()?;
        if touch {
            // Recency that survives a restart; a failure only costs that.
            let _ = file.set_modified(now);
        }
        Some(Cached { file, size, guard: ReadGuard(reader) })
    }

    fn remove(&self, digest: &Digest) {
        let mut index = self.index.lock().expect("blob index lock");
        if let Some(e) = index.entries.remove(digest) {
            index.total -= e.size;
        }
        drop(index);
        let _ = std::fs::remove_file(self.path(digest));
    }

    /// A fresh temp path for a download of `digest`.
    fn temp_path(&self, digest: &Digest) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}-{n}", digest.hex()))
    }

    /// Moves a verified, fsynced temp file into place and indexes it, then
    /// applies the bound. An error leaves the blob uncached (the response
    /// that was streaming from the temp file is unaffected).
    fn commit(&self, digest: &Digest, temp: &Path, size: u64) -> io::Result<()> {
        let path = self.path(digest);
        std::fs::create_dir_all(path.parent().expect("sharded path"))?;
        std::fs::rename(temp, &path)?;
        let mut index = self.index.lock().expect("blob index lock");
        index.clock += 1;
        let clock = index.clock;
        let entry = Entry { size, used: clock, checked: true, readers: Arc::new(()), touched: SystemTime::now() };
        if let Some(old) = index.entries.insert(digest.clone(), entry) {
            index.total -= old.size;
        }
        index.total += size;
        drop(index);
        self.evict();
        Ok(())
    }

    /// Evicts least-recently-used files until the total is within the bound,
    /// skipping files with an open reader.
    fn evict(&self) {
        let mut index = self.index.lock().expect("blob index lock");
        if index.total <= self.max_bytes {
            return;
        }
        let mut candidates: Vec<(u64, Digest)> = index
            .entries
            .iter()
            .filter(|(_, e)| Arc::strong_count(&e.readers) == 1)
            .map(|(d, e)| (e.used, d.clone()))
            .collect();
        candidates.sort_unstable_by_key(|(used, _)| *used);
        let mut evicted = Vec::new();
        for (_, d) in candidates {
            if index.total <= self.max_bytes {
                break;
            }
            if let Some(e) = index.entries.remove(&d) {
                index.total -= e.size;
                evicted.push(d);
            }
        }
        drop(index);
        for d in &evicted {
            let _ = std::fs::remove_file(self.path(d));
            METRICS.blob_cache_evictions.inc();
        }
        if !evicted.is_empty() {
            tracing::debug!("blob cache: evicted {} blob(s) to stay under {} bytes", evicted.len(), self.max_bytes);
        }
    }
}

/// Whether the file at `path` hashes to `digest`. Reads it in 1 MiB pieces.
fn file_matches(path: &Path, digest: &Digest) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    let hash: [u8; 32] = hasher.finalize().into();
    Digest::from_sha256(&hash) == *digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        let p = dir.join("sha256").join(&d.hex()[..2]);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(d.hex()), bytes).unwrap();
        d
    }

    #[tokio::test]
    async fn a_restart_keeps_files_drops_temp_files_and_rehashes_before_serving() {
        let dir = tempfile::tempdir().unwrap();
        let good = put(dir.path(), b"good bytes");
        let rotten = put(dir.path(), b"original");
        let rotten_path = dir.path().join("sha256").join(&rotten.hex()[..2]).join(rotten.hex());
        std::fs::write(&rotten_path, b"tampered").unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp").join(format!("{}-0", good.hex())), b"half").unwrap();

        let store = Arc::new(BlobStore::open(dir.path(), 1 << 20).unwrap());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "temp files removed");
        assert_eq!(store.usage().0, 2);
        // Not re-hashed yet: HEAD does not vouch for it.
        assert_eq!(store.cached_size(&good), None);
        let c = store.open_cached(&good).await.expect("good file served");
        assert_eq!(c.size, 10);
        assert_eq!(store.cached_size(&good), Some(10));
        assert!(store.open_cached(&rotten).await.is_none(), "a file that no longer matches is never served");
        assert!(!rotten_path.exists(), "and it is deleted");
        assert_eq!(store.usage().0, 1);
    }

    #[tokio::test]
    async fn eviction_is_least_recently_used_and_skips_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), 25).unwrap());
        let commit = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            let t = store.temp_path(&d);
            std::fs::write(&t, bytes).unwrap();
            store.commit(&d, &t, bytes.len() as u64).unwrap();
            d
        };
        let a = commit(b"aaaaaaaaaa");
        let b = commit(b"bbbbbbbbbb");
        let held = store.open_cached(&a).await.unwrap(); // a is now more recent than b, and open
        let c = commit(b"cccccccccc"); // 30 > 25: evict the LRU, which is b
        assert!(store.cached_size(&b).is_none(), "least recently used evicted");
        assert!(store.cached_size(&a).is_some() && store.cached_size(&c).is_some());
        let d = commit(b"dddddddddd"); // a is LRU now but open: c goes instead
        assert!(store.cached_size(&a).is_some(), "an open file is never evicted");
        assert!(store.cached_size(&c).is_none());
        drop(held);
        let _e = commit(b"eeeeeeeeee");
        assert!(store.cached_size(&a).is_none(), "evictable once closed");
        assert!(store.cached_size(&d).is_some());
        assert!(store.usage().1 <= 25);
    }
}
