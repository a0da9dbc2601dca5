//! A frame from the relay, read against the relay's own books: counted, parsed, checked
//! against the subscription it names, and recorded by the walk it belongs to. What only
//! this relay is concerned with is done here (a live subscription's EOSE, a learned cap,
//! a rate limit, a NIP-77 round answered); what spans relays or jobs is returned to the
//! engine as a [`Received`] decision.

use nostr::prelude::{Event, EventId};

use super::{Fetch, Nip77, Phase, RelayState, Sub};
use crate::accept::Reject;
use crate::engine::job::{JobId, JobState, PageOutcome};
use crate::engine::time::Time;
use crate::engine::Timing;
use crate::matching::event_matches;
use crate::wire::{
    is_too_many_records, notice_class, parse_relay_frame, reason_class, ClientFrame, NoticeClass,
    ReasonClass, RelayFrame,
};

/// Largest frame accepted from a relay.
pub(crate) const MAX_FRAME_BYTES: usize = 4 << 20;

/// What a frame leaves for the engine to do.
#[derive(Debug)]
pub(crate) enum Received {
    /// Nothing: the relay's books were kept (or the frame was counted as bad).
    Nothing,
    /// An event this relay was asked for, for `job` when a historic job asked.
    Event {
        job: Option<JobId>,
        event: Box<Event>,
        bytes: usize,
    },
    /// A page of a paging job ended (its subscription is closed): what next, and how
    /// many results a full page holds as far as the walk knows.
    PageEnded {
        job: JobId,
        outcome: PageOutcome,
        full: usize,
    },
    /// An `ids` fetch ended: `at_eose` when the relay answered it, not refused it.
    FetchEnded { fetch: Box<Fetch>, at_eose: bool },
    /// A NIP-77 round of `job`: ids the relay holds that we lack, and whether the
    /// reconciliation is over (its next message is sent already otherwise).
    NegRound {
        job: JobId,
        need: Vec<EventId>,
        done: bool,
    },
    /// The relay's answer decides what becomes of `job`.
    Job { job: JobId, next: JobNext },
}

/// What becomes of a job the relay refused, failed or limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobNext {
    /// Back to the queue; `failed` counts an attempt.
    Requeue { failed: bool },
    /// NIP-77 refused it as too large: halve its window.
    SplitWindow,
    /// NIP-77 failed for it: page it.
    Page,
    /// Refused for good.
    Abandon,
}

impl RelayState {
    /// Reads one frame: `now` is when it arrived.
    pub fn receive(&mut self, now: Time, timing: &Timing, text: &str) -> Received {
        self.stats.bytes_in += text.len() as u64;
        self.last_frame_at = Some(now);
        if self.phase != Phase::Open {
            self.stats.bad_frame("not-open");
            return Received::Nothing;
        }
        let frame = match parse_relay_frame(text, MAX_FRAME_BYTES) {
            Ok(frame) => frame,
            Err(e) => {
                self.stats.bad_frame(e.as_str());
                return Received::Nothing;
            }
        };
        match frame {
            RelayFrame::Event {
                subscription,
                event,
            } => self.on_event(now + timing.eose_timeout, &subscription, event, text.len()),
            RelayFrame::Eose { subscription } => self.on_eose(now, &subscription),
            RelayFrame::Closed {
                subscription,
                message,
            } => self.on_closed(now + timing.rate_limit_cooldown, &subscription, &message),
            RelayFrame::Notice { message } => {
                self.on_notice(now + timing.rate_limit_cooldown, &message)
            }
            RelayFrame::NegMsg {
                subscription,
                message,
            } => self.on_neg_msg(now + timing.neg_idle_timeout, &subscription, &message),
            RelayFrame::NegErr {
                subscription,
                message,
            } => self.on_neg_err(&subscription, &message),
            RelayFrame::Ok { .. } | RelayFrame::Auth { .. } | RelayFrame::Count { .. } => {
                Received::Nothing
            }
        }
    }

    /// Queues a frame for the relay, counting its bytes and round trips.
    pub fn send(&mut self, frame: &ClientFrame) {
        let asks = matches!(
            frame,
            ClientFrame::Req { .. } | ClientFrame::NegOpen { .. } | ClientFrame::NegMsg { .. }
        );
        self.send_text(frame.to_json(), asks);
    }

