//! The LMDB store: the driver's [`Store`] port for the native front end, a thin mapping
//! of the shared store contract (`grasp-sync-store`: records, notes, filter planning,
//! postings) onto LMDB.
//!
//! # Layout on disk
//!
//! [`LmdbStore::open`] takes a directory and keeps two LMDB environments in it:
//!
//! - `events/` — the events, in rust-nostr's `nostr-lmdb` (its own schema, indexes and
//!   migrations);
//! - `state/` — the sync state beside them, in a small `heed` environment (nostr-lmdb has
//!   no key-value API), format [`STATE_FORMAT`]:
//!   - database `meta`: key `format` → the format number as decimal ASCII (`1`);
//!   - database `checkpoints`: the shared checkpoint records
//!     ([`grasp_sync_store::records`]: key = SHA-256 of `"<relay URL>\n<scope>"`, value
//!     a versioned JSON object). Saving a checkpoint of the same relay and scope
//!     replaces it.
//!   - database `seen`: the shared remembered-id records (key = the 32-byte event id).
//!     [`Store::load_state`] deletes the entries whose `expires_at` is before now.
//!   - database `roots`: key = the 32-byte id of a root event (a pull request, an issue,
//!     a patch starting a series: `nip34::is_root`), value empty;
//!   - database `expiring`: key = the 32-byte id of an event with a NIP-40 `expiration`
//!     tag, value = that time as 8 bytes big-endian.
//!
//!   Both hold the shared event notes ([`Notes`]) and are written before the events
//!   themselves, so they name every stored root and expiring event (and possibly a few
//!   no longer stored). `meta` key `notes` = `complete` once they do: a store made
//!   before they existed is scanned once (every event read) at the first restart or
//!   negentropy listing.
//!
//!   Records of another `v`, or that do not decode, are skipped with a warning and left
//!   in place.
//!
//! # Queries and negentropy items
//!
//! Queries go through nostr-lmdb and come back in NIP-01 order ([`plan::newest`]), with
//! two corrections: nostr-lmdb 0.45.3 answers a limited filter that names authors, kinds
//! and tags together by walking its index intersection in id order (the wrong "newest
//! N"), and stops a limited ids filter after the first N ids in id order; and it serves
//! expired events. Those shapes are answered from negentropy items instead (newest N
//! ids, then the events by id), expired events are dropped, and a limited answer that
//! lost expired events is asked again the same way.
//!
//! A filter the shared planner answers from one posting list ([`Plan::postings_suffice`])
//! that is one tag's values or some kinds (and a time window: the repository and root
//! layers, and what nostr-sdk's `sync` asks a relay) is listed straight from nostr-lmdb's
//! tag index (`tci`, key = letter, value zero-padded to 182 bytes, then the posting key)
//! or kind index (`kci`, key = kind big-endian, then the posting key): the keys are
//! [`grasp_sync_store::keys`] postings, so no event is read; the `expiring` table leaves
//! out expired events. This reads nostr-lmdb 0.45's own layout (pinned in Cargo.toml, and
//! checked against its answers by `index_items_are_what_nostr_lmdb_lists`); other shapes,
//! and values longer than the index keeps, go through nostr-lmdb.
//!
//! # Saves
//!
//! A save puts what it is handed and removes what the caller names (the core's
//! acceptance decided both; see [`Store::save`]). nostr-lmdb 0.45 applies relay
//! semantics of its own on save: it refuses ephemeral kinds, and for a replaceable or
//! addressable event it refuses it when it holds a newer version and otherwise deletes
//! the older versions. With the core naming every version it replaces, that coincides
//! with the contract (the conformance suite checks it, ties included); an event it
//! refuses anyway is not kept and is reported in [`Saved::removed`]. NIP-09 and NIP-62
//! processing are off: deletions come from the core as [`Removal`]s.
//!
//! # Batching
//!
//! nostr-lmdb writes through one ingester thread that drains its queue into a single
//! write transaction. [`LmdbStore::save`] queues every put and then every removal at
//! once (one poll sends them all, in that order), so a call is written in one
//! transaction, or in a few when the ingester wakes while the queue is still filling; a
//! failure aborts the transaction it happens in. Saves are serialised among themselves
//! by an async lock, so concurrent calls do not see each other's half-written state.
//!
//! # A full map
//!
//! When a write transaction runs out of map (`MDB_MAP_FULL`), nostr-lmdb 0.45.3 aborts
//! it and answers every operation in it with "batched transaction failed", logging the
//! cause but not returning it. So on that answer [`LmdbStore::save`] asks LMDB itself: in
//! a write transaction on the same environment that it always aborts, it allocates as
//! many pages as the failed call could have needed (a generous estimate, in a scratch
//! database that never reaches the disk). If LMDB answers `MDB_MAP_FULL` there too, the
//! error is [`StoreError::MapFull`]; otherwise it is [`StoreError::Events`]. Writes that
//! committed before the failing transaction stay, and reads go on working. A full map
//! refuses removals too (LMDB copies pages on write, deleting included). heed 0.20 keeps
//! an environment open for the life of the process, so a larger map size takes a restart.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt as _;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::engine::Checkpoint;
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::{Saved, SavedState, Store, StoreError as PortError};
use grasp_sync_store::notes::{decode_expiration, encode_expiration, names_a_repo};
use grasp_sync_store::plan::{self, Access, Plan};
use grasp_sync_store::records::{checkpoint_key, encode_checkpoint, encode_seen};
use grasp_sync_store::Notes;
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use nostr::prelude::{Event, EventId, Filter, SingleLetterTag, Timestamp};
use nostr_database::{NostrDatabase as _, RejectedReason, SaveEventStatus};
use nostr_lmdb::NostrLmdb;

