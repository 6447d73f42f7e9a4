//! The proxy process: a tiny_http accept loop feeding a pool of worker threads.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;
use tiny_http::Server;

use super::cache_client::CacheClient;
use super::coalesce::Coalescer;
use super::handler::{self, Context};
use super::storage::Storage;
use crate::ipc::pool::SegmentPool;
use crate::ipc::{remove_stale_segments, segment_prefix, sys};
use crate::shutdown::{Shutdown, join_within};

/// How a proxy process behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub name: String,
    pub bind: IpAddr,
    pub port: u16,
    pub threads: usize,
    pub segments: usize,
    pub segment_size: usize,
    pub slots: usize,
    /// Secondary storage: a directory, or `http://host:port[/prefix]`.
    pub storage: Option<String>,
    /// Connect and per-read timeouts for an HTTP origin.
    pub origin_connect_timeout: Duration,
    pub origin_read_timeout: Duration,
    /// How long a miss waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    /// Freshness lifetime of what secondary storage serves, unless an origin says otherwise.
    pub ttl: u64,
    /// How long past its lifetime an entry may be served while storage is unreachable.
    pub stale_if_error: u64,
    /// Addresses allowed to PURGE besides 127.0.0.1 and ::1.
    pub purge_allow: Vec<IpAddr>,
    /// Longest wait for the cache: for a free segment, for the head, for each chunk.
    pub cache_timeout: Duration,
    /// Longest a client may keep a connection silent, or stall a write.
    pub client_timeout: Duration,
    /// Requests that may wait for a worker; past this the proxy answers 503 at once.
    pub max_pending: usize,
}

