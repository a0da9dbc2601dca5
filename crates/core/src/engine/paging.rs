//! Paginated REQ jobs: page by page under `until`, parked while the ingest queue has no
//! room, one overflowing second narrowed by halving its filter.

use nostr::prelude::Filter;

use super::job::{halve, JobId, Narrow, PageOutcome};
use super::relay::Paged;
use super::SyncEngine;
use crate::items::{RelayId, WorkKey};

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
        match (outcome, self.narrowed(id, job_id)) {
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

    /// Asks for a paging job's next page, or parks it until the ingest queue has room.
    fn send_page(&mut self, id: RelayId, job_id: JobId) {
        let room = self.room();
        let (now, timing) = (self.now, &self.config.timing);
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let paged = relay.send_page(job_id, now, timing, room);
        self.paged(id, job_id, paged);
    }

    /// Paging jobs parked between pages go on, while the ingest queue has room.
    pub(super) fn resume_parked(&mut self, id: RelayId) {
        let parked = self.relays.get(&id).map(|r| r.parked()).unwrap_or_default();
        for (job, limit) in parked {
            if self.room().takes(limit) {
                self.send_page(id, job);
            } else {
                self.room_waiters.insert(id);
            }
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
        let room = self.room();
        let (now, timing) = (self.now, &self.config.timing);
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let paged = relay.start_paging(job_id, now, timing, room);
        self.paged(id, job_id, paged);
    }

    /// After a page was asked for (or not): hands out what was sent, waits for room, or
    /// narrows a second known to overflow a page.
    fn paged(&mut self, id: RelayId, job_id: JobId, paged: Paged) {
        self.flush_sends(id);
        match paged {
            Paged::Sent | Paged::NotPaging => {}
            Paged::Parked => {
                self.room_waiters.insert(id);
            }
            Paged::Overflowed => {
                if let Some((narrow, keys, filter)) = self.narrowed(id, job_id) {
                    self.halve_narrow(id, keys, &filter, narrow);
                }
                self.job_received_all(id, job_id);
            }
        }
    }

    /// A job narrowing one second: its narrowing, keys and filter.
    fn narrowed(&self, id: RelayId, job_id: JobId) -> Option<(Narrow, Vec<WorkKey>, Filter)> {
        let job = self.relays.get(&id)?.jobs.get(&job_id)?;
        job.narrow
            .map(|n| (n, job.keys.clone(), job.filter.clone()))
    }
}
