//! The live view of the channel: one [`Snapshot`] of the request queue, this proxy's
//! segments and the cache's workers, shown three ways at the admin paths under `/-/`:
//! JSON for `/-/segments` ([`to_json`]), a fixed-width table for `/-/segments.txt`
//! ([`to_text`], for `curl` and `watch`), and the page at `/-/` ([`PAGE`]) that polls the
//! JSON and draws each segment as its ring of slots. [`admin_allowed`] is the access rule
//! for all of them.
//!
//! Everything here is plain data and formatting: who fills a [`Snapshot`] (the segment
//! pool's per-segment state, `mq_getattr`, `sem_getvalue`, a STATS call) is the handler's
//! business, so that this module can be tested without a channel.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize as _;
use serde_json::{Value, json};

use crate::ipc::Stats;
use crate::ipc::client::ChannelView;
pub(crate) use crate::ipc::client::SegmentState;

/// The page at `/-/`: one self-contained HTML file (inline CSS and JS, no external
/// assets) that polls `/-/segments` four times a second.
pub(crate) const PAGE: &str = include_str!("live.html");

/// The channel as this proxy sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// `None` when `mq_getattr` failed (the queue is gone, e.g. between two caches).
    pub(crate) queue: Option<QueueView>,
    /// Every segment of this proxy, in index order.
    pub(crate) segments: Vec<SegmentView>,
    /// `None` when the cache did not answer a STATS call.
    pub(crate) cache: Option<CacheView>,
    /// Counters for the page's summary (`hits`, `misses`, ...), in the order to show them.
    pub(crate) counters: Vec<(String, u64)>,
}

impl Snapshot {
    /// The snapshot of what the client sees of the channel, the cache's answer to STATS
    /// (for its pid and its workers; `None` when it did not answer) and the counters to
    /// show.
    pub(crate) fn new<'a>(
        channel: ChannelView,
        cache_stats: Option<&Stats>,
        counters: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Snapshot {
        let segments = channel
            .segments
            .into_iter()
            .map(|s| SegmentView {
                index: s.index as u32,
                name: s.name,
                state: s.state,
                key: s.key,
                generation: s.generation,
                bytes: s.bytes,
                total: s.total,
                slots: s.slots,
                ready: s.ready,
                free: s.free,
                since_ms: s.since.map(|d| d.as_millis() as u64),
            })
            .collect();
        Snapshot {
            queue: channel
                .queue
                .map(|(depth, capacity)| QueueView { depth, capacity }),
            segments,
            cache: cache_stats.map(CacheView::from_stats),
            counters: counters
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }
}

impl CacheView {
    /// The cache's pid and what each of its workers is doing.
    fn from_stats(stats: &Stats) -> CacheView {
        let workers = stats
            .workers
            .iter()
            .map(|worker| match worker {
                Some((op, key)) => WorkerView {
                    state: op.name().to_owned(),
                    key: Some(key.clone()),
                },
                None => WorkerView {
                    state: "idle".to_owned(),
                    key: None,
                },
            })
            .collect();
        CacheView {
            pid: stats.pid,
            workers,
        }
    }
}

/// The request queue: messages waiting now, and how many it holds (`mq_getattr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueView {
    pub(crate) depth: u64,
    pub(crate) capacity: u64,
}

/// One segment: what it carries and its semaphores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentView {
    pub(crate) index: u32,
    /// The shared-memory object's name (`/NAME-seg-3`).
    pub(crate) name: String,
    pub(crate) state: SegmentState,
    /// The object key of the current transfer; `None` when idle.
    pub(crate) key: Option<String>,
    pub(crate) generation: u64,
    /// Body bytes moved so far in the current transfer.
    pub(crate) bytes: u64,
    /// Body bytes the transfer will move, when known.
    pub(crate) total: Option<u64>,
    /// Slots in the ring (K).
    pub(crate) slots: u32,
    /// `sem_getvalue` of `ready`: slots written and not yet taken by the reader.
    pub(crate) ready: u32,
    /// `sem_getvalue` of `free`: slots the writer may fill. The rest
    /// (`slots - ready - free`) are in a side's hands, being filled or drained.
    pub(crate) free: u32,
    /// How long the current transfer has run; `None` when idle.
    pub(crate) since_ms: Option<u64>,
}

