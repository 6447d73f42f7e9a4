//! Failures that real deployments hit: peers that die or stall, overload, hostile clients
//! and hostile peers. Each test provokes one and checks what the user sees.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use shmcache::ipc::queue::MessageQueue;
use shmcache::ipc::queue_name;
use shmcache::ipc::segment::{HEADER_SIZE, Segment};
use shmcache::ipc::wire::{HEAD_CAPACITY, HEAD_PREFIX_LEN, MESSAGE_CAPACITY, Message, encode_head};
use shmcache::ipc::{
    FileVersion, Head, Identity, Lifetime, MAX_HEADER_BLOCK, Meta, Outcome, Stream,
};

#[test]
fn cache_killed_mid_transfer() {
    let name = instance("cachekill");
    let cached = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let big = pattern(32 << 20, 21);
    write_files(cached.path(), &[("big.bin", &big)]);
    write_files(disk.path(), &[("big.bin", &big)]);
    let cache_args = ["-c", cached.path().to_str().unwrap()];
    let cache = Proc::cache(&name, &cache_args);
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "-z",
            "8K",
            "-s",
            disk.path().to_str().unwrap(),
            "--cache-timeout",
            "1",
        ],
    );
    let (stream, len, first) = start_download(addr, "/big.bin", 1 << 20);
    cache.kill9();
    let started = Instant::now();
    let got = read_until_closed(stream, first);
    assert!(
        got.len() < len,
        "the body must end short, not pretend to be complete"
    );
    assert!(
        got == big[..got.len()],
        "what did arrive is the file's prefix"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed within the cache timeout"
    );

    // While the cache is dead, requests are served from secondary storage.
    eventually("a MISS from storage", || {
        let r = get(addr, "/big.bin");
        r.status == 200 && r.header("x-cache") == Some("MISS") && r.body == big
    });
    proxy.wait_log("is gone; serving without it");

    // A restarted cache replaces the dead one's queue and the proxy uses it again.
    let cache = Proc::cache(&name, &cache_args);
    cache.wait_log("replaced a stale queue");
    eventually("a HIT from the new cache", || {
        let r = get(addr, "/big.bin");
        r.status == 200 && r.header("x-cache") == Some("HIT") && r.body == big
    });
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn late_answers_never_land_in_the_next_transfer() {
    let name = instance("late");
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(50_000, 22);
    write_files(dir.path(), &[("f.bin", &body)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    // One segment: the request after the timeout goes through the same (rebuilt) one.
    let (proxy, addr) = Proc::proxy(&name, &["-n", "1", "-z", "8K", "--cache-timeout", "0.5"]);
    assert_eq!(get(addr, "/f.bin").status, 200);
    cache.signal("STOP");
    let r = get(addr, "/f.bin");
    assert_eq!(r.status, 503, "a stalled cache and no storage: 503");
    cache.signal("CONT");
    // The stalled cache now answers the old request. It still has the old object mapped
    // (the proxy rebuilt the segment as a new object under the same name), finds it
    // cancelled and stops; nothing it writes can reach the new object.
    cache.wait_log("/f.bin: the proxy cancelled");
    eventually("a correct answer after the stall", || {
        let r = get(addr, "/f.bin");
        r.status == 200 && r.body == body
    });
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn proxy_killed_mid_transfer() {
    let name = instance("proxykill");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(32 << 20, 23);
    let small = pattern(3000, 24);
    write_files(dir.path(), &[("big.bin", &big), ("small.bin", &small)]);
    // One cache worker: the new proxy is served only once that worker gave up on the old one.
    let cache = Proc::cache(
        &name,
        &[
            "-c",
            dir.path().to_str().unwrap(),
            "-t",
            "1",
            "--cache-timeout",
            "1",
        ],
    );
    let (proxy, addr) = Proc::proxy(&name, &["-z", "8K"]);
    let old_pid = proxy.pid();
    let (stream, _, _) = start_download(addr, "/big.bin", 1 << 20);
    proxy.kill9();
    assert_eq!(
        shm_objects(&name).len(),
        8,
        "a killed proxy leaves its segments"
    );
    cache.wait_log("peer did not answer in time");

    let (proxy, addr) = Proc::proxy(&name, &[]);
    proxy.wait_log_count(&format!("seg.{old_pid}."), 8);
    assert!(
        shm_objects(&name)
            .iter()
            .all(|o| !o.contains(&format!(".{old_pid}.")))
    );
    let r = get(addr, "/small.bin");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert!(r.body == small);
    drop(stream);

    // A killed cache leaves its queue; the next one replaces it.
    cache.kill9();
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    cache.wait_log("replaced a stale queue");
    eventually("the proxy to use the new cache", || {
        get(addr, "/small.bin").header("x-cache") == Some("HIT")
    });
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn overload_is_refused_at_once_with_retry_after() {
    let name = instance("overload");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    // Each answer takes a second; one worker and one waiting place.
    let cache = Proc::cache(
        &name,
        &["-c", dir.path().to_str().unwrap(), "-d", "1000000"],
    );
    let (proxy, addr) = Proc::proxy(&name, &["-t", "1", "--max-pending", "1"]);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            thread::spawn(move || {
                let started = Instant::now();
                (get(addr, "/f.txt"), started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut served = 0;
    for (r, took) in &results {
        match r.status {
            200 => {
                assert_eq!(r.body, b"content");
                served += 1;
            }
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                assert!(
                    *took < Duration::from_millis(900),
                    "refused at once, not after waiting"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // One in service and at most one waiting (one fewer if the second request came before
    // the worker had taken the first off the backlog); every other request is refused.
    assert!((1..=2).contains(&served), "{served} served");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn idle_and_trickling_connections_do_not_starve_requests() {
    let name = instance("slowloris");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["-t", "2", "--client-timeout", "2"]);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut trickling: Vec<TcpStream> =
        (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut trickling {
        s.write_all(b"GET /f.txt HTTP/1.1\r\nHost:").unwrap();
    }
    for _ in 0..50 {
        let r = get(addr, "/f.txt");
        assert_eq!((r.status, &r.body[..]), (200, &b"content"[..]));
    }
    // After the client timeout, the server closes the silent ones without a word (no
    // request began), and answers the trickling ones 408 (theirs began and took too long).
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    };
    for s in idle.into_iter().take(5) {
        assert_eq!(
            closed(s),
            "",
            "an idle connection is closed without an answer"
        );
    }
    for s in trickling.into_iter().take(5) {
        let text = closed(s);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn no_new_connection_for_longer_than_the_client_timeout_is_fine() {
    let name = instance("quiet");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "-s",
            dir.path().to_str().unwrap(),
            "--client-timeout",
            "0.5",
        ],
    );
    assert_eq!(get(addr, "/f.txt").status, 200);
    // The behaviour under test is the passing of time itself: accept must not time out
    // along with the client sockets when nobody connects for a while.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(get(addr, "/f.txt").status, 200);
    assert_eq!(proxy.log_count("stopped accepting"), 0);
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn a_burst_of_kept_alive_connections_is_all_served() {
    let name = instance("burst");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    // Opened back to back, and all kept open: each must be served as its requests come,
    // none made to wait for another connection to end.
    let openers: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || (0..50).map(|_| Connection::open(addr)).collect::<Vec<_>>()))
        .collect();
    let conns: Vec<Connection> = openers
        .into_iter()
        .flat_map(|o| o.join().unwrap())
        .collect();
    let clients: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                for _ in 0..3 {
                    assert_eq!(c.get("/f.txt").2, b"content");
                }
                c // keep every connection open until all are served
            })
        })
        .collect();
    let kept: Vec<Connection> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(kept.len(), 200);
    drop(kept);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let name = instance("nofile");
    // "unlimited" does not parse: then any raise will do.
    let hard: Option<u64> = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -H -n"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .ok();
    // Start with a soft limit of 64 under that hard limit.
    let script = "ulimit -S -n 64 && exec \"$0\" \"$@\"";
    let mut child = Command::new("sh")
        .args([
            "-c",
            script,
            env!("CARGO_BIN_EXE_webproxy"),
            "--name",
            &name,
            "--port",
            "0",
        ])
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    use std::io::BufRead;
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("open file limit: "))
        .expect("the proxy logs its limit");
    shmcache::ipc::process::terminate(child.id()).unwrap();
    assert!(child.wait().unwrap().success());
    let raised: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(raised > 64, "{line}");
    if let Some(hard) = hard {
        assert_eq!(raised, hard, "raised to the hard limit");
    }
    assert_clean(&name);
}

#[test]
fn descriptors_never_run_out_connections_past_the_cap_get_503() {
    let name = instance("emfile");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    // 128 descriptors leave room for (128 - 64) / 2 = 32 connections.
    let (proxy, addr) = Proc::proxy_with_nofile(&name, 128, &[]);
    proxy.wait_log("--max-connections 4096 lowered to 32");
    assert_eq!(get(addr, "/f.txt").status, 200);
    // That connection counts until the proxy has closed it. Watch for that over a kept-
    // alive connection, which then stays open as one of those that fill the cap.
    let mut watcher = Connection::open(addr);
    eventually("no other connection to be open", || {
        let stats = String::from_utf8(watcher.get("/-/stats").2).unwrap();
        stats.contains("\"connections_open\": 1,")
    });
    // Fill the cap; connections past it are answered 503 and closed at once, and the
    // proxy keeps its descriptors.
    let held: Vec<TcpStream> = (1..32).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut refused = 0;
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let reply = read_until_closed(s.try_clone().unwrap(), Vec::new());
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("Retry-After: 1"), "{text}");
        refused += 1;
        let _ = s.flush();
    }
    assert_eq!(refused, 10);
    drop((held, watcher));
    eventually("the proxy to serve again once connections close", || {
        get(addr, "/f.txt").status == 200
    });
    assert_eq!(proxy.log_count("Too many open files"), 0);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn hostile_http_is_refused_and_the_server_keeps_serving() {
    let name = instance("hostile");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("f.txt", b"content")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    let raw = |bytes: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = s.write_all(bytes);
        read_until_closed(s, Vec::new())
    };
    let status_of =
        |reply: &[u8]| String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned();
    let ok = || {
        let r = get(addr, "/f.txt");
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"content"[..]),
            "still serving"
        );
    };

    // A head over 64 KiB is refused, not buffered.
    let big_header = format!(
        "GET /f.txt HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(status_of(&raw(big_header.as_bytes())), "HTTP/1.1 431");
    ok();
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "u".repeat(100 << 10)
    );
    assert_eq!(status_of(&raw(long_uri.as_bytes())), "HTTP/1.1 414");
    ok();
    assert_eq!(
        status_of(&raw(
            b"BREW /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )),
        "HTTP/1.1 405"
    );
    ok();
    assert_eq!(
        status_of(&raw(b"\x00\x01\x02 garbage\r\n\r\n")),
        "HTTP/1.1 400"
    );
    ok();
    // Chunk-size lines exactly as RFC 9112 §7.1 writes them (issue 21): spaces after a
    // size with no extension, a control character in an unterminated quoted extension,
    // and `chunked` twice are refused, where a lenient reader would guess.
    for bad in [
        &b"POST /f.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5  \r\nhello\r\n0\r\n\r\n"[..],
        b"POST /f.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"\x01\r\nhello\r\n0\r\n\r\n",
        b"POST /f.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        assert_eq!(status_of(&raw(bad)), "HTTP/1.1 400", "{}", String::from_utf8_lossy(bad));
        ok();
    }
    // A small body on GET is read and ignored; the connection goes on.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    c.write_all(&[b'x'; 5000]).unwrap();
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let replies = String::from_utf8_lossy(&read_until_closed(c, Vec::new())).into_owned();
    assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies}");
    // A small chunked body is read and ignored too.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(
        b"GET /f.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let replies = String::from_utf8_lossy(&read_until_closed(c, Vec::new())).into_owned();
    assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies}");
    // A body declared absurdly large gets 413 at once, and nothing is allocated for it.
    let reply = raw(b"GET /f.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\nabc");
    assert_eq!(status_of(&reply), "HTTP/1.1 413");
    ok();
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn storage_never_serves_outside_its_directory() {
    let name = instance("symlink");
    let outside = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    write_files(outside.path(), &[("secret.txt", b"secret")]);
    write_files(
        disk.path(),
        &[("inside.txt", b"inside"), ("sub/x.txt", b"x")],
    );
    let link = |target: &std::path::Path, at: &str| {
        std::os::unix::fs::symlink(target, disk.path().join(at)).unwrap()
    };
    link(&outside.path().join("secret.txt"), "escape.txt");
    link(outside.path(), "escape-dir");
    link(&disk.path().join("inside.txt"), "alias.txt");
    link(std::path::Path::new("../"), "sub/up");
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap()]);
    // Links that lead outside are not followed (404, as for a file that is not there);
    // the third path climbs nowhere: `..` is collapsed within the URL first, to
    // `/etc/passwd` under the root, which does not exist.
    for target in [
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/sub/up/../../etc/passwd",
    ] {
        let r = get(addr, target);
        assert_eq!(r.status, 404, "{target}");
        assert!(!r.body.windows(6).any(|w| w == b"secret"));
    }
    assert_eq!(
        get(addr, "/alias.txt").body,
        b"inside",
        "links that stay inside are fine"
    );
    assert_eq!(get(addr, "/sub/up/inside.txt").body, b"inside");
    stop_and_check_clean(&name, vec![proxy]);
}

