//! The proxy's side of the channel: send a request, wait for the head, hand back a body.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::ipc::channel::{ChannelError, Etag, Head, Receiver, Sender, Status, unix_now};
use crate::ipc::pool::{CheckoutError, Lease, SegmentPool};
use crate::ipc::queue::MessageQueue;
use crate::ipc::wire::{ALLOW_STALE, FROM_END, Op, Request};
use crate::ipc::{queue_name, sys};
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
    /// No segment became free in time.
    Busy(CheckoutError),
    /// The transfer failed before the head: the cache is slow, dead or broken.
    Failed(ChannelError),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Unavailable => write!(f, "no cache is connected"),
            CacheError::Busy(e) => write!(f, "no free segment: {e:?}"),
            CacheError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A connection to the cache that survives the cache going away and coming back.
///
/// The queue handle sits behind a lock that is held only to clone an `Arc`; a connector
/// thread keeps it pointing at the live queue of our instance: it opens the queue when it
/// appears, switches when a restarted cache has created a new queue under the same name
/// (told apart by inode), and drops it when the queue disappears or the process that
/// answers on it has died. A cache killed with SIGKILL leaves its queue behind; without the
/// pid check every request would wait out the timeout on a queue nobody reads.
pub struct CacheClient {
    queue_name: String,
    queue: RwLock<Option<Arc<MessageQueue>>>,
    /// The pid that answered on the current queue (0 until the first answer).
    cache_pid: AtomicU32,
    pool: Arc<SegmentPool>,
    timeout: Duration,
}

/// How often the connector looks at the queue name.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);

impl CacheClient {
    pub fn new(instance: &str, pool: Arc<SegmentPool>, timeout: Duration) -> Arc<CacheClient> {
        let client = Arc::new(CacheClient {
            queue_name: queue_name(instance),
            queue: RwLock::new(None),
            cache_pid: AtomicU32::new(0),
            pool,
            timeout,
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
                }
            })?;
        Ok(())
    }

    fn current(&self) -> Option<Arc<MessageQueue>> {
        self.queue.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, queue: Option<Arc<MessageQueue>>) {
        self.cache_pid.store(0, Ordering::Relaxed);
        *self.queue.write().unwrap_or_else(|e| e.into_inner()) = queue;
    }

    /// Points the handle at the live queue of our instance, if any. `abandoned` remembers
    /// the identity of a queue whose cache died, so we do not reconnect to it.
    fn reconnect(&self, abandoned: &mut Option<u64>) {
        let current = self.current();
        let current_id = current.as_ref().and_then(|q| q.identity().ok());
        let pid = self.cache_pid.load(Ordering::Relaxed);
        if current.is_some() && pid != 0 && !sys::process_alive(pid) {
            log::warn!("the cache (pid {pid}) is gone; serving without it");
            *abandoned = current_id;
            self.set(None);
            return;
        }
        match MessageQueue::open(&self.queue_name) {
            Ok(queue) => {
                let id = queue.identity().ok();
                if id != current_id && id != *abandoned {
                    log::info!("connected to the cache at {}", self.queue_name);
                    self.set(Some(Arc::new(queue)));
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

    /// Drops `queue` if it is still the current one (after it failed us).
    fn forget(&self, queue: &Arc<MessageQueue>) {
        let mut current = self.queue.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|q| Arc::ptr_eq(q, queue)) {
            *current = None;
        }
    }

    /// Checks out a segment and sends the cache a request that names it.
    fn send(
        &self,
        op: Op,
        key: &str,
        part: Part,
        extra_flags: u32,
    ) -> Result<(Arc<MessageQueue>, Lease), CacheError> {
        let queue = self.current().ok_or(CacheError::Unavailable)?;
        let mut lease = self.pool.checkout(self.timeout).map_err(CacheError::Busy)?;
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
        if let Err(e) = queue.send_timeout(&message, self.timeout) {
            // Nothing was sent, so nothing touches the segment.
            lease.set_at_rest();
            log::warn!("sending to the cache: {e}");
            self.forget(&queue);
            return Err(CacheError::Unavailable);
        }
        Ok((queue, lease))
    }

    /// Asks the cache for `part` of `key`; with `allow_stale`, even if it has expired.
    /// `key` must be a normalised key short enough for the wire format.
    pub fn get(&self, key: &str, part: Part, allow_stale: bool) -> Result<Answer, CacheError> {
        let extra = if allow_stale { ALLOW_STALE } else { 0 };
        let (queue, mut lease) = self.send(Op::Get, key, part, extra)?;
        let (head, mut rx) =
            match Receiver::recv_head(lease.segment(), lease.generation(), self.timeout) {
                Ok(answer) => answer,
                Err(e) => {
                    if matches!(e, ChannelError::TimedOut) {
                        // A cache that does not answer may be dead behind a queue that still
                        // exists; stop sending there until the connector finds a live one.
                        self.forget(&queue);
                    }
                    return Err(CacheError::Failed(e));
                }
            };
        self.cache_pid.store(head.answerer_pid, Ordering::Relaxed);
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
        let part = Part::Range {
            offset: 0,
            length: len,
        };
        let (_, lease) = self.send(Op::Store, key, part, 0)?;
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
        let tx = Sender::start(lease.segment(), lease.generation(), &head, self.timeout)
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
        let (_, mut lease) = self.send(op, key, part, 0)?;
        let (head, mut rx) = Receiver::recv_head(lease.segment(), lease.generation(), self.timeout)
            .map_err(CacheError::Failed)?;
        rx.finish(lease.segment()).map_err(CacheError::Failed)?;
        lease.set_at_rest();
        Ok(head.status == Status::Found)
    }

    /// The cache's counters, as `name value` lines.
    pub fn stats(&self) -> Result<String, CacheError> {
        let (_, mut lease) = self.send(Op::Stats, "/", Part::ALL, 0)?;
        let (head, mut rx) = Receiver::recv_head(lease.segment(), lease.generation(), self.timeout)
            .map_err(CacheError::Failed)?;
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
