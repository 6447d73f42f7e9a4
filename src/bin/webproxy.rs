//! `webproxy`: the HTTP front. See the crate docs for how it talks to `shmcached`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use shmcache::args::Webproxy as Args;
use shmcache::http::access::{self, AccessLog};
use shmcache::http::proxy::{Proxy, ProxyConfig};
use shmcache::http::server::ServerConfig;
use shmcache::http::spawn::CacheChild;
use shmcache::ipc::{min_segment_size, process};
use shmcache::pidfile::PidFile;
use shmcache::shutdown::{Actions, Shutdown, Stop, on_signals};

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

/// What the signal thread acts on once the proxy has it: set while the proxy starts.
#[derive(Default)]
struct Hooks {
    /// The proxy's stopper, given how long requests in flight may take to finish.
    stop: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
    /// The pid of the cache we spawned, while it is ours to signal.
    child: Mutex<Option<u32>>,
}

/// Stops the proxy as `how` says, if it is there to stop yet.
fn stop_proxy(hooks: &Hooks, how: Stop, drain: Duration, fast: Duration) {
    if let Some(stop) = hooks.stop.get() {
        stop(match how {
            Stop::Graceful => drain,
            Stop::Fast => fast,
        });
    }
}

fn run(args: Args) -> Result<(), String> {
    let shutdown = Shutdown::new();
    let hooks = Arc::new(Hooks::default());
    let (drain, fast) = (args.drain_timeout, args.cache_timeout);
    // Register the handlers before any other thread exists; the proxy's stopper and the
    // child's pid are handed over once they exist.
    let actions = Actions {
        stop: Box::new({
            let hooks = Arc::clone(&hooks);
            move |how| stop_proxy(&hooks, how, drain, fast)
        }),
        reload: Box::new({
            let hooks = Arc::clone(&hooks);
            move || {
                // The proxy's own settings are its command line: a reload passes on to the
                // cache it runs, and starts the access log afresh.
                access::reopen();
                let child = *hooks.child.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(pid) = child {
                    match process::signal(pid, libc::SIGHUP) {
                        Ok(()) => log::info!("passed SIGHUP on to shmcached (pid {pid})"),
                        Err(e) => log::warn!("passing SIGHUP on to shmcached (pid {pid}): {e}"),
                    }
                }
            }
        }),
        reopen: Box::new(access::reopen),
    };
    on_signals(shutdown.clone(), actions)
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    access::install(
        AccessLog::open(&args.access_log, args.log_format).map_err(|e| e.to_string())?,
    )?;
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
    // Spawned here, on the main thread, which lives as long as the process: the child's
    // death signal fires when the thread that started it ends.
    let child = match &args.spawn_cache {
        Some(preload) => Some(CacheChild::spawn(
            &args.name,
            preload.as_deref(),
            args.cache_timeout,
        )?),
        None => None,
    };
    *hooks.child.lock().unwrap_or_else(|e| e.into_inner()) = child.as_ref().map(CacheChild::pid);
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
        },
    })
    .map_err(|e| e.to_string())?;
    // Bound: this process is the one that serves, so the pid file is ours to write.
    let pid_file = args
        .pid_file
        .as_deref()
        .map(PidFile::write)
        .transpose()
        .map_err(|e| e.to_string())?;
    let _ = hooks.stop.set(Box::new(proxy.stopper()));
    if let Some(how) = shutdown.stop() {
        // The signal came while we were starting, before the stopper was there to call.
        stop_proxy(&hooks, how, drain, fast);
    }
    let result = proxy.run(&shutdown).map_err(|e| format!("serving: {e}"));
    // Not ours to signal once it is stopped and reaped.
    *hooks.child.lock().unwrap_or_else(|e| e.into_inner()) = None;
    drop(child);
    drop(pid_file);
    log::info!("stopped");
    result
}
