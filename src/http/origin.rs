//! The proxy in front of an HTTP origin (`-s http://…`): a shared cache as RFC 9111 says,
//! acting on the pure decisions of [`freshness`] and [`cache_control`](super::cache_control).
//!
//! - **Keys.** The primary key is the normalised path plus the query string as sent
//!   (`/list?page=2`). A response with `Vary` is stored under a variant key: the primary
//!   key, a generation and the request's selecting fields (`vary_key` in [`freshness`]),
//!   one per line. [`Variants`] remembers, per primary key, the `Vary` of the last
//!   response stored, so a request still asks the cache once: its key is known before it
//!   asks.
//! - **Forwarding.** GET and HEAD go through the cache; every other method goes to the
//!   origin with its body and is never cached, and a 2xx or 3xx answer to an unsafe one
//!   removes the target and its `Location` / `Content-Location` from the cache (§4.4).
//!   Requests carry their end-to-end header fields as received plus `Via`; responses go
//!   back with their status and end-to-end fields, and are stored that way (the header
//!   block of a STORE), so a hit answers what the origin said.
//! - **Freshness.** A STORE's `lifetime` is the response's freshness lifetime less its age
//!   when it arrived (§4.2.3), so the cache's own "fresh or expired" is §4.2's; a fresh
//!   hit is served in one ask. A request with directives that may refuse a fresh response
//!   (`no-cache`, `max-age`, `min-fresh`, `Authorization`) first asks for the head only.
//! - **Validation.** An expired entry is validated with its stored `ETag` and
//!   `Last-Modified` sent back verbatim; a 304 (or, for HEAD, a 200 with the same
//!   validators, §4.3.5) updates the stored header block (§4.3.4), which means storing
//!   the entry again with its body read back from the cache (a RENEW when nothing in the
//!   header block changes). Within `stale-while-revalidate` the stale response is served
//!   at once and validated on a thread of its own.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::body::{Body, FillBody};
use super::cache_control::{Fields, RequestDirectives, ResponseDirectives};
use super::coalesce::{Role, Ticket};
use super::conditional;
use super::context::Context;
use super::freshness::{self, ResponseMeta, Reuse, field_value};
use super::hit::hit;
use super::path::{PathError, key_from_target};
use super::response::Source;
use super::response::response;
use super::response::{Headers, Reply, Value};
use super::server::{Method, Request, Version};
use super::stats::bump;
use super::storage::Source as Stream;
use super::upstream::{Response, Upstream, latin1, push_latin1};
use crate::ipc::client::{Answer, Found};
use crate::ipc::{
    Conditions, Etag, Lifetime, MAX_HEADER_BLOCK, MAX_KEY_LEN, Meta, Outcome, StoreHead, Validators,
};

/// The largest body the proxy holds in memory to store it: one read back from the cache
/// to store it again under the fields a 304 updated (a larger entry is served with them
/// but keeps its old ones), or an origin's body of unknown length (a larger one is passed
/// on uncached).
const REFRESH_MAX: u64 = 8 * 1024 * 1024;

/// How many primary keys [`Variants`] remembers before it starts afresh.
const VARIANTS_MAX: usize = 100_000;

/// The `Vary` of the responses stored under each primary key, so that a request's cache
/// key is known before the cache is asked.
///
/// Only keys whose last stored response had a `Vary` are here. Each gets a generation,
/// part of its variant keys: forgetting a key (an invalidation, or starting afresh when
/// full) makes every variant stored before unreachable, and they age out of the cache's
/// LRU. Generations start from the clock, so a restarted proxy never reuses one.
pub struct Variants {
    known: Mutex<HashMap<String, Known>>,
    next: AtomicU64,
    /// Primary keys with a stored partial response (a 206, under [`piece_key`]), so that
    /// only their misses ask the cache for it.
    pieces: Mutex<HashSet<String>>,
}

/// What [`Variants`] knows of one primary key.
struct Known {
    vary: String,
    generation: u64,
    /// With a `Vary: Accept-Language`, the variants stored in one language
    /// (`Content-Language`, lower-cased) and their keys, at most [`LANGUAGES_MAX`].
    languages: Vec<(String, String)>,
}

/// How many languages of one primary key [`Variants`] remembers.
const LANGUAGES_MAX: usize = 16;

impl Default for Variants {
    fn default() -> Variants {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Variants {
            known: Mutex::default(),
            next: AtomicU64::new(now),
            pieces: Mutex::default(),
        }
    }
}

