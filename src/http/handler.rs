//! One HTTP request, from request line to the last body byte.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::access;
use super::body::{Body, FillBody, HitRange};
use super::coalesce::{Coalescer, Role, Ticket};
use super::conditional;
use super::live;
use super::path::{PathError, object_key, percent_encode};
use super::response::{Headers, Reply, Value};
use super::server::{
    self, ALLOWANCE, Budget, CHUNK, Ended, Method, Request, Response, Resume, Service,
};
use super::stats::{self, ProxyStats, bump};
use super::storage::{
    Cached as StoredValidators, DirStorage, Lookup, Object, Revalidation, Storage, StorageError,
};
use super::upstream::Upstream;
use crate::file;
use crate::ipc::client::{Answer, CacheBody, Client, Found};
use crate::ipc::{ByteRange, Conditions, Etag, Meta, Outcome, StoreHead, Validators};

/// What every request handler shares.
pub struct Context {
    pub cache: Arc<Client>,
    pub storage: Option<super::storage::Storage>,
    pub coalescer: Arc<Coalescer>,
    /// How long a miss waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    pub stats: Arc<ProxyStats>,
    /// How long past its lifetime an entry may still be served while secondary storage
    /// cannot be reached to revalidate it (stale-if-error), in seconds.
    pub stale_if_error: u64,
    /// Addresses allowed to PURGE besides 127.0.0.1 and ::1.
    pub purge_allow: Vec<std::net::IpAddr>,
    /// Addresses allowed to see the `/-/` paths besides 127.0.0.1 and ::1.
    pub admin_allow: Vec<std::net::IpAddr>,
    /// Memory for responses waiting for their clients, shared with the server.
    pub budget: Arc<Budget>,
    /// In front of an origin: the `Vary` of each key's stored responses.
    pub variants: super::origin::Variants,
}

/// Paths the proxy answers itself, only to loopback and `--admin-allow` addresses; files
/// of these names cannot be served.
pub const STATS_PATH: &str = "/-/stats";
pub const METRICS_PATH: &str = "/-/metrics";
/// The live view's page, `/-/` (a directory: its key is its index).
pub const LIVE_PATH: &str = "/-/index.html";
pub const SEGMENTS_PATH: &str = "/-/segments";
pub const SEGMENTS_TEXT_PATH: &str = "/-/segments.txt";

const UNAVAILABLE: &str = "503 Service Unavailable: the cache is not answering\n";

/// Where an answer came from, for the access log and the `X-Cache` header: the
/// proxy's note on each response (the server's `Service::Tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
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

impl Service for Context {
    type Tag = Source;

    fn respond(self: Arc<Self>, request: &Request, mut out: Response<'_, Source>) {
        let (reply, source) = respond_to(&self, request);
        let (head, body) = reply.split(source);
        // Counted before the client can see it, so that a client that read it finds it
        // counted.
        self.stats.count_status(head.status);
        out.start(head);
        if !out.wants_body() {
            // A body not sent is dropped here: a transfer still in flight is cancelled.
            return out.end();
        }
        match body {
            // A hit: copied out here if small, else sent from its segment (deliver_hit).
            Body::Cache(body, hit) => {
                let end = hit.end;
                deliver_hit(self, body, hit, end, out)
            }
            // A fill holds a segment: drained here, at storage speed, within the budget.
            Body::Fill(body) => drain_fill(body, out),
            // These hold nothing scarce: read at the client's pace.
            body => out.stream(Box::new(body)),
        }
    }

