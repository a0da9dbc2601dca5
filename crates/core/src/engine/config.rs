//! What the engine is told: what to accept, which relays bootstrap discovery, timing and
//! flow-control bounds.

use std::time::Duration;

use crate::accept::AcceptConfig;
use crate::filters::DiscoveryScope;
use crate::index::IndexConfig;
use crate::relay_url::RelayUrl;

/// Deadlines and backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a session, once connected, waits for the relay's NIP-11 document (asked
    /// for with the connection; counted from then): its limits shape the session's
    /// filters. Past it, the session starts under what is known.
    pub info_wait: Duration,
    /// How long a REQ may go without EOSE.
    pub eose_timeout: Duration,
    /// How long a NEG-OPEN may go without its first answer before falling back to REQ.
    pub neg_first_frame_timeout: Duration,
    /// How long a running NIP-77 session may go without progress.
    pub neg_idle_timeout: Duration,
    /// While a relay keeps sending frames, a page, fetch or NIP-77 answer still owed
    /// by it waits up to this much longer than its own timeout: on a slow link, its
    /// answer is queued behind others'.
    pub busy_link_grace: Duration,
    /// A reconnection within this gap catches up from the disconnection instead of
    /// starting fresh.
    pub quick_reconnect_window: Duration,
    /// A restart whose checkpoints at a relay are all younger than this catches up from
    /// them with REQs, as after a quick reconnect, instead of reconciling every filter.
    /// Zero (the default) turns it off: a NIP-77 reconciliation costs a daemon little
    /// and receives each new event once. The browser sets it, where reading every
    /// filter's local set from IndexedDB costs more than the catch-up.
    pub restart_catch_up_window: Duration,
    /// Subtracted from `since` values to cover clock skew between us and relays.
    pub since_margin: Duration,
    /// First retry delay after a failure; doubles with each further failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// A relay failing for this long is Dead …
    pub dead_after: Duration,
    /// … and retried after this long.
    pub dead_retry: Duration,
    /// How long to stay quiet towards a relay that said we are rate-limited.
    pub rate_limit_cooldown: Duration,
    /// Newly discovered items join live subscriptions at most this often (their
    /// historic jobs wait for it), so a burst of discoveries is one update.
    pub live_update_interval: Duration,
    /// A relay's jobs given up on (see [`Flow::job_attempts`]) are planned again this
    /// long after, while its connection stays open; the wait doubles with each round
    /// that gives up again, up to six hours.
    pub abandoned_retry: Duration,
    /// Full reconciliation happens at a random time between these after a fresh start.
    pub full_reconcile_min: Duration,
    /// See [`full_reconcile_min`](Self::full_reconcile_min).
    pub full_reconcile_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            info_wait: Duration::from_secs(2),
            eose_timeout: Duration::from_secs(30),
            neg_first_frame_timeout: Duration::from_secs(10),
            neg_idle_timeout: Duration::from_secs(30),
            busy_link_grace: Duration::from_secs(5 * 60),
            quick_reconnect_window: Duration::from_secs(15 * 60),
            restart_catch_up_window: Duration::ZERO,
            since_margin: Duration::from_secs(10 * 60),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(10 * 60),
            dead_after: Duration::from_secs(24 * 3600),
            dead_retry: Duration::from_secs(24 * 3600),
            rate_limit_cooldown: Duration::from_secs(60),
            live_update_interval: Duration::from_secs(1),
            abandoned_retry: Duration::from_secs(10 * 60),
            full_reconcile_min: Duration::from_secs(23 * 3600),
            full_reconcile_max: Duration::from_secs(25 * 3600),
        }
    }
}

/// Bounds on work in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Historic jobs (pages or NIP-77 sessions) running at once per relay.
    pub jobs_per_relay: usize,
    /// `ids` REQs in flight at once per relay.
    pub id_fetches_per_relay: usize,
    /// Events received but not yet stored, over all relays. Past it, events are dropped
    /// and their relay is marked for reconciliation (a relay drops a client that stops
    /// reading, so reading never slows down).
    pub max_ingest_queue: usize,
    /// Attempts at one historic job before its keys are abandoned until the next fresh
    /// start.
    pub job_attempts: u32,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            jobs_per_relay: 4,
            id_fetches_per_relay: 4,
            max_ingest_queue: 20_000,
            job_attempts: 3,
        }
    }
}

/// Everything the engine is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// Which relays and repositories become targets.
    pub index: IndexConfig,
    /// What received events are stored.
    pub accept: AcceptConfig,
    /// Relays asked for announcements (discovery); always connected.
    pub bootstrap_relays: Vec<RelayUrl>,
    /// Which announcements bootstrap relays are asked for.
    pub discovery: DiscoveryScope,
    /// Deadlines and backoff.
    pub timing: Timing,
    /// Bounds on work in flight.
    pub flow: Flow,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// A one-shot sync: reconcile what is stored and stop there, without live
    /// subscriptions (a daemon keeps them open to receive what is published next).
    pub one_shot: bool,
    /// Debug builds only: recompute the hand-kept counters from what they count after
    /// every input and panic on a drift (the simulation turns it on; it costs a walk of
    /// every relay's jobs per input, too slow for a debug binary under real load).
    pub check_invariants: bool,
}
