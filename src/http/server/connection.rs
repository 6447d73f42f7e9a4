//! One client connection, and how a pool thread carries it: read what has arrived, answer
//! each whole request, write while the client keeps up, and say what to wait for next.
//!
//! A connection is always in one of three waits when no thread has it ([`Wait`]): for
//! (the rest of) a request, for room to write a parked answer, or for its lingering
//! close. Each has a deadline, which the waiter's clock enforces.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::output::{Output, Progress};
use super::request::{Incoming, Method, Refusal, Request, Step, Version};
use super::response::refusal;
use super::socket::{self, Interest};
use super::{Ended, Service, Shared};

/// How long a connection closed after its last answer reads off what the client still
/// sends (RFC 9112 §9.6), so that a pipelined request does not turn the close into a reset
/// that would destroy the answer at the client.
const LINGER: Duration = Duration::from_millis(200);

/// What a parked connection waits for, and until when.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wait {
    /// Its next request, or the rest of one: closed when idle past the deadline, or
    /// answered 408 if a request had begun.
    Request { due: Instant },
    /// Room for a parked answer, since `since`; `due` is when the minimum send rate is
    /// next checked.
    Write { since: Instant, due: Instant },
    /// The end of its lingering close.
    Linger { due: Instant },
}

impl Wait {
    pub fn due(&self) -> Instant {
        match *self {
            Wait::Request { due } | Wait::Write { due, .. } | Wait::Linger { due } => due,
        }
    }
}

/// What to do with a connection after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Park(Interest),
    /// Close it (its lingering close is over, or the client left).
    Close,
    /// Reset it: an answer was cut short of its body, and no client may take the part it
    /// got for the whole.
    Reset,
}

/// A response being written, with the request it answers.
struct Exchange<T> {
    request: Request,
    output: Output<T>,
    started: Instant,
}

pub(super) struct Conn<T> {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received and not yet taken by a request.
    input: Vec<u8>,
    incoming: Incoming,
    /// When the request in progress began to arrive: its deadline runs from here.
    began: Option<Instant>,
    /// A whole request the clock read for a pool thread, not yet answered.
    ready: Option<Request>,
    writing: Option<Exchange<T>>,
    pub wait: Wait,
}

/// Bytes read from a socket at a time, into the pool thread's own buffer.
pub(super) const READ_BUFFER: usize = 16 * 1024;