    fn connection(&self, opened: bool) {
        if opened {
            self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn finished(&self, ended: Ended<'_, Source>) {
        match ended.outcome {
            Ok(bytes) if ended.tag != Source::Proxy => {
                self.stats.bytes_served.fetch_add(*bytes, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => bump(&self.stats.responses_aborted),
        }
        access::log(&access::Record::new(
            ended.request,
            ended.status,
            ended.outcome,
            ended.elapsed,
            ended.tag.as_str(),
        ));
    }

    fn refused(&self, peer: SocketAddr, request: Option<&Request>, status: u16, why: &str) {
        self.stats.count_status(status);
        match request {
            Some(request) => access::log(&access::Record {
                why: Some(why.to_owned()),
                ..access::Record::new(request, status, &Ok(0), Duration::ZERO, "-")
            }),
            None => access::log(&access::Record::refused(peer.ip(), status, why)),
        }
    }
}

/// Hands a cache hit's body to the response. `body_end` is the offset just past this
/// body's bytes (the hit's end, unless the body is one window of a resumed response).
///
/// An answer of up to [`ALLOWANCE`] bytes is copied out here, whole, before the client
/// sees a byte: its segment is back in the pool at once, whatever the client's pace (and
/// under load, segments are what requests wait for). A larger one is held
/// ([`HeldHit`]): the connection copies it straight out of the segment while its client
/// keeps up, and lets the segment go as soon as the client lags.
///
/// Should the cache break off (stopped, killed, stalled), the rest comes from secondary
/// storage if it holds the same version (see [`storage_rest`]); else the response is cut.
fn deliver_hit(
    ctx: Arc<Context>,
    mut body: CacheBody,
    hit: HitRange,
    body_end: u64,
    mut out: Response<'_, Source>,
) {
    if body.remaining() > ALLOWANCE as u64 {
        body.sending();
        return out.hold(Box::new(HeldHit {
            ctx,
            from: HitBytes::Cache(body),
            hit,
            body_end,
        }));
    }
    let n = body.remaining();
    let mut data = server::buffer();
    let read = match (&mut body).take(n).read_to_end(&mut data) {
        Ok(got) if got as u64 == n => Ok(()),
        Ok(_) => Err(io::ErrorKind::UnexpectedEof.into()),
        Err(e) => Err(e),
    };
    if let Err(e) = read {
        let next = body_end - body.remaining();
        drop(body); // cancels the transfer
        let Some(rest) = storage_rest(&ctx, &hit, next, &e) else {
            return out.fail(e);
        };
        if !data.is_empty() && out.push(data).is_err() {
            return;
        }
        return out.stream(Box::new(Body::Storage(rest)));
    }
    drop(body);
    if out.push(data).is_err() {
        return;
    }
    match resume_after(ctx, hit, body_end) {
        Some(job) => out.resume(job),
        None => out.end(),
    }
}

/// The rest of a hit, from `next` to its end, from secondary storage: when the cache broke
/// off (`why`) and storage holds the very version the response began with. `None` when
/// it does not (or there is no directory behind the cache: an origin would have to be
/// asked with the original request's fields), and the response is to be cut.
fn storage_rest(
    ctx: &Context,
    hit: &HitRange,
    next: u64,
    why: &io::Error,
) -> Option<io::Take<super::storage::Source>> {
    let cached = StoredValidators {
        modified: hit.modified,
        etag: hit.etag.as_ref().map(Etag::as_str),
        identity: hit.identity,
    };
    let rest = dir(ctx)?.rest_of(&hit.key, &cached, hit.total_len, (next, hit.end));
    match &rest {
        Some(_) => {
            bump(&ctx.stats.hits_resumed);
            log::info!(
                "{}: the cache broke off at byte {next} ({why}); sending the rest from \
                 secondary storage, which holds the same version",
                hit.key
            );
        }
        None => log::info!(
            "{}: the cache broke off at byte {next} ({why}), and secondary storage does not \
             hold the same version; cutting the response",
            hit.key
        ),
    }
    rest
}

/// Where the bytes of a held hit come from.
enum HitBytes {
    /// Its segment, as the cache writes it.
    Cache(CacheBody),
    /// Secondary storage, since the cache broke off.
    Storage(StorageRest),
}

/// The rest of a hit from secondary storage, read a chunk at a time so that it can be sent
/// as the segment's slots were.
struct StorageRest {
    source: io::Take<super::storage::Source>,
    /// The chunk in hand, and how much of it has been sent.
    chunk: Vec<u8>,
    sent: usize,
}

impl StorageRest {
    fn in_hand(&self) -> &[u8] {
        &self.chunk[self.sent..]
    }

    fn remaining(&self) -> u64 {
        self.in_hand().len() as u64 + self.source.limit()
    }

    /// As [`CacheBody::chunk`]: the bytes in hand, reading the next chunk if none are.
    fn chunk(&mut self) -> io::Result<usize> {
        if self.in_hand().is_empty() && self.source.limit() > 0 {
            self.chunk.clear();
            self.sent = 0;
            let n = (&mut self.source)
                .take(CHUNK as u64)
                .read_to_end(&mut self.chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file in secondary storage ended short",
                ));
            }
        }
        Ok(self.in_hand().len())
    }

    /// Hands what is left to the connection, to read at its client's pace.
    fn hand_over(self, mut out: Response<'_, Source>) {
        let in_hand = self.in_hand().to_vec();
        if !in_hand.is_empty() && out.push(in_hand).is_err() {
            return;
        }
        out.stream(Box::new(Body::Storage(self.source)));
    }
}

/// A hit's body left in its segment, sent straight from it (see [`server::Held`]).
struct HeldHit {
    ctx: Arc<Context>,
    from: HitBytes,
    hit: HitRange,
    body_end: u64,
}

impl HeldHit {
    /// The cache broke off with `e`: goes on from secondary storage if it holds the same
    /// version, else gives `e` back.
    fn switch(&mut self, e: io::Error) -> io::Result<()> {
        let HitBytes::Cache(body) = &self.from else {
            return Err(e);
        };
        let next = self.body_end - body.remaining();
        let source = storage_rest(&self.ctx, &self.hit, next, &e).ok_or(e)?;
        // Dropping the cache's body cancels its transfer and rebuilds the segment.
        self.from = HitBytes::Storage(StorageRest {
            source,
            chunk: Vec::new(),
            sent: 0,
        });
        Ok(())
    }
}

impl Read for HeldHit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let HitBytes::Cache(body) = &mut self.from {
            match body.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) => self.switch(e)?,
            }
        }
        let HitBytes::Storage(rest) = &mut self.from else {
            unreachable!("switched to storage")
        };
        if rest.in_hand().is_empty() {
            return rest.source.read(buf);
        }
        let n = rest.in_hand().len().min(buf.len());
        buf[..n].copy_from_slice(&rest.in_hand()[..n]);
        rest.sent += n;
        Ok(n)
    }
}

