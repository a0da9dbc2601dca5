//! One test per engine lifecycle path and fallback trigger, each against one simulated
//! relay holding a small corpus: first sync and negentropy, NIP-77 refusals (NOTICE,
//! NEG-ERR, silence, `blocked: too many records`), rate limits, quick reconnects and
//! fresh starts, backoff and death, restart from checkpoints, silent result caps, and
//! garbage from a relay. Each asserts on counters, phases, the frames the relay received
//! and the store, and ends converged on the events the relay holds.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::accept::{AnnouncementPolicy, Reject};
use grasp_sync_core::engine::{
    Checkpoint, EngineConfig, Input, Method, Phase, PublishOutcome, RelayStats, Scope, Time,
};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{Layer, RelayUrl};
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, SimRelayConfig, World};
use nostr::prelude::{Event, EventId, Filter, PublicKey};
use serde_json::Value;

const URL: &str = "wss://relay-a.example.com";
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Past `full_reconcile_max` (25 h): one full reconciliation has run.
const RECONCILE: Duration = Duration::from_secs(26 * 3600);

fn spec(seed: u64, repos: usize, events_per_repo: usize) -> CorpusSpec {
    CorpusSpec {
        seed,
        repos,
        events_per_repo,
        relays: vec![URL.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    }
}

/// 3 repositories, about 180 events.
fn small() -> Corpus {
    Corpus::generate(&spec(42, 3, 60))
}

fn start_time() -> Time {
    let d = CorpusSpec::default();
    Time::from_secs(d.start + d.span_secs + 3600)
}

/// A world whose engine bootstraps from the one relay, which holds the whole corpus.
fn world_with(
    corpus: &Corpus,
    relay: SimRelayConfig,
    seed: u64,
    tune: impl FnOnce(&mut EngineConfig),
) -> (World, RelayUrl) {
    let url = RelayUrl::parse(URL).expect("relay url");
    let mut config = EngineConfig {
        bootstrap_relays: vec![url.clone()],
        seed,
        ..EngineConfig::default()
    };
    tune(&mut config);
    let mut world = World::new(config, start_time(), seed);
    let url = world.add_relay(URL, relay, &corpus.events);
    (world, url)
}

/// [`world_with`] (seed 8) whose clock starts `later` after [`start_time`].
fn world_later(
    corpus: &Corpus,
    relay: SimRelayConfig,
    later: Duration,
    tune: impl FnOnce(&mut EngineConfig),
) -> (World, RelayUrl) {
    let url = RelayUrl::parse(URL).expect("relay url");
    let mut config = EngineConfig {
        bootstrap_relays: vec![url.clone()],
        seed: 8,
        ..EngineConfig::default()
    };
    tune(&mut config);
    let mut world = World::new(config, start_time() + later, 8);
    let url = world.add_relay(URL, relay, &corpus.events);
    (world, url)
}

fn world(corpus: &Corpus, relay: SimRelayConfig) -> (World, RelayUrl) {
    world_with(corpus, relay, 7, |_| {})
}

/// A first run of `corpus` at one relay (see [`world`]) until it converged: the world,
/// the checkpoints it landed and the events it stored (what a restart starts from).
fn synced_once(corpus: &Corpus, relay: SimRelayConfig) -> (World, Vec<Checkpoint>, Vec<Event>) {
    let (mut first, url) = world(corpus, relay);
    first.run_for(HOUR);
    assert_converged(&first, &url, &corpus.acceptable);
    let checkpoints = first.checkpoints.clone();
    let events = first.store.iter().cloned().collect();
    (first, checkpoints, events)
}

/// Starts `world` as a restart would: its store holds `events`, which the engine is
/// told of, and the engine restores `checkpoints`.
fn restore(world: &mut World, events: &[Event], checkpoints: Vec<Checkpoint>) {
    for e in events {
        world.store.insert(e.clone());
    }
    world.input(Input::LocalEvents {
        events: events.to_vec(),
    });
    world.input(Input::Checkpoints { checkpoints });
}

fn relay_state(world: &World, url: &RelayUrl) -> (Phase, Method, RelayStats) {
    world
        .engine
        .relays()
        .find(|(u, ..)| *u == url)
        .map(|(_, p, m, s)| (p, m, s.clone()))
        .expect("relay known to the engine")
}

fn stats(world: &World, url: &RelayUrl) -> RelayStats {
    relay_state(world, url).2
}

fn log(world: &World, url: &RelayUrl) -> Vec<String> {
    world.hosts[url].relay.log.clone()
}

fn stored(world: &World) -> BTreeSet<EventId> {
    world.store.ids().collect()
}

fn relay_set(world: &World, url: &RelayUrl) -> BTreeSet<EventId> {
    world.hosts[url].relay.events().map(|e| e.id).collect()
}

fn deliveries(world: &World) -> u32 {
    world.deliveries.values().sum()
}

/// The store holds exactly `expected`, nothing is pending or running.
fn assert_converged(world: &World, url: &RelayUrl, expected: &BTreeSet<EventId>) {
    let got = stored(world);
    let missing = expected.difference(&got).count();
    let extra = got.difference(expected).count();
    assert!(
        missing == 0 && extra == 0,
        "store differs: {missing} missing, {extra} extra of {}; relay {:?}",
        expected.len(),
        relay_state(world, url)
    );
    assert!(world.engine.is_settled(), "not settled");
    assert_eq!(world.engine.work().pending_count(), 0, "keys pending");
    assert_eq!(world.engine.relay_jobs(url), (0, 0, 0, 0), "jobs left");
    assert_eq!(relay_state(world, url).0, Phase::Open);
}

// -------------------------------------------------------------------------------------
// Frames the relay received

/// A REQ or NEG-OPEN as the relay received it.
#[derive(Debug, Clone)]
struct Sent {
    kind: String,
    filters: Vec<Value>,
}

fn parse(frame: &str) -> Option<Sent> {
    let value: Value = serde_json::from_str(frame).ok()?;
    let arr = value.as_array()?;
    let kind = arr.first()?.as_str()?.to_owned();
    arr.get(1)?.as_str()?;
    let filters = match kind.as_str() {
        "REQ" => arr[2..].to_vec(),
        "NEG-OPEN" => vec![arr.get(2)?.clone()],
        _ => Vec::new(),
    };
    Some(Sent { kind, filters })
}

fn is_live(f: &Value) -> bool {
    f.get("limit").and_then(Value::as_u64) == Some(0)
}

fn is_fetch(f: &Value) -> bool {
    f.get("ids").is_some()
}

/// Historic job frames: NEG-OPENs, and REQs that are neither live nor `ids` fetches.
fn job_frames(frames: &[String]) -> Vec<Sent> {
    frames
        .iter()
        .filter_map(|f| parse(f))
        .filter(|s| match s.kind.as_str() {
            "NEG-OPEN" => true,
            "REQ" => s.filters.iter().all(|f| !is_live(f) && !is_fetch(f)),
            _ => false,
        })
        .collect()
}

fn since(f: &Value) -> Option<u64> {
    f.get("since").and_then(Value::as_u64)
}

/// Which layer a historic filter belongs to.
fn layer_of(f: &Value) -> &'static str {
    let kinds: Vec<u64> = f
        .get("kinds")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if f.get("authors").is_some() && kinds.contains(&30617) {
        "L1"
    } else if kinds == [30617] {
        "discovery"
    } else if f.get("#a").is_some() || f.get("#A").is_some() {
        "L2"
    } else if f.get("#e").is_some() || f.get("#E").is_some() {
        "L3"
    } else if let Some(q) = f.get("#q").and_then(Value::as_array) {
        if q.iter()
            .any(|v| v.as_str().is_some_and(|s| s.contains(':')))
        {
            "L2"
        } else {
            "L3"
        }
    } else {
        "other"
    }
}

fn to_filter(f: &Value) -> Filter {
    serde_json::from_value(f.clone()).expect("filter parses")
}

fn count_kind(frames: &[String], kind: &str) -> usize {
    let prefix = format!("[\"{kind}\"");
    frames.iter().filter(|f| f.starts_with(&prefix)).count()
}

/// Runs in steps of `step` for `total`, returning for each frame the relay received
/// (by index in its log, from the log's length at the start) the time it was first
/// seen: at most `step` after it arrived.
fn run_stepping(world: &mut World, url: &RelayUrl, total: Duration, step: Duration) -> Vec<Time> {
    let first = world.hosts[url].relay.log.len();
    let end = world.now + total;
    let mut seen = Vec::new();
    while world.now < end {
        world.run_for(step);
        let len = world.hosts[url].relay.log.len();
        while first + seen.len() < len {
            seen.push(world.now);
        }
    }
    seen
}

// -------------------------------------------------------------------------------------
// 1. NIP-77: first sync pages, later syncs reconcile

#[test]
fn nip77_first_sync_pages_then_full_reconciliation_is_cheap() {
    let corpus = small();
    let (mut world, url) = world(&corpus, SimRelayConfig::default());
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let first = stats(&world, &url);
    let first_log = log(&world, &url);
    // The repository layers started with an empty local set: they were paged.
    assert!(first.jobs_req > 0, "{first:?}");
    let l2_first = job_frames(&first_log)
        .into_iter()
        .find(|s| s.filters.iter().any(|f| f.get("#a").is_some()))
        .expect("an #a job");
    assert_eq!(l2_first.kind, "REQ", "the first #a job pages");
    assert!(deliveries(&world) as usize >= corpus.acceptable.len());

    let (before_deliveries, before_writes) = (deliveries(&world), world.writes.len());
    world.run_for(RECONCILE);
    let (_, method, second) = relay_state(&world, &url);
    let reconcile_log = log(&world, &url)[first_log.len()..].to_vec();
    let jobs = job_frames(&reconcile_log);
    let neg = jobs.iter().filter(|s| s.kind == "NEG-OPEN").count();
    let bytes_in = second.bytes_in - first.bytes_in;
    let bytes_out = second.bytes_out - first.bytes_out;
    eprintln!(
        "reconciliation: {} job filters ({neg} NEG-OPEN), {bytes_in} B in, {bytes_out} B out, {} round trips, method {method:?}",
        jobs.len(),
        second.round_trips - first.round_trips
    );
    assert!(!jobs.is_empty(), "no full reconciliation happened");
    // The daily full reconciliation covers everything, by either method.
    assert!(jobs
        .iter()
        .all(|s| s.filters.iter().all(|f| since(f).is_none())));
    assert!(second.jobs_negentropy > first.jobs_negentropy);
    assert_eq!(
        (second.jobs_negentropy - first.jobs_negentropy) as usize,
        neg,
        "every NEG-OPEN completed by negentropy"
    );
    // Only filters with nothing stored locally are paged (negentropy over an empty set
    // is a slow id download); everything else reconciles.
    for job in jobs.iter().filter(|s| s.kind == "REQ") {
        for f in &job.filters {
            let mut f = f.clone();
            if let Some(o) = f.as_object_mut() {
                o.remove("limit");
                o.remove("until");
            }
            assert!(
                world.store.matching(&to_filter(&f)).is_empty(),
                "a filter with a local set was paged: {f}"
            );
        }
    }
    assert!(
        bytes_in < 3 * 1024 * jobs.len() as u64,
        "{bytes_in} bytes in for {} filters",
        jobs.len()
    );
    assert_eq!(
        deliveries(&world),
        before_deliveries,
        "an event was downloaded again"
    );
    assert_eq!(world.writes.len(), before_writes);
    assert_converged(&world, &url, &corpus.acceptable);
}

