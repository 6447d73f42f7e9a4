//! Counters, and the reserved paths that show them: `/-/stats` (JSON) and `/-/metrics`
//! (Prometheus text format). Each shows the proxy's counters and the cache's, which the
//! cache sends over the channel (a STATS request) as typed counters (`ipc::Stats`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::ipc::Stats;

/// The proxy's counters. Every request for an object is exactly one hit or one miss, so
/// `hits + misses = requests`; requests refused before a lookup (bad method, bad path,
/// overload) are counted only by their status.
#[derive(Debug)]
pub struct ProxyStats {
    started: Instant,
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub fills_aborted: AtomicU64,
    pub coalesced_waits: AtomicU64,
    pub coalesce_timeouts: AtomicU64,
    pub purged: AtomicU64,
    pub stale_served: AtomicU64,
    pub replaced: AtomicU64,
    pub revalidated: AtomicU64,
    /// Hits whose cache broke off mid-body and that were finished from secondary storage.
    pub hits_resumed: AtomicU64,
    /// Object body bytes sent (errors and the stats pages are not counted).
    pub bytes_served: AtomicU64,
    pub responses_aborted: AtomicU64,
    /// Client connections open now (a gauge, not a counter).
    pub connections_open: AtomicU64,
    /// Responses by status class and the error statuses that matter to an operator.
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_400: AtomicU64,
    pub status_403: AtomicU64,
    pub status_404: AtomicU64,
    pub status_405: AtomicU64,
    pub status_414: AtomicU64,
    pub status_416: AtomicU64,
    pub status_500: AtomicU64,
    pub status_502: AtomicU64,
    pub status_503: AtomicU64,
}

impl Default for ProxyStats {
    fn default() -> Self {
        let zero = || AtomicU64::new(0);
        ProxyStats {
            started: Instant::now(),
            requests: zero(),
            hits: zero(),
            misses: zero(),
            fills: zero(),
            fills_aborted: zero(),
            coalesced_waits: zero(),
            coalesce_timeouts: zero(),
            purged: zero(),
            stale_served: zero(),
            replaced: zero(),
            revalidated: zero(),
            hits_resumed: zero(),
            bytes_served: zero(),
            responses_aborted: zero(),
            connections_open: zero(),
            status_2xx: zero(),
            status_3xx: zero(),
            status_400: zero(),
            status_403: zero(),
            status_404: zero(),
            status_405: zero(),
            status_414: zero(),
            status_416: zero(),
            status_500: zero(),
            status_502: zero(),
            status_503: zero(),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ProxyStats {
    pub fn count_status(&self, status: u16) {
        let counter = match status {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400 => &self.status_400,
            403 => &self.status_403,
            404 => &self.status_404,
            405 => &self.status_405,
            414 => &self.status_414,
            416 => &self.status_416,
            502 => &self.status_502,
            503 => &self.status_503,
            _ => &self.status_500,
        };
        bump(counter);
    }

    /// Every counter with its name.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("requests", load(&self.requests)),
            ("hits", load(&self.hits)),
            ("misses", load(&self.misses)),
            ("fills", load(&self.fills)),
            ("fills_aborted", load(&self.fills_aborted)),
            ("coalesced_waits", load(&self.coalesced_waits)),
            ("coalesce_timeouts", load(&self.coalesce_timeouts)),
            ("purged", load(&self.purged)),
            ("stale_served", load(&self.stale_served)),
            ("replaced", load(&self.replaced)),
            ("revalidated", load(&self.revalidated)),
            ("hits_resumed", load(&self.hits_resumed)),
            ("bytes_served", load(&self.bytes_served)),
            ("responses_aborted", load(&self.responses_aborted)),
            ("connections_open", load(&self.connections_open)),
            ("status_2xx", load(&self.status_2xx)),
            ("status_3xx", load(&self.status_3xx)),
            ("status_400", load(&self.status_400)),
            ("status_403", load(&self.status_403)),
            ("status_404", load(&self.status_404)),
            ("status_405", load(&self.status_405)),
            ("status_414", load(&self.status_414)),
            ("status_416", load(&self.status_416)),
            ("status_500", load(&self.status_500)),
            ("status_502", load(&self.status_502)),
            ("status_503", load(&self.status_503)),
        ]
    }
}

/// The cache's counters as the stats pages show them: its pid first, then its counters.
pub fn cache_counters(stats: &Stats) -> Vec<(String, u64)> {
    std::iter::once(("pid".to_owned(), u64::from(stats.pid)))
        .chain(stats.counters.iter().cloned())
        .collect()
}

/// `{"proxy": {...}, "cache": {...}}`; `"cache": null` when the cache did not answer.
pub fn to_json(proxy: &[(&str, u64)], cache: Option<&[(String, u64)]>) -> String {
    let mut out = String::from("{\n  \"proxy\": {");
    write_object(&mut out, proxy.iter().map(|(k, v)| (*k, *v)));
    out.push_str("},\n  \"cache\": ");
    match cache {
        Some(cache) => {
            out.push('{');
            write_object(&mut out, cache.iter().map(|(k, v)| (k.as_str(), *v)));
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push_str("\n}\n");
    out
}

fn write_object<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, u64)>) {
    for (i, (name, value)) in pairs.enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\n    \"{name}\": {value}");
    }
    out.push_str("\n  ");
}

