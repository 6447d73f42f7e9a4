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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::segment::{Segment, unlink_segment};

/// A fixed set of segments named `/NAME.seg.<pid>.<i>`.
pub struct SegmentPool {
    state: Mutex<PoolState>,
    available: Condvar,
    /// One place per segment index, whether the segment is free or leased.
    places: Vec<Place>,
    segment_size: usize,
    slots: usize,
    next_generation: AtomicU64,
    /// Checkouts that had to wait for a free segment, and their total wait in microseconds.
    waits: AtomicU64,
    wait_micros: AtomicU64,
    /// Set by [`unlink_all`](SegmentPool::unlink_all): no segment is rebuilt after it, or
    /// it would be left in /dev/shm at exit.
    closed: AtomicBool,
    /// The origin of [`Activity::since`].
    epoch: Instant,
}

struct PoolState {
    /// Indices of the segments at rest.
    free: Vec<usize>,
    /// Segments that exist (free or leased); drops when a rebuild fails.
    alive: usize,
    /// Checkouts waiting for a segment: a give-back wakes them only if there are any, as
    /// a notify with nobody waiting is still a system call, on every hit.
    waiting: usize,
}

/// One segment index: its name, its current object (`None` once a rebuild failed), and
/// what it is doing.
struct Place {
    name: String,
    seg: Mutex<Option<Arc<Segment>>>,
    activity: Activity,
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
        let mut places = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{prefix}{pid}.{i}");
            match Segment::create(&name, size, slots) {
                Ok(seg) => places.push(Place {
                    name,
                    seg: Mutex::new(Some(Arc::new(seg))),
                    activity: Activity::default(),
                }),
                Err(e) => {
                    // Those made already go again: a proxy that cannot start leaves nothing.
                    for place in &places {
                        let _ = unlink_segment(&place.name);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(SegmentPool {
            state: Mutex::new(PoolState {
                free: (0..count).rev().collect(),
                alive: count,
                waiting: 0,
            }),
            available: Condvar::new(),
            places,
            segment_size: size,
            slots,
            // Seeded from the clock, so a cache that still maps an object of an earlier
            // proxy of the same name and pid cannot mistake it for one of ours; never 0,
            // which the cache refuses (a fresh segment carries it until its first checkout).
            next_generation: AtomicU64::new(clock_seed()),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            epoch: Instant::now(),
        }))
    }

    /// Takes a free segment, waiting at most `wait` for one, and starts a new generation
    /// on it for a call about `key` (shown in the live view).
    pub fn checkout(self: &Arc<Self>, wait: Duration, key: &str) -> Result<Lease, CheckoutError> {
        let started = Instant::now();
        let deadline = started + wait;
        let mut state = lock(&self.state);
        let mut waited = false;
        let index = loop {
            if let Some(index) = state.free.pop() {
                break index;
            }
            if state.alive == 0 {
                return Err(CheckoutError::NoSegments);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CheckoutError::TimedOut);
            }
            waited = true;
            state.waiting += 1;
            state = self
                .available
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        };
        drop(state);
        if waited {
            self.waits.fetch_add(1, Ordering::Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        }
        let place = &self.places[index];
        let seg = lock(&place.seg)
            .clone()
            .expect("a free index has a segment");
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        seg.begin_transfer(generation);
        place.activity.begin(key, self.now());
        Ok(Lease {
            pool: Arc::clone(self),
            index,
            seg: Some(seg),
            generation,
            at_rest: false,
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Checkouts that had to wait for a segment, and the microseconds they waited in all.
    pub fn wait_stats(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.wait_micros.load(Ordering::Relaxed),
        )
    }

    /// What each segment is doing now, in index order: a picture for the live view (each
    /// field is read on its own, while the transfers go on).
    pub fn activity(&self) -> Vec<SegmentActivity> {
        let now = self.now();
        self.places
            .iter()
            .enumerate()
            .map(|(index, place)| {
                let seg = lock(&place.seg).clone();
                let a = &place.activity;
                let state = a.state();
                let busy = state != SegmentState::Idle;
                let value = |sem: Option<u32>| sem.unwrap_or(0);
                SegmentActivity {
                    index,
                    name: place.name.clone(),
                    state,
                    key: busy.then(|| lock(&a.key).clone()),
                    generation: seg.as_ref().map_or(0, |s| s.generation()),
                    bytes: if busy {
                        a.bytes.load(Ordering::Relaxed)
                    } else {
                        0
                    },
                    total: Some(a.total.load(Ordering::Relaxed)).filter(|&t| busy && t != u64::MAX),
                    slots: self.slots as u32,
                    ready: value(seg.as_ref().and_then(|s| s.ready().value().ok())),
                    free: value(seg.as_ref().and_then(|s| s.free().value().ok())),
                    since: busy.then(|| {
                        Duration::from_micros(now.saturating_sub(a.since.load(Ordering::Relaxed)))
                    }),
                }
            })
            .collect()
    }

    /// Unlinks every segment name, leased or not. For shutdown: a leased segment's memory
    /// stays mapped for whoever holds it, but nothing is left in /dev/shm.
    pub fn unlink_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for place in &self.places {
            if let Err(e) = unlink_segment(&place.name) {
                log::warn!("unlinking {}: {e}", place.name);
            }
        }
    }

    fn give_back(&self, index: usize, seg: Arc<Segment>, at_rest: bool) {
        let place = &self.places[index];
        place.activity.end();
        let kept = at_rest || self.closed.load(Ordering::SeqCst) || self.rebuild(place, seg);
        let mut state = lock(&self.state);
        if kept {
            state.free.push(index);
        } else {
            state.alive -= 1;
        }
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            // All, not one: on a loss every waiter must see whether `alive` reached zero.
            self.available.notify_all();
        }
    }

    /// Replaces the segment at `place` with a fresh object; false if that failed (the
    /// place is then empty for good).
    fn rebuild(&self, place: &Place, seg: Arc<Segment>) -> bool {
        // Stop a peer that is still on the old object: it checks `cancelled` after every
        // wait, and these posts end a writer's wait for `free` or a reader's for `ready`.
        seg.cancel();
        let _ = seg.free().post();
        let _ = seg.ready().post();
        drop(seg);
        let mut current = lock(&place.seg);
        // Unmapped once the live view lets go of it too.
        *current = None;
        if let Err(e) = unlink_segment(&place.name) {
            log::warn!("unlinking {} to rebuild it: {e}", place.name);
        }
        match Segment::create(&place.name, self.segment_size, self.slots) {
            Ok(seg) => {
                *current = Some(Arc::new(seg));
                true
            }
            Err(e) => {
                log::error!(
                    "could not rebuild segment {}: {e}; one segment fewer",
                    place.name
                );
                false
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a segment is doing, as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SegmentState {
    /// At rest in the pool.
    Idle = 0,
    /// A call went out; no head has come back yet.
    Waiting = 1,
    /// The cache is writing an answer and the proxy's pool thread reads it.
    Receiving = 2,
    /// A connection sends an answer from the segment straight to its client.
    Sending = 3,
    /// The proxy writes a response into the cache (a fill).
    Storing = 4,
}

impl SegmentState {
    /// Its name in the live view.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Idle => "idle",
            SegmentState::Waiting => "waiting",
            SegmentState::Receiving => "receiving",
            SegmentState::Sending => "sending",
            SegmentState::Storing => "storing",
        }
    }

    fn from_u8(v: u8) -> SegmentState {
        match v {
            1 => SegmentState::Waiting,
            2 => SegmentState::Receiving,
            3 => SegmentState::Sending,
            4 => SegmentState::Storing,
            _ => SegmentState::Idle,
        }
    }
}

/// One segment in the live view.
#[derive(Debug, Clone)]
pub struct SegmentActivity {
    pub index: usize,
    pub name: String,
    pub state: SegmentState,
    /// The key of the call, while there is one.
    pub key: Option<String>,
    pub generation: u64,
    /// Bytes of the transfer's stream (header block and body) moved so far.
    pub bytes: u64,
    /// Bytes of the whole stream, once the head has said.
    pub total: Option<u64>,
    pub slots: u32,
    /// The semaphores' counts, read one after the other (`sem_getvalue`).
    pub ready: u32,
    pub free: u32,
    /// How long the current call has run.
    pub since: Option<Duration>,
}

/// What one segment is doing: written by whoever holds its lease, read by the live view.
/// Plain atomics and a short lock, so that keeping it costs the hit path next to nothing.
#[derive(Debug, Default)]
pub struct Activity {
    state: AtomicU8,
    key: Mutex<String>,
    bytes: AtomicU64,
    /// `u64::MAX`: not known yet.
    total: AtomicU64,
    /// Microseconds since the pool's epoch when the call began.
    since: AtomicU64,
}

impl Activity {
    fn begin(&self, key: &str, now: u64) {
        {
            let mut held = lock(&self.key);
            held.clear();
            held.push_str(key);
        }
        self.bytes.store(0, Ordering::Relaxed);
        self.total.store(u64::MAX, Ordering::Relaxed);
        self.since.store(now, Ordering::Relaxed);
        self.set(SegmentState::Waiting);
    }

    fn end(&self) {
        self.set(SegmentState::Idle);
    }

    fn state(&self) -> SegmentState {
        SegmentState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set(&self, state: SegmentState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The head has said how long the stream is.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// `n` more bytes of the stream moved.
    pub fn moved(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One checked-out segment. Dropping it gives the segment back: as it is if
/// [`set_at_rest`](Lease::set_at_rest) was called, rebuilt otherwise.
pub struct Lease {
    pool: Arc<SegmentPool>,
    index: usize,
    seg: Option<Arc<Segment>>,
    generation: u64,
    at_rest: bool,
}

impl Lease {
    pub fn segment(&self) -> &Segment {
        self.seg.as_ref().expect("segment present until drop")
    }

    /// What the segment is doing, for the live view.
    pub fn activity(&self) -> &Activity {
        &self.pool.places[self.index].activity
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
            self.pool.give_back(self.index, seg, self.at_rest);
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
