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

mod config;
mod job;
mod publish;
mod relay;
#[cfg(test)]
mod tests;
mod time;

use std::collections::{HashMap, HashSet, VecDeque};

use nostr::prelude::{Event, EventId, Filter, MatchEventOptions, Timestamp};

pub use config::{EngineConfig, Flow, Timing};
pub use publish::{PublishId, PublishOutcome, PublishStats};
pub use relay::{Method, Nip77, Phase, RelayStats};
pub use time::Time;

use crate::accept::{Acceptor, Reject, Removal, Verdict};
use crate::actions::{compute_actions, compute_all_actions, Actions, WorkState};
use crate::filters::{
    announcement_chunks, discovery_filter, ids_filters, pack_reqs, repo_tag_chunks,
    root_tag_chunks, Form,
};
use crate::index::{IndexUpdate, RepoIndex};
use crate::items::{Item, ItemId, Layer, RelayId, WorkKey};
use crate::limits::RelayLimits;
use crate::neg::{self, NegInitiator};
use crate::nip34::{self, kinds};
use crate::relay_url::RelayUrl;
use crate::seen::{SeenEntry, SeenSet};
use crate::targets::TargetChange;
use crate::wire::{
    is_too_many_records, notice_class, parse_relay_frame, reason_class, ClientFrame, NoticeClass,
    ReasonClass, RelayFrame,
};
use job::{halve, Job, JobId, JobState, Narrow, NegRun, PageOutcome, Pager};
use relay::{Fetch, RelayState, Sub};
use time::Jitter;

/// Identifies a request to the store for local items.
pub type RequestId = u64;
/// Identifies a batch of events handed out for verification or storage.
pub type BatchId = u64;

/// Largest frame accepted from a relay.
const MAX_FRAME_BYTES: usize = 4 << 20;

/// A sync checkpoint: what at `relay` was fully synced up to `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The relay.
    pub relay: RelayUrl,
    /// What was synced.
    pub scope: Scope,
    /// Everything before this was received and stored.
    pub at: Timestamp,
}

/// What a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One item in one filter layer.
    Item {
        /// The filter layer.
        layer: Layer,
        /// The coordinate or root.
        item: Item,
    },
    /// Discovery: every announcement at a bootstrap relay.
    Discovery,
}

/// What the driver tells the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// The WebSocket to `relay` is open.
    Connected {
        /// The relay.
        relay: RelayUrl,
    },
    /// The WebSocket to `relay` closed or could not open.
    Disconnected {
        /// The relay.
        relay: RelayUrl,
        /// Why, for logs.
        reason: String,
    },
    /// A text frame from `relay`.
    Frame {
        /// The relay.
        relay: RelayUrl,
        /// The frame.
        text: String,
    },
    /// The relay's NIP-11 document, or `None` if it has none.
    Info {
        /// The relay.
        relay: RelayUrl,
        /// The document's text.
        document: Option<String>,
    },
    /// The store's items matching a [`Output::LoadLocalItems`] filter.
    LocalItems {
        /// The request answered.
        request: RequestId,
        /// (created_at, id) of every stored event matching the filter.
        items: Vec<(Timestamp, EventId)>,
    },
    /// Results of an [`Output::Verify`]: whether each event's id and signature hold.
    Verified {
        /// The batch.
        batch: BatchId,
        /// One flag per event, in order.
        valid: Vec<bool>,
    },
    /// The store committed (or failed to commit) an [`Output::Store`] batch.
    Stored {
        /// The batch.
        batch: BatchId,
        /// The events the store removed (they join the seen-not-stored set), or `Err`
        /// with a message if nothing of the batch was committed.
        result: Result<Vec<Event>, String>,
    },
    /// Events stored by someone else (a client of our relay) or loaded at start-up:
    /// they feed the index at once (discovery is immediate).
    LocalEvents {
        /// The events.
        events: Vec<Event>,
    },
    /// Checkpoints restored from the store at start-up.
    Checkpoints {
        /// The checkpoints.
        checkpoints: Vec<Checkpoint>,
    },
    /// Seen-not-stored entries restored from the store at start-up (see
    /// [`Output::Remember`]).
    Remembered {
        /// The entries.
        entries: Vec<SeenEntry>,
    },
    /// An event a client of our relay published, its id and signature already verified
    /// by the caller: it goes through acceptance (with the configured announcement
    /// policy) and, when accepted, to the store and the index; answered with
    /// [`Output::Published`].
    Publish {
        /// Names the answer.
        token: PublishId,
        /// The event.
        event: Event,
        /// Bytes of its JSON, for the size limit.
        json_bytes: usize,
    },
}

/// What the engine asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a WebSocket to the relay.
    Connect {
        /// The relay.
        relay: RelayUrl,
    },
    /// Fetch the relay's NIP-11 document and answer with [`Input::Info`].
    FetchInfo {
        /// The relay.
        relay: RelayUrl,
    },
    /// Send a text frame.
    Send {
        /// The relay.
        relay: RelayUrl,
        /// The frame.
        text: String,
    },
    /// Close the WebSocket.
    Close {
        /// The relay.
        relay: RelayUrl,
    },
    /// Answer with [`Input::LocalItems`]: (created_at, id) of stored events matching.
    LoadLocalItems {
        /// The request.
        request: RequestId,
        /// The filter.
        filter: Filter,
    },
    /// Verify ids and signatures; answer with [`Input::Verified`].
    Verify {
        /// The batch.
        batch: BatchId,
        /// The events.
        events: Vec<Event>,
    },
    /// Store these events and remove those; answer with [`Input::Stored`].
    Store {
        /// The batch.
        batch: BatchId,
        /// Events to store.
        events: Vec<Event>,
        /// Events to remove (if the store holds them and the author matches).
        remove: Vec<Removal>,
    },
    /// Persist this checkpoint.
    Checkpoint(Checkpoint),
    /// Persist these ids seen and not stored (rejected, superseded, deleted) until they
    /// expire; restore them with [`Input::Remembered`], so a restarted reconciliation
    /// does not ask for them again.
    Remember(Vec<SeenEntry>),
    /// A relay changed phase.
    Status {
        /// The relay.
        relay: RelayUrl,
        /// Its new phase.
        phase: Phase,
        /// Why it failed, when it enters Backoff or Dead: the transport's reason for the
        /// disconnection, or a connect timeout.
        error: Option<String>,
    },
    /// What became of an [`Input::Publish`].
    Published {
        /// The token it came with.
        token: PublishId,
        /// Stored, rejected, or the store failed.
        outcome: PublishOutcome,
    },
}

/// An event on its way from a relay to the store.
struct Pipe {
    relay: RelayId,
    job: Option<JobId>,
    event: Event,
}

/// The relay fetching an id by `ids` (a NIP-77 need, or a copy that failed
/// verification), the job waiting for it there, and other relays' jobs waiting too.
struct FetchOwner {
    relay: RelayId,
    job: Option<JobId>,
    waiters: Vec<(RelayId, JobId)>,
    /// Already asked again once: the next failure gives up at this relay.
    retried: bool,
}

/// Ids recently stored, bounded: a copy from another relay is not verified and written
/// again.
#[derive(Default)]
struct RecentIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    const CAPACITY: usize = 200_000;

    fn insert(&mut self, id: EventId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }
}

/// What a relay session's historic jobs cover for keys already confirmed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// A quick reconnect (or a catch-up after losses): everything from `from` on.
    Quick { from: Timestamp },
    /// First connection of this run (unless its checkpoints are recent: see
    /// `restart_from`), or a long disconnection: NIP-77 over everything, paging (without
    /// NIP-77) only from the checkpoints — a restart is not a re-download.
    Fresh,
    /// The daily full reconciliation: everything, by either method — the only way a
    /// relay without NIP-77 yields events that arrived there late with old timestamps.
    Full,
}

/// Whether the ingest queue, with `room` left of `max_queue`, can take a request for
/// `wanted` events: room for all of them, or for a quarter of the queue when they are
/// more (so one large request does not wait for the queue to empty).
fn ingest_takes(room: usize, wanted: usize, max_queue: usize) -> bool {
    room >= wanted.min((max_queue / 4).max(1))
}

/// How a job starts.
enum Start {
    Paging,
    Probe,
    Negentropy,
}

/// Engine-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events handed to the store.
    pub stored: u64,
    /// Store batches that failed.
    pub store_failures: u64,
    /// Frames from relays the engine does not know.
    pub unknown_relay_frames: u64,
    /// Events clients published.
    pub published: PublishStats,
}

