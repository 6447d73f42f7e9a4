//! Cache-Control, read as RFC 9111 §5.2 defines it, for responses (§5.2.2, with
//! `immutable` from RFC 8246 and `stale-while-revalidate` and `stale-if-error` from RFC
//! 5861) and requests (§5.2.1, with `Pragma: no-cache` for clients that send no
//! Cache-Control).
//!
//! The proxy decides what to store and when to reuse it from these directives
//! ([`super`]), so a directive read wrongly is a wrong answer served to every client. The
//! rules for input that is not what the grammar says follow one principle, RFC 9111
//! §4.2.1's: "If directives conflict …, the most restrictive directive should be
//! honored", and "Caches are encouraged to consider responses that have invalid freshness
//! information … to be stale":
//!
//! - an argument that is not `1*DIGIT` where delta-seconds are expected (`max-age=a3600`,
//!   `max-age='3600'`, `max-age=36.5`, `max-age=`) is `DeltaSeconds::Invalid`, which the
//!   freshness rules treat as "stale";
//! - a directive given twice keeps its first occurrence (§4.2.1: "either the first
//!   occurrence should be used or the response should be considered stale"), except the
//!   field lists of `no-cache` and `private`, where the union (or the unqualified form) is
//!   the more restrictive reading;
//! - an element that does not parse (`max-age =5`, `no-store foo`) still counts when the
//!   directive restricts caching (`no-store`, `no-cache`, `private`, `must-revalidate`, …)
//!   and is ignored when it would allow more (`public`, `immutable`).
//!
//! Cache directive names are case-insensitive, and arguments may be tokens or quoted
//! strings whatever form the directive's definition asks senders to use (§5.2: "recipients
//! ought to accept both forms").

/// The largest delta-seconds value kept, 2^31: RFC 9111 §1.2.2 says a value too large to
/// represent, or a calculation that overflows, is to be taken as 2147483648 ("infinity",
/// over 68 years). Clamping every value to it keeps later arithmetic (age plus lifetime)
/// far from overflow.
pub(crate) const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The lines of the header field `name` (compared case-insensitively, RFC 9110 §5.1), in
/// order. Several lines of one field are one comma-separated list (RFC 9110 §5.3), so
/// every list-valued field here is read through this.
pub(crate) fn field_lines<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A delta-seconds argument (RFC 9111 §1.2.2): a valid number of seconds, or something
/// else, which the freshness rules must not mistake for "no directive" (an invalid
/// `max-age` means stale, RFC 9111 §4.2.1, not "fall back to Expires").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeltaSeconds {
    /// At most [`DELTA_SECONDS_MAX`].
    Valid(u64),
    Invalid,
}

impl DeltaSeconds {
    /// Reads `1*DIGIT` (RFC 9111 §1.2.2). Leading zeros are fine (`003600` is 3600); a
    /// sign, a decimal point, spaces or quotes are not. Values past 2^31 become 2^31.
    pub(crate) fn parse(text: &str) -> DeltaSeconds {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return DeltaSeconds::Invalid;
        }
        // All digits: a parse failure can only be an overflow, which §1.2.2 maps to 2^31.
        let value = text.parse::<u64>().unwrap_or(DELTA_SECONDS_MAX);
        DeltaSeconds::Valid(value.min(DELTA_SECONDS_MAX))
    }

    /// The seconds, or `None` when invalid.
    pub(crate) fn valid(self) -> Option<u64> {
        match self {
            DeltaSeconds::Valid(s) => Some(s),
            DeltaSeconds::Invalid => None,
        }
    }
}

/// What `no-cache` or `private` covers: the whole response, or only the listed header
/// fields (the "qualified" forms, RFC 9111 §5.2.2.4 and §5.2.2.7), which change what a
/// cache may do from "not store / always revalidate" to "drop these fields".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fields {
    All,
    /// Lower-case field names; never empty (an empty list reads as [`Fields::All`]).
    Named(Vec<String>),
}

