//! The store port on IndexedDB (see `schema.rs` for the layout).
//!
//! One port call is one self-contained transaction: nothing holds a transaction across
//! an unrelated `await`. Rows are built, and read rows parsed, outside transactions, in
//! slices that yield to the page. Nothing reads every event at start-up: the engine's
//! start-up queries (announcements in scope, their roots, deletions) and the sync state
//! read only what they name. Nothing is ever evicted.
//!
//! IndexedDB is driven through `indexed_db_futures`; web-sys only where it lacks
//! something (`schema.rs`: the version-change transaction; `cursor.rs`: a key walk
//! without a future per step; `error.rs`: an abort's cause).

mod cursor;
mod error;
mod paced;
mod plan;
mod rows;
pub mod schema;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::matching::event_matches;
use grasp_sync_core::{RepoRef, RootRef};
use grasp_sync_driver::{Saved, SavedState, Store, StoreError as PortError};
use indexed_db_futures::internals::SystemRepr;
use indexed_db_futures::prelude::*;
use indexed_db_futures::primitive::TryToJs;
use indexed_db_futures::transaction::{Transaction, TransactionMode};
use indexed_db_futures::KeyRange;
use nostr::prelude::{Event, EventId, Filter, Timestamp};
use wasm_bindgen::prelude::*;

pub use error::StoreError;
pub use plan::{plan, Plan, Prefix};

use crate::clock::pace;
use cursor::{key_walk, newest};
use error::commit;
use grasp_sync_store::records;
use paced::Request;
use web_sys::IdbTransactionMode;

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

/// Key cursors open at once in one `items` call.
const CURSOR_LANES: usize = 16;

/// Called after a save commits: the events put and the events removed.
pub type OnSaved = Rc<dyn Fn(&[Event], &[Event])>;

/// An IndexedDB database holding events and sync state.
#[derive(Clone)]
pub struct IdbStore {
    inner: Rc<Inner>,
}

struct Inner {
    conn: schema::Connection,
    name: String,
    on_saved: RefCell<Option<OnSaved>>,
}

