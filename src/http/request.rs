//! Reading one HTTP/1.1 request off a connection (RFC 9112): the head, then the body's
//! framing, then the body itself, all within a size cap and one deadline.
//!
//! The proxy reads requests itself rather than through a library, because every way a
//! client can stop a server at this layer is decided here: how long a request may take
//! to arrive (a total deadline, not a per-read silence that each trickled byte resets),
//! how large a head or a body may be (answered 431 or 413, never allocated), and what
//! ambiguous framing gets (400 and a closed connection, never a guess that a smuggled
//! request could hide behind). Parsing never blocks past the deadline and never buffers
//! more than [`Limits`] allow.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed request, with its body (at most `--max-body` bytes, de-chunked): an origin
/// behind the proxy gets it with the methods that carry one (PUT, POST …).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: origin-form (`/path?query`); an absolute-form target
    /// (`http://host/path`) is reduced to its path and query.
    pub target: String,
    pub version: Version,
    pub headers: Vec<(String, String)>,
    pub peer: SocketAddr,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(m) => m,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        })
    }
}

impl Request {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client lets the connection stay open after this exchange: HTTP/1.1
    /// unless it says `close`, HTTP/1.0 only if it says `keep-alive` (RFC 9112 §9.3).
    pub fn keeps_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("Connection"))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => has("keep-alive") && !has("close"),
        }
    }
}

/// How much a request may be, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line (method, target, version) in bytes.
    pub max_line: usize,
    /// The whole head (request line, header fields, and a chunked body's trailer).
    pub max_head: usize,
    /// The body: a larger declared or received body is answered 413.
    pub max_body: u64,
    /// From the request's first byte to its body's last.
    pub deadline: Duration,
}

impl Limits {
    pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
    pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
}

