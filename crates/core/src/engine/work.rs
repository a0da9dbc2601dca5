//! Turning what the store and the index say into pending work: local events and restored
//! checkpoints feed the index, and `compute_actions` becomes per-relay new keys.

use nostr::prelude::Event;

use super::relay::RelayState;
use super::{Checkpoint, Output, Phase, Scope, SyncEngine, Time};
use crate::actions::{compute_actions, compute_all_actions, Actions};
use crate::index::IndexUpdate;
use crate::items::WorkKey;
use crate::RootRef;

impl SyncEngine {
    pub(super) fn on_local_events(&mut self, events: &[Event]) {
        let mut remove = Vec::new();
        for event in events {
            remove.extend(self.acceptor.restore(event));
            self.seen.forget(&event.id);
            self.recent.insert(event.id);
        }
        // A stored deletion's removals are written again (removing what is not held is
        // nothing): a store written by a build whose saves could land a deletion without
        // its removals (a crash between two transactions) still holds the deleted event,
        // and nothing else would remove it once the deletion is known.
        if !remove.is_empty() {
            let batch = self.new_id();
            self.pipeline.store(batch, Vec::new());
            self.outputs.push_back(Output::Store {
                batch,
                events: Vec::new(),
                remove,
                checkpoints: Vec::new(),
            });
        }
        let update = self.index.apply(events);
        self.index_updated(&update);
    }

    /// Root events held in the store (see [`Input::LocalRoots`](super::Input::LocalRoots)).
    pub(super) fn on_local_roots(&mut self, roots: &[RootRef]) {
        for root in roots {
            self.seen.forget(&root.id);
            self.recent.insert(root.id);
        }
        let update = self.index.apply_roots(roots);
        self.index_updated(&update);
    }

    /// Takes up what an index update changed: the targets' work, and orphans whose
    /// parents may now be tracked.
    fn index_updated(&mut self, update: &IndexUpdate) {
        if !update.changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &update.changes, &self.work);
            self.take_actions(&actions);
        }
        if update.applied > 0 {
            self.retry_orphans();
        }
    }

    pub(super) fn on_checkpoints(&mut self, checkpoints: Vec<Checkpoint>) {
        for cp in checkpoints {
            let Some(relay) = self.index.names().relay_id(&cp.relay) else {
                continue;
            };
            match cp.scope {
                Scope::Discovery => {
                    if let Some(state) = self.relays.get_mut(&relay) {
                        let at = Time::from_secs(cp.at.as_secs());
                        state.discovered_at = Some(state.discovered_at.map_or(at, |t| t.max(at)));
                    }
                }
                Scope::Item { layer, item } => {
                    let Some(item) = self.index.names().item_id(&item) else {
                        continue;
                    };
                    if self.index.targets().contains(relay, item) {
                        self.work.restore(relay, WorkKey { layer, item }, cp.at);
                    }
                }
            }
        }
        let actions = compute_all_actions(self.index.targets(), &self.work);
        self.take_actions(&actions);
    }

    /// Records actions as pending work; an open relay plans jobs for the new keys when
    /// its queue drains, and adds them to its live subscriptions.
    pub(super) fn take_actions(&mut self, actions: &Actions) {
        self.work.apply(actions);
        // The targets changed: any relay may now be wanted, or not.
        self.relays.mark_all();
        for ra in &actions.relays {
            let id = ra.relay;
            let url = self.index.names().relay(id).clone();
            let relay = self
                .relays
                .get_or_insert_with(id, || RelayState::new(url, false));
            if relay.phase != Phase::Open {
                continue;
            }
            relay.unscheduled.extend(ra.add.iter().copied());
            if relay.live_new.is_empty() && !ra.add.is_empty() {
                relay.live_new_since = Some(self.now);
            }
            relay.live_new.extend(ra.add.iter().map(|k| k.item));
        }
    }
}