/// Plays the cache: receives one call and answers it with the head bytes `head` makes of
/// the call's generation and 100 bytes of 'z' in slot 0, then lets `tamper` corrupt the
/// segment before posting `ready`.
fn fake_cache_answer(
    queue: &MessageQueue,
    head: impl Fn(u64) -> [u8; HEAD_CAPACITY],
    tamper: impl Fn(&str),
) {
    let mut buf = vec![0u8; MESSAGE_CAPACITY];
    let n = queue.receive_timeout(&mut buf, PATIENCE).unwrap();
    let message = Message::decode(&buf[..n]).unwrap();
    let seg = Segment::open(&message.segment).unwrap();
    seg.free().wait_timeout(PATIENCE).unwrap();
    let body = vec![b'z'; 100.min(seg.slot_capacity())];
    seg.write_slot(0, 0, &body);
    seg.set_slot_len(0, body.len());
    seg.write_head(&head(message.generation));
    tamper(&message.segment);
    seg.ready().post().unwrap();
}

/// Overwrites the length of slot `slot` in a segment, as a faulty peer could.
fn set_slot_len(segment: &str, slot: usize, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{segment}"))
        .unwrap();
    file.write_all_at(&len.to_ne_bytes(), (HEADER_SIZE + 8 * slot) as u64)
        .unwrap();
}

