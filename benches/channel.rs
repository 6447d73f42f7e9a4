//! Throughput of the channel alone, between two processes, beside a Unix-domain socket.
//!
//! ```sh
//! cargo bench --bench channel               # everything, about 2 to 3 minutes on 2 cores
//! cargo bench --bench channel -- --quick    # a rough pass in well under a minute
//! cargo bench --bench channel -- slots      # only benchmarks whose id contains "slots"
//! ```
//!
//! # What is measured
//!
//! One iteration is one whole transfer of N bytes (1 KiB, 64 KiB, 1 MiB, 16 MiB) from a
//! writer process to a reader process, timed in the reader from the request to the last
//! byte. Throughput is body bytes per second (criterion's `Throughput::Bytes`).
//!
//! - `transfer_N/shm/seg=S`: the reader (this process, in the proxy's role) owns a segment
//!   of S bytes (4 KiB, 64 KiB, 1 MiB, header included, as `webproxy -z` counts) with one
//!   slot. It starts a new generation with `begin_transfer`, orders the transfer, then
//!   `Receiver::recv_head` and `read` into a 64 KiB buffer (the proxy's copy buffer) until
//!   the body is complete. The writer (the child, in the cache's role) maps the segment by
//!   name once and keeps the mapping (as `ipc::server` does), then calls `channel::send`
//!   for each transfer, as shmcached does.
//! - `transfer_N/unix_socket`: the same N bytes written by the child with one `write_all`
//!   on a connected `UnixStream` and read here into the same 64 KiB buffer: the design a
//!   user would pick instead of shared memory.
//! - `slots_16MiB_seg_64KiB/shm/k=K`: 16 MiB through a 64 KiB segment split into K slots,
//!   so the writer can fill up to K slots ahead of the reader. K = 1 is the lock-step
//!   handoff; the target is K = 4 at least 3x faster than K = 1.
//!
//! Before each benchmark one transfer is compared byte for byte with what the writer holds,
//! so a fast but wrong channel cannot post a number.
//!
//! # Two processes
//!
//! The bench re-executes its own binary with `SHMCACHE_BENCH_CHANNEL_CHILD` set; that
//! process is the writer. It takes its orders as text lines on its standard input, one
//! line per transfer, and never answers on that pipe: the data path is the answer.
//!
//! ```text
//! seg NAME            the parent created segment NAME: unlink it if the parent vanishes
//! shm NAME GEN LEN    open segment NAME, send LEN bytes as generation GEN, unmap it
//! unix LEN            write LEN bytes on the Unix socket
//! ```
//!
//! The pipe costs both designs the same, one small write and one wake-up of the writer per
//! transfer, as a request on the message queue would; the message queue itself is left
//! out so that only the data path differs. The Unix socket lives in the abstract namespace
//! (no file to remove); the child connects to it at start.
//!
//! # Nothing left behind
//!
//! Segments are named `/chanbench.seg.<parent pid>.<n>`, each used by one benchmark. The
//! parent unlinks a segment when it drops it. The child reads orders until end of file,
//! which comes when the parent exits by any route (normally, a panic, Ctrl-C, SIGKILL), and
//! then unlinks every segment it was told about and exits. It ignores SIGINT for that
//! reason: Ctrl-C reaches both processes, and the child must outlive the parent to clean
//! up. At start the parent also removes segments of this instance whose creator is gone.

