//! What installing and documenting the programs rests on: the README's flag tables agree
//! with `--help`, the man pages are made and name every flag, the systemd units verify,
//! and an installed webproxy finds the shmcached beside it.

mod common;

#[path = "../examples/man.rs"]
mod man;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;

const README: &str = include_str!("../README.md");

/// The flags (`--long` and `-s`) a binary's `--help` lists.
fn help_flags(exe: &str) -> BTreeSet<String> {
    let out = Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // Flag lines are indented two spaces (six without a short flag); their descriptions,
    // ten.
    help.lines()
        .filter(|l| {
            let text = l.trim_start();
            text.starts_with('-') && l.len() - text.len() < 10
        })
        .flat_map(|l| flags_in(l.split(" <").next().unwrap()))
        .collect()
}

/// The `-x` and `--long` flags written in `text`.
fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.strip_prefix("--").is_some_and(|l| l.len() > 1)
                || (w.len() == 2 && w.starts_with('-') && *w != "--")
        })
        .map(str::to_owned)
        .collect()
}

/// The flags in the first column of the README table that follows the line `heading`
/// under "## Command line".
fn readme_flags(heading: &str) -> BTreeSet<String> {
    let section = README
        .split("\n## Command line\n")
        .nth(1)
        .expect("a Command line section");
    let table = section
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("a table after {heading:?}"));
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .flat_map(|row| flags_in(row.split('|').nth(1).unwrap()))
        .collect()
}

#[test]
fn the_readme_flag_tables_match_help() {
    for (heading, exe) in [
        ("`shmcached`:", env!("CARGO_BIN_EXE_shmcached")),
        ("`webproxy`:", env!("CARGO_BIN_EXE_webproxy")),
    ] {
        let help = help_flags(exe);
        let readme = readme_flags(heading);
        assert!(help.contains("--version") && help.len() > 8, "{help:?}");
        let missing: Vec<_> = help.difference(&readme).collect();
        let extra: Vec<_> = readme.difference(&help).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{heading} README table vs --help: missing {missing:?}, not in --help {extra:?}"
        );
    }
}

#[test]
fn man_pages_are_made_from_the_command_lines() {
    let pages = man::write_man_pages(&man::man_dir()).unwrap();
    for (page, exe) in pages.iter().zip([
        env!("CARGO_BIN_EXE_shmcached"),
        env!("CARGO_BIN_EXE_webproxy"),
    ]) {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(text.starts_with(".ie"), "{}: a roff page", page.display());
        for flag in help_flags(exe) {
            // roff escapes each '-' as "\-".
            let roff = flag.replace('-', "\\-");
            assert!(text.contains(&roff), "{} lacks {flag}", page.display());
        }
        assert!(
            text.contains("QUIT"),
            "{} says what the signals do",
            page.display()
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install -y systemd)");
        return;
    }
    // The units name the installed binaries; verify checks that their commands exist, so
    // they are pointed at the ones just built, as instance `www`.
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_webproxy")).parent().unwrap();
    let mut units = Vec::new();
    for unit in ["shmcached", "webproxy"] {
        let text = std::fs::read_to_string(format!(
            "{}/contrib/systemd/{unit}@.service",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert!(
            text.contains("/usr/local/bin/"),
            "{unit}: the installed path"
        );
        let path = dir.path().join(format!("{unit}@www.service"));
        let bin = format!("{}/", bin.display());
        std::fs::write(&path, text.replace("/usr/local/bin/", &bin)).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn an_installed_webproxy_finds_shmcached_beside_it() {
    // What `cargo install --path .` makes: both binaries in one bin directory.
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for exe in [
        env!("CARGO_BIN_EXE_shmcached"),
        env!("CARGO_BIN_EXE_webproxy"),
    ] {
        let name = Path::new(exe).file_name().unwrap();
        std::fs::copy(exe, bin.join(name)).unwrap();
    }
    let files = tempfile::tempdir().unwrap();
    write_files(files.path(), &[("a.txt", b"installed")]);
    let name = instance("installed");
    let webproxy = bin.join("webproxy");
    let args = [
        "--name",
        &name,
        "--port",
        "0",
        "--spawn-cache",
        files.path().to_str().unwrap(),
    ];
    let proxy = Proc::launch("proxy", webproxy.to_str().unwrap(), &args);
    let line = proxy.wait_log("listening on http://");
    let addr = listening_addr(&line);
    let r = get(addr, "/a.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"installed"[..]));
    assert_eq!(
        r.header("x-cache"),
        Some("HIT"),
        "served by the spawned cache"
    );
    stop_and_check_clean(&name, vec![proxy]);
}
