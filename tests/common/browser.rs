//! Headless Chromium (Debian's `chromium` package) for the browser tests: load a page, let
//! it run for a budget of *virtual* time, and return the DOM it rendered
//! ([`dump_dom`]) or a picture of it ([`screenshot`]).
//!
//! Virtual time is what makes these tests deterministic without sleeping: Chromium runs
//! the page's timers as fast as it can until the budget is spent (pausing the clock while
//! a fetch is in flight), then dumps. The wall clock only bounds the whole run: past
//! [`deadline`] the browser's process group is killed and the test fails.
//!
//! Each run gets a fresh profile directory and its own process group, so runs in parallel
//! do not share state and a kill takes the renderer and zygote children with it.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where Debian's package puts it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Flags for every run. Running as root needs `--no-sandbox`; this machine has no GPU
/// and no network but loopback, and without the background-networking flags Chromium
/// keeps dialling Google's hosts (refused here) at every start.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Why a browser run gave nothing to check.
pub enum BrowserError {
    /// No browser at this path.
    Missing(PathBuf),
    Spawn(io::Error),
    /// Still running at the deadline; its process group was killed.
    TimedOut {
        after: Duration,
        stderr: String,
    },
    /// It exited with an error.
    Failed {
        status: ExitStatus,
        stderr: String,
    },
    /// It exited 0 but wrote no picture.
    NoScreenshot {
        path: PathBuf,
        stderr: String,
    },
}

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrowserError::Missing(exe) => write!(
                f,
                "headless Chromium is not installed at {}: the browser tests need Debian's \
                 package (`apt-get install -y chromium`; .ci/run installs it)",
                exe.display()
            ),
            BrowserError::Spawn(e) => write!(f, "could not start the browser: {e}"),
            BrowserError::TimedOut { after, stderr } => write!(
                f,
                "the browser was still running after {after:?}; killed. Its stderr:\n{}",
                tail(stderr)
            ),
            BrowserError::Failed { status, stderr } => write!(
                f,
                "the browser failed ({status}). Its stderr:\n{}",
                tail(stderr)
            ),
            BrowserError::NoScreenshot { path, stderr } => write!(
                f,
                "the browser wrote no screenshot to {}. Its stderr:\n{}",
                path.display(),
                tail(stderr)
            ),
        }
    }
}

// `unwrap` and `expect` print Debug: make that the readable message.
impl fmt::Debug for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The last lines of Chromium's stderr, which is mostly harmless noise (no D-Bus here)
/// with the real complaint at the end.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// How long a run may take on the wall clock by default: the page's virtual time, plus a
/// generous allowance for starting a browser on a loaded two-core machine.
pub fn deadline(virtual_time: Duration) -> Duration {
    virtual_time + Duration::from_secs(60)
}

/// Loads `url` in Debian's Chromium, lets it run for `virtual_time`, and returns the
/// serialized DOM (`document.documentElement.outerHTML` with a doctype) as the page left
/// it.
pub fn dump_dom(url: &str, virtual_time: Duration) -> Result<String, BrowserError> {
    Chromium::debian(virtual_time).dump_dom(url)
}

/// Loads `url` in Debian's Chromium in a window of `width` x `height` CSS pixels, lets it
/// run for `virtual_time`, and writes a PNG of the viewport to `path`.
pub fn screenshot(
    url: &str,
    path: &Path,
    size: (u32, u32),
    virtual_time: Duration,
) -> Result<(), BrowserError> {
    Chromium::debian(virtual_time).screenshot(url, path, size)
}

/// One way to run a browser; [`dump_dom`] and [`screenshot`] use Debian's with the
/// default [`deadline`]. The harness's own tests put a stand-in at `exe` to make it fail
/// or hang.
pub struct Chromium {
    pub exe: PathBuf,
    /// `--virtual-time-budget`: how long the page runs, in its own time.
    pub virtual_time: Duration,
    /// How long the run may take on the wall clock before it is killed.
    pub deadline: Duration,
}

impl Chromium {
    pub fn debian(virtual_time: Duration) -> Chromium {
        Chromium {
            exe: PathBuf::from(CHROMIUM),
            virtual_time,
            deadline: deadline(virtual_time),
        }
    }

    pub fn dump_dom(&self, url: &str) -> Result<String, BrowserError> {
        let (stdout, _stderr) = self.run(&["--dump-dom", url])?;
        Ok(stdout)
    }

    pub fn screenshot(
        &self,
        url: &str,
        path: &Path,
        (width, height): (u32, u32),
    ) -> Result<(), BrowserError> {
        // A picture left by an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(path);
        let (_stdout, stderr) = self.run(&[
            "--hide-scrollbars",
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", path.display()),
            url,
        ])?;
        if path.is_file() {
            Ok(())
        } else {
            Err(BrowserError::NoScreenshot {
                path: path.to_owned(),
                stderr,
            })
        }
    }

    /// Runs the browser with [`FLAGS`], a fresh profile, the time budget and `args`;
    /// returns its stdout and stderr.
    fn run(&self, args: &[&str]) -> Result<(String, String), BrowserError> {
        if !self.exe.is_file() {
            return Err(BrowserError::Missing(self.exe.clone()));
        }
        let profile = tempfile::tempdir().map_err(BrowserError::Spawn)?;
        let mut child = Command::new(&self.exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!(
                "--virtual-time-budget={}",
                self.virtual_time.as_millis()
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group (id = its pid), so that one kill reaches its children.
            .process_group(0)
            .spawn()
            .map_err(BrowserError::Spawn)?;
        let pid = child.id() as libc::pid_t;
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());

        // Wait for the exit without reaping it (WNOWAIT): while the browser is an unreaped
        // zombie its pid, and so its group's id, cannot be reused, so the group kill below
        // can only reach what this run started.
        let (exited, exit) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: waitid only writes into the siginfo_t it is given.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            let _ = exited.send(rc);
        });
        let timed_out = exit.recv_timeout(self.deadline).is_err();
        // Whether it finished or not, nothing of this run may outlive it: renderers that
        // linger would also hold the pipes open and the readers would never finish.
        // SAFETY: kill has no memory effects; the group is this run's own (see above).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let status = child.wait().map_err(BrowserError::Spawn)?;
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if timed_out {
            return Err(BrowserError::TimedOut {
                after: self.deadline,
                stderr,
            });
        }
        if !status.success() {
            return Err(BrowserError::Failed { status, stderr });
        }
        Ok((stdout, stderr))
    }
}

/// Reads a pipe to its end on a thread of its own, so a full pipe never stalls the child.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
