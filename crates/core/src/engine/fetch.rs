//! Fetching need-ids with `ids` REQs: each id fetched once across all relays (other
//! relays' jobs wait for it), retried once, handed over when its relay goes, and what
//! a relay's results cap cut off asked again.

use nostr::prelude::EventId;

use super::fetch_table::{Claim, RelayJob, Retry};
use super::job::JobId;
use super::relay::Fetch;
use super::{Phase, SyncEngine};
use crate::items::RelayId;

impl SyncEngine {
    /// Relay `id` has event `eid` and we want it (NIP-77 need, or its copy failed
    /// verification): fetch it by id, unless another relay is already fetching it or a
    /// copy is already on its way to the store (then the job waits for that copy).
    pub(super) fn need(&mut self, id: RelayId, job: Option<JobId>, eid: EventId) {
        if self.seen.contains(&eid) || self.recent.contains(&eid) {
            return;
        }
        let claim = self.fetches.claim(eid, id, job);
        if let (Claim::Owns | Claim::Waits, Some(job)) = (&claim, job) {
            self.bump(id, job, 1);
        }
        // A copy already on its way to the store is waited for, not downloaded again;
        // should it prove forged (or fail to store), it is fetched from this relay.
        if claim != Claim::Owns || self.pipeline.contains(&eid) {
            return;
        }
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.fetch_queue.push_back(eid);
        }
    }

    /// A fetched copy failed verification: ask its relay once more, then give up there.
    pub(super) fn refetch(&mut self, eid: EventId) {
        let Some(retry) = self.fetches.retry(&eid) else {
            return;
        };
        match retry {
            Retry::Again(relay) => {
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.fetch_queue.push_back(eid);
                }
            }
            Retry::Exhausted {
                relay,
                job,
                waiting,
            } => {
                let now = self.now;
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.stats.forged_twice += 1;
                    // With nobody else to ask, the job cannot vouch for completeness; a
                    // live event without a job is caught up from now on.
                    match job.filter(|_| !waiting) {
                        Some(j) => {
                            if let Some(job) = r.jobs.get_mut(&j) {
                                job.lossy = true;
                            }
                        }
                        None if !waiting => {
                            r.needs_catch_up.get_or_insert(now);
                        }
                        None => {}
                    }
                }
                self.hand_over_or_resolve(eid);
            }
        }
    }

    /// A fetched copy was dropped (ingest queue full): the fetch is over, and every job
    /// waiting for it lost it and runs again — the id must not stay "being fetched".
    pub(super) fn drop_fetch(&mut self, eid: &EventId) {
        for (relay, job) in self.fetches.resolve(eid) {
            if let Some(j) = self
                .relays
                .get_mut(&relay)
                .and_then(|r| r.jobs.get_mut(&job))
            {
                j.lossy = true;
            }
            self.settle(relay, job);
        }
    }

    /// An id's fetch is over (stored, rejected, or given up): its jobs stop waiting.
    pub(super) fn resolve_fetch(&mut self, eid: &EventId) {
        for (relay, job) in self.fetches.resolve(eid) {
            self.settle(relay, job);
        }
    }

    /// The fetching relay is gone or gave up: a waiting relay whose job is still running
    /// fetches the id instead; with none, the fetch is over.
    pub(super) fn hand_over_fetch(&mut self, eid: EventId) {
        let relays = &self.relays;
        let alive = |(relay, job): &RelayJob| {
            relays
                .get(relay)
                .is_some_and(|r| r.phase == Phase::Open && r.jobs.contains_key(job))
        };
        if let Some(relay) = self.fetches.hand_over(eid, alive) {
            if let Some(r) = self.relays.get_mut(&relay) {
                r.fetch_queue.push_back(eid);
            }
        }
    }

    /// Sends the relay's queued ids as `ids` REQs while it has slots and the ingest
    /// queue has room (like pages, fetches wait until it can take what they ask).
    pub(super) fn start_fetches(&mut self, id: RelayId) {
        let (now, per_relay) = (self.now, self.config.flow.id_fetches_per_relay);
        let deadline = now + self.config.timing.eose_timeout;
        while let Some(wanted) = self
            .relays
            .get(&id)
            .and_then(|r| r.fetch_wanted(now, per_relay))
        {
            let room = self.room();
            if !room.takes(wanted) {
                self.room_waiters.insert(id);
                break;
            }
            let asked = self
                .relays
                .get_mut(&id)
                .map_or(0, |r| r.start_fetch(wanted.min(room.left), deadline));
            self.flush_sends(id);
            if asked == 0 {
                break;
            }
        }
    }

    /// An `ids` REQ is overdue: close it and retry what it did not deliver.
    pub(super) fn end_overdue_fetch(&mut self, id: RelayId, sub: &str) {
        let fetch = self.relays.get_mut(&id).and_then(|r| r.end_fetch(sub));
        self.flush_sends(id);
        if let Some(fetch) = fetch {
            self.fetch_ended_with(id, *fetch, false);
        }
    }

    /// An `ids` REQ ended (EOSE, CLOSED or overdue; its subscription is gone): retry
    /// what it did not deliver.
    pub(super) fn fetch_ended_with(&mut self, id: RelayId, fetch: Fetch, at_eose: bool) {
        // Fewer events than ids at EOSE: the relay caps results silently below what we
        // assumed. Learn the cap; what it did not send is asked again, not given up.
        // Learned once per session and only from a substantial answer, so ids a relay
        // really lacks cannot shrink the cap step by step.
        let received = fetch.delivered.len();
        let capped = at_eose
            && received >= 10
            && received < fetch.ids.len()
            && self.relays.get(&id).is_some_and(|r| !r.cap_learned);
        if capped {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.learn_result_cap(received);
                relay.cap_learned = true;
            }
        }
        for eid in fetch.ids {
            let owned = self.fetches.owner(&eid).is_some_and(|o| o.relay == id)
                && !fetch.delivered.contains(&eid)
                && !self.pipeline.contains(&eid);
            if !owned {
                continue;
            }
            if capped {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.fetch_queue.push_back(eid);
                }
            } else if self.fetches.owner(&eid).is_some_and(|o| o.retried) {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.stats.undelivered_ids += 1;
                }
                self.hand_over_or_resolve(eid);
            } else {
                self.refetch(eid);
            }
        }
    }

    /// Given up at one relay: another waiting relay tries, or the id is settled.
    fn hand_over_or_resolve(&mut self, eid: EventId) {
        let Some(owner) = self.fetches.owner(&eid) else {
            return;
        };
        if owner.waiters.is_empty() {
            self.resolve_fetch(&eid);
            return;
        }
        let given_up = owner.job.map(|job| (owner.relay, job));
        self.hand_over_fetch(eid);
        if let Some((relay, job)) = given_up {
            self.settle(relay, job);
        }
    }
}
