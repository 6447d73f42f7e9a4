//! The rooms of `src/http` keep to what their module pages say they may import. Read from
//! the sources, so that a new `use` that breaks a rule fails here, not in a review.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The code lines of a file that mention `needle` (comments left out), as `path:line`.
fn mentions(path: &Path, needles: &[&str]) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or("");
            needles.iter().any(|n| code.contains(n))
        })
        .map(|(i, line)| format!("{}:{}: {}", path.display(), i + 1, line.trim()))
        .collect()
}

fn room(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn the_server_room_knows_nothing_of_caches_segments_or_the_proxy() {
    let mut found = Vec::new();
    for file in sources(&room("src/http/server")) {
        found.extend(mentions(
            &file,
            &[
                "crate::ipc",
                "crate::cache",
                "crate::http",
                "crate::file",
                "super::super",
            ],
        ));
        // In the room's own page, `super` is `http` itself.
        if file.ends_with("server/mod.rs") {
            found.extend(mentions(&file, &["super::"]));
        }
    }
    assert_none("src/http/server/ imports from outside its room", found);
}

#[test]
fn the_proxy_never_imports_the_cache_process() {
    let mut found = Vec::new();
    for file in sources(&room("src/http")) {
        found.extend(mentions(&file, &["crate::cache"]));
    }
    assert_none("src/http imports crate::cache", found);
}

#[test]
fn the_admin_pages_are_reached_only_from_the_router() {
    let mut found = Vec::new();
    for file in sources(&room("src/http")) {
        let inside = file.components().any(|c| c.as_os_str() == "admin");
        let router = file.ends_with("http/handler.rs") || file.ends_with("http/purge.rs");
        if !inside && !router {
            found.extend(mentions(&file, &["super::admin", "http::admin"]));
        }
    }
    assert_none("the /-/ pages imported from elsewhere", found);
}

#[test]
fn the_rules_are_checked_against_real_sources() {
    // A rule over no files would pass whatever the code did.
    assert!(sources(&room("src/http/server")).len() >= 5);
    assert!(
        !mentions(&room("src/http/handler.rs"), &["super::server"]).is_empty(),
        "the needle search finds what is there"
    );
}
