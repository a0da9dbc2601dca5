//! Per-relay state: connection phase, health and backoff, NIP-77 availability, open
//! subscriptions, historic jobs, id fetches, and the counters a front end shows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use nostr::prelude::{EventId, Filter};

use crate::engine::config::Timing;
use crate::engine::job::{Job, JobId, JobState};
use crate::engine::jobs::Session;
use crate::engine::sub_id::SubId;
use crate::engine::time::{Jitter, Time};
use crate::items::{ItemId, WorkKey};
use crate::limits::RelayLimits;
use crate::relay_url::RelayUrl;
use crate::wire::ClientFrame;

mod due;
mod receive;
mod walk;

pub(crate) use receive::{JobNext, Received};
pub(crate) use walk::{Paged, Room};

/// Where a relay connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing to sync from it; not connected.
    Idle,
    /// A connection was requested.
    Connecting {
        /// When the attempt counts as failed.
        deadline: Time,
    },
    /// Connected.
    Open,
    /// Failed; retried at `until`.
    Backoff {
        /// When to retry.
        until: Time,
    },
    /// Failing for a day; retried at `until`.
    Dead {
        /// When to retry.
        until: Time,
    },
}

/// Whether a relay speaks NIP-77.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nip77 {
    /// Not tried yet this session: the first NEG-OPEN is a probe.
    Unknown,
    /// A probe is out.
    Probing,
    /// It answered NEG-MSG.
    Supported,
    /// It refused or stayed silent; retried on the next fresh start.
    Unsupported,
}

/// How the last historic sync at a relay was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Nothing yet.
    None,
    /// NIP-77 negentropy.
    Negentropy,
    /// Paginated REQ.
    Req,
}

/// Counters per relay, for status displays and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes of frames received.
    pub bytes_in: u64,
    /// Bytes of frames sent.
    pub bytes_out: u64,
    /// Requests that wait for an answer: REQ, NEG-OPEN, NEG-MSG.
    pub round_trips: u64,
    /// EVENT frames received.
    pub events_received: u64,
    /// Events stored.
    pub events_accepted: u64,
    /// Events refused, by reason label.
    pub events_rejected: BTreeMap<&'static str, u64>,
    /// Frames that did not parse, by error label.
    pub bad_frames: BTreeMap<&'static str, u64>,
    /// Historic jobs done with NIP-77 and with REQ.
    pub jobs_negentropy: u64,
    /// See [`jobs_negentropy`](Self::jobs_negentropy).
    pub jobs_req: u64,
    /// Seconds that held more than a page for a filter that could not be narrowed
    /// further (a relay without NIP-77, one item left): reported, not fully synced.
    pub incomplete_windows: u64,
    /// Ids a relay announced (NIP-77) but did not deliver, given up on.
    pub undelivered_ids: u64,
    /// Ids given up on after a second forged copy.
    pub forged_twice: u64,
    /// Events dropped because the ingest queue was full.
    pub dropped: u64,
    /// Of [`dropped`](Self::dropped), copies fetched by id (after reconciliation): the
    /// fetch is over and its jobs run again.
    pub dropped_fetched: u64,
    /// Connection failures.
    pub failures: u64,
    /// Jobs whose outstanding events stopped settling: run again instead of waiting.
    pub stalled_jobs: u64,
    /// Historic jobs given up on after failing `job_attempts` times (or refused for
    /// good), over the run.
    pub abandoned_jobs: u64,
    /// Of those, the jobs given up on since their keys were last planned: a gap until
    /// they are planned again (after `Timing::abandoned_retry`, or by the next session).
    pub abandoned_waiting: u64,
}

impl RelayStats {
    /// Counts one rejection.
    pub fn reject(&mut self, reason: &'static str) {
        *self.events_rejected.entry(reason).or_insert(0) += 1;
    }

    /// Whether this relay left something unsynced that no retry will cover before the
    /// next fresh start: an incomplete window, ids announced but never delivered, or an
    /// abandoned job not planned again yet. A relay with gaps is not "in sync", whatever
    /// its phase.
    pub fn has_gaps(&self) -> bool {
        self.incomplete_windows > 0 || self.undelivered_ids > 0 || self.abandoned_waiting > 0
    }

