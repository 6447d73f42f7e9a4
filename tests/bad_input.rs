//! Bad input gets a clear error and costs nothing: bad flags exit 2 with an error and usage, malformed
//! messages on the queue are logged and dropped while the cache keeps serving.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use shmcache::ipc::queue::MessageQueue;
use shmcache::ipc::queue_name;
use shmcache::ipc::segment::Segment;
use shmcache::ipc::wire::{MESSAGE_CAPACITY, Message};
use shmcache::ipc::{Call, Conditions};

fn usage_error(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{exe} {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        stderr.contains("Usage:") || stderr.contains("--help"),
        "{stderr}"
    );
    stderr
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    let proxy = env!("CARGO_BIN_EXE_webproxy");
    let cache = env!("CARGO_BIN_EXE_shmcached");
    usage_error(proxy, &["--no-such-flag"]);
    usage_error(proxy, &["-p", "http"]);
    usage_error(proxy, &["-n", "0"]);
    usage_error(proxy, &["-z", "12Q"]);
    usage_error(proxy, &["--name", "a/b"]);
    let err = usage_error(proxy, &["-z", "100"]);
    assert!(err.contains("too small"), "{err}");
    usage_error(proxy, &["-z", "4K", "-k", "100"]);
    usage_error(cache, &["--no-such-flag"]);
    usage_error(cache, &["-t", "0"]);
    usage_error(cache, &["--cache-timeout", "-1"]);
    let help = Command::new(proxy).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--segment-size",
        "--slots",
        "--spawn-cache",
        "--server",
        "--cache-timeout",
    ] {
        assert!(help.contains(flag), "--help does not explain {flag}");
    }
}

/// Runs `exe` with `args`, expecting it to fail at start with exit 1; returns stderr.
fn start_error(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{exe} {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_errors_name_what_they_concern() {
    let name = instance("starterr");
    let proxy = env!("CARGO_BIN_EXE_webproxy");
    let missing = "/nonexistent/shmcache-storage";
    let err = start_error(proxy, &["--name", &name, "--port", "0", "-s", missing]);
    assert!(
        err.contains(missing),
        "the missing directory is named: {err}"
    );
    // A port in use is named with its address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = start_error(proxy, &["--name", &name, "--port", &port]);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "the address is named: {err}"
    );
    let err = start_error(
        env!("CARGO_BIN_EXE_shmcached"),
        &["--name", &name, "-c", missing],
    );
    assert!(
        err.contains(missing),
        "the missing preload path is named: {err}"
    );
    assert_clean(&name);
}

#[test]
fn malformed_messages_are_dropped_and_the_cache_keeps_serving() {
    let name = instance("garbage");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("ok.txt", b"still serving")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let queue = MessageQueue::open(&queue_name(&name)).unwrap();
    // A segment of this instance, for requests that name a real segment.
    let seg_name = format!("/{name}.seg.999999.0");
    let seg = Segment::create(&seg_name, 4096, 1).unwrap();
    let good = |segment: &str, generation: u64| {
        Message {
            segment,
            generation,
            call: Call::Get {
                key: "/ok.txt",
                conditions: Conditions::default(),
                allow_stale: false,
                head_only: false,
            },
        }
        .encode()
        .unwrap()
    };
    // The segment is on generation 3, as after a checkout; requests below name it.
    seg.begin_transfer(3);
    let valid = good(&seg_name, 3);
    // Offsets from the table in src/ipc/wire.rs: magic, version, op, generation, the
    // segment's name (a length byte and the name), the key (two length bytes and the key),
    // the flags, the conditions.
    let key = 4 + 2 + 1 + 8 + 1 + seg_name.len() + 2;
    let flags = key + "/ok.txt".len();
    let mut messages: Vec<Vec<u8>> = vec![
        Vec::new(),
        valid[..20].to_vec(),
        [&valid[..], b"x"].concat(),
        good(&format!("/{name}x.seg.1.0"), 0),
        good("/other.seg.1.0", 0),
        good(&format!("/{name}.seg.424242.0"), 0),
        good(&seg_name, 7),
    ];
    for (at, byte) in [
        (0, 0x00),
        (4, 0x77),
        (6, 0x09),
        (flags, 0x04),
        (flags + 1, 0x09),
        (key, b'x'),
        (key + 3, 0x00), // "/ok\0txt": a NUL inside the key
        (key + 1, 0xff), // not UTF-8
    ] {
        let mut m = valid.to_vec();
        m[at] = byte;
        messages.push(m);
    }
    assert!(messages.iter().all(|m| m.len() <= MESSAGE_CAPACITY));
    for m in &messages {
        queue.send_timeout(m, Duration::from_secs(5)).unwrap();
    }
    cache.wait_log_count("dropped", messages.len());
    // The segment was never written: no head, and the ready semaphore untouched.
    assert_eq!(seg.read_head()[0], 0, "no head was written");
    drop(seg);

    let (proxy, addr) = Proc::proxy(&name, &[]);
    let r = get(addr, "/ok.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"still serving"[..]));
    drop(queue);
    stop_and_check_clean(&name, vec![proxy, cache]);
}
