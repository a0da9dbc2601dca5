//! Engine tests that look at a relay's state directly.

use super::*;
use crate::limits::RelayLimits;
use std::time::Duration;

fn relay() -> RelayUrl {
    RelayUrl::parse("ws://127.0.0.1:7777").expect("url")
}

/// The handle of [`relay`].
fn handle(engine: &SyncEngine) -> RelayId {
    engine.relay_id(&relay()).expect("relay")
}

fn limits(engine: &SyncEngine) -> RelayLimits {
    engine.relays[&handle(engine)].limits
}

fn frame(engine: &mut SyncEngine, now: Time, text: &str) {
    let input = Input::Frame {
        relay: handle(engine),
        text: text.to_owned(),
    };
    engine.handle_input(now, input);
}

/// An engine bootstrapping from [`relay`], just connected to it (its session does not
/// wait for the NIP-11 document); and the time.
fn connected_engine() -> (SyncEngine, Time) {
    let mut engine = SyncEngine::new(EngineConfig {
        bootstrap_relays: vec![relay()],
        timing: Timing {
            info_wait: Duration::ZERO,
            ..Timing::default()
        },
        ..EngineConfig::default()
    });
    let now = Time::from_secs(1_700_000_000);
    engine.handle_timeout(now);
    let relay = handle(&engine);
    engine.handle_input(now, Input::Connected { relay });
    (engine, now)
}

const DOCUMENT: &str = r#"{"limitation":{"max_subscriptions":20,"max_limit":5000}}"#;

