//! One HTTP request, from request line to the last body byte.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Method, Request};

use super::body::{Body, FillBody};
use super::cache_client::{Answer, CacheClient, CacheError, Part};
use super::coalesce::{Coalescer, Role, Ticket};
use super::conditional::{ByteRange, Conditions, Outcome, Validators};
use super::path::{PathError, object_key, percent_encode};
use super::response::{self, Headers, Reply, Value};
use super::stats::{self, ProxyStats, bump};
use super::storage::{Cached as StoredValidators, Lookup, Revalidation, StorageError};
use crate::ipc::channel::{ChannelError, Etag, Head};
use crate::ipc::pool::SegmentPool;
use crate::ipc::sys::abort_connection;

/// What every request handler shares.
pub struct Context {
    pub cache: Arc<CacheClient>,
    pub storage: Option<super::storage::Storage>,
    pub local_addr: SocketAddr,
    pub coalescer: Arc<Coalescer>,
    /// How long a miss waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    pub stats: Arc<ProxyStats>,
    pub pool: Arc<SegmentPool>,
    /// How long past its lifetime an entry may still be served while secondary storage
    /// cannot be reached to revalidate it (stale-if-error), in seconds.
    pub stale_if_error: u64,
    /// Addresses allowed to PURGE besides 127.0.0.1 and ::1.
    pub purge_allow: Vec<std::net::IpAddr>,
}

/// Paths the proxy answers itself; files of these names cannot be served.
pub const STATS_PATH: &str = "/-/stats";
pub const METRICS_PATH: &str = "/-/metrics";

const UNAVAILABLE: &str = "503 Service Unavailable: the cache is not answering\n";

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
fn screen(ctx: &Context, mut request: Request) -> Option<Request> {
    if let Some(declared) = request.body_length().filter(|&n| n > MAX_DISCARDED_BODY) {
        drop_connection(ctx, request, declared);
        return None;
    }
    // A chunked body has no declared length and tiny_http does not discard it: read it off
    // here (within the same limit), or the next request on the connection would be parsed
    // from its bytes.
    if request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"))
    {
        let limit = MAX_DISCARDED_BODY as u64 + 1;
        let read = std::io::copy(&mut request.as_reader().take(limit), &mut std::io::sink());
        if !read.is_ok_and(|n| n < limit) {
            bump(&ctx.stats.connections_dropped);
            log::warn!(target: "access", "{:?}: chunked body over {MAX_DISCARDED_BODY} bytes; connection cut", request.remote_addr());
            if let Some(peer) = request.remote_addr() {
                let _ = abort_connection(ctx.local_addr, *peer);
            }
            return None;
        }
    }
    Some(request)
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
    bump(&ctx.stats.connections_dropped);
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

/// The client's address in the access log, formatted only if the line is written.
struct Client(Option<SocketAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "{}", peer.ip()),
            None => f.write_str("-"),
        }
    }
}

