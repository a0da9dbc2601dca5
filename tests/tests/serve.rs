//! `grasp-sync serve` end to end: a daemon that is a relay and mirrors what the
//! announcements published to it list, against real relays on loopback: two rust-nostr
//! LocalRelays (NIP-77, in process), one nostr-rs-relay (no NIP-77, a child process),
//! and the daemon as a child process (SIGTERM, `kill -9`, restart on the same port and
//! store).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grasp_sync_testkit::{Corpus, CorpusSpec};
use grasp_sync_tests::{
    metric_value, publish, run_grasp_sync, split, stored_ids, sync_args, Daemon, Nip77Relay,
    NostrRsRelay, RawClient, SyncRun,
};
use nostr::prelude::{Event, EventId, Kind};
use serde_json::json;
use tempfile::TempDir;

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

/// As [`converge`], and fails the test (with the kinds of the events that differ, the
/// daemon's metrics and its log) when it does not.
async fn assert_converges(
    daemon: &Daemon,
    corpus: &Corpus,
    want: &BTreeSet<EventId>,
    timeout: Duration,
    what: &str,
) {
    let have = converge(daemon, want, timeout).await;
    let missing: BTreeSet<EventId> = want.difference(&have).copied().collect();
    let extra: BTreeSet<EventId> = have.difference(want).copied().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the daemon serves {} missing (kinds {:?}), {} extra (kinds {:?}) of {} \
         after {timeout:?}\n{}\n{}",
        missing.len(),
        kinds(corpus, &missing),
        extra.len(),
        kinds(corpus, &extra),
        want.len(),
        fresh_metrics(daemon).await,
        daemon.log()
    );
}

/// How many of `ids` the corpus has of each kind.
fn kinds(corpus: &Corpus, ids: &BTreeSet<EventId>) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for e in corpus.events.iter().filter(|e| ids.contains(&e.id)) {
        *out.entry(e.kind.as_u16()).or_insert(0) += 1;
    }
    out
}

