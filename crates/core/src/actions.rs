//! `compute_actions`: targets − pending − confirmed → the work to add and to remove per relay.
//!
//! Every path that discovers work goes through here, so nothing pending or confirmed is
//! ever sent again. [`compute_actions`] looks only at a batch's [`TargetChange`]s (cost
//! proportional to the batch); [`compute_all_actions`] diffs everything and is for start-up
//! (after checkpoints are restored) and for proofs. Both decide with the same rules.

use std::collections::BTreeMap;

use nostr::prelude::Timestamp;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::items::{ItemId, RelayId, WorkKey};
use crate::targets::{ChangeKind, TargetChange, Targets};

/// Per relay: work in flight (pending) and work done (confirmed, with when).
///
/// One map per relay holds both states, so deciding about a key is one lookup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkState {
    relays: FxHashMap<RelayId, FxHashMap<WorkKey, Status>>,
}

/// The state of one key at one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    /// Confirmed at this many seconds after the epoch (saturates in 2106).
    Confirmed(u32),
}

impl Status {
    fn confirmed(at: Timestamp) -> Self {
        Self::Confirmed(u32::try_from(at.as_secs()).unwrap_or(u32::MAX))
    }
}

impl WorkState {
    fn status(&self, relay: RelayId, key: WorkKey) -> Option<Status> {
        self.relays.get(&relay).and_then(|w| w.get(&key).copied())
    }

    /// Whether `key` is in flight at `relay`.
    pub fn is_pending(&self, relay: RelayId, key: WorkKey) -> bool {
        self.status(relay, key) == Some(Status::Pending)
    }

    /// When `key` was confirmed synced from `relay`, if it was.
    pub fn confirmed_at(&self, relay: RelayId, key: WorkKey) -> Option<Timestamp> {
        match self.status(relay, key) {
            Some(Status::Confirmed(at)) => Some(Timestamp::from(u64::from(at))),
            _ => None,
        }
    }

    /// Whether `key` is pending or confirmed at `relay`.
    pub fn is_known(&self, relay: RelayId, key: WorkKey) -> bool {
        self.status(relay, key).is_some()
    }

    /// Relays with pending or confirmed work.
    pub fn relays(&self) -> impl Iterator<Item = RelayId> + '_ {
        self.relays.keys().copied()
    }

    /// Every key pending or confirmed at `relay`.
    pub fn keys(&self, relay: RelayId) -> impl Iterator<Item = WorkKey> + '_ {
        self.relays
            .get(&relay)
            .into_iter()
            .flat_map(|w| w.keys().copied())
    }

    /// The keys pending at `relay`.
    pub fn pending(&self, relay: RelayId) -> impl Iterator<Item = WorkKey> + '_ {
        self.relays.get(&relay).into_iter().flat_map(|w| {
            w.iter()
                .filter(|(_, s)| **s == Status::Pending)
                .map(|(k, _)| *k)
        })
    }

    /// Number of pending keys over all relays.
    pub fn pending_count(&self) -> usize {
        self.relays
            .values()
            .flat_map(|w| w.values())
            .filter(|s| **s == Status::Pending)
            .count()
    }

    /// Number of confirmed keys over all relays.
    pub fn confirmed_count(&self) -> usize {
        self.relays.values().map(|w| w.len()).sum::<usize>() - self.pending_count()
    }

    /// Marks pending work as done at `at`. Returns false when it was not pending.
    pub fn confirm(&mut self, relay: RelayId, key: WorkKey, at: Timestamp) -> bool {
        match self.relays.get_mut(&relay).and_then(|w| w.get_mut(&key)) {
            Some(status @ Status::Pending) => {
                *status = Status::confirmed(at);
                true
            }
            _ => false,
        }
    }

    /// Restores a checkpoint (confirmed work) loaded from the store.
    pub fn restore(&mut self, relay: RelayId, key: WorkKey, at: Timestamp) {
        self.relays
            .entry(relay)
            .or_default()
            .insert(key, Status::confirmed(at));
    }

    /// Marks `key` pending at `relay` unless it is pending or confirmed there already;
    /// whether it was added.
    pub fn add_pending(&mut self, relay: RelayId, key: WorkKey) -> bool {
        let work = self.relays.entry(relay).or_default();
        if work.contains_key(&key) {
            return false;
        }
        work.insert(key, Status::Pending);
        true
    }

    /// Forgets pending work that failed, so it can be added again.
    pub fn abandon(&mut self, relay: RelayId, key: WorkKey) -> bool {
        let Some(work) = self.relays.get_mut(&relay) else {
            return false;
        };
        if work.get(&key) != Some(&Status::Pending) {
            return false;
        }
        work.remove(&key);
        if work.is_empty() {
            self.relays.remove(&relay);
        }
        true
    }

    /// Applies actions: adds become pending; removes leave pending and confirmed;
    /// a dropped relay is forgotten.
    pub fn apply(&mut self, actions: &Actions) {
        for relay in &actions.relays {
            let work = self.relays.entry(relay.relay).or_default();
            for key in &relay.remove {
                work.remove(key);
            }
            for key in &relay.add {
                work.entry(*key).or_insert(Status::Pending);
            }
            if relay.drop_relay || work.is_empty() {
                self.relays.remove(&relay.relay);
            }
        }
    }
}