/// The sync engine.
pub struct SyncEngine {
    config: EngineConfig,
    jitter: Jitter,
    index: RepoIndex,
    work: WorkState,
    acceptor: Acceptor,
    seen: SeenSet,
    relays: HashMap<RelayId, RelayState>,
    outputs: VecDeque<Output>,
    next_id: u64,
    loading: HashMap<RequestId, (RelayId, JobId)>,
    to_verify: Vec<Pipe>,
    verifying: HashMap<BatchId, Vec<Pipe>>,
    storing: HashMap<BatchId, Vec<(RelayId, Option<JobId>, EventId)>>,
    /// Store batches of events clients published.
    publishing: HashMap<BatchId, (PublishId, EventId)>,
    /// Published events waiting for what they reference.
    orphans: publish::Orphans,
    in_pipeline: HashSet<EventId>,
    fetching: HashMap<EventId, FetchOwner>,
    key_jobs: HashMap<(RelayId, WorkKey), (u32, Time)>,
    /// The relay job running a key's historic sync: other relays' jobs for the key wait
    /// for it, then reconcile against what it stored instead of downloading it again.
    leases: HashMap<WorkKey, (RelayId, u32)>,
    recent: RecentIds,
    /// Seen-not-stored entries not yet handed out for persisting.
    remembered: Vec<SeenEntry>,
    stats: EngineStats,
    now: Time,
}

impl SyncEngine {
    /// An engine with nothing tracked yet.
    pub fn new(config: EngineConfig) -> Self {
        let mut index = RepoIndex::new(config.index.clone());
        let mut relays = HashMap::new();
        for url in &config.bootstrap_relays {
            let id = index.intern_relay(url);
            relays.insert(id, RelayState::new(url.clone(), true));
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
            to_verify: Vec::new(),
            verifying: HashMap::new(),
            storing: HashMap::new(),
            publishing: HashMap::new(),
            orphans: publish::Orphans::new(),
            in_pipeline: HashSet::new(),
            fetching: HashMap::new(),
            key_jobs: HashMap::new(),
            leases: HashMap::new(),
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
        self.in_pipeline.is_empty()
            && self.to_verify.is_empty()
            && self.relays.iter().all(|(id, r)| match r.phase {
                Phase::Open => {
                    r.jobs.is_empty()
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
        let idle_but_wanted = self
            .relays
            .iter()
            .any(|(id, r)| r.phase == Phase::Idle && self.wanted(*id));
        if idle_but_wanted {
            return Some(self.now);
        }
        let live_interval = self.config.timing.live_update_interval;
        self.relays
            .values()
            .filter_map(|r| r.next_deadline(live_interval))
            .chain(self.orphans_deadline())
            .min()
    }

    /// Processes one input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        self.now = now;
        match input {
            Input::Connected { relay } => self.on_connected(&relay),
            Input::Disconnected { relay, reason } => self.on_disconnected(&relay, reason),
            Input::Frame { relay, text } => self.on_frame(&relay, &text),
            Input::Info { relay, document } => {
                if let Some(state) = self.relay_mut(&relay) {
                    state.set_info(document.as_deref());
                }
            }
            Input::LocalItems { request, items } => self.on_local_items(request, items),
            Input::Verified { batch, valid } => self.on_verified(batch, &valid),
            Input::Stored { batch, result } => self.on_stored(batch, result),
            Input::LocalEvents { events } => self.on_local_events(&events),
            Input::Checkpoints { checkpoints } => self.on_checkpoints(checkpoints),
            Input::Remembered { entries } => {
                let now = now.timestamp();
                for entry in entries.into_iter().filter(|e| e.expires_at > now) {
                    self.seen.insert(entry);
                }
            }
            Input::Publish {
                token,
                event,
                json_bytes,
            } => self.on_publish(token, event, json_bytes),
        }
        self.drive();
    }

    /// Processes deadlines that passed at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        let ids: Vec<RelayId> = self.relays.keys().copied().collect();
        for id in ids {
            self.relay_timeouts(id);
        }
        self.seen.expire(now.timestamp());
        self.expire_orphans();
        self.drive();
    }

    // ---------------------------------------------------------------------------------
    // Connections

    fn relay_mut(&mut self, url: &RelayUrl) -> Option<&mut RelayState> {
        let id = self.index.names().relay_id(url)?;
        self.relays.get_mut(&id)
    }

    fn relay_id(&self, url: &RelayUrl) -> Option<RelayId> {
        self.index
            .names()
            .relay_id(url)
            .filter(|id| self.relays.contains_key(id))
    }

    fn set_phase(&mut self, id: RelayId, phase: Phase) {
        self.set_phase_because(id, phase, None);
    }

    /// Sets the phase and reports it, with why, when it changed.
    fn set_phase_because(&mut self, id: RelayId, phase: Phase, error: Option<String>) {
        if let Some(relay) = self.relays.get_mut(&id) {
            if relay.phase != phase {
                relay.phase = phase;
                self.outputs.push_back(Output::Status {
                    relay: relay.url.clone(),
                    phase,
                    error,
                });
            }
        }
    }

    fn wanted(&self, id: RelayId) -> bool {
        self.index.targets().item_count(id) > 0 || self.relays.get(&id).is_some_and(|r| r.bootstrap)
    }

    fn on_connected(&mut self, url: &RelayUrl) {
        let Some(id) = self.relay_id(url) else {
            return;
        };
        let now = self.now;
        let timing = self.config.timing.clone();
        let restart_from = self.restart_from(id);
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if !matches!(relay.phase, Phase::Connecting { .. }) {
            return;
        }
        relay.recovered();
        let quick = relay
            .gap(now)
            .is_some_and(|gap| gap < timing.quick_reconnect_window);
        let catch_up_from = relay
            .disconnected_at
            .filter(|_| quick)
            .map(|t| (t - timing.since_margin).timestamp())
            .or(restart_from);
        if !quick {
            relay.nip77 = relay::Nip77::Unknown;
            relay.full_reconcile_at = Some(
                now + self
                    .jitter
                    .between(timing.full_reconcile_min, timing.full_reconcile_max),
            );
        }
        relay.connected_at = Some(now);
        relay.subs.clear();
        relay.closing_live.clear();
        relay.live_tail = None;
        relay.jobs.clear();
        relay.fetch_queue.clear();
        relay.live_dirty = true;
        self.key_jobs.retain(|(r, _), _| *r != id);
        self.set_phase(id, Phase::Open);
        let session = match catch_up_from {
            Some(from) => Session::Quick { from },
            None => Session::Fresh,
        };
        self.schedule_session(id, session);
    }

    /// For a relay not yet connected in this run (a restart) whose checkpoints are all
    /// younger than the restart catch-up window: the oldest of them less the margin, to
    /// catch up from as after a quick reconnect (a checkpoint is earlier than the
    /// disconnection it precedes, so this window covers the gap). A page reload is then
    /// a few catch-up REQs, not a reconciliation of every filter against the store.
    fn restart_from(&self, id: RelayId) -> Option<Timestamp> {
        let relay = self.relays.get(&id)?;
        if relay.connected_at.is_some() || relay.disconnected_at.is_some() {
            return None;
        }
        let timing = &self.config.timing;
        let oldest = self
            .index
            .targets()
            .items(id)
            .flat_map(|item| {
                item.layers().iter().map(move |layer| WorkKey {
                    layer: *layer,
                    item,
                })
            })
            // A filter never confirmed (a repository tracked since) has no checkpoint to
            // catch up from: the restart reconciles.
            .map(|key| self.work.confirmed_at(id, key))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()?;
        let age = self
            .now
            .timestamp()
            .as_secs()
            .saturating_sub(oldest.as_secs());
        (age < timing.restart_catch_up_window.as_secs()).then(|| {
            Timestamp::from(
                oldest
                    .as_secs()
                    .saturating_sub(timing.since_margin.as_secs()),
            )
        })
    }

    fn on_disconnected(&mut self, url: &RelayUrl, reason: String) {
        let Some(id) = self.relay_id(url) else {
            return;
        };
        let now = self.now;
        let was_open = self.relays.get(&id).is_some_and(|r| r.phase == Phase::Open);
        self.end_session(id);
        if let Some(relay) = self.relays.get_mut(&id) {
            if was_open {
                relay.disconnected_at = Some(now);
            }
            let phase = relay.fail(now, &self.config.timing, &mut self.jitter);
            let reason = if reason.is_empty() {
                "connection closed".to_owned()
            } else {
                reason
            };
            relay.last_error = Some(reason.clone());
            self.set_phase_because(id, phase, Some(reason));
        }
    }

    /// Forgets a relay's subscriptions and jobs; its fetches pass to waiters.
    fn end_session(&mut self, id: RelayId) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.subs.clear();
            relay.closing_live.clear();
            relay.live_tail = None;
            relay.jobs.clear();
            relay.fetch_queue.clear();
            relay.live_dirty = true;
        }
        self.key_jobs.retain(|(r, _), _| *r != id);
        self.leases.retain(|_, (relay, _)| *relay != id);
        let owned: Vec<EventId> = self
            .fetching
            .iter()
            .filter(|(_, f)| f.relay == id)
            .map(|(eid, _)| *eid)
            .collect();
        for eid in owned {
            self.hand_over_fetch(eid);
        }
    }

