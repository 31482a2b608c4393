//! One upstream download per blob, shared by every client that asks while it
//! runs.
//!
//! The download runs in its own task, so a client that goes away does not
//! abort it for the others. It writes a temp file and publishes how far it
//! got through a `watch` channel. Each client is a [`Reader`] of that file:
//! it sends what is written, waits when it catches up, and never waits for
//! the download to finish before its first byte.
//!
//! Nothing unverified completes a response. A reader holds back the last
//! byte until the download has hashed the whole blob. When the cache cannot
//! be written (disk full), the download stops and each reader carries on
//! from its own position with a ranged upstream request; it then hashes what
//! it already sent (from the file) and the rest as it streams, so a full disk
//! never breaks a pull and never lets a wrong byte complete one. Readers do
//! not hash in the common case: 100 clients of one blob cost one hash.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::BlobStore;
use crate::metrics::METRICS;
use crate::oci::Digest;
use crate::response::BoxError;
use crate::upstream::{UpstreamClient, UpstreamError};

/// How much a reader reads at once, and how much the download gathers
/// before it writes: large enough that a 1 GB blob is a few thousand
/// reads, small enough that memory per client stays a fraction of a MiB.
const CHUNK: usize = 256 << 10;

/// How far a download got. Readers act on the latest value.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Waiting for upstream's answer.
    Starting,
    /// Bytes `[0, written)` are in the temp file.
    Running { written: u64, len: Option<u64> },
    /// All `len` bytes are written and matched the digest.
    Done { len: u64 },
    /// The cache could not take the blob at `written`; readers continue
    /// from upstream on their own.
    Uncacheable { written: u64, len: Option<u64> },
    /// Upstream failed, or sent bytes that do not match the digest.
    Failed(UpstreamError),
}

pub struct Download {
    pub digest: Digest,
    /// Opened before any byte is written, so readers keep reading it after
    /// the file is renamed into place or deleted.
    file: Arc<std::fs::File>,
    progress: watch::Sender<Progress>,
}

/// What [`BlobStore::fetch`] gives a client for an uncached blob.
pub enum Fetch {
    /// A shared download, new or already running.
    Shared(Arc<Download>),
    /// No temp file could be made (unwritable or full cache, or a blob
    /// larger than the whole cache): stream straight from upstream.
    PassThrough,
}

impl BlobStore {
    /// Joins the download of `digest`, starting it when none runs.
    pub fn fetch(self: &Arc<Self>, up: &Arc<UpstreamClient>, repo: &str, digest: &Digest) -> Fetch {
        let mut downloads = self.downloads.lock().expect("downloads lock");
        if let Some(d) = downloads.get(digest) {
            return Fetch::Shared(d.clone());
        }
        let temp = self.temp_path(digest);
        let opened = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&temp)
            .and_then(|w| Ok((std::fs::File::open(&temp)?, w)));
        let (read, write) = match opened {
            Ok(files) => files,
            Err(e) => {
                cache_write_failed(digest, &e);
                let _ = std::fs::remove_file(&temp);
                return Fetch::PassThrough;
            }
        };
        let (tx, _) = watch::channel(Progress::Starting);
        let download = Arc::new(Download { digest: digest.clone(), file: Arc::new(read), progress: tx });
        downloads.insert(digest.clone(), download.clone());
        drop(downloads);
        let task = DownloadTask {
            store: self.clone(),
            download: download.clone(),
            temp,
            up: up.clone(),
            repo: repo.to_string(),
        };
        tokio::spawn(task.run(tokio::fs::File::from_std(write)));
        Fetch::Shared(download)
    }
}

fn cache_write_failed(digest: &Digest, e: &std::io::Error) {
    METRICS.blob_cache_write_errors.inc();
    tracing::warn!(blob = %digest, "blob cache cannot be written ({e}); streaming without caching");
}

struct DownloadTask {
    store: Arc<BlobStore>,
    download: Arc<Download>,
    temp: PathBuf,
    up: Arc<UpstreamClient>,
    repo: String,
}

impl DownloadTask {
    async fn run(self, file: tokio::fs::File) {
        let end = self.fetch_into(file).await;
        let digest = &self.download.digest;
        if !matches!(end, Progress::Done { .. }) {
            let _ = std::fs::remove_file(&self.temp);
        }
        // Out of the map before readers hear the end: a request that comes
        // after a failure starts afresh, one after success finds the file.
        self.store.downloads.lock().expect("downloads lock").remove(digest);
        self.download.progress.send_replace(end);
    }

