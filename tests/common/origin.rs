//! The tests' HTTP origin: one server on loopback whose every answer a test decides
//! ([`Scripted`]), and a file-serving origin built on it ([`Origin`]). Requests are parsed
//! with httparse, as the proxy parses its origin's answers, and connections are kept
//! alive, as the proxy keeps them, so the tests see which connection carried what.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Header lines in the order received, names as sent; values as Latin-1 (one char per
    /// byte), so that obs-text arrives as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection carried it (0, 1, … in the order accepted).
    pub connection: usize,
    /// Its place on that connection: 1 for the first request, 2 for the next …
    pub nth_on_connection: usize,
}

impl Seen {
    /// The first line of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the origin answers: a status, header lines, a body. The body goes with a
/// Content-Length, or chunked when the headers say `Transfer-Encoding: chunked`; none goes
/// to HEAD or with 204 and 304. Or, with [`Answer::disconnect`], nothing at all.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Raw header lines (`Name: value` without CRLF), sent after `headers` as they are:
    /// for bytes that are not UTF-8.
    pub raw_headers: Vec<Vec<u8>>,
    /// Close the connection instead of answering.
    pub disconnect: bool,
}

impl Answer {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            raw_headers: Vec::new(),
            disconnect: false,
        }
    }

    /// No answer: the connection is closed as soon as the request is in.
    pub fn disconnect() -> Answer {
        Answer {
            disconnect: true,
            ..Answer::new(0, &[], b"")
        }
    }
}

type Script = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

/// An HTTP origin on loopback whose every answer a test decides: `script` gets each
/// request and its number (1, 2, … over all requests), and every request is recorded, so
/// a test can check what the proxy forwarded, how often it asked, and on which connection.
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn start(script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (log, script) = (Arc::clone(&log), Arc::clone(&script));
                std::thread::spawn(move || serve(stream, connection, &log, &*script));
            }
        });
        Scripted { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("no request yet")
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// A request's method, target and header lines.
type RequestHead = (String, String, Vec<(String, String)>);

/// Reads one request head with httparse; `None` when the connection ends first.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<RequestHead> {
    let mut buf = Vec::new();
    loop {
        let available = reader.fill_buf().ok()?;
        if available.is_empty() {
            return None;
        }
        let start = buf.len();
        buf.extend_from_slice(available);
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut slots);
        match request
            .parse(&buf)
            .expect("the proxy sent a valid request head")
        {
            httparse::Status::Complete(len) => {
                let head = (
                    request.method.unwrap().to_owned(),
                    request.path.unwrap().to_owned(),
                    request
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), latin1(h.value)))
                        .collect(),
                );
                reader.consume(len - start);
                return Some(head);
            }
            httparse::Status::Partial => {
                let n = buf.len() - start;
                reader.consume(n);
            }
        }
    }
}

fn serve(stream: TcpStream, connection: usize, log: &Mutex<Vec<Seen>>, script: &Script) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for nth_on_connection in 1.. {
        let Some((method, target, headers)) = read_request(&mut reader) else {
            return;
        };
        let mut request = Seen {
            method,
            target,
            headers,
            body: Vec::new(),
            connection,
            nth_on_connection,
        };
        let len = request
            .header("content-length")
            .map_or(0, |l| l.parse::<usize>().unwrap());
        request.body = vec![0; len];
        if reader.read_exact(&mut request.body).is_err() {
            return;
        }
        let number = {
            let mut log = log.lock().unwrap();
            log.push(request.clone());
            log.len()
        };
        let answer = script(&request, number);
        if answer.disconnect {
            return;
        }
        let mut head = format!("HTTP/1.1 {} X\r\n", answer.status).into_bytes();
        for (n, v) in &answer.headers {
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        for line in &answer.raw_headers {
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n");
        }
        let chunked = answer
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        let no_body = request.method == "HEAD" || matches!(answer.status, 204 | 304);
        let mut out = head;
        if chunked {
            out.extend_from_slice(b"\r\n");
            if !no_body {
                for part in answer.body.chunks(7) {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            if answer.status != 204 {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n", answer.body.len()).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            if !no_body {
                out.extend_from_slice(&answer.body);
            }
        }
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

/// What [`Origin`] serves for one path.
#[derive(Clone)]
pub struct OriginFile {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Send the body chunked, without Content-Length.
    pub chunked: bool,
    /// A `Cache-Control` header to send, if any.
    pub cache_control: Option<String>,
}

impl OriginFile {
    pub fn new(body: Vec<u8>) -> OriginFile {
        OriginFile {
            body,
            etag: None,
            last_modified: None,
            chunked: false,
            cache_control: None,
        }
    }
}

/// An origin that serves files put into it (404 for anything else, 500 for `/fail`),
/// answers `If-None-Match` with 304, counts requests per path, and can wait before each
/// answer so that concurrent misses overlap, or be "down" (every request is met with a
/// closed connection).
pub struct Origin {
    pub addr: SocketAddr,
    scripted: Scripted,
    files: Arc<Mutex<HashMap<String, OriginFile>>>,
    /// Responses that carried a body, by path.
    bodies: Arc<Mutex<HashMap<String, usize>>>,
    down: Arc<AtomicBool>,
    /// Requests met while down, so [`Origin::hits`] counts only those answered.
    refused: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    pub fn start(delay: Duration) -> Origin {
        let files: Arc<Mutex<HashMap<String, OriginFile>>> = Arc::default();
        let bodies: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let refused: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let (f, b, r, d) = (
            Arc::clone(&files),
            Arc::clone(&bodies),
            Arc::clone(&refused),
            Arc::clone(&down),
        );
        let scripted = Scripted::start(move |seen, _| {
            let path = seen.target.clone();
            if d.load(Ordering::SeqCst) {
                *r.lock().unwrap().entry(path).or_default() += 1;
                return Answer::disconnect();
            }
            std::thread::sleep(delay);
            let file = f.lock().unwrap().get(&path).cloned();
            let Some(file) = file else {
                return match path.as_str() {
                    "/fail" => Answer::new(500, &[], b""),
                    _ => Answer::new(404, &[], b""),
                };
            };
            let mut headers = Vec::new();
            if let Some(cc) = &file.cache_control {
                headers.push(("Cache-Control", cc.as_str()));
            }
            if file.etag.is_some() && seen.header("if-none-match") == file.etag.as_deref() {
                return Answer::new(304, &headers, b"");
            }
            *b.lock().unwrap().entry(path).or_default() += 1;
            if let Some(e) = &file.etag {
                headers.push(("ETag", e));
            }
            if let Some(m) = &file.last_modified {
                headers.push(("Last-Modified", m));
            }
            if file.chunked {
                headers.push(("Transfer-Encoding", "chunked"));
            }
            Answer::new(200, &headers, &file.body)
        });
        Origin {
            addr: scripted.addr,
            scripted,
            files,
            bodies,
            down,
            refused,
        }
    }

    /// Responses with a body sent for `path`.
    pub fn bodies(&self, path: &str) -> usize {
        self.bodies.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn put(&self, path: &str, file: OriginFile) {
        self.files.lock().unwrap().insert(path.to_owned(), file);
    }

    /// Requests answered for `path`.
    pub fn hits(&self, path: &str) -> usize {
        let all = self
            .scripted
            .seen()
            .iter()
            .filter(|s| s.target == path)
            .count();
        all - self.refused.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn url(&self) -> String {
        self.scripted.url()
    }
}
