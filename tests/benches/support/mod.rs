//! What the benchmarks (`sync_loopback`, `serve_sync`, `serve_load`) share. Here: a
//! bench's `main`, writing logs, reading a process's CPU time and memory from `/proc`,
//! the open-file limit, latency percentiles, number formatting for the markdown tables;
//! in the submodules: the generated corpus, preloading a daemon, running `grasp-sync
//! sync`, the plain REQ download, the verification floor and the rest of a client's
//! floor (parsing, store writes).
//!
//! Not a bench target of its own (cargo discovers `benches/*.rs` and
//! `benches/*/main.rs` only); each bench includes it with `mod support;` and, as each
//! uses a part of it, allows `dead_code` there.

pub mod client_floor;
pub mod corpus;
pub mod preload;
pub mod req_download;
pub mod sync_cli;
pub mod verify_floor;

use std::collections::BTreeMap;
use std::time::Duration;

/// A bench's `main`: runs `bench` on a multi-threaded tokio runtime when `cargo bench`
/// started it (it passes `--bench`); in test mode (`cargo test --all-targets`) it only
/// prints `usage`.
pub fn bench_main<F: std::future::Future<Output = ()>>(usage: &str, bench: impl FnOnce() -> F) {
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("{usage}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench());
}

/// An environment variable as a number (`_` and spaces ignored), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ' '], "").parse().ok())
        .unwrap_or(default)
}

/// Writes `text` to `file` in the directory `GRASP_BENCH_LOG_DIR` names, when it is set;
/// a failure is reported on standard error after `tag`.
pub fn save_log(tag: &str, file: &str, text: &str) {
    if let Ok(dir) = std::env::var("GRASP_BENCH_LOG_DIR") {
        let path = std::path::Path::new(&dir).join(file);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{tag}: cannot write {}: {e}", path.display());
        }
    }
}

/// `getconf CLK_TCK` (100 when it cannot be asked).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces):
/// state is field 3, so field `n` (1-based, as `man 5 proc` numbers them) is at `n - 3`.
fn stat_fields(pid: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect()
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// CPU time (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (zero elsewhere).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// This process.
    pub own: Duration,
    /// Children that were waited for.
    pub children: Duration,
}

impl Cpu {
    /// Now.
    pub fn now() -> Self {
        let f = stat_fields("self");
        let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        Self {
            own: ticks_to_duration(at(14) + at(15)),
            children: ticks_to_duration(at(16) + at(17)),
        }
    }
}

/// One look at a running process: CPU time so far (user + system, all threads) and
/// memory (`VmRSS`, `VmHWM` of `/proc/<pid>/status`, KiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// CPU time since the process started.
    pub cpu: Duration,
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>`; zeros when it cannot.
    pub fn of(pid: u32) -> Self {
        let pid = pid.to_string();
        let f = stat_fields(&pid);
        let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        Self {
            cpu: ticks_to_duration(at(14) + at(15)),
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }
}

/// `(soft, hard)` limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let mut v = l
                .trim_start_matches("Max open files")
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
            (v.next().unwrap_or(0), v.next().unwrap_or(0))
        })
        .unwrap_or((0, 0))
}

/// Raises this process's soft open-file limit to `want` (at most the hard limit);
/// children started afterwards inherit it. Returns the soft limit in force.
pub fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return open_files_limit().0;
        }
        let want = want as libc::rlim_t;
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    open_files_limit().0
}

/// p50, p99 and the maximum of a set of durations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// How many.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Latency {
    /// Of `values` (sorted here).
    pub fn of(values: &mut [Duration]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[i - 1]
        };
        Self {
            n: values.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: values[values.len() - 1],
        }
    }

    /// `p50 / p99 / max` in milliseconds.
    pub fn cell(&self) -> String {
        if self.n == 0 {
            return "—".into();
        }
        format!("{} / {} / {} ms", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

/// Milliseconds with a precision that suits the size.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `a / b` as a percentage (0 when `b` is 0).
pub fn pct(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        100.0 * a / b
    }
}

/// `a / b` as `1.23×` (— when `b` is 0).
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "—".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `1234567` as `1 234 567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.reverse();
    groups.join(" ")
}

/// `n / d` with thousands separators (— when `d` is 0).
pub fn per(n: u64, d: u64) -> String {
    n.checked_div(d).map_or_else(|| "—".into(), thousands)
}

/// `events / wall` per second with thousands separators (— when either is 0).
pub fn rate(events: u64, wall: Duration) -> String {
    if events == 0 || wall.is_zero() {
        "—".into()
    } else {
        thousands((events as f64 / wall.as_secs_f64()) as u64)
    }
}

/// `key{separator}value` pairs joined with `, ` (`none` when there are none).
pub fn listing<T: std::fmt::Display>(map: &BTreeMap<String, T>, separator: &str) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}{separator}{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// CPU time over wall time as a percentage of one core.
pub fn cpu_pct(cpu: Duration, wall: Duration) -> String {
    format!("{:.0} %", pct(cpu.as_secs_f64(), wall.as_secs_f64()))
}

/// The series of a Prometheus text page whose name starts with `prefix` and whose
/// value is not zero, as `(name with labels, value)`.
pub fn nonzero_series(page: &str, prefix: &str) -> Vec<(String, u64)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let value = value.trim().parse::<f64>().ok()? as u64;
            (value > 0).then(|| (name.to_owned(), value))
        })
        .collect()
}

/// A `TcpExt` counter of `/proc/net/netstat` (system-wide; 0 when absent), e.g.
/// `ListenOverflows`: connections a full accept queue dropped.
pub fn tcp_ext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
