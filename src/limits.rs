//! `[limits]`: what one client, or all of them together, may hold of
//! sigmirror, and what answers a client over a limit.
//!
//! Each limit has a default a reviewer can check against the arithmetic
//! beside it. Over a limit the answer is a status, never a hang: `503` with
//! `Retry-After` for a connection over `max_connections`, `431` for a request
//! head over `max_header_bytes` (see `connection`), a closed connection for a
//! head slower than `header_read_timeout_secs` or a connection idle past
//! `idle_timeout_secs`, `504` for a manifest not answered within
//! `manifest_timeout_secs`, and `429` with `Retry-After` for a request that
//! finds every upstream fetch slot taken for `upstream_fetch_wait_secs`.
//! An upstream blob body that brings less than
//! `upstream_blob_min_bytes_per_sec` over a window of
//! `upstream_blob_rate_window_secs` is cut off: the client's response is
//! aborted and nothing is cached.
//! Every one is counted in `sigmirror_limit_hits_total{limit}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Checker;
use crate::metrics::{LimitLabels, METRICS};
use crate::upstream::UpstreamError;

/// The `[limits]` table as written. A key left out takes its default from
/// `RawLimits::default`, where each default is argued.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    pub max_header_bytes: usize,
    pub idle_timeout_secs: u64,
    pub manifest_timeout_secs: u64,
    pub max_upstream_fetches: usize,
    pub upstream_fetch_wait_secs: u64,
    pub upstream_blob_min_bytes_per_sec: u64,
    pub upstream_blob_rate_window_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            // A pulling containerd holds 1 to 4 connections (one per
            // concurrent layer download, `max_concurrent_downloads = 3`, plus
            // the resolver), so this serves a few hundred nodes pulling at
            // once. Each connection costs a task and its buffers (at most
            // `max_header_bytes` to read, about 40 KiB of TLS state): the
            // whole bound stays under 100 MiB.
            max_connections: 1024,
            // containerd sends a request head in one packet, well under a
            // second even on a congested link; a client slower than this is
            // holding a connection, not sending a request (slowloris).
            header_read_timeout_secs: 10,
            // containerd's heads are under 2 KiB (an `Authorization` with a
            // registry token included); nginx's default bound is 32 KiB too.
            max_header_bytes: 32 << 10,
            // Less than Go's client-side `IdleConnTimeout` of 90 s (what
            // containerd uses), long enough for the requests of one pull to
            // reuse a connection.
            idle_timeout_secs: 60,
            // Two upstream `request_timeout_secs` (30 s), for a resolution
            // and the signature look-ups after it, and still well before the
            // kubelet gives up on a pull (`--runtime-request-timeout`, 2 min).
            manifest_timeout_secs: 60,
            // A cold pull of one image by a few dozen nodes at once (three
            // layer downloads each, shared per blob) fits, and upstream never
            // sees more sockets from one replica than a busy client opens.
            max_upstream_fetches: 256,
            // A request waits this long for a fetch slot (blob downloads free
            // theirs as they finish), then gets `429` and retries.
            upstream_fetch_wait_secs: 10,
            // 16 KiB/s is 128 kbit/s, a hundredth of the slowest link a
            // registry is served over; at this rate a 100 MiB layer would
            // take almost two hours. The read timeout (`request_timeout_secs`)
            // only catches a body that stops; one that drips a byte a
            // second never trips it and holds a fetch slot, a socket and a
            // download forever. Below this, the blob is not coming.
            upstream_blob_min_bytes_per_sec: 16 << 10,
            // As long as the read timeout, so a stall is cut as soon as it
            // would be anyway, and long enough to ride out TCP slow start
            // and a storage backend's pauses between chunks.
            upstream_blob_rate_window_secs: 30,
        }
    }
}

/// hyper reads a request head into a buffer of at least 8 KiB; it cannot
/// be set lower.
const MIN_HEADER_BYTES: usize = 8 << 10;
/// More than this is no bound for a request head.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The validated `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
    pub manifest_timeout: Duration,
    pub max_upstream_fetches: usize,
    pub upstream_fetch_wait: Duration,
    pub blob_rate: BlobRate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_raw(&RawLimits::default())
    }
}

