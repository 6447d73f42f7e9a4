//! The proxy's segments: a fixed set, checked out one per transfer from a freelist.
//!
//! A worker that needs a segment blocks on a condvar until one is free, so `-n` bounds the
//! shared memory in use however many clients arrive. A [`Lease`] returns its segment when
//! dropped. A segment whose transfer did not end at rest (client hung up, peer timed out,
//! protocol error) is never reused as it is: its semaphore counts are unknown and a late
//! writer may still hold it. The lease cancels it, wakes any writer blocked on it, unlinks
//! it and creates a fresh object under the same name. A late writer keeps its mapping of
//! the old object, so its bytes can never land in the next transfer.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::segment::{Segment, unlink_segment};

/// A fixed set of segments named `/NAME.seg.<pid>.<i>`.
pub struct SegmentPool {
    state: Mutex<PoolState>,
    available: Condvar,
    names: Vec<String>,
    segment_size: usize,
    slots: usize,
    next_generation: AtomicU64,
    /// Checkouts that had to wait for a free segment, and their total wait in microseconds.
    waits: AtomicU64,
    wait_micros: AtomicU64,
    /// Set by [`unlink_all`](SegmentPool::unlink_all): no segment is rebuilt after it, or
    /// it would be left in /dev/shm at exit.
    closed: AtomicBool,
}

struct PoolState {
    free: Vec<Segment>,
    /// Segments that exist (free or leased); drops when a rebuild fails.
    alive: usize,
}

/// Why no segment could be checked out.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckoutError {
    /// None became free within the wait.
    TimedOut,
    /// Every segment was lost to failed rebuilds (e.g. /dev/shm is full).
    NoSegments,
}

impl SegmentPool {
    /// Creates `count` segments of `size` bytes and `slots` slots, with `prefix` (see
    /// [`segment_prefix`](super::segment_prefix)) followed by our pid and an index.
    ///
    /// # Errors
    /// Whatever [`Segment::create`] returns for the first segment that fails; segments
    /// created before it are unlinked again.
    pub fn new(prefix: &str, count: usize, size: usize, slots: usize) -> io::Result<Arc<Self>> {
        let pid = std::process::id();
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}{pid}.{i}")).collect();
        let mut free = Vec::with_capacity(count);
        for name in &names {
            match Segment::create(name, size, slots) {
                Ok(seg) => free.push(seg),
                Err(e) => {
                    // Those made already go again: a proxy that cannot start leaves nothing.
                    for seg in free.drain(..) {
                        let _ = unlink_segment(seg.name());
                    }
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(SegmentPool {
            state: Mutex::new(PoolState { free, alive: count }),
            available: Condvar::new(),
            names,
            segment_size: size,
            slots,
            // Seeded from the clock, so a cache that still maps an object of an earlier
            // proxy of the same name and pid cannot mistake it for one of ours; never 0,
            // which the cache refuses (a fresh segment carries it until its first checkout).
            next_generation: AtomicU64::new(clock_seed()),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    /// Takes a free segment, waiting at most `wait` for one, and starts a new generation
    /// on it.
    pub fn checkout(self: &Arc<Self>, wait: Duration) -> Result<Lease, CheckoutError> {
        let started = Instant::now();
        let deadline = started + wait;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut waited = false;
        let seg = loop {
            if let Some(seg) = state.free.pop() {
                break seg;
            }
            if state.alive == 0 {
                return Err(CheckoutError::NoSegments);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CheckoutError::TimedOut);
            }
            waited = true;
            state = self
                .available
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(state);
        if waited {
            self.waits.fetch_add(1, Ordering::Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        seg.begin_transfer(generation);
        Ok(Lease {
            pool: Arc::clone(self),
            seg: Some(seg),
            generation,
            at_rest: false,
        })
    }

    /// Checkouts that had to wait for a segment, and the microseconds they waited in all.
    pub fn wait_stats(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.wait_micros.load(Ordering::Relaxed),
        )
    }

    /// Unlinks every segment name, leased or not. For shutdown: a leased segment's memory
    /// stays mapped for whoever holds it, but nothing is left in /dev/shm.
    pub fn unlink_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for name in &self.names {
            if let Err(e) = unlink_segment(name) {
                log::warn!("unlinking {name}: {e}");
            }
        }
    }

    fn give_back(&self, seg: Segment, at_rest: bool) {
        let seg = if at_rest || self.closed.load(Ordering::SeqCst) {
            Some(seg)
        } else {
            self.rebuild(seg)
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match seg {
            Some(seg) => state.free.push(seg),
            None => state.alive -= 1,
        }
        drop(state);
        // notify_all on loss so that waiters can see `alive` reach zero.
        self.available.notify_all();
    }

    fn rebuild(&self, seg: Segment) -> Option<Segment> {
        // Stop a peer that is still on the old object: it checks `cancelled` after every
        // wait, and these posts end a writer's wait for `free` or a reader's for `ready`.
        seg.cancel();
        let _ = seg.free().post();
        let _ = seg.ready().post();
        let name = seg.name().to_owned();
        drop(seg); // unmaps
        if let Err(e) = unlink_segment(&name) {
            log::warn!("unlinking {name} to rebuild it: {e}");
        }
        match Segment::create(&name, self.segment_size, self.slots) {
            Ok(seg) => Some(seg),
            Err(e) => {
                log::error!("could not rebuild segment {name}: {e}; one segment fewer");
                None
            }
        }
    }
}

/// One checked-out segment. Dropping it gives the segment back: as it is if
/// [`set_at_rest`](Lease::set_at_rest) was called, rebuilt otherwise.
pub struct Lease {
    pool: Arc<SegmentPool>,
    seg: Option<Segment>,
    generation: u64,
    at_rest: bool,
}

impl Lease {
    pub fn segment(&self) -> &Segment {
        self.seg.as_ref().expect("segment present until drop")
    }

    /// The number this transfer's request must carry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether [`set_at_rest`](Self::set_at_rest) was called.
    pub fn is_at_rest(&self) -> bool {
        self.at_rest
    }

    /// Declares that the transfer ended with both semaphores at rest and no writer left
    /// (or that no request was ever sent), so the segment can be reused without a rebuild.
    pub fn set_at_rest(&mut self) {
        self.at_rest = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take() {
            self.pool.give_back(seg, self.at_rest);
        }
    }
}

/// A starting generation from the clock's nanoseconds: far from any an earlier process
/// used, and never 0.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos.max(1)
}