/// Names that are levels rather than running totals.
const GAUGES: &[&str] = &[
    "uptime_seconds",
    "objects",
    "bytes_held",
    "capacity_bytes",
    "max_object_bytes",
    "connections_open",
];

/// The Prometheus text exposition format: `shmcache_proxy_hits_total 12` and so on;
/// counters end in `_total`, gauges do not.
pub fn to_prometheus(proxy: &[(&str, u64)], cache: Option<&[(String, u64)]>) -> String {
    let mut out = String::new();
    let mut section = |process: &str, pairs: &mut dyn Iterator<Item = (&str, u64)>| {
        for (name, value) in pairs {
            let (kind, suffix) = if GAUGES.contains(&name) {
                ("gauge", "")
            } else {
                ("counter", "_total")
            };
            let metric = format!("shmcache_{process}_{name}{suffix}");
            let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {value}");
        }
    };
    section("proxy", &mut proxy.iter().map(|(k, v)| (*k, *v)));
    if let Some(cache) = cache {
        section("cache", &mut cache.iter().map(|(k, v)| (k.as_str(), *v)));
    }
    let up = u64::from(cache.is_some());
    let _ = writeln!(
        out,
        "# TYPE shmcache_cache_up gauge\nshmcache_cache_up {up}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let cache = cache_counters(&Stats {
            pid: 7,
            counters: vec![("hits".to_owned(), 3), ("objects".to_owned(), 2)],
            workers: vec![None],
        });
        assert_eq!(
            cache,
            vec![
                ("pid".to_owned(), 7),
                ("hits".to_owned(), 3),
                ("objects".to_owned(), 2)
            ]
        );
        let proxy = [("requests", 5), ("uptime_seconds", 9)];
        let json = to_json(&proxy, Some(&cache));
        assert!(
            json.contains("\"proxy\": {\n    \"requests\": 5,\n    \"uptime_seconds\": 9\n  }"),
            "{json}"
        );
        assert!(
            json.contains("\"cache\": {\n    \"pid\": 7,\n    \"hits\": 3,"),
            "{json}"
        );
        assert!(to_json(&proxy, None).contains("\"cache\": null"));
        let prom = to_prometheus(&proxy, Some(&cache));
        assert!(prom.contains(
            "# TYPE shmcache_proxy_requests_total counter\nshmcache_proxy_requests_total 5\n"
        ));
        assert!(prom.contains("shmcache_proxy_uptime_seconds 9\n"));
        assert!(prom.contains("# TYPE shmcache_cache_objects gauge\nshmcache_cache_objects 2\n"));
        assert!(prom.contains("shmcache_cache_up 1\n"));
    }
}
