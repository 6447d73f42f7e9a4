//! The HTTP/1.1 server: an accept loop, a thread per connection, and a pool of workers.
//!
//! Who holds what, and for how long (the reason for this shape):
//! - A **connection thread** owns its socket. It reads each request
//!   ([`request`](super::request), within one deadline and size caps), hands it to a
//!   worker, and writes the response at whatever pace the client reads. A slow or hostile
//!   client costs its own connection thread and nothing else, and the number of
//!   connections is capped (`--max-connections`): past the cap a new connection gets 503
//!   at once and is closed, before any thread is made for it.
//! - A **worker** (`-t` of them) runs [`Service::respond`]: it asks the cache and hands
//!   the answer over ([`spool`](super::spool)): a small one copied out of its segment, a
//!   large one still in it. It never writes to a socket, so no client can hold it.
//! - A **segment** holding a large answer is read straight to the socket by the
//!   connection while its client keeps up; at the first write that lags, the connection
//!   parks the rest in memory and gives the segment back (`Output::send_held`).
//! - **Memory** waiting for slow clients is bounded by the spool's budget
//!   (`--buffer-memory`); past it, the rest of a response is asked for again later
//!   instead of being held.
//! - A client that reads slower than `--min-send-rate` bytes per second, measured over
//!   each `--client-timeout` spent blocked in writes, is cut off.
//!
//! Nothing outlives its connection: the thread ends when the connection does, and its
//! socket is closed with it.

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use super::body::Body;
use super::request::{self, Limits, Method, ReadError, Request, Version};
use super::response::{Head, reason, write_head};
use super::socket;
use super::spool::{self, ALLOWANCE, Budget, CHUNK, Consumer, Held, Item, LAG, Resume};

use crate::shutdown::join_within;

/// What the server answers with.
pub trait Service: Send + Sync + 'static {
    /// Answers `request` through `out`; runs on a pool worker.
    fn respond(self: Arc<Self>, request: &Request, out: spool::Producer);

    /// A response with `status` is about to be sent (counted before the client can see
    /// it, so that a client that read it finds it counted).
    fn sending(&self, _status: u16) {}

    /// A response ended: `Ok(body bytes)` or why it was cut short.
    fn sent(&self, _head: &Head, _outcome: &io::Result<u64>) {}

    /// A connection was admitted (`true`) or has been closed (`false`).
    fn connection(&self, _opened: bool) {}
}

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub threads: usize,
    /// Requests that may wait for a worker; past this, 503 at once.
    pub max_pending: usize,
    /// Connections open at once; past this, 503 at once and close.
    pub max_connections: usize,
    /// How long a connection may stay idle between requests, how long one request may
    /// take to arrive, and the window over which `min_send_rate` is measured.
    pub client_timeout: Duration,
    /// Bytes per second a client must at least read while the server waits to write.
    pub min_send_rate: u64,
    /// The largest request body read (and thrown away); larger ones get 413.
    pub max_body: u64,
}

/// A bound listener, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Once a stop is asked for: when requests in flight must be done.
    drain_until: Arc<Mutex<Option<Instant>>>,
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// After a complete response (or none): close gracefully.
    Close,
    /// A response was cut short of its body: reset.
    CutShort,
}

/// What the connection threads share.
struct Shared<S> {
    service: Arc<S>,
    config: ServerConfig,
    workers: Mutex<ThreadPool>,
    budget: Arc<Budget>,
    stopping: Arc<AtomicBool>,
    /// Open connections, each with its socket so that shutdown can end idle reads.
    connections: Mutex<Vec<(u64, Arc<TcpStream>)>>,
    open: AtomicUsize,
}

/// The stack of a connection thread: it parses, waits and copies, nothing deep.
const CONNECTION_STACK: usize = 256 * 1024;

