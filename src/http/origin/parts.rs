//! Partial responses (206): stored under a key of their own, ranges answered from them,
//! and a stored beginning completed from the origin (RFC 9111 §3.3, §3.4).

use std::io::Read;
use std::time::{Instant, SystemTime};

use super::*;
use crate::http::body::Body;
use crate::http::coalesce::{Role, Ticket};
use crate::http::response::{Reply, Source, Value, response};
use crate::ipc::client::Answer;
use crate::ipc::{Conditions, Etag, MAX_HEADER_BLOCK, Outcome, Validators};

/// Where a partial response (206) for a primary key is stored: a line no variant key
/// has in that place (theirs is a hexadecimal generation).
pub(super) fn piece_key(primary: &str) -> String {
    format!("{primary}\n~206")
}

/// A stored or received partial response's `Content-Range: bytes a-b/total` (RFC 9110
/// §14.4), with `a <= b < total`; `None` for anything else (several ranges, an unknown
/// total, an unsatisfied range).
pub(super) fn content_range(headers: &[(String, String)]) -> Option<(u64, u64, u64)> {
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

impl Ask<'_> {
    /// A miss of the whole response while a fresh part of it is stored (RFC 9111 §3.3,
    /// §3.4): a range within the part is answered from it; a GET of the whole, when the
    /// part is its beginning, asks the origin for the rest only. `None`: neither applies,
    /// and the request is a miss like any other.
    pub(super) fn answer_from_piece(
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
    pub(super) fn complete(
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
            freshness::end_to_end(&answer.headers).filter(|(n, _)| !is(n, "content-range")),
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
}
