//! A real relay's NIP-11 `limitation` followed end to end: our own `grasp-sync serve`,
//! configured with limits well under the sync engine's defaults, publishes them in its
//! document and enforces them; `grasp-sync sync` from it must read them and stay within
//! them — nothing refused, and every event fetched though each page holds 40 at most.

use std::collections::BTreeSet;

use grasp_sync_testkit::{Corpus, CorpusSpec};
use grasp_sync_tests::{publish, run_grasp_sync, stored_ids, sync_args, Daemon};
use nostr::prelude::{Event, EventId, Kind};

/// Under the engine's defaults (10 filters, 10 subscriptions, 500 results, 64 KiB).
const LIMITS: &str = "[limits]
max_filters = 2
max_subscriptions = 3
max_limit = 40
max_message_bytes = 16384
max_event_bytes = 16384
events_per_minute = 1000000
events_per_minute_per_ip = 1000000
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_from_our_daemon_follows_the_limits_its_document_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, LIMITS).expect("write the daemon's configuration");
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        &["--config", &config.display().to_string()],
    )
    .await;
    let limitation = daemon.nip11().await["limitation"].clone();
    for (field, want) in [
        ("max_filters", 2),
        ("max_subscriptions", 3),
        ("max_limit", 40),
        ("max_message_length", 16384),
    ] {
        assert_eq!(limitation[field], want, "NIP-11 {field}: {limitation}");
    }

    let corpus = Corpus::generate(&CorpusSpec {
        seed: 91,
        repos: 4,
        events_per_repo: 150,
        relays: vec![daemon.url()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    });
    let (announcements, rest): (Vec<Event>, Vec<Event>) = corpus
        .events
        .iter()
        .cloned()
        .partition(|e| e.kind == Kind::GitRepoAnnouncement);
    for batch in [&announcements, &rest] {
        let report = publish(&daemon.url(), batch).await.expect("publish");
        assert_eq!(report.unanswered, 0, "{report:?}");
    }
    let held = stored_ids(&dir.path().join("daemon")).await;
    assert!(
        corpus.acceptable.is_subset(&held),
        "the daemon holds {} of {} acceptable events",
        corpus.acceptable.intersection(&held).count(),
        corpus.acceptable.len()
    );

    let store = dir.path().join("client");
    let run = run_grasp_sync(&sync_args(&corpus.repos, &[daemon.url()], &store)).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let got: BTreeSet<EventId> = stored_ids(&store).await;
    let missing = corpus.acceptable.difference(&got).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} missing: {run:#?}",
        corpus.acceptable.len()
    );

    let page = daemon.metrics().await;
    for (series, what) in [
        (
            "grasp_sync_client_refusals_total{reason=\"filters\"}",
            "REQs with too many filters",
        ),
        (
            "grasp_sync_client_refusals_total{reason=\"subscriptions\"}",
            "subscriptions past the limit",
        ),
        (
            "grasp_sync_client_disconnects_total{reason=\"message-too-large\"}",
            "messages past max_message_length",
        ),
    ] {
        let n = grasp_sync_tests::counter_value(&page, series);
        assert_eq!(n, 0, "{what}: {n}\n{page}");
    }
    let reqs =
        grasp_sync_tests::counter_value(&page, "grasp_sync_client_frames_total{type=\"REQ\"}");
    assert!(reqs > 0, "the sync sent REQs:\n{page}");
}
