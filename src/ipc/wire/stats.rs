//! The STATS answer's stream: the cache's [`Stats`] (see the table of [`wire`](super)).

use super::{MAX_KEY_LEN, Reader, WireError, Writer};
use crate::ipc::call::{Op, Stats};

/// Encodes the cache's counters and workers for a STATS answer's stream. Counter names
/// that could not be decoded (see the table above) are a bug of the caller: it panics.
pub fn encode_stats(stats: &Stats) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        64 * (stats.counters.len() + stats.workers.len()),
    ));
    w.u16(u16::try_from(stats.counters.len()).expect("fewer than 65536 counters"));
    for (name, value) in &stats.counters {
        assert!(valid_counter_name(name), "counter name {name:?}");
        w.str8(name, "counter").expect("checked above");
        w.u64(*value);
    }
    w.u16(u16::try_from(stats.workers.len()).expect("fewer than 65536 workers"));
    for worker in &stats.workers {
        match worker {
            None => w.u8(0),
            Some((op, key)) => {
                w.u8(*op as u8);
                // A key longer than a call carries cannot be a worker's; cut, never fail.
                let mut end = key.len().min(MAX_KEY_LEN);
                while !key.is_char_boundary(end) {
                    end -= 1;
                }
                let key = &key[..end];
                w.str16(key, "key").expect("a call's key has no NUL");
            }
        }
    }
    w.0
}

/// Decodes a STATS answer's stream, written by the cache with pid `pid`. Never panics,
/// whatever the bytes.
pub fn decode_stats(bytes: &[u8], pid: u32) -> Result<Stats, WireError> {
    let mut r = Reader(bytes);
    let n = r.u16()?;
    let mut counters = Vec::with_capacity(usize::from(n).min(bytes.len() / 10));
    for _ in 0..n {
        let name = r.str8("counter")?;
        if !valid_counter_name(name) {
            return Err(WireError::BadString("counter"));
        }
        counters.push((name.to_owned(), r.u64()?));
    }
    let n = r.u16()?;
    let mut workers = Vec::with_capacity(usize::from(n).min(bytes.len()));
    for _ in 0..n {
        workers.push(match r.u8()? {
            0 => None,
            code => {
                let op = Op::from_code(code).ok_or(WireError::Op(code))?;
                Some((op, r.str16("key")?.to_owned()))
            }
        });
    }
    r.end()?;
    Ok(Stats {
        pid,
        counters,
        workers,
    })
}

fn valid_counter_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
