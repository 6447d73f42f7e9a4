//! Validating an expired response with the origin (RFC 9111 §4.3): one request per key at
//! a time, the stale response served meanwhile within `stale-while-revalidate`, and the
//! stored header block updated from a 304.

use std::io::Read;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::*;
use crate::http::body::Body;
use crate::http::coalesce::{Role, Ticket};
use crate::http::response::{Reply, Source, Value, response};
use crate::http::stats::bump;
use crate::ipc::client::Answer;
use crate::ipc::{Conditions, Etag, MAX_HEADER_BLOCK, Validators};

impl Ask<'_> {
    /// Validates a stored response with the origin (§4.3.1): its validators go back as
    /// they were received. A 304 (or for HEAD a 200 with the same validators, §4.3.5)
    /// updates and serves the stored response; a failure serves it stale where allowed
    /// (RFC 5861 §4, `--stale-if-error`); anything else replaces it.
    ///
    /// `asked`: when the cache said "expired". A validation of the key that landed since
    /// then makes this request ask again rather than validate a second time: it was told
    /// "expired" before that validation renewed the entry, and only joins now.
    pub(super) fn validate(
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
    pub(super) fn serve_and_revalidate(
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
    pub(super) fn validate_as_leader(
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
    pub(super) fn refresh(&self, key: &str, stored: &Stored, fresh: ResponseMeta) -> Reply {
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
