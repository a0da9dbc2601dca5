//! What the browser tests share: the fixture (relays started by `scripts/test-web.sh`),
//! and the API's promises as Rust futures.

#![allow(dead_code)]

use std::collections::BTreeSet;

use grasp_sync_web::api::GraspSync;
use serde_json::Value;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

/// The relays and expectations `web-fixture` wrote, or `None` (no relays: skip).
pub fn fixture() -> Option<Value> {
    let v: Value =
        serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/fixture.json"))).ok()?;
    (!v.is_null()).then_some(v)
}

/// A string list of the fixture.
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A database name no other test uses.
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}-{}", js_sys::Math::random().to_bits())
}

/// `GraspSync.open` with these options.
pub async fn open(
    name: &str,
    bootstrap: &[String],
    allow_private: bool,
) -> Result<GraspSync, JsValue> {
    let options = serde_json::json!({
        "name": name,
        "bootstrapRelays": bootstrap,
        "allowPrivateRelays": allow_private,
    });
    GraspSync::open(js(&options)).await
}

/// A JSON value as a JS value.
pub fn js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

/// A JS value as JSON.
pub fn json(v: &JsValue) -> Value {
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// Awaits a promise of the API.
pub async fn call(p: js_sys::Promise) -> Result<Value, JsValue> {
    JsFuture::from(p).await.map(|v| json(&v))
}

/// The `code` of an API error.
pub fn code(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &"code".into())
        .ok()
        .and_then(|c| c.as_string())
        .unwrap_or_default()
}

/// The test key that signs what the publish test publishes to the shared relays: its
/// events are not part of the corpus.
pub const PUBLISHER: u64 = 77;

/// Ids of every stored event, leaving out what the publish test published.
pub async fn stored_ids(sync: &GraspSync) -> BTreeSet<String> {
    let publisher = grasp_sync_testkit::corpus::keys(PUBLISHER)
        .public_key()
        .to_hex();
    let events = call(sync.query(js(&serde_json::json!({}))))
        .await
        .expect("query");
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["pubkey"].as_str() != Some(publisher.as_str()))
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sum of one counter over the summary's relays.
pub fn total(summary: &Value, field: &str) -> u64 {
    summary["relays"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r[field].as_u64()).sum())
        .unwrap_or(0)
}

/// The summary's entry for `url`.
pub fn relay<'a>(summary: &'a Value, url: &str) -> Option<&'a Value> {
    summary["relays"].as_array()?.iter().find(|r| {
        r["url"].as_str().map(|u| u.trim_end_matches('/')) == Some(url.trim_end_matches('/'))
    })
}

/// Sleeps.
pub async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

/// Main-thread tasks over 50 ms the browser reports (`PerformanceObserver`, `longtask`).
pub struct LongTasks {
    state: JsValue,
}

impl LongTasks {
    /// Starts observing.
    pub fn observe() -> Self {
        let start = js_sys::Function::new_no_args(
            "const s = { max: 0, count: 0 };
             try {
               new PerformanceObserver((list) => {
                 for (const e of list.getEntries()) { s.max = Math.max(s.max, e.duration); s.count++; }
               }).observe({ type: 'longtask' });
             } catch (e) { s.max = -1; }
             return s;",
        );
        Self {
            state: start.call0(&JsValue::NULL).unwrap_or(JsValue::NULL),
        }
    }

    fn get(&self, key: &str) -> f64 {
        js_sys::Reflect::get(&self.state, &key.into())
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(-1.0)
    }

    /// The longest long task seen (0: none over 50 ms; -1: not observable here).
    pub fn max(&self) -> f64 {
        self.get("max")
    }

    /// How many long tasks were seen.
    pub fn count(&self) -> u64 {
        self.get("count").max(0.0) as u64
    }
}
