//! Blobs a client may fetch, and the journal that keeps them across
//! restarts.
//!
//! An entry is `(registry, repo, blob digest, policy fingerprint)`, recorded
//! from every manifest a policy allowed (its config and layers; an index's
//! through its children, when they are allowed in turn). A blob has no
//! signature of its own, so without this a client that knows a digest would
//! get around verification by never asking for the manifest. The repository
//! is in the key for the same reason as in `cache::ManifestKey`, and the
//! policy fingerprint (which covers the mode and every trust byte) so that
//! blobs of an image verified under old trust material are never served
//! under new material, and an audit-mode allow never opens a blob to an
//! enforcing policy.
//!
//! Because the fingerprint is in the key, the set outlives config reloads
//! (`App::replace` hands it to the new mirror): an unchanged policy keeps
//! its entries, so a pull that spans a reload does not lose its blobs, and a
//! changed one matches none of them. For the same reason it outlives a
//! restart: the journal `<data_dir>/allowed-blobs.journal` has one line per
//! entry recorded, appended by a writer thread off the request path, read
//! back at start and rewritten compacted then and whenever it has grown to
//! twice the bound. Without it, a node resuming a layer download after a
//! rollout of sigmirror would be refused until it fetched the manifest again.
//!
//! Entries expire an hour after their last use (a pull fetches its blobs
//! right after its manifests; a restart gives loaded entries a fresh hour)
//! and at most `MAX_ALLOWED_BLOBS` are kept; a blob whose entry is gone is
//! refused until its manifest is fetched again.

use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::cache::VerdictKey;
use crate::oci::Digest;

/// About 30 MiB at the most, for the keys' strings.
pub const MAX_ALLOWED_BLOBS: u64 = 100_000;

/// Lines waiting for the journal writer. A burst beyond this is not
/// journalled (the entries still work until a restart): the request path
/// never waits on the disk.
const JOURNAL_QUEUE: usize = 10_000;

/// A journal line longer than this is not one we wrote.
const MAX_LINE: usize = 1024;

pub struct AllowedBlobs {
    inner: moka::sync::Cache<VerdictKey, ()>,
    /// Manifests whose blobs were recorded in the last few minutes, so a
    /// manifest served on every request (a vouched platform manifest) is not
    /// parsed again each time. Its entries live shorter than the blobs', so
    /// a blob entry never outlives the chance to be recorded again.
    recorded: moka::sync::Cache<VerdictKey, ()>,
    /// To the journal writer; `None` in memory only (tests, the CLI).
    journal: Option<mpsc::SyncSender<String>>,
}

impl Default for AllowedBlobs {
    /// In memory only.
    fn default() -> AllowedBlobs {
        AllowedBlobs {
            inner: moka::sync::Cache::builder()
                .max_capacity(MAX_ALLOWED_BLOBS)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            recorded: moka::sync::Cache::builder()
                .max_capacity(MAX_ALLOWED_BLOBS)
                .time_to_live(Duration::from_secs(300))
                .build(),
            journal: None,
        }
    }
}

impl AllowedBlobs {
    /// Loads the journal at `path` (a missing file is an empty one; a line
    /// that does not parse is skipped), rewrites it compacted, and journals
    /// every entry recorded from now on.
    pub fn open(path: &Path) -> io::Result<AllowedBlobs> {
        let mut blobs = AllowedBlobs::default();
        let (loaded, skipped) = load(path, &blobs.inner)?;
        if skipped > 0 {
            tracing::warn!("{}: {skipped} line(s) that are not allowed-blob entries skipped", path.display());
        }
        let file = compact(path, &blobs.inner)?;
        tracing::info!("allowed blobs: {loaded} entr(ies) loaded from {}", path.display());
        let (tx, rx) = mpsc::sync_channel(JOURNAL_QUEUE);
        let (inner, path) = (blobs.inner.clone(), path.to_path_buf());
        std::thread::Builder::new()
            .name("allowed-blobs-journal".into())
            .spawn(move || write_journal(rx, file, &path, &inner))?;
        blobs.journal = Some(tx);
        Ok(blobs)
    }

    /// Records the blobs of the manifest `allowed` names; `blobs` is only
    /// called when they were not recorded in the last few minutes.
    pub fn record(&self, allowed: &VerdictKey, blobs: impl FnOnce() -> Vec<Digest>) {
        if self.recorded.contains_key(allowed) {
            return;
        }
        for blob in blobs() {
            let key = VerdictKey { digest: blob, ..allowed.clone() };
            // Journalled only when new, so the journal grows with new
            // entries, not with every pull.
            if let (Some(journal), false) = (&self.journal, self.inner.contains_key(&key)) {
                let _ = journal.try_send(line(&key));
            }
            self.inner.insert(key, ());
        }
        self.recorded.insert(allowed.clone(), ());
    }

    pub fn contains(&self, key: &VerdictKey) -> bool {
        self.inner.get(key).is_some()
    }
}

/// `<fingerprint hex> <registry> <repo> <digest>`: none of them can hold a
/// space (registry and repository names are checked before anything is
/// recorded, digests are parsed).
fn line(k: &VerdictKey) -> String {
    format!("{} {} {} {}\n", hex::encode(k.policy_fingerprint), k.registry, k.repo, k.digest)
}