/// Works around three ways tiny_http 0.12 stops serving, by connecting to our own
/// listener (a "probe") every few hundred milliseconds and closing at once; tiny_http
/// accepts, reads EOF and closes too.
///
/// - The client timeout is set as SO_RCVTIMEO on the listening socket, because that is the
///   only way to reach the sockets tiny_http accepts (they inherit it). But on Linux it
///   also bounds `accept` itself: after a timeout with no new connection, accept fails with
///   EAGAIN and tiny_http's accept thread stops for good. Probes keep accept busy.
/// - tiny_http hands each connection to a thread pool that loses wake-ups: when two
///   connections arrive before an idle thread has woken for the first, the second waits in
///   the pool's queue until some other connection ends, which with keep-alive clients can
///   be never. Each probe is a connection that ends at once, so the thread that served it
///   goes on to the queue. Probes come a few at a time, and a probe that is slow to be
///   answered (it is queued itself) is followed by the next without a pause.
/// - The accept thread can also die without a word (it panics when cloning an accepted
///   socket fails with EMFILE). When no probe has been answered for `patience`, `on_dead`
///   runs, so that the proxy exits loudly instead of running on deaf.
fn spawn_accept_watchdog(
    addr: SocketAddr,
    patience: Duration,
    shutdown: Shutdown,
    on_dead: impl Fn() + Send + 'static,
) -> io::Result<()> {
    const INTERVAL: Duration = Duration::from_millis(200);
    const ANSWER: Duration = Duration::from_millis(100);
    const PROBES_PER_ROUND: u32 = 4;
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    // Whether the probe was answered (EOF) within ANSWER.
    let probe = move || -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&target, ANSWER)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(ANSWER))?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink)? > 0 {}
        Ok(())
    };
    let interval = INTERVAL.min(patience / 4);
    std::thread::Builder::new()
        .name("accept-watchdog".into())
        .spawn(move || {
            let mut answered = Instant::now();
            let mut round = 0;
            while !shutdown.is_triggered() {
                match probe() {
                    Ok(()) => {
                        answered = Instant::now();
                        // A few probes per round: each lets at most one queued connection go.
                        round = (round + 1) % PROBES_PER_ROUND;
                        if round == 0 {
                            std::thread::sleep(interval);
                        }
                    }
                    Err(_) if shutdown.is_triggered() => break,
                    Err(e) if answered.elapsed() > patience => {
                        log::debug!("accept probe: {e}");
                        on_dead();
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })?;
    Ok(())
}

/// A bound, ready-to-run proxy.
pub struct Proxy {
    server: Arc<Server>,
    config: ProxyConfig,
    ctx: Arc<Context>,
    pool: Arc<SegmentPool>,
}

impl Proxy {
    /// Binds the listening socket, removes segments that dead proxies of this instance left
    /// behind, creates our segments and looks for the cache.
    ///
    /// # Errors
    /// A port in use, a storage directory that does not exist, or segments that cannot be
    /// created (including a segment size below [`min_segment_size`](crate::ipc::segment::min_segment_size)).
    pub fn bind(config: ProxyConfig) -> io::Result<Proxy> {
        let storage = config
            .storage
            .as_deref()
            .map(|spec| {
                Storage::open(
                    spec,
                    config.origin_connect_timeout,
                    config.origin_read_timeout,
                    config.ttl,
                )
            })
            .transpose()?;
        let listener = TcpListener::bind(SocketAddr::from((config.bind, config.port)))?;
        sys::tune_listener(&listener, config.client_timeout, config.client_timeout)?;
        let local_addr = listener.local_addr()?;
        for stale in remove_stale_segments(&config.name)? {
            log::warn!("removed {stale}, left by a proxy that is gone");
        }
        let pool = SegmentPool::new(
            &segment_prefix(&config.name),
            config.segments,
            config.segment_size,
            config.slots,
        )?;
        let cache = CacheClient::new(&config.name, Arc::clone(&pool), config.cache_timeout);
        let server = Server::from_listener(listener, None).map_err(io::Error::other)?;
        Ok(Proxy {
            server: Arc::new(server),
            ctx: Arc::new(Context {
                cache,
                storage,
                local_addr,
                coalescer: Coalescer::new(),
                coalesce_timeout: config.coalesce_timeout,
                stats: Arc::default(),
                pool: Arc::clone(&pool),
                stale_if_error: config.stale_if_error,
                purge_allow: config.purge_allow.clone(),
            }),
            config,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.ctx.local_addr
    }

    /// A function that makes [`run`](Self::run) stop accepting; for the signal thread.
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let server = Arc::clone(&self.server);
        move || server.unblock()
    }

    /// Serves until `shutdown` is triggered (and the stopper called), lets requests in
    /// flight finish for at most the cache timeout, then unlinks every segment.
    ///
    /// # Errors
    /// When tiny_http stops accepting connections on its own (e.g. EMFILE): it never
    /// resumes, so the proxy must not pretend to run on.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        self.ctx.cache.spawn_connector(shutdown.clone())?;
        let deaf = Arc::new(AtomicBool::new(false));
        let (flag, server) = (Arc::clone(&deaf), Arc::clone(&self.server));
        spawn_accept_watchdog(
            self.local_addr(),
            self.config.client_timeout,
            shutdown.clone(),
            move || {
                flag.store(true, Ordering::SeqCst);
                server.unblock();
            },
        )?;
        let workers = ThreadPool::with_name("proxy-worker".into(), self.config.threads.max(1));
        log::info!(
            "listening on http://{} ({} segments of {} bytes, {} slot(s) each)",
            self.local_addr(),
            self.config.segments,
            self.config.segment_size,
            self.config.slots
        );
        let result = loop {
            match self.server.recv() {
                // Bounded backlog: past it, refuse at once rather than queue without limit.
                // The refusal is a few hundred bytes written on this thread. A client that
                // pipelines a request behind a slow response of its own makes this thread
                // wait for that response to be written first (tiny_http orders responses
                // per connection): a known limit, since refusing on a thread of its own
                // would need threads, which is what overload is short of.
                Ok(request) if workers.queued_count() >= self.config.max_pending => {
                    handler::refuse_overload(&self.ctx, request);
                }
                Ok(request) => {
                    let ctx = Arc::clone(&self.ctx);
                    workers.execute(move || handler::handle(&ctx, request));
                }
                Err(_) if deaf.load(Ordering::SeqCst) => {
                    log::error!(
                        "tiny_http stopped accepting connections: its accept thread is gone"
                    );
                    break Err(io::Error::other("the accept thread is gone"));
                }
                Err(_) if shutdown.is_triggered() => break Ok(()),
                Err(e) => {
                    log::error!("tiny_http stopped accepting connections: {e}");
                    break Err(e);
                }
            }
        };
        let running = join_within(&workers, self.config.cache_timeout);
        if running > 0 {
            log::warn!("{running} requests still running at exit");
        }
        self.pool.unlink_all();
        result
    }
}
