//! The browser module against real relays on loopback (started by
//! `scripts/test-web.sh`): our daemon (NIP-77), nostr-rs-relay (REQ only) and scripted
//! misbehaving relays. Run with `wasm-pack test --headless --chrome` in `web/`.

#![cfg(target_arch = "wasm32")]

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Tracks every repository of `repos`, waits for the sync; the summary.
async fn sync_all(sync: &grasp_sync_web::api::GraspSync, repos: &[String]) -> serde_json::Value {
    for repo in repos {
        call(sync.track(repo.clone())).await.expect("track");
    }
    call(sync.synced()).await.expect("synced")
}

#[wasm_bindgen_test]
async fn a_cold_sync_stores_exactly_the_acceptable_union_and_a_reopen_receives_nothing() {
    let Some(fx) = fixture() else {
        console_log!("no relays (run scripts/test-web.sh): skipped");
        return;
    };
    let name = fresh_name("cold");
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let longest = support::LongTasks::observe();
    let started = js_sys::Date::now();
    let sync = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("open");
    assert!(sync.is_writer());
    let summary = sync_all(&sync, &strings(&fx, "repos")).await;
    let took = js_sys::Date::now() - started;
    let want: BTreeSet<String> = strings(&fx, "acceptable").into_iter().collect();
    let have = stored_ids(&sync).await;
    console_log!(
        "cold sync: {} events in {took:.0} ms, longest main-thread task {:.0} ms ({} over 50 ms); {summary}",
        have.len(),
        longest.max(),
        longest.count()
    );
    let extra: Vec<String> = have.difference(&want).cloned().collect();
    if !extra.is_empty() {
        let events = call(sync.query(js(&json!({ "ids": extra }))))
            .await
            .expect("query");
        let missing: Vec<&String> = want.difference(&have).collect();
        let deletions = call(sync.query(js(&json!({ "kinds": [5] }))))
            .await
            .expect("query");
        panic!("extra events: {events}\nmissing: {missing:?}\ndeletions: {deletions}\n{summary}");
    }
    assert_eq!(
        want.difference(&have).count(),
        0,
        "missing events: {summary}"
    );
    assert_eq!(summary["complete"], json!(true), "{summary}");
    assert!(
        relay(&summary, fx["nostrRsRelay"].as_str().unwrap_or_default()).is_some(),
        "{summary}"
    );
    let mut relays = summary["relays"].as_array().into_iter().flatten();
    assert!(
        relays.all(|r| r["lastError"].is_null()),
        "no error once in sync: {summary}"
    );
    call(sync.close()).await.expect("close");

    // Reopened: the checkpoints in the database make this a catch-up with nothing new.
    let started = js_sys::Date::now();
    let again = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("reopen");
    let ready = js_sys::Date::now() - started;
    assert_eq!(
        again.repos().len(),
        strings(&fx, "repos").len(),
        "tracked repositories persist"
    );
    let second = call(again.synced()).await.expect("synced");
    console_log!("reopen: ready in {ready:.0} ms; {second}");
    assert_eq!(
        total(&second, "received"),
        0,
        "a second sync received events: {second}"
    );
    assert_eq!(stored_ids(&again).await, have);
    assert_eq!(second["complete"], json!(true), "{second}");
    call(again.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn forged_signatures_and_malformed_frames_are_counted_not_stored() {
    let Some(fx) = fixture() else { return };
    let forger = fx["forger"].as_str().unwrap_or_default().to_owned();
    let sync = open(&fresh_name("forger"), std::slice::from_ref(&forger), true)
        .await
        .expect("open");
    let summary = sync_all(&sync, &strings(&fx, "forgerRepos")).await;
    let want: BTreeSet<String> = strings(&fx, "forgerAcceptable").into_iter().collect();
    let have = stored_ids(&sync).await;
    console_log!("forger: {summary}");
    assert_eq!(have, want, "{summary}");
    let at = relay(&summary, &forger).expect("the forger in the summary");
    let forged = fx["forgedPerAnswer"].as_u64().unwrap_or(0);
    let malformed = fx["malformedPerAnswer"].as_u64().unwrap_or(0);
    assert!(at["rejected"].as_u64().unwrap_or(0) >= forged, "{summary}");
    assert!(
        at["badFrames"].as_u64().unwrap_or(0) >= malformed,
        "{summary}"
    );
    call(sync.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn a_connection_that_dies_mid_sync_is_a_failure_not_done() {
    let Some(fx) = fixture() else { return };
    let dying = fx["dying"].as_str().unwrap_or_default().to_owned();
    let sync = open(&fresh_name("dying"), std::slice::from_ref(&dying), true)
        .await
        .expect("open");
    let summary = sync_all(&sync, &strings(&fx, "dyingRepos")).await;
    console_log!("dying: {summary}");
    assert_eq!(summary["complete"], json!(false), "{summary}");
    let at = relay(&summary, &dying).expect("the relay in the summary");
    assert_eq!(at["result"], json!("failed"), "{summary}");
    // Why it failed is shown (the close or the connect timeout), not null.
    assert!(
        at["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{summary}"
    );
    call(sync.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn relays_at_private_addresses_from_announcements_are_refused_by_default() {
    let Some(fx) = fixture() else { return };
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let repos = strings(&fx, "repos");
    // The bootstrap relay is named by the page and used; the loopback relays the
    // announcement lists are not.
    let sync = open(&fresh_name("private"), std::slice::from_ref(&daemon), false)
        .await
        .expect("open");
    let summary = sync_all(&sync, &repos[..1]).await;
    console_log!("private: {summary}");
    let events = call(sync.query(js(&json!({})))).await.expect("query");
    let kinds: BTreeSet<u64> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        BTreeSet::from([30617]),
        "only the announcement: {summary}"
    );
    assert!(
        relay(&summary, fx["nostrRsRelay"].as_str().unwrap_or_default()).is_none(),
        "{summary}"
    );
    call(sync.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn a_second_instance_on_the_same_database_reads_and_takes_over_when_the_first_closes() {
    let name = fresh_name("tabs");
    let first = open(&name, &[], true).await.expect("open");
    let second = open(&name, &[], true).await.expect("open again");
    assert!(first.is_writer());
    assert!(!second.is_writer());
    let repo = format!("30617:{}:x", "a".repeat(64));
    let refused = call(second.track(repo.clone()))
        .await
        .expect_err("a reader does not write");
    assert_eq!(code(&refused), "read-only");
    call(first.track(repo.clone()))
        .await
        .expect("the writer tracks");
    call(first.close()).await.expect("close");
    for _ in 0..50 {
        if second.is_writer() {
            break;
        }
        sleep(20).await;
    }
    assert!(second.is_writer(), "the reader takes over");
    assert_eq!(second.repos(), vec![repo]);
    call(second.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn a_published_comment_reaches_the_repository_relays_and_the_database() {
    let Some(fx) = fixture() else { return };
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let repos = strings(&fx, "repos");
    let sync = open(&fresh_name("publish"), std::slice::from_ref(&daemon), true)
        .await
        .expect("open");
    sync_all(&sync, &repos[..1]).await;
    let roots = call(sync.query(js(
        &json!({ "kinds": [1621], "#a": [repos[0]], "limit": 1 }),
    )))
    .await
    .expect("query");
    let root = roots[0]["id"]
        .as_str()
        .expect("a root of the repository")
        .to_owned();
    let root_kind = roots[0]["kind"].as_u64().unwrap_or(1621).to_string();
    // Old enough that a quick reconnect's catch-up window (10 min) does not cover it:
    // the other tests share these relays.
    let created_at = roots[0]["created_at"].as_u64().unwrap_or(1_700_000_000) + 1;
    let comment = grasp_sync_testkit::corpus::sign(
        &grasp_sync_testkit::corpus::keys(PUBLISHER),
        1111,
        created_at,
        vec![
            vec!["E".into(), root.clone()],
            vec!["K".into(), root_kind.clone()],
            vec!["e".into(), root],
            vec!["k".into(), root_kind],
        ],
        "published from the browser",
    );
    let event: serde_json::Value = serde_json::from_str(&comment.as_json()).expect("json");
    let result = call(sync.publish(js(&event))).await.expect("publish");
    console_log!("publish: {result}");
    assert_eq!(result["stored"], json!(true), "{result}");
    let accepted: Vec<String> = result["accepted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        accepted.iter().any(|u| u.trim_end_matches('/') == daemon),
        "{result}"
    );
    let held = call(sync.query(js(&json!({ "ids": [comment.id.to_hex()] }))))
        .await
        .expect("query");
    assert_eq!(held.as_array().map(Vec::len), Some(1));
    let mut forged = event.clone();
    forged["content"] = json!("changed after signing");
    let refused = call(sync.publish(js(&forged)))
        .await
        .expect_err("a forged event");
    assert_eq!(code(&refused), "invalid-event");
    call(sync.close()).await.expect("close");
}

#[wasm_bindgen_test]
async fn closed_mid_sync_and_reopened_it_ends_with_exactly_the_acceptable_union() {
    let Some(fx) = fixture() else { return };
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let name = fresh_name("interrupted");
    let sync = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("open");
    let added = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let count = added.clone();
    let on_changes = wasm_bindgen::closure::Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(
        move |changes: wasm_bindgen::JsValue| {
            let n = js_sys::Reflect::get(&changes, &"added".into())
                .map(|a| js_sys::Array::from(&a).length())
                .unwrap_or(0);
            count.set(count.get() + n);
        },
    );
    use wasm_bindgen::JsCast;
    let mut sub = sync
        .subscribe(
            js(&json!({})),
            on_changes
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .clone(),
        )
        .expect("subscribe");
    for repo in strings(&fx, "repos") {
        call(sync.track(repo)).await.expect("track");
    }
    for _ in 0..500 {
        if added.get() >= 50 {
            break;
        }
        sleep(5).await;
    }
    let at_close = added.get();
    sub.close();
    call(sync.close()).await.expect("close mid-sync");
    let want: BTreeSet<String> = strings(&fx, "acceptable").into_iter().collect();
    assert!(
        (at_close as usize) < want.len(),
        "closed after the sync ended ({at_close} added)"
    );

    let again = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("reopen");
    let summary = call(again.synced()).await.expect("synced");
    console_log!("interrupted after {at_close} stored events, then: {summary}");
    assert_eq!(stored_ids(&again).await, want, "{summary}");
    assert_eq!(summary["complete"], json!(true), "{summary}");
    call(again.close()).await.expect("close");
}

/// Ids of a change notification: `added` holds events, `removed` their ids.
fn change_ids(changes: &wasm_bindgen::JsValue, field: &str) -> Vec<String> {
    js_sys::Reflect::get(changes, &field.into())
        .map(|a| js_sys::Array::from(&a).iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match field {
            "removed" => e.as_string(),
            _ => js_sys::Reflect::get(&e, &"id".into()).ok()?.as_string(),
        })
        .collect()
}

/// The relay URLs of a status array or of a summary's `relays`.
fn urls(relays: &serde_json::Value) -> BTreeSet<String> {
    relays
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["url"].as_str().map(str::to_owned))
        .collect()
}

#[wasm_bindgen_test]
async fn a_reading_tab_hears_the_writers_changes_statuses_and_summary() {
    use wasm_bindgen::JsCast;
    let Some(fx) = fixture() else { return };
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let name = fresh_name("reader");
    let writer = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("open");
    let reader = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("open again");
    assert!(writer.is_writer() && !reader.is_writer());

    let net = std::rc::Rc::new(std::cell::RefCell::new(BTreeSet::<String>::new()));
    let seen = net.clone();
    let on_changes = wasm_bindgen::closure::Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(
        move |changes: wasm_bindgen::JsValue| {
            let mut seen = seen.borrow_mut();
            seen.extend(change_ids(&changes, "added"));
            for id in change_ids(&changes, "removed") {
                seen.remove(&id);
            }
        },
    );
    let mut sub = reader
        .subscribe(
            js(&json!({})),
            on_changes
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .clone(),
        )
        .expect("subscribe");
    let calls = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let count = calls.clone();
    let on_status =
        wasm_bindgen::closure::Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(move |_| {
            count.set(count.get() + 1)
        });
    let mut listening = reader.on_status(
        on_status
            .as_ref()
            .unchecked_ref::<js_sys::Function>()
            .clone(),
    );

    let written = sync_all(&writer, &strings(&fx, "repos")).await;
    let heard = call(reader.synced()).await.expect("the reader's synced()");
    console_log!("writer: {written}\nreader heard: {heard}");
    assert_eq!(heard["complete"], json!(true), "{heard}");
    assert_eq!(urls(&heard["relays"]), urls(&written["relays"]));
    assert!(!urls(&written["relays"]).is_empty(), "{written}");
    assert_eq!(
        urls(&json(&reader.status())),
        urls(&json(&writer.status())),
        "the reader's status() is the writer's"
    );
    assert!(calls.get() > 0, "the reader's onStatus was never called");
    let stored = stored_ids(&writer).await;
    assert_eq!(
        *net.borrow(),
        stored,
        "the reader's subscription saw every stored event"
    );

    // A tab opened after the sync settled asks the writer and hears the same summary.
    let late = open(&name, std::slice::from_ref(&daemon), true)
        .await
        .expect("open late");
    let late_heard = call(late.synced())
        .await
        .expect("the late reader's synced()");
    assert_eq!(late_heard["complete"], json!(true), "{late_heard}");
    assert_eq!(urls(&late_heard["relays"]), urls(&written["relays"]));

    sub.close();
    listening.close();
    for tab in [late, reader, writer] {
        call(tab.close()).await.expect("close");
    }
}
