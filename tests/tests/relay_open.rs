//! `grasp-sync serve --accept any-event`, the open mode (issue 16): a general relay
//! that stores any valid event within its limits with NIP-01 semantics, driven with raw
//! frames and nostr-sdk's client through the cases a relay conformance suite checks.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_testkit::corpus::{keys, sign, tag};
use grasp_sync_tests::nostr_sdk::prelude::Filter;
use grasp_sync_tests::{client, publish_one, RawClient, TempDaemon};
use nostr::prelude::{Event, EventId, Keys, Timestamp};
use serde_json::{json, Value};

/// A generous deadline for anything the daemon should answer at once.
const WAIT: Duration = Duration::from_secs(10);

/// A daemon in the open mode.
async fn open_relay() -> TempDaemon {
    TempDaemon::start(&["--accept", "any-event"]).await
}

fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// Publishes and asserts it was stored.
async fn stored(raw: &mut RawClient, event: &Event, what: &str) {
    let (accepted, message) = publish_one(raw, event).await;
    assert!(accepted, "{what}: refused: {message}");
}

/// The ids a REQ with `filters` returns, in the order they came.
async fn req_ids(raw: &mut RawClient, filters: &[Value]) -> Vec<EventId> {
    let mut frame = vec![json!("REQ"), json!("q")];
    frame.extend(filters.iter().cloned());
    raw.send(&Value::Array(frame)).await.expect("send REQ");
    let frames = raw
        .recv_until(WAIT, |f| f[0] == "EOSE" || f[0] == "CLOSED")
        .await;
    assert_eq!(
        frames.last().map(|f| f[0].clone()),
        Some(json!("EOSE")),
        "{filters:?}: {frames:?}"
    );
    raw.send(&json!(["CLOSE", "q"])).await.expect("CLOSE");
    frames
        .iter()
        .filter(|f| f[0] == "EVENT")
        .map(|f| EventId::from_hex(f[2]["id"].as_str().unwrap_or_default()).expect("id"))
        .collect()
}

fn ids<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<EventId> {
    events.into_iter().map(|e| e.id).collect()
}

