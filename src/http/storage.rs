//! Secondary storage: where a miss goes. A directory on disk, or an HTTP origin server.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cache::store::{file_etag, file_version};

/// Where misses are served from (`-s DIR` or `-s http://host:port[/prefix]`).
pub enum Storage {
    Dir(DirStorage),
    Origin(Origin),
}

/// Storage's view of an object the cache holds: the validators to compare.
pub struct Cached<'a> {
    pub modified: Option<SystemTime>,
    pub etag: Option<&'a str>,
    /// The identity of the file it was read from (see [`file_version`]); 0 when unknown.
    pub source_version: u64,
}

/// What a key names in secondary storage.
pub enum Lookup {
    Found(Object),
    /// A directory (only a directory store can tell).
    Directory,
    Missing,
}

/// Why secondary storage could not answer.
#[derive(Debug)]
pub enum StorageError {
    /// Reading the directory failed: 500.
    Io(io::Error),
    /// The origin is unreachable, timed out, or answered 5xx: 502.
    Origin(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Io(e) => write!(f, "{e}"),
            StorageError::Origin(e) => write!(f, "origin: {e}"),
        }
    }
}

/// An object found in secondary storage, with its validators and a body to read.
pub struct Object {
    pub body: Source,
    /// `None` when an origin sent no Content-Length.
    pub len: Option<u64>,
    pub modified: Option<SystemTime>,
    pub etag: Option<String>,
    /// For a file, its [`file_version`], to keep with a cached copy; 0 for an origin's
    /// object.
    pub source_version: u64,
    /// How many seconds a cached copy stays fresh; `None`: it must not be stored at all
    /// (`Cache-Control: no-store` or `private`).
    pub max_age: Option<u64>,
}

/// What revalidating a cached object against secondary storage found.
pub enum Revalidation {
    /// Unchanged: fresh again for `max_age` seconds.
    Unchanged { max_age: u64 },
    /// Changed: here is the new object.
    Changed(Object),
    /// Gone from secondary storage.
    Missing,
}

/// An object's bytes: a file, or an origin's response body.
pub enum Source {
    File(File),
    Origin(ureq::BodyReader<'static>),
    /// Nothing: what is left of a source handed on.
    Empty,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Origin(r) => r.read(buf),
            Source::Empty => Ok(0),
        }
    }
}

impl Object {
    /// Moves past the first `n` bytes (for a range): a seek for a file, a discarding read
    /// for an origin, whose body is a stream.
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        match &mut self.body {
            Source::File(f) => f.seek(SeekFrom::Start(n)).map(drop),
            Source::Origin(r) => {
                let skipped = io::copy(&mut r.take(n), &mut io::sink())?;
                if skipped == n {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
            }
            Source::Empty => Ok(()),
        }
    }
}

impl Storage {
    /// A directory, or an origin when `spec` starts with `http://`. Objects from a
    /// directory stay fresh for `ttl` seconds in the cache; so do an origin's, unless its
    /// `Cache-Control` or `Expires` says otherwise.
    ///
    /// # Errors
    /// A directory that does not exist; a URL that is not `http://host:port[/prefix]`.
    pub fn open(
        spec: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
        ttl: u64,
    ) -> io::Result<Storage> {
        if spec.starts_with("http://") {
            Origin::new(spec, connect_timeout, read_timeout, ttl).map(Storage::Origin)
        } else if spec.contains("://") {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{spec}: only http:// origins are supported"),
            ))
        } else {
            DirStorage::new(spec, ttl).map(Storage::Dir)
        }
    }

    /// Looks up a normalised key (see [`key_from_target`](super::path::key_from_target)).
    pub fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        match self {
            Storage::Dir(dir) => dir.lookup(key).map_err(StorageError::Io),
            Storage::Origin(origin) => origin.fetch(key, None),
        }
    }

    /// Checks an expired cached object: for a directory, one stat (the same
    /// [`file_version`]: device, inode, length, modification and change times to the
    /// nanosecond); for an origin, a conditional GET with the cached validators.
    pub fn revalidate(&self, key: &str, cached: &Cached) -> Result<Revalidation, StorageError> {
        let found = match self {
            Storage::Dir(dir) => {
                let found = dir.lookup(key).map_err(StorageError::Io)?;
                // A copy of unknown origin (version 0) is never taken as unchanged.
                if let Lookup::Found(object) = &found
                    && cached.source_version != 0
                    && object.source_version == cached.source_version
                {
                    return Ok(Revalidation::Unchanged { max_age: dir.ttl });
                }
                found
            }
            Storage::Origin(origin) => match origin.fetch_conditional(key, Some(cached))? {
                Fetched::NotModified { max_age } => return Ok(Revalidation::Unchanged { max_age }),
                Fetched::Lookup(found) => found,
            },
        };
        Ok(match found {
            Lookup::Found(object) => Revalidation::Changed(object),
            Lookup::Directory | Lookup::Missing => Revalidation::Missing,
        })
    }
}

