//! Slow relays and failing ones, against one simulated relay holding a small corpus.
//!
//! A relay (or an engine) that delivers slowly is still delivering: a page or an `ids`
//! fetch whose events keep coming must not time out, be retried and at last be
//! abandoned. A job that does fail for good leaves a gap, and the relay's counters say
//! so: it must never read as "in sync" with its filters unconfirmed.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::engine::{EngineConfig, RelayStats, Time};
use grasp_sync_core::RelayUrl;
use grasp_sync_testkit::{Corpus, CorpusSpec, Faults, SimRelayConfig, World};
use nostr::prelude::EventId;

const URL: &str = "wss://relay-slow.example.com";
const HOUR: Duration = Duration::from_secs(3600);

/// 3 repositories, about 180 events, all at [`URL`].
fn corpus() -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed: 42,
        repos: 3,
        events_per_repo: 60,
        relays: vec![URL.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    })
}

fn world(corpus: &Corpus, relay: SimRelayConfig, faults: Faults) -> (World, RelayUrl) {
    let url = RelayUrl::parse(URL).expect("relay url");
    let spec = CorpusSpec::default();
    let start = Time::from_secs(spec.start + spec.span_secs + 3600);
    let config = EngineConfig {
        bootstrap_relays: vec![url.clone()],
        seed: 5,
        ..EngineConfig::default()
    };
    let mut world = World::new(config, start, 5);
    world.faults = faults;
    let url = world.add_relay(URL, relay, &corpus.events);
    (world, url)
}

fn stats(world: &World, url: &RelayUrl) -> RelayStats {
    world
        .engine
        .relays()
        .find(|(u, ..)| *u == url)
        .map(|(.., s)| s.clone())
        .expect("relay known to the engine")
}

fn stored(world: &World) -> BTreeSet<EventId> {
    world.store.ids().collect()
}

/// Each frame from the relay a second after the one before: pages and fetches of more
/// than 30 events take longer than `eose_timeout` (30 s) in all.
fn one_frame_a_second() -> Faults {
    Faults {
        frame_gap_ms: 1000,
        ..Faults::default()
    }
}

fn assert_synced_slowly(relay: SimRelayConfig) {
    let corpus = corpus();
    let (mut world, url) = world(&corpus, relay, one_frame_a_second());
    world.run_for(2 * HOUR);
    let s = stats(&world, &url);
    let got = stored(&world);
    let missing = corpus.acceptable.difference(&got).count();
    assert_eq!(
        (missing, got.len()),
        (0, corpus.acceptable.len()),
        "store differs from the acceptable set; {s:?}"
    );
    assert!(world.engine.is_settled(), "not settled");
    assert_eq!(s.abandoned_jobs, 0, "{s:?}");
    assert!(!s.has_gaps(), "{s:?}");
    assert_eq!(
        s.bad_frames.get("unknown-subscription"),
        None,
        "a subscription was given up on while its events still came: {s:?}"
    );
}

#[test]
fn a_req_only_relay_on_a_slow_link_is_synced_without_retries() {
    assert_synced_slowly(SimRelayConfig {
        nip77: false,
        ..SimRelayConfig::default()
    });
}

#[test]
fn a_nip77_relay_on_a_slow_link_is_synced_without_retries() {
    assert_synced_slowly(SimRelayConfig::default());
}

#[test]
fn a_job_that_fails_for_good_is_a_gap_not_in_sync() {
    let corpus = corpus();
    let relay = SimRelayConfig {
        nip77: false,
        failing_reqs: usize::MAX,
        ..SimRelayConfig::default()
    };
    let (mut world, url) = world(&corpus, relay, Faults::default());
    world.run_for(HOUR);
    let s = stats(&world, &url);
    assert!(
        world.engine.is_settled(),
        "a failing relay must not hold the sync"
    );
    assert!(s.abandoned_jobs > 0, "{s:?}");
    assert!(s.has_gaps(), "{s:?}");
    assert!(
        stored(&world).len() < corpus.acceptable.len(),
        "the relay answered no historic query, yet everything was stored"
    );
}
