//! What a GET may make depend on the object (RFC 9110 §13 and §14): conditions that the
//! answerer decides from the object's validators (its length, modification time and entity
//! tag), so that the asker learns everything from one answer: 304, 206 or 416 with the
//! right bytes, or none.
//!
//! The proxy reads them from the request's headers (`http::conditional`); they cross the
//! queue inside a GET ([`wire`](super::wire)) and the cache applies them
//! ([`Conditions::evaluate`]) before it writes a byte. The proxy applies the same function
//! to what secondary storage finds, so both paths answer alike.
//!
//! The order is the RFC's: `If-None-Match` (or, without it, `If-Modified-Since`) may turn
//! the answer into 304; then `Range`, guarded by `If-Range`, may turn it into 206 or 416.
//! Where the RFC lets a server choose, we do what nginx's static module does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the request asks for beyond "the whole object".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conditions {
    pub if_none_match: Option<TagList>,
    /// Whole seconds (HTTP dates have no finer grain).
    pub if_modified_since: Option<SystemTime>,
    pub range: Option<ByteRange>,
    pub if_range: Option<IfRange>,
}

/// `If-None-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    Any,
    /// Opaque tags with their quotes, `W/` stripped (If-None-Match compares weakly).
    Tags(Vec<String>),
}

/// One byte range, as the request spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`
    FromTo(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`
    Last(u64),
}

/// `If-Range`: a strong entity tag (quotes included) or a date (whole seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfRange {
    Tag(String),
    Date(SystemTime),
}

/// The validators of an object, wherever it came from.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// `None` when an origin did not say (no Content-Length): ranges are then ignored.
    pub len: Option<u64>,
    pub modified: Option<SystemTime>,
    pub etag: Option<&'a str>,
}

/// The answer the conditions call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 304, no body.
    NotModified,
    /// 200 with the whole object.
    Full,
    /// 206 with `len` bytes from `start`.
    Partial { start: u64, len: u64 },
    /// 416: the range starts past the end.
    Unsatisfiable,
}

impl Outcome {
    /// The byte range of the object this outcome sends, if it sends any bytes.
    pub fn body_range(self, total: u64) -> Option<(u64, u64)> {
        match self {
            Outcome::Full => Some((0, total)),
            Outcome::Partial { start, len } => Some((start, len)),
            Outcome::NotModified | Outcome::Unsatisfiable => None,
        }
    }
}

impl Conditions {
    /// Decides the answer for an object with these validators.
    pub fn evaluate(&self, v: &Validators) -> Outcome {
        if self.not_modified(v) {
            return Outcome::NotModified;
        }
        let (Some(range), Some(len)) = (self.range, v.len) else {
            return Outcome::Full;
        };
        // nginx serves an empty object whole, whatever the range.
        if len == 0 || !self.if_range_holds(v) {
            return Outcome::Full;
        }
        match resolve(range, len) {
            Some((start, len)) => Outcome::Partial { start, len },
            None => Outcome::Unsatisfiable,
        }
    }

    fn not_modified(&self, v: &Validators) -> bool {
        match (&self.if_none_match, self.if_modified_since) {
            (Some(TagList::Any), _) => true,
            (Some(TagList::Tags(tags)), _) => v
                .etag
                .is_some_and(|etag| tags.iter().any(|t| t == strip_weak(etag))),
            (None, Some(since)) => v.modified.is_some_and(|m| whole_seconds(m) <= since),
            (None, None) => false,
        }
    }

    /// If-Range needs a strong match: the same strong tag, or exactly the same date.
    fn if_range_holds(&self, v: &Validators) -> bool {
        match &self.if_range {
            None => true,
            Some(IfRange::Tag(tag)) => v.etag.is_some_and(|e| !e.starts_with("W/") && e == tag),
            Some(IfRange::Date(date)) => v.modified.is_some_and(|m| whole_seconds(m) == *date),
        }
    }
}

/// Resolves a range against an object of `total` bytes (non-zero): start and length, or
/// `None` when nothing of it lies inside the object.
pub fn resolve(range: ByteRange, total: u64) -> Option<(u64, u64)> {
    let (start, end) = match range {
        ByteRange::FromTo(a, b) => (a, b.saturating_add(1).min(total)),
        ByteRange::From(a) => (a, total),
        ByteRange::Last(n) => (total - n.min(total), total),
    };
    (start < end).then_some((start, end - start))
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}
