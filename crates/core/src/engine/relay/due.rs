//! A relay's deadlines: when each answer it owes is overdue, its earliest deadline, and
//! what passed at a given time ([`Due`]). What concerns only this relay is done as it is
//! found (a delay or a quiet period over, a stalled job marked); the rest is returned.

use super::{Phase, RelayState, Sub};
use crate::engine::job::{Job, JobId, JobState, NegRun};
use crate::engine::jobs::Session;
use crate::engine::sub_id::SubId;
use crate::engine::time::{Jitter, Time};
use crate::engine::Timing;

/// What passed at a relay, for the engine to act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// The connection attempt failed by its deadline.
    pub connect_timed_out: bool,
    /// A backoff (or a dead relay's wait) is over: it may connect again.
    pub retry: bool,
    /// The wait for the NIP-11 document is over: this session starts without it.
    pub waiting_session: Option<Session>,
    /// The daily full reconciliation is due (the next one is scheduled already).
    pub full_reconcile: bool,
    /// Jobs whose page or NIP-77 answer is overdue.
    pub overdue_jobs: Vec<JobId>,
    /// Draining jobs whose outstanding events stopped settling: marked lossy with
    /// nothing outstanding, to complete (and so run again) rather than wait forever.
    pub stalled_jobs: Vec<JobId>,
    /// `ids` fetches whose answer is overdue.
    pub overdue_fetches: Vec<SubId>,
    /// The jobs given up on are to be planned again.
    pub retry_abandoned: bool,
}

impl RelayState {
    /// When an answer owed by this relay by `deadline` is overdue: later while the
    /// relay is still sending (it went silent for less than `eose_timeout`), by at most
    /// `busy_link_grace`.
    pub fn overdue_at(&self, deadline: Time, timing: &Timing) -> Time {
        self.last_frame_at.map_or(deadline, |last| {
            let busy_until = last + timing.eose_timeout;
            deadline.max(busy_until.min(deadline + timing.busy_link_grace))
        })
    }

    /// When a NIP-77 run is overdue: a probe (is NIP-77 supported?) not answered yet at
    /// its own short deadline, busy link or not — its silence is the answer.
    pub fn neg_overdue_at(&self, job: &Job, run: &NegRun, timing: &Timing) -> Time {
        if job.probe && !run.answered {
            run.deadline
        } else {
            self.overdue_at(run.deadline, timing)
        }
    }

    /// When the live interval lets the next update go: `interval` after the last send,
    /// but at once (when its first new item came) for the first update after the
    /// session's whole set.
    pub fn live_interval_ends(&self, interval: std::time::Duration) -> Option<Time> {
        if self.live_set_fresh {
            self.live_new_since
        } else {
            self.live_sent_at.map(|t| t + interval)
        }
    }

    /// The earliest deadline of this relay. Every deadline is consumed by
    /// `handle_timeout` once due, so a past one fires once.
    pub fn next_deadline(&self, timing: &Timing) -> Option<Time> {
        // A live update waits for the interval (none for the first after a session's
        // whole set), or its hold, and for any quiet period; none goes out while the
        // session waits for the NIP-11 document.
        let live = (!self.live_new.is_empty() && self.waiting_session.is_none())
            .then(|| {
                self.live_held_until
                    .or(self.live_interval_ends(timing.live_update_interval))
            })
            .flatten()
            .map(|t| self.quiet_until.map_or(t, |q| t.max(q)));
        let phase = match self.phase {
            Phase::Connecting { deadline } => Some(deadline),
            Phase::Backoff { until } | Phase::Dead { until } => Some(until),
            Phase::Open | Phase::Idle => None,
        };
        let mut deadlines: Vec<Time> = phase.into_iter().collect();
        if self.phase == Phase::Open {
            deadlines.extend(self.jobs.values().filter_map(|j| match &j.state {
                JobState::Paging(p) if !p.parked => Some(self.overdue_at(p.deadline, timing)),
                JobState::Neg(n) => Some(self.neg_overdue_at(j, n, timing)),
                JobState::Queued => j.not_before,
                JobState::Draining => j.drain_deadline,
                _ => None,
            }));
            deadlines.extend(self.subs.values().filter_map(|s| match s {
                Sub::Fetch(f) => Some(self.overdue_at(f.deadline, timing)),
                _ => None,
            }));
            deadlines.extend(live);
            deadlines.extend(self.info_due.filter(|_| self.waiting_session.is_some()));
            deadlines.extend(self.quiet_until);
            deadlines.extend(self.full_reconcile_at);
            deadlines.extend(self.abandoned.retry_at);
        }
        deadlines.into_iter().min()
    }

