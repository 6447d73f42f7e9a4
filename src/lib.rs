//! shmcache: a web proxy and a cache process that talk through a POSIX message queue and
//! shared-memory segments guarded by process-shared semaphores.
//!
//! # Layout
//!
//! - [`ipc`]: the channel and its protocol; its module page is the specification. Read in
//!   order: [`ipc::call`] (the calls and answer heads as types), [`ipc::conditions`] (what
//!   a GET may depend on), [`ipc::wire`] (their bytes), [`ipc::segment`] (shared memory,
//!   with the semaphores of `ipc::sem`), [`ipc::channel`] (one transfer through a ring of
//!   slots), [`ipc::client`] (the proxy's side, with its pool of segments) and
//!   [`ipc::server`] (the cache's receive loop). Beside them [`ipc::queue`] (the message
//!   queue), [`ipc::lock`] (one live cache per name) and [`ipc::process`] (process calls).
//!   All `unsafe` code is here, except the server's socket calls (two options, epoll,
//!   poll) in `http::server::socket`.
//! - [`cache`]: the `shmcached` process's entries ([`cache::entries`]), its preloading
//!   ([`cache::preload`]) and what it does for each call ([`cache::service`]).
//! - [`http`]: the `webproxy` process: a plain HTTP/1.1 server ([`http::server`]: the
//!   acceptor, the epoll waiter, the pool threads that each carry one request, request
//!   parsing and response writing; it knows nothing of caches), the proxy's replies
//!   ([`http::response`]), one request's decision ([`http::handler`], with [`http::conditional`], [`http::path`],
//!   [`http::coalesce`]), secondary storage ([`http::storage`]), in front of an HTTP origin
//!   the shared cache of RFC 9111 ([`http::origin`], deciding with [`http::freshness`] and
//!   [`http::cache_control`], forwarding with [`http::upstream`]), bodies ([`http::body`]),
//!   counters ([`http::stats`]), the access log ([`http::access`]), the live view of the
//!   channel at `/-/` (`http::live`), the whole proxy ([`http::proxy`]) and
//!   `--spawn-cache` ([`http::spawn`]).
//! - [`file`]: a file as both processes serve it (its header block, entity tag and
//!   version), so that neither process imports the other.
//! - [`shutdown`]: signals to actions (fast and graceful stops, reload, reopening logs),
//!   shared by both processes; [`pidfile`]: `--pid-file`.
//! - [`args`]: command-line value parsers shared by both binaries.
//!
//! `src/http` and `src/cache` reach the channel only through [`ipc::client`] and
//! [`ipc::server`] (and the plain types [`ipc`] re-exports). The binaries in `src/bin`
//! only parse arguments, set up logging and signals, and call in.

// Every `unsafe` block lives in `ipc`, but for the socket calls of `http::server::socket`,
// which allows it by name; the compiler holds the other modules to that.
#[deny(unsafe_code)]
pub mod args;
#[deny(unsafe_code)]
pub mod cache;
#[deny(unsafe_code)]
pub mod file;
#[deny(unsafe_code)]
pub mod http;
pub mod ipc;
#[deny(unsafe_code)]
pub mod pidfile;
#[deny(unsafe_code)]
pub mod shutdown;
