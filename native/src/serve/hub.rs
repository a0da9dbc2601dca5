//! The store as the daemon uses it: the LMDB store, plus every batch of events it
//! commits handed to the [`Fanout`], so live subscriptions of our clients see what sync
//! brings in and what other clients publish.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::{Saved, SavedState, Store, StoreError};
use nostr::prelude::{Event, EventId, Filter, Timestamp};

use super::fanout::Fanout;
use crate::store::LmdbStore;

/// [`LmdbStore`] handing what each save committed to the live subscriptions.
#[derive(Clone)]
pub struct BroadcastStore {
    store: LmdbStore,
    fanout: Arc<Fanout>,
}

impl BroadcastStore {
    /// Wraps `store`.
    pub fn new(store: LmdbStore) -> Self {
        Self {
            store,
            fanout: Arc::new(Fanout::new()),
        }
    }

    /// The store itself.
    pub fn inner(&self) -> &LmdbStore {
        &self.store
    }

    /// The live subscriptions of every client connection.
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }
}

impl Store for BroadcastStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        Store::query(&self.store, filter)
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, StoreError>> {
        Store::items(&self.store, filter)
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, StoreError>> {
        let store = self.store.clone();
        let fanout = Arc::clone(&self.fanout);
        async move {
            // A copy is kept even when nobody listens yet: a REQ that registers while
            // this save runs must still get what it commits (its query may have read
            // the store before the commit).
            let handed_in = events.clone();
            let saved = store
                .save_with_state(events, remove, state)
                .await
                .map_err(StoreError::from)?;
            // What is new: neither held before nor removed.
            let old: HashSet<EventId> = saved
                .removed
                .iter()
                .map(|e| e.id)
                .chain(saved.existed.iter().copied())
                .collect();
            let kept: Vec<Event> = handed_in
                .into_iter()
                .filter(|e| !old.contains(&e.id))
                .collect();
            if !kept.is_empty() {
                fanout.deliver(kept.into());
            }
            Ok(saved)
        }
        .boxed_local()
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        Store::root_events(&self.store, coords)
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), StoreError>> {
        Store::save_state(&self.store, state)
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, StoreError>> {
        Store::load_state(&self.store)
    }
}