    /// What passed at `now`; `jitter` spreads the next full reconciliation.
    pub fn take_due(&mut self, now: Time, timing: &Timing, jitter: &mut Jitter) -> Due {
        let mut due = Due::default();
        match self.phase {
            Phase::Connecting { deadline } if now >= deadline => {
                due.connect_timed_out = true;
                return due;
            }
            Phase::Backoff { until } | Phase::Dead { until } if now >= until => {
                due.retry = true;
                return due;
            }
            Phase::Open => {}
            _ => return due,
        }
        if self.info_due.is_some_and(|t| now >= t) {
            self.info_due = None;
            due.waiting_session = self.waiting_session.take();
        }
        // A delayed job that is due waits for a slot from now on (slots free on inputs).
        for job in self.jobs.values_mut() {
            if job.not_before.is_some_and(|t| now >= t) {
                job.not_before = None;
            }
        }
        if self.quiet_until.is_some_and(|t| now >= t) {
            self.quiet_until = None;
        }
        if self.abandoned.retry_at.is_some_and(|t| now >= t) {
            self.abandoned.retry_at = None;
            due.retry_abandoned = true;
        }
        if self.full_reconcile_at.is_some_and(|t| now >= t) {
            self.nip77 = super::Nip77::Unknown;
            let wait = jitter.between(timing.full_reconcile_min, timing.full_reconcile_max);
            self.full_reconcile_at = Some(now + wait);
            self.full_started_at = Some(now);
            due.full_reconcile = true;
        }
        due.overdue_jobs = self
            .jobs
            .values()
            .filter(|j| match &j.state {
                JobState::Paging(p) => !p.parked && now >= self.overdue_at(p.deadline, timing),
                JobState::Neg(n) => now >= self.neg_overdue_at(j, n, timing),
                _ => false,
            })
            .map(|j| j.id)
            .collect();
        for job in self.jobs.values_mut() {
            let stalled = matches!(job.state, JobState::Draining)
                && job.drain_deadline.is_some_and(|t| now >= t);
            if stalled {
                self.stats.stalled_jobs += 1;
                job.lossy = true;
                job.outstanding = 0;
                job.drain_deadline = None;
                due.stalled_jobs.push(job.id);
            }
        }
        due.overdue_fetches = self
            .subs
            .iter()
            .filter(
                |(_, s)| matches!(s, Sub::Fetch(f) if now >= self.overdue_at(f.deadline, timing)),
            )
            .map(|(sub, _)| sub.clone())
            .collect();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay_url::RelayUrl;
    use std::time::Duration;

    #[test]
    fn an_answer_is_overdue_later_while_the_relay_sends_but_never_past_the_grace() {
        let timing = Timing::default();
        let url = RelayUrl::parse("wss://relay.example.com").expect("url");
        let mut relay = RelayState::new(url, false);
        let deadline = Time::from_secs(1_000);
        assert_eq!(
            relay.overdue_at(deadline, &timing),
            deadline,
            "no frame yet"
        );
        relay.last_frame_at = Some(Time::from_secs(990));
        assert_eq!(
            relay.overdue_at(deadline, &timing),
            Time::from_secs(990) + timing.eose_timeout,
            "a frame just before the deadline: the relay is still sending"
        );
        relay.last_frame_at = Some(Time::from_secs(900));
        assert_eq!(
            relay.overdue_at(deadline, &timing),
            deadline,
            "silent for longer than eose_timeout at the deadline"
        );
        relay.last_frame_at = Some(deadline + Duration::from_secs(3_600));
        assert_eq!(
            relay.overdue_at(deadline, &timing),
            deadline + timing.busy_link_grace,
            "a relay that keeps sending other frames gains at most the grace"
        );
    }

    /// What passed is reported once, and what concerns only the relay is done: an
    /// overdue page, a stalled draining job (marked to run again), a delay over; a
    /// relay still connecting reports only its own timeout.
    #[test]
    fn what_passed_is_reported_and_the_relays_own_part_done() {
        use crate::engine::job::Pager;
        use nostr::prelude::Filter;

        let timing = Timing::default();
        let mut jitter = Jitter::new(1);
        let url = RelayUrl::parse("wss://relay.example.com").expect("url");
        let mut relay = RelayState::new(url, false);
        let now = Time::from_secs(1_000);
        let add = |relay: &mut RelayState, n: u64, state: JobState| {
            let mut job = Job::new(JobId(n), Vec::new(), Filter::new(), now, None);
            job.state = state;
            relay.jobs.insert(job.id, job);
        };
        let page = Pager::new(SubId::new(1), now - timing.eose_timeout, 10);
        add(&mut relay, 1, JobState::Paging(page));
        add(&mut relay, 2, JobState::Draining);
        add(&mut relay, 3, JobState::Queued);
        if let Some(job) = relay.jobs.get_mut(&JobId(2)) {
            job.outstanding = 5;
            job.drain_deadline = Some(now);
        }
        if let Some(job) = relay.jobs.get_mut(&JobId(3)) {
            job.not_before = Some(now);
        }
        relay.phase = Phase::Connecting { deadline: now };
        let due = relay.take_due(now, &timing, &mut jitter);
        assert_eq!(
            due,
            Due {
                connect_timed_out: true,
                ..Due::default()
            }
        );
        relay.phase = Phase::Open;
        let due = relay.take_due(now, &timing, &mut jitter);
        assert_eq!(due.overdue_jobs, vec![JobId(1)]);
        assert_eq!(due.stalled_jobs, vec![JobId(2)]);
        let stalled = &relay.jobs[&JobId(2)];
        assert!(stalled.lossy && stalled.outstanding == 0 && stalled.drain_deadline.is_none());
        assert_eq!(relay.stats.stalled_jobs, 1);
        assert_eq!(relay.jobs[&JobId(3)].not_before, None, "its delay is over");
        let again = relay.take_due(now, &timing, &mut jitter);
        assert!(again.stalled_jobs.is_empty(), "reported once");
    }
}
