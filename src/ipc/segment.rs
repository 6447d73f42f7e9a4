//! A shared-memory segment: a `repr(C)` header, a table of slot lengths, and a data area
//! split into `slots` equal slots.
//!
//! ```text
//!  offset 0                 HEADER_SIZE          data_offset
//!  +------------------------+--------------------+---------+---------+-----+
//!  | Header (magic, sems,   | slot_len[0..slots] | slot 0  | slot 1  | ... |
//!  | generation, head, ...) | (u64 each)         |         |         |     |
//!  +------------------------+--------------------+---------+---------+-----+
//! ```
//!
//! The proxy creates, owns and unlinks segments (dropping a [`Segment`] only unmaps it;
//! [`unlink_segment`] removes the name); the cache opens them by name and keeps the
//! mappings between requests (see `server`).
//! Both map the same object, so nothing here is a Rust reference to shared data: fields
//! are atomics reached through raw pointers, the semaphores are handed out as
//! [`Semaphore`] views, and slot bytes are copied in and out with `ptr::copy_nonoverlapping`.
//! Every size read from shared memory is checked against this process's own mapping
//! before use, because the peer may be buggy, dead, or hostile.

use std::ffi::CString;
use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::ptr::{self, addr_of_mut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::check_name;
use super::sem::Semaphore;
use super::wire::HEAD_CAPACITY;

/// First word of every segment: "SHMS" read as a big-endian number, stored in native
/// byte order like every field (on x86-64 the bytes in memory are `SMHS`).
pub const SEGMENT_MAGIC: u32 = u32::from_be_bytes(*b"SHMS");
/// Layout version of the header; bumped whenever a field changes meaning or place.
/// Version 7 holds the answer's head as bytes encoded by [`wire`](super::wire) instead of
/// a field per value, so a new field of the protocol no longer changes this layout.
pub const SEGMENT_VERSION: u32 = 7;
/// The smallest slot we agree to carve: below this the header costs more than it carries.
pub const MIN_SLOT_CAPACITY: usize = 64;

/// The fixed part of a segment, shared by both processes.
///
/// Fields written once at creation (magic .. slot_capacity) are read by the cache once at
/// open and copied; the rest change per transfer. All are atomics so that either side may
/// read a field the other is writing without undefined behaviour, except the head area,
/// which is copied in and out whole and only ever validated, never trusted.
#[repr(C)]
struct Header {
    magic: AtomicU32,
    version: AtomicU32,
    slots: AtomicU32,
    /// Set by the asker when it abandons a transfer, so the answerer stops early.
    cancelled: AtomicU32,
    slot_capacity: AtomicU64,
    /// Bumped by the proxy at every checkout; the request carries the same number.
    generation: AtomicU64,
    /// Counts slots holding data: posted by the writer, waited for by the reader.
    ready: libc::sem_t,
    /// Counts empty slots: starts at `slots`, waited for by the writer, posted by the reader.
    free: libc::sem_t,
    /// The transfer's head ([`wire::encode_head`](super::wire::encode_head)); a first byte
    /// of 0 means none has been written since the transfer began.
    head: [u8; HEAD_CAPACITY],
}

/// Bytes before the slot-length table.
pub const HEADER_SIZE: usize = size_of::<Header>();
const _: () = assert!(HEADER_SIZE.is_multiple_of(8) && align_of::<Header>() <= 64);

/// Where each field of the header lies, in bytes from the segment's start, for
/// implementations in other languages: `examples/c/shmcache.h` states the same numbers,
/// and a test (`tests/c_client.rs`) compares the two.
pub mod layout {
    use super::{Header, offset_of};

    pub const MAGIC: usize = offset_of!(Header, magic);
    pub const VERSION: usize = offset_of!(Header, version);
    pub const SLOTS: usize = offset_of!(Header, slots);
    pub const CANCELLED: usize = offset_of!(Header, cancelled);
    pub const SLOT_CAPACITY: usize = offset_of!(Header, slot_capacity);
    pub const GENERATION: usize = offset_of!(Header, generation);
    pub const READY: usize = offset_of!(Header, ready);
    pub const FREE: usize = offset_of!(Header, free);
    pub const HEAD: usize = offset_of!(Header, head);
    /// Bytes of one `sem_t`.
    pub const SEM_SIZE: usize = size_of::<libc::sem_t>();
    /// The slot-length table: one u64 per slot, right after the header.
    pub const SLOT_LENS: usize = super::HEADER_SIZE;
    /// The data area starts at a multiple of this.
    pub const DATA_ALIGN: usize = 64;

    use std::mem::size_of;
}

/// Where the data area starts for a segment of `slots` slots: after the header and the
/// slot-length table, rounded up to a multiple of 64.
pub fn data_offset(slots: usize) -> usize {
    (HEADER_SIZE + 8 * slots).next_multiple_of(64)
}

/// Bytes each slot holds in a segment of `size` bytes split into `slots` slots.
pub fn slot_capacity(size: usize, slots: usize) -> usize {
    size.saturating_sub(data_offset(slots)) / slots.max(1)
}

/// The smallest segment size that holds `slots` slots of [`MIN_SLOT_CAPACITY`] bytes.
pub fn min_segment_size(slots: usize) -> usize {
    data_offset(slots) + slots * MIN_SLOT_CAPACITY
}

/// Why a segment could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// shm_open, fstat or mmap failed (ENOENT: no such segment).
    Os(io::Error),
    /// The object exists but is not a segment this version understands.
    Invalid(&'static str),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Os(e) => write!(f, "{e}"),
            OpenError::Invalid(why) => write!(f, "not a valid segment: {why}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// One mapping of a shared-memory segment.
///
/// Geometry (`slots`, `slot_capacity`) is this process's own copy, taken at create or open
/// time; bounds checks use it, never the live header.
#[derive(Debug)]
pub struct Segment {
    base: *mut u8,
    len: usize,
    name: String,
    slots: usize,
    slot_capacity: usize,
}

// SAFETY: `Segment` owns its mapping; the raw pointer is not tied to a thread, and all access
// to shared memory goes through atomics, semaphores or explicit copies whose exclusivity the
// protocol (not Rust aliasing) guarantees. Moving the handle to another thread is sound.
unsafe impl Send for Segment {}

// SAFETY: every `&self` method touches shared memory only through atomics, POSIX semaphores
// (safe to use from any thread) or raw copies of slot bytes whose exclusivity the protocol
// arranges, exactly as it does between the two processes. Threads of one process sharing a
// mapping are no different from processes sharing the object, so `&Segment` may cross
// threads (the cache keeps its mappings in an `Arc` between requests).
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a new segment `name` of `size` bytes split into `slots` slots, mode 0600.
    ///
    /// Initialises the header and both semaphores (`ready` = 0, `free` = `slots`).
    ///
    /// # Errors
    /// EEXIST when the name is taken (O_EXCL), EINVAL when `size` is below
    /// [`min_segment_size`] or the name is malformed, ENOSPC/ENOMEM when /dev/shm is full.
    pub fn create(name: &str, size: usize, slots: usize) -> io::Result<Segment> {
        if slots == 0 || slots > u32::MAX as usize || size < min_segment_size(slots) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment of {size} bytes cannot hold {slots} slots (minimum {} bytes)",
                    min_segment_size(slots.max(1))
                ),
            ));
        }
        let cname = check_name(name)?;
        // SAFETY: `cname` is NUL-terminated and alive for the call.
        let fd = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        let mapped = truncate_and_map(fd, size);
        // SAFETY: `fd` is ours and closed once; the mapping (if any) keeps the object alive.
        unsafe { libc::close(fd) };
        let base = match mapped {
            Ok(base) => base,
            Err(e) => {
                let _ = shm_unlink(&cname);
                return Err(e);
            }
        };
        let slot_capacity = slot_capacity(size, slots);
        let seg = Segment {
            base,
            len: size,
            name: name.to_owned(),
            slots,
            slot_capacity,
        };
        // The semaphores first, the magic last: a process that opens the name before we are
        // done (names are predictable) sees no magic and refuses the segment, so it never
        // touches a semaphore that sem_init is still setting up.
        seg.ready().init(0)?;
        seg.free().init(slots as u32)?;
        let h = seg.header();
        // SAFETY: `h` points to the start of our fresh mapping, large enough for a Header
        // (size >= min_segment_size); the fields written are atomics.
        unsafe {
            (*h).version.store(SEGMENT_VERSION, Ordering::Relaxed);
            (*h).slots.store(slots as u32, Ordering::Relaxed);
            (*h).slot_capacity
                .store(slot_capacity as u64, Ordering::Relaxed);
            (*h).magic.store(SEGMENT_MAGIC, Ordering::Release);
        }
        Ok(seg)
    }

    /// Maps an existing segment created by a proxy, checking that its header describes a
    /// layout that fits inside the object.
    ///
    /// # Errors
    /// [`OpenError::Os`] with ENOENT when it does not exist; [`OpenError::Invalid`] when its
    /// magic, version or geometry is wrong.
    pub fn open(name: &str) -> Result<Segment, OpenError> {
        let cname = check_name(name).map_err(OpenError::Os)?;
        // SAFETY: `cname` is NUL-terminated and alive for the call.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd == -1 {
            return Err(OpenError::Os(io::Error::last_os_error()));
        }
        let mapped = file_size(fd).and_then(|len| {
            if len < min_segment_size(1) {
                Err(io::Error::new(io::ErrorKind::InvalidData, "too small"))
            } else {
                map(fd, len).map(|base| (base, len))
            }
        });
        // SAFETY: `fd` is ours and closed once; the mapping keeps the object alive.
        unsafe { libc::close(fd) };
        let (base, len) = mapped.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => OpenError::Invalid("smaller than any segment"),
            _ => OpenError::Os(e),
        })?;
        let mut seg = Segment {
            base,
            len,
            name: name.to_owned(),
            slots: 0,
            slot_capacity: 0,
        };
        let h = seg.header();
        // SAFETY: the mapping holds at least a Header (checked above); the fields are atomics.
        let (magic, version, slots, slot_capacity) = unsafe {
            (
                (*h).magic.load(Ordering::Acquire),
                (*h).version.load(Ordering::Acquire),
                (*h).slots.load(Ordering::Acquire) as usize,
                (*h).slot_capacity.load(Ordering::Acquire) as usize,
            )
        };
        if magic != SEGMENT_MAGIC {
            return Err(OpenError::Invalid("bad magic"));
        }
        if version != SEGMENT_VERSION {
            return Err(OpenError::Invalid("unknown version"));
        }
        let fits = slots
            .checked_mul(slot_capacity)
            .and_then(|data| data.checked_add(data_offset(slots)))
            .is_some_and(|end| end <= len);
        if slots == 0 || slot_capacity == 0 || !fits {
            return Err(OpenError::Invalid("geometry does not fit the mapping"));
        }
        seg.slots = slots;
        seg.slot_capacity = slot_capacity;
        Ok(seg)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of slots in the ring (1 = classic lock-step).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes one slot holds.
    pub fn slot_capacity(&self) -> usize {
        self.slot_capacity
    }

    fn header(&self) -> *mut Header {
        self.base.cast()
    }

    fn field<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + size_of::<T>() <= HEADER_SIZE);
        // SAFETY: `offset` is the offset of a field of type T (callers pass offset_of! of an
        // atomic field), inside our mapping, which lives as long as `self`. Atomics may be
        // shared by reference while another process writes them.
        unsafe { &*self.base.add(offset).cast::<T>() }
    }

    pub fn ready(&self) -> Semaphore<'_> {
        // SAFETY: the field lies inside our mapping, which outlives the returned view.
        unsafe { Semaphore::from_raw(addr_of_mut!((*self.header()).ready)) }
    }

    pub fn free(&self) -> Semaphore<'_> {
        // SAFETY: as in `ready`.
        unsafe { Semaphore::from_raw(addr_of_mut!((*self.header()).free)) }
    }

    pub fn generation(&self) -> u64 {
        self.field::<AtomicU64>(offset_of!(Header, generation))
            .load(Ordering::Acquire)
    }

    /// Prepares a clean segment for a new transfer: new generation, no head, not cancelled.
    /// Only valid when the semaphores are at rest (`ready` = 0, `free` = slots).
    pub fn begin_transfer(&self, generation: u64) {
        // SAFETY: the first byte of the head area lies in our mapping; between transfers
        // nobody else writes it (the previous answerer is done, or cut off by a rebuild).
        unsafe {
            addr_of_mut!((*self.header()).head)
                .cast::<u8>()
                .write_volatile(0)
        };
        self.field::<AtomicU32>(offset_of!(Header, cancelled))
            .store(0, Ordering::Release);
        self.field::<AtomicU64>(offset_of!(Header, generation))
            .store(generation, Ordering::Release);
    }

    pub fn cancel(&self) {
        self.field::<AtomicU32>(offset_of!(Header, cancelled))
            .store(1, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.field::<AtomicU32>(offset_of!(Header, cancelled))
            .load(Ordering::Acquire)
            != 0
    }

    /// Writes the head of a transfer: read by the other side after the first `ready`,
    /// which publishes it.
    pub fn write_head(&self, head: &[u8; HEAD_CAPACITY]) {
        // SAFETY: the area lies in our mapping and is exactly HEAD_CAPACITY bytes; until
        // the next `ready` post only the writer of the transfer touches it.
        unsafe {
            ptr::copy_nonoverlapping(
                head.as_ptr(),
                addr_of_mut!((*self.header()).head).cast::<u8>(),
                HEAD_CAPACITY,
            )
        };
    }

    /// Copies the head area out, as the writer left it; the caller validates every byte.
    pub fn read_head(&self) -> [u8; HEAD_CAPACITY] {
        let mut head = [0u8; HEAD_CAPACITY];
        // SAFETY: the whole area lies in our mapping; we copy it to a local array. After
        // `ready` the writer no longer writes it (a faulty one could: torn bytes, which
        // validation then refuses, never a read outside the area).
        unsafe {
            ptr::copy_nonoverlapping(
                addr_of_mut!((*self.header()).head).cast::<u8>(),
                head.as_mut_ptr(),
                HEAD_CAPACITY,
            )
        };
        head
    }

    fn slot_len_field(&self, slot: usize) -> &AtomicU64 {
        assert!(slot < self.slots);
        // SAFETY: the table starts at HEADER_SIZE (8-aligned) and has `slots` entries, all
        // inside the mapping (checked at create/open); atomics may be shared by reference.
        unsafe { &*self.base.add(HEADER_SIZE + 8 * slot).cast::<AtomicU64>() }
    }

    /// The length the writer recorded for `slot`; unchecked, the reader validates it.
    pub fn slot_len(&self, slot: usize) -> u64 {
        self.slot_len_field(slot).load(Ordering::Acquire)
    }

    fn slot_ptr(&self, slot: usize) -> *mut u8 {
        assert!(slot < self.slots);
        // SAFETY: data_offset + slots * slot_capacity <= len (checked at create/open).
        unsafe {
            self.base
                .add(data_offset(self.slots) + slot * self.slot_capacity)
        }
    }

    /// Copies `src` into `slot` at byte `at`. The caller must own the slot (it took a unit
    /// of `free` for it). Panics if the range passes the slot's end.
    pub fn write_slot(&self, slot: usize, at: usize, src: &[u8]) {
        assert!(
            at.checked_add(src.len())
                .is_some_and(|end| end <= self.slot_capacity)
        );
        // SAFETY: the destination range lies inside the slot (asserted), inside our mapping;
        // `src` is a local buffer that cannot overlap shared memory we are writing. The
        // protocol gives us the slot exclusively until we post `ready`.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.slot_ptr(slot).add(at), src.len()) };
    }

    /// Records how many bytes `slot` holds, for the reader to check and copy.
    pub fn set_slot_len(&self, slot: usize, len: usize) {
        self.slot_len_field(slot)
            .store(len as u64, Ordering::Release);
    }

    /// Copies bytes `at..at + dst.len()` of `slot` into `dst`. The caller must own the slot
    /// (it took a unit of `ready` for it). Panics if the range passes the slot's end.
    pub fn read_slot(&self, slot: usize, at: usize, dst: &mut [u8]) {
        assert!(
            at.checked_add(dst.len())
                .is_some_and(|end| end <= self.slot_capacity)
        );
        // SAFETY: the source range lies inside the slot (asserted), inside our mapping;
        // `dst` is private memory. The protocol keeps the writer out of this slot until we
        // post `free`; if a faulty peer wrote anyway we would copy torn bytes, never read
        // outside the mapping.
        unsafe {
            ptr::copy_nonoverlapping(self.slot_ptr(slot).add(at), dst.as_mut_ptr(), dst.len())
        };
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe our own mapping, unmapped once, here. Nothing borrowed
        // from it outlives `self` (Semaphore views carry its lifetime).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Segment {
    /// Sends `prefix` (private bytes, such as an HTTP head) and then bytes `at..at + len` of
    /// `slot` to the socket `fd`, in one `sendmsg`, with no copy out of the segment on our
    /// side: the kernel copies straight from the mapping into the socket. The caller must
    /// own the slot (it took a unit of `ready` for it). Returns the bytes sent of both, as
    /// `sendmsg` does (the socket's send timeout may cut it short: `WouldBlock`).
    /// Panics if the range passes the slot's end.
    pub fn send_slot(
        &self,
        prefix: &[u8],
        slot: usize,
        at: usize,
        len: usize,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> io::Result<usize> {
        assert!(
            at.checked_add(len)
                .is_some_and(|end| end <= self.slot_capacity)
        );
        let mut iov = [
            libc::iovec {
                iov_base: prefix.as_ptr() as *mut libc::c_void,
                iov_len: prefix.len(),
            },
            libc::iovec {
                // SAFETY: the range lies inside the slot (asserted), inside our mapping.
                iov_base: unsafe { self.slot_ptr(slot).add(at) }.cast(),
                iov_len: len,
            },
        ];
        // SAFETY: an all-zero msghdr is valid (no name, no control data); we then point it
        // at our two iovecs.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        super::sys::retry_interrupted(|| {
            // SAFETY: `msg` describes two live buffers: `prefix`, borrowed for the call, and
            // a range of our mapping that the protocol keeps the writer out of until we
            // post `free` (a faulty writer could change the bytes under the kernel's copy:
            // torn data for the client, never memory outside the mapping). `fd` is an open
            // descriptor borrowed for the call; MSG_NOSIGNAL turns a gone peer into EPIPE
            // instead of SIGPIPE.
            unsafe {
                libc::sendmsg(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &msg,
                    libc::MSG_NOSIGNAL,
                )
            }
        })
    }
}

