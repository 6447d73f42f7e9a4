//! `tinyserve`: the second ceiling `bench/http.sh` compares webproxy with. tiny_http (the
//! HTTP crate webproxy used before it had its own server) serving a directory from this
//! process's memory, tuned the way its documentation suggests for speed: THREADS threads
//! (default 8, as webproxy's workers) each calling `recv()` on the one server and
//! answering at once. No channel, no spool, no hand-over between threads: what an
//! in-process server on the same two cores gets, beside `memserve`, which is webproxy's
//! own HTTP stack serving from memory.
//!
//! ```sh
//! cargo run --release --example tinyserve -- DIR PORT [THREADS]
//! ```
//!
//! PORT 0 picks a free port; the address is printed on stderr as
//! `tinyserve: listening on http://127.0.0.1:PORT ...`. It listens on 127.0.0.1 only and
//! runs until killed (it owns nothing to clean up). tiny_http's connection pool can lose a
//! wake-up with many kept-alive connections (see the project's notes); the benchmark uses
//! at most 16.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [dir, port] => port.parse::<u16>().ok().map(|p| (dir, p, 8)),
        [dir, port, threads] => port
            .parse::<u16>()
            .ok()
            .zip(threads.parse::<usize>().ok().filter(|&t| t > 0))
            .map(|(p, t)| (dir, p, t)),
        _ => None,
    };
    let Some((dir, port, threads)) = parsed else {
        eprintln!("usage: tinyserve DIR PORT [THREADS]");
        return ExitCode::from(2);
    };
    let mut files = HashMap::new();
    let listed = match shmcache::cache::preload::list(Path::new(dir)) {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("tinyserve: {dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (key, path) in listed {
        match std::fs::read(&path) {
            Ok(bytes) => drop(files.insert(key, Arc::<[u8]>::from(bytes))),
            Err(e) => eprintln!("tinyserve: skipping {}: {e}", path.display()),
        }
    }
    // Tuned as the project's notes say: TCP_NODELAY on the listener, inherited by every
    // accepted socket, or each keep-alive response stalls about 40 ms.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .and_then(|l| shmcache::http::server::nodelay_for_accepted(&l).map(|()| l));
    let server = match listener.map(|l| tiny_http::Server::from_listener(l, None)) {
        Ok(Ok(server)) => Arc::new(server),
        Ok(Err(e)) => {
            eprintln!("tinyserve: 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("tinyserve: binding 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "tinyserve: listening on http://{} ({} files, {threads} threads)",
        server.server_addr(),
        files.len()
    );
    let files = Arc::new(files);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (server, files) = (Arc::clone(&server), Arc::clone(&files));
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    // The URL's path is the key: the benchmark asks for plain names.
                    let path = request.url().split('?').next().unwrap_or("/").to_owned();
                    let _ = match files.get(&path) {
                        // Read from the shared bytes, not copied into a response of its own.
                        // No chunked encoding past 32 KiB: a Content-Length, as the others send.
                        Some(bytes) => request.respond(
                            tiny_http::Response::new(
                                200.into(),
                                Vec::new(),
                                std::io::Cursor::new(Arc::clone(bytes)),
                                Some(bytes.len()),
                                None,
                            )
                            .with_chunked_threshold(usize::MAX),
                        ),
                        None => request.respond(tiny_http::Response::empty(404)),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    ExitCode::SUCCESS
}
