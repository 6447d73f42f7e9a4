//! Socket options std does not offer, for the HTTP server: the one place outside `src/ipc`
//! with `unsafe` code (each block says why it is sound).

#![allow(unsafe_code)]

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Makes closing `stream` reset the connection (SO_LINGER on, zero seconds) instead of
/// ending it with a FIN: how the proxy tells a client that a response was cut short, even
/// one whose body runs to the connection's close. std's `set_linger` is unstable.
pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a live, properly initialised `struct linger` and we pass its
    // exact size; the descriptor is an open socket borrowed from `stream` for the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
