//! A response's head as the server writes it: the status line, the service's fields, and
//! the fields only the connection can decide (Date, Server, the body's framing,
//! Connection).

use std::time::SystemTime;

use httpdate::HttpDate;

/// The status and fields of a response, as its service gives them.
///
/// `T` is the service's own note on the response (for the proxy: where the body came
/// from), handed back when the response has ended ([`Service::finished`](super::Service)).
pub struct Head<T> {
    pub status: u16,
    /// Header fields in their wire form, each line ending in CRLF, in the order they go
    /// out. The server adds `Date` and `Server` unless they are here already.
    pub fields: Vec<u8>,
    /// The body's length; `None` when it is not known in advance (chunked in HTTP/1.1,
    /// to the connection's close in HTTP/1.0).
    pub length: Option<u64>,
    pub tag: T,
}

impl<T> Head<T> {
    pub fn new(status: u16, tag: T) -> Head<T> {
        Head {
            status,
            fields: Vec::new(),
            length: Some(0),
            tag,
        }
    }

    /// Adds one field (a name and a value the caller has checked for CR and LF).
    pub fn push(&mut self, name: &str, value: &str) {
        self.fields.extend_from_slice(name.as_bytes());
        self.fields.extend_from_slice(b": ");
        self.fields.extend_from_slice(value.as_bytes());
        self.fields.extend_from_slice(b"\r\n");
    }

    /// Whether a response of this status has a body at all (RFC 9110 §6.4.1).
    pub fn has_body(&self) -> bool {
        !matches!(self.status, 100..=199 | 204 | 304)
    }

    fn has_field(&self, name: &str) -> bool {
        self.fields.split(|&b| b == b'\n').any(|line| {
            line.len() > name.len()
                && line[name.len()] == b':'
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        })
    }
}

const SERVER: &str = concat!("shmcache/", env!("CARGO_PKG_VERSION"));

/// Appends the head to `out`, ending with the blank line.
///
/// `chunked`: the body goes in chunked framing (no length known, HTTP/1.1);
/// `keep_alive`: the connection stays open after this response.
pub fn write_head<T>(out: &mut Vec<u8>, head: &Head<T>, chunked: bool, keep_alive: bool) {
    use std::io::Write as _;
    let status = head.status;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    // An origin's Date and Server, in a stored or passed-on header block, are kept: its
    // Date is what the response's age is reckoned from (RFC 9111 §4.2.3).
    if !head.has_field("date") {
        let _ = write!(out, "Date: {}\r\n", HttpDate::from(SystemTime::now()));
    }
    if !head.has_field("server") {
        let _ = write!(out, "Server: {SERVER}\r\n");
    }
    out.extend_from_slice(&head.fields);
    match head.length {
        Some(length) => {
            let _ = write!(out, "Content-Length: {length}\r\n");
        }
        None if chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

/// A short answer the server writes itself (a refused request, overload): a one-line
/// `text/plain` body saying why. `head_only`: the answer to a HEAD, which announces the
/// body and sends none.
pub fn refusal(status: u16, why: &str, retry: bool, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {}: {why}\n", reason(status));
    let mut head = Head::new(status, ());
    head.push("Content-Type", "text/plain; charset=utf-8");
    if retry {
        head.push("Retry-After", "1");
    }
    head.length = Some(body.len() as u64);
    let mut out = Vec::with_capacity(256);
    write_head(&mut out, &head, false, keep_alive);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The reason phrase for a status code (empty for one not listed: it is optional).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_adds_date_and_server_unless_given_and_frames_the_body() {
        let mut head = Head::new(200, ());
        head.push("Content-Type", "text/plain");
        head.length = Some(5);
        let mut out = Vec::new();
        write_head(&mut out, &head, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{text}");
        assert!(text.contains("\r\nServer: shmcache/"));
        assert!(text.ends_with(
            "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
        ));

        let mut head = Head::new(200, ());
        head.push("date", "Tue, 01 Dec 2026 00:00:00 GMT");
        head.push("Server", "origin");
        head.length = None;
        let mut out = Vec::new();
        write_head(&mut out, &head, true, false);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("ate: ").count(), 1, "{text}");
        assert_eq!(text.matches("Server: ").count(), 1, "{text}");
        assert!(text.ends_with("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"));
    }
}
