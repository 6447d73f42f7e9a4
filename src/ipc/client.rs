//! The proxy's side of the protocol: what its pool thread calls ([`Client::get`],
//! [`store`](Client::store), [`renew`](Client::renew), [`purge`](Client::purge),
//! [`stats`](Client::stats)). It owns everything between a call and its answer: checking
//! out a segment, its generation, the message on the queue, the waits and their timeouts,
//! cancelling a transfer nobody wants any more, and the reader of an answer's body. It also
//! stops waiting on a cache that has died (at once) or stalled (after one timeout).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::call::{
    Call, Head, Lifetime, MAX_HEADER_BLOCK, Meta, Stats, StoreHead, Stream, valid_header_block,
};
use super::channel::{ChannelError, PEER_CHECK, Patience, Peer, Receiver, Sender};
use super::conditions::{Conditions, Outcome};
use super::pool::{CheckoutError, Lease, SegmentPool};
pub use super::pool::{SegmentActivity, SegmentState};
use super::queue::MessageQueue;
use super::wire::{self, Message};
use super::{queue_name, remove_stale_segments, segment_prefix};
use crate::shutdown::Shutdown;

/// What the cache answered a GET or a RENEW.
pub enum Answer {
    /// The object: its stored head and header block, what the conditions decided, and the
    /// body bytes that decision sends (none for 304 and 416, nor for a head-only call).
    Found(Found),
    /// The cache holds it but its lifetime has passed: its head and header block, no body.
    /// It would take a STORE of up to `accept_len` bytes to replace it (`None`: none).
    Expired {
        meta: Meta,
        headers: Vec<u8>,
        accept_len: Option<u64>,
    },
    /// The cache does not hold it, and would take a STORE of up to `accept_len` bytes
    /// (`None`: none).
    Missing { accept_len: Option<u64> },
}

/// A found object, its body still in the segment.
pub struct Found {
    pub meta: Meta,
    /// The stored response's header block (`Name: value\r\n` lines, checked).
    pub headers: Vec<u8>,
    pub outcome: Outcome,
    /// `(offset in the object, length)` of the bytes `body` yields.
    pub range: (u64, u64),
    pub body: CacheBody,
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
    /// The cache said it failed to serve this call.
    Refused,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Unavailable => write!(f, "no cache is connected"),
            CacheError::Bypassed => write!(f, "the cache is bypassed until it answers again"),
            CacheError::Busy(e) => write!(f, "no free segment: {e:?}"),
            CacheError::Failed(e) => write!(f, "{e}"),
            CacheError::Refused => write!(f, "the cache reported an error"),
        }
    }
}

