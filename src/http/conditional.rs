//! Conditional and range requests (RFC 9110 §13 and §14): reading the headers into the
//! [`Conditions`] that a GET carries to the cache. Deciding them is the protocol's part
//! ([`crate::ipc::Conditions::evaluate`]), so that the cache and the proxy decide alike.

use crate::ipc::{ByteRange, Conditions, ETAG_CAPACITY, IfRange, MAX_TAGS, TagList};

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
    // A tag longer than any we hold matches nothing: such an If-Range asks for the whole
    // object (RFC 9110 §13.1.5), and cannot cross the channel as it is.
    if matches!(&c.if_range, Some(IfRange::Tag(t)) if t.len() > ETAG_CAPACITY) {
        c.if_range = None;
        c.range = None;
    }
    c
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
    // A tag longer than any we hold cannot match; past MAX_TAGS, the rest is left out, which
    // can only turn a 304 into a 200 (always a correct answer), never the reverse.
    let tags: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|t| is_entity_tag(t))
        .map(strip_weak)
        .filter(|t| t.len() <= ETAG_CAPACITY)
        .take(MAX_TAGS)
        .map(str::to_owned)
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
    use crate::ipc::{Outcome, Validators};
    use std::time::{Duration, UNIX_EPOCH};

    fn conditions(headers: &[(&str, &str)]) -> Conditions {
        from_headers(headers.iter().copied())
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