    async fn fetch_into(&self, mut file: tokio::fs::File) -> Progress {
        let d = &self.download;
        let blob = match self.up.blob(&self.repo, &d.digest, false).await {
            Ok(b) => b,
            Err(e) => return Progress::Failed(e),
        };
        let len = blob.content_length;
        if len.is_some_and(|n| n > self.store.max_bytes) {
            tracing::info!(blob = %d.digest, "blob of {} bytes is larger than the whole blob cache; not cached", len.unwrap_or(0));
            return Progress::Uncacheable { written: 0, len };
        }
        d.progress.send_replace(Progress::Running { written: 0, len });
        let mut body = blob.body;
        let mut hasher = Sha256::new();
        let mut pending = BytesMut::new();
        let mut written = 0u64;
        loop {
            let next = body.next().await;
            let finished = next.is_none();
            match next {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    pending.extend_from_slice(&chunk);
                    if len.is_some_and(|n| written + pending.len() as u64 > n) {
                        return Progress::Failed(UpstreamError::Protocol(format!(
                            "blob {} longer than its Content-Length",
                            d.digest
                        )));
                    }
                }
                Some(Err(e)) => return Progress::Failed(e),
                None => {}
            }
            if pending.len() >= CHUNK || (finished && !pending.is_empty()) {
                let n = pending.len() as u64;
                let io = async {
                    file.write_all(&pending).await?;
                    file.flush().await
                };
                if let Err(e) = io.await {
                    cache_write_failed(&d.digest, &e);
                    return Progress::Uncacheable { written, len };
                }
                pending.clear();
                written += n;
                d.progress.send_replace(Progress::Running { written, len });
            }
            if finished {
                break;
            }
        }
        let hash: [u8; 32] = hasher.finalize().into();
        let actual = Digest::from_sha256(&hash);
        if actual != d.digest {
            METRICS.blob_digest_mismatches.inc();
            tracing::warn!(blob = %d.digest, "upstream sent {actual} for blob {}; not cached, responses aborted", d.digest);
            return Progress::Failed(UpstreamError::DigestMismatch {
                expected: d.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Err(e) = file.sync_all().await {
            cache_write_failed(&d.digest, &e);
            return Progress::Uncacheable { written, len };
        }
        drop(file);
        if let Err(e) = self.store.commit(&d.digest, &self.temp, written) {
            // The bytes are verified and every reader has them in its open
            // file; only caching failed.
            cache_write_failed(&d.digest, &e);
            return Progress::Uncacheable { written, len };
        }
        Progress::Done { len: written }
    }
}

impl Download {
    /// Waits for upstream's answer: `Ok(len)` once the body is coming (or
    /// done), the upstream error when it will not.
    pub async fn started(&self) -> Result<Option<u64>, UpstreamError> {
        let mut rx = self.progress.subscribe();
        let p = rx.wait_for(|p| !matches!(p, Progress::Starting)).await.map(|p| p.clone());
        match p {
            Ok(Progress::Running { len, .. } | Progress::Uncacheable { len, .. }) => Ok(len),
            Ok(Progress::Done { len }) => Ok(Some(len)),
            Ok(Progress::Failed(e)) => Err(e),
            Ok(Progress::Starting) | Err(_) => Err(UpstreamError::Protocol("blob download ended".into())),
        }
    }

    /// Waits for the end: `true` when the blob is now in the cache.
    pub async fn finished(&self) -> bool {
        let mut rx = self.progress.subscribe();
        let end = rx
            .wait_for(|p| matches!(p, Progress::Done { .. } | Progress::Uncacheable { .. } | Progress::Failed(_)))
            .await;
        matches!(end.as_deref(), Ok(Progress::Done { .. }))
    }

    /// The body of one client's response, from byte 0.
    pub fn reader(self: &Arc<Self>, up: Arc<UpstreamClient>, repo: String) -> Reader {
        Reader { download: self.clone(), rx: self.progress.subscribe(), up, repo, pos: 0 }
    }
}

/// One client's view of a shared download.
pub struct Reader {
    download: Arc<Download>,
    rx: watch::Receiver<Progress>,
    up: Arc<UpstreamClient>,
    repo: String,
    pos: u64,
}

enum Step {
    Send(Bytes),
    Wait,
    End,
    /// Continue from upstream at `pos` (the cache gave up).
    Upstream {
        len: Option<u64>,
    },
    Fail(BoxError),
}

impl Reader {
    /// The response body: file bytes as they are written, then (only if the
    /// cache gave up) upstream's from where the file ended.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
        enum St {
            File(Reader),
            Upstream(std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>),
            Over,
        }
        futures_util::stream::unfold(St::File(self), |mut st| async move {
            loop {
                match st {
                    St::Over => return None,
                    St::Upstream(mut s) => {
                        let item = s.next().await?;
                        let next = if item.is_err() { St::Over } else { St::Upstream(s) };
                        return Some((item, next));
                    }
                    St::File(mut r) => match r.step().await {
                        Step::Send(b) => return Some((Ok(b), St::File(r))),
                        Step::Wait => st = St::File(r),
                        Step::End => return None,
                        Step::Fail(e) => return Some((Err(e), St::Over)),
                        Step::Upstream { len } => match r.continue_upstream(len).await {
                            Ok(s) => st = St::Upstream(Box::pin(s)),
                            Err(e) => return Some((Err(e), St::Over)),
                        },
                    },
                }
            }
        })
    }

    async fn step(&mut self) -> Step {
        let p = self.rx.borrow_and_update().clone();
        // What may be sent now. The last byte waits for the download's hash.
        let ready = match &p {
            Progress::Starting => 0,
            Progress::Running { written, .. } => written.saturating_sub(1),
            Progress::Done { len } => *len,
            Progress::Uncacheable { written, .. } => *written,
            Progress::Failed(e) => {
                tracing::warn!(blob = %self.download.digest, "blob response aborted: {e}");
                return Step::Fail(Box::new(e.clone()));
            }
        };
        if self.pos < ready {
            let n = (ready - self.pos).min(CHUNK as u64) as usize;
            return match read_at(self.download.file.clone(), self.pos, n).await {
                Ok(b) => {
                    self.pos += b.len() as u64;
                    Step::Send(b)
                }
                Err(e) => Step::Fail(Box::new(e)),
            };
        }
        match p {
            // The download hashed every byte it wrote, and we sent those.
            Progress::Done { .. } => Step::End,
            Progress::Uncacheable { len, .. } => Step::Upstream { len },
            _ => match self.rx.changed().await {
                Ok(()) => Step::Wait,
                Err(_) => Step::Fail("blob download ended without an outcome".into()),
            },
        }
    }

    /// The rest of the blob from upstream, verified against the hash of
    /// everything this reader sent so far.
    async fn continue_upstream(
        self,
        len: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes, BoxError>> + Send, BoxError> {
        let d = &self.download.digest;
        let hasher = hash_prefix(self.download.file.clone(), self.pos).await?;
        let blob = self.up.blob_from(&self.repo, d, self.pos).await?;
        // A registry that ignores Range sends everything: skip what we sent.
        let mut skip = self.pos - blob.offset.min(self.pos);
        if blob.offset > self.pos {
            return Err(format!("upstream resumed blob {d} at {} instead of {}", blob.offset, self.pos).into());
        }
        let body = blob.body.filter_map(move |r| {
            let out = match r {
                Ok(mut b) if skip > 0 => {
                    let cut = skip.min(b.len() as u64) as usize;
                    skip -= cut as u64;
                    let rest = b.split_off(cut);
                    (!rest.is_empty()).then_some(Ok(rest))
                }
                other => Some(other),
            };
            std::future::ready(out)
        });
        let remaining = len.map(|n| n.saturating_sub(self.pos));
        Ok(crate::integrity::verify_stream_from(Box::pin(body), d.clone(), remaining, hasher))
    }
}

/// The hash state after the first `len` bytes of `file`.
async fn hash_prefix(file: Arc<std::fs::File>, len: u64) -> std::io::Result<Sha256> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        while pos < len {
            let want = (len - pos).min(CHUNK as u64) as usize;
            let n = file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob file shorter than sent"));
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(hasher)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A positional read of up to `n` (at most [`CHUNK`]) bytes into a buffer
/// from [`POOL`].
///
/// A cached blob is nearly always in the page cache, so the read is first
/// tried right here with `RWF_NOWAIT`, which copies only what is cached and
/// never waits for the disk. Only when some of it is not cached (or the
/// filesystem does not support the flag) does the read go to a blocking
/// thread. Why not always there: the hop cost a thread wake-up per chunk,
/// and the bytes then arrived in another core's cache just before this one
/// copied them into the socket.
async fn read_at(file: Arc<std::fs::File>, pos: u64, n: usize) -> std::io::Result<Bytes> {
    let n = n.min(CHUNK);
    let mut chunk = Pooled::take();
    let nowait = rustix::io::preadv2(
        &*file,
        &mut [std::io::IoSliceMut::new(&mut chunk.buf[..n])],
        pos,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    // What the page cache gave is kept; the blocking read goes on from there.
    let cached = nowait.unwrap_or(0);
    if cached == n {
        chunk.len = n;
        return Ok(Bytes::from_owner(chunk));
    }
    tokio::task::spawn_blocking(move || {
        let mut len = cached;
        while len < n {
            match file.read_at(&mut chunk.buf[len..n], pos + len as u64)? {
                0 => break,
                got => len += got,
            }
        }
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob file shorter than recorded"));
        }
        chunk.len = len;
        Ok(Bytes::from_owner(chunk))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Idle read buffers, each [`CHUNK`] bytes and zeroed once when made.
///
/// Why a pool: a fresh 256 KiB buffer per read was, with glibc's malloc, a
/// fresh mapping once a few dozen clients streamed at once: 50,000 page
/// faults a second at 32 connections, each page zeroed by the kernel and
/// then overwritten by the read. A buffer comes back here when hyper has
/// written its chunk and drops it. At most [`POOL_IDLE`] wait here, so the
/// pool holds at most 4 MiB when nothing is served.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOL_IDLE: usize = 16;

/// One pooled buffer, of which `len` bytes were read; goes back to the pool
/// when the `Bytes` made from it are dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl Pooled {
    fn take() -> Pooled {
        let reused = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        Pooled { buf: reused.unwrap_or_else(|| vec![0; CHUNK]), len: 0 }
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut idle = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < POOL_IDLE {
            idle.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Reads `[start, end)` of a cached file in [`CHUNK`] pieces.
pub fn file_range(
    file: std::fs::File,
    start: u64,
    end: u64,
    keep: impl Send + Sync + 'static,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send {
    let file = Arc::new(file);
    futures_util::stream::unfold((start, keep), move |(pos, keep)| {
        let file = file.clone();
        async move {
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(CHUNK as u64) as usize;
            match read_at(file, pos, n).await {
                Ok(b) => {
                    let next = pos + b.len() as u64;
                    Some((Ok(b), (next, keep)))
                }
                Err(e) => Some((Err(Box::new(e) as BoxError), (end, keep))),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads come back right at every offset, including short reads at the
    /// end of the file, from buffers that go back to the pool and are reused
    /// with what an earlier read left in them.
    #[tokio::test]
    async fn pooled_reads_return_exactly_the_bytes_asked_for() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(CHUNK * 2 + 1000)).map(|i| (i * 7 % 251) as u8).collect();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let file = Arc::new(f);
        let whole = read_at(file.clone(), 0, CHUNK).await.unwrap();
        assert_eq!(&whole[..], &data[..CHUNK]);
        drop(whole);
        // A reused buffer still holds the first read's bytes past `len`; none may show.
        let tail = read_at(file.clone(), (CHUNK * 2) as u64, CHUNK).await.unwrap();
        assert_eq!(&tail[..], &data[CHUNK * 2..]);
        let middle = read_at(file.clone(), 5, 10).await.unwrap();
        assert_eq!(&middle[..], &data[5..15]);
        // More than a chunk is never read at once.
        assert_eq!(read_at(file.clone(), 0, CHUNK * 3).await.unwrap().len(), CHUNK);
        let past_end = read_at(file, data.len() as u64, 10).await;
        assert_eq!(past_end.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_of_idle_buffers() {
        let taken: Vec<Pooled> = (0..POOL_IDLE + 4).map(|_| Pooled::take()).collect();
        drop(taken);
        let idle = POOL.lock().unwrap().len();
        assert!(idle <= POOL_IDLE, "{idle} idle buffers");
        assert!(POOL.lock().unwrap().iter().all(|b| b.len() == CHUNK));
    }
}
