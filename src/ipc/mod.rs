//! The channel between `webproxy` and `shmcached`: one POSIX message queue for calls and
//! shared-memory segments, each with two process-shared semaphores, for the answers. This
//! page is the protocol's specification; the modules below implement it.
//!
//! This is the only module with `unsafe` code (with one small exception for the HTTP
//! server's socket calls in `http::server::socket`): every OS call and every touch of
//! shared memory is wrapped here in a small safe type. The rest of the crate comes in
//! through two doors only: [`client`] (what the proxy's pool thread calls) and [`server`]
//! (the cache's receive loop).
//!
//! # Reading order
//!
//! [`call`] (the protocol as types) → [`conditions`] (what a GET may depend on) →
//! [`wire`] (their bytes) → [`segment`] (the shared memory) with [`sem`] (its semaphores)
//! → [`channel`] (one transfer through a segment's slots) → [`client`] (the proxy's side,
//! with [`pool`], its segments) → [`server`] (the cache's side). Beside them: [`queue`]
//! (the message queue), [`lock`] (one live cache per name), [`sys`] and [`process`] (OS
//! calls std does not offer).
//!
//! # Objects and names
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
//! Removing is always an explicit call of the owner ([`queue::MessageQueue::unlink`],
//! [`segment::unlink_segment`]): dropping a handle only closes or unmaps it, so no handle
//! ever removes an object by accident.
//!
//! One live cache per name ([`lock`]): a cache first takes an exclusive `flock` on the
//! shared-memory object `/NAME-lock` and writes its pid into it; if a live process holds
//! it, the cache exits 1 naming that pid. The kernel releases the lock when its holder
//! dies, so an object left by a killed cache is taken over by the next one. Only the
//! holder creates the queue, replacing a stale one (a live cache would hold the lock, so
//! any queue found then is a dead cache's). The queue holds at most 10 messages of up to
//! [`wire::MESSAGE_CAPACITY`] bytes, within the kernel's unprivileged defaults (`msg_max`
//! 10, `msgsize_max` 8192). At exit the cache unlinks the queue and then the lock object,
//! each only if the name still leads to its own object, and the lock is released last.
//! The lock object is outside the `/NAME.` namespace ([`lock_name`]), so the proxy's
//! cleanup of stale segments never takes it for a segment.
//!
//! The proxy creates its segments with `O_EXCL` and mode 0600; at start it removes
//! segments of its `NAME` whose `<pid>` is no longer running. Either process may start
//! first: the proxy keeps trying to open the queue and serves from secondary storage until
//! it can. Any number of proxies may share one cache; only `webproxy --spawn-cache` starts
//! one, and it refuses to run when its cache is refused.
//!
//! # A call
//!
//! The proxy's pool thread that carries the request (the one that read it from the client,
//! and will write the answer to it) checks a segment out of its pool, which starts a new
//! *generation* on it,
//! and sends one message naming the segment, the generation and the [`Call`]. Everything
//! after that crosses the segment: first a head in the segment's head area (the cache's
//! [`Head`], or for STORE the proxy's [`StoreHead`]), then the *stream* through its ring
//! of slots: a header block and then body bytes, of the lengths the head's [`Stream`]
//! says. The cache drops (and logs) any message that does not decode, names a segment
//! outside `/NAME.seg.`, a segment that does not exist, or one on another generation.
//!
//! ```text
//! GET {key, conditions, allow_stale, head_only}      proxy reads, cache writes
//!   proxy                                    cache
//!   checkout: generation g
//!   GET -------------------- /NAME.req ----> look the key up; an expired entry that was
//!                                            preloaded is checked against its file
//!                                            evaluate the conditions on its validators
//!         <------------------ head area ---- Found {meta, outcome}
//!         <------------------ slots -------- header block, then the bytes the outcome sends
//!                                            (all for 200, the range for 206, none for 304,
//!                                            416 or head_only)
//!   or    <------------------ head area ---- Expired {meta, accept_len} + header block
//!   or    <------------------ head area ---- Missing {accept_len}
//!
//! STORE {key, len}                                   proxy writes, cache reads
//!   STORE ------------------ /NAME.req ----> refuse now if len > what it keeps
//!   StoreHead {status, validators, lifetime, file} -- head area -->
//!   header block, body ----- slots --------> copy out; keep the entry
//!   wait until every slot is free <--------- the last slot given back: "it is in"
//!
//! RENEW {key, lifetime, conditions, head_only}       proxy reads, cache writes
//!   RENEW ------------------ /NAME.req ----> stored_at = now, lifetime = lifetime
//!         <------------------ as GET -------- Found, or Missing if it left meanwhile
//!
//! PURGE {key}                                        proxy reads, cache writes
//!   PURGE ------------------ /NAME.req ----> remove the entry
//!         <------------------ head area ---- Purged {existed}, one empty chunk
//!
//! STATS                                              proxy reads, cache writes
//!   STATS ------------------ /NAME.req ----> gather its counters and workers
//!         <------------------ head area ---- Stats
//!         <------------------ slots -------- Stats {counters, workers}, encoded
//! ```
//!
//! Every head also says how its stream is made up ([`Stream`]: `header_len` bytes of
//! header block, then `body_len` body bytes), so a reader knows how many bytes to take
//! from the head alone, whatever it asked. A GET with `head_only`, a 304 and a 416 have
//! a `Found` head with `body_len` 0.
//!
//! A request asks the cache once: the conditions travel with the GET, so 304, 206 and 416
//! come back in one answer; a revalidated entry takes one more call, a RENEW that answers
//! like a GET; a miss takes a STORE to fill the cache. Only two paths ask again: a request
//! that waited for another one's fill of its key, and an expired entry served stale
//! because its source could not be reached.
//!
//! # Who answers a call ([`server::Dispatch`])
//!
//! - **workers** (the default): every worker thread of the cache waits on the queue itself,
//!   and the kernel hands each message to one waiting receiver, which serves it. A cache
//!   hit costs two cross-process wake-ups: the call wakes a cache worker, the first
//!   `ready` wakes the proxy's pool thread, which writes the answer to its client itself
//!   (no third thread is woken on either side).
//! - **boss** (`shmcached --dispatch boss`, the classic design): the main thread receives
//!   every call and hands it to a pool worker. One wake-up more per call: the message
//!   wakes the boss, the boss wakes a worker, the worker's `ready` wakes the proxy.
//!
//! System calls per 1 KiB hit, the same way (`strace -c` under wrk): the cache makes
//! `mq_timedreceive` and, when the proxy already waits, the `futex` of `sem_post(ready)`;
//! the proxy `epoll_wait`, `recvfrom`, `mq_timedsend`, the `futex` of `sem_timedwait` when
//! the answer is not there yet, `writev` and `epoll_ctl`.
//!
//! Measured with `bench/wakeups.sh` (voluntary context switches per request, all of the
//! cache's threads), one connection: 1.00 per hit with workers, 3.2 with the boss (the
//! boss sleeps on the queue, the worker on the pool's channel, and each wakes the other);
//! see BENCHMARKS.md for what that does to requests per second.
//!
//! # Responses from an HTTP origin
//!
//! In front of an origin (`-s http://…`, [`crate::http::origin`]) the proxy is a shared
//! cache as RFC 9111 says, with the calls above and no others; the cache stays ignorant
//! of HTTP, and every decision is the proxy's:
//!
//! - **Keys.** The normalised path and `?query`. A response with `Vary` is stored under a
//!   variant key: the primary key, a generation number and the selecting request fields
//!   (`name:value`, sorted), one per line; no primary key holds a line break. The proxy
//!   remembers each primary key's `Vary`, so it knows the key before it asks, and asks
//!   once. `Vary: *` is never stored.
//! - **The stored head.** `status` is the origin's; the header block is its end-to-end
//!   fields as received (no hop-by-hop ones, no `Content-Length`, none a `private=` or
//!   `no-cache=` names); `etag` and `modified` are its `ETag` and `Last-Modified` (else
//!   `Date`), which the cache decides a client's conditions and ranges on; `lifetime` is
//!   the freshness lifetime less the response's age when it arrived (RFC 9111 §4.2.3;
//!   must-validate for `no-cache`, or when nothing is left), so that `Found` means fresh
//!   and `Expired` stale.
//!
//! ```text
//! fresh hit            GET {key, conditions} ---------> Found + header block + body  (one ask)
//! request directives   GET {key, head_only} ----------> Found or Expired + header block
//! (no-cache, max-age,  the proxy decides (§5.2.1, §3.5); if it may serve:
//!  min-fresh, Authn.)  GET {key, conditions} ---------> Found + header block + body
//! stale                GET {key, conditions} ---------> Expired + header block
//!                      conditional request to the origin, stored ETag / Last-Modified verbatim
//!   304, same fields   RENEW {key, lifetime} ---------> Found, as a GET
//!   304, new fields    GET {key, allow_stale} --------> Found + header block + body (<= 8 MiB)
//!                      STORE {key, len}, StoreHead + new header block + body ->
//!                      (served from the proxy's memory)
//!   200                STORE {key, len}: replaces it, filled while the client is served
//!   5xx, unreachable   GET {key, allow_stale} --------> Found (stale-if-error)
//! stale-while-         GET {key, allow_stale} --------> Found: served at once, and a
//!   revalidate         thread of the proxy validates it as above
//! miss                 GET --------------------------> Missing {accept_len}
//!                      request to the origin; STORE {key, len} while the client is served
//! first Vary seen      PURGE {primary}: what is stored under the primary key is no variant
//! unsafe method, 2xx   PURGE {key} for the target, Location and Content-Location (RFC 9111
//!   or 3xx             §4.4); the proxy forgets their Vary, and the next variant stored gets
//!                      a new generation, so the old variants are never asked for again and
//!                      age out of the LRU
//! ```
//!
//! # The head
//!
//! Written by the writer of the transfer into the segment's head area of
//! [`wire::HEAD_CAPACITY`] bytes before the first chunk, published by the first `ready`
//! (see [`wire`] for the encoding). The reader checks every field before it trusts any,
//! and refuses a head of the other side's kind (a [`StoreHead`] where an answer is due).
//!
//! | field          | in heads            | meaning                                          |
//! |----------------|---------------------|--------------------------------------------------|
//! | `kind`         | all                 | Found, Expired, Missing, Purged, Stats, Failed; Store for a [`StoreHead`] |
//! | `generation`   | all                 | the transfer the writer served: must be the reader's |
//! | `pid`          | all                 | the writer, so the reader can watch it die       |
//! | `stream`       | all                 | [`Stream`]: `header_len` (≤ 16 KiB) header block bytes, then `body_len` body bytes |
//! | `status`       | Found, Expired, Store | the stored response's HTTP status              |
//! | `total_len`    | Found, Expired      | the body's whole length (for Store: `body_len`)  |
//! | `modified`     | Found, Expired, Store | validator: last modification, whole seconds, or unknown |
//! | `etag`         | Found, Expired, Store | validator: entity tag, printable ASCII ≤ 128 bytes, or none |
//! | `stored_at`    | Found, Expired      | freshness: when stored or last renewed (the cache's clock; a STORE has none) |
//! | `lifetime`     | Found, Expired, Store | [`Lifetime`]: must-validate, or seconds from `stored_at` |
//! | `identity`     | Found, Expired      | [`Identity`]: the [`FileVersion`] the bytes were read from, or a number unique to the entry |
//! | `file`         | Store               | the [`FileVersion`] the bytes were read from, or none (the cache draws a unique identity) |
//! | `outcome`      | Found               | 200, 206 (with its range, inside the body), 304 or 416 |
//! | `accept_len`   | Expired, Missing    | the largest body a STORE may bring, or none: the cache takes no STORE |
//! | `existed`      | Purged              | whether the entry was there                      |
//!
//! The STATS stream is [`Stats`]: named counters and, per worker, the [`Op`] and key of
//! the call it serves (or idle), encoded by [`wire::encode_stats`] and decoded in one
//! place, [`wire::decode_stats`]. The cache's pid is the head's.
//!
//! Every length read from shared memory is checked against the reader's own copy of the
//! geometry before any byte is copied, and a header block must be lines of
//! `name: value` before the proxy writes any of it to a client.
//!
//! # A segment ([`segment`])
//!
//! The asker (a proxy, or any client such as `examples/c/shmget.c`) creates each segment
//! it uses: `shm_open` with `O_CREAT | O_EXCL` and mode 0600 (so the cache must run as
//! the same user), under `/NAME.seg.<pid>.<i>` with its own pid (a proxy that starts
//! removes the segments of its NAME whose pid is not running; the cache forgets its
//! mappings of them), then `ftruncate` and map it. Every integer is in native byte order;
//! the fields below are naturally aligned, so a C struct of these types in this order
//! has these offsets (`examples/c/shmcache.h` asserts them).
//!
//! | offset | field           | type   | meaning                                           |
//! |-------:|-----------------|--------|---------------------------------------------------|
//! | 0      | `magic`         | u32    | [`segment::SEGMENT_MAGIC`], `"SHMS"` read as a big-endian number |
//! | 4      | `version`       | u32    | [`segment::SEGMENT_VERSION`] (7)                   |
//! | 8      | `slots`         | u32    | slots in the ring, at least 1                      |
//! | 12     | `cancelled`     | u32    | 1 once the asker abandoned the transfer            |
//! | 16     | `slot_capacity` | u64    | bytes per slot, at least [`segment::MIN_SLOT_CAPACITY`] (64) |
//! | 24     | `generation`    | u64    | the current transfer's number                      |
//! | 32     | `ready`         | sem_t  | slots holding data (32 bytes, process-shared)      |
//! | 64     | `free`          | sem_t  | slots empty (starts at `slots`)                    |
//! | 96     | `head`          | 256 bytes | the head area (see [`wire`])                    |
//! | 352    | slot lengths    | u64 × slots | bytes the writer put in each slot            |
//! | `data_offset(slots)` | slots | `slots` × `slot_capacity` bytes | the ring: 352 + 8 × slots rounded up to a multiple of 64 |
//!
//! `slot_capacity` is `(size − data_offset(slots)) / slots`. The creator initialises
//! both semaphores in place (`sem_init(sem, 1, value)`: `ready` 0, `free` = `slots`),
//! then `version`, `slots` and `slot_capacity`, and writes `magic` last, with release
//! ordering: the cache refuses a segment without its magic, so it never touches a
//! semaphore that is still being set up. The cache checks magic, version and that the
//! ring fits the object before it uses one, and from then on trusts its own copy of the
//! geometry, never the live fields. Fields are read and written as atomics, the head area
//! and the slots as plain bytes that the semaphores hand over.
//!
//! Before each call the asker starts a transfer on the segment: it zeroes the head area's
//! first byte (no head yet), clears `cancelled`, and stores the new `generation` last.
//! Generations are never 0 (the cache drops a call of generation 0) and never repeat on
//! one segment: the proxy counts up from the clock. A segment is only used for a new
//! transfer at rest (`ready` 0, `free` = `slots`), which a completed transfer leaves it.
//!
//! # One transfer ([`channel`])
//!
//! ```text
//!   reader                                segment                        writer
//!   ------                                -------                        ------
//!                                         head area <------------------- write the head
//!                                         wait free  <------------------ (free = slots at rest)
//!                                         slot 0 <---------------------- copy chunk 0, set its length
//!   wait ready  <------------------------ post ready
//!   check head and length, copy slot 0
//!   post free ----------------------------> free
//!                                         wait free  <------------------ chunk 1 into slot 1 % slots
//!   ...                                   ...                            ...
//!   last chunk copied, post free: ready = 0, free = slots; the segment goes back to the pool
//! ```
//!
//! With one slot this is the classic lock-step handoff; with more, the writer fills slot
//! `j+1` while the reader drains slot `j`. An empty stream still takes one (empty) chunk,
//! so every answer is at least one handoff.
//!
//! The rules each side keeps, whatever language it is written in:
//!
//! - Chunk `j` of the stream travels in slot `j % slots`. The writer takes one `free`,
//!   copies the bytes into the slot, stores their count in the slot's length (a u64,
//!   release) and posts `ready`. A chunk may be shorter than a slot anywhere in the
//!   stream (a writer hands over what it has when its source trickles), so a reader
//!   counts bytes, not slots. The first `ready` also publishes the head, written before
//!   it.
//! - The reader takes one `ready`, then reads the slot's length (acquire) and refuses it
//!   if it is over its own `slot_capacity` or over the stream bytes still due, or if it is
//!   0 while bytes are still due (only the single chunk of an empty stream is empty).
//! - The reader posts `free` after each chunk it has copied out, except the stream's
//!   last, which it posts once it is done with the whole transfer: for STORE that last
//!   post is how the proxy learns that the entry is in.
//! - The stream's length is the head's [`Stream`] (header block, then body); the reader
//!   takes exactly that many bytes, whatever it asked for.
//! - A message goes on the queue with `mq_send` priority 0, from a descriptor opened
//!   `O_WRONLY`; a full queue is waited on, within the same timeout as any other wait.
//!
//! # When a transfer does not finish
//!
//! Both sides wait with a timeout (`--cache-timeout`), never forever, on any clock
//! (`sem_timedwait` takes CLOCK_REALTIME; the Rust side waits on CLOCK_MONOTONIC with
//! `sem_clockwait`). The proxy also
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
//! it returns to the pool. An asker that does not reuse the segment (a one-shot client)
//! does the same and then only unlinks it; it must unlink on every way out, signals
//! included, or the object stays in /dev/shm until a proxy of the same NAME starts.
//!
//! # Shutdown
//!
//! The cache's receiving threads (its workers, or the boss) wait on the queue for at most
//! 100 ms at a time and then look at the shutdown flag, so SIGINT or SIGTERM stops them
//! within that time. Nothing is sent to wake them: a message sent by name could land in
//! another process's queue.
//!
//! Either stop unlinks the queue's name first. A proxy's connector looks at the name every
//! 200 ms: once it is gone, the proxy serves without the cache. A graceful stop (SIGQUIT)
//! goes on receiving from the still-open queue, so calls sent just before are answered
//! too, until no call has been in progress or arrived for a second (or `--drain-timeout`
//! has passed).

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

pub use call::{
    Call, ETAG_CAPACITY, Etag, FileVersion, Head, Identity, Lifetime, MAX_HEADER_BLOCK, Meta, Op,
    Stats, StoreHead, Stream, unix_now,
};
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
