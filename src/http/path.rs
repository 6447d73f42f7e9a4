//! From a request target to a cache key.
//!
//! The key is the decoded, normalised URL path: the query and fragment are dropped, `%XX`
//! escapes are decoded, empty and `.` segments are removed and `..` goes up one level. A key
//! always starts with `/`, never contains `//`, `/./` or `/../`, and so can be joined to a
//! storage root without climbing out of it.

use crate::ipc::wire::MAX_KEY_LEN;

/// Why a request target cannot become a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not a path, a bad `%` escape, an encoded NUL, invalid UTF-8, or `..` above the root:
    /// 400 Bad Request.
    Bad(&'static str),
    /// Longer than a request message can carry: 414 URI Too Long.
    TooLong,
}

/// Turns a request target (`/a/b%20c?x=1`) into a key (`/a/b c`). A trailing `/` is kept,
/// because it asks for a directory's index.
pub fn key_from_target(target: &str) -> Result<String, PathError> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::Bad("the request target is not a path"));
    }
    let decoded = percent_decode(path)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::Bad("the path climbs above the root"));
                }
            }
            s => segments.push(s),
        }
    }
    let mut key = String::with_capacity(decoded.len());
    for s in &segments {
        key.push('/');
        key.push_str(s);
    }
    let wants_directory =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if segments.is_empty() || wants_directory {
        key.push('/');
    }
    if key.len() > MAX_KEY_LEN {
        return Err(PathError::TooLong);
    }
    Ok(key)
}

/// Percent-encodes a decoded path for a URL or a `Location` header: everything but
/// unreserved characters, `/` and the sub-delimiters that are safe in a path.
pub fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key of the object a request target names: [`key_from_target`], with a directory
/// (a trailing `/`) answered by its `index.html`, and the length checked after that.
pub fn object_key(target: &str) -> Result<String, PathError> {
    let mut key = key_from_target(target)?;
    if key.ends_with('/') {
        key.push_str("index.html");
    }
    if key.len() > MAX_KEY_LEN {
        return Err(PathError::TooLong);
    }
    Ok(key)
}

fn percent_decode(s: &str) -> Result<String, PathError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::Bad("invalid percent-encoding"))?;
            if hex == 0 {
                return Err(PathError::Bad("encoded NUL"));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::Bad("the path is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let cases = [
            ("/", "/"),
            ("/a.txt", "/a.txt"),
            ("/a.txt?x=1#f", "/a.txt"),
            ("//a///b/./c", "/a/b/c"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/dir/", "/dir/"),
            ("/sp%20ace", "/sp ace"),
            ("/a/%2e%2E/y", "/y"),
            ("/caf%C3%A9", "/café"),
        ];
        for (target, key) in cases {
            assert_eq!(key_from_target(target).as_deref(), Ok(key), "{target}");
        }
    }

    #[test]
    fn directories_name_their_index_within_the_length_limit() {
        assert_eq!(object_key("/a/").as_deref(), Ok("/a/index.html"));
        assert_eq!(object_key("/").as_deref(), Ok("/index.html"));
        let dir = format!("/{}/", "x".repeat(MAX_KEY_LEN - 5));
        assert!(key_from_target(&dir).is_ok());
        assert_eq!(object_key(&dir), Err(PathError::TooLong));
    }

    #[test]
    fn encodes_what_it_decodes() {
        for key in ["/a b/c%d", "/café?#", "/plain/path.txt"] {
            let encoded = percent_encode(key);
            assert!(
                encoded.is_ascii() && !encoded.contains([' ', '?', '#']),
                "{encoded}"
            );
            assert_eq!(key_from_target(&encoded).as_deref(), Ok(key));
        }
    }

    #[test]
    fn refuses() {
        for target in [
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "/%2e%2e%2fx/../y",
            "/%zz",
            "/%4",
            "/a%00b",
            "/%ff",
            "a",
            "*",
        ] {
            assert!(
                matches!(key_from_target(target), Err(PathError::Bad(_))),
                "{target}"
            );
        }
        let long = format!("/{}", "x".repeat(MAX_KEY_LEN));
        assert_eq!(key_from_target(&long), Err(PathError::TooLong));
        let fits = format!("/{}", "x".repeat(MAX_KEY_LEN - 1));
        assert_eq!(key_from_target(&fits).map(|k| k.len()), Ok(MAX_KEY_LEN));
    }
}
