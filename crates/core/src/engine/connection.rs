//! A relay's connection: opening a session (quick reconnect, restart catch-up or fresh
//! start), its end, failure and backoff, and the phase reported with each change.

use nostr::prelude::Timestamp;

use super::jobs::Session;
use super::relay;
use super::{Output, Phase, SyncEngine, Time};
use crate::items::RelayId;

impl SyncEngine {
    pub(super) fn set_phase(&mut self, id: RelayId, phase: Phase) {
        self.set_phase_because(id, phase, None);
    }

    /// Sets the phase and reports it, with why, when it changed.
    fn set_phase_because(&mut self, id: RelayId, phase: Phase, error: Option<String>) {
        if let Some(relay) = self.relays.get_mut(&id) {
            if relay.phase != phase {
                relay.phase = phase;
                self.outputs.push_back(Output::Status {
                    relay: id,
                    phase,
                    error,
                });
            }
        }
    }

    pub(super) fn wanted(&self, id: RelayId) -> bool {
        self.index.targets().item_count(id) > 0 || self.relays.get(&id).is_some_and(|r| r.bootstrap)
    }

    pub(super) fn on_connected(&mut self, id: RelayId) {
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
        let reconnect_from = relay
            .disconnected_at
            .filter(|_| quick)
            .map(|t| (t - timing.since_margin).timestamp());
        // When the session a quick reconnect follows started: keys it did not settle are
        // planned as after a restart (see `Session::Quick`).
        let settled_since = relay
            .connected_at
            .filter(|_| reconnect_from.is_some())
            .map(Time::timestamp);
        // A full reconciliation it cut short is finished in full (a fresh start reconciles
        // anew, and the next full reconciliation is a day away).
        let full_since = relay
            .full_started_at
            .filter(|_| reconnect_from.is_some())
            .map(Time::timestamp);
        let catch_up_from = reconnect_from.or(restart_from);
        if !quick {
            relay.nip77 = relay::Nip77::Unknown;
            relay.full_started_at = None;
            relay.full_reconcile_at = Some(
                now + self
                    .jitter
                    .between(timing.full_reconcile_min, timing.full_reconcile_max),
            );
        }
        relay.connected_at = Some(now);
        let info_awaited = relay.info_due.is_some_and(|due| due > now);
        self.clear_session(id);
        self.set_phase(id, Phase::Open);
        let session = match catch_up_from {
            Some(from) => Session::Quick {
                from,
                settled_since,
                full_since,
            },
            None => Session::Fresh,
        };
        if info_awaited {
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.waiting_session = Some(session);
            }
        } else {
            self.schedule_session(id, session);
        }
    }

    /// The relay's NIP-11 document (or `None`): its limits apply, and a session that
    /// waited for them starts.
    pub(super) fn on_info(&mut self, id: RelayId, document: Option<&str>) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let cut_under = relay.limits;
        relay.set_info(document);
        relay.info_due = None;
        if let Some(session) = relay.waiting_session.take() {
            self.schedule_session(id, session);
        } else if relay.phase == Phase::Open && relay.limits.tighter_than(&cut_under) {
            // Later than the wait: this session's requests were cut under looser limits,
            // and the relay would refuse some of them (again at each retry). The next
            // session is cut under the document's; as a quick reconnect, it does not ask
            // again for what this one settled.
            self.close_session(id);
        }
    }

    /// Closes an open relay's connection and session, to connect again when wanted.
    pub(super) fn close_session(&mut self, id: RelayId) {
        self.end_session(id);
        self.outputs.push_back(Output::Close { relay: id });
        let now = self.now;
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.disconnected_at = Some(now);
        }
        self.set_phase(id, Phase::Idle);
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
            .target_keys(id)
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

    pub(super) fn on_disconnected(&mut self, id: RelayId, reason: String) {
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
    pub(super) fn end_session(&mut self, id: RelayId) {
        self.clear_session(id);
        for eid in self.fetches.owned_by(id) {
            self.hand_over_fetch(eid);
        }
    }

    /// Forgets a relay's subscriptions, jobs, queued fetches and key holdings (a
    /// session starts or ends).
    fn clear_session(&mut self, id: RelayId) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.waiting_session = None;
            relay.take_abandoned();
            relay.abandoned.rounds = 0;
            relay.live_set_fresh = false;
            relay.subs.clear();
            relay.closing_live.clear();
            relay.live_tail = None;
            relay.jobs.clear();
            relay.fetch_queue.clear();
            relay.live_dirty = true;
        }
        self.forget_keys(id);
    }

    /// Drops a relay's jobs per key and its leases (its jobs are gone): relays whose jobs
    /// waited for those keys look again.
    fn forget_keys(&mut self, id: RelayId) {
        let woken = self.keys.forget(id);
        self.wake(woken);
    }

    /// Forgets the relay's last error once it is open with no work left (in sync).
    pub(super) fn clear_error_if_synced(&mut self, id: RelayId) {
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
}