fn parse(line: &str) -> Option<VerdictKey> {
    let mut parts = line.split(' ');
    let (fp, registry, repo, digest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || registry.is_empty() || repo.is_empty() {
        return None;
    }
    let policy_fingerprint: [u8; 32] = hex::decode(fp).ok()?.try_into().ok()?;
    let digest: Digest = digest.parse().ok()?;
    Some(VerdictKey { registry: registry.into(), repo: repo.into(), digest, policy_fingerprint })
}

/// Reads every entry of the journal into `into`: (loaded, skipped lines).
fn load(path: &Path, into: &moka::sync::Cache<VerdictKey, ()>) -> io::Result<(u64, u64)> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut loaded, mut skipped) = (0, 0);
    let mut reader = io::BufReader::new(file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded: a line is read at most MAX_LINE bytes at a time.
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n > MAX_LINE {
            // Too long: skip to its end.
            skipped += 1;
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            continue;
        }
        match std::str::from_utf8(&buf).ok().map(|l| l.trim_end_matches('\n')).and_then(parse) {
            Some(k) => {
                into.insert(k, ());
                loaded += 1;
            }
            None => skipped += 1,
        }
    }
    Ok((loaded, skipped))
}

/// Rewrites the journal from the entries in memory, through a temporary
/// file and a rename, and returns it open for appending.
fn compact(path: &Path, entries: &moka::sync::Cache<VerdictKey, ()>) -> io::Result<fs::File> {
    let tmp = temp_path(path);
    {
        let mut w = BufWriter::new(fs::File::create(&tmp)?);
        for (k, ()) in entries.iter() {
            w.write_all(line(&k).as_bytes())?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::OpenOptions::new().append(true).open(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The writer thread: appends lines as they come, flushing whenever the
/// queue is empty, and compacts once the file holds twice the bound. Ends
/// when the last sender is gone.
fn write_journal(rx: mpsc::Receiver<String>, file: fs::File, path: &Path, entries: &moka::sync::Cache<VerdictKey, ()>) {
    let mut w = BufWriter::new(file);
    let mut lines = entries.entry_count();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = (|| {
            for l in &batch {
                w.write_all(l.as_bytes())?;
            }
            w.flush()?;
            lines += batch.len() as u64;
            if lines > 2 * MAX_ALLOWED_BLOBS {
                entries.run_pending_tasks();
                w = BufWriter::new(compact(path, entries)?);
                lines = entries.entry_count();
            }
            Ok::<_, io::Error>(())
        })();
        if let Err(e) = result {
            // Entries still work in memory; only a restart forgets them.
            tracing::warn!("allowed-blobs journal {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> VerdictKey {
        VerdictKey { registry: "r".into(), repo: "x/y".into(), digest: Digest::of(&[n]), policy_fingerprint: [n; 32] }
    }

    #[test]
    fn allowed_blobs_are_per_repository_and_policy_fingerprint() {
        let blobs = AllowedBlobs::default();
        let manifest = key(1);
        let layer = Digest::of(b"layer");
        blobs.record(&manifest, || vec![layer.clone()]);
        assert!(blobs.contains(&VerdictKey { digest: layer.clone(), ..manifest.clone() }));
        assert!(!blobs.contains(&VerdictKey { digest: Digest::of(b"other"), ..manifest.clone() }));
        assert!(!blobs.contains(&VerdictKey { digest: layer.clone(), repo: "y".into(), ..manifest.clone() }));
        assert!(!blobs.contains(&VerdictKey { digest: layer, policy_fingerprint: [9; 32], ..manifest }));
    }

    /// Waits (bounded) until the writer thread has put `n` lines in the file.
    fn wait_lines(path: &Path, n: usize) -> String {
        for _ in 0..200 {
            let text = fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the journal never reached {n} lines: {:?}", fs::read_to_string(path));
    }

    #[test]
    fn entries_survive_a_restart_through_the_journal_and_bad_lines_are_skipped() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("allowed-blobs.journal");
        let manifest = key(1);
        let (layer, config) = (Digest::of(b"layer"), Digest::of(b"config"));
        {
            let blobs = AllowedBlobs::open(&path).unwrap();
            blobs.record(&manifest, || vec![layer.clone(), config.clone()]);
            // Recording again journals nothing new.
            blobs.record(&VerdictKey { digest: Digest::of(b"other manifest"), ..manifest.clone() }, || {
                vec![layer.clone()]
            });
            wait_lines(&path, 2);
        }
        let mut text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        // A hand edit, a torn write and a line far too long are skipped.
        text.push_str("not an entry\nzz r x sha256:00\n");
        text.push_str(&"a".repeat(5000));
        text.push_str("\npartial-line-without-newline");
        fs::write(&path, text).unwrap();

        let blobs = AllowedBlobs::open(&path).unwrap();
        assert!(blobs.contains(&VerdictKey { digest: layer.clone(), ..manifest.clone() }));
        assert!(blobs.contains(&VerdictKey { digest: config, ..manifest.clone() }));
        assert!(!blobs.contains(&VerdictKey { digest: layer, policy_fingerprint: [2; 32], ..manifest }));
        // Compacted at start: only the good entries are left.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_journal_line_round_trips_and_nothing_else_parses() {
        let k = key(7);
        assert_eq!(parse(line(&k).trim_end()), Some(k.clone()));
        let good = line(&k);
        let good = good.trim_end();
        for bad in
            ["", &good.replacen(' ', "  ", 1), &format!("{good} extra"), &good.replace("sha256:", "md5:"), &good[2..]]
        {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
