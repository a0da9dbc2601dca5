use std::time::{Duration, Instant};

use grasp_sync_core::engine::Scope;
use grasp_sync_core::{nip34, Item, Layer, RelayUrl};
use grasp_sync_store::conformance::{run_all, Backend};
use grasp_sync_store::plan::newest_first;
use grasp_sync_store::records::scope_text;
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec};
use nostr::prelude::{Keys, Kind, MatchEventOptions, PublicKey};

use super::map_full::{map_cannot_hold, PROBE_DB};
use super::*;

/// LMDB stores in one temporary directory, one per name.
struct Lmdb(tempfile::TempDir);

impl Backend for Lmdb {
    type Store = LmdbStore;

    fn open<'a>(&'a self, name: &'a str) -> LocalBoxFuture<'a, Result<LmdbStore, String>> {
        let dir = self.0.path().join(name);
        async move { LmdbStore::open(&dir, MAP).await.map_err(|e| e.to_string()) }.boxed_local()
    }
}

#[tokio::test]
async fn the_lmdb_store_passes_the_conformance_suite() {
    let backend = Lmdb(tempfile::tempdir().expect("tempdir"));
    if let Err(failures) = run_all(&backend).await {
        panic!("{failures}");
    }
}

const MAP: usize = 64 << 20;

fn corpus(repos: usize, events_per_repo: usize) -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed: 7,
        repos,
        events_per_repo,
        ..CorpusSpec::default()
    })
}

fn ids<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeSet<EventId> {
    events.into_iter().map(|e| e.id).collect()
}

async fn open(dir: &Path) -> LmdbStore {
    LmdbStore::open(dir, MAP).await.expect("open")
}

fn issue(keys: &Keys, at: u64, tags: &[(&str, &str)], content: &str) -> Event {
    let tags = tags
        .iter()
        .map(|(k, v)| vec![(*k).to_owned(), (*v).to_owned()])
        .collect();
    sign(keys, 1621, at, tags, content)
}

fn announcement(keys: &Keys, at: u64, d: &str) -> Event {
    sign(keys, 30617, at, vec![vec!["d".into(), d.into()]], "")
}

#[tokio::test]
async fn coordinate_lookups_answer_what_matching_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let authors: Vec<Keys> = (0..4).map(|i| keys(300 + i)).collect();
    // Every author announces every identifier and writes its state: the filters
    // below ask for a part of that cross product.
    let mut events = Vec::new();
    for (a, k) in authors.iter().enumerate() {
        for d in ["x", "y", "z"] {
            events.push(announcement(k, 1_000 + a as u64, d));
            events.push(sign(
                k,
                30618,
                2_000 + a as u64,
                vec![vec!["d".into(), d.into()]],
                "",
            ));
        }
    }
    store.save(events.clone(), Vec::new()).await.expect("save");
    let two: Vec<PublicKey> = authors[..2].iter().map(|k| k.public_key()).collect();
    let filters = [
        Filter::new()
            .kind(Kind::from(30617))
            .authors(two.clone())
            .identifiers(["x", "y"]),
        Filter::new()
            .kinds([Kind::from(30617), Kind::from(30618)])
            .authors(two.clone())
            .identifiers(["x", "z"])
            .limit(3),
        Filter::new()
            .authors(two.clone())
            .identifier("y")
            .until(Timestamp::from(1_000)),
        Filter::new().authors(two).identifiers(["nothing"]),
    ];
    for filter in filters {
        assert!(without_authors(&filter).is_some(), "{filter:?}");
        let mut want: Vec<(Timestamp, EventId)> = events
            .iter()
            .filter(|e| filter.match_event(e, MatchEventOptions::new()))
            .map(|e| (e.created_at, e.id))
            .collect();
        want.sort_unstable_by(newest_first);
        want.truncate(filter.limit.unwrap_or(usize::MAX));
        let got: Vec<(Timestamp, EventId)> = store
            .query(filter.clone())
            .await
            .expect("query")
            .iter()
            .map(|e| (e.created_at, e.id))
            .collect();
        assert_eq!(got, want, "{filter:?}");
        assert_eq!(store.items(filter.clone()).await.expect("items"), want);
    }
}