    /// Counts one bad frame.
    pub fn bad_frame(&mut self, reason: &'static str) {
        *self.bad_frames.entry(reason).or_insert(0) += 1;
    }
}

/// A live subscription: its filters, and, when it is the one REQ new items are merged
/// into, what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    pub filters: Vec<Filter>,
    /// The items it covers, when known (a REQ packed alone from them).
    pub items: Option<Vec<ItemId>>,
    /// Whether it holds the discovery filter.
    pub discovery: bool,
}

/// A live subscription being replaced: events on it still count until the relay has
/// answered its successor (a relay handles frames in order, so what it sent on the old
/// subscription before that answer is not sent on the new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub filters: Vec<Filter>,
    /// The subscription whose EOSE ends the grace (none until the replacement is sent).
    pub successor: Option<SubId>,
    /// Dropped after this at the latest.
    pub until: Time,
}

/// What a subscription id at a relay belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sub {
    /// A live subscription.
    Live(Box<Live>),
    /// A historic job (paged REQ or NIP-77 session).
    Job(JobId),
    /// An `ids` fetch.
    Fetch(Box<Fetch>),
}

/// One `ids` REQ in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    pub filter: Filter,
    pub ids: Vec<EventId>,
    pub deadline: Time,
    /// Ids it delivered (what happens to them is the pipeline's business); fewer than
    /// asked at EOSE reveals a silent result cap.
    pub delivered: HashSet<EventId>,
}

/// Limits a relay showed by its behaviour (a silent result cap, a refused subscription),
/// kept apart so its NIP-11 document, arriving later, does not loosen them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LearnedCaps {
    pub max_results: Option<usize>,
    pub max_subscriptions: Option<usize>,
}

impl LearnedCaps {
    /// `limits` made no looser than what was learned.
    pub fn apply(&self, mut limits: RelayLimits) -> RelayLimits {
        if let Some(cap) = self.max_results {
            limits.max_results = limits.max_results.min(cap);
        }
        if let Some(cap) = self.max_subscriptions {
            limits.max_subscriptions = limits.max_subscriptions.min(cap);
        }
        limits
    }
}

/// The longest wait before jobs given up on are planned again.
const MAX_ABANDONED_WAIT: Duration = Duration::from_secs(6 * 3600);

/// Jobs a relay's session gave up on, until they are planned again.
#[derive(Debug, Default)]
pub(crate) struct Abandoned {
    /// Their keys.
    pub keys: BTreeSet<WorkKey>,
    /// Whether discovery was one of them.
    pub discovery: bool,
    /// When they are planned again.
    pub retry_at: Option<Time>,
    /// Retries run this session (each doubles the next wait).
    pub rounds: u32,
}

