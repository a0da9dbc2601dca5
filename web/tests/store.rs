//! The IndexedDB store on its own, in headless Chromium: newest-first limits over
//! several index ranges, removals only by the author, items, sync state and reopen; a
//! batch and a filter spanning many slices of the page's thread; the
//! upgrades from schema versions 1 and 3 (their roots noted and entered), a blocked
//! upgrade, and a connection closed for another tab's upgrade.

#![cfg(target_arch = "wasm32")]

use grasp_sync_core::accept::Removal;
use grasp_sync_driver::{Store, StoreError as PortError};
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_web::idb::{schema, IdbStore};
use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::TransactionMode;
use indexed_db_futures::KeyPath;
use nostr::prelude::{Event, EventId, Filter, Kind, SingleLetterTag};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn issue(n: u64, author: u64, created_at: u64, repo: &str) -> Event {
    sign(
        &keys(author),
        1621,
        created_at,
        vec![vec!["a".into(), repo.into()]],
        &format!("issue {n}"),
    )
}

/// The ids of `events`, in order.
fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

fn name() -> String {
    format!("store-{}", js_sys::Math::random().to_bits())
}

#[wasm_bindgen_test]
async fn limits_are_newest_first_across_ranges_and_removals_need_the_author() {
    let db = name();
    let store = IdbStore::open(&db).await.expect("open");
    let events: Vec<Event> = (0..6)
        .map(|n| {
            issue(
                n,
                n % 2,
                1_700_000_000 + n * 10,
                if n < 3 { "r1" } else { "r2" },
            )
        })
        .collect();
    store
        .save_events(events.clone(), Vec::new())
        .await
        .expect("save");
    let a = SingleLetterTag::from_char('a').expect("a letter");
    let filter = Filter::new().custom_tags(a, ["r1", "r2"]).limit(3);
    let got: Vec<_> = ids(&store.query_events(&filter).await.expect("query"));
    let want: Vec<_> = [5, 4, 3].iter().map(|&i| events[i].id).collect();
    assert_eq!(got, want, "the newest three over both tag values");
    let kinds = Filter::new()
        .kind(Kind::from(1621))
        .author(keys(1).public_key())
        .limit(2);
    let got: Vec<_> = ids(&store.query_events(&kinds).await.expect("query"));
    assert_eq!(got, vec![events[5].id, events[3].id]);
    let items = store
        .items(&Filter::new().custom_tags(a, ["r1"]))
        .await
        .expect("items");
    let want: Vec<_> = [2, 1, 0]
        .iter()
        .map(|&i| (events[i].created_at, events[i].id))
        .collect();
    assert_eq!(items, want, "items newest first");

    // A removal naming the wrong author removes nothing; the author's does.
    let wrong = Removal {
        id: events[0].id,
        author: keys(1).public_key(),
    };
    assert!(store
        .save_events(Vec::new(), vec![wrong])
        .await
        .expect("save")
        .removed
        .is_empty());
    let right = Removal {
        id: events[0].id,
        author: keys(0).public_key(),
    };
    let removed = store
        .save_events(Vec::new(), vec![right])
        .await
        .expect("save")
        .removed;
    assert_eq!(ids(&removed), vec![events[0].id]);
    store.close();

    let again = IdbStore::open(&db).await.expect("reopen");
    assert_eq!(again.count().await.expect("count"), 5);
    assert_eq!(
        again
            .query_events(&Filter::new().limit(0))
            .await
            .expect("query")
            .len(),
        0
    );
    again.close();
    schema::delete(&db).await.expect("delete");
}

