//! What a shared HTTP cache may store and reuse, as RFC 9111 says: storability (§3),
//! freshness lifetime (§4.2.1, §4.2.2), age (§4.2.3), reuse with or without validation
//! (§4.2.4, §5.2, RFC 5861), Vary (§4.1), freshening from a 304 (§3.2, §4.3.4),
//! invalidation after unsafe methods (§4.4), and the hop-by-hop fields a proxy must not
//! forward or store (RFC 9110 §7.6.1).
//!
//! Everything here is a pure function of a response's status, its header lines and the
//! times it was asked for and received, so the rules can be tested to the second without
//! a clock or a network, and the handler (issue 12) only has to act on the answers.
//! Headers are `(name, value)` lines as received, in order: several lines of one field
//! stay apart, and names are compared case-insensitively.
//!
//! The cache is a shared cache (a reverse proxy), so `s-maxage`, `proxy-revalidate`,
//! `private` and `Authorization` apply throughout.

use std::time::{Duration, SystemTime};

use super::cache_control::{
    DELTA_SECONDS_MAX, DeltaSeconds, Fields, MaxStale, RequestDirectives, ResponseDirectives,
    field_lines, is_tchar,
};

/// The most a heuristic freshness lifetime may be, in seconds: a day. RFC 9111 §4.2.2
/// leaves the limit to the cache; a response with no explicit freshness that changed a
/// year ago should still be checked daily, not reused for a month.
pub(crate) const HEURISTIC_MAX: u64 = 24 * 60 * 60;

/// A stored (or just received) response, as far as freshness is concerned: RFC 9111
/// §4.2.3 needs the times of the request that fetched it and of the response's arrival
/// besides its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseMeta {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// When the request that produced (or last validated) this response was sent.
    pub(crate) request_time: SystemTime,
    /// When the response (or the 304 that last validated it) was received.
    pub(crate) response_time: SystemTime,
}

/// All lines of field `name` joined with ", ", as RFC 9110 §5.3 combines them; `None`
/// when there is no such line. For fields whose value is compared or forwarded whole.
pub(crate) fn field_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut lines = field_lines(headers, name);
    let first = lines.next()?;
    Some(lines.fold(first.to_owned(), |mut all, line| {
        all.push_str(", ");
        all.push_str(line);
        all
    }))
}

/// The first line of a field that must be a single value (a date, a URI). RFC 9111
/// §4.2.1: with two Expires lines, "the first occurrence should be used".
pub(super) fn first_line<'a>(headers: &'a [(String, String)], name: &'a str) -> Option<&'a str> {
    field_lines(headers, name).next().map(str::trim)
}

/// Whether any line of field `name` is present: for fields whose presence alone matters
/// (Authorization, Expires).
pub(super) fn has_field(headers: &[(String, String)], name: &str) -> bool {
    field_lines(headers, name).next().is_some()
}

/// An HTTP-date field (RFC 9110 §5.6.7) or `None` when absent or invalid.
fn date_field(headers: &[(String, String)], name: &str) -> Option<SystemTime> {
    first_line(headers, name).and_then(|d| httpdate::parse_http_date(d).ok())
}

/// Whole seconds from `earlier` to `later`, 0 when `later` is not later.
fn seconds_between(later: SystemTime, earlier: SystemTime) -> u64 {
    later.duration_since(earlier).map_or(0, |d| d.as_secs())
}

/// The status codes RFC 9110 §15.1 calls heuristically cacheable: a response with one of
/// them may be stored and given a heuristic lifetime without any explicit freshness.
pub(crate) fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The status codes whose caching rules this cache follows (RFC 9111 §3: a 206, a 304, or
/// a response with `must-understand` may only be stored when the status is understood).
/// These are RFC 9110's final codes less 304, which only ever freshens a stored response
/// (§4.3.4). A 206 is stored as a part (§3.3), which answers ranges within it and, with
/// the rest, completes the response (§3.4).
pub(crate) fn status_understood(status: u16) -> bool {
    matches!(
        status,
        200..=206 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether a shared cache may store this response to a `method` request with
/// `request_headers` (RFC 9111 §3). The request method must be understood and cacheable:
/// GET or HEAD (a stored HEAD response answers only HEAD requests, RFC 9110 §9.3.2); the
/// status final and, for 206, 304 or `must-understand`, understood; no `no-store` in the
/// request (§5.2.1.5) or response (§5.2.2.5, ignored when `must-understand` applies,
/// §5.2.2.3); no unqualified `private` (§5.2.2.7); no `Authorization` in the request
/// unless `public`, `must-revalidate` or `s-maxage` allows it (§3.5); and something that
/// makes it cacheable at all: `public`, `Expires`, `max-age`, `s-maxage`, or a
/// heuristically cacheable status.
///
/// An invalid `max-age` or `Expires` still makes a response storable: it is stored stale
/// and validated before use (§4.2.1, §5.3), which is what the origin asked for.
pub(crate) fn storable(
    method: &str,
    request_headers: &[(String, String)],
    status: u16,
    response_headers: &[(String, String)],
) -> bool {
    // Method names are case-sensitive (RFC 9110 §9.1): "get" is another method.
    if method != "GET" && method != "HEAD" {
        return false;
    }
    if !(200..=599).contains(&status) {
        return false;
    }
    let cc = ResponseDirectives::from_headers(response_headers);
    let understood = status_understood(status);
    if (status == 206 || status == 304 || cc.must_understand) && !understood {
        return false;
    }
    if RequestDirectives::from_headers(request_headers).no_store {
        return false;
    }
    if cc.no_store && !(cc.must_understand && understood) {
        return false;
    }
    if cc.private == Some(Fields::All) {
        return false;
    }
    if has_field(request_headers, "authorization") && !authorization_allowed(&cc) {
        return false;
    }
    cc.public
        || has_field(response_headers, "expires")
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || heuristically_cacheable(status)
}

/// RFC 9111 §3.5: the response directives with which a shared cache may store and reuse a
/// response to a request that carried credentials.
fn authorization_allowed(cc: &ResponseDirectives) -> bool {
    cc.public || cc.must_revalidate || cc.s_maxage.is_some()
}

/// Field names RFC 9110 §7.6.1 calls connection-specific (and the pre-standard
/// Proxy-Connection and Keep-Alive it names), plus the proxy authentication fields of
/// RFC 9110 §11.7, which concern this hop only and which RFC 9111 §3.1 forbids storing.
/// `Trailer` goes too: the proxy re-frames bodies, so a promise of trailers would be
/// false.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-authentication-info",
];

/// The header lines a proxy may pass on, in either direction: everything but the
/// hop-by-hop fields and the fields the message's `Connection` names (RFC 9110 §7.6.1:
/// "a proxy or gateway MUST … remove any header or trailer field(s) … that match
/// connection options"). The end-to-end headers are exactly what issue 12 found the
/// proxy dropping.
pub(crate) fn strip_hop_by_hop(headers: &[(String, String)]) -> Vec<(String, String)> {
    end_to_end(headers).cloned().collect()
}

/// The lines [`strip_hop_by_hop`] keeps, borrowed: for a reply written at once.
pub(crate) fn end_to_end(
    headers: &[(String, String)],
) -> impl Iterator<Item = &(String, String)> + '_ {
    let named: Vec<&str> = field_lines(headers, "connection")
        .flat_map(|line| line.split(','))
        .map(|option| option.trim_matches([' ', '\t']))
        .filter(|option| !option.is_empty())
        .collect();
    headers.iter().filter(move |(name, _)| {
        let is = |other: &&str| other.eq_ignore_ascii_case(name);
        !HOP_BY_HOP.iter().any(is) && !named.iter().any(is)
    })
}

/// The header lines of a response that a shared cache stores (RFC 9111 §3.1): all of them
/// but the hop-by-hop ones ([`strip_hop_by_hop`]) and the fields that a qualified
/// `private` (§5.2.2.7: not in a shared cache) or a qualified `no-cache` (§5.2.2.4: not
/// reused without validation; dropping them on store is the simple way to keep that)
/// lists.
pub(crate) fn storable_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let cc = ResponseDirectives::from_headers(headers);
    // The unqualified forms are not about fields: storable() and reuse() handle them.
    let listed = |name: &str| {
        [&cc.private, &cc.no_cache]
            .into_iter()
            .any(|d| matches!(d, Some(fields @ Fields::Named(_)) if fields.covers(name)))
    };
    strip_hop_by_hop(headers)
        .into_iter()
        .filter(|(name, _)| !listed(name))
        .collect()
}

