//! A process-shared POSIX semaphore that lives inside a shared mapping.
//!
//! The semaphore is not a Rust value that can be moved: `sem_init(pshared = 1)` ties it to
//! the address where it was initialised, and both processes reach it through their own
//! mapping of the same segment. So [`Semaphore`] is only a raw pointer into that mapping;
//! its lifetime is the lifetime of the [`Segment`](super::segment::Segment) that hands it out.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use super::sys::{monotonic_now, retry_interrupted, timespec};

// glibc has had sem_clockwait since 2.30; the libc crate does not declare it for Linux.
unsafe extern "C" {
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Why a wait ended without the semaphore being taken.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The timeout passed first: the peer is slow, stuck or dead.
    TimedOut,
    /// The caller's check between slices said to stop waiting (see
    /// [`Semaphore::wait_checking`]).
    GaveUp,
    /// `sem_timedwait` failed for another reason (EINVAL: the memory is not a semaphore).
    Os(i32),
}

/// A borrowed view of one `sem_t` inside a mapping.
#[derive(Clone, Copy)]
pub struct Semaphore<'a> {
    sem: *mut libc::sem_t,
    _mapping: PhantomData<&'a ()>,
}

impl<'a> Semaphore<'a> {
    /// # Safety
    /// `sem` must point to a `sem_t` inside a mapping that stays mapped for `'a`.
    pub(super) unsafe fn from_raw(sem: *mut libc::sem_t) -> Self {
        Semaphore {
            sem,
            _mapping: PhantomData,
        }
    }

