//! The driver's own tests: the simulation's relays run through the real [`Driver`] with
//! the in-memory store behind the store port, a verifier that checks every signature and
//! a manual clock, polled by a single-threaded executor. Virtual time moves only when
//! every task is stalled, to the earliest sleep's deadline.
//!
//! Each seed syncs a generated corpus from two relays (one speaking NIP-77, one REQ-only)
//! into an empty store, then starts a second driver on the same store two hours later:
//! the store ends holding exactly the acceptable events, checkpoints went through the
//! port, and the restart writes nothing again. Frames and store writes arrive at once or
//! after a simulated delay; other tests cut a connection mid-sync, refuse connections
//! to a relay for a while, and replay one seed twice to compare the runs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::future::{ready, LocalBoxFuture};
use futures::task::LocalSpawnExt as _;
use futures::{FutureExt as _, StreamExt as _};
use grasp_sync_core::accept::Removal;
use grasp_sync_core::engine::{EngineConfig, Phase, RelayStats, SyncEngine, Time};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::{RelayUrl, RepoRef};
use grasp_sync_driver::{
    Clock, Command, Connection, Control, Driver, DriverStats, Exit, Incoming, Network, Saved,
    SavedState, Store, StoreError, Verifier,
};
use grasp_sync_store::{MemoryStore, MemoryStores};
use grasp_sync_testkit::{Corpus, CorpusSpec, SimRelay, SimRelayConfig};
use nostr::prelude::{Event, EventId, Filter, Timestamp};

const NIP77: &str = "wss://relay-a.example.com";
const REQ_ONLY: &str = "wss://relay-b.example.com";
const HOUR: Duration = Duration::from_secs(3600);
/// Virtual time a run without silent loss takes at most: frames arrive at once (a cut is
/// reported at once), so a run that takes longer waited out a timeout (a lost EOSE, a
/// silent relay).
const FAULT_FREE: Duration = Duration::from_secs(10);
/// Virtual time one run may take before the test fails.
const BUDGET: Duration = Duration::from_secs(2 * 3600);

// -------------------------------------------------------------------------------------
// Manual clock

thread_local! {
    /// The virtual time in seconds, for the store's expiry checks (a `fn` pointer).
    static VIRTUAL_SECS: Cell<u64> = const { Cell::new(0) };
}

fn virtual_timestamp() -> Timestamp {
    Timestamp::from(VIRTUAL_SECS.with(Cell::get))
}

#[derive(Default)]
struct Timers {
    now: Time,
    /// Pending sleeps by (deadline, key), with the waker of their last poll.
    sleeps: BTreeMap<(Time, u64), Option<Waker>>,
    next_key: u64,
}

/// A clock whose time moves only when the test says.
#[derive(Clone)]
struct ManualClock(Rc<RefCell<Timers>>);

impl ManualClock {
    fn new(start: Time) -> Self {
        VIRTUAL_SECS.with(|c| c.set(start.as_millis() / 1000));
        Self(Rc::new(RefCell::new(Timers {
            now: start,
            ..Timers::default()
        })))
    }

    /// The earliest deadline of a live sleep.
    fn next_deadline(&self) -> Option<Time> {
        self.0.borrow().sleeps.keys().next().map(|(at, _)| *at)
    }

    /// Sets the time to `at` and wakes every sleep due by then.
    fn advance_to(&self, at: Time) {
        let wakers: Vec<Waker> = {
            let mut timers = self.0.borrow_mut();
            timers.now = timers.now.max(at);
            let now = timers.now;
            timers
                .sleeps
                .range_mut(..=(now, u64::MAX))
                .filter_map(|(_, w)| w.take())
                .collect()
        };
        VIRTUAL_SECS.with(|c| c.set(at.as_millis() / 1000));
        for waker in wakers {
            waker.wake();
        }
    }
}