/// The freshness lifetime of a response in a shared cache, in seconds (RFC 9111 §4.2.1):
/// `s-maxage`, else `max-age`, else `Expires` minus `Date` (or minus the time of receipt
/// when `Date` is missing or invalid), else a heuristic (§4.2.2): a tenth of the time
/// between `Last-Modified` and `Date`, at most [`HEURISTIC_MAX`], for a heuristically
/// cacheable status or a `public` response, 0 otherwise.
///
/// Invalid freshness information gives 0, i.e. stale: an invalid `s-maxage` or `max-age`
/// (§4.2.1: "Caches are encouraged to consider responses that have invalid freshness
/// information … to be stale"; it does not fall through to the next rule) and an invalid
/// `Expires` (§5.3: "MUST interpret invalid date formats, especially the value "0", as
/// representing a time in the past").
pub(crate) fn freshness_lifetime(meta: &ResponseMeta) -> u64 {
    let cc = ResponseDirectives::from_headers(&meta.headers);
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return seconds.valid().unwrap_or(0);
    }
    let date = date_field(&meta.headers, "date").unwrap_or(meta.response_time);
    if let Some(expires) = first_line(&meta.headers, "expires") {
        return match httpdate::parse_http_date(expires) {
            Ok(at) => seconds_between(at, date).min(DELTA_SECONDS_MAX),
            Err(_) => 0,
        };
    }
    if !(heuristically_cacheable(meta.status) || cc.public) {
        return 0;
    }
    match date_field(&meta.headers, "last-modified") {
        Some(modified) => (seconds_between(date, modified) / 10).min(HEURISTIC_MAX),
        None => 0,
    }
}

/// The Age field's value (RFC 9111 §5.1) as `age_value` for §4.2.3: `Some(0)` when
/// absent, `None` when invalid.
///
/// Valid means one line holding one delta-seconds. RFC 9111 §5.1 suggests using the first
/// member of a list (`Age: 0, 7200`) and ignoring an invalid value; this cache instead
/// treats any other Age (a list, two lines, a sign, a fraction, a parameter) as invalid
/// freshness information, which §4.2.1 encourages caches to consider stale. That is the
/// safe side of a value an intermediary garbled, and what the cache test suite's required
/// age-parse tests expect (all but `age-parse-prefix`, which wants the first member of
/// `0,7200` used).
fn age_value(headers: &[(String, String)]) -> Option<u64> {
    let mut lines = field_lines(headers, "age");
    let Some(first) = lines.next() else {
        return Some(0);
    };
    if lines.next().is_some() {
        return None;
    }
    DeltaSeconds::parse(first.trim_matches([' ', '\t'])).valid()
}

/// The current age of a stored response at `now`, in seconds, exactly as RFC 9111 §4.2.3
/// computes it:
///
/// ```text
/// apparent_age = max(0, response_time - date_value)
/// response_delay = response_time - request_time
/// corrected_age_value = age_value + response_delay
/// corrected_initial_age = max(apparent_age, corrected_age_value)
/// resident_time = now - response_time
/// current_age = corrected_initial_age + resident_time
/// ```
///
/// `date_value` is the time of receipt when Date is missing or invalid (RFC 9110 §6.6.1),
/// so that it adds nothing. The sums are taken before rounding down to whole seconds. An
/// invalid Age (see `age_value`) gives [`DELTA_SECONDS_MAX`], an age no lifetime reaches:
/// stale. The result is at most that, as RFC 9111 §1.2.2 asks of overflows.
///
/// This is also the value of the Age header the cache sends with a stored response
/// (RFC 9111 §5.1), which is why it is in seconds.
pub(crate) fn current_age(meta: &ResponseMeta, now: SystemTime) -> u64 {
    let Some(age_value) = age_value(&meta.headers) else {
        return DELTA_SECONDS_MAX;
    };
    let since = |later: SystemTime, earlier: SystemTime| {
        later.duration_since(earlier).unwrap_or(Duration::ZERO)
    };
    let date_value = date_field(&meta.headers, "date").unwrap_or(meta.response_time);
    let apparent_age = since(meta.response_time, date_value);
    let response_delay = since(meta.response_time, meta.request_time);
    let corrected_age_value = Duration::from_secs(age_value).saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = since(now, meta.response_time);
    corrected_initial_age
        .saturating_add(resident_time)
        .as_secs()
        .min(DELTA_SECONDS_MAX)
}

/// What a cache may do with a stored response for a request (RFC 9111 §4, §4.2.4, §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Serve it without contacting the origin: it is fresh enough for the request, or
    /// stale within the client's `max-stale`.
    Serve,
    /// Serve it now, and revalidate it in the background: stale, but within the
    /// response's `stale-while-revalidate` (RFC 5861 §3).
    ServeAndRevalidate,
    /// Send a conditional request first (§4.3.1); serve it only on a 304.
    Validate,
    /// Do not use it at all: forward the request as a miss. A shared cache must not use
    /// a response for a request with Authorization unless the response allows it (§3.5).
    Forward,
    /// The request said `only-if-cached` and the stored response cannot be served
    /// without the origin: answer 504 (§5.2.1.7).
    GatewayTimeout,
}

/// Decides whether the stored response `meta` may answer a request with
/// `request_headers` at `now` (the stored response already matched the request's key and
/// Vary: its variant key, [`vary_key`], is the request's).
///
/// In order: a request with Authorization is forwarded unless the response allows it
/// (§3.5); an unqualified `no-cache` in the response always means validation (§5.2.2.4);
/// while the response is fresh and `immutable` (RFC 8246), a client's reload (request
/// `no-cache`, `max-age`, Pragma) is not passed on, as the origin promised the body will
/// not change; otherwise request `no-cache` (§5.2.1.4), `max-age` (§5.2.1.1, the age must
/// not exceed it) and `min-fresh` (§5.2.1.3, it must stay fresh that much longer) ask for
/// validation, as does an invalid value of either. A fresh response (`lifetime >
/// current_age`, §4.2) is served. A stale one is validated when the response forbids
/// serving it stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`: §4.2.4), and
/// otherwise served if the client's `max-stale` covers its staleness (§5.2.1.2), or served
/// while revalidating within `stale-while-revalidate`. With `only-if-cached`, anything
/// that would need the origin becomes [`Reuse::GatewayTimeout`].
pub(crate) fn reuse(
    meta: &ResponseMeta,
    request_headers: &[(String, String)],
    now: SystemTime,
) -> Reuse {
    let request = RequestDirectives::from_headers(request_headers);
    let decision = decide(meta, request_headers, &request, now);
    if request.only_if_cached && matches!(decision, Reuse::Validate | Reuse::Forward) {
        return Reuse::GatewayTimeout;
    }
    decision
}