/// A directory that serves files by key, never anything outside it.
#[derive(Debug)]
pub struct DirStorage {
    /// Canonical (symlink-free, absolute) root, so a prefix check on a canonical path is
    /// enough to stay inside.
    root: PathBuf,
    ttl: u64,
}

impl DirStorage {
    /// # Errors
    /// When `root` does not exist or is not a directory.
    pub fn new(root: impl Into<PathBuf>, ttl: u64) -> io::Result<DirStorage> {
        let root = root.into().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirStorage { root, ttl })
    }

    /// A symlink that leads outside the root counts as missing.
    fn lookup(&self, key: &str) -> io::Result<Lookup> {
        let path = match self.root.join(key.trim_start_matches('/')).canonicalize() {
            Ok(p) => p,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Lookup::Missing);
            }
            Err(e) => return Err(e),
        };
        if !path.starts_with(&self.root) {
            log::warn!("{key} leads outside the storage root; refused");
            return Ok(Lookup::Missing);
        }
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Ok(Lookup::Directory);
        }
        if !meta.is_file() {
            return Ok(Lookup::Missing);
        }
        let modified = meta.modified().ok();
        Ok(Lookup::Found(Object {
            body: Source::File(file),
            len: Some(meta.len()),
            modified,
            etag: Some(file_etag(modified, meta.len())),
            source_version: file_version(&meta),
            max_age: Some(self.ttl),
        }))
    }
}

/// An HTTP origin: `GET http://host:port/prefix/key` with a pooled blocking client.
pub struct Origin {
    base: String,
    agent: ureq::Agent,
    ttl: u64,
}

/// What a (conditional) GET to the origin found.
enum Fetched {
    NotModified { max_age: u64 },
    Lookup(Lookup),
}

impl Origin {
    fn new(
        url: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
        ttl: u64,
    ) -> io::Result<Origin> {
        let rest = &url["http://".len()..];
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains(['?', '#', '@']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url}: expected http://host:port[/prefix]"),
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            .timeout_per_read(Some(read_timeout))
            .build();
        Ok(Origin {
            base: format!("http://{authority}{}", prefix.trim_end_matches('/')),
            agent: config.into(),
            ttl,
        })
    }

    /// GETs `key`; with `cached`, conditionally on its validators.
    fn fetch(&self, key: &str, cached: Option<&Cached>) -> Result<Lookup, StorageError> {
        match self.fetch_conditional(key, cached)? {
            Fetched::Lookup(found) => Ok(found),
            Fetched::NotModified { .. } => {
                Err(StorageError::Origin(format!("{key}: unexpected 304")))
            }
        }
    }

