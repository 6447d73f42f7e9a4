//! One HTTP request, from request line to the last body byte.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tiny_http::{Method, Request};

use super::body::Body;
use super::cache_client::{Answer, CacheClient, CacheError, Part};
use super::conditional::{ByteRange, Conditions, Outcome, Validators};
use super::path::{PathError, key_from_target};
use super::response::{self, Reply};
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

/// Answers `request`, then writes one access-log line (target `access`):
/// `client "METHOD target HTTP/x.y" status bytes microseconds source`.
pub fn handle(ctx: &Context, request: Request) {
    let started = Instant::now();
    let Some(request) = screen(ctx, request) else {
        return;
    };
    let (reply, source) = respond_to(ctx, &request);
    finish(ctx, request, reply, source, started);
}

/// Answers 503 at once: every worker is busy and the backlog is full.
pub fn refuse_overload(ctx: &Context, request: Request) {
    let Some(request) = screen(ctx, request) else {
        return;
    };
    let reply = Reply::text(503, "503 Service Unavailable: too busy, try again\n")
        .with_header("Retry-After", "1");
    finish(ctx, request, reply, Source::Proxy, Instant::now());
}

/// Lets through the requests that are safe to answer (see [`MAX_DISCARDED_BODY`]).
fn screen(ctx: &Context, request: Request) -> Option<Request> {
    match request.body_length() {
        Some(declared) if declared > MAX_DISCARDED_BODY => {
            drop_connection(ctx, request, declared);
            None
        }
        _ => Some(request),
    }
}

/// The largest request body the proxy reads and throws away (it serves no method that
/// takes a body). tiny_http discards an unread body by allocating a buffer of the size the
/// client declared, so a lying `Content-Length` of a few dozen gigabytes would abort the
/// process; such requests never reach that code.
const MAX_DISCARDED_BODY: usize = 64 * 1024;

/// Cuts the connection of a request that declared a body too large to discard, without
/// answering: answering would make tiny_http discard the body. The request is leaked on
/// purpose, since dropping it is what would allocate; this costs tiny_http's thread for
/// that connection and its descriptors, a bounded price for a request no honest client
/// sends.
fn drop_connection(ctx: &Context, request: Request, declared: usize) {
    log::warn!(
        target: "access",
        "{} \"{} {}\" dropped: declared a {declared}-byte body",
        request.remote_addr().map_or_else(|| "-".to_owned(), |p| p.ip().to_string()),
        request.method(),
        request.url(),
    );
    if let Some(peer) = request.remote_addr() {
        let _ = abort_connection(ctx.local_addr, *peer);
    }
    std::mem::forget(request);
}

/// Sends `reply` and writes the access-log line.
fn finish(ctx: &Context, request: Request, reply: Reply, source: Source, started: Instant) {
    let status = reply.status;
    let peer = request.remote_addr().copied();
    let line = format!(
        "{} {} HTTP/{}",
        request.method(),
        request.url(),
        request.http_version()
    );
    let outcome = response::send(request, reply);
    let client = peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string());
    let micros = started.elapsed().as_micros();
    match outcome {
        Ok(bytes) => log::info!(
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

fn respond_to(ctx: &Context, request: &Request) -> (Reply, Source) {
    let head_only = match request.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            let reply =
                Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
            return (reply, Source::Proxy);
        }
    };
    let target = request.url();
    let key = match key_from_target(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (Reply::text(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (Reply::text(400, "400 Bad Request\n"), Source::Proxy);
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
        (None, None) => (Reply::text(404, "404 Not Found\n"), Source::Proxy),
        (None, Some(_)) => {
            let text = "503 Service Unavailable: the cache is not answering\n";
            (
                Reply::text(503, text).with_header("Retry-After", "1"),
                Source::Proxy,
            )
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
) -> Result<Option<Reply>, CacheError> {
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
) -> (Reply, Source) {
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
                        return (
                            Reply::text(500, "500 Internal Server Error\n"),
                            Source::Proxy,
                        );
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
                Reply::text(301, "301 Moved Permanently\n").with_header("Location", location);
            (response, Source::Proxy)
        }
        Ok(Lookup::Missing) => (Reply::text(404, "404 Not Found\n"), Source::Proxy),
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            (
                Reply::text(500, "500 Internal Server Error\n"),
                Source::Proxy,
            )
        }
    }
}

/// The reply for an object with these validators, as `outcome` decided.
fn answer(key: &str, v: &Validators, outcome: Outcome, body: Body, source: Source) -> Reply {
    let mut headers = Vec::with_capacity(8);
    if let Some(modified) = v.modified {
        headers.push(("Last-Modified", httpdate::fmt_http_date(modified)));
    }
    if let Some(etag) = v.etag {
        headers.push(("ETag", etag.to_owned()));
    }
    let cache = if source == Source::Hit { "HIT" } else { "MISS" };
    headers.push(("X-Cache", cache.to_owned()));
    let (status, length) = match outcome {
        // The length is the one a 200 would announce (RFC 9110 §8.6); no body follows.
        Outcome::NotModified => (304, v.len),
        Outcome::Full => (200, v.len),
        Outcome::Partial { start, len } => {
            let range = format!("bytes {start}-{}/{}", start + len - 1, v.len);
            headers.push(("Content-Range", range));
            (206, len)
        }
        Outcome::Unsatisfiable => {
            return Reply::text(416, "416 Range Not Satisfiable\n")
                .with_header("Content-Range", format!("bytes */{}", v.len));
        }
    };
    if status != 304 {
        let content_type = mime_guess::from_path(key)
            .first_raw()
            .unwrap_or("application/octet-stream");
        headers.push(("Content-Type", content_type.to_owned()));
        headers.push(("Accept-Ranges", "bytes".to_owned()));
    }
    Reply {
        status,
        headers,
        length,
        body,
    }
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