/// The format of the state environment this build reads and writes.
pub use grasp_sync_store::records::STATE_FORMAT;

/// The map size of the state environment (virtual address space; the file grows with
/// use).
pub const STATE_MAP_SIZE: usize = 1 << 30;

/// Map sizes are rounded up to a multiple of this (LMDB wants a multiple of the page
/// size; 64 KiB covers 4, 16 and 64 KiB pages).
const MAP_SIZE_GRANULE: usize = 64 << 10;

const EVENTS_DIR: &str = "events";
const STATE_DIR: &str = "state";
const FORMAT_KEY: &[u8] = b"format";
/// `meta` key saying whether the `roots` and `expiring` tables name every stored event
/// they should.
const NOTES_KEY: &[u8] = b"notes";
const NOTES_COMPLETE: &[u8] = b"complete";
/// nostr-lmdb 0.45's index of (tag letter, tag value, created_at, id): database name
/// and the fixed width of the value (zero-padded; longer values are cut).
const TAG_INDEX_DB: &str = "tci";
const TAG_VALUE_WIDTH: usize = 182;
/// nostr-lmdb 0.45's index of (kind, created_at, id).
const KIND_INDEX_DB: &str = "kci";
/// Root ids read back per store query.
const ROOTS_PER_QUERY: usize = 4_096;
/// What nostr-lmdb's error text contains when the map is full.
const MAP_FULL_TEXT: &str = "MDB_MAP_FULL";

mod error;
mod index_scan;
mod map_full;
mod state;
#[cfg(test)]
mod tests;

pub use error::StoreError;
use index_scan::IndexScan;
use map_full::pick_error;
use state::{load_state, open_state, StateDbs};

/// The event store and the sync state beside it, in LMDB. Cheap to clone: clones share
/// one store.
#[derive(Clone)]
pub struct LmdbStore {
    inner: Arc<Inner>,
}

struct Inner {
    events: NostrLmdb,
    /// The environment nostr-lmdb opened (shared through heed's registry), for the
    /// map-full probe.
    events_env: Env,
    events_map_size: usize,
    /// The sync state environment and its databases.
    state: StateDbs,
    /// nostr-lmdb's tag index, read for negentropy items.
    tag_index: Database<Bytes, Bytes>,
    /// nostr-lmdb's kind index, read for negentropy items.
    kind_index: Database<Bytes, Bytes>,
    /// Serialises [`LmdbStore::save`] calls.
    write: tokio::sync::Mutex<()>,
}

impl fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbStore")
            .field("state", &self.inner.state.env.path())
            .field("events_map_size", &self.inner.events_map_size)
            .finish_non_exhaustive()
    }
}

