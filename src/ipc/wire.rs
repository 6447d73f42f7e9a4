//! The bytes of the protocol: a [`Call`] as a message on the queue, and a [`Head`] as it
//! sits in a segment's head area. Both are encoded field after field, in native byte order
//! (both ends run on one host), by one small writer and read back by one small reader that
//! refuses anything short, long or out of range.
//!
//! # A message on the queue
//!
//! Only the bytes a call uses are sent: a GET for `/index.html` is about 60 bytes, not the
//! 8 KiB the queue allows.
//!
//! | field        | encoding   | meaning                                                  |
//! |--------------|------------|----------------------------------------------------------|
//! | `magic`      | u32        | `"SHMQ"` big-endian: this is our message                  |
//! | `version`    | u16        | [`WIRE_VERSION`]; anything else is refused               |
//! | `op`         | u8         | 1 GET, 2 STORE, 3 STATS, 4 RENEW, 5 PURGE                |
//! | `generation` | u64        | the segment's generation at checkout (never 0)           |
//! | `segment`    | u8 + bytes | the segment's name                                       |
//! | then, by op: |            |                                                          |
//! | GET          | key, flags u8, conditions | flags: 1 allow stale, 2 head only          |
//! | STORE        | key, u64 len | the body's length                                      |
//! | RENEW        | key, u64 max_age, flags u8, conditions | flags: 2 head only            |
//! | PURGE        | key        |                                                          |
//! | STATS        | nothing    |                                                          |
//!
//! A key is a u16 length and at most [`MAX_KEY_LEN`] bytes of UTF-8 starting with `/`.
//! Conditions are four optional parts, each behind a tag byte (0: absent): `If-None-Match`
//! (1 `*`, or 2 and a count and up to [`MAX_TAGS`] entity tags), `If-Modified-Since` (1 and
//! u64 seconds), `Range` (1 `a-b`, 2 `a-`, 3 `-n`, with their u64s) and `If-Range` (1 and a
//! tag, or 2 and u64 seconds). A message must end exactly where its last field does.
//!
//! # A head in the segment
//!
//! | field        | encoding | meaning                                                    |
//! |--------------|----------|------------------------------------------------------------|
//! | `kind`       | u8       | 0 none yet, 1 Found, 2 Expired, 3 Missing, 4 Purged, 5 Stats, 6 Store, 7 Failed |
//! | `generation` | u64      | the generation the writer was serving                      |
//! | `pid`        | u32      | the writer's process id, so the reader can watch it        |
//! | then, by kind: | | Found: meta, outcome; Expired: meta, u64 accept_len; Missing: u64 accept_len; Purged: u8; Stats: u64 len; Store: meta |
//! | meta         | | u16 status, u64 total_len, u32 header_len, u64 modified, tag etag, u64 stored_at, u64 max_age, u64 source_version |
//! | outcome      | | u8: 1 full, 2 partial (u64 start, u64 len), 3 not modified, 4 unsatisfiable |
//!
//! Strings (the segment name, entity tags) are a u8 length and their bytes; entity tags are
//! printable ASCII, so that they can go into an HTTP header as they are.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use super::call::{Call, ETAG_CAPACITY, Etag, Head, MAX_HEADER_BLOCK, Meta, to_secs};
use super::conditions::{ByteRange, Conditions, IfRange, Outcome, TagList};

/// "SHMQ".
pub const WIRE_MAGIC: u32 = u32::from_be_bytes(*b"SHMQ");
/// Version 5: typed calls of variable length, and heads that carry a stored response's
/// status and header block. (2 added suffix ranges, 3 STORE and STATS, 4 RENEW and PURGE.)
pub const WIRE_VERSION: u16 = 5;
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
        }
    }
}

impl std::error::Error for WireError {}

const GET: u8 = 1;
const STORE: u8 = 2;
const STATS: u8 = 3;
const RENEW: u8 = 4;
const PURGE: u8 = 5;

const ALLOW_STALE: u8 = 1;
const HEAD_ONLY: u8 = 2;