    /// Sends a frame already serialised; `asks` counts a round trip (a frame the relay
    /// answers).
    pub fn send_text(&mut self, text: String, asks: bool) {
        self.stats.bytes_out += text.len() as u64;
        if asks {
            self.stats.round_trips += 1;
        }
        self.outbox.push(text);
    }

    /// Ends a subscription of ours, telling the relay (NEG-CLOSE for a NIP-77 job).
    pub fn close_sub(&mut self, sub: &str) {
        let neg = match self.subs.remove(sub) {
            Some(Sub::Job(job)) => self
                .jobs
                .get(&job)
                .is_some_and(|j| matches!(j.state, JobState::Neg(_))),
            Some(_) => false,
            None => return,
        };
        let subscription = sub.to_owned();
        self.send(&if neg {
            ClientFrame::NegClose { subscription }
        } else {
            ClientFrame::Close { subscription }
        });
    }

    /// Ends an `ids` fetch of ours (answered or overdue), telling the relay.
    pub fn end_fetch(&mut self, sub: &str) -> Option<Box<Fetch>> {
        let Some(Sub::Fetch(fetch)) = self.subs.remove(sub) else {
            return None;
        };
        self.send(&ClientFrame::Close {
            subscription: sub.to_owned(),
        });
        Some(fetch)
    }

    /// An event, if it was requested: `patience` is how long a page or fetch waits for
    /// the next one from now on.
    fn on_event(&mut self, patience: Time, sub: &str, event: Box<Event>, bytes: usize) -> Received {
        self.stats.events_received += 1;
        let Some(kind) = self.subs.get_mut(sub) else {
            // A replaced live subscription, until the relay answered its successor.
            let Some(closing) = self.closing_live.get(sub) else {
                self.stats.bad_frame("unknown-subscription");
                return Received::Nothing;
            };
            if !closing.filters.iter().any(|f| event_matches(f, &event)) {
                self.stats.reject(Reject::NotRequested.as_str());
                return Received::Nothing;
            }
            return Received::Event {
                job: None,
                event,
                bytes,
            };
        };
        let (requested, job) = match kind {
            Sub::Live(live) => (live.filters.iter().any(|f| event_matches(f, &event)), None),
            Sub::Job(job) => {
                let matches = self
                    .jobs
                    .get(job)
                    .is_some_and(|j| event_matches(&j.filter, &event));
                (matches, Some(*job))
            }
            Sub::Fetch(fetch) => {
                let requested = event_matches(&fetch.filter, &event);
                // Each id asked for gains time once: a fetch is bounded by its ids.
                if requested && fetch.delivered.insert(event.id) {
                    fetch.deadline = fetch.deadline.max(patience);
                }
                (requested, None)
            }
        };
        if !requested {
            self.stats.reject(Reject::NotRequested.as_str());
            return Received::Nothing;
        }
        if let Some(job) = job.and_then(|j| self.jobs.get_mut(&j)) {
            if let JobState::Paging(pager) = &mut job.state {
                if !pager.on_event(event.id, event.created_at, patience) {
                    return Received::Nothing;
                }
            }
        }
        Received::Event { job, event, bytes }
    }

    fn on_eose(&mut self, now: Time, sub: &str) -> Received {
        match self.subs.get(sub) {
            None => Received::Nothing,
            Some(Sub::Live(_)) => {
                // The relay answered: replaced subscriptions sent all they will.
                self.closing_live
                    .retain(|_, c| c.successor.as_ref().is_none_or(|s| s != sub) && c.until > now);
                Received::Nothing
            }
            Some(Sub::Fetch(_)) => match self.end_fetch(sub) {
                Some(fetch) => Received::FetchEnded {
                    fetch,
                    at_eose: true,
                },
                None => Received::Nothing,
            },
            Some(Sub::Job(job)) => {
                let job = *job;
                self.page_ended(sub, job)
            }
        }
    }