/// The cache process, from its answer to a STATS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheView {
    pub(crate) pid: u32,
    pub(crate) workers: Vec<WorkerView>,
}

/// One cache worker: what it is doing (as the cache names it) and for which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerView {
    pub(crate) state: String,
    pub(crate) key: Option<String>,
}

/// The counts of a ring at a glance: slots written and waiting (`full`), slots a side
/// holds while it copies (`held`), slots the writer may fill (`free`).
///
/// The two semaphores are read one after the other while both sides run, so their sum can
/// briefly exceed the ring; `ready` is believed first and `free` clipped to what is left,
/// the same rule the page applies, so that a row never shows more cells than slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ring {
    pub(crate) full: u32,
    pub(crate) held: u32,
    pub(crate) free: u32,
}

impl SegmentView {
    pub(crate) fn ring(&self) -> Ring {
        let full = self.ready.min(self.slots);
        let free = self.free.min(self.slots - full);
        Ring {
            full,
            held: self.slots - full - free,
            free,
        }
    }
}

/// Whether `peer` may see the `/-/` paths: loopback, or an address given with
/// `--admin-allow`. Loopback means 127.0.0.1 and ::1 exactly, as for PURGE; an IPv4
/// address mapped into IPv6 (a dual-stack listener's `::ffff:127.0.0.1`) is taken as the
/// IPv4 address, on either side of the comparison.
pub(crate) fn admin_allowed(peer: IpAddr, allow: &[IpAddr]) -> bool {
    let peer = peer.to_canonical();
    peer == IpAddr::V4(Ipv4Addr::LOCALHOST)
        || peer == IpAddr::V6(Ipv6Addr::LOCALHOST)
        || allow.iter().any(|a| a.to_canonical() == peer)
}

/// The snapshot as JSON: one line per segment, so that `curl | grep` works too. Written
/// by `serde_json` (escaping per RFC 8259), laid out by [`Spaced`].
pub(crate) fn to_json(snapshot: &Snapshot) -> String {
    let queue = snapshot
        .queue
        .map(|q| json!({"depth": q.depth, "capacity": q.capacity}));
    let segments: Vec<String> = snapshot
        .segments
        .iter()
        .map(|s| {
            spaced(&json!({
                "index": s.index,
                "name": s.name,
                "state": s.state.as_str(),
                "key": s.key,
                "generation": s.generation,
                "bytes": s.bytes,
                "total": s.total,
                "slots": s.slots,
                "ready": s.ready,
                "free": s.free,
                "since_ms": s.since_ms,
            }))
        })
        .collect();
    let cache = snapshot.cache.as_ref().map(|cache| {
        let workers: Vec<Value> = cache
            .workers
            .iter()
            .map(|w| json!({"state": w.state, "key": w.key}))
            .collect();
        json!({"pid": cache.pid, "workers": workers})
    });
    let counters: serde_json::Map<String, Value> = snapshot
        .counters
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let segments = if segments.is_empty() {
        "[]".to_owned()
    } else {
        format!("[\n    {}\n  ]", segments.join(",\n    "))
    };
    format!(
        "{{\n  \"queue\": {},\n  \"segments\": {segments},\n  \"cache\": {},\n  \"counters\": {}\n}}\n",
        spaced(&json!(queue)),
        spaced(&json!(cache)),
        spaced(&Value::Object(counters)),
    )
}

