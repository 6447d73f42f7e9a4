//! The request message: a fixed-size `repr(C)` record sent on the cache's queue.
//!
//! | offset | size | field        | meaning                                              |
//! |-------:|-----:|--------------|------------------------------------------------------|
//! | 0      | 4    | `magic`      | `"SHMQ"` big-endian: this is our message              |
//! | 4      | 2    | `version`    | [`WIRE_VERSION`]; anything else is refused            |
//! | 6      | 2    | `op`         | [`Op`]                                                |
//! | 8      | 8    | `generation` | the segment's generation at checkout                  |
//! | 16     | 8    | `offset`     | first byte wanted; with [`FROM_END`]: how many of the last bytes |
//! | 24     | 8    | `length`     | bytes wanted from `offset` (`u64::MAX`: to the end; 0: head only) |
//! | 32     | 4    | `flags`      | [`FROM_END`], [`ALLOW_STALE`]; other bits must be 0   |
//! | 36     | 4    | `reserved`   | must be 0                                             |
//! | 40     | 4096 | `key`        | UTF-8 key starting with `/`, NUL-padded               |
//! | 4136   | 256  | `segment`    | segment name, NUL-padded                              |
//!
//! The answerer clamps the range to the object: a start past the end gives an empty body,
//! so the asker can tell an unsatisfiable range from the head alone.
//!
//! Integers are in native byte order: both ends run on one host. The whole record is
//! [`MESSAGE_SIZE`] bytes, under the kernel's default `msgsize_max` of 8192, and a message
//! of any other length is refused. Strings must be NUL-terminated with only NULs after the
//! terminator, so a key can never smuggle a second string past a C-style reader.

use std::fmt;
use std::mem::{offset_of, size_of};

/// "SHMQ".
pub const WIRE_MAGIC: u32 = u32::from_be_bytes(*b"SHMQ");
/// Version 2 added `flags` (suffix ranges) for HTTP Range requests; version 3 the STORE
/// and STATS operations; version 4 RENEW, PURGE and [`ALLOW_STALE`].
pub const WIRE_VERSION: u16 = 4;
/// `offset` counts back from the end of the object: "the last `offset` bytes".
pub const FROM_END: u32 = 1;
/// Serve the object even if its freshness lifetime has passed (stale-if-error).
pub const ALLOW_STALE: u32 = 2;
/// Bytes reserved for the key, its NUL terminator included.
pub const KEY_CAPACITY: usize = 4096;
/// Bytes reserved for the segment name, its NUL terminator included.
pub const SEGMENT_NAME_CAPACITY: usize = 256;
/// The longest key a request can carry.
pub const MAX_KEY_LEN: usize = KEY_CAPACITY - 1;

/// What the asker wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// The cache writes bytes `offset..offset + length` of `key` into the segment.
    Get = 1,
    /// The proxy writes an object for `key` into the segment (head first, then the body)
    /// and the cache stores it: filling the cache on a miss. `length` is the object's size.
    Store = 2,
    /// The cache writes its counters into the segment as text, `name value` per line.
    Stats = 3,
    /// The proxy found an expired object unchanged in secondary storage: the cache makes
    /// it fresh again for `length` seconds. The answer has no body.
    Renew = 4,
    /// Remove `key`. The answer's status says whether it was there.
    Purge = 5,
}

