//! Who fetches which id by `ids`, across relays: one relay owns each fetch (with the job
//! that needs it there), other relays' jobs that need the same id wait for it, a fetch is
//! retried once at its owner, and when the owner goes or gives up a live waiter takes
//! over. The fetch module decides when; this keeps the owners, and every change that
//! ends a fetch hands back the jobs that stop waiting.

use std::collections::HashMap;

use nostr::prelude::EventId;

use super::job::JobId;
use crate::items::RelayId;

/// A relay's job.
pub(super) type RelayJob = (RelayId, JobId);

/// The relay fetching an id, the job waiting for it there, and other relays' jobs
/// waiting too.
pub(super) struct FetchOwner {
    pub(super) relay: RelayId,
    pub(super) job: Option<JobId>,
    pub(super) waiters: Vec<RelayJob>,
    /// Already asked again once: the next failure gives up at this relay.
    pub(super) retried: bool,
}

/// What asking for an id did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// The asking relay fetches it now (its job, if any, waits for it).
    Owns,
    /// Another relay fetches it; the asking job waits for that.
    Waits,
    /// Already asked: nothing changes.
    Known,
}

/// What a failed fetch of an id leads to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Ask the owner once more.
    Again(RelayId),
    /// The owner failed twice: its relay, its job, and whether other relays wait.
    Exhausted {
        relay: RelayId,
        job: Option<JobId>,
        waiting: bool,
    },
}

/// The fetches in flight or queued, by id.
#[derive(Default)]
pub(super) struct FetchTable {
    owners: HashMap<EventId, FetchOwner>,
}

impl FetchTable {
    /// Whether `id` is being fetched.
    pub(super) fn contains(&self, id: &EventId) -> bool {
        self.owners.contains_key(id)
    }

    /// Who fetches `id`.
    pub(super) fn owner(&self, id: &EventId) -> Option<&FetchOwner> {
        self.owners.get(id)
    }

    /// `relay` (for `job`) needs `id`.
    pub(super) fn claim(&mut self, id: EventId, relay: RelayId, job: Option<JobId>) -> Claim {
        if let Some(owner) = self.owners.get_mut(&id) {
            return match job {
                Some(job) if owner.relay != relay => {
                    owner.waiters.push((relay, job));
                    Claim::Waits
                }
                _ => Claim::Known,
            };
        }
        self.owners.insert(
            id,
            FetchOwner {
                relay,
                job,
                waiters: Vec::new(),
                retried: false,
            },
        );
        Claim::Owns
    }

    /// A fetched copy of `id` failed (forged, or not stored): what to do, if it is
    /// being fetched.
    pub(super) fn retry(&mut self, id: &EventId) -> Option<Retry> {
        let owner = self.owners.get_mut(id)?;
        if owner.retried {
            return Some(Retry::Exhausted {
                relay: owner.relay,
                job: owner.job,
                waiting: !owner.waiters.is_empty(),
            });
        }
        owner.retried = true;
        Some(Retry::Again(owner.relay))
    }

    /// The fetch of `id` is over: every job that waited for it (the owner's first).
    pub(super) fn resolve(&mut self, id: &EventId) -> Vec<RelayJob> {
        let Some(owner) = self.owners.remove(id) else {
            return Vec::new();
        };
        owner
            .job
            .map(|job| (owner.relay, job))
            .into_iter()
            .chain(owner.waiters)
            .collect()
    }

    /// The owner of `id` is gone or gave up: the first waiter `alive` accepts owns it
    /// now (its relay returned: it queues the fetch); with none, the fetch is over.
    pub(super) fn hand_over(
        &mut self,
        id: EventId,
        alive: impl Fn(&RelayJob) -> bool,
    ) -> Option<RelayId> {
        let owner = self.owners.remove(&id)?;
        let mut waiters: Vec<RelayJob> = owner.waiters.into_iter().filter(alive).collect();
        if waiters.is_empty() {
            return None;
        }
        let (relay, job) = waiters.remove(0);
        self.owners.insert(
            id,
            FetchOwner {
                relay,
                job: Some(job),
                waiters,
                retried: false,
            },
        );
        Some(relay)
    }

