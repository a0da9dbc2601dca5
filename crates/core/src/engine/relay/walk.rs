//! A job's walk at this relay: its pages (paginated REQ under `until`, parked while the
//! ingest queue has no room for one) and its NIP-77 run, opened on the local set; and
//! the `ids` fetches of what reconciliation found missing. What
//! spans jobs or relays (narrowing an overflowing second into new jobs, leases, the
//! verdicts other jobs wait for) is returned to the engine.

use std::collections::HashSet;

use nostr::prelude::EventId;

use super::{Fetch, Nip77, RelayState, Sub};
use crate::engine::job::{JobId, JobState, NegRun, Pager};
use crate::engine::sub_id::SubId;
use crate::engine::time::Time;
use crate::engine::Timing;
use crate::filters::ids_filters;
use crate::neg::{self, NegInitiator, NegItem};
use crate::wire::ClientFrame;

/// Room left in the ingest queue for what pages and fetches may bring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    /// Events the queue can still take, after what it holds and what is in flight.
    pub left: usize,
    /// The queue's bound.
    pub max_queue: usize,
}

impl Room {
    /// Whether a request for `wanted` events may go out: room for all of them, or for a
    /// quarter of the queue when they are more (so one large request does not wait for
    /// the queue to empty).
    pub fn takes(&self, wanted: usize) -> bool {
        self.left >= wanted.min((self.max_queue / 4).max(1))
    }
}

/// How asking for a job's page went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Paged {
    /// The page is asked for.
    Sent,
    /// No room for a page: parked until there is.
    Parked,
    /// A one-second job known to overflow a page: asking would bring the same page.
    /// Its halves are for the engine to add; the job itself has received all it will.
    Overflowed,
    /// Not a paging job (any more).
    NotPaging,
}

impl RelayState {
    /// A new subscription id at this relay.
    pub fn new_sub(&mut self) -> SubId {
        self.next_sub += 1;
        SubId::new(self.next_sub)
    }

