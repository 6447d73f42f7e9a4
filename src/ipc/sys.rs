//! The few other OS calls the servers need that std does not offer. They live here so that
//! every `unsafe` block of the crate is in `src/ipc`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(
    fd: libc::c_int,
    level: libc::c_int,
    opt: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T and we pass its exact size; `fd` is an open socket
    // borrowed from its owner for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// Sets TCP_NODELAY and the send/receive timeouts on a listening socket. Linux copies these
/// options to every accepted socket, which is the only way to reach the sockets that
/// tiny_http accepts internally. A zero timeout means "none".
pub fn tune_listener(
    listener: &TcpListener,
    read_timeout: Duration,
    write_timeout: Duration,
) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &(1 as libc::c_int),
    )?;
    for (opt, d) in [
        (libc::SO_RCVTIMEO, read_timeout),
        (libc::SO_SNDTIMEO, write_timeout),
    ] {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(fd, libc::SOL_SOCKET, opt, &tv)?;
    }
    Ok(())
}

/// Shuts down the TCP connection between `local` and `peer`, wherever in this process its
/// descriptor is.
///
/// tiny_http offers no way to abort a response whose body failed half-way: the connection
/// would stay open, the client would wait for the missing bytes, and the next thing written
/// on the socket would be taken as body. So the proxy finds the socket by its address pair
/// and shuts it down; the client sees the connection close short of Content-Length. This
/// scans the descriptor table, which is fine for an error path.
pub fn abort_connection(local: SocketAddr, peer: SocketAddr) -> io::Result<bool> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if sock_addr(fd, libc::getpeername) == Some(peer)
            && sock_addr(fd, libc::getsockname) == Some(local)
        {
            // SAFETY: shutdown takes any descriptor; on a socket it ends both directions for
            // every descriptor that refers to it, which is what we want.
            check(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) })?;
            return Ok(true);
        }
    }
    Ok(false)
}

type AddrFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sock_addr(fd: libc::c_int, get: AddrFn) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is large enough for any address and `len` says so; on a descriptor that
    // is not a socket the call just fails with ENOTSOCK.
    if unsafe {
        get(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } == -1
    {
        return None;
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into `ss`.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into `ss`.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
/// Each client connection costs tiny_http two descriptors.
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
