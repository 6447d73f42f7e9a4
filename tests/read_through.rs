//! The read-through cache: misses fill it through the channel, a byte budget holds with
//! LRU eviction, concurrent misses coalesce, an HTTP origin works, and the counters add up.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use shmcache::cache::entries::ENTRY_OVERHEAD;

#[test]
fn a_miss_fills_the_cache_and_the_next_request_hits() {
    let name = instance("fill");
    let disk = tempfile::tempdir().unwrap();
    let body = pattern(300_000, 31);
    write_files(disk.path(), &[("f.bin", &body), ("empty.txt", b"")]);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &["-z", "16K", "-k", "2", "-s", disk.path().to_str().unwrap()],
    );
    for key in ["/f.bin", "/empty.txt"] {
        let first = get(addr, key);
        assert_eq!(
            (first.status, first.header("x-cache")),
            (200, Some("MISS")),
            "{key}"
        );
        let second = get(addr, key);
        assert_eq!(
            (second.status, second.header("x-cache")),
            (200, Some("HIT")),
            "{key}"
        );
        assert!(first.body == second.body);
        assert_eq!(
            first.header("etag"),
            second.header("etag"),
            "validators travel with the fill"
        );
        assert_eq!(
            first.header("last-modified"),
            second.header("last-modified")
        );
    }
    assert!(get(addr, "/f.bin").body == body);
    let st = stats(addr);
    assert_eq!(st["proxy.requests"], 5);
    assert_eq!((st["proxy.hits"], st["proxy.misses"]), (3, 2));
    assert_eq!(st["proxy.hits"] + st["proxy.misses"], st["proxy.requests"]);
    assert_eq!(st["proxy.fills"], 2);
    assert_eq!(st["cache.stores"], 2);
    assert_eq!(st["cache.objects"], 2);
    // Bytes are counted once they are out, which may be just after the client has them.
    eventually("bytes_served to count all three bodies", || {
        stats(addr)["proxy.bytes_served"] == 3 * body.len() as u64
    });
    let metrics = String::from_utf8(get(addr, "/-/metrics").body).unwrap();
    assert!(
        metrics.contains("# TYPE shmcache_proxy_hits_total counter\nshmcache_proxy_hits_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("shmcache_cache_objects 2\n"), "{metrics}");
    assert!(metrics.contains("shmcache_cache_up 1\n"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_small_capacity_holds_and_the_least_recently_used_goes_first() {
    let name = instance("lru");
    let disk = tempfile::tempdir().unwrap();
    let files = make_files(disk.path(), (0..5).map(|i| (format!("{i}.bin"), 10_000)));
    // Room for three of them, each with its header block (Last-Modified, ETag and
    // Content-Type: about 110 bytes; 200 is room enough, and far from a fourth entry).
    let capacity = 3 * (10_000 + "/0.bin".len() as u64 + ENTRY_OVERHEAD + 200);
    let cap = capacity.to_string();
    let cache = Proc::cache(&name, &["--capacity", &cap]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap()]);
    let fetch = |i: usize| {
        let r = get(addr, &format!("/{i}.bin"));
        assert!(r.body == files[i].1);
        let held = stats(addr)["cache.bytes_held"];
        assert!(held <= capacity, "{held} bytes held, capacity {capacity}");
        r.header("x-cache").unwrap().to_owned()
    };
    for i in 0..3 {
        assert_eq!(fetch(i), "MISS");
    }
    assert_eq!(fetch(0), "HIT"); // 0 is now the most recent; 1 the least
    assert_eq!(fetch(3), "MISS"); // fills 3, evicting 1
    assert_eq!(fetch(0), "HIT");
    assert_eq!(fetch(2), "HIT");
    assert_eq!(fetch(1), "MISS", "the least recently used went first");
    let st = stats(addr);
    assert_eq!(st["cache.evictions"], 2, "3 and then 1 each pushed one out");
    assert_eq!(st["cache.objects"], 3);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn concurrent_misses_make_one_origin_fetch() {
    let name = instance("coalesce");
    // The origin takes a moment, so all twenty requests arrive while the first is fetching.
    let origin = Origin::start(Duration::from_millis(300));
    let body = pattern(200_000, 50);
    // Reusable for a minute: a response without freshness would be fetched by each.
    let mut file = OriginFile::new(body.clone());
    file.cache_control = Some("max-age=60".into());
    origin.put("/cold.bin", file);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url(), "-t", "32"]);
    let body = Arc::new(body);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let body = Arc::clone(&body);
            thread::spawn(move || {
                let r = get(addr, "/cold.bin");
                assert_eq!(r.status, 200);
                assert!(r.body == *body);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        origin.hits("/cold.bin"),
        1,
        "one fetch from the origin for twenty misses"
    );
    let st = stats(addr);
    assert_eq!(st["proxy.fills"], 1);
    assert_eq!(st["proxy.coalesced_waits"] + 1, 20);
    assert_eq!(st["proxy.hits"] + st["proxy.misses"], 20);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn origin_errors_and_validators() {
    let name = instance("origin");
    let origin = Origin::start(Duration::ZERO);
    let mut f = OriginFile::new(b"from the origin".to_vec());
    f.etag = Some("\"v1\"".into());
    f.last_modified = Some("Wed, 21 Oct 2015 07:28:00 GMT".into());
    origin.put("/dir/a%20b.txt", f);
    let mut chunked = OriginFile::new(pattern(50_000, 51));
    chunked.chunked = true;
    origin.put("/stream.bin", chunked.clone());
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &format!("{}/", origin.url())]);

    let r = get(addr, "/dir/a%20b.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"from the origin"[..]));
    assert_eq!(
        r.header("etag"),
        Some("\"v1\""),
        "the origin's validators are kept"
    );
    assert_eq!(
        r.header("last-modified"),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    let r = get(addr, "/dir/a%20b.txt");
    assert_eq!(
        (r.header("x-cache"), r.header("etag")),
        (Some("HIT"), Some("\"v1\""))
    );
    assert_eq!(origin.hits("/dir/a%20b.txt"), 1);

    assert_eq!(get(addr, "/missing").status, 404, "origin 404 is 404");
    assert_eq!(
        get(addr, "/fail").status,
        500,
        "the origin's status is passed on"
    );

    // Unknown length: passed through (chunked to the client), never cached.
    for _ in 0..2 {
        let r = get(addr, "/stream.bin");
        assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert!(r.body == chunked.body);
    }
    assert_eq!(origin.hits("/stream.bin"), 2);
    stop_and_check_clean(&name, vec![proxy, cache]);

    // An origin that is down: 502, quickly.
    let name = instance("origindown");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &url, "--origin-connect-timeout", "1"]);
    let r = get(addr, "/x");
    assert_eq!(r.status, 502);
    assert_eq!(stats(addr)["proxy.status_502"], 1);
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn objects_over_max_object_are_served_whole_and_not_cached() {
    let name = instance("maxobj");
    let disk = tempfile::tempdir().unwrap();
    let big = pattern(100_000, 60);
    let small = pattern(1000, 61);
    write_files(disk.path(), &[("big.bin", &big), ("small.bin", &small)]);
    let cache = Proc::cache(&name, &["--max-object", "50K"]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap()]);
    for _ in 0..2 {
        let r = get(addr, "/big.bin");
        assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
        assert!(r.body == big);
    }
    get(addr, "/small.bin");
    assert_eq!(get(addr, "/small.bin").header("x-cache"), Some("HIT"));
    let st = stats(addr);
    assert_eq!(st["cache.objects"], 1);
    assert_eq!(st["proxy.fills"], 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_fill_aborted_by_a_hang_up_leaves_no_entry() {
    let name = instance("fillabort");
    let disk = tempfile::tempdir().unwrap();
    // Larger than the socket buffers, so the client's hang-up lands mid-transfer.
    let big = pattern(32 << 20, 70);
    write_files(disk.path(), &[("big.bin", &big)]);
    let cache = Proc::cache(&name, &["--cache-timeout", "1"]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap(), "-z", "64K"]);
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut some = vec![0; 1 << 20];
        s.read_exact(&mut some).unwrap();
    }
    proxy.wait_log("\"GET /big.bin HTTP/1.1\" 200 aborted");
    cache.wait_log("/big.bin: the proxy cancelled");
    let st = stats(addr);
    assert_eq!(st["cache.objects"], 0, "no partial entry");
    assert_eq!(st["cache.stores_aborted"], 1);
    assert_eq!(st["proxy.fills_aborted"], 1);
    // The next request fills it properly.
    assert!(get(addr, "/big.bin").body == big);
    let r = get(addr, "/big.bin");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.body == big);
    stop_and_check_clean(&name, vec![proxy, cache]);
}
