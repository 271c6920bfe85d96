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

/// A counting semaphore for blocking threads.
pub struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

pub struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    pub fn new(n: usize) -> Semaphore {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
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
        self.0.cv.notify_one();
    }
}
