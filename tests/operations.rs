//! Running the programs as an operator runs nginx (issue 20): each signal, file and
//! behaviour of README's "Operations" table, against the real binaries. Every test waits
//! for a condition with a deadline, checks the bytes a client got, and checks what is left
//! in /dev/shm and of the queue after each stop.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use shmcache::ipc::{lock, process};

const BIG: usize = 16 << 20;

/// Whether the instance's lock object is gone (the cache stopped in order).
fn lock_gone(name: &str) -> bool {
    !Path::new(&format!("/dev/shm/{name}-lock")).exists()
}

/// Segments of instance `name` left in /dev/shm.
fn segments(name: &str) -> Vec<String> {
    shm_objects(name)
        .into_iter()
        .filter(|o| o.contains(".seg."))
        .collect()
}

fn pid_in(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until connecting to `addr` is refused: the proxy has stopped accepting.
fn wait_refused(addr: SocketAddr) {
    eventually("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
}

/// A directory holding `big.bin`, for `-c` and `-s`.
fn big_dir(seed: u64) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(BIG, seed);
    write_files(dir.path(), &[("big.bin", &big)]);
    (dir, big)
}

/// A killed cache leaves its queue: a new cache of the instance replaces it, and then
/// both stop clean.
fn stop_after_killed_cache(name: &str, proxy: Proc) {
    let cache = Proc::cache(name, &[]);
    cache.wait_log("replaced a stale queue");
    stop_and_check_clean(name, vec![proxy, cache]);
}

#[test]
fn quit_lets_a_download_finish_then_the_proxy_exits_clean() {
    let name = instance("quitproxy");
    let (dir, big) = big_dir(1);
    let pid_file = dir.path().join("webproxy.pid");
    let d = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", d]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", d, "--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(pid_in(&pid_file), proxy.pid());

    let (s, len, first) = start_download(addr, "/big.bin", 1 << 20);
    assert_eq!(len, BIG);
    proxy.signal("QUIT");
    proxy.wait_log("SIGQUIT: graceful stop");
    wait_refused(addr);
    // The transfer in flight goes on to its last byte.
    let got = read_rest(s, first, len);
    assert!(got == big, "every byte, and the right ones");
    let line = proxy.wait_log("\"GET /big.bin HTTP/1.1\"");
    assert!(line.contains(&format!(" 200 {BIG} ")), "{line}");
    let what = proxy.what;
    assert!(proxy.wait().success(), "{what} exits 0");
    assert!(!pid_file.exists(), "the pid file is removed");
    assert_eq!(segments(&name), Vec::<String>::new(), "no segment left");
    stop_and_check_clean(&name, vec![cache]);
}

#[test]
fn a_fast_stop_cuts_a_stalled_download_and_logs_it_aborted() {
    let name = instance("termproxy");
    let (dir, big) = big_dir(2);
    let d = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", d]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", d, "--cache-timeout", "1"]);
    let (s, len, first) = start_download(addr, "/big.bin", 1 << 20);
    // The client reads nothing more: the proxy gives the transfer --cache-timeout.
    proxy.signal("TERM");
    let line = proxy.wait_log("\"GET /big.bin HTTP/1.1\" 200 aborted");
    assert!(line.contains("WARN"), "a cut response is a warning: {line}");
    let what = proxy.what;
    assert!(proxy.wait().success(), "{what} exits 0");
    let got = read_rest(s, first, len);
    assert!(got.len() < len, "cut short");
    assert!(got[..] == big[..got.len()], "what arrived is a true prefix");
    assert_eq!(segments(&name), Vec::<String>::new());
    stop_and_check_clean(&name, vec![cache]);
}

