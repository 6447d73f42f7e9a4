//! Calls on whole processes that both binaries need and std does not offer: the open-file
//! limit, signals by pid, and a child that dies with its parent. Here, not in `sys`,
//! because they are part of no protocol: `sys` holds what the channel itself stands on.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

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
    signal(pid, libc::SIGTERM)
}

/// Sends `sig` to the process `pid` (never to a group: pid 0 and negative pids are
/// refused).
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // kill(0, ...) would signal our own process group.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, sig) })
}

/// Makes the child that `command` starts receive SIGTERM when this process dies, however
/// it dies, SIGKILL included (`PR_SET_PDEATHSIG`): a cache started by the proxy then never
/// outlives it, and stops in its orderly way (unlinking its queue and lock).
///
/// The kernel sends the signal when the *thread* that forked the child exits, not the
/// process: call `spawn` from a thread that lives as long as the process (the main one).
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY of the closure (what `pre_exec` asks): it runs in the child between fork and
    // exec, so it may only make async-signal-safe calls; getpid, getppid and prctl are
    // plain system calls, and it allocates nothing and takes no lock.
    let parent = std::process::id();
    let set = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) })?;
        // The parent may have died before the prctl: then the signal will never come.
        // SAFETY: getppid has no preconditions.
        if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
            // No message: building one would allocate, which is not safe here.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls (see above).
    unsafe { command.pre_exec(set) }
}
