//! shmcache: a web proxy and a cache process that talk through a POSIX message queue and
//! shared-memory segments guarded by process-shared semaphores.
//!
//! # Layout
//!
//! - [`ipc`]: the channel itself, and the only `unsafe` code: the request queue
//!   ([`ipc::queue`]), the wire format of a request ([`ipc::wire`]), segments
//!   ([`ipc::segment`]) with their semaphores ([`ipc::sem`]), the transfer protocol over a
//!   segment's ring of slots ([`ipc::channel`]), the proxy's freelist of segments
//!   ([`ipc::pool`]) and the instance lock ([`ipc::lock`]) and a few process calls ([`ipc::sys`]). Its module docs are
//!   the protocol specification.
//! - [`cache`]: the `shmcached` process: the in-memory store, preloading, and the daemon
//!   that answers the queue with a pool of workers.
//! - [`http`]: the `webproxy` process: the HTTP/1.1 server (a thread per connection, a
//!   pool of workers, and the spool that hands each response from one to the other),
//!   URL-to-key mapping, the client side of the channel, secondary storage and response
//!   bodies.
//! - [`shutdown`]: SIGINT/SIGTERM to an orderly stop, shared by both processes.
//! - [`args`]: command-line value parsers shared by both binaries.
//!
//! The binaries in `src/bin` only parse arguments, set up logging and signals, and call in.

// Every `unsafe` block lives in `ipc`; the compiler holds the other modules to that.
#[deny(unsafe_code)]
pub mod args;
#[deny(unsafe_code)]
pub mod cache;
#[deny(unsafe_code)]
pub mod http;
pub mod ipc;
#[deny(unsafe_code)]
pub mod shutdown;