/// Caps a relay showed before its NIP-11 document arrived survive the document; the
/// document's own values apply where they are stricter or nothing was learned; a new
/// connection learns afresh.
#[test]
fn nip11_after_learned_caps_keeps_them() {
    let (mut engine, now) = connected_engine();
    let open = engine.relays.values().map(|r| r.subs.len()).sum::<usize>();
    assert!(open >= 1, "a subscription is open");
    frame(
        &mut engine,
        now,
        r#"["NOTICE","ERROR: too many subscriptions"]"#,
    );
    let learned = limits(&engine).max_subscriptions;
    assert_eq!(learned, open.saturating_sub(1).max(1));
    let id = handle(&engine);
    if let Some(r) = engine.relays.get_mut(&id) {
        r.learn_result_cap(120);
    }

    let info = |document: &str| Input::InfoFetched {
        relay: id,
        document: Some(document.to_owned()),
    };
    engine.handle_input(now, info(DOCUMENT));
    let merged = limits(&engine);
    assert_eq!(merged.max_subscriptions, learned, "learned cap kept");
    assert_eq!(merged.max_results, 120, "learned result cap kept");
    assert_eq!(merged.max_filters, RelayLimits::default().max_filters);

    // A stricter document wins over what was learned.
    engine.handle_input(now, info(r#"{"limitation":{"max_limit":50}}"#));
    assert_eq!(limits(&engine).max_results, 50);

    // A new connection attempt forgets what this one learned: the document applies.
    engine.handle_input(
        now,
        Input::Disconnected {
            relay: id,
            reason: "closed".to_owned(),
        },
    );
    let Phase::Backoff { until } = engine.relays[&id].phase else {
        panic!("not in backoff");
    };
    engine.handle_timeout(until);
    engine.handle_input(until, info(DOCUMENT));
    let fresh = limits(&engine);
    assert_eq!((fresh.max_subscriptions, fresh.max_results), (20, 5000));
}

/// A session that opens before the relay's NIP-11 document arrived waits for it: it
/// sends nothing and is not settled (a one-shot sync does not end there, a page does
/// not say "in sync"); the document starts it, under the document's limits. Without a
/// document by the deadline, it starts anyway.
#[test]
fn a_session_waits_for_the_nip11_document() {
    let config = EngineConfig {
        bootstrap_relays: vec![relay()],
        ..EngineConfig::default()
    };
    let wait = config.timing.info_wait;
    let sends = |engine: &mut SyncEngine| {
        std::iter::from_fn(|| engine.poll_output())
            .filter(|o| matches!(o, Output::Send { .. } | Output::LoadLocalItems { .. }))
            .count()
    };
    for document in [true, false] {
        let mut engine = SyncEngine::new(config.clone());
        let start = Time::from_secs(1_700_000_000);
        engine.handle_timeout(start);
        let id = handle(&engine);
        let now = start + wait / 2;
        engine.handle_input(now, Input::Connected { relay: id });
        assert_eq!(engine.relays[&id].phase, Phase::Open);
        assert_eq!(sends(&mut engine), 0, "nothing sent before the document");
        assert!(!engine.is_settled(), "settled while waiting");
        assert_eq!(engine.poll_timeout(), Some(start + wait));
        if document {
            let document = Some(r#"{"limitation":{"max_limit":77}}"#.to_owned());
            engine.handle_input(
                now,
                Input::InfoFetched {
                    relay: id,
                    document,
                },
            );
        } else {
            engine.handle_timeout(start + wait);
        }
        assert!(sends(&mut engine) > 0, "the session started");
        let expected = if document {
            77
        } else {
            RelayLimits::default().max_results
        };
        assert_eq!(limits(&engine).max_results, expected);
        let started = engine.relays[&id].waiting_session.is_none();
        assert!(started && !engine.relays[&id].jobs.is_empty());
    }
}

/// While the NIP-77 probe runs, a catch-up window (paged) still starts; a job that
/// would reconcile waits for the probe's answer.
#[test]
fn a_catch_up_window_starts_while_the_probe_runs() {
    let (mut engine, now) = connected_engine();
    let request = std::iter::from_fn(|| engine.poll_output())
        .find_map(|o| match o {
            Output::LoadLocalItems { request, .. } => Some(request),
            _ => None,
        })
        .expect("the discovery job loads its local set");
    let item = (
        nostr::prelude::Timestamp::from(1_600_000_000),
        EventId::from_byte_array([0u8; 32]),
    );
    engine.handle_input(
        now,
        Input::LocalItemsLoaded {
            request,
            items: vec![item],
        },
    );
    let id = engine.relay_id(&relay()).expect("relay");
    assert_eq!(engine.relays[&id].nip77, Nip77::Probing);
    let probe = engine.relays[&id].jobs.values().find(|j| j.probe);
    let filter = probe.expect("the probe runs").filter.clone();

    let window = engine.add_job(id, Vec::new(), filter.clone(), None);
    if let Some(job) = engine
        .relays
        .get_mut(&id)
        .and_then(|r| r.jobs.get_mut(&window))
    {
        job.catch_up = true;
    }
    let plain = engine.add_job(id, Vec::new(), filter, None);
    engine.start_jobs(id);
    let state = |job| &engine.relays[&id].jobs[&job].state;
    assert!(
        matches!(state(window), JobState::Paging(_)),
        "the window pages"
    );
    assert!(
        matches!(state(plain), JobState::Queued),
        "the other job waits"
    );
}

/// Without a verdict on NIP-77, jobs load their local sets side by side: one with
/// nothing stored pages at once, the first NEG-OPEN is the probe, and a job with a
/// local set that finds the probe out waits for its answer.
#[test]
fn jobs_without_a_verdict_load_side_by_side_and_the_first_neg_open_probes() {
    let (mut engine, now) = connected_engine();
    let id = handle(&engine);
    let filter = engine.relays[&id]
        .jobs
        .values()
        .next()
        .expect("the discovery job")
        .filter
        .clone();
    engine.add_job(id, Vec::new(), filter.clone(), None);
    engine.add_job(id, Vec::new(), filter, None);
    engine.start_jobs(id);
    let mut loading: Vec<(RequestId, JobId)> = engine
        .loading
        .iter()
        .map(|(request, (_, job))| (*request, *job))
        .collect();
    loading.sort_unstable_by_key(|(_, job)| *job);
    let [(first, probe), (second, empty), (third, waits)] = loading[..] else {
        panic!("three jobs load side by side: {loading:?}");
    };
    assert_eq!(engine.relays[&id].nip77, Nip77::Unknown, "no probe out yet");
    let item = (
        nostr::prelude::Timestamp::from(1_600_000_000),
        EventId::from_byte_array([0u8; 32]),
    );
    let answer = |request, items| Input::LocalItemsLoaded { request, items };
    engine.handle_input(now, answer(second, Vec::new()));
    engine.handle_input(now, answer(first, vec![item]));
    engine.handle_input(now, answer(third, vec![item]));
    let relay = &engine.relays[&id];
    assert!(matches!(relay.jobs[&empty].state, JobState::Paging(_)));
    assert!(matches!(relay.jobs[&probe].state, JobState::Neg(_)) && relay.jobs[&probe].probe);
    assert_eq!(relay.nip77, Nip77::Probing);
    assert!(matches!(relay.jobs[&waits].state, JobState::Queued));
    assert!(!relay.jobs[&waits].probe);
}