/// How many root events (issues, pull requests, patches marked `t root`) the corpus has.
fn roots(corpus: &Corpus) -> usize {
    corpus
        .events
        .iter()
        .filter(|e| match e.kind.as_u16() {
            1618 | 1621 => true,
            1617 => e.tags.iter().any(|t| t.as_slice() == ["t", "root"]),
            _ => false,
        })
        .count()
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; whether it held.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `name{relay="url"}`.
fn series(name: &str, relay: &str) -> String {
    format!("{name}{{relay=\"{relay}\"}}")
}

const RECEIVED: &str = "grasp_sync_relay_events_received_total";
const BYTES_IN: &str = "grasp_sync_relay_bytes_in_total";
const FAILURES: &str = "grasp_sync_relay_failures_total";
const UP: &str = "grasp_sync_relay_up";

/// `/metrics` as of now: the daemon refreshes what `/metrics` (and `/health`) report
/// from its sync loop every 500 ms, so this waits past two refreshes first.
async fn fresh_metrics(daemon: &Daemon) -> String {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    daemon.metrics().await
}

/// Waits (up to 60 s) until `/metrics` says the engine is settled with every one of
/// `relays` connected; fails the test otherwise. Returns that page.
async fn wait_settled(daemon: &Daemon, relays: &[String]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (settled, last) = loop {
        let page = fresh_metrics(daemon).await;
        let settled = metric_value(&page, "grasp_sync_settled") == Some(1)
            && relays
                .iter()
                .all(|r| metric_value(&page, &series(UP, r)) == Some(1));
        if settled || tokio::time::Instant::now() >= deadline {
            break (settled, page);
        }
    };
    assert!(
        settled,
        "the daemon did not settle with {relays:?} connected within 60 s:\n{last}\n{}",
        daemon.log()
    );
    last
}

/// The store (the daemon must not run) holds exactly `want`; else fails with the kinds
/// of the events that differ.
async fn assert_stored(dir: &Path, corpus: &Corpus, want: &BTreeSet<EventId>, what: &str) {
    let have = stored_ids(dir).await;
    let missing: BTreeSet<EventId> = want.difference(&have).copied().collect();
    let extra: BTreeSet<EventId> = have.difference(want).copied().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the store has {} missing (kinds {:?}), {} extra (kinds {:?}) of {}",
        missing.len(),
        kinds(corpus, &missing),
        extra.len(),
        kinds(corpus, &extra),
        want.len(),
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The daemon, two LocalRelays (`a`, `b`) and a nostr-rs-relay (`c`), and a corpus
/// whose announcements list all four. The historic part of the corpus (dated 2023) is
/// spread over the three relays with overlap; its live part (created a few minutes ago,
/// within the 10-minute catch-up margin) is held back for the test to publish.
struct Mesh {
    dir: TempDir,
    daemon: Daemon,
    a: Nip77Relay,
    b: Nip77Relay,
    c: NostrRsRelay,
    corpus: Corpus,
    /// The live events, held back, in generation order.
    live: Vec<Event>,
    /// What a correct daemon holds before any live event is published.
    historic: BTreeSet<EventId>,
}

impl Mesh {
    async fn start(seed: u64, repos: usize, events_per_repo: usize, live_pct: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Daemon::start(&dir.path().join("store"), &[]).await;
        let a = Nip77Relay::start(&[]).await;
        let b = Nip77Relay::start(&[]).await;
        let c = NostrRsRelay::start().await;
        let relays = vec![daemon.url(), a.url(), b.url(), c.url()];
        let corpus = Corpus::generate(&CorpusSpec {
            seed,
            repos,
            events_per_repo,
            relays: relays.clone(),
            relays_per_repo: relays.len(),
            live_pct,
            live_window: (unix_now() - 300, 120),
            ..CorpusSpec::default()
        });
        let (live, historic_events): (Vec<Event>, Vec<Event>) = corpus
            .events
            .iter()
            .cloned()
            .partition(|e| corpus.live.contains(&e.id));
        let historic: BTreeSet<EventId> = corpus
            .acceptable
            .difference(&corpus.live)
            .copied()
            .collect();
        let parts = split(&historic_events, 3, 50, seed);
        a.add(&parts[0]).await;
        b.add(&parts[1]).await;
        let report = c.publish(&parts[2]).await;
        assert_eq!(report.unanswered, 0, "{report:?}");
        Self {
            dir,
            daemon,
            a,
            b,
            c,
            corpus,
            live,
            historic,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn remotes(&self) -> Vec<String> {
        vec![self.a.url(), self.b.url(), self.c.url()]
    }

    fn announcements(&self) -> Vec<Event> {
        self.corpus
            .events
            .iter()
            .filter(|e| e.kind == Kind::GitRepoAnnouncement)
            .cloned()
            .collect()
    }

    /// Publishes the announcements to the daemon (and nothing else).
    async fn announce(&self) {
        let report = publish(&self.daemon.url(), &self.announcements())
            .await
            .expect("publish");
        assert_eq!(report.unanswered, 0, "{report:?}");
        // Only older versions are refused.
        assert!(
            report
                .rejected
                .iter()
                .all(|(id, _)| !self.corpus.acceptable.contains(id)),
            "{report:?}"
        );
    }

    /// A per-relay counter of the daemon, for each of the three relays.
    async fn per_relay(&self, name: &str) -> [u64; 3] {
        let page = fresh_metrics(&self.daemon).await;
        let urls = self.remotes();
        [0, 1, 2].map(|i| {
            let series = series(name, &urls[i]);
            metric_value(&page, &series)
                .unwrap_or_else(|| panic!("/metrics has no series {series}:\n{page}"))
        })
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
        ) == Some(1),
        "{metrics}"
    );
}

/// Opens a connection to the daemon with two live subscriptions, `everything`
/// (`{"limit": 0}`) and `comments` (`{"kinds": [1111], "limit": 0}`), and checks both
/// end their (empty) stored part with `EOSE`.
async fn live_client(daemon: &Daemon) -> RawClient {
    let mut client = RawClient::connect(&daemon.url()).await.expect("connect");
    client
        .send(&json!(["REQ", "everything", {"limit": 0}]))
        .await
        .expect("REQ");
    client
        .send(&json!(["REQ", "comments", {"kinds": [1111], "limit": 0}]))
        .await
        .expect("REQ");
    let mut eose = 0;
    let frames = client
        .recv_until(Duration::from_secs(10), |f| {
            eose += usize::from(f[0] == "EOSE");
            eose == 2
        })
        .await;
    assert_eq!(eose, 2, "both subscriptions end with EOSE: {frames:?}");
    assert!(
        frames.iter().all(|f| f[0] != "EVENT"),
        "limit 0 sends no stored event: {frames:?}"
    );
    client
}

/// What a live client received: per subscription, every event (in order, duplicates
/// kept).
#[derive(Debug, Default)]
struct Received {
    everything: Vec<Event>,
    comments: Vec<Event>,
}

impl Received {
    fn ids(events: &[Event]) -> BTreeSet<EventId> {
        events.iter().map(|e| e.id).collect()
    }
}

/// Reads `client` until `everything` covers `want` and `comments` covers its kind-1111
/// part, or `timeout` passes.
async fn listen(mut client: RawClient, want: BTreeSet<EventId>, timeout: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Received::default();
    let mut comment_ids = BTreeSet::new();
    let mut all_ids = BTreeSet::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = client.recv(left).await else {
            break;
        };
        if frame[0] != "EVENT" {
            continue;
        }
        let event = Event::from_json(frame[2].to_string()).expect("an event");
        assert!(event.verify().is_ok(), "a forged event sent live");
        match frame[1].as_str() {
            Some("everything") => {
                all_ids.insert(event.id);
                got.everything.push(event);
            }
            Some("comments") => {
                comment_ids.insert(event.id);
                got.comments.push(event);
            }
            other => panic!("an event for subscription {other:?}"),
        }
        let comments_done = got
            .everything
            .iter()
            .filter(|e| e.kind.as_u16() == 1111 && want.contains(&e.id))
            .all(|e| comment_ids.contains(&e.id));
        if want.is_subset(&all_ids) && comments_done {
            // Anything else already on its way (a duplicate) comes within a moment.
            while let Some(frame) = client.recv(Duration::from_millis(300)).await {
                if frame[0] == "EVENT" {
                    let event = Event::from_json(frame[2].to_string()).expect("an event");
                    match frame[1].as_str() {
                        Some("everything") => got.everything.push(event),
                        _ => got.comments.push(event),
                    }
                }
            }
            break;
        }
    }
    client.close().await;
    got
}

/// Items 1 and 2: three relays hold overlapping parts of a corpus; announcements are
/// published to the daemon, which ends holding exactly the acceptable union; then new
/// events published to the relays (each to about half of them) reach the daemon through
/// its live subscriptions, and from it a client's live subscriptions, filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_mirrors_three_relays_exactly_then_follows_them_live() {
    let mut mesh = Mesh::start(21, 6, 80, 20).await;
    assert!(mesh.live.len() >= 40, "{} live events", mesh.live.len());
    mesh.announce().await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(60),
        "historic union",
    )
    .await;
    let page = wait_settled(&mesh.daemon, &mesh.remotes()).await;
    assert_eq!(
        metric_value(&page, "grasp_sync_repositories"),
        Some(mesh.corpus.repos.len() as u64),
        "{page}"
    );
    assert_eq!(
        metric_value(&page, "grasp_sync_roots"),
        Some(roots(&mesh.corpus) as u64),
        "{page}"
    );
    let c = mesh.c.url();
    assert!(
        metric_value(
            &page,
            &format!("grasp_sync_relay_jobs_total{{relay=\"{c}\",method=\"req\"}}")
        )
        .is_some_and(|n| n > 0),
        "nostr-rs-relay is synced with REQ:\n{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            &format!("grasp_sync_relay_jobs_total{{relay=\"{c}\",method=\"nip77\"}}")
        ),
        Some(0),
        "nostr-rs-relay has no NIP-77:\n{page}"
    );
    let a = mesh.a.url();
    assert!(
        metric_value(
            &page,
            &format!("grasp_sync_relay_jobs_total{{relay=\"{a}\",method=\"nip77\"}}")
        )
        .is_some_and(|n| n > 0),
        "a LocalRelay is synced with NIP-77:\n{page}"
    );

    // A client subscribes live; then the relays get new events.
    let client = live_client(&mesh.daemon).await;
    let live_acceptable: BTreeSet<EventId> = mesh
        .live
        .iter()
        .map(|e| e.id)
        .filter(|id| mesh.corpus.acceptable.contains(id))
        .collect();
    let listening = tokio::spawn(listen(
        client,
        live_acceptable.clone(),
        Duration::from_secs(60),
    ));
    let parts = split(&mesh.live, 3, 50, 22);
    mesh.a.add(&parts[0]).await;
    mesh.b.add(&parts[1]).await;
    let report = mesh.c.publish(&parts[2]).await;
    assert_eq!(report.unanswered, 0, "{report:?}");
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.corpus.acceptable,
        Duration::from_secs(60),
        "after the live events",
    )
    .await;

    let got = listening.await.expect("the listening task");
    let everything = Received::ids(&got.everything);
    let live_ids: BTreeSet<EventId> = mesh.live.iter().map(|e| e.id).collect();
    assert!(
        live_acceptable.is_subset(&everything),
        "the live client missed {} of {} new events",
        live_acceptable.difference(&everything).count(),
        live_acceptable.len()
    );
    assert!(
        everything.is_subset(&live_ids),
        "the live client got {} events that are not new",
        everything.difference(&live_ids).count()
    );
    assert_eq!(
        got.everything.len(),
        everything.len(),
        "the live client got an event twice"
    );
    let comments = Received::ids(&got.comments);
    let want_comments: BTreeSet<EventId> = mesh
        .live
        .iter()
        .filter(|e| e.kind.as_u16() == 1111 && live_acceptable.contains(&e.id))
        .map(|e| e.id)
        .collect();
    assert!(!want_comments.is_empty());
    assert!(
        want_comments.is_subset(&comments),
        "the comments subscription missed {} comments",
        want_comments.difference(&comments).count()
    );
    assert!(
        got.comments.iter().all(|e| e.kind.as_u16() == 1111),
        "the comments subscription got another kind"
    );
    eprintln!(
        "live: {} new events ({} acceptable); the client got {} EVENTs ({} distinct) and \
         {} comments",
        mesh.live.len(),
        live_acceptable.len(),
        got.everything.len(),
        everything.len(),
        got.comments.len()
    );

    assert_eq!(mesh.daemon.stop().await, Some(0), "SIGTERM ends it cleanly");
    let stored = stored_ids(&mesh.store()).await;
    assert_eq!(
        stored, mesh.corpus.acceptable,
        "the store holds exactly the acceptable events"
    );
}

