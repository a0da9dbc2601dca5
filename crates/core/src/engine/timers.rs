//! Deadlines passed at a relay: connect timeouts, backoff ends, delayed and stalled
//! jobs, the daily full reconciliation, and `ids` fetches that never ended.

use super::job::{JobId, JobState};
use super::jobs::Session;
use super::relay::{self, Sub};
use super::sub_id::SubId;
use super::{Output, Phase, SyncEngine};
use crate::items::RelayId;

impl SyncEngine {
    pub(super) fn relay_timeouts(&mut self, id: RelayId) {
        let now = self.now;
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        match relay.phase {
            Phase::Connecting { deadline } if now >= deadline => {
                self.outputs.push_back(Output::Close { relay: id });
                self.on_disconnected(id, "connect timeout".to_owned());
                return;
            }
            Phase::Backoff { until } | Phase::Dead { until } if now >= until => {
                self.set_phase(id, Phase::Idle);
                return;
            }
            _ => {}
        }
        if relay.phase != Phase::Open {
            return;
        }
        let (quiet_until, full_reconcile_at) = (relay.quiet_until, relay.full_reconcile_at);
        // A delayed job that is due waits for a slot from now on (slots free on inputs).
        let due = relay
            .jobs
            .values()
            .any(|j| j.not_before.is_some_and(|t| now >= t));
        if let Some(r) = due.then(|| self.relays.get_mut(&id)).flatten() {
            for job in r.jobs.values_mut() {
                if job.not_before.is_some_and(|t| now >= t) {
                    job.not_before = None;
                }
            }
        }
        if quiet_until.is_some_and(|t| now >= t) {
            if let Some(r) = self.relays.get_mut(&id) {
                r.quiet_until = None;
            }
        }
        if full_reconcile_at.is_some_and(|t| now >= t) {
            let timing = self.config.timing.clone();
            let next = now
                + self
                    .jitter
                    .between(timing.full_reconcile_min, timing.full_reconcile_max);
            if let Some(r) = self.relays.get_mut(&id) {
                r.nip77 = relay::Nip77::Unknown;
                r.full_reconcile_at = Some(next);
            }
            // Keys other relays left to it (a relay without NIP-77) are theirs again.
            self.relays.mark_all();
            self.schedule_session(id, Session::Full);
        }
        let timing = &self.config.timing;
        let expired: Vec<JobId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.jobs
                    .values()
                    .filter(|j| match &j.state {
                        JobState::Paging(p) => !p.parked && now >= r.overdue_at(p.deadline, timing),
                        JobState::Neg(n) => now >= r.neg_overdue_at(j, n, timing),
                        _ => false,
                    })
                    .map(|j| j.id)
                    .collect()
            })
            .unwrap_or_default();
        for job in expired {
            self.job_timed_out(id, job);
        }
        // A draining job whose outstanding events stopped settling is run again rather
        // than waited for (a lost answer must not stall a relay, or a one-shot sync).
        let stalled: Vec<JobId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.jobs
                    .values()
                    .filter(|j| {
                        matches!(j.state, JobState::Draining)
                            && j.drain_deadline.is_some_and(|t| now >= t)
                    })
                    .map(|j| j.id)
                    .collect()
            })
            .unwrap_or_default();
        for job_id in stalled {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.stats.stalled_jobs += 1;
                if let Some(job) = relay.jobs.get_mut(&job_id) {
                    job.lossy = true;
                    job.outstanding = 0;
                    job.drain_deadline = None;
                }
            }
            self.try_complete(id, job_id);
        }
        let timing = &self.config.timing;
        let fetches: Vec<SubId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.subs
                    .iter()
                    .filter(|(_, s)| {
                        matches!(s, Sub::Fetch(f) if now >= r.overdue_at(f.deadline, timing))
                    })
                    .map(|(sub, _)| sub.clone())
                    .collect()
            })
            .unwrap_or_default();
        for sub in fetches {
            self.end_fetch(id, sub.as_str(), false);
        }
    }
}