struct Sleep {
    timers: Rc<RefCell<Timers>>,
    key: (Time, u64),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut timers = self.timers.borrow_mut();
        if timers.now >= self.key.0 {
            timers.sleeps.remove(&self.key);
            Poll::Ready(())
        } else {
            timers.sleeps.insert(self.key, Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.timers.borrow_mut().sleeps.remove(&self.key);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        self.0.borrow().now
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        let mut timers = self.0.borrow_mut();
        timers.next_key += 1;
        let key = (timers.now + duration, timers.next_key);
        Sleep {
            timers: Rc::clone(&self.0),
            key,
        }
        .boxed_local()
    }
}

// -------------------------------------------------------------------------------------
// Network over simulated relays

struct Link {
    generation: u64,
    /// Each frame with the virtual time it arrives.
    tx: mpsc::UnboundedSender<(Time, Incoming)>,
}

struct Net {
    clock: ManualClock,
    /// How long a connection attempt and each frame from a relay take to arrive.
    latency: Duration,
    relays: BTreeMap<RelayUrl, SimRelay>,
    links: HashMap<RelayUrl, Link>,
    next_generation: u64,
    /// EVENT frames each relay sent.
    events_sent: BTreeMap<RelayUrl, u64>,
    /// Cut the connection to this relay once it has sent this many EVENT frames in all.
    cut_after: Option<(RelayUrl, u64)>,
    cuts: u64,
    /// Refuse connections to this relay until this virtual time.
    down_until: Option<(RelayUrl, Time)>,
}

/// WebSockets to [`SimRelay`]s: a frame sent is handled at once, its answers arrive on
/// the connection's stream `latency` later, in order.
#[derive(Clone)]
struct SimNetwork(Rc<RefCell<Net>>);

impl SimNetwork {
    fn new(clock: &ManualClock, latency: Duration) -> Self {
        Self(Rc::new(RefCell::new(Net {
            clock: clock.clone(),
            latency,
            relays: BTreeMap::new(),
            links: HashMap::new(),
            next_generation: 0,
            events_sent: BTreeMap::new(),
            cut_after: None,
            cuts: 0,
            down_until: None,
        })))
    }

    fn add_relay(&self, url: &str, config: SimRelayConfig, events: &[Event]) -> RelayUrl {
        let url = RelayUrl::parse(url).expect("relay url");
        let mut relay = SimRelay::new(config);
        for e in events {
            relay.insert(e.clone());
        }
        self.0.borrow_mut().relays.insert(url.clone(), relay);
        url
    }

    /// Frames each relay received so far.
    fn frames_in(&self) -> BTreeMap<RelayUrl, u64> {
        let net = self.0.borrow();
        net.relays
            .iter()
            .map(|(u, r)| (u.clone(), r.frames_in))
            .collect()
    }

    fn events_sent(&self) -> u64 {
        self.0.borrow().events_sent.values().sum()
    }

