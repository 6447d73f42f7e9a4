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
//! - [`http`]: the `webproxy` process, in rooms: [`http::server`] (a plain HTTP/1.1
//!   server: acceptor, epoll waiter, pool threads that each carry one request; it knows
//!   nothing of caches), [`http::origin`] (the RFC 9111 cache in front of an origin, its
//!   policy and its upstream client), [`http::admin`] (the `/-/` pages and the live view),
//!   and at the top the proxy's own handling, one idea a file: [`http::handler`] (the
//!   router), [`http::context`], [`http::hit`], [`http::read_through`], [`http::purge`],
//!   [`http::response`], with [`http::path`], [`http::conditional`], [`http::coalesce`],
//!   [`http::storage`], [`http::body`], [`http::stats`], [`http::access`],
//!   [`http::proxy`] and [`http::spawn`]. Its module page says what each room may import.
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
