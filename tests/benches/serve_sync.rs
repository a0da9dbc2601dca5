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
//! up with patch replies to a mean of 1.3 KB; `support::corpus`).
//!
//! Run with `just bench-serve`, or `cargo bench -p grasp-sync-tests --bench
//! serve_sync`. `GRASP_BENCH_EVENTS` (default 100 000) sets the set size,
//! `GRASP_BENCH_MEAN_BYTES` (default 1 300) the mean event size,
//! `GRASP_BENCH_RUN_LIMIT_SECS` (default 300) how long one `grasp-sync sync` may run
//! before it is killed and reported as hung; with `GRASP_BENCH_LOG_DIR` set, each
//! grasp-sync run's standard error and the daemon's log are written there;
//! `GRASP_BENCH_WRAP` runs each `grasp-sync sync` behind a profiler
//! (`support::sync_cli`).

#[allow(dead_code)] // each bench uses a part of it
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use grasp_sync_tests::nostr_sdk::prelude::{Client, RelayLimits, SyncDirection, SyncOptions};
use grasp_sync_tests::{counter_value, grasp_sync_bin, Daemon, RawClient, SyncRun};
use nostr::prelude::{Event, EventId, Filter, Kind};
use nostr_lmdb::NostrLmdb;
use serde_json::{json, Value};
use support::corpus::{generate, json_len, largest_second, CorpusStats};
use support::preload::{publish_staged, Published, PRELOAD_CONNECTIONS};
use support::req_download::{req_download, ReqDownload, PAGE};
use support::sync_cli::{
    cli_args, filters, gave_up_writes, in_sync, methods, run_limit, run_watched, settled_after,
    stored, StoreCheck,
};
use support::verify_floor::verification_floor;
use support::{env_usize, listing, per, rate, ratio, save_log, secs, thousands, Cpu, ProcSample};

/// The prefix of this bench's lines on standard error, for the support code that logs.
const TAG: &str = "bench-serve";

fn main() {
    support::bench_main(
        "serve_sync is a benchmark: run it with `cargo bench` or `just bench-serve`",
        bench,
    );
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
    set.log(TAG, generate_time);

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
        listing(&preload.refusals, " "),
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
    let (floor_serial, floor_parallel) = verification_floor(&held, cores, TAG).await;

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
    let sdk_cold = if std::env::var("GRASP_BENCH_SDK_COLD").as_deref() == Ok("fill") {
        eprintln!("bench-serve: nostr-sdk's store filled directly (GRASP_BENCH_SDK_COLD=fill)");
        sdk.fill(&served(&url).await, &held_ids).await
    } else {
        eprintln!("bench-serve: nostr-sdk cold sync …");
        sdk.run(&filter, &daemon, pid, &held_ids).await
    };
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
            listing(&added.refusals, " "),
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

    save_log(TAG, "daemon.log", &daemon.log());
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
// What the daemon serves

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
        let page = req_closed(&mut client, n, &filter).await;
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
            let filter = json!({"since": oldest, "until": oldest, "limit": 5000});
            let whole = req_closed(&mut client, n, &filter).await;
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

/// The events of one REQ of `filter` (subscription `all{n}`), then CLOSE.
async fn req_closed(client: &mut RawClient, n: usize, filter: &Value) -> Vec<Event> {
    let events = client
        .req(&format!("all{n}"), filter, Duration::from_secs(120))
        .await
        .expect("REQ answers");
    client
        .send(&json!(["CLOSE", format!("all{n}")]))
        .await
        .expect("CLOSE");
    events
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
        let value = |page: &str, series: &str| counter_value(page, series);
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
    let (run, hung) = run_watched(args, run_limit(), TAG).await;
    let wall = t.elapsed();
    let delta = Probe::take(daemon, pid).await.since(&before);
    for (ext, text) in [("stderr", &run.stderr), ("json", &run.stdout)] {
        save_log(TAG, &format!("grasp-sync-{name}.{ext}"), text);
    }
    let settled = settled_after(&run, start);
    let check = stored(dir, expected).await;
    let in_sync = in_sync(&run);
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
    Run {
        wall,
        settled,
        cpu: delta.children_cpu,
        received: run.total("received"),
        stored: Some(run.total("stored")),
        round_trips: run.total("round_trips"),
        filters: filters(&run),
        delta,
        check,
        ok,
        note: format!(
            "{}{}",
            methods(&run),
            if hung { ", hung: killed" } else { "" }
        ),
        gave_up_writes: gave_up_writes(&run),
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
        let check = StoreCheck::of(&ids, expected);
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

    /// Saves `events` straight into nostr-sdk's store, in place of its cold sync (to
    /// iterate on the other runs quickly); the cold column then says so.
    async fn fill(&self, events: &[Event], expected: &BTreeSet<EventId>) -> Run {
        let t = Instant::now();
        let database = self.client.database();
        // Queued together, nostr-lmdb writes a chunk in one transaction.
        for chunk in events.chunks(2_000) {
            for saved in
                futures_util::future::join_all(chunk.iter().map(|e| database.save_event(e))).await
            {
                saved.expect("nostr-lmdb saves");
            }
        }
        let wall = t.elapsed();
        Run {
            wall,
            settled: None,
            cpu: Duration::ZERO,
            received: 0,
            stored: None,
            round_trips: 0,
            filters: 1,
            delta: Delta::default(),
            check: StoreCheck::of(&events.iter().map(|e| e.id).collect(), expected),
            ok: false,
            note: "skipped: store filled directly".into(),
            summary: None,
            gave_up_writes: false,
        }
    }

    async fn close(self) {
        self.client.shutdown().await;
    }
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
            listing(&self.preload.refusals, " "),
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