impl Server {
    /// Binds `addr` with TCP_NODELAY set on every connection.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local); the error names it.
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            local_addr,
            stopping: Arc::default(),
            drain_until: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A function that makes [`run`](Self::run) return, letting requests in flight finish
    /// within the duration it is given: it raises the flag and connects once to wake the
    /// accept call. For the signal thread; called again, it can only shorten the drain.
    pub fn stopper(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        let (stopping, mut addr) = (Arc::clone(&self.stopping), self.local_addr);
        let drain_until = Arc::clone(&self.drain_until);
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        move |drain: Duration| {
            let until = Instant::now() + drain;
            let mut at = lock(&drain_until);
            *at = Some(at.map_or(until, |at| at.min(until)));
            drop(at);
            stopping.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    /// Serves until the stopper is called, then closes the listener, ends idle
    /// connections, lets requests in flight finish within the stopper's drain time, cuts
    /// what is left (so that each such response is logged as aborted), and returns.
    /// `budget` bounds the memory that responses waiting for slow clients hold.
    pub fn run<S: Service>(
        self,
        service: Arc<S>,
        config: ServerConfig,
        budget: Arc<Budget>,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared {
            service,
            workers: Mutex::new(ThreadPool::with_name(
                "proxy-worker".into(),
                config.threads.max(1),
            )),
            budget,
            stopping: Arc::clone(&self.stopping),
            connections: Mutex::default(),
            open: AtomicUsize::new(0),
            config,
        });
        let mut next_id = 0u64;
        let mut last_complaint: Option<Instant> = None;
        for stream in self.listener.incoming() {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the backlog; pause so
                    // that a loop of failures does not spin, and say so now and then.
                    if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        log::warn!("accepting on {}: {e}", self.local_addr);
                        last_complaint = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            next_id += 1;
            shared.admit(next_id, stream);
        }
        // Stop: refuse new connections at once rather than leave them in the backlog, end
        // every idle read (a response being written goes on), then wait.
        drop(self.listener);
        for (_, stream) in lock(&shared.connections).iter() {
            let _ = stream.shutdown(Direction::Read);
        }
        let deadline = || lock(&self.drain_until).unwrap_or_else(Instant::now);
        let left = deadline().saturating_duration_since(Instant::now());
        let running = join_within(&lock(&shared.workers), left);
        if running > 0 {
            log::warn!("{running} requests still running at exit");
        }
        while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline() {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Past the drain: cut the responses still going, so that their writes fail and
        // each is logged (as aborted) before the process exits.
        for (_, stream) in lock(&shared.connections).iter() {
            let _ = stream.shutdown(Direction::Both);
        }
        let cut_by = Instant::now() + Duration::from_secs(1);
        while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < cut_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short answer written by the server itself, then the connection is closed (unless
/// `keep_alive`). `head_only`: the answer to a HEAD, which announces the body and sends
/// none.
fn refusal(status: u16, why: &str, retry: bool, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {}: {why}\n", reason(status));
    let mut head = Head::new(status, "-");
    head.headers
        .push("Content-Type", "text/plain; charset=utf-8");
    if retry {
        head.headers.push("Retry-After", "1");
    }
    head.length = Some(body.len() as u64);
    let mut text = String::new();
    write_head(&mut text, &head, false, keep_alive).expect("formatting into a String");
    if !head_only {
        text.push_str(&body);
    }
    text.into_bytes()
}

impl<S: Service> Shared<S> {
    /// Gives a new connection its thread, or refuses it past the cap.
    fn admit(self: &Arc<Self>, id: u64, stream: TcpStream) {
        let refuse = |stream: TcpStream, why: &str| {
            // A few hundred bytes into an empty send buffer: this does not block.
            let _ = stream.set_nonblocking(true);
            let mut s = &stream;
            let _ = s.write_all(&refusal(503, why, true, false, false));
            let _ = stream.shutdown(Direction::Write);
        };
        if self.open.load(Ordering::SeqCst) >= self.config.max_connections {
            self.service.sending(503);
            refuse(stream, "too many connections, try again");
            return;
        }
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(_) => return, // already gone
        };
        let stream = Arc::new(stream);
        self.open.fetch_add(1, Ordering::SeqCst);
        self.service.connection(true);
        lock(&self.connections).push((id, Arc::clone(&stream)));
        let shared = Arc::clone(self);
        let conn = Arc::clone(&stream);
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                // Forgets the connection however `serve` ends, a panic included, so that
                // its socket is closed and its place under the cap given back.
                struct Forget<S: Service>(Arc<Shared<S>>, u64);
                impl<S: Service> Drop for Forget<S> {
                    fn drop(&mut self) {
                        self.0.forget(self.1);
                    }
                }
                let _forget = Forget(Arc::clone(&shared), id);
                shared.serve(&conn, peer);
            });
        if spawned.is_err() {
            self.forget(id);
            self.service.sending(503);
            if let Ok(stream) = Arc::try_unwrap(stream) {
                refuse(stream, "out of threads, try again");
            }
        }
    }

    /// Takes a connection off the books; its socket closes with the last reference.
    fn forget(&self, id: u64) {
        lock(&self.connections).retain(|(i, _)| *i != id);
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.service.connection(false);
    }

    /// One connection, request after request, until either side closes it.
    fn serve(&self, stream: &TcpStream, peer: SocketAddr) {
        let config = &self.config;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(config.client_timeout));
        let limits = Limits {
            max_line: Limits::DEFAULT_MAX_LINE,
            max_head: Limits::DEFAULT_MAX_HEAD,
            max_body: config.max_body,
            deadline: config.client_timeout,
        };
        let workers = lock(&self.workers).clone();
        let mut reader = BufReader::with_capacity(8 * 1024, stream);
        let mut out = Output::new(stream, config);
        if self.exchanges(&mut reader, &mut out, peer, &limits, &workers) == End::CutShort {
            // No FIN: a reset, so that no client, whatever its framing, can take the
            // partial body for a complete one.
            let _ = socket::reset_on_close(stream);
            return;
        }
        // A lingering close (RFC 9112 §9.6): closing with a pipelined request still unread
        // would reset the connection and could destroy the last answer at the client.
        let _ = stream.shutdown(Direction::Write);
        request::drain_briefly(stream);
    }

    /// Request after request until the connection is to be closed; says how it ends.
    fn exchanges(
        &self,
        reader: &mut BufReader<&TcpStream>,
        out: &mut Output,
        peer: SocketAddr,
        limits: &Limits,
        workers: &ThreadPool,
    ) -> End {
        let (config, stream) = (&self.config, out.stream);
        while !self.stopping.load(Ordering::SeqCst) {
            let request =
                match request::read_request(reader, stream, peer, limits, config.client_timeout) {
                    Ok(request) => request,
                    Err(ReadError::Closed | ReadError::Io(_)) => break,
                    Err(ReadError::Refuse(status, why)) => {
                        super::access::log(&super::access::Record::refused(peer.ip(), status, why));
                        self.service.sending(status);
                        let _ = out.write(&[&refusal(status, why, false, false, false)]);
                        break;
                    }
                };
            let started = Instant::now();
            let keep_alive = request.keeps_alive();
            if workers.queued_count() >= config.max_pending {
                self.service.sending(503);
                let head_only = request.method == Method::Head;
                let refused = refusal(503, "too busy, try again", true, keep_alive, head_only);
                log_access(&request, 503, Ok(0), started, "-");
                if out.write(&[&refused]).is_err() || !keep_alive {
                    break;
                }
                continue;
            }
            let (producer, consumer) = spool::pair(&self.budget);
            let request = Arc::new(request);
            let (service, asked) = (Arc::clone(&self.service), Arc::clone(&request));
            workers.execute(move || service.respond(&asked, producer));
            match self.send(out, &request, consumer, workers, keep_alive, started) {
                Ok(true) => {}
                Ok(false) => break,
                Err(()) => return End::CutShort,
            }
        }
        End::Close
    }

    /// Sends one response; `Ok(keep going)`, or `Err` when it was cut short.
    fn send(
        &self,
        out: &mut Output,
        request: &Request,
        mut consumer: Consumer,
        workers: &ThreadPool,
        keep_alive: bool,
        started: Instant,
    ) -> Result<bool, ()> {
        let Some(head) = consumer.head() else {
            let why = "the request could not be answered";
            self.service.sending(500);
            let _ = out.write(&[&refusal(
                500,
                why,
                false,
                false,
                request.method == Method::Head,
            )]);
            log_access(request, 500, Ok(0), started, "-");
            return Ok(false);
        };
        self.service.sending(head.status);
        let sends_body = request.method != Method::Head && head.has_body();
        let http11 = request.version == Version::Http11;
        let chunked = sends_body && head.length.is_none() && http11;
        // An HTTP/1.0 body of unknown length ends with the connection.
        let close_delimited = sends_body && head.length.is_none() && !http11;
        let keep_alive = keep_alive && !close_delimited && !self.stopping.load(Ordering::SeqCst);
        let mut text = std::mem::take(&mut out.head);
        text.clear();
        write_head(&mut text, &head, chunked, keep_alive).expect("formatting into a String");
        let outcome = if sends_body {
            out.body(
                text.as_bytes(),
                &mut consumer,
                workers,
                &self.budget,
                head.length,
                chunked,
            )
        } else {
            drop(consumer); // a HEAD or 304: whatever the worker produces is not wanted
            out.write(&[text.as_bytes()]).map(|()| 0)
        };
        out.head = text;
        let cut = outcome.is_err();
        self.service.sent(&head, &outcome);
        log_access(request, head.status, outcome, started, head.source);
        if cut { Err(()) } else { Ok(keep_alive) }
    }
}

/// One access-log line (see [`access`](super::access)).
fn log_access(
    request: &Request,
    status: u16,
    outcome: io::Result<u64>,
    started: Instant,
    source: &str,
) {
    super::access::log(&super::access::Record::new(
        request, status, &outcome, started, source,
    ));
}

/// The writing side of a connection: enforces the minimum send rate.
struct Output<'a> {
    stream: &'a TcpStream,
    /// Formatted response heads, capacity kept from one response to the next.
    head: String,
    /// For bodies read from a stream (secondary storage).
    buffer: Box<[u8]>,
    min_rate: u64,
    window: Duration,
    /// Time spent blocked in writes, and bytes written, in the current window.
    spent: Duration,
    written: u64,
}

