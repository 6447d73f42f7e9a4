//! The cache's side of the protocol: the receive loop. Each message on the queue is decoded
//! and checked (its segment inside this instance, mapped, on the generation it names) and
//! served by a worker, which does what the [`Call`] asks through the segment, with the
//! [`Backend`] behind it deciding what is kept.
//!
//! Two ways to take calls off the queue ([`Dispatch`]): the classic boss and workers, where
//! the main thread only receives and validates and a pool worker serves; or workers that
//! receive for themselves, one wake-up fewer per call. Either way a worker may block for a
//! long time on a slow proxy without holding up calls for other segments.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use super::call::{
    Call, Head, Lifetime, MAX_HEADER_BLOCK, Meta, Op, Stats, StoreHead, valid_header_block,
};
use super::channel::{self, ChannelError, Receiver, Sender, stream_of};
use super::conditions::Conditions;
use super::lock::InstanceLock;
use super::queue::MessageQueue;
use super::segment::{OpenError, Segment};
use super::wire::{self, MESSAGE_CAPACITY, Message};
use super::{queue_name, segment_owner, sys};
use crate::shutdown::{Shutdown, Stop, join_within};

/// What the server asks of the cache behind it: the cache's policy (what is kept, for how
/// long, what an expired entry becomes) lives there; the protocol lives here.
pub trait Backend: Send + Sync + 'static {
    /// A stored response, kept alive while a transfer copies it out.
    type Entry: Stored + Send;

    /// GET: the entry for `key`. Past its lifetime it is `Expired` for the asker to
    /// revalidate, unless `allow_stale`, or unless the store can check it itself (a
    /// preloaded file).
    fn get(&self, key: &str, allow_stale: bool) -> Lookup<Self::Entry>;

    /// RENEW: makes the entry for `key` fresh for `lifetime` from now.
    fn renew(&self, key: &str, lifetime: Lifetime) -> Option<Self::Entry>;

    /// STORE: keeps a response (a proxy's fill).
    fn store(&self, key: &str, head: StoreHead, headers: Box<[u8]>, body: Box<[u8]>);

    /// PURGE: removes `key`; whether it was there.
    fn purge(&self, key: &str) -> bool;

    /// The largest body a STORE may bring; `None` when it takes none.
    fn accept_len(&self) -> Option<u64>;

    /// The store's counters, for STATS.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// One stored response, as the server reads it to answer.
pub trait Stored {
    fn meta(&self) -> Meta;
    /// The header block, `Name: value\r\n` lines.
    fn headers(&self) -> &[u8];
    fn body(&self) -> &[u8];
}

/// What a GET found.
pub enum Lookup<E> {
    Found(E),
    /// Past its lifetime: the asker is to revalidate it.
    Expired(E),
    Missing,
}

/// Who takes calls off the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// The classic boss and workers: the main thread receives every call and hands it to
    /// a pool worker. A call costs two wake-ups in the cache (the boss, then a worker), but
    /// the boss is always there to drop a malformed message at once.
    Boss,
    /// Every worker waits on the queue itself, and the kernel hands each message to one
    /// waiting receiver: one wake-up fewer per call. A call waits in the queue while all
    /// workers are busy, as it would wait for a worker in the boss's pool.
    Workers,
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Instance name: the queue is `/NAME.req` and only `/NAME.seg.*` segments are served.
    pub name: String,
    /// Worker threads writing into segments.
    pub threads: usize,
    /// Who takes calls off the queue.
    pub dispatch: Dispatch,
    /// Simulated slowness, slept before each answer.
    pub delay: Duration,
    /// Slow motion, slept before each chunk of an answer, so that a transfer can be
    /// watched slot by slot in the proxy's live view. Zero in normal use.
    pub chunk_delay: Duration,
    /// How long a worker waits for the proxy to free a slot before it gives up; also how
    /// long a fast stop lets transfers in flight finish.
    pub timeout: Duration,
    /// How long a graceful stop (SIGQUIT) lets calls in flight and on the queue finish.
    pub drain_timeout: Duration,
}

