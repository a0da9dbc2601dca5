//! The store port on IndexedDB (see `schema.rs` for the layout).
//!
//! One port call is one self-contained transaction: nothing holds a transaction across
//! an unrelated `await`. Rows are built, and read rows parsed, outside transactions, in
//! slices that yield to the page. Nothing reads every event at start-up: the engine's
//! start-up queries (announcements in scope, their roots, deletions) and the sync state
//! read only what they name. Nothing is ever evicted.

mod cursor;
mod plan;
mod req;
mod rows;
pub mod schema;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use grasp_sync_core::accept::Removal;
use grasp_sync_driver::{Saved, SavedState, Store};
use nostr::prelude::{Event, EventId, Filter, MatchEventOptions, Timestamp};
use wasm_bindgen::prelude::*;
use web_sys::{
    IdbCursorDirection, IdbCursorWithValue, IdbDatabase, IdbKeyRange, IdbTransactionMode,
};

pub use plan::{plan, Plan, Prefix};
pub use req::StoreError;

use crate::clock::pace;
use cursor::Step;
use grasp_sync_store::records;
use req::{committed, done, js};

/// A record's bytes (JSON) as the string IndexedDB keeps.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows handled between two looks at the clock.
const SLICE_ROWS: usize = 64;

/// Called after a save commits: the events put and the events removed.
pub type OnSaved = Rc<dyn Fn(&[Event], &[Event])>;

/// An IndexedDB database holding events and sync state.
#[derive(Clone)]
pub struct IdbStore {
    inner: Rc<Inner>,
}

struct Inner {
    db: IdbDatabase,
    name: String,
    on_saved: RefCell<Option<OnSaved>>,
}