/// Waits (up to 15 s) until the daemon reports `relay` down.
async fn wait_down(daemon: &Daemon, relay: &str) {
    let down = eventually(Duration::from_secs(15), || async {
        metric_value(&fresh_metrics(daemon).await, &series(UP, relay)) == Some(0)
    })
    .await;
    assert!(down, "the daemon did not notice that {relay} went away");
}

/// Item 3: a LocalRelay and nostr-rs-relay restarted while the daemon runs: it
/// reconnects and catches up what each got meanwhile (events only the restarted relay
/// holds), transferring only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_relays_restarted_under_the_daemon_are_caught_up() {
    let mut mesh = Mesh::start(31, 4, 60, 20).await;
    mesh.announce().await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(60),
        "historic union",
    )
    .await;
    wait_settled(&mesh.daemon, &mesh.remotes()).await;
    let received = mesh.per_relay(RECEIVED).await;
    let failures = mesh.per_relay(FAILURES).await;

    // Each new event on exactly one of the two restarted relays.
    let (mut to_b, mut to_c) = (Vec::new(), Vec::new());
    for (i, event) in mesh.live.iter().enumerate() {
        if i % 2 == 0 {
            to_b.push(event.clone());
        } else {
            to_c.push(event.clone());
        }
    }
    assert!(!to_b.is_empty() && !to_c.is_empty());

    // The LocalRelay goes away; it gets its events while down, and comes back.
    mesh.b.stop().await;
    wait_down(&mesh.daemon, &mesh.b.url()).await;
    mesh.b.add(&to_b).await;
    mesh.b.resume().await;
    // nostr-rs-relay goes away, comes back, and gets its events at once.
    mesh.c.stop().await;
    wait_down(&mesh.daemon, &mesh.c.url()).await;
    mesh.c.resume().await;
    let report = mesh.c.publish(&to_c).await;
    assert_eq!(report.unanswered, 0, "{report:?}");

    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.corpus.acceptable,
        Duration::from_secs(60),
        "after the restarts",
    )
    .await;
    wait_settled(&mesh.daemon, &mesh.remotes()).await;
    let received_after = mesh.per_relay(RECEIVED).await;
    let failures_after = mesh.per_relay(FAILURES).await;
    eprintln!(
        "received {received:?} -> {received_after:?}, failures {failures:?} -> \
         {failures_after:?}; {} new events to b, {} to c",
        to_b.len(),
        to_c.len()
    );
    assert!(
        failures_after[1] > failures[1] && failures_after[2] > failures[2],
        "both restarts were seen as connection failures"
    );
    // Only what changed, nothing of the historic corpus (each relay holds over a hundred
    // events): the catch-up from the disconnection finds no local event in its window,
    // so it pages with REQ (as it does at a relay without NIP-77), and a relay sends an
    // event once per filter it matches (`#a`, `#e`, `#E`: a status or a patch reply
    // matches the repository's filter and the root's; 2.1 per event measured); at
    // nostr-rs-relay, which got its events once the daemon may be back, also live.
    let b_got = received_after[1] - received[1];
    let c_got = received_after[2] - received[2];
    assert!(
        b_got as usize <= 3 * to_b.len(),
        "the LocalRelay sent {b_got} events after its restart; it had {} new",
        to_b.len()
    );
    assert!(
        c_got as usize <= 4 * to_c.len(),
        "nostr-rs-relay sent {c_got} events after its restart; it had {} new",
        to_c.len()
    );
    assert_eq!(mesh.daemon.stop().await, Some(0));
    assert_stored(
        &mesh.store(),
        &mesh.corpus,
        &mesh.corpus.acceptable,
        "stored",
    )
    .await;
}