impl Op {
    fn from_u16(v: u16) -> Option<Op> {
        match v {
            1 => Some(Op::Get),
            2 => Some(Op::Store),
            3 => Some(Op::Stats),
            4 => Some(Op::Renew),
            5 => Some(Op::Purge),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawRequest {
    magic: u32,
    version: u16,
    op: u16,
    generation: u64,
    offset: u64,
    length: u64,
    flags: u32,
    reserved: u32,
    key: [u8; KEY_CAPACITY],
    segment: [u8; SEGMENT_NAME_CAPACITY],
}

/// Size of every message on the queue.
pub const MESSAGE_SIZE: usize = size_of::<RawRequest>();
const _: () = assert!(MESSAGE_SIZE == 40 + KEY_CAPACITY + SEGMENT_NAME_CAPACITY);
const _: () = assert!(MESSAGE_SIZE <= 8192);

/// A request: decoded and validated with owned strings, or about to be encoded from
/// borrowed ones (`Request<&str>`), so that sending one allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<S = String> {
    pub op: Op,
    pub generation: u64,
    pub offset: u64,
    pub length: u64,
    pub flags: u32,
    pub key: S,
    pub segment: S,
}

/// Why a message was refused. Each names the first rule the bytes broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Length(usize),
    Magic(u32),
    Version(u16),
    Op(u16),
    /// Unknown flag bits or a non-zero reserved word.
    Flags(u32),
    /// A string field has no terminator, bytes after it, or is not UTF-8.
    BadString(&'static str),
    /// The key is empty or does not start with '/'.
    BadKey,
    /// A string is too long to encode.
    TooLong(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Length(n) => write!(f, "message is {n} bytes, expected {MESSAGE_SIZE}"),
            WireError::Magic(m) => write!(f, "bad magic {m:#010x}"),
            WireError::Version(v) => write!(f, "unknown version {v}"),
            WireError::Op(op) => write!(f, "unknown operation {op}"),
            WireError::Flags(flags) => write!(f, "unknown flags {flags:#x}"),
            WireError::BadString(field) => write!(f, "malformed {field} string"),
            WireError::BadKey => write!(f, "key must start with '/'"),
            WireError::TooLong(field) => write!(f, "{field} too long for a message"),
        }
    }
}

impl std::error::Error for WireError {}

impl<S: AsRef<str>> Request<S> {
    /// Encodes into exactly [`MESSAGE_SIZE`] bytes, refusing strings that do not fit or
    /// that contain NUL. The result lives on the stack: no allocation per request.
    pub fn encode(&self) -> Result<[u8; MESSAGE_SIZE], WireError> {
        let (key_str, segment_str) = (self.key.as_ref(), self.segment.as_ref());
        if !key_str.starts_with('/') {
            return Err(WireError::BadKey);
        }
        // Fields are written straight into the zeroed message at their `repr(C)` offsets:
        // one pass of zeroing (the NUL padding) and no intermediate copy of the record.
        let mut out = [0u8; MESSAGE_SIZE];
        let mut put = |offset: usize, bytes: &[u8]| {
            out[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(offset_of!(RawRequest, magic), &WIRE_MAGIC.to_ne_bytes());
        put(offset_of!(RawRequest, version), &WIRE_VERSION.to_ne_bytes());
        put(offset_of!(RawRequest, op), &(self.op as u16).to_ne_bytes());
        put(
            offset_of!(RawRequest, generation),
            &self.generation.to_ne_bytes(),
        );
        put(offset_of!(RawRequest, offset), &self.offset.to_ne_bytes());
        put(offset_of!(RawRequest, length), &self.length.to_ne_bytes());
        put(offset_of!(RawRequest, flags), &self.flags.to_ne_bytes());
        let key = offset_of!(RawRequest, key);
        put_str(&mut out[key..key + KEY_CAPACITY], key_str, "key")?;
        let segment = offset_of!(RawRequest, segment);
        put_str(
            &mut out[segment..segment + SEGMENT_NAME_CAPACITY],
            segment_str,
            "segment",
        )?;
        Ok(out)
    }
}

/// A string field of a received request, held inline so that decoding a request
/// allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Text {
    bytes: [u8; KEY_CAPACITY],
    len: usize,
}

impl Text {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("checked UTF-8 when decoded")
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Request<Text> {
    /// Decodes and validates one message. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Request<Text>, WireError> {
        if bytes.len() != MESSAGE_SIZE {
            return Err(WireError::Length(bytes.len()));
        }
        // SAFETY: `bytes` holds exactly size_of::<RawRequest>() bytes (checked), read
        // unaligned; RawRequest holds only integers and byte arrays, for which every bit
        // pattern is a valid value.
        let raw: RawRequest = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if raw.magic != WIRE_MAGIC {
            return Err(WireError::Magic(raw.magic));
        }
        if raw.version != WIRE_VERSION {
            return Err(WireError::Version(raw.version));
        }
        let op = Op::from_u16(raw.op).ok_or(WireError::Op(raw.op))?;
        if raw.flags & !(FROM_END | ALLOW_STALE) != 0 || raw.reserved != 0 {
            return Err(WireError::Flags(raw.flags));
        }
        let key = get_str(&raw.key, "key")?;
        if !key.starts_with('/') {
            return Err(WireError::BadKey);
        }
        let segment = get_str(&raw.segment, "segment")?;
        Ok(Request {
            op,
            generation: raw.generation,
            offset: raw.offset,
            length: raw.length,
            flags: raw.flags,
            key,
            segment,
        })
    }
}

fn put_str(dst: &mut [u8], s: &str, field: &'static str) -> Result<(), WireError> {
    if s.len() >= dst.len() {
        return Err(WireError::TooLong(field));
    }
    if s.contains('\0') {
        return Err(WireError::BadString(field));
    }
    dst[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

fn get_str(src: &[u8], field: &'static str) -> Result<Text, WireError> {
    let end = src
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::BadString(field))?;
    if src[end..].iter().any(|&b| b != 0) {
        return Err(WireError::BadString(field));
    }
    std::str::from_utf8(&src[..end]).map_err(|_| WireError::BadString(field))?;
    // Fields are at most KEY_CAPACITY bytes, the largest of them.
    let mut text = Text {
        bytes: [0; KEY_CAPACITY],
        len: end,
    };
    text.bytes[..end].copy_from_slice(&src[..end]);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded request with owned strings, to compare with what was encoded.
    pub(super) fn owned(r: Request<Text>) -> Request<String> {
        Request {
            op: r.op,
            generation: r.generation,
            offset: r.offset,
            length: r.length,
            flags: r.flags,
            key: r.key.as_str().to_owned(),
            segment: r.segment.as_str().to_owned(),
        }
    }

    /// Offset of the key field.
    const KEY: usize = 40;

    fn sample() -> Request {
        Request {
            op: Op::Get,
            generation: 7,
            offset: 3,
            length: u64::MAX,
            flags: FROM_END,
            key: "/dir/file.txt".into(),
            segment: "/t.seg.1.0".into(),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes.len(), MESSAGE_SIZE);
        assert_eq!(owned(Request::decode(&bytes).unwrap()), sample());
    }

    #[test]
    fn refuses_each_broken_rule() {
        let good = sample().encode().unwrap();
        let broken = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            Request::decode(&b).unwrap_err()
        };
        assert_eq!(broken(&|b| b.truncate(100)), WireError::Length(100));
        assert!(matches!(broken(&|b| b[0] ^= 1), WireError::Magic(_)));
        assert!(matches!(broken(&|b| b[4] = 99), WireError::Version(_)));
        assert!(matches!(broken(&|b| b[6] = 99), WireError::Op(_)));
        assert!(matches!(broken(&|b| b[32] = 4), WireError::Flags(_)));
        assert!(matches!(broken(&|b| b[36] = 1), WireError::Flags(_)));
        // A NUL inside the key followed by more text.
        assert_eq!(broken(&|b| b[KEY + 4] = 0), WireError::BadString("key"));
        // No terminator anywhere in the key field.
        assert_eq!(
            broken(&|b| b[KEY..KEY + KEY_CAPACITY].fill(b'a')),
            WireError::BadString("key")
        );
        assert_eq!(broken(&|b| b[KEY] = b'x'), WireError::BadKey);
        assert_eq!(broken(&|b| b[KEY + 1] = 0xff), WireError::BadString("key"));
        let seg = KEY + KEY_CAPACITY;
        assert_eq!(
            broken(&|b| b[seg..seg + SEGMENT_NAME_CAPACITY].fill(b's')),
            WireError::BadString("segment")
        );
    }

    #[test]
    fn refuses_to_encode_what_cannot_be_decoded() {
        let mut r = sample();
        r.key = format!("/{}", "k".repeat(MAX_KEY_LEN - 1));
        assert!(r.encode().is_ok(), "the longest key fits");
        r.key.push('k');
        assert_eq!(r.encode(), Err(WireError::TooLong("key")));
        r.key = "/a\0b".into();
        assert_eq!(r.encode(), Err(WireError::BadString("key")));
        r.key = "relative".into();
        assert_eq!(r.encode(), Err(WireError::BadKey));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives on the queue, decoding returns a verdict and never panics.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..MESSAGE_SIZE + 16)) {
            let _ = Request::decode(&bytes);
        }

        /// Flipping any one byte of a valid message gives a valid message or a refusal;
        /// a message that still decodes re-encodes to the same bytes (nothing is lost).
        #[test]
        fn one_byte_changed(at in 0..MESSAGE_SIZE, byte in any::<u8>(), key in "/[a-z0-9/._-]{0,40}") {
            let req = Request {
                op: Op::Get,
                generation: 9,
                offset: 1,
                length: 2,
                flags: 0,
                key,
                segment: "/p.seg.1.2".into(),
            };
            let mut bytes = req.encode().unwrap();
            bytes[at] = byte;
            if let Ok(decoded) = Request::decode(&bytes) {
                prop_assert_eq!(decoded.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn round_trip(generation in any::<u64>(), offset in any::<u64>(), length in any::<u64>(),
                      from_end in any::<bool>(), key in "/[^\u{0}]{0,200}", seg in "/[a-z.0-9]{1,60}") {
            let req = Request {
                op: Op::Get,
                generation,
                offset,
                length,
                flags: if from_end { FROM_END } else { 0 },
                key,
                segment: seg,
            };
            prop_assert_eq!(tests::owned(Request::decode(&req.encode().unwrap()).unwrap()), req);
        }
    }
}
