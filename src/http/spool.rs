//! The hand-over of one response from the worker that produces it to the connection
//! thread that sends it.
//!
//! Why it exists: a worker that streamed a body straight to its client would be held, with
//! the segment and the cache worker behind it, for as long as that client takes to read.
//! A handful of slow readers would then hold every worker. Instead the worker hands the
//! body over here and returns to the pool; the connection's own thread writes the bytes
//! at whatever pace the client reads. What is handed over, in order ([`Item`]):
//!
//! - bytes already in memory ([`Producer::push`]): a small answer copied out of its
//!   segment, or a fill's bytes as they come from secondary storage;
//! - a body still in its segment ([`Producer::hold`], [`Held`]): the connection copies it
//!   straight to the socket while its client keeps up, and parks the rest in memory and
//!   gives the segment back as soon as a write lags for [`LAG`];
//! - a reader that holds no worker ([`Producer::stream`]): a file, an origin's response;
//! - a job that produces the rest later, on a worker ([`Producer::resume`]).
//!
//! A producer that pushes stays at most [`RUN_AHEAD`] bytes ahead of a connection that
//! keeps taking them, so the bytes are still in the CPU's caches when they are written;
//! body buffers are recycled ([`buffer`]). Only when the connection falls behind for
//! [`LAG`] does the producer stop waiting for it.
//!
//! Memory is bounded by a [`Budget`] shared by all responses: each response may always
//! hold [`ALLOWANCE`] bytes not yet sent (so small answers never wait for memory), and
//! draws on the budget beyond that. When the budget is spent, [`Producer::push`] says so,
//! and the worker pauses its response instead of waiting: it leaves a way to get the
//! rest ([`Producer::resume`] or [`Producer::stream`]) and goes back to the pool. The
//! connection thread picks that up once its client has read what came before.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::body::Body;
use super::response::Head;

/// Bytes a response may hold in memory without drawing on the [`Budget`]: answers up to
/// this size are read out whole at once, whatever the budget.
pub const ALLOWANCE: usize = 64 * 1024;

/// How far ahead of its connection a worker runs while the connection keeps up.
pub const RUN_AHEAD: usize = 256 * 1024;

/// How long a worker waits for its connection to take bytes before it takes it for a
/// slow one and no longer waits: far longer than a socket write to a client that reads,
/// far shorter than anything a client could hold a segment for.
pub const LAG: Duration = Duration::from_millis(5);

/// Size of the recycled body buffers; [`buffer`] gives one.
pub const CHUNK: usize = 64 * 1024;

/// Recycled buffers kept (at most 4 MiB).
const KEPT_BUFFERS: usize = 64;

static BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer of [`CHUNK`] bytes' capacity, recycled when one is free: its pages are
/// already mapped and likely in cache.
pub fn buffer() -> Vec<u8> {
    let recycled = BUFFERS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    recycled.unwrap_or_else(|| Vec::with_capacity(CHUNK))
}

/// Gives a written buffer back for [`buffer`] to hand out again.
pub fn recycle(mut data: Vec<u8>) {
    if data.capacity() != CHUNK {
        return;
    }
    data.clear();
    let mut kept = BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() < KEPT_BUFFERS {
        kept.push(data);
    }
}

/// The memory that responses waiting for their clients may hold, beyond their
/// [`ALLOWANCE`].
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `n` bytes of the budget if there are that many left.
    pub fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub fn release(&self, n: u64) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// The most one response may take: a sixteenth, so that a few slow clients cannot
    /// take it all from everyone else.
    pub fn per_response(&self) -> u64 {
        self.limit / 16
    }

    /// Bytes taken now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// The rest of a paused response, run on a pool worker with a fresh [`Producer`].
pub type Resume = Box<dyn FnOnce(Producer) + Send>;

/// A body still in a shared-memory segment. The connection sends it straight out of the
/// segment's slots to its client's socket, as fast as the client takes the bytes, and the
/// segment is back in the pool when the last byte is out. If the client lags (a write blocks for [`LAG`]), the connection reads
/// what the budget allows of the rest into memory and [`release`](Held::release)s the
/// segment; what the budget could not take is asked for again once the client has caught
/// up. A slow client never holds a segment for long.
pub trait Held: io::Read + Send {
    /// Bytes not yet read.
    fn remaining(&self) -> u64;

    /// Waits until the next bytes are in hand; how many (0: the body is complete).
    fn chunk(&mut self) -> io::Result<usize>;

    /// Sends `prefix` and then bytes in hand to `socket` in one call, with no copy on this
    /// side; returns the bytes sent of each.
    fn send(&mut self, prefix: &[u8], socket: &std::net::TcpStream) -> io::Result<(usize, usize)>;

