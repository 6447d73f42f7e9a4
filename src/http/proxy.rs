//! `webproxy` put together: the HTTP [`server`](super::server) in front, the
//! [`handler`](super::handler) as its service, the cache and secondary storage behind.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::coalesce::Coalescer;
use super::context::Context;
use super::origin::upstream::OriginOptions;
use super::server::{Budget, Server, ServerConfig};
use super::storage::Storage;
use crate::ipc::client::{Client, Segments};
use crate::shutdown::Shutdown;

/// How a proxy process behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub name: String,
    pub bind: IpAddr,
    pub port: u16,
    pub segments: usize,
    pub segment_size: usize,
    pub slots: usize,
    /// Secondary storage: a directory, or `http://host:port[/prefix]`.
    pub storage: Option<String>,
    /// Connect and per-read timeouts for an HTTP origin.
    pub origin_connect_timeout: Duration,
    pub origin_read_timeout: Duration,
    /// Idle connections kept per HTTP origin, and for how long.
    pub origin_keepalive: usize,
    pub origin_idle_timeout: Duration,
    /// How long a miss waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    /// Freshness lifetime of what secondary storage serves, unless an origin says otherwise.
    pub ttl: u64,
    /// How long past its lifetime an entry may be served while storage is unreachable.
    pub stale_if_error: u64,
    /// Addresses allowed to PURGE besides 127.0.0.1 and ::1.
    pub purge_allow: Vec<IpAddr>,
    /// Addresses allowed to see the `/-/` pages besides 127.0.0.1 and ::1.
    pub admin_allow: Vec<IpAddr>,
    /// Longest wait for the cache: for a free segment, for the head, for each chunk.
    pub cache_timeout: Duration,
    /// How the HTTP server treats clients.
    pub server: ServerConfig,
    /// Memory that responses waiting for slow clients may hold (see [`server::output`](super::server::output)).
    pub buffer_memory: u64,
}

/// A bound, ready-to-run proxy.
pub struct Proxy {
    server: Server,
    config: ProxyConfig,
    ctx: Arc<Context>,
}

impl Proxy {
    /// Opens secondary storage, binds the listening socket, removes segments that dead
    /// proxies of this instance left behind, creates our segments and looks for the cache.
    ///
    /// # Errors
    /// A storage directory that does not exist, a port in use, or segments that cannot be
    /// created; each error names what it concerns.
    pub fn bind(config: ProxyConfig) -> io::Result<Proxy> {
        let storage = config
            .storage
            .as_deref()
            .map(|spec| {
                let origin = OriginOptions {
                    connect_timeout: config.origin_connect_timeout,
                    read_timeout: config.origin_read_timeout,
                    keepalive: config.origin_keepalive,
                    idle_timeout: config.origin_idle_timeout,
                };
                Storage::open(spec, origin, config.ttl)
                    .map_err(|e| io::Error::new(e.kind(), format!("secondary storage {spec}: {e}")))
            })
            .transpose()?;
        let server = Server::bind(SocketAddr::from((config.bind, config.port)))?;
        let segments = Segments {
            count: config.segments,
            size: config.segment_size,
            slots: config.slots,
        };
        let cache = Client::new(&config.name, segments, config.cache_timeout)?;
        Ok(Proxy {
            ctx: Arc::new(Context {
                cache,
                storage,
                coalescer: Coalescer::new(),
                coalesce_timeout: config.coalesce_timeout,
                stats: Arc::default(),
                stale_if_error: config.stale_if_error,
                purge_allow: config.purge_allow.clone(),
                admin_allow: config.admin_allow.clone(),
                budget: Budget::new(config.buffer_memory),
                variants: Default::default(),
            }),
            server,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A function that makes [`run`](Self::run) stop accepting and let requests in flight
    /// finish within the duration it is given; for the signal thread.
    pub fn stopper(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        self.server.stopper()
    }

    /// What the proxy does while no cache answers, for the warning that says so.
    fn without_cache(&self) -> String {
        match (&self.ctx.storage, &self.config.storage) {
            (Some(Storage::Origin(_)), Some(url)) => {
                format!("forwarding every request to {url}, uncached")
            }
            (Some(_), Some(dir)) => format!("serving every request from {dir}, as a miss"),
            _ => "answering 503 to every request (no -s to fall back on)".to_owned(),
        }
    }

    /// Serves until the stopper is called, lets requests in flight finish within the time
    /// it says, then unlinks every segment.
    pub fn run(self, shutdown: &Shutdown) -> io::Result<()> {
        let without = self.without_cache();
        self.ctx.cache.spawn_connector(shutdown.clone(), without)?;
        let server = self.config.server.clone();
        // At warn, so that a log filtered down to warnings (`RUST_LOG=access=info,warn`)
        // still says where the proxy listens, and which port `-p 0` chose.
        log::warn!(
            "listening on http://{} ({} segments of {} bytes, {} slot(s) each)",
            self.local_addr(),
            self.config.segments,
            self.config.segment_size,
            self.config.slots
        );
        let budget = Arc::clone(&self.ctx.budget);
        let result = self.server.run(Arc::clone(&self.ctx), server, budget);
        self.ctx.cache.unlink_all();
        result
    }
}
