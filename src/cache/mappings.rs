//! The segments this cache has mapped, kept between requests.
//!
//! Opening a segment costs `shm_open`, `fstat`, `mmap` and later `munmap`, plus a page
//! fault for every page the transfer touches, on every request. Keeping the mapping makes
//! a hit a few atomic operations and copies. A kept mapping is used only while the segment
//! is on the generation the request names: a proxy that rebuilt a segment created a new
//! object under the same name, which a fresh open finds. Mappings of proxies that are gone
//! are dropped when a new segment name turns up, so their memory is not held forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ipc::segment::{OpenError, Segment};
use crate::ipc::{segment_owner, sys};

/// Mappings by segment name, for one instance.
pub struct Mappings {
    instance: String,
    kept: Mutex<HashMap<String, Arc<Segment>>>,
}

impl Mappings {
    pub fn new(instance: &str) -> Mappings {
        Mappings {
            instance: instance.to_owned(),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// A mapping of `name` that was on `generation` when looked at: a kept one, or a
    /// fresh one (which the caller must still check, since the request may be stale).
    pub fn get(&self, name: &str, generation: u64) -> Result<Arc<Segment>, OpenError> {
        let kept = self.lock().get(name).cloned();
        if let Some(seg) = kept.filter(|seg| seg.generation() == generation) {
            return Ok(seg);
        }
        let seg = Arc::new(Segment::open(name)?);
        let mut kept = self.lock();
        if !kept.contains_key(name) {
            let instance = &self.instance;
            kept.retain(|n, _| segment_owner(instance, n).is_some_and(sys::process_alive));
        }
        kept.insert(name.to_owned(), Arc::clone(&seg));
        Ok(seg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Segment>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}
