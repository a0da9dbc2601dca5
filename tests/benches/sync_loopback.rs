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
//!    all-cores floor (target ≤ 2×);
//! 5. a **plain paginated REQ** download of the same set over one WebSocket (`until`
//!    paged backwards, 500 per page) as a peer for bytes and time.
//!
//! The corpus is the testkit's generator topped up with larger patch replies: the
//! generator alone makes events of about 0.7 KB with comments the most common kind, so
//! patch replies (`a` + `e` reply tags, like the generator's own) of the size that
//! brings the mean to 1.3 KB are added to its roots.
//!
//! Run with `just bench-sync`, or `cargo bench -p grasp-sync-tests --bench
//! sync_loopback`. `GRASP_BENCH_EVENTS` (default 100 000) sets the cold-sync set size,
//! `GRASP_BENCH_MEAN_BYTES` (default 1 300) the mean event size; with
//! `GRASP_BENCH_LOG_DIR` set, each run's standard error (its `RUST_LOG` logs) is written
//! there. Unless `RUST_LOG` is set, the runs log at `warn,grasp_sync::sync=debug`, whose
//! "every relay is in sync" line splits each run's wall time into syncing and shutting
//! down. A run still going after `GRASP_BENCH_RUN_LIMIT_SECS` (default 300) is killed
//! and reported as hung. It reports, it asserts nothing about time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use grasp_sync::store::LmdbStore;
use grasp_sync::verify::ParallelVerifier;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::Verifier;
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, Rng};
use grasp_sync_tests::{grasp_sync_bin, Nip77Limits, Nip77Relay, RawClient, SyncRun};
use nostr::prelude::{Event, EventId, Filter, Keys};
use serde_json::{json, Value};

/// Repositories in the generated corpus (before the top-up).
const REPOS: usize = 600;
/// Events per repository the generator is asked for (it adds announcements and
/// deletions).
const EVENTS_PER_REPO: usize = 100;
/// Share of the cold-sync set the generator makes; patches top it up to the size.
const GENERATED_PCT: usize = 62;
/// Events per page of the plain REQ download.
const PAGE: usize = 500;

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
        eprintln!("sync_loopback is a benchmark: run it with `cargo bench` or `just bench-sync`");
        return;
    }
    // The runs inherit it: their debug line for "settled" times the shutdown.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn,grasp_sync::sync=debug");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ' '], "").parse().ok())
        .unwrap_or(default)
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
    eprintln!(
        "bench-sync: generated {} events ({} by the testkit, {} patches added) in {:.1?}; \
         holding back {}",
        set.preload.len() + set.held_back.len(),
        set.generated,
        set.added_patches,
        generate_time,
        set.held_back.len()
    );

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
        "bench-sync: verification floor {floor_serial:.2?} on one core, {floor_parallel:.2?} \
         on {cores}"
    );
    if serial_ok != held.len() || parallel_ok != held.len() {
        eprintln!(
            "bench-sync: WARNING: {serial_ok}/{parallel_ok} of {} verify",
            held.len()
        );
    }

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
// grasp-sync runs

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
        self.total("jobs_negentropy") + self.total("jobs_req")
    }

    fn method(&self) -> String {
        let methods: BTreeSet<String> = self
            .run
            .relays()
            .iter()
            .filter_map(|r| r["method"].as_str().map(str::to_owned))
            .collect();
        methods.into_iter().collect::<Vec<_>>().join(", ")
    }

    fn settled(&self) -> bool {
        self.run
            .summary
            .as_ref()
            .and_then(|s| s["settled"].as_bool())
            .unwrap_or(false)
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
    let (run, hung) = run_watched(args, run_limit()).await;
    let wall = t.elapsed();
    let after = Cpu::now();
    if let Ok(dir) = std::env::var("GRASP_BENCH_LOG_DIR") {
        let path = Path::new(&dir).join(format!("{name}.stderr"));
        if let Err(e) = std::fs::write(&path, &run.stderr) {
            eprintln!("bench-sync: cannot write {}: {e}", path.display());
        }
    }
    let settled_after = run
        .stderr
        .lines()
        .find(|line| line.contains(SETTLED_LOG))
        .and_then(log_time)
        .and_then(|at| at.duration_since(start).ok());
    let gave_up_writes = run.stderr.contains(GAVE_UP_LOG);
    Timed {
        wall,
        cpu_sync: after.children.saturating_sub(before.children),
        cpu_relay: after.own.saturating_sub(before.own),
        settled_after,
        gave_up_writes,
        hung,
        run,
    }
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
    let mut child = tokio::process::Command::new(grasp_sync_bin())
        .args(args)
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
                "bench-sync: WARNING: grasp-sync (pid {:?}) still runs after {limit:?}: killed",
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

/// CPU time (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (zero elsewhere).
#[derive(Clone, Copy)]
struct Cpu {
    own: Duration,
    children: Duration,
}

impl Cpu {
    fn now() -> Self {
        let ticks = |fields: &[&str], a: usize, b: usize| {
            let n: u64 = [a, b]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
                .sum();
            Duration::from_secs_f64(n as f64 / clock_ticks() as f64)
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is field 3, so
        // utime (14), stime (15), cutime (16), cstime (17) are at 11..=14.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Self {
            own: ticks(&fields, 11, 12),
            children: ticks(&fields, 13, 14),
        }
    }
}

/// `getconf CLK_TCK` (100 when it cannot be asked).
fn clock_ticks() -> u64 {
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
    held: usize,
    held_bytes: usize,
    corpus: CorpusStats,
    burst: (usize, u64),
    floor_serial: Duration,
    floor_parallel: Duration,
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

fn pct(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        100.0 * a / b
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "—".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `1234567` as `1 234 567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.reverse();
    groups.join(" ")
}

fn per(n: u64, d: u64) -> String {
    n.checked_div(d).map_or_else(|| "—".into(), thousands)
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
        let rate = |events: u64, wall: Duration| {
            if events == 0 {
                "—".into()
            } else {
                thousands((events as f64 / wall.as_secs_f64()) as u64)
            }
        };
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