/// Item 4: SIGTERM and restart. The daemon exits with 0 and resumes from its
/// checkpoints: with nothing changed it receives no event; with events published while
/// it was down it receives those, not the corpus again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_resumes_from_its_checkpoints() {
    let mut mesh = Mesh::start(41, 6, 80, 15).await;
    mesh.announce().await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(60),
        "historic union",
    )
    .await;
    wait_settled(&mesh.daemon, &mesh.remotes()).await;
    let first_received = mesh.per_relay(RECEIVED).await;
    let first_bytes: u64 = mesh.per_relay(BYTES_IN).await.iter().sum();
    assert!(
        first_received.iter().sum::<u64>() as usize >= mesh.historic.len(),
        "the first run received {first_received:?} for {} events",
        mesh.historic.len()
    );

    // Nothing changed.
    assert_eq!(mesh.daemon.stop().await, Some(0), "SIGTERM ends it cleanly");
    assert_stored(&mesh.store(), &mesh.corpus, &mesh.historic, "stored").await;
    mesh.daemon.restart().await;
    let page = wait_settled(&mesh.daemon, &mesh.remotes()).await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(10),
        "after a restart",
    )
    .await;
    let received = mesh.per_relay(RECEIVED).await;
    let bytes: u64 = mesh.per_relay(BYTES_IN).await.iter().sum();
    eprintln!(
        "first run: {first_received:?} events, {first_bytes} bytes in; restart with \
         nothing changed: {received:?} events, {bytes} bytes in"
    );
    assert_eq!(
        received,
        [0, 0, 0],
        "nothing changed, nothing received:\n{page}"
    );
    assert!(
        bytes * 5 < first_bytes,
        "the restart read {bytes} bytes (first run {first_bytes})"
    );

    // Events published while it is down.
    assert_eq!(mesh.daemon.stop().await, Some(0), "SIGTERM ends it cleanly");
    let parts = split(&mesh.live, 3, 50, 42);
    mesh.a.add(&parts[0]).await;
    mesh.b.add(&parts[1]).await;
    let report = mesh.c.publish(&parts[2]).await;
    assert_eq!(report.unanswered, 0, "{report:?}");
    mesh.daemon.restart().await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.corpus.acceptable,
        Duration::from_secs(60),
        "events published while it was down",
    )
    .await;
    let page = wait_settled(&mesh.daemon, &mesh.remotes()).await;
    let received = mesh.per_relay(RECEIVED).await;
    let copies: Vec<usize> = parts.iter().map(Vec::len).collect();
    eprintln!(
        "restart after {} new events ({copies:?} copies per relay): {received:?} received",
        mesh.live.len()
    );
    // The LocalRelays reconcile (NIP-77): each sends at most what it holds that is new.
    for i in 0..2 {
        assert!(
            received[i] as usize <= copies[i],
            "relay {i} sent {} events; it held {} new\n{page}",
            received[i],
            copies[i]
        );
    }
    // nostr-rs-relay pages from its checkpoints: the new events, once per historic
    // filter they match (`#a`, `#e`, `#E`; 1.85 per event measured), nothing older
    // (the first run received over 400 events from it).
    assert!(
        received[2] as usize <= 3 * copies[2],
        "nostr-rs-relay sent {} events; it held {} new\n{page}",
        received[2],
        copies[2]
    );
    assert!(
        received.iter().sum::<u64>() * 3 < first_received.iter().sum::<u64>(),
        "not from scratch: {received:?} now, {first_received:?} in the first run"
    );
    assert_eq!(mesh.daemon.stop().await, Some(0));
    assert_stored(
        &mesh.store(),
        &mesh.corpus,
        &mesh.corpus.acceptable,
        "stored",
    )
    .await;
}