impl<S: AsRef<str>> Message<S> {
    /// Encodes the call. Refuses what the other side would refuse: a key without its
    /// leading '/', strings with NUL or too long, a message past [`MESSAGE_CAPACITY`].
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u32(WIRE_MAGIC);
        w.u16(WIRE_VERSION);
        let op = match &self.call {
            Call::Get { .. } => GET,
            Call::Store { .. } => STORE,
            Call::Stats => STATS,
            Call::Renew { .. } => RENEW,
            Call::Purge { .. } => PURGE,
        };
        w.u8(op);
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
                w.u8(flag(*allow_stale, ALLOW_STALE) | flag(*head_only, HEAD_ONLY));
                w.conditions(conditions)?;
            }
            Call::Store { len, .. } => w.u64(*len),
            Call::Renew {
                max_age,
                conditions,
                head_only,
                ..
            } => {
                w.u64(*max_age);
                w.u8(flag(*head_only, HEAD_ONLY));
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
        let op = r.u8()?;
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
            GET => {
                let key = key()?;
                let flags = r.flags(ALLOW_STALE | HEAD_ONLY)?;
                Call::Get {
                    key,
                    allow_stale: flags & ALLOW_STALE != 0,
                    head_only: flags & HEAD_ONLY != 0,
                    conditions: r.conditions()?,
                }
            }
            STORE => Call::Store {
                key: key()?,
                len: r.u64()?,
            },
            RENEW => {
                let key = key()?;
                let max_age = r.u64()?;
                let flags = r.flags(HEAD_ONLY)?;
                Call::Renew {
                    key,
                    max_age,
                    head_only: flags & HEAD_ONLY != 0,
                    conditions: r.conditions()?,
                }
            }
            PURGE => Call::Purge { key: key()? },
            STATS => Call::Stats,
            other => return Err(WireError::Op(other)),
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

const FOUND: u8 = 1;
const EXPIRED: u8 = 2;
const MISSING: u8 = 3;
const PURGED: u8 = 4;
const STATS_HEAD: u8 = 5;
const STORE_HEAD: u8 = 6;
const FAILED: u8 = 7;

/// A head as a writer put it: what it answers, the generation it served, who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub head: Head,
    pub generation: u64,
    pub pid: u32,
}

/// Encodes `head` for the transfer numbered `generation`, written by this process.
pub fn encode_head(head: &Head, generation: u64) -> [u8; HEAD_CAPACITY] {
    let mut w = Writer(Vec::with_capacity(HEAD_CAPACITY));
    let kind = match head {
        Head::Found { .. } => FOUND,
        Head::Expired { .. } => EXPIRED,
        Head::Missing { .. } => MISSING,
        Head::Purged { .. } => PURGED,
        Head::Stats { .. } => STATS_HEAD,
        Head::Store { .. } => STORE_HEAD,
        Head::Failed => FAILED,
    };
    w.u8(kind);
    w.u64(generation);
    w.u32(super::process::own_pid());
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
            w.u64(*accept_len);
        }
        Head::Missing { accept_len } => w.u64(*accept_len),
        Head::Purged { existed } => w.u8(u8::from(*existed)),
        Head::Stats { len } => w.u64(*len),
        Head::Store { meta } => w.meta(meta),
        Head::Failed => {}
    }
    let mut out = [0u8; HEAD_CAPACITY];
    // A Found head with the longest entity tag takes 206 bytes.
    out[..w.0.len()].copy_from_slice(&w.0);
    out
}

