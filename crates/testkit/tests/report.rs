//! The simulator report: for ~100 000 events on one relay, bytes and round trips of a
//! cold sync, an in-sync full reconciliation and a 1 % catch-up, against a NIP-77 relay
//! and, side by side, against the same relay without NIP-77 (plain paginated REQ).
//!
//! ```text
//! cargo test --release -p grasp-sync-testkit --test report -- --ignored --nocapture
//! ```
//!
//! `GRASP_REPORT_EVENTS_PER_REPO` (default 1000, 100 repositories) scales it down.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grasp_sync_core::engine::{EngineConfig, Method, RelayStats, Time};
use grasp_sync_core::RelayUrl;
use grasp_sync_testkit::{Corpus, CorpusSpec, SimRelayConfig, World};
use nostr::prelude::{Event, EventId};

const URL: &str = "wss://relay-a.example.com";
/// Full reconciliation exactly 25 h after connecting, then every 25 h.
const RECONCILE_EVERY: Duration = Duration::from_secs(25 * 3600);
/// Resolution of the simulated time measurements.
const STEP: Duration = Duration::from_millis(10);

struct Row {
    case: String,
    method: Method,
    jobs: (u64, u64),
    stats: RelayStats,
    sim_time: Duration,
    /// Expected events not in the store afterwards.
    missing: usize,
    incomplete_windows: u64,
}

fn relay_stats(world: &World, url: &RelayUrl) -> (Method, RelayStats) {
    world
        .engine
        .relays()
        .find(|(u, ..)| *u == url)
        .map(|(_, _, m, s)| (m, s.clone()))
        .expect("relay")
}

fn settled(world: &World, url: &RelayUrl) -> bool {
    world.engine.is_settled()
        && world.engine.work().pending_count() == 0
        && world.engine.relay_jobs(url) == (0, 0, 0, 0)
}

/// Steps until the relay's round trips start moving and then until everything is
/// settled again; the delta of the relay's counters over that span.
fn measure(world: &mut World, url: &RelayUrl, case: &str, limit: Duration) -> Row {
    let (_, before) = relay_stats(world, url);
    let give_up = world.now + limit;
    let mut started = None;
    loop {
        world.run_for(STEP);
        let (_, now) = relay_stats(world, url);
        if started.is_none() && now.round_trips > before.round_trips {
            started = Some(world.now - STEP);
        }
        if started.is_some() && settled(world, url) {
            break;
        }
        assert!(world.now < give_up, "{case}: not settled in {limit:?}");
    }
    let (method, after) = relay_stats(world, url);
    let sim_time = world.now.since(started.unwrap_or(world.now));
    Row {
        case: case.to_owned(),
        method,
        jobs: (
            after.jobs_negentropy - before.jobs_negentropy,
            after.jobs_req - before.jobs_req,
        ),
        stats: RelayStats {
            bytes_in: after.bytes_in - before.bytes_in,
            bytes_out: after.bytes_out - before.bytes_out,
            round_trips: after.round_trips - before.round_trips,
            events_received: after.events_received - before.events_received,
            events_accepted: after.events_accepted - before.events_accepted,
            ..RelayStats::default()
        },
        sim_time,
        missing: 0,
        incomplete_windows: after.incomplete_windows - before.incomplete_windows,
    }
}

/// The store holds exactly `expected`.
fn check(
    world: &World,
    url: &RelayUrl,
    expected: &BTreeSet<EventId>,
    case: &str,
    strict: bool,
) -> usize {
    let stored: BTreeSet<EventId> = world.store.ids().collect();
    if &stored == expected {
        return 0;
    }
    let missing: Vec<&EventId> = expected.difference(&stored).collect();
    let mut kinds = std::collections::BTreeMap::<u16, usize>::new();
    for id in &missing {
        if let Some(e) = world.hosts[url].relay.events().find(|e| e.id == **id) {
            *kinds.entry(e.kind.as_u16()).or_default() += 1;
        }
    }
    let message = format!(
        "{case}: {} missing (by kind {kinds:?}), {} extra of {}; settled {} pending {} jobs {:?}; {:?}",
        missing.len(),
        stored.difference(expected).count(),
        expected.len(),
        world.engine.is_settled(),
        world.engine.work().pending_count(),
        world.engine.relay_jobs(url),
        relay_stats(world, url)
    );
    assert!(!strict, "{message}");
    eprintln!("  {message}");
    missing.len()
}

fn is_root(e: &Event) -> bool {
    match e.kind.as_u16() {
        1621 | 1618 => true,
        1617 => e
            .tags
            .iter()
            .any(|t| t.as_slice().first().map(String::as_str) == Some("t")),
        _ => false,
    }
}

