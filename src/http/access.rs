//! The access log: one line per response, in nginx's `combined` (the default) or `common`
//! format, with two fields after it: the microseconds the response took and where its body
//! came from (`hit`, `secondary`, or `-` when the proxy answered alone).
//!
//! ```text
//! 127.0.0.1 - - [26/Nov/2026:06:43:17 +0000] "GET /hello.txt HTTP/1.1" 200 21 "-" "curl/7.88.1" 350 hit
//! ```
//!
//! A response cut short has `aborted` in place of its byte count and the reason in
//! parentheses at the end; so has a request refused before it could be read, whose request
//! line is `-`. Times are in UTC. Log analysers that read the combined format (GoAccess,
//! AWStats) stop at the user agent and skip the rest.
//!
//! Where the lines go is `--access-log`: `-` for stderr (the default), through the `log`
//! crate on target `access`, so that `RUST_LOG` filters them as before; or a file, which
//! gets every line whatever `RUST_LOG` says, as nginx's access log does, and which
//! [`reopen`] opens again after logrotate has moved it (SIGUSR1 or SIGHUP). Requests for
//! the proxy's own `/-/` pages (the live view polls four times a second) are logged at
//! debug level only, to either.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::server::{Request, Version};

/// How each line is laid out (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// NCSA common: client, identity, user, time, request, status, bytes.
    Common,
    /// nginx's `combined`: common plus the referer and the user agent.
    #[default]
    Combined,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "common" => Ok(Format::Common),
            "combined" => Ok(Format::Combined),
            _ => Err(format!("{s:?}: expected `common` or `combined`")),
        }
    }
}

/// What one access-log line says.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub client: IpAddr,
    /// The request line's parts; `None` for a request refused before it could be read.
    pub request: Option<(&'a str, &'a str, &'a str)>,
    pub status: u16,
    /// Body bytes sent; `None` when the response was cut short (or none was sent for a
    /// refused request: then `why` says why).
    pub bytes: Option<u64>,
    /// Why the response was cut short or the request refused.
    pub why: Option<String>,
    pub micros: u128,
    /// Where the body came from: `hit`, `secondary`, `-`.
    pub source: &'a str,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// The record of a response to `request` that took `elapsed` and ended with
    /// `outcome` (body bytes sent, or why it was cut short).
    pub fn new(
        request: &'a Request,
        status: u16,
        outcome: &io::Result<u64>,
        elapsed: Duration,
        source: &'a str,
    ) -> Record<'a> {
        Record {
            client: request.peer.ip(),
            request: Some((
                request.method.as_str(),
                &request.target,
                match request.version {
                    Version::Http10 => "HTTP/1.0",
                    Version::Http11 => "HTTP/1.1",
                },
            )),
            status,
            bytes: outcome.as_ref().ok().copied(),
            why: outcome.as_ref().err().map(ToString::to_string),
            micros: elapsed.as_micros(),
            source,
            referer: request.header("Referer"),
            user_agent: request.header("User-Agent"),
        }
    }

    /// The record of a request refused (with `status`) before it could be read whole.
    pub fn refused(client: IpAddr, status: u16, why: &str) -> Record<'static> {
        Record {
            client,
            request: None,
            status,
            bytes: None,
            why: Some(why.to_owned()),
            micros: 0,
            source: "-",
            referer: None,
            user_agent: None,
        }
    }

    /// Whether this is a request for one of the proxy's own `/-/` pages.
    fn is_admin(&self) -> bool {
        self.request
            .is_some_and(|(_, target, _)| target.starts_with("/-/") || target == "/-")
    }

    /// The line, without a newline.
    pub fn line(&self, format: Format, now: SystemTime) -> String {
        let mut line = String::with_capacity(160);
        let _ = write!(line, "{} - - [{}] \"", self.client, clf_time(now));
        match self.request {
            Some((method, target, version)) => {
                escape_into(&mut line, method);
                line.push(' ');
                escape_into(&mut line, target);
                line.push(' ');
                line.push_str(version);
            }
            None => line.push('-'),
        }
        let _ = write!(line, "\" {} ", self.status);
        match (self.bytes, &self.why) {
            (Some(bytes), _) => {
                let _ = write!(line, "{bytes}");
            }
            (None, _) if self.request.is_none() => line.push('-'),
            (None, _) => line.push_str("aborted"),
        }
        if format == Format::Combined {
            for field in [self.referer, self.user_agent] {
                line.push_str(" \"");
                escape_into(&mut line, field.unwrap_or("-"));
                line.push('"');
            }
        }
        let _ = write!(line, " {} {}", self.micros, self.source);
        if let Some(why) = &self.why {
            line.push_str(" (");
            escape_into(&mut line, why);
            line.push(')');
        }
        line
    }
}

/// Appends `text` with `"`, `\` and bytes outside printable ASCII escaped as `\xHH`, as
/// nginx does, so that a client cannot forge a line or a field.
fn escape_into(line: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' | ..0x20 | 0x7f.. => {
                let _ = write!(line, "\\x{byte:02X}");
            }
            _ => line.push(byte as char),
        }
    }
}

/// `26/Nov/2026:06:43:17 +0000`: the common log format's time, in UTC.
fn clf_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_date(secs / 86_400);
    let time = secs % 86_400;
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// The proleptic Gregorian date (year, month 1–12, day 1–31) of a day counted from
/// 1970-01-01. Counts in 400-year eras (146,097 days each) of years that begin on 1 March,
/// so that the leap day is the last day of its year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let days = days + 719_468; // 0000-03-01 to 1970-01-01
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Where access lines go.
enum Sink {
    /// Through `log` to stderr, filtered by `RUST_LOG`.
    Log,
    /// Appended to a file (the handle is replaced by [`reopen`]).
    File { path: PathBuf, file: Mutex<File> },
}

