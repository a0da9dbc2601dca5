//! The ingest pipeline: a requested event is prechecked and queued, verified in one batch
//! per drain, decided by the acceptor (feeding the repo index at once), stored, and
//! settled against the job that asked for it. The queue is bounded (flow control).

use std::collections::{HashSet, VecDeque};

use nostr::prelude::{Event, EventId};

use super::job::JobId;
use super::pipeline::Pipe;
use super::relay::Room;
use super::{BatchId, Output, SyncEngine};
use crate::accept::{Reject, Verdict};
use crate::actions::compute_actions;
use crate::index::IndexUpdate;
use crate::items::RelayId;
use crate::nip34::{self, kinds};
use crate::targets::TargetChange;

/// Ids recently stored, bounded: a copy from another relay is not verified and written
/// again.
#[derive(Default)]
pub(super) struct RecentIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    const CAPACITY: usize = 200_000;

    pub(super) fn insert(&mut self, id: EventId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(super) fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }
}

impl SyncEngine {
    /// A requested event from relay `id` (for `job`, if any): prechecked, then queued
    /// for verification unless known or already on its way.
    pub(super) fn admit(&mut self, id: RelayId, job: Option<JobId>, event: Event, bytes: usize) {
        let now = self.now;
        let max_queue = self.config.flow.max_ingest_queue;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if let Err(reject) = self.acceptor.precheck(&event, bytes, now.timestamp()) {
            relay.stats.reject(reject.as_str());
            if reject.remembered() {
                let entry = self.seen.remember(&event, now.timestamp());
                self.remembered.push(entry);
            }
            // We got the event and decided: a fetch of it is over.
            self.resolve_fetch(&event.id);
            return;
        }
        if self.seen.contains(&event.id) || self.recent.contains(&event.id) {
            self.resolve_fetch(&event.id);
            return;
        }
        if self.pipeline.contains(&event.id) {
            return;
        }
        if self.pipeline.len() >= max_queue {
            relay.stats.dropped += 1;
            if self.fetches.contains(&event.id) {
                relay.stats.dropped_fetched += 1;
            }
            relay.needs_catch_up.get_or_insert(now);
            if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
                job.lossy = true;
            }
            self.drop_fetch(&event.id);
            return;
        }
        if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
            job.outstanding += 1;
        }
        self.pipeline.queue(Pipe {
            relay: id,
            job,
            event,
        });
    }

    /// Room the ingest queue has left, after what is in it and what the pages and `ids`
    /// fetches in flight may yet bring.
    pub(super) fn room(&mut self) -> Room {
        self.refresh_relays();
        let max_queue = self.config.flow.max_ingest_queue;
        let used = self.pipeline.len() + self.relays.in_flight();
        Room {
            left: max_queue.saturating_sub(used),
            max_queue,
        }
    }

    pub(super) fn flush_verify(&mut self) {
        if !self.pipeline.has_queued() {
            return;
        }
        let batch = self.new_id();
        let events = self.pipeline.verify(batch);
        self.outputs.push_back(Output::Verify { batch, events });
    }

    pub(super) fn on_verified(&mut self, batch: BatchId, valid: &[bool]) {
        let Some(mut pipes) = self.pipeline.verified(batch) else {
            return;
        };
        let now = self.now.timestamp();
        // Announcements first, then roots, so later events of the batch see them tracked.
        let rank = |e: &Event| {
            if e.kind == kinds::REPO_ANNOUNCEMENT {
                0
            } else if nip34::is_root(e) {
                1
            } else {
                2
            }
        };
        let mut flagged: Vec<(Pipe, bool)> = pipes
            .drain(..)
            .enumerate()
            .map(|(i, p)| (p, valid.get(i).copied().unwrap_or(false)))
            .collect();
        flagged.sort_by_key(|(p, _)| rank(&p.event));
        let mut events = Vec::new();
        let mut remove = Vec::new();
        let mut entries = Vec::new();
        let mut changes: Vec<TargetChange> = Vec::new();
        let mut index_changed = false;
        for (pipe, ok) in flagged {
            let verdict = if ok {
                self.acceptor.decide(&pipe.event, &self.index)
            } else {
                Verdict::Reject(Reject::BadSignature)
            };
            match verdict {
                Verdict::Store { remove: r } => {
                    let update = self.apply_to_index(&pipe.event);
                    index_changed |= update.applied > 0;
                    changes.extend(update.changes);
                    remove.extend(r);
                    entries.push((pipe.relay, pipe.job, pipe.event.id));
                    events.push(pipe.event);
                }
                Verdict::Reject(reject) => {
                    if let Some(relay) = self.relays.get_mut(&pipe.relay) {
                        relay.stats.reject(reject.as_str());
                    }
                    if reject.remembered() {
                        let entry = self.seen.remember(&pipe.event, now);
                        self.remembered.push(entry);
                    }
                    let forged = reject == Reject::BadSignature;
                    if forged {
                        // A forged copy is not the event: fetch a real one by id (the
                        // job, if any, waits for it).
                        self.pipeline.leave(&pipe.event.id);
                        if self.fetches.contains(&pipe.event.id) {
                            self.refetch(pipe.event.id);
                        } else {
                            self.need(pipe.relay, pipe.job, pipe.event.id);
                        }
                    }
                    self.left_pipeline(pipe.relay, pipe.job, &pipe.event.id, !forged);
                }
            }
        }
        if !changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &changes, &self.work);
            self.take_actions(&actions);
        }
        if !events.is_empty() {
            let batch = self.new_id();
            let checkpoints = self.carried_checkpoints(&entries);
            self.pipeline.store(batch, entries);
            self.outputs.push_back(Output::Store {
                batch,
                events,
                remove,
                checkpoints,
            });
        }
        if index_changed {
            self.retry_orphans();
        }
        if !self.pipeline.verifying_any() {
            self.release_held_live();
        }
    }

    /// Applies an accepted event to the repo index when it can change it (an
    /// announcement, a deletion, a root).
    pub(super) fn apply_to_index(&mut self, event: &Event) -> IndexUpdate {
        if event.kind == kinds::REPO_ANNOUNCEMENT
            || event.kind == kinds::DELETION
            || nip34::is_root(event)
        {
            self.index.apply([event])
        } else {
            IndexUpdate::default()
        }
    }

    /// An event left the pipeline (stored or rejected). `settled` says whether a fetch
    /// for it is over (a bad signature is not the event we need: try again elsewhere).
    fn left_pipeline(&mut self, relay: RelayId, job: Option<JobId>, eid: &EventId, settled: bool) {
        self.pipeline.leave(eid);
        if let Some(job) = job {
            self.settle(relay, job);
        }
        if settled {
            self.resolve_fetch(eid);
        }
        if !self.pipeline.verifying_any() {
            self.release_held_live();
        }
    }

    pub(super) fn on_stored(&mut self, batch: BatchId, result: Result<Vec<Event>, String>) {
        if let Some(published) = self.publishing.remove(&batch) {
            self.on_published_stored(published, result);
            return;
        }
        let Some(entries) = self.pipeline.stored(batch) else {
            return;
        };
        let ok = result.is_ok();
        self.stats.store_error = result.as_ref().err().cloned();
        let ids = entries.iter().map(|(_, _, eid)| eid);
        if ok {
            self.acceptor.committed(ids);
        } else {
            // What the verdicts recorded is undone: copies fetched again are judged anew
            // (a newer version is not a duplicate of one never stored).
            self.acceptor.roll_back(ids);
        }
        for removed in result.unwrap_or_default() {
            let entry = self.seen.remember(&removed, self.now.timestamp());
            self.remembered.push(entry);
        }
        if ok {
            self.stats.stored += entries.len() as u64;
        } else {
            self.stats.store_failures += 1;
            self.relays.forget_carried();
        }
        for (relay, job, eid) in entries {
            if ok {
                self.recent.insert(eid);
            }
            if let Some(r) = self.relays.get_mut(&relay) {
                if ok {
                    r.stats.events_accepted += 1;
                } else if let Some(j) = job.and_then(|j| r.jobs.get_mut(&j)) {
                    j.lossy = true;
                }
            }
            self.left_pipeline(relay, job, &eid, ok);
            if !ok {
                // Whoever waits for this id fetches it again (once).
                self.refetch(eid);
            }
        }
    }
}
