//! Response bodies: one enum so that every response has one concrete, unboxed type.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use crate::ipc::channel::Receiver;
use crate::ipc::pool::Lease;

/// The body of a response.
pub enum Body {
    /// Streamed out of a segment as the cache fills it.
    Cache(CacheBody),
    /// Read from secondary storage, cut to the length announced.
    File(io::Take<File>),
    /// A short fixed text (error pages).
    Text(&'static [u8]),
    /// Bytes this process holds in memory, shared by every response that sends them. The
    /// proxy does not use it; it lets `examples/memserve.rs` serve files through the same
    /// response path as a cache hit minus the channel, the ceiling the benchmarks compare
    /// webproxy with.
    Memory(io::Cursor<Arc<[u8]>>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Cache(b) => b.read(buf),
            Body::File(f) => f.read(buf),
            Body::Text(t) => t.read(buf),
            Body::Memory(m) => m.read(buf),
        }
    }
}

/// A body that drains a segment's ring.
///
/// It owns the lease, so the segment goes back to the pool when the response is done with
/// the body, whether the transfer finished (reused as is) or not (rebuilt: see
/// [`pool`](crate::ipc::pool)). The proxy never holds more than one slot of the file.
pub struct CacheBody {
    lease: Lease,
    rx: Receiver,
}

impl CacheBody {
    pub fn new(mut lease: Lease, rx: Receiver) -> CacheBody {
        if rx.is_complete() {
            lease.set_at_rest();
        }
        CacheBody { lease, rx }
    }
}

impl Read for CacheBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rx.read(self.lease.segment(), buf)?;
        if self.rx.is_complete() {
            self.lease.set_at_rest();
        }
        Ok(n)
    }
}