#[tokio::test]
async fn save_query_items_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let corpus = corpus(3, 30);
    let events = corpus.acceptable_events();
    assert!(events.len() > 50, "corpus too small: {}", events.len());

    // Through the port, as the driver calls it.
    let saved = Store::save(&store, events.clone(), Vec::new(), SavedState::default())
        .await
        .expect("save");
    assert_eq!(saved, Saved::default(), "nothing held, nothing to remove");

    let all = Store::query(&store, Filter::new()).await.expect("query");
    assert_eq!(ids(&all), ids(&events));
    let items = Store::items(&store, Filter::new()).await.expect("items");
    let expected: BTreeSet<(Timestamp, EventId)> =
        events.iter().map(|e| (e.created_at, e.id)).collect();
    assert_eq!(items.len(), events.len());
    assert_eq!(items.iter().copied().collect::<BTreeSet<_>>(), expected);

    // A repository's tag filter answers what matching in memory answers.
    let repo = &corpus.repos[0];
    let filter = Filter::new().custom_tag(SingleLetterTag::LOWERCASE_A, repo.to_string());
    let want: BTreeSet<EventId> = events
        .iter()
        .filter(|e| filter.match_event(e, MatchEventOptions::new()))
        .map(|e| e.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(
        ids(&store.query(filter.clone()).await.expect("query")),
        want
    );
    let items = store.items(filter).await.expect("items");
    assert_eq!(
        items.iter().map(|(_, id)| *id).collect::<BTreeSet<_>>(),
        want
    );

    // Saving again changes nothing and removes nothing.
    let saved = store.save(events.clone(), Vec::new()).await.expect("save");
    assert!(saved.removed.is_empty());
    assert_eq!(saved.existed.len(), events.len());
    assert_eq!(
        store.query(Filter::new()).await.expect("query").len(),
        events.len()
    );
}

/// What `Store::root_events` must answer: the roots among `events` naming one of
/// `coords` in an `a`, `A` or `q` tag.
fn roots_naming(events: &[Event], coords: &[RepoRef]) -> BTreeSet<EventId> {
    let wanted: HashSet<&RepoRef> = coords.iter().collect();
    events
        .iter()
        .filter(|e| nip34::is_root(e) && names_a_repo(e, &wanted))
        .map(|e| e.id)
        .collect()
}

#[tokio::test]
async fn root_events_come_from_the_roots_table_and_an_old_store_is_scanned_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = corpus(4, 40);
    let events = corpus.acceptable_events();
    let coords = corpus.repos[..2].to_vec();
    let want = roots_naming(&events, &coords);
    let patches = events
        .iter()
        .filter(|e| e.kind == nip34::kinds::PATCH)
        .count();
    assert!(want.len() >= 4 && patches > want.len(), "roots and replies");
    let store = open(dir.path()).await;
    store.save(events.clone(), Vec::new()).await.expect("save");
    let stored_roots = events.iter().filter(|e| nip34::is_root(e)).count();
    {
        let txn = store.inner.state.env.read_txn().expect("txn");
        let noted = store.inner.state.roots.len(&txn).expect("count") as usize;
        assert_eq!(noted, stored_roots, "saving notes every root");
    }

    // Through the port, as the restore asks; the default (tag queries) agrees.
    let got = Store::root_events(&store, coords.clone())
        .await
        .expect("roots");
    assert_eq!(ids(&got), want);
    let by_tags = Store::root_events(&TagQueries(store.clone()), coords.clone())
        .await
        .expect("tag queries");
    let by_tags: Vec<Event> = by_tags.into_iter().filter(nip34::is_root).collect();
    assert_eq!(ids(&by_tags), want);

    // A removed root is not returned, though the table still names it.
    let gone = got[0].clone();
    store
        .save(
            Vec::new(),
            vec![Removal {
                id: gone.id,
                author: gone.pubkey,
            }],
        )
        .await
        .expect("remove");
    let mut want = want;
    want.remove(&gone.id);
    assert_eq!(ids(&store.root_events(&coords).await.expect("roots")), want);

    // A store from before the table (no marker, empty table) is scanned once.
    {
        let inner = &store.inner;
        let mut txn = inner.state.env.write_txn().expect("txn");
        inner.state.roots.clear(&mut txn).expect("clear");
        inner
            .state
            .meta
            .delete(&mut txn, NOTES_KEY)
            .expect("unmark");
        txn.commit().expect("commit");
    }
    assert_eq!(ids(&store.root_events(&coords).await.expect("roots")), want);
    let txn = store.inner.state.env.read_txn().expect("txn");
    assert_eq!(
        store.inner.state.meta.get(&txn, NOTES_KEY).expect("read"),
        Some(NOTES_COMPLETE)
    );
    assert_eq!(
        store.inner.state.roots.len(&txn).expect("count") as usize,
        stored_roots - 1,
        "every stored root, the removed one no longer"
    );
}