impl Variants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key to ask the cache for; `None` when the response varies on `*` (it is never
    /// reused) or the variant key would be too long for the wire.
    ///
    /// Under `Vary: Accept-Language`, a request whose own variant is not known to be
    /// stored, and which prefers one language above all
    /// ([`preferred_language`](freshness::preferred_language)), asks for the variant
    /// stored in that language: the one the origin would select (RFC 9111 §4.1 lets a
    /// cache use its knowledge of a field's semantics to match).
    fn lookup_key(&self, primary: &str, request_headers: &[(String, String)]) -> Option<String> {
        let known = self.lock();
        let Some(known) = known.get(primary) else {
            return Some(primary.to_owned());
        };
        let key = variant_key(primary, &known.vary, known.generation, request_headers)?;
        if known.languages.is_empty() || known.languages.iter().any(|(_, k)| *k == key) {
            return Some(key);
        }
        let in_language = freshness::preferred_language(request_headers).and_then(|top| {
            known
                .languages
                .iter()
                .find(|(language, _)| *language == top)
        });
        Some(in_language.map_or(key, |(_, k)| k.clone()))
    }

    /// Remembers that the variant stored under `key` is in `content_language`, when the
    /// primary key varies by Accept-Language only and that is one language tag.
    fn learn_language(&self, primary: &str, key: &str, content_language: Option<&str>) {
        let Some(language) = content_language
            .map(|l| l.trim_matches([' ', '\t']).to_ascii_lowercase())
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        else {
            return;
        };
        let mut known = self.lock();
        let Some(known) = known.get_mut(primary) else {
            return;
        };
        if !freshness::varies_by_language_only(&known.vary) {
            return;
        }
        known.languages.retain(|(l, k)| *l != language && k != key);
        if known.languages.len() >= LANGUAGES_MAX {
            known.languages.remove(0);
        }
        known.languages.push((language, key.to_owned()));
    }

    /// Records the `Vary` of a response about to be stored and gives the key to store it
    /// under (`None`: do not store). `learned` is set when the key starts varying, so the
    /// caller can remove the entry stored under the primary key.
    fn store_key(
        &self,
        primary: &str,
        vary: Option<&str>,
        request_headers: &[(String, String)],
    ) -> (Option<String>, bool) {
        let mut known = self.lock();
        let Some(vary) = vary.filter(|v| !v.trim().is_empty()) else {
            known.remove(primary);
            return (Some(primary.to_owned()), false);
        };
        if let Some(same) = known.get(primary).filter(|k| k.vary == vary) {
            let key = variant_key(primary, vary, same.generation, request_headers);
            return (key, false);
        }
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        if known.len() >= VARIANTS_MAX {
            known.clear();
        }
        let entry = Known {
            vary: vary.to_owned(),
            generation,
            languages: Vec::new(),
        };
        let learned = known.insert(primary.to_owned(), entry).is_none();
        (
            variant_key(primary, vary, generation, request_headers),
            learned,
        )
    }

    /// Forgets `primary`'s variants (a new generation starts when it is stored again) and
    /// its partial response.
    pub fn forget(&self, primary: &str) {
        self.lock().remove(primary);
        self.lock_pieces().remove(primary);
    }

    fn lock_pieces(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_piece(&self, primary: &str) -> bool {
        self.lock_pieces().contains(primary)
    }

    fn add_piece(&self, primary: &str) {
        let mut pieces = self.lock_pieces();
        if pieces.len() >= VARIANTS_MAX {
            pieces.clear();
        }
        pieces.insert(primary.to_owned());
    }

    fn forget_piece(&self, primary: &str) {
        self.lock_pieces().remove(primary);
    }

    /// Whether `primary` stores its responses under itself (no `Vary` known for it).
    fn plain(&self, primary: &str) -> bool {
        !self.lock().contains_key(primary)
    }
}

/// `primary`, the generation and the request's Vary key, one per line: no primary key
/// holds a line break, so variant keys never meet primary ones.
fn variant_key(
    primary: &str,
    vary: &str,
    generation: u64,
    request_headers: &[(String, String)],
) -> Option<String> {
    let selecting = freshness::vary_key(vary, request_headers)?;
    let key = format!("{primary}\n{generation:x}\n{selecting}");
    (key.len() <= MAX_KEY_LEN).then_some(key)
}

/// Where a partial response (206) for a primary key is stored: a line no variant key
/// has in that place (theirs is a hexadecimal generation).
fn piece_key(primary: &str) -> String {
    format!("{primary}\n~206")
}

/// A stored or received partial response's `Content-Range: bytes a-b/total` (RFC 9110
/// §14.4), with `a <= b < total`; `None` for anything else (several ranges, an unknown
/// total, an unsatisfied range).
fn content_range(headers: &[(String, String)]) -> Option<(u64, u64, u64)> {
    let value = field_value(headers, "content-range")?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let number = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<u64>().ok())
            .flatten()
    };
    let (a, b, total) = (number(a)?, number(b)?, number(total)?);
    (a <= b && b < total).then_some((a, b, total))
}

/// The primary cache key of a request target: the normalised path and the query as sent.
pub fn cache_key(target: &str) -> Result<String, PathError> {
    let mut key = key_from_target(target)?.as_str().to_owned();
    if let Some((_, query)) = target.split_once('?')
        && !query.is_empty()
    {
        key.push('?');
        key.push_str(query);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(PathError::TooLong);
    }
    Ok(key)
}

/// One request in front of the origin.
pub(super) fn respond(ctx: &Arc<Context>, origin: &Upstream, request: &Request) -> (Reply, Source) {
    let primary = match cache_key(&request.target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (Reply::text(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{}: {why}", request.target);
            return (Reply::text(400, "400 Bad Request\n"), Source::Proxy);
        }
    };
    let ask = Ask {
        ctx,
        origin,
        request,
        primary: &primary,
    };
    match request.method {
        Method::Get | Method::Head => {
            bump(&ctx.stats.requests);
            let (reply, source) = ask.cached(true);
            bump(if source == Source::Hit {
                &ctx.stats.hits
            } else {
                &ctx.stats.misses
            });
            (reply, source)
        }
        Method::Other(_) => ask.forward_other(),
    }
}

/// Conditional and range fields: a validation sends the stored validators instead, and
/// asks for the whole response.
const CONDITIONAL: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// What one request needs all the way down.
struct Ask<'a> {
    ctx: &'a Arc<Context>,
    origin: &'a Upstream,
    request: &'a Request,
    primary: &'a str,
}

/// A stored response as the cache answered it: its head and header lines.
struct Stored {
    meta: Meta,
    headers: Vec<(String, String)>,
}

impl Stored {
    fn new(meta: Meta, block: &[u8]) -> Stored {
        Stored {
            meta,
            headers: parse_block(block),
        }
    }

    /// The stored response for the freshness rules: the cache's `stored_at` is when it
    /// arrived (or was last validated).
    fn freshness(&self) -> ResponseMeta {
        let at = UNIX_EPOCH + Duration::from_secs(self.meta.stored_at);
        ResponseMeta {
            status: self.meta.status,
            headers: self.headers.clone(),
            request_time: at,
            response_time: at,
        }
    }
}

