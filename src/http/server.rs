//! The proxy process: a tiny_http accept loop feeding a pool of worker threads.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use threadpool::ThreadPool;
use tiny_http::Server;

use super::cache_client::CacheClient;
use super::handler::{self, Context};
use super::storage::DirStorage;
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
    pub storage: Option<PathBuf>,
    /// Longest wait for the cache: for a free segment, for the head, for each chunk.
    pub cache_timeout: Duration,
    /// Longest a client may keep a connection silent, or stall a write.
    pub client_timeout: Duration,
    /// Requests that may wait for a worker; past this the proxy answers 503 at once.
    pub max_pending: usize,
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
        let storage = config.storage.as_ref().map(DirStorage::new).transpose()?;
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
                // The refusal is a few hundred bytes written on this thread; only a client
                // that pipelines behind a slow response of its own can make it wait, and
                // then no longer than the client timeout.
                Ok(request) if workers.queued_count() >= self.config.max_pending => {
                    handler::refuse_overload(&self.ctx, request);
                }
                Ok(request) => {
                    let ctx = Arc::clone(&self.ctx);
                    workers.execute(move || handler::handle(&ctx, request));
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
