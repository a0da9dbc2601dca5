//! Deadlines passed at a relay (what its session found due): connect timeouts, backoff
//! ends, the daily full reconciliation, overdue pages, NIP-77 answers and `ids` fetches,
//! and stalled jobs.

use super::jobs::Session;
use super::{Output, Phase, SyncEngine};
use crate::items::RelayId;

impl SyncEngine {
    pub(super) fn relay_timeouts(&mut self, id: RelayId) {
        let (now, timing) = (self.now, &self.config.timing);
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let due = relay.take_due(now, timing, &mut self.jitter);
        if due.connect_timed_out {
            self.outputs.push_back(Output::Close { relay: id });
            self.on_disconnected(id, "connect timeout".to_owned());
            return;
        }
        if due.retry {
            self.set_phase(id, Phase::Idle);
            return;
        }
        if let Some(session) = due.waiting_session {
            self.schedule_session(id, session);
        }
        if due.retry_abandoned {
            self.retry_abandoned(id);
        }
        if due.full_reconcile {
            // Keys other relays left to it (a relay without NIP-77) are theirs again.
            self.relays.mark_all();
            self.schedule_session(id, Session::Full);
        }
        for job in due.overdue_jobs {
            self.job_timed_out(id, job);
        }
        // A draining job whose outstanding events stopped settling is run again rather
        // than waited for (a lost answer must not stall a relay, or a one-shot sync).
        for job in due.stalled_jobs {
            self.try_complete(id, job);
        }
        for sub in due.overdue_fetches {
            self.end_overdue_fetch(id, sub.as_str());
        }
    }
}
