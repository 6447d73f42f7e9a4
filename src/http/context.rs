//! What every request's handling shares ([`Context`]), and the proxy's note on each
//! response ([`Source`]): below both the directory mode ([`super::read_through`]) and the
//! origin mode ([`super::origin`]), so that neither imports the other.

use std::sync::Arc;
use std::time::Duration;

use super::coalesce::Coalescer;
use super::origin::upstream::Upstream;
use super::response::{Reply, Source};
use super::server::Budget;
use super::stats::ProxyStats;
use super::storage::{DirStorage, Storage};
use crate::ipc::client::Client;

/// What every request handler shares.
pub struct Context {
    pub cache: Arc<Client>,
    pub storage: Option<super::storage::Storage>,
    pub coalescer: Arc<Coalescer>,
    /// How long a miss waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    pub stats: Arc<ProxyStats>,
    /// How long past its lifetime an entry may still be served while secondary storage
    /// cannot be reached to revalidate it (stale-if-error), in seconds.
    pub stale_if_error: u64,
    /// Addresses allowed to PURGE besides 127.0.0.1 and ::1.
    pub purge_allow: Vec<std::net::IpAddr>,
    /// Addresses allowed to see the `/-/` paths besides 127.0.0.1 and ::1.
    pub admin_allow: Vec<std::net::IpAddr>,
    /// Memory for responses waiting for their clients, shared with the server.
    pub budget: Arc<Budget>,
    /// In front of an origin: the `Vary` of each key's stored responses.
    pub variants: super::origin::variants::Variants,
}

pub(super) const UNAVAILABLE: &str = "503 Service Unavailable: the cache is not answering\n";

/// The directory behind the cache, if that is what `-s` named.
pub(super) fn dir(ctx: &Context) -> Option<&DirStorage> {
    match &ctx.storage {
        Some(Storage::Dir(dir)) => Some(dir),
        _ => None,
    }
}

impl Context {
    /// The origin behind the cache, if `-s` named one: its requests go to
    /// [`super::origin`].
    pub(super) fn origin(&self) -> Option<&Upstream> {
        match &self.storage {
            Some(Storage::Origin(origin)) => Some(origin),
            _ => None,
        }
    }
}

pub(super) fn unavailable() -> (Reply, Source) {
    let reply = Reply::text(503, UNAVAILABLE).with_header("Retry-After", "1");
    (reply, Source::Proxy)
}