/// Messages the queue holds: the kernel's default (and unprivileged maximum) `msg_max`.
pub const QUEUE_DEPTH: usize = 10;

/// The longest a receiving thread waits on the queue before it looks at the shutdown flag
/// again: the bound on how long SIGINT or SIGTERM takes to stop it.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// A graceful stop ends once no call has been in progress or arrived for this long. The
/// queue's name is gone by then, and a proxy notices that within its reconnect interval
/// (200 ms), so no proxy still sends to it.
const QUIET: Duration = Duration::from_secs(1);

/// The serving side of an instance: holds the instance lock and owns the request queue,
/// which it unlinks when it stops.
pub struct Server {
    config: Config,
    queue: MessageQueue,
    /// Held until the server is gone; declared after `queue` so that the queue is unlinked
    /// and closed while the lock still says it is ours.
    _lock: InstanceLock,
}

/// What the workers share.
struct Shared<B> {
    config: Config,
    backend: Arc<B>,
    mappings: Mappings,
    started: Instant,
    dropped: AtomicU64,
    stores_aborted: AtomicU64,
    transfers_failed: AtomicU64,
    /// What each worker is doing: the call and its key, `None` when idle. Shown by STATS,
    /// for the proxy's live view.
    workers: Vec<Mutex<Option<(Op, String)>>>,
    /// Whether the receiving threads go on taking calls off the queue.
    receiving: AtomicBool,
    /// Calls received and not yet answered, and when that last changed (microseconds since
    /// `started`): a graceful stop waits for these to settle.
    in_progress: AtomicU64,
    last_activity: AtomicU64,
}

/// A call checked and ready to answer: its segment mapped and on the call's generation.
struct Ready {
    seg: InUse,
    segment: String,
    generation: u64,
    call: Call,
}

/// A worker's place in [`Shared::workers`], held for one call.
struct Busy<'a>(&'a Mutex<Option<(Op, String)>>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *lock(self.0) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Creates the request queue of the instance that `lock` was taken for, replacing a
    /// stale one: holding the lock, any queue of that name is a dead cache's.
    ///
    /// # Errors
    /// Those of [`MessageQueue::create`], with the queue's name.
    pub fn new(config: Config, lock: InstanceLock) -> io::Result<Server> {
        let name = queue_name(&config.name);
        let (queue, replaced) = MessageQueue::create(&name, QUEUE_DEPTH, MESSAGE_CAPACITY)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the queue {name}: {e}")))?;
        if replaced {
            log::warn!("replaced a stale queue {name}");
        }
        Ok(Server {
            config,
            queue,
            _lock: lock,
        })
    }

    /// Serves calls until `shutdown` is triggered (noticed within `SHUTDOWN_POLL`), then
    /// unlinks the queue and lets transfers in flight finish: for at most the timeout in a
    /// fast stop; in a graceful one, calls already on the queue are answered too, until
    /// nothing has moved for [`QUIET`] or the drain timeout has passed. Returns the number
    /// of calls still running when it gave up waiting. The instance lock is released last,
    /// when this returns.
    pub fn run<B: Backend>(self, backend: Arc<B>, shutdown: &Shutdown) -> usize {
        let config = self.config.clone();
        let threads = config.threads.max(1);
        let workers = ThreadPool::with_name("cache-worker".into(), threads);
        let shared = Arc::new(Shared {
            mappings: Mappings::new(&config.name),
            config: config.clone(),
            backend,
            started: Instant::now(),
            dropped: AtomicU64::new(0),
            stores_aborted: AtomicU64::new(0),
            transfers_failed: AtomicU64::new(0),
            workers: (0..threads).map(|_| Mutex::new(None)).collect(),
            receiving: AtomicBool::new(true),
            in_progress: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
        });
        let queue = Arc::new(self.queue);
        let name = queue_name(&config.name);
        log::info!(
            "serving on {name} with {threads} threads ({:?} dispatch)",
            config.dispatch
        );
        // Nothing wakes a receiver for a shutdown: a message sent to the queue by name could
        // reach another process's queue. So every wait on the queue is bounded and the
        // flag checked after it. In the boss's dispatch the main thread receives; in the
        // workers' it only watches the flag.
        let mut buf = vec![0u8; MESSAGE_CAPACITY.max(queue.msg_size())];
        let boss = config.dispatch == Dispatch::Boss;
        let mut step = || {
            if !boss {
                std::thread::sleep(SHUTDOWN_POLL);
            } else if let Some(message) = shared.receive(&queue, &mut buf) {
                let shared = Arc::clone(&shared);
                workers.execute(move || shared.serve(message));
            }
        };
        if !boss {
            for _ in 0..threads {
                let (shared, queue) = (Arc::clone(&shared), Arc::clone(&queue));
                workers.execute(move || {
                    let mut buf = vec![0u8; MESSAGE_CAPACITY.max(queue.msg_size())];
                    while shared.receiving.load(Ordering::SeqCst) {
                        if let Some(message) = shared.receive(&queue, &mut buf) {
                            shared.serve(message);
                        }
                    }
                });
            }
        }
        while !shutdown.is_triggered() {
            step();
        }
        // The name goes first: no proxy connects any more, and connected ones notice that
        // it is gone and serve without the cache. The queue itself lives on while we hold
        // it, so calls already sent are still received.
        if let Err(e) = queue.unlink() {
            log::warn!("unlinking {name}: {e}");
        }
        let mut limit = config.timeout + SHUTDOWN_POLL;
        if shutdown.stop() == Some(Stop::Graceful) {
            let deadline = Instant::now() + config.drain_timeout;
            // Proxies may still send for a moment after the unlink: the quiet time starts now.
            shared.touch();
            log::info!(
                "{name} removed; answering the calls in flight (for at most {:?})",
                config.drain_timeout
            );
            while shutdown.stop() == Some(Stop::Graceful)
                && Instant::now() < deadline
                && !shared.quiet()
            {
                step();
            }
            limit = deadline
                .saturating_duration_since(Instant::now())
                .max(SHUTDOWN_POLL);
        }
        shared.receiving.store(false, Ordering::SeqCst);
        // The descriptor closes when the last receiver lets go of it.
        drop(queue);
        join_within(&workers, limit)
    }
}

