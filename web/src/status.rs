//! What the page sees of a running sync: per-relay status, the sync summary (a gap is
//! its own result), and the listeners and waiters that receive them.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures::channel::oneshot;
use grasp_sync_core::engine::{Method, Phase, RelayStats, SyncEngine, Time};
use grasp_sync_core::RelayUrl;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

/// Failures in a row after which a relay counts as failed for [`synced`].
///
/// [`synced`]: crate::api::GraspSync::synced
pub const FAILED_AFTER: u64 = 2;
/// Least time between two status notifications.
const NOTIFY_EVERY: Duration = Duration::from_millis(250);

/// One relay, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayStatus {
    pub url: String,
    pub state: Cow<'static, str>,
    pub method: Option<Cow<'static, str>>,
    pub received: u64,
    pub stored: u64,
    pub rejected: u64,
    pub bad_frames: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub round_trips: u64,
    pub failures: u64,
    pub incomplete_windows: u64,
    /// Ids the relay announced (NIP-77) but never delivered.
    pub undelivered_ids: u64,
    /// Historic jobs given up on after repeated failures.
    pub abandoned_jobs: u64,
    /// Of those, the ones not asked again yet (a gap; they are, 10 minutes later at
    /// first).
    pub abandoned_waiting: u64,
    pub last_error: Option<String>,
    /// Why IndexedDB refused the last write (e.g. its quota), until a write succeeds:
    /// this relay's events are not being stored (the same for every relay).
    pub store_error: Option<String>,
}

/// A relay in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayResult {
    #[serde(flatten)]
    pub status: RelayStatus,
    pub result: Cow<'static, str>,
}

/// What [`synced`](crate::api::GraspSync::synced) resolves with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    /// True only when every relay ended in sync with no gap and no store failure.
    pub complete: bool,
    pub relays: Vec<RelayResult>,
    pub repos: usize,
    pub stored: u64,
    /// Store writes that failed (each is a gap until the events are fetched again).
    pub store_failures: u64,
    /// Checkpoints written in the IndexedDB transaction of the last events they cover.
    pub checkpoints_with_events: u64,
    /// Checkpoints written in a transaction of their own, after their events.
    pub checkpoints_after_events: u64,
}

fn state_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "idle",
        Phase::Connecting { .. } => "connecting",
        Phase::Open => "syncing",
        Phase::Backoff { .. } => "backoff",
        Phase::Dead { .. } => "dead",
    }
}

fn relay_status(
    engine: &SyncEngine,
    url: &RelayUrl,
    phase: Phase,
    method: Method,
    s: &RelayStats,
) -> RelayStatus {
    let settled_here = engine.is_settled();
    let state = match phase {
        // Done, but something is left unsynced until the next fresh start.
        Phase::Open if settled_here && s.has_gaps() => "gaps",
        Phase::Open if settled_here => "in-sync",
        other => state_name(other),
    };
    RelayStatus {
        url: url.as_str().to_owned(),
        state: state.into(),
        method: match method {
            Method::None => None,
            Method::Negentropy => Some("nip77".into()),
            Method::Req => Some("req".into()),
        },
        received: s.events_received,
        stored: s.events_accepted,
        rejected: s.events_rejected.values().sum(),
        bad_frames: s.bad_frames.values().sum(),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        round_trips: s.round_trips,
        failures: s.failures,
        incomplete_windows: s.incomplete_windows,
        undelivered_ids: s.undelivered_ids,
        abandoned_jobs: s.abandoned_jobs,
        abandoned_waiting: s.abandoned_waiting,
        // Why the last connection failed; the engine forgets it once the relay is in
        // sync again.
        last_error: engine.relay_error(url).map(str::to_owned),
        store_error: engine.stats().store_error.clone(),
    }
}

/// Every relay the engine knows, sorted by URL.
pub fn relays(engine: &SyncEngine) -> Vec<RelayStatus> {
    let mut out: Vec<RelayStatus> = engine
        .relays()
        .map(|(url, phase, method, stats)| relay_status(engine, url, phase, method, stats))
        .collect();
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out
}

/// Every relay is in sync or has failed [`FAILED_AFTER`] times in a row.
pub fn is_done(engine: &SyncEngine) -> bool {
    engine.is_settled()
        && engine.relays().all(|(_, phase, _, stats)| match phase {
            Phase::Backoff { .. } => stats.failures >= FAILED_AFTER,
            _ => true,
        })
}

