//! `grasp-sync serve` speaks NIP-01 to the letter (issue 16), driven with raw frames and
//! nostr-sdk's client: every EVENT whose id can be read gets an `OK` with a
//! machine-readable prefix, a fresh data directory starts quietly, and rejections
//! waiting cannot change come back at once.

use std::time::{Duration, Instant};

use grasp_sync_testkit::corpus::{keys, sign, tag};
use grasp_sync_tests::{publish_one, RawClient, TempDaemon};
use nostr::prelude::{Event, Timestamp};
use serde_json::{json, Value};

/// A generous deadline for anything the daemon should answer at once.
const WAIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// The next frame of type `kind` (others skipped).
///
/// # Panics
/// When none comes within [`WAIT`].
async fn next_frame(raw: &mut RawClient, kind: &str) -> Value {
    let frames = raw.recv_until(WAIT, |f| f[0] == kind).await;
    match frames.last() {
        Some(f) if f[0] == kind => f.clone(),
        _ => panic!("no {kind} within {WAIT:?}; got {frames:?}"),
    }
}

/// The first `OK` or `NOTICE` after sending `text`.
async fn answer(raw: &mut RawClient, text: &str) -> Value {
    raw.send_text(text).await.expect("send");
    let frames = raw
        .recv_until(WAIT, |f| f[0] == "OK" || f[0] == "NOTICE")
        .await;
    frames
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("{text:.120}: no OK or NOTICE within {WAIT:?}"))
}

