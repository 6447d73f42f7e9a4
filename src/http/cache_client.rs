//! The proxy's side of the channel: send a request, wait for the head, hand back a body.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::ipc::channel::{ChannelError, Head, Receiver, Status};
use crate::ipc::pool::{CheckoutError, SegmentPool};
use crate::ipc::queue::MessageQueue;
use crate::ipc::wire::{FROM_END, Op, Request};
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
    Found { head: Head, body: CacheBody },
    NotFound,
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

    /// Asks the cache for `part` of `key`. `key` must be a normalised key short enough for
    /// the wire format.
    pub fn get(&self, key: &str, part: Part) -> Result<Answer, CacheError> {
        let queue = self.current().ok_or(CacheError::Unavailable)?;
        let mut lease = self.pool.checkout(self.timeout).map_err(CacheError::Busy)?;
        let (offset, length, flags) = part.wire();
        let request = Request {
            op: Op::Get,
            generation: lease.generation(),
            offset,
            length,
            flags,
            key: key.to_owned(),
            segment: lease.segment().name().to_owned(),
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
        let (head, rx) =
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
        match head.status {
            Status::Found => Ok(Answer::Found {
                head,
                body: CacheBody::new(lease, rx),
            }),
            Status::NotFound => {
                debug_assert!(rx.is_complete());
                lease.set_at_rest();
                Ok(Answer::NotFound)
            }
            Status::Error => {
                lease.set_at_rest();
                Err(CacheError::Failed(ChannelError::Protocol(
                    "the cache reported an error",
                )))
            }
        }
    }
}
