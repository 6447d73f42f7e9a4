//! The cache's entries: whole objects in memory within a byte budget, the least recently
//! used going first when an insert would pass it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::ipc::{Etag, Identity, Lifetime, Meta, StoreHead, unix_now};

/// One cached response: status, header block, validators and freshness beside the body.
/// Shared by `Arc` so that a transfer in progress keeps its bytes alive even if the entry
/// is evicted or replaced meanwhile, without holding any lock while it copies.
#[derive(Debug)]
pub struct Entry {
    /// The HTTP status it is served with (200 for a file).
    pub status: u16,
    /// End-to-end header lines (`Name: value\r\n` each), sent as they are.
    pub headers: Box<[u8]>,
    pub body: Box<[u8]>,
    pub modified: Option<SystemTime>,
    /// Entity tag, quotes included (see [`crate::file::etag`]); `None` for an origin's
    /// object that came without one, so that hits and misses carry the same validators.
    pub etag: Option<Etag>,
    /// Which bytes these are: the version of the file they came from, or, when there is no
    /// file (an origin's object), a number no other entry has had (see
    /// `unique_identity`). A response paused half-way compares it before it takes the
    /// rest, so it can never splice two versions of an object together.
    pub identity: Identity,
    /// For a preloaded entry, the file it was read from: the cache checks that file itself
    /// once the entry expires (see [`preload::check`](super::preload::check)). `None` for
    /// what the proxy stored.
    pub(super) preloaded: Option<Preloaded>,
    /// When it was stored or last found unchanged, seconds since the Unix epoch; renewed in
    /// place, so it is an atomic.
    stored_at: AtomicU64,
    /// Freshness lifetime from `stored_at` in seconds, 0 for must-validate (see
    /// [`Lifetime::secs`]); renewed in place, so it is an atomic.
    lifetime: AtomicU64,
}

/// Where a preloaded entry came from, kept with it.
#[derive(Debug)]
pub(super) struct Preloaded {
    pub(super) path: PathBuf,
    /// The preload's lifetime, given again each time the file is found unchanged or read
    /// again.
    pub(super) lifetime: Lifetime,
    /// Held while the file is checked, so that concurrent requests for one expired entry
    /// make one check (and read a changed file once), like the proxy's coalescing.
    pub(super) checking: Mutex<()>,
}

impl Preloaded {
    pub(super) fn new(path: PathBuf, lifetime: Lifetime) -> Preloaded {
        Preloaded {
            path,
            lifetime,
            checking: Mutex::new(()),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// An identity for bytes that came from no file: unique within this process (a counter)
/// and, with overwhelming likelihood, across restarts (it starts from the clock and pid).
fn unique_identity() -> Identity {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40);
        AtomicU64::new(seed)
    });
    Identity::Unique(next.fetch_add(1, Ordering::Relaxed))
}

impl Entry {
    /// A new entry for the response `head` describes, fresh from now for its lifetime.
    pub fn new(head: &StoreHead, headers: Box<[u8]>, body: Box<[u8]>) -> Entry {
        Entry {
            status: head.status,
            headers,
            body,
            modified: head.modified,
            etag: head.etag,
            identity: head.file.map_or_else(unique_identity, Identity::File),
            preloaded: None,
            stored_at: AtomicU64::new(unix_now()),
            lifetime: AtomicU64::new(head.lifetime.secs()),
        }
    }

    /// How it crosses the channel.
    pub fn meta(&self) -> Meta {
        Meta {
            status: self.status,
            total_len: self.body.len() as u64,
            modified: self.modified,
            etag: self.etag,
            stored_at: self.stored_at(),
            lifetime: self.lifetime(),
            identity: self.identity,
        }
    }

    /// The same entry, marked as read from the file `preloaded` names.
    pub(super) fn with_source(self, preloaded: Preloaded) -> Entry {
        Entry {
            preloaded: Some(preloaded),
            ..self
        }
    }