/// Item 5: `kill -9` mid-sync, twice, then a restart: the store holds only valid,
/// distinct corpus events after each kill, and the restarted daemon completes it
/// without starting from scratch (the LocalRelays send only what is missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_sync_restarts_consistent_and_converges() {
    let mut mesh = Mesh::start(51, 10, 300, 0).await;
    let all: BTreeSet<EventId> = mesh.corpus.events.iter().map(|e| e.id).collect();
    let total = mesh.historic.len();
    mesh.announce().await;
    let mut held = Vec::new();
    for percent in [20, 50] {
        let target = (total * percent / 100) as u64;
        let before = held.last().map_or(0, |(_, n, _)| *n as u64);
        let reached = eventually(Duration::from_secs(60), || async {
            before + mesh.daemon.metric("grasp_sync_events_stored_total").await >= target
        })
        .await;
        assert!(
            reached,
            "the daemon did not store {percent} %\n{}",
            mesh.daemon.log()
        );
        mesh.daemon.kill().await;
        let ids = stored_ids(&mesh.store()).await;
        assert!(ids.is_subset(&all), "only corpus events stored");
        held.push((percent, ids.len(), ids.len() < total));
        mesh.daemon.restart().await;
    }
    eprintln!("(target %, stored, mid-sync) after each kill: {held:?} of {total}");
    assert!(
        held.iter().any(|(_, _, mid)| *mid),
        "no kill came mid-sync: the corpus is too small for this machine"
    );
    let before = held.last().map_or(0, |h| h.1);
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(90),
        "after kill -9",
    )
    .await;
    wait_settled(&mesh.daemon, &mesh.remotes()).await;
    let received = mesh.per_relay(RECEIVED).await;
    let missing = total.saturating_sub(before);
    eprintln!("after the last restart: {received:?} received; {missing} were missing");
    assert!(
        (received[0] + received[1]) as usize <= missing + total / 20,
        "the LocalRelays sent {received:?} events; {missing} were missing"
    );
    assert_eq!(mesh.daemon.stop().await, Some(0));
    assert_stored(&mesh.store(), &mesh.corpus, &mesh.historic, "stored").await;
}