/// A one-shot sync (the `sync` command) converges the same way without ever opening a
/// live subscription; a daemon's engine opens one at session start.
#[test]
fn one_shot_sync_opens_no_live_subscription() {
    let corpus = small();
    let live_reqs = |world: &World, url: &RelayUrl| {
        log(world, url)
            .iter()
            .filter_map(|f| parse(f))
            .filter(|s| s.kind == "REQ" && s.filters.iter().any(is_live))
            .count()
    };
    let (mut one_shot, url) = world_with(&corpus, SimRelayConfig::default(), 7, |c| {
        c.one_shot = true;
    });
    one_shot.run_for(HOUR);
    assert_converged(&one_shot, &url, &corpus.acceptable);
    assert_eq!(
        live_reqs(&one_shot, &url),
        0,
        "a one-shot sync subscribed live"
    );

    let (mut daemon, url) = world(&corpus, SimRelayConfig::default());
    daemon.run_for(HOUR);
    assert_converged(&daemon, &url, &corpus.acceptable);
    assert!(
        live_reqs(&daemon, &url) > 0,
        "the daemon did not subscribe live"
    );
    // Discoveries are coalesced as a daemon's live updates coalesce them.
    let jobs = |world: &World| job_frames(&log(world, &url)).len();
    eprintln!(
        "historic job frames: one-shot {}, daemon {}",
        jobs(&one_shot),
        jobs(&daemon)
    );
    assert!(jobs(&one_shot) <= jobs(&daemon));
}

/// A one-shot sync takes up items discovered at a relay with no job left at once, not at
/// the next live interval (nothing is sent live, and nothing is left to batch them
/// with): here the roots the repositories' jobs find, under an interval of two minutes,
/// are all synced within one.
#[test]
fn a_one_shot_sync_takes_up_discoveries_at_an_idle_relay_at_once() {
    let corpus = small();
    let (mut world, url) = world_with(&corpus, SimRelayConfig::default(), 7, |c| {
        c.one_shot = true;
        c.timing.live_update_interval = Duration::from_secs(120);
    });
    world.run_for(Duration::from_secs(60));
    assert_converged(&world, &url, &corpus.acceptable);
}

// -------------------------------------------------------------------------------------
// 2. Fallbacks when the relay does not speak NIP-77

/// Initial sync and one full reconciliation against a relay refusing NIP-77: each
/// session sends exactly one NEG-OPEN (the probe), everything is paged, the store
/// converges.
fn refused(relay: SimRelayConfig) -> (World, RelayUrl, Corpus) {
    let corpus = small();
    let (mut world, url) = world(&corpus, relay);
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let (_, method, first) = relay_state(&world, &url);
    assert_eq!(method, Method::Req);
    assert_eq!(first.jobs_negentropy, 0);
    assert_eq!(count_kind(&log(&world, &url), "NEG-OPEN"), 1, "one probe");
    world.run_for(RECONCILE);
    let (_, method, second) = relay_state(&world, &url);
    assert_eq!(method, Method::Req);
    assert_eq!(second.jobs_negentropy, 0);
    assert!(second.jobs_req > first.jobs_req, "reconciled by REQ");
    assert_eq!(
        count_kind(&log(&world, &url), "NEG-OPEN"),
        2,
        "one probe per session"
    );
    assert_converged(&world, &url, &corpus.acceptable);
    (world, url, corpus)
}

#[test]
fn fallback_on_notice_refusal() {
    refused(SimRelayConfig {
        nip77: false,
        neg_refusal_as_notice: true,
        ..SimRelayConfig::default()
    });
}

#[test]
fn fallback_on_neg_err_refusal() {
    let (world, url, _) = refused(SimRelayConfig {
        nip77: false,
        neg_refusal_as_notice: false,
        ..SimRelayConfig::default()
    });
    assert!(stats(&world, &url).bad_frames.is_empty());
}

#[test]
fn fallback_on_silence_after_the_first_frame_timeout() {
    let corpus = small();
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            neg_silent: true,
            ..SimRelayConfig::default()
        },
    );
    let step = Duration::from_millis(100);
    let times = run_stepping(&mut world, &url, 5 * MINUTE, step);
    let frames = log(&world, &url);
    let open = frames
        .iter()
        .position(|f| f.starts_with("[\"NEG-OPEN\""))
        .expect("a probe");
    let close = frames
        .iter()
        .position(|f| f.starts_with("[\"NEG-CLOSE\""))
        .expect("the probe is closed");
    let waited = times[close].since(times[open]);
    eprintln!("silent probe given up after {waited:?}");
    let timeout = EngineConfig::default().timing.neg_first_frame_timeout;
    assert!(timeout >= Duration::from_secs(10));
    assert!(waited + step >= timeout, "gave up after {waited:?}");
    assert!(waited <= timeout + 2 * SECOND, "waited {waited:?}");
    // No other reconciliation started while the probe was out (a job with nothing
    // stored pages whatever the verdict); right after it, the same filter is paged.
    let during = job_frames(&frames[open + 1..close]);
    assert!(during.iter().all(|s| s.kind == "REQ"), "{during:?}");
    let probe = parse(&frames[open]).expect("NEG-OPEN parses");
    let next = job_frames(&frames[close + 1..])
        .into_iter()
        .next()
        .expect("a job after the probe");
    assert_eq!(next.kind, "REQ");
    let mut paged = next.filters[0].clone();
    if let Some(o) = paged.as_object_mut() {
        o.remove("limit");
    }
    assert_eq!(paged, probe.filters[0], "the probe's filter is paged");
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let (_, method, s) = relay_state(&world, &url);
    assert_eq!(method, Method::Req);
    assert_eq!(s.jobs_negentropy, 0);
    assert_eq!(count_kind(&log(&world, &url), "NEG-OPEN"), 1);
}

// -------------------------------------------------------------------------------------
// 3. `blocked: too many records`

#[test]
fn blocked_too_many_records_splits_the_window() {
    let corpus = small();
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            // every NEG-OPEN that matches anything is refused as too large
            neg_blocked_over: Some(0),
            ..SimRelayConfig::default()
        },
    );
    world.run_for(HOUR);
    world.run_for(RECONCILE);
    assert_converged(&world, &url, &corpus.acceptable);
    let frames = log(&world, &url);
    let jobs = job_frames(&frames);
    let neg: Vec<&Sent> = jobs.iter().filter(|j| j.kind == "NEG-OPEN").collect();
    // Refused filters come back with halved `created_at` windows…
    let windowed = neg
        .iter()
        .filter(|j| j.filters[0].get("until").is_some())
        .count();
    assert!(windowed > 0, "no window was split");
    // Splitting ends: each refusal halves a window, down to an hour.
    assert!(neg.len() < 2_000, "{} NEG-OPENs", neg.len());
}

/// With a relay cap a little under a filter's size, the halves fit and are reconciled
/// with NIP-77: nothing is paged in the daily reconciliation.
#[test]
fn blocked_too_many_records_halves_reconcile_with_nip77() {
    let corpus = small();
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            neg_blocked_over: Some(40),
            ..SimRelayConfig::default()
        },
    );
    world.run_for(HOUR);
    let before = relay_state(&world, &url).2;
    let mark = log(&world, &url).len();
    world.run_for(RECONCILE);
    assert_converged(&world, &url, &corpus.acceptable);
    let after = relay_state(&world, &url).2;
    let jobs = job_frames(&log(&world, &url)[mark..]);
    let split = jobs
        .iter()
        .any(|j| j.kind == "NEG-OPEN" && j.filters[0].get("until").is_some());
    assert!(split, "no window was split");
    assert!(after.jobs_negentropy > before.jobs_negentropy);
    assert_eq!(
        after.events_received, before.events_received,
        "an in-sync reconciliation downloaded events"
    );
}

/// A relay refusing one filter with `blocked: too many records` still speaks NIP-77:
/// the refusal is about the filter's size, and `on_neg_err` deliberately does not mark
/// the relay Unsupported for it. Here the probe (the L1 filter, ~100 records) is over
/// the relay's cap of 75, the `#a` filter (~50 records, all stored locally) is not.
#[test]
fn too_many_records_on_the_probe_does_not_disable_nip77() {
    let corpus = Corpus::generate(&spec(5, 50, 3));
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            neg_blocked_over: Some(75),
            ..SimRelayConfig::default()
        },
    );
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let mark = log(&world, &url).len();
    let before = stats(&world, &url);
    world.run_for(RECONCILE);
    assert_converged(&world, &url, &corpus.acceptable);
    let after = stats(&world, &url);
    let frames = log(&world, &url)[mark..].to_vec();
    let jobs = job_frames(&frames);
    for j in &jobs {
        eprintln!("{} {}", j.kind, layer_of(&j.filters[0]));
    }
    let probe = jobs.first().expect("a reconciliation");
    assert_eq!(probe.kind, "NEG-OPEN");
    assert_eq!(layer_of(&probe.filters[0]), "L1");
    let a_filter = jobs
        .iter()
        .find(|j| j.filters[0].get("#a").is_some())
        .expect("an #a job");
    assert_eq!(
        a_filter.kind, "NEG-OPEN",
        "the #a filter (under the cap, stored locally) should reconcile by NIP-77"
    );
    assert!(after.jobs_negentropy > before.jobs_negentropy);
}

