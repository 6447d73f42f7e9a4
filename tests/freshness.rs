//! Freshness: entries expire, are revalidated against secondary storage, are served stale
//! for a bounded time when it is down, can be purged, and the preload set reloads on
//! SIGHUP. Lifetimes are whole seconds, so these tests wait for the clock where that is
//! the behaviour under test, always by polling for the expected answer with a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn an_edited_file_is_served_fresh_after_its_ttl_and_not_before() {
    let name = instance("ttl");
    let disk = tempfile::tempdir().unwrap();
    write_files(disk.path(), &[("page.txt", b"version one")]);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap(), "--ttl", "2"]);
    let filled = Instant::now();
    assert_eq!(get(addr, "/page.txt").header("x-cache"), Some("MISS"));
    write_files(disk.path(), &[("page.txt", b"version two, longer")]);
    let r = get(addr, "/page.txt");
    assert!(
        filled.elapsed() < Duration::from_secs(1),
        "still within the lifetime"
    );
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"version one"[..]),
        "not before the TTL"
    );
    assert!(
        r.header("age")
            .is_some_and(|a| a.parse::<u64>().unwrap() <= 1)
    );
    eventually("the new version after the TTL", || {
        get(addr, "/page.txt").body == b"version two, longer"
    });
    assert!(filled.elapsed() >= Duration::from_secs(1));
    // Replaced through the channel: the next request is a hit on the new bytes.
    let r = get(addr, "/page.txt");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"version two, longer"[..])
    );
    let st = stats(addr);
    assert_eq!(st["proxy.replaced"], 1);
    assert!(st["cache.expired"] >= 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn an_origin_304_renews_without_moving_the_body_and_max_age_beats_ttl() {
    let name = instance("renew");
    let origin = Origin::start(Duration::ZERO);
    let body = pattern(100_000, 80);
    let mut f = OriginFile::new(body.clone());
    f.etag = Some("\"v1\"".into());
    f.cache_control = Some("max-age=1".into());
    origin.put("/a.bin", f);
    let cache = Proc::cache(&name, &[]);
    // --ttl alone would keep it fresh for an hour: max-age=1 must win.
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url(), "--ttl", "3600"]);
    assert_eq!(get(addr, "/a.bin").header("x-cache"), Some("MISS"));
    eventually("a revalidation with the origin", || {
        let r = get(addr, "/a.bin");
        assert!(r.status == 200 && r.body == body);
        origin.hits("/a.bin") == 2
    });
    assert_eq!(origin.bodies("/a.bin"), 1, "the 304 moved no body");
    let r = get(addr, "/a.bin");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let st = stats(addr);
    assert_eq!(st["proxy.revalidated"], 1);
    assert_eq!(st["cache.renewed"], 1);
    assert_eq!(st["proxy.hits"] + st["proxy.misses"], st["proxy.requests"]);
    assert_eq!(
        st["proxy.misses"], 1,
        "the revalidated request counts as a hit"
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn concurrent_revalidations_of_one_key_make_one_check() {
    let name = instance("revalcoalesce");
    // A slow origin, so all requests arrive while the first revalidation is under way.
    let origin = Origin::start(Duration::from_millis(300));
    let mut f = OriginFile::new(pattern(50_000, 81));
    f.etag = Some("\"v1\"".into());
    f.cache_control = Some("max-age=1".into());
    origin.put("/c.bin", f.clone());
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url(), "-t", "32"]);
    let stored = unix_seconds();
    assert_eq!(get(addr, "/c.bin").status, 200);
    // Lifetimes count whole seconds from when the entry was stored: wait for the clock.
    while unix_seconds() < stored + 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let body = f.body.clone();
            std::thread::spawn(move || {
                let r = get(addr, "/c.bin");
                assert!(
                    r.status == 200 && r.body == body,
                    "{} {} {:?}",
                    r.status,
                    r.body.len(),
                    r.header("x-cache")
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        origin.hits("/c.bin"),
        2,
        "one fetch, then one conditional check for twenty requests"
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn no_store_is_never_cached() {
    let name = instance("nostore");
    let origin = Origin::start(Duration::ZERO);
    let mut f = OriginFile::new(b"secret".to_vec());
    f.cache_control = Some("no-store".into());
    origin.put("/s.txt", f);
    let mut p = OriginFile::new(b"mine".to_vec());
    p.cache_control = Some("private, max-age=60".into());
    origin.put("/p.txt", p);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url()]);
    for path in ["/s.txt", "/p.txt"] {
        for _ in 0..2 {
            let r = get(addr, path);
            assert_eq!(
                (r.status, r.header("x-cache")),
                (200, Some("MISS")),
                "{path}"
            );
        }
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    assert_eq!(stats(addr)["cache.objects"], 0);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn stale_if_error_serves_during_the_grace_period_and_not_after() {
    let name = instance("grace");
    let origin = Origin::start(Duration::ZERO);
    let mut f = OriginFile::new(b"still good".to_vec());
    f.cache_control = Some("max-age=1".into());
    origin.put("/g.txt", f);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "-s",
            &origin.url(),
            "--stale-if-error",
            "2",
            "--origin-connect-timeout",
            "1",
        ],
    );
    let stored = Instant::now();
    assert_eq!(get(addr, "/g.txt").status, 200);
    origin.set_down(true);
    eventually("a stale answer while the origin is down", || {
        let r = get(addr, "/g.txt");
        assert_eq!((r.status, &r.body[..]), (200, &b"still good"[..]));
        stats(addr)["proxy.stale_served"] >= 1
    });
    assert!(
        stored.elapsed() < Duration::from_secs(4),
        "served stale within the grace period"
    );
    eventually("502 once the grace period is over", || {
        get(addr, "/g.txt").status == 502
    });
    assert!(
        stored.elapsed() >= Duration::from_secs(2),
        "not before lifetime plus grace"
    );
    origin.set_down(false);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

fn curl_purge(from: &str, url: &str) -> String {
    curl_status_from(from, "PURGE", url).to_string()
}

#[test]
fn purge_removes_an_entry_and_is_refused_from_other_addresses() {
    let name = instance("purge");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("a.txt", b"a"), ("b.txt", b"b")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &["--purge-allow", "127.0.0.3"]);
    let url = |key: &str| format!("http://{addr}{key}");
    assert_eq!(
        curl_purge("127.0.0.2", &url("/a.txt")),
        "403",
        "not an allowed address"
    );
    assert_eq!(get(addr, "/a.txt").status, 200, "still cached");
    assert_eq!(curl_purge("127.0.0.1", &url("/a.txt")), "200");
    assert_eq!(
        curl_purge("127.0.0.1", &url("/a.txt")),
        "404",
        "already gone"
    );
    assert_eq!(get(addr, "/a.txt").status, 404);
    assert_eq!(
        curl_purge("127.0.0.3", &url("/b.txt")),
        "200",
        "--purge-allow"
    );
    let st = stats(addr);
    assert_eq!(
        (
            st["proxy.purged"],
            st["cache.purged"],
            st["proxy.status_403"]
        ),
        (2, 2, 1)
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn sighup_reloads_the_preload_set_while_a_transfer_completes() {
    let name = instance("sighup");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(32 << 20, 90);
    write_files(dir.path(), &[("big.bin", &big)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    // A client that stops reading keeps the rest of its answer only as far as its share
    // of the response memory goes (a sixteenth of it): here all 32 MiB.
    let (proxy, addr) = Proc::proxy(&name, &["-z", "64K", "--buffer-memory", "1G"]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 1 << 20];
    s.read_exact(&mut first).unwrap();
    assert_eq!(get(addr, "/new.txt").status, 404);
    // The reload also replaces big.bin with other bytes of the same length.
    let replaced = pattern(32 << 20, 91);
    write_files(
        dir.path(),
        &[("new.txt", b"arrived"), ("big.bin", &replaced)],
    );
    cache.signal("HUP");
    cache.wait_log("] reloaded 2 files");
    assert_eq!(get(addr, "/new.txt").body, b"arrived");
    assert!(
        get(addr, "/big.bin").body == replaced,
        "new requests get the new bytes"
    );
    // The transfer that was in flight during the reload completes intact.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let body_at = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        first[body_at..] == big[..],
        "the transfer in flight kept the old bytes, intact"
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}