/// [`reuse`] before `only-if-cached` is applied, so that rule sits in one place.
fn decide(
    meta: &ResponseMeta,
    request_headers: &[(String, String)],
    request: &RequestDirectives,
    now: SystemTime,
) -> Reuse {
    let cc = ResponseDirectives::from_headers(&meta.headers);
    if has_field(request_headers, "authorization") && !authorization_allowed(&cc) {
        return Reuse::Forward;
    }
    if cc.no_cache == Some(Fields::All) {
        return Reuse::Validate;
    }
    let lifetime = freshness_lifetime(meta);
    let age = current_age(meta, now);
    let fresh = lifetime > age;
    if !(fresh && cc.immutable) {
        if request.no_cache {
            return Reuse::Validate;
        }
        match request.max_age {
            Some(DeltaSeconds::Valid(max_age)) if age <= max_age => {}
            Some(_) => return Reuse::Validate,
            None => {}
        }
        match request.min_fresh {
            Some(DeltaSeconds::Valid(min_fresh)) if lifetime >= age.saturating_add(min_fresh) => {}
            Some(_) => return Reuse::Validate,
            None => {}
        }
    }
    if fresh {
        return Reuse::Serve;
    }
    if stale_forbidden(&cc) {
        return Reuse::Validate;
    }
    let staleness = age - lifetime;
    match request.max_stale {
        Some(MaxStale::Any) => return Reuse::Serve,
        Some(MaxStale::Seconds(max_stale)) if staleness <= max_stale => return Reuse::Serve,
        _ => {}
    }
    match cc.stale_while_revalidate {
        Some(DeltaSeconds::Valid(window)) if staleness <= window => Reuse::ServeAndRevalidate,
        _ => Reuse::Validate,
    }
}

/// RFC 9111 §4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
/// explicit in-protocol directive (e.g., by a no-cache response directive, a
/// must-revalidate response directive, or an applicable s-maxage or proxy-revalidate
/// response directive". `s-maxage` applies to this (shared) cache and, by §5.2.2.10,
/// carries proxy-revalidate's meaning.
fn stale_forbidden(cc: &ResponseDirectives) -> bool {
    cc.no_cache == Some(Fields::All)
        || cc.must_revalidate
        || cc.proxy_revalidate
        || cc.s_maxage.is_some()
}

/// Whether the stored response forbids being served stale (see `stale_forbidden`): when
/// the origin cannot be reached to validate it, the cache must answer an error, which
/// RFC 9111 §5.2.2.2 says "SHOULD be 504 (Gateway Timeout)".
pub(crate) fn never_stale(meta: &ResponseMeta) -> bool {
    stale_forbidden(&ResponseDirectives::from_headers(&meta.headers))
}

/// Whether the stored response may be served when validating it failed (the origin is
/// unreachable, timed out, or answered 500, 502, 503 or 504: RFC 5861 §4), at `now`.
///
/// Serving stale is allowed "by the client or origin server" or by "configuration in
/// accordance with an out-of-band contract" (RFC 9111 §4.2.4), so the staleness allowed
/// is the largest of the response's `stale-if-error`, the request's `stale-if-error`, and
/// `configured` (the proxy's `--stale-if-error` seconds). It is never allowed when the
/// response forbids stale use (`no-cache`, `must-revalidate`, `proxy-revalidate`,
/// `s-maxage`: §4.2.4 and §5.2.2.2, "if a cache is disconnected, the cache MUST generate
/// an error response rather than reuse the stale response"), nor when the response may
/// not answer this request at all (§3.5).
pub(crate) fn serve_stale_on_error(
    meta: &ResponseMeta,
    request_headers: &[(String, String)],
    now: SystemTime,
    configured: u64,
) -> bool {
    let cc = ResponseDirectives::from_headers(&meta.headers);
    if stale_forbidden(&cc)
        || (has_field(request_headers, "authorization") && !authorization_allowed(&cc))
    {
        return false;
    }
    let request = RequestDirectives::from_headers(request_headers);
    let allowed = [cc.stale_if_error, request.stale_if_error]
        .into_iter()
        .filter_map(|d| d.and_then(DeltaSeconds::valid))
        .fold(configured, u64::max);
    let staleness = current_age(meta, now).saturating_sub(freshness_lifetime(meta));
    staleness <= allowed
}

/// A field value made comparable for Vary (RFC 9111 §4.1 lets a cache match values that
/// differ only by "adding or removing whitespace, where allowed in the header field's
/// syntax"): outside quoted strings, whitespace around commas and at the ends goes, and
/// other runs of whitespace become one space; inside quoted strings nothing changes.
fn normalize_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_quotes = false;
    let mut escaped = false;
    let mut pending_space = false;
    for c in value.chars() {
        if in_quotes {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            ' ' | '\t' => pending_space = true,
            ',' => {
                pending_space = false;
                out.push(',');
            }
            _ => {
                if pending_space && !out.is_empty() && !out.ends_with(',') {
                    out.push(' ');
                }
                pending_space = false;
                if c == '"' {
                    in_quotes = true;
                }
                out.push(c);
            }
        }
    }
    out
}

/// An Accept-Language value (whitespace already normalised) as it selects: its members
/// are language ranges, which compare case-insensitively (RFC 4647 §2), each with its own
/// weight, and members of equal weight are equally preferred (RFC 9110 §12.4.2), so
/// neither case nor order changes what a request selects: `en, de` and `De, EN` share a
/// variant.
fn normalize_languages(value: &str) -> String {
    let mut members: Vec<String> = value.split(',').map(str::to_ascii_lowercase).collect();
    members.sort();
    members.join(",")
}

/// Whether a `Vary` value nominates Accept-Language and nothing else: then a stored
/// response's Content-Language says what it was selected for.
pub(crate) fn varies_by_language_only(vary: &str) -> bool {
    let mut members = vary
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty());
    members
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("accept-language"))
        && members.all(|m| m.eq_ignore_ascii_case("accept-language"))
}

/// The language a request prefers above all others (RFC 9110 §12.5.4): the one language
/// range of its Accept-Language with the highest weight, lower-cased; `None` when the
/// field is absent or invalid, when two ranges share the highest weight, or when that
/// range is `*` or weighs 0. A stored response in exactly that language is the one an
/// origin selects for the request, whatever else the request lists (the cache test
/// suite's `vary-normalise-lang-select`: `fr;q=0.5, de;q=1.0` is answered by the `de`
/// response stored for `en, de`).
pub(crate) fn preferred_language(request_headers: &[(String, String)]) -> Option<String> {
    let value = field_value(request_headers, "accept-language")?;
    let mut best: Option<(u16, String)> = None;
    let mut tied = false;
    for member in value.split(',') {
        let mut parts = member.split(';').map(|p| p.trim_matches([' ', '\t']));
        let range = parts.next().unwrap_or("");
        if range.is_empty() {
            continue;
        }
        if !range
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        {
            return None;
        }
        let mut weight = 1000;
        for param in parts {
            let (name, q) = param.split_once('=')?;
            if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("q") {
                weight = qvalue(q.trim_matches([' ', '\t']))?;
            }
        }
        match &best {
            Some((top, _)) if weight < *top => {}
            Some((top, _)) if weight == *top => tied = true,
            _ => {
                best = Some((weight, range.to_ascii_lowercase()));
                tied = false;
            }
        }
    }
    let (weight, range) = best?;
    (!tied && weight > 0 && range != "*").then_some(range)
}