impl Ask<'_> {
    fn head_only(&self) -> bool {
        self.request.method == Method::Head
    }

    /// GET and HEAD: ask the cache once, then serve, validate, or fetch.
    fn cached(&self, may_wait: bool) -> (Reply, Source) {
        let ctx = self.ctx;
        let request = self.request;
        let directives = RequestDirectives::from_headers(&request.headers);
        let Some(key) = ctx.variants.lookup_key(self.primary, &request.headers) else {
            return self.fetch(None, None);
        };
        // Directives that may refuse even a fresh response are decided on the head first.
        let picky = directives.no_cache
            || directives.max_age.is_some()
            || directives.min_fresh.is_some()
            || field_value(&request.headers, "authorization").is_some();
        let conditions = self.conditions();
        let asked_at = Instant::now();
        let asked = if picky {
            ctx.cache.get(&key, &Conditions::default(), false, true)
        } else {
            ctx.cache.get(&key, &conditions, false, self.head_only())
        };
        let (stored, accept_len) = match asked {
            Ok(Answer::Found(found)) if !picky => return self.serve(&key, found),
            Ok(Answer::Found(found)) => (Stored::new(found.meta, &found.headers), Some(u64::MAX)),
            Ok(Answer::Expired {
                meta,
                headers,
                accept_len,
            }) => (Stored::new(meta, &headers), accept_len),
            Ok(Answer::Missing { accept_len }) if !directives.only_if_cached => {
                if key == self.primary
                    && ctx.variants.has_piece(&key)
                    && let Some(answer) = self.answer_from_piece(accept_len, asked_at)
                {
                    return answer;
                }
                return self.fill_or_wait(&key, accept_len, may_wait, asked_at);
            }
            Err(e) if !directives.only_if_cached => {
                log::debug!("{key}: cache: {e}");
                return self.fetch(None, None);
            }
            _ => return gateway_timeout(),
        };
        let now = SystemTime::now();
        match freshness::reuse(&stored.freshness(), &request.headers, now) {
            Reuse::Validate => self.validate(&key, stored, accept_len, may_wait, asked_at),
            Reuse::ServeAndRevalidate => {
                self.serve_and_revalidate(&key, stored, accept_len, asked_at)
            }
            Reuse::Serve => self.serve_again(&key),
            Reuse::Forward => self.fill_or_wait(&key, accept_len, may_wait, asked_at),
            Reuse::GatewayTimeout => gateway_timeout(),
        }
    }

    fn conditions(&self) -> Conditions {
        conditional::from_headers(
            self.request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        )
    }

    /// Asks the cache again, with the request's conditions, for a stored response decided
    /// servable (maybe stale: the decision was the proxy's).
    fn serve_again(&self, key: &str) -> (Reply, Source) {
        let conditions = self.conditions();
        match self.ctx.cache.get(key, &conditions, true, self.head_only()) {
            Ok(Answer::Found(found)) => self.serve(key, found),
            _ => self.fetch(None, None),
        }
    }

    /// A stored response from the cache, with its Age (§4.2.3, §5.1).
    fn serve(&self, key: &str, found: Found) -> (Reply, Source) {
        // The cache decides conditions and ranges on any stored status; they only apply
        // to a 200 (RFC 9110 §13.2.1, §14.2), so a stored 404 asked with a Range is asked
        // again whole.
        if found.meta.status != 200 && found.outcome != Outcome::Full {
            drop(found);
            return match self
                .ctx
                .cache
                .get(key, &Conditions::default(), true, self.head_only())
            {
                Ok(Answer::Found(found)) if found.outcome == Outcome::Full => {
                    self.serve(key, found)
                }
                _ => self.fetch(None, None),
            };
        }
        let stored = Stored::new(found.meta.clone(), &found.headers);
        let age = freshness::current_age(&stored.freshness(), SystemTime::now());
        // The Age the origin sent is part of the age computed: it is replaced.
        let mut found = found;
        found.headers = to_block(stored.headers.iter().filter(|(n, _)| !is(n, "age")));
        (hit(key, found, age), Source::Hit)
    }

    /// A miss of the whole response while a fresh part of it is stored (RFC 9111 §3.3,
    /// §3.4): a range within the part is answered from it; a GET of the whole, when the
    /// part is its beginning, asks the origin for the rest only. `None`: neither applies,
    /// and the request is a miss like any other.
    fn answer_from_piece(
        &self,
        accept_len: Option<u64>,
        asked: Instant,
    ) -> Option<(Reply, Source)> {
        // Ranges are GET's only (RFC 9110 §14.2), and so is completing.
        if self.head_only() {
            return None;
        }
        let ctx = self.ctx;
        let found = match ctx.cache.get(
            &piece_key(self.primary),
            &Conditions::default(),
            false,
            false,
        ) {
            Ok(Answer::Found(found)) => found,
            Ok(Answer::Missing { .. }) => {
                ctx.variants.forget_piece(self.primary);
                return None;
            }
            _ => return None,
        };
        let stored = Stored::new(found.meta.clone(), &found.headers);
        let (first, last, total) = content_range(&stored.headers)?;
        let now = SystemTime::now();
        if freshness::reuse(&stored.freshness(), &self.request.headers, now) != Reuse::Serve {
            return None;
        }
        let conditions = self.conditions();
        if conditions.if_none_match.is_some()
            || conditions.if_modified_since.is_some()
            || conditions.if_range.is_some()
        {
            return None;
        }
        let mut body = found.body;
        match conditions.range {
            Some(range) => {
                let (start, len) = crate::ipc::conditions::resolve(range, total)?;
                if start < first || start + len - 1 > last {
                    return None;
                }
                let skip = start - first;
                let skipped = std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink());
                let mut part = vec![0; len as usize];
                if skipped.ok() != Some(skip) || body.read_exact(&mut part).is_err() {
                    return None;
                }
                let validators = Validators {
                    len: Some(total),
                    modified: found.meta.modified,
                    etag: found.meta.etag.as_ref().map(Etag::as_str),
                };
                let block = to_block(
                    stored
                        .headers
                        .iter()
                        .filter(|(n, _)| !is(n, "age") && !is(n, "content-range")),
                );
                let outcome = Outcome::Partial { start, len };
                let sent = Body::Memory(std::io::Cursor::new(part.into()));
                let mut reply = response(&validators, 200, block, outcome, sent, Source::Hit);
                let age = freshness::current_age(&stored.freshness(), now);
                reply.headers.push("Age", Value::Number(age));
                Some((reply, Source::Hit))
            }
            None if first == 0 => {
                // Completing stores the whole: only when the cache would take it.
                let accept_len = accept_len?;
                let mut part = Vec::with_capacity((last + 1) as usize);
                (&mut body).take(last + 1).read_to_end(&mut part).ok()?;
                if part.len() as u64 != last + 1 {
                    return None;
                }
                drop(body);
                let Role::Leader(ticket) = ctx.coalescer.join_miss(self.primary, asked) else {
                    return None;
                };
                Some(self.complete(&stored, part, total, accept_len, ticket))
            }
            None => None,
        }
    }

    /// Asks the origin for the rest of a stored beginning `part` of a `total`-byte
    /// response (`Range: bytes=N-`, with `If-Range` and the part's strong ETag when it has
    /// one) and answers with the whole. A 206 with the rest and the same strong validator
    /// is combined with the part (§3.4: only then may they be), stored and served; any
    /// other answer is handled as a fetch's, and a 206 that cannot be combined is dropped
    /// for a fetch of the whole.
    fn complete(
        &self,
        stored: &Stored,
        part: Vec<u8>,
        total: u64,
        accept_len: u64,
        ticket: Ticket,
    ) -> (Reply, Source) {
        let ctx = self.ctx;
        let strong = |headers: &[(String, String)]| {
            field_value(headers, "etag").filter(|tag| !tag.starts_with("W/"))
        };
        let have = part.len() as u64;
        let mut headers = self.forwarded(false);
        headers.push(("Range".to_owned(), format!("bytes={have}-")));
        if let Some(tag) = strong(&stored.headers) {
            headers.push(("If-Range".to_owned(), tag));
        }
        let sent_at = SystemTime::now();
        let mut answer = match self.origin.send("GET", &self.request.target, &headers, b"") {
            Ok(answer) => answer,
            Err(e) => return bad_gateway(self.primary, &e),
        };
        if answer.status != 206 {
            let fill = Some((accept_len, ticket));
            return (self.answer_from(answer, sent_at, fill), Source::Secondary);
        }
        let combinable = content_range(&answer.headers) == Some((have, total - 1, total))
            && strong(&answer.headers).is_some_and(|tag| Some(tag) == strong(&stored.headers))
            && total <= accept_len.min(REFRESH_MAX);
        let mut whole = part;
        let rest = total - have;
        let read = combinable
            && (&mut answer.body)
                .take(rest)
                .read_to_end(&mut whole)
                .is_ok_and(|n| n as u64 == rest);
        if !read {
            drop(answer);
            return self.fetch(Some(accept_len), Some(ticket));
        }
        let received_at = SystemTime::now();
        // The combined response has the new response's fields (§3.4), as a 200 would.
        let fields: Vec<(String, String)> = freshness::storable_headers(&answer.headers)
            .into_iter()
            .filter(|(n, _)| !is(n, "content-length") && !is(n, "content-range"))
            .collect();
        let block = to_block(fields.iter());
        let fresh = ResponseMeta {
            status: 200,
            headers: fields,
            request_time: sent_at,
            response_time: received_at,
        };
        let head = entry_head(&fresh, received_at);
        let storable = freshness::storable("GET", &self.request.headers, 200, &fresh.headers)
            && block.len() <= MAX_HEADER_BLOCK as usize
            && complete_block(&block, &fresh.headers);
        if storable {
            let stored = ctx
                .cache
                .store(self.primary, head.clone(), &block, total)
                .map_err(|e| e.to_string())
                .and_then(|mut fill| fill.write(&whole).map_err(|e| e.to_string()));
            if let Err(e) = stored {
                log::debug!("{}: not storing the completed response: {e}", self.primary);
            }
        }
        drop(ticket);
        let validators = Validators {
            len: Some(total),
            modified: head.modified,
            etag: head.etag.as_ref().map(Etag::as_str),
        };
        let body = Body::Memory(std::io::Cursor::new(whole.into()));
        let block = to_block(
            freshness::strip_hop_by_hop(&answer.headers)
                .iter()
                .filter(|(n, _)| !is(n, "content-range")),
        );
        let reply = response(
            &validators,
            200,
            block,
            Outcome::Full,
            body,
            Source::Secondary,
        );
        (reply, Source::Secondary)
    }

    /// A miss: one request per key fetches and fills, the others wait for it and ask the
    /// cache again (once).
    fn fill_or_wait(
        &self,
        key: &str,
        accept_len: Option<u64>,
        may_wait: bool,
        asked: Instant,
    ) -> (Reply, Source) {
        let Some(accept_len) = accept_len.filter(|_| !self.head_only() && may_wait) else {
            return self.fetch(None, None);
        };
        match self.ctx.coalescer.join_miss(key, asked) {
            Role::Leader(ticket) => self.fetch(Some(accept_len), Some(ticket)),
            Role::Follower(flight) => {
                bump(&self.ctx.stats.coalesced_waits);
                if !flight.wait(self.ctx.coalesce_timeout) {
                    bump(&self.ctx.stats.coalesce_timeouts);
                }
                self.cached(false)
            }
        }
    }

    /// The request's end-to-end fields and `Via`; for a validation without the client's
    /// conditions, which the stored validators replace.
    fn forwarded(&self, validating: bool) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = freshness::strip_hop_by_hop(&self.request.headers)
            .into_iter()
            .filter(|(name, _)| {
                let name = name.to_ascii_lowercase();
                // Host and the body's length are the upstream client's to write; the
                // expectation was met by this proxy already.
                let own = ["host", "content-length", "expect"].contains(&name.as_str());
                let condition = validating && CONDITIONAL.contains(&name.as_str());
                !own && !condition
            })
            .collect();
        let version = match self.request.version {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        };
        headers.push(("Via".to_owned(), format!("{version} shmcache")));
        headers
    }

    /// Sends the request to the origin as it is (GET or HEAD) and answers with what comes
    /// back, storing it when it may (`accept_len` and `ticket`: the cache takes it and this
    /// request fills it).
    fn fetch(&self, accept_len: Option<u64>, ticket: Option<Ticket>) -> (Reply, Source) {
        let sent_at = SystemTime::now();
        let method = self.request.method.as_str();
        match self
            .origin
            .send(method, &self.request.target, &self.forwarded(false), b"")
        {
            Ok(response) => {
                let fill = accept_len.zip(ticket);
                (self.answer_from(response, sent_at, fill), Source::Secondary)
            }
            Err(e) => bad_gateway(self.primary, &e),
        }
    }

    /// Any other method: to the origin with its body, never cached; a successful unsafe
    /// one invalidates what it names (RFC 9111 §4.4).
    fn forward_other(&self) -> (Reply, Source) {
        let request = self.request;
        let method = request.method.as_str();
        let sent_at = SystemTime::now();
        let response = match self.origin.send(
            method,
            &request.target,
            &self.forwarded(false),
            &request.body,
        ) {
            Ok(response) => response,
            Err(e) => return bad_gateway(self.primary, &e),
        };
        let host = request.header("Host").unwrap_or_default();
        let authorities = [host, self.origin.authority()];
        for target in freshness::invalidation_targets(
            method,
            response.status,
            &request.target,
            &authorities,
            &response.headers,
        ) {
            if let Ok(key) = cache_key(&target) {
                self.invalidate(&key);
            }
        }
        if method == "POST"
            && let Some(fill) = self.post_fill(&authorities, &response)
        {
            return (
                self.answer_from(response, sent_at, Some(fill)),
                Source::Secondary,
            );
        }
        (pass_through(response), Source::Secondary)
    }

    /// Whether a POST's response is to be stored as the target's response to GET (RFC
    /// 9110 §9.3.3: explicit freshness, and a Content-Location that is the target), and
    /// the room and ticket to store it with; [`answer_from`](Self::answer_from) checks
    /// the rest of §3.
    fn post_fill(&self, authorities: &[&str], response: &Response) -> Option<(u64, Ticket)> {
        let same =
            freshness::content_location(&self.request.target, authorities, &response.headers)
                .and_then(|uri| cache_key(&uri).ok())
                .is_some_and(|key| key == self.primary);
        if !same
            || !freshness::post_response_storable(
                &self.request.headers,
                response.status,
                &response.headers,
            )
        {
            return None;
        }
        let Role::Leader(ticket) = self.ctx.coalescer.join(self.primary) else {
            return None;
        };
        // The invalidation just removed what was stored; the cache says how much it takes.
        match self
            .ctx
            .cache
            .get(self.primary, &Conditions::default(), false, true)
        {
            Ok(Answer::Missing {
                accept_len: Some(accept_len),
            }) if accept_len > 0 => Some((accept_len, ticket)),
            _ => None,
        }
    }

    fn invalidate(&self, primary: &str) {
        self.ctx.variants.forget(primary);
        if let Err(e) = self.ctx.cache.purge(primary) {
            log::debug!("{primary}: invalidation: {e}");
        }
    }

    /// Answers with an origin's response, and stores it on the way when `fill` allows and
    /// RFC 9111 §3 does: a GET, storable, within what the cache takes (a body of unknown
    /// length is read into memory first, up to [`REFRESH_MAX`]), with a header block that
    /// fits.
    fn answer_from(
        &self,
        mut response: Response,
        sent_at: SystemTime,
        fill: Option<(u64, Ticket)>,
    ) -> Reply {
        let received_at = SystemTime::now();
        let request = self.request;
        let Some((accept_len, ticket)) = fill else {
            return pass_through(response);
        };
        let status = response.status;
        // A POST gets here only when its response may answer GETs (`post_fill`).
        let method = match request.method.as_str() {
            "POST" => "GET",
            method => method,
        };
        let storable = freshness::storable(method, &request.headers, status, &response.headers);
        let stored_headers: Vec<(String, String)> = freshness::storable_headers(&response.headers)
            .into_iter()
            .filter(|(name, _)| !is(name, "content-length"))
            .collect();
        let block = to_block(stored_headers.iter());
        if !storable
            || block.len() > MAX_HEADER_BLOCK as usize
            || !complete_block(&block, &stored_headers)
        {
            return pass_through(response);
        }
        let fresh = ResponseMeta {
            status,
            headers: stored_headers,
            request_time: sent_at,
            response_time: received_at,
        };
        let (len, buffered) = match response.body.length() {
            Some(len) if len <= accept_len => (len, None),
            Some(_) => return pass_through(response),
            // Unknown length (chunked): read into memory, within what the cache takes,
            // when the response can be reused at all.
            None if reusable(&fresh) => {
                let limit = accept_len.min(REFRESH_MAX);
                let mut body = Vec::new();
                match (&mut response.body).take(limit + 1).read_to_end(&mut body) {
                    Ok(n) if n as u64 <= limit => (n as u64, Some(body)),
                    Ok(_) => {
                        response.body.unread(body);
                        return pass_through(response);
                    }
                    Err(e) => return bad_gateway(self.primary, &e).0,
                }
            }
            None => return pass_through(response),
        };
        let vary = field_value(&response.headers, "vary");
        let key = if status == 206 {
            // A part of the representation (RFC 9111 §3.3), kept beside the whole one to
            // answer ranges within it: one range, of a known total, that its body fills
            // exactly (a Content-Range that disagrees with the body is not trusted), read
            // into memory to serve (so at most REFRESH_MAX).
            let exact = content_range(&fresh.headers).is_some_and(|(a, b, _)| b - a + 1 == len);
            if !exact
                || len > REFRESH_MAX
                || vary.is_some()
                || !self.ctx.variants.plain(self.primary)
            {
                return pass_through(response);
            }
            self.ctx.variants.add_piece(self.primary);
            piece_key(self.primary)
        } else {
            let (key, learned) =
                self.ctx
                    .variants
                    .store_key(self.primary, vary.as_deref(), &request.headers);
            let Some(key) = key else {
                return pass_through(response);
            };
            if learned {
                // Responses stored before the key started varying are not variants.
                self.invalidate_primary_only();
            }
            self.ctx.variants.learn_language(
                self.primary,
                &key,
                field_value(&response.headers, "content-language").as_deref(),
            );
            key
        };
        let head = entry_head(&fresh, received_at);
        let mut reply = pass_through_head(status, &response.headers, Some(len));
        let stored = self.ctx.cache.store(&key, head, &block, len);
        reply.body = match (stored, buffered) {
            (Ok(mut store), Some(body)) => {
                if let Err(e) = store.write(&body) {
                    log::debug!("{key}: not filling the cache: {e}");
                }
                drop(ticket);
                Body::Memory(std::io::Cursor::new(body.into()))
            }
            (Ok(store), None) => Body::Fill(FillBody::new(
                Stream::Origin(response.body).take(len),
                store,
                ticket,
                Arc::clone(&self.ctx.stats),
            )),
            (Err(e), buffered) => {
                log::debug!("{key}: not filling the cache: {e}");
                match buffered {
                    Some(body) => Body::Memory(std::io::Cursor::new(body.into())),
                    None => Body::Storage(Stream::Origin(response.body).take(len)),
                }
            }
        };
        reply
    }

    /// Removes what is stored under the primary key itself, keeping [`Variants`]' entry.
    fn invalidate_primary_only(&self) {
        if let Err(e) = self.ctx.cache.purge(self.primary) {
            log::debug!("{}: {e}", self.primary);
        }
    }

    /// Validates a stored response with the origin (§4.3.1): its validators go back as
    /// they were received. A 304 (or for HEAD a 200 with the same validators, §4.3.5)
    /// updates and serves the stored response; a failure serves it stale where allowed
    /// (RFC 5861 §4, `--stale-if-error`); anything else replaces it.
    ///
    /// `asked`: when the cache said "expired". A validation of the key that landed since
    /// then makes this request ask again rather than validate a second time: it was told
    /// "expired" before that validation renewed the entry, and only joins now.
    fn validate(
        &self,
        key: &str,
        stored: Stored,
        accept_len: Option<u64>,
        may_wait: bool,
        asked: Instant,
    ) -> (Reply, Source) {
        let ctx = self.ctx;
        let ticket = match ctx.coalescer.join_miss(key, asked) {
            Role::Leader(ticket) => ticket,
            Role::Follower(flight) if may_wait => {
                bump(&ctx.stats.coalesced_waits);
                if !flight.wait(ctx.coalesce_timeout) {
                    bump(&ctx.stats.coalesce_timeouts);
                }
                return self.cached(false);
            }
            Role::Follower(_) => return self.fetch(None, None),
        };
        self.validate_as_leader(key, stored, accept_len, ticket)
    }

    /// Serves a stale response at once and validates it on a thread of its own (RFC 5861
    /// §3, `stale-while-revalidate`), unless another request is validating it already.
    /// (`asked`: as for [`validate`](Self::validate).)
    fn serve_and_revalidate(
        &self,
        key: &str,
        stored: Stored,
        accept_len: Option<u64>,
        asked: Instant,
    ) -> (Reply, Source) {
        if let Role::Leader(ticket) = self.ctx.coalescer.join_miss(key, asked) {
            let ctx = Arc::clone(self.ctx);
            let request = self.request.clone();
            let (key, primary) = (key.to_owned(), self.primary.to_owned());
            std::thread::spawn(move || {
                let Some(origin) = ctx.origin() else { return };
                let ask = Ask {
                    ctx: &ctx,
                    origin,
                    request: &request,
                    primary: &primary,
                };
                let (mut reply, _) = ask.validate_as_leader(&key, stored, accept_len, ticket);
                // Read to its end, so that a replacement is stored whole.
                if let Err(e) = std::io::copy(&mut reply.body, &mut std::io::sink()) {
                    log::debug!("{key}: revalidating in the background: {e}");
                }
            });
        }
        self.serve_again(key)
    }

    /// [`validate`](Self::validate), once this request holds the key's ticket.
    fn validate_as_leader(
        &self,
        key: &str,
        stored: Stored,
        accept_len: Option<u64>,
        ticket: Ticket,
    ) -> (Reply, Source) {
        let ctx = self.ctx;
        let mut headers = self.forwarded(true);
        let validators = [
            ("etag", "If-None-Match"),
            ("last-modified", "If-Modified-Since"),
        ];
        for (field, condition) in validators {
            if let Some(value) = freshness::field_value(&stored.headers, field) {
                headers.push((condition.to_owned(), value));
            }
        }
        let sent_at = SystemTime::now();
        let method = self.request.method.as_str();
        let answer = self
            .origin
            .send(method, &self.request.target, &headers, b"");
        let now = SystemTime::now();
        let stale_ok = |status: Option<u16>| {
            matches!(status, None | Some(500 | 502 | 503 | 504))
                && freshness::serve_stale_on_error(
                    &stored.freshness(),
                    &self.request.headers,
                    now,
                    ctx.stale_if_error,
                )
        };
        let response = match answer {
            Ok(response) if stale_ok(Some(response.status)) => {
                drop(ticket);
                bump(&ctx.stats.stale_served);
                return self.serve_again(key);
            }
            Ok(response) => response,
            Err(e) if stale_ok(None) => {
                log::warn!("{key}: cannot revalidate ({e}); serving it stale");
                drop(ticket);
                bump(&ctx.stats.stale_served);
                return self.serve_again(key);
            }
            // §5.2.2.2: disconnected, with a response that must be revalidated.
            Err(e) if freshness::never_stale(&stored.freshness()) => {
                log::warn!("{key}: cannot revalidate ({e}), and it may not be served stale");
                return gateway_timeout();
            }
            Err(e) => return bad_gateway(key, &e),
        };
        // A 304 answers the validators this request sent, which are this stored
        // response's only: it is about it, whatever validators it carries (§4.3.4's
        // selection is for a cache that holds several responses to choose from). A 200 to
        // HEAD freshens it only with the same validators (§4.3.5).
        let freshens = response.status == 304
            || (self.head_only()
                && response.status == 200
                && freshness::may_update_from_304(&stored.headers, &response.headers));
        if freshens {
            bump(&ctx.stats.revalidated);
            // The stored ETag stays: it names the body kept, which the 304 did not send.
            let update: Vec<(String, String)> = response
                .headers
                .iter()
                .filter(|(name, _)| !is(name, "etag"))
                .cloned()
                .collect();
            let merged = freshness::update_from_304(&stored.headers, &update);
            let fresh = ResponseMeta {
                status: stored.meta.status,
                headers: merged,
                request_time: sent_at,
                response_time: now,
            };
            let reply = self.refresh(key, &stored, fresh);
            drop(ticket);
            return (reply, Source::Hit);
        }
        bump(&ctx.stats.replaced);
        let fill = accept_len
            .filter(|_| !self.head_only())
            .map(|accept_len| (accept_len, ticket));
        (self.answer_from(response, sent_at, fill), Source::Secondary)
    }

    /// Serves a stored response under the header lines a 304 updated, and keeps them:
    /// RENEW when the header block is unchanged, else the body read back and stored again.
    fn refresh(&self, key: &str, stored: &Stored, fresh: ResponseMeta) -> Reply {
        let ctx = self.ctx;
        let block = to_block(fresh.headers.iter());
        let conditions = self.conditions();
        // The same lines, maybe in another order (a 304's fields go last): RENEW keeps the
        // stored block. Not with a Date, though: the age is reckoned from the Date of the
        // response last received (§4.2.3), and a RENEW would keep an older one.
        let lines = |headers: &[(String, String)]| {
            let mut lines = headers.to_vec();
            lines.sort();
            lines
        };
        let unchanged = lines(&fresh.headers) == lines(&stored.headers)
            && field_value(&stored.headers, "date").is_none();
        if unchanged || !complete_block(&block, &fresh.headers) {
            let lifetime = entry_head(&fresh, fresh.response_time).lifetime;
            return match ctx
                .cache
                .renew(key, lifetime, &conditions, self.head_only())
            {
                Ok(Answer::Found(found)) => self.serve(key, found).0,
                _ => self.fetch(None, None).0,
            };
        }
        if stored.meta.total_len > REFRESH_MAX {
            // Too large to hold while storing it again: served with the new fields, kept
            // with the old ones (it is validated again at its next use).
            return match ctx.cache.get(key, &conditions, true, self.head_only()) {
                Ok(Answer::Found(mut found)) => {
                    found.headers = block;
                    let age = freshness::current_age(&fresh, SystemTime::now());
                    hit(key, found, age)
                }
                _ => self.fetch(None, None).0,
            };
        }
        let found = match ctx.cache.get(key, &Conditions::default(), true, false) {
            Ok(Answer::Found(found)) => found,
            _ => return self.fetch(None, None).0,
        };
        let mut body = Vec::with_capacity(found.meta.total_len as usize);
        let total = found.meta.total_len;
        if found.body.take(total).read_to_end(&mut body).ok() != Some(total as usize) {
            return self.fetch(None, None).0;
        }
        let head = entry_head(&fresh, fresh.response_time);
        let etag = head.etag;
        let validators = Validators {
            len: Some(total),
            modified: head.modified,
            etag: etag.as_ref().map(Etag::as_str),
        };
        let outcome = conditions.evaluate(&validators);
        let status = head.status;
        if block.len() <= MAX_HEADER_BLOCK as usize {
            let stored = ctx
                .cache
                .store(key, head, &block, total)
                .map_err(|e| e.to_string())
                .and_then(|mut fill| fill.write(&body).map_err(|e| e.to_string()));
            if let Err(e) = stored {
                log::debug!("{key}: keeping the updated headers failed: {e}");
            }
        }
        let sent = match outcome.body_range(total) {
            Some((start, len)) if !self.head_only() => {
                let bytes: Arc<[u8]> = body[start as usize..(start + len) as usize].into();
                Body::Memory(std::io::Cursor::new(bytes))
            }
            _ => Body::Text(b""),
        };
        let age = freshness::current_age(&fresh, SystemTime::now());
        let mut reply = response(&validators, status, block, outcome, sent, Source::Hit);
        reply.headers.push("Age", Value::Number(age));
        reply
    }
}

