//! HTTP behaviour of a static file server: methods, validators, conditional and range
//! requests, paths, errors, keep-alive and the access log; from the cache and from
//! secondary storage alike.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::*;
use shmcache::ipc::segment::slot_capacity;
use shmcache::ipc::wire::MAX_KEY_LEN;

const Z: usize = 4096;

/// A cache holding `cached/`, a proxy with small segments and `disk/` as secondary storage.
struct Setup {
    name: String,
    cache: Proc,
    proxy: Proc,
    addr: SocketAddr,
    /// A proxy of another instance, with no cache: everything it serves is from `disk/`.
    disk_proxy: Proc,
    disk: SocketAddr,
    big: Vec<u8>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(tag: &str) -> Setup {
    let name = instance(tag);
    let cached = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let big = pattern(3 * slot_capacity(Z, 1) + 17, 1);
    for dir in [cached.path(), disk.path()] {
        write_files(
            dir,
            &[
                ("big.bin", &big),
                ("index.html", b"<h1>root</h1>"),
                ("dir/index.html", b"<h1>dir</h1>"),
                ("noindex/a.txt", b"a"),
                ("sp ace.txt", b"space"),
                ("empty.txt", b""),
            ],
        );
    }
    let cache = Proc::cache(&name, &["-c", cached.path().to_str().unwrap()]);
    let z = Z.to_string();
    let (proxy, addr) = Proc::proxy(&name, &["-z", &z, "-s", disk.path().to_str().unwrap()]);
    // The same files served from disk alone, to compare storage's answers with the cache's.
    filetime_like(&disk.path().join("big.bin"), &cached.path().join("big.bin"));
    let (disk_proxy, disk_addr) = Proc::proxy(
        &format!("{name}-disk"),
        &["-s", disk.path().to_str().unwrap()],
    );
    Setup {
        name,
        cache,
        proxy,
        addr,
        disk_proxy,
        disk: disk_addr,
        big,
        _dirs: (cached, disk),
    }
}

/// Gives `dst` the modification time of `src`.
fn filetime_like(dst: &std::path::Path, src: &std::path::Path) {
    let modified = std::fs::metadata(src).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(dst)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

impl Setup {
    fn stop(self) {
        stop_and_check_clean(&self.name, vec![self.proxy, self.cache]);
        stop_and_check_clean(&format!("{}-disk", self.name), vec![self.disk_proxy]);
    }
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let s = setup("head");
    for (addr, target) in [
        (s.addr, "/big.bin"),
        (s.disk, "/big.bin"),
        (s.addr, "/empty.txt"),
    ] {
        let get = request(addr, "GET", target, &[]);
        let head = request(addr, "HEAD", target, &[]);
        assert_eq!((get.status, head.status), (200, 200), "{target}");
        for h in [
            "content-length",
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
            "server",
        ] {
            assert!(get.header(h).is_some(), "{target}: GET lacks {h}");
            assert_eq!(get.header(h), head.header(h), "{target}: {h}");
        }
        assert!(get.header("date").is_some());
        // `request` reads HEAD bodies as empty: the server must close right after the head.
        assert!(head.body.is_empty());
    }
    let r = get(s.addr, "/big.bin");
    assert_eq!(
        r.header("content-length"),
        Some(s.big.len().to_string().as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        get(s.addr, "/index.html").header("content-type"),
        Some("text/html")
    );
    // The cache and the disk give one file the same validators.
    let disk = get(s.disk, "/big.bin");
    assert_eq!(disk.header("x-cache"), Some("MISS"));
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("last-modified"), disk.header("last-modified"));
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    s.stop();
}

#[test]
fn other_methods_get_405_with_allow() {
    let s = setup("405");
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = request(s.addr, method, "/big.bin", &[]);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.body, b"405 Method Not Allowed\n");
    }
    s.stop();
}

#[test]
fn conditional_requests_give_304() {
    let s = setup("304");
    for addr in [s.addr, s.disk] {
        let target = "/big.bin";
        let full = get(addr, target);
        let etag = full.header("etag").unwrap().to_owned();
        let modified = full.header("last-modified").unwrap().to_owned();
        let weak = format!("W/{etag}");
        let list = format!("\"nope\", {etag}");
        let earlier = httpdate::fmt_http_date(
            httpdate::parse_http_date(&modified).unwrap() - std::time::Duration::from_secs(1),
        );
        let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
            (vec![("If-None-Match", &etag)], 304),
            (vec![("If-None-Match", &weak)], 304),
            (vec![("If-None-Match", &list)], 304),
            (vec![("If-None-Match", "*")], 304),
            (vec![("If-None-Match", "\"nope\"")], 200),
            (vec![("If-Modified-Since", &modified)], 304),
            (vec![("If-Modified-Since", &earlier)], 200),
            (vec![("If-Modified-Since", "not a date")], 200),
            // If-None-Match wins: it does not match, so If-Modified-Since is not consulted.
            (
                vec![
                    ("If-None-Match", "\"nope\""),
                    ("If-Modified-Since", &modified),
                ],
                200,
            ),
            (
                vec![("If-None-Match", &etag), ("If-Modified-Since", &earlier)],
                304,
            ),
        ];
        for (headers, status) in cases {
            let r = request(addr, "GET", target, &headers);
            assert_eq!(r.status, status, "{target} {headers:?}");
            if status == 304 {
                assert!(r.body.is_empty(), "a 304 has no body");
                assert_eq!(r.header("etag"), Some(etag.as_str()));
            } else {
                assert!(r.body == s.big, "{target} {headers:?}: body");
            }
        }
    }
    // A revalidation of a cached object moves no body through the channel.
    let before = s.cache.log_count("sent /big.bin:");
    let etag = get(s.addr, "/big.bin").header("etag").unwrap().to_owned();
    s.cache.wait_log_count("sent /big.bin:", before + 1);
    assert_eq!(
        request(s.addr, "GET", "/big.bin", &[("If-None-Match", &etag)]).status,
        304
    );
    let line = s.cache.wait_log_count("sent /big.bin:", before + 2);
    assert!(line.contains("sent /big.bin: 0 bytes"), "{line}");
    s.stop();
}

