//! Filling the store at start from a directory or a `locals.txt` manifest, within the
//! store's capacity (a preload larger than it keeps the files loaded last), and keeping
//! what was preloaded fresh.
//!
//! A directory is walked recursively and each file stored under `/` + its path relative to
//! the directory. A manifest holds `key path` per line (the classic course format);
//! relative paths are resolved against the manifest's folder, blank lines and `#` comments
//! are skipped. A malformed manifest line is an error (the operator mistyped something);
//! a file that cannot be read is logged and skipped, as nginx does for a missing file.
//!
//! Each preloaded entry remembers its file (`Preloaded`). When one is asked for past its
//! lifetime, the cache checks that file itself (`check`) rather than answering
//! "expired" and leaving the proxy to revalidate against its own secondary storage: a
//! manifest maps keys to paths of its own choosing, which that storage may not have under
//! the same key (or may have other bytes under), and only the cache knows the mapping.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use super::entries::{Entries, Entry, Preloaded};
use crate::file;
use crate::ipc::{Etag, Identity, Lifetime, StoreHead};

/// Loads `path` (a directory or a manifest) into `store`, each entry fresh for `ttl`
/// seconds; returns the number of entries. Loading again (SIGHUP) replaces entries in place
/// and adds new files; transfers in progress keep the bytes they started with.
pub fn preload(store: &Entries, path: &Path, ttl: u64) -> io::Result<usize> {
    let ttl = Lifetime::from_secs(ttl);
    let mut loaded = 0;
    for (key, file) in list(path)? {
        match open(&file)
            .and_then(|(f, meta)| read(&key, f, &meta, file.clone(), ttl))
            .map(|entry| store.insert(&key, entry))
        {
            Ok(Ok(evicted)) => {
                loaded += 1;
                if evicted > 0 {
                    log::warn!("preload: {key} pushed {evicted} entries out: over capacity");
                }
            }
            Ok(Err(refused)) => log::warn!("preload: skipping {key}: {refused:?}"),
            Err(e) => log::warn!("preload: skipping {key} ({}): {e}", file.display()),
        }
    }
    Ok(loaded)
}

/// The files a preload of `path` (a directory or a manifest) reads, with their keys.
pub fn list(path: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        Ok(files)
    } else {
        read_manifest(path)
    }
}

/// Opens a file to preload, with its metadata taken from the open descriptor: the identity
/// recorded is that of the very file whose bytes are read, even if the path is replaced
/// meanwhile.
fn open(path: &Path) -> io::Result<(File, Metadata)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// Reads an opened file into an entry for `key`, fresh for `lifetime`, with the headers
/// the proxy's directory storage gives the same file.
fn read(
    key: &str,
    mut opened: File,
    meta: &Metadata,
    path: PathBuf,
    lifetime: Lifetime,
) -> io::Result<Entry> {
    let mut body = Vec::with_capacity(meta.len() as usize);
    opened.read_to_end(&mut body)?;
    let modified = meta.modified().ok();
    // The tag the proxy's directory storage gives the same file, from the same metadata.
    let etag = file::etag(modified, meta.len());
    let headers = file::headers(key, modified, Some(&etag));
    let head = StoreHead {
        status: 200,
        modified,
        etag: Etag::new(&etag),
        lifetime,
        file: Some(file::version(meta)),
    };
    let entry = Entry::new(&head, headers.into_boxed_slice(), body.into_boxed_slice());
    Ok(entry.with_source(Preloaded::new(path, lifetime)))
}

/// What checking an expired preloaded entry against its file found.
#[derive(Debug)]
pub(super) enum Checked {
    /// Unchanged: the entry was renewed in place.
    Renewed(Arc<Entry>),
    /// Changed: read again; this new entry replaced the old one.
    Reloaded(Arc<Entry>),
    /// The file is gone, unreadable, not a file any more, or now too large to keep: the
    /// entry was removed.
    Gone,
    /// It could not be checked just now (an I/O error that may pass, such as running out
    /// of descriptors): the entry as it is, not renewed, so the next request checks again.
    Unchecked(Arc<Entry>),
    /// While this request waited for another one's check, the key changed hands (that
    /// check, or a STORE, PURGE or reload): what the store holds now.
    Superseded(Option<Arc<Entry>>),
}

/// Checks an expired preloaded entry against its file, with one `stat` of it: the same
/// [`file::version`] (device, inode, length, modification and change times to the
/// nanosecond) renews the entry; another reads the file again into a new entry (within the
/// store's byte budget); a file that is gone removes the entry. Only a request for an
/// expired entry gets here, so fresh hits never pay for a `stat`.
///
/// # Panics
/// If `entry` was not preloaded (it has no [`Preloaded`]).
pub(super) fn check(store: &Entries, key: &str, entry: &Arc<Entry>) -> Checked {
    let source = entry
        .preloaded
        .as_ref()
        .expect("only preloaded entries are checked");
    let _checking = source
        .checking
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // A check that ran while we waited for the lock has settled it.
    if entry.is_fresh() || !store.holds(key, entry) {
        return Checked::Superseded(store.peek(key));
    }
    let gone = |why: &dyn std::fmt::Display| {
        log::info!("{key}: {} {why}; removed", source.path.display());
        store.remove_if_current(key, entry);
        Checked::Gone
    };
    let (file, meta) = match open(&source.path) {
        Ok(opened) => opened,
        Err(e) if is_gone(&e) => return gone(&e),
        Err(e) => {
            log::warn!(
                "{key}: cannot check {} ({e}); serving what is held",
                source.path.display()
            );
            return Checked::Unchecked(Arc::clone(entry));
        }
    };
    if Identity::File(file::version(&meta)) == entry.identity {
        entry.renew(source.lifetime);
        return Checked::Renewed(Arc::clone(entry));
    }
    // Not read at all when it cannot be kept: the proxy serves it from its own storage.
    if meta.len() > store.accept_len() {
        return gone(&format_args!(
            "grew to {} bytes, over the limit",
            meta.len()
        ));
    }
    let fresh = match read(key, file, &meta, source.path.clone(), source.lifetime) {
        Ok(fresh) => Arc::new(fresh),
        Err(e) if is_gone(&e) => return gone(&e),
        Err(e) => {
            log::warn!(
                "{key}: cannot read {} again ({e}); serving what is held",
                source.path.display()
            );
            return Checked::Unchecked(Arc::clone(entry));
        }
    };
    match store.replace(key, entry, Arc::clone(&fresh)) {
        Ok(Some(evicted)) => {
            log::info!(
                "{key}: {} changed; read again ({} bytes, {evicted} evicted)",
                source.path.display(),
                fresh.body.len()
            );
            Checked::Reloaded(fresh)
        }
        Ok(None) => Checked::Superseded(store.peek(key)),
        Err(refused) => gone(&format_args!("changed but cannot be kept: {refused:?}")),
    }
}