impl<B: Backend> Shared<B> {
    /// Waits at most [`SHUTDOWN_POLL`] for one message and checks it: a decoded call for a
    /// segment of this instance, or `None` (nothing came, or it was dropped and logged).
    fn receive(&self, queue: &MessageQueue, buf: &mut [u8]) -> Option<Message> {
        let len = match queue.receive_timeout(buf, SHUTDOWN_POLL) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
            Err(e) => {
                log::error!("receiving from {}: {e}", queue_name(&self.config.name));
                std::thread::sleep(SHUTDOWN_POLL);
                return None;
            }
        };
        match Message::decode(&buf[..len]) {
            Ok(m) if segment_owner(&self.config.name, &m.segment).is_some() => {
                // Counted from here, not when a worker starts on it, so that a graceful
                // stop never sees a call between the boss and its worker as none at all.
                self.in_progress.fetch_add(1, Ordering::SeqCst);
                self.touch();
                Some(m)
            }
            Ok(m) => {
                self.drop_message(&format!(
                    "a {} call: segment {:?} is outside this instance",
                    m.call.name(),
                    m.segment
                ));
                None
            }
            Err(e) => {
                self.drop_message(&format!("a malformed message: {e}"));
                None
            }
        }
    }

    fn drop_message(&self, what: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        log::warn!("dropped {what}");
    }

    /// Marks a free place in the worker table as this call's, until the guard goes. At
    /// most `threads` calls run at once, so a place is always free.
    fn busy(&self, call: &Call) -> Option<Busy<'_>> {
        self.workers.iter().find_map(|place| {
            let mut held = place.try_lock().ok()?;
            if held.is_some() {
                return None;
            }
            *held = Some((call.op(), call.key().unwrap_or("").to_owned()));
            Some(Busy(place))
        })
    }

    /// Serves one call: maps its segment, checks its generation, and does what it asks.
    fn serve(&self, message: Message) {
        let _busy = self.busy(&message.call);
        if let Some(ready) = self.prepare(message) {
            self.answer(ready);
        }
        self.in_progress.fetch_sub(1, Ordering::SeqCst);
        self.touch();
    }

    /// Notes that a call arrived or ended now.
    fn touch(&self) {
        let now = self.started.elapsed().as_micros() as u64;
        self.last_activity.fetch_max(now, Ordering::SeqCst);
    }

    /// Whether no call is in progress and none arrived or ended for [`QUIET`].
    fn quiet(&self) -> bool {
        let now = self.started.elapsed().as_micros() as u64;
        let since = now.saturating_sub(self.last_activity.load(Ordering::SeqCst));
        self.in_progress.load(Ordering::SeqCst) == 0 && since >= QUIET.as_micros() as u64
    }

    /// Maps the call's segment and checks it is on the call's generation: the call, ready
    /// to answer, or `None` (dropped and logged).
    fn prepare(&self, message: Message) -> Option<Ready> {
        let Message {
            segment,
            generation,
            call,
        } = message;
        let what = || format!("a {} call for {:?}", call.name(), call.key().unwrap_or("-"));
        if generation == 0 {
            // No checkout ever gives 0: a fresh segment carries it until its first one.
            self.drop_message(&format!("{}: generation 0", what()));
            return None;
        }
        let seg = match self.mappings.get(&segment, generation) {
            Ok(Some(seg)) => seg,
            Ok(None) => {
                self.drop_message(&format!("{}: segment {segment} is in use", what()));
                return None;
            }
            Err(e) => {
                self.drop_message(&format!("{}: segment {segment}: {e}", what()));
                return None;
            }
        };
        if seg.generation() != generation {
            self.drop_message(&format!(
                "a stale {}: segment {segment} is on generation {}, not {generation}",
                what(),
                seg.generation()
            ));
            return None;
        }
        if !self.config.delay.is_zero() {
            // Said before the wait, so that a test can tell the call has arrived.
            log::debug!("{} arrived; answering in {:?}", what(), self.config.delay);
            std::thread::sleep(self.config.delay);
        }
        Some(Ready {
            seg,
            segment,
            generation,
            call,
        })
    }

    /// Does what a prepared call asks.
    fn answer(&self, ready: Ready) {
        let Ready {
            seg,
            segment,
            generation,
            call,
        } = ready;
        let to = Answerer {
            seg: &seg,
            generation,
            timeout: self.config.timeout,
            chunk_delay: self.config.chunk_delay,
        };
        let outcome = match &call {
            Call::Get {
                key,
                conditions,
                allow_stale,
                head_only,
            } => self.send_found(
                &to,
                key,
                self.backend.get(key, *allow_stale),
                conditions,
                *head_only,
            ),
            Call::Renew {
                key,
                lifetime,
                conditions,
                head_only,
            } => {
                let found = match self.backend.renew(key, *lifetime) {
                    Some(entry) => Lookup::Found(entry),
                    None => Lookup::Missing,
                };
                self.send_found(&to, key, found, conditions, *head_only)
            }
            Call::Store { key, len } => self.take_store(&to, key, *len),
            Call::Purge { key } => {
                let existed = self.backend.purge(key);
                to.send(&Head::Purged { existed }, &[], &[])
            }
            Call::Stats => to.send(&Head::Stats, &[], &wire::encode_stats(&self.stats())),
        };
        match outcome {
            Ok(()) => {}
            Err(ChannelError::Cancelled) => {
                log::debug!("{}: the proxy cancelled", call.key().unwrap_or("-"))
            }
            Err(e) => {
                self.transfers_failed.fetch_add(1, Ordering::Relaxed);
                let key = call.key().unwrap_or("-");
                log::warn!("a {} call for {key:?} via {segment}: {e}", call.name());
            }
        }
    }

    /// Answers a GET or a RENEW with what the store found.
    fn send_found(
        &self,
        to: &Answerer,
        key: &str,
        found: Lookup<B::Entry>,
        conditions: &Conditions,
        head_only: bool,
    ) -> Result<(), ChannelError> {
        match found {
            Lookup::Found(entry) => to.answer(key, &entry, conditions, head_only),
            Lookup::Expired(entry) => {
                let head = Head::Expired {
                    meta: entry.meta(),
                    accept_len: self.backend.accept_len(),
                };
                to.send(&head, entry.headers(), &[])
            }
            Lookup::Missing => to.missing(self.backend.accept_len()),
        }
    }

    /// Receives a response the proxy fetched on a miss and stores it. The proxy learns that
    /// the entry is in when the last slot comes back (see `Sender::wait_drained`), so a
    /// request that waited for this fill finds it.
    fn take_store(&self, to: &Answerer, key: &str, len: u64) -> Result<(), ChannelError> {
        let (envelope, mut rx) =
            Receiver::recv_head::<StoreHead>(to.seg, to.generation, to.timeout)?;
        let mut stream = Incoming {
            seg: to.seg,
            rx: &mut rx,
        };
        let takes = self.backend.accept_len().is_some_and(|most| len <= most);
        if envelope.stream.body_len != len || !takes {
            // Not something we keep (the proxy should not have sent it): read it off so
            // the proxy is not left waiting, and keep nothing.
            io::copy(&mut stream, &mut io::sink()).map_err(ChannelError::from_io)?;
            rx.finish(to.seg)?;
            self.stores_aborted.fetch_add(1, Ordering::Relaxed);
            log::warn!("refused a STORE of {key} ({len} bytes)");
            return Ok(());
        }
        let mut headers = vec![0u8; envelope.stream.header_len as usize].into_boxed_slice();
        let mut body = vec![0u8; len as usize].into_boxed_slice();
        let read = stream
            .read_exact(&mut headers)
            .and_then(|()| stream.read_exact(&mut body));
        if let Err(e) = read {
            // A fill aborted half-way leaves no partial entry.
            self.stores_aborted.fetch_add(1, Ordering::Relaxed);
            return Err(ChannelError::from_io(e));
        }
        if !valid_header_block(&headers) {
            self.stores_aborted.fetch_add(1, Ordering::Relaxed);
            rx.finish(to.seg)?;
            return Err(ChannelError::Protocol("malformed header block"));
        }
        debug_assert!(headers.len() as u32 <= MAX_HEADER_BLOCK);
        self.backend.store(key, envelope.head, headers, body);
        rx.finish(to.seg)
    }

    /// The cache's counters, then what each worker is doing, for STATS.
    fn stats(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let own = [
            ("workers", self.workers.len() as u64),
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("stores_aborted", load(&self.stores_aborted)),
            ("messages_dropped", load(&self.dropped)),
            ("transfers_failed", load(&self.transfers_failed)),
        ];
        Stats {
            pid: std::process::id(),
            counters: own
                .into_iter()
                .chain(self.backend.counters())
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            workers: self
                .workers
                .iter()
                .map(|place| lock(place).clone())
                .collect(),
        }
    }
}

