//! The live view's page (`src/http/admin/live.html`) on its own, in headless Chromium: a tiny
//! server in the test serves the page at `/-/` and a fixed snapshot at `/-/segments`, and
//! the tests read the DOM the page rendered from it. This tests the page and the browser
//! harness without a proxy; the proxy's own test of `/-/` runs the same page against the
//! real channel.
//!
//! Needs Debian's `chromium`: without it these tests fail (they do not skip), saying so.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::browser;

const PAGE: &str = include_str!("../src/http/admin/live.html");
/// What `live::to_json` writes for its sample snapshot (a unit test there checks that it
/// still does): segments 0 and 2 idle, segment 1 `sending` `/big.bin` through 8 slots.
const SAMPLE: &str = include_str!("live_sample.json");

/// Enough virtual time for the page's first polls; the page draws on the first answer.
const VIRTUAL_TIME: Duration = Duration::from_millis(1500);

/// A loopback HTTP server for one test: fixed answers by path, a thread per connection,
/// and a log of the paths asked for. Stops (and joins) when dropped.
struct Site {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// An answer: status, content type, body.
type Route = (&'static str, u16, &'static str, String);

impl Site {
    fn start(routes: Vec<Route>) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(routes);
        let acceptor = {
            let (asked, stop) = (Arc::clone(&asked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, asked) = (Arc::clone(&routes), Arc::clone(&asked));
                    // Chromium opens spare connections that may never send a request; a
                    // thread each keeps one of them from holding up the others.
                    std::thread::spawn(move || answer(stream, &routes, &asked));
                }
            })
        };
        Site {
            addr,
            asked,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads one request head and answers it, closing the connection after.
fn answer(mut stream: TcpStream, routes: &[Route], asked: &Mutex<Vec<String>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    asked.lock().unwrap().push(path.clone());
    let (status, kind, body) = match routes.iter().find(|(p, ..)| *p == path) {
        Some((_, status, kind, body)) => (*status, *kind, body.as_str()),
        None => (404, "text/plain", "not found\n"),
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// The page at `/-/` and `snapshot` (or an error status) at `/-/segments`.
fn site(segments: (u16, String)) -> Site {
    Site::start(vec![
        ("/-/", 200, "text/html; charset=utf-8", PAGE.to_owned()),
        ("/-/segments", segments.0, "application/json", segments.1),
    ])
}

fn load(site: &Site) -> String {
    browser::dump_dom(&site.url("/-/"), VIRTUAL_TIME).unwrap_or_else(|e| panic!("{e}"))
}

/// The start tag of the element that has `needle` among its attributes, and everything
/// after it up to the next segment row (or the end of the segment list).
fn element<'a>(dom: &'a str, needle: &str) -> (&'a str, &'a str) {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag_end = at + dom[at..].find('>').unwrap() + 1;
    let rest = &dom[tag_end..];
    let end = [rest.find("data-segment=\""), rest.find("</main>")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    (&dom[start..tag_end], &rest[..end])
}

/// A segment row: its start tag and its contents.
fn row(dom: &str, index: u32) -> (&str, &str) {
    element(dom, &format!("data-segment=\"{index}\""))
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// The text of the first element of class `class` in `html` (no nested elements).
fn text_of<'a>(html: &'a str, class: &str) -> &'a str {
    let (_, rest) = element(html, &format!("class=\"{class}\""));
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[test]
fn the_page_draws_each_segment_as_its_ring_of_slots() {
    let site = site((200, SAMPLE.to_owned()));
    let dom = load(&site);

    assert_eq!(count(&dom, "data-segment=\""), 3, "{dom}");
    let (tag, busy) = row(&dom, 1);
    assert_eq!(attr(tag, "data-state"), Some("sending"), "{tag}");
    assert_eq!(text_of(busy, "key"), "/big.bin");
    assert_eq!(count(busy, "class=\"slot\""), 8, "{busy}");
    // ready 3, free 3 of 8: three full, two in hand, three free, in that order.
    let fills: Vec<&str> = busy
        .split("class=\"slot\"")
        .skip(1)
        .map(|cell| attr(cell, "data-fill").unwrap())
        .collect();
    assert_eq!(
        fills,
        [
            "full", "full", "full", "held", "held", "free", "free", "free"
        ]
    );
    assert_eq!(text_of(busy, "text"), "3.0 MiB / 8.0 MiB");
    assert_eq!(text_of(busy, "since"), "1.2s");

    for idle in [0, 2] {
        let (tag, html) = row(&dom, idle);
        assert_eq!(attr(tag, "data-state"), Some("idle"), "{tag}");
        assert_eq!(text_of(html, "key"), "", "{html}");
        assert_eq!(count(html, "class=\"slot\""), 8, "{html}");
        assert_eq!(count(html, "data-fill=\"free\""), 8, "{html}");
    }

    let (tag, _) = element(&dom, "id=\"conn\"");
    assert_eq!(attr(tag, "data-status"), Some("live"), "{tag}");
    let tile = |id: &str| {
        let (_, html) = element(&dom, &format!("id=\"{id}\""));
        text_of(html, "value").to_owned()
    };
    assert_eq!(tile("queue"), "1");
    assert_eq!(tile("hits"), "41");
    assert_eq!(tile("misses"), "3");
    assert_eq!(tile("busy"), "1");
    assert!(dom.contains("pid 4242 · 1/2 busy"), "{dom}");

    // It kept polling (four a second) and asked for nothing but its own two paths.
    let asked = site.asked();
    let polls = asked.iter().filter(|p| *p == "/-/segments").count();
    assert!(polls >= 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|p| ["/-/", "/-/segments", "/favicon.ico"].contains(&p.as_str())),
        "{asked:?}"
    );
}

#[test]
fn the_page_says_when_the_cache_and_the_queue_are_unknown() {
    let snapshot = SAMPLE
        .replace(
            "\"queue\": {\"depth\": 1, \"capacity\": 10}",
            "\"queue\": null",
        )
        .replace(
            &SAMPLE
                [SAMPLE.find("\"cache\": {").unwrap()..SAMPLE.find(",\n  \"counters\"").unwrap()],
            "\"cache\": null",
        );
    assert!(snapshot.contains("\"queue\": null") && snapshot.contains("\"cache\": null"));
    let site = site((200, snapshot));
    let dom = load(&site);

    assert_eq!(count(&dom, "data-segment=\""), 3, "{dom}");
    let (tag, busy) = row(&dom, 1);
    assert_eq!(attr(tag, "data-state"), Some("sending"));
    assert_eq!(count(busy, "class=\"slot\""), 8);
    let (_, queue) = element(&dom, "id=\"queue\"");
    assert!(queue.contains("<small>unknown</small>"), "{queue}");
    let (_, cache) = element(&dom, "id=\"cache\"");
    assert!(cache.contains("not answering"), "{cache}");
    let (tag, _) = element(&dom, "id=\"conn\"");
    assert_eq!(attr(tag, "data-status"), Some("live"), "{tag}");
}

#[test]
fn the_page_shows_a_lost_source_as_disconnected() {
    let site = site((503, "{\"error\": 1}".to_owned()));
    let dom = load(&site);

    let (tag, _) = element(&dom, "id=\"conn\"");
    assert_eq!(attr(tag, "data-status"), Some("disconnected"), "{tag}");
    assert_eq!(attr(tag, "title"), Some("HTTP 503 (retrying)"), "{tag}");
    assert_eq!(count(&dom, "data-segment=\""), 0);
    // It keeps trying.
    let polls = site.asked().iter().filter(|p| *p == "/-/segments").count();
    assert!(polls >= 2, "{:?}", site.asked());
}

/// 64 segments in columns: every one drawn with its 4 slots. Also leaves a picture of
/// it in target/ to judge by eye.
#[test]
fn the_page_holds_64_segments() {
    let segments: Vec<String> = (0..64)
        .map(|i| {
            let busy = i % 5 == 2;
            let state = ["receiving", "sending", "storing", "waiting"][i % 4];
            format!(
                "{{\"index\": {i}, \"name\": \"/demo-seg-{i}\", \"state\": \"{}\", \
                 \"key\": {}, \"generation\": {}, \"bytes\": {}, \"total\": {}, \
                 \"slots\": 4, \"ready\": {}, \"free\": {}, \"since_ms\": {}}}",
                if busy { state } else { "idle" },
                if busy {
                    format!("\"/assets/build/{i}/bundle-{:x}.js\"", i * 7919)
                } else {
                    "null".into()
                },
                100 + i,
                if busy { i * 40_000 } else { 0 },
                if busy { "4000000" } else { "null" },
                if busy { i % 3 } else { 0 },
                if busy { 4 - i % 3 - 1 } else { 4 },
                if busy {
                    format!("{}", i * 37)
                } else {
                    "null".into()
                },
            )
        })
        .collect();
    let snapshot = format!(
        "{{\"queue\": {{\"depth\": 3, \"capacity\": 10}}, \"segments\": [{}], \
         \"cache\": {{\"pid\": 77, \"workers\": []}}, \"counters\": {{\"hits\": 9120, \
         \"misses\": 311, \"requests\": 9431}}}}",
        segments.join(", ")
    );
    let site = site((200, snapshot));
    let dom = load(&site);

    assert_eq!(count(&dom, "data-segment=\""), 64);
    for i in 0..64 {
        let (tag, html) = row(&dom, i);
        let want = if i % 5 == 2 { "busy" } else { "idle" };
        let state = attr(tag, "data-state").unwrap();
        assert_eq!(if state == "idle" { "idle" } else { "busy" }, want, "{tag}");
        assert_eq!(count(html, "class=\"slot\""), 4, "{html}");
    }
    let (tag, _) = element(&dom, "id=\"segments\"");
    assert_eq!(
        attr(tag, "data-many"),
        Some(""),
        "past 16 rows flow in columns"
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/live-view-64.png");
    shoot(&site, &path, (1400, 720));
}

/// The sample, as a picture: `target/live-view-sample.png` (docs/ keeps a copy).
#[test]
fn the_page_screenshot() {
    let site = site((200, SAMPLE.to_owned()));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/live-view-sample.png");
    shoot(&site, &path, (1200, 230));
}

/// Takes a screenshot and checks that it is a PNG of the window's size.
fn shoot(site: &Site, path: &Path, size: (u32, u32)) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    browser::screenshot(&site.url("/-/"), path, size, VIRTUAL_TIME)
        .unwrap_or_else(|e| panic!("{e}"));
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    // IHDR comes first: width and height, big-endian, at bytes 16..24.
    let dimension = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dimension(16), dimension(20)), size, "{}", path.display());
}

/// The page must stand alone: nothing to fetch from anywhere but its own origin.
#[test]
fn the_page_has_no_external_assets() {
    for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!PAGE.contains(needle), "the page contains {needle:?}");
    }
}