use std::hint::black_box;
use std::io::{self, BufRead, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::collections::HashMap;

use shmcache::ipc::channel::{self, Receiver};
use shmcache::ipc::segment::{Segment, unlink_segment};
use shmcache::ipc::{
    Head, Identity, Lifetime, Meta, Outcome, remove_stale_segments, segment_prefix,
};

/// Set (to the Unix socket's abstract name) in the environment of the writer process.
const CHILD_ENV: &str = "SHMCACHE_BENCH_CHANNEL_CHILD";
/// Instance name of the bench's segments, so they never meet a running webproxy's.
const INSTANCE: &str = "chanbench";

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const TRANSFERS: [(&str, usize); 4] = [
    ("1KiB", KIB),
    ("64KiB", 64 * KIB),
    ("1MiB", MIB),
    ("16MiB", 16 * MIB),
];
const SEGMENT_SIZES: [(&str, usize); 3] = [("4KiB", 4 * KIB), ("64KiB", 64 * KIB), ("1MiB", MIB)];
const SLOTS: [usize; 4] = [1, 2, 4, 8];
const LARGEST: usize = 16 * MIB;
/// The reader's copy buffer: the size webproxy copies through on its way to the socket.
const COPY_BUFFER: usize = 64 * KIB;
/// Longest wait for the other process at any step; a dead peer fails the bench instead of
/// hanging it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The bytes the writer sends (a prefix of them): xorshift, different at every offset, so
/// a misplaced or repeated chunk fails the check.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Where received bytes go: nowhere while measuring, into a `Vec` while checking.
type Sink<'a> = &'a mut dyn FnMut(&[u8]);

fn discard(bytes: &[u8]) {
    black_box(bytes);
}

/// The parent's handle on the writer process.
struct Writer {
    child: Child,
    /// Orders to the child; closing it tells the child to clean up and exit.
    orders: Option<ChildStdin>,
    socket: UnixStream,
    segments_made: usize,
    generation: u64,
    buf: Box<[u8]>,
    expected: Vec<u8>,
}

impl Writer {
    fn spawn() -> Writer {
        let name = format!("shmcache-chanbench-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixListener::bind_addr(&addr).expect("binding the Unix socket");
        let exe = std::env::current_exe().expect("locating the bench binary");
        let mut child = Command::new(exe)
            .env(CHILD_ENV, &name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the writer process");
        // Accept without blocking forever: a child that dies at start must fail the bench.
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let deadline = Instant::now() + TIMEOUT;
        let socket = loop {
            match listener.accept() {
                Ok((socket, _)) => break socket,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("the writer process exited at start: {status}");
                    }
                    assert!(Instant::now() < deadline, "the writer never connected");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accepting the writer: {e}"),
            }
        };
        socket.set_nonblocking(false).expect("blocking socket");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("socket timeout");
        Writer {
            orders: child.stdin.take(),
            child,
            socket,
            segments_made: 0,
            generation: 0,
            buf: vec![0; COPY_BUFFER].into_boxed_slice(),
            expected: pattern(LARGEST),
        }
    }

    /// Sends one order line in a single write, so the child wakes once per order.
    fn order(&mut self, line: &str) {
        self.orders
            .as_mut()
            .expect("orders pipe open")
            .write_all(line.as_bytes())
            .expect("ordering the writer (did it die?)");
    }

    /// Creates a fresh segment and tells the child its name, so it is removed even if this
    /// process is killed.
    fn segment(&mut self, size: usize, slots: usize) -> Segment {
        self.segments_made += 1;
        let name = format!(
            "{}{}.{}",
            segment_prefix(INSTANCE),
            std::process::id(),
            self.segments_made
        );
        let seg = Segment::create(&name, size, slots).expect("creating a segment");
        self.order(&format!("seg {name}\n"));
        seg
    }

    /// One transfer of `len` bytes through `seg`, as the proxy receives an answer.
    fn shm(&mut self, seg: &Segment, len: usize, sink: Sink) {
        self.generation += 1;
        let generation = self.generation;
        seg.begin_transfer(generation);
        self.order(&format!("shm {} {generation} {len}\n", seg.name()));
        let (envelope, mut rx) =
            Receiver::recv_head::<Head>(seg, generation, TIMEOUT).expect("the head");
        assert_eq!(envelope.head, found(len));
        assert_eq!(envelope.stream.body_len, len as u64);
        let mut got = 0;
        loop {
            let n = rx.read(seg, &mut self.buf).expect("a chunk");
            if n == 0 {
                break;
            }
            sink(&self.buf[..n]);
            got += n;
        }
        // Give the last slot back: the segment is then at rest for the next transfer.
        rx.finish(seg).expect("the end of the transfer");
        assert!(
            got == len && rx.remaining() == 0,
            "short transfer: {got} of {len}"
        );
    }

    /// The same bytes over the Unix socket.
    fn unix(&mut self, len: usize, sink: Sink) {
        self.order(&format!("unix {len}\n"));
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len());
            let n = self
                .socket
                .read(&mut self.buf[..want])
                .expect("socket read");
            assert!(n > 0, "the writer closed the socket");
            sink(&self.buf[..n]);
            left -= n;
        }
    }

    /// Runs one transfer into memory and compares it with what the writer sent.
    fn check(&mut self, len: usize, transfer: impl FnOnce(&mut Writer, Sink)) {
        let mut got = Vec::with_capacity(len);
        transfer(self, &mut |b: &[u8]| got.extend_from_slice(b));
        assert!(
            got == self.expected[..len],
            "the body differs from what was sent"
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.orders.take());
        let _ = self.child.wait();
    }
}