/// Why no request could be read. Each refusal comes with the status to answer (then the
/// connection is closed: after a framing error, nobody knows where the next request
/// would start).
#[derive(Debug)]
pub enum ReadError {
    /// The connection ended or stayed idle before a request began: close without a word.
    Closed,
    /// Answer this status, with this reason in the body, then close.
    Refuse(u16, &'static str),
    /// The socket failed mid-request: close.
    Io(io::Error),
}

fn refuse(status: u16, why: &'static str) -> ReadError {
    ReadError::Refuse(status, why)
}

/// Reads the next request from `conn`, waiting at most `idle` for it to begin.
///
/// `reader` buffers the connection's bytes (it may already hold the next request's, sent
/// ahead); `writer` is the same socket, used only for `100 Continue`.
pub fn read_request(
    reader: &mut io::BufReader<&TcpStream>,
    writer: &TcpStream,
    peer: SocketAddr,
    limits: &Limits,
    idle: Duration,
) -> Result<Request, ReadError> {
    // Wait for the first byte with the idle timeout; from then on, one deadline covers
    // the whole request, however its bytes are spread out.
    reader
        .get_ref()
        .set_read_timeout(Some(idle))
        .map_err(ReadError::Io)?;
    match reader.fill_buf() {
        Ok([]) => return Err(ReadError::Closed),
        Ok(_) => {}
        Err(e) if is_timeout(&e) => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let mut input = Input {
        reader,
        deadline: Instant::now() + limits.deadline,
        head_left: limits.max_head,
    };
    // A few empty lines before a request are ignored (RFC 9112 §2.2).
    let mut line = Vec::new();
    for _ in 0..4 {
        line = input.line(limits.max_line, (414, "the request line is too long"))?;
        if !line.is_empty() {
            break;
        }
    }
    let (method, target, version) = parse_request_line(&line)?;
    let headers = input.fields()?;
    let mut request = Request {
        method,
        target,
        version,
        headers,
        peer,
        body: Vec::new(),
    };
    // Exactly one Host in HTTP/1.1, at most one in 1.0 (RFC 9112 §3.2).
    let hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Host"))
        .count();
    if hosts > 1 || (hosts == 0 && request.version == Version::Http11) {
        return Err(refuse(400, "an HTTP/1.1 request needs exactly one Host"));
    }
    let framing = framing(&request, limits.max_body)?;
    if framing != Framing::None {
        match request.header("Expect") {
            None => {}
            // An HTTP/1.0 client cannot have meant it (RFC 9110 §10.1.1).
            Some(_) if request.version == Version::Http10 => {}
            // The client waits for this before it sends the body.
            Some(e) if e.eq_ignore_ascii_case("100-continue") => {
                let mut w = writer;
                w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .map_err(ReadError::Io)?;
            }
            Some(_) => return Err(refuse(417, "unknown expectation")),
        }
    }
    request.body = input.read_body(framing, limits.max_body)?;
    Ok(request)
}

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn framing(request: &Request, max_body: u64) -> Result<Framing, ReadError> {
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            // A list of identical values is one value (§6.3 item 5); anything else is a
            // conflict that a smuggler would exploit.
            for v in value.split(',') {
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse(400, "invalid Content-Length"));
                }
                let n: u64 = v
                    .parse()
                    .map_err(|_| refuse(400, "invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(refuse(400, "conflicting Content-Length"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            let all = transfer_encoding.get_or_insert_with(String::new);
            if !all.is_empty() {
                all.push(',');
            }
            all.push_str(value);
        }
    }
    match (transfer_encoding, length) {
        (Some(_), Some(_)) => Err(refuse(400, "both Content-Length and Transfer-Encoding")),
        (Some(_), None) if request.version == Version::Http10 => {
            Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"))
        }
        (Some(te), None) => {
            let codings: Vec<&str> = te.split(',').map(str::trim).collect();
            match codings.as_slice() {
                [c] if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
                // Without chunked last, the body's end cannot be known (§6.3 item 4).
                [.., last] if !last.eq_ignore_ascii_case("chunked") => {
                    Err(refuse(400, "the final transfer coding is not chunked"))
                }
                _ => Err(refuse(501, "unsupported transfer coding")),
            }
        }
        (None, Some(n)) if n > max_body => Err(refuse(413, "the request body is too large")),
        (None, Some(0)) | (None, None) => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

fn parse_request_line(line: &[u8]) -> Result<(Method, String, Version), ReadError> {
    let bad = || refuse(400, "malformed request line");
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad());
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(refuse(505, "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        _ => return Err(bad()),
    };
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    // A server must accept the absolute form (RFC 9112 §3.2.2); only the path and query
    // matter to us.
    let target = if target.starts_with('/') {
        target.to_owned()
    } else if let Some(rest) = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_owned(),
        }
    } else {
        return Err(bad());
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m => Method::Other(m.to_owned()),
    };
    Ok((method, target, version))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The connection's bytes, read under the request's deadline and head budget.
struct Input<'a, 's> {
    reader: &'a mut io::BufReader<&'s TcpStream>,
    deadline: Instant,
    /// Head bytes (request line, fields, trailer) still allowed.
    head_left: usize,
}

impl Input<'_, '_> {
    /// Fills the buffer, waiting at most until the deadline.
    fn fill(&mut self) -> Result<&[u8], ReadError> {
        if self.reader.buffer().is_empty() {
            let left = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| refuse(408, "the request took too long"))?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(ReadError::Io)?;
        }
        match self.reader.fill_buf() {
            Ok([]) => Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(buf) => Ok(buf),
            Err(e) if is_timeout(&e) => Err(refuse(408, "the request took too long")),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// One line of the head, without its end. A bare LF ends a line too, and a CR before
    /// it is dropped (RFC 9112 §2.2 allows both); a CR anywhere else is refused.
    fn line(&mut self, max: usize, too_long: (u16, &'static str)) -> Result<Vec<u8>, ReadError> {
        let mut line = Vec::new();
        loop {
            let head_left = self.head_left;
            let buf = self.fill()?;
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > max.min(head_left) {
                return Err(if line.len() + take > max {
                    refuse(too_long.0, too_long.1)
                } else {
                    refuse(431, "the request head is too large")
                });
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            self.head_left -= take;
            if end {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.contains(&b'\r') {
                    return Err(refuse(400, "a bare CR in the request head"));
                }
                return Ok(line);
            }
        }
    }

    /// Header (or trailer) fields up to the empty line.
    fn fields(&mut self) -> Result<Vec<(String, String)>, ReadError> {
        const TOO_LARGE: (u16, &str) = (431, "the request head is too large");
        let mut fields = Vec::new();
        loop {
            let line = self.line(usize::MAX, TOO_LARGE)?;
            if line.is_empty() {
                return Ok(fields);
            }
            fields.push(parse_field(&line)?);
        }
    }

    /// Reads the body off the connection (within `max_body`, checked before: see
    /// [`framing`]), without its chunked framing.
    fn read_body(&mut self, framing: Framing, max_body: u64) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        match framing {
            Framing::None => Ok(body),
            Framing::Length(n) => self.copy(n, &mut body).map(|()| body),
            Framing::Chunked => {
                let mut total = 0u64;
                loop {
                    let line = self.line(1024, (400, "invalid chunk size line"))?;
                    let size = parse_chunk_size(&line)?;
                    total = total.saturating_add(size);
                    if total > max_body {
                        return Err(refuse(413, "the request body is too large"));
                    }
                    if size == 0 {
                        // The trailer, then the empty line; its fields are not used.
                        self.fields()?;
                        return Ok(body);
                    }
                    self.copy(size, &mut body)?;
                    // What follows the data must be the line end alone.
                    if !self
                        .line(2, (400, "a chunk is longer than its size"))?
                        .is_empty()
                    {
                        return Err(refuse(400, "a chunk is longer than its size"));
                    }
                }
            }
        }
    }

    fn copy(&mut self, mut n: u64, into: &mut Vec<u8>) -> Result<(), ReadError> {
        while n > 0 {
            let buf = self.fill()?;
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            into.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            n -= take as u64;
        }
        Ok(())
    }
}

fn parse_field(line: &[u8]) -> Result<(String, String), ReadError> {
    let bad = || refuse(400, "malformed header field");
    // A line folded onto the previous one (obs-fold) may be refused (RFC 9112 §5.2).
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(refuse(400, "obsolete line folding"));
    }
    let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // No whitespace between the name and the colon (§5.1): it is a smuggling vector.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad());
    }
    if value
        .iter()
        .any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad());
    }
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    // Field values are octets; anything beyond ASCII is kept as Latin-1 would show it.
    let value: String = value.iter().map(|&b| b as char).collect();
    Ok((name, value.trim_matches([' ', '\t']).to_owned()))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let bad = || refuse(400, "invalid chunk size");
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

/// Reads everything left on a connection we are about to close after an error answer,
/// for a short while, so that closing with unread bytes does not reset the connection
/// before the client has read the answer.
pub fn drain_briefly(stream: &TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut s = stream;
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `bytes` (then half-closes) and reads one request with generous limits.
    fn read(bytes: &[u8]) -> Result<Request, ReadError> {
        read_with(bytes, 64 * 1024)
    }

    fn read_with(bytes: &[u8], max_body: u64) -> Result<Request, ReadError> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(bytes).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let mut reader = io::BufReader::new(&server);
        let limits = Limits {
            max_line: 100,
            max_head: 1000,
            max_body,
            deadline: Duration::from_secs(5),
        };
        read_request(&mut reader, &server, peer, &limits, Duration::from_secs(5))
    }