/// The `daemon: pid N` line of a status text, if any.
fn daemon_line(status: &str) -> Option<&str> {
    status.lines().find(|l| l.starts_with("daemon: pid"))
}

/// `grasp-sync status --data-dir <the daemon's store>`: exit code 0, and the text.
async fn status(store: &Path) -> String {
    let run = run_grasp_sync(&[
        "status".to_owned(),
        "--data-dir".to_owned(),
        store.display().to_string(),
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    run.stdout
}

/// Runs `grasp-sync sync` of the mesh's repositories (asking `a` for the announcements)
/// on the daemon's store, and checks that it handed them to the daemon and that the
/// daemon synced them from every relay; returns the run.
async fn hand_over(mesh: &Mesh) -> SyncRun {
    let args = sync_args(&mesh.corpus.repos, &[mesh.a.url()], &mesh.store());
    let run = run_grasp_sync(&args).await;
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", mesh.daemon.log());
    assert!(
        run.stderr.contains("handing the repositories to it"),
        "{}",
        run.stderr
    );
    let summary = run.summary.as_ref().expect("a JSON summary");
    assert_eq!(
        summary["repos"].as_u64(),
        Some(mesh.corpus.repos.len() as u64),
        "{summary}"
    );
    for url in mesh.remotes() {
        let relay = run.relay(&url).expect("every relay listed was used");
        assert_eq!(relay["state"], "in sync", "{relay}");
    }
    run
}

/// Item 6: `grasp-sync status` and `grasp-sync sync` on the daemon's store. While it
/// runs, status comes from the daemon, and sync hands the repositories to it (the
/// announcements are only on the relays), which then serves them; once it stopped,
/// status reads the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_sync_hand_over_to_a_running_daemon() {
    let mut mesh = Mesh::start(61, 3, 60, 0).await;
    let store = mesh.store();

    let text = status(&store).await;
    let pid = mesh.daemon.pid().expect("running");
    assert_eq!(
        daemon_line(&text).and_then(|l| l.split([' ', ',']).nth(2)),
        Some(pid.to_string().as_str()),
        "status asks the running daemon:\n{text}"
    );
    assert!(text.contains("\n0 tracked repositories"), "{text}");

    hand_over(&mesh).await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(30),
        "after the hand-over",
    )
    .await;
    let repos = format!("\n{} tracked repositories", mesh.corpus.repos.len());
    let text = status(&store).await;
    assert!(daemon_line(&text).is_some(), "{text}");
    assert!(text.contains(&repos), "{text}");

    // No daemon: status reads the store.
    assert_eq!(mesh.daemon.stop().await, Some(0));
    let text = status(&store).await;
    assert!(daemon_line(&text).is_none(), "{text}");
    assert!(text.contains(&repos), "{text}");
    for url in mesh.remotes() {
        assert!(
            text.contains(&format!("\n  {url}  ")),
            "checkpoints of {url}:\n{text}"
        );
    }
    assert_stored(&store, &mesh.corpus, &mesh.historic, "stored").await;
}