// -------------------------------------------------------------------------------------
// 4. `rate-limited:`

#[test]
fn rate_limited_jobs_are_retried_after_the_cooldown() {
    let corpus = small();
    let refused = 3;
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            rate_limited_reqs: refused,
            ..SimRelayConfig::default()
        },
    );
    let step = Duration::from_millis(100);
    let times = run_stepping(&mut world, &url, 10 * MINUTE, step);
    let frames = log(&world, &url);
    let cooldown = EngineConfig::default().timing.rate_limit_cooldown;
    let reqs: Vec<usize> = (0..frames.len())
        .filter(|i| frames[*i].starts_with("[\"REQ\""))
        .collect();
    assert!(reqs.len() > refused);
    let first_refused = times[reqs[0]];
    let last_refused = reqs[refused - 1];
    // Every subscription after the refusals waited for the cooldown.
    let retry = (last_refused + 1..frames.len())
        .find(|i| frames[*i].starts_with("[\"REQ\"") || frames[*i].starts_with("[\"NEG-OPEN\""))
        .expect("a retry");
    let waited = times[retry].since(first_refused);
    eprintln!("first subscription after {refused} refusals: {waited:?} later");
    assert!(waited + step >= cooldown, "retried after {waited:?}");
    // The refused job subscriptions were sent again.
    let refused_jobs: Vec<Value> = reqs[..refused]
        .iter()
        .filter_map(|i| parse(&frames[*i]))
        .flat_map(|s| s.filters)
        .filter(|f| !is_live(f))
        .collect();
    assert!(!refused_jobs.is_empty(), "a job was refused");
    for f in &refused_jobs {
        let again = frames[last_refused + 1..]
            .iter()
            .filter_map(|x| parse(x))
            .any(|s| s.filters.contains(f));
        assert!(again, "never retried: {f}");
    }
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    assert_eq!(world.engine.relay_jobs(&url), (0, 0, 0, 0));
}

// -------------------------------------------------------------------------------------
// 5, 6. Reconnections

/// New events for every layer of repository 0, created at `at`: a new state (L1), a new
/// issue (L2, and a new root), a comment on an existing root (L3).
fn new_events(corpus: &Corpus, at: u64) -> Vec<Event> {
    let spec = spec(42, 3, 60);
    let repo = &corpus.repos[0];
    let owner = (0..spec.repos as u64 * 2)
        .map(|i| keys(spec.seed.wrapping_mul(1_000_003).wrapping_add(i)))
        .find(|k| k.public_key() == repo.pubkey)
        .expect("owner keys");
    let someone = keys(999);
    let coord = repo.to_string();
    let root = corpus
        .events
        .iter()
        .zip(&corpus.repo_of)
        .find(|(e, r)| **r == 0 && e.kind.as_u16() == 1621)
        .map(|(e, _)| e.clone())
        .expect("an issue in repo 0");
    let t = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let root_hex = root.id.to_hex();
    vec![
        sign(
            &owner,
            30618,
            at,
            vec![
                t(&["d", &repo.identifier]),
                t(&["refs/heads/main", &"cd".repeat(20)]),
            ],
            "",
        ),
        sign(
            &someone,
            1621,
            at + 1,
            vec![t(&["a", &coord]), t(&["subject", "new issue"])],
            "a new issue",
        ),
        sign(
            &someone,
            1111,
            at + 2,
            vec![
                t(&["E", &root_hex]),
                t(&["K", "1621"]),
                t(&["e", &root_hex]),
                t(&["k", "1621"]),
            ],
            "a new comment",
        ),
    ]
}

#[test]
fn quick_reconnect_catches_up_every_layer_from_the_disconnection() {
    let corpus = small();
    let (mut world, url) = world(&corpus, SimRelayConfig::default());
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let mark = log(&world, &url).len();
    let checkpoints = world.checkpoints.len();
    let cut_at = world.now;
    world.set_up(&url, false);
    world.run_for(SECOND);
    let fresh = new_events(&corpus, cut_at.timestamp().as_secs() + 5);
    for e in &fresh {
        world.publish(&url, e.clone());
    }
    world.run_for(2 * MINUTE);
    world.set_up(&url, true);
    world.run_for(30 * MINUTE);
    let expected = relay_set(&world, &url);
    for e in &fresh {
        assert!(expected.contains(&e.id));
    }
    assert_converged(&world, &url, &expected);

    let margin = EngineConfig::default().timing.since_margin;
    let want = (cut_at - margin).timestamp().as_secs();
    let frames = log(&world, &url)[mark..].to_vec();
    let jobs = job_frames(&frames);
    let new_issue = fresh[1].id.to_hex();
    let mut caught_up: BTreeSet<&str> = BTreeSet::new();
    for job in &jobs {
        for f in &job.filters {
            let layer = layer_of(f);
            eprintln!("{} {layer} since {:?}", job.kind, since(f));
            match (layer, since(f)) {
                ("discovery", s) => assert!(
                    (job.kind == "NEG-OPEN") == s.is_none(),
                    "discovery is reconciled in full or paged from its checkpoint: {} {f}",
                    job.kind
                ),
                (_, Some(s)) => {
                    assert_eq!(s, want, "catch-up since for {f}");
                    caught_up.insert(layer);
                }
                // Only the root discovered while catching up is synced from scratch.
                ("L3", None) => {
                    let values: Vec<&str> = ["#e", "#E", "#q"]
                        .iter()
                        .filter_map(|k| f.get(*k).and_then(Value::as_array))
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    assert_eq!(values, vec![new_issue.as_str()], "{f}");
                }
                (_, None) => panic!("a full filter after a quick reconnect: {f}"),
            }
        }
    }
    assert_eq!(
        caught_up,
        ["L1", "L2", "L3"].into_iter().collect(),
        "every layer caught up"
    );
    let layers: BTreeSet<Layer> = world.checkpoints[checkpoints..]
        .iter()
        .filter_map(|c| match &c.scope {
            Scope::Item { layer, .. } => Some(*layer),
            Scope::Discovery => None,
        })
        .collect();
    assert_eq!(layers.len(), 3, "checkpoints of every layer: {layers:?}");
}

#[test]
fn long_disconnect_is_a_fresh_start_with_full_filters() {
    let corpus = small();
    let (mut world, url) = world(&corpus, SimRelayConfig::default());
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let mark = log(&world, &url).len();
    let cut_at = world.now;
    world.set_up(&url, false);
    world.run_for(SECOND);
    let mut fresh = new_events(&corpus, cut_at.timestamp().as_secs() + 5);
    // Published during the outage but created five days ago: only a full filter (no
    // `since`) finds it.
    let backdated = new_events(&corpus, cut_at.timestamp().as_secs() - 5 * 86_400)
        .pop()
        .expect("a comment");
    fresh.push(backdated.clone());
    for e in &fresh {
        world.publish(&url, e.clone());
    }
    world.run_for(20 * MINUTE);
    world.set_up(&url, true);
    world.run_for(HOUR);
    let expected = relay_set(&world, &url);
    assert!(expected.contains(&backdated.id));
    assert_converged(&world, &url, &expected);
    let frames = log(&world, &url)[mark..].to_vec();
    let jobs = job_frames(&frames);
    let mut layers = BTreeSet::new();
    for job in &jobs {
        for f in &job.filters {
            let layer = layer_of(f);
            if layer != "discovery" {
                if job.kind == "NEG-OPEN" {
                    assert_eq!(since(f), None, "fresh start reconciles in full: {f}");
                }
                layers.insert(layer);
            }
        }
    }
    assert_eq!(layers, ["L1", "L2", "L3"].into_iter().collect());
    // NIP-77 is probed again on a fresh start.
    assert!(jobs.iter().any(|j| j.kind == "NEG-OPEN"));
    assert!(stats(&world, &url).failures > 0);
}

// -------------------------------------------------------------------------------------
// 7. Backoff and death

#[test]
fn backoff_grows_then_dead_after_a_day_then_retried_a_day_later() {
    let corpus = small();
    let (mut world, url) = world(&corpus, SimRelayConfig::default());
    world.set_up(&url, false);
    let timing = EngineConfig::default().timing;
    let begin = world.now;
    // (attempt time, failures after it)
    let mut attempts: Vec<(Time, u64)> = Vec::new();
    let dead_until = loop {
        let (phase, _, s) = relay_state(&world, &url);
        match phase {
            Phase::Dead { until } => break until,
            Phase::Backoff { until } => {
                world.run_until(until + Duration::from_millis(100));
                attempts.push((until, stats(&world, &url).failures));
            }
            _ => world.run_for(Duration::from_millis(100)),
        }
        assert!(
            world.now.since(begin) < 26 * HOUR,
            "never dead: {phase:?} {s:?}"
        );
    };
    let died_at = world.now;
    // One failure per attempt.
    for w in attempts.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1);
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].0.since(w[0].0)).collect();
    eprintln!(
        "{} attempts; first gaps {:?}",
        attempts.len(),
        &gaps[..gaps.len().min(12)]
    );
    // Doubling with ±50 % jitter: two steps on, a gap is always longer.
    for k in 0..7 {
        assert!(gaps[k + 2] > gaps[k], "gaps {:?}", &gaps[..10]);
    }
    let cap = timing.backoff_cap + timing.backoff_cap / 2 + timing.connect_timeout;
    assert!(gaps.iter().all(|g| *g <= cap));
    let late: Duration = gaps[gaps.len() - 10..].iter().sum::<Duration>() / 10;
    assert!(late >= timing.backoff_cap / 2, "late gaps average {late:?}");
    // Dead once failing for a day, retried a day later.
    assert!(died_at.since(begin) >= timing.dead_after);
    assert!(died_at.since(begin) <= timing.dead_after + cap);
    let retry_in = dead_until.since(died_at);
    assert!(retry_in <= timing.dead_retry && retry_in + SECOND >= timing.dead_retry);
    let failures = stats(&world, &url).failures;
    world.run_for(23 * HOUR);
    world.set_up(&url, true);
    world.run_until(dead_until - SECOND);
    assert!(matches!(relay_state(&world, &url).0, Phase::Dead { .. }));
    assert_eq!(stats(&world, &url).failures, failures, "retried while dead");
    assert!(world.store.is_empty());
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
}

// -------------------------------------------------------------------------------------
// 8. Restart from checkpoints

