//! A simulated relay over an in-memory event set: real NIP-01 filter matching, NIP-77
//! through the core's responder, and the quirks of real relays — a silent result limit,
//! a subscription limit, a message-size limit, NOTICE instead of NEG-ERR, CLOSED right
//! after EOSE for id-only REQs — each configurable.

use std::collections::HashMap;

use crate::index::EventIndex;
use grasp_sync_core::neg::{NegReply, NegResponder, ResponderLimits};
use grasp_sync_core::wire::{parse_client_frame, ClientFrame, RelayFrame};
use nostr::prelude::{Event, EventId, Filter, Kind, MatchEventOptions};

/// How a simulated relay behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRelayConfig {
    /// Whether it speaks NIP-77.
    pub nip77: bool,
    /// Without NIP-77, refuse NEG-OPEN with a NOTICE (strfry and nostr-rs-relay style)
    /// instead of a NEG-ERR.
    pub neg_refusal_as_notice: bool,
    /// Results per filter, applied silently (like strfry's 500).
    pub max_results: usize,
    /// Open subscriptions per connection; more are refused with CLOSED.
    pub max_subscriptions: usize,
    /// Filters per REQ; a REQ with more is refused with CLOSED.
    pub max_filters: usize,
    /// Largest message accepted; larger ones get a NOTICE.
    pub max_message_bytes: usize,
    /// Send CLOSED right after EOSE for REQs that only ask for ids (rust-nostr style).
    pub closed_after_eose_for_ids: bool,
    /// Items a NIP-77 session may hold.
    pub max_neg_items: usize,
    /// With NIP-77: ignore NEG-OPEN and NEG-MSG silently (no answer at all).
    pub neg_silent: bool,
    /// With NIP-77: answer a NEG-OPEN whose filter matches more than this many records
    /// with NEG-ERR `blocked: too many records` (strfry style).
    pub neg_blocked_over: Option<usize>,
    /// Answer the first this many REQs with CLOSED `rate-limited: slow down`.
    pub rate_limited_reqs: usize,
    /// Answer the first this many historic REQs (a filter with `limit` above 0) with
    /// CLOSED `error: internal error`: a relay failing a query every time it is asked.
    pub failing_reqs: usize,
    /// Decorate the first this many REQ answers holding events with junk: a frame that
    /// is not JSON, one of an unknown type, an EVENT for an unknown subscription, and a
    /// copy of the first event with a corrupted signature sent before the real one.
    pub junk_answers: usize,
    /// Adds to every REQ answer one stored event that matches none of its filters (a
    /// relay that ignores filters in part): the client must refuse it.
    pub mismatched_events: bool,
    /// Clock skew, in seconds, of those publishing live to this relay, relative to the
    /// world's clock: a live event with `created_at` T reaches the relay at world time
    /// T − skew (see [`World::publish_due`](crate::World::publish_due)). Negative: clocks
    /// behind, events arrive with timestamps already in the past — what a `since`
    /// catch-up after a reconnection must still cover; positive: clocks ahead.
    pub clock_skew_secs: i64,
    /// Publish a NIP-11 document whose `limitation` states the limits above:
    /// `max_subscriptions`, `max_filters`, `max_limit` (= `max_results`) and
    /// `max_message_length` (= `max_message_bytes`). Without one, the engine fetches
    /// nothing and keeps its conservative defaults.
    pub nip11: bool,
}

impl Default for SimRelayConfig {
    fn default() -> Self {
        Self {
            nip77: true,
            neg_refusal_as_notice: true,
            max_results: 500,
            max_subscriptions: 20,
            max_filters: usize::MAX,
            max_message_bytes: 128 * 1024,
            closed_after_eose_for_ids: true,
            max_neg_items: 500_000,
            neg_silent: false,
            neg_blocked_over: None,
            rate_limited_reqs: 0,
            failing_reqs: 0,
            junk_answers: 0,
            mismatched_events: false,
            clock_skew_secs: 0,
            nip11: false,
        }
    }
}

/// What a relay's REQs looked like, for assertions on how a client packs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReqStats {
    /// REQ frames received.
    pub reqs: u64,
    /// Most filters in one REQ.
    pub max_filters: usize,
    /// Largest REQ frame, bytes.
    pub max_bytes: usize,
    /// Largest `limit` of a filter (0 for a live `limit: 0`).
    pub max_limit: usize,
    /// Most subscriptions open at once.
    pub max_open: usize,
    /// REQ frames refused as larger than `max_message_bytes`.
    pub refused_large_reqs: u64,
    /// Other frames (NEG-OPEN, NEG-MSG, …) refused as larger than `max_message_bytes`.
    pub refused_large_other: u64,
    /// REQs refused for holding more than `max_filters` filters.
    pub refused_filters: u64,
    /// REQs refused for opening more than `max_subscriptions` subscriptions.
    pub refused_subscriptions: u64,
}