/// `event`'s JSON with `field` set to the raw JSON `value`, as an EVENT frame (the id
/// kept).
fn with_field(event: &Event, field: &str, value: &str) -> String {
    let json = event.as_json();
    let old = serde_json::to_string(&serde_json::from_str::<Value>(&json).expect("JSON")[field])
        .expect("JSON");
    let needle = format!("\"{field}\":{old}");
    assert!(json.contains(&needle), "{json} has no {needle}");
    format!(
        r#"["EVENT",{}]"#,
        json.replacen(&needle, &format!("\"{field}\":{value}"), 1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_with_a_readable_id_gets_ok_false_invalid_and_the_rest_a_notice() {
    let daemon = TempDaemon::start(&[]).await;
    let author = keys(1601);
    let event = sign(&author, 1, now() - 60, vec![tag(&["t", "x"])], "hello");
    let other = sign(&author, 1, now() - 61, Vec::new(), "other");
    let id = event.id.to_hex();
    let mut raw = daemon.raw_client().await;

    let cases = [
        (
            "created_at before 1970",
            with_field(&event, "created_at", "-1"),
        ),
        (
            "created_at in scientific notation",
            with_field(&event, "created_at", &format!("{}e0", event.created_at)),
        ),
        (
            "kind in scientific notation",
            with_field(&event, "kind", "1e0"),
        ),
        ("a fractional kind", with_field(&event, "kind", "1.5")),
        ("an empty tag", with_field(&event, "tags", "[[]]")),
        (
            "a tag that is not strings",
            with_field(&event, "tags", "[[1]]"),
        ),
        (
            "content that is not a string",
            with_field(&event, "content", "7"),
        ),
        (
            "a pubkey that is not hex",
            with_field(&event, "pubkey", "\"zz\""),
        ),
        ("a missing sig", {
            let mut json: Value = serde_json::from_str(&event.as_json()).expect("JSON");
            json.as_object_mut().expect("object").remove("sig");
            json!(["EVENT", json]).to_string()
        }),
        (
            "a signature of another event",
            with_field(&event, "sig", &format!("\"{}\"", other.sig)),
        ),
        (
            "content changed under the id",
            with_field(&event, "content", "\"tampered\""),
        ),
    ];
    for (what, frame) in &cases {
        let ok = answer(&mut raw, frame).await;
        assert_eq!(ok[0], "OK", "{what}: {ok}");
        assert_eq!(ok[1], id, "{what}: {ok}");
        assert_eq!(ok[2], false, "{what}: {ok}");
        let message = ok[3].as_str().unwrap_or_default();
        assert!(
            message.starts_with("invalid: "),
            "{what}: {message:?} has no invalid: prefix"
        );
    }

    // No id to answer to: a NOTICE, and the connection goes on.
    for frame in [
        r#"["EVENT",{"id":"x"}]"#.to_owned(),
        r#"["EVENT",{"kind":1}]"#.to_owned(),
        r#"["EVENT",42]"#.to_owned(),
    ] {
        let notice = answer(&mut raw, &frame).await;
        assert_eq!(notice[0], "NOTICE", "{frame}: {notice}");
        assert!(notice[1]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid: "));
    }

    // Nothing was stored; the genuine event then is.
    raw.send_text(&format!(r#"["EVENT",{}]"#, event.as_json()))
        .await
        .expect("send");
    let ok = next_frame(&mut raw, "OK").await;
    assert_eq!(ok[1], id);
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_directory_starts_quietly() {
    let daemon = TempDaemon::start(&[]).await;
    let log = daemon.log();
    for noise in ["Migrating database", "Processing", "kc_index"] {
        assert!(
            !log.contains(noise),
            "{noise:?} logged on a fresh store:\n{log}"
        );
    }
    assert!(log.contains("relay listening"), "{log}");
}

/// Sends `event` and times its `OK`: (accepted, message, how long it took).
async fn timed_ok(raw: &mut RawClient, event: &Event) -> (bool, String, Duration) {
    let started = Instant::now();
    let (accepted, message) = publish_one(raw, event).await;
    (accepted, message, started.elapsed())
}

/// In the GRASP modes (default `list-us`, and `all`), a refusal no arrival can change
/// comes back at once with its reason; a NIP-34 event whose repository or root may still
/// arrive waits for it, and is stored when it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_waiting_cannot_change_come_back_at_once() {
    for mode in ["list-us", "all"] {
        let daemon = TempDaemon::start(&["--accept", mode]).await;
        let url = daemon.url();
        let owner = keys(1620);
        let stranger = keys(1621);
        let t = now() - 600;
        let unknown_id = "ab".repeat(32);
        let coord = format!("30617:{}:tools", owner.public_key().to_hex());
        let mut raw = daemon.raw_client().await;

        let never = [
            (
                "a kind-1 reply to an unknown id",
                sign(&stranger, 1, t, vec![tag(&["e", &unknown_id])], "+1"),
            ),
            (
                "a kind-1 note about an untracked repository",
                sign(&stranger, 1, t, vec![tag(&["a", &coord])], "nice"),
            ),
            (
                "a reaction to an unknown id",
                sign(&stranger, 7, t, vec![tag(&["e", &unknown_id])], "+"),
            ),
            (
                "a kind-1 note referencing nothing",
                sign(&stranger, 1, t, Vec::new(), "gm"),
            ),
        ];
        for (what, event) in &never {
            let (accepted, message, took) = timed_ok(&mut raw, event).await;
            assert!(!accepted, "{mode}: {what}: accepted");
            assert_eq!(
                message, "blocked: not a NIP-34 event of a repository this relay tracks",
                "{mode}: {what}"
            );
            assert!(
                took < Duration::from_secs(1),
                "{mode}: {what}: answered after {took:?}, not at once"
            );
        }

        // A comment under an issue of a repository not yet announced: waiting helps.
        let announcement = sign(
            &owner,
            30617,
            t,
            vec![tag(&["d", "tools"]), tag(&["relays", &url])],
            "",
        );
        let issue = sign(
            &stranger,
            1621,
            t + 1,
            vec![tag(&["a", &coord])],
            "it breaks",
        );
        let issue_hex = issue.id.to_hex();
        let comment = sign(
            &owner,
            1111,
            t + 2,
            vec![tag(&["E", &issue_hex]), tag(&["e", &issue_hex])],
            "fixed",
        );
        let (accepted, message, took) = timed_ok(&mut raw, &comment).await;
        assert!(!accepted, "{mode}: an orphan comment was stored");
        assert_eq!(
            message, "blocked: not a NIP-34 event of a repository this relay tracks",
            "{mode}"
        );
        assert!(
            took >= Duration::from_millis(1_500),
            "{mode}: an orphan comment was refused after {took:?}, without waiting"
        );
        // Sent first, its issue and announcement arriving during the wait: stored.
        for event in [&comment, &announcement, &issue] {
            raw.send_text(&format!(r#"["EVENT",{}]"#, event.as_json()))
                .await
                .expect("send");
        }
        let want: Vec<String> = [&comment, &announcement, &issue]
            .iter()
            .map(|e| e.id.to_hex())
            .collect();
        let mut oks = Vec::new();
        let frames = raw
            .recv_until(WAIT, |f| {
                if f[0] == "OK" {
                    oks.push((f[1].as_str().unwrap_or_default().to_owned(), f[2].clone()));
                }
                oks.len() == want.len()
            })
            .await;
        for id in &want {
            assert!(
                oks.iter().any(|(i, ok)| i == id && *ok == true),
                "{mode}: {id} not stored: {frames:?}"
            );
        }
        raw.close().await;
    }
}