    fn deliver(
        net: &RefCell<Net>,
        url: &RelayUrl,
        generation: u64,
        text: &str,
    ) -> Result<(), String> {
        let mut net = net.borrow_mut();
        let net = &mut *net;
        if net
            .links
            .get(url)
            .is_none_or(|l| l.generation != generation)
        {
            return Err("socket closed".into());
        }
        let relay = net.relays.get_mut(url).ok_or("unknown relay")?;
        let answers = relay.handle(text);
        let at = net.clock.now() + net.latency;
        let link = net.links.get(url).ok_or("socket closed")?;
        let mut events = 0;
        for answer in answers {
            if answer.starts_with("[\"EVENT\"") {
                events += 1;
            }
            // The receiver may be gone (the driver dropped the socket): like a network.
            let _ = link.tx.unbounded_send((at, Incoming::Text(answer)));
        }
        let sent = net.events_sent.entry(url.clone()).or_insert(0);
        *sent += events;
        let sent = *sent;
        if net
            .cut_after
            .as_ref()
            .is_some_and(|(u, n)| u == url && sent >= *n)
        {
            net.cut_after = None;
            net.cuts += 1;
            if let Some(link) = net.links.remove(url) {
                let _ = link.tx.unbounded_send((at, Incoming::Closed("cut".into())));
            }
            relay_disconnect(net, url);
        }
        Ok(())
    }
}

fn relay_disconnect(net: &mut Net, url: &RelayUrl) {
    if let Some(relay) = net.relays.get_mut(url) {
        relay.disconnect();
    }
}

impl Network for SimNetwork {
    fn connect(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Result<Connection, String>> {
        let shared = Rc::clone(&self.0);
        let url = url.clone();
        let (clock, latency) = {
            let net = self.0.borrow();
            (net.clock.clone(), net.latency)
        };
        async move {
            clock.sleep(latency).await;
            let generation = {
                let mut net = shared.borrow_mut();
                if !net.relays.contains_key(&url) {
                    return Err(format!("unknown relay {url}"));
                }
                let now = net.clock.now();
                if net
                    .down_until
                    .as_ref()
                    .is_some_and(|(u, until)| *u == url && now < *until)
                {
                    return Err("connection refused".into());
                }
                relay_disconnect(&mut net, &url);
                net.next_generation += 1;
                net.next_generation
            };
            let (tx, rx) = mpsc::unbounded();
            shared
                .borrow_mut()
                .links
                .insert(url.clone(), Link { generation, tx });
            let send = {
                let shared = Rc::clone(&shared);
                let url = url.clone();
                Box::new(move |text: String| SimNetwork::deliver(&shared, &url, generation, &text))
            };
            let close = Box::new(move || {
                let mut net = shared.borrow_mut();
                if net
                    .links
                    .get(&url)
                    .is_some_and(|l| l.generation == generation)
                {
                    net.links.remove(&url);
                    relay_disconnect(&mut net, &url);
                }
            });
            // Each frame waits for its arrival time (a sleep on the manual clock).
            let incoming = rx.then(move |(at, incoming)| {
                let arrival = clock.sleep(at.since(clock.now()));
                async move {
                    arrival.await;
                    incoming
                }
            });
            Ok(Connection {
                incoming: incoming.boxed_local(),
                send,
                close,
            })
        }
        .boxed_local()
    }

    fn fetch_info(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Option<String>> {
        let document = self
            .0
            .borrow()
            .relays
            .get(url)
            .and_then(SimRelay::nip11_document);
        ready(document).boxed_local()
    }
}

// -------------------------------------------------------------------------------------
// Verifier and store port

/// Checks every id and signature on the spot.
struct CheckingVerifier;

impl Verifier for CheckingVerifier {
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>> {
        ready(events.iter().map(|e| e.verify().is_ok()).collect()).boxed_local()
    }
}

/// What went through the store port.
#[derive(Debug, Default, Clone)]
struct Writes {
    /// Events handed to `save`.
    events: u64,
    /// `save_state` calls, and the checkpoints they carried.
    state_writes: u64,
    checkpoints: u64,
}

/// A [`MemoryStore`] behind the store port, counting writes; each write completes
/// `delay` after it is asked for (on the manual clock).
#[derive(Clone)]
struct CountingStore {
    inner: MemoryStore,
    writes: Rc<RefCell<Writes>>,
    clock: ManualClock,
    delay: Duration,
}

impl Store for CountingStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        self.inner.query(filter)
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, StoreError>> {
        self.inner.items(filter)
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        self.inner.root_events(coords)
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
    ) -> LocalBoxFuture<'static, Result<Saved, StoreError>> {
        self.writes.borrow_mut().events += events.len() as u64;
        let inner = self.inner.clone();
        let wait = self.clock.sleep(self.delay);
        async move {
            wait.await;
            inner.save(events, remove).await
        }
        .boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), StoreError>> {
        {
            let mut writes = self.writes.borrow_mut();
            writes.state_writes += 1;
            writes.checkpoints += state.checkpoints.len() as u64;
        }
        let inner = self.inner.clone();
        let wait = self.clock.sleep(self.delay);
        async move {
            wait.await;
            inner.save_state(state).await
        }
        .boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, StoreError>> {
        self.inner.load_state()
    }
}

// -------------------------------------------------------------------------------------
// Running the driver

/// What one driver run ended with.
#[derive(Debug)]
struct Outcome {
    exit: Exit,
    /// Every relay in sync (settled, each relay open) when it stopped.
    in_sync: bool,
    relays: Vec<(RelayUrl, Phase, RelayStats)>,
    driver: DriverStats,
    writes: Writes,
    /// EVENT frames the relays sent during this run.
    events_sent: u64,
    /// Virtual time the run took.
    took: Duration,
}

/// What the driver's task hands back: its exit, whether every relay was in sync, each
/// relay's phase and counters, the driver's counters.
type Ended = (Exit, bool, Vec<(RelayUrl, Phase, RelayStats)>, DriverStats);

fn in_sync(engine: &SyncEngine) -> bool {
    engine.is_settled()
        && engine.relays().count() > 0
        && engine.relays().all(|(_, phase, ..)| phase == Phase::Open)
}

/// Starts a driver on `store` (restoring what it holds) and runs it under `clock` until
/// every relay is in sync; panics when the virtual-time budget is spent or the driver
/// stalls with no timer pending.
fn run(
    config: &EngineConfig,
    network: &SimNetwork,
    store: &MemoryStore,
    clock: &ManualClock,
    store_delay: Duration,
) -> Outcome {
    let started = clock.now();
    let sent_before = network.events_sent();
    let writes = Rc::new(RefCell::new(Writes::default()));
    let port = CountingStore {
        inner: store.clone(),
        writes: Rc::clone(&writes),
        clock: clock.clone(),
        delay: store_delay,
    };
    let scope: DiscoveryScope = config.discovery.clone();
    let mut driver = Driver::new(
        SyncEngine::new(config.clone()),
        network.clone(),
        port,
        CheckingVerifier,
        clock.clone(),
    );
    let result: Rc<RefCell<Option<Ended>>> = Rc::default();
    let mut pool = LocalPool::new();
    {
        let result = Rc::clone(&result);
        pool.spawner()
            .spawn_local(async move {
                driver.start(&scope).await.expect("restore from the store");
                let mut settled = false;
                let exit = driver
                    .run(futures::stream::pending::<Command>(), |engine, _| {
                        if in_sync(engine) {
                            settled = true;
                            Control::Stop
                        } else {
                            Control::Continue
                        }
                    })
                    .await;
                let mut relays: Vec<_> = driver
                    .engine()
                    .relays()
                    .map(|(u, p, _, s)| (u.clone(), p, s.clone()))
                    .collect();
                relays.sort_by(|a, b| a.0.cmp(&b.0));
                *result.borrow_mut() = Some((exit, settled, relays, driver.stats().clone()));
            })
            .expect("spawn the driver");
    }
    let deadline = started + BUDGET;
    loop {
        pool.run_until_stalled();
        if result.borrow().is_some() {
            break;
        }
        let next = clock
            .next_deadline()
            .expect("the driver stalled with no timer pending");
        assert!(
            next > clock.now(),
            "a sleep due at {next:?} was not polled (now {:?})",
            clock.now()
        );
        assert!(
            next <= deadline,
            "not in sync after {BUDGET:?} of virtual time"
        );
        clock.advance_to(next);
    }
    let (exit, in_sync, relays, driver) = result.borrow_mut().take().expect("finished");
    let writes = writes.borrow().clone();
    Outcome {
        exit,
        in_sync,
        relays,
        driver,
        writes,
        events_sent: network.events_sent() - sent_before,
        took: clock.now().since(started),
    }
}

fn start_time() -> Time {
    let d = CorpusSpec::default();
    Time::from_secs(d.start + d.span_secs + 3600)
}

/// 3 repositories, about 180 events, each announcement listing both relays.
fn corpus(seed: u64) -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed,
        repos: 3,
        events_per_repo: 60,
        relays: vec![NIP77.to_owned(), REQ_ONLY.to_owned()],
        relays_per_repo: 2,
        ..CorpusSpec::default()
    })
}

