//! A file as both processes serve it: the header block it is served with, its entity tag
//! and its version. The cache uses them when it preloads a file, the proxy when it serves
//! the same file from secondary storage (`-s DIR`) and fills the cache with it; both must
//! agree to the byte, so that a client cannot tell a hit from a miss and a revalidation
//! can compare what the cache holds with the file.
//!
//! It is a module of its own, below both processes, so that neither imports the other's:
//! the proxy (`crate::http`) never reaches into the cache process (`crate::cache`). It is
//! not part of the channel (`crate::ipc`) either: what a file's headers look like is HTTP,
//! which the cache otherwise knows nothing of. It uses the channel's types for what
//! crosses it ([`FileVersion`]).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use crate::ipc::FileVersion;

/// The entity tag of a file, in nginx's format: `"<mtime hex>-<length hex>"`. Computed from
/// metadata alone, so the cache and secondary storage give one file the same tag without
/// reading it; it changes whenever the file's length or modification second does.
pub fn etag(modified: Option<SystemTime>, len: u64) -> String {
    let secs = modified
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{len:x}\"")
}

/// The header block a file is served with, by the cache and by the proxy alike: its type
/// (from the key's extension), entity tag and modification time.
pub fn headers(key: &str, modified: Option<SystemTime>, etag: Option<&str>) -> Vec<u8> {
    let mut block = String::new();
    if let Some(modified) = modified {
        block.push_str(&format!(
            "Last-Modified: {}\r\n",
            httpdate::fmt_http_date(modified)
        ));
    }
    if let Some(etag) = etag {
        block.push_str(&format!("ETag: {etag}\r\n"));
    }
    let content_type = mime_guess::from_path(key)
        .first_raw()
        .unwrap_or("application/octet-stream");
    block.push_str(&format!("Content-Type: {content_type}\r\n"));
    block.into_bytes()
}

/// An opaque 64-bit identity of a file's contents as `stat` sees them: device, inode,
/// length, and modification and change times to the nanosecond. The entity tag (nginx's
/// format, kept for clients) shows only the length and the modification second, so a
/// rewrite of the same length within one second, a file replaced by another (a new inode)
/// or one whose mtime was set back (the change time still moves) keep their tag but not
/// this.
pub fn version(meta: &Metadata) -> FileVersion {
    FileVersion(stat_version([
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ]))
}

/// Folds the fields through a bijective mixer (splitmix64's finaliser), one after the
/// other: with the others fixed, each step is a bijection of the field it takes in, so two
/// stats that differ in any one field never get the same version.
fn stat_version(fields: [u64; 7]) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    fields
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15, |h, &field| mix(h ^ field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_any_one_stat_field_changes_the_version() {
        let base = [64769, 1234567, 21, 1_700_000_000, 5, 1_700_000_000, 7];
        assert_eq!(stat_version(base), stat_version(base), "deterministic");
        for field in 0..base.len() {
            for delta in [1, 1 << 32, u64::MAX] {
                let mut changed = base;
                changed[field] = changed[field].wrapping_add(delta);
                assert_ne!(stat_version(changed), stat_version(base), "field {field}");
            }
        }
    }

    #[test]
    fn same_length_same_second_rewrites_get_another_version_and_the_same_etag() {
        use std::fs::{self, File};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        fs::write(&path, b"one").unwrap();
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(second)
            .unwrap();
        let first = fs::metadata(&path).unwrap();
        assert_eq!(version(&first), version(&fs::metadata(&path).unwrap()));

        // Rewritten in place, the same length, the mtime 1 ns later in the same second.
        fs::write(&path, b"two").unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(second + Duration::from_nanos(1)).unwrap();
        let rewritten = fs::metadata(&path).unwrap();
        assert_eq!(rewritten.ino(), first.ino());
        assert_ne!(version(&rewritten), version(&first));
        let tag = |m: &Metadata| etag(m.modified().ok(), m.len());
        assert_eq!(tag(&rewritten), tag(&first), "nginx's tag cannot tell");

        // Replaced by another file (another inode) with the same length and mtime.
        let other = dir.path().join("g.txt");
        fs::write(&other, b"new").unwrap();
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(second + Duration::from_nanos(1))
            .unwrap();
        fs::rename(&other, &path).unwrap();
        let replaced = fs::metadata(&path).unwrap();
        assert_ne!(replaced.ino(), rewritten.ino());
        assert_eq!(replaced.mtime_nsec(), rewritten.mtime_nsec());
        assert_ne!(version(&replaced), version(&rewritten));
    }
}
