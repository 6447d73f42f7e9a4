//! Many clients, few segments, mixed sizes, every body checked, nothing left behind.
//!
//! `soak_short` runs in CI. The long soak is ignored by default; run it with
//! `cargo test --release --test soak -- --ignored` (about 100,000 requests from 100
//! kept-alive clients over 4 segments).

mod common;

use std::sync::Arc;
use std::thread;

use common::*;

fn soak(tag: &str, requests: usize, clients: usize) {
    let name = instance(tag);
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0, 1, 100, 4095, 4096, 65_536, 262_144, 1 << 20, 4 << 20];
    let keys = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("s/{i}.bin"), len));
    let files = make_files(dir.path(), keys);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap(), "-t", "8"]);
    let (proxy, addr) = Proc::proxy(&name, &["-n", "4", "-t", "16", "-k", "2", "-z", "64K"]);
    let files = Arc::new(files);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let files = Arc::clone(&files);
            let share = requests / clients + usize::from(c < requests % clients);
            thread::spawn(move || {
                let mut conn = Connection::open(addr);
                for i in 0..share {
                    let (key, want) = &files[(c * 31 + i * 17) % files.len()];
                    let (status, cache, body) = conn.get(&format!("/{key}"));
                    assert_eq!(
                        (status, cache.as_deref()),
                        (200, Some("HIT")),
                        "client {c}: {key}"
                    );
                    assert!(body == *want, "client {c}, request {i}: {key} differs");
                }
                share
            })
        })
        .collect();
    let done: usize = workers
        .into_iter()
        .map(|w| w.join().expect("a client failed"))
        .sum();
    assert_eq!(done, requests);
    assert_eq!(proxy.log_count(" aborted "), 0, "no response was cut short");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn soak_short() {
    soak("soak", 3000, 20);
}

#[test]
#[ignore = "long: run with --release --ignored"]
fn soak_long() {
    soak("soaklong", 100_000, 100);
}
