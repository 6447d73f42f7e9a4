//! One live cache per instance name: a second cache (or a second proxy that spawns one) on
//! a live name is refused and names the holder, a killed cache's name is taken over, and a
//! cache's shutdown never touches a queue that is not its own.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::*;
use shmcache::ipc::lock::holder;
use shmcache::ipc::queue::MessageQueue;
use shmcache::ipc::wire::MESSAGE_CAPACITY;
use shmcache::ipc::{lock_name, queue_name};

/// How long a refused start or a SIGTERM may take: generous for a loaded CI machine, yet
/// far below [`PATIENCE`], after which a hang would only show as a harness timeout.
const PROMPT: Duration = Duration::from_secs(3);

const CACHE: &str = env!("CARGO_BIN_EXE_shmcached");
const PROXY: &str = env!("CARGO_BIN_EXE_webproxy");

/// Two files in a fresh directory: one spread over many slots, one small.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    make_files(
        dir,
        [
            ("big.bin".to_owned(), 300_000),
            ("small.txt".to_owned(), 700),
        ],
    )
}

/// Every file comes back byte for byte, from the cache.
fn served_as_hits(addr: SocketAddr, files: &[(String, Vec<u8>)]) -> bool {
    files.iter().all(|(key, bytes)| {
        let r = get(addr, &format!("/{key}"));
        r.status == 200 && r.header("x-cache") == Some("HIT") && r.body == *bytes
    })
}

/// The identity (inode) of the queue now under the name of instance `name`.
fn queue_identity(name: &str) -> u64 {
    MessageQueue::open(&queue_name(name))
        .and_then(|q| q.identity())
        .unwrap()
}

/// Waits for `p` to exit, failing if that takes longer than [`PROMPT`].
fn exits_promptly(p: Proc) -> ExitStatus {
    let what = p.what;
    let started = Instant::now();
    let status = p.wait();
    assert!(
        started.elapsed() < PROMPT,
        "{what} took {:?} to exit",
        started.elapsed()
    );
    status
}

/// SIGTERM, then the exit within [`PROMPT`] with status 0.
fn terminates_promptly(p: Proc) {
    let what = p.what;
    let started = Instant::now();
    let status = p.terminate();
    assert!(status.success(), "{what} exited with {status}");
    assert!(
        started.elapsed() < PROMPT,
        "{what} took {:?} to stop",
        started.elapsed()
    );
}

/// Whether the lock object of instance `name` is in /dev/shm. It is outside the `NAME.`
/// namespace that [`assert_clean`] looks at, so each test checks it too.
fn lock_exists(name: &str) -> bool {
    Path::new(&format!("/dev/shm{}", lock_name(name))).exists()
}

/// Stops `procs` and checks that nothing of instance `name` is left, the lock included.
fn stop_and_check_all_clean(name: &str, procs: Vec<Proc>) {
    stop_and_check_clean(name, procs);
    assert!(!lock_exists(name), "the lock object is left");
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    after_comm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_second_cache_on_a_live_name_is_refused_and_the_first_keeps_serving() {
    let name = instance("second");
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let dir = dir.path().to_str().unwrap();
    let first = Proc::cache(&name, &["-c", dir]);
    let queue = queue_identity(&name);

    let second = Proc::launch("second cache", CACHE, &["--name", &name, "-c", dir]);
    let refusal = second.wait_log("already served");
    assert!(
        refusal.contains(&format!("pid {}", first.pid())) && refusal.contains(&name),
        "the refusal names the holder's pid and the instance: {refusal}"
    );
    assert_eq!(exits_promptly(second).code(), Some(1));
    assert_eq!(
        queue_identity(&name),
        queue,
        "the first cache's queue is untouched"
    );
    assert_eq!(holder(&name), Some(first.pid()));

    let (proxy, addr) = Proc::proxy(&name, &[]);
    assert!(served_as_hits(addr, &files), "the first cache still serves");
    // Its shutdown works: before, the second cache had taken its queue, and the first one's
    // wake-up went there, so it never noticed SIGTERM.
    terminates_promptly(first);
    stop_and_check_all_clean(&name, vec![proxy]);
}

#[test]
fn shutdown_sends_nothing_to_and_leaves_a_queue_that_is_not_ours() {
    let name = instance("notours");
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap()]);
    // Another process's queue under the cache's name (the cache's own is unlinked).
    let (other, replaced) = MessageQueue::create(&queue_name(&name), 10, MESSAGE_CAPACITY).unwrap();
    assert!(replaced);
    terminates_promptly(cache);
    assert_eq!(
        queue_identity(&name),
        other.identity().unwrap(),
        "the cache left a queue that is not its own"
    );
    let mut buf = vec![0; MESSAGE_CAPACITY];
    let err = other.receive_timeout(&mut buf, Duration::ZERO).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::TimedOut,
        "nothing was sent to it"
    );
    // Removing a queue's name is its owner's explicit step: dropping a handle only closes it.
    assert!(other.unlink().unwrap());
    drop(other);
    assert_clean(&name);
    assert!(!lock_exists(&name), "the lock object is left");
}

#[test]
fn a_killed_caches_name_is_taken_over() {
    let name = instance("takeover");
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let dir = dir.path().to_str().unwrap();
    let killed = Proc::cache(&name, &["-c", dir]);
    killed.kill9();
    assert!(lock_exists(&name), "a killed cache leaves its lock object");
    // A proxy starting now removes stale segments, and must not take the lock for one.
    let (proxy, addr) = Proc::proxy(&name, &[]);
    assert!(lock_exists(&name));
    // It connects to the dead cache's queue, as it cannot know better yet.
    proxy.wait_log("connected to the cache");

    let cache = Proc::cache(&name, &["-c", dir]);
    cache.wait_log("replaced a stale queue");
    assert_eq!(
        holder(&name),
        Some(cache.pid()),
        "the lock object is reused"
    );
    // A request sent before the proxy switched queues would wait out its cache timeout.
    proxy.wait_log_count("connected to the cache", 2);
    assert!(served_as_hits(addr, &files), "the new cache serves");
    stop_and_check_all_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_second_spawning_proxy_on_a_live_name_is_refused() {
    let name = instance("spawn2");
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path());
    let dir = dir.path().to_str().unwrap();
    let (first, addr) = Proc::proxy(&name, &["--spawn-cache", dir]);
    let cache = holder(&name).expect("the spawned cache holds the instance once listening");
    assert_eq!(
        parent_of(cache),
        first.pid(),
        "and it is the first proxy's child"
    );

    let second = Proc::launch(
        "second proxy",
        PROXY,
        &[
            "--name",
            &name,
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--spawn-cache",
            dir,
        ],
    );
    let refusal = second.wait_log("so our shmcached exited at start");
    assert!(
        refusal.contains(&format!("pid {cache}")) && refusal.contains(&name),
        "the refusal names the holder's pid and the instance: {refusal}"
    );
    assert_eq!(second.log_count("listening on"), 0, "it never served");
    assert_eq!(exits_promptly(second).code(), Some(1));

    assert_eq!(holder(&name), Some(cache));
    assert!(served_as_hits(addr, &files), "the first pair still serves");
    stop_and_check_all_clean(&name, vec![first]);
}