/// A stored response of 100 bytes with no header block, as a head would describe it.
fn meta() -> Meta {
    Meta {
        status: 200,
        total_len: 100,
        modified: None,
        etag: None,
        stored_at: 0,
        lifetime: Lifetime::from_secs(3600),
        identity: Identity::File(FileVersion(1)),
    }
}

/// Bytes of a head before its meta: kind, generation, pid, the stream's two lengths.
const META_AT: usize = HEAD_PREFIX_LEN;

/// A Found head whose stream is `header_len` bytes of header block and `body_len` of body.
fn found(
    meta: Meta,
    outcome: Outcome,
    header_len: u32,
    body_len: u64,
) -> impl Fn(u64) -> [u8; HEAD_CAPACITY] + Send {
    move |generation| {
        encode_head(
            &Head::Found {
                meta: meta.clone(),
                outcome,
            },
            Stream {
                header_len,
                body_len,
            },
            generation,
        )
    }
}

/// The head of a well-formed answer: 100 bytes, no header block.
fn valid(generation: u64) -> [u8; HEAD_CAPACITY] {
    found(meta(), Outcome::Full, 0, 100)(generation)
}

/// A valid head with `bytes` written over it at `at`.
fn edited(at: usize, bytes: &'static [u8]) -> impl Fn(u64) -> [u8; HEAD_CAPACITY] + Send {
    move |generation| {
        let mut head = valid(generation);
        head[at..at + bytes.len()].copy_from_slice(bytes);
        head
    }
}

