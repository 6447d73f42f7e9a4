//! The transfer protocol over one segment: a writer ([`Sender`]) moves a [`Head`] and a
//! stream of bytes (a header block and a body) to a reader ([`Receiver`]) through the
//! segment's ring of slots. For GET the cache writes and the proxy reads; for STORE
//! (filling the cache on a miss) the roles swap.
//!
//! Chunk `j` of a body travels in slot `j % slots`. The writer takes a unit of `free`
//! before it fills a slot and posts `ready` after; the reader takes `ready` before it
//! copies a slot out and posts `free` after. The head (status, lengths, generation) is
//! written before the first chunk, so the first `ready` publishes both. A body of zero
//! bytes still sends one empty chunk: every transfer is at least one handoff.
//!
//! The reader gives back the last slot only when it is done with the whole transfer
//! ([`Receiver::finish`]); a writer that needs to know that (STORE: "the entry is in")
//! waits until every unit of `free` is back ([`Sender::wait_drained`]). Either way, a
//! transfer that completes leaves both semaphores at rest (`ready` = 0, `free` = slots).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::call::{Head, Stream};
use super::segment::Segment;
use super::sem::{Semaphore, WaitError};
use super::sys::{ProcessHandle, process_alive};
use super::wire::{self, Envelope, HeadFormat};