/// The summary of where the engine is now.
pub fn summary(engine: &SyncEngine) -> SyncSummary {
    let relays: Vec<RelayResult> = engine
        .relays()
        .map(|(url, phase, method, stats)| {
            let status = relay_status(engine, url, phase, method, stats);
            let result = match phase {
                Phase::Backoff { .. } | Phase::Dead { .. } | Phase::Connecting { .. } => "failed",
                _ if stats.has_gaps() || stats.dropped > 0 => "incomplete",
                _ => "in-sync",
            };
            RelayResult {
                status,
                result: result.into(),
            }
        })
        .collect();
    SyncSummary {
        complete: engine.stats().store_failures == 0
            && relays.iter().all(|r| r.result == "in-sync"),
        relays,
        repos: engine.index().repo_count(),
        stored: engine.stats().stored,
        store_failures: engine.stats().store_failures,
        checkpoints_with_events: engine.stats().checkpoints_with_events,
        checkpoints_after_events: engine.stats().checkpoints_after_events,
    }
}

/// Plain JS objects (maps as objects).
pub fn to_js<T: Serialize>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

/// The status the page sees, its listeners, and the waiters on `synced()`.
#[derive(Default)]
pub struct Board {
    /// The latest relay statuses.
    pub relays: RefCell<Vec<RelayStatus>>,
    /// The summary when the last step left everything in sync or failed.
    pub done: RefCell<Option<SyncSummary>>,
    last_notify: Cell<u64>,
    next_listener: Cell<u32>,
    listeners: RefCell<Vec<(u32, js_sys::Function)>>,
    waiters: RefCell<Vec<oneshot::Sender<SyncSummary>>>,
    /// A writer tab's outlet to its reading tabs: called with what the page sees
    /// whenever that changes.
    outlet: RefCell<Option<Outlet>>,
}

/// Where a writer sends its statuses and summary (`None`: a sync is running).
pub type Outlet = Box<dyn Fn(&[RelayStatus], Option<&SyncSummary>)>;

impl Board {
    /// Called after every step of the loop: updates what the page sees (at most every
    /// [`NOTIFY_EVERY`] unless a sync just finished).
    pub fn observe(&self, engine: &SyncEngine, now: Time) {
        let done = is_done(engine);
        let was_done = self.done.borrow().is_some();
        let due = now.as_millis() >= self.last_notify.get() + NOTIFY_EVERY.as_millis() as u64;
        if !due && done == was_done {
            return;
        }
        self.last_notify.set(now.as_millis());
        self.show(relays(engine), done.then(|| summary(engine)));
    }

    /// A reading tab: what the writer tab's page sees.
    pub fn mirror(&self, relays: Vec<RelayStatus>, done: Option<SyncSummary>) {
        self.show(relays, done);
    }

    /// Sets what the page sees: notifies status listeners of a change, answers the
    /// waiters on `synced()` once `done`, and tells the outlet.
    fn show(&self, relays: Vec<RelayStatus>, done: Option<SyncSummary>) {
        let changed = *self.relays.borrow() != relays;
        let done_changed = *self.done.borrow() != done;
        *self.relays.borrow_mut() = relays;
        if let Some(summary) = &done {
            for waiter in self.waiters.borrow_mut().drain(..) {
                let _ = waiter.send(summary.clone());
            }
        }
        *self.done.borrow_mut() = done;
        if changed {
            self.notify();
        }
        if changed || done_changed {
            self.publish();
        }
    }

    /// Sends the current statuses and summary to the outlet, if there is one.
    pub fn publish(&self) {
        if let Some(outlet) = &*self.outlet.borrow() {
            outlet(&self.relays.borrow(), self.done.borrow().as_ref());
        }
    }

    /// Sets (or removes) the outlet to reading tabs.
    pub fn set_outlet(&self, outlet: Option<Outlet>) {
        *self.outlet.borrow_mut() = outlet;
    }

    /// No sync runs (nothing tracked): `synced()` answers with `summary` and no relay
    /// is shown.
    pub fn idle(&self, summary: SyncSummary) {
        self.show(Vec::new(), Some(summary));
    }

    /// Calls every status listener with the current statuses.
    pub fn notify(&self) {
        let value = to_js(&*self.relays.borrow());
        let listeners: Vec<js_sys::Function> = self
            .listeners
            .borrow()
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        for f in listeners {
            if let Err(e) = f.call1(&JsValue::NULL, &value) {
                tracing::warn!(error = %crate::net::js_text(&e), "a status listener threw");
            }
        }
    }

    /// Adds a status listener; returns its id.
    pub fn listen(&self, f: js_sys::Function) -> u32 {
        let id = self.next_listener.get();
        self.next_listener.set(id + 1);
        self.listeners.borrow_mut().push((id, f));
        id
    }

    /// Removes a status listener.
    pub fn unlisten(&self, id: u32) {
        self.listeners.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// The summary now if everything is in sync or failed, else a receiver for it.
    pub fn wait(&self) -> Result<SyncSummary, oneshot::Receiver<SyncSummary>> {
        if let Some(done) = self.done.borrow().clone() {
            return Ok(done);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push(tx);
        Err(rx)
    }

    /// Forgets the last state (a new session starts).
    pub fn reset(&self) {
        *self.done.borrow_mut() = None;
        self.last_notify.set(0);
        self.publish();
    }
}
