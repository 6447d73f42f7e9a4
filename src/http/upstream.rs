//! A small blocking HTTP/1.1 client for the origin behind the proxy (`-s http://…`).
//!
//! Written here rather than taken from a general client because a reverse proxy must pass
//! requests on as they came: any method (PUT, DELETE, M-SEARCH …), its body, and the
//! end-to-end header fields in their order and spelling, while a general client adds,
//! normalises or drops fields and retries a request whose connection failed. A retried
//! POST is a second POST to the origin; this client sends each request exactly once, on a
//! connection of its own (`Connection: close`), and never again.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest response head read from an origin (status line and fields).
const MAX_HEAD: usize = 64 * 1024;

/// Where the origin is and how long it may take.
pub struct Upstream {
    /// `host[:port]`, as given on the command line; also the `Host` sent.
    authority: String,
    /// A path prefix to put before every target (no trailing '/').
    prefix: String,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// An origin's response: its status, its header fields as received, and its body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ResponseBody,
}

impl Upstream {
    /// `url` is `http://host[:port][/prefix]`.
    ///
    /// # Errors
    /// A URL of another form.
    pub fn new(url: &str, connect_timeout: Duration, read_timeout: Duration) -> io::Result<Self> {
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
            connect_timeout,
            read_timeout,
        })
    }

    /// The origin's `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request and reads the response's head; the body is read from the
    /// returned [`ResponseBody`]. `target` is origin-form (`/path?query`); `headers` go
    /// out as given (the caller has removed the hop-by-hop ones), followed by `Host`,
    /// the body's `Content-Length` when there is a body or the method usually has one,
    /// and `Connection: close`.
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
        let stream = self.connect()?;
        stream.set_read_timeout(Some(self.read_timeout))?;
        stream.set_write_timeout(Some(self.read_timeout))?;
        let mut head = format!("{method} {}{target} HTTP/1.1\r\n", self.prefix);
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("Host: ");
        head.push_str(&self.authority);
        head.push_str("\r\n");
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        (&stream).write_all(&out)?;
        let mut reader = BufReader::new(stream);
        loop {
            let (status, headers) = read_head(&mut reader)?;
            // Interim responses (100 Continue, 103 Early Hints) precede the final one.
            if (100..200).contains(&status) {
                continue;
            }
            let no_body = method == "HEAD" || status == 204 || status == 304;
            let body = ResponseBody::new(reader, &headers, no_body)?;
            return Ok(Response {
                status,
                headers,
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
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("origin: {why}"))
}

/// Reads a line ending in LF (a CR before it is dropped), counting it against `left`.
fn read_line(reader: &mut impl BufRead, left: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader.take(*left as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if n > *left || line.last() != Some(&b'\n') {
        return Err(invalid("a response head too long or cut short"));
    }
    *left -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    // Field values may hold obs-text (RFC 9110 §5.5); kept as Latin-1 so nothing is lost
    // in reading, and dropped later where only ASCII may go on.
    Ok(line.into_iter().map(char::from).collect())
}

/// The status line and header fields of a response.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut left = MAX_HEAD;
    let line = read_line(reader, &mut left)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s));
    let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
        return Err(invalid("not an HTTP/1.x status line"));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut left)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("a header line without a colon"));
        };
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(invalid("a malformed header name"));
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
}

/// A response body, decoded from its framing (RFC 9112 §6.3).
pub struct ResponseBody {
    reader: BufReader<TcpStream>,
    framing: Framing,
    /// Bytes read already and handed back ([`ResponseBody::unread`]): read first.
    unread: io::Cursor<Vec<u8>>,
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
        Ok(ResponseBody {
            reader,
            framing,
            unread: io::Cursor::default(),
        })
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

    /// Reads a chunk-size line (and, after the last chunk, the trailer).
    fn next_chunk(&mut self, first: bool) -> io::Result<u64> {
        let mut left = 4096;
        if !first && !read_line(&mut self.reader, &mut left)?.is_empty() {
            return Err(invalid("a chunk longer than its size"));
        }
        let line = read_line(&mut self.reader, &mut left)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid("a bad chunk size"))?;
        if size == 0 {
            let mut trailer = MAX_HEAD;
            while !read_line(&mut self.reader, &mut trailer)?.is_empty() {}
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
                let n = self.reader.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Length(left - n as u64);
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
                            return Ok(0);
                        }
                        size
                    }
                };
                let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Chunked {
                    left: Some(left - n as u64),
                    done: false,
                };
                Ok(n)
            }
            Framing::Close => self.reader.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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
        let up = Upstream::new(&url, Duration::from_secs(2), Duration::from_secs(2)).unwrap();
        (up, t)
    }

    #[test]
    fn sends_method_headers_and_body_and_reads_chunked() {
        let (up, t) = one_shot(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
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
    }
}
