//! Frames to and from a relay, at the engine: a relay's session reads each frame
//! ([`RelayState::receive`](super::relay::RelayState::receive)) and queues what it
//! sends; the engine acts on what it returns ([`Received`]) and hands the queued frames
//! out as [`Output::Send`], in order.

use super::relay::{JobNext, Received};
use super::{Output, SyncEngine};
use crate::items::RelayId;
use crate::wire::ClientFrame;

impl SyncEngine {
    pub(super) fn send(&mut self, id: RelayId, frame: &ClientFrame) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.send(frame);
        }
        self.flush_sends(id);
    }

    /// Hands the frames a relay's session queued out, in order.
    pub(super) fn flush_sends(&mut self, id: RelayId) {
        if self.relays.get(&id).is_none_or(|r| r.outbox.is_empty()) {
            return;
        }
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        for text in relay.outbox.drain(..) {
            self.outputs.push_back(Output::Send { relay: id, text });
        }
    }

    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn close_sub(&mut self, id: RelayId, sub: &str) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.close_sub(sub);
        }
        self.flush_sends(id);
    }

    pub(super) fn on_frame(&mut self, id: RelayId, text: &str) {
        let (now, timing) = (self.now, &self.config.timing);
        let Some(relay) = self.relays.get_mut(&id) else {
            self.stats.unknown_relay_frames += 1;
            return;
        };
        let received = relay.receive(now, timing, text);
        self.flush_sends(id);
        match received {
            Received::Nothing => {}
            Received::Event { job, event, bytes } => self.admit(id, job, *event, bytes),
            Received::PageEnded { job, outcome, full } => self.page_ended(id, job, outcome, full),
            Received::FetchEnded { fetch, at_eose } => self.fetch_ended_with(id, *fetch, at_eose),
            Received::NegRound { job, need, done } => {
                for eid in need {
                    self.need(id, Some(job), eid);
                }
                if done {
                    self.job_received_all(id, job);
                }
            }
            Received::Job { job, next } => match next {
                JobNext::Requeue { failed } => self.requeue(id, job, failed),
                JobNext::SplitWindow => self.split_window(id, job),
                JobNext::Page => self.fall_back_to_req(id, job),
                JobNext::Abandon => self.abandon_job(id, job),
            },
        }
    }
}
