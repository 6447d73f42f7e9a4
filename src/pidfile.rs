//! `--pid-file PATH`: the process's pid in a file, for `kill -HUP "$(cat PATH)"` and for
//! service managers, as nginx writes one.
//!
//! Written once the process is sure to serve (the cache holds its instance lock, the proxy
//! has bound its port), so that a second instance refused at start never overwrites the
//! running one's file; removed at exit, but only while it still names this process.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A written pid file, removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid and a newline to `path`, replacing what was there. The
    /// text goes to a temporary file beside it that is then renamed over `path`, so a
    /// reader sees the old file or the whole new one, never a part.
    ///
    /// # Errors
    /// The directory cannot be written; the message names the path.
    pub fn write(path: &Path) -> io::Result<PidFile> {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("pid file {}: {e}", path.display()));
        let pid = std::process::id();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{pid}.tmp"));
        let temporary = PathBuf::from(temporary);
        fs::write(&temporary, format!("{pid}\n")).map_err(named)?;
        if let Err(e) = fs::rename(&temporary, path) {
            let _ = fs::remove_file(&temporary);
            return Err(named(e));
        }
        Ok(PidFile {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Another process may have taken the path since (a second instance started with the
        // same file): its file is not ours to remove.
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!("removing the pid file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary left"
        );
    }

    #[test]
    fn another_process_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let file = PidFile::write(&path).unwrap();
        fs::write(&path, "1\n").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let err = PidFile::write(Path::new("/nonexistent-dir/x.pid")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.pid"), "{err}");
    }
}
