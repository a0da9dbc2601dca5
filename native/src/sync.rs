//! `grasp-sync sync`: a one-shot mirror of named repositories into the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use grasp_sync_core::accept::AcceptConfig;
use grasp_sync_core::engine::{
    EngineConfig, EngineStats, Method, Phase, RelayStats, SyncEngine, Time,
};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::{RelayUrl, RepoRef};
use grasp_sync_driver::{Command, Control, Driver, DriverStats, Exit, Store};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::clock::SystemClock;
use crate::net::{NativeNetwork, NetConfig};
use crate::store::LmdbStore;
use crate::verify::ParallelVerifier;

/// What `grasp-sync sync` was asked.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Repository references: `30617:<pubkey>:<d>` or `naddr1…`.
    pub repos: Vec<String>,
    /// Relays to ask for the announcements (besides `naddr` relay hints).
    pub relays: Vec<String>,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// LMDB map size.
    pub map_size: usize,
    /// Follow relays that announcements list even when they are private addresses.
    pub allow_private_relays: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Connection attempts per relay before it counts as failed.
    pub attempts: u64,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// How long a REQ may go without EOSE.
    pub eose_timeout: Duration,
    /// How long a NEG-OPEN may go without an answer before falling back to REQ.
    pub neg_timeout: Duration,
    /// Relay URLs that are us (a daemon running the sync): never synced from.
    pub own_urls: BTreeSet<RelayUrl>,
    /// Whether the relays named in `relays` (and `naddr` hints) may be private
    /// addresses: an operator's own command line, yes; a request to a daemon, no.
    pub trust_named_relays: bool,
    /// What acceptance enforces: by default a client's (every announcement); a daemon
    /// running a handed-over sync applies its own policy.
    pub accept: AcceptConfig,
}

impl SyncOptions {
    /// Options with the defaults for everything but the repositories, relays and store.
    pub fn new(repos: Vec<String>, relays: Vec<String>, data_dir: PathBuf) -> Self {
        let timing = grasp_sync_core::engine::Timing::default();
        Self {
            repos,
            relays,
            data_dir,
            map_size: 16 << 30,
            allow_private_relays: false,
            timeout: Duration::from_secs(600),
            attempts: 3,
            progress: false,
            eose_timeout: timing.eose_timeout,
            neg_timeout: timing.neg_first_frame_timeout,
            own_urls: BTreeSet::new(),
            trust_named_relays: true,
            accept: AcceptConfig::default(),
        }
    }
}

/// One relay's line in the summary.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// The relay.
    pub url: RelayUrl,
    /// Where it ended.
    pub phase: Phase,
    /// How it was synced.
    pub method: Method,
    /// Its counters.
    pub stats: RelayStats,
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Per relay.
    pub relays: Vec<RelayReport>,
    /// Repositories tracked at the end.
    pub repos: usize,
    /// Events written to the store.
    pub stored: u64,
    /// Driver counters.
    pub driver: DriverStats,
    /// Engine-wide counters.
    pub engine: EngineStats,
    /// Whether every relay ended in sync or failed (rather than the timeout).
    pub settled: bool,
}

impl SyncReport {
    /// Relays that left something unsynced ([`RelayStats::has_gaps`]).
    pub fn relays_with_gaps(&self) -> usize {
        self.relays.iter().filter(|r| r.stats.has_gaps()).count()
    }

    /// Whether nothing could be synced: no relay was reached.
    pub fn nothing_synced(&self) -> bool {
        self.relays
            .iter()
            .all(|r| r.stats.round_trips == 0 && r.stats.bytes_in == 0)
    }

