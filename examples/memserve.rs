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
//! What is the same as webproxy: the same HTTP server ([`Server`], with webproxy's default
//! limits: 8 pool threads, 503 past 1024 waiting requests), the same URL-to-key mapping,
//! headers built per request the same way, and the body copied by the pool thread into
//! the response in 64 KiB pieces, as a small hit is copied out of its segment. What differs: the bytes are copied out of this process's memory instead of
//! out of a segment, there is no access log (benchmarks run webproxy with it off too),
//! and no conditional or range requests (benchmarks send neither).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shmcache::file;
use shmcache::http::body::Body;
use shmcache::http::path::object_key;
use shmcache::http::response::{Headers, Reply, Value};
use shmcache::http::server::{
    self, Budget, CHUNK, Method, Request, Response, Server, ServerConfig, Service,
};
use shmcache::ipc::Etag;
use shmcache::ipc::process;

/// webproxy's defaults, so the two differ only in where the bytes come from.
const DEFAULT_THREADS: usize = 8;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_PENDING: usize = 1024;
const MAX_CONNECTIONS: usize = 4096;
const BUFFER_MEMORY: u64 = 64 << 20;

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
        let etag = file::etag(modified, bytes.len() as u64);
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
    let files = Arc::new(Memory(files));
    let _ = process::raise_nofile_limit();
    let server = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    eprintln!(
        "memserve: listening on http://{} ({} files, {} bytes, {threads} threads)",
        server.local_addr(),
        files.0.len(),
        files.0.values().map(|f| f.bytes.len()).sum::<usize>()
    );
    let config = ServerConfig {
        threads,
        max_pending: MAX_PENDING,
        max_connections: MAX_CONNECTIONS,
        client_timeout: CLIENT_TIMEOUT,
        min_send_rate: 1024,
        max_body: 64 * 1024,
    };
    server.run(files, config, Budget::new(BUFFER_MEMORY))
}

struct Memory(Files);

impl Service for Memory {
    type Tag = ();

    fn respond(self: Arc<Self>, request: &Request, mut out: Response<'_, ()>) {
        let (head, body) = respond(&self.0, request).split(());
        out.start(head);
        let Body::Memory(mut bytes) = body else {
            return out.stream(Box::new(body));
        };
        let all = Arc::clone(bytes.get_ref());
        for piece in all.chunks(CHUNK) {
            bytes.set_position(bytes.position() + piece.len() as u64);
            let mut data = server::buffer();
            data.extend_from_slice(piece);
            match out.push(data) {
                Ok(true) => {}
                // Out of memory for slow clients: the connection sends the rest itself.
                Ok(false) => return out.stream(Box::new(Body::Memory(bytes))),
                Err(_) => return,
            }
        }
        out.end()
    }
}

/// The reply webproxy would build for a cache hit, headers included (but `X-Cache`).
fn respond(files: &Files, request: &Request) -> Reply {
    let head_only = match request.method {
        Method::Get => false,
        Method::Head => true,
        _ => {
            return Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
        }
    };
    let Ok(key) = object_key(&request.target) else {
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
        Body::Memory(io::Cursor::new(Arc::clone(&file.bytes)))
    };
    Reply {
        status: 200,
        headers,
        length: Some(file.bytes.len() as u64),
        body,
    }
}
