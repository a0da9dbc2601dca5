//! Debug builds only: the counters the engine keeps by hand for speed, recomputed from
//! what they count after every input, so a drift fails a test where it happens instead
//! of stalling a relay later.

use std::collections::HashMap;

use super::job::JobId;
use super::SyncEngine;
use crate::items::{RelayId, WorkKey};

impl SyncEngine {
    /// Panics when a hand-kept counter disagrees with what it counts: the key leases,
    /// the jobs per key, the ids in the ingest pipeline, and each job's outstanding
    /// events.
    pub(super) fn check_invariants(&self) {
        let holding = self.holding();
        self.check_leases(&holding);
        self.check_key_jobs(&holding);
        self.pipeline.check();
        self.check_outstanding();
    }

    /// Per (relay, key): the relay's jobs holding the key, and those of them leased.
    fn holding(&self) -> HashMap<(RelayId, WorkKey), (usize, usize)> {
        let mut holding: HashMap<(RelayId, WorkKey), (usize, usize)> = HashMap::new();
        for (id, relay) in self.relays.iter() {
            for job in relay.jobs.values() {
                for key in &job.keys {
                    let entry = holding.entry((*id, *key)).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 += usize::from(job.leased);
                }
            }
        }
        holding
    }

    /// A key's lease counts its holder's leased (running) jobs holding the key.
    fn check_leases(&self, holding: &HashMap<(RelayId, WorkKey), (usize, usize)>) {
        for (key, relay, count) in self.keys.leases() {
            let holding = holding.get(&(relay, key)).map_or(0, |h| h.1);
            assert!(count >= 1, "lease of {key:?} at {relay:?} counts no job");
            assert_eq!(
                count as usize, holding,
                "lease of {key:?} at {relay:?} drifted from its leased jobs"
            );
        }
    }

    /// A relay's count of jobs for a key is at least one and at most the jobs holding it
    /// (an abandoned job drops the entry, so a job left for the key does not confirm it).
    fn check_key_jobs(&self, holding: &HashMap<(RelayId, WorkKey), (usize, usize)>) {
        for (relay, key, count) in self.keys.job_counts() {
            let holding = holding.get(&(relay, key)).map_or(0, |h| h.0);
            assert!(
                count >= 1 && count as usize <= holding,
                "jobs for {key:?} at {relay:?}: counted {count}, {holding} hold it"
            );
        }
    }

    /// A job's outstanding count is what it is owed: its events in the pipeline and the
    /// fetches it owns or waits for — at most that once a stalled job was reset.
    fn check_outstanding(&self) {
        let mut owed: HashMap<(RelayId, JobId), usize> = HashMap::new();
        for (relay, job) in self.pipeline.owed().chain(self.fetches.owed()) {
            if let Some(job) = job {
                *owed.entry((relay, job)).or_insert(0) += 1;
            }
        }
        for (id, relay) in self.relays.iter() {
            for job in relay.jobs.values() {
                let owed = owed.get(&(*id, job.id)).copied().unwrap_or(0);
                if relay.stats.stalled_jobs == 0 {
                    assert_eq!(
                        job.outstanding, owed,
                        "job {:?} at {id:?}: outstanding drifted from what it is owed",
                        job.id
                    );
                } else {
                    assert!(
                        job.outstanding <= owed,
                        "job {:?} at {id:?}: outstanding {} over the {owed} it is owed",
                        job.id,
                        job.outstanding
                    );
                }
            }
        }
    }
}
