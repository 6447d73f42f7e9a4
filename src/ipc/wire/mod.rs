//! The bytes of the protocol: a [`Call`] as a message on the queue, a [`Head`](super::Head) or a
//! [`StoreHead`](super::StoreHead) as it sits in a segment's head area, and the [`Stats`](super::Stats) a STATS answer
//! streams. All are encoded field after field, in native byte order (both ends run on one
//! host), with no padding, by one small writer and read back by one small reader that
//! refuses anything short, long or out of range. `examples/c/shmcache.h` is the same
//! format in C.
//!
//! # Field encodings
//!
//! | name     | bytes                                                              |
//! |----------|--------------------------------------------------------------------|
//! | u8 … u64 | native byte order, no alignment                                    |
//! | str8     | u8 length, then that many bytes of UTF-8 without NUL               |
//! | key      | u16 length (at most [`MAX_KEY_LEN`]), UTF-8 without NUL, starts with `/` |
//! | tag      | str8 of 1 to [`ETAG_CAPACITY`](super::ETAG_CAPACITY) bytes of printable ASCII (0x21–0x7e) |
//! | time     | u8: 0 unknown, or 1 and u64 seconds since the Unix epoch           |
//! | lifetime | u8: 1 must validate, or 2 and u64 seconds (at least 1)             |
//!
//! # A message on the queue
//!
//! Only the bytes a call uses are sent: a GET for `/index.html` is about 60 bytes, not the
//! 8 KiB the queue allows. A message must end exactly where its last field does.
//!
//! | field        | encoding   | meaning                                                  |
//! |--------------|------------|----------------------------------------------------------|
//! | `magic`      | u32        | `"SHMQ"` read as a big-endian number ([`WIRE_MAGIC`]), written in native order |
//! | `version`    | u16        | [`WIRE_VERSION`]; anything else is refused               |
//! | `op`         | u8         | [`Op`]: 1 GET, 2 STORE, 3 RENEW, 4 PURGE, 5 STATS        |
//! | `generation` | u64        | the segment's generation at checkout (never 0)           |
//! | `segment`    | str8       | the segment's name, `/NAME.seg.<pid>.<i>`                |
//! | then, by op: |            |                                                          |
//! | GET          | key, u8 flags, conditions | flags: 1 allow stale, 2 head only; no other bit |
//! | STORE        | key, u64 len | the body's length                                      |
//! | RENEW        | key, lifetime, u8 flags, conditions | flags: 2 head only; no other bit |
//! | PURGE        | key        |                                                          |
//! | STATS        | nothing    |                                                          |
//!
//! Conditions are four parts in this order, each behind a tag byte (0: absent):
//! `If-None-Match` (1 `*`; or 2, a u8 count from 1 to [`MAX_TAGS`] and that many tags),
//! `If-Modified-Since` (1 and u64 seconds), `Range` (1 `a-b` with two u64s, b ≥ a; 2 `a-`
//! with one; 3 `-n` with one) and `If-Range` (1 and a tag, or 2 and u64 seconds). A plain
//! GET's conditions are four zero bytes.
//!
//! # A head in the segment
//!
//! The head area is [`HEAD_CAPACITY`] bytes; a head fills its start and the rest is
//! ignored. Every head begins the same way:
//!
//! | field        | encoding | meaning                                                    |
//! |--------------|----------|------------------------------------------------------------|
//! | `kind`       | u8       | 0 none yet, 1 Found, 2 Expired, 3 Missing, 4 Purged, 5 Stats, 6 Failed (the cache's [`Head`](super::Head)); 7 Store (the proxy's [`StoreHead`](super::StoreHead)) |
//! | `generation` | u64      | the generation the writer was serving                      |
//! | `pid`        | u32      | the writer's process id, so the reader can watch it        |
//! | `header_len` | u32      | [`Stream::header_len`](super::Stream::header_len): header block bytes, at most [`MAX_HEADER_BLOCK`](super::MAX_HEADER_BLOCK) |
//! | `body_len`   | u64      | [`Stream::body_len`](super::Stream::body_len): body bytes after the header block    |
//!
//! then, by kind:
//!
//! | kind    | fields                          | the stream must be                        |
//! |---------|---------------------------------|-------------------------------------------|
//! | Found   | meta, outcome                   | body_len 0 (head only, 304, 416) or the outcome's length |
//! | Expired | meta, accept                    | header block only                         |
//! | Missing | accept                          | empty                                     |
//! | Purged  | u8 existed (0 or 1)             | empty                                     |
//! | Stats   | nothing                         | no header block; body_len at most [`MAX_STATS_LEN`] |
//! | Failed  | nothing                         | empty                                     |
//! | Store   | u16 status, time modified, tag-or-0 etag, lifetime, u8 file (0 none, or 1 and u64 [`FileVersion`](super::FileVersion)) | header block and the whole body |
//!
//! | part     | encoding                                                                |
//! |----------|-------------------------------------------------------------------------|
//! | meta     | u16 status (100–999), u64 total_len, time modified, tag-or-0 etag, u64 stored_at, lifetime, identity |
//! | tag-or-0 | a u8 length of 0 (no tag) or a tag                                     |
//! | identity | u8: 1 and u64 [`FileVersion`](super::FileVersion), or 2 and a u64 unique to the entry      |
//! | accept   | u8: 0 the cache takes no STORE, or 1 and u64: the largest body it takes |
//! | outcome  | u8: 1 full, 2 partial (u64 start, u64 len: len ≥ 1, inside total_len), 3 not modified, 4 unsatisfiable |
//!
//! # The STATS stream
//!
//! | field     | encoding                                                              |
//! |-----------|-----------------------------------------------------------------------|
//! | counters  | u16 count, then per counter: str8 name (`[a-z0-9_]`, not empty), u64 value |
//! | workers   | u16 count, then per worker: u8 [`Op`] of its call (0: idle) and, unless idle, a u16-length key (empty for STATS) |
//!
//! The stream must end where the last worker does.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use super::call::{Call, Etag, Lifetime, Op, to_secs};
use super::conditions::{ByteRange, Conditions, IfRange, TagList};

