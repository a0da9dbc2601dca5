//! The work keys across relays: how many jobs each relay holds for a key and since when
//! (a key is confirmed at a relay when its last job there completes), which relay's
//! running jobs lease a key (other relays' jobs for it wait, then reconcile against what
//! it stored), and which relays wait for a key to be free.
//!
//! Every change that frees a key hands back the relays waiting for it; the engine drives
//! them again. The table knows nothing else of relays or jobs.

use std::collections::{BTreeSet, HashMap};

use super::time::Time;
use crate::items::{RelayId, WorkKey};

/// Relays to drive again because a key they waited for is free.
pub(super) type Woken = BTreeSet<RelayId>;

/// Jobs per (relay, key), leases per key, and the relays waiting for keys.
#[derive(Default)]
pub(super) struct KeyTable {
    /// Per (relay, key): the relay's jobs holding the key, and the earliest start among
    /// them (what the key's checkpoint confirms).
    jobs: HashMap<(RelayId, WorkKey), (u32, Time)>,
    /// Per key: the relay whose running jobs lease it, and how many of them.
    leases: HashMap<WorkKey, (RelayId, u32)>,
    /// Per key: relays with a queued job waiting for it.
    waiters: HashMap<WorkKey, BTreeSet<RelayId>>,
}

impl KeyTable {
    /// A job for `keys` was added at `relay` at `now`.
    pub(super) fn add_job(&mut self, relay: RelayId, keys: &[WorkKey], now: Time) {
        for key in keys {
            let entry = self.jobs.entry((relay, *key)).or_insert((0, now));
            entry.0 += 1;
            entry.1 = entry.1.min(now);
        }
    }

    /// A job holding `key` at `relay` completed: when it was the relay's last for the
    /// key, when the first of them started, and the relays woken.
    pub(super) fn complete(&mut self, relay: RelayId, key: WorkKey) -> Option<(Time, Woken)> {
        let entry = self.jobs.get_mut(&(relay, key))?;
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 > 0 {
            return None;
        }
        let since = entry.1;
        self.jobs.remove(&(relay, key));
        Some((since, self.wake(key)))
    }

    /// When `relay` holds one job for `key`: the start its completion would confirm.
    pub(super) fn sole_job_since(&self, relay: RelayId, key: WorkKey) -> Option<Time> {
        self.jobs
            .get(&(relay, key))
            .and_then(|(count, since)| (*count == 1).then_some(*since))
    }

    /// A job holding `key` at `relay` was abandoned: the relay's count for the key goes
    /// (a job left for it must not confirm it); the relays woken.
    pub(super) fn abandon(&mut self, relay: RelayId, key: WorkKey) -> Woken {
        self.jobs.remove(&(relay, key));
        self.wake(key)
    }

    /// Whether `relay` has a job (queued or running) for `key`.
    fn has_job(&self, relay: RelayId, key: WorkKey) -> bool {
        self.jobs.contains_key(&(relay, key))
    }

    /// The first of `keys` one of `relays` has a job (queued or running) for.
    pub(super) fn job_among(&self, relays: &[RelayId], keys: &[WorkKey]) -> Option<WorkKey> {
        if relays.is_empty() {
            return None;
        }
        keys.iter()
            .copied()
            .find(|key| relays.iter().any(|relay| self.has_job(*relay, *key)))
    }

    /// A job at `relay` started: it leases `keys` (those another relay leases stay that
    /// relay's; the job was started knowing it).
    pub(super) fn lease(&mut self, relay: RelayId, keys: &[WorkKey]) {
        for key in keys {
            let holder = self.leases.entry(*key).or_insert((relay, 0));
            if holder.0 == relay {
                holder.1 += 1;
            }
        }
    }

    /// A leasing job at `relay` stopped: keys no other job of the relay leases are free;
    /// the relays woken.
    pub(super) fn release(&mut self, relay: RelayId, keys: &[WorkKey]) -> Woken {
        let mut woken = Woken::new();
        for key in keys {
            let Some(holder) = self.leases.get_mut(key) else {
                continue;
            };
            if holder.0 != relay {
                continue;
            }
            holder.1 = holder.1.saturating_sub(1);
            if holder.1 == 0 {
                self.leases.remove(key);
                woken.extend(self.wake(*key));
            }
        }
        woken
    }

    /// The first of `keys` another relay's running jobs lease.
    pub(super) fn leased_elsewhere(&self, relay: RelayId, keys: &[WorkKey]) -> Option<WorkKey> {
        keys.iter()
            .copied()
            .find(|key| self.leases.get(key).is_some_and(|(r, _)| *r != relay))
    }

    /// `relay` waits for `key` to be free.
    pub(super) fn wait(&mut self, key: WorkKey, relay: RelayId) {
        self.waiters.entry(key).or_default().insert(relay);
    }

