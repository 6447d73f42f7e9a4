//! `webproxy`: the HTTP front. See the crate docs for how it talks to `shmcached`.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use shmcache::args::{parse_instance_name, parse_seconds, parse_size};
use shmcache::http::proxy::{Proxy, ProxyConfig};
use shmcache::http::server::ServerConfig;
use shmcache::http::spawn::CacheChild;
use shmcache::ipc::{min_segment_size, process};
use shmcache::shutdown::{Shutdown, on_signals};

/// Serves files over HTTP from the shmcached cache process, falling back to a directory.
#[derive(Parser, Debug)]
#[command(name = "webproxy", version)]
struct Args {
    /// Instance name shared with shmcached: queue /NAME.req, segments /NAME.seg.<pid>.<i>.
    #[arg(long, default_value = "shmcache", value_parser = parse_instance_name)]
    name: String,
    /// TCP port to listen on (0: any free port; the log says which).
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Worker threads serving requests.
    #[arg(short, long, default_value = "8")]
    threads: NonZeroUsize,
    /// Shared-memory segments (transfers in flight at once).
    #[arg(short = 'n', long, default_value = "8")]
    segments: NonZeroUsize,
    /// Bytes per segment, header included; K and M suffixes accepted (see BENCHMARKS.md
    /// for why 256K).
    #[arg(short = 'z', long, default_value = "256K", value_parser = parse_size)]
    segment_size: usize,
    /// Slots per segment: 1 is the classic lock-step handoff, more let the cache run ahead
    /// (see BENCHMARKS.md for why 4).
    #[arg(short = 'k', long, default_value = "4")]
    slots: NonZeroUsize,
    /// Secondary storage for misses: a directory, or an origin `http://host:port[/prefix]`.
    #[arg(short = 's', long = "server", value_name = "DIR|URL")]
    server: Option<String>,
    /// Seconds to wait for an origin's connection.
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    origin_connect_timeout: Duration,
    /// Seconds an origin may stay silent while it sends.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    origin_read_timeout: Duration,
    /// Idle connections kept open to the origin for reuse (0: a connection per request).
    #[arg(long, value_name = "N", default_value_t = 16)]
    origin_keepalive: usize,
    /// Seconds an idle origin connection is kept.
    #[arg(long, value_name = "SECONDS", default_value = "4", value_parser = parse_seconds)]
    origin_idle_timeout: Duration,
    /// Seconds a miss waits for another request's fetch of the same key before fetching
    /// on its own.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    coalesce_timeout: Duration,
    /// Seconds what secondary storage serves stays fresh in the cache, unless an origin's
    /// Cache-Control or Expires says otherwise; then it is revalidated before use.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    ttl: u64,
    /// Seconds past its lifetime an entry may still be served while secondary storage
    /// cannot be reached to revalidate it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    stale_if_error: u64,
    /// An address allowed to PURGE, besides 127.0.0.1 and ::1 (repeatable).
    #[arg(long, value_name = "ADDR")]
    purge_allow: Vec<IpAddr>,
    /// An address allowed to see the /-/ pages (stats, metrics, the live view of the
    /// channel), besides 127.0.0.1 and ::1 (repeatable).
    #[arg(long, value_name = "ADDR")]
    admin_allow: Vec<IpAddr>,
    /// Start shmcached preloaded from PATH under the same --name, and stop it on exit.
    /// Exits 1 if another live cache already serves that name.
    #[arg(long, value_name = "PATH")]
    spawn_cache: Option<PathBuf>,
    /// Seconds to wait on the cache (a free segment, the answer, each chunk).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    cache_timeout: Duration,
    /// Seconds a connection may stay idle between requests, and the most one request
    /// (head and body) may take to arrive; also the window for --min-send-rate.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    client_timeout: Duration,
    /// Bytes per second a client must at least read, measured over each --client-timeout
    /// the proxy spends waiting to write to it; a slower one is cut off.
    #[arg(long, value_name = "BYTES", default_value = "1K", value_parser = parse_size)]
    min_send_rate: usize,
    /// Memory that responses waiting for slow clients may hold beyond 64 KiB each
    /// (K, M, G suffixes); past it, what a lagging client has not yet been sent is asked
    /// for again later.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    buffer_memory: usize,
    /// Connections open at once; past this, new ones get 503 and are closed. Lowered to
    /// what the open-file limit allows.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// The largest request body read (and ignored); a larger one gets 413.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size)]
    max_body: usize,
    /// Requests that may wait for a free worker; beyond this the proxy answers 503 at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_pending: usize,
}

/// Descriptors kept for everything but client connections (segments, storage, the
/// queue, logging).
const RESERVED_FILES: u64 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    let min = min_segment_size(args.slots.get());
    if args.segment_size < min {
        Args::command()
            .error(
                ErrorKind::ValueValidation,
                format!(
                    "--segment-size {} is too small: {} slot(s) need at least {min} bytes \
                     (header included)",
                    args.segment_size, args.slots
                ),
            )
            .exit();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let shutdown = Shutdown::new();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<Box<dyn Fn() + Send>>();
    // Register the handlers before any other thread exists; the proxy's stopper is handed
    // over once the proxy is bound.
    let stop = move || {
        if let Ok(stop) = stop_rx.try_recv() {
            stop();
        }
    };
    on_signals(shutdown.clone(), stop, None)
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let mut max_connections = args.max_connections;
    match process::raise_nofile_limit() {
        Ok(n) => {
            log::debug!("open file limit: {n}");
            // A connection costs its socket, and a file or an origin socket while it
            // streams from secondary storage.
            let fit = usize::try_from(n.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX);
            if fit < max_connections {
                log::warn!(
                    "--max-connections {max_connections} lowered to {fit}: the open file limit is {n}"
                );
                max_connections = fit.max(1);
            }
        }
        Err(e) => log::warn!("could not raise the open file limit: {e}"),
    }
    let child = match &args.spawn_cache {
        Some(path) => Some(CacheChild::spawn(&args.name, path, args.cache_timeout)?),
        None => None,
    };
    let proxy = Proxy::bind(ProxyConfig {
        name: args.name,
        bind: args.bind,
        port: args.port,
        segments: args.segments.get(),
        segment_size: args.segment_size,
        slots: args.slots.get(),
        storage: args.server,
        origin_connect_timeout: args.origin_connect_timeout,
        origin_read_timeout: args.origin_read_timeout,
        origin_keepalive: args.origin_keepalive,
        origin_idle_timeout: args.origin_idle_timeout,
        coalesce_timeout: args.coalesce_timeout,
        ttl: args.ttl,
        stale_if_error: args.stale_if_error,
        purge_allow: args.purge_allow,
        admin_allow: args.admin_allow,
        cache_timeout: args.cache_timeout,
        buffer_memory: args.buffer_memory as u64,
        server: ServerConfig {
            threads: args.threads.get(),
            max_pending: args.max_pending,
            max_connections,
            client_timeout: args.client_timeout,
            min_send_rate: args.min_send_rate as u64,
            max_body: args.max_body as u64,
            drain_timeout: args.cache_timeout,
        },
    })
    .map_err(|e| e.to_string())?;
    let _ = stop_tx.send(Box::new(proxy.stopper()));
    if shutdown.is_triggered() {
        // The signal came while we were binding, before the stopper was there to call.
        proxy.stopper()();
    }
    let result = proxy.run(&shutdown).map_err(|e| format!("serving: {e}"));
    drop(child);
    log::info!("stopped");
    result
}
