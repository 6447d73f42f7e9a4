//! The protocol as types: the calls a proxy makes ([`Call`]), the heads that open every
//! answer ([`Head`]) and the head of a STORE ([`StoreHead`]). Each operation is described
//! here, next to its type: what it asks, what crosses the segment and in which direction;
//! the module page of [`ipc`](super) draws each as a sequence. [`wire`](super::wire)
//! encodes exactly these and nothing else; [`client`](super::client) and
//! [`server`](super::server) are the two sides that use them.
//!
//! A call goes on the queue; everything else crosses the segment the call names. The
//! writer of a transfer first writes a head into the segment's head area, then the
//! *stream* through the slots: a header block ([`Stream::header_len`] bytes) and then body
//! bytes ([`Stream::body_len`]). The head says both lengths, so a reader knows the
//! stream's length from the head alone. A stream of zero bytes still takes one (empty)
//! chunk, so every answer is at least one handoff.

use std::fmt;
use std::num::NonZeroU64;
use std::time::{SystemTime, UNIX_EPOCH};

use super::conditions::{Conditions, Outcome};

/// One request on the queue.
///
/// `K` is how the key is held: `&str` when a proxy encodes a call (sending allocates
/// nothing), `String` once the cache has decoded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<K = String> {
    /// GET: "send me `key`, as these conditions decide." The cache writes: a `Found` head
    /// with the header block and the bytes the outcome sends, or `Expired` with the header
    /// block only, or `Missing`.
    ///
    /// An entry past its lifetime is answered `Expired` unless `allow_stale`, so the proxy
    /// can revalidate it; except an entry the cache preloaded, which the cache checks
    /// against its own file and never answers `Expired`. With `head_only` (HTTP HEAD) the
    /// answer carries no body bytes, whatever the outcome.
    Get {
        key: K,
        conditions: Conditions,
        allow_stale: bool,
        head_only: bool,
    },
    /// STORE: "keep this response under `key`" (filling the cache on a miss). The roles of
    /// the segment swap: the proxy writes a [`StoreHead`], the header block and the body;
    /// the cache reads them, and gives the last slot back once the entry is in.
    ///
    /// `len` is the body's length, so the cache can refuse a STORE too large for it before
    /// it reads anything. A cache that refuses still reads the stream off, so the proxy is
    /// never left waiting, and keeps nothing.
    Store { key: K, len: u64 },
    /// RENEW: "I found `key` unchanged at its source; make it fresh for `lifetime`, then
    /// answer as a GET with these conditions would." One call, not two, so that a
    /// revalidated hit asks the cache only once more.
    Renew {
        key: K,
        lifetime: Lifetime,
        conditions: Conditions,
        head_only: bool,
    },
    /// PURGE: "remove `key`." The cache writes a `Purged` head and one empty chunk.
    Purge { key: K },
    /// STATS: "send me your counters." The cache writes a `Stats` head and its [`Stats`]
    /// in the stream. Touches no entry, so the proxy also uses it as the probe that tells
    /// whether a cache that stopped answering answers again.
    Stats,
}

/// The operation a [`Call`] asks for, as its byte on the queue: in the order of
/// [`Call`]'s variants.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get = 1,
    Store = 2,
    Renew = 3,
    Purge = 4,
    Stats = 5,
}

impl Op {
    /// Every operation, in order.
    pub const ALL: [Op; 5] = [Op::Get, Op::Store, Op::Renew, Op::Purge, Op::Stats];

    /// The operation whose byte is `code`.
    pub fn from_code(code: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u8 == code)
    }

    /// Its name, for logs and the live view.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Store => "STORE",
            Op::Renew => "RENEW",
            Op::Purge => "PURGE",
            Op::Stats => "STATS",
        }
    }
}

impl<K: AsRef<str>> Call<K> {
    /// The key the call names (STATS names none).
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Get { key, .. }
            | Call::Store { key, .. }
            | Call::Renew { key, .. }
            | Call::Purge { key } => Some(key.as_ref()),
            Call::Stats => None,
        }
    }

    /// The operation it asks for.
    pub fn op(&self) -> Op {
        match self {
            Call::Get { .. } => Op::Get,
            Call::Store { .. } => Op::Store,
            Call::Renew { .. } => Op::Renew,
            Call::Purge { .. } => Op::Purge,
            Call::Stats => Op::Stats,
        }
    }

    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        self.op().name()
    }
}

