//! How long `GraspSync.open` takes to be ready (restore done) with 10 000 and 100 000
//! events stored: it must not grow with the store. A measurement, not an assertion on
//! time: run with `GRASP_WEB_BENCH=1 scripts/test-web.sh -- --test open_time -- --nocapture`.

#![cfg(target_arch = "wasm32")]

mod support;

use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_web::idb::{schema, IdbStore};
use nostr::prelude::{Event, EventId, Filter, Kind, SingleLetterTag, Timestamp};
use support::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `n` events of one repository: every 100th an issue (a root), the others comments on
/// one of the issues. Ids are made up (the store trusts what it is given).
fn events(repo: &str, n: usize) -> Vec<Event> {
    let issue = sign(
        &keys(1),
        1621,
        1_700_000_000,
        vec![vec!["a".into(), repo.into()]],
        "issue",
    );
    let comment = sign(
        &keys(2),
        1111,
        1_700_000_000,
        vec![vec!["E".into(), issue.id.to_hex()]],
        "comment",
    );
    (0..n)
        .map(|i| {
            let mut e = if i % 100 == 0 {
                issue.clone()
            } else {
                comment.clone()
            };
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            id[8] = 0x5a;
            e.id = EventId::from_byte_array(id);
            e.created_at = Timestamp::from(1_700_000_000 + i as u64);
            e
        })
        .collect()
}

async fn measure(n: usize) {
    let name = fresh_name("open-time");
    let repo = format!("30617:{}:bench", keys(1).public_key().to_hex());
    let announcement = sign(
        &keys(1),
        30617,
        1_699_000_000,
        vec![
            vec!["d".into(), "bench".into()],
            vec!["relays".into(), "ws://127.0.0.1:9".into()],
        ],
        "",
    );
    let sync = open(&name, &[], false).await.expect("open");
    call(sync.track(repo.clone())).await.expect("track");
    call(sync.close()).await.expect("close");
    let store = IdbStore::open(&name).await.expect("store");
    store
        .save_events(vec![announcement], Vec::new())
        .await
        .expect("save");
    let all = events(&repo, n);
    let filling = js_sys::Date::now();
    for chunk in all.chunks(5_000) {
        store
            .save_events(chunk.to_vec(), Vec::new())
            .await
            .expect("save");
    }
    let filled = js_sys::Date::now() - filling;
    assert_eq!(store.count().await.expect("count"), n as u64 + 1);
    store.close();
    let started = js_sys::Date::now();
    let sync = open(&name, &[], false).await.expect("reopen");
    let ready = js_sys::Date::now() - started;
    console_log!(
        "open to ready with {n} events stored: {ready:.0} ms (filling took {filled:.0} ms)"
    );
    call(sync.close()).await.expect("close");
    schema::delete(&name).await.expect("delete");
}

/// The store's hot paths at 10 000 stored events: a save of 1 000 new events, items for
/// a layer filter (`#E` of the root 9 900 events answer, from index keys), and a
/// newest-first limited query (a backwards cursor). Best of three runs each (the saves:
/// three batches, the store growing from 10 000 to 13 000).
#[wasm_bindgen_test]
async fn hot_paths_at_10_000_events() {
    if option_env!("GRASP_WEB_BENCH").is_none() {
        console_log!("GRASP_WEB_BENCH not set: skipped");
        return;
    }
    let name = fresh_name("hot-paths");
    let repo = format!("30617:{}:bench", keys(1).public_key().to_hex());
    let store = IdbStore::open(&name).await.expect("store");
    let all = events(&repo, 13_000);
    let (base, extra) = all.split_at(10_000);
    for chunk in base.chunks(5_000) {
        store
            .save_events(chunk.to_vec(), Vec::new())
            .await
            .expect("save");
    }
    let mut save_ms = f64::MAX;
    for chunk in extra.chunks(1_000) {
        let t = js_sys::Date::now();
        store
            .save_events(chunk.to_vec(), Vec::new())
            .await
            .expect("save");
        save_ms = save_ms.min(js_sys::Date::now() - t);
    }
    // The comments' `E` value: the id of the issue they were made from.
    let root = base[1]
        .tags
        .first()
        .and_then(|t| t.content())
        .expect("an E tag")
        .to_owned();
    let e = SingleLetterTag::from_char('E').expect("a letter");
    let layer = Filter::new().custom_tags(e, [root.clone()]);
    let limited = Filter::new().kind(Kind::from(1111)).limit(50);
    let (mut items_ms, mut query_ms) = (f64::MAX, f64::MAX);
    let (mut n_items, mut n_query) = (0, 0);
    for _ in 0..3 {
        let t = js_sys::Date::now();
        n_items = store.items(&layer).await.expect("items").len();
        items_ms = items_ms.min(js_sys::Date::now() - t);
        let t = js_sys::Date::now();
        n_query = store.query_events(&limited).await.expect("query").len();
        query_ms = query_ms.min(js_sys::Date::now() - t);
    }
    assert_eq!(n_query, 50);
    console_log!(
        "hot paths at ~10 000 events: save of 1 000 new events {save_ms:.0} ms; items for #E ({n_items} items) {items_ms:.0} ms; kind 1111 limit 50 {query_ms:.0} ms"
    );
    store.close();
    schema::delete(&name).await.expect("delete");
}

#[wasm_bindgen_test]
async fn open_to_ready_at_10_000_and_100_000_events() {
    if option_env!("GRASP_WEB_BENCH").is_none() {
        console_log!("GRASP_WEB_BENCH not set: skipped");
        return;
    }
    measure(10_000).await;
    measure(100_000).await;
}
