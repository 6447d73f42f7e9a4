//! One HTTP request, from request line to the last body byte.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tiny_http::{HTTPVersion, Header, Method, Request, Response, StatusCode};

use super::body::Body;
use super::cache_client::{Answer, CacheClient, CacheError, Part};
use super::conditional::{ByteRange, Conditions, Outcome, Validators};
use super::path::{PathError, key_from_target};
use super::storage::{DirStorage, Lookup};
use crate::ipc::channel::ChannelError;
use crate::ipc::sys::abort_connection;

/// What every request handler shares.
pub struct Context {
    pub cache: Arc<CacheClient>,
    pub storage: Option<DirStorage>,
    pub local_addr: SocketAddr,
}

/// Where an answer came from, for the access log and the `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Through a segment from the cache.
    Hit,
    /// From secondary storage, after the cache did not have it (or was not there).
    Secondary,
    /// Answered by the proxy alone (errors, redirects).
    Proxy,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Secondary => "secondary",
            Source::Proxy => "-",
        }
    }
}

const SERVER: &str = concat!("shmcache/", env!("CARGO_PKG_VERSION"));

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header values we build are ASCII")
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

/// Answers `request`, then writes one access-log line (target `access`):
/// `client "METHOD target HTTP/x.y" status bytes microseconds source`.
pub fn handle(ctx: &Context, request: Request) {
    let started = Instant::now();
    let (response, source) = respond_to(ctx, &request);
    let mut response = response
        .with_header(header("Server", SERVER))
        .with_chunked_threshold(usize::MAX);
    if wants_http10_keep_alive(&request) {
        // tiny_http keeps such a connection open but does not say so; without this header
        // an HTTP/1.0 client would assume the server closes it.
        response.add_header(header("Connection", "keep-alive"));
    }
    let status = response.status_code().0;
    let sends_body = *request.method() != Method::Head && status != 304;
    let bytes = if sends_body {
        response.data_length().unwrap_or(0)
    } else {
        0
    };
    let peer = request.remote_addr().copied();
    let line = format!(
        "{} {} HTTP/{}",
        request.method(),
        request.url(),
        request.http_version()
    );
    let outcome = request.respond(response);
    let client = peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string());
    let micros = started.elapsed().as_micros();
    match outcome {
        Ok(()) => log::info!(
            target: "access",
            "{client} \"{line}\" {status} {bytes} {micros} {}",
            source.as_str()
        ),
        Err(e) => {
            // The body failed half-way (or the client stalled past the send timeout). The
            // status line is gone already: the only honest signal left is to cut the
            // connection short of Content-Length, so the client cannot take a partial body
            // as complete.
            if let Some(peer) = peer {
                let _ = abort_connection(ctx.local_addr, peer);
            }
            log::warn!(
                target: "access",
                "{client} \"{line}\" {status} aborted {micros} {} ({e})",
                source.as_str()
            );
        }
    }
}

fn wants_http10_keep_alive(request: &Request) -> bool {
    *request.http_version() == HTTPVersion(1, 0)
        && request.headers().iter().any(|h| {
            h.field.equiv("Connection")
                && h.value.as_str().to_ascii_lowercase().contains("keep-alive")
        })
}

fn respond_to(ctx: &Context, request: &Request) -> (Response<Body>, Source) {
    let head_only = match request.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            let allow = header("Allow", "GET, HEAD");
            return (
                error(405, "405 Method Not Allowed\n").with_header(allow),
                Source::Proxy,
            );
        }
    };
    let target = request.url();
    let key = match key_from_target(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (error(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (error(400, "400 Bad Request\n"), Source::Proxy);
        }
    };
    // A directory is asked for with a trailing slash and answered with its index.
    let key = if key.ends_with('/') {
        format!("{key}index.html")
    } else {
        key
    };
    let conditions = Conditions::from_headers(request.headers());
    let cache_error = match from_cache(ctx, &key, &conditions, head_only) {
        Ok(Some(response)) => return (response, Source::Hit),
        Ok(None) => None,
        Err(e) => {
            log::debug!("{key}: cache: {e}");
            Some(e)
        }
    };
    match (&ctx.storage, cache_error) {
        (Some(storage), _) => from_storage(storage, &key, target, &conditions, head_only),
        (None, None) => (error(404, "404 Not Found\n"), Source::Proxy),
        (None, Some(_)) => {
            let retry = header("Retry-After", "1");
            let text = "503 Service Unavailable: the cache is not answering\n";
            (error(503, text).with_header(retry), Source::Proxy)
        }
    }
}

