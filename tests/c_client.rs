//! The protocol from C: `examples/c/shmcache.h` states the spec's numbers, and
//! `examples/c/shmget.c` speaks the protocol to the real shmcached. Built here with `cc`,
//! as the README says.
//!
//! - The header's sizes, offsets and constants, and its GET encoder and head decoder, are
//!   compared with the Rust side's, so the two cannot drift apart.
//! - shmget fetches bodies of every size that matters to the ring (empty, one byte, a slot
//!   less one, a slot and one, several turns of the ring, 3 MiB), alone and eight at once,
//!   each compared by SHA-256; a missing key exits 1, no cache exits 2, SIGINT exits 2; and
//!   nothing is left in /dev/shm.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use common::{Proc, eventually, instance, make_files, shm_objects, stop_and_check_clean};
use shmcache::ipc::segment::{
    HEADER_SIZE, MIN_SLOT_CAPACITY, SEGMENT_MAGIC, SEGMENT_VERSION, data_offset, layout,
    min_segment_size, slot_capacity,
};
use shmcache::ipc::server::QUEUE_DEPTH;
use shmcache::ipc::wire::{
    self, FLAG_ALLOW_STALE, FLAG_HEAD_ONLY, HEAD_CAPACITY, HEAD_PREFIX_LEN, MAX_STATS_LEN,
    MESSAGE_CAPACITY, Message, WIRE_MAGIC, WIRE_VERSION, kind,
};
use shmcache::ipc::{
    Call, Conditions, ETAG_CAPACITY, Etag, FileVersion, Head, Identity, Lifetime, MAX_HEADER_BLOCK,
    MAX_KEY_LEN, MAX_TAGS, Meta, Op, Outcome, Stream,
};

/// The segment shmget makes in these tests: 8 KiB of 4 slots, so that a few KiB already
/// go round the ring.
const SEGMENT_SIZE: usize = 8192;
const SLOTS: usize = 4;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `source` (with `examples/c` on the include path) into `out`, as the README
/// tells a reader to; panics with the compiler's words if it fails.
fn cc(source: &Path, out: &Path) {
    let output = Command::new("cc")
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg(format!("-I{}", root().join("examples/c").display()))
        .arg(source)
        .arg("-lrt")
        .arg("-o")
        .arg(out)
        .output()
        .expect("running cc (a C compiler is needed: apt-get install gcc)");
    assert!(
        output.status.success(),
        "cc {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// shmget, built once for this test binary.
fn shmget() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shmget");
        cc(&root().join("examples/c/shmget.c"), &out);
        out
    })
}

/// Runs shmget for `key` against instance `name`, with this test's segment shape.
fn fetch(name: &str, key: &str) -> Output {
    shmget_command(name, key).output().unwrap()
}

fn shmget_command(name: &str, key: &str) -> Command {
    let mut command = Command::new(shmget());
    command.args(["--name", name, "--timeout", "10"]);
    command.args(["--segment-size", &SEGMENT_SIZE.to_string()]);
    command.args(["--slots", &SLOTS.to_string(), key]);
    command
}

