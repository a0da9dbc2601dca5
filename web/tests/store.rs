//! The IndexedDB store on its own, in headless Chromium: newest-first limits over
//! several index ranges, removals only by the author, items, sync state and reopen.

#![cfg(target_arch = "wasm32")]

use grasp_sync_core::accept::Removal;
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_web::idb::{schema, IdbStore};
use nostr::prelude::{Event, Filter, Kind, SingleLetterTag};
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
    let got: Vec<_> = store
        .query_events(&filter)
        .await
        .expect("query")
        .iter()
        .map(|e| e.id)
        .collect();
    let want: Vec<_> = [5, 4, 3].iter().map(|&i| events[i].id).collect();
    assert_eq!(got, want, "the newest three over both tag values");
    let kinds = Filter::new()
        .kind(Kind::from(1621))
        .author(keys(1).public_key())
        .limit(2);
    let got: Vec<_> = store
        .query_events(&kinds)
        .await
        .expect("query")
        .iter()
        .map(|e| e.id)
        .collect();
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
    assert_eq!(
        removed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![events[0].id]
    );
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
    let ids: Vec<_> = store
        .query_events(&filter)
        .await
        .expect("query")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![later.id, live.id]);
    store.close();
    schema::delete(&db).await.expect("delete");
}
