//! Slow and hostile clients: each costs its own connection, never the channel, the
//! workers or anyone else's requests.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A small GET that must be answered while others misbehave; a proxy that made it wait for
/// them would leave it unanswered past PATIENCE, and `get` would fail.
fn small_gets(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let r = get(addr, "/small.txt");
        assert_eq!((r.status, &r.body[..]), (200, &b"small"[..]));
    }
}

#[test]
fn slow_readers_hold_no_worker_no_segment_and_no_cache_worker() {
    let name = instance("slowread");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(4 << 20, 7);
    write_files(dir.path(), &[("big.bin", &big), ("small.txt", b"small")]);
    // Two workers, two segments, two cache workers, and eight clients that stop reading
    // a 4 MiB answer after its first byte. 1 MiB of response memory cannot hold their
    // answers: they pause and go on in windows.
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap(), "-t", "2"]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "-t",
            "2",
            "-n",
            "2",
            "--buffer-memory",
            "1M",
            "--client-timeout",
            "60",
        ],
    );
    let slow: Vec<_> = (0..8)
        .map(|_| start_download(addr, "/big.bin", 1))
        .collect();
    small_gets(addr, 20);
    // A fast client of the big file gets all of it through the same two segments.
    let r = get(addr, "/big.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == big, "the fast client's body differs");
    // Every slow reader, reading on at last, gets every byte, in order.
    let readers: Vec<_> = slow
        .into_iter()
        .map(|(s, len, first)| thread::spawn(move || (len, read_until_closed_or(s, first, len))))
        .collect();
    for r in readers {
        let (len, body) = r.join().unwrap();
        assert_eq!(len, big.len());
        assert!(body == big, "a slow reader's body differs");
    }
    let stats = get(addr, "/-/stats");
    assert_eq!(stats.status, 200);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// Reads `len` body bytes (after the `first` already read), or until the connection ends
/// (closed, or reset: how the proxy cuts a response short).
fn read_until_closed_or(mut s: TcpStream, mut got: Vec<u8>, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
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
fn trickled_request_bodies_hold_no_worker_and_end_at_a_total_deadline() {
    let name = instance("slowbody");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("small.txt", b"small")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["-t", "1", "--client-timeout", "2"]);
    // A hundred connections send a head announcing a body, then a byte every 100 ms: no
    // read ever waits long, but the request as a whole never completes.
    let mut trickling: Vec<Option<(TcpStream, Vec<u8>)>> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let head = if i % 2 == 0 {
                "POST /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n"
            } else {
                "POST /small.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nEA60\r\n"
            };
            s.write_all(head.as_bytes()).unwrap();
            s.set_nonblocking(true).unwrap();
            Some((s, Vec::new()))
        })
        .collect();
    let started = Instant::now();
    let driver = thread::spawn(move || {
        let mut answers = Vec::new();
        while trickling.iter().any(Option::is_some) && started.elapsed() < PATIENCE {
            for slot in trickling.iter_mut() {
                let Some((s, got)) = slot else { continue };
                // Whatever the proxy said, taken before writing more; EOF ends it.
                let mut buf = [0u8; 512];
                let closed = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                    Err(_) => true,
                };
                if closed || !got.is_empty() {
                    answers.push((std::mem::take(got), started.elapsed()));
                    *slot = None;
                } else {
                    let _ = s.write(b"x");
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        answers
    });
    // Meanwhile the one worker serves everyone else.
    small_gets(addr, 20);
    let answers = driver.join().unwrap();
    assert_eq!(
        answers.len(),
        100,
        "every trickler was answered before {PATIENCE:?}"
    );
    for (got, when) in answers {
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            when >= Duration::from_secs(2),
            "not before the deadline: {when:?}"
        );
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// Sends `bytes` on a new connection and reads the answer until the proxy closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    // Far shorter than the client timeout: every refusal comes at once.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    String::from_utf8_lossy(&read_until_closed(s, Vec::new())).into_owned()
}

#[test]
fn framing_errors_and_large_bodies_are_refused_at_once() {
    let name = instance("framing");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("small.txt", b"small")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["--client-timeout", "30", "--max-body", "64K"]);
    let cases: &[(&[u8], &str)] = &[
        // Two different lengths: a smuggling attempt.
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 400"),
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", "HTTP/1.1 413"),
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n", "HTTP/1.1 400"),
        (b"POST /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", "HTTP/1.1 413"),
        (b"GET /small.txt HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\n\n", "HTTP/1.1 200"),
    ];
    for (bytes, want) in cases {
        let answer = exchange(addr, bytes);
        assert!(
            answer.starts_with(want),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    // A body within the cap is read off and the connection goes on.
    let mut body = b"POST /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 60000));
    body.extend_from_slice(b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let answers = exchange(addr, &body);
    assert!(answers.starts_with("HTTP/1.1 405"), "{answers}");
    assert!(answers.contains("HTTP/1.1 200 OK"), "{answers}");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn nothing_outlives_its_connection() {
    let name = instance("leaks");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(1 << 20, 3);
    write_files(dir.path(), &[("small.txt", b"small"), ("big.bin", &big)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["--client-timeout", "5"]);
    small_gets(addr, 1);
    let (idle_fds, idle_threads) = (fd_count(proxy.pid()), thread_count(proxy.pid()));
    // 10,000 hostile or careless requests, from 8 clients at once.
    // Each with whether the proxy answers it at once (the others wait for more bytes).
    let hostile: &[(&[u8], bool)] = &[
        (
            b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n",
            true,
        ),
        (b"\x00\x01\x02 garbage\r\n\r\n", true),
        (
            b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            true,
        ),
        (
            b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nonly part of it",
            false,
        ),
        (b"GET /small.txt HTTP/1.1\r\nHost", false),
        (b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n", true),
        (b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", true),
    ];
    let clients: Vec<_> = (0..8)
        .map(|c| {
            thread::spawn(move || {
                for i in 0..1250 {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let (bytes, answered) = hostile[(c + i) % hostile.len()];
                    let _ = s.write_all(bytes);
                    // Hang up without reading, or after the first bytes of the answer.
                    if answered && i % 2 == 0 {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = s.read(&mut [0u8; 16]);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    small_gets(addr, 1);
    let pid = proxy.pid();
    eventually(
        "descriptors and threads to return to the idle figure",
        || fd_count(pid) <= idle_fds + 2 && thread_count(pid) <= idle_threads + 2,
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_client_reading_below_the_minimum_rate_is_cut_off() {
    let name = instance("minrate");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(16 << 20, 5);
    write_files(dir.path(), &[("big.bin", &big)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["--client-timeout", "1", "--min-send-rate", "64M"]);
    // A client that reads at its ease gets everything.
    let r = get(addr, "/big.bin");
    assert!(
        r.status == 200 && r.body == big,
        "a fast client is served whole"
    );
    // One that reads 256 KiB every 100 ms (2.6 MB/s) is cut once the proxy has waited a
    // second on it; it still reads what the kernel's buffers hold (a few MB) first.
    let (mut s, len, mut got) = start_download(addr, "/big.bin", 1);
    let started = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("{e}"),
        }
        if started.elapsed() > PATIENCE {
            break false;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(closed, "the slow client was cut off");
    assert!(got.len() < len, "cut short of Content-Length");
    assert!(got[..] == big[..got.len()], "what arrived is a true prefix");
    proxy.wait_log("below the minimum rate");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_paused_response_is_never_spliced_from_two_versions() {
    let name = instance("splice");
    let dir = tempfile::tempdir().unwrap();
    let old = pattern(8 << 20, 11);
    write_files(dir.path(), &[("big.bin", &old)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    // No memory beyond 64 KiB a response: a client that lags has the rest of its answer
    // asked for again, later, as a range.
    let (proxy, addr) = Proc::proxy(&name, &["--buffer-memory", "0"]);
    let (s, len, first) = start_download(addr, "/big.bin", 1);
    // Same length, other bytes, same second: only the entry's version tells them apart.
    let new = pattern(8 << 20, 12);
    write_files(dir.path(), &[("big.bin", &new)]);
    cache.signal("HUP");
    // ("preloaded 1 files" at start contains "reloaded 1 files" too.)
    cache.wait_log("] reloaded 1 files");
    let r = get(addr, "/big.bin");
    assert!(
        r.status == 200 && r.body == new,
        "new requests get the new bytes: {} {} bytes, old prefix {}",
        r.status,
        r.body.len(),
        r.body.len() <= old.len() && r.body[..] == old[..r.body.len()]
    );
    let got = read_until_closed_or(s, first, len);
    assert!(
        got.len() < len,
        "cut short, not completed from the new version"
    );
    assert!(
        got[..] == old[..got.len()],
        "what arrived is the old version's prefix"
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}
