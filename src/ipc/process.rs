//! Calls on whole processes that both binaries need and std does not offer: the open-file
//! limit and a polite stop by pid. Here, not in `sys`, because they are part of no protocol:
//! `sys` holds what the channel itself stands on.

use std::io;

use super::sys::check;

pub use super::sys::process_alive;

/// This process's id, asked of the kernel once: every answer head carries it, and a
/// `getpid` per answer was a third of the cache's system calls per hit. Neither binary
/// forks without exec, so it cannot go stale.
pub fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
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
