//! The proxy process: HTTP in front, the cache behind.
//!
//! [`server`] is a plain HTTP/1.1 server (acceptor, waiter, pool threads) that knows
//! nothing of what it serves. [`proxy`] puts webproxy together; [`handler`] turns one request into
//! one response, asking the cache through [`crate::ipc::client`]; [`path`] makes a key of
//! the URL; [`conditional`] reads the conditions (304, 206, 416) a request carries;
//! [`coalesce`] makes concurrent misses share one fetch; [`storage`] serves misses from a
//! directory or an origin; in front of an origin, [`origin`] is the shared cache of RFC
//! 9111, deciding with [`freshness`] and [`cache_control`] and forwarding with
//! [`upstream`]; [`body`] holds any of these bodies and [`response`] the heads;
//! [`stats`] counts; [`access`] writes the access log; `live` shows the channel at `/-/`;
//! [`spawn`] starts a cache for `--spawn-cache`.

pub mod access;
pub mod body;
pub mod cache_control;
pub mod coalesce;
pub mod conditional;
pub mod freshness;
pub mod handler;
pub(crate) mod live;
pub mod origin;
pub mod path;
pub mod proxy;
pub mod response;
pub mod server;
pub mod spawn;
pub mod stats;
pub mod storage;
pub mod upstream;
