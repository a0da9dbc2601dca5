//! `grasp-sync sync` as the benchmarks run it: its arguments, a run killed after a time
//! limit, what its log and summary say, and what its store holds afterwards.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use grasp_sync::store::LmdbStore;
use grasp_sync_core::RepoRef;
use grasp_sync_tests::{grasp_sync_bin, SyncRun};
use nostr::prelude::{EventId, Filter};

use super::env_usize;

/// The log line `grasp-sync sync` writes (at debug) when every relay is in sync.
const SETTLED_LOG: &str = "every relay is in sync or failed";
/// The warning the driver logs when in-flight writes outlast its shutdown grace.
const GAVE_UP_LOG: &str = "gave up waiting for in-flight writes";

/// `grasp-sync sync <repos> --relay URL --data-dir DIR --allow-private-relays --json -q`
/// (every other option at its default).
pub fn cli_args(repos: &[RepoRef], url: &str, dir: &Path) -> Vec<String> {
    let mut args = vec!["sync".to_owned()];
    args.extend(repos.iter().map(ToString::to_string));
    args.extend(
        [
            "--relay",
            url,
            "--data-dir",
            &dir.display().to_string(),
            "--allow-private-relays",
            "--json",
            "-q",
        ]
        .map(String::from),
    );
    args
}

/// How long one `grasp-sync sync` may run before the bench kills it
/// (`GRASP_BENCH_RUN_LIMIT_SECS`, default 300).
pub fn run_limit() -> Duration {
    Duration::from_secs(env_usize("GRASP_BENCH_RUN_LIMIT_SECS", 300) as u64)
}

/// Runs `grasp-sync` with `args` as the harness's `run_grasp_sync` does (its `--json`
/// summary parsed from the last JSON line), but killed after `limit`: a run whose
/// driver stops stepping never reaches its own `--timeout-secs`. Returns whether it was
/// killed (said on standard error after `tag`); what it wrote until then is kept. It
/// logs at `RUST_LOG`, by default `warn,grasp_sync::sync=debug`: the debug line for
/// "settled" times the shutdown.
pub async fn run_watched(args: &[String], limit: Duration, tag: &str) -> (SyncRun, bool) {
    use tokio::io::AsyncReadExt;
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,grasp_sync::sync=debug".into());
    let mut command = wrapped(args);
    let mut child = command
        .env("RUST_LOG", log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("grasp-sync starts");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf).await;
        buf
    });
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });
    let (status, hung) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            eprintln!(
                "{tag}: WARNING: grasp-sync (pid {:?}) still runs after {limit:?}: killed",
                child.id()
            );
            let _ = child.start_kill();
            (child.wait().await.ok(), true)
        }
    };
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let summary = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok());
    let run = SyncRun {
        code: status.and_then(|s| s.code()),
        summary,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    (run, hung)
}

/// `grasp-sync` with `args`, behind the command `GRASP_BENCH_WRAP` names when it is set
/// (whitespace-separated, e.g. `perf record -g -o /tmp/sync-%n.data --`; `%n` becomes
/// the run's number in this process, from 1), to profile one run.
fn wrapped(args: &[String]) -> tokio::process::Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let wrap = std::env::var("GRASP_BENCH_WRAP").unwrap_or_default();
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let mut words = wrap
        .split_whitespace()
        .map(|w| w.replace("%n", &n.to_string()));
    let Some(program) = words.next() else {
        let mut command = tokio::process::Command::new(grasp_sync_bin());
        command.args(args);
        return command;
    };
    let mut command = tokio::process::Command::new(program);
    command.args(words).arg(grasp_sync_bin()).args(args);
    command
}

/// From `start` to the run's "every relay is in sync" log line, when it was logged.
pub fn settled_after(run: &SyncRun, start: SystemTime) -> Option<Duration> {
    run.stderr
        .lines()
        .find(|line| line.contains(SETTLED_LOG))
        .and_then(log_time)
        .and_then(|at| at.duration_since(start).ok())
}

/// Whether the driver gave up waiting for in-flight writes at shutdown.
pub fn gave_up_writes(run: &SyncRun) -> bool {
    run.stderr.contains(GAVE_UP_LOG)
}

/// Whether the summary says the run ended in sync.
pub fn in_sync(run: &SyncRun) -> bool {
    run.summary
        .as_ref()
        .and_then(|s| s["settled"].as_bool())
        .unwrap_or(false)
}

/// The sync methods the relays were synced with (`NIP-77`, …), comma-separated.
pub fn methods(run: &SyncRun) -> String {
    let methods: BTreeSet<String> = run
        .relays()
        .iter()
        .filter_map(|r| r["method"].as_str().map(str::to_owned))
        .collect();
    methods.into_iter().collect::<Vec<_>>().join(", ")
}

/// Historic filter jobs completed (one NIP-77 session or one paged REQ each).
pub fn filters(run: &SyncRun) -> u64 {
    run.total("jobs_negentropy") + run.total("jobs_req")
}

/// The UTC timestamp (`2026-01-02T03:04:05.678901Z`) a `tracing` log line starts with,
/// colour codes skipped.
fn log_time(line: &str) -> Option<SystemTime> {
    // Drop `ESC [ … m` colour codes.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let stamp = plain.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let hours: u64 = t.next()?.parse().ok()?;
    let minutes: u64 = t.next()?.parse().ok()?;
    let seconds: f64 = t.next()?.parse().ok()?;
    // Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's
    // days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + hours * 3_600 + minutes * 60;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(seconds))
}

/// What a store holds compared with what the relay holds.
pub struct StoreCheck {
    /// Events in the store.
    pub stored: usize,
    /// Events the relay holds.
    pub expected: usize,
    /// The relay's events the store lacks.
    pub missing: usize,
    /// Events in the store the relay does not hold.
    pub extra: usize,
}

impl StoreCheck {
    /// A store holding `ids` against `expected`.
    pub fn of(ids: &BTreeSet<EventId>, expected: &BTreeSet<EventId>) -> Self {
        Self {
            stored: ids.len(),
            expected: expected.len(),
            missing: expected.difference(ids).count(),
            extra: ids.difference(expected).count(),
        }
    }
}

/// What grasp-sync's store in `dir` holds against `expected`.
pub async fn stored(dir: &Path, expected: &BTreeSet<EventId>) -> StoreCheck {
    let store = LmdbStore::open(dir, 16 << 30)
        .await
        .expect("the store opens");
    let items = store
        .items(Filter::new())
        .await
        .expect("the store lists its items");
    let ids: BTreeSet<EventId> = items.into_iter().map(|(_, id)| id).collect();
    StoreCheck::of(&ids, expected)
}