impl Limits {
    fn from_raw(raw: &RawLimits) -> Limits {
        Limits {
            max_connections: raw.max_connections,
            header_read_timeout: Duration::from_secs(raw.header_read_timeout_secs),
            max_header_bytes: raw.max_header_bytes,
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
            manifest_timeout: Duration::from_secs(raw.manifest_timeout_secs),
            max_upstream_fetches: raw.max_upstream_fetches,
            upstream_fetch_wait: Duration::from_secs(raw.upstream_fetch_wait_secs),
            blob_rate: BlobRate {
                min_bytes_per_sec: raw.upstream_blob_min_bytes_per_sec,
                window: Duration::from_secs(raw.upstream_blob_rate_window_secs),
            },
        }
    }

    /// Checks every value; problems go to `c`. A zero would turn a limit
    /// off or refuse everything, so none may be zero except the wait.
    pub fn validate(raw: &RawLimits, c: &mut Checker) -> Limits {
        let positive = [
            ("limits.max_connections", raw.max_connections as u64, "for example 1024"),
            ("limits.header_read_timeout_secs", raw.header_read_timeout_secs, "for example 10"),
            ("limits.idle_timeout_secs", raw.idle_timeout_secs, "for example 60"),
            ("limits.manifest_timeout_secs", raw.manifest_timeout_secs, "for example 60"),
            ("limits.max_upstream_fetches", raw.max_upstream_fetches as u64, "for example 256"),
            ("limits.upstream_blob_min_bytes_per_sec", raw.upstream_blob_min_bytes_per_sec, "for example 16384"),
            ("limits.upstream_blob_rate_window_secs", raw.upstream_blob_rate_window_secs, "for example 30"),
        ];
        for (key, value, example) in positive {
            if value == 0 {
                c.problem(key, "must be at least 1", format!("set a bound, {example}"));
            }
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&raw.max_header_bytes) {
            c.problem(
                "limits.max_header_bytes",
                format!("{} is outside {MIN_HEADER_BYTES}..={MAX_HEADER_BYTES}", raw.max_header_bytes),
                "set it to what your clients' request heads need, for example 32768",
            );
        }
        // Bounded by what `Semaphore` can count.
        if raw.max_connections > Semaphore::MAX_PERMITS || raw.max_upstream_fetches > Semaphore::MAX_PERMITS {
            c.problem("limits", "a count is too large", "keep max_connections and max_upstream_fetches below 2^61");
        }
        Limits::from_raw(raw)
    }
}

/// Counts one limit being hit. `limit` is one of a fixed set of names: the
/// config keys above.
pub fn count_hit(limit: &'static str) {
    METRICS.limit_hits.get_or_create(&LimitLabels { limit }).inc();
}

/// `max_upstream_fetches`: slots shared by every upstream of one config. An
/// upstream request holds one from before it is sent until its body is read
/// (for a blob, until the stream ends), so the bound covers sockets and
/// buffers, not only requests waiting for headers. Concurrent identical
/// requests are merged before they take a slot (`coalesce`).
#[derive(Debug)]
pub struct FetchSlots {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
    /// What a blob body must bring to keep holding its slot.
    pub blob_rate: BlobRate,
}

/// One held upstream fetch slot; released on drop.
#[derive(Debug)]
pub struct FetchSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl FetchSlots {
    pub fn new(max: usize, wait: Duration) -> FetchSlots {
        FetchSlots { slots: Arc::new(Semaphore::new(max)), max, wait, blob_rate: Limits::default().blob_rate }
    }

    /// The slots of `limits`, with its blob rate.
    pub fn of(limits: &Limits) -> FetchSlots {
        FetchSlots {
            blob_rate: limits.blob_rate,
            ..FetchSlots::new(limits.max_upstream_fetches, limits.upstream_fetch_wait)
        }
    }