#[test]
fn restart_from_checkpoints_does_not_download_again() {
    let corpus = small();
    let (first, checkpoints, events) = synced_once(&corpus, SimRelayConfig::default());
    assert!(!checkpoints.is_empty());

    // Restarted two hours later: the checkpoints are older than the quick-reconnect
    // window, so the restart reconciles every filter.
    let (mut second, url2) = world_later(&corpus, SimRelayConfig::default(), 2 * HOUR, |_| {});
    restore(&mut second, &events, checkpoints.clone());
    second.run_for(HOUR);
    assert_converged(&second, &url2, &corpus.acceptable);
    let (a, b) = (deliveries(&first), deliveries(&second));
    eprintln!(
        "deliveries: first run {a}, after restart {b}; writes {}; {:?}",
        second.writes.len(),
        stats(&second, &url2)
    );
    assert!(b * 20 <= a, "restart downloaded {b} events (first run {a})");
    assert!(second.writes.is_empty(), "events written again");
    assert!(stats(&second, &url2).jobs_negentropy > 0);
}

/// With a restart catch-up window (the browser's setting), a restart while the
/// checkpoints are younger than it (a page reload) is a quick reconnect: every confirmed filter is caught up with one REQ from
/// the oldest checkpoint less the margin, no local set is read, nothing is reconciled.
#[test]
fn restart_within_the_window_catches_up_from_the_checkpoints() {
    let corpus = small();
    let (first, checkpoints, events) = synced_once(&corpus, SimRelayConfig::default());
    let oldest = checkpoints
        .iter()
        .map(|c| c.at.as_secs())
        .min()
        .expect("checkpoints");

    let (mut second, url2) = world_later(&corpus, SimRelayConfig::default(), 10 * MINUTE, |c| {
        c.timing.restart_catch_up_window = c.timing.quick_reconnect_window;
    });
    restore(&mut second, &events, checkpoints);
    second.run_for(HOUR);
    assert_converged(&second, &url2, &corpus.acceptable);
    let s = stats(&second, &url2);
    assert_eq!(
        s.jobs_negentropy, 0,
        "reconciled after a quick restart: {s:?}"
    );
    let jobs = job_frames(&log(&second, &url2));
    assert!(!jobs.is_empty());
    let margin = EngineConfig::default().timing.since_margin.as_secs();
    for j in &jobs {
        assert_eq!(j.kind, "REQ");
        for f in &j.filters {
            // Discovery is paged from its own checkpoint; every layer from the oldest.
            let since = since(f).unwrap_or(0);
            assert!(since + margin >= oldest, "paged from {since}: {f}");
        }
    }
    let (a, b) = (deliveries(&first), deliveries(&second));
    eprintln!("deliveries: first run {a}, after a quick restart {b}");
    assert!(b * 20 <= a, "restart downloaded {b} events (first run {a})");
    assert!(second.writes.is_empty(), "events written again");
}

/// A restart catch-up of `corpus` (synced once ten minutes earlier) that finds five new
/// issues of its first repository, arriving 5 ms apart and verified 300 ms after the
/// session's first live REQ; run to convergence. The world, the relay and the issues.
fn catch_up_with_new_issues(corpus: &Corpus) -> (World, RelayUrl, Vec<Event>) {
    let (mut second, url, issues) = catching_up_with_new_issues(corpus, |world| {
        world.faults.frame_gap_ms = 5;
        world.verify_latency = Duration::from_millis(300);
    });
    second.run_for(HOUR);
    let mut expected = corpus.acceptable.clone();
    expected.extend(issues.iter().map(|e| e.id));
    assert_converged(&second, &url, &expected);
    (second, url, issues)
}

/// The catch-up of [`catch_up_with_new_issues`], restored but not run, with the world's
/// latencies set by `tune`.
fn catching_up_with_new_issues(
    corpus: &Corpus,
    tune: impl FnOnce(&mut World),
) -> (World, RelayUrl, Vec<Event>) {
    let (_, checkpoints, events) = synced_once(corpus, SimRelayConfig::default());
    let coord = corpus.repos[0].to_string();
    let at = (start_time() + 5 * MINUTE).timestamp().as_secs();
    let issues: Vec<Event> = (0..5u64)
        .map(|n| {
            let tags = vec![
                vec!["a".to_owned(), coord.clone()],
                vec!["subject".to_owned(), format!("new issue {n}")],
            ];
            sign(&keys(500 + n), 1621, at + n, tags, "a new issue")
        })
        .collect();
    let (mut second, url) = world_later(corpus, SimRelayConfig::default(), 10 * MINUTE, |c| {
        c.timing.restart_catch_up_window = c.timing.quick_reconnect_window;
        c.timing.live_update_interval = Duration::from_millis(200);
    });
    for issue in &issues {
        second.publish(&url, issue.clone());
    }
    tune(&mut second);
    restore(&mut second, &events, checkpoints);
    (second, url, issues)
}