#[test]
fn quit_lets_the_cache_finish_its_transfer_then_it_is_gone() {
    let name = instance("quitcache");
    let (dir, big) = big_dir(3);
    let pid_file = dir.path().join("shmcached.pid");
    let d = dir.path().to_str().unwrap();
    // Slowed down so that the transfer is still running when QUIT comes; no -s, so every
    // byte the client gets comes through the cache.
    let cache = Proc::cache(
        &name,
        &[
            "-c",
            d,
            "--chunk-delay",
            "500",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    assert_eq!(pid_in(&pid_file), cache.pid());
    let (proxy, addr) = Proc::proxy(&name, &["-z", "64K"]);
    let (s, len, first) = start_download(addr, "/big.bin", 64 << 10);
    cache.signal("QUIT");
    cache.wait_log("SIGQUIT: graceful stop");
    let got = read_rest(s, first, len);
    assert!(got == big, "every byte, from the cache that is stopping");
    let what = cache.what;
    assert!(cache.wait().success(), "{what} exits 0");
    assert!(!pid_file.exists(), "the pid file is removed");
    assert!(lock_gone(&name), "the instance lock is removed");
    // The proxy serves on without it: no -s, so 503.
    eventually("the proxy to notice", || {
        get(addr, "/big.bin").status == 503
    });
    proxy.wait_log("the cache stopped");
    assert_eq!(
        proxy.log_count("lost the cache"),
        0,
        "an orderly stop is no warning"
    );
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn a_hit_cut_by_a_stopped_cache_is_finished_from_the_same_file() {
    let name = instance("resume");
    let (dir, big) = big_dir(4);
    let d = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", d]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", d]);
    // The client pauses: the response parks what memory allows and will ask the cache
    // for the rest, which by then is dead.
    let (s, len, first) = start_download(addr, "/big.bin", 1 << 20);
    // Stopped as an operator would, while the response is paused.
    assert!(cache.terminate().success());
    let got = read_rest(s, first, len);
    assert!(got == big, "every byte, the rest from -s");
    assert!(stats(addr)["proxy.hits_resumed"] >= 1);
    proxy.wait_log("sending the rest from secondary storage");
    let line = proxy.wait_log("\"GET /big.bin HTTP/1.1\"");
    assert!(line.contains(&format!(" 200 {BIG} ")), "{line}");
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn a_hit_is_finished_from_the_same_file_when_the_cache_dies_mid_segment() {
    let name = instance("resumeseg");
    let (dir, big) = big_dir(5);
    let d = dir.path().to_str().unwrap();
    // Slow chunks: the connection waits on the cache inside the segment, not on its client.
    let cache = Proc::cache(&name, &["-c", d, "--chunk-delay", "1000"]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", d, "-z", "64K"]);
    let (s, len, first) = start_download(addr, "/big.bin", 64 << 10);
    let reader = std::thread::spawn(move || read_rest(s, first, len));
    eventually("the transfer to be under way", || {
        get(addr, "/-/segments")
            .body
            .windows(9)
            .any(|w| w == b"\"sending\"")
    });
    cache.kill9();
    let got = reader.join().unwrap();
    assert!(got == big, "every byte, the rest from -s");
    assert!(stats(addr)["proxy.hits_resumed"] >= 1);
    stop_after_killed_cache(&name, proxy);
}

#[test]
fn a_hit_is_still_cut_when_the_file_changed_meanwhile() {
    let name = instance("resumechanged");
    let (dir, big) = big_dir(6);
    let d = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", d]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", d]);
    let (s, len, first) = start_download(addr, "/big.bin", 1 << 20);
    // Another version under the same name: the rest must not be spliced from it.
    write_files(dir.path(), &[("big.bin", &pattern(BIG, 66))]);
    cache.kill9();
    let got = read_rest(s, first, len);
    assert!(got.len() < len, "cut short");
    assert!(got[..] == big[..got.len()], "what arrived is a true prefix");
    proxy.wait_log("does not hold the same version");
    stop_after_killed_cache(&name, proxy);
}

#[test]
fn hup_reloads_the_spawned_cache_and_reopens_the_access_log() {
    let name = instance("hup");
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    write_files(files.path(), &[("a.txt", b"first"), ("b.txt", b"second")]);
    let log = dir.path().join("access.log");
    let f = files.path().to_str().unwrap();
    let (proxy, addr) = Proc::proxy(
        &name,
        &[
            "--spawn-cache",
            f,
            "-s",
            f,
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let child = lock::holder(&name).expect("the spawned cache holds the instance");
    assert_eq!(get(addr, "/a.txt").body, b"first");
    eventually("the line in the access log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"GET /a.txt HTTP/1.1\" 200 5 "))
    });
    assert_eq!(
        proxy.log_count("\"GET /a.txt"),
        0,
        "access lines go to the file only"
    );
    // logrotate moves the file, then signals.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    write_files(files.path(), &[("a.txt", b"FIRST")]);
    proxy.signal("HUP");
    proxy.wait_log("passed SIGHUP on to shmcached");
    proxy.wait_log("] reloaded 2 files");
    proxy.wait_log("reopened the access log");
    let r = get(addr, "/a.txt");
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"FIRST"[..]),
        "reloaded, still serving"
    );
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let st = stats(addr);
    assert_eq!(st["cache.reloaded"], 2, "the reload counts in reloaded");
    assert_eq!(st["cache.stores"], 0, "not in stores");
    eventually("the new line in the new file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"GET /a.txt HTTP/1.1\" 200 5 "))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.matches("/a.txt").count(), 1, "{old}");
    stop_and_check_clean(&name, vec![proxy]);
    assert!(
        !process::process_alive(child),
        "the spawned cache stopped too"
    );
    assert!(lock_gone(&name));
}

