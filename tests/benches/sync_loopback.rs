//! The issue-4 benchmark (a recipe, not a test): `grasp-sync sync` on loopback against
//! rust-nostr's `LocalRelay` (NIP-77, limits raised) holding a generated corpus of about
//! 100 000 NIP-34 events (about 1.3 KB each, patches dominating).
//!
//! One run measures, and prints as a markdown table on stdout:
//!
//! 1. the **cold sync** into a fresh LMDB store, every signature verified;
//! 2. the **in-sync re-run** in the same store;
//! 3. a **1 % catch-up**: 1 % more events added to the relay, then a re-run;
//! 4. the **verification floor** of the cold sync's event set, single-threaded and on
//!    all cores (the rayon verifier grasp-sync itself uses), and the ratio cold sync /
//!    all-cores floor (target ≤ 2×); beside it the rest of a client's floor, measured
//!    alone: parsing the set's JSON on one core and writing it into a fresh grasp-sync
//!    store (on nostr-lmdb), and the least a client doing all three could take here;
//! 5. a **plain paginated REQ** download of the same set over one WebSocket (`until`
//!    paged backwards, 500 per page) as a peer for bytes and time.
//!
//! The corpus (`support::corpus`) is the testkit's generator topped up with larger patch
//! replies: the generator alone makes events of about 0.7 KB with comments the most
//! common kind, so patch replies (`a` + `e` reply tags, like the generator's own) of the
//! size that brings the mean to 1.3 KB are added to its roots.
//!
//! Run with `just bench-sync`, or `cargo bench -p grasp-sync-tests --bench
//! sync_loopback`. `GRASP_BENCH_EVENTS` (default 100 000) sets the cold-sync set size,
//! `GRASP_BENCH_MEAN_BYTES` (default 1 300) the mean event size; with
//! `GRASP_BENCH_LOG_DIR` set, each run's standard error (its `RUST_LOG` logs) is written
//! there. Unless `RUST_LOG` is set, the runs log at `warn,grasp_sync::sync=debug`, whose
//! "every relay is in sync" line splits each run's wall time into syncing and shutting
//! down. A run still going after `GRASP_BENCH_RUN_LIMIT_SECS` (default 300) is killed
//! and reported as hung. It reports, it asserts nothing about time.

#[allow(dead_code)] // each bench uses a part of it
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grasp_sync_tests::{grasp_sync_bin, Nip77Limits, Nip77Relay, SyncRun};
use nostr::prelude::EventId;
use serde_json::Value;
use support::client_floor::client_floor;
use support::corpus::{generate, json_len, largest_second, CorpusStats};
use support::req_download::{req_download, ReqDownload, PAGE};
use support::sync_cli::{
    cli_args, filters, gave_up_writes, in_sync, methods, run_limit, run_watched, settled_after,
    stored, StoreCheck,
};
use support::verify_floor::verification_floor;
use support::{env_usize, per, rate, ratio, save_log, secs, thousands, Cpu};

/// The prefix of this bench's lines on standard error, for the support code that logs.
const TAG: &str = "bench-sync";

fn main() {
    support::bench_main(
        "sync_loopback is a benchmark: run it with `cargo bench` or `just bench-sync`",
        bench,
    );
}