impl LmdbStore {
    /// Opens (creating if needed) the store in `dir`: events in `dir/events` with a map
    /// of `map_size_bytes` (rounded up to a multiple of 64 KiB), sync state in
    /// `dir/state`. Needs a tokio runtime (nostr-lmdb opens on a blocking task).
    ///
    /// Opening a directory again in the same process shares its environments (heed keeps
    /// them open for the life of the process), and fails if the map size differs.
    pub async fn open(dir: &Path, map_size_bytes: usize) -> Result<Self, StoreError> {
        let events_dir = dir.join(EVENTS_DIR);
        let state_dir = dir.join(STATE_DIR);
        fs::create_dir_all(&events_dir).map_err(StoreError::Io)?;
        fs::create_dir_all(&state_dir).map_err(StoreError::Io)?;
        let events_map_size = map_size_bytes
            .max(1)
            .div_ceil(MAP_SIZE_GRANULE)
            .saturating_mul(MAP_SIZE_GRANULE);
        let events = NostrLmdb::builder(&events_dir)
            .map_size(events_map_size)
            .process_nip09(false)
            .process_nip62(false)
            // One spare database slot, for the map-full probe.
            .additional_dbs(1)
            .build()
            .await
            .map_err(|e| StoreError::events(e, events_map_size))?;
        let events_env = blocking(move || shared_env(&events_dir)).await??;
        let state = blocking(move || open_state(state_dir)).await??;
        let (tag_index, kind_index) = {
            let env = events_env.clone();
            blocking(move || -> Result<_, StoreError> {
                let txn = env.read_txn().map_err(StoreError::state)?;
                let open = |name: &str| {
                    env.open_database::<Bytes, Bytes>(&txn, Some(name))
                        .map_err(StoreError::state)?
                        .ok_or_else(|| {
                            StoreError::State(format!("nostr-lmdb has no `{name}` index"))
                        })
                };
                Ok((open(TAG_INDEX_DB)?, open(KIND_INDEX_DB)?))
            })
            .await??
        };
        Ok(Self {
            inner: Arc::new(Inner {
                events,
                events_env,
                events_map_size,
                state,
                tag_index,
                kind_index,
                write: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Every stored event matching `filter` and not expired, newest first (NIP-01
    /// order); a `limit` keeps the newest that many (see the module documentation).
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let now = Timestamp::now();
        if Plan::of(&filter).access == Access::Nothing {
            return Ok(Vec::new());
        }
        let Some(limit) = filter.limit else {
            let events = self.query_all(filter.clone()).await?;
            return Ok(plan::newest(&filter, events, now));
        };
        if !limit_walks_in_id_order(&filter) {
            let events = self.query_all(filter.clone()).await?;
            let full = events.len() >= limit;
            let answer = plan::newest(&filter, events, now);
            if answer.len() == limit || !full {
                return Ok(answer);
            }
            // Expired events were among the newest: list the live ones instead.
        }
        let items = self.items(filter.clone()).await?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let events = self
            .query_all(Filter::new().ids(items.into_iter().map(|(_, id)| id)))
            .await?;
        Ok(plan::newest(&filter, events, now))
    }

    /// nostr-lmdb's answer to `filter` (a coordinate lookup through
    /// [`without_authors`]); expired events included, order unspecified.
    async fn query_all(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        if let Some(wider) = without_authors(&filter) {
            let events = self.nostr_lmdb_query(wider).await?;
            return Ok(plan::newest(&filter, events, Timestamp::min()));
        }
        self.nostr_lmdb_query(filter).await
    }

    /// nostr-lmdb's answer to `filter` as it gives it.
    async fn nostr_lmdb_query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let events = self
            .inner
            .events
            .query(filter)
            .await
            .map_err(|e| self.events_error(e))?;
        Ok(events.into_iter().collect())
    }

    /// (created_at, id) of every stored event matching `filter` and not expired, newest
    /// first; a `limit` keeps the newest that many.
    pub async fn items(&self, filter: Filter) -> Result<Vec<(Timestamp, EventId)>, StoreError> {
        let plan = Plan::of(&filter);
        if plan.access == Access::Nothing {
            return Ok(Vec::new());
        }
        let mut items = match IndexScan::of(&plan) {
            Some(scan) => self.items_from_index(scan).await?,
            None => self.negentropy_items(filter.remove_limit()).await?,
        };
        items.sort_unstable_by(plan::newest_first);
        items.dedup();
        if let Some(limit) = plan.limit {
            items.truncate(limit);
        }
        Ok(items)
    }

    /// nostr-lmdb's negentropy listing (expired events left out), or for a coordinate
    /// lookup the matching events' items.
    async fn negentropy_items(
        &self,
        filter: Filter,
    ) -> Result<Vec<(Timestamp, EventId)>, StoreError> {
        if without_authors(&filter).is_some() {
            let events = self.query_all(filter.clone()).await?;
            return Ok(plan::items_of(&filter, events, Timestamp::now()));
        }
        let items = self
            .inner
            .events
            .negentropy_items(filter)
            .await
            .map_err(|e| self.events_error(e))?;
        Ok(items.into_iter().map(|(id, at)| (at, id)).collect())
    }

    /// Puts `events`, then removes each event `remove` names when it is held (before
    /// the call or put by it) and its author matches: [`Store::save`]. An event
    /// nostr-lmdb refuses (see the module documentation) is not kept and is reported
    /// removed.
    pub async fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> Result<Saved, StoreError> {
        if events.is_empty() && remove.is_empty() {
            return Ok(Saved::default());
        }
        let db = &self.inner.events;
        let _write = self.inner.write.lock().await;

        // What the removals take: the held events they name with a matching author, and
        // those among the events handed in.
        let named = |e: &Event| remove.iter().any(|r| r.id == e.id && r.author == e.pubkey);
        let mut removed: Vec<Event> = if remove.is_empty() {
            Vec::new()
        } else {
            db.query(Filter::new().ids(remove.iter().map(|r| r.id)))
                .await
                .map_err(|e| self.events_error(e))?
                .into_iter()
                .filter(|e| named(e))
                .collect()
        };

        self.note_saved(&events).await?;

        // The removals land first, committed, then the puts: nostr-lmdb's ingester
        // commits what it has drained so far, so queued together they could land in two
        // transactions in either order, and a crash between could leave a deleted event
        // held beside its deletion for good. This way a crash between leaves the
        // deletion unwritten (fetched again). An event named by a removal is not put:
        // put and removed in one call, it ends removed.
        let removal_filters: Vec<Filter> = remove
            .iter()
            .map(|r| Filter::new().id(r.id).author(r.author))
            .collect();
        let deleted = join_all(removal_filters.into_iter().map(|f| db.delete(f))).await;
        let puts: Vec<&Event> = events.iter().filter(|e| !named(e)).collect();
        let statuses = join_all(puts.iter().map(|e| db.save_event(e))).await;
        let mut first_error = None;
        let mut existed = Vec::new();
        let mut refused = Vec::new();
        for (event, status) in puts.into_iter().zip(statuses) {
            match status {
                Ok(SaveEventStatus::Success) => {}
                Ok(SaveEventStatus::Rejected(RejectedReason::Duplicate)) => existed.push(event.id),
                Ok(SaveEventStatus::Rejected(reason)) => {
                    tracing::debug!(id = %event.id, ?reason, "nostr-lmdb refused an event");
                    refused.push(event);
                }
                Err(e) => {
                    first_error = Some(pick_error(first_error, self.events_error(e)));
                }
            }
        }
        for result in deleted {
            if let Err(e) = result {
                first_error = Some(pick_error(first_error, self.events_error(e)));
            }
        }
        if let Some(e) = first_error {
            return Err(self.diagnose(e, &events, remove.len()).await);
        }
        let mut gone: HashSet<EventId> = removed.iter().map(|e| e.id).collect();
        for event in refused
            .into_iter()
            .chain(events.iter().filter(|e| named(e)))
        {
            if gone.insert(event.id) {
                removed.push(event.clone());
            }
        }
        Ok(Saved { removed, existed })
    }

    /// Notes, durably and before they are written, the roots among `events` (table
    /// `roots`) and those that carry a NIP-40 expiration (table `expiring`): the tables
    /// never miss a stored event, even after a crash.
    async fn note_saved(&self, events: &[Event]) -> Result<(), StoreError> {
        let notes = Notes::of(events);
        if notes.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut txn = inner.state.env.write_txn().map_err(StoreError::state)?;
            put_notes(&inner, &mut txn, &notes)?;
            txn.commit().map_err(StoreError::state)
        })
        .await?
    }

    /// Makes sure the `roots` and `expiring` tables name every stored event they should:
    /// a store from before them is scanned once (every event read), then marked.
    async fn ensure_noted(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let complete = blocking(move || -> Result<bool, StoreError> {
            let txn = inner.state.env.read_txn().map_err(StoreError::state)?;
            let mark = inner
                .state
                .meta
                .get(&txn, NOTES_KEY)
                .map_err(StoreError::state)?;
            Ok(mark == Some(NOTES_COMPLETE))
        })
        .await??;
        if complete {
            return Ok(());
        }
        let _write = self.inner.write.lock().await;
        let notes = Notes::of(&self.query_all(Filter::new()).await?);
        tracing::info!(
            roots = notes.roots.len(),
            expiring = notes.expiring.len(),
            "noted the stored roots and expiring events once"
        );
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut txn = inner.state.env.write_txn().map_err(StoreError::state)?;
            put_notes(&inner, &mut txn, &notes)?;
            inner
                .state
                .meta
                .put(&mut txn, NOTES_KEY, NOTES_COMPLETE)
                .map_err(StoreError::state)?;
            txn.commit().map_err(StoreError::state)
        })
        .await?
    }