/// A qvalue (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn qvalue(q: &str) -> Option<u16> {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac),
        "1" if frac == 0 => Some(1000),
        _ => None,
    }
}

/// The secondary cache key of a request under a response's `Vary` value (RFC 9111 §4.1):
/// two requests may share a stored response exactly when their keys are equal. `None`
/// when the Vary holds `*` (or something that is not a field name), which "always fails
/// to match".
///
/// The key lists the nominated fields by lower-case name, sorted and without repeats, one
/// per line: `name:value` with the request's lines of that field combined (RFC 9110 §5.3)
/// and whitespace-normalised (Accept-Language also by case and order), or the bare `name`
/// when the request lacks the field, so
/// that "absent" only matches "absent" (§4.1). An empty Vary gives the empty key. Values
/// cannot contain a newline, so the key is unambiguous; being a plain string, it can be
/// stored with the variant and compared without the original request.
pub(crate) fn vary_key(vary: &str, request_headers: &[(String, String)]) -> Option<String> {
    let mut names = Vec::new();
    for member in vary.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        if member == "*" || !member.bytes().all(is_tchar) {
            return None;
        }
        names.push(member.to_ascii_lowercase());
    }
    names.sort();
    names.dedup();
    let mut key = String::new();
    for name in names {
        key.push_str(&name);
        if let Some(value) = field_value(request_headers, &name) {
            key.push(':');
            let value = normalize_value(&value);
            if name == "accept-language" {
                key.push_str(&normalize_languages(&value));
            } else {
                key.push_str(&value);
            }
        }
        key.push('\n');
    }
    Some(key)
}

/// An entity tag's opaque part and whether it is weak (RFC 9110 §8.8.3).
fn entity_tag(tag: &str) -> (&str, bool) {
    match tag.strip_prefix("W/") {
        Some(opaque) => (opaque, true),
        None => (tag, false),
    }
}

/// Whether a 304 may freshen the stored response (RFC 9111 §4.3.4), for a cache that
/// holds one response per variant. A strong ETag in the 304 must equal the stored one
/// (strong comparison, RFC 9110 §8.8.3.2); a weak one must match it weakly, or, when the
/// stored response has no ETag, the Last-Modified values must be equal; a 304 with no
/// validator at all may only freshen a stored response that has none either. Otherwise
/// the 304 is about another representation: the cache "MUST NOT use the new response to
/// update any stored responses" and must fetch the response whole.
pub(crate) fn may_update_from_304(
    stored: &[(String, String)],
    not_modified: &[(String, String)],
) -> bool {
    let new_tag = first_line(not_modified, "etag");
    let stored_tag = first_line(stored, "etag");
    match (new_tag.map(entity_tag), stored_tag.map(entity_tag)) {
        (Some((new, false)), stored) => return stored == Some((new, false)),
        (Some((new, true)), Some((old, _))) => return new == old,
        _ => {}
    }
    let new_modified = first_line(not_modified, "last-modified");
    let stored_modified = first_line(stored, "last-modified");
    match (new_modified, stored_modified) {
        (Some(new), Some(old)) => match (
            httpdate::parse_http_date(new),
            httpdate::parse_http_date(old),
        ) {
            (Ok(new), Ok(old)) => new == old,
            _ => new == old,
        },
        (None, _) if new_tag.is_none() => stored_tag.is_none() && stored_modified.is_none(),
        _ => false,
    }
}

/// Fields a 304 does not change in the stored response (RFC 9111 §3.2): Content-Length
/// (named there), and the fields the stored body depends on or that are processed with
/// it, which §3.2 lets a cache keep: its coding (Content-Encoding), its range
/// (Content-Range, "automatically processed") and its digest (Content-MD5). A 304 has no
/// body, so these would describe a body it did not send. The cache test suite's
/// update304 tests expect exactly these kept (and Content-Type updated).
const KEPT_ON_304: [&str; 4] = [
    "content-length",
    "content-encoding",
    "content-range",
    "content-md5",
];