/// The segments of instance `name` in /dev/shm (its lock object is not one).
fn segments(name: &str) -> Vec<String> {
    shm_objects(name)
        .into_iter()
        .filter(|o| o.contains(".seg."))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The C program that prints what the header says, one `name value` per line: its
/// constants and offsets, its slot arithmetic, a GET it encodes, and the fields it decodes
/// from each head given (in hex) on its command line.
const LAYOUT_C: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include "shmcache.h"

#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))

int main(int argc, char **argv)
{
    P("wire_magic", SHMC_WIRE_MAGIC);
    P("wire_version", SHMC_WIRE_VERSION);
    P("message_capacity", SHMC_MESSAGE_CAPACITY);
    P("queue_depth", SHMC_QUEUE_DEPTH);
    P("max_key_len", SHMC_MAX_KEY_LEN);
    P("max_tags", SHMC_MAX_TAGS);
    P("op_get", SHMC_OP_GET);
    P("op_store", SHMC_OP_STORE);
    P("op_renew", SHMC_OP_RENEW);
    P("op_purge", SHMC_OP_PURGE);
    P("op_stats", SHMC_OP_STATS);
    P("flag_allow_stale", SHMC_FLAG_ALLOW_STALE);
    P("flag_head_only", SHMC_FLAG_HEAD_ONLY);
    P("head_capacity", SHMC_HEAD_CAPACITY);
    P("max_header_block", SHMC_MAX_HEADER_BLOCK);
    P("etag_capacity", SHMC_ETAG_CAPACITY);
    P("max_stats_len", SHMC_MAX_STATS_LEN);
    P("kind_found", SHMC_HEAD_FOUND);
    P("kind_expired", SHMC_HEAD_EXPIRED);
    P("kind_missing", SHMC_HEAD_MISSING);
    P("kind_purged", SHMC_HEAD_PURGED);
    P("kind_stats", SHMC_HEAD_STATS);
    P("kind_failed", SHMC_HEAD_FAILED);
    P("kind_store", SHMC_HEAD_STORE);
    P("head_prefix_len", SHMC_HEAD_PREFIX_LEN);
    P("segment_magic", SHMC_SEGMENT_MAGIC);
    P("segment_version", SHMC_SEGMENT_VERSION);
    P("min_slot_capacity", SHMC_MIN_SLOT_CAPACITY);
    P("off_magic", offsetof(struct shmc_segment_header, magic));
    P("off_version", offsetof(struct shmc_segment_header, version));
    P("off_slots", offsetof(struct shmc_segment_header, slots));
    P("off_cancelled", offsetof(struct shmc_segment_header, cancelled));
    P("off_slot_capacity", offsetof(struct shmc_segment_header, slot_capacity));
    P("off_generation", offsetof(struct shmc_segment_header, generation));
    P("off_ready", offsetof(struct shmc_segment_header, ready));
    P("off_free", offsetof(struct shmc_segment_header, free_slots));
    P("off_head", offsetof(struct shmc_segment_header, head));
    P("sem_size", sizeof(sem_t));
    P("header_size", sizeof(struct shmc_segment_header));
    static unsigned char segment[4096];
    P("slot_lens", (size_t)((unsigned char *)shmc_slot_len(segment, 0) - segment));
    P("data_offset_1", shmc_data_offset(1));
    P("data_offset_4", shmc_data_offset(4));
    P("data_offset_9", shmc_data_offset(9));
    P("slot_capacity_8192_4", shmc_slot_capacity(8192, 4));
    P("slot_capacity_262144_4", shmc_slot_capacity(262144, 4));
    P("min_segment_size_1", shmc_min_segment_size(1));
    P("min_segment_size_4", shmc_min_segment_size(4));
    unsigned char msg[SHMC_MESSAGE_CAPACITY];
    size_t len = shmc_encode_get(msg, 7, "/t.seg.1.0", "/dir/k.txt", SHMC_FLAG_ALLOW_STALE);
    printf("get ");
    for (size_t i = 0; i < len; i++)
        printf("%02x", msg[i]);
    printf("\n");
    for (int a = 1; a < argc; a++) {
        unsigned char area[SHMC_HEAD_CAPACITY] = {0};
        for (size_t i = 0; argv[a][2 * i] && i < sizeof area; i++) {
            char byte[3] = {argv[a][2 * i], argv[a][2 * i + 1], 0};
            area[i] = (unsigned char)strtoul(byte, NULL, 16);
        }
        struct shmc_head h;
        const char *why;
        if (shmc_decode_head(area, &h, &why) < 0) {
            printf("head%d refused %s\n", a, why);
            continue;
        }
        printf("head%d %u %llu %u %u %llu %u %llu %d %llu %s %llu %u %llu %u %llu %u %llu %llu %d %llu %u\n",
               a, h.kind, (unsigned long long)h.generation, h.pid, h.header_len,
               (unsigned long long)h.body_len, h.status, (unsigned long long)h.total_len,
               h.has_modified, (unsigned long long)h.modified, h.etag_len ? h.etag : "-",
               (unsigned long long)h.stored_at, h.lifetime,
               (unsigned long long)h.lifetime_secs, h.identity,
               (unsigned long long)h.identity_value, h.outcome,
               (unsigned long long)h.range_start, (unsigned long long)h.range_len,
               h.has_accept, (unsigned long long)h.accept_len, h.existed);
    }
    return 0;
}
"#;

#[test]
fn the_c_header_states_what_the_rust_side_does() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout.c");
    std::fs::write(&source, LAYOUT_C).unwrap();
    let exe = dir.path().join("layout");
    cc(&source, &exe);

    let meta = Meta {
        status: 206,
        total_len: 1000,
        modified: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        etag: Etag::new("\"5f-3e8\""),
        stored_at: 1_700_000_100,
        lifetime: Lifetime::from_secs(60),
        identity: Identity::File(FileVersion(0xdead_beef)),
    };
    let heads = [
        wire::encode_head(
            &Head::Found {
                meta: meta.clone(),
                outcome: Outcome::Partial { start: 10, len: 20 },
            },
            Stream {
                header_len: 40,
                body_len: 20,
            },
            77,
        ),
        wire::encode_head(
            &Head::Missing {
                accept_len: Some(4096),
            },
            Stream::default(),
            78,
        ),
        wire::encode_head(
            &Head::Expired {
                meta: Meta {
                    modified: None,
                    etag: None,
                    lifetime: Lifetime::MustValidate,
                    identity: Identity::Unique(5),
                    ..meta
                },
                accept_len: None,
            },
            Stream {
                header_len: 3,
                body_len: 0,
            },
            79,
        ),
        wire::encode_head(&Head::Purged { existed: true }, Stream::default(), 80),
        // A body after a Missing head: the C decoder must refuse it as the Rust one does.
        wire::encode_head(
            &Head::Missing { accept_len: None },
            Stream {
                header_len: 0,
                body_len: 1,
            },
            81,
        ),
    ];
    let output = Command::new(&exe)
        .args(heads.iter().map(|h| hex(h)))
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let said = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("the C program said nothing of {name}:\n{text}"))
            .to_owned()
    };

    let numbers: Vec<(&str, u64)> = vec![
        ("wire_magic", WIRE_MAGIC.into()),
        ("wire_version", WIRE_VERSION.into()),
        ("message_capacity", MESSAGE_CAPACITY as u64),
        ("queue_depth", QUEUE_DEPTH as u64),
        ("max_key_len", MAX_KEY_LEN as u64),
        ("max_tags", MAX_TAGS as u64),
        ("op_get", Op::Get as u64),
        ("op_store", Op::Store as u64),
        ("op_renew", Op::Renew as u64),
        ("op_purge", Op::Purge as u64),
        ("op_stats", Op::Stats as u64),
        ("flag_allow_stale", FLAG_ALLOW_STALE.into()),
        ("flag_head_only", FLAG_HEAD_ONLY.into()),
        ("head_capacity", HEAD_CAPACITY as u64),
        ("max_header_block", MAX_HEADER_BLOCK.into()),
        ("etag_capacity", ETAG_CAPACITY as u64),
        ("max_stats_len", MAX_STATS_LEN),
        ("kind_found", kind::FOUND.into()),
        ("kind_expired", kind::EXPIRED.into()),
        ("kind_missing", kind::MISSING.into()),
        ("kind_purged", kind::PURGED.into()),
        ("kind_stats", kind::STATS.into()),
        ("kind_failed", kind::FAILED.into()),
        ("kind_store", kind::STORE.into()),
        ("head_prefix_len", HEAD_PREFIX_LEN as u64),
        ("segment_magic", SEGMENT_MAGIC.into()),
        ("segment_version", SEGMENT_VERSION.into()),
        ("min_slot_capacity", MIN_SLOT_CAPACITY as u64),
        ("off_magic", layout::MAGIC as u64),
        ("off_version", layout::VERSION as u64),
        ("off_slots", layout::SLOTS as u64),
        ("off_cancelled", layout::CANCELLED as u64),
        ("off_slot_capacity", layout::SLOT_CAPACITY as u64),
        ("off_generation", layout::GENERATION as u64),
        ("off_ready", layout::READY as u64),
        ("off_free", layout::FREE as u64),
        ("off_head", layout::HEAD as u64),
        ("sem_size", layout::SEM_SIZE as u64),
        ("header_size", HEADER_SIZE as u64),
        ("slot_lens", layout::SLOT_LENS as u64),
        ("data_offset_1", data_offset(1) as u64),
        ("data_offset_4", data_offset(4) as u64),
        ("data_offset_9", data_offset(9) as u64),
        ("slot_capacity_8192_4", slot_capacity(8192, 4) as u64),
        ("slot_capacity_262144_4", slot_capacity(262_144, 4) as u64),
        ("min_segment_size_1", min_segment_size(1) as u64),
        ("min_segment_size_4", min_segment_size(4) as u64),
    ];
    for (name, rust) in numbers {
        assert_eq!(said(name), rust.to_string(), "{name}: C against Rust");
    }

    let get = Message {
        segment: "/t.seg.1.0",
        generation: 7,
        call: Call::Get {
            key: "/dir/k.txt",
            conditions: Conditions::default(),
            allow_stale: true,
            head_only: false,
        },
    };
    assert_eq!(
        said("get"),
        hex(&get.encode().unwrap()),
        "a GET, byte for byte"
    );

    let pid = std::process::id();
    let expected = [
        format!(
            "1 77 {pid} 40 20 206 1000 1 1700000000 \"5f-3e8\" 1700000100 2 60 1 3735928559 2 10 20 0 0 0"
        ),
        format!("3 78 {pid} 0 0 0 0 0 0 - 0 0 0 0 0 0 0 0 1 4096 0"),
        format!("2 79 {pid} 3 0 206 1000 0 0 - 1700000100 1 0 2 5 0 0 0 0 0 0"),
        format!("4 80 {pid} 0 0 0 0 0 0 - 0 0 0 0 0 0 0 0 0 0 1"),
        "refused malformed missing head".to_owned(),
    ];
    for (i, fields) in expected.iter().enumerate() {
        assert_eq!(said(&format!("head{}", i + 1)), *fields, "head {}", i + 1);
    }
}

