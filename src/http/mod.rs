//! The proxy process: HTTP in front, the cache behind.
//!
//! [`server`] accepts and dispatches; [`handler`] turns one request into one response;
//! [`path`] makes a key of the URL; [`cache_client`] asks the cache over the channel;
//! [`storage`] serves misses; [`body`] streams either to the client.

pub mod body;
pub mod cache_client;
pub mod conditional;
pub mod handler;
pub mod path;
pub mod response;
pub mod server;
pub mod spawn;
pub mod storage;
