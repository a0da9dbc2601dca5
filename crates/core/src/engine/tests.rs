//! Engine tests that look at a relay's state directly.

use super::*;
use crate::limits::RelayLimits;

fn relay() -> RelayUrl {
    RelayUrl::parse("ws://127.0.0.1:7777").expect("url")
}

fn limits(engine: &SyncEngine) -> RelayLimits {
    let id = engine.relay_id(&relay()).expect("relay");
    engine.relays[&id].limits
}

fn frame(engine: &mut SyncEngine, now: Time, text: &str) {
    let input = Input::Frame {
        relay: relay(),
        text: text.to_owned(),
    };
    engine.handle_input(now, input);
}

const DOCUMENT: &str = r#"{"limitation":{"max_subscriptions":20,"max_limit":5000}}"#;

/// Caps a relay showed before its NIP-11 document arrived survive the document; the
/// document's own values apply where they are stricter or nothing was learned; a new
/// connection learns afresh.
#[test]
fn nip11_after_learned_caps_keeps_them() {
    let mut engine = SyncEngine::new(EngineConfig {
        bootstrap_relays: vec![relay()],
        ..EngineConfig::default()
    });
    let now = Time::from_secs(1_700_000_000);
    engine.handle_timeout(now);
    engine.handle_input(now, Input::Connected { relay: relay() });
    let open = engine.relays.values().map(|r| r.subs.len()).sum::<usize>();
    assert!(open >= 1, "a subscription is open");
    frame(
        &mut engine,
        now,
        r#"["NOTICE","ERROR: too many subscriptions"]"#,
    );
    let learned = limits(&engine).max_subscriptions;
    assert_eq!(learned, open.saturating_sub(1).max(1));
    let id = engine.relay_id(&relay()).expect("relay");
    if let Some(r) = engine.relays.get_mut(&id) {
        r.learn_result_cap(120);
    }

    let info = |document: &str| Input::Info {
        relay: relay(),
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
            relay: relay(),
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
