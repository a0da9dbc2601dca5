//! Load recipe for `grasp-sync serve` (a recipe, not a test): many concurrent WebSocket
//! clients subscribing and publishing at once against one daemon on loopback.
//!
//! One run:
//!
//! 1. starts the daemon (the [`Daemon`] harness: a child process) with connection and
//!    EVENT-rate limits raised for a single client address (every client is 127.0.0.1);
//! 2. **preloads** it by publishing a testkit corpus to it (announcements listing the
//!    daemon's URL first, as the default `list-us` policy needs, then their events, over
//!    four connections);
//! 3. opens `GRASP_LOAD_CLIENTS` (default 1 000) WebSocket connections at once (raw
//!    tokio-tungstenite), timing each connection's set-up (TCP + HTTP upgrade);
//! 4. once all are open, each sends one REQ for one tracked repository,
//!    `["REQ", "h", {"#a": [repo]}, {"#a": [repo], "limit": 0}]`: the stored events (no
//!    `limit`: the daemon caps it), then EOSE, and the subscription stays open for live
//!    events, which match both filters and must come once (`GRASP_LOAD_FANOUT`, default
//!    10, subscribers per repository); REQ-to-EOSE is timed with every REQ sent at once;
//! 5. for `GRASP_LOAD_SECS` (default 60) seconds, `GRASP_LOAD_PUBLISHERS` of the
//!    clients (default a tenth) publish `GRASP_LOAD_RATE` (default 1) new patch events
//!    each per second (pre-signed, about `GRASP_LOAD_EVENT_BYTES` (default 1 000) bytes,
//!    `a`-tagged to a random subscribed repository); publish-to-OK is timed at the
//!    publisher, publish-to-delivery at every other subscriber of that repository;
//! 6. waits until every OK and every delivery is in (at most 30 s more);
//! 7. a **burst**: a new repository's `GRASP_LOAD_BURST` (default 10 000) events published
//!    at once over four connections while every client holds its subscription, which
//!    none of them matches; the same burst (another new repository each time) is also
//!    published before any client connects and after they have all gone, and the mean
//!    of those two is the baseline (the store grows by a burst each time, and that
//!    alone makes a later burst dearer). Each burst phase lasts until every `OK` is in
//!    and the daemon's CPU has settled (under 5 % of a core over a second), so fan-out
//!    work left after the last `OK` is counted;
//! 8. closes everything, and reads the daemon's `/metrics`.
//!
//! Errors are counted, never fatal: a connection that fails, a REQ without EOSE, any
//! CLOSED or NOTICE, an EVENT without `OK true`, a subscriber missing a live event of
//! its repository (or getting one twice), a connection dropped by the daemon. The
//! daemon's CPU time, `VmRSS` and `VmHWM` (`/proc/<pid>`) are read at each phase
//! boundary and sampled every 250 ms for the peak. It prints a markdown table on stdout
//! and asserts nothing.
//!
//! Run with `just load`, or `cargo bench -p grasp-sync-tests --bench serve_load`.
//! Also: `GRASP_LOAD_REPOS` (default 100) and `GRASP_LOAD_EVENTS_PER_REPO` (default 100)
//! size the preloaded corpus; `GRASP_SYNC_BIN` runs another build of the daemon (e.g.
//! an older commit's `grasp-sync`) under the same load.

#[allow(dead_code)] // each bench uses a part of it
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, Rng};
use grasp_sync_tests::{Daemon, RawClient};
use nostr::prelude::{Event, EventId, Keys};
use serde_json::{json, Value};
use support::corpus::{roots_by_repo, KIND_PATCH};
use support::preload::{publish_staged, Published, PRELOAD_CONNECTIONS};
use support::{
    cpu_pct, env_usize, listing, mib, ms, nonzero_series, raise_open_files, secs, tcp_ext,
    thousands, Cpu, Latency, ProcSample,
};
use tokio::sync::{watch, Barrier};
use tokio_tungstenite::tungstenite::Message;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a REQ may take to reach EOSE.
const EOSE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after the last publish OKs and deliveries may still arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    support::bench_main(
        "serve_load is a load recipe: run it with `cargo bench` or `just load`",
        load,
    );
}

/// The run's knobs.
#[derive(Clone, Debug)]
struct Config {
    clients: usize,
    secs: u64,
    publishers: usize,
    rate: usize,
    fanout: usize,
    repos: usize,
    events_per_repo: usize,
    event_bytes: usize,
    /// Events of each burst (0: no burst).
    burst: usize,
}