    pub fn stored_at(&self) -> u64 {
        self.stored_at.load(Ordering::Relaxed)
    }

    pub fn lifetime(&self) -> Lifetime {
        Lifetime::from_secs(self.lifetime.load(Ordering::Relaxed))
    }

    /// Whether its lifetime has not yet passed.
    pub fn is_fresh(&self) -> bool {
        self.lifetime()
            .covers(unix_now().saturating_sub(self.stored_at()))
    }

    /// Makes it fresh again for `lifetime` from now (it was found unchanged).
    pub fn renew(&self, lifetime: Lifetime) {
        self.lifetime.store(lifetime.secs(), Ordering::Relaxed);
        self.stored_at.store(unix_now(), Ordering::Relaxed);
    }
}

/// Bytes charged per entry on top of its body and key: the slot, the map bucket, the `Arc`
/// and the validators, rounded up. The budget is for memory, not just for file bytes.
pub const ENTRY_OVERHEAD: u64 = 192;

/// Why an object was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Larger than `--max-object`, or than the whole capacity.
    TooLarge,
}

/// Counters the entries keep about themselves.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub inserts: AtomicU64,
    pub refused: AtomicU64,
    pub evictions: AtomicU64,
}

/// A map from key to entry with least-recently-used eviction, all O(1): a hash map into a
/// slab of nodes that form a doubly linked recency list. One mutex guards it; it is held
/// for pointer updates only, never while bytes are copied.
#[derive(Debug)]
pub struct Entries {
    lru: Mutex<Lru>,
    capacity: u64,
    max_object: u64,
    pub stats: Counters,
}

const NIL: usize = usize::MAX;

#[derive(Debug, Default)]
struct Lru {
    index: HashMap<Arc<str>, usize>,
    nodes: Vec<Node>,
    vacant: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to go.
    tail: usize,
    bytes: u64,
}

#[derive(Debug)]
struct Node {
    key: Arc<str>,
    entry: Option<Arc<Entry>>,
    prev: usize,
    next: usize,
}

fn cost(key: &str, entry: &Entry) -> u64 {
    let source = entry
        .preloaded
        .as_ref()
        .map_or(0, |p| p.path().as_os_str().len());
    let bytes = entry.body.len() + entry.headers.len() + key.len() + source;
    bytes as u64 + ENTRY_OVERHEAD
}

impl Lru {
    fn new() -> Lru {
        Lru {
            head: NIL,
            tail: NIL,
            ..Lru::default()
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h].prev = i,
        }
        self.head = i;
    }

    /// Whether `key` holds this very entry (not an equal one: a replacement).
    fn holds(&self, key: &str, entry: &Arc<Entry>) -> bool {
        self.index
            .get(key)
            .and_then(|&i| self.nodes[i].entry.as_ref())
            .is_some_and(|held| Arc::ptr_eq(held, entry))
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Entry>> {
        let i = self.index.remove(key)?;
        self.unlink(i);
        let entry = self.nodes[i]
            .entry
            .take()
            .expect("indexed nodes hold an entry");
        self.bytes -= cost(key, &entry);
        self.vacant.push(i);
        Some(entry)
    }

    fn insert(&mut self, key: Arc<str>, entry: Arc<Entry>) {
        self.bytes += cost(&key, &entry);
        let node = Node {
            key: Arc::clone(&key),
            entry: Some(entry),
            prev: NIL,
            next: NIL,
        };
        let i = match self.vacant.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.index.insert(key, i);
        self.push_front(i);
    }
}

