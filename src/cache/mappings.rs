//! The segments this cache has mapped, kept between requests.
//!
//! Opening a segment costs `shm_open`, `fstat`, `mmap` and later `munmap`, plus a page
//! fault for every page the transfer touches, on every request. Keeping the mapping makes
//! a hit a few atomic operations and copies. A kept mapping is used only while the segment
//! is on the generation the request names: a proxy that rebuilt a segment created a new
//! object under the same name, which a fresh open finds. Mappings of proxies that are gone
//! are dropped when a new segment name turns up, so their memory is not held forever.
//!
//! One mapping serves one request at a time. The protocol gives a transfer the segment
//! alone; a duplicated or forged request for a segment already in use is refused here,
//! so two of our own threads never copy into the same slot at once.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ipc::segment::{OpenError, Segment};
use crate::ipc::{segment_owner, sys};

/// How long a request waits for the previous user of its mapping to let go.
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// Mappings by segment name, for one instance.
pub struct Mappings {
    instance: String,
    kept: Mutex<HashMap<String, Arc<Kept>>>,
}

struct Kept {
    seg: Segment,
    busy: AtomicBool,
}

/// Exclusive use of a kept mapping for one request; released when dropped.
pub struct InUse(Arc<Kept>);

impl Deref for InUse {
    type Target = Segment;

    fn deref(&self) -> &Segment {
        &self.0.seg
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

impl Mappings {
    pub fn new(instance: &str) -> Mappings {
        Mappings {
            instance: instance.to_owned(),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// A mapping of `name` that was on `generation` when looked at, for this request
    /// alone: a kept one, or a fresh one (which the caller must still check, since the
    /// request may be stale). `Ok(None)`: the kept mapping is serving another request.
    pub fn get(&self, name: &str, generation: u64) -> Result<Option<InUse>, OpenError> {
        let kept = self.lock().get(name).cloned();
        if let Some(kept) = kept.filter(|k| k.seg.generation() == generation) {
            // The previous transfer's worker may still be on its way out (it has posted its
            // last chunk but not yet returned): wait a moment for it. A request that finds
            // the mapping busy for longer is a duplicate.
            let deadline = Instant::now() + BUSY_WAIT;
            loop {
                let free = kept
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok();
                if free {
                    return Ok(Some(InUse(kept)));
                }
                if Instant::now() > deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let kept = Arc::new(Kept {
            seg: Segment::open(name)?,
            busy: AtomicBool::new(true),
        });
        let mut map = self.lock();
        if !map.contains_key(name) {
            let instance = &self.instance;
            map.retain(|n, _| segment_owner(instance, n).is_some_and(sys::process_alive));
        }
        map.insert(name.to_owned(), Arc::clone(&kept));
        Ok(Some(InUse(kept)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Kept>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}