/// Runs the three cases against one relay configuration.
fn scenario(
    label: &str,
    relay: SimRelayConfig,
    initial: &[Event],
    held_back: &[Event],
    expected_initial: &BTreeSet<EventId>,
    expected_all: &BTreeSet<EventId>,
    strict: bool,
) -> Vec<Row> {
    let url = RelayUrl::parse(URL).expect("url");
    let mut config = EngineConfig {
        bootstrap_relays: vec![url.clone()],
        seed: 3,
        ..EngineConfig::default()
    };
    config.timing.full_reconcile_min = RECONCILE_EVERY;
    config.timing.full_reconcile_max = RECONCILE_EVERY;
    let d = CorpusSpec::default();
    let start = Time::from_secs(d.start + d.span_secs + 3600);
    let mut world = World::new(config, start, 3);
    let url = world.add_relay(URL, relay, initial);
    let mut rows = Vec::new();

    let t = Instant::now();
    rows.push(measure(
        &mut world,
        &url,
        &format!("cold sync, {label}"),
        Duration::from_secs(6 * 3600),
    ));
    rows.last_mut().expect("row").missing =
        check(&world, &url, expected_initial, "cold sync", strict);
    eprintln!("  cold sync simulated in {:?}", t.elapsed());

    // In sync: the first full reconciliation.
    world.run_until(start + RECONCILE_EVERY - Duration::from_secs(5));
    let t = Instant::now();
    rows.push(measure(
        &mut world,
        &url,
        &format!("in-sync full reconciliation, {label}"),
        Duration::from_secs(6 * 3600),
    ));
    rows.last_mut().expect("row").missing = check(
        &world,
        &url,
        expected_initial,
        "in-sync reconciliation",
        strict,
    );
    eprintln!("  in-sync reconciliation simulated in {:?}", t.elapsed());

    // 1 %: the relay receives events the store lacks (without notifying anyone), then
    // the second full reconciliation.
    for e in held_back {
        if let Some(host) = world.hosts.get_mut(&url) {
            host.relay.insert(e.clone());
        }
    }
    world.run_until(start + 2 * RECONCILE_EVERY - Duration::from_secs(5));
    let t = Instant::now();
    rows.push(measure(
        &mut world,
        &url,
        &format!("1 % catch-up (full reconciliation), {label}"),
        Duration::from_secs(6 * 3600),
    ));
    rows.last_mut().expect("row").missing = check(&world, &url, expected_all, "catch-up", strict);
    eprintln!("  catch-up simulated in {:?}", t.elapsed());
    rows
}

fn kb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

#[test]
#[ignore = "report: slow, prints a table"]
fn report_nip77_versus_req_at_100k_events() {
    let per_repo: usize = std::env::var("GRASP_REPORT_EVENTS_PER_REPO")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let spec = CorpusSpec {
        seed: 77,
        repos: 100,
        events_per_repo: per_repo,
        relays: vec![URL.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    };
    let t = Instant::now();
    let corpus = Corpus::generate(&spec);
    eprintln!(
        "generated and signed {} events in {:?}",
        corpus.events.len(),
        t.elapsed()
    );

    // 1 %: every k-th plain reply (not an announcement, state, root or deletion, and
    // not deleted), so the rest of the corpus is complete without it.
    let eligible: Vec<&Event> = corpus
        .events
        .iter()
        .filter(|e| corpus.acceptable.contains(&e.id))
        .filter(|e| !matches!(e.kind.as_u16(), 30617 | 30618 | 5) && !is_root(e))
        .collect();
    let want = corpus.events.len() / 100;
    let every = (eligible.len() / want.max(1)).max(1);
    let held_back: Vec<Event> = eligible
        .iter()
        .step_by(every)
        .take(want)
        .map(|e| (*e).clone())
        .collect();
    let held: BTreeSet<EventId> = held_back.iter().map(|e| e.id).collect();
    let initial: Vec<Event> = corpus
        .events
        .iter()
        .filter(|e| !held.contains(&e.id))
        .cloned()
        .collect();
    let expected_all = corpus.acceptable.clone();
    let expected_initial: BTreeSet<EventId> = expected_all.difference(&held).copied().collect();

    let mut rows = Vec::new();
    eprintln!("NIP-77 relay:");
    rows.extend(scenario(
        "NIP-77 relay",
        SimRelayConfig::default(),
        &initial,
        &held_back,
        &expected_initial,
        &expected_all,
        true,
    ));
    eprintln!("REQ-only relay:");
    rows.extend(scenario(
        "plain REQ",
        SimRelayConfig {
            nip77: false,
            ..SimRelayConfig::default()
        },
        &initial,
        &held_back,
        &expected_initial,
        &expected_all,
        false,
    ));

    let mut per_second = std::collections::HashMap::<u64, usize>::new();
    for e in &corpus.events {
        *per_second.entry(e.created_at.as_secs()).or_default() += 1;
    }
    let crowded = per_second.values().max().copied().unwrap_or(0);

    println!();
    println!(
        "{} events on one relay ({} acceptable; 1 % = {} events held back); one-way latency 20 ms",
        corpus.events.len(),
        corpus.acceptable.len(),
        held_back.len()
    );
    println!(
        "(the generator clamps late replies to its last second: {crowded} events share one created_at)"
    );
    println!(
        "| {:<48} | {:>10} | {:>10} | {:>11} | {:>10} | {:>10} | {:>9} | {:>10} | {:>10} | {:>8} |",
        "case",
        "KiB in",
        "KiB out",
        "round trips",
        "events rx",
        "stored",
        "neg/req",
        "sim time",
        "method",
        "missing"
    );
    let widths = [48, 10, 10, 11, 10, 10, 9, 10, 10, 8];
    println!("|{}|", widths.map(|w| "-".repeat(w + 2)).join("|"));
    for r in &rows {
        println!(
            "| {:<48} | {:>10} | {:>10} | {:>11} | {:>10} | {:>10} | {:>9} | {:>10} | {:>10} | {:>8} |",
            r.case,
            kb(r.stats.bytes_in),
            kb(r.stats.bytes_out),
            r.stats.round_trips,
            r.stats.events_received,
            r.stats.events_accepted,
            format!("{}/{}", r.jobs.0, r.jobs.1),
            format!("{:.2} s", r.sim_time.as_secs_f64()),
            format!("{:?}", r.method),
            if r.incomplete_windows > 0 {
                format!("{} ({}w)", r.missing, r.incomplete_windows)
            } else {
                r.missing.to_string()
            },
        );
    }
}
