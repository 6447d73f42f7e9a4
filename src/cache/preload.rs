//! Filling the store at start from a directory or a `locals.txt` manifest, within the
//! store's capacity (a preload larger than it keeps the files loaded last).
//!
//! A directory is walked recursively and each file stored under `/` + its path relative to
//! the directory. A manifest holds `key path` per line (the classic course format);
//! relative paths are resolved against the manifest's folder, blank lines and `#` comments
//! are skipped. A malformed manifest line is an error (the operator mistyped something);
//! a file that cannot be read is logged and skipped, as nginx does for a missing file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::store::{Entry, Store, file_etag, file_version};
use crate::ipc::channel::Etag;

/// Loads `path` (a directory or a manifest) into `store`, each entry fresh for `ttl`
/// seconds; returns the number of entries. Loading again (SIGHUP) replaces entries in place
/// and adds new files; transfers in progress keep the bytes they started with.
pub fn preload(store: &Store, path: &Path, ttl: u64) -> io::Result<usize> {
    let mut loaded = 0;
    for (key, file) in list(path)? {
        match load(&file, ttl).map(|entry| store.insert(&key, entry)) {
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

fn load(file: &Path, ttl: u64) -> io::Result<Entry> {
    let body = fs::read(file)?.into_boxed_slice();
    let meta = fs::metadata(file)?;
    let modified = meta.modified().ok();
    let etag = file_etag(modified, body.len() as u64);
    Ok(Entry::new(
        body,
        modified,
        Etag::new(&etag),
        file_version(&meta),
        ttl,
    ))
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
        let store = Store::new(1 << 20, 1 << 20);
        assert_eq!(preload(&store, &manifest, 60).unwrap(), 1);
        assert_eq!(&*store.get("/x/a").unwrap().body, b"alpha");
        assert!(store.get("/b").is_none());

        fs::write(&manifest, "/ok a.txt\n/too many words\n").unwrap();
        let err = preload(&Store::new(1 << 20, 1 << 20), &manifest, 60).unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn directory_keys_are_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b.bin"), b"").unwrap();
        let store = Store::new(1 << 20, 1 << 20);
        assert_eq!(preload(&store, dir.path(), 60).unwrap(), 1);
        assert_eq!(store.get("/sub/b.bin").unwrap().body.len(), 0);
    }
}