/// Whether a stored response could ever be reused: it has a freshness lifetime or a
/// validator. Only such a response of unknown length is worth reading into memory.
fn reusable(fresh: &ResponseMeta) -> bool {
    freshness::freshness_lifetime(fresh) > 0
        || fresh
            .headers
            .iter()
            .any(|(n, _)| is(n, "etag") || is(n, "last-modified"))
}

/// The head a STORE carries for a response: its validators, and a lifetime from now that
/// runs out exactly when its freshness lifetime does (§4.2: fresh while the lifetime is
/// more than the current age, and the cache counts from when it stores it).
fn entry_head(fresh: &ResponseMeta, now: SystemTime) -> StoreHead {
    let lifetime = freshness::freshness_lifetime(fresh);
    let age = freshness::current_age(fresh, now);
    let first = |name: &str| {
        fresh
            .headers
            .iter()
            .find(|(n, _)| is(n, name))
            .map(|(_, v)| v.as_str())
    };
    // A response that must be validated before every reuse is stored expired.
    let must_validate = matches!(
        ResponseDirectives::from_headers(&fresh.headers).no_cache,
        Some(Fields::All)
    );
    let lifetime = match must_validate {
        true => Lifetime::MustValidate,
        false => Lifetime::from_secs(lifetime.saturating_sub(age)),
    };
    StoreHead {
        status: fresh.status,
        // What a client's If-Modified-Since is compared with: the Last-Modified, or
        // without one the Date (RFC 9111 §4.3.2).
        modified: first("last-modified")
            .or_else(|| first("date"))
            .and_then(|d| httpdate::parse_http_date(d).ok()),
        etag: first("etag").and_then(Etag::new),
        lifetime,
        file: None,
    }
}

fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// Header lines as a block (`Name: value\r\n`), each value as the bytes received
/// ([`push_latin1`]), leaving out Content-Length (the connection writes the length it
/// sends) and any line the channel's header block does not take (today: a value with
/// bytes outside visible ASCII).
fn to_block<'a>(headers: impl Iterator<Item = &'a (String, String)>) -> Vec<u8> {
    let mut block = Vec::new();
    let mut line = Vec::new();
    for (name, value) in headers {
        if is(name, "content-length") {
            continue;
        }
        line.clear();
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b": ");
        push_latin1(&mut line, value);
        line.extend_from_slice(b"\r\n");
        if crate::ipc::call::valid_header_block(&line) {
            block.extend_from_slice(&line);
        }
    }
    block
}

/// Whether every line (but Content-Length) made it into `block`: a response is only
/// stored whole.
fn complete_block(block: &[u8], headers: &[(String, String)]) -> bool {
    let lines = block.split(|&b| b == b'\n').count() - 1;
    lines
        == headers
            .iter()
            .filter(|(n, _)| !is(n, "content-length"))
            .count()
}

/// A header block read back from the cache, as lines (values one char per byte, as
/// [`latin1`] reads them off the wire).
fn parse_block(block: &[u8]) -> Vec<(String, String)> {
    latin1(block)
        .split_terminator("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim_matches([' ', '\t']).to_owned()))
        .collect()
}

/// The head of an origin's response as the client gets it: its status and end-to-end
/// fields.
fn pass_through_head(status: u16, headers: &[(String, String)], length: Option<u64>) -> Reply {
    let end_to_end = freshness::strip_hop_by_hop(headers);
    let mut headers = Headers::stored(to_block(end_to_end.iter()));
    headers.push("X-Cache", "MISS");
    Reply {
        status,
        headers,
        length,
        body: Body::Text(b""),
    }
}

/// An origin's response, passed on uncached.
fn pass_through(response: Response) -> Reply {
    let status = response.status;
    let announced =
        || field_value(&response.headers, "content-length").and_then(|v| v.trim().parse().ok());
    let length = match status {
        // No Content-Length may go with these (RFC 9110 §8.6).
        100..=199 | 204 => None,
        // What the origin announced: no body follows (HEAD, 304).
        _ if response.body.length() == Some(0) => announced().or(Some(0)),
        _ => response.body.length(),
    };
    let mut reply = pass_through_head(status, &response.headers, length);
    let n = response.body.length().unwrap_or(u64::MAX);
    reply.body = Body::Storage(Stream::Origin(response.body).take(n));
    reply
}

/// A 504 of the proxy's own: for `only-if-cached` with nothing usable stored (§5.2.1.7),
/// and for a response that must be revalidated when the origin cannot be reached
/// (§5.2.2.2).
fn gateway_timeout() -> (Reply, Source) {
    (Reply::text(504, "504 Gateway Timeout\n"), Source::Proxy)
}

fn bad_gateway(key: &str, e: &std::io::Error) -> (Reply, Source) {
    log::warn!("{key}: origin: {e}");
    (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_keep_the_query() {
        assert_eq!(cache_key("/a/../b?x=1").unwrap(), "/b?x=1");
        assert_eq!(cache_key("/b?").unwrap(), "/b");
        assert_eq!(cache_key("/%7e").unwrap(), "/~");
    }

    #[test]
    fn variants_key_by_vary_and_forget() {
        let v = Variants::default();
        let gzip = h(&[("Accept-Encoding", "gzip")]);
        let none = h(&[]);
        assert_eq!(v.lookup_key("/a", &gzip).as_deref(), Some("/a"));
        let (stored, learned) = v.store_key("/a", Some("Accept-Encoding"), &gzip);
        assert!(learned);
        assert_eq!(v.lookup_key("/a", &gzip), stored);
        assert_ne!(v.lookup_key("/a", &none), stored);
        assert_eq!(
            v.store_key("/a", Some("Accept-Encoding"), &gzip),
            (stored.clone(), false)
        );
        v.forget("/a");
        let (again, _) = v.store_key("/a", Some("Accept-Encoding"), &gzip);
        assert_ne!(again, stored, "a new generation after forgetting");
        assert_eq!(v.store_key("/a", Some("*"), &gzip).0, None);
        assert_eq!(v.lookup_key("/a", &gzip), None);
        assert_eq!(v.store_key("/a", None, &gzip).0.as_deref(), Some("/a"));
    }

    #[test]
    fn a_request_that_prefers_a_stored_language_gets_that_variant() {
        let v = Variants::default();
        let lang = |value: &str| h(&[("Accept-Language", value)]);
        let (de, _) = v.store_key("/a", Some("Accept-Language"), &lang("en, de"));
        let de = de.unwrap();
        v.learn_language("/a", &de, Some("DE"));
        assert_eq!(
            v.lookup_key("/a", &lang("fr;q=0.5, de;q=1.0")),
            Some(de.clone())
        );
        assert_eq!(v.lookup_key("/a", &lang("en, de")), Some(de.clone()));
        let fr = v.lookup_key("/a", &lang("fr, de;q=0.5")).unwrap();
        assert_ne!(fr, de, "no variant in fr is known");
        // A request's own variant, once known, is its answer.
        let (own, _) = v.store_key("/a", Some("Accept-Language"), &lang("de;q=0.9, en;q=0.1"));
        let own = own.unwrap();
        v.learn_language("/a", &own, Some("en"));
        assert_eq!(v.lookup_key("/a", &lang("de;q=0.9, en;q=0.1")), Some(own));
        assert_eq!(v.lookup_key("/a", &lang("de")), Some(de));
        // Only for a Vary of Accept-Language alone.
        let both = Some("Accept-Language, Accept-Encoding");
        let (k, _) = v.store_key("/b", both, &lang("en, de"));
        v.learn_language("/b", &k.unwrap(), Some("de"));
        assert_ne!(
            v.lookup_key("/b", &lang("de")),
            v.lookup_key("/b", &lang("en, de"))
        );
    }

    #[test]
    fn blocks_keep_what_can_be_sent() {
        let headers = h(&[("A", "1"), ("Content-Length", "5"), ("B", "caf\u{e9}")]);
        let block = to_block(headers.iter());
        assert_eq!(block, b"A: 1\r\n");
        assert!(!complete_block(&block, &headers));
        assert_eq!(parse_block(&block), h(&[("A", "1")]));
        // Bytes beyond ASCII read back one char each, as the wire's bytes were read.
        assert_eq!(parse_block(b"X: caf\xe9\r\n"), h(&[("X", "caf\u{e9}")]));
    }
}
