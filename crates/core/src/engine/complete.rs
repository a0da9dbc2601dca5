//! Completing historic jobs: a job that received everything drains until its events
//! are stored, then confirms its keys and checkpoints them — in the store write that
//! completes it where that can be known when the write is handed out (see
//! [`SyncEngine::carried_checkpoints`]), otherwise right after.

use std::collections::{BTreeMap, HashMap, HashSet};

use nostr::prelude::{EventId, Timestamp};

use super::fetch_table::FetchTable;
use super::job::{Job, JobId, JobState};
use super::pipeline::Storing;
use super::relay;
use super::{Checkpoint, Output, Scope, SyncEngine};
use crate::items::{RelayId, WorkKey};
use crate::relay_url::RelayUrl;

/// Most entries of store batches in flight walked in one step of the loop to see whether
/// checkpoints can ride in the batches it hands out (each costs a few lookups; one step
/// may hand out dozens of batches).
const STORING_WALK_PER_STEP: usize = 2048;

impl SyncEngine {
    /// The job will receive nothing more; it completes once its events are stored.
    pub(super) fn job_received_all(&mut self, id: RelayId, job_id: JobId) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        if matches!(job.state, JobState::Paging(_)) {
            // A relay that speaks NIP-77 still pages what we hold nothing of: it stays
            // a NIP-77 relay.
            if relay.nip77 != relay::Nip77::Supported {
                relay.method = relay::Method::Req;
            }
            relay.stats.jobs_req += 1;
        }
        job.state = JobState::Draining;
        job.drain_deadline = Some(self.now + self.config.timing.eose_timeout);
        self.try_complete(id, job_id);
    }

    pub(super) fn try_complete(&mut self, id: RelayId, job_id: JobId) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let done = relay
            .jobs
            .get(&job_id)
            .is_some_and(|j| matches!(j.state, JobState::Draining) && j.outstanding == 0);
        if !done {
            return;
        }
        let lossy = relay.jobs.get(&job_id).is_some_and(|j| j.lossy);
        if lossy {
            // Something was lost (dropped, or only forged copies came): run again after
            // a delay that doubles each time, up to an hour.
            let base = self.config.timing.backoff_base;
            let now = self.now;
            if let Some(job) = relay.jobs.get_mut(&job_id) {
                job.lossy_runs = job.lossy_runs.saturating_add(1);
                let delay = base
                    .saturating_mul(1u32 << job.lossy_runs.min(16))
                    .min(std::time::Duration::from_secs(3600));
                job.not_before = Some(now + delay);
            }
            self.requeue(id, job_id, false);
            return;
        }
        self.release(id, job_id);
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.remove(&job_id) else {
            return;
        };
        let url = relay.url.clone();
        // A job over many keys carried as many checkpoints: a set, not a scan per key.
        let carried: HashSet<&Checkpoint> = job.carried.iter().collect();
        let written = |c: &Checkpoint| carried.contains(c);
        let mut checkpoints = Vec::new();
        if job.keys.is_empty() && relay.bootstrap {
            relay.discovered_at = Some(job.started_at);
            checkpoints.push(discovery_checkpoint(&url, &job));
        }
        for key in &job.keys {
            let Some((since, woken)) = self.keys.complete(id, *key) else {
                continue;
            };
            self.wake(woken);
            let at = since.timestamp();
            let known = self.work.confirm(id, *key, at) || {
                let known = self.work.is_known(id, *key);
                if known {
                    self.work.restore(id, *key, at);
                }
                known
            };
            if known {
                checkpoints.push(self.item_checkpoint(&url, *key, at));
            }
        }
        for checkpoint in checkpoints {
            if !written(&checkpoint) {
                self.stats.checkpoints_after_events += 1;
                self.outputs.push_back(Output::Checkpoint(checkpoint));
            }
        }
    }

    /// The checkpoints a store batch of `entries` carries: those of each job that will
    /// receive nothing more and whose outstanding events are all in it or in the store
    /// batches handed out before it, as its completion would write them if nothing else
    /// changed — so they commit in the same write as the last events they cover. (Store
    /// batches are written in the order they are handed out, and a driver fails the
    /// batches waiting behind a write that failed: a batch never commits without the
    /// ones before it.) The job remembers them and does not emit them again when it
    /// completes; a failed batch writes nothing, and the job, lossy, runs again.
    pub(super) fn carried_checkpoints(
        &mut self,
        entries: &[(RelayId, Option<JobId>, EventId)],
    ) -> Vec<Checkpoint> {
        // What storing the batch settles, per job: its own events, and the fetches it
        // waits for.
        let mut in_batch: BTreeMap<(RelayId, JobId), usize> = BTreeMap::new();
        for entry in entries {
            for relay_job in settled_by(&self.fetches, entry) {
                *in_batch.entry(relay_job).or_insert(0) += 1;
            }
        }
        let draining = |relay_job: &(RelayId, JobId)| {
            let job = self
                .relays
                .get(&relay_job.0)
                .and_then(|r| r.jobs.get(&relay_job.1));
            job.is_some_and(|j| matches!(j.state, JobState::Draining) && !j.lossy)
        };
        in_batch.retain(|relay_job, _| draining(relay_job));
        // And what the batches before it settle, for those jobs, when some of them are
        // owed more than this batch — unless that would be a long walk (a checkpoint
        // then follows its events instead: a bounded step matters more).
        let owed_more = |(relay, job): &(RelayId, JobId), count: &usize| {
            let job = self.relays.get(relay).and_then(|r| r.jobs.get(job));
            job.is_some_and(|j| j.outstanding > *count)
        };
        let walk = in_batch.iter().any(|(k, v)| owed_more(k, v));
        let mut before: HashMap<(RelayId, JobId), usize> = HashMap::new();
        let storing = walk
            .then(|| {
                self.pipeline
                    .storing_within(self.now, STORING_WALK_PER_STEP)
            })
            .flatten();
        for entry in storing.into_iter().flatten() {
            for relay_job in settled_by(&self.fetches, entry) {
                if in_batch.contains_key(&relay_job) {
                    *before.entry(relay_job).or_insert(0) += 1;
                }
            }
        }
        let mut carried = Vec::new();
        for ((id, job_id), count) in in_batch {
            let Some(relay) = self.relays.get(&id) else {
                continue;
            };
            let Some(job) = relay.jobs.get(&job_id) else {
                continue;
            };
            let earlier = before.get(&(id, job_id)).copied().unwrap_or(0);
            if job.outstanding != count + earlier {
                continue;
            }
            let mut these = Vec::new();
            if job.keys.is_empty() && relay.bootstrap {
                these.push(discovery_checkpoint(&relay.url, job));
            }
            for key in &job.keys {
                let Some(since) = self.keys.sole_job_since(id, *key) else {
                    continue;
                };
                if self.work.is_known(id, *key) {
                    these.push(self.item_checkpoint(&relay.url, *key, since.timestamp()));
                }
            }
            carried.extend(these.iter().cloned());
            if let Some(job) = self
                .relays
                .get_mut(&id)
                .and_then(|r| r.jobs.get_mut(&job_id))
            {
                job.carried = these;
            }
        }
        self.stats.checkpoints_with_events += carried.len() as u64;
        carried
    }

    fn item_checkpoint(&self, relay: &RelayUrl, key: WorkKey, at: Timestamp) -> Checkpoint {
        Checkpoint {
            relay: relay.clone(),
            scope: Scope::Item {
                layer: key.layer,
                item: self.index.names().item(key.item),
            },
            at,
        }
    }

    pub(super) fn bump(&mut self, id: RelayId, job_id: JobId, by: usize) {
        if let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
        {
            job.outstanding += by;
        }
    }

    pub(super) fn settle(&mut self, id: RelayId, job_id: JobId) {
        let patience = self.config.timing.eose_timeout;
        let now = self.now;
        if let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
        {
            job.outstanding = job.outstanding.saturating_sub(1);
            if job.drain_deadline.is_some() {
                job.drain_deadline = Some(now + patience);
            }
        }
        self.try_complete(id, job_id);
    }
}

/// The checkpoint a discovery job (no keys, at a bootstrap relay) confirms: every
/// announcement there from before it started.
fn discovery_checkpoint(relay: &RelayUrl, job: &Job) -> Checkpoint {
    Checkpoint {
        relay: relay.clone(),
        scope: Scope::Discovery,
        at: job.started_at.timestamp(),
    }
}

/// The jobs storing `entry` settles: the one it came for, and those waiting for its id
/// to be fetched.
fn settled_by<'a>(
    fetches: &'a FetchTable,
    (relay, job, eid): &'a Storing,
) -> impl Iterator<Item = (RelayId, JobId)> + 'a {
    let fetched = fetches.jobs_for(eid);
    job.map(|job| (*relay, job)).into_iter().chain(fetched)
}
