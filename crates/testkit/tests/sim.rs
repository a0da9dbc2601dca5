//! Deterministic simulation of the engine against several relays.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::engine::{EngineConfig, Time};
use grasp_sync_core::RelayUrl;
use grasp_sync_testkit::{Corpus, CorpusSpec, Rng, SimRelayConfig, World};
use nostr::prelude::EventId;

const RELAYS: [&str; 3] = [
    "wss://relay-a.example.com",
    "wss://relay-b.example.com",
    "wss://relay-c.example.com",
];

/// 3 relays (two with NIP-77, one without), 20 repos, overlapping placement.
fn scenario(seed: u64) -> (World, Corpus) {
    let spec = CorpusSpec {
        seed,
        repos: 20,
        events_per_repo: 100,
        relays: RELAYS.iter().map(|s| s.to_string()).collect(),
        relays_per_repo: 2,
        ..CorpusSpec::default()
    };
    let corpus = Corpus::generate(&spec);
    let mut rng = Rng::new(seed);
    let mut placed: Vec<Vec<nostr::prelude::Event>> = vec![Vec::new(); RELAYS.len()];
    for (event, repo) in corpus.events.iter().zip(&corpus.repo_of) {
        let listed = &corpus.repo_relays[*repo];
        let is_announcement = event.kind.as_u16() == 30617;
        let mut any = false;
        for (i, url) in RELAYS.iter().enumerate() {
            let lists = listed.iter().any(|l| l == url);
            let put = is_announcement || (lists && rng.chance(70));
            if put {
                placed[i].push(event.clone());
                any |= lists;
            }
        }
        if !any {
            let first = listed.first().cloned().unwrap_or_default();
            let i = RELAYS.iter().position(|u| *u == first).unwrap_or(0);
            placed[i].push(event.clone());
        }
    }
    let config = EngineConfig {
        bootstrap_relays: RELAYS.iter().map(|u| RelayUrl::parse(u).unwrap()).collect(),
        seed,
        ..EngineConfig::default()
    };
    let start = Time::from_secs(spec.start + spec.span_secs + 3600);
    let mut world = World::new(config, start, seed);
    for (i, url) in RELAYS.iter().enumerate() {
        let nip77 = i < 2;
        world.add_relay(
            url,
            SimRelayConfig {
                nip77,
                ..SimRelayConfig::default()
            },
            &placed[i],
        );
    }
    (world, corpus)
}

fn stored(world: &World) -> BTreeSet<EventId> {
    world.store.keys().copied().collect()
}

#[test]
fn converges_to_the_acceptable_union_without_faults() {
    let (mut world, corpus) = scenario(7);
    world.run_for(Duration::from_secs(3600));
    let got = stored(&world);
    let missing: Vec<_> = corpus.acceptable.difference(&got).collect();
    let extra: Vec<_> = got.difference(&corpus.acceptable).collect();
    for (url, phase, method, stats) in world.engine.relays() {
        eprintln!("{url} {phase:?} {method:?} {stats:?}");
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {} extra {} of {}",
        missing.len(),
        extra.len(),
        corpus.acceptable.len()
    );
    assert!(world.engine.is_settled());
}
