//! Heads in the segment's head area: the cache's [`Head`] and the proxy's [`StoreHead`],
//! each with the [`Stream`] it announces (see the tables of [`wire`](super)).

use std::time::SystemTime;

use super::{HEAD_CAPACITY, MAX_STATS_LEN, Reader, WireError, Writer, kind, to_secs};
use crate::ipc::call::{
    ETAG_CAPACITY, Etag, FileVersion, Head, Identity, MAX_HEADER_BLOCK, Meta, StoreHead, Stream,
};
use crate::ipc::conditions::Outcome;

/// A head as a writer put it: what it says, how its stream is made up, the generation it
/// served, who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<H = Head> {
    pub head: H,
    pub stream: Stream,
    pub generation: u64,
    pub pid: u32,
}

/// The two kinds of head a transfer can open with: the cache's [`Head`] and the proxy's
/// [`StoreHead`]. A reader says which it expects, and refuses the other.
pub trait HeadFormat: Sized {
    /// Encodes the head, with its stream's make-up, for the transfer numbered
    /// `generation`, as written by this process.
    fn encode(&self, stream: Stream, generation: u64) -> [u8; HEAD_CAPACITY];

    /// Decodes and validates a head area (see [`decode_head`]).
    fn decode(bytes: &[u8]) -> Result<Option<Envelope<Self>>, WireError>;
}

impl HeadFormat for Head {
    fn encode(&self, stream: Stream, generation: u64) -> [u8; HEAD_CAPACITY] {
        encode_head(self, stream, generation)
    }

    fn decode(bytes: &[u8]) -> Result<Option<Envelope<Head>>, WireError> {
        decode_head(bytes)
    }
}

impl HeadFormat for StoreHead {
    fn encode(&self, stream: Stream, generation: u64) -> [u8; HEAD_CAPACITY] {
        let mut w = Writer::head(kind::STORE, stream, generation);
        w.u16(self.status);
        w.time(self.modified);
        w.etag(self.etag.as_ref());
        w.lifetime(self.lifetime);
        match self.file {
            None => w.u8(0),
            Some(FileVersion(v)) => {
                w.u8(1);
                w.u64(v);
            }
        }
        w.into_area()
    }

    fn decode(bytes: &[u8]) -> Result<Option<Envelope<StoreHead>>, WireError> {
        let Some((kind, mut r, prefix)) = Reader::head(bytes)? else {
            return Ok(None);
        };
        if kind != kind::STORE {
            return Err(WireError::Unexpected(kind));
        }
        let head = StoreHead {
            status: r.status()?,
            modified: r.time()?,
            etag: r.etag()?,
            lifetime: r.lifetime()?,
            file: match r.u8()? {
                0 => None,
                1 => Some(FileVersion(r.u64()?)),
                other => return Err(WireError::Tag("file", other)),
            },
        };
        Ok(Some(prefix.with(head)))
    }
}

/// Encodes the cache's `head` for the transfer numbered `generation`, written by this
/// process, its stream made up as `stream` says. Checks nothing, so that tests can write
/// what a faulty peer would.
pub fn encode_head(head: &Head, stream: Stream, generation: u64) -> [u8; HEAD_CAPACITY] {
    let kind = match head {
        Head::Found { .. } => kind::FOUND,
        Head::Expired { .. } => kind::EXPIRED,
        Head::Missing { .. } => kind::MISSING,
        Head::Purged { .. } => kind::PURGED,
        Head::Stats => kind::STATS,
        Head::Failed => kind::FAILED,
    };
    let mut w = Writer::head(kind, stream, generation);
    match head {
        Head::Found { meta, outcome } => {
            w.meta(meta);
            match *outcome {
                Outcome::Full => w.u8(1),
                Outcome::Partial { start, len } => {
                    w.u8(2);
                    w.u64(start);
                    w.u64(len);
                }
                Outcome::NotModified => w.u8(3),
                Outcome::Unsatisfiable => w.u8(4),
            }
        }
        Head::Expired { meta, accept_len } => {
            w.meta(meta);
            w.accept(*accept_len);
        }
        Head::Missing { accept_len } => w.accept(*accept_len),
        Head::Purged { existed } => w.u8(u8::from(*existed)),
        Head::Stats | Head::Failed => {}
    }
    w.into_area()
}

/// Decodes and validates the head area the cache wrote: a known kind, a stream that fits
/// the kind (see the table above), a range inside the object, an entity tag that can go
/// into an HTTP header. Bytes after the head are ignored (the area has a fixed size).
/// `None` for a head area nobody has written since the transfer began.
pub fn decode_head(bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
    let Some((kind, mut r, prefix)) = Reader::head(bytes)? else {
        return Ok(None);
    };
    let stream = prefix.stream;
    let empty = |head: Head| {
        if stream.is_empty() {
            Ok(head)
        } else {
            Err(WireError::BadLength("a stream where none is due"))
        }
    };
    let head = match kind {
        kind::FOUND => {
            let meta = r.meta()?;
            let outcome = match r.u8()? {
                1 => Outcome::Full,
                2 => Outcome::Partial {
                    start: r.u64()?,
                    len: r.u64()?,
                },
                3 => Outcome::NotModified,
                4 => Outcome::Unsatisfiable,
                other => return Err(WireError::Tag("outcome", other)),
            };
            if let Outcome::Partial { start, len } = outcome {
                let inside = start
                    .checked_add(len)
                    .is_some_and(|end| end <= meta.total_len);
                if !inside || len == 0 {
                    return Err(WireError::BadLength("range outside the object"));
                }
            }
            let sends = outcome.body_range(meta.total_len).map_or(0, |(_, len)| len);
            if stream.body_len != 0 && stream.body_len != sends {
                return Err(WireError::BadLength("a body the outcome does not send"));
            }
            Head::Found { meta, outcome }
        }
        kind::EXPIRED => {
            if stream.body_len != 0 {
                return Err(WireError::BadLength("a body after an expired head"));
            }
            Head::Expired {
                meta: r.meta()?,
                accept_len: r.accept()?,
            }
        }
        kind::MISSING => empty(Head::Missing {
            accept_len: r.accept()?,
        })?,
        kind::PURGED => empty(Head::Purged {
            existed: match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(WireError::Tag("purged", other)),
            },
        })?,
        kind::STATS => {
            if stream.header_len != 0 || stream.body_len > MAX_STATS_LEN {
                return Err(WireError::BadLength(
                    "stats of a length that cannot be right",
                ));
            }
            Head::Stats
        }
        kind::FAILED => empty(Head::Failed)?,
        kind::STORE => return Err(WireError::Unexpected(kind)),
        other => return Err(WireError::Tag("head kind", other)),
    };
    Ok(Some(prefix.with(head)))
}

