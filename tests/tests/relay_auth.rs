//! NIP-42 on `grasp-sync serve` (issue 16): the challenge on connect, `AUTH` checked
//! (kind 22242, this relay's URL, the challenge, a recent `created_at`, a valid
//! signature) and answered with `OK`, and what `--auth-required` then restricts — with
//! raw frames and with nostr-sdk's client, which authenticates on its own.

use std::time::Duration;

use grasp_sync_testkit::corpus::{keys, sign, tag};
use grasp_sync_tests::nostr_sdk::prelude::{Client, Filter, SignerAuthenticator};
use grasp_sync_tests::{Daemon, RawClient, TempDaemon};
use nostr::prelude::{Event, Keys, Timestamp};
use serde_json::{json, Value};

/// A generous deadline for anything the daemon should answer at once.
const WAIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// Connects and reads the challenge the relay sends first.
async fn connect_challenged(daemon: &Daemon) -> (RawClient, String) {
    let mut raw = RawClient::connect_within(&daemon.url(), WAIT)
        .await
        .expect("connect to the daemon");
    let first = raw.recv(WAIT).await.expect("a first frame");
    assert_eq!(
        first[0], "AUTH",
        "the first frame is not a challenge: {first}"
    );
    let challenge = first[1].as_str().expect("a challenge string").to_owned();
    assert!(challenge.len() >= 16, "a short challenge: {challenge}");
    (raw, challenge)
}

fn auth_event(keys: &Keys, relay: &str, challenge: &str, at: u64) -> Event {
    sign(
        keys,
        22242,
        at,
        vec![tag(&["relay", relay]), tag(&["challenge", challenge])],
        "",
    )
}

/// Sends `frame` and returns the `OK` for `id` (accepted, message).
async fn ok_for(raw: &mut RawClient, frame: &Value, id: &str) -> (bool, String) {
    raw.send(frame).await.expect("send");
    let frames = raw.recv_until(WAIT, |f| f[0] == "OK" && f[1] == id).await;
    let ok = frames
        .last()
        .filter(|f| f[0] == "OK" && f[1] == id)
        .unwrap_or_else(|| panic!("no OK for {id}; got {frames:?}"));
    (
        ok[2].as_bool().expect("a boolean"),
        ok[3].as_str().expect("a message").to_owned(),
    )
}

async fn auth(raw: &mut RawClient, event: &Event) -> (bool, String) {
    let json: Value = serde_json::from_str(&event.as_json()).expect("JSON");
    ok_for(raw, &json!(["AUTH", json]), &event.id.to_hex()).await
}

async fn publish(raw: &mut RawClient, event: &Event) -> (bool, String) {
    let json: Value = serde_json::from_str(&event.as_json()).expect("JSON");
    ok_for(raw, &json!(["EVENT", json]), &event.id.to_hex()).await
}

