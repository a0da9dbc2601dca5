//! The store as the daemon uses it: the LMDB store, plus a broadcast of every batch of
//! events it commits, so live subscriptions of our clients see what sync brings in and
//! what other clients publish.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::{Saved, SavedState, Store};
use nostr::prelude::{Event, EventId, Filter, Timestamp};
use tokio::sync::broadcast;

use crate::store::LmdbStore;

/// Batches of committed events, in commit order.
pub type Committed = Arc<[Event]>;

/// Batches a lagging receiver may fall behind by before it loses some.
pub const BROADCAST_CAPACITY: usize = 4_096;

/// [`LmdbStore`] with a broadcast of what each save committed.
#[derive(Clone)]
pub struct BroadcastStore {
    store: LmdbStore,
    committed: broadcast::Sender<Committed>,
}

impl BroadcastStore {
    /// Wraps `store`.
    pub fn new(store: LmdbStore) -> Self {
        let (committed, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self { store, committed }
    }

    /// The store itself.
    pub fn inner(&self) -> &LmdbStore {
        &self.store
    }

    /// A receiver of every batch committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.committed.subscribe()
    }
}

impl Store for BroadcastStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, String>> {
        Store::query(&self.store, filter)
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, String>> {
        Store::items(&self.store, filter)
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> LocalBoxFuture<'static, Result<Saved, String>> {
        let store = self.store.clone();
        let committed = self.committed.clone();
        async move {
            // Copies are kept only when someone listens.
            let handed_in = (committed.receiver_count() > 0).then(|| events.clone());
            let saved = store
                .save(events, remove)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(handed_in) = handed_in {
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
                    // Fails only when every receiver went away meanwhile.
                    let _ = committed.send(kept.into());
                }
            }
            Ok(saved)
        }
        .boxed_local()
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, String>> {
        Store::root_events(&self.store, coords)
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), String>> {
        Store::save_state(&self.store, state)
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, String>> {
        Store::load_state(&self.store)
    }
}
