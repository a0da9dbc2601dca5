//! Cursor walks over one index range. Each step is awaited inside the transaction (a
//! request's success handler wakes the walk in a microtask, while the transaction is
//! still active) and nothing else is awaited between steps.

use indexed_db_futures::cursor::CursorDirection;
use indexed_db_futures::index::Index;
use indexed_db_futures::prelude::*;
use indexed_db_futures::KeyRange;
use nostr::prelude::{Filter, MatchEventOptions, Timestamp};
use wasm_bindgen::JsValue;

use super::error::StoreError;
use super::rows;

/// (created_at, id hex) of every entry in `range` of `index`, from the keys alone: a
/// key cursor, no row read.
pub async fn key_walk(
    index: &Index<'_>,
    range: KeyRange<JsValue>,
) -> Result<Vec<(u64, String)>, StoreError> {
    let opening = index
        .open_key_cursor()
        .with_query::<JsValue, _>(range)
        .primitive()?;
    let Some(mut cursor) = opening.await? else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    while let Some(key) = cursor.next_key::<JsValue>().await? {
        let created_at = if js_sys::Array::is_array(&key) {
            js_sys::Array::from(&key).get(1).as_f64()
        } else {
            key.as_f64()
        };
        if let (Some(created_at), Some(id)) = (created_at, cursor.primary_key::<String>()?) {
            items.push((created_at as u64, id));
        }
    }
    Ok(items)
}

/// Up to `limit` rows in `range` of `index` that match `filter`, newest first: a cursor
/// walked backwards, stopping at the limit.
pub async fn newest(
    index: &Index<'_>,
    range: KeyRange<JsValue>,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<JsValue>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let opening = index
        .open_cursor()
        .with_query::<JsValue, _>(range)
        .with_direction(CursorDirection::Prev)
        .primitive()?;
    let Some(mut cursor) = opening.await? else {
        return Ok(Vec::new());
    };
    let now = Timestamp::now().as_secs();
    let mut kept = Vec::new();
    let mut boundary: Option<u64> = None;
    while let Some(row) = cursor.next_record::<JsValue>().await? {
        let created_at = rows::created_at(&row);
        // Past the limit, only ties of the last kept second are read: backwards, equal
        // keys come in descending id order, and NIP-01 keeps the lowest ids.
        if boundary.is_some_and(|b| created_at < Some(b)) {
            break;
        }
        let matches = !rows::expired(&row, now)
            && rows::event_of(&row).is_ok_and(|e| filter.match_event(&e, MatchEventOptions::new()));
        if matches {
            kept.push(row);
            if kept.len() >= limit && boundary.is_none() {
                boundary = created_at.or(Some(0));
            }
        }
    }
    Ok(kept)
}
