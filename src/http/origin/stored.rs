//! A response as the cache stores it: its head ([`StoreHead`]) and its end-to-end fields
//! as one header block, and the way back from a block to fields and to a reply.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::http::body::Body;
use crate::http::response::{Headers, Reply, Source, block_lines};
use crate::ipc::{Etag, Lifetime, Meta, StoreHead};

/// A stored response as the cache answered it: its head and header lines.
pub(super) struct Stored {
    pub(super) meta: Meta,
    pub(super) headers: Vec<(String, String)>,
}

impl Stored {
    pub(super) fn new(meta: Meta, block: &[u8]) -> Stored {
        Stored {
            meta,
            headers: parse_block(block),
        }
    }

    /// The stored response for the freshness rules.
    pub(super) fn freshness(&self) -> ResponseMeta {
        for_freshness(&self.meta, self.headers.clone())
    }
}

/// A stored response with `headers` for the freshness rules: the cache's `stored_at` is
/// when it arrived (or was last validated).
fn for_freshness(meta: &Meta, headers: Vec<(String, String)>) -> ResponseMeta {
    let at = UNIX_EPOCH + Duration::from_secs(meta.stored_at);
    ResponseMeta {
        status: meta.status,
        headers,
        request_time: at,
        response_time: at,
    }
}

/// A fresh hit's block and current age (RFC 9111 §4.2.3), read in place: the age needs
/// only the `Age` and `Date` lines, and the block goes out as stored but for its `Age`
/// line, which the age computed replaces (and a `Content-Length`, which [`to_block`] never
/// stores and the connection writes itself). The rest of the block is neither parsed nor
/// re-encoded, which a hit served from memory would otherwise spend most of its time on.
pub(super) fn hit_block(meta: &Meta, block: &[u8], now: SystemTime) -> (Vec<u8>, u64) {
    let mut kept = Vec::with_capacity(block.len());
    let mut read = Vec::new();
    for (name, line) in block_lines(block) {
        let is_age = name.eq_ignore_ascii_case(b"age");
        if is_age || name.eq_ignore_ascii_case(b"date") {
            read.extend(parse_block(line));
        }
        if !is_age && !name.eq_ignore_ascii_case(b"content-length") {
            kept.extend_from_slice(line);
        }
    }
    let age = freshness::current_age(&for_freshness(meta, read), now);
    (kept, age)
}

/// Whether a stored response could ever be reused: it has a freshness lifetime or a
/// validator. Only such a response of unknown length is worth reading into memory.
pub(super) fn reusable(fresh: &ResponseMeta) -> bool {
    freshness::freshness_lifetime(fresh) > 0
        || fresh
            .headers
            .iter()
            .any(|(n, _)| is(n, "etag") || is(n, "last-modified"))
}

/// The head a STORE carries for a response: its validators, and a lifetime from now that
/// runs out exactly when its freshness lifetime does (§4.2: fresh while the lifetime is
/// more than the current age, and the cache counts from when it stores it).
pub(super) fn entry_head(fresh: &ResponseMeta, now: SystemTime) -> StoreHead {
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

pub(super) fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// Header lines as a block (`Name: value\r\n`), each value as the bytes received
/// ([`push_latin1`]), leaving out Content-Length (the connection writes the length it
/// sends) and any line the channel's header block does not take (today: a value with
/// bytes outside visible ASCII).
pub(super) fn to_block<'a>(headers: impl Iterator<Item = &'a (String, String)>) -> Vec<u8> {
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
pub(super) fn complete_block(block: &[u8], headers: &[(String, String)]) -> bool {
    let lines = block.split(|&b| b == b'\n').count() - 1;
    lines
        == headers
            .iter()
            .filter(|(n, _)| !is(n, "content-length"))
            .count()
}

/// A header block read back from the cache, as lines (values one char per byte, as
/// [`latin1`] reads them off the wire).
pub(super) fn parse_block(block: &[u8]) -> Vec<(String, String)> {
    latin1(block)
        .split_terminator("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim_matches([' ', '\t']).to_owned()))
        .collect()
}

/// The head of an origin's response as the client gets it: its status and end-to-end
/// fields.
pub(super) fn pass_through_head(
    status: u16,
    headers: &[(String, String)],
    length: Option<u64>,
) -> Reply {
    let mut headers = Headers::stored(to_block(freshness::end_to_end(headers)));
    headers.push("X-Cache", "MISS");
    Reply {
        status,
        headers,
        length,
        body: Body::Text(b""),
    }
}

/// An origin's response, passed on uncached.
pub(super) fn pass_through(response: Response) -> Reply {
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
pub(super) fn gateway_timeout() -> (Reply, Source) {
    (Reply::text(504, "504 Gateway Timeout\n"), Source::Proxy)
}

pub(super) fn bad_gateway(key: &str, e: &std::io::Error) -> (Reply, Source) {
    log::warn!("{key}: origin: {e}");
    (Reply::text(502, "502 Bad Gateway\n"), Source::Proxy)
}
