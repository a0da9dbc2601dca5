//! The verifier port in headless Chromium: batches are checked in Web Workers, forged
//! events are still refused, and a worker that cannot start, errors, answers wrongly or
//! stays silent leaves its batch to the main thread — never accepted unchecked. With
//! the fixture's relays, a cold sync verifies in workers. Run with `wasm-pack test
//! --headless --chrome` in `web/`.

#![cfg(target_arch = "wasm32")]

mod support;

use std::collections::BTreeSet;

use grasp_sync_testkit::corpus;
use grasp_sync_web::verify::{self, BrowserVerifier, PoolConfig, Totals};
use nostr::prelude::Event;
use serde_json::json;
use support::*;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `n` signed events (some with long contents and many tags), then forgeries of each
/// kind: content changed after signing, a signature from another event, an id that is
/// not the content's hash, a key that is not on the curve. The expected flags.
fn batch(n: usize) -> (Vec<Event>, Vec<bool>) {
    let keys = corpus::keys(7);
    let mut events: Vec<Event> = (0..n)
        .map(|i| {
            let tags = (0..i % 5)
                .map(|t| vec!["t".to_owned(), format!("topic-{t}"), "\"quoted\"\n".into()])
                .collect();
            let content = format!("event {i} {}", "é\u{1F600}\\x".repeat(i % 40));
            corpus::sign(&keys, 1621, 1_700_000_000 + i as u64, tags, &content)
        })
        .collect();
    let mut valid = vec![true; n];
    let other = events[0].sig.to_hex();
    let mut forge = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&events[events.len() / 2].as_json()).expect("json");
        f(&mut v);
        if let Ok(e) = Event::from_json(v.to_string()) {
            events.push(e);
            valid.push(false);
        }
    };
    forge(&|v| v["content"] = json!("changed after signing"));
    forge(&|v| v["sig"] = json!(other));
    forge(&|v| v["id"] = json!("00".repeat(32)));
    forge(&|v| v["pubkey"] = json!("ff".repeat(32)));
    forge(&|v| v["created_at"] = json!(1));
    assert_eq!(
        valid.iter().filter(|v| !**v).count(),
        5,
        "every forgery parses"
    );
    (events, valid)
}

fn delta(before: Totals) -> Totals {
    let now = verify::totals();
    Totals {
        in_workers: now.in_workers - before.in_workers,
        on_main_thread: now.on_main_thread - before.on_main_thread,
        worker_failures: now.worker_failures - before.worker_failures,
    }
}

/// A same-origin URL of a worker script with this source.
fn script_url(source: &str) -> String {
    let make = js_sys::Function::new_with_args(
        "src",
        "return URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));",
    );
    make.call1(&JsValue::NULL, &source.into())
        .ok()
        .and_then(|u| u.as_string())
        .expect("a blob URL")
}

#[wasm_bindgen_test]
fn the_packed_form_checks_exactly_what_nostr_checks() {
    let (events, valid) = batch(120);
    let by_nostr: Vec<bool> = events.iter().map(|e| e.verify().is_ok()).collect();
    assert_eq!(by_nostr, valid);
    let (packed, flags) = verify::pack_and_check(&events);
    assert_eq!(flags, valid);
    // What the main thread pays (packing) against what a worker pays (checking).
    let reps = 5;
    let t0 = js_sys::Date::now();
    for _ in 0..reps {
        std::hint::black_box(verify::pack_only(&events));
    }
    let t1 = js_sys::Date::now();
    for _ in 0..reps {
        std::hint::black_box(events.iter().filter(|e| e.verify().is_ok()).count());
    }
    let t2 = js_sys::Date::now();
    let n = (events.len() * reps) as f64;
    console_log!(
        "{} events, {} packed bytes: packing {:.1} µs/event on the main thread, Event::verify {:.1} µs/event",
        events.len(),
        packed.len(),
        (t1 - t0) * 1000.0 / n,
        (t2 - t1) * 1000.0 / n
    );
}

#[wasm_bindgen_test]
async fn a_pool_verifies_in_workers_and_still_refuses_forgeries() {
    let (events, valid) = batch(300);
    let n = events.len() as u64;
    let pool = BrowserVerifier::new(Some(2));
    let before = verify::totals();
    let started = js_sys::Date::now();
    let flags = pool.check(events.clone()).await;
    let cold = js_sys::Date::now() - started;
    assert_eq!(flags, valid);
    let d = delta(before);
    assert_eq!(
        (d.in_workers, d.on_main_thread, d.worker_failures),
        (n, 0, 0),
        "{d:?}"
    );
    let started = js_sys::Date::now();
    assert_eq!(pool.check(events.clone()).await, valid);
    let warm = js_sys::Date::now() - started;
    let started = js_sys::Date::now();
    assert_eq!(BrowserVerifier::new(Some(0)).check(events).await, valid);
    let main = js_sys::Date::now() - started;
    console_log!(
        "{n} events: 2 workers {cold:.0} ms (first batch, workers starting), {warm:.0} ms warm; main thread {main:.0} ms"
    );
    let d = delta(before);
    assert_eq!((d.in_workers, d.on_main_thread), (2 * n, n), "{d:?}");
    // An empty batch needs no worker.
    assert!(pool.check(Vec::new()).await.is_empty());
}

