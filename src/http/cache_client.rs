//! The proxy's side of the channel: send a request, wait for the head, hand back a body;
//! and stop waiting on a cache that has died (at once) or stalled (after one timeout).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::ipc::channel::{
    ChannelError, Etag, Head, PEER_CHECK, Patience, Peer, Receiver, Sender, Status, unix_now,
};
use crate::ipc::pool::{CheckoutError, Lease, SegmentPool};
use crate::ipc::queue::MessageQueue;
use crate::ipc::queue_name;
use crate::ipc::wire::{ALLOW_STALE, FROM_END, Op, Request};
use crate::shutdown::Shutdown;

use super::body::CacheBody;

/// Which bytes of an object to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The head alone: status and validators, no body.
    Head,
    /// `length` bytes from `offset` (`u64::MAX`: to the end), clamped to the object.
    Range { offset: u64, length: u64 },
    /// The last `n` bytes.
    Last(u64),
}

impl Part {
    pub const ALL: Part = Part::Range {
        offset: 0,
        length: u64::MAX,
    };

    /// The request fields `(offset, length, flags)` for this part.
    fn wire(self) -> (u64, u64, u32) {
        match self {
            Part::Head => (0, 0, 0),
            Part::Range { offset, length } => (offset, length, 0),
            Part::Last(n) => (n, u64::MAX, FROM_END),
        }
    }
}

/// What the cache answered.
// Returned by value once per request; boxing the large variant would cost an allocation
// on the hit path to save a 200-byte move.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Found {
        head: Head,
        body: CacheBody,
    },
    /// The cache does not hold it, and would take a STORE of up to `accept_len` bytes.
    NotFound {
        accept_len: u64,
    },
    /// The cache holds it but its lifetime has passed: validators only, no body.
    Expired {
        head: Head,
    },
}

/// Why the cache could not answer; the proxy then falls back to secondary storage.
#[derive(Debug)]
pub enum CacheError {
    /// No cache is running (the queue does not exist), or it stopped reading.
    Unavailable,
    /// The cache let a wait run out recently and has not answered a probe since: it is
    /// skipped without being asked.
    Bypassed,
    /// No segment became free in time.
    Busy(CheckoutError),
    /// The transfer failed before the head: the cache is slow, dead or broken.
    Failed(ChannelError),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Unavailable => write!(f, "no cache is connected"),
            CacheError::Bypassed => write!(f, "the cache is bypassed until it answers again"),
            CacheError::Busy(e) => write!(f, "no free segment: {e:?}"),
            CacheError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// One cache process, reached through its request queue.
struct Link {
    queue: MessageQueue,
    /// The queue's inode: a restarted cache creates a new queue under the same name.
    identity: Option<u64>,
    /// The process that answers on the queue, as every wait on it sees it.
    peer: Arc<Peer>,
    /// `peer.stalls()` when the cache last showed that it answers (when we connected, or a
    /// probe was answered). While a wait has run out since, the cache is bypassed: this is
    /// the circuit breaker.
    answering_at: AtomicU64,
    /// Whether the connector has reported the current outage (it alone touches this).
    outage: AtomicBool,
}

impl Link {
    fn open(queue: MessageQueue) -> Link {
        Link {
            identity: queue.identity().ok(),
            queue,
            peer: Arc::default(),
            answering_at: AtomicU64::new(0),
            outage: AtomicBool::new(false),
        }
    }

    /// Whether a wait on this cache ran out since it last answered a probe.
    fn is_tripped(&self) -> bool {
        self.peer.stalls() != self.answering_at.load(Ordering::Relaxed)
    }