#[test]
fn shmget_fetches_every_size_alone_and_eight_at_once() {
    let name = instance("cget");
    let dir = tempfile::tempdir().unwrap();
    let slot = slot_capacity(SEGMENT_SIZE, SLOTS);
    let ring = slot * SLOTS;
    let sizes = [
        ("/empty", 0),
        ("/one", 1),
        ("/slot-less-one", slot - 1),
        ("/slot-and-one", slot + 1),
        ("/rings.bin", 5 * ring + 123),
        ("/three.bin", 3 << 20),
    ];
    let files = make_files(
        dir.path(),
        sizes.iter().map(|(k, len)| (k[1..].to_owned(), *len)),
    );
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap(), "-t", "8"]);

    for (key, bytes) in &files {
        let key = format!("/{key}");
        let out = fetch(&name, &key);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), bytes.len(), "{key}");
        assert_eq!(sha256(&out.stdout), sha256(bytes), "{key}");
        assert!(out.stderr.is_empty(), "{key}: nothing to say when found");
        assert_eq!(segments(&name), Vec::<String>::new(), "{key}: segment left");
    }

    let missing = fetch(&name, "/no/such/key");
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("/no/such/key"), "{said}");

    // Eight at once, each its own segment (its own pid), all of them over the ring.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (key, bytes) = &files[2 + i % (files.len() - 2)];
            let child = shmget_command(&name, &format!("/{key}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, sha256(bytes), key)
        })
        .collect();
    for (child, want, key) in clients {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&out.stdout), want, "{key}, one of eight at once");
    }
    assert_eq!(segments(&name), Vec::<String>::new());
    // Every fetch of it crossed the channel: once alone, twice among the eight.
    cache.wait_log_count("sent /three.bin", 3);
    stop_and_check_clean(&name, vec![cache]);
}

