//! `shmcached`'s main loop: receive requests on the queue, serve each on a worker thread.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use super::mappings::Mappings;
use super::preload::{self, Checked};
use super::store::{Entry, Store};
use crate::ipc::channel::{self, ChannelError, Head, Receiver, Status};
use crate::ipc::lock::InstanceLock;
use crate::ipc::queue::MessageQueue;
use crate::ipc::segment::Segment;
use crate::ipc::wire::{ALLOW_STALE, FROM_END, MESSAGE_SIZE, Op, Request, Text};
use crate::ipc::{is_instance_segment, queue_name};
use crate::shutdown::{Shutdown, join_within};

/// How a cache process behaves.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Instance name: the queue is `/NAME.req` and only `/NAME.seg.*` segments are served.
    pub name: String,
    /// Worker threads writing into segments.
    pub threads: usize,
    /// Simulated slowness, slept before each answer.
    pub delay: Duration,
    /// How long a worker waits for the proxy to free a slot before it gives up.
    pub timeout: Duration,
}

/// The cache process: holds the instance lock and owns the request queue (and unlinks both
/// when dropped).
///
/// Why a boss and workers: the main thread only receives and validates; a worker may block
/// for a long time on a slow proxy, and must not hold up requests for other segments.
pub struct Daemon {
    shared: Arc<Shared>,
    queue: MessageQueue,
    /// Held until the daemon is gone; declared after `queue` so that the queue is unlinked
    /// while the lock still says it is ours.
    _lock: InstanceLock,
}

/// What the workers share.
struct Shared {
    config: DaemonConfig,
    store: Arc<Store>,
    mappings: Mappings,
    started: Instant,
    dropped: AtomicU64,
    stores_aborted: AtomicU64,
    transfers_failed: AtomicU64,
    expired: AtomicU64,
    renewed: AtomicU64,
    reloaded: AtomicU64,
    sources_gone: AtomicU64,
    purged: AtomicU64,
}

/// Messages the queue holds: the kernel's default (and unprivileged maximum) `msg_max`.
pub const QUEUE_DEPTH: usize = 10;

/// The longest the main thread waits on the queue before it looks at the shutdown flag
/// again: the bound on how long SIGINT or SIGTERM takes to stop it.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

impl Daemon {
    /// Creates the request queue of the instance that `lock` was taken for, replacing a
    /// stale one: holding the lock, any queue of that name is a dead cache's.
    ///
    /// # Errors
    /// Those of [`MessageQueue::create`], with the queue's name.
    pub fn new(config: DaemonConfig, store: Arc<Store>, lock: InstanceLock) -> io::Result<Daemon> {
        let name = queue_name(&config.name);
        let (queue, replaced) = MessageQueue::create(&name, QUEUE_DEPTH, MESSAGE_SIZE)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the queue {name}: {e}")))?;
        if replaced {
            log::warn!("replaced a stale queue {name}");
        }
        let shared = Arc::new(Shared {
            mappings: Mappings::new(&config.name),
            config,
            store,
            started: Instant::now(),
            dropped: AtomicU64::new(0),
            stores_aborted: AtomicU64::new(0),
            transfers_failed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            reloaded: AtomicU64::new(0),
            sources_gone: AtomicU64::new(0),
            purged: AtomicU64::new(0),
        });
        Ok(Daemon {
            shared,
            queue,
            _lock: lock,
        })
    }

    /// Serves requests until `shutdown` is triggered (noticed within `SHUTDOWN_POLL`),
    /// then unlinks the queue and lets in-flight transfers finish for at most the timeout.
    /// Returns the number of transfers still running when it gave up waiting. The instance
    /// lock is released last, when this returns.
    pub fn run(self, shutdown: &Shutdown) -> usize {
        let config = &self.shared.config;
        let workers = ThreadPool::with_name("cache-worker".into(), config.threads.max(1));
        let mut buf = vec![0u8; self.queue.msg_size().max(MESSAGE_SIZE)];
        let (objects, bytes) = self.shared.store.size();
        log::info!(
            "serving {objects} entries ({bytes} of {} bytes) on {} with {} threads",
            self.shared.store.capacity(),
            queue_name(&config.name),
            config.threads
        );
        // Nothing wakes us for a shutdown: a message sent to the queue by name could reach
        // another process's queue. So the wait is bounded and the flag checked after it.
        while !shutdown.is_triggered() {
            let len = match self.queue.receive_timeout(&mut buf, SHUTDOWN_POLL) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) => {
                    log::error!("receiving from {}: {e}", queue_name(&config.name));
                    std::thread::sleep(SHUTDOWN_POLL);
                    continue;
                }
            };
            let request = match Request::decode(&buf[..len]) {
                Ok(r) if is_instance_segment(&config.name, &r.segment) => r,
                Ok(r) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "dropped a request for {:?}: segment {:?} is outside this instance",
                        r.key,
                        r.segment
                    );
                    continue;
                }
                Err(e) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("dropped a malformed message: {e}");
                    continue;
                }
            };
            let shared = Arc::clone(&self.shared);
            workers.execute(move || shared.serve(request));
        }
        drop(self.queue);
        join_within(&workers, self.shared.config.timeout)
    }
}

