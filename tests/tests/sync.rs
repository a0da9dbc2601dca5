//! `grasp-sync sync` against real relays on loopback: two rust-nostr LocalRelays
//! (NIP-77) and one nostr-rs-relay (no NIP-77), holding overlapping parts of a corpus.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use grasp_sync::store::LmdbStore;
use grasp_sync_driver::Store;
use grasp_sync_testkit::Corpus;
use grasp_sync_tests::{
    corpus, run_grasp_sync, spawn_grasp_sync, split, stored_ids, sync_args, Nip77Relay,
    NostrRsRelay, SilentRelay, SyncRun,
};
use nostr::prelude::{EventId, Filter};

/// Three relays holding overlapping halves of a corpus whose announcements list all
/// three.
struct Peers {
    a: Nip77Relay,
    b: Nip77Relay,
    c: NostrRsRelay,
    corpus: Corpus,
}

impl Peers {
    async fn start(seed: u64, repos: usize, events_per_repo: usize) -> Self {
        Self::start_listing(seed, repos, events_per_repo, &[]).await
    }

    /// As `start`, with announcements also listing `more` relays.
    async fn start_listing(
        seed: u64,
        repos: usize,
        events_per_repo: usize,
        more: &[String],
    ) -> Self {
        let a = Nip77Relay::start(&[]).await;
        let b = Nip77Relay::start(&[]).await;
        let c = NostrRsRelay::start().await;
        let mut urls = vec![a.url(), b.url(), c.url()];
        urls.extend(more.iter().cloned());
        let corpus = corpus(seed, repos, events_per_repo, &urls);
        let parts = split(&corpus.events, 3, 50, seed);
        a.add(&parts[0]).await;
        b.add(&parts[1]).await;
        let report = c.publish(&parts[2]).await;
        assert!(report.unanswered == 0, "{report:?}");
        Self { a, b, c, corpus }
    }

    fn urls(&self) -> Vec<String> {
        vec![self.a.url(), self.b.url(), self.c.url()]
    }
}