/// The root ids each live REQ sent to `url` names in `#e` (one set per REQ, in order).
fn live_roots(world: &World, url: &RelayUrl) -> Vec<BTreeSet<String>> {
    log(world, url)
        .iter()
        .filter_map(|f| parse(f))
        .filter(|s| s.kind == "REQ" && s.filters.iter().any(is_live))
        .map(|s| {
            s.filters
                .iter()
                .filter_map(|f| f.get("#e").and_then(Value::as_array))
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// New roots found by one catch-up join the live subscriptions in one update, even when
/// they are verified one by one after the live interval has passed: while events are
/// still being verified, the update waits for them (at most a quarter interval after
/// the first new root).
#[test]
fn new_roots_of_one_catch_up_join_the_live_subscriptions_together() {
    let (world, url, issues) = catch_up_with_new_issues(&small());
    let new: BTreeSet<String> = issues.iter().map(|e| e.id.to_hex()).collect();
    let named: Vec<BTreeSet<String>> = live_roots(&world, &url)
        .into_iter()
        .map(|roots| roots.intersection(&new).cloned().collect::<BTreeSet<_>>())
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(
        named.first(),
        Some(&new),
        "the first live update naming new roots names them all: {named:?}"
    );
}

/// New roots go live as soon as they are verified: the writes of the events that
/// brought them, however slow, do not hold the update (only verifications still pending
/// may, for they may name more new roots).
#[test]
fn new_roots_go_live_once_verified_however_slow_their_writes() {
    let (mut world, url, issues) = catching_up_with_new_issues(&small(), |world| {
        world.store_latency = Duration::from_millis(300);
    });
    let new: BTreeSet<String> = issues.iter().map(|e| e.id.to_hex()).collect();
    let start = world.now;
    let (mut window_at, mut live_at) = (None, None);
    while live_at.is_none() && world.now < start + Duration::from_secs(10) {
        world.run_until(world.now + Duration::from_millis(1));
        let frames = log(&world, &url);
        let window = |s: &Sent| {
            s.kind == "REQ"
                && s.filters
                    .iter()
                    .any(|f| !is_live(f) && f.get("#a").is_some())
        };
        if window_at.is_none() && frames.iter().filter_map(|f| parse(f)).any(|s| window(&s)) {
            window_at = Some(world.now);
        }
        if live_roots(&world, &url)
            .iter()
            .any(|roots| !roots.is_disjoint(&new))
        {
            live_at = Some(world.now);
        }
    }
    let (Some(window_at), Some(live_at)) = (window_at, live_at) else {
        panic!("no window ({window_at:?}) or no live REQ naming the new roots ({live_at:?})");
    };
    // The window's answer comes back, and the live REQ goes out: two round trips of
    // 20 ms each way, and no wait for the writes (300 ms) or the hold (50 ms).
    let took = live_at.since(window_at);
    assert!(
        took <= Duration::from_millis(90),
        "the new roots went live {took:?} after their window"
    );
}

/// After a session's large live set (here over a hundred roots), new roots go out in a
/// live REQ of their own: the set is sent once, not again with each update.
#[test]
fn new_roots_after_a_large_live_set_go_out_on_their_own() {
    let corpus = Corpus::generate(&spec(43, 3, 600));
    let (world, url, issues) = catch_up_with_new_issues(&corpus);
    let new: BTreeSet<String> = issues.iter().map(|e| e.id.to_hex()).collect();
    let live = live_roots(&world, &url);
    let Some(first_update) = live.iter().position(|roots| !roots.is_disjoint(&new)) else {
        panic!("no live REQ names the new roots");
    };
    let (session, updates) = live.split_at(first_update);
    let old: usize = session.iter().map(BTreeSet::len).sum();
    assert!(old > 100, "a small live set: {old} roots");
    assert!(
        updates.iter().all(|roots| roots.is_subset(&new)),
        "an update named old roots again: {:?}",
        updates.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
    assert_eq!(updates.first(), Some(&new));
}

/// Discovery narrowed to named repositories (the browser, a one-shot `sync`): a
/// repository added to the list since the last sync has its announcement found at the
/// bootstrap relay on the next start, although that announcement is older than the
/// discovery checkpoint — in a restart catch-up at a NIP-77 relay, and in a fresh start
/// at a REQ-only relay (which pages discovery from its checkpoint).
#[test]
fn a_repository_tracked_since_the_last_sync_is_discovered_on_restart() {
    let corpus = small();
    let scope = |n: usize| DiscoveryScope::Repos(corpus.repos[..n].to_vec());
    let wanted = |n: usize| -> BTreeSet<EventId> {
        corpus
            .events
            .iter()
            .zip(&corpus.repo_of)
            .filter(|(e, repo)| **repo < n && corpus.acceptable.contains(&e.id))
            .map(|(e, _)| e.id)
            .collect()
    };
    let req_only = SimRelayConfig {
        nip77: false,
        ..SimRelayConfig::default()
    };
    for (relay, window) in [(SimRelayConfig::default(), true), (req_only, false)] {
        let (mut first, _) = world_with(&corpus, relay.clone(), 7, |c| c.discovery = scope(1));
        first.run_for(HOUR);
        assert!(
            wanted(1).is_subset(&stored(&first)),
            "first sync, nip77 {}",
            relay.nip77
        );
        let events: Vec<Event> = first.store.iter().cloned().collect();
        let (mut second, _) = world_later(&corpus, relay.clone(), 10 * MINUTE, |c| {
            c.discovery = scope(2);
            if window {
                c.timing.restart_catch_up_window = c.timing.quick_reconnect_window;
            }
        });
        restore(&mut second, &events, first.checkpoints.clone());
        second.run_for(HOUR);
        let missing = wanted(2).difference(&stored(&second)).count();
        assert_eq!(
            missing, 0,
            "nip77 {}, catch-up window {window}: {missing} of the two repositories' events missing",
            relay.nip77
        );
    }
}

/// Ids seen and not stored (here: announcements by authors outside the allow-list) are
/// persisted and restored: the reconciliation after a restart asks for none of them.
#[test]
fn restart_with_remembered_ids_downloads_nothing() {
    let mut corpus = Corpus::generate(&spec(7, 10, 30));
    let authors: BTreeSet<PublicKey> = corpus.events.iter().map(|e| e.pubkey).collect();
    let at = CorpusSpec::default().start + 100;
    for i in 0..20 {
        let d = format!("stranger-{i}");
        let tags = vec![
            vec!["d".to_owned(), d],
            vec!["relays".to_owned(), URL.to_owned()],
        ];
        corpus
            .events
            .push(sign(&keys(5_000 + i), 30617, at + i, tags, ""));
    }
    let allow = |c: &mut EngineConfig| {
        c.accept.announcements = AnnouncementPolicy::AllowList(authors.clone());
    };
    let (mut first, url) = world_with(&corpus, SimRelayConfig::default(), 7, allow);
    first.run_for(HOUR);
    assert_converged(&first, &url, &corpus.acceptable);
    assert_eq!(first.remembered.len(), 20, "the strangers' announcements");
    let events: Vec<Event> = first.store.iter().cloned().collect();
    // Two hours later: a full reconciliation (a quick restart would not ask again).
    let restart = |remembered: Vec<SeenEntry>| {
        let (mut second, url2) = world_later(&corpus, SimRelayConfig::default(), 2 * HOUR, allow);
        restore(&mut second, &events, first.checkpoints.clone());
        second.input(Input::Remembered {
            entries: remembered,
        });
        second.run_for(HOUR);
        assert_converged(&second, &url2, &corpus.acceptable);
        deliveries(&second)
    };
    let forgetful = restart(Vec::new());
    let remembering = restart(first.remembered.clone());
    eprintln!("deliveries after restart: {forgetful} without remembered ids, {remembering} with");
    assert_eq!(
        forgetful, 20,
        "without remembered ids the restart asks again"
    );
    assert_eq!(remembering, 0, "with remembered ids nothing is downloaded");
}

/// A first sync of [`small`], then a restart two hours later from what it stored and
/// checkpointed, at a relay that gained two of each of [`new_events`] meanwhile (a job
/// waits for several of them): the restart reconciles (NIP-77) and fetches them.
struct Restart {
    corpus: Corpus,
    /// The first sync's checkpoints.
    checkpoints: Vec<Checkpoint>,
    /// What the first sync stored.
    events: Vec<Event>,
    gained: Vec<Event>,
}

impl Restart {
    fn new() -> Self {
        let corpus = small();
        let (mut first, _) = world(&corpus, SimRelayConfig::default());
        first.run_for(HOUR);
        let at = first.now.timestamp().as_secs() + 5;
        let mut gained = new_events(&corpus, at);
        gained.extend(new_events(&corpus, at + 10));
        Self {
            checkpoints: first.checkpoints.clone(),
            events: first.store.iter().cloned().collect(),
            corpus,
            gained,
        }
    }

    /// A world `later` after the first sync's start whose relay (with or without NIP-77)
    /// holds the corpus and what it gained.
    fn world(&self, nip77: bool, later: Duration) -> (World, RelayUrl) {
        let relay = SimRelayConfig {
            nip77,
            ..SimRelayConfig::default()
        };
        let (mut world, url) = world_later(&self.corpus, relay, later, |_| {});
        if let Some(host) = world.hosts.get_mut(&url) {
            for e in &self.gained {
                host.relay.insert(e.clone());
            }
        }
        (world, url)
    }

    /// The restart, not yet run.
    fn second(&self) -> (World, RelayUrl) {
        let (mut world, url) = self.world(true, 2 * HOUR);
        restore(&mut world, &self.events, self.checkpoints.clone());
        (world, url)
    }
}

/// A crash at any moment of a sync loses nothing its checkpoints claim. In a [`Restart`]
/// the checkpoints of the jobs that fetched land in the very write that stores the last
/// of what they fetched. What is durable after each write (the events, and the
/// checkpoints landed so far) is then a sound start for a third run against the relay
/// without NIP-77, which pages only from its checkpoints: a checkpoint that landed
/// before its events would lose them for good.
#[test]
fn a_crash_at_any_moment_of_a_sync_loses_nothing() {
    let restart = Restart::new();
    let (mut second, url) = restart.second();
    let expected = relay_set(&second, &url);
    second.crash_points = Some(Vec::new());
    second.run_for(HOUR);
    assert_converged(&second, &url, &expected);
    let crashes = second.crash_points.take().unwrap_or_default();
    let (carried, all) = (second.carried, second.checkpoints.len());
    eprintln!(
        "{carried} of {all} checkpoints landed with their events; {} crash points",
        crashes.len()
    );
    assert!(
        carried > 0,
        "no checkpoint landed with its events ({all} after)"
    );

    for crash in crashes {
        let (mut third, url3) = restart.world(false, 4 * HOUR);
        let checkpoints = restart.checkpoints.iter().chain(&crash.checkpoints);
        restore(&mut third, &crash.events, checkpoints.cloned().collect());
        third.run_for(HOUR);
        assert_converged(&third, &url3, &expected);
    }
}

/// A store write that fails lands neither its events nor the checkpoints it carried:
/// the jobs it would have completed run again, and their checkpoints land when they do
/// — the same ones as in a run without failures, and a restart from them downloads
/// nothing again.
#[test]
fn a_failed_write_lands_nothing_and_its_checkpoints_come_later() {
    let restart = Restart::new();
    let scopes = |world: &World| -> BTreeSet<String> {
        let scope = |c: &Checkpoint| format!("{} {:?}", c.relay, c.scope);
        world.checkpoints.iter().map(scope).collect()
    };
    let (mut clean, _) = restart.second();
    clean.run_for(HOUR);
    let (mut second, url) = restart.second();
    second.failing_carriers = 1;
    second.run_for(HOUR);
    assert_eq!(second.failing_carriers, 0, "a write failed");
    assert_eq!(stats(&second, &url).abandoned_jobs, 0);
    let expected = relay_set(&second, &url);
    assert_converged(&second, &url, &expected);
    assert_eq!(
        scopes(&second),
        scopes(&clean),
        "the checkpoints of a run without failures"
    );

    let (mut third, url3) = restart.world(true, 4 * HOUR);
    let events: Vec<Event> = second.store.iter().cloned().collect();
    let checkpoints = restart.checkpoints.iter().chain(&second.checkpoints);
    restore(&mut third, &events, checkpoints.cloned().collect());
    third.run_for(HOUR);
    assert_converged(&third, &url3, &expected);
    assert!(third.writes.is_empty(), "events written again");
}

/// A crash can leave a deletion stored and the event it deletes still held (a store
/// need not write both in one transaction): the restart applies stored deletions again,
/// so the deleted event goes.
#[test]
fn a_deleted_event_left_by_a_crash_is_removed_at_the_restart() {
    let restart = Restart::new();
    let deleted: Vec<(Event, Event)> = restart
        .events
        .iter()
        .filter(|d| d.kind.as_u16() == 5)
        .flat_map(|d| {
            restart
                .corpus
                .events
                .iter()
                .filter(move |e| {
                    e.pubkey == d.pubkey
                        && d.tags.iter().any(|t| {
                            let t = t.as_slice();
                            t.first().map(String::as_str) == Some("e")
                                && t.get(1) == Some(&e.id.to_hex())
                        })
                })
                .map(move |e| (d.clone(), e.clone()))
        })
        .collect();
    let (deletion, victim) = deleted
        .first()
        .cloned()
        .expect("the corpus deletes an event by id");
    let held: BTreeSet<EventId> = restart.events.iter().map(|e| e.id).collect();
    assert!(
        !held.contains(&victim.id) && held.contains(&deletion.id),
        "the first sync applied it"
    );

    let (mut world, url) = restart.world(true, 4 * HOUR);
    let mut events = restart.events.clone();
    events.push(victim.clone());
    restore(&mut world, &events, restart.checkpoints.clone());
    world.run_for(HOUR);
    let after = stored(&world);
    assert!(!after.contains(&victim.id), "the deleted event is gone");
    assert!(after.contains(&deletion.id));
    assert_converged(&world, &url, &relay_set(&world, &url));
}

/// A store write that fails is reported with the store's reason until a write succeeds
/// (what the browser module shows when IndexedDB's quota is full).
#[test]
fn a_failed_write_is_reported_until_one_succeeds() {
    let restart = Restart::new();
    let (mut world, url) = restart.second();
    world.failing_carriers = 1;
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while world.failing_carriers > 0 && waited < HOUR {
        world.run_for(step);
        waited += step;
    }
    assert_eq!(world.failing_carriers, 0, "a write failed");
    assert_eq!(
        world.engine.stats().store_error.as_deref(),
        Some("simulated write failure")
    );
    world.run_for(HOUR);
    assert_converged(&world, &url, &relay_set(&world, &url));
    assert_eq!(
        world.engine.stats().store_error,
        None,
        "cleared by a later write"
    );
}

/// A [`Restart`] whose connection drops as soon as it opened, before any of its jobs
/// completed, then comes back at once: the quick reconnect still covers what happened
/// since the checkpoints (events the relay gained while the engine was not running),
/// not only since the drop, planned as the restart was — reconciled in full (a daemon)
/// or caught up from the checkpoints (the browser's restart window), with or without
/// NIP-77.
#[test]
fn a_reconnect_before_the_restart_settled_still_covers_what_the_restart_was_to_fetch() {
    let restart = Restart::new();
    for (nip77, window) in [(true, false), (true, true), (false, false), (false, true)] {
        let relay = SimRelayConfig {
            nip77,
            ..SimRelayConfig::default()
        };
        let (mut world, url) = world_later(&restart.corpus, relay, 2 * HOUR, |c| {
            if window {
                c.timing.restart_catch_up_window = 3 * HOUR;
            }
        });
        if let Some(host) = world.hosts.get_mut(&url) {
            for e in &restart.gained {
                host.relay.insert(e.clone());
            }
        }
        restore(&mut world, &restart.events, restart.checkpoints.clone());
        let step = Duration::from_millis(1);
        let give_up = world.now + MINUTE;
        while relay_state(&world, &url).0 != Phase::Open && world.now < give_up {
            world.run_for(step);
        }
        assert_eq!(relay_state(&world, &url).0, Phase::Open);
        world.cut(&url);
        let mark = log(&world, &url).len();
        world.run_for(30 * MINUTE);
        // Planned as the restart was: a daemon (no restart window) reconciles the
        // repositories' filters in full, the browser catches up from the checkpoints.
        let jobs = job_frames(&log(&world, &url)[mark..]);
        let reconciled_in_full = jobs.iter().any(|j| {
            j.kind == "NEG-OPEN"
                && j.filters
                    .iter()
                    .all(|f| layer_of(f) == "L2" && since(f).is_none())
        });
        assert_eq!(
            reconciled_in_full,
            nip77 && !window,
            "NIP-77 {nip77}, restart window {window}"
        );
        let (got, held) = (stored(&world), relay_set(&world, &url));
        // (The older of two state events of one repository was replaced at the relay.)
        let missing = restart
            .gained
            .iter()
            .filter(|e| held.contains(&e.id) && !got.contains(&e.id))
            .count();
        assert_eq!(
            missing,
            0,
            "NIP-77 {nip77}, restart window {window}: {missing} of the events gained before \
             the restart missing after the reconnect; {:?}",
            relay_state(&world, &url)
        );
        assert_converged(&world, &url, &relay_set(&world, &url));
    }
}

/// A [`Restart`] against a relay that fails every historic query for a while: its jobs
/// are given up on (a gap), planned again after `abandoned_retry` (doubling per round),
/// and the store converges with no gap left, without a reconnection.
#[test]
fn jobs_given_up_on_are_planned_again_later() {
    let restart = Restart::new();
    let relay = SimRelayConfig {
        nip77: false,
        failing_reqs: 40,
        ..SimRelayConfig::default()
    };
    let (mut world, url) = world_later(&restart.corpus, relay, 2 * HOUR, |_| {});
    if let Some(host) = world.hosts.get_mut(&url) {
        for e in &restart.gained {
            host.relay.insert(e.clone());
        }
    }
    restore(&mut world, &restart.events, restart.checkpoints.clone());
    world.run_for(2 * MINUTE);
    let s = stats(&world, &url);
    assert!(
        s.abandoned_jobs > 0 && s.has_gaps(),
        "nothing given up on: {s:?}"
    );
    world.run_for(2 * HOUR);
    assert_converged(&world, &url, &relay_set(&world, &url));
    let s = stats(&world, &url);
    assert!(!s.has_gaps(), "{s:?}");
    assert_eq!(s.failures, 0, "it reconnected: {s:?}");
}

/// A restart against a relay without NIP-77 pages only from the checkpoints (minus
/// the margin), not from the beginning: a restart is not a re-download.
#[test]
fn restart_against_a_req_only_relay_pages_from_the_checkpoints() {
    let corpus = small();
    let req_only = SimRelayConfig {
        nip77: false,
        ..SimRelayConfig::default()
    };
    let (first, checkpoints, events) = synced_once(&corpus, req_only.clone());

    let (mut second, url2) = world_with(&corpus, req_only, 8, |_| {});
    restore(&mut second, &events, checkpoints);
    second.run_for(HOUR);
    assert_converged(&second, &url2, &corpus.acceptable);
    let jobs = job_frames(&log(&second, &url2));
    let paged: Vec<&Sent> = jobs.iter().filter(|j| j.kind == "REQ").collect();
    assert!(!paged.is_empty());
    for j in &paged {
        for f in &j.filters {
            if since(f).is_none() {
                eprintln!("no since: {} {f}", layer_of(f));
            }
        }
    }
    assert!(
        paged
            .iter()
            .all(|j| j.filters.iter().all(|f| since(f).is_some())),
        "a restart paged from the beginning"
    );
    let (a, b) = (deliveries(&first), deliveries(&second));
    eprintln!("deliveries: first run {a}, after restart {b}");
    assert!(b * 5 <= a, "restart downloaded {b} events (first run {a})");
    assert!(second.writes.is_empty(), "events written again");
}

// -------------------------------------------------------------------------------------
// 9. Silent result cap

#[test]
fn silent_result_cap_is_paged_through() {
    let corpus = Corpus::generate(&spec(9, 3, 150));
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            nip77: false,
            max_results: 100,
            ..SimRelayConfig::default()
        },
    );
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let frames = log(&world, &url);
    let jobs: Vec<Sent> = job_frames(&frames)
        .into_iter()
        .filter(|j| j.kind == "REQ")
        .collect();
    // The engine asks for 500 a page; the relay sends at most 100; paging goes on. Once
    // a page of 100 was followed by more, 100 is the relay's limit: later pages ask for
    // that (and a full page is recognised as one).
    let limits: Vec<u64> = jobs
        .iter()
        .filter_map(|j| j.filters[0].get("limit").and_then(Value::as_u64))
        .collect();
    assert_eq!(limits.len(), jobs.len());
    assert_eq!(limits.first(), Some(&500));
    assert!(limits.contains(&100), "the cap was not learned: {limits:?}");
    assert!(limits.iter().all(|l| *l == 500 || *l == 100), "{limits:?}");
    let later_pages = jobs
        .iter()
        .filter(|j| j.filters[0].get("until").is_some())
        .count();
    let s = stats(&world, &url);
    eprintln!("{} REQ pages, {later_pages} with until; {s:?}", jobs.len());
    assert!(later_pages >= 3, "{later_pages} later pages");
    assert_eq!(s.incomplete_windows, 0);
}

// -------------------------------------------------------------------------------------
// 10. Garbage from a relay

#[test]
fn bad_frames_are_counted_and_ignored() {
    let corpus = small();
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            junk_answers: 3,
            ..SimRelayConfig::default()
        },
    );
    world.run_for(HOUR);
    assert_converged(&world, &url, &corpus.acceptable);
    let s = stats(&world, &url);
    eprintln!(
        "bad frames {:?}, rejected {:?}",
        s.bad_frames, s.events_rejected
    );
    for label in ["not-json", "unknown-type", "unknown-subscription"] {
        assert_eq!(
            s.bad_frames.get(label),
            Some(&3),
            "{label}: {:?}",
            s.bad_frames
        );
    }
    // A forged copy of an event already stored (a page's boundary event, sent again) is
    // dropped as known before verification, so up to 3 are rejected.
    let forged = s.events_rejected.get("bad-signature").copied().unwrap_or(0);
    assert!((1..=3).contains(&forged), "{:?}", s.events_rejected);
    // Every event was written once; forged copies were replaced by fetched real ones.
    assert!(world.writes.values().all(|n| *n == 1));
    let fetches = log(&world, &url)
        .iter()
        .filter_map(|f| parse(f))
        .filter(|s| s.filters.iter().any(is_fetch))
        .count();
    assert!(fetches >= 1, "forged events were fetched again by id");
}

