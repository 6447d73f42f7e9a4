//! A read-through cache in front of a directory (`-s DIR`, or only a preloaded cache):
//! ask the cache, and on a miss or an expired entry go to the directory, filling the cache
//! on the way; concurrent misses of one key share one fetch.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Instant;

use super::body::{Body, FillBody};
use super::coalesce::{Role, Ticket};
use super::context::{Context, dir, unavailable};
use super::hit::hit;
use super::path::percent_encode;
use super::response::{Reply, Source, response};
use super::server::{self, CHUNK, Response};
use super::stats::bump;
use super::storage::{Cached as StoredValidators, Lookup, Object, Revalidation, StorageError};
use crate::file;
use crate::ipc::client::{Answer, Found};
use crate::ipc::{Conditions, Etag, Meta, Outcome, StoreHead, Validators};

/// Moves a miss's body from secondary storage into the response while it fills
/// the cache. If memory runs out first, the fill is abandoned (the cache keeps nothing
/// partial) and the connection reads the rest from storage itself, at its client's pace.
pub(super) fn drain_fill(mut body: FillBody, mut out: Response<'_, Source>) {
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

/// What one request asks for, handed down the lookup.
#[derive(Clone, Copy)]
pub(super) struct Ask<'a> {
    pub(super) key: &'a str,
    pub(super) target: &'a str,
    pub(super) conditions: &'a Conditions,
    pub(super) head_only: bool,
}

/// The one decision: ask the cache once, then serve a fresh hit, revalidate an expired
/// entry, or serve a miss from secondary storage (filling the cache on the way).
pub(super) fn lookup(ctx: &Context, ask: &Ask) -> (Reply, Source) {
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
