//! The cache's contents: whole files in memory, keyed by URL path.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One cached object. Shared by `Arc` so that a transfer in progress keeps its bytes alive
/// even if the entry is replaced meanwhile, without holding any lock while it copies.
#[derive(Debug)]
pub struct Entry {
    pub body: Box<[u8]>,
    pub modified: Option<SystemTime>,
    /// Entity tag, quotes included; see [`file_etag`].
    pub etag: String,
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

/// A map from key to entry behind a reader-writer lock: lookups (the hot path) share the
/// lock and hold it only long enough to clone an `Arc`.
#[derive(Debug, Default)]
pub struct Store {
    entries: RwLock<HashMap<String, Arc<Entry>>>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, key: String, entry: Entry) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(entry));
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Number of entries and bytes held.
    pub fn size(&self) -> (usize, u64) {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        (map.len(), map.values().map(|e| e.body.len() as u64).sum())
    }
}
