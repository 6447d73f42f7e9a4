//! Turning SIGINT and SIGTERM into an orderly stop (and SIGHUP into a reload).
//!
//! Signal handlers may not take locks or join threads, and here they do not even interrupt
//! blocking calls (signal-hook installs them with SA_RESTART). So a dedicated thread waits
//! for the signal, raises a [`Shutdown`] flag, and then runs a `wake` action that unblocks
//! the main loop by the loop's own means: `Server::unblock` for the proxy. The cache needs
//! none: its main loop waits on the queue with a short timeout and rechecks the flag.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A flag raised once when the process should stop; cheap to clone and to check.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Registers SIGINT and SIGTERM (and SIGHUP when `reload` is given) and starts the thread
/// that, on the first SIGINT or SIGTERM, triggers `shutdown` and then calls `wake`, and on
/// each SIGHUP calls `reload`. Call it before starting other threads, so that none of them
/// runs with the default (killing) disposition.
pub fn on_signals(
    shutdown: Shutdown,
    wake: impl Fn() + Send + 'static,
    reload: Option<Box<dyn Fn() + Send>>,
) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    if reload.is_some() {
        signals.add_signal(SIGHUP)?;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    log::info!("SIGHUP: reloading");
                    if let Some(reload) = &reload {
                        reload();
                    }
                    continue;
                }
                log::info!("signal {sig}: shutting down");
                shutdown.trigger();
                wake();
                break;
            }
        })?;
    Ok(())
}

/// Waits for `workers` to finish their jobs, at most `limit`. Returns how many jobs were
/// still running when it stopped waiting (0: all done).
pub fn join_within(workers: &threadpool::ThreadPool, limit: std::time::Duration) -> usize {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watched = workers.clone();
    std::thread::spawn(move || {
        watched.join();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) => 0,
        Err(_) => workers.active_count(),
    }
}
