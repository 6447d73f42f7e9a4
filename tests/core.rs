//! The core capability: files of every size cross the channel intact, under concurrency,
//! in either start order, and both processes clean up after themselves.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;

use common::*;
use shmcache::ipc::segment::slot_capacity;

/// Lengths around the slot boundary for segments of `size` bytes and `slots` slots, and
/// one several MiB long.
fn boundary_sizes(size: usize, slots: usize) -> Vec<usize> {
    let cap = slot_capacity(size, slots);
    let mut sizes = vec![
        0,
        1,
        cap - 1,
        cap,
        cap + 1,
        slots * cap,
        slots * cap + 1,
        5 << 20,
    ];
    sizes.sort();
    sizes.dedup();
    sizes
}

/// Every size around the slot and segment boundaries, byte for byte, with the cache's
/// workers receiving calls themselves (`workers`) or from its main thread (`boss`).
fn every_size_round_trips(tag: &str, size: usize, slots: usize, dispatch: &str) {
    let name = instance(tag);
    let dir = tempfile::tempdir().unwrap();
    let sizes = boundary_sizes(size, slots);
    let files = make_files(
        dir.path(),
        sizes.iter().map(|&len| (format!("f{len}.bin"), len)),
    );
    let cache = Proc::cache(
        &name,
        &["-c", dir.path().to_str().unwrap(), "--dispatch", dispatch],
    );
    let z = size.to_string();
    let k = slots.to_string();
    let (proxy, addr) = Proc::proxy(&name, &["-z", &z, "-k", &k, "-n", "2"]);
    for (key, bytes) in &files {
        let r = get(addr, &format!("/{key}"));
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.header("x-cache"), Some("HIT"), "{key}");
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert!(r.body == *bytes, "{key}: body differs");
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn every_size_round_trips_lock_step() {
    every_size_round_trips("sizes1", 4096, 1, "workers");
    every_size_round_trips("sizes1b", 4096, 1, "boss");
}

#[test]
fn every_size_round_trips_through_a_ring() {
    every_size_round_trips("sizes3", 4096, 3, "workers");
    every_size_round_trips("sizes3b", 4096, 3, "boss");
}

/// Many clients fetching mixed files at once through few segments: each body intact.
fn concurrent(tag: &str, clients: usize, segments: &str, slots: &str, dispatch: &str) {
    let name = instance(tag);
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 1000, 8191, 8192, 65_537, 300_000, 2 << 20];
    let keys = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("m/{i}.bin"), len));
    let files = make_files(dir.path(), keys);
    let dir_arg = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", dir_arg, "-t", "4", "--dispatch", dispatch]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &["-n", segments, "-k", slots, "-z", "8K", "-t", "32"],
    );
    let files = std::sync::Arc::new(files);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let files = std::sync::Arc::clone(&files);
            thread::spawn(move || {
                for round in 0..3 {
                    let (key, bytes) = &files[(c + round) % files.len()];
                    let r = get(addr, &format!("/{key}"));
                    assert_eq!(r.status, 200, "{key}");
                    assert!(r.body == *bytes, "client {c}: {key} differs");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client failed");
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn twenty_clients_share_one_segment() {
    concurrent("one-seg", 20, "1", "1", "workers");
}

#[test]
fn fifty_clients_over_four_segments() {
    concurrent("four-seg", 50, "4", "2", "workers");
}

#[test]
fn fifty_clients_over_four_segments_boss_dispatch() {
    concurrent("four-segb", 50, "4", "2", "boss");
}

#[test]
fn missing_key_is_404_and_storage_serves_misses() {
    let name = instance("miss");
    let cached = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let only_on_disk = pattern(100_000, 7);
    write_files(cached.path(), &[("c.txt", b"cached")]);
    write_files(
        storage.path(),
        &[("sub/d.bin", &only_on_disk), ("e.txt", b"")],
    );
    let cache = Proc::cache(&name, &["-c", cached.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", storage.path().to_str().unwrap()]);

    let r = get(addr, "/c.txt");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(r.body, b"cached");
    let r = get(addr, "/sub/d.bin");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert!(r.body == only_on_disk);
    let r = get(addr, "/e.txt");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 0),
        "a 0-byte file is a found file"
    );
    let r = get(addr, "/nowhere.txt");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"404 Not Found\n");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn missing_key_without_storage_is_404() {
    let name = instance("miss404");
    let cached = tempfile::tempdir().unwrap();
    write_files(cached.path(), &[("a", b"a")]);
    let cache = Proc::cache(&name, &["-c", cached.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    assert_eq!(get(addr, "/b").status, 404);
    assert_eq!(get(addr, "/a").status, 200);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn manifest_preload() {
    let name = instance("manifest");
    let dir = tempfile::tempdir().unwrap();
    let img = pattern(5000, 3);
    write_files(
        dir.path(),
        &[("files/a.txt", b"alpha"), ("files/img.png", &img)],
    );
    let manifest = dir.path().join("locals.txt");
    std::fs::write(
        &manifest,
        "/docs/a.txt files/a.txt\n/img.png files/img.png\n",
    )
    .unwrap();
    let cache = Proc::cache(&name, &["-c", manifest.to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    assert_eq!(get(addr, "/docs/a.txt").body, b"alpha");
    let r = get(addr, "/img.png");
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert!(r.body == img);
    assert_eq!(
        get(addr, "/files/a.txt").status,
        404,
        "keys come from the manifest"
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn client_hang_up_leaves_the_segment_clean() {
    let name = instance("hangup");
    let dir = tempfile::tempdir().unwrap();
    // Larger than the socket buffers of both ends together, so the transfer is still
    // running when the client hangs up.
    let big = pattern(32 << 20, 11);
    let small = pattern(10_000, 12);
    write_files(dir.path(), &[("big.bin", &big), ("small.bin", &small)]);
    // One cache worker and one segment: the next transfers can only succeed if the worker
    // was released and the segment rebuilt.
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap(), "-t", "1"]);
    let (proxy, addr) = Proc::proxy(&name, &["-n", "1", "-z", "8K", "--client-timeout", "2"]);
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 4096];
        s.read_exact(&mut first).unwrap();
        drop(s);
        for key in ["small.bin", "big.bin"] {
            let r = get(addr, &format!("/{key}"));
            let want = if key == "big.bin" { &big } else { &small };
            assert!(r.status == 200 && r.body == *want, "{key} after a hang-up");
        }
    }
    cache.wait_log_count("the proxy cancelled", 3);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn proxy_first_then_cache() {
    let name = instance("proxyfirst");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("x.txt", b"from the cache")]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    let r = get(addr, "/x.txt");
    assert_eq!(r.status, 503, "no cache and no storage yet");
    assert_eq!(r.header("retry-after"), Some("1"));
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    eventually("the proxy to find the cache", || {
        get(addr, "/x.txt").status == 200
    });
    assert_eq!(get(addr, "/x.txt").body, b"from the cache");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn cache_first_then_proxy() {
    let name = instance("cachefirst");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("x.txt", b"hello")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    // The proxy opens an existing queue before it starts listening: the first request hits.
    let r = get(addr, "/x.txt");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn sigterm_mid_transfer_still_unlinks_everything() {
    let name = instance("sigterm");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("big.bin", &pattern(8 << 20, 5))]);
    let cache = Proc::cache(
        &name,
        &["-c", dir.path().to_str().unwrap(), "--cache-timeout", "1"],
    );
    let (proxy, addr) = Proc::proxy(&name, &["-z", "8K", "--cache-timeout", "1"]);
    // A client that reads the head and then stops reading holds a segment mid-transfer.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert_eq!(shm_objects(&name).len(), 8, "eight segments while running");
    stop_and_check_clean(&name, vec![proxy, cache]);
    drop(s);
}

#[test]
fn curl_fetches_through_the_proxy() {
    let name = instance("curl");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let (proxy, addr) = Proc::proxy(&name, &["--spawn-cache", fixtures, "-s", fixtures]);
    let out_dir = tempfile::tempdir().unwrap();
    for key in [
        "big.bin",
        "images/logo.png",
        "empty.txt",
        "docs/nested/readme.md",
    ] {
        let out = out_dir.path().join("out");
        let status = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&out)
            .arg(format!("http://{addr}/{key}"))
            .status()
            .expect("curl is installed (.ci/run installs it)");
        assert!(status.success(), "curl {key}: {status}");
        let want = std::fs::read(format!("{fixtures}/{key}")).unwrap();
        assert!(std::fs::read(&out).unwrap() == want, "{key} differs");
    }
    let code = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/missing"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "404");
    // The spawned cache goes down with the proxy, and so does everything of this instance.
    stop_and_check_clean(&name, vec![proxy]);
}
