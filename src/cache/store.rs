//! The cache's contents: whole objects in memory within a byte budget, the least recently
//! used going first when an insert would pass it.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::preload::Source;
use crate::ipc::{Etag, Meta, unix_now};

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
    /// Entity tag, quotes included (see [`file_etag`]); `None` for an origin's object that
    /// came without one, so that hits and misses carry the same validators.
    pub etag: Option<Etag>,
    /// The identity of these bytes: of the file they came from ([`file_version`]), or,
    /// when there is no file (an origin's object), a number no other entry has had (see
    /// [`unique_version`]). A response paused half-way compares it before it takes the
    /// rest, so it can never splice two versions of an object together.
    pub source_version: u64,
    /// For a preloaded entry, the file it was read from: the cache checks that file itself
    /// once the entry expires (see [`preload::check`](super::preload::check)). `None` for
    /// what the proxy stored.
    pub(super) source: Option<Source>,
    /// When it was stored or last found unchanged, seconds since the Unix epoch; renewed in
    /// place, so it is an atomic.
    stored_at: AtomicU64,
    /// Freshness lifetime in seconds from `stored_at` (`u64::MAX`: forever).
    max_age: AtomicU64,
}

/// A version for bytes that came from no file: unique within this process (a counter)
/// and, with overwhelming likelihood, across restarts (it starts from the clock and pid).
/// The top bit is set; [`file_version`]'s values may have it too, but they are hashes, so
/// a collision is as likely as any other 64-bit one.
fn unique_version() -> u64 {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40);
        AtomicU64::new(seed)
    });
    next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) | 1 << 63
}

impl Entry {
    /// A new entry for the response `meta` describes, fresh from now for `meta.max_age`
    /// seconds (`meta.stored_at` is not taken: the clock of this store counts).
    pub fn new(meta: &Meta, headers: Box<[u8]>, body: Box<[u8]>) -> Entry {
        debug_assert_eq!(meta.total_len, body.len() as u64);
        Entry {
            status: meta.status,
            headers,
            body,
            modified: meta.modified,
            etag: meta.etag,
            source_version: match meta.source_version {
                0 => unique_version(),
                version => version,
            },
            source: None,
            stored_at: AtomicU64::new(unix_now()),
            max_age: AtomicU64::new(meta.max_age),
        }
    }

    /// How it crosses the channel.
    pub fn meta(&self) -> Meta {
        Meta {
            status: self.status,
            total_len: self.body.len() as u64,
            header_len: self.headers.len() as u32,
            modified: self.modified,
            etag: self.etag,
            stored_at: self.stored_at(),
            max_age: self.max_age(),
            source_version: self.source_version,
        }
    }

    /// The same entry, marked as read from `source`.
    pub(super) fn with_source(self, source: Source) -> Entry {
        Entry {
            source: Some(source),
            ..self
        }
    }

    pub fn stored_at(&self) -> u64 {
        self.stored_at.load(Ordering::Relaxed)
    }

    pub fn max_age(&self) -> u64 {
        self.max_age.load(Ordering::Relaxed)
    }

    /// Whether its lifetime has not yet passed.
    pub fn is_fresh(&self) -> bool {
        unix_now().saturating_sub(self.stored_at()) < self.max_age()
    }

    /// Makes it fresh again for `max_age` seconds from now (it was found unchanged).
    pub fn renew(&self, max_age: u64) {
        self.max_age.store(max_age, Ordering::Relaxed);
        self.stored_at.store(unix_now(), Ordering::Relaxed);
    }
}

/// The entity tag of a file, in nginx's format: `"<mtime hex>-<length hex>"`. Computed from
/// metadata alone, so the cache and secondary storage give one file the same tag without
/// reading it; it changes whenever the file's length or modification second does.
pub fn file_etag(modified: Option<SystemTime>, len: u64) -> String {
    let secs = modified
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{len:x}\"")
}

/// The header block a file is served with, by the cache and by the proxy alike: its type
/// (from the key's extension), entity tag and modification time.
pub fn file_headers(key: &str, modified: Option<SystemTime>, etag: Option<&str>) -> Vec<u8> {
    let mut block = String::new();
    if let Some(modified) = modified {
        block.push_str(&format!(
            "Last-Modified: {}\r\n",
            httpdate::fmt_http_date(modified)
        ));
    }
    if let Some(etag) = etag {
        block.push_str(&format!("ETag: {etag}\r\n"));
    }
    let content_type = mime_guess::from_path(key)
        .first_raw()
        .unwrap_or("application/octet-stream");
    block.push_str(&format!("Content-Type: {content_type}\r\n"));
    block.into_bytes()
}

/// An opaque 64-bit identity of a file's contents as `stat` sees them: device, inode,
/// length, and modification and change times to the nanosecond. The entity tag (nginx's
/// format, kept for clients) shows only the length and the modification second, so a
/// rewrite of the same length within one second, a file replaced by another (a new inode)
/// or one whose mtime was set back (the change time still moves) keep their tag but not
/// this. Never 0, which means "unknown".
pub fn file_version(meta: &Metadata) -> u64 {
    stat_version([
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ])
}

