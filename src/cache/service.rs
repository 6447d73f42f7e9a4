//! What the cache does for each call the [`server`](crate::ipc::server) hands it: the
//! cache's policy over its [`Entries`], apart from the protocol. A GET for an expired entry
//! that was preloaded from a file is checked against that file here (see
//! [`preload::check`]) instead of being answered "expired": only the cache knows which file
//! a key was loaded from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::entries::{Entries, Entry};
use super::preload::{self, Checked};
use crate::ipc::server::{Backend, Lookup, Stored};
use crate::ipc::{Lifetime, Meta, StoreHead};

/// The entries, as the server sees them, with the counters of what it decided.
pub struct Cache {
    store: Arc<Entries>,
    /// Responses stored by proxies (STORE calls). The store's own insert count also
    /// counts preloading and reloading, which are not stores.
    stores: AtomicU64,
    expired: AtomicU64,
    renewed: AtomicU64,
    reloaded: AtomicU64,
    sources_gone: AtomicU64,
    purged: AtomicU64,
}

impl Cache {
    pub fn new(store: Arc<Entries>) -> Cache {
        Cache {
            store,
            stores: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            reloaded: AtomicU64::new(0),
            sources_gone: AtomicU64::new(0),
            purged: AtomicU64::new(0),
        }
    }

    /// Loads the preload set again (SIGHUP), counting the files read in `reloaded`;
    /// returns how many there were.
    ///
    /// # Errors
    /// As [`preload::preload`]: `path` cannot be listed; what was loaded stays.
    pub fn reload(&self, path: &std::path::Path, ttl: u64) -> std::io::Result<usize> {
        let n = preload::preload(&self.store, path, ttl)?;
        self.reloaded.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Checks an expired preloaded entry against the file it was read from and returns
    /// what to serve: the entry renewed, the file's new bytes, or nothing when the file is
    /// gone (the proxy then treats it as a miss).
    fn check_preloaded(&self, key: &str, entry: &Arc<Entry>) -> Option<Arc<Entry>> {
        self.expired.fetch_add(1, Ordering::Relaxed);
        match preload::check(&self.store, key, entry) {
            Checked::Renewed(entry) => {
                self.renewed.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Checked::Reloaded(entry) => {
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Checked::Gone => {
                self.sources_gone.fetch_add(1, Ordering::Relaxed);
                // The lookup counted a hit; what the proxy gets is a miss.
                self.store.stats.hits.fetch_sub(1, Ordering::Relaxed);
                self.store.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Checked::Unchecked(entry) => Some(entry),
            Checked::Superseded(current) => current,
        }
    }
}

impl Backend for Cache {
    type Entry = Arc<Entry>;

    fn get(&self, key: &str, allow_stale: bool) -> Lookup<Arc<Entry>> {
        let mut entry = self.store.get(key);
        if let Some(held) = entry.take_if(|e| e.preloaded.is_some() && !e.is_fresh()) {
            entry = self.check_preloaded(key, &held);
        }
        match entry {
            None => Lookup::Missing,
            // A preloaded entry still expired here could not be checked just now: it is
            // served as it is, since the proxy would revalidate it against the wrong
            // storage.
            Some(e) if !e.is_fresh() && !allow_stale && e.preloaded.is_none() => {
                // The proxy revalidates it against secondary storage and then renews or
                // replaces it.
                self.expired.fetch_add(1, Ordering::Relaxed);
                Lookup::Expired(e)
            }
            Some(e) => Lookup::Found(e),
        }
    }

    fn renew(&self, key: &str, lifetime: Lifetime) -> Option<Arc<Entry>> {
        let entry = self.store.peek(key)?;
        entry.renew(lifetime);
        self.renewed.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    fn store(&self, key: &str, head: StoreHead, headers: Box<[u8]>, body: Box<[u8]>) {
        let len = body.len();
        // Not preloaded: even if it replaces a preloaded entry, what the proxy stored is an
        // ordinary entry, revalidated by the proxy against its own storage.
        match self.store.insert(key, Entry::new(&head, headers, body)) {
            Ok(evicted) => {
                self.stores.fetch_add(1, Ordering::Relaxed);
                log::debug!("stored {key}: {len} bytes, {evicted} evicted");
            }
            Err(e) => log::warn!("could not store {key} ({len} bytes): {e:?}"),
        }
    }

    fn purge(&self, key: &str) -> bool {
        let removed = self.store.remove(key);
        if removed {
            self.purged.fetch_add(1, Ordering::Relaxed);
            log::info!("purged {key}");
        }
        removed
    }

    fn accept_len(&self) -> Option<u64> {
        Some(self.store.accept_len()).filter(|&most| most > 0)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let (objects, bytes) = self.store.size();
        let s = &self.store.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("objects", objects as u64),
            ("bytes_held", bytes),
            ("capacity_bytes", self.store.capacity()),
            ("max_object_bytes", self.store.accept_len()),
            ("hits", load(&s.hits)),
            ("misses", load(&s.misses)),
            ("stores", load(&self.stores)),
            ("stores_refused", load(&s.refused)),
            ("evictions", load(&s.evictions)),
            ("expired", load(&self.expired)),
            ("renewed", load(&self.renewed)),
            ("reloaded", load(&self.reloaded)),
            ("sources_gone", load(&self.sources_gone)),
            ("purged", load(&self.purged)),
        ]
    }
}

impl Stored for Arc<Entry> {
    fn meta(&self) -> Meta {
        Entry::meta(self)
    }

    fn headers(&self) -> &[u8] {
        &self.headers
    }

    fn body(&self) -> &[u8] {
        &self.body
    }
}