    /// The summary as JSON (for scripts and tests).
    pub fn json(&self) -> serde_json::Value {
        let relays: Vec<serde_json::Value> = self
            .relays
            .iter()
            .map(|r| {
                serde_json::json!({
                    "url": r.url.as_str(),
                    "state": state_name(r.phase, &r.stats),
                    "method": method_name(r.method),
                    "received": r.stats.events_received,
                    "stored": r.stats.events_accepted,
                    "rejected": r.stats.events_rejected,
                    "bad_frames": r.stats.bad_frames,
                    "bytes_in": r.stats.bytes_in,
                    "bytes_out": r.stats.bytes_out,
                    "round_trips": r.stats.round_trips,
                    "jobs_negentropy": r.stats.jobs_negentropy,
                    "jobs_req": r.stats.jobs_req,
                    "incomplete_windows": r.stats.incomplete_windows,
                    "failures": r.stats.failures,
                    "stalled_jobs": r.stats.stalled_jobs,
                    "abandoned_jobs": r.stats.abandoned_jobs,
                    "abandoned_waiting": r.stats.abandoned_waiting,
                    "dropped": r.stats.dropped,
                    "undelivered_ids": r.stats.undelivered_ids,
                    "forged_twice": r.stats.forged_twice,
                })
            })
            .collect();
        serde_json::json!({
            "relays": relays,
            "repos": self.repos,
            "stored": self.stored,
            "settled": self.settled,
            "store_failures": self.driver.store_failures,
            "store_error": self.engine.store_error,
            "loaded_events": self.driver.loaded_events,
            "checkpoints_with_events": self.engine.checkpoints_with_events,
            "checkpoints_after_events": self.engine.checkpoints_after_events,
        })
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<40} {:<8} {:<10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7}",
            "relay",
            "state",
            "method",
            "received",
            "stored",
            "rejected",
            "bytes in",
            "bytes out",
            "trips"
        );
        for r in &self.relays {
            let rejected: u64 = r.stats.events_rejected.values().sum();
            let _ = writeln!(
                out,
                "{:<40} {:<8} {:<10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7}",
                truncate(r.url.as_str(), 40),
                state_name(r.phase, &r.stats),
                method_name(r.method),
                r.stats.events_received,
                r.stats.events_accepted,
                rejected,
                r.stats.bytes_in,
                r.stats.bytes_out,
                r.stats.round_trips
            );
        }
        if let Some(error) = &self.engine.store_error {
            let _ = writeln!(out, "events not stored: {error}");
        }
        let _ = writeln!(
            out,
            "{} repositories tracked, {} events stored{}",
            self.repos,
            self.stored,
            if self.settled {
                ""
            } else {
                " (timed out before every relay was in sync)"
            }
        );
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}

/// A relay's state in a word: its phase, or "gaps" when it is open but left something
/// unsynced until the next fresh start ([`RelayStats::has_gaps`]).
pub fn state_name(phase: Phase, stats: &RelayStats) -> &'static str {
    match phase {
        Phase::Idle => "idle",
        Phase::Connecting { .. } => "connect",
        // Open, but something will not be synced before a fresh start.
        Phase::Open if stats.has_gaps() => "gaps",
        Phase::Open => "in sync",
        Phase::Backoff { .. } => "failing",
        Phase::Dead { .. } => "dead",
    }
}

/// A short name for a method.
pub fn method_name(method: Method) -> &'static str {
    match method {
        Method::None => "-",
        Method::Negentropy => "NIP-77",
        Method::Req => "REQ",
    }
}

/// Why a sync could not run.
#[derive(Debug)]
pub enum SyncError {
    /// The arguments are wrong.
    Usage(String),
    /// The store could not be opened or read.
    Store(String),
    /// Something else.
    Other(String),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) | Self::Store(m) | Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SyncError {}

/// Parses repository references and collects `naddr` relay hints.
pub fn parse_repos(inputs: &[String]) -> Result<(Vec<RepoRef>, Vec<String>), SyncError> {
    let mut repos = Vec::new();
    let mut hints = Vec::new();
    for input in inputs {
        let s = input.trim();
        let parsed = if s.starts_with("naddr1") || s.starts_with("nostr:naddr1") {
            RepoRef::from_naddr(s).map(|(repo, relays)| {
                hints.extend(relays);
                repo
            })
        } else {
            RepoRef::parse(s)
        };
        let repo = parsed.map_err(|e| SyncError::Usage(format!("`{input}`: {e}")))?;
        repos.push(repo);
    }
    Ok((repos, hints))
}

