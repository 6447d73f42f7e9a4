//! `webproxy --spawn-cache`: run shmcached as a child for a one-command setup.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::ipc::client::queue_exists;
use crate::ipc::{lock, lock_name, process};

/// A shmcached child process, stopped with SIGTERM (so it unlinks its queue) when dropped.
pub struct CacheChild {
    child: Child,
}

/// How often to look for the child's queue or exit while it starts or stops.
const POLL: Duration = Duration::from_millis(20);

/// How long past the startup wait to wait for the child to take the instance lock or exit.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

impl CacheChild {
    /// Starts `shmcached --name NAME [-c PRELOAD]` from the directory of our own executable
    /// and waits (at most `startup`) until it holds the instance and its queue exists, so
    /// the first requests can hit.
    ///
    /// # Errors
    /// When shmcached cannot be started or exits at start. If another live cache holds the
    /// instance (another proxy's, say), the message names its pid: this proxy must not run
    /// then, as it would serve through a cache it does not own and stop nothing at exit.
    ///
    /// The child is in a process group of its own, so that signals from the terminal (Ctrl-C,
    /// Ctrl-\, a hang-up) reach the proxy alone, which stops the child when it is done with
    /// it, or passes the reload on; and it gets SIGTERM if the proxy dies in any other way
    /// (see [`process::die_with_parent`]), so it is never left behind.
    /// Call this from the main thread: the kernel sends that signal when the thread that
    /// started the child exits.
    pub fn spawn(
        name: &str,
        preload: Option<&Path>,
        startup: Duration,
    ) -> Result<CacheChild, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("locating webproxy: {e}"))?
            .with_file_name("shmcached");
        if !exe.is_file() {
            return Err(format!(
                "--spawn-cache needs shmcached beside webproxy, at {}; build both with \
                 `cargo build --release --bins` or install both with `cargo install --path .`",
                exe.display()
            ));
        }
        let mut command = Command::new(&exe);
        command.arg("--name").arg(name).process_group(0);
        if let Some(preload) = preload {
            command.arg("--cache").arg(preload);
        }
        let child = process::die_with_parent(&mut command)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let mut child = CacheChild { child };
        let pid = child.child.id();
        let deadline = Instant::now() + startup;
        loop {
            // Ready when our child holds the instance and the queue is there. The queue
            // alone proves nothing: it may be another proxy's live cache's, which our child
            // is about to be refused for.
            let holds = lock::holder(name) == Some(pid);
            if holds && queue_exists(name) {
                break;
            }
            if let Ok(Some(status)) = child.child.try_wait() {
                return Err(match lock::holder(name) {
                    Some(holder) => format!(
                        "instance {name} is already served by the cache with pid {holder} \
                         (it holds {}), so our shmcached exited at start ({status}); \
                         stop that cache or choose another --name",
                        lock_name(name)
                    ),
                    None => format!("shmcached --name {name} exited at start: {status}"),
                });
            }
            let now = Instant::now();
            if holds && now > deadline {
                // Still preloading: the proxy finds its queue when it appears.
                log::warn!("shmcached is not ready yet; serving without it meanwhile");
                break;
            }
            // Until it holds the instance it may still be refused, and we must not run
            // then; it takes the lock (or gives up) right after it starts, so this is long.
            if now > deadline + LOCK_PATIENCE {
                return Err(format!(
                    "shmcached (pid {pid}) did not take instance {name} ({}) in time",
                    lock_name(name)
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(child)
    }
}

impl CacheChild {
    /// The child's pid. It stays the child's until this is dropped: a child that exits is
    /// not reaped before, so its pid cannot be given to another process meanwhile.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CacheChild {
    fn drop(&mut self) {
        // Once reaped (it exited at start), its pid may already be another process's.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Err(e) = process::terminate(self.child.id()) {
            log::warn!("stopping shmcached (pid {}): {e}", self.child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        log::warn!("shmcached did not stop; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