/// Decodes and validates the head area a peer wrote: a known kind, lengths inside the
/// object, a header block within [`MAX_HEADER_BLOCK`], an entity tag that can go into an
/// HTTP header. Bytes after the head are ignored (the area has a fixed size). `None` for a
/// head area nobody has written since the transfer began.
pub fn decode_head(bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
    let mut r = Reader(bytes);
    let kind = r.u8()?;
    if kind == 0 {
        return Ok(None);
    }
    let generation = r.u64()?;
    let pid = r.u32()?;
    let head = match kind {
        FOUND => {
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
            Head::Found { meta, outcome }
        }
        EXPIRED => Head::Expired {
            meta: r.meta()?,
            accept_len: r.u64()?,
        },
        MISSING => Head::Missing {
            accept_len: r.u64()?,
        },
        PURGED => Head::Purged {
            existed: match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(WireError::Tag("purged", other)),
            },
        },
        STATS_HEAD => Head::Stats { len: r.u64()? },
        STORE_HEAD => Head::Store { meta: r.meta()? },
        FAILED => Head::Failed,
        other => return Err(WireError::Tag("head kind", other)),
    };
    Ok(Some(Envelope {
        head,
        generation,
        pid,
    }))
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

    fn meta(&mut self, m: &Meta) {
        self.u16(m.status);
        self.u64(m.total_len);
        self.u32(m.header_len);
        self.u64(to_secs(m.modified));
        let etag = m.etag.as_ref().map_or("", Etag::as_str);
        self.u8(etag.len() as u8);
        self.0.extend_from_slice(etag.as_bytes());
        self.u64(m.stored_at);
        self.u64(m.max_age);
        self.u64(m.source_version);
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

    /// As [`date`](Self::date), 0 meaning unknown.
    fn time(&mut self) -> Result<Option<std::time::SystemTime>, WireError> {
        let at = self.date()?;
        Ok((at != UNIX_EPOCH).then_some(at))
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

    fn meta(&mut self) -> Result<Meta, WireError> {
        let status = self.u16()?;
        let total_len = self.u64()?;
        let header_len = self.u32()?;
        let modified = self.time()?;
        let etag_len = self.u8()? as usize;
        if etag_len > ETAG_CAPACITY {
            return Err(WireError::BadLength("entity tag longer than its field"));
        }
        let etag_bytes = self.take(etag_len)?;
        let etag = match etag_len {
            0 => None,
            _ => Some(Etag::from_bytes(etag_bytes).ok_or(WireError::BadString("entity tag"))?),
        };
        if !(100..=999).contains(&status) {
            return Err(WireError::BadLength("status outside 100..=999"));
        }
        if header_len > MAX_HEADER_BLOCK {
            return Err(WireError::BadLength("header block too long"));
        }
        Ok(Meta {
            status,
            total_len,
            header_len,
            modified,
            etag,
            stored_at: self.u64()?,
            max_age: self.u64()?,
            source_version: self.u64()?,
        })
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

    fn owned(m: Message<&str>) -> Message {
        let call = match m.call {
            Call::Get {
                key,
                conditions,
                allow_stale,
                head_only,
            } => Call::Get {
                key: key.to_owned(),
                conditions,
                allow_stale,
                head_only,
            },
            Call::Store { key, len } => Call::Store {
                key: key.to_owned(),
                len,
            },
            Call::Renew {
                key,
                max_age,
                conditions,
                head_only,
            } => Call::Renew {
                key: key.to_owned(),
                max_age,
                conditions,
                head_only,
            },
            Call::Purge { key } => Call::Purge {
                key: key.to_owned(),
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
                    max_age: 60,
                    conditions: Conditions::default(),
                    head_only: true,
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
            assert_eq!(Message::decode(&bytes).unwrap(), owned(m.clone()));
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

    fn meta() -> Meta {
        Meta {
            status: 200,
            total_len: 100,
            header_len: 40,
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            etag: Etag::new(&format!("\"{}\"", "e".repeat(ETAG_CAPACITY - 2))),
            stored_at: 5,
            max_age: u64::MAX,
            source_version: 9,
        }
    }

    #[test]
    fn heads_round_trip_and_fit_their_area() {
        for head in [
            Head::Found {
                meta: meta(),
                outcome: Outcome::Partial { start: 10, len: 90 },
            },
            Head::Found {
                meta: meta(),
                outcome: Outcome::NotModified,
            },
            Head::Expired {
                meta: meta(),
                accept_len: 4,
            },
            Head::Missing { accept_len: 0 },
            Head::Purged { existed: true },
            Head::Stats { len: 12 },
            Head::Store { meta: meta() },
            Head::Failed,
        ] {
            let bytes = encode_head(&head, 3);
            let env = decode_head(&bytes).unwrap().unwrap();
            assert_eq!((env.head, env.generation), (head, 3));
            assert_eq!(env.pid, std::process::id());
        }
        assert_eq!(decode_head(&[0u8; HEAD_CAPACITY]), Ok(None));
    }

    #[test]
    fn heads_that_cannot_be_right_are_refused() {
        let partial = |start, len| Head::Found {
            meta: meta(),
            outcome: Outcome::Partial { start, len },
        };
        for head in [partial(90, 11), partial(u64::MAX, 2), partial(0, 0)] {
            assert!(decode_head(&encode_head(&head, 1)).is_err(), "{head:?}");
        }
        let mut bytes = encode_head(&Head::Store { meta: meta() }, 1);
        // kind, generation, pid, status: then total_len; header_len after it.
        bytes[1 + 8 + 4 + 2 + 8..][..4].copy_from_slice(&(MAX_HEADER_BLOCK + 1).to_ne_bytes());
        assert!(decode_head(&bytes).is_err());
        let mut bytes = encode_head(&Head::Store { meta: meta() }, 1);
        bytes[1 + 8 + 4 + 2 + 8 + 4 + 8 + 1] = b'\n'; // inside the entity tag
        assert!(decode_head(&bytes).is_err());
        let mut bytes = encode_head(&Head::Failed, 1);
        bytes[0] = 99;
        assert!(decode_head(&bytes).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives on the queue, decoding returns a verdict and never panics.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(&bytes);
        }

        /// Whatever a peer writes into the head area, decoding never panics, and a head
        /// that decodes keeps its body inside the object and its strings printable.
        #[test]
        fn head_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEAD_CAPACITY)) {
            if let Ok(Some(env)) = decode_head(&bytes) {
                if let Head::Found { meta, outcome } = &env.head {
                    prop_assert!(outcome.body_range(meta.total_len).is_none_or(|(s, l)| s + l <= meta.total_len));
                }
                if let Some(meta) = env.head.meta() {
                    prop_assert!(meta.header_len <= MAX_HEADER_BLOCK);
                }
            }
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
                    Call::Renew { key, max_age, conditions, head_only } => Call::Renew { key: key.as_str(), max_age: *max_age, conditions: conditions.clone(), head_only: *head_only },
                    Call::Purge { key } => Call::Purge { key: key.as_str() },
                    Call::Stats => Call::Stats,
                }};
                prop_assert_eq!(again.encode().unwrap(), bytes);
            }
        }
    }
}