impl server::Held<Source> for HeldHit {
    fn remaining(&self) -> u64 {
        match &self.from {
            HitBytes::Cache(body) => body.remaining(),
            HitBytes::Storage(rest) => rest.remaining(),
        }
    }

    fn chunk(&mut self) -> io::Result<usize> {
        if let HitBytes::Cache(body) = &mut self.from {
            match body.chunk() {
                Ok(n) => return Ok(n),
                Err(e) => self.switch(e)?,
            }
        }
        match &mut self.from {
            HitBytes::Storage(rest) => rest.chunk(),
            HitBytes::Cache(_) => unreachable!("switched to storage"),
        }
    }

    fn send(&mut self, prefix: &[u8], socket: &std::net::TcpStream) -> io::Result<(usize, usize)> {
        // Only the waits in `chunk` are on the cache; errors here are the client's.
        match &mut self.from {
            HitBytes::Cache(body) => body.send(prefix, socket),
            HitBytes::Storage(rest) => {
                use std::io::{IoSlice, Write};
                let parts = [IoSlice::new(prefix), IoSlice::new(rest.in_hand())];
                let n = (&mut &*socket).write_vectored(&parts)?;
                let from_prefix = n.min(prefix.len());
                rest.sent += n - from_prefix;
                Ok((from_prefix, n - from_prefix))
            }
        }
    }

