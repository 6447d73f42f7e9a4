//! What std does not offer for the server's sockets: two socket options, readiness from
//! epoll, and a bounded wait for a socket to take more bytes. The one place outside
//! `src/ipc` with `unsafe` code; each block says why it is sound.
//!
//! Why epoll from libc rather than a crate: the waiter needs exactly three calls
//! (`epoll_create1`, `epoll_ctl`, `epoll_wait`), used in one way: every pool thread waits
//! on the same instance, and every registration is `EPOLLONESHOT`, so that an event goes
//! to one thread and the connection is re-armed only when that thread is done with it.
//! `mio`'s `Poll::poll` takes `&mut self`, so only one thread could wait; and the system
//! calls per request are this server's yardstick, so the calls that make them stand here,
//! in about a hundred lines, rather than behind another crate's abstractions.

#![allow(unsafe_code)]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Makes the socket reset the connection when it is closed, instead of ending it with a
/// FIN: for a response cut short, so that no client takes a partial body for a whole one.
pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set(
        stream.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        &linger,
    )
}

/// Sets TCP_NODELAY on the listening socket, which accepted sockets inherit on Linux: one
/// call per listener instead of one per connection.
pub fn nodelay_for_accepted(listener: &TcpListener) -> io::Result<()> {
    let on: libc::c_int = 1;
    set(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &on,
    )
}

fn set<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised value of the type the option takes (the
    // callers above pass `struct linger` and `int`), and we pass its exact size; `fd` is
    // an open socket borrowed from its owner for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits at most `limit` for `stream` to take more bytes; whether it will.
///
/// # Errors
/// `poll` failed (not for a signal: that is taken as "not yet").
pub fn wait_writable(stream: &TcpStream, limit: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = limit.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `fd` is one initialised `pollfd` that lives across the call, and we pass a
    // count of 1; the descriptor is an open socket borrowed for the call.
    let rc = unsafe { libc::poll(&mut fd, 1, millis) };
    match rc {
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(false),
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        // POLLERR or POLLHUP count as writable: the next write says what went wrong.
        _ => Ok(true),
    }
}

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes to read (or the peer's close).
    Read,
    /// Room to write.
    Write,
}

/// An epoll instance whose registrations are all one-shot: each readiness is reported to
/// one waiting thread, and the descriptor reports nothing more until it is re-armed.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness report: the token the descriptor was registered with.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: u64,
}

impl Epoll {
    /// # Errors
    /// The kernel refused a new instance (out of descriptors).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the result is a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, flags: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: flags,
            u64: token,
        };
        // SAFETY: `event` is an initialised epoll_event that lives across the call (the
        // kernel copies it); both descriptors are open: ours, and the caller's borrowed.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn flags(interest: Interest) -> u32 {
        let what = match interest {
            Interest::Read => libc::EPOLLIN | libc::EPOLLRDHUP,
            Interest::Write => libc::EPOLLOUT,
        };
        (what | libc::EPOLLONESHOT) as u32
    }

    /// Registers `fd` under `token`, armed for `interest`.
    ///
    /// # Errors
    /// The descriptor is already registered, or the kernel is out of memory.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            token,
            Self::flags(interest),
        )
    }

    /// Registers `fd` under `token`, reported to every waiter for as long as it is ready
    /// (level-triggered, not one-shot): for the stop signal, which every thread must see.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_for_all(&self, fd: &impl AsRawFd, token: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            token,
            libc::EPOLLIN as u32,
        )
    }

    /// Re-arms `fd` (registered before) for `interest`.
    ///
    /// # Errors
    /// The descriptor is not registered (closed meanwhile).
    pub fn rearm(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd.as_raw_fd(),
            token,
            Self::flags(interest),
        )
    }

    /// Waits for one readiness report, at most `timeout` (`None`: as long as it takes).
    /// `Ok(None)`: the time ran out, or a signal came.
    ///
    /// # Errors
    /// epoll_wait failed for another reason (a bad descriptor: a bug).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<Ready>> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let millis = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: `event` is one writable epoll_event that lives across the call, and we
        // pass a capacity of 1; the epoll descriptor is ours and open.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), &mut event, 1, millis) };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(None),
            -1 => Err(io::Error::last_os_error()),
            0 => Ok(None),
            _ => Ok(Some(Ready { token: event.u64 })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_one_shot_registration_reports_once_until_rearmed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.add(&server, 7, Interest::Read).unwrap();
        let short = Some(Duration::from_millis(20));
        assert!(epoll.wait(short).unwrap().is_none(), "nothing to read yet");
        client.write_all(b"x").unwrap();
        assert_eq!(epoll.wait(short).unwrap().map(|r| r.token), Some(7));
        assert!(epoll.wait(short).unwrap().is_none(), "one-shot: not again");
        epoll.rearm(&server, 7, Interest::Read).unwrap();
        assert_eq!(epoll.wait(short).unwrap().map(|r| r.token), Some(7));
        epoll.rearm(&server, 8, Interest::Write).unwrap();
        assert_eq!(epoll.wait(short).unwrap().map(|r| r.token), Some(8));
        assert!(wait_writable(&server, Duration::from_millis(20)).unwrap());
    }
}
