//! The proxy process: HTTP in front, the cache behind.
//!
//! [`server`] accepts connections and runs them, reading each [`request`] and writing
//! each response, with workers in between; [`spool`] hands a response from its worker to
//! its connection. [`proxy`] puts webproxy together; [`handler`] turns one request into
//! one response, asking the cache through [`crate::ipc::client`]; [`path`] makes a key of
//! the URL; [`conditional`] reads the conditions (304, 206, 416) a request carries;
//! [`coalesce`] makes concurrent misses share one fetch; [`storage`] serves misses from a
//! directory or an origin; in front of an origin, [`origin`] is the shared cache of RFC
//! 9111, deciding with [`freshness`] and [`cache_control`] and forwarding with
//! [`upstream`]; [`body`] holds any of these bodies and [`response`] the heads;
//! [`stats`] counts; [`access`] writes the access log; `live` shows the channel at `/-/`;
//! [`spawn`] starts a cache for `--spawn-cache`; [`socket`] sets what std cannot on a
//! socket.

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
pub mod request;
pub mod response;
pub mod server;
pub mod socket;
pub mod spawn;
pub mod spool;
pub mod stats;
pub mod storage;
pub mod upstream;
