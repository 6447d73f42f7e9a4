//! Reading one HTTP/1.1 request (RFC 9112) from the bytes a connection has received so
//! far: the head, then the body's framing, then the body itself, within size caps.
//!
//! Bytes arrive in whatever pieces the client sends; [`Incoming`] takes each piece as it
//! comes, so that a request trickled in byte by byte costs a pool thread nothing between
//! pieces (the connection waits in the waiter) and is never parsed twice. The head is
//! parsed by `httparse`; around it stand the rules that decide how a client can stop a
//! server at this layer: how large a head or a body may be (431, 413, never allocated),
//! and what ambiguous framing gets (400 and a closed connection, never a guess that a
//! smuggled request could hide behind). How long a request may take is the waiter's: one
//! deadline from its first byte.

use std::net::SocketAddr;

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

/// How much a request may be. (How long it may take is the waiter's.)
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line (method, target, version) in bytes.
    pub max_line: usize,
    /// The whole head (request line, header fields, and a chunked body's size lines and
    /// trailer).
    pub max_head: usize,
    /// The body: a larger declared or received body is answered 413.
    pub max_body: u64,
}

impl Limits {
    pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
    pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
}

/// A request that cannot be served: the status to answer and why (then the connection is
/// closed: after a framing error, nobody knows where the next request would start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub u16, pub &'static str);

fn refuse(status: u16, why: &'static str) -> Refusal {
    Refusal(status, why)
}

/// Where reading a request stands after the bytes given so far.
#[derive(Debug)]
pub enum Step {
    /// A whole request; its bytes are gone from the input.
    Complete(Request),
    /// More bytes are needed. `continue_now`: the head asked for `100 Continue` and the
    /// body has not all come: say it now, once.
    More {
        continue_now: bool,
    },
    Refuse(Refusal),
}

/// A request being read, from its first byte to its body's last.
#[derive(Debug, Default)]
pub struct Incoming {
    /// The head, once it has come whole, and what is left of its body.
    body: Option<(Request, Remaining)>,
}

/// What is left to read of a body.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    /// Where the chunks stand, and what is left of the head's cap for their size lines
    /// and trailer.
    Chunked {
        at: Chunks,
        head_left: usize,
    },
}

/// Where a chunked body stands (RFC 9112 §7.1).
#[derive(Debug)]
enum Chunks {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: its line end.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailer,
}

impl Incoming {
    /// Whether part of a request has been read (its head at least).
    pub fn started(&self) -> bool {
        self.body.is_some()
    }

    /// Takes what it can of `input` (the bytes received and not yet taken), draining
    /// what it took.
    pub fn advance(&mut self, input: &mut Vec<u8>, peer: SocketAddr, limits: &Limits) -> Step {
        let mut continue_now = false;
        if self.body.is_none() {
            let (request, used) = match parse_head(input, peer, limits) {
                Err(refusal) => return Step::Refuse(refusal),
                Ok(None) => return Step::More { continue_now },
                Ok(Some(parsed)) => parsed,
            };
            input.drain(..used);
            let remaining = match framing(&request, limits.max_body) {
                Err(refusal) => return Step::Refuse(refusal),
                Ok(Framing::None) => return Step::Complete(request),
                Ok(Framing::Length(n)) => Remaining::Length(n),
                Ok(Framing::Chunked) => Remaining::Chunked {
                    at: Chunks::Size,
                    head_left: limits.max_head.saturating_sub(used),
                },
            };
            match request.header("Expect") {
                None => {}
                // An HTTP/1.0 client cannot have meant it (RFC 9110 §10.1.1).
                Some(_) if request.version == Version::Http10 => {}
                // The client may wait for this before it sends the body.
                Some(e) if e.eq_ignore_ascii_case("100-continue") => continue_now = true,
                Some(_) => return Step::Refuse(refuse(417, "unknown expectation")),
            }
            self.body = Some((request, remaining));
        }
        let Some((request, remaining)) = self.body.as_mut() else {
            unreachable!("the head was just read")
        };
        match read_body(&mut request.body, remaining, input, limits.max_body) {
            Err(refusal) => {
                self.body = None;
                Step::Refuse(refusal)
            }
            Ok(true) => match self.body.take() {
                Some((request, _)) => Step::Complete(request),
                None => unreachable!("a body was being read"),
            },
            Ok(false) => Step::More { continue_now },
        }
    }
}

/// The head's fields a request may carry: more is answered 431.
const MAX_FIELDS: usize = 128;

