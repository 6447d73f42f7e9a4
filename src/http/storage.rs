//! Secondary storage: where a miss goes. A directory on disk, whose responses the proxy
//! makes up (served by [`handler`](super::handler)), or an HTTP origin server, whose
//! responses it passes on and caches as RFC 9111 says (served by [`origin`](super::origin)).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::SystemTime;

use super::origin::upstream::{OriginOptions, ResponseBody, Upstream};
use crate::file;
use crate::ipc::{FileVersion, Identity, Lifetime};

/// Where misses are served from (`-s DIR` or `-s http://host:port[/prefix]`).
pub enum Storage {
    Dir(DirStorage),
    Origin(Upstream),
}

/// Storage's view of an object the cache holds: the validators to compare.
pub struct Cached<'a> {
    pub modified: Option<SystemTime>,
    pub etag: Option<&'a str>,
    /// Which bytes the cache holds: only a [`Identity::File`] can be found unchanged.
    pub identity: Identity,
}

/// What a key names in secondary storage.
pub enum Lookup {
    Found(Object),
    /// A directory (only a directory store can tell).
    Directory,
    Missing,
}

/// Why the directory could not answer: reading it failed (500).
#[derive(Debug)]
pub struct StorageError(pub io::Error);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An object found in secondary storage, with its validators and a body to read.
pub struct Object {
    pub body: Source,
    pub len: Option<u64>,
    pub modified: Option<SystemTime>,
    pub etag: Option<String>,
    /// The file's [`file::version`], to keep with a cached copy.
    pub version: FileVersion,
    /// How long a cached copy stays fresh.
    pub lifetime: Option<Lifetime>,
}

/// What revalidating a cached object against secondary storage found.
pub enum Revalidation {
    /// Unchanged: fresh again for `lifetime`.
    Unchanged { lifetime: Lifetime },
    /// Changed: here is the new object.
    Changed(Object),
    /// Gone from secondary storage.
    Missing,
}

/// An object's bytes: a file, or an origin's response body.
pub enum Source {
    File(File),
    Origin(ResponseBody),
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
    /// for a stream.
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
    /// directory stay fresh for `ttl` seconds in the cache; an origin's responses say
    /// themselves how long they do.
    ///
    /// # Errors
    /// A directory that does not exist; a URL that is not `http://host:port[/prefix]`.
    pub fn open(spec: &str, origin: OriginOptions, ttl: u64) -> io::Result<Storage> {
        if spec.starts_with("http://") {
            Upstream::new(spec, origin).map(Storage::Origin)
        } else if spec.contains("://") {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{spec}: only http:// origins are supported"),
            ))
        } else {
            DirStorage::new(spec, ttl).map(Storage::Dir)
        }
    }
}

/// A directory that serves files by key, never anything outside it.
#[derive(Debug)]
pub struct DirStorage {
    /// Canonical (symlink-free, absolute) root, so a prefix check on a canonical path is
    /// enough to stay inside.
    root: PathBuf,
    ttl: Lifetime,
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
        Ok(DirStorage {
            root,
            ttl: Lifetime::from_secs(ttl),
        })
    }

    /// Checks an expired cached object with one stat: the same [`file::version`] (device,
    /// inode, length, modification and change times to the nanosecond) is unchanged.
    pub fn revalidate(&self, key: &str, cached: &Cached) -> Result<Revalidation, StorageError> {
        let found = self.lookup(key)?;
        // A copy from no file (an origin's) is never taken as unchanged.
        if let Lookup::Found(object) = &found
            && cached.identity == Identity::File(object.version)
        {
            return Ok(Revalidation::Unchanged { lifetime: self.ttl });
        }
        Ok(match found {
            Lookup::Found(object) => Revalidation::Changed(object),
            Lookup::Directory | Lookup::Missing => Revalidation::Missing,
        })
    }

    /// Bytes `from..to` of the file under `key`, if it is still the version a cache hit was
    /// sending (`cached`, of length `len`): for finishing a response whose cache broke off,
    /// so the two halves must be of one version. The same file identity decides when both
    /// sides know it (the cache preloaded or filled from this very file); else the same
    /// length and strong ETag (the file's `"mtime-length"`, which the cache kept).
    pub fn rest_of(
        &self,
        key: &str,
        cached: &Cached,
        len: u64,
        (from, to): (u64, u64),
    ) -> Option<io::Take<Source>> {
        let Ok(Lookup::Found(mut object)) = self.lookup(key) else {
            return None;
        };
        let same = if let Identity::File(version) = cached.identity {
            version == object.version
        } else {
            cached
                .etag
                .is_some_and(|etag| !etag.starts_with("W/") && object.etag.as_deref() == Some(etag))
        };
        if !same || object.len != Some(len) || from > to || to > len {
            return None;
        }
        object.skip(from).ok()?;
        Some(object.body.take(to - from))
    }

    /// Looks up a normalised key (see [`key_from_target`](super::path::key_from_target)).
    /// A symlink that leads outside the root counts as missing.
    pub fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        self.find(key).map_err(StorageError)
    }

    fn find(&self, key: &str) -> io::Result<Lookup> {
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
            etag: Some(file::etag(modified, meta.len())),
            version: file::version(&meta),
            lifetime: Some(self.ttl),
        }))
    }
}
