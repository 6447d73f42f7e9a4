//! Writing one response, on the pool thread that carries its request.
//!
//! The service answers through a [`Response`]: the head ([`Response::start`]), then the
//! body as any of these, in order:
//!
//! - bytes in memory ([`Response::push`]): a small answer, or a fill's bytes as they come
//!   from secondary storage;
//! - a body still held elsewhere ([`Response::hold`], [`Held`]): sent straight out of its
//!   shared-memory slots while the client keeps up;
//! - a reader that holds nothing scarce ([`Response::stream`]): a file, an origin's body;
//! - a job that produces the rest later ([`Response::resume`]).
//!
//! Why it is shaped so: the thread writes while the client keeps up (each write done, or
//! room for it within [`LAG`]). At the first write that does not, the response **parks**:
//! what is left is kept in memory within a budget, and the thread goes back to the pool.
//! The connection then waits in the waiter for room, and whichever pool thread it is
//! handed to next goes on from where this one stopped. So a slow reader holds no thread,
//! and holds a segment for at most one lagging write.
//!
//! Memory is bounded by a [`Budget`] shared by all responses: each response may always
//! hold [`ALLOWANCE`] bytes not yet sent (so small answers never wait for memory), and
//! draws on the budget beyond that, at most a sixteenth of it. When it is spent,
//! [`Response::push`] says so, and the service pauses its response instead: it leaves a
//! way to get the rest ([`Response::resume`] or [`Response::stream`]), which runs once the
//! client has read what came before.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::response::{Head, write_head};
use super::socket;

/// Bytes a response may hold in memory without drawing on the [`Budget`]: answers up to
/// this size are read out whole at once, whatever the budget.
pub const ALLOWANCE: usize = 64 * 1024;

/// How long a write may wait for room before the client is taken for a slow one: far
/// longer than a socket takes to drain to a client that reads, far shorter than anything
/// a client could hold a segment or a thread for.
pub const LAG: Duration = Duration::from_millis(5);

/// Size of the recycled body buffers; [`buffer`] gives one.
pub const CHUNK: usize = 64 * 1024;

/// Recycled buffers kept (at most 4 MiB).
const KEPT_BUFFERS: usize = 64;

static BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer of [`CHUNK`] bytes' capacity, recycled when one is free: its pages are
/// already mapped and likely in cache.
pub fn buffer() -> Vec<u8> {
    let recycled = BUFFERS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    recycled.unwrap_or_else(|| Vec::with_capacity(CHUNK))
}

/// Gives a written buffer back for [`buffer`] to hand out again.
pub fn recycle(mut data: Vec<u8>) {
    if data.capacity() != CHUNK {
        return;
    }
    data.clear();
    let mut kept = BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() < KEPT_BUFFERS {
        kept.push(data);
    }
}

/// The memory that responses waiting for their clients may hold, beyond their
/// [`ALLOWANCE`].
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `n` bytes of the budget if there are that many left.
    pub fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub fn release(&self, n: u64) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// The most one response may take: a sixteenth, so that a few slow clients cannot
    /// take it all from everyone else.
    pub fn per_response(&self) -> u64 {
        self.limit / 16
    }

    /// Bytes taken now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// The rest of a paused response, run by the pool thread that goes on with it.
pub type Resume<T> = Box<dyn for<'a> FnOnce(Response<'a, T>) + Send>;

/// A body held somewhere scarce (a shared-memory segment), to be sent straight from there
/// while the client keeps up and given back as soon as it does not. `T` is the note of
/// the response it belongs to.
pub trait Held<T>: io::Read + Send {
    /// Bytes not yet read.
    fn remaining(&self) -> u64;

    /// Waits until the next bytes are in hand; how many (0: the body is complete). The
    /// wait is on whoever produces them, never on the client.
    fn chunk(&mut self) -> io::Result<usize>;

    /// Sends `prefix` and then bytes in hand to `socket` in one call, with no copy on this
    /// side; returns the bytes sent of each.
    fn send(&mut self, prefix: &[u8], socket: &TcpStream) -> io::Result<(usize, usize)>;

    /// Gives the body's holder back (cancelling the transfer if bytes remain) and returns
    /// the job that produces the rest of the response, if any is left.
    fn release(self: Box<Self>) -> Option<Resume<T>>;
}

