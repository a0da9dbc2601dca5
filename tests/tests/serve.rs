//! `grasp-sync serve` end to end: a daemon that is a relay and mirrors what the
//! announcements published to it list, against real relays on loopback.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_testkit::{Corpus, CorpusSpec};
use grasp_sync_tests::{publish, split, Daemon, Nip77Relay, NostrRsRelay, RawClient};
use nostr::prelude::{EventId, Kind};
use serde_json::json;

/// Every id the daemon serves for `{}` (all of it: paged past the result limit).
async fn served_ids(daemon: &Daemon) -> BTreeSet<EventId> {
    let mut client = RawClient::connect(&daemon.url()).await.expect("connect");
    let mut ids = BTreeSet::new();
    let mut until: Option<u64> = None;
    loop {
        let mut filter = json!({"limit": 5000});
        if let Some(u) = until {
            filter["until"] = json!(u);
        }
        let events = client
            .req("all", &filter, Duration::from_secs(30))
            .await
            .expect("REQ answers");
        let before = ids.len();
        let oldest = events.iter().map(|e| e.created_at.as_secs()).min();
        for e in &events {
            assert!(e.verify().is_ok(), "a forged event served");
            ids.insert(e.id);
        }
        client.send(&json!(["CLOSE", "all"])).await.expect("CLOSE");
        match oldest {
            Some(o) if events.len() == 5000 && ids.len() > before => until = Some(o),
            _ => return ids,
        }
    }
}

/// Waits until the daemon serves exactly `want` (up to `timeout`), returns what it
/// served last.
async fn converge(
    daemon: &Daemon,
    want: &BTreeSet<EventId>,
    timeout: Duration,
) -> BTreeSet<EventId> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let have = served_ids(daemon).await;
        if &have == want || tokio::time::Instant::now() >= deadline {
            return have;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_published_to_the_daemon_makes_it_mirror_the_relays_it_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("store"), &[]).await;
    let a = Nip77Relay::start(&[]).await;
    let c = NostrRsRelay::start().await;
    let relays = vec![daemon.url(), a.url(), c.url()];
    let corpus = Corpus::generate(&CorpusSpec {
        seed: 5,
        repos: 3,
        events_per_repo: 60,
        relays: relays.clone(),
        relays_per_repo: relays.len(),
        ..CorpusSpec::default()
    });
    let (announcements, rest): (Vec<_>, Vec<_>) = corpus
        .events
        .iter()
        .cloned()
        .partition(|e| e.kind == Kind::GitRepoAnnouncement);
    let parts = split(&rest, 2, 50, 5);
    a.add(&parts[0]).await;
    a.add(&announcements).await;
    let report = c.publish(&parts[1]).await;
    assert_eq!(report.unanswered, 0, "{report:?}");

    // Only the announcements go to the daemon; everything else it must fetch.
    let report = publish(&daemon.url(), &announcements)
        .await
        .expect("publish");
    assert_eq!(report.unanswered, 0, "{report:?}");
    let have = converge(&daemon, &corpus.acceptable, Duration::from_secs(60)).await;
    let missing = corpus.acceptable.difference(&have).count();
    let extra = have.difference(&corpus.acceptable).count();
    assert!(
        missing == 0 && extra == 0,
        "{missing} missing, {extra} extra\n{}",
        daemon.log()
    );
    let metrics = daemon.metrics().await;
    assert!(
        grasp_sync_tests::metric_value(
            &metrics,
            &format!("grasp_sync_relay_up{{relay=\"{}\"}}", a.url())
        ) == 1,
        "{metrics}"
    );
}