/// Parses the request line and fields, if the head has come whole: the request (its body
/// still to read) and the bytes the head took.
fn parse_head(
    input: &[u8],
    peer: SocketAddr,
    limits: &Limits,
) -> Result<Option<(Request, usize)>, Refusal> {
    // A few empty lines before a request are ignored (RFC 9112 §2.2): three at most.
    let mut start = 0;
    for _ in 0..3 {
        match &input[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            _ => break,
        }
    }
    let rest = &input[start..];
    if matches!(rest, [b'\r', b'\n', ..] | [b'\n', ..]) {
        return Err(refuse(400, "malformed request line"));
    }
    // The request line's cap is checked before the parser sees it, complete or not.
    let line_end = rest.iter().position(|&b| b == b'\n');
    if line_end.unwrap_or(rest.len()) > limits.max_line {
        return Err(refuse(414, "the request line is too long"));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let used = match parsed.parse(rest) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if input.len() > limits.max_head => {
            return Err(refuse(431, "the request head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "the request head is too large"));
        }
        // The version is judged on the whole line: "HTTP/2" may yet become "HTTP/2.0".
        Err(httparse::Error::Version) if line_end.is_none() => return Ok(None),
        Err(httparse::Error::Version) if names_another_version(rest) => {
            return Err(refuse(505, "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        Err(httparse::Error::Version) => return Err(refuse(400, "malformed request line")),
        Err(httparse::Error::Token | httparse::Error::Status) => {
            return Err(refuse(400, "malformed request line"));
        }
        Err(httparse::Error::NewLine) => return Err(refuse(400, "a bare CR in the request head")),
        Err(_) => return Err(refuse(400, "malformed header field")),
    };
    if start + used > limits.max_head {
        return Err(refuse(431, "the request head is too large"));
    }
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(refuse(400, "malformed request line"));
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let target = reduce_target(target)?;
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        headers.push(field_of(field.name, field.value)?);
    }
    let request = Request {
        method: match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            m => Method::Other(m.to_owned()),
        },
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
    Ok(Some((request, start + used)))
}

/// Whether the request line ends in a well-formed version other than 1.0 and 1.1
/// (answered 505 rather than 400).
fn names_another_version(rest: &[u8]) -> bool {
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(version) = line.rsplit(|&b| b == b' ').next() else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// The target as the proxy uses it: origin-form as sent; the absolute form (which a
/// server must accept, RFC 9112 §3.2.2) reduced to its path and query.
fn reduce_target(target: &str) -> Result<String, Refusal> {
    let bad = || refuse(400, "malformed request line");
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    if target.starts_with('/') {
        return Ok(target.to_owned());
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or_else(bad)?;
    Ok(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_owned(),
    })
}

/// One field as the proxy keeps it; its value's surrounding whitespace trimmed.
fn field_of(name: &str, value: &[u8]) -> Result<(String, String), Refusal> {
    if value
        .iter()
        .any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(refuse(400, "malformed header field"));
    }
    // Field values are octets; anything beyond ASCII is kept as Latin-1 would show it.
    let value: String = value.trim_ascii().iter().map(|&b| b as char).collect();
    Ok((name.to_owned(), value))
}

/// Takes what `input` holds of a body into `body`; `Ok(true)` once it is complete.
fn read_body(
    body: &mut Vec<u8>,
    remaining: &mut Remaining,
    input: &mut Vec<u8>,
    max_body: u64,
) -> Result<bool, Refusal> {
    match remaining {
        Remaining::Length(left) => {
            let take = input
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            body.extend_from_slice(&input[..take]);
            input.drain(..take);
            *left -= take as u64;
            Ok(*left == 0)
        }
        Remaining::Chunked { at, head_left } => {
            let mut used = 0;
            let done = chunks(body, at, head_left, &input[..], &mut used, max_body);
            input.drain(..used);
            done
        }
    }
}

/// Reads chunks from `input` (advancing `used`) until it runs out or the body ends.
fn chunks(
    body: &mut Vec<u8>,
    at: &mut Chunks,
    head_left: &mut usize,
    input: &[u8],
    used: &mut usize,
    max_body: u64,
) -> Result<bool, Refusal> {
    const SIZE_LINE: usize = 1024;
    loop {
        let rest = &input[*used..];
        match at {
            Chunks::Size | Chunks::Trailer => {
                let cap = if matches!(at, Chunks::Size) {
                    SIZE_LINE
                } else {
                    usize::MAX
                };
                let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                    return if rest.len() > cap.min(*head_left) {
                        Err(too_long(at, *head_left, rest.len()))
                    } else {
                        Ok(false)
                    };
                };
                if end + 1 > cap.min(*head_left) {
                    return Err(too_long(at, *head_left, end + 1));
                }
                *head_left -= end + 1;
                *used += end + 1;
                let line = &rest[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.contains(&b'\r') {
                    return Err(refuse(400, "a bare CR in the request head"));
                }
                if matches!(at, Chunks::Trailer) {
                    if line.is_empty() {
                        return Ok(true);
                    }
                    trailer_field(line)?;
                    continue;
                }
                let size = chunk_size(line)?;
                if (body.len() as u64).saturating_add(size) > max_body {
                    return Err(refuse(413, "the request body is too large"));
                }
                *at = if size == 0 {
                    Chunks::Trailer
                } else {
                    Chunks::Data(size)
                };
            }
            Chunks::Data(left) => {
                if rest.is_empty() {
                    return Ok(false);
                }
                let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                body.extend_from_slice(&rest[..take]);
                *used += take;
                *left -= take as u64;
                if *left == 0 {
                    *at = Chunks::DataEnd;
                }
            }
            Chunks::DataEnd => match rest {
                [] | [b'\r'] => return Ok(false),
                [b'\r', b'\n', ..] => {
                    *used += 2;
                    *at = Chunks::Size;
                }
                [b'\n', ..] => {
                    *used += 1;
                    *at = Chunks::Size;
                }
                _ => return Err(refuse(400, "a chunk is longer than its size")),
            },
        }
    }
}

/// The refusal for a size line or trailer over its cap.
fn too_long(at: &Chunks, head_left: usize, len: usize) -> Refusal {
    if matches!(at, Chunks::Size) && len <= head_left {
        refuse(400, "invalid chunk size line")
    } else {
        refuse(431, "the request head is too large")
    }
}

/// A trailer field: checked as a header field is, then not used.
fn trailer_field(line: &[u8]) -> Result<(), Refusal> {
    // A line folded onto the previous one (obs-fold) may be refused (RFC 9112 §5.2).
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(refuse(400, "obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(refuse(400, "malformed header field"))?;
    // No whitespace between the name and the colon (§5.1): it is a smuggling vector.
    if colon == 0 || !line[..colon].iter().all(|&b| is_tchar(b)) {
        return Err(refuse(400, "malformed header field"));
    }
    field_of("", &line[colon + 1..]).map(drop)
}

/// A chunk-size line (without its line end), exactly as RFC 9112 §7.1 writes it:
/// `chunk-size [ chunk-ext ]`, where `chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value
/// ] )` and a value is a token or a quoted string. The size itself is read by `httparse`;
/// anything the grammar does not allow (spaces after the size with no extension, control
/// characters, an unterminated quote) is refused, as a request smuggled past a lenient
/// reader would hide there.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let bad = || refuse(400, "invalid chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let mut framed = line[..digits].to_vec();
    framed.extend_from_slice(b"\r\n");
    let size = match httparse::parse_chunk_size(&framed) {
        Ok(httparse::Status::Complete((_, size))) => size,
        _ => return Err(bad()),
    };
    let mut ext = &line[digits..];
    let skip_ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let token = |s: &mut &[u8]| -> bool {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        *s = &s[n..];
        n > 0
    };
    while !ext.is_empty() {
        skip_ws(&mut ext);
        let [b';', rest @ ..] = ext else {
            return Err(bad());
        };
        ext = rest;
        skip_ws(&mut ext);
        if !token(&mut ext) {
            return Err(bad());
        }
        let mut after = ext;
        skip_ws(&mut after);
        if let [b'=', rest @ ..] = after {
            ext = rest;
            skip_ws(&mut ext);
            if let [b'"', rest @ ..] = ext {
                ext = quoted_rest(rest).ok_or_else(bad)?;
            } else if !token(&mut ext) {
                return Err(bad());
            }
        } else if !after.is_empty() && after[0] != b';' {
            return Err(bad());
        }
    }
    Ok(size)
}

/// What follows a quoted string whose opening quote has been read (RFC 9110 §5.6.4):
/// `None` if it is unterminated or holds a character it may not.
fn quoted_rest(mut s: &[u8]) -> Option<&[u8]> {
    let qdtext = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    loop {
        match s {
            [b'"', rest @ ..] => return Some(rest),
            [b'\\', c, rest @ ..] if qdtext(*c) => s = rest,
            [c, rest @ ..] if *c != b'\\' && qdtext(*c) => s = rest,
            _ => return None,
        }
    }
}

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn framing(request: &Request, max_body: u64) -> Result<Framing, Refusal> {
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
            let chunked = codings
                .iter()
                .filter(|c| c.eq_ignore_ascii_case("chunked"))
                .count();
            match codings.as_slice() {
                [c] if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
                // Chunked twice cannot be undone once (RFC 9112 §6.1): a framing error.
                _ if chunked > 1 => Err(refuse(400, "chunked more than once")),
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

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        1,
    ));

    fn read(bytes: &[u8]) -> Result<Request, Refusal> {
        read_with(bytes, 64 * 1024)
    }

    /// Reads `bytes` given at once, and again given one byte at a time: both must come
    /// to the same end (the waiter hands over whatever pieces the client sent).
    fn read_with(bytes: &[u8], max_body: u64) -> Result<Request, Refusal> {
        let limits = Limits {
            max_line: 100,
            max_head: 1000,
            max_body,
        };
        let whole = feed(&[bytes], &limits);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let trickled = feed(&pieces, &limits);
        assert_eq!(
            status(&whole),
            status(&trickled),
            "whole and trickled differ for {:?}",
            String::from_utf8_lossy(bytes)
        );
        whole
    }

    fn feed(pieces: &[&[u8]], limits: &Limits) -> Result<Request, Refusal> {
        let mut incoming = Incoming::default();
        let mut input = Vec::new();
        for piece in pieces {
            input.extend_from_slice(piece);
            match incoming.advance(&mut input, PEER, limits) {
                Step::Complete(request) => return Ok(request),
                Step::Refuse(refusal) => return Err(refusal),
                Step::More { .. } => {}
            }
        }
        Err(Refusal(0, "incomplete"))
    }

    fn status(r: &Result<Request, Refusal>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(Refusal(s, _)) => *s,
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
            status(&read(b"GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n")),
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
                status(&read(with_host.as_bytes())),
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
        assert_eq!(status(&read(b"GET / HTTP/1.1\r\n\r\n")), 400);
        assert_eq!(
            status(&read(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
            400
        );
        assert_eq!(status(&read(b"GET / HTTP/1.0\r\n\r\n")), 200);
    }

    #[test]
    fn sizes_are_capped() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(status(&read(long_line.as_bytes())), 414);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nA: {}\r\n\r\n",
            "a".repeat(2000)
        );
        assert_eq!(status(&read(big_head.as_bytes())), 431);
        let body = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
        assert_eq!(status(&read_with(body, 10)), 413);
        assert_eq!(status(&read_with(body, 11)), 200);
        let chunked = b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(status(&read_with(chunked, 10)), 413);
        assert_eq!(status(&read_with(chunked, 11)), 200);
    }

    #[test]
    fn absolute_targets_are_reduced_to_their_path() {
        let r = read(b"GET http://example.com/x?y HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(r.target, "/x?y");
        let r = read(b"GET HTTP://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.target, "/");
    }

    #[test]
    fn an_incomplete_request_waits_for_more() {
        assert_eq!(status(&read(b"")), 0);
        assert_eq!(status(&read(b"GET / HTTP/1.1\r\nHost")), 0);
        assert_eq!(
            status(&read(
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab"
            )),
            0
        );
    }

    #[test]
    fn chunk_lines_are_read_as_the_grammar_writes_them() {
        let cases: &[(&[u8], u16)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", 200),
            (b"5 ;a=b\r\nhello\r\n0\r\n\r\n", 200),
            (b"5;a=\"x y\"\r\nhello\r\n0\r\n\r\n", 200),
            (b"5  \r\nhello\r\n0\r\n\r\n", 400),
            (b"5;a=\"\x01\r\nhello\r\n0\r\n\r\n", 400),
            (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", 400),
            (b"5;\r\nhello\r\n0\r\n\r\n", 400),
            (b"5;a=\r\nhello\r\n0\r\n\r\n", 400),
            (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
        ];
        for (body, want) in cases {
            let mut bytes =
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            bytes.extend_from_slice(body);
            let got = read(&bytes);
            assert_eq!(status(&got), *want, "{}", String::from_utf8_lossy(body));
            if let Ok(request) = got {
                assert_eq!(request.body, b"hello");
            }
        }
        let twice = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(status(&read(twice)), 400);
    }

    #[test]
    fn field_values_may_hold_obs_text_and_keep_each_byte() {
        // RFC 9110 §5.5: obs-text (0x80 to 0xFF) is a field value's octets. Each byte is
        // kept as the char of the same number, so that it can be written back unchanged.
        let r = read(b"GET / HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n\r\n")
            .unwrap();
        assert_eq!(r.header("x-obs"), Some("caf\u{e9}"));
        assert_eq!(r.header("x-utf8"), Some("caf\u{c3}\u{a9}"));
    }

    #[test]
    fn pipelined_requests_are_read_one_at_a_time() {
        let limits = Limits {
            max_line: 100,
            max_head: 1000,
            max_body: 100,
        };
        let mut input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET".to_vec();
        let mut incoming = Incoming::default();
        let Step::Complete(a) = incoming.advance(&mut input, PEER, &limits) else {
            panic!("the first request is whole")
        };
        let Step::Complete(b) = incoming.advance(&mut input, PEER, &limits) else {
            panic!("the second request is whole")
        };
        assert_eq!((a.target.as_str(), b.target.as_str()), ("/a", "/b"));
        assert_eq!(b.body, b"ok");
        assert_eq!(input, b"GET");
    }
}