    /// The stored, unexpired root events (pull requests, issues, patches starting a
    /// series) that name one of `coords` in an `a`, `A` or `q` tag: read by id through
    /// the `roots` table, so a restart does not decode every patch in the store.
    pub async fn root_events(&self, coords: &[RepoRef]) -> Result<Vec<Event>, StoreError> {
        if coords.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_noted().await?;
        let now = Timestamp::now();
        let wanted: HashSet<&RepoRef> = coords.iter().collect();
        let inner = Arc::clone(&self.inner);
        let ids = blocking(move || -> Result<Vec<EventId>, StoreError> {
            let txn = inner.state.env.read_txn().map_err(StoreError::state)?;
            let mut ids = Vec::new();
            for row in inner.state.roots.iter(&txn).map_err(StoreError::state)? {
                let (key, _) = row.map_err(StoreError::state)?;
                match EventId::from_slice(key) {
                    Ok(id) => ids.push(id),
                    Err(e) => tracing::warn!("skipping a stored root id: {e}"),
                }
            }
            Ok(ids)
        })
        .await??;
        let mut roots = Vec::new();
        for chunk in ids.chunks(ROOTS_PER_QUERY) {
            let events = self
                .query_all(Filter::new().ids(chunk.iter().copied()))
                .await?;
            roots.extend(
                events
                    .into_iter()
                    .filter(|e| !e.is_expired_at(now) && names_a_repo(e, &wanted)),
            );
        }
        Ok(roots)
    }

