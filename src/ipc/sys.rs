//! The OS calls under the channel that std does not offer: one retry loop for calls that a
//! signal can interrupt, whether a process is alive, and a handle that sees a process exit.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs one blocking call until a signal does not interrupt it, and turns its -1 into the
/// OS error: the one EINTR loop of the crate. Every blocking call here takes an absolute
/// deadline, so a retry waits only for what is left of its timeout. ETIMEDOUT becomes
/// `ErrorKind::TimedOut`, and EAGAIN from a call that must not block `WouldBlock`.
pub(super) fn retry_interrupted(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return Err(io::ErrorKind::TimedOut.into()),
            _ => return Err(err),
        }
    }
}

/// The absolute CLOCK_REALTIME instant `timeout` from now, as `mq_timedsend` wants it (no
/// message-queue call takes another clock; semaphores wait on CLOCK_MONOTONIC).
pub(super) fn realtime_deadline(timeout: Duration) -> libc::timespec {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(timeout);
    timespec(at)
}

/// Now on CLOCK_MONOTONIC, as a duration since its (arbitrary) origin.
pub(super) fn monotonic_now() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A duration since a clock's origin as the `timespec` the C calls take.
pub(super) fn timespec(at: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: at.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    }
}

/// Whether a process with this pid is alive: it exists (EPERM means it exists but is not
/// ours) and is not a zombie. A zombie has exited, only its parent has not reaped it yet
/// (a proxy killed in a container without an init, say): `kill(pid, 0)` still succeeds
/// on it, so its state is read from `/proc/PID/stat` too.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !matches!(process_state(pid), Some('Z' | 'X'))
}

/// A process's state letter from `/proc/PID/stat` (`R`, `S`, `Z` …), if /proc can say.
fn process_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_state(&stat)
}

/// The state field of a `/proc/PID/stat` line: the first field after the command name,
/// which is in parentheses and may itself hold spaces and parentheses, so the last `)`
/// ends it.
fn stat_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// A handle on one process that, unlike its pid, cannot come to mean another process once
/// it exits, and that reports a zombie (exited, not yet reaped by its parent) as exited,
/// where `kill(pid, 0)` still succeeds: a pidfd (Linux 5.3).
#[derive(Debug)]
pub(super) struct ProcessHandle {
    fd: OwnedFd,
}

impl ProcessHandle {
    /// # Errors
    /// ESRCH when no process has this pid (it is gone already), ENOSYS on kernels before
    /// 5.3 or under a seccomp policy that refuses the call.
    pub(super) fn open(pid: u32) -> io::Result<ProcessHandle> {
        let pid = libc::pid_t::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1;
        // it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just created for us and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(ProcessHandle { fd })
    }

    /// Whether the process has exited: a pidfd becomes readable then. One `poll` that does
    /// not block.
    pub(super) fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd on our stack and we pass a count of 1; a zero
        // timeout makes the call return at once.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_a_stat_line() {
        assert_eq!(stat_state("42 (webproxy) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) b) (c) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped: it stays a zombie until `wait`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_state(pid as libc::pid_t) != Some('Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_alive(pid));
        child.wait().unwrap();
    }
}