fn note(author: &Keys, at: u64, content: &str) -> Event {
    sign(author, 1, at, Vec::new(), content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_returned_as_sent_and_old_events_are_stored() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let author = keys(1630);
    let content = "escapes \" \\ / \n \r \t \u{8} \u{c} \u{1} \u{1f} \u{7f}; \
                   non-characters \u{fffe} \u{ffff} \u{fdd0} \u{10ffff}; \
                   separators \u{2028} \u{2029}; emoji \u{1f600}";
    let escaped = sign(&author, 1, now() - 10, Vec::new(), content);
    stored(&mut raw, &escaped, "content with escapes").await;
    let old = note(&author, 1, "from 1970");
    stored(&mut raw, &old, "created_at 1").await;
    let y2k = note(&author, 946_684_800, "from 2000");
    stored(&mut raw, &y2k, "created_at 2000").await;

    raw.send(&json!(["REQ", "c", {"ids": [escaped.id.to_hex()]}]))
        .await
        .expect("REQ");
    let frames = raw.recv_until(WAIT, |f| f[0] == "EOSE").await;
    let event = frames
        .iter()
        .find(|f| f[0] == "EVENT")
        .unwrap_or_else(|| panic!("not served: {frames:?}"));
    assert_eq!(event[2]["content"].as_str(), Some(content));
    let back = Event::from_json(event[2].to_string()).expect("an event");
    assert!(back.verify().is_ok(), "served event does not verify");
    assert_eq!(back.id, escaped.id);
    // Byte for byte: the served frame carries the event's JSON as it was sent.
    raw.send(&json!(["REQ", "raw", {"ids": [escaped.id.to_hex()]}]))
        .await
        .expect("REQ");
    let text = raw.recv_text(WAIT).await.expect("an EVENT frame");
    assert_eq!(text, format!(r#"["EVENT","raw",{}]"#, escaped.as_json()));
    assert_eq!(
        raw.recv(WAIT).await.map(|f| f[0].clone()),
        Some(json!("EOSE"))
    );
    raw.send(&json!(["CLOSE", "raw"])).await.expect("CLOSE");

    let served = req_ids(
        &mut raw,
        &[json!({"authors": [author.public_key().to_hex()]})],
    )
    .await;
    assert_eq!(served, ids([&escaped, &y2k, &old]), "newest first");

    // nostr-sdk's client publishes and fetches the same way.
    let sdk = client(&daemon.url()).await;
    let from_sdk = note(&keys(1631), now() - 5, "via nostr-sdk");
    let output = sdk.send_event(&from_sdk).await.expect("send_event");
    assert!(output.failed.is_empty(), "{:?}", output.failed);
    let fetched = sdk
        .fetch_events(Filter::new().id(from_sdk.id))
        .timeout(WAIT)
        .await
        .expect("fetch");
    assert_eq!(
        fetched.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![from_sdk.id]
    );
    sdk.shutdown().await;
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_newest_first_across_filters_each_with_its_limit() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let author = keys(1632);
    let t = now() - 1_000;
    // Kind 1 at t, t+2, t+4, t+6; kind 7 at t+1, t+3, t+5.
    let mut events = Vec::new();
    for i in 0..7u64 {
        let kind = if i % 2 == 0 { 1 } else { 7 };
        events.push(sign(&author, kind, t + i, Vec::new(), &format!("n{i}")));
    }
    for event in &events {
        stored(&mut raw, event, "an event").await;
    }
    let pk = author.public_key().to_hex();
    let served = req_ids(
        &mut raw,
        &[
            json!({"authors": [pk], "kinds": [1], "limit": 2}),
            json!({"authors": [pk], "kinds": [7], "limit": 2}),
        ],
    )
    .await;
    // Each filter's two newest, then all of them newest first.
    assert_eq!(
        served,
        ids([&events[6], &events[5], &events[4], &events[3]]),
        "newest first over both filters"
    );
    // since and until are inclusive.
    let window = req_ids(
        &mut raw,
        &[json!({"authors": [pk], "since": t + 2, "until": t + 4})],
    )
    .await;
    assert_eq!(window, ids([&events[4], &events[3], &events[2]]));
    // Equal created_at: lowest id first.
    let a = sign(&author, 1, t + 10, Vec::new(), "tie a");
    let b = sign(&author, 1, t + 10, Vec::new(), "tie b");
    stored(&mut raw, &a, "tie a").await;
    stored(&mut raw, &b, "tie b").await;
    let ties = req_ids(&mut raw, &[json!({"authors": [pk], "since": t + 10})]).await;
    assert_eq!(ties, vec![a.id.min(b.id), a.id.max(b.id)]);
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaceable_and_addressable_events_keep_only_their_newest_version() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let author = keys(1633);
    let pk = author.public_key().to_hex();
    let t = now() - 1_000;

    let profile_1 = sign(&author, 0, t, Vec::new(), r#"{"name":"one"}"#);
    let profile_2 = sign(&author, 0, t + 1, Vec::new(), r#"{"name":"two"}"#);
    stored(&mut raw, &profile_1, "profile 1").await;
    stored(&mut raw, &profile_2, "profile 2").await;
    let (accepted, message) = publish_one(&mut raw, &profile_1).await;
    assert!(!accepted && message.starts_with("replaced:"), "{message}");
    assert_eq!(
        req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [0]})]).await,
        ids([&profile_2])
    );

    // The same created_at: the lowest id wins, whichever came first.
    let x = sign(&author, 10002, t, Vec::new(), "x");
    let y = sign(&author, 10002, t, Vec::new(), "y");
    let (low, high) = if x.id < y.id { (x, y) } else { (y, x) };
    stored(&mut raw, &high, "the higher id first").await;
    stored(&mut raw, &low, "then the lower").await;
    let (accepted, _) = publish_one(&mut raw, &high).await;
    assert!(!accepted, "the higher id came back");
    assert_eq!(
        req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [10002]})]).await,
        ids([&low])
    );

    // Addressable: per d tag.
    let post = |d: &str, at: u64, text: &str| sign(&author, 30023, at, vec![tag(&["d", d])], text);
    let a1 = post("a", t, "a1");
    let a2 = post("a", t + 5, "a2");
    let b1 = post("b", t, "b1");
    for (event, what) in [(&a1, "a1"), (&a2, "a2"), (&b1, "b1")] {
        stored(&mut raw, event, what).await;
    }
    let served: BTreeSet<EventId> =
        req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [30023]})])
            .await
            .into_iter()
            .collect();
    assert_eq!(served, BTreeSet::from([a2.id, b1.id]));

    // Still so after a restart (versions held in the store are looked up again).
    let mut daemon = daemon;
    raw.close().await;
    daemon.stop().await;
    daemon.restart().await;
    let mut raw = daemon.raw_client().await;
    let (accepted, message) = publish_one(&mut raw, &a1).await;
    assert!(
        !accepted,
        "an older version was taken after a restart: {message}"
    );
    assert!(message.starts_with("replaced:"), "{message}");
    let a3 = post("a", t + 9, "a3");
    stored(&mut raw, &a3, "a3 after a restart").await;
    let served: BTreeSet<EventId> =
        req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [30023]})])
            .await
            .into_iter()
            .collect();
    assert_eq!(served, BTreeSet::from([a3.id, b1.id]));
    // A deletion by address after the restart finds the version stored before it.
    let address = format!("30023:{pk}:b");
    let by_a = sign(&author, 5, t + 20, vec![tag(&["a", &address])], "");
    stored(&mut raw, &by_a, "a deletion by a after a restart").await;
    let served = req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [30023]})]).await;
    assert_eq!(served, ids([&a3]), "b1 survived its deletion");
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_by_id_and_by_address_remove_and_stay() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let author = keys(1634);
    let stranger = keys(1635);
    let pk = author.public_key().to_hex();
    let t = now() - 1_000;

    let doomed = note(&author, t, "regret");
    stored(&mut raw, &doomed, "a note").await;
    // Someone else's deletion deletes nothing.
    let foreign = sign(
        &stranger,
        5,
        t + 1,
        vec![tag(&["e", &doomed.id.to_hex()])],
        "",
    );
    stored(&mut raw, &foreign, "a stranger's deletion").await;
    assert_eq!(
        req_ids(&mut raw, &[json!({"ids": [doomed.id.to_hex()]})]).await,
        ids([&doomed])
    );
    let by_e = sign(
        &author,
        5,
        t + 2,
        vec![tag(&["e", &doomed.id.to_hex()])],
        "",
    );
    stored(&mut raw, &by_e, "a deletion by e").await;
    assert!(req_ids(&mut raw, &[json!({"ids": [doomed.id.to_hex()]})])
        .await
        .is_empty());
    let (accepted, message) = publish_one(&mut raw, &doomed).await;
    assert!(!accepted, "a deleted event was accepted again");
    assert!(message.starts_with("blocked:"), "{message}");

    // By address, up to the deletion's created_at.
    let address = format!("30023:{pk}:post");
    let v1 = sign(&author, 30023, t, vec![tag(&["d", "post"])], "v1");
    stored(&mut raw, &v1, "v1").await;
    let by_a = sign(&author, 5, t + 10, vec![tag(&["a", &address])], "");
    stored(&mut raw, &by_a, "a deletion by a").await;
    let kinds = json!({"authors": [pk], "kinds": [30023]});
    assert!(req_ids(&mut raw, std::slice::from_ref(&kinds))
        .await
        .is_empty());
    let older = sign(
        &author,
        30023,
        t + 10,
        vec![tag(&["d", "post"])],
        "v2, as old as the deletion",
    );
    let (accepted, _) = publish_one(&mut raw, &older).await;
    assert!(!accepted, "a version up to the deletion was accepted");
    let newer = sign(&author, 30023, t + 11, vec![tag(&["d", "post"])], "v3");
    stored(&mut raw, &newer, "a version after the deletion").await;
    assert_eq!(req_ids(&mut raw, &[kinds]).await, ids([&newer]));
    // The deletions themselves are served.
    let deletions = req_ids(&mut raw, &[json!({"authors": [pk], "kinds": [5]})]).await;
    assert_eq!(deletions, ids([&by_a, &by_e]));
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_events_reach_live_subscribers_and_are_never_stored() {
    let daemon = open_relay().await;
    let mut listener = daemon.raw_client().await;
    listener
        .send(&json!(["REQ", "live", {"kinds": [20001]}]))
        .await
        .expect("REQ");
    let frames = listener.recv_until(WAIT, |f| f[0] == "EOSE").await;
    assert_eq!(frames.last().map(|f| f[0].clone()), Some(json!("EOSE")));

    let mut publisher = daemon.raw_client().await;
    let ephemeral = sign(&keys(1636), 20001, now(), Vec::new(), "typing…");
    let (accepted, message) = publish_one(&mut publisher, &ephemeral).await;
    assert!(accepted, "{message}");
    let got = listener.recv_until(WAIT, |f| f[0] == "EVENT").await;
    let event = got.last().filter(|f| f[0] == "EVENT");
    assert_eq!(
        event.map(|f| f[2]["id"].clone()),
        Some(json!(ephemeral.id.to_hex())),
        "not delivered live: {got:?}"
    );
    assert!(
        req_ids(&mut publisher, &[json!({"kinds": [20001]})])
            .await
            .is_empty(),
        "an ephemeral event was stored"
    );
    listener.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_are_refused_and_expiring_ones_vanish() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let author = keys(1637);
    let t = now();
    let expired = sign(
        &author,
        1,
        t - 10,
        vec![tag(&["expiration", &(t - 1).to_string()])],
        "",
    );
    let (accepted, message) = publish_one(&mut raw, &expired).await;
    assert!(!accepted && message.starts_with("invalid:"), "{message}");
    let soon = sign(
        &author,
        1,
        t - 10,
        vec![tag(&["expiration", &(t + 2).to_string()])],
        "",
    );
    stored(&mut raw, &soon, "expiring in 2 s").await;
    assert_eq!(
        req_ids(&mut raw, &[json!({"ids": [soon.id.to_hex()]})]).await,
        ids([&soon])
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        req_ids(&mut raw, &[json!({"ids": [soon.id.to_hex()]})])
            .await
            .is_empty(),
        "an expired event is still served"
    );
    raw.close().await;
}