impl<T> Conn<T> {
    pub fn new(stream: TcpStream, peer: SocketAddr, idle: Duration) -> Conn<T> {
        Conn {
            stream,
            peer,
            input: Vec::new(),
            incoming: Incoming::default(),
            began: None,
            ready: None,
            writing: None,
            wait: Wait::Request {
                due: Instant::now() + idle,
            },
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether no request has begun to arrive (nothing would be lost by closing it).
    pub fn is_idle(&self) -> bool {
        matches!(self.wait, Wait::Request { .. }) && self.began.is_none() && self.ready.is_none()
    }
}

impl<T: Send + 'static> Conn<T> {
    /// Carries the connection as far as it goes without waiting for its client.
    pub fn drive<S: Service<Tag = T>>(&mut self, shared: &Shared<S>, buffer: &mut [u8]) -> Next {
        if let Wait::Write { since, .. } = self.wait
            && let Some(exchange) = &mut self.writing
        {
            let progress = match exchange.output.waited(since.elapsed()) {
                Ok(()) => exchange.output.pump(&self.stream, true),
                Err(e) => Progress::Cut(e),
            };
            if let Some(next) = self.progress(shared, progress) {
                return next;
            }
        }
        if let Wait::Linger { .. } = self.wait {
            return self.linger(buffer);
        }
        if let Some(request) = self.ready.take()
            && let Some(next) = self.serve(shared, request)
        {
            return next;
        }
        self.read_and_serve(shared, buffer, true)
    }

    /// Reads and answers requests until the client has no more for now.
    fn read_and_serve<S: Service<Tag = T>>(
        &mut self,
        shared: &Shared<S>,
        buffer: &mut [u8],
        mut from_socket: bool,
    ) -> Next {
        loop {
            match self.read_request(shared, buffer, &mut from_socket) {
                Ok(Some(request)) => {
                    if let Some(next) = self.serve(shared, request) {
                        return next;
                    }
                }
                Ok(None) => return self.wait_for_request(shared),
                Err(next) => return next,
            }
        }
    }

    /// Reads (when `from_socket`) and parses until a request is whole: `Ok(None)` when
    /// more bytes are needed, `Err` when the connection is to end.
    fn read_request<S: Service<Tag = T>>(
        &mut self,
        shared: &Shared<S>,
        buffer: &mut [u8],
        from_socket: &mut bool,
    ) -> Result<Option<Request>, Next> {
        loop {
            if *from_socket {
                match (&self.stream).read(buffer) {
                    Ok(0) => return Err(Next::Close),
                    Ok(n) => {
                        self.began.get_or_insert_with(Instant::now);
                        self.input.extend_from_slice(&buffer[..n]);
                        // A full buffer may have left more behind; anything less did not.
                        *from_socket = n == buffer.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *from_socket = false,
                    Err(_) => return Err(Next::Close),
                }
            }
            if self.input.is_empty() && !self.incoming.started() {
                return Ok(None);
            }
            match self
                .incoming
                .advance(&mut self.input, self.peer, &shared.limits)
            {
                Step::Complete(request) => {
                    // What is left is the start of the next request, sent ahead.
                    self.began = (!self.input.is_empty()).then(Instant::now);
                    return Ok(Some(request));
                }
                Step::More { continue_now } => {
                    if continue_now {
                        // Tiny, into an empty send buffer: it does not block.
                        let _ = (&self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    if !*from_socket {
                        return Ok(None);
                    }
                }
                Step::Refuse(Refusal(status, why)) => {
                    shared.service.refused(self.peer, None, status, why);
                    self.say(&refusal(status, why, false, false, false));
                    return Err(self.close_gracefully());
                }
            }
        }
    }

    /// Writes a short answer of the server's own; a client that cannot take a few
    /// hundred bytes into an empty buffer is not waited for.
    fn say(&self, bytes: &[u8]) {
        let _ = (&self.stream).write_all(bytes);
    }

    /// Parks the connection for its next request (or the rest of this one).
    fn wait_for_request<S: Service<Tag = T>>(&mut self, shared: &Shared<S>) -> Next {
        let timeout = shared.config.client_timeout;
        if shared.stopping.load(Ordering::SeqCst) && self.began.is_none() {
            return self.close_gracefully();
        }
        let due = self.began.unwrap_or_else(Instant::now) + timeout;
        self.wait = Wait::Request { due };
        if self.input.is_empty() && self.input.capacity() > 0 {
            // An idle connection holds no buffer.
            self.input = Vec::new();
        }
        Next::Park(Interest::Read)
    }

    /// Answers one request, writing while the client keeps up; `None` when the
    /// connection goes on to its next request at once.
    fn serve<S: Service<Tag = T>>(&mut self, shared: &Shared<S>, request: Request) -> Option<Next> {
        let keep_alive = request.keeps_alive() && !shared.stopping.load(Ordering::SeqCst);
        let mut output = Output::new(
            &shared.budget,
            (
                request.method == Method::Head,
                request.version == Version::Http11,
                keep_alive,
            ),
            (shared.config.min_send_rate, shared.config.client_timeout),
        );
        let started = Instant::now();
        Arc::clone(&shared.service).respond(&request, output.response(&self.stream));
        let progress = output.pump(&self.stream, false);
        self.writing = Some(Exchange {
            request,
            output,
            started,
        });
        self.progress(shared, progress)
    }

    /// Acts on how a response stands: `None` when it is done and the connection goes on.
    fn progress<S: Service<Tag = T>>(
        &mut self,
        shared: &Shared<S>,
        progress: Progress,
    ) -> Option<Next> {
        let outcome = match progress {
            Progress::Parked => return Some(self.wait_for_room(Instant::now())),
            Progress::Done(bytes) => Ok(bytes),
            Progress::Cut(e) => Err(e),
        };
        let exchange = self.writing.take()?;
        let cut = outcome.is_err();
        let Exchange {
            request,
            mut output,
            started,
        } = exchange;
        if let (Some(status), Some(tag)) = (output.status, output.tag.take()) {
            shared.service.finished(Ended {
                request: &request,
                status,
                tag,
                outcome: &outcome,
                elapsed: started.elapsed(),
            });
        }
        if cut {
            return Some(Next::Reset);
        }
        if !output.keep_alive {
            return Some(self.close_gracefully());
        }
        self.wait = Wait::Request {
            due: Instant::now() + shared.config.client_timeout,
        };
        None
    }

    /// Parks the connection for room to write its answer, from `now` until the minimum
    /// send rate is next due to be checked.
    fn wait_for_room(&mut self, now: Instant) -> Next {
        let left = self
            .writing
            .as_ref()
            .map_or(Duration::ZERO, |e| e.output.window_left());
        self.wait = Wait::Write {
            since: now,
            due: now + left,
        };
        Next::Park(Interest::Write)
    }

    /// Ends the connection with a FIN, then reads off what the client still sends for a
    /// moment ([`LINGER`]).
    pub fn close_gracefully(&mut self) -> Next {
        let _ = self.stream.shutdown(Direction::Write);
        self.wait = Wait::Linger {
            due: Instant::now() + LINGER,
        };
        self.input = Vec::new();
        Next::Park(Interest::Read)
    }

    /// Reads off and drops what the client sends while the connection lingers.
    fn linger(&mut self, buffer: &mut [u8]) -> Next {
        loop {
            match (&self.stream).read(buffer) {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Next::Park(Interest::Read);
                }
                Err(_) => return Next::Close,
            }
        }
    }

    /// The clock found the connection past its deadline: says what becomes of it.
    pub fn expire<S: Service<Tag = T>>(&mut self, shared: &Shared<S>, now: Instant) -> Next {
        match self.wait {
            Wait::Request { .. } if self.began.is_some() => {
                let why = "the request took too long";
                shared.service.refused(self.peer, None, 408, why);
                self.say(&refusal(408, why, false, false, false));
                self.close_gracefully()
            }
            Wait::Request { .. } => self.close_gracefully(),
            Wait::Linger { .. } => Next::Close,
            Wait::Write { since, .. } => {
                let checked = match &mut self.writing {
                    Some(exchange) => exchange.output.waited(now - since),
                    None => Ok(()),
                };
                match checked {
                    Ok(()) => self.wait_for_room(now),
                    Err(e) => self
                        .progress(shared, Progress::Cut(e))
                        .unwrap_or(Next::Reset),
                }
            }
        }
    }

    /// The server's drain time is over: a parked answer is cut (and logged as cut), any
    /// other wait ends.
    pub fn cut<S: Service<Tag = T>>(&mut self, shared: &Shared<S>) -> Next {
        if self.writing.is_some() {
            let e = io::Error::other("the server stopped before the response was sent");
            return self
                .progress(shared, Progress::Cut(e))
                .unwrap_or(Next::Reset);
        }
        Next::Close
    }

    /// For the clock when every pool thread is busy: reads what has arrived. `Ok` when a
    /// whole request now waits for a thread; else what to do with the connection (park it
    /// for more bytes, or end it).
    pub fn read_ahead<S: Service<Tag = T>>(
        &mut self,
        shared: &Shared<S>,
        buffer: &mut [u8],
    ) -> Result<(), Next> {
        if let Wait::Linger { .. } = self.wait {
            return Err(self.linger(buffer));
        }
        let mut from_socket = true;
        match self.read_request(shared, buffer, &mut from_socket)? {
            Some(request) => {
                self.ready = Some(request);
                Ok(())
            }
            None => Err(self.wait_for_request(shared)),
        }
    }

    /// Refuses the request read ahead: every pool thread is busy and enough requests wait.
    pub fn refuse_ready<S: Service<Tag = T>>(&mut self, shared: &Shared<S>) -> Next {
        let Some(request) = self.ready.take() else {
            return self.wait_for_request(shared);
        };
        let why = "too busy, try again";
        let keep_alive = request.keeps_alive();
        shared.service.refused(self.peer, Some(&request), 503, why);
        let head_only = request.method == Method::Head;
        self.say(&refusal(503, why, true, keep_alive, head_only));
        if keep_alive {
            self.wait_for_request(shared)
        } else {
            self.close_gracefully()
        }
    }

    /// Whether a parked answer is what the connection waits for.
    pub fn is_writing(&self) -> bool {
        matches!(self.wait, Wait::Write { .. })
    }

    /// Resets the connection as it closes (for an answer cut short).
    pub fn reset(&self) {
        let _ = socket::reset_on_close(&self.stream);
    }
}
