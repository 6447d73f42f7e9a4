//! The waiter: where a connection is while no thread carries it.
//!
//! Every connection that waits (for its next request, for the rest of one, for room to
//! write a parked answer, or for its lingering close) is **parked** here: its state sits
//! in a table, and its socket is registered one-shot in an epoll instance that every idle
//! pool thread waits on. When the socket is ready, the kernel wakes exactly one of those
//! threads, which **takes** the connection out of the table, carries it as far as it can
//! go without waiting for the client, and parks it again (re-arming the registration) or
//! closes it. An idle connection costs its table entry and its socket, no thread.
//!
//! A table entry is named by a token: its index and a generation that changes whenever
//! the entry is freed. A readiness report for a connection closed meanwhile (and whose
//! index now names another) carries the old generation and is ignored.
//!
//! The waiter's clock (see `pool::run_clock`) visits the table a few times a second for the
//! deadlines: an idle connection closed, a request that took too long answered 408, a
//! parked answer whose client reads too slowly cut.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::connection::Conn;
use super::socket::{Epoll, Interest};

/// The token of the stop signal: ready for every waiter once the server is done.
pub(super) const STOP: u64 = u64::MAX;
/// The token of the doorbell: rung when a connection is queued for a pool thread while
/// threads may be asleep in `epoll_wait` (see [`Waiter::queue`]).
pub(super) const DOORBELL: u64 = u64::MAX - 1;

/// A table entry's state.
enum Entry<T> {
    Vacant,
    /// A thread (or the clock, or the queue) has the connection.
    Taken,
    /// In the table. `armed`: its registration is armed, so the clock may take it too.
    /// Until then only the thread its readiness report goes to may: the clock could close
    /// it while the parking thread re-arms, and the descriptor's number, reused by a new
    /// connection, would then be re-armed under this entry's token.
    Parked {
        conn: Box<Conn<T>>,
        armed: bool,
    },
}

struct Slot<T> {
    generation: u32,
    /// Counts parkings, so that a parker marks armed only its own parking.
    parkings: u64,
    entry: Entry<T>,
}

struct Table<T> {
    slots: Vec<Slot<T>>,
    vacant: Vec<u32>,
}