impl Shared {
    /// Serves one request: opens its segment, checks its generation, and does what it asks.
    fn serve(&self, request: Request<Text>) {
        if request.generation == 0 {
            // No checkout ever gives 0: a fresh segment carries it until its first one.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!("dropped a request for {:?}: generation 0", request.key);
            return;
        }
        let seg = match self.mappings.get(&request.segment, request.generation) {
            Ok(Some(seg)) => seg,
            Ok(None) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "dropped a duplicate request for {:?}: segment {} is in use",
                    request.key,
                    request.segment
                );
                return;
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "dropped a request for {:?}: segment {}: {e}",
                    request.key,
                    request.segment
                );
                return;
            }
        };
        if seg.generation() != request.generation {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "dropped a stale request for {:?}: segment {} is on generation {}, not {}",
                request.key,
                request.segment,
                seg.generation(),
                request.generation
            );
            return;
        }
        if !self.config.delay.is_zero() {
            std::thread::sleep(self.config.delay);
        }
        let outcome = match request.op {
            Op::Get => self.answer_get(&seg, &request),
            Op::Store => self.take_store(&seg, &request),
            Op::Stats => self.answer_stats(&seg, &request),
            Op::Renew => self.renew(&seg, &request),
            Op::Purge => self.purge(&seg, &request),
        };
        match outcome {
            Ok(()) => {}
            Err(ChannelError::Cancelled) => log::debug!("{}: the proxy cancelled", request.key),
            Err(e) => {
                self.transfers_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{:?} {} via {}: {e}",
                    request.op,
                    request.key,
                    request.segment
                );
            }
        }
    }

    fn answer_get(&self, seg: &Segment, request: &Request<Text>) -> Result<(), ChannelError> {
        let mut entry = self.store.get(&request.key);
        if let Some(held) = entry.take_if(|e| e.source.is_some() && !e.is_fresh()) {
            entry = self.check_preloaded(&request.key, &held);
        }
        let Some(entry) = entry else {
            let head = Head {
                accept_len: self.store.accept_len(),
                ..Head::empty(Status::NotFound)
            };
            return channel::send(seg, request.generation, &head, &[], self.config.timeout);
        };
        let total = entry.body.len() as u64;
        // A preloaded entry still expired here could not be checked just now: it is served
        // as it is, since the proxy would revalidate it against the wrong storage.
        let expired =
            !entry.is_fresh() && request.flags & ALLOW_STALE == 0 && entry.source.is_none();
        let (start, len) = if expired {
            (0, 0)
        } else {
            body_range(total, request)
        };
        let head = Head {
            status: if expired {
                Status::Expired
            } else {
                Status::Found
            },
            total_len: total,
            body_offset: start,
            body_len: len,
            modified: entry.modified,
            etag: entry.etag,
            // An expired entry may be replaced by a fill, like a miss.
            accept_len: if expired { self.store.accept_len() } else { 0 },
            stored_at: entry.stored_at(),
            max_age: entry.max_age(),
            source_version: entry.source_version,
            answerer_pid: 0,
        };
        if expired {
            // The proxy revalidates it against secondary storage and then renews or
            // replaces it.
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        let body = &entry.body[start as usize..(start + len) as usize];
        channel::send(seg, request.generation, &head, body, self.config.timeout)?;
        // Tests read this line to see how many bytes crossed the channel.
        log::debug!(
            "sent {}: {len} bytes {start}..{} of {total}",
            request.key,
            start + len
        );
        Ok(())
    }

    /// Receives an object the proxy fetched on a miss and stores it. The proxy learns that
    /// the entry is in when the last slot comes back (see `Sender::wait_drained`), so a
    /// request that waited for this fill finds it.
    fn take_store(&self, seg: &Segment, request: &Request<Text>) -> Result<(), ChannelError> {
        let (head, mut rx) = Receiver::recv_head(seg, request.generation, self.config.timeout)?;
        let whole = head.status == Status::Found
            && head.body_offset == 0
            && head.body_len == head.total_len;
        if !whole || head.total_len > self.store.accept_len() {
            // Not something we keep (the proxy should not have sent it): read it off so the
            // proxy is not left waiting, and keep nothing.
            let mut scratch = [0u8; 16 * 1024];
            while rx.remaining() > 0 {
                rx.read(seg, &mut scratch)?;
            }
            rx.finish(seg)?;
            self.stores_aborted.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "refused a STORE of {} ({} bytes)",
                request.key,
                head.total_len
            );
            return Ok(());
        }
        let mut body = vec![0u8; head.total_len as usize];
        let mut at = 0;
        while at < body.len() {
            match rx.read(seg, &mut body[at..]) {
                Ok(n) => at += n,
                Err(e) => {
                    // A fill aborted half-way leaves no partial entry.
                    self.stores_aborted.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        let len = body.len() as u64;
        // No source: even if it replaces a preloaded entry, what the proxy stored is an
        // ordinary entry, revalidated by the proxy against its own storage.
        let entry = Entry::new(
            body.into_boxed_slice(),
            head.modified,
            head.etag,
            head.source_version,
            head.max_age,
        );
        match self.store.insert(&request.key, entry) {
            Ok(evicted) => log::debug!("stored {}: {len} bytes, {evicted} evicted", request.key),
            Err(e) => log::warn!("could not store {} ({len} bytes): {e:?}", request.key),
        }
        rx.finish(seg)
    }

    /// Checks an expired preloaded entry against the file it was read from (see
    /// [`preload::check`]) and returns what to serve: the entry renewed, the file's new
    /// bytes, or nothing when the file is gone (the proxy then treats it as a miss).
    ///
    /// The cache does this, not the proxy, because only the cache knows which file a key
    /// was preloaded from: a manifest's keys need not match the paths of the proxy's `-s`.
    fn check_preloaded(&self, key: &str, entry: &Arc<Entry>) -> Option<Arc<Entry>> {
        self.expired.fetch_add(1, Ordering::Relaxed);
        match preload::check(&self.store, key, entry) {
            Checked::Renewed(entry) => {
                self.renewed.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Checked::Reloaded(entry) => {
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Checked::Gone => {
                self.sources_gone.fetch_add(1, Ordering::Relaxed);
                // The lookup counted a hit; what the proxy gets is a miss.
                self.store.stats.hits.fetch_sub(1, Ordering::Relaxed);
                self.store.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Checked::Unchecked(entry) => Some(entry),
            Checked::Superseded(current) => current,
        }
    }

    /// Makes an expired entry fresh again for `request.length` seconds.
    fn renew(&self, seg: &Segment, request: &Request<Text>) -> Result<(), ChannelError> {
        let status = match self.store.peek(&request.key) {
            Some(entry) => {
                entry.renew(request.length);
                self.renewed.fetch_add(1, Ordering::Relaxed);
                Status::Found
            }
            None => Status::NotFound,
        };
        self.answer_status(seg, request, status)
    }

    /// Removes an entry; the status says whether it was there.
    fn purge(&self, seg: &Segment, request: &Request<Text>) -> Result<(), ChannelError> {
        let status = if self.store.remove(&request.key) {
            self.purged.fetch_add(1, Ordering::Relaxed);
            log::info!("purged {}", request.key);
            Status::Found
        } else {
            Status::NotFound
        };
        self.answer_status(seg, request, status)
    }

    /// An answer that is a status alone, with no body.
    fn answer_status(
        &self,
        seg: &Segment,
        request: &Request<Text>,
        status: Status,
    ) -> Result<(), ChannelError> {
        let head = Head::empty(status);
        channel::send(seg, request.generation, &head, &[], self.config.timeout)
    }

    /// Writes the counters as `name value` lines.
    fn answer_stats(&self, seg: &Segment, request: &Request<Text>) -> Result<(), ChannelError> {
        let text = self.stats_text();
        let head = Head {
            status: Status::Found,
            total_len: text.len() as u64,
            body_len: text.len() as u64,
            ..Head::empty(Status::Found)
        };
        channel::send(
            seg,
            request.generation,
            &head,
            text.as_bytes(),
            self.config.timeout,
        )
    }

    fn stats_text(&self) -> String {
        let (objects, bytes) = self.store.size();
        let s = &self.store.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, value) in [
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("objects", objects as u64),
            ("bytes_held", bytes),
            ("capacity_bytes", self.store.capacity()),
            ("max_object_bytes", self.store.accept_len()),
            ("hits", load(&s.hits)),
            ("misses", load(&s.misses)),
            ("stores", load(&s.inserts)),
            ("stores_refused", load(&s.refused)),
            ("stores_aborted", load(&self.stores_aborted)),
            ("evictions", load(&s.evictions)),
            ("expired", load(&self.expired)),
            ("renewed", load(&self.renewed)),
            ("reloaded", load(&self.reloaded)),
            ("sources_gone", load(&self.sources_gone)),
            ("purged", load(&self.purged)),
            ("messages_dropped", load(&self.dropped)),
            ("transfers_failed", load(&self.transfers_failed)),
        ] {
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// The part of an object of `total` bytes that `request` asks for, clamped to the object:
/// a start past the end gives an empty body at the end.
fn body_range(total: u64, request: &Request<Text>) -> (u64, u64) {
    let start = if request.flags & FROM_END != 0 {
        total - request.offset.min(total)
    } else {
        request.offset.min(total)
    };
    (start, request.length.min(total - start))
}
