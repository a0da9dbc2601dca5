//! The verifier and store ports: every signature checked, a memory store behind the
//! store port counting writes, each completing after a delay on the manual clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{ready, LocalBoxFuture};
use futures::FutureExt as _;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::{Clock, Saved, SavedState, Store, StoreError, Verifier};
use grasp_sync_store::MemoryStore;
use nostr::prelude::{Event, EventId, Filter, Timestamp};

use crate::clock::ManualClock;

/// Checks every id and signature on the spot.
pub(crate) struct CheckingVerifier;

impl Verifier for CheckingVerifier {
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>> {
        ready(events.iter().map(|e| e.verify().is_ok()).collect()).boxed_local()
    }
}

/// What went through the store port.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writes {
    /// Events handed to `save`.
    pub(crate) events: u64,
    /// `save_state` calls, and the checkpoints they and saves carried.
    pub(crate) state_writes: u64,
    pub(crate) checkpoints: u64,
    /// Saves of events so far, and the one (by that count) that fails, writing nothing.
    pub(crate) saves: u64,
    pub(crate) failing_save: Option<u64>,
}

/// A [`MemoryStore`] behind the store port, counting writes; each write completes
/// `delay` after it is asked for (on the manual clock).
#[derive(Clone)]
pub(crate) struct CountingStore {
    pub(crate) inner: MemoryStore,
    pub(crate) writes: Rc<RefCell<Writes>>,
    pub(crate) clock: ManualClock,
    pub(crate) delay: Duration,
}

impl Store for CountingStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        self.inner.query(filter)
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, StoreError>> {
        self.inner.items(filter)
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        self.inner.root_events(coords)
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, StoreError>> {
        let fails = {
            let mut writes = self.writes.borrow_mut();
            writes.saves += 1;
            let fails = writes.failing_save == Some(writes.saves);
            if !fails {
                writes.events += events.len() as u64;
                writes.checkpoints += state.checkpoints.len() as u64;
            }
            fails
        };
        let inner = self.inner.clone();
        let wait = self.clock.sleep(self.delay);
        async move {
            wait.await;
            if fails {
                return Err(StoreError::from("simulated write failure".to_owned()));
            }
            inner.save(events, remove, state).await
        }
        .boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), StoreError>> {
        {
            let mut writes = self.writes.borrow_mut();
            writes.state_writes += 1;
            writes.checkpoints += state.checkpoints.len() as u64;
        }
        let inner = self.inner.clone();
        let wait = self.clock.sleep(self.delay);
        async move {
            wait.await;
            inner.save_state(state).await
        }
        .boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, StoreError>> {
        self.inner.load_state()
    }
}
