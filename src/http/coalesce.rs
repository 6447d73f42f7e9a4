//! Request coalescing: concurrent misses for one key make one fetch from secondary storage.
//!
//! The first miss for a key becomes the leader: it fetches, serves its client and fills
//! the cache. Misses that arrive while it does wait for it (as nginx's `proxy_cache_lock`
//! and Varnish's waiting list do) and then ask the cache again. A follower that waits
//! longer than its timeout fetches on its own, so a stuck leader cannot stall everyone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The fetches in flight, and those that landed a moment ago, by key.
pub struct Coalescer {
    flights: Mutex<Flights>,
    /// How long a landed fetch still counts (see [`join`](Coalescer::join)).
    window: Duration,
}

#[derive(Default)]
struct Flights {
    /// In flight (not landed), or landed less than `window` ago (with when).
    by_key: HashMap<String, (Arc<Flight>, Option<Instant>)>,
    /// The landed ones, oldest first, to forget them once `window` has passed.
    landed: VecDeque<(Instant, String, Arc<Flight>)>,
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
    /// Wait for the leader (who may be done already), then ask the cache again.
    Follower(Arc<Flight>),
}

/// The leader's claim on a key. Dropping it, whether the fill worked or not, releases the
/// followers.
pub struct Ticket {
    coalescer: Arc<Coalescer>,
    key: String,
    flight: Arc<Flight>,
}

/// How long a landed fetch makes a new miss of its key ask the cache again instead of
/// fetching: longer than a request takes from its miss in the cache to its `join` on a
/// busy machine.
pub const LANDED_WINDOW: Duration = Duration::from_secs(1);

impl Coalescer {
    pub fn new() -> Arc<Coalescer> {
        Coalescer::with_window(LANDED_WINDOW)
    }

    /// A coalescer whose landed fetches count for `window`.
    pub fn with_window(window: Duration) -> Arc<Coalescer> {
        Arc::new(Coalescer {
            flights: Mutex::default(),
            window,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Flights> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the fetch for `key`, or starts one: for a request that found the object
    /// expired, whose check with the source one request makes for all.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        self.join_since(key, None)
    }

    /// Joins the fetch for `key`, or starts one, for a request the cache told "missing"
    /// when it asked at `asked`. A fetch of `key` that landed since then also makes it a
    /// follower, one whose wait is over at once: the request was told "missing" before that
    /// fetch filled the cache and only joins now, so it should ask the cache again rather
    /// than fetch the object a second time. (Landings are remembered for the window only:
    /// a request slower than that fetches again.)
    pub fn join_miss(self: &Arc<Self>, key: &str, asked: Instant) -> Role {
        self.join_since(key, Some(asked))
    }

    /// Joins a fetch in flight, or one that landed after `landed_since` if given.
    fn join_since(self: &Arc<Self>, key: &str, landed_since: Option<Instant>) -> Role {
        let mut flights = self.lock();
        flights.forget_landed_before(Instant::now().checked_sub(self.window));
        if let Some((flight, landed)) = flights.by_key.get(key) {
            let counts = match (landed, landed_since) {
                (None, _) => true,
                (Some(at), Some(since)) => *at >= since,
                (Some(_), None) => false,
            };
            if counts {
                return Role::Follower(Arc::clone(flight));
            }
        }
        let flight = Arc::new(Flight::default());
        flights
            .by_key
            .insert(key.to_owned(), (Arc::clone(&flight), None));
        Role::Leader(Ticket {
            coalescer: Arc::clone(self),
            key: key.to_owned(),
            flight,
        })
    }
}

impl Flights {
    /// Forgets the fetches that landed before `horizon` (all of them for `None`: the
    /// window reaches back before the clock's start).
    fn forget_landed_before(&mut self, horizon: Option<Instant>) {
        while let Some((at, _, _)) = self.landed.front()
            && horizon.is_some_and(|h| *at < h)
        {
            let (_, key, flight) = self.landed.pop_front().expect("looked at it");
            // Only if no newer fetch of the key took its place.
            if self
                .by_key
                .get(&key)
                .is_some_and(|(current, _)| Arc::ptr_eq(current, &flight))
            {
                self.by_key.remove(&key);
            }
        }
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
        let now = Instant::now();
        {
            let mut flights = self.coalescer.lock();
            if self.coalescer.window.is_zero() {
                flights.by_key.remove(&self.key);
            } else {
                flights
                    .by_key
                    .insert(self.key.clone(), (Arc::clone(&self.flight), Some(now)));
                let landed = (now, self.key.clone(), Arc::clone(&self.flight));
                flights.landed.push_back(landed);
            }
        }
        *self.flight.landed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_and_followers_wake_when_it_is_done() {
        // No window: a landed fetch is forgotten at once.
        let c = Coalescer::with_window(Duration::ZERO);
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

    #[test]
    fn a_miss_just_after_a_landing_asks_the_cache_again() {
        let c = Coalescer::with_window(Duration::from_secs(3600));
        let asked = Instant::now();
        let Role::Leader(ticket) = c.join("/k") else {
            panic!("first is the leader")
        };
        drop(ticket);
        // Told "missing" before the fill landed, it joins after: it follows a fetch that is
        // over, and asks the cache again instead of fetching.
        let Role::Follower(flight) = c.join_miss("/k", asked) else {
            panic!("a miss told before the landing follows the landed fetch")
        };
        assert!(flight.wait(Duration::ZERO), "its wait is over at once");
        assert!(matches!(c.join_miss("/other", asked), Role::Leader(_)));
        // One told "missing" after the landing (the fill did not stay) fetches again.
        let Role::Leader(again) = c.join_miss("/k", Instant::now()) else {
            panic!("a later miss leads")
        };
        drop(again);
        // An expired object found now is checked again: that is a new fetch.
        assert!(matches!(c.join("/k"), Role::Leader(_)));
    }

    #[test]
    fn landed_fetches_are_forgotten_after_the_window() {
        let c = Coalescer::with_window(Duration::from_millis(1));
        let asked = Instant::now();
        drop(c.join("/k"));
        let deadline = Instant::now() + Duration::from_secs(10);
        // The window is a time: once it has passed, a miss leads again.
        let led = loop {
            match c.join_miss("/k", asked) {
                Role::Leader(ticket) => break Some(ticket),
                Role::Follower(_) if Instant::now() < deadline => std::thread::yield_now(),
                Role::Follower(_) => break None,
            }
        };
        assert!(led.is_some(), "the landed fetch was forgotten");
        assert!(c.lock().landed.is_empty(), "what passed the window is gone");
    }
}
