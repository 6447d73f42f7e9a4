//! Conditional and range requests (RFC 9110 §13 and §14), decided from an object's
//! validators: its length, modification time and entity tag.
//!
//! The order is the RFC's: `If-None-Match` (or, without it, `If-Modified-Since`) may turn
//! the answer into 304; then `Range`, guarded by `If-Range`, may turn it into 206 or 416.
//! Where the RFC lets a server choose, we do what nginx's static module does, except where
//! the docs say otherwise (README, "HTTP behaviour").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the request asks for beyond "the whole object".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conditions {
    if_none_match: Option<TagList>,
    if_modified_since: Option<SystemTime>,
    range: Option<ByteRange>,
    if_range: Option<IfRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TagList {
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum IfRange {
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
    /// Reads the headers that matter; malformed ones are ignored, as the RFC asks.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Conditions {
        let mut c = Conditions::default();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("If-None-Match") {
                c.if_none_match = parse_tag_list(value);
            } else if name.eq_ignore_ascii_case("If-Modified-Since") {
                c.if_modified_since = httpdate::parse_http_date(value).ok();
            } else if name.eq_ignore_ascii_case("Range") {
                c.range = parse_range(value);
            } else if name.eq_ignore_ascii_case("If-Range") {
                c.if_range = parse_if_range(value);
            }
        }
        c
    }

    /// Whether the answer depends on validators the proxy does not know before it asks.
    pub fn has_preconditions(&self) -> bool {
        self.if_none_match.is_some() || self.if_modified_since.is_some() || self.if_range.is_some()
    }

    /// The range asked for, if any.
    pub fn range(&self) -> Option<ByteRange> {
        self.range
    }

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

fn is_entity_tag(tag: &str) -> bool {
    let opaque = strip_weak(tag);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && !opaque[1..opaque.len() - 1].contains('"')
}

fn parse_tag_list(value: &str) -> Option<TagList> {
    let value = value.trim();
    if value == "*" {
        return Some(TagList::Any);
    }
    let tags: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|t| is_entity_tag(t))
        .map(|t| strip_weak(t).to_owned())
        .collect();
    (!tags.is_empty()).then_some(TagList::Tags(tags))
}

fn parse_if_range(value: &str) -> Option<IfRange> {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        is_entity_tag(value).then(|| IfRange::Tag(value.to_owned()))
    } else {
        httpdate::parse_http_date(value).ok().map(IfRange::Date)
    }
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n`. Several ranges, other units and invalid
/// specs (`b < a`) yield `None`: the header is ignored and the whole object is sent.
fn parse_range(value: &str) -> Option<ByteRange> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => number(last).map(ByteRange::Last),
        (false, true) => number(first).map(ByteRange::From),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            (a <= b).then_some(ByteRange::FromTo(a, b))
        }
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(headers: &[(&str, &str)]) -> Conditions {
        Conditions::from_headers(headers.iter().copied())
    }

    const MODIFIED: u64 = 1_700_000_000;

    fn object() -> Validators<'static> {
        Validators {
            len: Some(1000),
            modified: Some(UNIX_EPOCH + Duration::from_millis(MODIFIED * 1000 + 250)),
            etag: Some("\"abc-3e8\""),
        }
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn ranges() {
        let r = |v: &str| conditions(&[("Range", v)]).evaluate(&object());
        assert_eq!(r("bytes=0-99"), Outcome::Partial { start: 0, len: 100 });
        assert_eq!(
            r("bytes=990-2000"),
            Outcome::Partial {
                start: 990,
                len: 10
            }
        );
        assert_eq!(
            r("bytes=900-"),
            Outcome::Partial {
                start: 900,
                len: 100
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Outcome::Partial {
                start: 900,
                len: 100
            }
        );
        assert_eq!(
            r("bytes=-5000"),
            Outcome::Partial {
                start: 0,
                len: 1000
            }
        );
        assert_eq!(r("bytes=1000-"), Outcome::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Outcome::Unsatisfiable);
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(r(ignored), Outcome::Full, "{ignored}");
        }
        let empty = Validators {
            len: Some(0),
            ..object()
        };
        assert_eq!(
            conditions(&[("Range", "bytes=0-0")]).evaluate(&empty),
            Outcome::Full
        );
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let v = object();
        let eval = |h: &[(&str, &str)]| conditions(h).evaluate(&v);
        assert_eq!(
            eval(&[("If-None-Match", "\"abc-3e8\"")]),
            Outcome::NotModified
        );
        assert_eq!(
            eval(&[("If-None-Match", "W/\"abc-3e8\"")]),
            Outcome::NotModified
        );
        assert_eq!(
            eval(&[("If-None-Match", "\"x\", \"abc-3e8\"")]),
            Outcome::NotModified
        );
        assert_eq!(eval(&[("If-None-Match", "*")]), Outcome::NotModified);
        assert_eq!(eval(&[("If-None-Match", "\"x\"")]), Outcome::Full);
        let same = date(MODIFIED);
        assert_eq!(eval(&[("If-Modified-Since", &same)]), Outcome::NotModified);
        assert_eq!(
            eval(&[("If-Modified-Since", &date(MODIFIED - 1))]),
            Outcome::Full
        );
        assert_eq!(eval(&[("If-Modified-Since", "garbage")]), Outcome::Full);
        assert_eq!(
            eval(&[("If-None-Match", "\"x\""), ("If-Modified-Since", &same)]),
            Outcome::Full,
            "If-None-Match is evaluated instead of If-Modified-Since"
        );
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let v = object();
        let eval = |h: &str| conditions(&[("Range", "bytes=0-9"), ("If-Range", h)]).evaluate(&v);
        let partial = Outcome::Partial { start: 0, len: 10 };
        assert_eq!(eval("\"abc-3e8\""), partial);
        assert_eq!(eval("W/\"abc-3e8\""), Outcome::Full);
        assert_eq!(eval("\"other\""), Outcome::Full);
        assert_eq!(eval(&date(MODIFIED)), partial);
        assert_eq!(eval(&date(MODIFIED + 1)), Outcome::Full);
    }
}
