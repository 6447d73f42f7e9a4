//! Signals to actions, the same in both processes (nginx's habits):
//!
//! | signal | action |
//! |---|---|
//! | TERM, INT | fast stop: transfers in flight get at most `--cache-timeout` |
//! | QUIT | graceful stop: stop taking work, let transfers finish within `--drain-timeout` |
//! | HUP | reload (what that means is the process's own) |
//! | USR1 | reopen log files |
//!
//! Signal handlers may not take locks or join threads, and here they do not even interrupt
//! blocking calls (signal-hook installs them with SA_RESTART). So a dedicated thread waits
//! for the signals, raises the [`Shutdown`] flag, and then runs the process's own actions,
//! which unblock its main loop by that loop's own means (the proxy's stopper connects to
//! its listener; the cache's loop waits on its queue with a short timeout and rechecks).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// How a process is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGQUIT: stop taking work and let what is in flight finish, within the drain timeout.
    Graceful,
    /// SIGTERM or SIGINT: give what is in flight the usual timeout at most, then go.
    Fast,
}

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const FAST: u8 = 2;

/// A flag raised when the process should stop, with how; cheap to clone and to check. A
/// graceful stop can still turn into a fast one (QUIT, then TERM), never the other way.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicU8>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a stop; a fast stop overrides a graceful one in progress.
    pub fn trigger(&self, how: Stop) {
        let value = match how {
            Stop::Graceful => GRACEFUL,
            Stop::Fast => FAST,
        };
        self.0.fetch_max(value, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst) != RUNNING
    }

    /// How the process is stopping, if it is.
    pub fn stop(&self) -> Option<Stop> {
        match self.0.load(Ordering::SeqCst) {
            RUNNING => None,
            GRACEFUL => Some(Stop::Graceful),
            _ => Some(Stop::Fast),
        }
    }
}

/// What a process does on each signal, called on the signal thread.
pub struct Actions {
    /// After `shutdown` was triggered: wake what must notice. Called again if a graceful
    /// stop turns into a fast one.
    pub stop: Box<dyn Fn(Stop) + Send>,
    /// SIGHUP.
    pub reload: Box<dyn Fn() + Send>,
    /// SIGUSR1.
    pub reopen: Box<dyn Fn() + Send>,
}

/// Registers TERM, INT, QUIT, HUP and USR1 and starts the thread that turns them into
/// `actions`. Call it before starting other threads, so that none of them runs with the
/// default (killing) disposition.
pub fn on_signals(shutdown: Shutdown, actions: Actions) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        log::info!("SIGHUP: reloading");
                        (actions.reload)();
                    }
                    SIGUSR1 => {
                        log::info!("SIGUSR1: reopening log files");
                        (actions.reopen)();
                    }
                    SIGQUIT if shutdown.is_triggered() => {
                        log::info!("SIGQUIT: already stopping");
                    }
                    SIGQUIT => {
                        log::info!("SIGQUIT: graceful stop, finishing transfers in flight");
                        shutdown.trigger(Stop::Graceful);
                        (actions.stop)(Stop::Graceful);
                    }
                    _ if shutdown.stop() == Some(Stop::Fast) => {
                        log::info!("{}: already stopping", name(sig));
                    }
                    _ => {
                        log::info!("{}: shutting down", name(sig));
                        shutdown.trigger(Stop::Fast);
                        (actions.stop)(Stop::Fast);
                    }
                }
            }
        })?;
    Ok(())
}

/// The name of a stop signal, for the log.
fn name(sig: i32) -> &'static str {
    if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
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