/// How fast the network and the store are.
#[derive(Debug, Clone, Copy)]
struct Conditions {
    /// Connection attempts and frames from relays.
    latency: Duration,
    /// Each store write.
    store_delay: Duration,
}

/// Frames and writes complete at once (as soon as the executor polls them).
const INSTANT: Conditions = Conditions {
    latency: Duration::ZERO,
    store_delay: Duration::ZERO,
};

/// 20 ms to a relay, 15 ms per store write: writes overlap frames, group commit and
/// the persistence lane queue.
const SLOW: Conditions = Conditions {
    latency: Duration::from_millis(20),
    store_delay: Duration::from_millis(15),
};

/// Both relays holding `corpus`, and an engine that bootstraps from them.
fn setup(
    corpus: &Corpus,
    seed: u64,
    clock: &ManualClock,
    latency: Duration,
) -> (SimNetwork, EngineConfig) {
    let network = SimNetwork::new(clock, latency);
    let a = network.add_relay(NIP77, SimRelayConfig::default(), &corpus.events);
    let b = network.add_relay(
        REQ_ONLY,
        SimRelayConfig {
            nip77: false,
            ..SimRelayConfig::default()
        },
        &corpus.events,
    );
    let config = EngineConfig {
        bootstrap_relays: vec![a, b],
        seed,
        ..EngineConfig::default()
    };
    (network, config)
}

