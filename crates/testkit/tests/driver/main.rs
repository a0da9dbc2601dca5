//! The driver's own tests: the simulation's relays run through the real [`Driver`] with
//! the in-memory store behind the store port, a verifier that checks every signature and
//! a manual clock, polled by a single-threaded executor. Virtual time moves only when
//! every task is stalled, to the earliest sleep's deadline.
//!
//! Each seed syncs a generated corpus from two relays (one speaking NIP-77, one REQ-only)
//! into an empty store, then starts a second driver on the same store two hours later:
//! the store ends holding exactly the acceptable events, checkpoints went through the
//! port, and the restart writes nothing again. Frames and store writes arrive at once or
//! after a simulated delay; other tests cut a connection mid-sync, refuse connections
//! to a relay for a while, and replay one seed twice to compare the runs.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::engine::{EngineConfig, Time};
use grasp_sync_core::RelayUrl;
use grasp_sync_driver::{Clock, Exit};
use grasp_sync_store::{MemoryStore, MemoryStores};
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, SimRelayConfig};
use nostr::prelude::{Event, EventId, Filter};

const NIP77: &str = "wss://relay-a.example.com";
const REQ_ONLY: &str = "wss://relay-b.example.com";
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
/// Virtual time a run without silent loss takes at most: frames arrive at once (a cut is
/// reported at once), so a run that takes longer waited out a timeout (a lost EOSE, a
/// silent relay).
const FAULT_FREE: Duration = Duration::from_secs(10);

mod clock;
mod network;
mod ports;
mod run;

use clock::{virtual_timestamp, ManualClock};
use network::SimNetwork;
use run::{run, run_failing_save, Outcome};

fn start_time() -> Time {
    let d = CorpusSpec::default();
    Time::from_secs(d.start + d.span_secs + 3600)
}

/// 3 repositories, about 180 events, each announcement listing both relays.
fn corpus(seed: u64) -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed,
        repos: 3,
        events_per_repo: 60,
        relays: vec![NIP77.to_owned(), REQ_ONLY.to_owned()],
        relays_per_repo: 2,
        ..CorpusSpec::default()
    })
}

/// How fast the network and the store are.
#[derive(Debug, Clone, Copy)]
struct Conditions {
    /// Connection attempts and frames from relays.
    latency: Duration,
    /// Each store write.
    store_delay: Duration,
}

/// Frames and writes complete at once (as soon as the executor polls them).
const INSTANT: Conditions = Conditions {
    latency: Duration::ZERO,
    store_delay: Duration::ZERO,
};

/// 20 ms to a relay, 15 ms per store write: writes overlap frames, group commit and
/// the persistence lane queue.
const SLOW: Conditions = Conditions {
    latency: Duration::from_millis(20),
    store_delay: Duration::from_millis(15),
};

/// Both relays holding `corpus`, and an engine that bootstraps from them.
fn setup(
    corpus: &Corpus,
    seed: u64,
    clock: &ManualClock,
    latency: Duration,
) -> (SimNetwork, EngineConfig) {
    let network = SimNetwork::new(clock, latency);
    let a = network.add_relay(NIP77, SimRelayConfig::default(), &corpus.events);
    let b = network.add_relay(
        REQ_ONLY,
        SimRelayConfig {
            nip77: false,
            ..SimRelayConfig::default()
        },
        &corpus.events,
    );
    let config = EngineConfig {
        bootstrap_relays: vec![a, b],
        seed,
        ..EngineConfig::default()
    };
    (network, config)
}

fn stored(store: &MemoryStore) -> BTreeSet<EventId> {
    store
        .query_now(&Filter::new())
        .iter()
        .map(|e| e.id)
        .collect()
}

fn assert_holds(store: &MemoryStore, expected: &BTreeSet<EventId>, outcome: &Outcome) {
    let got = stored(store);
    let missing = expected.difference(&got).count();
    let extra = got.difference(expected).count();
    assert!(
        missing == 0 && extra == 0,
        "store differs: {missing} missing, {extra} extra of {}; {outcome:#?}",
        expected.len()
    );
}

fn assert_in_sync(outcome: &Outcome) {
    assert!(
        outcome.took <= FAULT_FREE,
        "a fault-free run took {:?}: it waited out a timeout",
        outcome.took
    );
    assert_settled(outcome);
}

/// Stopped by the observer with every relay in sync, no store failure.
fn assert_settled(outcome: &Outcome) {
    assert_eq!(outcome.exit, Exit::Observer, "{outcome:#?}");
    assert!(outcome.in_sync, "{outcome:#?}");
    assert_eq!(outcome.relays.len(), 2, "{outcome:#?}");
    assert_eq!(outcome.driver.store_failures, 0);
    assert_eq!(outcome.driver.persist_failures, 0);
}