/// `value` on one line, with a space after each colon and comma: compact enough for a
/// segment per line, readable enough for a person at a terminal.
fn spaced(value: &Value) -> String {
    let mut out = Vec::new();
    let mut writer = serde_json::Serializer::with_formatter(&mut out, Spaced);
    value
        .serialize(&mut writer)
        .expect("a JSON value always serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's compact layout, but for `": "` and, between an object's members, `", "`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// How a column of the table lines up. Numbers align right and, when too wide, keep
/// their last digits (the ones that change); text aligns left and keeps its start.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// The table's columns: header, width in characters, alignment. The last one (the key) is
/// not padded, so that rows have no trailing blanks; it is still cut at its width.
const COLUMNS: [(&str, usize, Align); 12] = [
    ("seg", 3, Align::Right),
    ("state", 9, Align::Left),
    ("ring", RING_WIDTH, Align::Left),
    ("ready", 5, Align::Right),
    ("free", 5, Align::Right),
    ("slots", 5, Align::Right),
    ("bytes", 8, Align::Right),
    ("total", 8, Align::Right),
    ("%", 4, Align::Right),
    ("since", 7, Align::Right),
    ("gen", 10, Align::Right),
    ("key", KEY_WIDTH, Align::Left),
];

/// Cells of the ring drawn in the table; a longer ring ends in an ellipsis (the exact
/// counts are in the next columns).
const RING_WIDTH: usize = 16;
/// Characters of a key shown in the table.
const KEY_WIDTH: usize = 48;
const GAP: &str = "  ";

/// The snapshot as a fixed-width table: a header, one row per segment, then the queue,
/// the cache and the counters on a line each. Every cell is cut to its column's width
/// (with `…`), so a long key or a huge number never pushes the next column out of line.
///
/// The ring column draws `#` for a full slot (written, waiting for the reader), `+` for a
/// slot a side holds while it copies, and `.` for a free one, in that order.
pub(crate) fn to_text(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    push_row(&mut out, COLUMNS.map(|(name, _, _)| name.to_owned()));
    for s in &snapshot.segments {
        let ring = s.ring();
        let percent = match s.total {
            Some(0) | None => "-".to_owned(),
            Some(total) => format!("{}%", u128::from(s.bytes) * 100 / u128::from(total)),
        };
        push_row(
            &mut out,
            [
                s.index.to_string(),
                s.state.as_str().to_owned(),
                ring_bar(ring),
                s.ready.to_string(),
                s.free.to_string(),
                s.slots.to_string(),
                human_bytes(s.bytes),
                s.total.map_or("-".to_owned(), human_bytes),
                percent,
                s.since_ms.map_or("-".to_owned(), human_ms),
                s.generation.to_string(),
                s.key.as_deref().map_or("-".to_owned(), printable),
            ],
        );
    }
    match snapshot.queue {
        Some(q) => {
            let _ = writeln!(out, "queue     {}/{} waiting", q.depth, q.capacity);
        }
        None => out.push_str("queue     unknown (mq_getattr failed)\n"),
    }
    match &snapshot.cache {
        Some(cache) => {
            let _ = write!(
                out,
                "cache     pid {}, {} workers",
                cache.pid,
                cache.workers.len()
            );
            // Workers by state, in order of first appearance: "3 idle, 1 sending".
            let mut tally: Vec<(&str, usize)> = Vec::new();
            for w in &cache.workers {
                match tally.iter_mut().find(|(state, _)| *state == w.state) {
                    Some((_, n)) => *n += 1,
                    None => tally.push((&w.state, 1)),
                }
            }
            for (i, (state, n)) in tally.iter().enumerate() {
                let sep = if i == 0 { ": " } else { ", " };
                let _ = write!(out, "{sep}{n} {}", printable(state));
            }
            out.push('\n');
        }
        None => out.push_str("cache     not answering\n"),
    }
    if !snapshot.counters.is_empty() {
        out.push_str("counters ");
        for (name, value) in &snapshot.counters {
            let _ = write!(out, " {} {value}", printable(name));
        }
        out.push('\n');
    }
    out
}

fn push_row(out: &mut String, cells: [String; COLUMNS.len()]) {
    let last = COLUMNS.len() - 1;
    for (i, (cell, (_, width, align))) in cells.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            out.push_str(GAP);
        }
        let cell = fit(cell, width, align);
        if i == last {
            out.push_str(cell.trim_end());
        } else {
            out.push_str(&cell);
        }
    }
    out.push('\n');
}