/// A 4 KiB segment of `slots` slots for a unit test, its name already unlinked: the
/// mapping lives on, and nothing is left in /dev/shm even if the test fails. `tag` keeps
/// the tests of one process apart.
#[cfg(test)]
pub(crate) fn unlinked_for_test(tag: &str, slots: usize) -> Segment {
    let name = format!("/{tag}.seg.{}.0", std::process::id());
    let seg = Segment::create(&name, 4096, slots).unwrap();
    unlink_segment(&name).unwrap();
    seg
}

/// Removes the shared-memory object `name`: the proxy's explicit step when it rebuilds a
/// segment or shuts down (a [`Segment`] only unmaps when dropped). Mappings of the object
/// stay valid until they are dropped. Returns whether it existed.
pub fn unlink_segment(name: &str) -> io::Result<bool> {
    shm_unlink(&check_name(name)?)
}

fn shm_unlink(name: &CString) -> io::Result<bool> {
    // SAFETY: `name` is NUL-terminated and alive for the call.
    super::sys::unlinked(unsafe { libc::shm_unlink(name.as_ptr()) })
}

fn truncate_and_map(fd: libc::c_int, size: usize) -> io::Result<*mut u8> {
    // SAFETY: `fd` is an open shm descriptor we own.
    if unsafe { libc::ftruncate(fd, size as libc::off_t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    map(fd, size)
}

fn file_size(fd: libc::c_int) -> io::Result<usize> {
    // SAFETY: zeroed `stat` is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as usize)
}

fn map(fd: libc::c_int, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping chosen by the kernel; it aliases nothing of ours.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}
