//! The verifier port: ids and signatures checked in a pool of module Web Workers
//! ([`pool`]), sized to the machine's cores; the main thread only packs each batch
//! ([`packed`]) and reads the answers. An event is accepted only on a positive answer:
//! a batch whose worker fails, answers wrongly or stays silent is checked again on the
//! main thread, in slices that yield to the page, as is everything when the pool has no
//! workers (`workers: 0`, or workers cannot start here).

mod packed;
mod pool;

use std::cell::Cell;
use std::rc::Rc;

use futures::future::{join_all, Either, LocalBoxFuture};
use futures::FutureExt;
use grasp_sync_driver::Verifier;
use nostr::prelude::Event;

use crate::clock::pace;
pub use pool::{default_size, PoolConfig, MAX_DEFAULT_WORKERS};

/// Events checked on the main thread between two looks at the clock.
const SLICE: usize = 8;
/// The fewest events worth a message to a worker.
const MIN_CHUNK: usize = 16;
/// The most events in one message (bounds a worker's answer time and the packing step).
const MAX_CHUNK: usize = 512;
/// A batch unanswered this long fails its worker (a batch takes milliseconds).
const TIMEOUT_MS: u32 = 20_000;
/// The most workers a pool runs, whatever was asked.
pub const MAX_WORKERS: usize = 16;
/// Replacements for failed workers over a pool's life.
const RESPAWNS: usize = 4;

/// Events verified so far on this thread, by where (see [`totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Checked in workers.
    pub in_workers: u64,
    /// Checked on the main thread (no pool, or a failed worker's batches).
    pub on_main_thread: u64,
    /// Workers that failed (error, wrong answer, silence, or no start).
    pub worker_failures: u64,
}

thread_local! {
    static TOTALS: Cell<Totals> = const { Cell::new(Totals {
        in_workers: 0, on_main_thread: 0, worker_failures: 0,
    }) };
}

/// What this thread's verifiers have done since the module started.
pub fn totals() -> Totals {
    TOTALS.with(Cell::get)
}

fn add(f: impl FnOnce(&mut Totals)) {
    TOTALS.with(|t| {
        let mut v = t.get();
        f(&mut v);
        t.set(v);
    });
}

fn count_failure() {
    add(|t| t.worker_failures += 1);
}

/// The browser's verifier: a worker pool, or the main thread alone.
#[derive(Clone)]
pub struct BrowserVerifier {
    pool: Option<Rc<pool::Pool>>,
}

impl std::fmt::Debug for BrowserVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserVerifier")
            .field("workers", &self.pool.as_ref().map_or(0, |p| p.size()))
            .finish()
    }
}

impl BrowserVerifier {
    /// `workers` workers (`None`: the cores the browser reports, at most
    /// [`MAX_DEFAULT_WORKERS`]; `Some(0)`: the main thread only; at most [`MAX_WORKERS`]).
    pub fn new(workers: Option<usize>) -> Self {
        Self::with_config(PoolConfig {
            size: workers.unwrap_or_else(default_size).min(MAX_WORKERS),
            script: None,
            timeout_ms: TIMEOUT_MS,
            respawns: RESPAWNS,
        })
    }

    /// A verifier with every pool setting given (tests start broken workers this way).
    pub fn with_config(config: PoolConfig) -> Self {
        let pool = (config.size > 0).then(|| Rc::new(pool::Pool::new(config)));
        Self { pool }
    }

    /// Starts the pool's workers now rather than at the first batch, so that they are
    /// ready when events come (a worker takes tens of milliseconds to start).
    pub fn warm(&self) {
        if let Some(pool) = &self.pool {
            pool.live();
        }
    }

    /// Terminates the workers (later batches are checked on the main thread).
    pub fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown();
        }
    }

    /// Terminates the live workers as if they had failed: their batches come back to
    /// the main thread, and replacements start within the respawn budget (tests).
    #[doc(hidden)]
    pub fn fail_workers(&self) {
        if let Some(pool) = &self.pool {
            pool.fail_all();
        }
    }

    /// One flag per event, in order.
    pub async fn check(&self, events: Vec<Event>) -> Vec<bool> {
        let Some(pool) = self.pool.as_ref().filter(|p| p.live() > 0) else {
            return on_main_thread(&events).await;
        };
        let per = events.len().div_ceil(pool.live());
        let chunk = per.clamp(MIN_CHUNK, MAX_CHUNK);
        let mut sent = Vec::new();
        for start in (0..events.len()).step_by(chunk) {
            let range = start..(start + chunk).min(events.len());
            pace().await;
            let packed = packed::pack(&events[range.clone()]);
            sent.push((range.clone(), pool.dispatch(packed, range.len())));
        }
        let answers = join_all(sent.into_iter().map(|(range, dispatched)| {
            let pool = pool.clone();
            async move { (range, answer(&pool, dispatched).await) }
        }))
        .await;
        let mut valid = vec![false; events.len()];
        for (range, flags) in answers {
            let checked: Vec<bool> = match flags {
                Some(flags) => {
                    add(|t| t.in_workers += range.len() as u64);
                    flags.iter().map(|f| *f == 1).collect()
                }
                None => on_main_thread(&events[range.clone()]).await,
            };
            valid[range].copy_from_slice(&checked);
        }
        valid
    }
}

/// A worker's flags for a dispatched batch, or `None` (the worker failed or timed out:
/// it is terminated).
async fn answer(pool: &pool::Pool, dispatched: Option<pool::Dispatched>) -> Option<Vec<u8>> {
    let dispatched = dispatched?;
    let timeout = gloo_timers::future::TimeoutFuture::new(pool.timeout_ms());
    match futures::future::select(dispatched.reply, timeout).await {
        Either::Left((Ok(flags), _)) => Some(flags),
        Either::Left((Err(_cancelled), _)) => None,
        Either::Right(_) => {
            tracing::warn!("a verifier worker timed out");
            pool.fail(&dispatched.worker);
            None
        }
    }
}

/// Checks `events` on this thread in slices, yielding to the page between them.
async fn on_main_thread(events: &[Event]) -> Vec<bool> {
    let mut valid = Vec::with_capacity(events.len());
    for chunk in events.chunks(SLICE) {
        pace().await;
        valid.extend(chunk.iter().map(|e| e.verify().is_ok()));
    }
    add(|t| t.on_main_thread += events.len() as u64);
    valid
}

impl Verifier for BrowserVerifier {
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>> {
        let this = self.clone();
        async move { this.check(events).await }.boxed_local()
    }
}

/// The packed form's main-thread step and worker step, run here (tests, measurements).
#[doc(hidden)]
pub fn pack_and_check(events: &[Event]) -> (Vec<u8>, Vec<bool>) {
    let packed = packed::pack(events);
    let flags = packed::check(&packed).iter().map(|f| *f == 1).collect();
    (packed, flags)
}

/// The main thread's step alone: the packed batch (tests, measurements).
#[doc(hidden)]
pub fn pack_only(events: &[Event]) -> Vec<u8> {
    packed::pack(events)
}
