//! An HTTP/1.1 server: an acceptor, a waiter for connections no thread carries, and a pool
//! of threads each of which carries one request from its first byte to its last.
//!
//! This room knows nothing of caches, segments or origins: it may import `std`, its
//! kept crates (`libc`, `httparse`, `httpdate`, `log`) and its own modules, and nothing
//! else of this crate. What it serves comes from one [`Service`].
//!
//! Who holds a connection when:
//!
//! ```text
//!  accept ──▶ acceptor ──park──▶ waiter ◀──────────────────────────────┐
//!                                  │ readable (one-shot: one thread)   │ park: wait for
//!                                  ▼                                   │ the next request,
//!                             pool thread: read the request,           │ the rest of one,
//!                             Service::respond, write while            │ room to write, or
//!                             the client keeps up ─────────────────────┘ the lingering close
//!                                  │ a write finds no room within 5 ms:
//!                                  ▼
//!                             parked answer: the rest in memory (within --buffer-memory),
//!                             the thread back to the pool; writable ─▶ a pool thread
//!                             goes on with it
//! ```
//!
//! - The **acceptor** (`pool::accept`) takes each connection and parks it in the
//!   waiter, or refuses it with 503 past `--max-connections`, before anything is made
//!   for it.
//! - The **waiter** (`waiter`) holds every connection that waits for its client: an
//!   entry in a table and a one-shot epoll registration. No thread waits for a client.
//! - A **pool thread** (`pool`) waits for readiness itself (a follower on the shared
//!   epoll instance), takes the connection, reads what has arrived ([`request`]), and
//!   answers each whole request through the service, writing the answer itself
//!   ([`output`]) as long as every write finds room within [`output::LAG`]. At the first
//!   that does not, the answer **parks**: the rest waits in memory within a budget (and
//!   a body still in shared memory is read out of it and given back), and the thread is
//!   free. A slow client thus holds no thread, and a segment for at most one lagging write.
//! - The waiter's **clock** enforces the deadlines: an idle connection is closed after
//!   `--client-timeout`; a request not whole within `--client-timeout` of its first byte is
//!   answered 408; a parked answer whose client reads less than `--min-send-rate` over a
//!   window is cut. When every pool thread is busy, it queues up to `--max-pending` whole
//!   requests for the next free one and refuses the rest with 503 at once.

mod connection;
pub mod output;
mod pool;
pub mod request;
pub mod response;
mod socket;
mod waiter;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use output::{ALLOWANCE, Budget, CHUNK, Gone, Held, LAG, Response, Resume, buffer, recycle};
pub use request::{Limits, Method, Request, Version};
pub use response::Head;
pub use socket::nodelay_for_accepted;

use waiter::Waiter;

/// What the server answers with. `Tag` is the service's note on each response (for the
/// proxy: where its body came from), given with the head and handed back when the
/// response has ended.
pub trait Service: Send + Sync + 'static {
    type Tag: Send + 'static;

    /// Answers `request` through `out`, on the pool thread that read it.
    fn respond(self: Arc<Self>, request: &Request, out: Response<'_, Self::Tag>);

    /// A response has ended: sent whole, or cut short (`outcome`).
    fn finished(&self, _ended: Ended<'_, Self::Tag>) {}

    /// The server answered by itself with `status` (a malformed or slow request, too
    /// many connections, too busy): called before the answer is written, so that a
    /// client that read it finds it counted. `request` is there when one was read.
    fn refused(&self, _peer: SocketAddr, _request: Option<&Request>, _status: u16, _why: &str) {}

    /// A connection was admitted (`true`) or has been closed (`false`).
    fn connection(&self, _opened: bool) {}
}

/// A response that has ended, for [`Service::finished`].
pub struct Ended<'a, T> {
    pub request: &'a Request,
    pub status: u16,
    pub tag: T,
    /// `Ok(body bytes sent)`, or why the response was cut short.
    pub outcome: &'a io::Result<u64>,
    /// From the request's last byte to the response's.
    pub elapsed: Duration,
}

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Pool threads.
    pub threads: usize,
    /// Whole requests that may wait for a pool thread while every one is busy; past
    /// this, 503 at once.
    pub max_pending: usize,
    /// Connections open at once; past this, 503 at once and close.
    pub max_connections: usize,
    /// How long a connection may stay idle between requests, how long one request may
    /// take to arrive, and the window over which `min_send_rate` is measured.
    pub client_timeout: Duration,
    /// Bytes per second a client must at least read while the server waits to write.
    pub min_send_rate: u64,
    /// The largest request body read; larger ones get 413.
    pub max_body: u64,
}