mod head;
mod stats;

pub use head::{Envelope, HeadFormat, decode_head, encode_head};
pub use stats::{decode_stats, encode_stats};

/// "SHMQ".
pub const WIRE_MAGIC: u32 = u32::from_be_bytes(*b"SHMQ");
/// Version 6: the stream's lengths in every head, typed lifetimes, identities and STORE
/// acceptance, a head of its own for STORE, op codes in the order of [`Call`], and STATS
/// as encoded counters. (2 added suffix ranges, 3 STORE and STATS, 4 RENEW and PURGE, 5
/// typed calls of variable length.)
pub const WIRE_VERSION: u16 = 6;
/// The largest message: the queue's message size, within the kernel's default
/// `msgsize_max` of 8192 for unprivileged processes.
pub const MESSAGE_CAPACITY: usize = 8192;
/// The longest key a call can carry.
pub const MAX_KEY_LEN: usize = 4095;
/// The most entity tags an `If-None-Match` carries across; a request with more is asked
/// with the first ones, which can only turn a 304 into a 200, never the reverse.
pub const MAX_TAGS: usize = 16;
/// Bytes of a segment's head area: the largest head (Found with a full entity tag) fits.
pub const HEAD_CAPACITY: usize = 256;
/// The longest STATS stream a reader accepts.
pub const MAX_STATS_LEN: u64 = 1 << 20;

/// GET and RENEW flags.
pub const FLAG_ALLOW_STALE: u8 = 1;
pub const FLAG_HEAD_ONLY: u8 = 2;

/// Head kinds: the byte that opens a head (0: none written yet).
pub mod kind {
    pub const FOUND: u8 = 1;
    pub const EXPIRED: u8 = 2;
    pub const MISSING: u8 = 3;
    pub const PURGED: u8 = 4;
    pub const STATS: u8 = 5;
    pub const FAILED: u8 = 6;
    pub const STORE: u8 = 7;
}

/// Bytes of the part every head begins with: kind, generation, pid, header_len, body_len.
pub const HEAD_PREFIX_LEN: usize = 1 + 8 + 4 + 4 + 8;

/// A call to one segment: what a message on the queue carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<S = String> {
    /// The segment the answer goes through (and, for STORE, the object comes through).
    pub segment: S,
    /// The segment's generation at checkout: the cache serves only this transfer.
    pub generation: u64,
    pub call: Call<S>,
}