    /// Gives the segment back (cancelling the transfer if bytes remain) and returns the
    /// job that produces the rest of the response, if any is left.
    fn release(self: Box<Self>) -> Option<Resume>;
}

/// What the connection thread takes out, in order, after the head.
pub enum Item {
    /// Body bytes.
    Data(Vec<u8>),
    /// The rest of the body is this reader, which holds no worker (a file, an origin's
    /// response, bytes in memory): the connection thread reads it itself. Boxed: it is
    /// rare, and `Data` items are many.
    Stream(Box<Body>),
    /// The rest of the body is to be produced by this job, once everything before it has
    /// been sent.
    Resume(Resume),
    /// The rest of the body is in a segment, for the connection to read straight out.
    Held(Box<dyn Held>),
    /// The body is complete.
    End,
    /// The producer failed mid-body: the response cannot be completed.
    Failed(io::Error),
}

struct State {
    head: Option<Head>,
    items: VecDeque<(Item, u64)>,
    /// Data bytes queued and not yet taken.
    pending: usize,
    /// Budget those bytes hold (at most [`Budget::per_response`]).
    charged: u64,
    /// The connection thread has given up (its client is gone or too slow).
    consumer_gone: bool,
    /// The producer waits for the connection to take bytes (see [`RUN_AHEAD`]).
    producer_waiting: bool,
    /// The connection waits for the head or the next item.
    consumer_waiting: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when an item is queued.
    ready: Condvar,
    /// Signalled when the connection takes an item and the producer waits for that.
    taken: Condvar,
    budget: Arc<Budget>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only queued items behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the item that ends the body.
    fn put_last(&self, item: Item) {
        let mut state = self.lock();
        state.items.push_back((item, 0));
        self.wake_consumer(state);
    }

    /// Wakes the connection if it waits: a notify with nobody waiting is still a system
    /// call, and on the hit path every one counts.
    fn wake_consumer(&self, state: MutexGuard<'_, State>) {
        let waiting = state.consumer_waiting;
        drop(state);
        if waiting {
            self.ready.notify_one();
        }
    }
}

/// The worker's end.
pub struct Producer {
    shared: Arc<Shared>,
    /// Whether the response has been ended (by `end`, `fail`, `stream` or `resume`).
    closed: bool,
    /// The connection fell behind once: stop waiting for it.
    lagging: bool,
}

/// The client is gone: nobody will send what is produced.
#[derive(Debug)]
pub struct Gone;

/// The connection thread's end.
pub struct Consumer {
    shared: Arc<Shared>,
}

/// A new hand-over drawing on `budget`.
pub fn pair(budget: &Arc<Budget>) -> (Producer, Consumer) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            head: None,
            items: VecDeque::new(),
            pending: 0,
            charged: 0,
            consumer_gone: false,
            producer_waiting: false,
            consumer_waiting: false,
        }),
        ready: Condvar::new(),
        taken: Condvar::new(),
        budget: Arc::clone(budget),
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            closed: false,
            lagging: false,
        },
        Consumer { shared },
    )
}

impl Producer {
    /// Hands over the status line and headers; the body follows.
    ///
    /// The connection is not woken for the head alone: it wakes once, when the first
    /// item follows, so that a small answer costs it one wake-up.
    pub fn start(&mut self, head: Head) {
        self.shared.lock().head = Some(head);
    }

    /// Queues body bytes. `Ok(true)`: go on; `Ok(false)`: queued, but memory is spent,
    /// so pause the response (with [`resume`](Self::resume) or [`stream`](Self::stream))
    /// rather than produce more now.
    ///
    /// # Errors
    /// [`Gone`] when the connection has given up: stop and drop the body.
    pub fn push(&mut self, data: Vec<u8>) -> Result<bool, Gone> {
        let n = data.len();
        // Charged and queued under the lock, so that a consumer leaving meanwhile cannot
        // miss this item's charge when it gives back what it held.
        let mut state = self.shared.lock();
        if state.consumer_gone {
            return Err(Gone);
        }
        let budget = &self.shared.budget;
        let (charged, more) = if state.pending + n <= ALLOWANCE {
            (0, true)
        } else if state.charged + n as u64 <= budget.per_response() && budget.try_charge(n as u64) {
            (n as u64, true)
        } else {
            // Taken anyway (one chunk over is the bound), and the producer pauses.
            (0, false)
        };
        state.pending += n;
        state.charged += charged;
        state.items.push_back((Item::Data(data), charged));
        if state.consumer_waiting {
            self.shared.ready.notify_one();
        }
        if more && !self.lagging && state.pending > RUN_AHEAD {
            state.producer_waiting = true;
            let (state, timeout) = self
                .shared
                .taken
                .wait_timeout_while(state, LAG, |s| {
                    s.pending > RUN_AHEAD / 2 && !s.consumer_gone
                })
                .unwrap_or_else(|e| e.into_inner());
            let mut state = state;
            state.producer_waiting = false;
            self.lagging = timeout.timed_out();
        }
        Ok(more)
    }

