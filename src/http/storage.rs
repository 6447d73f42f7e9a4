//! Secondary storage: where a miss goes. A directory on disk, or an HTTP origin server.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cache::store::file_etag;

/// Where misses are served from (`-s DIR` or `-s http://host:port[/prefix]`).
pub enum Storage {
    Dir(DirStorage),
    Origin(Origin),
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
}

/// An object's bytes: a file, or an origin's response body.
pub enum Source {
    File(File),
    Origin(ureq::BodyReader<'static>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Origin(r) => r.read(buf),
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
        }
    }
}

impl Storage {
    /// A directory, or an origin when `spec` starts with `http://`.
    ///
    /// # Errors
    /// A directory that does not exist; a URL that is not `http://host:port[/prefix]`.
    pub fn open(
        spec: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> io::Result<Storage> {
        if spec.starts_with("http://") {
            Origin::new(spec, connect_timeout, read_timeout).map(Storage::Origin)
        } else if spec.contains("://") {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{spec}: only http:// origins are supported"),
            ))
        } else {
            DirStorage::new(spec).map(Storage::Dir)
        }
    }

    /// Looks up a normalised key (see [`key_from_target`](super::path::key_from_target)).
    pub fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        match self {
            Storage::Dir(dir) => dir.lookup(key).map_err(StorageError::Io),
            Storage::Origin(origin) => origin.lookup(key),
        }
    }
}

/// A directory that serves files by key, never anything outside it.
#[derive(Debug)]
pub struct DirStorage {
    /// Canonical (symlink-free, absolute) root, so a prefix check on a canonical path is
    /// enough to stay inside.
    root: PathBuf,
}

impl DirStorage {
    /// # Errors
    /// When `root` does not exist or is not a directory.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<DirStorage> {
        let root = root.into().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirStorage { root })
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
        }))
    }
}

/// An HTTP origin: `GET http://host:port/prefix/key` with a pooled blocking client.
pub struct Origin {
    base: String,
    agent: ureq::Agent,
}

impl Origin {
    fn new(url: &str, connect_timeout: Duration, read_timeout: Duration) -> io::Result<Origin> {
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
        })
    }

    fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        let url = format!("{}{}", self.base, super::path::percent_encode(key));
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| StorageError::Origin(e.to_string()))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => return Ok(Lookup::Missing),
            _ => return Err(StorageError::Origin(format!("{url} answered {status}"))),
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let modified = header("last-modified").and_then(|d| httpdate::parse_http_date(&d).ok());
        let etag = header("etag").filter(|e| valid_etag(e));
        let len = response.body().content_length();
        Ok(Lookup::Found(Object {
            body: Source::Origin(response.into_body().into_reader()),
            len,
            modified,
            etag,
        }))
    }
}

/// An entity tag we can store and send on: quoted (maybe weak), printable ASCII, and short
/// enough for a segment's head.
fn valid_etag(tag: &str) -> bool {
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    tag.len() <= crate::ipc::segment::ETAG_CAPACITY
        && opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && tag.bytes().all(|b| (0x21..0x7f).contains(&b))
}