/// The stored header lines after a 304 (RFC 9111 §3.2, §4.3.4; check
/// [`may_update_from_304`] first): every field of the 304 replaces all stored lines of
/// that name, except the hop-by-hop and other fields a cache does not store (§3.1,
/// [`storable_headers`]) and those in `KEPT_ON_304`. The stored `Age` always goes: the
/// stored response's age now counts from the 304 (give the result the 304's request and
/// response times), so its `age_value` is the 304's Age or none.
pub(crate) fn update_from_304(
    stored: &[(String, String)],
    not_modified: &[(String, String)],
) -> Vec<(String, String)> {
    let incoming: Vec<(String, String)> = storable_headers(not_modified)
        .into_iter()
        .filter(|(name, _)| !KEPT_ON_304.contains(&name.to_ascii_lowercase().as_str()))
        .collect();
    let replaced = |name: &str| {
        name.eq_ignore_ascii_case("age")
            || incoming.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut updated: Vec<(String, String)> = stored
        .iter()
        .filter(|(name, _)| !replaced(name))
        .cloned()
        .collect();
    updated.extend(incoming);
    // A new Cache-Control may list fields that must not be stored (§3.1).
    storable_headers(&updated)
}

/// Header lines from string pairs, to keep the origin room's test cases short.
#[cfg(test)]
pub(crate) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// Whether a stored response whose `Vary` is `vary` (all its Vary lines joined, see
    /// [`field_value`]; "" when it has none), stored for a request with
    /// `stored_request_headers`, may be used for a request with `request_headers` (RFC 9111
    /// §4.1): every nominated field must match, and `*` never does. The proxy itself
    /// compares [`vary_key`]s, which are part of its cache keys; this states the rule the
    /// way §4.1 does, for the tests.
    fn vary_matches(
        vary: &str,
        stored_request_headers: &[(String, String)],
        request_headers: &[(String, String)],
    ) -> bool {
        match (
            vary_key(vary, stored_request_headers),
            vary_key(vary, request_headers),
        ) {
            (Some(stored), Some(new)) => stored == new,
            _ => false,
        }
    }

    /// A fixed clock: `t(s)` is `s` seconds after an arbitrary whole-second instant.
    fn t(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_600_000_000 + seconds)
    }

    /// `t(s)` as an HTTP-date.
    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(t(seconds))
    }

    /// A 200 requested at `t(1000)` and received at once, with `Date: t(1000)`.
    fn meta(extra: &[(&str, &str)]) -> ResponseMeta {
        meta_status(200, extra)
    }

    /// As [`meta`], with another status.
    fn meta_status(status: u16, extra: &[(&str, &str)]) -> ResponseMeta {
        let mut headers = h(&[("Date", &date(1000))]);
        headers.extend(h(extra));
        ResponseMeta {
            status,
            headers,
            request_time: t(1000),
            response_time: t(1000),
        }
    }

    #[test]
    fn field_value_combines_lines_in_order() {
        let headers = h(&[("Vary", "a"), ("X", "1"), ("vary", "b, c")]);
        assert_eq!(field_value(&headers, "VARY").as_deref(), Some("a, b, c"));
        assert_eq!(field_value(&headers, "x").as_deref(), Some("1"));
        assert_eq!(field_value(&headers, "y"), None);
    }

    #[test]
    fn storable_needs_get_or_head() {
        let fresh = h(&[("Cache-Control", "max-age=60")]);
        assert!(storable("GET", &[], 200, &fresh));
        assert!(storable("HEAD", &[], 200, &fresh));
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get", "M-SEARCH"] {
            assert!(!storable(method, &[], 200, &fresh), "{method}");
        }
    }

    #[test]
    fn storable_heuristically_cacheable_statuses_without_freshness() {
        for status in [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(heuristically_cacheable(status), "{status}");
        }
        for status in [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(storable("GET", &[], status, &[]), "{status}");
        }
        for status in [201, 202, 302, 303, 307, 400, 403, 500, 502, 503, 504, 599] {
            assert!(!storable("GET", &[], status, &[]), "{status}");
        }
    }

    #[test]
    fn storable_with_explicit_freshness_or_public() {
        for status in [201, 302, 307, 403, 500, 503, 599] {
            assert!(
                storable("GET", &[], status, &h(&[("Cache-Control", "max-age=1")])),
                "{status}"
            );
            assert!(
                storable("GET", &[], status, &h(&[("Cache-Control", "s-maxage=1")])),
                "{status}"
            );
            assert!(
                storable("GET", &[], status, &h(&[("Expires", &date(5))])),
                "{status}"
            );
        }
        assert!(storable(
            "GET",
            &[],
            599,
            &h(&[("Cache-Control", "public")])
        ));
        // Invalid freshness still stores (stale, validated before use).
        assert!(storable("GET", &[], 201, &h(&[("Expires", "0")])));
        assert!(storable(
            "GET",
            &[],
            201,
            &h(&[("Cache-Control", "max-age=x")])
        ));
        // Not final, or not a status at all.
        assert!(!storable(
            "GET",
            &[],
            100,
            &h(&[("Cache-Control", "max-age=1")])
        ));
        assert!(!storable(
            "GET",
            &[],
            600,
            &h(&[("Cache-Control", "max-age=1")])
        ));
    }

    #[test]
    fn storable_206_but_never_304() {
        let fresh = h(&[("Cache-Control", "max-age=60, public")]);
        assert!(storable("GET", &[], 206, &fresh));
        assert!(!storable("GET", &[], 304, &fresh));
    }

    #[test]
    fn storable_no_store_private_and_must_understand() {
        let s = |cc: &str, status| storable("GET", &[], status, &h(&[("Cache-Control", cc)]));
        assert!(!s("max-age=60, no-store", 200));
        assert!(!s("No-Store", 200));
        assert!(!s("max-age=60, private", 200));
        assert!(s("max-age=60, private=\"Set-Cookie\"", 200));
        // must-understand with a status the cache follows: no-store is ignored
        // (RFC 9111 §5.2.2.3).
        assert!(s("max-age=60, must-understand, no-store", 200));
        assert!(s("max-age=60, must-understand", 404));
        // ... and with one it does not, nothing is stored.
        assert!(!s("max-age=60, must-understand", 599));
        assert!(!s("max-age=60, must-understand, no-store", 599));
        assert!(status_understood(308));
        assert!(status_understood(206));
        assert!(!status_understood(304));
        assert!(!status_understood(299));
    }

    #[test]
    fn storable_request_no_store() {
        let fresh = h(&[("Cache-Control", "max-age=60")]);
        let no_store = h(&[("Cache-Control", "no-store")]);
        assert!(!storable("GET", &no_store, 200, &fresh));
        assert!(storable(
            "GET",
            &h(&[("Cache-Control", "no-cache")]),
            200,
            &fresh
        ));
    }

    #[test]
    fn storable_with_authorization_only_when_allowed() {
        let auth = h(&[("Authorization", "Basic Zm9vOmJhcg==")]);
        let s = |cc: &str| storable("GET", &auth, 200, &h(&[("Cache-Control", cc)]));
        assert!(!s("max-age=60"));
        assert!(!storable(
            "GET",
            &auth,
            200,
            &h(&[("Expires", &date(9000))])
        ));
        assert!(s("max-age=60, public"));
        assert!(s("max-age=60, must-revalidate"));
        assert!(s("s-maxage=60"));
        assert!(!s("max-age=60, proxy-revalidate"));
    }

    #[test]
    fn lifetime_explicit_precedence() {
        let expires = date(1500);
        let l =
            |cc: &str| freshness_lifetime(&meta(&[("Cache-Control", cc), ("Expires", &expires)]));
        assert_eq!(l("max-age=60, s-maxage=120"), 120);
        assert_eq!(l("s-maxage=120, max-age=60"), 120);
        assert_eq!(l("max-age=60"), 60);
        assert_eq!(l("max-age=0"), 0);
        assert_eq!(l("public"), 500);
        // Invalid freshness is stale; it does not fall back to the next rule.
        assert_eq!(l("max-age=a60"), 0);
        assert_eq!(l("s-maxage=x, max-age=60"), 0);
        assert_eq!(l("max-age=60, max-age=10"), 60);
        assert_eq!(l("max-age=99999999999"), DELTA_SECONDS_MAX);
    }

    #[test]
    fn lifetime_from_expires_and_date() {
        assert_eq!(freshness_lifetime(&meta(&[("Expires", &date(1100))])), 100);
        assert_eq!(freshness_lifetime(&meta(&[("Expires", &date(1000))])), 0);
        assert_eq!(freshness_lifetime(&meta(&[("Expires", &date(900))])), 0);
        for invalid in ["0", "-1", "tomorrow", "Thu, 18 Aug 2050 02:01:18 UTC"] {
            assert_eq!(
                freshness_lifetime(&meta(&[("Expires", invalid)])),
                0,
                "{invalid}"
            );
        }
        // Two Expires lines: the first counts (RFC 9111 §4.2.1).
        let two = meta(&[("Expires", &date(1100)), ("Expires", &date(5000))]);
        assert_eq!(freshness_lifetime(&two), 100);
        // No Date, or an invalid one: against the time the response arrived.
        let mut no_date = meta(&[("Expires", &date(1100))]);
        no_date.headers.remove(0);
        no_date.response_time = t(1040);
        assert_eq!(freshness_lifetime(&no_date), 60);
        let mut bad_date = meta(&[("Expires", &date(1100))]);
        bad_date.headers[0].1 = "yesterday".into();
        bad_date.response_time = t(1010);
        assert_eq!(freshness_lifetime(&bad_date), 90);
    }

    #[test]
    fn lifetime_heuristic_from_last_modified() {
        let l = |status, extra: &[(&str, &str)]| freshness_lifetime(&meta_status(status, extra));
        assert_eq!(l(200, &[("Last-Modified", &date(0))]), 100);
        assert_eq!(l(404, &[("Last-Modified", &date(995))]), 0);
        assert_eq!(l(404, &[("Last-Modified", &date(985))]), 1);
        // Capped at a day: Last-Modified is 1000 s before Date here, so move Date on.
        let mut old = meta(&[("Last-Modified", &date(0))]);
        old.headers[0].1 = date(100 * 86_400);
        assert_eq!(freshness_lifetime(&old), HEURISTIC_MAX);
        // Not for other statuses unless public; not without or with a bad Last-Modified,
        // or one after Date; never next to explicit freshness.
        assert_eq!(l(201, &[("Last-Modified", &date(0))]), 0);
        assert_eq!(l(599, &[("Last-Modified", &date(0))]), 0);
        assert_eq!(
            l(
                599,
                &[("Last-Modified", &date(0)), ("Cache-Control", "public")]
            ),
            100
        );
        assert_eq!(l(200, &[]), 0);
        assert_eq!(l(200, &[("Last-Modified", "long ago")]), 0);
        assert_eq!(l(200, &[("Last-Modified", &date(2000))]), 0);
        assert_eq!(
            l(
                200,
                &[("Last-Modified", &date(0)), ("Cache-Control", "max-age=7")]
            ),
            7
        );
        assert_eq!(
            l(
                200,
                &[("Last-Modified", &date(0)), ("Expires", &date(1003))]
            ),
            3
        );
    }

    #[test]
    fn current_age_follows_4_2_3_exactly() {
        // Requested at 1000, received at 1002, generated (Date) at 1001, Age 10 from an
        // upstream cache: apparent_age 1, response_delay 2, corrected_age_value 12,
        // corrected_initial_age 12; resident 30 s at 1032.
        let m = ResponseMeta {
            status: 200,
            headers: h(&[("Date", &date(1001)), ("Age", "10")]),
            request_time: t(1000),
            response_time: t(1002),
        };
        assert_eq!(current_age(&m, t(1002)), 12);
        assert_eq!(current_age(&m, t(1032)), 42);
        // A slow Date: apparent_age (102) beats corrected_age_value (0 + 2).
        let slow = ResponseMeta {
            headers: h(&[("Date", &date(900))]),
            ..m.clone()
        };
        assert_eq!(current_age(&slow, t(1002)), 102);
        assert_eq!(current_age(&slow, t(1010)), 110);
        // A Date ahead of our clock counts as 0, and so does no Date at all.
        let fast = ResponseMeta {
            headers: h(&[("Date", &date(5000)), ("Age", "3")]),
            ..m.clone()
        };
        assert_eq!(current_age(&fast, t(1002)), 5);
        let no_date = ResponseMeta {
            headers: h(&[("Age", "3")]),
            ..m.clone()
        };
        assert_eq!(current_age(&no_date, t(1012)), 15);
        // A clock that went back does not make the age negative.
        assert_eq!(current_age(&no_date, t(900)), 5);
    }

    #[test]
    fn current_age_rounds_down_once_at_the_end() {
        let ms = |millis| t(1000) + Duration::from_millis(millis);
        let m = ResponseMeta {
            status: 200,
            headers: h(&[("Date", &date(1000))]),
            request_time: ms(0),
            response_time: ms(600),
        };
        // apparent 0.6 s, delay 0.6 s, resident 0.5 s: 1.1 s.
        assert_eq!(current_age(&m, ms(1100)), 1);
        assert_eq!(current_age(&m, ms(1599)), 1);
        assert_eq!(current_age(&m, ms(900)), 0);
    }

    #[test]
    fn current_age_invalid_age_is_stale() {
        for age in [
            "abc",
            "-7200",
            "7200.0",
            "7200;foo=bar",
            "7200;foo=111",
            "0, 0",
            "0,7200",
            "",
        ] {
            let m = meta(&[("Cache-Control", "max-age=3600"), ("Age", age)]);
            assert_eq!(current_age(&m, t(1000)), DELTA_SECONDS_MAX, "{age:?}");
            assert_eq!(reuse(&m, &[], t(1000)), Reuse::Validate, "{age:?}");
        }
        let two_lines = meta(&[("Age", "0"), ("Age", "0")]);
        assert_eq!(current_age(&two_lines, t(1000)), DELTA_SECONDS_MAX);
        let spaced = meta(&[("Age", " 7 ")]);
        assert_eq!(current_age(&spaced, t(1000)), 7);
        let huge = meta(&[("Age", "2147483648")]);
        assert_eq!(current_age(&huge, t(5000)), DELTA_SECONDS_MAX);
    }

    #[test]
    fn reuse_fresh_until_age_reaches_lifetime() {
        let m = meta(&[("Cache-Control", "max-age=10")]);
        assert_eq!(reuse(&m, &[], t(1000)), Reuse::Serve);
        assert_eq!(reuse(&m, &[], t(1009)), Reuse::Serve);
        assert_eq!(reuse(&m, &[], t(1010)), Reuse::Validate);
        // An Age from upstream counts.
        let aged = meta(&[("Cache-Control", "max-age=10"), ("Age", "8")]);
        assert_eq!(reuse(&aged, &[], t(1001)), Reuse::Serve);
        assert_eq!(reuse(&aged, &[], t(1002)), Reuse::Validate);
        // No explicit freshness, no Last-Modified: stale at once.
        assert_eq!(reuse(&meta(&[]), &[], t(1000)), Reuse::Validate);
    }

    #[test]
    fn reuse_response_no_cache() {
        let m = meta(&[("Cache-Control", "max-age=3600, no-cache")]);
        assert_eq!(reuse(&m, &[], t(1000)), Reuse::Validate);
        // Qualified: only the listed fields need validation, and they are not stored.
        let q = meta(&[("Cache-Control", "max-age=3600, no-cache=\"a\"")]);
        assert_eq!(reuse(&q, &[], t(1000)), Reuse::Serve);
    }

    #[test]
    fn reuse_request_directives() {
        let m = meta(&[("Cache-Control", "max-age=100")]);
        let r = |cc: &str, now| reuse(&m, &h(&[("Cache-Control", cc)]), t(now));
        assert_eq!(r("no-cache", 1000), Reuse::Validate);
        assert_eq!(
            reuse(&m, &h(&[("Pragma", "no-cache")]), t(1000)),
            Reuse::Validate
        );
        assert_eq!(r("max-age=0", 1001), Reuse::Validate);
        assert_eq!(r("max-age=5", 1005), Reuse::Serve);
        assert_eq!(r("max-age=5", 1006), Reuse::Validate);
        assert_eq!(r("max-age=five", 1000), Reuse::Validate);
        assert_eq!(r("min-fresh=50", 1050), Reuse::Serve);
        assert_eq!(r("min-fresh=51", 1050), Reuse::Validate);
        assert_eq!(r("min-fresh=x", 1000), Reuse::Validate);
        assert_eq!(r("no-store", 1000), Reuse::Serve);
        assert_eq!(r("nothing-to-see-here", 1000), Reuse::Serve);
    }

    #[test]
    fn reuse_stale_with_max_stale() {
        let m = meta(&[("Cache-Control", "max-age=10")]);
        let r = |cc: &str, now| reuse(&m, &h(&[("Cache-Control", cc)]), t(now));
        assert_eq!(r("max-stale", 5000), Reuse::Serve);
        assert_eq!(r("max-stale=5", 1015), Reuse::Serve);
        assert_eq!(r("max-stale=4", 1015), Reuse::Validate);
        for forbids in ["must-revalidate", "proxy-revalidate", "no-cache"] {
            let m = meta(&[("Cache-Control", &format!("max-age=10, {forbids}"))]);
            assert_eq!(
                reuse(&m, &h(&[("Cache-Control", "max-stale")]), t(1015)),
                Reuse::Validate,
                "{forbids}"
            );
        }
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10).
        let s = meta(&[("Cache-Control", "s-maxage=10")]);
        assert_eq!(
            reuse(&s, &h(&[("Cache-Control", "max-stale")]), t(1015)),
            Reuse::Validate
        );
    }

    #[test]
    fn reuse_stale_while_revalidate() {
        let m = meta(&[("Cache-Control", "max-age=10, stale-while-revalidate=10")]);
        assert_eq!(reuse(&m, &[], t(1005)), Reuse::Serve);
        assert_eq!(reuse(&m, &[], t(1015)), Reuse::ServeAndRevalidate);
        assert_eq!(reuse(&m, &[], t(1020)), Reuse::ServeAndRevalidate);
        assert_eq!(reuse(&m, &[], t(1021)), Reuse::Validate);
        let forbidden = meta(&[(
            "Cache-Control",
            "max-age=10, stale-while-revalidate=10, must-revalidate",
        )]);
        assert_eq!(reuse(&forbidden, &[], t(1015)), Reuse::Validate);
        let invalid = meta(&[("Cache-Control", "max-age=10, stale-while-revalidate=x")]);
        assert_eq!(reuse(&invalid, &[], t(1015)), Reuse::Validate);
    }

    #[test]
    fn reuse_immutable_ignores_reloads_while_fresh() {
        let m = meta(&[("Cache-Control", "max-age=100, immutable")]);
        let reload = h(&[("Cache-Control", "no-cache")]);
        assert_eq!(reuse(&m, &reload, t(1050)), Reuse::Serve);
        assert_eq!(
            reuse(&m, &h(&[("Cache-Control", "max-age=0")]), t(1050)),
            Reuse::Serve
        );
        assert_eq!(
            reuse(&m, &h(&[("Pragma", "no-cache")]), t(1050)),
            Reuse::Serve
        );
        assert_eq!(reuse(&m, &reload, t(1100)), Reuse::Validate);
        assert_eq!(reuse(&m, &[], t(1100)), Reuse::Validate);
    }

    #[test]
    fn reuse_only_if_cached() {
        let m = meta(&[("Cache-Control", "max-age=10, stale-while-revalidate=10")]);
        let only = h(&[("Cache-Control", "only-if-cached")]);
        assert_eq!(reuse(&m, &only, t(1005)), Reuse::Serve);
        assert_eq!(reuse(&m, &only, t(1015)), Reuse::ServeAndRevalidate);
        assert_eq!(reuse(&m, &only, t(1030)), Reuse::GatewayTimeout);
        let with_auth = h(&[("Cache-Control", "only-if-cached"), ("Authorization", "x")]);
        assert_eq!(reuse(&m, &with_auth, t(1005)), Reuse::GatewayTimeout);
    }

    #[test]
    fn reuse_with_authorization() {
        let auth = h(&[("Authorization", "Bearer x")]);
        let m = meta(&[("Cache-Control", "max-age=100")]);
        assert_eq!(reuse(&m, &auth, t(1000)), Reuse::Forward);
        let public = meta(&[("Cache-Control", "max-age=100, public")]);
        assert_eq!(reuse(&public, &auth, t(1000)), Reuse::Serve);
        let s_maxage = meta(&[("Cache-Control", "s-maxage=100")]);
        assert_eq!(reuse(&s_maxage, &auth, t(1000)), Reuse::Serve);
    }

    #[test]
    fn stale_on_error() {
        // Lifetime 10, stale by 90 at 1100.
        let m = meta(&[("Cache-Control", "max-age=10")]);
        assert!(serve_stale_on_error(&m, &[], t(1100), 300));
        assert!(serve_stale_on_error(&m, &[], t(1100), 90));
        assert!(!serve_stale_on_error(&m, &[], t(1100), 89));
        assert!(serve_stale_on_error(&m, &[], t(1005), 0));
        let sie = meta(&[("Cache-Control", "max-age=10, stale-if-error=100")]);
        assert!(serve_stale_on_error(&sie, &[], t(1110), 0));
        assert!(!serve_stale_on_error(&sie, &[], t(1111), 0));
        let asked = h(&[("Cache-Control", "stale-if-error=90")]);
        assert!(serve_stale_on_error(&m, &asked, t(1100), 0));
        assert!(!serve_stale_on_error(&m, &asked, t(1101), 0));
        for forbids in [
            "must-revalidate",
            "proxy-revalidate",
            "no-cache",
            "s-maxage=10",
        ] {
            let f = meta(&[(
                "Cache-Control",
                &format!("max-age=10, stale-if-error=1000, {forbids}"),
            )]);
            assert!(!serve_stale_on_error(&f, &[], t(1100), 300), "{forbids}");
        }
        let auth = h(&[("Authorization", "x")]);
        assert!(!serve_stale_on_error(&m, &auth, t(1005), 300));
    }

    #[test]
    fn hop_by_hop_fields_and_connection_options_go() {
        let headers = h(&[
            ("Connection", "keep-alive, X-A"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Trailer", "X-Sum"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Proxy-Authentication-Info", "x"),
            ("x-a", "1"),
            ("X-B", "2"),
            ("connection", " x-b ,,"),
            ("Set-Cookie", "a=1"),
            ("Cache-Control", "max-age=1"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "5"),
        ]);
        assert_eq!(
            strip_hop_by_hop(&headers),
            h(&[
                ("Set-Cookie", "a=1"),
                ("Cache-Control", "max-age=1"),
                ("Set-Cookie", "b=2"),
                ("Content-Length", "5"),
            ])
        );
        assert_eq!(strip_hop_by_hop(&[]), Vec::new());
    }

    #[test]
    fn storable_headers_drop_qualified_private_and_no_cache_fields() {
        let headers = h(&[
            ("Cache-Control", "no-cache=\"a\", max-age=3600"),
            ("Cache-Control", "private=\"B, c\""),
            ("A", "1"),
            ("b", "2"),
            ("C", "3"),
            ("D", "4"),
            ("Connection", "d"),
        ]);
        assert_eq!(
            storable_headers(&headers),
            h(&[
                ("Cache-Control", "no-cache=\"a\", max-age=3600"),
                ("Cache-Control", "private=\"B, c\""),
            ])
        );
        // Unqualified no-cache keeps every field: it asks for validation instead.
        let plain = h(&[("Cache-Control", "no-cache"), ("A", "1")]);
        assert_eq!(storable_headers(&plain), plain);
    }

    #[test]
    fn vary_key_lists_nominated_fields() {
        let request = h(&[
            ("Accept-Encoding", "gzip,  br"),
            ("Accept-Language", "en"),
            ("accept-language", "fr"),
            ("X-Empty", ""),
        ]);
        assert_eq!(
            vary_key(
                "Accept-Language, accept-encoding, X-Missing, X-Empty",
                &request
            )
            .as_deref(),
            Some("accept-encoding:gzip,br\naccept-language:en,fr\nx-empty:\nx-missing\n")
        );
        assert_eq!(vary_key("", &request).as_deref(), Some(""));
        assert_eq!(vary_key(" , ", &request).as_deref(), Some(""));
        assert_eq!(vary_key("Foo, FOO, foo", &[]).as_deref(), Some("foo\n"));
        let lang = |value: &str| vary_key("Accept-Language", &h(&[("Accept-Language", value)]));
        assert_eq!(lang("en, de"), lang("De,EN"));
        assert_eq!(lang("en;q=0.5, de"), lang("de, EN;Q=0.5"));
        assert_ne!(lang("en;q=0.5, de"), lang("en, de;q=0.5"));
    }

    #[test]
    fn the_preferred_language_is_the_one_range_weighted_highest() {
        let top = |value: &str| preferred_language(&h(&[("Accept-Language", value)]));
        assert_eq!(top("fr;q=0.5, de;q=1.0").as_deref(), Some("de"));
        assert_eq!(top("DE").as_deref(), Some("de"));
        assert_eq!(top("en-GB;q=0.9, fr;Q=0.95").as_deref(), Some("fr"));
        assert_eq!(top("en, de"), None, "a tie");
        assert_eq!(top("*, de;q=0.5"), None);
        assert_eq!(top("de;q=0"), None);
        assert_eq!(top("de;q=2"), None, "invalid");
        assert_eq!(top("de;q=0.1234"), None, "invalid");
        assert_eq!(top("d e"), None, "invalid");
        assert_eq!(preferred_language(&[]), None);
        assert!(varies_by_language_only(" accept-language"));
        assert!(varies_by_language_only("Accept-Language, accept-language"));
        assert!(!varies_by_language_only("Accept-Language, Accept-Encoding"));
        assert!(!varies_by_language_only(""));
    }

    #[test]
    fn vary_star_or_garbage_never_matches() {
        let request = h(&[("Foo", "1")]);
        for vary in ["*", "*, *", ", *", "*, Foo", "Foo, *", "Fo o", "\"Foo\""] {
            assert_eq!(vary_key(vary, &request), None, "{vary:?}");
            assert!(!vary_matches(vary, &request, &request), "{vary:?}");
        }
        // Two lines, "" then "*", joined as the store would join them.
        let lines = h(&[("Vary", ""), ("Vary", "*")]);
        let joined = field_value(&lines, "vary").unwrap_or_default();
        assert!(!vary_matches(&joined, &request, &request));
    }

    #[test]
    fn vary_matching() {
        let stored = h(&[("Foo", "1"), ("Bar", "a, b")]);
        let m = |vary: &str, new: &[(&str, &str)]| vary_matches(vary, &stored, &h(new));
        assert!(m("Foo", &[("foo", "1")]));
        assert!(!m("Foo", &[("Foo", "2")]));
        assert!(!m("Foo", &[]));
        assert!(m("Other", &[("Foo", "2")]));
        assert!(!m("other", &[("Other", "")]));
        assert!(m("", &[]));
        assert!(!m("Foo, Bar", &[("Foo", "1")]));
        // Lines combined, whitespace normalised, values case-sensitive.
        assert!(m(
            "Foo, Bar",
            &[("Foo", "1"), ("Bar", "a"), ("BAR", "  b ")]
        ));
        assert!(m("Bar", &[("Bar", "a,b")]));
        assert!(!m("Bar", &[("Bar", "b, a")]));
        assert!(!m("Bar", &[("Bar", "A, B")]));
    }

    #[test]
    fn vary_values_normalise_outside_quotes_only() {
        assert_eq!(normalize_value("  a ,  b  "), "a,b");
        assert_eq!(normalize_value("x \t  y"), "x y");
        assert_eq!(normalize_value("\"a  , b\" , c"), "\"a  , b\",c");
        assert_eq!(normalize_value("\"a \\\" ,  b\"  ,c"), "\"a \\\" ,  b\",c");
        assert_eq!(normalize_value(""), "");
    }

    #[test]
    fn a_304_updates_only_the_representation_it_validates() {
        let stored = h(&[("ETag", "\"abc\""), ("Last-Modified", &date(0))]);
        let ok = |nm: &[(&str, &str)]| may_update_from_304(&stored, &h(nm));
        assert!(ok(&[("ETag", "\"abc\"")]));
        assert!(!ok(&[("ETag", "\"def\"")]));
        // Weak comparison for a weak tag; a strong tag needs a strong match.
        assert!(ok(&[("ETag", "W/\"abc\"")]));
        assert!(!ok(&[("ETag", "W/\"def\"")]));
        let weak_stored = h(&[("ETag", "W/\"abc\"")]);
        assert!(!may_update_from_304(
            &weak_stored,
            &h(&[("ETag", "\"abc\"")])
        ));
        assert!(may_update_from_304(
            &weak_stored,
            &h(&[("ETag", "W/\"abc\"")])
        ));
        // No ETag in the 304: Last-Modified decides.
        assert!(ok(&[("Last-Modified", &date(0))]));
        assert!(!ok(&[("Last-Modified", &date(1))]));
        // No validator at all: only for a stored response without validators.
        assert!(!ok(&[]));
        assert!(may_update_from_304(
            &h(&[("X", "1")]),
            &h(&[("Date", &date(5))])
        ));
        // A weak tag where the stored response has none: Last-Modified decides.
        let lm_only = h(&[("Last-Modified", &date(0))]);
        assert!(may_update_from_304(
            &lm_only,
            &h(&[("ETag", "W/\"x\""), ("Last-Modified", &date(0))])
        ));
        assert!(!may_update_from_304(&lm_only, &h(&[("ETag", "W/\"x\"")])));
        assert!(!may_update_from_304(&lm_only, &h(&[("ETag", "\"x\"")])));
    }

    #[test]
    fn a_304_replaces_fields_but_not_the_body_description() {
        let stored = h(&[
            ("Date", &date(0)),
            ("Content-Type", "text/plain"),
            ("Content-Length", "10"),
            ("Content-Encoding", "gzip"),
            ("Content-MD5", "old"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("ETag", "\"abc\""),
            ("Age", "50"),
            ("X-Kept", "yes"),
            ("Cache-Control", "max-age=2"),
        ]);
        let not_modified = h(&[
            ("Date", &date(100)),
            ("Content-Type", "text/plain;charset=utf-8"),
            ("Content-Length", "0"),
            ("Content-Encoding", "br"),
            ("Content-Range", "bytes 0-1/10"),
            ("Content-MD5", "new"),
            ("Set-Cookie", "c=3"),
            ("ETag", "\"abc\""),
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Cache-Control", "max-age=3600, private=\"X-Kept\""),
            ("X-New", "1"),
        ]);
        assert_eq!(
            update_from_304(&stored, &not_modified),
            h(&[
                ("Content-Length", "10"),
                ("Content-Encoding", "gzip"),
                ("Content-MD5", "old"),
                ("Date", &date(100)),
                ("Content-Type", "text/plain;charset=utf-8"),
                ("Set-Cookie", "c=3"),
                ("ETag", "\"abc\""),
                ("Cache-Control", "max-age=3600, private=\"X-Kept\""),
                ("X-New", "1"),
            ])
        );
        // A 304 with an Age brings it; one without leaves none.
        let aged = update_from_304(&stored, &h(&[("Age", "3")]));
        assert_eq!(field_value(&aged, "age").as_deref(), Some("3"));
        assert_eq!(field_value(&update_from_304(&stored, &[]), "age"), None);
    }
}
