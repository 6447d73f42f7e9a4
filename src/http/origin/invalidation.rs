//! What a response to an unsafe request invalidates (RFC 9111 §4.4), and when a POST's
//! response may answer later GETs (RFC 9110 §9.3.3): URI references resolved against the
//! target (RFC 3986 §5.2) and kept within the target's origin.

use super::cache_control::ResponseDirectives;
use super::freshness::{first_line, has_field, storable};

/// Safe methods (RFC 9110 §9.2.1), the ones that do not invalidate; any other method,
/// including one this cache does not know, does (RFC 9111 §4.4).
fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// What a response to an unsafe request invalidates (RFC 9111 §4.4): nothing unless the
/// method is unsafe and the status is 2xx or 3xx ("non-error"); then the target URI, and
/// the `Location` and `Content-Location` URIs when they have the target's origin ("a
/// cache MUST NOT trigger an invalidation under these conditions if the origin … of the
/// URI to be invalidated differs from that of the target URI", against denial of
/// service).
///
/// `target` is the request's origin-form target (`/path?query`), as cache keys are made
/// from; references are resolved against it (RFC 3986 §5.2, dot segments removed).
/// `authorities` are the `host[:port]`s that name the target's origin (the request's Host
/// and, for a reverse proxy, its origin server's); an absolute `http://` URI or a
/// `//authority` reference counts only with one of them, and any other scheme never.
/// The results are origin-form strings without fragments, the target first, without
/// repeats; the handler turns them into keys as it does request targets.
pub(crate) fn invalidation_targets(
    method: &str,
    status: u16,
    target: &str,
    authorities: &[&str],
    response_headers: &[(String, String)],
) -> Vec<String> {
    if is_safe(method) || !(200..400).contains(&status) {
        return Vec::new();
    }
    let target = target.split('#').next().unwrap_or(target);
    let mut targets = vec![target.to_owned()];
    for field in ["location", "content-location"] {
        if let Some(uri) = first_line(response_headers, field)
            .and_then(|reference| resolve(target, reference, authorities))
            && !targets.contains(&uri)
        {
            targets.push(uri);
        }
    }
    targets
}

/// Whether a response to a POST may be stored to answer later GET and HEAD requests for
/// the target (RFC 9110 §9.3.3: "only cacheable when they include explicit freshness
/// information … and a Content-Location header field that has the same value as the
/// POST's target URI"), as a shared cache stores any response (§3). `content_location`
/// is the response's Content-Location resolved against the target (see
/// [`content_location`]); the caller compares it with the target as keys compare.
pub(crate) fn post_response_storable(
    request_headers: &[(String, String)],
    status: u16,
    response_headers: &[(String, String)],
) -> bool {
    let cc = ResponseDirectives::from_headers(response_headers);
    let explicit =
        cc.max_age.is_some() || cc.s_maxage.is_some() || has_field(response_headers, "expires");
    explicit && status != 206 && storable("GET", request_headers, status, response_headers)
}

/// A response's Content-Location resolved against the request's origin-form `target`,
/// when it names a URI of the same origin (see [`invalidation_targets`] for
/// `authorities`).
pub(crate) fn content_location(
    target: &str,
    authorities: &[&str],
    response_headers: &[(String, String)],
) -> Option<String> {
    let target = target.split('#').next().unwrap_or(target);
    first_line(response_headers, "content-location")
        .and_then(|reference| resolve(target, reference, authorities))
}

/// `host[:port]` compared as URIs compare authorities for http (RFC 3986 §6.2.2.1,
/// §6.2.3): case-insensitively, with the default port 80 (or an empty port) left out.
fn same_authority(a: &str, b: &str) -> bool {
    fn normal(authority: &str) -> String {
        let lower = authority.to_ascii_lowercase();
        let without = lower
            .strip_suffix(":80")
            .or_else(|| lower.strip_suffix(':'))
            .unwrap_or(&lower);
        without.to_owned()
    }
    normal(a) == normal(b)
}

