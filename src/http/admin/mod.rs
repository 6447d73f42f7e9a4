//! The proxy's own pages under `/-/`: the counters (`/-/stats` as JSON, `/-/metrics` for
//! Prometheus) and the live view of the channel (`live`: `/-/`, `/-/segments`,
//! `/-/segments.txt`), answered only to loopback and `--admin-allow` addresses.
//!
//! May import: `std`, `serde_json`, [`crate::ipc`]'s plain types and the client's views of
//! the channel, and of `super` the context, the replies, the counters and the server's
//! request type. Nothing imports this room but the router (`handler.rs`) and PURGE's
//! address check.

pub(crate) mod live;

use super::body::Body;
use super::context::Context;
use super::response::{Headers, Reply};
use super::server::Request;
use super::stats;

/// Paths the proxy answers itself, only to loopback and `--admin-allow` addresses; files
/// of these names cannot be served.
pub const STATS_PATH: &str = "/-/stats";

pub const METRICS_PATH: &str = "/-/metrics";

/// The live view's page, `/-/` (a directory: its key is its index).
pub const LIVE_PATH: &str = "/-/index.html";

pub const SEGMENTS_PATH: &str = "/-/segments";

pub const SEGMENTS_TEXT_PATH: &str = "/-/segments.txt";

/// The proxy's own pages, when `key` names one: the counters and the live view of the
/// channel, each only for loopback and `--admin-allow` addresses (403 for the others).
pub(crate) fn admin_page(ctx: &Context, request: &Request, key: &str) -> Option<Reply> {
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
