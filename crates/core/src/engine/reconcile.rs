//! NIP-77 jobs: the local set loaded from the store, NEG-OPEN/NEG-MSG rounds, need-ids
//! handed to the fetcher, and the fall back to paging (NEG-ERR, a refusal, a decode error
//! or silence); an oversized window is split in halves.

use nostr::prelude::{EventId, Timestamp};

use super::job::{JobId, JobState};
use super::relay;
use super::{Output, RequestId, SyncEngine};
use crate::items::RelayId;

impl SyncEngine {
    pub(super) fn start_loading(&mut self, id: RelayId, job_id: JobId, probe: bool) {
        let request = self.new_id();
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        // A candidate for the relay's probe: the first of them whose NEG-OPEN goes out
        // is it (see `RelayState::open_neg`); others load their local sets meanwhile.
        job.probe = probe;
        job.state = JobState::Loading { request };
        self.loading.insert(request, (id, job_id));
        self.outputs.push_back(Output::LoadLocalItems {
            request,
            filter: job.filter.clone(),
        });
    }

    pub(super) fn on_local_items(&mut self, request: RequestId, items: Vec<(Timestamp, EventId)>) {
        let Some((id, job_id)) = self.loading.remove(&request) else {
            return;
        };
        let still_loading = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .is_some_and(|j| matches!(j.state, JobState::Loading { request: r } if r == request));
        if !still_loading {
            return;
        }
        // An empty local set makes negentropy a slow id download: page instead — except
        // for one second that held more than a page, which paging cannot list.
        let narrow = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .is_some_and(|j| j.narrow.is_some());
        if items.is_empty() && !narrow {
            self.fall_back_to_req(id, job_id);
            return;
        }
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        if relay.probe_out() {
            // Another job's NEG-OPEN is the probe: this one starts again once the relay
            // has answered it.
            self.requeue(id, job_id, false);
            return;
        }
        if relay.nip77 == relay::Nip77::Unsupported {
            self.fall_back_to_req(id, job_id);
            return;
        }
        let Some(filter) = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .map(|j| j.filter.clone())
        else {
            return;
        };
        let all = items
            .into_iter()
            .chain(self.seen.items_matching(&filter))
            .map(|(t, eid)| (t.as_secs(), eid.to_bytes()));
        let deadline = self.now + self.config.timing.neg_first_frame_timeout;
        let opened = self
            .relays
            .get_mut(&id)
            .is_some_and(|r| r.open_neg(job_id, all, deadline));
        self.flush_sends(id);
        if !opened {
            self.fall_back_to_req(id, job_id);
        }
    }

    /// The relay refused a NIP-77 session as too large: halve the job's `created_at`
    /// window and reconcile each half (the newer half stays open-ended); a window under
    /// an hour is paged instead, so splitting always ends.
    pub(super) fn split_window(&mut self, id: RelayId, job_id: JobId) {
        const MIN_WINDOW_SECS: u64 = 3600;
        let now = self.now.timestamp().as_secs();
        let Some(job) = self.relays.get(&id).and_then(|r| r.jobs.get(&job_id)) else {
            return;
        };
        let lo = job.filter.since.map_or(0, |t| t.as_secs());
        let hi = job.filter.until.map_or(now, |t| t.as_secs());
        if hi.saturating_sub(lo) < MIN_WINDOW_SECS {
            self.fall_back_to_req(id, job_id);
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let newer = job.filter.clone().since(Timestamp::from(mid + 1));
        let (keys, paging_since) = (job.keys.clone(), job.paging_since);
        if let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
        {
            job.filter = job.filter.clone().until(Timestamp::from(mid));
        }
        self.requeue(id, job_id, false);
        self.add_job(id, keys, newer, paging_since);
    }

    /// NIP-77 failed for this job, or would only download ids (nothing stored): page
    /// it instead.
    pub(super) fn fall_back_to_req(&mut self, id: RelayId, job_id: JobId) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.leave_neg(job_id);
        }
        self.start_paging(id, job_id);
    }
}
