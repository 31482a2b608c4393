//! Single-flight: concurrent callers with the same key share one run of a
//! future, and all of them get its result. Nothing is kept once the run is
//! over, so an error reaches everyone who was waiting for it and is never
//! handed to a caller who comes later.
//!
//! The caches (`moka`'s `try_get_with`) already coalesce what they keep;
//! this is for upstream requests whose answer must not outlive them: a tag
//! resolution (the tag may move), a signature tag, a referrers listing.
//!
//! Each caller brings its own future and only one of them is polled, so the
//! futures may borrow from their caller. If the caller whose future is
//! running goes away (its client disconnected), one of the waiting callers
//! runs its own future instead (`tokio::sync::OnceCell::get_or_init`), so a
//! disconnect never leaves the others waiting for nothing.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Runs in flight, by key. An entry lives only while some caller holds it,
/// so the map never holds more entries than there are requests being served.
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight { flights: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// The result of `run`, or of the run already in flight for `key`.
    pub async fn run<F: Future<Output = V>>(&self, key: K, run: F) -> V {
        let cell = self.lock().entry(key.clone()).or_default().clone();
        let ticket = Ticket { flights: self, key, cell: Some(cell) };
        let cell = ticket.cell.as_ref().expect("held until drop");
        let answer = cell.get_or_init(|| run).await.clone();
        answer
    }

    /// How many keys have a run in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        // A panic elsewhere while the lock was held leaves a map that is still
        // consistent (every change is one insert or remove); keep using it.
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One caller's hold on a flight. Dropped when the caller has its answer or
/// goes away; the last one out, or the first out once there is an answer,
/// removes the entry, so the next caller starts a new run.
struct Ticket<'a, K: Hash + Eq, V> {
    flights: &'a SingleFlight<K, V>,
    key: K,
    cell: Option<Arc<OnceCell<V>>>,
}

impl<K: Hash + Eq, V> Drop for Ticket<'_, K, V> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else { return };
        let mut flights = self.flights.flights.lock().unwrap_or_else(|p| p.into_inner());
        let ours = flights.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &cell));
        // Our clone and the map's: nobody else is waiting. Counted, and our
        // clone dropped, under the lock, as every other clone is taken.
        let last = Arc::strong_count(&cell) <= 2;
        if ours && (cell.initialized() || last) {
            flights.remove(&self.key);
        }
        drop(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn fifty_concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<&str, Result<u32, String>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "a finished run is forgotten");
    }

    #[tokio::test]
    async fn an_error_reaches_every_waiter_and_the_next_caller_runs_again() {
        let flights = Arc::new(SingleFlight::<&str, Result<u32, String>>::default());
        let failing = |flights: Arc<SingleFlight<&'static str, Result<u32, String>>>| async move {
            flights
                .run("k", async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Err("upstream down".to_string())
                })
                .await
        };
        let (a, b) = tokio::join!(failing(flights.clone()), failing(flights.clone()));
        assert_eq!(a, Err("upstream down".into()));
        assert_eq!(b, Err("upstream down".into()));
        assert_eq!(flights.run("k", async { Ok(1) }).await, Ok(1), "the error was kept");
    }

    #[tokio::test]
    async fn different_keys_run_separately() {
        let flights = SingleFlight::<u8, u8>::default();
        let (a, b) = tokio::join!(flights.run(1, async { 1 }), flights.run(2, async { 2 }));
        assert_eq!((a, b), (1, 2));
    }

    #[tokio::test]
    async fn when_the_running_caller_goes_away_a_waiting_one_runs_instead() {
        let flights = Arc::new(SingleFlight::<&str, u32>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", std::future::pending()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", async { 5 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), follower).await.expect("follower was left waiting");
        assert_eq!(got.unwrap(), 5);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_alone_leaves_nothing_behind() {
        let flights = SingleFlight::<&str, u32>::default();
        let r = tokio::time::timeout(Duration::from_millis(20), flights.run("k", std::future::pending())).await;
        assert!(r.is_err());
        assert_eq!(flights.in_flight(), 0);
    }
}