#[test]
fn malformed_segment_heads_are_refused_without_reading_out_of_bounds() {
    let name = instance("badhead");
    let (queue, _) = MessageQueue::create(&queue_name(&name), 10, MESSAGE_CAPACITY).unwrap();
    let (proxy, addr) = Proc::proxy(&name, &["-n", "1", "-z", "4K", "--cache-timeout", "2"]);
    type Case = (
        &'static str,
        Box<dyn Fn(u64) -> [u8; HEAD_CAPACITY] + Send>,
        Box<dyn Fn(&str) + Send>,
    );
    let cases: Vec<Case> = vec![
        (
            "no head at all",
            Box::new(|_| [0; HEAD_CAPACITY]),
            Box::new(|_| {}),
        ),
        (
            "unknown head kind",
            Box::new(edited(0, &[77])),
            Box::new(|_| {}),
        ),
        (
            "body past the object",
            Box::new(found(
                meta(),
                Outcome::Partial { start: 0, len: 101 },
                0,
                101,
            )),
            Box::new(|_| {}),
        ),
        (
            "offset overflow",
            Box::new(found(
                meta(),
                Outcome::Partial {
                    start: u64::MAX,
                    len: 2,
                },
                0,
                2,
            )),
            Box::new(|_| {}),
        ),
        (
            "wrong generation",
            Box::new(move |generation| valid(generation + 1)),
            Box::new(|_| {}),
        ),
        (
            "entity tag length past its field",
            // status, total_len, modified (unknown: its tag alone): then the tag's length.
            Box::new(edited(META_AT + 2 + 8 + 1, &[200])),
            Box::new(|_| {}),
        ),
        (
            "header block too long",
            Box::new(found(meta(), Outcome::Full, MAX_HEADER_BLOCK + 1, 100)),
            Box::new(|_| {}),
        ),
        (
            "a header block that would split the response",
            Box::new(found(
                Meta {
                    total_len: 90,
                    ..meta()
                },
                Outcome::Full,
                10,
                90,
            )),
            Box::new(|_| {}),
        ),
        (
            "chunk past the slot",
            Box::new(valid),
            Box::new(|seg| set_slot_len(seg, 0, 1 << 40)),
        ),
        (
            "chunk past the body",
            Box::new(valid),
            Box::new(|seg| set_slot_len(seg, 0, 101)),
        ),
    ];
    let queue = Arc::new(queue);
    for (i, (what, head, tamper)) in cases.into_iter().enumerate() {
        let q = Arc::clone(&queue);
        let fake = thread::spawn(move || fake_cache_answer(&q, head, tamper));
        let r = get(addr, "/anything");
        fake.join().unwrap();
        assert_eq!(
            r.status, 503,
            "{what}: refused, and no storage to fall back on"
        );
        proxy.wait_log_count("protocol violation", i + 1);
    }
    // A well-formed answer through the same (rebuilt) segment still works.
    let q = Arc::clone(&queue);
    let fake = thread::spawn(move || fake_cache_answer(&q, valid, |_| {}));
    let r = get(addr, "/anything");
    fake.join().unwrap();
    assert_eq!((r.status, r.body), (200, vec![b'z'; 100]));
    queue.unlink().unwrap();
    drop(queue);
    stop_and_check_clean(&name, vec![proxy]);
}
