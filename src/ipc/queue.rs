//! A POSIX message queue: the request channel from proxies to the cache.
//!
//! [`MessageQueue`] is an RAII handle, as in posixmq: dropping it closes the descriptor and
//! nothing else. Removing the name is a separate, explicit call
//! ([`unlink`](MessageQueue::unlink)) that the owner makes at shutdown, so that no handle
//! removes a queue by accident (a test's, a clone's, another process's under the same
//! name). Blocking calls retry EINTR in `sys::retry_interrupted`, and all but the test
//! helper [`MessageQueue::receive`] take a timeout.

use std::ffi::CString;
use std::io;
use std::time::Duration;

use super::check_name;
use super::sys::{realtime_deadline, retry_interrupted};

/// An open message queue descriptor.
///
/// On Linux an `mqd_t` is a file descriptor and the kernel serialises concurrent sends and
/// receives on it, so one handle is shared by all threads of a process.
#[derive(Debug)]
pub struct MessageQueue {
    mqd: libc::mqd_t,
    name: CString,
    msg_size: usize,
}

impl MessageQueue {
    /// Creates the queue `name` for reading, replacing any queue of that name that a dead
    /// run left behind. Returns whether a stale queue was replaced.
    ///
    /// Whatever holds the name is unlinked, so only the process that holds the instance
    /// lock ([`InstanceLock`](super::lock::InstanceLock)) may call this for a live instance.
    ///
    /// `max_msgs` must be at most the kernel's `msg_max` (10 by default) and `msg_size` at
    /// most `msgsize_max` (8192) or the call fails with EINVAL for unprivileged users.
    ///
    /// # Errors
    /// EINVAL for a bad name or attributes, EACCES when the name belongs to another user,
    /// EMFILE/ENFILE/ENOSPC when descriptors or queues run out.
    pub fn create(name: &str, max_msgs: usize, msg_size: usize) -> io::Result<(Self, bool)> {
        let cname = check_name(name)?;
        let replaced = unlink(&cname)?;
        // SAFETY: mq_attr is a plain C struct of integers (with private padding), so the
        // all-zero value is valid; we then set the fields mq_open reads.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = max_msgs as libc::c_long;
        attr.mq_msgsize = msg_size as libc::c_long;
        // SAFETY: `cname` is a NUL-terminated string that outlives the call; with O_CREAT,
        // mq_open reads exactly two more arguments, a mode_t and a pointer to an mq_attr,
        // which we pass with those types.
        let mqd = unsafe {
            libc::mq_open(
                cname.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600 as libc::mode_t,
                &mut attr as *mut libc::mq_attr,
            )
        };
        if mqd == -1 {
            return Err(io::Error::last_os_error());
        }
        let queue = MessageQueue {
            mqd,
            name: cname,
            msg_size,
        };
        Ok((queue, replaced))
    }

    /// Opens an existing queue for sending.
    ///
    /// # Errors
    /// ENOENT when no cache has created it (yet), EACCES when it belongs to another user.
    pub fn open(name: &str) -> io::Result<Self> {
        Self::open_c(check_name(name)?)
    }

    fn open_c(cname: CString) -> io::Result<Self> {
        // SAFETY: `cname` is NUL-terminated and outlives the call; without O_CREAT mq_open
        // takes no further arguments.
        let mqd = unsafe { libc::mq_open(cname.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if mqd == -1 {
            return Err(io::Error::last_os_error());
        }
        // Built before the next call can fail, so that the descriptor is closed on error.
        let mut queue = MessageQueue {
            mqd,
            name: cname,
            msg_size: 0,
        };
        queue.msg_size = Self::attr(mqd)?.mq_msgsize as usize;
        Ok(queue)
    }

    fn attr(mqd: libc::mqd_t) -> io::Result<libc::mq_attr> {
        // SAFETY: zeroed mq_attr is valid (see `create`); mq_getattr fills it in.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `mqd` is an open queue descriptor and `attr` a valid out-pointer.
        if unsafe { libc::mq_getattr(mqd, &mut attr) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr)
    }

    /// Messages waiting in the queue now, and how many it holds (`mq_getattr`): a picture
    /// for the live view, stale as soon as it is taken.
    pub fn depth(&self) -> io::Result<(u64, u64)> {
        let attr = Self::attr(self.mqd)?;
        Ok((attr.mq_curmsgs as u64, attr.mq_maxmsg as u64))
    }

    /// The largest message this queue carries, fixed when it was created.
    pub fn msg_size(&self) -> usize {
        self.msg_size
    }

    /// A number that tells two queues of one name apart: the inode of the queue object.
    /// A cache that restarted created a new queue, so a proxy holding the old one can notice.
    pub fn identity(&self) -> io::Result<u64> {
        // SAFETY: zeroed `stat` is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: on Linux an mqd_t is a file descriptor, which fstat accepts.
        if unsafe { libc::fstat(self.mqd, &mut st) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.st_ino)
    }

    /// Sends one message, waiting at most `timeout` while the queue is full.
    ///
    /// # Errors
    /// `TimedOut` when the queue stayed full (no cache is reading it), EMSGSIZE when `msg`
    /// is longer than the queue's message size.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = realtime_deadline(timeout);
        retry_interrupted(|| {
            // SAFETY: `msg` is a valid buffer of `msg.len()` bytes and `deadline` a valid
            // timespec, both alive for the call; `self.mqd` is open.
            let rc = unsafe {
                libc::mq_timedsend(self.mqd, msg.as_ptr().cast(), msg.len(), 0, &deadline)
            };
            rc as isize
        })
        .map(drop)
    }

    /// Receives one message into `buf`, waiting at most `timeout` for one to arrive.
    /// Returns its length.
    ///
    /// # Errors
    /// `TimedOut` when no message came, EMSGSIZE when `buf` is shorter than
    /// [`msg_size`](Self::msg_size), EBADF when this handle was opened for sending only.
    pub fn receive_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let deadline = realtime_deadline(timeout);
        retry_interrupted(|| {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes and `deadline` a
            // valid timespec, both alive for the call; `self.mqd` is open.
            unsafe {
                libc::mq_timedreceive(
                    self.mqd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    std::ptr::null_mut(),
                    &deadline,
                )
            }
        })
    }

    /// Removes the queue's name, if it still leads to this queue: someone may have unlinked
    /// it and another process created a queue under the same name, which is not ours to
    /// remove. The queue itself lives on until its last descriptor is closed. Returns
    /// whether the name was removed.
    ///
    /// # Errors
    /// Those of `mq_unlink` other than ENOENT (EACCES: the name is another user's).
    pub fn unlink(&self) -> io::Result<bool> {
        if self.still_named() {
            unlink(&self.name)
        } else {
            Ok(false)
        }
    }

    /// Whether our name still leads to this queue.
    fn still_named(&self) -> bool {
        let Ok(named) = Self::open_c(self.name.clone()) else {
            return false;
        };
        // Inode numbers tell queues apart while both are open, as these two are.
        matches!((named.identity(), self.identity()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        // SAFETY: `self.mqd` is open and closed exactly once, here.
        unsafe { libc::mq_close(self.mqd) };
    }
}

fn unlink(name: &CString) -> io::Result<bool> {
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    super::sys::unlinked(unsafe { libc::mq_unlink(name.as_ptr()) })
}