    /// Starts paging a job (from its `paging_since`, when set) with its first page.
    pub fn start_paging(&mut self, job_id: JobId, now: Time, timing: &Timing, room: Room) -> Paged {
        let limit = self.limits.max_results;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Paged::NotPaging;
        };
        if job.narrow.is_some_and(|n| n.overflowed) {
            return Paged::Overflowed;
        }
        if let Some(from) = job.paging_since.take() {
            let since = job.filter.since.map_or(from, |s| s.max(from));
            job.filter = job.filter.clone().since(since);
        }
        let narrow = job.narrow;
        let sub = self.new_sub();
        let deadline = now + timing.eose_timeout;
        let pager = match narrow {
            Some(n) => Pager::one_second(sub, deadline, limit, n.cap),
            None => Pager::new(sub, deadline, limit),
        };
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.state = JobState::Paging(pager);
        }
        self.send_page(job_id, now, timing, room)
    }

    /// Asks for a paging job's next page — or parks the job when the ingest queue has
    /// no room for a page: a relay answering faster than we verify and store would
    /// otherwise fill it, and what is dropped there is downloaded again.
    pub fn send_page(&mut self, job_id: JobId, now: Time, timing: &Timing, room: Room) -> Paged {
        let limit = match self.jobs.get(&job_id).map(|j| &j.state) {
            Some(JobState::Paging(pager)) => pager.limit(),
            _ => return Paged::NotPaging,
        };
        if !room.takes(limit) {
            if let Some(JobState::Paging(pager)) = self.jobs.get_mut(&job_id).map(|j| &mut j.state)
            {
                pager.parked = true;
            }
            return Paged::Parked;
        }
        let sub = self.new_sub();
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Paged::NotPaging;
        };
        let JobState::Paging(pager) = &mut job.state else {
            return Paged::NotPaging;
        };
        pager.parked = false;
        pager.sub = sub.clone();
        pager.deadline = now + timing.eose_timeout;
        let filter = pager.page_filter(&job.filter);
        self.subs.insert(sub.clone(), Sub::Job(job_id));
        self.send(&ClientFrame::Req {
            subscription: sub.to_string(),
            filters: vec![filter],
        });
        Paged::Sent
    }

    /// Paging jobs parked between pages, with the page size each asks for.
    pub fn parked(&self) -> Vec<(JobId, usize)> {
        self.jobs
            .values()
            .filter_map(|j| match &j.state {
                JobState::Paging(p) if p.parked => Some((j.id, p.limit())),
                _ => None,
            })
            .collect()
    }

    /// Opens a job's NIP-77 run on its local set; false when no session could be built
    /// from it, or its NEG-OPEN (filter and first message) would exceed the relay's
    /// message size (the job is to be paged instead).
    pub fn open_neg(
        &mut self,
        job_id: JobId,
        items: impl IntoIterator<Item = NegItem>,
        deadline: Time,
    ) -> bool {
        let Some(filter) = self.jobs.get(&job_id).map(|j| j.filter.clone()) else {
            return false;
        };
        let frame_limit = neg::frame_limit(&self.limits, filter.as_json().len());
        let Ok((initiator, first)) = NegInitiator::new(items, frame_limit) else {
            return false;
        };
        let sub = self.new_sub();
        let open = ClientFrame::NegOpen {
            subscription: sub.to_string(),
            filter: Box::new(filter),
            message: first,
        }
        .to_json();
        if open.len() > self.limits.max_message_bytes {
            return false;
        }
        self.subs.insert(sub.clone(), Sub::Job(job_id));
        // Without a verdict on NIP-77 yet, this NEG-OPEN is the relay's probe.
        let probe = matches!(self.nip77, Nip77::Unknown | Nip77::Probing);
        if probe {
            self.nip77 = Nip77::Probing;
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.probe = probe;
            job.state = JobState::Neg(NegRun {
                sub: sub.clone(),
                initiator,
                deadline,
                answered: false,
            });
        }
        self.send_text(open, true);
        true
    }

    /// A job is no (candidate for the) probe any more; a probe whose NEG-OPEN went out
    /// but never spoke NIP-77 leaves the relay's NIP-77 state unknown.
    pub fn release_probe(&mut self, job_id: JobId) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.probe {
            job.probe = false;
            if self.nip77 == Nip77::Probing && matches!(job.state, JobState::Neg(_)) {
                self.nip77 = Nip77::Unknown;
            }
        }
    }

    /// Whether the relay's NIP-77 probe is out: a NEG-OPEN not answered with a verdict.
    pub fn probe_out(&self) -> bool {
        self.nip77 == Nip77::Probing
            && self
                .jobs
                .values()
                .any(|j| j.probe && matches!(j.state, JobState::Neg(_)))
    }

    /// NIP-77 is over for this job, without a verdict on the relay from it: its
    /// subscription is dropped (the relay ended it, or was told), and a probe that ends
    /// here leaves the next job to probe again.
    pub fn leave_neg(&mut self, job_id: JobId) {
        if let Some(sub) = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.state.subscription())
            .cloned()
        {
            self.subs.remove(&sub);
        }
        self.release_probe(job_id);
    }

    /// How many queued ids an `ids` REQ would ask for now, if one may open: at most
    /// `per_relay` at a time, and while a subscription may open.
    pub fn fetch_wanted(&self, now: Time, per_relay: usize) -> Option<usize> {
        let in_flight = self
            .subs
            .values()
            .filter(|s| matches!(s, Sub::Fetch(_)))
            .count();
        let may = !self.fetch_queue.is_empty() && in_flight < per_relay && self.may_subscribe(now);
        may.then(|| self.limits.max_results.min(self.fetch_queue.len()))
    }

    /// Sends the first `take` queued ids as an `ids` REQ, answered by `deadline`; how
    /// many it asks for.
    pub fn start_fetch(&mut self, take: usize, deadline: Time) -> usize {
        let ids: Vec<EventId> = self
            .fetch_queue
            .drain(..take.min(self.fetch_queue.len()))
            .collect();
        let Some(filter) = ids_filters(&ids, &self.limits).into_iter().next() else {
            return 0;
        };
        let asked = ids.len();
        let sub = self.new_sub();
        self.subs.insert(
            sub.clone(),
            Sub::Fetch(Box::new(Fetch {
                filter: filter.clone(),
                ids,
                deadline,
                delivered: HashSet::new(),
            })),
        );
        self.send(&ClientFrame::Req {
            subscription: sub.into(),
            filters: vec![filter],
        });
        asked
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::{Filter, Kind, Timestamp};

    use super::*;
    use crate::engine::job::{Job, Narrow};
    use crate::engine::Phase;
    use crate::relay_url::RelayUrl;

    const NOW: Time = Time::from_secs(100);

    fn open_relay_with(job: Job) -> RelayState {
        let url = RelayUrl::parse("wss://relay.example.com").expect("url");
        let mut relay = RelayState::new(url, false);
        relay.phase = Phase::Open;
        relay.jobs.insert(job.id, job);
        relay
    }

    fn room(left: usize) -> Room {
        Room {
            left,
            max_queue: 4_000,
        }
    }

    /// A walk from a checkpoint asks from there; without room for a page it waits,
    /// parked, and asks nothing until there is.
    #[test]
    fn a_page_waits_for_room_and_starts_from_the_checkpoint() {
        let filter = Filter::new().kind(Kind::from(1621));
        let since = Timestamp::from(1_700_000_000);
        let mut relay = open_relay_with(Job::new(JobId(1), Vec::new(), filter, NOW, Some(since)));
        let timing = Timing::default();
        assert_eq!(
            relay.start_paging(JobId(1), NOW, &timing, room(0)),
            Paged::Parked
        );
        assert!(relay.outbox.is_empty() && relay.subs.is_empty());
        assert_eq!(relay.parked(), vec![(JobId(1), 500)]);
        assert_eq!(relay.jobs[&JobId(1)].filter.since, Some(since));
        assert_eq!(
            relay.send_page(JobId(1), NOW, &timing, room(500)),
            Paged::Sent
        );
        assert!(relay.parked().is_empty());
        assert_eq!(relay.subs.len(), 1);
        let [req] = relay.outbox.as_slice() else {
            panic!("one REQ: {:?}", relay.outbox);
        };
        let open = relay
            .subs
            .keys()
            .next()
            .map(SubId::as_str)
            .unwrap_or_default();
        assert!(req.starts_with(&format!(r#"["REQ","{open}""#)), "{req}");
        assert!(
            req.contains(r#""since":1700000000"#) && req.contains(r#""limit":500"#),
            "{req}"
        );
    }

    /// A second known to overflow a page is not asked for again.
    #[test]
    fn an_overflowing_second_is_not_asked_again() {
        let mut job = Job::new(JobId(1), Vec::new(), Filter::new(), NOW, None);
        job.narrow = Some(Narrow {
            second: Timestamp::from(5),
            cap: 500,
            overflowed: true,
        });
        let mut relay = open_relay_with(job);
        let paged = relay.start_paging(JobId(1), NOW, &Timing::default(), room(4_000));
        assert_eq!(paged, Paged::Overflowed);
        assert!(relay.outbox.is_empty() && relay.subs.is_empty());
    }

    /// `ids` fetches take at most what is asked from the queue, one subscription each,
    /// up to the number allowed at once.
    #[test]
    fn ids_fetches_open_up_to_the_number_allowed() {
        let mut relay = open_relay_with(Job::new(JobId(1), Vec::new(), Filter::new(), NOW, None));
        relay.jobs.clear();
        let ids = (1..=3).map(|n| EventId::from_byte_array([n; 32]));
        relay.fetch_queue.extend(ids);
        assert_eq!(relay.fetch_wanted(NOW, 1), Some(3));
        assert_eq!(relay.start_fetch(2, NOW), 2);
        assert_eq!(relay.fetch_queue.len(), 1);
        assert_eq!(relay.fetch_wanted(NOW, 1), None, "one in flight already");
        assert_eq!(relay.fetch_wanted(NOW, 2), Some(1));
        assert_eq!(relay.outbox.len(), 1);
    }
}
