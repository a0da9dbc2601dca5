//! A simulated world: the engine, simulated relays behind a network with latency and
//! faults, an in-memory store and a simulated clock. Everything is deterministic from
//! the seed, so a failing run replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use grasp_sync_core::engine::{
    Checkpoint, EngineConfig, Input, Output, PublishId, PublishOutcome, SyncEngine, Time,
};
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::wire::{parse_client_frame, parse_relay_frame, ClientFrame, RelayFrame};
use grasp_sync_core::RelayUrl;
use nostr::prelude::{Event, EventId, Filter, MatchEventOptions};

use crate::index::EventIndex;

use crate::relay::{SimRelay, SimRelayConfig};
use crate::rng::Rng;

/// Faults injected on the network, in percent per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Frames from relays, per mille, lost with their connection (a WebSocket loses
    /// frames only when it breaks): the frame is dropped and the connection cut.
    pub drop_per_mille: u64,
    /// Frames from relays that arrive twice.
    pub duplicate_pct: u64,
    /// Events from relays whose signature is corrupted on the way.
    pub bad_signature_pct: u64,
    /// Extra delay, up to this many milliseconds, per frame.
    pub jitter_ms: u64,
    /// A slow link: each frame from a relay arrives at least this many milliseconds
    /// after the one before it.
    pub frame_gap_ms: u64,
}

/// How an event reached the engine: the kind of subscription that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A live subscription (`limit: 0`).
    Live,
    /// A historic REQ (one page of a paginated walk); `boundary` when the page's
    /// `until` is the event's own second: the oldest second of the previous page,
    /// asked again because more events may share it (NIP-01 has no cursor).
    Page {
        /// The page asked for the event's second again.
        boundary: bool,
        /// A fingerprint of the historic filter without `until` and `limit`: the pages
        /// of one walk share it.
        filter: u64,
    },
    /// An `ids` fetch (a NIP-77 need, or a real copy after a forged one).
    Ids,
    /// A subscription whose filters the event does not match (a relay quirk), or one
    /// the world never saw opened.
    Unrequested,
}

/// Download accounting over [`World::vias`]: what was downloaded, and which downloads
/// were redundant.
#[derive(Debug, Clone, Default)]
pub struct Downloads {
    /// Deliveries of events a subscription asked for.
    pub requested: u64,
    /// Deliveries of events matching none of the subscription's filters (a relay
    /// quirk; the engine refuses them).
    pub unrequested: u64,
    /// Deliveries by a page asking for the event's second again (see [`Via::Page`]).
    pub boundary: u64,
    /// Distinct events delivered.
    pub distinct: u64,
    /// Distinct (relay, event) pairs delivered.
    pub pairs: u64,
    /// Deliveries the protocol requires, summed over events: per event at least one;
    /// more when several requests had to send it — each request of a relay without
    /// NIP-77 that delivered it (a REQ cannot skip what we already have: each historic
    /// filter that matches it, and its live subscriptions and `ids` fetches together),
    /// and each relay with NIP-77 that pushed it on a live subscription (every relay
    /// pushes new events to its subscribers).
    pub required: u64,
    /// (relay, event) delivered more than once where the engine could have avoided it:
    /// by a relay with NIP-77, more than once outside page boundaries; by a relay
    /// without, more than once by one request: its live subscriptions and `ids`
    /// fetches together, or one historic filter's pages outside their boundaries.
    pub redundant: Vec<(RelayUrl, EventId, Vec<Via>)>,
}

/// One relay in the world.
#[derive(Debug)]
pub struct Host {
    /// The relay.
    pub relay: SimRelay,
    /// Whether it accepts connections.
    pub up: bool,
    /// Whether the engine is connected to it.
    pub connected: bool,
    /// Counts connections: frames of an earlier connection never reach a later one.
    pub generation: u64,
}

#[derive(Debug)]
enum Delivery {
    Input(Input),
    /// A frame from a relay, on connection `generation`.
    Frame(RelayUrl, u64, String),
    /// A frame to a relay, on connection `generation`.
    ToRelay(RelayUrl, u64, String),
}

/// What a store holds at one moment: what a restart after a crash then would find.
#[derive(Debug, Clone)]
pub struct Durable {
    /// The stored events.
    pub events: Vec<Event>,
    /// The checkpoints landed, in order.
    pub checkpoints: Vec<Checkpoint>,
}