impl Entries {
    /// A store holding at most `capacity` bytes (see [`ENTRY_OVERHEAD`]) and no single
    /// object over `max_object` bytes.
    pub fn new(capacity: u64, max_object: u64) -> Entries {
        Entries {
            lru: Mutex::new(Lru::new()),
            capacity,
            max_object,
            stats: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest body this store would take, for the asker to decide whether to fill.
    pub fn accept_len(&self) -> u64 {
        self.max_object
            .min(self.capacity.saturating_sub(ENTRY_OVERHEAD))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Stores `entry` under `key`, replacing any entry there, then evicts least recently
    /// used entries until the budget holds again. Returns how many were evicted.
    pub fn insert(&self, key: &str, entry: Entry) -> Result<usize, Refused> {
        self.put(key, Arc::new(entry), None)
            .map(|evicted| evicted.expect("an unconditional insert always happens"))
    }

    /// Stores `entry` under `key` as [`insert`](Self::insert) does, but only if `key` still
    /// holds `current`: a check that took a while (reading a file again) must not undo a
    /// STORE, PURGE or reload that came meanwhile. `Ok(None)` when it did not.
    pub(super) fn replace(
        &self,
        key: &str,
        current: &Arc<Entry>,
        entry: Arc<Entry>,
    ) -> Result<Option<usize>, Refused> {
        self.put(key, entry, Some(current))
    }

    fn put(
        &self,
        key: &str,
        entry: Arc<Entry>,
        only_over: Option<&Arc<Entry>>,
    ) -> Result<Option<usize>, Refused> {
        if entry.body.len() as u64 > self.max_object || cost(key, &entry) > self.capacity {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::TooLarge);
        }
        // Entries leaving the store are freed after the lock is released: freeing a large
        // body takes time that other lookups should not wait for.
        let mut leaving = Vec::new();
        let mut lru = self.lock();
        if only_over.is_some_and(|current| !lru.holds(key, current)) {
            return Ok(None);
        }
        leaving.extend(lru.remove(key));
        lru.insert(Arc::from(key), entry);
        let mut evicted = 0;
        while lru.bytes > self.capacity {
            let victim = Arc::clone(&lru.nodes[lru.tail].key);
            leaving.extend(lru.remove(&victim));
            evicted += 1;
        }
        drop(lru);
        drop(leaving);
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
        Ok(Some(evicted))
    }

    /// Looks `key` up and marks it most recently used.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let found = {
            let mut lru = self.lock();
            match lru.index.get(key).copied() {
                Some(i) => {
                    lru.unlink(i);
                    lru.push_front(i);
                    lru.nodes[i].entry.clone()
                }
                None => None,
            }
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Looks `key` up without counting a hit or marking it used (for bookkeeping such as
    /// renewal).
    pub fn peek(&self, key: &str) -> Option<Arc<Entry>> {
        let lru = self.lock();
        let i = *lru.index.get(key)?;
        lru.nodes[i].entry.clone()
    }

    /// Whether `key` holds this very entry, not a replacement of it.
    pub(super) fn holds(&self, key: &str, entry: &Arc<Entry>) -> bool {
        self.lock().holds(key, entry)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        let removed = self.lock().remove(key);
        removed.is_some() // freed here, after the lock
    }

    /// Removes `key` if it still holds `current` (see [`replace`](Self::replace)).
    pub(super) fn remove_if_current(&self, key: &str, current: &Arc<Entry>) -> bool {
        let removed = {
            let mut lru = self.lock();
            if !lru.holds(key, current) {
                return false;
            }
            lru.remove(key)
        };
        removed.is_some() // freed here, after the lock
    }

    /// Number of entries and bytes charged.
    pub fn size(&self) -> (usize, u64) {
        let lru = self.lock();
        (lru.index.len(), lru.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lifetime: Lifetime) -> StoreHead {
        StoreHead {
            status: 200,
            modified: None,
            etag: None,
            lifetime,
            file: None,
        }
    }

    fn entry(len: usize) -> Entry {
        let body = vec![7; len].into_boxed_slice();
        Entry::new(&head(Lifetime::from_secs(3600)), Box::new([]), body)
    }

    #[test]
    fn replace_and_remove_only_touch_the_entry_they_were_given() {
        let store = Entries::new(room_for(3, 100), 1000);
        store.insert("a", entry(10)).unwrap();
        let old = store.get("a").unwrap();
        assert_eq!(
            store.replace("a", &old, Arc::new(entry(20))),
            Ok(Some(0)),
            "still current"
        );
        let new = store.get("a").unwrap();
        assert!(!store.holds("a", &old) && store.holds("a", &new));
        assert_eq!(store.replace("a", &old, Arc::new(entry(30))), Ok(None));
        assert!(!store.remove_if_current("a", &old), "a newer entry stays");
        assert_eq!(store.get("a").unwrap().body.len(), 20);
        assert!(store.remove_if_current("a", &new));
        assert!(store.get("a").is_none());
        assert_eq!(store.size(), (0, 0));
    }

    #[test]
    fn freshness_and_renewal() {
        let e = Entry::new(&head(Lifetime::MustValidate), Box::new([]), Box::new([]));
        assert!(!e.is_fresh(), "stale at once (no-cache)");
        assert_eq!(e.meta().lifetime, Lifetime::MustValidate);
        e.renew(Lifetime::from_secs(60));
        assert!(e.is_fresh());
        assert_eq!(e.meta().lifetime, Lifetime::from_secs(60));
    }

    #[test]
    fn an_entry_from_no_file_gets_an_identity_of_its_own() {
        let (a, b) = (entry(1), entry(1));
        assert!(matches!(a.identity, Identity::Unique(_)));
        assert_ne!(a.identity, b.identity);
        let file = crate::ipc::FileVersion(7);
        let from_file = StoreHead {
            file: Some(file),
            ..head(Lifetime::MustValidate)
        };
        let e = Entry::new(&from_file, Box::new([]), Box::new([]));
        assert_eq!(e.identity, Identity::File(file));
    }

    /// Capacity for exactly `n` entries of `len` bytes under one-letter keys.
    fn room_for(n: u64, len: u64) -> u64 {
        n * (len + 1 + ENTRY_OVERHEAD)
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let store = Entries::new(room_for(3, 100), 1000);
        for k in ["a", "b", "c"] {
            assert_eq!(store.insert(k, entry(100)), Ok(0));
        }
        assert!(store.get("a").is_some()); // a is now the most recent; b the least
        assert_eq!(store.insert("d", entry(100)), Ok(1));
        assert!(store.get("b").is_none(), "b went first");
        for k in ["a", "c", "d"] {
            assert!(store.get(k).is_some(), "{k}");
        }
        assert_eq!(store.size(), (3, room_for(3, 100)));
        assert_eq!(store.stats.evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let cap = room_for(5, 1000);
        let store = Entries::new(cap, cap);
        for i in 0..200usize {
            let key = format!("{}", (b'a' + (i % 26) as u8) as char);
            let _ = store.insert(&key, entry((i * 37) % 3000));
            assert!(store.size().1 <= cap);
        }
    }

    #[test]
    fn replacing_reaccounts_and_large_objects_are_refused() {
        let store = Entries::new(room_for(2, 100), 150);
        store.insert("a", entry(100)).unwrap();
        store.insert("a", entry(50)).unwrap();
        assert_eq!(store.size(), (1, 50 + 1 + ENTRY_OVERHEAD));
        assert_eq!(store.insert("b", entry(151)), Err(Refused::TooLarge));
        assert!(store.remove("a"));
        assert!(!store.remove("a"));
        assert_eq!(store.size(), (0, 0));
        assert_eq!(store.accept_len(), 150);
    }

    #[test]
    fn an_evicted_entry_stays_alive_while_in_use() {
        let store = Entries::new(room_for(1, 10), 10);
        store.insert("a", entry(10)).unwrap();
        let held = store.get("a").unwrap();
        store.insert("b", entry(10)).unwrap();
        assert!(store.get("a").is_none());
        assert_eq!(held.body.len(), 10, "the transfer's bytes are still there");
    }
}