    /// Whether requests may go to this cache now: three atomic loads on the hit path.
    fn admit(&self) -> Result<(), CacheError> {
        if self.peer.has_gone() {
            Err(CacheError::Unavailable)
        } else if self.is_tripped() {
            Err(CacheError::Bypassed)
        } else {
            Ok(())
        }
    }
}

/// A connection to the cache that survives the cache going away, stalling, and coming back.
///
/// The current [`Link`] sits behind a lock that is held only to clone an `Arc`; a connector
/// thread keeps it pointing at the live queue of our instance: it opens the queue when it
/// appears, switches when a restarted cache has created a new queue under the same name
/// (told apart by inode), and drops it when the queue disappears or the process that
/// answers on it has died. A cache killed with SIGKILL leaves its queue behind; without the
/// pid check every request would wait out the timeout on a queue nobody reads.
///
/// A cache that is there but does not answer (stopped, overloaded) costs one timeout: the
/// first wait that runs out trips a breaker, and from then on requests skip the cache at
/// once (served from secondary storage, or 503) while the connector thread probes it, one
/// probe at a time, until it answers again. No client waits on a probe.
pub struct CacheClient {
    queue_name: String,
    link: RwLock<Option<Arc<Link>>>,
    pool: Arc<SegmentPool>,
    timeout: Duration,
    /// Lookups that skipped the cache because the breaker was open.
    bypassed: AtomicU64,
    /// Times the breaker opened.
    trips: AtomicU64,
}

/// How often the connector looks at the queue name, and how long it pauses between probes
/// of a cache that stopped answering. A fixed pause, not a growing back-off: a probe of a
/// stalled cache already waits `--cache-timeout` before it fails and only one runs at a
/// time, so the probes cost the cache one request per timeout at most and no client ever
/// waits on one; a longer pause would only keep clients off a recovered cache for longer.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);

impl CacheClient {
    pub fn new(instance: &str, pool: Arc<SegmentPool>, timeout: Duration) -> Arc<CacheClient> {
        let client = Arc::new(CacheClient {
            queue_name: queue_name(instance),
            link: RwLock::new(None),
            pool,
            timeout,
            bypassed: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        });
        client.reconnect(&mut None);
        client
    }

    /// Starts the connector thread; it stops when `shutdown` is triggered.
    pub fn spawn_connector(self: &Arc<Self>, shutdown: Shutdown) -> io::Result<()> {
        let client = Arc::clone(self);
        std::thread::Builder::new()
            .name("cache-connector".into())
            .spawn(move || {
                let mut abandoned = None;
                while !shutdown.is_triggered() {
                    std::thread::sleep(RECONNECT_INTERVAL);
                    client.reconnect(&mut abandoned);
                    client.probe();
                }
            })?;
        Ok(())
    }

    /// The breaker's counters: lookups that skipped the cache, times it opened.
    pub fn breaker_stats(&self) -> [(&'static str, u64); 2] {
        [
            ("cache_bypassed", self.bypassed.load(Ordering::Relaxed)),
            ("cache_trips", self.trips.load(Ordering::Relaxed)),
        ]
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, link: Option<Link>) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link.map(Arc::new);
    }

    /// Points the handle at the live queue of our instance, if any. `abandoned` remembers
    /// the identity of a queue whose cache died, so we do not reconnect to it.
    fn reconnect(&self, abandoned: &mut Option<u64>) {
        let current = self.current();
        if let Some(link) = &current
            && link.peer.is_gone()
        {
            let pid = link.peer.pid().unwrap_or(0);
            log::warn!("the cache (pid {pid}) is gone; serving without it");
            *abandoned = link.identity;
            self.set(None);
            return;
        }
        match MessageQueue::open(&self.queue_name) {
            Ok(queue) => {
                let link = Link::open(queue);
                let current_id = current.as_ref().and_then(|l| l.identity);
                if link.identity != current_id && link.identity != *abandoned {
                    log::info!("connected to the cache at {}", self.queue_name);
                    self.set(Some(link));
                }
            }
            Err(e) => {
                if current.is_some() {
                    log::warn!("lost the cache at {}: {e}", self.queue_name);
                    self.set(None);
                }
            }
        }
    }

    /// While the breaker is open, asks the cache for its counters (an answer it must write,
    /// which touches no entry) and closes the breaker once that is answered in time.
    fn probe(&self) {
        let Some(link) = self.current() else { return };
        let stalls = link.peer.stalls();
        let answering_at = link.answering_at.load(Ordering::Relaxed);
        if stalls == answering_at {
            return;
        }
        if !link.outage.swap(true, Ordering::Relaxed) {
            self.trips.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "the cache did not answer within {:?}; serving without it until it answers a probe",
                self.timeout
            );
        }
        match self.ask_stats(&link, false) {
            Ok(_) => {
                log::info!("the cache answers again; using it");
                // The stalls counted before the probe are over; one counted while it ran
                // keeps the breaker open for another probe.
                link.answering_at.store(stalls, Ordering::Relaxed);
                link.outage.store(false, Ordering::Relaxed);
            }
            Err(e) => log::debug!("probing the cache: {e}"),
        }
    }