#[tokio::test]
async fn index_items_are_what_nostr_lmdb_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = corpus(3, 40);
    let mut events = corpus.acceptable_events();
    let repo = corpus.repos[0].to_string();
    let root = events
        .iter()
        .find(|e| nip34::is_root(e))
        .expect("a root")
        .id
        .to_hex();
    // Events tagging the repository that expired, expire later, share a second,
    // and one whose tag value is longer than the index keeps.
    let keys = keys(77);
    let now = Timestamp::now().as_secs();
    let long = format!("30617:{}:{}", keys.public_key().to_hex(), "d".repeat(200));
    let tagged = |at: u64, extra: &[(&str, &str)], n: usize| {
        let mut tags: Vec<(&str, &str)> = vec![("a", repo.as_str()), ("e", root.as_str())];
        tags.extend_from_slice(extra);
        issue(&keys, at, &tags, &format!("extra {n}"))
    };
    let past = (now - 60).to_string();
    let future = (now + 3600).to_string();
    events.push(tagged(now - 100, &[("expiration", past.as_str())], 1));
    events.push(tagged(now - 100, &[("expiration", future.as_str())], 2));
    events.push(tagged(now - 100, &[], 3));
    events.push(tagged(now - 50, &[("a", long.as_str())], 4));
    let store = open(dir.path()).await;
    store.save(events.clone(), Vec::new()).await.expect("save");

    let filters = [
        Filter::new().custom_tag(SingleLetterTag::LOWERCASE_A, repo.clone()),
        Filter::new().custom_tags(
            SingleLetterTag::LOWERCASE_A,
            corpus.repos.iter().map(ToString::to_string),
        ),
        Filter::new()
            .custom_tag(SingleLetterTag::LOWERCASE_E, root.clone())
            .since(Timestamp::from(now - 100))
            .until(Timestamp::from(now - 100)),
        Filter::new()
            .custom_tag(SingleLetterTag::LOWERCASE_A, repo.clone())
            .since(Timestamp::from(now - 99)),
        Filter::new().custom_tag(SingleLetterTag::LOWERCASE_A, long.clone()),
        Filter::new().custom_tag(SingleLetterTag::LOWERCASE_A, "30617:nobody:x"),
        // Kinds alone walk the kind index.
        Filter::new().kind(Kind::from(1621)),
        Filter::new()
            .kinds([Kind::from(1617), Kind::from(1621), Kind::from(30617)])
            .until(Timestamp::from(now - 100)),
        Filter::new().kind(Kind::from(9)),
    ];
    for filter in filters {
        let scanned = IndexScan::of(&Plan::of(&filter)).is_some();
        assert_eq!(
            scanned,
            !filter
                .generic_tags
                .values()
                .flatten()
                .any(|v| v.len() > 182),
            "{filter:?}"
        );
        let mut listed = store.negentropy_items(filter.clone()).await.expect("list");
        listed.sort_unstable_by(newest_first);
        let items = store.items(filter.clone()).await.expect("items");
        assert_eq!(items, listed, "{filter:?}");
        let want: BTreeSet<EventId> = events
            .iter()
            .filter(|e| {
                filter.match_event(e, MatchEventOptions::new())
                    && !e.is_expired_at(Timestamp::from(now))
            })
            .map(|e| e.id)
            .collect();
        assert_eq!(
            items.iter().map(|(_, id)| *id).collect::<BTreeSet<_>>(),
            want,
            "{filter:?}"
        );
    }
}

/// A store answering `root_events` with the port's default (tag queries).
struct TagQueries(LmdbStore);

impl Store for TagQueries {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, PortError>> {
        Store::query(&self.0, filter)
    }
    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, PortError>> {
        Store::items(&self.0, filter)
    }
    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, PortError>> {
        Store::save(&self.0, events, remove, state)
    }
    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), PortError>> {
        Store::save_state(&self.0, state)
    }
    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, PortError>> {
        Store::load_state(&self.0)
    }
}