/// Resolves `reference` (a Location or Content-Location value) against the origin-form
/// `base` (RFC 3986 §5.2.2), giving the origin-form result, or `None` when it leaves the
/// origin.
fn resolve(base: &str, reference: &str, authorities: &[&str]) -> Option<String> {
    let reference = reference.split('#').next().unwrap_or("");
    let (base_path, base_query) = match base.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base, None),
    };
    // scheme ":" (RFC 3986 §3.1), only when the colon comes before any '/', '?' or '#'.
    let (scheme, rest) = match reference.find([':', '/', '?']) {
        Some(i) if reference.as_bytes()[i] == b':' && i > 0 => {
            (Some(&reference[..i]), &reference[i + 1..])
        }
        _ => (None, reference),
    };
    if let Some(scheme) = scheme {
        let valid = scheme.as_bytes()[0].is_ascii_alphabetic()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !valid || !scheme.eq_ignore_ascii_case("http") {
            return None;
        }
    }
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    if scheme.is_some() && authority.is_none() {
        // "http:path" has no authority and so no origin to compare.
        return None;
    }
    if let Some(authority) = authority
        && !authorities.iter().any(|a| same_authority(a, authority))
    {
        return None;
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let (path, query) = if authority.is_some() || path.starts_with('/') {
        (remove_dot_segments(path), query)
    } else if path.is_empty() {
        (base_path.to_owned(), query.or(base_query))
    } else {
        // Merge (§5.2.3): the base path up to its last '/', then the reference.
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        let merged = if dir.is_empty() {
            format!("/{path}")
        } else {
            format!("{dir}{path}")
        };
        (remove_dot_segments(&merged), query)
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    Some(match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    })
}