    fn fetch_conditional(
        &self,
        key: &str,
        cached: Option<&Cached>,
    ) -> Result<Fetched, StorageError> {
        let url = format!("{}{}", self.base, super::path::percent_encode(key));
        let mut request = self.agent.get(&url);
        if let Some(cached) = cached {
            if let Some(etag) = cached.etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(modified) = cached.modified {
                request = request.header("If-Modified-Since", httpdate::fmt_http_date(modified));
            }
        }
        let response = request
            .call()
            .map_err(|e| StorageError::Origin(e.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let max_age = lifetime(
            header("cache-control").as_deref(),
            header("expires").as_deref(),
            header("date").as_deref(),
            self.ttl,
        );
        match status {
            200 => {}
            304 if cached.is_some() => {
                return Ok(Fetched::NotModified {
                    max_age: max_age.unwrap_or(0),
                });
            }
            404 | 410 => return Ok(Fetched::Lookup(Lookup::Missing)),
            _ => return Err(StorageError::Origin(format!("{url} answered {status}"))),
        }
        let modified = header("last-modified").and_then(|d| httpdate::parse_http_date(&d).ok());
        let etag = header("etag").filter(|e| valid_etag(e));
        let len = response.body().content_length();
        Ok(Fetched::Lookup(Lookup::Found(Object {
            body: Source::Origin(response.into_body().into_reader()),
            len,
            modified,
            etag,
            source_version: 0,
            max_age,
        })))
    }
}

/// The freshness lifetime an origin's response grants, in seconds: `s-maxage`, else
/// `max-age`, else `Expires` (against the response's `Date`), else `ttl`; 0 for
/// `no-cache` (store, but revalidate every use); `None` for `no-store` and `private`
/// (never store).
fn lifetime(
    cache_control: Option<&str>,
    expires: Option<&str>,
    date: Option<&str>,
    ttl: u64,
) -> Option<u64> {
    let (mut max_age, mut s_maxage, mut no_cache) = (None, None, false);
    for directive in cache_control.unwrap_or("").split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        let (name, value) = directive.split_once('=').unwrap_or((&directive, ""));
        let seconds = || value.trim_matches('"').parse::<u64>().ok();
        match name.trim() {
            // Whatever else the header says, these forbid storing.
            "no-store" | "private" => return None,
            "no-cache" => no_cache = true,
            "s-maxage" => s_maxage = seconds(),
            "max-age" => max_age = seconds(),
            _ => {}
        }
    }
    if no_cache {
        return Some(0);
    }
    if let Some(seconds) = s_maxage.or(max_age) {
        return Some(seconds);
    }
    if let Some(expires) = expires {
        // An invalid Expires (such as "0") means "already expired".
        let Ok(at) = httpdate::parse_http_date(expires) else {
            return Some(0);
        };
        let now = date
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .unwrap_or_else(SystemTime::now);
        return Some(at.duration_since(now).map_or(0, |d| d.as_secs()));
    }
    Some(ttl)
}

/// An entity tag we can store and send on: quoted (maybe weak), printable ASCII, and short
/// enough for a segment's head.
fn valid_etag(tag: &str) -> bool {
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    tag.len() <= crate::ipc::ETAG_CAPACITY
        && opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && tag.bytes().all(|b| (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::lifetime;

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime(None, None, None, 60), Some(60));
        assert_eq!(lifetime(Some("max-age=5"), None, None, 60), Some(5));
        assert_eq!(
            lifetime(Some("public, max-age=5, s-maxage=9"), None, None, 60),
            Some(9)
        );
        assert_eq!(lifetime(Some("no-cache"), None, None, 60), Some(0));
        assert_eq!(lifetime(Some("private, max-age=5"), None, None, 60), None);
        assert_eq!(lifetime(Some("No-Store"), None, None, 60), None);
        assert_eq!(lifetime(Some("no-cache, no-store"), None, None, 60), None);
        assert_eq!(
            lifetime(Some("no-cache, max-age=60"), None, None, 60),
            Some(0)
        );
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let later = "Wed, 21 Oct 2015 07:29:40 GMT";
        assert_eq!(lifetime(None, Some(later), Some(date), 60), Some(100));
        assert_eq!(lifetime(None, Some("0"), Some(date), 60), Some(0));
        assert_eq!(
            lifetime(Some("max-age=1"), Some(later), Some(date), 60),
            Some(1)
        );
    }
}