/// What the acceptor, the pool threads and the clock share.
pub(crate) struct Shared<S: Service> {
    service: Arc<S>,
    config: ServerConfig,
    limits: Limits,
    budget: Arc<Budget>,
    waiter: Waiter<S::Tag>,
    stopping: Arc<AtomicBool>,
    /// The drain time is over: cut what is still parked.
    cutting: AtomicBool,
}

/// A bound listener, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Until when responses in flight may finish after a stop (the earliest a stop asked).
    drain_until: Arc<Mutex<Option<Instant>>>,
}

impl Server {
    /// Binds `addr` with TCP_NODELAY set on every connection.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local); the error names it.
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        socket::nodelay_for_accepted(&listener)?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            local_addr,
            stopping: Arc::default(),
            drain_until: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A function that makes [`run`](Self::run) stop, letting responses in flight finish
    /// within the time it is given (a graceful stop gives more, a fast one less; a second
    /// call can only shorten it): it raises the flag and connects once to wake the accept
    /// call. For the signal thread.
    pub fn stopper(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        let (stopping, mut addr) = (Arc::clone(&self.stopping), self.local_addr);
        let drain_until = Arc::clone(&self.drain_until);
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        move |drain: Duration| {
            {
                let mut until = drain_until.lock().unwrap_or_else(|e| e.into_inner());
                let asked = Instant::now() + drain;
                *until = Some(until.map_or(asked, |t| t.min(asked)));
            }
            stopping.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    /// Serves until the stopper is called, then closes idle connections, lets responses
    /// in flight finish for as long as the stop allows, cuts what is left, and returns. Accepts on the calling
    /// thread. `budget` bounds the memory that answers parked for slow clients hold.
    ///
    /// # Errors
    /// The waiter could not be made, or a pool thread could not be started.
    pub fn run<S: Service>(
        self,
        service: Arc<S>,
        config: ServerConfig,
        budget: Arc<Budget>,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared {
            service,
            limits: Limits {
                max_line: Limits::DEFAULT_MAX_LINE,
                max_head: Limits::DEFAULT_MAX_HEAD,
                max_body: config.max_body,
            },
            config,
            budget,
            waiter: Waiter::new()?,
            stopping: Arc::clone(&self.stopping),
            cutting: AtomicBool::new(false),
        });
        let threads = shared.config.threads.max(1);
        let running: pool::Running = Arc::new(AtomicUsize::new(threads));
        let done = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads + 1);
        for _ in 0..threads {
            let (shared, running) = (Arc::clone(&shared), Arc::clone(&running));
            handles.push(
                std::thread::Builder::new()
                    .name("pool".into())
                    .spawn(move || pool::run_pool_thread(&shared, &running))?,
            );
        }
        let clock = {
            let (shared, done) = (Arc::clone(&shared), Arc::clone(&done));
            std::thread::Builder::new()
                .name("waiter-clock".into())
                .spawn(move || pool::run_clock(&shared, || done.load(Ordering::SeqCst)))?
        };
        pool::accept(&shared, &self.listener);
        drop(self.listener);
        // Stopping: the clock closes idle connections; answers in flight go on until the
        // drain time runs out (a later, faster stop may shorten it), then the clock cuts
        // what is parked, each cut logged as one.
        let deadline = || {
            let until = *self.drain_until.lock().unwrap_or_else(|e| e.into_inner());
            until.unwrap_or_else(Instant::now)
        };
        while shared.waiter.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline() {
            std::thread::sleep(Duration::from_millis(10));
        }
        shared.cutting.store(true, Ordering::SeqCst);
        let cut_by = Instant::now() + Duration::from_secs(1);
        while shared.waiter.open.load(Ordering::SeqCst) > 0 && Instant::now() < cut_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = shared.waiter.open.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("{left} connections still open at exit");
        }
        done.store(true, Ordering::SeqCst);
        shared.waiter.stop_all();
        let _ = clock.join();
        // A thread still inside the service (waiting on the cache) is not waited for
        // past a tick: the process is ending.
        let grace = Instant::now() + pool::TICK;
        while running.load(Ordering::SeqCst) > 0 && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(1));
        }
        for handle in handles {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        Ok(())
    }
}
