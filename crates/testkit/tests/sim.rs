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
fn scenario(seed: u64, all_nip77: bool) -> (World, Corpus) {
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
        let nip77 = all_nip77 || i < 2;
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
    world.store.ids().collect()
}

#[test]
fn converges_to_the_acceptable_union_without_faults() {
    let (mut world, corpus) = scenario(7, false);
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

fn download_ratio(world: &World) -> f64 {
    let total: u32 = world.deliveries.values().sum();
    total as f64 / world.store.len().max(1) as f64
}

#[test]
fn nip77_relays_download_each_event_about_once() {
    let (mut world, corpus) = scenario(11, true);
    world.run_for(Duration::from_secs(3600));
    let ratio = download_ratio(&world);
    for (url, phase, method, stats) in world.engine.relays() {
        eprintln!(
            "{url} {phase:?} {method:?} recv {} bytes_in {} bytes_out {} rt {} jobs {:?}",
            stats.events_received,
            stats.bytes_in,
            stats.bytes_out,
            stats.round_trips,
            world.engine.relay_jobs(url)
        );
    }
    eprintln!(
        "download ratio {ratio:.3}; stored {} of {}",
        world.store.len(),
        corpus.acceptable.len()
    );
    assert_eq!(stored(&world), corpus.acceptable);
    assert!(ratio <= 1.2, "downloaded {ratio:.2}x the stored events");
}