#[tokio::test]
async fn what_nostr_lmdb_refuses_is_reported_removed() {
    // The core names every version it replaces (the conformance suite checks that
    // nostr-lmdb's own replacement agrees); an older version handed in without the
    // core knowing the held one, or an ephemeral event, is refused by nostr-lmdb:
    // not kept, so reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let owner = keys(1);
    let v1 = announcement(&owner, 100, "repo");
    let v2 = announcement(&owner, 200, "repo");
    let ephemeral = sign(&owner, 20_001, 300, Vec::new(), "");
    let saved = store
        .save(vec![v2.clone()], Vec::new())
        .await
        .expect("save");
    assert_eq!(saved, Saved::default());
    let saved = store
        .save(vec![v1.clone(), ephemeral.clone(), v2.clone()], Vec::new())
        .await
        .expect("save");
    assert_eq!(ids(&saved.removed), ids([&v1, &ephemeral]));
    assert_eq!(saved.existed, vec![v2.id]);
    let held = store.query(Filter::new()).await.expect("query");
    assert_eq!(held, vec![v2]);
}

fn checkpoint_rows(state: &SavedState) -> Vec<(String, String, u64)> {
    let mut rows: Vec<_> = state
        .checkpoints
        .iter()
        .map(|c| (c.relay.to_string(), scope_text(&c.scope), c.at.as_secs()))
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn checkpoints_replace_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = corpus(2, 5);
    let relay = |s: &str| RelayUrl::parse(s).expect("relay url");
    let long = relay(&format!("wss://relay.example.com/{}", "p".repeat(1500)));
    let coord = Scope::Item {
        layer: Layer::RepoTags,
        item: Item::Coord(corpus.repos[0].clone()),
    };
    let root = Scope::Item {
        layer: Layer::RootTags,
        item: Item::Root(corpus.events[0].id),
    };
    let checkpoints = [
        (relay("wss://a.example.com"), root.clone(), 3),
        (relay("wss://a.example.com"), coord.clone(), 10),
        (relay("wss://a.example.com"), coord.clone(), 20),
        (relay("wss://a.example.com"), Scope::Discovery, 5),
        (relay("wss://b.example.com"), root.clone(), 7),
        (relay("wss://b.example.com"), coord.clone(), 8),
        (long.clone(), Scope::Discovery, 1),
    ];
    let expected = {
        let state = SavedState {
            checkpoints: checkpoints
                .iter()
                .filter(|(_, _, at)| *at != 10)
                .map(|(relay, scope, at)| Checkpoint {
                    relay: relay.clone(),
                    scope: scope.clone(),
                    at: Timestamp::from(*at),
                })
                .collect(),
            remembered: Vec::new(),
        };
        checkpoint_rows(&state)
    };
    {
        let store = open(dir.path()).await;
        // The first one alone, the rest in one state write, in order: a checkpoint
        // replaces the one of its key written earlier in the same write too.
        let mut checkpoints: Vec<Checkpoint> = checkpoints
            .into_iter()
            .map(|(relay, scope, at)| Checkpoint {
                relay,
                scope,
                at: Timestamp::from(at),
            })
            .collect();
        let together = checkpoints.split_off(1);
        assert_eq!(
            together[0].scope, together[1].scope,
            "a replacement in one write"
        );
        for checkpoint in checkpoints {
            store.save_checkpoint(checkpoint).await.expect("checkpoint");
        }
        Store::save_state(
            &store,
            SavedState {
                checkpoints: together,
                remembered: Vec::new(),
            },
        )
        .await
        .expect("save state");
        let state = store.load_state().await.expect("load");
        assert_eq!(checkpoint_rows(&state), expected);
    }
    let store = open(dir.path()).await;
    let state = Store::load_state(&store).await.expect("load");
    assert_eq!(checkpoint_rows(&state), expected);
    assert!(state.remembered.is_empty());
}