/// Why bytes were refused. Each names the first rule they broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end before the fields do.
    Short,
    /// Bytes are left after the last field.
    Trailing(usize),
    Magic(u32),
    Version(u16),
    Op(u8),
    /// A tag byte (flags, a condition's kind, a head's kind) out of range.
    Tag(&'static str, u8),
    /// A string is not UTF-8, holds a NUL or is not allowed there.
    BadString(&'static str),
    /// The key is empty or does not start with '/'.
    BadKey,
    /// A string is too long to encode, or the whole message.
    TooLong(&'static str),
    /// Lengths in a head that cannot be right.
    BadLength(&'static str),
    /// A head of the other side's kind: a STORE head where an answer was due, or the
    /// reverse.
    Unexpected(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Short => write!(f, "message ends before its fields"),
            WireError::Trailing(n) => write!(f, "{n} bytes after the last field"),
            WireError::Magic(m) => write!(f, "bad magic {m:#010x}"),
            WireError::Version(v) => write!(f, "unknown version {v}"),
            WireError::Op(op) => write!(f, "unknown operation {op}"),
            WireError::Tag(field, v) => write!(f, "unknown {field} {v}"),
            WireError::BadString(field) => write!(f, "malformed {field}"),
            WireError::BadKey => write!(f, "key must start with '/'"),
            WireError::TooLong(field) => write!(f, "{field} too long"),
            WireError::BadLength(why) => write!(f, "{why}"),
            WireError::Unexpected(kind) => write!(f, "a head of kind {kind} where none is due"),
        }
    }
}

impl std::error::Error for WireError {}

impl<S: AsRef<str>> Message<S> {
    /// Encodes the call. Refuses what the other side would refuse: a key without its
    /// leading '/', strings with NUL or too long, a message past [`MESSAGE_CAPACITY`].
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(WIRE_MAGIC);
        w.u16(WIRE_VERSION);
        w.u8(self.call.op() as u8);
        w.u64(self.generation);
        w.str8(self.segment.as_ref(), "segment")?;
        if let Some(key) = self.call.key() {
            if !key.starts_with('/') {
                return Err(WireError::BadKey);
            }
            if key.len() > MAX_KEY_LEN {
                return Err(WireError::TooLong("key"));
            }
            w.str16(key, "key")?;
        }
        match &self.call {
            Call::Get {
                conditions,
                allow_stale,
                head_only,
                ..
            } => {
                w.u8(flag(*allow_stale, FLAG_ALLOW_STALE) | flag(*head_only, FLAG_HEAD_ONLY));
                w.conditions(conditions)?;
            }
            Call::Store { len, .. } => w.u64(*len),
            Call::Renew {
                lifetime,
                conditions,
                head_only,
                ..
            } => {
                w.lifetime(*lifetime);
                w.u8(flag(*head_only, FLAG_HEAD_ONLY));
                w.conditions(conditions)?;
            }
            Call::Purge { .. } | Call::Stats => {}
        }
        if w.0.len() > MESSAGE_CAPACITY {
            return Err(WireError::TooLong("message"));
        }
        Ok(w.0)
    }
}

impl Message {
    /// Decodes and validates one message. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader(bytes);
        let magic = r.u32()?;
        if magic != WIRE_MAGIC {
            return Err(WireError::Magic(magic));
        }
        let version = r.u16()?;
        if version != WIRE_VERSION {
            return Err(WireError::Version(version));
        }
        let code = r.u8()?;
        let op = Op::from_code(code).ok_or(WireError::Op(code))?;
        let generation = r.u64()?;
        let segment = r.str8("segment")?.to_owned();
        let mut key = || -> Result<String, WireError> {
            let key = r.str16("key")?;
            if !key.starts_with('/') {
                return Err(WireError::BadKey);
            }
            Ok(key.to_owned())
        };
        let call = match op {
            Op::Get => {
                let key = key()?;
                let flags = r.flags(FLAG_ALLOW_STALE | FLAG_HEAD_ONLY)?;
                Call::Get {
                    key,
                    allow_stale: flags & FLAG_ALLOW_STALE != 0,
                    head_only: flags & FLAG_HEAD_ONLY != 0,
                    conditions: r.conditions()?,
                }
            }
            Op::Store => Call::Store {
                key: key()?,
                len: r.u64()?,
            },
            Op::Renew => {
                let key = key()?;
                let lifetime = r.lifetime()?;
                let flags = r.flags(FLAG_HEAD_ONLY)?;
                Call::Renew {
                    key,
                    lifetime,
                    head_only: flags & FLAG_HEAD_ONLY != 0,
                    conditions: r.conditions()?,
                }
            }
            Op::Purge => Call::Purge { key: key()? },
            Op::Stats => Call::Stats,
        };
        r.end()?;
        Ok(Message {
            segment,
            generation,
            call,
        })
    }
}

fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

/// Appends fields to a message.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }

    fn str8(&mut self, s: &str, field: &'static str) -> Result<(), WireError> {
        let len = u8::try_from(s.len()).map_err(|_| WireError::TooLong(field))?;
        if s.contains('\0') {
            return Err(WireError::BadString(field));
        }
        self.u8(len);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn str16(&mut self, s: &str, field: &'static str) -> Result<(), WireError> {
        let len = u16::try_from(s.len()).map_err(|_| WireError::TooLong(field))?;
        if s.contains('\0') {
            return Err(WireError::BadString(field));
        }
        self.u16(len);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn tag(&mut self, tag: &str) -> Result<(), WireError> {
        if Etag::new(tag).is_none() {
            return Err(WireError::BadString("entity tag"));
        }
        self.str8(tag, "entity tag")
    }

    fn conditions(&mut self, c: &Conditions) -> Result<(), WireError> {
        match &c.if_none_match {
            None => self.u8(0),
            Some(TagList::Any) => self.u8(1),
            Some(TagList::Tags(tags)) => {
                self.u8(2);
                let tags = &tags[..tags.len().min(MAX_TAGS)];
                self.u8(tags.len() as u8);
                for tag in tags {
                    self.tag(tag)?;
                }
            }
        }
        match c.if_modified_since {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.u64(to_secs(Some(t)));
            }
        }
        match c.range {
            None => self.u8(0),
            Some(ByteRange::FromTo(a, b)) => {
                self.u8(1);
                self.u64(a);
                self.u64(b);
            }
            Some(ByteRange::From(a)) => {
                self.u8(2);
                self.u64(a);
            }
            Some(ByteRange::Last(n)) => {
                self.u8(3);
                self.u64(n);
            }
        }
        match &c.if_range {
            None => self.u8(0),
            Some(IfRange::Tag(tag)) => {
                self.u8(1);
                self.tag(tag)?;
            }
            Some(IfRange::Date(t)) => {
                self.u8(2);
                self.u64(to_secs(Some(*t)));
            }
        }
        Ok(())
    }

    fn lifetime(&mut self, lifetime: Lifetime) {
        match lifetime {
            Lifetime::MustValidate => self.u8(1),
            Lifetime::Seconds(n) => {
                self.u8(2);
                self.u64(n.get());
            }
        }
    }
}