/// A batch too large for one slice of the page's thread (its puts are placed a slice at
/// a time, each from the last one's answer) and a filter of many index ranges (walked
/// in a few lanes of cursors) lose nothing: every event is written, the author's
/// removals in the same batch apply, and items see every range.
#[wasm_bindgen_test]
async fn a_batch_and_a_filter_spanning_many_slices_lose_nothing() {
    let db = name();
    let store = IdbStore::open(&db).await.expect("open");
    let repos: Vec<String> = (0..300).map(|r| format!("r{r}")).collect();
    let events: Vec<Event> = (0..3_000)
        .map(|n| issue(n, n % 2, 1_700_000_000 + n, &repos[n as usize % 300]))
        .collect();
    let removals: Vec<Removal> = events[..20]
        .iter()
        .enumerate()
        .map(|(i, e)| Removal {
            id: e.id,
            // Every other one names the wrong author: it stays.
            author: if i % 2 == 0 {
                e.pubkey
            } else {
                keys(7).public_key()
            },
        })
        .collect();
    let saved = store
        .save_events(events.clone(), removals)
        .await
        .expect("save");
    assert_eq!(saved.removed.len(), 10, "the authors' removals apply");
    assert_eq!(store.count().await.expect("count"), 2_990);
    let a = SingleLetterTag::from_char('a').expect("a letter");
    let items = store
        .items(&Filter::new().custom_tags(a, repos.iter().map(String::as_str)))
        .await
        .expect("items");
    let mut want: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= 20 || i % 2 == 1)
        .map(|(_, e)| (e.created_at, e.id))
        .collect();
    want.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
    assert_eq!(items, want, "every range, newest first");
    store.close();
    schema::delete(&db).await.expect("delete");
}

#[wasm_bindgen_test]
async fn expired_events_are_in_neither_queries_nor_items() {
    let db = name();
    let store = IdbStore::open(&db).await.expect("open");
    let live = issue(1, 0, 1_700_000_000, "r");
    let expiring = sign(
        &keys(0),
        1621,
        1_700_000_001,
        vec![
            vec!["a".into(), "r".into()],
            vec!["expiration".into(), "1700000100".into()],
        ],
        "expired",
    );
    let later = sign(
        &keys(0),
        1621,
        1_700_000_002,
        vec![
            vec!["a".into(), "r".into()],
            vec!["expiration".into(), "99999999999".into()],
        ],
        "expires later",
    );
    store
        .save_events(vec![live.clone(), expiring, later.clone()], Vec::new())
        .await
        .expect("save");
    let a = SingleLetterTag::from_char('a').expect("a letter");
    let filter = Filter::new().custom_tags(a, ["r"]);
    let items = store.items(&filter).await.expect("items");
    assert_eq!(
        items,
        vec![(later.created_at, later.id), (live.created_at, live.id)]
    );
    let ids: Vec<_> = ids(&store.query_events(&filter).await.expect("query"));
    assert_eq!(ids, vec![later.id, live.id]);
    store.close();
    schema::delete(&db).await.expect("delete");
}

/// A database as version 1 of the schema left it (written here by hand: the layout and
/// the row format of web/src/idb before the `exp` index), holding `rows`, with the
/// connection left open. It ignores `versionchange`, as a tab running older code would.
async fn version_1(name: &str, rows: &[&Event]) -> Database {
    old_version(name, 1, rows).await
}

