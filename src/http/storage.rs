//! Secondary storage: where a miss goes. For now a directory on disk (`-s DIR`).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::cache::store::file_etag;

/// A directory that serves files by key, never anything outside it.
#[derive(Debug)]
pub struct DirStorage {
    /// Canonical (symlink-free, absolute) root, so a prefix check on a canonical path is
    /// enough to stay inside.
    root: PathBuf,
}

/// What a key names in the directory.
#[derive(Debug)]
pub enum Lookup {
    File {
        file: File,
        len: u64,
        modified: Option<SystemTime>,
        etag: String,
    },
    Directory,
    Missing,
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

    /// Looks up a normalised key (see [`key_from_target`](super::path::key_from_target)).
    /// A symlink that leads outside the root counts as missing.
    pub fn lookup(&self, key: &str) -> io::Result<Lookup> {
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
        Ok(Lookup::File {
            file,
            len: meta.len(),
            modified,
            etag: file_etag(modified, meta.len()),
        })
    }
}
