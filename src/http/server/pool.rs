//! The pool threads, the acceptor and the waiter's clock.
//!
//! - **Pool threads** (`-t` of them) wait on the waiter's epoll instance themselves, as
//!   followers: the kernel hands each readiness report to one of them, which carries that
//!   connection (reads the request, asks the service, writes the answer) and goes back to
//!   waiting. No thread hands a request to another, so a hit wakes one thread.
//! - The **acceptor** (the thread that calls [`Server::run`](super::Server::run)) takes
//!   new connections, refuses them past `--max-connections`, and parks the rest in the
//!   waiter.
//! - The **clock** visits the waiter a few times a second for deadlines, and, when every
//!   pool thread is busy, reads the requests that have arrived meanwhile: it queues up to
//!   `--max-pending` of them for the next free thread and refuses the rest with 503 at
//!   once (a pool thread that is busy cannot).

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::connection::{Conn, Next, READ_BUFFER};
use super::response::refusal;
use super::socket::Interest;
use super::waiter::{DOORBELL, STOP};
use super::{Service, Shared};

/// How often the clock looks at deadlines (and at a pool that is all busy): the
/// resolution of every timeout the waiter keeps.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// Pool threads still running; [`run_pool_thread`] counts itself out when it returns.
pub(super) type Running = Arc<AtomicUsize>;

/// Puts a connection where a turn left it: parked again, closed, or reset.
fn settle<S: Service>(shared: &Shared<S>, token: u64, conn: Box<Conn<S::Tag>>, next: Next) {
    match next {
        Next::Park(interest) => shared.waiter.park(token, conn, interest),
        Next::Close => {
            drop(conn);
            shared.waiter.forget(token);
            shared.service.connection(false);
        }
        Next::Reset => {
            conn.reset();
            drop(conn);
            shared.waiter.forget(token);
            shared.service.connection(false);
        }
    }
}

/// One pool thread: takes ready connections, one at a time, until the server is done.
pub(super) fn run_pool_thread<S: Service>(shared: &Shared<S>, running: &Running) {
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        // Announced idle before looking at the queue: the clock queues and then looks at
        // `idle`, so either this thread sees the connection or the clock rings for it.
        shared.waiter.idle.fetch_add(1, Ordering::SeqCst);
        let (token, conn) = match shared.waiter.next_queued() {
            Some(queued) => {
                shared.waiter.idle.fetch_sub(1, Ordering::SeqCst);
                queued
            }
            None => {
                let ready = shared.waiter.wait(None);
                shared.waiter.idle.fetch_sub(1, Ordering::SeqCst);
                match ready {
                    Ok(Some(STOP)) => break,
                    Ok(Some(DOORBELL)) => {
                        shared.waiter.answer_doorbell();
                        continue;
                    }
                    Ok(Some(token)) => match shared.waiter.take(token) {
                        Some(conn) => (token, conn),
                        None => continue,
                    },
                    Ok(None) => continue,
                    Err(e) => {
                        log::error!("waiting for connections: {e}");
                        std::thread::sleep(TICK);
                        continue;
                    }
                }
            }
        };
        let mut conn = conn;
        let next = conn.drive(shared, &mut buffer);
        settle(shared, token, conn, next);
    }
    running.fetch_sub(1, Ordering::SeqCst);
}

/// The acceptor: takes connections until the server stops.
pub(super) fn accept<S: Service>(shared: &Shared<S>, listener: &TcpListener) {
    let mut last_complaint: Option<Instant> = None;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and the like: the connection waits in the backlog; pause so
                // that a loop of failures does not spin, and say so now and then.
                if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!("accepting on {:?}: {e}", listener.local_addr());
                    last_complaint = Some(Instant::now());
                }
                std::thread::sleep(TICK);
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue; // already gone
        };
        if shared.waiter.open.load(Ordering::SeqCst) >= shared.config.max_connections {
            let why = "too many connections, try again";
            shared.service.refused(peer, None, 503, why);
            // A few hundred bytes into an empty send buffer: this does not block.
            let _ = stream.set_nonblocking(true);
            let _ = io::Write::write_all(&mut &stream, &refusal(503, why, true, false, false));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            continue;
        }
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        shared.service.connection(true);
        let conn = Box::new(Conn::new(stream, peer, shared.config.client_timeout));
        if let Err(e) = shared.waiter.admit(conn, Interest::Read) {
            log::warn!("parking a connection from {peer}: {e}");
            shared.service.connection(false);
        }
    }
}

/// The waiter's clock: deadlines, and requests that arrive while every pool thread is
/// busy. Returns when the server is done (`done` says so).
pub(super) fn run_clock<S: Service>(shared: &Shared<S>, done: impl Fn() -> bool) {
    let mut buffer = vec![0u8; READ_BUFFER];
    while !done() {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let stopping = shared.stopping.load(Ordering::SeqCst);
        let cutting = shared.cutting.load(Ordering::SeqCst);
        // At a stop, idle connections are closed at once: nothing of theirs is lost. Once
        // the drain time is over, everything parked is cut.
        let due = shared
            .waiter
            .take_where(|conn| cutting || conn.wait.due() <= now || (stopping && conn.is_idle()));
        for (token, mut conn) in due {
            let next = if cutting {
                conn.cut(shared)
            } else if stopping && conn.is_idle() {
                Next::Close
            } else {
                conn.expire(shared, now)
            };
            settle(shared, token, conn, next);
        }
        if shared.waiter.idle.load(Ordering::SeqCst) == 0 {
            read_ahead(shared, &mut buffer);
        } else if shared.waiter.queue_len() > 0 {
            shared.waiter.ring();
        }
    }
}

/// Every pool thread is busy: takes the connections that are ready now, and queues those
/// with a whole request (up to `--max-pending`) or a parked answer to write for the next
/// free thread; refuses the other requests with 503 at once.
fn read_ahead<S: Service>(shared: &Shared<S>, buffer: &mut [u8]) {
    while let Ok(Some(token)) = shared.waiter.wait(Some(Duration::ZERO)) {
        match token {
            // Not the clock's: put back for the pool threads (the stop stays ready).
            DOORBELL => {
                shared.waiter.answer_doorbell();
                shared.waiter.ring();
                return;
            }
            STOP => return,
            _ => {}
        }
        let Some(mut conn) = shared.waiter.take(token) else {
            continue;
        };
        if conn.is_writing() {
            shared.waiter.queue(token, conn);
            continue;
        }
        match conn.read_ahead(shared, buffer) {
            Ok(()) if shared.waiter.queue_len() < shared.config.max_pending => {
                shared.waiter.queue(token, conn);
            }
            Ok(()) => {
                let next = conn.refuse_ready(shared);
                settle(shared, token, conn, next);
            }
            Err(next) => settle(shared, token, conn, next),
        }
    }
}