impl From<ChannelError> for CacheError {
    fn from(e: ChannelError) -> CacheError {
        CacheError::Failed(e)
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
pub struct Client {
    instance: String,
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

/// How often the proxy repeats that no cache answers, while none does.
pub const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

impl Client {
    /// Removes segments that dead proxies of `instance` left behind, creates this proxy's
    /// `segments`, and looks for the cache (a connector thread keeps looking: see
    /// [`spawn_connector`](Self::spawn_connector)). `timeout` bounds every wait on the cache:
    /// for a free segment, for room in the queue, for the head, for each chunk.
    ///
    /// # Errors
    /// Listing or creating segments failed; the message names their prefix.
    pub fn new(instance: &str, segments: Segments, timeout: Duration) -> io::Result<Arc<Client>> {
        let named = |e: io::Error, what: &str| {
            let prefix = segment_prefix(instance);
            io::Error::new(e.kind(), format!("{what} segments {prefix}*: {e}"))
        };
        for stale in remove_stale_segments(instance).map_err(|e| named(e, "removing stale"))? {
            log::warn!("removed {stale}, left by a proxy that is gone");
        }
        let pool = SegmentPool::new(
            &segment_prefix(instance),
            segments.count,
            segments.size,
            segments.slots,
        )
        .map_err(|e| named(e, "creating"))?;
        let client = Arc::new(Client {
            instance: instance.to_owned(),
            queue_name: queue_name(instance),
            link: RwLock::new(None),
            pool,
            timeout,
            bypassed: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        });
        client.reconnect(&mut None);
        Ok(client)
    }

    /// The channel as this proxy sees it now: the request queue's depth and capacity (if
    /// a cache is connected), and what each of its segments is doing.
    pub fn channel(&self) -> ChannelView {
        ChannelView {
            queue: self.current().and_then(|link| link.queue.depth().ok()),
            segments: self.pool.activity(),
        }
    }

    /// Unlinks every segment, leased or not: for shutdown. Transfers in flight keep their
    /// mappings; nothing is left in /dev/shm.
    pub fn unlink_all(&self) {
        self.pool.unlink_all();
    }

    /// Starts the connector thread; it stops when `shutdown` is triggered. While no cache
    /// is connected it warns at once and then once every [`OUTAGE_REMINDER`], naming the
    /// instance and what the proxy does `without` one ("serving from …"): a cache that is
    /// not running, or runs under another `--name`, is otherwise silent.
    pub fn spawn_connector(
        self: &Arc<Self>,
        shutdown: Shutdown,
        without: String,
    ) -> io::Result<()> {
        let client = Arc::clone(self);
        std::thread::Builder::new()
            .name("cache-connector".into())
            .spawn(move || {
                let mut abandoned = None;
                // When the proxy last said that no cache answers.
                let mut said: Option<Instant> = None;
                while !shutdown.is_triggered() {
                    if client.current().is_some() {
                        said = None;
                    } else if said.is_none_or(|t| t.elapsed() >= OUTAGE_REMINDER) {
                        log::warn!(
                            "no cache answers on instance {} ({}): {without}; start \
                             `shmcached --name {}`, or check that both use the same --name",
                            client.instance,
                            client.queue_name,
                            client.instance
                        );
                        said = Some(Instant::now());
                    }
                    std::thread::sleep(RECONNECT_INTERVAL);
                    if shutdown.is_triggered() {
                        break;
                    }
                    let had = client.current().is_some();
                    client.reconnect(&mut abandoned);
                    if had && client.current().is_none() {
                        // Just said why (reconnect logs it); the reminder comes later.
                        said = Some(Instant::now());
                    }
                    client.probe();
                }
            })?;
        Ok(())
    }

    /// The client's counters: checkouts that waited for a segment and for how long in
    /// all, lookups that skipped the cache, times the breaker opened.
    pub fn counters(&self) -> [(&'static str, u64); 4] {
        let (waits, micros) = self.pool.wait_stats();
        [
            ("segment_waits", waits),
            ("segment_wait_microseconds", micros),
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
                    // Said once it is so: whoever reads the line may rely on it.
                    self.set(Some(link));
                    log::info!("connected to the cache at {}", self.queue_name);
                }
            }
            Err(e) => {
                if current.is_some() {
                    // A queue removed is a cache that stopped in order (a killed one leaves
                    // its queue): nothing went wrong, so no warning.
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        log::info!(
                            "the cache stopped ({} is gone); serving without it",
                            self.queue_name
                        );
                    } else {
                        log::warn!("lost the cache at {}: {e}", self.queue_name);
                    }
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

    /// Checks out a segment and sends the cache `call`, naming that segment. With `admit`,
    /// only if the breaker lets requests through (a probe goes regardless).
    fn send(&self, link: &Link, admit: bool, call: Call<&str>) -> Result<Lease, CacheError> {
        if admit {
            link.admit()?;
        }
        let key = call.key().unwrap_or("STATS");
        let mut lease = self
            .pool
            .checkout(self.timeout, key)
            .map_err(CacheError::Busy)?;
        if admit && let Err(e) = link.admit() {
            // The checkout may have waited for segments held by requests that the cache
            // left waiting; once one of them ran out, this one should not wait again.
            lease.set_at_rest();
            return Err(e);
        }
        let message = Message {
            segment: lease.segment().name(),
            generation: lease.generation(),
            call,
        }
        .encode()
        .expect("keys are normalised and length-checked before they get here");
        if let Err(e) = self.post(link, &message) {
            // Nothing was sent, so nothing touches the segment.
            lease.set_at_rest();
            return Err(e);
        }
        Ok(lease)
    }

    /// Sends `call` and waits for the head of its answer; returns the head, and the
    /// transfer with the header block already read off (checked) when the head has one.
    fn call(&self, link: &Link, admit: bool, call: Call<&str>) -> Result<Answered, CacheError> {
        let lease = self.send(link, admit, call)?;
        let (envelope, rx) =
            Receiver::recv_head::<Head>(lease.segment(), lease.generation(), self.patience(link))?;
        link.peer.learn(envelope.pid);
        lease.activity().set(SegmentState::Receiving);
        lease.activity().set_total(envelope.stream.len());
        let mut transfer = Transfer { lease, rx };
        let mut headers = vec![0; envelope.stream.header_len as usize];
        transfer
            .read_exact(&mut headers)
            .map_err(ChannelError::from_io)?;
        if !valid_header_block(&headers) {
            return Err(ChannelError::Protocol("malformed header block").into());
        }
        transfer.settle()?;
        Ok(Answered {
            head: envelope.head,
            stream: envelope.stream,
            pid: envelope.pid,
            headers,
            body: CacheBody(transfer),
        })
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

    /// GET: asks the cache for `key`, as `conditions` decide; with `allow_stale`, even if
    /// it has expired; with `head_only`, without the body. `key` must be a normalised key
    /// short enough for the wire format.
    ///
    /// # Errors
    /// [`CacheError`]: no cache, a bypassed one, no free segment, a failed transfer.
    pub fn get(
        &self,
        key: &str,
        conditions: &Conditions,
        allow_stale: bool,
        head_only: bool,
    ) -> Result<Answer, CacheError> {
        let call = Call::Get {
            key,
            conditions: conditions.clone(),
            allow_stale,
            head_only,
        };
        self.ask_object(call)
    }

    /// RENEW: makes an expired entry fresh again for `lifetime` (the proxy found it
    /// unchanged at its source), and answers as [`get`](Self::get) would.
    pub fn renew(
        &self,
        key: &str,
        lifetime: Lifetime,
        conditions: &Conditions,
        head_only: bool,
    ) -> Result<Answer, CacheError> {
        let call = Call::Renew {
            key,
            lifetime,
            conditions: conditions.clone(),
            head_only,
        };
        self.ask_object(call)
    }

    fn ask_object(&self, call: Call<&str>) -> Result<Answer, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        let answered = self.call(&link, true, call).inspect_err(|e| {
            if matches!(e, CacheError::Bypassed) {
                self.bypassed.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let Answered {
            head,
            stream,
            headers,
            body,
            ..
        } = answered;
        match head {
            Head::Found { meta, outcome } => Ok(Answer::Found(Found {
                // Where in the object the body starts: the outcome says; a head-only
                // answer (no body) starts nowhere.
                range: match outcome.body_range(meta.total_len) {
                    Some((start, _)) if stream.body_len > 0 => (start, stream.body_len),
                    _ => (0, 0),
                },
                meta,
                headers,
                outcome,
                body,
            })),
            Head::Expired { meta, accept_len } => Ok(Answer::Expired {
                meta,
                headers,
                accept_len,
            }),
            Head::Missing { accept_len } => Ok(Answer::Missing { accept_len }),
            Head::Failed => Err(CacheError::Refused),
            _ => Err(ChannelError::Protocol("an answer that does not fit the call").into()),
        }
    }

    /// STORE: starts filling the cache with a response for `key`: `head` describes it,
    /// `headers` is its header block; the body (`len` bytes) follows through
    /// [`Fill::write`].
    pub fn store(
        &self,
        key: &str,
        head: StoreHead,
        headers: &[u8],
        len: u64,
    ) -> Result<Fill, CacheError> {
        assert!(
            headers.len() as u64 <= u64::from(MAX_HEADER_BLOCK) && valid_header_block(headers),
            "a header block the cache would refuse"
        );
        let link = self.current().ok_or(CacheError::Unavailable)?;
        let lease = self.send(&link, true, Call::Store { key, len })?;
        let stream = Stream {
            header_len: headers.len() as u32,
            body_len: len,
        };
        lease.activity().set(SegmentState::Storing);
        lease.activity().set_total(stream.len());
        let tx = Sender::start(
            lease.segment(),
            lease.generation(),
            &head,
            stream,
            self.patience(&link),
        )?;
        let mut fill = Fill { lease, tx };
        fill.write(headers)?;
        Ok(fill)
    }

    /// PURGE: removes `key` from the cache. Returns whether it was there.
    pub fn purge(&self, key: &str) -> Result<bool, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        match self.call(&link, true, Call::Purge { key })?.head {
            Head::Purged { existed } => Ok(existed),
            Head::Failed => Err(CacheError::Refused),
            _ => Err(ChannelError::Protocol("an answer that does not fit the call").into()),
        }
    }

    /// STATS: the cache's counters and what its workers are doing.
    pub fn stats(&self) -> Result<Stats, CacheError> {
        let link = self.current().ok_or(CacheError::Unavailable)?;
        self.ask_stats(&link, true)
    }

    /// Asks `link`'s cache for its counters; with `admit`, only if the breaker lets
    /// requests through.
    fn ask_stats(&self, link: &Link, admit: bool) -> Result<Stats, CacheError> {
        let mut answered = self.call(link, admit, Call::Stats)?;
        match answered.head {
            // The head's decoder bounds the length (`wire::MAX_STATS_LEN`).
            Head::Stats => {}
            Head::Failed => return Err(CacheError::Refused),
            _ => return Err(ChannelError::Protocol("an answer that does not fit the call").into()),
        }
        let mut bytes = vec![0u8; answered.stream.body_len as usize];
        answered
            .body
            .read_exact(&mut bytes)
            .map_err(ChannelError::from_io)?;
        wire::decode_stats(&bytes, answered.pid).map_err(|e| ChannelError::Malformed(e).into())
    }
}

/// A call's answer as [`Client::call`] hands it on.
struct Answered {
    head: Head,
    stream: Stream,
    /// The cache's process, which wrote the head.
    pid: u32,
    headers: Vec<u8>,
    body: CacheBody,
}

/// The reading end of one transfer, with the segment it runs through.
struct Transfer {
    lease: Lease,
    rx: Receiver,
}

impl Transfer {
    /// Once the last byte is out, gives the last slot back: the segment is then at rest,
    /// back in the pool as it is when the lease goes.
    fn settle(&mut self) -> Result<(), ChannelError> {
        if self.rx.remaining() == 0 && !self.lease.is_at_rest() {
            self.rx.finish(self.lease.segment())?;
            self.lease.set_at_rest();
        }
        Ok(())
    }
}

impl Read for Transfer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rx.read(self.lease.segment(), buf)?;
        self.lease.activity().moved(n);
        self.settle()?;
        Ok(n)
    }
}

/// An answer's body, read straight out of the segment's slots.
///
/// It owns the segment's lease, so the segment goes back to the pool when the body is
/// dropped: as it is, if every byte was read; otherwise the transfer is cancelled and the
/// segment rebuilt (see [`pool`](super::pool)), so a late writer can never reach the next
/// transfer. The proxy never holds more than one slot of it.
pub struct CacheBody(Transfer);

impl CacheBody {
    /// Body bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.0.rx.remaining()
    }

    /// Waits until the next bytes are in hand in the segment; how many (0: the body is
    /// complete). The wait is on the cache, apart from any write to a client.
    pub fn chunk(&mut self) -> io::Result<usize> {
        let Transfer { lease, rx } = &mut self.0;
        Ok(rx.chunk(lease.segment())?)
    }

    /// Sends `prefix` and then the bytes in hand straight from the segment to `socket`, in
    /// one call and with no copy on this side (see [`chunk`](Self::chunk)). Returns the
    /// bytes sent of `prefix` and of the body.
    pub fn send(
        &mut self,
        prefix: &[u8],
        socket: &std::net::TcpStream,
    ) -> io::Result<(usize, usize)> {
        use std::os::fd::AsFd;
        let Transfer { lease, rx } = &mut self.0;
        let (from_prefix, n) = rx.send(lease.segment(), prefix, socket.as_fd())?;
        lease.activity().moved(n);
        self.0.settle()?;
        Ok((from_prefix, n))
    }

    /// Says (to the live view) that a connection now reads this body straight to its
    /// client, rather than a worker into memory.
    pub fn sending(&self) {
        self.0.lease.activity().set(SegmentState::Sending);
    }
}

impl Read for CacheBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// A STORE in progress: the proxy writing a response into the cache while it serves it.
pub struct Fill {
    lease: Lease,
    tx: Sender,
}

impl Fill {
    /// Passes the next body bytes on. When the last byte is in, waits until the cache has
    /// stored the entry.
    ///
    /// # Errors
    /// `TimedOut` when the cache does not take a slot in time; `Protocol` past the length
    /// announced. The fill is then over: drop it (the cache keeps nothing of it).
    pub fn write(&mut self, data: &[u8]) -> Result<(), ChannelError> {
        let seg = self.lease.segment();
        self.tx.write(seg, data)?;
        self.lease.activity().moved(data.len());
        // Whatever came in goes over at once: the cache waits at most its timeout per chunk.
        self.tx.flush(seg)?;
        if self.tx.remaining() == 0 && !self.lease.is_at_rest() {
            self.tx.finish(seg)?;
            self.tx.wait_drained(seg)?;
            self.lease.set_at_rest();
        }
        Ok(())
    }

    /// Whether the whole response is in the cache.
    pub fn is_done(&self) -> bool {
        self.tx.remaining() == 0 && self.lease.is_at_rest()
    }
}

/// One picture of the channel, for the live view (see [`Client::channel`]).
pub struct ChannelView {
    /// Messages waiting in the request queue, and how many it holds.
    pub queue: Option<(u64, u64)>,
    pub segments: Vec<SegmentActivity>,
}

/// How many segments a proxy makes, and their shape.
#[derive(Debug, Clone, Copy)]
pub struct Segments {
    pub count: usize,
    /// Bytes each.
    pub size: usize,
    /// Slots in each one's ring (1: the classic lock-step handoff).
    pub slots: usize,
}

/// Whether the request queue of `instance` exists: a cache has started serving it (or a
/// dead one left it; the connector tells those apart).
pub fn queue_exists(instance: &str) -> bool {
    MessageQueue::open(&queue_name(instance)).is_ok()
}