/// A sync handed over to the daemon does not sync from the daemon itself: its own URL,
/// which the announcements list, is never a relay to sync from (as for the daemon's
/// own engine, `engine_config` in native/src/serve/mod.rs). The one-shot sync the
/// daemon runs for a hand-over is not told its URLs: it connects to the daemon,
/// downloads what the store already holds (all of it refused as duplicates), and
/// leaves checkpoints for the daemon's own URL in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_does_not_sync_the_daemon_from_itself() {
    let mut mesh = Mesh::start(65, 3, 60, 0).await;
    let run = hand_over(&mesh).await;
    let own = mesh.daemon.url();
    assert!(
        run.relay(&own).is_none(),
        "the hand-over synced from the daemon itself: {}",
        run.relay(&own).unwrap_or_default()
    );
    assert_eq!(mesh.daemon.stop().await, Some(0));
    let text = status(&mesh.store()).await;
    assert!(
        !text.contains(&format!("\n  {own}  ")),
        "checkpoints of the daemon's own URL:\n{text}"
    );
}

/// After a hand-over, the daemon keeps the repositories in sync: events published to
/// the relays later reach it. The daemon's engine learns only the announcements from
/// the hand-over (`serve_api` sends it those), not the root events the one-shot sync
/// stored; reconciling against its store, it never downloads those roots again, so it
/// does not subscribe to what references them (comments, deletions) until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_handed_over_to_the_daemon_are_kept_in_sync() {
    let mesh = Mesh::start(63, 3, 60, 15).await;
    hand_over(&mesh).await;
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.historic,
        Duration::from_secs(30),
        "after the hand-over",
    )
    .await;
    let parts = split(&mesh.live, 3, 50, 64);
    mesh.a.add(&parts[0]).await;
    mesh.b.add(&parts[1]).await;
    let report = mesh.c.publish(&parts[2]).await;
    assert_eq!(report.unanswered, 0, "{report:?}");
    assert_converges(
        &mesh.daemon,
        &mesh.corpus,
        &mesh.corpus.acceptable,
        Duration::from_secs(30),
        "events published after the hand-over",
    )
    .await;
    let page = fresh_metrics(&mesh.daemon).await;
    assert_eq!(
        metric_value(&page, "grasp_sync_roots"),
        Some(roots(&mesh.corpus) as u64),
        "the daemon tracks every root:\n{page}"
    );
}