    /// `relay`'s jobs are gone: its counts and leases go; the relays woken.
    pub(super) fn forget(&mut self, relay: RelayId) -> Woken {
        let mut freed = Vec::new();
        self.jobs.retain(|(r, key), _| {
            let keep = *r != relay;
            if !keep {
                freed.push(*key);
            }
            keep
        });
        self.leases.retain(|key, (r, _)| {
            let keep = *r != relay;
            if !keep {
                freed.push(*key);
            }
            keep
        });
        freed.into_iter().flat_map(|key| self.wake(key)).collect()
    }

    /// The relays waiting for `key` (no longer waiting).
    fn wake(&mut self, key: WorkKey) -> Woken {
        self.waiters.remove(&key).unwrap_or_default()
    }

    /// Every (relay, key) with its count of jobs (for the debug checks).
    #[cfg(debug_assertions)]
    pub(super) fn job_counts(&self) -> impl Iterator<Item = (RelayId, WorkKey, u32)> + '_ {
        self.jobs.iter().map(|((r, k), (n, _))| (*r, *k, *n))
    }

    /// Every leased key with its holder and count (for the debug checks).
    #[cfg(debug_assertions)]
    pub(super) fn leases(&self) -> impl Iterator<Item = (WorkKey, RelayId, u32)> + '_ {
        self.leases.iter().map(|(k, (r, n))| (*k, *r, *n))
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::EventId;

    use super::*;
    use crate::items::{Layer, Names};
    use crate::relay_url::RelayUrl;

    /// Two relays and a key maker.
    fn setup() -> (RelayId, RelayId, impl FnMut(u8) -> WorkKey) {
        let mut names = Names::default();
        let mut relay = |host: &str| {
            let url = RelayUrl::parse(&format!("wss://{host}.example.com")).expect("a url");
            names.intern_relay(&url)
        };
        let (a, b) = (relay("a"), relay("b"));
        let key = move |n: u8| WorkKey {
            layer: Layer::RootTags,
            item: names.intern_root(EventId::from_byte_array([n; 32])),
        };
        (a, b, key)
    }

    /// a key is confirmed with its first job's start once its last job completes, and
    /// that wakes who waited for it.
    #[test]
    fn the_last_job_confirms_from_the_first_start() {
        let (a, b, mut key) = setup();
        let mut t = KeyTable::default();
        t.add_job(a, &[key(1)], Time::from_secs(10));
        t.add_job(a, &[key(1)], Time::from_secs(5));
        t.wait(key(1), b);
        assert!(t.has_job(a, key(1)));
        assert_eq!(t.job_among(&[b, a], &[key(2), key(1)]), Some(key(1)));
        assert_eq!(t.job_among(&[b], &[key(1)]), None);
        assert_eq!(t.complete(a, key(1)), None, "a job still holds it");
        let (since, woken) = t.complete(a, key(1)).expect("the last job");
        assert_eq!(since, Time::from_secs(5));
        assert_eq!(woken, Woken::from([b]));
        assert!(!t.has_job(a, key(1)));
    }

    /// a lease is the holder's until its last leasing job stops; another relay's lease
    /// of the same key does not count towards it.
    #[test]
    fn leases_free_with_their_last_job() {
        let (a, b, mut key) = setup();
        let mut t = KeyTable::default();
        t.lease(a, &[key(1), key(2)]);
        t.lease(a, &[key(1)]);
        t.lease(b, &[key(1), key(3)]);
        assert_eq!(t.leased_elsewhere(b, &[key(3), key(1)]), Some(key(1)));
        assert_eq!(t.leased_elsewhere(a, &[key(1), key(2)]), None);
        t.wait(key(1), b);
        assert!(t.release(a, &[key(1)]).is_empty(), "one leasing job left");
        assert!(t.release(b, &[key(1)]).is_empty(), "not b's lease");
        assert_eq!(t.release(a, &[key(1), key(2)]), Woken::from([b]));
        assert_eq!(t.leased_elsewhere(b, &[key(1), key(2)]), None);
        assert_eq!(t.leased_elsewhere(a, &[key(3)]), Some(key(3)));
    }

    /// a relay that goes takes its counts and leases with it, waking who waited; an
    /// abandoned job drops its relay's count for the key outright.
    #[test]
    fn forgetting_and_abandoning_free_keys() {
        let (a, b, mut key) = setup();
        let mut t = KeyTable::default();
        t.add_job(a, &[key(1), key(2)], Time::from_secs(1));
        t.add_job(a, &[key(2)], Time::from_secs(1));
        t.lease(a, &[key(1)]);
        t.wait(key(1), b);
        assert_eq!(t.abandon(a, key(2)), Woken::new());
        assert!(!t.has_job(a, key(2)), "both jobs' count gone");
        assert_eq!(t.forget(a), Woken::from([b]));
        assert!(!t.has_job(a, key(1)));
        assert_eq!(t.leased_elsewhere(b, &[key(1)]), None);
    }
}