/// Runs the job for the rest of a response on a worker; returns the connection's new end
/// of the hand-over.
fn resume(job: Resume, workers: &ThreadPool, budget: &Arc<Budget>) -> Consumer {
    let (producer, consumer) = spool::pair(budget);
    workers.execute(move || job(producer));
    consumer
}

/// The rest of a held body read into memory: each piece with the budget it took.
struct Parked(Vec<(Vec<u8>, u64)>);

/// Reads what [`ALLOWANCE`] and this response's share of the budget can take of a held
/// body into memory.
///
/// # Errors
/// The segment failed mid-body (the budget taken is given back).
fn park(held: &mut Box<dyn Held>, budget: &Budget) -> io::Result<Parked> {
    let mut parked = Parked(Vec::new());
    let (mut allowance, mut share) = (ALLOWANCE, budget.per_response());
    while held.remaining() > 0 {
        let n = CHUNK.min(usize::try_from(held.remaining()).unwrap_or(usize::MAX));
        let charged = if n <= allowance {
            allowance -= n;
            0
        } else if n as u64 <= share && budget.try_charge(n as u64) {
            share -= n as u64;
            n as u64
        } else {
            break;
        };
        let mut data = spool::buffer();
        let read = held.by_ref().take(n as u64).read_to_end(&mut data);
        if !matches!(read, Ok(got) if got == n) {
            budget.release(charged);
            for (_, charged) in parked.0 {
                budget.release(charged);
            }
            return Err(read
                .err()
                .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into()));
        }
        parked.0.push((data, charged));
    }
    Ok(parked)
}