/// NIP-01 asks for exact 64-character ids in filters: a prefix is refused with a reason,
/// never left unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_prefix_is_refused_with_a_reason() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    raw.send(&json!(["REQ", "p", {"ids": ["abcd"]}]))
        .await
        .expect("REQ");
    let frames = raw
        .recv_until(WAIT, |f| {
            f[0] == "CLOSED" || f[0] == "NOTICE" || f[0] == "EOSE"
        })
        .await;
    let last = frames.last().cloned().unwrap_or_default();
    assert!(
        last[0] == "CLOSED" || last[0] == "NOTICE",
        "an id prefix: {frames:?}"
    );
    let text = last
        .as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(text.starts_with("invalid:"), "{text}");
    raw.close().await;
}

/// The open mode mirrors only what lists it: an announcement listing another relay is
/// stored, and not tracked; one listing us is tracked. NIP-11 says writes are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_mode_stores_announcements_but_mirrors_only_those_listing_it() {
    let daemon = open_relay().await;
    let mut raw = daemon.raw_client().await;
    let owner = keys(1638);
    let t = now() - 100;
    let elsewhere = sign(
        &owner,
        30617,
        t,
        vec![
            tag(&["d", "elsewhere"]),
            tag(&["relays", "wss://relay.example.com"]),
        ],
        "",
    );
    stored(&mut raw, &elsewhere, "an announcement not listing us").await;
    let here = sign(
        &owner,
        30617,
        t,
        vec![tag(&["d", "here"]), tag(&["relays", &daemon.url()])],
        "",
    );
    stored(&mut raw, &here, "an announcement listing us").await;
    let mut tracked = 0;
    for _ in 0..50 {
        tracked = daemon.metric("grasp_sync_repositories").await;
        if tracked >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        daemon.metric("grasp_sync_repositories").await,
        1,
        "tracked {tracked}"
    );
    let nip11 = daemon.nip11().await;
    assert_eq!(nip11["limitation"]["restricted_writes"], false, "{nip11}");
    assert_eq!(nip11["grasp"]["accept"], "any-event", "{nip11}");
    raw.close().await;
}
