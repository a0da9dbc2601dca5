//! The relays the engine knows, and which of them need attention: a relay borrowed
//! mutably is marked dirty (driven after the input) and changed (its cached in-flight
//! count is recomputed), so only the relays an input touched are visited, never all of
//! them. Changes that span relays (a key lease released, ingest room freed, a phase
//! that other relays' plans depend on) mark the relays that may proceed explicitly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Index;

use super::job::JobState;
use super::relay::{RelayState, Sub};
use crate::items::RelayId;

/// Every known relay, with the marks that say which to drive and which to re-measure.
#[derive(Default)]
pub(super) struct Relays {
    map: HashMap<RelayId, RelayState>,
    /// Relays to drive: touched since they were last driven, or woken.
    dirty: BTreeSet<RelayId>,
    /// Relays whose cached in-flight count may be stale.
    changed: HashSet<RelayId>,
    /// The relay marked last: marking it again is skipped (the common case).
    last: Option<RelayId>,
    /// Per relay: events its pages and `ids` fetches in flight may yet bring.
    flight: HashMap<RelayId, usize>,
    /// The sum of `flight`.
    flight_total: usize,
}

impl Relays {
    /// A relay, for reading.
    pub(super) fn get(&self, id: &RelayId) -> Option<&RelayState> {
        self.map.get(id)
    }

    /// A relay, for changing: it is marked to be driven and re-measured.
    pub(super) fn get_mut(&mut self, id: &RelayId) -> Option<&mut RelayState> {
        let relay = self.map.get_mut(id)?;
        if self.last != Some(*id) {
            self.last = Some(*id);
            self.dirty.insert(*id);
            self.changed.insert(*id);
        }
        Some(relay)
    }

    /// Adds a relay unless it is known; either way it is marked.
    pub(super) fn get_or_insert_with(
        &mut self,
        id: RelayId,
        new: impl FnOnce() -> RelayState,
    ) -> &mut RelayState {
        self.dirty.insert(id);
        self.changed.insert(id);
        self.map.entry(id).or_insert_with(new)
    }

    pub(super) fn contains_key(&self, id: &RelayId) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &RelayId> {
        self.map.keys()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &RelayState> {
        self.map.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&RelayId, &RelayState)> {
        self.map.iter()
    }

    /// Marks a relay to be driven (something it waited for changed).
    pub(super) fn mark(&mut self, id: RelayId) {
        if self.map.contains_key(&id) {
            self.dirty.insert(id);
        }
    }

    /// Marks every relay to be driven and re-measured: for rare changes that any relay's
    /// plans may depend on (a phase, the targets).
    pub(super) fn mark_all(&mut self) {
        self.dirty.extend(self.map.keys().copied());
        self.changed.extend(self.map.keys().copied());
    }

    /// The next relay to drive (the lowest id), unmarked.
    pub(super) fn pop_dirty(&mut self) -> Option<RelayId> {
        self.last = None;
        self.dirty.pop_first()
    }

    /// Puts relays back to be driven by the next drive.
    pub(super) fn keep_dirty(&mut self, ids: impl IntoIterator<Item = RelayId>) {
        self.last = None;
        self.dirty.extend(ids);
    }

    /// Events the pages and `ids` fetches in flight at every relay may yet bring; the
    /// relays changed since are measured again first.
    pub(super) fn in_flight(&mut self) -> usize {
        if !self.changed.is_empty() {
            self.last = None;
            for id in std::mem::take(&mut self.changed) {
                let now = self.map.get(&id).map_or(0, in_flight);
                let before = self.flight.insert(id, now).unwrap_or(0);
                self.flight_total = self.flight_total - before + now;
            }
        }
        #[cfg(debug_assertions)]
        {
            let walked: usize = self.map.values().map(in_flight).sum();
            debug_assert_eq!(walked, self.flight_total, "in-flight count drifted");
        }
        self.flight_total
    }
}

impl Index<&RelayId> for Relays {
    type Output = RelayState;

    fn index(&self, id: &RelayId) -> &RelayState {
        &self.map[id]
    }
}

/// Events a relay's pages and `ids` fetches in flight may yet bring.
fn in_flight(relay: &RelayState) -> usize {
    relay
        .subs
        .values()
        .map(|s| match s {
            Sub::Fetch(f) => f.ids.len().saturating_sub(f.delivered.len()),
            Sub::Job(job) => match relay.jobs.get(job).map(|j| &j.state) {
                Some(JobState::Paging(p)) => p.limit(),
                _ => 0,
            },
            Sub::Live(_) => 0,
        })
        .sum()
}