/// Runs a sync to the end. Must run inside a tokio `LocalSet` (the driver is one
/// non-`Send` future).
pub async fn run_sync(options: &SyncOptions) -> Result<SyncReport, SyncError> {
    let (repos, bootstrap) = sync_targets(options)?;
    let opening = std::time::Instant::now();
    let store = LmdbStore::open(&options.data_dir, options.map_size)
        .await
        .map_err(|e| SyncError::Store(e.to_string()))?;
    tracing::debug!(took = ?opening.elapsed(), "store open");
    sync_into(options, store, repos, bootstrap).await
}

/// The repositories `options` names and the relays to ask for their announcements
/// (`--relay` and `naddr` hints).
pub fn sync_targets(
    options: &SyncOptions,
) -> Result<(Vec<RepoRef>, BTreeSet<RelayUrl>), SyncError> {
    let (repos, hints) = parse_repos(&options.repos)?;
    if repos.is_empty() {
        return Err(SyncError::Usage("name at least one repository".into()));
    }
    let mut bootstrap = BTreeSet::new();
    for relay in options.relays.iter().chain(&hints) {
        match RelayUrl::parse(relay) {
            Ok(url) => {
                bootstrap.insert(url);
            }
            Err(e) if options.relays.contains(relay) => {
                return Err(SyncError::Usage(format!("--relay `{relay}`: {e}")));
            }
            Err(e) => tracing::warn!(relay, error = %e, "ignoring an naddr relay hint"),
        }
    }
    Ok((repos, bootstrap))
}

/// Runs a sync of `repos` into `store` (already open: a daemon hands its own), asking
/// `bootstrap` relays for the announcements. Must run inside a tokio `LocalSet`.
pub async fn sync_into<S: Store>(
    options: &SyncOptions,
    store: S,
    repos: Vec<RepoRef>,
    bootstrap: BTreeSet<RelayUrl>,
) -> Result<SyncReport, SyncError> {
    let scope = DiscoveryScope::Repos(repos.clone());
    let mut config = EngineConfig {
        bootstrap_relays: bootstrap.iter().cloned().collect(),
        discovery: scope.clone(),
        seed: std::process::id().into(),
        one_shot: true,
        ..EngineConfig::default()
    };
    config.index.relay_policy.allow_private = options.allow_private_relays;
    config.index.own_urls = options.own_urls.clone();
    config.accept = options.accept.clone();
    config.timing.eose_timeout = options.eose_timeout;
    config.timing.neg_first_frame_timeout = options.neg_timeout;
    config.timing.neg_idle_timeout = options.eose_timeout;
    let network = NativeNetwork::new(NetConfig {
        allow_private: options.allow_private_relays,
        trusted: if options.trust_named_relays {
            bootstrap.clone()
        } else {
            BTreeSet::new()
        },
        ..NetConfig::default()
    })
    .map_err(SyncError::Other)?;
    let mut driver = Driver::new(
        SyncEngine::new(config),
        network,
        store,
        ParallelVerifier,
        SystemClock,
    );
    let restoring = std::time::Instant::now();
    driver.start(&scope).await.map_err(SyncError::Store)?;
    tracing::debug!(
        took = ?restoring.elapsed(),
        events = driver.stats().loaded_events,
        "restored what the store knows"
    );
    if bootstrap.is_empty() && driver.engine().index().repo_count() == 0 {
        return Err(SyncError::Usage(
            "no relay to ask: the store does not know these repositories; pass --relay URL".into(),
        ));
    }

    let progress = Progress::new(options.progress);
    let started = std::time::Instant::now();
    let timeout = options.timeout;
    let attempts = options.attempts.max(1);
    let mut settled = false;
    let mut last_report = Time::default();
    // The timeout also holds while nothing happens: a Stop arrives when it passes.
    let stop_at_timeout = futures::stream::once(tokio::time::sleep(timeout))
        .map(|()| Command::Stop)
        .chain(futures::stream::pending())
        .boxed_local();
    let exit = driver
        .run(stop_at_timeout, |engine, now| {
            progress.update(engine, now);
            if tracing::enabled!(tracing::Level::DEBUG) && now.since(last_report) >= Duration::from_secs(5) {
                last_report = now;
                for (url, phase, method, stats) in engine.relays() {
                    tracing::debug!(relay = %url, ?phase, ?method, jobs = ?engine.relay_jobs(url), received = stats.events_received, settled = engine.is_settled(), "progress");
                }
            }
            if is_done(engine, attempts) {
                tracing::debug!("every relay is in sync or failed");
                settled = true;
                return Control::Stop;
            }
            if started.elapsed() >= timeout {
                return Control::Stop;
            }
            Control::Continue
        })
        .await;
    if exit == Exit::Stopped {
        tracing::warn!(?timeout, "timed out before every relay was in sync");
    }
    tracing::debug!("driver stopped");
    progress.finish();
    let engine = driver.engine();
    Ok(SyncReport {
        relays: relay_reports(engine),
        repos: engine.index().repo_count(),
        stored: engine.stats().stored,
        driver: driver.stats().clone(),
        engine: engine.stats().clone(),
        settled,
    })
}

