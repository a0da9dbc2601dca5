//! The real relays the browser module's tests (web/tests) sync from, started on
//! loopback by `scripts/test-web.sh`: `grasp-sync serve` (NIP-77) and nostr-rs-relay
//! (REQ only) holding overlapping parts of a testkit corpus, plus two scripted relays
//! (a forger, and one whose connection dies mid-answer) with small corpora of their own.
//!
//! `web-fixture OUT.json` starts them, preloads them, writes what the tests need to
//! know (URLs, repositories, the acceptable ids) to OUT.json, then serves until its
//! standard input closes or it is terminated.

mod scripted;

use std::collections::BTreeSet;
use std::io::Read;

use grasp_sync_testkit::Corpus;
use grasp_sync_tests::{corpus, publish, split, Daemon, NostrRsRelay};
use nostr::prelude::{Event, EventId, Kind};
use serde_json::json;

/// Announcements, events tagging a repository, the rest, deletions: the order a relay
/// that judges each event on arrival (our daemon) needs.
fn staged(events: &[Event]) -> Vec<Vec<Event>> {
    let mut stages: Vec<Vec<Event>> = vec![Vec::new(); 4];
    for e in events {
        let tags_repo = e.tags.iter().any(|t| {
            matches!(
                t.as_slice().first().map(String::as_str),
                Some("a") | Some("A")
            )
        });
        let stage = match e.kind {
            Kind::GitRepoAnnouncement => 0,
            Kind::EventDeletion => 3,
            _ if tags_repo => 1,
            _ => 2,
        };
        stages[stage].push(e.clone());
    }
    stages[0].sort_by_key(|e| e.created_at);
    stages
}

fn ids(set: &BTreeSet<EventId>) -> Vec<String> {
    set.iter().map(EventId::to_hex).collect()
}

fn repos(corpus: &Corpus) -> Vec<String> {
    corpus.repos.iter().map(ToString::to_string).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: web-fixture OUT.json");
    let dir = tempfile::tempdir().expect("tempdir");
    // Preloading publishes the whole corpus at once: no rate limit.
    let daemon = Daemon::start(
        &dir.path().join("store"),
        &[
            "--events-per-minute",
            "1000000",
            "--events-per-minute-per-ip",
            "1000000",
        ],
    )
    .await;
    let nrs = NostrRsRelay::start().await;

    // The main corpus: announcements list both relays. The daemon judges each event on
    // arrival (a reply whose root it lacks is refused), so it gets all of it, in stages;
    // nostr-rs-relay holds about 60 %, so both relays are synced from.
    let main = corpus(21, 6, 80, &[daemon.url(), nrs.url()]);
    let parts = split(&main.events, 2, 60, 21);
    for stage in staged(&main.events) {
        let report = publish(&daemon.url(), &stage)
            .await
            .expect("publish to the daemon");
        assert_eq!(report.unanswered, 0, "{report:?}");
        let refused_acceptable: Vec<_> = report
            .rejected
            .iter()
            .filter(|(id, _)| main.acceptable.contains(id))
            .collect();
        assert!(
            refused_acceptable.is_empty(),
            "the daemon refused {refused_acceptable:?}"
        );
    }
    let report = nrs.publish(&parts[1]).await;
    assert_eq!(report.unanswered, 0, "{report:?}");

    // A forger and a relay that dies mid-answer, each announced by a corpus of its own.
    let (listener, forger_url) = scripted::bind().await;
    let forged = corpus(22, 1, 30, std::slice::from_ref(&forger_url));
    scripted::serve_on(listener, forged.events.clone(), scripted::Script::Forger);
    let (listener, dying_url) = scripted::bind().await;
    let dying = corpus(23, 1, 40, std::slice::from_ref(&dying_url));
    scripted::serve_on(listener, dying.events.clone(), scripted::Script::Dies);

    let expectations = json!({
        "daemon": daemon.url(),
        "nostrRsRelay": nrs.url(),
        "repos": repos(&main),
        "acceptable": ids(&main.acceptable),
        "forger": forger_url,
        "forgerRepos": repos(&forged),
        "forgerAcceptable": ids(&forged.acceptable),
        "dying": dying_url,
        "dyingRepos": repos(&dying),
        "malformedPerAnswer": scripted::MALFORMED.len(),
        "forgedPerAnswer": scripted::FORGED_PER_ANSWER,
    });
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&expectations).expect("json"),
    )
    .expect("write OUT.json");
    eprintln!(
        "web-fixture: daemon {}, nostr-rs-relay {}, {} acceptable events; serving until stdin closes",
        daemon.url(),
        nrs.url(),
        main.acceptable.len()
    );
    // Serve until standard input closes (the test script holds it open).
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let _ = closed.await;
    drop((daemon, nrs, dir));
}