/// A first sync into an empty store, then a restart on the same store two hours later.
fn first_sync_then_restart(seed: u64, conditions: Conditions) {
    let corpus = corpus(seed);
    let clock = ManualClock::new(start_time());
    let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
    let delay = conditions.store_delay;
    let store = MemoryStores::with_clock(virtual_timestamp).open("driver");

    let first = run(&config, &network, &store, &clock, delay);
    eprintln!(
        "seed {seed}: first run took {:?}, {} EVENT frames, {:?}, {:?}",
        first.took, first.events_sent, first.writes, first.driver
    );
    assert_in_sync(&first);
    assert_holds(&store, &corpus.acceptable, &first);
    assert!(first.writes.events >= corpus.acceptable.len() as u64);
    // Checkpoints went through the port, for both relays.
    assert!(first.writes.state_writes > 0 && first.writes.checkpoints > 0);
    let saved = store.load_state_now();
    let relays: BTreeSet<&RelayUrl> = saved.checkpoints.iter().map(|c| &c.relay).collect();
    assert_eq!(relays.len(), 2, "checkpoints saved for {relays:?}");
    for (url, _, stats) in &first.relays {
        assert!(stats.events_received > 0, "{url} sent nothing");
    }

    clock.advance_to(clock.now() + 2 * HOUR);
    let frames_before = network.frames_in();
    let second = run(&config, &network, &store, &clock, delay);
    // The restart did ask both relays (it reconciled or paged from its checkpoints).
    for (url, after) in network.frames_in() {
        assert!(after > frames_before[&url], "the restart never asked {url}");
    }
    let nip77 = RelayUrl::parse(NIP77).expect("relay url");
    assert!(
        second
            .relays
            .iter()
            .any(|(u, _, s)| *u == nip77 && s.jobs_negentropy > 0),
        "no reconciliation at the NIP-77 relay: {second:#?}"
    );
    eprintln!(
        "seed {seed}: restart took {:?}, {} EVENT frames, {:?}, loaded {}",
        second.took, second.events_sent, second.writes, second.driver.loaded_events
    );
    assert_in_sync(&second);
    assert_holds(&store, &corpus.acceptable, &second);
    assert!(second.driver.loaded_events > 0, "nothing restored");
    assert_eq!(second.writes.events, 0, "events written again");
    assert!(
        second.events_sent * 5 <= first.events_sent,
        "the restart downloaded {} events (first run {})",
        second.events_sent,
        first.events_sent
    );
}

#[test]
fn first_sync_and_restart_seed_1() {
    first_sync_then_restart(1, INSTANT);
}

#[test]
fn first_sync_and_restart_seed_2() {
    first_sync_then_restart(2, INSTANT);
}

#[test]
fn first_sync_and_restart_seed_3() {
    first_sync_then_restart(3, INSTANT);
}

#[test]
fn first_sync_and_restart_with_latency_and_a_slow_store_seed_6() {
    first_sync_then_restart(6, SLOW);
}

#[test]
fn first_sync_and_restart_with_latency_and_a_slow_store_seed_7() {
    first_sync_then_restart(7, SLOW);
}

/// `n` comments (NIP-22) on the corpus's first issue, created at `at`.
fn comments(corpus: &Corpus, at: u64, n: u64) -> Vec<Event> {
    let issue = corpus
        .events
        .iter()
        .find(|e| e.kind.as_u16() == 1621)
        .expect("an issue in the corpus");
    let root = issue.id.to_hex();
    (0..n)
        .map(|i| {
            let tags = [["E", &root], ["K", "1621"], ["e", &root], ["k", "1621"]];
            let tags = tags.iter().map(|t| t.map(String::from).to_vec()).collect();
            sign(&keys(7_000 + i), 1111, at, tags, &format!("comment {i}"))
        })
        .collect()
}

/// With a restart catch-up window (the browser's setting), a restart soon after a sync
/// catches up the comments the relays gained; a second restart, whose window brings them
/// again, neither verifies nor writes them again: the store's held ids were handed over
/// at start-up.
#[test]
fn a_quick_restart_writes_nothing_its_window_brings_again() {
    let seed = 4;
    let corpus = corpus(seed);
    let clock = ManualClock::new(start_time());
    let (network, mut config) = setup(&corpus, seed, &clock, Duration::ZERO);
    config.timing.restart_catch_up_window = config.timing.quick_reconnect_window;
    let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
    let first = run(&config, &network, &store, &clock, Duration::ZERO);
    assert_in_sync(&first);

    clock.advance_to(clock.now() + MINUTE);
    let fresh = comments(&corpus, clock.now().timestamp().as_secs(), 5);
    network.insert_everywhere(&fresh);
    let second = run(&config, &network, &store, &clock, Duration::ZERO);
    assert_in_sync(&second);
    let held = stored(&store);
    assert!(fresh.iter().all(|e| held.contains(&e.id)), "not caught up");

    clock.advance_to(clock.now() + MINUTE);
    let sent_before = network.events_sent();
    let third = run(&config, &network, &store, &clock, Duration::ZERO);
    assert_in_sync(&third);
    let brought = network.events_sent() - sent_before;
    assert!(
        brought >= fresh.len() as u64,
        "the window did not bring the comments again: {brought} events"
    );
    assert_eq!(third.writes.events, 0, "written again: {third:#?}");
}