    /// The ids `relay` fetches.
    pub(super) fn owned_by(&self, relay: RelayId) -> Vec<EventId> {
        self.owners
            .iter()
            .filter(|(_, owner)| owner.relay == relay)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The (relay, job) of every fetch's owner and waiter (for the debug checks of what
    /// each job is owed).
    #[cfg(debug_assertions)]
    pub(super) fn owed(&self) -> impl Iterator<Item = (RelayId, Option<JobId>)> + '_ {
        self.owners.values().flat_map(Self::owed_by)
    }

    /// The jobs a copy of `id` settles once stored: the owner's and the waiters'.
    pub(super) fn jobs_for(&self, id: &EventId) -> impl Iterator<Item = RelayJob> + '_ {
        self.owners
            .get(id)
            .into_iter()
            .flat_map(Self::owed_by)
            .filter_map(|(relay, job)| job.map(|job| (relay, job)))
    }

    fn owed_by(f: &FetchOwner) -> impl Iterator<Item = (RelayId, Option<JobId>)> + '_ {
        std::iter::once((f.relay, f.job)).chain(f.waiters.iter().map(|(r, j)| (*r, Some(*j))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::Names;
    use crate::relay_url::RelayUrl;

    fn relays() -> (RelayId, RelayId, RelayId) {
        let mut names = Names::default();
        let mut relay = |host: &str| {
            let url = RelayUrl::parse(&format!("wss://{host}.example.com")).expect("a url");
            names.intern_relay(&url)
        };
        (relay("a"), relay("b"), relay("c"))
    }

    fn id(n: u8) -> EventId {
        EventId::from_byte_array([n; 32])
    }

    /// The first relay to ask fetches; another relay's job waits; the owner asking again
    /// or a job-less ask changes nothing; resolving ends every wait, the owner's first.
    #[test]
    fn one_owner_and_its_waiters() {
        let (a, b, c) = relays();
        let mut t = FetchTable::default();
        assert_eq!(t.claim(id(1), a, Some(JobId(1))), Claim::Owns);
        assert_eq!(t.claim(id(1), b, Some(JobId(2))), Claim::Waits);
        assert_eq!(t.claim(id(1), a, Some(JobId(3))), Claim::Known);
        assert_eq!(t.claim(id(1), c, None), Claim::Known);
        assert_eq!(t.owned_by(a), vec![id(1)]);
        assert_eq!(t.resolve(&id(1)), vec![(a, JobId(1)), (b, JobId(2))]);
        assert!(!t.contains(&id(1)));
        assert!(t.resolve(&id(1)).is_empty(), "over once");
    }

    /// A failed copy is asked again once at its owner, then the owner is exhausted; a
    /// hand-over skips dead waiters and starts the retries afresh.
    #[test]
    fn retried_once_then_handed_over() {
        let (a, b, c) = relays();
        let mut t = FetchTable::default();
        t.claim(id(1), a, Some(JobId(1)));
        t.claim(id(1), b, Some(JobId(2)));
        t.claim(id(1), c, Some(JobId(3)));
        assert_eq!(t.retry(&id(1)), Some(Retry::Again(a)));
        let exhausted = Retry::Exhausted {
            relay: a,
            job: Some(JobId(1)),
            waiting: true,
        };
        assert_eq!(t.retry(&id(1)), Some(exhausted));
        assert_eq!(t.hand_over(id(1), |(r, _)| *r != b), Some(c));
        assert_eq!(
            t.retry(&id(1)),
            Some(Retry::Again(c)),
            "the new owner's first"
        );
        assert_eq!(t.hand_over(id(1), |_| false), None, "no one left");
        assert!(!t.contains(&id(1)) && t.retry(&id(1)).is_none());
    }
}