impl IdbStore {
    /// Opens (creating or upgrading) database `name`.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        let db = schema::open(name).await?;
        Ok(Self {
            inner: Rc::new(Inner {
                db,
                name: name.to_owned(),
                on_saved: RefCell::new(None),
            }),
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Closes the connection; later calls fail with [`StoreError::Closed`].
    pub fn close(&self) {
        self.inner.db.close();
    }

    /// Sets what is called after each committed save.
    pub fn set_on_saved(&self, on_saved: Option<OnSaved>) {
        *self.inner.on_saved.borrow_mut() = on_saved;
    }

    fn tx(
        &self,
        stores: &[&str],
        mode: IdbTransactionMode,
    ) -> Result<web_sys::IdbTransaction, StoreError> {
        let names = js_sys::Array::new();
        for s in stores {
            names.push(&JsValue::from_str(s));
        }
        self.inner
            .db
            .transaction_with_str_sequence_and_mode(&names, mode)
            .map_err(js)
    }

    /// Stored events matching `filter`, newest first (`created_at` descending, then id
    /// ascending), at most `filter.limit`; expired events (NIP-40) left out.
    pub async fn query_events(&self, filter: &Filter) -> Result<Vec<Event>, StoreError> {
        let rows = self.candidates(filter).await?;
        let now = Timestamp::now();
        let mut events = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if i % SLICE_ROWS == SLICE_ROWS - 1 {
                pace().await;
            }
            if rows::expired(row, now.as_secs()) {
                continue;
            }
            let event = rows::event_of(row)?;
            if filter.match_event(&event, MatchEventOptions::new()) {
                events.push(event);
            }
        }
        events.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        events.dedup_by_key(|e| e.id);
        if let Some(limit) = filter.limit {
            events.truncate(limit);
        }
        Ok(events)
    }

    /// (created_at, id) of the stored events `query_events(filter)` answers, newest
    /// first; without a limit, from index keys when the index range is the whole filter.
    pub async fn items(&self, filter: &Filter) -> Result<Vec<(Timestamp, EventId)>, StoreError> {
        // With a limit (`limit: 0` is a live filter: nothing), the same set as a query.
        if filter.limit.is_some() || !range_is_exact(filter) {
            return Ok(self
                .query_events(filter)
                .await?
                .into_iter()
                .map(|e| (e.created_at, e.id))
                .collect());
        }
        // The index keys hold created_at, and their primary keys the ids: no row is read
        // (a getAll of thousands of rows is one long task on the page's thread).
        let Plan::Ranges {
            index,
            prefixes,
            since,
            until,
        } = plan(filter)
        else {
            return Ok(Vec::new());
        };
        let ranges = key_ranges(prefixes.as_deref(), since, until)?;
        let tx = self.tx(&[schema::EVENTS], IdbTransactionMode::Readonly)?;
        let events = tx.object_store(schema::EVENTS).map_err(js)?;
        let index = events.index(index).map_err(js)?;
        let now = Timestamp::now().as_secs() as f64;
        let expired = events
            .index(schema::BY_EXPIRATION)
            .map_err(js)?
            .get_all_keys_with_key(&IdbKeyRange::upper_bound(&now.into()).map_err(js)?.into())
            .map_err(js)?;
        let walks = join_all(ranges.iter().map(|r| key_walk(&index, r)));
        let (walks, expired) = futures::future::join(walks, done(&expired)).await;
        let expired: HashSet<String> = js_sys::Array::from(&expired?)
            .iter()
            .filter_map(|k| k.as_string())
            .collect();
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for walk in walks {
            for (created_at, id) in walk? {
                if expired.contains(&id) {
                    continue;
                }
                if let Ok(id) = EventId::from_hex(&id) {
                    if seen.insert(id) {
                        items.push((Timestamp::from(created_at), id));
                    }
                }
            }
        }
        items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(items)
    }

    /// The rows the plan for `filter` reads (a superset of the matches; with a limit,
    /// at most `limit` newest per range, read with a cursor).
    async fn candidates(&self, filter: &Filter) -> Result<Vec<JsValue>, StoreError> {
        let tx = self.tx(&[schema::EVENTS], IdbTransactionMode::Readonly)?;
        let events = tx.object_store(schema::EVENTS).map_err(js)?;
        let mut rows = Vec::new();
        match plan(filter) {
            Plan::Empty => {}
            Plan::Ids(ids) => {
                let requests = ids
                    .iter()
                    .map(|id| events.get(&JsValue::from_str(&id.to_hex())).map_err(js))
                    .collect::<Result<Vec<_>, _>>()?;
                for result in join_all(requests.iter().map(done)).await {
                    let row = result?;
                    if !row.is_undefined() {
                        rows.push(row);
                    }
                }
            }
            Plan::Ranges {
                index,
                prefixes,
                since,
                until,
            } => {
                let index = events.index(index).map_err(js)?;
                let ranges = key_ranges(prefixes.as_deref(), since, until)?;
                match filter.limit {
                    None => {
                        let requests = ranges
                            .iter()
                            .map(|r| index.get_all_with_key(r).map_err(js))
                            .collect::<Result<Vec<_>, _>>()?;
                        for result in join_all(requests.iter().map(done)).await {
                            let array: js_sys::Array = result?.unchecked_into();
                            rows.extend(array.iter());
                        }
                    }
                    Some(limit) => {
                        // Every cursor opens before the first await (the transaction
                        // stays active only while requests are pending).
                        let walks = ranges.iter().map(|r| newest(&index, r, filter, limit));
                        for walk in join_all(walks).await {
                            rows.extend(walk?);
                        }
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Puts `events`, removes what `remove` names (when held and written by that author),
    /// in one transaction; returns the removed events.
    pub async fn save_events(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> Result<Saved, StoreError> {
        if events.is_empty() && remove.is_empty() {
            return Ok(Saved::default());
        }
        // What is held already, and what the removals name, read first: a write
        // transaction is never held across an await (it commits as soon as no request is
        // pending on it).
        let tx = self.tx(&[schema::EVENTS], IdbTransactionMode::Readonly)?;
        let store = tx.object_store(schema::EVENTS).map_err(js)?;
        let held_keys = events
            .iter()
            .map(|e| {
                store
                    .get_key(&JsValue::from_str(&e.id.to_hex()))
                    .map_err(js)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let removal_rows = remove
            .iter()
            .map(|r| store.get(&JsValue::from_str(&r.id.to_hex())).map_err(js))
            .collect::<Result<Vec<_>, _>>()?;
        let (held_keys, removal_rows) = futures::future::join(
            join_all(held_keys.iter().map(done)),
            join_all(removal_rows.iter().map(done)),
        )
        .await;
        let mut existed = Vec::new();
        let mut new = Vec::new();
        for (event, key) in events.iter().zip(held_keys) {
            if key?.is_undefined() {
                new.push(event);
            } else {
                existed.push(event.id);
            }
        }
        let mut removed = Vec::new();
        let mut deletes = Vec::new();
        for (removal, row) in remove.iter().zip(removal_rows) {
            let row = row?;
            if deletes.contains(&removal.id) {
                continue;
            }
            if !row.is_undefined() {
                if rows::author_of(&row) == Some(removal.author.to_hex()) {
                    deletes.push(removal.id);
                    removed.push(rows::event_of(&row)?);
                }
                continue;
            }
            // An event this same call puts, named by its author: it ends removed.
            if let Some(event) = new
                .iter()
                .find(|e| e.id == removal.id && e.pubkey == removal.author)
            {
                deletes.push(removal.id);
                removed.push((*event).clone());
            }
        }
        let mut built = Vec::with_capacity(new.len());
        for (i, event) in new.iter().enumerate() {
            if i % SLICE_ROWS == SLICE_ROWS - 1 {
                pace().await;
            }
            built.push(rows::row(event)?);
        }
        let tx = self.tx(&[schema::EVENTS], IdbTransactionMode::Readwrite)?;
        let store = tx.object_store(schema::EVENTS).map_err(js)?;
        for row in &built {
            store.put(row).map_err(js)?;
        }
        for id in &deletes {
            store.delete(&JsValue::from_str(&id.to_hex())).map_err(js)?;
        }
        committed(&tx).await?;
        let on_saved = self.inner.on_saved.borrow().clone();
        if let Some(on_saved) = on_saved {
            let added: Vec<Event> = new
                .into_iter()
                .filter(|e| !deletes.contains(&e.id))
                .cloned()
                .collect();
            on_saved(&added, &removed);
        }
        Ok(Saved { removed, existed })
    }

    /// Saves checkpoints and remembered ids in one transaction.
    pub async fn save_sync_state(&self, state: SavedState) -> Result<(), StoreError> {
        let tx = self.tx(
            &[schema::CHECKPOINTS, schema::SEEN],
            IdbTransactionMode::Readwrite,
        )?;
        let checkpoints = tx.object_store(schema::CHECKPOINTS).map_err(js)?;
        for c in &state.checkpoints {
            checkpoints
                .put_with_key(
                    &text(&records::encode_checkpoint(c)).into(),
                    &hex(&records::checkpoint_key(c)).into(),
                )
                .map_err(js)?;
        }
        let seen = tx.object_store(schema::SEEN).map_err(js)?;
        for e in &state.remembered {
            seen.put_with_key(
                &text(&records::encode_seen(e)).into(),
                &e.id.to_hex().into(),
            )
            .map_err(js)?;
        }
        committed(&tx).await
    }

    /// Checkpoints and remembered ids (expired entries are dropped, and deleted).
    pub async fn load_sync_state(&self) -> Result<SavedState, StoreError> {
        let tx = self.tx(
            &[schema::CHECKPOINTS, schema::SEEN],
            IdbTransactionMode::Readonly,
        )?;
        let checkpoints = tx.object_store(schema::CHECKPOINTS).map_err(js)?;
        let seen = tx.object_store(schema::SEEN).map_err(js)?;
        let requests = [
            checkpoints.get_all().map_err(js)?,
            seen.get_all_keys().map_err(js)?,
            seen.get_all().map_err(js)?,
        ];
        let mut answers = join_all(requests.iter().map(done)).await.into_iter();
        let mut next = || answers.next().unwrap_or(Ok(JsValue::UNDEFINED));
        let (cps, keys, values) = (next()?, next()?, next()?);
        let mut state = SavedState::default();
        for value in js_sys::Array::from(&cps).iter() {
            match value
                .as_string()
                .map(|t| records::decode_checkpoint(t.as_bytes()))
            {
                Some(Ok(c)) => state.checkpoints.push(c),
                other => tracing::warn!(?other, "an unreadable checkpoint, ignored"),
            }
        }
        let now = Timestamp::now();
        let keys = js_sys::Array::from(&keys);
        let values = js_sys::Array::from(&values);
        let mut expired = Vec::new();
        for (key, value) in keys.iter().zip(values.iter()) {
            let (Some(id), Some(text)) = (key.as_string(), value.as_string()) else {
                continue;
            };
            let id = EventId::from_hex(&id)
                .map(|i| i.to_bytes())
                .unwrap_or_default();
            match records::decode_seen(&id, text.as_bytes()) {
                Ok(entry) if entry.expires_at > now => state.remembered.push(entry),
                _ => expired.push(key),
            }
        }
        if !expired.is_empty() {
            let tx = self.tx(&[schema::SEEN], IdbTransactionMode::Readwrite)?;
            let seen = tx.object_store(schema::SEEN).map_err(js)?;
            for key in &expired {
                seen.delete(key).map_err(js)?;
            }
            committed(&tx).await?;
        }
        Ok(state)
    }

    /// A small record of the `meta` store.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let tx = self.tx(&[schema::META], IdbTransactionMode::Readonly)?;
        let store = tx.object_store(schema::META).map_err(js)?;
        Ok(done(&store.get(&key.into()).map_err(js)?)
            .await?
            .as_string())
    }

    /// Writes a small record of the `meta` store.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let tx = self.tx(&[schema::META], IdbTransactionMode::Readwrite)?;
        let store = tx.object_store(schema::META).map_err(js)?;
        store.put_with_key(&value.into(), &key.into()).map_err(js)?;
        committed(&tx).await
    }

    /// How many events are stored (one count request, not a scan in this module).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let tx = self.tx(&[schema::EVENTS], IdbTransactionMode::Readonly)?;
        let store = tx.object_store(schema::EVENTS).map_err(js)?;
        let n = done(&store.count().map_err(js)?).await?;
        Ok(n.as_f64().unwrap_or(0.0) as u64)
    }
}

/// The key ranges `[prefix, since]..=[prefix, until]` (or `since..=until` without
/// prefixes, the time index).
fn key_ranges(
    prefixes: Option<&[Prefix]>,
    since: u64,
    until: u64,
) -> Result<Vec<IdbKeyRange>, StoreError> {
    let (low, high) = (JsValue::from(since as f64), JsValue::from(until as f64));
    let Some(prefixes) = prefixes else {
        return Ok(vec![IdbKeyRange::bound(&low, &high).map_err(js)?]);
    };
    prefixes
        .iter()
        .map(|p| {
            let p = match p {
                Prefix::Str(s) => JsValue::from_str(s),
                Prefix::Num(n) => JsValue::from(*n),
            };
            IdbKeyRange::bound(
                &js_sys::Array::of2(&p, &low),
                &js_sys::Array::of2(&p, &high),
            )
            .map_err(js)
        })
        .collect()
}

/// (created_at, id hex) of every entry in `range` of `index`, from the keys alone: a key
/// cursor walked in its own success handler (one short task per entry, no row read).
async fn key_walk(
    index: &web_sys::IdbIndex,
    range: &IdbKeyRange,
) -> Result<Vec<(u64, String)>, StoreError> {
    let request = index.open_key_cursor_with_range(range).map_err(js)?;
    let mut items = Vec::new();
    cursor::walk(request, move |cursor| {
        let Some(cursor) = cursor else {
            return Step::Done(Ok(std::mem::take(&mut items)));
        };
        let key = cursor.key().unwrap_or(JsValue::NULL);
        let created_at = if js_sys::Array::is_array(&key) {
            js_sys::Array::from(&key).get(1).as_f64()
        } else {
            key.as_f64()
        };
        let id = cursor.primary_key().ok().and_then(|k| k.as_string());
        if let (Some(created_at), Some(id)) = (created_at, id) {
            items.push((created_at as u64, id));
        }
        Step::Next
    })
    .await
}

/// Up to `limit` rows in `range` of `index` that match `filter`, newest first: a cursor
/// walked backwards in its own success handler (a transaction does not stay active
/// across an `await`), stopping at the limit.
async fn newest(
    index: &web_sys::IdbIndex,
    range: &IdbKeyRange,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<JsValue>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let request = index
        .open_cursor_with_range_and_direction(range, IdbCursorDirection::Prev)
        .map_err(js)?;
    let now = Timestamp::now().as_secs();
    let filter = filter.clone();
    let mut kept = Vec::new();
    let mut boundary: Option<u64> = None;
    cursor::walk(request, move |cursor| {
        let Some(cursor) = cursor else {
            return Step::Done(Ok(std::mem::take(&mut kept)));
        };
        let cursor: &IdbCursorWithValue = cursor.unchecked_ref();
        if let Ok(row) = cursor.value() {
            let created_at = rows::created_at(&row);
            // Past the limit, only ties of the last kept second are read: backwards, equal
            // keys come in descending id order, and NIP-01 keeps the lowest ids.
            if boundary.is_some_and(|b| created_at < Some(b)) {
                return Step::Done(Ok(std::mem::take(&mut kept)));
            }
            let matches = !rows::expired(&row, now)
                && rows::event_of(&row)
                    .is_ok_and(|e| filter.match_event(&e, MatchEventOptions::new()));
            if matches {
                kept.push(row);
                if kept.len() >= limit && boundary.is_none() {
                    boundary = created_at.or(Some(0));
                }
            }
        }
        Step::Next
    })
    .await
}

/// Whether the plan's ranges match exactly what `filter` asks (one field besides the
/// time window), so rows need no check beyond expiration.
fn range_is_exact(filter: &Filter) -> bool {
    if filter.search.is_some() || filter.ids.is_some() {
        return false;
    }
    let fields = usize::from(filter.authors.is_some())
        + usize::from(filter.kinds.is_some())
        + filter.generic_tags.len();
    fields <= 1
}

impl Store for IdbStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, String>> {
        let store = self.clone();
        async move { store.query_events(&filter).await.map_err(|e| e.to_string()) }.boxed_local()
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, String>> {
        let store = self.clone();
        async move { store.items(&filter).await.map_err(|e| e.to_string()) }.boxed_local()
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> LocalBoxFuture<'static, Result<Saved, String>> {
        let store = self.clone();
        async move {
            store.save_events(events, remove).await.map_err(|e| {
                crate::error::console_warn(&format!("grasp-sync: saving events failed: {e}"));
                e.to_string()
            })
        }
        .boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), String>> {
        let store = self.clone();
        async move {
            store
                .save_sync_state(state)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, String>> {
        let store = self.clone();
        async move { store.load_sync_state().await.map_err(|e| e.to_string()) }.boxed_local()
    }
}