/// A database as version 1 or 3 of the schema left it (see [`version_1`]); version 3
/// adds the `exp` and `root` indexes, and the roots' `rc` field.
async fn old_version(name: &str, version: u32, rows: &[&Event]) -> Database {
    let db = Database::open(name)
        .with_version(version)
        .with_on_upgrade_needed(move |_, db| {
            let events = db
                .create_object_store("events")
                .with_key_path(KeyPath::One("id"))
                .build()?;
            events.create_index("time", KeyPath::One("ca")).build()?;
            events
                .create_index("kind", KeyPath::from(["kind", "ca"]))
                .build()?;
            events
                .create_index("author", KeyPath::from(["pk", "ca"]))
                .build()?;
            events
                .create_index("tag", KeyPath::One("tk"))
                .with_multi_entry(true)
                .build()?;
            if version >= 3 {
                events.create_index("exp", KeyPath::One("exp")).build()?;
                events
                    .create_index("root", KeyPath::One("rc"))
                    .with_multi_entry(true)
                    .build()?;
            }
            for store in ["checkpoints", "seen", "meta"] {
                db.create_object_store(store).build()?;
            }
            Ok(())
        })
        .await
        .expect("open at an old version");
    let tx = db
        .transaction("events")
        .with_mode(TransactionMode::Readwrite)
        .build()
        .expect("transaction");
    let store = tx.object_store("events").expect("events");
    for e in rows {
        let ca = e.created_at.as_secs();
        let mut row = serde_json::json!({
            "id": e.id.to_hex(), "pk": e.pubkey.to_hex(), "kind": e.kind.as_u16(), "ca": ca,
            "json": e.as_json(),
            "tk": e.tags.iter().filter_map(|t| {
                let t = t.as_slice();
                (t.len() > 1 && t[0].len() == 1).then(|| serde_json::json!([format!("{}:{}", t[0], t[1]), ca]))
            }).collect::<Vec<_>>(),
        });
        if let Some(exp) = e.tags.expiration() {
            row["exp"] = exp.as_secs().into();
        }
        let coords: Vec<String> = grasp_sync_store::notes::root_repos(e)
            .iter()
            .map(ToString::to_string)
            .collect();
        if version >= 3 && !coords.is_empty() {
            row["rc"] = coords.into();
        }
        let row = js_sys::JSON::parse(&row.to_string()).expect("a row");
        drop(store.put(row).primitive().expect("put"));
    }
    drop(store);
    tx.commit().await.expect("commit");
    db
}

/// A version-3 database upgraded to version 4: its roots are entered in the `roots` store
/// (one under two repositories; an expired one is not read), read from there, and later
/// saves and removals keep the entries in step with the rows.
#[wasm_bindgen_test]
async fn a_version_3_database_gets_its_roots_entered() {
    let db = name();
    let first = format!("30617:{}:first", keys(2).public_key().to_hex());
    let second = format!("30617:{}:second", keys(2).public_key().to_hex());
    let repo = |coord: &str| grasp_sync_core::RepoRef::parse(coord).expect("a coordinate");
    let both = sign(
        &keys(3),
        1621,
        1_700_000_000,
        vec![
            vec!["a".into(), first.clone()],
            vec!["a".into(), second.clone()],
        ],
        "an issue of both repositories",
    );
    let expired = sign(
        &keys(3),
        1621,
        1_700_000_001,
        vec![
            vec!["a".into(), first.clone()],
            vec!["expiration".into(), "1700000100".into()],
        ],
        "expired",
    );
    let comment = sign(
        &keys(4),
        1111,
        1_700_000_002,
        vec![
            vec!["A".into(), first.clone()],
            vec!["E".into(), both.id.to_hex()],
        ],
        "a comment",
    );
    old_version(&db, 3, &[&both, &expired, &comment])
        .await
        .close();
    let store = IdbStore::open(&db).await.expect("open after the upgrade");
    assert_eq!(store.count().await.expect("count"), 3);
    let roots = |coords: &[&str]| {
        let coords: Vec<_> = coords.iter().map(|c| repo(c)).collect();
        let store = store.clone();
        async move {
            let mut got: Vec<EventId> = store
                .root_refs(&coords)
                .await
                .expect("roots")
                .into_iter()
                .map(|r| r.id)
                .collect();
            got.sort();
            got
        }
    };
    assert_eq!(roots(&[&first]).await, vec![both.id]);
    assert_eq!(roots(&[&second]).await, vec![both.id]);
    assert_eq!(roots(&[&first, &second]).await, vec![both.id]);

    // A root saved now is entered; a removed one is no longer read.
    let later = issue(5, 3, 1_700_000_010, &second);
    store
        .save_events(vec![later.clone()], Vec::new())
        .await
        .expect("save");
    let mut expected = vec![both.id, later.id];
    expected.sort();
    assert_eq!(roots(&[&second]).await, expected);
    let removal = Removal {
        id: both.id,
        author: both.pubkey,
    };
    store
        .save_events(Vec::new(), vec![removal])
        .await
        .expect("remove");
    assert_eq!(roots(&[&first]).await, Vec::<EventId>::new());
    assert_eq!(roots(&[&second]).await, vec![later.id]);
    // A root put and removed by one call ends with no entry.
    let gone = issue(6, 3, 1_700_000_020, &first);
    let removal = Removal {
        id: gone.id,
        author: gone.pubkey,
    };
    store
        .save_events(vec![gone], vec![removal])
        .await
        .expect("put and remove");
    assert_eq!(roots(&[&first]).await, Vec::<EventId>::new());
    store.close();
    schema::delete(&db).await.expect("delete");
}