    /// The ids of stored events whose NIP-40 expiration is before `now`.
    async fn expired_ids(&self, now: Timestamp) -> Result<HashSet<EventId>, StoreError> {
        self.ensure_noted().await?;
        let inner = Arc::clone(&self.inner);
        blocking(move || -> Result<HashSet<EventId>, StoreError> {
            let txn = inner.state.env.read_txn().map_err(StoreError::state)?;
            let mut expired = HashSet::new();
            for row in inner.state.expiring.iter(&txn).map_err(StoreError::state)? {
                let (key, value) = row.map_err(StoreError::state)?;
                match (EventId::from_slice(key), decode_expiration(value)) {
                    (Ok(id), Some(at)) if at < now => {
                        expired.insert(id);
                    }
                    (Ok(_), Some(_)) => {}
                    _ => tracing::warn!("skipping an undecodable expiring entry"),
                }
            }
            Ok(expired)
        })
        .await?
    }

    /// [`Store::save`]: the events as [`save`](Self::save) puts and removes them, then
    /// `state`. Events and sync state live in two LMDB environments, so these are two
    /// commits, the state's after the events' (a checkpoint never lands before the
    /// events it covers; a crash between them loses the checkpoint, not events).
    pub async fn save_with_state(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> Result<Saved, StoreError> {
        let saved = self.save(events, remove).await?;
        self.save_state(state).await?;
        Ok(saved)
    }

    /// Saves `checkpoint`, replacing the one of the same relay and scope.
    pub async fn save_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), StoreError> {
        self.save_state(SavedState {
            checkpoints: vec![checkpoint],
            remembered: Vec::new(),
        })
        .await
    }

    /// Remembers `entries` (ids seen and not stored) until each expires; an entry for an
    /// id already remembered replaces it.
    pub async fn remember(&self, entries: Vec<SeenEntry>) -> Result<(), StoreError> {
        self.save_state(SavedState {
            checkpoints: Vec::new(),
            remembered: entries,
        })
        .await
    }

    /// Saves checkpoints (in order, each replacing the one of the same relay and scope)
    /// and remembered ids in one transaction: one durable commit however many there are.
    pub async fn save_state(&self, state: SavedState) -> Result<(), StoreError> {
        if state.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let checkpoints: Vec<([u8; 32], Vec<u8>)> = state
            .checkpoints
            .iter()
            .map(|c| (checkpoint_key(c), encode_checkpoint(c)))
            .collect();
        let seen: Vec<(EventId, Vec<u8>)> = state
            .remembered
            .iter()
            .map(|e| (e.id, encode_seen(e)))
            .collect();
        blocking(move || {
            let mut txn = inner.state.env.write_txn().map_err(StoreError::state)?;
            for (key, value) in &checkpoints {
                inner
                    .state
                    .checkpoints
                    .put(&mut txn, key, value)
                    .map_err(StoreError::state)?;
            }
            for (id, value) in &seen {
                inner
                    .state
                    .seen
                    .put(&mut txn, id.as_bytes(), value)
                    .map_err(StoreError::state)?;
            }
            txn.commit().map_err(StoreError::state)
        })
        .await?
    }

