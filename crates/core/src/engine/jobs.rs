//! Historic jobs: planning them per session (see [`Session`]), starting them within a
//! relay's slots and the keys leased across relays, requeueing and abandoning them
//! (completing them is `complete`).

use std::collections::HashMap;

use nostr::prelude::{Filter, Timestamp};

use super::job::{Job, JobId, JobState, Narrow};
use super::keys::Woken;
use super::relay;
use super::time::Time;
use super::{Phase, SyncEngine};
use crate::filters::{
    announcement_chunks, discovery_filter, repo_tag_chunks, root_tag_chunks, DiscoveryScope, Form,
};
use crate::items::{Item, ItemId, Layer, RelayId, WorkKey};

/// What a relay session's historic jobs cover for keys already confirmed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// A quick reconnect (or a catch-up after losses): everything from `from` on. After
    /// a reconnect, `settled_since` is when the session before it started: a key
    /// checkpointed before that had no job complete in it, so it is planned as a
    /// restart plans it instead (from its checkpoint, or as a fresh start). And
    /// `full_since` is when a full reconciliation of the connection started: a key
    /// (or discovery) not confirmed since is reconciled in full, as it would have been.
    Quick {
        from: Timestamp,
        settled_since: Option<Timestamp>,
        full_since: Option<Timestamp>,
    },
    /// First connection of this run (unless its checkpoints are recent: see
    /// `restart_from`), or a long disconnection: NIP-77 over everything, paging (without
    /// NIP-77) only from the checkpoints — a restart is not a re-download.
    Fresh,
    /// The daily full reconciliation: everything, by either method — the only way a
    /// relay without NIP-77 yields events that arrived there late with old timestamps.
    Full,
}

/// What a session knows a key's relay gave it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Coverage {
    /// Never confirmed: synced from the beginning.
    None,
    /// Confirmed.
    Confirmed,
    /// Confirmed before the session a quick reconnect follows, which did not complete
    /// its job: planned as after a restart.
    Unsettled,
    /// Not confirmed since a full reconciliation that a quick reconnect cut short:
    /// reconciled in full.
    Unreconciled,
}

/// How a job starts.
pub(super) enum Start {
    Paging,
    Probe,
    Negentropy,
}