impl Fields {
    /// Whether field `name` is covered.
    pub(crate) fn covers(&self, name: &str) -> bool {
        match self {
            Fields::All => true,
            Fields::Named(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    /// Two occurrences of one directive: the more restrictive reading, which covers every
    /// field either one covers.
    fn merge(self, other: Fields) -> Fields {
        match (self, other) {
            (Fields::Named(mut a), Fields::Named(b)) => {
                for name in b {
                    if !a.contains(&name) {
                        a.push(name);
                    }
                }
                Fields::Named(a)
            }
            _ => Fields::All,
        }
    }
}

/// One list element, `token [ "=" ( token / quoted-string ) ]` (RFC 9111 §5.2), kept raw
/// so that Pragma (§5.4) and Cache-Control share one reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    /// Lower case (directive names are case-insensitive, §5.2).
    pub(crate) name: String,
    /// The argument with quotes and `\` escapes removed.
    pub(crate) argument: Option<String>,
    /// The element did not follow the grammar: a space around `=`, an empty or
    /// unterminated argument, or something after the argument.
    pub(crate) malformed: bool,
}

impl Directive {
    /// As delta-seconds: only a well-formed argument can be valid.
    fn seconds(&self) -> DeltaSeconds {
        match (&self.argument, self.malformed) {
            (Some(arg), false) => DeltaSeconds::parse(arg),
            _ => DeltaSeconds::Invalid,
        }
    }

    /// A directive defined without an argument, given as defined. `public=1` or a
    /// malformed `public` is not that, and so grants nothing.
    fn is_flag(&self) -> bool {
        self.argument.is_none() && !self.malformed
    }

    /// The field list of `no-cache` or `private`: `#field-name` in a quoted string (or a
    /// token, which §5.2 says to accept too). Anything that is not a clean list of field
    /// names reads as the unqualified form, the restrictive one.
    fn fields(&self) -> Fields {
        let (Some(arg), false) = (&self.argument, self.malformed) else {
            return Fields::All;
        };
        let mut names = Vec::new();
        for member in arg.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            if !member.bytes().all(is_tchar) {
                return Fields::All;
            }
            let member = member.to_ascii_lowercase();
            if !names.contains(&member) {
                names.push(member);
            }
        }
        if names.is_empty() {
            Fields::All
        } else {
            Fields::Named(names)
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2: what a token (a directive or field name) is made of.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Optional whitespace (RFC 9110 §5.6.3), allowed around list commas only.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Reads the directives of every line in order. Reading line by line is the same as
/// reading the lines joined with commas (RFC 9110 §5.3) for a list-valued field, and
/// keeps a stray quote on one line from swallowing the next.
pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Directive> {
    let mut out = Vec::new();
    for line in lines {
        parse_line(line, &mut out);
    }
    out
}

/// One line of `#( token [ "=" ( token / quoted-string ) ] )`. Commas inside a quoted
/// string do not end an element: `extension="max-age=3600", max-age=1` has no max-age of
/// 3600 (the cache test suite checks exactly this).
fn parse_line(line: &str, out: &mut Vec<Directive>) {
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (is_ows(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            return;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            // Not even a name: nothing to read a directive from.
            i = skip_element(b, i);
            continue;
        }
        let name = line[start..i].to_ascii_lowercase();
        let mut argument = None;
        let mut malformed = false;
        if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                match quoted_string(b, i) {
                    Some((value, next)) => {
                        argument = Some(value);
                        i = next;
                    }
                    None => {
                        malformed = true;
                        i = b.len();
                    }
                }
            } else {
                let value_start = i;
                while i < b.len() && is_tchar(b[i]) {
                    i += 1;
                }
                if i == value_start {
                    malformed = true;
                } else {
                    argument = Some(line[value_start..i].to_owned());
                }
            }
        }
        while i < b.len() && is_ows(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            malformed = true;
            i = skip_element(b, i);
        }
        out.push(Directive {
            name,
            argument,
            malformed,
        });
    }
}

/// The index of the next comma outside a quoted string, or the end: where the next
/// element starts after one that could not be read.
fn skip_element(b: &[u8], mut i: usize) -> usize {
    let mut in_quotes = false;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// A quoted-string (RFC 9110 §5.6.4) starting at `b[start] == '"'`: its content with
/// quoted-pairs unescaped, and the index after the closing quote; `None` when it never
/// closes.
fn quoted_string(b: &[u8], start: usize) -> Option<(String, usize)> {
    let mut value = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((String::from_utf8_lossy(&value).into_owned(), i + 1)),
            b'\\' if i + 1 < b.len() => {
                value.push(b[i + 1]);
                i += 2;
            }
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Keeps the first occurrence of a delta-seconds directive (RFC 9111 §4.2.1).
fn first(slot: &mut Option<DeltaSeconds>, value: DeltaSeconds) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// The response directives of RFC 9111 §5.2.2 and the extensions a shared cache acts on.
/// A field is `None` or `false` when the directive is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// §5.2.2.1.
    pub(crate) max_age: Option<DeltaSeconds>,
    /// §5.2.2.10: for a shared cache, wins over max-age and Expires, and forbids serving
    /// stale (it implies proxy-revalidate).
    pub(crate) s_maxage: Option<DeltaSeconds>,
    /// §5.2.2.4: `All` means validate before every reuse; `Named` fields must not be
    /// reused without validation (this cache does not store them).
    pub(crate) no_cache: Option<Fields>,
    /// §5.2.2.7: `All` means a shared cache must not store the response; `Named` fields
    /// must not be stored by a shared cache.
    pub(crate) private: Option<Fields>,
    /// §5.2.2.5.
    pub(crate) no_store: bool,
    /// §5.2.2.6.
    pub(crate) no_transform: bool,
    /// §5.2.2.2: once stale, never served without validation.
    pub(crate) must_revalidate: bool,
    /// §5.2.2.8: must-revalidate for shared caches.
    pub(crate) proxy_revalidate: bool,
    /// §5.2.2.3: store only if the status code is understood (and then ignore no-store).
    pub(crate) must_understand: bool,
    /// §5.2.2.9: storable even where it otherwise would not be (Authorization, a status
    /// that is not heuristically cacheable).
    pub(crate) public: bool,
    /// RFC 8246: the body will not change while fresh.
    pub(crate) immutable: bool,
    /// RFC 5861 §3: how long after it goes stale the response may be served while it is
    /// revalidated in the background.
    pub(crate) stale_while_revalidate: Option<DeltaSeconds>,
    /// RFC 5861 §4: how long after it goes stale the response may be served when
    /// revalidation fails.
    pub(crate) stale_if_error: Option<DeltaSeconds>,
}

impl ResponseDirectives {
    /// Reads Cache-Control field lines (RFC 9111 §5.2, §5.2.2); see the module docs for
    /// invalid, duplicate and malformed directives. Unknown directives are ignored (§5.2.3).
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> ResponseDirectives {
        let mut r = ResponseDirectives::default();
        for d in parse(lines) {
            match d.name.as_str() {
                "max-age" => first(&mut r.max_age, d.seconds()),
                "s-maxage" => first(&mut r.s_maxage, d.seconds()),
                "stale-while-revalidate" => first(&mut r.stale_while_revalidate, d.seconds()),
                "stale-if-error" => first(&mut r.stale_if_error, d.seconds()),
                "no-cache" => {
                    r.no_cache = Some(match r.no_cache.take() {
                        Some(seen) => seen.merge(d.fields()),
                        None => d.fields(),
                    });
                }
                "private" => {
                    r.private = Some(match r.private.take() {
                        Some(seen) => seen.merge(d.fields()),
                        None => d.fields(),
                    });
                }
                // These only ever restrict, so they count however they are written.
                "no-store" => r.no_store = true,
                "no-transform" => r.no_transform = true,
                "must-revalidate" => r.must_revalidate = true,
                "proxy-revalidate" => r.proxy_revalidate = true,
                "must-understand" => r.must_understand = true,
                // These allow more, so only the form the spec defines counts.
                "public" if d.is_flag() => r.public = true,
                "immutable" if d.is_flag() => r.immutable = true,
                _ => {}
            }
        }
        r
    }

    /// The Cache-Control of a response's header list.
    pub(crate) fn from_headers(headers: &[(String, String)]) -> ResponseDirectives {
        ResponseDirectives::parse(field_lines(headers, "cache-control"))
    }
}

/// `max-stale` (RFC 9111 §5.2.1.2): with no argument the client takes a stale response of
/// any age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxStale {
    Any,
    Seconds(u64),
}

/// The request directives of RFC 9111 §5.2.1 (and RFC 5861's `stale-if-error`). A field
/// is `None` or `false` when the directive is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    /// §5.2.1.1: the client wants a response no older than this; invalid reads as
    /// "validate" (the restrictive reading).
    pub(crate) max_age: Option<DeltaSeconds>,
    /// §5.2.1.2: the client accepts a response this much past its lifetime. An invalid
    /// argument drops the directive: it could only have allowed more.
    pub(crate) max_stale: Option<MaxStale>,
    /// §5.2.1.3: the client wants a response that stays fresh this much longer; invalid
    /// reads as "validate".
    pub(crate) min_fresh: Option<DeltaSeconds>,
    /// §5.2.1.4 (or `Pragma: no-cache`, see [`RequestDirectives::from_headers`]).
    pub(crate) no_cache: bool,
    /// §5.2.1.5: nothing of this exchange may be stored.
    pub(crate) no_store: bool,
    /// §5.2.1.6.
    pub(crate) no_transform: bool,
    /// §5.2.1.7: answer from the cache or with 504, never from the origin.
    pub(crate) only_if_cached: bool,
    /// RFC 5861 §4: the client accepts a response this stale if the origin fails.
    pub(crate) stale_if_error: Option<DeltaSeconds>,
}

impl RequestDirectives {
    /// Reads request Cache-Control field lines (RFC 9111 §5.2.1); as for responses,
    /// the first of a repeated directive counts and unknown ones are ignored.
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> RequestDirectives {
        let mut r = RequestDirectives::default();
        for d in parse(lines) {
            match d.name.as_str() {
                "max-age" => first(&mut r.max_age, d.seconds()),
                "min-fresh" => first(&mut r.min_fresh, d.seconds()),
                "stale-if-error" => first(&mut r.stale_if_error, d.seconds()),
                "max-stale" if r.max_stale.is_none() => {
                    r.max_stale = if d.is_flag() {
                        Some(MaxStale::Any)
                    } else {
                        d.seconds().valid().map(MaxStale::Seconds)
                    };
                }
                "no-cache" => r.no_cache = true,
                "no-store" => r.no_store = true,
                "no-transform" => r.no_transform = true,
                "only-if-cached" => r.only_if_cached = true,
                _ => {}
            }
        }
        r
    }