/// Every relay the engine knows, with its phase, method and counters, by URL.
pub fn relay_reports(engine: &SyncEngine) -> Vec<RelayReport> {
    let mut relays: Vec<RelayReport> = engine
        .relays()
        .map(|(url, phase, method, stats)| RelayReport {
            url: url.clone(),
            phase,
            method,
            stats: stats.clone(),
        })
        .collect();
    relays.sort_by(|a, b| a.url.cmp(&b.url));
    relays
}

/// Every relay is in sync, or failed `attempts` times in a row.
fn is_done(engine: &SyncEngine, attempts: u64) -> bool {
    engine.is_settled()
        && engine.relays().all(|(_, phase, _, stats)| match phase {
            Phase::Backoff { .. } => stats.failures >= attempts,
            _ => true,
        })
}

/// A spinner per relay (drawn only on a terminal).
struct Progress {
    bars: Option<(
        MultiProgress,
        std::cell::RefCell<BTreeMap<RelayUrl, ProgressBar>>,
    )>,
    last: std::cell::Cell<Time>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            bars: enabled.then(|| (MultiProgress::new(), Default::default())),
            last: std::cell::Cell::new(Time::default()),
        }
    }

    fn update(&self, engine: &SyncEngine, now: Time) {
        let Some((multi, bars)) = &self.bars else {
            return;
        };
        if now.since(self.last.get()) < Duration::from_millis(100) {
            return;
        }
        self.last.set(now);
        let mut bars = bars.borrow_mut();
        for (url, phase, method, stats) in engine.relays() {
            let bar = bars.entry(url.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix:40} {msg}") {
                    bar.set_style(style);
                }
                bar.set_prefix(truncate(url.as_str(), 40));
                bar
            });
            let rejected: u64 = stats.events_rejected.values().sum();
            let refused = engine
                .stats()
                .store_error
                .as_ref()
                .map(|e| format!(" — not stored: {e}"))
                .unwrap_or_default();
            bar.set_message(format!(
                "{:<8} {:<7} {} received, {} stored, {} rejected, {} KiB in{refused}",
                state_name(phase, stats),
                method_name(method),
                stats.events_received,
                stats.events_accepted,
                rejected,
                stats.bytes_in / 1024
            ));
            bar.tick();
        }
    }

    fn finish(&self) {
        if let Some((multi, bars)) = &self.bars {
            for bar in bars.borrow().values() {
                bar.finish();
            }
            let _ = multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_is_named_in_the_summary() {
        let url = RelayUrl::parse("wss://relay.example.com").expect("a relay URL");
        let report = SyncReport {
            relays: vec![RelayReport {
                url,
                phase: Phase::Open,
                method: Method::Req,
                stats: RelayStats::default(),
            }],
            repos: 1,
            stored: 0,
            driver: DriverStats::default(),
            engine: EngineStats {
                store_error: Some("store full: MDB_MAP_FULL".into()),
                ..EngineStats::default()
            },
            settled: false,
        };
        assert!(report
            .table()
            .contains("\nevents not stored: store full: MDB_MAP_FULL\n"));
        assert_eq!(report.json()["store_error"], "store full: MDB_MAP_FULL");
    }
}