#[test]
fn ranges_across_chunk_boundaries() {
    let s = setup("range");
    let cap = slot_capacity(Z, 1) as u64;
    let len = s.big.len() as u64;
    let cases = [
        (
            format!("bytes={}-{}", cap - 10, cap + 10),
            cap - 10,
            cap + 10,
        ),
        (format!("bytes={}-{}", 5, 2 * cap + 3), 5, 2 * cap + 3),
        (format!("bytes={}-", cap - 1), cap - 1, len - 1),
        (format!("bytes=-{}", cap + 20), len - cap - 20, len - 1),
        (
            format!("bytes={}-{}", len - 3, len + 1000),
            len - 3,
            len - 1,
        ),
        ("bytes=0-0".to_owned(), 0, 0),
    ];
    for addr in [s.addr, s.disk] {
        let target = "/big.bin";
        for (range, first, last) in &cases {
            for method in ["GET", "HEAD"] {
                let r = request(addr, method, target, &[("Range", range)]);
                assert_eq!(r.status, 206, "{target} {range}");
                assert_eq!(
                    r.header("content-range"),
                    Some(format!("bytes {first}-{last}/{len}").as_str()),
                    "{target} {range}"
                );
                let want = &s.big[*first as usize..=*last as usize];
                assert_eq!(
                    r.header("content-length"),
                    Some(want.len().to_string().as_str())
                );
                if method == "GET" {
                    assert!(r.body == want, "{target} {range}: bytes differ");
                }
            }
        }
        for unsatisfiable in [format!("bytes={len}-"), "bytes=-0".to_owned()] {
            let r = request(addr, "GET", target, &[("Range", &unsatisfiable)]);
            assert_eq!(r.status, 416, "{target} {unsatisfiable}");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes */{len}").as_str())
            );
        }
        for ignored in ["bytes=5-2", "bytes=0-1,5-6", "lines=1-2"] {
            let r = request(addr, "GET", target, &[("Range", ignored)]);
            assert_eq!(r.status, 200, "{target} {ignored} is answered whole");
            assert!(r.body == s.big);
        }
        // If-Range: the range applies only while the validator still matches.
        let etag = get(addr, target).header("etag").unwrap().to_owned();
        let r = request(
            addr,
            "GET",
            target,
            &[("Range", "bytes=0-9"), ("If-Range", &etag)],
        );
        assert_eq!((r.status, &r.body[..]), (206, &s.big[..10]));
        let r = request(
            addr,
            "GET",
            target,
            &[("Range", "bytes=0-9"), ("If-Range", "\"old\"")],
        );
        assert_eq!(r.status, 200);
        assert!(r.body == s.big);
    }
    let r = request(s.addr, "GET", "/empty.txt", &[("Range", "bytes=0-0")]);
    assert_eq!(
        (r.status, r.body.len()),
        (200, 0),
        "an empty file is sent whole"
    );
    s.stop();
}

