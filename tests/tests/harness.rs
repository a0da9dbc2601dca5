//! The real-peer harness itself: each relay kind starts, serves what it was given, and
//! behaves as documented (NIP-77 or not, restarts keep events, silence is silent).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grasp_sync_tests::nostr_sdk::prelude::{Filter, SyncDirection, SyncOptions};
use grasp_sync_tests::{
    client, corpus, split, Nip77Limits, Nip77Relay, NostrRsRelay, RawClient, SilentRelay,
};
use negentropy::{Negentropy, NegentropyStorageVector};
use nostr::prelude::{Event, EventId};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn relays() -> Vec<String> {
    vec!["ws://127.0.0.1:1".into(), "ws://127.0.0.1:2".into()]
}

fn ids<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeSet<EventId> {
    events.into_iter().map(|e| e.id).collect()
}

/// Every event the relay at `url` serves to a nostr-sdk client for `{}`.
async fn fetch_all(url: &str) -> BTreeSet<EventId> {
    let client = client(url).await;
    let events = client
        .fetch_events(Filter::new())
        .max_events(usize::MAX)
        .timeout(WAIT)
        .await
        .expect("fetch events");
    client.shutdown().await;
    ids(&events)
}

/// A well-formed NIP-77 initial message (hex) for an empty set.
fn neg_open_message() -> String {
    let mut storage = NegentropyStorageVector::new();
    storage.seal().expect("seal");
    let mut negentropy = Negentropy::owned(storage, 60_000).expect("negentropy");
    let message = negentropy.initiate().expect("initiate");
    message.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame_kind(frame: &Value) -> &str {
    frame[0].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_serves_preloaded_events_to_a_client() {
    let corpus = corpus(1, 20, 100, &relays());
    let relay = Nip77Relay::start(&corpus.events).await;
    // The database applies NIP-09 deletions and keeps the newest announcement: it holds
    // exactly what a correct sync ends up storing.
    assert_eq!(ids(&relay.events().await), corpus.acceptable);
    assert!(
        corpus.acceptable.len() > 1_000,
        "more than the default 500 limit"
    );
    assert_eq!(fetch_all(&relay.url()).await, corpus.acceptable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_reconciles_with_negentropy() {
    // About ten thousand events, each on the relay, the client, or both.
    let corpus = corpus(2, 50, 200, &relays());
    let parts = split(&corpus.events, 2, 60, 2);
    let started = Instant::now();
    let relay = Nip77Relay::start(&parts[0]).await;
    let preload = started.elapsed();
    let on_relay = ids(&relay.events().await);

    let client = client(&relay.url()).await;
    for event in &parts[1] {
        client.database().save_event(event).await.expect("save");
    }
    let on_client = ids(&client.database().query(Filter::new()).await.expect("query"));
    let only_relay: BTreeSet<EventId> = on_relay.difference(&on_client).copied().collect();
    let only_client: BTreeSet<EventId> = on_client.difference(&on_relay).copied().collect();
    assert!(only_relay.len() > 1_000 && only_client.len() > 1_000);

    // A dry run reconciles ids only. (A real download of more than 100 ids fails against
    // LocalRelay: nostr-sdk reuses one subscription id for its batches of 100 and the
    // relay's CLOSED after each id-only REQ's EOSE collides with the next batch.)
    let started = Instant::now();
    let output = client
        .sync(Filter::new())
        .with([relay.url()])
        .opts(SyncOptions::new().direction(SyncDirection::Both).dry_run())
        .await
        .expect("sync");
    let reconciled = started.elapsed();
    assert!(output.failed.is_empty(), "{:?}", output.failed);
    let summary = output.value;
    assert_eq!(
        summary.remote.keys().copied().collect::<BTreeSet<_>>(),
        only_relay
    );
    assert_eq!(summary.local, only_client.iter().copied().collect());
    client.shutdown().await;
    eprintln!(
        "{} events preloaded in {preload:?}; {} + {} differences reconciled in {reconciled:?}",
        parts[0].len(),
        only_relay.len(),
        only_client.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_sync_downloads_what_the_client_lacks() {
    let corpus = corpus(10, 5, 100, &relays());
    let relay = Nip77Relay::start(&corpus.events).await;
    let held: Vec<Event> = relay.events().await;
    // The client lacks fewer than 100 (one nostr-sdk download batch).
    let (lacking, has) = held.split_at(60);
    let client = client(&relay.url()).await;
    for event in has {
        client.database().save_event(event).await.expect("save");
    }
    let output = client
        .sync(Filter::new())
        .with([relay.url()])
        .opts(SyncOptions::new().direction(SyncDirection::Down))
        .await
        .expect("sync");
    assert!(output.failed.is_empty(), "{:?}", output.failed);
    let received: BTreeSet<EventId> = output.value.received.keys().copied().collect();
    assert_eq!(received, ids(lacking));
    let after = ids(&client.database().query(Filter::new()).await.expect("query"));
    assert_eq!(after, ids(&held));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_limits_are_configurable() {
    let corpus = corpus(3, 10, 100, &relays());
    let mut limits = Nip77Limits::relay_defaults();
    limits.max_negentropy_items = 100;
    let relay = Nip77Relay::start_with(&corpus.events, limits).await;
    let mut raw = RawClient::connect(&relay.url()).await.expect("connect");
    // LocalRelay's default: 500 events per REQ.
    let served = raw.req("all", &json!({}), WAIT).await.expect("REQ");
    assert_eq!(served.len(), 500);
    // Past max_negentropy_items, NEG-OPEN is refused with NEG-ERR.
    raw.send(&json!(["NEG-OPEN", "neg", {}, neg_open_message()]))
        .await
        .expect("send");
    let answer = raw.recv(WAIT).await.expect("an answer to NEG-OPEN");
    assert_eq!(frame_kind(&answer), "NEG-ERR", "{answer}");
    assert_eq!(answer[2], "rate-limited: too many negentropy items");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_closes_id_only_req_after_eose() {
    let corpus = corpus(4, 2, 20, &relays());
    let relay = Nip77Relay::start(&corpus.events).await;
    let id = corpus.acceptable.first().expect("an event").to_hex();
    let mut raw = RawClient::connect(&relay.url()).await.expect("connect");
    raw.send(&json!(["REQ", "by-id", {"ids": [id]}]))
        .await
        .expect("send");
    let frames = raw.recv_until(WAIT, |f| frame_kind(f) == "CLOSED").await;
    let kinds: Vec<&str> = frames.iter().map(frame_kind).collect();
    assert_eq!(kinds, ["EVENT", "EOSE", "CLOSED"], "{frames:?}");
    assert_eq!(frames[2][2], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_relay_sends_added_events_live_and_restart_keeps_events() {
    let corpus = corpus(5, 5, 40, &relays());
    let (first, later) = corpus.events.split_at(corpus.events.len() / 2);
    let mut relay = Nip77Relay::start(first).await;
    let url = relay.url();
    let mut raw = RawClient::connect(&url).await.expect("connect");
    let stored = raw.req("live", &json!({}), WAIT).await.expect("REQ");
    assert_eq!(ids(&stored), ids(&relay.events().await));

    // Live: stored events reach the open subscription.
    let added = relay.add(&later[..10]).await;
    assert!(added > 0);
    let live: BTreeSet<String> = raw_live_ids(&mut raw, added).await;
    assert_eq!(live.len(), added);

    // Restart: same port, same events; events added while stopped are kept too.
    relay.stop().await;
    assert!(
        RawClient::connect(&url).await.is_err(),
        "stopped relay refuses"
    );
    relay.add(&later[10..]).await;
    relay.resume().await;
    assert_eq!(relay.url(), url);
    let held = ids(&relay.events().await);
    assert_eq!(held, corpus.acceptable);
    assert_eq!(fetch_all(&url).await, held);
}

/// `n` live event ids from `raw`'s open subscription.
async fn raw_live_ids(raw: &mut RawClient, n: usize) -> BTreeSet<String> {
    let mut live = BTreeSet::new();
    while live.len() < n {
        let Some(frame) = raw.recv(WAIT).await else {
            break;
        };
        if frame_kind(&frame) == "EVENT" {
            live.insert(frame[2]["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_rs_relay_serves_published_events_to_a_client() {
    let corpus = corpus(6, 10, 100, &relays());
    let relay = NostrRsRelay::start().await;
    let report = relay.publish(&corpus.events).await;
    assert_eq!(report.unanswered, 0, "{report:?}");
    assert!(report.notices.is_empty(), "{report:?}");
    assert!(corpus.acceptable.len() > 500);
    assert_eq!(fetch_all(&relay.url()).await, corpus.acceptable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_rs_relay_answers_neg_open_with_a_notice() {
    let corpus = corpus(7, 2, 20, &relays());
    let relay = NostrRsRelay::start_with(&corpus.events).await;
    let mut raw = RawClient::connect(&relay.url()).await.expect("connect");
    raw.send(&json!(["NEG-OPEN", "neg", {}, neg_open_message()]))
        .await
        .expect("send");
    let answer = raw.recv(WAIT).await.expect("an answer to NEG-OPEN");
    assert_eq!(answer, json!(["NOTICE", "could not parse command"]));
    // The connection stays usable for the REQ fallback.
    let served = raw.req("after", &json!({}), WAIT).await.expect("REQ");
    assert_eq!(ids(&served), corpus.acceptable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_rs_relay_restart_keeps_events() {
    let corpus = corpus(8, 3, 30, &relays());
    let mut relay = NostrRsRelay::start_with(&corpus.events).await;
    let url = relay.url();
    relay.stop().await;
    assert!(!relay.is_running());
    assert!(
        RawClient::connect(&url).await.is_err(),
        "stopped relay refuses"
    );
    relay.resume().await;
    assert_eq!(relay.url(), url);
    assert_eq!(fetch_all(&url).await, corpus.acceptable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_stays_silent_then_drops_the_connection() {
    let silence = Duration::from_millis(1500);
    let relay = SilentRelay::start(silence).await;
    let started = Instant::now();
    let mut raw = RawClient::connect(&relay.url()).await.expect("handshake");
    raw.send(&json!(["REQ", "x", {}])).await.expect("send");
    assert_eq!(raw.recv(Duration::from_millis(700)).await, None);
    // After the silence the connection is dropped: recv ends well before its time-out.
    assert_eq!(raw.recv(WAIT).await, None);
    let waited = started.elapsed();
    assert!(
        waited >= silence && waited < silence + Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(relay.bytes_received() > 0);

    // It still accepts, silent again; a nostr-sdk client gets nothing.
    let client = client(&relay.url()).await;
    let fetched = client
        .fetch_events(Filter::new())
        .timeout(Duration::from_millis(500))
        .await;
    assert!(fetched.map(|e| e.is_empty()).unwrap_or(true));
    client.shutdown().await;
    assert_eq!(relay.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_relay_without_handshake_hangs_the_connection_attempt() {
    let relay = SilentRelay::start_without_handshake(Duration::from_secs(5)).await;
    let attempt =
        tokio::time::timeout(Duration::from_millis(500), RawClient::connect(&relay.url())).await;
    assert!(attempt.is_err(), "the handshake never completes");
    assert_eq!(relay.connections(), 1);
    assert!(relay.bytes_received() > 0, "the upgrade request was read");
}

#[test]
fn split_puts_every_event_somewhere_and_announcements_everywhere() {
    let corpus = corpus(9, 10, 50, &relays());
    let parts = split(&corpus.events, 3, 40, 9);
    let union: BTreeSet<EventId> = parts.iter().flat_map(ids).collect();
    assert_eq!(union, ids(&corpus.events));
    for event in corpus.events.iter().filter(|e| e.kind.as_u16() == 30617) {
        assert!(parts.iter().all(|p| p.iter().any(|e| e.id == event.id)));
    }
    let total: usize = parts.iter().map(Vec::len).sum();
    assert!(total > corpus.events.len(), "some overlap");
    assert!(
        parts.iter().all(|p| p.len() < corpus.events.len()),
        "no relay has all"
    );
}