/// A simulated relay. Frames in, frames out; no clock, no I/O.
#[derive(Debug)]
pub struct SimRelay {
    /// Its behaviour.
    pub config: SimRelayConfig,
    events: EventIndex,
    subs: HashMap<String, Vec<Filter>>,
    neg: NegResponder,
    /// Frames received, for assertions.
    pub frames_in: u64,
    /// Bytes received and sent.
    pub bytes_in: u64,
    /// See [`bytes_in`](Self::bytes_in).
    pub bytes_out: u64,
    /// The last [`LOG_CAPACITY`] frames received, in order; NIP-77 messages are elided
    /// (`["NEG-OPEN","sub",{filter},"…"]`).
    pub log: Vec<String>,
    reqs_seen: usize,
    historic_reqs_failed: usize,
    junk_sent: usize,
    /// How the REQs it received were packed.
    pub req_stats: ReqStats,
}

/// Frames kept in [`SimRelay::log`]: past it the older half is dropped.
pub const LOG_CAPACITY: usize = 4_096;

impl SimRelay {
    /// An empty relay.
    pub fn new(config: SimRelayConfig) -> Self {
        let neg = NegResponder::new(ResponderLimits {
            max_items: config.max_neg_items,
            ..ResponderLimits::default()
        });
        Self {
            config,
            events: EventIndex::default(),
            subs: HashMap::new(),
            neg,
            frames_in: 0,
            bytes_in: 0,
            bytes_out: 0,
            log: Vec::new(),
            reqs_seen: 0,
            historic_reqs_failed: 0,
            junk_sent: 0,
            req_stats: ReqStats::default(),
        }
    }

    /// Its NIP-11 document, when [`SimRelayConfig::nip11`] says it publishes one.
    pub fn nip11_document(&self) -> Option<String> {
        let c = &self.config;
        c.nip11.then(|| {
            serde_json::json!({
                "name": "simulated relay",
                "supported_nips": if c.nip77 { vec![1, 11, 77] } else { vec![1, 11] },
                "limitation": {
                    "max_subscriptions": c.max_subscriptions,
                    "max_filters": c.max_filters,
                    "max_limit": c.max_results,
                    "max_message_length": c.max_message_bytes,
                },
            })
            .to_string()
        })
    }

    /// Every stored event.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Stores an event as a relay would (replaceable and addressable versions replace
    /// older ones; NIP-09 deletions remove the author's events) and returns the frames
    /// for open subscriptions it matches.
    pub fn publish(&mut self, event: Event) -> Vec<String> {
        if !self.insert(event.clone()) {
            return Vec::new();
        }
        let opts = MatchEventOptions::new();
        let mut out = Vec::new();
        for (sub, filters) in &self.subs {
            if filters.iter().any(|f| f.match_event(&event, opts)) {
                out.push(
                    RelayFrame::Event {
                        subscription: sub.clone(),
                        event: Box::new(event.clone()),
                    }
                    .to_json(),
                );
            }
        }
        self.count_out(&out);
        out
    }

    /// Stores an event without notifying anyone; whether it was kept.
    pub fn insert(&mut self, event: Event) -> bool {
        let kind = event.kind;
        if kind.is_replaceable() || kind.is_addressable() {
            let d = |e: &Event| {
                e.tags
                    .iter()
                    .find(|t| t.kind() == "d")
                    .and_then(|t| t.content())
                    .unwrap_or_default()
                    .to_owned()
            };
            let key = (kind, event.pubkey, d(&event));
            let older: Vec<EventId> = self
                .events
                .iter()
                .filter(|e| (e.kind, e.pubkey, d(e)) == key)
                .filter(|e| {
                    e.created_at < event.created_at
                        || (e.created_at == event.created_at && e.id > event.id)
                })
                .map(|e| e.id)
                .collect();
            let newer_held = self
                .events
                .iter()
                .any(|e| (e.kind, e.pubkey, d(e)) == key && !older.contains(&e.id));
            if newer_held {
                return false;
            }
            for id in older {
                self.remove(&id);
            }
        }
        if kind == Kind::from(5u16) {
            let targets: Vec<EventId> = event
                .tags
                .iter()
                .filter(|t| t.kind() == "e")
                .filter_map(|t| t.content())
                .filter_map(|v| EventId::from_hex(v).ok())
                .collect();
            for id in targets {
                if self
                    .events
                    .get(&id)
                    .is_some_and(|e| e.pubkey == event.pubkey)
                {
                    self.remove(&id);
                }
            }
        }
        self.events.insert(event);
        true
    }