impl IdbStore {
    /// Opens (creating or upgrading) database `name`.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        let conn = schema::open(name).await?;
        Ok(Self {
            inner: Rc::new(Inner {
                conn,
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
        self.inner.conn.db.clone().close();
    }

    /// Sets what is called after each committed save.
    pub fn set_on_saved(&self, on_saved: Option<OnSaved>) {
        *self.inner.on_saved.borrow_mut() = on_saved;
    }

    /// A transaction on `stores`. Dropped without [`commit`], it rolls back (a read-only
    /// one is dropped once its requests are answered).
    fn tx(&self, stores: &[&str], mode: TransactionMode) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .inner
            .conn
            .db
            .transaction(stores)
            .with_mode(mode)
            .build()?)
    }

    /// Stored events matching `filter`, newest first (`created_at` descending, then id
    /// ascending), at most `filter.limit`; expired events (NIP-40) left out.
    pub async fn query_events(&self, filter: &Filter) -> Result<Vec<Event>, StoreError> {
        let rows = self.candidates(filter).await?;
        let mut events = unexpired_events(&rows, |e| event_matches(filter, e)).await?;
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
        // Thousands of IDBKeyRanges are built a slice at a time, before the transaction
        // (which cannot wait for a timer).
        let mut ranges = Vec::new();
        for (i, range) in key_ranges(prefixes.as_deref(), since, until)
            .into_iter()
            .enumerate()
        {
            if i % SLICE_ROWS == SLICE_ROWS - 1 {
                pace().await;
            }
            ranges.push(range.try_to_js()?);
        }
        let tx = self.tx(&[schema::EVENTS], TransactionMode::Readonly)?;
        let events = tx.object_store(schema::EVENTS)?;
        let index = events.index(index)?;
        let expiration = events.index(schema::BY_EXPIRATION)?;
        let now = Timestamp::now().as_secs() as f64;
        let expired = expiration
            .get_all_keys::<String>()
            .with_query::<JsValue, _>(KeyRange::UpperBound(now.into(), false))
            .primitive()?;
        // A tag filter naming thousands of roots is thousands of ranges: walked in a
        // few lanes, a cursor at a time each (opening them all at once was one long
        // task on the page's thread).
        let lanes = ranges.len().clamp(1, CURSOR_LANES);
        let mut per_lane: Vec<Vec<_>> = (0..lanes).map(|_| Vec::new()).collect();
        for (i, range) in ranges.into_iter().enumerate() {
            per_lane[i % lanes].push(range);
        }
        let walks = per_lane.into_iter().map(|ranges| key_walk(&index, ranges));
        let (walks, expired) = futures::future::join(join_all(walks), expired).await;
        let expired: HashSet<String> = expired?.collect::<Result<_, _>>()?;
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

    /// The stored, unexpired root events that name one of `coords` (pull requests,
    /// issues, patches starting a series), read from the `root` index: only roots are
    /// read, not every event that tags the repositories.
    pub async fn root_events(&self, coords: &[RepoRef]) -> Result<Vec<Event>, StoreError> {
        if coords.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.tx(&[schema::EVENTS], TransactionMode::Readonly)?;
        let events = tx.object_store(schema::EVENTS)?;
        let index = events.index(schema::BY_ROOT)?;
        let requests = coords
            .iter()
            .map(|c| {
                index
                    .get_all::<JsValue>()
                    .with_query::<JsValue, _>(KeyRange::Only(JsValue::from_str(&c.to_string())))
                    .primitive()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = Vec::new();
        for result in join_all(requests).await {
            for row in result? {
                rows.push(row?);
            }
        }
        drop(index);
        drop(events);
        drop(tx);
        let mut seen = HashSet::new();
        unexpired_events(&rows, |e| seen.insert(e.id)).await
    }

    /// What [`root_events`](Self::root_events) answers, as the index keeps the roots
    /// (id, author, repositories), from the `roots` store's entries under `coords`: no
    /// event is read or parsed.
    pub async fn root_refs(&self, coords: &[RepoRef]) -> Result<Vec<RootRef>, StoreError> {
        if coords.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.tx(&[schema::ROOTS], TransactionMode::Readonly)?;
        let roots = tx.object_store(schema::ROOTS)?;
        let requests = coords
            .iter()
            .map(|c| {
                let (low, high) = rows::root_entry_range(&c.to_string());
                roots
                    .get_all::<JsValue>()
                    .with_query::<JsValue, _>(KeyRange::Bound(low, false, high, false))
                    .primitive()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let now = Timestamp::now().as_secs();
        let mut seen = HashSet::new();
        let mut refs = Vec::new();
        for result in join_all(requests).await {
            for entry in result? {
                let entry = entry?;
                if rows::expired(&entry, now) {
                    continue;
                }
                match rows::root_ref_of_entry(&entry) {
                    Some(root) if seen.insert(root.id) => refs.push(root),
                    Some(_) => {}
                    None => tracing::warn!("an unreadable root entry, left out"),
                }
            }
        }
        Ok(refs)
    }

    /// The rows the plan for `filter` reads (a superset of the matches; with a limit,
    /// at most `limit` newest per range, read with a cursor).
    async fn candidates(&self, filter: &Filter) -> Result<Vec<JsValue>, StoreError> {
        let tx = self.tx(&[schema::EVENTS], TransactionMode::Readonly)?;
        let events = tx.object_store(schema::EVENTS)?;
        let mut rows = Vec::new();
        match plan(filter) {
            Plan::Empty => {}
            Plan::Ids(ids) => {
                let requests = ids
                    .iter()
                    .map(|id| events.get::<JsValue, _, _>(id.to_hex()).primitive())
                    .collect::<Result<Vec<_>, _>>()?;
                for row in join_all(requests).await {
                    rows.extend(row?);
                }
            }
            Plan::Ranges {
                index,
                prefixes,
                since,
                until,
            } => {
                let index = events.index(index)?;
                let ranges = key_ranges(prefixes.as_deref(), since, until);
                match filter.limit {
                    None => {
                        let requests = ranges
                            .into_iter()
                            .map(|r| {
                                index
                                    .get_all::<JsValue>()
                                    .with_query::<JsValue, _>(r)
                                    .primitive()
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        for result in join_all(requests).await {
                            for row in result? {
                                rows.push(row?);
                            }
                        }
                    }
                    Some(limit) => {
                        // Every cursor opens in the same poll, before anything else is
                        // awaited (the transaction stays active only while requests
                        // are pending).
                        let walks = ranges.into_iter().map(|r| newest(&index, r, filter, limit));
                        for walk in join_all(walks).await {
                            rows.extend(walk?);
                        }
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Adds `events` (those held already are left as they are) and removes what `remove`
    /// names (when held and written by that author), in one transaction; returns the
    /// removed events.
    pub async fn save_events(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> Result<Saved, StoreError> {
        self.save_with_state(events, remove, SavedState::default())
            .await
    }

    /// [`save_events`](Self::save_events), and `state` (checkpoints and remembered ids,
    /// as [`save_sync_state`](Self::save_sync_state) writes them) in the same
    /// transaction: the checkpoints land with the events they cover, or not at all.
    pub async fn save_with_state(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> Result<Saved, StoreError> {
        if events.is_empty() && remove.is_empty() {
            self.save_sync_state(state).await?;
            return Ok(Saved::default());
        }
        // What the removals name is read first (a write transaction is never held
        // across an await: it commits as soon as no request is pending on it), and the
        // rows are built, a slice at a time; then one transaction adds the rows (an add
        // whose key is held writes nothing: that event existed) and deletes.
        let db = self.inner.conn.db.as_sys();
        let removal_rows = if remove.is_empty() {
            Vec::new()
        } else {
            let reads = remove
                .iter()
                .map(|r| Request::Get(r.id.to_hex().into()))
                .collect();
            paced::run(db, &[schema::EVENTS], IdbTransactionMode::Readonly, reads).await?
        };
        let held = |v: &JsValue| !(v.is_undefined() || v.is_null());
        let mut removed = Vec::new();
        let mut deletes = Vec::new();
        // The `roots` entries of the removed roots, by their repositories.
        let mut unentered = Vec::new();
        for (removal, row) in remove.iter().zip(&removal_rows) {
            if deletes.contains(&removal.id) {
                continue;
            }
            if held(row) {
                if rows::author_of(row) == Some(removal.author.to_hex()) {
                    let event = rows::event_of(row)?;
                    let id = removal.id.to_hex();
                    for coord in rows::root_coords(&event) {
                        unentered.push(rows::root_entry_key(&coord, &id));
                    }
                    deletes.push(removal.id);
                    removed.push(event);
                }
                continue;
            }
            // An event this same call puts, named by its author: it ends removed (its
            // row's `roots` entries below).
            if let Some(event) = events
                .iter()
                .find(|e| e.id == removal.id && e.pubkey == removal.author)
            {
                deletes.push(removal.id);
                removed.push(event.clone());
            }
        }
        let mut built = Vec::with_capacity(events.len());
        let mut entries = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if i % SLICE_ROWS == SLICE_ROWS - 1 {
                pace().await;
            }
            let (row, coords) = rows::row(event)?;
            if !coords.is_empty() {
                let id = event.id.to_hex();
                let entry = rows::root_entry(&row, &coords);
                for coord in coords {
                    let key = rows::root_entry_key(&coord, &id);
                    if deletes.contains(&event.id) {
                        unentered.push(key);
                    } else {
                        entries.push((key, entry.clone()));
                    }
                }
            }
            built.push(row);
        }
        // A batch of writes placed in one go held the page's thread for 100 ms and more.
        // The rows first (their answers say which events existed), then the roots'
        // entries, the removals and the sync state, all in one transaction.
        let writes = built
            .into_iter()
            .map(Request::Add)
            .chain(entries.into_iter().map(|(key, value)| Request::Put {
                store: schema::ROOTS,
                key,
                value,
            }))
            .chain(deletes.iter().map(|id| Request::Delete(id.to_hex().into())))
            .chain(unentered.into_iter().map(|key| Request::DeleteIn {
                store: schema::ROOTS,
                key,
            }))
            .chain(state_writes(&state))
            .collect();
        let stores = [
            schema::EVENTS,
            schema::CHECKPOINTS,
            schema::SEEN,
            schema::ROOTS,
        ];
        let answers = paced::run(db, &stores, IdbTransactionMode::Readwrite, writes).await?;
        let mut existed = Vec::new();
        let mut new = Vec::new();
        for (event, added) in events.iter().zip(&answers) {
            if held(added) {
                new.push(event);
            } else {
                existed.push(event.id);
            }
        }
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
        if state.is_empty() {
            return Ok(());
        }
        let db = self.inner.conn.db.as_sys();
        let stores = [schema::CHECKPOINTS, schema::SEEN];
        let writes = state_writes(&state).collect();
        paced::run(db, &stores, IdbTransactionMode::Readwrite, writes).await?;
        Ok(())
    }

    /// Checkpoints and remembered ids (expired entries are dropped, and deleted).
    pub async fn load_sync_state(&self) -> Result<SavedState, StoreError> {
        let tx = self.tx(
            &[schema::CHECKPOINTS, schema::SEEN],
            TransactionMode::Readonly,
        )?;
        let checkpoints = tx.object_store(schema::CHECKPOINTS)?;
        let seen = tx.object_store(schema::SEEN)?;
        let (cps, keys, values) = futures::future::join3(
            checkpoints.get_all::<JsValue>().primitive()?,
            seen.get_all_keys::<JsValue>().primitive()?,
            seen.get_all::<JsValue>().primitive()?,
        )
        .await;
        let (cps, keys, values) = (cps?, keys?, values?);
        drop((checkpoints, seen));
        drop(tx);
        let mut state = SavedState::default();
        let mut decoder = records::CheckpointDecoder::default();
        for value in cps {
            match value?.as_string().map(|t| decoder.decode(t.as_bytes())) {
                Some(Ok(c)) => state.checkpoints.push(c),
                other => tracing::warn!(?other, "an unreadable checkpoint, ignored"),
            }
        }
        let now = Timestamp::now();
        let mut expired = Vec::new();
        for (key, value) in keys.zip(values) {
            let (key, value) = (key?, value?);
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
            let tx = self.tx(&[schema::SEEN], TransactionMode::Readwrite)?;
            let seen = tx.object_store(schema::SEEN)?;
            for key in expired {
                drop(seen.delete(key).primitive()?);
            }
            drop(seen);
            commit(tx).await?;
        }
        Ok(state)
    }

    /// A small record of the `meta` store.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let tx = self.tx(&[schema::META], TransactionMode::Readonly)?;
        let store = tx.object_store(schema::META)?;
        let value = store.get::<JsValue, _, _>(key).primitive()?.await?;
        Ok(value.and_then(|v| v.as_string()))
    }

    /// Writes a small record of the `meta` store.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let tx = self.tx(&[schema::META], TransactionMode::Readwrite)?;
        let store = tx.object_store(schema::META)?;
        drop(
            store
                .put(value)
                .with_key(key)
                .without_key_type()
                .primitive()?,
        );
        drop(store);
        commit(tx).await
    }

    /// How many events are stored (one count request, not a scan in this module).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let tx = self.tx(&[schema::EVENTS], TransactionMode::Readonly)?;
        let store = tx.object_store(schema::EVENTS)?;
        Ok(u64::from(store.count().primitive()?.await?))
    }
}

/// The events of `rows` that have not expired (NIP-40) and that `keep` keeps, parsed a
/// slice at a time.
async fn unexpired_events(
    rows: &[JsValue],
    mut keep: impl FnMut(&Event) -> bool,
) -> Result<Vec<Event>, StoreError> {
    let now = Timestamp::now().as_secs();
    let mut events = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if i % SLICE_ROWS == SLICE_ROWS - 1 {
            pace().await;
        }
        if rows::expired(row, now) {
            continue;
        }
        let event = rows::event_of(row)?;
        if keep(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// The key ranges `[prefix, since]..=[prefix, until]` (or `since..=until` without
/// prefixes, the time index).
fn key_ranges(prefixes: Option<&[Prefix]>, since: u64, until: u64) -> Vec<KeyRange<JsValue>> {
    let (low, high) = (JsValue::from(since as f64), JsValue::from(until as f64));
    let Some(prefixes) = prefixes else {
        return vec![KeyRange::Bound(low, false, high, false)];
    };
    prefixes
        .iter()
        .map(|p| {
            let p = match p {
                Prefix::Str(s) => JsValue::from_str(s),
                Prefix::Num(n) => JsValue::from(*n),
            };
            KeyRange::Bound(
                js_sys::Array::of2(&p, &low).into(),
                false,
                js_sys::Array::of2(&p, &high).into(),
                false,
            )
        })
        .collect()
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

/// The puts that write `state`: each checkpoint replaces the one of its relay and scope,
/// each remembered id its earlier entry.
fn state_writes(state: &SavedState) -> impl Iterator<Item = Request> + '_ {
    let checkpoints = state.checkpoints.iter().map(|c| Request::Put {
        store: schema::CHECKPOINTS,
        key: hex(&records::checkpoint_key(c)).into(),
        value: text(&records::encode_checkpoint(c)).into(),
    });
    let remembered = state.remembered.iter().map(|e| Request::Put {
        store: schema::SEEN,
        key: e.id.to_hex().into(),
        value: text(&records::encode_seen(e)).into(),
    });
    checkpoints.chain(remembered)
}

impl Store for IdbStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, PortError>> {
        let store = self.clone();
        async move { store.query_events(&filter).await.map_err(PortError::from) }.boxed_local()
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, PortError>> {
        let store = self.clone();
        async move { store.items(&filter).await.map_err(PortError::from) }.boxed_local()
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, PortError>> {
        let store = self.clone();
        async move { store.root_events(&coords).await.map_err(PortError::from) }.boxed_local()
    }

    fn root_refs(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<RootRef>, PortError>> {
        let store = self.clone();
        async move { store.root_refs(&coords).await.map_err(PortError::from) }.boxed_local()
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, PortError>> {
        let store = self.clone();
        async move {
            store
                .save_with_state(events, remove, state)
                .await
                .map_err(|e| {
                    crate::error::console_warn(&format!("grasp-sync: saving events failed: {e}"));
                    PortError::from(e)
                })
        }
        .boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), PortError>> {
        let store = self.clone();
        async move { store.save_sync_state(state).await.map_err(PortError::from) }.boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, PortError>> {
        let store = self.clone();
        async move { store.load_sync_state().await.map_err(PortError::from) }.boxed_local()
    }
}
