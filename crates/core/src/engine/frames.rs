//! Frames to and from a relay: sending, subscription ids, and routing each parsed relay
//! frame (EVENT, EOSE, CLOSED, NOTICE, NEG-MSG, NEG-ERR) to what handles it.

use nostr::prelude::Event;

use super::job::JobState;
use super::relay::{self, Sub};
use super::sub_id::SubId;
use super::{Output, Phase, SyncEngine};
use crate::accept::Reject;
use crate::items::RelayId;
use crate::matching::event_matches;
use crate::wire::{
    is_too_many_records, notice_class, parse_relay_frame, reason_class, ClientFrame, NoticeClass,
    ReasonClass, RelayFrame,
};

/// Largest frame accepted from a relay.
pub(super) const MAX_FRAME_BYTES: usize = 4 << 20;

impl SyncEngine {
    pub(super) fn send(&mut self, id: RelayId, frame: &ClientFrame) {
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
        self.outputs.push_back(Output::Send { relay: id, text });
    }

    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn new_sub(&mut self) -> SubId {
        SubId::new(self.new_id())
    }

    pub(super) fn close_sub(&mut self, id: RelayId, sub: &str) {
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

    pub(super) fn on_frame(&mut self, id: RelayId, text: &str) {
        let Some(relay) = self.relays.get_mut(&id) else {
            self.stats.unknown_relay_frames += 1;
            return;
        };
        relay.stats.bytes_in += text.len() as u64;
        relay.last_frame_at = Some(self.now);
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
        // A page or an `ids` fetch times out after `eose_timeout` without a new matching
        // event, not after `eose_timeout` in all: a slow link, or a slowed engine, is
        // still delivering.
        let patience = self.now + self.config.timing.eose_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        relay.stats.events_received += 1;
        let Some(kind) = relay.subs.get(sub) else {
            // A replaced live subscription, until the relay answered its successor.
            let Some(closing) = relay.closing_live.get(sub) else {
                relay.stats.bad_frame("unknown-subscription");
                return;
            };
            if !closing.filters.iter().any(|f| event_matches(f, &event)) {
                relay.stats.reject(Reject::NotRequested.as_str());
                return;
            }
            self.admit(id, None, event, bytes);
            return;
        };
        let (requested, job) = match kind {
            Sub::Live(live) => (live.filters.iter().any(|f| event_matches(f, &event)), None),
            Sub::Job(job) => {
                let matches = relay
                    .jobs
                    .get(job)
                    .is_some_and(|j| event_matches(&j.filter, &event));
                (matches, Some(*job))
            }
            Sub::Fetch(fetch) => (event_matches(&fetch.filter, &event), None),
        };
        if !requested {
            relay.stats.reject(Reject::NotRequested.as_str());
            return;
        }
        if let Some(Sub::Fetch(fetch)) = relay.subs.get_mut(sub) {
            // Each id asked for gains time once: a fetch is bounded by its ids.
            if fetch.delivered.insert(event.id) {
                fetch.deadline = fetch.deadline.max(patience);
            }
        }
        if let Some(job) = job.and_then(|j| relay.jobs.get_mut(&j)) {
            if let JobState::Paging(pager) = &mut job.state {
                if !pager.on_event(event.id, event.created_at, patience) {
                    return;
                }
            }
        }
        self.admit(id, job, event, bytes);
    }

    pub(super) fn on_eose(&mut self, id: RelayId, sub: &str) {
        let Some(kind) = self.relays.get(&id).and_then(|r| r.subs.get(sub)).cloned() else {
            return;
        };
        match kind {
            Sub::Live(_) => {
                // The relay answered: replaced subscriptions sent all they will.
                let now = self.now;
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.closing_live.retain(|_, c| {
                        c.successor.as_ref().is_none_or(|s| s != sub) && c.until > now
                    });
                }
            }
            Sub::Fetch(_) => self.end_fetch(id, sub, true),
            Sub::Job(job) => self.page_ended(id, sub, job),
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
                if relay.live_tail.as_ref().is_some_and(|t| t == sub) {
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
}