    /// A paging job's page ended: the walk decides what next; a cap the relay evidently
    /// applies silently is its result limit from now on (later walks and `ids` fetches
    /// ask for no more, and recognise a full page).
    fn page_ended(&mut self, sub: &str, job_id: JobId) -> Received {
        let Some(JobState::Paging(pager)) = self.jobs.get_mut(&job_id).map(|j| &mut j.state) else {
            return Received::Nothing;
        };
        let outcome = pager.on_eose();
        let (full, observed_cap) = (pager.full(), pager.observed_cap());
        self.close_sub(sub);
        if let Some(cap) = observed_cap {
            self.learn_result_cap(cap);
        }
        Received::PageEnded {
            job: job_id,
            outcome,
            full,
        }
    }

    /// The relay ended a subscription: `cooldown_end` is when a rate limit lets up.
    fn on_closed(&mut self, cooldown_end: Time, sub: &str, message: &str) -> Received {
        let Some(kind) = self.subs.remove(sub) else {
            // e.g. CLOSED right after EOSE for a subscription we already ended
            return Received::Nothing;
        };
        let class = reason_class(message);
        if class == ReasonClass::RateLimited {
            self.quiet_until = Some(cooldown_end);
        }
        match kind {
            Sub::Live(_) => {
                if self.live_tail.as_ref().is_some_and(|t| t == sub) {
                    self.live_tail = None;
                }
                self.live_dirty = true;
                self.quiet_until.get_or_insert(cooldown_end);
                Received::Nothing
            }
            Sub::Fetch(fetch) => Received::FetchEnded {
                fetch,
                at_eose: false,
            },
            Sub::Job(job) => {
                let neg = self
                    .jobs
                    .get(&job)
                    .is_some_and(|j| matches!(j.state, JobState::Neg(_)));
                let next = match class {
                    ReasonClass::RateLimited => JobNext::Requeue { failed: false },
                    ReasonClass::Blocked if neg && is_too_many_records(message) => {
                        if self.nip77 == Nip77::Probing {
                            self.nip77 = Nip77::Supported;
                        }
                        JobNext::SplitWindow
                    }
                    ReasonClass::AuthRequired | ReasonClass::Restricted | ReasonClass::Blocked => {
                        JobNext::Abandon
                    }
                    _ => JobNext::Requeue { failed: true },
                };
                Received::Job { job, next }
            }
        }
    }

    fn on_notice(&mut self, cooldown_end: Time, message: &str) -> Received {
        match notice_class(message) {
            NoticeClass::NegentropyUnsupported if self.nip77 == Nip77::Probing => {
                self.nip77 = Nip77::Unsupported;
                let probe = self
                    .jobs
                    .values()
                    .find(|j| j.probe && matches!(j.state, JobState::Neg(_)));
                match probe {
                    Some(probe) => Received::Job {
                        job: probe.id,
                        next: JobNext::Page,
                    },
                    None => Received::Nothing,
                }
            }
            NoticeClass::TooManySubscriptions => {
                let open = self.subs.len();
                self.learn_subscription_cap(open.saturating_sub(1).max(1));
                let newest = self
                    .jobs
                    .values()
                    .rev()
                    .find(|j| j.state.subscription().is_some());
                match newest {
                    Some(job) => Received::Job {
                        job: job.id,
                        next: JobNext::Requeue { failed: false },
                    },
                    None => Received::Nothing,
                }
            }
            NoticeClass::RateLimited => {
                self.quiet_until = Some(cooldown_end);
                Received::Nothing
            }
            NoticeClass::NegentropyUnsupported | NoticeClass::Other => Received::Nothing,
        }
    }

    /// A NIP-77 round: `idle_end` is when the reconciliation counts as stalled if the
    /// relay says nothing more.
    fn on_neg_msg(&mut self, idle_end: Time, sub: &str, message: &[u8]) -> Received {
        let Some(Sub::Job(job_id)) = self.subs.get(sub) else {
            self.stats.bad_frame("unknown-subscription");
            return Received::Nothing;
        };
        let job_id = *job_id;
        if self.nip77 == Nip77::Probing {
            self.nip77 = Nip77::Supported;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Received::Nothing;
        };
        job.probe = false;
        let JobState::Neg(run) = &mut job.state else {
            return Received::Nothing;
        };
        run.answered = true;
        run.deadline = idle_end;
        let Ok(progress) = run.initiator.step(message) else {
            self.stats.bad_frame("neg-decode");
            self.nip77 = Nip77::Unsupported;
            self.close_sub(sub);
            return Received::Job {
                job: job_id,
                next: JobNext::Page,
            };
        };
        let done = match progress.next {
            Some(message) => {
                self.send(&ClientFrame::NegMsg {
                    subscription: sub.to_owned(),
                    message,
                });
                false
            }
            None => {
                self.close_sub(sub);
                self.method = super::Method::Negentropy;
                self.stats.jobs_negentropy += 1;
                true
            }
        };
        Received::NegRound {
            job: job_id,
            need: progress
                .need
                .into_iter()
                .map(EventId::from_byte_array)
                .collect(),
            done,
        }
    }

