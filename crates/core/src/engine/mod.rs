//! The sans-IO sync engine, in the style of quinn-proto and str0m: fed inputs with the
//! current time, drained of outputs, asked for its next deadline. It never reads a
//! clock, never spawns, never does I/O.
//!
//! ```text
//! engine.handle_input(now, Input)     // relay connected/closed, a frame, NIP-11, store answers
//! engine.handle_timeout(now)          // when poll_timeout's deadline passed
//! engine.poll_output() -> Option<Output>   // connect, send, load local items, verify, store, checkpoint
//! engine.poll_timeout() -> Option<Time>
//! ```
//!
//! Events flow: a relay's EVENT is matched against the subscription's filters and
//! prechecked, then handed out for signature verification ([`Output::Verify`]); verified
//! events pass [`Acceptor::decide`] and go out to be stored ([`Output::Store`]); once the
//! store confirms ([`Input::Stored`]), the jobs they belong to may complete and confirm
//! their keys ([`Output::Checkpoint`]). Accepted announcements and roots update the repo
//! index at once, and `compute_actions` turns that into new work (discovery).
//!
//! This file holds the engine's state and its entry points; each `handle_*` routes to
//! the module that does the work, and `drive` runs the next step of the relays the
//! input touched (marked by `relays`) after it. The rest, one responsibility per file (each adds to
//! `impl SyncEngine`):
//!
//! - `messages`: [`Input`], [`Output`] and checkpoints;
//! - `connection`: a relay's session opening and ending, its phase and failures;
//! - `relay`: a relay's session — its state (phase, limits, subscriptions, jobs, the
//!   pager and NIP-77 runs, its subscription ids), reading each frame it sends against
//!   its own books (`relay/receive`), finding its deadlines due (`relay/due`), and
//!   walking a job by pages or NIP-77 and fetching ids (`relay/walk`); each returns what
//!   it leaves for the engine to decide, and queues the frames it sends;
//! - `frames`: acting on what a relay's session read, and handing its frames out;
//! - `live`: live subscriptions;
//! - `jobs`: planning, starting, leasing, requeueing and abandoning historic jobs;
//! - `complete`: completing them — confirming their keys, and their checkpoints
//!   (carried by the store write that completes them where that is known);
//! - `keys`: the work keys across relays (jobs per relay and key, leases, waiters);
//! - `paging` and `reconcile`: what a job's two methods, paginated REQ and NIP-77,
//!   leave to the engine (narrowed seconds, the local set, falling back, splitting);
//! - `fetch`: need-ids fetched by `ids` REQs, once across relays;
//! - `fetch_table`: who fetches which id, and which jobs wait for it;
//! - `ingest`: precheck, verification, acceptance and storage of received events;
//! - `pipeline`: the books of events between a relay and the store (queued, verifying,
//!   storing, and their ids);
//! - `work`: local events and checkpoints turned into pending work;
//! - `timers`: acting on the deadlines a relay's session found due;
//! - `publish`: events clients of our relay publish;
//! - `relays`: the relays known, which of them to drive, their in-flight counts and
//!   deadlines;
//! - `invariants` (debug builds): hand-kept counters recomputed after every input;
//! - `job`, `config`, `time`: the per-job state, configuration and time.

mod complete;
mod config;
mod connection;
mod fetch;
mod fetch_table;
mod frames;
mod ingest;
#[cfg(debug_assertions)]
mod invariants;
mod job;
mod jobs;
mod keys;
mod live;
mod messages;
mod paging;
mod pipeline;
mod publish;
mod reconcile;
mod relay;
mod relays;
mod sub_id;
#[cfg(test)]
mod tests;
mod time;
mod timers;
mod work;

use std::collections::{BTreeSet, HashMap, VecDeque};

use nostr::prelude::{EventId, Timestamp};

pub use config::{EngineConfig, Flow, Timing};
pub use messages::{BatchId, Checkpoint, Input, Output, RequestId, Scope};
pub use publish::{PublishId, PublishOutcome, PublishStats};
pub use relay::{Method, Nip77, Phase, RelayStats};
pub use time::Time;

use crate::accept::Acceptor;
use crate::actions::WorkState;
use crate::index::RepoIndex;
use crate::items::RelayId;
use crate::relay_url::RelayUrl;
use crate::seen::{SeenEntry, SeenSet};
use fetch_table::FetchTable;
use ingest::RecentIds;
use job::{JobId, JobState};
use jobs::Session;
use keys::KeyTable;
use pipeline::Pipeline;
use relay::RelayState;
use relays::Relays;
use time::Jitter;