/// Where [`Output::send_held_with`] stopped: what is not sent is still in the segment.
struct Lagged {
    /// Body bytes sent.
    sent: u64,
    /// Bytes of the head sent.
    head_sent: usize,
}

/// Body bytes read from a stream per write.
const STREAM_BUFFER: usize = 64 * 1024;

impl<'a> Output<'a> {
    fn new(stream: &'a TcpStream, config: &ServerConfig) -> Output<'a> {
        Output {
            stream,
            head: String::with_capacity(512),
            buffer: Box::default(),
            min_rate: config.min_send_rate,
            window: config.client_timeout,
            spent: Duration::ZERO,
            written: 0,
        }
    }

    /// Writes all of `parts`, in as few system calls as the socket allows.
    ///
    /// # Errors
    /// The client is gone, wrote nothing for a whole window, or read less than the
    /// minimum rate over one.
    fn write(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        // At most four parts (a chunk's size line, the data and its end, after the head):
        // held on the stack, as this runs for every piece of every body.
        let mut held = [IoSlice::new(&[]); 4];
        assert!(parts.len() <= held.len(), "at most four parts per write");
        for (slot, part) in held.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        let mut slices = &mut held[..parts.len()];
        // Drops leading empty parts, so that an empty write is no write at all.
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let (n, _) = self.write_once(slices)?;
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    /// One write call: the bytes it wrote (0 if the socket's timeout passed first) and
    /// how long it blocked.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    fn write_once(&mut self, slices: &[IoSlice]) -> io::Result<(usize, Duration)> {
        let stream = self.stream;
        let (n, took) = self.timed(|| (&mut &*stream).write_vectored(slices).map(|n| (0, n)))?;
        Ok((n.1, took))
    }

    /// Runs one write of up to two parts to the socket, timing it and counting its bytes
    /// against the minimum rate: the bytes it wrote of each (none if the socket's timeout
    /// passed first) and how long it blocked.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    fn timed(
        &mut self,
        write: impl FnOnce() -> io::Result<(usize, usize)>,
    ) -> io::Result<((usize, usize), Duration)> {
        let before = Instant::now();
        let result = write();
        let took = before.elapsed();
        self.spent += took;
        let n = match result {
            Ok((0, 0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                (0, 0)
            }
            Err(e) => return Err(e),
        };
        self.written += (n.0 + n.1) as u64;
        self.check_rate()?;
        Ok((n, took))
    }

    /// Cuts a client that read less than the minimum rate over the last window.
    fn check_rate(&mut self) -> io::Result<()> {
        if self.spent >= self.window {
            let floor = self.min_rate.saturating_mul(self.window.as_secs().max(1));
            if self.written == 0 || self.written < floor {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read {} bytes in {:?} of waiting, below the minimum rate",
                        self.written, self.spent
                    ),
                ));
            }
            (self.spent, self.written) = (Duration::ZERO, 0);
        }
        Ok(())
    }

    /// Sends a body straight out of its segment while the client keeps up: every write
    /// done within [`LAG`]. Once one is not, the client is slower than the channel: the
    /// rest is read out into memory as far as the budget goes (so that the response keeps
    /// the bytes it began with), the segment is released, and what was read is sent at
    /// the client's pace. What the budget could not take is asked for again afterwards.
    /// Returns the bytes sent and the job for the rest, if any is left.
    ///
    /// `head`, if it has not gone yet, goes out in one write with the first bytes.
    fn send_held(
        &mut self,
        head: Option<&[u8]>,
        mut held: Box<dyn Held>,
        budget: &Budget,
    ) -> io::Result<(u64, Option<Resume>)> {
        let outcome = self.send_held_with(head, &mut held);
        let _ = self.stream.set_write_timeout(Some(self.window));
        outcome.and_then(|lagged| {
            // What is left of the body is still in the segment: read what the budget
            // allows of it into memory, let the segment go, and send at the client's pace.
            let parked = park(&mut held, budget)?;
            let next = held.release();
            let head_rest = head.map_or(&[][..], |h| &h[lagged.head_sent..]);
            let mut total = lagged.sent;
            let mut written = self.write(&[head_rest]);
            for (data, charged) in parked.0 {
                if written.is_ok() {
                    written = self.write(&[&data]);
                    total += data.len() as u64;
                }
                budget.release(charged);
                spool::recycle(data);
            }
            written.map(|()| (total, next))
        })
    }

    /// The part of [`send_held`](Self::send_held) that holds the segment: it stops when
    /// the body is out, or when the client lags. Each send goes straight from a slot to
    /// the socket; the wait for the cache's next slot is apart from it, so a slow cache is
    /// never taken for a slow client.
    fn send_held_with(
        &mut self,
        head: Option<&[u8]>,
        held: &mut Box<dyn Held>,
    ) -> io::Result<Lagged> {
        self.stream.set_write_timeout(Some(LAG))?;
        let mut lagged = Lagged {
            sent: 0,
            head_sent: 0,
        };
        let head = head.unwrap_or(&[]);
        // Done when the body is; the head of an empty body goes in `send_held`.
        while held.chunk()? > 0 {
            // The head goes in one call with the first bytes of the body.
            let prefix = &head[lagged.head_sent..];
            let stream = self.stream;
            let ((from_head, n), took) = self.timed(|| held.send(prefix, stream))?;
            lagged.head_sent += from_head;
            lagged.sent += n as u64;
            if took >= LAG && held.remaining() > 0 {
                return Ok(lagged);
            }
        }
        Ok(lagged)
    }

    /// Writes `head` and the body that `consumer` hands over; returns the body bytes.
    fn body(
        &mut self,
        head: &[u8],
        consumer: &mut Consumer,
        workers: &ThreadPool,
        budget: &Arc<Budget>,
        length: Option<u64>,
        chunked: bool,
    ) -> io::Result<u64> {
        let mut head = Some(head);
        let mut sent = 0u64;
        let left = |sent: u64| length.map_or(u64::MAX, |l| l - sent);
        loop {
            match consumer.next() {
                Item::Data(data) => {
                    if data.len() as u64 > left(sent) {
                        return Err(io::Error::other("the body is longer than its length"));
                    }
                    self.chunk(head.take(), &data, chunked)?;
                    sent += data.len() as u64;
                    spool::recycle(data);
                }
                Item::Stream(mut body) => {
                    if let Some(h) = head.take() {
                        self.write(&[h])?;
                    }
                    sent += self.stream_body(&mut body, left(sent), chunked)?;
                    return self.end(sent, length, chunked);
                }
                Item::Resume(job) => *consumer = resume(job, workers, budget),
                // Only bodies of known length are held (a cache's answers), never chunked.
                Item::Held(held) if !chunked => {
                    if held.remaining() > left(sent) {
                        return Err(io::Error::other("the body is longer than its length"));
                    }
                    let (n, next) = self.send_held(head.take(), held, budget)?;
                    sent += n;
                    let Some(job) = next else {
                        return self.end(sent, length, chunked);
                    };
                    *consumer = resume(job, workers, budget);
                }
                Item::Held(_) => {
                    return Err(io::Error::other("a held body in a chunked response"));
                }
                Item::End => {
                    if let Some(h) = head.take() {
                        self.write(&[h])?;
                    }
                    return self.end(sent, length, chunked);
                }
                Item::Failed(e) => return Err(e),
            }
        }
    }

    /// One piece of body, after the head if it has not gone yet.
    fn chunk(&mut self, head: Option<&[u8]>, data: &[u8], chunked: bool) -> io::Result<()> {
        let head = head.unwrap_or_default();
        if chunked && !data.is_empty() {
            let size = format!("{:x}\r\n", data.len());
            self.write(&[head, size.as_bytes(), data, b"\r\n"])
        } else {
            self.write(&[head, data])
        }
    }

    /// The connection's copy buffer, made on first use; put it back with `self.buffer =`.
    fn take_buffer(&mut self) -> Box<[u8]> {
        if self.buffer.is_empty() {
            self.buffer = vec![0; STREAM_BUFFER].into_boxed_slice();
        }
        std::mem::take(&mut self.buffer)
    }

    /// Copies a body that holds no worker, at the client's pace, up to `left` bytes.
    fn stream_body(&mut self, body: &mut Body, left: u64, chunked: bool) -> io::Result<u64> {
        let mut buffer = self.take_buffer();
        let mut sent = 0u64;
        let result = loop {
            let want = buffer
                .len()
                .min(usize::try_from(left - sent).unwrap_or(usize::MAX));
            if want == 0 {
                break Ok(sent);
            }
            match body.read(&mut buffer[..want]) {
                Ok(0) => break Ok(sent),
                Ok(n) => {
                    if let Err(e) = self.chunk(None, &buffer[..n], chunked) {
                        break Err(e);
                    }
                    sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buffer = buffer;
        result
    }

    /// Ends the body: a short one is an error, a chunked one gets its last chunk.
    fn end(&mut self, sent: u64, length: Option<u64>, chunked: bool) -> io::Result<u64> {
        if let Some(length) = length.filter(|&l| l != sent) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {} bytes short", length - sent),
            ));
        }
        if chunked {
            self.write(&[b"0\r\n\r\n"])?;
        }
        Ok(sent)
    }
}