/// What is left of a body after what is queued.
enum Rest<T> {
    /// A reader to copy from at the client's pace.
    Stream(Box<dyn Read + Send>),
    /// A job that produces the rest.
    Resume(Resume<T>),
}

/// How a response stands after a turn of writing.
pub enum Progress {
    /// Sent whole: the body bytes.
    Done(u64),
    /// Cut short: the body is incomplete at the client.
    Cut(io::Error),
    /// Waiting for the client to take more: park the connection until it is writable.
    Parked,
}

/// One response being written. Lives in its connection until its last byte is out.
pub struct Output<T> {
    /// What the response's head said, once given.
    pub status: Option<u16>,
    pub tag: Option<T>,
    /// Whether the body is sent at all (not for HEAD, 304, 204).
    sends_body: bool,
    chunked: bool,
    length: Option<u64>,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    /// The request asked for the head alone, or is HTTP/1.1; set at creation.
    head_only: bool,
    http11: bool,
    /// The formatted head and how much of it is out.
    head: Vec<u8>,
    head_sent: usize,
    /// Bytes waiting for the client, each piece with the budget it holds.
    queue: VecDeque<(Vec<u8>, u64)>,
    queued: usize,
    charged: u64,
    /// Body bytes accepted so far (sent or queued).
    body: u64,
    rest: Option<Rest<T>>,
    /// How the producer ended: `Some(Ok)` complete, `Some(Err)` failed.
    ended: Option<io::Result<()>>,
    /// The chunked body's last chunk has been queued or sent.
    terminated: bool,
    /// A write waited [`LAG`] in vain: write no more now, park.
    lagging: bool,
    budget: Arc<Budget>,
    /// The minimum send rate, over windows of waiting for the client.
    min_rate: u64,
    window: Duration,
    /// Time spent waiting for the client to take bytes in the current window, and the
    /// bytes it took meanwhile.
    spent: Duration,
    written: u64,
}

impl<T> Output<T> {
    /// An output for a request: `head_only` for a HEAD, `http11` for its version,
    /// `keep_alive` whether the connection may stay open after it.
    pub(super) fn new(
        budget: &Arc<Budget>,
        (head_only, http11, keep_alive): (bool, bool, bool),
        (min_rate, window): (u64, Duration),
    ) -> Output<T> {
        Output {
            status: None,
            tag: None,
            sends_body: false,
            chunked: false,
            length: None,
            keep_alive,
            head_only,
            http11,
            head: Vec::new(),
            head_sent: 0,
            queue: VecDeque::new(),
            queued: 0,
            charged: 0,
            body: 0,
            rest: None,
            ended: None,
            terminated: false,
            lagging: false,
            budget: Arc::clone(budget),
            min_rate,
            window,
            spent: Duration::ZERO,
            written: 0,
        }
    }

    /// The handle the service writes through.
    pub(super) fn response<'a>(&'a mut self, stream: &'a TcpStream) -> Response<'a, T> {
        Response {
            out: self,
            stream,
            closed: false,
        }
    }

    fn fail(&mut self, e: io::Error) {
        if !matches!(self.ended, Some(Err(_))) {
            self.ended = Some(Err(e));
        }
        self.rest = None;
    }

    fn failed(&self) -> bool {
        matches!(self.ended, Some(Err(_)))
    }

    /// Queues `data` for the client, charged as the allowance and budget say; whether
    /// the response may go on producing (false: memory is spent, pause).
    fn enqueue(&mut self, data: Vec<u8>) -> bool {
        let n = data.len();
        if n == 0 {
            return true;
        }
        let budget = &self.budget;
        let (charged, more) = if self.queued + n <= ALLOWANCE {
            (0, true)
        } else if self.charged + n as u64 <= budget.per_response() && budget.try_charge(n as u64) {
            (n as u64, true)
        } else {
            // Taken anyway (one chunk over is the bound), and the producer pauses.
            (0, false)
        };
        self.queued += n;
        self.charged += charged;
        self.queue.push_back((data, charged));
        more
    }

