//! One HTTP request, from request line to the last body byte.

use std::net::SocketAddr;
use std::time::Instant;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::body::Body;
use super::cache_client::{Answer, CacheClient};
use super::path::{PathError, key_from_target};
use super::storage::{DirStorage, Lookup};
use crate::ipc::sys::abort_connection;

/// What every request handler shares.
pub struct Context {
    pub cache: std::sync::Arc<CacheClient>,
    pub storage: Option<DirStorage>,
    pub local_addr: SocketAddr,
}

/// Where an answer came from, for the access log and the `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Hit,
    Secondary,
    None,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Secondary => "secondary",
            Source::None => "-",
        }
    }
}

const SERVER: &str = concat!("shmcache/", env!("CARGO_PKG_VERSION"));

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII")
}

/// A short text/plain answer for an error status.
fn error(status: u16, text: &'static str) -> Response<Body> {
    Response::new(
        StatusCode(status),
        vec![header("Content-Type", "text/plain; charset=utf-8")],
        Body::Text(text.as_bytes()),
        Some(text.len()),
        None,
    )
}

fn content_type(key: &str) -> String {
    mime_guess::from_path(key)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

fn found(key: &str, len: u64, body: Body, source: Source) -> Response<Body> {
    Response::new(
        StatusCode(200),
        vec![
            header("Content-Type", &content_type(key)),
            header(
                "X-Cache",
                if source == Source::Hit { "HIT" } else { "MISS" },
            ),
        ],
        body,
        Some(len as usize),
        None,
    )
}

/// Answers `request` and logs it. Never panics on client input.
pub fn handle(ctx: &Context, request: Request) {
    let started = Instant::now();
    let head_only = *request.method() == Method::Head;
    let (response, source) = respond_to(ctx, request.method(), request.url(), head_only);
    let response = response
        .with_header(header("Server", SERVER))
        .with_chunked_threshold(usize::MAX);
    let status = response.status_code().0;
    let len = response.data_length().unwrap_or(0);
    let peer = request.remote_addr().copied();
    let line = format!("{} {}", request.method(), request.url());
    if let Err(e) = request.respond(response) {
        // The body failed half-way (or the client stalled past the send timeout). The status
        // line is gone already: the only honest signal left is to cut the connection short of
        // Content-Length, so the client cannot take a partial body as complete.
        log::warn!("{line}: response aborted: {e}");
        if let Some(peer) = peer {
            let _ = abort_connection(ctx.local_addr, peer);
        }
    }
    log::info!(
        "{} \"{line}\" {status} {len} {}us {}",
        peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        started.elapsed().as_micros(),
        source.as_str(),
    );
}

fn respond_to(
    ctx: &Context,
    method: &Method,
    target: &str,
    head_only: bool,
) -> (Response<Body>, Source) {
    if !matches!(method, Method::Get | Method::Head) {
        return (
            error(405, "405 Method Not Allowed\n").with_header(header("Allow", "GET, HEAD")),
            Source::None,
        );
    }
    let key = match key_from_target(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (error(414, "414 URI Too Long\n"), Source::None),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (error(400, "400 Bad Request\n"), Source::None);
        }
    };
    let cache_available = match ctx.cache.get(&key, 0, if head_only { 0 } else { u64::MAX }) {
        Ok(Answer::Found { head, body }) => {
            return (
                found(&key, head.total_len, Body::Cache(body), Source::Hit),
                Source::Hit,
            );
        }
        Ok(Answer::NotFound) => true,
        Err(e) => {
            log::debug!("{key}: cache: {e}");
            false
        }
    };
    match &ctx.storage {
        Some(storage) => from_storage(storage, &key),
        None if cache_available => (error(404, "404 Not Found\n"), Source::None),
        None => (
            error(503, "503 Service Unavailable: no cache is running\n")
                .with_header(header("Retry-After", "1")),
            Source::None,
        ),
    }
}

fn from_storage(storage: &DirStorage, key: &str) -> (Response<Body>, Source) {
    use std::io::Read;
    match storage.lookup(key) {
        Ok(Lookup::File { file, len, .. }) => (
            found(key, len, Body::File(file.take(len)), Source::Secondary),
            Source::Secondary,
        ),
        Ok(Lookup::Directory | Lookup::Missing) => (error(404, "404 Not Found\n"), Source::None),
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            (error(500, "500 Internal Server Error\n"), Source::None)
        }
    }
}
