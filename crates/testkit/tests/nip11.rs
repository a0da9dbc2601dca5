//! A relay's NIP-11 `limitation` decides how the engine packs its requests: relays
//! that publish one get REQs within it (never refused for a limit), and a generous one
//! is used (more filters per REQ than the conservative defaults), while a relay with the
//! same strict limits and no document has to refuse some.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::engine::{EngineConfig, Time, Timing};
use grasp_sync_core::RelayUrl;
use grasp_sync_testkit::{Corpus, CorpusSpec, ReqStats, SimRelayConfig, World};
use nostr::prelude::EventId;

const URL: &str = "wss://relay.example.com";
const HOUR: Duration = Duration::from_secs(3600);

fn corpus() -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed: 77,
        repos: 30,
        events_per_repo: 60,
        relays: vec![URL.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    })
}

/// A daemon's engine (live subscriptions too) synced for an hour from one relay
/// holding `corpus`; the relay's REQ statistics and whether the store ended equal to
/// the acceptable events.
fn sync(corpus: &Corpus, relay: SimRelayConfig) -> (ReqStats, bool, World) {
    sync_with(corpus, relay, |_| {})
}

/// [`sync`] in a world `adjust`ed first.
fn sync_with(
    corpus: &Corpus,
    relay: SimRelayConfig,
    adjust: impl FnOnce(&mut World),
) -> (ReqStats, bool, World) {
    let url = RelayUrl::parse(URL).expect("relay url");
    let start =
        Time::from_secs(CorpusSpec::default().start + CorpusSpec::default().span_secs + 3600);
    let config = EngineConfig {
        bootstrap_relays: vec![url.clone()],
        seed: 5,
        ..EngineConfig::default()
    };
    let mut world = World::new(config, start, 5);
    world.add_relay(URL, relay, &corpus.events);
    adjust(&mut world);
    world.run_for(HOUR);
    let stats = world.hosts[&url].relay.req_stats.clone();
    let stored: BTreeSet<EventId> = world.store.ids().collect();
    (stats, stored == corpus.acceptable, world)
}

/// Limits well under the engine's defaults (10 subscriptions, 10 filters, 500 results,
/// 64 KiB): followed only if the engine reads them from the document.
fn strict(nip77: bool, nip11: bool) -> SimRelayConfig {
    SimRelayConfig {
        nip77,
        nip11,
        max_subscriptions: 3,
        max_filters: 2,
        max_results: 40,
        max_message_bytes: 8 * 1024,
        ..SimRelayConfig::default()
    }
}

/// Only the filters per REQ limited (a roomy 1 MiB message): the engine's default of 10
/// filters per REQ would be refused.
fn few_filters(nip77: bool, nip11: bool) -> SimRelayConfig {
    SimRelayConfig {
        nip77,
        nip11,
        max_filters: 2,
        max_message_bytes: 1 << 20,
        ..SimRelayConfig::default()
    }
}

#[test]
fn req_packing_follows_a_published_limitation() {
    let corpus = corpus();
    for nip77 in [false, true] {
        for relay in [strict(nip77, true), few_filters(nip77, true)] {
            let (s, converged, _) = sync(&corpus, relay.clone());
            eprintln!("NIP-77 {nip77}, {relay:?}:\n  {s:?}");
            assert!(converged, "NIP-77 {nip77}: the store differs: {s:?}");
            assert!(s.reqs > 0);
            assert!(s.max_filters <= relay.max_filters, "{s:?}");
            assert!(s.max_bytes <= relay.max_message_bytes, "{s:?}");
            assert!(s.max_limit <= relay.max_results, "{s:?}");
            assert!(s.max_open <= relay.max_subscriptions, "{s:?}");
            assert_eq!(
                (
                    s.refused_large_reqs,
                    s.refused_filters,
                    s.refused_subscriptions
                ),
                (0, 0, 0),
                "NIP-77 {nip77}: REQs refused for size, filters or subscriptions: {s:?}"
            );
            // A NEG-OPEN carries a filter and the first message: its frame limit leaves
            // room for the filter, and one still too large is paged instead.
            assert_eq!(s.refused_large_other, 0, "NIP-77 {nip77}: {s:?}");
        }
    }
}

#[test]
fn without_a_document_the_same_limits_are_exceeded() {
    let corpus = corpus();
    let (s, _, _) = sync(&corpus, strict(false, false));
    assert!(s.refused_large_reqs > 0, "defaults fit after all: {s:?}");
    assert!(s.max_limit > 40, "{s:?}");
    let (s, _, _) = sync(&corpus, few_filters(false, false));
    assert!(s.refused_filters > 0, "defaults fit after all: {s:?}");
}

#[test]
fn a_generous_limitation_is_used() {
    let corpus = corpus();
    for nip77 in [false, true] {
        let relay = SimRelayConfig {
            nip77,
            nip11: true,
            max_subscriptions: 100,
            max_filters: 100,
            max_results: 5_000,
            max_message_bytes: 1 << 20,
            ..SimRelayConfig::default()
        };
        let (s, converged, _) = sync(&corpus, relay);
        assert!(converged, "{s:?}");
        // Pages as large as the relay allows, past the default of 500.
        assert!(s.max_limit > 500, "{s:?}");
        let refused = s.refused_large_reqs
            + s.refused_large_other
            + s.refused_filters
            + s.refused_subscriptions;
        assert_eq!(refused, 0, "{s:?}");
    }
}

/// A document that arrives after the connection opened (a slow HTTP answer, or the
/// browser's socket opening before the fetch's body is read) still shapes the session:
/// the session waits for it. A document later than that wait does not hold the sync
/// up: the session starts under the defaults, which this strict relay refuses in part,
/// until the document comes and a new session is cut under it.
#[test]
fn a_document_later_than_the_connection_still_shapes_the_session() {
    let corpus = corpus();
    let relay = strict(false, true);
    let wait = Timing::default().info_wait;
    let (s, converged, _) = sync_with(&corpus, relay.clone(), |w| w.info_latency = wait / 4);
    assert!(converged, "{s:?}");
    let refused = s.refused_large_reqs + s.refused_filters + s.refused_subscriptions;
    assert_eq!(refused, 0, "{s:?}");
    assert!(s.max_limit <= relay.max_results, "{s:?}");

    let (s, converged, _) = sync_with(&corpus, relay, |w| w.info_latency = wait * 3);
    assert!(
        s.refused_large_reqs > 0,
        "the document was waited for: {s:?}"
    );
    assert!(converged, "refused requests were not cut again: {s:?}");
}