/// Engine-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events handed to the store.
    pub stored: u64,
    /// Store batches that failed.
    pub store_failures: u64,
    /// Why the store refused the last write (a full disk, the browser's quota), until a
    /// write succeeds: no relay gets in sync meanwhile, and what was refused is fetched
    /// again later.
    pub store_error: Option<String>,
    /// Frames from relays the engine does not know.
    pub unknown_relay_frames: u64,
    /// Events clients published.
    pub published: PublishStats,
    /// Checkpoints handed out with the store write of the last events they cover.
    pub checkpoints_with_events: u64,
    /// Checkpoints handed out on their own, their events already stored.
    pub checkpoints_after_events: u64,
}

/// The sync engine.
pub struct SyncEngine {
    config: EngineConfig,
    jitter: Jitter,
    index: RepoIndex,
    work: WorkState,
    acceptor: Acceptor,
    seen: SeenSet,
    relays: Relays,
    outputs: VecDeque<Output>,
    next_id: u64,
    loading: HashMap<RequestId, (RelayId, JobId)>,
    /// Events between a relay and the store.
    pipeline: Pipeline,
    /// Store batches of events clients published.
    publishing: HashMap<BatchId, (PublishId, EventId)>,
    /// Published events waiting for what they reference.
    orphans: publish::Orphans,
    /// Who fetches which id by `ids`, and which jobs wait for it.
    fetches: FetchTable,
    /// Jobs per relay and key, the keys' leases, and the relays waiting for keys.
    keys: KeyTable,
    /// Relays waiting for ingest room (a parked page, a held-back fetch, a catch-up
    /// waiting for the queue to drain): driven after every input.
    room_waiters: BTreeSet<RelayId>,
    recent: RecentIds,
    /// Seen-not-stored entries not yet handed out for persisting.
    remembered: Vec<SeenEntry>,
    stats: EngineStats,
    now: Time,
}

impl SyncEngine {
    /// An engine with nothing tracked yet.
    pub fn new(config: EngineConfig) -> Self {
        let mut engine = Self::unmeasured(config);
        engine.refresh_relays();
        engine
    }

    fn unmeasured(config: EngineConfig) -> Self {
        let mut index = RepoIndex::new(config.index.clone());
        let mut relays = Relays::default();
        for url in &config.bootstrap_relays {
            let id = index.intern_relay(url);
            relays.get_or_insert_with(id, || RelayState::new(url.clone(), true));
        }
        Self {
            jitter: Jitter::new(config.seed),
            acceptor: Acceptor::new(config.accept.clone()),
            index,
            config,
            work: WorkState::default(),
            seen: SeenSet::default(),
            relays,
            outputs: VecDeque::new(),
            next_id: 1,
            loading: HashMap::new(),
            pipeline: Pipeline::default(),
            publishing: HashMap::new(),
            orphans: publish::Orphans::new(),
            fetches: FetchTable::default(),
            keys: KeyTable::default(),
            room_waiters: BTreeSet::new(),
            recent: RecentIds::default(),
            remembered: Vec::new(),
            stats: EngineStats::default(),
            now: Time::default(),
        }
    }

    /// The repo index.
    pub fn index(&self) -> &RepoIndex {
        &self.index
    }

    /// Pending and confirmed work.
    pub fn work(&self) -> &WorkState {
        &self.work
    }

