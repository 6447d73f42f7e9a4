//! Writing a response on tiny_http's raw writer.
//!
//! tiny_http's own `Response` makes choices a static file server cannot live with: it
//! refuses a `Connection` header (so HTTP/1.0 clients never learn that the connection is
//! kept alive), switches to chunked encoding when a client sends `TE: chunked` (dropping
//! Content-Length, which HEAD and 304 need), and copies bodies through an 8 KiB buffer
//! into a 1 KiB one. So the proxy writes the status line, headers and body itself, through
//! [`Request::into_writer`]; tiny_http still parses requests and manages connections.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::time::SystemTime;

use httpdate::HttpDate;
use tiny_http::{HTTPVersion, Method, Request};

use super::body::Body;
use crate::ipc::channel::Etag;

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

/// Up to [`Headers::CAPACITY`] headers, held inline.
pub struct Headers {
    items: [Option<(&'static str, Value)>; Headers::CAPACITY],
    len: usize,
}

impl Headers {
    pub const CAPACITY: usize = 12;

    pub fn new() -> Headers {
        Headers {
            items: [const { None }; Headers::CAPACITY],
            len: 0,
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

/// A response about to be written: status, headers, and a body of exactly `length` bytes.
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    /// The Content-Length: the body's length, or for HEAD and 304 the length a GET would
    /// have sent. `None` when unknown (an origin sent none): the body then goes chunked to
    /// HTTP/1.1 clients and runs to the connection's close for HTTP/1.0 ones.
    pub length: Option<u64>,
    pub body: Body,
}

/// What [`send`] did.
pub struct Sent {
    /// Body bytes written.
    pub bytes: u64,
    /// The body's end is the connection's close: the caller must close it, since tiny_http
    /// would otherwise keep it open.
    pub must_close: bool,
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

    /// Whether this reply puts body bytes on the wire for `method`.
    pub fn sends_body(&self, method: &Method) -> bool {
        *method != Method::Head && self.status != 304
    }
}

const SERVER: &str = concat!("shmcache/", env!("CARGO_PKG_VERSION"));

/// Body bytes go through this buffer on their way to the socket: one per worker thread,
/// so no allocation per request, and large enough that a big body takes few writes.
const COPY_BUFFER: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; COPY_BUFFER].into_boxed_slice());
    /// The response head is formatted here, its capacity kept from one request to the next.
    static HEAD: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// Whether tiny_http will keep this connection open after the response (the same rule it
/// applies: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`).
fn keeps_alive(request: &Request) -> bool {
    let connection = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Connection"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    match connection {
        Some(c) if c.contains("close") || c.contains("upgrade") => false,
        Some(c) if *request.http_version() == HTTPVersion(1, 0) => c.contains("keep-alive"),
        None => *request.http_version() != HTTPVersion(1, 0),
        Some(_) => true,
    }
}

/// Writes `reply` as the answer to `request`.
///
/// # Errors
/// A failed write (the client went away or stalled past the send timeout) or a failed body
/// read (the cache broke off). Either way the response is incomplete on the wire.
pub fn send(request: Request, reply: Reply) -> io::Result<Sent> {
    let sends_body = reply.sends_body(request.method());
    let http11 = *request.http_version() != HTTPVersion(1, 0);
    let chunked = reply.length.is_none() && http11;
    let must_close = reply.length.is_none() && !http11 && sends_body;
    let keep_alive = keeps_alive(&request) && !must_close;
    HEAD.with_borrow_mut(|head| {
        head.clear();
        write_head(head, &reply, chunked, keep_alive).expect("formatting into a String");
        let mut writer = request.into_writer();
        write_response(&mut writer, head.as_bytes(), reply, sends_body, chunked)
    })
    .map(|bytes| Sent { bytes, must_close })
}

/// The status line and headers, ending with the blank line.
fn write_head(head: &mut String, reply: &Reply, chunked: bool, keep_alive: bool) -> fmt::Result {
    let (status, reason) = (reply.status, reason(reply.status));
    let date = HttpDate::from(SystemTime::now());
    write!(
        head,
        "HTTP/1.1 {status} {reason}\r\nDate: {date}\r\nServer: {SERVER}"
    )?;
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

/// Writes `head` and then the body; returns the body bytes written.
fn write_response(
    writer: &mut dyn Write,
    head: &[u8],
    reply: Reply,
    sends_body: bool,
    chunked: bool,
) -> io::Result<u64> {
    let mut bytes = 0;
    let body = if sends_body { Some(reply.body) } else { None };
    BUFFER.with_borrow_mut(|buf| -> io::Result<()> {
        match (body, reply.length) {
            // A body that fits the buffer is read whole before anything is written, and
            // dropped: a segment goes back to the pool at once, whatever pace the client
            // reads at.
            (Some(mut body), Some(length)) if length <= buf.len() as u64 => {
                let length = length as usize;
                body.read_exact(&mut buf[..length])
                    .map_err(|e| short_body(e, length))?;
                drop(body);
                writer.write_all(head)?;
                writer.write_all(&buf[..length])?;
                bytes = length as u64;
            }
            (Some(mut body), Some(length)) => {
                writer.write_all(head)?;
                bytes = copy_exact(&mut body, writer, length, buf)?;
            }
            (Some(mut body), None) => {
                writer.write_all(head)?;
                bytes = copy_to_end(&mut body, writer, chunked, buf)?;
            }
            (None, _) => writer.write_all(head)?,
        }
        Ok(())
    })?;
    writer.flush()?;
    Ok(bytes)
}

fn short_body(e: io::Error, length: usize) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(e.kind(), format!("body ended short of {length} bytes"))
    } else {
        e
    }
}

/// Copies exactly `length` bytes; a body that ends early is an error, never a short
/// response presented as complete.
fn copy_exact(
    body: &mut Body,
    out: &mut dyn Write,
    length: u64,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut left = length;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {left} bytes short"),
            ));
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(length)
}

/// Copies until the body ends, in chunked framing if asked.
fn copy_to_end(
    body: &mut Body,
    out: &mut dyn Write,
    chunked: bool,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = body.read(buf)?;
        if chunked {
            write!(out, "{n:x}\r\n")?;
        }
        if n == 0 {
            if chunked {
                out.write_all(b"\r\n")?;
            }
            return Ok(total);
        }
        out.write_all(&buf[..n])?;
        if chunked {
            out.write_all(b"\r\n")?;
        }
        total += n as u64;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}
