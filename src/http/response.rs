//! Writing a response on tiny_http's raw writer.
//!
//! tiny_http's own `Response` makes choices a static file server cannot live with: it
//! refuses a `Connection` header (so HTTP/1.0 clients never learn that the connection is
//! kept alive), switches to chunked encoding when a client sends `TE: chunked` (dropping
//! Content-Length, which HEAD and 304 need), and copies bodies through an 8 KiB buffer
//! into a 1 KiB one. So the proxy writes the status line, headers and body itself, through
//! [`Request::into_writer`]; tiny_http still parses requests and manages connections.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use tiny_http::{HTTPVersion, Method, Request};

use super::body::Body;

/// A response about to be written: status, headers, and a body of exactly `length` bytes.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
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
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
            length: Some(text.len() as u64),
            body: Body::Text(text.as_bytes()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
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
    let mut head = String::with_capacity(256);
    head.push_str("HTTP/1.1 ");
    head.push_str(&reply.status.to_string());
    head.push(' ');
    head.push_str(reason(reply.status));
    head.push_str("\r\nDate: ");
    head.push_str(&httpdate::fmt_http_date(std::time::SystemTime::now()));
    head.push_str("\r\nServer: ");
    head.push_str(SERVER);
    for (name, value) in &reply.headers {
        head.push_str("\r\n");
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
    }
    match reply.length {
        Some(length) => {
            head.push_str("\r\nContent-Length: ");
            head.push_str(&length.to_string());
        }
        None if chunked => head.push_str("\r\nTransfer-Encoding: chunked"),
        None => {}
    }
    head.push_str(if keep_alive {
        "\r\nConnection: keep-alive\r\n\r\n"
    } else {
        "\r\nConnection: close\r\n\r\n"
    });
    let mut writer = request.into_writer();
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
                writer.write_all(head.as_bytes())?;
                writer.write_all(&buf[..length])?;
                bytes = length as u64;
            }
            (Some(mut body), Some(length)) => {
                writer.write_all(head.as_bytes())?;
                bytes = copy_exact(&mut body, &mut writer, length, buf)?;
            }
            (Some(mut body), None) => {
                writer.write_all(head.as_bytes())?;
                bytes = copy_to_end(&mut body, &mut writer, chunked, buf)?;
            }
            (None, _) => writer.write_all(head.as_bytes())?,
        }
        Ok(())
    })?;
    writer.flush()?;
    Ok(Sent { bytes, must_close })
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