    /// The seen-not-stored set (for persisting).
    pub fn seen(&self) -> &SeenSet {
        &self.seen
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Every known relay with its phase, method and counters.
    pub fn relays(&self) -> impl Iterator<Item = (&RelayUrl, Phase, Method, &RelayStats)> {
        self.relays
            .values()
            .map(|r| (&r.url, r.phase, r.method, &r.stats))
    }

    /// The handle [`Input`]s and [`Output`]s name a known relay by.
    pub fn relay_id(&self, url: &RelayUrl) -> Option<RelayId> {
        self.index
            .names()
            .relay_id(url)
            .filter(|id| self.relays.contains_key(id))
    }

    /// The address of the relay a handle in an [`Input`] or [`Output`] names.
    pub fn relay_url(&self, relay: RelayId) -> Option<&RelayUrl> {
        self.relays.get(&relay).map(|r| &r.url)
    }

    /// Why the relay's last connection failed, until it is in sync again.
    pub fn relay_error(&self, url: &RelayUrl) -> Option<&str> {
        let id = self.relay_id(url)?;
        self.relays.get(&id)?.last_error.as_deref()
    }

    /// Historic jobs at a relay: (queued, running, draining), and ids waiting to be fetched.
    pub fn relay_jobs(&self, url: &RelayUrl) -> (usize, usize, usize, usize) {
        let Some(relay) = self.relay_id(url).and_then(|id| self.relays.get(&id)) else {
            return (0, 0, 0, 0);
        };
        let count = |f: fn(&JobState) -> bool| relay.jobs.values().filter(|j| f(&j.state)).count();
        (
            count(|s| matches!(s, JobState::Queued)),
            count(|s| !matches!(s, JobState::Queued | JobState::Draining)),
            count(|s| matches!(s, JobState::Draining)),
            relay.fetch_queue.len(),
        )
    }

    /// Whether every relay with something to sync is open and has no work left, or is
    /// failing (Backoff/Dead): what a one-shot `sync` waits for.
    pub fn is_settled(&self) -> bool {
        self.pipeline.is_empty()
            && self.relays.iter().all(|(id, r)| match r.phase {
                Phase::Open => {
                    r.waiting_session.is_none()
                        && r.jobs.is_empty()
                        && r.fetch_queue.is_empty()
                        && self.work.pending(*id).next().is_none()
                }
                Phase::Idle => self.index.targets().item_count(*id) == 0 && !r.bootstrap,
                Phase::Connecting { .. } => false,
                Phase::Backoff { .. } | Phase::Dead { .. } => true,
            })
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: now, while a
    /// relay with something to sync is not connected yet (e.g. right after start-up).
    pub fn poll_timeout(&self) -> Option<Time> {
        // A relay a drive left marked (see `drive`) is driven at once.
        if self.relays.has_dirty() {
            return Some(self.now);
        }
        let next = self
            .relays
            .next_deadline()
            .into_iter()
            .chain(self.orphans_deadline())
            .min();
        #[cfg(debug_assertions)]
        debug_assert_eq!(next, self.walked_deadline(), "cached deadlines drifted");
        next
    }

    /// [`poll_timeout`](Self::poll_timeout) by a walk of every relay (what the cached
    /// deadlines must equal).
    #[cfg(debug_assertions)]
    fn walked_deadline(&self) -> Option<Time> {
        let idle_but_wanted = self
            .relays
            .iter()
            .any(|(id, r)| r.phase == Phase::Idle && self.wanted(*id));
        if idle_but_wanted {
            return Some(self.now);
        }
        self.relays
            .values()
            .filter_map(|r| r.next_deadline(&self.config.timing))
            .chain(self.orphans_deadline())
            .min()
    }

    /// Measures the relays changed since the last time: their in-flight counts and
    /// deadlines.
    fn refresh_relays(&mut self) {
        let targets = self.index.targets();
        self.relays.refresh(self.now, &self.config.timing, |id| {
            targets.item_count(id) > 0
        });
    }

    /// Where a restart's catch-up windows may start at the earliest, `None` when a
    /// restart reconciles instead (see [`Timing::restart_catch_up_window`]): what the
    /// store holds from then on is worth handing over as [`Input::HeldIds`] at start-up.
    pub fn restart_window_start(&self, now: Time) -> Option<Timestamp> {
        let timing = &self.config.timing;
        let reach = timing.restart_catch_up_window + timing.since_margin;
        (!timing.restart_catch_up_window.is_zero())
            .then(|| Timestamp::from(now.timestamp().as_secs().saturating_sub(reach.as_secs())))
    }

    /// Processes one input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        self.now = now;
        match input {
            Input::Connected { relay } => self.on_connected(relay),
            Input::Disconnected { relay, reason } => self.on_disconnected(relay, reason),
            Input::Frame { relay, text } => self.on_frame(relay, &text),
            Input::InfoFetched { relay, document } => self.on_info(relay, document.as_deref()),
            Input::LocalItemsLoaded { request, items } => self.on_local_items(request, items),
            Input::Verified { batch, valid } => self.on_verified(batch, &valid),
            Input::Stored { batch, result } => self.on_stored(batch, result),
            Input::LocalEvents { events } => self.on_local_events(&events),
            Input::LocalRoots { roots } => self.on_local_roots(&roots),
            Input::Checkpoints { checkpoints } => self.on_checkpoints(checkpoints),
            Input::Remembered { entries } => {
                let now = now.timestamp();
                for entry in entries.into_iter().filter(|e| e.expires_at > now) {
                    self.seen.insert(entry);
                }
            }
            Input::HeldIds { ids } => {
                for id in ids {
                    self.recent.insert(id);
                }
            }
            Input::Publish {
                token,
                event,
                json_bytes,
            } => self.on_publish(token, event, json_bytes),
        }
        self.drive();
        self.refresh_relays();
        #[cfg(debug_assertions)]
        if self.config.check_invariants {
            self.check_invariants();
        }
    }

    /// Processes deadlines that passed at `now`: only at the relays whose next deadline
    /// is due.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        for id in self.relays.due(now) {
            self.relays.touch(id);
            self.relay_timeouts(id);
        }
        self.seen.expire(now.timestamp());
        self.expire_orphans();
        self.drive();
        self.refresh_relays();
        #[cfg(debug_assertions)]
        if self.config.check_invariants {
            self.check_invariants();
        }
    }

    /// The loop's one step after every input: connections, live subscriptions, jobs,
    /// fetches at each relay the input touched (or that waits for ingest room, or for a
    /// key another relay released); then one verify batch and the seen ids to remember.
    fn drive(&mut self) {
        /// A relay driven this often in one drive waits for the next (its own steps
        /// settle in two visits: one that acts, one that finds nothing more to do).
        const MAX_VISITS: u8 = 4;
        for id in std::mem::take(&mut self.room_waiters) {
            self.relays.mark(id);
        }
        let mut visits: HashMap<RelayId, u8> = HashMap::new();
        let mut deferred = Vec::new();
        while let Some(id) = self.relays.pop_dirty() {
            let n = visits.entry(id).or_insert(0);
            *n += 1;
            if *n > MAX_VISITS {
                deferred.push(id);
                continue;
            }
            self.drive_relay(id);
        }
        debug_assert!(
            deferred.is_empty(),
            "relays {deferred:?} still changing after {MAX_VISITS} visits"
        );
        self.relays.keep_dirty(deferred);
        self.flush_verify();
        if !self.remembered.is_empty() {
            let entries = std::mem::take(&mut self.remembered);
            self.outputs.push_back(Output::Remember(entries));
        }
    }

    /// One relay's step: connect it when wanted, close it when not, else its live
    /// subscriptions, jobs and fetches. A step with nothing to do changes nothing (so it
    /// does not mark the relay again).
    fn drive_relay(&mut self, id: RelayId) {
        let now = self.now;
        let wanted = self.wanted(id);
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        match relay.phase {
            Phase::Idle if wanted => {
                let url = relay.url.clone();
                let deadline = now + self.config.timing.connect_timeout;
                let info_due = now + self.config.timing.info_wait;
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.new_session(info_due);
                }
                self.outputs.push_back(Output::FetchInfo {
                    relay: id,
                    url: url.clone(),
                });
                self.outputs.push_back(Output::Connect { relay: id, url });
                self.set_phase(id, Phase::Connecting { deadline });
            }
            Phase::Open if !wanted => self.close_session(id),
            // The session waits for the relay's NIP-11 document (see `on_info`).
            Phase::Open if relay.waiting_session.is_some() => {}
            Phase::Open => {
                if let Some(first_drop) = relay.needs_catch_up {
                    if self.pipeline.len() < self.config.flow.max_ingest_queue / 2 {
                        if let Some(relay) = self.relays.get_mut(&id) {
                            relay.needs_catch_up = None;
                        }
                        let from = (first_drop - self.config.timing.since_margin).timestamp();
                        let session = Session::Quick {
                            from,
                            settled_since: None,
                            full_since: None,
                        };
                        self.schedule_session(id, session);
                    } else {
                        self.room_waiters.insert(id);
                    }
                }
                // Live first: a new item's historic job must not start before its
                // live subscription, or events in between would be missed.
                self.refresh_live(id);
                self.schedule_unscheduled(id);
                self.resume_parked(id);
                self.start_jobs(id);
                self.start_fetches(id);
                self.clear_error_if_synced(id);
            }
            _ => {}
        }
    }
}
