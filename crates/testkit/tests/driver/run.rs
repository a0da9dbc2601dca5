//! One driver run under the manual clock, until every relay is in sync.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::executor::LocalPool;
use futures::task::LocalSpawnExt as _;
use grasp_sync_core::engine::{EngineConfig, Phase, RelayStats, SyncEngine};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::RelayUrl;
use grasp_sync_driver::{Clock, Command, Control, Driver, DriverStats, Exit};
use grasp_sync_store::MemoryStore;

use crate::clock::ManualClock;
use crate::network::SimNetwork;
use crate::ports::{CheckingVerifier, CountingStore, Writes};

/// Virtual time one run may take before the test fails.
const BUDGET: Duration = Duration::from_secs(2 * 3600);

/// What one driver run ended with.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) exit: Exit,
    /// Every relay in sync (settled, each relay open) when it stopped.
    pub(crate) in_sync: bool,
    pub(crate) relays: Vec<(RelayUrl, Phase, RelayStats)>,
    pub(crate) driver: DriverStats,
    pub(crate) writes: Writes,
    /// EVENT frames the relays sent during this run.
    pub(crate) events_sent: u64,
    /// Virtual time the run took.
    pub(crate) took: Duration,
}

/// What the driver's task hands back: its exit, whether every relay was in sync, each
/// relay's phase and counters, the driver's counters.
pub(crate) type Ended = (Exit, bool, Vec<(RelayUrl, Phase, RelayStats)>, DriverStats);

pub(crate) fn in_sync(engine: &SyncEngine) -> bool {
    engine.is_settled()
        && engine.relays().count() > 0
        && engine.relays().all(|(_, phase, ..)| phase == Phase::Open)
}

/// Starts a driver on `store` (restoring what it holds) and runs it under `clock` until
/// every relay is in sync; panics when the virtual-time budget is spent or the driver
/// stalls with no timer pending.
pub(crate) fn run(
    config: &EngineConfig,
    network: &SimNetwork,
    store: &MemoryStore,
    clock: &ManualClock,
    store_delay: Duration,
) -> Outcome {
    run_failing_save(config, network, store, clock, store_delay, None)
}

/// [`run`], with the `failing_save`-th save failing (see [`Writes`]).
pub(crate) fn run_failing_save(
    config: &EngineConfig,
    network: &SimNetwork,
    store: &MemoryStore,
    clock: &ManualClock,
    store_delay: Duration,
    failing_save: Option<u64>,
) -> Outcome {
    let started = clock.now();
    let sent_before = network.events_sent();
    let writes = Rc::new(RefCell::new(Writes {
        failing_save,
        ..Writes::default()
    }));
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
