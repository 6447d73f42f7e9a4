//! A small blocking HTTP/1.1 client for the origin behind the proxy (`-s http://…`), with a
//! pool of idle kept-alive connections.
//!
//! Written here rather than taken from a general client because a reverse proxy must pass
//! requests on as they came: any method (PUT, DELETE, M-SEARCH …), its body, and the
//! end-to-end header fields in their order and spelling, while a general client adds,
//! normalises or drops fields, and decides on its own when to send a request again.
//!
//! **Connections.** A response read to its end on a connection that may persist (HTTP/1.1,
//! no `Connection: close`, a body framed by length or chunks) leaves its connection in the
//! pool, at most `keepalive` per origin (the oldest goes first) and for at most
//! `idle_timeout`. The next request takes the most recently used one, after checking that
//! the origin has not closed it meanwhile.
//!
//! **Sending twice.** The origin may still close an idle connection just as a request is
//! sent on it; the request then fails before any byte of a response arrives. Only then, and
//! only for an idempotent method (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
//! DELETE), is it sent once more, on a new connection (RFC 9112 §9.3.1). Any other method
//! (POST, PATCH, anything unknown) always goes on a new connection, so that race never
//! reaches it, and it is never sent twice.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest response head read from an origin (status line and fields), and the
/// largest trailer section.
const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size line (with its extensions) read from an origin.
const MAX_CHUNK_LINE: usize = 4096;

/// How the proxy talks to its origin.
#[derive(Debug, Clone, Copy)]
pub struct OriginOptions {
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
    /// How long the origin may stay silent while it answers (and take a request).
    pub read_timeout: Duration,
    /// Idle connections kept for reuse; 0 closes each after its response
    /// (`Connection: close`).
    pub keepalive: usize,
    /// How long an idle connection is kept. Shorter than the idle timeouts of common
    /// servers (Node 5 s, Apache 5 s, nginx 75 s), so that the origin seldom closes a
    /// connection while a request is on its way.
    pub idle_timeout: Duration,
}

/// Where the origin is, how long it may take, and the connections kept for it.
pub struct Upstream {
    /// `host[:port]`, as given on the command line; also the `Host` sent.
    authority: String,
    /// A path prefix to put before every target (no trailing '/').
    prefix: String,
    options: OriginOptions,
    pool: Arc<Pool>,
}

/// An origin's response: its status, its header fields as received, and its body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ResponseBody,
}

/// Why sending a request failed, as far as sending it again is concerned.
enum Failure {
    /// The connection was closed (or reset) before any byte of a response arrived: the
    /// origin may not have seen the request at all.
    NothingReceived(io::Error),
    /// Anything else: a timeout, a broken response, a connection cut mid-response.
    Other(io::Error),
}