#[test]
fn a_suffix_range_of_a_large_file_moves_only_those_bytes() {
    let name = instance("suffix");
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(16 << 20, 9);
    write_files(dir.path(), &[("16m.bin", &big)]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    let (proxy, addr) = Proc::proxy(&name, &[]);
    let r = request(addr, "GET", "/16m.bin", &[("Range", "bytes=-100")]);
    assert_eq!(r.status, 206);
    assert!(r.body == big[big.len() - 100..]);
    let total = big.len();
    let line = cache.wait_log("sent /16m.bin:");
    let moved = format!("100 bytes {}..{total} of {total}", total - 100);
    assert!(line.contains(&moved), "{line}");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn paths_are_decoded_normalised_and_checked() {
    let s = setup("paths");
    let ok = |target: &str, body: &[u8]| {
        let r = get(s.addr, target);
        assert_eq!((r.status, &r.body[..]), (200, body), "{target}");
    };
    ok("/sp%20ace.txt", b"space");
    ok("/sp%20ace.txt?v=1&x=%zz", b"space");
    ok("//dir/./../dir//index.html", b"<h1>dir</h1>");
    ok("/", b"<h1>root</h1>");
    ok("/dir/", b"<h1>dir</h1>");
    for bad in [
        "/../etc/passwd",
        "/dir/../../x",
        "/%2e%2e/x",
        "/a%00b",
        "/%zz",
        "/%e9",
    ] {
        let r = get(s.addr, bad);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body, b"400 Bad Request\n");
    }
    let long = format!("/{}", "a".repeat(MAX_KEY_LEN + 10));
    assert_eq!(get(s.addr, &long).status, 414);
    assert_eq!(
        get(s.addr, "/noindex/").status,
        404,
        "no directory listings"
    );
    let r = get(s.addr, "/dir?x=1");
    assert_eq!(r.status, 301, "a directory without its slash is redirected");
    assert_eq!(r.header("location"), Some("/dir/?x=1"));
    s.stop();
}

/// Reads one response with a Content-Length body from a kept-alive connection.
fn read_response(
    reader: &mut BufReader<TcpStream>,
    method: &str,
) -> (u16, Vec<u8>, Option<String>) {
    let (status, headers) = read_head(reader);
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; if method == "HEAD" { 0 } else { len }];
    reader.read_exact(&mut body).unwrap();
    (status, body, headers.get("connection").cloned())
}

#[test]
fn keep_alive_and_connection_close() {
    let s = setup("keepalive");
    // HTTP/1.1: several requests, including an error and a HEAD, on one connection.
    let stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    for (method, target, status) in [
        ("GET", "/big.bin", 200),
        ("GET", "/nope", 404),
        ("HEAD", "/big.bin", 200),
        ("GET", "/index.html", 200),
    ] {
        // One write per request: several small ones would stall on Nagle's algorithm.
        w.write_all(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (got, body, _) = read_response(&mut reader, method);
        assert_eq!(got, status, "{method} {target}");
        if target == "/big.bin" && method == "GET" {
            assert!(body == s.big);
        }
    }
    // HTTP/1.0 asking for keep-alive is told so, and may send a second request.
    let stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    for _ in 0..2 {
        w.write_all(b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (status, body, connection) = read_response(&mut reader, "GET");
        assert_eq!((status, &body[..]), (200, &b"<h1>root</h1>"[..]));
        assert_eq!(connection.as_deref(), Some("keep-alive"));
    }
    // Connection: close is honoured: the server closes after the response.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert!(
        all.ends_with(b"<h1>root</h1>"),
        "read to EOF: the server closed"
    );
    s.stop();
}

#[test]
fn access_log_has_one_parsable_line_per_request() {
    let s = setup("accesslog");
    get(s.addr, "/big.bin");
    get(s.disk, "/big.bin?q=1");
    request(s.addr, "HEAD", "/nope", &[]);
    let len = s.big.len();
    // nginx's combined format, then microseconds and source:
    // client - - [time] "request line" status bytes "referer" "user agent" micros source
    let hit = s.proxy.wait_log("\"GET /big.bin HTTP/1.1\"");
    let miss = s.disk_proxy.wait_log("\"GET /big.bin?q=1 HTTP/1.1\"");
    let none = s.proxy.wait_log("\"HEAD /nope HTTP/1.1\"");
    for (line, status, bytes, source) in [
        (&hit, 200, len, "hit"),
        (&miss, 200, len, "secondary"),
        (&none, 404, 0, "-"),
    ] {
        let after = line.split("HTTP/1.1\" ").nth(1).unwrap();
        let fields: Vec<&str> = after.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert_eq!(fields[0], status.to_string(), "{line}");
        assert_eq!(fields[1], bytes.to_string(), "{line}");
        assert_eq!(fields[2..4], ["\"-\"", "\"-\""], "{line}");
        assert!(fields[4].parse::<u64>().is_ok(), "{line}");
        assert_eq!(fields[5], source, "{line}");
        assert!(line.contains(" access] 127.0.0.1 - - ["), "{line}");
    }
    s.stop();
}

#[test]
fn curl_ranges_heads_and_time_conditions() {
    let s = setup("curlhttp");
    let url = format!("http://{}/big.bin", s.addr);
    let curl = |args: &[&str]| {
        let out = Command::new("curl").args(args).arg(&url).output().unwrap();
        assert!(out.status.success(), "curl {args:?}");
        out.stdout
    };
    assert!(curl(&["-s", "-r", "100-199"]) == s.big[100..200]);
    let head = String::from_utf8(curl(&["-s", "-I"])).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", s.big.len())),
        "{head}"
    );
    // -z DATE: fetch only if modified since; a date in the future means "not modified".
    let code = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-z",
        "Jan 1 2100",
    ]);
    assert_eq!(code, b"304");
    let code = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-z",
        "Jan 1 2000",
    ]);
    assert_eq!(code, b"200");
    s.stop();
}