// -------------------------------------------------------------------------------------
// 11. Clock skew beyond the `since` margin

/// What a relay holds that is missing from the store.
fn missing(world: &World, url: &RelayUrl, ids: &[EventId]) -> Vec<EventId> {
    let got = stored(world);
    let held = relay_set(world, url);
    ids.iter()
        .filter(|id| held.contains(id) && !got.contains(id))
        .copied()
        .collect()
}

/// Events published during a short disconnection by clients whose clocks run 30
/// minutes behind carry `created_at` older than the quick reconnect's
/// `since = disconnected_at − since_margin` (10 min): the catch-up misses them, and the
/// engine cannot tell. Within the margin (5 minutes behind) they are caught up.
///
/// What recovers them, as the engine guarantees it: the daily full reconciliation
/// (23–25 h after a fresh start; everything, by either method). Sooner, with NIP-77
/// only: a fresh start (a disconnection longer than 15 min) reconciles every filter in
/// full. A relay without NIP-77 is paged on a fresh start only from the checkpoints
/// (minus the margin), so it still misses them until the daily reconciliation.
#[test]
fn clock_skew_beyond_the_margin_is_recovered_by_full_reconciliation() {
    let corpus = small();
    for nip77 in [true, false] {
        let relay = SimRelayConfig {
            nip77,
            ..SimRelayConfig::default()
        };
        let (mut world, url) = world(&corpus, relay);
        world.run_for(HOUR);
        assert_converged(&world, &url, &corpus.acceptable);
        let cut_at = world.now;
        let margin = EngineConfig::default().timing.since_margin;
        world.set_up(&url, false);
        world.run_for(SECOND);
        // Published a minute into the outage: a new state, issue and comment by clocks
        // 30 minutes behind, an issue and a comment by clocks 5 minutes behind.
        let behind = cut_at.timestamp().as_secs() + 60 - 30 * 60;
        let beyond: Vec<Event> = new_events(&corpus, behind);
        let within: Vec<Event> = new_events(&corpus, cut_at.timestamp().as_secs() + 60 - 5 * 60)
            .into_iter()
            .skip(1)
            .collect();
        assert!(beyond
            .iter()
            .all(|e| e.created_at < (cut_at - margin).timestamp()));
        assert!(within
            .iter()
            .all(|e| e.created_at >= (cut_at - margin).timestamp()));
        world.run_for(MINUTE);
        for e in beyond.iter().chain(&within) {
            world.publish(&url, e.clone());
        }
        world.run_for(MINUTE);
        world.set_up(&url, true);
        world.run_for(30 * MINUTE);
        let beyond_ids: Vec<EventId> = beyond.iter().map(|e| e.id).collect();
        let within_ids: Vec<EventId> = within.iter().map(|e| e.id).collect();
        // The quick reconnect caught up what is within the margin, not what is beyond.
        assert!(
            missing(&world, &url, &within_ids).is_empty(),
            "nip77 {nip77}: within the margin, missed"
        );
        assert_eq!(
            missing(&world, &url, &beyond_ids).len(),
            beyond.len(),
            "nip77 {nip77}: beyond the margin, yet caught up by the quick reconnect"
        );
        assert!(world.engine.is_settled());

        // A fresh start: NIP-77 reconciles in full and recovers them; paging from the
        // checkpoints does not.
        world.set_up(&url, false);
        world.run_for(20 * MINUTE);
        world.set_up(&url, true);
        world.run_for(HOUR);
        let after_fresh = missing(&world, &url, &beyond_ids);
        eprintln!(
            "nip77 {nip77}: {} of {} skewed events missing after a fresh start",
            after_fresh.len(),
            beyond.len()
        );
        if nip77 {
            assert!(after_fresh.is_empty(), "NIP-77 fresh start missed them");
            assert_converged(&world, &url, &relay_set(&world, &url));
        } else {
            assert_eq!(after_fresh.len(), beyond.len());
        }

        // The daily full reconciliation recovers them by either method.
        world.run_for(RECONCILE);
        assert!(missing(&world, &url, &beyond_ids).is_empty());
        assert_converged(&world, &url, &relay_set(&world, &url));
        assert_eq!(
            relay_state(&world, &url).1,
            if nip77 {
                Method::Negentropy
            } else {
                Method::Req
            }
        );
    }
}