/// Why a transfer did not complete.
#[derive(Debug)]
pub enum ChannelError {
    /// The peer did not hand over the next slot in time: slow, stuck or dead.
    TimedOut,
    /// The peer's process has exited: nothing more will come.
    PeerGone,
    /// The asker abandoned the transfer (its client hung up).
    Cancelled,
    /// The segment has moved on to another generation: this transfer is stale.
    Stale,
    /// The peer broke the protocol: a length or status that cannot be right.
    Protocol(&'static str),
    /// The peer wrote a head that does not decode.
    Malformed(wire::WireError),
    /// A semaphore call failed.
    Os(io::Error),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::TimedOut => write!(f, "peer did not answer in time"),
            ChannelError::PeerGone => write!(f, "peer process has exited"),
            ChannelError::Cancelled => write!(f, "transfer cancelled by the asker"),
            ChannelError::Stale => write!(f, "segment generation changed"),
            ChannelError::Protocol(why) => write!(f, "protocol violation: {why}"),
            ChannelError::Malformed(e) => write!(f, "protocol violation: {e}"),
            ChannelError::Os(e) => write!(f, "semaphore: {e}"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// The process at the other end of a channel, as the waits on it see it: whether it has
/// exited, and how many waits on it ran out their timeout (a stall).
///
/// Its pid is learned from the first answer (every head carries the writer's pid), so until
/// then a wait cannot tell a dead peer from a slow one and runs its full timeout.
#[derive(Debug, Default)]
pub struct Peer {
    process: OnceLock<Watched>,
    /// Set once the process is seen to have exited; it never comes back.
    gone: AtomicBool,
    stalls: AtomicU64,
}

#[derive(Debug)]
struct Watched {
    pid: u32,
    /// `None` where pidfds are unavailable (kernel before 5.3, seccomp): then
    /// `kill(pid, 0)`, which cannot see a zombie or a reused pid, but is better than nothing.
    handle: Option<ProcessHandle>,
}

impl Peer {
    /// Records the pid an answer carried. Only the first one counts: a `Peer` stands for
    /// one process (the proxy keeps one per cache queue, and a queue is created by one
    /// process). Cheap after that, one atomic load, since it runs for every answer.
    pub fn learn(&self, pid: u32) {
        if pid == 0 || self.process.get().is_some() {
            return;
        }
        self.process.get_or_init(|| {
            let handle = ProcessHandle::open(pid)
                .inspect_err(|e| {
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        self.gone.store(true, Ordering::Relaxed);
                    } else {
                        log::debug!("no pidfd for pid {pid} ({e}); watching it with kill(pid, 0)");
                    }
                })
                .ok();
            Watched { pid, handle }
        });
    }

    /// The pid learned, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.get().map(|w| w.pid)
    }

    /// Whether the process is known to have exited. Costs one system call once the pid is
    /// known and until it has exited; call it only where a wait is already long.
    pub fn is_gone(&self) -> bool {
        if self.has_gone() {
            return true;
        }
        let exited = match self.process.get() {
            None => false,
            Some(Watched {
                handle: Some(handle),
                ..
            }) => handle.has_exited(),
            Some(Watched { pid, handle: None }) => !process_alive(*pid),
        };
        if exited {
            self.gone.store(true, Ordering::Relaxed);
        }
        exited
    }

    /// What [`is_gone`](Self::is_gone) last found, without a system call.
    pub fn has_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Waits on this peer that ran out their timeout, so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Counts a wait on this peer that ran out its timeout (the channel does this itself;
    /// waits outside it, such as for room in the request queue, report theirs here).
    pub fn note_stall(&self) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long each wait on the peer may last, and which peer to watch meanwhile.
///
/// A plain `Duration` converts into a patience that watches nobody: each wait then runs
/// until it is served or times out. With a [`Peer`], a wait that has lasted
/// [`PEER_CHECK`] checks after each such slice whether the peer's process has exited, and
/// ends with [`ChannelError::PeerGone`] if so; a wait that times out counts a stall.
#[derive(Debug, Clone)]
pub struct Patience {
    timeout: Duration,
    peer: Option<Arc<Peer>>,
}

/// How often a long wait on a watched peer checks that its process is still there; what a
/// dead peer costs a waiter at most, beyond the time it already waited.
pub const PEER_CHECK: Duration = Duration::from_millis(50);

impl Patience {
    pub fn watching(timeout: Duration, peer: Arc<Peer>) -> Patience {
        Patience {
            timeout,
            peer: Some(peer),
        }
    }

    /// Takes one unit of `sem`, waiting as this patience allows.
    fn wait(&self, sem: Semaphore<'_>) -> Result<(), ChannelError> {
        self.wait_for(sem, self.timeout)
    }

    /// Like [`wait`](Self::wait), but for at most `timeout`.
    fn wait_for(&self, sem: Semaphore<'_>, timeout: Duration) -> Result<(), ChannelError> {
        let Some(peer) = &self.peer else {
            return Ok(sem.wait_timeout(timeout)?);
        };
        let result = sem.wait_checking(timeout, PEER_CHECK, || peer.is_gone());
        if result == Err(WaitError::TimedOut) {
            peer.note_stall();
        }
        Ok(result?)
    }
}

impl From<Duration> for Patience {
    fn from(timeout: Duration) -> Patience {
        Patience {
            timeout,
            peer: None,
        }
    }
}

/// Waits for the next `ready`, then checks that the writer did not abandon the transfer
/// (an abandoning writer posts `ready` once to wake us).
fn wait_ready(seg: &Segment, patience: &Patience) -> Result<(), ChannelError> {
    patience.wait(seg.ready())?;
    if seg.is_cancelled() {
        return Err(ChannelError::Cancelled);
    }
    Ok(())
}

impl From<WaitError> for ChannelError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::TimedOut => ChannelError::TimedOut,
            // The channel's only reason to give up a wait is a peer that has exited.
            WaitError::GaveUp => ChannelError::PeerGone,
            WaitError::Os(errno) => ChannelError::Os(io::Error::from_raw_os_error(errno)),
        }
    }
}

impl ChannelError {
    /// The channel error an I/O error carries, when it came from a `Read` over a transfer
    /// (see the `From` below); any other error as `Os`.
    pub(super) fn from_io(e: io::Error) -> ChannelError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return ChannelError::Protocol("the stream ended early");
        }
        if e.get_ref().is_some_and(|inner| inner.is::<ChannelError>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<ChannelError>().expect("checked above");
        }
        ChannelError::Os(e)
    }
}