    /// Counts time spent waiting for the client (in a write, or parked), and cuts a
    /// client that read less than the minimum rate over a whole window of it.
    ///
    /// # Errors
    /// `TimedOut`: the client read less than the minimum rate over a window.
    pub(super) fn waited(&mut self, took: Duration) -> io::Result<()> {
        self.spent += took;
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

    /// The socket is full: waits at most [`LAG`] for room, counting the wait against the
    /// minimum rate. Whether there is room now (else the client lags).
    ///
    /// # Errors
    /// `poll` failed, or the client is below the minimum rate.
    fn room(&mut self, stream: &TcpStream) -> io::Result<bool> {
        let before = Instant::now();
        let room = socket::wait_writable(stream, LAG)?;
        self.waited(before.elapsed())?;
        Ok(room)
    }

    /// How long the response may still wait for room before the rate is checked.
    pub(super) fn window_left(&self) -> Duration {
        self.window.saturating_sub(self.spent)
    }

    /// Writes the head's rest and `parts` after it, waiting at most [`LAG`] at a time
    /// for room; what cannot go now is queued (the head's rest first). `Ok(false)` when
    /// memory for the queue is spent.
    fn emit(&mut self, stream: &TcpStream, parts: &[&[u8]]) -> io::Result<bool> {
        if self.queue.is_empty() && !self.lagging {
            // Taken out for the writes, which borrow it while the rate is counted.
            let head = std::mem::take(&mut self.head);
            let result = self.emit_now(stream, &head, parts);
            self.head = head;
            return result;
        }
        let mut more = true;
        for part in parts {
            more &= self.enqueue(part.to_vec());
        }
        Ok(more)
    }

    /// [`emit`](Self::emit) when nothing is queued: writes at once.
    fn emit_now(&mut self, stream: &TcpStream, head: &[u8], parts: &[&[u8]]) -> io::Result<bool> {
        {
            let mut held = [IoSlice::new(&[]); 5];
            held[0] = IoSlice::new(&head[self.head_sent..]);
            for (slot, part) in held[1..].iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
            }
            let count = 1 + parts.len();
            let mut slices = &mut held[..count];
            IoSlice::advance_slices(&mut slices, 0);
            let mut done = 0usize;
            while !slices.is_empty() {
                match (&mut &*stream).write_vectored(slices) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.written += n as u64;
                        done += n;
                        IoSlice::advance_slices(&mut slices, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !self.room(stream)? {
                            self.lagging = true;
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            // Account for what went: the head first, then the parts in order.
            let head_left = head.len() - self.head_sent;
            let from_head = done.min(head_left);
            self.head_sent += from_head;
            let mut skip = done - from_head;
            if slices.is_empty() {
                return Ok(true);
            }
            let mut more = true;
            for part in parts {
                let take = skip.min(part.len());
                skip -= take;
                if take < part.len() {
                    more &= self.enqueue(part[take..].to_vec());
                }
            }
            Ok(more)
        }
    }

    /// Moves the head's rest into the queue, so that queued bytes keep their order.
    fn queue_head(&mut self) {
        if self.head_sent < self.head.len() {
            let rest = self.head[self.head_sent..].to_vec();
            self.head_sent = self.head.len();
            self.queued += rest.len();
            self.queue.push_front((rest, 0));
        }
    }

    /// Writes what is queued without waiting: `Ok(true)` when the queue is empty.
    fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        self.queue_head();
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let mut count = 0;
            for ((data, _), slot) in self.queue.iter().zip(slices.iter_mut()) {
                *slot = IoSlice::new(data);
                count += 1;
            }
            let n = match (&mut &*stream).write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.written += n as u64;
            self.dequeue(n);
        }
        Ok(true)
    }

    /// Drops `n` written bytes off the front of the queue, giving back their budget.
    fn dequeue(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some((front, charged)) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.drain(..n);
                return;
            }
            n -= front.len();
            let charged = *charged;
            let (data, _) = self.queue.pop_front().expect("the front exists");
            self.charged -= charged;
            self.budget.release(charged);
            recycle(data);
        }
    }

    /// Checks a body piece of `n` bytes against the length announced.
    fn accept(&mut self, n: u64) -> io::Result<()> {
        if self.length.is_some_and(|l| self.body + n > l) {
            return Err(io::Error::other("the body is longer than its length"));
        }
        self.body += n;
        Ok(())
    }

    /// One piece of body: framed as a chunk when chunked.
    fn piece(&mut self, stream: &TcpStream, data: &[u8]) -> io::Result<bool> {
        self.accept(data.len() as u64)?;
        if self.chunked && !data.is_empty() {
            let size = format!("{:x}\r\n", data.len());
            self.emit(stream, &[size.as_bytes(), data, b"\r\n"])
        } else {
            self.emit(stream, &[data])
        }
    }

    /// Goes on with the response: writes what is queued, then what is left to produce,
    /// until it is complete, cut, or the client stops taking bytes.
    ///
    /// `writable`: the connection was handed over because the socket has room again
    /// (after it parked), so writes may wait for the client again.
    pub(super) fn pump(&mut self, stream: &TcpStream, writable: bool) -> Progress {
        if writable {
            self.lagging = false;
        }
        loop {
            if let Some(Err(_)) = &self.ended
                && let Some(Err(e)) = self.ended.take()
            {
                return Progress::Cut(e);
            }
            match self.flush(stream) {
                Ok(true) => {}
                Ok(false) => {
                    self.lagging = true;
                    return Progress::Parked;
                }
                Err(e) => return Progress::Cut(e),
            }
            if self.lagging {
                return Progress::Parked;
            }
            match self.rest.take() {
                Some(Rest::Stream(body)) => {
                    if let Err(e) = self.copy(stream, body) {
                        self.fail(e);
                    }
                }
                Some(Rest::Resume(job)) => job(self.response(stream)),
                None => match &self.ended {
                    Some(Ok(())) => {
                        if let Some(length) = self.length.filter(|&l| l != self.body) {
                            self.fail(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("body ended {} bytes short", length - self.body),
                            ));
                        } else if self.chunked && !self.terminated {
                            self.terminated = true;
                            if let Err(e) = self.emit(stream, &[b"0\r\n\r\n"]) {
                                return Progress::Cut(e);
                            }
                        } else {
                            return Progress::Done(self.body);
                        }
                    }
                    Some(Err(_)) => {}
                    // The service returned without ending the body: never wait for it.
                    None => self.fail(io::Error::other("the response was abandoned")),
                },
            }
        }
    }

    /// Copies from `body` while the client keeps up; keeps the reader for later if it
    /// stops taking bytes.
    fn copy(&mut self, stream: &TcpStream, mut body: Box<dyn Read + Send>) -> io::Result<()> {
        loop {
            if self.lagging {
                self.rest = Some(Rest::Stream(body));
                return Ok(());
            }
            let left = self.length.map_or(u64::MAX, |l| l - self.body);
            if left == 0 {
                break;
            }
            let mut data = buffer();
            let want = CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX)) as u64;
            match (&mut body).take(want).read_to_end(&mut data) {
                Ok(0) => {
                    recycle(data);
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let more = self.piece(stream, &data)?;
            recycle(data);
            if !more {
                // Memory is spent: what is queued goes first; the rest of the reader
                // waits for room.
                self.lagging = true;
            }
        }
        self.ended = Some(Ok(()));
        Ok(())
    }

    /// Reads what the allowance and this response's share of the budget can take of a
    /// held body into the queue, so that its holder can be given back.
    fn park(&mut self, held: &mut Box<dyn Held<T>>) -> io::Result<()> {
        while held.remaining() > 0 {
            let n = CHUNK.min(usize::try_from(held.remaining()).unwrap_or(usize::MAX));
            let mut data = buffer();
            let read = held.by_ref().take(n as u64).read_to_end(&mut data)?;
            if read != n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.accept(n as u64)?;
            if !self.enqueue(data) {
                break;
            }
        }
        Ok(())
    }
}

