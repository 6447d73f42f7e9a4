//! Request coalescing: concurrent misses for one key make one fetch from secondary storage.
//!
//! The first miss for a key becomes the leader: it fetches, serves its client and fills
//! the cache. Misses that arrive while it does wait for it (as nginx's `proxy_cache_lock`
//! and Varnish's waiting list do) and then ask the cache again. A follower that waits
//! longer than its timeout fetches on its own, so a stuck leader cannot stall everyone.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The fetches in flight, by key.
#[derive(Default)]
pub struct Coalescer {
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

/// One fetch in flight.
#[derive(Default)]
pub struct Flight {
    landed: Mutex<bool>,
    cond: Condvar,
}

/// What a miss should do.
pub enum Role {
    /// Fetch and fill; the followers wake when the ticket is dropped.
    Leader(Ticket),
    /// Wait for the leader.
    Follower(Arc<Flight>),
}

/// The leader's claim on a key. Dropping it, whether the fill worked or not, releases the
/// followers.
pub struct Ticket {
    coalescer: Arc<Coalescer>,
    key: String,
    flight: Arc<Flight>,
}

impl Coalescer {
    pub fn new() -> Arc<Coalescer> {
        Arc::default()
    }

    /// Joins the fetch for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key) {
            return Role::Follower(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        flights.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(Ticket {
            coalescer: Arc::clone(self),
            key: key.to_owned(),
            flight,
        })
    }
}

impl Flight {
    /// Waits until the leader is done, at most `timeout`. Returns whether it landed.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut landed = self.landed.lock().unwrap_or_else(|e| e.into_inner());
        while !*landed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            landed = self
                .cond
                .wait_timeout(landed, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.coalescer
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        *self.flight.landed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_and_followers_wake_when_it_is_done() {
        let c = Coalescer::new();
        let Role::Leader(ticket) = c.join("/k") else {
            panic!("first is the leader")
        };
        let Role::Follower(flight) = c.join("/k") else {
            panic!("second follows")
        };
        assert!(matches!(c.join("/other"), Role::Leader(_)));
        assert!(!flight.wait(Duration::from_millis(1)), "not landed yet");
        let waiter = std::thread::spawn(move || flight.wait(Duration::from_secs(30)));
        drop(ticket);
        assert!(waiter.join().unwrap());
        assert!(
            matches!(c.join("/k"), Role::Leader(_)),
            "a new miss starts a new fetch"
        );
    }
}