fn stored(store: &MemoryStore) -> BTreeSet<EventId> {
    store
        .query_now(&Filter::new())
        .iter()
        .map(|e| e.id)
        .collect()
}

fn assert_holds(store: &MemoryStore, expected: &BTreeSet<EventId>, outcome: &Outcome) {
    let got = stored(store);
    let missing = expected.difference(&got).count();
    let extra = got.difference(expected).count();
    assert!(
        missing == 0 && extra == 0,
        "store differs: {missing} missing, {extra} extra of {}; {outcome:#?}",
        expected.len()
    );
}

fn assert_in_sync(outcome: &Outcome) {
    assert!(
        outcome.took <= FAULT_FREE,
        "a fault-free run took {:?}: it waited out a timeout",
        outcome.took
    );
    assert_settled(outcome);
}

/// Stopped by the observer with every relay in sync, no store failure.
fn assert_settled(outcome: &Outcome) {
    assert_eq!(outcome.exit, Exit::Observer, "{outcome:#?}");
    assert!(outcome.in_sync, "{outcome:#?}");
    assert_eq!(outcome.relays.len(), 2, "{outcome:#?}");
    assert_eq!(outcome.driver.store_failures, 0);
    assert_eq!(outcome.driver.persist_failures, 0);
}

/// A first sync into an empty store, then a restart on the same store two hours later.
fn first_sync_then_restart(seed: u64, conditions: Conditions) {
    let corpus = corpus(seed);
    let clock = ManualClock::new(start_time());
    let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
    let delay = conditions.store_delay;
    let store = MemoryStores::with_clock(virtual_timestamp).open("driver");

    let first = run(&config, &network, &store, &clock, delay);
    eprintln!(
        "seed {seed}: first run took {:?}, {} EVENT frames, {:?}, {:?}",
        first.took, first.events_sent, first.writes, first.driver
    );
    assert_in_sync(&first);
    assert_holds(&store, &corpus.acceptable, &first);
    assert!(first.writes.events >= corpus.acceptable.len() as u64);
    // Checkpoints went through the port, for both relays.
    assert!(first.writes.state_writes > 0 && first.writes.checkpoints > 0);
    let saved = store.load_state_now();
    let relays: BTreeSet<&RelayUrl> = saved.checkpoints.iter().map(|c| &c.relay).collect();
    assert_eq!(relays.len(), 2, "checkpoints saved for {relays:?}");
    for (url, _, stats) in &first.relays {
        assert!(stats.events_received > 0, "{url} sent nothing");
    }

    clock.advance_to(clock.now() + 2 * HOUR);
    let frames_before = network.frames_in();
    let second = run(&config, &network, &store, &clock, delay);
    // The restart did ask both relays (it reconciled or paged from its checkpoints).
    for (url, after) in network.frames_in() {
        assert!(after > frames_before[&url], "the restart never asked {url}");
    }
    let nip77 = RelayUrl::parse(NIP77).expect("relay url");
    assert!(
        second
            .relays
            .iter()
            .any(|(u, _, s)| *u == nip77 && s.jobs_negentropy > 0),
        "no reconciliation at the NIP-77 relay: {second:#?}"
    );
    eprintln!(
        "seed {seed}: restart took {:?}, {} EVENT frames, {:?}, loaded {}",
        second.took, second.events_sent, second.writes, second.driver.loaded_events
    );
    assert_in_sync(&second);
    assert_holds(&store, &corpus.acceptable, &second);
    assert!(second.driver.loaded_events > 0, "nothing restored");
    assert_eq!(second.writes.events, 0, "events written again");
    assert!(
        second.events_sent * 5 <= first.events_sent,
        "the restart downloaded {} events (first run {})",
        second.events_sent,
        first.events_sent
    );
}

