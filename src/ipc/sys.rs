//! The few OS calls the servers need that std does not offer: the open-file limit,
//! signals to a process by pid, a handle that sees a process exit, and a socket that
//! resets when closed. They live here so that every `unsafe` block of the
//! crate is in `src/ipc`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes closing `stream` reset the connection (SO_LINGER on, zero seconds) instead of
/// ending it with a FIN: how the proxy tells a client that a response was cut short, even
/// one whose body runs to the connection's close. std has no stable call for this.
pub fn reset_on_close(stream: &std::net::TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a live, properly initialised `struct linger` and we pass its
    // exact size; the descriptor is an open socket borrowed from `stream` for the call.
    check(unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
/// The proxy needs a descriptor per client connection, and one more while it streams from
/// secondary storage.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit with cur <= max.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// Whether a process with this pid exists (EPERM means it exists but is not ours).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

/// Sends SIGTERM to `pid`: the polite stop, which lets the process unlink what it owns.
pub fn terminate(pid: u32) -> io::Result<()> {
    // kill(0, ...) would signal our own process group.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, libc::SIGTERM) })
}