impl<T> Drop for Output<T> {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

/// The service's end of a response: the head, then the body in any of the forms the
/// module page lists. Dropped without an ending, the response is taken as failed.
pub struct Response<'a, T> {
    out: &'a mut Output<T>,
    stream: &'a TcpStream,
    closed: bool,
}

/// The client is gone (or the response failed): nobody will send what is produced.
#[derive(Debug)]
pub struct Gone;

impl<T: Send + 'static> Response<'_, T> {
    /// Gives the status line and fields; the body follows. Formats the head at once,
    /// with the framing the request's version and method call for.
    pub fn start(&mut self, head: Head<T>) {
        let out = &mut *self.out;
        out.sends_body = !out.head_only && head.has_body();
        out.chunked = out.sends_body && head.length.is_none() && out.http11;
        // An HTTP/1.0 body of unknown length ends with the connection.
        let close_delimited = out.sends_body && head.length.is_none() && !out.http11;
        out.keep_alive &= !close_delimited;
        out.length = if out.sends_body { head.length } else { None };
        out.head.clear();
        write_head(&mut out.head, &head, out.chunked, out.keep_alive);
        out.status = Some(head.status);
        out.tag = Some(head.tag);
    }

    /// Whether body bytes are wanted at all (not for a HEAD, a 304, a 204).
    pub fn wants_body(&self) -> bool {
        self.out.sends_body
    }