fn transfers(c: &mut Criterion) {
    // Left by a run that was killed together with its writer.
    let _ = remove_stale_segments(INSTANCE);
    let mut w = Writer::spawn();
    let segments: Vec<(&str, Segment)> = SEGMENT_SIZES
        .iter()
        .map(|&(label, size)| (label, w.segment(size, 1)))
        .collect();
    for (label, len) in TRANSFERS {
        let mut group = c.benchmark_group(format!("transfer_{label}"));
        group.throughput(Throughput::Bytes(len as u64));
        if len >= MIB {
            group.sample_size(10);
        }
        for (seg_label, seg) in &segments {
            w.check(len, |w, sink| w.shm(seg, len, sink));
            let id = BenchmarkId::new("shm", format!("seg={seg_label}"));
            group.bench_function(id, |b| b.iter(|| w.shm(seg, len, &mut discard)));
        }
        w.check(len, |w, sink| w.unix(len, sink));
        group.bench_function("unix_socket", |b| b.iter(|| w.unix(len, &mut discard)));
        group.finish();
    }
}

fn slots(c: &mut Criterion) {
    let mut w = Writer::spawn();
    let len = LARGEST;
    let mut group = c.benchmark_group("slots_16MiB_seg_64KiB");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    for k in SLOTS {
        let seg = w.segment(64 * KIB, k);
        w.check(len, |w, sink| w.shm(&seg, len, sink));
        let id = BenchmarkId::new("shm", format!("k={k}"));
        group.bench_function(id, |b| b.iter(|| w.shm(&seg, len, &mut discard)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // 20 benchmarks at about 5 s each keep a full run near two minutes on 2 cores.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = transfers, slots
}

fn main() {
    if let Ok(socket) = std::env::var(CHILD_ENV) {
        writer::run(&socket);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// The writer process: the cache's side of the channel.
mod writer {
    use super::*;

    pub fn run(socket: &str) {
        // Ctrl-C reaches the whole process group; outlive the parent to clean up (see the
        // module docs). The flag is never read: end of input is what stops us.
        let _ = signal_hook::flag::register(
            signal_hook::consts::SIGINT,
            Arc::new(AtomicBool::new(false)),
        );
        let mut names = Vec::new();
        let result = serve(socket, &mut names);
        for name in &names {
            let _ = unlink_segment(name);
        }
        if let Err(e) = result {
            eprintln!("channel bench writer: {e}");
            std::process::exit(1);
        }
    }

    fn serve(socket: &str, names: &mut Vec<String>) -> Result<(), String> {
        let mut mappings: HashMap<String, Segment> = HashMap::new();
        let addr = SocketAddr::from_abstract_name(socket.as_bytes()).map_err(|e| e.to_string())?;
        let mut socket = UnixStream::connect_addr(&addr).map_err(|e| format!("connecting: {e}"))?;
        let data = pattern(LARGEST);
        let number = |s: &str| s.parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
        for line in io::stdin().lock().lines() {
            let line = line.map_err(|e| format!("reading orders: {e}"))?;
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["seg", name] => names.push((*name).to_owned()),
                ["shm", name, generation, len] => {
                    let (generation, len) = (number(generation)? as u64, number(len)?);
                    // Kept between transfers, as shmcached keeps its mappings.
                    if !mappings.contains_key(*name) {
                        let seg =
                            Segment::open(name).map_err(|e| format!("opening {name}: {e}"))?;
                        mappings.insert((*name).to_owned(), seg);
                    }
                    let seg = &mappings[*name];
                    channel::send(seg, generation, &found(len), &[], &data[..len], TIMEOUT)
                        .map_err(|e| format!("sending through {name}: {e}"))?;
                }
                ["unix", len] => socket
                    .write_all(&data[..number(len)?])
                    .map_err(|e| format!("writing the socket: {e}"))?,
                _ => return Err(format!("unknown order {line:?}")),
            }
        }
        Ok(())
    }
}

/// The head of a transfer of `len` bytes: a whole object with no header block, so that the
/// stream is the body alone, as for a cache hit.
fn found(len: usize) -> Head {
    Head::Found {
        meta: Meta {
            status: 200,
            total_len: len as u64,
            modified: None,
            etag: None,
            stored_at: 0,
            lifetime: Lifetime::MustValidate,
            identity: Identity::Unique(0),
        },
        outcome: Outcome::Full,
    }
}
