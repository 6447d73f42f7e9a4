//! The instance lock: at most one live cache per instance name.
//!
//! A cache holds an exclusive `flock` on the shared-memory object `/NAME-lock` from before
//! it preloads until it exits, and creates (or replaces) the queue `/NAME.req` only while it
//! holds it. The kernel releases a `flock` when the last descriptor of the open file is
//! closed, also when the holder is killed, so a lock that can be taken has no live holder
//! and an object left by a killed cache is simply taken over. The object holds the holder's
//! pid as text, so that a refused cache can say who holds the name. It is never mapped.

use std::fmt;
use std::fs::{File, TryLockError};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use super::{check_name, lock_name, segment, sys};

/// How long a refused process keeps looking for the holder's pid in the object (see
/// [`InstanceLock::acquire`]) before it reports the instance held by an unknown pid.
const HOLDER_WAIT: Duration = Duration::from_secs(1);

/// The exclusive right to serve one instance name, held until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    object: String,
}

/// Why [`InstanceLock::acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// A live process holds the instance; its pid when the object says which.
    Held { instance: String, pid: Option<u32> },
    /// The lock object could not be opened, locked or written.
    Os { object: String, source: io::Error },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held {
                instance,
                pid: Some(pid),
            } => write!(
                f,
                "instance {instance} is already served by pid {pid} (it holds {}); \
                 stop that process or choose another --name",
                lock_name(instance)
            ),
            LockError::Held {
                instance,
                pid: None,
            } => write!(
                f,
                "instance {instance} is already served by another process (it holds {}, \
                 which does not say its pid); stop that process or choose another --name",
                lock_name(instance)
            ),
            LockError::Os { object, source } => write!(f, "instance lock {object}: {source}"),
        }
    }
}

impl std::error::Error for LockError {}

impl InstanceLock {
    /// Takes the lock of instance `instance`, creating its object or taking over one that a
    /// dead holder left, and writes our pid into it. Never waits for a live holder.
    ///
    /// # Errors
    /// [`LockError::Held`] when a live process holds it; [`LockError::Os`] when the object
    /// cannot be opened (EACCES: another user's) or written.
    pub fn acquire(instance: &str) -> Result<InstanceLock, LockError> {
        let object = lock_name(instance);
        let os = |source| LockError::Os {
            object: object.clone(),
            source,
        };
        let held = |pid| LockError::Held {
            instance: instance.to_owned(),
            pid,
        };
        let deadline = Instant::now() + HOLDER_WAIT;
        loop {
            let file = open(&object, libc::O_RDWR | libc::O_CREAT).map_err(os)?;
            match file.try_lock() {
                Ok(()) => {
                    // We may have opened the object just before its holder unlinked it on
                    // the way out. A lock on an unlinked object guards nothing (the next
                    // process creates a new one), so keep it only if the name still leads
                    // to the object we locked; else start over.
                    if !same_object(&file, &object).map_err(os)? {
                        continue;
                    }
                    let pid = format!("{}\n", std::process::id());
                    file.set_len(0)
                        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
                        .map_err(os)?;
                    return Ok(InstanceLock { file, object });
                }
                Err(TryLockError::WouldBlock) => {
                    // The holder writes its pid just after it takes the lock; read in
                    // between, the object is empty or still names the previous (dead)
                    // holder. Look again for a moment: the pid appears, or the lock is free.
                    if let Some(pid) = read_pid(&file) {
                        return Err(held(Some(pid)));
                    }
                    if Instant::now() >= deadline {
                        return Err(held(None));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::Error(e)) => return Err(os(e)),
            }
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock (the descriptor closes after this), and only
        // an object that is ours: the name could lead to another process's object only if
        // someone removed ours by hand, and that one must stay. A process that opened ours
        // before the unlink gets the lock only once it is unlinked, and then starts over
        // (see `acquire`).
        if same_object(&self.file, &self.object).unwrap_or(false)
            && let Err(e) = segment::unlink_segment(&self.object)
        {
            log::warn!("removing the instance lock {}: {e}", self.object);
        }
    }
}

/// The live process that the lock object of `instance` names, if any.
///
/// For messages only: the text outlives a killed holder and its pid may be reused, so only
/// the lock itself decides who serves an instance. This takes no lock, so it never gets in
/// the way of a cache that is starting.
pub fn holder(instance: &str) -> Option<u32> {
    read_pid(&open(&lock_name(instance), libc::O_RDONLY).ok()?)
}

/// The pid written in a lock object, if it is one of a live process.
fn read_pid(file: &File) -> Option<u32> {
    let mut buf = [0u8; 16];
    let n = file.read_at(&mut buf, 0).ok()?;
    let pid: u32 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
    Some(pid).filter(|&pid| sys::process_alive(pid))
}

/// Opens the shared-memory object `object` (mode 0600 if `flags` creates it).
fn open(object: &str, flags: libc::c_int) -> io::Result<File> {
    let cname = check_name(object)?;
    // SAFETY: `cname` is NUL-terminated and alive for the call; the mode is read only when
    // `flags` holds O_CREAT.
    let fd = unsafe { libc::shm_open(cname.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: shm_open just returned `fd`, an open descriptor that nothing else owns; the
    // File closes it once.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Whether the name `object` leads to the object open as `file`.
fn same_object(file: &File, object: &str) -> io::Result<bool> {
    let ours = file.metadata()?;
    match open(object, libc::O_RDONLY) {
        Ok(named) => {
            let named = named.metadata()?;
            Ok(named.dev() == ours.dev() && named.ino() == ours.ino())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(instance: &str) -> bool {
        std::path::Path::new(&format!("/dev/shm{}", lock_name(instance))).exists()
    }

    #[test]
    fn a_held_instance_is_refused_with_the_holders_pid() {
        let instance = format!("locktest{}-held", std::process::id());
        let lock = InstanceLock::acquire(&instance).unwrap();
        assert_eq!(holder(&instance), Some(std::process::id()));
        // flock belongs to the open file, so a second open in this process is refused too.
        let err = InstanceLock::acquire(&instance).unwrap_err();
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == std::process::id()),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&instance) && text.contains(&format!("pid {}", std::process::id())));
        drop(lock);
        assert!(!exists(&instance), "unlinked at drop");
        assert_eq!(holder(&instance), None);
        drop(InstanceLock::acquire(&instance).unwrap());
        assert!(!exists(&instance));
    }

    #[test]
    fn an_object_left_by_a_dead_holder_is_taken_over() {
        let instance = format!("locktest{}-stale", std::process::id());
        // What a killed cache leaves: the object, with its pid, and no lock on it.
        let stale = open(&lock_name(&instance), libc::O_RDWR | libc::O_CREAT).unwrap();
        stale.write_all_at(b"999999999\n", 0).unwrap();
        drop(stale);
        assert_eq!(holder(&instance), None, "a dead pid is nobody");
        let lock = InstanceLock::acquire(&instance).unwrap();
        assert_eq!(holder(&instance), Some(std::process::id()));
        drop(lock);
        assert!(!exists(&instance));
    }

    #[test]
    fn drop_leaves_an_object_that_is_not_ours() {
        let instance = format!("locktest{}-other", std::process::id());
        let object = lock_name(&instance);
        let lock = InstanceLock::acquire(&instance).unwrap();
        // Someone removes ours and creates another object under the name.
        segment::unlink_segment(&object).unwrap();
        drop(open(&object, libc::O_RDWR | libc::O_CREAT).unwrap());
        drop(lock);
        assert!(exists(&instance), "another object is left alone");
        segment::unlink_segment(&object).unwrap();
    }
}