    fn relay_timeouts(&mut self, id: RelayId) {
        let now = self.now;
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        match relay.phase {
            Phase::Connecting { deadline } if now >= deadline => {
                self.outputs.push_back(Output::Close {
                    relay: relay.url.clone(),
                });
                let url = relay.url.clone();
                self.on_disconnected(&url, "connect timeout".to_owned());
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
        if let Some(r) = self.relays.get_mut(&id) {
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
            self.schedule_session(id, Session::Full);
        }
        let expired: Vec<JobId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.jobs
                    .values()
                    .filter(|j| match &j.state {
                        JobState::Paging(p) => !p.parked && now >= p.deadline,
                        JobState::Neg(n) => now >= n.deadline,
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
        let fetches: Vec<String> = self
            .relays
            .get(&id)
            .map(|r| {
                r.subs
                    .iter()
                    .filter(|(_, s)| matches!(s, Sub::Fetch(f) if now >= f.deadline))
                    .map(|(sub, _)| sub.clone())
                    .collect()
            })
            .unwrap_or_default();
        for sub in fetches {
            self.end_fetch(id, &sub, false);
        }
    }

    // ---------------------------------------------------------------------------------
    // Frames

    fn send(&mut self, id: RelayId, frame: &ClientFrame) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let text = frame.to_json();
        relay.stats.bytes_out += text.len() as u64;
        if matches!(
            frame,
            ClientFrame::Req { .. } | ClientFrame::NegOpen { .. } | ClientFrame::NegMsg { .. }
        ) {
            relay.stats.round_trips += 1;
        }
        self.outputs.push_back(Output::Send {
            relay: relay.url.clone(),
            text,
        });
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn new_sub(&mut self) -> String {
        format!("gs{:x}", self.new_id())
    }

    fn close_sub(&mut self, id: RelayId, sub: &str) {
        let removed = self.relays.get_mut(&id).and_then(|r| r.subs.remove(sub));
        match removed {
            Some(Sub::Job(job)) => {
                let neg = self
                    .relays
                    .get(&id)
                    .and_then(|r| r.jobs.get(&job))
                    .is_some_and(|j| matches!(j.state, JobState::Neg(_)));
                let subscription = sub.to_owned();
                if neg {
                    self.send(id, &ClientFrame::NegClose { subscription });
                } else {
                    self.send(id, &ClientFrame::Close { subscription });
                }
            }
            Some(_) => self.send(
                id,
                &ClientFrame::Close {
                    subscription: sub.to_owned(),
                },
            ),
            None => {}
        }
    }

    fn on_frame(&mut self, url: &RelayUrl, text: &str) {
        let Some(id) = self.relay_id(url) else {
            self.stats.unknown_relay_frames += 1;
            return;
        };
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        relay.stats.bytes_in += text.len() as u64;
        if relay.phase != Phase::Open {
            relay.stats.bad_frame("not-open");
            return;
        }
        let frame = match parse_relay_frame(text, MAX_FRAME_BYTES) {
            Ok(frame) => frame,
            Err(e) => {
                relay.stats.bad_frame(e.as_str());
                return;
            }
        };
        match frame {
            RelayFrame::Event {
                subscription,
                event,
            } => self.on_event(id, &subscription, *event, text.len()),
            RelayFrame::Eose { subscription } => self.on_eose(id, &subscription),
            RelayFrame::Closed {
                subscription,
                message,
            } => self.on_closed(id, &subscription, &message),
            RelayFrame::Notice { message } => self.on_notice(id, &message),
            RelayFrame::NegMsg {
                subscription,
                message,
            } => self.on_neg_msg(id, &subscription, &message),
            RelayFrame::NegErr {
                subscription,
                message,
            } => self.on_neg_err(id, &subscription, &message),
            RelayFrame::Ok { .. } | RelayFrame::Auth { .. } | RelayFrame::Count { .. } => {}
        }
    }

    fn on_event(&mut self, id: RelayId, sub: &str, event: Event, bytes: usize) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        relay.stats.events_received += 1;
        let opts = MatchEventOptions::new();
        let Some(kind) = relay.subs.get(sub) else {
            // A replaced live subscription, until the relay answered its successor.
            let Some(closing) = relay.closing_live.get(sub) else {
                relay.stats.bad_frame("unknown-subscription");
                return;
            };
            if !closing.filters.iter().any(|f| f.match_event(&event, opts)) {
                relay.stats.reject(Reject::NotRequested.as_str());
                return;
            }
            self.admit(id, None, event, bytes);
            return;
        };
        let (requested, job) = match kind {
            Sub::Live(live) => (
                live.filters.iter().any(|f| f.match_event(&event, opts)),
                None,
            ),
            Sub::Job(job) => {
                let matches = relay
                    .jobs
                    .get(job)
                    .is_some_and(|j| j.filter.match_event(&event, opts));
                (matches, Some(*job))
            }
            Sub::Fetch(fetch) => (fetch.filter.match_event(&event, opts), None),
        };
        if !requested {
            relay.stats.reject(Reject::NotRequested.as_str());
            return;
        }
        if let Some(Sub::Fetch(fetch)) = relay.subs.get_mut(sub) {
            fetch.delivered.insert(event.id);
        }
        if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
            if let JobState::Paging(pager) = &mut job.state {
                if !pager.on_event(event.id, event.created_at) {
                    return;
                }
            }
        }
        self.admit(id, job, event, bytes);
    }

    /// A requested event from relay `id` (for `job`, if any): prechecked, then queued
    /// for verification unless known or already on its way.
    fn admit(&mut self, id: RelayId, job: Option<JobId>, event: Event, bytes: usize) {
        let now = self.now;
        let max_queue = self.config.flow.max_ingest_queue;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if let Err(reject) = self.acceptor.precheck(&event, bytes, now.timestamp()) {
            relay.stats.reject(reject.as_str());
            if reject.remembered() {
                let entry = self.seen.remember(&event, now.timestamp());
                self.remembered.push(entry);
            }
            // We got the event and decided: a fetch of it is over.
            self.resolve_fetch(&event.id);
            return;
        }
        if self.seen.contains(&event.id) || self.recent.contains(&event.id) {
            self.resolve_fetch(&event.id);
            return;
        }
        if self.in_pipeline.contains(&event.id) {
            return;
        }
        if self.in_pipeline.len() >= max_queue {
            relay.stats.dropped += 1;
            if self.fetching.contains_key(&event.id) {
                relay.stats.dropped_fetched += 1;
            }
            relay.needs_catch_up.get_or_insert(now);
            if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
                job.lossy = true;
            }
            self.drop_fetch(&event.id);
            return;
        }
        if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
            job.outstanding += 1;
        }
        self.in_pipeline.insert(event.id);
        self.to_verify.push(Pipe {
            relay: id,
            job,
            event,
        });
    }

