//! Revalidation sees every change: an expired entry from `-s DIR` is compared with its file
//! by length, inode, and modification and change times to the nanosecond, and an entry
//! preloaded by shmcached is checked against the file it was loaded from, not against
//! whatever `-s` has under the same key. Lifetimes are whole seconds (`--ttl 1`), so these
//! tests wait for the clock by polling for the expected answer with a deadline, checking
//! every answer on the way.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// Sets a file's modification time (its change time moves to now, as it always does).
fn set_mtime(path: &Path, at: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

/// Sleeps until the wall clock is a little past the start of a second, so that what
/// follows within a few hundred milliseconds falls in one second. Not right at the start:
/// file times come from a clock that may lag the wall clock by a tick.
fn wait_for_a_new_second() {
    loop {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        if (100..300).contains(&ms) {
            return;
        }
        std::thread::sleep(Duration::from_millis(u64::from((1100 - ms) % 1000)));
    }
}

/// GETs `path` until its body is `want`; every answer on the way must be a 200 with one of
/// `allowed` (or `want`). Returns the answer that had it.
fn until_body(addr: std::net::SocketAddr, path: &str, allowed: &[&[u8]], want: &[u8]) -> Response {
    let mut found = None;
    eventually(
        &format!("{path} to serve {:?}", String::from_utf8_lossy(want)),
        || {
            let r = get(addr, path);
            assert_eq!(
                r.status,
                200,
                "{path}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let ok = r.body == want || allowed.contains(&&r.body[..]);
            assert!(
                ok,
                "{path}: unexpected {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let done = r.body == want;
            if done {
                found = Some(r);
            }
            done
        },
    );
    found.unwrap()
}

#[test]
fn a_rewrite_of_the_same_length_within_one_second_is_seen_after_the_ttl() {
    let name = instance("samesec");
    let disk = tempfile::tempdir().unwrap();
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap(), "--ttl", "1"]);
    let (one, two) = (&b"version one"[..], &b"version two"[..]);
    // The case under test needs both writes in one second with different nanoseconds; on
    // the rare attempt that straddles a second (a slow machine), try again with a new file.
    let mut attempt = 0;
    let (key, etag) = loop {
        attempt += 1;
        assert!(
            attempt <= 5,
            "no two writes within one second in 5 attempts"
        );
        let key = format!("page{attempt}.txt");
        let path = disk.path().join(&key);
        wait_for_a_new_second();
        fs::write(&path, one).unwrap();
        let first = fs::metadata(&path).unwrap();
        let r = get(addr, &format!("/{key}"));
        assert_eq!(
            (r.status, r.header("x-cache"), &r.body[..]),
            (200, Some("MISS"), one)
        );
        fs::write(&path, two).unwrap();
        let second = fs::metadata(&path).unwrap();
        assert_eq!((second.ino(), second.len()), (first.ino(), first.len()));
        if second.mtime() == first.mtime() && second.mtime_nsec() != first.mtime_nsec() {
            break (key, r.header("etag").unwrap().to_owned());
        }
    };
    let path = format!("/{key}");
    let r = until_body(addr, &path, &[one], two);
    assert_eq!(
        r.header("etag"),
        Some(etag.as_str()),
        "the nginx-format tag is the same for both: only the stat identity tells them apart"
    );
    // The new bytes replaced the entry through the channel.
    let r = get(addr, &path);
    assert_eq!((r.header("x-cache"), &r.body[..]), (Some("HIT"), two));
    assert!(stats(addr)["proxy.replaced"] >= 1);
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_file_replaced_by_one_of_the_same_length_and_mtime_is_seen_after_the_ttl() {
    let name = instance("inode");
    let disk = tempfile::tempdir().unwrap();
    let path = disk.path().join("doc.txt");
    fs::write(&path, b"first file").unwrap();
    let cache = Proc::cache(&name, &[]);
    let (proxy, addr) = Proc::proxy(&name, &["-s", disk.path().to_str().unwrap(), "--ttl", "1"]);
    let r = get(addr, "/doc.txt");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("MISS"), &b"first file"[..])
    );
    // Another file, its mtime copied to the nanosecond, renamed over the first (the way
    // `rsync -t` or a deploy tool swaps files in): only the inode and change time differ.
    let old = fs::metadata(&path).unwrap();
    let staged = disk.path().join(".doc.txt.new");
    fs::write(&staged, b"other file").unwrap();
    set_mtime(&staged, old.modified().unwrap());
    fs::rename(&staged, &path).unwrap();
    let new = fs::metadata(&path).unwrap();
    assert_eq!(
        (new.len(), new.mtime(), new.mtime_nsec()),
        (old.len(), old.mtime(), old.mtime_nsec())
    );
    assert_ne!(new.ino(), old.ino());
    until_body(addr, "/doc.txt", &[b"first file"], b"other file");
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_manifest_alias_is_revalidated_against_the_file_it_was_loaded_from() {
    let name = instance("alias");
    // The manifest maps keys to paths that the proxy's -s does not have under those keys:
    // /courses/index.html is nowhere in -s, and -s has other bytes for /shadow.txt.
    let local = tempfile::tempdir().unwrap();
    let course = local.path().join("pages/course.html");
    let shadow = local.path().join("pages/shadow.txt");
    write_files(
        local.path(),
        &[
            ("pages/course.html", b"<h1>course v1</h1>"),
            ("pages/shadow.txt", b"preloaded shadow"),
            (
                "locals.txt",
                b"/courses/index.html pages/course.html\n/shadow.txt pages/shadow.txt\n",
            ),
        ],
    );
    let secondary = tempfile::tempdir().unwrap();
    write_files(secondary.path(), &[("shadow.txt", b"secondary shadow, v1")]);
    let manifest = local.path().join("locals.txt");
    let cache = Proc::cache(&name, &["-c", manifest.to_str().unwrap(), "--ttl", "1"]);
    let (proxy, addr) = Proc::proxy(
        &name,
        &["-s", secondary.path().to_str().unwrap(), "--ttl", "1"],
    );
    let v1: &[u8] = b"<h1>course v1</h1>";

    // Unchanged: past its lifetime it is still a hit with its bytes, renewed by the cache.
    eventually("the cache to renew the alias", || {
        let r = get(addr, "/courses/index.html");
        assert_eq!(
            (r.status, r.header("x-cache"), &r.body[..]),
            (200, Some("HIT"), v1)
        );
        stats(addr)["cache.renewed"] >= 1
    });
    assert_eq!(
        stats(addr)["proxy.revalidated"],
        0,
        "the proxy checked nothing"
    );

    // Rewritten in place with other bytes of the same length: the new bytes, as hits.
    let v2: &[u8] = b"<h1>course v2</h1>";
    fs::write(&course, v2).unwrap();
    let r = until_body(addr, "/courses/index.html", &[v1], v2);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(stats(addr)["cache.reloaded"] >= 1);

    // SIGHUP reloads the manifest; the reloaded alias is still checked against its file.
    cache.signal("HUP");
    cache.wait_log("] reloaded 2 files");
    let renewed = stats(addr)["cache.renewed"];
    eventually("the reloaded alias to be renewed", || {
        let r = get(addr, "/courses/index.html");
        assert_eq!(
            (r.status, r.header("x-cache"), &r.body[..]),
            (200, Some("HIT"), v2)
        );
        stats(addr)["cache.renewed"] > renewed
    });

    // Gone: removed, and then a miss like any other: 404, since -s does not have it.
    fs::remove_file(&course).unwrap();
    eventually("a 404 once the file is gone", || {
        let r = get(addr, "/courses/index.html");
        match r.status {
            200 => assert_eq!((r.header("x-cache"), &r.body[..]), (Some("HIT"), v2)),
            404 => {}
            other => panic!("unexpected {other}"),
        }
        r.status == 404
    });
    assert_eq!(
        get(addr, "/courses/index.html").status,
        404,
        "and it stays so"
    );
    assert!(stats(addr)["cache.sources_gone"] >= 1);

    // The shadowed key: the preloaded bytes while its file is there (never -s's), then,
    // once it is gone, -s's bytes, filled into the cache as an ordinary entry...
    let r = get(addr, "/shadow.txt");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"preloaded shadow"[..])
    );
    fs::remove_file(&shadow).unwrap();
    eventually("-s's bytes once the preloaded file is gone", || {
        let r = get(addr, "/shadow.txt");
        assert_eq!(r.status, 200);
        match &r.body[..] {
            b"preloaded shadow" => assert_eq!(r.header("x-cache"), Some("HIT")),
            b"secondary shadow, v1" => {}
            other => panic!("unexpected {:?}", String::from_utf8_lossy(other)),
        }
        r.body == b"secondary shadow, v1"
    });
    let r = get(addr, "/shadow.txt");
    assert_eq!(
        (r.header("x-cache"), &r.body[..]),
        (Some("HIT"), &b"secondary shadow, v1"[..])
    );
    // ...which the proxy now revalidates against -s.
    write_files(secondary.path(), &[("shadow.txt", b"secondary shadow, v2")]);
    until_body(
        addr,
        "/shadow.txt",
        &[b"secondary shadow, v1"],
        b"secondary shadow, v2",
    );
    stop_and_check_clean(&name, vec![proxy, cache]);
}

#[test]
fn a_preloaded_directory_without_secondary_storage_follows_its_files() {
    let name = instance("preloaddir");
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("a.txt", b"alpha one"), ("b.txt", b"bravo")]);
    let cache = Proc::cache(&name, &["-c", dir.path().to_str().unwrap(), "--ttl", "1"]);
    // No -s: the cache is the only copy, and the proxy asks for expired entries as they
    // are; what the cache preloaded it still keeps fresh itself.
    let (proxy, addr) = Proc::proxy(&name, &[]);
    assert_eq!(get(addr, "/a.txt").body, b"alpha one");
    fs::write(dir.path().join("a.txt"), b"alpha two, longer").unwrap();
    until_body(addr, "/a.txt", &[b"alpha one"], b"alpha two, longer");
    fs::remove_file(dir.path().join("b.txt")).unwrap();
    eventually("a 404 once b.txt is gone", || {
        let r = get(addr, "/b.txt");
        assert!(r.status == 404 || r.body == b"bravo", "{}", r.status);
        r.status == 404
    });
    stop_and_check_clean(&name, vec![proxy, cache]);
}
