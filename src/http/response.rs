//! Responses: what a handler answers ([`Reply`]), and the status line and headers that
//! go on the wire ([`Head`], [`write_head`]).
//!
//! Header values are kept in the form they came in and formatted straight into the
//! response head, so that building a reply allocates nothing. The body's framing
//! (Content-Length, chunked, or to the connection's close) is decided by the connection
//! that writes it ([`server`](super::server)).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use httpdate::HttpDate;

use super::body::Body;
use crate::ipc::Etag;

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

    /// The stored block's lines, without their line ends.
    fn stored_lines(&self) -> impl Iterator<Item = &str> {
        // Checked printable ASCII, so this never fails.
        std::str::from_utf8(&self.stored)
            .unwrap_or("")
            .split_terminator("\r\n")
    }

    /// Whether the stored block has a line of field `name` (lower case).
    fn has_stored(&self, name: &str) -> bool {
        // Cheap when there is no block, as for the proxy's own answers.
        !self.stored.is_empty()
            && self.stored_lines().any(|line| {
                line.split_once(':')
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            })
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

    /// The head to send, and the body apart. `source` says where the body came from, for
    /// the access log.
    pub fn split(self, source: &'static str) -> (Head, Body) {
        let head = Head {
            status: self.status,
            headers: self.headers,
            length: self.length,
            source,
        };
        (head, self.body)
    }
}

/// A response's status line and headers, handed from the worker to the connection.
pub struct Head {
    pub status: u16,
    pub headers: Headers,
    /// As [`Reply::length`].
    pub length: Option<u64>,
    /// Where the body comes from (`hit`, `secondary`, `-`), for the access log.
    pub source: &'static str,
}

impl Head {
    /// A head with no headers yet and no body.
    pub fn new(status: u16, source: &'static str) -> Head {
        Head {
            status,
            headers: Headers::new(),
            length: Some(0),
            source,
        }
    }

    /// Whether a response with this status carries a body at all (RFC 9110 §6.4.1), HEAD
    /// aside.
    pub fn has_body(&self) -> bool {
        !matches!(self.status, 100..=199 | 204 | 304)
    }
}

const SERVER: &str = concat!("shmcache/", env!("CARGO_PKG_VERSION"));

/// The status line and headers, ending with the blank line.
///
/// `chunked`: the body goes in chunked framing (no length known, HTTP/1.1);
/// `keep_alive`: the connection stays open after this response.
pub fn write_head(head: &mut String, reply: &Head, chunked: bool, keep_alive: bool) -> fmt::Result {
    let (status, reason) = (reply.status, reason(reply.status));
    write!(head, "HTTP/1.1 {status} {reason}")?;
    // An origin's Date and Server, in a stored or passed-on header block, are kept: its
    // Date is what the response's age is reckoned from (RFC 9111 §4.2.3).
    if !reply.headers.has_stored("date") {
        write!(head, "\r\nDate: {}", HttpDate::from(SystemTime::now()))?;
    }
    if !reply.headers.has_stored("server") {
        write!(head, "\r\nServer: {SERVER}")?;
    }
    for line in reply.headers.stored_lines() {
        head.push_str("\r\n");
        head.push_str(line);
    }
    for (name, value) in reply.headers.iter() {
        write!(head, "\r\n{name}: {value}")?;
    }
    match reply.length {
        Some(length) => write!(head, "\r\nContent-Length: {length}")?,
        None if chunked => head.push_str("\r\nTransfer-Encoding: chunked"),
        None => {}
    }
    head.push_str(if keep_alive {
        "\r\nConnection: keep-alive\r\n\r\n"
    } else {
        "\r\nConnection: close\r\n\r\n"
    });
    Ok(())
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