async fn bench() {
    let started = Instant::now();
    let target = env_usize("GRASP_BENCH_EVENTS", 100_000).max(1_000);
    let mean_bytes = env_usize("GRASP_BENCH_MEAN_BYTES", 1_300);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("bench-sync: binary {}", grasp_sync_bin().display());

    // The relay first: the announcements list its URL.
    let mut relay = Nip77Relay::start_with(&[], Nip77Limits::generous()).await;
    let url = relay.url();

    let t = Instant::now();
    let set = generate(&url, target, mean_bytes);
    let generate_time = t.elapsed();
    set.log(TAG, generate_time);

    // Preload straight into the relay's database (verified there), then listen again.
    let t = Instant::now();
    relay.stop().await;
    relay.add(&set.preload).await;
    relay.resume().await;
    let held = relay.events().await;
    eprintln!(
        "bench-sync: relay {url} holds {} events (preloaded in {:.1?})",
        held.len(),
        t.elapsed()
    );
    let held_ids: BTreeSet<EventId> = held.iter().map(|e| e.id).collect();
    let held_bytes: usize = held.iter().map(json_len).sum();
    let corpus_stats = CorpusStats::of(&held);
    let burst = largest_second(&held);

    // The verification floor of the set a cold sync downloads.
    let (floor_serial, floor_parallel) = verification_floor(&held, cores, TAG).await;
    let (parse_floor, store_floor, store_batch) = client_floor(&held, TAG).await;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let args = cli_args(&set.repos, &url, dir.path());

    eprintln!("bench-sync: cold sync …");
    let cold = timed_sync("cold", &args).await;
    let cold_store = stored(dir.path(), &held_ids).await;
    cold.log("cold sync", &cold_store);

    eprintln!("bench-sync: in-sync re-run …");
    let again = timed_sync("in-sync", &args).await;
    let again_store = stored(dir.path(), &held_ids).await;
    again.log("in-sync re-run", &again_store);

    // 1 % more events reach the relay (published while we were away).
    let missing_bytes: usize = set.held_back.iter().map(json_len).sum();
    let added = relay.add(&set.held_back).await;
    let after: BTreeSet<EventId> = relay.events().await.iter().map(|e| e.id).collect();
    eprintln!("bench-sync: 1 % catch-up ({added} events added to the relay) …");
    let catch_up = timed_sync("catch-up", &args).await;
    let catch_up_store = stored(dir.path(), &after).await;
    catch_up.log("1 % catch-up", &catch_up_store);

    eprintln!("bench-sync: plain paginated REQ download …");
    let req = req_download(&url).await;
    if req.events != after.len() {
        eprintln!(
            "bench-sync: WARNING: the REQ download got {} distinct events of {}",
            req.events,
            after.len()
        );
    }

    drop(relay);
    let table = Report {
        url,
        cores,
        target,
        generated: set.generated,
        added_patches: set.added_patches,
        generate_time,
        held: held.len(),
        held_bytes,
        corpus: corpus_stats,
        burst,
        floor_serial,
        floor_parallel,
        parse_floor,
        store_floor,
        store_batch,
        cold,
        cold_store,
        again,
        again_store,
        catch_up,
        catch_up_store,
        held_back: added,
        missing_bytes,
        req,
        relay_after: after.len(),
    }
    .markdown();
    println!("{table}");
    eprintln!("bench-sync: done in {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// grasp-sync runs

struct Timed {
    wall: Duration,
    run: SyncRun,
    /// CPU time of the `grasp-sync` process.
    cpu_sync: Duration,
    /// CPU time of this process meanwhile: the relay, mostly.
    cpu_relay: Duration,
    /// From the start to the "every relay is in sync" log line, when it was logged.
    settled_after: Option<Duration>,
    /// Whether the driver gave up waiting for in-flight writes at shutdown.
    gave_up_writes: bool,
    /// Killed by the bench after [`run_limit`].
    hung: bool,
}

impl Timed {
    fn total(&self, field: &str) -> u64 {
        self.run.total(field)
    }

    /// Historic filter jobs completed (one NIP-77 session or one paged REQ each).
    fn filters(&self) -> u64 {
        filters(&self.run)
    }

    fn method(&self) -> String {
        methods(&self.run)
    }

    fn settled(&self) -> bool {
        in_sync(&self.run)
    }

    fn log(&self, what: &str, store: &StoreCheck) {
        eprintln!(
            "bench-sync: {what}: exit {:?} in {:.2?}, {} relay(s): {}",
            self.run.code,
            self.wall,
            self.run.relays().len(),
            self.run
                .relays()
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        eprintln!(
            "bench-sync: {what}: store holds {} events, {} of the relay's {} missing, {} \
             others",
            store.stored, store.missing, store.expected, store.extra
        );
        if self.run.code != Some(0) || !self.settled() {
            eprintln!(
                "bench-sync: WARNING: {what} did not end in sync; stderr:\n{}",
                self.run.stderr
            );
        }
    }
}

async fn timed_sync(name: &str, args: &[String]) -> Timed {
    let before = Cpu::now();
    let start = std::time::SystemTime::now();
    let t = Instant::now();
    let (run, hung) = run_watched(args, run_limit(), TAG).await;
    let wall = t.elapsed();
    let after = Cpu::now();
    save_log(TAG, &format!("{name}.stderr"), &run.stderr);
    Timed {
        wall,
        cpu_sync: after.children.saturating_sub(before.children),
        cpu_relay: after.own.saturating_sub(before.own),
        settled_after: settled_after(&run, start),
        gave_up_writes: gave_up_writes(&run),
        hung,
        run,
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
    held: usize,
    held_bytes: usize,
    corpus: CorpusStats,
    burst: (usize, u64),
    floor_serial: Duration,
    floor_parallel: Duration,
    parse_floor: Duration,
    store_floor: Duration,
    store_batch: usize,
    cold: Timed,
    cold_store: StoreCheck,
    again: Timed,
    again_store: StoreCheck,
    catch_up: Timed,
    catch_up_store: StoreCheck,
    held_back: usize,
    missing_bytes: usize,
    req: ReqDownload,
    relay_after: usize,
}

impl Report {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let mean = self.held_bytes / self.held.max(1);
        s.push_str(&format!(
            "## grasp-sync sync on loopback ({} cores, relay {})\n\n",
            self.cores, self.url
        ));
        s.push_str(&format!(
            "Corpus: {} events held by the relay (asked for {}), {} MB of event JSON, mean \
             {} B; {} from the testkit generator + {} added patch replies, generated and \
             signed in {}; {} repositories; the busiest second holds {} events.  \n\
             Mix: {}.\n\n",
            thousands(self.held as u64),
            thousands(self.target as u64),
            self.held_bytes / 1_000_000,
            mean,
            thousands(self.generated as u64),
            thousands(self.added_patches as u64),
            secs(self.generate_time),
            self.cold
                .run
                .summary
                .as_ref()
                .map_or(0, |s| s["repos"].as_u64().unwrap_or(0)),
            thousands(self.burst.0 as u64),
            self.corpus.line()
        ));

        s.push_str(
            "| | cold sync | in-sync re-run | 1 % catch-up | plain REQ download |\n\
             | --- | ---: | ---: | ---: | ---: |\n",
        );
        let runs = [&self.cold, &self.again, &self.catch_up];
        let row = |name: &str, cells: [String; 4]| {
            format!(
                "| {name} | {} | {} | {} | {} |\n",
                cells[0], cells[1], cells[2], cells[3]
            )
        };
        let r = &self.req;
        let exit = |t: &Timed| {
            if t.hung {
                return format!("hung: killed after {} / no", secs(t.wall));
            }
            format!(
                "{} / {}",
                t.run.code.map_or("killed".into(), |c| c.to_string()),
                if t.settled() { "yes" } else { "no" }
            )
        };
        s.push_str(&row(
            "exit / settled",
            [exit(runs[0]), exit(runs[1]), exit(runs[2]), "—".into()],
        ));
        s.push_str(&row(
            "method",
            [
                runs[0].method(),
                runs[1].method(),
                runs[2].method(),
                format!("REQ, limit {PAGE}"),
            ],
        ));
        s.push_str(&row(
            "wall time",
            [
                secs(runs[0].wall),
                secs(runs[1].wall),
                secs(runs[2].wall),
                secs(r.wall),
            ],
        ));
        let settled = |t: &Timed| match t.settled_after {
            Some(d) => format!(
                "{} + {}{}",
                secs(d),
                secs(t.wall.saturating_sub(d)),
                if t.gave_up_writes {
                    " (gave up on writes)"
                } else {
                    ""
                }
            ),
            None => "—".into(),
        };
        s.push_str(&row(
            "of which: until in sync + shutdown",
            [
                settled(runs[0]),
                settled(runs[1]),
                settled(runs[2]),
                "—".into(),
            ],
        ));
        s.push_str(&row(
            "CPU: grasp-sync / relay process",
            [
                format!("{} / {}", secs(runs[0].cpu_sync), secs(runs[0].cpu_relay)),
                format!("{} / {}", secs(runs[1].cpu_sync), secs(runs[1].cpu_relay)),
                format!("{} / {}", secs(runs[2].cpu_sync), secs(runs[2].cpu_relay)),
                format!("— / {} (client + relay)", secs(r.cpu)),
            ],
        ));
        s.push_str(&row(
            "events received",
            [
                thousands(runs[0].total("received")),
                thousands(runs[1].total("received")),
                thousands(runs[2].total("received")),
                format!(
                    "{} ({} distinct of {})",
                    thousands(r.frames as u64 - r.round_trips),
                    thousands(r.events as u64),
                    thousands(self.relay_after as u64)
                ),
            ],
        ));
        s.push_str(&row(
            "events stored",
            [
                thousands(runs[0].total("stored")),
                thousands(runs[1].total("stored")),
                thousands(runs[2].total("stored")),
                "—".into(),
            ],
        ));
        let checks = [&self.cold_store, &self.again_store, &self.catch_up_store];
        let check = |c: &StoreCheck| {
            format!(
                "{} ({} of {} missing, {} other)",
                thousands(c.stored as u64),
                c.missing,
                thousands(c.expected as u64),
                c.extra
            )
        };
        s.push_str(&row(
            "store holds afterwards",
            [
                check(checks[0]),
                check(checks[1]),
                check(checks[2]),
                "—".into(),
            ],
        ));
        s.push_str(&row(
            "events/s (received / wall)",
            [
                rate(runs[0].total("received"), runs[0].wall),
                rate(runs[1].total("received"), runs[1].wall),
                rate(runs[2].total("received"), runs[2].wall),
                rate(r.events as u64, r.wall),
            ],
        ));
        s.push_str(&row(
            "bytes in",
            [
                thousands(runs[0].total("bytes_in")),
                thousands(runs[1].total("bytes_in")),
                thousands(runs[2].total("bytes_in")),
                thousands(r.bytes_in),
            ],
        ));
        s.push_str(&row(
            "bytes out",
            [
                thousands(runs[0].total("bytes_out")),
                thousands(runs[1].total("bytes_out")),
                thousands(runs[2].total("bytes_out")),
                thousands(r.bytes_out),
            ],
        ));
        s.push_str(&row(
            "round trips",
            [
                thousands(runs[0].total("round_trips")),
                thousands(runs[1].total("round_trips")),
                thousands(runs[2].total("round_trips")),
                format!(
                    "{} ({} whole seconds)",
                    thousands(r.round_trips),
                    r.whole_seconds
                ),
            ],
        ));
        s.push_str(&row(
            "filters (jobs NIP-77 + REQ)",
            [
                format!(
                    "{} + {}",
                    runs[0].total("jobs_negentropy"),
                    runs[0].total("jobs_req")
                ),
                format!(
                    "{} + {}",
                    runs[1].total("jobs_negentropy"),
                    runs[1].total("jobs_req")
                ),
                format!(
                    "{} + {}",
                    runs[2].total("jobs_negentropy"),
                    runs[2].total("jobs_req")
                ),
                "1".into(),
            ],
        ));
        let per_filter = |t: &Timed, field: &str| per(t.total(field), t.filters());
        s.push_str(&row(
            "bytes in + out per relay·filter",
            [
                per(
                    runs[0].total("bytes_in") + runs[0].total("bytes_out"),
                    runs[0].filters(),
                ),
                per(
                    runs[1].total("bytes_in") + runs[1].total("bytes_out"),
                    runs[1].filters(),
                ),
                per(
                    runs[2].total("bytes_in") + runs[2].total("bytes_out"),
                    runs[2].filters(),
                ),
                "—".into(),
            ],
        ));
        s.push_str(&row(
            "bytes in per relay·filter",
            [
                per_filter(runs[0], "bytes_in"),
                per_filter(runs[1], "bytes_in"),
                per_filter(runs[2], "bytes_in"),
                "—".into(),
            ],
        ));
        let trips = |t: &Timed| {
            if t.filters() == 0 {
                "—".into()
            } else {
                format!("{:.2}", t.total("round_trips") as f64 / t.filters() as f64)
            }
        };
        s.push_str(&row(
            "round trips per filter",
            [trips(runs[0]), trips(runs[1]), trips(runs[2]), "—".into()],
        ));
        s.push_str(&row(
            "bytes in / event JSON fetched",
            [
                ratio(runs[0].total("bytes_in") as f64, self.held_bytes as f64),
                "—".into(),
                format!(
                    "{} (of {} B missing in {} events)",
                    ratio(runs[2].total("bytes_in") as f64, self.missing_bytes as f64),
                    thousands(self.missing_bytes as u64),
                    self.held_back
                ),
                ratio(
                    r.bytes_in as f64,
                    (self.held_bytes + self.missing_bytes) as f64,
                ),
            ],
        ));
        s.push('\n');

        let floor = self.floor_parallel.as_secs_f64();
        s.push_str(
            "| verification floor and ratios | value |\n\
             | --- | ---: |\n",
        );
        s.push_str(&format!(
            "| verify {} events, one core | {} ({} events/s) |\n",
            thousands(self.held as u64),
            secs(self.floor_serial),
            thousands((self.held as f64 / self.floor_serial.as_secs_f64()) as u64)
        ));
        s.push_str(&format!(
            "| verify {} events, {} cores (rayon, grasp-sync's verifier) | {} ({} events/s) |\n",
            thousands(self.held as u64),
            self.cores,
            secs(self.floor_parallel),
            thousands((self.held as f64 / floor) as u64)
        ));
        s.push_str(&format!(
            "| cold sync / all-cores floor (target ≤ 2×) | **{}** |\n",
            ratio(self.cold.wall.as_secs_f64(), floor)
        ));
        // Verification and parsing spread over the cores; the store has one writer.
        let client_floor = self.store_floor.as_secs_f64().max(
            (self.floor_serial + self.parse_floor + self.store_floor).as_secs_f64()
                / self.cores as f64,
        );
        s.push_str(&format!(
            "| parse {} events from JSON, one core | {} |\n",
            thousands(self.held as u64),
            secs(self.parse_floor)
        ));
        s.push_str(&format!(
            "| write them into a fresh store (grasp-sync's on nostr-lmdb), {} events per save | {} |\n",
            thousands(self.store_batch as u64),
            secs(self.store_floor)
        ));
        s.push_str(&format!(
            "| client floor: max(store, (verify one core + parse + store) / {} cores) | {:.2} s ({} the all-cores verification floor) |\n",
            self.cores,
            client_floor,
            ratio(client_floor, floor)
        ));
        s.push_str(&format!(
            "| cold sync / client floor | {} |\n",
            ratio(self.cold.wall.as_secs_f64(), client_floor)
        ));
        s.push_str(&format!(
            "| cold sync / one-core floor | {} |\n",
            ratio(
                self.cold.wall.as_secs_f64(),
                self.floor_serial.as_secs_f64()
            )
        ));
        s.push_str(&format!(
            "| cold sync / plain REQ download: time | {} |\n",
            ratio(self.cold.wall.as_secs_f64(), r.wall.as_secs_f64())
        ));
        s.push_str(&format!(
            "| cold sync / plain REQ download: bytes in | {} |\n",
            ratio(self.cold.total("bytes_in") as f64, r.bytes_in as f64)
        ));
        s.push_str(&format!(
            "| cold sync / plain REQ download: bytes out | {} |\n",
            ratio(self.cold.total("bytes_out") as f64, r.bytes_out as f64)
        ));
        s.push_str(&format!(
            "| plain REQ download + all-cores floor (sequential) / cold sync | {} |\n",
            ratio(r.wall.as_secs_f64() + floor, self.cold.wall.as_secs_f64())
        ));
        s.push_str(&format!(
            "| in-sync re-run: bytes in + out per relay·filter (target ≤ 1 KB) | **{} B** |\n",
            per(
                self.again.total("bytes_in") + self.again.total("bytes_out"),
                self.again.filters()
            )
        ));
        s.push_str(&format!(
            "| in-sync re-run: round trips per filter (target 1) | **{}** |\n",
            trips(&self.again)
        ));
        s.push_str(&format!(
            "| 1 % catch-up: bytes in / missing events' JSON | **{}** |\n",
            ratio(
                self.catch_up.total("bytes_in") as f64,
                self.missing_bytes as f64
            )
        ));
        s.push_str(
            "\nFilters are counted as the historic jobs the summary reports completed \
             (`jobs_negentropy + jobs_req`): one NIP-77 session or one paged REQ per chunk \
             of a layer's filter (L1 announcements, L2 repo tags, L3 root tags, one per tag \
             letter). It approximates relay·filter pairs; it leaves out the discovery \
             query, live subscriptions and re-asks, whose bytes and round trips are \
             nevertheless in the totals it divides. Bytes are frame text as sent and \
             received (no WebSocket framing); the REQ download parses events but does not \
             verify them.\n",
        );
        s
    }
}