/// The simulated world.
pub struct World {
    /// The simulated clock.
    pub now: Time,
    /// The engine under test.
    pub engine: SyncEngine,
    /// The relays, by URL.
    pub hosts: BTreeMap<RelayUrl, Host>,
    /// The store.
    pub store: EventIndex,
    /// Checkpoints the engine asked to persist, in the order they landed.
    pub checkpoints: Vec<Checkpoint>,
    /// How many of [`checkpoints`](Self::checkpoints) landed with a store write (the
    /// events they cover) rather than after it.
    pub carried: usize,
    /// When set, what is durable after each write of events or checkpoints (the stored
    /// events, the checkpoints landed so far): the states a crash could leave.
    pub crash_points: Option<Vec<Durable>>,
    /// Store writes carrying checkpoints still to fail (each writes nothing, neither
    /// events nor checkpoints, and answers with an error).
    pub failing_carriers: u32,
    /// Seen-not-stored entries the engine asked to persist.
    pub remembered: Vec<SeenEntry>,
    /// What became of each event published through [`Input::Publish`], in order.
    pub published: Vec<(PublishId, PublishOutcome)>,
    /// Network faults in force.
    pub faults: Faults,
    /// One-way latency.
    pub latency: Duration,
    /// How long a batch takes to verify (the browser's workers, say); zero by default.
    pub verify_latency: Duration,
    /// How long a store batch takes to be written (IndexedDB, say); zero by default.
    pub store_latency: Duration,
    /// How much longer than a connection a relay's NIP-11 document takes to arrive;
    /// zero by default.
    pub info_latency: Duration,
    /// How many times each event id was delivered to the engine, per relay.
    pub deliveries: HashMap<(RelayUrl, EventId), u32>,
    /// Every delivery of each event, per relay, with the kind of subscription that
    /// asked for it (download accounting; kept while [`accounting`](Self::accounting)
    /// is on).
    pub vias: HashMap<(RelayUrl, EventId), Vec<Via>>,
    /// Whether deliveries are classified into [`vias`](Self::vias) (on by default;
    /// parsing every event frame a second time costs simulations with many frames).
    pub accounting: bool,
    /// How many times each event was written to the store.
    pub writes: HashMap<EventId, u32>,
    /// The filters of each subscription the engine opened, by relay and id.
    opened: HashMap<(RelayUrl, String), Vec<Filter>>,
    last_frame_at: HashMap<RelayUrl, Time>,
    queue: BTreeMap<(Time, u64), Delivery>,
    seq: u64,
    rng: Rng,
}