/// What remembered entries must do (expired ones left out, a renewed one replacing the
/// earlier, all surviving a reopen) is the conformance suite's `state` case, which this
/// store passes above; here, what only LMDB shows: loading the state deletes the expired
/// entries from disk, not only from the answer.
#[tokio::test]
async fn expired_seen_entries_are_deleted_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = corpus(2, 10);
    let now = Timestamp::now().as_secs();
    let (later, earlier) = (Timestamp::from(now + 3600), Timestamp::from(now - 10));
    let keep: Vec<SeenEntry> = corpus.events[..3]
        .iter()
        .map(|e| SeenEntry::of(e, later))
        .collect();
    let forget: Vec<SeenEntry> = corpus.events[3..5]
        .iter()
        .map(|e| SeenEntry::of(e, earlier))
        .collect();
    let store = open(dir.path()).await;
    Store::save_state(
        &store,
        SavedState {
            checkpoints: Vec::new(),
            remembered: keep.iter().chain(&forget).cloned().collect(),
        },
    )
    .await
    .expect("remember");
    let on_disk = |store: &LmdbStore| {
        let txn = store.inner.state.env.read_txn().expect("txn");
        store.inner.state.seen.len(&txn).expect("len")
    };
    assert_eq!(on_disk(&store), 5);
    let mut remembered = store.load_state().await.expect("load").remembered;
    remembered.sort_by_key(|e| e.id);
    let mut want = keep;
    want.sort_by_key(|e| e.id);
    assert_eq!(remembered, want);
    assert_eq!(on_disk(&store), 3);
}

