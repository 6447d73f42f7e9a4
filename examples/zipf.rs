//! Hit ratio against capacity under a Zipf-distributed workload, measured end to end.
//!
//! ```sh
//! cargo build --release --bins --examples && ./target/release/examples/zipf
//! ./target/release/examples/zipf --files 3000 --requests 30000 --alpha 0.8
//! ```
//!
//! It writes a corpus of files (sizes spread log-uniformly from 1 KiB to 256 KiB) into a
//! temporary directory, then for each capacity starts a fresh `shmcached --capacity C` and a
//! `webproxy -s DIR` (both from the directory above this example's executable), replays
//! the same request stream (rank `k` is asked with probability ∝ 1/k^alpha) over one
//! kept-alive connection, and reads the counters from `/-/stats`. The cache starts empty:
//! every object enters through a miss, as in a real read-through cache.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use shmcache::ipc::process;

struct Options {
    files: usize,
    requests: usize,
    alpha: f64,
    seed: u64,
}

fn options() -> Options {
    let mut o = Options {
        files: 2000,
        requests: 20_000,
        alpha: 1.0,
        seed: 2026,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let bad = || -> ! {
            eprintln!("usage: zipf [--files N] [--requests N] [--alpha A] [--seed S]");
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--files" => o.files = value.parse().unwrap_or_else(|_| bad()),
            "--requests" => o.requests = value.parse().unwrap_or_else(|_| bad()),
            "--alpha" => o.alpha = value.parse().unwrap_or_else(|_| bad()),
            "--seed" => o.seed = value.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
    }
    o
}

/// xorshift64*: small, fast and reproducible; statistical quality is plenty here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples ranks 0..n with P(k) ∝ 1/(k+1)^alpha by binary search in the cumulative weights.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, alpha: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(alpha);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// A child process stopped with SIGTERM (so it cleans up) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = process::terminate(self.0.id());
        let _ = self.0.wait();
    }
}

fn start(exe: &Path, args: &[&str], ready: &str) -> (Proc, String) {
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "info,access=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release --bins?)", exe.display()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains(ready))
        .unwrap_or_else(|| panic!("{} exited before it was ready", exe.display()));
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Proc(child), line)
}

/// GETs `path` on a kept-alive connection; returns whether the cache served it.
fn fetch(reader: &mut BufReader<TcpStream>, path: &str) -> bool {
    // One write: a request split over several small writes stalls on Nagle's algorithm.
    let request = format!("GET {path} HTTP/1.1\r\nHost: z\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
    let (mut len, mut hit) = (0usize, false);
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length: ") {
            len = v.parse().unwrap();
        }
        hit |= l == "x-cache: hit";
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    hit
}

fn stats(addr: SocketAddr) -> HashMap<String, u64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /-/stats HTTP/1.1\r\nHost: z\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let mut out = HashMap::new();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with("\"proxy\"") {
            section = "proxy";
        } else if line.starts_with("\"cache\"") {
            section = "cache";
        } else if let Some((k, v)) = line.trim_end_matches(',').split_once(": ")
            && let Ok(v) = v.parse()
        {
            out.insert(format!("{section}.{}", k.trim_matches('"')), v);
        }
    }
    out
}

fn main() {
    let o = options();
    let bin_dir: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    let (cached, proxy) = (bin_dir.join("shmcached"), bin_dir.join("webproxy"));

    let corpus = tempfile::tempdir().unwrap();
    let mut rng = Rng(o.seed | 1);
    let sizes: Vec<u64> = (0..o.files)
        .map(|_| (1024.0 * 256f64.powf(rng.unit())) as u64)
        .collect();
    for (i, &size) in sizes.iter().enumerate() {
        std::fs::write(
            corpus.path().join(format!("{i}.bin")),
            vec![(i % 251) as u8; size as usize],
        )
        .unwrap();
    }
    let total: u64 = sizes.iter().sum();
    // Rank k is file perm[k], so popularity is independent of size.
    let mut perm: Vec<usize> = (0..o.files).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let zipf = Zipf::new(o.files, o.alpha);
    let stream: Vec<usize> = (0..o.requests)
        .map(|_| perm[zipf.sample(&mut rng)])
        .collect();
    let asked: u64 = stream.iter().map(|&f| sizes[f]).sum();

    println!(
        "{} files, {:.1} MiB in all; {} requests (Zipf alpha {}), {:.1} MiB asked",
        o.files,
        total as f64 / 1048576.0,
        o.requests,
        o.alpha,
        asked as f64 / 1048576.0
    );
    println!("| capacity | of corpus | hit ratio | byte hit ratio | evictions | req/s |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for percent in [1u64, 2, 5, 10, 25, 50, 100] {
        let capacity = (total * percent / 100).max(64 * 1024);
        let name = format!("zipf{}-{percent}", std::process::id());
        let cap = capacity.to_string();
        let (_cache, _) = start(&cached, &["--name", &name, "--capacity", &cap], "serving ");
        let dir = corpus.path().to_str().unwrap();
        let (_proxy, line) = start(
            &proxy,
            &["--name", &name, "--port", "0", "-s", dir],
            "listening on http://",
        );
        let addr: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("address in the log");
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_nodelay(true).unwrap();
        let mut conn = BufReader::new(socket);
        let started = Instant::now();
        let mut hit_bytes = 0;
        for &f in &stream {
            if fetch(&mut conn, &format!("/{f}.bin")) {
                hit_bytes += sizes[f];
            }
        }
        let rate = o.requests as f64 / started.elapsed().as_secs_f64();
        let st = stats(addr);
        let (hits, requests) = (st["proxy.hits"], st["proxy.requests"]);
        println!(
            "| {:.1} MiB | {percent}% | {:.1}% | {:.1}% | {} | {rate:.0} |",
            capacity as f64 / 1048576.0,
            100.0 * hits as f64 / requests as f64,
            100.0 * hit_bytes as f64 / asked as f64,
            st["cache.evictions"],
        );
    }
}
