//! Both programs' command lines, here rather than in `src/bin` so that the man pages
//! (`examples/man.rs`) and the test that holds the README's flag tables to `--help` are
//! made from the same definitions; and the value parsers they share (clap
//! `value_parser`s, so a bad value prints usage and exits 2).

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::http::access::Format;
use crate::ipc::server::Dispatch;

/// Holds files in memory and writes them into webproxy's shared-memory segments on request.
#[derive(Parser, Debug)]
#[command(
    name = "shmcached",
    version,
    after_help = "Signals: TERM, INT stop (transfers get --cache-timeout); QUIT stops \
                  gracefully (--drain-timeout); HUP reloads the -c files; USR1 reopens logs \
                  (none: the log is stderr).\n\
                  Files: /dev/shm/NAME-lock (the instance lock), the queue /NAME.req \
                  (/dev/mqueue), --pid-file."
)]
pub struct Shmcached {
    /// Instance name: the request queue is /NAME.req; proxies must use the same name.
    #[arg(long, default_value = "shmcache", value_parser = parse_instance_name)]
    pub name: String,
    /// Preload from PATH: a directory (keys are /relative/paths) or a locals.txt manifest
    /// (`key path` per line, paths relative to the manifest's folder).
    #[arg(short = 'c', long = "cache", value_name = "PATH")]
    pub cache: Option<PathBuf>,
    /// Worker threads writing into segments.
    #[arg(short, long, default_value = "8")]
    pub threads: NonZeroUsize,
    /// Simulated slowness: microseconds slept before each answer.
    #[arg(short, long, value_name = "MICROS", default_value_t = 0)]
    pub delay: u64,
    /// Who takes calls off the queue: `workers` (each worker receives for itself, one
    /// wake-up per call fewer) or `boss` (the classic: the main thread receives and hands
    /// each call to a worker).
    #[arg(long, value_name = "MODE", default_value = "workers", value_parser = parse_dispatch)]
    pub dispatch: Dispatch,
    /// Slow motion for watching the channel (webproxy's /-/ page): microseconds slept
    /// before each chunk of an answer.
    #[arg(long, value_name = "MICROS", default_value_t = 0)]
    pub chunk_delay: u64,
    /// Memory budget for cached objects (K, M, G suffixes); the least recently used go first.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_size)]
    pub capacity: usize,
    /// The largest object kept; larger ones are served from secondary storage every time.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    pub max_object: usize,
    /// Seconds a preloaded file stays fresh; after that the next request for it makes the
    /// cache check the file (one stat): unchanged, it is renewed; changed, read again; gone,
    /// removed. SIGHUP reloads the preload set.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ttl: u64,
    /// Seconds a worker waits for the proxy to free a slot before giving up.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub cache_timeout: Duration,
    /// Seconds a graceful stop (SIGQUIT) lets calls in flight and on the queue finish.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub drain_timeout: Duration,
    /// Write the pid to PATH once serving, and remove it at exit.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// Serves files over HTTP from the shmcached cache process, falling back to a directory or
/// an HTTP origin (-s).
#[derive(Parser, Debug)]
#[command(
    name = "webproxy",
    version,
    after_help = "Signals: TERM, INT stop (responses get --cache-timeout); QUIT stops \
                  gracefully (--drain-timeout); HUP reopens the access log and passes the \
                  reload to a --spawn-cache cache; USR1 reopens the access log.\n\
                  Files: /dev/shm/NAME.seg.PID.I (segments), --pid-file, --access-log."
)]
pub struct Webproxy {
    /// Instance name shared with shmcached: queue /NAME.req, segments /NAME.seg.<pid>.<i>.
    #[arg(long, default_value = "shmcache", value_parser = parse_instance_name)]
    pub name: String,
    /// TCP port to listen on (0: any free port; the log says which).
    #[arg(short, long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Pool threads, each carrying one request at a time.
    #[arg(short, long, default_value = "8")]
    pub threads: NonZeroUsize,
    /// Shared-memory segments (transfers in flight at once).
    #[arg(short = 'n', long, default_value = "8")]
    pub segments: NonZeroUsize,
    /// Bytes per segment, header included; K and M suffixes accepted (see BENCHMARKS.md
    /// for why 256K).
    #[arg(short = 'z', long, default_value = "256K", value_parser = parse_size)]
    pub segment_size: usize,
    /// Slots per segment: 1 is the classic lock-step handoff, more let the cache run ahead
    /// (see BENCHMARKS.md for why 4).
    #[arg(short = 'k', long, default_value = "4")]
    pub slots: NonZeroUsize,
    /// Secondary storage for misses: a directory, or an origin `http://host:port[/prefix]`.
    #[arg(short = 's', long = "server", value_name = "DIR|URL")]
    pub server: Option<String>,
    /// Seconds to wait for an origin's connection.
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub origin_connect_timeout: Duration,
    /// Seconds an origin may stay silent while it sends.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub origin_read_timeout: Duration,
    /// Idle connections kept open to the origin for reuse (0: a connection per request).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub origin_keepalive: usize,
    /// Seconds an idle origin connection is kept.
    #[arg(long, value_name = "SECONDS", default_value = "4", value_parser = parse_seconds)]
    pub origin_idle_timeout: Duration,
    /// Seconds a miss waits for another request's fetch of the same key before fetching
    /// on its own.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub coalesce_timeout: Duration,
    /// Seconds the files of `-s DIR` stay fresh in the cache; then each is revalidated
    /// before use. Not used in front of an origin, whose responses say their own.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ttl: u64,
    /// Seconds past its lifetime an entry may still be served while secondary storage
    /// cannot be reached to revalidate it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub stale_if_error: u64,
    /// An address allowed to PURGE, besides 127.0.0.1 and ::1 (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub purge_allow: Vec<IpAddr>,
    /// An address allowed to see the /-/ pages (stats, metrics, the live view of the
    /// channel), besides 127.0.0.1 and ::1 (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub admin_allow: Vec<IpAddr>,
    /// Start shmcached under the same --name, preloaded from PATH if given (empty
    /// otherwise, e.g. in front of an origin), and stop it on exit. Exits 1 if another
    /// live cache already serves that name.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub spawn_cache: Option<Option<PathBuf>>,
    /// Seconds to wait on the cache (a free segment, the answer, each chunk).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub cache_timeout: Duration,
    /// Seconds a connection may stay idle between requests, and the most one request
    /// (head and body) may take to arrive; also the window for --min-send-rate.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub client_timeout: Duration,
    /// Bytes per second a client must at least read, measured over each --client-timeout
    /// the proxy spends waiting to write to it; a slower one is cut off.
    #[arg(long, value_name = "BYTES", default_value = "1K", value_parser = parse_size)]
    pub min_send_rate: usize,
    /// Memory that responses waiting for slow clients may hold beyond 64 KiB each
    /// (K, M, G suffixes); past it, what a lagging client has not yet been sent is asked
    /// for again later.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    pub buffer_memory: usize,
    /// Connections open at once; past this, new ones get 503 and are closed. Lowered to
    /// what the open-file limit allows.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// The largest request body read (forwarded to an origin, ignored with a directory);
    /// a larger one gets 413.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size)]
    pub max_body: usize,
    /// Whole requests that may wait for a pool thread while every one is busy; beyond
    /// this the proxy answers 503 at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_pending: usize,
    /// Seconds a graceful stop (SIGQUIT) lets responses in flight finish; a fast one
    /// (SIGTERM, SIGINT) gives them --cache-timeout.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub drain_timeout: Duration,
    /// Write the pid to PATH once listening, and remove it at exit.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Where access lines go: a file (reopened on SIGUSR1 and SIGHUP), or - for stderr.
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub access_log: String,
    /// Access-log line format: `combined` (nginx's, with referer and user agent) or
    /// `common`; both end with the microseconds taken and the body's source.
    #[arg(long, value_name = "FORMAT", default_value = "combined")]
    pub log_format: Format,
}

fn parse_dispatch(s: &str) -> Result<Dispatch, String> {
    match s {
        "workers" => Ok(Dispatch::Workers),
        "boss" => Ok(Dispatch::Boss),
        _ => Err(format!("{s:?}: expected `workers` or `boss`")),
    }
}

/// An instance name, checked by [`check_instance_name`](crate::ipc::check_instance_name).
pub fn parse_instance_name(s: &str) -> Result<String, String> {
    crate::ipc::check_instance_name(s).map(|()| s.to_owned())
}

/// A positive number of seconds, fractions allowed: `5`, `0.5`.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

/// A byte size: `65536`, `64K`, `1M`, `2G` (powers of 1024, either case).
///
/// Parses a size with an optional K, M or G suffix (either case).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 65536, 64K, 1M)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("824"), Ok(824));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in ["", "K", "1.5M", "-1", "12Q", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
