//! The two clocks of one connection: how long a request head has been
//! arriving (`header_read_timeout_secs`), and how long the connection has
//! had nothing in flight (`idle_timeout_secs`).
//!
//! hyper's own header timer is not used: it also runs while an HTTP/1.1
//! connection waits, idle, for its next request, so it would close every
//! kept-alive connection at the header timeout and count it as a slow
//! client. Here the header clock runs only from accept until the first head
//! is complete, and again from the first byte of each later head until that
//! head is complete. The socket is wrapped ([`Watched`]) to see those bytes
//! arrive. An HTTP/2 connection (its first bytes are the `PRI` preface) sends
//! frames between requests, so only the idle clock applies to it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
// tokio's clock, so the clocks can be tested on paused time.
use tokio::time::Instant;

/// What the clocks of one connection read.
pub struct Activity {
    /// Requests from head to response body dropped (sent whole, or
    /// abandoned): a blob streaming for minutes is not idle.
    in_flight: AtomicUsize,
    /// Since when nothing has been in flight.
    idle_since: Mutex<Instant>,
    /// Since when a request head has been arriving; `None` while no head is
    /// expected (a request is in flight, or the connection waits between
    /// requests).
    head_since: Mutex<Option<Instant>>,
    /// The connection speaks HTTP/2: no header clock.
    h2: AtomicBool,
    /// Wakes the header clock when a head starts or the protocol is known.
    changed: Notify,
}

/// A request in flight; dropped when its response body is.
pub struct InFlight(Arc<Activity>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Activity {
    /// A connection just accepted: its first head is expected from now.
    pub fn new() -> Arc<Activity> {
        let now = Instant::now();
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            head_since: Mutex::new(Some(now)),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// A request head is complete and its request starts.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        *lock(&self.head_since) = None;
        InFlight(self.clone())
    }

    /// Bytes arrived. With nothing in flight they begin the next head.
    fn arrived(&self) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut since = lock(&self.head_since);
        if since.is_none() {
            *since = Some(Instant::now());
            self.changed.notify_one();
        }
    }

    fn is_h2(&self) {
        self.h2.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Completes once a request head has been arriving for `timeout`.
    pub async fn head_too_slow(&self, timeout: Duration) {
        loop {
            let since = if self.h2.load(Ordering::SeqCst) { None } else { *lock(&self.head_since) };
            match since {
                Some(s) if s + timeout <= Instant::now() => return,
                Some(s) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(s + timeout) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                // `notify_one` keeps a wake-up for a waiter not yet waiting.
                None => self.changed.notified().await,
            }
        }
    }

    /// Completes once the connection has had no request in flight for
    /// `timeout`. Wakes at most once per `timeout` while requests run.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                timeout
            } else {
                let since = *lock(&self.idle_since);
                match (since + timeout).checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = lock(&self.0.idle_since);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// The HTTP/2 connection preface starts with these bytes; no HTTP/1.1
/// method does.
const H2_PREFIX: &[u8] = b"PRI";

/// A client socket whose reads are reported to its [`Activity`].
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    /// The connection's first bytes, until they say which protocol it is.
    prefix: Vec<u8>,
}

impl<I> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { io, activity, prefix: Vec::with_capacity(H2_PREFIX.len()) }
    }

    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.prefix.len() < H2_PREFIX.len() {
            let take = (H2_PREFIX.len() - self.prefix.len()).min(bytes.len());
            self.prefix.extend_from_slice(&bytes[..take]);
            if self.prefix == H2_PREFIX {
                self.activity.is_h2();
            }
        }
        self.activity.arrived();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_header_clock_runs_only_while_a_head_arrives() {
        let a = Activity::new();
        let timeout = Duration::from_secs(10);
        // From accept: nothing sent within the timeout is too slow.
        tokio::time::timeout(Duration::from_secs(11), a.head_too_slow(timeout)).await.expect("fires from accept");

        let a = Activity::new();
        let request = a.start();
        drop(request);
        // Waiting between requests: no clock, however long.
        assert!(tokio::time::timeout(Duration::from_secs(3600), a.head_too_slow(timeout)).await.is_err());
        // The first byte of the next head starts it.
        a.arrived();
        tokio::time::timeout(Duration::from_secs(11), a.head_too_slow(timeout)).await.expect("fires from the byte");

        // HTTP/2: no header clock at all.
        let a = Activity::new();
        let mut w = Watched::new(tokio::io::empty(), a.clone());
        w.saw(b"PR");
        w.saw(b"I * HTTP/2.0");
        assert!(tokio::time::timeout(Duration::from_secs(3600), a.head_too_slow(timeout)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_waits_for_the_last_response_body() {
        let a = Activity::new();
        let timeout = Duration::from_secs(60);
        let body = a.start();
        assert!(tokio::time::timeout(Duration::from_secs(600), a.idle_for(timeout)).await.is_err());
        drop(body);
        let waited = Instant::now();
        tokio::time::timeout(Duration::from_secs(61), a.idle_for(timeout)).await.expect("idle after the body");
        assert!(waited.elapsed() >= Duration::from_secs(59), "{:?}", waited.elapsed());
    }
}
