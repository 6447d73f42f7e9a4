//! webproxy in front of an HTTP origin, as RFC 9111 says a shared cache behaves: each test
//! drives the real binaries against a small origin scripted in the test (tests/common
//! `Scripted`), which records every request it gets, so "served from the cache" is
//! "the origin was not asked".

mod common;

use std::time::{Duration, Instant};

use common::*;

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Requests the origin got for `target`.
fn asked(origin: &Scripted, target: &str) -> usize {
    origin.seen().iter().filter(|s| s.target == target).count()
}

/// A proxy and its cache in front of `origin`.
fn start(tag: &str, origin: &Scripted) -> (String, Proc, Proc, std::net::SocketAddr) {
    let name = instance(tag);
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url()]);
    (name, cache, proxy, addr)
}

/// GETs `target` (with `headers`) until the origin has been asked for it `count` times,
/// and returns that response: for entries whose lifetime of a second or two must run
/// out. Every response before it must be a hit.
fn get_until_asked(
    addr: std::net::SocketAddr,
    origin: &Scripted,
    method: &str,
    target: &str,
    count: usize,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let r = request(addr, method, target, &[]);
        if asked(origin, target) == count {
            return r;
        }
        assert_eq!(
            r.header("x-cache"),
            Some("HIT"),
            "{target} before it expired"
        );
        assert!(Instant::now() < deadline, "{target} never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn responses_pass_through_with_status_end_to_end_headers_date_and_age() {
    let date = http_date(-10);
    let origin = Scripted::start(move |seen, _| match seen.target.as_str() {
        "/page" => Answer::new(
            203,
            &[
                ("Cache-Control", "max-age=60"),
                ("Date", &date),
                ("X-Custom", "kept"),
                ("Set-Cookie", "a=1"),
                ("Connection", "X-Hop"),
                ("X-Hop", "dropped: named by Connection"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Type", "text/x"),
            ],
            b"hello",
        ),
        "/chunked" => Answer::new(
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("Transfer-Encoding", "chunked"),
            ],
            b"a body sent in chunks of seven",
        ),
        _ => Answer::new(410, &[("X-Why", "gone")], b"the origin's own page"),
    });
    let (name, cache, proxy, addr) = start("o-pass", &origin);

    let first = get(addr, "/page");
    let again = get(addr, "/page");
    for r in [&first, &again] {
        assert_eq!((r.status, &r.body[..]), (203, &b"hello"[..]));
        assert_eq!(r.header("x-custom"), Some("kept"));
        assert_eq!(r.header("set-cookie"), Some("a=1"));
        assert_eq!(r.header("content-type"), Some("text/x"));
        assert_eq!(r.header("x-hop"), None, "a field named in Connection");
        assert_eq!(r.header("keep-alive"), None, "hop-by-hop");
        assert_eq!(
            r.header("date"),
            first.header("date"),
            "the origin's Date is kept"
        );
    }
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(asked(&origin, "/page"), 1);
    // §4.2.3: the response was 10 s old when it arrived (its Date), so it is at least that.
    let age: u64 = again.header("age").unwrap().parse().unwrap();
    assert!((10..20).contains(&age), "Age {age}");

    // Statuses and bodies the proxy does not make up.
    let r = get(addr, "/elsewhere");
    assert_eq!(
        (r.status, &r.body[..]),
        (410, &b"the origin's own page"[..])
    );
    assert_eq!(r.header("x-why"), Some("gone"));

    // A body of unknown length is stored once it is all in, and served with its length.
    for _ in 0..2 {
        let r = get(addr, "/chunked");
        assert_eq!(r.body, b"a body sent in chunks of seven");
    }
    let r = get(addr, "/chunked");
    assert_eq!(
        (r.header("x-cache"), r.header("content-length")),
        (Some("HIT"), Some("30"))
    );
    assert_eq!(asked(&origin, "/chunked"), 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn requests_are_forwarded_with_their_query_headers_via_and_bodies() {
    let origin = Scripted::start(|seen, _| {
        let status = if seen.method == "PUT" { 201 } else { 200 };
        let body = format!("{} {}", seen.method, seen.target);
        Answer::new(status, &[("Cache-Control", "max-age=60")], body.as_bytes())
    });
    let (name, cache, proxy, addr) = start("o-forward", &origin);

    let headers = [("Test-ID", "t1"), ("Keep-Alive", "300"), ("Abc", "x")];
    let r = request(addr, "GET", "/q?page=1", &headers);
    assert_eq!(r.body, b"GET /q?page=1");
    let seen = origin.last();
    assert_eq!(seen.target, "/q?page=1", "the query is forwarded");
    assert_eq!(
        (seen.header("test-id"), seen.header("abc")),
        (Some("t1"), Some("x"))
    );
    assert_eq!(seen.header("keep-alive"), None, "hop-by-hop");
    assert!(seen.header("via").unwrap().contains("shmcache"));
    assert_eq!(seen.header("host"), Some(origin.addr.to_string().as_str()));
    // The query is part of the key.
    assert_eq!(get(addr, "/q?page=2").body, b"GET /q?page=2");
    assert_eq!(get(addr, "/q?page=1").header("x-cache"), Some("HIT"));
    assert_eq!(get(addr, "/q?page=2").header("x-cache"), Some("HIT"));
    assert_eq!(origin.count(), 2);

    // Other methods reach the origin with their bodies, every time: never cached.
    for method in ["POST", "PUT", "DELETE", "M-SEARCH", "POST"] {
        let r = request_with_body(addr, method, "/m?x=1", &[("Test-ID", "t2")], b"abc");
        assert_eq!(r.body, format!("{method} /m?x=1").as_bytes());
        assert_eq!(r.status, if method == "PUT" { 201 } else { 200 });
        let seen = origin.last();
        assert_eq!((&seen.method[..], &seen.body[..]), (method, &b"abc"[..]));
        assert_eq!(seen.header("test-id"), Some("t2"));
    }
    assert_eq!(asked(&origin, "/m?x=1"), 5);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn successful_unsafe_methods_invalidate_target_location_and_content_location() {
    let origin = Scripted::start(|seen, n| match seen.method.as_str() {
        "POST" => Answer::new(
            200,
            &[("Location", "/b"), ("Content-Location", "/c?v=1")],
            b"",
        ),
        "DELETE" => Answer::new(500, &[], b"failed"),
        _ => Answer::new(
            200,
            &[("Cache-Control", "max-age=60")],
            n.to_string().as_bytes(),
        ),
    });
    let (name, cache, proxy, addr) = start("o-invalidate", &origin);
    let paths = ["/a", "/b", "/c?v=1", "/x"];
    for path in paths {
        get(addr, path);
        assert_eq!(get(addr, path).header("x-cache"), Some("HIT"), "{path}");
    }
    assert_eq!(
        request_with_body(addr, "POST", "/a", &[], b"abc").status,
        200
    );
    for path in ["/a", "/b", "/c?v=1"] {
        assert_eq!(get(addr, path).header("x-cache"), Some("MISS"), "{path}");
        let gets = origin
            .seen()
            .iter()
            .filter(|s| s.target == path && s.method == "GET")
            .count();
        assert_eq!(gets, 2, "{path}: fetched again");
    }
    // An error does not invalidate.
    assert_eq!(request(addr, "DELETE", "/x", &[]).status, 500);
    assert_eq!(get(addr, "/x").header("x-cache"), Some("HIT"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn storing_and_freshness_follow_the_response() {
    let origin = Scripted::start(|seen, _| {
        let (now, hour_ago, soon_after) = (http_date(0), http_date(-3600), http_date(-3540));
        let days_ago = http_date(-10 * 24 * 3600);
        let in_a_minute = http_date(60);
        let path = seen.target.as_str();
        let headers: Vec<(&str, &str)> = match path {
            "/no-store" => vec![("Cache-Control", "no-store, max-age=60")],
            "/private" => vec![("Cache-Control", "private, max-age=60")],
            "/auth" => vec![("Cache-Control", "max-age=60")],
            "/auth-public" => vec![("Cache-Control", "public, max-age=60")],
            "/s-maxage" => vec![("Cache-Control", "max-age=0, s-maxage=60")],
            "/expires" => vec![("Date", &now), ("Expires", &in_a_minute)],
            // Expires a minute after its Date, which was an hour ago: stale on arrival.
            "/expired" => vec![("Date", &hour_ago), ("Expires", &soon_after)],
            "/heuristic" => vec![("Date", &now), ("Last-Modified", &days_ago)],
            "/pragma" => vec![("Cache-Control", "max-age=60")],
            "/short" => vec![("Cache-Control", "max-age=1")],
            _ => vec![],
        };
        Answer::new(200, &headers, path.as_bytes())
    });
    let (name, cache, proxy, addr) = start("o-store", &origin);
    let auth = [("Authorization", "Basic dTpw")];
    let twice = |path: &str, headers: &[(&str, &str)]| {
        for _ in 0..2 {
            assert_eq!(request(addr, "GET", path, headers).body, path.as_bytes());
        }
        asked(&origin, path)
    };
    for (path, headers, fetches) in [
        ("/no-store", &[][..], 2),
        ("/private", &[], 2),
        ("/auth", &auth[..], 2),
        ("/auth-public", &auth, 1),
        ("/s-maxage", &[], 1),
        ("/expires", &[], 1),
        ("/expired", &[], 2),
        ("/heuristic", &[], 1),
        ("/none", &[], 2),
    ] {
        assert_eq!(twice(path, headers), fetches, "{path}");
    }
    // A client's reload: Pragma: no-cache counts when there is no Cache-Control.
    get(addr, "/pragma");
    request(addr, "GET", "/pragma", &[("Pragma", "no-cache")]);
    assert_eq!(asked(&origin, "/pragma"), 2);
    request(
        addr,
        "GET",
        "/pragma",
        &[("Pragma", "no-cache"), ("Cache-Control", "x")],
    );
    assert_eq!(asked(&origin, "/pragma"), 2);

    // max-age=1: hits for about a second, then the origin again.
    get(addr, "/short");
    let r = get_until_asked(addr, &origin, "GET", "/short", 2);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn request_directives_a_shared_cache_honours() {
    let origin = Scripted::start(|seen, _| {
        let tag = "\"r1\"";
        if seen.header("if-none-match") == Some(tag) {
            return Answer::new(304, &[("ETag", tag)], b"");
        }
        if seen.target == "/stale" {
            return Answer::new(200, &[("Cache-Control", "max-age=1")], b"body");
        }
        // 100 s old on arrival: older than a client's max-age=50 allows.
        let headers = [
            ("Cache-Control", "max-age=600"),
            ("ETag", tag),
            ("Age", "100"),
        ];
        Answer::new(200, &headers, b"body")
    });
    let (name, cache, proxy, addr) = start("o-request", &origin);
    get(addr, "/r");
    for (cc, fetches) in [
        ("max-age=3600", 1),
        ("max-age=50", 2),
        ("no-cache", 3),
        ("max-age=3600", 3),
        ("min-fresh=3600", 4),
        ("min-fresh=1", 4),
    ] {
        let r = request(addr, "GET", "/r", &[("Cache-Control", cc)]);
        assert_eq!((r.status, &r.body[..]), (200, &b"body"[..]), "{cc}");
        assert_eq!(asked(&origin, "/r"), fetches, "{cc}");
    }
    // A validation sends the stored validator; the 304 makes the stored response fresh.
    assert_eq!(origin.last().header("if-none-match"), Some("\"r1\""));

    let r = request(
        addr,
        "GET",
        "/never",
        &[("Cache-Control", "only-if-cached")],
    );
    assert_eq!(r.status, 504);
    assert_eq!(asked(&origin, "/never"), 0);

    // max-stale takes a stale response: wait out /stale's second of life. Lifetimes
    // count whole seconds from when the cache stored it, so wait for the clock.
    let stored = unix_seconds();
    get(addr, "/stale");
    let stale = [("Cache-Control", "max-stale=3600")];
    while unix_seconds() < stored + 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = request(addr, "GET", "/stale", &stale);
    assert_eq!(
        (r.header("x-cache"), asked(&origin, "/stale")),
        (Some("HIT"), 1)
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn vary_keeps_a_variant_per_request_and_star_is_never_reused() {
    let origin = Scripted::start(|seen, _| {
        let lang = seen.header("accept-language").unwrap_or("none").to_owned();
        let vary = if seen.target == "/star" {
            "*"
        } else {
            "Accept-Language"
        };
        let headers = [("Cache-Control", "max-age=60"), ("Vary", vary)];
        Answer::new(200, &headers, lang.as_bytes())
    });
    let (name, cache, proxy, addr) = start("o-vary", &origin);
    let in_lang = |lang: Option<&str>| {
        let headers: Vec<(&str, &str)> = lang.map(|l| ("Accept-Language", l)).into_iter().collect();
        request(addr, "GET", "/v", &headers)
    };
    for round in 0..2 {
        for lang in [Some("en"), Some("fr"), None] {
            let r = in_lang(lang);
            assert_eq!(r.body, lang.unwrap_or("none").as_bytes());
            let expected = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(
                r.header("x-cache"),
                Some(expected),
                "{lang:?}, round {round}"
            );
        }
    }
    assert_eq!(asked(&origin, "/v"), 3);
    // Whitespace a field's syntax allows does not make another variant (§4.1), nor does
    // the case of a language tag.
    for same in ["en ", "EN"] {
        let r = request(addr, "GET", "/v", &[("Accept-Language", same)]);
        assert_eq!(
            (r.header("x-cache"), &r.body[..]),
            (Some("HIT"), &b"en"[..])
        );
    }
    for _ in 0..2 {
        get(addr, "/star");
    }
    assert_eq!(asked(&origin, "/star"), 2);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn validation_sends_stored_validators_and_a_304_updates_the_stored_headers() {
    const TAG: &str = "\"e1\"";
    const MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    let origin = Scripted::start(|seen, _| {
        if seen.header("if-none-match") == Some(TAG) {
            let headers = [
                ("Cache-Control", "max-age=60"),
                ("X-Version", "2"),
                ("ETag", TAG),
            ];
            return Answer::new(304, &headers, b"");
        }
        let headers = [
            ("Cache-Control", "max-age=1"),
            ("ETag", TAG),
            ("Last-Modified", MODIFIED),
            ("X-Version", "1"),
            ("Content-Type", "text/x"),
        ];
        Answer::new(200, &headers, b"the body")
    });
    let (name, cache, proxy, addr) = start("o-304", &origin);
    get(addr, "/e");
    let r = get_until_asked(addr, &origin, "GET", "/e", 2);
    let seen = origin.last();
    assert_eq!(
        seen.header("if-none-match"),
        Some(TAG),
        "sent back verbatim"
    );
    assert_eq!(seen.header("if-modified-since"), Some(MODIFIED));
    for r in [r, get(addr, "/e")] {
        assert_eq!((r.status, &r.body[..]), (200, &b"the body"[..]));
        assert_eq!(r.header("x-version"), Some("2"), "updated by the 304");
        assert_eq!(r.header("content-type"), Some("text/x"), "kept");
        assert_eq!(r.header("x-cache"), Some("HIT"));
    }
    assert_eq!(asked(&origin, "/e"), 2, "fresh for a minute after the 304");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_head_response_freshens_the_stored_get_response() {
    let origin = Scripted::start(|seen, _| {
        let headers: &[(&str, &str)] = if seen.method == "HEAD" {
            &[
                ("Cache-Control", "max-age=60"),
                ("ETag", "\"h\""),
                ("X-V", "2"),
            ]
        } else {
            &[
                ("Cache-Control", "max-age=1"),
                ("ETag", "\"h\""),
                ("X-V", "1"),
            ]
        };
        Answer::new(200, headers, b"get body")
    });
    let (name, cache, proxy, addr) = start("o-head", &origin);
    get(addr, "/h");
    // A fresh HEAD is answered from the cache; once stale, it goes to the origin.
    let r = get_until_asked(addr, &origin, "HEAD", "/h", 2);
    assert_eq!((r.status, r.header("content-length")), (200, Some("8")));
    let r = get(addr, "/h");
    assert_eq!(
        (r.header("x-cache"), r.header("x-v")),
        (Some("HIT"), Some("2"))
    );
    assert_eq!(r.body, b"get body");
    assert_eq!(asked(&origin, "/h"), 2);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn conditional_and_range_requests_are_answered_from_the_cache() {
    let origin = Scripted::start(|_, _| {
        let headers = [("Cache-Control", "max-age=60"), ("ETag", "\"c1\"")];
        Answer::new(200, &headers, b"0123456789")
    });
    let (name, cache, proxy, addr) = start("o-cond", &origin);
    get(addr, "/c");
    let r = request(addr, "GET", "/c", &[("If-None-Match", "\"c1\"")]);
    assert_eq!((r.status, r.header("etag")), (304, Some("\"c1\"")));
    let r = request(addr, "GET", "/c", &[("Range", "bytes=2-5")]);
    assert_eq!((r.status, &r.body[..]), (206, &b"2345"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    let r = request(addr, "HEAD", "/c", &[]);
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
    assert_eq!(origin.count(), 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn stale_while_revalidate_serves_at_once_and_validates_behind() {
    const TAG: &str = "\"s1\"";
    let origin = Scripted::start(|seen, _| {
        if seen.header("if-none-match") == Some(TAG) {
            let headers = [("Cache-Control", "max-age=60"), ("X-V", "2"), ("ETag", TAG)];
            return Answer::new(304, &headers, b"");
        }
        let headers = [
            ("Cache-Control", "max-age=1, stale-while-revalidate=60"),
            ("ETag", TAG),
            ("X-V", "1"),
        ];
        Answer::new(200, &headers, b"swr")
    });
    let (name, cache, proxy, addr) = start("o-swr", &origin);
    let stored = unix_seconds();
    get(addr, "/s");
    while unix_seconds() < stored + 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stale: served as it is, at once; the validation goes on behind it.
    let r = get(addr, "/s");
    assert_eq!(
        (r.header("x-cache"), r.header("x-v")),
        (Some("HIT"), Some("1"))
    );
    eventually("the validation behind the stale response", || {
        asked(&origin, "/s") == 2
    });
    eventually("the 304's fields stored", || {
        get(addr, "/s").header("x-v") == Some("2")
    });
    assert_eq!(origin.last().header("if-none-match"), Some(TAG));
    assert_eq!(asked(&origin, "/s"), 2);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn origin_connections_are_kept_and_a_failed_reuse_is_retried_only_when_idempotent() {
    // Each connection answers its first request and is closed by the origin when a second
    // one arrives on it: the race of an origin closing an idle connection, every time.
    let origin = Scripted::start(|seen, n| {
        if seen.nth_on_connection > 1 {
            return Answer::disconnect();
        }
        let body = format!("{} {} #{n}", seen.method, seen.target);
        Answer::new(200, &[("Cache-Control", "no-store")], body.as_bytes())
    });
    let (name, cache, proxy, addr) = start("o-retry", &origin);

    assert_eq!(get(addr, "/a").body, b"GET /a #1");
    // On the kept connection, then again on a new one; the client sees only the answer.
    let r = get(addr, "/b");
    assert_eq!((r.status, &r.body[..]), (200, &b"GET /b #3"[..]));
    let b: Vec<(usize, usize)> = origin
        .seen()
        .iter()
        .filter(|s| s.target == "/b")
        .map(|s| (s.connection, s.nth_on_connection))
        .collect();
    assert_eq!(
        b,
        [(0, 2), (1, 1)],
        "sent on the kept connection, then once more"
    );

    // A POST never meets a kept connection, so it is never sent twice.
    let before = origin.count();
    let r = request_with_body(addr, "POST", "/c", &[], b"once");
    assert_eq!((r.status, &r.body[..]), (200, &b"POST /c #4"[..]));
    let posts: Vec<Seen> = origin.seen().into_iter().skip(before).collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        (posts[0].nth_on_connection, &posts[0].body[..]),
        (1, &b"once"[..])
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn misses_share_one_origin_connection_unless_keepalive_is_off() {
    let origin = Scripted::start(|seen, _| {
        Answer::new(
            200,
            &[("Cache-Control", "no-store")],
            seen.target.as_bytes(),
        )
    });
    let (name, cache, proxy, addr) = start("o-keep", &origin);
    for path in ["/1", "/2", "/3"] {
        assert_eq!(get(addr, path).body, path.as_bytes());
    }
    let seen = origin.seen();
    assert!(seen.iter().all(|s| s.connection == 0), "{seen:?}");
    assert_eq!(seen.last().unwrap().nth_on_connection, 3);
    assert_eq!(seen[0].header("connection"), None);
    stop_and_check_clean(&name, vec![proxy, cache]);

    let origin = Scripted::start(|seen, _| {
        Answer::new(
            200,
            &[("Cache-Control", "no-store")],
            seen.target.as_bytes(),
        )
    });
    let name = instance("o-nokeep");
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", &origin.url(), "--origin-keepalive", "0"]);
    for path in ["/1", "/2"] {
        assert_eq!(get(addr, path).body, path.as_bytes());
    }
    let seen = origin.seen();
    let connections: Vec<usize> = seen.iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 1]);
    assert_eq!(seen[0].header("connection"), Some("close"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn an_origin_that_closes_gets_504_for_what_must_be_revalidated_and_stale_for_the_rest() {
    // RFC 9111 §5.2.2.2: "if a cache is disconnected, the cache MUST generate an error
    // response rather than reuse the stale response … SHOULD be 504".
    let origin = Scripted::start(|seen, _| {
        let cc = match seen.target.as_str() {
            "/must" => "max-age=1, must-revalidate",
            "/s" => "s-maxage=1",
            _ => "max-age=1",
        };
        if seen.header("if-none-match").is_some() {
            return Answer::disconnect();
        }
        Answer::new(200, &[("Cache-Control", cc), ("ETag", "\"v\"")], b"stored")
    });
    let (name, cache, proxy, addr) = start("o-close", &origin);
    for path in ["/must", "/s", "/plain"] {
        assert_eq!(get(addr, path).body, b"stored");
    }
    let validated = |path: &str| {
        origin
            .seen()
            .iter()
            .any(|s| s.target == path && s.header("if-none-match").is_some())
    };
    for path in ["/must", "/s", "/plain"] {
        let deadline = Instant::now() + Duration::from_secs(6);
        let r = loop {
            let r = get(addr, path);
            if validated(path) {
                break r;
            }
            assert_eq!(r.body, b"stored", "{path} before it expired");
            assert!(Instant::now() < deadline, "{path} never expired");
            std::thread::sleep(Duration::from_millis(100));
        };
        if path == "/plain" {
            assert_eq!((r.status, &r.body[..]), (200, &b"stored"[..]), "{path}");
        } else {
            assert_eq!(r.status, 504, "{path}");
            assert_ne!(r.body, b"stored", "{path}");
        }
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_post_response_with_freshness_and_its_own_content_location_answers_later_gets() {
    // RFC 9110 §9.3.3; the cache test suite's method-POST.
    let origin = Scripted::start(|seen, n| {
        let location = match seen.target.as_str() {
            "/elsewhere" => "/other",
            target => target,
        };
        let cc = if seen.target == "/heuristic" {
            "public"
        } else {
            "max-age=60"
        };
        let body = format!("{} {} #{n}", seen.method, seen.target);
        Answer::new(
            200,
            &[("Cache-Control", cc), ("Content-Location", location)],
            body.as_bytes(),
        )
    });
    let (name, cache, proxy, addr) = start("o-post", &origin);
    for path in ["/post", "/elsewhere", "/heuristic"] {
        let posted = request_with_body(addr, "POST", path, &[], b"form");
        assert_eq!(posted.header("x-cache"), Some("MISS"));
        let r = get(addr, path);
        if path == "/post" {
            assert_eq!(r.header("x-cache"), Some("HIT"), "{path}");
            assert_eq!(r.body, posted.body, "the POST's response, byte for byte");
        } else {
            assert_eq!(r.header("x-cache"), Some("MISS"), "{path}");
            assert_eq!(r.body, format!("GET {path} #{}", origin.count()).as_bytes());
        }
    }
    // A POST is still forwarded every time, and replaces what it stored.
    let again = request_with_body(addr, "POST", "/post", &[], b"form");
    let r = get(addr, "/post");
    assert_eq!((r.header("x-cache"), &r.body), (Some("HIT"), &again.body));
    assert_eq!(
        origin.seen().iter().filter(|s| s.method == "POST").count(),
        4
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_variant_in_the_language_a_request_prefers_most_answers_it() {
    // The cache test suite's vary-normalise-lang-select.
    let origin = Scripted::start(|seen, n| {
        let language = match seen.header("accept-language") {
            Some(l) if l.starts_with("fr") && !l.contains("de") => "fr",
            _ => "de",
        };
        Answer::new(
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("Vary", "Accept-Language"),
                ("Content-Language", language),
            ],
            format!("{language} #{n}").as_bytes(),
        )
    });
    let (name, cache, proxy, addr) = start("o-lang", &origin);
    let ask = |value: &str| request(addr, "GET", "/doc", &[("Accept-Language", value)]);
    assert_eq!(ask("en, de").body, b"de #1");
    let r = ask("fr;q=0.5, de;q=1.0");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"de #1"[..])
    );
    // Nothing stored in fr; a tie between fr and de selects nothing stored either.
    assert_eq!(ask("fr").body, b"fr #2");
    assert_eq!(ask("fr, de").header("x-cache"), Some("MISS"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn request_field_values_reach_the_origin_as_the_bytes_sent() {
    // Issue 21: obs-text (Latin-1 é) and UTF-8 (é as two bytes) are octets to pass on,
    // not text to re-encode (RFC 9110 §5.5).
    let origin = Scripted::start(|_, _| Answer::new(200, &[("Cache-Control", "no-store")], b"ok"));
    let (name, cache, proxy, addr) = start("o-bytes", &origin);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    use std::io::Write;
    s.write_all(
        b"GET /x HTTP/1.1\r\nHost: t\r\nX-Obs: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (status, _) = read_head(&mut std::io::BufReader::new(&s));
    assert_eq!(status, 200);
    // The origin reads each byte as one char.
    let seen = origin.last();
    assert_eq!(seen.header("x-obs"), Some("caf\u{e9}"));
    assert_eq!(seen.header("x-utf8"), Some("caf\u{c3}\u{a9}"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// The bytes `range` (`bytes=a-b`, `a-` or `-n`) selects of `body`, as (start, end).
fn byte_range(range: &str, len: usize) -> (usize, usize) {
    let spec = range.strip_prefix("bytes=").unwrap();
    let (a, b) = spec.split_once('-').unwrap();
    match (a.parse::<usize>(), b.parse::<usize>()) {
        (Ok(a), Ok(b)) => (a, b.min(len - 1)),
        (Ok(a), Err(_)) => (a, len - 1),
        (Err(_), Ok(n)) => (len - n, len - 1),
        _ => panic!("{range}"),
    }
}

#[test]
fn partial_responses_are_stored_answer_ranges_within_them_and_are_completed() {
    // RFC 9111 §3.3 and §3.4; the cache test suite's partial-store-partial-* tests.
    const BODY: &[u8] = b"0123456789";
    let origin = Scripted::start(|seen, _| {
        let tagged = seen.target == "/r";
        let mut headers = vec![("Cache-Control", "max-age=60")];
        if tagged {
            headers.push(("ETag", "\"r1\""));
        }
        if seen.target == "/bad" {
            // A Content-Range that promises a byte more than the body has.
            headers.push(("Content-Range", "bytes 4-9/10"));
            return Answer::new(206, &headers, b"01234");
        }
        let if_range_fails = seen.header("if-range").is_some_and(|t| t != "\"r1\"");
        match seen.header("range") {
            Some(range) if !if_range_fails => {
                let (a, b) = byte_range(range, BODY.len());
                let content_range = format!("bytes {a}-{b}/{}", BODY.len());
                headers.push(("Content-Range", &content_range));
                Answer::new(206, &headers, &BODY[a..=b])
            }
            _ => Answer::new(200, &headers, BODY),
        }
    });
    let (name, cache, proxy, addr) = start("o-partial", &origin);
    let ranged = |path: &str, range: &str| request(addr, "GET", path, &[("Range", range)]);

    let r = ranged("/r", "bytes=0-3");
    assert_eq!((r.status, &r.body[..]), (206, &b"0123"[..]));
    for (range, part, content_range) in [
        ("bytes=1-2", &b"12"[..], "bytes 1-2/10"),
        ("bytes=0-3", b"0123", "bytes 0-3/10"),
        ("bytes=2-", b"23", "bytes 2-3/10"),
    ] {
        let r = ranged("/r", range);
        if range == "bytes=2-" {
            // Past the part: the origin's.
            assert_eq!(r.header("x-cache"), Some("MISS"));
            assert_eq!(r.body, b"23456789");
            break;
        }
        assert_eq!((r.status, &r.body[..]), (206, part), "{range}");
        assert_eq!(r.header("x-cache"), Some("HIT"), "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
    }
    assert_eq!(asked(&origin, "/r"), 2);

    // The part stored now is bytes 2-9; a range inside it is a hit.
    let r = ranged("/r", "bytes=-3");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"789"[..])
    );
    // A part that is not the beginning is not completed: a GET is a plain miss.
    let r = get(addr, "/r");
    assert_eq!((r.status, &r.body[..]), (200, BODY));
    assert_eq!(origin.last().header("range"), None);
    assert_eq!(get(addr, "/r").header("x-cache"), Some("HIT"));

    // A beginning is completed with a request for the rest, and the whole is stored.
    assert_eq!(ranged("/c", "bytes=0-3").body, b"0123");
    let r = get(addr, "/c");
    assert_eq!((r.status, &r.body[..]), (200, BODY));
    let asks: Vec<Option<String>> = origin
        .seen()
        .iter()
        .filter(|s| s.target == "/c")
        .map(|s| s.header("range").map(str::to_owned))
        .collect();
    // The rest was asked for, but without a strong validator the two cannot be combined
    // (§3.4): fetched whole.
    assert_eq!(
        asks,
        [
            Some("bytes=0-3".to_owned()),
            Some("bytes=4-".to_owned()),
            None
        ]
    );
    let r = get(addr, "/c");
    assert_eq!((r.header("x-cache"), &r.body[..]), (Some("HIT"), BODY));

    // A 206 whose body is shorter than its Content-Range says is passed on, not stored.
    for _ in 0..2 {
        assert_eq!(ranged("/bad", "bytes=-5").header("x-cache"), Some("MISS"));
    }
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_stored_beginning_and_the_rest_with_the_same_strong_etag_are_combined() {
    const BODY: &[u8] = b"0123456789";
    let origin = Scripted::start(|seen, _| {
        let mut headers = vec![("Cache-Control", "max-age=60"), ("ETag", "\"r1\"")];
        match seen.header("range") {
            Some(range) if seen.header("if-range").is_none_or(|t| t == "\"r1\"") => {
                let (a, b) = byte_range(range, BODY.len());
                let content_range = format!("bytes {a}-{b}/{}", BODY.len());
                headers.push(("Content-Range", &content_range));
                Answer::new(206, &headers, &BODY[a..=b])
            }
            _ => Answer::new(200, &headers, BODY),
        }
    });
    let (name, cache, proxy, addr) = start("o-combine", &origin);
    let r = request(addr, "GET", "/r", &[("Range", "bytes=0-3")]);
    assert_eq!(r.body, b"0123");
    let r = get(addr, "/r");
    assert_eq!((r.status, &r.body[..]), (200, BODY));
    assert_eq!(r.header("content-range"), None);
    let rest = origin.last();
    assert_eq!(
        (rest.header("range"), rest.header("if-range")),
        (Some("bytes=4-"), Some("\"r1\""))
    );
    assert_eq!(origin.count(), 2, "combined, not fetched again");
    let r = get(addr, "/r");
    assert_eq!((r.header("x-cache"), &r.body[..]), (Some("HIT"), BODY));
    assert_eq!(origin.count(), 2);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// The raw head of the answer to `GET target` (up to and without the blank line).
fn raw_head(addr: std::net::SocketAddr, target: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    all.truncate(end + 2);
    all
}

fn has_line(head: &[u8], line: &[u8]) -> bool {
    head.windows(line.len() + 2)
        .any(|w| w[..line.len()] == *line && &w[line.len()..] == b"\r\n")
}

#[test]
fn response_field_values_reach_the_client_as_the_origin_sent_them() {
    // Issue 21: obs-text and UTF-8 in an origin's fields are passed on, stored and served
    // as the bytes received: on a miss, on a fresh hit, and after a 304 updated them.
    let origin = Scripted::start(|seen, _| {
        let cc = if seen.target == "/fresh" {
            "max-age=60"
        } else {
            "no-cache"
        };
        let validating = seen.header("if-none-match").is_some();
        let mut a = Answer::new(
            if validating { 304 } else { 200 },
            &[("ETag", "\"v1\""), ("Cache-Control", cc)],
            if validating { b"" } else { b"body" },
        );
        if validating {
            a.raw_headers.push(b"X-Obs: \xe9t\xe9".to_vec());
        } else {
            a.raw_headers.push(b"X-Obs: caf\xe9".to_vec());
        }
        a.raw_headers.push(b"X-Utf8: caf\xc3\xa9".to_vec());
        a
    });
    let (name, cache, proxy, addr) = start("o-rbytes", &origin);
    for (round, want_cache) in [(1, "MISS"), (2, "HIT")] {
        let head = raw_head(addr, "/fresh");
        let text = String::from_utf8_lossy(&head);
        assert!(has_line(&head, b"X-Obs: caf\xe9"), "round {round}: {text}");
        assert!(
            has_line(&head, b"X-Utf8: caf\xc3\xa9"),
            "round {round}: {text}"
        );
        assert!(
            has_line(&head, format!("X-Cache: {want_cache}").as_bytes()),
            "round {round}: {text}"
        );
    }
    // Stored, then validated at the next request: the 304's new value replaces the old.
    assert!(has_line(&raw_head(addr, "/validated"), b"X-Obs: caf\xe9"));
    let head = raw_head(addr, "/validated");
    let text = String::from_utf8_lossy(&head);
    assert!(has_line(&head, b"X-Obs: \xe9t\xe9"), "{text}");
    assert!(has_line(&head, b"X-Utf8: caf\xc3\xa9"), "{text}");
    assert!(has_line(&head, b"X-Cache: HIT"), "{text}");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// How many lines of `head` are named `name` (any case).
fn lines_named(head: &[u8], name: &str) -> usize {
    head.split(|&b| b == b'\n')
        .filter(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                && line[name.len()] == b':'
        })
        .count()
}

#[test]
fn a_hit_carries_the_stored_fields_once_with_its_own_age() {
    // The origin says Accept-Ranges and Age itself. A miss passes its answer on; a hit
    // says what the cache does (it answers ranges of what it holds, as Varnish does) and
    // computes its age (RFC 9111 §4.2.3, from the Age received): each line goes out once.
    let origin = Scripted::start(|_, _| {
        let mut a = Answer::new(
            200,
            &[("Cache-Control", "max-age=600"), ("Accept-Ranges", "none")],
            b"body",
        );
        a.raw_headers.push(b"Age: 100".to_vec());
        a.raw_headers.push(b"X-Spaced: a  b".to_vec());
        a
    });
    let (name, cache, proxy, addr) = start("o-once", &origin);
    for want in ["MISS", "HIT", "HIT"] {
        let head = raw_head(addr, "/x");
        let text = String::from_utf8_lossy(&head);
        assert!(
            has_line(&head, format!("X-Cache: {want}").as_bytes()),
            "{text}"
        );
        assert_eq!(lines_named(&head, "accept-ranges"), 1, "{text}");
        let ranges = if want == "HIT" { "bytes" } else { "none" };
        assert!(
            has_line(&head, format!("Accept-Ranges: {ranges}").as_bytes()),
            "{text}"
        );
        assert_eq!(lines_named(&head, "age"), 1, "{text}");
        assert!(has_line(&head, b"X-Spaced: a  b"), "{text}");
        if want == "HIT" {
            let age = text
                .lines()
                .find_map(|l| l.strip_prefix("Age: "))
                .and_then(|v| v.trim().parse::<u64>().ok());
            assert!(age.is_some_and(|a| (100..200).contains(&a)), "{text}");
        }
    }
    assert_eq!(origin.count(), 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

/// A 16 MiB hit whose cache stops while its client pauses; the origin's ETag is `"v1"`
/// while the first answer fills the cache and `etag_after` from then on. Returns the
/// instance's name, what the client got, the whole body, the origin and the proxy.
fn hit_cut_by_a_stopped_cache(
    tag: &str,
    etag_after: &'static str,
) -> (String, Vec<u8>, Vec<u8>, Scripted, Proc) {
    const LEN: usize = 16 << 20;
    let body = pattern(LEN, 20);
    let served = body.clone();
    let origin = Scripted::start(move |seen, n| {
        let etag = if n == 1 { "\"v1\"" } else { etag_after };
        let headers = [("ETag", etag), ("Cache-Control", "max-age=3600")];
        let range = seen.header("range").and_then(|r| r.strip_prefix("bytes="));
        match range.and_then(|r| r.split_once('-')) {
            // If-Range: the range only if the version is the one named (RFC 9110 §13.1.5).
            Some((a, b)) if seen.header("if-range") == Some(etag) => {
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                let mut answer = Answer::new(206, &headers, &served[a..=b]);
                let content_range = format!("bytes {a}-{b}/{LEN}");
                answer
                    .headers
                    .push(("Content-Range".to_owned(), content_range));
                answer
            }
            _ => Answer::new(200, &headers, &served),
        }
    });
    let (name, cache, proxy, addr) = start(tag, &origin);
    assert!(
        get(addr, "/big").body == body,
        "the first answer fills the cache"
    );
    eventually("the cache to hold it", || {
        get(addr, "/-/stats")
            .body
            .windows(12)
            .any(|w| w == b"\"objects\": 1")
    });
    let (s, len, first) = start_download(addr, "/big", 1 << 20);
    assert_eq!(len, LEN);
    // Stopped while the response is paused: the rest cannot come from the cache.
    assert!(cache.terminate().success());
    let got = read_rest(s, first, len);
    (name, got, body, origin, proxy)
}

#[test]
fn a_hit_cut_by_a_stopped_cache_is_finished_from_the_origin_when_it_holds_that_version() {
    // Issue 20 in front of an origin: the rest is asked for as a range, with If-Range and
    // the stored strong ETag, so that it can only be the same version's bytes.
    let (name, got, body, origin, proxy) = hit_cut_by_a_stopped_cache("o-resume", "\"v1\"");
    assert!(got == body, "every byte, the rest from the origin");
    proxy.wait_log("sending the rest from secondary storage");
    let asked = origin.last();
    assert_eq!(asked.header("if-range"), Some("\"v1\""));
    assert!(
        asked
            .header("range")
            .is_some_and(|r| r.starts_with("bytes="))
    );
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn a_hit_is_still_cut_when_the_origin_has_another_version_meanwhile() {
    let (name, got, body, _origin, proxy) = hit_cut_by_a_stopped_cache("o-resume2", "\"v2\"");
    assert!(got.len() < body.len(), "cut short");
    assert!(
        got[..] == body[..got.len()],
        "what arrived is a true prefix"
    );
    proxy.wait_log("does not hold the same version");
    stop_and_check_clean(&name, vec![proxy]);
}