    fn release(self: Box<Self>) -> Option<Resume<Source>> {
        let HeldHit {
            ctx,
            from,
            hit,
            body_end,
        } = *self;
        match from {
            HitBytes::Cache(body) => {
                let next = body_end - body.remaining();
                // Dropping a body with bytes left cancels its transfer.
                drop(body);
                resume_after(ctx, hit, next)
            }
            HitBytes::Storage(rest) if rest.remaining() > 0 => {
                Some(Box::new(move |out: Response<'_, Source>| {
                    rest.hand_over(out)
                }))
            }
            HitBytes::Storage(_) => None,
        }
    }
}

/// The job that sends the rest of a hit from `next`, if anything is left.
fn resume_after(ctx: Arc<Context>, hit: HitRange, next: u64) -> Option<Resume<Source>> {
    (next < hit.end).then(|| -> Resume<Source> {
        Box::new(move |out: Response<'_, Source>| resume_hit(ctx, hit, next, out))
    })
}

/// Asks the cache for the next window of a paused hit, from `next`: no more than a
/// lagging response may keep in memory (see `server::output`), so that a client that lags
/// again does not cancel this transfer too. If the cache no longer serves that version
/// (stopped, restarted, the object replaced), the rest comes from secondary storage when
/// it holds the version, else the response is cut.
fn resume_hit(ctx: Arc<Context>, hit: HitRange, next: u64, out: Response<'_, Source>) {
    let left = hit.end - next;
    let window = (ALLOWANCE as u64 + ctx.budget.per_response()).min(left);
    let conditions = Conditions {
        range: Some(ByteRange::FromTo(next, next + window - 1)),
        ..Conditions::default()
    };
    // Stale or not, the bytes must be the ones the response began with.
    let why = match ctx.cache.get(&hit.key, &conditions, true, false) {
        Ok(Answer::Found(found))
            if found.meta.total_len == hit.total_len
                && found.meta.modified == hit.modified
                && found.meta.etag == hit.etag
                && found.meta.identity == hit.identity
                && found.range == (next, window) =>
        {
            return deliver_hit(ctx, found.body, hit, next + window, out);
        }
        Ok(_) => io::Error::other("the cached object changed or left mid-response"),
        Err(e) => io::Error::other(e.to_string()),
    };
    match storage_rest(&ctx, &hit, next, &why) {
        Some(rest) => out.stream(Box::new(Body::Storage(rest))),
        None => out.fail(io::Error::other(format!("{}: {why}", hit.key))),
    }
}

/// Moves a miss's body from secondary storage into the response while it fills
/// the cache. If memory runs out first, the fill is abandoned (the cache keeps nothing
/// partial) and the connection reads the rest from storage itself, at its client's pace.
fn drain_fill(mut body: FillBody, mut out: Response<'_, Source>) {
    loop {
        let mut data = server::buffer();
        match (&mut body).take(CHUNK as u64).read_to_end(&mut data) {
            Ok(0) => return out.end(),
            Ok(_) => {}
            Err(e) => return out.fail(e),
        }
        match out.push(data) {
            Ok(true) => {}
            Ok(false) => return out.stream(Box::new(Body::Storage(body.abandon()))),
            Err(_) => return,
        }
    }
}

fn respond_to(ctx: &Arc<Context>, request: &Request) -> (Reply, Source) {
    if let Some(origin) = ctx.origin()
        && !matches!(&request.method, Method::Other(m) if m == "PURGE")
    {
        if let Ok(key) = object_key(&request.target)
            && let Some(reply) = admin_page(ctx, request, &key)
        {
            return (reply, Source::Proxy);
        }
        return super::origin::respond(ctx, origin, request);
    }
    let head_only = match &request.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other(m) if m == "PURGE" => {
            return (purge(ctx, request), Source::Proxy);
        }
        Method::Other(_) => {
            let reply =
                Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
            return (reply, Source::Proxy);
        }
    };
    let target = request.target.as_str();
    let key = match object_key(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (Reply::text(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (Reply::text(400, "400 Bad Request\n"), Source::Proxy);
        }
    };
    // Matched on the normalised key, so no spelling of the path reaches a file instead.
    if let Some(reply) = admin_page(ctx, request, &key) {
        return (reply, Source::Proxy);
    }
    let conditions = conditional::from_headers(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
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

/// The one decision: ask the cache once, then serve a fresh hit, revalidate an expired
/// entry, or serve a miss from secondary storage (filling the cache on the way).
fn lookup(ctx: &Context, ask: &Ask) -> (Reply, Source) {
    // With no secondary storage there is nothing to revalidate against: whatever the cache
    // holds is served, expired or not.
    let allow_stale = dir(ctx).is_none();
    let asked = Instant::now();
    match ctx
        .cache
        .get(ask.key, ask.conditions, allow_stale, ask.head_only)
    {
        Ok(Answer::Found(found)) => (file_hit(ask, found), Source::Hit),
        Ok(Answer::Expired {
            meta, accept_len, ..
        }) => revalidate(ctx, ask, &meta, accept_len),
        Ok(Answer::Missing { accept_len }) => miss(ctx, ask, Some(accept_len), asked),
        Err(e) => {
            log::debug!("{}: cache: {e}", ask.key);
            miss(ctx, ask, None, asked)
        }
    }
}

/// Serves what the cache does not have from secondary storage. `accept_len` is what the
/// cache said it would take (`None`: it did not answer; `Some(None)`: it takes nothing):
/// only a plain GET of the whole
/// object fills it, and only one request per key does; the others wait for that fill and
/// then ask the cache again.
fn miss(
    ctx: &Context,
    ask: &Ask,
    accept_len: Option<Option<u64>>,
    asked: Instant,
) -> (Reply, Source) {
    let Some(storage) = dir(ctx) else {
        return match accept_len {
            Some(_) => (Reply::text(404, "404 Not Found\n"), Source::Proxy),
            None => unavailable(),
        };
    };
    let may_fill = !ask.head_only && ask.conditions.range.is_none();
    let fill = match accept_len {
        Some(Some(accept_len)) if may_fill => match ctx.coalescer.join_miss(ask.key, asked) {
            Role::Leader(ticket) => Some((accept_len, ticket)),
            Role::Follower(flight) => {
                return after_fill(ctx, ask, flight.wait(ctx.coalesce_timeout));
            }
        },
        _ => None,
    };
    from_storage(ctx, storage.lookup(ask.key), ask, fill)
}

/// A request that waited for another one's fill (or revalidation) of its key: asks the
/// cache again once it is in, else serves from secondary storage without filling.
fn after_fill(ctx: &Context, ask: &Ask, filled: bool) -> (Reply, Source) {
    bump(&ctx.stats.coalesced_waits);
    if !filled {
        bump(&ctx.stats.coalesce_timeouts);
    } else if let Ok(Answer::Found(found)) =
        ctx.cache.get(ask.key, ask.conditions, false, ask.head_only)
    {
        return (file_hit(ask, found), Source::Hit);
    }
    let storage = dir(ctx).expect("only misses with storage wait");
    from_storage(ctx, storage.lookup(ask.key), ask, None)
}

/// Serves an entry whose lifetime has passed: checks it against secondary storage first
/// (one request per key does, the others wait for it), then renews and serves it, or
/// replaces it with the new version, or (storage unreachable) serves it stale for a while.
fn revalidate(ctx: &Context, ask: &Ask, meta: &Meta, accept_len: Option<u64>) -> (Reply, Source) {
    let key = ask.key;
    // The cache answers "expired" only when asked to: with no storage we never ask.
    let Some(storage) = dir(ctx) else {
        return unavailable();
    };
    let ticket = match ctx.coalescer.join(key) {
        Role::Leader(ticket) => ticket,
        Role::Follower(flight) => return after_fill(ctx, ask, flight.wait(ctx.coalesce_timeout)),
    };
    let cached = StoredValidators {
        modified: meta.modified,
        etag: meta.etag.as_ref().map(Etag::as_str),
        identity: meta.identity,
    };
    match storage.revalidate(key, &cached) {
        Ok(Revalidation::Unchanged { lifetime }) => {
            bump(&ctx.stats.revalidated);
            let renewed = ctx
                .cache
                .renew(key, lifetime, ask.conditions, ask.head_only);
            drop(ticket);
            match renewed {
                Ok(Answer::Found(found)) => (file_hit(ask, found), Source::Hit),
                _ => from_storage(ctx, storage.lookup(key), ask, None),
            }
        }
        Ok(Revalidation::Changed(object)) => {
            bump(&ctx.stats.replaced);
            let fill = accept_len.map(|accept_len| (accept_len, ticket));
            from_storage(ctx, Ok(Lookup::Found(object)), ask, fill)
        }
        Ok(Revalidation::Missing) => {
            let _ = ctx.cache.purge(key);
            (Reply::text(404, "404 Not Found\n"), Source::Proxy)
        }
        Err(e)
            if meta
                .lifetime
                .extended(ctx.stale_if_error)
                .covers(meta.age()) =>
        {
            log::warn!("{key}: cannot revalidate ({e}); serving it stale");
            drop(ticket);
            serve_stale(ctx, ask)
        }
        Err(e) => from_storage(ctx, Err(e), ask, None),
    }
}

/// Serves an expired entry as it is, because secondary storage could not revalidate it:
/// the one path that asks the cache a second time, and only while storage is failing.
fn serve_stale(ctx: &Context, ask: &Ask) -> (Reply, Source) {
    match ctx.cache.get(ask.key, ask.conditions, true, ask.head_only) {
        Ok(Answer::Found(found)) => {
            bump(&ctx.stats.stale_served);
            (file_hit(ask, found), Source::Hit)
        }
        _ => (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy),
    }
}

/// The directory behind the cache, if that is what `-s` named.
fn dir(ctx: &Context) -> Option<&DirStorage> {
    match &ctx.storage {
        Some(Storage::Dir(dir)) => Some(dir),
        _ => None,
    }
}

impl Context {
    /// The origin behind the cache, if `-s` named one: its requests go to
    /// [`super::origin`].
    pub(super) fn origin(&self) -> Option<&Upstream> {
        match &self.storage {
            Some(Storage::Origin(origin)) => Some(origin),
            _ => None,
        }
    }
}

fn unavailable() -> (Reply, Source) {
    let reply = Reply::text(503, UNAVAILABLE).with_header("Retry-After", "1");
    (reply, Source::Proxy)
}

/// `PURGE /path`: removes one entry from the cache; 200 if it was there, 404 if not.
/// Only from 127.0.0.1, ::1 and the `--purge-allow` addresses.
fn purge(ctx: &Context, request: &Request) -> Reply {
    if !live::admin_allowed(request.peer.ip(), &ctx.purge_allow) {
        return Reply::text(
            403,
            "403 Forbidden: PURGE is not allowed from this address\n",
        );
    }
    // In front of an origin, keys hold the query, and variants go with their key.
    let key = match ctx.origin() {
        Some(_) => super::origin::cache_key(&request.target).inspect(|key| {
            ctx.variants.forget(key);
        }),
        None => object_key(&request.target).map(|key| key.as_str().to_owned()),
    };
    let key = match key {
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

/// The response to a cache hit: the stored response as the cache decided the request's
/// conditions, with its body still in the segment, and `age` (RFC 9111 §5.1).
pub(super) fn hit(key: &str, found: Found, age: u64) -> Reply {
    let Found {
        meta,
        headers,
        outcome,
        range: (start, len),
        body,
    } = found;
    let hit = HitRange {
        key: key.to_owned(),
        end: start + len,
        total_len: meta.total_len,
        modified: meta.modified,
        etag: meta.etag,
        identity: meta.identity,
    };
    let body = match body.remaining() {
        0 => Body::Text(b""),
        _ => Body::Cache(body, hit),
    };
    let mut reply = response(
        &meta.validators(),
        meta.status,
        headers,
        outcome,
        body,
        Source::Hit,
    );
    reply.headers.push("Age", Value::Number(age));
    reply
}

/// [`hit`] for a file: its age is how long ago the cache stored or revalidated it.
fn file_hit(ask: &Ask, found: Found) -> Reply {
    let age = found.meta.age();
    hit(ask.key, found, age)
}

/// Answers from what secondary storage found, filling the cache on the way when `fill`
/// says it may.
fn from_storage(
    ctx: &Context,
    found: Result<Lookup, StorageError>,
    ask: &Ask,
    fill: Option<(u64, Ticket)>,
) -> (Reply, Source) {
    let key = ask.key;
    let object = match found {
        Ok(Lookup::Found(object)) => object,
        // Like nginx: a directory named without its trailing slash is redirected to it.
        Ok(Lookup::Directory) => return (redirect_to_directory(key, ask.target), Source::Proxy),
        Ok(Lookup::Missing) => return (Reply::text(404, "404 Not Found\n"), Source::Proxy),
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            return (
                Reply::text(500, "500 Internal Server Error\n"),
                Source::Proxy,
            );
        }
    };
    match stored_response(ctx, object, ask, fill) {
        Ok(reply) => (reply, Source::Secondary),
        Err(e) => {
            log::warn!("{key}: secondary storage: {e}");
            (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy)
        }
    }
}

/// The response for an object from secondary storage, as the request's conditions decide;
/// its body fills the cache on the way when `fill` allows (the whole object, of known
/// length within the cache's limit, and storable: not no-store or private).
fn stored_response(
    ctx: &Context,
    mut object: Object,
    ask: &Ask,
    fill: Option<(u64, Ticket)>,
) -> io::Result<Reply> {
    let etag = object.etag.take();
    let validators = Validators {
        len: object.len,
        modified: object.modified,
        etag: etag.as_deref(),
    };
    let outcome = ask.conditions.evaluate(&validators);
    let headers = file::headers(ask.key, object.modified, etag.as_deref());
    let range = match object.len {
        Some(len) => outcome.body_range(len),
        // Unknown length: the whole stream, or nothing.
        None => (outcome == Outcome::Full).then_some((0, u64::MAX)),
    };
    let body = match range {
        Some((start, n)) if !ask.head_only => {
            object.skip(start)?;
            let source = object.body.take(n);
            match (fill, object.lifetime, object.len) {
                (Some((accept_len, ticket)), Some(lifetime), Some(len))
                    if outcome == Outcome::Full && len <= accept_len =>
                {
                    let head = StoreHead {
                        status: 200,
                        modified: object.modified,
                        etag: etag.as_deref().and_then(Etag::new),
                        lifetime,
                        file: Some(object.version),
                    };
                    match ctx.cache.store(ask.key, head, &headers, len) {
                        Ok(f) => {
                            Body::Fill(FillBody::new(source, f, ticket, Arc::clone(&ctx.stats)))
                        }
                        Err(e) => {
                            log::debug!("{}: not filling the cache: {e}", ask.key);
                            Body::Storage(source)
                        }
                    }
                }
                _ => Body::Storage(source),
            }
        }
        _ => Body::Text(b""),
    };
    Ok(response(
        &validators,
        200,
        headers,
        outcome,
        body,
        Source::Secondary,
    ))
}

/// `301` to `key/`, keeping the query.
fn redirect_to_directory(key: &str, target: &str) -> Reply {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut location = percent_encode(key);
    location.push('/');
    if !query.is_empty() {
        location.push('?');
        location.push_str(query);
    }
    Reply::text(301, "301 Moved Permanently\n").with_header("Location", location)
}

/// A stored response (`status` and its header block) as `outcome` decided it: whole,
/// partial, not modified, or not satisfiable.
pub(super) fn response(
    v: &Validators,
    status: u16,
    stored: Vec<u8>,
    outcome: Outcome,
    body: Body,
    source: Source,
) -> Reply {
    let (status, stored, length) = match outcome {
        // The length is the one a 200 would announce (RFC 9110 §8.6); no body follows.
        Outcome::NotModified => (304, not_modified_headers(&stored), v.len),
        Outcome::Full => (status, stored, v.len),
        Outcome::Partial { len, .. } => (206, stored, Some(len)),
        Outcome::Unsatisfiable => {
            let total = v.len.unwrap_or(0);
            return Reply::text(416, "416 Range Not Satisfiable\n")
                .with_header("Content-Range", Value::Unsatisfiable(total));
        }
    };
    let mut headers = Headers::stored(stored);
    headers.push(
        "X-Cache",
        if source == Source::Hit { "HIT" } else { "MISS" },
    );
    if let Outcome::Partial { start, len } = outcome {
        let total = v.len.expect("ranges apply to objects of known length");
        let end = start + len - 1;
        headers.push("Content-Range", Value::Range { start, end, total });
    }
    if status != 304 {
        headers.push("Accept-Ranges", "bytes");
    }
    Reply {
        status,
        headers,
        length,
        body,
    }
}

/// The stored headers a 304 carries: those that would update a client's cached copy
/// (RFC 9110 §15.4.5), not the representation's own metadata such as its type.
fn not_modified_headers(stored: &[u8]) -> Vec<u8> {
    const KEPT: [&str; 6] = [
        "cache-control",
        "content-location",
        "etag",
        "expires",
        "last-modified",
        "vary",
    ];
    let mut kept = Vec::new();
    for line in stored.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if KEPT.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(name)) {
            kept.extend_from_slice(line);
        }
    }
    kept
}

/// The proxy's own pages, when `key` names one: the counters and the live view of the
/// channel, each only for loopback and `--admin-allow` addresses (403 for the others).
fn admin_page(ctx: &Context, request: &Request, key: &str) -> Option<Reply> {
    let page = match key {
        STATS_PATH | METRICS_PATH | LIVE_PATH | SEGMENTS_PATH | SEGMENTS_TEXT_PATH => key,
        _ => return None,
    };
    if !live::admin_allowed(request.peer.ip(), &ctx.admin_allow) {
        return Some(Reply::text(
            403,
            "403 Forbidden: the /-/ pages are not shown to this address\n",
        ));
    }
    let (text, content_type) = match page {
        STATS_PATH | METRICS_PATH => return Some(stats_page(ctx, page == METRICS_PATH)),
        LIVE_PATH => (live::PAGE.to_owned(), "text/html; charset=utf-8"),
        SEGMENTS_PATH => (live::to_json(&live_snapshot(ctx)), "application/json"),
        _ => (
            live::to_text(&live_snapshot(ctx)),
            "text/plain; charset=utf-8",
        ),
    };
    Some(memory_reply(text, content_type))
}

/// The channel now, for the live view: the client's picture of the queue and segments,
/// the cache's workers (if it answers a STATS call) and the counters the page shows.
fn live_snapshot(ctx: &Context) -> live::Snapshot {
    let channel = ctx.cache.channel();
    let counters = ctx.stats.values().into_iter().chain(ctx.cache.counters());
    live::Snapshot::new(channel, ctx.cache.stats().ok().as_ref(), counters)
}

/// A page the proxy made, sent from memory and never cached.
fn memory_reply(text: String, content_type: &'static str) -> Reply {
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

/// `/-/stats` (JSON) or `/-/metrics` (Prometheus): the proxy's counters and the cache's.
fn stats_page(ctx: &Context, prometheus: bool) -> Reply {
    let mut proxy = ctx.stats.values();
    proxy.extend(ctx.cache.counters());
    let cache = ctx
        .cache
        .stats()
        .ok()
        .map(|cache| stats::cache_counters(&cache));
    let (text, content_type) = if prometheus {
        (
            stats::to_prometheus(&proxy, cache.as_deref()),
            "text/plain; version=0.0.4",
        )
    } else {
        (stats::to_json(&proxy, cache.as_deref()), "application/json")
    };
    memory_reply(text, content_type)
}