    fn on_neg_err(&mut self, sub: &str, message: &str) -> Received {
        let Some(Sub::Job(job_id)) = self.subs.remove(sub) else {
            return Received::Nothing;
        };
        let answered = self
            .jobs
            .get(&job_id)
            .is_some_and(|j| matches!(&j.state, JobState::Neg(n) if n.answered));
        let too_many = is_too_many_records(message);
        if self.nip77 == Nip77::Probing {
            // "Too many records" is NIP-77 working on an oversized filter.
            self.nip77 = if too_many {
                Nip77::Supported
            } else if answered {
                Nip77::Probing
            } else {
                Nip77::Unsupported
            };
        }
        Received::Job {
            job: job_id,
            next: if too_many {
                JobNext::SplitWindow
            } else {
                JobNext::Page
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::{Filter, Keys, Kind, SecretKey, Signature, Timestamp};

    use super::*;
    use crate::engine::job::{Job, NegRun, Pager};
    use crate::engine::sub_id::SubId;
    use crate::neg::NegInitiator;
    use crate::relay_url::RelayUrl;

    const NOW: Time = Time::from_secs(100);

    fn open_relay() -> RelayState {
        let url = RelayUrl::parse("wss://relay.example.com").expect("url");
        let mut relay = RelayState::new(url, false);
        relay.phase = Phase::Open;
        relay
    }

    /// Job 1 for kind 1621, in `state`, on subscription `gs1`.
    fn job(relay: &mut RelayState, state: impl FnOnce(SubId) -> JobState) -> JobId {
        let (id, sub) = (JobId(1), SubId::new(1));
        let filter = Filter::new().kind(Kind::from(1621));
        let mut job = Job::new(id, Vec::new(), filter, NOW, None);
        job.state = state(sub.clone());
        relay.jobs.insert(id, job);
        relay.subs.insert(sub, Sub::Job(id));
        id
    }

    fn paging(relay: &mut RelayState) -> JobId {
        job(relay, |sub| JobState::Paging(Pager::new(sub, NOW, 500)))
    }

    /// A NIP-77 probe job of an empty local set, not answered yet.
    fn probing(relay: &mut RelayState) -> JobId {
        relay.nip77 = Nip77::Probing;
        let id = job(relay, |sub| {
            let (initiator, _) = NegInitiator::new(Vec::new(), 0).expect("initiator");
            JobState::Neg(NegRun {
                sub,
                initiator,
                deadline: NOW,
                answered: false,
            })
        });
        if let Some(job) = relay.jobs.get_mut(&id) {
            job.probe = true;
        }
        id
    }

    /// An EVENT frame on `sub` of an event of `kind` (id `n`; neither the id nor the
    /// signature is looked at here).
    fn event_frame(sub: &str, kind: u16, n: u8) -> String {
        let keys = Keys::new(SecretKey::from_slice(&[3; 32]).expect("secret"));
        let event = Event::new(
            EventId::from_byte_array([n; 32]),
            keys.public_key(),
            Timestamp::from(1_700_000_000),
            Kind::from(kind),
            [],
            "",
            Signature::from_byte_array([7; 64]),
        );
        format!(r#"["EVENT","{sub}",{}]"#, event.as_json())
    }

    fn receive(relay: &mut RelayState, text: &str) -> Received {
        relay.receive(NOW, &Timing::default(), text)
    }

    /// Only an event a subscription of ours asked for, new to its walk, reaches the
    /// engine; the rest is counted by why.
    #[test]
    fn an_event_reaches_the_engine_only_when_asked_for_and_new() {
        let mut relay = open_relay();
        let job = paging(&mut relay);
        assert!(matches!(
            receive(&mut relay, &event_frame("gs9", 1621, 1)),
            Received::Nothing
        ));
        assert_eq!(relay.stats.bad_frames.get("unknown-subscription"), Some(&1));
        assert!(matches!(
            receive(&mut relay, &event_frame("gs1", 1, 2)),
            Received::Nothing
        ));
        let not_requested = Reject::NotRequested.as_str();
        assert_eq!(relay.stats.events_rejected.get(not_requested), Some(&1));
        let frame = event_frame("gs1", 1621, 3);
        let received = receive(&mut relay, &frame);
        assert!(matches!(received, Received::Event { job: Some(j), .. } if j == job));
        assert!(
            matches!(receive(&mut relay, &frame), Received::Nothing),
            "seen by this walk already"
        );
        relay.phase = Phase::Connecting { deadline: NOW };
        assert!(matches!(receive(&mut relay, &frame), Received::Nothing));
        assert_eq!(relay.stats.bad_frames.get("not-open"), Some(&1));
        assert_eq!(relay.stats.events_received, 4);
    }

    /// A page's EOSE closes its subscription (told to the relay) and says what next.
    #[test]
    fn a_page_ends_closed_with_what_comes_next() {
        let mut relay = open_relay();
        let job = paging(&mut relay);
        receive(&mut relay, &event_frame("gs1", 1621, 1));
        let received = receive(&mut relay, r#"["EOSE","gs1"]"#);
        assert!(matches!(
            received,
            Received::PageEnded { job: j, outcome: PageOutcome::Next, full: 500 } if j == job
        ));
        assert!(relay.subs.is_empty());
        assert_eq!(relay.outbox, vec![r#"["CLOSE","gs1"]"#.to_owned()]);
        assert!(matches!(
            receive(&mut relay, r#"["EOSE","gs1"]"#),
            Received::Nothing
        ));
    }

    /// What the relay says about NIP-77 decides the relay's verdict and the job's fate.
    #[test]
    fn nip77_answers_decide_the_verdict_and_the_job() {
        let mut relay = open_relay();
        let job = probing(&mut relay);
        let received = receive(
            &mut relay,
            r#"["NEG-ERR","gs1","blocked: too many records"]"#,
        );
        assert!(
            matches!(received, Received::Job { job: j, next: JobNext::SplitWindow } if j == job)
        );
        assert_eq!(
            relay.nip77,
            Nip77::Supported,
            "too many records is NIP-77 working"
        );

        let mut relay = open_relay();
        let job = probing(&mut relay);
        let received = receive(
            &mut relay,
            r#"["NOTICE","ERROR: bad msg: negentropy disabled"]"#,
        );
        assert!(matches!(received, Received::Job { job: j, next: JobNext::Page } if j == job));
        assert_eq!(relay.nip77, Nip77::Unsupported);

        let mut relay = open_relay();
        let job = probing(&mut relay);
        let received = receive(&mut relay, r#"["NEG-MSG","gs1","ff00"]"#);
        assert!(matches!(received, Received::Job { job: j, next: JobNext::Page } if j == job));
        assert_eq!(relay.nip77, Nip77::Unsupported);
        assert_eq!(relay.stats.bad_frames.get("neg-decode"), Some(&1));
        assert_eq!(relay.outbox, vec![r#"["NEG-CLOSE","gs1"]"#.to_owned()]);
    }

    /// A job's subscription the relay closed: retried, quieter, or given up by reason.
    #[test]
    fn a_closed_job_is_retried_or_given_up_by_reason() {
        let cases = [
            (
                "rate-limited: slow down",
                JobNext::Requeue { failed: false },
            ),
            ("auth-required: who are you", JobNext::Abandon),
            ("error: shutting down", JobNext::Requeue { failed: true }),
        ];
        for (message, want) in cases {
            let mut relay = open_relay();
            let job = paging(&mut relay);
            let received = receive(&mut relay, &format!(r#"["CLOSED","gs1","{message}"]"#));
            assert!(
                matches!(received, Received::Job { job: j, next } if j == job && next == want),
                "{message}: {received:?}"
            );
            let quiet = message.starts_with("rate-limited");
            assert_eq!(relay.quiet_until.is_some(), quiet, "{message}");
            assert!(
                relay.subs.is_empty() && relay.outbox.is_empty(),
                "{message}"
            );
        }
    }
}