/// Sends `reply` and writes the access-log line.
fn finish(ctx: &Context, request: Request, reply: Reply, source: Source, started: Instant) {
    let status = reply.status;
    let peer = request.remote_addr().copied();
    // Built only when access lines are logged (info): the hit path should not allocate for
    // nothing. With the access log at warn, an aborted response is logged without it.
    let line = if log::log_enabled!(target: "access", log::Level::Info) {
        format!(
            "{} {} HTTP/{}",
            request.method(),
            request.url(),
            request.http_version()
        )
    } else {
        String::new()
    };
    // Counted before the response goes out, so a client that has read it sees it counted.
    ctx.stats.count_status(status);
    let outcome = response::send(request, reply);
    let client = Client(peer);
    let micros = started.elapsed().as_micros();
    match outcome {
        Ok(sent) => {
            if sent.must_close
                && let Some(peer) = peer
            {
                let _ = abort_connection(ctx.local_addr, peer);
            }
            if source != Source::Proxy {
                ctx.stats
                    .bytes_served
                    .fetch_add(sent.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            log::info!(
                target: "access",
                "{client} \"{line}\" {status} {} {micros} {}",
                sent.bytes,
                source.as_str()
            );
        }
        Err(e) => {
            bump(&ctx.stats.responses_aborted);
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
        Method::NonStandard(m) if m.as_str() == "PURGE" => {
            return (purge(ctx, request), Source::Proxy);
        }
        _ => {
            let reply =
                Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
            return (reply, Source::Proxy);
        }
    };
    let target = request.url();
    let key = match object_key(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (Reply::text(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (Reply::text(400, "400 Bad Request\n"), Source::Proxy);
        }
    };
    // Matched on the normalised key, so no spelling of the path reaches a file instead.
    match key.as_str() {
        STATS_PATH => return (stats_page(ctx, false), Source::Proxy),
        METRICS_PATH => return (stats_page(ctx, true), Source::Proxy),
        _ => {}
    }
    let conditions = Conditions::from_headers(request.headers());
    bump(&ctx.stats.requests);
    let ask = Ask {
        key: &key,
        target,
        conditions: &conditions,
        head_only,
    };
    let (reply, source) = lookup(ctx, &ask);
    bump(if source == Source::Hit {
        &ctx.stats.hits
    } else {
        &ctx.stats.misses
    });
    (reply, source)
}

/// What one request asks for, handed down the lookup.
#[derive(Clone, Copy)]
struct Ask<'a> {
    key: &'a str,
    target: &'a str,
    conditions: &'a Conditions,
    head_only: bool,
}

/// Serves an object: from the cache, else from secondary storage (filling the cache when
/// the whole object is sent), else an error.
fn lookup(ctx: &Context, ask: &Ask) -> (Reply, Source) {
    let Ask {
        key,
        conditions,
        head_only,
        ..
    } = *ask;
    // With no secondary storage there is nothing to revalidate against: whatever the cache
    // holds is served, expired or not.
    let allow_stale = ctx.storage.is_none();
    let accept_len = match from_cache(ctx, ask, allow_stale) {
        Ok(Cached::Hit(reply)) => return (reply, Source::Hit),
        Ok(Cached::Miss { accept_len }) => Some(accept_len),
        Ok(Cached::Expired(head)) => {
            return match &ctx.storage {
                Some(storage) => revalidate(ctx, storage, ask, &head),
                // Asked with ALLOW_STALE, a cache that still answers "expired" is broken.
                None => {
                    log::warn!("{key}: the cache answered expired to an ALLOW_STALE request");
                    (
                        Reply::text(503, UNAVAILABLE).with_header("Retry-After", "1"),
                        Source::Proxy,
                    )
                }
            };
        }
        Err(e) => {
            log::debug!("{key}: cache: {e}");
            None
        }
    };
    let Some(storage) = &ctx.storage else {
        return match accept_len {
            Some(_) => (Reply::text(404, "404 Not Found\n"), Source::Proxy),
            None => {
                let text = UNAVAILABLE;
                (
                    Reply::text(503, text).with_header("Retry-After", "1"),
                    Source::Proxy,
                )
            }
        };
    };
    // Only a plain GET of the whole object can fill the cache as it is served.
    let may_fill = !head_only && conditions.range().is_none();
    let fill = match accept_len {
        Some(accept_len) if may_fill && accept_len > 0 => match ctx.coalescer.join(key) {
            Role::Leader(ticket) => Some((accept_len, ticket)),
            Role::Follower(flight) => {
                bump(&ctx.stats.coalesced_waits);
                if flight.wait(ctx.coalesce_timeout) {
                    if let Ok(Cached::Hit(reply)) = from_cache(ctx, ask, false) {
                        return (reply, Source::Hit);
                    }
                } else {
                    bump(&ctx.stats.coalesce_timeouts);
                }
                None
            }
        },
        _ => None,
    };
    from_storage(ctx, storage.lookup(key), ask, fill)
}

/// Serves an entry whose lifetime has passed: checks it against secondary storage first
/// (one request per key does, the others wait for it), then renews and serves it, or
/// replaces it with the new version, or (storage unreachable) serves it stale for a while.
fn revalidate(
    ctx: &Context,
    storage: &super::storage::Storage,
    ask: &Ask,
    head: &Head,
) -> (Reply, Source) {
    let key = ask.key;
    let ticket = match ctx.coalescer.join(key) {
        Role::Leader(ticket) => ticket,
        Role::Follower(flight) => {
            bump(&ctx.stats.coalesced_waits);
            if flight.wait(ctx.coalesce_timeout)
                && let Ok(Cached::Hit(reply)) = from_cache(ctx, ask, false)
            {
                return (reply, Source::Hit);
            }
            return from_storage(ctx, storage.lookup(key), ask, None);
        }
    };
    let cached = StoredValidators {
        len: head.total_len,
        modified: head.modified,
        etag: head.etag.as_ref().map(Etag::as_str),
    };
    match storage.revalidate(key, &cached) {
        Ok(Revalidation::Unchanged { max_age }) => {
            bump(&ctx.stats.revalidated);
            let renewed = ctx.cache.renew(key, max_age);
            drop(ticket);
            if let (Ok(true), Ok(Cached::Hit(reply))) = (renewed, from_cache(ctx, ask, false)) {
                return (reply, Source::Hit);
            }
            from_storage(ctx, storage.lookup(key), ask, None)
        }
        Ok(Revalidation::Changed(object)) => {
            bump(&ctx.stats.replaced);
            let fill = Some((head.accept_len, ticket));
            from_storage(ctx, Ok(Lookup::Found(object)), ask, fill)
        }
        Ok(Revalidation::Missing) => {
            let _ = ctx.cache.purge(key);
            (Reply::text(404, "404 Not Found\n"), Source::Proxy)
        }
        Err(e) if head.age() < head.max_age.saturating_add(ctx.stale_if_error) => {
            log::warn!("{key}: cannot revalidate ({e}); serving it stale");
            drop(ticket);
            serve_stale(ctx, ask)
        }
        Err(e) => from_storage(ctx, Err(e), ask, None),
    }
}

/// Serves an expired entry as it is, because secondary storage could not revalidate it.
fn serve_stale(ctx: &Context, ask: &Ask) -> (Reply, Source) {
    match from_cache(ctx, ask, true) {
        Ok(Cached::Hit(reply)) => {
            bump(&ctx.stats.stale_served);
            (reply, Source::Hit)
        }
        _ => (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy),
    }
}

/// `PURGE /path`: removes one entry from the cache; 200 if it was there, 404 if not.
/// Only from 127.0.0.1, ::1 and the `--purge-allow` addresses.
fn purge(ctx: &Context, request: &Request) -> Reply {
    let allowed = request.remote_addr().is_some_and(|peer| {
        // ::ffff:127.0.0.1 (a dual-stack listener) is 127.0.0.1.
        let ip = peer.ip().to_canonical();
        ip == std::net::IpAddr::from([127, 0, 0, 1])
            || ip == std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            || ctx.purge_allow.contains(&ip)
    });
    if !allowed {
        return Reply::text(
            403,
            "403 Forbidden: PURGE is not allowed from this address\n",
        );
    }
    let key = match object_key(request.url()) {
        Ok(key) => key,
        Err(PathError::TooLong) => return Reply::text(414, "414 URI Too Long\n"),
        Err(PathError::Bad(_)) => return Reply::text(400, "400 Bad Request\n"),
    };
    match ctx.cache.purge(&key) {
        Ok(true) => {
            bump(&ctx.stats.purged);
            Reply::text(200, "200 Purged\n")
        }
        Ok(false) => Reply::text(404, "404 Not Found in the cache\n"),
        Err(e) => {
            log::debug!("{key}: purge: {e}");
            Reply::text(503, UNAVAILABLE).with_header("Retry-After", "1")
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

/// What the cache said.
// Built once per request and matched at once; boxing the reply would cost an allocation on
// the hit path to save a move.
#[allow(clippy::large_enum_variant)]
enum Cached {
    Hit(Reply),
    /// Not there; it would take a STORE of up to `accept_len` bytes.
    Miss {
        accept_len: u64,
    },
    /// There, but past its lifetime: to be revalidated.
    Expired(Head),
}

/// Asks the cache; `allow_stale` takes an entry even past its lifetime.
fn from_cache(ctx: &Context, ask: &Ask, allow_stale: bool) -> Result<Cached, CacheError> {
    let Ask {
        key,
        conditions,
        head_only,
        ..
    } = *ask;
    let mut part = first_part(conditions, head_only);
    // Twice is enough unless the object changes between the two asks; then ask again.
    for _ in 0..3 {
        let (head, body) = match ctx.cache.get(key, part, allow_stale)? {
            Answer::Found { head, body } => (head, body),
            Answer::NotFound { accept_len } => return Ok(Cached::Miss { accept_len }),
            Answer::Expired { head } => return Ok(Cached::Expired(head)),
        };
        let validators = Validators {
            len: Some(head.total_len),
            modified: head.modified,
            etag: head.etag.as_ref().map(Etag::as_str),
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
        let mut reply = answer(key, &validators, outcome, body, Source::Hit);
        // How long ago the cache stored or revalidated it (RFC 9111 §5.1).
        reply.headers.push("Age", Value::Number(head.age()));
        return Ok(Cached::Hit(reply));
    }
    Err(CacheError::Failed(ChannelError::Protocol(
        "the object changed at every ask",
    )))
}

/// Answers from what secondary storage found, filling the cache on the way when `fill`
/// says it may.
fn from_storage(
    ctx: &Context,
    found: Result<Lookup, StorageError>,
    ask: &Ask,
    fill: Option<(u64, Ticket)>,
) -> (Reply, Source) {
    let Ask {
        key,
        target,
        conditions,
        head_only,
    } = *ask;
    let mut object = match found {
        Ok(Lookup::Found(object)) => object,
        // Like nginx: a directory named without its trailing slash is redirected to it.
        Ok(Lookup::Directory) => {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let mut location = percent_encode(key);
            location.push('/');
            if !query.is_empty() {
                location.push('?');
                location.push_str(query);
            }
            let reply =
                Reply::text(301, "301 Moved Permanently\n").with_header("Location", location);
            return (reply, Source::Proxy);
        }
        Ok(Lookup::Missing) => return (Reply::text(404, "404 Not Found\n"), Source::Proxy),
        Err(e @ StorageError::Origin(_)) => {
            log::warn!("{key}: {e}");
            return (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy);
        }
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            return (
                Reply::text(500, "500 Internal Server Error\n"),
                Source::Proxy,
            );
        }
    };
    let etag = object.etag.take();
    let validators = Validators {
        len: object.len,
        modified: object.modified,
        etag: etag.as_deref(),
    };
    let outcome = conditions.evaluate(&validators);
    let range = match object.len {
        Some(len) => outcome.body_range(len),
        // Unknown length: the whole stream, or nothing.
        None => (outcome == Outcome::Full).then_some((0, u64::MAX)),
    };
    let body = match range {
        Some((start, n)) if !head_only => {
            if let Err(e) = object.skip(start) {
                log::warn!("{key}: secondary storage: {e}");
                return (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy);
            }
            let (len, modified, max_age) = (object.len, object.modified, object.max_age);
            let source = object.body.take(n);
            // Only the whole object, of known length within the cache's limit, and
            // storable (not no-store or private) goes in.
            let storable =
                outcome == Outcome::Full && len.is_some_and(|l| l <= accept_len_of(&fill));
            match (fill, max_age) {
                (Some((_, ticket)), Some(max_age)) if storable => {
                    match ctx.cache.store(key, n, modified, etag.clone(), max_age) {
                        Ok(f) => {
                            Body::Fill(FillBody::new(source, f, ticket, Arc::clone(&ctx.stats)))
                        }
                        Err(e) => {
                            log::debug!("{key}: not filling the cache: {e}");
                            Body::Storage(source)
                        }
                    }
                }
                _ => Body::Storage(source),
            }
        }
        _ => Body::Text(b""),
    };
    let reply = answer(key, &validators, outcome, body, Source::Secondary);
    (reply, Source::Secondary)
}

fn accept_len_of(fill: &Option<(u64, Ticket)>) -> u64 {
    fill.as_ref().map_or(0, |(accept_len, _)| *accept_len)
}

/// The reply for an object with these validators, as `outcome` decided.
fn answer(key: &str, v: &Validators, outcome: Outcome, body: Body, source: Source) -> Reply {
    let mut headers = Headers::new();
    if let Some(modified) = v.modified {
        headers.push("Last-Modified", Value::Date(modified));
    }
    if let Some(etag) = v.etag.and_then(Etag::new) {
        headers.push("ETag", Value::Etag(etag));
    }
    headers.push(
        "X-Cache",
        if source == Source::Hit { "HIT" } else { "MISS" },
    );
    let (status, length) = match outcome {
        // The length is the one a 200 would announce (RFC 9110 §8.6); no body follows.
        Outcome::NotModified => (304, v.len),
        Outcome::Full => (200, v.len),
        Outcome::Partial { start, len } => {
            let total = v.len.expect("ranges apply to objects of known length");
            let end = start + len - 1;
            headers.push("Content-Range", Value::Range { start, end, total });
            (206, Some(len))
        }
        Outcome::Unsatisfiable => {
            let total = v.len.unwrap_or(0);
            return Reply::text(416, "416 Range Not Satisfiable\n")
                .with_header("Content-Range", Value::Unsatisfiable(total));
        }
    };
    if status != 304 {
        let content_type = mime_guess::from_path(key)
            .first_raw()
            .unwrap_or("application/octet-stream");
        headers.push("Content-Type", content_type);
        headers.push("Accept-Ranges", "bytes");
    }
    Reply {
        status,
        headers,
        length,
        body,
    }
}

/// `/-/stats` (JSON) or `/-/metrics` (Prometheus): the proxy's counters and the cache's.
fn stats_page(ctx: &Context, prometheus: bool) -> Reply {
    let mut proxy = ctx.stats.values(ctx.pool.wait_stats());
    proxy.extend(ctx.cache.breaker_stats());
    let cache = ctx
        .cache
        .stats()
        .ok()
        .map(|text| stats::parse_cache_stats(&text));
    let (text, content_type) = if prometheus {
        (
            stats::to_prometheus(&proxy, cache.as_deref()),
            "text/plain; version=0.0.4",
        )
    } else {
        (stats::to_json(&proxy, cache.as_deref()), "application/json")
    };
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    headers.push("Cache-Control", "no-store");
    Reply {
        status: 200,
        headers,
        length: Some(text.len() as u64),
        body: Body::Memory(std::io::Cursor::new(text.into_bytes().into())),
    }
}