impl Failure {
    fn into_error(self) -> io::Error {
        match self {
            Failure::NothingReceived(e) | Failure::Other(e) => e,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Other(e)
    }
}

/// Whether `e` says the peer closed or reset the connection (as opposed to a timeout).
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// RFC 9110 §9.2.2: the methods a request of which may be repeated with the same effect.
fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

impl Upstream {
    /// `url` is `http://host[:port][/prefix]`.
    ///
    /// # Errors
    /// A URL of another form.
    pub fn new(url: &str, options: OriginOptions) -> io::Result<Self> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains(['?', '#', '@']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url}: expected http://host:port[/prefix]"),
            ));
        }
        Ok(Upstream {
            authority: authority.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            options,
            pool: Arc::new(Pool {
                idle: Mutex::default(),
                max: options.keepalive,
                idle_timeout: options.idle_timeout,
            }),
        })
    }

    /// The origin's `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Idle connections kept for the origin now.
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().len()
    }

    /// Sends one request and reads the response's head; the body is read from the
    /// returned [`ResponseBody`]. `target` is origin-form (`/path?query`); `headers` go
    /// out as given (the caller has removed the hop-by-hop ones), followed by `Host`,
    /// the body's `Content-Length` when there is a body or the method usually has one,
    /// and `Connection: close` when connections are not kept.
    ///
    /// # Errors
    /// The origin cannot be reached, times out, or answers something that is not HTTP/1.x.
    pub fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Response> {
        let request = self.request_bytes(method, target, headers, body);
        let idempotent = idempotent(method);
        let pooled = if idempotent { self.pool.take() } else { None };
        if let Some(stream) = pooled {
            match self.exchange(stream, method, &request) {
                Ok(response) => return Ok(response),
                Err(Failure::NothingReceived(e)) => {
                    log::debug!("origin: a kept-alive connection failed ({e}); sending again");
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
        let stream = self.connect()?;
        self.exchange(stream, method, &request)
            .map_err(Failure::into_error)
    }

    /// The request's head and body as they go out.
    fn request_bytes(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = format!("{method} {}{target} HTTP/1.1\r\n", self.prefix).into_bytes();
        for (name, value) in headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // As received: obs-text goes on as the same bytes, not re-encoded.
            push_latin1(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
        let mut head = String::new();
        head.push_str("Host: ");
        head.push_str(&self.authority);
        head.push_str("\r\n");
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if self.pool.max == 0 {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Writes `request` on `stream` and reads the final response's head.
    fn exchange(
        &self,
        stream: TcpStream,
        method: &str,
        request: &[u8],
    ) -> Result<Response, Failure> {
        if let Err(e) = (&stream).write_all(request) {
            return Err(if closed(&e) {
                Failure::NothingReceived(e)
            } else {
                Failure::Other(e)
            });
        }
        let mut reader = BufReader::new(stream);
        let mut first = true;
        loop {
            let head = read_head(&mut reader, first)?;
            first = false;
            // Interim responses (100 Continue, 103 Early Hints) precede the final one.
            if (100..200).contains(&head.status) {
                continue;
            }
            let no_body = method == "HEAD" || head.status == 204 || head.status == 304;
            let pool = (head.persistent && self.pool.max > 0).then(|| Arc::clone(&self.pool));
            let body = ResponseBody::new(reader, &head.headers, no_body, pool)?;
            return Ok(Response {
                status: head.status,
                headers: head.headers,
                body,
            });
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let with_port = if self.authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.contains(']')
        }) {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in with_port.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.options.connect_timeout) {
                Ok(s) => {
                    // Set once: a pooled connection keeps them.
                    s.set_read_timeout(Some(self.options.read_timeout))?;
                    s.set_write_timeout(Some(self.options.read_timeout))?;
                    // A request is one write and the answer comes back whole; on a kept
                    // connection Nagle's algorithm would hold a request behind the
                    // previous one's unacknowledged bytes.
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Idle connections to one origin, the most recently used last.
struct Pool {
    idle: Mutex<VecDeque<(TcpStream, Instant)>>,
    max: usize,
    idle_timeout: Duration,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(TcpStream, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open, if any. Connections
    /// idle too long are closed on the way.
    fn take(&self) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.lock().pop_back()?;
            if since.elapsed() >= self.idle_timeout {
                // The others are older still.
                self.lock().clear();
                return None;
            }
            if still_open(&stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps `stream` for reuse, closing the oldest idle connection when full.
    fn put(&self, stream: TcpStream) {
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since)| since.elapsed() >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() >= self.max {
            idle.pop_front();
        }
        if self.max > 0 {
            idle.push_back((stream, Instant::now()));
        }
    }
}

/// Whether an idle connection is still usable: nothing to read yet. A closed one reads
/// end-of-file; one with bytes waiting (an origin that answered more than asked) cannot
/// be trusted to frame the next response.
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let waiting = stream.peek(&mut [0]);
    let open = matches!(&waiting, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    open && stream.set_nonblocking(false).is_ok()
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("origin: {why}"))
}

/// Reads a line ending in LF (kept), counting it against `left`.
fn read_line(reader: &mut impl BufRead, left: &mut usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = reader.take(*left as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if n > *left || line.last() != Some(&b'\n') {
        return Err(invalid("a line too long or cut short"));
    }
    *left -= n;
    Ok(line)
}

/// A response head as read.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    /// Whether the connection may carry another request after this response (RFC 9112
    /// §9.3): HTTP/1.1 without a `close` connection option.
    persistent: bool,
}

/// Reads and parses (with httparse) the status line and header fields of a response.
/// `first`: this is the first head on the connection for this request, so a connection
/// closed before any byte of it means the origin may not have seen the request.
fn read_head(reader: &mut BufReader<TcpStream>, first: bool) -> Result<Head, Failure> {
    let mut buf: Vec<u8> = Vec::new();
    let mut slots = 64;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if first && buf.is_empty() && closed(&e) => {
                return Err(Failure::NothingReceived(e));
            }
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
            return Err(if first && buf.is_empty() {
                Failure::NothingReceived(eof)
            } else {
                Failure::Other(invalid("a response head cut short"))
            });
        }
        let start = buf.len();
        let take = available.len().min(MAX_HEAD + 1 - start);
        buf.extend_from_slice(&available[..take]);
        loop {
            let parsed = {
                let mut headers = vec![httparse::EMPTY_HEADER; slots];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&buf) {
                    Ok(httparse::Status::Complete(len)) => Some(Ok((len, head_of(&response)))),
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => Some(Err(e)),
                }
            };
            match parsed {
                Some(Ok((len, head))) => {
                    reader.consume(len - start);
                    return head.map_err(Failure::Other);
                }
                None => {
                    reader.consume(take);
                    break;
                }
                Some(Err(httparse::Error::TooManyHeaders)) if slots < MAX_HEAD / 4 => slots *= 4,
                Some(Err(e)) => {
                    return Err(Failure::Other(invalid(&format!(
                        "a bad response head: {e}"
                    ))));
                }
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(Failure::Other(invalid("a response head too long")));
        }
    }
}

/// Field values are octets (RFC 9110 §5.5: obs-text is any byte from 0x80). The proxy
/// holds them in strings one char per byte (Latin-1), as its request parser does, so
/// that no byte is lost or re-encoded between the wire and the stored header block:
/// [`latin1`] reads them and [`push_latin1`] writes them back.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Appends `text`, written by [`latin1`] (or plain ASCII), as the bytes it stands for. A
/// char beyond Latin-1 cannot have come off the wire; it is written as UTF-8.
pub(crate) fn push_latin1(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match u8::try_from(c) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

fn head_of(response: &httparse::Response<'_, '_>) -> io::Result<Head> {
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(invalid("an incomplete status line"));
    };
    if !(100..600).contains(&status) {
        return Err(invalid("a status out of range"));
    }
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            let value = latin1(h.value);
            (
                h.name.to_owned(),
                value.trim_matches([' ', '\t']).to_owned(),
            )
        })
        .collect();
    let close = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("close"));
    Ok(Head {
        status,
        headers,
        persistent: version == 1 && !close,
    })
}

/// A response body, decoded from its framing (RFC 9112 §6.3). Read to its end, it hands
/// its connection back to the pool when the connection may persist.
pub struct ResponseBody {
    /// `None` once the body is complete and the connection went back to the pool.
    reader: Option<BufReader<TcpStream>>,
    framing: Framing,
    /// Bytes read already and handed back ([`ResponseBody::unread`]): read first.
    unread: io::Cursor<Vec<u8>>,
    /// Where the connection goes when the body is complete; `None`: it is closed.
    pool: Option<Arc<Pool>>,
}

enum Framing {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// Chunked: bytes left in the current chunk; `None` before the first size line,
    /// `Some(0)` between chunks; done once the last chunk and the trailer are read.
    Chunked { left: Option<u64>, done: bool },
    /// Neither: the body runs to the connection's close.
    Close,
}

impl ResponseBody {
    fn new(
        reader: BufReader<TcpStream>,
        headers: &[(String, String)],
        no_body: bool,
        pool: Option<Arc<Pool>>,
    ) -> io::Result<ResponseBody> {
        let field = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let chunked = field("transfer-encoding")
            .flat_map(|v| v.split(','))
            .last()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        let framing = if no_body {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked {
                left: None,
                done: false,
            }
        } else if field("transfer-encoding").next().is_some() {
            Framing::Close
        } else {
            let mut lengths = field("content-length").flat_map(|v| v.split(','));
            match lengths.next() {
                None => Framing::Close,
                Some(first) => {
                    let n = first
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| invalid("an invalid Content-Length"))?;
                    if lengths.any(|other| other.trim().parse::<u64>().ok() != Some(n)) {
                        return Err(invalid("conflicting Content-Length values"));
                    }
                    Framing::Length(n)
                }
            }
        };
        let mut body = ResponseBody {
            reader: Some(reader),
            framing,
            unread: io::Cursor::default(),
            pool,
        };
        if let Framing::Length(0) = body.framing {
            body.complete();
        }
        Ok(body)
    }

    /// The body's length, when its framing says it in advance.
    pub fn length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Hands back bytes read from this body, so that they are read again first (once a
    /// look at the beginning of a body decided how to pass it on).
    pub fn unread(&mut self, bytes: Vec<u8>) {
        self.unread = io::Cursor::new(bytes);
    }

    /// The body has been read whole: its connection goes back to the pool, unless the
    /// origin sent more than the response (then it cannot be trusted with another).
    fn complete(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        if let Some(pool) = &self.pool
            && reader.buffer().is_empty()
        {
            pool.put(reader.into_inner());
        }
    }

    fn reader(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        self.reader
            .as_mut()
            .ok_or_else(|| io::Error::other("origin: the body was read already"))
    }

    /// Reads a chunk-size line, with httparse (after a chunk, its CRLF first; after the
    /// last chunk, the trailer section too, which is dropped).
    fn next_chunk(&mut self, first: bool) -> io::Result<u64> {
        let reader = self.reader()?;
        let mut left = MAX_CHUNK_LINE;
        if !first && !matches!(&read_line(reader, &mut left)?[..], b"\r\n" | b"\n") {
            return Err(invalid("a chunk longer than its size"));
        }
        let mut line = read_line(reader, &mut left)?;
        // A bare LF ends a line too (RFC 9112 §2.2 lets a recipient accept it); httparse
        // wants CRLF.
        if !line.ends_with(b"\r\n") {
            line.pop();
            line.extend_from_slice(b"\r\n");
        }
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(invalid("a bad chunk-size line")),
        };
        if size == 0 {
            let mut trailer = MAX_HEAD;
            while !matches!(&read_line(reader, &mut trailer)?[..], b"\r\n" | b"\n") {}
        }
        Ok(size)
    }
}

impl Read for ResponseBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.unread.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        match self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.reader()?.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Length(left - n as u64);
                if left == n as u64 {
                    self.complete();
                }
                Ok(n)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { left, done: false } => {
                let left = match left {
                    Some(n) if n > 0 => n,
                    _ => {
                        let size = self.next_chunk(left.is_none())?;
                        if size == 0 {
                            self.framing = Framing::Chunked {
                                left: Some(0),
                                done: true,
                            };
                            self.complete();
                            return Ok(0);
                        }
                        size
                    }
                };
                let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.reader()?.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Chunked {
                    left: Some(left - n as u64),
                    done: false,
                };
                Ok(n)
            }
            Framing::Close => self.reader()?.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn options(keepalive: usize) -> OriginOptions {
        OriginOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            keepalive,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// An origin that answers one connection with `answer` and hands back the request.
    fn one_shot(answer: &'static [u8]) -> (Upstream, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pre", listener.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = vec![0; 4096];
            let n = s.read(&mut got).unwrap();
            got.truncate(n);
            s.write_all(answer).unwrap();
            got
        });
        (Upstream::new(&url, options(0)).unwrap(), t)
    }

    #[test]
    fn sends_method_headers_and_body_and_reads_chunked() {
        let (up, t) = one_shot(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\nde\r\n0\r\nT: 1\r\n\r\n",
        );
        let headers = vec![("Test-ID".to_owned(), "x".to_owned())];
        let mut r = up.send("PUT", "/a?b=c", &headers, b"abc").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers[0], ("X-A".to_owned(), "1".to_owned()));
        assert_eq!(r.body.length(), None);
        let mut body = String::new();
        r.body.read_to_string(&mut body).unwrap();
        assert_eq!(body, "abcde");
        let sent = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(sent.starts_with("PUT /pre/a?b=c HTTP/1.1\r\nTest-ID: x\r\nHost: 127.0.0.1:"));
        assert!(sent.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\nabc"));
    }

    #[test]
    fn length_framing_and_no_body_statuses() {
        let (up, _t) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhiIGNORED");
        let mut r = up.send("GET", "/", &[], b"").unwrap();
        assert_eq!(r.body.length(), Some(2));
        let mut body = Vec::new();
        r.body.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"hi");
        let (up, _t) = one_shot(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(
            up.send("GET", "/", &[], b"").unwrap().body.length(),
            Some(0)
        );
        let (up, _t) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n");
        assert!(up.send("GET", "/", &[], b"").is_err());
        let (up, _t) = one_shot(b"SSH-2.0\r\n\r\n");
        assert!(up.send("GET", "/", &[], b"").is_err());
        let (up, _t) = one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        let mut r = up.send("GET", "/", &[], b"").unwrap();
        assert!(
            r.body.read_to_end(&mut Vec::new()).is_err(),
            "a bad chunk size"
        );
    }

    #[test]
    fn obs_text_in_field_values_goes_both_ways_as_the_same_bytes() {
        let (up, t) = one_shot(
            b"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        );
        let sent = [
            ("X-Obs".to_owned(), latin1(b"caf\xe9")),
            ("X-Utf8".to_owned(), latin1(b"caf\xc3\xa9")),
        ];
        let r = up.send("GET", "/", &sent, b"").unwrap();
        assert_eq!(r.headers[..2], sent);
        let got = t.join().unwrap();
        let wanted: &[u8] = b"X-Obs: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n";
        assert!(got.windows(wanted.len()).any(|w| w == wanted), "{got:?}");
        let mut out = Vec::new();
        push_latin1(&mut out, "caf\u{e9}\u{263a}");
        assert_eq!(out, b"caf\xe9\xe2\x98\xba");
    }

    /// An origin that answers every request on a connection with `answers[i]` for the i-th
    /// request of that connection (and closes after the last), and reports each request
    /// line with its connection's number.
    fn keeping(answers: &'static [&'static [u8]]) -> (Upstream, mpsc::Receiver<(usize, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    for answer in answers {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let _ = tx.send((conn, line.trim_end().to_owned()));
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        if (&stream).write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (Upstream::new(&url, options(2)).unwrap(), rx)
    }

    fn body_of(mut r: Response) -> Vec<u8> {
        let mut body = Vec::new();
        r.body.read_to_end(&mut body).unwrap();
        body
    }

    #[test]
    fn a_connection_is_reused_once_its_body_is_read() {
        let (up, rx) = keeping(&[
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ]);
        assert_eq!(body_of(up.send("GET", "/1", &[], b"").unwrap()), b"a");
        assert_eq!(up.idle_connections(), 1);
        assert_eq!(body_of(up.send("GET", "/2", &[], b"").unwrap()), b"b");
        assert_eq!(up.send("DELETE", "/3", &[], b"").unwrap().status, 204);
        let seen: Vec<(usize, String)> = rx.try_iter().collect();
        let on_first: Vec<usize> = seen.iter().map(|(c, _)| *c).collect();
        assert_eq!(on_first, [0, 0, 0], "{seen:?}");
    }

    #[test]
    fn a_body_left_unread_or_a_close_keeps_nothing() {
        let (up, _rx) = keeping(&[
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ]);
        let mut r = up.send("GET", "/", &[], b"").unwrap();
        r.body.read_exact(&mut [0; 2]).unwrap();
        drop(r);
        assert_eq!(up.idle_connections(), 0);
        let (up, _rx) =
            keeping(&[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]);
        up.send("GET", "/", &[], b"").unwrap();
        assert_eq!(up.idle_connections(), 0);
        let (up, _rx) = keeping(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]);
        up.send("GET", "/", &[], b"").unwrap();
        assert_eq!(up.idle_connections(), 0);
    }

    #[test]
    fn idempotent_requests_are_sent_again_and_others_go_on_new_connections() {
        // Each connection answers its first request only, then closes without answering
        // the second: every reused connection fails before a response byte.
        let (up, rx) = keeping(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", b""]);
        assert_eq!(body_of(up.send("GET", "/a", &[], b"").unwrap()), b"x");
        assert_eq!(body_of(up.send("GET", "/b", &[], b"").unwrap()), b"x");
        assert_eq!(body_of(up.send("POST", "/c", &[], b"1").unwrap()), b"x");
        let seen: Vec<(usize, String)> = rx.try_iter().collect();
        let lines: Vec<(usize, &str)> = seen.iter().map(|(c, l)| (*c, l.as_str())).collect();
        assert_eq!(
            lines,
            [
                (0, "GET /a HTTP/1.1"),
                (0, "GET /b HTTP/1.1"),
                (1, "GET /b HTTP/1.1"),
                (2, "POST /c HTTP/1.1"),
            ]
        );
    }

    #[test]
    fn the_pool_is_bounded_and_idle_connections_expire() {
        const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let (up, _rx) = keeping(&[NO_CONTENT; 4]);
        let held: Vec<Response> = (0..3)
            .map(|_| up.send("POST", "/", &[], b"").unwrap())
            .collect();
        // 204s are complete at once: all three are back, two kept.
        drop(held);
        assert_eq!(up.idle_connections(), 2);
        let mut short = options(2);
        short.idle_timeout = Duration::from_millis(1);
        let pool = Pool {
            idle: Mutex::default(),
            max: short.keepalive,
            idle_timeout: short.idle_timeout,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        pool.put(stream);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && pool.lock()[0].1.elapsed() < short.idle_timeout {
            std::thread::yield_now();
        }
        assert!(pool.take().is_none(), "expired");
        assert_eq!(pool.lock().len(), 0);
    }
}