/// The frame that ends a REQ: `EOSE` or `CLOSED`.
async fn req_end(raw: &mut RawClient, id: &str) -> Value {
    raw.send(&json!(["REQ", id, {"limit": 1}]))
        .await
        .expect("REQ");
    let frames = raw
        .recv_until(WAIT, |f| (f[0] == "EOSE" || f[0] == "CLOSED") && f[1] == id)
        .await;
    frames.last().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_and_writes_wait_for_it() {
    let daemon = TempDaemon::start(&["--accept", "any-event", "--auth-required", "writes"]).await;
    let url = daemon.url();
    let (mut raw, challenge) = connect_challenged(&daemon).await;
    let me = keys(1640);
    let note = sign(&me, 1, now() - 5, Vec::new(), "hello");

    let (accepted, message) = publish(&mut raw, &note).await;
    assert!(!accepted, "a write before AUTH was taken");
    assert!(message.starts_with("auth-required:"), "{message}");
    // Reads need no authentication here.
    assert_eq!(req_end(&mut raw, "r").await[0], "EOSE");

    let wrong = [
        (
            "another relay",
            auth_event(&me, "wss://relay.example.com", &challenge, now()),
        ),
        (
            "another challenge",
            auth_event(&me, &url, "not-the-challenge", now()),
        ),
        (
            "an hour old",
            auth_event(&me, &url, &challenge, now() - 3_600),
        ),
        (
            "another kind",
            sign(
                &me,
                1,
                now(),
                vec![tag(&["relay", &url]), tag(&["challenge", &challenge])],
                "",
            ),
        ),
    ];
    for (what, event) in &wrong {
        let (accepted, message) = auth(&mut raw, event).await;
        assert!(!accepted, "{what}: AUTH accepted");
        assert!(message.starts_with("invalid:"), "{what}: {message}");
    }
    // A signature of another event.
    let good = auth_event(&me, &url, &challenge, now());
    let other = auth_event(&me, &url, &challenge, now() - 1);
    let mut forged: Value = serde_json::from_str(&good.as_json()).expect("JSON");
    forged["sig"] = json!(other.sig.to_string());
    let (accepted, message) = ok_for(&mut raw, &json!(["AUTH", forged]), &good.id.to_hex()).await;
    assert!(!accepted && message.starts_with("invalid:"), "{message}");
    // Still not authenticated.
    let (accepted, _) = publish(&mut raw, &note).await;
    assert!(!accepted, "a failed AUTH let a write through");

    assert_eq!(auth(&mut raw, &good).await, (true, String::new()));
    assert_eq!(publish(&mut raw, &note).await, (true, String::new()));

    let nip11 = daemon.nip11().await;
    assert_eq!(nip11["limitation"]["auth_required"], true, "{nip11}");
    assert_eq!(nip11["limitation"]["restricted_writes"], true, "{nip11}");
    assert!(nip11["supported_nips"]
        .as_array()
        .is_some_and(|n| n.contains(&json!(42))));
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_require_auth_too() {
    let daemon = TempDaemon::start(&["--accept", "any-event", "--auth-required", "all"]).await;
    let (mut raw, challenge) = connect_challenged(&daemon).await;
    let closed = req_end(&mut raw, "r").await;
    assert_eq!(closed[0], "CLOSED", "{closed}");
    assert!(
        closed[2]
            .as_str()
            .unwrap_or_default()
            .starts_with("auth-required:"),
        "{closed}"
    );
    let me = keys(1641);
    let good = auth_event(&me, &daemon.url(), &challenge, now());
    assert_eq!(auth(&mut raw, &good).await, (true, String::new()));
    assert_eq!(req_end(&mut raw, "r2").await[0], "EOSE");
    raw.close().await;
}

/// With `repos-of-allowed-authors`, writes need a client authenticated as an allowed
/// author; nostr-sdk's client answers the challenge with its signer by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_mode_takes_writes_from_authenticated_allowed_authors() {
    let maintainer = keys(1642);
    let stranger = keys(1643);
    let allowed = maintainer.public_key().to_hex();
    let daemon = TempDaemon::start(&[
        "--accept",
        "repos-of-allowed-authors",
        "--allow-author",
        &allowed,
        "--auth-required",
        "writes",
    ])
    .await;
    let url = daemon.url();
    let announcement = |keys: &Keys, d: &str| {
        sign(
            keys,
            30617,
            now() - 10,
            vec![tag(&["d", d]), tag(&["relays", &url])],
            "",
        )
    };

    // A stranger, authenticated, is restricted.
    let (mut raw, challenge) = connect_challenged(&daemon).await;
    let stranger_auth = auth_event(&stranger, &url, &challenge, now());
    assert_eq!(auth(&mut raw, &stranger_auth).await, (true, String::new()));
    let (accepted, message) = publish(&mut raw, &announcement(&stranger, "theirs")).await;
    assert!(!accepted);
    assert!(message.starts_with("restricted:"), "{message}");
    raw.close().await;

    // The maintainer, through nostr-sdk with its keys as signer.
    let sdk = Client::builder()
        .authenticator(SignerAuthenticator::new(maintainer.clone()))
        .build();
    sdk.add_relay(&url).await.expect("add relay");
    sdk.connect().and_wait(WAIT).await;
    let ours = announcement(&maintainer, "ours");
    // The client answers the challenge as it arrives; an EVENT sent before its AUTH was
    // answered gets `auth-required:` and goes again.
    let mut failed = Default::default();
    for _ in 0..20 {
        let output = sdk.send_event(&ours).await.expect("send_event");
        if output.success.len() == 1 {
            failed = Default::default();
            break;
        }
        failed = output.failed;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(failed.is_empty(), "{failed:?}");
    let fetched = sdk
        .fetch_events(Filter::new().id(ours.id))
        .timeout(WAIT)
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 1);
    sdk.shutdown().await;
}