/// One call's answer through one segment.
struct Answerer<'a> {
    seg: &'a Segment,
    generation: u64,
    timeout: Duration,
    chunk_delay: Duration,
}

impl Answerer<'_> {
    /// Sends `head`, then the stream: `headers` (a header block) and `body`.
    fn send(&self, head: &Head, headers: &[u8], body: &[u8]) -> Result<(), ChannelError> {
        if self.chunk_delay.is_zero() {
            return channel::send(self.seg, self.generation, head, headers, body, self.timeout);
        }
        // Slow motion: about one slot's worth at a time, with a pause before each.
        let stream = stream_of(headers, body);
        let mut tx = Sender::start(self.seg, self.generation, head, stream, self.timeout)?;
        for piece in [headers, body]
            .into_iter()
            .flat_map(|p| p.chunks(self.seg.slot_capacity()))
        {
            std::thread::sleep(self.chunk_delay);
            tx.write(self.seg, piece)?;
            tx.flush(self.seg)?;
        }
        tx.finish(self.seg)
    }

    fn missing(&self, accept_len: Option<u64>) -> Result<(), ChannelError> {
        self.send(&Head::Missing { accept_len }, &[], &[])
    }

    /// Answers with `entry` as `conditions` decide: its header block, then the bytes the
    /// outcome sends.
    fn answer(
        &self,
        key: &str,
        entry: &impl Stored,
        conditions: &Conditions,
        head_only: bool,
    ) -> Result<(), ChannelError> {
        let meta = entry.meta();
        let outcome = conditions.evaluate(&meta.validators());
        let (start, len) = match outcome.body_range(meta.total_len) {
            Some(range) if !head_only => range,
            _ => (0, 0),
        };
        let head = Head::Found { meta, outcome };
        let body = &entry.body()[start as usize..(start + len) as usize];
        self.send(&head, entry.headers(), body)?;
        // Tests read this line to see how many bytes crossed the channel.
        log::debug!(
            "sent {key}: {len} bytes {start}..{} of {}",
            start + len,
            entry.body().len()
        );
        Ok(())
    }
}

