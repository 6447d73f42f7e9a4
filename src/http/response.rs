//! Responses as the proxy decides them ([`Reply`]): a status, headers, a body. The
//! server turns them into what goes on the wire ([`Head`]); the body's framing
//! (Content-Length, chunked, or to the connection's close) is decided by the connection
//! that writes it ([`server`](super::server)).

use std::fmt;
use std::time::SystemTime;

use httpdate::HttpDate;

use super::body::Body;
use super::server::Head;
use crate::ipc::Etag;
use crate::ipc::{Outcome, Validators};

/// Where an answer came from, for the access log and the `X-Cache` header: the
/// proxy's note on each response (the server's `Service::Tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Through a segment from the cache.
    Hit,
    /// From secondary storage, after the cache did not have it (or was not there).
    Secondary,
    /// Answered by the proxy alone (errors, redirects).
    Proxy,
}

impl Source {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Secondary => "secondary",
            Source::Proxy => "-",
        }
    }
}

/// A header value, kept in the form it came in and formatted straight into the response
/// head, so that building a reply allocates nothing.
pub enum Value {
    Static(&'static str),
    Etag(Etag),
    Date(SystemTime),
    Number(u64),
    /// `bytes START-END/TOTAL`
    Range {
        start: u64,
        end: u64,
        total: u64,
    },
    /// `bytes */TOTAL`
    Unsatisfiable(u64),
    /// Anything else (rare: a redirect's Location).
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Static(s) => f.write_str(s),
            Value::Etag(e) => f.write_str(e.as_str()),
            Value::Date(t) => write!(f, "{}", HttpDate::from(*t)),
            Value::Number(n) => write!(f, "{n}"),
            Value::Range { start, end, total } => write!(f, "bytes {start}-{end}/{total}"),
            Value::Unsatisfiable(total) => write!(f, "bytes */{total}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Static(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

/// A stored response's header block (what the cache keeps and sends back), followed by up
/// to [`Headers::CAPACITY`] headers the proxy adds, held inline.
pub struct Headers {
    /// `Name: value\r\n` lines, checked when they came off the channel (or built here):
    /// written as they are.
    stored: Vec<u8>,
    items: [Option<(&'static str, Value)>; Headers::CAPACITY],
    len: usize,
}

impl Headers {
    pub const CAPACITY: usize = 12;

    pub fn new() -> Headers {
        Headers::stored(Vec::new())
    }

    /// Headers that start with a stored response's header block.
    pub fn stored(block: Vec<u8>) -> Headers {
        debug_assert!(crate::ipc::call::valid_header_block(&block));
        Headers {
            stored: block,
            items: [const { None }; Headers::CAPACITY],
            len: 0,
        }
    }

    /// Appends every field in its wire form, each line ending in CRLF: the stored
    /// block's first, as stored.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Byte for byte: a value may hold obs-text, which is not UTF-8.
        out.extend_from_slice(&self.stored);
        for (name, value) in self.iter() {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }

    /// Adds a header. The replies of this crate need far fewer than the capacity; one too
    /// many is a bug, caught in debug builds and dropped in release ones.
    pub fn push(&mut self, name: &'static str, value: impl Into<Value>) {
        debug_assert!(self.len < Headers::CAPACITY, "too many headers");
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some((name, value.into()));
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Value)> {
        self.items[..self.len].iter().flatten()
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers::new()
    }
}

/// A response as a handler decides it: status, headers, and a body of exactly `length`
/// bytes.
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    /// The Content-Length: the body's length, or for HEAD and 304 the length a GET would
    /// have sent. `None` when unknown (an origin sent none): the body then goes chunked to
    /// HTTP/1.1 clients and runs to the connection's close for HTTP/1.0 ones.
    pub length: Option<u64>,
    pub body: Body,
}

impl Reply {
    /// A short text/plain answer.
    pub fn text(status: u16, text: &'static str) -> Reply {
        let mut headers = Headers::new();
        headers.push("Content-Type", "text/plain; charset=utf-8");
        Reply {
            status,
            headers,
            length: Some(text.len() as u64),
            body: Body::Text(text.as_bytes()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<Value>) -> Reply {
        self.headers.push(name, value);
        self
    }

    /// The head to send, and the body apart. `tag` is the service's note on the response
    /// (where its body came from), handed back when it has ended.
    pub fn split<T>(self, tag: T) -> (Head<T>, Body) {
        let mut fields = Vec::with_capacity(256);
        self.headers.write_to(&mut fields);
        let head = Head {
            status: self.status,
            fields,
            length: self.length,
            tag,
        };
        (head, self.body)
    }
}

/// A stored response (`status` and its header block) as `outcome` decided it: whole,
/// partial, not modified, or not satisfiable.
pub(super) fn response(
    v: &Validators,
    status: u16,
    stored: Vec<u8>,
    outcome: Outcome,
    body: Body,
    source: Source,
) -> Reply {
    let (status, stored, length) = match outcome {
        // The length is the one a 200 would announce (RFC 9110 §8.6); no body follows.
        Outcome::NotModified => (304, not_modified_headers(&stored), v.len),
        Outcome::Full => (status, stored, v.len),
        Outcome::Partial { len, .. } => (206, stored, Some(len)),
        Outcome::Unsatisfiable => {
            let total = v.len.unwrap_or(0);
            return Reply::text(416, "416 Range Not Satisfiable\n")
                .with_header("Content-Range", Value::Unsatisfiable(total));
        }
    };
    // The cache answers ranges of what it holds, whatever the origin said of its own
    // (as Varnish does): its Accept-Ranges, stored, gives way to this one.
    let stored = if status != 304 && names_field(&stored, "accept-ranges") {
        without_field(&stored, "accept-ranges")
    } else {
        stored
    };
    let mut headers = Headers::stored(stored);
    headers.push(
        "X-Cache",
        if source == Source::Hit { "HIT" } else { "MISS" },
    );
    if let Outcome::Partial { start, len } = outcome {
        let total = v.len.expect("ranges apply to objects of known length");
        let end = start + len - 1;
        headers.push("Content-Range", Value::Range { start, end, total });
    }
    if status != 304 {
        headers.push("Accept-Ranges", "bytes");
    }
    Reply {
        status,
        headers,
        length,
        body,
    }
}

/// A header block's lines, each with its field name: the way to read a stored block
/// without parsing it.
pub(super) fn block_lines(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    block.split_inclusive(|&b| b == b'\n').map(|line| {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        (name, line)
    })
}

/// Whether a header block has a line named `name` (lowercase).
fn names_field(block: &[u8], name: &str) -> bool {
    block_lines(block).any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// A header block without its lines named `name` (lowercase).
fn without_field(block: &[u8], name: &str) -> Vec<u8> {
    let mut kept = Vec::with_capacity(block.len());
    for (n, line) in block_lines(block) {
        if !n.eq_ignore_ascii_case(name.as_bytes()) {
            kept.extend_from_slice(line);
        }
    }
    kept
}

/// The stored headers a 304 carries: those that would update a client's cached copy
/// (RFC 9110 §15.4.5), not the representation's own metadata such as its type.
fn not_modified_headers(stored: &[u8]) -> Vec<u8> {
    const KEPT: [&str; 6] = [
        "cache-control",
        "content-location",
        "etag",
        "expires",
        "last-modified",
        "vary",
    ];
    let mut kept = Vec::new();
    for (name, line) in block_lines(stored) {
        if KEPT.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(name)) {
            kept.extend_from_slice(line);
        }
    }
    kept
}
