//! The proxy in front of an HTTP origin (`-s http://…`): a shared cache as RFC 9111 says,
//! acting on the pure decisions of [`freshness`] and [`cache_control`].
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
//!
//! The room: this page (the cache acting on the policy), [`freshness`],
//! [`cache_control`] and [`invalidation`] (the policy, pure functions), `variants` (which
//! variant a request selects), `parts` (206 responses), `validate` (validation with the
//! origin), `stored` (a response as stored) and [`upstream`] (the origin's client). It
//! may import what sits below both modes in `crate::http` (context, hit, replies,
//! bodies, paths, conditions, coalescing, counters) and `crate::ipc`'s client; never the
//! router, the directory mode or the admin pages.

pub mod cache_control;
pub mod freshness;
pub mod invalidation;
mod parts;
mod stored;
pub mod upstream;
mod validate;
pub mod variants;

pub use variants::Variants;

use std::io::Read;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::body::{Body, FillBody, OriginRequest};
use super::coalesce::{Role, Ticket};
use super::conditional;
use super::context::Context;
use super::hit::hit;
use super::path::{PathError, key_from_target};
use super::response::Reply;
use super::response::Source;
use super::server::{Method, Request, Version};
use super::stats::bump;
use super::storage::Source as Stream;
use crate::ipc::client::{Answer, Found};
use crate::ipc::{Conditions, MAX_HEADER_BLOCK, MAX_KEY_LEN, Outcome};
use cache_control::{Fields, RequestDirectives, ResponseDirectives};
use freshness::{ResponseMeta, Reuse, field_value};
use parts::{content_range, piece_key};
use stored::*;
use upstream::{Response, Upstream, latin1, push_latin1};

/// The largest body the proxy holds in memory to store it: one read back from the cache
/// to store it again under the fields a 304 updated (a larger entry is served with them
/// but keeps its old ones), or an origin's body of unknown length (a larger one is passed
/// on uncached).
const REFRESH_MAX: u64 = 8 * 1024 * 1024;

/// The primary cache key of a request target: the normalised path and the query as sent.
pub fn cache_key(target: &str) -> Result<String, PathError> {
    let mut key = key_from_target(target)?.into_string();
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
        let (block, age) = hit_block(&found.meta, &found.headers, SystemTime::now());
        let mut found = found;
        found.headers = block;
        let mut reply = hit(key, found, age);
        if let Body::Cache(_, range) = &mut reply.body {
            // Should the cache break off mid-body, the rest can be asked of the origin as
            // this request would have asked it, its own conditions and range aside.
            range.origin_request = Some(OriginRequest {
                target: self.request.target.clone(),
                fields: self.forwarded(true),
            });
        }
        (reply, Source::Hit)
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
        for target in invalidation::invalidation_targets(
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
            invalidation::content_location(&self.request.target, authorities, &response.headers)
                .and_then(|uri| cache_key(&uri).ok())
                .is_some_and(|key| key == self.primary);
        if !same
            || !invalidation::post_response_storable(
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
        if !freshness::storable(method, &request.headers, status, &response.headers) {
            return pass_through(response);
        }
        let stored_headers: Vec<(String, String)> = freshness::storable_headers(&response.headers)
            .into_iter()
            .filter(|(name, _)| !is(name, "content-length"))
            .collect();
        let block = to_block(stored_headers.iter());
        if block.len() > MAX_HEADER_BLOCK as usize || !complete_block(&block, &stored_headers) {
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
}

#[cfg(test)]
mod tests {
    use super::freshness::h;
    use super::*;

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
        // obs-text goes into the block as the byte it came as (issue 21); a control
        // character cannot, and the block is then not complete.
        let headers = h(&[("A", "1"), ("Content-Length", "5"), ("B", "caf\u{e9}")]);
        let block = to_block(headers.iter());
        assert_eq!(block, b"A: 1\r\nB: caf\xe9\r\n");
        assert!(complete_block(&block, &headers));
        let with_control = h(&[("A", "1"), ("C", "a\u{1}b")]);
        let block = to_block(with_control.iter());
        assert_eq!(block, b"A: 1\r\n");
        assert!(!complete_block(&block, &with_control));
        assert_eq!(parse_block(&block), h(&[("A", "1")]));
        // Bytes beyond ASCII read back one char each, as the wire's bytes were read.
        assert_eq!(parse_block(b"X: caf\xe9\r\n"), h(&[("X", "caf\u{e9}")]));
    }
}