/// Everything the engine keeps about one relay.
pub(crate) struct RelayState {
    pub url: RelayUrl,
    pub phase: Phase,
    pub limits: RelayLimits,
    pub nip77: Nip77,
    pub method: Method,
    /// Consecutive failures and when the first of them happened.
    pub failures: u32,
    pub failing_since: Option<Time>,
    pub connected_at: Option<Time>,
    pub disconnected_at: Option<Time>,
    /// No new subscriptions before this (rate-limited).
    pub quiet_until: Option<Time>,
    /// When the next full reconciliation is due.
    pub full_reconcile_at: Option<Time>,
    /// When the latest full reconciliation of this connection (and the quick reconnects
    /// after it) started: a key not confirmed since is reconciled in full again when a
    /// quick reconnect cuts it short (see `Session::Quick`).
    pub full_started_at: Option<Time>,
    /// Open subscriptions.
    pub subs: HashMap<SubId, Sub>,
    /// Frames to send, in order, not yet handed to the engine's outputs.
    pub outbox: Vec<String>,
    /// The last subscription id made at this relay (they are never reused).
    pub next_sub: u64,
    /// Live subscriptions must be rebuilt from all targets (session start).
    pub live_dirty: bool,
    /// Items that became targets since live subscriptions were last sent.
    pub live_new: BTreeSet<ItemId>,
    /// When live subscriptions were last sent.
    pub live_sent_at: Option<Time>,
    /// The last live send was the session's whole set: the first update after it (the
    /// repositories a fresh page discovers, the new roots of a catch-up) waits only for
    /// the hold, not the interval, which batches discoveries that trickle in.
    pub live_set_fresh: bool,
    /// When the first of `live_new` became a target.
    pub live_new_since: Option<Time>,
    /// A live update held back while events on their way may name more new items: it
    /// goes out once none is on its way, or at this time.
    pub live_held_until: Option<Time>,
    /// The live subscription new items are merged into (re-issued under a new id), so
    /// an event matching an old and a new item is not sent on two subscriptions.
    pub live_tail: Option<SubId>,
    /// Live subscriptions replaced but still accepted (see [`Closing`]).
    pub closing_live: HashMap<SubId, Closing>,
    /// New keys not yet planned into jobs: they are coalesced until the job queue
    /// drains, so a burst of discoveries becomes a few large filters.
    pub unscheduled: BTreeSet<WorkKey>,
    /// Historic jobs, in start order.
    pub jobs: BTreeMap<JobId, Job>,
    /// Ids to fetch (their owners are in the engine's fetch table).
    pub fetch_queue: VecDeque<EventId>,
    /// The relay's real result cap was learned from a short answer (once per session).
    pub cap_learned: bool,
    /// Caps learned from the relay's behaviour this session; they survive its NIP-11
    /// document, which may arrive after them.
    pub learned: LearnedCaps,
    /// The NIP-11 document asked for with this session's connection is awaited until
    /// then (its limits shape the session's filters); `None` once it arrived.
    pub info_due: Option<Time>,
    /// A session that opened before the NIP-11 document arrived: it starts when the
    /// document does, or at `info_due`.
    pub waiting_session: Option<Session>,
    /// When the relay last sent a frame this session.
    pub last_frame_at: Option<Time>,
    /// Why the last connection failed; cleared once the relay has synced its work.
    pub last_error: Option<String>,
    /// Events were dropped since this time: catch up once the queue drains.
    pub needs_catch_up: Option<Time>,
    /// Jobs given up on this session (see [`RelayStats::abandoned_waiting`]).
    pub abandoned: Abandoned,
    /// A bootstrap relay: asked for every announcement.
    pub bootstrap: bool,
    /// When the last complete discovery (every announcement) started.
    pub discovered_at: Option<Time>,
    pub stats: RelayStats,
}

impl RelayState {
    pub fn new(url: RelayUrl, bootstrap: bool) -> Self {
        Self {
            url,
            phase: Phase::Idle,
            limits: RelayLimits::default(),
            nip77: Nip77::Unknown,
            method: Method::None,
            failures: 0,
            failing_since: None,
            connected_at: None,
            disconnected_at: None,
            quiet_until: None,
            full_reconcile_at: None,
            full_started_at: None,
            subs: HashMap::new(),
            outbox: Vec::new(),
            next_sub: 0,
            live_dirty: true,
            live_new: BTreeSet::new(),
            live_sent_at: None,
            live_set_fresh: false,
            live_new_since: None,
            live_held_until: None,
            live_tail: None,
            closing_live: HashMap::new(),
            unscheduled: BTreeSet::new(),
            jobs: BTreeMap::new(),
            fetch_queue: VecDeque::new(),
            needs_catch_up: None,
            abandoned: Abandoned::default(),
            cap_learned: false,
            learned: LearnedCaps::default(),
            info_due: None,
            waiting_session: None,
            last_frame_at: None,
            last_error: None,
            bootstrap,
            discovered_at: None,
            stats: RelayStats::default(),
        }
    }

    /// After a failure: the phase to wait in — exponential backoff with jitter, Dead
    /// after failing for `dead_after`. The caller sets it (and reports the change).
    pub fn fail(&mut self, now: Time, timing: &Timing, jitter: &mut Jitter) -> Phase {
        self.failures = self.failures.saturating_add(1);
        self.stats.failures += 1;
        let since = *self.failing_since.get_or_insert(now);
        if now.since(since) >= timing.dead_after {
            Phase::Dead {
                until: now + timing.dead_retry,
            }
        } else {
            let exp = timing
                .backoff_base
                .saturating_mul(1u32 << self.failures.saturating_sub(1).min(20));
            let delay = exp.min(timing.backoff_cap);
            let delay = jitter.between(delay / 2, delay + delay / 2);
            Phase::Backoff { until: now + delay }
        }
    }