impl Config {
    fn from_env() -> Self {
        let clients = env_usize("GRASP_LOAD_CLIENTS", 1_000).max(1);
        Self {
            clients,
            secs: env_usize("GRASP_LOAD_SECS", 60).max(1) as u64,
            publishers: env_usize("GRASP_LOAD_PUBLISHERS", clients.div_ceil(10)).min(clients),
            rate: env_usize("GRASP_LOAD_RATE", 1).max(1),
            fanout: env_usize("GRASP_LOAD_FANOUT", 10).max(1),
            repos: env_usize("GRASP_LOAD_REPOS", 100).max(1),
            events_per_repo: env_usize("GRASP_LOAD_EVENTS_PER_REPO", 100).max(1),
            event_bytes: env_usize("GRASP_LOAD_EVENT_BYTES", 1_000),
            burst: env_usize("GRASP_LOAD_BURST", 10_000),
        }
    }
}

async fn load() {
    let started = Instant::now();
    let config = Config::from_env();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    // Every client is a socket here and one in the daemon (which inherits the limit).
    let wanted_files = config.clients as u64 + 512;
    let open_files = raise_open_files(wanted_files);
    if open_files < wanted_files {
        eprintln!(
            "serve-load: WARNING: the open-file limit is {open_files}, {wanted_files} wanted: \
             connections may fail"
        );
    }

    let dir = tempfile::tempdir().expect("a temporary directory");
    let per_ip = config.clients.max(2_000) + 16;
    let max_connections = (2 * config.clients).max(4_000);
    let flags = [
        "--connections-per-ip".to_owned(),
        per_ip.to_string(),
        "--max-connections".to_owned(),
        max_connections.to_string(),
        "--events-per-minute".to_owned(),
        "1000000".to_owned(),
        "--events-per-minute-per-ip".to_owned(),
        "100000000".to_owned(),
    ];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&dir.path().join("store"), &flag_refs).await;
    let url = daemon.url();
    let pid = daemon.pid().expect("the daemon runs");
    eprintln!("serve-load: daemon {url} (pid {pid}); open-file limit {open_files}");

    // The corpus: announcements list the daemon.
    let t = Instant::now();
    let corpus = Corpus::generate(&CorpusSpec {
        seed: 11,
        repos: config.repos,
        events_per_repo: config.events_per_repo,
        relays: vec![url.clone()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    });
    eprintln!(
        "serve-load: generated {} events in {} repositories in {:.1?}",
        corpus.events.len(),
        corpus.repos.len(),
        t.elapsed()
    );
    let preload = preload(&url, &corpus).await;
    eprintln!(
        "serve-load: preloaded in {:.1?}: {} accepted, {} refused, {} unanswered; the daemon \
         holds {}",
        preload.wall,
        preload.published.accepted,
        preload.published.refused,
        preload.published.unanswered,
        preload.held
    );

    // Who subscribes to what, who publishes what.
    let subscribed_repos = config
        .clients
        .div_ceil(config.fanout)
        .min(corpus.repos.len());
    let plans = plan(&config, &corpus, subscribed_repos);
    let live_events: usize = plans.iter().map(|p| p.events.len()).sum();
    let mut subscribers = vec![0u64; subscribed_repos];
    for p in &plans {
        subscribers[p.repo] += 1;
    }
    let expected_deliveries: u64 = plans
        .iter()
        .flat_map(|p| p.events.iter().map(|(_, r)| subscribers[*r]))
        .sum();
    let event_bytes = plans
        .iter()
        .flat_map(|p| p.events.iter().map(|(e, _)| e.as_json().len()))
        .sum::<usize>()
        / live_events.max(1);
    eprintln!(
        "serve-load: {} clients on {subscribed_repos} repositories; {} publishers will send \
         {live_events} events (mean {event_bytes} B), {expected_deliveries} deliveries expected",
        config.clients, config.publishers
    );

    // The bursts' corpora: one new repository each (other keys than the preload's).
    let bursts = [201, 202, 203].map(|seed| burst_corpus(&url, config.burst, seed));

    // Idle baseline.
    let mut marks = vec![Mark::now("start", pid)];
    tokio::time::sleep(Duration::from_secs(3)).await;
    marks.push(Mark::now("idle", pid));
    let [first, second, third] = bursts;
    let burst_alone = burst(&url, first, pid).await;
    marks.push(Mark::now("burst alone", pid));

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_peak(pid, Arc::clone(&sampling)));

    let (stop_tx, stop) = watch::channel(false);
    let (start_tx, start) = watch::channel::<Option<Instant>>(None);
    let shared = Arc::new(Shared {
        url: url.clone(),
        repos: corpus.repos.iter().map(ToString::to_string).collect(),
        sent_at: Mutex::new(HashMap::new()),
        connected: Barrier::new(config.clients + 1),
        subscribed: Barrier::new(config.clients + 1),
        oks: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        start,
        stop,
    });
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(client(plan, Arc::clone(&shared))))
        .collect();
    shared.connected.wait().await;
    marks.push(Mark::now("connected", pid));
    shared.subscribed.wait().await;
    marks.push(Mark::now("subscribed", pid));
    let publish_start = Instant::now() + Duration::from_millis(100);
    let _ = start_tx.send(Some(publish_start));
    let publish_end = publish_start + Duration::from_secs(config.secs);
    tokio::time::sleep_until(publish_end.into()).await;
    marks.push(Mark::now("published", pid));
    // Until every OK and every delivery is in (or the drain time-out).
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while (shared.oks.load(Ordering::Relaxed) < live_events as u64
        || shared.deliveries.load(Ordering::Relaxed) < expected_deliveries)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    marks.push(Mark::now("drained", pid));
    let burst_clients = burst(&url, second, pid).await;
    marks.push(Mark::now("burst", pid));
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a client task"));
    }
    marks.push(Mark::now("closed", pid));
    tokio::time::sleep(Duration::from_secs(3)).await;
    marks.push(Mark::now("after", pid));
    let burst_after = burst(&url, third, pid).await;
    marks.push(Mark::now("burst after", pid));
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or_default();
    let metrics = daemon.metrics().await;
    let log = daemon.log();
    let exit = daemon.stop().await;

    let outcome = Outcome::of(&results);
    let report = Report {
        config,
        cores,
        open_files,
        url,
        corpus_events: corpus.events.len(),
        corpus_repos: corpus.repos.len(),
        corpus_acceptable: corpus.acceptable.len(),
        preload,
        subscribed_repos,
        live_events,
        event_bytes,
        expected_deliveries,
        marks,
        peak,
        outcome,
        metrics,
        exit,
        burst_alone,
        burst_clients,
        burst_after,
    };
    println!("{}", report.markdown());
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("no public URL"))
        .collect();
    if !warnings.is_empty() {
        eprintln!(
            "serve-load: the daemon logged {} warnings or errors; the first ones:",
            warnings.len()
        );
        for line in warnings.iter().take(20) {
            eprintln!("  {line}");
        }
    }
    eprintln!("serve-load: done in {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Preload

struct Preload {
    wall: Duration,
    /// What the daemon answered.
    published: Published,
    /// What the daemon counts afterwards (NIP-45 COUNT of `{}`).
    held: u64,
}

/// Publishes the corpus in stages ([`publish_staged`]), then counts what the daemon
/// holds.
async fn preload(url: &str, corpus: &Corpus) -> Preload {
    let t = Instant::now();
    let published = publish_staged(url, &corpus.events).await;
    let wall = t.elapsed();
    Preload {
        wall,
        published,
        held: count_all(url).await,
    }
}

/// `["COUNT", "n", {}]`.
async fn count_all(url: &str) -> u64 {
    let mut client = RawClient::connect_within(url, Duration::from_secs(10))
        .await
        .expect("connect for COUNT");
    client
        .send(&json!(["COUNT", "n", {}]))
        .await
        .expect("send COUNT");
    let frames = client
        .recv_until(Duration::from_secs(60), |f| f[0] == "COUNT")
        .await;
    client.close().await;
    frames
        .last()
        .and_then(|f| f[2]["count"].as_u64())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Bursts

/// A burst's events: a new repository (announcement listing the daemon) and about
/// `events` events of it; empty when `events` is 0.
fn burst_corpus(url: &str, events: usize, seed: u64) -> Vec<Event> {
    if events == 0 {
        return Vec::new();
    }
    Corpus::generate(&CorpusSpec {
        seed,
        repos: 1,
        events_per_repo: events,
        relays: vec![url.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    })
    .events
}

/// What one burst did.
struct Burst {
    events: usize,
    published: Published,
    /// Until the last `OK`.
    wall: Duration,
}

/// Publishes `events` at once ([`publish_staged`]), then waits for the daemon to settle.
async fn burst(url: &str, events: Vec<Event>, pid: u32) -> Option<Burst> {
    if events.is_empty() {
        return None;
    }
    let t = Instant::now();
    let published = publish_staged(url, &events).await;
    let wall = t.elapsed();
    settle(pid).await;
    eprintln!(
        "serve-load: burst of {} events: {} accepted in {wall:.1?}",
        events.len(),
        published.accepted
    );
    Some(Burst {
        events: events.len(),
        published,
        wall,
    })
}

/// Waits until the daemon uses under 5 % of a core over a second (work left after the
/// last `OK`, such as fan-out, is then done), at most 60 s.
async fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = ProcSample::of(pid).cpu;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = ProcSample::of(pid).cpu.saturating_sub(before);
        if used < Duration::from_millis(50) || Instant::now() >= deadline {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plans: who subscribes to what, who publishes what

struct Plan {
    /// Index of the repository it subscribes to.
    repo: usize,
    /// Events to publish, with their repository's index, in order.
    events: Vec<(Event, usize)>,
    /// When its first event goes, after the publishing starts.
    first_at: Duration,
    /// Between two events.
    every: Duration,
}

/// Client `i` subscribes to repository `i % subscribed`; the first `publishers` clients
/// publish `rate` events a second each, spread evenly over the second, each `a`-tagged
/// to a random subscribed repository and replying to one of its roots.
fn plan(config: &Config, corpus: &Corpus, subscribed: usize) -> Vec<Plan> {
    let t = Instant::now();
    let roots = roots_by_repo(corpus);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let authors: Vec<Keys> = (0..32).map(|i| keys(7_000_000 + i)).collect();
    let mut rng = Rng::new(0x10ad_5eed);
    let per_publisher = config.secs as usize * config.rate;
    let every = Duration::from_secs(1) / config.rate as u32;
    let mut n = 0usize;
    let plans: Vec<Plan> = (0..config.clients)
        .map(|index| {
            let events = if index < config.publishers {
                (0..per_publisher)
                    .map(|_| {
                        n += 1;
                        let repo = rng.below(subscribed as u64) as usize;
                        let root = roots[repo]
                            .get(rng.below(roots[repo].len().max(1) as u64) as usize)
                            .map(|(id, _)| *id);
                        let author = &authors[rng.below(authors.len() as u64) as usize];
                        let mut tags = vec![vec!["a".to_owned(), corpus.repos[repo].to_string()]];
                        if let Some(root) = root {
                            tags.push(vec![
                                "e".to_owned(),
                                root.to_hex(),
                                String::new(),
                                "reply".to_owned(),
                            ]);
                        }
                        let content = filler(&mut rng, n, config.event_bytes.saturating_sub(500));
                        (sign(author, KIND_PATCH, now, tags, &content), repo)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Plan {
                repo: index % subscribed,
                events,
                first_at: every * index as u32 / config.publishers.max(1) as u32,
                every,
            }
        })
        .collect();
    eprintln!("serve-load: signed {n} live events in {:.1?}", t.elapsed());
    plans
}

/// A patch-like text of about `size` bytes.
fn filler(rng: &mut Rng, n: usize, size: usize) -> String {
    let mut text = format!("Subject: [PATCH] live change {n}\n\n");
    while text.len() < size {
        text.push_str(&format!("+    let v{:016x} = w.step();\n", rng.next_u64()));
    }
    text
}

// ---------------------------------------------------------------------------------------
// Clients

struct Shared {
    url: String,
    repos: Vec<String>,
    /// When each live event was sent.
    sent_at: Mutex<HashMap<EventId, Instant>>,
    connected: Barrier,
    subscribed: Barrier,
    oks: AtomicU64,
    deliveries: AtomicU64,
    start: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    repo: usize,
    connect: Option<Duration>,
    connect_error: Option<String>,
    eose: Option<Duration>,
    /// Stored events before EOSE.
    historic: usize,
    /// EVENTs it sent (id, repository).
    published: Vec<(EventId, usize)>,
    ok_latency: Vec<Duration>,
    /// Ids answered `OK true`.
    ok_true: Vec<EventId>,
    ok_false: Vec<String>,
    /// Live deliveries (to this connection, of events others published).
    delivery_latency: Vec<Duration>,
    /// Live events received (any publisher, itself included).
    received: HashSet<EventId>,
    duplicates: usize,
    unknown: usize,
    closed: Vec<String>,
    notices: Vec<String>,
    /// Why the connection ended early (the daemon closed it, a read or write failed).
    dropped: Option<String>,
}

async fn client(plan: Plan, shared: Arc<Shared>) -> ClientResult {
    let mut out = ClientResult {
        repo: plan.repo,
        ..ClientResult::default()
    };
    let t = Instant::now();
    let ws = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async(shared.url.as_str()),
    )
    .await
    {
        Ok(Ok((ws, _))) => {
            out.connect = Some(t.elapsed());
            Some(ws)
        }
        Ok(Err(e)) => {
            out.connect_error = Some(e.to_string());
            None
        }
        Err(_) => {
            out.connect_error = Some("timed out".into());
            None
        }
    };
    shared.connected.wait().await;
    let Some(ws) = ws else {
        shared.subscribed.wait().await;
        return out;
    };
    let (mut tx, mut rx) = ws.split();

    // The REQ, up to EOSE.
    // The stored events, and a live-only filter beside them (an event matching both
    // must still come once).
    let repo = &shared.repos[plan.repo];
    let req = json!(["REQ", "h", {"#a": [repo]}, {"#a": [repo], "limit": 0}]).to_string();
    let t = Instant::now();
    let mut live = false;
    if let Err(e) = tx.send(Message::text(req)).await {
        out.dropped = Some(format!("send REQ: {e}"));
    } else {
        let deadline = tokio::time::Instant::now() + EOSE_TIMEOUT;
        while out.eose.is_none() && out.dropped.is_none() {
            match tokio::time::timeout_at(deadline, rx.next()).await {
                Err(_) => break,
                Ok(None) => out.dropped = Some("closed by the daemon".into()),
                Ok(Some(Err(e))) => out.dropped = Some(format!("read: {e}")),
                Ok(Some(Ok(message))) => {
                    let Some(frame) = text_frame(&message) else {
                        continue;
                    };
                    match frame[0].as_str() {
                        Some("EVENT") => out.historic += 1,
                        Some("EOSE") => out.eose = Some(t.elapsed()),
                        _ => on_other(&mut out, &frame),
                    }
                }
            }
        }
        live = out.eose.is_some();
    }
    shared.subscribed.wait().await;

    // Live: publish on schedule, read everything.
    let mut start = shared.start.clone();
    let start = match start.wait_for(Option::is_some).await {
        Ok(at) => at.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let mut stop = shared.stop.clone();
    let mut pending: HashMap<EventId, Instant> = HashMap::new();
    let mut next = 0usize;
    let timer = tokio::time::sleep_until((start + plan.first_at).into());
    tokio::pin!(timer);
    while out.dropped.is_none() && live {
        tokio::select! {
            _ = &mut timer, if next < plan.events.len() => {
                let (event, repo) = &plan.events[next];
                next += 1;
                timer
                    .as_mut()
                    .reset((start + plan.first_at + plan.every * next as u32).into());
                let frame = format!(r#"["EVENT",{}]"#, event.as_json());
                let now = Instant::now();
                shared
                    .sent_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(event.id, now);
                pending.insert(event.id, now);
                out.published.push((event.id, *repo));
                if let Err(e) = tx.send(Message::text(frame)).await {
                    out.dropped = Some(format!("send EVENT: {e}"));
                }
            }
            message = rx.next() => match message {
                None => out.dropped = Some("closed by the daemon".into()),
                Some(Err(e)) => out.dropped = Some(format!("read: {e}")),
                Some(Ok(message)) => {
                    let Some(frame) = text_frame(&message) else { continue };
                    match frame[0].as_str() {
                        Some("EVENT") => on_live(&mut out, &shared, &pending, &frame),
                        Some("OK") => {
                            let Some(id) = frame[1].as_str().and_then(|s| EventId::from_hex(s).ok())
                            else {
                                continue;
                            };
                            let Some(sent) = pending.remove(&id) else { continue };
                            shared.oks.fetch_add(1, Ordering::Relaxed);
                            out.ok_latency.push(sent.elapsed());
                            if frame[2].as_bool() == Some(true) {
                                out.ok_true.push(id);
                            } else {
                                out.ok_false.push(frame[3].as_str().unwrap_or_default().to_owned());
                            }
                        }
                        _ => on_other(&mut out, &frame),
                    }
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tx.close()).await;
    out
}

fn text_frame(message: &Message) -> Option<Value> {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).ok(),
        _ => None,
    }
}

/// A live EVENT: timed when another client published it.
fn on_live(
    out: &mut ClientResult,
    shared: &Shared,
    own: &HashMap<EventId, Instant>,
    frame: &Value,
) {
    let Some(id) = frame[2]["id"]
        .as_str()
        .and_then(|s| EventId::from_hex(s).ok())
    else {
        out.unknown += 1;
        return;
    };
    let now = Instant::now();
    let sent = shared
        .sent_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .copied();
    let Some(sent) = sent else {
        out.unknown += 1;
        return;
    };
    if !out.received.insert(id) {
        out.duplicates += 1;
        return;
    }
    shared.deliveries.fetch_add(1, Ordering::Relaxed);
    let mine = own.contains_key(&id) || out.ok_true.contains(&id);
    if !mine {
        out.delivery_latency
            .push(now.saturating_duration_since(sent));
    }
}

fn on_other(out: &mut ClientResult, frame: &Value) {
    match frame[0].as_str() {
        Some("CLOSED") => out.closed.push(frame.to_string()),
        Some("NOTICE") => out.notices.push(frame.to_string()),
        _ => out.unknown += 1,
    }
}

// ---------------------------------------------------------------------------------------
// Daemon samples

/// The daemon and this process at a phase boundary.
struct Mark {
    name: &'static str,
    at: Instant,
    daemon: ProcSample,
    own: Cpu,
    /// System-wide `TcpExt` `ListenOverflows` and `SyncookiesSent`.
    overflows: (u64, u64),
}

impl Mark {
    fn now(name: &'static str, pid: u32) -> Self {
        Self {
            name,
            at: Instant::now(),
            daemon: ProcSample::of(pid),
            own: Cpu::now(),
            overflows: (tcp_ext("ListenOverflows"), tcp_ext("SyncookiesSent")),
        }
    }
}

/// The largest `VmRSS` seen, sampled every 250 ms while `on`.
async fn sample_peak(pid: u32, on: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while on.load(Ordering::Relaxed) {
        peak = peak.max(ProcSample::of(pid).rss_kib);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak
}

// ---------------------------------------------------------------------------------------
// Outcome

#[derive(Default)]
struct Outcome {
    connected: usize,
    connect_errors: BTreeMap<String, usize>,
    connect: Latency,
    /// Connections that took a second or more (a dropped SYN or ACK is retried after
    /// 1 s).
    slow_connects: usize,
    eoses: usize,
    eose: Latency,
    historic: usize,
    published: usize,
    ok_true: usize,
    ok_false: BTreeMap<String, usize>,
    no_ok: usize,
    ok: Latency,
    delivery: Latency,
    expected: u64,
    received: u64,
    missing: u64,
    duplicates: usize,
    unknown: usize,
    closed: Vec<String>,
    notices: Vec<String>,
    dropped: BTreeMap<String, usize>,
}

impl Outcome {
    fn of(results: &[ClientResult]) -> Self {
        let mut o = Outcome::default();
        let mut connect = Vec::new();
        let mut eose = Vec::new();
        let mut ok = Vec::new();
        let mut delivery = Vec::new();
        // Accepted events by repository: what each subscriber of it must have got.
        let mut accepted: HashMap<usize, Vec<EventId>> = HashMap::new();
        for r in results {
            let ok_true: HashSet<EventId> = r.ok_true.iter().copied().collect();
            for (id, repo) in &r.published {
                if ok_true.contains(id) {
                    accepted.entry(*repo).or_default().push(*id);
                }
            }
        }
        for r in results {
            match (&r.connect, &r.connect_error) {
                (Some(d), _) => {
                    o.connected += 1;
                    connect.push(*d);
                    if *d >= Duration::from_secs(1) {
                        o.slow_connects += 1;
                    }
                }
                (None, Some(e)) => *o.connect_errors.entry(e.clone()).or_default() += 1,
                (None, None) => *o.connect_errors.entry("?".into()).or_default() += 1,
            }
            if let Some(d) = r.eose {
                o.eoses += 1;
                eose.push(d);
                // Only a subscription that reached EOSE is owed live events.
                let owed = accepted.get(&r.repo).map_or(&[][..], Vec::as_slice);
                o.expected += owed.len() as u64;
                let got = owed.iter().filter(|id| r.received.contains(id)).count() as u64;
                o.received += got;
                o.missing += owed.len() as u64 - got;
            }
            o.historic += r.historic;
            o.published += r.published.len();
            o.ok_true += r.ok_true.len();
            for m in &r.ok_false {
                let reason = m.split(':').next().unwrap_or_default().to_owned();
                *o.ok_false.entry(reason).or_default() += 1;
            }
            o.no_ok += r.published.len() - r.ok_true.len() - r.ok_false.len();
            ok.extend_from_slice(&r.ok_latency);
            delivery.extend_from_slice(&r.delivery_latency);
            o.duplicates += r.duplicates;
            o.unknown += r.unknown;
            o.closed.extend(r.closed.iter().cloned());
            o.notices.extend(r.notices.iter().cloned());
            if let Some(d) = &r.dropped {
                *o.dropped.entry(d.clone()).or_default() += 1;
            }
        }
        o.connect = Latency::of(&mut connect);
        o.eose = Latency::of(&mut eose);
        o.ok = Latency::of(&mut ok);
        o.delivery = Latency::of(&mut delivery);
        o
    }

    fn errors(&self, clients: usize) -> u64 {
        (clients - self.connected) as u64
            + (self.connected - self.eoses) as u64
            + self.closed.len() as u64
            + self.notices.len() as u64
            + self.ok_false.values().sum::<usize>() as u64
            + self.no_ok as u64
            + self.missing
            + self.duplicates as u64
            + self.unknown as u64
            + self.dropped.values().sum::<usize>() as u64
    }
}

// ---------------------------------------------------------------------------------------
// The report

struct Report {
    config: Config,
    cores: usize,
    open_files: u64,
    url: String,
    corpus_events: usize,
    corpus_repos: usize,
    corpus_acceptable: usize,
    preload: Preload,
    subscribed_repos: usize,
    live_events: usize,
    event_bytes: usize,
    expected_deliveries: u64,
    marks: Vec<Mark>,
    peak: u64,
    outcome: Outcome,
    metrics: String,
    exit: Option<i32>,
    burst_alone: Option<Burst>,
    burst_clients: Option<Burst>,
    burst_after: Option<Burst>,
}

impl Report {
    fn mark(&self, name: &str) -> &Mark {
        self.marks
            .iter()
            .find(|m| m.name == name)
            .expect("every mark is taken")
    }

    fn markdown(&self) -> String {
        let c = &self.config;
        let o = &self.outcome;
        let p = &self.preload;
        let mut s = String::new();
        s.push_str(&format!(
            "## grasp-sync serve under load ({} clients, {} s of publishing, {} cores, {})\n\n",
            thousands(c.clients as u64),
            c.secs,
            self.cores,
            self.url
        ));
        s.push_str(&format!(
            "Preload: {} testkit events in {} repositories published to the daemon over {} \
             connections in {} ({} events/s): {} accepted, {} refused ({}), {} unanswered; \
             the daemon then holds {} (the corpus' acceptable set: {}).  \n\
             Clients: each one WebSocket and one REQ `{{\"#a\": [repo]}}, {{\"#a\": [repo], \
             \"limit\": 0}}` kept open, {} per \
             repository on {} repositories; {} of them publish {} pre-signed patch event(s) a \
             second each (mean {} B), a random subscribed repository each: {} events, {} \
             deliveries owed. Open-file limit {}.\n\n",
            thousands(self.corpus_events as u64),
            self.corpus_repos,
            PRELOAD_CONNECTIONS,
            secs(p.wall),
            thousands((self.corpus_events as f64 / p.wall.as_secs_f64()) as u64),
            thousands(p.published.accepted as u64),
            p.published.refused,
            listing(&p.published.refusals, ": "),
            p.published.unanswered,
            thousands(p.held),
            thousands(self.corpus_acceptable as u64),
            c.fanout,
            self.subscribed_repos,
            c.publishers,
            c.rate,
            self.event_bytes,
            thousands(self.live_events as u64),
            thousands(self.expected_deliveries),
            self.open_files,
        ));

        let span = |a: &str, b: &str| self.mark(b).at.duration_since(self.mark(a).at);
        s.push_str("| clients | value |\n| --- | ---: |\n");
        let row = |s: &mut String, name: &str, value: String| {
            s.push_str(&format!("| {name} | {value} |\n"));
        };
        row(
            &mut s,
            "connections open",
            format!(
                "{} of {} in {}",
                thousands(o.connected as u64),
                thousands(c.clients as u64),
                secs(span("burst alone", "connected"))
            ),
        );
        row(
            &mut s,
            "connection set-up (TCP + upgrade), p50 / p99 / max",
            o.connect.cell(),
        );
        row(
            &mut s,
            "connections that took ≥ 1 s",
            thousands(o.slow_connects as u64),
        );
        let (idle, connected) = (self.mark("idle"), self.mark("connected"));
        row(
            &mut s,
            "listen-queue overflows / SYN cookies meanwhile (system-wide `TcpExt`)",
            format!(
                "{} / {}",
                connected.overflows.0.saturating_sub(idle.overflows.0),
                connected.overflows.1.saturating_sub(idle.overflows.1)
            ),
        );
        row(
            &mut s,
            "REQ → EOSE, all sent at once, p50 / p99 / max",
            o.eose.cell(),
        );
        row(
            &mut s,
            "REQs answered (EOSE) / stored events returned",
            format!(
                "{} in {} / {} ({} per REQ)",
                thousands(o.eoses as u64),
                secs(span("connected", "subscribed")),
                thousands(o.historic as u64),
                o.historic / o.eoses.max(1)
            ),
        );
        row(
            &mut s,
            "live events published / `OK true`",
            format!(
                "{} / {} ({} events/s)",
                thousands(o.published as u64),
                thousands(o.ok_true as u64),
                thousands((o.published as f64 / c.secs as f64) as u64)
            ),
        );
        row(&mut s, "publish → OK, p50 / p99 / max", o.ok.cell());
        row(
            &mut s,
            "publish → delivery at the other subscribers, p50 / p99 / max",
            o.delivery.cell(),
        );
        row(
            &mut s,
            "live deliveries owed / received (events/s)",
            format!(
                "{} / {} ({} /s)",
                thousands(o.expected),
                thousands(o.received),
                thousands((o.received as f64 / c.secs as f64) as u64)
            ),
        );
        row(
            &mut s,
            "last OK and delivery in, after the publishing ended",
            ms(span("published", "drained")) + " ms",
        );
        let cpu = |a: &str, b: &str| {
            self.mark(b)
                .daemon
                .cpu
                .saturating_sub(self.mark(a).daemon.cpu)
        };
        let live_cpu = cpu("subscribed", "drained");
        row(
            &mut s,
            "**daemon CPU per published live event** (publishing + draining)",
            format!(
                "**{:.2} ms** ({} for {} events)",
                live_cpu.as_secs_f64() * 1e3 / o.published.max(1) as f64,
                secs(live_cpu),
                thousands(o.published as u64)
            ),
        );
        let mut per_burst_event = Vec::new();
        for (name, burst, a, b) in [
            (
                "burst before the clients",
                &self.burst_alone,
                "idle",
                "burst alone",
            ),
            (
                "burst, every client subscribed (none matches)",
                &self.burst_clients,
                "drained",
                "burst",
            ),
            (
                "burst after the clients",
                &self.burst_after,
                "after",
                "burst after",
            ),
        ] {
            let Some(burst) = burst else { continue };
            let used = cpu(a, b);
            let per_event = used.as_secs_f64() * 1e3 / burst.events.max(1) as f64;
            per_burst_event.push(per_event);
            row(
                &mut s,
                &format!("{name}: events accepted / all OKs in / daemon CPU (per event)"),
                format!(
                    "{} of {} ({} refused) / {} / {} ({per_event:.3} ms)",
                    thousands(burst.published.accepted as u64),
                    thousands(burst.events as u64),
                    burst.published.refused,
                    secs(burst.wall),
                    secs(used)
                ),
            );
        }
        if let [before, with_clients, after] = per_burst_event[..] {
            let alone = (before + after) / 2.0;
            row(
                &mut s,
                "**burst CPU with clients / without** (mean of before and after)",
                format!("**{:.2}×**", with_clients / alone.max(f64::MIN_POSITIVE)),
            );
        }
        let errors = o.errors(c.clients);
        row(
            &mut s,
            "**errors** (all kinds below)",
            format!("**{errors}**"),
        );
        row(
            &mut s,
            "— connections failed",
            format!(
                "{} ({})",
                c.clients - o.connected,
                listing(&o.connect_errors, ": ")
            ),
        );
        row(
            &mut s,
            "— REQ without EOSE / CLOSED / NOTICE",
            format!(
                "{} / {} / {}",
                o.connected - o.eoses,
                o.closed.len(),
                o.notices.len()
            ),
        );
        row(
            &mut s,
            "— EVENT answered `OK false` / not answered",
            format!(
                "{} ({}) / {}",
                o.ok_false.values().sum::<usize>(),
                listing(&o.ok_false, ": "),
                o.no_ok
            ),
        );
        row(
            &mut s,
            "— live events missed / twice / unexpected",
            format!("{} / {} / {}", o.missing, o.duplicates, o.unknown),
        );
        row(
            &mut s,
            "— connections dropped",
            format!(
                "{} ({})",
                o.dropped.values().sum::<usize>(),
                listing(&o.dropped, ": ")
            ),
        );
        s.push('\n');

        // The daemon, phase by phase.
        let phases = [
            ("idle before", "start", "idle"),
            ("burst, no clients", "idle", "burst alone"),
            ("connecting", "burst alone", "connected"),
            ("REQ burst", "connected", "subscribed"),
            ("publishing", "subscribed", "published"),
            ("draining", "published", "drained"),
            ("burst, clients subscribed", "drained", "burst"),
            ("closing", "burst", "closed"),
            ("after", "closed", "after"),
            ("burst, clients gone", "after", "burst after"),
        ];
        s.push_str("| daemon (pid) | ");
        s.push_str(&phases.iter().map(|p| p.0).collect::<Vec<_>>().join(" | "));
        s.push_str(" |\n| --- |");
        s.push_str(&" ---: |".repeat(phases.len()));
        s.push('\n');
        let cells = |f: &dyn Fn(&Mark, &Mark) -> String| {
            phases
                .iter()
                .map(|(_, a, b)| f(self.mark(a), self.mark(b)))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        s.push_str(&format!(
            "| wall | {} |\n",
            cells(&|a, b| secs(b.at.duration_since(a.at)))
        ));
        s.push_str(&format!(
            "| daemon CPU (% of one core) | {} |\n",
            cells(&|a, b| {
                let cpu = b.daemon.cpu.saturating_sub(a.daemon.cpu);
                format!(
                    "{} ({})",
                    secs(cpu),
                    cpu_pct(cpu, b.at.duration_since(a.at))
                )
            })
        ));
        s.push_str(&format!(
            "| load generator CPU (this process) | {} |\n",
            cells(&|a, b| {
                let cpu = b.own.own.saturating_sub(a.own.own);
                format!(
                    "{} ({})",
                    secs(cpu),
                    cpu_pct(cpu, b.at.duration_since(a.at))
                )
            })
        ));
        s.push_str(&format!(
            "| daemon VmRSS at the end | {} |\n",
            cells(&|_, b| mib(b.daemon.rss_kib))
        ));
        s.push_str(&format!(
            "| daemon VmHWM at the end | {} |\n",
            cells(&|_, b| mib(b.daemon.hwm_kib))
        ));
        s.push_str(&format!(
            "| daemon threads / open fds at the end | {} |\n",
            cells(&|_, b| format!("{} / {}", b.daemon.threads, b.daemon.fds))
        ));
        s.push('\n');
        s.push_str(&format!(
            "Daemon peak VmRSS sampled every 250 ms while clients were connected: {}; exit \
             code after SIGTERM: {}.  \n",
            mib(self.peak),
            self.exit.map_or("none".into(), |c| c.to_string())
        ));
        let counted: Vec<String> = [
            "grasp_sync_client_connections_refused_total",
            "grasp_sync_client_refusals_total",
            "grasp_sync_client_disconnects_total",
            "grasp_sync_client_bad_frames_total",
            "grasp_sync_client_published_total",
        ]
        .iter()
        .flat_map(|prefix| nonzero_series(&self.metrics, prefix))
        .map(|(name, v)| format!("`{name}` {v}"))
        .collect();
        s.push_str(&format!(
            "Daemon's own counters (`/metrics`, preload included): {}.\n",
            if counted.is_empty() {
                "none".into()
            } else {
                counted.join(", ")
            }
        ));
        s
    }
}