impl SyncEngine {
    /// Every key (item × its layers) relay `id` is a target for.
    pub(super) fn target_keys(&self, id: RelayId) -> impl Iterator<Item = WorkKey> + '_ {
        self.index.targets().items(id).flat_map(|item| {
            item.layers().iter().map(move |layer| WorkKey {
                layer: *layer,
                item,
            })
        })
    }

    /// Plans historic jobs for every key of a relay at the start of a session, a
    /// catch-up or the daily full reconciliation (see [`Session`]). Keys given up on
    /// earlier are pending again: these jobs confirm them.
    pub(super) fn schedule_session(&mut self, id: RelayId, session: Session) {
        let keys: Vec<WorkKey> = self.target_keys(id).collect();
        for key in &keys {
            self.work.add_pending(id, *key);
        }
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.take_abandoned();
        }
        self.plan_keys(id, &keys, session);
        self.plan_discovery(id, session);
    }

    /// Plans again, as after a restart, the jobs a relay gave up on (see
    /// [`Timing::abandoned_retry`](super::Timing::abandoned_retry)): keys from their
    /// checkpoints (or in full), keys never synced there from the beginning.
    pub(super) fn retry_abandoned(&mut self, id: RelayId) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let abandoned = relay.take_abandoned();
        relay.abandoned.rounds = abandoned.rounds.saturating_add(1);
        let full_since = relay.full_started_at.map(Time::timestamp);
        let targets = self.index.targets();
        let keys: Vec<WorkKey> = abandoned
            .keys
            .into_iter()
            .filter(|k| targets.contains(id, k.item))
            .collect();
        for key in &keys {
            self.work.add_pending(id, *key);
        }
        let now = self.now.timestamp();
        let session = Session::Quick {
            from: now,
            settled_since: Some(now),
            full_since,
        };
        self.plan_keys(id, &keys, session);
        if abandoned.discovery {
            self.plan_discovery(id, session);
        }
    }

    /// Plans historic jobs for `keys` of a relay (see [`schedule_session`](Self::schedule_session)).
    fn plan_keys(&mut self, id: RelayId, keys: &[WorkKey], session: Session) {
        let margin = self.config.timing.since_margin.as_secs();
        let less_margin = |t: Timestamp| Timestamp::from(t.as_secs().saturating_sub(margin));
        // Confirmed keys: a quick reconnect catches up from the disconnection; a fresh
        // start reconciles them in full with NIP-77, but pages (without NIP-77) only from
        // the oldest of their checkpoints. Keys the session before a quick reconnect left
        // unsettled are planned as a restart plans them: caught up from their checkpoints
        // when those are younger than the restart catch-up window, else as a fresh start.
        // Unconfirmed keys sync from the beginning.
        let (settled_since, full_since) = match session {
            Session::Quick {
                settled_since,
                full_since,
                ..
            } => (settled_since, full_since),
            Session::Fresh | Session::Full => (None, None),
        };
        let coverage = |key: WorkKey| match self.work.confirmed_at(id, key) {
            None => Coverage::None,
            Some(at) if full_since.is_some_and(|s| at < s) => Coverage::Unreconciled,
            Some(at) if settled_since.is_some_and(|s| at < s) => Coverage::Unsettled,
            Some(_) => Coverage::Confirmed,
        };
        let oldest = |wanted: Coverage| {
            keys.iter()
                .filter(|k| coverage(**k) == wanted)
                .filter_map(|k| self.work.confirmed_at(id, *k))
                .min()
                .map(less_margin)
        };
        let (oldest_confirmed, oldest_unsettled) =
            (oldest(Coverage::Confirmed), oldest(Coverage::Unsettled));
        let window = self.config.timing.restart_catch_up_window.as_secs();
        let unsettled_recent = oldest_unsettled.is_some_and(|t| {
            let age = self
                .now
                .timestamp()
                .as_secs()
                .saturating_sub(t.as_secs() + margin);
            age < window
        });
        let mut groups: HashMap<(Layer, Coverage), Vec<ItemId>> = HashMap::new();
        for key in keys {
            groups
                .entry((key.layer, coverage(*key)))
                .or_default()
                .push(key.item);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by_key(|(group, _)| *group);
        for ((layer, coverage), items) in groups {
            let (since, paging_since) = match (coverage, session) {
                (Coverage::Unsettled, _) if unsettled_recent => (oldest_unsettled, None),
                (Coverage::Unsettled, _) => (None, oldest_unsettled),
                (Coverage::Confirmed, Session::Quick { from, .. }) => (Some(from), None),
                (Coverage::Confirmed, Session::Fresh) => (None, oldest_confirmed),
                (Coverage::Confirmed, Session::Full)
                | (Coverage::None | Coverage::Unreconciled, _) => (None, None),
            };
            self.schedule_jobs(id, layer, &items, since, paging_since);
        }
    }

    /// At a bootstrap relay, plans the discovery job of a session (see [`Session`]).
    fn plan_discovery(&mut self, id: RelayId, session: Session) {
        let margin = self.config.timing.since_margin.as_secs();
        if let Some(relay) = self.relays.get(&id).filter(|r| r.bootstrap) {
            // Discovery's checkpoint covers every announcement only when discovery is not
            // narrowed to named repositories: one named since has announcements older
            // than it. A narrowed filter asks for a few announcements: synced whole.
            let discovered = relay
                .discovered_at
                .filter(|_| matches!(self.config.discovery, DiscoveryScope::All))
                .map(|t| Timestamp::from(t.timestamp().as_secs().saturating_sub(margin)));
            // Discovery has its own checkpoint: caught up from it in a quick session,
            // else reconciled in full and paged from there.
            // A full reconciliation cut short before discovery completed is finished in
            // full.
            let cut_short = |full_since: Timestamp| {
                relay
                    .discovered_at
                    .is_none_or(|t| t.timestamp() < full_since)
            };
            let (since, paging_since) = match session {
                Session::Quick {
                    full_since: Some(full_since),
                    ..
                } if cut_short(full_since) => (None, None),
                Session::Quick { .. } if discovered.is_some() => (discovered, None),
                Session::Full => (None, None),
                _ => (None, discovered),
            };
            let filter = discovery_filter(Form::Historic { since }, &self.config.discovery);
            let job = self.add_job(id, Vec::new(), filter, paging_since);
            if since.is_some() {
                self.mark_catch_up(id, job);
            }
        }
    }

    /// Marks a job as a quick session's catch-up window (see [`Job::is_window`]).
    fn mark_catch_up(&mut self, id: RelayId, job: JobId) {
        if let Some(job) = self.relays.get_mut(&id).and_then(|r| r.jobs.get_mut(&job)) {
            job.catch_up = true;
        }
    }

    /// Adds jobs for `items` of one layer, one per filter of each chunk.
    fn schedule_jobs(
        &mut self,
        id: RelayId,
        layer: Layer,
        items: &[ItemId],
        since: Option<Timestamp>,
        paging_since: Option<Timestamp>,
    ) {
        let Some(limits) = self.relays.get(&id).map(|r| r.limits) else {
            return;
        };
        let form = Form::Historic { since };
        let names = self.index.names();
        let (coords, roots) = names.split(items);
        let mut planned: Vec<(Vec<WorkKey>, Filter)> = Vec::new();
        let key = |item: ItemId| WorkKey { layer, item };
        match layer {
            Layer::Announcements | Layer::RepoTags => {
                let chunks = if layer == Layer::Announcements {
                    announcement_chunks(&coords, form, &limits)
                } else {
                    repo_tag_chunks(&coords, form, &limits)
                };
                for chunk in chunks {
                    let keys: Vec<WorkKey> = chunk
                        .members
                        .iter()
                        .filter_map(|c| names.coord_id(c))
                        .map(key)
                        .collect();
                    planned.extend(chunk.filters.into_iter().map(|f| (keys.clone(), f)));
                }
            }
            Layer::RootTags => {
                for chunk in root_tag_chunks(&roots, form, &limits) {
                    let keys: Vec<WorkKey> = chunk
                        .members
                        .iter()
                        .filter_map(|r| names.item_id(&Item::Root(*r)))
                        .map(key)
                        .collect();
                    planned.extend(chunk.filters.into_iter().map(|f| (keys.clone(), f)));
                }
            }
        }
        for (keys, filter) in planned {
            let job = self.add_job(id, keys, filter, paging_since);
            if since.is_some() {
                self.mark_catch_up(id, job);
            }
        }
    }

    /// Plans jobs for coalesced new keys once nothing is queued.
    pub(super) fn schedule_unscheduled(&mut self, id: RelayId) {
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        if relay.unscheduled.is_empty() || !relay.live_new.is_empty() {
            return;
        }
        let queued = relay
            .jobs
            .values()
            .any(|j| matches!(j.state, JobState::Queued));
        if queued {
            return;
        }
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let keys = std::mem::take(&mut relay.unscheduled);
        let mut by_layer: HashMap<Layer, Vec<ItemId>> = HashMap::new();
        for key in keys {
            if self.work.is_pending(id, key) {
                by_layer.entry(key.layer).or_default().push(key.item);
            }
        }
        let mut layers: Vec<_> = by_layer.into_iter().collect();
        layers.sort_by_key(|(l, _)| *l);
        for (layer, items) in layers {
            self.schedule_jobs(id, layer, &items, None, None);
        }
    }

    pub(super) fn add_job(
        &mut self,
        id: RelayId,
        keys: Vec<WorkKey>,
        filter: Filter,
        paging_since: Option<Timestamp>,
    ) -> JobId {
        let job_id = JobId(self.new_id());
        let now = self.now;
        self.keys.add_job(id, &keys, now);
        if let Some(relay) = self.relays.get_mut(&id) {
            let job = Job::new(job_id, keys, filter, now, paging_since);
            relay.jobs.insert(job_id, job);
        }
        job_id
    }

    /// Adds a job narrowing one second of `filter` (see [`Narrow`]) for `keys`.
    pub(super) fn add_narrow_job(
        &mut self,
        id: RelayId,
        keys: Vec<WorkKey>,
        filter: Filter,
        narrow: Narrow,
    ) {
        let filter = filter.since(narrow.second).until(narrow.second);
        let job_id = self.add_job(id, keys, filter, None);
        if let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
        {
            job.narrow = Some(narrow);
        }
    }

    /// Starts queued jobs while the relay has slots.
    pub(super) fn start_jobs(&mut self, id: RelayId) {
        let now = self.now;
        loop {
            let Some(relay) = self.relays.get(&id) else {
                return;
            };
            let busy = relay
                .jobs
                .values()
                .filter(|j| !matches!(j.state, JobState::Queued | JobState::Draining))
                .count();
            if busy >= self.config.flow.jobs_per_relay || !relay.may_subscribe(now) {
                return;
            }
            let ready = |j: &&Job| {
                matches!(j.state, JobState::Queued) && j.not_before.is_none_or(|t| now >= t)
            };
            // Only the probe may speak NIP-77 until the relay answered it: meanwhile only
            // a catch-up window may start (when no other startable job comes before it).
            let probing = relay.probe_out();
            if probing && !relay.jobs.values().filter(ready).any(Job::is_window) {
                return;
            }
            // Walks every relay: asked only for a job whose keys are not leased elsewhere.
            // A job that waits for another relay's keys is woken when they are free.
            let mut req_only = None;
            let mut blocked = Vec::new();
            // A blocked job waits on the first key found held (freeing it wakes this
            // relay to look again), not on all of its keys: one entry per job per look.
            let found = relay
                .jobs
                .values()
                .filter(ready)
                .find(|j| {
                    if j.is_window() {
                        return true;
                    }
                    let held = self.keys.leased_elsewhere(id, &j.keys).or_else(|| {
                        let peers = req_only.get_or_insert_with(|| self.req_only_peers(id));
                        self.keys.job_among(peers, &j.keys)
                    });
                    blocked.extend(held);
                    held.is_none()
                })
                .map(|j| j.id);
            for key in blocked {
                self.keys.wait(key, id);
            }
            let Some(job) = found else {
                return;
            };
            let Some(relay) = self.relays.get(&id) else {
                return;
            };
            let window = relay.jobs.get(&job).is_some_and(Job::is_window);
            let start = match relay.nip77 {
                _ if window => Start::Paging,
                relay::Nip77::Unsupported => Start::Paging,
                relay::Nip77::Probing if probing => return,
                relay::Nip77::Probing | relay::Nip77::Unknown => Start::Probe,
                relay::Nip77::Supported => Start::Negentropy,
            };
            let keys = match self.relays.get_mut(&id).and_then(|r| r.jobs.get_mut(&job)) {
                Some(j) if !window => {
                    j.leased = true;
                    j.keys.clone()
                }
                _ => Vec::new(),
            };
            self.keys.lease(id, &keys);
            match start {
                Start::Paging => self.start_paging(id, job),
                Start::Probe => self.start_loading(id, job, true),
                Start::Negentropy => self.start_loading(id, job, false),
            }
        }
    }

    /// Open relays without NIP-77 that relay `id` (which may speak it) leaves shared
    /// keys to: such a relay pages everything it holds anyway, and reconciling after
    /// it downloads only what it lacked — the other way round, it downloads again all
    /// that was already fetched.
    fn req_only_peers(&self, id: RelayId) -> Vec<RelayId> {
        if self
            .relays
            .get(&id)
            .is_none_or(|r| r.nip77 == relay::Nip77::Unsupported)
        {
            return Vec::new();
        }
        self.relays
            .iter()
            .filter(|(other, r)| {
                **other != id && r.phase == Phase::Open && r.nip77 == relay::Nip77::Unsupported
            })
            .map(|(other, _)| *other)
            .collect()
    }

    /// Keys they waited for are free: these relays look again.
    pub(super) fn wake(&mut self, woken: Woken) {
        for relay in woken {
            self.relays.mark(relay);
        }
    }

    /// A job stopped running: when no other job of its relay holds them, its keys are
    /// free for other relays.
    pub(super) fn release(&mut self, id: RelayId, job_id: JobId) {
        let running = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
            .filter(|j| j.leased)
            .map(|j| {
                j.leased = false;
                j.keys.clone()
            })
            .unwrap_or_default();
        let woken = self.keys.release(id, &running);
        self.wake(woken);
    }

    pub(super) fn job_timed_out(&mut self, id: RelayId, job_id: JobId) {
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get(&job_id) else {
            return;
        };
        let silent_neg = matches!(&job.state, JobState::Neg(n) if !n.answered);
        let sub = job.state.subscription().cloned();
        if let Some(sub) = sub {
            self.close_sub(id, sub.as_str());
        }
        if silent_neg {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.nip77 = relay::Nip77::Unsupported;
            }
            self.fall_back_to_req(id, job_id);
        } else {
            self.requeue(id, job_id, true);
        }
    }

    /// Puts a job back in the queue; `failed` counts an attempt, and too many abandon it.
    pub(super) fn requeue(&mut self, id: RelayId, job_id: JobId, failed: bool) {
        self.release(id, job_id);
        let attempts = self.config.flow.job_attempts;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        let open_sub = job.state.subscription().cloned();
        if job.probe
            && relay.nip77 == relay::Nip77::Probing
            && matches!(job.state, JobState::Neg(_))
        {
            relay.nip77 = relay::Nip77::Unknown;
        }
        job.probe = false;
        if failed {
            job.attempts += 1;
        }
        if job.attempts >= attempts {
            self.abandon_job(id, job_id);
            return;
        }
        job.state = JobState::Queued;
        job.lossy = false;
        // What a batch carried for the last run may not have been written.
        job.carried.clear();
        job.started_at = self.now;
        // Tell the relay too, if it still holds the subscription.
        if let Some(sub) = open_sub {
            if self
                .relays
                .get(&id)
                .is_some_and(|r| r.subs.contains_key(&sub))
            {
                self.close_sub(id, sub.as_str());
            }
        }
    }

    /// Gives up on a job: its keys stay unconfirmed (pending keys are released, for other
    /// relays), and it is planned again after `Timing::abandoned_retry` (see
    /// `RelayState::give_up`), or by the next session.
    pub(super) fn abandon_job(&mut self, id: RelayId, job_id: JobId) {
        self.release(id, job_id);
        let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.remove(&job_id))
        else {
            return;
        };
        if let Some(relay) = self.relays.get_mut(&id) {
            if let Some(sub) = job.state.subscription() {
                relay.subs.remove(sub);
            }
            relay.give_up(&job.keys, self.now, self.config.timing.abandoned_retry);
        }
        for key in job.keys {
            if self.work.is_pending(id, key) {
                self.work.abandon(id, key);
            }
            let woken = self.keys.abandon(id, key);
            self.wake(woken);
        }
    }
}