/// The first thing to ask the cache for. When a precondition may make the body
/// unnecessary (or change which bytes are wanted), ask for the head alone first: a
/// revalidation that ends in 304 then moves no body at all.
fn first_part(conditions: &Conditions, head_only: bool) -> Part {
    if head_only || conditions.has_preconditions() {
        return Part::Head;
    }
    match conditions.range() {
        None => Part::ALL,
        Some(ByteRange::FromTo(a, b)) => Part::Range {
            offset: a,
            length: b - a + 1,
        },
        Some(ByteRange::From(a)) => Part::Range {
            offset: a,
            length: u64::MAX,
        },
        Some(ByteRange::Last(n)) => Part::Last(n),
    }
}

/// Serves `key` from the cache. `Ok(None)`: the cache does not have it.
fn from_cache(
    ctx: &Context,
    key: &str,
    conditions: &Conditions,
    head_only: bool,
) -> Result<Option<Response<Body>>, CacheError> {
    let mut part = first_part(conditions, head_only);
    // Twice is enough unless the object changes between the two asks; then ask again.
    for _ in 0..3 {
        let Answer::Found { head, body } = ctx.cache.get(key, part)? else {
            return Ok(None);
        };
        let validators = Validators {
            len: head.total_len,
            modified: head.modified,
            etag: head.etag.as_deref(),
        };
        let outcome = conditions.evaluate(&validators);
        let needed = if head_only {
            None
        } else {
            outcome.body_range(head.total_len)
        };
        let body = match needed {
            None => Body::Text(b""), // dropping a body still in flight cancels it
            Some(range) if range == (head.body_offset, head.body_len) => Body::Cache(body),
            Some((offset, length)) => {
                part = Part::Range { offset, length };
                continue;
            }
        };
        return Ok(Some(answer(key, &validators, outcome, body, Source::Hit)));
    }
    Err(CacheError::Failed(ChannelError::Protocol(
        "the object changed at every ask",
    )))
}

fn from_storage(
    storage: &DirStorage,
    key: &str,
    target: &str,
    conditions: &Conditions,
    head_only: bool,
) -> (Response<Body>, Source) {
    match storage.lookup(key) {
        Ok(Lookup::File {
            mut file,
            len,
            modified,
            etag,
        }) => {
            let validators = Validators {
                len,
                modified,
                etag: Some(&etag),
            };
            let outcome = conditions.evaluate(&validators);
            let body = match outcome.body_range(len) {
                Some((start, n)) if !head_only => match file.seek(SeekFrom::Start(start)) {
                    Ok(_) => Body::File(file.take(n)),
                    Err(e) => {
                        log::warn!("{key}: secondary storage: {e}");
                        return (error(500, "500 Internal Server Error\n"), Source::Proxy);
                    }
                },
                _ => Body::Text(b""),
            };
            let response = answer(key, &validators, outcome, body, Source::Secondary);
            (response, Source::Secondary)
        }
        // Like nginx: a directory named without its trailing slash is redirected to it.
        Ok(Lookup::Directory) => {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let mut location = percent_encode_path(key);
            location.push('/');
            if !query.is_empty() {
                location.push('?');
                location.push_str(query);
            }
            let response =
                error(301, "301 Moved Permanently\n").with_header(header("Location", &location));
            (response, Source::Proxy)
        }
        Ok(Lookup::Missing) => (error(404, "404 Not Found\n"), Source::Proxy),
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            (error(500, "500 Internal Server Error\n"), Source::Proxy)
        }
    }
}

/// The response for an object with these validators, as `outcome` decided.
fn answer(
    key: &str,
    v: &Validators,
    outcome: Outcome,
    body: Body,
    source: Source,
) -> Response<Body> {
    let mut headers = Vec::with_capacity(8);
    if let Some(modified) = v.modified {
        headers.push(header("Last-Modified", &httpdate::fmt_http_date(modified)));
    }
    if let Some(etag) = v.etag {
        headers.push(header("ETag", etag));
    }
    headers.push(header(
        "X-Cache",
        if source == Source::Hit { "HIT" } else { "MISS" },
    ));
    let (status, length) = match outcome {
        // The length is the one a 200 would announce (RFC 9110 §8.6); tiny_http sends no
        // body with a 304.
        Outcome::NotModified => (304, v.len),
        Outcome::Full => (200, v.len),
        Outcome::Partial { start, len } => {
            let range = format!("bytes {start}-{}/{}", start + len - 1, v.len);
            headers.push(header("Content-Range", &range));
            (206, len)
        }
        Outcome::Unsatisfiable => {
            let text = "416 Range Not Satisfiable\n";
            return error(416, text)
                .with_header(header("Content-Range", &format!("bytes */{}", v.len)));
        }
    };
    if status != 304 {
        let content_type = mime_guess::from_path(key)
            .first_raw()
            .unwrap_or("application/octet-stream");
        headers.push(header("Content-Type", content_type));
        headers.push(header("Accept-Ranges", "bytes"));
    }
    Response::new(
        StatusCode(status),
        headers,
        body,
        Some(length as usize),
        None,
    )
}

/// Percent-encodes a decoded path for a `Location` header.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
