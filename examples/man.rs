//! Writes the man pages of `shmcached` and `webproxy`, made from the same clap definitions
//! as their `--help` (src/args.rs), into `target/man/`:
//!
//! ```sh
//! cargo run --example man && man -l target/man/webproxy.1
//! ```
//!
//! `tests/packaging.rs` runs the same function, so the pages are rewritten by every
//! `cargo test` too, and checked to name every flag.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use shmcache::args::{Shmcached, Webproxy};

/// Where the pages go: `man/` in the target directory (`CARGO_TARGET_DIR` if set).
pub fn man_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("man")
}

/// Writes `shmcached.1` and `webproxy.1` into `dir`; returns their paths.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for command in [Shmcached::command(), Webproxy::command()] {
        let path = dir.join(format!("{}.1", command.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        std::fs::write(&path, page)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[allow(dead_code)] // a module of tests/packaging.rs too, which has its own main
fn main() -> io::Result<()> {
    for path in write_man_pages(&man_dir())? {
        println!("{}", path.display());
    }
    Ok(())
}
