//! `webproxy --spawn-cache`: run shmcached as a child for a one-command setup.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::ipc::queue::MessageQueue;
use crate::ipc::{queue_name, sys};

/// A shmcached child process, stopped with SIGTERM (so it unlinks its queue) when dropped.
pub struct CacheChild {
    child: Child,
}

/// How often to look for the child's queue or exit while it starts or stops.
const POLL: Duration = Duration::from_millis(20);

impl CacheChild {
    /// Starts `shmcached --name NAME -c PRELOAD` from the directory of our own executable
    /// and waits (at most `startup`) until its queue exists, so the first requests can hit.
    pub fn spawn(name: &str, preload: &Path, startup: Duration) -> Result<CacheChild, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("locating webproxy: {e}"))?
            .with_file_name("shmcached");
        if !exe.is_file() {
            return Err(format!(
                "--spawn-cache needs shmcached at {}; build it with `cargo build --release --bins`",
                exe.display()
            ));
        }
        let child = Command::new(&exe)
            .arg("--name")
            .arg(name)
            .arg("--cache")
            .arg(preload)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let mut child = CacheChild { child };
        let deadline = Instant::now() + startup;
        while MessageQueue::open(&queue_name(name)).is_err() {
            if let Ok(Some(status)) = child.child.try_wait() {
                return Err(format!("shmcached exited at start: {status}"));
            }
            if Instant::now() > deadline {
                log::warn!("shmcached is not ready yet; serving without it meanwhile");
                break;
            }
            std::thread::sleep(POLL);
        }
        Ok(child)
    }
}

impl Drop for CacheChild {
    fn drop(&mut self) {
        if let Err(e) = sys::terminate(self.child.id()) {
            log::warn!("stopping shmcached: {e}");
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
