//! Paginated REQ jobs: page by page under `until`, parked while the ingest queue has no
//! room, one overflowing second narrowed by halving its filter.

use nostr::prelude::Filter;

use super::ingest::ingest_takes;
use super::job::{halve, JobId, JobState, Narrow, PageOutcome, Pager};
use super::relay::Sub;
use super::SyncEngine;
use crate::items::{RelayId, WorkKey};
use crate::wire::ClientFrame;

impl SyncEngine {
    /// A page of a paging job ended (its session closed the subscription): narrow a
    /// second that overflowed it, then ask for the next page or let the job drain.
    pub(super) fn page_ended(
        &mut self,
        id: RelayId,
        job_id: JobId,
        outcome: PageOutcome,
        full: usize,
    ) {
        let narrow = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .and_then(|j| j.narrow.map(|n| (n, j.keys.clone(), j.filter.clone())));
        match (outcome, narrow) {
            (PageOutcome::StuckSecond(_), Some((narrow, keys, filter))) => {
                // The one second overflowed this (half of a) filter too: halve again.
                self.halve_narrow(id, keys, &filter, narrow);
                self.job_received_all(id, job_id);
                return;
            }
            (PageOutcome::StuckSecond(second), None) => {
                // Paging goes on below the second; the second gets a job of its own.
                let job = self.relays.get(&id).and_then(|r| r.jobs.get(&job_id));
                if let Some((keys, filter)) = job.map(|j| (j.keys.clone(), j.filter.clone())) {
                    let narrow = Narrow {
                        second,
                        cap: full,
                        overflowed: true,
                    };
                    self.add_narrow_job(id, keys, filter, narrow);
                }
            }
            _ => {}
        }
        match outcome {
            PageOutcome::Done => self.job_received_all(id, job_id),
            PageOutcome::Next | PageOutcome::StuckSecond(_) => self.send_page(id, job_id),
        }
    }

    /// Asks for a paging job's next page — or parks the job when the ingest queue has
    /// no room for a page: a relay answering faster than we verify and store would
    /// otherwise fill it, and what is dropped there is downloaded again.
    fn send_page(&mut self, id: RelayId, job_id: JobId) {
        let room = self.ingest_room();
        let now = self.now;
        let eose_timeout = self.config.timing.eose_timeout;
        let max_queue = self.config.flow.max_ingest_queue;
        let (limit, parked) = match self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .map(|j| &j.state)
        {
            Some(JobState::Paging(pager)) => (pager.limit(), pager.parked),
            _ => return,
        };
        if !ingest_takes(room, limit, max_queue) {
            self.room_waiters.insert(id);
            if !parked {
                if let Some(JobState::Paging(pager)) = self
                    .relays
                    .get_mut(&id)
                    .and_then(|r| r.jobs.get_mut(&job_id))
                    .map(|j| &mut j.state)
                {
                    pager.parked = true;
                }
            }
            return;
        }
        let new_sub = self.new_sub();
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        let JobState::Paging(pager) = &mut job.state else {
            return;
        };
        pager.parked = false;
        pager.sub = new_sub.clone();
        pager.deadline = now + eose_timeout;
        let filter = pager.page_filter(&job.filter);
        relay.subs.insert(new_sub.clone(), Sub::Job(job_id));
        self.send(
            id,
            &ClientFrame::Req {
                subscription: new_sub.to_string(),
                filters: vec![filter],
            },
        );
    }

    /// Paging jobs parked between pages go on, while the ingest queue has room.
    pub(super) fn resume_parked(&mut self, id: RelayId) {
        let parked: Vec<JobId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.jobs
                    .values()
                    .filter(|j| matches!(&j.state, JobState::Paging(p) if p.parked))
                    .map(|j| j.id)
                    .collect()
            })
            .unwrap_or_default();
        for job_id in parked {
            self.send_page(id, job_id);
        }
    }

    /// A one-second filter overflowed a page: its halves are narrowed in turn; one that
    /// cannot be halved is reported as an incomplete window (the relay holds more in
    /// that second than it returns, and NIP-77 is not available to list them).
    fn halve_narrow(&mut self, id: RelayId, keys: Vec<WorkKey>, filter: &Filter, narrow: Narrow) {
        let half = Narrow {
            overflowed: false,
            ..narrow
        };
        match halve(filter) {
            Some((a, b)) => {
                self.add_narrow_job(id, keys.clone(), a, half);
                self.add_narrow_job(id, keys, b, half);
            }
            None => {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.stats.incomplete_windows += 1;
                }
            }
        }
    }

    pub(super) fn start_paging(&mut self, id: RelayId, job_id: JobId) {
        let narrow = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .and_then(|j| j.narrow.map(|n| (n, j.keys.clone(), j.filter.clone())));
        if let Some((n, keys, filter)) = narrow.as_ref().filter(|(n, ..)| n.overflowed) {
            // Known to overflow a page: asking again would bring the same page.
            self.halve_narrow(id, keys.clone(), filter, *n);
            self.job_received_all(id, job_id);
            return;
        }
        let sub = self.new_sub();
        let deadline = self.now + self.config.timing.eose_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let limit = relay.limits.max_results;
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        if let Some(from) = job.paging_since.take() {
            let since = job.filter.since.map_or(from, |s| s.max(from));
            job.filter = job.filter.clone().since(since);
        }
        let pager = match narrow {
            Some((n, ..)) => Pager::one_second(sub, deadline, limit, n.cap),
            None => Pager::new(sub, deadline, limit),
        };
        job.state = JobState::Paging(pager);
        self.send_page(id, job_id);
    }
}
