//! A failing cache costs at most one timeout: a killed cache is noticed by every request
//! waiting on it within a fraction of a second, and a stalled one is skipped after the
//! first wait that runs out, until it answers a probe again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Well below the `--cache-timeout 5` of the kill test: what "at once" must beat with a
/// wide margin for a loaded 2-core machine.
const PROMPT: Duration = Duration::from_secs(2);

/// Starts a GET of `target` and reads its head and `n` body bytes; returns the stream
/// (left unread), the declared length and the bytes read so far.
fn start_download(addr: SocketAddr, target: &str, n: usize) -> (TcpStream, usize, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-cache").map(String::as_str), Some("HIT"));
    let len = headers["content-length"].parse().unwrap();
    let mut first = vec![0; n];
    reader.read_exact(&mut first).unwrap();
    // Bytes the BufReader holds beyond `n` belong to the body too.
    first.extend_from_slice(reader.buffer());
    (s, len, first)
}

/// Reads until `len` body bytes are in (the connection stays open after a whole
/// response), or until EOF or a reset.
fn read_body(mut s: TcpStream, mut got: Vec<u8>, len: usize) -> Vec<u8> {
    let mut buf = [0u8; 65536];
    while got.len() < len {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the body: {e}"),
        }
    }
    got
}

#[test]
fn a_killed_cache_releases_every_waiting_request_at_once() {
    let name = instance("killwait");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let files = make_files(
        dir.path(),
        [
            ("zero.bin".to_owned(), 0),
            ("small.bin".to_owned(), 1000),
            ("mid.bin".to_owned(), 70_000),
            ("large.bin".to_owned(), 1 << 20),
            ("big.bin".to_owned(), 16 << 20),
        ],
    );
    let big = files
        .iter()
        .find(|(k, _)| k == "big.bin")
        .unwrap()
        .1
        .clone();
    // Every answer comes a second late, so requests are waiting on the head when the
    // cache dies: without a watch on its process they would wait out the 5 s timeout.
    let cache = Proc::cache(&name, &["-c", root, "-d", "1000000"]);
    // No response memory beyond 64 KiB a response: the big answer cannot be drained whole
    // ahead of its client, so it is still coming from the cache (in windows) at the kill.
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "-s",
            root,
            "-z",
            "8K",
            "--cache-timeout",
            "5",
            "--buffer-memory",
            "0",
        ],
    );
    // The proxy learns the cache's pid from its first answer.
    let r = get(addr, "/small.bin");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));

    // One response in the middle of its body, its client not reading for now...
    let (stream, big_len, first) = start_download(addr, "/big.bin", 1 << 20);
    // ... and one request per file waiting for the cache's answer.
    let arrived = cache.log_count(" arrived;");
    let waiting: Vec<_> = files
        .iter()
        .map(|(key, _)| {
            let key = key.clone();
            thread::spawn(move || {
                let r = get(addr, &format!("/{key}"));
                (key, r, Instant::now())
            })
        })
        .collect();
    // Every request has reached the cache, which holds each for its second.
    cache.wait_log_count(" arrived;", arrived + files.len());
    let killed = Instant::now();
    cache.kill9();

    for handle in waiting {
        let (key, r, done) = handle.join().unwrap();
        let took = done.saturating_duration_since(killed);
        eprintln!("{key}: answered {took:?} after the kill");
        assert!(took < PROMPT, "{key} took {took:?} after the kill");
        let want = &files.iter().find(|(k, _)| *k == key).unwrap().1;
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("MISS")),
            "{key}"
        );
        assert!(r.body == *want, "{key}: the body from secondary storage");
    }
    // The response mid-body is finished from -s, which holds the very file the cache
    // preloaded (tests/operations.rs checks that another version is cut instead).
    let got = read_body(stream, first, big_len);
    let took = killed.elapsed();
    eprintln!("big.bin: finished {took:?} after the kill");
    assert_eq!(got.len(), big_len, "every byte");
    assert!(
        got == big,
        "the rest from secondary storage, the same bytes"
    );
    assert!(stats(addr)["proxy.hits_resumed"] >= 1);
    proxy.wait_log("is gone; serving without it");

    // The killed cache left its queue; the next one replaces it and is used again.
    let cache = Proc::cache(&name, &["-c", root]);
    cache.wait_log("replaced a stale queue");
    eventually("a HIT from the new cache", || {
        get(addr, "/zero.bin").header("x-cache") == Some("HIT")
    });
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// Sends SIGCONT when dropped, so a failing test does not leave the cache stopped (it could
/// then not unlink its queue).
struct Stopped<'a>(&'a Proc);