/// RFC 3986 §5.2.4: removes `.` and `..` segments from a path, as reference resolution
/// does, so that `/a/b/../c` and `/a/c` invalidate the same entry.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_owned();
    let mut output = String::with_capacity(path.len());
    let pop = |output: &mut String| match output.rfind('/') {
        Some(i) => output.truncate(i),
        None => output.clear(),
    };
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input.replace_range(.., "/");
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop(&mut output);
        } else if input == "/.." {
            input.replace_range(.., "/");
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::super::freshness::h;
    use super::*;

    /// An HTTP-date `seconds` after a fixed moment.
    fn date(seconds: u64) -> String {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000 + seconds);
        httpdate::fmt_http_date(at)
    }

    #[test]
    fn invalidation_only_after_successful_unsafe_methods() {
        let none: Vec<String> = Vec::new();
        for method in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert_eq!(
                invalidation_targets(method, 200, "/a", &[], &[]),
                none,
                "{method}"
            );
        }
        for status in [100, 199, 400, 404, 500, 503] {
            assert_eq!(
                invalidation_targets("POST", status, "/a", &[], &[]),
                none,
                "{status}"
            );
        }
        for method in ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH", "post"] {
            assert_eq!(
                invalidation_targets(method, 204, "/a?x=1#frag", &[], &[]),
                ["/a?x=1"],
                "{method}"
            );
        }
        assert_eq!(invalidation_targets("POST", 399, "/a", &[], &[]), ["/a"]);
    }

    #[test]
    fn invalidation_of_location_and_content_location() {
        let authorities = ["proxy.example:8080", "127.0.0.1:9000"];
        let targets = |location: &str, content_location: &str| {
            invalidation_targets(
                "POST",
                201,
                "/test/abc",
                &authorities,
                &h(&[
                    ("Location", location),
                    ("Content-Location", content_location),
                ]),
            )
        };
        // The cache test suite's form: paths under the target.
        assert_eq!(
            targets(
                "/test/abc/location_target",
                "/test/abc/content_location_target"
            ),
            [
                "/test/abc",
                "/test/abc/location_target",
                "/test/abc/content_location_target"
            ]
        );
        // Absolute URIs of the same origin, with the port written or not, any case.
        assert_eq!(
            targets("http://PROXY.example:8080/x", "http://127.0.0.1:9000/y?q"),
            ["/test/abc", "/x", "/y?q"]
        );
        // Other origins, schemes and authority-less http URIs are never invalidated.
        assert_eq!(
            targets("http://evil.example/x", "https://proxy.example:8080/y"),
            ["/test/abc"]
        );
        assert_eq!(targets("//evil.example/x", "http:/y"), ["/test/abc"]);
        assert_eq!(targets("mailto:a@b", "urn:x"), ["/test/abc"]);
        // Relative references and repeats of the target.
        assert_eq!(targets("other", ""), ["/test/abc", "/test/other"]);
        assert_eq!(
            targets("//proxy.example:8080", "./abc#top"),
            ["/test/abc", "/"]
        );
        let default_port = invalidation_targets(
            "PUT",
            200,
            "/a",
            &["example.com"],
            &h(&[("Location", "http://example.com:80/b")]),
        );
        assert_eq!(default_port, ["/a", "/b"]);
        // Only the first line of each field counts.
        let two = invalidation_targets(
            "PUT",
            200,
            "/a",
            &[],
            &h(&[("Location", "/b"), ("Location", "/c")]),
        );
        assert_eq!(two, ["/a", "/b"]);
    }

    #[test]
    fn post_responses_with_freshness_and_their_own_content_location_may_answer_gets() {
        let ok = |headers: &[(&str, &str)]| post_response_storable(&[], 200, &h(headers));
        assert!(ok(&[("Cache-Control", "max-age=60")]));
        assert!(ok(&[("Expires", &date(60))]));
        assert!(ok(&[("Cache-Control", "s-maxage=60")]));
        assert!(!ok(&[]), "heuristic freshness is not enough");
        assert!(!ok(&[("Cache-Control", "max-age=60, no-store")]));
        assert!(!ok(&[("Cache-Control", "max-age=60, private")]));
        let auth = h(&[("Authorization", "x")]);
        assert!(!post_response_storable(
            &auth,
            200,
            &h(&[("Cache-Control", "max-age=60")])
        ));
        let location = |value: &str| {
            content_location(
                "/a/b?q",
                &["example.com"],
                &h(&[("Content-Location", value)]),
            )
        };
        assert_eq!(location("").as_deref(), Some("/a/b?q"));
        assert_eq!(location("b?q").as_deref(), Some("/a/b?q"));
        assert_eq!(
            location("http://example.com/a/b?q").as_deref(),
            Some("/a/b?q")
        );
        assert_eq!(location("http://other.example/a/b?q"), None);
        assert_eq!(content_location("/a", &[], &[]), None);
    }

    #[test]
    fn references_resolve_as_rfc_3986_5_4_says() {
        // RFC 3986 §5.4.1 and §5.4.2, with base http://a/b/c/d;p?q.
        let cases = [
            ("g", "/b/c/g"),
            ("./g", "/b/c/g"),
            ("g/", "/b/c/g/"),
            ("/g", "/g"),
            ("?y", "/b/c/d;p?y"),
            ("g?y", "/b/c/g?y"),
            ("#s", "/b/c/d;p?q"),
            ("g#s", "/b/c/g"),
            (";x", "/b/c/;x"),
            ("g;x?y#s", "/b/c/g;x?y"),
            ("", "/b/c/d;p?q"),
            (".", "/b/c/"),
            ("./", "/b/c/"),
            ("..", "/b/"),
            ("../", "/b/"),
            ("../g", "/b/g"),
            ("../..", "/"),
            ("../../", "/"),
            ("../../g", "/g"),
            ("../../../g", "/g"),
            ("../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("g.", "/b/c/g."),
            (".g", "/b/c/.g"),
            ("g..", "/b/c/g.."),
            ("..g", "/b/c/..g"),
            ("./../g", "/b/g"),
            ("./g/.", "/b/c/g/"),
            ("g/./h", "/b/c/g/h"),
            ("g/../h", "/b/c/h"),
            ("g;x=1/./y", "/b/c/g;x=1/y"),
            ("g;x=1/../y", "/b/c/y"),
            ("g?y/./x", "/b/c/g?y/./x"),
            ("http://a/b/../g", "/g"),
            ("//a", "/"),
        ];
        for (reference, expected) in cases {
            assert_eq!(
                resolve("/b/c/d;p?q", reference, &["a"]).as_deref(),
                Some(expected),
                "{reference:?}"
            );
        }
        assert_eq!(resolve("/b/c/d;p?q", "g:h", &["a"]), None);
        assert_eq!(resolve("/", "x", &[]).as_deref(), Some("/x"));
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    }
}
