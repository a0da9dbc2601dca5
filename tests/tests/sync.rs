//! `grasp-sync sync` against real relays on loopback: two rust-nostr LocalRelays
//! (NIP-77) and one nostr-rs-relay (no NIP-77), holding overlapping parts of a corpus.

use std::collections::BTreeSet;
use std::path::Path;

use grasp_sync::store::LmdbStore;
use grasp_sync_driver::Store;
use grasp_sync_testkit::Corpus;
use grasp_sync_tests::{
    corpus, run_grasp_sync, split, sync_args, Nip77Relay, NostrRsRelay, SyncRun,
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
        let a = Nip77Relay::start(&[]).await;
        let b = Nip77Relay::start(&[]).await;
        let c = NostrRsRelay::start().await;
        let corpus = corpus(seed, repos, events_per_repo, &[a.url(), b.url(), c.url()]);
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

/// Every id in the store, after checking each stored event's signature.
async fn stored_ids(dir: &Path) -> BTreeSet<EventId> {
    let store = LmdbStore::open(dir, 1 << 30).await.expect("store opens");
    let events = Store::query(&store, Filter::new()).await.expect("query");
    let ids: BTreeSet<EventId> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event stored twice");
    assert!(
        events.iter().all(|e| e.verify().is_ok()),
        "a forged event stored"
    );
    ids
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
    // Each relay holds about half of what the store holds: a reconciliation still lists
    // the ids of the relay's ranges that differ (tens of KiB here), but downloads nothing.
    assert!(
        second.total("bytes_in") * 5 < first.total("bytes_in"),
        "the second run read {} bytes (first {})",
        second.total("bytes_in"),
        first.total("bytes_in")
    );
}