#[test]
fn shmget_without_a_cache_names_the_queue_and_leaves_nothing() {
    let name = instance("cnone");
    let out = fetch(&name, "/k");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("/{name}.req")), "{said}");
    assert_eq!(shm_objects(&name), Vec::<String>::new());
}

#[test]
fn shmget_interrupted_by_sigint_unlinks_its_segment() {
    let name = instance("cint");
    let dir = tempfile::tempdir().unwrap();
    make_files(dir.path(), [("k".to_owned(), 10)]);
    // The cache sleeps 2 s before each answer, so shmget is still waiting when the signal
    // comes.
    let cache = Proc::cache(
        &name,
        &["-c", dir.path().to_str().unwrap(), "-d", "2000000"],
    );
    let child = shmget_command(&name, "/k")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let segment = format!("{name}.seg.{}.0", child.id());
    eventually("shmget's segment", || segments(&name).contains(&segment));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("interrupted by signal 2"), "{said}");
    assert_eq!(segments(&name), Vec::<String>::new());
    // The cache, woken into a transfer nobody waits for, serves on.
    let again = fetch(&name, "/k");
    assert_eq!(again.status.code(), Some(0));
    stop_and_check_clean(&name, vec![cache]);
}

/// SHA-256 (FIPS 180-4), small enough to read, so the test needs no crate for it. Its
/// round constants are the first 32 bits of the fractional parts of the cube roots of the
/// first 64 primes, and its initial state those of the square roots of the first 8,
/// computed here; a known answer checks them.
fn sha256(data: &[u8]) -> [u8; 32] {
    let primes: Vec<u32> = (2u32..)
        .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
        .take(64)
        .collect();
    let frac = |x: f64| ((x - x.floor()) * 4_294_967_296.0) as u32;
    let k: Vec<u32> = primes.iter().map(|&p| frac(f64::from(p).cbrt())).collect();
    let mut h: Vec<u32> = primes[..8]
        .iter()
        .map(|&p| frac(f64::from(p).sqrt()))
        .collect();
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v: [u32; 8] = h.clone().try_into().unwrap();
        for i in 0..64 {
            let [a, b, c, d, e, f, g, hh] = v;
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(k[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[test]
fn sha256_gives_the_known_answers() {
    assert_eq!(
        hex(&sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