/// A daily full reconciliation that a quick reconnect cuts short is finished in full
/// after it, with or without NIP-77: what only a full reconciliation finds (events
/// published during an earlier outage by clocks 30 minutes behind, see
/// [`clock_skew_beyond_the_margin_is_recovered_by_full_reconciliation`]) comes within
/// the hour, not at the next full reconciliation a day later.
#[test]
fn a_full_reconciliation_cut_short_by_a_quick_reconnect_is_finished() {
    let corpus = small();
    let full_every = 2 * HOUR;
    for nip77 in [true, false] {
        let relay = SimRelayConfig {
            nip77,
            ..SimRelayConfig::default()
        };
        let (mut world, url) = world_with(&corpus, relay, 7, |c| {
            c.timing.full_reconcile_min = full_every;
            c.timing.full_reconcile_max = full_every;
        });
        let connected = world.now;
        world.run_for(HOUR);
        assert_converged(&world, &url, &corpus.acceptable);
        // An outage of two minutes, in which clocks 30 minutes behind publish: the
        // quick reconnect after it does not reach back to them.
        let cut_at = world.now;
        world.set_up(&url, false);
        world.run_for(MINUTE);
        let skewed = new_events(&corpus, cut_at.timestamp().as_secs() + 60 - 30 * 60);
        let ids: Vec<EventId> = skewed.iter().map(|e| e.id).collect();
        for e in &skewed {
            world.publish(&url, e.clone());
        }
        world.run_for(MINUTE);
        world.set_up(&url, true);
        world.run_for(10 * MINUTE);
        assert_eq!(
            missing(&world, &url, &ids).len(),
            skewed.len(),
            "nip77 {nip77}"
        );
        // The full reconciliation starts two hours after the connection: its first job
        // frame, and the connection drops at once (a quick reconnect follows).
        world.run_until(connected + full_every - 10 * SECOND);
        let mark = log(&world, &url).len();
        let give_up = world.now + MINUTE;
        while world.now < give_up && job_frames(&log(&world, &url)[mark..]).is_empty() {
            world.run_for(Duration::from_millis(1));
        }
        assert!(world.now < give_up, "nip77 {nip77}: no full reconciliation");
        assert_eq!(
            missing(&world, &url, &ids).len(),
            skewed.len(),
            "nip77 {nip77}"
        );
        world.cut(&url);
        world.run_for(HOUR);
        assert_eq!(
            missing(&world, &url, &ids),
            Vec::<EventId>::new(),
            "nip77 {nip77}: the full reconciliation was not finished after the reconnect"
        );
        assert_converged(&world, &url, &relay_set(&world, &url));
    }
}

// -------------------------------------------------------------------------------------
// 12. A second holding more than a page

/// A relay that returns at most this many results per filter, silently.
const SMALL_CAP: usize = 20;
/// Statuses published in one second: more than a page.
const CROWD: usize = 50;

/// A root event of repository `repo`.
fn root_of(corpus: &Corpus, repo: usize) -> Event {
    corpus
        .events
        .iter()
        .zip(&corpus.repo_of)
        .find(|(e, r)| {
            **r == repo
                && (matches!(e.kind.as_u16(), 1618 | 1621)
                    || (e.kind.as_u16() == 1617
                        && e.tags.iter().any(|t| t.as_slice() == ["t", "root"])))
        })
        .map(|(e, _)| e.clone())
        .expect("a root")
}

/// The small corpus plus [`CROWD`] statuses created in one second in the middle of its
/// span, on the roots of `repos` in turn (each status tags its repository with `a` and
/// its root with `e`, so both the repository and the root filters hit the crowd).
fn crowded(repos: &[usize]) -> (Corpus, Vec<Event>, u64) {
    let mut corpus = small();
    let d = CorpusSpec::default();
    let second = d.start + d.span_secs / 2;
    let crowd: Vec<Event> = (0..CROWD)
        .map(|i| {
            let repo = repos[i % repos.len()];
            let root = root_of(&corpus, repo);
            let coord = corpus.repos[repo].to_string();
            let tags = vec![
                vec![
                    "e".to_owned(),
                    root.id.to_hex(),
                    String::new(),
                    "root".to_owned(),
                ],
                vec!["a".to_owned(), coord],
            ];
            sign(
                &keys(2_000 + i as u64),
                1630,
                second,
                tags,
                &format!("status {i}"),
            )
        })
        .collect();
    for e in &crowd {
        corpus.events.push(e.clone());
        corpus.repo_of.push(0);
        corpus.acceptable.insert(e.id);
    }
    (corpus, crowd, second)
}

/// Job frames asking for exactly one second.
fn one_second_jobs(frames: &[String], second: u64) -> Vec<Sent> {
    job_frames(frames)
        .into_iter()
        .filter(|s| {
            s.filters.iter().all(|f| {
                since(f) == Some(second) && f.get("until").and_then(Value::as_u64) == Some(second)
            })
        })
        .collect()
}

/// Runs until settled, then another hour, which must send nothing more: no loop.
fn run_to_quiet(world: &mut World, url: &RelayUrl) {
    world.run_for(HOUR);
    assert!(world.engine.is_settled(), "not settled");
    let (frames, reqs) = {
        let log = log(world, url);
        (
            log.len(),
            count_kind(&log, "REQ") + count_kind(&log, "NEG-OPEN"),
        )
    };
    assert!(reqs < 400, "{reqs} REQ and NEG-OPEN frames");
    world.run_for(HOUR);
    assert_eq!(
        log(world, url).len(),
        frames,
        "still sending after it settled"
    );
}

/// With NIP-77, the second is reconciled on its own (`since = until = second`), even
/// with nothing of it stored yet, and its events fetched by id in batches the relay
/// returns in full: everything arrives, nothing is reported incomplete. The crowd is on
/// one repository and one root: halving the filters could not have helped.
#[test]
fn a_second_holding_more_than_a_page_is_reconciled_with_nip77() {
    let (corpus, crowd, second) = crowded(&[0]);
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            max_results: SMALL_CAP,
            ..SimRelayConfig::default()
        },
    );
    run_to_quiet(&mut world, &url);
    assert_converged(&world, &url, &corpus.acceptable);
    let s = stats(&world, &url);
    assert_eq!(s.incomplete_windows, 0, "{s:?}");
    let narrowed = one_second_jobs(&log(&world, &url), second);
    eprintln!(
        "{} one-second jobs: {:?}; {s:?}",
        narrowed.len(),
        narrowed.iter().map(|j| &j.kind).collect::<Vec<_>>()
    );
    assert!(
        narrowed.iter().any(|j| j.kind == "NEG-OPEN"),
        "the second was not reconciled on its own"
    );
    assert!(
        narrowed.iter().all(|j| j.kind == "NEG-OPEN"),
        "paged within the second"
    );
    for e in &crowd {
        assert_eq!(world.writes.get(&e.id), Some(&1));
    }
    // What the stuck page already brought is not fetched again.
    let d = world.downloads();
    assert!(d.redundant.is_empty(), "{:?}", d.redundant);
}

/// Without NIP-77, the second's filter is halved by its values (repositories, roots)
/// and each half paged within the second until every half fits a page: everything
/// arrives, nothing is reported incomplete.
#[test]
fn a_second_holding_more_than_a_page_is_split_by_items_without_nip77() {
    let (corpus, _, second) = crowded(&[0, 1, 2]);
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            nip77: false,
            max_results: SMALL_CAP,
            ..SimRelayConfig::default()
        },
    );
    run_to_quiet(&mut world, &url);
    assert_converged(&world, &url, &corpus.acceptable);
    let s = stats(&world, &url);
    assert_eq!(s.incomplete_windows, 0, "{s:?}");
    let narrowed = one_second_jobs(&log(&world, &url), second);
    let widths: Vec<usize> = narrowed
        .iter()
        .map(|j| {
            j.filters[0]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| k.starts_with('#'))
                        .filter_map(|(_, v)| v.as_array().map(Vec::len))
                        .sum()
                })
                .unwrap_or(0)
        })
        .collect();
    eprintln!("one-second pages with {widths:?} values; {s:?}");
    assert!(narrowed.iter().all(|j| j.kind == "REQ"));
    assert!(narrowed.len() >= 4, "the second was not split: {widths:?}");
    assert!(
        widths.contains(&1),
        "halved down to single items: {widths:?}"
    );
}

/// Without NIP-77, a second holding more than a page for a single repository and root
/// cannot be narrowed further: it is reported as an incomplete window, the rest of the
/// store converges, and nothing loops.
#[test]
fn a_second_of_one_item_holding_more_than_a_page_is_reported_incomplete() {
    let (corpus, crowd, _) = crowded(&[0]);
    let (mut world, url) = world(
        &corpus,
        SimRelayConfig {
            nip77: false,
            max_results: SMALL_CAP,
            ..SimRelayConfig::default()
        },
    );
    run_to_quiet(&mut world, &url);
    let s = stats(&world, &url);
    let got = stored(&world);
    let lost: Vec<&EventId> = corpus.acceptable.difference(&got).collect();
    eprintln!("{} of {CROWD} crowded events missing; {s:?}", lost.len());
    // The repository filter and the root filter each end at a single item.
    assert!(s.incomplete_windows >= 2, "{s:?}");
    assert!(
        !lost.is_empty() && lost.len() <= CROWD - SMALL_CAP,
        "{} lost",
        lost.len()
    );
    let crowd_ids: BTreeSet<EventId> = crowd.iter().map(|e| e.id).collect();
    assert!(
        lost.iter().all(|id| crowd_ids.contains(id)),
        "lost outside the crowd"
    );
    assert_eq!(world.engine.work().pending_count(), 0);
    assert_eq!(world.engine.relay_jobs(&url), (0, 0, 0, 0));
}