impl From<ChannelError> for io::Error {
    fn from(e: ChannelError) -> io::Error {
        let kind = match e {
            ChannelError::TimedOut => io::ErrorKind::TimedOut,
            ChannelError::PeerGone => io::ErrorKind::BrokenPipe,
            ChannelError::Os(e) => return e,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// The writing end of one transfer: the head first, then body bytes as they come, each
/// slot handed over as soon as it is full.
///
/// Each wait for a free slot lasts at most the timeout; after each one the writer checks
/// that the transfer was not cancelled and that the segment is still on its generation, so
/// a slow or late writer never writes into someone else's transfer.
///
/// Like [`Receiver`], it does not own the segment (the caller's lease or mapping does), so
/// each call takes it as an argument; it must be the same segment every time.
#[derive(Debug)]
pub struct Sender {
    generation: u64,
    patience: Patience,
    /// Index of the chunk being filled.
    chunk: u64,
    /// Bytes in the current slot, if one is held.
    filled: Option<usize>,
    /// Stream bytes announced in the head and not yet written.
    remaining: u64,
}

impl Sender {
    /// Writes `head` for the transfer numbered `generation`, saying that the stream is
    /// made up as `stream` says; the stream follows through [`write`](Self::write), exactly
    /// `stream.len()` bytes of it.
    pub fn start<H: HeadFormat>(
        seg: &Segment,
        generation: u64,
        head: &H,
        stream: Stream,
        patience: impl Into<Patience>,
    ) -> Result<Sender, ChannelError> {
        if seg.generation() != generation {
            return Err(ChannelError::Stale);
        }
        seg.write_head(&head.encode(stream, generation));
        Ok(Sender {
            generation,
            patience: patience.into(),
            chunk: 0,
            filled: None,
            remaining: stream.len(),
        })
    }

    fn slot(&self, seg: &Segment) -> usize {
        (self.chunk % seg.slots() as u64) as usize
    }

    /// Takes the next free slot, checking that the transfer is still ours.
    fn take_slot(&mut self, seg: &Segment) -> Result<usize, ChannelError> {
        self.patience.wait(seg.free())?;
        if seg.is_cancelled() {
            return Err(ChannelError::Cancelled);
        }
        if seg.generation() != self.generation {
            return Err(ChannelError::Stale);
        }
        self.filled = Some(0);
        Ok(0)
    }

    fn hand_over(&mut self, seg: &Segment, len: usize) -> Result<(), ChannelError> {
        seg.set_slot_len(self.slot(seg), len);
        self.filled = None;
        self.chunk += 1;
        seg.ready().post().map_err(ChannelError::Os)
    }

    /// Body bytes announced in the head and not written yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Appends body bytes.
    ///
    /// # Errors
    /// `TimedOut` when the reader does not free a slot in time, `Cancelled` or `Stale` when
    /// the transfer is no longer ours, `Protocol` when `data` runs past the announced length.
    pub fn write(&mut self, seg: &Segment, mut data: &[u8]) -> Result<(), ChannelError> {
        if data.len() as u64 > self.remaining {
            return Err(ChannelError::Protocol(
                "more body bytes than the head announced",
            ));
        }
        let capacity = seg.slot_capacity();
        while !data.is_empty() {
            let at = match self.filled {
                Some(at) => at,
                None => self.take_slot(seg)?,
            };
            let n = data.len().min(capacity - at);
            seg.write_slot(self.slot(seg), at, &data[..n]);
            self.remaining -= n as u64;
            data = &data[n..];
            if at + n == capacity {
                self.hand_over(seg, capacity)?;
            } else {
                self.filled = Some(at + n);
            }
        }
        Ok(())
    }

    /// Hands over the slot being filled, full or not, so that a reader is not kept
    /// waiting on bytes that trickle in (a slow origin).
    pub fn flush(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        match self.filled {
            Some(len) if len > 0 => self.hand_over(seg, len),
            _ => Ok(()),
        }
    }

    /// Hands over the last, partly filled slot (or the single empty chunk of an empty
    /// body).
    ///
    /// # Errors
    /// `Protocol` when fewer bytes were written than the head announced; as for `write`.
    pub fn finish(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        if self.remaining != 0 {
            return Err(ChannelError::Protocol(
                "fewer body bytes than the head announced",
            ));
        }
        match self.filled {
            Some(len) => self.hand_over(seg, len),
            None if self.chunk == 0 => {
                self.take_slot(seg)?;
                self.hand_over(seg, 0)
            }
            None => Ok(()),
        }
    }

    /// After [`finish`](Self::finish): waits until the reader has given back every slot,
    /// which it does only once it is done with the transfer, and leaves the semaphores at
    /// rest. Each wait lasts at most the timeout.
    pub fn wait_drained(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        // One deadline for all the slots, not a timeout each.
        let deadline = std::time::Instant::now() + self.patience.timeout;
        for _ in 0..seg.slots() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.patience.wait_for(seg.free(), left)?;
        }
        for _ in 0..seg.slots() {
            seg.free().post().map_err(ChannelError::Os)?;
        }
        Ok(())
    }
}

/// Sends `head` and then the stream, `headers` (a header block) and `body`, through `seg`,
/// for the transfer numbered `generation`.
pub fn send(
    seg: &Segment,
    generation: u64,
    head: &Head,
    headers: &[u8],
    body: &[u8],
    patience: impl Into<Patience>,
) -> Result<(), ChannelError> {
    let mut tx = Sender::start(seg, generation, head, stream_of(headers, body), patience)?;
    tx.write(seg, headers)?;
    tx.write(seg, body)?;
    tx.finish(seg)
}

/// The make-up of a stream of `headers` then `body`.
pub fn stream_of(headers: &[u8], body: &[u8]) -> Stream {
    Stream {
        header_len: u32::try_from(headers.len()).expect("a header block is far below 4 GiB"),
        body_len: body.len() as u64,
    }
}

/// The reading end of one transfer: waits for the head, then hands out body bytes as they
/// arrive, freeing each slot as soon as it is drained, except the last, which
/// [`finish`](Self::finish) gives back.
///
/// It does not own the segment (the caller's lease does), so each call takes it as an
/// argument; it must be the same segment every time.
#[derive(Debug)]
pub struct Receiver {
    patience: Patience,
    /// Index of the chunk held or expected next.
    chunk: u64,
    /// Bytes of the held chunk already copied out, and its length; `None` when no slot is held.
    held: Option<(usize, usize)>,
    /// Body bytes not yet copied out.
    remaining: u64,
}

impl Receiver {
    /// Waits for the head of the transfer numbered `generation` (of the format `H` the
    /// reader expects) and validates it against this process's own view of the segment;
    /// the stream's length is the head's. `patience` bounds this wait and each later one.
    ///
    /// # Errors
    /// [`ChannelError::TimedOut`] when nothing arrives in time, `PeerGone` when the watched
    /// peer exits first (see [`Patience`]); `Protocol` when the head or the first chunk
    /// cannot be right (no head, another generation, a field out of range, a length past
    /// the slot or past the stream).
    pub fn recv_head<H: HeadFormat>(
        seg: &Segment,
        generation: u64,
        patience: impl Into<Patience>,
    ) -> Result<(Envelope<H>, Receiver), ChannelError> {
        let patience = patience.into();
        wait_ready(seg, &patience)?;
        let envelope = match H::decode(&seg.read_head()) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return Err(ChannelError::Protocol("no head before the first chunk")),
            Err(e) => return Err(ChannelError::Malformed(e)),
        };
        if envelope.generation != generation {
            return Err(ChannelError::Protocol("answer for another generation"));
        }
        let mut rx = Receiver {
            patience,
            chunk: 0,
            held: None,
            remaining: envelope.stream.len(),
        };
        rx.hold(seg)?;
        Ok((envelope, rx))
    }

    /// Takes the current chunk's slot after its `ready`, checking its recorded length.
    fn hold(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        let len = seg.slot_len(self.slot(seg));
        let fits = len <= seg.slot_capacity() as u64 && len <= self.remaining;
        // Only the single chunk of an empty body may be empty: otherwise a peer could keep
        // us spinning on empty chunks forever.
        if !fits || (len == 0 && self.remaining != 0) {
            return Err(ChannelError::Protocol("chunk length out of bounds"));
        }
        self.held = Some((0, len as usize));
        Ok(())
    }

    fn slot(&self, seg: &Segment) -> usize {
        (self.chunk % seg.slots() as u64) as usize
    }

    fn release(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        self.held = None;
        self.chunk += 1;
        seg.free().post().map_err(ChannelError::Os)
    }

    /// Copies up to `buf.len()` body bytes into `buf`; returns 0 once the body is complete.
    pub fn read(&mut self, seg: &Segment, buf: &mut [u8]) -> Result<usize, ChannelError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.held.is_none() {
            wait_ready(seg, &self.patience)?;
            self.hold(seg)?;
        }
        let (at, len) = self.held.expect("a slot is held");
        let n = buf.len().min(len - at);
        seg.read_slot(self.slot(seg), at, &mut buf[..n]);
        self.remaining -= n as u64;
        if at + n == len && self.remaining > 0 {
            self.release(seg)?;
        } else {
            self.held = Some((at + n, len));
        }
        Ok(n)
    }

