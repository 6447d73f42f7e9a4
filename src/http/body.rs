//! Response bodies: one enum so that every response has one concrete, unboxed type.

use std::io::{self, Read};
use std::sync::Arc;

use super::coalesce::Ticket;
use super::stats::{ProxyStats, bump};
use super::storage::Source;
use crate::ipc::Etag;
use crate::ipc::client::{CacheBody, Fill};

/// The body of a response.
pub enum Body {
    /// Streamed out of a segment as the cache fills it; the range says how to ask for
    /// the rest if the response has to pause.
    Cache(CacheBody, HitRange),
    /// Read from secondary storage, cut to the length announced.
    Storage(io::Take<Source>),
    /// Read from secondary storage and copied into the cache on the way.
    Fill(FillBody),
    /// A short fixed text (error pages).
    Text(&'static [u8]),
    /// Bytes this process holds in memory: the stats pages, and the files of
    /// `examples/memserve.rs`, which serves them through the same response path as a cache
    /// hit minus the channel (the ceiling the benchmarks compare webproxy with).
    Memory(io::Cursor<Arc<[u8]>>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Cache(b, _) => b.read(buf),
            Body::Storage(s) => s.read(buf),
            Body::Fill(f) => f.read(buf),
            Body::Text(t) => t.read(buf),
            Body::Memory(m) => m.read(buf),
        }
    }
}

/// Which bytes of which object a cache hit's response sends, so that a response paused
/// for memory can ask for the rest and check that the rest belongs to the same object.
pub struct HitRange {
    pub key: String,
    /// The offset just past the last byte the response sends.
    pub end: u64,
    pub total_len: u64,
    pub modified: Option<std::time::SystemTime>,
    pub etag: Option<Etag>,
    /// Which bytes the entry held (see [`Meta::identity`](crate::ipc::Meta::identity)).
    pub identity: crate::ipc::Identity,
    /// In front of an origin: the target and fields to ask it for the rest with, should
    /// the cache break off mid-body.
    pub origin_request: Option<OriginRequest>,
}

/// A request as it would go to the origin: its target and end-to-end fields.
#[derive(Debug, Clone)]
pub struct OriginRequest {
    pub target: String,
    pub fields: Vec<(String, String)>,
}

/// A body from secondary storage that also fills the cache: every byte read for the client
/// is written into a segment for the cache (a STORE), so the next request hits.
///
/// The fill never harms the response: if the cache stalls or fails, the fill is abandoned
/// (its segment rebuilt, no partial entry kept) and the client's bytes keep coming. The
/// coalescing ticket is held until the fill ends, so waiting requests wake once the entry
/// is in (or once there is no point waiting).
pub struct FillBody {
    source: io::Take<Source>,
    fill: Option<(Fill, Ticket)>,
    stats: Arc<ProxyStats>,
}

impl FillBody {
    pub fn new(
        source: io::Take<Source>,
        fill: Fill,
        ticket: Ticket,
        stats: Arc<ProxyStats>,
    ) -> FillBody {
        let mut body = FillBody {
            source,
            fill: Some((fill, ticket)),
            stats,
        };
        body.settle();
        body
    }

    /// Counts and lets go of a fill that is complete (an empty object is, from the start).
    fn settle(&mut self) {
        if self.fill.as_ref().is_some_and(|(fill, _)| fill.is_done()) {
            bump(&self.stats.fills);
            self.fill = None;
        }
    }

    /// Gives up the fill (the cache keeps nothing of it) and hands back the rest of the
    /// source.
    pub fn abandon(mut self) -> io::Take<Source> {
        if self.fill.take().is_some() {
            bump(&self.stats.fills_aborted);
        }
        std::mem::replace(&mut self.source, Source::Empty.take(0))
    }
}

impl Read for FillBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read(buf)?;
        if let Some((fill, _)) = &mut self.fill
            && let Err(e) = fill.write(&buf[..n])
        {
            log::warn!("filling the cache: {e}; serving on without it");
            bump(&self.stats.fills_aborted);
            self.fill = None;
        }
        self.settle();
        Ok(n)
    }
}

impl Drop for FillBody {
    fn drop(&mut self) {
        if self.fill.is_some() {
            // The response ended before the object did (client gone, storage failed).
            bump(&self.stats.fills_aborted);
        }
    }
}