/// With a tiny ingest queue, copies fetched by id (NIP-77 needs) are dropped when live
/// events fill the queue meanwhile (requests ask only for what it has room for; live
/// events cannot be asked to wait): their fetch must end with the drop (the job runs
/// again), never leave the id "being fetched" — which stalled a real 100 000-event sync
/// for good.
#[test]
fn fetched_copies_dropped_at_a_full_ingest_queue_are_fetched_again() {
    let corpus = Corpus::generate(&spec(9, 10, 60));
    let (mut world, url) = world_with(&corpus, SimRelayConfig::default(), 7, |c| {
        c.flow.max_ingest_queue = 6;
    });
    // Half the corpus stored already: the jobs reconcile and fetch the rest by id.
    let half: Vec<Event> = corpus.events.iter().step_by(2).cloned().collect();
    for e in &half {
        world.store.insert(e.clone());
    }
    world.input(Input::LocalEvents { events: half });
    // Bursts of live comments on a root, each more than the queue holds, every 100 ms
    // for the first 9 s, while the fetches go on; jitter makes frames bunch up (a
    // WebSocket never reorders), so fetched copies arrive right behind a burst and find
    // the queue full. (Bursts every 150 ms missed the fetches in a third of the runs
    // once sessions started without waiting a live interval.)
    world.faults.jitter_ms = 100;
    let root = corpus
        .events
        .iter()
        .find(|e| e.kind.as_u16() == 1621 && corpus.acceptable.contains(&e.id))
        .expect("an issue");
    let root_hex = root.id.to_hex();
    let at = world.now.timestamp().as_secs();
    let (bursts, size, every) = (90, 7, Duration::from_millis(100));
    let mut burst: Vec<Event> = Vec::new();
    for b in 0..bursts {
        for i in 0..size {
            let n = b * size + i;
            let e = sign(
                &keys(990),
                1111,
                at - 600 + n,
                vec![
                    vec!["E".into(), root_hex.clone()],
                    vec!["K".into(), "1621".into()],
                    vec!["e".into(), root_hex.clone()],
                    vec!["k".into(), "1621".into()],
                ],
                &format!("burst {n}"),
            );
            world.publish(&url, e.clone());
            burst.push(e);
        }
        world.run_for(every);
    }
    world.faults.jitter_ms = 0;
    world.run_for(HOUR);
    let s = stats(&world, &url);
    eprintln!("{s:?}");
    assert!(
        s.dropped_fetched > 0,
        "fetched copies overflowed the queue (not only live ones)"
    );
    assert!(
        s.jobs_negentropy > 0,
        "ids were fetched after reconciliation"
    );
    // Fetched again by the jobs that lost them, not rescued by the stall watchdog.
    assert_eq!(s.stalled_jobs, 0, "no job stalled: {s:?}");
    let mut expected = corpus.acceptable.clone();
    expected.extend(burst.iter().map(|e| e.id));
    assert_converged(&world, &url, &expected);
}

// -------------------------------------------------------------------------------------
// Events clients of our relay publish

/// Publishes `event` as a client of our relay would (already verified), runs a little,
/// and returns the outcome.
fn publish_as_client(world: &mut World, token: u64, event: &Event) -> PublishOutcome {
    let json_bytes = event.as_json().len();
    world.input(Input::Publish {
        token,
        event: event.clone(),
        json_bytes,
    });
    // An event referencing nothing tracked yet waits up to ORPHAN_WAIT for it.
    for _ in 0..4 {
        world.run_for(SECOND);
        let answer = world.published.iter().rev().find(|(t, _)| *t == token);
        if let Some((_, outcome)) = answer {
            return outcome.clone();
        }
    }
    panic!("publish {token} was not answered");
}

#[test]
fn a_published_announcement_listing_us_starts_syncing_the_relays_it_lists() {
    const US: &str = "wss://us.example.com";
    let corpus = Corpus::generate(&CorpusSpec {
        relays: vec![URL.to_owned(), US.to_owned()],
        relays_per_repo: 2,
        ..spec(31, 3, 40)
    });
    let us = RelayUrl::parse(US).expect("url");
    let mut config = EngineConfig {
        seed: 3,
        ..EngineConfig::default()
    };
    config.accept.announcements = AnnouncementPolicy::ListUs;
    config.accept.own_urls = BTreeSet::from([us.clone()]);
    config.index.own_urls = BTreeSet::from([us]);
    let mut world = World::new(config, start_time(), 3);
    let url = world.add_relay(URL, SimRelayConfig::default(), &corpus.events);

    // Nothing is tracked, so nothing connects.
    world.run_for(MINUTE);
    assert!(
        world.engine.relays().next().is_none(),
        "no relay before an announcement"
    );

    // Rejections: an event of an untracked repository, an announcement not listing us.
    let reply = corpus
        .events
        .iter()
        .find(|e| e.kind.as_u16() == 1111 || e.kind.as_u16() == 1621)
        .expect("the corpus has issues or comments");
    assert_eq!(
        publish_as_client(&mut world, 1, reply),
        PublishOutcome::Rejected(Reject::Irrelevant)
    );
    let elsewhere = sign(
        &keys(900),
        30617,
        start_time().timestamp().as_secs() - 10,
        vec![
            vec!["d".into(), "elsewhere".into()],
            vec!["relays".into(), "wss://other.example.net".into()],
        ],
        "",
    );
    assert_eq!(
        publish_as_client(&mut world, 2, &elsewhere),
        PublishOutcome::Rejected(Reject::NotListingUs)
    );
    assert!(world.store.ids().next().is_none(), "nothing stored");

    // The announcements list us: stored, and the relay they list syncs at once.
    let announcements: Vec<Event> = corpus
        .events
        .iter()
        .filter(|e| e.kind.as_u16() == 30617)
        .cloned()
        .collect();
    for (i, a) in announcements.iter().enumerate() {
        // Later ones may already have come from the relay the first one listed.
        let outcome = publish_as_client(&mut world, 10 + i as u64, a);
        assert!(
            matches!(
                outcome,
                PublishOutcome::Stored
                    | PublishOutcome::Rejected(Reject::Superseded | Reject::Duplicate)
            ),
            "{outcome:?}"
        );
        if i == 0 {
            assert_eq!(outcome, PublishOutcome::Stored);
            assert!(
                world.engine.relays().any(|(u, ..)| *u == url),
                "the relay it lists is a target at once"
            );
        }
    }
    world.run_for(MINUTE);
    assert_converged(&world, &url, &corpus.acceptable);
    let published = &world.engine.stats().published;
    assert!(published.stored >= 1, "{published:?}");
    assert_eq!(published.rejected.get("irrelevant"), Some(&1));
    assert_eq!(published.rejected.get("not-listing-us"), Some(&1));

    // The same event again is a duplicate; the reply now tracked is accepted.
    let newest = announcements
        .iter()
        .find(|a| corpus.acceptable.contains(&a.id))
        .expect("a newest version");
    assert_eq!(
        publish_as_client(&mut world, 100, newest),
        PublishOutcome::Rejected(Reject::Duplicate)
    );
    assert!(world.hosts[&url].relay.events().any(|e| e.id == reply.id));
    assert!(stored(&world).contains(&reply.id), "synced from the relay");
}

#[test]
fn published_events_wait_for_the_root_or_repository_they_reference() {
    const US: &str = "wss://us.example.com";
    let corpus = Corpus::generate(&CorpusSpec {
        relays: vec![US.to_owned()],
        relays_per_repo: 1,
        ..spec(32, 2, 40)
    });
    let us = RelayUrl::parse(US).expect("url");
    let mut config = EngineConfig {
        seed: 4,
        ..EngineConfig::default()
    };
    config.accept.announcements = AnnouncementPolicy::ListUs;
    config.accept.own_urls = BTreeSet::from([us.clone()]);
    config.index.own_urls = BTreeSet::from([us]);
    let mut world = World::new(config, start_time(), 4);

    // What an upload in id order does: everything of one repository, replies first.
    let repo = corpus.repos[0].clone();
    let of_repo: Vec<Event> = corpus
        .events
        .iter()
        .zip(&corpus.repo_of)
        .filter(|(e, r)| **r == 0 && corpus.acceptable.contains(&e.id))
        .map(|(e, _)| e.clone())
        .collect();
    let mut order = of_repo.clone();
    order.sort_by_key(|e| match e.kind.as_u16() {
        30617 => 2,
        1618 | 1621 => 1,
        _ => 0,
    });
    for (i, event) in order.iter().enumerate() {
        world.input(Input::Publish {
            token: i as u64,
            event: event.clone(),
            json_bytes: event.as_json().len(),
        });
    }
    world.run_for(SECOND);
    let stored_now = stored(&world);
    let want: BTreeSet<EventId> = of_repo.iter().map(|e| e.id).collect();
    let missing: Vec<u16> = of_repo
        .iter()
        .filter(|e| !stored_now.contains(&e.id))
        .map(|e| e.kind.as_u16())
        .collect();
    assert!(
        stored_now == want,
        "every event of {repo} is stored once its announcement and roots came: \
         kinds not stored {missing:?}, {} extra; outcomes {:?}",
        stored_now.difference(&want).count(),
        world.engine.stats().published
    );
    assert_eq!(world.published.len(), order.len(), "every publish answered");
    assert!(
        world.engine.stats().published.waited > 0,
        "replies waited for their roots"
    );

    // A reply to a root nobody publishes is refused once the wait is over.
    let stray = sign(
        &keys(901),
        1111,
        start_time().timestamp().as_secs() - 5,
        vec![vec!["E".into(), "00".repeat(32)]],
        "a reply to nothing",
    );
    world.input(Input::Publish {
        token: 10_000,
        event: stray.clone(),
        json_bytes: stray.as_json().len(),
    });
    world.run_for(SECOND);
    assert!(
        world.published.iter().all(|(t, _)| *t != 10_000),
        "it waits"
    );
    world.run_for(Duration::from_secs(2));
    assert_eq!(
        world.published.last(),
        Some(&(10_000, PublishOutcome::Rejected(Reject::Irrelevant)))
    );
    assert!(!stored(&world).contains(&stray.id));
}