    /// Waits until a chunk is in hand (unless the body is complete) and returns how many
    /// of its bytes are left to take: 0 only once the body is complete.
    pub fn chunk(&mut self, seg: &Segment) -> Result<usize, ChannelError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.held.is_none() {
            wait_ready(seg, &self.patience)?;
            self.hold(seg)?;
        }
        let (at, len) = self.held.expect("a slot is held");
        Ok(len - at)
    }

    /// Sends `prefix`, then the bytes of the chunk in hand (see [`chunk`](Self::chunk)),
    /// straight from the slot to the socket `fd` in one call; frees the slot once it is
    /// all sent (unless it is the last: [`finish`](Self::finish) gives that back).
    /// Returns the bytes sent of `prefix` and of the body.
    pub fn send(
        &mut self,
        seg: &Segment,
        prefix: &[u8],
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> io::Result<(usize, usize)> {
        let Some((at, len)) = self.held else {
            return Ok((0, 0));
        };
        let sent = seg.send_slot(prefix, self.slot(seg), at, len - at, fd)?;
        let from_prefix = sent.min(prefix.len());
        let n = sent - from_prefix;
        self.remaining -= n as u64;
        if at + n == len && self.remaining > 0 {
            self.release(seg)?;
        } else {
            self.held = Some((at + n, len));
        }
        Ok((from_prefix, n))
    }

    /// Body bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Gives back the last slot once the whole body has been read: this tells the writer
    /// that the transfer is over (see [`Sender::wait_drained`]).
    pub fn finish(&mut self, seg: &Segment) -> Result<(), ChannelError> {
        if self.remaining != 0 {
            return Err(ChannelError::Protocol(
                "finished before the end of the body",
            ));
        }
        if self.held.is_some() {
            self.release(seg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::segment::unlinked_for_test;

    #[test]
    fn a_wait_on_a_peer_that_exits_ends_within_a_check() {
        let seg = unlinked_for_test("chantest0", 1);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let peer = Arc::new(Peer::default());
        peer.learn(child.id());
        assert!(!peer.is_gone());
        let patience = Patience::watching(Duration::from_secs(10), Arc::clone(&peer));
        let (killed_tx, killed) = std::sync::mpsc::channel();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            // Killed, not reaped: a zombie, which `kill(pid, 0)` would still find.
            child.kill().unwrap();
            killed_tx.send(std::time::Instant::now()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            child.wait().unwrap();
        });
        let result = Receiver::recv_head::<Head>(&seg, 1, patience);
        let after_kill = killed.recv().unwrap().elapsed();
        assert!(matches!(result, Err(ChannelError::PeerGone)), "{result:?}");
        // Within a check or so; the bound is wide for a loaded machine, and far below the
        // 10 s the wait would otherwise last.
        assert!(after_kill < Duration::from_secs(1), "{after_kill:?}");
        assert!(peer.has_gone());
        assert_eq!(peer.stalls(), 0, "an exit is not a stall");
        killer.join().unwrap();
    }

    #[test]
    fn a_wait_that_runs_out_counts_a_stall() {
        let seg = unlinked_for_test("chantest1", 1);
        let peer = Arc::new(Peer::default());
        peer.learn(std::process::id());
        let patience = Patience::watching(Duration::from_millis(80), Arc::clone(&peer));
        let result = Receiver::recv_head::<Head>(&seg, 1, patience);
        assert!(matches!(result, Err(ChannelError::TimedOut)), "{result:?}");
        assert_eq!(peer.stalls(), 1);
        assert!(!peer.is_gone());
    }
}