/// `/metrics` must show what the sync loop did last, also once it is idle. It shows a
/// snapshot the loop refreshes when it steps, at most every 500 ms; nothing refreshes it
/// after the last step, so a step within 500 ms of the previous snapshot stays
/// invisible until something else wakes the loop. Here: an event a client publishes
/// is stored (the client got `OK true`), and `/metrics` never counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_last_step_of_an_idle_sync_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("store"), &[]).await;
    let a = Nip77Relay::start(&[]).await;
    let relays = vec![daemon.url(), a.url()];
    let corpus = Corpus::generate(&CorpusSpec {
        seed: 71,
        repos: 2,
        events_per_repo: 40,
        relays: relays.clone(),
        relays_per_repo: relays.len(),
        live_pct: 20,
        live_window: (unix_now() - 300, 120),
        ..CorpusSpec::default()
    });
    let (live, historic): (Vec<Event>, Vec<Event>) = corpus
        .events
        .iter()
        .cloned()
        .partition(|e| corpus.live.contains(&e.id));
    a.add(&historic).await;
    let announcements: Vec<Event> = historic
        .iter()
        .filter(|e| e.kind == Kind::GitRepoAnnouncement)
        .cloned()
        .collect();
    let report = publish(&daemon.url(), &announcements)
        .await
        .expect("publish");
    assert_eq!(report.unanswered, 0, "{report:?}");
    let want: BTreeSet<EventId> = corpus
        .acceptable
        .difference(&corpus.live)
        .copied()
        .collect();
    assert_converges(&daemon, &corpus, &want, Duration::from_secs(60), "historic").await;
    let page = wait_settled(&daemon, &[a.url()]).await;
    let stored =
        metric_value(&page, "grasp_sync_client_events_stored_total").unwrap_or_else(|| {
            panic!("/metrics has no grasp_sync_client_events_stored_total:\n{page}")
        });

    // One comment, published straight to the daemon, 600 ms after the last snapshot.
    let comment = live
        .iter()
        .find(|e| e.kind.as_u16() == 1111 && corpus.acceptable.contains(&e.id))
        .expect("a live comment")
        .clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = publish(&daemon.url(), &[comment]).await.expect("publish");
    assert_eq!(report.accepted, 1, "{report:?}");
    let counted = eventually(Duration::from_secs(10), || async {
        daemon.metric("grasp_sync_client_events_stored_total").await > stored
    })
    .await;
    assert!(
        counted,
        "an event a client published was stored ({stored} before), and /metrics still \
         does not count it 10 s later:\n{}",
        daemon.metrics().await
    );
}