    fn status(r: Result<Request, ReadError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(ReadError::Refuse(s, _)) => s,
            Err(ReadError::Closed) => 0,
            Err(ReadError::Io(_)) => 1,
        }
    }

    #[test]
    fn a_plain_request_and_its_headers() {
        let r = read(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A:  1 \r\n\r\n").unwrap();
        assert_eq!(
            (&r.method, r.target.as_str(), r.version),
            (&Method::Get, "/a?b", Version::Http11)
        );
        assert_eq!(r.header("x-a"), Some("1"));
        assert!(r.keeps_alive());
    }

    #[test]
    fn bare_lf_is_accepted_and_a_bare_cr_is_not() {
        let r = read(b"GET / HTTP/1.0\nConnection: keep-alive\n\n").unwrap();
        assert!(r.keeps_alive());
        assert_eq!(
            status(read(b"GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n")),
            400
        );
    }

    #[test]
    fn framing_conflicts_are_refused() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", 200),
            (b"GET / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
            (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", 413),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET /\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET x HTTP/1.1\r\n\r\n", 400),
            (b"\x00\x01 garbage\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417),
        ];
        for (bytes, want) in cases {
            let with_host = String::from_utf8_lossy(bytes).replacen(
                "HTTP/1.1\r\n",
                "HTTP/1.1\r\nHost: h\r\n",
                1,
            );
            assert_eq!(
                status(read(with_host.as_bytes())),
                *want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn empty_lines_before_a_request_are_ignored() {
        let r = read(b"\r\n\r\nGET /x HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.target, "/x");
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(status(read(b"GET / HTTP/1.1\r\n\r\n")), 400);
        assert_eq!(
            status(read(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
            400
        );
        assert_eq!(status(read(b"GET / HTTP/1.0\r\n\r\n")), 200);
    }

    #[test]
    fn sizes_are_capped() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(status(read(long_line.as_bytes())), 414);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nA: {}\r\n\r\n",
            "a".repeat(2000)
        );
        assert_eq!(status(read(big_head.as_bytes())), 431);
        let body = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
        assert_eq!(status(read_with(body, 10)), 413);
        assert_eq!(status(read_with(body, 11)), 200);
        let chunked = b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(status(read_with(chunked, 10)), 413);
        assert_eq!(status(read_with(chunked, 11)), 200);
    }

    #[test]
    fn absolute_targets_are_reduced_to_their_path() {
        let r = read(b"GET http://example.com/x?y HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(r.target, "/x?y");
        let r = read(b"GET HTTP://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.target, "/");
    }

    #[test]
    fn an_idle_or_closed_connection_is_not_an_error_to_answer() {
        assert_eq!(status(read(b"")), 0);
        // A request cut short is a broken connection.
        assert_eq!(status(read(b"GET / HTTP/1.1\r\nHost")), 1);
    }
}
