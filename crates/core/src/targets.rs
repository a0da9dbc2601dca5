//! Relay targets: relay → the items to sync from it, and the changes a batch made to them.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::items::{ItemId, RelayId};

/// Relay → items to sync from it. Derived from the repo index, kept incrementally.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Targets {
    by_relay: FxHashMap<RelayId, FxHashSet<ItemId>>,
}

impl Targets {
    /// Whether `item` is to be synced from `relay`.
    pub fn contains(&self, relay: RelayId, item: ItemId) -> bool {
        self.by_relay
            .get(&relay)
            .is_some_and(|items| items.contains(&item))
    }

    /// The relays that have something to sync.
    pub fn relays(&self) -> impl Iterator<Item = RelayId> + '_ {
        self.by_relay.keys().copied()
    }

    /// The items to sync from `relay`.
    pub fn items(&self, relay: RelayId) -> impl Iterator<Item = ItemId> + '_ {
        self.by_relay.get(&relay).into_iter().flatten().copied()
    }

    /// How many items `relay` has.
    pub fn item_count(&self, relay: RelayId) -> usize {
        self.by_relay.get(&relay).map_or(0, FxHashSet::len)
    }

    /// The number of (relay, item) pairs.
    pub fn len(&self) -> usize {
        self.by_relay.values().map(FxHashSet::len).sum()
    }

    /// Whether nothing is to be synced from anywhere.
    pub fn is_empty(&self) -> bool {
        self.by_relay.is_empty()
    }

    pub(crate) fn insert(&mut self, relay: RelayId, item: ItemId) -> bool {
        self.by_relay.entry(relay).or_default().insert(item)
    }

    pub(crate) fn remove(&mut self, relay: RelayId, item: ItemId) -> bool {
        let Some(items) = self.by_relay.get_mut(&relay) else {
            return false;
        };
        let removed = items.remove(&item);
        if items.is_empty() {
            self.by_relay.remove(&relay);
        }
        removed
    }
}

/// Whether a pair became a target or stopped being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// The item is now to be synced from the relay.
    Added,
    /// The item is no longer to be synced from the relay.
    Removed,
}

/// One net change to the targets made by a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetChange {
    /// The relay.
    pub relay: RelayId,
    /// The item.
    pub item: ItemId,
    /// Added or removed.
    pub kind: ChangeKind,
}

/// Records, during a batch, the state each touched pair had before it, so the batch
/// yields only net changes (an item added and removed in one batch is no change).
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    before: FxHashMap<(RelayId, ItemId), bool>,
}

impl ChangeLog {
    /// Sets whether `(relay, item)` is a target, remembering its state before the batch.
    pub(crate) fn set(&mut self, targets: &mut Targets, relay: RelayId, item: ItemId, on: bool) {
        let changed = if on {
            targets.insert(relay, item)
        } else {
            targets.remove(relay, item)
        };
        if changed {
            self.before.entry((relay, item)).or_insert(!on);
        }
    }

    /// The net changes, in a deterministic order.
    pub(crate) fn finish(self, targets: &Targets) -> Vec<TargetChange> {
        let mut changes: Vec<TargetChange> = self
            .before
            .into_iter()
            .filter_map(|((relay, item), was)| {
                let now = targets.contains(relay, item);
                (now != was).then_some(TargetChange {
                    relay,
                    item,
                    kind: if now {
                        ChangeKind::Added
                    } else {
                        ChangeKind::Removed
                    },
                })
            })
            .collect();
        changes.sort_unstable();
        changes
    }
}