/// What the cache writes in the segment's head area before the first chunk of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// GET, RENEW: the object is here. The stream holds its header block and then the body
    /// bytes that `outcome` sends (none for `NotModified` and `Unsatisfiable`, nor for a
    /// head-only call).
    Found { meta: Meta, outcome: Outcome },
    /// GET: the object is here but past its lifetime. The stream holds its header block
    /// only: enough to revalidate it. `accept_len` as for `Missing`: the proxy may replace
    /// it with a STORE.
    Expired { meta: Meta, accept_len: Option<u64> },
    /// GET, RENEW: no such object. `accept_len` is the largest body the cache would take in
    /// a STORE, `None` when it takes none. The stream is empty.
    Missing { accept_len: Option<u64> },
    /// PURGE: whether the object was there. The stream is empty.
    Purged { existed: bool },
    /// STATS: the stream is the cache's [`Stats`], encoded by
    /// [`wire::encode_stats`](super::wire::encode_stats).
    Stats,
    /// Any call: the cache failed to serve it (it could not read its own copy). The stream
    /// is empty; the proxy should not ask again at once.
    Failed,
}

impl Head {
    /// The stored response this head describes, if any.
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Head::Found { meta, .. } | Head::Expired { meta, .. } => Some(meta),
            _ => None,
        }
    }
}

/// What the proxy writes in the segment's head area before the stream of a STORE: the
/// response to keep, besides its header block and body (whose lengths are the
/// [`Stream`]'s). No `stored_at`: the cache's clock decides when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHead {
    /// The HTTP status of the response (200 for a file).
    pub status: u16,
    /// Last modification, whole seconds, if known.
    pub modified: Option<SystemTime>,
    /// The entity tag, quotes included, if any.
    pub etag: Option<Etag>,
    /// How long it stays fresh from when the cache stores it.
    pub lifetime: Lifetime,
    /// The file the bytes were read from, if any; without one the cache gives the entry an
    /// [`Identity::Unique`] of its own.
    pub file: Option<FileVersion>,
}

/// How a transfer's stream is made up: a header block of `header_len` bytes, then
/// `body_len` body bytes. Every head carries it, so the reader learns the stream's length
/// from the head alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stream {
    /// Bytes of header block (at most [`MAX_HEADER_BLOCK`]).
    pub header_len: u32,
    /// Body bytes after it.
    pub body_len: u64,
}

impl Stream {
    /// Bytes in all.
    pub fn len(&self) -> u64 {
        u64::from(self.header_len) + self.body_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored response as the cache answers it: what it keeps beside the header block and
/// the body.
///
/// The header block itself (end-to-end header lines, `Name: value\r\n` each) travels in
/// the stream, ahead of the body. The validators and freshness are fields of their own,
/// because the cache acts on them (conditions, expiry) and should not parse HTTP to do so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The HTTP status of the stored response (200 for a file).
    pub status: u16,
    /// Length of the whole body.
    pub total_len: u64,
    /// Last modification, whole seconds, if known.
    pub modified: Option<SystemTime>,
    /// The entity tag, quotes included (`"5f3a-15"`), if any.
    pub etag: Option<Etag>,
    /// When the object was stored or last revalidated, seconds since the Unix epoch.
    pub stored_at: u64,
    /// How long it stays fresh from `stored_at`.
    pub lifetime: Lifetime,
    /// Which bytes these are. Revalidation compares a file's; a paused response compares
    /// it before it asks for the rest, so it never splices two versions together.
    pub identity: Identity,
}

impl Meta {
    /// Seconds since the object was stored or revalidated, as of now.
    pub fn age(&self) -> u64 {
        unix_now().saturating_sub(self.stored_at)
    }

    /// Whether its lifetime has not yet passed.
    pub fn is_fresh(&self) -> bool {
        self.lifetime.covers(self.age())
    }

    /// The validators that conditions are decided on.
    pub fn validators(&self) -> super::conditions::Validators<'_> {
        super::conditions::Validators {
            len: Some(self.total_len),
            modified: self.modified,
            etag: self.etag.as_ref().map(Etag::as_str),
        }
    }
}

/// How long a stored response stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Never fresh: every use must be validated first (`Cache-Control: no-cache`, a
    /// response already as old as its freshness lifetime, `--ttl 0`).
    MustValidate,
    /// Fresh for this many seconds.
    Seconds(NonZeroU64),
}

impl Lifetime {
    /// `secs` seconds; 0 is [`MustValidate`](Lifetime::MustValidate).
    pub fn from_secs(secs: u64) -> Lifetime {
        NonZeroU64::new(secs).map_or(Lifetime::MustValidate, Lifetime::Seconds)
    }

