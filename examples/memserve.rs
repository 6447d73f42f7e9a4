//! `memserve`: the ceiling of webproxy's HTTP stack. It serves a directory from this
//! process's memory through exactly the path a webproxy cache hit takes, minus the channel,
//! so `bench/http.sh` can tell what the channel costs.
//!
//! ```sh
//! cargo run --release --example memserve -- DIR PORT [THREADS]
//! ```
//!
//! PORT 0 picks a free port; the address is printed on stderr as
//! `memserve: listening on http://127.0.0.1:PORT ...`. THREADS defaults to webproxy's 8.
//! It listens on 127.0.0.1 only and stops on SIGINT or SIGTERM (it owns no shared object,
//! so there is nothing to clean up).
//!
//! What is the same as webproxy: a std `TcpListener` tuned with
//! [`tune_listener`](shmcache::ipc::sys::tune_listener) (TCP_NODELAY, 30 s client
//! timeouts) handed to `tiny_http::Server::from_listener`, a threadpool of workers fed by
//! one accept loop with the same 503 past 1024 waiting requests, the same URL-to-key
//! mapping, headers built per request the same way, and the body written by
//! [`response::send`](shmcache::http::response::send) through its 64 KiB copy buffer.
//! What differs: the body is copied out of an in-memory buffer
//! ([`Body::Memory`](shmcache::http::body::Body::Memory)) instead of out of a segment,
//! there is no access log (benchmarks run webproxy with it off too), and no conditional or
//! range requests (benchmarks send neither).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Cursor};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shmcache::cache::store::file_etag;
use shmcache::http::body::Body;
use shmcache::http::path::object_key;
use shmcache::http::response::{self, Headers, Reply, Value};
use shmcache::ipc::channel::Etag;
use shmcache::ipc::sys;
use threadpool::ThreadPool;
use tiny_http::{Method, Request, Server};

/// webproxy's defaults, so the two differ only in where the bytes come from.
const DEFAULT_THREADS: usize = 8;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_PENDING: usize = 1024;

/// One file held in memory, with what its headers need.
struct File {
    bytes: Arc<[u8]>,
    modified: Option<SystemTime>,
    etag: String,
}

/// Files keyed as shmcached keys a preloaded directory: `/` + the relative path.
type Files = HashMap<String, File>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, port, threads) = match args.as_slice() {
        [dir, port] => (dir, port.parse::<u16>().ok(), Some(DEFAULT_THREADS)),
        [dir, port, threads] => (
            dir,
            port.parse::<u16>().ok(),
            threads.parse::<usize>().ok().filter(|&t| t > 0),
        ),
        _ => (&String::new(), None, None),
    };
    let (Some(port), Some(threads)) = (port, threads) else {
        eprintln!("usage: memserve DIR PORT [THREADS]");
        return ExitCode::from(2);
    };
    match run(Path::new(dir), port, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memserve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path, port: u16, threads: usize) -> io::Result<()> {
    let mut files = Files::new();
    for (key, path) in shmcache::cache::preload::list(dir)? {
        let bytes = fs::read(&path)?;
        let modified = fs::metadata(&path)?.modified().ok();
        let etag = file_etag(modified, bytes.len() as u64);
        let bytes = Arc::from(bytes);
        files.insert(
            key,
            File {
                bytes,
                modified,
                etag,
            },
        );
    }
    let files = Arc::new(files);
    let _ = sys::raise_nofile_limit();
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    sys::tune_listener(&listener, CLIENT_TIMEOUT, CLIENT_TIMEOUT)?;
    let addr = listener.local_addr()?;
    let server = Server::from_listener(listener, None).map_err(io::Error::other)?;
    let workers = ThreadPool::with_name("memserve-worker".into(), threads);
    eprintln!(
        "memserve: listening on http://{addr} ({} files, {} bytes, {threads} threads)",
        files.len(),
        files.values().map(|f| f.bytes.len()).sum::<usize>()
    );
    loop {
        let request = server.recv()?;
        if workers.queued_count() >= MAX_PENDING {
            let reply = Reply::text(503, "503 Service Unavailable: too busy, try again\n")
                .with_header("Retry-After", "1");
            let _ = response::send(request, reply);
            continue;
        }
        let files = Arc::clone(&files);
        workers.execute(move || {
            let reply = respond(&files, &request);
            // A failed write is a client gone away; webproxy would log it and carry on.
            let _ = response::send(request, reply);
        });
    }
}

/// The reply webproxy would build for a cache hit, headers included (but `X-Cache`).
fn respond(files: &Files, request: &Request) -> Reply {
    let head_only = match request.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            return Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
        }
    };
    let Ok(key) = object_key(request.url()) else {
        return Reply::text(400, "400 Bad Request\n");
    };
    let Some(file) = files.get(key.as_str()) else {
        return Reply::text(404, "404 Not Found\n");
    };
    let mut headers = Headers::new();
    if let Some(modified) = file.modified {
        headers.push("Last-Modified", Value::Date(modified));
    }
    if let Some(etag) = Etag::new(&file.etag) {
        headers.push("ETag", Value::Etag(etag));
    }
    let content_type = mime_guess::from_path(key.as_str())
        .first_raw()
        .unwrap_or("application/octet-stream");
    headers.push("Content-Type", content_type);
    headers.push("Accept-Ranges", "bytes");
    let body = if head_only {
        Body::Text(b"")
    } else {
        Body::Memory(Cursor::new(Arc::clone(&file.bytes)))
    };
    Reply {
        status: 200,
        headers,
        length: Some(file.bytes.len() as u64),
        body,
    }
}
