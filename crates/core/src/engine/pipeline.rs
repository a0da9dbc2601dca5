//! The events on their way from a relay to the store: queued for verification, being
//! verified (by batch), being stored (by batch), and the set of their ids, so a copy
//! from another relay is neither queued twice nor fetched while one is on its way. The
//! ingest module decides what enters and what leaves; this keeps the books.

use std::collections::{HashMap, HashSet};

use nostr::prelude::{Event, EventId};

use super::job::JobId;
use super::time::Time;
use super::BatchId;
use crate::items::RelayId;

/// An event on its way from a relay to the store.
pub(super) struct Pipe {
    pub(super) relay: RelayId,
    pub(super) job: Option<JobId>,
    pub(super) event: Event,
}

/// An accepted event being stored: the relay and job it came for, and its id.
pub(super) type Storing = (RelayId, Option<JobId>, EventId);

/// Every event between a relay and the store.
#[derive(Default)]
pub(super) struct Pipeline {
    /// The ids of everything below, and of accepted events between their verification
    /// and their store batch.
    ids: HashSet<EventId>,
    queued: Vec<Pipe>,
    verifying: HashMap<BatchId, Vec<Pipe>>,
    storing: HashMap<BatchId, Vec<Storing>>,
    /// When [`storing_within`](Self::storing_within) last walked, and how many entries.
    walked: (Time, usize),
}

impl Pipeline {
    /// Whether `id` is on its way.
    pub(super) fn contains(&self, id: &EventId) -> bool {
        self.ids.contains(id)
    }

    /// Events on their way.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is on its way.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.queued.is_empty()
    }

    /// Whether events wait for verification or are being verified: only those can still
    /// name new items (the index takes an event up when it is verified).
    pub(super) fn verifying_any(&self) -> bool {
        !self.queued.is_empty() || !self.verifying.is_empty()
    }

    /// Queues a requested event for verification.
    pub(super) fn queue(&mut self, pipe: Pipe) {
        self.ids.insert(pipe.event.id);
        self.queued.push(pipe);
    }

    /// Whether events wait to go out for verification.
    pub(super) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Everything queued goes out as verify batch `batch`: its events.
    pub(super) fn verify(&mut self, batch: BatchId) -> Vec<Event> {
        let pipes = std::mem::take(&mut self.queued);
        let events = pipes.iter().map(|p| p.event.clone()).collect();
        self.verifying.insert(batch, pipes);
        events
    }

    /// Verify batch `batch` answered: its events (still on their way until they leave
    /// or go to be stored).
    pub(super) fn verified(&mut self, batch: BatchId) -> Option<Vec<Pipe>> {
        self.verifying.remove(&batch)
    }

    /// Accepted events go out as store batch `batch`.
    pub(super) fn store(&mut self, batch: BatchId, entries: Vec<Storing>) {
        self.storing.insert(batch, entries);
    }

    /// Store batch `batch` answered: its entries (on their way until they leave).
    pub(super) fn stored(&mut self, batch: BatchId) -> Option<Vec<Storing>> {
        self.storing.remove(&batch)
    }

    /// The entries of every store batch handed out and not answered yet — unless
    /// walking them would take what was walked at `now` (one step of the loop, which
    /// may hand out many batches) past `budget` entries.
    pub(super) fn storing_within(
        &mut self,
        now: Time,
        budget: usize,
    ) -> Option<impl Iterator<Item = &Storing> + '_> {
        if self.walked.0 != now {
            self.walked = (now, 0);
        }
        let len: usize = self.storing.values().map(Vec::len).sum();
        if self.walked.1 + len > budget {
            return None;
        }
        self.walked.1 += len;
        Some(self.storing.values().flatten())
    }

    /// `id` left: stored, rejected, or dropped.
    pub(super) fn leave(&mut self, id: &EventId) {
        self.ids.remove(id);
    }

    /// The (relay, job) of every event queued, being verified or being stored (for the
    /// debug checks of what each job is owed).
    #[cfg(debug_assertions)]
    pub(super) fn owed(&self) -> impl Iterator<Item = (RelayId, Option<JobId>)> + '_ {
        self.queued
            .iter()
            .chain(self.verifying.values().flatten())
            .map(|p| (p.relay, p.job))
            .chain(
                self.storing
                    .values()
                    .flatten()
                    .map(|(relay, job, _)| (*relay, *job)),
            )
    }

    /// Panics unless the id set is exactly the ids queued, being verified and being
    /// stored, each once (debug builds, after every input).
    #[cfg(debug_assertions)]
    pub(super) fn check(&self) {
        let ids: Vec<EventId> = self
            .queued
            .iter()
            .chain(self.verifying.values().flatten())
            .map(|p| p.event.id)
            .chain(self.storing.values().flatten().map(|(_, _, id)| *id))
            .collect();
        let set: HashSet<EventId> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "an id is twice in the pipeline");
        assert_eq!(set, self.ids, "the pipeline's id set drifted");
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;

    use super::*;
    use crate::items::Names;
    use crate::relay_url::RelayUrl;

    fn event(n: u8) -> Event {
        let keys = Keys::new(SecretKey::from_slice(&[n; 32]).expect("a secret key"));
        Event::new(
            EventId::from_byte_array([n; 32]),
            keys.public_key(),
            Timestamp::from(1_700_000_000),
            Kind::from(1621),
            [],
            "",
            Signature::from_byte_array([7; 64]),
        )
    }

    /// An event is on its way from its queueing until it leaves, through a verify batch
    /// and a store batch; the books balance at every step.
    #[test]
    fn an_event_is_on_its_way_until_it_leaves() {
        let url = RelayUrl::parse("wss://relay.example.com").expect("a url");
        let relay = Names::default().intern_relay(&url);
        let mut p = Pipeline::default();
        let (a, b) = (event(1), event(2));
        let (id_a, id_b) = (a.id, b.id);
        for e in [a, b] {
            p.queue(Pipe {
                relay,
                job: None,
                event: e,
            });
        }
        p.check();
        assert!(p.contains(&id_a) && p.has_queued() && p.len() == 2);
        assert_eq!(p.verify(7).len(), 2);
        assert!(!p.has_queued() && p.contains(&id_b));
        p.check();
        let pipes = p.verified(7).expect("batch 7");
        assert!(p.verified(7).is_none(), "answered once");
        // One accepted and stored, one rejected.
        p.store(8, vec![(relay, None, pipes[0].event.id)]);
        p.leave(&pipes[1].event.id);
        p.check();
        assert_eq!(p.len(), 1);
        let stored = p.stored(8).expect("batch 8");
        p.leave(&stored[0].2);
        p.check();
        assert!(p.is_empty() && !p.contains(&id_a));
    }
}