    /// Body bytes. `Ok(true)`: go on; `Ok(false)`: taken, but memory is spent, so pause
    /// the response (with [`resume`](Self::resume) or [`stream`](Self::stream)) rather
    /// than produce more now.
    ///
    /// # Errors
    /// [`Gone`] when the client is gone or the response failed: stop and drop the body.
    pub fn push(&mut self, data: Vec<u8>) -> Result<bool, Gone> {
        let out = &mut *self.out;
        if out.failed() {
            return Err(Gone);
        }
        if !out.sends_body {
            return Ok(true);
        }
        match out.piece(self.stream, &data) {
            Ok(more) => {
                recycle(data);
                Ok(more)
            }
            Err(e) => {
                out.fail(e);
                Err(Gone)
            }
        }
    }

    /// The body is complete.
    pub fn end(mut self) {
        self.closed = true;
        if self.out.ended.is_none() {
            self.out.ended = Some(Ok(()));
        }
    }

    /// The body failed part-way.
    pub fn fail(mut self, e: io::Error) {
        self.closed = true;
        self.out.fail(e);
    }

    /// The rest of the body is `body`, read at the client's pace.
    pub fn stream(mut self, body: Box<dyn Read + Send>) {
        self.closed = true;
        if !self.out.sends_body {
            self.out.ended = Some(Ok(()));
            return;
        }
        self.out.rest = Some(Rest::Stream(body));
    }

    /// The rest of the body is for `job` to produce, once what came before is out.
    pub fn resume(mut self, job: Resume<T>) {
        self.closed = true;
        if !self.out.sends_body {
            self.out.ended = Some(Ok(()));
            return;
        }
        self.out.rest = Some(Rest::Resume(job));
    }

    /// The rest of the body is `held`: sent straight from it while the client keeps up.
    /// At the first write that waits [`LAG`] in vain, what the budget allows of the rest
    /// is read into memory, `held` is given back, and the job it returns (if bytes are
    /// left that memory could not take) produces the rest later.
    pub fn hold(mut self, mut held: Box<dyn Held<T>>) {
        self.closed = true;
        let (out, stream) = (&mut *self.out, self.stream);
        if !out.sends_body {
            out.ended = Some(Ok(()));
            return;
        }
        if out.length.is_some_and(|l| out.body + held.remaining() > l) {
            return out.fail(io::Error::other("the body is longer than its length"));
        }
        // Straight from the holder only while nothing waits before it.
        let sent_all = if out.queue.is_empty() && !out.lagging {
            match send_held(out, stream, &mut held) {
                Ok(sent_all) => sent_all,
                Err(e) => return out.fail(e),
            }
        } else {
            false
        };
        if !sent_all {
            out.lagging = true;
            if let Err(e) = out.park(&mut held) {
                return out.fail(e);
            }
        }
        // Sent or parked: the holder goes back, and what comes after it (a body may be
        // one window of a longer response) is the rest.
        match held.release() {
            Some(job) => out.rest = Some(Rest::Resume(job)),
            None => out.ended = Some(Ok(())),
        }
    }
}