    /// Drops `link` if it is still the current one (after it failed us).
    fn forget(&self, link: &Link) {
        let mut current = self.link.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|l| std::ptr::eq(&**l, link)) {
            *current = None;
        }
    }

    /// Checks out a segment and sends the cache a request that names it. With `admit`,
    /// only if the breaker lets requests through (a probe goes regardless).
    fn send(
        &self,
        link: &Link,
        admit: bool,
        op: Op,
        key: &str,
        part: Part,
        extra_flags: u32,
    ) -> Result<Lease, CacheError> {
        if admit {
            link.admit()?;
        }
        let mut lease = self.pool.checkout(self.timeout).map_err(CacheError::Busy)?;
        if admit && let Err(e) = link.admit() {
            // The checkout may have waited for segments held by requests that the cache
            // left waiting; once one of them ran out, this one should not wait again.
            lease.set_at_rest();
            return Err(e);
        }
        let (offset, length, flags) = part.wire();
        let flags = flags | extra_flags;
        let request = Request {
            op,
            generation: lease.generation(),
            offset,
            length,
            flags,
            key,
            segment: lease.segment().name(),
        };
        let message = request
            .encode()
            .expect("keys are normalised and length-checked before they get here");
        if let Err(e) = self.post(link, &message) {
            // Nothing was sent, so nothing touches the segment.
            lease.set_at_rest();
            return Err(e);
        }
        Ok(lease)
    }

    /// Puts a request on the queue, waiting at most the timeout for room in it. Like the
    /// waits on a segment, a wait that is already long checks between slices that the
    /// cache is still there, and one that runs out counts as a stall of the cache.
    fn post(&self, link: &Link, message: &[u8]) -> Result<(), CacheError> {
        let timed_out = |r: &io::Result<()>| {
            r.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
        };
        // The common case, room in the queue, takes the one call it always took.
        let first = PEER_CHECK.min(self.timeout);
        let mut sent = link.queue.send_timeout(message, first);
        if timed_out(&sent) {
            let deadline = Instant::now() + (self.timeout - first);
            loop {
                if link.peer.is_gone() {
                    return Err(CacheError::Failed(ChannelError::PeerGone));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    link.peer.note_stall();
                    return Err(CacheError::Failed(ChannelError::TimedOut));
                }
                sent = link.queue.send_timeout(message, left.min(PEER_CHECK));
                if !timed_out(&sent) {
                    break;
                }
            }
        }
        sent.map_err(|e| {
            log::warn!("sending to the cache: {e}");
            self.forget(link);
            CacheError::Unavailable
        })
    }

    /// How long each wait on the cache behind `link` may last, watching its process.
    fn patience(&self, link: &Link) -> Patience {
        Patience::watching(self.timeout, Arc::clone(&link.peer))
    }

    /// Asks the cache for `part` of `key`; with `allow_stale`, even if it has expired.
    /// `key` must be a normalised key short enough for the wire format.
    pub fn get(&self, key: &str, part: Part, allow_stale: bool) -> Result<Answer, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        let extra = if allow_stale { ALLOW_STALE } else { 0 };
        let mut lease = match self.send(&link, true, Op::Get, key, part, extra) {
            Ok(lease) => lease,
            Err(e) => {
                if matches!(e, CacheError::Bypassed) {
                    self.bypassed.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let (head, mut rx) =
            Receiver::recv_head(lease.segment(), lease.generation(), self.patience(&link))
                .map_err(CacheError::Failed)?;
        link.peer.learn(head.answerer_pid);
        if head.status != Status::Found {
            // No body: give the only slot back and the segment is at rest.
            rx.finish(lease.segment()).map_err(CacheError::Failed)?;
            lease.set_at_rest();
        }
        match head.status {
            Status::Found => match CacheBody::new(lease, rx) {
                Ok(body) => Ok(Answer::Found { head, body }),
                Err(e) => Err(CacheError::Failed(ChannelError::Os(e))),
            },
            Status::NotFound => Ok(Answer::NotFound {
                accept_len: head.accept_len,
            }),
            Status::Expired => Ok(Answer::Expired { head }),
            Status::Error => Err(CacheError::Failed(ChannelError::Protocol(
                "the cache reported an error",
            ))),
        }
    }
}

/// A STORE in progress: the proxy writing an object into the cache while it serves it.
pub struct Fill {
    lease: Lease,
    tx: Sender,
}

impl Fill {
    /// Passes the next body bytes on. When the last byte is in, waits until the cache has
    /// stored the entry.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ChannelError> {
        let seg = self.lease.segment();
        self.tx.write(seg, data)?;
        // Whatever came in goes over at once: the cache waits at most its timeout per chunk.
        self.tx.flush(seg)?;
        if self.tx.remaining() == 0 {
            self.tx.finish(seg)?;
            self.tx.wait_drained(seg)?;
            self.lease.set_at_rest();
        }
        Ok(())
    }

    /// Whether the whole object is in the cache.
    pub fn is_done(&self) -> bool {
        self.tx.remaining() == 0 && self.lease.is_at_rest()
    }
}

