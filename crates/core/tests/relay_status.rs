//! What the engine reports of a failing relay: a `Status` output for every phase it
//! enters, Backoff and Dead included, with why it failed; and the last error, kept until
//! the relay is in sync again.

use std::time::Duration;

use grasp_sync_core::engine::{EngineConfig, Input, Output, Phase, SyncEngine, Time};
use grasp_sync_core::{RelayId, RelayUrl};
use serde_json::Value;

fn relay() -> RelayUrl {
    RelayUrl::parse("ws://127.0.0.1:7777").expect("url")
}

/// The handle of [`relay`].
fn handle(engine: &SyncEngine) -> RelayId {
    engine.relay_id(&relay()).expect("a known relay")
}

fn engine() -> SyncEngine {
    SyncEngine::new(EngineConfig {
        bootstrap_relays: vec![relay()],
        one_shot: true,
        ..EngineConfig::default()
    })
}

/// Drains the outputs: the statuses (phase and error) and the frames sent; the store
/// is empty.
fn drain(engine: &mut SyncEngine, now: Time) -> (Vec<(Phase, Option<String>)>, Vec<String>) {
    let (mut statuses, mut sent, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Status {
                relay: r,
                phase,
                error,
            } => {
                assert_eq!(engine.relay_url(r), Some(&relay()));
                statuses.push((phase, error));
            }
            Output::Send { text, .. } => sent.push(text),
            Output::LoadLocalItems { request, .. } => loads.push(request),
            _ => {}
        }
        for request in loads.drain(..) {
            let items = Vec::new();
            engine.handle_input(now, Input::LocalItemsLoaded { request, items });
        }
    }
    (statuses, sent)
}

#[test]
fn failures_report_backoff_then_dead_with_the_reason() {
    let mut engine = engine();
    let start = Time::from_secs(1_700_000_000);
    let mut now = start;
    engine.handle_timeout(now);
    let (statuses, _) = drain(&mut engine, now);
    assert!(
        matches!(statuses[..], [(Phase::Connecting { .. }, None)]),
        "{statuses:?}"
    );
    let mut backoffs = 0;
    loop {
        // Alternately refused by the transport and timed out while connecting.
        let expected = if backoffs % 2 == 0 {
            engine.handle_input(
                now,
                Input::Disconnected {
                    relay: handle(&engine),
                    reason: format!("refused #{backoffs}"),
                },
            );
            format!("refused #{backoffs}")
        } else {
            let Some(Phase::Connecting { deadline }) = phase_of(&engine) else {
                panic!("not connecting");
            };
            now = deadline;
            engine.handle_timeout(now);
            "connect timeout".to_owned()
        };
        let (statuses, _) = drain(&mut engine, now);
        assert_eq!(statuses.len(), 1, "one status per failure: {statuses:?}");
        let (phase, error) = statuses[0].clone();
        assert_eq!(error.as_deref(), Some(expected.as_str()));
        assert_eq!(engine.relay_error(&relay()), Some(expected.as_str()));
        match phase {
            Phase::Backoff { until } => {
                assert!(now.since(start) < Duration::from_secs(24 * 3600));
                backoffs += 1;
                now = until;
            }
            Phase::Dead { until } => {
                assert!(now.since(start) >= Duration::from_secs(24 * 3600));
                assert!(backoffs > 10, "{backoffs} backoffs before dead");
                now = until;
                break;
            }
            other => panic!("failure reported as {other:?}"),
        }
        // The retry: idle, then connecting again, both reported, without an error.
        engine.handle_timeout(now);
        let (statuses, _) = drain(&mut engine, now);
        assert!(
            matches!(
                statuses[..],
                [(Phase::Idle, None), (Phase::Connecting { .. }, None)]
            ),
            "{statuses:?}"
        );
    }
    // Retried after a day: it connects, syncs, and its error is forgotten.
    engine.handle_timeout(now);
    drain(&mut engine, now);
    let id = handle(&engine);
    engine.handle_input(now, Input::Connected { relay: id });
    // The relay has no NIP-11 document: the session waited for that answer.
    let document = None;
    engine.handle_input(
        now,
        Input::InfoFetched {
            relay: id,
            document,
        },
    );
    let (statuses, mut sent) = drain(&mut engine, now);
    assert!(
        matches!(statuses[..], [(Phase::Open, None)]),
        "{statuses:?}"
    );
    assert!(engine.relay_error(&relay()).is_some(), "kept while syncing");
    let mut rounds = 0;
    while !sent.is_empty() {
        rounds += 1;
        assert!(rounds < 50, "the sync does not end");
        for text in std::mem::take(&mut sent) {
            if let Some(answer) = empty_answer(&text) {
                engine.handle_input(
                    now,
                    Input::Frame {
                        relay: id,
                        text: answer,
                    },
                );
            }
        }
        sent = drain(&mut engine, now).1;
    }
    assert!(engine.is_settled());
    assert_eq!(engine.relay_error(&relay()), None, "cleared once in sync");
}

/// What an empty relay answers to a frame we sent.
fn empty_answer(text: &str) -> Option<String> {
    let frame: Value = serde_json::from_str(text).expect("frame");
    let sub = frame.get(1)?.as_str()?;
    match frame.get(0)?.as_str()? {
        "REQ" => Some(format!(r#"["EOSE","{sub}"]"#)),
        "NEG-OPEN" => Some(format!(r#"["NEG-ERR","{sub}","error: unsupported"]"#)),
        _ => None,
    }
}

fn phase_of(engine: &SyncEngine) -> Option<Phase> {
    engine.relays().next().map(|(_, phase, _, _)| phase)
}
