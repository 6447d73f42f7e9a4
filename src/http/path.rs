//! From a request target to a cache key.
//!
//! The key is the decoded, normalised URL path: the query and fragment are dropped, `%XX`
//! escapes are decoded, empty and `.` segments are removed and `..` goes up one level. A key
//! always starts with `/`, never contains `//`, `/./` or `/../`, and so can be joined to a
//! storage root without climbing out of it.

use crate::ipc::MAX_KEY_LEN;

/// Why a request target cannot become a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not a path, a bad `%` escape, an encoded NUL, invalid UTF-8, or `..` above the root:
    /// 400 Bad Request.
    Bad(&'static str),
    /// Longer than a request message can carry: 414 URI Too Long.
    TooLong,
}

/// A key: a decoded, normalised path of at most [`MAX_KEY_LEN`] bytes. Built in one
/// allocation the size of the request target's path (a key is never longer than the path
/// it comes from, but for a directory's `index.html`).
pub struct Key {
    path: String,
}

impl Key {
    fn with_capacity(capacity: usize) -> Key {
        Key {
            path: String::with_capacity(capacity),
        }
    }

    /// Appends `s`, UTF-8 by construction (a segment of checked UTF-8, or ASCII).
    fn push(&mut self, s: &str) -> Result<(), PathError> {
        if self.path.len() + s.len() > MAX_KEY_LEN {
            return Err(PathError::TooLong);
        }
        self.path.push_str(s);
        Ok(())
    }

    /// Drops the last segment (`/name`); false when there is none.
    fn pop(&mut self) -> bool {
        match self.path.rfind('/') {
            Some(slash) => {
                self.path.truncate(slash);
                true
            }
            None => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    pub fn into_string(self) -> String {
        self.path
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

/// The longest decoded path considered; `..` segments could shorten a longer one, but no
/// client needs that.
const MAX_DECODED_LEN: usize = 2 * MAX_KEY_LEN;

/// Turns a request target (`/a/b%20c?x=1`) into a key (`/a/b c`). A trailing `/` is kept,
/// because it asks for a directory's index.
pub fn key_from_target(target: &str) -> Result<Key, PathError> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::Bad("the request target is not a path"));
    }
    let decoded = percent_decode(path)?;
    let mut key = Key::with_capacity(decoded.len() + "index.html".len() + 1);
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if !key.pop() {
                    return Err(PathError::Bad("the path climbs above the root"));
                }
            }
            s => {
                key.push("/")?;
                key.push(s)?;
            }
        }
    }
    let wants_directory =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if key.path.is_empty() || wants_directory {
        key.push("/")?;
    }
    Ok(key)
}

/// What a path keeps escaped when it goes back into a URL: every byte but the unreserved
/// characters, `/` and the sub-delimiters `:` and `@` (RFC 3986 §3.3 `pchar`).
const PATH_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes a decoded path for a URL or a `Location` header: everything but
/// unreserved characters, `/` and the sub-delimiters that are safe in a path.
pub fn percent_encode(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_ESCAPED).to_string()
}

/// The key of the object a request target names: [`key_from_target`], with a directory
/// (a trailing `/`) answered by its `index.html`, and the length checked after that.
pub fn object_key(target: &str) -> Result<Key, PathError> {
    let mut key = key_from_target(target)?;
    if key.ends_with('/') {
        key.push("index.html")?;
    }
    Ok(key)
}

/// Decodes `%XX` escapes (the decoding is `percent-encoding`'s). Stricter than that
/// crate, which leaves a malformed escape as it is: here it is refused, as is an encoded
/// NUL, and a result that is not UTF-8.
fn percent_decode(s: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        match bytes.get(i + 1..i + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => return Err(PathError::Bad("invalid percent-encoding")),
        }
    }
    // Each escape, checked above, decodes three bytes into one: the length is known
    // before decoding, and a path too long is refused as such whatever it holds.
    let escapes = bytes.iter().filter(|&&b| b == b'%').count();
    if bytes.len() - 2 * escapes > MAX_DECODED_LEN {
        return Err(PathError::TooLong);
    }
    let decoded = percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map_err(|_| PathError::Bad("the path is not UTF-8"))?;
    if decoded.contains('\0') {
        return Err(PathError::Bad("encoded NUL"));
    }
    Ok(decoded)
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
        assert_eq!(
            key_from_target(&format!("/{}", "x/..".repeat(5000))).map(|k| k.len()),
            Err(PathError::TooLong),
            "decoded paths are bounded before normalisation"
        );
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
        // Too long decoded is too long, whatever else is wrong with it; escapes count
        // as the byte they stand for.
        let over = "x".repeat(MAX_DECODED_LEN);
        for target in [
            format!("/{over}%ff"),
            format!("/%ff{over}"),
            format!("/{over}%00"),
        ] {
            assert_eq!(
                key_from_target(&target),
                Err(PathError::TooLong),
                "{target}"
            );
        }
        let escaped = format!("/{}", "%41".repeat(MAX_KEY_LEN - 1));
        assert_eq!(key_from_target(&escaped).map(|k| k.len()), Ok(MAX_KEY_LEN));
    }
}