/// A relay that cuts the connection mid-sync: the driver hands the engine the close, the
/// engine reconnects, and the store still ends holding exactly the acceptable events.
#[test]
fn a_connection_cut_mid_sync_still_converges() {
    for (seed, conditions) in [(4, INSTANT), (5, SLOW)] {
        let corpus = corpus(seed);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
        let url = RelayUrl::parse(NIP77).expect("relay url");
        network.0.borrow_mut().cut_after = Some((url, 40));
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, conditions.store_delay);
        eprintln!(
            "seed {seed}: took {:?}, {} EVENT frames, {:?}",
            outcome.took, outcome.events_sent, outcome.driver
        );
        assert_eq!(network.0.borrow().cuts, 1, "the cut never happened");
        assert!(outcome.driver.connects >= 3, "{:?}", outcome.driver);
        assert_in_sync(&outcome);
        assert_holds(&store, &corpus.acceptable, &outcome);
    }
}

/// A write that fails mid-sync (with writes slow enough that batches queue behind it,
/// which fail with it, unwritten): the sync still converges, the failure is counted,
/// and a restart from the checkpoints downloads nothing again.
#[test]
fn a_failed_write_mid_sync_still_converges() {
    let seed = 9;
    let corpus = corpus(seed);
    let clock = ManualClock::new(start_time());
    let (network, config) = setup(&corpus, seed, &clock, SLOW.latency);
    let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
    let first = run_failing_save(&config, &network, &store, &clock, SLOW.store_delay, Some(3));
    eprintln!(
        "took {:?}, {:?}, {:?}",
        first.took, first.writes, first.driver
    );
    assert!(first.writes.saves > 3, "{:?}", first.writes);
    assert_eq!(first.driver.store_failures, 1, "{:?}", first.driver);
    assert!(first.in_sync, "{first:#?}");
    assert_holds(&store, &corpus.acceptable, &first);

    clock.advance_to(clock.now() + 2 * HOUR);
    let second = run(&config, &network, &store, &clock, SLOW.store_delay);
    assert_in_sync(&second);
    assert_holds(&store, &corpus.acceptable, &second);
    assert_eq!(second.writes.events, 0, "events written again");
}

/// The same seed under the same conditions runs the same way: the same virtual time, the
/// same frames, the same writes, the same counters per relay.
#[test]
fn a_seed_replays_identically() {
    let once = || {
        let corpus = corpus(8);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, 8, &clock, SLOW.latency);
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, SLOW.store_delay);
        assert_in_sync(&outcome);
        format!(
            "{:?} {} {:?} {:?} {:?} {:?}",
            outcome.took,
            outcome.events_sent,
            outcome.writes,
            outcome.relays,
            network.frames_in(),
            stored(&store)
        )
    };
    let (a, b) = (once(), once());
    assert!(a == b, "two runs of one seed differ:\n{a}\n{b}");
}

/// The REQ-only relay refuses connections for the first two minutes: the driver reports
/// each refusal, the engine backs off and retries, and the sync completes once it is up.
#[test]
fn a_relay_refusing_connections_at_first_is_retried_until_in_sync() {
    for (seed, conditions) in [(9, INSTANT), (10, SLOW)] {
        let corpus = corpus(seed);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
        let url = RelayUrl::parse(REQ_ONLY).expect("relay url");
        let up_at = clock.now() + Duration::from_secs(120);
        network.0.borrow_mut().down_until = Some((url, up_at));
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, conditions.store_delay);
        eprintln!(
            "seed {seed}: took {:?}, {} EVENT frames, {:?}",
            outcome.took, outcome.events_sent, outcome.driver
        );
        assert!(outcome.driver.connect_failures >= 1, "{:?}", outcome.driver);
        assert!(
            outcome.took >= Duration::from_secs(120),
            "in sync while down"
        );
        assert_settled(&outcome);
        assert_holds(&store, &corpus.acceptable, &outcome);
    }
}