/// What to do at one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayActions {
    /// The relay.
    pub relay: RelayId,
    /// New work: sync these (layer, item) keys.
    pub add: Vec<WorkKey>,
    /// Work that is no longer a target: stop syncing these keys.
    pub remove: Vec<WorkKey>,
    /// The relay has nothing left to sync: close it.
    pub drop_relay: bool,
}

/// The actions for a batch, one entry per relay that has any, sorted by relay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Actions {
    /// Per-relay actions.
    pub relays: Vec<RelayActions>,
}

impl Actions {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Total keys added over all relays.
    pub fn added(&self) -> usize {
        self.relays.iter().map(|r| r.add.len()).sum()
    }

    /// Total keys removed over all relays.
    pub fn removed(&self) -> usize {
        self.relays.iter().map(|r| r.remove.len()).sum()
    }
}

/// Collects per-relay decisions.
#[derive(Default)]
struct Builder {
    relays: BTreeMap<RelayId, RelayActions>,
}

impl Builder {
    fn entry(&mut self, relay: RelayId) -> &mut RelayActions {
        self.relays.entry(relay).or_insert_with(|| RelayActions {
            relay,
            add: Vec::new(),
            remove: Vec::new(),
            drop_relay: false,
        })
    }

    /// An item is a target at `relay`: add each of its keys not pending or confirmed.
    fn targeted(&mut self, work: &WorkState, relay: RelayId, item: ItemId) {
        for layer in item.layers() {
            let key = WorkKey {
                layer: *layer,
                item,
            };
            if !work.is_known(relay, key) {
                self.entry(relay).add.push(key);
            }
        }
    }

    /// An item is no longer a target at `relay`: remove each of its known keys.
    fn untargeted(&mut self, work: &WorkState, relay: RelayId, item: ItemId) {
        for layer in item.layers() {
            let key = WorkKey {
                layer: *layer,
                item,
            };
            if work.is_known(relay, key) {
                self.entry(relay).remove.push(key);
            }
        }
    }

    fn finish(self, targets: &Targets, work: &WorkState) -> Actions {
        let relays = self
            .relays
            .into_values()
            .filter_map(|mut actions| {
                actions.add.sort_unstable();
                actions.remove.sort_unstable();
                actions.drop_relay = targets.item_count(actions.relay) == 0
                    && work.relays.contains_key(&actions.relay);
                (!actions.add.is_empty() || !actions.remove.is_empty() || actions.drop_relay)
                    .then_some(actions)
            })
            .collect();
        Actions { relays }
    }
}

/// The work a batch's target changes call for: O(changes).
pub fn compute_actions(targets: &Targets, changes: &[TargetChange], work: &WorkState) -> Actions {
    let mut builder = Builder::default();
    for change in changes {
        match change.kind {
            ChangeKind::Added => builder.targeted(work, change.relay, change.item),
            ChangeKind::Removed => builder.untargeted(work, change.relay, change.item),
        }
    }
    builder.finish(targets, work)
}

/// The work that makes pending ∪ confirmed equal the targets, from scratch: O(targets + work).
pub fn compute_all_actions(targets: &Targets, work: &WorkState) -> Actions {
    let mut builder = Builder::default();
    for relay in targets.relays() {
        for item in targets.items(relay) {
            builder.targeted(work, relay, item);
        }
    }
    for relay in work.relays() {
        let stale: FxHashSet<ItemId> = work
            .keys(relay)
            .map(|k| k.item)
            .filter(|item| !targets.contains(relay, *item))
            .collect();
        for item in stale {
            builder.untargeted(work, relay, item);
        }
        if targets.item_count(relay) == 0 {
            builder.entry(relay);
        }
    }
    builder.finish(targets, work)
}
