//! The proxy process (`webproxy`): HTTP in front, the cache behind. Its rooms:
//!
//! - [`server`]: a plain HTTP/1.1 server (acceptor, epoll waiter, pool threads, request
//!   parsing, response writing). It knows nothing of what it serves: it imports nothing
//!   of `crate::ipc`, `crate::cache` or the rest of `crate::http`, and the proxy plugs in
//!   through its `Service` trait.
//! - [`origin`]: in front of an HTTP origin (`-s http://…`), the shared cache of RFC 9111:
//!   the policy as pure functions ([`origin::freshness`], [`origin::cache_control`],
//!   [`origin::invalidation`]), the variants registry, the cache that acts on the policy,
//!   and the upstream client ([`origin::upstream`]). It may import what sits below both
//!   modes here (context, hit, replies, bodies, paths, conditions, coalescing, counters)
//!   and `crate::ipc`'s client; never the router, the directory mode or the admin pages.
//! - [`admin`]: the `/-/` pages (stats, metrics, the live view). Reached only from the
//!   router (and PURGE's address check).
//! - Here, the proxy's own request handling, one idea a file: [`handler`] routes each
//!   request and is the server's `Service`; [`context`] is what every request shares;
//!   [`hit`] delivers a cache hit; [`read_through`] is the directory mode; [`purge`] is
//!   PURGE; [`response`] the replies; beside them [`path`] (URL to key), [`conditional`]
//!   (304, 206, 416), [`coalesce`] (one fetch per key), [`storage`] (the directory or the
//!   origin behind the cache), [`body`], [`stats`] (the counters), [`access`] (the access
//!   log), [`proxy`] (webproxy put together) and [`spawn`] (`--spawn-cache`).
//!
//! No file here imports `crate::cache`: what both processes need of a file is in
//! [`crate::file`]. `tests/house.rs` checks these rules against the sources.

pub mod access;
pub mod admin;
pub mod body;
pub mod coalesce;
pub mod conditional;
pub mod context;
pub mod handler;
pub mod hit;
pub mod origin;
pub mod path;
pub mod proxy;
pub mod purge;
pub mod read_through;
pub mod response;
pub mod server;
pub mod spawn;
pub mod stats;
pub mod storage;
