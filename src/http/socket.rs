//! Socket options std does not offer, for the HTTP server: the one place outside `src/ipc`
//! with `unsafe` code (each block says why it is sound).

#![allow(unsafe_code)]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

/// Makes closing `stream` reset the connection (SO_LINGER on, zero seconds) instead of
/// ending it with a FIN: how the proxy tells a client that a response was cut short, even
/// one whose body runs to the connection's close. std's `set_linger` is unstable.
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

/// Sets TCP_NODELAY on a listening socket, which the sockets it accepts inherit on Linux:
/// for servers that never see their accepted sockets (tiny_http, in the benchmark's
/// `examples/tinyserve.rs`), which would otherwise stall each small response on Nagle's
/// algorithm and the client's delayed ACK (about 40 ms).
pub fn nodelay_for_accepted(listener: &TcpListener) -> io::Result<()> {
    let on: libc::c_int = 1;
    set(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &on,
    )
}

/// `setsockopt` of one plain value.
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