#[test]
fn usr1_reopens_the_access_log_and_admin_pages_stay_out_of_it() {
    let name = instance("usr1");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("a.txt", b"hello")]);
    let log = dir.path().join("access.log");
    let d = dir.path().to_str().unwrap();
    let cache = Proc::cache(&name, &["-c", d]);
    let args = [
        "--name",
        &name,
        "--port",
        "0",
        "-s",
        d,
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "common",
    ];
    let proxy = Proc::start_logged("proxy", env!("CARGO_BIN_EXE_webproxy"), &args, "info");
    let line = proxy.wait_log("listening on http://");
    assert!(
        line.contains("WARN"),
        "the address is logged at warn: {line}"
    );
    let addr: SocketAddr = listening_addr(&line);
    let mut c = Connection::open(addr);
    assert_eq!(c.get("/-/stats").0, 200);
    let ua = "curl/8.0 \"quoted\"";
    let r = request(
        addr,
        "GET",
        "/a.txt",
        &[("User-Agent", ua), ("Referer", "http://x/")],
    );
    assert_eq!(r.body, b"hello");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the line", || text().contains("/a.txt"));
    assert!(
        !text().contains("/-/stats"),
        "admin pages are logged at debug only"
    );
    assert!(!text().contains("curl/8.0"), "common has no user agent");
    std::fs::rename(&log, dir.path().join("old.log")).unwrap();
    proxy.signal("USR1");
    proxy.wait_log("reopened the access log");
    get(addr, "/a.txt");
    eventually("the line in the reopened file", || {
        text().contains("/a.txt")
    });
    // USR1 to the cache: nothing to reopen, and it goes on serving.
    cache.signal("USR1");
    cache.wait_log("no log file to reopen");
    assert_eq!(get(addr, "/a.txt").header("x-cache"), Some("HIT"));
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn the_combined_format_carries_referer_and_user_agent() {
    let name = instance("combined");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("a.txt", b"hello")]);
    let log = dir.path().join("access.log");
    let d = dir.path().to_str().unwrap();
    let (proxy, addr) = Proc::proxy(&name, &["-s", d, "--access-log", log.to_str().unwrap()]);
    request(
        addr,
        "GET",
        "/a.txt",
        &[("User-Agent", "ua \"1\""), ("Referer", "http://x/")],
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the line", || text().contains("/a.txt"));
    let line = text();
    assert!(
        line.contains("\"GET /a.txt HTTP/1.1\" 200 5 \"http://x/\" \"ua \\x221\\x22\" "),
        "{line}"
    );
    assert!(line.trim_end().ends_with(" secondary"), "{line}");
    stop_and_check_clean(&name, vec![proxy]);
}

#[test]
fn a_spawned_cache_ends_with_a_killed_proxy() {
    let name = instance("pdeath");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("a.txt", b"hello")]);
    let d = dir.path().to_str().unwrap();
    let (proxy, addr) = Proc::proxy(&name, &["--spawn-cache", d]);
    let child = lock::holder(&name).expect("the spawned cache holds the instance");
    assert_eq!(get(addr, "/a.txt").header("x-cache"), Some("HIT"));
    proxy.kill9();
    eventually("the cache to stop with its proxy", || {
        !process::process_alive(child) && lock_gone(&name)
    });
    // It stopped in order (SIGTERM): its queue is gone. The killed proxy's segments are
    // swept by the next proxy of the instance.
    let (next, _) = Proc::proxy(&name, &[]);
    next.wait_log("left by a proxy that is gone");
    stop_and_check_clean(&name, vec![next]);
}