    /// The checkpoints and the remembered ids that have not expired (`expires_at` not
    /// before now); expired entries are deleted.
    pub async fn load_state(&self) -> Result<SavedState, StoreError> {
        let inner = Arc::clone(&self.inner);
        let now = Timestamp::now();
        blocking(move || load_state(&inner, now)).await?
    }

    pub fn state_path(&self) -> &Path {
        self.inner.state.env.path()
    }

    fn events_error(&self, error: nostr_database::error::Error) -> StoreError {
        StoreError::events(error, self.inner.events_map_size)
    }
}

impl Store for LmdbStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, PortError>> {
        let store = self.clone();
        async move { store.query(filter).await.map_err(PortError::from) }.boxed_local()
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, PortError>> {
        let store = self.clone();
        async move { store.items(filter).await.map_err(PortError::from) }.boxed_local()
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
                .map_err(PortError::from)
        }
        .boxed_local()
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, PortError>> {
        let store = self.clone();
        async move { store.root_events(&coords).await.map_err(PortError::from) }.boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), PortError>> {
        let store = self.clone();
        async move { store.save_state(state).await.map_err(PortError::from) }.boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, PortError>> {
        let store = self.clone();
        async move { store.load_state().await.map_err(PortError::from) }.boxed_local()
    }
}

/// Whether nostr-lmdb 0.45.3 answers `filter`'s limit by walking ids rather than time:
/// ids given, or authors, kinds and tags all given (its index intersection is in id
/// order).
fn limit_walks_in_id_order(filter: &Filter) -> bool {
    let given = |set: Option<usize>| set.is_some_and(|n| n > 0);
    given(filter.ids.as_ref().map(BTreeSet::len))
        || (given(filter.authors.as_ref().map(BTreeSet::len))
            && given(filter.kinds.as_ref().map(BTreeSet::len))
            && !filter.generic_tags.is_empty())
}

/// The handle of the environment nostr-lmdb opened at `dir`, from heed's registry (which
/// hands out the open environment, also inside the error when the options differ).
fn shared_env(dir: &Path) -> Result<Env, StoreError> {
    // SAFETY: heed's registry holds the environment nostr-lmdb opened at `dir` (the
    // `NostrLmdb` is alive), so this returns that environment instead of opening the
    // files a second time.
    match unsafe { EnvOpenOptions::new().open(dir) } {
        Ok(env) | Err(heed::Error::BadOpenOptions { env, .. }) => Ok(env),
        Err(e) => Err(StoreError::state(e)),
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))
}

/// For a coordinate lookup (several authors and `#d` values, as the announcement layer
/// and the restart ask), the same filter without authors and limit, whose answer the
/// caller narrows to `filter` itself: nostr-lmdb walks its index once per (author, `d`
/// value) pair, 360 000 walks for 600 repositories, but once per (kind, value) pair
/// without the authors, and identifiers are nearly unique.
fn without_authors(filter: &Filter) -> Option<Filter> {
    let d = SingleLetterTag::LOWERCASE_D;
    let several_authors = filter.authors.as_ref().is_some_and(|a| a.len() > 1);
    let identifiers = filter.generic_tags.get(&d).is_some_and(|v| !v.is_empty());
    if !several_authors || !identifiers || filter.ids.is_some() {
        return None;
    }
    let mut wider = filter.clone();
    wider.authors = None;
    wider.limit = None;
    Some(wider)
}

/// Writes `notes` into the `roots` and `expiring` tables.
fn put_notes(inner: &Inner, txn: &mut heed::RwTxn, notes: &Notes) -> Result<(), StoreError> {
    for id in &notes.roots {
        inner
            .state
            .roots
            .put(txn, id.as_bytes(), &[])
            .map_err(StoreError::state)?;
    }
    for (id, at) in &notes.expiring {
        inner
            .state
            .expiring
            .put(txn, id.as_bytes(), &encode_expiration(*at))
            .map_err(StoreError::state)?;
    }
    Ok(())
}