impl World {
    /// A world with the engine configured by `config` (with its invariant checks on),
    /// starting at `start`.
    pub fn new(config: EngineConfig, start: Time, seed: u64) -> Self {
        Self {
            now: start,
            // A simulated engine checks its hand-kept counters after every input.
            engine: SyncEngine::new(EngineConfig {
                check_invariants: true,
                ..config
            }),
            hosts: BTreeMap::new(),
            store: EventIndex::default(),
            checkpoints: Vec::new(),
            carried: 0,
            failing_carriers: 0,
            crash_points: None,
            remembered: Vec::new(),
            published: Vec::new(),
            faults: Faults::default(),
            latency: Duration::from_millis(20),
            verify_latency: Duration::ZERO,
            store_latency: Duration::ZERO,
            info_latency: Duration::ZERO,
            deliveries: HashMap::new(),
            vias: HashMap::new(),
            accounting: true,
            writes: HashMap::new(),
            opened: HashMap::new(),
            last_frame_at: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed ^ 0xA5A5_5A5A),
        }
    }

    /// Adds a relay holding `events`.
    pub fn add_relay(&mut self, url: &str, config: SimRelayConfig, events: &[Event]) -> RelayUrl {
        let url = RelayUrl::parse(url).unwrap_or_else(|e| panic!("test relay url {url}: {e}"));
        let mut relay = SimRelay::new(config);
        for e in events {
            relay.insert(e.clone());
        }
        self.hosts.insert(
            url.clone(),
            Host {
                relay,
                up: true,
                connected: false,
                generation: 0,
            },
        );
        url
    }

    fn record_crash_point(&mut self) {
        if let Some(points) = self.crash_points.as_mut() {
            points.push(Durable {
                events: self.store.iter().cloned().collect(),
                checkpoints: self.checkpoints.clone(),
            });
        }
    }

    /// Hands the engine an input now.
    pub fn input(&mut self, input: Input) {
        self.engine.handle_input(self.now, input);
        self.drain();
    }

    /// Publishes an event at a relay: stored, and sent to matching open subscriptions.
    pub fn publish(&mut self, url: &RelayUrl, event: Event) {
        let Some(host) = self.hosts.get_mut(url) else {
            return;
        };
        let frames = host.relay.publish(event);
        if host.connected {
            for frame in frames {
                self.send_to_engine(url.clone(), frame);
            }
        }
    }

    /// World time at which a live event reaches `url`: its `created_at` minus the
    /// relay's clock skew (see [`SimRelayConfig::clock_skew_secs`]).
    pub fn publish_time(&self, url: &RelayUrl, event: &Event) -> Time {
        let skew = self
            .hosts
            .get(url)
            .map_or(0, |h| h.relay.config.clock_skew_secs);
        let at = i128::from(event.created_at.as_secs()) - i128::from(skew);
        Time::from_secs(u64::try_from(at.max(0)).unwrap_or(u64::MAX))
    }

    /// Publishes the events of `pending` whose time has come at their relay (see
    /// [`publish_time`](Self::publish_time)); keeps the others.
    pub fn publish_due(&mut self, pending: &mut Vec<(RelayUrl, Event)>) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = pending
            .drain(..)
            .partition(|(url, e)| self.publish_time(url, e) <= now);
        *pending = later;
        for (url, event) in due {
            self.publish(&url, event);
        }
    }

    /// Cuts the connection to a relay (it stays up and may be reconnected).
    pub fn cut(&mut self, url: &RelayUrl) {
        if let Some(host) = self.hosts.get_mut(url) {
            if host.connected {
                host.connected = false;
                host.relay.disconnect();
                let at = self.now;
                if let Some(relay) = self.engine.relay_id(url) {
                    let reason = "cut".into();
                    self.schedule(at, Delivery::Input(Input::Disconnected { relay, reason }));
                }
            }
        }
    }

    /// Takes a relay down (cutting its connection) or brings it back up.
    pub fn set_up(&mut self, url: &RelayUrl, up: bool) {
        if !up {
            self.cut(url);
        }
        if let Some(host) = self.hosts.get_mut(url) {
            host.up = up;
        }
    }

    /// Runs until `deadline` of simulated time, or until nothing is left to happen.
    pub fn run_until(&mut self, deadline: Time) {
        let mut same_instant = 0u32;
        loop {
            self.drain();
            let next_delivery = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self.engine.poll_timeout();
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > deadline {
                self.now = deadline;
                break;
            }
            if next <= self.now {
                same_instant += 1;
                assert!(same_instant < 100_000, "no progress at {:?}", self.now);
            } else {
                same_instant = 0;
                self.now = next;
            }
            if next_delivery.is_some_and(|t| t <= self.now) {
                let Some((_, delivery)) = self.queue.pop_first() else {
                    continue;
                };
                self.deliver(delivery);
            } else {
                self.engine.handle_timeout(self.now);
            }
        }
        self.drain();
    }

    /// Download accounting so far (see [`Downloads`]); relays count as speaking NIP-77
    /// by their configuration.
    pub fn downloads(&self) -> Downloads {
        let mut report = Downloads::default();
        let mut required: HashMap<EventId, u64> = HashMap::new();
        for ((relay, id), vias) in &self.vias {
            let nip77 = self.hosts.get(relay).is_some_and(|h| h.relay.config.nip77);
            // Deliveries per request: `None` for live subscriptions and `ids` fetches,
            // a filter's fingerprint for its pages (outside their boundaries).
            let mut requests: HashMap<Option<u64>, u32> = HashMap::new();
            let mut asked = 0u32;
            for via in vias {
                match via {
                    Via::Unrequested => {
                        report.unrequested += 1;
                        continue;
                    }
                    Via::Page { boundary: true, .. } => report.boundary += 1,
                    Via::Page { filter, .. } => *requests.entry(Some(*filter)).or_insert(0) += 1,
                    Via::Live | Via::Ids => *requests.entry(None).or_insert(0) += 1,
                }
                report.requested += 1;
                asked += 1;
            }
            if asked == 0 {
                continue;
            }
            report.pairs += 1;
            let once: u32 = requests.values().sum();
            let redundant = if nip77 {
                once > 1
            } else {
                requests.values().any(|n| *n > 1)
            };
            if redundant {
                report.redundant.push((relay.clone(), *id, vias.clone()));
            }
            let needed = if nip77 {
                u64::from(vias.contains(&Via::Live))
            } else {
                requests.len() as u64
            };
            *required.entry(*id).or_insert(0) += needed;
        }
        report.distinct = required.len() as u64;
        report.required = required.values().map(|n| (*n).max(1)).sum();
        report
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn schedule(&mut self, at: Time, delivery: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), delivery);
    }

    fn send_to_engine(&mut self, url: RelayUrl, mut frame: String) {
        if self.faults.drop_per_mille > 0 && self.rng.below(1000) < self.faults.drop_per_mille {
            self.cut(&url);
            return;
        }
        if self.faults.bad_signature_pct > 0
            && frame.starts_with("[\"EVENT\"")
            && self.rng.chance(self.faults.bad_signature_pct)
        {
            frame = corrupt_signature(&frame);
        }
        let jitter = Duration::from_millis(self.rng.below(self.faults.jitter_ms + 1));
        // A WebSocket delivers in order: jitter delays, never reorders.
        let last = self.last_frame_at.get(&url).map_or(Time::default(), |t| {
            *t + Duration::from_millis(self.faults.frame_gap_ms)
        });
        let at = (self.now + self.latency + jitter).max(last);
        self.last_frame_at.insert(url.clone(), at);
        let copies = if self.faults.duplicate_pct > 0 && self.rng.chance(self.faults.duplicate_pct)
        {
            2
        } else {
            1
        };
        let generation = self.hosts.get(&url).map_or(0, |h| h.generation);
        for _ in 0..copies {
            self.schedule(at, Delivery::Frame(url.clone(), generation, frame.clone()));
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Input(input) => self.engine.handle_input(self.now, input),
            Delivery::Frame(relay, generation, text) => {
                if !self.is_current(&relay, generation) {
                    return;
                }
                if self.accounting {
                    if let Some((id, via)) = self.via(&relay, &text) {
                        *self.deliveries.entry((relay.clone(), id)).or_insert(0) += 1;
                        self.vias.entry((relay.clone(), id)).or_default().push(via);
                    }
                } else if let Some(id) = event_id_of(&text) {
                    *self.deliveries.entry((relay.clone(), id)).or_insert(0) += 1;
                }
                if let Some(relay) = self.engine.relay_id(&relay) {
                    self.engine
                        .handle_input(self.now, Input::Frame { relay, text });
                }
            }
            Delivery::ToRelay(url, generation, text) => {
                if !self.is_current(&url, generation) {
                    return;
                }
                let Some(host) = self.hosts.get_mut(&url) else {
                    return;
                };
                for frame in host.relay.handle(&text) {
                    self.send_to_engine(url.clone(), frame);
                }
            }
        }
    }

    /// The event an EVENT frame carries and how it was asked for.
    fn via(&self, relay: &RelayUrl, text: &str) -> Option<(EventId, Via)> {
        let Ok(RelayFrame::Event {
            subscription,
            event,
        }) = parse_relay_frame(text, usize::MAX)
        else {
            return None;
        };
        let filters = self.opened.get(&(relay.clone(), subscription));
        let opts = MatchEventOptions::new();
        let matched = filters.and_then(|fs| fs.iter().find(|f| f.match_event(&event, opts)));
        let via = match matched {
            None => Via::Unrequested,
            Some(f) if f.ids.is_some() => Via::Ids,
            Some(f) if f.limit == Some(0) => Via::Live,
            Some(f) => Via::Page {
                boundary: f.until == Some(event.created_at),
                filter: fingerprint(f),
            },
        };
        Some((event.id, via))
    }

    fn is_current(&self, url: &RelayUrl, generation: u64) -> bool {
        self.hosts
            .get(url)
            .is_some_and(|h| h.connected && h.generation == generation)
    }

    /// Executes every output the engine has.
    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            let now = self.now;
            let later = now + self.latency;
            match output {
                Output::Connect { relay, url } => {
                    let up = self.hosts.get(&url).is_some_and(|h| h.up);
                    let input = if up {
                        if let Some(host) = self.hosts.get_mut(&url) {
                            host.connected = true;
                            host.generation += 1;
                            host.relay.disconnect();
                        }
                        Input::Connected { relay }
                    } else {
                        Input::Disconnected {
                            relay,
                            reason: "refused".into(),
                        }
                    };
                    self.schedule(later, Delivery::Input(input));
                }
                Output::FetchInfo { relay, url } => {
                    let document = self
                        .hosts
                        .get(&url)
                        .filter(|h| h.up)
                        .and_then(|h| h.relay.nip11_document());
                    self.schedule(
                        later + self.info_latency,
                        Delivery::Input(Input::InfoFetched { relay, document }),
                    );
                }
                Output::Send { relay, text } => {
                    let Some(relay) = self.engine.relay_url(relay).cloned() else {
                        continue;
                    };
                    if self.accounting {
                        if let Ok(ClientFrame::Req {
                            subscription,
                            filters,
                        }) = parse_client_frame(&text, usize::MAX)
                        {
                            self.opened.insert((relay.clone(), subscription), filters);
                        }
                    }
                    let generation = self.hosts.get(&relay).map_or(0, |h| h.generation);
                    self.schedule(later, Delivery::ToRelay(relay, generation, text));
                }
                Output::Close { relay } => {
                    let url = self.engine.relay_url(relay);
                    if let Some(host) = url.and_then(|url| self.hosts.get_mut(url)) {
                        host.connected = false;
                        host.relay.disconnect();
                    }
                }
                Output::LoadLocalItems { request, filter } => {
                    let items = self
                        .store
                        .matching(&filter)
                        .into_iter()
                        .map(|e| (e.created_at, e.id))
                        .collect();
                    self.schedule(
                        now,
                        Delivery::Input(Input::LocalItemsLoaded { request, items }),
                    );
                }
                Output::Verify { batch, events } => {
                    let valid = events.iter().map(verify_cached).collect();
                    let answered = now + self.verify_latency;
                    self.schedule(answered, Delivery::Input(Input::Verified { batch, valid }));
                }
                Output::Store {
                    batch,
                    events,
                    remove,
                    checkpoints,
                } => {
                    if self.failing_carriers > 0 && !checkpoints.is_empty() {
                        // A failed write lands nothing: no event, no checkpoint.
                        self.failing_carriers -= 1;
                        let result = Err("simulated write failure".to_owned());
                        self.schedule(now, Delivery::Input(Input::Stored { batch, result }));
                        continue;
                    }
                    // The store contract: puts, then removals (an id put and removed in
                    // one call ends removed).
                    for e in events {
                        *self.writes.entry(e.id).or_insert(0) += 1;
                        self.store.insert(e);
                    }
                    let mut removed = Vec::new();
                    for r in remove {
                        if self.store.get(&r.id).is_some_and(|e| e.pubkey == r.author) {
                            removed.extend(self.store.remove(&r.id));
                        }
                    }
                    // They land with the events they cover.
                    self.carried += checkpoints.len();
                    self.checkpoints.extend(checkpoints);
                    self.record_crash_point();
                    self.schedule(
                        now + self.store_latency,
                        Delivery::Input(Input::Stored {
                            batch,
                            result: Ok(removed),
                        }),
                    );
                }
                Output::Checkpoint(cp) => {
                    self.checkpoints.push(cp);
                    self.record_crash_point();
                }
                Output::Remember(entries) => self.remembered.extend(entries),
                Output::Published { token, outcome } => self.published.push((token, outcome)),
                Output::Status { .. } => {}
            }
        }
    }
}