#[test]
fn an_empty_cache_can_be_spawned_for_an_origin() {
    let name = instance("spawnempty");
    let origin = Origin::start(Duration::ZERO);
    let mut file = OriginFile::new(b"from the origin".to_vec());
    file.cache_control = Some("max-age=60".into());
    origin.put("/o.txt", file);
    let (proxy, addr) = Proc::proxy(&name, &["--spawn-cache", "-s", &origin.url()]);
    assert_eq!(get(addr, "/o.txt").header("x-cache"), Some("MISS"));
    eventually("the fill to land", || {
        get(addr, "/o.txt").header("x-cache") == Some("HIT")
    });
    assert_eq!(origin.bodies("/o.txt"), 1);
    stop_and_check_clean(&name, vec![proxy]);
    assert!(lock_gone(&name));
}

#[test]
fn a_missing_cache_is_a_warning_naming_the_instance() {
    let name = instance("nocache");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (proxy, addr) = Proc::proxy(&name, &["-s", d]);
    let line = proxy.wait_log("no cache answers on instance");
    assert!(line.contains("WARN") && line.contains(&name), "{line}");
    assert!(
        line.contains(&format!("serving every request from {d}")),
        "{line}"
    );
    let cache = Proc::cache(&name, &[]);
    proxy.wait_log("connected to the cache");
    assert_eq!(get(addr, "/nothing").status, 404);
    let (bare, _) = Proc::proxy(&instance("nocache503"), &[]);
    let line = bare.wait_log("no cache answers on instance");
    assert!(line.contains("answering 503 to every request"), "{line}");
    stop_and_check_clean(&instance("nocache503"), vec![bare]);
    stop_and_check_clean(&name, vec![cache, proxy]);
}

#[test]
fn a_refused_second_cache_leaves_the_first_ones_pid_file() {
    let name = instance("pidsecond");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("c.pid");
    let p = pid_file.to_str().unwrap();
    let first = Proc::cache(&name, &["--pid-file", p]);
    let second = Proc::launch(
        "second",
        env!("CARGO_BIN_EXE_shmcached"),
        &["--name", &name, "--pid-file", p],
    );
    let status = second.wait();
    assert_eq!(status.code(), Some(1));
    assert_eq!(pid_in(&pid_file), first.pid(), "still the first cache's");
    stop_and_check_clean(&name, vec![first]);
    assert!(!pid_file.exists());
}

#[test]
fn bad_operations_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_webproxy"))
        .args(["--log-format", "fancy"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag prints usage and exits 2"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("--help"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_shmcached"))
        .args(["--drain-timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let name = instance("badlog");
    let out = Command::new(env!("CARGO_BIN_EXE_webproxy"))
        .args([
            "--name",
            &name,
            "--port",
            "0",
            "--access-log",
            "/nonexistent-dir/a.log",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/a.log"), "{err}");
    assert_clean(&name);
}

#[test]
fn a_zombie_proxys_segments_are_swept() {
    let name = instance("zombie");
    // Started directly, not through `Proc`, so that it can be killed and left unreaped.
    let mut zombie = Command::new(env!("CARGO_BIN_EXE_webproxy"))
        .args(["--name", &name, "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = zombie.id();
    let prefix = format!("{name}.seg.{pid}.");
    eventually("its segments", || {
        shm_objects(&name).iter().any(|o| o.starts_with(&prefix))
    });
    process::signal(pid, libc::SIGKILL).unwrap();
    eventually("a zombie", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
    });
    let (next, _) = Proc::proxy(&name, &[]);
    next.wait_log(&format!("removed /{prefix}"));
    zombie.wait().unwrap();
    stop_and_check_clean(&name, vec![next]);
}

#[test]
fn a_proxy_stops_while_its_client_still_sends() {
    // A graceful stop does not wait for a request still arriving: the connection is
    // closed, and the proxy exits within its drain.
    let name = instance("quitslow");
    let (proxy, addr) = Proc::proxy(&name, &["--drain-timeout", "2"]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHo").unwrap();
    proxy.signal("QUIT");
    let what = proxy.what;
    assert!(proxy.wait().success(), "{what} exits 0");
    assert_clean(&name);
}