/// Whether an error opening or reading a preloaded file means it is no longer there to
/// serve, as opposed to a failure that may pass. Permission denied counts as gone: access
/// was taken away on purpose, and preloading skips such a file too. `InvalidInput` is
/// [`open`] finding something other than a regular file at the path.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::IsADirectory
    )
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.is_file() {
            let rel = path.strip_prefix(root).expect("walked below root");
            let Some(rel) = rel.to_str() else {
                log::warn!("preload: skipping non-UTF-8 path {}", path.display());
                continue;
            };
            out.push((format!("/{rel}"), path));
        }
    }
    Ok(())
}

fn read_manifest(manifest: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let text = fs::read_to_string(manifest)?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), Some(file), None) = (words.next(), words.next(), words.next()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: expected `key path`, got {line:?}",
                    manifest.display(),
                    n + 1
                ),
            ));
        };
        let key = if key.starts_with('/') {
            key.to_owned()
        } else {
            format!("/{key}")
        };
        out.push((key, base.join(file)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_resolves_relative_paths_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"alpha").unwrap();
        let manifest = dir.path().join("locals.txt");
        fs::write(&manifest, "# comment\n\n/x/a a.txt\nb missing.txt\n").unwrap();
        let store = Entries::new(1 << 20, 1 << 20);
        assert_eq!(preload(&store, &manifest, 60).unwrap(), 1);
        assert_eq!(&*store.get("/x/a").unwrap().body, b"alpha");
        assert!(store.get("/b").is_none());

        fs::write(&manifest, "/ok a.txt\n/too many words\n").unwrap();
        let err = preload(&Entries::new(1 << 20, 1 << 20), &manifest, 60).unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    /// A store preloaded from a one-line manifest `/k file.txt`, its entry expired at once
    /// (a lifetime of 0), and that entry.
    fn expired_alias(dir: &Path, body: &[u8], capacity: u64) -> (Entries, Arc<Entry>) {
        fs::write(dir.join("file.txt"), body).unwrap();
        let manifest = dir.join("locals.txt");
        fs::write(&manifest, "/k file.txt\n").unwrap();
        let store = Entries::new(capacity, capacity);
        assert_eq!(preload(&store, &manifest, 0).unwrap(), 1);
        let entry = store.get("/k").unwrap();
        assert!(!entry.is_fresh());
        (store, entry)
    }

    #[test]
    fn an_expired_entry_is_checked_against_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, entry) = expired_alias(dir.path(), b"alpha", 1 << 20);
        let stored_at = entry.stored_at();
        match check(&store, "/k", &entry) {
            Checked::Renewed(e) => assert!(Arc::ptr_eq(&e, &entry)),
            other => panic!("unchanged file: {other:?}"),
        }
        assert!(entry.stored_at() >= stored_at);

        // Same length, rewritten in place: read again, with its new identity. The mtime is
        // set apart so that the test does not hang on the filesystem's clock granularity.
        fs::write(dir.path().join("file.txt"), b"omega").unwrap();
        File::options()
            .write(true)
            .open(dir.path().join("file.txt"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        let Checked::Reloaded(fresh) = check(&store, "/k", &entry) else {
            panic!("changed file not read again");
        };
        assert_eq!(&*fresh.body, b"omega");
        assert_ne!(fresh.identity, entry.identity);
        assert!(store.holds("/k", &fresh));
        assert!(fresh.preloaded.is_some(), "still preloaded");
        // A request that held the old entry finds the new one.
        match check(&store, "/k", &entry) {
            Checked::Superseded(Some(e)) => assert!(Arc::ptr_eq(&e, &fresh)),
            other => panic!("{other:?}"),
        }

        fs::remove_file(dir.path().join("file.txt")).unwrap();
        assert!(matches!(check(&store, "/k", &fresh), Checked::Gone));
        assert!(store.get("/k").is_none());
    }

    #[test]
    fn a_file_grown_past_the_limit_is_dropped_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let (store, entry) = expired_alias(dir.path(), b"small", 1024);
        fs::write(dir.path().join("file.txt"), vec![0u8; 4096]).unwrap();
        assert!(matches!(check(&store, "/k", &entry), Checked::Gone));
        assert_eq!(store.size(), (0, 0));
    }

    #[test]
    fn directory_keys_are_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b.bin"), b"").unwrap();
        let store = Entries::new(1 << 20, 1 << 20);
        assert_eq!(preload(&store, dir.path(), 60).unwrap(), 1);
        assert_eq!(store.get("/sub/b.bin").unwrap().body.len(), 0);
    }
}
