//! The browser harness's own failure paths (`tests/common/browser.rs`), with stand-ins for
//! Chromium: a missing one, one that fails, one that draws nothing, and one that hangs
//! with a child of its own, which the deadline must kill together.
//!
//! One test on purpose: it writes and then runs a script, and a test running beside it
//! that forked at that moment could make the exec fail with "text file busy".

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::{BrowserError, Chromium};

fn stand_in(exe: &str, deadline: Duration) -> Chromium {
    Chromium {
        exe: PathBuf::from(exe),
        virtual_time: Duration::from_millis(100),
        deadline,
    }
}

#[test]
fn the_harness_fails_clearly_and_in_bounded_time() {
    let long = Duration::from_secs(20);

    let missing = stand_in("/nonexistent/chromium", long).dump_dom("http://127.0.0.1:9/");
    let message = missing.unwrap_err().to_string();
    assert_eq!(
        message,
        "headless Chromium is not installed at /nonexistent/chromium: the browser tests need \
         Debian's package (`apt-get install -y chromium`; .ci/run installs it)"
    );

    match stand_in("/bin/false", long).dump_dom("http://127.0.0.1:9/") {
        Err(BrowserError::Failed { status, .. }) => assert_eq!(status.code(), Some(1)),
        other => panic!("{:?}", other.map(|_| ())),
    }

    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("never.png");
    match stand_in("/bin/true", long).screenshot("http://127.0.0.1:9/", &picture, (10, 10)) {
        Err(BrowserError::NoScreenshot { path, .. }) => assert_eq!(path, picture),
        other => panic!("{other:?}"),
    }

    // A browser that never finishes, with a child that would outlive it.
    let script = dir.path().join("hang");
    let pidfile = dir.path().join("child.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {}\nexec sleep 600\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let deadline = Duration::from_secs(2);
    let hung = stand_in(script.to_str().unwrap(), deadline).dump_dom("http://127.0.0.1:9/");
    let took = started.elapsed();
    match hung {
        Err(BrowserError::TimedOut { after, .. }) => assert_eq!(after, deadline),
        other => panic!("{other:?}"),
    }
    assert!(took >= deadline && took < deadline + long, "{took:?}");
    // The child went with it: gone, or a zombie waiting for init to reap it.
    let child: u32 = std::fs::read_to_string(&pidfile)
        .expect("the stand-in wrote its child's pid")
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is delivered at once but the exit takes a moment: allow it a bound.
    let dead = || {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        stat.is_empty() || state == Some('Z')
    };
    let until = Instant::now() + common::PATIENCE;
    while !dead() {
        assert!(
            Instant::now() < until,
            "the stand-in's child {child} still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