    /// A slot, waiting at most `upstream_fetch_wait_secs` for one.
    pub async fn take(&self) -> Result<FetchSlot, UpstreamError> {
        let acquired = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        match acquired {
            Ok(Ok(permit)) => Ok(FetchSlot(permit)),
            // Timed out, or closed (which this code never does).
            _ => {
                count_hit("max_upstream_fetches");
                Err(UpstreamError::Saturated { max: self.max })
            }
        }
    }
}

impl Default for FetchSlots {
    fn default() -> Self {
        FetchSlots::of(&Limits::default())
    }
}

/// `upstream_blob_min_bytes_per_sec` over `upstream_blob_rate_window_secs`:
/// each window of time spent waiting for an upstream blob body must bring
/// at least `min_bytes_per_sec × window` bytes.
///
/// Only the time sigmirror waits on upstream counts. A pass-through body
/// is read as fast as its client reads it, and a slow client must not get
/// upstream cut off: while the consumer is not polling, the clock stands.
#[derive(Debug, Clone, Copy)]
pub struct BlobRate {
    pub min_bytes_per_sec: u64,
    pub window: Duration,
}

impl BlobRate {
    /// `body`, ended with `UpstreamError::TooSlow` at the first window that
    /// brought too little.
    pub fn enforce<S>(self, body: S) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send
    where
        S: Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin,
    {
        let need = self.min_bytes_per_sec.saturating_mul(self.window.as_secs());
        let start = Window { waited: Duration::ZERO, got: 0 };
        futures_util::stream::unfold(Some((body, start)), move |state| async move {
            let (mut body, mut w) = state?;
            loop {
                let waiting = tokio::time::Instant::now();
                let next = tokio::time::timeout(self.window.saturating_sub(w.waited), body.next()).await;
                w.waited += waiting.elapsed();
                let chunk = match next {
                    Ok(Some(Ok(chunk))) => chunk,
                    Ok(Some(Err(e))) => return Some((Err(e), None)),
                    Ok(None) => return None,
                    // The window ended with nothing more from upstream.
                    Err(_) => match w.check(need, self) {
                        Ok(fresh) => {
                            w = fresh;
                            continue;
                        }
                        Err(e) => return Some((Err(e), None)),
                    },
                };
                w.got += chunk.len() as u64;
                if w.waited < self.window {
                    return Some((Ok(chunk), Some((body, w))));
                }
                return match w.check(need, self) {
                    Ok(fresh) => Some((Ok(chunk), Some((body, fresh)))),
                    Err(e) => Some((Err(e), None)),
                };
            }
        })
    }
}

/// One window of a [`BlobRate`]: how long was waited, how much came.
#[derive(Debug, Clone, Copy)]
struct Window {
    waited: Duration,
    got: u64,
}

impl Window {
    /// At a window's end: a fresh window when enough came, else the error.
    fn check(self, need: u64, rate: BlobRate) -> Result<Window, UpstreamError> {
        if self.got >= need {
            return Ok(Window { waited: Duration::ZERO, got: 0 });
        }
        count_hit("upstream_blob_min_bytes_per_sec");
        Err(UpstreamError::TooSlow { got: self.got, secs: rate.window.as_secs(), min: rate.min_bytes_per_sec })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Checker, Config};