/// Folds the fields through a bijective mixer (splitmix64's finaliser), one after the
/// other: with the others fixed, each step is a bijection of the field it takes in, so two
/// stats that differ in any one field never get the same version.
fn stat_version(fields: [u64; 7]) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let version = fields
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15, |h, &field| mix(h ^ field));
    version.max(1)
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

/// Counters the store keeps about itself.
#[derive(Debug, Default)]
pub struct StoreStats {
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
pub struct Store {
    lru: Mutex<Lru>,
    capacity: u64,
    max_object: u64,
    pub stats: StoreStats,
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
        .source
        .as_ref()
        .map_or(0, |s| s.path().as_os_str().len());
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

impl Store {
    /// A store holding at most `capacity` bytes (see [`ENTRY_OVERHEAD`]) and no single
    /// object over `max_object` bytes.
    pub fn new(capacity: u64, max_object: u64) -> Store {
        Store {
            lru: Mutex::new(Lru::new()),
            capacity,
            max_object,
            stats: StoreStats::default(),
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

    fn meta(len: usize, max_age: u64) -> Meta {
        Meta {
            status: 200,
            total_len: len as u64,
            header_len: 0,
            modified: None,
            etag: None,
            stored_at: 0,
            max_age,
            source_version: 0,
        }
    }

    fn entry(len: usize) -> Entry {
        let body = vec![7; len].into_boxed_slice();
        Entry::new(&meta(len, u64::MAX), Box::new([]), body)
    }

    #[test]
    fn a_change_to_any_one_stat_field_changes_the_version() {
        let base = [64769, 1234567, 21, 1_700_000_000, 5, 1_700_000_000, 7];
        assert_eq!(stat_version(base), stat_version(base), "deterministic");
        for field in 0..base.len() {
            for delta in [1, 1 << 32, u64::MAX] {
                let mut changed = base;
                changed[field] = changed[field].wrapping_add(delta);
                assert_ne!(stat_version(changed), stat_version(base), "field {field}");
            }
        }
        assert_ne!(stat_version([0; 7]), 0, "0 is kept for unknown");
    }

    #[test]
    fn same_length_same_second_rewrites_get_another_version_and_the_same_etag() {
        use std::fs::{self, File};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        fs::write(&path, b"one").unwrap();
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(second)
            .unwrap();
        let first = fs::metadata(&path).unwrap();
        assert_eq!(
            file_version(&first),
            file_version(&fs::metadata(&path).unwrap())
        );

        // Rewritten in place, the same length, the mtime 1 ns later in the same second.
        fs::write(&path, b"two").unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(second + Duration::from_nanos(1)).unwrap();
        let rewritten = fs::metadata(&path).unwrap();
        assert_eq!(rewritten.ino(), first.ino());
        assert_ne!(file_version(&rewritten), file_version(&first));
        let etag = |m: &Metadata| file_etag(m.modified().ok(), m.len());
        assert_eq!(etag(&rewritten), etag(&first), "nginx's tag cannot tell");

        // Replaced by another file (another inode) with the same length and mtime.
        let other = dir.path().join("g.txt");
        fs::write(&other, b"new").unwrap();
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(second + Duration::from_nanos(1))
            .unwrap();
        fs::rename(&other, &path).unwrap();
        let replaced = fs::metadata(&path).unwrap();
        assert_ne!(replaced.ino(), rewritten.ino());
        assert_eq!(replaced.mtime_nsec(), rewritten.mtime_nsec());
        assert_ne!(file_version(&replaced), file_version(&rewritten));
    }

    #[test]
    fn replace_and_remove_only_touch_the_entry_they_were_given() {
        let store = Store::new(room_for(3, 100), 1000);
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
        let e = Entry::new(&meta(0, 0), Box::new([]), Box::new([]));
        assert!(!e.is_fresh(), "a zero lifetime is stale at once (no-cache)");
        e.renew(60);
        assert!(e.is_fresh());
        assert!(entry(1).is_fresh(), "forever");
    }

    /// Capacity for exactly `n` entries of `len` bytes under one-letter keys.
    fn room_for(n: u64, len: u64) -> u64 {
        n * (len + 1 + ENTRY_OVERHEAD)
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let store = Store::new(room_for(3, 100), 1000);
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
        let store = Store::new(cap, cap);
        for i in 0..200usize {
            let key = format!("{}", (b'a' + (i % 26) as u8) as char);
            let _ = store.insert(&key, entry((i * 37) % 3000));
            assert!(store.size().1 <= cap);
        }
    }

    #[test]
    fn replacing_reaccounts_and_large_objects_are_refused() {
        let store = Store::new(room_for(2, 100), 150);
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
        let store = Store::new(room_for(1, 10), 10);
        store.insert("a", entry(10)).unwrap();
        let held = store.get("a").unwrap();
        store.insert("b", entry(10)).unwrap();
        assert!(store.get("a").is_none());
        assert_eq!(held.body.len(), 10, "the transfer's bytes are still there");
    }
}