    /// A new connection attempt: what was learned about the relay's caps is learned
    /// again (its NIP-11 document is fetched again too, and awaited until `info_due`).
    pub fn new_session(&mut self, info_due: Time) {
        self.info_due = Some(info_due);
        self.cap_learned = false;
        self.learned = LearnedCaps::default();
    }

    /// The relay's NIP-11 document (or `None`): its limits, made no looser than what
    /// the relay showed this session.
    pub fn set_info(&mut self, document: Option<&str>) {
        let published = document.map_or_else(RelayLimits::default, RelayLimits::from_nip11);
        self.limits = self.learned.apply(published);
    }

    /// The relay evidently returns at most `cap` events per filter.
    pub fn learn_result_cap(&mut self, cap: usize) {
        self.learned.max_results = Some(self.learned.max_results.map_or(cap, |c| c.min(cap)));
        self.limits = self.learned.apply(self.limits);
    }

    /// Gives up on a job over `keys` (none: discovery): a gap until the jobs given up
    /// on are planned again, `retry` after the first of them (doubling with each retry
    /// this session, at most [`MAX_ABANDONED_WAIT`]).
    pub fn give_up(&mut self, keys: &[WorkKey], now: Time, retry: Duration) {
        self.stats.abandoned_jobs += 1;
        self.stats.abandoned_waiting += 1;
        self.abandoned.keys.extend(keys.iter().copied());
        self.abandoned.discovery |= keys.is_empty() && self.bootstrap;
        if self.abandoned.retry_at.is_none() {
            let doubling = 1u32 << self.abandoned.rounds.min(16);
            let wait = retry.saturating_mul(doubling).min(MAX_ABANDONED_WAIT);
            self.abandoned.retry_at = Some(now + wait);
        }
    }

    /// The jobs given up on, now to be planned again: no longer a gap (the count of
    /// retries this session stays).
    pub fn take_abandoned(&mut self) -> Abandoned {
        self.stats.abandoned_waiting = 0;
        let rounds = self.abandoned.rounds;
        std::mem::replace(
            &mut self.abandoned,
            Abandoned {
                rounds,
                ..Abandoned::default()
            },
        )
    }

    /// The relay refused a subscription beyond `cap` open ones.
    pub fn learn_subscription_cap(&mut self, cap: usize) {
        self.learned.max_subscriptions =
            Some(self.learned.max_subscriptions.map_or(cap, |c| c.min(cap)));
        self.limits = self.learned.apply(self.limits);
    }

    /// A connection succeeded: health is restored.
    pub fn recovered(&mut self) {
        self.failures = 0;
        self.failing_since = None;
    }

    /// Whether a new subscription may be opened now. A job loading its local items
    /// opens one when they arrive: its slot is taken already.
    pub fn may_subscribe(&self, now: Time) -> bool {
        let loading = self
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Loading { .. }))
            .count();
        self.phase == Phase::Open
            && self.quiet_until.is_none_or(|t| now >= t)
            && self.subs.len() + loading < self.limits.max_subscriptions
    }

    /// Opens a live subscription; returns its id.
    pub fn open_live(&mut self, live: Live) -> SubId {
        let sub = self.new_sub();
        self.send(&ClientFrame::Req {
            subscription: sub.to_string(),
            filters: live.filters.clone(),
        });
        self.subs.insert(sub.clone(), Sub::Live(Box::new(live)));
        sub
    }

    /// Live subscription ids.
    pub fn live_subs(&self) -> Vec<SubId> {
        self.subs
            .iter()
            .filter(|(_, s)| matches!(s, Sub::Live(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How long the relay was away, if it was connected before.
    pub fn gap(&self, now: Time) -> Option<Duration> {
        self.disconnected_at.map(|t| now.since(t))
    }
}