#[wasm_bindgen_test]
async fn a_version_1_database_is_upgraded_in_place_and_a_blocked_upgrade_is_an_error() {
    let db = name();
    let live = issue(1, 0, 1_700_000_000, "r");
    let expired = sign(
        &keys(0),
        1621,
        1_700_000_001,
        vec![
            vec!["a".into(), "r".into()],
            vec!["expiration".into(), "1700000100".into()],
        ],
        "expired",
    );
    // A repository's root issue and a patch replying in a series (not a root).
    let coord = format!("30617:{}:demo", keys(2).public_key().to_hex());
    let root = issue(2, 2, 1_700_000_002, &coord);
    let reply = sign(
        &keys(2),
        1617,
        1_700_000_003,
        vec![
            vec!["a".into(), coord.clone()],
            vec!["e".into(), root.id.to_hex(), String::new(), "reply".into()],
        ],
        "a patch in a series",
    );
    let old = version_1(&db, &[&live, &expired, &root, &reply]).await;

    // The version-1 connection does not let go: the upgrade is blocked, and said so.
    let blocked = IdbStore::open(&db).await.err().expect("blocked");
    assert_eq!(blocked.code(), "upgrade-blocked", "{blocked}");

    // Once it closes, the upgrade (still pending) completes with the whole schema: the
    // rows are kept, and the expiration index leaves the expired one out of items.
    old.close();
    let store = IdbStore::open(&db).await.expect("open after the upgrade");
    assert_eq!(store.count().await.expect("count"), 4);
    // The upgrade noted the stored roots and entered them in the `roots` store: the
    // repository's root is read from the root index and from there, the reply is not.
    let repo = grasp_sync_core::RepoRef::parse(&coord).expect("a coordinate");
    let roots: Vec<_> = ids(&store
        .root_events(std::slice::from_ref(&repo))
        .await
        .expect("roots"));
    assert_eq!(roots, vec![root.id]);
    let refs = store
        .root_refs(std::slice::from_ref(&repo))
        .await
        .expect("root refs");
    assert_eq!(
        refs,
        vec![grasp_sync_core::RootRef {
            id: root.id,
            author: root.pubkey,
            repos: vec![repo],
        }]
    );
    let a = SingleLetterTag::from_char('a').expect("a letter");
    let filter = Filter::new().custom_tags(a, ["r"]);
    assert_eq!(
        store.items(&filter).await.expect("items"),
        vec![(live.created_at, live.id)]
    );
    let ids: Vec<_> = ids(&store.query_events(&filter).await.expect("query"));
    assert_eq!(ids, vec![live.id]);

    // Another tab upgrading further: this connection closes for it (the upgrade is not
    // blocked), and later calls fail as "closed".
    let newer = Database::open(db.as_str())
        .with_version(schema::VERSION + 1)
        .await
        .expect("a newer version opens");
    let closed = store.count().await.expect_err("closed");
    assert_eq!(closed.code(), "closed", "{closed}");
    // Through the driver's port: unavailable (retry or reopen).
    let port = Store::items(&store, filter).await.expect_err("closed");
    assert!(matches!(port, PortError::Unavailable(_)), "{port}");
    newer.close();
    schema::delete(&db).await.expect("delete");
}
