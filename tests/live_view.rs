//! The live view of the channel against the real binaries: `/-/segments` (JSON),
//! `/-/segments.txt` and the page at `/-/` in headless Chromium, each while a transfer runs,
//! and who may see them.
//!
//! A slow client holds no segment (it is parked in memory: see the README's failure
//! table), so a transfer is made to last by slowing the cache instead: `shmcached
//! --chunk-delay` sleeps before each chunk, the "slow motion" the page is meant for.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SEGMENTS: usize = 4;
const SLOTS: usize = 4;

/// A cache that sends `/big.bin` (1 MiB) one chunk every `chunk_delay`, and a proxy in
/// front of it with 4 segments of 4 slots of about 16 KiB: about 64 chunks, so a GET lasts
/// 64 times the delay.
struct Slow {
    name: String,
    cache: Proc,
    proxy: Proc,
    addr: SocketAddr,
    big: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Slow {
    fn start(tag: &str, chunk_delay: Duration, proxy_args: &[&str]) -> Slow {
        let name = instance(tag);
        let dir = tempfile::tempdir().unwrap();
        let big = pattern(1 << 20, 31);
        write_files(dir.path(), &[("big.bin", &big), ("small.txt", b"small")]);
        let micros = chunk_delay.as_micros().to_string();
        let cache = Proc::cache(
            &name,
            &["-c", dir.path().to_str().unwrap(), "--chunk-delay", &micros],
        );
        let mut args = vec!["-n", "4", "-z", "64K", "-k", "4"];
        args.extend_from_slice(proxy_args);
        let (proxy, addr) = Proc::proxy(&name, &args);
        Slow {
            name,
            cache,
            proxy,
            addr,
            big,
            _dir: dir,
        }
    }

    /// Starts a GET of `/big.bin` on its own thread; it returns the body.
    fn download(&self) -> thread::JoinHandle<Vec<u8>> {
        let addr = self.addr;
        thread::spawn(move || get(addr, "/big.bin").body)
    }

    fn stop(self) {
        stop_and_check_clean(&self.name, vec![self.proxy, self.cache]);
    }
}

/// One segment of the JSON, as the fields the tests look at.
#[derive(Debug, Clone)]
struct Seg {
    state: String,
    key: Option<String>,
    bytes: u64,
    slots: u64,
    ready: u64,
    free: u64,
}

/// The value of `"field": ` on one line of `/-/segments` (one segment per line).
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line.find(&format!("\"{name}\": ")).expect(name) + name.len() + 4;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap()]
    } else {
        &rest[..rest.find([',', '}']).unwrap()]
    }
}

fn segments(addr: SocketAddr) -> Vec<Seg> {
    let r = get(addr, "/-/segments");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = String::from_utf8(r.body).unwrap();
    let number = |line: &str, name: &str| field(line, name).parse::<u64>().unwrap();
    text.lines()
        .filter(|l| l.trim_start().starts_with("{\"index\""))
        .map(|line| Seg {
            state: field(line, "state").to_owned(),
            key: (!line.contains("\"key\": null")).then(|| field(line, "key").to_owned()),
            bytes: number(line, "bytes"),
            slots: number(line, "slots"),
            ready: number(line, "ready"),
            free: number(line, "free"),
        })
        .collect()
}

