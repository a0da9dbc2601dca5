//! An event as an IndexedDB row: its JSON plus the fields the indexes read.

use grasp_sync_store::notes;
use nostr::prelude::Event;
use serde::Serialize;
use wasm_bindgen::JsValue;

use super::error::StoreError;

/// At most this many tag index entries per event (a tag list longer than that is still
/// stored whole, and matched by the filter check).
const MAX_TAG_KEYS: usize = 256;

/// The stored form of an event.
#[derive(Serialize)]
struct Row<'a> {
    id: String,
    pk: String,
    kind: u16,
    ca: u64,
    json: &'a str,
    /// `["<letter>:<first value>", created_at]` per single-letter tag.
    tk: Vec<(String, u64)>,
    /// NIP-40 expiration, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    /// A root's repositories (`30617:<pubkey>:<d>`), for the `root` index (version 3).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rc: Vec<String>,
}

/// The index key of tag `letter` with `value`.
pub fn tag_key(letter: &str, value: &str) -> String {
    format!("{letter}:{value}")
}

/// `event` as a row.
pub fn row(event: &Event) -> Result<JsValue, StoreError> {
    let json = event.as_json();
    let ca = event.created_at.as_secs();
    let mut tk: Vec<(String, u64)> = Vec::new();
    for tag in event.tags.iter() {
        let parts = tag.as_slice();
        let (Some(name), Some(value)) = (parts.first(), parts.get(1)) else {
            continue;
        };
        if name.len() == 1 && name.chars().all(|c| c.is_ascii_alphabetic()) {
            let key = (tag_key(name, value), ca);
            if !tk.contains(&key) {
                tk.push(key);
            }
            if tk.len() >= MAX_TAG_KEYS {
                break;
            }
        }
    }
    let row = Row {
        id: event.id.to_hex(),
        pk: event.pubkey.to_hex(),
        kind: event.kind.as_u16(),
        ca,
        json: &json,
        tk,
        exp: notes::expiration(event).map(|t| t.as_secs()),
        rc: root_coords(event),
    };
    serde_wasm_bindgen::to_value(&row).map_err(|e| StoreError::Other(format!("encoding: {e}")))
}

/// The `rc` field: a root's repositories as `30617:<pubkey>:<d>` (see
/// [`notes::root_repos`]).
fn root_coords(event: &Event) -> Vec<String> {
    notes::root_repos(event)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Adds the `rc` field to a row written before version 3 (a root's repositories), in
/// place; whether the row changed.
pub fn note_root(row: &JsValue) -> Result<bool, StoreError> {
    let coords = root_coords(&event_of(row)?);
    if coords.is_empty() {
        return Ok(false);
    }
    let list: js_sys::Array = coords.iter().map(|c| JsValue::from_str(c)).collect();
    js_sys::Reflect::set(row, &"rc".into(), &list)
        .map_err(|_| StoreError::Other("a row that cannot be written".into()))?;
    Ok(true)
}

fn field(row: &JsValue, name: &str) -> Option<JsValue> {
    js_sys::Reflect::get(row, &name.into()).ok()
}

/// The event a row holds (not verified again: only verified events are stored).
pub fn event_of(row: &JsValue) -> Result<Event, StoreError> {
    let json = field(row, "json")
        .and_then(|j| j.as_string())
        .ok_or_else(|| StoreError::Corrupt("a row without its event".into()))?;
    Event::from_json(&json).map_err(|e| StoreError::Corrupt(format!("a stored event: {e}")))
}

/// The `created_at` of a row.
pub fn created_at(row: &JsValue) -> Option<u64> {
    field(row, "ca")?.as_f64().map(|c| c as u64)
}

/// The author (hex) of a row.
pub fn author_of(row: &JsValue) -> Option<String> {
    field(row, "pk")?.as_string()
}

/// Whether a row's event expired (NIP-40) by `now`.
pub fn expired(row: &JsValue, now: u64) -> bool {
    field(row, "exp")
        .and_then(|e| e.as_f64())
        .is_some_and(|exp| (exp as u64) <= now)
}
