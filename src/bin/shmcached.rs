//! `shmcached`: the cache process. See the crate docs and `src/ipc` for the protocol.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shmcache::args::Shmcached as Args;
use shmcache::cache::service::Cache;
use shmcache::cache::{entries::Entries, preload::preload};
use shmcache::ipc::lock::InstanceLock;
use shmcache::ipc::server::{Config, Server};
use shmcache::pidfile::PidFile;
use shmcache::shutdown::{Actions, Shutdown, on_signals};

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let shutdown = Shutdown::new();
    let store = Arc::new(Entries::new(args.capacity as u64, args.max_object as u64));
    let cache = Arc::new(Cache::new(Arc::clone(&store)));
    let reload: Box<dyn Fn() + Send> = match args.cache.clone() {
        Some(path) => {
            let (cache, ttl) = (Arc::clone(&cache), args.ttl);
            Box::new(move || match cache.reload(&path, ttl) {
                Ok(n) => log::info!("reloaded {n} files from {}", path.display()),
                Err(e) => log::error!("reloading {}: {e}; keeping what is loaded", path.display()),
            })
        }
        None => Box::new(|| log::info!("nothing to reload: no -c PATH was given")),
    };
    // The daemon's main loop notices the flag on its own (it never blocks for long), so
    // there is nothing to wake; it logs to stderr alone, so there is nothing to reopen.
    let actions = Actions {
        stop: Box::new(|_| {}),
        reload,
        reopen: Box::new(|| log::info!("no log file to reopen: the log goes to stderr")),
    };
    if let Err(e) = on_signals(shutdown.clone(), actions) {
        log::error!("installing signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    // Before preloading, which can take long: a second cache of a live instance is refused
    // at once, and never touches the first one's queue (nor its pid file).
    let lock = match InstanceLock::acquire(&args.name) {
        Ok(lock) => lock,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let _pid_file = match args.pid_file.as_deref().map(PidFile::write).transpose() {
        Ok(pid_file) => pid_file,
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
        drain_timeout: args.drain_timeout,
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
    let unfinished = server.run(cache, &shutdown);
    if unfinished > 0 {
        log::warn!("{unfinished} transfers abandoned at exit");
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}
