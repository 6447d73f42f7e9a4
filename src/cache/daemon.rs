//! `shmcached`'s main loop: receive requests on the queue, serve each on a worker thread.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use threadpool::ThreadPool;

use super::store::Store;
use crate::ipc::channel::{self, ChannelError, Head, Status};
use crate::ipc::queue::MessageQueue;
use crate::ipc::segment::Segment;
use crate::ipc::wire::{FROM_END, MESSAGE_SIZE, Op, Request};
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

/// The cache process: owns the request queue (and unlinks it when dropped).
///
/// Why a boss and workers: the main thread only receives and validates; a worker may block
/// for a long time on a slow proxy, and must not hold up requests for other segments.
pub struct Daemon {
    config: DaemonConfig,
    store: Arc<Store>,
    queue: MessageQueue,
}

/// Messages the queue holds: the kernel's default (and unprivileged maximum) `msg_max`.
pub const QUEUE_DEPTH: usize = 10;

impl Daemon {
    /// Creates the request queue, replacing a stale one.
    ///
    /// # Errors
    /// Those of [`MessageQueue::create`].
    pub fn new(config: DaemonConfig, store: Arc<Store>) -> io::Result<Daemon> {
        let name = queue_name(&config.name);
        let (queue, replaced) = MessageQueue::create(&name, QUEUE_DEPTH, MESSAGE_SIZE)?;
        if replaced {
            log::warn!("replaced a stale queue {name}");
        }
        Ok(Daemon {
            config,
            store,
            queue,
        })
    }

    /// Wakes a daemon of instance `name` blocked in [`run`](Self::run), so that it notices
    /// its shutdown flag. Sends an empty message without waiting; if the queue is full, the
    /// daemon is awake anyway.
    pub fn wake(name: &str) {
        if let Ok(q) = MessageQueue::open(&queue_name(name)) {
            let _ = q.send_timeout(&[], Duration::ZERO);
        }
    }

    /// Serves requests until `shutdown` is triggered (and [`wake`](Self::wake) called),
    /// then lets in-flight transfers finish for at most the timeout. Returns the number of
    /// transfers still running when it gave up waiting.
    pub fn run(self, shutdown: &Shutdown) -> usize {
        let workers = ThreadPool::with_name("cache-worker".into(), self.config.threads.max(1));
        let mut buf = vec![0u8; self.queue.msg_size().max(MESSAGE_SIZE)];
        log::info!(
            "serving {} on {} with {} threads",
            describe_store(&self.store),
            queue_name(&self.config.name),
            self.config.threads
        );
        while !shutdown.is_triggered() {
            let len = match self.queue.receive(&mut buf) {
                Ok(len) => len,
                Err(e) => {
                    log::error!("receiving from the queue: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if shutdown.is_triggered() {
                break;
            }
            let request = match Request::decode(&buf[..len]) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("dropped a malformed message: {e}");
                    continue;
                }
            };
            if !is_instance_segment(&self.config.name, &request.segment) {
                log::warn!(
                    "dropped a request for {:?}: segment {:?} is outside this instance",
                    request.key,
                    request.segment
                );
                continue;
            }
            let store = Arc::clone(&self.store);
            let config = self.config.clone();
            workers.execute(move || serve(&config, &store, request));
        }
        drop(self.queue);
        join_within(&workers, self.config.timeout)
    }
}

fn describe_store(store: &Store) -> String {
    let (entries, bytes) = store.size();
    format!("{entries} entries ({bytes} bytes)")
}

/// The part of an object of `total` bytes that `request` asks for, clamped to the object:
/// a start past the end gives an empty body at the end.
fn body_range(total: u64, request: &Request) -> (u64, u64) {
    let start = if request.flags & FROM_END != 0 {
        total - request.offset.min(total)
    } else {
        request.offset.min(total)
    };
    (start, request.length.min(total - start))
}

/// Answers one request: opens its segment, checks its generation, sends the range asked for.
fn serve(config: &DaemonConfig, store: &Store, request: Request) {
    let seg = match Segment::open(&request.segment) {
        Ok(seg) => seg,
        Err(e) => {
            log::warn!(
                "dropped a request for {:?}: segment {}: {e}",
                request.key,
                request.segment
            );
            return;
        }
    };
    if seg.generation() != request.generation {
        log::warn!(
            "dropped a stale request for {:?}: segment {} is on generation {}, not {}",
            request.key,
            request.segment,
            seg.generation(),
            request.generation
        );
        return;
    }
    if !config.delay.is_zero() {
        std::thread::sleep(config.delay);
    }
    let entry = match request.op {
        Op::Get => store.get(&request.key),
    };
    let (head, body) = match &entry {
        Some(entry) => {
            let (start, len) = body_range(entry.body.len() as u64, &request);
            let head = Head {
                status: Status::Found,
                total_len: entry.body.len() as u64,
                body_offset: start,
                body_len: len,
                modified: entry.modified,
                etag: Some(entry.etag.clone()),
                answerer_pid: 0,
            };
            (head, &entry.body[start as usize..(start + len) as usize])
        }
        None => (Head::empty(Status::NotFound), &[][..]),
    };
    match channel::send(&seg, request.generation, &head, body, config.timeout) {
        // Tests read this line to see how many bytes crossed the channel.
        Ok(()) => log::debug!(
            "sent {}: {} bytes {}..{} of {} ({:?})",
            request.key,
            head.body_len,
            head.body_offset,
            head.body_offset + head.body_len,
            head.total_len,
            head.status
        ),
        Err(ChannelError::Cancelled) => log::debug!("{}: the proxy cancelled", request.key),
        Err(e) => log::warn!("{} via {}: {e}", request.key, request.segment),
    }
}