    fn on_eose(&mut self, id: RelayId, sub: &str) {
        let Some(kind) = self.relays.get(&id).and_then(|r| r.subs.get(sub)).cloned() else {
            return;
        };
        match kind {
            Sub::Live(_) => {
                // The relay answered: replaced subscriptions sent all they will.
                let now = self.now;
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay
                        .closing_live
                        .retain(|_, c| c.successor != sub && c.until > now);
                }
            }
            Sub::Fetch(_) => self.end_fetch(id, sub, true),
            Sub::Job(job) => self.page_ended(id, sub, job),
        }
    }

    fn page_ended(&mut self, id: RelayId, sub: &str, job_id: JobId) {
        let outcome = {
            let Some(job) = self
                .relays
                .get_mut(&id)
                .and_then(|r| r.jobs.get_mut(&job_id))
            else {
                return;
            };
            let JobState::Paging(pager) = &mut job.state else {
                return;
            };
            let outcome = pager.on_eose();
            (outcome, pager.full(), pager.observed_cap())
        };
        let (outcome, full, observed_cap) = outcome;
        self.close_sub(id, sub);
        // A cap the relay evidently applies silently is its result limit from now on:
        // later walks (and `ids` fetches) ask for no more, and recognise a full page.
        if let Some(cap) = observed_cap {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.learn_result_cap(cap);
            }
        }
        let narrow = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .and_then(|j| j.narrow.map(|n| (n, j.keys.clone(), j.filter.clone())));
        match (outcome, narrow) {
            (PageOutcome::StuckSecond(_), Some((narrow, keys, filter))) => {
                // The one second overflowed this (half of a) filter too: halve again.
                self.halve_narrow(id, keys, &filter, narrow);
                self.job_received_all(id, job_id);
                return;
            }
            (PageOutcome::StuckSecond(second), None) => {
                // Paging goes on below the second; the second gets a job of its own.
                let job = self.relays.get(&id).and_then(|r| r.jobs.get(&job_id));
                if let Some((keys, filter)) = job.map(|j| (j.keys.clone(), j.filter.clone())) {
                    let narrow = Narrow {
                        second,
                        cap: full,
                        overflowed: true,
                    };
                    self.add_narrow_job(id, keys, filter, narrow);
                }
            }
            _ => {}
        }
        match outcome {
            PageOutcome::Done => self.job_received_all(id, job_id),
            PageOutcome::Next | PageOutcome::StuckSecond(_) => self.send_page(id, job_id),
        }
    }

    /// Asks for a paging job's next page — or parks the job when the ingest queue has
    /// no room for a page: a relay answering faster than we verify and store would
    /// otherwise fill it, and what is dropped there is downloaded again.
    fn send_page(&mut self, id: RelayId, job_id: JobId) {
        let room = self.ingest_room();
        let now = self.now;
        let eose_timeout = self.config.timing.eose_timeout;
        let max_queue = self.config.flow.max_ingest_queue;
        let new_sub = self.new_sub();
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        let JobState::Paging(pager) = &mut job.state else {
            return;
        };
        if !ingest_takes(room, pager.limit(), max_queue) {
            pager.parked = true;
            return;
        }
        pager.parked = false;
        pager.sub = new_sub.clone();
        pager.deadline = now + eose_timeout;
        let filter = pager.page_filter(&job.filter);
        relay.subs.insert(new_sub.clone(), Sub::Job(job_id));
        self.send(
            id,
            &ClientFrame::Req {
                subscription: new_sub,
                filters: vec![filter],
            },
        );
    }

    /// Paging jobs parked between pages go on, while the ingest queue has room.
    fn resume_parked(&mut self, id: RelayId) {
        let parked: Vec<JobId> = self
            .relays
            .get(&id)
            .map(|r| {
                r.jobs
                    .values()
                    .filter(|j| matches!(&j.state, JobState::Paging(p) if p.parked))
                    .map(|j| j.id)
                    .collect()
            })
            .unwrap_or_default();
        for job_id in parked {
            self.send_page(id, job_id);
        }
    }

    /// Events the ingest queue can still take, after what is in it and what the pages
    /// and `ids` fetches in flight may yet bring.
    fn ingest_room(&self) -> usize {
        let in_flight: usize = self
            .relays
            .values()
            .map(|r| {
                r.subs
                    .values()
                    .map(|s| match s {
                        Sub::Fetch(f) => f.ids.len().saturating_sub(f.delivered.len()),
                        Sub::Job(job) => match r.jobs.get(job).map(|j| &j.state) {
                            Some(JobState::Paging(p)) => p.limit(),
                            _ => 0,
                        },
                        Sub::Live(_) => 0,
                    })
                    .sum::<usize>()
            })
            .sum();
        self.config
            .flow
            .max_ingest_queue
            .saturating_sub(self.in_pipeline.len() + in_flight)
    }

    /// A one-second filter overflowed a page: its halves are narrowed in turn; one that
    /// cannot be halved is reported as an incomplete window (the relay holds more in
    /// that second than it returns, and NIP-77 is not available to list them).
    fn halve_narrow(&mut self, id: RelayId, keys: Vec<WorkKey>, filter: &Filter, narrow: Narrow) {
        let half = Narrow {
            overflowed: false,
            ..narrow
        };
        match halve(filter) {
            Some((a, b)) => {
                self.add_narrow_job(id, keys.clone(), a, half);
                self.add_narrow_job(id, keys, b, half);
            }
            None => {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.stats.incomplete_windows += 1;
                }
            }
        }
    }

    fn on_closed(&mut self, id: RelayId, sub: &str, message: &str) {
        let now = self.now;
        let cooldown = self.config.timing.rate_limit_cooldown;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(kind) = relay.subs.remove(sub) else {
            // e.g. CLOSED right after EOSE for a subscription we already ended
            return;
        };
        let class = reason_class(message);
        if class == ReasonClass::RateLimited {
            relay.quiet_until = Some(now + cooldown);
        }
        match kind {
            Sub::Live(_) => {
                if relay.live_tail.as_deref() == Some(sub) {
                    relay.live_tail = None;
                }
                relay.live_dirty = true;
                relay.quiet_until.get_or_insert(now + cooldown);
            }
            Sub::Fetch(fetch) => self.fetch_ended_with(id, *fetch, false),
            Sub::Job(job) => {
                let neg = relay
                    .jobs
                    .get(&job)
                    .is_some_and(|j| matches!(j.state, JobState::Neg(_)));
                match class {
                    ReasonClass::RateLimited => self.requeue(id, job, false),
                    ReasonClass::Blocked if neg && is_too_many_records(message) => {
                        if relay.nip77 == relay::Nip77::Probing {
                            relay.nip77 = relay::Nip77::Supported;
                        }
                        self.split_window(id, job)
                    }
                    ReasonClass::AuthRequired | ReasonClass::Restricted | ReasonClass::Blocked => {
                        self.abandon_job(id, job)
                    }
                    _ => self.requeue(id, job, true),
                }
            }
        }
    }

    fn on_notice(&mut self, id: RelayId, message: &str) {
        let now = self.now;
        let cooldown = self.config.timing.rate_limit_cooldown;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        match notice_class(message) {
            NoticeClass::NegentropyUnsupported => {
                if relay.nip77 == relay::Nip77::Probing {
                    relay.nip77 = relay::Nip77::Unsupported;
                    let probe = relay.jobs.values().find(|j| j.probe).map(|j| j.id);
                    if let Some(job) = probe {
                        self.fall_back_to_req(id, job);
                    }
                }
            }
            NoticeClass::TooManySubscriptions => {
                let open = relay.subs.len();
                relay.learn_subscription_cap(open.saturating_sub(1).max(1));
                let newest = relay
                    .jobs
                    .values()
                    .rev()
                    .find(|j| j.state.subscription().is_some())
                    .map(|j| j.id);
                if let Some(job) = newest {
                    self.requeue(id, job, false);
                }
            }
            NoticeClass::RateLimited => relay.quiet_until = Some(now + cooldown),
            NoticeClass::Other => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // Historic jobs

    /// Plans historic jobs for every key of a relay at the start of a session, a
    /// catch-up or the daily full reconciliation (see [`Session`]).
    fn schedule_session(&mut self, id: RelayId, session: Session) {
        let keys: Vec<WorkKey> = self
            .index
            .targets()
            .items(id)
            .flat_map(|item| {
                item.layers().iter().map(move |layer| WorkKey {
                    layer: *layer,
                    item,
                })
            })
            .collect();
        let margin = self.config.timing.since_margin.as_secs();
        // Confirmed keys: a quick reconnect catches up from the disconnection; a fresh
        // start reconciles them in full with NIP-77, but pages (without NIP-77) only from
        // the oldest of their checkpoints. Unconfirmed keys sync from the beginning.
        let oldest_confirmed = keys
            .iter()
            .filter_map(|k| self.work.confirmed_at(id, *k))
            .min()
            .map(|t| Timestamp::from(t.as_secs().saturating_sub(margin)));
        let mut groups: HashMap<(Layer, bool), Vec<ItemId>> = HashMap::new();
        for key in keys {
            let confirmed = self.work.confirmed_at(id, key).is_some();
            groups
                .entry((key.layer, confirmed))
                .or_default()
                .push(key.item);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by_key(|(group, _)| *group);
        for ((layer, confirmed), items) in groups {
            let (since, paging_since) = match (confirmed, session) {
                (true, Session::Quick { from }) => (Some(from), None),
                (true, Session::Fresh) => (None, oldest_confirmed),
                (true, Session::Full) | (false, _) => (None, None),
            };
            self.schedule_jobs(id, layer, &items, since, paging_since);
        }
        if let Some(relay) = self.relays.get(&id).filter(|r| r.bootstrap) {
            let discovered = relay
                .discovered_at
                .map(|t| Timestamp::from(t.timestamp().as_secs().saturating_sub(margin)));
            // Discovery has its own checkpoint: caught up from it in a quick session,
            // else reconciled in full and paged from there.
            let (since, paging_since) = match session {
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

    fn add_job(
        &mut self,
        id: RelayId,
        keys: Vec<WorkKey>,
        filter: Filter,
        paging_since: Option<Timestamp>,
    ) -> JobId {
        let job_id = self.new_id();
        let now = self.now;
        for key in &keys {
            let entry = self.key_jobs.entry((id, *key)).or_insert((0, now));
            entry.0 += 1;
            entry.1 = entry.1.min(now);
        }
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.jobs.insert(
                job_id,
                Job {
                    id: job_id,
                    keys,
                    filter,
                    started_at: now,
                    attempts: 0,
                    state: JobState::Queued,
                    outstanding: 0,
                    drain_deadline: None,
                    lossy: false,
                    probe: false,
                    paging_since,
                    not_before: None,
                    lossy_runs: 0,
                    narrow: None,
                    leased: false,
                    catch_up: false,
                },
            );
        }
        job_id
    }

    /// Adds a job narrowing one second of `filter` (see [`Narrow`]) for `keys`.
    fn add_narrow_job(&mut self, id: RelayId, keys: Vec<WorkKey>, filter: Filter, narrow: Narrow) {
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
    fn start_jobs(&mut self, id: RelayId) {
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
            let req_only = self.req_only_peers(id);
            let Some(job) = relay
                .jobs
                .values()
                .filter(|j| matches!(j.state, JobState::Queued))
                .filter(|j| j.not_before.is_none_or(|t| now >= t))
                .find(|j| {
                    j.is_window()
                        || (!self.leased_elsewhere(id, &j.keys)
                            && !self.defers_to(&req_only, &j.keys))
                })
                .map(|j| j.id)
            else {
                return;
            };
            // Only the probe may speak NIP-77 until the relay answered it.
            let probe_running = relay.jobs.values().any(|j| j.probe);
            let window = relay.jobs.get(&job).is_some_and(Job::is_window);
            let start = match relay.nip77 {
                _ if window => Start::Paging,
                relay::Nip77::Unsupported => Start::Paging,
                relay::Nip77::Probing if probe_running => return,
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
            for key in keys {
                let holder = self.leases.entry(key).or_insert((id, 0));
                if holder.0 == id {
                    holder.1 += 1;
                }
            }
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

    /// Whether one of these relays has a job (queued or running) for one of the keys.
    fn defers_to(&self, peers: &[RelayId], keys: &[WorkKey]) -> bool {
        !peers.is_empty()
            && keys.iter().any(|key| {
                peers
                    .iter()
                    .any(|peer| self.key_jobs.contains_key(&(*peer, *key)))
            })
    }

    /// Whether another relay's running jobs hold one of these keys.
    fn leased_elsewhere(&self, id: RelayId, keys: &[WorkKey]) -> bool {
        keys.iter()
            .any(|key| self.leases.get(key).is_some_and(|(relay, _)| *relay != id))
    }

    /// A job stopped running: when no other job of its relay holds them, its keys are
    /// free for other relays.
    fn release(&mut self, id: RelayId, job_id: JobId) {
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
        for key in running {
            if let Some(holder) = self.leases.get_mut(&key) {
                if holder.0 == id {
                    holder.1 = holder.1.saturating_sub(1);
                    if holder.1 == 0 {
                        self.leases.remove(&key);
                    }
                }
            }
        }
    }

    fn start_loading(&mut self, id: RelayId, job_id: JobId, probe: bool) {
        let request = self.new_id();
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        if probe {
            relay.nip77 = relay::Nip77::Probing;
            job.probe = true;
        }
        job.state = JobState::Loading { request };
        self.loading.insert(request, (id, job_id));
        self.outputs.push_back(Output::LoadLocalItems {
            request,
            filter: job.filter.clone(),
        });
    }

    fn on_local_items(&mut self, request: RequestId, items: Vec<(Timestamp, EventId)>) {
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
            self.release_probe(id, job_id);
            self.start_paging(id, job_id);
            return;
        }
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get(&job_id) else {
            return;
        };
        let seen = self.seen.items_matching(&job.filter);
        let all = items
            .into_iter()
            .chain(seen)
            .map(|(t, eid)| (t.as_secs(), eid.to_bytes()));
        let frame_limit = neg::frame_limit(&relay.limits);
        let filter = job.filter.clone();
        match NegInitiator::new(all, frame_limit) {
            Ok((initiator, first)) => {
                let sub = self.new_sub();
                let deadline = self.now + self.config.timing.neg_first_frame_timeout;
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.subs.insert(sub.clone(), Sub::Job(job_id));
                    if let Some(job) = relay.jobs.get_mut(&job_id) {
                        job.state = JobState::Neg(NegRun {
                            sub: sub.clone(),
                            initiator,
                            deadline,
                            answered: false,
                        });
                    }
                }
                self.send(
                    id,
                    &ClientFrame::NegOpen {
                        subscription: sub,
                        filter: Box::new(filter),
                        message: first,
                    },
                );
            }
            Err(_) => {
                self.release_probe(id, job_id);
                self.start_paging(id, job_id);
            }
        }
    }

    /// A probe that never spoke NIP-77 leaves the relay's NIP-77 state unknown.
    fn release_probe(&mut self, id: RelayId, job_id: JobId) {
        if let Some(relay) = self.relays.get_mut(&id) {
            if let Some(job) = relay.jobs.get_mut(&job_id) {
                if job.probe {
                    job.probe = false;
                    if relay.nip77 == relay::Nip77::Probing {
                        relay.nip77 = relay::Nip77::Unknown;
                    }
                }
            }
        }
    }

    fn start_paging(&mut self, id: RelayId, job_id: JobId) {
        let narrow = self
            .relays
            .get(&id)
            .and_then(|r| r.jobs.get(&job_id))
            .and_then(|j| j.narrow.map(|n| (n, j.keys.clone(), j.filter.clone())));
        if let Some((n, keys, filter)) = narrow.as_ref().filter(|(n, ..)| n.overflowed) {
            // Known to overflow a page: asking again would bring the same page.
            self.halve_narrow(id, keys.clone(), filter, *n);
            self.job_received_all(id, job_id);
            return;
        }
        let sub = self.new_sub();
        let deadline = self.now + self.config.timing.eose_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let limit = relay.limits.max_results;
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        if let Some(from) = job.paging_since.take() {
            let since = job.filter.since.map_or(from, |s| s.max(from));
            job.filter = job.filter.clone().since(since);
        }
        let pager = match narrow {
            Some((n, ..)) => Pager::one_second(sub, deadline, limit, n.cap),
            None => Pager::new(sub, deadline, limit),
        };
        job.state = JobState::Paging(pager);
        self.send_page(id, job_id);
    }

    fn on_neg_msg(&mut self, id: RelayId, sub: &str, message: &[u8]) {
        let now = self.now;
        let idle = self.config.timing.neg_idle_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(Sub::Job(job_id)) = relay.subs.get(sub).cloned() else {
            relay.stats.bad_frame("unknown-subscription");
            return;
        };
        if relay.nip77 == relay::Nip77::Probing {
            relay.nip77 = relay::Nip77::Supported;
        }
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        job.probe = false;
        let JobState::Neg(run) = &mut job.state else {
            return;
        };
        run.answered = true;
        run.deadline = now + idle;
        let progress = match run.initiator.step(message) {
            Ok(progress) => progress,
            Err(_) => {
                relay.stats.bad_frame("neg-decode");
                relay.nip77 = relay::Nip77::Unsupported;
                self.close_sub(id, sub);
                self.fall_back_to_req(id, job_id);
                return;
            }
        };
        for need in progress.need {
            self.need(id, Some(job_id), EventId::from_byte_array(need));
        }
        match progress.next {
            Some(next) => self.send(
                id,
                &ClientFrame::NegMsg {
                    subscription: sub.to_owned(),
                    message: next,
                },
            ),
            None => {
                self.close_sub(id, sub);
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.method = relay::Method::Negentropy;
                    relay.stats.jobs_negentropy += 1;
                }
                self.job_received_all(id, job_id);
            }
        }
    }

    fn on_neg_err(&mut self, id: RelayId, sub: &str, message: &str) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(Sub::Job(job_id)) = relay.subs.remove(sub) else {
            return;
        };
        let answered = relay
            .jobs
            .get(&job_id)
            .is_some_and(|j| matches!(&j.state, JobState::Neg(n) if n.answered));
        if relay.nip77 == relay::Nip77::Probing {
            // "Too many records" is NIP-77 working on an oversized filter.
            relay.nip77 = if is_too_many_records(message) {
                relay::Nip77::Supported
            } else if answered {
                relay::Nip77::Probing
            } else {
                relay::Nip77::Unsupported
            };
        }
        if is_too_many_records(message) {
            self.split_window(id, job_id);
        } else {
            self.fall_back_to_req(id, job_id);
        }
    }

    /// The relay refused a NIP-77 session as too large: halve the job's `created_at`
    /// window and reconcile each half (the newer half stays open-ended); a window under
    /// an hour is paged instead, so splitting always ends.
    fn split_window(&mut self, id: RelayId, job_id: JobId) {
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

    /// NIP-77 failed for this job: page it instead.
    fn fall_back_to_req(&mut self, id: RelayId, job_id: JobId) {
        if let Some(relay) = self.relays.get_mut(&id) {
            if let Some(sub) = relay
                .jobs
                .get(&job_id)
                .and_then(|j| j.state.subscription())
                .map(str::to_owned)
            {
                relay.subs.remove(&sub);
            }
            // The NIP-77 verdict is the caller's: a probe that ends here without one
            // leaves the next job to probe again.
            if relay.jobs.get(&job_id).is_some_and(|j| j.probe)
                && relay.nip77 == relay::Nip77::Probing
            {
                relay.nip77 = relay::Nip77::Unknown;
            }
            if let Some(job) = relay.jobs.get_mut(&job_id) {
                job.probe = false;
            }
        }
        self.start_paging(id, job_id);
    }

    fn job_timed_out(&mut self, id: RelayId, job_id: JobId) {
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get(&job_id) else {
            return;
        };
        let silent_neg = matches!(&job.state, JobState::Neg(n) if !n.answered);
        let sub = job.state.subscription().map(str::to_owned);
        if let Some(sub) = sub {
            self.close_sub(id, &sub);
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
    fn requeue(&mut self, id: RelayId, job_id: JobId, failed: bool) {
        self.release(id, job_id);
        let attempts = self.config.flow.job_attempts;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let Some(job) = relay.jobs.get_mut(&job_id) else {
            return;
        };
        let open_sub = job.state.subscription().map(str::to_owned);
        if job.probe && relay.nip77 == relay::Nip77::Probing {
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
        job.started_at = self.now;
        // Tell the relay too, if it still holds the subscription.
        if let Some(sub) = open_sub {
            if self
                .relays
                .get(&id)
                .is_some_and(|r| r.subs.contains_key(&sub))
            {
                self.close_sub(id, &sub);
            }
        }
    }

    /// Gives up on a job: its keys stay unconfirmed (pending keys are released so the
    /// next fresh start adds them again), and it is reported in the counters.
    fn abandon_job(&mut self, id: RelayId, job_id: JobId) {
        self.release(id, job_id);
        let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.remove(&job_id))
        else {
            return;
        };
        if let Some(sub) = job.state.subscription() {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.subs.remove(sub);
                relay.stats.reject("job-abandoned");
            }
        }
        for key in job.keys {
            if self.work.is_pending(id, key) {
                self.work.abandon(id, key);
            }
            self.key_jobs.remove(&(id, key));
        }
    }

    /// The job will receive nothing more; it completes once its events are stored.
    fn job_received_all(&mut self, id: RelayId, job_id: JobId) {
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

    fn try_complete(&mut self, id: RelayId, job_id: JobId) {
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
        if job.keys.is_empty() && relay.bootstrap {
            relay.discovered_at = Some(job.started_at);
            self.outputs.push_back(Output::Checkpoint(Checkpoint {
                relay: url.clone(),
                scope: Scope::Discovery,
                at: job.started_at.timestamp(),
            }));
        }
        for key in job.keys {
            let Some(entry) = self.key_jobs.get_mut(&(id, key)) else {
                continue;
            };
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 > 0 {
                continue;
            }
            let at = entry.1.timestamp();
            self.key_jobs.remove(&(id, key));
            let known = self.work.confirm(id, key, at) || {
                let known = self.work.is_known(id, key);
                if known {
                    self.work.restore(id, key, at);
                }
                known
            };
            if known {
                let item = self.index.names().item(key.item);
                self.outputs.push_back(Output::Checkpoint(Checkpoint {
                    relay: url.clone(),
                    scope: Scope::Item {
                        layer: key.layer,
                        item,
                    },
                    at,
                }));
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Fetching need-ids

    /// Relay `id` has event `eid` and we want it (NIP-77 need, or its copy failed
    /// verification): fetch it by id, unless another relay is already fetching it or a
    /// copy is already on its way to the store (then the job waits for that copy).
    fn need(&mut self, id: RelayId, job: Option<JobId>, eid: EventId) {
        if self.seen.contains(&eid) || self.recent.contains(&eid) {
            return;
        }
        if let Some(owner) = self.fetching.get_mut(&eid) {
            if let (true, Some(job)) = (owner.relay != id, job) {
                owner.waiters.push((id, job));
                self.bump(id, job, 1);
            }
            return;
        }
        self.fetching.insert(
            eid,
            FetchOwner {
                relay: id,
                job,
                waiters: Vec::new(),
                retried: false,
            },
        );
        if let Some(job) = job {
            self.bump(id, job, 1);
        }
        // A copy already on its way to the store is waited for, not downloaded again;
        // should it prove forged (or fail to store), it is fetched from this relay.
        if self.in_pipeline.contains(&eid) {
            return;
        }
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.fetch_queue.push_back(eid);
        }
    }

    /// A fetched copy failed verification: ask its relay once more, then give up there.
    fn refetch(&mut self, eid: EventId) {
        let Some(owner) = self.fetching.get_mut(&eid) else {
            return;
        };
        if owner.retried {
            let (relay, job, waiting) = (owner.relay, owner.job, !owner.waiters.is_empty());
            let now = self.now;
            if let Some(r) = self.relays.get_mut(&relay) {
                r.stats.forged_twice += 1;
                // With nobody else to ask, the job cannot vouch for completeness; a live
                // event without a job is caught up from now on.
                match job.filter(|_| !waiting) {
                    Some(j) => {
                        if let Some(job) = r.jobs.get_mut(&j) {
                            job.lossy = true;
                        }
                    }
                    None if !waiting => {
                        r.needs_catch_up.get_or_insert(now);
                    }
                    None => {}
                }
            }
            self.hand_over_or_resolve(eid);
            return;
        }
        owner.retried = true;
        let relay = owner.relay;
        if let Some(r) = self.relays.get_mut(&relay) {
            r.fetch_queue.push_back(eid);
        }
    }

    fn bump(&mut self, id: RelayId, job_id: JobId, by: usize) {
        if let Some(job) = self
            .relays
            .get_mut(&id)
            .and_then(|r| r.jobs.get_mut(&job_id))
        {
            job.outstanding += by;
        }
    }

    fn settle(&mut self, id: RelayId, job_id: JobId) {
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

    /// A fetched copy was dropped (ingest queue full): the fetch is over, and every job
    /// waiting for it lost it and runs again — the id must not stay "being fetched".
    fn drop_fetch(&mut self, eid: &EventId) {
        let Some(owner) = self.fetching.remove(eid) else {
            return;
        };
        let jobs = owner
            .job
            .map(|j| (owner.relay, j))
            .into_iter()
            .chain(owner.waiters);
        for (relay, job) in jobs {
            if let Some(j) = self
                .relays
                .get_mut(&relay)
                .and_then(|r| r.jobs.get_mut(&job))
            {
                j.lossy = true;
            }
            self.settle(relay, job);
        }
    }

    /// An id's fetch is over (stored, rejected, or given up): its jobs stop waiting.
    fn resolve_fetch(&mut self, eid: &EventId) {
        let Some(owner) = self.fetching.remove(eid) else {
            return;
        };
        if let Some(job) = owner.job {
            self.settle(owner.relay, job);
        }
        for (relay, job) in owner.waiters {
            self.settle(relay, job);
        }
    }

    /// The fetching relay is gone or gave up: a waiting relay whose job is still running
    /// fetches the id instead; with none, the fetch is over.
    fn hand_over_fetch(&mut self, eid: EventId) {
        let Some(owner) = self.fetching.remove(&eid) else {
            return;
        };
        let alive = |relays: &HashMap<RelayId, RelayState>, (relay, job): &(RelayId, JobId)| {
            relays
                .get(relay)
                .is_some_and(|r| r.phase == Phase::Open && r.jobs.contains_key(job))
        };
        let mut waiters: Vec<(RelayId, JobId)> = owner
            .waiters
            .into_iter()
            .filter(|w| alive(&self.relays, w))
            .collect();
        if waiters.is_empty() {
            return;
        }
        let (relay, job) = waiters.remove(0);
        self.fetching.insert(
            eid,
            FetchOwner {
                relay,
                job: Some(job),
                waiters,
                retried: false,
            },
        );
        if let Some(r) = self.relays.get_mut(&relay) {
            r.fetch_queue.push_back(eid);
        }
    }

    fn start_fetches(&mut self, id: RelayId) {
        let now = self.now;
        let deadline = now + self.config.timing.eose_timeout;
        loop {
            let Some(relay) = self.relays.get_mut(&id) else {
                return;
            };
            let in_flight = relay
                .subs
                .values()
                .filter(|s| matches!(s, Sub::Fetch(_)))
                .count();
            if relay.fetch_queue.is_empty()
                || in_flight >= self.config.flow.id_fetches_per_relay
                || !relay.may_subscribe(now)
            {
                return;
            }
            let room = self.ingest_room();
            let Some(relay) = self.relays.get_mut(&id) else {
                return;
            };
            // Like pages, fetches wait until the ingest queue can take what they ask.
            let wanted = relay.limits.max_results.min(relay.fetch_queue.len());
            if !ingest_takes(room, wanted, self.config.flow.max_ingest_queue) {
                return;
            }
            let take = wanted.min(room);
            let ids: Vec<EventId> = relay.fetch_queue.drain(..take).collect();
            let Some(filter) = ids_filters(&ids, &relay.limits).into_iter().next() else {
                return;
            };
            let sub = self.new_sub();
            let Some(relay) = self.relays.get_mut(&id) else {
                return;
            };
            relay.subs.insert(
                sub.clone(),
                Sub::Fetch(Box::new(Fetch {
                    filter: filter.clone(),
                    ids,
                    deadline,
                    delivered: HashSet::new(),
                })),
            );
            self.send(
                id,
                &ClientFrame::Req {
                    subscription: sub,
                    filters: vec![filter],
                },
            );
        }
    }

    /// An `ids` REQ ended (EOSE, CLOSED or timeout): close it and retry what it did not
    /// deliver.
    fn end_fetch(&mut self, id: RelayId, sub: &str, at_eose: bool) {
        let Some(Sub::Fetch(fetch)) = self.relays.get_mut(&id).and_then(|r| r.subs.remove(sub))
        else {
            return;
        };
        self.send(
            id,
            &ClientFrame::Close {
                subscription: sub.to_owned(),
            },
        );
        self.fetch_ended_with(id, *fetch, at_eose);
    }

    fn fetch_ended_with(&mut self, id: RelayId, fetch: Fetch, at_eose: bool) {
        // Fewer events than ids at EOSE: the relay caps results silently below what we
        // assumed. Learn the cap; what it did not send is asked again, not given up.
        // Learned once per session and only from a substantial answer, so ids a relay
        // really lacks cannot shrink the cap step by step.
        let received = fetch.delivered.len();
        let capped = at_eose
            && received >= 10
            && received < fetch.ids.len()
            && self.relays.get(&id).is_some_and(|r| !r.cap_learned);
        if capped {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.learn_result_cap(received);
                relay.cap_learned = true;
            }
        }
        for eid in fetch.ids {
            let owned = self.fetching.get(&eid).is_some_and(|o| o.relay == id)
                && !fetch.delivered.contains(&eid)
                && !self.in_pipeline.contains(&eid);
            if !owned {
                continue;
            }
            if capped {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.fetch_queue.push_back(eid);
                }
            } else if self.fetching.get(&eid).is_some_and(|o| o.retried) {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.stats.undelivered_ids += 1;
                }
                self.hand_over_or_resolve(eid);
            } else {
                self.refetch(eid);
            }
        }
    }

    /// Given up at one relay: another waiting relay tries, or the id is settled.
    fn hand_over_or_resolve(&mut self, eid: EventId) {
        let has_waiters = self
            .fetching
            .get(&eid)
            .is_some_and(|o| !o.waiters.is_empty());
        if has_waiters {
            let owner = self
                .fetching
                .get(&eid)
                .and_then(|o| o.job.map(|j| (o.relay, j)));
            self.hand_over_fetch(eid);
            if let Some((relay, job)) = owner {
                self.settle(relay, job);
            }
        } else {
            self.resolve_fetch(&eid);
        }
    }

    // ---------------------------------------------------------------------------------
    // Verification, acceptance, storage

    fn flush_verify(&mut self) {
        if self.to_verify.is_empty() {
            return;
        }
        let batch = self.new_id();
        let pipes = std::mem::take(&mut self.to_verify);
        let events = pipes.iter().map(|p| p.event.clone()).collect();
        self.verifying.insert(batch, pipes);
        self.outputs.push_back(Output::Verify { batch, events });
    }

    fn on_verified(&mut self, batch: BatchId, valid: &[bool]) {
        let Some(mut pipes) = self.verifying.remove(&batch) else {
            return;
        };
        let now = self.now.timestamp();
        // Announcements first, then roots, so later events of the batch see them tracked.
        let rank = |e: &Event| {
            if e.kind == kinds::REPO_ANNOUNCEMENT {
                0
            } else if nip34::is_root(e) {
                1
            } else {
                2
            }
        };
        let mut flagged: Vec<(Pipe, bool)> = pipes
            .drain(..)
            .enumerate()
            .map(|(i, p)| (p, valid.get(i).copied().unwrap_or(false)))
            .collect();
        flagged.sort_by_key(|(p, _)| rank(&p.event));
        let mut events = Vec::new();
        let mut remove = Vec::new();
        let mut entries = Vec::new();
        let mut changes: Vec<TargetChange> = Vec::new();
        let mut index_changed = false;
        for (pipe, ok) in flagged {
            let verdict = if ok {
                self.acceptor.decide(&pipe.event, &self.index)
            } else {
                Verdict::Reject(Reject::BadSignature)
            };
            match verdict {
                Verdict::Store { remove: r } => {
                    let update = self.apply_to_index(&pipe.event);
                    index_changed |= update.applied > 0;
                    changes.extend(update.changes);
                    remove.extend(r);
                    entries.push((pipe.relay, pipe.job, pipe.event.id));
                    events.push(pipe.event);
                }
                Verdict::Reject(reject) => {
                    if let Some(relay) = self.relays.get_mut(&pipe.relay) {
                        relay.stats.reject(reject.as_str());
                    }
                    if reject.remembered() {
                        let entry = self.seen.remember(&pipe.event, now);
                        self.remembered.push(entry);
                    }
                    let forged = reject == Reject::BadSignature;
                    if forged {
                        // A forged copy is not the event: fetch a real one by id (the
                        // job, if any, waits for it).
                        self.in_pipeline.remove(&pipe.event.id);
                        if self.fetching.contains_key(&pipe.event.id) {
                            self.refetch(pipe.event.id);
                        } else {
                            self.need(pipe.relay, pipe.job, pipe.event.id);
                        }
                    }
                    self.left_pipeline(pipe.relay, pipe.job, &pipe.event.id, !forged);
                }
            }
        }
        if !changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &changes, &self.work);
            self.take_actions(&actions);
        }
        if !events.is_empty() {
            let batch = self.new_id();
            self.storing.insert(batch, entries);
            self.outputs.push_back(Output::Store {
                batch,
                events,
                remove,
            });
        }
        if index_changed {
            self.retry_orphans();
        }
    }

    /// Applies an accepted event to the repo index when it can change it (an
    /// announcement, a deletion, a root).
    fn apply_to_index(&mut self, event: &Event) -> IndexUpdate {
        if event.kind == kinds::REPO_ANNOUNCEMENT
            || event.kind == kinds::DELETION
            || nip34::is_root(event)
        {
            self.index.apply([event])
        } else {
            IndexUpdate::default()
        }
    }

    /// An event left the pipeline (stored or rejected). `settled` says whether a fetch
    /// for it is over (a bad signature is not the event we need: try again elsewhere).
    fn left_pipeline(&mut self, relay: RelayId, job: Option<JobId>, eid: &EventId, settled: bool) {
        self.in_pipeline.remove(eid);
        if let Some(job) = job {
            self.settle(relay, job);
        }
        if settled {
            self.resolve_fetch(eid);
        }
    }

    fn on_stored(&mut self, batch: BatchId, result: Result<Vec<Event>, String>) {
        if let Some(published) = self.publishing.remove(&batch) {
            self.on_published_stored(published, result);
            return;
        }
        let Some(entries) = self.storing.remove(&batch) else {
            return;
        };
        let ok = result.is_ok();
        for removed in result.unwrap_or_default() {
            let entry = self.seen.remember(&removed, self.now.timestamp());
            self.remembered.push(entry);
        }
        if ok {
            self.stats.stored += entries.len() as u64;
        } else {
            self.stats.store_failures += 1;
        }
        for (relay, job, eid) in entries {
            if ok {
                self.recent.insert(eid);
            }
            if let Some(r) = self.relays.get_mut(&relay) {
                if ok {
                    r.stats.events_accepted += 1;
                } else if let Some(j) = job.and_then(|j| r.jobs.get_mut(&j)) {
                    j.lossy = true;
                }
            }
            self.left_pipeline(relay, job, &eid, ok);
            if !ok {
                // Whoever waits for this id fetches it again (once).
                self.refetch(eid);
            }
        }
    }

    fn on_local_events(&mut self, events: &[Event]) {
        for event in events {
            self.acceptor.restore(event);
            self.seen.forget(&event.id);
            self.recent.insert(event.id);
        }
        let update = self.index.apply(events);
        if !update.changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &update.changes, &self.work);
            self.take_actions(&actions);
        }
        if update.applied > 0 {
            self.retry_orphans();
        }
    }

    fn on_checkpoints(&mut self, checkpoints: Vec<Checkpoint>) {
        for cp in checkpoints {
            let Some(relay) = self.index.names().relay_id(&cp.relay) else {
                continue;
            };
            match cp.scope {
                Scope::Discovery => {
                    if let Some(state) = self.relays.get_mut(&relay) {
                        let at = Time::from_secs(cp.at.as_secs());
                        state.discovered_at = Some(state.discovered_at.map_or(at, |t| t.max(at)));
                    }
                }
                Scope::Item { layer, item } => {
                    let Some(item) = self.index.names().item_id(&item) else {
                        continue;
                    };
                    if self.index.targets().contains(relay, item) {
                        self.work.restore(relay, WorkKey { layer, item }, cp.at);
                    }
                }
            }
        }
        let actions = compute_all_actions(self.index.targets(), &self.work);
        self.take_actions(&actions);
    }

    /// Records actions as pending work; an open relay plans jobs for the new keys when
    /// its queue drains, and adds them to its live subscriptions.
    fn take_actions(&mut self, actions: &Actions) {
        self.work.apply(actions);
        for ra in &actions.relays {
            let id = ra.relay;
            let url = self.index.names().relay(id).clone();
            let relay = self
                .relays
                .entry(id)
                .or_insert_with(|| RelayState::new(url, false));
            if relay.phase != Phase::Open {
                continue;
            }
            relay.unscheduled.extend(ra.add.iter().copied());
            relay.live_new.extend(ra.add.iter().map(|k| k.item));
        }
    }

    /// Plans jobs for coalesced new keys once nothing is queued.
    fn schedule_unscheduled(&mut self, id: RelayId) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let queued = relay
            .jobs
            .values()
            .any(|j| matches!(j.state, JobState::Queued));
        if queued || relay.unscheduled.is_empty() || !relay.live_new.is_empty() {
            return;
        }
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

    // ---------------------------------------------------------------------------------
    // The driver loop's one step: connections, live subscriptions, jobs, fetches.

    fn drive(&mut self) {
        let now = self.now;
        let mut ids: Vec<RelayId> = self.relays.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let wanted = self.wanted(id);
            let Some(relay) = self.relays.get_mut(&id) else {
                continue;
            };
            match relay.phase {
                Phase::Idle if wanted => {
                    let url = relay.url.clone();
                    let deadline = now + self.config.timing.connect_timeout;
                    relay.new_session();
                    self.outputs
                        .push_back(Output::FetchInfo { relay: url.clone() });
                    self.outputs.push_back(Output::Connect { relay: url });
                    self.set_phase(id, Phase::Connecting { deadline });
                }
                Phase::Open if !wanted => {
                    let url = relay.url.clone();
                    self.end_session(id);
                    self.outputs.push_back(Output::Close { relay: url });
                    if let Some(r) = self.relays.get_mut(&id) {
                        r.disconnected_at = Some(now);
                    }
                    self.set_phase(id, Phase::Idle);
                }
                Phase::Open => {
                    let drained = self.in_pipeline.len() < self.config.flow.max_ingest_queue / 2;
                    if let (Some(first_drop), true) = (relay.needs_catch_up, drained) {
                        relay.needs_catch_up = None;
                        let from = (first_drop - self.config.timing.since_margin).timestamp();
                        self.schedule_session(id, Session::Quick { from });
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
        self.flush_verify();
        if !self.remembered.is_empty() {
            let entries = std::mem::take(&mut self.remembered);
            self.outputs.push_back(Output::Remember(entries));
        }
    }

    /// Forgets the relay's last error once it is open with no work left (in sync).
    fn clear_error_if_synced(&mut self, id: RelayId) {
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        let synced = relay.last_error.is_some()
            && relay.jobs.is_empty()
            && relay.fetch_queue.is_empty()
            && self.work.pending(id).next().is_none();
        if synced {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.last_error = None;
            }
        }
    }

    /// Sends live subscriptions: all targets at session start; then items added since
    /// are merged into the newest live REQ (re-issued under a new id, the old one closed
    /// after it) while that still fits one REQ, so an event matching an old and a new
    /// item arrives on one subscription only; past that they go out as extra REQs, and
    /// when those would exceed the relay's budget everything is consolidated again.
    fn refresh_live(&mut self, id: RelayId) {
        let now = self.now;
        let interval = self.config.timing.live_update_interval;
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        if !relay.live_dirty && relay.live_new.is_empty() {
            return;
        }
        if !relay.live_dirty && relay.live_sent_at.is_some_and(|t| now < t + interval) {
            return;
        }
        if self.config.one_shot {
            // No live REQ, but new items are taken up on the same schedule, so a burst
            // of discoveries becomes a few large historic jobs, not many small ones.
            self.live_sent(id, None);
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.live_dirty = false;
            }
            return;
        }
        if relay.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        let limits = relay.limits;
        let bootstrap = relay.bootstrap;
        let budget = limits
            .max_subscriptions
            .saturating_sub(self.config.flow.jobs_per_relay + 1)
            .max(1);
        let live_subs = relay.live_subs();
        if !relay.live_dirty {
            let new: Vec<ItemId> = relay.live_new.iter().copied().collect();
            let tail = relay
                .live_tail
                .as_ref()
                .and_then(|sub| match relay.subs.get(sub) {
                    Some(Sub::Live(live)) => live
                        .items
                        .as_ref()
                        .map(|items| (sub.clone(), items.clone(), live.discovery)),
                    _ => None,
                });
            // The replacement is opened before the old one is closed (nothing published
            // in between is missed), so it needs a free subscription slot.
            let slot = relay.subs.len() < limits.max_subscriptions;
            if let (Some((old, mut items, discovery)), true) = (tail, slot) {
                items.extend(new.iter().copied());
                items.sort_unstable();
                items.dedup();
                let mut reqs = pack_reqs(self.live_filters(&items, discovery, &limits), &limits);
                if let (1, Some(filters)) = (reqs.len(), reqs.pop()) {
                    let sub = self.send_live(id, filters, Some(items), discovery);
                    self.retire_live(id, &old, &sub);
                    self.live_sent(id, Some(sub));
                    return;
                }
            }
            let reqs = pack_reqs(self.live_filters(&new, false, &limits), &limits);
            if live_subs.len() + reqs.len() <= budget {
                let single = reqs.len() == 1;
                let mut last = None;
                for filters in reqs {
                    let items = single.then(|| new.clone());
                    last = Some(self.send_live(id, filters, items, false));
                }
                self.live_sent(id, last.filter(|_| single));
                return;
            }
        }
        let items: Vec<ItemId> = self.index.targets().items(id).collect();
        let mut reqs = pack_reqs(self.live_filters(&items, bootstrap, &limits), &limits);
        let catch_all = reqs.len() > budget;
        if catch_all {
            reqs = vec![vec![Filter::new().kinds(kinds::ALL).limit(0)]];
        }
        for sub in &live_subs {
            self.retire_live(id, sub, "");
        }
        let single = reqs.len() == 1 && !catch_all;
        let mut last = None;
        for filters in reqs {
            let covered = single.then(|| items.clone());
            last = Some(self.send_live(id, filters, covered, bootstrap));
        }
        // What the closed subscriptions sent before the relay saw the new ones still
        // counts: the last new REQ's EOSE ends the grace.
        if let Some(successor) = &last {
            let until = now + self.config.timing.eose_timeout;
            if let Some(relay) = self.relays.get_mut(&id) {
                for (_, closing) in relay.closing_live.iter_mut() {
                    if closing.successor.is_empty() {
                        closing.successor = successor.clone();
                        closing.until = until;
                    }
                }
            }
        }
        self.live_sent(id, last.filter(|_| single));
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.live_dirty = false;
        }
    }

    /// Closes a live subscription that `successor` replaces; events on it still count
    /// until the successor's EOSE (see [`relay::Closing`]); an empty `successor` is set
    /// by the caller once the replacement is sent.
    fn retire_live(&mut self, id: RelayId, old: &str, successor: &str) {
        let until = self.now + self.config.timing.eose_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if let Some(Sub::Live(live)) = relay.subs.remove(old) {
            relay.closing_live.insert(
                old.to_owned(),
                relay::Closing {
                    filters: live.filters,
                    successor: successor.to_owned(),
                    until,
                },
            );
            self.send(
                id,
                &ClientFrame::Close {
                    subscription: old.to_owned(),
                },
            );
        }
    }

    /// Live subscriptions were sent: `tail` is the one to merge new items into.
    fn live_sent(&mut self, id: RelayId, tail: Option<String>) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.live_new.clear();
            relay.live_sent_at = Some(self.now);
            relay.live_tail = tail;
        }
    }

    /// Live filters for `items` (and discovery on a bootstrap relay).
    fn live_filters(&self, items: &[ItemId], discovery: bool, limits: &RelayLimits) -> Vec<Filter> {
        let (coords, roots) = self.index.names().split(items);
        let mut filters: Vec<Filter> = Vec::new();
        for chunk in announcement_chunks(&coords, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        for chunk in repo_tag_chunks(&coords, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        for chunk in root_tag_chunks(&roots, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        if discovery {
            filters.push(discovery_filter(Form::Live, &self.config.discovery));
        }
        filters
    }

    /// Opens one live REQ; returns its subscription id.
    fn send_live(
        &mut self,
        id: RelayId,
        filters: Vec<Filter>,
        items: Option<Vec<ItemId>>,
        discovery: bool,
    ) -> String {
        let sub = self.new_sub();
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.subs.insert(
                sub.clone(),
                Sub::Live(Box::new(relay::Live {
                    filters: filters.clone(),
                    items,
                    discovery,
                })),
            );
        }
        self.send(
            id,
            &ClientFrame::Req {
                subscription: sub.clone(),
                filters,
            },
        );
        sub
    }
}