/// Verifies an event's id and signature, remembering results across worlds: many
/// simulated runs share one corpus, and verification dominates their cost otherwise.
fn verify_cached(event: &Event) -> bool {
    type Verdicts = HashMap<(EventId, [u8; 64]), bool>;
    static CACHE: OnceLock<Mutex<Verdicts>> = OnceLock::new();
    let key = (event.id, *event.sig.as_bytes());
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(valid) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return valid;
    }
    let valid = event.verify().is_ok();
    if let Ok(mut c) = cache.lock() {
        c.insert(key, valid);
    }
    valid
}

/// A hash of a filter without `until` and `limit`.
fn fingerprint(filter: &Filter) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut f = filter.clone();
    f.until = None;
    f.limit = None;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.as_json().hash(&mut h);
    h.finish()
}

/// The id of the event in an EVENT frame, if it is one.
fn event_id_of(frame: &str) -> Option<EventId> {
    let value: serde_json::Value = serde_json::from_str(frame).ok()?;
    let arr = value.as_array()?;
    if arr.first()?.as_str()? != "EVENT" {
        return None;
    }
    EventId::from_hex(arr.get(2)?.get("id")?.as_str()?).ok()
}

/// The same frame with one hex digit of the event's signature changed.
fn corrupt_signature(frame: &str) -> String {
    let Some(pos) = frame.find("\"sig\":\"") else {
        return frame.to_owned();
    };
    let at = pos + 7;
    let mut bytes = frame.as_bytes().to_vec();
    if let Some(b) = bytes.get_mut(at) {
        *b = if *b == b'0' { b'1' } else { b'0' };
    }
    String::from_utf8(bytes).unwrap_or_else(|_| frame.to_owned())
}
