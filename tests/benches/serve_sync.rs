//! Sync benchmark against our own relay (a recipe, not a test): a generated corpus of
//! about 100 000 NIP-34 events served by `grasp-sync serve`, and three clients syncing
//! it in the same run, on the same data:
//!
//! - **grasp-sync sync** (the command line, run as the issue-4 bench runs it) into a
//!   fresh store;
//! - **nostr-sdk 0.45's `Client::sync`** (NIP-77, direction down) into a `nostr-lmdb`
//!   database, one filter covering the corpus (every kind it holds);
//! - a **plain paginated REQ** download (`until` paged backwards, 500 a page) over one
//!   WebSocket;
//!
//! each for a **cold sync** (empty store), an **in-sync re-sync**, and a **1 %
//! catch-up** (1 % more events published to the daemon, then a sync again; the plain
//! REQ download runs once, over the final set), beside the **verification floor** of
//! the set (one core, and all cores with the rayon verifier grasp-sync uses).
//!
//! The daemon is preloaded by publishing to it, as clients would (announcements
//! listing its URL first, as its default `list-us` policy needs, then events tagging a
//! repository, then replies, then deletions, over four connections; the daemon judges
//! and stores each through its engine). What the daemon then serves, read back with
//! REQs, is the set every client must end up with.
//!
//! For each run it reports wall time, the client's CPU, the daemon's CPU time while it
//! answers (`/proc/<pid>/stat`), bytes each way and frames by type as the daemon
//! counts them (`/metrics`: frame text, no WebSocket framing), round trips, events/s,
//! and checks what each client's store holds afterwards. It prints markdown tables and
//! asserts nothing.
//!
//! The corpus is the issue-4 bench's (`sync_loopback.rs`: the testkit generator topped
//! up with patch replies to a mean of 1.3 KB), its generator copied here.
//!
//! Run with `just bench-serve`, or `cargo bench -p grasp-sync-tests --bench
//! serve_sync`. `GRASP_BENCH_EVENTS` (default 100 000) sets the set size,
//! `GRASP_BENCH_MEAN_BYTES` (default 1 300) the mean event size,
//! `GRASP_BENCH_RUN_LIMIT_SECS` (default 300) how long one `grasp-sync sync` may run
//! before it is killed and reported as hung; with `GRASP_BENCH_LOG_DIR` set, each
//! grasp-sync run's standard error and the daemon's log are written there.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use grasp_sync::store::LmdbStore;
use grasp_sync::verify::ParallelVerifier;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::Verifier;
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, Rng};
use grasp_sync_tests::nostr_sdk::prelude::{Client, RelayLimits, SyncDirection, SyncOptions};
use grasp_sync_tests::{
    grasp_sync_bin, metric_value, publish, Daemon, PublishReport, RawClient, SyncRun,
};
use nostr::prelude::{Event, EventId, Filter, Keys, Kind};
use nostr_lmdb::NostrLmdb;
use serde_json::{json, Value};
use support::{env_usize, pct, per, ratio, secs, thousands, Cpu, ProcSample};

/// Repositories in the generated corpus (before the top-up).
const REPOS: usize = 600;
/// Events per repository the generator is asked for (it adds announcements and
/// deletions).
const EVENTS_PER_REPO: usize = 100;
/// Share of the cold-sync set the generator makes; patches top it up to the size.
const GENERATED_PCT: usize = 62;
/// Events per page of the plain REQ download.
const PAGE: usize = 500;
/// Connections the preload publishes over.
const PRELOAD_CONNECTIONS: usize = 4;

const KIND_PATCH: u16 = 1617;
const KIND_PULL_REQUEST: u16 = 1618;
const KIND_ISSUE: u16 = 1621;
const KIND_DELETION: u16 = 5;
const KIND_ANNOUNCEMENT: u16 = 30617;
const KIND_STATE: u16 = 30618;