/// A transfer's stream as `Read`, for the STORE side.
struct Incoming<'a> {
    seg: &'a Segment,
    rx: &'a mut Receiver,
}

impl Read for Incoming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.rx.read(self.seg, buf)?)
    }
}

/// The segments this cache has mapped, kept between calls.
///
/// Opening a segment costs `shm_open`, `fstat`, `mmap` and later `munmap`, plus a page
/// fault for every page the transfer touches, on every call. Keeping the mapping makes a
/// hit a few atomic operations and copies. A kept mapping is used only while the segment
/// is on the generation the call names: a proxy that rebuilt a segment created a new
/// object under the same name, which a fresh open finds. Mappings of proxies that are gone
/// are dropped when a new segment name turns up, so their memory is not held forever.
///
/// One mapping serves one call at a time. The protocol gives a transfer the segment alone;
/// a duplicated or forged call for a segment already in use is refused here, so two of our
/// own threads never copy into the same slot at once.
struct Mappings {
    instance: String,
    kept: Mutex<HashMap<String, Arc<Kept>>>,
}

struct Kept {
    seg: Segment,
    busy: AtomicBool,
}

/// How long a call waits for the previous user of its mapping to let go. That worker has
/// posted its last chunk and is on its way out; the proxy may have read the answer, taken
/// the segment back and sent the next call before it returns, and on a loaded machine a
/// preempted thread can take a good part of a second to run again (100 ms was seen too
/// short under a benchmark: the call was dropped and its request waited out the cache
/// timeout). A duplicate call waits this long too, then finds its generation stale.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Exclusive use of a kept mapping for one call; released when dropped.
struct InUse(Arc<Kept>);