#[wasm_bindgen_test]
async fn failed_workers_leave_their_batches_to_the_main_thread() {
    let (events, valid) = batch(60);
    let n = events.len() as u64;
    let cases = [
        ("a missing script", "/no-such-verifier-worker.js".to_owned(), 20_000),
        (
            "a worker that throws",
            script_url("onmessage = ({ data }) => { if (data.batch) throw new Error('boom'); };"),
            20_000,
        ),
        (
            "a worker that answers flags of the wrong length and value",
            script_url(
                "onmessage = ({ data }) => { if (data.batch) postMessage({ id: data.id, flags: new Uint8Array(3).fill(7) }); };",
            ),
            20_000,
        ),
        (
            "a worker that answers an error",
            script_url("onmessage = ({ data }) => { if (data.batch) postMessage({ id: data.id, error: 'no' }); };"),
            20_000,
        ),
        ("a silent worker", script_url("onmessage = () => {};"), 300),
        ("a worker that closes itself", script_url("onmessage = () => close();"), 300),
    ];
    for (what, script, timeout_ms) in cases {
        let pool = BrowserVerifier::with_config(PoolConfig {
            size: 2,
            script: Some(script),
            timeout_ms,
            respawns: 1,
        });
        for round in 0..2 {
            let before = verify::totals();
            let flags = pool.check(events.clone()).await;
            assert_eq!(flags, valid, "{what}, round {round}");
            let d = delta(before);
            assert_eq!(
                (d.in_workers, d.on_main_thread),
                (0, n),
                "{what}, round {round}: {d:?}"
            );
            if round == 0 {
                assert!(d.worker_failures >= 1, "{what}: {d:?}");
            }
        }
    }
    // No workers asked for: the main thread, as before there were workers.
    let before = verify::totals();
    assert_eq!(BrowserVerifier::new(Some(0)).check(events).await, valid);
    let d = delta(before);
    assert_eq!(
        (d.in_workers, d.on_main_thread, d.worker_failures),
        (0, n, 0)
    );
}

#[wasm_bindgen_test]
async fn workers_that_die_mid_batch_are_replaced_within_the_budget() {
    let (events, valid) = batch(600);
    let n = events.len() as u64;
    let pool = BrowserVerifier::with_config(PoolConfig {
        size: 2,
        script: None,
        timeout_ms: 20_000,
        respawns: 2,
    });
    // Warm: both workers started and answering.
    assert_eq!(pool.check(events[..40].to_vec()).await, valid[..40]);
    // Both die while holding a batch: it is checked on the main thread instead.
    let before = verify::totals();
    let (tx, rx) = futures::channel::oneshot::channel();
    let checking = pool.clone();
    let batch_events = events.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let _ = tx.send(checking.check(batch_events).await);
    });
    sleep(30).await;
    pool.fail_workers();
    assert_eq!(rx.await.expect("the check ends"), valid);
    let d = delta(before);
    assert_eq!(d.worker_failures, 2, "{d:?}");
    assert!(d.on_main_thread > 0, "the killed workers' batches: {d:?}");
    assert_eq!(d.in_workers + d.on_main_thread, n, "{d:?}");
    // The two replacements (the whole budget) verify the next batch.
    let before = verify::totals();
    assert_eq!(pool.check(events.clone()).await, valid);
    let d = delta(before);
    assert_eq!((d.in_workers, d.on_main_thread), (n, 0), "{d:?}");
    // With the budget spent, failed workers are not replaced: the main thread checks.
    pool.fail_workers();
    let before = verify::totals();
    assert_eq!(pool.check(events).await, valid);
    let d = delta(before);
    assert_eq!((d.in_workers, d.on_main_thread), (0, n), "{d:?}");
}

/// A cold sync of the fixture's repositories from our daemon with `workers` workers:
/// (ms, longest main-thread task, totals delta).
async fn cold_sync(fx: &serde_json::Value, workers: u32) -> (f64, f64, Totals) {
    let daemon = fx["daemon"].as_str().unwrap_or_default().to_owned();
    let options = json!({
        "name": fresh_name(&format!("workers-{workers}")),
        "bootstrapRelays": [daemon],
        "allowPrivateRelays": true,
        "workers": workers,
    });
    let longest = LongTasks::observe();
    let before = verify::totals();
    let started = js_sys::Date::now();
    let sync = grasp_sync_web::api::GraspSync::open(js(&options))
        .await
        .expect("open");
    for repo in strings(fx, "repos") {
        call(sync.track(repo)).await.expect("track");
    }
    let summary = call(sync.synced()).await.expect("synced");
    let took = js_sys::Date::now() - started;
    assert_eq!(summary["complete"], json!(true), "{summary}");
    let want: BTreeSet<String> = strings(fx, "acceptable").into_iter().collect();
    assert_eq!(stored_ids(&sync).await, want);
    call(sync.close()).await.expect("close");
    (took, longest.max(), delta(before))
}

#[wasm_bindgen_test]
async fn a_cold_sync_verifies_in_workers() {
    let Some(fx) = fixture() else {
        console_log!("no relays (run scripts/test-web.sh): skipped");
        return;
    };
    let (main_ms, main_task, d0) = cold_sync(&fx, 0).await;
    assert_eq!(d0.in_workers, 0, "{d0:?}");
    assert!(d0.on_main_thread > 0, "{d0:?}");
    let (pool_ms, pool_task, d2) = cold_sync(&fx, 2).await;
    assert_eq!(d2.on_main_thread, 0, "{d2:?}");
    assert!(d2.in_workers >= d0.on_main_thread, "{d2:?} vs {d0:?}");
    console_log!(
        "cold sync of {} events: main thread {main_ms:.0} ms (longest task {main_task:.0} ms, {} verified); 2 workers {pool_ms:.0} ms (longest task {pool_task:.0} ms, {} verified)",
        strings(&fx, "acceptable").len(),
        d0.on_main_thread,
        d2.in_workers
    );
}
