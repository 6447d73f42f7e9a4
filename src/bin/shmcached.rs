//! `shmcached`: the cache process. See the crate docs and `src/ipc` for the protocol.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shmcache::args::{parse_instance_name, parse_seconds, parse_size};
use shmcache::cache::service::Cache;
use shmcache::cache::{entries::Entries, preload::preload};
use shmcache::ipc::lock::InstanceLock;
use shmcache::ipc::server::{Config, Dispatch, Server};
use shmcache::shutdown::{Shutdown, on_signals};

/// Holds files in memory and writes them into webproxy's shared-memory segments on request.
#[derive(Parser, Debug)]
#[command(name = "shmcached", version)]
struct Args {
    /// Instance name: the request queue is /NAME.req; proxies must use the same name.
    #[arg(long, default_value = "shmcache", value_parser = parse_instance_name)]
    name: String,
    /// Preload from PATH: a directory (keys are /relative/paths) or a locals.txt manifest
    /// (`key path` per line, paths relative to the manifest's folder).
    #[arg(short = 'c', long = "cache", value_name = "PATH")]
    cache: Option<PathBuf>,
    /// Worker threads writing into segments.
    #[arg(short, long, default_value = "8")]
    threads: NonZeroUsize,
    /// Simulated slowness: microseconds slept before each answer.
    #[arg(short, long, value_name = "MICROS", default_value_t = 0)]
    delay: u64,
    /// Who takes calls off the queue: `workers` (each worker receives for itself, one
    /// wake-up per call fewer) or `boss` (the classic: the main thread receives and hands
    /// each call to a worker).
    #[arg(long, value_name = "MODE", default_value = "workers", value_parser = parse_dispatch)]
    dispatch: Dispatch,
    /// Slow motion for watching the channel (webproxy's /-/ page): microseconds slept
    /// before each chunk of an answer.
    #[arg(long, value_name = "MICROS", default_value_t = 0)]
    chunk_delay: u64,
    /// Memory budget for cached objects (K, M, G suffixes); the least recently used go first.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_size)]
    capacity: usize,
    /// The largest object kept; larger ones are served from secondary storage every time.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    max_object: usize,
    /// Seconds a preloaded file stays fresh; after that the next request for it makes the
    /// cache check the file (one stat): unchanged, it is renewed; changed, read again; gone,
    /// removed. SIGHUP reloads the preload set.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    ttl: u64,
    /// Seconds a worker waits for the proxy to free a slot before giving up.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    cache_timeout: Duration,
}

fn parse_dispatch(s: &str) -> Result<Dispatch, String> {
    match s {
        "workers" => Ok(Dispatch::Workers),
        "boss" => Ok(Dispatch::Boss),
        _ => Err(format!("{s:?}: expected `workers` or `boss`")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let shutdown = Shutdown::new();
    let store = Arc::new(Entries::new(args.capacity as u64, args.max_object as u64));
    let reload = args.cache.clone().map(|path| {
        let (store, ttl) = (Arc::clone(&store), args.ttl);
        Box::new(move || match preload(&store, &path, ttl) {
            Ok(n) => log::info!("reloaded {n} files from {}", path.display()),
            Err(e) => log::error!("reloading {}: {e}; keeping what is loaded", path.display()),
        }) as Box<dyn Fn() + Send>
    });
    // The daemon's main loop notices the flag on its own (it never blocks for long), so
    // there is nothing to wake.
    if let Err(e) = on_signals(shutdown.clone(), || {}, reload) {
        log::error!("installing signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    // Before preloading, which can take long: a second cache of a live instance is refused
    // at once, and never touches the first one's queue.
    let lock = match InstanceLock::acquire(&args.name) {
        Ok(lock) => lock,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.cache {
        match preload(&store, path, args.ttl) {
            Ok(n) => log::info!("preloaded {n} files from {}", path.display()),
            Err(e) => {
                log::error!("preloading {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let config = Config {
        name: args.name,
        threads: args.threads.get(),
        dispatch: args.dispatch,
        delay: Duration::from_micros(args.delay),
        chunk_delay: Duration::from_micros(args.chunk_delay),
        timeout: args.cache_timeout,
    };
    let (objects, bytes) = store.size();
    log::info!(
        "holding {objects} entries ({bytes} of {} bytes)",
        store.capacity()
    );
    let server = match Server::new(config, lock) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let unfinished = server.run(Arc::new(Cache::new(store)), &shutdown);
    if unfinished > 0 {
        log::warn!("{unfinished} transfers abandoned at exit");
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}