/// What every head begins with, once read.
struct Prefix {
    stream: Stream,
    generation: u64,
    pid: u32,
}

impl Prefix {
    fn with<H>(self, head: H) -> Envelope<H> {
        Envelope {
            head,
            stream: self.stream,
            generation: self.generation,
            pid: self.pid,
        }
    }
}

impl Writer {
    /// A writer for a head area, with the prefix every head begins with.
    fn head(kind: u8, stream: Stream, generation: u64) -> Writer {
        let mut w = Writer(Vec::with_capacity(HEAD_CAPACITY));
        w.u8(kind);
        w.u64(generation);
        w.u32(crate::ipc::process::own_pid());
        w.u32(stream.header_len);
        w.u64(stream.body_len);
        w
    }

    /// The head area holding what was written: the largest head (Found with the longest
    /// entity tag and a range) takes 216 bytes.
    fn into_area(self) -> [u8; HEAD_CAPACITY] {
        let mut out = [0u8; HEAD_CAPACITY];
        out[..self.0.len()].copy_from_slice(&self.0);
        out
    }

    fn time(&mut self, t: Option<SystemTime>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.u64(to_secs(Some(t)));
            }
        }
    }

    fn etag(&mut self, etag: Option<&Etag>) {
        let etag = etag.map_or("", Etag::as_str);
        self.u8(etag.len() as u8);
        self.0.extend_from_slice(etag.as_bytes());
    }

    fn accept(&mut self, accept_len: Option<u64>) {
        match accept_len {
            None => self.u8(0),
            Some(len) => {
                self.u8(1);
                self.u64(len);
            }
        }
    }

    fn meta(&mut self, m: &Meta) {
        self.u16(m.status);
        self.u64(m.total_len);
        self.time(m.modified);
        self.etag(m.etag.as_ref());
        self.u64(m.stored_at);
        self.lifetime(m.lifetime);
        match m.identity {
            Identity::File(FileVersion(v)) => {
                self.u8(1);
                self.u64(v);
            }
            Identity::Unique(v) => {
                self.u8(2);
                self.u64(v);
            }
        }
    }
}

impl<'a> Reader<'a> {
    /// A tagged time: 0 unknown, or 1 and seconds.
    fn time(&mut self) -> Result<Option<SystemTime>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.date().map(Some),
            other => Err(WireError::Tag("time", other)),
        }
    }

    /// The prefix every head begins with, and the kind; `None` for an area nobody has
    /// written since the transfer began (kind 0).
    fn head(bytes: &'a [u8]) -> Result<Option<(u8, Reader<'a>, Prefix)>, WireError> {
        let mut r = Reader(bytes);
        let kind = r.u8()?;
        if kind == 0 {
            return Ok(None);
        }
        let generation = r.u64()?;
        let pid = r.u32()?;
        let stream = Stream {
            header_len: r.u32()?,
            body_len: r.u64()?,
        };
        if stream.header_len > MAX_HEADER_BLOCK {
            return Err(WireError::BadLength("header block too long"));
        }
        let prefix = Prefix {
            stream,
            generation,
            pid,
        };
        Ok(Some((kind, r, prefix)))
    }

    fn status(&mut self) -> Result<u16, WireError> {
        let status = self.u16()?;
        if !(100..=999).contains(&status) {
            return Err(WireError::BadLength("status outside 100..=999"));
        }
        Ok(status)
    }

    /// An entity tag or none (a length of 0).
    fn etag(&mut self) -> Result<Option<Etag>, WireError> {
        let len = self.u8()? as usize;
        if len > ETAG_CAPACITY {
            return Err(WireError::BadLength("entity tag longer than its field"));
        }
        let bytes = self.take(len)?;
        match len {
            0 => Ok(None),
            _ => Etag::from_bytes(bytes)
                .map(Some)
                .ok_or(WireError::BadString("entity tag")),
        }
    }

    fn accept(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            other => Err(WireError::Tag("accept", other)),
        }
    }

    fn meta(&mut self) -> Result<Meta, WireError> {
        Ok(Meta {
            status: self.status()?,
            total_len: self.u64()?,
            modified: self.time()?,
            etag: self.etag()?,
            stored_at: self.u64()?,
            lifetime: self.lifetime()?,
            identity: match self.u8()? {
                1 => Identity::File(FileVersion(self.u64()?)),
                2 => Identity::Unique(self.u64()?),
                other => return Err(WireError::Tag("identity", other)),
            },
        })
    }
}