/// `text` padded or cut to exactly `width` characters; a cut shows as `…` on the side
/// that was dropped.
fn fit(text: &str, width: usize, align: Align) -> String {
    let len = text.chars().count();
    if len <= width {
        let pad = " ".repeat(width - len);
        return match align {
            Align::Left => format!("{text}{pad}"),
            Align::Right => format!("{pad}{text}"),
        };
    }
    match align {
        Align::Left => text.chars().take(width - 1).chain(['…']).collect(),
        Align::Right => ['…']
            .into_iter()
            .chain(text.chars().skip(len - (width - 1)))
            .collect(),
    }
}

/// A key or name with its control characters written as escapes (`\n`, `\u{1b}`), so a
/// crafted key cannot break a row or move the terminal's cursor.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn ring_bar(ring: Ring) -> String {
    let cell = |n: u32, c: char| std::iter::repeat_n(c, n as usize);
    let bar: String = cell(ring.full, '#')
        .chain(cell(ring.held, '+'))
        .chain(cell(ring.free, '.'))
        .take(RING_WIDTH + 1)
        .collect();
    bar
}

/// Bytes in binary units with one decimal: `512B`, `1.5K`, `8.0M`. At most 7 characters
/// (`1024.0K` after rounding), so the column never overflows.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// A duration in milliseconds, shortest unit that reads well: `340ms`, `12.3s`, `4m05s`,
/// `2h07m`, `3d04h`; past 99 days only `>99d` (a cut number of days would mislead).
fn human_ms(ms: u64) -> String {
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    match ms {
        0..S => format!("{ms}ms"),
        S..M => format!("{}.{}s", ms / S, ms % S / 100),
        M..H => format!("{}m{:02}s", ms / M, ms % M / S),
        H..D => format!("{}h{:02}m", ms / H, ms % H / M),
        _ if ms >= 100 * D => ">99d".to_owned(),
        _ => format!("{}d{:02}h", ms / D, ms % D / H),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(index: u32, state: SegmentState, key: Option<&str>) -> SegmentView {
        SegmentView {
            index,
            name: format!("/demo-seg-{index}"),
            state,
            key: key.map(str::to_owned),
            generation: 7 + u64::from(index),
            bytes: 0,
            total: None,
            slots: 8,
            ready: 0,
            free: 8,
            since_ms: None,
        }
    }

    /// The snapshot that `tests/live_sample.json` holds: the page's own browser test
    /// serves that file, so this keeps the page tested against what `to_json` writes.
    /// A snapshot of a proxy that knows nothing: no queue, no segments, no cache.
    fn empty() -> Snapshot {
        Snapshot {
            queue: None,
            segments: vec![],
            cache: None,
            counters: vec![],
        }
    }

    fn sample() -> Snapshot {
        let busy = SegmentView {
            bytes: 3 * 1024 * 1024,
            total: Some(8 * 1024 * 1024),
            ready: 3,
            free: 3,
            since_ms: Some(1250),
            ..segment(1, SegmentState::Sending, Some("/big.bin"))
        };
        Snapshot {
            queue: Some(QueueView {
                depth: 1,
                capacity: 10,
            }),
            segments: vec![
                segment(0, SegmentState::Idle, None),
                busy,
                segment(2, SegmentState::Idle, None),
            ],
            cache: Some(CacheView {
                pid: 4242,
                workers: vec![
                    WorkerView {
                        state: "sending".into(),
                        key: Some("/big.bin".into()),
                    },
                    WorkerView {
                        state: "idle".into(),
                        key: None,
                    },
                ],
            }),
            counters: vec![("hits".into(), 41), ("misses".into(), 3)],
        }
    }

    #[test]
    fn json_of_the_sample_is_the_fixture() {
        assert_eq!(
            to_json(&sample()),
            include_str!("../../../tests/live_sample.json")
        );
    }

    #[test]
    fn json_with_nothing_known() {
        let empty = empty();
        assert_eq!(
            to_json(&empty),
            "{\n  \"queue\": null,\n  \"segments\": [],\n  \"cache\": null,\n  \"counters\": {}\n}\n"
        );
        let no_workers = Snapshot {
            cache: Some(CacheView {
                pid: 1,
                workers: vec![],
            }),
            ..empty
        };
        assert!(
            to_json(&no_workers).contains("\"cache\": {\"pid\": 1, \"workers\": []},"),
            "{}",
            to_json(&no_workers)
        );
    }

    #[test]
    fn json_states_are_lowercase() {
        use SegmentState::*;
        let names: Vec<&str> = [Idle, Waiting, Receiving, Sending, Storing]
            .map(SegmentState::as_str)
            .to_vec();
        assert_eq!(
            names,
            ["idle", "waiting", "receiving", "sending", "storing"]
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let out = spaced(&json!("a\"b\\c/d"));
        assert_eq!(out, r#""a\"b\\c/d""#);

        let out = spaced(&json!("\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}"));
        // The named escapes where RFC 8259 has them, \u00XX for the other controls; DEL
        // is not a control character in JSON and goes as it is.
        assert_eq!(out, "\"\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}\"");

        let out = spaced(&json!("/caf\u{e9}/\u{65e5}\u{672c}/\u{1f600}"));
        assert_eq!(out, "\"/café/日本/😀\"");

        let mut s = segment(0, SegmentState::Receiving, Some("/\"x\"\\\n"));
        s.name = "/n\u{1}".into();
        let snapshot = Snapshot {
            queue: None,
            segments: vec![s],
            cache: Some(CacheView {
                pid: 9,
                workers: vec![WorkerView {
                    state: "odd\"state".into(),
                    key: Some("/k\\".into()),
                }],
            }),
            counters: vec![("we\"ird".into(), 1)],
        };
        let json = to_json(&snapshot);
        assert!(
            json.contains(r#""name": "/n\u0001", "state": "receiving", "key": "/\"x\"\\\n""#),
            "{json}"
        );
        assert!(
            json.contains(r#"[{"state": "odd\"state", "key": "/k\\"}]"#),
            "{json}"
        );
        assert!(json.contains(r#""counters": {"we\"ird": 1}"#), "{json}");
    }

    #[test]
    fn text_of_the_sample() {
        let want = "\
seg  state      ring              ready   free  slots     bytes     total     %    since         gen  key
  0  idle       ........              0      8      8        0B         -     -        -           7  -
  1  sending    ###++...              3      3      8      3.0M      8.0M   37%     1.2s           8  /big.bin
  2  idle       ........              0      8      8        0B         -     -        -           9  -
queue     1/10 waiting
cache     pid 4242, 2 workers: 1 sending, 1 idle
counters  hits 41 misses 3
";
        assert_eq!(to_text(&sample()), want);
    }

    #[test]
    fn text_with_nothing_known() {
        let empty = empty();
        assert_eq!(
            to_text(&empty),
            "seg  state      ring              ready   free  slots     bytes     total     %    since         gen  key\n\
             queue     unknown (mq_getattr failed)\n\
             cache     not answering\n"
        );
    }

    #[test]
    fn text_columns_hold_for_long_keys_and_huge_numbers() {
        let long_key = format!("/{}", "a/".repeat(60));
        let huge = SegmentView {
            generation: u64::MAX,
            bytes: u64::MAX,
            total: Some(u64::MAX),
            slots: 40,
            ready: 40,
            free: 0,
            since_ms: Some(u64::MAX),
            ..segment(123_456, SegmentState::Receiving, Some(&long_key))
        };
        let snapshot = Snapshot {
            queue: None,
            segments: vec![segment(0, SegmentState::Idle, None), huge],
            cache: None,
            counters: vec![],
        };
        let text = to_text(&snapshot);
        let lines: Vec<&str> = text.lines().collect();
        let key_column = lines[0].find("key").unwrap();
        assert_eq!(
            lines[2],
            format!(
                "…56  receiving  ###############…     40      0     40     16.0E     16.0E  100%     >99d  …709551615  /{}…",
                "a/".repeat(23)
            )
        );
        assert_eq!(
            lines[2].chars().count(),
            key_column + KEY_WIDTH,
            "the key is cut at its width"
        );
        // The idle row's key starts under the header's, after the cut cells of the
        // busy row.
        assert_eq!(lines[1].chars().nth(key_column), Some('-'));
        assert_eq!(lines[2].chars().nth(key_column), Some('/'));
        assert_eq!(lines[2].chars().nth(key_column - 1), Some(' '));
    }

    #[test]
    fn text_escapes_control_characters() {
        let s = segment(0, SegmentState::Waiting, Some("/a\nb\u{1b}[2J"));
        let snapshot = Snapshot {
            queue: Some(QueueView {
                depth: 0,
                capacity: 10,
            }),
            segments: vec![s],
            cache: None,
            counters: vec![],
        };
        let text = to_text(&snapshot);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("  /a\\nb\\u{1b}[2J\n"), "{text}");
    }

    #[test]
    fn ring_counts_never_exceed_the_slots() {
        let mut s = segment(0, SegmentState::Receiving, Some("/x"));
        (s.ready, s.free) = (2, 5);
        assert_eq!(
            s.ring(),
            Ring {
                full: 2,
                held: 1,
                free: 5
            }
        );
        // Read mid-handoff: ready already posted, free not yet taken back.
        (s.ready, s.free) = (4, 6);
        assert_eq!(
            s.ring(),
            Ring {
                full: 4,
                held: 0,
                free: 4
            }
        );
        (s.ready, s.free) = (9, 9);
        assert_eq!(
            s.ring(),
            Ring {
                full: 8,
                held: 0,
                free: 0
            }
        );
        assert_eq!(ring_bar(s.ring()), "########");
    }

    #[test]
    fn fit_pads_and_cuts() {
        assert_eq!(fit("ab", 4, Align::Left), "ab  ");
        assert_eq!(fit("ab", 4, Align::Right), "  ab");
        assert_eq!(fit("abcd", 4, Align::Left), "abcd");
        assert_eq!(fit("abcde", 4, Align::Left), "abc…");
        assert_eq!(fit("12345", 4, Align::Right), "…345");
        assert_eq!(fit("日本語のキー", 4, Align::Left), "日本語…");
    }

    #[test]
    fn human_units() {
        let bytes = [
            0,
            1023,
            1024,
            1536,
            1024 * 1024 - 1,
            8 << 20,
            5 << 30,
            u64::MAX,
        ];
        assert_eq!(
            bytes.map(human_bytes),
            [
                "0B", "1023B", "1.0K", "1.5K", "1024.0K", "8.0M", "5.0G", "16.0E"
            ]
        );
        let ms = [
            0,
            999,
            1000,
            12_345,
            59_999,
            60_000,
            245_000,
            7_620_000,
            273_600_000,
            8_639_999_999,
            8_640_000_000,
        ];
        assert_eq!(
            ms.map(human_ms),
            [
                "0ms", "999ms", "1.0s", "12.3s", "59.9s", "1m00s", "4m05s", "2h07m", "3d04h",
                "99d23h", ">99d"
            ]
        );
    }

    #[test]
    fn admin_is_loopback_or_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none: &[IpAddr] = &[];
        assert!(admin_allowed(ip("127.0.0.1"), none));
        assert!(admin_allowed(ip("::1"), none));
        assert!(admin_allowed(ip("::ffff:127.0.0.1"), none));
        // As for PURGE: 127.0.0.1 itself, not all of 127/8.
        assert!(!admin_allowed(ip("127.0.0.2"), none));
        assert!(!admin_allowed(ip("10.0.0.5"), none));
        assert!(!admin_allowed(ip("::"), none));

        let allow = [ip("10.0.0.5"), ip("::ffff:192.0.2.7"), ip("2001:db8::1")];
        assert!(admin_allowed(ip("10.0.0.5"), &allow));
        assert!(admin_allowed(ip("::ffff:10.0.0.5"), &allow));
        assert!(admin_allowed(ip("192.0.2.7"), &allow));
        assert!(admin_allowed(ip("2001:db8::1"), &allow));
        assert!(!admin_allowed(ip("10.0.0.6"), &allow));
        assert!(!admin_allowed(ip("2001:db8::2"), &allow));
    }
}