/// Waits until a segment moves `/big.bin` and returns it with the others.
fn busy_with_big(addr: SocketAddr) -> (Seg, Vec<Seg>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = segments(addr);
        assert_eq!(all.len(), SEGMENTS);
        let (busy, rest): (Vec<Seg>, Vec<Seg>) = all
            .into_iter()
            .partition(|s| s.key.as_deref() == Some("/big.bin"));
        if let [seg] = busy.as_slice()
            && ["sending", "receiving"].contains(&seg.state.as_str())
            && seg.bytes > 0
        {
            return (seg.clone(), rest);
        }
        assert!(Instant::now() < deadline, "no segment moving /big.bin");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_transfer_shows_in_the_live_view_and_the_rest_are_idle() {
    let s = Slow::start("live", Duration::from_millis(20), &[]);
    let download = s.download();
    let (first, rest) = busy_with_big(s.addr);
    assert_eq!(first.slots, SLOTS as u64);
    assert!(first.ready + first.free <= SLOTS as u64, "{first:?}");
    // Another request's transfer may come and go meanwhile; none is running now.
    for other in &rest {
        assert_eq!(
            (other.state.as_str(), &other.key),
            ("idle", &None),
            "{rest:?}"
        );
        assert_eq!((other.ready, other.free), (0, SLOTS as u64), "at rest");
    }
    eventually("the byte count to grow", || {
        let (now, _) = busy_with_big(s.addr);
        now.bytes > first.bytes
    });

    // The text view: a row per segment, the busy one with its key.
    let text = String::from_utf8(get(s.addr, "/-/segments.txt").body).unwrap();
    assert!(text.contains("/big.bin"), "{text}");
    let rows = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|f| f.parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(rows, SEGMENTS, "{text}");

    assert!(download.join().unwrap() == s.big, "the body arrives whole");
    eventually("every segment idle again", || {
        segments(s.addr)
            .iter()
            .all(|seg| seg.state == "idle" && seg.key.is_none())
    });
    // The cache answers STATS with its pid and its workers.
    let json = String::from_utf8(get(s.addr, "/-/segments").body).unwrap();
    assert!(
        json.contains(&format!("\"pid\": {}", s.cache.pid())),
        "{json}"
    );
    s.stop();
}

fn status_from(addr: SocketAddr, from: &str, path: &str) -> u16 {
    curl_status_from(from, "GET", &format!("http://{addr}{path}"))
}

#[test]
fn the_admin_pages_are_for_loopback_and_admin_allow_only() {
    let s = Slow::start("liveacl", Duration::ZERO, &["--admin-allow", "127.0.0.3"]);
    let pages = [
        "/-/",
        "/-/segments",
        "/-/segments.txt",
        "/-/stats",
        "/-/metrics",
    ];
    for path in pages {
        assert_eq!(status_from(s.addr, "127.0.0.1", path), 200, "{path}");
        assert_eq!(status_from(s.addr, "127.0.0.3", path), 200, "{path}");
        assert_eq!(status_from(s.addr, "127.0.0.2", path), 403, "{path}");
    }
    // Objects are for everyone.
    assert_eq!(status_from(s.addr, "127.0.0.2", "/small.txt"), 200);
    let page = get(s.addr, "/-/");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8(page.body).unwrap().contains("<html"));
    s.stop();
}

#[test]
fn the_page_draws_the_busy_segment_in_chromium() {
    // Long enough (about 10 s) for a browser to start on a loaded machine.
    let s = Slow::start("livepage", Duration::from_millis(150), &[]);
    let download = s.download();
    busy_with_big(s.addr);
    let url = format!("http://{}/-/", s.addr);
    let dom = common::browser::dump_dom(&url, Duration::from_millis(800)).expect("chromium");
    let rows: Vec<&str> = dom.split("data-segment=\"").skip(1).collect();
    assert_eq!(rows.len(), SEGMENTS, "a row per segment: {dom}");
    for row in &rows {
        // A row ends where the next begins; the last one at the end of the list.
        let cells = row.matches("class=\"slot\"").count();
        assert_eq!(cells, SLOTS, "a cell per slot: {row}");
    }
    let busy: Vec<&&str> = rows.iter().filter(|r| r.contains("/big.bin")).collect();
    assert_eq!(busy.len(), 1, "the busy segment's key is shown: {dom}");
    assert!(
        busy[0].contains("data-state=\"sending\"") || busy[0].contains("data-state=\"receiving\""),
        "{}",
        busy[0]
    );
    // The picture in the README.
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view.png");
    common::browser::screenshot(&url, &png, (1200, 420), Duration::from_millis(800))
        .expect("a screenshot");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    assert!(download.join().unwrap() == s.big);
    s.stop();
}