    /// The directives of a request's header list. A request without any Cache-Control
    /// line but with `Pragma: no-cache` asks for `no-cache`: RFC 9111 §5.4 deprecates
    /// Pragma without a rule of its own, and this keeps RFC 7234 §5.4's ("When the
    /// Cache-Control header field is not present in a request, caches MUST consider the
    /// no-cache request pragma-directive as having the same effect as if Cache-Control:
    /// no-cache were present"), which HTTP/1.0 clients still rely on for a reload.
    pub(crate) fn from_headers(headers: &[(String, String)]) -> RequestDirectives {
        if field_lines(headers, "cache-control").next().is_some() {
            return RequestDirectives::parse(field_lines(headers, "cache-control"));
        }
        let pragma_no_cache = parse(field_lines(headers, "pragma"))
            .iter()
            .any(|d| d.name == "no-cache" && d.is_flag());
        RequestDirectives {
            no_cache: pragma_no_cache,
            ..RequestDirectives::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Response directives of some field lines.
    fn resp(lines: &[&str]) -> ResponseDirectives {
        ResponseDirectives::parse(lines.iter().copied())
    }

    /// Request directives of some field lines.
    fn req(lines: &[&str]) -> RequestDirectives {
        RequestDirectives::parse(lines.iter().copied())
    }

    /// Header lines from string pairs.
    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// A qualified field list, as the parser should produce it.
    fn named(names: &[&str]) -> Option<Fields> {
        Some(Fields::Named(names.iter().map(|n| n.to_string()).collect()))
    }

    #[test]
    fn delta_seconds_are_digits_only() {
        assert_eq!(DeltaSeconds::parse("0"), DeltaSeconds::Valid(0));
        assert_eq!(DeltaSeconds::parse("3600"), DeltaSeconds::Valid(3600));
        assert_eq!(DeltaSeconds::parse("003600"), DeltaSeconds::Valid(3600));
        for bad in [
            "", "-1", "+1", "36.5", "3600.0", "a3600", "3600a", " 1", "1 ", "'1'",
        ] {
            assert_eq!(DeltaSeconds::parse(bad), DeltaSeconds::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn delta_seconds_past_2_31_are_2_31() {
        assert_eq!(
            DeltaSeconds::parse("2147483647"),
            DeltaSeconds::Valid(2_147_483_647)
        );
        assert_eq!(
            DeltaSeconds::parse("2147483649"),
            DeltaSeconds::Valid(DELTA_SECONDS_MAX)
        );
        // Past u64 too: an overflow is 2^31 as well, not an invalid value.
        assert_eq!(
            DeltaSeconds::parse("99999999999999999999999"),
            DeltaSeconds::Valid(DELTA_SECONDS_MAX)
        );
        assert_eq!(DeltaSeconds::Valid(5).valid(), Some(5));
        assert_eq!(DeltaSeconds::Invalid.valid(), None);
    }

    #[test]
    fn raw_directives_keep_order_case_and_arguments() {
        let d = parse(["No-Cache, MAX-AGE=5, ext=\"a, \\\"b\\\"\", token=x"]);
        let pairs: Vec<(&str, Option<&str>, bool)> = d
            .iter()
            .map(|d| (d.name.as_str(), d.argument.as_deref(), d.malformed))
            .collect();
        assert_eq!(
            pairs,
            [
                ("no-cache", None, false),
                ("max-age", Some("5"), false),
                ("ext", Some("a, \"b\""), false),
                ("token", Some("x"), false),
            ]
        );
    }

    #[test]
    fn raw_directives_mark_what_breaks_the_grammar() {
        let d = parse(["max-age =5, max-age= 6, max-age=, a=1 b, c=\"open"]);
        let pairs: Vec<(&str, Option<&str>, bool)> = d
            .iter()
            .map(|d| (d.name.as_str(), d.argument.as_deref(), d.malformed))
            .collect();
        assert_eq!(
            pairs,
            [
                ("max-age", None, true),
                ("max-age", None, true),
                ("max-age", None, true),
                ("a", Some("1"), true),
                ("c", None, true),
            ]
        );
        // Elements without a name are skipped, empty elements too.
        let d = parse([",, =5, \"x,y\", public ,"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "public");
        assert!(!d[0].malformed);
    }

    #[test]
    fn response_directives_all_of_5_2_2_and_extensions() {
        let r = resp(&[
            "max-age=60, s-maxage=120, no-cache, private, no-store, no-transform, \
             must-revalidate, proxy-revalidate, must-understand, public, immutable, \
             stale-while-revalidate=30, stale-if-error=300",
        ]);
        assert_eq!(
            r,
            ResponseDirectives {
                max_age: Some(DeltaSeconds::Valid(60)),
                s_maxage: Some(DeltaSeconds::Valid(120)),
                no_cache: Some(Fields::All),
                private: Some(Fields::All),
                no_store: true,
                no_transform: true,
                must_revalidate: true,
                proxy_revalidate: true,
                must_understand: true,
                public: true,
                immutable: true,
                stale_while_revalidate: Some(DeltaSeconds::Valid(30)),
                stale_if_error: Some(DeltaSeconds::Valid(300)),
            }
        );
        assert_eq!(resp(&[]), ResponseDirectives::default());
        assert_eq!(resp(&["x-unknown=1, foo"]), ResponseDirectives::default());
    }

    #[test]
    fn names_are_case_insensitive() {
        let r = resp(&["No-Store, MAX-AGE=7, Private"]);
        assert!(r.no_store);
        assert_eq!(r.max_age, Some(DeltaSeconds::Valid(7)));
        assert_eq!(r.private, Some(Fields::All));
    }

    #[test]
    fn quoted_and_token_arguments_are_both_read() {
        assert_eq!(
            resp(&["max-age=\"3600\""]).max_age,
            Some(DeltaSeconds::Valid(3600))
        );
        assert_eq!(
            resp(&["s-maxage=\"10\""]).s_maxage,
            Some(DeltaSeconds::Valid(10))
        );
        assert_eq!(
            resp(&["no-cache=Set-Cookie"]).no_cache,
            named(&["set-cookie"])
        );
        assert_eq!(resp(&["private=\"X-A\""]).private, named(&["x-a"]));
    }

    #[test]
    fn invalid_max_age_is_kept_as_invalid_not_dropped() {
        // Single quotes are token characters: the argument is the token 'a3600', not a
        // number (cache test freshness-max-age-single-quoted).
        for line in [
            "max-age='3600'",
            "max-age=a3600",
            "max-age=3600a",
            "max-age=3600.0",
            "max-age=-1",
            "max-age",
            "max-age=",
            "max-age =3600",
            "max-age= 3600",
            "max-age=\"36 00\"",
        ] {
            assert_eq!(
                resp(&[line]).max_age,
                Some(DeltaSeconds::Invalid),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_max_age_inside_a_quoted_string_is_not_a_max_age() {
        for line in [
            "extension=\"max-age=3600\", max-age=1",
            "max-age=1, extension=\"max-age=3600\"",
            "extension=\"max-age=3600\", max-age=\"1\"",
        ] {
            assert_eq!(
                resp(&[line]).max_age,
                Some(DeltaSeconds::Valid(1)),
                "{line:?}"
            );
        }
        assert_eq!(resp(&["extension=\"a, max-age=9\""]).max_age, None);
    }

    #[test]
    fn duplicates_keep_the_first_occurrence() {
        // RFC 9111 §4.2.1: "either the first occurrence should be used or the response
        // should be considered stale"; the same line or two lines.
        assert_eq!(
            resp(&["max-age=3600, max-age=1800"]).max_age,
            Some(DeltaSeconds::Valid(3600))
        );
        assert_eq!(
            resp(&["max-age=1", "max-age=1800"]).max_age,
            Some(DeltaSeconds::Valid(1))
        );
        assert_eq!(
            resp(&["s-maxage=5, s-maxage=50"]).s_maxage,
            Some(DeltaSeconds::Valid(5))
        );
        // The first is invalid: it stays the one that counts (stale), a later valid one
        // does not rescue it.
        assert_eq!(
            resp(&["max-age=x, max-age=60"]).max_age,
            Some(DeltaSeconds::Invalid)
        );
        assert_eq!(
            resp(&["stale-if-error=1, stale-if-error=2"]).stale_if_error,
            Some(DeltaSeconds::Valid(1))
        );
    }

    #[test]
    fn no_cache_and_private_with_and_without_field_names() {
        let r = resp(&["no-cache=\"Set-Cookie, X-Foo\", private=\"Authorization-Info\""]);
        assert_eq!(r.no_cache, named(&["set-cookie", "x-foo"]));
        assert_eq!(r.private, named(&["authorization-info"]));
        let Some(no_cache) = &r.no_cache else {
            panic!("no-cache read");
        };
        assert!(no_cache.covers("X-FOO"));
        assert!(!no_cache.covers("x-bar"));
        assert!(Fields::All.covers("anything"));

        assert_eq!(resp(&["no-cache"]).no_cache, Some(Fields::All));
        // An empty list, a member that is not a field name, or a malformed element: the
        // unqualified (restrictive) reading.
        assert_eq!(resp(&["no-cache=\"\""]).no_cache, Some(Fields::All));
        assert_eq!(resp(&["no-cache=\"a b\""]).no_cache, Some(Fields::All));
        assert_eq!(resp(&["private=\"a\" junk"]).private, Some(Fields::All));
        // Empty list members are allowed (RFC 9110 §5.6.1) and dropped; repeats too.
        assert_eq!(
            resp(&["no-cache=\" a, ,A ,b\""]).no_cache,
            named(&["a", "b"])
        );
    }

    #[test]
    fn repeated_field_lists_merge_and_unqualified_wins() {
        assert_eq!(
            resp(&["no-cache=\"a\"", "no-cache=\"b, a\""]).no_cache,
            named(&["a", "b"])
        );
        assert_eq!(
            resp(&["no-cache=\"a\", no-cache"]).no_cache,
            Some(Fields::All)
        );
        assert_eq!(
            resp(&["private", "private=\"a\""]).private,
            Some(Fields::All)
        );
    }

    #[test]
    fn multiple_lines_are_one_list() {
        let r = resp(&["no-cache=\"a\"", "max-age=3600", "public"]);
        assert_eq!(r.no_cache, named(&["a"]));
        assert_eq!(r.max_age, Some(DeltaSeconds::Valid(3600)));
        assert!(r.public);
        // A quote left open on one line does not reach into the next.
        let r = resp(&["ext=\"open, max-age=1", "max-age=5"]);
        assert_eq!(r.max_age, Some(DeltaSeconds::Valid(5)));
    }

    #[test]
    fn malformed_elements_restrict_but_never_allow() {
        let r = resp(&["no-store junk, must-revalidate=1, public=yes, immutable x"]);
        assert!(r.no_store);
        assert!(r.must_revalidate);
        assert!(!r.public);
        assert!(!r.immutable);
        assert_eq!(
            resp(&["stale-while-revalidate"]).stale_while_revalidate,
            Some(DeltaSeconds::Invalid)
        );
    }

    #[test]
    fn from_headers_reads_every_cache_control_line() {
        let h = headers(&[
            ("Cache-Control", "max-age=10"),
            ("X-Other", "no-store"),
            ("cache-control", "private=\"x\""),
        ]);
        let r = ResponseDirectives::from_headers(&h);
        assert_eq!(r.max_age, Some(DeltaSeconds::Valid(10)));
        assert_eq!(r.private, named(&["x"]));
        assert!(!r.no_store);
        assert_eq!(
            field_lines(&h, "CACHE-CONTROL").collect::<Vec<_>>(),
            ["max-age=10", "private=\"x\""]
        );
    }

    #[test]
    fn request_directives_all_of_5_2_1() {
        let r = req(&[
            "max-age=5, max-stale=10, min-fresh=3, no-cache, no-store, no-transform, \
             only-if-cached, stale-if-error=60",
        ]);
        assert_eq!(
            r,
            RequestDirectives {
                max_age: Some(DeltaSeconds::Valid(5)),
                max_stale: Some(MaxStale::Seconds(10)),
                min_fresh: Some(DeltaSeconds::Valid(3)),
                no_cache: true,
                no_store: true,
                no_transform: true,
                only_if_cached: true,
                stale_if_error: Some(DeltaSeconds::Valid(60)),
            }
        );
        assert_eq!(req(&["nothing-to-see-here"]), RequestDirectives::default());
    }

    #[test]
    fn request_max_stale_forms() {
        assert_eq!(req(&["max-stale"]).max_stale, Some(MaxStale::Any));
        assert_eq!(
            req(&["max-stale=\"20\""]).max_stale,
            Some(MaxStale::Seconds(20))
        );
        // Invalid: ignored, as accepting stale responses is what it would have allowed.
        assert_eq!(req(&["max-stale=soon"]).max_stale, None);
        assert_eq!(
            req(&["max-stale=1, max-stale"]).max_stale,
            Some(MaxStale::Seconds(1))
        );
        assert_eq!(
            req(&["max-age=x, min-fresh=y"]),
            RequestDirectives {
                max_age: Some(DeltaSeconds::Invalid),
                min_fresh: Some(DeltaSeconds::Invalid),
                ..RequestDirectives::default()
            }
        );
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let only_pragma = headers(&[("Pragma", "no-cache")]);
        assert!(RequestDirectives::from_headers(&only_pragma).no_cache);
        let other_pragma = headers(&[("Pragma", "foo, bar=1")]);
        assert!(!RequestDirectives::from_headers(&other_pragma).no_cache);
        let pragma_later = headers(&[("pragma", "x"), ("PRAGMA", "No-Cache")]);
        assert!(RequestDirectives::from_headers(&pragma_later).no_cache);
        // Any Cache-Control line, even one with nothing this cache knows, wins.
        let both = headers(&[("Pragma", "no-cache"), ("Cache-Control", "max-age=5")]);
        assert_eq!(
            RequestDirectives::from_headers(&both),
            RequestDirectives {
                max_age: Some(DeltaSeconds::Valid(5)),
                ..RequestDirectives::default()
            }
        );
        let unknown = headers(&[("Pragma", "no-cache"), ("Cache-Control", "x-y")]);
        assert!(!RequestDirectives::from_headers(&unknown).no_cache);
        assert_eq!(
            RequestDirectives::from_headers(&[]),
            RequestDirectives::default()
        );
    }
}
