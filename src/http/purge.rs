//! `PURGE /path`: removing one entry from the cache.

use super::admin;
use super::context::{Context, UNAVAILABLE};
use super::path::{PathError, object_key};
use super::response::Reply;
use super::server::Request;
use super::stats::bump;

/// `PURGE /path`: removes one entry from the cache; 200 if it was there, 404 if not.
/// Only from 127.0.0.1, ::1 and the `--purge-allow` addresses.
pub(super) fn purge(ctx: &Context, request: &Request) -> Reply {
    if !admin::live::admin_allowed(request.peer.ip(), &ctx.purge_allow) {
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
