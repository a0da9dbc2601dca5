//! The relays the engine knows, and which of them need attention: a relay borrowed
//! mutably is marked dirty (driven after the input) and changed (its cached in-flight
//! count is recomputed), so only the relays an input touched are visited, never all of
//! them. Each relay's next deadline is cached in one ordered set, re-computed only for
//! changed relays, so the engine's next deadline is the set's first. Changes that span relays (a key lease released, ingest room freed, a phase
//! that other relays' plans depend on) mark the relays that may proceed explicitly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Index;

use super::job::JobState;
use super::relay::{RelayState, Sub};
use super::{Phase, Time, Timing};
use crate::items::RelayId;

/// Every known relay, with the marks that say which to drive and which to re-measure.
#[derive(Default)]
pub(super) struct Relays {
    map: HashMap<RelayId, RelayState>,
    /// Relays to drive: touched since they were last driven, or woken.
    dirty: BTreeSet<RelayId>,
    /// Relays whose cached in-flight count and deadline may be stale.
    changed: HashSet<RelayId>,
    /// The relay marked last: marking it again is skipped (the common case).
    last: Option<RelayId>,
    /// Per relay: events its pages and `ids` fetches in flight may yet bring.
    flight: HashMap<RelayId, usize>,
    /// The sum of `flight`.
    flight_total: usize,
    /// Every relay's next deadline, earliest first.
    deadlines: BTreeSet<(Time, RelayId)>,
    /// The deadline each relay has in `deadlines`.
    deadline_of: HashMap<RelayId, Time>,
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

    pub(super) fn values(&self) -> impl Iterator<Item = &RelayState> {
        self.map.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&RelayId, &RelayState)> {
        self.map.iter()
    }

    /// A store write failed: no job may count on checkpoints a batch carried (its own,
    /// or one behind it that failed with it); those of batches still in flight are
    /// emitted again when their jobs complete (a checkpoint written twice is harmless).
    pub(super) fn forget_carried(&mut self) {
        for relay in self.map.values_mut() {
            for job in relay.jobs.values_mut() {
                job.carried.clear();
            }
        }
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

    /// Whether a relay waits to be driven (left over by a drive).
    pub(super) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
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

    /// Marks a relay to be driven and measured again (a deadline of it passed).
    pub(super) fn touch(&mut self, id: RelayId) {
        if self.map.contains_key(&id) {
            self.last = None;
            self.dirty.insert(id);
            self.changed.insert(id);
        }
    }

    /// Measures the changed relays again: what their pages and fetches in flight may
    /// bring, and their next deadline — `now` for an idle relay that is wanted (a
    /// bootstrap relay, or `targeted`), so it is connected at once.
    pub(super) fn refresh(
        &mut self,
        now: Time,
        timing: &Timing,
        targeted: impl Fn(RelayId) -> bool,
    ) {
        if self.changed.is_empty() {
            return;
        }
        self.last = None;
        for id in std::mem::take(&mut self.changed) {
            let Some(relay) = self.map.get(&id) else {
                continue;
            };
            let flight = in_flight(relay);
            let before = self.flight.insert(id, flight).unwrap_or(0);
            self.flight_total = self.flight_total - before + flight;
            let deadline = if relay.phase == Phase::Idle && (relay.bootstrap || targeted(id)) {
                Some(now)
            } else {
                relay.next_deadline(timing)
            };
            if let Some(old) = self.deadline_of.remove(&id) {
                self.deadlines.remove(&(old, id));
            }
            if let Some(at) = deadline {
                self.deadline_of.insert(id, at);
                self.deadlines.insert((at, id));
            }
        }
        #[cfg(debug_assertions)]
        {
            let walked: usize = self.map.values().map(in_flight).sum();
            debug_assert_eq!(walked, self.flight_total, "in-flight count drifted");
        }
    }

    /// Events the pages and `ids` fetches in flight at every relay may yet bring, as of
    /// the last [`refresh`](Self::refresh).
    pub(super) fn in_flight(&self) -> usize {
        self.flight_total
    }

    /// The earliest relay deadline, as of the last [`refresh`](Self::refresh).
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The relays whose deadline is at or before `now`.
    pub(super) fn due(&self, now: Time) -> Vec<RelayId> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect()
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