/// The log line `grasp-sync sync` writes (at debug) when every relay is in sync.
const SETTLED_LOG: &str = "every relay is in sync or failed";
/// The warning the driver logs when in-flight writes outlast its shutdown grace.
const GAVE_UP_LOG: &str = "gave up waiting for in-flight writes";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this in test mode.
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("serve_sync is a benchmark: run it with `cargo bench` or `just bench-serve`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let started = Instant::now();
    let target = env_usize("GRASP_BENCH_EVENTS", 100_000).max(1_000);
    let mean_bytes = env_usize("GRASP_BENCH_MEAN_BYTES", 1_300);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("bench-serve: binary {}", grasp_sync_bin().display());

    // The daemon first: the announcements list its URL. Publishing the preload over
    // four connections from one address needs the EVENT rates raised.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut daemon = Daemon::start(
        &dir.path().join("daemon"),
        &[
            "--events-per-minute",
            "100000000",
            "--events-per-minute-per-ip",
            "100000000",
        ],
    )
    .await;
    let url = daemon.url();
    let pid = daemon.pid().expect("the daemon runs");
    eprintln!("bench-serve: daemon {url} (pid {pid})");

    let t = Instant::now();
    let set = generate(&url, target, mean_bytes);
    let generate_time = t.elapsed();
    eprintln!(
        "bench-serve: generated {} events ({} by the testkit, {} patches added) in {:.1?}; \
         holding back {}",
        set.preload.len() + set.held_back.len(),
        set.generated,
        set.added_patches,
        generate_time,
        set.held_back.len()
    );

    // Preload by publishing.
    let before = Probe::take(&daemon, pid).await;
    let preload = publish_staged(&url, &set.preload).await;
    let preload_probe = Probe::take(&daemon, pid).await.since(&before);
    eprintln!(
        "bench-serve: preloaded in {:.1?} ({} accepted, {} refused: {}, {} unanswered; daemon \
         CPU {:.1?})",
        preload_probe.wall,
        preload.accepted,
        preload.refused,
        listing(&preload.refusals),
        preload.unanswered,
        preload_probe.daemon_cpu
    );

    // What the daemon serves is the set every client must end up with.
    let held = served(&url).await;
    let held_ids: BTreeSet<EventId> = held.iter().map(|e| e.id).collect();
    let held_bytes: usize = held.iter().map(json_len).sum();
    let corpus_stats = CorpusStats::of(&held);
    let burst = largest_second(&held);
    eprintln!(
        "bench-serve: the daemon serves {} events, {} MB of JSON",
        held.len(),
        held_bytes / 1_000_000
    );

    // The verification floor of the set a cold sync downloads.
    let t = Instant::now();
    let serial_ok = held.iter().filter(|e| e.verify().is_ok()).count();
    let floor_serial = t.elapsed();
    let copy = held.clone();
    let _ = ParallelVerifier
        .verify(held[..cores.min(held.len())].to_vec())
        .await; // warm the pool
    let t = Instant::now();
    let parallel_ok = ParallelVerifier
        .verify(copy)
        .await
        .iter()
        .filter(|ok| **ok)
        .count();
    let floor_parallel = t.elapsed();
    eprintln!(
        "bench-serve: verification floor {floor_serial:.2?} on one core, {floor_parallel:.2?} \
         on {cores}"
    );
    if serial_ok != held.len() || parallel_ok != held.len() {
        eprintln!(
            "bench-serve: WARNING: {serial_ok}/{parallel_ok} of {} verify",
            held.len()
        );
    }

    // The filter nostr-sdk syncs: every kind the daemon serves.
    let kinds: BTreeSet<u16> = held.iter().map(|e| e.kind.as_u16()).collect();
    let filter = Filter::new().kinds(kinds.iter().map(|k| Kind::from(*k)));
    drop(held);

    let cli_dir = dir.path().join("cli");
    let args = cli_args(&set.repos, &url, &cli_dir);
    let sdk_dir = dir.path().join("sdk");
    std::fs::create_dir_all(&sdk_dir).expect("a directory for nostr-lmdb");
    let sdk = SdkPeer::open(&sdk_dir, &url).await;

    eprintln!("bench-serve: grasp-sync cold sync …");
    let gs_cold = cli_run("cold", &args, &daemon, pid, &cli_dir, &held_ids).await;
    eprintln!("bench-serve: nostr-sdk cold sync …");
    let sdk_cold = sdk.run(&filter, &daemon, pid, &held_ids).await;
    eprintln!("bench-serve: grasp-sync in-sync re-sync …");
    let gs_again = cli_run("in-sync", &args, &daemon, pid, &cli_dir, &held_ids).await;
    eprintln!("bench-serve: nostr-sdk in-sync re-sync …");
    let sdk_again = sdk.run(&filter, &daemon, pid, &held_ids).await;

    // 1 % more events reach the daemon (published while the clients were away).
    let added = publish_staged(&url, &set.held_back).await;
    let after = served(&url).await;
    let after_ids: BTreeSet<EventId> = after.iter().map(|e| e.id).collect();
    let new_ids: HashSet<EventId> = after_ids.difference(&held_ids).copied().collect();
    let missing_bytes: usize = after
        .iter()
        .filter(|e| new_ids.contains(&e.id))
        .map(json_len)
        .sum();
    drop(after);
    eprintln!(
        "bench-serve: 1 % catch-up: {} events published, the daemon serves {} new ({} B)",
        set.held_back.len(),
        new_ids.len(),
        missing_bytes
    );
    if added.refused > 0 || added.unanswered > 0 {
        eprintln!(
            "bench-serve: WARNING: catch-up events refused: {} ({}), unanswered {}",
            added.refused,
            listing(&added.refusals),
            added.unanswered
        );
    }
    eprintln!("bench-serve: grasp-sync 1 % catch-up …");
    let gs_catch = cli_run("catch-up", &args, &daemon, pid, &cli_dir, &after_ids).await;
    eprintln!("bench-serve: nostr-sdk 1 % catch-up …");
    let sdk_catch = sdk.run(&filter, &daemon, pid, &after_ids).await;
    sdk.close().await;

    eprintln!("bench-serve: plain paginated REQ download …");
    let before = Probe::take(&daemon, pid).await;
    let req = req_download(&url).await;
    let req_probe = Probe::take(&daemon, pid).await.since(&before);
    if req.events != after_ids.len() {
        eprintln!(
            "bench-serve: WARNING: the REQ download got {} distinct events of {}",
            req.events,
            after_ids.len()
        );
    }

    if let Ok(log_dir) = std::env::var("GRASP_BENCH_LOG_DIR") {
        let path = Path::new(&log_dir).join("daemon.log");
        if let Err(e) = std::fs::write(&path, daemon.log()) {
            eprintln!("bench-serve: cannot write {}: {e}", path.display());
        }
    }
    let daemon_exit = daemon.stop().await;
    let report = Report {
        url,
        cores,
        target,
        generated: set.generated,
        added_patches: set.added_patches,
        generate_time,
        preload,
        preload_probe,
        held: held_ids.len(),
        held_bytes,
        corpus: corpus_stats,
        kinds: kinds.len(),
        burst,
        floor_serial,
        floor_parallel,
        gs: [gs_cold, gs_again, gs_catch],
        sdk: [sdk_cold, sdk_again, sdk_catch],
        req,
        req_probe,
        held_back: new_ids.len(),
        missing_bytes,
        final_set: after_ids.len(),
        daemon_exit,
    };
    println!("{}", report.markdown());
    eprintln!("bench-serve: done in {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Preloading the daemon

/// What the daemon answered to a staged publish.
#[derive(Default)]
struct Published {
    accepted: usize,
    refused: usize,
    refusals: BTreeMap<String, usize>,
    unanswered: usize,
}

/// Publishes `events` in the order a relay that judges each event on arrival needs:
/// announcements (oldest first), events tagging a repository (roots among them), the
/// rest (replies name their root), deletions; each stage over
/// [`PRELOAD_CONNECTIONS`] connections at once.
async fn publish_staged(url: &str, events: &[Event]) -> Published {
    let mut stages: [Vec<Event>; 4] = Default::default();
    for e in events {
        let tags_repo = e.tags.iter().any(|t| {
            matches!(
                t.as_slice().first().map(String::as_str),
                Some("a") | Some("A")
            )
        });
        let stage = match e.kind.as_u16() {
            KIND_ANNOUNCEMENT => 0,
            KIND_DELETION => 3,
            _ if tags_repo => 1,
            _ => 2,
        };
        stages[stage].push(e.clone());
    }
    stages[0].sort_by_key(|e| e.created_at);
    let mut out = Published::default();
    for stage in stages {
        let chunk = stage.len().div_ceil(PRELOAD_CONNECTIONS).max(1);
        let parts: Vec<_> = stage
            .chunks(chunk)
            .map(|part| {
                let url = url.to_owned();
                let part = part.to_vec();
                tokio::spawn(async move { publish(&url, &part).await.expect("publish") })
            })
            .collect();
        for part in parts {
            let report: PublishReport = part.await.expect("a publishing task");
            out.accepted += report.accepted;
            out.refused += report.rejected.len();
            out.unanswered += report.unanswered;
            for (_, message) in &report.rejected {
                let reason = message.split(':').next().unwrap_or_default().to_owned();
                *out.refusals.entry(reason).or_default() += 1;
            }
        }
    }
    out
}

fn listing(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every event the daemon serves (REQs of `{}` paged back with `until`; 5 000 a page,
/// the daemon's default `max_limit`; a second holding a whole page is asked for alone).
async fn served(url: &str) -> Vec<Event> {
    let mut client = RawClient::connect_within(url, Duration::from_secs(10))
        .await
        .expect("connect to the daemon");
    let mut events: HashMap<EventId, Event> = HashMap::new();
    let mut until: Option<u64> = None;
    let mut n = 0;
    loop {
        n += 1;
        let mut filter = json!({"limit": 5000});
        if let Some(u) = until {
            filter["until"] = json!(u);
        }
        let page = client
            .req(&format!("all{n}"), &filter, Duration::from_secs(120))
            .await
            .expect("REQ answers");
        client
            .send(&json!(["CLOSE", format!("all{n}")]))
            .await
            .expect("CLOSE");
        let count = page.len();
        let oldest = page.iter().map(|e| e.created_at.as_secs()).min();
        for e in page {
            events.insert(e.id, e);
        }
        let Some(oldest) = oldest else { break };
        if count < 5000 {
            break;
        }
        if Some(oldest) == until {
            n += 1;
            let whole = client
                .req(
                    &format!("all{n}"),
                    &json!({"since": oldest, "until": oldest, "limit": 5000}),
                    Duration::from_secs(120),
                )
                .await
                .expect("REQ answers");
            client
                .send(&json!(["CLOSE", format!("all{n}")]))
                .await
                .expect("CLOSE");
            if whole.len() >= 5000 {
                eprintln!("bench-serve: WARNING: second {oldest} holds 5 000 events or more");
            }
            for e in whole {
                events.insert(e.id, e);
            }
            until = Some(oldest.saturating_sub(1));
        } else {
            until = Some(oldest);
        }
    }
    client.close().await;
    events.into_values().collect()
}

// ---------------------------------------------------------------------------------------
// Measuring a run: the daemon's CPU and counters before and after

/// The daemon and this process at one moment.
struct Probe {
    at: Instant,
    daemon: ProcSample,
    own: Cpu,
    metrics: String,
}

/// What happened between two probes.
#[derive(Clone, Default)]
struct Delta {
    wall: Duration,
    daemon_cpu: Duration,
    /// This process (nostr-sdk, the REQ download).
    own_cpu: Duration,
    /// Waited-for children (grasp-sync sync).
    children_cpu: Duration,
    /// Frame bytes the daemon received from clients.
    to_daemon: u64,
    /// Frame bytes the daemon sent to clients.
    from_daemon: u64,
    /// Frames the daemon received, by type.
    frames: BTreeMap<&'static str, u64>,
    /// EVENT frames the daemon sent.
    events_sent: u64,
}

const FRAME_TYPES: [&str; 6] = ["REQ", "CLOSE", "NEG-OPEN", "NEG-MSG", "NEG-CLOSE", "COUNT"];

impl Probe {
    async fn take(daemon: &Daemon, pid: u32) -> Self {
        let metrics = daemon.metrics().await;
        Self {
            at: Instant::now(),
            daemon: ProcSample::of(pid),
            own: Cpu::now(),
            metrics,
        }
    }

    fn since(&self, before: &Probe) -> Delta {
        let value = |page: &str, series: &str| metric_value(page, series);
        let diff = |series: &str| {
            value(&self.metrics, series).saturating_sub(value(&before.metrics, series))
        };
        Delta {
            wall: self.at.duration_since(before.at),
            daemon_cpu: self.daemon.cpu.saturating_sub(before.daemon.cpu),
            own_cpu: self.own.own.saturating_sub(before.own.own),
            children_cpu: self.own.children.saturating_sub(before.own.children),
            to_daemon: diff("grasp_sync_client_bytes_in_total"),
            from_daemon: diff("grasp_sync_client_bytes_out_total"),
            frames: FRAME_TYPES
                .iter()
                .map(|t| {
                    (
                        *t,
                        diff(&format!("grasp_sync_client_frames_total{{type=\"{t}\"}}")),
                    )
                })
                .collect(),
            events_sent: diff("grasp_sync_client_events_sent_total"),
        }
    }
}

impl Delta {
    fn frames(&self, t: &str) -> u64 {
        self.frames.get(t).copied().unwrap_or(0)
    }

    /// `REQ / NEG-OPEN / NEG-MSG` frames received.
    fn frames_cell(&self) -> String {
        format!(
            "{} / {} / {}",
            thousands(self.frames("REQ")),
            thousands(self.frames("NEG-OPEN")),
            thousands(self.frames("NEG-MSG"))
        )
    }
}

/// One client's run of one phase.
struct Run {
    /// The whole run (for grasp-sync: the process, start to exit).
    wall: Duration,
    /// Until in sync (grasp-sync: its log line; nostr-sdk: the `sync` call).
    settled: Option<Duration>,
    /// The client's CPU.
    cpu: Duration,
    /// The daemon meanwhile.
    delta: Delta,
    received: u64,
    stored: Option<u64>,
    /// Round trips as the client counts them (grasp-sync's summary), or estimated.
    round_trips: u64,
    /// Historic filter jobs (grasp-sync), or 1 (nostr-sdk's one filter).
    filters: u64,
    check: StoreCheck,
    ok: bool,
    note: String,
    summary: Option<SyncRun>,
    /// grasp-sync logged that its shutdown gave up waiting for in-flight writes.
    gave_up_writes: bool,
}

// ---------------------------------------------------------------------------------------
// grasp-sync sync

async fn cli_run(
    name: &str,
    args: &[String],
    daemon: &Daemon,
    pid: u32,
    dir: &Path,
    expected: &BTreeSet<EventId>,
) -> Run {
    let before = Probe::take(daemon, pid).await;
    let start = std::time::SystemTime::now();
    let t = Instant::now();
    let (run, hung) = run_watched(args, run_limit()).await;
    let wall = t.elapsed();
    let delta = Probe::take(daemon, pid).await.since(&before);
    if let Ok(log_dir) = std::env::var("GRASP_BENCH_LOG_DIR") {
        for (ext, text) in [("stderr", &run.stderr), ("json", &run.stdout)] {
            let path = Path::new(&log_dir).join(format!("grasp-sync-{name}.{ext}"));
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("bench-serve: cannot write {}: {e}", path.display());
            }
        }
    }
    let settled = run
        .stderr
        .lines()
        .find(|line| line.contains(SETTLED_LOG))
        .and_then(log_time)
        .and_then(|at| at.duration_since(start).ok());
    let check = stored(dir, expected).await;
    let in_sync = run
        .summary
        .as_ref()
        .and_then(|s| s["settled"].as_bool())
        .unwrap_or(false);
    let ok = !hung && run.code == Some(0) && in_sync && check.missing == 0;
    if !ok {
        eprintln!(
            "bench-serve: WARNING: grasp-sync {name}: exit {:?}, hung {hung}, settled \
             {in_sync}, {} missing; stderr:\n{}",
            run.code,
            check.missing,
            run.stderr
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let methods: BTreeSet<String> = run
        .relays()
        .iter()
        .filter_map(|r| r["method"].as_str().map(str::to_owned))
        .collect();
    Run {
        wall,
        settled,
        cpu: delta.children_cpu,
        received: run.total("received"),
        stored: Some(run.total("stored")),
        round_trips: run.total("round_trips"),
        filters: run.total("jobs_negentropy") + run.total("jobs_req"),
        delta,
        check,
        ok,
        note: format!(
            "{}{}",
            methods.into_iter().collect::<Vec<_>>().join(", "),
            if hung { ", hung: killed" } else { "" }
        ),
        gave_up_writes: run.stderr.contains(GAVE_UP_LOG),
        summary: Some(run),
    }
}

// ---------------------------------------------------------------------------------------
// nostr-sdk

/// A nostr-sdk client over a nostr-lmdb database, connected to the daemon.
struct SdkPeer {
    client: Client,
    url: String,
}

impl SdkPeer {
    async fn open(dir: &Path, url: &str) -> Self {
        let db = NostrLmdb::open(dir).await.expect("nostr-lmdb opens");
        let client = Client::builder().database(db).build();
        client
            .add_relay(url)
            .limits(RelayLimits::disable())
            .await
            .expect("add the daemon");
        client.connect().and_wait(Duration::from_secs(10)).await;
        Self {
            client,
            url: url.to_owned(),
        }
    }

    /// One `Client::sync` (down) of `filter` with the daemon.
    async fn run(
        &self,
        filter: &Filter,
        daemon: &Daemon,
        pid: u32,
        expected: &BTreeSet<EventId>,
    ) -> Run {
        let before = Probe::take(daemon, pid).await;
        let t = Instant::now();
        let result = self
            .client
            .sync(filter.clone())
            .with([self.url.as_str()])
            .opts(SyncOptions::default().direction(SyncDirection::Down))
            .await;
        let wall = t.elapsed();
        let delta = Probe::take(daemon, pid).await.since(&before);
        let (received, note, ok) = match &result {
            Ok(output) => {
                let failed: Vec<String> = output
                    .failed
                    .iter()
                    .map(|(url, e)| format!("{url}: {e}"))
                    .collect();
                (
                    output.value.received.len() as u64,
                    failed.join("; "),
                    failed.is_empty(),
                )
            }
            Err(e) => (0, e.to_string(), false),
        };
        let items = self
            .client
            .database()
            .negentropy_items(Filter::new())
            .await
            .expect("nostr-lmdb lists its items");
        let ids: BTreeSet<EventId> = items.into_iter().map(|(id, _)| id).collect();
        let check = StoreCheck {
            stored: ids.len(),
            expected: expected.len(),
            missing: expected.difference(&ids).count(),
            extra: ids.difference(expected).count(),
        };
        let ok = ok && check.missing == 0;
        if !ok {
            eprintln!(
                "bench-serve: WARNING: nostr-sdk sync: {note}; {} of {} missing",
                check.missing, check.expected
            );
        }
        // Reconciliation frames and `ids` REQs (100 ids each, one at a time) are the
        // round trips; both run at once, so this is an upper bound.
        let round_trips = delta.frames("NEG-OPEN") + delta.frames("NEG-MSG") + delta.frames("REQ");
        Run {
            wall,
            settled: Some(wall),
            cpu: delta.own_cpu,
            received,
            stored: None,
            round_trips,
            filters: 1,
            delta,
            check,
            ok,
            note: if note.is_empty() {
                "NIP-77".into()
            } else {
                note
            },
            summary: None,
            gave_up_writes: false,
        }
    }

    async fn close(self) {
        self.client.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// The corpus

struct Generated {
    repos: Vec<RepoRef>,
    /// Preloaded into the relay: the cold sync's set.
    preload: Vec<Event>,
    /// 1 % of the preload, added before the catch-up.
    held_back: Vec<Event>,
    generated: usize,
    added_patches: usize,
}

/// About `target` events to preload plus 1 % to hold back, of mean size `mean_bytes`.
fn generate(url: &str, target: usize, mean_bytes: usize) -> Generated {
    let total = target + target / 100;
    let scale = total as f64 / 101_000.0;
    let repos = ((REPOS as f64 * scale).round() as usize).max(2);
    let spec = CorpusSpec {
        seed: 4,
        repos,
        events_per_repo: EVENTS_PER_REPO,
        relays: vec![url.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    };
    // Shrink the generated part until it leaves room for the patches.
    let mut corpus = Corpus::generate(&spec);
    let want = total * GENERATED_PCT / 100;
    if corpus.events.len() > want {
        let epr = (EVENTS_PER_REPO * want / corpus.events.len()).max(12);
        corpus = Corpus::generate(&CorpusSpec {
            events_per_repo: epr,
            ..spec.clone()
        });
    }
    let generated = corpus.events.len();
    let generated_bytes: usize = corpus.events.iter().map(json_len).sum();
    let to_add = total.saturating_sub(generated);

    // Patch replies to the generator's roots, sized so the whole set averages
    // `mean_bytes`.
    let roots = roots_by_repo(&corpus);
    let end = spec.start + spec.span_secs;
    let authors: Vec<Keys> = (0..64).map(|i| keys(4_000_000 + i)).collect();
    let mut rng = Rng::new(0xbe4c_5eed);
    let mut events = corpus.events.clone();
    let wanted_bytes = (mean_bytes * total).saturating_sub(generated_bytes);
    if let Some(per_patch) = wanted_bytes.checked_div(to_add) {
        let probe = patch_reply(&authors[0], &corpus.repos[0], &roots[0][0], end, "");
        let overhead = json_len(&probe);
        let body = per_patch.saturating_sub(overhead).max(200);
        for n in 0..to_add {
            let r = rng.below(corpus.repos.len() as u64) as usize;
            let Some(root) = pick(&mut rng, &roots[r]) else {
                continue;
            };
            let at = (root.1 + 1 + rng.below(end.saturating_sub(root.1).max(1))).min(end);
            let size = body / 2 + rng.below(body as u64 + 1) as usize;
            let content = patch_text(&mut rng, n, size);
            let author = &authors[rng.below(authors.len() as u64) as usize];
            events.push(patch_reply(author, &corpus.repos[r], root, at, &content));
        }
    }
    let added_patches = events.len() - generated;

    // Hold back 1 % of the replies (never a root, announcement, state, deletion or
    // deleted event, so the catch-up needs exactly these).
    let deleted: HashSet<String> = events
        .iter()
        .filter(|e| e.kind.as_u16() == KIND_DELETION)
        .flat_map(|e| tag_values(e, "e"))
        .collect();
    let eligible: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let e = &events[i];
            !matches!(
                e.kind.as_u16(),
                KIND_ANNOUNCEMENT | KIND_STATE | KIND_DELETION | KIND_ISSUE | KIND_PULL_REQUEST
            ) && !is_root(e)
                && !deleted.contains(&e.id.to_hex())
        })
        .collect();
    let hold = (events.len() / 101).min(eligible.len());
    let stride = eligible.len() / hold.max(1);
    let held: HashSet<usize> = eligible
        .iter()
        .step_by(stride.max(1))
        .take(hold)
        .copied()
        .collect();
    let mut preload = Vec::with_capacity(events.len());
    let mut held_back = Vec::with_capacity(hold);
    for (i, event) in events.into_iter().enumerate() {
        if held.contains(&i) {
            held_back.push(event);
        } else {
            preload.push(event);
        }
    }
    Generated {
        repos: corpus.repos,
        preload,
        held_back,
        generated,
        added_patches,
    }
}

/// Each repository's roots (issues, pull requests, root patches) and their times.
fn roots_by_repo(corpus: &Corpus) -> Vec<Vec<(EventId, u64)>> {
    let mut roots = vec![Vec::new(); corpus.repos.len()];
    for (event, &repo) in corpus.events.iter().zip(&corpus.repo_of) {
        if is_root(event) {
            roots[repo].push((event.id, event.created_at.as_secs()));
        }
    }
    roots
}

fn is_root(event: &Event) -> bool {
    match event.kind.as_u16() {
        KIND_ISSUE | KIND_PULL_REQUEST => true,
        KIND_PATCH => tag_values(event, "e").next().is_none(),
        _ => false,
    }
}

fn tag_values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = String> + 'a {
    event.tags.iter().filter_map(move |t| match t.as_slice() {
        [n, v, ..] if n == name => Some(v.clone()),
        _ => None,
    })
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.below(items.len() as u64) as usize])
}

fn patch_reply(
    author: &Keys,
    repo: &RepoRef,
    root: &(EventId, u64),
    at: u64,
    content: &str,
) -> Event {
    let tags = vec![
        vec!["a".to_owned(), repo.to_string()],
        vec![
            "e".to_owned(),
            root.0.to_hex(),
            String::new(),
            "reply".to_owned(),
        ],
    ];
    sign(author, KIND_PATCH, at, tags, content)
}

/// A `git format-patch`-like text whose JSON string is about `size` bytes.
fn patch_text(rng: &mut Rng, n: usize, size: usize) -> String {
    let mut text = format!(
        "From {:040x} Mon Sep 17 00:00:00 2001\nSubject: [PATCH v2] revise change {n}\n\n\
         ---\n src/lib.rs | 12 ++++++------\n\ndiff --git a/src/lib.rs b/src/lib.rs\n",
        rng.next_u64()
    );
    // A newline costs two bytes in JSON.
    let mut escaped = text.len() + text.matches('\n').count();
    while escaped < size {
        let line = format!("+    let v{:016x} = w.step();\n", rng.next_u64());
        escaped += line.len() + 1;
        text.push_str(&line);
    }
    text
}

fn json_len(event: &Event) -> usize {
    event.as_json().len()
}

/// Composition of the relay's set.
#[derive(Default)]
struct CorpusStats {
    /// kind → (events, JSON bytes).
    kinds: BTreeMap<u16, (usize, usize)>,
}

impl CorpusStats {
    fn of(events: &[Event]) -> Self {
        let mut stats = Self::default();
        for e in events {
            let entry = stats.kinds.entry(e.kind.as_u16()).or_default();
            entry.0 += 1;
            entry.1 += json_len(e);
        }
        stats
    }

    fn line(&self) -> String {
        let total: usize = self.kinds.values().map(|k| k.0).sum();
        let bytes: usize = self.kinds.values().map(|k| k.1).sum();
        let mut by_count: Vec<_> = self.kinds.iter().collect();
        by_count.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        by_count
            .iter()
            .map(|(kind, (n, b))| {
                format!(
                    "{kind}: {:.0} % of events, {:.0} % of bytes, {} B mean",
                    pct(*n as f64, total as f64),
                    pct(*b as f64, bytes as f64),
                    b / n.max(&1)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The most events sharing one `created_at` second.
fn largest_second(events: &[Event]) -> (usize, u64) {
    let mut seconds: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        *seconds.entry(e.created_at.as_secs()).or_default() += 1;
    }
    seconds
        .into_iter()
        .map(|(s, n)| (n, s))
        .max()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// grasp-sync runs (as sync_loopback.rs runs them)

/// `grasp-sync sync <repos> --relay URL --data-dir DIR --allow-private-relays --json -q`
/// (every other option at its default).
fn cli_args(repos: &[RepoRef], url: &str, dir: &Path) -> Vec<String> {
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
fn run_limit() -> Duration {
    Duration::from_secs(env_usize("GRASP_BENCH_RUN_LIMIT_SECS", 300) as u64)
}

/// Runs `grasp-sync` with `args` as the harness's `run_grasp_sync` does (its `--json`
/// summary parsed from the last JSON line), but killed after `limit`: a run whose
/// driver stops stepping never reaches its own `--timeout-secs`. Returns whether it was
/// killed; what it wrote until then is kept.
async fn run_watched(args: &[String], limit: Duration) -> (SyncRun, bool) {
    use tokio::io::AsyncReadExt;
    // Its debug line for "settled" times the shutdown.
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,grasp_sync::sync=debug".into());
    let mut child = tokio::process::Command::new(grasp_sync_bin())
        .args(args)
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
                "bench-serve: WARNING: grasp-sync (pid {:?}) still runs after {limit:?}: killed",
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

/// The UTC timestamp (`2026-01-02T03:04:05.678901Z`) a `tracing` log line starts with,
/// colour codes skipped.
fn log_time(line: &str) -> Option<std::time::SystemTime> {
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

/// What the store holds compared with what the relay holds.
struct StoreCheck {
    stored: usize,
    expected: usize,
    missing: usize,
    extra: usize,
}

async fn stored(dir: &Path, expected: &BTreeSet<EventId>) -> StoreCheck {
    let store = LmdbStore::open(dir, 16 << 30)
        .await
        .expect("the store opens");
    let items = store
        .items(Filter::new())
        .await
        .expect("the store lists its items");
    let ids: BTreeSet<EventId> = items.into_iter().map(|(_, id)| id).collect();
    StoreCheck {
        stored: ids.len(),
        expected: expected.len(),
        missing: expected.difference(&ids).count(),
        extra: ids.difference(expected).count(),
    }
}

// ---------------------------------------------------------------------------------------
// The plain REQ peer

struct ReqDownload {
    wall: Duration,
    /// CPU time of this process (client and relay).
    cpu: Duration,
    events: usize,
    frames: usize,
    bytes_in: u64,
    bytes_out: u64,
    round_trips: u64,
    whole_seconds: usize,
}

/// Every event at the relay over one WebSocket: `{"limit": 500, "until": T}` paged
/// backwards (`until` = the oldest `created_at` of the page, inclusive; duplicates
/// dropped). A page that does not get past its `until` (a second holding more than a
/// page) is followed by one REQ for that whole second. Events are parsed, not verified.
async fn req_download(url: &str) -> ReqDownload {
    let before = Cpu::now();
    let t = Instant::now();
    let mut client = RawClient::connect_within(url, Duration::from_secs(10))
        .await
        .expect("connect to the relay");
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut out = ReqDownload {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        events: 0,
        frames: 0,
        bytes_in: 0,
        bytes_out: 0,
        round_trips: 0,
        whole_seconds: 0,
    };
    let mut until: Option<u64> = None;
    let mut n = 0u64;
    loop {
        let mut filter = json!({ "limit": PAGE });
        if let Some(u) = until {
            filter["until"] = json!(u);
        }
        let page = req_page(&mut client, &mut out, &mut n, filter, &mut seen).await;
        let Some(oldest) = page.oldest else { break };
        if page.count < PAGE {
            break;
        }
        if Some(oldest) == until {
            // A full page inside one second: take the whole second, then go below it.
            out.whole_seconds += 1;
            let filter = json!({ "since": oldest, "until": oldest });
            req_page(&mut client, &mut out, &mut n, filter, &mut seen).await;
            if oldest == 0 {
                break;
            }
            until = Some(oldest - 1);
        } else {
            until = Some(oldest);
        }
    }
    client.close().await;
    out.events = seen.len();
    out.wall = t.elapsed();
    out.cpu = Cpu::now().own.saturating_sub(before.own);
    out
}

struct Page {
    count: usize,
    oldest: Option<u64>,
}

async fn req_page(
    client: &mut RawClient,
    out: &mut ReqDownload,
    n: &mut u64,
    filter: Value,
    seen: &mut HashSet<EventId>,
) -> Page {
    *n += 1;
    let sub = format!("p{n}");
    let req = json!(["REQ", sub, filter]).to_string();
    out.bytes_out += req.len() as u64;
    out.round_trips += 1;
    client.send_text(&req).await.expect("send REQ");
    let mut page = Page {
        count: 0,
        oldest: None,
    };
    loop {
        let Some(text) = client.recv_text(Duration::from_secs(60)).await else {
            panic!("REQ {filter}: no EOSE");
        };
        out.bytes_in += text.len() as u64;
        out.frames += 1;
        let mut frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        match frame[0].as_str() {
            Some("EVENT") => {
                let event: Event = serde_json::from_value(frame[2].take()).expect("an event");
                page.count += 1;
                let at = event.created_at.as_secs();
                page.oldest = Some(page.oldest.map_or(at, |o| o.min(at)));
                seen.insert(event.id);
            }
            Some("EOSE") => break,
            _ => panic!("REQ {filter}: {text}"),
        }
    }
    let close = json!(["CLOSE", sub]).to_string();
    out.bytes_out += close.len() as u64;
    client.send_text(&close).await.expect("send CLOSE");
    page
}

// ---------------------------------------------------------------------------------------
// The report

struct Report {
    url: String,
    cores: usize,
    target: usize,
    generated: usize,
    added_patches: usize,
    generate_time: Duration,
    preload: Published,
    preload_probe: Delta,
    held: usize,
    held_bytes: usize,
    corpus: CorpusStats,
    kinds: usize,
    burst: (usize, u64),
    floor_serial: Duration,
    floor_parallel: Duration,
    /// Cold, in-sync, catch-up.
    gs: [Run; 3],
    /// Cold, in-sync, catch-up.
    sdk: [Run; 3],
    req: ReqDownload,
    req_probe: Delta,
    held_back: usize,
    missing_bytes: usize,
    final_set: usize,
    daemon_exit: Option<i32>,
}

fn rate(events: u64, wall: Duration) -> String {
    if events == 0 || wall.is_zero() {
        "—".into()
    } else {
        thousands((events as f64 / wall.as_secs_f64()) as u64)
    }
}

impl Report {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let mean = self.held_bytes / self.held.max(1);
        s.push_str(&format!(
            "## grasp-sync serve answering grasp-sync, nostr-sdk and plain REQ ({} cores, \
             daemon {})\n\n",
            self.cores, self.url
        ));
        s.push_str(&format!(
            "Corpus: {} events served by the daemon (asked for {}), {} MB of event JSON, \
             mean {} B, {} kinds; {} from the testkit generator + {} added patch replies, \
             generated and signed in {}; {} repositories; the busiest second holds {} \
             events.  \nMix: {}.  \n\
             Preload: published to the daemon over {} connections in {} ({} events/s; \
             daemon CPU {}): {} accepted, {} refused ({}), {} unanswered. 1 % catch-up: {} \
             more events published ({} B of JSON), {} in all.\n\n",
            thousands(self.held as u64),
            thousands(self.target as u64),
            self.held_bytes / 1_000_000,
            mean,
            self.kinds,
            thousands(self.generated as u64),
            thousands(self.added_patches as u64),
            secs(self.generate_time),
            self.gs[0]
                .summary
                .as_ref()
                .and_then(|r| r.summary.as_ref())
                .map_or(0, |s| s["repos"].as_u64().unwrap_or(0)),
            thousands(self.burst.0 as u64),
            self.corpus.line(),
            PRELOAD_CONNECTIONS,
            secs(self.preload_probe.wall),
            thousands(
                ((self.preload.accepted + self.preload.refused) as f64
                    / self.preload_probe.wall.as_secs_f64()) as u64
            ),
            secs(self.preload_probe.daemon_cpu),
            thousands(self.preload.accepted as u64),
            self.preload.refused,
            listing(&self.preload.refusals),
            self.preload.unanswered,
            thousands(self.held_back as u64),
            thousands(self.missing_bytes as u64),
            thousands(self.final_set as u64),
        ));

        s.push_str(
            "| | cold: grasp-sync | cold: nostr-sdk | cold: plain REQ | in-sync: grasp-sync \
             | in-sync: nostr-sdk | 1 % catch-up: grasp-sync | 1 % catch-up: nostr-sdk |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let runs = [
            &self.gs[0],
            &self.sdk[0],
            &self.gs[1],
            &self.sdk[1],
            &self.gs[2],
            &self.sdk[2],
        ];
        let r = &self.req;
        let rp = &self.req_probe;
        // The plain REQ column goes third.
        let row = |name: &str, f: &dyn Fn(&Run) -> String, req: String| {
            let cells: Vec<String> = runs.iter().map(|run| f(run)).collect();
            format!(
                "| {name} | {} | {} | {req} | {} | {} | {} | {} |\n",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
            )
        };
        s.push_str(&row(
            "complete / method",
            &|run| format!("{} / {}", if run.ok { "yes" } else { "**no**" }, run.note),
            format!("yes / REQ, limit {PAGE}"),
        ));
        s.push_str(&row("wall time", &|run| secs(run.wall), secs(r.wall)));
        s.push_str(&row(
            "of which: until in sync + shutdown",
            &|run| match run.settled {
                Some(settled) if run.summary.is_some() => format!(
                    "{} + {}{}",
                    secs(settled),
                    secs(run.wall.saturating_sub(settled)),
                    if run.gave_up_writes {
                        " (gave up on writes)"
                    } else {
                        ""
                    }
                ),
                Some(settled) => secs(settled),
                None => "—".into(),
            },
            "—".into(),
        ));
        s.push_str(&row(
            "client CPU",
            &|run| secs(run.cpu),
            format!("{} (client only)", secs(r.cpu)),
        ));
        s.push_str(&row(
            "daemon CPU (answering)",
            &|run| secs(run.delta.daemon_cpu),
            secs(rp.daemon_cpu),
        ));
        s.push_str(&row(
            "events received (stored, as the client counts)",
            &|run| match run.stored {
                Some(stored) => format!("{} ({})", thousands(run.received), thousands(stored)),
                None => thousands(run.received),
            },
            format!(
                "{} ({} distinct)",
                thousands(r.frames as u64 - r.round_trips),
                thousands(r.events as u64)
            ),
        ));
        s.push_str(&row(
            "events sent by the daemon",
            &|run| thousands(run.delta.events_sent),
            thousands(rp.events_sent),
        ));
        s.push_str(&row(
            "store holds afterwards (missing, other)",
            &|run| {
                format!(
                    "{} ({}, {})",
                    thousands(run.check.stored as u64),
                    run.check.missing,
                    run.check.extra
                )
            },
            "—".into(),
        ));
        s.push_str(&row(
            "events/s (received / wall)",
            &|run| rate(run.received, run.wall),
            rate(r.events as u64, r.wall),
        ));
        s.push_str(&row(
            "bytes client → daemon",
            &|run| thousands(run.delta.to_daemon),
            thousands(rp.to_daemon),
        ));
        s.push_str(&row(
            "bytes daemon → client",
            &|run| thousands(run.delta.from_daemon),
            thousands(rp.from_daemon),
        ));
        s.push_str(&row(
            "round trips",
            &|run| thousands(run.round_trips),
            thousands(r.round_trips),
        ));
        s.push_str(&row(
            "frames to the daemon: REQ / NEG-OPEN / NEG-MSG",
            &|run| run.delta.frames_cell(),
            rp.frames_cell(),
        ));
        s.push_str(&row(
            "filters (relay·filter pairs)",
            &|run| thousands(run.filters),
            "1".into(),
        ));
        s.push_str(&row(
            "bytes both ways per relay·filter",
            &|run| per(run.delta.to_daemon + run.delta.from_daemon, run.filters),
            "—".into(),
        ));
        s.push('\n');

        let floor = self.floor_parallel.as_secs_f64();
        let gs = &self.gs;
        let sdk = &self.sdk;
        let secs_of = |run: &Run| run.wall.as_secs_f64();
        s.push_str(
            "| targets and ratios | grasp-sync | nostr-sdk | plain REQ |\n\
             | --- | ---: | ---: | ---: |\n",
        );
        s.push_str(&format!(
            "| verify {} events: one core / {} cores (rayon) | {} / {} | | |\n",
            thousands(self.held as u64),
            self.cores,
            secs(self.floor_serial),
            secs(self.floor_parallel)
        ));
        s.push_str(&format!(
            "| cold sync / all-cores floor (target ≤ 2×) | **{}** | {} | {} |\n",
            ratio(secs_of(&gs[0]), floor),
            ratio(secs_of(&sdk[0]), floor),
            ratio(r.wall.as_secs_f64(), floor)
        ));
        s.push_str(&format!(
            "| cold sync / one-core floor | {} | {} | {} |\n",
            ratio(secs_of(&gs[0]), self.floor_serial.as_secs_f64()),
            ratio(secs_of(&sdk[0]), self.floor_serial.as_secs_f64()),
            ratio(r.wall.as_secs_f64(), self.floor_serial.as_secs_f64())
        ));
        s.push_str(&format!(
            "| cold sync time / plain REQ download's | {} | {} | 1× |\n",
            ratio(secs_of(&gs[0]), r.wall.as_secs_f64()),
            ratio(secs_of(&sdk[0]), r.wall.as_secs_f64())
        ));
        s.push_str(&format!(
            "| cold sync bytes daemon → client / events' JSON | {} | {} | {} |\n",
            ratio(gs[0].delta.from_daemon as f64, self.held_bytes as f64),
            ratio(sdk[0].delta.from_daemon as f64, self.held_bytes as f64),
            ratio(rp.from_daemon as f64, self.final_set_bytes() as f64)
        ));
        s.push_str(&format!(
            "| in-sync re-sync: bytes both ways per relay·filter (target ≤ 1 KB) | **{} B** \
             ({} filters) | {} B (1 filter) | |\n",
            per(
                gs[1].delta.to_daemon + gs[1].delta.from_daemon,
                gs[1].filters
            ),
            thousands(gs[1].filters),
            thousands(sdk[1].delta.to_daemon + sdk[1].delta.from_daemon)
        ));
        let trips = |run: &Run| {
            if run.filters == 0 {
                "—".into()
            } else {
                format!("{:.2}", run.round_trips as f64 / run.filters as f64)
            }
        };
        s.push_str(&format!(
            "| in-sync re-sync: round trips per filter (target 1) | **{}** | {} | |\n",
            trips(&gs[1]),
            trips(&sdk[1])
        ));
        s.push_str(&format!(
            "| 1 % catch-up: bytes daemon → client / missing events' JSON (target ≤ 1.2×) \
             | **{}** | {} | |\n",
            ratio(gs[2].delta.from_daemon as f64, self.missing_bytes as f64),
            ratio(sdk[2].delta.from_daemon as f64, self.missing_bytes as f64)
        ));
        s.push_str(&format!(
            "| 1 % catch-up: bytes both ways / missing events' JSON | {} | {} | |\n",
            ratio(
                (gs[2].delta.from_daemon + gs[2].delta.to_daemon) as f64,
                self.missing_bytes as f64
            ),
            ratio(
                (sdk[2].delta.from_daemon + sdk[2].delta.to_daemon) as f64,
                self.missing_bytes as f64
            )
        ));
        s.push_str(&format!(
            "| 1 % catch-up: time / nostr-sdk's (target ≤ 0.5×): wall; until in sync | \
             **{}**; {} | 1× | |\n",
            ratio(secs_of(&gs[2]), secs_of(&sdk[2])),
            ratio(
                gs[2].settled.unwrap_or(gs[2].wall).as_secs_f64(),
                secs_of(&sdk[2])
            )
        ));
        s.push_str(&format!(
            "| daemon CPU answering: cold / in-sync / catch-up | {} / {} / {} | {} / {} / {} \
             | {} |\n",
            secs(gs[0].delta.daemon_cpu),
            secs(gs[1].delta.daemon_cpu),
            secs(gs[2].delta.daemon_cpu),
            secs(sdk[0].delta.daemon_cpu),
            secs(sdk[1].delta.daemon_cpu),
            secs(sdk[2].delta.daemon_cpu),
            secs(rp.daemon_cpu)
        ));
        let cpu_ratio = |i: usize| {
            ratio(
                sdk[i].delta.daemon_cpu.as_secs_f64(),
                gs[i].delta.daemon_cpu.as_secs_f64(),
            )
        };
        s.push_str(&format!(
            "| daemon CPU answering nostr-sdk / answering grasp-sync (target: nostr-sdk's \
             answered no slower, ≤ 1×): cold; in-sync; catch-up | **{}; {}; {}** | | |\n",
            cpu_ratio(0),
            cpu_ratio(1),
            cpu_ratio(2)
        ));
        s.push_str(&format!(
            "| wall time, cold / in-sync / catch-up | {} / {} / {} | {} / {} / {} | {} |\n",
            secs(gs[0].wall),
            secs(gs[1].wall),
            secs(gs[2].wall),
            secs(sdk[0].wall),
            secs(sdk[1].wall),
            secs(sdk[2].wall),
            secs(r.wall)
        ));
        s.push_str(&format!(
            "\nBytes and frames are as the daemon counts them (`/metrics`: frame text, no \
             WebSocket framing). grasp-sync's wall time is its process from start to exit \
             (store opened, NIP-11 fetched, connected, shut down; \"until in sync\" is its \
             log line); nostr-sdk's is the `Client::sync` call alone, on a client connected \
             beforehand and kept across its three runs. grasp-sync's round trips are its \
             summary's; nostr-sdk's are NEG-OPEN + NEG-MSG + REQ frames (its `ids` REQs, 100 \
             ids each, run beside the reconciliation: an upper bound). grasp-sync's filters \
             are its historic jobs (`jobs_negentropy + jobs_req`), nostr-sdk's the one filter \
             of every kind served. The daemon's CPU is `/proc/<pid>/stat` (user + system) \
             from just before to just after each run; the REQ download's client CPU is this \
             process's. Preload: {}; daemon exit code after SIGTERM: {}.\n",
            self.preload_line(),
            self.daemon_exit.map_or("none".into(), |c| c.to_string())
        ));
        s
    }

    /// JSON bytes of the final set (the REQ download's).
    fn final_set_bytes(&self) -> usize {
        self.held_bytes + self.missing_bytes
    }

    fn preload_line(&self) -> String {
        format!(
            "{} to the daemon, {} from it",
            thousands(self.preload_probe.to_daemon),
            thousands(self.preload_probe.from_daemon)
        )
    }
}