/// The access log: a format and where its lines go.
pub struct AccessLog {
    format: Format,
    sink: Sink,
}

impl AccessLog {
    /// The log `--access-log PATH --log-format FORMAT` asks for: `-` is stderr.
    ///
    /// # Errors
    /// The file cannot be opened for appending; the message names it.
    pub fn open(path: &str, format: Format) -> io::Result<AccessLog> {
        let sink = if path == "-" {
            Sink::Log
        } else {
            let path = PathBuf::from(path);
            let file = Mutex::new(open_file(&path)?);
            Sink::File { path, file }
        };
        Ok(AccessLog { format, sink })
    }

    fn write(&self, record: &Record) {
        let admin = record.is_admin();
        let level = if admin {
            log::Level::Debug
        } else if record.bytes.is_none() {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        match &self.sink {
            Sink::Log => {
                if log::log_enabled!(target: "access", level) {
                    let line = record.line(self.format, SystemTime::now());
                    log::log!(target: "access", level, "{line}");
                }
            }
            Sink::File { path, file } => {
                if admin && !log::log_enabled!(target: "access", level) {
                    return;
                }
                let mut line = record.line(self.format, SystemTime::now());
                line.push('\n');
                // One write per line, on a file opened for appending: lines from
                // different connections never interleave.
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = file.write_all(line.as_bytes()) {
                    log::warn!("writing the access log {}: {e}", path.display());
                }
            }
        }
    }

    /// Opens the file again under its name (logrotate has moved the old one away); the old
    /// handle is kept if that fails. Nothing to do for stderr.
    fn reopen(&self) {
        if let Sink::File { path, file } = &self.sink {
            match open_file(path) {
                Ok(new) => {
                    *file.lock().unwrap_or_else(|e| e.into_inner()) = new;
                    log::info!("reopened the access log {}", path.display());
                }
                Err(e) => log::error!("{e}; still writing to the file it had open"),
            }
        }
    }
}

fn open_file(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening the access log {}: {e}", path.display()),
            )
        })
}

/// The process's access log: stderr in the combined format until [`install`] says
/// otherwise.
static LOG: OnceLock<AccessLog> = OnceLock::new();

fn current() -> &'static AccessLog {
    LOG.get_or_init(|| AccessLog {
        format: Format::default(),
        sink: Sink::Log,
    })
}

/// Makes `log` the process's access log. Call it once, before serving.
///
/// # Errors
/// An access log is already in use (its lines would be split between two places).
pub fn install(log: AccessLog) -> Result<(), String> {
    LOG.set(log)
        .map_err(|_| "the access log is already set".to_owned())
}

/// Writes one line to the process's access log.
pub fn log(record: &Record) {
    current().write(record);
}

/// Reopens the access log file (SIGUSR1, SIGHUP).
pub fn reopen() {
    current().reopen();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> Record<'static> {
        Record {
            client: "127.0.0.1".parse().unwrap(),
            request: Some(("GET", "/hello.txt", "HTTP/1.1")),
            status: 200,
            bytes: Some(21),
            why: None,
            micros: 350,
            source: "hit",
            referer: None,
            user_agent: Some("curl/7.88.1"),
        }
    }

    /// 2026-11-26T06:43:17Z.
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_675_397)
    }

    #[test]
    fn combined_and_common() {
        assert_eq!(
            record().line(Format::Combined, at()),
            "127.0.0.1 - - [26/Nov/2026:06:43:17 +0000] \"GET /hello.txt HTTP/1.1\" 200 21 \
             \"-\" \"curl/7.88.1\" 350 hit"
        );
        assert_eq!(
            record().line(Format::Common, at()),
            "127.0.0.1 - - [26/Nov/2026:06:43:17 +0000] \"GET /hello.txt HTTP/1.1\" 200 21 350 hit"
        );
    }

    #[test]
    fn aborted_and_refused() {
        let mut cut = record();
        cut.bytes = None;
        cut.why = Some("broken pipe".into());
        assert!(
            cut.line(Format::Common, at())
                .ends_with("\" 200 aborted 350 hit (broken pipe)")
        );
        let refused = Record::refused("::1".parse().unwrap(), 400, "bad \"request\"");
        assert_eq!(
            refused.line(Format::Common, at()),
            "::1 - - [26/Nov/2026:06:43:17 +0000] \"-\" 400 - 0 - (bad \\x22request\\x22)"
        );
    }

    #[test]
    fn fields_are_escaped() {
        let mut r = record();
        r.user_agent = Some("a\"b\\c\u{7f}é");
        r.referer = Some("x\ny");
        let line = r.line(Format::Combined, at());
        assert!(
            line.contains("\"x\\x0Ay\" \"a\\x22b\\x5Cc\\x7F\\xC3\\xA9\""),
            "{line}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_818), (2026, 12, 31));
        assert_eq!(clf_time(at()), "26/Nov/2026:06:43:17 +0000");
    }

    #[test]
    fn admin_pages_are_told_apart() {
        let mut r = record();
        assert!(!r.is_admin());
        r.request = Some(("GET", "/-/segments", "HTTP/1.1"));
        assert!(r.is_admin());
    }

    #[test]
    fn a_file_log_appends_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.to_str().unwrap(), Format::Common).unwrap();
        log.write(&record());
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.write(&record());
        log.reopen();
        log.write(&record());
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        assert!(new.ends_with(" 200 21 350 hit\n"), "{new}");
    }

    #[test]
    fn an_unopenable_file_is_named() {
        let err = AccessLog::open("/nonexistent-dir/a.log", Format::Common)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/a.log"), "{err}");
    }
}