    /// The problems `[limits]` with `body` has, as `key: message`.
    fn problems(body: &str) -> Vec<String> {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r.example\"\n\
             url = \"https://r.example\"\n[limits]\n{body}\n"
        );
        let found = match Config::from_str(&text, Checker::new(Path::new("sigmirror.toml"))) {
            Ok((_, _, checker)) => checker.problems,
            Err(problems) => problems.0,
        };
        found.into_iter().filter(|p| p.key.starts_with("limits")).map(|p| format!("{}: {}", p.key, p.message)).collect()
    }

    #[test]
    fn omitted_limits_take_their_defaults_and_set_ones_are_kept() {
        let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[[upstream]]\nregistry = \"r.example\"\n\
                    url = \"https://r.example\"\n[limits]\nmax_connections = 7\n";
        let (config, _, _) = Config::from_str(text, Checker::new(Path::new("sigmirror.toml"))).unwrap();
        let l = &config.limits;
        assert_eq!((l.max_connections, l.max_header_bytes, l.max_upstream_fetches), (7, 32 << 10, 256));
        assert_eq!(l.header_read_timeout.as_secs(), 10);
        assert_eq!((l.idle_timeout.as_secs(), l.manifest_timeout.as_secs()), (60, 60));
        assert_eq!(l.upstream_fetch_wait.as_secs(), 10);
        assert_eq!((l.blob_rate.min_bytes_per_sec, l.blob_rate.window.as_secs()), (16 << 10, 30));
        assert!(problems("").is_empty(), "{:?}", problems(""));
    }

    #[test]
    fn zero_bounds_out_of_range_header_sizes_and_unknown_keys_are_problems() {
        let found = problems(
            "max_connections = 0\nheader_read_timeout_secs = 0\nidle_timeout_secs = 0\nmanifest_timeout_secs = 0\n\
             max_upstream_fetches = 0\nmax_header_bytes = 4096\nupstream_fetch_wait_secs = 0\n\
             upstream_blob_min_bytes_per_sec = 0\nupstream_blob_rate_window_secs = 0",
        );
        for key in [
            "max_connections",
            "header_read_timeout_secs",
            "idle_timeout_secs",
            "manifest_timeout_secs",
            "max_upstream_fetches",
            "upstream_blob_min_bytes_per_sec",
            "upstream_blob_rate_window_secs",
        ] {
            assert!(found.contains(&format!("limits.{key}: must be at least 1")), "{key}: {found:?}");
        }
        assert!(found.contains(&"limits.max_header_bytes: 4096 is outside 8192..=1048576".to_string()), "{found:?}");
        assert_eq!(found.len(), 8, "a zero wait is allowed (refuse at once): {found:?}");
        let found = problems("max_conections = 10");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("unknown key `max_conections`"), "{found:?}");
    }

    /// A stream of `chunk`-byte pieces, one every `every`, `n` of them.
    fn drip(
        chunk: usize,
        every: Duration,
        n: usize,
    ) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin {
        Box::pin(futures_util::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from(vec![7u8; chunk]))
        }))
    }

    use super::{BlobRate, Duration, Stream, StreamExt, UpstreamError};
    use bytes::Bytes;

    const RATE: BlobRate = BlobRate { min_bytes_per_sec: 1000, window: Duration::from_secs(2) };

    /// Reads `s` to its end: the bytes, and the error it ended with.
    async fn read_all(s: impl Stream<Item = Result<Bytes, UpstreamError>>) -> (usize, Option<UpstreamError>) {
        let mut s = std::pin::pin!(s);
        let mut n = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => n += b.len(),
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_blob_body_at_or_over_the_minimum_rate_streams_whole() {
        // 1000 B/s exactly, for 10 windows.
        let (n, err) = read_all(RATE.enforce(drip(100, Duration::from_millis(100), 200))).await;
        assert_eq!((n, err.map(|e| e.to_string())), (20_000, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_blob_body_is_cut_at_the_end_of_its_first_slow_window() {
        let started = tokio::time::Instant::now();
        // 640 B/s: fast enough for any read timeout, too slow for 1000 B/s.
        let (n, err) = read_all(RATE.enforce(drip(64, Duration::from_millis(100), 1000))).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!((1216..=1280).contains(&n), "{n} bytes passed before the cut");
        let message = err.expect("cut off").to_string();
        assert!(message.contains("in 2 s, under limits.upstream_blob_min_bytes_per_sec = 1000"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_is_cut_without_another_byte_and_a_slow_reader_is_not_blamed() {
        let stalled =
            futures_util::stream::iter([Ok(Bytes::from(vec![0u8; 5000]))]).chain(futures_util::stream::pending());
        let (n, err) = read_all(RATE.enforce(Box::pin(stalled))).await;
        assert_eq!(n, 5000);
        assert!(err.is_some(), "a stalled body ends in an error");
        // A reader that waits 10 s between reads of a body that is always
        // ready: only time spent waiting on upstream counts.
        let mut s = std::pin::pin!(RATE.enforce(drip(10, Duration::ZERO, 5)));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(s.next().await.is_some_and(|r| r.is_ok()));
        }
        assert!(s.next().await.is_none());
    }
}