    fn remove(&mut self, id: &EventId) {
        self.events.remove(id);
    }

    /// The connection closed: subscriptions and NIP-77 sessions are gone.
    pub fn disconnect(&mut self) {
        self.subs.clear();
        self.neg = NegResponder::new(ResponderLimits {
            max_items: self.config.max_neg_items,
            ..ResponderLimits::default()
        });
    }

    /// Handles one frame from a client; returns the frames sent back.
    pub fn handle(&mut self, text: &str) -> Vec<String> {
        self.frames_in += 1;
        self.bytes_in += text.len() as u64;
        self.record(text);
        let out = self.answer(text);
        self.count_out(&out);
        out
    }

    fn record(&mut self, text: &str) {
        if self.log.len() >= LOG_CAPACITY {
            self.log.drain(..LOG_CAPACITY / 2);
        }
        let neg = text.starts_with("[\"NEG-OPEN\"") || text.starts_with("[\"NEG-MSG\"");
        let entry = match text.rfind(",\"").filter(|_| neg) {
            Some(at) => format!("{},\"…\"]", &text[..at]),
            None => text.to_owned(),
        };
        self.log.push(entry);
    }

    fn count_out(&mut self, out: &[String]) {
        self.bytes_out += out.iter().map(|s| s.len() as u64).sum::<u64>();
    }

    fn answer(&mut self, text: &str) -> Vec<String> {
        if text.len() > self.config.max_message_bytes {
            if text.starts_with("[\"REQ\"") {
                self.req_stats.refused_large_reqs += 1;
            } else {
                self.req_stats.refused_large_other += 1;
            }
            return vec![notice("error: message too large")];
        }
        let frame = match parse_client_frame(text, self.config.max_message_bytes) {
            Ok(frame) => frame,
            Err(e) => return vec![notice(&format!("error: could not parse command: {e}"))],
        };
        match frame {
            ClientFrame::Req {
                subscription,
                filters,
            } => {
                self.reqs_seen += 1;
                let stats = &mut self.req_stats;
                stats.reqs += 1;
                stats.max_filters = stats.max_filters.max(filters.len());
                stats.max_bytes = stats.max_bytes.max(text.len());
                let limit = filters.iter().filter_map(|f| f.limit).max().unwrap_or(0);
                stats.max_limit = stats.max_limit.max(limit);
                if self.reqs_seen <= self.config.rate_limited_reqs {
                    return vec![RelayFrame::Closed {
                        subscription,
                        message: "rate-limited: slow down".into(),
                    }
                    .to_json()];
                }
                if limit > 0 && self.historic_reqs_failed < self.config.failing_reqs {
                    self.historic_reqs_failed += 1;
                    return vec![RelayFrame::Closed {
                        subscription,
                        message: "error: internal error".into(),
                    }
                    .to_json()];
                }
                let out = self.req(subscription, filters);
                self.junk(out)
            }
            ClientFrame::Close { subscription } => {
                self.subs.remove(&subscription);
                Vec::new()
            }
            ClientFrame::Event { event } => {
                let id = event.id;
                self.insert(*event);
                vec![RelayFrame::Ok {
                    event_id: id,
                    accepted: true,
                    message: String::new(),
                }
                .to_json()]
            }
            ClientFrame::NegOpen {
                subscription,
                filter,
                message,
            } => {
                if !self.config.nip77 {
                    return vec![if self.config.neg_refusal_as_notice {
                        notice("ERROR: bad msg: unknown cmd")
                    } else {
                        neg_err(&subscription, "error: negentropy disabled")
                    }];
                }
                if self.config.neg_silent {
                    return Vec::new();
                }
                if let Some(max) = self.config.neg_blocked_over {
                    if self.matching(&filter).count() > max {
                        return vec![neg_err(&subscription, "blocked: too many records")];
                    }
                }
                let items: Vec<(u64, [u8; 32])> = self
                    .matching(&filter)
                    .map(|e| (e.created_at.as_secs(), e.id.to_bytes()))
                    .collect();
                let reply = self.neg.open(&subscription, items, &message);
                vec![neg_reply(&subscription, reply)]
            }
            ClientFrame::NegMsg {
                subscription,
                message,
            } => {
                if !self.config.nip77 {
                    return vec![notice("ERROR: bad msg: unknown cmd")];
                }
                if self.config.neg_silent {
                    return Vec::new();
                }
                let reply = self.neg.message(&subscription, &message);
                vec![neg_reply(&subscription, reply)]
            }
            ClientFrame::NegClose { subscription } => {
                self.neg.close(&subscription);
                Vec::new()
            }
            ClientFrame::Count { subscription, .. } => vec![RelayFrame::Closed {
                subscription,
                message: "error: COUNT not supported".into(),
            }
            .to_json()],
            ClientFrame::Auth { .. } => Vec::new(),
        }
    }

