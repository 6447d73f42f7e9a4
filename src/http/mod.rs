//! The proxy process: HTTP in front, the cache behind.
//!
//! [`server`] accepts and dispatches; [`handler`] turns one request into one response;
//! [`path`] makes a key of the URL; [`conditional`] decides 304, 206 and 416;
//! [`cache_client`] asks the cache over the channel (and fills it); [`coalesce`] makes
//! concurrent misses share one fetch; [`storage`] serves misses from a directory or an
//! origin; [`body`] streams any of them to the client through [`response`]; [`stats`]
//! counts; [`spawn`] starts a cache for `--spawn-cache`.

pub mod body;
pub mod cache_client;
pub mod coalesce;
pub mod conditional;
pub mod handler;
pub mod path;
pub mod response;
pub mod server;
pub mod spawn;
pub mod stats;
pub mod storage;