    /// Initialises the semaphore in place, shared between processes, with `value`.
    ///
    /// Only the segment's creator calls this, before it writes the segment's magic: a peer
    /// refuses a segment without its magic, so nobody can be using the semaphore yet.
    pub(super) fn init(&self, value: u32) -> io::Result<()> {
        // SAFETY: `self.sem` points into a live mapping (invariant of `from_raw`), is aligned
        // for sem_t (the header is `repr(C)` at a page-aligned base) and is not in use by any
        // other thread or process yet: the segment has no magic until this is done (above).
        if unsafe { libc::sem_init(self.sem, 1, value) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Releases one unit ("this slot is yours now").
    ///
    /// The only error POSIX names is EOVERFLOW (value past SEM_VALUE_MAX), which a peer could
    /// cause only by posting wildly; it is reported, not ignored.
    pub fn post(&self) -> io::Result<()> {
        // SAFETY: `self.sem` points to a semaphore initialised by `init` in a live mapping;
        // sem_post is async-signal-safe and works on memory another process also maps.
        if unsafe { libc::sem_post(self.sem) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The current count, for watching the channel: by the time the caller looks at it the
    /// other side may have moved it, so it is a picture, never a basis for a decision.
    pub fn value(&self) -> io::Result<u32> {
        let mut value: libc::c_int = 0;
        // SAFETY: as in `post`; `value` is a valid out-pointer on our stack.
        if unsafe { libc::sem_getvalue(self.sem, &mut value) } == 0 {
            // Linux reports 0, never a negative count of waiters.
            Ok(value.max(0) as u32)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Takes one unit, waiting at most `timeout`. EINTR is retried with the same deadline.
    ///
    /// Data the peer wrote before its matching `post` is visible after this returns: POSIX
    /// lists both calls among those that synchronise memory.
    /// The deadline is on CLOCK_MONOTONIC, so a step of the wall clock neither stretches
    /// nor cuts the wait.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.wait_until(monotonic_now().saturating_add(timeout))
    }

    /// Like [`wait_timeout`](Self::wait_timeout), but a wait that outlasts `slice` asks
    /// `give_up` after each slice and ends with [`WaitError::GaveUp`] when it says so.
    ///
    /// A unit that is there at once (or within the first slice) is taken with exactly the
    /// calls of `wait_timeout`: only a wait that is already long pays for the checks. When
    /// `give_up` says yes, one last non-blocking try still takes a unit posted just before:
    /// a peer that posted and then died has its last post honoured.
    pub(super) fn wait_checking(
        &self,
        timeout: Duration,
        slice: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<(), WaitError> {
        let mut now = monotonic_now();
        let end = now.saturating_add(timeout);
        loop {
            let until = now.saturating_add(slice).min(end);
            match self.wait_until(until) {
                Err(WaitError::TimedOut) if until < end => {}
                other => return other,
            }
            if give_up() {
                return match self.try_take() {
                    Ok(()) => Ok(()),
                    Err(WaitError::TimedOut) => Err(WaitError::GaveUp),
                    Err(e) => Err(e),
                };
            }
            now = monotonic_now();
        }
    }

    /// Takes one unit, waiting until the CLOCK_MONOTONIC instant `at`.
    fn wait_until(&self, at: Duration) -> Result<(), WaitError> {
        let deadline = timespec(at);
        // SAFETY: as in `post`; `deadline` is a valid timespec on our stack, and
        // sem_clockwait takes exactly these argument types (glibc 2.30, `sem.h`).
        retry_interrupted(|| unsafe {
            sem_clockwait(self.sem, libc::CLOCK_MONOTONIC, &deadline) as isize
        })
        .map(drop)
        .map_err(WaitError::from)
    }

    /// Takes one unit if there is one, without waiting (`TimedOut` if there is none).
    fn try_take(&self) -> Result<(), WaitError> {
        // SAFETY: as in `post`.
        match retry_interrupted(|| unsafe { libc::sem_trywait(self.sem) as isize }) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(WaitError::TimedOut),
            other => other.map(drop).map_err(WaitError::from),
        }
    }
}

impl From<io::Error> for WaitError {
    fn from(e: io::Error) -> WaitError {
        match (e.kind(), e.raw_os_error()) {
            (io::ErrorKind::TimedOut, _) => WaitError::TimedOut,
            (_, errno) => WaitError::Os(errno.unwrap_or(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::segment::unlinked_for_test;

    #[test]
    fn waits_time_out_and_posts_are_taken() {
        let seg = unlinked_for_test("semtest0", 2);
        let started = std::time::Instant::now();
        assert_eq!(
            seg.ready().wait_timeout(Duration::from_millis(30)),
            Err(WaitError::TimedOut)
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
        seg.ready().post().unwrap();
        assert_eq!(seg.ready().wait_timeout(Duration::from_secs(5)), Ok(()));
        // `free` starts at the slot count.
        for _ in 0..2 {
            assert_eq!(seg.free().wait_timeout(Duration::ZERO), Ok(()));
        }
        assert_eq!(
            seg.free().wait_timeout(Duration::ZERO),
            Err(WaitError::TimedOut)
        );
    }

    #[test]
    fn long_waits_check_between_slices() {
        let seg = unlinked_for_test("semtest1", 1);
        let (slice, long) = (Duration::from_millis(20), Duration::from_secs(5));
        let mut asked = 0;
        // A unit that is there is taken without asking.
        seg.ready().post().unwrap();
        assert_eq!(
            seg.ready().wait_checking(long, slice, || {
                asked += 1;
                true
            }),
            Ok(())
        );
        assert_eq!(asked, 0);
        // A long wait asks after each slice and stops when told to.
        let started = std::time::Instant::now();
        let result = seg.ready().wait_checking(long, slice, || {
            asked += 1;
            asked == 3
        });
        assert_eq!(result, Err(WaitError::GaveUp));
        assert!(started.elapsed() >= slice * 3 && started.elapsed() < long);
        // A post that lands just before the decision to give up is still taken.
        let ready = seg.ready();
        assert_eq!(
            ready.wait_checking(long, slice, || ready.post().is_ok()),
            Ok(())
        );
        // Without a reason to stop, the wait runs its timeout and ends there.
        let started = std::time::Instant::now();
        let timeout = Duration::from_millis(70);
        assert_eq!(
            seg.ready().wait_checking(timeout, slice, || false),
            Err(WaitError::TimedOut)
        );
        assert!(started.elapsed() >= timeout && started.elapsed() < long);
    }
}