impl CacheClient {
    /// Starts filling the cache with an object of `len` bytes for `key`, read from a file of
    /// identity `source_version` (0: not a file); the bytes follow through [`Fill::write`].
    pub fn store(
        &self,
        key: &str,
        len: u64,
        modified: Option<SystemTime>,
        etag: Option<String>,
        source_version: u64,
        max_age: u64,
    ) -> Result<Fill, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        let part = Part::Range {
            offset: 0,
            length: len,
        };
        let lease = self.send(&link, true, Op::Store, key, part, 0)?;
        let head = Head {
            status: Status::Found,
            total_len: len,
            body_offset: 0,
            body_len: len,
            modified,
            etag: etag.as_deref().and_then(Etag::new),
            accept_len: 0,
            stored_at: unix_now(),
            max_age,
            source_version,
            answerer_pid: 0,
        };
        let tx = Sender::start(
            lease.segment(),
            lease.generation(),
            &head,
            self.patience(&link),
        )
        .map_err(CacheError::Failed)?;
        let mut fill = Fill { lease, tx };
        if len == 0 {
            fill.write(&[]).map_err(CacheError::Failed)?;
        }
        Ok(fill)
    }

    /// Makes an expired entry fresh again for `max_age` seconds. Returns whether the
    /// cache still held it.
    pub fn renew(&self, key: &str, max_age: u64) -> Result<bool, CacheError> {
        let part = Part::Range {
            offset: 0,
            length: max_age,
        };
        self.command(Op::Renew, key, part)
    }

    /// Removes `key` from the cache. Returns whether it was there.
    pub fn purge(&self, key: &str) -> Result<bool, CacheError> {
        self.command(Op::Purge, key, Part::Head)
    }

    /// Sends an operation whose answer is a status alone.
    fn command(&self, op: Op, key: &str, part: Part) -> Result<bool, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        let mut lease = self.send(&link, true, op, key, part, 0)?;
        let (head, mut rx) =
            Receiver::recv_head(lease.segment(), lease.generation(), self.patience(&link))
                .map_err(CacheError::Failed)?;
        link.peer.learn(head.answerer_pid);
        rx.finish(lease.segment()).map_err(CacheError::Failed)?;
        lease.set_at_rest();
        Ok(head.status == Status::Found)
    }

    /// The cache's counters, as `name value` lines.
    pub fn stats(&self) -> Result<String, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        self.ask_stats(&link, true)
    }

    /// Asks `link`'s cache for its counters; with `admit`, only if the breaker lets
    /// requests through.
    fn ask_stats(&self, link: &Link, admit: bool) -> Result<String, CacheError> {
        let mut lease = self.send(link, admit, Op::Stats, "/", Part::ALL, 0)?;
        let (head, mut rx) =
            Receiver::recv_head(lease.segment(), lease.generation(), self.patience(link))
                .map_err(CacheError::Failed)?;
        link.peer.learn(head.answerer_pid);
        if head.body_len > 1 << 20 {
            return Err(CacheError::Failed(ChannelError::Protocol(
                "oversized stats",
            )));
        }
        let mut text = vec![0u8; head.body_len as usize];
        let mut at = 0;
        while at < text.len() {
            at += rx
                .read(lease.segment(), &mut text[at..])
                .map_err(CacheError::Failed)?;
        }
        rx.finish(lease.segment()).map_err(CacheError::Failed)?;
        lease.set_at_rest();
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}