/// Sends `held` straight to the socket while every write finds room within [`LAG`]:
/// `Ok(true)` when all of it went, `Ok(false)` when the client lagged.
fn send_held<T>(
    out: &mut Output<T>,
    stream: &TcpStream,
    held: &mut Box<dyn Held<T>>,
) -> io::Result<bool> {
    while held.chunk()? > 0 {
        // The head goes in one call with the first bytes of the body.
        let prefix = &out.head[out.head_sent..];
        match held.send(prefix, stream) {
            Ok((from_head, n)) => {
                out.head_sent += from_head;
                out.body += n as u64;
                out.written += (from_head + n) as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !out.room(stream)? {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl<T> Drop for Response<'_, T> {
    fn drop(&mut self) {
        if !self.closed {
            // The service panicked or forgot: never let the connection wait forever.
            self.out
                .fail(io::Error::other("the response was abandoned"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair: the server's end non-blocking, as the pool's sockets are.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    fn output(budget: &Arc<Budget>) -> Output<()> {
        Output::new(budget, (false, true, true), (1, Duration::from_secs(30)))
    }

    fn head(length: u64) -> Head<()> {
        let mut head = Head::new(200, ());
        head.length = Some(length);
        head
    }

    /// Reads from `client` until `n` bytes after the head's blank line have come.
    fn read_body(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0; 1 << 16];
        loop {
            if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n")
                && all.len() >= end + 4 + n
            {
                return all[end + 4..].to_vec();
            }
            let got = client.read(&mut buf).unwrap();
            assert!(got > 0, "the server closed early");
            all.extend_from_slice(&buf[..got]);
        }
    }

    #[test]
    fn a_small_answer_goes_at_once_and_never_touches_the_budget() {
        let (server, mut client) = pair();
        let budget = Budget::new(0);
        let mut out = output(&budget);
        let mut r = out.response(&server);
        r.start(head(5));
        assert!(r.push(b"hello".to_vec()).unwrap());
        r.end();
        assert!(matches!(out.pump(&server, false), Progress::Done(5)));
        assert_eq!(read_body(&mut client, 5), b"hello");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_answer_the_client_does_not_read_parks_within_its_share_and_gives_it_back() {
        let (server, mut client) = pair();
        // A response may take a sixteenth of the budget beyond its allowance: 256 KiB.
        let budget = Budget::new(4 << 20);
        let total = 8 << 20;
        let mut out = output(&budget);
        let mut r = out.response(&server);
        r.start(head(total as u64));
        let mut pushed = 0;
        // The client reads nothing: the socket fills, the answer parks, and the producer
        // is told to pause once the share is spent, long before the whole is pushed.
        while pushed < total {
            let more = r.push(vec![7; CHUNK]).unwrap();
            pushed += CHUNK;
            if !more {
                break;
            }
        }
        assert!(pushed < total, "the producer was told to pause");
        let used = budget.used();
        assert!(
            used > 0 && used <= budget.per_response(),
            "{used} bytes of the budget"
        );
        let rest = total - pushed;
        r.stream(Box::new(io::repeat(7).take(rest as u64)));
        assert!(matches!(out.pump(&server, false), Progress::Parked));
        // The client reads now: each time the socket has room, the answer goes on.
        let reader = std::thread::spawn(move || read_body(&mut client, total));
        let sent = loop {
            assert!(socket::wait_writable(&server, Duration::from_secs(10)).unwrap());
            match out.pump(&server, true) {
                Progress::Parked => {}
                Progress::Done(n) => break n,
                Progress::Cut(e) => panic!("cut: {e}"),
            }
        };
        assert_eq!(sent, total as u64);
        let body = reader.join().unwrap();
        assert!(body.len() == total && body.iter().all(|&b| b == 7));
        drop(out);
        assert_eq!(budget.used(), 0, "all of the budget given back");
    }

    /// Starts a response of `length` bytes on a fresh pair, lets `produce` write to it, and
    /// says whether the response was cut.
    fn cut_after(length: u64, produce: impl FnOnce(Response<'_, ()>)) -> bool {
        let (server, _client) = pair();
        let budget = Budget::new(0);
        let mut out = output(&budget);
        let mut r = out.response(&server);
        r.start(head(length));
        produce(r);
        matches!(out.pump(&server, false), Progress::Cut(_))
    }

    #[test]
    fn a_response_left_without_an_ending_is_cut_not_waited_for() {
        assert!(cut_after(10, |mut r| {
            r.push(b"12345".to_vec()).unwrap();
        }));
    }

    #[test]
    fn a_body_longer_than_its_length_is_refused() {
        assert!(cut_after(3, |mut r| {
            assert!(r.push(b"12345".to_vec()).is_err());
            r.end();
        }));
    }
}