    fn req(&mut self, subscription: String, filters: Vec<Filter>) -> Vec<String> {
        if filters.len() > self.config.max_filters {
            self.req_stats.refused_filters += 1;
            return vec![RelayFrame::Closed {
                subscription,
                message: "error: too many filters".into(),
            }
            .to_json()];
        }
        if !self.subs.contains_key(&subscription)
            && self.subs.len() >= self.config.max_subscriptions
        {
            self.req_stats.refused_subscriptions += 1;
            return vec![RelayFrame::Closed {
                subscription,
                message: "error: too many concurrent REQs".into(),
            }
            .to_json()];
        }
        let mut out = Vec::new();
        let mut sent = std::collections::HashSet::new();
        for filter in &filters {
            let limit = filter
                .limit
                .unwrap_or(self.config.max_results)
                .min(self.config.max_results);
            if limit == 0 {
                continue;
            }
            let mut matching: Vec<&Event> = self.matching(filter).collect();
            matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            for event in matching.into_iter().take(limit) {
                if sent.insert(event.id) {
                    out.push(
                        RelayFrame::Event {
                            subscription: subscription.clone(),
                            event: Box::new(event.clone()),
                        }
                        .to_json(),
                    );
                }
            }
        }
        if self.config.mismatched_events {
            let stray = self.events.iter().find(|e| {
                !sent.contains(&e.id) && !filters.iter().any(|f| self.index_matches(f, e))
            });
            if let Some(event) = stray {
                out.push(
                    RelayFrame::Event {
                        subscription: subscription.clone(),
                        event: Box::new(event.clone()),
                    }
                    .to_json(),
                );
            }
        }
        out.push(
            RelayFrame::Eose {
                subscription: subscription.clone(),
            }
            .to_json(),
        );
        let ids_only = filters.iter().all(|f| f.ids.is_some());
        if ids_only && self.config.closed_after_eose_for_ids {
            out.push(
                RelayFrame::Closed {
                    subscription,
                    message: String::new(),
                }
                .to_json(),
            );
        } else {
            self.subs.insert(subscription, filters);
            self.req_stats.max_open = self.req_stats.max_open.max(self.subs.len());
        }
        out
    }

    /// Adds junk around an answer (see [`SimRelayConfig::junk_answers`]).
    fn junk(&mut self, mut out: Vec<String>) -> Vec<String> {
        if self.junk_sent >= self.config.junk_answers {
            return out;
        }
        let Some(first) = out.iter().position(|f| f.starts_with("[\"EVENT\"")) else {
            return out;
        };
        self.junk_sent += 1;
        let event = out[first].clone();
        let unknown_sub = match event.find(",{") {
            Some(at) => format!("[\"EVENT\",\"no-such-subscription\"{}", &event[at..]),
            None => event.clone(),
        };
        out.insert(first, corrupt_signature(&event));
        out.insert(0, unknown_sub);
        out.insert(0, "[\"WHATEVER\",\"x\"]".to_owned());
        out.insert(0, "this is not json".to_owned());
        out
    }

    fn index_matches(&self, filter: &Filter, event: &Event) -> bool {
        filter.match_event(event, MatchEventOptions::new())
    }

    fn matching<'a>(&'a self, filter: &'a Filter) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.matching(filter).into_iter()
    }
}

/// The frame with one hex digit of the event's signature changed.
fn corrupt_signature(frame: &str) -> String {
    let Some(pos) = frame.find("\"sig\":\"") else {
        return frame.to_owned();
    };
    let mut bytes = frame.as_bytes().to_vec();
    if let Some(b) = bytes.get_mut(pos + 7) {
        *b = if *b == b'0' { b'1' } else { b'0' };
    }
    String::from_utf8(bytes).unwrap_or_else(|_| frame.to_owned())
}

fn notice(message: &str) -> String {
    RelayFrame::Notice {
        message: message.to_owned(),
    }
    .to_json()
}

fn neg_err(subscription: &str, message: &str) -> String {
    RelayFrame::NegErr {
        subscription: subscription.to_owned(),
        message: message.to_owned(),
    }
    .to_json()
}

fn neg_reply(subscription: &str, reply: NegReply) -> String {
    match reply {
        NegReply::Msg(message) => RelayFrame::NegMsg {
            subscription: subscription.to_owned(),
            message,
        }
        .to_json(),
        NegReply::Err(reason) => neg_err(subscription, &reason),
    }
}
