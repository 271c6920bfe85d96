//! Single-flight fetches (concurrent readers of one chunk share one fetch) and a small
//! blocking semaphore bounding parallel registry requests.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// The shared outcome of one chunk fetch: the verified bytes or the error's text (errors
/// are not `Clone`; waiters rebuild a typed error from it).
pub type Outcome = Result<Arc<[u8]>, String>;

#[derive(Default)]
pub struct Flight {
    done: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Flight {
    pub fn wait(&self) -> Outcome {
        let mut g = self.done.lock().unwrap();
        loop {
            if let Some(o) = g.as_ref() {
                return o.clone();
            }
            g = self.cv.wait(g).unwrap();
        }
    }

    fn complete(&self, outcome: Outcome) {
        *self.done.lock().unwrap() = Some(outcome);
        self.cv.notify_all();
    }
}

/// Either this reader fetches the chunk, or it waits for the reader who does.
pub enum Claim {
    Owner,
    Waiter(Arc<Flight>),
}

#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Flights {
    pub fn claim(&self, digest: &str) -> Claim {
        let mut m = self.map.lock().unwrap();
        match m.get(digest) {
            Some(f) => Claim::Waiter(f.clone()),
            None => {
                m.insert(digest.to_string(), Arc::new(Flight::default()));
                Claim::Owner
            }
        }
    }

    /// Ends the owner's flight for `digest`, waking its waiters.
    pub fn finish(&self, digest: &str, outcome: Outcome) {
        if let Some(f) = self.map.lock().unwrap().remove(digest) {
            f.complete(outcome);
        }
    }
}

/// The outcome of a flight its fetcher let go without trying (an early error elsewhere, a
/// read-ahead that broke off): a waiter seeing it fetches the chunk itself.
pub const ABANDONED: &str = "the reader fetching this chunk gave up";

/// A counting semaphore for blocking threads.
pub struct Semaphore {
    free: Mutex<usize>,
    /// Permits background work leaves to on-demand fetches.
    reserve: usize,
    cv: Condvar,
}

pub struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    pub fn new(n: usize) -> Semaphore {
        let n = n.max(1);
        Semaphore {
            free: Mutex::new(n),
            reserve: if n > 1 { n.div_ceil(4) } else { 0 },
            cv: Condvar::new(),
        }
    }

    /// A permit for background work (read-ahead streams, prefetch): taken only while more
    /// than a quarter of the permits are free, so on-demand fetches always find one.
    pub fn acquire_low(&self) -> Permit<'_> {
        let mut g = self.free.lock().unwrap();
        while *g <= self.reserve {
            g = self.cv.wait(g).unwrap();
        }
        *g -= 1;
        Permit(self)
    }

    pub fn acquire(&self) -> Permit<'_> {
        let mut g = self.free.lock().unwrap();
        while *g == 0 {
            g = self.cv.wait(g).unwrap();
        }
        *g -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        // Waiters of both kinds share the condvar: wake all so the right one proceeds.
        self.0.cv.notify_all();
    }
}

/// The flights one reader owns; any it has not finished when dropped (an early error, a
/// panic, a thread that never started or a runtime shut down under it) are finished with
/// [`ABANDONED`], so no waiter blocks forever. Whoever claims a flight puts it in an
/// `Owned` at once and hands the guard on with the work (it is `Send + 'static`).
pub struct Owned {
    flights: Arc<Flights>,
    pending: Vec<String>,
}

impl Owned {
    pub fn new(flights: &Arc<Flights>) -> Self {
        Owned {
            flights: flights.clone(),
            pending: Vec::new(),
        }
    }

    /// A guard owning `digests`, claimed by the caller.
    pub fn of<'d>(flights: &Arc<Flights>, digests: impl IntoIterator<Item = &'d str>) -> Self {
        let mut o = Owned::new(flights);
        o.pending.extend(digests.into_iter().map(str::to_string));
        o
    }

    /// Gives the flights up to a keeper that finishes or abandons them itself (the
    /// read-ahead queue), without finishing them here.
    pub fn hand_over(mut self) {
        self.pending.clear();
    }

    pub fn own(&mut self, digest: &str) {
        self.pending.push(digest.to_string());
    }

    pub fn finish(&mut self, digest: &str, outcome: Outcome) {
        self.pending.retain(|d| d != digest);
        self.flights.finish(digest, outcome);
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for d in self.pending.drain(..) {
            self.flights.finish(&d, Err(ABANDONED.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_share_the_owners_outcome_and_abandoned_flights_fail() {
        let flights = Arc::new(Flights::default());
        assert!(matches!(flights.claim("a"), Claim::Owner));
        let Claim::Waiter(f) = flights.claim("a") else {
            panic!("second claim must wait")
        };
        let waiter = std::thread::spawn(move || f.wait());
        flights.finish("a", Ok(Arc::from(&b"xyz"[..])));
        assert_eq!(&*waiter.join().unwrap().unwrap(), b"xyz");
        // The next claim of the same digest starts a new flight.
        assert!(matches!(flights.claim("a"), Claim::Owner));
        flights.finish("a", Ok(Arc::from(&b""[..])));

        let waiting = {
            let mut mine = Owned::new(&flights);
            assert!(matches!(flights.claim("b"), Claim::Owner));
            mine.own("b");
            let Claim::Waiter(f) = flights.claim("b") else {
                panic!()
            };
            f
            // `mine` is dropped here without finishing "b".
        };
        assert!(waiting.wait().is_err());
    }

    #[test]
    fn background_permits_leave_a_reserve_for_on_demand_fetches() {
        let sem = Arc::new(Semaphore::new(4));
        let low: Vec<_> = (0..3).map(|_| sem.acquire_low()).collect();
        // The fourth permit is the reserve: on-demand gets it, background waits.
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = sem.clone();
        let waiter = std::thread::spawn(move || {
            let _p = s2.acquire_low();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        let on_demand = sem.acquire();
        drop(on_demand);
        drop(low);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