#[test]
fn first_sync_and_restart_seed_1() {
    first_sync_then_restart(1, INSTANT);
}

#[test]
fn first_sync_and_restart_seed_2() {
    first_sync_then_restart(2, INSTANT);
}

#[test]
fn first_sync_and_restart_seed_3() {
    first_sync_then_restart(3, INSTANT);
}

#[test]
fn first_sync_and_restart_with_latency_and_a_slow_store_seed_6() {
    first_sync_then_restart(6, SLOW);
}

#[test]
fn first_sync_and_restart_with_latency_and_a_slow_store_seed_7() {
    first_sync_then_restart(7, SLOW);
}

/// A relay that cuts the connection mid-sync: the driver hands the engine the close, the
/// engine reconnects, and the store still ends holding exactly the acceptable events.
#[test]
fn a_connection_cut_mid_sync_still_converges() {
    for (seed, conditions) in [(4, INSTANT), (5, SLOW)] {
        let corpus = corpus(seed);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
        let url = RelayUrl::parse(NIP77).expect("relay url");
        network.0.borrow_mut().cut_after = Some((url, 40));
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, conditions.store_delay);
        eprintln!(
            "seed {seed}: took {:?}, {} EVENT frames, {:?}",
            outcome.took, outcome.events_sent, outcome.driver
        );
        assert_eq!(network.0.borrow().cuts, 1, "the cut never happened");
        assert!(outcome.driver.connects >= 3, "{:?}", outcome.driver);
        assert_in_sync(&outcome);
        assert_holds(&store, &corpus.acceptable, &outcome);
    }
}

/// The same seed under the same conditions runs the same way: the same virtual time, the
/// same frames, the same writes, the same counters per relay.
#[test]
fn a_seed_replays_identically() {
    let once = || {
        let corpus = corpus(8);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, 8, &clock, SLOW.latency);
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, SLOW.store_delay);
        assert_in_sync(&outcome);
        format!(
            "{:?} {} {:?} {:?} {:?} {:?}",
            outcome.took,
            outcome.events_sent,
            outcome.writes,
            outcome.relays,
            network.frames_in(),
            stored(&store)
        )
    };
    let (a, b) = (once(), once());
    assert!(a == b, "two runs of one seed differ:\n{a}\n{b}");
}

/// The REQ-only relay refuses connections for the first two minutes: the driver reports
/// each refusal, the engine backs off and retries, and the sync completes once it is up.
#[test]
fn a_relay_refusing_connections_at_first_is_retried_until_in_sync() {
    for (seed, conditions) in [(9, INSTANT), (10, SLOW)] {
        let corpus = corpus(seed);
        let clock = ManualClock::new(start_time());
        let (network, config) = setup(&corpus, seed, &clock, conditions.latency);
        let url = RelayUrl::parse(REQ_ONLY).expect("relay url");
        let up_at = clock.now() + Duration::from_secs(120);
        network.0.borrow_mut().down_until = Some((url, up_at));
        let store = MemoryStores::with_clock(virtual_timestamp).open("driver");
        let outcome = run(&config, &network, &store, &clock, conditions.store_delay);
        eprintln!(
            "seed {seed}: took {:?}, {} EVENT frames, {:?}",
            outcome.took, outcome.events_sent, outcome.driver
        );
        assert!(outcome.driver.connect_failures >= 1, "{:?}", outcome.driver);
        assert!(
            outcome.took >= Duration::from_secs(120),
            "in sync while down"
        );
        assert_settled(&outcome);
        assert_holds(&store, &corpus.acceptable, &outcome);
    }
}