/// Takes fields off the front of received bytes, refusing any that run past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short);
        }
        let (field, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(field)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_ne_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_ne_bytes)
    }

    fn text(bytes: &'a [u8], field: &'static str) -> Result<&'a str, WireError> {
        let s = std::str::from_utf8(bytes).map_err(|_| WireError::BadString(field))?;
        if s.contains('\0') {
            return Err(WireError::BadString(field));
        }
        Ok(s)
    }

    fn str8(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let len = self.u8()? as usize;
        Self::text(self.take(len)?, field)
    }

    fn str16(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let len = self.u16()? as usize;
        if len > MAX_KEY_LEN {
            return Err(WireError::TooLong(field));
        }
        Self::text(self.take(len)?, field)
    }

    fn flags(&mut self, allowed: u8) -> Result<u8, WireError> {
        let flags = self.u8()?;
        if flags & !allowed != 0 {
            return Err(WireError::Tag("flags", flags));
        }
        Ok(flags)
    }

    fn tag(&mut self) -> Result<String, WireError> {
        let tag = self.str8("entity tag")?;
        Etag::new(tag).ok_or(WireError::BadString("entity tag"))?;
        Ok(tag.to_owned())
    }

    /// Seconds since the Unix epoch, refused past what `SystemTime` can hold.
    fn date(&mut self) -> Result<std::time::SystemTime, WireError> {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.u64()?))
            .ok_or(WireError::BadLength("a time out of range"))
    }

    fn conditions(&mut self) -> Result<Conditions, WireError> {
        let if_none_match = match self.u8()? {
            0 => None,
            1 => Some(TagList::Any),
            2 => {
                let n = self.u8()? as usize;
                if n == 0 || n > MAX_TAGS {
                    return Err(WireError::Tag("tag count", n as u8));
                }
                Some(TagList::Tags(
                    (0..n).map(|_| self.tag()).collect::<Result<_, _>>()?,
                ))
            }
            other => return Err(WireError::Tag("If-None-Match", other)),
        };
        let if_modified_since = match self.u8()? {
            0 => None,
            1 => Some(self.date()?),
            other => return Err(WireError::Tag("If-Modified-Since", other)),
        };
        let range = match self.u8()? {
            0 => None,
            1 => {
                let (a, b) = (self.u64()?, self.u64()?);
                if b < a {
                    return Err(WireError::BadLength("range ends before it starts"));
                }
                Some(ByteRange::FromTo(a, b))
            }
            2 => Some(ByteRange::From(self.u64()?)),
            3 => Some(ByteRange::Last(self.u64()?)),
            other => return Err(WireError::Tag("range", other)),
        };
        let if_range = match self.u8()? {
            0 => None,
            1 => Some(IfRange::Tag(self.tag()?)),
            2 => Some(IfRange::Date(self.date()?)),
            other => return Err(WireError::Tag("If-Range", other)),
        };
        Ok(Conditions {
            if_none_match,
            if_modified_since,
            range,
            if_range,
        })
    }

    fn lifetime(&mut self) -> Result<Lifetime, WireError> {
        match self.u8()? {
            1 => Ok(Lifetime::MustValidate),
            2 => match self.u64()? {
                0 => Err(WireError::BadLength(
                    "a lifetime of 0 seconds is must-validate",
                )),
                secs => Ok(Lifetime::from_secs(secs)),
            },
            other => Err(WireError::Tag("lifetime", other)),
        }
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::call::{
        ETAG_CAPACITY, FileVersion, Head, Identity, MAX_HEADER_BLOCK, Meta, Stats, StoreHead,
        Stream,
    };
    use crate::ipc::conditions::Outcome;

    fn get(key: &str) -> Message<&str> {
        Message {
            segment: "/t.seg.1.0",
            generation: 7,
            call: Call::Get {
                key,
                conditions: Conditions {
                    if_none_match: Some(TagList::Tags(vec!["\"a\"".into(), "\"b,c\"".into()])),
                    if_modified_since: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                    range: Some(ByteRange::FromTo(3, 9)),
                    if_range: Some(IfRange::Tag("\"a\"".into())),
                },
                allow_stale: true,
                head_only: false,
            },
        }
    }

    pub(super) fn owned(m: &Message<&str>) -> Message {
        let call = match &m.call {
            Call::Get {
                key,
                conditions,
                allow_stale,
                head_only,
            } => Call::Get {
                key: key.to_string(),
                conditions: conditions.clone(),
                allow_stale: *allow_stale,
                head_only: *head_only,
            },
            Call::Store { key, len } => Call::Store {
                key: key.to_string(),
                len: *len,
            },
            Call::Renew {
                key,
                lifetime,
                conditions,
                head_only,
            } => Call::Renew {
                key: key.to_string(),
                lifetime: *lifetime,
                conditions: conditions.clone(),
                head_only: *head_only,
            },
            Call::Purge { key } => Call::Purge {
                key: key.to_string(),
            },
            Call::Stats => Call::Stats,
        };
        Message {
            segment: m.segment.to_owned(),
            generation: m.generation,
            call,
        }
    }

    #[test]
    fn every_call_round_trips_in_the_bytes_it_needs() {
        let calls = [
            get("/dir/file.txt"),
            Message {
                call: Call::Store {
                    key: "/s",
                    len: 1 << 40,
                },
                ..get("/")
            },
            Message {
                call: Call::Renew {
                    key: "/r",
                    lifetime: Lifetime::from_secs(60),
                    conditions: Conditions::default(),
                    head_only: true,
                },
                ..get("/")
            },
            Message {
                call: Call::Renew {
                    key: "/r",
                    lifetime: Lifetime::MustValidate,
                    conditions: Conditions::default(),
                    head_only: false,
                },
                ..get("/")
            },
            Message {
                call: Call::Purge { key: "/p" },
                ..get("/")
            },
            Message {
                call: Call::Stats,
                ..get("/")
            },
        ];
        for m in calls {
            let bytes = m.encode().unwrap();
            assert_eq!(bytes[6], m.call.op() as u8);
            assert_eq!(Message::decode(&bytes).unwrap(), owned(&m));
        }
        let plain = Message {
            call: Call::Get {
                key: "/index.html",
                conditions: Conditions::default(),
                allow_stale: false,
                head_only: false,
            },
            ..get("/")
        };
        assert!(plain.encode().unwrap().len() < 64, "a plain GET is small");
    }

    #[test]
    fn op_codes_follow_the_order_of_the_calls() {
        let codes: Vec<u8> = Op::ALL.iter().map(|op| *op as u8).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
        for op in Op::ALL {
            assert_eq!(Op::from_code(op as u8), Some(op));
        }
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(6), None);
    }

    #[test]
    fn refuses_each_broken_rule() {
        let good = get("/k").encode().unwrap();
        let broken = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Message::decode(&b).unwrap_err()
        };
        assert_eq!(broken(&|b| b.truncate(20)), WireError::Short);
        assert_eq!(broken(&|b| b.push(0)), WireError::Trailing(1));
        assert!(matches!(broken(&|b| b[0] ^= 1), WireError::Magic(_)));
        assert!(matches!(broken(&|b| b[4] = 99), WireError::Version(_)));
        assert_eq!(broken(&|b| b[6] = 99), WireError::Op(99));
        // The key's first byte: magic, version, op, generation, segment (1 + 10), length.
        let key = 4 + 2 + 1 + 8 + 11 + 2;
        assert_eq!(broken(&|b| b[key] = b'x'), WireError::BadKey);
        assert_eq!(broken(&|b| b[key + 1] = 0), WireError::BadString("key"));
        assert_eq!(broken(&|b| b[key + 1] = 0xff), WireError::BadString("key"));
        assert!(matches!(
            broken(&|b| b[key + 2] = 0x80),
            WireError::Tag("flags", _)
        ));
        let renew = Message {
            call: Call::Renew {
                key: "/k",
                lifetime: Lifetime::from_secs(1),
                conditions: Conditions::default(),
                head_only: false,
            },
            ..get("/")
        }
        .encode()
        .unwrap();
        // The lifetime's tag after the key, then its seconds: 0 seconds is must-validate.
        let lifetime = 4 + 2 + 1 + 8 + 11 + 2 + 2;
        let mut zero = renew.clone();
        zero[lifetime + 1..lifetime + 9].copy_from_slice(&0u64.to_ne_bytes());
        assert!(matches!(
            Message::decode(&zero),
            Err(WireError::BadLength(_))
        ));
        let mut tag = renew;
        tag[lifetime] = 3;
        assert_eq!(Message::decode(&tag), Err(WireError::Tag("lifetime", 3)));
    }

    #[test]
    fn refuses_to_encode_what_cannot_be_decoded() {
        let long = format!("/{}", "k".repeat(MAX_KEY_LEN - 1));
        assert!(get(&long).encode().is_ok(), "the longest key fits");
        let longer = format!("{long}k");
        assert_eq!(get(&longer).encode(), Err(WireError::TooLong("key")));
        assert_eq!(get("/a\0b").encode(), Err(WireError::BadString("key")));
        assert_eq!(get("relative").encode(), Err(WireError::BadKey));
    }

    pub(super) fn meta() -> Meta {
        Meta {
            status: 200,
            total_len: 100,
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            etag: Etag::new(&format!("\"{}\"", "e".repeat(ETAG_CAPACITY - 2))),
            stored_at: 5,
            lifetime: Lifetime::from_secs(u64::MAX),
            identity: Identity::File(FileVersion(9)),
        }
    }

    fn stream(header_len: u32, body_len: u64) -> Stream {
        Stream {
            header_len,
            body_len,
        }
    }

    #[test]
    fn heads_round_trip_and_fit_their_area() {
        let unique = Meta {
            identity: Identity::Unique(u64::MAX),
            modified: None,
            etag: None,
            lifetime: Lifetime::MustValidate,
            ..meta()
        };
        for (head, stream) in [
            (
                Head::Found {
                    meta: meta(),
                    outcome: Outcome::Partial { start: 10, len: 90 },
                },
                stream(40, 90),
            ),
            (
                Head::Found {
                    meta: unique.clone(),
                    outcome: Outcome::Full,
                },
                stream(0, 100),
            ),
            (
                Head::Found {
                    meta: meta(),
                    outcome: Outcome::Full,
                },
                stream(MAX_HEADER_BLOCK, 0),
            ),
            (
                Head::Found {
                    meta: meta(),
                    outcome: Outcome::NotModified,
                },
                stream(40, 0),
            ),
            (
                Head::Expired {
                    meta: meta(),
                    accept_len: Some(4),
                },
                stream(40, 0),
            ),
            (Head::Missing { accept_len: None }, stream(0, 0)),
            (
                Head::Missing {
                    accept_len: Some(0),
                },
                stream(0, 0),
            ),
            (Head::Purged { existed: true }, stream(0, 0)),
            (Head::Stats, stream(0, 12)),
            (Head::Failed, stream(0, 0)),
        ] {
            let bytes = encode_head(&head, stream, 3);
            let env = decode_head(&bytes).unwrap().unwrap();
            assert_eq!((env.head, env.stream, env.generation), (head, stream, 3));
            assert_eq!(env.pid, std::process::id());
            assert_eq!(
                StoreHead::decode(&bytes),
                Err(WireError::Unexpected(bytes[0]))
            );
        }
        let store = StoreHead {
            status: 404,
            modified: Some(UNIX_EPOCH),
            etag: Etag::new("\"x\""),
            lifetime: Lifetime::from_secs(60),
            file: Some(FileVersion(0)),
        };
        for head in [
            store.clone(),
            StoreHead {
                file: None,
                etag: None,
                lifetime: Lifetime::MustValidate,
                modified: None,
                ..store
            },
        ] {
            let bytes = head.encode(stream(7, 1 << 40), 9);
            let env = StoreHead::decode(&bytes).unwrap().unwrap();
            assert_eq!(
                (env.head, env.stream, env.generation),
                (head, stream(7, 1 << 40), 9)
            );
            assert_eq!(decode_head(&bytes), Err(WireError::Unexpected(kind::STORE)));
        }
        assert_eq!(decode_head(&[0u8; HEAD_CAPACITY]), Ok(None));
        assert_eq!(StoreHead::decode(&[0u8; HEAD_CAPACITY]), Ok(None));
    }

    #[test]
    fn heads_that_cannot_be_right_are_refused() {
        let partial = |start, len| Head::Found {
            meta: meta(),
            outcome: Outcome::Partial { start, len },
        };
        let refused = |head: &Head, stream: Stream| {
            decode_head(&encode_head(head, stream, 1)).expect_err(&format!("{head:?} {stream:?}"))
        };
        for head in [partial(90, 11), partial(u64::MAX, 2), partial(0, 0)] {
            refused(&head, stream(0, 0));
        }
        let full = Head::Found {
            meta: meta(),
            outcome: Outcome::Full,
        };
        refused(&full, stream(MAX_HEADER_BLOCK + 1, 100));
        refused(&full, stream(0, 99));
        refused(&partial(10, 20), stream(0, 100));
        let not_modified = Head::Found {
            meta: meta(),
            outcome: Outcome::NotModified,
        };
        refused(&not_modified, stream(0, 100));
        let expired = Head::Expired {
            meta: meta(),
            accept_len: None,
        };
        refused(&expired, stream(0, 1));
        for empty in [
            Head::Missing { accept_len: None },
            Head::Purged { existed: false },
            Head::Failed,
        ] {
            refused(&empty, stream(1, 0));
            refused(&empty, stream(0, 1));
        }
        refused(&Head::Stats, stream(1, 0));
        refused(&Head::Stats, stream(0, MAX_STATS_LEN + 1));

        let mut bytes = encode_head(&full, stream(0, 100), 1);
        // The prefix, status, total_len, modified (tag and seconds), the tag's length: then
        // the entity tag.
        bytes[HEAD_PREFIX_LEN + 2 + 8 + 9 + 1] = b'\n';
        assert_eq!(decode_head(&bytes), Err(WireError::BadString("entity tag")));
        let mut bytes = encode_head(&Head::Failed, stream(0, 0), 1);
        bytes[0] = 99;
        assert_eq!(decode_head(&bytes), Err(WireError::Tag("head kind", 99)));
    }

    #[test]
    fn stats_round_trip_and_refuse_what_is_not_stats() {
        let stats = Stats {
            pid: 42,
            counters: vec![("hits".into(), 3), ("status_502".into(), u64::MAX)],
            workers: vec![
                None,
                Some((Op::Get, "/a b/ü".into())),
                Some((Op::Stats, String::new())),
            ],
        };
        let bytes = encode_stats(&stats);
        assert_eq!(decode_stats(&bytes, 42), Ok(stats));
        assert_eq!(
            decode_stats(&encode_stats(&Stats::default()), 0),
            Ok(Stats::default())
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_stats(&trailing, 42), Err(WireError::Trailing(1)));
        assert_eq!(
            decode_stats(&bytes[..bytes.len() - 1], 42),
            Err(WireError::Short)
        );
        let mut name = bytes.clone();
        name[3] = b'H'; // the first counter's first letter
        assert_eq!(
            decode_stats(&name, 42),
            Err(WireError::BadString("counter"))
        );
        let idle = 2 + (1 + 4 + 8) + (1 + 10 + 8) + 2;
        let mut op = bytes;
        op[idle] = 9;
        assert_eq!(decode_stats(&op, 42), Err(WireError::Op(9)));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::ipc::call::{
        FileVersion, Head, Identity, MAX_HEADER_BLOCK, Meta, Stats, StoreHead, Stream,
    };
    use crate::ipc::conditions::Outcome;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn lifetime() -> impl Strategy<Value = Lifetime> {
        prop_oneof![
            Just(Lifetime::MustValidate),
            any::<u64>().prop_map(Lifetime::from_secs)
        ]
    }

    fn time() -> impl Strategy<Value = Option<SystemTime>> {
        proptest::option::of((0u64..1 << 40).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)))
    }

    fn etag() -> impl Strategy<Value = Option<Etag>> {
        proptest::option::of("\"[!#-~]{0,126}\"".prop_map(|t| Etag::new(&t).unwrap()))
    }

    fn meta() -> impl Strategy<Value = Meta> {
        let identity = prop_oneof![
            any::<u64>().prop_map(|v| Identity::File(FileVersion(v))),
            any::<u64>().prop_map(Identity::Unique),
        ];
        (
            100u16..=999,
            any::<u64>(),
            time(),
            etag(),
            any::<u64>(),
            lifetime(),
            identity,
        )
            .prop_map(
                |(status, total_len, modified, etag, stored_at, lifetime, identity)| Meta {
                    status,
                    total_len,
                    modified,
                    etag,
                    stored_at,
                    lifetime,
                    identity,
                },
            )
    }

    /// A head the cache could write, with a stream that fits it.
    fn head() -> impl Strategy<Value = (Head, Stream)> {
        let header_len = 0..=MAX_HEADER_BLOCK;
        let accept = proptest::option::of(any::<u64>());
        prop_oneof![
            (
                meta(),
                header_len.clone(),
                any::<bool>(),
                any::<(u64, u64)>()
            )
                .prop_map(|(meta, header_len, head_only, (a, b))| {
                    let outcome = match (a % 4, meta.total_len) {
                        (0, _) => Outcome::Full,
                        (1, total) if total > 0 => {
                            let start = a % total;
                            Outcome::Partial {
                                start,
                                len: 1 + b % (total - start),
                            }
                        }
                        (2, _) => Outcome::NotModified,
                        _ => Outcome::Unsatisfiable,
                    };
                    let sends = outcome.body_range(meta.total_len).map_or(0, |r| r.1);
                    let body_len = if head_only { 0 } else { sends };
                    (
                        Head::Found { meta, outcome },
                        Stream {
                            header_len,
                            body_len,
                        },
                    )
                }),
            (meta(), accept.clone(), header_len).prop_map(|(meta, accept_len, header_len)| (
                Head::Expired { meta, accept_len },
                Stream {
                    header_len,
                    body_len: 0
                }
            )),
            accept.prop_map(|accept_len| (Head::Missing { accept_len }, Stream::default())),
            any::<bool>().prop_map(|existed| (Head::Purged { existed }, Stream::default())),
            (0..=MAX_STATS_LEN).prop_map(|body_len| (
                Head::Stats,
                Stream {
                    header_len: 0,
                    body_len
                }
            )),
            Just((Head::Failed, Stream::default())),
        ]
    }

    fn store_head() -> impl Strategy<Value = StoreHead> {
        (
            100u16..=999,
            time(),
            etag(),
            lifetime(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(status, modified, etag, lifetime, file)| StoreHead {
                status,
                modified,
                etag,
                lifetime,
                file: file.map(FileVersion),
            })
    }

    fn stats() -> impl Strategy<Value = Stats> {
        let op = proptest::sample::select(Op::ALL.to_vec());
        (
            any::<u32>(),
            proptest::collection::vec(("[a-z0-9_]{1,30}", any::<u64>()), 0..40),
            proptest::collection::vec(proptest::option::of((op, "(/[^\0]{0,40})?")), 0..40),
        )
            .prop_map(|(pid, counters, workers)| Stats {
                pid,
                counters,
                workers,
            })
    }

    proptest! {
        /// Whatever arrives on the queue, decoding returns a verdict and never panics.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(&bytes);
        }

        /// Whatever a peer writes into the head area, decoding never panics, and a head
        /// that decodes keeps its body inside the object and its header block in bounds.
        #[test]
        fn head_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEAD_CAPACITY)) {
            if let Ok(Some(env)) = decode_head(&bytes) {
                prop_assert!(env.stream.header_len <= MAX_HEADER_BLOCK);
                if let Head::Found { meta, outcome } = &env.head {
                    let sends = outcome.body_range(meta.total_len);
                    prop_assert!(sends.is_none_or(|(s, l)| s + l <= meta.total_len));
                    prop_assert!(env.stream.body_len <= sends.map_or(0, |r| r.1));
                }
            }
            let _ = StoreHead::decode(&bytes);
        }

        /// Every head the cache can write decodes to itself, with its stream, and fits.
        #[test]
        fn heads_round_trip((head, stream) in head(), generation in any::<u64>()) {
            let bytes = encode_head(&head, stream, generation);
            let env = decode_head(&bytes).unwrap().unwrap();
            prop_assert_eq!((env.head, env.stream, env.generation), (head, stream, generation));
        }

        /// Every STORE head the proxy can write decodes to itself.
        #[test]
        fn store_heads_round_trip(head in store_head(), header_len in 0..=MAX_HEADER_BLOCK, body_len in any::<u64>()) {
            let stream = Stream { header_len, body_len };
            let env = StoreHead::decode(&head.encode(stream, 5)).unwrap().unwrap();
            prop_assert_eq!((env.head, env.stream), (head, stream));
        }

        /// STATS round-trips, and no bytes make its decoder panic.
        #[test]
        fn stats_round_trip(stats in stats(), noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bytes = encode_stats(&stats);
            prop_assert_eq!(decode_stats(&bytes, stats.pid), Ok(stats));
            let _ = decode_stats(&noise, 0);
        }

        /// Every call round-trips, renewals with any lifetime.
        #[test]
        fn renewals_round_trip(lifetime in lifetime(), key in "/[a-z0-9/._-]{0,40}", head_only in any::<bool>()) {
            let m = Message {
                segment: "/p.seg.1.2",
                generation: 9,
                call: Call::Renew { key: key.as_str(), lifetime, conditions: Conditions::default(), head_only },
            };
            prop_assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), super::tests::owned(&m));
        }

        /// Changing any one byte of a valid message gives a valid message or a refusal;
        /// one that still decodes re-encodes to the same bytes (nothing is lost).
        #[test]
        fn one_byte_changed(at in 0usize..60, byte in any::<u8>(), key in "/[a-z0-9/._-]{0,40}") {
            let m = Message {
                segment: "/p.seg.1.2",
                generation: 9,
                call: Call::Get { key: key.as_str(), conditions: Conditions::default(), allow_stale: false, head_only: false },
            };
            let mut bytes = m.encode().unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(decoded) = Message::decode(&bytes) {
                let again = Message { segment: decoded.segment.as_str(), generation: decoded.generation, call: match &decoded.call {
                    Call::Get { key, conditions, allow_stale, head_only } => Call::Get { key: key.as_str(), conditions: conditions.clone(), allow_stale: *allow_stale, head_only: *head_only },
                    Call::Store { key, len } => Call::Store { key: key.as_str(), len: *len },
                    Call::Renew { key, lifetime, conditions, head_only } => Call::Renew { key: key.as_str(), lifetime: *lifetime, conditions: conditions.clone(), head_only: *head_only },
                    Call::Purge { key } => Call::Purge { key: key.as_str() },
                    Call::Stats => Call::Stats,
                }};
                prop_assert_eq!(again.encode().unwrap(), bytes);
            }
        }
    }
}