fn assert_exactly(stored: &BTreeSet<EventId>, corpus: &Corpus, run: &SyncRun) {
    let missing = corpus.acceptable.difference(stored).count();
    let extra = stored.difference(&corpus.acceptable).count();
    assert!(
        missing == 0 && extra == 0,
        "store differs from the acceptable union: {missing} missing, {extra} extra\n{:#?}\n{}",
        run.summary,
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mirrors_the_union_and_a_second_run_downloads_nothing() {
    let peers = Peers::start(11, 8, 120).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = sync_args(&peers.corpus.repos, &[peers.a.url()], dir.path());

    let t = std::time::Instant::now();
    let first = run_grasp_sync(&args).await;
    eprintln!("first run {:?}:", t.elapsed());
    for r in first.relays() {
        eprintln!("  {r}");
    }
    assert_eq!(first.code, Some(0), "{first:#?}");
    let stored = stored_ids(dir.path()).await;
    assert_exactly(&stored, &peers.corpus, &first);
    for url in peers.urls() {
        let relay = first.relay(&url).expect("every listed relay was used");
        assert_eq!(relay["state"], "in sync", "{relay}");
    }
    let c = first.relay(&peers.c.url()).expect("nostr-rs-relay");
    assert_eq!(c["method"], "REQ", "nostr-rs-relay has no NIP-77: {c}");
    let a = first.relay(&peers.a.url()).expect("LocalRelay");
    assert!(a["jobs_negentropy"].as_u64() > Some(0), "{a}");

    let t = std::time::Instant::now();
    let second = run_grasp_sync(&args).await;
    eprintln!("second run {:?}:", t.elapsed());
    for r in second.relays() {
        eprintln!("  {r}");
    }
    assert_eq!(second.code, Some(0), "{second:#?}");
    assert_exactly(&stored_ids(dir.path()).await, &peers.corpus, &second);
    eprintln!(
        "first run: {} events, {} bytes in; second run: {} events, {} bytes in",
        first.total("received"),
        first.total("bytes_in"),
        second.total("received"),
        second.total("bytes_in")
    );
    assert_eq!(second.total("received"), 0, "{:#?}", second.summary);

    let status = run_grasp_sync(&[
        "status".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ])
    .await;
    eprintln!("{}", status.stdout);
    assert_eq!(status.code, Some(0), "{status:#?}");
    assert!(
        status.stdout.contains(&format!(
            "{} tracked repositories",
            peers.corpus.repos.len()
        )),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("3 relays with checkpoints"),
        "{}",
        status.stdout
    );
    // Each relay holds about half of what the store holds: a reconciliation still lists
    // the ids of the relay's ranges that differ (tens of KiB here), but downloads nothing.
    assert!(
        second.total("bytes_in") * 5 < first.total("bytes_in"),
        "the second run read {} bytes (first {})",
        second.total("bytes_in"),
        first.total("bytes_in")
    );
}

/// Announcements also list a relay that accepts connections and never answers (and
/// nostr-rs-relay refuses NIP-77 throughout): the sync still ends with everything the
/// other relays hold, and says which relay gave nothing — its state is `gaps` (its
/// queries were given up on) and the exit status 4, not "in sync" and 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_relay_does_not_stop_the_sync() {
    let silent = SilentRelay::start(Duration::from_secs(600)).await;
    let peers = Peers::start_listing(12, 4, 80, &[silent.url()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = sync_args(&peers.corpus.repos, &[peers.a.url()], dir.path());
    let t = std::time::Instant::now();
    let run = run_grasp_sync(&args).await;
    eprintln!("run {:?}", t.elapsed());
    for r in run.relays() {
        eprintln!("  {r}");
    }
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(run.stderr.contains("left gaps"), "{}", run.stderr);
    assert_exactly(&stored_ids(dir.path()).await, &peers.corpus, &run);
    let quiet = run
        .relay(&silent.url())
        .expect("the silent relay was tried");
    assert_eq!(quiet["received"], 0, "{quiet}");
    assert_eq!(quiet["bytes_in"], 0, "{quiet}");
    assert_eq!(quiet["state"], "gaps", "{quiet}");
    assert!(quiet["abandoned_jobs"].as_u64() > Some(0), "{quiet}");
    for r in run
        .relays()
        .into_iter()
        .filter(|r| r["url"] != silent.url().as_str())
    {
        assert_eq!(r["state"], "in sync", "{r}");
    }
    assert!(silent.connections() > 0, "it was connected to");
    let c = run.relay(&peers.c.url()).expect("nostr-rs-relay");
    assert_eq!(c["method"], "REQ", "{c}");
}

/// The timeout passes while a relay that listens but never answers (with generous
/// EOSE and NIP-77 timeouts) is still not in sync: the sync keeps what it got from the
/// other relay and says so, in its summary (`settled: false`) and with exit status 3,
/// not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_times_out_with_relays_not_in_sync_exits_3() {
    let silent = SilentRelay::start(Duration::from_secs(600)).await;
    let a = Nip77Relay::start(&[]).await;
    let corpus = corpus(15, 2, 20, &[a.url(), silent.url()]);
    a.add(&corpus.events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = sync_args(&corpus.repos, &[a.url()], dir.path());
    for (flag, value) in [
        ("--timeout-secs", "5"),
        ("--eose-timeout-secs", "60"),
        ("--neg-timeout-secs", "60"),
    ] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .expect("sync_args sets it");
        args[i + 1] = value.into();
    }
    let run = run_grasp_sync(&args).await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    let summary = run.summary.as_ref().expect("a JSON summary");
    assert_eq!(summary["settled"], false, "{summary}");
    assert!(run.stderr.contains("timed out after 5 s"), "{}", run.stderr);
    assert!(
        silent.connections() > 0,
        "the silent relay was connected to"
    );
    let synced = run.relay(&a.url()).expect("the answering relay");
    assert_eq!(synced["state"], "in sync", "{synced}");
    assert!(summary["stored"].as_u64() > Some(0), "{summary}");
}

/// A relay stopped and restarted while the sync runs: the sync sees it go away
/// (a failure counted), reconnects and ends complete with it in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_mid_sync() {
    let mut peers = Peers::start(13, 8, 300).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = sync_args(&peers.corpus.repos, &[peers.a.url()], dir.path());
    let running = tokio::spawn(async move { run_grasp_sync(&args).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    peers.b.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    peers.b.resume().await;
    let run = running.await.expect("the sync task");
    for r in run.relays() {
        eprintln!("  {r}");
    }
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_exactly(&stored_ids(dir.path()).await, &peers.corpus, &run);
    let b = run.relay(&peers.b.url()).expect("the restarted relay");
    assert!(
        b["failures"].as_u64() >= Some(1),
        "the sync never saw the relay go away: {b}"
    );
    assert_eq!(b["state"], "in sync", "{b}");
}

/// `kill -9` at five points of a sync (when the store first holds 10 %, 25 %, 40 %,
/// 55 % and 70 % of the corpus, plus a random delay), each mid-sync (the run had not
/// ended, and the store held some but not all of the corpus), then a final run: the
/// store holds only valid, distinct corpus events throughout, the final run completes
/// it, and it does not start from scratch: the NIP-77 relays send only what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_then_a_final_run_completes() {
    let peers = Peers::start(14, 10, 300).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = sync_args(&peers.corpus.repos, &[peers.a.url()], dir.path());
    let all: BTreeSet<EventId> = peers.corpus.events.iter().map(|e| e.id).collect();
    let total = peers.corpus.acceptable.len();
    let mut rng = grasp_sync_testkit::Rng::new(14);
    let mut held = Vec::new();
    for percent in [10, 25, 40, 55, 70] {
        let mut child = spawn_grasp_sync(&args);
        let target = total * percent / 100;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut reached = false;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("the sync ended ({status}) before the kill at {percent} %");
            }
            if count_stored(dir.path()).await >= target {
                reached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reached, "the store never held {percent} % within 60 s");
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
        let exited = child.try_wait().expect("child status");
        assert!(
            exited.is_none(),
            "the sync ended before the kill: {exited:?}"
        );
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("reaped");
        assert!(!status.success(), "killed");
        let ids = stored_ids(dir.path()).await;
        // Mid-sync the store may still hold what a later event deletes or replaces,
        // but nothing from outside the corpus (stored_ids checked the signatures).
        assert!(ids.is_subset(&all), "only corpus events stored");
        // Killed mid-sync: some of the corpus stored, not all of it.
        assert!(
            ids.len() >= target && !peers.corpus.acceptable.is_subset(&ids),
            "the kill at {percent} % was not mid-sync: {} of {total} stored",
            ids.len()
        );
        held.push((percent, ids.len()));
    }
    eprintln!("(target %, stored) after each kill: {held:?} of {total}");
    let before = held.last().map_or(0, |h| h.1);
    assert!(before >= total / 2, "the killed runs stored most of it");
    let run = run_grasp_sync(&args).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let after = stored_ids(dir.path()).await;
    assert_exactly(&after, &peers.corpus, &run);
    for r in run.relays() {
        eprintln!("  {r}");
    }
    // Not from scratch: the NIP-77 relays reconcile against what the killed runs
    // stored. (nostr-rs-relay, without NIP-77, pages again whatever no committed
    // checkpoint covers: a backwards walk that was cut short proves nothing about older
    // events. The store ignores the copies it already holds.)
    let missing = total.saturating_sub(before.min(total));
    let nip77_received: u64 = [peers.a.url(), peers.b.url()]
        .iter()
        .filter_map(|u| run.relay(u))
        .filter_map(|r| r["received"].as_u64())
        .sum();
    assert!(
        nip77_received as usize <= missing + total / 20,
        "the NIP-77 relays sent {nip77_received} events; {missing} were missing"
    );
}

/// How many events the store holds (the store may be written by a running sync); 0
/// before the sync created it.
///
/// # Panics
/// When the store exists but cannot be opened or read: that is never "empty".
async fn count_stored(dir: &Path) -> usize {
    if !dir.join("events").exists() {
        return 0;
    }
    let store = LmdbStore::open(dir, 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("open the store at {}: {e}", dir.display()));
    Store::items(&store, Filter::new())
        .await
        .unwrap_or_else(|e| panic!("read the store at {}: {e}", dir.display()))
        .len()
}
