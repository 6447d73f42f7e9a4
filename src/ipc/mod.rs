//! The channel between `webproxy` and `shmcached`: one POSIX message queue for requests
//! and shared-memory segments, each with two process-shared semaphores, for the answers.
//!
//! This is the only module with `unsafe` code: every OS call and every touch of shared
//! memory is wrapped here in a small safe type.
//!
//! # Protocol
//!
//! ## Objects and names
//!
//! Every object name starts with the instance name `NAME` (`--name`, default `shmcache`),
//! so two instances on one host never collide and two proxies can share one cache.
//!
//! | object              | name                      | created by | removed by          |
//! |---------------------|---------------------------|------------|---------------------|
//! | instance lock       | `/NAME-lock` (shm)        | cache      | cache, at exit      |
//! | request queue       | `/NAME.req`               | cache      | cache, at exit      |
//! | segment `i`         | `/NAME.seg.<pid>.<i>`     | proxy      | proxy, at exit      |
//!
//! One live cache per name ([`lock`]): a cache first takes an exclusive `flock` on the
//! shared-memory object `/NAME-lock` and writes its pid into it; if a live process holds
//! it, the cache exits 1 naming that pid. The kernel releases the lock when its holder
//! dies, so an object left by a killed cache is taken over by the next one. Only the
//! holder creates the queue, replacing a stale one (a live cache would hold the lock, so
//! any queue found then is a dead cache's). The queue holds at most 10 messages of
//! [`wire::MESSAGE_SIZE`] bytes, within the kernel's unprivileged defaults (`msg_max` 10,
//! `msgsize_max` 8192). At exit the cache unlinks the queue and then the lock object, each
//! only if the name still leads to its own object, and the lock is released last. The
//! lock object is outside the `/NAME.` namespace ([`lock_name`]), so the proxy's cleanup of
//! stale segments never takes it for a segment.
//!
//! The proxy creates its segments with `O_EXCL` and mode 0600; at start it removes
//! segments of its `NAME` whose `<pid>` is no longer running. Either process may start
//! first: the proxy keeps trying to open the queue and serves from secondary storage until
//! it can. Any number of proxies may share one cache; only `webproxy --spawn-cache` starts
//! one, and it refuses to run when its cache is refused.
//!
//! ## A request ([`wire`])
//!
//! A fixed-size record: magic, version, operation, the segment's generation, the byte range
//! wanted, the key (a URL path) and the segment name. The cache drops (and logs) any
//! message that is not exactly one valid record, or whose segment name is outside
//! `/NAME.seg.`, or whose segment does not exist or carries another generation.
//!
//! ## A segment ([`segment`])
//!
//! A `repr(C)` header (magic, version, geometry, the semaphores `ready` and `free`,
//! generation, the answer's head) and a data area split into `slots` slots of
//! `slot_capacity` bytes, each with its own length word. With one slot this is the classic
//! lock-step handoff; with more, the cache fills slot `j+1` while the proxy drains slot `j`.
//!
//! The head describes the object: status, lengths, validators (modification second, entity
//! tag), freshness (`stored_at`, `max_age`) and `source_version`, an opaque 64-bit identity
//! of the file the bytes were read from (device, inode, length, modification and change
//! times to the nanosecond; 0 when unknown, as for an origin's object). A STORE's head
//! hands it to the cache, which keeps it with the entry and returns it in every answer, so
//! that an expired entry is checked against the file's whole `stat`, not just against what
//! its entity tag shows.
//!
//! An entry the cache preloaded (`-c`) is never answered `Expired`: the cache knows the
//! file it came from and checks it itself when the entry is asked for past its lifetime,
//! then answers with the entry renewed, with the file's new bytes, or, when the file is
//! gone, not-found.
//!
//! ## One transfer ([`channel`])
//!
//! ```text
//!   proxy worker                          segment                       cache worker
//!   ------------                          -------                       ------------
//!   checkout: generation = g
//!   mq_send {GET, key, seg, g, range} ---- /NAME.req ---->  mq_receive (main thread)
//!                                                            -> pool: map seg, check g
//!                                                            write head (status, lengths, g)
//!                                        wait free  <------- (free = slots at rest)
//!                                        slot 0 <---------- copy chunk 0, set its length
//!   wait ready  <------------------------ post ready
//!   check head and length, copy slot 0
//!   post free ----------------------------> free
//!                                        wait free  <------- chunk 1 into slot 1 % slots
//!   ...                                   ...                ...
//!   last chunk copied, post free: ready = 0, free = slots; the segment goes back to the pool
//! ```
//!
//! Every length read from shared memory is checked against the reader's own copy of the
//! geometry before any byte is copied. A zero-byte body still takes one (empty) chunk, so
//! a zero-byte file is a found file.
//!
//! ## When a transfer does not finish
//!
//! Both sides wait with a timeout (`--cache-timeout`), never forever. The proxy also
//! watches the cache's process ([`channel::Peer`]): every head carries the writer's pid, the
//! proxy opens a pidfd on it, and a wait that has already lasted 50 ms checks after each
//! further 50 ms slice whether that process has exited, so a dead cache ends a wait within
//! about 50 ms instead of at its timeout. A wait that is served at once costs nothing more.
//!
//! If the proxy gives up (its client hung up, the cache is too slow or dead, the head is
//! malformed), it sets the segment's `cancelled` flag, posts `free` and `ready` once each
//! to wake a peer blocked there (a writer waits on `free`, a reader on `ready`), unlinks
//! the object and creates a fresh one under the same name with a new generation.
//! The cache worker checks `cancelled` and the generation after every wait, so it stops at
//! the next chunk; whatever it writes before that lands in the orphaned object, never in
//! the next transfer. If the proxy dies, the cache worker's wait for `free` times out and
//! it returns to the pool.
//!
//! ## Shutdown
//!
//! The cache's main thread waits on the queue for at most 100 ms at a time and then looks at
//! its shutdown flag, so SIGINT or SIGTERM stops it within that time. Nothing is sent to
//! wake it: a message sent by name could land in another process's queue.