    /// The body is complete.
    pub fn end(mut self) {
        self.close(Item::End);
    }

    /// The body failed part-way.
    pub fn fail(mut self, e: io::Error) {
        self.close(Item::Failed(e));
    }

    /// The rest of the body is `body`, for the connection thread to read.
    pub fn stream(mut self, body: Body) {
        self.close(Item::Stream(Box::new(body)));
    }

    /// The rest of the body is `body`, still in its segment.
    pub fn hold(mut self, body: Box<dyn Held>) {
        self.close(Item::Held(body));
    }

    /// The rest of the body is for `job` to produce, later, on a worker.
    pub fn resume(mut self, job: Resume) {
        self.close(Item::Resume(job));
    }

    fn close(&mut self, item: Item) {
        self.closed = true;
        self.shared.put_last(item);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.closed {
            // The worker panicked or forgot: never let the connection wait forever.
            self.close(Item::Failed(io::Error::other("the response was abandoned")));
        }
    }
}

impl Consumer {
    /// Waits for the head; `None` if the producer ended without one.
    pub fn head(&self) -> Option<Head> {
        let mut state = self.shared.lock();
        // The head comes with (before) the first item.
        while state.items.is_empty() {
            state = self.wait(state);
        }
        state.head.take()
    }

    fn wait<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.consumer_waiting = true;
        let mut state = self
            .shared
            .ready
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
        state.consumer_waiting = false;
        state
    }

    /// Waits for the next item of the body.
    pub fn next(&self) -> Item {
        let mut state = self.shared.lock();
        loop {
            if let Some((item, charged)) = state.items.pop_front() {
                if let Item::Data(d) = &item {
                    state.pending -= d.len();
                }
                state.charged -= charged;
                let wake = state.producer_waiting;
                drop(state);
                if wake {
                    self.shared.taken.notify_one();
                }
                self.shared.budget.release(charged);
                return item;
            }
            state = self.wait(state);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.consumer_gone = true;
        let charged: u64 = state.items.iter().map(|(_, c)| c).sum();
        state.items.clear();
        state.pending = 0;
        state.charged = 0;
        drop(state);
        self.shared.taken.notify_one();
        self.shared.budget.release(charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head::new(200, "-")
    }

    #[test]
    fn small_answers_never_touch_the_budget() {
        let budget = Budget::new(0);
        let (mut p, c) = pair(&budget);
        p.start(head());
        assert!(p.push(vec![1; ALLOWANCE]).unwrap());
        p.end();
        assert!(c.head().is_some());
        assert!(matches!(c.next(), Item::Data(d) if d.len() == ALLOWANCE));
        assert!(matches!(c.next(), Item::End));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_budget_is_charged_beyond_the_allowance_and_released_when_sent() {
        // A response may take a sixteenth: 100 bytes of 1600.
        let budget = Budget::new(1600);
        let (mut p, c) = pair(&budget);
        p.start(head());
        assert!(p.push(vec![0; ALLOWANCE]).unwrap());
        assert!(p.push(vec![0; 100]).unwrap(), "within its share");
        assert_eq!(budget.used(), 100);
        assert!(!p.push(vec![0; 1]).unwrap(), "its share is spent: pause");
        // Another response still has its own share.
        let (mut other, _c) = pair(&budget);
        other.push(vec![0; ALLOWANCE]).unwrap();
        assert!(other.push(vec![0; 100]).unwrap());
        assert_eq!(budget.used(), 200);
        c.head();
        for _ in 0..3 {
            assert!(matches!(c.next(), Item::Data(_)));
        }
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn a_gone_consumer_stops_the_producer_and_gives_back_its_memory() {
        let budget = Budget::new(16_000);
        let (mut p, c) = pair(&budget);
        p.push(vec![0; ALLOWANCE]).unwrap();
        p.push(vec![0; 500]).unwrap();
        assert_eq!(budget.used(), 500);
        drop(c);
        assert_eq!(budget.used(), 0);
        assert!(p.push(vec![0; 1]).is_err());
    }

    #[test]
    fn an_abandoned_producer_fails_the_response() {
        let budget = Budget::new(0);
        let (p, c) = pair(&budget);
        drop(p);
        assert!(c.head().is_none());
        assert!(matches!(c.next(), Item::Failed(_)));
    }
}