#[tokio::test]
async fn a_full_map_is_an_error_and_the_store_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LmdbStore::open(dir.path(), 1 << 20).await.expect("open");
    let corpus = corpus(20, 100);
    let events = corpus.acceptable_events();
    let mut saved = 0;
    let error = loop {
        assert!(saved < events.len(), "1 MiB held the whole corpus");
        let batch = events[saved..(saved + 50).min(events.len())].to_vec();
        match store.save(batch, Vec::new()).await {
            Ok(done) => {
                assert!(done.removed.is_empty());
                saved += 50;
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            error,
            StoreError::MapFull {
                environment: "events",
                map_size: 1_048_576
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("raise the store's map size"),
        "{error}"
    );
    assert!(saved > 0);
    // One event at a time from there: whatever does not fit is a full map too.
    let mut refused = 0;
    for event in &events[saved..] {
        match store.save(vec![event.clone()], Vec::new()).await {
            Ok(_) => saved += 1,
            Err(StoreError::MapFull { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 0);
    // Through the driver's port, a full map is a quota error.
    let through_port = Store::save(&store, events.clone(), Vec::new(), SavedState::default()).await;
    assert!(
        matches!(through_port, Err(PortError::QuotaExceeded(_))),
        "{through_port:?}"
    );

    // Still reads (at least every batch that succeeded), and the state still writes.
    let held = store
        .query(Filter::new())
        .await
        .expect("query after map full");
    assert!(held.len() >= saved, "{} < {saved}", held.len());
    assert_eq!(
        store.items(Filter::new()).await.expect("items").len(),
        held.len()
    );
    let checkpoint = Checkpoint {
        relay: RelayUrl::parse("wss://a.example.com").expect("relay url"),
        scope: Scope::Discovery,
        at: Timestamp::from(1),
    };
    store.save_checkpoint(checkpoint).await.expect("checkpoint");
    // A removal needs pages too (LMDB copies on write): a full map refuses it.
    let first = held[0].clone();
    let removal = Removal {
        id: first.id,
        author: first.pubkey,
    };
    let error = store.save(Vec::new(), vec![removal]).await;
    assert!(
        matches!(error, Err(StoreError::MapFull { .. })),
        "{error:?}"
    );

    // Reads still work after the refusal.
    let again = store.query(Filter::new()).await.expect("query");
    assert_eq!(ids(&again), ids(&held));
    assert!(again.contains(&first));
}

#[tokio::test]
async fn newest_n_is_right_where_nostr_lmdb_walks_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let alice = keys(1);
    let events: Vec<Event> = (0..8)
        .map(|i| issue(&alice, 1000 + i, &[("t", "x")], &format!("issue {i}")))
        .collect();
    store.save(events.clone(), Vec::new()).await.expect("save");

    let newest = |n: usize| {
        let mut sorted = events.clone();
        sorted.sort_by(|a, b| newest_first(&(a.created_at, a.id), &(b.created_at, b.id)));
        sorted.truncate(n);
        sorted
    };
    let lowest_ids: BTreeSet<EventId> = ids(&events).into_iter().take(3).collect();
    assert_ne!(
        lowest_ids,
        ids(&newest(3)),
        "test events must tell the orders apart"
    );

    let filter = Filter::new()
        .author(alice.public_key())
        .kind(Kind::from(1621))
        .hashtag("x")
        .limit(3);
    // nostr-lmdb 0.45.3 alone: the three lowest ids. When this fails, upstream fixed
    // the walk and the guard in `query_newest` can go.
    let naive = store
        .inner
        .events
        .query(filter.clone())
        .await
        .expect("query");
    assert_eq!(
        ids(&naive),
        lowest_ids,
        "nostr-lmdb's limited author+kind+tag query"
    );
    assert_ne!(ids(&naive), ids(&newest(3)));
    // Ours: the newest three, in NIP-01 order; through the port too.
    assert_eq!(
        store.query(filter.clone()).await.expect("newest"),
        newest(3)
    );
    assert_eq!(
        Store::query(&store, filter).await.expect("query"),
        newest(3)
    );

    // A limited ids filter.
    let by_ids = Filter::new().ids(events.iter().map(|e| e.id)).limit(2);
    assert_eq!(store.query(by_ids).await.expect("newest"), newest(2));
    // A shape nostr-lmdb walks in time order.
    let by_kind = Filter::new().kind(Kind::from(1621)).limit(4);
    assert_eq!(store.query(by_kind).await.expect("newest"), newest(4));
    // No limit: all of them, newest first.
    let all = Filter::new().author(alice.public_key());
    assert_eq!(store.query(all).await.expect("newest"), newest(8));
    // Limited items.
    let items = store
        .items(
            Filter::new()
                .kind(Kind::from(1621))
                .hashtag("x")
                .author(alice.public_key())
                .limit(3),
        )
        .await
        .expect("items");
    let want: Vec<(Timestamp, EventId)> = newest(3).iter().map(|e| (e.created_at, e.id)).collect();
    assert_eq!(items, want);
}

#[tokio::test]
async fn the_map_full_probe_tells_room_from_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LmdbStore::open(dir.path(), 1 << 20).await.expect("open");
    let env = &store.inner.events_env;
    assert_eq!(
        env.path(),
        store.inner.state.env.path().with_file_name(EVENTS_DIR)
    );
    assert!(
        !map_cannot_hold(env, 16).expect("probe"),
        "a fresh 1 MiB map has room"
    );
    assert!(
        map_cannot_hold(env, 1024).expect("probe"),
        "1 MiB holds no 4 MiB"
    );
    // The probe left nothing behind.
    let txn = env.read_txn().expect("txn");
    let probe: Option<Database<Bytes, Bytes>> =
        env.open_database(&txn, Some(PROBE_DB)).expect("open");
    assert!(probe.is_none());
}

#[tokio::test]
async fn newer_state_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path()).await;
        let inner = &store.inner;
        let mut txn = inner.state.env.write_txn().expect("txn");
        inner
            .state
            .meta
            .put(&mut txn, FORMAT_KEY, b"2")
            .expect("put");
        txn.commit().expect("commit");
    }
    match LmdbStore::open(dir.path(), MAP).await {
        Err(StoreError::Format(message)) => assert!(message.contains("format 1"), "{message}"),
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// Prints how long one `save` of N events takes against N one-event saves
/// (`cargo test -p grasp-sync --release save_batching_report -- --ignored --nocapture`).
#[tokio::test]
#[ignore = "a report, not a check"]
async fn save_batching_report() {
    let corpus = corpus(20, 100);
    let events = corpus.acceptable_events();
    let txns = |store: &LmdbStore| store.inner.events_env.info().last_txn_id;
    let (batched, batched_txns) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path()).await;
        let (start, first) = (Instant::now(), txns(&store));
        store.save(events.clone(), Vec::new()).await.expect("save");
        (start.elapsed(), txns(&store) - first)
    };
    let (single, single_txns) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path()).await;
        let (start, first) = (Instant::now(), txns(&store));
        for event in &events {
            store
                .save(vec![event.clone()], Vec::new())
                .await
                .expect("save");
        }
        (start.elapsed(), txns(&store) - first)
    };
    let per = |d: Duration| d.as_secs_f64() * 1e6 / events.len() as f64;
    println!(
        "{} events: one save {batched:?} ({:.0} µs/event, {batched_txns} write \
         transaction(s)), one save per event {single:?} ({:.0} µs/event, {single_txns} \
         write transaction(s)): ratio {:.1}",
        events.len(),
        per(batched),
        per(single),
        single.as_secs_f64() / batched.as_secs_f64()
    );
}