    /// Its length in seconds (0 for `MustValidate`).
    pub fn secs(self) -> u64 {
        match self {
            Lifetime::MustValidate => 0,
            Lifetime::Seconds(n) => n.get(),
        }
    }

    /// Whether an object `age` seconds old is still within it.
    pub fn covers(self, age: u64) -> bool {
        age < self.secs()
    }

    /// This lifetime with `secs` seconds more (the grace of `stale-if-error`).
    pub fn extended(self, secs: u64) -> Lifetime {
        Lifetime::from_secs(self.secs().saturating_add(secs))
    }
}

/// Which bytes a stored response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Read from a file, whose [`FileVersion`] it was then.
    File(FileVersion),
    /// From no file (an origin's response): a number the cache drew for this entry alone.
    Unique(u64),
}

/// An opaque identity of a file's contents as `stat` saw them (see
/// [`crate::file::version`]): the same number while the file is unchanged, another once
/// it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileVersion(pub u64);

/// The cache's answer to STATS: its counters and what each of its workers is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The cache's pid: the one in the head that carried the answer.
    pub pid: u32,
    /// Named counters (`hits`, `objects`, ...), lowercase ASCII and `_`, in the cache's
    /// order.
    pub counters: Vec<(String, u64)>,
    /// One per worker: the call it serves (its key empty for STATS), `None` when idle.
    pub workers: Vec<Option<(Op, String)>>,
}

/// The largest header block a stored response may have: far more than any file's three
/// headers, and small enough that the proxy can hold one per response in memory.
pub const MAX_HEADER_BLOCK: u32 = 16 * 1024;

/// Bytes reserved for an entity tag, quotes included.
pub const ETAG_CAPACITY: usize = 128;

/// An entity tag as it crosses the channel: up to [`ETAG_CAPACITY`] bytes of printable
/// ASCII, held inline so that passing one along allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Etag {
    bytes: [u8; ETAG_CAPACITY],
    len: u8,
}

const _: () = assert!(ETAG_CAPACITY <= u8::MAX as usize);

impl Etag {
    /// `None` when `tag` is empty, too long, or not printable ASCII (it could not go into an
    /// HTTP header).
    pub fn new(tag: &str) -> Option<Etag> {
        Etag::from_bytes(tag.as_bytes())
    }

    pub(super) fn from_bytes(tag: &[u8]) -> Option<Etag> {
        let printable = tag.iter().all(|b| (0x21..0x7f).contains(b));
        if tag.is_empty() || tag.len() > ETAG_CAPACITY || !printable {
            return None;
        }
        let mut bytes = [0; ETAG_CAPACITY];
        bytes[..tag.len()].copy_from_slice(tag);
        Some(Etag {
            bytes,
            len: tag.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("checked ASCII")
    }
}

impl fmt::Debug for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

/// Seconds since the Unix epoch: the clock that `stored_at` is on.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A time as whole seconds since the Unix epoch, as it crosses the channel (0: unknown).
pub(super) fn to_secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Checks a header block a peer sent: lines of `name: value` ending in CRLF, a token for
/// a name, visible ASCII, spaces, tabs and obs-text (0x80 to 0xFF) for a value. A CR, an
/// LF or another control character could split the
/// response the proxy writes from it, so the whole answer is refused.
pub fn valid_header_block(block: &[u8]) -> bool {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    // A field value's octets (RFC 9110 §5.5): visible ASCII, space, tab, and obs-text
    // (0x80 to 0xFF), which an intermediary passes on as it came.
    let is_vchar = |b: u8| (0x20..0x7f).contains(&b) || b == b'\t' || b >= 0x80;
    let mut rest = block;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let line = &rest[..end];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty()
            || !name.iter().all(|&b| is_tchar(b))
            || !value.iter().all(|&b| is_vchar(b))
        {
            return false;
        }
        rest = &rest[end + 2..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        assert!(valid_header_block(b""));
        assert!(valid_header_block(
            b"Content-Type: text/html\r\nETag: \"1-2\"\r\n"
        ));
        // obs-text is a field value's too, and goes on as it came.
        assert!(valid_header_block(
            b"X-Obs: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n"
        ));
        for bad in [
            &b"Content-Type: text/html"[..],
            b"X: a\rb\r\n",
            b"X: a\nb\r\n",
            b": empty name\r\n",
            b"Bad Name: x\r\n",
            b"X: \x00\r\n",
            b"X: \x7f\r\n",
            b"X: \r\n\r\nHTTP/1.1 200 OK\r\n",
        ] {
            assert!(
                !valid_header_block(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
