//! Delivering a cache hit: the reply made of what the cache found, and its body sent
//! from the segment (a small one copied out at once, a large one straight from the slots
//! while the client keeps up, then parked); a hit paused or broken off goes on from the
//! cache as a range, or from secondary storage when it holds the same version.

use std::io::{self, Read};
use std::sync::Arc;

use super::body::{Body, HitRange};
use super::context::{Context, dir};
use super::response::{Reply, Source, Value, response};
use super::server::{self, ALLOWANCE, CHUNK, Response, Resume};
use super::stats::bump;
use super::storage::Cached as StoredValidators;
use crate::ipc::client::{Answer, CacheBody, Found};
use crate::ipc::{ByteRange, Conditions, Etag};

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
pub(super) fn deliver_hit(
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
/// it does not, and the response is to be cut. A directory is checked as a revalidation
/// would check it; an origin is asked for the range with `If-Range` and the entry's strong
/// ETag, with the original request's fields, and its answer is taken only when it is
/// that very range of that very version (RFC 9110 §13.1.5, §14.4).
fn storage_rest(
    ctx: &Context,
    hit: &HitRange,
    next: u64,
    why: &io::Error,
) -> Option<io::Take<super::storage::Source>> {
    let rest = match (&hit.origin_request, ctx.origin()) {
        (Some(request), Some(origin)) => origin_rest(origin, request, hit, next),
        _ => {
            let cached = StoredValidators {
                modified: hit.modified,
                etag: hit.etag.as_ref().map(Etag::as_str),
                identity: hit.identity,
            };
            dir(ctx)?.rest_of(&hit.key, &cached, hit.total_len, (next, hit.end))
        }
    };
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

/// Asks `origin` for bytes `next..` to the hit's end, only if it still holds the version
/// the response began with (see [`storage_rest`]).
fn origin_rest(
    origin: &super::origin::upstream::Upstream,
    request: &super::body::OriginRequest,
    hit: &HitRange,
    next: u64,
) -> Option<io::Take<super::storage::Source>> {
    let etag = hit
        .etag
        .as_ref()
        .map(Etag::as_str)
        .filter(|t| !t.starts_with("W/"))?;
    let last = hit.end.checked_sub(1).filter(|&last| last >= next)?;
    let mut fields = request.fields.clone();
    fields.push(("Range".to_owned(), format!("bytes={next}-{last}")));
    fields.push(("If-Range".to_owned(), etag.to_owned()));
    let answer = origin.send("GET", &request.target, &fields, b"").ok()?;
    let field = |name: &str| {
        answer
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let range = format!("bytes {next}-{last}/{}", hit.total_len);
    let same = answer.status == 206
        && field("content-range") == Some(range.as_str())
        && field("etag") == Some(etag);
    same.then(|| super::storage::Source::Origin(answer.body).take(hit.end - next))
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
        origin_request: None,
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
