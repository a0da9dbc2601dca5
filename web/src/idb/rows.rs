//! An event as an IndexedDB row: its JSON plus the fields the indexes read.

use grasp_sync_core::{RepoRef, RootRef};
use grasp_sync_store::notes;
use nostr::prelude::{Event, EventId, PublicKey};
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

/// `event` as a row, and the repositories it names when it is a root (its `rc` field).
pub fn row(event: &Event) -> Result<(JsValue, Vec<String>), StoreError> {
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
    let value = serde_wasm_bindgen::to_value(&row)
        .map_err(|e| StoreError::Other(format!("encoding: {e}")))?;
    Ok((value, row.rc))
}

/// The `rc` field: a root's repositories as `30617:<pubkey>:<d>` (see
/// [`notes::root_repos`]).
pub fn root_coords(event: &Event) -> Vec<String> {
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

/// The repositories of a root row (its `rc` field; read from its event for a row written
/// before version 3, which has none); empty for a row that is not a root.
pub fn root_coords_of_row(row: &JsValue) -> Result<Vec<String>, StoreError> {
    match field(row, "rc").filter(js_sys::Array::is_array) {
        Some(list) => Ok(js_sys::Array::from(&list)
            .iter()
            .filter_map(|c| c.as_string())
            .collect()),
        None => Ok(root_coords(&event_of(row)?)),
    }
}

/// The key of a root's entry in the `roots` store under one of its repositories:
/// `[coord, id]`.
pub fn root_entry_key(coord: &str, id: &str) -> JsValue {
    js_sys::Array::of2(&coord.into(), &id.into()).into()
}

/// The range of `roots` keys under repository `coord`: `[coord]` (below every
/// `[coord, id]`) to `[coord, []]` (above them: arrays sort after strings).
pub fn root_entry_range(coord: &str) -> (JsValue, JsValue) {
    let low = js_sys::Array::of1(&coord.into());
    let high = js_sys::Array::of2(&coord.into(), &js_sys::Array::new());
    (low.into(), high.into())
}

/// A root's entry in the `roots` store, from its row and repositories: what the index
/// keeps of it (`i` its id, `p` its author, `c` its repositories) and `exp`, its
/// expiration when it has one (so [`expired`] reads it as a row).
pub fn root_entry(row: &JsValue, coords: &[String]) -> JsValue {
    let entry = js_sys::Object::new();
    let list: js_sys::Array = coords.iter().map(|c| JsValue::from_str(c)).collect();
    for (name, value) in [
        ("i", field(row, "id")),
        ("p", field(row, "pk")),
        ("c", Some(list.into())),
        ("exp", field(row, "exp")),
    ] {
        if let Some(value) = value.filter(|v| !v.is_undefined()) {
            let _ = js_sys::Reflect::set(&entry, &name.into(), &value);
        }
    }
    entry.into()
}

/// The root an entry of the `roots` store names (`None` for an entry that does not
/// read as one).
pub fn root_ref_of_entry(entry: &JsValue) -> Option<RootRef> {
    let id = EventId::from_hex(&field(entry, "i")?.as_string()?).ok()?;
    let author = PublicKey::from_hex(&field(entry, "p")?.as_string()?).ok()?;
    let list = field(entry, "c").filter(js_sys::Array::is_array)?;
    let mut repos: Vec<RepoRef> = js_sys::Array::from(&list)
        .iter()
        .filter_map(|c| RepoRef::parse(&c.as_string()?).ok())
        .collect();
    repos.sort();
    repos.dedup();
    Some(RootRef { id, author, repos })
}

/// The id (hex) of a row.
pub fn id_of(row: &JsValue) -> Option<String> {
    field(row, "id")?.as_string()
}