pub mod call;
pub mod channel;
pub mod client;
pub mod conditions;
pub mod lock;
mod pool;
pub mod process;
pub mod queue;
pub mod segment;
mod sem;
pub mod server;
mod sys;
pub mod wire;

pub use call::{Call, ETAG_CAPACITY, Etag, Head, MAX_HEADER_BLOCK, Meta, unix_now};
pub use channel::ChannelError;
pub use conditions::{ByteRange, Conditions, IfRange, Outcome, TagList, Validators};
pub use segment::min_segment_size;
pub use wire::{MAX_KEY_LEN, MAX_TAGS};

use std::ffi::CString;
use std::io;

/// The longest instance name we accept; keeps every object name far below NAME_MAX and the
/// wire format's segment-name field.
pub const MAX_INSTANCE_NAME: usize = 64;

/// Checks an instance name: 1 to 64 of `[A-Za-z0-9_-]`, so it can sit inside POSIX
/// object names.
pub fn check_instance_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > MAX_INSTANCE_NAME || !name.chars().all(ok_char) {
        return Err(format!(
            "instance name {name:?} must be 1 to {MAX_INSTANCE_NAME} characters of A-Z, a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(())
}

/// The request queue of instance `name`.
pub fn queue_name(name: &str) -> String {
    format!("/{name}.req")
}

/// The shared-memory object whose `flock` the live cache of instance `name` holds.
///
/// Outside the `/NAME.` namespace of the channel's objects on purpose, so that what lists
/// those (the proxy's cleanup of stale segments, `ls /dev/shm/NAME.*`) sees the channel
/// only. It cannot collide with any instance's other objects: instance names have no '.',
/// so every other object name has one and no lock name does.
pub fn lock_name(name: &str) -> String {
    format!("/{name}-lock")
}

/// What every segment name of instance `name` starts with.
pub fn segment_prefix(name: &str) -> String {
    format!("/{name}.seg.")
}

/// The pid of the proxy that created `segment`, if it is a well-formed segment name of
/// instance `name` (`/NAME.seg.<pid>.<i>`).
pub fn segment_owner(name: &str, segment: &str) -> Option<u32> {
    // The prefix of `segment_prefix`, matched piece by piece: this runs for every request.
    let rest = segment
        .strip_prefix('/')?
        .strip_prefix(name)?
        .strip_prefix(".seg.")?;
    let (pid, index) = rest.split_once('.')?;
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if numeric(pid) && numeric(index) {
        pid.parse().ok()
    } else {
        None
    }
}

/// Whether `segment` is a well-formed segment name of instance `name`.
pub fn is_instance_segment(name: &str, segment: &str) -> bool {
    segment_owner(name, segment).is_some()
}

/// Unlinks the segments of instance `name` whose creating process is gone (its pid is in
/// the name). Call it at start only. Returns the names removed.
pub fn remove_stale_segments(name: &str) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let file = entry?.file_name();
        let Some(file) = file.to_str() else { continue };
        let object = format!("/{file}");
        // Our own pid counts as gone too: we are only starting, so such a segment is from
        // an earlier process that had the same pid (a restarted container, say).
        let gone = segment_owner(name, &object)
            .is_some_and(|pid| pid == std::process::id() || !sys::process_alive(pid));
        if gone && segment::unlink_segment(&object)? {
            removed.push(object);
        }
    }
    Ok(removed)
}

/// Validates a POSIX IPC object name: a leading '/', no other '/', no NUL, under NAME_MAX.
fn check_name(name: &str) -> io::Result<CString> {
    let valid =
        name.starts_with('/') && !name[1..].contains('/') && name.len() > 1 && name.len() < 255;
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad IPC object name {name:?}"),
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        assert!(check_instance_name("shmcache").is_ok());
        assert!(check_instance_name("a-b_9").is_ok());
        for bad in ["", "a/b", "a.b", "a b", &"x".repeat(65)] {
            assert!(check_instance_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segment_namespace() {
        assert!(is_instance_segment("t", "/t.seg.12.0"));
        for bad in [
            "/t.seg.12",
            "/u.seg.12.0",
            "/t.seg.12.0.1",
            "/t.seg..0",
            "/t.seg.1.x",
            "/t.req",
            &lock_name("t"),
        ] {
            assert!(!is_instance_segment("t", bad), "{bad}");
        }
    }
}