impl std::ops::Deref for InUse {
    type Target = Segment;

    fn deref(&self) -> &Segment {
        &self.0.seg
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

impl Mappings {
    fn new(instance: &str) -> Mappings {
        Mappings {
            instance: instance.to_owned(),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// A mapping of `name` that was on `generation` when looked at, for this call alone: a
    /// kept one, or a fresh one (which the caller must still check, since the call may be
    /// stale). `Ok(None)`: the kept mapping is serving another call.
    fn get(&self, name: &str, generation: u64) -> Result<Option<InUse>, OpenError> {
        let kept = self.lock().get(name).cloned();
        if let Some(kept) = kept.filter(|k| k.seg.generation() == generation) {
            // The previous transfer's worker may still be on its way out (it has posted its
            // last chunk but not yet returned): wait a moment for it. A call that finds the
            // mapping busy for longer is a duplicate.
            let deadline = Instant::now() + BUSY_WAIT;
            loop {
                let free = kept
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok();
                if free {
                    return Ok(Some(InUse(kept)));
                }
                if Instant::now() > deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let kept = Arc::new(Kept {
            seg: Segment::open(name)?,
            busy: AtomicBool::new(true),
        });
        let mut map = self.lock();
        if !map.contains_key(name) {
            let instance = &self.instance;
            map.retain(|n, _| segment_owner(instance, n).is_some_and(sys::process_alive));
        }
        map.insert(name.to_owned(), Arc::clone(&kept));
        Ok(Some(InUse(kept)))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Kept>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}