impl<'a> Stopped<'a> {
    fn stop(cache: &'a Proc) -> Stopped<'a> {
        cache.signal("STOP");
        Stopped(cache)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

/// One request of the load: when it started (after the stop), how long it took, whether
/// it was a hit, and whether its body was right.
struct Sample {
    started: Duration,
    took: Duration,
    hit: bool,
    body_ok: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn a_stalled_cache_costs_one_timeout_then_storage_answers_at_once() {
    const CLIENTS: usize = 4;
    const LOAD: Duration = Duration::from_secs(4);
    const MAX_PER_CLIENT: usize = 20_000;
    const STAGGER: Duration = Duration::from_millis(150);
    let name = instance("stall");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let files = make_files(
        dir.path(),
        [0, 700, 5000, 40_000, 200_000]
            .into_iter()
            .enumerate()
            .map(|(i, len)| (format!("f{i}.bin"), len)),
    );
    let cache = Proc::cache(&name, &["-c", root]);
    // Fewer segments than clients, and clients arriving over the first half second: the
    // first two wait on the cache, the others wait for a segment behind them and must not
    // then wait on the cache again once they get one.
    let (proxy, addr) = Proc::proxy(&name, &["-s", root, "-n", "2", "--cache-timeout", "1"]);
    for (key, bytes) in &files {
        let r = get(addr, &format!("/{key}"));
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
        assert!(r.body == *bytes);
    }

    let stopped = Stopped::stop(&cache);
    let t0 = Instant::now();
    let samples: Vec<Sample> = thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let files = &files;
                s.spawn(move || {
                    thread::sleep(STAGGER * c as u32);
                    let mut conn = Connection::open(addr);
                    let mut out = Vec::new();
                    while t0.elapsed() < LOAD && out.len() < MAX_PER_CLIENT {
                        let (key, bytes) = &files[(c + out.len()) % files.len()];
                        let started = t0.elapsed();
                        let (status, x_cache, body) = conn.get(&format!("/{key}"));
                        out.push(Sample {
                            started,
                            took: t0.elapsed() - started,
                            hit: x_cache.as_deref() == Some("HIT"),
                            body_ok: status == 200 && body == *bytes,
                        });
                    }
                    out
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let stats = stats(addr);
    drop(stopped);

    assert!(
        samples.iter().all(|s| s.body_ok),
        "every answer is the file"
    );
    assert!(
        samples.iter().all(|s| !s.hit),
        "nothing came from the stopped cache"
    );
    // The first wait that ran out: the earliest answer after the stop.
    let first_timeout = samples.iter().map(|s| s.started + s.took).min().unwrap();
    assert!(
        first_timeout >= Duration::from_millis(900),
        "the first answers waited for the cache: {first_timeout:?}"
    );
    let waited: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started < first_timeout)
        .collect();
    let worst_wait = waited.iter().map(|s| s.took).max().unwrap();
    assert!(
        worst_wait < Duration::from_millis(1500),
        "no request waited much more than one timeout: {worst_wait:?}"
    );
    // Each client paid the timeout once, on its first request; none paid it again.
    let paid = samples
        .iter()
        .filter(|s| s.took >= Duration::from_millis(900))
        .count();
    assert!(paid <= CLIENTS, "{paid} requests waited out a timeout");
    let mut after: Vec<Duration> = samples
        .iter()
        .filter(|s| s.started >= first_timeout)
        .map(|s| s.took)
        .collect();
    after.sort();
    assert!(
        after.len() >= 200,
        "enough requests after the first timeout: {}",
        after.len()
    );
    let (p50, p99, max) = (
        percentile(&after, 0.50),
        percentile(&after, 0.99),
        *after.last().unwrap(),
    );
    eprintln!(
        "stalled cache: first timeout after {first_timeout:?}, {} requests waited it \
         (worst {worst_wait:?}); then {} requests from storage: p50 {p50:?}, p99 {p99:?}, \
         max {max:?}",
        waited.len(),
        after.len()
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    assert!(stats["proxy.cache_trips"] >= 1, "{stats:?}");
    assert!(
        stats["proxy.cache_bypassed"] >= after.len() as u64 / 2,
        "{stats:?}"
    );

    // Resumed, the cache answers the next probe and requests hit again.
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(5);
    let mut conn = Connection::open(addr);
    loop {
        let (key, bytes) = &files[2];
        let (status, x_cache, body) = conn.get(&format!("/{key}"));
        assert!(status == 200 && body == *bytes);
        if x_cache.as_deref() == Some("HIT") {
            break;
        }
        assert!(Instant::now() < deadline, "no HIT within 5 s of SIGCONT");
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "stalled cache: HITs again {:?} after SIGCONT",
        resumed.elapsed()
    );
    proxy.wait_log("the cache answers again");
    drop(conn);
    stop_and_check_clean(&name, vec![proxy, cache]);
}