fn token(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn split(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

/// Connections waiting for their sockets, and the queue of those handed over without a
/// readiness report.
pub(super) struct Waiter<T> {
    epoll: Epoll,
    table: Mutex<Table<T>>,
    /// Connections taken off the table for a pool thread by the clock (when every pool
    /// thread was busy): served before any new readiness.
    queue: Mutex<VecDeque<(u64, Box<Conn<T>>)>>,
    /// Pool threads waiting in `epoll_wait` now.
    pub idle: AtomicUsize,
    /// Connections in the table (parked or taken).
    pub open: AtomicUsize,
    doorbell: (UnixStream, UnixStream),
    stop: (UnixStream, UnixStream),
}

impl<T> Waiter<T> {
    /// # Errors
    /// Out of descriptors for the epoll instance or its two signalling pairs.
    pub fn new() -> io::Result<Waiter<T>> {
        let epoll = Epoll::new()?;
        let doorbell = UnixStream::pair()?;
        let stop = UnixStream::pair()?;
        doorbell.0.set_nonblocking(true)?;
        doorbell.1.set_nonblocking(true)?;
        epoll.add(&doorbell.1, DOORBELL, Interest::Read)?;
        epoll.add_for_all(&stop.1, STOP)?;
        Ok(Waiter {
            epoll,
            table: Mutex::new(Table {
                slots: Vec::new(),
                vacant: Vec::new(),
            }),
            queue: Mutex::default(),
            idle: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            doorbell,
            stop,
        })
    }

    fn table(&self) -> MutexGuard<'_, Table<T>> {
        // A panic while holding this lock leaves entries, each whole: still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self) -> MutexGuard<'_, VecDeque<(u64, Box<Conn<T>>)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks a new connection, armed for `interest`.
    ///
    /// # Errors
    /// epoll would not take the socket (out of memory); the connection is dropped.
    pub fn admit(&self, conn: Box<Conn<T>>, interest: Interest) -> io::Result<()> {
        let index = {
            let mut table = self.table();
            match table.vacant.pop() {
                Some(index) => index,
                None => {
                    table.slots.push(Slot {
                        generation: 0,
                        parkings: 0,
                        entry: Entry::Taken,
                    });
                    (table.slots.len() - 1) as u32
                }
            }
        };
        let generation = self.table().slots[index as usize].generation;
        self.open.fetch_add(1, Ordering::SeqCst);
        let token = token(index, generation);
        let fd = conn.socket().as_raw_fd();
        let parking = self.put(token, conn);
        match self.epoll.add(&fd, token, interest) {
            Ok(()) => {
                self.armed(token, parking);
                Ok(())
            }
            Err(e) => {
                drop(self.take(token));
                self.forget(token);
                Err(e)
            }
        }
    }

    /// Takes the connection `token` names, if it is in the table (not taken by another
    /// thread, not closed since the report).
    pub fn take(&self, token: u64) -> Option<Box<Conn<T>>> {
        let (index, generation) = split(token);
        let mut table = self.table();
        let slot = table.slots.get_mut(index)?;
        if slot.generation != generation || !matches!(slot.entry, Entry::Parked { .. }) {
            return None;
        }
        match std::mem::replace(&mut slot.entry, Entry::Taken) {
            Entry::Parked { conn, .. } => Some(conn),
            _ => unreachable!("checked above"),
        }
    }

    /// Puts a taken connection into the table, not armed yet; returns its parking's count.
    fn put(&self, token: u64, conn: Box<Conn<T>>) -> u64 {
        let (index, _) = split(token);
        let mut table = self.table();
        let slot = &mut table.slots[index];
        slot.parkings += 1;
        slot.entry = Entry::Parked { conn, armed: false };
        slot.parkings
    }

    /// Marks the connection's registration armed, if it is still in the table from the
    /// same parking (a thread may have taken it already, on the report the arming gave).
    fn armed(&self, token: u64, parking: u64) {
        let (index, _) = split(token);
        let mut table = self.table();
        let slot = &mut table.slots[index];
        if slot.parkings == parking
            && let Entry::Parked { armed, .. } = &mut slot.entry
        {
            *armed = true;
        }
    }

    /// Parks a taken connection again and re-arms its socket for `interest`. If the
    /// registration fails (the socket is broken), the connection is closed.
    ///
    /// In the table before the re-arm, as the thread the report goes to must find it
    /// there; the table's lock is not held across the system call, which would make every
    /// thread woken by it wait for the lock.
    pub fn park(&self, token: u64, conn: Box<Conn<T>>, interest: Interest) {
        let fd = conn.socket().as_raw_fd();
        let parking = self.put(token, conn);
        // Nobody but a thread with a report can take it before `armed`: the descriptor
        // stays open until then.
        match self.epoll.rearm(&fd, token, interest) {
            Ok(()) => self.armed(token, parking),
            Err(_) => {
                drop(self.take(token));
                self.forget(token);
            }
        }
    }

    /// Frees a taken connection's entry (its socket is closed by whoever holds it).
    pub fn forget(&self, token: u64) {
        let (index, _) = split(token);
        let mut table = self.table();
        let slot = &mut table.slots[index];
        slot.entry = Entry::Vacant;
        slot.generation = slot.generation.wrapping_add(1);
        table.vacant.push(index as u32);
        drop(table);
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes every parked connection for which `pick` says yes (for the clock).
    pub fn take_where(&self, mut pick: impl FnMut(&Conn<T>) -> bool) -> Vec<(u64, Box<Conn<T>>)> {
        let mut table = self.table();
        let mut taken = Vec::new();
        for (index, slot) in table.slots.iter_mut().enumerate() {
            if let Entry::Parked { conn, armed: true } = &slot.entry
                && pick(conn)
                && let Entry::Parked { conn, .. } = std::mem::replace(&mut slot.entry, Entry::Taken)
            {
                taken.push((token(index as u32, slot.generation), conn));
            }
        }
        taken
    }

    /// Waits for the next readiness report (`timeout`: as in [`Epoll::wait`]).
    ///
    /// # Errors
    /// As [`Epoll::wait`].
    pub fn wait(&self, timeout: Option<std::time::Duration>) -> io::Result<Option<u64>> {
        Ok(self.epoll.wait(timeout)?.map(|ready| ready.token))
    }

    /// Hands a taken connection to the next free pool thread, without a readiness report:
    /// it is queued, and a pool thread asleep in `epoll_wait` is woken for it.
    pub fn queue(&self, token: u64, conn: Box<Conn<T>>) {
        self.queued().push_back((token, conn));
        // After the push: a thread that went idle before it will be woken; one that goes
        // idle after it looks at the queue first (see `next_queued`).
        if self.idle.load(Ordering::SeqCst) > 0 {
            self.ring();
        }
    }

    /// The next queued connection, if any.
    pub fn next_queued(&self) -> Option<(u64, Box<Conn<T>>)> {
        self.queued().pop_front()
    }

    /// How many connections are queued.
    pub fn queue_len(&self) -> usize {
        self.queued().len()
    }

    /// Wakes one thread waiting in `epoll_wait` (the doorbell's registration is one-shot).
    pub fn ring(&self) {
        let _ = (&self.doorbell.0).write(&[1]);
    }

    /// The doorbell was answered: empty it and arm it again.
    pub fn answer_doorbell(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.doorbell.1).read(&mut sink), Ok(n) if n > 0) {}
        let _ = self.epoll.rearm(&self.doorbell.1, DOORBELL, Interest::Read);
    }

    /// Wakes every pool thread for good: the server is done.
    pub fn stop_all(&self) {
        let _ = (&self.stop.0).write(&[1]);
    }
}
